/* fuzz_http1: feeds arbitrary bytes through the request and response parsers
 * exactly as client.c wires them: the real exchange decisions (exchange.c) run in
 * on_head (request classification and the upstream head rewrite; response
 * framing towards the client), bodies are re-framed into a bounded output
 * buffer, pieces of varying size are fed, spans stay valid across feeds, and
 * the end-of-exchange decisions (reuse, which errors close) run on every message.
 *
 * With clang: build with -fsanitize=fuzzer and LLVMFuzzerTestOneInput is the entry.
 * Without (gcc): `fuzz_http1 ITERATIONS [SEED]` mutates a built-in corpus of valid
 * and hostile messages (bit flips, byte inserts/deletes, splices) and runs each
 * mutant; under ASan/UBSan any memory error aborts. `make fuzz` runs it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "http1.h"

struct fz {
    struct http1_parser p; /* parser under test */
    struct exchange x;     /* the request state, as in struct client */
    struct config cfg;     /* limits the decisions read */
    unsigned req_flags;    /* response runs: what the request had set (from the input) */
    bool draining;         /* from the input */
    struct buffer out;     /* body sink, bounded like the proxy's */
    char head[1 << 16];    /* rewritten head */
};

static int fz_on_head(struct http1_parser *p)
{
    struct fz *f = p->owner;
    struct http1_msg *m = &p->msg;
    const char *why = NULL;
    if (p->llp.type == HTTP_REQUEST) {
        exchange_init(&f->x);
        if (exchange_keep_head(&f->x, m) == -1)
            abort(); /* out of memory */
        if (m->request_id < 0)
            memcpy(exchange_generated_id(&f->x), "0123456789abcdef0123456789abcdef", 33);
        int st = exchange_classify_request(&f->x, p, &f->cfg, f->draining, &why);
        if (st) {
            if (!why || st < 400 || st > 599)
                abort(); /* an error always has a reason and a 4xx/5xx status */
            p->error_status = st;
            return -1;
        }
        p->body_limit = f->cfg.limits.max_body_bytes;
        struct http1_fwd fwd = {.client_ip = "127.0.0.1",
                                .request_id = f->x.request_id,
                                .chunked = f->x.chunked,
                                .has_cl = f->x.has_cl,
                                .cl = f->x.cl,
                                .upgrade = (f->x.flags & EXCHANGE_F_UPGRADE) != 0};
        size_t n = http1_build_request_head(m, &fwd, f->head, sizeof f->head);
        if (n > sizeof f->head)
            abort(); /* a head that fits the input always fits twice its size */
        p->out_mode = exchange_request_out_mode(&f->x);
    } else {
        struct http1_resp_opts o = {0};
        if (p->interim) {
            if (!exchange_forward_interim(&f->x))
                return 0;
        } else {
            enum http1_out mode = HTTP1_OUT_NONE;
            int ret = exchange_response_framing(&f->x, p, f->draining, &o, &mode, &why);
            if (ret == -1) {
                if (!why)
                    abort();
                p->error_status = 502;
                return -1;
            }
            if (ret == 2 && m->status != 101)
                abort();
            p->out_mode = mode;
        }
        size_t n = http1_build_response_head(m, &o, f->head, sizeof f->head);
        if (n > sizeof f->head)
            abort();
        if (p->interim)
            return 0;
        f->x.status = (int)m->status;
        if (m->status == 101)
            return 2;
        if (f->x.flags & EXCHANGE_F_HEAD_METHOD)
            return 1;
    }
    p->out = &f->out;
    return 0;
}

/* The decisions taken when an exchange ends, on whatever state the input left. */
static void fz_end_of_exchange(struct fz *f, enum http1_result r)
{
    static const int codes[] = {400, 408, 413, 431, 502, 503, 504};
    bool reusable = exchange_upstream_reusable(&f->x, llhttp_should_keep_alive(&f->p.llp),
                                               r == HTTP1_DONE ? 0 : 1, 0);
    if (reusable && !(f->x.flags & EXCHANGE_F_REQ_DONE))
        abort(); /* never pool a conn whose request was not read in full */
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        bool closes = exchange_error_closes(&f->x, codes[i], f->draining, false);
        if (!closes && (f->draining || !(f->x.flags & EXCHANGE_F_KEEPALIVE)))
            abort(); /* draining or no keep-alive always closes */
    }
}

static void run_one(llhttp_type_t type, const uint8_t *data, size_t size)
{
    static struct fz f;
    if (http1_parser_init(&f.p, type) == -1 || buffer_alloc(&f.out, 4096) == -1)
        abort();
    f.p.owner = &f;
    f.p.on_head = fz_on_head;
    f.p.body_limit = 1 << 20;
    f.cfg.limits.max_body_bytes = 1 << 20;
    f.draining = size > 1 && (data[1] & 0x80);
    /* balancer: hash with each hash_key kind, so the key is kept from the head too */
    static char hdr[] = "X-Key";
    f.cfg.balancer =
        size > 2 && (data[2] & 0x4) ? CONFIG_BALANCER_HASH : CONFIG_BALANCER_ROUND_ROBIN;
    f.cfg.hash_key = size > 2 ? (enum config_key_kind)(data[2] % 3) : CONFIG_KEY_CLIENT_IP;
    f.cfg.hash_header = f.cfg.hash_key == CONFIG_KEY_HEADER ? hdr : NULL;
    exchange_init(&f.x);
    if (type == HTTP_RESPONSE && size > 1) {
        /* the request this response answers: flags picked by the input */
        static const unsigned pick[] = {EXCHANGE_F_KEEPALIVE, EXCHANGE_F_HTTP10,
                                        EXCHANGE_F_REQ_DONE,  EXCHANGE_F_HEAD_METHOD,
                                        EXCHANGE_F_UPGRADE,   EXCHANGE_F_IDEMPOTENT};
        for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++)
            if (data[1] & (1u << i))
                f.x.flags |= pick[i];
    }
    size_t step = size ? (size_t)data[0] % 17 + 1 : 1;
    size_t off = 0;
    enum http1_result r = HTTP1_OK;
    while (off < size) {
        /* the proxy's rule: never feed more than the output has room for */
        if (buffer_space(&f.out) <= HTTP1_SLACK)
            f.out.rpos = f.out.wpos = 0; /* "flushed" */
        size_t room = buffer_space(&f.out) - HTTP1_SLACK;
        size_t n = size - off < step ? size - off : step;
        if (f.p.phase != HTTP1_PH_HEAD && n > room)
            n = room;
        size_t used = 0;
        r = http1_execute(&f.p, (const char *)data + off, n, &used);
        if (used > n)
            abort();
        off += used;
        if (r == HTTP1_ERROR)
            break;
        if (r == HTTP1_DONE) {
            if (type == HTTP_REQUEST)
                f.x.flags |= EXCHANGE_F_REQ_DONE;
            fz_end_of_exchange(&f, r);
            http1_parser_next(&f.p);
        }
    }
    if (off >= size && r != HTTP1_ERROR)
        r = http1_finish(&f.p);
    fz_end_of_exchange(&f, r);
    exchange_deinit(&f.x);
    http1_parser_deinit(&f.p);
    buffer_release(&f.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(HTTP_REQUEST, data, size);
    run_one(HTTP_RESPONSE, data, size);
    return 0;
}

#ifndef FUZZ_WITH_LIBFUZZER
static const char *const corpus[] = {
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X\r\nX: 1\r\n\r\n",
    "POST /k?q HTTP/1.1\r\nHost: a\r\nX-Key:  v \r\nIdempotency-Key: 1\r\nContent-Length: "
    "1\r\n\r\nz",
    "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: "
    "b\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: "
    "1\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw",
    "GET / HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.0 x\r\nExpect: 100-continue\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: "
    "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nclose-delimited body",
    "HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
};

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    if (argc > 2)
        rng = strtoull(argv[2], NULL, 10) | 1;
    static uint8_t buf[8192];
    size_t nc = sizeof corpus / sizeof corpus[0];
    for (long i = 0; i < iters; i++) {
        const char *seed = corpus[next() % nc];
        size_t len = strlen(seed);
        memcpy(buf + 1, seed, len);
        buf[0] = (uint8_t)next();
        len++;
        int muts = (int)(next() % 6);
        for (int k = 0; k < muts; k++) {
            size_t pos = next() % len;
            switch (next() % 5) {
            case 0: /* flip a bit */
                buf[pos] ^= (uint8_t)(1u << (next() % 8));
                break;
            case 1: /* replace with an interesting byte */
                buf[pos] = (uint8_t) "\r\n :;,\"\t\0\177\377"
                                     "0aF-+x"[next() % 16];
                break;
            case 2: /* insert */
                if (len < sizeof buf - 1) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = (uint8_t)next();
                    len++;
                }
                break;
            case 3: /* delete */
                if (len > 1) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 4: { /* splice another seed in */
                const char *o = corpus[next() % nc];
                size_t ol = strlen(o), take = next() % (ol + 1);
                if (pos + take < sizeof buf) {
                    memcpy(buf + pos, o, take);
                    if (pos + take > len)
                        len = pos + take;
                }
                break;
            }
            }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("fuzz_http1: %ld inputs, no crash\n", iters);
    return 0;
}
#endif
