/* listener: the listening sockets and accept.
 *
 * Twin: py-proxy/pyproxy/listener.py (`Listener`, given a protocol factory).
 *
 * workers: N gives N SO_REUSEPORT listening sockets, all bound by main before any
 * worker starts (so a bind error is a config error), one per worker: the kernel
 * spreads connections. A struct listener watches one socket on its worker's loop
 * and hands every accepted socket to the accept callback its creator injects
 * (main passes client_new): the listener knows nothing about clients.
 *
 * Accept never refuses: at max_client_connections the accept watcher stops
 * (event accept_paused) and restarts once the count is below the limit again
 * (accept_resumed, from listener_conn_gone()); a paused listener also polls every
 * 100 ms because clients may close on another worker.
 */
#ifndef TWINPROXY_LISTENER_H
#define TWINPROXY_LISTENER_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"
#include "worker.h"

/* Take over an accepted socket fd (non-blocking). Returns 0, or -1 when the
 * socket was refused (and closed): it then does not count as a client. */
typedef int (*listener_accept_fn)(struct worker *w, int fd, const struct sockaddr *peer);

struct listener {
    struct worker *w;             /* the loop it accepts on (borrowed) */
    int lfd;                      /* listening socket (owned), -1 once closed */
    ev_io accept_w;               /* readable listening socket */
    ev_timer accept_poll;         /* while paused: re-check the global count */
    bool accept_paused;           /* at max_client_connections */
    listener_accept_fn on_accept; /* injected: who takes accepted sockets */
};

/* Bind cfg->listen for `workers` sockets (SO_REUSEPORT). On failure returns -1
 * with "FILE:LINE: listen: ..." in err. fds receives `workers` sockets. */
int listener_bind_all(const struct config *cfg, int *fds, unsigned workers, char *err,
                      size_t errlen);

/* Watch lfd (ownership moves in) on w's loop; accepted sockets go to on_accept. */
void listener_start(struct listener *l, struct worker *w, int lfd, listener_accept_fn on_accept);
/* Stop accepting and close the socket (idempotent). */
void listener_close(struct listener *l);
/* A client left (any worker's): the global count goes down, accept may resume. */
void listener_conn_gone(struct listener *l);

/* Global count of client connections across workers. */
extern atomic_uint listener_clients;

#endif
