/* admin: the admin HTTP API on admin.listen (contract section 8), on its own
 * thread with its own libev loop, so a SQLite commit never stalls a worker.
 *
 * Twin: py-proxy/pyproxy/admin.py (same routes, status codes, messages and
 * bytes; there it runs on worker 0's event loop). docs/admin-api.md is the
 * user's reference; the byte-level cases shared by both twins' unit tests are
 * in c-proxy/tests/admin_cases/.
 *
 * HTTP/1.1 server: llhttp (strict, no lenient flag), keep-alive, pipelined
 * requests answered in order, a request head limit (431), a 64 KiB body limit
 * (413, then a lingering close), and an idle timeout (silent close). Responses
 * carry Content-Type, Content-Length, Allow (405) and Connection: close (only
 * when closing); no Date, no Server.
 *
 * Data comes through two tables so the module is testable and main only wires:
 * - struct admin_providers: /upstreams and /metrics (callbacks, run on the
 *   admin thread: they must only read thread-safe state);
 * - struct admin_clients: /clients over the rate-limit table (pinned slots,
 *   ratelimit.h) and the store. Store calls block the admin thread only; every
 *   change is committed before its reply.
 *
 * Ownership: admin_start() takes the listening fd and returns a server the
 * caller ends with admin_stop() (joins the thread, closes every connection and
 * the fd). The providers' ud, the table and the store stay the caller's and
 * must outlive the server.
 */
#ifndef TWINPROXY_ADMIN_H
#define TWINPROXY_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "ratelimit.h"
#include "store.h"

#define ADMIN_BODY_MAX 65536 /* request body bytes; more -> 413 */
#define ADMIN_HEAD_MAX 16384 /* request target + header names and values; more -> 431 */
#define ADMIN_IDLE_S 60.0    /* default idle timeout */
#define ADMIN_LINGER_S 2.0   /* lingering close: read and discard this long at most */
#define ADMIN_LIST_LIMIT 100 /* GET /clients default limit */
#define ADMIN_LIST_MAX 1000  /* GET /clients largest limit */

struct admin_config {
    const char *token;   /* admin.token; "" or NULL = no auth (copied) */
    double idle_timeout; /* seconds a connection may wait for its next request; 0 = ADMIN_IDLE_S */
};

/* /upstreams and /metrics. Called on the admin thread. */
struct admin_providers {
    /* GET /upstreams: a new reference to an array of upstream objects (keys in
     * the order of contract section 8), or NULL for an empty list. */
    json_t *(*upstreams)(void *ud);
    /* PATCH /upstreams/{name}: set the operator state (drain or active).
     * Returns 0 with a new reference to the upstream object in *out, or -1 when
     * there is no upstream of that name. */
    int (*upstream_set_state)(void *ud, const char *name, bool drain, json_t **out);
    /* GET /metrics: write the Prometheus text into buf (at most cap bytes) and
     * return its full length; called again with a bigger buffer when it did
     * not fit (snprintf style). */
    size_t (*metrics)(void *ud, char *buf, size_t cap);
    void *ud; /* passed to every callback */
};

/* /clients: overrides are pinned slots of the rate-limit table (visible to
 * every worker at once) and rows of the store. */
struct admin_clients {
    struct ratelimit_table *table; /* thread-safe; borrowed */
    struct store *store;           /* borrowed; its calls block the admin thread only */
    double (*now)(void);           /* wall clock, seconds (bucket times, updated_at) */
};

struct admin;

/* Bind addr for the admin server (listening, non-blocking). Returns the fd, or
 * -1 with "FILE:LINE: admin.listen: address in use" (or strerror) in err. */
int admin_bind(const struct config_addr *addr, const char *cfg_path, char *err, size_t errlen);

/* Start serving on lfd (already bound and listening; the server owns it from
 * now on, also on failure) on a new thread. clients NULL: /clients is 404 (no
 * rate_limit configured). The structs are copied. Returns the server, or NULL
 * with a message in err. */
struct admin *admin_start(const struct admin_config *cfg, int lfd,
                          const struct admin_providers *prov, const struct admin_clients *clients,
                          char *err, size_t errlen);

/* Stop the thread (waits for it), close every connection and the listening
 * fd, free the server. NULL is a no-op. */
void admin_stop(struct admin *a);

/* A reload changed admin.token: requests from now on need the new one ("" = no
 * auth). Any thread. Returns 0, or -1 out of memory (the old token stays). */
int admin_set_token(struct admin *a, const char *token);

/* Contract number formatting shared by both twins: integral values with
 * |x| < 2^53 as integers ("10"), anything else with %.15g; -0 as 0. Writes
 * at most cap bytes (NUL-ended) and returns the length. */
size_t admin_format_number(double x, char *out, size_t cap);

#endif
