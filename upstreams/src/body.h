/* body: generators for response bodies that are never held whole in memory. Pure. */
#ifndef UPSTREAM_BODY_H
#define UPSTREAM_BODY_H

#include <stddef.h>
#include <stdint.h>

/* Byte i of every generated body is BODY_ALPHABET[i % 16]. */
#define BODY_ALPHABET "0123456789abcdef"

/* Copies `len` pattern bytes starting at body offset `offset` into `dst`. */
void body_pattern_fill(char *dst, uint64_t offset, size_t len);

/* A chunked body of `left` pattern bytes in chunks of `chunk`, last chunk and optional
 * trailer included. Fill it into a buffer piece by piece with body_chunked_fill(). */
struct body_chunked {
    uint64_t left;     /* pattern bytes not yet started */
    uint64_t chunk;    /* chunk size (>= 1) */
    uint64_t in_chunk; /* bytes of the current chunk still to copy */
    uint64_t offset;   /* body offset of the next pattern byte */
    int trailer;       /* end with "X-Trailer: done" */
    int done;          /* last chunk (and trailer) emitted */
};

void body_chunked_init(struct body_chunked *b, uint64_t n, uint64_t chunk, int trailer);

/* Appends as much of the chunked body as fits in `cap` bytes at `dst`; returns the number
 * written (0 when cap is too small for the next framing piece, or when done). */
size_t body_chunked_fill(struct body_chunked *b, char *dst, size_t cap);

#endif
