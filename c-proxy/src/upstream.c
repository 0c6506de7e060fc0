#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer_strategies.h"
#include "log.h"
#include "metrics.h"

/* ---------------------------------------------------------------- sets */

struct upstream_set *upstream_set_new(struct worker *w, struct cfgref *cfg)
{
    const struct config *c = cfg->cfg;
    struct upstream_set *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->w = w;
    s->n = c->n_upstreams;
    s->ups = calloc(s->n ? s->n : 1, sizeof *s->ups);
    s->peers = calloc(s->n ? s->n : 1, sizeof *s->peers);
    if (!s->ups || !s->peers)
        goto error;
    for (size_t i = 0; i < s->n; i++) {
        list_init(&s->ups[i].idle);
        list_init(&s->ups[i].waiters);
        s->ups[i].set = s;
        s->ups[i].cfg = &c->upstreams[i];
        s->ups[i].index = i;
        s->peers[i].weight = c->upstreams[i].weight ? c->upstreams[i].weight : 1;
        s->peers[i].name = c->upstreams[i].name; /* hash ring identity */
        /* the shared verdict for this name (NULL when out of memory: always healthy) */
        s->peers[i].health = health_state_get(c->upstreams[i].name, c->upstreams[i].addr.text);
        health_configure(s->peers[i].health, c);
    }
    if (balancer_init(&s->bal, balancer_ops_for(c->balancer), s->peers, s->n, cfg) == -1)
        goto error;
    s->cfg = cfgref_acquire(cfg);
    s->refs = 1;
    return s;
error:
    free(s->ups);
    free(s->peers);
    free(s);
    return NULL;
}

struct upstream_set *upstream_set_acquire(struct upstream_set *s)
{
    s->refs++;
    return s;
}

void upstream_set_release(struct upstream_set *s)
{
    if (!s || --s->refs > 0)
        return;
    balancer_deinit(&s->bal);
    cfgref_release(s->cfg);
    free(s->ups);
    free(s->peers);
    free(s);
}

void upstream_set_retire(struct upstream_set *s)
{
    s->retired = true;
    health_checker_stop(s->checker);
    s->checker = NULL;
    for (size_t i = 0; i < s->n; i++)
        while (!list_empty(&s->ups[i].idle))
            upstream_close(list_first_entry(&s->ups[i].idle, struct upstream_conn, idle_link));
}

int upstream_set_install(struct worker *w, struct cfgref *cfg)
{
    struct upstream_set *s = upstream_set_new(w, cfg);
    if (!s)
        return -1;
    struct upstream_set *old = w->set;
    w->set = s;
    w->cfg = s->cfg;
    if (w->id == 0 && !w->draining) {
        /* active checks run in one worker only: the verdicts are shared */
        struct health_state **states = calloc(s->n ? s->n : 1, sizeof *states);
        if (states) {
            for (size_t i = 0; i < s->n; i++)
                states[i] = s->peers[i].health;
            s->checker = health_checker_start(w->loop, cfg->cfg, states, s->n);
            free(states);
        }
    }
    if (old) {
        upstream_set_retire(old);
        upstream_set_release(old);
    }
    return 0;
}

void upstream_set_uninstall(struct worker *w)
{
    if (!w->set)
        return;
    upstream_set_retire(w->set);
    upstream_set_release(w->set);
    w->set = NULL;
}

void upstream_owner_init(struct upstream_owner *o, const struct upstream_owner_ops *ops)
{
    o->ops = ops;
    list_init(&o->wait_link);
    o->queued = false;
    o->granted = NULL;
    o->granted_err = NULL;
}

/* ---------------------------------------------------------------- conns */

/* The upstream's shared verdict and counters (health registry, every worker). */
static struct health_state *health_of(const struct upstream *u)
{
    return u->set->peers[u->index].health;
}

static void idle_unlink(struct upstream_conn *conn)
{
    list_del(&conn->idle_link);
    conn->up->n_idle--;
    health_stats_add(health_of(conn->up), HEALTH_STAT_IDLE, -1);
}

static void conn_on_read(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_write(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_idle_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* The reaper frees a CLOSED conn: its ref on the set goes with it. */
static void conn_free(struct worker_conn *wc)
{
    struct upstream_conn *conn = container_of(wc, struct upstream_conn, wc);
    upstream_set_release(conn->up->set);
    free(conn);
}

static void conn_never(struct worker_conn *wc)
{
    (void)wc; /* a conn is never on the worker's live list */
}

static const struct worker_conn_ops conn_wc_ops = {
    .shutdown = conn_never,
    .abort = conn_never,
    .free = conn_free,
};

/* A slot of u became free: give it to the first waiter, if any. */
static void wake_waiter(struct upstream *u, struct upstream_conn *reusable)
{
    if (list_empty(&u->waiters))
        return;
    struct upstream_owner *c = list_first_entry(&u->waiters, struct upstream_owner, wait_link);
    upstream_cancel_wait(u, c);
    c->granted = NULL;
    c->granted_err = NULL;
    if (reusable) {
        idle_unlink(reusable);
        ev_io_stop(u->set->w->loop, &reusable->rio);
        ev_timer_stop(u->set->w->loop, &reusable->idle_timer);
        reusable->state = UPC_BUSY;
        reusable->owner = c;
        u->n_open++;
        c->granted = reusable;
    } else {
        struct upstream_conn *conn = NULL;
        const char *reason = NULL;
        enum upstream_acquire_result r = upstream_acquire(u, c, &conn, &reason);
        if (r == UPSTREAM_QUEUED)
            return; /* back in the queue (cannot happen: a slot was just freed) */
        if (r == UPSTREAM_FAILED)
            c->granted_err = reason;
        else
            c->granted = conn; /* CONNECTING (or READY if the pool had one) */
    }
    c->ops->on_slot(c);
}

static enum upstream_acquire_result conn_connect(struct upstream *u, struct upstream_owner *c,
                                                 struct upstream_conn **out, const char **reason)
{
    struct worker *w = u->set->w;
    const struct config_addr *a = &u->cfg->addr;
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        *reason = "socket";
        return UPSTREAM_FAILED;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&a->addr, a->addrlen) == -1 && errno != EINPROGRESS) {
        *reason = errno == ECONNREFUSED ? "connect_refused" : "connect_error";
        close(fd);
        return UPSTREAM_FAILED;
    }
    struct upstream_conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        close(fd);
        *reason = "out_of_memory";
        return UPSTREAM_FAILED;
    }
    conn->up = u;
    conn->fd = fd;
    conn->state = UPC_CONNECTING;
    conn->owner = c;
    list_init(&conn->idle_link);
    ev_io_init(&conn->rio, conn_on_read, fd, EV_READ);
    ev_io_init(&conn->wio, conn_on_write, fd, EV_WRITE);
    ev_timer_init(&conn->idle_timer, conn_on_idle_timeout, 0, 0);
    ev_io_start(w->loop, &conn->wio);
    upstream_set_acquire(u->set);
    u->n_open++;
    metrics_add(w->metrics, METRICS_CONN_UPSTREAM, 1);
    *out = conn;
    return UPSTREAM_CONNECTING;
}

/* A pooled conn the upstream closed (or reset, or sent unasked bytes on) while it
 * sat idle, found before the loop delivered the event: one MSG_PEEK look, no
 * byte is consumed (contract 6: checked when taken from the pool). */
static bool conn_stale(const struct upstream_conn *conn)
{
    char b;
    ssize_t n = util_recv(conn->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == -1)
        return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    return true; /* 0: EOF; > 0: bytes nobody asked for */
}

enum upstream_acquire_result upstream_acquire(struct upstream *u, struct upstream_owner *c,
                                              struct upstream_conn **conn, const char **reason)
{
    const struct config *cfg = u->set->cfg->cfg;
    *conn = NULL;
    while (!list_empty(&u->idle)) {
        /* rio stays on (a BUSY conn is read for its client, which turns it off when
         * it must) and the idle timer stays armed, ignored while BUSY: no watcher
         * stop/start pair per request (libev "be smart about timeouts") */
        struct upstream_conn *x = list_first_entry(&u->idle, struct upstream_conn, idle_link);
        if (conn_stale(x)) {
            upstream_close(x); /* not an attempt: take the next one, or connect */
            u->stale++;
            continue;
        }
        idle_unlink(x);
        x->state = UPC_BUSY;
        x->owner = c;
        u->n_open++;
        *conn = x;
        return UPSTREAM_READY;
    }
    uint64_t max = cfg->limits.upstream_max_connections;
    if (max && (uint64_t)u->n_open + u->n_idle >= max) {
        list_add_tail(&c->wait_link, &u->waiters);
        u->n_waiting++;
        c->queued = true;
        return UPSTREAM_QUEUED;
    }
    return conn_connect(u, c, conn, reason);
}

int upstream_connect_done(struct upstream_conn *conn, const char **reason)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
        err = errno;
    if (err != 0) {
        *reason = err == ECONNREFUSED ? "connect_refused" : "connect_error";
        upstream_close(conn);
        return -1;
    }
    ev_io_stop(conn->up->set->w->loop, &conn->wio);
    conn->state = UPC_BUSY;
    return 0;
}

void upstream_conn_want(struct upstream_conn *conn, bool rd, bool wr)
{
    struct ev_loop *loop = conn->up->set->w->loop;
    if (conn->state != UPC_BUSY)
        return;
    if (rd && !ev_is_active(&conn->rio))
        ev_io_start(loop, &conn->rio);
    else if (!rd && ev_is_active(&conn->rio))
        ev_io_stop(loop, &conn->rio);
    if (wr && !ev_is_active(&conn->wio))
        ev_io_start(loop, &conn->wio);
    else if (!wr && ev_is_active(&conn->wio))
        ev_io_stop(loop, &conn->wio);
}

void upstream_release(struct upstream_conn *conn, bool reusable)
{
    struct upstream *u = conn->up;
    struct upstream_set *s = u->set;
    const struct config *cfg = s->cfg->cfg;
    if (conn->state != UPC_BUSY || !reusable || s->retired || s->w->draining ||
        (u->n_idle >= cfg->limits.upstream_idle_connections && list_empty(&u->waiters))) {
        upstream_close(conn);
        return;
    }
    struct ev_loop *loop = s->w->loop;
    /* Both watchers are usually where they must be already (wio off: the request
     * was all written; rio on: it stays on while lent out, see upstream_acquire):
     * test first, a libev call each way costs more than the test. The stop also
     * runs for a pending watcher, whose event it must drop, as ev_io_stop() does. */
    if (ev_is_active(&conn->wio) || ev_is_pending(&conn->wio))
        ev_io_stop(loop, &conn->wio);
    conn->exchanges++;
    conn->owner = NULL;
    conn->state = UPC_IDLE;
    u->n_open--;
    list_add(&conn->idle_link, &u->idle);
    u->n_idle++;
    health_stats_add(health_of(u), HEALTH_STAT_IDLE, 1);
    if (!ev_is_active(&conn->rio))
        ev_io_start(loop, &conn->rio);
    conn->idle_since = ev_now(loop);
    if (!ev_is_active(&conn->idle_timer)) {
        ev_timer_set(&conn->idle_timer, (double)cfg->timeouts.idle_ms / 1000.0, 0);
        ev_timer_start(loop, &conn->idle_timer);
    } /* else it fires early and conn_on_idle_timeout() re-arms for the remainder */
    if (!list_empty(&u->waiters))
        wake_waiter(u, conn);
}

void upstream_close(struct upstream_conn *conn)
{
    if (conn->state == UPC_CLOSED)
        return;
    struct upstream *u = conn->up;
    struct worker *w = u->set->w;
    ev_io_stop(w->loop, &conn->rio);
    ev_io_stop(w->loop, &conn->wio);
    ev_timer_stop(w->loop, &conn->idle_timer);
    if (conn->state == UPC_IDLE)
        idle_unlink(conn);
    else
        u->n_open--;
    conn->state = UPC_CLOSED;
    conn->owner = NULL;
    metrics_dec(w->metrics, METRICS_CONN_UPSTREAM);
    if (conn->fd != -1)
        close(conn->fd);
    conn->fd = -1;
    worker_graveyard_add(w, &conn->wc, &conn_wc_ops);
    if (!list_empty(&u->waiters))
        wake_waiter(u, NULL);
}

void upstream_cancel_wait(struct upstream *u, struct upstream_owner *c)
{
    if (!c->queued)
        return;
    list_del(&c->wait_link);
    u->n_waiting--;
    c->queued = false;
}

/* ---------------------------------------------------------------- callbacks */

static void conn_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct upstream_conn *conn = container_of(w, struct upstream_conn, rio);
    if (conn->state == UPC_IDLE) {
        /* the upstream closed it, or sent bytes nobody asked for: never reuse */
        upstream_close(conn);
        return;
    }
    if (conn->owner)
        conn->owner->ops->on_io(conn->owner, EV_READ);
}

static void conn_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct upstream_conn *conn = container_of(w, struct upstream_conn, wio);
    if (conn->owner)
        conn->owner->ops->on_io(conn->owner, EV_WRITE);
}

static void conn_on_idle_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct upstream_conn *conn = container_of(w, struct upstream_conn, idle_timer);
    if (conn->state != UPC_IDLE)
        return; /* armed during an earlier idle spell; upstream_release() re-arms */
    ev_tstamp left = conn->idle_since + (double)conn->up->set->cfg->cfg->timeouts.idle_ms / 1000.0 -
                     ev_now(loop);
    if (left > 0.0005) {
        /* armed during an earlier idle spell: wait for the rest of this one */
        ev_timer_set(w, left, 0);
        ev_timer_start(loop, w);
        return;
    }
    upstream_close(conn);
}

/* ---------------------------------------------------------------- queries */

void upstream_info(const struct upstream_set *s, size_t i, struct upstream_info *out)
{
    const struct upstream *u = &s->ups[i];
    const struct health_state *h = s->peers[i].health;
    out->name = u->cfg->name;
    out->address = u->cfg->addr.text;
    out->weight = s->peers[i].weight;
    out->state = health_is_drained(h) ? "drain" : "active";
    out->healthy = health_is_healthy(h);
    out->active = s->peers[i].active;
    out->idle = u->n_idle;
    out->requests = u->requests;
    out->fails = u->fails;
    out->last_error = h ? health_last_error(h) : "";
}

struct upstream *upstream_find(const struct upstream_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ups[i].cfg->name, name) == 0)
            return &s->ups[i];
    return NULL;
}

int upstream_set_drain(const struct upstream_set *s, const char *name, bool drain)
{
    struct upstream *u = upstream_find(s, name);
    if (!u)
        return -1;
    health_set_drain(s->peers[u->index].health, drain);
    return 0;
}
