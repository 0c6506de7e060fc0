/* config: the YAML file of contract section 2 -> one immutable struct config.
 *
 * Twin: py-proxy/pyproxy/config.py (frozen dataclasses, same field names).
 * Every key of the contract is parsed and validated here, whether or not the
 * data path uses it yet. Durations are stored as integer milliseconds so both
 * twins compare them exactly; sizes as bytes.
 *
 * Ownership: config_load() returns a struct the caller owns and frees with
 * config_free(). Once loaded it is never modified; a reload (SIGHUP) loads a
 * new one and swaps pointers, the old one is freed when nothing refers to it.
 */
#ifndef TWINPROXY_CONFIG_H
#define TWINPROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_ERR_MAX 512 /* room for "FILE:LINE: message" */

enum config_balancer {
    CONFIG_BALANCER_ROUND_ROBIN = 0, /* smooth weighted round robin (nginx) */
    CONFIG_BALANCER_RANDOM,          /* weighted random */
    CONFIG_BALANCER_LEAST_CONN,      /* fewest active per weight, ties round robin */
    CONFIG_BALANCER_HASH,            /* consistent hash ring on hash_key */
};

enum config_key_kind {
    CONFIG_KEY_CLIENT_IP = 0, /* the client's address (IPv6: per ipv6_prefix for rate limits) */
    CONFIG_KEY_HEADER,        /* header:NAME, the value of that request header */
    CONFIG_KEY_PATH,          /* path (hash_key only) */
};

enum config_log_level {
    CONFIG_LOG_DEBUG = 0,
    CONFIG_LOG_INFO,
    CONFIG_LOG_WARN,
    CONFIG_LOG_ERROR,
};

enum config_log_format {
    CONFIG_LOG_JSON = 0,
    CONFIG_LOG_TEXT,
};

/* A host:port or [v6]:port, resolved numerically (no DNS: addresses are literals
 * or "localhost"). */
struct config_addr {
    char text[128];               /* as written in the file, e.g. "127.0.0.1:8080" */
    struct sockaddr_storage addr; /* resolved address, ready for bind()/connect() */
    socklen_t addrlen;            /* length of addr */
    int line;                     /* line of the key in the file, for bind errors */
};

struct config_upstream {
    char *name;              /* name: key, default the address text */
    struct config_addr addr; /* address: key */
    unsigned weight;         /* 1..1000, default 1 */
};

struct config_health_check {
    bool enabled;         /* health.check present */
    char *path;           /* request path, default "/healthz" */
    uint64_t interval_ms; /* default 2000 */
    uint64_t timeout_ms;  /* default 1000 */
    unsigned rise;        /* consecutive successes to come back, default 2 */
    unsigned fall;        /* consecutive failures to go down, default 2 */
};

struct config_rate_limit {
    bool enabled;                /* rate_limit present */
    enum config_key_kind key;    /* client_ip | header */
    char *key_header;            /* NAME of header:NAME, else NULL */
    double default_capacity;     /* default.capacity, a whole number > 0, default 100 */
    double default_rate_per_sec; /* default.rate_per_sec, >= 0, default 50 */
    char *store;                 /* SQLite file path, default "twinproxy.db" */
    unsigned ipv6_prefix;        /* 0..128, default 64 */
    uint64_t max_clients;        /* in-memory buckets, default 100000 */
    int store_line;              /* line of rate_limit.store, else of rate_limit: store errors */
};

struct config {
    char *path; /* the file this came from (for reload and messages) */

    struct config_addr listen; /* listen:, default 127.0.0.1:8080 */
    unsigned workers;          /* workers:, >= 1, default 1 */

    bool admin_enabled;              /* admin: present with a listen: */
    struct config_addr admin_listen; /* admin.listen */
    char *admin_token;               /* admin.token, "" when unset (never NULL) */

    struct config_upstream *upstreams; /* at least one */
    size_t n_upstreams;

    enum config_balancer balancer; /* default round_robin */
    enum config_key_kind hash_key; /* default client_ip */
    char *hash_header;             /* NAME of header:NAME, else NULL */

    struct {
        uint64_t max_client_connections;    /* default 10000 */
        uint64_t max_header_bytes;          /* default 16384 */
        uint64_t max_body_bytes;            /* default 0 = unlimited */
        uint64_t upstream_max_connections;  /* default 256, per upstream */
        uint64_t upstream_idle_connections; /* default 64, per upstream */
    } limits;

    struct {
        uint64_t connect_ms;  /* default 1000 */
        uint64_t header_ms;   /* default 10000 */
        uint64_t idle_ms;     /* default 60000 */
        uint64_t read_ms;     /* default 30000 */
        uint64_t write_ms;    /* default 30000 */
        uint64_t total_ms;    /* default 60000 */
        uint64_t queue_ms;    /* default 1000 */
        uint64_t shutdown_ms; /* default 30000 */
        uint64_t min_rate;    /* bytes/s a client must move while the proxy waits on it; 0 = off */
        uint64_t min_rate_window_ms; /* default 10000: the window min_rate is averaged over */
    } timeouts;

    struct {
        unsigned max_fails;               /* default 3 */
        uint64_t fail_timeout_ms;         /* default 10000 */
        struct config_health_check check; /* active checks */
    } health;

    unsigned retries; /* default 2 */

    struct {
        unsigned percent;        /* 0..100, default 20: retries in flight may add this % ... */
        unsigned min_concurrent; /* ... but this many are always allowed, default 3 */
    } retry_budget;

    struct config_rate_limit rate_limit;

    struct {
        enum config_log_level level;   /* default info */
        char *access;                  /* "stdout" | "stderr" | "off" | a path; default "stdout" */
        enum config_log_format format; /* default json */
    } log;
};

/* Parse and validate FILE. On success returns a new struct config (caller owns,
 * free with config_free) and leaves err untouched. On failure returns NULL and
 * writes "FILE:LINE: what is wrong" (no "config error: " prefix, no newline) into
 * err (errlen bytes, CONFIG_ERR_MAX is enough). Never exits, never prints. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* Same, from an in-memory document; `name` stands for FILE in messages. */
struct config *config_load_string(const char *name, const char *text, size_t len, char *err,
                                  size_t errlen);

/* Free a config; config_free(NULL) is a no-op. */
void config_free(struct config *cfg);

/* Parse a duration ("250ms", "2s", "1m", "1h" or an integer of milliseconds) into
 * milliseconds. Returns 0 on success, -1 if malformed or out of range. */
int config_parse_duration(const char *text, uint64_t *out_ms);

/* Parse a size (16384, "16k", "10m", "1g"; k = 1024) into bytes. 0 / -1 as above. */
int config_parse_size(const char *text, uint64_t *out_bytes);

/* Parse "host:port" / "[v6]:port" into addr (numeric hosts and "localhost" only).
 * Returns 0 on success, -1 with a short reason in *why. */
int config_parse_addr(const char *text, struct config_addr *addr, const char **why);

#endif
