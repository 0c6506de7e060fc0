/* store: SQLite behind a writer thread. Twin: py-proxy/pyproxy/store.py.
 *
 * The SQL text below is the schema of docs/store.md, character for character,
 * and the same strings are in the twin.
 */
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQL_CREATE_SCHEMA_VERSION "CREATE TABLE schema_version (version INTEGER NOT NULL)"
#define SQL_CREATE_CLIENTS                                                                         \
    "CREATE TABLE clients (client_id TEXT PRIMARY KEY, "                                           \
    "capacity INTEGER NOT NULL CHECK(capacity > 0), "                                              \
    "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0), updated_at REAL NOT NULL)"
#define SQL_CREATE_BUCKETS                                                                         \
    "CREATE TABLE buckets (client_id TEXT PRIMARY KEY, "                                           \
    "tokens REAL NOT NULL CHECK(tokens >= 0), at REAL NOT NULL)"
/* version 1 -> 2: clients gains updated_at (0 = before the migration). SQLite
 * cannot add a NOT NULL column without a default, so the table is rebuilt. */
#define SQL_MIGRATE_1_2                                                                            \
    "CREATE TABLE clients_v2 (client_id TEXT PRIMARY KEY, "                                        \
    "capacity INTEGER NOT NULL CHECK(capacity > 0), "                                              \
    "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0), updated_at REAL NOT NULL);"              \
    "INSERT INTO clients_v2 (client_id, capacity, rate_per_sec, updated_at) "                      \
    "SELECT client_id, capacity, rate_per_sec, 0 FROM clients;"                                    \
    "DROP TABLE clients;"                                                                          \
    "ALTER TABLE clients_v2 RENAME TO clients;"                                                    \
    "UPDATE schema_version SET version = 2"
#define SQL_PUT_CLIENT                                                                             \
    "INSERT OR REPLACE INTO clients (client_id, capacity, rate_per_sec, updated_at) "              \
    "VALUES (?, ?, ?, ?)"
#define SQL_DELETE_CLIENT "DELETE FROM clients WHERE client_id = ?"
#define SQL_PUT_BUCKET "INSERT OR REPLACE INTO buckets (client_id, tokens, at) VALUES (?, ?, ?)"
#define SQL_LOAD_CLIENTS_V2                                                                        \
    "SELECT client_id, capacity, rate_per_sec, updated_at FROM clients ORDER BY client_id"
#define SQL_LOAD_CLIENTS_V1                                                                        \
    "SELECT client_id, capacity, rate_per_sec, 0.0 FROM clients ORDER BY client_id"
#define SQL_LOAD_BUCKETS "SELECT client_id, tokens, at FROM buckets ORDER BY client_id"

enum store_job_kind {
    STORE_JOB_LOAD = 0, /* sync: read everything */
    STORE_JOB_PUT,      /* sync: one client */
    STORE_JOB_DELETE,   /* sync: one client */
    STORE_JOB_SAVE,     /* async: a batch of buckets, freed by the writer */
    STORE_JOB_FLUSH,    /* sync: a barrier */
};

struct store_job {
    enum store_job_kind kind;       /* what to do */
    struct store_job *next;         /* queue link */
    const struct store_client *put; /* PUT: the row (caller's) */
    const char *delete_id;          /* DELETE: the key (caller's) */
    struct store_data *load;        /* LOAD: filled by the writer */
    struct store_bucket *rows;      /* SAVE: owned copy */
    size_t n_rows;                  /* SAVE */
    bool done;                      /* sync: the writer finished it */
    int rc;                         /* sync: the result */
    char err[STORE_ERR_MAX];        /* sync: the message when rc == -1 */
};

struct store {
    sqlite3 *db;                   /* owned by the writer thread once started */
    char *path;                    /* for messages */
    int version;                   /* schema version on open */
    pthread_t writer;              /* runs writer_main */
    pthread_mutex_t lock;          /* guards the queue, stopping, async_err */
    pthread_cond_t wake;           /* the writer waits for jobs */
    pthread_cond_t finished;       /* callers wait for their sync jobs */
    struct store_job *head, *tail; /* FIFO of jobs */
    bool stopping;                 /* close: exit when the queue is empty */
    char async_err[STORE_ERR_MAX]; /* first failure of a SAVE since the last flush */
    atomic_uint_fast64_t commits;  /* transactions committed */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Run SQL with no results; -1 with SQLite's message on failure. */
static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    set_err(err, errlen, "%s", msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* One integer from a one-row query, or -1 with *ok false. */
static int64_t query_int(sqlite3 *db, const char *sql, bool *ok)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    *ok = false;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
        *ok = true;
    }
    sqlite3_finalize(st);
    return v;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* Find or create the schema; migrate 1 -> 2. On failure err holds the reason
 * without the "store PATH: " prefix. */
static int schema_prepare(sqlite3 *db, bool ro, int *version, char *err, size_t errlen)
{
    bool ok;
    if (exec(db, ro ? "BEGIN" : "BEGIN IMMEDIATE", err, errlen) == -1)
        return -1;
    int64_t has = query_int(
        db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        &ok);
    if (!ok)
        goto sqlerr;
    if (has == 0) {
        int64_t tables =
            query_int(db, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'", &ok);
        if (!ok)
            goto sqlerr;
        if (tables > 0) {
            set_err(err, errlen, "not a twinproxy store (no schema_version table)");
            goto fail;
        }
        if (ro) {
            *version = 0;
        } else {
            if (exec(db,
                     SQL_CREATE_SCHEMA_VERSION ";" SQL_CREATE_CLIENTS ";" SQL_CREATE_BUCKETS
                                               ";INSERT INTO schema_version (version) VALUES (2)",
                     err, errlen) == -1)
                goto fail;
            *version = STORE_SCHEMA_VERSION;
        }
    } else {
        int64_t rows = query_int(db, "SELECT count(*) FROM schema_version", &ok);
        if (!ok)
            goto sqlerr;
        int64_t v = query_int(db, "SELECT version FROM schema_version", &ok);
        if (rows != 1 || !ok || v < 1) {
            set_err(err, errlen, "bad schema_version table");
            goto fail;
        }
        if (v > STORE_SCHEMA_VERSION) {
            set_err(err, errlen, "schema version %lld is newer than this build's (%d)",
                    (long long)v, STORE_SCHEMA_VERSION);
            goto fail;
        }
        if (v == 1 && !ro) {
            if (exec(db, SQL_MIGRATE_1_2, err, errlen) == -1)
                goto fail;
            v = 2;
        }
        *version = (int)v;
    }
    if (exec(db, "COMMIT", err, errlen) == -1)
        goto fail;
    return 0;
sqlerr:
    set_err(err, errlen, "%s", sqlite3_errmsg(db));
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void *writer_main(void *arg);

struct store *store_open(const char *path, unsigned flags, char *err, size_t errlen)
{
    bool ro = (flags & STORE_F_READONLY) != 0;
    char why[STORE_ERR_MAX] = "";
    sqlite3 *db = NULL;
    struct store *s = NULL;
    int version = 0;
    int rc = sqlite3_open_v2(
        path, &db, ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "store %s: cannot open: %s", path,
                db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto error;
    }
    sqlite3_busy_timeout(db, 5000);
    /* The first read tells a SQLite file from anything else. */
    bool ok;
    query_int(db, "SELECT count(*) FROM sqlite_master", &ok);
    if (!ok) {
        if (sqlite3_errcode(db) == SQLITE_NOTADB)
            set_err(err, errlen, "store %s: not a SQLite database", path);
        else
            set_err(err, errlen, "store %s: cannot open: %s", path, sqlite3_errmsg(db));
        goto error;
    }
    if (!ro) {
        sqlite3_stmt *st = NULL;
        bool wal = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK &&
                   sqlite3_step(st) == SQLITE_ROW &&
                   strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (!wal) {
            set_err(err, errlen, "store %s: cannot switch to WAL", path);
            goto error;
        }
    }
    if (schema_prepare(db, ro, &version, why, sizeof why) == -1) {
        set_err(err, errlen, "store %s: %s", path, why);
        goto error;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || (s->path = xstrdup(path)) == NULL) {
        set_err(err, errlen, "store %s: out of memory", path);
        goto error;
    }
    s->db = db;
    s->version = version;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->finished, NULL);
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        set_err(err, errlen, "store %s: cannot start the writer thread", path);
        pthread_cond_destroy(&s->finished);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        goto error;
    }
    return s;
error:
    if (s != NULL)
        free(s->path);
    free(s);
    sqlite3_close(db);
    return NULL;
}

/* ---- jobs, run on the writer thread ------------------------------------------------- */

static int job_load(struct store *s, struct store_data *out, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    memset(out, 0, sizeof *out);
    out->version = s->version;
    if (s->version == 0)
        return 0;
    const char *sql = s->version == 1 ? SQL_LOAD_CLIENTS_V1 : SQL_LOAD_CLIENTS_V2;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n_clients == cap) {
            cap = cap ? cap * 2 : 16;
            void *p = realloc(out->clients, cap * sizeof *out->clients);
            if (p == NULL)
                goto oom;
            out->clients = p;
        }
        struct store_client *c = &out->clients[out->n_clients];
        c->client_id = xstrdup((const char *)sqlite3_column_text(st, 0));
        if (c->client_id == NULL)
            goto oom;
        c->capacity = sqlite3_column_int64(st, 1);
        c->rate_per_sec = sqlite3_column_double(st, 2);
        c->updated_at = sqlite3_column_double(st, 3);
        out->n_clients++;
    }
    if (rc != SQLITE_DONE)
        goto sqlerr;
    sqlite3_finalize(st);
    cap = 0;
    if (sqlite3_prepare_v2(s->db, SQL_LOAD_BUCKETS, -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n_buckets == cap) {
            cap = cap ? cap * 2 : 16;
            void *p = realloc(out->buckets, cap * sizeof *out->buckets);
            if (p == NULL)
                goto oom;
            out->buckets = p;
        }
        struct store_bucket *b = &out->buckets[out->n_buckets];
        b->client_id = xstrdup((const char *)sqlite3_column_text(st, 0));
        if (b->client_id == NULL)
            goto oom;
        b->tokens = sqlite3_column_double(st, 1);
        b->at = sqlite3_column_double(st, 2);
        out->n_buckets++;
    }
    if (rc != SQLITE_DONE)
        goto sqlerr;
    sqlite3_finalize(st);
    return 0;
oom:
    set_err(err, errlen, "out of memory");
    goto fail;
sqlerr:
    set_err(err, errlen, "%s", sqlite3_errmsg(s->db));
fail:
    sqlite3_finalize(st);
    store_data_free(out);
    return -1;
}

static int job_put(struct store *s, const struct store_client *c, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, SQL_PUT_CLIENT, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, c->client_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, c->capacity);
        sqlite3_bind_double(st, 3, c->rate_per_sec);
        sqlite3_bind_double(st, 4, c->updated_at);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = 0;
    }
    if (rc == 0)
        atomic_fetch_add(&s->commits, 1);
    else
        set_err(err, errlen, "%s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc;
}

static int job_delete(struct store *s, const char *id, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, SQL_DELETE_CLIENT, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = sqlite3_changes(s->db) > 0 ? 1 : 0;
    }
    if (rc >= 0)
        atomic_fetch_add(&s->commits, 1);
    else
        set_err(err, errlen, "%s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc;
}

static int job_save(struct store *s, const struct store_bucket *rows, size_t n, char *err,
                    size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (exec(s->db, "BEGIN IMMEDIATE", err, errlen) == -1)
        return -1;
    if (sqlite3_prepare_v2(s->db, SQL_PUT_BUCKET, -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_text(st, 1, rows[i].client_id, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 2, rows[i].tokens);
        sqlite3_bind_double(st, 3, rows[i].at);
        if (sqlite3_step(st) != SQLITE_DONE)
            goto sqlerr;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (exec(s->db, "COMMIT", err, errlen) == -1) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    atomic_fetch_add(&s->commits, 1);
    return 0;
sqlerr:
    set_err(err, errlen, "%s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void rows_free(struct store_bucket *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].client_id);
    free(rows);
}

static void *writer_main(void *arg)
{
    struct store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->head == NULL && !s->stopping)
            pthread_cond_wait(&s->wake, &s->lock);
        struct store_job *j = s->head;
        if (j == NULL)
            break; /* stopping and drained */
        s->head = j->next;
        if (s->head == NULL)
            s->tail = NULL;
        pthread_mutex_unlock(&s->lock);

        char err[STORE_ERR_MAX] = "";
        int rc = 0;
        switch (j->kind) {
        case STORE_JOB_LOAD:
            rc = job_load(s, j->load, j->err, sizeof j->err);
            break;
        case STORE_JOB_PUT:
            rc = job_put(s, j->put, j->err, sizeof j->err);
            break;
        case STORE_JOB_DELETE:
            rc = job_delete(s, j->delete_id, j->err, sizeof j->err);
            break;
        case STORE_JOB_SAVE:
            rc = job_save(s, j->rows, j->n_rows, err, sizeof err);
            break;
        case STORE_JOB_FLUSH:
            break;
        }

        pthread_mutex_lock(&s->lock);
        if (j->kind == STORE_JOB_SAVE) {
            if (rc == -1 && s->async_err[0] == '\0')
                snprintf(s->async_err, sizeof s->async_err, "%s", err);
            rows_free(j->rows, j->n_rows);
            free(j);
        } else {
            j->rc = rc;
            j->done = true;
            pthread_cond_broadcast(&s->finished);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- callers ------------------------------------------------------------------------ */

static void enqueue_locked(struct store *s, struct store_job *j)
{
    j->next = NULL;
    if (s->tail != NULL)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    pthread_cond_signal(&s->wake);
}

/* Queue a job on the caller's stack and wait for the writer to finish it. */
static int run_sync(struct store *s, struct store_job *j, char *err, size_t errlen)
{
    j->done = false;
    j->err[0] = '\0';
    pthread_mutex_lock(&s->lock);
    enqueue_locked(s, j);
    while (!j->done)
        pthread_cond_wait(&s->finished, &s->lock);
    pthread_mutex_unlock(&s->lock);
    if (j->rc == -1)
        set_err(err, errlen, "%s", j->err);
    return j->rc;
}

int store_load(struct store *s, struct store_data *out, char *err, size_t errlen)
{
    struct store_job j = {.kind = STORE_JOB_LOAD, .load = out};
    return run_sync(s, &j, err, errlen);
}

void store_data_free(struct store_data *d)
{
    for (size_t i = 0; i < d->n_clients; i++)
        free(d->clients[i].client_id);
    for (size_t i = 0; i < d->n_buckets; i++)
        free(d->buckets[i].client_id);
    free(d->clients);
    free(d->buckets);
    memset(d, 0, sizeof *d);
}

int store_put_client(struct store *s, const struct store_client *c, char *err, size_t errlen)
{
    struct store_job j = {.kind = STORE_JOB_PUT, .put = c};
    return run_sync(s, &j, err, errlen);
}

int store_delete_client(struct store *s, const char *client_id, char *err, size_t errlen)
{
    struct store_job j = {.kind = STORE_JOB_DELETE, .delete_id = client_id};
    return run_sync(s, &j, err, errlen);
}

int store_save_buckets(struct store *s, const struct store_bucket *rows, size_t n)
{
    struct store_job *j = calloc(1, sizeof *j);
    struct store_bucket *copy = calloc(n ? n : 1, sizeof *copy);
    if (j == NULL || copy == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        copy[i] = rows[i];
        copy[i].client_id = xstrdup(rows[i].client_id);
        if (copy[i].client_id == NULL) {
            rows_free(copy, i);
            copy = NULL;
            goto oom;
        }
    }
    j->kind = STORE_JOB_SAVE;
    j->rows = copy;
    j->n_rows = n;
    pthread_mutex_lock(&s->lock);
    enqueue_locked(s, j);
    pthread_mutex_unlock(&s->lock);
    return 0;
oom:
    free(copy);
    free(j);
    return -1;
}

int store_flush(struct store *s, char *err, size_t errlen)
{
    struct store_job j = {.kind = STORE_JOB_FLUSH};
    run_sync(s, &j, err, errlen);
    pthread_mutex_lock(&s->lock);
    int rc = s->async_err[0] != '\0' ? -1 : 0;
    if (rc == -1)
        set_err(err, errlen, "%s", s->async_err);
    s->async_err[0] = '\0';
    pthread_mutex_unlock(&s->lock);
    return rc;
}

uint64_t store_commits(struct store *s)
{
    return atomic_load(&s->commits);
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->writer, NULL);
    sqlite3_close(s->db);
    pthread_cond_destroy(&s->finished);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}
