#include "report.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int report_trend(const struct stats *s, double duration_s, struct report_trend *t)
{
    uint64_t win = (uint64_t)(duration_s * 1e6), q = win / 4;
    uint32_t *first = NULL, *last = NULL;
    size_t nf = 0, nl = 0;
    memset(t, 0, sizeof(*t));
    if (s->n == 0 || q == 0)
        return 0;
    first = malloc(s->n * sizeof(*first));
    last = malloc(s->n * sizeof(*last));
    if (first == NULL || last == NULL) {
        free(first);
        free(last);
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        uint64_t at = s->v[i].intended_us;
        if (at < q)
            first[nf++] = s->v[i].latency_us;
        else if (at >= win - q && at < win)
            last[nl++] = s->v[i].latency_us;
    }
    if (nf > 0) {
        qsort(first, nf, sizeof(*first), cmp_u32);
        t->first_p50_us = stats_percentile(first, nf, 500000);
    }
    if (nl > 0) {
        qsort(last, nl, sizeof(*last), cmp_u32);
        t->last_p50_us = stats_percentile(last, nl, 500000);
    }
    t->n_first = nf;
    t->n_last = nl;
    free(first);
    free(last);
    return 0;
}

int report_trend_grew(const struct report_trend *t, double ratio, uint64_t min_us)
{
    if (ratio <= 0 || t->n_first == 0 || t->n_last == 0)
        return 0;
    return (double)t->last_p50_us > ratio * (double)t->first_p50_us &&
           (uint64_t)t->last_p50_us >= (uint64_t)t->first_p50_us + min_us;
}

double report_achieved_rate(const struct config *cfg, const struct gen_result *res)
{
    return cfg->duration_s > 0 ? (double)res->completed_in_window / cfg->duration_s : 0;
}

unsigned report_invalid(const struct config *cfg, const struct gen_result *res)
{
    unsigned f = 0;
    struct report_trend t;
    if (cfg->min_achieved > 0 && report_achieved_rate(cfg, res) < cfg->min_achieved * cfg->rate)
        f |= REPORT_INVALID_ACHIEVED;
    if (report_trend(&res->samples, cfg->duration_s, &t) == 0 &&
        report_trend_grew(&t, cfg->trend_ratio, cfg->trend_min_us))
        f |= REPORT_INVALID_TREND;
    if (res->max_backlog > cfg->max_backlog)
        f |= REPORT_INVALID_BACKLOG;
    if (res->max_lag_us > cfg->max_lag_us)
        f |= REPORT_INVALID_LAG;
    if (res->sent < res->scheduled)
        f |= REPORT_INVALID_UNSENT;
    if (res->interrupted)
        f |= REPORT_INVALID_INTERRUPTED;
    if (res->samples_lost > 0)
        f |= REPORT_INVALID_SAMPLES;
    return f;
}

/* Whole numbers print as integers, the rest rounded to 3 decimals. */
static json_t *number(double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        return json_integer((json_int_t)v);
    return json_real(round(v * 1000) / 1000);
}

static int set(json_t *o, const char *k, json_t *v) { return json_object_set_new(o, k, v); }

static json_t *u64(uint64_t v) { return json_integer((json_int_t)v); }

json_t *report_json(const struct config *cfg, const struct gen_result *res,
                    const struct stats_summary *sum)
{
    static const char *const reasons[] = {"backlog",      "scheduler_lag", "unsent",
                                          "interrupted",  "samples_lost",  "achieved_rate",
                                          "latency_trend"};
    struct report_trend trend;
    json_t *o = json_object(), *status = json_object(), *sock = json_object();
    json_t *pct = json_object(), *why = json_array();
    unsigned invalid = report_invalid(cfg, res);
    int err = 0;

    if (o == NULL || status == NULL || sock == NULL || pct == NULL || why == NULL ||
        report_trend(&res->samples, cfg->duration_s, &trend) == -1)
        goto error;
    err |= set(o, "url", json_string(cfg->url));
    err |= set(o, "method", json_string(cfg->method));
    err |= set(o, "rate", number(cfg->rate));
    err |= set(o, "duration_s", number(cfg->duration_s));
    err |= set(o, "warmup_s", number(cfg->warmup_s));
    err |= set(o, "connections", json_integer(cfg->connections));
    err |= set(o, "pipeline", json_integer(cfg->pipeline));
    err |= set(o, "close", json_boolean(cfg->close_mode));
    err |= set(o, "arrivals", json_string(cfg->poisson ? "poisson" : "constant"));
    err |= set(o, "timeout_ms", u64(cfg->timeout_us / 1000));
    err |= set(o, "tick_us", u64(cfg->tick_us));
    err |= set(o, "spin", json_boolean(cfg->spin));
    err |= set(o, "scheduled", u64(res->scheduled));
    err |= set(o, "sent", u64(res->sent));
    err |= set(o, "completed", u64(res->completed));
    err |= set(o, "errors", u64(res->non_2xx + res->lost));
    err |= set(o, "timeouts", u64(res->timeouts));
    err |= set(o, "lost", u64(res->lost));
    err |= set(status, "2xx", u64(res->status[0]));
    err |= set(status, "3xx", u64(res->status[1]));
    err |= set(status, "4xx", u64(res->status[2]));
    err |= set(status, "5xx", u64(res->status[3]));
    err |= set(status, "other", u64(res->status_other));
    err |= set(o, "status", status);
    status = NULL;
    err |= set(sock, "connect", u64(res->sock_connect));
    err |= set(sock, "read", u64(res->sock_read));
    err |= set(sock, "write", u64(res->sock_write));
    err |= set(sock, "parse", u64(res->sock_parse));
    err |= set(sock, "closed", u64(res->sock_closed));
    err |= set(o, "socket_errors", sock);
    sock = NULL;
    err |= set(o, "connects", u64(res->connects));
    err |= set(o, "achieved_rate", number(report_achieved_rate(cfg, res)));
    err |= set(o, "completed_in_window", u64(res->completed_in_window));
    err |= set(o, "min_achieved", number(cfg->min_achieved));
    err |= set(o, "p50_first_quarter_us", trend.n_first ? u64(trend.first_p50_us) : json_null());
    err |= set(o, "p50_last_quarter_us", trend.n_last ? u64(trend.last_p50_us) : json_null());
    err |= set(o, "trend_ratio_bound", number(cfg->trend_ratio));
    err |= set(o, "trend_min_us", u64(cfg->trend_min_us));
    err |= set(o, "offered_rate_achieved", json_boolean(invalid == 0));
    for (unsigned i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (invalid & (1u << i))
            err |= json_array_append_new(why, json_string(reasons[i]));
    err |= set(o, "invalid_reasons", why);
    why = NULL;
    err |= set(o, "max_backlog", u64(res->max_backlog));
    err |= set(o, "backlog_bound", u64(cfg->max_backlog));
    err |= set(o, "max_lag_us", u64(res->max_lag_us));
    err |= set(o, "lag_bound_us", u64(cfg->max_lag_us));
    err |= set(o, "samples", u64(sum->n));
    for (int i = 0; i < STATS_NPCT; i++)
        err |= set(pct, stats_pct_name[i], sum->n ? json_integer(sum->pct[i]) : json_null());
    err |= set(o, "percentiles_us", pct);
    pct = NULL;
    err |= set(o, "mean_us", sum->n ? number(sum->mean_us) : json_null());
    err |= set(o, "stddev_us", sum->n ? number(sum->stddev_us) : json_null());
    err |= set(o, "interrupted", json_boolean(res->interrupted));
    if (err)
        goto error;
    return o;

error:
    json_decref(o);
    json_decref(status);
    json_decref(sock);
    json_decref(pct);
    json_decref(why);
    return NULL;
}

int report_write_samples(const char *path, const struct stats *s)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    fputs("intended_us,latency_us,status\n", f);
    for (size_t i = 0; i < s->n; i++)
        fprintf(f, "%" PRIu64 ",%" PRIu32 ",%u\n", s->v[i].intended_us, s->v[i].latency_us,
                (unsigned)s->v[i].status);
    if (ferror(f)) {
        fclose(f);
        return -1;
    }
    return fclose(f) == EOF ? -1 : 0;
}
