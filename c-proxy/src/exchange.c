#include "exchange.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- lifecycle */

static void drop_kept(char **s, char *small)
{
    if (*s && *s != small)
        free(*s);
    *s = NULL;
}

void exchange_init(struct exchange *x)
{
    drop_kept(&x->path, x->path_buf);
    drop_kept(&x->request_id, x->rid_buf);
    if (x->tried.bits != x->tried_small)
        free(x->tried.bits);
    if (x->key_owned)
        free((char *)x->key);
    /* everything up to the inline buffers; their bytes are dead once the pointers are,
     * and so is rl (after them) once EXCHANGE_F_RL is clear */
    memset(x, 0, offsetof(struct exchange, path_buf));
    x->tried.bits = x->tried_small;
}

void exchange_deinit(struct exchange *x)
{
    exchange_init(x);
}

/* A NUL-terminated copy of n bytes: in `small` (small_cap bytes) when it fits,
 * else a new allocation (NULL when that fails). */
static char *keep_span(char *small, size_t small_cap, const char *p, size_t n)
{
    char *s = n < small_cap ? small : malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

int exchange_keep_head(struct exchange *x, const struct http1_msg *m)
{
    x->method = llhttp_method_name((llhttp_method_t)m->method);
    drop_kept(&x->path, x->path_buf);
    x->path = keep_span(x->path_buf, sizeof x->path_buf, m->url.p ? m->url.p : "", m->url.len);
    if (m->request_id >= 0) {
        const struct http1_span *v = &m->hdrs[m->request_id].value;
        drop_kept(&x->request_id, x->rid_buf);
        x->request_id = keep_span(x->rid_buf, sizeof x->rid_buf, v->p, v->len);
    }
    return x->method && x->path && (m->request_id < 0 || x->request_id) ? 0 : -1;
}

void exchange_route_begin(struct exchange *x, size_t n)
{
    x->attempts = 0;
    if (n <= 128 && x->tried.bits == x->tried_small) {
        x->tried_small[0] = x->tried_small[1] = 0; /* the common case: inline bits */
        x->tried.n = n;
        return;
    }
    size_t words = (n + 63) / 64;
    if (x->tried.bits != x->tried_small)
        free(x->tried.bits);
    x->tried.bits = x->tried_small;
    if (words > 2) {
        uint64_t *bits = calloc(words, sizeof(uint64_t));
        if (bits)
            x->tried.bits = bits;
        else
            n = 128; /* out of memory: only the first 128 upstreams are candidates */
    }
    memset(x->tried_small, 0, sizeof x->tried_small);
    x->tried.n = n;
}

/* ---------------------------------------------------------------- request */

/* retry_idempotent(method, false) on llhttp's method code: GET HEAD OPTIONS PUT
 * DELETE TRACE (RFC 9110 9.2.2), without a string compare per request. */
static bool method_idempotent(unsigned method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_TRACE:
        return true;
    default:
        return false;
    }
}

static bool has_idempotency_key(const struct http1_msg *m)
{
    for (size_t i = 0; i < m->n_hdrs; i++) {
        const struct http1_header *h = &m->hdrs[i];
        if (h->name.len == 15 && http1_span_eq(h->name, "idempotency-key"))
            return true;
    }
    return false;
}

/* The hash_key bytes of this request (see exchange_classify_request). */
static int keep_hash_key(struct exchange *x, const struct http1_msg *m, const struct config *cfg)
{
    if (cfg->hash_key == CONFIG_KEY_PATH && x->path) {
        x->key = x->path;
        x->key_len = strcspn(x->path, "?");
    } else if (cfg->hash_key == CONFIG_KEY_HEADER && cfg->hash_header) {
        for (size_t i = 0; i < m->n_hdrs; i++) {
            const struct http1_header *h = &m->hdrs[i];
            if (!http1_span_eq(h->name, cfg->hash_header))
                continue;
            size_t n = h->value.len;
            char *k = n < sizeof x->key_buf ? x->key_buf : malloc(n + 1);
            if (!k)
                return -1;
            memcpy(k, h->value.p, n);
            k[n] = '\0';
            x->key = k;
            x->key_len = n;
            x->key_owned = k != x->key_buf;
            break;
        }
    }
    if (x->key_len == 0)
        x->key = NULL; /* no key: the client ip */
    return 0;
}

int exchange_classify_request(struct exchange *x, const struct http1_parser *req,
                              const struct config *cfg, bool draining, const char **why)
{
    const struct http1_msg *m = &req->msg;
    if (m->major == 1 && m->minor == 0)
        x->flags |= EXCHANGE_F_HTTP10;
    int st = http1_request_check(m, why);
    if (st)
        return st;
    if (m->method == HTTP_HEAD)
        x->flags |= EXCHANGE_F_HEAD_METHOD;
    if (http1_request_keepalive(m))
        x->flags |= EXCHANGE_F_KEEPALIVE;
    /* retry_idempotent(method, has_key), the header looked for only when the method
     * does not settle it */
    if (method_idempotent(m->method) || has_idempotency_key(m))
        x->flags |= EXCHANGE_F_IDEMPOTENT;
    x->chunked = m->n_te == 1;
    x->has_cl = (req->llp.flags & F_CONTENT_LENGTH) != 0;
    x->cl = x->has_cl ? req->llp.content_length : 0;
    uint64_t max_body = cfg->limits.max_body_bytes;
    if (max_body && x->has_cl && x->cl > max_body) {
        *why = "Content-Length over max_body_bytes";
        return 413;
    }
    if (req->llp.upgrade && m->upgrade >= 0 && (m->conn & HTTP1_CONN_UPGRADE) && m->minor == 1)
        x->flags |= EXCHANGE_F_UPGRADE;
    if (m->expect_continue && m->minor == 1 && (x->chunked || x->cl > 0))
        x->flags |= EXCHANGE_F_EXPECT;
    if (draining)
        x->flags |= EXCHANGE_F_CLOSE_AFTER;
    if (cfg->balancer == CONFIG_BALANCER_HASH && keep_hash_key(x, m, cfg) == -1) {
        *why = "out of memory";
        return 400;
    }
    return 0;
}

void exchange_ratelimit_key(const struct http1_msg *m, const struct config *cfg, const char *ip_key,
                            size_t ip_key_len, const char **key, size_t *key_len)
{
    if (cfg->rate_limit.key == CONFIG_KEY_HEADER && cfg->rate_limit.key_header) {
        for (size_t i = 0; i < m->n_hdrs; i++) {
            const struct http1_header *h = &m->hdrs[i];
            if (!http1_span_eq(h->name, cfg->rate_limit.key_header))
                continue;
            /* the first field decides; an empty one means "no key": the client ip
             * (ratelimit_key_header's rule, with the ip key computed once per connection) */
            if (h->value.len > 0) {
                *key = h->value.p;
                *key_len = h->value.len;
                return;
            }
            break;
        }
    }
    *key = ip_key;
    *key_len = ip_key_len;
}

void exchange_ratelimited(struct exchange *x, const struct ratelimit_result *res)
{
    if (res != &x->rl)
        x->rl = *res;
    x->flags |= EXCHANGE_F_RL;
    if (res->verdict == RATELIMIT_LIMITED)
        x->flags |= EXCHANGE_F_LIMITED;
}

/* ---------------------------------------------------------------- response */

int exchange_response_framing(struct exchange *x, const struct http1_parser *resp, bool draining,
                              struct http1_resp_opts *o, enum http1_out *out_mode, const char **why)
{
    const struct http1_msg *m = &resp->msg;
    o->close = o->keepalive = o->upgrade = false;
    if (m->status == 101) {
        if (!(x->flags & EXCHANGE_F_UPGRADE)) {
            *why = "101 without an upgrade request";
            return -1;
        }
        o->upgrade = true;
        o->framing = HTTP1_FRAME_NONE;
        *out_mode = HTTP1_OUT_NONE;
        return 2;
    }
    bool no_body = (x->flags & EXCHANGE_F_HEAD_METHOD) || m->status == 204 || m->status == 304;
    bool http10 = (x->flags & EXCHANGE_F_HTTP10) != 0;
    if (no_body)
        o->framing = HTTP1_FRAME_NONE;
    else if (resp->llp.flags & F_CHUNKED)
        o->framing = http10 ? HTTP1_FRAME_CLOSE : HTTP1_FRAME_CHUNKED;
    else if (resp->llp.flags & F_CONTENT_LENGTH)
        o->framing = HTTP1_FRAME_LENGTH;
    else
        o->framing = http10 ? HTTP1_FRAME_CLOSE : HTTP1_FRAME_CHUNKED;
    if (!(x->flags & EXCHANGE_F_KEEPALIVE) || draining || o->framing == HTTP1_FRAME_CLOSE ||
        !(x->flags & EXCHANGE_F_REQ_DONE))
        x->flags |= EXCHANGE_F_CLOSE_AFTER;
    o->close = (x->flags & EXCHANGE_F_CLOSE_AFTER) != 0;
    o->keepalive = http10 && !o->close;
    *out_mode = o->framing == HTTP1_FRAME_CHUNKED ? HTTP1_OUT_CHUNKED
                : o->framing == HTTP1_FRAME_NONE  ? HTTP1_OUT_NONE
                                                  : HTTP1_OUT_IDENTITY;
    return (x->flags & EXCHANGE_F_HEAD_METHOD) ? 1 : 0;
}

/* ---------------------------------------------------------------- attempts */

enum retry_phase exchange_failure_phase(const struct exchange *x, bool attached, bool request_sent)
{
    if (!attached)
        return RETRY_PHASE_CONNECT;
    if (!request_sent || (x->flags & EXCHANGE_F_UP_WFAIL) || !(x->flags & EXCHANGE_F_REQ_DONE))
        return RETRY_PHASE_SEND;
    return RETRY_PHASE_HEAD;
}

enum retry_verdict exchange_attempt_failed(struct exchange *x, enum retry_phase phase,
                                           const struct retry_budget *b, unsigned max_attempts)
{
    struct retry_attempt a = {
        .phase = phase,
        .idempotent = (x->flags & EXCHANGE_F_IDEMPOTENT) != 0,
        .replayable = (x->flags & EXCHANGE_F_REPLAYABLE) != 0,
        .response_started = (x->flags & (EXCHANGE_F_RESP_STARTED | EXCHANGE_F_RESP_SENT)) != 0,
        .attempts = x->attempts,
        .max_attempts = max_attempts,
    };
    x->phase = phase;
    return retry_decide(&a, b);
}
