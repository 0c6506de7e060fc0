/* health: passive + active upstream health, shared by every worker thread.
 * Twin: py-proxy/pyproxy/health.py. Rules and events: health.h. */
#include "health.h"

#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define HEALTH_ADDR_MAX 128  /* an address text, as struct config_addr's */
#define HEALTH_RESP_MAX 1024 /* bytes of a check response read to find the status line */

/* Which checks hold the upstream down (bits of health_state.down). */
#define HEALTH_DOWN_PASSIVE 0x1 /* max_fails within fail_timeout */
#define HEALTH_DOWN_ACTIVE 0x2  /* fall consecutive failed checks */

struct health_state {
    struct health_counters stats;     /* FIRST: health_stats_add() (health.h) */
    char *name;                       /* upstream name, the registry key; immutable */
    size_t id;                        /* creation order (0, 1, ...): the metrics label */
    char address[HEALTH_ADDR_MAX];    /* address text at creation; immutable */
    struct health_state *next;        /* registry list, under registry_mu */
    _Atomic unsigned max_fails;       /* config health.max_fails; 0 = passive off */
    _Atomic int64_t fail_timeout;     /* config health.fail_timeout, ms */
    _Atomic unsigned rise;            /* config health.check.rise */
    _Atomic unsigned fall;            /* config health.check.fall */
    _Atomic bool sole;                /* the only upstream of its config: never down */
    _Atomic bool drained;             /* operator: no new attempts */
    _Atomic unsigned down;            /* HEALTH_DOWN_* bits; 0 = up */
    _Atomic bool probe_claimed;       /* passive: the one probe after fail_timeout is out */
    _Atomic unsigned fails;           /* passive: failures in the current window */
    _Atomic int64_t window_start;     /* passive: first failure of the window, ms */
    _Atomic int64_t down_until;       /* passive: no attempt before this, ms */
    _Atomic unsigned checks_ok;       /* active: consecutive successes */
    _Atomic unsigned checks_failed;   /* active: consecutive failures */
    _Atomic(const char *) last_error; /* last failure reason, static storage */
};

_Static_assert(offsetof(struct health_state, stats) == 0,
               "health_stats_add() reaches the counters through the state pointer");

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct health_state *registry; /* every state, newest first */
static size_t registry_n;             /* states created: the next id */

static int64_t to_ms(double now)
{
    return (int64_t)(now * 1000.0);
}

/* ---- events ---- */

static void event(struct health_state *h, bool up, const char *reason)
{
    health_stats_add(h, up ? HEALTH_STAT_TO_UP : HEALTH_STAT_TO_DOWN, 1);
    log_event(up ? CONFIG_LOG_INFO : CONFIG_LOG_WARN, up ? "upstream_up" : "upstream_down",
              json_pack("{s:s,s:s}", "upstream", h->name, "reason", reason));
}

/* Set bit; the thread that takes the state from up to down logs it. */
static void mark_down(struct health_state *h, unsigned bit, const char *reason)
{
    if (atomic_fetch_or(&h->down, bit) == 0)
        event(h, false, reason);
}

/* Clear bits; the thread that takes the state from down to up logs it. */
static void mark_up(struct health_state *h, unsigned bits, const char *reason)
{
    unsigned old = atomic_fetch_and(&h->down, ~bits);

    if ((old & bits) != 0 && (old & ~bits) == 0)
        event(h, true, reason);
}

/* ---- registry ---- */

struct health_state *health_state_get(const char *name, const char *address)
{
    struct health_state *h;

    pthread_mutex_lock(&registry_mu);
    for (h = registry; h != NULL; h = h->next)
        if (strcmp(h->name, name) == 0)
            goto out;
    if ((h = calloc(1, sizeof *h)) == NULL || (h->name = strdup(name)) == NULL) {
        free(h);
        h = NULL;
        goto out;
    }
    snprintf(h->address, sizeof h->address, "%s", address != NULL ? address : "");
    atomic_init(&h->max_fails, 3);
    atomic_init(&h->fail_timeout, 10000);
    atomic_init(&h->rise, 2);
    atomic_init(&h->fall, 2);
    atomic_init(&h->last_error, "");
    h->id = registry_n++;
    h->next = registry;
    registry = h;
out:
    pthread_mutex_unlock(&registry_mu);
    return h;
}

void health_configure(struct health_state *h, const struct config *cfg)
{
    if (h == NULL)
        return;
    atomic_store(&h->max_fails, cfg->health.max_fails);
    atomic_store(&h->fail_timeout, (int64_t)cfg->health.fail_timeout_ms);
    atomic_store(&h->rise, cfg->health.check.rise);
    atomic_store(&h->fall, cfg->health.check.fall);
    atomic_store(&h->sole, cfg->n_upstreams == 1);
    if (cfg->n_upstreams == 1)
        mark_up(h, HEALTH_DOWN_PASSIVE | HEALTH_DOWN_ACTIVE, "reconfigured");
    else if (cfg->health.max_fails == 0)
        mark_up(h, HEALTH_DOWN_PASSIVE, "reconfigured");
    if (!cfg->health.check.enabled)
        mark_up(h, HEALTH_DOWN_ACTIVE, "reconfigured");
}

void health_registry_free(void)
{
    pthread_mutex_lock(&registry_mu);
    while (registry != NULL) {
        struct health_state *h = registry;
        registry = h->next;
        free(h->name);
        free(h);
    }
    registry_n = 0;
    pthread_mutex_unlock(&registry_mu);
}

/* ---- data path ---- */

bool health_available(const struct health_state *h, double now)
{
    unsigned down;

    if (h == NULL)
        return true;
    if (atomic_load(&h->drained))
        return false;
    down = atomic_load(&h->down);
    if (down & HEALTH_DOWN_ACTIVE)
        return false;
    if (down & HEALTH_DOWN_PASSIVE)
        return to_ms(now) >= atomic_load(&h->down_until) && !atomic_load(&h->probe_claimed);
    return true;
}

void health_attempt_begin(struct health_state *h, double now)
{
    if (h == NULL)
        return;
    if ((atomic_load(&h->down) & HEALTH_DOWN_PASSIVE) && to_ms(now) >= atomic_load(&h->down_until))
        atomic_store(&h->probe_claimed, true);
}

/* A failure while up: count it in the window, mark down at max_fails. */
static void passive_fail(struct health_state *h, const char *reason, int64_t now)
{
    unsigned max = atomic_load(&h->max_fails), n;
    int64_t window = atomic_load(&h->fail_timeout);

    if (max == 0 || atomic_load(&h->sole))
        return;
    if (atomic_load(&h->fails) > 0 && now - atomic_load(&h->window_start) > window) {
        atomic_store(&h->fails, 0); /* the old window closed: this failure opens a new one */
    }
    n = atomic_fetch_add(&h->fails, 1) + 1;
    if (n == 1)
        atomic_store(&h->window_start, now);
    if (n < max)
        return;
    atomic_store(&h->fails, 0);
    atomic_store(&h->down_until, now + window);
    atomic_store(&h->probe_claimed, false);
    mark_down(h, HEALTH_DOWN_PASSIVE, reason);
}

void health_attempt_end(struct health_state *h, enum health_outcome o, const char *reason,
                        double now)
{
    int64_t t;

    if (h == NULL)
        return;
    /* the common case (a success while up) returns before any time arithmetic */
    if (o == HEALTH_FAIL)
        atomic_store(&h->last_error, reason != NULL ? reason : "");
    if (!(atomic_load(&h->down) & HEALTH_DOWN_PASSIVE)) {
        if (o == HEALTH_FAIL)
            passive_fail(h, reason != NULL ? reason : "", to_ms(now));
        return;
    }
    t = to_ms(now);
    /* Passively down. Results before down_until come from attempts that started
     * before the upstream was marked: they neither extend nor end the down time. */
    if (t < atomic_load(&h->down_until))
        return;
    switch (o) {
    case HEALTH_OK:
        atomic_store(&h->fails, 0);
        atomic_store(&h->probe_claimed, false);
        mark_up(h, HEALTH_DOWN_PASSIVE, "probe_succeeded");
        break;
    case HEALTH_FAIL:
        atomic_store(&h->down_until, t + atomic_load(&h->fail_timeout));
        atomic_store(&h->probe_claimed, false);
        break;
    case HEALTH_NEUTRAL:
        atomic_store(&h->probe_claimed, false); /* the next request probes */
        break;
    }
}

/* ---- active checks, operator state, queries ---- */

void health_check_result(struct health_state *h, bool ok, const char *reason, double now)
{
    unsigned n;

    (void)now;
    if (h == NULL)
        return;
    if (ok) {
        atomic_store(&h->checks_failed, 0);
        n = atomic_fetch_add(&h->checks_ok, 1) + 1;
        if (n >= atomic_load(&h->rise)) {
            atomic_store(&h->checks_ok, atomic_load(&h->rise)); /* saturate */
            mark_up(h, HEALTH_DOWN_ACTIVE, "check_passed");
        }
        return;
    }
    atomic_store(&h->last_error, reason != NULL ? reason : "");
    atomic_store(&h->checks_ok, 0);
    n = atomic_fetch_add(&h->checks_failed, 1) + 1;
    if (n >= atomic_load(&h->fall)) {
        atomic_store(&h->checks_failed, atomic_load(&h->fall));
        if (!atomic_load(&h->sole))
            mark_down(h, HEALTH_DOWN_ACTIVE, reason != NULL ? reason : "");
    }
}

void health_set_drain(struct health_state *h, bool drain)
{
    if (h != NULL)
        atomic_store(&h->drained, drain);
}

bool health_is_drained(const struct health_state *h)
{
    return h != NULL && atomic_load(&h->drained);
}

bool health_is_healthy(const struct health_state *h)
{
    return h == NULL || atomic_load(&h->down) == 0;
}

const char *health_last_error(const struct health_state *h)
{
    return h != NULL ? atomic_load(&h->last_error) : "";
}

const char *health_name(const struct health_state *h)
{
    return h != NULL ? h->name : "";
}

void health_stats_get(const struct health_state *h, struct health_stats *out)
{
    int64_t v[HEALTH_STAT_COUNT] = {0};

    if (h != NULL)
        for (int i = 0; i < HEALTH_STAT_COUNT; i++)
            v[i] = atomic_load_explicit(&h->stats.v[i], memory_order_relaxed);
    /* a gauge read between two workers' updates can be off by one, never below 0 */
    out->requests = v[HEALTH_STAT_REQUESTS] > 0 ? (uint64_t)v[HEALTH_STAT_REQUESTS] : 0;
    out->fails = v[HEALTH_STAT_FAILS] > 0 ? (uint64_t)v[HEALTH_STAT_FAILS] : 0;
    out->active = v[HEALTH_STAT_ACTIVE] > 0 ? (uint64_t)v[HEALTH_STAT_ACTIVE] : 0;
    out->idle = v[HEALTH_STAT_IDLE] > 0 ? (uint64_t)v[HEALTH_STAT_IDLE] : 0;
    out->to_up = v[HEALTH_STAT_TO_UP] > 0 ? (uint64_t)v[HEALTH_STAT_TO_UP] : 0;
    out->to_down = v[HEALTH_STAT_TO_DOWN] > 0 ? (uint64_t)v[HEALTH_STAT_TO_DOWN] : 0;
}

size_t health_id(const struct health_state *h)
{
    return h != NULL ? h->id : SIZE_MAX;
}

size_t health_registry_names(const char **names, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&registry_mu);
    for (const struct health_state *h = registry; h != NULL; h = h->next)
        if (h->id < cap) {
            names[h->id] = h->name; /* states live until health_registry_free() */
            if (h->id + 1 > n)
                n = h->id + 1;
        }
    pthread_mutex_unlock(&registry_mu);
    return n;
}

/* ---- active checker ---- */

/* One upstream's periodic check. */
struct health_probe {
    struct health_checker *hc;    /* owner */
    struct health_state *state;   /* where results go */
    struct sockaddr_storage addr; /* upstream address */
    socklen_t addrlen;            /* its length */
    char *req;                    /* the request, built once */
    size_t req_len;               /* its length */
    size_t sent;                  /* bytes of req written in this probe */
    char resp[HEALTH_RESP_MAX];   /* response bytes read in this probe */
    size_t got;                   /* their count */
    int fd;                       /* probe in flight, or -1 */
    ev_timer tick;                /* every interval */
    ev_timer deadline;            /* timeout of the probe in flight */
    ev_io io;                     /* connect/write, then read */
};

struct health_checker {
    struct ev_loop *loop;         /* the worker's loop */
    size_t n;                     /* probes */
    struct health_probe probes[]; /* one per upstream */
};

static void probe_end(struct health_probe *p, bool ok, const char *reason)
{
    struct ev_loop *loop = p->hc->loop;

    ev_io_stop(loop, &p->io);
    ev_timer_stop(loop, &p->deadline);
    if (p->fd != -1) {
        close(p->fd);
        p->fd = -1;
    }
    health_check_result(p->state, ok, reason, ev_now(loop));
}

/* "HTTP/1.x NNN" at the start of the response: 2xx/3xx is a success. */
static void probe_parse(struct health_probe *p)
{
    const char *r = p->resp;
    int status;

    if (p->got < 12 || memcmp(r, "HTTP/1.", 7) != 0 || r[7] < '0' || r[7] > '9' || r[8] != ' ' ||
        r[9] < '0' || r[9] > '9' || r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9' ||
        (p->got > 12 && r[12] != ' ' && r[12] != '\r' && r[12] != '\n')) {
        probe_end(p, false, "check_bad_response");
        return;
    }
    status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
    if (status >= 200 && status < 400)
        probe_end(p, true, NULL);
    else
        probe_end(p, false, "check_bad_status");
}

static void probe_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct health_probe *p = (struct health_probe *)((char *)w - offsetof(struct health_probe, io));
    ssize_t n;

    (void)revents;
    if (p->sent < p->req_len) {
        int err = 0;
        socklen_t len = sizeof err;

        if (p->sent == 0 &&
            (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0)) {
            probe_end(p, false, "check_connect_failed");
            return;
        }
        n = send(p->fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                probe_end(p, false, p->sent == 0 ? "check_connect_failed" : "check_closed");
            return;
        }
        p->sent += (size_t)n;
        if (p->sent == p->req_len) {
            ev_io_stop(loop, &p->io);
            ev_io_set(&p->io, p->fd, EV_READ);
            ev_io_start(loop, &p->io);
        }
        return;
    }
    n = recv(p->fd, p->resp + p->got, sizeof p->resp - p->got, 0);
    if (n == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            probe_end(p, false, "check_closed");
        return;
    }
    if (n == 0) {
        if (p->got == 0)
            probe_end(p, false, "check_closed");
        else
            probe_parse(p);
        return;
    }
    p->got += (size_t)n;
    if (memchr(p->resp, '\n', p->got) != NULL || p->got == sizeof p->resp)
        probe_parse(p);
}

static void probe_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct health_probe *p =
        (struct health_probe *)((char *)w - offsetof(struct health_probe, deadline));

    (void)loop;
    (void)revents;
    probe_end(p, false, "check_timeout");
}

static void probe_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct health_probe *p =
        (struct health_probe *)((char *)w - offsetof(struct health_probe, tick));

    (void)revents;
    if (p->fd != -1)
        return; /* the last one is still running (timeout > interval) */
    p->sent = 0;
    p->got = 0;
    ev_timer_again(loop, &p->deadline);
    p->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd == -1) {
        probe_end(p, false, "check_connect_failed");
        return;
    }
    if (connect(p->fd, (struct sockaddr *)&p->addr, p->addrlen) == -1 && errno != EINPROGRESS) {
        probe_end(p, false, "check_connect_failed");
        return;
    }
    ev_io_set(&p->io, p->fd, EV_WRITE);
    ev_io_start(loop, &p->io);
}

struct health_checker *health_checker_start(struct ev_loop *loop, const struct config *cfg,
                                            struct health_state *const *states, size_t n)
{
    const struct config_health_check *chk = &cfg->health.check;
    struct health_checker *hc;

    if (!chk->enabled || n == 0 || n > cfg->n_upstreams)
        return NULL;
    if ((hc = calloc(1, sizeof *hc + n * sizeof hc->probes[0])) == NULL)
        return NULL;
    hc->loop = loop;
    hc->n = n;
    for (size_t i = 0; i < n; i++)
        hc->probes[i].fd = -1; /* health_checker_stop() on a partly built checker */
    for (size_t i = 0; i < n; i++) {
        struct health_probe *p = &hc->probes[i];
        const struct config_addr *a = &cfg->upstreams[i].addr;
        int len = snprintf(NULL, 0, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                           chk->path, a->text);

        p->hc = hc;
        p->state = states[i];
        memcpy(&p->addr, &a->addr, sizeof p->addr);
        p->addrlen = a->addrlen;
        if (len < 0 || (p->req = malloc((size_t)len + 1)) == NULL) {
            health_checker_stop(hc);
            return NULL;
        }
        snprintf(p->req, (size_t)len + 1,
                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", chk->path, a->text);
        p->req_len = (size_t)len;
        ev_io_init(&p->io, probe_on_io, -1, EV_WRITE);
        ev_timer_init(&p->deadline, probe_on_deadline, 0., (double)chk->timeout_ms / 1000.0);
        ev_timer_init(&p->tick, probe_on_tick, 0., (double)chk->interval_ms / 1000.0);
    }
    for (size_t i = 0; i < n; i++)
        ev_timer_start(loop, &hc->probes[i].tick);
    return hc;
}

void health_checker_stop(struct health_checker *hc)
{
    if (hc == NULL)
        return;
    for (size_t i = 0; i < hc->n; i++) {
        struct health_probe *p = &hc->probes[i];

        ev_timer_stop(hc->loop, &p->tick);
        ev_timer_stop(hc->loop, &p->deadline);
        ev_io_stop(hc->loop, &p->io);
        if (p->fd != -1)
            close(p->fd);
        free(p->req);
    }
    free(hc);
}
