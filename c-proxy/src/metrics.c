/* metrics: per-worker slots and the /metrics text. Twin: py-proxy/pyproxy/metrics.py. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 400 408 413 429 431 501 502 503 504 505, then "" (a close without an answer) */
const int metrics_err_codes[METRICS_ERR_CODES] = {400, 408, 413, 429, 431, 501,
                                                  502, 503, 504, 505, 0};

const uint64_t metrics_bounds_us[METRICS_BOUNDS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
const char *const metrics_bounds_le[METRICS_BOUNDS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

static const char *const phases[3] = {"connect", "send", "head"};

unsigned metrics_bucket(uint64_t us)
{
    unsigned i = 0;
    while (i < METRICS_BOUNDS && us > metrics_bounds_us[i])
        i++;
    return i;
}

static unsigned req_hash(uint32_t key)
{
    return (key * 2654435761u) >> (32 - 11); /* 2048 slots */
}

void metrics_request(struct metrics_slot *s, int code, unsigned label, uint64_t us)
{
    if (!s)
        return;
    if (code < 0 || code > 999)
        code = 0;
    if (label >= METRICS_LABELS)
        label = 0;
    uint32_t key = (uint32_t)code * 2048u + label + 1;
    for (unsigned i = req_hash(key), n = 0; n < METRICS_REQ_SLOTS;
         i = (i + 1) & (METRICS_REQ_SLOTS - 1), n++) {
        uint32_t k = atomic_load_explicit(&s->req_key[i], memory_order_relaxed);
        if (k == 0) {
            /* the count before the key: a reader that sees the key sees a count */
            atomic_store_explicit(&s->req_key[i], key, memory_order_release);
            k = key;
        }
        if (k == key) {
            metrics_add_cell(&s->req_n[i], 1);
            break;
        }
    }
    _Atomic uint64_t *u = s->up[label];
    metrics_add_cell(&u[METRICS_U_DUR_SUM_US], us);
    metrics_add_cell(&u[METRICS_U_DUR_B0 + metrics_bucket(us)], 1);
}

void metrics_queue_wait(struct metrics_slot *s, uint64_t us)
{
    if (!s)
        return;
    metrics_add_cell(&s->cell[METRICS_QUEUE_SUM_US], us);
    metrics_add_cell(&s->cell[METRICS_QUEUE_B0 + metrics_bucket(us)], 1);
}

void metrics_retry(struct metrics_slot *s, unsigned label, unsigned phase)
{
    if (s && phase < 3)
        metrics_add_cell(&s->up[label < METRICS_LABELS ? label : 0][METRICS_U_RETRY0 + phase], 1);
}

void metrics_error(struct metrics_slot *s, int code, enum reason r)
{
    if (!s || (unsigned)r >= REASON_N)
        return;
    unsigned i = 0;
    while (i < METRICS_ERR_CODES - 1 && metrics_err_codes[i] != code)
        i++; /* not one of them: the last row (also code 0) */
    metrics_add_cell(&s->err[i][r], 1);
}

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void metrics_sum(struct metrics_slot *dst, const struct metrics_slot *const *slots, size_t n)
{
    memset(dst, 0, sizeof *dst);
    for (size_t w = 0; w < n; w++) {
        const struct metrics_slot *s = slots[w];
        if (!s)
            continue;
        for (size_t i = 0; i < METRICS_CELLS; i++)
            dst->cell[i] += ld(&s->cell[i]);
        for (size_t l = 0; l < METRICS_LABELS; l++)
            for (size_t i = 0; i < METRICS_UCELLS; i++)
                dst->up[l][i] += ld(&s->up[l][i]);
        for (size_t c = 0; c < METRICS_ERR_CODES; c++)
            for (size_t r = 0; r < REASON_N; r++)
                dst->err[c][r] += ld(&s->err[c][r]);
        for (size_t i = 0; i < METRICS_REQ_SLOTS; i++) {
            uint32_t key = atomic_load_explicit(&s->req_key[i], memory_order_acquire);
            uint64_t v = ld(&s->req_n[i]);
            if (key == 0 || v == 0)
                continue;
            for (unsigned j = req_hash(key), k = 0; k < METRICS_REQ_SLOTS;
                 j = (j + 1) & (METRICS_REQ_SLOTS - 1), k++) {
                if (dst->req_key[j] == 0)
                    dst->req_key[j] = key;
                if (dst->req_key[j] == key) {
                    dst->req_n[j] += v;
                    break;
                }
            }
        }
    }
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

static void head(struct mbuf *b, const char *name, const char *type, const char *help)
{
    mprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void u64(struct mbuf *b, uint64_t v)
{
    mprintf(b, " %llu\n", (unsigned long long)v);
}

/* A microsecond sum as seconds: 6 decimals, always. */
static void seconds(struct mbuf *b, uint64_t us)
{
    mprintf(b, " %llu.%06llu\n", (unsigned long long)(us / 1000000),
            (unsigned long long)(us % 1000000));
}

/* name{[upstream="x",]le="..."} lines, _sum, _count of one histogram (upstream NULL: no
 * upstream label). */
static void histogram(struct mbuf *b, const char *name, const char *upstream,
                      const _Atomic uint64_t *buckets, uint64_t sum_us)
{
    uint64_t acc = 0;
    for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
        acc += buckets[i];
        mprintf(b, "%s_bucket{", name);
        if (upstream) {
            MLIT(b, "upstream=\"");
            mlabel(b, upstream);
            MLIT(b, "\",");
        }
        mprintf(b, "le=\"%s\"}", i < METRICS_BOUNDS ? metrics_bounds_le[i] : "+Inf");
        u64(b, acc);
    }
    for (int k = 0; k < 2; k++) {
        mprintf(b, "%s_%s", name, k ? "count" : "sum");
        if (upstream) {
            MLIT(b, "{upstream=\"");
            mlabel(b, upstream);
            MLIT(b, "\"}");
        }
        if (k)
            u64(b, acc);
        else
            seconds(b, sum_us);
    }
}

static uint64_t bucket_total(const _Atomic uint64_t *buckets)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < METRICS_BUCKETS; i++)
        t += buckets[i];
    return t;
}

static const char *label_name(const struct metrics_view *v, size_t l)
{
    if (l == 0)
        return "";
    return l < v->n_labels ? v->labels[l] : NULL;
}

static int cmp_key(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    /* by label, then code */
    uint32_t lx = x % 2048, ly = y % 2048;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

size_t metrics_render(char *out, size_t cap, const struct metrics_view *v,
                      const struct metrics_slot *s)
{
    struct mbuf b = {out, cap, 0};
    uint32_t *keys = malloc(METRICS_REQ_SLOTS * sizeof *keys);
    if (!keys)
        return 0;

    head(&b, "twinproxy_requests_total", "counter",
         "Requests answered, by status code and upstream (\"\": the proxy answered itself).");
    size_t nk = 0;
    for (size_t i = 0; i < METRICS_REQ_SLOTS; i++)
        if (s->req_key[i] && s->req_n[i])
            keys[nk++] = s->req_key[i];
    qsort(keys, nk, sizeof *keys, cmp_key);
    for (size_t i = 0; i < nk; i++) {
        const char *name = label_name(v, keys[i] % 2048 - 1);
        if (!name)
            continue;
        uint64_t n = 0;
        for (size_t j = 0; j < METRICS_REQ_SLOTS; j++)
            if (s->req_key[j] == keys[i])
                n = s->req_n[j];
        mprintf(&b, "twinproxy_requests_total{code=\"%u\",upstream=\"", keys[i] / 2048);
        mlabel(&b, name);
        MLIT(&b, "\"}");
        u64(&b, n);
    }
    free(keys);

    head(&b, "twinproxy_request_duration_seconds", "histogram",
         "Request duration from its first byte to its last response byte, by upstream.");
    for (size_t l = 0; l < METRICS_LABELS; l++) {
        const char *name = label_name(v, l);
        if (name && bucket_total(&s->up[l][METRICS_U_DUR_B0]))
            histogram(&b, "twinproxy_request_duration_seconds", name, &s->up[l][METRICS_U_DUR_B0],
                      s->up[l][METRICS_U_DUR_SUM_US]);
    }

    head(&b, "twinproxy_connections_active", "gauge",
         "Open connections (side: client | upstream).");
    MLIT(&b, "twinproxy_connections_active{side=\"client\"}");
    u64(&b, s->cell[METRICS_CONN_CLIENT]);
    MLIT(&b, "twinproxy_connections_active{side=\"upstream\"}");
    u64(&b, s->cell[METRICS_CONN_UPSTREAM]);
    head(&b, "twinproxy_bytes_received_total", "counter",
         "Bytes received (side: client | upstream).");
    MLIT(&b, "twinproxy_bytes_received_total{side=\"client\"}");
    u64(&b, s->cell[METRICS_RX_CLIENT]);
    MLIT(&b, "twinproxy_bytes_received_total{side=\"upstream\"}");
    u64(&b, s->cell[METRICS_RX_UPSTREAM]);
    head(&b, "twinproxy_bytes_sent_total", "counter", "Bytes sent (side: client | upstream).");
    MLIT(&b, "twinproxy_bytes_sent_total{side=\"client\"}");
    u64(&b, s->cell[METRICS_TX_CLIENT]);
    MLIT(&b, "twinproxy_bytes_sent_total{side=\"upstream\"}");
    u64(&b, s->cell[METRICS_TX_UPSTREAM]);

    head(&b, "twinproxy_upstream_up", "gauge",
         "1 if the upstream is healthy (health verdict), else 0.");
    for (size_t i = 0; i < v->n_ups; i++) {
        MLIT(&b, "twinproxy_upstream_up{upstream=\"");
        mlabel(&b, v->ups[i].name);
        MLIT(&b, "\"}");
        u64(&b, v->ups[i].healthy ? 1 : 0);
    }
    head(&b, "twinproxy_upstream_active_connections", "gauge",
         "Attempts in flight on the upstream.");
    for (size_t i = 0; i < v->n_ups; i++) {
        MLIT(&b, "twinproxy_upstream_active_connections{upstream=\"");
        mlabel(&b, v->ups[i].name);
        MLIT(&b, "\"}");
        u64(&b, v->ups[i].active);
    }
    head(&b, "twinproxy_upstream_idle_connections", "gauge",
         "Pooled keep-alive connections to the upstream.");
    for (size_t i = 0; i < v->n_ups; i++) {
        MLIT(&b, "twinproxy_upstream_idle_connections{upstream=\"");
        mlabel(&b, v->ups[i].name);
        MLIT(&b, "\"}");
        u64(&b, v->ups[i].idle);
    }

    head(&b, "twinproxy_retries_total", "counter",
         "Retries after a failed attempt on the upstream, by phase (connect | send | head).");
    for (size_t l = 0; l < METRICS_LABELS; l++) {
        const char *name = label_name(v, l);
        const _Atomic uint64_t *r = &s->up[l][METRICS_U_RETRY0];
        if (!name || (r[0] | r[1] | r[2]) == 0)
            continue;
        for (unsigned p = 0; p < 3; p++) {
            MLIT(&b, "twinproxy_retries_total{upstream=\"");
            mlabel(&b, name);
            mprintf(&b, "\",phase=\"%s\"}", phases[p]);
            u64(&b, r[p]);
        }
    }
    head(&b, "twinproxy_retries_skipped_total", "counter",
         "Failures answered instead of retried: the retry budget was exhausted.");
    MLIT(&b, "twinproxy_retries_skipped_total");
    u64(&b, s->cell[METRICS_RETRIES_SKIPPED]);

    head(&b, "twinproxy_health_transitions_total", "counter",
         "Health verdict changes of the upstream (to: up | down).");
    for (size_t i = 0; i < v->n_ups; i++) {
        for (int k = 0; k < 2; k++) {
            MLIT(&b, "twinproxy_health_transitions_total{upstream=\"");
            mlabel(&b, v->ups[i].name);
            mprintf(&b, "\",to=\"%s\"}", k ? "down" : "up");
            u64(&b, k ? v->ups[i].to_down : v->ups[i].to_up);
        }
    }

    head(&b, "twinproxy_queue_wait_seconds", "histogram",
         "Time a request waited for an upstream connection slot (requests that waited).");
    histogram(&b, "twinproxy_queue_wait_seconds", NULL, &s->cell[METRICS_QUEUE_B0],
              s->cell[METRICS_QUEUE_SUM_US]);

    head(&b, "twinproxy_ratelimit_decisions_total", "counter",
         "Rate-limit decisions (allowed | limited).");
    MLIT(&b, "twinproxy_ratelimit_decisions_total{decision=\"allowed\"}");
    u64(&b, s->cell[METRICS_RL_ALLOWED]);
    MLIT(&b, "twinproxy_ratelimit_decisions_total{decision=\"limited\"}");
    u64(&b, s->cell[METRICS_RL_LIMITED]);
    head(&b, "twinproxy_ratelimit_rejected_total", "counter",
         "Requests answered 429 by the rate limiter.");
    MLIT(&b, "twinproxy_ratelimit_rejected_total");
    u64(&b, s->cell[METRICS_RL_LIMITED]);

    head(&b, "twinproxy_config_reloads_total", "counter",
         "Config reloads (result: success | failure).");
    MLIT(&b, "twinproxy_config_reloads_total{result=\"success\"}");
    u64(&b, v->reloads_ok);
    MLIT(&b, "twinproxy_config_reloads_total{result=\"failure\"}");
    u64(&b, v->reloads_failed);
    head(&b, "twinproxy_config_generation", "gauge",
         "Config generation: 1 at start, +1 per applied reload.");
    MLIT(&b, "twinproxy_config_generation");
    u64(&b, v->generation);
    head(&b, "twinproxy_build_info", "gauge",
         "The running build (impl c | py, version as --version prints it).");
    MLIT(&b, "twinproxy_build_info{impl=\"");
    mlabel(&b, v->impl);
    MLIT(&b, "\",version=\"");
    mlabel(&b, v->version);
    MLIT(&b, "\"} 1\n");

    head(&b, "twinproxy_errors_total", "counter",
         "Errors the proxy answered (code) and connections it closed without an answer "
         "(code \"\"), by reason.");
    for (size_t c = 0; c < METRICS_ERR_CODES; c++)
        for (size_t r = 0; r < REASON_N; r++) {
            if (!s->err[c][r])
                continue;
            if (metrics_err_codes[c])
                mprintf(&b, "twinproxy_errors_total{code=\"%d\",", metrics_err_codes[c]);
            else
                MLIT(&b, "twinproxy_errors_total{code=\"\",");
            mprintf(&b, "reason=\"%s\"}", reason_name((enum reason)r));
            u64(&b, s->err[c][r]);
        }

    if (b.len < cap)
        out[b.len] = '\0';
    return b.len;
}
