/* main: command line, signals, the loop. See ../README.md for the CLI and the path API. */
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_LISTENERS 64

/* A per-listener option given (set) or not (falls back to the value before any --listen). */
struct opt_fault {
    int set;
    enum fault_kind kind;
    uint64_t ms;
};
struct opt_u64 {
    int set;
    uint64_t v;
};

static int parse_ms(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (*s < '0' || *s > '9')
        return -1;
    v = strtoull(s, &end, 10);
    if (*end != '\0' || v > 86400000ULL)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* prog: how it was run, without the directory (installed as twinproxy-upstream). */
static void usage(FILE *f, const char *prog)
{
    const char *slash = strrchr(prog, '/');
    prog = slash ? slash + 1 : prog;
    fprintf(f,
            "usage: %s [OPTS] --listen HOST:PORT [--name NAME] [OPTS] [--listen ...]..."
            " [--health-fail] [--quiet]\n"
            "  OPTS: --fault FAULT  --idle-close-ms N\n"
            "  FAULT: none|reset|drop|stall|delay/MS|reset-head|reset-body|trickle/MS|\n"
            "         malformed|extra|close|early/CODE\n"
            "        (before the first --listen: every listener; after one: that listener)\n"
            "  --health-fail  /health answers 503 from the start\n"
            "  --quiet        no warnings on stderr\n"
            "  -h, --help     print this help and exit\n"
            "Prints \"ready\" on stdout once every listener is bound; SIGTERM/SIGINT exit 0.\n"
            "The scripted paths (/bytes/N, /echo, /delay/MS, ...): %s(1).\n",
            prog, prog);
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
    const char *addrs[MAX_LISTENERS];
    const char *names[MAX_LISTENERS];
    struct opt_fault faults[MAX_LISTENERS + 1] = {{0}}; /* [0]: default, [i + 1]: listener i */
    struct opt_u64 idles[MAX_LISTENERS + 1] = {{0}};
    size_t n = 0;
    int failing = 0, quiet = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            if (n == MAX_LISTENERS) {
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
        } else if (strcmp(argv[i], "--fault") == 0 && i + 1 < argc) {
            struct opt_fault *f = &faults[n];
            const char *v = argv[++i];
            if (route_fault_parse(v, strlen(v), &f->kind, &f->ms) == -1) {
                fprintf(stderr,
                        "upstream: --fault %s: want none|reset|drop|stall|delay/MS|reset-head|"
                        "reset-body|trickle/MS|malformed|extra|close|early/CODE\n",
                        v);
                return 2;
            }
            f->set = 1;
        } else if (strcmp(argv[i], "--idle-close-ms") == 0 && i + 1 < argc) {
            if (parse_ms(argv[++i], &idles[n].v) == -1) {
                fprintf(stderr, "upstream: --idle-close-ms %s: want milliseconds\n", argv[i]);
                return 2;
            }
            idles[n].set = 1;
        } else if (strcmp(argv[i], "--health-fail") == 0) {
            failing = 1;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, argv[0]);
            return 0;
        } else {
            fprintf(stderr, "upstream: unknown argument %s\n", argv[i]);
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (n == 0) {
        usage(stderr, argv[0]);
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
        const struct opt_fault *f = faults[i + 1].set ? &faults[i + 1] : &faults[0];
        const struct opt_u64 *idle = idles[i + 1].set ? &idles[i + 1] : &idles[0];
        struct listener_opts o = {
            .health_failing = failing,
            .fault = f->kind,
            .fault_ms = f->ms,
            .idle_close_ms = idle->v,
        };
        if (server_add_listener(&srv, addrs[i], names[i], &o) == -1) {
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
