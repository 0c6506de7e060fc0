#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "upstream.h"

#define ACCEPT_BATCH 64   /* accepts per readiness event, for fairness */
#define ACCEPT_POLL_S 0.1 /* paused: re-check the global count this often */

atomic_uint listener_clients;

int listener_bind_all(const struct config *cfg, int *fds, unsigned workers, char *err,
                      size_t errlen)
{
    const struct config_addr *a = &cfg->listen;
    unsigned i;
    for (i = 0; i < workers; i++)
        fds[i] = -1;
    if (workers > 1) {
        /* SO_REUSEPORT would happily share the port with another process of ours:
         * probe with an exclusive bind first so "address in use" is reported */
        int probe = socket(a->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe == -1)
            goto error;
        int one = 1;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->addr.ss_family == AF_INET6)
            setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(probe, (const struct sockaddr *)&a->addr, a->addrlen) == -1) {
            int e = errno;
            close(probe);
            errno = e;
            goto error;
        }
        close(probe);
    }
    for (i = 0; i < workers; i++) {
        int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd == -1)
            goto error;
        fds[i] = fd;
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1)
            goto error;
        /* one socket per worker; a single worker keeps the port exclusive */
        if (workers > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == -1)
            goto error;
        if (a->addr.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) == -1)
            goto error;
        if (listen(fd, 4096) == -1)
            goto error;
    }
    return 0;
error:
    snprintf(err, errlen, "%s:%d: listen: %s", cfg->path ? cfg->path : "?", a->line,
             errno == EADDRINUSE ? "address in use" : strerror(errno));
    for (i = 0; i < workers; i++)
        if (fds[i] != -1)
            close(fds[i]), fds[i] = -1;
    return -1;
}

/* ---------------------------------------------------------------- accept */

static uint64_t max_clients(const struct worker *w)
{
    uint64_t m = w->set->cfg->cfg->limits.max_client_connections;
    return m ? m : UINT64_MAX;
}

static void accept_pause(struct worker *w)
{
    if (w->accept_paused || w->lfd == -1)
        return;
    w->accept_paused = true;
    ev_io_stop(w->loop, &w->accept_w);
    ev_timer_set(&w->accept_poll, ACCEPT_POLL_S, ACCEPT_POLL_S);
    ev_timer_start(w->loop, &w->accept_poll);
    log_event(CONFIG_LOG_WARN, "accept_paused",
              json_pack("{s:i,s:I}", "worker", (int)w->id, "clients",
                        (json_int_t)atomic_load(&listener_clients)));
}

static void accept_resume(struct worker *w)
{
    if (!w->accept_paused || w->lfd == -1 || w->draining)
        return;
    w->accept_paused = false;
    ev_timer_stop(w->loop, &w->accept_poll);
    ev_io_start(w->loop, &w->accept_w);
    log_event(CONFIG_LOG_INFO, "accept_resumed",
              json_pack("{s:i,s:I}", "worker", (int)w->id, "clients",
                        (json_int_t)atomic_load(&listener_clients)));
}

static void worker_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(io, struct worker, accept_w);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (atomic_load(&listener_clients) >= max_clients(w)) {
            accept_pause(w);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(w->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_pause(w); /* out of descriptors: retry on the poll timer */
            return;              /* EAGAIN, ECONNABORTED, EINTR ... */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add(&listener_clients, 1);
        if (!client_new(w, fd, (struct sockaddr *)&ss))
            atomic_fetch_sub(&listener_clients, 1);
    }
}

static void worker_on_accept_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(t, struct worker, accept_poll);
    if (atomic_load(&listener_clients) < max_clients(w))
        accept_resume(w);
}

void worker_client_gone(struct worker *w)
{
    atomic_fetch_sub(&listener_clients, 1);
    if (w->accept_paused && atomic_load(&listener_clients) < max_clients(w))
        accept_resume(w);
}

/* ---------------------------------------------------------------- drain */

static void worker_close_listener(struct worker *w)
{
    ev_io_stop(w->loop, &w->accept_w);
    ev_timer_stop(w->loop, &w->accept_poll);
    if (w->lfd != -1)
        close(w->lfd);
    w->lfd = -1;
}

static void worker_on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(t, struct worker, drain_timer);
    while (w->clients)
        client_abort(w->clients);
}

static void worker_begin_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    worker_close_listener(w);
    upstream_set_retire(w->set); /* idle upstream conns close now */
    struct client *c = w->clients;
    while (c) {
        struct client *next = c->next;
        client_shutdown(c);
        c = next;
    }
    double s = (double)w->set->cfg->cfg->timeouts.shutdown_ms / 1000.0;
    ev_timer_set(&w->drain_timer, s, 0);
    ev_timer_start(w->loop, &w->drain_timer);
}

/* ---------------------------------------------------------------- main -> worker */

static void worker_take_config(struct worker *w)
{
    struct cfgref *cfg = atomic_exchange(&w->pending_cfg, NULL);
    if (!cfg)
        return;
    if (w->draining) {
        cfgref_release(cfg);
        return;
    }
    struct upstream_set *s = upstream_set_new(w, cfg);
    cfgref_release(cfg);
    if (!s)
        return; /* out of memory: keep the old set */
    struct upstream_set *old = w->set;
    w->set = s;
    w->cfg = s->cfg;
    upstream_set_retire(old);
    upstream_set_release(old);
}

static void worker_on_async(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, async);
    worker_take_config(w);
    if (atomic_load(&w->stop_requested))
        worker_begin_drain(w);
}

void worker_post_config(struct worker *w, struct cfgref *cfg)
{
    struct cfgref *old = atomic_exchange(&w->pending_cfg, cfg);
    cfgref_release(old);
    ev_async_send(w->loop, &w->async);
}

void worker_post_stop(struct worker *w)
{
    atomic_store(&w->stop_requested, true);
    ev_async_send(w->loop, &w->async);
}

/* ---------------------------------------------------------------- lifecycle */

static void worker_on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct worker *w = container_of(p, struct worker, reaper);
    while (w->dead_clients) {
        struct client *c = w->dead_clients;
        w->dead_clients = c->next;
        client_free(c);
    }
    upstream_reap(w);
    log_flush(w->alog);
    if (w->draining && w->n_clients == 0) {
        ev_timer_stop(loop, &w->drain_timer);
        ev_break(loop, EVBREAK_ALL);
    }
}

int worker_init(struct worker *w, unsigned id, struct ev_loop *loop, int lfd, struct cfgref *cfg)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->lfd = lfd;
    w->loop = loop ? loop : ev_loop_new(EVFLAG_AUTO);
    if (!w->loop)
        return -1;
    w->alog = calloc(1, sizeof *w->alog);
    w->set = upstream_set_new(w, cfg);
    if (!w->alog || !w->set)
        return -1;
    w->cfg = w->set->cfg;
    atomic_init(&w->pending_cfg, NULL);
    atomic_init(&w->stop_requested, false);
    util_rng_seed(&w->rng);
    ev_io_init(&w->accept_w, worker_on_accept, lfd, EV_READ);
    ev_timer_init(&w->accept_poll, worker_on_accept_poll, ACCEPT_POLL_S, ACCEPT_POLL_S);
    ev_timer_init(&w->drain_timer, worker_on_drain_timeout, 0, 0);
    ev_async_init(&w->async, worker_on_async);
    ev_prepare_init(&w->reaper, worker_on_prepare);
    ev_io_start(w->loop, &w->accept_w);
    ev_async_start(w->loop, &w->async);
    ev_prepare_start(w->loop, &w->reaper);
    return 0;
}

static void *worker_thread(void *arg)
{
    worker_run(arg);
    return NULL;
}

int worker_spawn(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_thread, w) == 0 ? 0 : -1;
}

void worker_run(struct worker *w)
{
    ev_run(w->loop, 0);
    /* drained: free what is left (the reaper may not have run after the last close) */
    worker_on_prepare(w->loop, &w->reaper, 0);
}

void worker_join_and_deinit(struct worker *w)
{
    if (w->id > 0)
        pthread_join(w->thread, NULL);
    while (w->clients)
        client_abort(w->clients);
    worker_on_prepare(w->loop, &w->reaper, 0);
    if (w->set) {
        upstream_set_retire(w->set);
        upstream_reap(w);
        upstream_set_release(w->set);
        w->set = NULL;
    }
    cfgref_release(atomic_exchange(&w->pending_cfg, NULL));
    worker_close_listener(w);
    ev_async_stop(w->loop, &w->async);
    ev_prepare_stop(w->loop, &w->reaper);
    if (w->alog)
        log_flush(w->alog);
    free(w->alog);
    w->alog = NULL;
    buffer_pool_drain(&w->pool_out);
    buffer_pool_drain(&w->pool_uin);
    buffer_pool_drain(&w->pool_uout);
    if (!ev_is_default_loop(w->loop))
        ev_loop_destroy(w->loop);
}
