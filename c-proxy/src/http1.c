#include "http1.h"

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HDRS_INITIAL 32

/* ---------------------------------------------------------------- spans */

/* ASCII-only case folding: field names and the tokens compared here are ASCII, and
 * strncasecmp() would cost a locale lookup per call on the hot path. */
static inline unsigned char ascii_lower(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + ('a' - 'A')) : ch;
}

/* s equals the n-byte lowercase literal lit, ignoring ASCII case. */
static inline bool span_eq_lower(struct http1_span s, const char *lit, size_t n)
{
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)s.p[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

/* The length of a literal is known at compile time: no strlen per comparison. */
#define SPAN_EQ_LIT(s, lit) span_eq_lower((s), (lit), sizeof(lit) - 1)

bool http1_span_eq(struct http1_span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)s.p[i]) != ascii_lower((unsigned char)lit[i]))
            return false;
    return true;
}

static bool span_eq_span(struct http1_span a, struct http1_span b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (ascii_lower((unsigned char)a.p[i]) != ascii_lower((unsigned char)b.p[i]))
            return false;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static struct http1_span span_trim(struct http1_span s)
{
    while (s.len && is_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/* The fields the proxy acts on, dispatched on length first so an ordinary
 * field (User-Agent, Accept ...) costs one switch and at most two compares. */
static enum http1_hdr_id header_id(struct http1_span n)
{
    switch (n.len) {
    case 2:
        if (SPAN_EQ_LIT(n, "te"))
            return HTTP1_H_TE;
        break;
    case 3:
        if (SPAN_EQ_LIT(n, "via"))
            return HTTP1_H_VIA;
        break;
    case 4:
        if (SPAN_EQ_LIT(n, "host"))
            return HTTP1_H_HOST;
        break;
    case 6:
        if (SPAN_EQ_LIT(n, "expect"))
            return HTTP1_H_EXPECT;
        break;
    case 7:
        if (SPAN_EQ_LIT(n, "trailer"))
            return HTTP1_H_TRAILER;
        if (SPAN_EQ_LIT(n, "upgrade"))
            return HTTP1_H_UPGRADE;
        break;
    case 10:
        if (SPAN_EQ_LIT(n, "connection"))
            return HTTP1_H_CONNECTION;
        if (SPAN_EQ_LIT(n, "keep-alive"))
            return HTTP1_H_KEEP_ALIVE;
        break;
    case 12:
        if (SPAN_EQ_LIT(n, "x-request-id"))
            return HTTP1_H_X_REQUEST_ID;
        break;
    case 14:
        if (SPAN_EQ_LIT(n, "content-length"))
            return HTTP1_H_CONTENT_LENGTH;
        break;
    case 15:
        if (SPAN_EQ_LIT(n, "x-forwarded-for"))
            return HTTP1_H_X_FORWARDED_FOR;
        if (SPAN_EQ_LIT(n, "ratelimit-limit") || SPAN_EQ_LIT(n, "ratelimit-reset"))
            return HTTP1_H_RATELIMIT;
        break;
    case 16:
        if (SPAN_EQ_LIT(n, "proxy-connection"))
            return HTTP1_H_PROXY_CONNECTION;
        if (SPAN_EQ_LIT(n, "x-forwarded-host"))
            return HTTP1_H_X_FORWARDED_HOST;
        break;
    case 17:
        if (SPAN_EQ_LIT(n, "transfer-encoding"))
            return HTTP1_H_TRANSFER_ENCODING;
        if (SPAN_EQ_LIT(n, "x-forwarded-proto"))
            return HTTP1_H_X_FORWARDED_PROTO;
        break;
    case 19:
        if (SPAN_EQ_LIT(n, "ratelimit-remaining"))
            return HTTP1_H_RATELIMIT;
        break;
    default:
        break;
    }
    return HTTP1_H_OTHER;
}

/* Hop-by-hop or framing: never copied from one side to the other as received. */
static bool id_is_hop(unsigned id)
{
    switch (id) {
    case HTTP1_H_CONTENT_LENGTH:
    case HTTP1_H_TRANSFER_ENCODING:
    case HTTP1_H_CONNECTION:
    case HTTP1_H_KEEP_ALIVE:
    case HTTP1_H_PROXY_CONNECTION:
    case HTTP1_H_TE:
    case HTTP1_H_TRAILER:
    case HTTP1_H_UPGRADE:
        return true;
    default:
        return false;
    }
}

/* ---------------------------------------------------------------- head end */

/* One byte of the "\r\n\r\n" matcher; returns the new state (4: matched). A
 * mismatching '\r' may start a new terminator. */
static unsigned crlf_step(unsigned state, char ch)
{
    if (ch == "\r\n\r\n"[state])
        return state + 1;
    return ch == '\r' ? 1 : 0;
}

size_t http1_head_scan(unsigned *state, const char *p, size_t n, bool *found)
{
    *found = false;
    /* the first 3 bytes may complete a terminator begun in an earlier call */
    size_t i = 0;
    for (; i < n && i < 3; i++) {
        *state = crlf_step(*state, p[i]);
        if (*state == 4) {
            *found = true;
            return i + 1;
        }
    }
    /* from here a terminator lies wholly in p: test each line feed's 3 predecessors */
    const char *q = p + i, *end = p + n;
    while (q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        if (q[-1] == '\r' && q[-2] == '\n' && q[-3] == '\r') {
            *state = 4;
            *found = true;
            return (size_t)(q - p) + 1;
        }
        q++;
    }
    if (n >= 3) {
        /* the matcher's state depends only on the last 3 bytes (no match in them) */
        *state = 0;
        for (size_t k = n - 3; k < n; k++)
            *state = crlf_step(*state, p[k]);
    }
    return n;
}

/* ---------------------------------------------------------------- analysis */

void http1_msg_analyze(struct http1_msg *m)
{
    m->conn = 0;
    m->n_host = m->n_te = 0;
    m->host = m->upgrade = m->request_id = -1;
    m->te_chunked = false;
    m->expect_continue = false;
    for (size_t i = 0; i < m->n_hdrs; i++) {
        struct http1_header *h = &m->hdrs[i];
        h->value = span_trim(h->value);
        h->id = (unsigned char)header_id(h->name);
        h->hop = false;
        switch (h->id) {
        case HTTP1_H_HOST:
            if (m->n_host++ == 0)
                m->host = (int)i;
            break;
        case HTTP1_H_TRANSFER_ENCODING:
            m->n_te++;
            m->te_chunked = m->n_te == 1 && SPAN_EQ_LIT(h->value, "chunked");
            break;
        case HTTP1_H_UPGRADE:
            if (m->upgrade < 0)
                m->upgrade = (int)i;
            break;
        case HTTP1_H_X_REQUEST_ID:
            if (m->request_id < 0 && h->value.len > 0)
                m->request_id = (int)i;
            break;
        case HTTP1_H_EXPECT:
            if (SPAN_EQ_LIT(h->value, "100-continue"))
                m->expect_continue = true;
            break;
        default:
            break;
        }
    }
    /* Connection tokens: close/keep-alive/upgrade, and every named field is hop-by-hop */
    for (size_t i = 0; i < m->n_hdrs; i++) {
        if (m->hdrs[i].id != HTTP1_H_CONNECTION)
            continue;
        struct http1_span v = m->hdrs[i].value;
        size_t start = 0;
        for (size_t k = 0; k <= v.len; k++) {
            if (k < v.len && v.p[k] != ',')
                continue;
            struct http1_span tok = span_trim((struct http1_span){v.p + start, k - start});
            start = k + 1;
            if (tok.len == 0)
                continue;
            if (SPAN_EQ_LIT(tok, "close"))
                m->conn |= HTTP1_CONN_CLOSE;
            else if (SPAN_EQ_LIT(tok, "keep-alive"))
                m->conn |= HTTP1_CONN_KEEPALIVE;
            else if (SPAN_EQ_LIT(tok, "upgrade"))
                m->conn |= HTTP1_CONN_UPGRADE;
            for (size_t j = 0; j < m->n_hdrs; j++)
                if (span_eq_span(m->hdrs[j].name, tok))
                    m->hdrs[j].hop = true;
        }
    }
}

int http1_request_check(const struct http1_msg *m, const char **why)
{
    if (!m->has_version) {
        *why = "missing HTTP version";
        return 400;
    }
    if (m->major != 1 || (m->minor != 0 && m->minor != 1)) {
        *why = "unsupported HTTP version";
        return 505;
    }
    if (m->method == HTTP_CONNECT) {
        *why = "CONNECT not supported";
        return 501;
    }
    if (m->minor == 1 && m->n_host != 1) {
        *why = m->n_host == 0 ? "missing Host" : "duplicate Host";
        return 400;
    }
    if (m->minor == 0 && m->n_host > 1) {
        *why = "duplicate Host";
        return 400;
    }
    if (m->n_te > 0) {
        if (m->minor == 0) {
            *why = "Transfer-Encoding on HTTP/1.0";
            return 400;
        }
        if (!m->te_chunked || m->n_te != 1) {
            *why = "Transfer-Encoding is not exactly chunked";
            return 400;
        }
    }
    return 0;
}

bool http1_request_keepalive(const struct http1_msg *m)
{
    if (m->conn & HTTP1_CONN_CLOSE)
        return false;
    if (m->major == 1 && m->minor == 1)
        return true;
    return (m->conn & HTTP1_CONN_KEEPALIVE) != 0;
}

/* ---------------------------------------------------------------- builders */

struct sbuf {
    char *p;    /* output */
    size_t cap; /* capacity */
    size_t len; /* bytes wanted */
};

static void put(struct sbuf *b, const char *s, size_t n)
{
    /* n == 0: s may be NULL (an empty span, e.g. no reason phrase); memcpy must not see it */
    if (n > 0 && b->len + n <= b->cap)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(struct sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A literal: its length is a compile-time constant. */
#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_span(struct sbuf *b, struct http1_span s)
{
    put(b, s.p, s.len);
}

/* Decimal without snprintf: it runs for every status line. */
static void put_u64(struct sbuf *b, uint64_t v)
{
    char tmp[20]; /* UINT64_MAX has 20 digits */
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, tmp + i, sizeof tmp - i);
}

/* v in decimal at q; returns the end. Two digits per step: it runs for every
 * response of a rate-limited listener. */
static char *fmt_u64(char *q, uint64_t v)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";
    static const uint64_t pow10[20] = {1ull,
                                       10ull,
                                       100ull,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};
    unsigned n = 1;
    if (v >= 10) {
        /* digits from the bit length: log10(2) ~ 1233/4096, corrected by one compare */
        unsigned t = ((unsigned)(64 - __builtin_clzll(v)) * 1233) >> 12;
        n = t + 1 - (v < pow10[t]);
    }
    char *end = q + n;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--end = pairs[d + 1];
        *--end = pairs[d];
    }
    if (v >= 10) {
        *--end = pairs[v * 2 + 1];
        *--end = pairs[v * 2];
    } else {
        *--end = (char)('0' + v);
    }
    return q + n;
}

#define LIT(q, lit) (memcpy((q), (lit), sizeof(lit) - 1), (q) + sizeof(lit) - 1)

/* RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (omitted when reset < 0:
 * a bucket that never refills), contract 7; Retry-After first when retry_after is
 * given (>= 0). Built in one piece, one put. */
static void put_ratelimit(struct sbuf *b, const struct ratelimit_result *rl, int64_t retry_after)
{
    char tmp[192]; /* four fields of at most 20 digits each, + the fixed-size copy's slack */
    char *q = tmp;
    if (retry_after >= 0) {
        q = LIT(q, "Retry-After: ");
        q = fmt_u64(q, (uint64_t)retry_after);
        q = LIT(q, "\r\n");
    }
    /* RateLimit-Limit is the same on most responses (one default limit): this thread
     * keeps the last line it wrote and copies it (a fixed-size copy, no call) */
    static _Thread_local struct {
        uint64_t v; /* the limit, UINT64_MAX: none yet */
        size_t n;   /* bytes of s in use */
        char s[48]; /* "RateLimit-Limit: N\r\n" (at most 17 + 20 + 2) */
    } last = {UINT64_MAX, 0, {0}};
    if (rl->limit != last.v) {
        char *e = LIT(last.s, "RateLimit-Limit: ");
        e = fmt_u64(e, rl->limit);
        e = LIT(e, "\r\n");
        last.n = (size_t)(e - last.s);
        last.v = rl->limit;
    }
    memcpy(q, last.s, sizeof last.s);
    q += last.n;
    q = LIT(q, "RateLimit-Remaining: ");
    q = fmt_u64(q, rl->remaining);
    q = LIT(q, "\r\n");
    if (rl->reset >= 0) {
        q = LIT(q, "RateLimit-Reset: ");
        q = fmt_u64(q, (uint64_t)rl->reset);
        q = LIT(q, "\r\n");
    }
    put(b, tmp, (size_t)(q - tmp));
}

static void put_header(struct sbuf *b, const struct http1_header *h)
{
    /* The received line is often already "name: value\r\n" byte for byte (one
     * SP, nothing trimmed): copy it in one piece. The bytes after the value were
     * parsed as part of the head, so they are in the buffer. */
    const char *n = h->name.p, *v = h->value.p;
    if (v == n + h->name.len + 2 && n[h->name.len] == ':' && n[h->name.len + 1] == ' ' &&
        v[h->value.len] == '\r' && v[h->value.len + 1] == '\n') {
        put(b, n, h->name.len + 2 + h->value.len + 2);
        return;
    }
    put_span(b, h->name);
    put(b, ": ", 2);
    put_span(b, h->value);
    put(b, "\r\n", 2);
}

/* "<values of every field with this id joined by ", ">" (empty values skipped);
 * returns whether anything was written. */
static bool put_joined(struct sbuf *b, const struct http1_msg *m, unsigned id)
{
    bool any = false;
    for (size_t i = 0; i < m->n_hdrs; i++) {
        if (m->hdrs[i].id != id || m->hdrs[i].value.len == 0)
            continue;
        if (any)
            put(b, ", ", 2);
        put_span(b, m->hdrs[i].value);
        any = true;
    }
    return any;
}

size_t http1_build_request_head(const struct http1_msg *m, const struct http1_fwd *f, char *out,
                                size_t cap)
{
    struct sbuf b = {out, cap, 0};
    puts_(&b, llhttp_method_name((llhttp_method_t)m->method));
    put(&b, " ", 1);
    put_span(&b, m->url);
    PUT_LIT(&b, " HTTP/1.1\r\n");
    for (size_t i = 0; i < m->n_hdrs; i++) {
        const struct http1_header *h = &m->hdrs[i];
        if (h->hop || id_is_hop(h->id))
            continue;
        switch (h->id) {
        case HTTP1_H_EXPECT:
        case HTTP1_H_X_FORWARDED_FOR:
        case HTTP1_H_X_FORWARDED_PROTO:
        case HTTP1_H_X_FORWARDED_HOST:
        case HTTP1_H_X_REQUEST_ID:
        case HTTP1_H_VIA:
            continue;
        default:
            put_header(&b, h);
        }
    }
    if (f->has_cl) {
        PUT_LIT(&b, "Content-Length: ");
        put_u64(&b, f->cl);
        put(&b, "\r\n", 2);
    } else if (f->chunked) {
        PUT_LIT(&b, "Transfer-Encoding: chunked\r\n");
    }
    PUT_LIT(&b, "X-Forwarded-For: ");
    if (put_joined(&b, m, HTTP1_H_X_FORWARDED_FOR))
        put(&b, ", ", 2);
    puts_(&b, f->client_ip);
    PUT_LIT(&b, "\r\nX-Forwarded-Proto: http\r\n");
    if (m->host >= 0) {
        PUT_LIT(&b, "X-Forwarded-Host: ");
        put_span(&b, m->hdrs[m->host].value);
        put(&b, "\r\n", 2);
    }
    PUT_LIT(&b, "X-Request-ID: ");
    puts_(&b, f->request_id);
    PUT_LIT(&b, "\r\nVia: ");
    if (put_joined(&b, m, HTTP1_H_VIA))
        put(&b, ", ", 2);
    PUT_LIT(&b, "1.1 twinproxy\r\n");
    if (f->upgrade && m->upgrade >= 0) {
        PUT_LIT(&b, "Connection: upgrade\r\nUpgrade: ");
        put_span(&b, m->hdrs[m->upgrade].value);
        put(&b, "\r\n", 2);
    }
    put(&b, "\r\n", 2);
    return b.len;
}

size_t http1_build_response_head(const struct http1_msg *m, const struct http1_resp_opts *o,
                                 char *out, size_t cap)
{
    struct sbuf b = {out, cap, 0};
    PUT_LIT(&b, "HTTP/1.1 ");
    put_u64(&b, m->status);
    put(&b, " ", 1);
    put_span(&b, m->reason);
    put(&b, "\r\n", 2);
    for (size_t i = 0; i < m->n_hdrs; i++) {
        const struct http1_header *h = &m->hdrs[i];
        if (h->id == HTTP1_H_CONTENT_LENGTH && !h->hop &&
            (o->framing == HTTP1_FRAME_LENGTH || o->framing == HTTP1_FRAME_NONE)) {
            put_header(&b, h); /* kept where the upstream put it */
            continue;
        }
        if (h->hop || id_is_hop(h->id) || (h->id == HTTP1_H_RATELIMIT && o->rl))
            continue;
        put_header(&b, h);
    }
    if (o->rl)
        put_ratelimit(&b, o->rl, -1);
    if (o->framing == HTTP1_FRAME_CHUNKED)
        PUT_LIT(&b, "Transfer-Encoding: chunked\r\n");
    if (o->upgrade) {
        PUT_LIT(&b, "Connection: upgrade\r\n");
        if (m->upgrade >= 0) {
            PUT_LIT(&b, "Upgrade: ");
            put_span(&b, m->hdrs[m->upgrade].value);
            put(&b, "\r\n", 2);
        }
    } else if (o->close) {
        PUT_LIT(&b, "Connection: close\r\n");
    } else if (o->keepalive) {
        PUT_LIT(&b, "Connection: keep-alive\r\n");
    }
    put(&b, "\r\n", 2);
    return b.len;
}

const char *http1_reason(int code)
{
    switch (code) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

bool http1_error_closes(int code)
{
    /* 429 is answered before routing, on a request read in full: like 502-504 it
     * keeps a keep-alive connection (contract 7) */
    return !(code == 429 || code == 502 || code == 503 || code == 504);
}

size_t http1_build_error(int code, const char *request_id, bool close, bool head,
                         const struct ratelimit_result *rl, char *out, size_t cap)
{
    char body[128];
    const char *reason = http1_reason(code);
    int blen = snprintf(body, sizeof body, "{\"code\":%d,\"message\":\"%s\"}", code, reason);
    struct sbuf b = {out, cap, 0};
    PUT_LIT(&b, "HTTP/1.1 ");
    put_u64(&b, (uint64_t)code);
    put(&b, " ", 1);
    puts_(&b, reason);
    PUT_LIT(&b, "\r\nContent-Type: application/json\r\nContent-Length: ");
    put_u64(&b, (uint64_t)blen);
    PUT_LIT(&b, "\r\nX-Request-ID: ");
    puts_(&b, request_id);
    put(&b, "\r\n", 2);
    if (rl)
        put_ratelimit(&b, rl, code == 429 ? rl->retry_after : -1);
    if (close)
        PUT_LIT(&b, "Connection: close\r\n");
    put(&b, "\r\n", 2);
    if (!head)
        put(&b, body, (size_t)blen);
    return b.len;
}

/* ---------------------------------------------------------------- parser */

static struct http1_parser *P(llhttp_t *llp)
{
    return (struct http1_parser *)llp->data;
}

static int fail(struct http1_parser *p, int status, const char *why)
{
    p->error_status = status;
    p->error_reason = why;
    return -1;
}

static bool out_room(struct http1_parser *p, size_t n)
{
    return p->out && buffer_space(p->out) >= n;
}

static int cb_message_begin(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    struct http1_msg *m = &p->msg;
    m->n_hdrs = 0;
    m->url = (struct http1_span){NULL, 0};
    m->reason = (struct http1_span){NULL, 0};
    m->has_version = false;
    m->status = 0;
    p->phase = HTTP1_PH_HEAD;
    p->in_head = true;
    p->interim = false;
    p->last_cb = 0;
    p->body_bytes = 0;
    p->last_chunk = false;
    p->tkeep = false;
    p->tname_len = 0;
    return 0;
}

static void span_extend(struct http1_span *s, const char *at, size_t len)
{
    if (!s->p)
        *s = (struct http1_span){at, len};
    else
        s->len = (size_t)(at + len - s->p); /* the head never moves while parsed */
}

static int cb_url(llhttp_t *llp, const char *at, size_t len)
{
    span_extend(&P(llp)->msg.url, at, len);
    return 0;
}

static int cb_status(llhttp_t *llp, const char *at, size_t len)
{
    span_extend(&P(llp)->msg.reason, at, len);
    return 0;
}

static int cb_version(llhttp_t *llp, const char *at, size_t len)
{
    (void)at;
    (void)len;
    P(llp)->msg.has_version = true;
    return 0;
}

static int cb_header_field(llhttp_t *llp, const char *at, size_t len)
{
    struct http1_parser *p = P(llp);
    if (p->phase == HTTP1_PH_HEAD) {
        struct http1_msg *m = &p->msg;
        if (p->last_cb != 1) {
            if (m->n_hdrs == m->cap_hdrs) {
                size_t ncap = m->cap_hdrs ? m->cap_hdrs * 2 : HDRS_INITIAL;
                struct http1_header *n = realloc(m->hdrs, ncap * sizeof *n);
                if (!n)
                    return fail(p, 431, "out of memory for headers");
                m->hdrs = n;
                m->cap_hdrs = ncap;
            }
            struct http1_header *h = &m->hdrs[m->n_hdrs++];
            h->name = (struct http1_span){at, len};
            h->value = (struct http1_span){NULL, 0};
        } else {
            span_extend(&m->hdrs[m->n_hdrs - 1].name, at, len);
        }
        p->last_cb = 1;
        return 0;
    }
    /* trailers: the name is collected (it may straddle feeds) */
    if (p->last_cb != 1)
        p->tname_len = 0;
    if (p->tname_len + len > sizeof p->tname)
        return fail(p, 400, "trailer field name too long");
    memcpy(p->tname + p->tname_len, at, len);
    p->tname_len += len;
    p->last_cb = 1;
    return 0;
}

static int cb_header_value(llhttp_t *llp, const char *at, size_t len)
{
    struct http1_parser *p = P(llp);
    if (p->phase == HTTP1_PH_HEAD) {
        struct http1_header *h = &p->msg.hdrs[p->msg.n_hdrs - 1];
        if (p->last_cb != 2)
            h->value = (struct http1_span){at, len};
        else
            span_extend(&h->value, at, len);
        p->last_cb = 2;
        return 0;
    }
    p->last_cb = 2;
    if (p->tkeep)
        buffer_put(p->out, at, len); /* fits: the caller's slack covers the fed bytes */
    return 0;
}

static int cb_header_field_complete(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    if (p->phase != HTTP1_PH_TRAILERS)
        return 0;
    struct http1_span name = {p->tname, p->tname_len};
    enum http1_hdr_id id = header_id(name);
    p->tkeep = p->out_mode == HTTP1_OUT_CHUNKED && !id_is_hop(id) && id != HTTP1_H_HOST;
    if (p->tkeep) {
        if (!out_room(p, p->tname_len + 2))
            return fail(p, 502, "no room for trailer");
        buffer_put(p->out, p->tname, p->tname_len);
        buffer_put(p->out, ": ", 2);
    }
    return 0;
}

static int cb_header_value_complete(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    if (p->phase == HTTP1_PH_TRAILERS && p->tkeep) {
        buffer_put(p->out, "\r\n", 2);
        p->tkeep = false;
    }
    return 0;
}

static int cb_headers_complete(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    struct http1_msg *m = &p->msg;
    m->method = llp->method;
    m->major = llp->http_major;
    m->minor = llp->http_minor;
    m->status = llp->status_code;
    p->in_head = false;
    p->phase = HTTP1_PH_BODY;
    p->last_cb = 0;
    /* llhttp takes any 3 digits: "099" would go out as "99" (as the twin: 502) */
    if (llp->type == HTTP_RESPONSE && m->status < 100)
        return fail(p, 502, "bad status");
    p->interim =
        llp->type == HTTP_RESPONSE && m->status >= 100 && m->status < 200 && m->status != 101;
    http1_msg_analyze(m);
    int r = p->on_head ? p->on_head(p) : 0;
    return r;
}

static int cb_body(llhttp_t *llp, const char *at, size_t len)
{
    struct http1_parser *p = P(llp);
    p->body_bytes += len;
    if (p->body_limit && p->body_bytes > p->body_limit)
        return fail(p, 413, "body too large");
    switch (p->out_mode) {
    case HTTP1_OUT_NONE:
        break;
    case HTTP1_OUT_IDENTITY:
        buffer_put(p->out, at, len);
        break;
    case HTTP1_OUT_CHUNKED: {
        /* "%zx\r\n" by hand: snprintf per body piece showed in profiles */
        char hdr[sizeof(size_t) * 2 + 2];
        size_t i = sizeof hdr - 2;
        hdr[sizeof hdr - 2] = '\r';
        hdr[sizeof hdr - 1] = '\n';
        size_t v = len;
        do {
            hdr[--i] = "0123456789abcdef"[v & 0xf];
            v >>= 4;
        } while (v);
        buffer_put(p->out, hdr + i, sizeof hdr - i);
        buffer_put(p->out, at, len);
        buffer_put(p->out, "\r\n", 2);
        break;
    }
    }
    return 0;
}

static int cb_chunk_header(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    if (llp->content_length == 0) {
        p->last_chunk = true;
        p->phase = HTTP1_PH_TRAILERS;
        p->last_cb = 0;
        if (p->out_mode == HTTP1_OUT_CHUNKED)
            buffer_put(p->out, "0\r\n", 3);
    }
    return 0;
}

/* llhttp 9.4.3 accepts an empty chunk-extension name (";=x", ";;a") and an empty
 * value ("a="); both are malformed (RFC 9112 7.1.1: token / quoted-string). */
static int cb_ext_piece(llhttp_t *llp, const char *at, size_t len)
{
    (void)at;
    P(llp)->ext_len += len;
    return 0;
}

static int cb_ext_complete(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    bool empty = p->ext_len == 0;
    p->ext_len = 0;
    if (empty)
        return fail(p, llp->type == HTTP_RESPONSE ? 502 : 400, "empty chunk extension");
    return 0;
}

static int cb_message_complete(llhttp_t *llp)
{
    struct http1_parser *p = P(llp);
    if (p->interim) {
        /* a 1xx: the real response follows in the same stream */
        p->phase = HTTP1_PH_HEAD;
        return 0;
    }
    if (p->out_mode == HTTP1_OUT_CHUNKED && p->phase != HTTP1_PH_HEAD) {
        if (!p->last_chunk)
            buffer_put(p->out, "0\r\n", 3);
        buffer_put(p->out, "\r\n", 2);
    }
    p->phase = HTTP1_PH_DONE;
    return HPE_PAUSED;
}

static llhttp_settings_t settings_s;

/* Once per process (pthread_once: worker threads make parsers at the same time). */
static void settings_init(void)
{
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = cb_message_begin;
    s.on_url = cb_url;
    s.on_status = cb_status;
    s.on_version = cb_version;
    s.on_header_field = cb_header_field;
    s.on_header_value = cb_header_value;
    s.on_header_field_complete = cb_header_field_complete;
    s.on_header_value_complete = cb_header_value_complete;
    s.on_headers_complete = cb_headers_complete;
    s.on_body = cb_body;
    s.on_chunk_header = cb_chunk_header;
    s.on_chunk_extension_name = cb_ext_piece;
    s.on_chunk_extension_value = cb_ext_piece;
    s.on_chunk_extension_name_complete = cb_ext_complete;
    s.on_chunk_extension_value_complete = cb_ext_complete;
    s.on_message_complete = cb_message_complete;
    settings_s = s;
}

static const llhttp_settings_t *settings(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_init);
    return &settings_s;
}

int http1_parser_init(struct http1_parser *p, llhttp_type_t type)
{
    memset(p, 0, sizeof *p);
    const llhttp_settings_t *s = settings();
    llhttp_init(&p->llp, type, s);
    p->llp.data = p;
    p->msg.hdrs = malloc(HDRS_INITIAL * sizeof *p->msg.hdrs);
    if (!p->msg.hdrs)
        return -1;
    p->msg.cap_hdrs = HDRS_INITIAL;
    p->phase = HTTP1_PH_HEAD;
    return 0;
}

void http1_parser_deinit(struct http1_parser *p)
{
    free(p->msg.hdrs);
    p->msg.hdrs = NULL;
    p->msg.cap_hdrs = p->msg.n_hdrs = 0;
}

void http1_parser_next(struct http1_parser *p)
{
    /* a fresh llhttp state rather than llhttp_resume(): whether the connection stays
     * open is the proxy's decision, made from the head; a Connection field in trailers
     * must not make llhttp refuse the next pipelined request */
    llhttp_reset(&p->llp);
    p->phase = HTTP1_PH_HEAD;
    p->in_head = false;
    p->error_status = 0;
    p->error_reason = NULL;
}

void http1_parser_reset(struct http1_parser *p)
{
    llhttp_reset(&p->llp);
    p->phase = HTTP1_PH_HEAD;
    p->in_head = false;
    p->interim = false;
    p->error_status = 0;
    p->error_reason = NULL;
    p->msg.n_hdrs = 0;
}

static int map_errno(struct http1_parser *p, llhttp_errno_t e)
{
    if (p->error_status)
        return p->error_status;
    p->error_reason = llhttp_get_error_reason(&p->llp);
    if (!p->error_reason)
        p->error_reason = llhttp_errno_name(e);
    return p->llp.type == HTTP_RESPONSE ? 502 : 400;
}

enum http1_result http1_execute(struct http1_parser *p, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t e = llhttp_execute(&p->llp, data, len);
    if (e == HPE_OK) {
        *used = len;
        return HTTP1_OK;
    }
    const char *pos = llhttp_get_error_pos(&p->llp);
    *used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
    if (e == HPE_PAUSED && p->phase == HTTP1_PH_DONE)
        return HTTP1_DONE;
    if (e == HPE_PAUSED_UPGRADE && p->phase == HTTP1_PH_DONE)
        return HTTP1_DONE;
    p->error_status = map_errno(p, e);
    return HTTP1_ERROR;
}

enum http1_result http1_finish(struct http1_parser *p)
{
    if (p->phase == HTTP1_PH_DONE)
        return HTTP1_DONE;
    llhttp_errno_t e = llhttp_finish(&p->llp);
    if (p->phase == HTTP1_PH_DONE)
        return HTTP1_DONE;
    if (e == HPE_OK && !p->in_head && p->phase == HTTP1_PH_HEAD)
        return HTTP1_OK; /* nothing had started */
    p->error_status = p->llp.type == HTTP_RESPONSE ? 502 : 400;
    p->error_reason = "connection closed before the message was complete";
    return HTTP1_ERROR;
}
