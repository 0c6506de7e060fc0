/* server: listeners and client connections of the scripted upstream, on one libev loop. */
#ifndef UPSTREAM_SERVER_H
#define UPSTREAM_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "route.h"

struct conn;

/* Per-listener options from the command line. */
struct listener_opts {
    int health_failing;     /* --health-fail: /health starts at 503 */
    enum fault_kind fault;  /* --fault: applied to every non-control request */
    uint64_t fault_ms;      /* FAULT_DELAY: added milliseconds */
    uint64_t idle_close_ms; /* --idle-close-ms: close idle keep-alive connections (0: never) */
};

/* One --listen address. Owned by its server; counters are what /stats reports. */
struct listener {
    ev_io io;                    /* accept readiness */
    ev_timer pause;              /* re-arms accepting after EMFILE/ENFILE */
    int fd;                      /* listening socket, -1 when closed */
    struct server *srv;          /* back pointer */
    char name[128];              /* --name, echoed in X-Upstream and /stats */
    char xup[160];               /* preformatted "X-Upstream: <name>\r\n" */
    size_t xup_len;              /* length of xup */
    int health_failing;          /* /health answers 503 */
    enum fault_kind fault;       /* --fault, /fault/KIND */
    uint64_t fault_ms;           /* FAULT_DELAY milliseconds */
    uint64_t idle_close_ms;      /* close a keep-alive connection idle this long (0: never) */
    uint64_t connections_total;  /* accepted since start or /stats/reset */
    uint64_t connections_active; /* currently open */
    uint64_t requests_total;     /* request heads parsed since start or /stats/reset */
};

/* The process: its loop, its listeners and every live connection. */
struct server {
    struct ev_loop *loop;       /* the one loop */
    struct listener *listeners; /* array of n_listeners, owned */
    size_t n_listeners;         /* count */
    struct conn *conns;         /* live connections (doubly linked), owned */
    struct conn *dead;          /* closed connections waiting to be freed by `reaper` */
    ev_prepare reaper;          /* frees `dead` before the loop blocks: never on their stack */
    ev_signal sigterm;          /* SIGTERM: stop the loop */
    ev_signal sigint;           /* SIGINT: stop the loop */
    int quiet;                  /* --quiet: no per-connection error logs */
};

/* Adds a listener for `addr` ("host:port", "[v6]:port"). `name` may be NULL (the address).
 * Returns 0, or -1 after logging why. Call before server_start(). */
int server_add_listener(struct server *srv, const char *addr, const char *name,
                        const struct listener_opts *opts);

/* Initialises `srv` on `loop`. */
void server_init(struct server *srv, struct ev_loop *loop, int quiet);

/* Starts accepting on every listener and the signal watchers. */
void server_start(struct server *srv);

/* Closes every connection and listener and frees them. */
void server_deinit(struct server *srv);

#endif
