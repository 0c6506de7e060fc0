/* request: the target URL and the request bytes, formatted once before the run.
 *
 * Every request of a run is identical, so the wire bytes are built once and each send
 * is a pointer into them: no formatting and no allocation per request.
 */
#ifndef OLGEN_REQUEST_H
#define OLGEN_REQUEST_H

#include <stddef.h>

#define URL_HOST_MAX 255  /* longest host name accepted */
#define URL_PATH_MAX 4095 /* longest path + query accepted */

struct url {
    char host[URL_HOST_MAX + 1];      /* host name or address, IPv6 without brackets */
    char port[6];                     /* decimal port, "80" when the URL has none */
    char path[URL_PATH_MAX + 1];      /* path and query, "/" when the URL has none */
    char authority[URL_HOST_MAX + 9]; /* Host header value: as in the URL */
};

struct request {
    char *wire;   /* the request repeated `depth` times, so up to depth pipelined sends
                     are one contiguous suffix; owned */
    size_t len;   /* bytes of one request */
    size_t depth; /* repetitions in wire */
    int head;     /* nonzero for HEAD: responses carry no body */
};

/* Parse "http://host[:port][/path][?query]" ([v6]:port accepted). -1 with *err set
 * (a const string) if the URL is not of that form or a part is too long. */
int url_parse(struct url *u, const char *s, const char **err);

/* Format the request: "<method> <path> HTTP/1.1", Host (unless one of headers is a
 * Host), the extra headers ("K: V" strings, validated: a colon, no CR/LF),
 * Content-Length when there is a body or the method is POST/PUT/PATCH,
 * "Connection: close" when close_mode, then body_bytes of 'x'. -1 with *err set on
 * an invalid method or header, or ENOMEM. On success r owns r->wire. */
int request_build(struct request *r, const struct url *u, const char *method,
                  const char *const *headers, size_t nheaders, size_t body_bytes, int close_mode,
                  size_t depth, const char **err);
/* Free r->wire. NULL-safe. */
void request_deinit(struct request *r);

#endif
