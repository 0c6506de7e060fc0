/* fuzz_http1: the driver shared by fuzz_request.c and fuzz_response.c. It feeds
 * arbitrary bytes through the request or the response parser exactly as client.c
 * wires them: the real exchange decisions (exchange.c) run in on_head (request
 * classification and the upstream head rewrite; response framing towards the
 * client), bodies are re-framed into a bounded output buffer, pieces of varying
 * size are fed, spans stay valid across feeds, and the end-of-exchange decisions
 * (reuse, which errors close) run on every message.
 *
 * Input: the bytes of the message(s), as sent on the wire. A few bits of the first
 * bytes also pick the feed step, draining and the balancer's hash key kind (and for
 * responses the flags of the request being answered), so a raw request or response
 * is a seed as it is.
 *
 * Oracle for requests: every request the proxy accepts is forwarded as one
 * well-framed message: the rewritten head plus the re-framed body, parsed again by a
 * fresh strict parser, is exactly one complete request with the same method.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_http1.h"

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
    char fwd[1 << 17];     /* requests: the whole message as forwarded upstream */
    size_t fwd_len;        /* bytes in fwd */
    bool fwd_over;         /* fwd overflowed: this message is not re-parsed */
};

static void fz_fwd(struct fz *f, const char *p, size_t n)
{
    if (f->fwd_over || n > sizeof f->fwd - f->fwd_len) {
        f->fwd_over = true;
        return;
    }
    memcpy(f->fwd + f->fwd_len, p, n);
    f->fwd_len += n;
}

/* Drain the body sink (the proxy's flush) into the forwarded copy. */
static void fz_flush(struct fz *f)
{
    fz_fwd(f, buffer_head(&f->out), buffer_len(&f->out));
    f->out.rpos = f->out.wpos = 0;
}

struct reparse {
    unsigned complete; /* messages completed */
    unsigned method;   /* method of the first one */
};

static int reparse_on_complete(llhttp_t *llp)
{
    struct reparse *r = llp->data;
    if (r->complete++ == 0)
        r->method = llp->method;
    return HPE_PAUSED; /* stop right after the first message */
}

/* A request the proxy accepted and read in full went upstream as exactly one
 * complete, well-framed request of the same method, with no byte after it. */
static void fz_check_forwarded(struct fz *f, unsigned method)
{
    if (f->fwd_over)
        return;
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_complete = reparse_on_complete;
    llhttp_t llp;
    llhttp_init(&llp, HTTP_REQUEST, &st);
    struct reparse r = {0};
    llp.data = &r;
    llhttp_errno_t e = llhttp_execute(&llp, f->fwd, f->fwd_len);
    size_t used = f->fwd_len;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
        used = (size_t)(llhttp_get_error_pos(&llp) - f->fwd);
    else if (e != HPE_OK)
        abort(); /* the forwarded bytes do not parse */
    if (r.complete != 1 || r.method != method)
        abort(); /* not exactly one message, or another method */
    if (used != f->fwd_len && e != HPE_PAUSED_UPGRADE)
        abort(); /* bytes after the message: a smuggled request */
}

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
        f->fwd_len = 0;
        f->fwd_over = false;
        fz_fwd(f, f->head, n);
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

void fuzz_http1_run(llhttp_type_t type, const uint8_t *data, size_t size)
{
    static struct fz f;
    if (http1_parser_init(&f.p, type) == -1 || buffer_alloc(&f.out, 4096) == -1)
        abort();
    f.p.owner = &f;
    f.fwd_len = 0;
    f.fwd_over = true; /* until a head is accepted */
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
            fz_flush(&f); /* "sent" */
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
            if (type == HTTP_REQUEST) {
                f.x.flags |= EXCHANGE_F_REQ_DONE;
                fz_flush(&f);
                fz_check_forwarded(&f, f.p.msg.method);
            }
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
