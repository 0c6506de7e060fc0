/* Unit tests: upgrade (the socket hand-over of a binary upgrade, docs/operations.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upgrade.h"

/* A listening socket on a free loopback port; its "127.0.0.1:PORT" into text. */
static int listening(char *text, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    snprintf(text, len, "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    return fd;
}

static unsigned open_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void channel(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* The running process's config as the new process would read it. */
static void config_for(struct config *cfg, const char *listen, unsigned workers, const char *admin)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->path = "t.yaml";
    snprintf(cfg->listen.text, sizeof cfg->listen.text, "%s", listen);
    cfg->listen.line = 3;
    cfg->workers = workers;
    cfg->admin_enabled = admin != NULL;
    if (admin)
        snprintf(cfg->admin_listen.text, sizeof cfg->admin_listen.text, "%s", admin);
}

/* Same socket? (both ends report the same local port) */
static void assert_same_socket(int a, int b)
{
    struct sockaddr_in x, y;
    socklen_t lx = sizeof x, ly = sizeof y;
    assert_int_equal(getsockname(a, (struct sockaddr *)&x, &lx), 0);
    assert_int_equal(getsockname(b, (struct sockaddr *)&y, &ly), 0);
    assert_int_equal(x.sin_port, y.sin_port);
    assert_int_not_equal(a, b);
}

static void test_receive_takes_the_offered_sockets(void **state)
{
    (void)state;
    char l0[64], l1[64], adm[64];
    int w[2] = {listening(l0, sizeof l0), -1};
    /* workers 2 share one address (SO_REUSEPORT in the proxy): the test reuses l0's text */
    w[1] = listening(l1, sizeof l1);
    int afd = listening(adm, sizeof adm);
    int sv[2];
    channel(sv);
    struct upgrade_offer o = {.listen = l0, .workers = 2, .fds = w, .admin = adm, .admin_fd = afd};
    assert_int_equal(upgrade_offer_send(sv[0], &o), 0);
    struct config cfg;
    config_for(&cfg, l0, 2, adm);
    int fds[2] = {-1, -1}, admin_fd = -2;
    char err[UPGRADE_ERR_MAX];
    assert_int_equal(upgrade_receive(sv[1], &cfg, fds, &admin_fd, err, sizeof err), 0);
    assert_same_socket(fds[0], w[0]);
    assert_same_socket(fds[1], w[1]);
    assert_same_socket(admin_fd, afd);
    for (int i = 0; i < 2; i++)
        close(fds[i]), close(w[i]);
    close(admin_fd);
    close(afd);
    close(sv[0]);
    close(sv[1]);
}

static void test_receive_many_workers_in_batches(void **state)
{
    (void)state;
    enum { N = UPGRADE_FDS_PER_MSG + 7 };
    char l0[64];
    int lfd = listening(l0, sizeof l0);
    int *w = calloc(N, sizeof *w), *fds = calloc(N, sizeof *fds);
    for (int i = 0; i < N; i++)
        w[i] = dup(lfd);
    int sv[2];
    channel(sv);
    struct upgrade_offer o = {.listen = l0, .workers = N, .fds = w};
    assert_int_equal(upgrade_offer_send(sv[0], &o), 0);
    struct config cfg;
    config_for(&cfg, l0, N, NULL);
    int admin_fd = -2;
    char err[UPGRADE_ERR_MAX];
    assert_int_equal(upgrade_receive(sv[1], &cfg, fds, &admin_fd, err, sizeof err), 0);
    assert_int_equal(admin_fd, -1);
    for (int i = 0; i < N; i++) {
        assert_same_socket(fds[i], lfd);
        close(fds[i]);
        close(w[i]);
    }
    free(w);
    free(fds);
    close(lfd);
    close(sv[0]);
    close(sv[1]);
}

static void test_receive_refuses_another_listen(void **state)
{
    (void)state;
    char l0[64];
    int lfd = listening(l0, sizeof l0);
    int sv[2];
    channel(sv);
    struct upgrade_offer o = {.listen = l0, .workers = 1, .fds = &lfd};
    assert_int_equal(upgrade_offer_send(sv[0], &o), 0);
    unsigned before = open_fds();
    struct config cfg;
    config_for(&cfg, "127.0.0.1:1", 1, NULL);
    int fd = -1, admin_fd = -1;
    char err[UPGRADE_ERR_MAX];
    assert_int_equal(upgrade_receive(sv[1], &cfg, &fd, &admin_fd, err, sizeof err), -1);
    assert_string_equal(err, "t.yaml:3: listen, workers and admin.listen must stay as the running"
                             " process has them across a binary upgrade (restart instead)");
    assert_int_equal(open_fds(), before); /* nothing received is left open */
    close(lfd);
    close(sv[0]);
    close(sv[1]);
}

static void test_receive_refuses_other_workers_or_admin(void **state)
{
    (void)state;
    char l0[64];
    int lfd = listening(l0, sizeof l0);
    for (int variant = 0; variant < 2; variant++) {
        int sv[2];
        channel(sv);
        struct upgrade_offer o = {.listen = l0, .workers = 1, .fds = &lfd};
        assert_int_equal(upgrade_offer_send(sv[0], &o), 0);
        struct config cfg;
        config_for(&cfg, l0, variant == 0 ? 2 : 1, variant == 1 ? "127.0.0.1:2" : NULL);
        int fds[2] = {-1, -1}, admin_fd = -1;
        char err[UPGRADE_ERR_MAX];
        assert_int_equal(upgrade_receive(sv[1], &cfg, fds, &admin_fd, err, sizeof err), -1);
        assert_non_null(strstr(err, "binary upgrade"));
        close(sv[0]);
        close(sv[1]);
    }
    close(lfd);
}

static void test_receive_without_an_offer(void **state)
{
    (void)state;
    int sv[2];
    channel(sv);
    close(sv[0]);
    struct config cfg;
    config_for(&cfg, "127.0.0.1:1", 1, NULL);
    int fd = -1, admin_fd = -1;
    char err[UPGRADE_ERR_MAX];
    assert_int_equal(upgrade_receive(sv[1], &cfg, &fd, &admin_fd, err, sizeof err), -1);
    assert_string_equal(err, "t.yaml:3: no upgrade offer from the running process");
    close(sv[1]);
}

static void test_poll_ready_and_closed(void **state)
{
    (void)state;
    int sv[2];
    channel(sv);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(upgrade_poll(sv[0]), 0); /* nothing yet */
    upgrade_ready(sv[1]);                     /* closes its end too */
    assert_int_equal(upgrade_poll(sv[0]), 1);
    assert_int_equal(upgrade_poll(sv[0]), -1); /* then the channel is closed */
    close(sv[0]);
    channel(sv);
    close(sv[1]);
    assert_int_equal(upgrade_poll(sv[0]), -1); /* closed without "ready" */
    close(sv[0]);
}

static void test_channel_from_environment(void **state)
{
    (void)state;
    unsetenv(UPGRADE_ENV);
    assert_int_equal(upgrade_channel(), -1);
    int sv[2];
    channel(sv);
    char v[16];
    snprintf(v, sizeof v, "%d", sv[1]);
    setenv(UPGRADE_ENV, v, 1);
    assert_int_equal(upgrade_channel(), sv[1]);
    assert_null(getenv(UPGRADE_ENV)); /* not passed on to what this process starts */
    for (const char *bad = "x"; bad; bad = NULL) {
        setenv(UPGRADE_ENV, bad, 1);
        assert_int_equal(upgrade_channel(), -1);
    }
    setenv(UPGRADE_ENV, "1", 1); /* stdout is no channel */
    assert_int_equal(upgrade_channel(), -1);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_receive_takes_the_offered_sockets),
        cmocka_unit_test(test_receive_many_workers_in_batches),
        cmocka_unit_test(test_receive_refuses_another_listen),
        cmocka_unit_test(test_receive_refuses_other_workers_or_admin),
        cmocka_unit_test(test_receive_without_an_offer),
        cmocka_unit_test(test_poll_ready_and_closed),
        cmocka_unit_test(test_channel_from_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
