/* main: command line, startup, signals (reload and graceful stop).
 *
 * Twin: py-proxy/pyproxy/main.py.
 *
 *   c-proxy --config FILE [--check] [--version] [--help]
 *
 * Exit codes: 0 after a graceful stop or a valid --check, 2 on a bad config
 * (one line "config error: FILE:LINE: ..." on stderr), including a listen or
 * admin.listen address that cannot be bound and a rate_limit.store that cannot
 * be opened (--check opens it read-only; a file that does not exist yet is fine).
 *
 * Rate limiting: ONE table shared by every worker thread (ratelimit.h), filled at
 * start from the store (overrides pinned, then the saved buckets), saved to the
 * store every STORE_SAVE_S seconds by the saver thread and once more on a graceful
 * stop. Admin API: its own thread (admin.h); what it shows of the upstreams comes
 * from the health registry (shared verdicts and counters, atomics) and the
 * current config, never from a worker's own structures.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <llhttp.h>

#include "admin.h"
#include "client.h"
#include "config.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "store.h"
#include "upgrade.h"
#include "upstream.h"
#include "util.h"
#include "worker.h"

#define STORE_SAVE_S 5 /* seconds between two saves of the token buckets */

struct app {
    const char *path;           /* --config FILE */
    struct cfgref *cfg;         /* current config (one ref); swapped under cfg_mu */
    struct cfgref *started;     /* the config at start (one ref): what restart-only keys stay */
    pthread_mutex_t cfg_mu;     /* the admin thread reads cfg while a reload swaps it */
    atomic_uint generation;     /* 1 at start, +1 per applied reload (metrics) */
    atomic_uint reloads_failed; /* SIGHUPs whose config was not applied (metrics) */
    struct worker *workers;     /* cfg->workers at startup */
    struct listener *listeners; /* one per worker, same index */
    unsigned n_workers;         /* fixed for the process's life */
    atomic_uint loops_running;  /* worker loops not ended yet */
    bool stopping;              /* draining: SIGTERM/SIGINT seen, or handed over (upgrade) */
    ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;

    char exe[PATH_MAX];  /* this binary's path at start: SIGUSR2 starts it again */
    char **argv;         /* our command line, for the new process */
    int admin_fd;        /* admin.listen's socket (the admin server owns it), -1: none */
    pid_t upgrade_pid;   /* the new process while an upgrade is pending, else 0 */
    ev_io upgrade_w;     /* its channel (upgrade.h): "ready" or closed */
    ev_child upgrade_cw; /* its exit (libev reaps every child of the default loop) */
    int upgrade_status;  /* its wait status once it exited, else -1 */
    bool upgrade_failed; /* its channel closed without "ready": log once it exited */

    struct ratelimit_table *rl;  /* shared by every worker; NULL: no rate_limit */
    struct store *store;         /* rate_limit.store, read-write; NULL: no rate_limit */
    struct admin *admin;         /* admin API server; NULL: no admin.listen */
    struct metrics_slot **slots; /* one per worker (metrics.h), n_workers */

    pthread_t saver;          /* saves the buckets every STORE_SAVE_S */
    bool saver_running;       /* saver was started (join it) */
    bool saver_stop;          /* under saver_mu: end the saver */
    pthread_mutex_t saver_mu; /* guards saver_stop */
    pthread_cond_t saver_cv;  /* wakes the saver for its stop */
};

static struct app app = {
    .admin_fd = -1,
    .cfg_mu = PTHREAD_MUTEX_INITIALIZER,
    .saver_mu = PTHREAD_MUTEX_INITIALIZER,
    .saver_cv = PTHREAD_COND_INITIALIZER,
};

/* Wall clock, seconds: bucket times (the store keeps them across restarts). */
static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A new ref on the current config, from any thread. */
static struct cfgref *app_config(void)
{
    pthread_mutex_lock(&app.cfg_mu);
    struct cfgref *r = cfgref_acquire(app.cfg);
    pthread_mutex_unlock(&app.cfg_mu);
    return r;
}

/* ---------------------------------------------------------------- worker hooks */

/* Reload on worker w's thread: a new upstream set, the old one retired. */
static void app_on_config(struct worker *w, struct cfgref *cfg)
{
    upstream_set_install(w, cfg); /* out of memory: the old set stays */
}

static void app_on_drain(struct worker *w)
{
    listener_close(&app.listeners[w->id]);
    upstream_set_retire(w->set); /* idle upstream conns close now */
}

static void app_on_conn_gone(struct worker *w)
{
    listener_conn_gone(&app.listeners[w->id]);
}

/* After the worker's thread ended, before its loop goes. */
static void app_on_deinit(struct worker *w)
{
    listener_close(&app.listeners[w->id]);
    upstream_set_uninstall(w);
}

/* Worker 0's loop (the default one) also takes the signals: it runs until every
 * other worker's loop has ended, so a second SIGTERM still reaches them. */
static bool app_may_end(struct worker *w)
{
    return w->id != 0 || atomic_load(&app.loops_running) == 1;
}

static void app_on_end(struct worker *w)
{
    atomic_fetch_sub(&app.loops_running, 1);
    if (w->id != 0)
        ev_async_send(app.workers[0].loop, &app.workers[0].async); /* re-check may_end */
}

static const struct worker_hooks app_hooks = {
    .on_config = app_on_config,
    .on_drain = app_on_drain,
    .on_conn_gone = app_on_conn_gone,
    .on_deinit = app_on_deinit,
    .may_end = app_may_end,
    .on_end = app_on_end,
};

/* ---------------------------------------------------------------- rate limiting + store */

static struct ratelimit_limit default_limit(const struct config *cfg)
{
    return (struct ratelimit_limit){
        .capacity = (uint32_t)cfg->rate_limit.default_capacity, /* whole, 1..1e9 (config) */
        .rate_per_sec = cfg->rate_limit.default_rate_per_sec,
    };
}

/* Open cfg's store (read-only for --check, where a file that does not exist yet
 * is valid: *out stays NULL). Returns 0, or -1 with "FILE:LINE: store PATH: ..." in
 * err, LINE being rate_limit.store's (or rate_limit's when the key is omitted). */
static int store_open_for(const struct config *cfg, bool check, struct store **out, char *err,
                          size_t errlen)
{
    char serr[STORE_ERR_MAX];
    *out = NULL;
    if (check && access(cfg->rate_limit.store, F_OK) == -1 && errno == ENOENT)
        return 0;
    *out = store_open(cfg->rate_limit.store, check ? STORE_F_READONLY : 0, serr, sizeof serr);
    if (*out == NULL) {
        if (snprintf(err, errlen, "%s:%d: %s", cfg->path, cfg->rate_limit.store_line, serr) < 0)
            err[0] = '\0';
        return -1;
    }
    return 0;
}

static void store_error_event(const char *reason)
{
    log_event(CONFIG_LOG_ERROR, "store_error", json_pack("{s:s}", "reason", reason));
}

/* The store's content into the table: overrides pinned first, then every saved
 * bucket set to its (tokens, at) under its client's limit. Returns 0, or -1 with
 * the store's message in err. */
static int store_load_into(struct store *s, struct ratelimit_table *t, char *err, size_t errlen)
{
    struct store_data d;
    if (store_load(s, &d, err, errlen) == -1)
        return -1;
    double now = wall_now();
    size_t lost = 0;
    struct ratelimit_limit dflt = default_limit(app.started->cfg);
    for (size_t i = 0; i < d.n_clients; i++) {
        const struct store_client *c = &d.clients[i];
        struct ratelimit_limit lim = {
            .capacity = c->capacity > RATELIMIT_CAPACITY_MAX ? RATELIMIT_CAPACITY_MAX
                                                             : (uint32_t)c->capacity,
            .rate_per_sec = c->rate_per_sec,
        };
        if (ratelimit_pin(t, c->client_id, strlen(c->client_id), &lim, -1, now) == -1)
            lost++;
    }
    for (size_t i = 0; i < d.n_buckets; i++) {
        const struct store_bucket *b = &d.buckets[i];
        size_t len = strlen(b->client_id);
        struct ratelimit_limit lim;
        double tokens;
        struct ratelimit_bucket bk = {.tokens = b->tokens, .at = b->at};
        /* a saved bucket that refilled to full by now equals a fresh one: left out */
        if (!ratelimit_lookup(t, b->client_id, len, now, &lim, &tokens) &&
            ratelimit_bucket_full(&bk, &dflt, now))
            continue;
        ratelimit_set(t, b->client_id, len, NULL, b->tokens, b->at);
    }
    store_data_free(&d);
    if (lost) { /* the proxy starts: the store keeps them, a bigger max_clients loads them */
        char why[128];
        snprintf(why, sizeof why,
                 "%zu overrides found no room in the rate-limit table (rate_limit.max_clients)",
                 lost);
        log_event(CONFIG_LOG_WARN, "store_error", json_pack("{s:s}", "reason", why));
    }
    return 0;
}

/* ratelimit_snapshot() into rows for store_save_buckets(). */
struct snap_row {
    char key[RATELIMIT_KEY_MAX + 1]; /* NUL-ended copy of the key */
    double tokens, at;               /* the bucket */
};

struct snap {
    struct snap_row *rows; /* grown as needed (the stripe lock is held: rarely) */
    size_t n, cap;         /* used, allocated */
    bool oom;              /* a row could not be kept */
};

static void snap_add(const char *key, size_t len, double tokens, double at, void *arg)
{
    struct snap *sn = arg;
    if (sn->n == sn->cap) {
        size_t ncap = sn->cap ? sn->cap * 2 : 256;
        struct snap_row *nr = realloc(sn->rows, ncap * sizeof *nr);
        if (nr == NULL) {
            sn->oom = true;
            return;
        }
        sn->rows = nr;
        sn->cap = ncap;
    }
    struct snap_row *r = &sn->rows[sn->n++];
    memcpy(r->key, key, len);
    r->key[len] = '\0';
    r->tokens = tokens;
    r->at = at;
}

/* Strict UTF-8 (a TEXT client_id; the twin decodes ids as UTF-8). */
static bool utf8_valid(const unsigned char *p)
{
    while (*p) {
        unsigned c = *p++, n, min;
        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, min = 0x80, c &= 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, min = 0x800, c &= 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, min = 0x10000, c &= 0x07;
        else
            return false;
        for (; n > 0; n--, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (*p & 0x3fu);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
    }
    return true;
}

static int snap_cmp(const void *a, const void *b)
{
    return strcmp(((const struct snap_row *)a)->key, ((const struct snap_row *)b)->key);
}

/* (tokens, at) of every bucket as the last good save wrote it (sorted by key): a
 * save writes only the buckets that changed since. The saver thread's (and, once
 * it has stopped, the final save's). */
static struct snap saved;

/* One save: the buckets that changed since the last good one, queued for the
 * store in one batch; then wait for the writer (on this thread, never a worker's)
 * and report a failure (store_error {reason}); the rows are tried again next time. */
static void store_save_all(void)
{
    struct snap sn = {0};
    size_t hint = ratelimit_count(app.rl) + 64;
    sn.rows = malloc(hint * sizeof *sn.rows);
    sn.cap = sn.rows ? hint : 0;
    ratelimit_snapshot(app.rl, snap_add, &sn);
    if (sn.oom) {
        store_error_event("out of memory: buckets not saved");
        free(sn.rows);
        return;
    }
    qsort(sn.rows, sn.n, sizeof *sn.rows, snap_cmp);
    struct store_bucket *b = sn.n ? malloc(sn.n * sizeof *b) : NULL;
    if (sn.n && b == NULL) {
        store_error_event("out of memory: buckets not saved");
        free(sn.rows);
        return;
    }
    size_t nb = 0;
    for (size_t i = 0; i < sn.n; i++) {
        const struct snap_row *r = &sn.rows[i];
        const struct snap_row *was =
            saved.n ? bsearch(r, saved.rows, saved.n, sizeof *r, snap_cmp) : NULL;
        if (was && was->tokens == r->tokens && was->at == r->at)
            continue;
        if (!utf8_valid((const unsigned char *)r->key))
            continue; /* a header value that is not UTF-8 cannot be a TEXT client_id */
        b[nb++] = (struct store_bucket){(char *)r->key, r->tokens, r->at};
    }
    bool ok = true;
    if (nb) {
        char err[STORE_ERR_MAX];
        if (store_save_buckets(app.store, b, nb) == -1) {
            store_error_event("out of memory: buckets not saved");
            ok = false;
        } else if (store_flush(app.store, err, sizeof err) == -1) {
            store_error_event(err);
            ok = false;
        }
    }
    free(b);
    if (ok) {
        free(saved.rows);
        saved = sn;
    } else {
        free(sn.rows);
    }
}

/* The saver thread: store_save_all() every STORE_SAVE_S until told to stop. */
static void *saver_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&app.saver_mu);
    while (!app.saver_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += STORE_SAVE_S;
        while (!app.saver_stop &&
               pthread_cond_timedwait(&app.saver_cv, &app.saver_mu, &until) != ETIMEDOUT)
            ;
        if (app.saver_stop)
            break;
        pthread_mutex_unlock(&app.saver_mu);
        store_save_all();
        pthread_mutex_lock(&app.saver_mu);
    }
    pthread_mutex_unlock(&app.saver_mu);
    return NULL;
}

static void saver_stop(void)
{
    if (!app.saver_running)
        return;
    pthread_mutex_lock(&app.saver_mu);
    app.saver_stop = true;
    pthread_cond_signal(&app.saver_cv);
    pthread_mutex_unlock(&app.saver_mu);
    pthread_join(app.saver, NULL);
    app.saver_running = false;
}

/* ---------------------------------------------------------------- admin providers */

/* One upstream object of contract 8, keys in its order: config + the registry. */
static json_t *upstream_json(const struct config_upstream *u)
{
    struct health_state *h = health_state_get(u->name, u->addr.text);
    struct health_stats st;
    health_stats_get(h, &st);
    return json_pack("{s:s,s:s,s:i,s:s,s:b,s:I,s:I,s:I,s:I,s:s}", "name", u->name, "address",
                     u->addr.text, "weight", (int)u->weight, "state",
                     health_is_drained(h) ? "drain" : "active", "healthy", health_is_healthy(h),
                     "active", (json_int_t)st.active, "idle", (json_int_t)st.idle, "requests",
                     (json_int_t)st.requests, "fails", (json_int_t)st.fails, "last_error",
                     h ? health_last_error(h) : "");
}

static json_t *prov_upstreams(void *ud)
{
    (void)ud;
    struct cfgref *ref = app_config();
    json_t *a = json_array();
    for (size_t i = 0; a && i < ref->cfg->n_upstreams; i++)
        json_array_append_new(a, upstream_json(&ref->cfg->upstreams[i]));
    cfgref_release(ref);
    return a;
}

static int prov_upstream_set_state(void *ud, const char *name, bool drain, json_t **out)
{
    (void)ud;
    struct cfgref *ref = app_config();
    int rc = -1;
    for (size_t i = 0; i < ref->cfg->n_upstreams; i++) {
        const struct config_upstream *u = &ref->cfg->upstreams[i];
        if (strcmp(u->name, name) != 0)
            continue;
        health_set_drain(health_state_get(u->name, u->addr.text), drain);
        *out = upstream_json(u);
        rc = 0;
        break;
    }
    cfgref_release(ref);
    return rc;
}

static size_t prov_metrics(void *ud, char *buf, size_t cap)
{
    (void)ud;
    struct cfgref *ref = app_config();
    const struct config *cfg = ref->cfg;
    struct metrics_upstream *ups = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *ups);
    const char **labels = calloc(METRICS_LABELS, sizeof *labels);
    struct metrics_slot *sum = malloc(sizeof *sum);
    size_t n = 0;
    if (ups && labels && sum) {
        for (size_t i = 0; i < cfg->n_upstreams; i++) {
            const struct config_upstream *u = &cfg->upstreams[i];
            struct health_state *h = health_state_get(u->name, u->addr.text);
            struct health_stats st;
            health_stats_get(h, &st);
            ups[i] = (struct metrics_upstream){
                .name = u->name,
                .healthy = health_is_healthy(h),
                .active = st.active,
                .idle = st.idle,
                .to_up = st.to_up,
                .to_down = st.to_down,
            };
        }
        labels[0] = "";
        size_t n_labels = health_registry_names(labels + 1, METRICS_LABELS - 1) + 1;
        metrics_sum(sum, (const struct metrics_slot *const *)app.slots, app.n_workers);
        struct metrics_view v = {
            .impl = "c",
            .version = TWINPROXY_VERSION,
            .generation = atomic_load(&app.generation),
            .reloads_ok = atomic_load(&app.generation) - 1,
            .reloads_failed = atomic_load(&app.reloads_failed),
            .ups = ups,
            .n_ups = cfg->n_upstreams,
            .labels = labels,
            .n_labels = n_labels,
        };
        n = metrics_render(buf, cap, &v, sum);
    }
    free(sum);
    free(labels);
    free(ups);
    cfgref_release(ref);
    return n;
}

static const struct admin_providers app_providers = {
    .upstreams = prov_upstreams,
    .upstream_set_state = prov_upstream_set_state,
    .metrics = prov_metrics,
    .ud = NULL,
};

/* The same text as py-proxy --help (docs/operations.md; conformance test_cli.py), apart
 * from the program name and py-proxy's own --loop. */
#define USAGE_LINE "usage: c-proxy --config FILE [--check] [--version] [--help]\n"

static void usage(FILE *f)
{
    fputs(USAGE_LINE, f);
}

static void help(void)
{
    fputs(USAGE_LINE
          "\n"
          "twinproxy: an HTTP/1.1 reverse proxy (manual: c-proxy(1)).\n"
          "\n"
          "options:\n"
          "  --config FILE   run with the YAML config FILE (also --config=FILE)\n"
          "  --check         validate FILE (a rate_limit.store is opened read-only), exit\n"
          "                  0 when valid, 2 with \"config error: FILE:LINE: ...\" when not\n"
          "  --version       print the version and exit\n"
          "  -h, --help      print this help and exit\n"
          "\n"
          "signals:\n"
          "  SIGHUP          reload FILE (a bad file is logged, the old config stays)\n"
          "  SIGUSR1         reopen the access log file (logrotate)\n"
          "  SIGUSR2         binary upgrade: start this binary again, hand it the listening\n"
          "                  sockets, then drain and exit\n"
          "  SIGTERM, SIGINT stop gracefully within timeouts.shutdown\n"
          "\n"
          "exit status: 0 after a graceful stop or a valid --check, 2 on a bad config.\n",
          stdout);
}

/* Draining starts (SIGTERM/SIGINT, or an upgrade handed over): no accept on any
 * listener (the admin API's included), idle connections close, in-flight ones
 * finish within timeouts.shutdown. */
static void begin_stop(void)
{
    app.stopping = true;
    /* the admin API changes the table and the store: stopped before the last save */
    admin_stop(app.admin);
    app.admin = NULL;
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_post_stop(&app.workers[i]);
}

/* SIGTERM/SIGINT: drain; one more while draining: stop at once (every connection
 * closed, as when timeouts.shutdown passes; the state is still saved, exit 0). */
static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    const char *sig = w->signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (app.stopping) {
        log_event(CONFIG_LOG_WARN, "shutdown",
                  json_pack("{s:s,s:b}", "signal", sig, "immediate", 1));
        for (unsigned i = 0; i < app.n_workers; i++)
            worker_post_abort(&app.workers[i]);
        return;
    }
    log_event(CONFIG_LOG_INFO, "shutdown", json_pack("{s:s}", "signal", sig));
    begin_stop();
}

/* ---------------------------------------------------------------- binary upgrade */

static void upgrade_end(struct ev_loop *loop)
{
    ev_io_stop(loop, &app.upgrade_w);
    close(app.upgrade_w.fd);
    app.upgrade_pid = 0;
}

/* A new process that failed: why, once both its channel closed and it exited. */
static void upgrade_log_failure(struct ev_loop *loop)
{
    int st = app.upgrade_status;
    char why[96];
    if (WIFEXITED(st))
        snprintf(why, sizeof why, "the new process exited with %d", WEXITSTATUS(st));
    else
        snprintf(why, sizeof why, "the new process was killed by signal %d", WTERMSIG(st));
    log_event(CONFIG_LOG_ERROR, "upgrade_failed", json_pack("{s:s}", "error", why));
    app.upgrade_failed = false;
    ev_child_stop(loop, &app.upgrade_cw);
}

static void on_upgrade_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    ev_child_stop(loop, w);
    app.upgrade_status = w->rstatus;
    if (app.upgrade_failed)
        upgrade_log_failure(loop);
}

/* The new process's channel is readable: "ready" hands over, a close means it failed. */
static void on_upgrade_channel(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)io;
    (void)revents;
    int r = upgrade_poll(app.upgrade_w.fd);
    if (r == 0)
        return;
    pid_t pid = app.upgrade_pid;
    upgrade_end(loop);
    if (r == 1) {
        ev_child_stop(loop, &app.upgrade_cw); /* it lives on */
        if (app.stopping)
            return;
        log_event(CONFIG_LOG_INFO, "upgrade", json_pack("{s:I}", "pid", (json_int_t)pid));
        begin_stop();
        return;
    }
    app.upgrade_failed = true; /* it closed the channel on its way out */
    if (app.upgrade_status != -1)
        upgrade_log_failure(loop);
}

/* SIGUSR2: start the binary again and offer it our listening sockets. */
static void on_upgrade(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    if (app.stopping || app.upgrade_pid != 0 || app.upgrade_failed) {
        log_event(CONFIG_LOG_WARN, "upgrade_failed",
                  json_pack("{s:s}", "error",
                            app.stopping ? "stopping" : "an upgrade is already in progress"));
        return;
    }
    const struct config *cfg = app.started->cfg; /* the sockets are the start's */
    int *fds = calloc(app.n_workers, sizeof *fds);
    char err[UPGRADE_ERR_MAX] = "out of memory";
    int chan = -1, rc = -1;
    pid_t pid = 0;
    if (fds) {
        for (unsigned i = 0; i < app.n_workers; i++)
            fds[i] = app.listeners[i].lfd;
        struct upgrade_offer offer = {
            .listen = cfg->listen.text,
            .workers = app.n_workers,
            .fds = fds,
            .admin = app.admin_fd != -1 ? cfg->admin_listen.text : NULL,
            .admin_fd = app.admin_fd,
        };
        rc = upgrade_spawn(app.exe, app.argv, &offer, &pid, &chan, err, sizeof err);
    }
    free(fds);
    if (rc == -1) {
        log_event(CONFIG_LOG_ERROR, "upgrade_failed", json_pack("{s:s}", "error", err));
        return;
    }
    app.upgrade_pid = pid;
    app.upgrade_status = -1;
    ev_io_init(&app.upgrade_w, on_upgrade_channel, chan, EV_READ);
    ev_io_start(loop, &app.upgrade_w);
    ev_child_init(&app.upgrade_cw, on_upgrade_child, pid, 0);
    ev_child_start(loop, &app.upgrade_cw);
}

#define RESTART_WARNING "listen, workers and admin.listen need a restart; kept as they were"
#define RL_RESTART_WARNING                                                                         \
    "rate_limit added or removed, rate_limit.store and rate_limit.max_clients need a restart;"     \
    " kept as they were"

/* A reload cannot change the sockets (listen, workers, admin.listen: one warning,
 * compared with the running config) nor the rate-limit table and its store
 * (rate_limit added or removed, another store or max_clients: another warning,
 * compared with the config at start). For the latter, what runs is written into
 * the new config before anyone sees it: rate_limit as at start when the new one
 * has none (or none at all when the start had none), the start's store and
 * max_clients otherwise. key, default and ipv6_prefix apply. Returns 0, or -1 out
 * of memory. */
static int reload_keep(const struct config *old, struct config *cfg)
{
    if (strcmp(cfg->listen.text, old->listen.text) != 0 || cfg->workers != old->workers ||
        cfg->admin_enabled != old->admin_enabled ||
        (cfg->admin_enabled && strcmp(cfg->admin_listen.text, old->admin_listen.text) != 0))
        log_event(CONFIG_LOG_WARN, "reload", json_pack("{s:s}", "warning", RESTART_WARNING));
    const struct config_rate_limit *o = &app.started->cfg->rate_limit;
    struct config_rate_limit *n = &cfg->rate_limit;
    if (n->enabled == o->enabled &&
        (!o->enabled || (strcmp(n->store, o->store) == 0 && n->max_clients == o->max_clients)))
        return 0;
    log_event(CONFIG_LOG_WARN, "reload", json_pack("{s:s}", "warning", RL_RESTART_WARNING));
    if (!o->enabled) {
        n->enabled = false; /* no table to take from: rate limiting stays off */
        return 0;
    }
    bool whole = !n->enabled; /* removed: the section as it was at start */
    char *store = strdup(o->store);
    char *hdr = whole && o->key_header ? strdup(o->key_header) : NULL;
    if (!store || (whole && o->key_header && !hdr)) {
        free(store);
        free(hdr);
        return -1;
    }
    free(n->store);
    n->store = store;
    n->store_line = o->store_line;
    n->max_clients = o->max_clients;
    if (whole) {
        free(n->key_header);
        n->key_header = hdr;
        n->enabled = true;
        n->key = o->key;
        n->default_capacity = o->default_capacity;
        n->default_rate_per_sec = o->default_rate_per_sec;
        n->ipv6_prefix = o->ipv6_prefix;
    }
    return 0;
}

/* A reload that is not applied: its event and its metric. */
static void reload_failed_event(json_t *fields)
{
    atomic_fetch_add(&app.reloads_failed, 1);
    log_event(CONFIG_LOG_ERROR, "reload_failed", fields);
}

static void on_reload(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    if (app.stopping)
        return;
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(app.path, err, sizeof err);
    if (!cfg) {
        reload_failed_event(json_pack("{s:s}", "error", err));
        return;
    }
    const struct config *old = app.cfg->cfg;
    if (reload_keep(old, cfg) == -1) {
        reload_failed_event(json_pack("{s:s}", "error", "out of memory"));
        config_free(cfg);
        return;
    }
    if (log_configure(cfg, err, sizeof err) == -1) {
        reload_failed_event(json_pack("{s:s}", "error", err));
        config_free(cfg);
        return;
    }
    struct cfgref *ref = cfgref_new(cfg);
    if (!ref) {
        atomic_fetch_add(&app.reloads_failed, 1);
        config_free(cfg);
        return;
    }
    if (app.admin && strcmp(cfg->admin_token, old->admin_token) != 0 &&
        admin_set_token(app.admin, cfg->admin_token) == -1) {
        reload_failed_event(json_pack("{s:s}", "error", "out of memory"));
        config_free(cfg);
        return;
    }
    if (app.rl) {
        struct ratelimit_limit a = default_limit(old), b = default_limit(cfg);
        if (a.capacity != b.capacity || a.rate_per_sec != b.rate_per_sec)
            ratelimit_set_default(app.rl,
                                  &b); /* new buckets, and unpinned ones on their next take */
    }
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_post_config(&app.workers[i], cfgref_acquire(ref));
    pthread_mutex_lock(&app.cfg_mu);
    struct cfgref *prev = app.cfg;
    app.cfg = ref;
    pthread_mutex_unlock(&app.cfg_mu);
    cfgref_release(prev);
    atomic_fetch_add(&app.generation, 1);
    log_event(CONFIG_LOG_INFO, "reload",
              json_pack("{s:s,s:I}", "path", app.path, "upstreams", (json_int_t)cfg->n_upstreams));
}

/* SIGUSR1 (logrotate): the access file reopened; lines already written stay in the
 * old one, every write after the swap goes to the new one (log_reopen). */
static void on_reopen(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    char err[CONFIG_ERR_MAX];
    if (log_reopen(err, sizeof err) == -1) {
        log_event(CONFIG_LOG_ERROR, "log_reopen_failed", json_pack("{s:s}", "error", err));
        return;
    }
    struct cfgref *ref = app_config();
    const char *a = ref->cfg->log.access ? ref->cfg->log.access : "stdout";
    log_event(CONFIG_LOG_INFO, "log_reopen", json_pack("{s:s}", "path", a));
    cfgref_release(ref);
}

int main(int argc, char **argv)
{
    bool check = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            app.path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            app.path = argv[i] + 9;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("c-proxy %s (llhttp %d.%d.%d, libev %d.%d)\n", TWINPROXY_VERSION,
                   LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH,
                   ev_version_major(), ev_version_minor());
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help();
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!app.path) {
        usage(stderr);
        return 2;
    }
    app.argv = argv;
    /* From before the port listens until the watchers are in place the signals we
     * handle stay blocked (a SIGHUP right after start must not kill us): blocked here,
     * inherited blocked by every thread, unblocked (whatever mask we were started
     * with) on the main thread only once the watchers exist. */
    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGUSR1);
    sigaddset(&handled, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &handled, NULL);
    int upgrade_chan = check ? -1 : upgrade_channel(); /* started by SIGUSR2: inherit */
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(app.path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "config error: %s\n", err);
        return 2;
    }
    /* the store is part of the config: opened (and its schema checked) before anything */
    if (cfg->rate_limit.enabled && store_open_for(cfg, check, &app.store, err, sizeof err) == -1) {
        fprintf(stderr, "config error: %s\n", err);
        config_free(cfg);
        return 2;
    }
    if (check) {
        store_close(app.store);
        config_free(cfg);
        return 0;
    }
    if (log_configure(cfg, err, sizeof err) == -1) {
        fprintf(stderr, "config error: %s\n", err);
        store_close(app.store);
        config_free(cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* one descriptor per client and per upstream connection: use what we may */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    app.n_workers = cfg->workers ? cfg->workers : 1;
    int *fds = calloc(app.n_workers, sizeof *fds);
    app.workers = calloc(app.n_workers, sizeof *app.workers);
    app.listeners = calloc(app.n_workers, sizeof *app.listeners);
    if (!fds || !app.workers || !app.listeners) {
        fprintf(stderr, "c-proxy: out of memory\n");
        free(fds);
        free(app.workers);
        free(app.listeners);
        store_close(app.store);
        config_free(cfg);
        return 1;
    }
    int admin_fd = -1;
    ssize_t exe_len = readlink("/proc/self/exe", app.exe, sizeof app.exe - 1);
    app.exe[exe_len > 0 ? exe_len : 0] = '\0';
    if (upgrade_chan != -1
            ? upgrade_receive(upgrade_chan, cfg, fds, &admin_fd, err, sizeof err) == -1
            : (listener_bind_all(cfg, fds, app.n_workers, err, sizeof err) == -1 ||
               (cfg->admin_enabled &&
                (admin_fd = admin_bind(&cfg->admin_listen, cfg->path, err, sizeof err)) == -1))) {
        if (upgrade_chan != -1)
            close(upgrade_chan);
        fprintf(stderr, "config error: %s\n", err);
        for (unsigned i = 0; i < app.n_workers; i++)
            if (fds[i] != -1)
                close(fds[i]);
        free(fds);
        free(app.workers);
        free(app.listeners);
        store_close(app.store);
        config_free(cfg);
        log_close();
        return 2;
    }
    if (cfg->rate_limit.enabled) {
        struct ratelimit_limit dflt = default_limit(cfg);
        app.rl = ratelimit_table_new(cfg->rate_limit.max_clients, &dflt);
        if (!app.rl) {
            fprintf(stderr, "c-proxy: out of memory (rate_limit.max_clients)\n");
            return 1;
        }
    }
    atomic_init(&app.generation, 1);
    app.slots = calloc(app.n_workers, sizeof *app.slots);
    for (unsigned i = 0; app.slots && i < app.n_workers; i++)
        if ((app.slots[i] = calloc(1, sizeof *app.slots[i])) == NULL) {
            fprintf(stderr, "c-proxy: out of memory (metrics)\n");
            return 1;
        }
    if (!app.slots) {
        fprintf(stderr, "c-proxy: out of memory (metrics)\n");
        return 1;
    }
    app.cfg = cfgref_new(cfg);
    struct ev_loop *loop = ev_default_loop(0);
    if (!app.cfg || !loop) {
        fprintf(stderr, "c-proxy: cannot start the event loop\n");
        return 1;
    }
    app.started = cfgref_acquire(app.cfg);
    if (app.rl && store_load_into(app.store, app.rl, err, sizeof err) == -1) {
        fprintf(stderr, "config error: %s:%d: store %s: %s\n", cfg->path,
                cfg->rate_limit.store_line, cfg->rate_limit.store, err);
        return 2;
    }

    /* the watchers first: a signal that came since start waits for them (blocked) */
    ev_signal_init(&app.sig_term, on_stop, SIGTERM);
    ev_signal_init(&app.sig_int, on_stop, SIGINT);
    ev_signal_init(&app.sig_hup, on_reload, SIGHUP);
    ev_signal_init(&app.sig_usr2, on_upgrade, SIGUSR2);
    ev_signal_start(loop, &app.sig_term);
    ev_signal_start(loop, &app.sig_int);
    ev_signal_start(loop, &app.sig_hup);
    ev_signal_start(loop, &app.sig_usr2);
    ev_signal_init(&app.sig_usr1, on_reopen, SIGUSR1);
    ev_signal_start(loop, &app.sig_usr1);
    app.admin_fd = admin_fd;

    atomic_init(&app.loops_running, app.n_workers);
    /* worker threads never take the signals: they start with them blocked */
    for (unsigned i = 0; i < app.n_workers; i++) {
        struct worker *w = &app.workers[i];
        if (worker_init(w, i, i == 0 ? loop : NULL, &app_hooks) == -1 ||
            upstream_set_install(w, app.cfg) == -1) {
            fprintf(stderr, "c-proxy: cannot start worker %u\n", i);
            return 1;
        }
        w->rl = app.rl;
        w->metrics = app.slots[i];
        listener_start(&app.listeners[i], w, fds[i], client_new);
    }
    if (app.rl) {
        if (pthread_create(&app.saver, NULL, saver_thread, NULL) != 0) {
            fprintf(stderr, "c-proxy: cannot start the store saver thread\n");
            return 1;
        }
        app.saver_running = true;
    }
    if (admin_fd != -1) {
        struct admin_config acfg = {.token = cfg->admin_token};
        struct admin_clients clients = {.table = app.rl, .store = app.store, .now = wall_now};
        app.admin =
            admin_start(&acfg, admin_fd, &app_providers, app.rl ? &clients : NULL, err, sizeof err);
        if (!app.admin) {
            fprintf(stderr, "c-proxy: %s\n", err);
            return 1;
        }
    }
    for (unsigned i = 1; i < app.n_workers; i++) {
        if (worker_spawn(&app.workers[i]) == -1) {
            fprintf(stderr, "c-proxy: cannot start worker thread %u\n", i);
            return 1;
        }
    }
    free(fds);

    log_event(CONFIG_LOG_INFO, "start",
              json_pack("{s:s,s:i,s:I}", "listen", cfg->listen.text, "workers", (int)app.n_workers,
                        "pid", (json_int_t)getpid()));
    if (upgrade_chan != -1)
        upgrade_ready(upgrade_chan); /* the old process stops accepting and drains */
    pthread_sigmask(SIG_UNBLOCK, &handled, NULL);

    worker_run(&app.workers[0]);

    /* a signal from here on must not meet the default action (ev_signal_stop restores
     * it): the process is ending anyway */
    pthread_sigmask(SIG_BLOCK, &handled, NULL);
    ev_signal_stop(loop, &app.sig_term);
    ev_signal_stop(loop, &app.sig_int);
    ev_signal_stop(loop, &app.sig_hup);
    ev_signal_stop(loop, &app.sig_usr1);
    ev_signal_stop(loop, &app.sig_usr2);
    if (app.upgrade_pid != 0)
        upgrade_end(loop); /* the new process finds the channel closed and carries on */
    ev_child_stop(loop, &app.upgrade_cw);
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_join_and_deinit(&app.workers[i]);
    free(app.workers);
    free(app.listeners);
    /* the admin API changes the table and the store: stop it before the last save */
    admin_stop(app.admin);
    for (unsigned i = 0; i < app.n_workers; i++)
        free(app.slots[i]);
    free(app.slots);
    if (app.rl) {
        saver_stop();
        store_save_all(); /* a restart must not refill anyone */
    }
    store_close(app.store);
    ratelimit_table_free(app.rl);
    free(saved.rows);
    log_event(CONFIG_LOG_INFO, "stop", NULL);
    health_registry_free(); /* every set is gone: nobody holds a state */
    cfgref_release(app.cfg);
    cfgref_release(app.started);
    log_close();
    ev_loop_destroy(loop);
    return 0;
}
