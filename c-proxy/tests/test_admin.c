/* Unit tests of admin.c. Twin: py-proxy/tests/test_admin.py (same test names,
 * same fixture, same case files).
 *
 * Each server runs on a real loopback socket with fake providers, a real
 * rate-limit table and a temp SQLite store, and a fixed clock (1000.0), so every
 * response is exact. Most tests run a case file of c-proxy/tests/admin_cases/:
 * raw requests and the raw responses expected byte for byte. The Python twin
 * runs the same files, which proves the twins answer with identical bytes.
 *
 * Case file lines: "! token T" / "! max_clients N" / "! clients off" / "! idle S"
 * (fixture, before the first request), "# comment", "> REQUEST" (sent at once on
 * a NEW connection), "+ REQUEST" (sent on the same connection: it stayed open),
 * "< RESPONSE" (expected bytes; several "<" lines are concatenated), "= close"
 * (the server then closes). Escapes: \r \n \t \\ \xHH, and \*NNNNN:c for NNNNN times c.
 * ADMIN_CASES_RECORD=DIR writes each file with what the server answers to DIR
 * instead of checking (to write a new case; review every byte before keeping it).
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"

#define NOW 1000.0

/* ---------------------------------------------------------------- fake providers */

struct fake_up {
    const char *name, *address, *last_error;
    int weight, active, idle, requests, fails;
    bool healthy, drain;
};

struct fake {
    pthread_mutex_t lock; /* the admin thread calls in; the test thread reads */
    struct fake_up ups[2];
    int set_calls; /* upstream_set_state calls */
};

static json_t *up_json(const struct fake_up *u)
{
    return json_pack("{s:s,s:s,s:i,s:s,s:b,s:i,s:i,s:i,s:i,s:s}", "name", u->name, "address",
                     u->address, "weight", u->weight, "state", u->drain ? "drain" : "active",
                     "healthy", u->healthy, "active", u->active, "idle", u->idle, "requests",
                     u->requests, "fails", u->fails, "last_error", u->last_error);
}

static json_t *fake_upstreams(void *ud)
{
    struct fake *f = ud;
    pthread_mutex_lock(&f->lock);
    json_t *a = json_array();
    for (size_t i = 0; i < 2; i++)
        json_array_append_new(a, up_json(&f->ups[i]));
    pthread_mutex_unlock(&f->lock);
    return a;
}

static int fake_set_state(void *ud, const char *name, bool drain, json_t **out)
{
    struct fake *f = ud;
    int rc = -1;
    pthread_mutex_lock(&f->lock);
    f->set_calls++;
    for (size_t i = 0; i < 2; i++)
        if (strcmp(f->ups[i].name, name) == 0) {
            f->ups[i].drain = drain;
            *out = up_json(&f->ups[i]);
            rc = 0;
        }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static const char METRICS[] = "# TYPE twinproxy_config_generation gauge\n"
                              "twinproxy_config_generation 1\n";

static size_t fake_metrics(void *ud, char *buf, size_t cap)
{
    (void)ud;
    size_t n = sizeof METRICS - 1;
    if (n <= cap)
        memcpy(buf, METRICS, n);
    return n;
}

static double fixed_now(void)
{
    return NOW;
}

/* ---------------------------------------------------------------- fixture */

struct fix {
    char dir[64];                  /* temp dir */
    char db[128];                  /* dir/admin.db */
    struct fake fake;              /* providers */
    struct ratelimit_table *table; /* default {10, 1} */
    struct store *store;           /* temp store */
    struct admin *admin;           /* the server */
    int port;                      /* its port */
};

static void fix_start(struct fix *f, const char *token, uint64_t max_clients, bool clients,
                      double idle)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/twinproxy-admin-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/admin.db", f->dir);
    pthread_mutex_init(&f->fake.lock, NULL);
    f->fake.ups[0] = (struct fake_up){"u1", "127.0.0.1:9001", "", 1, 0, 2, 10, 0, true, false};
    f->fake.ups[1] =
        (struct fake_up){"u 2", "127.0.0.1:9002", "connect: refused", 3, 1, 0, 7, 4, false, true};
    struct ratelimit_limit dflt = {.capacity = 10, .rate_per_sec = 1};
    f->table = ratelimit_table_new(max_clients, &dflt);
    assert_non_null(f->table);
    char err[STORE_ERR_MAX];
    f->store = store_open(f->db, 0, err, sizeof err);
    assert_non_null(f->store);

    struct config_addr addr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.addrlen = sizeof *sin;
    addr.line = 7;
    int fd = admin_bind(&addr, "t.yaml", err, sizeof err);
    assert_true(fd >= 0);
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&got, &gl), 0);
    f->port = ntohs(got.sin_port);

    struct admin_config cfg = {.token = token, .idle_timeout = idle};
    struct admin_providers prov = {fake_upstreams, fake_set_state, fake_metrics, &f->fake};
    struct admin_clients cl = {f->table, f->store, fixed_now};
    f->admin = admin_start(&cfg, fd, &prov, clients ? &cl : NULL, err, sizeof err);
    if (f->admin == NULL)
        fail_msg("%s", err);
}

static void fix_stop(struct fix *f)
{
    admin_stop(f->admin);
    store_close(f->store);
    ratelimit_table_free(f->table);
    pthread_mutex_destroy(&f->fake.lock);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- wire helpers */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k == -1 && errno == EINTR)
            continue;
        if (k == -1)
            return; /* the server may close early (413): what it sent is still read */
        p += k;
        n -= (size_t)k;
    }
}

/* Read exactly n bytes (or until EOF / the 5 s timeout). Returns the count. */
static size_t recv_n(int fd, char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = recv(fd, out + got, n - got, 0);
        if (k == -1 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    return got;
}

/* Whether the server closes within ms (EOF, or a reset after the lingering close). */
static bool closes_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[256];
    for (;;) {
        int r = poll(&p, 1, ms);
        if (r <= 0)
            return false;
        ssize_t k = recv(fd, b, sizeof b, 0);
        if (k == 0 || k == -1)
            return true;
    }
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10;
}

/* Decode a case line's escapes; returns a malloc'd buffer, *len its length. */
static char *unescape(const char *s, size_t *len)
{
    size_t cap = strlen(s) + 1;
    for (const char *r = strstr(s, "\\*"); r; r = strstr(r + 2, "\\*"))
        cap += (size_t)atoi(r + 2);
    char *out = malloc(cap);
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        if (*p != '\\') {
            out[n++] = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'r':
            out[n++] = '\r';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case '\\':
            out[n++] = '\\';
            break;
        case 'x':
            out[n++] = (char)(hexv(p[1]) * 16 + hexv(p[2]));
            p += 2;
            break;
        case '*': {
            int k = atoi(p + 1);
            p = strchr(p, ':') + 1;
            memset(out + n, *p, (size_t)k);
            n += (size_t)k;
            break;
        }
        default:
            fail_msg("bad escape \\%c", *p);
        }
    }
    *len = n;
    return out;
}

static FILE *rec; /* record mode: the file being written, else stdout */

static void print_escaped(const char *p, size_t n)
{
    FILE *o = rec ? rec : stdout;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            fputs("\\r", o);
        else if (c == '\n')
            fputs("\\n", o);
        else if (c == '\\')
            fputs("\\\\", o);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(o, "\\x%02x", c);
        else
            fputc(c, o);
    }
}

static FILE *open_case(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "tests/admin_cases/%s", name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(path, sizeof path, "c-proxy/tests/admin_cases/%s", name);
        fp = fopen(path, "r");
    }
    if (fp == NULL)
        fail_msg("cannot open admin case file %s", name);
    return fp;
}

/* Run (or, with ADMIN_CASES_RECORD=1, record) one case file. */
static void run_cases(const char *name)
{
    FILE *fp = open_case(name);
    const char *recdir = getenv("ADMIN_CASES_RECORD");
    bool record = recdir != NULL;
    if (record) {
        char rp[512];
        snprintf(rp, sizeof rp, "%s/%s", recdir, name);
        rec = fopen(rp, "w");
        assert_non_null(rec);
    }
    char *token = strdup("");
    uint64_t max_clients = 64;
    bool clients = true;
    double idle = 0;
    struct fix f;
    bool started = false;
    int fd = -1;
    char *want = NULL;
    size_t want_len = 0;
    char line[131072];
    int lineno = 0;

    while (fgets(line, sizeof line, fp) != NULL) {
        lineno++;
        size_t ll = strlen(line);
        while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
            line[--ll] = '\0';
        if (line[0] == '!') {
            char *v = strchr(line + 2, ' ');
            v = v ? v + 1 : (char *)"";
            if (strncmp(line, "! token", 7) == 0) {
                free(token);
                token = strdup(v);
            } else if (strncmp(line, "! max_clients", 13) == 0) {
                max_clients = strtoull(v, NULL, 10);
            } else if (strncmp(line, "! clients off", 13) == 0) {
                clients = false;
            } else if (strncmp(line, "! idle", 6) == 0) {
                idle = strtod(v, NULL);
            }
            if (record)
                fprintf(rec, "%s\n", line);
            continue;
        }
        if (line[0] == '#' || ll == 0) {
            if (record)
                fprintf(rec, "%s\n", line);
            continue;
        }
        if (!started) {
            fix_start(&f, token, max_clients, clients, idle);
            started = true;
        }
        /* a "<" block ends at the next ">", "=" or end: check it */
        if (line[0] != '<' && want != NULL) {
            char *got = malloc(want_len + 1);
            size_t n = recv_n(fd, got, want_len);
            if (n != want_len || memcmp(got, want, want_len) != 0) {
                printf("%s:%d: expected:\n", name, lineno);
                print_escaped(want, want_len);
                printf("\ngot:\n");
                print_escaped(got, n);
                printf("\n");
                fail_msg("%s: response before line %d differs", name, lineno);
            }
            free(got);
            free(want);
            want = NULL;
            want_len = 0;
        }
        if (line[0] == '>' || line[0] == '+') {
            if (line[0] == '>' || fd == -1) {
                if (fd != -1)
                    close(fd);
                fd = dial(f.port);
            }
            size_t n;
            char *req = unescape(line + 2, &n);
            send_all(fd, req, n);
            free(req);
            if (record) {
                fprintf(rec, "%s\n", line);
                static char buf[200000];
                struct pollfd p = {.fd = fd, .events = POLLIN};
                size_t got = 0;
                bool eof = false;
                while (poll(&p, 1, 300) > 0) {
                    ssize_t k = recv(fd, buf + got, sizeof buf - got, 0);
                    if (k <= 0) {
                        eof = true;
                        break;
                    }
                    got += (size_t)k;
                }
                fprintf(rec, "< ");
                print_escaped(buf, got);
                fprintf(rec, "\n%s", eof ? "= close\n" : "");
            }
        } else if (line[0] == '<' && !record) {
            size_t n;
            char *part = unescape(line + 2, &n);
            want = realloc(want, want_len + n + 1);
            memcpy(want + want_len, part, n);
            want_len += n;
            free(part);
        } else if (line[0] == '=' && !record) {
            if (!closes_within(fd, 5000))
                fail_msg("%s:%d: the server did not close", name, lineno);
        }
    }
    if (want != NULL && !record) {
        char *got = malloc(want_len + 1);
        size_t n = recv_n(fd, got, want_len);
        if (n != want_len || memcmp(got, want, want_len) != 0) {
            print_escaped(got, n);
            printf("\n");
            fail_msg("%s: last response differs", name);
        }
        free(got);
    }
    free(want);
    if (fd != -1)
        close(fd);
    fclose(fp);
    if (rec != NULL) {
        fclose(rec);
        rec = NULL;
    }
    free(token);
    if (started)
        fix_stop(&f);
}

/* ---------------------------------------------------------------- tests */

static void test_healthz_metrics_upstreams(void **state)
{
    (void)state;
    run_cases("upstreams.txt");
}

static void test_token_required(void **state)
{
    (void)state;
    run_cases("auth.txt");
}

static void test_not_found_and_method_not_allowed(void **state)
{
    (void)state;
    run_cases("routes.txt");
}

static void test_clients_crud(void **state)
{
    (void)state;
    run_cases("clients.txt");
}

static void test_clients_400_messages(void **state)
{
    (void)state;
    run_cases("errors.txt");
}

static void test_clients_paging(void **state)
{
    (void)state;
    run_cases("paging.txt");
}

static void test_clients_url_decoding(void **state)
{
    (void)state;
    run_cases("decoding.txt");
}

static void test_clients_table_full_503(void **state)
{
    (void)state;
    run_cases("table_full.txt");
}

static void test_clients_404_without_rate_limit(void **state)
{
    (void)state;
    run_cases("no_rate_limit.txt");
}

static void test_keepalive_and_pipelining(void **state)
{
    (void)state;
    run_cases("keepalive.txt");
}

static void test_limits_413_431_400(void **state)
{
    (void)state;
    run_cases("limits.txt");
}

/* 500 pipelined requests sent before any response is read: the server stops
 * parsing while its output backs up, and still answers all of them in order. */
static void test_pipelined_backpressure(void **state)
{
    (void)state;
    struct fix f;
    fix_start(&f, "", 64, true, 0);
    static const char req[] = "GET /upstreams HTTP/1.1\r\nHost: a\r\n\r\n";
    enum { N = 500 };
    size_t rl = sizeof req - 1;
    char *all = malloc(rl * N);
    for (size_t i = 0; i < N; i++)
        memcpy(all + i * rl, req, rl);
    /* the expected response, from one request on its own connection */
    int fd = dial(f.port);
    send_all(fd, req, rl);
    char one[1024];
    size_t head = recv_n(fd, one, 60); /* "...Content-Length: 305\r\n\r\n" is 72 bytes */
    assert_int_equal(head, 60);
    size_t olen = 60 + recv_n(fd, one + 60, 72 + 305 - 60);
    assert_int_equal(olen, 72 + 305);
    close(fd);
    fd = dial(f.port);
    send_all(fd, all, rl * N);
    char *got = malloc(olen * N);
    assert_int_equal(recv_n(fd, got, olen * N), olen * N);
    for (size_t i = 0; i < N; i++)
        assert_memory_equal(got + i * olen, one, olen);
    close(fd);
    free(got);
    free(all);
    fix_stop(&f);
}

static void test_idle_timeout_closes(void **state)
{
    (void)state;
    struct fix f;
    fix_start(&f, "", 64, true, 0.2);
    int fd = dial(f.port);
    /* a connection that never sends is closed by the server: wait for its EOF */
    assert_true(closes_within(fd, 5000));
    close(fd);
    fix_stop(&f);
}

static void test_committed_before_reply(void **state)
{
    (void)state;
    struct fix f;
    fix_start(&f, "", 64, true, 0);
    int fd = dial(f.port);
    const char req[] = "POST /clients HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n"
                       "{\"client_id\":\"c1\",\"capacity\":5,\"rate_per_sec\":0.5}";
    send_all(fd, req, sizeof req - 1);
    char buf[512];
    size_t n = recv_n(fd, buf, 12);
    assert_int_equal(n, 12);
    assert_memory_equal(buf, "HTTP/1.1 201", 12);
    /* the reply is out: the row must already be in the file (another connection) */
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT capacity, rate_per_sec, updated_at FROM clients "
                                        "WHERE client_id = 'c1'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), 5);
    assert_true(sqlite3_column_double(st, 1) == 0.5);
    assert_true(sqlite3_column_double(st, 2) == NOW);
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* and every worker sees the override at once: it is pinned in the table */
    struct ratelimit_result r;
    ratelimit_take(f.table, "c1", 2, NULL, NOW, &r);
    assert_int_equal(r.limit, 5);
    assert_int_equal(r.remaining, 4);
    close(fd);
    fix_stop(&f);
}

static void test_bind_error_message(void **state)
{
    (void)state;
    struct fix f;
    fix_start(&f, "", 64, true, 0);
    struct config_addr addr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)f.port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.addrlen = sizeof *sin;
    addr.line = 12;
    char err[256];
    assert_int_equal(admin_bind(&addr, "t.yaml", err, sizeof err), -1);
    assert_string_equal(err, "t.yaml:12: admin.listen: address in use");
    fix_stop(&f);
}

static void test_format_number(void **state)
{
    (void)state;
    static const struct {
        double x;
        const char *want;
    } cases[] = {
        {10, "10"},
        {0.5, "0.5"},
        {0.1, "0.1"},
        {1e-05, "1e-05"},
        {-0.0, "0"},
        {1e20, "1e+20"},
        {2.5e15, "2500000000000000"},
        {1.0 / 3, "0.333333333333333"},
        {1234567.125, "1234567.125"},
        {9007199254740992.0, "9.00719925474099e+15"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        admin_format_number(cases[i].x, out, sizeof out);
        assert_string_equal(out, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_metrics_upstreams),
        cmocka_unit_test(test_token_required),
        cmocka_unit_test(test_not_found_and_method_not_allowed),
        cmocka_unit_test(test_clients_crud),
        cmocka_unit_test(test_clients_400_messages),
        cmocka_unit_test(test_clients_paging),
        cmocka_unit_test(test_clients_url_decoding),
        cmocka_unit_test(test_clients_table_full_503),
        cmocka_unit_test(test_clients_404_without_rate_limit),
        cmocka_unit_test(test_keepalive_and_pipelining),
        cmocka_unit_test(test_limits_413_431_400),
        cmocka_unit_test(test_pipelined_backpressure),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_committed_before_reply),
        cmocka_unit_test(test_bind_error_message),
        cmocka_unit_test(test_format_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
