/* listener: the listening sockets, accept, and the worker threads.
 *
 * Twin: py-proxy/pyproxy/listener.py (workers are processes there).
 *
 * workers: N gives N threads, each with its own libev loop, its own
 * SO_REUSEPORT listening socket (the kernel spreads connections), its own
 * upstream set (pools, balancer) and its own access-log buffer. Worker 0 runs
 * on the main thread's default loop, which also owns the signal watchers.
 * Threads share only: the current config (struct cfgref, atomically counted),
 * the global client counter (limits.max_client_connections) and the log sinks.
 * Main talks to a worker through one ev_async: a pending config (reload) and
 * the stop request (shutdown).
 *
 * Accept never refuses: at max_client_connections the accept watcher stops
 * (event accept_paused) and restarts once the count is below the limit again
 * (accept_resumed); a paused worker also polls every 100 ms because clients
 * may close on another worker.
 */
#ifndef TWINPROXY_LISTENER_H
#define TWINPROXY_LISTENER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "buffer.h"
#include "log.h"
#include "util.h"

struct client;
struct upstream_conn;
struct upstream_set;

struct worker {
    unsigned id;                          /* 0 .. workers-1 */
    struct ev_loop *loop;                 /* this worker's loop (default loop for 0) */
    pthread_t thread;                     /* valid for id > 0 */
    int lfd;                              /* listening socket, -1 once closed */
    ev_io accept_w;                       /* readable listening socket */
    ev_timer accept_poll;                 /* while paused: re-check the global count */
    bool accept_paused;                   /* at max_client_connections */
    struct upstream_set *set;             /* current upstream set (one ref) */
    struct cfgref *cfg;                   /* config of the current set (borrowed via set) */
    _Atomic(struct cfgref *) pending_cfg; /* reload: handed over by main (one ref) */
    atomic_bool stop_requested;           /* shutdown: set by main */
    ev_async async;                       /* main -> worker wakeup */
    bool draining;                        /* shutdown in progress: no accept, no keep-alive */
    ev_timer drain_timer;                 /* timeouts.shutdown */
    struct client *clients;               /* all live clients (doubly linked) */
    unsigned n_clients;                   /* live clients on this worker */
    struct client *dead_clients;          /* graveyard, freed by the reaper */
    struct upstream_conn *dead_conns;     /* graveyard, freed by the reaper */
    ev_prepare reaper;                    /* each iteration: free graveyard, flush log */
    struct log_buf *alog;                 /* access-log buffer */
    struct util_rng rng;                  /* request ids */
    struct buffer_pool pool_out;          /* freed client `out` buffers, for reuse */
    struct buffer_pool pool_uin;          /* freed `uin` buffers */
    struct buffer_pool pool_uout;         /* freed `uout` buffers */
};

/* Bind cfg->listen for `workers` sockets (SO_REUSEPORT). On failure returns -1
 * with "FILE:LINE: listen: ..." in err. fds receives `workers` sockets. */
int listener_bind_all(const struct config *cfg, int *fds, unsigned workers, char *err,
                      size_t errlen);

/* Set up worker w (not started). loop: NULL to create one. Takes a ref on cfg. */
int worker_init(struct worker *w, unsigned id, struct ev_loop *loop, int lfd, struct cfgref *cfg);
/* Run worker w's loop on a new thread (id > 0). */
int worker_spawn(struct worker *w);
/* Run w's loop on the calling thread until it has drained. */
void worker_run(struct worker *w);
/* Wait for a spawned worker, then free everything it holds. */
void worker_join_and_deinit(struct worker *w);

/* Called by main (any thread): hand a new config over (one ref moves in). */
void worker_post_config(struct worker *w, struct cfgref *cfg);
/* Called by main (any thread): start draining. */
void worker_post_stop(struct worker *w);

/* A client of w closed (bookkeeping for the accept limit). */
void worker_client_gone(struct worker *w);

/* Global count of client connections across workers. */
extern atomic_uint listener_clients;

#endif
