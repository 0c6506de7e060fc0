/* config: the YAML file of contract section 2 -> one immutable struct config.
 *
 * Twin: py-proxy/pyproxy/config.py. Both twins walk the libyaml node tree the
 * same way (document order, one table of fields per mapping), so the first
 * error found and its "FILE:LINE: message" text are identical; the shared cases
 * in c-proxy/tests/config_cases/ hold them to that. docs/config.md lists every
 * key, its default and its range.
 *
 * A scalar's text is what counts: quoting never changes its meaning, except that
 * a plain empty, "~" or "null" value is null, which no key accepts. Numbers are
 * parsed from the text here (libyaml resolves no tags), never by YAML 1.1 rules,
 * so "0x10", "1_000" or "yes" mean the same thing to both twins: nothing.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, getaddrinfo */

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define CONFIG_FILE_MAX (1024 * 1024) /* a config file is tiny; refuse /dev/zero */
#define DURATION_MAX_MS 2147483647ULL /* INT32_MAX ms, ~24.8 days: what poll/epoll can wait */
#define SIZE_MAX_BYTES 9223372036854775807ULL /* INT64_MAX: safe in signed arithmetic */
#define NUMBER_MAX 1000000000.0               /* capacity and rate_per_sec ceiling */
#define MIN_RATE_MAX 1073741824LL             /* timeouts.min_rate: 1g bytes per second */
#define QUOTE_MAX 64                          /* bytes of a value quoted in a message */
#define PATH_MAX_LEN 128                      /* key paths are short: "health.check.interval" */
#define QUOTE_BUF (QUOTE_MAX * 4 + 8)         /* room for quote(): every byte as \xNN */

/* One parse in progress. */
struct loader {
    const char *name;     /* FILE in messages */
    yaml_document_t *doc; /* the loaded document */
    char *err;            /* caller's buffer for the message */
    size_t errlen;        /* its size */
};

enum field_kind {
    FIELD_ADDR = 0, /* struct config_addr, host:port */
    FIELD_STRING,   /* char * (replaces a strdup'd default); non-empty unless min == 0 */
    FIELD_UINT,     /* unsigned, an integer in min..max */
    FIELD_U64,      /* uint64_t, an integer in min..max */
    FIELD_SIZE,     /* uint64_t bytes, a size in min..max */
    FIELD_DURATION, /* uint64_t ms, a duration; 0 allowed only when min == 0 */
    FIELD_NUMBER,   /* double in 0..NUMBER_MAX; 0 excluded when min == 1 */
    FIELD_MAP,      /* a nested mapping described by sub */
    FIELD_CUSTOM,   /* parsed by parse() */
};

struct field;

/* Parses value (the value of key) for the field at path into base; 0 or -1 with err set. */
typedef int field_parse_fn(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                           const char *path, void *base);

/* One key of a mapping. Offsets are from the base the mapping is walked with: struct
 * config for everything but the items of upstreams (struct config_upstream). */
struct field {
    const char *key;         /* the YAML key */
    enum field_kind kind;    /* how its value is parsed */
    size_t offset;           /* destination in base */
    long long min, max;      /* range, see enum field_kind */
    const struct field *sub; /* FIELD_MAP: the nested keys, NULL-key terminated */
    bool flag;               /* FIELD_MAP: offset names a bool set when the map is present */
    field_parse_fn *parse;   /* FIELD_CUSTOM */
    bool unsupported;        /* refused at the key: "KEY is not supported yet" */
};

/* ---- messages ---------------------------------------------------------- */

/* Writes "NAME:LINE: PATH: message" into ld->err (no "PATH: " when path is empty).
 * Always returns -1 so callers can `return fail(...)`. */
static int fail(struct loader *ld, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct loader *ld, int line, const char *path, const char *fmt, ...)
{
    char msg[CONFIG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ld->errlen == 0)
        return -1;
    if (path != NULL && path[0] != '\0')
        snprintf(ld->err, ld->errlen, "%s:%d: %s: %s", ld->name, line, path, msg);
    else
        snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->name, line, msg);
    return -1;
}

/* A value as it is shown in messages: double-quoted, printable ASCII kept, '"' and
 * '\' backslashed, every other byte \xNN, cut after QUOTE_MAX bytes with "...".
 * The twin escapes the UTF-8 bytes the same way. Returns buf. */
static const char *quote(char buf[QUOTE_BUF], const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    buf[o++] = '"';
    for (size_t i = 0; i < n && i < QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 0xf];
        }
    }
    if (n > QUOTE_MAX) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- nodes --------------------------------------------------------------- */

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *node_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A plain empty, ~, null, Null or NULL scalar: YAML's null, accepted by no key. */
static bool node_is_null(const yaml_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (strcmp(node_text(n), nulls[i]) == 0 && n->data.scalar.length == strlen(nulls[i]))
            return true;
    return false;
}

/* "expected WHAT, got ..." for a node of the wrong type. */
static int fail_type(struct loader *ld, const yaml_node_t *n, const char *path, const char *what)
{
    char q[QUOTE_BUF];

    if (n->type == YAML_MAPPING_NODE)
        return fail(ld, node_line(n), path, "expected %s, got a mapping", what);
    if (n->type == YAML_SEQUENCE_NODE)
        return fail(ld, node_line(n), path, "expected %s, got a list", what);
    if (node_is_null(n))
        return fail(ld, node_line(n), path, "expected %s, got null", what);
    return fail(ld, node_line(n), path, "expected %s, got %s", what,
                quote(q, node_text(n), n->data.scalar.length));
}

/* The text of a non-null scalar, or NULL with the error set (what names the
 * expected type). A NUL byte (a "\0" escape) would cut C strings: refused. */
static const char *node_scalar(struct loader *ld, const yaml_node_t *n, const char *path,
                               const char *what)
{
    if (n->type != YAML_SCALAR_NODE || node_is_null(n)) {
        fail_type(ld, n, path, what);
        return NULL;
    }
    if (memchr(n->data.scalar.value, '\0', n->data.scalar.length) != NULL) {
        fail(ld, node_line(n), path, "must not contain a NUL byte");
        return NULL;
    }
    return node_text(n);
}

static bool key_is(const yaml_node_t *k, const char *name)
{
    return k->type == YAML_SCALAR_NODE && k->data.scalar.length == strlen(name) &&
           memcmp(k->data.scalar.value, name, k->data.scalar.length) == 0;
}

static void path_join(char out[PATH_MAX_LEN], const char *path, const char *key)
{
    if (path[0] == '\0')
        snprintf(out, PATH_MAX_LEN, "%s", key);
    else
        snprintf(out, PATH_MAX_LEN, "%s.%s", path, key);
}

/* ---- scalar parsers (exported ones are in config.h) ---------------------- */

/* 1*DIGIT into *out; -1 when empty, not digits or over max. *end gets the rest. */
static int parse_digits(const char *s, unsigned long long max, unsigned long long *out,
                        const char **end)
{
    unsigned long long v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (d > max || v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (p == s)
        return -1;
    *out = v;
    *end = p;
    return 0;
}

int config_parse_duration(const char *text, uint64_t *out_ms)
{
    static const struct {
        const char *suffix;
        unsigned long long ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    unsigned long long v;
    const char *rest;

    if (parse_digits(text, DURATION_MAX_MS, &v, &rest) == -1)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(rest, units[i].suffix) != 0)
            continue;
        if (v > DURATION_MAX_MS / units[i].ms)
            return -1;
        *out_ms = v * units[i].ms;
        return 0;
    }
    return -1;
}

int config_parse_size(const char *text, uint64_t *out_bytes)
{
    unsigned long long v, mult;
    const char *rest;

    if (parse_digits(text, SIZE_MAX_BYTES, &v, &rest) == -1)
        return -1;
    if (strcmp(rest, "") == 0)
        mult = 1;
    else if (strcmp(rest, "k") == 0 || strcmp(rest, "K") == 0)
        mult = 1024ULL;
    else if (strcmp(rest, "m") == 0 || strcmp(rest, "M") == 0)
        mult = 1024ULL * 1024;
    else if (strcmp(rest, "g") == 0 || strcmp(rest, "G") == 0)
        mult = 1024ULL * 1024 * 1024;
    else
        return -1;
    if (v > SIZE_MAX_BYTES / mult)
        return -1;
    *out_bytes = v * mult;
    return 0;
}

int config_parse_addr(const char *text, struct config_addr *addr, const char **why)
{
    char host[sizeof addr->text];
    const char *port_text;
    unsigned long long port;
    const char *rest;
    size_t len = strlen(text), hostlen;
    bool bracketed = text[0] == '[';
    struct config_addr a;

    memset(&a, 0, sizeof a);
    if (len >= sizeof a.text) {
        *why = "too long";
        return -1;
    }
    if (bracketed) {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            *why = "expected [v6]:port";
            return -1;
        }
        hostlen = (size_t)(close - text - 1);
        memcpy(host, text + 1, hostlen);
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL) {
            *why = "expected host:port or [v6]:port";
            return -1;
        }
        hostlen = (size_t)(colon - text);
        memcpy(host, text, hostlen);
        port_text = colon + 1;
    }
    host[hostlen] = '\0';
    if (hostlen == 0) {
        *why = "missing host";
        return -1;
    }
    if (!bracketed && strchr(host, ':') != NULL) {
        *why = "IPv6 address must be in brackets";
        return -1;
    }
    if (strlen(port_text) > 5 || parse_digits(port_text, 99999, &port, &rest) == -1 ||
        *rest != '\0') {
        *why = "bad port";
        return -1;
    }
    if (port == 0 || port > 65535) {
        *why = "port must be 1..65535";
        return -1;
    }

    if (bracketed) {
        struct addrinfo hints, *res = NULL;
        char service[8];

        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET6;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        snprintf(service, sizeof service, "%llu", port);
        if (getaddrinfo(host, service, &hints, &res) != 0 || res == NULL ||
            res->ai_addrlen > sizeof a.addr) {
            if (res != NULL)
                freeaddrinfo(res);
            *why = "bad IPv6 address";
            return -1;
        }
        memcpy(&a.addr, res->ai_addr, res->ai_addrlen);
        a.addrlen = res->ai_addrlen;
        freeaddrinfo(res);
    } else {
        /* inet_pton, not getaddrinfo: it refuses inet_aton forms like "127.1"
         * and "0x7f.0.0.1", exactly as the twin's socket.inet_pton does. */
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.addr;
        const char *numeric = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;

        if (inet_pton(AF_INET, numeric, &sin->sin_addr) != 1) {
            *why = "host must be an IP address or localhost";
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        a.addrlen = sizeof *sin;
    }
    memcpy(a.text, text, len + 1);
    *addr = a;
    return 0;
}

/* ---- field parsers -------------------------------------------------------- */

static void *at(void *base, size_t offset)
{
    return (char *)base + offset;
}

static int parse_addr_node(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                           const char *path, struct config_addr *out)
{
    char q[QUOTE_BUF];
    const char *why = NULL;
    const char *s = node_scalar(ld, value, path, "an address");

    if (s == NULL)
        return -1;
    if (config_parse_addr(s, out, &why) == -1)
        return fail(ld, node_line(value), path, "bad address %s (%s)",
                    quote(q, s, value->data.scalar.length), why);
    out->line = node_line(key);
    return 0;
}

/* An integer: optional '-', 1*DIGIT. Anything out of min..max, however large,
 * gets the range message. */
static int parse_int_node(struct loader *ld, const yaml_node_t *value, const char *path,
                          long long min, long long max, long long *out)
{
    char q[QUOTE_BUF];
    unsigned long long v;
    const char *rest;
    const char *s = node_scalar(ld, value, path, "an integer");
    bool neg;

    if (s == NULL)
        return -1;
    neg = s[0] == '-';
    if (s[neg] < '0' || s[neg] > '9')
        return fail(ld, node_line(value), path, "expected an integer, got %s",
                    quote(q, s, value->data.scalar.length));
    /* Saturate instead of failing so overflow gets the range message below. */
    if (parse_digits(s + neg, (unsigned long long)max, &v, &rest) == -1) {
        for (rest = s + neg; *rest >= '0' && *rest <= '9'; rest++)
            ;
        v = (unsigned long long)max + 1;
    }
    if (*rest != '\0')
        return fail(ld, node_line(value), path, "expected an integer, got %s",
                    quote(q, s, value->data.scalar.length));
    if ((neg && v != 0) || (long long)v < min || v > (unsigned long long)max)
        return fail(ld, node_line(value), path, "must be %lld..%lld", min, max);
    *out = neg ? 0 : (long long)v;
    return 0;
}

/* A number: optional '-', 1*DIGIT, optional '.' 1*DIGIT. strtod in the C locale
 * (nothing here calls setlocale) rounds exactly as the twin's float(). */
static int parse_number_node(struct loader *ld, const yaml_node_t *value, const char *path,
                             bool positive, double *out)
{
    char q[QUOTE_BUF];
    const char *s = node_scalar(ld, value, path, "a number");
    const char *p;
    double v;

    if (s == NULL)
        return -1;
    p = s + (s[0] == '-');
    if (*p < '0' || *p > '9')
        goto bad;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            goto bad;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p != '\0')
        goto bad;
    v = strtod(s, NULL);
    if (positive && !(v > 0))
        return fail(ld, node_line(value), path, "must be > 0");
    if (!(v >= 0))
        return fail(ld, node_line(value), path, "must be >= 0");
    if (!(v <= NUMBER_MAX))
        return fail(ld, node_line(value), path, "must be <= %.0f", NUMBER_MAX);
    *out = v;
    return 0;
bad:
    return fail(ld, node_line(value), path, "expected a number, got %s",
                quote(q, s, value->data.scalar.length));
}

static int walk_mapping(struct loader *ld, const yaml_node_t *map, const char *path,
                        const struct field *fields, void *base);

static int parse_field(struct loader *ld, const struct field *f, const yaml_node_t *key,
                       const yaml_node_t *value, const char *path, void *base)
{
    char q[QUOTE_BUF];
    const char *s;
    long long i = 0;
    uint64_t u;

    switch (f->kind) {
    case FIELD_ADDR:
        return parse_addr_node(ld, key, value, path, at(base, f->offset));
    case FIELD_STRING: {
        char **dst = at(base, f->offset);
        char *copy;

        if ((s = node_scalar(ld, value, path, "a string")) == NULL)
            return -1;
        if (f->min > 0 && s[0] == '\0')
            return fail(ld, node_line(value), path, "must not be empty");
        if ((copy = strdup(s)) == NULL)
            return fail(ld, node_line(value), path, "out of memory");
        free(*dst);
        *dst = copy;
        return 0;
    }
    case FIELD_UINT:
        if (parse_int_node(ld, value, path, f->min, f->max, &i) == -1)
            return -1;
        *(unsigned *)at(base, f->offset) = (unsigned)i;
        return 0;
    case FIELD_U64:
        if (parse_int_node(ld, value, path, f->min, f->max, &i) == -1)
            return -1;
        *(uint64_t *)at(base, f->offset) = (uint64_t)i;
        return 0;
    case FIELD_SIZE:
        if ((s = node_scalar(ld, value, path, "a size")) == NULL)
            return -1;
        if (config_parse_size(s, &u) == -1)
            return fail(ld, node_line(value), path, "bad size %s",
                        quote(q, s, value->data.scalar.length));
        if (u < (uint64_t)f->min || u > (uint64_t)f->max)
            return fail(ld, node_line(value), path, "must be %lld..%lld", f->min, f->max);
        *(uint64_t *)at(base, f->offset) = u;
        return 0;
    case FIELD_DURATION:
        if ((s = node_scalar(ld, value, path, "a duration")) == NULL)
            return -1;
        if (config_parse_duration(s, &u) == -1)
            return fail(ld, node_line(value), path, "bad duration %s",
                        quote(q, s, value->data.scalar.length));
        if (u == 0 && f->min > 0)
            return fail(ld, node_line(value), path, "must be > 0");
        *(uint64_t *)at(base, f->offset) = u;
        return 0;
    case FIELD_NUMBER:
        return parse_number_node(ld, value, path, f->min > 0, at(base, f->offset));
    case FIELD_MAP:
        if (walk_mapping(ld, value, path, f->sub, base) == -1)
            return -1;
        if (f->flag)
            *(bool *)at(base, f->offset) = true;
        return 0;
    case FIELD_CUSTOM:
        return f->parse(ld, key, value, path, base);
    }
    return fail(ld, node_line(value), path, "internal error: unknown field kind");
}

/* Walks a mapping in document order: every key must be a string, known to fields
 * and not seen before in this mapping; each value is parsed as its field says.
 * The first error (in document order) wins. */
static int walk_mapping(struct loader *ld, const yaml_node_t *map, const char *path,
                        const struct field *fields, void *base)
{
    char q[QUOTE_BUF];
    const char *sep = path[0] == '\0' ? "" : ": ";

    if (map->type != YAML_MAPPING_NODE)
        return fail_type(ld, map, path, "a mapping");
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pair->value);
        const struct field *f;
        char child[PATH_MAX_LEN];

        if (key->type != YAML_SCALAR_NODE)
            return fail(ld, node_line(key), path, "keys must be strings");
        for (f = fields; f->key != NULL; f++)
            if (key_is(key, f->key))
                break;
        if (f->key == NULL)
            return fail(ld, node_line(key), "", "%s%sunknown key %s", path, sep,
                        quote(q, node_text(key), key->data.scalar.length));
        for (yaml_node_pair_t *prev = map->data.mapping.pairs.start; prev < pair; prev++)
            if (key_is(yaml_document_get_node(ld->doc, prev->key), f->key))
                return fail(ld, node_line(key), "", "%s%sduplicate key %s", path, sep,
                            quote(q, node_text(key), key->data.scalar.length));
        if (f->unsupported)
            return fail(ld, node_line(key), "", "%s%s%s is not supported yet", path,
                        path[0] == '\0' ? "" : ".", f->key);
        path_join(child, path, f->key);
        if (parse_field(ld, f, key, value, child, base) == -1)
            return -1;
    }
    return 0;
}

/* The pair of map whose key is name, or NULL. */
static const yaml_node_pair_t *find_pair(struct loader *ld, const yaml_node_t *map,
                                         const char *name)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++)
        if (key_is(yaml_document_get_node(ld->doc, pair->key), name))
            return pair;
    return NULL;
}

/* Index of text in names (NULL-terminated), or -1 with "unknown value" set. */
static int parse_enum(struct loader *ld, const yaml_node_t *value, const char *path,
                      const char *const *names, const char *expected)
{
    char q[QUOTE_BUF];
    const char *s = node_scalar(ld, value, path, "a string");

    if (s == NULL)
        return -1;
    for (int i = 0; names[i] != NULL; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return fail(ld, node_line(value), path, "unknown value %s (expected %s)",
                quote(q, s, value->data.scalar.length), expected);
}

static int parse_balancer(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                          const char *path, void *base)
{
    static const char *const names[] = {"round_robin", "random", "least_conn", "hash", NULL};
    int i = parse_enum(ld, value, path, names, "round_robin | random | least_conn | hash");

    (void)key;
    if (i == -1)
        return -1;
    ((struct config *)base)->balancer = (enum config_balancer)i;
    return 0;
}

static int parse_log_level(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                           const char *path, void *base)
{
    static const char *const names[] = {"debug", "info", "warn", "error", NULL};
    int i = parse_enum(ld, value, path, names, "debug | info | warn | error");

    (void)key;
    if (i == -1)
        return -1;
    ((struct config *)base)->log.level = (enum config_log_level)i;
    return 0;
}

static int parse_log_format(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                            const char *path, void *base)
{
    static const char *const names[] = {"json", "text", NULL};
    int i = parse_enum(ld, value, path, names, "json | text");

    (void)key;
    if (i == -1)
        return -1;
    ((struct config *)base)->log.format = (enum config_log_format)i;
    return 0;
}

/* RFC 9110 token: what a header name may be made of. */
static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return false;
    }
    return true;
}

/* client_ip | header:NAME | path (path only when allow_path). *header gets a copy of
 * NAME for header:NAME, else is left NULL. */
static int parse_key_form(struct loader *ld, const yaml_node_t *value, const char *path,
                          bool allow_path, enum config_key_kind *kind, char **header)
{
    char q[QUOTE_BUF];
    const char *s = node_scalar(ld, value, path, "a string");

    if (s == NULL)
        return -1;
    if (strcmp(s, "client_ip") == 0) {
        *kind = CONFIG_KEY_CLIENT_IP;
        return 0;
    }
    if (allow_path && strcmp(s, "path") == 0) {
        *kind = CONFIG_KEY_PATH;
        return 0;
    }
    if (strncmp(s, "header:", 7) == 0) {
        if (!is_token(s + 7))
            return fail(ld, node_line(value), path, "bad header name %s",
                        quote(q, s + 7, strlen(s + 7)));
        if ((*header = strdup(s + 7)) == NULL)
            return fail(ld, node_line(value), path, "out of memory");
        *kind = CONFIG_KEY_HEADER;
        return 0;
    }
    return fail(ld, node_line(value), path, "unknown value %s (expected %s)",
                quote(q, s, value->data.scalar.length),
                allow_path ? "client_ip | header:NAME | path" : "client_ip | header:NAME");
}

static int parse_hash_key(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                          const char *path, void *base)
{
    struct config *cfg = base;

    (void)key;
    return parse_key_form(ld, value, path, true, &cfg->hash_key, &cfg->hash_header);
}

static int parse_rate_limit_key(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                                const char *path, void *base)
{
    struct config *cfg = base;

    (void)key;
    return parse_key_form(ld, value, path, false, &cfg->rate_limit.key,
                          &cfg->rate_limit.key_header);
}

/* A bucket's capacity: a number > 0 (the messages of any number) that is whole. */
static int parse_capacity(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                          const char *path, void *base)
{
    struct config *cfg = base;
    double v;

    (void)key;
    if (parse_number_node(ld, value, path, true, &v) == -1)
        return -1;
    if (v != floor(v))
        return fail(ld, node_line(value), path, "must be an integer");
    cfg->rate_limit.default_capacity = v;
    return 0;
}

static int parse_admin_listen(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                              const char *path, void *base)
{
    struct config *cfg = base;

    if (parse_addr_node(ld, key, value, path, &cfg->admin_listen) == -1)
        return -1;
    cfg->admin_enabled = true;
    return 0;
}

/* The path of an active check goes into a request line: origin-form, visible ASCII. */
static int parse_check_path(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                            const char *path, void *base)
{
    struct config *cfg = base;
    char q[QUOTE_BUF];
    const char *s = node_scalar(ld, value, path, "a string");
    char *copy;

    (void)key;
    if (s == NULL)
        return -1;
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            goto bad;
    if (s[0] != '/')
        goto bad;
    if ((copy = strdup(s)) == NULL)
        return fail(ld, node_line(value), path, "out of memory");
    free(cfg->health.check.path);
    cfg->health.check.path = copy;
    return 0;
bad:
    return fail(ld, node_line(value), path,
                "bad path %s (must start with / and contain only visible ASCII)",
                quote(q, s, value->data.scalar.length));
}

static const struct field upstream_fields[] = {
    {.key = "address", .kind = FIELD_ADDR, .offset = offsetof(struct config_upstream, addr)},
    {.key = "name",
     .kind = FIELD_STRING,
     .offset = offsetof(struct config_upstream, name),
     .min = 1},
    {.key = "weight",
     .kind = FIELD_UINT,
     .offset = offsetof(struct config_upstream, weight),
     .min = 1,
     .max = 1000},
    {.key = NULL},
};

static int parse_upstreams(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                           const char *path, void *base)
{
    struct config *cfg = base;
    size_t n;

    (void)key;
    if (value->type != YAML_SEQUENCE_NODE)
        return fail_type(ld, value, path, "a list");
    n = (size_t)(value->data.sequence.items.top - value->data.sequence.items.start);
    if (n == 0)
        return fail(ld, node_line(value), path, "at least one upstream is required");
    if ((cfg->upstreams = calloc(n, sizeof *cfg->upstreams)) == NULL)
        return fail(ld, node_line(value), path, "out of memory");
    cfg->n_upstreams = n;
    for (size_t i = 0; i < n; i++) {
        struct config_upstream *u = &cfg->upstreams[i];
        const yaml_node_t *item =
            yaml_document_get_node(ld->doc, value->data.sequence.items.start[i]);
        const yaml_node_pair_t *name_pair;
        char ipath[PATH_MAX_LEN], q[QUOTE_BUF];
        int name_line;

        snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
        u->weight = 1;
        if (walk_mapping(ld, item, ipath, upstream_fields, u) == -1)
            return -1;
        if (u->addr.addrlen == 0)
            return fail(ld, node_line(item), ipath, "address is required");
        name_pair = find_pair(ld, item, "name");
        if (name_pair != NULL) {
            name_line = node_line(yaml_document_get_node(ld->doc, name_pair->key));
        } else {
            name_line = u->addr.line;
            if ((u->name = strdup(u->addr.text)) == NULL)
                return fail(ld, node_line(item), ipath, "out of memory");
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->upstreams[j].name, u->name) == 0)
                return fail(ld, name_line, ipath, "duplicate upstream name %s",
                            quote(q, u->name, strlen(u->name)));
    }
    return 0;
}

#define C(member) offsetof(struct config, member)

static const struct field admin_fields[] = {
    {.key = "listen", .kind = FIELD_CUSTOM, .parse = parse_admin_listen},
    {.key = "token", .kind = FIELD_STRING, .offset = C(admin_token), .min = 0},
    {.key = NULL},
};

static const struct field limits_fields[] = {
    {.key = "max_client_connections",
     .kind = FIELD_U64,
     .offset = C(limits.max_client_connections),
     .min = 1,
     .max = 10000000},
    {.key = "max_header_bytes",
     .kind = FIELD_SIZE,
     .offset = C(limits.max_header_bytes),
     .min = 1,
     .max = 1048576},
    {.key = "max_body_bytes",
     .kind = FIELD_SIZE,
     .offset = C(limits.max_body_bytes),
     .min = 0,
     .max = (long long)SIZE_MAX_BYTES},
    {.key = "upstream_max_connections",
     .kind = FIELD_U64,
     .offset = C(limits.upstream_max_connections),
     .min = 1,
     .max = 1000000},
    {.key = "upstream_idle_connections",
     .kind = FIELD_U64,
     .offset = C(limits.upstream_idle_connections),
     .min = 0,
     .max = 1000000},
    {.key = NULL},
};

static const struct field timeouts_fields[] = {
    {.key = "connect", .kind = FIELD_DURATION, .offset = C(timeouts.connect_ms), .min = 1},
    {.key = "header", .kind = FIELD_DURATION, .offset = C(timeouts.header_ms), .min = 1},
    {.key = "idle", .kind = FIELD_DURATION, .offset = C(timeouts.idle_ms), .min = 1},
    {.key = "read", .kind = FIELD_DURATION, .offset = C(timeouts.read_ms), .min = 1},
    {.key = "write", .kind = FIELD_DURATION, .offset = C(timeouts.write_ms), .min = 1},
    {.key = "total", .kind = FIELD_DURATION, .offset = C(timeouts.total_ms), .min = 1},
    {.key = "queue", .kind = FIELD_DURATION, .offset = C(timeouts.queue_ms), .min = 1},
    {.key = "shutdown", .kind = FIELD_DURATION, .offset = C(timeouts.shutdown_ms), .min = 0},
    {.key = "min_rate",
     .kind = FIELD_SIZE,
     .offset = C(timeouts.min_rate),
     .min = 0,
     .max = MIN_RATE_MAX},
    {.key = "min_rate_window",
     .kind = FIELD_DURATION,
     .offset = C(timeouts.min_rate_window_ms),
     .min = 1},
    {.key = NULL},
};

static const struct field check_fields[] = {
    {.key = "path", .kind = FIELD_CUSTOM, .parse = parse_check_path},
    {.key = "interval", .kind = FIELD_DURATION, .offset = C(health.check.interval_ms), .min = 1},
    {.key = "timeout", .kind = FIELD_DURATION, .offset = C(health.check.timeout_ms), .min = 1},
    {.key = "rise", .kind = FIELD_UINT, .offset = C(health.check.rise), .min = 1, .max = 1000000},
    {.key = "fall", .kind = FIELD_UINT, .offset = C(health.check.fall), .min = 1, .max = 1000000},
    {.key = NULL},
};

static const struct field health_fields[] = {
    {.key = "max_fails",
     .kind = FIELD_UINT,
     .offset = C(health.max_fails),
     .min = 0,
     .max = 1000000},
    {.key = "fail_timeout", .kind = FIELD_DURATION, .offset = C(health.fail_timeout_ms), .min = 1},
    {.key = "check",
     .kind = FIELD_MAP,
     .sub = check_fields,
     .flag = true,
     .offset = C(health.check.enabled)},
    {.key = NULL},
};

static const struct field retry_budget_fields[] = {
    {.key = "percent", .kind = FIELD_UINT, .offset = C(retry_budget.percent), .min = 0, .max = 100},
    {.key = "min_concurrent",
     .kind = FIELD_UINT,
     .offset = C(retry_budget.min_concurrent),
     .min = 0,
     .max = 1000000},
    {.key = NULL},
};

static const struct field bucket_fields[] = {
    {.key = "capacity", .kind = FIELD_CUSTOM, .parse = parse_capacity},
    {.key = "rate_per_sec",
     .kind = FIELD_NUMBER,
     .offset = C(rate_limit.default_rate_per_sec),
     .min = 0},
    {.key = NULL},
};

static const struct field rate_limit_fields[] = {
    {.key = "key", .kind = FIELD_CUSTOM, .parse = parse_rate_limit_key},
    {.key = "default", .kind = FIELD_MAP, .sub = bucket_fields},
    {.key = "store", .kind = FIELD_STRING, .offset = C(rate_limit.store), .min = 1},
    {.key = "ipv6_prefix",
     .kind = FIELD_UINT,
     .offset = C(rate_limit.ipv6_prefix),
     .min = 0,
     .max = 128},
    {.key = "max_clients",
     .kind = FIELD_U64,
     .offset = C(rate_limit.max_clients),
     .min = 1,
     .max = 100000000},
    {.key = NULL},
};

static const struct field log_fields[] = {
    {.key = "level", .kind = FIELD_CUSTOM, .parse = parse_log_level},
    {.key = "access", .kind = FIELD_STRING, .offset = C(log.access), .min = 1},
    {.key = "format", .kind = FIELD_CUSTOM, .parse = parse_log_format},
    {.key = NULL},
};

/* rate_limit: its mapping, plus the line store errors are reported at: the store
 * key's, else rate_limit's own (the store is opened by main, not here). */
static int parse_rate_limit(struct loader *ld, const yaml_node_t *key, const yaml_node_t *value,
                            const char *path, void *base)
{
    struct config *cfg = base;
    const yaml_node_pair_t *store;

    if (walk_mapping(ld, value, path, rate_limit_fields, base) == -1)
        return -1;
    cfg->rate_limit.enabled = true;
    cfg->rate_limit.store_line = node_line(key);
    store = find_pair(ld, value, "store");
    if (store != NULL)
        cfg->rate_limit.store_line = node_line(yaml_document_get_node(ld->doc, store->key));
    return 0;
}

static const struct field root_fields[] = {
    {.key = "listen", .kind = FIELD_ADDR, .offset = C(listen)},
    {.key = "workers", .kind = FIELD_UINT, .offset = C(workers), .min = 1, .max = 1024},
    {.key = "admin", .kind = FIELD_MAP, .sub = admin_fields},
    {.key = "upstreams", .kind = FIELD_CUSTOM, .parse = parse_upstreams},
    {.key = "balancer", .kind = FIELD_CUSTOM, .parse = parse_balancer},
    {.key = "hash_key", .kind = FIELD_CUSTOM, .parse = parse_hash_key},
    {.key = "limits", .kind = FIELD_MAP, .sub = limits_fields},
    {.key = "timeouts", .kind = FIELD_MAP, .sub = timeouts_fields},
    {.key = "health", .kind = FIELD_MAP, .sub = health_fields},
    {.key = "retries", .kind = FIELD_UINT, .offset = C(retries), .min = 0, .max = 100},
    {.key = "retry_budget", .kind = FIELD_MAP, .sub = retry_budget_fields},
    {.key = "rate_limit", .kind = FIELD_CUSTOM, .parse = parse_rate_limit},
    {.key = "log", .kind = FIELD_MAP, .sub = log_fields},
    {.key = NULL},
};

#undef C

/* ---- load ------------------------------------------------------------------ */

/* A config holding every default of contract section 2, or NULL (out of memory). */
static struct config *config_new_defaults(const char *name)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    const char *why;

    if (cfg == NULL)
        return NULL;
    cfg->path = strdup(name);
    cfg->admin_token = strdup("");
    cfg->health.check.path = strdup("/healthz");
    cfg->rate_limit.store = strdup("twinproxy.db");
    cfg->log.access = strdup("stdout");
    if (cfg->path == NULL || cfg->admin_token == NULL || cfg->health.check.path == NULL ||
        cfg->rate_limit.store == NULL || cfg->log.access == NULL ||
        config_parse_addr("127.0.0.1:8080", &cfg->listen, &why) == -1) {
        config_free(cfg);
        return NULL;
    }
    cfg->workers = 1;
    cfg->balancer = CONFIG_BALANCER_ROUND_ROBIN;
    cfg->hash_key = CONFIG_KEY_CLIENT_IP;
    cfg->limits.max_client_connections = 10000;
    cfg->limits.max_header_bytes = 16384;
    cfg->limits.max_body_bytes = 0;
    cfg->limits.upstream_max_connections = 256;
    cfg->limits.upstream_idle_connections = 64;
    cfg->timeouts.connect_ms = 1000;
    cfg->timeouts.header_ms = 10000;
    cfg->timeouts.idle_ms = 60000;
    cfg->timeouts.read_ms = 30000;
    cfg->timeouts.write_ms = 30000;
    cfg->timeouts.total_ms = 60000;
    cfg->timeouts.queue_ms = 1000;
    cfg->timeouts.shutdown_ms = 30000;
    cfg->timeouts.min_rate = 0;
    cfg->timeouts.min_rate_window_ms = 10000;
    cfg->health.max_fails = 3;
    cfg->health.fail_timeout_ms = 10000;
    cfg->health.check.interval_ms = 2000;
    cfg->health.check.timeout_ms = 1000;
    cfg->health.check.rise = 2;
    cfg->health.check.fall = 2;
    cfg->retries = 2;
    cfg->retry_budget.percent = 20;
    cfg->retry_budget.min_concurrent = 3;
    cfg->rate_limit.key = CONFIG_KEY_CLIENT_IP;
    cfg->rate_limit.default_capacity = 100;
    cfg->rate_limit.default_rate_per_sec = 50;
    cfg->rate_limit.ipv6_prefix = 64;
    cfg->rate_limit.max_clients = 100000;
    cfg->log.level = CONFIG_LOG_INFO;
    cfg->log.format = CONFIG_LOG_JSON;
    return cfg;
}

/* libyaml's complaint as "invalid YAML: problem (context)". A reader error (bad
 * UTF-8, control characters) has a byte offset and no mark: its line is counted. */
static void fail_yaml(struct loader *ld, const yaml_parser_t *parser, const char *text, size_t len)
{
    const char *problem = parser->problem != NULL ? parser->problem : "unknown error";
    int line = (int)parser->problem_mark.line + 1;

    if (parser->error == YAML_MEMORY_ERROR) {
        fail(ld, 0, "", "out of memory");
        return;
    }
    if (parser->error == YAML_READER_ERROR) {
        line = 1;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++)
            line += text[i] == '\n';
    }
    if (parser->context != NULL)
        fail(ld, line, "", "invalid YAML: %s (%s)", problem, parser->context);
    else
        fail(ld, line, "", "invalid YAML: %s", problem);
}

struct config *config_load_string(const char *name, const char *text, size_t len, char *err,
                                  size_t errlen)
{
    struct loader ld = {.name = name, .err = err, .errlen = errlen};
    struct config *cfg = config_new_defaults(name);
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_event_t event;
    yaml_node_t *root;
    bool have_parser = false, have_doc = false;

    if (cfg == NULL) {
        fail(&ld, 0, "", "out of memory");
        return NULL;
    }
    if (!yaml_parser_initialize(&parser)) {
        fail(&ld, 0, "", "out of memory");
        goto error;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        fail_yaml(&ld, &parser, text, len);
        goto error;
    }
    have_doc = true;
    ld.doc = &doc;
    /* One document only; this reads just the next event, as PyYAML's compose() does. */
    if (!yaml_parser_parse(&parser, &event)) {
        fail_yaml(&ld, &parser, text, len);
        goto error;
    }
    if (event.type != YAML_STREAM_END_EVENT && event.type != YAML_NO_EVENT) {
        fail(&ld, (int)event.start_mark.line + 1, "", "only one YAML document is allowed");
        yaml_event_delete(&event);
        goto error;
    }
    yaml_event_delete(&event);

    root = yaml_document_get_root_node(&doc);
    if (root != NULL && !node_is_null(root)) {
        if (root->type != YAML_MAPPING_NODE) {
            fail_type(&ld, root, "", "a mapping at the top level");
            goto error;
        }
        if (walk_mapping(&ld, root, "", root_fields, cfg) == -1)
            goto error;
    }
    if (cfg->n_upstreams == 0) {
        fail(&ld, root != NULL ? node_line(root) : 1, "upstreams",
             "at least one upstream is required");
        goto error;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return cfg;

error:
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    config_free(cfg);
    return NULL;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct loader ld = {.name = path, .err = err, .errlen = errlen};
    struct config *cfg;
    char *text;
    size_t len = 0;
    ssize_t n;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
        fail(&ld, 0, "", "cannot read: %s", strerror(errno));
        return NULL;
    }
    if ((text = malloc(CONFIG_FILE_MAX + 1)) == NULL) {
        close(fd);
        fail(&ld, 0, "", "out of memory");
        return NULL;
    }
    /* One byte more than allowed tells a file that is too large. */
    while (len <= CONFIG_FILE_MAX && (n = read(fd, text + len, CONFIG_FILE_MAX + 1 - len)) != 0) {
        if (n == -1) {
            if (errno == EINTR)
                continue;
            fail(&ld, 0, "", "cannot read: %s", strerror(errno));
            close(fd);
            free(text);
            return NULL;
        }
        len += (size_t)n;
    }
    close(fd);
    if (len > CONFIG_FILE_MAX) {
        fail(&ld, 0, "", "cannot read: larger than %d bytes", CONFIG_FILE_MAX);
        free(text);
        return NULL;
    }
    cfg = config_load_string(path, text, len, err, errlen);
    free(text);
    return cfg;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        free(cfg->upstreams[i].name);
    free(cfg->upstreams);
    free(cfg->path);
    free(cfg->admin_token);
    free(cfg->hash_header);
    free(cfg->health.check.path);
    free(cfg->rate_limit.key_header);
    free(cfg->rate_limit.store);
    free(cfg->log.access);
    free(cfg);
}
