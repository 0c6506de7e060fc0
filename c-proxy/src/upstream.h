/* upstream: connections to the upstream servers, the keep-alive pool and the
 * per-upstream wait queue.
 *
 * Twin: py-proxy/pyproxy/upstream.py.
 *
 * Per worker thread, an upstream set is built from one config: one struct
 * upstream per configured upstream (pool, queue, counters, balancer peer) and
 * the balancer over them. A reload builds a new set; the old one is retired:
 * its idle connections close at once, its busy ones when released, and it is
 * freed when the last holder lets go. Holders: the worker (current set), every
 * client exchange routed with it, every open connection.
 *
 * Upstream connection state machine:
 *
 *     upstream_acquire ──► CONNECTING ──connected──► BUSY ◄──────────┐
 *                              │ failed/timeout        │ release     │ acquire
 *                              ▼                       ▼ (reusable)  │ (pool hit)
 *                           CLOSED ◄──── not reusable ─┴──► IDLE ────┘
 *                              ▲                              │ readable (EOF/junk),
 *                              └──────────────────────────────┘ idle timeout, retired set
 *
 * A connection counts against limits.upstream_max_connections in every state
 * but CLOSED. When none is idle and the limit is reached, the client waits in
 * the upstream's FIFO queue; a freed slot goes to the first waiter (handed the
 * released connection, or a new connect started for it) through
 * client_on_upstream_slot(). CLOSED connections are freed by the worker's reaper
 * at the end of the loop iteration, never on their own callback stack.
 */
#ifndef TWINPROXY_UPSTREAM_H
#define TWINPROXY_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer.h"
#include "config.h"
#include "util.h"

struct worker;
struct client;
struct upstream_set;

enum upstream_conn_state {
    UPC_CONNECTING = 0, /* non-blocking connect in progress; owned by its client */
    UPC_BUSY,           /* attached to one client exchange */
    UPC_IDLE,           /* in the keep-alive pool, watched for EOF */
    UPC_CLOSED,         /* fd closed, waiting for the reaper */
};

struct upstream_conn {
    struct upstream *up;               /* owner; the conn holds a ref on up->set */
    int fd;                            /* socket, -1 once closed */
    ev_io rio;                         /* readable (client-driven while BUSY) */
    ev_io wio;                         /* writable: connect done / room to write */
    ev_timer idle_timer;               /* IDLE: pool expiry (timeouts.idle); may be early */
    ev_tstamp idle_since;              /* IDLE: when it was pooled (loop time) */
    enum upstream_conn_state state;    /* see the diagram above */
    struct client *client;             /* CONNECTING/BUSY: the exchange using it */
    struct upstream_conn *next, *prev; /* IDLE: pool list; CLOSED: graveyard */
    unsigned exchanges;                /* completed exchanges (> 0: a reused connection) */
};

struct upstream {
    struct upstream_set *set;             /* owner */
    const struct config_upstream *cfg;    /* name, address, weight (in set->cfg) */
    size_t index;                         /* position in the set / balancer peer index */
    struct upstream_conn *idle;           /* pool, most recently used first */
    unsigned n_idle;                      /* conns in the pool */
    unsigned n_open;                      /* CONNECTING + BUSY conns */
    struct client *wait_head, *wait_tail; /* FIFO of clients waiting for a slot */
    unsigned n_waiting;                   /* clients in the queue */
    uint64_t requests;                    /* attempts started (metrics) */
    uint64_t fails;                       /* failed attempts (health, metrics) */
};

struct upstream_set {
    struct worker *w;            /* owning worker (one thread) */
    struct cfgref *cfg;          /* the config this set was built from (ref) */
    struct upstream *ups;        /* n upstreams */
    struct balancer_peer *peers; /* n balancer peers, same order */
    size_t n;                    /* upstreams */
    struct balancer bal;         /* strategy over peers */
    unsigned refs;               /* holders (worker, exchanges, open conns) */
    bool retired;                /* replaced by a reload: no pooling */
};

enum upstream_acquire_result {
    UPSTREAM_READY = 0,  /* *conn is BUSY (pool hit) */
    UPSTREAM_CONNECTING, /* *conn is CONNECTING; the client is told via its io callback */
    UPSTREAM_QUEUED,     /* the client waits in the queue; client_on_upstream_slot() later */
    UPSTREAM_FAILED,     /* the connect failed at once; *reason says why */
};

/* Build a set for worker w from cfg (a ref is taken). NULL on failure. */
struct upstream_set *upstream_set_new(struct worker *w, struct cfgref *cfg);
struct upstream_set *upstream_set_acquire(struct upstream_set *s);
/* Drop a ref; the last one frees the set (NULL is a no-op). */
void upstream_set_release(struct upstream_set *s);
/* Mark replaced: close idle conns now, busy ones on release. Does not drop a ref. */
void upstream_set_retire(struct upstream_set *s);

/* Get a connection to u for client c (see enum upstream_acquire_result). */
enum upstream_acquire_result upstream_acquire(struct upstream *u, struct client *c,
                                              struct upstream_conn **conn, const char **reason);
/* CONNECTING conn became writable: returns 0 (now BUSY) or -1 with *reason
 * (the conn is then closed). */
int upstream_connect_done(struct upstream_conn *conn, const char **reason);
/* The exchange on a BUSY conn is over: pool it if reusable (and the pool has
 * room and the set is current), else close it. Wakes the first waiter. */
void upstream_release(struct upstream_conn *conn, bool reusable);
/* Close a conn in any state (freed later by the reaper). Wakes the first waiter. */
void upstream_close(struct upstream_conn *conn);
/* Remove c from u's wait queue (timeout, client gone). */
void upstream_cancel_wait(struct upstream *u, struct client *c);
/* Start/stop the conn's watchers for the client (BUSY/CONNECTING only). */
void upstream_conn_want(struct upstream_conn *conn, bool rd, bool wr);
/* Free CLOSED conns on the worker's graveyard (the reaper). */
void upstream_reap(struct worker *w);

#endif
