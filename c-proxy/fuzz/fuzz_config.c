/* fuzz_config: the YAML config parser and validator (config_load_string) and the
 * value parsers it uses (durations, sizes, addresses). Every input either loads or
 * fails with a "FILE:LINE: message" error; nothing leaks either way. Seeds: the
 * shared config cases (c-proxy/tests/config_cases) and twinproxy.yaml. */
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CONFIG_ERR_MAX];
    err[0] = '\0';
    struct config *cfg = config_load_string("fuzz.yaml", (const char *)data, size, err, sizeof err);
    if (cfg) {
        if (cfg->n_upstreams == 0 || !cfg->upstreams || !cfg->admin_token)
            abort(); /* a loaded config has upstreams and a token string */
        config_free(cfg);
    } else if (strncmp(err, "fuzz.yaml:", 10) != 0 || !memchr(err, '\0', sizeof err)) {
        abort(); /* a refusal always says FILE:LINE */
    }
    /* the scalar parsers on the input as one string */
    char text[256];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    uint64_t v;
    (void)config_parse_duration(text, &v);
    (void)config_parse_size(text, &v);
    struct config_addr addr;
    const char *why = NULL;
    if (config_parse_addr(text, &addr, &why) == -1 && !why)
        abort(); /* a refused address has a reason */
    return 0;
}
