#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char config_usage[] =
    "usage: olgen --url http://HOST[:PORT]/PATH --rate R --duration SECONDS [options]\n"
    "  --warmup SECONDS      send at the same rate first, not measured (default 0)\n"
    "  --connections C       keep-alive connections (default 16)\n"
    "  --pipeline N          max requests in flight per connection (default 1: none)\n"
    "  --header \"K: V\"       extra request header (repeatable)\n"
    "  --method M            request method (default GET)\n"
    "  --body-bytes N        request body of N bytes\n"
    "  --close               Connection: close, one request per connection\n"
    "  --timeout MS          abandon a request MS after its intended send time (default 10000)\n"
    "  --samples FILE        write intended_us,latency_us,status CSV, one line per sample\n"
    "  --poisson             exponential inter-arrival times instead of constant\n"
    "  --seed N              seed of the Poisson arrivals (default 1)\n"
    "  --max-backlog N       due-but-unsent requests before the run is invalid\n"
    "                        (default 10 ms of requests: rate*0.01, at least 8)\n"
    "  --max-lag MS          scheduler lateness before the run is invalid (default 10)\n"
    "  --trend-ratio X       invalid when the last quarter's p50 exceeds X times the first\n"
    "                        quarter's (a queue that grows; default 2, 0: off)\n"
    "  --trend-min-us US     ... and exceeds it by at least US (default 1000)\n"
    "  --min-achieved F      invalid when completions inside the window / (rate*duration)\n"
    "                        fall below F (default 0.95, 0: off)\n"
    "  --tick-us US          least time between scheduler wake-ups (default 50; 0: one per\n"
    "                        request, costly above ~20k req/s)\n"
    "  --spin                busy-poll: most precise sends, but uses a whole core\n";

enum {
    OPT_URL = 256,
    OPT_RATE,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_CONNECTIONS,
    OPT_PIPELINE,
    OPT_HEADER,
    OPT_METHOD,
    OPT_BODY_BYTES,
    OPT_CLOSE,
    OPT_TIMEOUT,
    OPT_SAMPLES,
    OPT_POISSON,
    OPT_SEED,
    OPT_MAX_BACKLOG,
    OPT_MAX_LAG,
    OPT_TICK_US,
    OPT_TREND_RATIO,
    OPT_TREND_MIN_US,
    OPT_MIN_ACHIEVED,
    OPT_SPIN,
    OPT_HELP,
};

static const struct option options[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"rate", required_argument, NULL, OPT_RATE},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"pipeline", required_argument, NULL, OPT_PIPELINE},
    {"header", required_argument, NULL, OPT_HEADER},
    {"method", required_argument, NULL, OPT_METHOD},
    {"body-bytes", required_argument, NULL, OPT_BODY_BYTES},
    {"close", no_argument, NULL, OPT_CLOSE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"samples", required_argument, NULL, OPT_SAMPLES},
    {"poisson", no_argument, NULL, OPT_POISSON},
    {"seed", required_argument, NULL, OPT_SEED},
    {"max-backlog", required_argument, NULL, OPT_MAX_BACKLOG},
    {"max-lag", required_argument, NULL, OPT_MAX_LAG},
    {"tick-us", required_argument, NULL, OPT_TICK_US},
    {"trend-ratio", required_argument, NULL, OPT_TREND_RATIO},
    {"trend-min-us", required_argument, NULL, OPT_TREND_MIN_US},
    {"min-achieved", required_argument, NULL, OPT_MIN_ACHIEVED},
    {"spin", no_argument, NULL, OPT_SPIN},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A finite number in [lo, hi], the whole string. */
static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

enum config_result config_parse(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
    uint64_t u;
    const char *why;
    int have_backlog = 0;

    memset(c, 0, sizeof(*c));
    c->connections = 16;
    c->pipeline = 1;
    c->method = "GET";
    c->timeout_us = 10000000;
    c->seed = 1;
    c->max_lag_us = CONFIG_LAG_US;
    c->tick_us = 50;
    c->trend_ratio = 2.0;
    c->trend_min_us = 1000;
    c->min_achieved = 0.95;
    c->headers = calloc((size_t)argc + 1, sizeof(*c->headers));
    if (c->headers == NULL) {
        fail(err, errlen, "out of memory");
        goto error;
    }

    optind = 0; /* GNU: full reinitialisation, so tests can parse again */
    opterr = 0;
    for (;;) {
        int o = getopt_long(argc, argv, "", options, NULL);
        if (o == -1)
            break;
        const char *a = optarg;
        switch (o) {
        case OPT_URL:
            c->url = a;
            break;
        case OPT_RATE:
            if (parse_double(a, 1e-3, 1e8, &c->rate) == -1) {
                fail(err, errlen, "--rate must be a number in (0, 1e8]: %s", a);
                goto error;
            }
            break;
        case OPT_DURATION:
            if (parse_double(a, 1e-3, 86400, &c->duration_s) == -1) {
                fail(err, errlen, "--duration must be seconds in (0, 86400]: %s", a);
                goto error;
            }
            break;
        case OPT_WARMUP:
            if (parse_double(a, 0, 86400, &c->warmup_s) == -1) {
                fail(err, errlen, "--warmup must be seconds in [0, 86400]: %s", a);
                goto error;
            }
            break;
        case OPT_CONNECTIONS:
            if (parse_u64(a, 1, 100000, &u) == -1) {
                fail(err, errlen, "--connections must be 1..100000: %s", a);
                goto error;
            }
            c->connections = (unsigned)u;
            break;
        case OPT_PIPELINE:
            if (parse_u64(a, 1, 1024, &u) == -1) {
                fail(err, errlen, "--pipeline must be 1..1024: %s", a);
                goto error;
            }
            c->pipeline = (unsigned)u;
            break;
        case OPT_HEADER:
            c->headers[c->nheaders++] = a;
            break;
        case OPT_METHOD:
            c->method = a;
            break;
        case OPT_BODY_BYTES:
            if (parse_u64(a, 0, 64 << 20, &u) == -1) {
                fail(err, errlen, "--body-bytes must be 0..67108864: %s", a);
                goto error;
            }
            c->body_bytes = (size_t)u;
            break;
        case OPT_CLOSE:
            c->close_mode = 1;
            break;
        case OPT_TIMEOUT:
            if (parse_u64(a, 1, 3600000, &u) == -1) {
                fail(err, errlen, "--timeout must be 1..3600000 ms: %s", a);
                goto error;
            }
            c->timeout_us = u * 1000;
            break;
        case OPT_SAMPLES:
            c->samples_path = a;
            break;
        case OPT_POISSON:
            c->poisson = 1;
            break;
        case OPT_SEED:
            if (parse_u64(a, 0, UINT64_MAX, &c->seed) == -1) {
                fail(err, errlen, "--seed must be an unsigned integer: %s", a);
                goto error;
            }
            break;
        case OPT_MAX_BACKLOG:
            if (parse_u64(a, 1, UINT64_MAX, &c->max_backlog) == -1) {
                fail(err, errlen, "--max-backlog must be >= 1: %s", a);
                goto error;
            }
            have_backlog = 1;
            break;
        case OPT_MAX_LAG:
            if (parse_u64(a, 1, 3600000, &u) == -1) {
                fail(err, errlen, "--max-lag must be 1..3600000 ms: %s", a);
                goto error;
            }
            c->max_lag_us = u * 1000;
            break;
        case OPT_TICK_US:
            if (parse_u64(a, 0, 1000000, &c->tick_us) == -1) {
                fail(err, errlen, "--tick-us must be 0..1000000: %s", a);
                goto error;
            }
            break;
        case OPT_TREND_RATIO:
            if (parse_double(a, 0, 1e6, &c->trend_ratio) == -1 ||
                (c->trend_ratio != 0 && c->trend_ratio < 1)) {
                fail(err, errlen, "--trend-ratio must be 0 (off) or >= 1: %s", a);
                goto error;
            }
            break;
        case OPT_TREND_MIN_US:
            if (parse_u64(a, 0, 3600000000ULL, &c->trend_min_us) == -1) {
                fail(err, errlen, "--trend-min-us must be 0..3600000000: %s", a);
                goto error;
            }
            break;
        case OPT_MIN_ACHIEVED:
            if (parse_double(a, 0, 1, &c->min_achieved) == -1 || c->min_achieved > 1) {
                fail(err, errlen, "--min-achieved must be 0..1: %s", a);
                goto error;
            }
            break;
        case OPT_SPIN:
            c->spin = 1;
            break;
        case OPT_HELP:
            config_deinit(c);
            return CONFIG_HELP;
        default:
            fail(err, errlen, "unknown or incomplete option: %s", argv[optind - 1]);
            goto error;
        }
    }
    if (optind < argc) {
        fail(err, errlen, "unexpected argument: %s", argv[optind]);
        goto error;
    }
    if (c->url == NULL || c->rate == 0 || c->duration_s == 0) {
        fail(err, errlen, "--url, --rate and --duration are required");
        goto error;
    }
    if (url_parse(&c->target, c->url, &why) == -1) {
        fail(err, errlen, "--url %s: %s", c->url, why);
        goto error;
    }
    if (c->close_mode)
        c->pipeline = 1; /* one request per connection leaves nothing to pipeline */
    if (!have_backlog) {
        double b = ceil(c->rate * CONFIG_BACKLOG_S); /* 10 ms worth of requests */
        c->max_backlog = b < CONFIG_BACKLOG_MIN ? CONFIG_BACKLOG_MIN : (uint64_t)b;
    }
    return CONFIG_OK;

error:
    config_deinit(c);
    return CONFIG_ERROR;
}

void config_deinit(struct config *c)
{
    if (c == NULL)
        return;
    free(c->headers);
    c->headers = NULL;
    c->nheaders = 0;
}
