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
 * Independent flags (CLIENT_F_*) record what is orthogonal to the state:
 * keep-alive, request/response progress, HEAD, upgrade, 100-continue, ...
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
 * Ownership: the worker owns its clients (list). A client owns its buffers,
 * parsers, its attached upstream conn (until released) and one ref on the
 * upstream set of its current exchange. Closed clients go to the worker's
 * graveyard and are freed by the reaper (Redis freeClientAsync).
 */
#ifndef TWINPROXY_CLIENT_H
#define TWINPROXY_CLIENT_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer.h"
#include "buffer.h"
#include "http1.h"

struct worker;
struct upstream;
struct upstream_conn;
struct upstream_set;

enum client_state {
    CLIENT_ST_IDLE = 0, /* keep-alive, no byte of the next request yet (timeouts.idle) */
    CLIENT_ST_HEAD,     /* reading a request head (timeouts.header) */
    CLIENT_ST_UPSTREAM, /* head sent to uout; waiting for a slot (queue) or a connect */
    CLIENT_ST_FORWARD,  /* connected: body up, response down (read/write/total) */
    CLIENT_ST_TUNNEL,   /* after 101: raw bytes both ways (idle/write) */
    CLIENT_ST_DRAIN,    /* final bytes being flushed, then lingering close (write) */
    CLIENT_ST_CLOSED,   /* fd closed; on the graveyard */
};

#define CLIENT_F_KEEPALIVE 0x0001    /* the client may keep the connection after this request */
#define CLIENT_F_HTTP10 0x0002       /* the request is HTTP/1.0 */
#define CLIENT_F_REQ_DONE 0x0004     /* the whole request was parsed (body included) */
#define CLIENT_F_RESP_STARTED 0x0008 /* a final response head is in `out` */
#define CLIENT_F_RESP_SENT 0x0010    /* response bytes reached the client's socket */
#define CLIENT_F_RESP_DONE 0x0020    /* the whole response is in `out` */
#define CLIENT_F_HEAD_METHOD 0x0040  /* HEAD: the response has no body */
#define CLIENT_F_UPGRADE 0x0080      /* the request asks for an Upgrade */
#define CLIENT_F_EXPECT 0x0100       /* Expect: 100-continue still to be answered */
#define CLIENT_F_CLOSE_AFTER 0x0200  /* close once `out` is flushed */
#define CLIENT_F_EOF 0x0400          /* the client shut its sending side */
#define CLIENT_F_UP_EOF 0x0800       /* the upstream closed its side (read EOF or reset) */
#define CLIENT_F_QUEUED 0x1000       /* in an upstream's wait queue */
#define CLIENT_F_UP_DIRTY 0x2000     /* the upstream conn may not be pooled */
#define CLIENT_F_REPLAYABLE 0x4000   /* uout still holds the whole request from byte 0 */
#define CLIENT_F_LINGER 0x8000       /* DRAIN: out flushed, write side shut, discarding input */
#define CLIENT_F_LOGGED 0x10000      /* the access line of this request is written */
#define CLIENT_F_IN_REQUEST 0x20000  /* a request started (bytes seen): its clocks run */
#define CLIENT_F_UP_WFAIL 0x40000 /* writing to the upstream failed: stop sending, keep reading */

#define CLIENT_INLINE_PATH 128 /* targets shorter than this are kept in the struct */
#define CLIENT_INLINE_RID 64   /* request ids shorter than this are kept in the struct */

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
};

struct client {
    struct worker *w;           /* owner */
    struct client *next, *prev; /* worker's client list; graveyard uses next */
    int fd;                     /* socket, -1 once closed */
    ev_io rio;                  /* client readable */
    ev_io wio;                  /* client writable (only while `out` is not empty) */
    ev_timer timer;             /* the one deadline timer */
    ev_tstamp timer_at;         /* when `timer` fires (absolute, loop time) */
    ev_timer defer;             /* zero-delay wakeup: a queued slot was granted */
    enum client_state state;    /* see the diagram */
    unsigned flags;             /* CLIENT_F_* */
    char ip[INET6_ADDRSTRLEN];  /* peer address without port */

    struct buffer in;         /* client -> proxy */
    struct buffer out;        /* proxy -> client */
    struct buffer uin;        /* upstream -> proxy */
    struct buffer uout;       /* proxy -> upstream */
    struct http1_parser req;  /* request parser (fed from `in`) */
    struct http1_parser resp; /* response parser (fed from `uin`) */
    unsigned crlf;            /* HEAD: progress through "\r\n\r\n" (0..4) */
    uint64_t head_bytes;      /* HEAD: bytes of the head so far */

    struct upstream_set *set;      /* exchange's upstream set (ref), NULL between requests */
    struct upstream *up;           /* upstream of the current attempt */
    struct upstream_conn *conn;    /* attached conn (CONNECTING/BUSY) */
    struct upstream_conn *granted; /* queued: conn handed over by upstream_release */
    const char *granted_err;       /* queued: the connect started for us failed at once */
    struct client *qnext, *qprev;  /* upstream wait queue links */
    struct balancer_tried tried;   /* upstreams tried by this request */
    uint64_t tried_small[2];       /* inline storage for tried (<= 128 upstreams) */
    unsigned attempts;             /* upstream attempts of this request */
    bool peer_counted;             /* this attempt counts in its peer's `active` */
    size_t resp_mark;              /* `out` length before the response head (to undo it) */

    ev_tstamp accepted;     /* accept time (first head deadline) */
    ev_tstamp head_start;   /* start of the head deadline */
    ev_tstamp req_start;    /* first byte of this request (total) */
    ev_tstamp idle_since;   /* IDLE/TUNNEL: last activity */
    ev_tstamp up_start;     /* UPSTREAM: queue or connect start */
    ev_tstamp up_last;      /* last byte read from or written to the upstream */
    ev_tstamp out_last;     /* last write progress to the client (or when `out` filled) */
    ev_tstamp uout_last;    /* last write progress to the upstream */
    ev_tstamp linger_until; /* DRAIN+LINGER: give up reading then */
    bool out_pending;       /* `out` was not empty at the last flush */
    bool uout_pending;      /* `uout` was not empty at the last flush */

    /* access-log fields of the current request */
    double start_wall;  /* wall clock at the request's first byte */
    double start_mono;  /* monotonic seconds at the same moment */
    double end_mono;    /* when the response's last byte was sent, 0 until then */
    const char *method; /* llhttp's static method name, NULL if the head never parsed */
    char *path;         /* the target: path_buf, or an owned copy when longer */
    char *request_id;   /* the client's X-Request-ID or a generated one: rid_buf or owned */
    char path_buf[CLIENT_INLINE_PATH]; /* most targets: no malloc per request */
    char rid_buf[CLIENT_INLINE_RID];   /* generated ids (32 hex) and short client ones */
    int status;                        /* status sent (0: none) */
    uint64_t bytes_in;                 /* bytes of this request read from the client */
    uint64_t bytes_out;                /* bytes of this request written to the client */
};

/* Take over an accepted socket. Returns the client or NULL (the fd is closed). */
struct client *client_new(struct worker *w, int fd, const struct sockaddr *peer);
/* Free a CLOSED client (the worker's reaper). */
void client_free(struct client *c);

/* Upstream side events, called by upstream.c. */
void client_on_upstream_io(struct client *c, int revents);
/* A queued slot was granted (c->granted or c->granted_err set): wakes the client later. */
void client_on_upstream_slot(struct client *c);

/* Worker is shutting down: idle clients close now, others close after their response. */
void client_shutdown(struct client *c);
/* Shutdown timeout: close now. */
void client_abort(struct client *c);

/* The deadline for c's current state, and which timeout it is. Pure given c
 * and its config; `now` is not needed (timestamps are absolute). Exposed for
 * the unit tests. Returns 0 when there is none. */
ev_tstamp client_deadline(const struct client *c, const struct config *cfg,
                          enum client_timeout *which);

#endif
