/* Unit tests of config.c. Twin: py-proxy/tests/test_config.py (same cases, same
 * expected messages).
 *
 * The files in tests/config_cases/ are shared with the twin: each NN-*.yaml starts
 * with "# expect: LINE: message" and must fail with exactly "PATH:LINE: message";
 * each ok-*.yaml must load. The directory is found from $CONFIG_CASES_DIR, else
 * from the working directory (c-proxy/ or the repository root) or this file's path.
 */
#define _POSIX_C_SOURCE 200809L /* scandir, alphasort, strdup */

/* cmocka needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define MIN_UP "upstreams:\n  - address: 127.0.0.1:9001\n"

/* ---- helpers -------------------------------------------------------------- */

static struct config *load(const char *text, char *err)
{
    return config_load_string("t.yaml", text, strlen(text), err, CONFIG_ERR_MAX);
}

/* Loads text, which must fail with exactly want. */
static void expect_error(const char *text, const char *want)
{
    char err[CONFIG_ERR_MAX] = "";
    struct config *cfg = load(text, err);

    if (cfg != NULL) {
        config_free(cfg);
        fail_msg("loaded, expected: %s", want);
    }
    assert_string_equal(err, want);
}

static struct config *load_ok(const char *text)
{
    char err[CONFIG_ERR_MAX] = "";
    struct config *cfg = load(text, err);

    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static int addr_port(const struct config_addr *a)
{
    if (a->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->addr)->sin_port);
}

static void assert_addr(const struct config_addr *a, int family, const char *host, int port)
{
    char buf[INET6_ADDRSTRLEN];
    const void *raw = family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)&a->addr)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)&a->addr)->sin_addr;

    assert_int_equal(a->addr.ss_family, family);
    assert_int_equal(a->addrlen,
                     family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    assert_non_null(inet_ntop(family, raw, buf, sizeof buf));
    assert_string_equal(buf, host);
    assert_int_equal(addr_port(a), port);
}

static bool is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The shared cases directory, or NULL. */
static const char *cases_dir(void)
{
    static char from_file[512];
    const char *env = getenv("CONFIG_CASES_DIR");
    const char *slash = strrchr(__FILE__, '/');

    if (env != NULL && env[0] != '\0')
        return env;
    if (is_dir("tests/config_cases"))
        return "tests/config_cases";
    if (is_dir("c-proxy/tests/config_cases"))
        return "c-proxy/tests/config_cases";
    snprintf(from_file, sizeof from_file, "%.*s/config_cases",
             slash != NULL ? (int)(slash - __FILE__) : 1, slash != NULL ? __FILE__ : ".");
    return is_dir(from_file) ? from_file : NULL;
}

/* ---- defaults and every key ----------------------------------------------- */

static void test_defaults(void **state)
{
    struct config *cfg = load_ok(MIN_UP);

    (void)state;
    assert_string_equal(cfg->path, "t.yaml");
    assert_string_equal(cfg->listen.text, "127.0.0.1:8080");
    assert_addr(&cfg->listen, AF_INET, "127.0.0.1", 8080);
    assert_int_equal(cfg->listen.line, 0);
    assert_int_equal(cfg->workers, 1);
    assert_false(cfg->admin_enabled);
    assert_string_equal(cfg->admin_token, "");
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "127.0.0.1:9001");
    assert_string_equal(cfg->upstreams[0].addr.text, "127.0.0.1:9001");
    assert_addr(&cfg->upstreams[0].addr, AF_INET, "127.0.0.1", 9001);
    assert_int_equal(cfg->upstreams[0].addr.line, 2);
    assert_int_equal(cfg->upstreams[0].weight, 1);
    assert_int_equal(cfg->balancer, CONFIG_BALANCER_ROUND_ROBIN);
    assert_int_equal(cfg->hash_key, CONFIG_KEY_CLIENT_IP);
    assert_null(cfg->hash_header);
    assert_int_equal(cfg->limits.max_client_connections, 10000);
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.max_body_bytes, 0);
    assert_int_equal(cfg->limits.upstream_max_connections, 256);
    assert_int_equal(cfg->limits.upstream_idle_connections, 64);
    assert_int_equal(cfg->timeouts.connect_ms, 1000);
    assert_int_equal(cfg->timeouts.header_ms, 10000);
    assert_int_equal(cfg->timeouts.idle_ms, 60000);
    assert_int_equal(cfg->timeouts.read_ms, 30000);
    assert_int_equal(cfg->timeouts.write_ms, 30000);
    assert_int_equal(cfg->timeouts.total_ms, 60000);
    assert_int_equal(cfg->timeouts.queue_ms, 1000);
    assert_int_equal(cfg->timeouts.shutdown_ms, 30000);
    assert_int_equal(cfg->timeouts.min_rate, 0);
    assert_int_equal(cfg->timeouts.min_rate_window_ms, 10000);
    assert_int_equal(cfg->health.max_fails, 3);
    assert_int_equal(cfg->health.fail_timeout_ms, 10000);
    assert_false(cfg->health.check.enabled);
    assert_string_equal(cfg->health.check.path, "/healthz");
    assert_int_equal(cfg->health.check.interval_ms, 2000);
    assert_int_equal(cfg->health.check.timeout_ms, 1000);
    assert_int_equal(cfg->health.check.rise, 2);
    assert_int_equal(cfg->health.check.fall, 2);
    assert_int_equal(cfg->retries, 2);
    assert_int_equal(cfg->retry_budget.percent, 20);
    assert_int_equal(cfg->retry_budget.min_concurrent, 3);
    assert_false(cfg->rate_limit.enabled);
    assert_int_equal(cfg->rate_limit.key, CONFIG_KEY_CLIENT_IP);
    assert_null(cfg->rate_limit.key_header);
    assert_true(cfg->rate_limit.default_capacity == 100.0);
    assert_true(cfg->rate_limit.default_rate_per_sec == 50.0);
    assert_string_equal(cfg->rate_limit.store, "twinproxy.db");
    assert_int_equal(cfg->rate_limit.ipv6_prefix, 64);
    assert_int_equal(cfg->rate_limit.max_clients, 100000);
    assert_int_equal(cfg->log.level, CONFIG_LOG_INFO);
    assert_string_equal(cfg->log.access, "stdout");
    assert_int_equal(cfg->log.format, CONFIG_LOG_JSON);
    config_free(cfg);
}

/* Sections present but empty keep their defaults, and enable what they enable.
 * An empty rate_limit: enables rate limiting with every default; an empty admin:
 * without a listen leaves the admin API off. */
static void test_empty_sections(void **state)
{
    struct config *cfg = load_ok(MIN_UP "limits: {}\ntimeouts: {}\nhealth: {check: {}}\n"
                                        "retry_budget: {}\nlog: {}\n");

    (void)state;
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->timeouts.read_ms, 30000);
    assert_true(cfg->health.check.enabled);
    assert_string_equal(cfg->health.check.path, "/healthz");
    assert_int_equal(cfg->retry_budget.percent, 20);
    assert_int_equal(cfg->retry_budget.min_concurrent, 3);
    assert_false(cfg->rate_limit.enabled);
    assert_true(cfg->rate_limit.default_capacity == 100.0);
    assert_false(cfg->admin_enabled);
    config_free(cfg);
    cfg = load_ok(MIN_UP "log: {}\nrate_limit: {}\nadmin: {}\n");
    assert_true(cfg->rate_limit.enabled);
    assert_string_equal(cfg->rate_limit.store, "twinproxy.db");
    assert_int_equal(cfg->rate_limit.store_line, 4); /* no store key: the line of rate_limit */
    assert_false(cfg->admin_enabled);
    config_free(cfg);
}

static void test_every_key(void **state)
{
    char err[CONFIG_ERR_MAX] = "", path[600];
    const char *dir = cases_dir();
    struct config *cfg;

    (void)state;
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/ok-full.yaml", dir);
    cfg = config_load(path, err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, path);
    assert_addr(&cfg->listen, AF_INET, "0.0.0.0", 18080);
    assert_int_equal(cfg->listen.line, 2);
    assert_int_equal(cfg->workers, 4);
    assert_false(cfg->admin_enabled); /* admin: is refused until it ships (62-) */
    assert_string_equal(cfg->admin_token, "");
    assert_int_equal(cfg->n_upstreams, 3);
    assert_string_equal(cfg->upstreams[0].name, "u1");
    assert_int_equal(cfg->upstreams[0].weight, 5);
    assert_string_equal(cfg->upstreams[1].name, "[::1]:9002");
    assert_addr(&cfg->upstreams[1].addr, AF_INET6, "::1", 9002);
    assert_int_equal(cfg->upstreams[1].weight, 1);
    assert_string_equal(cfg->upstreams[2].name, "u3");
    assert_addr(&cfg->upstreams[2].addr, AF_INET, "10.0.0.3", 80);
    assert_int_equal(cfg->upstreams[2].weight, 1000);
    assert_int_equal(cfg->balancer, CONFIG_BALANCER_HASH);
    assert_int_equal(cfg->hash_key, CONFIG_KEY_HEADER);
    assert_string_equal(cfg->hash_header, "X-User");
    assert_int_equal(cfg->limits.max_client_connections, 500);
    assert_int_equal(cfg->limits.max_header_bytes, 8192);
    assert_int_equal(cfg->limits.max_body_bytes, 10 * 1024 * 1024);
    assert_int_equal(cfg->limits.upstream_max_connections, 32);
    assert_int_equal(cfg->limits.upstream_idle_connections, 0);
    assert_int_equal(cfg->timeouts.connect_ms, 250);
    assert_int_equal(cfg->timeouts.header_ms, 2000);
    assert_int_equal(cfg->timeouts.idle_ms, 60000);
    assert_int_equal(cfg->timeouts.read_ms, 3600000);
    assert_int_equal(cfg->timeouts.write_ms, 1500);
    assert_int_equal(cfg->timeouts.total_ms, 90000);
    assert_int_equal(cfg->timeouts.queue_ms, 100);
    assert_int_equal(cfg->timeouts.shutdown_ms, 0);
    assert_int_equal(cfg->timeouts.min_rate, 2048);
    assert_int_equal(cfg->timeouts.min_rate_window_ms, 3000);
    assert_int_equal(cfg->health.max_fails, 0);
    assert_int_equal(cfg->health.fail_timeout_ms, 5000);
    assert_true(cfg->health.check.enabled);
    assert_string_equal(cfg->health.check.path, "/ping?full=1");
    assert_int_equal(cfg->health.check.interval_ms, 500);
    assert_int_equal(cfg->health.check.timeout_ms, 200);
    assert_int_equal(cfg->health.check.rise, 3);
    assert_int_equal(cfg->health.check.fall, 4);
    assert_int_equal(cfg->retries, 0);
    assert_int_equal(cfg->retry_budget.percent, 50);
    assert_int_equal(cfg->retry_budget.min_concurrent, 10);
    assert_false(cfg->rate_limit.enabled); /* rate_limit: is refused until it ships (61-) */
    assert_int_equal(cfg->rate_limit.key, CONFIG_KEY_CLIENT_IP);
    assert_null(cfg->rate_limit.key_header);
    assert_true(cfg->rate_limit.default_capacity == 100.0);
    assert_true(cfg->rate_limit.default_rate_per_sec == 50.0);
    assert_string_equal(cfg->rate_limit.store, "twinproxy.db");
    assert_int_equal(cfg->rate_limit.ipv6_prefix, 64);
    assert_int_equal(cfg->rate_limit.max_clients, 100000);
    assert_int_equal(cfg->log.level, CONFIG_LOG_DEBUG);
    assert_string_equal(cfg->log.access, "/var/log/twinproxy/access.log");
    assert_int_equal(cfg->log.format, CONFIG_LOG_TEXT);
    config_free(cfg);
}

static void test_enums_and_key_forms(void **state)
{
    static const struct {
        const char *text;
        int balancer;
    } balancers[] = {{"round_robin", CONFIG_BALANCER_ROUND_ROBIN},
                     {"random", CONFIG_BALANCER_RANDOM},
                     {"least_conn", CONFIG_BALANCER_LEAST_CONN},
                     {"hash", CONFIG_BALANCER_HASH}};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    char text[256];
    struct config *cfg;

    (void)state;
    for (size_t i = 0; i < sizeof balancers / sizeof balancers[0]; i++) {
        snprintf(text, sizeof text, MIN_UP "balancer: %s\n", balancers[i].text);
        cfg = load_ok(text);
        assert_int_equal(cfg->balancer, balancers[i].balancer);
        config_free(cfg);
    }
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        snprintf(text, sizeof text, MIN_UP "log: {level: %s, format: json}\n", levels[i]);
        cfg = load_ok(text);
        assert_int_equal(cfg->log.level, (int)i);
        assert_int_equal(cfg->log.format, CONFIG_LOG_JSON);
        config_free(cfg);
    }
    cfg = load_ok(MIN_UP "hash_key: path\n");
    assert_int_equal(cfg->hash_key, CONFIG_KEY_PATH);
    assert_null(cfg->hash_header);
    config_free(cfg);
    expect_error(MIN_UP "hash_key: path\nrate_limit: {key: path}\n",
                 "t.yaml:4: rate_limit.key: unknown value \"path\" (expected client_ip | "
                 "header:NAME)");
    cfg = load_ok(MIN_UP "rate_limit:\n  key: header:X-API-Key\n  store: /tmp/x.db\n");
    assert_int_equal(cfg->rate_limit.key, CONFIG_KEY_HEADER);
    assert_string_equal(cfg->rate_limit.key_header, "X-API-Key");
    assert_int_equal(cfg->rate_limit.store_line, 5);
    config_free(cfg);
    cfg = load_ok(MIN_UP "hash_key: client_ip\nlog: {access: \"off\"}\n");
    assert_int_equal(cfg->hash_key, CONFIG_KEY_CLIENT_IP);
    assert_string_equal(cfg->log.access, "off");
    config_free(cfg);
}

/* Quoting never changes what a scalar means; anchors and flow style are plain YAML. */
static void test_flow_anchors_quotes(void **state)
{
    struct config *cfg = load_ok(
        "upstreams: [{address: \"127.0.0.1:9001\", weight: \"3\"}, {address: 127.0.0.1:9002, "
        "name: 'b'}]\n"
        "timeouts: {read: &t \"5s\", write: *t, total: 2m}\n"
        "limits: {max_header_bytes: 1M, max_body_bytes: 1G}\n"
        "retries: \"1\"\n"
        "retry_budget: {percent: &p \"7\", min_concurrent: *p}\n");

    (void)state;
    assert_int_equal(cfg->n_upstreams, 2);
    assert_int_equal(cfg->upstreams[0].weight, 3);
    assert_string_equal(cfg->upstreams[1].name, "b");
    assert_int_equal(cfg->timeouts.read_ms, 5000);
    assert_int_equal(cfg->timeouts.write_ms, 5000);
    assert_int_equal(cfg->timeouts.total_ms, 120000);
    assert_int_equal(cfg->limits.max_header_bytes, 1048576);
    assert_int_equal(cfg->limits.max_body_bytes, 1073741824);
    assert_int_equal(cfg->retries, 1);
    assert_int_equal(cfg->retry_budget.percent, 7);
    assert_int_equal(cfg->retry_budget.min_concurrent, 7);
    config_free(cfg);
}

static void test_ipv6_listen(void **state)
{
    struct config *cfg = load_ok("listen: \"[::1]:8443\"\n" MIN_UP);

    (void)state;
    assert_string_equal(cfg->listen.text, "[::1]:8443");
    assert_addr(&cfg->listen, AF_INET6, "::1", 8443);
    assert_int_equal(cfg->listen.line, 1);
    assert_false(cfg->admin_enabled);
    config_free(cfg);
    cfg = load_ok("listen: \"[::1]:8443\"\nadmin:\n  listen: '[::]:9443'\n  token: t\n" MIN_UP);
    assert_true(cfg->admin_enabled);
    assert_addr(&cfg->admin_listen, AF_INET6, "::", 9443);
    assert_int_equal(cfg->admin_listen.line, 3);
    assert_string_equal(cfg->admin_token, "t");
    config_free(cfg);
}

static void test_example_config(void **state)
{
    static const char *const paths[] = {"../twinproxy.yaml", "twinproxy.yaml"};
    char err[CONFIG_ERR_MAX] = "";
    struct config *cfg = NULL;

    (void)state;
    for (size_t i = 0; i < 2 && cfg == NULL; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0)
            continue;
        cfg = config_load(paths[i], err, sizeof err);
        if (cfg == NULL)
            fail_msg("%s", err);
    }
    if (cfg == NULL)
        skip();
    assert_int_equal(cfg->n_upstreams, 2);
    assert_string_equal(cfg->upstreams[1].name, "u2");
    config_free(cfg);
}

/* ---- scalar parsers --------------------------------------------------------- */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {{"0", 0},       {"250", 250},         {"250ms", 250},
                {"2s", 2000},   {"1m", 60000},        {"1h", 3600000},
                {"007s", 7000}, {"596h", 2145600000}, {"2147483647", 2147483647}};
    static const char *const bad[] = {
        "",   "3x", "1.5s",       "-1",   "1 s",  " 1s",   "1S",   "1d",
        "ms", "s",  "2147483648", "597h", "0x10", "1_000", "1sms", "99999999999999999999999"};
    uint64_t ms;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ms = 12345;
        assert_int_equal(config_parse_duration(good[i].text, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (config_parse_duration(bad[i], &ms) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {{"0", 0},
                {"16384", 16384},
                {"16k", 16384},
                {"16K", 16384},
                {"10m", 10485760},
                {"10M", 10485760},
                {"1g", 1073741824},
                {"2G", 2147483648ULL},
                {"9223372036854775807", 9223372036854775807ULL},
                {"8589934591g", 8589934591ULL * 1073741824ULL}};
    static const char *const bad[] = {"",
                                      "16q",
                                      "16kb",
                                      "1.5k",
                                      "-1",
                                      "k",
                                      "1t",
                                      " 16k",
                                      "16 k",
                                      "0x10",
                                      "9223372036854775808",
                                      "8589934592g"};
    uint64_t bytes;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        bytes = 12345;
        assert_int_equal(config_parse_size(good[i].text, &bytes), 0);
        assert_int_equal(bytes, good[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (config_parse_size(bad[i], &bytes) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void test_parse_addr(void **state)
{
    static const struct {
        const char *text;
        int family;
        const char *host;
        int port;
    } good[] = {{"127.0.0.1:8080", AF_INET, "127.0.0.1", 8080},
                {"0.0.0.0:1", AF_INET, "0.0.0.0", 1},
                {"localhost:65535", AF_INET, "127.0.0.1", 65535},
                {"10.1.2.3:080", AF_INET, "10.1.2.3", 80},
                {"[::1]:9001", AF_INET6, "::1", 9001},
                {"[::]:80", AF_INET6, "::", 80},
                {"[2001:db8::1]:443", AF_INET6, "2001:db8::1", 443},
                {"[::ffff:127.0.0.1]:80", AF_INET6, "::ffff:127.0.0.1", 80}};
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {{"", "expected host:port or [v6]:port"},
               {"localhost", "expected host:port or [v6]:port"},
               {"[::1]", "expected [v6]:port"},
               {"[::1]8080", "expected [v6]:port"},
               {"[::1:8080", "expected [v6]:port"},
               {":8080", "missing host"},
               {"[]:8080", "missing host"},
               {"::1:8080", "IPv6 address must be in brackets"},
               {"127.0.0.1:", "bad port"},
               {"127.0.0.1:http", "bad port"},
               {"127.0.0.1:-1", "bad port"},
               {"127.0.0.1:123456", "bad port"},
               {"127.0.0.1:0", "port must be 1..65535"},
               {"127.0.0.1:65536", "port must be 1..65535"},
               {"example.com:80", "host must be an IP address or localhost"},
               {"127.1:80", "host must be an IP address or localhost"},
               {"256.0.0.1:80", "host must be an IP address or localhost"},
               {"*:80", "host must be an IP address or localhost"},
               {"[127.0.0.1]:80", "bad IPv6 address"},
               {"[::g]:80", "bad IPv6 address"},
               {"[localhost]:80", "bad IPv6 address"},
               {"1234567890123456789012345678901234567890123456789012345678901234567890"
                "1234567890123456789012345678901234567890123456789012345678:1",
                "too long"}};
    struct config_addr a;
    const char *why;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        why = NULL;
        if (config_parse_addr(good[i].text, &a, &why) != 0)
            fail_msg("\"%s\": %s", good[i].text, why);
        assert_string_equal(a.text, good[i].text);
        assert_int_equal(a.line, 0);
        assert_addr(&a, good[i].family, good[i].host, good[i].port);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (config_parse_addr(bad[i].text, &a, &why) != -1)
            fail_msg("accepted \"%s\"", bad[i].text);
        assert_string_equal(why, bad[i].why);
    }
}

/* ---- errors ------------------------------------------------------------------ */

/* One of each class inline (the shared directory has the rest), through
 * config_load_string so `name` is what the message shows. */
static void test_errors_from_string(void **state)
{
    (void)state;
    expect_error("listne: 127.0.0.1:8080\n" MIN_UP, "t.yaml:1: unknown key \"listne\"");
    expect_error(MIN_UP "timeouts:\n  read: 3x\n", "t.yaml:4: timeouts.read: bad duration \"3x\"");
    expect_error(MIN_UP "upstreams: []\n", "t.yaml:3: duplicate key \"upstreams\"");
    expect_error("upstreams:\n  - address: 127.0.0.1:9001\n  - address: 127.0.0.1:9002\n"
                 "    weight: 1001\n",
                 "t.yaml:4: upstreams[1].weight: must be 1..1000");
    expect_error("workers: 2\n", "t.yaml:1: upstreams: at least one upstream is required");
    expect_error("", "t.yaml:1: upstreams: at least one upstream is required");
    expect_error("~\n", "t.yaml:1: upstreams: at least one upstream is required");
    expect_error("just text\n", "t.yaml:1: expected a mapping at the top level, got \"just text\"");
    expect_error(MIN_UP "limits: {max_body_bytes: 1t}\n",
                 "t.yaml:3: limits.max_body_bytes: bad size \"1t\"");
    expect_error(MIN_UP "admin:\n  token:\n", "t.yaml:4: admin.token: expected a string, got null");
    expect_error(MIN_UP "log:\n  access:\n", "t.yaml:4: log.access: expected a string, got null");
    expect_error(MIN_UP "workers: [1]\n", "t.yaml:3: workers: expected an integer, got a list");
    expect_error(MIN_UP "rate_limit:\n  default: {capacity: many}\n",
                 "t.yaml:4: rate_limit.default.capacity: expected a number, got \"many\"");
    expect_error(MIN_UP "rate_limit:\n  default: {capacity: 1000000000.5}\n",
                 "t.yaml:4: rate_limit.default.capacity: must be <= 1000000000");
    expect_error(MIN_UP "rate_limit:\n  default: {capacity: 2.5}\n",
                 "t.yaml:4: rate_limit.default.capacity: must be an integer");
    expect_error(MIN_UP "rate_limit: {key: \"header:\"}\n",
                 "t.yaml:3: rate_limit.key: bad header name \"\"");
    expect_error(MIN_UP "hash_key: \"header:\"\n", "t.yaml:3: hash_key: bad header name \"\"");
    expect_error(MIN_UP "retry_budget:\n  percent: 100.5\n",
                 "t.yaml:4: retry_budget.percent: expected an integer, got \"100.5\"");
    expect_error(MIN_UP "health:\n  check:\n    rise: 0\n",
                 "t.yaml:5: health.check.rise: must be 1..1000000");
    expect_error(MIN_UP "name: \"\\x01\\\"\\\\\\u00e9\"\n", "t.yaml:3: unknown key \"name\"");
    expect_error(MIN_UP "\"k\\x01\\\"\\\\\\u00e9\": 1\n",
                 "t.yaml:3: unknown key \"k\\x01\\\"\\\\\\xc3\\xa9\"");
    expect_error(MIN_UP "workers: 1: 2\n",
                 "t.yaml:3: invalid YAML: mapping values are not allowed in this context");
    expect_error(MIN_UP "log: [\n",
                 "t.yaml:4: invalid YAML: did not find expected node content (while parsing a "
                 "flow node)");
    expect_error(MIN_UP "\x01\n", "t.yaml:3: invalid YAML: control characters are not allowed");
}

/* A long value is cut in the message after 64 bytes; a small buffer truncates, and
 * so does a full one (the twin cuts its messages at CONFIG_ERR_MAX - 1 bytes too). */
static void test_long_values_and_small_buffer(void **state)
{
    char text[512], want[512], err[24], full[CONFIG_ERR_MAX], name[601];
    const char *key = "k123456789012345678901234567890123456789012345678901234567890123456789";

    (void)state;
    snprintf(text, sizeof text, MIN_UP "%s: 1\n", key);
    snprintf(want, sizeof want, "t.yaml:3: unknown key \"%.64s...\"", key);
    expect_error(text, want);
    assert_null(config_load_string("t.yaml", "x: 1\n", 5, err, sizeof err));
    assert_string_equal(err, "t.yaml:1: unknown key \"");
    memset(name, 'f', 600);
    name[600] = '\0';
    assert_null(config_load_string(name, "x: 1\n", 5, full, sizeof full));
    assert_int_equal(strlen(full), CONFIG_ERR_MAX - 1);
    assert_int_equal(strspn(full, "f"), CONFIG_ERR_MAX - 1);
}

static void test_cannot_read(void **state)
{
    char err[CONFIG_ERR_MAX] = "", want[1024], big[] = "/tmp/test_config_XXXXXX";
    const char *dir = cases_dir();
    FILE *f;
    int fd;

    (void)state;
    assert_null(config_load("/nonexistent/twinproxy.yaml", err, sizeof err));
    assert_string_equal(err,
                        "/nonexistent/twinproxy.yaml:0: cannot read: No such file or directory");
    assert_non_null(dir);
    assert_null(config_load(dir, err, sizeof err));
    snprintf(want, sizeof want, "%s:0: cannot read: Is a directory", dir);
    assert_string_equal(err, want);

    /* A file over 1 MiB is refused before parsing. */
    fd = mkstemp(big);
    assert_true(fd != -1);
    f = fdopen(fd, "w");
    assert_non_null(f);
    for (int i = 0; i < 1024 * 1024 + 1; i++)
        fputc('#', f);
    fclose(f);
    assert_null(config_load(big, err, sizeof err));
    unlink(big);
    snprintf(want, sizeof want, "%s:0: cannot read: larger than 1048576 bytes", big);
    assert_string_equal(err, want);
}

/* ---- the shared cases directory --------------------------------------------- */

static void run_case(void **state)
{
    const char *path = *state;
    char err[CONFIG_ERR_MAX] = "", first[CONFIG_ERR_MAX] = "", want[1200];
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    struct config *cfg;
    FILE *f;

    if (strncmp(base, "ok-", 3) == 0) {
        cfg = config_load(path, err, sizeof err);
        if (cfg == NULL)
            fail_msg("%s", err);
        config_free(cfg);
        return;
    }
    f = fopen(path, "r");
    assert_non_null(f);
    if (fgets(first, sizeof first, f) == NULL)
        first[0] = '\0';
    fclose(f);
    first[strcspn(first, "\n")] = '\0';
    if (strncmp(first, "# expect: ", 10) != 0)
        fail_msg("%s: first line must be \"# expect: LINE: message\"", path);
    snprintf(want, sizeof want, "%s:%s", path, first + 10);
    cfg = config_load(path, err, sizeof err);
    if (cfg != NULL) {
        config_free(cfg);
        fail_msg("%s loaded, expected: %s", path, want);
    }
    assert_string_equal(err, want);
}

static int is_case(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return n > 5 && strcmp(d->d_name + n - 5, ".yaml") == 0;
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_sections),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_enums_and_key_forms),
        cmocka_unit_test(test_flow_anchors_quotes),
        cmocka_unit_test(test_ipv6_listen),
        cmocka_unit_test(test_example_config),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_errors_from_string),
        cmocka_unit_test(test_long_values_and_small_buffer),
        cmocka_unit_test(test_cannot_read),
    };
    const char *dir = cases_dir();
    struct dirent **names = NULL;
    struct CMUnitTest *cases = NULL;
    char **paths = NULL;
    int n = -1, failed;

    failed = cmocka_run_group_tests_name("config", tests, NULL, NULL);
    if (dir != NULL)
        n = scandir(dir, &names, is_case, alphasort);
    if (n <= 0) {
        fprintf(stderr, "test_config: no cases found in %s\n", dir != NULL ? dir : "config_cases");
        return failed + 1;
    }
    cases = calloc((size_t)n, sizeof *cases);
    paths = calloc((size_t)n, sizeof *paths);
    if (cases == NULL || paths == NULL)
        abort();
    for (int i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(names[i]->d_name) + 2;
        if ((paths[i] = malloc(len)) == NULL)
            abort();
        snprintf(paths[i], len, "%s/%s", dir, names[i]->d_name);
        cases[i].name = names[i]->d_name;
        cases[i].test_func = run_case;
        cases[i].initial_state = paths[i];
    }
    failed += _cmocka_run_group_tests("config_cases", cases, (size_t)n, NULL, NULL);
    for (int i = 0; i < n; i++) {
        free(paths[i]);
        free(names[i]);
    }
    free(paths);
    free(names);
    free(cases);
    return failed;
}
