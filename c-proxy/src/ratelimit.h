/* ratelimit: per-client token buckets (contract section 7), pure functions of
 * (now, state).
 *
 * Twin: py-proxy/pyproxy/ratelimit.py (same arithmetic, same slot layout, same
 * probing, eviction and overflow rule). docs/ratelimit.md explains the choices.
 *
 * A bucket is (tokens, at): tokens as of time `at`. Nothing runs between
 * requests: a take first refills from the elapsed time (continuous refill, no
 * timer per bucket), then takes one token. Time is always passed in (`now`, in
 * seconds on the caller's clock; the store keeps `at`, so the caller should use
 * wall-clock seconds for state to survive a restart).
 *
 * The table maps a client key to its bucket. It is a fixed array of 128-byte
 * slots (open addressing, linear probing, backward-shift deletion) split into
 * stripes, each with its own lock and its own share of max_clients. The slot
 * layout is plain data so the Python twin can keep the same table in a
 * multiprocessing.shared_memory buffer for its worker processes.
 *
 * Ownership: ratelimit_table_new() returns a table the caller owns and frees
 * with ratelimit_table_free(). Every other table function may be called from
 * any thread at the same time.
 */
#ifndef TWINPROXY_RATELIMIT_H
#define TWINPROXY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_MAX 88               /* key bytes a slot holds; longer keys overflow */
#define RATELIMIT_SLOT_SIZE 128            /* bytes per slot, both twins */
#define RATELIMIT_STRIPES_MAX 64           /* locks; fewer for small tables */
#define RATELIMIT_STRIPE_MIN_CLIENTS 16    /* a stripe holds at least this many buckets */
#define RATELIMIT_SECONDS_MAX 2147483647   /* Reset / Retry-After are clamped to this */
#define RATELIMIT_CAPACITY_MAX 1000000000u /* config's ceiling */
#define RATELIMIT_IP_KEY_MAX 64            /* "ffff:...:ffff/128" + NUL fits */

/* A client's limit: its override, else rate_limit.default. */
struct ratelimit_limit {
    uint32_t capacity;   /* tokens when full, 1..RATELIMIT_CAPACITY_MAX */
    double rate_per_sec; /* refill, >= 0; 0 = never refills */
};

/* One bucket: tokens as of `at`. */
struct ratelimit_bucket {
    double tokens; /* 0..capacity, fractional */
    double at;     /* caller's clock, seconds */
};

enum ratelimit_verdict {
    RATELIMIT_ALLOWED = 0, /* a token was taken: forward the request */
    RATELIMIT_LIMITED,     /* bucket empty: answer 429 */
};

/* What a take decided plus the header values of contract section 7. */
struct ratelimit_result {
    enum ratelimit_verdict verdict; /* allowed or limited */
    uint32_t limit;                 /* RateLimit-Limit: capacity */
    uint64_t remaining;             /* RateLimit-Remaining: whole tokens left */
    int64_t reset;                  /* RateLimit-Reset: s until full, rounded up; -1 = omit */
    int64_t retry_after;            /* Retry-After on a 429: s, >= 1; -1 = omit or allowed */
    bool overflow;                  /* served by the shared overflow bucket */
};

/* ---- bucket arithmetic (no table, no locks) ------------------------------------ */

/* Bring b up to now: tokens += (now - at) * rate, capped at capacity; at = now.
 * A now earlier than at (clock stepped back) changes nothing. */
void ratelimit_refill(struct ratelimit_bucket *b, const struct ratelimit_limit *lim, double now);

/* Refill, then take one token if there is a whole one; fills *res. */
void ratelimit_bucket_take(struct ratelimit_bucket *b, const struct ratelimit_limit *lim,
                           double now, struct ratelimit_result *res);

/* True if b, refilled to now, equals a fresh bucket (tokens == capacity).
 * Does not modify b. */
bool ratelimit_bucket_full(const struct ratelimit_bucket *b, const struct ratelimit_limit *lim,
                           double now);

/* ---- the table ------------------------------------------------------------------ */

struct ratelimit_table;

/* A table for at most max_clients buckets (>= 1) whose new keys and overflow
 * bucket get dflt. Returns NULL on allocation failure or bad arguments. */
struct ratelimit_table *ratelimit_table_new(uint64_t max_clients,
                                            const struct ratelimit_limit *dflt);

/* Free the table; NULL is a no-op. No other call may be running. */
void ratelimit_table_free(struct ratelimit_table *t);

/* Atomically refill and take one token from key's bucket. lim is the client's
 * override, or NULL for the table's default. A key seen for the first time gets
 * a fresh (full) bucket; when its stripe is at its share of max_clients, a full
 * bucket is evicted first, and when none is full the request is served by the
 * one overflow bucket (default limit) shared by every such key, and by keys
 * longer than RATELIMIT_KEY_MAX or empty. A bucket taken with a new limit keeps
 * its tokens (refilled under the old rate), capped at the new capacity. */
void ratelimit_take(struct ratelimit_table *t, const char *key, size_t key_len,
                    const struct ratelimit_limit *lim, double now, struct ratelimit_result *res);

/* The hash ratelimit_take() computes for key (crc32), and ratelimit_take() with
 * it already known: a caller that takes with the same key again and again (the
 * client_ip key of a keep-alive connection) hashes it once. */
uint32_t ratelimit_hash(const char *key, size_t key_len);
void ratelimit_take_hashed(struct ratelimit_table *t, const char *key, size_t key_len,
                           uint32_t hash, const struct ratelimit_limit *lim, double now,
                           struct ratelimit_result *res);

/* Tokens key's bucket holds at now (refilled, not stored): capacity of lim (or
 * the default) when the key has no bucket. lim NULL: a pinned slot's limit. */
double ratelimit_peek(struct ratelimit_table *t, const char *key, size_t key_len,
                      const struct ratelimit_limit *lim, double now);

/* The header values of key's bucket at now without taking a token (a response
 * the proxy sends for a request that was not counted: malformed, too large, a
 * head timeout): verdict allowed, remaining, reset as a take would report them;
 * retry_after -1. The key's pinned limit, else the default; a key without a
 * bucket reads as a fresh one. Changes nothing. */
void ratelimit_status(struct ratelimit_table *t, const char *key, size_t key_len, double now,
                      struct ratelimit_result *res);

/* Replace the default limit (a reload changed rate_limit.default): new keys get
 * it, and every unpinned bucket moves to it on its next take (refilled under
 * its old limit, then capped: a change never adds tokens). Takes every lock. */
void ratelimit_set_default(struct ratelimit_table *t, const struct ratelimit_limit *dflt);

/* Set key's bucket to (tokens, at) under lim, creating it if needed (evicting a
 * full bucket if the stripe is at its share). For the admin API's PATCH tokens
 * and for loading saved state. tokens is clamped to 0..capacity. Whether a
 * bucket is full enough to evict is judged at `at` (never later than now, so
 * never too eagerly). lim NULL: the default, or a pinned slot's own limit
 * (pinning survives). Returns 0, or -1 when the key cannot have a bucket (too
 * long, empty, no room). */
int ratelimit_set(struct ratelimit_table *t, const char *key, size_t key_len,
                  const struct ratelimit_limit *lim, double tokens, double at);

/* ---- pinned overrides (the admin API's /clients) ------------------------------
 * An override lives in its key's slot, flagged pinned: a pinned slot is never
 * evicted, and take/peek/set with lim NULL use its limit instead of the
 * default. Pinned slots count toward max_clients. Only one thread (the admin
 * server) should pin and unpin; every call is atomic under the stripe lock. */

/* Pin key with limit lim, creating its slot if needed (evicting a full
 * unpinned bucket when the stripe is at its share). An existing bucket keeps
 * its tokens, refilled under its old limit to now, then capped at the new
 * capacity (a change never adds tokens); tokens >= 0 sets them instead
 * (capped). Returns 0, or -1 when the key is empty or too long, or when a new
 * slot is needed and the stripe has no room (admin: 503 client table full). */
int ratelimit_pin(struct ratelimit_table *t, const char *key, size_t key_len,
                  const struct ratelimit_limit *lim, double tokens, double now);

/* Unpin key: its bucket goes back to the default limit (refilled to now under
 * the old limit, then capped). Returns whether key was pinned. */
bool ratelimit_unpin(struct ratelimit_table *t, const char *key, size_t key_len, double now);

/* If key is pinned: its limit in *lim, its tokens at now in *tokens, true. */
bool ratelimit_lookup(struct ratelimit_table *t, const char *key, size_t key_len, double now,
                      struct ratelimit_limit *lim, double *tokens);

/* Call fn once per pinned slot with its limit and tokens at now, one stripe
 * locked at a time (in table order: the caller sorts); fn must not call back
 * into the table. Returns the number of pinned slots. */
size_t ratelimit_pinned(struct ratelimit_table *t, double now,
                        void (*fn)(const char *key, size_t key_len,
                                   const struct ratelimit_limit *lim, double tokens, void *arg),
                        void *arg);

/* Call fn once per bucket (not the overflow bucket), one stripe locked at a
 * time; fn must not call back into the table. For saving state to the store.
 * Returns the number of buckets visited. */
size_t ratelimit_snapshot(struct ratelimit_table *t,
                          void (*fn)(const char *key, size_t key_len, double tokens, double at,
                                     void *arg),
                          void *arg);

/* Buckets in the table (not counting the overflow bucket). */
size_t ratelimit_count(struct ratelimit_table *t);

/* The client_ip key of a peer address given as text (IPv4 or IPv6, an
 * optional "%scope" is ignored): IPv4 and IPv4-mapped IPv6 as dotted IPv4;
 * IPv6 with ipv6_prefix < 128 as "network/prefix" (e.g. "2001:db8::/64"),
 * with 128 as the address. Writes out (RATELIMIT_IP_KEY_MAX bytes, NUL-ended)
 * and returns its length, or -1 if ip is not an address. */
int ratelimit_key_ip(const char *ip, unsigned ipv6_prefix, char out[RATELIMIT_IP_KEY_MAX]);

/* The key for header:NAME: the header's value when present and not empty,
 * else the client_ip key of ip. *key and *key_len point into value or into
 * ipbuf. Returns 0, or -1 if the ip fallback is not an address. */
int ratelimit_key_header(const char *value, size_t value_len, const char *ip, unsigned ipv6_prefix,
                         char ipbuf[RATELIMIT_IP_KEY_MAX], const char **key, size_t *key_len);

#endif
