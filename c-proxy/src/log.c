#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
/* Atomics: written under log_mu by a reload (main thread), read by every worker. */
static _Atomic int log_level = CONFIG_LOG_INFO;  /* events below are dropped */
static _Atomic int log_format = CONFIG_LOG_JSON; /* json | text */
static _Atomic int access_fd = 1;                /* -1 = off */
static bool access_owned;                        /* access_fd is a file we opened */
static char *access_path;                        /* its path (under log_mu), for log_reopen */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_configure(const struct config *cfg, char *err, size_t errlen)
{
    int fd = -1;
    bool owned = false;
    char *path = NULL;
    const char *a = cfg->log.access ? cfg->log.access : "stdout";
    if (strcmp(a, "off") == 0) {
        fd = -1;
    } else if (strcmp(a, "stdout") == 0) {
        fd = 1;
    } else if (strcmp(a, "stderr") == 0) {
        fd = 2;
    } else {
        fd = open(a, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd == -1) {
            snprintf(err, errlen, "log.access: %s: %s", a, strerror(errno));
            return -1;
        }
        path = strdup(a);
        if (path == NULL) {
            close(fd);
            snprintf(err, errlen, "log.access: %s: out of memory", a);
            return -1;
        }
        owned = true;
    }
    pthread_mutex_lock(&log_mu);
    if (access_owned)
        close(access_fd);
    access_fd = fd;
    access_owned = owned;
    free(access_path);
    access_path = path;
    log_level = (int)cfg->log.level;
    log_format = (int)cfg->log.format;
    pthread_mutex_unlock(&log_mu);
    return 0;
}

void log_close(void)
{
    pthread_mutex_lock(&log_mu);
    if (access_owned)
        close(access_fd);
    access_fd = 1;
    access_owned = false;
    free(access_path);
    access_path = NULL;
    pthread_mutex_unlock(&log_mu);
}

int log_reopen(char *err, size_t errlen)
{
    /* only the main thread reopens or reconfigures: access_path is stable here */
    pthread_mutex_lock(&log_mu);
    char *path = access_path ? strdup(access_path) : NULL;
    bool file = access_path != NULL;
    pthread_mutex_unlock(&log_mu);
    if (!file)
        return 0; /* stdout, stderr or off: nothing to reopen */
    if (path == NULL) {
        snprintf(err, errlen, "log.access: out of memory");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        snprintf(err, errlen, "log.access: %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    free(path);
    /* every write takes log_mu: after the swap no worker writes to the old file */
    pthread_mutex_lock(&log_mu);
    int old = access_fd;
    access_fd = fd;
    pthread_mutex_unlock(&log_mu);
    close(old);
    return 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report a failing log sink */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* --- formatting helpers: out/cap/len triple, len may exceed cap (then it did not fit) --- */

struct sb {
    char *p;    /* output */
    size_t cap; /* capacity */
    size_t len; /* bytes wanted so far */
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->len + n <= b->cap)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A JSON string literal via jansson; bytes that are not UTF-8 are taken as Latin-1. */
static void sb_json_string(struct sb *b, const char *s)
{
    size_t n = strlen(s);
    json_t *j = json_stringn(s, n);
    if (!j) {
        /* not valid UTF-8: widen every byte >= 0x80 as a Latin-1 code point */
        char *w = malloc(n * 2 + 1);
        size_t k = 0;
        if (w) {
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c < 0x80) {
                    w[k++] = (char)c;
                } else {
                    w[k++] = (char)(0xc0 | (c >> 6));
                    w[k++] = (char)(0x80 | (c & 0x3f));
                }
            }
            j = json_stringn(w, k);
            free(w);
        }
    }
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    sb_puts(b, d ? d : "\"\"");
    free(d);
    json_decref(j);
}

/* Text format: strings unquoted unless they hold a space or a '"' (then JSON-quoted). */
static void sb_text_string(struct sb *b, const char *s)
{
    if (strchr(s, ' ') || strchr(s, '"'))
        sb_json_string(b, s);
    else
        sb_puts(b, s);
}

static void sb_field_str(struct sb *b, int fmt, bool first, const char *k, const char *v)
{
    if (fmt == CONFIG_LOG_JSON) {
        sb_puts(b, first ? "{\"" : ",\"");
        sb_puts(b, k);
        sb_puts(b, "\":");
        sb_json_string(b, v);
    } else {
        if (!first)
            sb_puts(b, " ");
        sb_puts(b, k);
        sb_puts(b, "=");
        sb_text_string(b, v);
    }
}

static void sb_field_raw(struct sb *b, int fmt, const char *k, const char *raw)
{
    sb_puts(b, fmt == CONFIG_LOG_JSON ? ",\"" : " ");
    sb_puts(b, k);
    sb_puts(b, fmt == CONFIG_LOG_JSON ? "\":" : "=");
    sb_puts(b, raw);
}

size_t log_format_access(const struct access_rec *r, enum config_log_format fmt, char *out,
                         size_t cap)
{
    struct sb b = {out, cap, 0};
    char ts[UTIL_TS_MAX], num[64];
    util_format_ts(r->start_wall, ts);
    int f = (int)fmt;
    sb_field_str(&b, f, true, "ts", ts);
    sb_field_str(&b, f, false, "client", r->client ? r->client : "");
    sb_field_str(&b, f, false, "method", r->method ? r->method : "");
    sb_field_str(&b, f, false, "path", r->path ? r->path : "");
    snprintf(num, sizeof num, "%d", r->status);
    sb_field_raw(&b, f, "status", num);
    if (f == CONFIG_LOG_JSON) {
        sb_puts(&b, ",\"upstream\":");
        sb_json_string(&b, r->upstream ? r->upstream : "");
    } else {
        sb_puts(&b, " upstream=");
        sb_text_string(&b, r->upstream ? r->upstream : "");
    }
    snprintf(num, sizeof num, "%u", r->attempts);
    sb_field_raw(&b, f, "attempts", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->bytes_in);
    sb_field_raw(&b, f, "bytes_in", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->bytes_out);
    sb_field_raw(&b, f, "bytes_out", num);
    snprintf(num, sizeof num, "%.3f", r->duration_ms < 0 ? 0.0 : r->duration_ms);
    sb_field_raw(&b, f, "duration_ms", num);
    if (f == CONFIG_LOG_JSON) {
        sb_puts(&b, ",\"request_id\":");
        sb_json_string(&b, r->request_id ? r->request_id : "");
    } else {
        sb_puts(&b, " request_id=");
        sb_text_string(&b, r->request_id ? r->request_id : "");
    }
    snprintf(num, sizeof num, "%u", r->worker);
    sb_field_raw(&b, f, "worker", num);
    sb_puts(&b, f == CONFIG_LOG_JSON ? "}\n" : "\n");
    return b.len <= cap ? b.len : 0;
}

void log_flush(struct log_buf *lb)
{
    if (lb->len == 0)
        return;
    pthread_mutex_lock(&log_mu);
    if (access_fd != -1)
        write_all(access_fd, lb->data, lb->len);
    pthread_mutex_unlock(&log_mu);
    lb->len = 0;
}

void log_access(struct log_buf *lb, const struct access_rec *r)
{
    if (access_fd == -1)
        return;
    enum config_log_format fmt = (enum config_log_format)log_format;
    size_t n = log_format_access(r, fmt, lb->data + lb->len, LOG_BUF_CAP - lb->len);
    if (n == 0) {
        log_flush(lb);
        n = log_format_access(r, fmt, lb->data, LOG_BUF_CAP);
        if (n == 0) {
            /* a line longer than the whole buffer: format it on the heap */
            size_t cap = 1 << 20;
            char *big = malloc(cap);
            if (big && (n = log_format_access(r, fmt, big, cap)) > 0) {
                pthread_mutex_lock(&log_mu);
                if (access_fd != -1)
                    write_all(access_fd, big, n);
                pthread_mutex_unlock(&log_mu);
            }
            free(big);
            return;
        }
    }
    lb->len += n;
    if (lb->len >= LOG_BUF_FLUSH)
        log_flush(lb);
}

bool log_enabled(enum config_log_level level)
{
    return (int)level >= log_level;
}

void log_event(enum config_log_level level, const char *event, json_t *fields)
{
    if ((int)level < log_level) {
        json_decref(fields);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char ts[UTIL_TS_MAX];
    util_format_ts((double)tv.tv_sec + (double)tv.tv_usec / 1e6, ts);
    char line[4096];
    struct sb b = {line, sizeof line - 1, 0};
    int f = log_format;
    if (f == CONFIG_LOG_JSON) {
        sb_field_str(&b, f, true, "ts", ts);
        sb_field_str(&b, f, false, "level", level_names[level]);
        sb_field_str(&b, f, false, "event", event);
    } else {
        sb_puts(&b, ts);
        sb_puts(&b, " ");
        sb_puts(&b, level_names[level]);
        sb_puts(&b, " ");
        sb_puts(&b, event);
    }
    const char *key;
    json_t *val;
    if (fields) {
        json_object_foreach(fields, key, val)
        {
            if (json_is_string(val)) {
                sb_field_str(&b, f, false, key, json_string_value(val));
            } else {
                char *d = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
                sb_field_raw(&b, f, key, d ? d : "null");
                free(d);
            }
        }
    }
    sb_puts(&b, f == CONFIG_LOG_JSON ? "}\n" : "\n");
    json_decref(fields);
    if (b.len > sizeof line - 1) {
        /* truncated: keep the line well formed enough to read */
        b.len = sizeof line - 1;
        line[b.len - 1] = '\n';
    }
    pthread_mutex_lock(&log_mu);
    write_all(2, line, b.len);
    pthread_mutex_unlock(&log_mu);
}
