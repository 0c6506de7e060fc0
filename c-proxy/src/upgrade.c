#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

#define UPGRADE_MAGIC "twinproxy-upgrade 1"
#define UPGRADE_HEAD_MAX 512 /* the first packet */

/* ---------------------------------------------------------------- old side */

/* environ without UPGRADE_ENV, plus "UPGRADE_ENV=fd" (one block: free() it). */
static char **env_with_channel(int fd, char *var, size_t varlen)
{
    size_t n = 0, len = strlen(UPGRADE_ENV);
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (env == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (!(strncmp(environ[i], UPGRADE_ENV, len) == 0 && environ[i][len] == '='))
            env[j++] = environ[i];
    snprintf(var, varlen, "%s=%d", UPGRADE_ENV, fd);
    env[j++] = var;
    env[j] = NULL;
    return env;
}

/* One packet of `len` bytes with `n` descriptors. Returns 0 or -1 (errno). */
static int send_packet(int fd, const void *buf, size_t len, const int *fds, size_t n)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * UPGRADE_FDS_PER_MSG)];
        struct cmsghdr align;
    } ctl;
    if (n > 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    ssize_t r;
    do
        r = sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (r == -1 && errno == EINTR);
    return r == (ssize_t)len ? 0 : -1;
}

int upgrade_offer_send(int fd, const struct upgrade_offer *o)
{
    size_t nfds = o->workers + (o->admin ? 1 : 0);
    int *all = malloc(nfds * sizeof *all);
    if (all == NULL)
        return -1;
    memcpy(all, o->fds, o->workers * sizeof *all);
    if (o->admin)
        all[o->workers] = o->admin_fd;
    char head[UPGRADE_HEAD_MAX];
    int len = snprintf(head, sizeof head, "%s %ld %u %zu %s %s", UPGRADE_MAGIC, (long)getpid(),
                       o->workers, nfds, o->listen, o->admin ? o->admin : "-");
    int rc =
        len > 0 && (size_t)len < sizeof head ? send_packet(fd, head, (size_t)len, NULL, 0) : -1;
    for (size_t at = 0; rc == 0 && at < nfds; at += UPGRADE_FDS_PER_MSG) {
        size_t k = nfds - at < UPGRADE_FDS_PER_MSG ? nfds - at : UPGRADE_FDS_PER_MSG;
        rc = send_packet(fd, "F", 1, all + at, k);
    }
    free(all);
    return rc;
}

int upgrade_spawn(const char *exe, char *const argv[], const struct upgrade_offer *offer,
                  pid_t *pid, int *chan, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -1;
    }
    const char *what = "send the sockets";
    /* the offer waits in the channel: the new process reads it when it starts */
    if (upgrade_offer_send(sv[0], offer) == -1)
        goto fail;
    what = "start the new process";
    char var[64];
    char **env = env_with_channel(sv[1], var, sizeof var);
    if (env == NULL)
        goto fail;
    /* the child keeps its end (close-on-exec off) and starts with the signals it
     * handles blocked: it unblocks them once its watchers are in place */
    posix_spawnattr_t attr;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2); /* main.c's `handled` */
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &block);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    int e = fcntl(sv[1], F_SETFD, 0) == -1 ? errno : 0;
    if (e == 0)
        e = posix_spawn(pid, exe, NULL, &attr, argv, env);
    posix_spawnattr_destroy(&attr);
    free(env);
    if (e != 0) {
        errno = e;
        goto fail;
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    *chan = sv[0];
    return 0;
fail:
    snprintf(err, errlen, "cannot %s: %s", what, strerror(errno));
    close(sv[0]);
    close(sv[1]);
    return -1;
}

int upgrade_poll(int chan)
{
    char buf[16];
    ssize_t r;
    do
        r = recv(chan, buf, sizeof buf, 0);
    while (r == -1 && errno == EINTR);
    if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (r == 5 && memcmp(buf, "ready", 5) == 0)
        return 1;
    return -1;
}

/* ---------------------------------------------------------------- new side */

int upgrade_channel(void)
{
    const char *v = getenv(UPGRADE_ENV);
    if (v == NULL)
        return -1;
    char *end;
    errno = 0;
    long fd = strtol(v, &end, 10);
    unsetenv(UPGRADE_ENV);
    if (errno != 0 || end == v || *end != '\0' || fd < 3 || fd > 1 << 20 ||
        fcntl((int)fd, F_GETFD) == -1)
        return -1;
    fcntl((int)fd, F_SETFD, FD_CLOEXEC); /* not for whatever this process starts */
    return (int)fd;
}

/* One packet into buf (NUL-ended), descriptors appended to fds[*n .. max). Returns
 * its byte count, 0 on EOF, -1 on error or more descriptors than max. */
static ssize_t recv_packet(int chan, char *buf, size_t cap, int *fds, size_t *n, size_t max)
{
    struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * UPGRADE_FDS_PER_MSG)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl};
    ssize_t r;
    do
        r = recvmsg(chan, &mh, MSG_CMSG_CLOEXEC);
    while (r == -1 && errno == EINTR);
    if (r < 0)
        return -1;
    buf[r] = '\0';
    bool over = false;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *p = CMSG_DATA(c);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, p + i * sizeof fd, sizeof fd);
            if (*n < max)
                fds[(*n)++] = fd;
            else
                close(fd), over = true;
        }
    }
    if (over || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
        return -1;
    return r;
}

/* A whole decimal number (no sign, no spaces) into *out. */
static bool parse_count(const char *s, unsigned long *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* A listening stream socket? */
static bool is_listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

int upgrade_receive(int chan, const struct config *cfg, int *fds, int *admin_fd, char *err,
                    size_t errlen)
{
    unsigned workers = cfg->workers ? cfg->workers : 1;
    size_t want = workers + (cfg->admin_enabled ? 1 : 0), n = 0;
    int *got = calloc(want, sizeof *got);
    char head[UPGRADE_HEAD_MAX], pkt[8];
    const char *why = "out of memory";
    if (got == NULL)
        goto fail;
    why = "no upgrade offer from the running process";
    if (recv_packet(chan, head, sizeof head, got, &n, 0) <= 0)
        goto fail;
    /* PID WORKERS NFDS LISTEN ADMIN after the magic, one space apart */
    char *tok[5], *save = NULL;
    size_t nt = 0;
    why = "malformed upgrade offer";
    if (strncmp(head, UPGRADE_MAGIC " ", sizeof UPGRADE_MAGIC) != 0)
        goto fail;
    for (char *t = strtok_r(head + sizeof UPGRADE_MAGIC, " ", &save); t;
         t = strtok_r(NULL, " ", &save))
        if (nt++ < 5)
            tok[nt - 1] = t;
    unsigned long w = 0, nfds = 0;
    if (nt != 5 || !parse_count(tok[0], &w) || !parse_count(tok[1], &w) ||
        !parse_count(tok[2], &nfds))
        goto fail;
    const char *listen = tok[3], *admin = tok[4];
    why = "listen, workers and admin.listen must stay as the running process has them"
          " across a binary upgrade (restart instead)";
    bool has_admin = strcmp(admin, "-") != 0;
    if (strcmp(listen, cfg->listen.text) != 0 || w != workers || has_admin != cfg->admin_enabled ||
        (has_admin && strcmp(admin, cfg->admin_listen.text) != 0) || nfds != want)
        goto fail;
    why = "the running process's sockets did not arrive";
    while (n < want) {
        size_t before = n;
        if (recv_packet(chan, pkt, sizeof pkt, got, &n, want) != 1 || n == before)
            goto fail;
    }
    why = "a received socket is not listening";
    for (size_t i = 0; i < want; i++)
        if (!is_listening(got[i]))
            goto fail;
    for (unsigned i = 0; i < workers; i++)
        fds[i] = got[i];
    *admin_fd = cfg->admin_enabled ? got[workers] : -1;
    free(got);
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        close(got[i]);
    free(got);
    snprintf(err, errlen, "%s:%d: %s", cfg->path ? cfg->path : "?", cfg->listen.line, why);
    return -1;
}

void upgrade_ready(int chan)
{
    if (send_packet(chan, "ready", 5, NULL, 0) == -1) {
        /* the old process is gone (stopped meanwhile): nothing to hand over */
    }
    close(chan);
}
