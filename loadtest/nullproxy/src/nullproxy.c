/* nullproxy: the lab's "null proxy", the cheapest possible hop. A TCP relay
 * that knows nothing about HTTP: every accepted connection gets its own
 * upstream connection and bytes move both ways with splice(2) through a pipe,
 * never entering user space. One thread, one level-triggered epoll loop, like
 * one worker of the real proxies, so that pinned the same way it shows the
 * floor (two extra loopback hops, the cross-CPU wake-ups) under the proxies'
 * own cost. Not a proxy to use: no timeouts, no limits.
 *
 *   nullproxy LISTEN_HOST:PORT UPSTREAM_HOST:PORT     (prints "ready" once
 * listening)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CHUNK = 1 << 16 };

/* one direction of a relayed connection: bytes read from src wait in the pipe
 * for dst */
struct dir {
  int src, dst, pipe_r, pipe_w;
  size_t pending; /* bytes in the pipe */
  int eof; /* src said EOF and the pipe drained: dst was shut for writing */
};

struct conn {
  struct dir d[2]; /* d[0]: client -> upstream, d[1]: upstream -> client */
  int fd[2];       /* fd[0] client, fd[1] upstream */
  unsigned want[2];
};

/* what epoll's data points at: a connection and which of its two sockets woke
 */
struct end {
  struct conn *c;
  int side;
};

static int ep;
static volatile sig_atomic_t stop;

static void on_term(int sig) {
  (void)sig;
  stop = 1;
}

static int parse_addr(const char *s, struct sockaddr_in *a) {
  const char *colon = strrchr(s, ':');
  char host[64];
  if (colon == NULL || (size_t)(colon - s) >= sizeof host)
    return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535)
    return -1;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((unsigned short)port);
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void close_conn(struct conn *c, struct end *ends) {
  for (int i = 0; i < 2; i++) {
    close(c->fd[i]);
    close(c->d[i].pipe_r);
    close(c->d[i].pipe_w);
  }
  free(ends);
  free(c);
}

/* move what can move in direction d without blocking; -1 on a socket error */
static int pump(struct dir *d) {
  if (d->pending > 0) {
    ssize_t n = splice(d->pipe_r, NULL, d->dst, NULL, d->pending,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0)
      return errno == EAGAIN ? 0 : -1;
    d->pending -= (size_t)n;
    if (d->pending > 0)
      return 0;
  }
  if (d->eof)
    return 0;
  ssize_t n = splice(d->src, NULL, d->pipe_w, NULL, CHUNK,
                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n < 0)
    return errno == EAGAIN ? 0 : -1;
  if (n == 0) {
    d->eof = 1;
    shutdown(d->dst, SHUT_WR);
    return 0;
  }
  d->pending = (size_t)n;
  n = splice(d->pipe_r, NULL, d->dst, NULL, d->pending,
             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n < 0)
    return errno == EAGAIN ? 0 : -1;
  d->pending -= (size_t)n;
  return 0;
}

/* readable while its pipe is empty, writable while the other direction's pipe
 * is not */
static void update_interest(struct conn *c, struct end *ends) {
  for (int s = 0; s < 2; s++) {
    unsigned w = (c->d[s].pending == 0 && !c->d[s].eof ? EPOLLIN : 0u) |
                 (c->d[1 - s].pending > 0 ? EPOLLOUT : 0u);
    if (w != c->want[s]) {
      struct epoll_event ev = {.events = w, .data.ptr = &ends[s]};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd[s], &ev);
      c->want[s] = w;
    }
  }
}

static void accept_one(int lfd, const struct sockaddr_in *up) {
  int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (cfd < 0)
    return;
  int ufd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct end *ends = calloc(2, sizeof *ends);
  struct conn *c = calloc(1, sizeof *c);
  int p0[2] = {-1, -1}, p1[2] = {-1, -1}, one = 1;
  if (ufd < 0 || ends == NULL || c == NULL ||
      connect(ufd, (const struct sockaddr *)up, sizeof *up) != 0 ||
      pipe2(p0, O_NONBLOCK | O_CLOEXEC) != 0 ||
      pipe2(p1, O_NONBLOCK | O_CLOEXEC) != 0) {
    int fds[] = {cfd, ufd, p0[0], p0[1], p1[0], p1[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
      if (fds[i] >= 0)
        close(fds[i]);
    free(ends);
    free(c);
    return;
  }
  fcntl(ufd, F_SETFL, O_NONBLOCK);
  setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd[0] = cfd;
  c->fd[1] = ufd;
  c->d[0] =
      (struct dir){.src = cfd, .dst = ufd, .pipe_r = p0[0], .pipe_w = p0[1]};
  c->d[1] =
      (struct dir){.src = ufd, .dst = cfd, .pipe_r = p1[0], .pipe_w = p1[1]};
  for (int s = 0; s < 2; s++) {
    ends[s] = (struct end){.c = c, .side = s};
    c->want[s] = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ends[s]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[s], &ev) != 0) {
      close_conn(c, ends); /* closing its fds also takes them out of epoll */
      return;
    }
  }
  /* c and ends live on in epoll's data pointers until close_conn */
} // NOLINT(clang-analyzer-unix.Malloc)

int main(int argc, char **argv) {
  struct sockaddr_in la, ua;
  if (argc != 3 || parse_addr(argv[1], &la) != 0 ||
      parse_addr(argv[2], &ua) != 0) {
    fprintf(stderr,
            "usage: nullproxy LISTEN_HOST:PORT UPSTREAM_HOST:PORT (IPv4)\n");
    return 2;
  }
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int one = 1,
      lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (lfd < 0 || ep < 0 ||
      setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(lfd, (struct sockaddr *)&la, sizeof la) != 0 ||
      listen(lfd, 1024) != 0) {
    fprintf(stderr, "nullproxy: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event evs[64];
  while (!stop) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      struct end *e = evs[i].data.ptr;
      if (evs[i].events == 0)
        continue; /* its connection was closed earlier in this batch */
      if (e == NULL) {
        accept_one(lfd, &ua);
        continue;
      }
      struct conn *c = e->c;
      struct end *ends = e - e->side;
      if (pump(&c->d[0]) != 0 || pump(&c->d[1]) != 0 ||
          (c->d[0].eof && c->d[1].eof && c->d[0].pending == 0 &&
           c->d[1].pending == 0) ||
          (evs[i].events & EPOLLERR)) {
        /* later events of this batch for the same connection must not touch it
         */
        for (int j = i + 1; j < n; j++)
          if (evs[j].data.ptr == &ends[0] || evs[j].data.ptr == &ends[1])
            evs[j].events = 0;
        close_conn(c, ends);
        continue;
      }
      update_interest(c, ends);
    }
  }
  close(lfd);
  close(ep);
  return 0;
}
