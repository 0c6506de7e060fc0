/* fuzz_response: response parsing (http1.c) and exchange_response_framing, the
 * client head rewrite and body re-framing, for every request flag combination the
 * input picks. Seeds: raw responses (fuzz/seeds/response/). */
#include "fuzz_http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_http1_run(HTTP_RESPONSE, data, size);
    return 0;
}
