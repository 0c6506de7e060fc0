/* fuzz_admin: the admin API server (admin.c) as a client sees it: its HTTP/1.1
 * parsing, routing, JSON body decoding and validation, and the /clients writes
 * through a real rate-limit table and SQLite store. The server runs on its own
 * thread (admin_start) on a loopback listener, with fake /upstreams and /metrics
 * providers; each input is sent on a new connection whose write side is then shut,
 * and everything the server answers is read until it closes.
 *
 * Input: raw bytes of one or more pipelined requests. Oracle besides the
 * sanitizers: the server closes the connection once the client shut its side
 * (within 5 s), and whatever it sent starts with a status line.
 * Seeds: the requests of the shared byte-level cases (c-proxy/tests/admin_cases).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "ratelimit.h"
#include "store.h"

static struct admin *srv;             /* the server under test */
static struct ratelimit_table *table; /* /clients buckets */
static struct store *store;           /* /clients rows */
static char dir[64];                  /* temp dir of the store */
static int port;                      /* the server's port */

static json_t *fake_upstreams(void *ud)
{
    (void)ud;
    return json_pack("[{s:s,s:s,s:i,s:s,s:b,s:i,s:i,s:i,s:i,s:s}]", "name", "u1", "address",
                     "127.0.0.1:9001", "weight", 1, "state", "active", "healthy", 1, "active", 0,
                     "idle", 1, "requests", 3, "fails", 0, "last_error", "");
}

static int fake_set_state(void *ud, const char *name, bool drain, json_t **out)
{
    (void)ud;
    if (strcmp(name, "u1") != 0)
        return -1;
    *out = json_pack("{s:s,s:s}", "name", "u1", "state", drain ? "drain" : "active");
    return 0;
}

static size_t fake_metrics(void *ud, char *buf, size_t cap)
{
    (void)ud;
    static const char m[] = "twinproxy_requests_total 1\n";
    if (cap >= sizeof m - 1)
        memcpy(buf, m, sizeof m - 1);
    return sizeof m - 1;
}

static double fixed_now(void)
{
    return 1.7e9;
}

static void teardown(void)
{
    admin_stop(srv);
    store_close(store);
    ratelimit_table_free(table);
    char path[128];
    (void)snprintf(path, sizeof path, "%s/admin.db", dir);
    (void)unlink(path);
    static const char *const side[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
        (void)snprintf(path, sizeof path, "%s/admin.db%s", dir, side[i]);
        (void)unlink(path);
    }
    (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    static struct config quiet; /* events at level error only, no access log */
    quiet.log.level = CONFIG_LOG_ERROR;
    quiet.log.access = "off";
    char err[512];
    if (log_configure(&quiet, err, sizeof err) == -1)
        abort();
    (void)snprintf(dir, sizeof dir, "/tmp/twinproxy-fuzz-admin-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char db[128];
    (void)snprintf(db, sizeof db, "%s/admin.db", dir);
    struct ratelimit_limit dflt = {.capacity = 10, .rate_per_sec = 1};
    table = ratelimit_table_new(64, &dflt);
    store = store_open(db, 0, err, sizeof err);
    if (!table || !store) {
        fprintf(stderr, "fuzz_admin: %s\n", err);
        abort();
    }
    struct config_addr addr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.addrlen = sizeof *sin;
    int fd = admin_bind(&addr, "fuzz.yaml", err, sizeof err);
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    if (fd == -1 || getsockname(fd, (struct sockaddr *)&got, &gl) == -1)
        abort();
    port = ntohs(got.sin_port);
    struct admin_config cfg = {.token = "", .idle_timeout = 5.0};
    struct admin_providers prov = {fake_upstreams, fake_set_state, fake_metrics, NULL};
    struct admin_clients cl = {table, store, fixed_now};
    srv = admin_start(&cfg, fd, &prov, &cl, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "fuzz_admin: %s\n", err);
        abort();
    }
    if (atexit(teardown) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* admin_format_number on the first 8 bytes as a double */
    double x;
    if (size >= sizeof x) {
        memcpy(&x, data, sizeof x);
        char num[64];
        if (admin_format_number(x, num, sizeof num) >= sizeof num)
            abort();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd == -1)
        abort();
    /* closed with a reset once the server closed: tens of thousands of inputs must not
     * leave as many loopback ports in TIME_WAIT (connect then fails: EADDRNOTAVAIL) */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int rc;
    while ((rc = connect(fd, (struct sockaddr *)&sin, sizeof sin)) == -1 && errno == EINTR)
        ;
    if (rc == -1) {
        fprintf(stderr, "fuzz_admin: connect: %s\n", strerror(errno));
        abort();
    }
    struct timeval tv = {.tv_sec = 5};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const uint8_t *p = data;
    size_t n = size;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k == -1 && errno == EINTR)
            continue;
        if (k <= 0)
            break; /* the server may close early (413, 400): what it sent is still read */
        p += k;
        n -= (size_t)k;
    }
    (void)shutdown(fd, SHUT_WR);
    char buf[16384], first[9] = {0};
    size_t got = 0;
    for (;;) {
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k == -1 && errno == EINTR)
            continue; /* libFuzzer's leak check stops the world with signals */
        if (k == 0 || (k == -1 && errno == ECONNRESET))
            break;
        if (k == -1) {
            fprintf(stderr, "fuzz_admin: no close within 5 s after the client's EOF (%s)\n",
                    strerror(errno));
            abort();
        }
        for (ssize_t i = 0; i < k && got < 8; i++)
            first[got++] = buf[i];
    }
    if (got > 0 && strncmp(first, "HTTP/1.1", got < 8 ? got : 8) != 0)
        abort(); /* bytes that are not a response */
    close(fd);
    return 0;
}
