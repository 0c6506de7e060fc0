/* main: command line, startup, signals (reload and graceful stop).
 *
 * Twin: py-proxy/pyproxy/main.py.
 *
 *   c-proxy --config FILE [--check] [--version]
 *
 * Exit codes: 0 after a graceful stop or a valid --check, 2 on a bad config
 * (one line "config error: FILE:LINE: ..." on stderr), including a listen
 * address that cannot be bound.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>
#include <llhttp.h>

#include "client.h"
#include "config.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "upstream.h"
#include "util.h"
#include "worker.h"

struct app {
    const char *path;           /* --config FILE */
    struct cfgref *cfg;         /* current config (one ref) */
    struct worker *workers;     /* cfg->workers at startup */
    struct listener *listeners; /* one per worker, same index */
    unsigned n_workers;         /* fixed for the process's life */
    bool stopping;              /* SIGTERM/SIGINT seen */
    ev_signal sig_term, sig_int, sig_hup;
};

static struct app app;

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

static const struct worker_hooks app_hooks = {
    .on_config = app_on_config,
    .on_drain = app_on_drain,
    .on_conn_gone = app_on_conn_gone,
    .on_deinit = app_on_deinit,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: c-proxy --config FILE [--check] [--version]\n");
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    if (app.stopping)
        return;
    app.stopping = true;
    log_event(CONFIG_LOG_INFO, "shutdown",
              json_pack("{s:s}", "signal", w->signum == SIGINT ? "SIGINT" : "SIGTERM"));
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_post_stop(&app.workers[i]);
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
        log_event(CONFIG_LOG_ERROR, "reload_failed", json_pack("{s:s}", "error", err));
        return;
    }
    const struct config *old = app.cfg->cfg;
    if (strcmp(cfg->listen.text, old->listen.text) != 0 || cfg->workers != old->workers ||
        cfg->admin_enabled != old->admin_enabled ||
        (cfg->admin_enabled && strcmp(cfg->admin_listen.text, old->admin_listen.text) != 0))
        log_event(CONFIG_LOG_WARN, "reload",
                  json_pack("{s:s}", "warning",
                            "listen, workers and admin.listen need a restart; kept as they were"));
    if (log_configure(cfg, err, sizeof err) == -1) {
        log_event(CONFIG_LOG_ERROR, "reload_failed", json_pack("{s:s}", "error", err));
        config_free(cfg);
        return;
    }
    struct cfgref *ref = cfgref_new(cfg);
    if (!ref) {
        config_free(cfg);
        return;
    }
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_post_config(&app.workers[i], cfgref_acquire(ref));
    cfgref_release(app.cfg);
    app.cfg = ref;
    log_event(CONFIG_LOG_INFO, "reload",
              json_pack("{s:s,s:I}", "path", app.path, "upstreams", (json_int_t)cfg->n_upstreams));
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
            usage(stdout);
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
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(app.path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "config error: %s\n", err);
        return 2;
    }
    if (check) {
        config_free(cfg);
        return 0;
    }
    if (log_configure(cfg, err, sizeof err) == -1) {
        fprintf(stderr, "config error: %s\n", err);
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
        return 1;
    }
    if (listener_bind_all(cfg, fds, app.n_workers, err, sizeof err) == -1) {
        fprintf(stderr, "config error: %s\n", err);
        free(fds);
        free(app.workers);
        free(app.listeners);
        config_free(cfg);
        log_close();
        return 2;
    }
    app.cfg = cfgref_new(cfg);
    struct ev_loop *loop = ev_default_loop(0);
    if (!app.cfg || !loop) {
        fprintf(stderr, "c-proxy: cannot start the event loop\n");
        return 1;
    }

    /* worker threads must not take the signals: block them while spawning */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (unsigned i = 0; i < app.n_workers; i++) {
        struct worker *w = &app.workers[i];
        if (worker_init(w, i, i == 0 ? loop : NULL, &app_hooks) == -1 ||
            upstream_set_install(w, app.cfg) == -1) {
            fprintf(stderr, "c-proxy: cannot start worker %u\n", i);
            return 1;
        }
        listener_start(&app.listeners[i], w, fds[i], client_new);
    }
    for (unsigned i = 1; i < app.n_workers; i++) {
        if (worker_spawn(&app.workers[i]) == -1) {
            fprintf(stderr, "c-proxy: cannot start worker thread %u\n", i);
            return 1;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(fds);

    ev_signal_init(&app.sig_term, on_stop, SIGTERM);
    ev_signal_init(&app.sig_int, on_stop, SIGINT);
    ev_signal_init(&app.sig_hup, on_reload, SIGHUP);
    ev_signal_start(loop, &app.sig_term);
    ev_signal_start(loop, &app.sig_int);
    ev_signal_start(loop, &app.sig_hup);

    log_event(CONFIG_LOG_INFO, "start",
              json_pack("{s:s,s:i,s:I}", "listen", cfg->listen.text, "workers", (int)app.n_workers,
                        "pid", (json_int_t)getpid()));

    worker_run(&app.workers[0]);

    ev_signal_stop(loop, &app.sig_term);
    ev_signal_stop(loop, &app.sig_int);
    ev_signal_stop(loop, &app.sig_hup);
    for (unsigned i = 0; i < app.n_workers; i++)
        worker_join_and_deinit(&app.workers[i]);
    free(app.workers);
    free(app.listeners);
    log_event(CONFIG_LOG_INFO, "stop", NULL);
    health_registry_free(); /* every set is gone: nobody holds a state */
    cfgref_release(app.cfg);
    log_close();
    ev_loop_destroy(loop);
    return 0;
}
