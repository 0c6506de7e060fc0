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

#include "log.h"

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

static uint64_t max_clients(const struct listener *l)
{
    uint64_t m = l->w->cfg->cfg->limits.max_client_connections;
    return m ? m : UINT64_MAX;
}

static void accept_pause(struct listener *l)
{
    if (l->accept_paused || l->lfd == -1)
        return;
    l->accept_paused = true;
    ev_io_stop(l->w->loop, &l->accept_w);
    ev_timer_set(&l->accept_poll, ACCEPT_POLL_S, ACCEPT_POLL_S);
    ev_timer_start(l->w->loop, &l->accept_poll);
    log_event(CONFIG_LOG_WARN, "accept_paused",
              json_pack("{s:i,s:I}", "worker", (int)l->w->id, "clients",
                        (json_int_t)atomic_load(&listener_clients)));
}

static void accept_resume(struct listener *l)
{
    if (!l->accept_paused || l->lfd == -1 || l->w->draining)
        return;
    l->accept_paused = false;
    ev_timer_stop(l->w->loop, &l->accept_poll);
    ev_io_start(l->w->loop, &l->accept_w);
    log_event(CONFIG_LOG_INFO, "accept_resumed",
              json_pack("{s:i,s:I}", "worker", (int)l->w->id, "clients",
                        (json_int_t)atomic_load(&listener_clients)));
}

static void listener_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = container_of(io, struct listener, accept_w);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (atomic_load(&listener_clients) >= max_clients(l)) {
            accept_pause(l);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_pause(l); /* out of descriptors: retry on the poll timer */
            return;              /* EAGAIN, ECONNABORTED, EINTR ... */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add(&listener_clients, 1);
        if (l->on_accept(l->w, fd, (struct sockaddr *)&ss) == -1)
            atomic_fetch_sub(&listener_clients, 1);
    }
}

static void listener_on_accept_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = container_of(t, struct listener, accept_poll);
    if (atomic_load(&listener_clients) < max_clients(l))
        accept_resume(l);
}

void listener_conn_gone(struct listener *l)
{
    atomic_fetch_sub(&listener_clients, 1);
    if (l->accept_paused && atomic_load(&listener_clients) < max_clients(l))
        accept_resume(l);
}

void listener_start(struct listener *l, struct worker *w, int lfd, listener_accept_fn on_accept)
{
    memset(l, 0, sizeof *l);
    l->w = w;
    l->lfd = lfd;
    l->on_accept = on_accept;
    ev_io_init(&l->accept_w, listener_on_accept, lfd, EV_READ);
    ev_timer_init(&l->accept_poll, listener_on_accept_poll, ACCEPT_POLL_S, ACCEPT_POLL_S);
    ev_io_start(w->loop, &l->accept_w);
}

void listener_close(struct listener *l)
{
    if (!l->w)
        return;
    ev_io_stop(l->w->loop, &l->accept_w);
    ev_timer_stop(l->w->loop, &l->accept_poll);
    if (l->lfd != -1)
        close(l->lfd);
    l->lfd = -1;
}
