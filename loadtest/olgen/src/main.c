/* olgen: open-loop constant-rate HTTP/1.1 load generator. See README.md. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "gen.h"
#include "report.h"
#include "stats.h"

int main(int argc, char **argv)
{
    struct config cfg;
    struct gen_result res;
    struct stats_summary sum;
    json_t *out = NULL;
    char err[512];
    int rc = 2;

    memset(&res, 0, sizeof(res)); /* stats_deinit below is then safe on every path */

    switch (config_parse(&cfg, argc, argv, err, sizeof(err))) {
    case CONFIG_HELP:
        fputs(config_usage, stdout);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "olgen: %s\n%s", err, config_usage);
        return 2;
    case CONFIG_OK:
        break;
    }
    if (gen_run(&cfg, &res) == -1)
        goto error;
    if (stats_summarize(&res.samples, &sum) == -1) {
        fprintf(stderr, "olgen: out of memory sorting samples\n");
        goto error;
    }
    if (cfg.samples_path != NULL && report_write_samples(cfg.samples_path, &res.samples) == -1) {
        fprintf(stderr, "olgen: cannot write %s: %s\n", cfg.samples_path, strerror(errno));
        goto error;
    }
    out = report_json(&cfg, &res, &sum);
    if (out == NULL || json_dumpf(out, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(12)) == -1) {
        fprintf(stderr, "olgen: cannot write the report\n");
        goto error;
    }
    fputc('\n', stdout);
    rc = 0;

error:
    json_decref(out);
    stats_deinit(&res.samples);
    config_deinit(&cfg);
    return rc;
}
