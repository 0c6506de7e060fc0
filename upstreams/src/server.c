/* server: listeners and client connections of the scripted upstream, on one libev loop.
 *
 * A connection answers one request at a time: on_message_complete pauses llhttp, the
 * response is generated into the connection's output buffer (bodies larger than it are
 * generated piece by piece as the socket drains), and only then is parsing resumed. So
 * pipelined requests are answered in order, and bytes waiting behind a slow response stay
 * in the fixed input buffer (reading stops when it is full). */
#define _GNU_SOURCE
#include "server.h"

#include "body.h"
#include "route.h"

#include <errno.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define IN_CAP (16 * 1024)       /* buffered request bytes per connection */
#define OUT_CAP (64 * 1024)      /* queued response bytes per connection */
#define HEAD_RESERVE (20 * 1024) /* free output needed to start a response (largest head) */
#define PARSE_RESERVE 1024       /* free output needed to parse (100-continue, 400) */
#define HEADERS_EXTRA_MAX 16384  /* /headers: decoded header lines */
#define URL_MAX 8192             /* longer request targets get 414 */
#define HDR_BYTES_MAX 16384      /* header (+trailer) names and values; more gets 431 */
#define HDR_COUNT_MAX 128        /* header (+trailer) fields; more gets 431 */
#define LINGER_SECONDS 2.0       /* after shutdown(SHUT_WR), wait this long for the peer's EOF */
#define LISTEN_BACKLOG 65535     /* capped by net.core.somaxconn */
#define ACCEPT_BATCH 256         /* accepts per readiness event */

enum conn_state {
    CONN_READING = 0, /* parsing; every earlier response is fully generated */
    CONN_DELAYING,    /* request complete, /delay timer running */
    CONN_SENDING,     /* generating a body as output space frees up */
    CONN_DRIPPING,    /* /drip: the timer appends one byte per tick */
    CONN_TUNNEL,      /* after 101: echo every byte */
    CONN_CLOSING,     /* flush what is queued, then close */
    CONN_LINGER,      /* write side shut; discard input until EOF or timeout */
    CONN_STALLED,     /* /stall or --fault stall: never answer; discard input until EOF */
};

#define CONN_F_REQ_DONE 0x001   /* a complete request waits for its response */
#define CONN_F_DELAYED 0x002    /* that request's /delay has elapsed */
#define CONN_F_PEER_EOF 0x004   /* the client shut its write side */
#define CONN_F_CLOSED 0x008     /* fd closed, on the dead list */
#define CONN_F_KEEPALIVE 0x010  /* keep the connection after this response */
#define CONN_F_HEAD 0x020       /* HEAD request: head only */
#define CONN_F_RST 0x040        /* close with SO_LINGER {1,0}: TCP RST */
#define CONN_F_HARD_CLOSE 0x080 /* close without the lingering half-close */
#define CONN_F_ABORT 0x100      /* /drop or /reset seen after the head: stop parsing */
#define CONN_F_UPGRADE 0x200    /* request carried Upgrade + Connection: upgrade */
#define CONN_F_IN_MSG 0x400     /* llhttp is inside a request (some of it was parsed) */
#define CONN_F_SERVED 0x800     /* at least one response completed: idle means keep-alive idle */
#define CONN_F_EXTRA 0x1000     /* fault extra: unsolicited bytes follow this response */
#define CONN_F_FCLOSE 0x2000    /* fault close: this response closes the connection */

/* fault extra: what follows the response (not a response: a proxy that reads it as the next
 * one would fail to parse it) */
static const char fault_extra_bytes[] = "EXTRA BYTES AFTER THE RESPONSE\r\n";
#define EXTRA_RESERVE (sizeof(fault_extra_bytes) - 1)
#define TRICKLE_BYTES 8     /* fault trickle/MS: body length */
#define RESET_BODY_BYTES 16 /* fault reset-body: announced body length (half is sent) */

enum body_kind {
    BODY_NONE = 0, /* nothing left to generate */
    BODY_PATTERN,  /* `left` pattern bytes from `offset` */
    BODY_CHUNKED,  /* chunked framing of pattern bytes */
    BODY_MEM,      /* a heap buffer (echo JSON) */
};

struct hdr {
    uint32_t name_off; /* into conn.hdr */
    uint32_t name_len; /* bytes */
    uint32_t val_off;  /* into conn.hdr */
    uint32_t val_len;  /* bytes */
};

/* One client connection. Owned by the server's list while open, by its dead list after
 * conn_close(); freed by the reaper, never on its own callback stack. */
struct conn {
    ev_io rio;             /* readable */
    ev_io wio;             /* writable, active only while output is blocked */
    ev_timer timer;        /* /delay, /drip, lingering close */
    int fd;                /* socket */
    unsigned flags;        /* CONN_F_* */
    enum conn_state state; /* see enum */
    struct listener *l;    /* accepting listener, for name, health and counters */
    struct conn *prev;     /* server.conns list */
    struct conn *next;     /* server.conns list, or server.dead list */
    llhttp_t parser;       /* request parser, paused between requests */

    /* the request being parsed or answered */
    struct route route; /* what to answer, decided at the end of the head */
    int reject;         /* status to answer a parse error with (0: 400) */
    int hdr_phase;      /* 0: between fields, 1: in a name, 2: in a value */
    size_t url_len;     /* bytes in url */
    size_t hdr_len;     /* bytes in hdr */
    size_t n_hdrs;      /* entries in hdrs */
    uint64_t body_len;  /* request body bytes seen */
    uLong crc;          /* crc32 of the request body (/echo only) */
    uint8_t method;     /* llhttp_method_t */
    uint8_t http_major; /* request version */
    uint8_t http_minor; /* request version */

    /* the response being generated */
    enum body_kind body;     /* generator in use */
    uint64_t left;           /* BODY_PATTERN / drip: bytes still to send */
    uint64_t offset;         /* BODY_PATTERN / drip: body offset of the next byte */
    struct body_chunked chk; /* BODY_CHUNKED state */
    char *mem;               /* BODY_MEM buffer, owned */
    size_t mem_len;          /* its length */
    size_t mem_pos;          /* bytes of it already queued */

    size_t in_rpos;  /* next unparsed byte */
    size_t in_wpos;  /* end of buffered input */
    size_t out_rpos; /* next unsent byte */
    size_t out_wpos; /* end of queued output */

    struct hdr hdrs[HDR_COUNT_MAX]; /* request headers then trailers, in order */
    char url[URL_MAX];              /* request target as received */
    char scratch[URL_MAX];          /* decoded /delay then= target */
    char hdr[HDR_BYTES_MAX];        /* header names and values */
    char in[IN_CAP];                /* input buffer */
    char out[OUT_CAP];              /* output buffer */
};

enum advance {
    ADV_PROGRESS = 0, /* did something; call again */
    ADV_FLUSH,        /* needs queued output written first */
    ADV_IDLE,         /* waits for input or a timer */
};

static llhttp_settings_t parser_settings;

static void conn_process(struct conn *c);

/* ---- output buffer ---- */

static size_t out_free(const struct conn *c)
{
    return OUT_CAP - c->out_wpos;
}

static void out_compact(struct conn *c)
{
    if (c->out_rpos == 0)
        return;
    memmove(c->out, c->out + c->out_rpos, c->out_wpos - c->out_rpos);
    c->out_wpos -= c->out_rpos;
    c->out_rpos = 0;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
    if (n == 0)
        return; /* p may be NULL (no extra fields): memcpy must not see it */
    memcpy(c->out + c->out_wpos, p, n);
    c->out_wpos += n;
}

#define out_lit(c, s) out_put((c), (s), sizeof(s) - 1)

static void out_u64(struct conn *c, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    out_put(c, tmp + i, sizeof(tmp) - i);
}

/* Status line, X-Upstream, `extra` (complete header lines), Content-Length when clen >= 0,
 * Connection when the connection closes or an HTTP/1.0 client keeps it, blank line. */
static void out_head(struct conn *c, unsigned code, const char *extra, size_t extra_len,
                     int64_t clen)
{
    const char *reason = route_reason(code);
    out_lit(c, "HTTP/1.1 ");
    out_u64(c, code);
    out_lit(c, " ");
    out_put(c, reason, strlen(reason));
    out_lit(c, "\r\n");
    out_put(c, c->l->xup, c->l->xup_len);
    if (extra_len > 0)
        out_put(c, extra, extra_len);
    if (clen >= 0) {
        out_lit(c, "Content-Length: ");
        out_u64(c, (uint64_t)clen);
        out_lit(c, "\r\n");
    }
    if (!(c->flags & CONN_F_KEEPALIVE))
        out_lit(c, "Connection: close\r\n");
    else if (c->http_major == 1 && c->http_minor == 0)
        out_lit(c, "Connection: keep-alive\r\n");
    out_lit(c, "\r\n");
}

/* A complete small response: head plus `body` unless HEAD. */
static void out_simple(struct conn *c, unsigned code, const char *extra, size_t extra_len,
                       const char *body, size_t body_len)
{
    out_head(c, code, extra, extra_len, (int64_t)body_len);
    if (!(c->flags & CONN_F_HEAD))
        out_put(c, body, body_len);
}

/* Writes a JSON string literal of `s` to `dst` (room for 6 * n + 2 bytes); bytes >= 0x80 are
 * taken as Latin-1 (as HTTP header octets are), so the output is always valid JSON. */
static size_t json_str(char *dst, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    dst[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            dst[o++] = '\\';
            dst[o++] = 'u';
            dst[o++] = '0';
            dst[o++] = '0';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        } else {
            dst[o++] = (char)ch;
        }
    }
    dst[o++] = '"';
    return o;
}

/* ---- connection lifecycle ---- */

static void conn_free(struct conn *c)
{
    if (c == NULL)
        return;
    free(c->mem);
    free(c);
}

/* Stops watchers, unlinks, closes the fd and queues the struct for the reaper. Safe to call
 * from the connection's own callbacks; the caller must not use `c` for I/O afterwards. */
static void conn_close(struct conn *c)
{
    struct server *srv = c->l->srv;

    if (c->flags & CONN_F_CLOSED)
        return;
    c->flags |= CONN_F_CLOSED;
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->timer);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->flags & CONN_F_RST) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == -1)
            perror("upstream: setsockopt(SO_LINGER)");
    }
    close(c->fd);
    c->fd = -1;
    c->l->connections_active--;
    c->prev = NULL;
    c->next = srv->dead;
    srv->dead = c;
}

static void conn_update_read(struct conn *c)
{
    struct ev_loop *loop = c->l->srv->loop;
    int want;

    if (c->flags & (CONN_F_CLOSED | CONN_F_PEER_EOF))
        want = 0;
    else if (c->state == CONN_LINGER || c->state == CONN_STALLED)
        want = 1;
    else if (c->state == CONN_CLOSING)
        want = 0;
    else
        want = c->in_rpos > 0 || c->in_wpos < IN_CAP;
    if (want && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
}

/* Writes queued output until done (0, write watcher stopped), blocked (0, write watcher
 * started) or failed (-1). */
static int conn_flush(struct conn *c)
{
    struct ev_loop *loop = c->l->srv->loop;

    while (c->out_wpos > c->out_rpos) {
        ssize_t n = write(c->fd, c->out + c->out_rpos, c->out_wpos - c->out_rpos);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&c->wio))
                    ev_io_start(loop, &c->wio);
                return 0;
            }
            return -1;
        }
        c->out_rpos += (size_t)n;
    }
    c->out_rpos = c->out_wpos = 0;
    if (ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
    return 0;
}

/* The response is fully generated: keep the connection for the next request or close. */
static void conn_response_done(struct conn *c)
{
    if ((c->flags & CONN_F_EXTRA) && !(c->flags & CONN_F_CLOSED)) {
        if (out_free(c) < EXTRA_RESERVE)
            out_compact(c);
        if (out_free(c) >= EXTRA_RESERVE) /* conn_fill leaves the room: always true */
            out_put(c, fault_extra_bytes, EXTRA_RESERVE);
        c->flags &= ~CONN_F_EXTRA;
    }
    c->body = BODY_NONE;
    free(c->mem);
    c->mem = NULL;
    c->flags |= CONN_F_SERVED;
    c->state = (c->flags & CONN_F_KEEPALIVE) ? CONN_READING : CONN_CLOSING;
}

/* ---- llhttp callbacks ---- */

static int req_on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    c->url_len = 0;
    c->hdr_len = 0;
    c->n_hdrs = 0;
    c->hdr_phase = 0;
    c->body_len = 0;
    c->crc = 0;
    c->flags &= ~(CONN_F_HEAD | CONN_F_UPGRADE | CONN_F_DELAYED | CONN_F_EXTRA | CONN_F_FCLOSE);
    c->flags |= CONN_F_IN_MSG;
    return 0;
}

static int req_on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (len > URL_MAX - c->url_len) {
        c->reject = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int hdr_append(struct conn *c, const char *at, size_t len)
{
    if (len > HDR_BYTES_MAX - c->hdr_len) {
        c->reject = 431;
        return -1;
    }
    memcpy(c->hdr + c->hdr_len, at, len);
    c->hdr_len += len;
    return 0;
}

static int req_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->hdr_phase != 1) {
        if (c->n_hdrs == HDR_COUNT_MAX) {
            c->reject = 431;
            return -1;
        }
        struct hdr *h = &c->hdrs[c->n_hdrs++];
        h->name_off = (uint32_t)c->hdr_len;
        h->name_len = 0;
        h->val_off = (uint32_t)c->hdr_len;
        h->val_len = 0;
        c->hdr_phase = 1;
    }
    if (hdr_append(c, at, len) == -1)
        return -1;
    c->hdrs[c->n_hdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int req_on_header_field_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct hdr *h = &c->hdrs[c->n_hdrs - 1];
    h->val_off = (uint32_t)c->hdr_len;
    h->val_len = 0;
    c->hdr_phase = 2;
    return 0;
}

static int req_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (hdr_append(c, at, len) == -1)
        return -1;
    c->hdrs[c->n_hdrs - 1].val_len += (uint32_t)len;
    return 0;
}

static int req_on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->hdr_phase = 0;
    return 0;
}

/* The value of the first header named `name` (case-insensitive), or NULL. */
static const char *conn_header(const struct conn *c, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < c->n_hdrs; i++) {
        const struct hdr *h = &c->hdrs[i];
        if (h->name_len == n && strncasecmp(c->hdr + h->name_off, name, n) == 0) {
            *len = h->val_len;
            return c->hdr + h->val_off;
        }
    }
    return NULL;
}

/* The listener's fault replaces (or delays, or alters) what the request would have got. */
static void apply_fault(struct conn *c, const struct listener *l, struct route *r)
{
    switch (l->fault) {
    case FAULT_NONE: break;
    case FAULT_RESET:
    case FAULT_DROP:
        r->kind = l->fault == FAULT_RESET ? ROUTE_RESET : ROUTE_DROP;
        r->delay_ms = 0;
        break;
    case FAULT_STALL: r->kind = ROUTE_STALL; break;
    case FAULT_DELAY: r->delay_ms += l->fault_ms; break;
    case FAULT_RESET_HEAD:
        r->kind = ROUTE_RESET_HEAD;
        r->delay_ms = 0;
        break;
    case FAULT_RESET_BODY:
        r->kind = ROUTE_RESET_BODY;
        r->delay_ms = 0;
        break;
    case FAULT_TRICKLE:
        r->kind = ROUTE_DRIP;
        r->n = TRICKLE_BYTES;
        r->interval_ms = l->fault_ms > 0 ? l->fault_ms : 1;
        r->delay_ms = 0;
        break;
    case FAULT_MALFORMED:
        r->kind = ROUTE_INVALID;
        r->invalid = INVALID_GARBAGE;
        r->delay_ms = 0;
        break;
    case FAULT_EXTRA: c->flags |= CONN_F_EXTRA; break;
    case FAULT_CLOSE: c->flags |= CONN_F_FCLOSE; break;
    case FAULT_EARLY:
        r->kind = ROUTE_EARLY;
        r->n = l->fault_ms;
        r->delay_ms = 0;
        break;
    }
}

static int req_on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    const char *v;
    size_t vlen;

    c->l->requests_total++;
    c->method = p->method;
    c->http_major = p->http_major;
    c->http_minor = p->http_minor;
    if (p->method == HTTP_HEAD)
        c->flags |= CONN_F_HEAD;
    if (p->upgrade)
        c->flags |= CONN_F_UPGRADE;
    route_parse(c->url, c->url_len, c->scratch, &c->route);
    if (c->l->fault != FAULT_NONE && route_faultable(&c->route))
        apply_fault(c, c->l, &c->route);
    if ((c->route.kind == ROUTE_DROP || c->route.kind == ROUTE_RESET) && c->route.delay_ms == 0) {
        c->flags |= CONN_F_ABORT;
        return HPE_PAUSED;
    }
    if (c->route.kind == ROUTE_EARLY) {
        /* the final response before the body is read, as a server refusing an upload does;
         * then a lingering close drains whatever the client still sends */
        char body[32];
        int blen = snprintf(body, sizeof(body), "{\"status\":%u}", (unsigned)c->route.n);
        c->flags &= ~CONN_F_KEEPALIVE;
        out_simple(c, (unsigned)c->route.n, NULL, 0, body, (size_t)blen);
        c->flags |= CONN_F_ABORT;
        return HPE_PAUSED;
    }
    /* curl and friends wait a second for this before sending a body */
    v = conn_header(c, "expect", &vlen);
    if (v != NULL && vlen == 12 && strncasecmp(v, "100-continue", 12) == 0 && p->http_major == 1 &&
        p->http_minor == 1 && ((p->flags & F_CHUNKED) || p->content_length > 0))
        out_lit(c, "HTTP/1.1 100 Continue\r\n\r\n");
    return 0;
}

static int req_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->body_len += len;
    if (c->route.kind == ROUTE_ECHO)
        c->crc = crc32_z(c->crc, (const Bytef *)at, len);
    return 0;
}

static int req_on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->flags |= CONN_F_REQ_DONE;
    c->flags &= ~CONN_F_IN_MSG;
    if (llhttp_should_keep_alive(p))
        c->flags |= CONN_F_KEEPALIVE;
    else
        c->flags &= ~CONN_F_KEEPALIVE;
    return HPE_PAUSED;
}

/* ---- responses ---- */

static void respond_echo(struct conn *c)
{
    const char *method = llhttp_method_name((llhttp_method_t)c->method);
    size_t cap = 256 + 6 * (strlen(method) + c->url_len + c->hdr_len) + 8 * c->n_hdrs;
    char *b = malloc(cap);
    size_t o = 0;

    if (b == NULL) {
        out_simple(c, 500, NULL, 0, "out of memory\n", 14);
        return;
    }
    o += (size_t)snprintf(b + o, cap - o, "{\"method\":");
    o += json_str(b + o, method, strlen(method));
    o += (size_t)snprintf(b + o, cap - o, ",\"path\":");
    o += json_str(b + o, c->url, c->url_len);
    o += (size_t)snprintf(b + o, cap - o, ",\"version\":\"%u.%u\",\"headers\":[", c->http_major,
                          c->http_minor);
    for (size_t i = 0; i < c->n_hdrs; i++) {
        const struct hdr *h = &c->hdrs[i];
        if (i > 0)
            b[o++] = ',';
        b[o++] = '[';
        o += json_str(b + o, c->hdr + h->name_off, h->name_len);
        b[o++] = ',';
        o += json_str(b + o, c->hdr + h->val_off, h->val_len);
        b[o++] = ']';
    }
    o += (size_t)snprintf(b + o, cap - o, "],\"body_length\":%llu,\"body_crc32\":%lu}",
                          (unsigned long long)c->body_len, (unsigned long)c->crc);
    static const char ct[] = "Content-Type: application/json\r\n";
    out_head(c, 200, ct, sizeof(ct) - 1, (int64_t)o);
    if (c->flags & CONN_F_HEAD) {
        free(b);
        return;
    }
    c->mem = b;
    c->mem_len = o;
    c->mem_pos = 0;
    c->body = BODY_MEM;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* /headers?NAME=VALUE&...: decodes each pair into header lines; any unusable pair (not a
 * token name, CR/LF/NUL in a value, bad escape, too long) gives a 400 instead. */
static void respond_headers(struct conn *c)
{
    const char *q = c->route.query;
    size_t qlen = c->route.query_len;
    char extra[HEADERS_EXTRA_MAX];
    size_t elen = 0;
    size_t i = 0;

    while (i < qlen) {
        size_t end = i;
        while (end < qlen && q[end] != '&')
            end++;
        if (end == i) {
            i = end + 1;
            continue;
        }
        const char *eq = memchr(q + i, '=', end - i);
        size_t nraw = eq != NULL ? (size_t)(eq - (q + i)) : end - i;
        size_t vraw = eq != NULL ? (size_t)(q + end - eq - 1) : 0;
        if (nraw + vraw + 4 > sizeof(extra) - elen)
            goto bad;
        size_t nlen = route_url_decode(q + i, nraw, extra + elen);
        if (nlen == (size_t)-1 || nlen == 0)
            goto bad;
        for (size_t k = 0; k < nlen; k++)
            if (!is_tchar((unsigned char)extra[elen + k]))
                goto bad;
        elen += nlen;
        memcpy(extra + elen, ": ", 2);
        elen += 2;
        size_t vlen = route_url_decode(eq != NULL ? eq + 1 : "", vraw, extra + elen);
        if (vlen == (size_t)-1)
            goto bad;
        for (size_t k = 0; k < vlen; k++) {
            char ch = extra[elen + k];
            if (ch == '\r' || ch == '\n' || ch == '\0')
                goto bad;
        }
        elen += vlen;
        memcpy(extra + elen, "\r\n", 2);
        elen += 2;
        i = end + 1;
    }
    out_simple(c, 200, extra, elen, "ok\n", 3);
    return;
bad:
    out_simple(c, 400, NULL, 0, "bad header in query\n", 20);
}

static void respond_upgrade(struct conn *c)
{
    const char *v;
    size_t vlen = 0;

    v = conn_header(c, "upgrade", &vlen);
    if (!(c->flags & CONN_F_UPGRADE) || v == NULL) {
        static const char up[] = "Upgrade: echo\r\n";
        out_simple(c, 426, up, sizeof(up) - 1, "upgrade required\n", 17);
        return;
    }
    out_lit(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ");
    out_put(c, v, vlen);
    out_lit(c, "\r\n");
    out_put(c, c->l->xup, c->l->xup_len);
    out_lit(c, "\r\n");
    c->state = CONN_TUNNEL;
}

static void respond_invalid(struct conn *c)
{
    const char *xup = c->l->xup;
    int xl = (int)c->l->xup_len;
    char *dst = c->out + c->out_wpos;
    size_t cap = out_free(c);
    int n = 0;

    switch (c->route.invalid) {
    case INVALID_GARBAGE:
        n = snprintf(dst, cap, "GARBAGE: this is not an HTTP response\r\n\r\n");
        break;
    case INVALID_CL_TE:
        n = snprintf(dst, cap,
                     "HTTP/1.1 200 OK\r\n%.*sContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                     "\r\n5\r\nhello\r\n0\r\n\r\n",
                     xl, xup);
        break;
    case INVALID_DUP_CL:
        n = snprintf(dst, cap,
                     "HTTP/1.1 200 OK\r\n%.*sContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                     xl, xup);
        break;
    case INVALID_BAD_CL:
        n = snprintf(dst, cap, "HTTP/1.1 200 OK\r\n%.*sContent-Length: 1x\r\n\r\nx", xl, xup);
        break;
    case INVALID_BAD_CHUNK:
        n = snprintf(dst, cap,
                     "HTTP/1.1 200 OK\r\n%.*sTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"
                     "0\r\n\r\n",
                     xl, xup);
        break;
    case INVALID_BAD_STATUS:
        n = snprintf(dst, cap, "HTTP/1.1 99x OK\r\n%.*sContent-Length: 3\r\n\r\nok\n", xl, xup);
        break;
    }
    c->out_wpos += (size_t)n;
    c->flags &= ~CONN_F_KEEPALIVE;
}

static void respond_status(struct conn *c)
{
    unsigned code = (unsigned)c->route.n;
    char body[32];
    int blen = snprintf(body, sizeof(body), "{\"status\":%u}", code);

    if (code < 200) {
        /* an interim response alone would leave the exchange open forever: follow it with
         * a final 200 carrying the same body */
        out_lit(c, "HTTP/1.1 ");
        out_u64(c, code);
        out_lit(c, " ");
        out_put(c, route_reason(code), strlen(route_reason(code)));
        out_lit(c, "\r\n");
        out_put(c, c->l->xup, c->l->xup_len);
        out_lit(c, "\r\n");
        out_simple(c, 200, NULL, 0, body, (size_t)blen);
    } else if (code == 204 || code == 304) {
        out_head(c, code, NULL, 0, -1);
    } else {
        out_simple(c, code, NULL, 0, body, (size_t)blen);
    }
}

static void respond_stats(struct conn *c)
{
    struct listener *l = c->l;
    char body[512];
    size_t o = 0;
    static const char ct[] = "Content-Type: application/json\r\n";

    o += (size_t)snprintf(body + o, sizeof(body) - o, "{\"name\":");
    o += json_str(body + o, l->name, strlen(l->name));
    o += (size_t)snprintf(body + o, sizeof(body) - o,
                          ",\"connections_total\":%llu,\"connections_active\":%llu,"
                          "\"requests_total\":%llu}",
                          (unsigned long long)l->connections_total,
                          (unsigned long long)l->connections_active,
                          (unsigned long long)l->requests_total);
    out_simple(c, 200, ct, sizeof(ct) - 1, body, o);
}

/* Starts the response to the complete request. Returns ADV_PROGRESS once started,
 * ADV_FLUSH when output space must free up first, ADV_IDLE when a /delay timer was armed. */
static enum advance conn_respond(struct conn *c)
{
    struct ev_loop *loop = c->l->srv->loop;
    struct route *r = &c->route;
    static const char json[] = "Content-Type: application/json\r\n";

    if (r->delay_ms > 0 && !(c->flags & CONN_F_DELAYED)) {
        ev_timer_set(&c->timer, (double)r->delay_ms / 1000.0, 0.);
        ev_timer_start(loop, &c->timer);
        c->state = CONN_DELAYING;
        return ADV_IDLE;
    }
    if (out_free(c) < HEAD_RESERVE)
        out_compact(c);
    if (out_free(c) < HEAD_RESERVE)
        return ADV_FLUSH;
    c->flags &= ~(CONN_F_REQ_DONE | CONN_F_DELAYED);
    c->body = BODY_NONE;
    c->state = CONN_READING;
    if (c->flags & CONN_F_FCLOSE)
        c->flags &= ~CONN_F_KEEPALIVE;

    switch (r->kind) {
    case ROUTE_OK: out_simple(c, 200, NULL, 0, "ok\n", 3); break;
    case ROUTE_RESET_HEAD: {
        /* a response cut inside its head: the status line and part of a field */
        out_lit(c, "HTTP/1.1 200 OK\r\n");
        out_put(c, c->l->xup, c->l->xup_len);
        out_lit(c, "Content-Le");
        c->flags |= CONN_F_RST;
        c->state = CONN_CLOSING;
        return ADV_PROGRESS;
    }
    case ROUTE_RESET_BODY:
        out_head(c, 200, NULL, 0, RESET_BODY_BYTES);
        body_pattern_fill(c->out + c->out_wpos, 0, RESET_BODY_BYTES / 2);
        c->out_wpos += RESET_BODY_BYTES / 2;
        c->flags |= CONN_F_RST;
        c->state = CONN_CLOSING;
        return ADV_PROGRESS;
    case ROUTE_EARLY: /* answered at the head; only reached if parsing went on */
    case ROUTE_DROP:  /* only after a /delay: otherwise aborted right after the head */
    case ROUTE_RESET:
        c->flags |= r->kind == ROUTE_RESET ? CONN_F_RST : CONN_F_HARD_CLOSE;
        c->state = CONN_CLOSING;
        return ADV_PROGRESS;
    case ROUTE_BAD_PARAM: {
        char body[96];
        int n = snprintf(body, sizeof(body), "bad parameter: %s\n", r->bad);
        out_simple(c, 400, NULL, 0, body, (size_t)n);
        break;
    }
    case ROUTE_BYTES:
    case ROUTE_TRUNCATE:
        out_head(c, 200, NULL, 0, (int64_t)r->n);
        if (r->kind == ROUTE_TRUNCATE)
            c->flags &= ~CONN_F_KEEPALIVE;
        c->left = (c->flags & CONN_F_HEAD) ? 0 : r->kind == ROUTE_BYTES ? r->n : r->n / 2;
        c->offset = 0;
        c->body = BODY_PATTERN;
        break;
    case ROUTE_CHUNKED:
        if (c->http_major == 1 && c->http_minor == 0) {
            /* HTTP/1.0 has no chunked coding: same bytes, delimited by Content-Length */
            out_head(c, 200, NULL, 0, (int64_t)r->n);
            c->left = (c->flags & CONN_F_HEAD) ? 0 : r->n;
            c->offset = 0;
            c->body = BODY_PATTERN;
            break;
        }
        if (r->trailer) {
            static const char h[] = "Transfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n";
            out_head(c, 200, h, sizeof(h) - 1, -1);
        } else {
            static const char h[] = "Transfer-Encoding: chunked\r\n";
            out_head(c, 200, h, sizeof(h) - 1, -1);
        }
        if (!(c->flags & CONN_F_HEAD)) {
            body_chunked_init(&c->chk, r->n, r->chunk, r->trailer);
            c->body = BODY_CHUNKED;
        }
        break;
    case ROUTE_STATUS: respond_status(c); break;
    case ROUTE_ECHO: respond_echo(c); break;
    case ROUTE_HEALTH:
        if (c->l->health_failing)
            out_simple(c, 503, json, sizeof(json) - 1, "{\"status\":\"failing\"}", 20);
        else
            out_simple(c, 200, json, sizeof(json) - 1, "{\"status\":\"ok\"}", 15);
        break;
    case ROUTE_HEALTH_FAIL:
    case ROUTE_HEALTH_OK:
        c->l->health_failing = r->kind == ROUTE_HEALTH_FAIL;
        out_simple(c, 200, NULL, 0, "ok\n", 3);
        break;
    case ROUTE_INVALID: respond_invalid(c); break;
    case ROUTE_DRIP:
        out_head(c, 200, NULL, 0, (int64_t)r->n);
        if ((c->flags & CONN_F_HEAD) || r->n == 0)
            break;
        c->left = r->n;
        c->offset = 0;
        c->state = CONN_DRIPPING;
        ev_timer_set(&c->timer, (double)r->interval_ms / 1000.0, (double)r->interval_ms / 1000.0);
        ev_timer_start(loop, &c->timer);
        return ADV_PROGRESS;
    case ROUTE_CLOSE:
        c->flags &= ~CONN_F_KEEPALIVE;
        out_simple(c, 200, NULL, 0, "ok\n", 3);
        break;
    case ROUTE_HEADERS: respond_headers(c); break;
    case ROUTE_UPGRADE:
        respond_upgrade(c);
        if (c->state == CONN_TUNNEL)
            return ADV_PROGRESS;
        break;
    case ROUTE_STATS: respond_stats(c); break;
    case ROUTE_STATS_RESET:
        c->l->connections_total = 0;
        c->l->requests_total = 0;
        out_simple(c, 200, NULL, 0, "ok\n", 3);
        break;
    case ROUTE_FAULT:
        c->l->fault = r->fault;
        c->l->fault_ms = r->n;
        out_simple(c, 200, NULL, 0, "ok\n", 3);
        break;
    case ROUTE_STALL:
        /* never answered; the connection closes when the client's side does */
        c->state = CONN_STALLED;
        c->in_rpos = c->in_wpos = 0;
        return ADV_IDLE;
    }
    if (c->body != BODY_NONE)
        c->state = CONN_SENDING;
    else
        conn_response_done(c);
    return ADV_PROGRESS;
}

/* Generates more of the current body into free output space. */
static enum advance conn_fill(struct conn *c)
{
    if (out_free(c) < 16 * 1024)
        out_compact(c);
    size_t room = out_free(c);
    if (c->flags & CONN_F_EXTRA) /* keep room for the bytes that follow the response */
        room = room > EXTRA_RESERVE ? room - EXTRA_RESERVE : 0;
    if (room < 64)
        return ADV_FLUSH;
    switch (c->body) {
    case BODY_NONE: break;
    case BODY_PATTERN: {
        size_t n = c->left < room ? (size_t)c->left : room;
        body_pattern_fill(c->out + c->out_wpos, c->offset, n);
        c->out_wpos += n;
        c->offset += n;
        c->left -= n;
        if (c->left == 0)
            conn_response_done(c);
        break;
    }
    case BODY_CHUNKED:
        c->out_wpos += body_chunked_fill(&c->chk, c->out + c->out_wpos, room);
        if (c->chk.done)
            conn_response_done(c);
        break;
    case BODY_MEM: {
        size_t n = c->mem_len - c->mem_pos < room ? c->mem_len - c->mem_pos : room;
        out_put(c, c->mem + c->mem_pos, n);
        c->mem_pos += n;
        if (c->mem_pos == c->mem_len)
            conn_response_done(c);
        break;
    }
    }
    return ADV_PROGRESS;
}

/* Parses buffered input up to the next complete request (or head, for /drop and /reset). */
static enum advance conn_parse(struct conn *c)
{
    if (out_free(c) < PARSE_RESERVE)
        out_compact(c);
    if (out_free(c) < PARSE_RESERVE)
        return ADV_FLUSH;

    const char *start = c->in + c->in_rpos;
    llhttp_errno_t err = llhttp_execute(&c->parser, start, c->in_wpos - c->in_rpos);
    switch (err) {
    case HPE_OK: c->in_rpos = c->in_wpos = 0; return ADV_PROGRESS;
    case HPE_PAUSED:
        c->in_rpos = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
        if (c->in_rpos == c->in_wpos)
            c->in_rpos = c->in_wpos = 0;
        llhttp_resume(&c->parser);
        if (c->flags & CONN_F_ABORT) {
            c->state = CONN_CLOSING;
            if (c->route.kind != ROUTE_EARLY)
                c->flags |= CONN_F_HARD_CLOSE;
            if (c->route.kind == ROUTE_RESET)
                c->flags |= CONN_F_RST;
        }
        return ADV_PROGRESS;
    case HPE_PAUSED_UPGRADE:
        /* the request announced an upgrade its response did not accept: keep parsing HTTP */
        c->in_rpos = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
        llhttp_resume_after_upgrade(&c->parser);
        return ADV_PROGRESS;
    default: {
        unsigned code = c->reject != 0 ? (unsigned)c->reject : 400;
        const char *why = llhttp_get_error_reason(&c->parser);
        char body[256];
        int n = snprintf(body, sizeof(body), "%s\n", why != NULL ? why : "bad request");
        c->flags &= ~(CONN_F_KEEPALIVE | CONN_F_HEAD);
        out_simple(c, code, NULL, 0, body, (size_t)n);
        c->state = CONN_CLOSING;
        c->in_rpos = c->in_wpos = 0;
        return ADV_PROGRESS;
    }
    }
}

/* One step of the connection's state machine, without writing to the socket. */
static enum advance conn_advance(struct conn *c)
{
    switch (c->state) {
    case CONN_READING:
        if (c->flags & CONN_F_REQ_DONE)
            return conn_respond(c);
        if (c->in_wpos > c->in_rpos)
            return conn_parse(c);
        if (c->flags & CONN_F_PEER_EOF) {
            c->state = CONN_CLOSING;
            c->flags |= CONN_F_HARD_CLOSE;
            return ADV_PROGRESS;
        }
        return ADV_IDLE;
    case CONN_DELAYING:
    case CONN_DRIPPING:
    case CONN_STALLED:
    case CONN_LINGER: return ADV_IDLE;
    case CONN_SENDING: return conn_fill(c);
    case CONN_TUNNEL: {
        size_t pending = c->in_wpos - c->in_rpos;
        if (pending > 0) {
            if (out_free(c) < OUT_CAP / 2)
                out_compact(c);
            size_t n = pending < out_free(c) ? pending : out_free(c);
            if (n == 0)
                return ADV_FLUSH;
            out_put(c, c->in + c->in_rpos, n);
            c->in_rpos += n;
            if (c->in_rpos == c->in_wpos)
                c->in_rpos = c->in_wpos = 0;
            return ADV_PROGRESS;
        }
        if (c->flags & CONN_F_PEER_EOF) {
            c->state = CONN_CLOSING;
            c->flags |= CONN_F_HARD_CLOSE;
            return ADV_PROGRESS;
        }
        return ADV_IDLE;
    }
    case CONN_CLOSING:
        if (c->out_wpos > c->out_rpos)
            return ADV_FLUSH;
        if (c->flags & (CONN_F_HARD_CLOSE | CONN_F_RST | CONN_F_PEER_EOF)) {
            conn_close(c);
            return ADV_IDLE;
        }
        /* half-close and drain, so a client still sending does not get an RST that
         * destroys the response it has not read yet */
        if (shutdown(c->fd, SHUT_WR) == -1) {
            conn_close(c);
            return ADV_IDLE;
        }
        c->state = CONN_LINGER;
        c->in_rpos = c->in_wpos = 0;
        ev_timer_stop(c->l->srv->loop, &c->timer);
        ev_timer_set(&c->timer, LINGER_SECONDS, 0.);
        ev_timer_start(c->l->srv->loop, &c->timer);
        return ADV_IDLE;
    }
    return ADV_IDLE;
}

/* --idle-close-ms: a keep-alive connection with nothing in flight (a response was
 * completed and written, no request byte since) gets the idle timer; anything else stops it. */
static void conn_idle_update(struct conn *c)
{
    struct ev_loop *loop = c->l->srv->loop;
    int idle = c->state == CONN_READING && (c->flags & CONN_F_SERVED) &&
               !(c->flags & (CONN_F_REQ_DONE | CONN_F_IN_MSG | CONN_F_PEER_EOF)) &&
               c->in_wpos == c->in_rpos && c->out_wpos == c->out_rpos;
    if (idle && !ev_is_active(&c->timer)) {
        ev_timer_set(&c->timer, (double)c->l->idle_close_ms / 1000.0, 0.);
        ev_timer_start(loop, &c->timer);
    } else if (!idle && c->state == CONN_READING && ev_is_active(&c->timer)) {
        ev_timer_stop(loop, &c->timer);
    }
}

static void conn_process(struct conn *c)
{
    for (;;) {
        enum advance r = conn_advance(c);
        if (c->flags & CONN_F_CLOSED)
            return;
        if (r == ADV_PROGRESS)
            continue;
        if (conn_flush(c) == -1) {
            conn_close(c);
            return;
        }
        if (r == ADV_FLUSH && !ev_is_active(&c->wio))
            continue; /* everything was written: there is room now */
        break;
    }
    if (c->l->idle_close_ms > 0)
        conn_idle_update(c);
    conn_update_read(c);
}

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, rio);
    ssize_t n;
    (void)revents;

    if (c->state == CONN_LINGER || c->state == CONN_STALLED) {
        char sink[16384];
        for (int i = 0; i < 16; i++) { /* bounded: a firehose must not starve the loop */
            n = read(c->fd, sink, sizeof(sink));
            if (n > 0)
                continue;
            if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;
            conn_close(c); /* EOF or error: the peer is done */
            return;
        }
        return;
    }
    if (c->in_rpos > 0 && c->in_wpos == IN_CAP) {
        memmove(c->in, c->in + c->in_rpos, c->in_wpos - c->in_rpos);
        c->in_wpos -= c->in_rpos;
        c->in_rpos = 0;
    }
    if (c->in_wpos == IN_CAP) {
        conn_update_read(c);
        return;
    }
    n = read(c->fd, c->in + c->in_wpos, IN_CAP - c->in_wpos);
    if (n == 0) {
        c->flags |= CONN_F_PEER_EOF;
    } else if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c); /* ECONNRESET and friends: nobody to answer */
        return;
    } else {
        c->in_wpos += (size_t)n;
        /* a request arrives: an --idle-close-ms timer restarts once it is answered */
        if (c->state == CONN_READING && ev_is_active(&c->timer))
            ev_timer_stop(loop, &c->timer);
    }
    conn_process(c);
}

static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, wio);
    (void)loop;
    (void)revents;
    conn_process(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = container_of(w, struct conn, timer);
    (void)revents;

    switch (c->state) {
    case CONN_DELAYING:
        c->flags |= CONN_F_DELAYED;
        c->state = CONN_READING;
        break;
    case CONN_DRIPPING:
        if (out_free(c) == 0)
            out_compact(c);
        if (out_free(c) == 0)
            break; /* the client is not reading: skip this tick */
        body_pattern_fill(c->out + c->out_wpos, c->offset, 1);
        c->out_wpos++;
        c->offset++;
        if (--c->left == 0) {
            ev_timer_stop(loop, &c->timer);
            conn_response_done(c);
        }
        break;
    case CONN_LINGER: conn_close(c); return;
    case CONN_READING: {
        /* --idle-close-ms elapsed. Bytes already here are a request that raced the timer:
         * the read watcher takes them. Otherwise close with nothing unread (a FIN, no RST). */
        char b;
        if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
            break;
        c->flags |= CONN_F_HARD_CLOSE;
        conn_close(c);
        return;
    }
    default: ev_timer_stop(loop, &c->timer); break;
    }
    conn_process(c);
}

static void conn_start(struct listener *l, int fd)
{
    struct server *srv = l->srv;
    struct conn *c;
    int one = 1;

    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1 && !srv->quiet)
        perror("upstream: setsockopt(TCP_NODELAY)");
    c = malloc(sizeof(*c));
    if (c == NULL) {
        fprintf(stderr, "upstream: out of memory for a connection\n");
        close(fd);
        return;
    }
    /* only the header part: the buffers need no zeroing */
    memset(c, 0, offsetof(struct conn, hdrs));
    c->fd = fd;
    c->l = l;
    c->state = CONN_READING;
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
    ev_init(&c->timer, conn_on_timer);
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    l->connections_total++;
    l->connections_active++;
    ev_io_start(srv->loop, &c->rio);
}

/* ---- listeners ---- */

static void listener_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct listener *l = container_of(w, struct listener, io);
    (void)revents;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning */
            perror("upstream: accept");
            ev_io_stop(loop, &l->io);
            ev_timer_set(&l->pause, 0.1, 0.);
            ev_timer_start(loop, &l->pause);
            return;
        }
        conn_start(l, fd);
    }
}

static void listener_on_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct listener *l = container_of(w, struct listener, pause);
    (void)revents;
    ev_io_start(loop, &l->io);
}

int server_add_listener(struct server *srv, const char *addr, const char *name,
                        const struct listener_opts *opts)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res = NULL;
    struct listener *arr, *l;
    int fd = -1, one = 1, rc;

    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || strlen(addr) >= sizeof(host)) {
        fprintf(stderr, "upstream: --listen %s: want HOST:PORT\n", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    port = colon + 1;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "upstream: --listen %s: %s\n", addr, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        goto error;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto error;
    if (bind(fd, res->ai_addr, res->ai_addrlen) == -1)
        goto error;
    if (listen(fd, LISTEN_BACKLOG) == -1)
        goto error;
    arr = realloc(srv->listeners, (srv->n_listeners + 1) * sizeof(*arr));
    if (arr == NULL) {
        errno = ENOMEM;
        goto error;
    }
    srv->listeners = arr;
    l = &arr[srv->n_listeners++];
    memset(l, 0, sizeof(*l));
    l->fd = fd;
    l->srv = srv;
    l->health_failing = opts->health_failing;
    l->fault = opts->fault;
    l->fault_ms = opts->fault_ms;
    l->idle_close_ms = opts->idle_close_ms;
    snprintf(l->name, sizeof(l->name), "%s", name != NULL ? name : addr);
    l->xup_len = (size_t)snprintf(l->xup, sizeof(l->xup), "X-Upstream: %s\r\n", l->name);
    freeaddrinfo(res);
    return 0;

error:
    fprintf(stderr, "upstream: --listen %s: %s\n", addr, strerror(errno));
    if (fd != -1)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

static void server_on_reap(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct server *srv = container_of(w, struct server, reaper);
    (void)loop;
    (void)revents;
    while (srv->dead != NULL) {
        struct conn *c = srv->dead;
        srv->dead = c->next;
        conn_free(c);
    }
}

static void server_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

void server_init(struct server *srv, struct ev_loop *loop, int quiet)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->quiet = quiet;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = req_on_message_begin;
    parser_settings.on_url = req_on_url;
    parser_settings.on_header_field = req_on_header_field;
    parser_settings.on_header_field_complete = req_on_header_field_complete;
    parser_settings.on_header_value = req_on_header_value;
    parser_settings.on_header_value_complete = req_on_header_value_complete;
    parser_settings.on_headers_complete = req_on_headers_complete;
    parser_settings.on_body = req_on_body;
    parser_settings.on_message_complete = req_on_message_complete;
    ev_prepare_init(&srv->reaper, server_on_reap);
    ev_signal_init(&srv->sigterm, server_on_signal, SIGTERM);
    ev_signal_init(&srv->sigint, server_on_signal, SIGINT);
}

void server_start(struct server *srv)
{
    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct listener *l = &srv->listeners[i];
        ev_io_init(&l->io, listener_on_accept, l->fd, EV_READ);
        ev_init(&l->pause, listener_on_pause);
        ev_io_start(srv->loop, &l->io);
    }
    ev_prepare_start(srv->loop, &srv->reaper);
    ev_signal_start(srv->loop, &srv->sigterm);
    ev_signal_start(srv->loop, &srv->sigint);
}

void server_deinit(struct server *srv)
{
    while (srv->conns != NULL)
        conn_close(srv->conns);
    server_on_reap(srv->loop, &srv->reaper, 0);
    ev_prepare_stop(srv->loop, &srv->reaper);
    ev_signal_stop(srv->loop, &srv->sigterm);
    ev_signal_stop(srv->loop, &srv->sigint);
    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct listener *l = &srv->listeners[i];
        ev_io_stop(srv->loop, &l->io);
        ev_timer_stop(srv->loop, &l->pause);
        if (l->fd != -1)
            close(l->fd);
    }
    free(srv->listeners);
    srv->listeners = NULL;
    srv->n_listeners = 0;
}
