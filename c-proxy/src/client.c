#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define IN_MIN 16384            /* client input buffer floor (bytes) */
#define UIN_SIZE (16384 + 1024) /* upstream input: also the longest response head */
#define LINGER_SECONDS 2.0      /* lingering close: discard client input this long at most */
#ifndef RUN_GUARD
#define RUN_GUARD 64 /* client_run() passes before yielding to the loop (-D for tests) */
#endif

static void client_run(struct client *c);
static void client_close(struct client *c);
static void client_error(struct client *c, int code, const char *why);
static void client_close_for(struct client *c, enum reason r);
static void note_error(struct client *c, int code, enum reason r);
static void client_route(struct client *c);
static void finish_request(struct client *c);
static void attempt_end(struct client *c, enum health_outcome o, const char *reason);
static inline void peer_done(struct client *c);

/* ---------------------------------------------------------------- helpers */

static const struct config *cur_cfg(const struct client *c)
{
    return c->set ? c->set->cfg->cfg : c->w->cfg->cfg;
}

static ev_tstamp now_of(const struct client *c)
{
    return ev_now(c->w->loop);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- rate limiting */

/* The connection's client_ip key for the configured ipv6_prefix: made once per
 * connection (and again only if a reload changed the prefix), never per request. */
static void rl_ip_key(struct client *c, const struct config *cfg)
{
    unsigned prefix = cfg->rate_limit.ipv6_prefix;
    if (c->rl_prefix == prefix)
        return;
    int n = ratelimit_key_ip(c->ip, prefix, c->rl_ip);
    c->rl_ip_len = n > 0 ? (size_t)n : 0; /* not an address: the overflow bucket */
    c->rl_ip_hash = ratelimit_hash(c->rl_ip, c->rl_ip_len);
    c->rl_prefix = prefix;
}

/* One token for the request whose head m just parsed and is valid (contract 7),
 * before routing: the exchange keeps the verdict and the RateLimit-* values. */
static void rl_take(struct client *c, const struct http1_msg *m, const struct config *cfg)
{
    const char *key;
    size_t len;
    rl_ip_key(c, cfg);
    if (cfg->rate_limit.key == CONFIG_KEY_HEADER) {
        exchange_ratelimit_key(m, cfg, c->rl_ip, c->rl_ip_len, &key, &len);
    } else {
        key = c->rl_ip; /* client_ip: no header to look at */
        len = c->rl_ip_len;
    }
    uint32_t h = key == c->rl_ip ? c->rl_ip_hash : ratelimit_hash(key, len);
    ratelimit_take_hashed(c->w->rl, key, len, h, NULL, now_of(c), &c->x.rl); /* in place */
    exchange_ratelimited(&c->x, &c->x.rl);
    metrics_add(c->w->metrics,
                c->x.rl.verdict == RATELIMIT_ALLOWED ? METRICS_RL_ALLOWED : METRICS_RL_LIMITED, 1);
}

/* The RateLimit-* values for a response to a request that took no token (a bad or
 * incomplete head, a timeout): the bucket as it is, nothing taken. m: the parsed
 * head when there is one (header:NAME keys), else NULL (the client ip key). */
static void rl_status(struct client *c, const struct http1_msg *m, const struct config *cfg)
{
    const char *key = c->rl_ip;
    size_t len;
    struct ratelimit_result res;
    rl_ip_key(c, cfg);
    len = c->rl_ip_len;
    if (m)
        exchange_ratelimit_key(m, cfg, c->rl_ip, c->rl_ip_len, &key, &len);
    ratelimit_status(c->w->rl, key, len, now_of(c), &res);
    exchange_ratelimited(&c->x, &res);
}

/* A generated request id, in the exchange's rid_buf. */
static void new_request_id(struct client *c)
{
    util_request_id(&c->w->rng, exchange_generated_id(&c->x));
}

static size_t in_cap_for(const struct config *cfg)
{
    size_t m = (size_t)cfg->limits.max_header_bytes;
    return (m > IN_MIN ? m : IN_MIN) + 1024;
}

/* Exchange buffers: out, uin, uout (in lives as long as the connection). */
static int buffers_alloc(struct client *c)
{
    struct worker *w = c->w;
    if (!c->out.data &&
        buffer_alloc_from(&w->pool_out, &c->out, UIN_SIZE + 2 * HTTP1_SLACK + 1024) == -1)
        return -1;
    if (!c->uin.data && buffer_alloc_from(&w->pool_uin, &c->uin, UIN_SIZE) == -1)
        return -1;
    if (!c->uout.data && buffer_alloc_from(&w->pool_uout, &c->uout, 2 * c->in.cap + 2048) == -1)
        return -1;
    return 0;
}

/* Back to the worker's pools (freed there when they are full). */
static void buffers_free(struct client *c)
{
    struct worker *w = c->w;
    buffer_release_to(&w->pool_out, &c->out);
    buffer_release_to(&w->pool_uin, &c->uin);
    buffer_release_to(&w->pool_uout, &c->uout);
}

/* Compact `out`, keeping resp_mark pointing at the same byte. */
static void out_compact(struct client *c)
{
    size_t shift = c->out.rpos;
    buffer_compact(&c->out);
    c->resp_mark = c->resp_mark >= shift ? c->resp_mark - shift : 0;
}

/* ---------------------------------------------------------------- timers */

static void consider(ev_tstamp *best, enum client_timeout *which, ev_tstamp t,
                     enum client_timeout kind)
{
    if (*best == 0 || t < *best) {
        *best = t;
        *which = kind;
    }
}

ev_tstamp client_deadline(const struct client *c, const struct config *cfg,
                          enum client_timeout *which)
{
#define SEC(ms) ((double)(ms) / 1000.0)
    ev_tstamp best = 0;
    *which = CLIENT_TO_NONE;
    switch (c->state) {
    case CLIENT_ST_IDLE:
        consider(&best, which, c->idle_since + SEC(cfg->timeouts.idle_ms), CLIENT_TO_IDLE);
        break;
    case CLIENT_ST_HEAD:
        consider(&best, which, c->head_start + SEC(cfg->timeouts.header_ms), CLIENT_TO_HEADER);
        break;
    case CLIENT_ST_UPSTREAM:
        consider(&best, which, c->req_start + SEC(cfg->timeouts.total_ms), CLIENT_TO_TOTAL);
        if (c->uo.queued)
            consider(&best, which, c->up_start + SEC(cfg->timeouts.queue_ms), CLIENT_TO_QUEUE);
        else if (c->conn)
            consider(&best, which, c->up_start + SEC(cfg->timeouts.connect_ms), CLIENT_TO_CONNECT);
        break;
    case CLIENT_ST_FORWARD: {
        consider(&best, which, c->req_start + SEC(cfg->timeouts.total_ms), CLIENT_TO_TOTAL);
        if (c->conn && !(c->x.flags & EXCHANGE_F_RESP_DONE)) {
            /* a response is awaited or streaming; a pause caused by a slow client is
             * covered by the write timeout, so client progress also counts */
            ev_tstamp last = c->up_last > c->out_last ? c->up_last : c->out_last;
            consider(&best, which, last + SEC(cfg->timeouts.read_ms), CLIENT_TO_READ);
        }
        if (c->out_pending)
            consider(&best, which, c->out_last + SEC(cfg->timeouts.write_ms), CLIENT_TO_WRITE);
        if (c->uout_pending && c->conn)
            consider(&best, which, c->uout_last + SEC(cfg->timeouts.write_ms), CLIENT_TO_WRITE);
        if (cfg->timeouts.min_rate) {
            ev_tstamp win = SEC(cfg->timeouts.min_rate_window_ms);
            /* the body is awaited from the client (not held up by the upstream) */
            if (c->conn && !(c->x.flags & EXCHANGE_F_REQ_DONE) && !c->uout_pending)
                consider(&best, which, c->rin_start + win, CLIENT_TO_RATE_IN);
            if (c->out_pending)
                consider(&best, which, c->rout_start + win, CLIENT_TO_RATE_OUT);
        }
        break;
    }
    case CLIENT_ST_TUNNEL:
        consider(&best, which, c->idle_since + SEC(cfg->timeouts.idle_ms), CLIENT_TO_IDLE);
        if (c->out_pending)
            consider(&best, which, c->out_last + SEC(cfg->timeouts.write_ms), CLIENT_TO_WRITE);
        if (c->uout_pending)
            consider(&best, which, c->uout_last + SEC(cfg->timeouts.write_ms), CLIENT_TO_WRITE);
        break;
    case CLIENT_ST_DRAIN:
        if (c->flags & CLIENT_F_LINGER)
            consider(&best, which, c->linger_until, CLIENT_TO_LINGER);
        else
            consider(&best, which, c->out_last + SEC(cfg->timeouts.write_ms), CLIENT_TO_WRITE);
        if (cfg->timeouts.min_rate && c->out_pending && !(c->flags & CLIENT_F_LINGER))
            consider(&best, which, c->rout_start + SEC(cfg->timeouts.min_rate_window_ms),
                     CLIENT_TO_RATE_OUT);
        break;
    case CLIENT_ST_CLOSED:
        break;
    }
    return best;
#undef SEC
}

bool client_rate_short(const struct client *c, const struct config *cfg, enum client_timeout which)
{
    uint64_t moved =
        which == CLIENT_TO_RATE_IN ? c->x.bytes_in - c->rin_mark : c->out_sent - c->rout_mark;
    double need =
        (double)cfg->timeouts.min_rate * (double)cfg->timeouts.min_rate_window_ms / 1000.0;
    return (double)moved < need;
}

/* A new min_rate window from now (the last one was fast enough, or the proxy
 * starts waiting on the client again). */
static void rate_in_open(struct client *c, ev_tstamp now)
{
    c->rin_start = now;
    c->rin_mark = c->x.bytes_in;
}

static void rate_out_open(struct client *c, ev_tstamp now)
{
    c->rout_start = now;
    c->rout_mark = c->out_sent;
}

/* Re-arm lazily: only when the deadline moved earlier than the armed one (a
 * later deadline is picked up when the timer fires early). */
static void refresh_timer(struct client *c)
{
    enum client_timeout which;
    ev_tstamp d = client_deadline(c, cur_cfg(c), &which);
    struct ev_loop *loop = c->w->loop;
    if (which == CLIENT_TO_NONE) {
        ev_timer_stop(loop, &c->timer);
        return;
    }
    if (ev_is_active(&c->timer) && c->timer_at <= d)
        return;
    ev_timer_stop(loop, &c->timer);
    ev_tstamp after = d - ev_now(loop);
    ev_timer_set(&c->timer, after > 0 ? after : 0, 0);
    ev_timer_start(loop, &c->timer);
    c->timer_at = d;
}

/* ---------------------------------------------------------------- logging */

static void log_request(struct client *c)
{
    if (c->x.flags & EXCHANGE_F_LOGGED)
        return;
    if (!c->x.method && c->x.status == 0)
        return; /* no request head and nothing sent: not a request */
    c->x.flags |= EXCHANGE_F_LOGGED;
    double secs = (c->x.end_mono ? c->x.end_mono : mono_now()) - c->x.start_mono;
    if (c->x.flags & EXCHANGE_F_RESP_SENT) {
        /* the upstream's label when its response went out, else "" (the proxy's own) */
        unsigned label = 0;
        if (c->up && c->set && (c->x.flags & EXCHANGE_F_HEAD_OK))
            label = metrics_label(health_id(c->set->peers[c->up->index].health));
        metrics_request(c->w->metrics, c->x.status, label, secs > 0 ? (uint64_t)(secs * 1e6) : 0);
    }
    struct access_rec r = {
        .start_wall = c->x.start_wall,
        .client = c->ip,
        .method = c->x.method ? c->x.method : "",
        .path = c->x.path ? c->x.path : "",
        .status = (c->x.flags & EXCHANGE_F_RESP_SENT) ? c->x.status : 0, /* 0: nothing reached it */
        .upstream = c->up ? c->up->cfg->name : "",
        .attempts = c->x.attempts,
        .bytes_in = c->x.bytes_in,
        .bytes_out = c->x.bytes_out,
        .duration_ms = secs * 1000.0,
        .request_id = c->x.request_id ? c->x.request_id : "",
        .worker = c->w->id,
    };
    log_access(c->w->alog, &r);
}

/* Forget the request: the exchange, its upstream set and attempt. */
static void request_reset(struct client *c)
{
    peer_done(c);
    c->up = NULL;
    if (c->set) {
        upstream_set_release(c->set);
        c->set = NULL;
        c->w->requests_in_flight--;
    }
    exchange_init(&c->x);
    c->crlf = 0;
    c->head_bytes = 0;
    c->out_pending = c->uout_pending = false;
}

/* ---------------------------------------------------------------- lifecycle */

static void client_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void client_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void client_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void client_on_defer(struct ev_loop *loop, ev_timer *w, int revents);
static int client_on_request_head(struct http1_parser *p);
static int client_on_response_head(struct http1_parser *p);

static void client_wc_shutdown(struct worker_conn *wc);
static void client_wc_abort(struct worker_conn *wc);
/* Close a client that does not take what the proxy sends it (write timeout,
 * min_rate): reset (SO_LINGER 0), so that the kernel drops what it still holds
 * for that client instead of trickling it out to it long after the close
 * (nginx's reset_timedout_connection). */
static void client_reset(struct client *c, enum reason r)
{
    if (c->state == CLIENT_ST_CLOSED)
        return;
    note_error(c, 0, r);
    if (c->fd != -1 && c->out_pending) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    client_close(c);
}

static void client_wc_free(struct worker_conn *wc);
static void client_on_upstream_io(struct upstream_owner *o, int revents);
static void client_on_upstream_slot(struct upstream_owner *o);

static const struct worker_conn_ops client_wc_ops = {
    .shutdown = client_wc_shutdown,
    .abort = client_wc_abort,
    .free = client_wc_free,
};

static const struct upstream_owner_ops client_uo_ops = {
    .on_io = client_on_upstream_io,
    .on_slot = client_on_upstream_slot,
};

int client_new(struct worker *w, int fd, const struct sockaddr *peer)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return -1;
    }
    const struct config *cfg = w->cfg->cfg;
    if (buffer_alloc(&c->in, in_cap_for(cfg)) == -1 ||
        http1_parser_init(&c->req, HTTP_REQUEST) == -1 ||
        http1_parser_init(&c->resp, HTTP_RESPONSE) == -1) {
        buffer_release(&c->in);
        http1_parser_deinit(&c->req);
        http1_parser_deinit(&c->resp);
        free(c);
        close(fd);
        return -1;
    }
    c->req.owner = c;
    c->req.on_head = client_on_request_head;
    c->resp.owner = c;
    c->resp.on_head = client_on_response_head;
    c->w = w;
    c->fd = fd;
    c->rl_prefix = UINT_MAX;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &a->sin_addr, c->ip, sizeof c->ip);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &a->sin6_addr, c->ip, sizeof c->ip);
    }
    ev_io_init(&c->rio, client_on_read, fd, EV_READ);
    ev_io_init(&c->wio, client_on_write, fd, EV_WRITE);
    ev_timer_init(&c->timer, client_on_timer, 0, 0);
    ev_timer_init(&c->defer, client_on_defer, 0, 0);
    upstream_owner_init(&c->uo, &client_uo_ops);
    exchange_init(&c->x);
    /* a fresh connection must send its head within timeouts.header */
    c->state = CLIENT_ST_HEAD;
    c->accepted = c->head_start = now_of(c);
    worker_conn_add(w, &c->wc, &client_wc_ops);
    metrics_add(w->metrics, METRICS_CONN_CLIENT, 1);
    ev_io_start(w->loop, &c->rio);
    refresh_timer(c);
    return 0;
}

/* The current attempt ends with outcome o (reason: a HEALTH_FAIL's constant): the
 * balancer and health hear it once (active--, passive accounting), the retry budget
 * counts one retry less if it was one. No-op when no attempt is running. */
static void attempt_end(struct client *c, enum health_outcome o, const char *reason)
{
    if (c->peer_counted && c->up && c->set) {
        struct health_state *h = c->set->peers[c->up->index].health;
        if (o == HEALTH_FAIL) {
            c->up->fails++;
            health_stats_add(h, HEALTH_STAT_FAILS, 1);
        }
        health_stats_add(h, HEALTH_STAT_ACTIVE, -1);
        balancer_attempt_end(&c->set->bal, c->up->index, o, reason, now_of(c));
    }
    c->peer_counted = false;
    if (c->retry_counted) {
        c->w->retries_in_flight--;
        c->retry_counted = false;
    }
}

/* The attempt ends without a failure: OK once a response head parsed, else neutral
 * (the client went away, the proxy answered). Every request passes here more than
 * once (response done, then reset) and only the first call has an attempt to end:
 * the others stop at this test instead of entering attempt_end(). */
static inline void peer_done(struct client *c)
{
    if (c->peer_counted || c->retry_counted)
        attempt_end(c, (c->x.flags & EXCHANGE_F_HEAD_OK) ? HEALTH_OK : HEALTH_NEUTRAL, NULL);
}

static void drop_upstream(struct client *c)
{
    peer_done(c);
    c->queued = false; /* an abandoned wait is not observed (as in Python) */
    if (c->uo.queued)
        upstream_cancel_wait(c->up, &c->uo);
    if (c->uo.granted) {
        upstream_close(c->uo.granted);
        c->uo.granted = NULL;
    }
    c->uo.granted_err = NULL;
    if (c->conn) {
        upstream_close(c->conn);
        c->conn = NULL;
    }
}

static void client_close(struct client *c)
{
    if (c->state == CLIENT_ST_CLOSED)
        return;
    struct worker *w = c->w;
    log_request(c);
    drop_upstream(c);
    ev_io_stop(w->loop, &c->rio);
    ev_io_stop(w->loop, &c->wio);
    ev_timer_stop(w->loop, &c->timer);
    ev_timer_stop(w->loop, &c->defer);
    if (c->fd != -1)
        close(c->fd);
    c->fd = -1;
    c->state = CLIENT_ST_CLOSED;
    metrics_dec(w->metrics, METRICS_CONN_CLIENT);
    worker_conn_bury(w, &c->wc);
}

static void client_wc_free(struct worker_conn *wc)
{
    struct client *c = container_of(wc, struct client, wc);
    request_reset(c);
    exchange_deinit(&c->x);
    buffer_release(&c->in);
    buffers_free(c);
    http1_parser_deinit(&c->req);
    http1_parser_deinit(&c->resp);
    free(c);
}

/* Close after a failure once response bytes reached the client (contract 4): what is
 * already queued for the client still goes out, then the lingering close of DRAIN (write
 * side shut, input discarded), as after the proxy's own closing errors. Closing at once
 * with unread pipelined input would send an RST, which can destroy the response bytes
 * still in flight to the client (RFC 9112 9.6); found by the soak. */
static void client_abort_exchange(struct client *c)
{
    drop_upstream(c);
    c->x.flags |= EXCHANGE_F_CLOSE_AFTER;
    finish_request(c);
}

static void client_wc_abort(struct worker_conn *wc)
{
    client_close(container_of(wc, struct client, wc));
}

static void client_wc_shutdown(struct worker_conn *wc)
{
    struct client *c = container_of(wc, struct client, wc);
    /* only a keep-alive connection between two requests closes now (its client sends
     * again on a new connection, RFC 9112 9.3.1); a new one that has not sent its
     * first request yet gets it answered (timeouts.header bounds the wait) */
    if (c->state == CLIENT_ST_IDLE) {
        client_close_for(c, REASON_SHUTTING_DOWN);
        return;
    }
    c->x.flags |= EXCHANGE_F_CLOSE_AFTER;
}

/* ---------------------------------------------------------------- request */

/* The first byte of a request is in: start its clocks (once). */
static void request_begin(struct client *c)
{
    c->state = CLIENT_ST_HEAD;
    if (c->x.flags & EXCHANGE_F_IN_REQUEST)
        return;
    c->x.flags |= EXCHANGE_F_IN_REQUEST;
    c->req_start = now_of(c);
    c->x.start_wall = wall_now();
    c->x.start_mono = mono_now();
}

static int client_on_request_head(struct http1_parser *p)
{
    struct client *c = p->owner;
    struct http1_msg *m = &p->msg;
    const struct config *cfg = cur_cfg(c);
    if (exchange_keep_head(&c->x, m) == -1) {
        p->error_status = 400;
        p->error_reason = "out of memory";
        return -1;
    }
    if (m->request_id < 0)
        new_request_id(c);
    const char *why = NULL;
    int st = exchange_classify_request(&c->x, p, cfg, c->w->draining, &why);
    if (st) {
        if (c->w->rl)
            rl_status(c, m, cfg); /* not counted, but its response carries RateLimit-* */
        p->error_status = st;
        p->error_reason = why;
        return -1;
    }
    p->body_limit = cfg->limits.max_body_bytes;
    if (c->w->rl) {
        rl_take(c, m, cfg);
        if (c->x.flags & EXCHANGE_F_LIMITED) {
            /* 429 instead of routing (client_route): nothing is built for an upstream;
             * a body is read and dropped so that the connection can stay open */
            p->out = NULL;
            p->out_mode = HTTP1_OUT_NONE;
            c->state = CLIENT_ST_UPSTREAM;
            return 0;
        }
    }
    struct http1_fwd f = {
        .client_ip = c->ip,
        .request_id = c->x.request_id,
        .chunked = c->x.chunked,
        .has_cl = c->x.has_cl,
        .cl = c->x.cl,
        .upgrade = (c->x.flags & EXCHANGE_F_UPGRADE) != 0,
    };
    size_t n = http1_build_request_head(m, &f, buffer_tail(&c->uout), buffer_space(&c->uout));
    if (n > buffer_space(&c->uout)) {
        p->error_status = 431;
        p->error_reason = "request head too large once rewritten";
        return -1;
    }
    c->uout.wpos += n;
    c->x.flags |= EXCHANGE_F_REPLAYABLE;
    p->out = &c->uout;
    p->out_mode = exchange_request_out_mode(&c->x);
    c->state = CLIENT_ST_UPSTREAM;
    return 0;
}

/* Parse the request head out of `in`. */
static void pump_head(struct client *c)
{
    const struct config *cfg = cur_cfg(c);
    while (c->state == CLIENT_ST_HEAD && buffer_len(&c->in) > 0) {
        if (buffers_alloc(c) == -1) {
            client_close(c);
            return;
        }
        request_begin(c);
        const char *p = buffer_head(&c->in);
        bool found;
        size_t n = http1_head_scan(&c->crlf, p, buffer_len(&c->in), &found);
        size_t used = 0;
        enum http1_result r = http1_execute(&c->req, p, n, &used);
        c->in.rpos += used; /* no compaction: the head's spans point here */
        c->head_bytes += used;
        c->x.bytes_in += used;
        if (r == HTTP1_ERROR) {
            client_error(c, c->req.error_status ? c->req.error_status : 400, c->req.error_reason);
            return;
        }
        if (c->head_bytes > cfg->limits.max_header_bytes && c->req.phase == HTTP1_PH_HEAD) {
            client_error(c, 431, "head_too_large");
            return;
        }
        if (c->req.phase != HTTP1_PH_HEAD || r == HTTP1_DONE) {
            /* head complete (on_head ran); count the head as a whole */
            if (c->head_bytes > cfg->limits.max_header_bytes) {
                client_error(c, 431, "head_too_large");
                return;
            }
            if (r == HTTP1_DONE)
                c->x.flags |= EXCHANGE_F_REQ_DONE;
            return;
        }
        if (found)
            c->crlf = 0; /* blank lines before a request line */
    }
    /* a head that cannot fit: 431 */
    if (c->state == CLIENT_ST_HEAD && buffer_space(&c->in) == 0 && c->req.in_head)
        client_error(c, 431, "head_too_large");
}

/* Feed request body bytes from `in` into `uout`. */
static void pump_body(struct client *c)
{
    while (!(c->x.flags & EXCHANGE_F_REQ_DONE) && buffer_len(&c->in) > 0) {
        if (buffer_space(&c->uout) <= HTTP1_SLACK) {
            if (c->uout.rpos == 0)
                return;
            buffer_compact(&c->uout);
            c->x.flags &= ~EXCHANGE_F_REPLAYABLE;
            if (buffer_space(&c->uout) <= HTTP1_SLACK)
                return;
        }
        size_t n = buffer_len(&c->in);
        size_t room = buffer_space(&c->uout) - HTTP1_SLACK;
        if (n > room)
            n = room;
        size_t used = 0;
        enum http1_result r = http1_execute(&c->req, buffer_head(&c->in), n, &used);
        buffer_consume(&c->in, used);
        c->x.bytes_in += used;
        if (r == HTTP1_ERROR) {
            client_error(c, c->req.error_status ? c->req.error_status : 400, c->req.error_reason);
            return;
        }
        if (r == HTTP1_DONE)
            c->x.flags |= EXCHANGE_F_REQ_DONE;
    }
    if (buffer_len(&c->in) == 0)
        buffer_reset_if_empty(&c->in);
}

/* ---------------------------------------------------------------- routing */

static void client_attach(struct client *c, struct upstream_conn *conn)
{
    ev_tstamp now = now_of(c);
    c->conn = conn;
    c->state = CLIENT_ST_FORWARD;
    http1_parser_reset(&c->resp);
    c->resp.out = &c->out;
    c->resp.out_mode = HTTP1_OUT_NONE;
    c->uin.rpos = c->uin.wpos = 0;
    c->up_last = c->uout_last = now;
    rate_in_open(c, now);
    c->x.flags &= ~EXCHANGE_F_ATTEMPT;
    c->up_err = NULL;
    if (c->x.flags & EXCHANGE_F_EXPECT) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        out_compact(c);
        buffer_put(&c->out, cont, sizeof cont - 1);
        c->x.flags &= ~EXCHANGE_F_EXPECT;
    }
}

/* Is there an upstream this request has not tried that may take an attempt now? */
static bool eligible_left(const struct client *c)
{
    struct balancer_ctx ctx = {.tried = &c->x.tried, .now = now_of(c), .client_ip = c->ip};
    for (size_t i = 0; i < c->set->n; i++)
        if (balancer_peer_eligible(c->set->peers, i, &ctx))
            return true;
    return false;
}

/* The attempt on c->up failed in `phase` (contract 6): end it with health outcome o,
 * close its connection, then retry on another upstream when exchange_attempt_failed()
 * says so and one is eligible (event retry), else answer `status` (502, or 504 after a
 * read timeout; event retry_skipped when the budget said no). */
static void attempt_failed(struct client *c, enum retry_phase phase, const char *reason,
                           enum health_outcome o, int status)
{
    struct upstream *u = c->up;
    attempt_end(c, o, reason);
    if (c->conn) {
        upstream_close(c->conn);
        c->conn = NULL;
    }
    const struct config *cfg = c->set->cfg->cfg;
    struct retry_budget b = {
        .percent = cfg->retry_budget.percent,
        .min_concurrent = cfg->retry_budget.min_concurrent,
        .requests_in_flight = c->w->requests_in_flight,
        .retries_in_flight = c->w->retries_in_flight,
    };
    enum retry_verdict v = exchange_attempt_failed(&c->x, phase, &b, 1 + cfg->retries);
    const char *name = u ? u->cfg->name : "";
    unsigned label = u && c->set ? metrics_label(health_id(c->set->peers[u->index].health)) : 0;
    if (v == RETRY_GO && eligible_left(c)) {
        metrics_retry(c->w->metrics, label, (unsigned)phase);
        log_event(CONFIG_LOG_WARN, "retry",
                  json_pack("{s:s,s:s,s:s,s:i}", "upstream", name, "reason", reason, "phase",
                            retry_phase_name(phase), "attempt", (int)c->x.attempts + 1));
        /* the request goes again from its first byte (it is all in uout: replayable) */
        c->uout.rpos = 0;
        c->uout_pending = false;
        client_route(c);
        return;
    }
    if (v == RETRY_NO_BUDGET) {
        metrics_add(c->w->metrics, METRICS_RETRIES_SKIPPED, 1);
        log_event(CONFIG_LOG_WARN, "retry_skipped",
                  json_pack("{s:s,s:s,s:s}", "upstream", name, "reason", retry_verdict_name(v),
                            "phase", retry_phase_name(phase)));
    }
    client_error(c, status, reason);
}

/* Connect failures (refused, failed, timed out): nothing was sent. */
static void connect_failed(struct client *c, const char *reason)
{
    /* a local shortage is not the upstream's fault */
    bool local = strcmp(reason, "socket") == 0 || strcmp(reason, "out_of_memory") == 0;
    attempt_failed(c, RETRY_PHASE_CONNECT, reason, local ? HEALTH_NEUTRAL : HEALTH_FAIL, 502);
}

static void client_route(struct client *c)
{
    if (c->x.flags & EXCHANGE_F_LIMITED) {
        client_error(c, 429, "rate_limited"); /* never touches an upstream */
        return;
    }
    if (!c->set) {
        c->set = upstream_set_acquire(c->w->set);
        c->w->requests_in_flight++;
        exchange_route_begin(&c->x, c->set->n);
    }
    ev_tstamp now = now_of(c); /* once: ev_now() is a call into libev */
    struct balancer_ctx ctx = {
        .tried = &c->x.tried,
        .now = now,
        .client_ip = c->ip,
        .key = c->x.key,
        .key_len = c->x.key_len,
    };
    int idx = balancer_pick(&c->set->bal, &ctx);
    if (idx < 0) {
        /* nobody eligible: all down or drained (503), or every one tried (502) */
        client_error(c, c->x.attempts ? 502 : 503,
                     c->x.attempts ? "upstreams_exhausted" : "no_upstream");
        return;
    }
    balancer_tried_add(&c->x.tried, (size_t)idx);
    struct upstream *u = &c->set->ups[idx];
    c->up = u;
    c->x.attempts++;
    u->requests++;
    health_stats_add(c->set->peers[idx].health, HEALTH_STAT_REQUESTS, 1);
    health_stats_add(c->set->peers[idx].health, HEALTH_STAT_ACTIVE, 1);
    balancer_attempt_begin(&c->set->bal, (size_t)idx, now);
    c->peer_counted = true;
    if (c->x.attempts > 1) {
        c->w->retries_in_flight++;
        c->retry_counted = true;
    }
    c->up_start = now;
    c->state = CLIENT_ST_UPSTREAM;
    struct upstream_conn *conn = NULL;
    const char *reason = NULL;
    switch (upstream_acquire(u, &c->uo, &conn, &reason)) {
    case UPSTREAM_READY:
        client_attach(c, conn);
        return;
    case UPSTREAM_CONNECTING:
        c->conn = conn;
        return;
    case UPSTREAM_QUEUED:
        c->queued = true;
        return;
    case UPSTREAM_FAILED:
        connect_failed(c, reason); /* retries through client_route() when it may */
        return;
    }
}

/* ---------------------------------------------------------------- response */

static int client_on_response_head(struct http1_parser *p)
{
    struct client *c = p->owner;
    struct http1_msg *m = &p->msg;
    struct http1_resp_opts o = {0};
    if (p->interim) {
        if (!exchange_forward_interim(&c->x))
            return 0;
        size_t n = http1_build_response_head(m, &o, buffer_tail(&c->out), buffer_space(&c->out));
        if (n > buffer_space(&c->out)) {
            p->error_status = 502;
            p->error_reason = "interim response head too large";
            return -1;
        }
        c->out.wpos += n;
        return 0;
    }
    const char *why = NULL;
    enum http1_out mode = HTTP1_OUT_NONE;
    int ret = exchange_response_framing(&c->x, p, c->w->draining, &o, &mode, &why);
    if (ret == -1) {
        p->error_status = 502;
        p->error_reason = why;
        return -1;
    }
    p->out_mode = mode;
    if (c->x.flags & EXCHANGE_F_RL)
        o.rl = &c->x.rl;
    c->resp_mark = c->out.wpos;
    size_t n = http1_build_response_head(m, &o, buffer_tail(&c->out), buffer_space(&c->out));
    if (n > buffer_space(&c->out)) {
        p->error_status = 502;
        p->error_reason = "response head too large";
        return -1;
    }
    c->out.wpos += n;
    c->x.flags |= EXCHANGE_F_RESP_STARTED | EXCHANGE_F_HEAD_OK;
    c->x.status = (int)m->status;
    c->x.flags &= ~EXCHANGE_F_REPLAYABLE; /* the upstream answered: no replay */
    return ret;
}

static void enter_tunnel(struct client *c)
{
    c->state = CLIENT_ST_TUNNEL;
    c->idle_since = now_of(c);
    c->x.flags |= EXCHANGE_F_CLOSE_AFTER;
    /* bytes after the 101 head are already tunnel data, as are client bytes after
     * the upgrade request */
    if (c->conn)
        c->conn->exchanges++; /* never pooled: upgraded connections close */
}

/* The upstream answered in full: release or close its connection. */
static void response_done(struct client *c)
{
    c->x.flags |= EXCHANGE_F_RESP_DONE;
    if (c->x.status == 101) {
        enter_tunnel(c);
        return;
    }
    bool reusable = exchange_upstream_reusable(&c->x, llhttp_should_keep_alive(&c->resp.llp),
                                               buffer_len(&c->uin), buffer_len(&c->uout));
    peer_done(c);
    if (c->conn) {
        upstream_release(c->conn, reusable);
        c->conn = NULL;
    }
    if (!(c->x.flags & EXCHANGE_F_REQ_DONE))
        c->x.flags |= EXCHANGE_F_CLOSE_AFTER;
}

/* Feed response bytes from `uin` into `out`. */
static void pump_response(struct client *c)
{
    while (c->conn && !(c->x.flags & EXCHANGE_F_RESP_DONE) && buffer_len(&c->uin) > 0) {
        bool head = c->resp.phase == HTTP1_PH_HEAD;
        size_t need = head ? c->uin.cap + HTTP1_SLACK : HTTP1_SLACK + 1;
        if (buffer_space(&c->out) < need)
            out_compact(c);
        if (buffer_space(&c->out) < need)
            return; /* the client is slow: stop here, uin fills, reading stops */
        size_t n = buffer_len(&c->uin);
        if (!head && n > buffer_space(&c->out) - HTTP1_SLACK)
            n = buffer_space(&c->out) - HTTP1_SLACK;
        size_t used = 0;
        enum http1_result r = http1_execute(&c->resp, buffer_head(&c->uin), n, &used);
        c->uin.rpos += used;
        if (r == HTTP1_ERROR) {
            c->x.flags |= EXCHANGE_F_UP_DIRTY;
            /* an invalid head is a health failure; a bad body after a good head is not */
            if (!(c->x.flags & EXCHANGE_F_HEAD_OK))
                attempt_end(c, HEALTH_FAIL, "invalid_response");
            client_error(c, 502, c->resp.error_reason);
            return;
        }
        if (r == HTTP1_DONE) {
            if (c->x.status != 101 && buffer_len(&c->uin) > 0)
                c->x.flags |= EXCHANGE_F_UP_DIRTY; /* bytes after a complete response */
            response_done(c);
            return;
        }
    }
    if (!c->resp.in_head)
        buffer_reset_if_empty(&c->uin);
    else if (c->conn && buffer_space(&c->uin) == 0) {
        attempt_end(c, HEALTH_FAIL, "invalid_response");
        client_error(c, 502, "invalid_response"); /* cannot grow: uin is full */
    }
}

/* The upstream closed (or failed): finish or fail the exchange. */
static void upstream_eof(struct client *c)
{
    if (c->x.flags & EXCHANGE_F_RESP_DONE)
        return;
    const char *why = c->up_err ? c->up_err : "upstream_closed";
    if (!(c->x.flags & EXCHANGE_F_UP_READ)) {
        /* not one response byte: a send- or head-phase failure (contract 6). A reused
         * connection closing here is the keep-alive race (it passed the pool check
         * before the upstream's close arrived), not a sign of a sick upstream. */
        bool reused = c->conn && c->conn->exchanges > 0;
        enum retry_phase ph = exchange_failure_phase(&c->x, true, buffer_len(&c->uout) == 0);
        attempt_failed(c, ph, why, reused ? HEALTH_NEUTRAL : HEALTH_FAIL, 502);
        return;
    }
    enum http1_result r = http1_finish(&c->resp);
    c->x.flags |= EXCHANGE_F_UP_DIRTY;
    if (r == HTTP1_DONE) {
        response_done(c);
        return;
    }
    if (!(c->x.flags & EXCHANGE_F_HEAD_OK))
        attempt_end(c, HEALTH_FAIL, why); /* closed in the middle of the head */
    client_error(c, 502, "upstream_closed");
}

/* ---------------------------------------------------------------- errors */

/* The reason of an error answered with `code`: `why` when it is a name of the
 * vocabulary (reason.h), else the code's own (a parser's message for 400/501/505). */
static enum reason error_reason(int code, const char *why)
{
    enum reason dflt = code == 505   ? REASON_BAD_VERSION
                       : code == 501 ? REASON_NOT_IMPLEMENTED
                       : code == 413 ? REASON_BODY_TOO_LARGE
                       : code == 431 ? REASON_HEAD_TOO_LARGE
                       : code >= 500 ? REASON_INVALID_RESPONSE
                                     : REASON_BAD_REQUEST;
    return reason_from_name(why, dflt);
}

/* Count and log (debug) an error answered with `code` (0: the connection closes
 * without an answer) for reason r (contract 9/10: twinproxy_errors_total, events
 * request_error / connection_closed). */
static void note_error(struct client *c, int code, enum reason r)
{
    metrics_error(c->w->metrics, code, r);
    if (!log_enabled(CONFIG_LOG_DEBUG))
        return;
    if (code)
        log_event(CONFIG_LOG_DEBUG, "request_error",
                  json_pack("{s:i,s:s,s:s,s:s}", "status", code, "reason", reason_name(r), "client",
                            c->ip, "request_id", c->x.request_id ? c->x.request_id : ""));
    else
        log_event(CONFIG_LOG_DEBUG, "connection_closed",
                  json_pack("{s:s,s:s}", "reason", reason_name(r), "client", c->ip));
}

/* Close c on its own initiative for reason r (counted and logged). */
static void client_close_for(struct client *c, enum reason r)
{
    if (c->state == CLIENT_ST_CLOSED)
        return;
    note_error(c, 0, r);
    client_close(c);
}

static void client_error(struct client *c, int code, const char *why)
{
    if (c->x.flags & EXCHANGE_F_RESP_SENT) {
        /* contract 4: close, no answer (after what is queued, lingering) */
        note_error(c, 0, error_reason(code, why));
        client_abort_exchange(c);
        return;
    }
    note_error(c, code, error_reason(code, why));
    if (c->x.flags & EXCHANGE_F_RESP_STARTED) {
        c->out.wpos = c->resp_mark; /* the head never left: replace it */
        c->x.flags &= ~(EXCHANGE_F_RESP_STARTED | EXCHANGE_F_RESP_DONE);
    }
    peer_done(c);
    drop_upstream(c);
    if (buffers_alloc(c) == -1) {
        client_close(c);
        return;
    }
    if (!c->x.request_id)
        new_request_id(c);
    if (!(c->x.flags & EXCHANGE_F_IN_REQUEST)) {
        c->x.flags |= EXCHANGE_F_IN_REQUEST;
        c->x.start_wall = wall_now();
        c->x.start_mono = mono_now();
    }
    bool close = exchange_error_closes(&c->x, code, c->w->draining, (c->flags & CLIENT_F_EOF) != 0);
    if (c->w->rl && !(c->x.flags & EXCHANGE_F_RL))
        rl_status(c, NULL, cur_cfg(c)); /* no head, no token taken: the client ip's bucket */
    out_compact(c);
    /* a HEAD's answer has no body, also when the head failed its checks (the method
     * is known as soon as the head parsed) */
    bool head =
        (c->x.flags & EXCHANGE_F_HEAD_METHOD) || (c->x.method && strcmp(c->x.method, "HEAD") == 0);
    size_t n = http1_build_error(code, c->x.request_id, close, head,
                                 (c->x.flags & EXCHANGE_F_RL) ? &c->x.rl : NULL,
                                 buffer_tail(&c->out), buffer_space(&c->out));
    if (n > buffer_space(&c->out)) {
        client_close(c);
        return;
    }
    c->out.wpos += n;
    c->x.status = code;
    c->x.flags |= EXCHANGE_F_RESP_STARTED | EXCHANGE_F_RESP_DONE;
    c->x.flags &= ~EXCHANGE_F_EXPECT;
    if (close) {
        c->x.flags |= EXCHANGE_F_CLOSE_AFTER;
        c->state = CLIENT_ST_DRAIN;
    } else {
        c->state = CLIENT_ST_FORWARD;
    }
}

/* ---------------------------------------------------------------- io */

static void client_read(struct client *c)
{
    if (c->fd == -1 || (c->flags & CLIENT_F_EOF))
        return;
    bool head_pinned = c->state == CLIENT_ST_HEAD && c->req.in_head;
    if (!head_pinned && buffer_space(&c->in) < c->in.cap / 4)
        buffer_compact(&c->in);
    if (buffer_space(&c->in) == 0)
        return;
    ssize_t n = util_recv(c->fd, buffer_tail(&c->in), buffer_space(&c->in), 0);
    if (n > 0) {
        ev_tstamp now = now_of(c);
        metrics_add(c->w->metrics, METRICS_RX_CLIENT, (uint64_t)n);
        c->in.wpos += (size_t)n;
        if (c->state == CLIENT_ST_IDLE)
            c->state = CLIENT_ST_HEAD, c->head_start = now;
        c->idle_since = now;
        if (c->state == CLIENT_ST_DRAIN)
            c->in.rpos = c->in.wpos = 0; /* lingering: discard */
        return;
    }
    if (n == 0) {
        c->flags |= CLIENT_F_EOF;
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    c->flags |= CLIENT_F_EOF; /* reset: nothing more to read, writes will fail too */
}

static void client_flush(struct client *c)
{
    if (c->fd == -1)
        return;
    if (buffer_len(&c->out) > 0) {
        /* the loop time (a call into libev) only when there is something to send:
         * most of client_run()'s passes have nothing */
        ev_tstamp now = now_of(c);
        if (!c->out_pending) {
            c->out_pending = true;
            c->out_last = now;
            rate_out_open(c, now);
        }
        while (buffer_len(&c->out) > 0) {
            /* the response ends when its last byte is handed to the kernel: time it there */
            double t = (c->x.flags & EXCHANGE_F_RESP_DONE) ? mono_now() : 0;
            ssize_t n = util_send(c->fd, buffer_head(&c->out), buffer_len(&c->out), MSG_NOSIGNAL);
            if (n > 0) {
                if (t && (size_t)n == buffer_len(&c->out))
                    c->x.end_mono = t;
                buffer_consume(&c->out, (size_t)n);
                c->x.bytes_out += (size_t)n;
                c->out_sent += (uint64_t)n;
                metrics_add(c->w->metrics, METRICS_TX_CLIENT, (uint64_t)n);
                c->out_last = now;
                if (c->x.flags & EXCHANGE_F_RESP_STARTED)
                    c->x.flags |= EXCHANGE_F_RESP_SENT;
                continue;
            }
            if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                break;
            /* the client is gone */
            client_close(c);
            return;
        }
    }
    if (buffer_len(&c->out) == 0) {
        c->out_pending = false;
        buffer_reset_if_empty(&c->out);
        c->resp_mark = 0;
    }
}

static void upstream_read(struct client *c)
{
    struct upstream_conn *conn = c->conn;
    if (!conn || conn->state != UPC_BUSY || (c->x.flags & EXCHANGE_F_UP_EOF))
        return;
    if (!c->resp.in_head && buffer_space(&c->uin) < c->uin.cap / 4)
        buffer_compact(&c->uin);
    if (buffer_space(&c->uin) == 0)
        return;
    ssize_t n = util_recv(conn->fd, buffer_tail(&c->uin), buffer_space(&c->uin), 0);
    if (n > 0) {
        c->uin.wpos += (size_t)n;
        metrics_add(c->w->metrics, METRICS_RX_UPSTREAM, (uint64_t)n);
        c->x.flags |= EXCHANGE_F_UP_READ;
        c->up_last = now_of(c);
        if (c->state == CLIENT_ST_TUNNEL)
            c->idle_since = c->up_last;
        return;
    }
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    c->up_err = n == 0 ? "upstream_closed" : "upstream_reset";
    c->x.flags |= EXCHANGE_F_UP_EOF;
}

static void upstream_flush(struct client *c)
{
    struct upstream_conn *conn = c->conn;
    if (!conn || conn->state != UPC_BUSY)
        return;
    bool was_pending = c->uout_pending; /* the upstream held up the body until now */
    if (buffer_len(&c->uout) > 0) {
        ev_tstamp now = now_of(c); /* only when there is something to send (client_flush) */
        if (!c->uout_pending) {
            c->uout_pending = true;
            c->uout_last = now;
        }
        while (buffer_len(&c->uout) > 0 &&
               !(c->x.flags & (EXCHANGE_F_UP_WFAIL | EXCHANGE_F_UP_EOF))) {
            ssize_t n =
                util_send(conn->fd, buffer_head(&c->uout), buffer_len(&c->uout), MSG_NOSIGNAL);
            if (n > 0) {
                buffer_consume(&c->uout, (size_t)n);
                metrics_add(c->w->metrics, METRICS_TX_UPSTREAM, (uint64_t)n);
                c->uout_last = c->up_last = now;
                if (c->state == CLIENT_ST_TUNNEL)
                    c->idle_since = now;
                continue;
            }
            if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                break;
            /* the upstream stopped reading (reset/closed): keep reading what it says */
            c->x.flags |= EXCHANGE_F_UP_WFAIL | EXCHANGE_F_UP_DIRTY;
            break;
        }
    }
    if (buffer_len(&c->uout) == 0) {
        c->uout_pending = false;
        if (was_pending)
            rate_in_open(c, now_of(c)); /* the body is awaited from the client again */
        if (!(c->x.flags & EXCHANGE_F_REPLAYABLE))
            buffer_reset_if_empty(&c->uout);
    }
}

/* Tunnel: raw bytes in -> uout and uin -> out. */
static void pump_tunnel(struct client *c)
{
    if (buffer_len(&c->in) > 0) {
        if (buffer_space(&c->uout) < buffer_len(&c->in))
            buffer_compact(&c->uout);
        size_t n = buffer_put_some(&c->uout, buffer_head(&c->in), buffer_len(&c->in));
        buffer_consume(&c->in, n);
        c->x.bytes_in += n;
        buffer_reset_if_empty(&c->in);
    }
    if (buffer_len(&c->uin) > 0) {
        if (buffer_space(&c->out) < buffer_len(&c->uin))
            out_compact(c);
        size_t n = buffer_put_some(&c->out, buffer_head(&c->uin), buffer_len(&c->uin));
        buffer_consume(&c->uin, n);
        buffer_reset_if_empty(&c->uin);
    }
}

/* The response is out and the request is in: log, then keep-alive or close. */
static void finish_request(struct client *c)
{
    log_request(c);
    bool close = exchange_closes_after(&c->x, c->w->draining, (c->flags & CLIENT_F_EOF) != 0);
    request_reset(c);
    if (close) {
        c->state = CLIENT_ST_DRAIN;
        c->x.flags |= EXCHANGE_F_CLOSE_AFTER | EXCHANGE_F_LOGGED;
        return;
    }
    buffers_free(c);
    http1_parser_next(&c->req);
    c->idle_since = now_of(c);
    buffer_compact(&c->in);
    if (buffer_len(&c->in) > 0) {
        c->state = CLIENT_ST_HEAD;
        c->head_start = c->idle_since;
    } else {
        c->state = CLIENT_ST_IDLE;
    }
}

static void begin_linger(struct client *c)
{
    if (c->flags & CLIENT_F_LINGER)
        return;
    log_request(c);
    c->flags |= CLIENT_F_LINGER;
    shutdown(c->fd, SHUT_WR);
    c->linger_until = now_of(c) + LINGER_SECONDS;
    c->in.rpos = c->in.wpos = 0;
    buffers_free(c);
}

static void update_io(struct client *c)
{
    struct ev_loop *loop = c->w->loop;
    if (c->state == CLIENT_ST_CLOSED)
        return;
    bool head_pinned = c->state == CLIENT_ST_HEAD && c->req.in_head;
    bool in_room = buffer_space(&c->in) > 0 || (!head_pinned && c->in.rpos > 0);
    bool rd = !(c->flags & CLIENT_F_EOF) && in_room &&
              (c->state != CLIENT_ST_DRAIN || (c->flags & CLIENT_F_LINGER));
    if (rd && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!rd && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    bool wr = buffer_len(&c->out) > 0;
    if (wr && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!wr && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
    if (c->conn && c->conn->state == UPC_BUSY) {
        bool uin_room = buffer_space(&c->uin) > 0 || (!c->resp.in_head && c->uin.rpos > 0);
        bool urd = !(c->x.flags & EXCHANGE_F_UP_EOF) && uin_room &&
                   (c->state == CLIENT_ST_TUNNEL ||
                    (c->state == CLIENT_ST_FORWARD && !(c->x.flags & EXCHANGE_F_RESP_DONE)));
        bool uwr =
            buffer_len(&c->uout) > 0 && !(c->x.flags & (EXCHANGE_F_UP_EOF | EXCHANGE_F_UP_WFAIL));
        upstream_conn_want(c->conn, urd, uwr);
    }
}

/* Signature of everything a pass can change, to stop when a pass did nothing. */
static uint64_t progress_sig(const struct client *c)
{
    /* CLIENT_F_* and EXCHANGE_F_* use distinct bits: one OR covers both */
    return (uint64_t)c->state * 1000003u ^ (uint64_t)(c->flags | c->x.flags) * 7919u ^ c->in.rpos ^
           (c->in.wpos << 8) ^ (c->out.wpos << 16) ^ (c->out.rpos << 24) ^ (c->uin.rpos << 32) ^
           (c->uout.wpos << 40) ^ (c->uout.rpos << 48) ^ (uint64_t)(uintptr_t)c->conn;
}

/* Continue on the next loop iteration (zero-delay `defer` timer). */
static void client_defer(struct client *c)
{
    if (ev_is_active(&c->defer))
        return;
    ev_timer_set(&c->defer, 0, 0);
    ev_timer_start(c->w->loop, &c->defer);
}

static void client_run(struct client *c)
{
    int pass;
    for (pass = 0; pass < RUN_GUARD; pass++) {
        uint64_t before = progress_sig(c);
        switch (c->state) {
        case CLIENT_ST_IDLE:
            if (c->flags & CLIENT_F_EOF) {
                client_close(c);
                return;
            }
            if (buffer_len(&c->in) > 0) {
                c->state = CLIENT_ST_HEAD;
                c->head_start = now_of(c);
            }
            break;
        case CLIENT_ST_HEAD:
            pump_head(c);
            if (c->state == CLIENT_ST_HEAD && (c->flags & CLIENT_F_EOF)) {
                client_close(c); /* gave up mid-head (or never sent one) */
                return;
            }
            if (c->state == CLIENT_ST_UPSTREAM) {
                /* parse the body bytes already here before anything goes upstream: an
                 * invalid chunk in them rejects the request with nothing forwarded */
                pump_body(c);
                if (c->state == CLIENT_ST_UPSTREAM && !c->conn && !(c->uo.queued))
                    client_route(c);
            }
            break;
        case CLIENT_ST_UPSTREAM:
        case CLIENT_ST_FORWARD:
            if (!(c->x.flags & EXCHANGE_F_RESP_DONE) || c->conn)
                pump_body(c);
            if (c->state == CLIENT_ST_FORWARD && c->conn) {
                pump_response(c);
                if (c->conn && (c->x.flags & EXCHANGE_F_UP_EOF) && buffer_len(&c->uin) == 0 &&
                    c->state == CLIENT_ST_FORWARD)
                    upstream_eof(c);
            }
            if ((c->flags & CLIENT_F_EOF) && !(c->x.flags & EXCHANGE_F_REQ_DONE) &&
                (c->state == CLIENT_ST_FORWARD || c->state == CLIENT_ST_UPSTREAM) &&
                buffer_len(&c->in) == 0) {
                /* the client went away mid-request */
                client_close(c);
                return;
            }
            break;
        case CLIENT_ST_TUNNEL:
            pump_tunnel(c);
            break;
        case CLIENT_ST_DRAIN:
            break;
        case CLIENT_ST_CLOSED:
            return;
        }
        if (c->state == CLIENT_ST_CLOSED)
            return;
        client_flush(c);
        if (c->state == CLIENT_ST_CLOSED)
            return;
        upstream_flush(c);

        /* completions */
        if (c->state == CLIENT_ST_FORWARD && (c->x.flags & EXCHANGE_F_RESP_DONE) &&
            buffer_len(&c->out) == 0 &&
            (c->x.flags & (EXCHANGE_F_REQ_DONE | EXCHANGE_F_CLOSE_AFTER)))
            finish_request(c);
        if (c->state == CLIENT_ST_TUNNEL) {
            bool up_gone = (c->x.flags & EXCHANGE_F_UP_EOF) && buffer_len(&c->uin) == 0 &&
                           buffer_len(&c->out) == 0;
            bool cl_gone =
                (c->flags & CLIENT_F_EOF) && buffer_len(&c->in) == 0 && buffer_len(&c->uout) == 0;
            if (up_gone || cl_gone) {
                client_close(c);
                return;
            }
        }
        if (c->state == CLIENT_ST_DRAIN) {
            if (!(c->flags & CLIENT_F_LINGER) && buffer_len(&c->out) == 0) {
                if (c->conn)
                    drop_upstream(c);
                begin_linger(c);
            }
            if ((c->flags & CLIENT_F_LINGER) && (c->flags & CLIENT_F_EOF)) {
                client_close(c);
                return;
            }
        }
        if (progress_sig(c) == before)
            break;
    }
    if (pass == RUN_GUARD)
        client_defer(c); /* still progressing: yield to the loop, never wait for an event */
    update_io(c);
    refresh_timer(c);
}

/* ---------------------------------------------------------------- callbacks */

static void client_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = container_of(w, struct client, rio);
    client_read(c);
    client_run(c);
}

static void client_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = container_of(w, struct client, wio);
    client_run(c);
}

/* The attempt stops waiting for a slot (granted, failed or timed out). */
static void queue_done(struct client *c)
{
    if (!c->queued)
        return;
    c->queued = false;
    double waited = now_of(c) - c->up_start;
    metrics_queue_wait(c->w->metrics, waited > 0 ? (uint64_t)(waited * 1e6) : 0);
}

static void absorb_granted(struct client *c)
{
    if (c->uo.granted || c->uo.granted_err)
        queue_done(c);
    if (c->uo.granted) {
        struct upstream_conn *conn = c->uo.granted;
        c->uo.granted = NULL;
        c->up_start = now_of(c);
        if (conn->state == UPC_BUSY)
            client_attach(c, conn);
        else
            c->conn = conn;
    } else if (c->uo.granted_err) {
        const char *why = c->uo.granted_err;
        c->uo.granted_err = NULL;
        connect_failed(c, why);
    }
}

static void client_on_defer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = container_of(w, struct client, defer);
    absorb_granted(c);
    client_run(c);
}

static void client_on_upstream_slot(struct upstream_owner *o)
{
    client_defer(container_of(o, struct client, uo));
}

static void client_on_upstream_io(struct upstream_owner *o, int revents)
{
    struct client *c = container_of(o, struct client, uo);
    absorb_granted(c);
    struct upstream_conn *conn = c->conn;
    if (conn && conn->state == UPC_CONNECTING) {
        if (!(revents & EV_WRITE))
            return;
        const char *reason = NULL;
        if (upstream_connect_done(conn, &reason) == -1) {
            c->conn = NULL;
            connect_failed(c, reason);
        } else {
            client_attach(c, conn);
        }
    } else if (conn && (revents & EV_READ)) {
        upstream_read(c);
    }
    client_run(c);
}

static void client_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct client *c = container_of(w, struct client, timer);
    enum client_timeout which;
    ev_tstamp d = client_deadline(c, cur_cfg(c), &which);
    ev_tstamp now = ev_now(loop);
    if (which == CLIENT_TO_NONE)
        return;
    if (d > now + 0.0005) {
        /* fired early: activity moved the deadline; re-arm for the remainder */
        ev_timer_set(&c->timer, d - now, 0);
        ev_timer_start(loop, &c->timer);
        c->timer_at = d;
        return;
    }
    switch (which) {
    case CLIENT_TO_NONE:
        return;
    case CLIENT_TO_IDLE:
        client_close_for(c, c->w->draining ? REASON_SHUTTING_DOWN : REASON_IDLE_TIMEOUT);
        return;
    case CLIENT_TO_LINGER:
        client_close_for(c, REASON_LINGER_TIMEOUT);
        return;
    case CLIENT_TO_WRITE:
        client_reset(c, REASON_WRITE_TIMEOUT);
        return;
    case CLIENT_TO_HEADER:
        client_error(c, 408, "header_timeout");
        break;
    case CLIENT_TO_QUEUE:
        if (c->up)
            upstream_cancel_wait(c->up, &c->uo);
        queue_done(c);
        client_error(c, 503, "queue_timeout");
        break;
    case CLIENT_TO_CONNECT:
        connect_failed(c, "connect_timeout");
        break;
    case CLIENT_TO_READ:
        if (c->conn && !(c->x.flags & EXCHANGE_F_UP_READ)) {
            /* not one response byte: a head-phase failure (send if still writing) */
            enum retry_phase ph = exchange_failure_phase(&c->x, true, buffer_len(&c->uout) == 0);
            attempt_failed(c, ph, "read_timeout", HEALTH_FAIL, 504);
            break;
        }
        if (!(c->x.flags & EXCHANGE_F_HEAD_OK))
            attempt_end(c, HEALTH_FAIL, "read_timeout"); /* stalled inside the head */
        client_error(c, 504, "read_timeout");
        break;
    case CLIENT_TO_TOTAL:
        client_error(c, 504, "total_timeout");
        break;
    case CLIENT_TO_RATE_IN:
    case CLIENT_TO_RATE_OUT:
        if (!client_rate_short(c, cur_cfg(c), which)) {
            /* fast enough over this window: the next one starts now */
            if (which == CLIENT_TO_RATE_IN)
                rate_in_open(c, now);
            else
                rate_out_open(c, now);
            refresh_timer(c);
            return;
        }
        if (which == CLIENT_TO_RATE_OUT) {
            /* the client does not read fast enough: nothing more goes out */
            client_reset(c, REASON_CLIENT_TOO_SLOW);
            return;
        }
        client_error(c, 408, "body_too_slow"); /* slower than timeouts.min_rate */
        break;
    }
    if (c->state != CLIENT_ST_CLOSED)
        client_run(c);
}
