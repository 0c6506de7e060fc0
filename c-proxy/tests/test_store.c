/* Unit tests of store.c. Twin: py-proxy/tests/test_store.py (same test names,
 * same fixture rows, same expected dump).
 *
 * test_db_from_other_twin writes a file through this store and reads it back
 * through the Python twin (`python -m pyproxy.store dump FILE`); the Python
 * suite does the reverse with build/tests/store_dump. The interpreter is
 * $TWINPROXY_PYTHON, else the repository's .venv (from c-proxy/ or the root).
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, popen */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

/* The fixture both twins write, and its dump. */
static const struct store_client FIXTURE_CLIENTS[] = {
    {"10.0.0.1", 5, 0.1, 1700000000.25},
    {"2001:db8::/64", 100, 0, 1700000000.5},
    {"key with space%", 1000000000, 1e-05, 0},
};
static const struct store_bucket FIXTURE_BUCKETS[] = {
    {"anon", 0, 1700000002},
    {"10.0.0.1", 2.5, 1700000001.125},
};
static const char FIXTURE_DUMP[] = "schema_version 2\n"
                                   "client 10.0.0.1 5 0.10000000000000001 1700000000.25\n"
                                   "client 2001:db8::/64 100 0 1700000000.5\n"
                                   "client key%20with%20space%25 1000000000 "
                                   "1.0000000000000001e-05 0\n"
                                   "bucket 10.0.0.1 2.5 1700000001.125\n"
                                   "bucket anon 0 1700000002\n";

struct tmp {
    char dir[64];   /* a fresh directory */
    char path[128]; /* dir/t.db */
};

static int setup(void **state)
{
    struct tmp *t = calloc(1, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/twinproxy-store-XXXXXX");
    if (mkdtemp(t->dir) == NULL)
        return -1;
    snprintf(t->path, sizeof t->path, "%s/t.db", t->dir);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tmp *t = *state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

static struct store *open_ok(const char *path)
{
    char err[STORE_ERR_MAX] = "";
    struct store *s = store_open(path, 0, err, sizeof err);
    if (s == NULL)
        fail_msg("%s", err);
    return s;
}

static void expect_open_error(const char *path, const char *want)
{
    char err[STORE_ERR_MAX] = "";
    struct store *s = store_open(path, 0, err, sizeof err);
    if (s != NULL) {
        store_close(s);
        fail_msg("opened, expected: %s", want);
    }
    assert_string_equal(err, want);
}

static void load_ok(struct store *s, struct store_data *d)
{
    char err[STORE_ERR_MAX] = "";
    if (store_load(s, d, err, sizeof err) == -1)
        fail_msg("%s", err);
}

/* Raw SQL on a file, outside the store. */
static void raw(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s", msg);
    sqlite3_close(db);
}

static void write_fixture(const char *path)
{
    char err[STORE_ERR_MAX] = "";
    struct store *s = open_ok(path);
    for (size_t i = 0; i < sizeof FIXTURE_CLIENTS / sizeof FIXTURE_CLIENTS[0]; i++)
        assert_int_equal(store_put_client(s, &FIXTURE_CLIENTS[i], err, sizeof err), 0);
    assert_int_equal(store_save_buckets(s, FIXTURE_BUCKETS, 2), 0);
    assert_int_equal(store_flush(s, err, sizeof err), 0);
    store_close(s);
}

static void test_round_trip(void **state)
{
    struct tmp *t = *state;
    char err[STORE_ERR_MAX] = "";
    struct store_data d;

    write_fixture(t->path);
    struct store *s = open_ok(t->path);
    load_ok(s, &d);
    assert_int_equal(d.version, 2);
    assert_int_equal(d.n_clients, 3);
    assert_string_equal(d.clients[0].client_id, "10.0.0.1");
    assert_int_equal(d.clients[0].capacity, 5);
    assert_true(d.clients[0].rate_per_sec == 0.1);
    assert_true(d.clients[0].updated_at == 1700000000.25);
    assert_string_equal(d.clients[2].client_id, "key with space%");
    assert_int_equal(d.clients[2].capacity, 1000000000);
    assert_true(d.clients[2].rate_per_sec == 1e-05);
    assert_int_equal(d.n_buckets, 2);
    assert_string_equal(d.buckets[0].client_id, "10.0.0.1");
    assert_true(d.buckets[0].tokens == 2.5);
    assert_true(d.buckets[0].at == 1700000001.125);
    store_data_free(&d);

    /* replace, delete, delete again */
    struct store_client c = {"10.0.0.1", 7, 3.5, 1700000009};
    assert_int_equal(store_put_client(s, &c, err, sizeof err), 0);
    assert_int_equal(store_delete_client(s, "2001:db8::/64", err, sizeof err), 1);
    assert_int_equal(store_delete_client(s, "2001:db8::/64", err, sizeof err), 0);
    store_close(s);

    s = open_ok(t->path);
    load_ok(s, &d);
    assert_int_equal(d.n_clients, 2);
    assert_int_equal(d.clients[0].capacity, 7);
    assert_true(d.clients[0].rate_per_sec == 3.5);
    assert_string_equal(d.clients[1].client_id, "key with space%");
    assert_int_equal(d.n_buckets, 2); /* a deleted override keeps its bucket */
    store_data_free(&d);
    store_close(s);
}

static void test_constraint_errors(void **state)
{
    struct tmp *t = *state;
    char err[STORE_ERR_MAX] = "";
    struct store_data d;
    struct store *s = open_ok(t->path);

    struct store_client ok = {"a", 10, 1, 1};
    assert_int_equal(store_put_client(s, &ok, err, sizeof err), 0);
    struct store_client zero = {"a", 0, 1, 2};
    assert_int_equal(store_put_client(s, &zero, err, sizeof err), -1);
    assert_string_equal(err, "CHECK constraint failed: capacity > 0");
    struct store_client neg = {"b", 10, -0.5, 2};
    assert_int_equal(store_put_client(s, &neg, err, sizeof err), -1);
    assert_string_equal(err, "CHECK constraint failed: rate_per_sec >= 0");

    /* a batch with one bad row is rolled back whole */
    struct store_bucket rows[] = {{"a", 1, 5}, {"b", -1, 5}};
    assert_int_equal(store_save_buckets(s, rows, 2), 0);
    assert_int_equal(store_flush(s, err, sizeof err), -1);
    assert_string_equal(err, "CHECK constraint failed: tokens >= 0");
    assert_int_equal(store_flush(s, err, sizeof err), 0); /* reported once */

    load_ok(s, &d);
    assert_int_equal(d.n_clients, 1);
    assert_int_equal(d.clients[0].capacity, 10);
    assert_int_equal(d.n_buckets, 0);
    store_data_free(&d);
    store_close(s);
}

static void test_migration_from_v1(void **state)
{
    struct tmp *t = *state;
    struct store_data d;
    raw(t->path, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                 "INSERT INTO schema_version (version) VALUES (1);"
                 "CREATE TABLE clients (client_id TEXT PRIMARY KEY, "
                 "capacity INTEGER NOT NULL CHECK(capacity > 0), "
                 "rate_per_sec REAL NOT NULL CHECK(rate_per_sec >= 0));"
                 "CREATE TABLE buckets (client_id TEXT PRIMARY KEY, "
                 "tokens REAL NOT NULL CHECK(tokens >= 0), at REAL NOT NULL);"
                 "INSERT INTO clients VALUES ('old', 3, 0.5);"
                 "INSERT INTO buckets VALUES ('old', 1.5, 1700000000);");
    for (int round = 0; round < 2; round++) { /* the second open finds version 2 */
        struct store *s = open_ok(t->path);
        load_ok(s, &d);
        assert_int_equal(d.version, 2);
        assert_int_equal(d.n_clients, 1);
        assert_string_equal(d.clients[0].client_id, "old");
        assert_int_equal(d.clients[0].capacity, 3);
        assert_true(d.clients[0].rate_per_sec == 0.5);
        assert_true(d.clients[0].updated_at == 0);
        assert_int_equal(d.n_buckets, 1);
        assert_true(d.buckets[0].tokens == 1.5);
        store_data_free(&d);
        store_close(s);
    }
    /* the migrated table enforces the version 2 constraints */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO clients VALUES ('x', 1, 1, NULL)", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
}

static void test_newer_schema_refused(void **state)
{
    struct tmp *t = *state;
    char want[STORE_ERR_MAX];
    write_fixture(t->path);
    raw(t->path, "UPDATE schema_version SET version = 3");
    snprintf(want, sizeof want, "store %s: schema version 3 is newer than this build's (2)",
             t->path);
    expect_open_error(t->path, want);
}

static void test_not_sqlite_refused(void **state)
{
    struct tmp *t = *state;
    char want[STORE_ERR_MAX];
    FILE *f = fopen(t->path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database\n", f);
    fclose(f);
    snprintf(want, sizeof want, "store %s: not a SQLite database", t->path);
    expect_open_error(t->path, want);

    expect_open_error("/nonexistent-twinproxy-dir/t.db",
                      "store /nonexistent-twinproxy-dir/t.db: cannot open: "
                      "unable to open database file");

    unlink(t->path);
    raw(t->path, "CREATE TABLE other (x)");
    snprintf(want, sizeof want, "store %s: not a twinproxy store (no schema_version table)",
             t->path);
    expect_open_error(t->path, want);
}

static void test_wal_mode(void **state)
{
    struct tmp *t = *state;
    struct store *s = open_ok(t->path);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    store_close(s);
}

static void test_save_buckets_batched(void **state)
{
    struct tmp *t = *state;
    enum { N = 500 };
    char err[STORE_ERR_MAX] = "";
    struct store_data d;
    struct store_bucket rows[N];
    char ids[N][16];
    struct store *s = open_ok(t->path);

    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "c%04d", i);
        rows[i] = (struct store_bucket){ids[i], i * 0.5, 1700000000 + i};
    }
    uint64_t before = store_commits(s);
    assert_int_equal(store_save_buckets(s, rows, N), 0);
    memset(ids, 0, sizeof ids); /* the store copied the rows */
    assert_int_equal(store_flush(s, err, sizeof err), 0);
    assert_int_equal(store_commits(s) - before, 1);
    load_ok(s, &d);
    assert_int_equal(d.n_buckets, N);
    assert_string_equal(d.buckets[N - 1].client_id, "c0499");
    assert_true(d.buckets[N - 1].tokens == 249.5);
    store_data_free(&d);
    store_close(s);
}

static const char *python_path(void)
{
    const char *env = getenv("TWINPROXY_PYTHON");
    if (env != NULL && env[0] != '\0')
        return env;
    if (access("../.venv/bin/python", X_OK) == 0)
        return "../.venv/bin/python";
    if (access(".venv/bin/python", X_OK) == 0)
        return ".venv/bin/python";
    return NULL;
}

static void test_db_from_other_twin(void **state)
{
    struct tmp *t = *state;
    const char *py = python_path();
    char cmd[512], out[4096];
    if (py == NULL)
        fail_msg("no Python twin: set TWINPROXY_PYTHON or run `make deps`");
    write_fixture(t->path);
    snprintf(cmd, sizeof cmd, "'%s' -m pyproxy.store dump '%s'", py, t->path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, FIXTURE_DUMP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraint_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_sqlite_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_buckets_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_from_other_twin, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
