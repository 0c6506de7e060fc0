/* admin: the admin HTTP API. Twin: py-proxy/pyproxy/admin.py.
 *
 * One thread, one ev_loop: the accept watcher, one struct admin_conn per
 * connection, and an ev_async for admin_stop(). A request is parsed by llhttp
 * (paused at each message end so pipelined requests are handled one at a time
 * and answered in order), handled synchronously (store calls block this thread
 * only), and its response appended to the connection's output.
 */
#include "admin.h"

#include <errno.h>
#include <ev.h>
#include <llhttp.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define ADMIN_READ_CHUNK 16384   /* bytes read per read() */
#define ADMIN_OUT_HIGH 65536     /* stop handling requests while this much output waits */
#define ADMIN_HEAD_RAW_MAX 65536 /* raw head bytes (whitespace included): memory guard, 431 */
#define ADMIN_CLIENT_ID_MAX RATELIMIT_KEY_MAX /* bytes of a client_id */

/* ---------------------------------------------------------------- strings */

struct sb {
    char *p;    /* heap, NUL-ended */
    size_t len; /* bytes used */
    size_t cap; /* allocated */
    bool oom;   /* an allocation failed: the content is truncated */
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sb *b, const char *s)
{
    if (s != NULL)
        sb_put(b, s, strlen(s));
}

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_free(struct sb *b)
{
    free(b->p);
    *b = (struct sb){0};
}

size_t admin_format_number(double x, char *out, size_t cap)
{
    int n;
    if (x == 0)
        x = 0; /* -0 prints as 0 */
    if (x == floor(x) && fabs(x) < 9007199254740992.0)
        n = snprintf(out, cap, "%.0f", x);
    else
        n = snprintf(out, cap, "%.15g", x);
    return n < 0 ? 0 : (size_t)n;
}

static void sb_num(struct sb *b, double x)
{
    char tmp[48];
    sb_put(b, tmp, admin_format_number(x, tmp, sizeof tmp));
}

/* A JSON string: " \ and \b \f \n \r \t escaped, other bytes below 0x20 and
 * 0x7f as \u00xx, everything else as is (the same rule in both twins). */
static void sb_jstr(struct sb *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            break;
        }
        if (esc != NULL)
            sb_puts(b, esc);
        else if (c < 0x20 || c == 0x7f)
            sb_printf(b, "\\u%04x", c);
        else
            sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

/* Compact JSON of v (objects in insertion order, numbers by the shared rule). */
static void sb_json(struct sb *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        bool first = true;
        sb_put(b, "{", 1);
        json_object_foreach((json_t *)v, key, val)
        {
            if (!first)
                sb_put(b, ",", 1);
            first = false;
            sb_jstr(b, key, strlen(key));
            sb_put(b, ":", 1);
            sb_json(b, val);
        }
        sb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                sb_put(b, ",", 1);
            sb_json(b, json_array_get(v, i));
        }
        sb_put(b, "]", 1);
        break;
    case JSON_STRING:
        sb_jstr(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sb_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        sb_num(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sb_puts(b, "true");
        break;
    case JSON_FALSE:
        sb_puts(b, "false");
        break;
    case JSON_NULL:
        sb_puts(b, "null");
        break;
    }
}

/* ---------------------------------------------------------------- server */

struct admin {
    struct ev_loop *loop;         /* this server's own loop */
    pthread_t thread;             /* runs loop */
    int lfd;                      /* listening socket */
    ev_io accept_w;               /* readable lfd */
    ev_async stop_w;              /* admin_stop() -> the thread */
    char *token;                  /* "" = no auth; replaced by admin_set_token() */
    pthread_mutex_t token_mu;     /* guards token (a reload sets it from main's thread) */
    double idle;                  /* idle timeout, seconds */
    struct admin_providers prov;  /* /upstreams, /metrics */
    struct admin_clients clients; /* /clients (valid when has_clients) */
    bool has_clients;             /* rate_limit configured */
    struct admin_conn *conns;     /* every open connection (doubly linked) */
};

enum admin_fail {
    ADMIN_FAIL_NONE = 0, /* a parse error: 400 */
    ADMIN_FAIL_HEAD,     /* head over ADMIN_HEAD_MAX: 431 */
    ADMIN_FAIL_BODY,     /* body over ADMIN_BODY_MAX: 413 */
};

/* One request as parsed. */
struct admin_req {
    struct sb url;       /* request target */
    struct sb hname;     /* current header name */
    struct sb hval;      /* current header value */
    struct sb auth;      /* last Authorization value (trailing OWS trimmed) */
    bool has_auth;       /* an Authorization field was present */
    size_t head_bytes;   /* target + names + values so far (the 431 rule) */
    size_t raw_bytes;    /* raw bytes fed while in the head (the memory guard) */
    bool head_done;      /* on_headers_complete seen */
    struct sb body;      /* request body, at most ADMIN_BODY_MAX */
    enum admin_fail why; /* what a callback failure means */
};

struct admin_conn {
    struct admin *a;           /* server */
    struct admin_conn *prev;   /* in a->conns */
    struct admin_conn *next;   /* in a->conns */
    int fd;                    /* the socket */
    ev_io rio;                 /* readable */
    ev_io wio;                 /* writable, while output waits */
    ev_timer timer;            /* idle timeout, then the linger bound */
    llhttp_t llp;              /* parser; llp.data == this */
    struct admin_req req;      /* request being parsed */
    char in[ADMIN_READ_CHUNK]; /* bytes read */
    size_t in_off;             /* first unparsed byte */
    size_t in_len;             /* bytes in `in` */
    struct sb out;             /* output not yet written */
    size_t out_off;            /* first unwritten byte of out */
    bool closing;              /* last response queued: no more requests */
    bool lingering;            /* write side shut down, discarding input */
    bool peer_eof;             /* the client closed its side */
};

static void conn_close(struct admin_conn *c);
static void conn_process(struct admin_conn *c);

static void req_reset(struct admin_req *r)
{
    r->url.len = r->hname.len = r->hval.len = r->auth.len = r->body.len = 0;
    r->url.oom = r->hname.oom = r->hval.oom = r->auth.oom = r->body.oom = false;
    r->has_auth = r->head_done = false;
    r->head_bytes = r->raw_bytes = 0;
    r->why = ADMIN_FAIL_NONE;
}

static void req_free(struct admin_req *r)
{
    sb_free(&r->url);
    sb_free(&r->hname);
    sb_free(&r->hval);
    sb_free(&r->auth);
    sb_free(&r->body);
}

/* ---------------------------------------------------------------- responses */

static const char *reason_of(int code)
{
    switch (code) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

struct resp {
    int code;          /* status */
    const char *ctype; /* Content-Type, NULL on 204 */
    const char *allow; /* Allow (405), else NULL */
    struct sb body;    /* owned */
};

static void resp_json(struct resp *r, int code)
{
    r->code = code;
    r->ctype = "application/json";
}

static void resp_error(struct resp *r, int code, const char *msg)
{
    resp_json(r, code);
    r->body.len = 0;
    sb_printf(&r->body, "{\"code\":%d,\"message\":", code);
    sb_jstr(&r->body, msg, strlen(msg));
    sb_put(&r->body, "}", 1);
}

/* "<prefix><name>" error message. */
static void resp_error2(struct resp *r, int code, const char *prefix, const char *name)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s%s", prefix, name);
    resp_error(r, code, msg);
}

static void conn_queue(struct admin_conn *c, const struct resp *r, bool close)
{
    struct sb *o = &c->out;
    sb_printf(o, "HTTP/1.1 %d ", r->code);
    sb_puts(o, reason_of(r->code));
    sb_put(o, "\r\n", 2);
    if (r->code != 204) {
        sb_puts(o, "Content-Type: ");
        sb_puts(o, r->ctype);
        sb_printf(o, "\r\nContent-Length: %zu\r\n", r->body.len);
    }
    if (r->allow != NULL) {
        sb_puts(o, "Allow: ");
        sb_puts(o, r->allow);
        sb_put(o, "\r\n", 2);
    }
    if (close)
        sb_puts(o, "Connection: close\r\n");
    sb_put(o, "\r\n", 2);
    if (r->code != 204)
        sb_put(o, r->body.p ? r->body.p : "", r->body.len);
}

/* ---------------------------------------------------------------- request helpers */

static bool span_ieq(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)p[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a + 32);
        if (a != b)
            return false;
    }
    return true;
}

/* Constant-time compare of the Authorization value with "Bearer <token>". */
static bool token_matches(const struct admin *a, const struct admin_req *r)
{
    if (a->token[0] == '\0')
        return true;
    if (!r->has_auth || r->auth.oom)
        return false;
    size_t tl = strlen(a->token);
    const char *v = r->auth.p ? r->auth.p : "";
    size_t vl = r->auth.len;
    unsigned diff = vl == tl + 7 ? 0 : 1;
    for (size_t i = 0; i < tl + 7; i++) {
        unsigned char want = i < 7 ? (unsigned char)"Bearer "[i] : (unsigned char)a->token[i - 7];
        unsigned char got = i < vl ? (unsigned char)v[i] : 0;
        diff |= (unsigned)(want ^ got);
    }
    return diff == 0;
}

static bool authorized(struct admin *a, const struct admin_req *r)
{
    pthread_mutex_lock(&a->token_mu);
    bool ok = token_matches(a, r);
    pthread_mutex_unlock(&a->token_mu);
    return ok;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode p[0, n) into out (NUL-ended). Returns -1 on a bad escape. */
static int pct_decode(const char *p, size_t n, struct sb *out)
{
    out->len = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            if (n - i < 3)
                return -1;
            int hi = hexval(p[i + 1]), lo = hexval(p[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        sb_put(out, &ch, 1);
    }
    sb_put(out, "", 0);
    return out->oom ? -1 : 0;
}

/* limit / offset of GET /clients. Returns NULL, or the name of the bad one. */
static const char *parse_query(const char *q, size_t n, long *limit, long *offset)
{
    *limit = ADMIN_LIST_LIMIT;
    *offset = 0;
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && q[end] != '&')
            end++;
        const char *eq = memchr(q + i, '=', end - i);
        size_t klen = eq ? (size_t)(eq - (q + i)) : end - i;
        const char *name = NULL;
        long *dst = NULL;
        if (klen == 5 && memcmp(q + i, "limit", 5) == 0)
            name = "limit", dst = limit;
        else if (klen == 6 && memcmp(q + i, "offset", 6) == 0)
            name = "offset", dst = offset;
        if (dst != NULL) {
            const char *v = eq ? eq + 1 : q + end;
            size_t vl = (size_t)(q + end - v);
            if (vl == 0 || vl > 9)
                return name;
            long x = 0;
            for (size_t k = 0; k < vl; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return name;
                x = x * 10 + (v[k] - '0');
            }
            if (dst == limit && (x < 1 || x > ADMIN_LIST_MAX))
                return name;
            *dst = x;
        }
        i = end + 1;
    }
    return NULL;
}

/* ---------------------------------------------------------------- body validation */

enum field {
    F_CLIENT_ID = 0, /* string, 1..88 bytes */
    F_CAPACITY,      /* integer, 1..1e9 */
    F_RATE,          /* number >= 0 */
    F_TOKENS,        /* number, 0..capacity */
    F_STATE,         /* "drain" | "active" */
    F_COUNT,
};

static const char *const field_names[F_COUNT] = {"client_id", "capacity", "rate_per_sec", "tokens",
                                                 "state"};

#define FM(f) (1u << (f))

struct body {
    json_t *root;          /* the decoded object (owned) */
    json_t *f[F_COUNT];    /* borrowed values, NULL when absent */
    const char *client_id; /* F_CLIENT_ID as a string */
    size_t client_id_len;  /* its bytes */
    long long capacity;    /* F_CAPACITY */
    double rate;           /* F_RATE */
    double tokens;         /* F_TOKENS */
    bool drain;            /* F_STATE == "drain" */
};

/* Decode and check a body: allowed/required are FM() masks. cap_now is the
 * capacity tokens is checked against when the body has none (PATCH), 0 = none.
 * Returns true, or false with the 400 in r. */
static bool body_parse(const struct sb *raw, unsigned allowed, unsigned required, long long cap_now,
                       struct body *b, struct resp *r)
{
    memset(b, 0, sizeof *b);
    json_error_t jerr;
    b->root = json_loadb(raw->p ? raw->p : "", raw->len, JSON_REJECT_DUPLICATES, &jerr);
    if (b->root == NULL || !json_is_object(b->root)) {
        resp_error(r, 400, "invalid JSON");
        return false;
    }
    const char *key;
    json_t *val;
    json_object_foreach(b->root, key, val)
    {
        int f = -1;
        for (int k = 0; k < F_COUNT; k++)
            if (strcmp(key, field_names[k]) == 0 && (allowed & FM(k)))
                f = k;
        if (f < 0) {
            resp_error2(r, 400, "unknown field: ", key);
            return false;
        }
        b->f[f] = val;
    }
    for (int k = 0; k < F_COUNT; k++)
        if ((required & FM(k)) && b->f[k] == NULL) {
            resp_error2(r, 400, "missing field: ", field_names[k]);
            return false;
        }
    for (int k = 0; k < F_COUNT; k++) {
        json_t *v = b->f[k];
        if (v == NULL)
            continue;
        bool ok;
        switch (k) {
        case F_CLIENT_ID:
        case F_STATE:
            ok = json_is_string(v);
            break;
        case F_CAPACITY:
            ok = json_is_integer(v);
            break;
        default:
            ok = json_is_number(v);
            break;
        }
        if (!ok) {
            resp_error2(r, 400, "wrong type: ", field_names[k]);
            return false;
        }
    }
    if (b->f[F_CLIENT_ID]) {
        b->client_id = json_string_value(b->f[F_CLIENT_ID]);
        b->client_id_len = json_string_length(b->f[F_CLIENT_ID]);
    }
    if (b->f[F_CAPACITY]) {
        b->capacity = json_integer_value(b->f[F_CAPACITY]);
        cap_now = b->capacity;
    }
    if (b->f[F_RATE])
        b->rate = json_number_value(b->f[F_RATE]);
    if (b->f[F_TOKENS])
        b->tokens = json_number_value(b->f[F_TOKENS]);
    for (int k = 0; k < F_COUNT; k++) {
        if (b->f[k] == NULL)
            continue;
        bool ok = true;
        switch (k) {
        case F_CLIENT_ID:
            ok = b->client_id_len >= 1 && b->client_id_len <= ADMIN_CLIENT_ID_MAX;
            break;
        case F_CAPACITY:
            ok = b->capacity >= 1 && b->capacity <= (long long)RATELIMIT_CAPACITY_MAX;
            break;
        case F_RATE:
            ok = b->rate >= 0 && isfinite(b->rate);
            break;
        case F_TOKENS:
            ok = b->tokens >= 0 && b->tokens <= (double)cap_now;
            break;
        case F_STATE: {
            const char *s = json_string_value(b->f[k]);
            ok = strcmp(s, "drain") == 0 || strcmp(s, "active") == 0;
            b->drain = ok && s[0] == 'd';
            break;
        }
        default:
            break;
        }
        if (!ok) {
            resp_error2(r, 400, "invalid value: ", field_names[k]);
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- /clients */

static void client_json(struct sb *o, const char *id, size_t idlen,
                        const struct ratelimit_limit *lim, double tokens)
{
    sb_puts(o, "{\"client_id\":");
    sb_jstr(o, id, idlen);
    sb_printf(o, ",\"capacity\":%u,\"rate_per_sec\":", (unsigned)lim->capacity);
    sb_num(o, lim->rate_per_sec);
    sb_puts(o, ",\"tokens\":");
    sb_num(o, floor(tokens));
    sb_put(o, "}", 1);
}

static void store_failed(struct resp *r, const char *msg)
{
    log_event(CONFIG_LOG_ERROR, "store_error", json_pack("{s:s}", "reason", msg));
    resp_error(r, 500, "store error");
}

static int store_put(struct admin *a, const char *id, const struct ratelimit_limit *lim, double now,
                     struct resp *r)
{
    char err[STORE_ERR_MAX];
    struct store_client sc = {.client_id = (char *)id,
                              .capacity = lim->capacity,
                              .rate_per_sec = lim->rate_per_sec,
                              .updated_at = now};
    if (store_put_client(a->clients.store, &sc, err, sizeof err) == -1) {
        store_failed(r, err);
        return -1;
    }
    return 0;
}

struct list_item {
    char key[RATELIMIT_KEY_MAX]; /* the client_id bytes */
    size_t len;                  /* bytes */
    struct ratelimit_limit lim;  /* its override */
    double tokens;               /* at now */
};

struct list_acc {
    struct list_item *items; /* grown as needed */
    size_t n, cap;           /* used, allocated */
    bool oom;                /* an allocation failed */
};

static void list_add(const char *key, size_t len, const struct ratelimit_limit *lim, double tokens,
                     void *arg)
{
    struct list_acc *acc = arg;
    if (acc->oom)
        return;
    if (acc->n == acc->cap) {
        size_t ncap = acc->cap ? acc->cap * 2 : 64;
        struct list_item *ni = realloc(acc->items, ncap * sizeof *ni);
        if (ni == NULL) {
            acc->oom = true;
            return;
        }
        acc->items = ni;
        acc->cap = ncap;
    }
    struct list_item *it = &acc->items[acc->n++];
    memcpy(it->key, key, len);
    it->len = len;
    it->lim = *lim;
    it->tokens = tokens;
}

/* client_id order: bytes, a prefix first (SQLite's BINARY collation). */
static int list_cmp(const void *x, const void *y)
{
    const struct list_item *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->key, b->key, n);
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static void clients_list(struct admin *a, const char *q, size_t qlen, struct resp *r)
{
    long limit, offset;
    const char *bad = parse_query(q, qlen, &limit, &offset);
    if (bad != NULL) {
        resp_error2(r, 400, "invalid query: ", bad);
        return;
    }
    struct list_acc acc = {0};
    ratelimit_pinned(a->clients.table, a->clients.now(), list_add, &acc);
    if (acc.oom) {
        free(acc.items);
        resp_error(r, 500, "out of memory");
        return;
    }
    if (acc.n > 1)
        qsort(acc.items, acc.n, sizeof *acc.items, list_cmp);
    resp_json(r, 200);
    sb_puts(&r->body, "{\"clients\":[");
    for (size_t i = (size_t)offset, k = 0; i < acc.n && k < (size_t)limit; i++, k++) {
        if (k)
            sb_put(&r->body, ",", 1);
        client_json(&r->body, acc.items[i].key, acc.items[i].len, &acc.items[i].lim,
                    acc.items[i].tokens);
    }
    sb_printf(&r->body, "],\"total\":%zu}", acc.n);
    free(acc.items);
}

static void clients_create(struct admin *a, const struct sb *raw, struct resp *r)
{
    struct body b;
    unsigned allowed = FM(F_CLIENT_ID) | FM(F_CAPACITY) | FM(F_RATE) | FM(F_TOKENS);
    unsigned required = FM(F_CLIENT_ID) | FM(F_CAPACITY) | FM(F_RATE);
    if (!body_parse(raw, allowed, required, 0, &b, r))
        goto out;
    double now = a->clients.now();
    struct ratelimit_limit lim = {.capacity = (uint32_t)b.capacity, .rate_per_sec = b.rate};
    struct ratelimit_limit old;
    double tokens;
    if (ratelimit_lookup(a->clients.table, b.client_id, b.client_id_len, now, &old, &tokens)) {
        resp_error(r, 409, "client exists");
        goto out;
    }
    if (store_put(a, b.client_id, &lim, now, r) == -1)
        goto out;
    tokens = b.f[F_TOKENS] ? b.tokens : (double)lim.capacity;
    if (ratelimit_pin(a->clients.table, b.client_id, b.client_id_len, &lim, tokens, now) == -1) {
        char err[STORE_ERR_MAX];
        if (store_delete_client(a->clients.store, b.client_id, err, sizeof err) == -1)
            log_event(CONFIG_LOG_ERROR, "store_error", json_pack("{s:s}", "reason", err));
        resp_error(r, 503, "client table full");
        goto out;
    }
    ratelimit_lookup(a->clients.table, b.client_id, b.client_id_len, now, &lim, &tokens);
    resp_json(r, 201);
    client_json(&r->body, b.client_id, b.client_id_len, &lim, tokens);
out:
    json_decref(b.root);
}

/* GET / PUT / PATCH / DELETE /clients/{id}; id is decoded and NUL-ended. */
static void clients_one(struct admin *a, unsigned method, const struct sb *id, const struct sb *raw,
                        struct resp *r)
{
    double now = a->clients.now();
    struct ratelimit_limit lim;
    double tokens;
    if (!ratelimit_lookup(a->clients.table, id->p, id->len, now, &lim, &tokens)) {
        resp_error(r, 404, "not found");
        return;
    }
    if (method == HTTP_GET) {
        resp_json(r, 200);
        client_json(&r->body, id->p, id->len, &lim, tokens);
        return;
    }
    if (method == HTTP_DELETE) {
        char err[STORE_ERR_MAX];
        if (store_delete_client(a->clients.store, id->p, err, sizeof err) == -1) {
            store_failed(r, err);
            return;
        }
        ratelimit_unpin(a->clients.table, id->p, id->len, now);
        r->code = 204;
        r->ctype = NULL;
        return;
    }
    struct body b;
    bool put = method == HTTP_PUT;
    unsigned allowed = FM(F_CAPACITY) | FM(F_RATE) | (put ? 0 : FM(F_TOKENS));
    unsigned required = put ? FM(F_CAPACITY) | FM(F_RATE) : 0;
    if (!body_parse(raw, allowed, required, lim.capacity, &b, r))
        goto out;
    if (b.f[F_CAPACITY])
        lim.capacity = (uint32_t)b.capacity;
    if (b.f[F_RATE])
        lim.rate_per_sec = b.rate;
    if (store_put(a, id->p, &lim, now, r) == -1)
        goto out;
    ratelimit_pin(a->clients.table, id->p, id->len, &lim, b.f[F_TOKENS] ? b.tokens : -1, now);
    ratelimit_lookup(a->clients.table, id->p, id->len, now, &lim, &tokens);
    resp_json(r, 200);
    client_json(&r->body, id->p, id->len, &lim, tokens);
out:
    json_decref(b.root);
}

/* ---------------------------------------------------------------- /upstreams */

static json_t *upstream_find(json_t *list, const char *name)
{
    size_t i;
    json_t *u;
    json_array_foreach(list, i, u)
    {
        const char *n = json_string_value(json_object_get(u, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return u;
    }
    return NULL;
}

static void upstream_patch(struct admin *a, const struct sb *name, const struct sb *raw,
                           struct resp *r)
{
    json_t *list = a->prov.upstreams ? a->prov.upstreams(a->prov.ud) : NULL;
    json_t *u = list && name->len == strlen(name->p) ? upstream_find(list, name->p) : NULL;
    if (u == NULL || a->prov.upstream_set_state == NULL) {
        json_decref(list);
        resp_error(r, 404, "not found");
        return;
    }
    const char *before = json_string_value(json_object_get(u, "state"));
    bool was_drain = before != NULL && strcmp(before, "drain") == 0;
    json_decref(list);
    struct body b;
    json_t *out = NULL;
    if (!body_parse(raw, FM(F_STATE), FM(F_STATE), 0, &b, r))
        goto done;
    if (a->prov.upstream_set_state(a->prov.ud, name->p, b.drain, &out) == -1 || out == NULL) {
        resp_error(r, 404, "not found");
        goto done;
    }
    if (was_drain != b.drain)
        log_event(
            CONFIG_LOG_INFO, "upstream_drain",
            json_pack("{s:s,s:s}", "upstream", name->p, "state", b.drain ? "drain" : "active"));
    resp_json(r, 200);
    sb_json(&r->body, out);
done:
    json_decref(out);
    json_decref(b.root);
}

/* ---------------------------------------------------------------- routing */

enum route {
    R_NONE = 0,  /* 404 */
    R_HEALTHZ,   /* /healthz */
    R_METRICS,   /* /metrics */
    R_UPSTREAMS, /* /upstreams */
    R_UPSTREAM,  /* /upstreams/{name} */
    R_CLIENTS,   /* /clients */
    R_CLIENT,    /* /clients/{id} */
};

static const char *const route_allow[] = {
    [R_NONE] = "",
    [R_HEALTHZ] = "GET",
    [R_METRICS] = "GET",
    [R_UPSTREAMS] = "GET",
    [R_UPSTREAM] = "PATCH",
    [R_CLIENTS] = "GET, POST",
    [R_CLIENT] = "GET, PUT, PATCH, DELETE",
};

static bool route_allows(enum route rt, unsigned m)
{
    switch (rt) {
    case R_HEALTHZ:
    case R_METRICS:
    case R_UPSTREAMS:
        return m == HTTP_GET;
    case R_UPSTREAM:
        return m == HTTP_PATCH;
    case R_CLIENTS:
        return m == HTTP_GET || m == HTTP_POST;
    case R_CLIENT:
        return m == HTTP_GET || m == HTTP_PUT || m == HTTP_PATCH || m == HTTP_DELETE;
    default:
        return false;
    }
}

/* Match a path; *seg gets the raw {name}/{id} segment. */
static enum route route_of(const char *p, size_t n, const char **seg, size_t *seglen)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(p, (lit), n) == 0)
#define UNDER(lit)                                                                                 \
    (n > sizeof(lit) - 1 && memcmp(p, (lit), sizeof(lit) - 1) == 0 &&                              \
     memchr(p + sizeof(lit) - 1, '/', n - (sizeof(lit) - 1)) == NULL)
    if (IS("/healthz"))
        return R_HEALTHZ;
    if (IS("/metrics"))
        return R_METRICS;
    if (IS("/upstreams"))
        return R_UPSTREAMS;
    if (IS("/clients"))
        return R_CLIENTS;
    if (UNDER("/upstreams/")) {
        *seg = p + 11;
        *seglen = n - 11;
        return R_UPSTREAM;
    }
    if (UNDER("/clients/")) {
        *seg = p + 9;
        *seglen = n - 9;
        return R_CLIENT;
    }
    return R_NONE;
#undef IS
#undef UNDER
}

static void handle(struct admin *a, unsigned method, const struct admin_req *req, struct resp *r)
{
    const char *url = req->url.p ? req->url.p : "";
    size_t ulen = req->url.len;
    const char *qm = memchr(url, '?', ulen);
    size_t plen = qm ? (size_t)(qm - url) : ulen;
    const char *q = qm ? qm + 1 : url + ulen;
    size_t qlen = ulen - plen - (qm ? 1 : 0);
    const char *seg = NULL;
    size_t seglen = 0;
    enum route rt = route_of(url, plen, &seg, &seglen);

    bool open = method == HTTP_GET && (rt == R_HEALTHZ || rt == R_METRICS);
    if (!open && !authorized(a, req)) {
        resp_error(r, 401, "unauthorized");
        return;
    }
    if ((rt == R_CLIENTS || rt == R_CLIENT) && !a->has_clients)
        rt = R_NONE;
    if (rt == R_NONE) {
        resp_error(r, 404, "not found");
        return;
    }
    if (!route_allows(rt, method)) {
        resp_error(r, 405, "method not allowed");
        r->allow = route_allow[rt];
        return;
    }
    switch (rt) {
    case R_HEALTHZ:
        resp_json(r, 200);
        sb_puts(&r->body, "{\"status\":\"ok\"}");
        break;
    case R_METRICS: {
        resp_json(r, 200);
        r->ctype = "text/plain; version=0.0.4; charset=utf-8";
        if (a->prov.metrics == NULL)
            break;
        /* One render into a buffer that fits the usual output (the provider sums every
         * worker's slots each time: rendering twice, once to size, doubled the cost of a
         * scrape). The series can grow between two renders (a first request of a new
         * code or upstream): render again into a larger buffer until the whole text
         * fits, never send a cut one. */
        size_t cap = 64 * 1024;
        for (int tries = 0; tries < 8; tries++) {
            char *buf = malloc(cap);
            if (buf == NULL)
                break;
            size_t m = a->prov.metrics(a->prov.ud, buf, cap);
            if (m <= cap) {
                sb_put(&r->body, buf, m);
                free(buf);
                break;
            }
            free(buf);
            cap = m + m / 4 + 4096;
        }
        break;
    }
    case R_UPSTREAMS: {
        json_t *list = a->prov.upstreams ? a->prov.upstreams(a->prov.ud) : NULL;
        resp_json(r, 200);
        if (list != NULL)
            sb_json(&r->body, list);
        else
            sb_puts(&r->body, "[]");
        json_decref(list);
        break;
    }
    case R_UPSTREAM: {
        struct sb name = {0};
        if (pct_decode(seg, seglen, &name) == -1)
            resp_error(r, 404, "not found");
        else
            upstream_patch(a, &name, &req->body, r);
        sb_free(&name);
        break;
    }
    case R_CLIENTS:
        if (method == HTTP_GET)
            clients_list(a, q, qlen, r);
        else
            clients_create(a, &req->body, r);
        break;
    case R_CLIENT: {
        struct sb id = {0};
        if (pct_decode(seg, seglen, &id) == -1)
            resp_error(r, 400, "invalid value: client_id");
        else
            clients_one(a, method, &id, &req->body, r);
        sb_free(&id);
        break;
    }
    default:
        break;
    }
}

/* ---------------------------------------------------------------- llhttp callbacks */

static struct admin_conn *C(llhttp_t *p)
{
    return p->data;
}

static int head_count(struct admin_conn *c, size_t len)
{
    c->req.head_bytes += len;
    if (c->req.head_bytes > ADMIN_HEAD_MAX) {
        c->req.why = ADMIN_FAIL_HEAD;
        return -1;
    }
    return 0;
}

static int cb_message_begin(llhttp_t *p)
{
    req_reset(&C(p)->req);
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = C(p);
    if (head_count(c, len) == -1)
        return -1;
    sb_put(&c->req.url, at, len);
    return 0;
}

/* A header is complete: keep what the routes need. */
static void header_done(struct admin_req *r)
{
    if (span_ieq(r->hname.p ? r->hname.p : "", r->hname.len, "authorization")) {
        size_t n = r->hval.len;
        while (n > 0 && (r->hval.p[n - 1] == ' ' || r->hval.p[n - 1] == '\t'))
            n--;
        r->auth.len = 0;
        r->auth.oom = r->hval.oom;
        sb_put(&r->auth, r->hval.p ? r->hval.p : "", n);
        r->has_auth = true;
    }
    r->hname.len = r->hval.len = 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = C(p);
    if (head_count(c, len) == -1)
        return -1;
    sb_put(&c->req.hname, at, len);
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = C(p);
    if (head_count(c, len) == -1)
        return -1;
    sb_put(&c->req.hval, at, len);
    return 0;
}

/* Called for every header, an empty value included. */
static int cb_header_value_complete(llhttp_t *p)
{
    header_done(&C(p)->req);
    return 0;
}

static int cb_headers_complete(llhttp_t *p)
{
    struct admin_conn *c = C(p);
    c->req.head_done = true;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > ADMIN_BODY_MAX) {
        c->req.why = ADMIN_FAIL_BODY;
        return -1;
    }
    return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = C(p);
    if (c->req.body.len + len > ADMIN_BODY_MAX) {
        c->req.why = ADMIN_FAIL_BODY;
        return -1;
    }
    sb_put(&c->req.body, at, len);
    return 0;
}

static int cb_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = cb_message_begin;
    settings.on_url = cb_url;
    settings.on_header_field = cb_header_field;
    settings.on_header_value = cb_header_value;
    settings.on_header_value_complete = cb_header_value_complete;
    settings.on_headers_complete = cb_headers_complete;
    settings.on_body = cb_body;
    settings.on_message_complete = cb_message_complete;
}

/* ---------------------------------------------------------------- connection I/O */

static void conn_arm_idle(struct admin_conn *c)
{
    ev_timer_stop(c->a->loop, &c->timer);
    ev_timer_set(&c->timer, c->a->idle, 0);
    ev_timer_start(c->a->loop, &c->timer);
}

/* Answer the request just parsed; queue its response. */
static void conn_answer(struct admin_conn *c)
{
    struct resp r = {0};
    bool keep = llhttp_should_keep_alive(&c->llp) && !c->llp.upgrade && !c->peer_eof;
    handle(c->a, c->llp.method, &c->req, &r);
    if (!keep)
        c->closing = true;
    conn_queue(c, &r, !keep);
    sb_free(&r.body);
    conn_arm_idle(c);
}

/* A protocol failure: answer it, then close (lingering). */
static void conn_fail(struct admin_conn *c)
{
    struct resp r = {0};
    switch (c->req.why) {
    case ADMIN_FAIL_BODY:
        resp_error(&r, 413, "body too large");
        break;
    case ADMIN_FAIL_HEAD:
        resp_error(&r, 431, "header too large");
        break;
    default:
        resp_error(&r, 400, "bad request");
        break;
    }
    c->closing = true;
    conn_queue(c, &r, true);
    sb_free(&r.body);
}

/* Start the lingering close: the response is out, shut our side down and
 * read until the client closes or ADMIN_LINGER_S passes. */
static void conn_linger(struct admin_conn *c)
{
    struct ev_loop *loop = c->a->loop;
    c->lingering = true;
    ev_io_stop(loop, &c->wio);
    if (c->peer_eof || shutdown(c->fd, SHUT_WR) == -1) {
        conn_close(c);
        return;
    }
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, ADMIN_LINGER_S, 0);
    ev_timer_start(loop, &c->timer);
    ev_io_start(loop, &c->rio);
}

static void conn_flush(struct admin_conn *c)
{
    struct ev_loop *loop = c->a->loop;
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(loop, &c->wio);
                return;
            }
            if (errno == EINTR)
                continue;
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    ev_io_stop(loop, &c->wio);
    c->out.len = c->out_off = 0;
    if (c->closing) {
        conn_linger(c);
        return;
    }
    /* output drained: handle what was waiting (may close c) */
    if (c->in_off < c->in_len)
        conn_process(c);
    else if (c->peer_eof)
        conn_close(c);
}

/* Parse and answer buffered requests, one at a time, until the input is used
 * up, the output backs up, or the connection is closing. */
static void conn_process(struct admin_conn *c)
{
    while (!c->closing && c->in_off < c->in_len && c->out.len - c->out_off < ADMIN_OUT_HIGH) {
        const char *data = c->in + c->in_off;
        size_t len = c->in_len - c->in_off;
        bool in_head = !c->req.head_done;
        llhttp_errno_t e = llhttp_execute(&c->llp, data, len);
        if (e == HPE_OK) {
            if (in_head && !c->req.head_done) {
                c->req.raw_bytes += len;
                if (c->req.raw_bytes > ADMIN_HEAD_RAW_MAX) {
                    c->req.why = ADMIN_FAIL_HEAD;
                    conn_fail(c);
                    break;
                }
            }
            c->in_off = c->in_len;
            break;
        }
        if (e == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&c->llp);
            c->in_off += pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
            conn_answer(c);
            llhttp_resume(&c->llp);
            continue;
        }
        conn_fail(c);
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->out.oom) {
        conn_close(c);
        return;
    }
    if (c->out.len > c->out_off) {
        conn_flush(c);
        return;
    }
    if (c->closing)
        conn_flush(c);
    else if (c->peer_eof)
        conn_close(c);
}

static void conn_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct admin_conn *c = container_of(w, struct admin_conn, rio);
    if (c->lingering) {
        char sink[4096];
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
            conn_close(c);
        return;
    }
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_len == sizeof c->in) {
        ev_io_stop(c->a->loop, &c->rio); /* resumed once the output drains */
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
    if (n == -1) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(c);
        return;
    }
    if (n == 0) {
        c->peer_eof = true;
        ev_io_stop(c->a->loop, &c->rio);
    }
    c->in_len += (size_t)n;
    conn_process(c);
}

static void conn_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct admin_conn *c = container_of(w, struct admin_conn, wio);
    /* reading may have stopped on a full input buffer; conn_flush may free c */
    if (!c->lingering && !c->peer_eof && !c->closing)
        ev_io_start(c->a->loop, &c->rio);
    conn_flush(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(container_of(w, struct admin_conn, timer));
}

static void conn_close(struct admin_conn *c)
{
    struct admin *a = c->a;
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    close(c->fd);
    c->fd = -1;
    req_free(&c->req);
    sb_free(&c->out);
    free(c);
}

static void admin_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct admin *a = container_of(w, struct admin, accept_w);
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        struct admin_conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            return;
        }
        c->a = a;
        c->fd = fd;
        llhttp_init(&c->llp, HTTP_REQUEST, &settings);
        c->llp.data = c;
        ev_io_init(&c->rio, conn_on_read, fd, EV_READ);
        ev_io_init(&c->wio, conn_on_write, fd, EV_WRITE);
        ev_timer_init(&c->timer, conn_on_timer, a->idle, 0);
        c->next = a->conns;
        if (a->conns)
            a->conns->prev = c;
        a->conns = c;
        ev_io_start(loop, &c->rio);
        ev_timer_start(loop, &c->timer);
    }
}

static void admin_on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *admin_thread(void *arg)
{
    struct admin *a = arg;
    ev_run(a->loop, 0);
    return NULL;
}

/* ---------------------------------------------------------------- API */

int admin_bind(const struct config_addr *addr, const char *cfg_path, char *err, size_t errlen)
{
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        goto error;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1)
        goto error;
    if (addr->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&addr->addr, addr->addrlen) == -1)
        goto error;
    if (listen(fd, 128) == -1)
        goto error;
    return fd;
error:;
    int e = errno;
    snprintf(err, errlen, "%s:%d: admin.listen: %s", cfg_path ? cfg_path : "?", addr->line,
             e == EADDRINUSE ? "address in use" : strerror(e));
    if (fd != -1)
        close(fd);
    return -1;
}

struct admin *admin_start(const struct admin_config *cfg, int lfd,
                          const struct admin_providers *prov, const struct admin_clients *clients,
                          char *err, size_t errlen)
{
    pthread_once(&settings_once, settings_init);
    struct admin *a = calloc(1, sizeof *a);
    if (a == NULL)
        goto fail;
    a->lfd = lfd;
    pthread_mutex_init(&a->token_mu, NULL);
    a->token = strdup(cfg->token ? cfg->token : "");
    a->idle = cfg->idle_timeout > 0 ? cfg->idle_timeout : ADMIN_IDLE_S;
    if (prov != NULL)
        a->prov = *prov;
    if (clients != NULL && clients->table != NULL && clients->store != NULL &&
        clients->now != NULL) {
        a->clients = *clients;
        a->has_clients = true;
    }
    a->loop = ev_loop_new(EVFLAG_AUTO);
    if (a->token == NULL || a->loop == NULL)
        goto fail;
    ev_io_init(&a->accept_w, admin_on_accept, lfd, EV_READ);
    ev_io_start(a->loop, &a->accept_w);
    ev_async_init(&a->stop_w, admin_on_stop);
    ev_async_start(a->loop, &a->stop_w);
    int e = pthread_create(&a->thread, NULL, admin_thread, a);
    if (e != 0) {
        errno = e;
        goto fail;
    }
    return a;
fail:
    snprintf(err, errlen, "admin: cannot start: %s", strerror(errno));
    if (a != NULL) {
        if (a->loop)
            ev_loop_destroy(a->loop);
        free(a->token);
        free(a);
    }
    close(lfd);
    return NULL;
}

void admin_stop(struct admin *a)
{
    if (a == NULL)
        return;
    ev_async_send(a->loop, &a->stop_w);
    pthread_join(a->thread, NULL);
    /* conn_close() unlinks the head it is given, so a->conns moves on each time (the
     * analyzer cannot see that a head has no prev) */
    while (a->conns)
        conn_close(a->conns); // NOLINT(clang-analyzer-unix.Malloc)
    ev_io_stop(a->loop, &a->accept_w);
    ev_async_stop(a->loop, &a->stop_w);
    ev_loop_destroy(a->loop);
    close(a->lfd);
    pthread_mutex_destroy(&a->token_mu);
    free(a->token);
    free(a);
}

int admin_set_token(struct admin *a, const char *token)
{
    char *t = strdup(token ? token : "");
    if (t == NULL)
        return -1;
    pthread_mutex_lock(&a->token_mu);
    char *old = a->token;
    a->token = t;
    pthread_mutex_unlock(&a->token_mu);
    free(old);
    return 0;
}
