/* metrics: the /metrics text. Twin: py-proxy/pyproxy/metrics.py. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

uint64_t metrics_counters_total(const struct metrics_counters *c, enum metrics_counter i)
{
    return c ? atomic_load_explicit(&c->v[i], memory_order_relaxed) : 0;
}

/* snprintf into what is left of out; the full length is counted either way. */
struct mbuf {
    char *p;    /* caller's buffer */
    size_t cap; /* its size */
    size_t len; /* bytes produced (may exceed cap) */
};

static void mput(struct mbuf *b, const char *s, size_t n)
{
    if (b->len < b->cap) {
        size_t room = b->cap - b->len;
        memcpy(b->p + b->len, s, n < room ? n : room);
    }
    b->len += n;
}

static void mprintf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mprintf(struct mbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        mput(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A label value as the text format escapes it: \ " and newline. */
static void mlabel(struct mbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            mput(b, "\\\\", 2);
        else if (*s == '"')
            mput(b, "\\\"", 2);
        else if (*s == '\n')
            mput(b, "\\n", 2);
        else
            mput(b, s, 1);
    }
}

#define MLIT(b, lit) mput((b), (lit), sizeof(lit) - 1)

size_t metrics_render(char *out, size_t cap, const char *impl, const char *version,
                      uint64_t generation, const struct metrics_upstream *ups, size_t n_ups,
                      uint64_t rl_allowed, uint64_t rl_limited)
{
    struct mbuf b = {out, cap, 0};
    MLIT(&b, "# HELP twinproxy_upstream_up 1 if the upstream is healthy (health verdict), "
             "else 0.\n"
             "# TYPE twinproxy_upstream_up gauge\n");
    for (size_t i = 0; i < n_ups; i++) {
        MLIT(&b, "twinproxy_upstream_up{upstream=\"");
        mlabel(&b, ups[i].name);
        mprintf(&b, "\"} %d\n", ups[i].healthy ? 1 : 0);
    }
    MLIT(&b, "# HELP twinproxy_ratelimit_decisions_total Rate-limit decisions "
             "(allowed | limited).\n"
             "# TYPE twinproxy_ratelimit_decisions_total counter\n");
    mprintf(&b, "twinproxy_ratelimit_decisions_total{decision=\"allowed\"} %llu\n",
            (unsigned long long)rl_allowed);
    mprintf(&b, "twinproxy_ratelimit_decisions_total{decision=\"limited\"} %llu\n",
            (unsigned long long)rl_limited);
    MLIT(&b, "# HELP twinproxy_ratelimit_rejected_total Requests answered 429 by the rate "
             "limiter.\n"
             "# TYPE twinproxy_ratelimit_rejected_total counter\n");
    mprintf(&b, "twinproxy_ratelimit_rejected_total %llu\n", (unsigned long long)rl_limited);
    MLIT(&b, "# HELP twinproxy_config_generation Config generation: 1 at start, +1 per "
             "applied reload.\n"
             "# TYPE twinproxy_config_generation gauge\n");
    mprintf(&b, "twinproxy_config_generation %llu\n", (unsigned long long)generation);
    MLIT(&b, "# HELP twinproxy_build_info The running build (impl c | py, version as "
             "--version prints it).\n"
             "# TYPE twinproxy_build_info gauge\n"
             "twinproxy_build_info{impl=\"");
    mlabel(&b, impl);
    MLIT(&b, "\",version=\"");
    mlabel(&b, version);
    MLIT(&b, "\"} 1\n");
    if (b.len < cap)
        out[b.len] = '\0';
    return b.len;
}
