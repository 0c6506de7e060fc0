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
 * released connection, or a new connect started for it) through its on_slot().
 * CLOSED connections are put on the worker's graveyard and freed by its reaper at
 * the end of the loop iteration, never on their own callback stack.
 *
 * Whoever waits for or uses a connection (a client exchange; a fake in the unit
 * tests) is a struct upstream_owner: this module reaches it only through its ops
 * table, never through client.h.
 */
#ifndef TWINPROXY_UPSTREAM_H
#define TWINPROXY_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer.h"
#include "config.h"
#include "health.h"
#include "list.h"
#include "util.h"
#include "worker.h"

struct upstream_set;
struct upstream_owner;

/* How upstream.c talks to whoever uses a connection or waits for a slot. */
struct upstream_owner_ops {
    /* the attached conn (CONNECTING or BUSY) is readable (EV_READ) and/or writable
     * (EV_WRITE; for a CONNECTING conn: the connect finished, call
     * upstream_connect_done()) */
    void (*on_io)(struct upstream_owner *o, int revents);
    /* queued: a slot was granted (o->granted or o->granted_err is set). Called on the
     * releaser's stack: the owner must defer its work to the next loop turn. */
    void (*on_slot)(struct upstream_owner *o);
};

/* Embedded in the waiter/user (struct client). Fields below ops are written by
 * upstream.c; the owner reads and clears granted/granted_err. */
struct upstream_owner {
    const struct upstream_owner_ops *ops; /* the owner's callbacks */
    struct list_head wait_link;           /* in upstream.waiters while queued */
    bool queued;                          /* in a wait queue (timeouts.queue runs) */
    struct upstream_conn *granted;        /* queued: the conn handed over (BUSY/CONNECTING) */
    const char *granted_err;              /* queued: the connect started for it failed at once */
};

/* Set up an owner (not queued, nothing granted). */
void upstream_owner_init(struct upstream_owner *o, const struct upstream_owner_ops *ops);

enum upstream_conn_state {
    UPC_CONNECTING = 0, /* non-blocking connect in progress; owned by its client */
    UPC_BUSY,           /* attached to one client exchange */
    UPC_IDLE,           /* in the keep-alive pool, watched for EOF */
    UPC_CLOSED,         /* fd closed, waiting for the reaper */
};

struct upstream_conn {
    struct upstream *up;            /* owner; the conn holds a ref on up->set */
    int fd;                         /* socket, -1 once closed */
    ev_io rio;                      /* readable (owner-driven while BUSY) */
    ev_io wio;                      /* writable: connect done / room to write */
    ev_timer idle_timer;            /* IDLE: pool expiry (timeouts.idle); may be early */
    ev_tstamp idle_since;           /* IDLE: when it was pooled (loop time) */
    enum upstream_conn_state state; /* see the diagram above */
    struct upstream_owner *owner;   /* CONNECTING/BUSY: the exchange using it */
    struct list_head idle_link;     /* IDLE: in up->idle, most recent first */
    struct worker_conn wc;          /* CLOSED: on the worker's graveyard */
    unsigned exchanges;             /* completed exchanges (> 0: a reused connection) */
};

struct upstream {
    struct upstream_set *set;          /* owner */
    const struct config_upstream *cfg; /* name, address, weight (in set->cfg) */
    size_t index;                      /* position in the set / balancer peer index */
    struct list_head idle;             /* pool (upstream_conn.idle_link), most recent first */
    unsigned n_idle;                   /* conns in the pool */
    unsigned n_open;                   /* CONNECTING + BUSY conns */
    struct list_head waiters;          /* FIFO of owners waiting for a slot (wait_link) */
    unsigned n_waiting;                /* owners in the queue */
    uint64_t requests;                 /* attempts started (metrics) */
    uint64_t stale;                    /* pooled conns found closed when taken (not attempts) */
    uint64_t fails;                    /* failed attempts (health, metrics) */
};

struct upstream_set {
    struct worker *w;               /* owning worker (one thread) */
    struct cfgref *cfg;             /* the config this set was built from (ref) */
    struct upstream *ups;           /* n upstreams */
    struct balancer_peer *peers;    /* n balancer peers, same order */
    size_t n;                       /* upstreams */
    struct balancer bal;            /* strategy over peers */
    unsigned refs;                  /* holders (worker, exchanges, open conns) */
    bool retired;                   /* replaced by a reload: no pooling */
    struct health_checker *checker; /* worker 0's active checks for this config (owned) */
};

enum upstream_acquire_result {
    UPSTREAM_READY = 0,  /* *conn is BUSY (pool hit) */
    UPSTREAM_CONNECTING, /* *conn is CONNECTING; the owner is told via its on_io() */
    UPSTREAM_QUEUED,     /* the owner waits in the queue; its on_slot() later */
    UPSTREAM_FAILED,     /* the connect failed at once; *reason says why */
};

/* Build a set for worker w from cfg (a ref is taken). NULL on failure. */
struct upstream_set *upstream_set_new(struct worker *w, struct cfgref *cfg);
struct upstream_set *upstream_set_acquire(struct upstream_set *s);
/* Drop a ref; the last one frees the set (NULL is a no-op). */
void upstream_set_release(struct upstream_set *s);
/* Mark replaced: close idle conns now, busy ones on release. Does not drop a ref. */
void upstream_set_retire(struct upstream_set *s);

/* Get a connection to u for owner o (see enum upstream_acquire_result). A pooled
 * conn is checked first (recv MSG_PEEK|MSG_DONTWAIT): one the upstream closed, reset
 * or sent bytes on is closed and replaced (the next pooled one, or a new connect);
 * that is not an attempt and not a failure. */
enum upstream_acquire_result upstream_acquire(struct upstream *u, struct upstream_owner *o,
                                              struct upstream_conn **conn, const char **reason);
/* CONNECTING conn became writable: returns 0 (now BUSY) or -1 with *reason
 * (the conn is then closed). */
int upstream_connect_done(struct upstream_conn *conn, const char **reason);
/* The exchange on a BUSY conn is over: pool it if reusable (and the pool has
 * room and the set is current), else close it. Wakes the first waiter. */
void upstream_release(struct upstream_conn *conn, bool reusable);
/* Close a conn in any state (freed later by the reaper). Wakes the first waiter. */
void upstream_close(struct upstream_conn *conn);
/* Remove o from u's wait queue (timeout, owner gone); no-op when not queued. */
void upstream_cancel_wait(struct upstream *u, struct upstream_owner *o);
/* Start/stop the conn's watchers for the owner (BUSY only). */
void upstream_conn_want(struct upstream_conn *conn, bool rd, bool wr);

/* Make a new set from cfg the worker's current one (w->set, w->cfg); the old set,
 * if any, is retired and released. Used at startup and on reload (the worker's
 * on_config hook). Returns 0, or -1 (out of memory: the old set stays). */
int upstream_set_install(struct worker *w, struct cfgref *cfg);
/* Teardown: retire and release the worker's set (w->set = NULL). */
void upstream_set_uninstall(struct worker *w);

/* One upstream as GET /upstreams shows it (contract 8). Strings are borrowed from the
 * set's config or have static storage. requests/fails/active/idle are this worker's;
 * state/healthy/last_error are the shared health verdict (all workers). */
struct upstream_info {
    const char *name;       /* config name */
    const char *address;    /* config address text */
    unsigned weight;        /* 1..1000 */
    const char *state;      /* operator state: "active" | "drain" */
    bool healthy;           /* health verdict: not down (passive or active) */
    unsigned active;        /* attempts in flight on it */
    unsigned idle;          /* pooled keep-alive connections */
    uint64_t requests;      /* attempts started */
    uint64_t fails;         /* attempts that failed (health FAIL outcomes) */
    const char *last_error; /* reason of the last failure, "" if none */
};

/* Fill *out for upstream i of s (i < s->n). */
void upstream_info(const struct upstream_set *s, size_t i, struct upstream_info *out);
/* The upstream named name in s, or NULL. */
struct upstream *upstream_find(const struct upstream_set *s, const char *name);
/* Operator drain (admin PATCH /upstreams/{name}, later): the upstream gets no new
 * attempts, in-flight ones finish; shared by every worker and kept across reloads
 * (health_set_drain on the name's state). Returns 0, or -1 for an unknown name. */
int upstream_set_drain(const struct upstream_set *s, const char *name, bool drain);

#endif
