/* fuzz_http1: the parser driver shared by fuzz_request.c and fuzz_response.c
 * (see fuzz_http1.c). */
#ifndef TWINPROXY_FUZZ_HTTP1_H
#define TWINPROXY_FUZZ_HTTP1_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

/* Run one input through a parser of the given type (HTTP_REQUEST or HTTP_RESPONSE)
 * and the exchange decisions; aborts on a broken invariant. */
void fuzz_http1_run(llhttp_type_t type, const uint8_t *data, size_t size);

#endif
