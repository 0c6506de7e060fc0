/* store: per-client overrides and saved bucket state in SQLite (contract
 * sections 7 and 8). docs/store.md shows the schema and the migration rule.
 *
 * Twin: py-proxy/pyproxy/store.py (the same schema, statements, error texts
 * and write path; a file written by either twin is read by the other).
 *
 * The interface is the six verbs open, load, put_client, delete_client,
 * save_buckets, close, so another backend (PostgreSQL, Redis for live tokens)
 * can stand behind it later without touching ratelimit or admin.
 *
 * Write path: one writer thread owns the SQLite connection; every call queues a
 * job for it, so the request path never waits on SQLite. put_client,
 * delete_client, load and flush wait for their job (an admin change is
 * committed before the admin reply); save_buckets copies its rows and returns
 * at once, its rows written later in ONE transaction.
 *
 * Ownership: store_open() returns a store the caller owns and ends with
 * store_close(). store_load() fills a struct store_data the caller frees with
 * store_data_free(). Calls may come from any thread.
 */
#ifndef TWINPROXY_STORE_H
#define TWINPROXY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 2 /* what this build writes; 1 is migrated on open */
#define STORE_ERR_MAX 512      /* room for "store PATH: what is wrong" */

#define STORE_F_READONLY 0x1 /* --check: no writes, no migration, no WAL switch */

/* A per-client override (a row of clients). */
struct store_client {
    char *client_id;     /* the rate-limit key; owned by whoever owns the struct */
    int64_t capacity;    /* > 0 (CHECK) */
    double rate_per_sec; /* >= 0 (CHECK) */
    double updated_at;   /* wall clock of the last change; 0 = migrated from v1 */
};

/* A saved bucket (a row of buckets): tokens as of `at` (wall clock). */
struct store_bucket {
    char *client_id; /* the rate-limit key */
    double tokens;   /* >= 0 (CHECK) */
    double at;       /* seconds since the epoch */
};

/* Everything load returns, each array in client_id order. */
struct store_data {
    int version;                  /* schema version found (0 = empty, read-only open) */
    struct store_client *clients; /* n_clients, owned */
    size_t n_clients;
    struct store_bucket *buckets; /* n_buckets, owned */
    size_t n_buckets;
};

struct store;

/* Open (creating if needed, unless read-only) the SQLite file at path, switch
 * it to WAL, create the schema in an empty file, migrate version 1 to 2, and
 * start the writer thread. Returns NULL with "store PATH: what is wrong" in
 * err when the path cannot be opened, is not a SQLite file, is not a twinproxy
 * store, or has a newer schema version. */
struct store *store_open(const char *path, unsigned flags, char *err, size_t errlen);

/* Read every client and bucket into *out (waits). Returns 0, or -1 with
 * SQLite's message in err. */
int store_load(struct store *s, struct store_data *out, char *err, size_t errlen);

/* Free what store_load filled; the struct itself is the caller's. */
void store_data_free(struct store_data *d);

/* Insert or replace one client and wait for the commit. Returns 0, or -1 with
 * SQLite's message in err (e.g. "CHECK constraint failed: capacity > 0");
 * nothing changes then. */
int store_put_client(struct store *s, const struct store_client *c, char *err, size_t errlen);

/* Delete one client and wait for the commit. Returns 1 if it existed, 0 if
 * not, -1 with SQLite's message in err. Its saved bucket stays. */
int store_delete_client(struct store *s, const char *client_id, char *err, size_t errlen);

/* Queue n buckets to be inserted or replaced in one transaction and return at
 * once (rows are copied). Returns 0, or -1 if the copy cannot be allocated.
 * A failed batch is rolled back whole; store_flush reports it. */
int store_save_buckets(struct store *s, const struct store_bucket *rows, size_t n);

/* Wait until every job queued before this call is done. Returns 0, or -1 with
 * the first error of an asynchronous job since the previous flush. */
int store_flush(struct store *s, char *err, size_t errlen);

/* Transactions committed so far (tests: a save_buckets batch is one). */
uint64_t store_commits(struct store *s);

/* Finish the queued jobs, stop the writer, close the file. NULL is a no-op. */
void store_close(struct store *s);

#endif
