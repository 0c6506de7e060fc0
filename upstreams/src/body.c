/* body: generators for response bodies that are never held whole in memory. */
#include "body.h"

#include <stdio.h>
#include <string.h>

/* 16 KiB of pattern plus one period of slack so any offset can memcpy a full span. */
#define SPAN (16 * 1024)

static char span[SPAN + 16];
static int span_ready;

void body_pattern_fill(char *dst, uint64_t offset, size_t len)
{
    if (!span_ready) {
        for (size_t i = 0; i < sizeof(span); i++)
            span[i] = BODY_ALPHABET[i % 16];
        span_ready = 1;
    }
    size_t start = (size_t)(offset % 16);
    while (len > 0) {
        size_t n = len < SPAN ? len : SPAN;
        memcpy(dst, span + start, n);
        dst += n;
        len -= n;
        start = (start + n) % 16;
    }
}

void body_chunked_init(struct body_chunked *b, uint64_t n, uint64_t chunk, int trailer)
{
    memset(b, 0, sizeof(*b));
    b->left = n;
    b->chunk = chunk;
    b->trailer = trailer;
}

size_t body_chunked_fill(struct body_chunked *b, char *dst, size_t cap)
{
    static const char last[] = "0\r\n\r\n";
    static const char last_trailer[] = "0\r\nX-Trailer: done\r\n\r\n";
    size_t o = 0;

    while (!b->done) {
        if (b->in_chunk > 0) {
            size_t room = cap - o;
            if (room <= 2)
                break;
            /* keep 2 bytes so the chunk's CRLF can follow in the same fill */
            size_t n = b->in_chunk < room - 2 ? (size_t)b->in_chunk : room - 2;
            body_pattern_fill(dst + o, b->offset, n);
            o += n;
            b->offset += n;
            b->in_chunk -= n;
            if (b->in_chunk > 0)
                break;
            memcpy(dst + o, "\r\n", 2);
            o += 2;
        } else if (b->left > 0) {
            if (cap - o < 24)
                break;
            uint64_t n = b->left < b->chunk ? b->left : b->chunk;
            o += (size_t)snprintf(dst + o, cap - o, "%llx\r\n", (unsigned long long)n);
            b->in_chunk = n;
            b->left -= n;
        } else {
            const char *tail = b->trailer ? last_trailer : last;
            size_t tlen = b->trailer ? sizeof(last_trailer) - 1 : sizeof(last) - 1;
            if (cap - o < tlen)
                break;
            memcpy(dst + o, tail, tlen);
            o += tlen;
            b->done = 1;
        }
    }
    return o;
}
