/* client: one client connection and the exchange it drives.
 *
 * Twin: py-proxy/pyproxy/client.py (same states, same order, same flags).
 *
 * State machine (one request at a time; pipelined bytes wait in `in`):
 *
 *   accept ─► HEAD ──head ok──► UPSTREAM ──connected──► FORWARD ──response done,
 *              ▲  │                │  (queued /             │      flushed──┐
 *              │  │ 400/408/431…   │   connecting; failed   │ 101           │
 *              │  ▼                │   connect: next peer)  ▼               │
 *              │ DRAIN ◄─ 502/503/504 (closing) ◄──────── TUNNEL            │
 *              │  │ flushed, lingering read                 │ either side   │
 *              │  ▼                                         ▼ closes        │
 *              │ CLOSED ◄───────────────────────────────────┘               │
 *   IDLE ──first byte──┘ ◄─── keep-alive (else CLOSED) ◄────────────────────┘
 *
 * The request being served is a struct exchange (exchange.h: HAProxy's h1s
 * beside this h1c): its flags (EXCHANGE_F_*: keep-alive, request/response
 * progress, HEAD, upgrade, 100-continue, ...), log fields and attempts, and the
 * pure decisions about it. exchange_init() starts the next request. The few
 * flags of the connection itself are CLIENT_F_*.
 *
 * client_run() is the driver: every callback moves bytes and calls it; it loops
 * until a pass changes nothing. A client that hits the pass limit (RUN_GUARD, a
 * long pipeline the proxy answers itself) arms its zero-delay `defer` timer and
 * continues on the next loop iteration: it never waits for a socket event or a
 * deadline that may not come.
 *
 * Timers: one ev_timer per client. client_deadline() is the ONLY place that
 * derives the next deadline from the state (HAProxy's h1_refresh_timeout); the
 * hot path only stores activity timestamps. The timer is re-armed lazily
 * (libev "be smart about timeouts"): it may fire early, then it is re-armed for
 * the remainder; it is restarted only when a deadline moves earlier.
 *
 * Buffers (fixed size, struct buffer): in (client -> proxy), out (proxy ->
 * client), uin (upstream -> proxy), uout (proxy -> upstream). The llhttp
 * callbacks re-frame bodies from `in` into `uout` and from `uin` into `out`; a
 * parser is fed only as many bytes as its output has room for, and a side is
 * read only while its input has room: that is the backpressure. in is kept for
 * the connection's life; uout/uin/out only while an exchange is active.
 *
 * Ownership: the worker owns its clients (listed through the embedded struct
 * worker_conn). A client owns its buffers, parsers, its attached upstream conn
 * (until released) and one ref on the upstream set of its current exchange. It
 * is the struct upstream_owner of its upstream conn and of its place in a wait
 * queue. Closed clients go to the worker's graveyard and are freed by the reaper
 * (Redis freeClientAsync).
 */
#ifndef TWINPROXY_CLIENT_H
#define TWINPROXY_CLIENT_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffer.h"
#include "exchange.h"
#include "http1.h"
#include "upstream.h"
#include "worker.h"

enum client_state {
    CLIENT_ST_IDLE = 0, /* keep-alive, no byte of the next request yet (timeouts.idle) */
    CLIENT_ST_HEAD,     /* reading a request head (timeouts.header) */
    CLIENT_ST_UPSTREAM, /* head sent to uout; waiting for a slot (queue) or a connect */
    CLIENT_ST_FORWARD,  /* connected: body up, response down (read/write/total) */
    CLIENT_ST_TUNNEL,   /* after 101: raw bytes both ways (idle/write) */
    CLIENT_ST_DRAIN,    /* final bytes being flushed, then lingering close (write) */
    CLIENT_ST_CLOSED,   /* fd closed; on the graveyard */
};

#define CLIENT_F_EOF 0x0400    /* the client shut its sending side */
#define CLIENT_F_LINGER 0x8000 /* DRAIN: out flushed, write side shut, discarding input */

/* Which timeout client_deadline() picked. */
enum client_timeout {
    CLIENT_TO_NONE = 0, /* no deadline */
    CLIENT_TO_IDLE,     /* keep-alive/tunnel idle: silent close */
    CLIENT_TO_HEADER,   /* head not complete: 408 */
    CLIENT_TO_QUEUE,    /* no upstream slot: 503 */
    CLIENT_TO_CONNECT,  /* connect not done: next upstream / 502 */
    CLIENT_TO_READ,     /* upstream silent: 504 / close */
    CLIENT_TO_WRITE,    /* a peer does not drain: close */
    CLIENT_TO_TOTAL,    /* exchange too long: 504 / close */
    CLIENT_TO_LINGER,   /* lingering close over */
    CLIENT_TO_RATE_IN,  /* min_rate window over (request body): 408 / close if too slow */
    CLIENT_TO_RATE_OUT, /* min_rate window over (client reading `out`): close if too slow */
};

struct client {
    struct worker_conn wc;     /* in the worker's conns list, then its graveyard */
    struct upstream_owner uo;  /* how upstream.c reaches us (wait queue, conn events) */
    struct worker *w;          /* owner */
    int fd;                    /* socket, -1 once closed */
    ev_io rio;                 /* client readable */
    ev_io wio;                 /* client writable (only while `out` is not empty) */
    ev_timer timer;            /* the one deadline timer */
    ev_tstamp timer_at;        /* when `timer` fires (absolute, loop time) */
    ev_timer defer;            /* zero-delay wakeup: a granted slot, or run again (RUN_GUARD) */
    enum client_state state;   /* see the diagram */
    unsigned flags;            /* CLIENT_F_* */
    char ip[INET6_ADDRSTRLEN]; /* peer address without port */
    char rl_ip[RATELIMIT_IP_KEY_MAX]; /* client_ip rate-limit key of ip (ratelimit_key_ip) */
    size_t rl_ip_len;                 /* its length; 0: not an address (overflow bucket) */
    uint32_t rl_ip_hash;              /* ratelimit_hash() of rl_ip */
    unsigned rl_prefix;               /* ipv6_prefix rl_ip was made with; UINT_MAX: not yet */

    struct buffer in;         /* client -> proxy */
    struct buffer out;        /* proxy -> client */
    struct buffer uin;        /* upstream -> proxy */
    struct buffer uout;       /* proxy -> upstream */
    struct http1_parser req;  /* request parser (fed from `in`) */
    struct http1_parser resp; /* response parser (fed from `uin`) */
    unsigned crlf;            /* HEAD: progress through "\r\n\r\n" (0..4) */
    uint64_t head_bytes;      /* HEAD: bytes of the head so far */

    struct exchange x;          /* the current request (exchange_init() per request) */
    struct upstream_set *set;   /* exchange's upstream set (ref), NULL between requests */
    struct upstream *up;        /* upstream of the current attempt */
    struct upstream_conn *conn; /* attached conn (CONNECTING/BUSY) */
    bool peer_counted;          /* an attempt is running: balancer_attempt_end() is owed */
    bool retry_counted;         /* ... and it is a retry (worker's retries_in_flight) */
    const char *up_err;         /* why the upstream side ended (EOF/reset), a reason constant */
    size_t resp_mark;           /* `out` length before the response head (to undo it) */

    ev_tstamp accepted;     /* accept time (first head deadline) */
    ev_tstamp head_start;   /* start of the head deadline */
    ev_tstamp req_start;    /* first byte of this request (total) */
    ev_tstamp idle_since;   /* IDLE/TUNNEL: last activity */
    ev_tstamp up_start;     /* UPSTREAM: queue or connect start */
    bool queued;            /* the attempt waits for a slot since up_start (metrics) */
    ev_tstamp up_last;      /* last byte read from or written to the upstream */
    ev_tstamp out_last;     /* last write progress to the client (or when `out` filled) */
    ev_tstamp uout_last;    /* last write progress to the upstream */
    ev_tstamp linger_until; /* DRAIN+LINGER: give up reading then */
    bool out_pending;       /* `out` was not empty at the last flush */
    bool uout_pending;      /* `uout` was not empty at the last flush */
    /* timeouts.min_rate: a window opens when the proxy starts waiting on the client
     * (request body: attached, or the upstream drained; response: `out` stayed
     * pending) and must move min_rate x min_rate_window bytes */
    ev_tstamp rin_start;  /* request-body window: start */
    uint64_t rin_mark;    /* ... x.bytes_in then */
    ev_tstamp rout_start; /* response window: start */
    uint64_t rout_mark;   /* ... out_sent then */
    uint64_t out_sent;    /* bytes written to the client socket (connection lifetime) */
};

/* Take over an accepted socket (the listener's accept callback). Returns 0, or
 * -1 when out of memory (the fd is closed). The client is listed on w; the
 * worker reaches it through its worker_conn ops (shutdown: idle clients close
 * now, others after their response; abort: close now; free: the reaper). */
int client_new(struct worker *w, int fd, const struct sockaddr *peer);

/* The deadline for c's current state, and which timeout it is. Pure given c
 * and its config; `now` is not needed (timestamps are absolute). Exposed for
 * the unit tests. Returns 0 when there is none. */
ev_tstamp client_deadline(const struct client *c, const struct config *cfg,
                          enum client_timeout *which);

/* At the end of a min_rate window (which: CLIENT_TO_RATE_IN or _OUT): did the
 * client move fewer than min_rate x min_rate_window bytes since it opened?
 * Exposed for the unit tests. */
bool client_rate_short(const struct client *c, const struct config *cfg, enum client_timeout which);

#endif
