/* route: maps a request target to what the upstream answers. Pure: no I/O, no allocation. */
#ifndef UPSTREAM_ROUTE_H
#define UPSTREAM_ROUTE_H

#include <stddef.h>
#include <stdint.h>

enum route_kind {
    ROUTE_OK = 0,      /* `/` and anything not listed: 200 "ok\n" */
    ROUTE_BAD_PARAM,   /* a listed path with an unusable parameter: 400, keep-alive */
    ROUTE_BYTES,       /* /bytes/N */
    ROUTE_CHUNKED,     /* /chunked/N[?chunk=S][&trailer=1] */
    ROUTE_STATUS,      /* /status/CODE */
    ROUTE_ECHO,        /* /echo */
    ROUTE_HEALTH,      /* /health */
    ROUTE_HEALTH_FAIL, /* /health/fail */
    ROUTE_HEALTH_OK,   /* /health/ok */
    ROUTE_DROP,        /* /drop */
    ROUTE_RESET,       /* /reset */
    ROUTE_INVALID,     /* /invalid[/KIND] */
    ROUTE_TRUNCATE,    /* /truncate/N */
    ROUTE_DRIP,        /* /drip/N[?interval=MS] */
    ROUTE_CLOSE,       /* /close */
    ROUTE_HEADERS,     /* /headers?NAME=VALUE&... */
    ROUTE_UPGRADE,     /* /upgrade */
    ROUTE_STATS,       /* /stats */
    ROUTE_STATS_RESET, /* /stats/reset */
    ROUTE_STALL,       /* /stall: read the request, never answer */
    ROUTE_FAULT,       /* /fault/KIND: set this listener's fault */
    ROUTE_RESET_HEAD,  /* fault reset-head: part of a response head, then a TCP RST */
    ROUTE_RESET_BODY,  /* fault reset-body: head + half of the body, then a TCP RST */
    ROUTE_EARLY,       /* fault early/CODE: final response right after the request head */
};

/* A listener's fault mode (--fault, /fault/KIND): applied to every request except the
 * control paths (route_faultable). */
enum fault_kind {
    FAULT_NONE = 0,   /* answer normally */
    FAULT_RESET,      /* as /reset: TCP RST after the request head */
    FAULT_DROP,       /* as /drop: close after the request head, no response */
    FAULT_STALL,      /* as /stall: read the request, never answer */
    FAULT_DELAY,      /* answer normally after fault_ms more milliseconds */
    FAULT_RESET_HEAD, /* after the request: part of a response head, then a TCP RST */
    FAULT_RESET_BODY, /* after the request: head and half of the body, then a TCP RST */
    FAULT_TRICKLE,    /* after the request: a 200 whose 8 body bytes come one per fault_ms */
    FAULT_MALFORMED,  /* after the request: a response head that is not HTTP (as /invalid) */
    FAULT_EXTRA,      /* the normal response followed by unsolicited bytes, connection kept */
    FAULT_CLOSE,      /* the normal response with Connection: close, then close */
    FAULT_EARLY,      /* response fault_ms (a status) right after the request head, before
                       * reading its body; Connection: close, then a lingering close */
};

enum invalid_kind {
    INVALID_GARBAGE = 0, /* not HTTP at all */
    INVALID_CL_TE,       /* both Content-Length and Transfer-Encoding */
    INVALID_DUP_CL,      /* two different Content-Length */
    INVALID_BAD_CL,      /* Content-Length: 1x */
    INVALID_BAD_CHUNK,   /* chunk size zz */
    INVALID_BAD_STATUS,  /* status line HTTP/1.1 99x OK */
};

struct route {
    enum route_kind kind;      /* what to answer */
    uint64_t n;                /* byte count (bytes, chunked, truncate, drip) or status code */
    uint64_t chunk;            /* chunk size for ROUTE_CHUNKED (>= 1) */
    uint64_t interval_ms;      /* drip interval (>= 1) */
    uint64_t delay_ms;         /* total /delay before answering (0: answer at once) */
    int trailer;               /* ROUTE_CHUNKED: send X-Trailer */
    enum invalid_kind invalid; /* ROUTE_INVALID: which breakage */
    const char *query;         /* ROUTE_HEADERS: raw query (borrowed from target or scratch) */
    size_t query_len;          /* length of query */
    const char *bad;           /* ROUTE_BAD_PARAM: why, a const string */
    enum fault_kind fault;     /* ROUTE_FAULT: the mode to set (`n`: its delay in ms) */
    int control;               /* a control path: never faulted (route_faultable) */
};

/* Parses a request target (origin-form, or absolute-form whose authority is skipped) into
 * `out`. `scratch` (at least `len` bytes) holds the decoded `then=` target of /delay; `out`
 * may point into `target` or `scratch`, so both must outlive it. Never fails: unusable
 * parameters give ROUTE_BAD_PARAM. */
void route_parse(const char *target, size_t len, char *scratch, struct route *out);

/* Parses a fault spec (the --fault value and the /fault/ path tail): `none`, `reset`, `drop`,
 * `stall`, `delay/MS`, `reset-head`, `reset-body`, `trickle/MS`, `malformed`, `extra`,
 * `close` or `early/CODE` (CODE 200..599, returned in *ms). Returns 0, or -1 when unusable. */
int route_fault_parse(const char *s, size_t len, enum fault_kind *kind, uint64_t *ms);

/* Whether a listener's fault applies to the request: to every path except the control paths
 * /stats, /stats/reset, /fault/... (also with an unusable tail), /health, /health/ok and
 * /health/fail. */
int route_faultable(const struct route *r);

/* Finds `key` in a raw query string (`a=b&c=d`); returns the raw value and its length via
 * `val`/`val_len`, or 0 when absent. */
int route_query_get(const char *q, size_t qlen, const char *key, const char **val, size_t *val_len);

/* Percent-decodes (and '+' -> ' ') `src` into `dst` (at least `len` bytes); returns the
 * decoded length, or (size_t)-1 on a malformed escape. */
size_t route_url_decode(const char *src, size_t len, char *dst);

/* The reason phrase for a status code ("Unknown" for unregistered ones). */
const char *route_reason(unsigned code);

#endif
