/* main: command line, signals, the loop. See ../README.md for the CLI and the path API. */
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: upstream --listen HOST:PORT [--name NAME] [--listen HOST:PORT [--name NAME]]"
               "... [--health-fail] [--quiet]\n");
}

/* Benchmarks open many connections: take the hard limit on descriptors. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct server srv;
    struct ev_loop *loop;
    const char *addrs[64];
    const char *names[64];
    size_t n = 0;
    int failing = 0, quiet = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            if (n == sizeof(addrs) / sizeof(addrs[0])) {
                fprintf(stderr, "upstream: too many --listen\n");
                return 2;
            }
            addrs[n] = argv[++i];
            names[n++] = NULL;
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            if (n == 0) {
                fprintf(stderr, "upstream: --name must follow a --listen\n");
                return 2;
            }
            names[n - 1] = argv[++i];
        } else if (strcmp(argv[i], "--health-fail") == 0) {
            failing = 1;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "upstream: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (n == 0) {
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    loop = ev_default_loop(EVFLAG_AUTO);
    if (loop == NULL) {
        fprintf(stderr, "upstream: cannot initialise libev\n");
        return 1;
    }
    server_init(&srv, loop, quiet);
    for (size_t i = 0; i < n; i++) {
        if (server_add_listener(&srv, addrs[i], names[i], failing) == -1) {
            server_deinit(&srv);
            return 1;
        }
    }
    server_start(&srv);
    fputs("ready\n", stdout);
    fflush(stdout);

    ev_run(loop, 0);

    server_deinit(&srv);
    ev_loop_destroy(loop);
    return 0;
}
