/* fuzz_exchange: the whole exchange in-process. A real worker (its own libev loop,
 * an upstream set from a real config) serves one client on a socketpair; the two
 * configured upstreams are listening AF_UNIX sockets of this process, so every
 * upstream connection the proxy opens is accepted here. Only public APIs are used:
 * worker.h (worker_init, worker_join_and_deinit), upstream.h (upstream_set_install),
 * client.h (client_new) and health.h (health_registry_free between inputs).
 *
 * Input: a sequence of events. Each event is one byte: low 3 bits the op, high 5
 * bits an argument (which upstream connection); send ops are followed by a length
 * byte and that many bytes. After every event the loop runs until nothing moves.
 *   0 client sends bytes          1 upstream conn sends bytes
 *   2 client shuts its write side  3 upstream conn closes
 *   4 upstream conn shuts its write side
 *   5 toggle: the client reads / stops reading (backpressure on `out`)
 *   6 toggle: the upstreams read / stop reading (backpressure on `uout`)
 *   7 the worker starts draining (graceful stop)
 * Sockets get small buffers so partial reads and writes happen with small inputs.
 *
 * Oracles besides ASan/UBSan/LSan: every byte an upstream receives parses, with a
 * fresh strict llhttp, as a sequence of requests (until an upgrade); every byte the
 * client receives parses as a sequence of responses (HEAD answers have no body, a
 * 101 ends the check). Timeouts are seconds long and never fire within an input.
 */
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "health.h"
#include "log.h"
#include "upstream.h"
#include "util.h"
#include "worker.h"

#define N_UP 2       /* configured upstreams (two, so retries have somewhere to go) */
#define MAX_CONNS 16 /* upstream connections accepted per input, at most */
#define SOCKBUF 4096 /* SO_SNDBUF/SO_RCVBUF of every harness socket */
#define MAX_METHODS 64

static const char yaml[] = "listen: 127.0.0.1:1\n"
                           "upstreams:\n"
                           "  - {name: u1, address: 127.0.0.1:1}\n"
                           "  - {name: u2, address: 127.0.0.1:2}\n"
                           "retries: 1\n"
                           "limits: {max_header_bytes: 4096, upstream_idle_connections: 2}\n"
                           "log: {level: error, access: \"off\"}\n";

static struct cfgref *cfg;       /* one config for every input (a permanent ref) */
static int lfd[N_UP] = {-1, -1}; /* the upstreams' listening sockets */

/* A strict llhttp over one direction of the wire, checking it stays well-formed. */
struct wire {
    llhttp_t llp;
    llhttp_settings_t st;
    bool done;                /* an upgrade or a parse we stop following */
    unsigned *methods;        /* responses: the requests' methods, in order */
    unsigned n_methods, next; /* responses: methods known, final responses seen */
};

struct up {
    int fd;         /* harness side of an accepted upstream conn, -1 when closed */
    struct wire rx; /* what the proxy sent it: requests */
};

struct harness {
    struct worker w;
    int cfd;           /* harness side of the client socketpair, -1 when closed */
    bool client_reads; /* op 5 */
    bool ups_read;     /* op 6 */
    struct wire crx;   /* what the client got: responses */
    struct wire ctx;   /* what the client sent: requests (only their methods) */
    unsigned methods[MAX_METHODS];
    unsigned n_methods;
    struct up ups[MAX_CONNS];
    unsigned n_ups;
};

static struct harness H;

static int on_req_head(llhttp_t *llp)
{
    (void)llp;
    return 0;
}

static int on_client_req_head(llhttp_t *llp)
{
    (void)llp;
    if (H.n_methods < MAX_METHODS)
        H.methods[H.n_methods++] = llhttp_get_method(&H.ctx.llp);
    return 0;
}

static int on_resp_head(llhttp_t *llp)
{
    unsigned st = llhttp_get_status_code(llp);
    if (st == 101)
        return 2; /* tunnel from here: stop following */
    if (st >= 100 && st < 200)
        return 0;
    unsigned i = H.crx.next++;
    if (i < H.n_methods && H.methods[i] == HTTP_HEAD)
        return 1; /* no body, the proxy's own errors included (crashes/exchange/head-502-with-body)
                   */
    return 0;
}

static void wire_init(struct wire *wi, llhttp_type_t type, int (*on_head)(llhttp_t *))
{
    memset(wi, 0, sizeof *wi);
    llhttp_settings_init(&wi->st);
    wi->st.on_headers_complete = on_head;
    llhttp_init(&wi->llp, type, &wi->st);
}

/* Feed bytes; a parse error aborts when `strict` (the proxy's output), else the
 * side is no longer followed (the client's own garbage). */
static void wire_feed(struct wire *wi, const char *p, size_t n, bool strict, const char *what)
{
    if (wi->done || n == 0)
        return;
    llhttp_errno_t e = llhttp_execute(&wi->llp, p, n);
    if (e == HPE_OK)
        return;
    if (e == HPE_PAUSED_UPGRADE) {
        wi->done = true;
        return;
    }
    if (strict) {
        fprintf(stderr, "fuzz_exchange: %s: %s (%s)\n", what, llhttp_errno_name(e),
                llhttp_get_error_reason(&wi->llp));
        abort();
    }
    wi->done = true;
}

static void set_bufs(int fd)
{
    int sz = SOCKBUF;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

static void worker_hook_drain(struct worker *w)
{
    upstream_set_retire(w->set);
}

static void worker_hook_deinit(struct worker *w)
{
    upstream_set_uninstall(w);
}

static const struct worker_hooks hooks = {
    .on_drain = worker_hook_drain,
    .on_deinit = worker_hook_deinit,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    char err[CONFIG_ERR_MAX];
    struct config *c =
        config_load_string("fuzz_exchange.yaml", yaml, sizeof yaml - 1, err, sizeof err);
    if (!c) {
        fprintf(stderr, "fuzz_exchange: %s\n", err);
        abort();
    }
    for (int i = 0; i < N_UP; i++) {
        /* the harness's upstream i: an abstract AF_UNIX socket of this process */
        struct sockaddr_un *sun = (struct sockaddr_un *)&c->upstreams[i].addr.addr;
        memset(sun, 0, sizeof *sun);
        sun->sun_family = AF_UNIX;
        int n = snprintf(sun->sun_path + 1, sizeof sun->sun_path - 1, "twinproxy-fuzz-%d-%d",
                         (int)getpid(), i);
        c->upstreams[i].addr.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        lfd[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (lfd[i] == -1 ||
            bind(lfd[i], (struct sockaddr *)sun, c->upstreams[i].addr.addrlen) == -1 ||
            listen(lfd[i], 64) == -1) {
            perror("fuzz_exchange: upstream socket");
            abort();
        }
    }
    if (log_configure(c, err, sizeof err) == -1 || !(cfg = cfgref_new(c)))
        abort();
    return 0;
}

/* Accept new upstream conns; read what the proxy sent to them and to the client. */
static bool harness_io(void)
{
    bool moved = false;
    char buf[8192];
    for (int i = 0; i < N_UP; i++) {
        for (;;) {
            int fd = accept4(lfd[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd == -1)
                break;
            moved = true;
            if (H.n_ups == MAX_CONNS) {
                close(fd);
                continue;
            }
            set_bufs(fd);
            struct up *u = &H.ups[H.n_ups++];
            u->fd = fd;
            wire_init(&u->rx, HTTP_REQUEST, on_req_head);
        }
    }
    if (H.ups_read) {
        for (unsigned i = 0; i < H.n_ups; i++) {
            struct up *u = &H.ups[i];
            ssize_t k;
            while (u->fd != -1 && (k = read(u->fd, buf, sizeof buf)) > 0) {
                moved = true;
                wire_feed(&u->rx, buf, (size_t)k, true, "upstream received");
            }
        }
    }
    if (H.client_reads && H.cfd != -1) {
        ssize_t k;
        while ((k = read(H.cfd, buf, sizeof buf)) > 0) {
            moved = true;
            wire_feed(&H.crx, buf, (size_t)k, true, "client received");
        }
        /* EOF: a response cut short is how the proxy reports a failure once response
         * bytes were sent (contract 4); only malformed bytes are a bug */
    }
    return moved;
}

/* Run the loop until a pass moves nothing (bounded). */
static void pump(void)
{
    for (int i = 0; i < 64; i++) {
        ev_run(H.w.loop, EVRUN_NOWAIT);
        bool moved = harness_io();
        ev_run(H.w.loop, EVRUN_NOWAIT);
        if (!moved && !harness_io())
            break;
    }
}

static void send_some(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) {
            if (k == -1 && errno == EAGAIN) {
                pump(); /* let the proxy read; give up if it does not */
                k = send(fd, p, n, MSG_NOSIGNAL);
                if (k > 0) {
                    p += k;
                    n -= (size_t)k;
                    continue;
                }
            }
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

static struct up *pick(unsigned arg)
{
    if (H.n_ups == 0)
        return NULL;
    /* 0: the newest conn; k: the k-th (mod) */
    struct up *u = arg == 0 ? &H.ups[H.n_ups - 1] : &H.ups[(arg - 1) % H.n_ups];
    return u->fd == -1 ? NULL : u;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&H, 0, sizeof H);
    H.client_reads = H.ups_read = true;
    wire_init(&H.crx, HTTP_RESPONSE, on_resp_head);
    wire_init(&H.ctx, HTTP_REQUEST, on_client_req_head);
    if (worker_init(&H.w, 0, NULL, &hooks) == -1 || upstream_set_install(&H.w, cfg) == -1)
        abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1)
        abort();
    set_bufs(sv[0]);
    set_bufs(sv[1]);
    H.cfd = sv[0];
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (client_new(&H.w, sv[1], (const struct sockaddr *)&peer) == -1)
        abort();
    pump();

    size_t i = 0;
    while (i < size) {
        unsigned op = data[i] & 7, arg = data[i] >> 3;
        i++;
        switch (op) {
        case 0:
        case 1: {
            size_t n = i < size ? data[i++] : 0;
            if (n > size - i)
                n = size - i;
            const uint8_t *p = data + i;
            i += n;
            if (op == 0 && H.cfd != -1) {
                wire_feed(&H.ctx, (const char *)p, n, false, "client sent");
                send_some(H.cfd, p, n);
            } else if (op == 1) {
                struct up *u = pick(arg);
                if (u)
                    send_some(u->fd, p, n);
            }
            break;
        }
        case 2:
            if (H.cfd != -1)
                (void)shutdown(H.cfd, SHUT_WR);
            break;
        case 3: {
            struct up *u = pick(arg);
            if (u) {
                close(u->fd);
                u->fd = -1;
            }
            break;
        }
        case 4: {
            struct up *u = pick(arg);
            if (u)
                (void)shutdown(u->fd, SHUT_WR);
            break;
        }
        case 5:
            H.client_reads = !H.client_reads;
            break;
        case 6:
            H.ups_read = !H.ups_read;
            break;
        case 7:
            worker_post_stop(&H.w);
            break;
        }
        pump();
    }
    /* the end: both sides read what is left, then the worker is torn down */
    H.client_reads = H.ups_read = true;
    pump();
    if (H.cfd != -1)
        close(H.cfd);
    for (unsigned k = 0; k < H.n_ups; k++)
        if (H.ups[k].fd != -1)
            close(H.ups[k].fd);
    pump();
    worker_join_and_deinit(&H.w);
    /* conns accepted after the last pump, never seen by the harness */
    for (int k = 0; k < N_UP; k++) {
        int fd;
        while ((fd = accept4(lfd[k], NULL, NULL, SOCK_CLOEXEC)) != -1)
            close(fd);
    }
    health_registry_free(); /* no state carried from one input to the next */
    return 0;
}
