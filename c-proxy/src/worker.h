/* worker: one event loop and everything that lives on it.
 *
 * Twin: py-proxy/pyproxy/worker.py (`Worker`; workers are processes there).
 *
 * A worker owns its libev loop, the list of its live connections, the graveyard
 * (closed objects freed by the reaper once per loop iteration, never on their own
 * callback stack: Redis freeClientAsync), the exchange buffer pools, the access-log
 * buffer, the request-id generator, the draining state and the main -> worker
 * mailbox (one ev_async: a pending config, the stop request).
 *
 * It knows connections only through an embedded struct worker_conn and its ops
 * table {shutdown, abort, free}; it knows the upstream set only as a pointer.
 * What happens around it is injected by its creator (main) through struct
 * worker_hooks: building a new upstream set for a posted config, closing the
 * listening socket when draining starts, resuming accept when a connection left.
 * So worker.c includes neither client.h nor upstream.h nor listener.h.
 *
 * Worker 0 runs on the main thread's default loop (which also owns the signal
 * watchers); workers 1..N-1 run on threads of their own (worker_spawn).
 */
#ifndef TWINPROXY_WORKER_H
#define TWINPROXY_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "buffer.h"
#include "list.h"
#include "log.h"
#include "util.h"

struct worker;
struct worker_conn;
struct upstream_set;
struct ratelimit_table;
struct metrics_slot;

/* What the worker may ask of a connection it holds. */
struct worker_conn_ops {
    /* draining started: close now if idle, else close after the current exchange */
    void (*shutdown)(struct worker_conn *wc);
    /* shutdown timeout / teardown: close now (worker_conn_bury() must follow) */
    void (*abort)(struct worker_conn *wc);
    /* free a buried object (the reaper); never called on the object's own callback stack */
    void (*free)(struct worker_conn *wc);
};

/* Embedded in every object the worker lists (clients) or frees (also upstream conns). */
struct worker_conn {
    struct list_head link;             /* the worker's conns list, then its graveyard */
    const struct worker_conn_ops *ops; /* the object's callbacks */
};

/* Callbacks of the worker's creator; every member may be NULL. */
struct worker_hooks {
    /* a posted config arrived (reload): install a new upstream set; one ref of cfg is
     * lent for the call */
    void (*on_config)(struct worker *w, struct cfgref *cfg);
    /* draining starts: stop accepting, retire the upstream set (before conns are shut) */
    void (*on_drain)(struct worker *w);
    /* a live connection was buried (the global client count went down) */
    void (*on_conn_gone)(struct worker *w);
    /* teardown, every connection gone: release the upstream set */
    void (*on_deinit)(struct worker *w);
    /* drained, on the worker's thread: may its loop end now? (NULL: yes) Worker 0's
     * loop also takes the process's signals: it waits for the others */
    bool (*may_end)(struct worker *w);
    /* the loop ended (on the worker's thread) */
    void (*on_end)(struct worker *w);
};

struct worker {
    unsigned id;                          /* 0 .. workers-1 */
    struct ev_loop *loop;                 /* this worker's loop (default loop for 0) */
    pthread_t thread;                     /* valid for id > 0 */
    const struct worker_hooks *hooks;     /* the creator's callbacks (borrowed) */
    struct upstream_set *set;             /* current upstream set (one ref), set by the hooks */
    struct ratelimit_table *rl;           /* rate-limit table shared by every worker (main's),
                                             NULL: rate_limit not configured */
    struct metrics_slot *metrics;         /* this worker's metrics slot (main's); NULL: none */
    struct cfgref *cfg;                   /* config of the current set (borrowed via set) */
    _Atomic(struct cfgref *) pending_cfg; /* reload: handed over by main (one ref) */
    atomic_bool stop_requested;           /* shutdown: set by main */
    atomic_bool abort_requested;          /* second SIGTERM/SIGINT: close everything now */
    ev_async async;                       /* main -> worker wakeup */
    bool draining;                        /* shutdown in progress: no accept, no keep-alive */
    ev_timer drain_timer;                 /* timeouts.shutdown */
    struct list_head conns;               /* live connections (struct worker_conn.link) */
    unsigned n_conns;                     /* live connections on this worker */
    struct list_head graveyard;           /* buried objects, freed by the reaper */
    ev_prepare reaper;                    /* each iteration: free graveyard, flush log */
    unsigned requests_in_flight;          /* exchanges routed to upstreams now (retry budget) */
    unsigned retries_in_flight;           /* attempts after a request's first, now (budget) */
    struct log_buf *alog;                 /* access-log buffer */
    struct util_rng rng;                  /* request ids */
    struct buffer_pool pool_out;          /* freed client `out` buffers, for reuse */
    struct buffer_pool pool_uin;          /* freed `uin` buffers */
    struct buffer_pool pool_uout;         /* freed `uout` buffers */
};

/* Set up worker w (not started): loop NULL creates one. The caller then installs
 * the first upstream set (w->set, w->cfg: upstream_set_install()). hooks may be
 * NULL (unit tests). Returns 0 or -1. */
int worker_init(struct worker *w, unsigned id, struct ev_loop *loop,
                const struct worker_hooks *hooks);
/* Run worker w's loop on a new thread (id > 0). Returns 0 or -1. */
int worker_spawn(struct worker *w);
/* Run w's loop on the calling thread until it has drained. */
void worker_run(struct worker *w);
/* Wait for a spawned worker, abort what is left, call hooks->on_deinit, free
 * everything the worker holds. */
void worker_join_and_deinit(struct worker *w);

/* Called by main (any thread): hand a new config over (one ref moves in). */
void worker_post_config(struct worker *w, struct cfgref *cfg);
/* Called by main (any thread): start draining. */
void worker_post_stop(struct worker *w);
/* Called by main (any thread): end the drain now, as if timeouts.shutdown had passed. */
void worker_post_abort(struct worker *w);

/* A new live connection: list it (shutdown/abort reach it from now on). */
void worker_conn_add(struct worker *w, struct worker_conn *wc, const struct worker_conn_ops *ops);
/* A live connection closed: unlist it and put it on the graveyard (hooks->on_conn_gone). */
void worker_conn_bury(struct worker *w, struct worker_conn *wc);
/* An object that was never listed (an upstream conn): put it on the graveyard. */
void worker_graveyard_add(struct worker *w, struct worker_conn *wc,
                          const struct worker_conn_ops *ops);
/* Free the graveyard now (the reaper does it each iteration). */
void worker_reap(struct worker *w);

#endif
