/* exchange: the state of one request/response exchange and every decision about
 * it, without I/O (HAProxy's h1s beside the connection's h1c).
 *
 * Twin: py-proxy/pyproxy/exchange.py (`Exchange`, same flags, same functions as
 * methods).
 *
 * struct client (the connection: sockets, buffers, timers) embeds one struct
 * exchange by value and drives it; the decisions below are pure functions of the
 * exchange, the parsed head and the config, unit-tested in tests/test_exchange.c
 * and run by fuzz/fuzz_http1.c. exchange_init() starts the next request from a
 * clean state: no flag is cleared by hand anywhere else.
 *
 * Ownership: an exchange owns its path/request-id copies when they do not fit
 * the inline buffers and its tried bitmap when the set has more than 128
 * upstreams; exchange_init() and exchange_deinit() free them.
 */
#ifndef TWINPROXY_EXCHANGE_H
#define TWINPROXY_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "balancer.h"
#include "config.h"
#include "http1.h"
#include "ratelimit.h"
#include "retry.h"

/* Per-request flags (values as the former CLIENT_F_* of the same names). */
#define EXCHANGE_F_KEEPALIVE 0x0001    /* the client may keep the connection after this request */
#define EXCHANGE_F_HTTP10 0x0002       /* the request is HTTP/1.0 */
#define EXCHANGE_F_REQ_DONE 0x0004     /* the whole request was parsed (body included) */
#define EXCHANGE_F_RESP_STARTED 0x0008 /* a final response head is in `out` */
#define EXCHANGE_F_RESP_SENT 0x0010    /* response bytes reached the client's socket */
#define EXCHANGE_F_RESP_DONE 0x0020    /* the whole response is in `out` */
#define EXCHANGE_F_HEAD_METHOD 0x0040  /* HEAD: the response has no body */
#define EXCHANGE_F_UPGRADE 0x0080      /* the request asks for an Upgrade */
#define EXCHANGE_F_EXPECT 0x0100       /* Expect: 100-continue still to be answered */
#define EXCHANGE_F_CLOSE_AFTER 0x0200  /* the client connection closes after this exchange */
#define EXCHANGE_F_UP_EOF 0x0800       /* the upstream closed its side (read EOF or reset) */
#define EXCHANGE_F_UP_DIRTY 0x2000     /* the upstream conn may not be pooled */
#define EXCHANGE_F_REPLAYABLE 0x4000   /* uout still holds the whole request from byte 0 */
#define EXCHANGE_F_LOGGED 0x10000      /* the access line of this request is written */
#define EXCHANGE_F_IN_REQUEST 0x20000  /* a request started (bytes seen): its clocks run */
#define EXCHANGE_F_UP_WFAIL 0x40000    /* writing upstream failed: stop sending, keep reading */
#define EXCHANGE_F_IDEMPOTENT 0x80000  /* idempotent method or Idempotency-Key: retry-safe */
#define EXCHANGE_F_UP_READ 0x100000    /* this attempt: bytes arrived from the upstream */
#define EXCHANGE_F_HEAD_OK 0x200000    /* this attempt: a response head parsed (health OK) */
#define EXCHANGE_F_LIMITED 0x400000    /* the rate limiter said no: answered 429, never routed */
#define EXCHANGE_F_RL                                                                              \
    0x800000 /* rl holds this request's RateLimit-* values (Python:                                \
                Exchange.rl, its header lines, not empty) */

/* Flags that describe one attempt: cleared when the next one is attached. */
#define EXCHANGE_F_ATTEMPT                                                                         \
    (EXCHANGE_F_UP_EOF | EXCHANGE_F_UP_DIRTY | EXCHANGE_F_UP_WFAIL | EXCHANGE_F_UP_READ |          \
     EXCHANGE_F_HEAD_OK)

#define EXCHANGE_INLINE_PATH 128 /* targets shorter than this are kept in the struct */
#define EXCHANGE_INLINE_RID 64   /* request ids shorter than this are kept in the struct */
#define EXCHANGE_INLINE_KEY 64   /* hash keys shorter than this are kept in the struct */

struct exchange {
    unsigned flags; /* EXCHANGE_F_* */

    /* request framing, from exchange_classify_request() */
    bool chunked; /* the request body is chunked (re-chunked upstream) */
    bool has_cl;  /* the request has a Content-Length */
    uint64_t cl;  /* its value */

    /* balancer: hash key (balancer: hash only) */
    const char *key; /* path (up to '?'), key_buf or owned; NULL: hash the client ip */
    size_t key_len;  /* bytes of key */
    bool key_owned;  /* key is a malloc'ed copy */

    /* attempts */
    struct balancer_tried tried; /* upstreams tried by this request (bits: tried_small or owned) */
    uint64_t tried_small[2];     /* inline storage for tried (<= 128 upstreams) */
    unsigned attempts;           /* upstream attempts started */
    enum retry_phase phase;      /* phase of the last failed attempt */

    /* access-log fields */
    double start_wall;  /* wall clock at the request's first byte */
    double start_mono;  /* monotonic seconds at the same moment */
    double end_mono;    /* when the response's last byte was sent, 0 until then */
    const char *method; /* llhttp's static method name, NULL if the head never parsed */
    char *path;         /* the target: path_buf, or an owned copy when longer */
    char *request_id;   /* the client's X-Request-ID or a generated one: rid_buf or owned */
    int status;         /* status sent (0: none) */
    uint64_t bytes_in;  /* bytes of this request read from the client */
    uint64_t bytes_out; /* bytes of this request written to the client */
    char path_buf[EXCHANGE_INLINE_PATH]; /* most targets: no malloc per request */
    char rid_buf[EXCHANGE_INLINE_RID];   /* generated ids (32 hex) and short client ones */
    char key_buf[EXCHANGE_INLINE_KEY];   /* most header hash keys */

    /* rate limiting (a rate-limited listener). Past path_buf, so exchange_init()
     * does not clear it per request: it is only read under EXCHANGE_F_RL, which
     * exchange_init() clears and exchange_ratelimited() sets after filling it. */
    struct ratelimit_result rl; /* the take's verdict and header values (EXCHANGE_F_RL) */
};

/* Start the next request: free owned copies, reset every field. A zeroed struct
 * is a valid argument (first use). */
void exchange_init(struct exchange *x);
/* Free what x owns (the connection is going away). */
void exchange_deinit(struct exchange *x);

/* Keep the method name, a copy of the target and of the client's X-Request-ID
 * (if any) from the parsed head m. Returns 0, or -1 on allocation failure. */
int exchange_keep_head(struct exchange *x, const struct http1_msg *m);
/* The request id buffer to fill with a generated id (33 bytes), made current. */
static inline char *exchange_generated_id(struct exchange *x)
{
    _Static_assert(EXCHANGE_INLINE_RID >= 33, "rid_buf holds a generated id");
    if (x->request_id && x->request_id != x->rid_buf)
        free(x->request_id); /* a long client id of this exchange */
    x->request_id = x->rid_buf;
    return x->rid_buf;
}

/* Classify a complete request head (req: the request parser, inside its
 * on_head; after exchange_keep_head). Sets KEEPALIVE / HTTP10 / HEAD_METHOD /
 * UPGRADE / EXPECT / IDEMPOTENT, CLOSE_AFTER when draining, the body framing
 * (chunked, has_cl, cl) and, for balancer: hash, the key (hash_key path: the
 * target up to '?'; header:NAME: the first NAME's value, none when absent or
 * empty; client_ip: none). Returns 0, or the status to answer (400, 413, 501,
 * 505) with *why set (or 400 "out of memory"). */
int exchange_classify_request(struct exchange *x, const struct http1_parser *req,
                              const struct config *cfg, bool draining, const char **why);

/* The rate-limit key of a request whose head m is valid (contract 7): for
 * rate_limit.key header:NAME the first NAME field's value when it is not empty,
 * else (and for client_ip) ip_key, the connection's client_ip key
 * (ratelimit_key_ip). Points into m's input buffer or at ip_key. */
void exchange_ratelimit_key(const struct http1_msg *m, const struct config *cfg, const char *ip_key,
                            size_t ip_key_len, const char **key, size_t *key_len);

/* Record the rate-limit verdict of this request: RateLimit-* on every response,
 * and, when limited, the 429 that replaces routing (EXCHANGE_F_RL/_LIMITED). res
 * may be &x->rl itself (the take wrote it in place). */
void exchange_ratelimited(struct exchange *x, const struct ratelimit_result *res);

/* The one-line decisions below are inline: each runs once per request on the data
 * path, where a call across files cost more than the test it makes. */

/* How the request body is re-framed towards the upstream. */
static inline enum http1_out exchange_request_out_mode(const struct exchange *x)
{
    return x->chunked ? HTTP1_OUT_CHUNKED : x->has_cl ? HTTP1_OUT_IDENTITY : HTTP1_OUT_NONE;
}

/* Whether an interim (1xx, not 101) response head is forwarded to the client. */
static inline bool exchange_forward_interim(const struct exchange *x)
{
    return !(x->flags & EXCHANGE_F_HTTP10); /* HTTP/1.0 clients do not know 1xx */
}

/* Framing of a final response towards the client (resp: the response parser,
 * inside its on_head). Fills *o and *out_mode; sets CLOSE_AFTER when the client
 * connection must close after this response. Returns 0 (a body may follow),
 * 1 (no body: HEAD), 2 (101: switch to a tunnel), or -1 with *why (a 101 nobody
 * asked for). */
int exchange_response_framing(struct exchange *x, const struct http1_parser *resp, bool draining,
                              struct http1_resp_opts *o, enum http1_out *out_mode,
                              const char **why);

/* Whether the upstream connection may go back to the pool once the response is
 * complete: no EOF/dirt/write failure, upstream keep-alive, nothing left unread
 * (uin_left) or unsent (uout_left), and the whole request was read. */
static inline bool exchange_upstream_reusable(const struct exchange *x, bool upstream_keepalive,
                                              size_t uin_left, size_t uout_left)
{
    return !(x->flags & (EXCHANGE_F_UP_DIRTY | EXCHANGE_F_UP_EOF | EXCHANGE_F_UP_WFAIL)) &&
           upstream_keepalive && uin_left == 0 && (x->flags & EXCHANGE_F_REQ_DONE) &&
           uout_left == 0;
}

/* Whether the proxy closes the client connection after answering `code` itself:
 * codes that always close, a request not read in full, no keep-alive, draining,
 * or the client already shut its side (client_eof). */
static inline bool exchange_error_closes(const struct exchange *x, int code, bool draining,
                                         bool client_eof)
{
    return http1_error_closes(code) || !(x->flags & EXCHANGE_F_REQ_DONE) ||
           !(x->flags & EXCHANGE_F_KEEPALIVE) || (x->flags & EXCHANGE_F_CLOSE_AFTER) || draining ||
           client_eof;
}

/* Whether the client connection closes once this exchange is finished. */
static inline bool exchange_closes_after(const struct exchange *x, bool draining, bool client_eof)
{
    return (x->flags & EXCHANGE_F_CLOSE_AFTER) || client_eof || draining;
}

/* Size the tried bitmap for n upstreams and clear it (attempts = 0). */
void exchange_route_begin(struct exchange *x, size_t n);

/* Where the current attempt failed: connect (not attached: nothing was sent), send
 * (attached, the request not all written: request_sent false, or a write failed),
 * head (all written, no response head yet). */
enum retry_phase exchange_failure_phase(const struct exchange *x, bool attached, bool request_sent);

/* An attempt failed in `phase`: may the request go to another upstream? Records the
 * phase; calls retry_decide() with the exchange's idempotency, replayability,
 * response progress and attempts, the worker's budget b and max_attempts (1 +
 * retries). The caller still needs an untried eligible upstream for RETRY_GO, and
 * answers 502 (504 after a read timeout) otherwise. */
enum retry_verdict exchange_attempt_failed(struct exchange *x, enum retry_phase phase,
                                           const struct retry_budget *b, unsigned max_attempts);

#endif
