/* route: maps a request target to what the upstream answers. */
#include "route.h"

#include <string.h>

#define ROUTE_DELAY_DEPTH 8 /* /delay?then=/delay?then=... nesting we follow */

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

/* dst may alias src (dst <= src): decoding never writes ahead of what it reads. */
size_t route_url_decode(const char *src, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return (size_t)-1;
            int hi = hexval(src[i + 1]);
            int lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return (size_t)-1;
            dst[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (ch == '+') {
            dst[o++] = ' ';
        } else {
            dst[o++] = ch;
        }
    }
    return o;
}

int route_query_get(const char *q, size_t qlen, const char *key, const char **val, size_t *val_len)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < qlen) {
        size_t end = i;
        while (end < qlen && q[end] != '&')
            end++;
        if (end - i >= klen && memcmp(q + i, key, klen) == 0 &&
            (end - i == klen || q[i + klen] == '=')) {
            size_t vstart = i + klen + (end - i == klen ? 0 : 1);
            *val = q + vstart;
            *val_len = end - vstart;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* Strict decimal: digits only, no sign, no overflow past 2^62. */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 19)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > ((uint64_t)1 << 62))
        return -1;
    *out = v;
    return 0;
}

/* Matches `prefix` followed by one path segment; sets seg/seg_len. */
static int match_arg(const char *path, size_t plen, const char *prefix, const char **seg,
                     size_t *seg_len)
{
    size_t n = strlen(prefix);
    if (plen <= n || memcmp(path, prefix, n) != 0)
        return 0;
    *seg = path + n;
    *seg_len = plen - n;
    return 1;
}

static int path_is(const char *path, size_t plen, const char *lit)
{
    size_t n = strlen(lit);
    return plen == n && memcmp(path, lit, n) == 0;
}

static void bad(struct route *out, const char *why)
{
    out->kind = ROUTE_BAD_PARAM;
    out->bad = why;
}

static int query_u64(const char *q, size_t qlen, const char *key, uint64_t *v)
{
    const char *val;
    size_t vlen;
    if (!route_query_get(q, qlen, key, &val, &vlen))
        return 0;
    return parse_u64(val, vlen, v) == 0 ? 0 : -1;
}

static const struct {
    const char *name;
    enum invalid_kind kind;
} invalid_names[] = {
    {"garbage", INVALID_GARBAGE},     {"cl-te", INVALID_CL_TE},
    {"dup-cl", INVALID_DUP_CL},       {"bad-cl", INVALID_BAD_CL},
    {"bad-chunk", INVALID_BAD_CHUNK}, {"bad-status", INVALID_BAD_STATUS},
};

void route_parse(const char *target, size_t len, char *scratch, struct route *out)
{
    memset(out, 0, sizeof(*out));
    for (int depth = 0;; depth++) {
        /* absolute-form: skip scheme://authority */
        if (len > 0 && target[0] != '/') {
            const char *sep = memchr(target, ':', len);
            if (sep != NULL && (size_t)(sep - target) + 3 <= len && sep[1] == '/' &&
                sep[2] == '/') {
                size_t i = (size_t)(sep - target) + 3;
                while (i < len && target[i] != '/' && target[i] != '?')
                    i++;
                target += i;
                len -= i;
            }
        }
        const char *qm = memchr(target, '?', len);
        size_t plen = qm != NULL ? (size_t)(qm - target) : len;
        const char *q = qm != NULL ? qm + 1 : "";
        size_t qlen = qm != NULL ? len - plen - 1 : 0;
        const char *seg;
        size_t slen;
        uint64_t v;

        out->kind = ROUTE_OK;
        if (match_arg(target, plen, "/delay/", &seg, &slen)) {
            const char *then;
            size_t tlen;
            if (parse_u64(seg, slen, &v) == -1) {
                bad(out, "delay");
                return;
            }
            out->delay_ms += v;
            if (!route_query_get(q, qlen, "then", &then, &tlen))
                return; /* ROUTE_OK */
            if (depth + 1 >= ROUTE_DELAY_DEPTH) {
                bad(out, "then nesting");
                return;
            }
            size_t dlen = route_url_decode(then, tlen, scratch);
            if (dlen == (size_t)-1) {
                bad(out, "then");
                return;
            }
            target = scratch;
            len = dlen;
            continue;
        }
        if (match_arg(target, plen, "/bytes/", &seg, &slen)) {
            out->kind = ROUTE_BYTES;
            if (parse_u64(seg, slen, &out->n) == -1) {
                bad(out, "bytes");
                return;
            }
        } else if (match_arg(target, plen, "/chunked/", &seg, &slen)) {
            out->kind = ROUTE_CHUNKED;
            out->chunk = 4096;
            if (parse_u64(seg, slen, &out->n) == -1 ||
                query_u64(q, qlen, "chunk", &out->chunk) == -1 || out->chunk == 0) {
                bad(out, "chunked");
                return;
            }
            uint64_t t = 0;
            if (query_u64(q, qlen, "trailer", &t) == -1) {
                bad(out, "trailer");
                return;
            }
            out->trailer = t != 0;
        } else if (match_arg(target, plen, "/status/", &seg, &slen)) {
            out->kind = ROUTE_STATUS;
            if (slen != 3 || parse_u64(seg, slen, &out->n) == -1 || out->n < 100) {
                bad(out, "status");
                return;
            }
        } else if (path_is(target, plen, "/echo")) {
            out->kind = ROUTE_ECHO;
        } else if (path_is(target, plen, "/health")) {
            out->kind = ROUTE_HEALTH;
            out->control = 1;
        } else if (path_is(target, plen, "/health/fail")) {
            out->kind = ROUTE_HEALTH_FAIL;
            out->control = 1;
        } else if (path_is(target, plen, "/health/ok")) {
            out->kind = ROUTE_HEALTH_OK;
            out->control = 1;
        } else if (path_is(target, plen, "/drop")) {
            out->kind = ROUTE_DROP;
        } else if (path_is(target, plen, "/reset")) {
            out->kind = ROUTE_RESET;
        } else if (path_is(target, plen, "/invalid")) {
            out->kind = ROUTE_INVALID;
            out->invalid = INVALID_GARBAGE;
        } else if (match_arg(target, plen, "/invalid/", &seg, &slen)) {
            out->kind = ROUTE_INVALID;
            size_t i;
            for (i = 0; i < sizeof(invalid_names) / sizeof(invalid_names[0]); i++) {
                if (strlen(invalid_names[i].name) == slen &&
                    memcmp(invalid_names[i].name, seg, slen) == 0)
                    break;
            }
            if (i == sizeof(invalid_names) / sizeof(invalid_names[0])) {
                bad(out, "invalid kind");
                return;
            }
            out->invalid = invalid_names[i].kind;
        } else if (match_arg(target, plen, "/truncate/", &seg, &slen)) {
            out->kind = ROUTE_TRUNCATE;
            if (parse_u64(seg, slen, &out->n) == -1) {
                bad(out, "truncate");
                return;
            }
        } else if (match_arg(target, plen, "/drip/", &seg, &slen)) {
            out->kind = ROUTE_DRIP;
            out->interval_ms = 100;
            if (parse_u64(seg, slen, &out->n) == -1 ||
                query_u64(q, qlen, "interval", &out->interval_ms) == -1) {
                bad(out, "drip");
                return;
            }
            if (out->interval_ms == 0)
                out->interval_ms = 1;
        } else if (path_is(target, plen, "/close")) {
            out->kind = ROUTE_CLOSE;
        } else if (path_is(target, plen, "/headers")) {
            out->kind = ROUTE_HEADERS;
            out->query = q;
            out->query_len = qlen;
        } else if (path_is(target, plen, "/upgrade")) {
            out->kind = ROUTE_UPGRADE;
        } else if (path_is(target, plen, "/stats")) {
            out->kind = ROUTE_STATS;
            out->control = 1;
        } else if (path_is(target, plen, "/stats/reset")) {
            out->kind = ROUTE_STATS_RESET;
            out->control = 1;
        } else if (path_is(target, plen, "/stall")) {
            out->kind = ROUTE_STALL;
        } else if (match_arg(target, plen, "/fault/", &seg, &slen)) {
            out->kind = ROUTE_FAULT;
            out->control = 1;
            if (route_fault_parse(seg, slen, &out->fault, &out->n) == -1) {
                bad(out, "fault");
                return;
            }
        }
        return;
    }
}

int route_fault_parse(const char *s, size_t len, enum fault_kind *kind, uint64_t *ms)
{
    static const struct {
        const char *name;
        enum fault_kind kind;
    } names[] = {
        {"none", FAULT_NONE},
        {"reset", FAULT_RESET},
        {"drop", FAULT_DROP},
        {"stall", FAULT_STALL},
        {"reset-head", FAULT_RESET_HEAD},
        {"reset-body", FAULT_RESET_BODY},
        {"malformed", FAULT_MALFORMED},
        {"extra", FAULT_EXTRA},
        {"close", FAULT_CLOSE},
    };
    const char *seg;
    size_t slen;

    *ms = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (path_is(s, len, names[i].name)) {
            *kind = names[i].kind;
            return 0;
        }
    }
    if (match_arg(s, len, "delay/", &seg, &slen) && parse_u64(seg, slen, ms) == 0) {
        *kind = FAULT_DELAY;
        return 0;
    }
    if (match_arg(s, len, "trickle/", &seg, &slen) && parse_u64(seg, slen, ms) == 0) {
        *kind = FAULT_TRICKLE;
        return 0;
    }
    if (match_arg(s, len, "early/", &seg, &slen) && slen == 3 && parse_u64(seg, slen, ms) == 0 &&
        *ms >= 200 && *ms <= 599) {
        *kind = FAULT_EARLY;
        return 0;
    }
    *ms = 0;
    return -1;
}

int route_faultable(const struct route *r)
{
    return !r->control;
}

const char *route_reason(unsigned code)
{
    switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
