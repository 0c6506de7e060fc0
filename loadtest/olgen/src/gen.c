#include "gen.h"

#include <errno.h>
#include <ev.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "backlog.h"
#include "request.h"
#include "schedule.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define SWEEP_MAX_US 10000     /* timeouts and reconnects are checked at least this often */
#define STARTUP_WAIT_S 2.0     /* longest wait for the first connects before the schedule */
#define BACKOFF_MIN_US 10000   /* first reconnect delay after a failed connect */
#define BACKOFF_MAX_US 1000000 /* reconnect delay cap */
#define DRAIN_GRACE_US 1000000 /* past end + timeout, stop even if something is pending */
#define CLOSE_WAIT_US 200000   /* after "Connection: close", wait this long for the FIN */
#define RBUF_SIZE (64 * 1024)  /* one shared read buffer: llhttp keeps no pointers into it */

enum conn_state {
    CONN_DOWN = 0,   /* no socket; reconnects at retry_at (or via the reconnect stack) */
    CONN_CONNECTING, /* non-blocking connect in progress, EV_WRITE armed */
    CONN_OPEN,       /* established; EV_READ armed, EV_WRITE too while output is pending */
};

#define CONN_F_READY 0x01     /* queued in gen->ready (may be stale: re-checked on pop) */
#define CONN_F_CLOSE 0x02     /* close after this read: peer said close, or --close */
#define CONN_F_WRITING 0x04   /* EV_WRITE armed for pending output */
#define CONN_F_SPENT 0x08     /* --close: this connection has carried its one request */
#define CONN_F_INTERIM 0x10   /* the response being parsed is a 1xx, not the answer */
#define CONN_F_RECONNECT 0x20 /* queued in gen->reconnect */

struct gen;

struct conn {
    ev_io io;              /* the socket watcher; embedded, recovered with container_of */
    struct gen *gen;       /* owner */
    int fd;                /* socket, -1 when CONN_DOWN */
    enum conn_state state; /* see enum conn_state */
    unsigned flags;        /* CONN_F_* */
    llhttp_t parser;       /* response parser, reset on every connect */
    unsigned status;       /* status code of the response being parsed */
    size_t wpending;       /* bytes of accepted requests not yet written */
    uint64_t *inflight;    /* ring of intended send times, gen->depth slots (gen's slab) */
    unsigned ihead;        /* oldest in-flight slot */
    unsigned n;            /* requests in flight (written or pending write) */
    uint64_t since_us;     /* CONN_CONNECTING: when the connect started;
                              CONN_F_CLOSE: when the last response ended */
    uint64_t retry_at;     /* CONN_DOWN after a failed connect: earliest retry */
    uint64_t backoff_us;   /* delay before the next retry after a failed connect */
};

struct gen {
    struct ev_loop *loop;         /* the default loop */
    const struct config *cfg;     /* the run's configuration; not owned */
    struct gen_result *res;       /* counters and samples being filled; not owned */
    struct request req;           /* preformatted request bytes; owned */
    struct sockaddr_storage addr; /* resolved target */
    socklen_t addrlen;            /* bytes of addr in use */
    llhttp_settings_t settings;   /* parser callbacks, shared by all connections */
    struct conn *conns;           /* the pool; owned */
    unsigned nconns;              /* connections in the pool */
    unsigned depth;               /* max requests in flight per connection */
    uint64_t *slots;              /* nconns * depth in-flight slots; owned */
    struct conn **ready;          /* ring of connections that can take a request; owned */
    unsigned rhead;               /* oldest entry of ready */
    unsigned rlen;                /* entries in ready */
    struct conn **reconnect;      /* stack of connections to reconnect now; owned */
    unsigned nreconnect;          /* entries in reconnect */
    unsigned nconnecting;         /* connections in CONN_CONNECTING */
    struct backlog backlog;       /* due, unsent requests; owned */
    struct schedule sched;        /* intended send times */
    int tfd;                      /* timerfd at the next intended send time */
    uint64_t last_tick;           /* when the timerfd last fired (tick rate limit) */
    ev_io tick;                   /* watches tfd */
    ev_timer sweep;               /* timeouts, backed-off reconnects, end of run */
    ev_timer startup;             /* caps the wait for the first connects */
    ev_prepare prepare;           /* reconnects queued during the iteration */
    ev_signal sigint;             /* end early, still report */
    ev_signal sigterm;            /* same */
    int started;                  /* the schedule is running */
    int stopped;                  /* the run is over (ends the --spin loop) */
    int sched_done;               /* every request of the run has been scheduled */
    uint64_t t0;                  /* schedule start, monotonic microseconds */
    uint64_t measure;             /* measurement window start: t0 + warmup */
    uint64_t end;                 /* window end: nothing is scheduled at or after it */
    uint64_t pending;             /* measured requests not yet completed/lost/timed out */
    char rbuf[RBUF_SIZE];         /* shared read buffer */
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- results ---------------------------------------------------------------------------- */

static void gen_add_sample(struct gen *g, uint64_t intended, uint64_t latency, unsigned status)
{
    if (stats_add(&g->res->samples, intended - g->measure, latency, status) == -1)
        g->res->samples_lost++;
}

/* A response completed at `done` for the request intended at `intended`. */
static void gen_record(struct gen *g, uint64_t intended, uint64_t done, unsigned status)
{
    struct gen_result *r = g->res;
    if (done >= g->measure && done < g->end)
        r->completed_in_window++; /* throughput: what the server delivered in the window */
    if (intended < g->measure)
        return; /* warm-up */
    r->completed++;
    g->pending--;
    if (status >= 200 && status <= 599)
        r->status[status / 100 - 2]++;
    else
        r->status_other++;
    if (status < 200 || status > 299)
        r->non_2xx++;
    gen_add_sample(g, intended, stats_latency_us(intended, done), status);
}

/* The request intended at `intended` was abandoned at `now` after --timeout. Its
 * latency is at least now - intended: kept as a sample so the tail shows it. */
static void gen_record_timeout(struct gen *g, uint64_t intended, uint64_t now)
{
    if (intended < g->measure)
        return;
    g->res->timeouts++;
    g->pending--;
    gen_add_sample(g, intended, stats_latency_us(intended, now), 0);
}

/* ---- ready queue and reconnect stack --------------------------------------------------- */

static void ready_push(struct gen *g, struct conn *c)
{
    if (c->flags & CONN_F_READY)
        return;
    c->flags |= CONN_F_READY;
    g->ready[(g->rhead + g->rlen) % g->nconns] = c;
    g->rlen++;
}

static struct conn *ready_pop(struct gen *g)
{
    struct conn *c = g->ready[g->rhead];
    /* nconns >= 1: gen_run refuses 0 (the analyzer loses that across the loop) */
    g->rhead = (g->rhead + 1) % g->nconns; // NOLINT(clang-analyzer-core.DivideZero)
    g->rlen--;
    c->flags &= ~CONN_F_READY;
    return c;
}

static int conn_can_take(const struct conn *c)
{
    return c->state == CONN_OPEN && c->n < c->gen->depth &&
           !(c->flags & (CONN_F_CLOSE | CONN_F_SPENT));
}

static void reconnect_push(struct gen *g, struct conn *c)
{
    if (c->flags & CONN_F_RECONNECT)
        return;
    c->flags |= CONN_F_RECONNECT;
    g->reconnect[g->nreconnect++] = c;
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_set_events(struct conn *c, int events)
{
    if (ev_is_active(&c->io) && c->io.fd == c->fd &&
        (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->gen->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->gen->loop, &c->io);
}

/* Stop watcher -> close fd -> reset state. The conn stays in the pool (never freed
 * during the run), so this is safe on the conn's own callback stack. Whatever was in
 * flight must have been accounted for by the caller. */
static void conn_close(struct conn *c)
{
    ev_io_stop(c->gen->loop, &c->io);
    if (c->state == CONN_CONNECTING)
        c->gen->nconnecting--;
    if (c->fd != -1)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_DOWN;
    c->flags &= CONN_F_READY | CONN_F_RECONNECT; /* queue memberships outlive the socket */
    c->since_us = 0;
    c->wpending = 0;
    c->ihead = 0;
    c->n = 0;
}

/* The connection failed: every measured request in flight on it is lost, the socket
 * is closed, and a new connection is made at the next loop iteration. */
static void conn_fail(struct conn *c, uint64_t *counter)
{
    struct gen *g = c->gen;
    (*counter)++;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->inflight[(c->ihead + i) % g->depth] >= g->measure) {
            g->res->lost++;
            g->pending--;
        }
    }
    conn_close(c);
    reconnect_push(g, c);
}

static void conn_connected(struct conn *c)
{
    struct gen *g = c->gen;
    if (c->state == CONN_CONNECTING)
        g->nconnecting--;
    c->state = CONN_OPEN;
    c->since_us = 0;
    c->backoff_us = BACKOFF_MIN_US;
    llhttp_init(&c->parser, HTTP_RESPONSE, &g->settings);
    c->parser.data = c;
    g->res->connects++;
    conn_set_events(c, EV_READ);
    ready_push(g, c);
}

static void conn_connect_failed(struct conn *c)
{
    conn_close(c);
    c->gen->res->sock_connect++;
    c->retry_at = now_us() + c->backoff_us;
    c->backoff_us = c->backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : c->backoff_us * 2;
}

/* Start a non-blocking connect; on loopback it often completes at once. */
static void conn_connect(struct conn *c)
{
    struct gen *g = c->gen;
    int one = 1;
    c->fd = socket(g->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1)
        goto error;
    /* Requests are written whole; Nagle would only hold them back. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&g->addr, g->addrlen) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS)
        goto error;
    c->state = CONN_CONNECTING;
    c->since_us = now_us();
    g->nconnecting++;
    conn_set_events(c, EV_WRITE);
    return;

error:
    conn_connect_failed(c);
}

/* Write pending request bytes. -1 if the connection failed (already handled). */
static int conn_flush(struct conn *c)
{
    struct gen *g = c->gen;
    size_t total = g->req.len * g->req.depth;
    while (c->wpending > 0) {
        /* Pending bytes are always a suffix of the request repeated `depth` times. */
        ssize_t w = send(c->fd, g->req.wire + (total - c->wpending), c->wpending,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!(c->flags & CONN_F_WRITING)) {
                    c->flags |= CONN_F_WRITING;
                    conn_set_events(c, EV_READ | EV_WRITE);
                }
                return 0;
            }
            conn_fail(c, &g->res->sock_write);
            return -1;
        }
        c->wpending -= (size_t)w;
    }
    if (c->flags & CONN_F_WRITING) {
        c->flags &= ~CONN_F_WRITING;
        conn_set_events(c, EV_READ);
    }
    return 0;
}

/* Put one request (intended at t) on the connection. */
static void conn_send(struct conn *c, uint64_t t)
{
    struct gen *g = c->gen;
    c->inflight[(c->ihead + c->n) % g->depth] = t;
    c->n++;
    if (t >= g->measure)
        g->res->sent++;
    if (g->cfg->close_mode)
        c->flags |= CONN_F_SPENT;
    c->wpending += g->req.len;
    if (!(c->flags & CONN_F_WRITING))
        conn_flush(c);
}

static int conn_on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->status = (unsigned)llhttp_get_status_code(p);
    if (c->status >= 100 && c->status < 200 && c->status != 101)
        c->flags |= CONN_F_INTERIM;
    /* 1: a response to HEAD has no body whatever its headers say. */
    return c->gen->req.head ? 1 : 0;
}

static int conn_on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct gen *g = c->gen;
    if (c->flags & CONN_F_INTERIM) {
        c->flags &= ~CONN_F_INTERIM;
        return 0; /* 100 Continue and friends: the real response follows */
    }
    if (c->n == 0)
        return -1; /* a response nobody asked for: parse error */
    uint64_t t = c->inflight[c->ihead];
    c->ihead = (c->ihead + 1) % g->depth;
    c->n--;
    gen_record(g, t, now_us(), c->status);
    if (g->cfg->close_mode || !llhttp_should_keep_alive(p)) {
        c->flags |= CONN_F_CLOSE;
        return HPE_PAUSED; /* closed by conn_read once llhttp_execute has returned */
    }
    return 0;
}

/* The connection ends without error: reconnect; anything still in flight is lost. */
static void conn_end(struct conn *c)
{
    if (c->n > 0) {
        conn_fail(c, &c->gen->res->sock_closed);
        return;
    }
    conn_close(c);
    reconnect_push(c->gen, c);
}

static void conn_read(struct conn *c)
{
    struct gen *g = c->gen;
    ssize_t r = recv(c->fd, g->rbuf, sizeof(g->rbuf), 0);
    if (r > 0) {
        llhttp_errno_t e = llhttp_execute(&c->parser, g->rbuf, (size_t)r);
        if (e == HPE_PAUSED && (c->flags & CONN_F_CLOSE)) {
            /* Wait for the server's FIN rather than closing first: the side that
             * closes first holds TIME_WAIT, and churn (--close) would exhaust the
             * client's ephemeral ports. The sweep closes it if no FIN comes. */
            if (c->n > 0)
                conn_fail(c, &g->res->sock_closed); /* pipelined behind a close */
            else if (c->since_us == 0)
                c->since_us = now_us();
        } else if (e != HPE_OK)
            conn_fail(c, &g->res->sock_parse);
        else if (conn_can_take(c))
            ready_push(g, c);
        return;
    }
    if (r == 0) {
        /* EOF completes a response delimited by the close; a truncated one stays in
         * flight and is lost in conn_end. */
        if (!(c->flags & CONN_F_CLOSE))
            llhttp_finish(&c->parser);
        conn_end(c);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    conn_fail(c, &g->res->sock_read);
}

static void gen_dispatch(struct gen *g);

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, io);
    (void)loop;
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0)
            conn_connect_failed(c);
        else
            conn_connected(c);
    } else {
        if ((revents & EV_WRITE) && conn_flush(c) == -1)
            return;
        if (revents & EV_READ)
            conn_read(c);
    }
    gen_dispatch(c->gen);
}

/* ---- scheduling ------------------------------------------------------------------------ */

/* Hand queued requests, oldest first, to connections that can take one. Connections
 * are served round-robin, so with --pipeline a request goes to an idle connection
 * before it is stacked behind another one. */
static void gen_dispatch(struct gen *g)
{
    uint64_t t;
    while (g->backlog.len > 0 && g->rlen > 0) {
        struct conn *c = ready_pop(g);
        if (!conn_can_take(c))
            continue; /* stale entry: the connection failed or filled up meanwhile */
        backlog_pop(&g->backlog, &t);
        conn_send(c, t);
        if (conn_can_take(c))
            ready_push(g, c);
    }
}

/* Queue every request whose intended time has come. */
static void gen_schedule_due(struct gen *g, uint64_t now)
{
    struct gen_result *r = g->res;
    uint64_t t = g->t0 + schedule_peek(&g->sched);
    if (g->sched_done || t > now)
        return;
    if (t >= g->measure && now - t > r->max_lag_us)
        r->max_lag_us = now - t; /* the timer fired late or the loop was busy */
    while (t <= now) {
        if (backlog_push(&g->backlog, t) == -1) {
            fprintf(stderr, "olgen: out of memory for the backlog\n");
            exit(2);
        }
        if (t >= g->measure) {
            r->scheduled++;
            g->pending++;
        }
        schedule_advance(&g->sched);
        t = g->t0 + schedule_peek(&g->sched);
        if (t >= g->end) {
            g->sched_done = 1;
            break;
        }
    }
    if (now >= g->measure && g->backlog.len > r->max_backlog)
        r->max_backlog = g->backlog.len;
}

/* Point the timerfd at the next intended send time (absolute: no drift), but no sooner
 * than --tick-us after the last tick: each timerfd_settime reprograms the hardware
 * timer, which is most of the CPU at high rates (a VM exit under virtualisation).
 * Requests due in between go out together, and the wait counts in their latency. */
static void gen_arm(struct gen *g)
{
    struct itimerspec its;
    if (g->cfg->spin)
        return; /* the spin loop checks the schedule itself */
    memset(&its, 0, sizeof(its));
    if (!g->sched_done) {
        uint64_t t = g->t0 + schedule_peek(&g->sched);
        if (t < g->last_tick + g->cfg->tick_us)
            t = g->last_tick + g->cfg->tick_us;
        its.it_value.tv_sec = (time_t)(t / 1000000u);
        its.it_value.tv_nsec = (long)(t % 1000000u) * 1000;
    }
    /* Setting the timer also clears its expiry count, so the fd needs no read(). */
    timerfd_settime(g->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void gen_on_tick(struct ev_loop *loop, ev_io *w, int revents)
{
    struct gen *g = container_of(w, struct gen, tick);
    (void)loop;
    (void)revents;
    g->last_tick = now_us();
    gen_schedule_due(g, g->last_tick);
    gen_dispatch(g);
    gen_arm(g);
}

static void gen_begin(struct gen *g)
{
    if (g->started)
        return;
    g->started = 1;
    ev_timer_stop(g->loop, &g->startup);
    g->t0 = now_us();
    g->measure = g->t0 + (uint64_t)(g->cfg->warmup_s * 1e6);
    g->end = g->measure + (uint64_t)(g->cfg->duration_s * 1e6);
    schedule_init(&g->sched, g->cfg->rate, g->cfg->poisson, g->cfg->seed);
    gen_schedule_due(g, now_us());
    gen_dispatch(g);
    gen_arm(g);
    ev_timer_start(g->loop, &g->sweep);
}

static void gen_on_startup(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    gen_begin(container_of(w, struct gen, startup));
}

/* Before each poll: reconnect what failed or closed during this iteration. Deferred to
 * here so no connection is reopened on its own callback stack. */
static void gen_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct gen *g = container_of(w, struct gen, prepare);
    (void)loop;
    (void)revents;
    while (g->nreconnect > 0) {
        struct conn *c = g->reconnect[--g->nreconnect];
        c->flags &= ~CONN_F_RECONNECT;
        if (c->state == CONN_DOWN)
            conn_connect(c);
    }
    if (!g->started && g->nconnecting == 0)
        gen_begin(g);
    gen_dispatch(g);
}

static void gen_stop(struct gen *g)
{
    g->stopped = 1;
    ev_break(g->loop, EVBREAK_ALL);
}

/* Every few ms: abandon requests older than --timeout, retry failed connects, end. */
static void gen_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gen *g = container_of(w, struct gen, sweep);
    uint64_t now = now_us(), t, timeout = g->cfg->timeout_us;
    (void)loop;
    (void)revents;

    while (backlog_peek(&g->backlog, &t) == 0 && now - t >= timeout) {
        backlog_pop(&g->backlog, &t);
        gen_record_timeout(g, t, now);
    }
    for (unsigned i = 0; i < g->nconns; i++) {
        struct conn *c = &g->conns[i];
        if (c->state == CONN_OPEN && c->n > 0 && now - c->inflight[c->ihead] >= timeout) {
            /* HTTP/1.1 cannot cancel one request: the connection goes, and with it
             * everything pipelined behind the stuck request. */
            for (unsigned k = 0; k < c->n; k++)
                gen_record_timeout(g, c->inflight[(c->ihead + k) % g->depth], now);
            conn_close(c);
            reconnect_push(g, c);
        } else if (c->state == CONN_OPEN && (c->flags & CONN_F_CLOSE) && c->since_us != 0 &&
                   now - c->since_us >= CLOSE_WAIT_US) {
            conn_end(c); /* the server said close but keeps the connection open */
        } else if (c->state == CONN_CONNECTING && now - c->since_us >= timeout) {
            conn_connect_failed(c);
        } else if (c->state == CONN_DOWN && !(c->flags & CONN_F_RECONNECT) && now >= c->retry_at) {
            reconnect_push(g, c);
        }
    }
    if (g->sched_done && g->pending == 0)
        gen_stop(g);
    else if (now >= g->end + timeout + DRAIN_GRACE_US) {
        g->res->timeouts += g->pending; /* should not happen: the sweep expires them */
        g->pending = 0;
        gen_stop(g);
    }
}

static void gen_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct gen *g = w->data;
    (void)loop;
    g->res->interrupted = 1;
    gen_stop(g);
}

/* ---- setup ----------------------------------------------------------------------------- */

static int gen_resolve(struct gen *g)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(g->cfg->target.host, g->cfg->target.port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "olgen: cannot resolve %s: %s\n", g->cfg->target.host, gai_strerror(rc));
        return -1;
    }
    memcpy(&g->addr, ai->ai_addr, ai->ai_addrlen);
    g->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static void raise_fd_limit(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int gen_run(const struct config *cfg, struct gen_result *res)
{
    const char *why;
    struct gen *g = calloc(1, sizeof(*g));
    int rc = -1;

    memset(res, 0, sizeof(*res));
    if (g == NULL) {
        fprintf(stderr, "olgen: out of memory\n");
        return -1;
    }
    g->cfg = cfg;
    g->res = res;
    g->tfd = -1;
    g->nconns = cfg->connections;
    g->depth = cfg->pipeline;
    if (g->nconns == 0 || g->depth == 0) { /* config.c refuses both; the ring needs >= 1 */
        fprintf(stderr, "olgen: connections and pipeline must be >= 1\n");
        free(g);
        return -1;
    }
    backlog_init(&g->backlog);
    if (request_build(&g->req, &cfg->target, cfg->method, cfg->headers, cfg->nheaders,
                      cfg->body_bytes, cfg->close_mode, g->depth, &why) == -1) {
        fprintf(stderr, "olgen: %s\n", why);
        goto error;
    }
    if (gen_resolve(g) == -1)
        goto error;

    /* Size the sample store for the whole run up front (Poisson: plus slack). */
    uint64_t expect = schedule_count_before(cfg->rate, (uint64_t)(cfg->duration_s * 1e6));
    expect += expect / 8 + 1024;
    if (expect > (64u << 20))
        expect = 64u << 20;
    g->conns = calloc(g->nconns, sizeof(*g->conns));
    g->slots = calloc((size_t)g->nconns * g->depth, sizeof(*g->slots));
    g->ready = calloc(g->nconns, sizeof(*g->ready));
    g->reconnect = calloc(g->nconns, sizeof(*g->reconnect));
    if (g->conns == NULL || g->slots == NULL || g->ready == NULL || g->reconnect == NULL ||
        stats_init(&res->samples, (size_t)expect) == -1) {
        fprintf(stderr, "olgen: out of memory\n");
        goto error;
    }
    g->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g->tfd == -1) {
        perror("olgen: timerfd_create");
        goto error;
    }
    g->loop = ev_default_loop(EVBACKEND_EPOLL);
    if (g->loop == NULL) {
        fprintf(stderr, "olgen: cannot initialise libev (epoll)\n");
        goto error;
    }
    raise_fd_limit(g->nconns + 64);
    signal(SIGPIPE, SIG_IGN);
    /* Wake-ups at the requested nanosecond, not up to 50 us later (default slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    llhttp_settings_init(&g->settings);
    g->settings.on_headers_complete = conn_on_headers_complete;
    g->settings.on_message_complete = conn_on_message_complete;

    ev_io_init(&g->tick, gen_on_tick, g->tfd, EV_READ);
    ev_io_start(g->loop, &g->tick);
    double sweep_s =
        (double)(cfg->timeout_us / 4 < SWEEP_MAX_US ? cfg->timeout_us / 4 : SWEEP_MAX_US) / 1e6;
    if (sweep_s < 0.001)
        sweep_s = 0.001;
    ev_timer_init(&g->sweep, gen_on_sweep, sweep_s, sweep_s);
    ev_timer_init(&g->startup, gen_on_startup, STARTUP_WAIT_S, 0);
    ev_timer_start(g->loop, &g->startup);
    ev_prepare_init(&g->prepare, gen_on_prepare);
    ev_prepare_start(g->loop, &g->prepare);
    ev_signal_init(&g->sigint, gen_on_signal, SIGINT);
    g->sigint.data = g;
    ev_signal_start(g->loop, &g->sigint);
    ev_signal_init(&g->sigterm, gen_on_signal, SIGTERM);
    g->sigterm.data = g;
    ev_signal_start(g->loop, &g->sigterm);

    for (unsigned i = 0; i < g->nconns; i++) {
        struct conn *c = &g->conns[i];
        c->gen = g;
        c->fd = -1;
        c->inflight = &g->slots[(size_t)i * g->depth];
        c->backoff_us = BACKOFF_MIN_US;
        ev_init(&c->io, conn_on_io);
        conn_connect(c);
    }

    if (!cfg->spin) {
        ev_run(g->loop, 0);
    } else {
        /* --spin: poll without sleeping and check the schedule on every pass. Burns
         * the core, but no wake-up latency and no timer programming. */
        while (!g->stopped) {
            ev_run(g->loop, EVRUN_NOWAIT);
            if (g->started && !g->sched_done &&
                g->t0 + schedule_peek(&g->sched) <= (g->last_tick = now_us())) {
                gen_schedule_due(g, g->last_tick);
                gen_dispatch(g);
            }
        }
    }
    rc = 0;

    for (unsigned i = 0; i < g->nconns; i++)
        conn_close(&g->conns[i]);
    ev_io_stop(g->loop, &g->tick);
    ev_timer_stop(g->loop, &g->sweep);
    ev_timer_stop(g->loop, &g->startup);
    ev_prepare_stop(g->loop, &g->prepare);
    ev_signal_stop(g->loop, &g->sigint);
    ev_signal_stop(g->loop, &g->sigterm);
    goto out;

error:
    stats_deinit(&res->samples);
out:
    if (g->tfd != -1)
        close(g->tfd);
    free(g->conns);
    free(g->slots);
    free(g->ready);
    free(g->reconnect);
    backlog_deinit(&g->backlog);
    request_deinit(&g->req);
    free(g);
    return rc;
}
