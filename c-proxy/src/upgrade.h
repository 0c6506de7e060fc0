/* upgrade: binary upgrade without a refused connection (docs/operations.md
 * "Binary upgrade").
 *
 * Twin: py-proxy/pyproxy/upgrade.py.
 *
 * On SIGUSR2 the running (old) process starts the binary again (the same path and
 * arguments) with one end of an AF_UNIX SOCK_SEQPACKET socketpair as descriptor N
 * and UPGRADE_ENV=N in its environment, its handled signals blocked from the first
 * instruction. Over that channel:
 *
 *   old -> new   "twinproxy-upgrade 1 PID WORKERS NFDS LISTEN ADMIN"   (ADMIN "-": none)
 *   old -> new   packets of one byte "F" carrying up to UPGRADE_FDS_PER_MSG
 *                descriptors each (SCM_RIGHTS), NFDS in all: the WORKERS listening
 *                sockets in worker order, then admin.listen's when ADMIN is not "-"
 *   new -> old   "ready"  once its workers watch the sockets
 *
 * The new process takes those sockets instead of binding (listen, workers and
 * admin.listen must be what the old process runs: else a config error, exit 2);
 * on "ready" the old one stops accepting and drains as on SIGTERM. A channel that
 * closes without "ready" (the new process failed) leaves the old one serving.
 * The listening sockets never close in between: no connection is refused.
 */
#ifndef TWINPROXY_UPGRADE_H
#define TWINPROXY_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define UPGRADE_ENV "TWINPROXY_UPGRADE_FD" /* the new process's channel descriptor */
#define UPGRADE_FDS_PER_MSG 200            /* under the kernel's SCM_MAX_FD (253) */
#define UPGRADE_ERR_MAX 512

/* What the old process hands over. */
struct upgrade_offer {
    const char *listen; /* listen as written (config_addr.text) */
    unsigned workers;   /* listening sockets, one per worker */
    const int *fds;     /* the workers' listening sockets, in worker order */
    const char *admin;  /* admin.listen as written, NULL: no admin socket */
    int admin_fd;       /* admin.listen's socket when admin != NULL */
};

/* Old side: start exe with argv (argv[0] included, NULL-ended) as the new process,
 * send it the offer. On success returns 0 with the child's pid and the channel
 * (non-blocking, close-on-exec; the caller owns it and watches it for
 * upgrade_poll()); else -1 with the reason in err. */
int upgrade_spawn(const char *exe, char *const argv[], const struct upgrade_offer *offer,
                  pid_t *pid, int *chan, char *err, size_t errlen);

/* Old side: the offer into chan (the head, then the descriptors in batches). Returns
 * 0, or -1 with errno. (upgrade_spawn's first step; unit tests call it alone.) */
int upgrade_offer_send(int chan, const struct upgrade_offer *offer);

/* Old side, channel readable: 1 the new process is ready, 0 nothing yet, -1 the
 * channel closed without "ready" (the new process failed). */
int upgrade_poll(int chan);

/* New side: the channel descriptor named by UPGRADE_ENV (which is then removed
 * from the environment), or -1 for a normal start. */
int upgrade_channel(void);

/* New side: receive the old process's sockets into fds (cfg->workers of them, in
 * worker order) and *admin_fd (-1 without admin.listen). The old process must run
 * the same listen, workers and admin.listen. Returns 0, or -1 with
 * "FILE:LINE: ..." in err (every received descriptor closed). */
int upgrade_receive(int chan, const struct config *cfg, int *fds, int *admin_fd, char *err,
                    size_t errlen);

/* New side: tell the old process to hand over (it stops accepting and drains),
 * then close the channel. */
void upgrade_ready(int chan);

#endif
