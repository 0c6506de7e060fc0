/* util: small helpers shared by the modules (time formatting, random ids,
 * container_of, the shared reference-counted config).
 *
 * Twin: py-proxy/pyproxy/util.py.
 */
#ifndef TWINPROXY_UTIL_H
#define TWINPROXY_UTIL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/single_threaded.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "config.h"

#define TWINPROXY_VERSION "0.1.0"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define UTIL_TS_MAX 64 /* "2026-11-22T02:28:54.123Z" + NUL */

/* Format a wall-clock time (seconds since the epoch) as RFC 3339 UTC with
 * milliseconds into out (UTIL_TS_MAX bytes). */
void util_format_ts(double wall, char out[UTIL_TS_MAX]);

/* Per-thread random generator (xoshiro256**), seeded from getrandom(). */
struct util_rng {
    uint64_t s[4]; /* generator state */
};

void util_rng_seed(struct util_rng *r);
uint64_t util_rng_next(struct util_rng *r);

/* Write a new request id (32 lowercase hex characters from 128 random bits)
 * plus NUL into out. */
void util_request_id(struct util_rng *r, char out[33]);

/* send(2) and recv(2) of the data path: same arguments, return value and errno.
 * Once a process has a second thread (workers > 1, the rate-limit saver and store
 * writer, the admin API), glibc makes every send/recv a cancellation point and
 * switches asynchronous cancellation on and off around the syscall (callgrind:
 * some 35 instructions more per call, five calls per keep-alive request). No thread
 * of this program is ever cancelled (there is no pthread_cancel), so then the data
 * path makes the raw syscall instead (sendto/recvfrom: what glibc's send/recv
 * make too). A single-threaded process keeps glibc's call, which is cheaper than
 * the generic syscall() there. __libc_single_threaded only picks the cheaper of
 * two equivalent calls: a stale value could cost instructions, never behaviour. */
static inline ssize_t util_send(int fd, const void *buf, size_t len, int flags)
{
    if (__libc_single_threaded)
        return send(fd, buf, len, flags);
    return (ssize_t)syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static inline ssize_t util_recv(int fd, void *buf, size_t len, int flags)
{
    if (__libc_single_threaded)
        return recv(fd, buf, len, flags);
    return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, flags, NULL, 0);
}

/* A loaded config shared by every worker thread, freed when the last holder
 * releases it. Holders: main (the current config), each worker's upstream set. */
struct cfgref {
    struct config *cfg; /* owned; immutable */
    atomic_uint refs;   /* holders */
};

/* Wrap cfg (ownership moves in) with one reference. NULL on allocation failure. */
struct cfgref *cfgref_new(struct config *cfg);
struct cfgref *cfgref_acquire(struct cfgref *r);
/* Drop one reference; the last one frees the config. NULL is a no-op. */
void cfgref_release(struct cfgref *r);

#endif
