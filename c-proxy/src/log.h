/* log: the access log (one line per request) and the event log (stderr).
 *
 * Twin: py-proxy/pyproxy/log.py. Field names and order: docs/behaviour.md "Logs".
 *
 * Access lines are formatted into a per-worker struct log_buf and written with
 * one write() per flush: the worker flushes once per event-loop iteration (an
 * ev_prepare watcher, so a line appears before the loop sleeps) and whenever the
 * buffer passes LOG_BUF_FLUSH bytes. A write to a blocked stdout pipe would stall
 * that worker; lines are never dropped. Event lines are rare and written at once.
 * The global settings (level, format, access target) change only on reload, under
 * a mutex; writes from several workers are serialized by the same mutex so lines
 * never interleave.
 */
#ifndef TWINPROXY_LOG_H
#define TWINPROXY_LOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define LOG_BUF_CAP 65536   /* per-worker access-log buffer */
#define LOG_BUF_FLUSH 32768 /* flush at once past this */

/* One access-log record (docs/behaviour.md "Logs"). Strings are borrowed. */
struct access_rec {
    double start_wall;      /* wall clock when the request started */
    const char *client;     /* peer address without port */
    const char *method;     /* "" when the head never parsed */
    const char *path;       /* request target as sent, "" if unknown */
    int status;             /* status sent, 0 if none */
    const char *upstream;   /* last upstream tried, "" if none */
    unsigned attempts;      /* upstream attempts */
    uint64_t bytes_in;      /* bytes read from the client for this request */
    uint64_t bytes_out;     /* bytes written to the client for this request */
    double duration_ms;     /* start to end, milliseconds */
    const char *request_id; /* X-Request-ID */
    unsigned worker;        /* the worker that served it, 0 .. workers-1 */
};

struct log_buf {
    char data[LOG_BUF_CAP]; /* pending lines */
    size_t len;             /* bytes pending */
};

/* Apply cfg's log settings (level, format, access target; the file is opened
 * O_APPEND|O_CREAT). Returns 0, or -1 with a message in err if the access file
 * cannot be opened (the old settings stay). Thread-safe. */
int log_configure(const struct config *cfg, char *err, size_t errlen);

/* SIGUSR1 (logrotate): open the access file's path anew (O_APPEND|O_CREAT) and
 * switch every worker's writes to it; the old descriptor is closed. No-op when the
 * access log is stdout, stderr or off. Returns 0, or -1 with a message in err (the
 * old file stays in use). Main thread only (as log_configure). */
int log_reopen(char *err, size_t errlen);

/* Close the access file if one is open. */
void log_close(void);

/* Event log on stderr. fields (may be NULL) is a JSON object whose keys follow
 * ts/level/event in insertion order; it is stolen (decref'd here). Events below
 * the configured level are dropped. */
void log_event(enum config_log_level level, const char *event, json_t *fields);

/* Would an event at `level` be written? (skip building fields that would be dropped) */
bool log_enabled(enum config_log_level level);

/* Append one access line to lb (flushing first if needed). No-op when access is off. */
void log_access(struct log_buf *lb, const struct access_rec *r);

/* Write lb's pending lines to the access target. */
void log_flush(struct log_buf *lb);

/* Format one access line (with the trailing newline) in fmt into out.
 * Returns the length, or 0 if it does not fit. Pure; used by the unit tests. */
size_t log_format_access(const struct access_rec *r, enum config_log_format fmt, char *out,
                         size_t cap);

#endif
