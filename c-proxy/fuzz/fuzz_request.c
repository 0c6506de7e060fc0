/* fuzz_request: request parsing and validation (http1.c + exchange_classify_request,
 * the upstream head rewrite, body re-framing), with the forwarded-message oracle of
 * fuzz_http1.c. Seeds: raw requests (fuzz/seeds/request/). */
#include "fuzz_http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_http1_run(HTTP_REQUEST, data, size);
    return 0;
}
