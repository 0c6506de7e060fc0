/* Unit tests: http1 (strictness beyond llhttp, head rewriting both ways,
 * re-framing, error bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http1.h"

/* A request parser wired like client.c: check, then build the upstream head. */
struct fx {
    struct http1_parser p; /* parser under test */
    struct buffer out;     /* re-framed body */
    char head[8192];       /* upstream head */
    size_t head_len;       /* bytes in head */
};

static int fx_on_head(struct http1_parser *p)
{
    struct fx *f = p->owner;
    const char *why = NULL;
    int st = http1_request_check(&p->msg, &why);
    if (st) {
        p->error_status = st;
        return -1;
    }
    bool chunked = p->msg.n_te == 1;
    bool has_cl = (p->llp.flags & F_CONTENT_LENGTH) != 0;
    struct http1_fwd fwd = {.client_ip = "10.0.0.9",
                            .request_id = "rid-1",
                            .chunked = chunked,
                            .has_cl = has_cl,
                            .cl = p->llp.content_length,
                            .upgrade = p->llp.upgrade && (p->msg.conn & HTTP1_CONN_UPGRADE)};
    f->head_len = http1_build_request_head(&p->msg, &fwd, f->head, sizeof f->head);
    assert_true(f->head_len < sizeof f->head);
    f->head[f->head_len] = '\0';
    p->out = &f->out;
    p->out_mode = chunked ? HTTP1_OUT_CHUNKED : has_cl ? HTTP1_OUT_IDENTITY : HTTP1_OUT_NONE;
    return 0;
}

static void fx_init(struct fx *f, llhttp_type_t type)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(http1_parser_init(&f->p, type), 0);
    assert_int_equal(buffer_alloc(&f->out, 1 << 16), 0);
    f->p.owner = f;
    f->p.on_head = fx_on_head;
}

static void fx_deinit(struct fx *f)
{
    http1_parser_deinit(&f->p);
    buffer_release(&f->out);
}

/* Feed `s` in pieces of `step` bytes (0 = all at once). Returns 0 when the
 * message completed, the error status on failure, -1 if incomplete. */
static int feed(struct fx *f, const char *s, size_t len, size_t step)
{
    size_t off = 0;
    while (off < len) {
        size_t n = step && step < len - off ? step : len - off;
        size_t used = 0;
        enum http1_result r = http1_execute(&f->p, s + off, n, &used);
        off += used;
        if (r == HTTP1_ERROR)
            return f->p.error_status;
        if (r == HTTP1_DONE)
            return 0;
    }
    return -1;
}

static int parse_request(const char *s, size_t step)
{
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    int r = feed(&f, s, strlen(s), step);
    fx_deinit(&f);
    return r;
}

/* Every case of the contract's reject list (section 3). */
static const struct {
    const char *name;
    const char *req;
    int status;
} rejects[] = {
    {"CL+TE",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     400},
    {"TE+CL",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: "
     "3\r\n\r\n0\r\n\r\n",
     400},
    {"duplicate CL",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
    {"duplicate CL differ",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
    {"listed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
    {"signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400},
    {"negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\nabc", 400},
    {"hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400},
    {"empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nabc", 400},
    {"overflow CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     400},
    {"TE gzip, chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
    {"TE chunked, gzip",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
    {"TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
    {"TE chunked, chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
    {"TE twice",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     400},
    {"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
     400},
    {"TE on HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
    {"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400},
    {"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400},
    {"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX\t: a\r\n\r\n", 400},
    {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400},
    {"space in name", "GET / HTTP/1.1\r\nHost: a\r\nX Y: a\r\n\r\n", 400},
    {"bare LF header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400},
    {"bare LF end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
    {"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
    {"bare CR header", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400},
    {"bare CR request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
    {"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\001b\r\n\r\n", 400},
    {"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\177b\r\n\r\n", 400},
    {"control in target", "GET /\001 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"control in name", "GET / HTTP/1.1\r\nHost: a\r\nX\001: a\r\n\r\n", 400},
    {"chunk size signed",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\nx\r\n0\r\n\r\n", 400},
    {"chunk size negative",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n", 400},
    {"chunk size 0x",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n", 400},
    {"chunk size underscore",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n1_0\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
     400},
    {"chunk size overflow",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
     400},
    {"chunk size invalid",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", 400},
    {"chunk size space",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n", 400},
    {"chunk line bare LF",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n", 400},
    {"chunk data bare LF",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n", 400},
    {"chunk line bare CR",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\rx\r\n0\r\n\r\n", 400},
    {"chunk data too long",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n", 400},
    {"chunk ext empty",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nx\r\n0\r\n\r\n", 400},
    {"chunk ext control",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\001\r\nx\r\n0\r\n\r\n",
     400},
    {"chunk ext unterminated quote",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nx\r\n0\r\n\r\n",
     400},
    {"chunk ext bare LF",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n0\r\n\r\n", 400},
    {"missing Host 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
    {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
    {"duplicate Host 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400},
    {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400},
    {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 400},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
    {"HTTP/0.9 token", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
    {"no version", "GET /\r\n\r\n", 400},
    {"lowercase method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"chunk ext empty name",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;=x\r\nhello\r\n0\r\n\r\n",
     400},
    {"chunk ext double semicolon",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;;a\r\nhello\r\n0\r\n\r\n",
     400},
    {"chunk ext empty value",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n",
     400},
    {"chunk ext control in name",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n5;a\001b\r\nhello\r\n0\r\n\r\n",
     400},
    {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501},
    {"garbage", "HELLO\r\n\r\n", 400},
};

static void test_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
        for (size_t step = 0; step <= 1; step++) { /* whole, then byte by byte */
            int got = parse_request(rejects[i].req, step);
            if (got != rejects[i].status)
                fail_msg("%s (step %zu): got %d, want %d", rejects[i].name, step, got,
                         rejects[i].status);
        }
    }
}

static const char *const accepts[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b c\"\r\nx\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n",
};

static void test_accepts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof accepts / sizeof accepts[0]; i++)
        for (size_t step = 0; step <= 1; step++)
            if (parse_request(accepts[i], step) != 0)
                fail_msg("rejected: %s (step %zu)", accepts[i], step);
}

static void test_request_head_rewrite(void **state)
{
    (void)state;
    static const char req[] = "GET /p?q=1 HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "Connection: keep-alive, X-Secret\r\n"
                              "X-Secret: 1\r\n"
                              "Keep-Alive: timeout=5\r\n"
                              "Proxy-Connection: x\r\n"
                              "TE: trailers\r\n"
                              "Trailer: X-T\r\n"
                              "Upgrade: h2c\r\n"
                              "X-Forwarded-For: 1.1.1.1\r\n"
                              "x-forwarded-for: 2.2.2.2 \r\n"
                              "X-Forwarded-Proto: https\r\n"
                              "X-Forwarded-Host: evil\r\n"
                              "Via: 1.0 a\r\n"
                              "Expect: 100-continue\r\n"
                              "Accept: */*\r\n"
                              "X-Request-ID: abc\r\n"
                              "\r\n";
    for (size_t step = 0; step <= 1; step++) {
        struct fx f;
        fx_init(&f, HTTP_REQUEST);
        assert_int_equal(feed(&f, req, sizeof req - 1, step), 0);
        assert_string_equal(f.head, "GET /p?q=1 HTTP/1.1\r\n"
                                    "Host: example.com\r\n"
                                    "Accept: */*\r\n"
                                    "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"
                                    "X-Forwarded-Proto: http\r\n"
                                    "X-Forwarded-Host: example.com\r\n"
                                    "X-Request-ID: rid-1\r\n"
                                    "Via: 1.0 a, 1.1 twinproxy\r\n"
                                    "\r\n");
        assert_int_equal(f.p.msg.request_id >= 0, 1);
        assert_true(f.p.msg.expect_continue);
        assert_true(http1_request_keepalive(&f.p.msg));
        fx_deinit(&f);
    }
}

static void test_request_framing_and_upgrade(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    static const char cl[] = "PUT /x HTTP/1.1\r\nContent-Length: 0005\r\nHost: h\r\n\r\nhello";
    assert_int_equal(feed(&f, cl, sizeof cl - 1, 0), 0);
    assert_string_equal(f.head, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                                "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
                                "X-Forwarded-Host: h\r\nX-Request-ID: rid-1\r\n"
                                "Via: 1.1 twinproxy\r\n\r\n");
    assert_int_equal(buffer_len(&f.out), 5);
    fx_deinit(&f);

    fx_init(&f, HTTP_REQUEST);
    static const char up[] = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\n\r\n";
    assert_int_equal(feed(&f, up, sizeof up - 1, 0), 0);
    assert_string_equal(f.head, "GET /ws HTTP/1.1\r\nHost: h\r\n"
                                "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
                                "X-Forwarded-Host: h\r\nX-Request-ID: rid-1\r\n"
                                "Via: 1.1 twinproxy\r\nConnection: upgrade\r\n"
                                "Upgrade: websocket\r\n\r\n");
    fx_deinit(&f);
}

static void test_http10_keepalive(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    static const char a[] = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    assert_int_equal(feed(&f, a, sizeof a - 1, 0), 0);
    assert_true(http1_request_keepalive(&f.p.msg));
    fx_deinit(&f);
    fx_init(&f, HTTP_REQUEST);
    static const char b[] = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(feed(&f, b, sizeof b - 1, 0), 0);
    assert_false(http1_request_keepalive(&f.p.msg));
    fx_deinit(&f);
    fx_init(&f, HTTP_REQUEST);
    static const char c[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_int_equal(feed(&f, c, sizeof c - 1, 0), 0);
    assert_false(http1_request_keepalive(&f.p.msg));
    fx_deinit(&f);
}

static void test_chunked_reframe_and_trailers(void **state)
{
    (void)state;
    static const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3;ext=1\r\nabc\r\n000A\r\n0123456789\r\n0\r\n"
                              "X-Checksum: 42\r\nTrailer: X\r\nHost: b\r\nX-Empty:\r\n\r\n";
    for (size_t step = 0; step <= 1; step++) {
        struct fx f;
        fx_init(&f, HTTP_REQUEST);
        assert_int_equal(feed(&f, req, sizeof req - 1, step), 0);
        buffer_put(&f.out, "", 1);
        const char *want = step ? "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\n0\r\n1\r\n1\r\n1\r\n2\r\n"
                                  "1\r\n3\r\n1\r\n4\r\n1\r\n5\r\n1\r\n6\r\n1\r\n7\r\n1\r\n8\r\n"
                                  "1\r\n9\r\n0\r\nX-Checksum: 42\r\nX-Empty: \r\n\r\n"
                                : "3\r\nabc\r\na\r\n0123456789\r\n0\r\n"
                                  "X-Checksum: 42\r\nX-Empty: \r\n\r\n";
        assert_string_equal(buffer_head(&f.out), want);
        fx_deinit(&f);
    }
}

static void test_body_limit(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    f.p.body_limit = 4;
    static const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_int_equal(feed(&f, req, sizeof req - 1, 0), 413);
    fx_deinit(&f);
}

static void test_connection_in_trailers_does_not_end_the_stream(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    static const char two[] = "POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "1\r\nx\r\n0\r\nConnection: close\r\n\r\n"
                              "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used = 0;
    assert_int_equal(http1_execute(&f.p, two, sizeof two - 1, &used), HTTP1_DONE);
    http1_parser_next(&f.p);
    size_t used2 = 0;
    assert_int_equal(http1_execute(&f.p, two + used, sizeof two - 1 - used, &used2), HTTP1_DONE);
    assert_int_equal(used + used2, sizeof two - 1);
    buffer_put(&f.out, "", 1);
    assert_string_equal(buffer_head(&f.out), "1\r\nx\r\n0\r\n\r\n");
    fx_deinit(&f);
}

static void test_pipelined_stop_at_message_end(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, HTTP_REQUEST);
    static const char two[] =
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used = 0;
    assert_int_equal(http1_execute(&f.p, two, sizeof two - 1, &used), HTTP1_DONE);
    assert_int_equal(used, 28);
    http1_parser_next(&f.p);
    size_t used2 = 0;
    assert_int_equal(http1_execute(&f.p, two + used, sizeof two - 1 - used, &used2), HTTP1_DONE);
    assert_int_equal(used + used2, sizeof two - 1);
    assert_int_equal(f.p.msg.url.len, 2);
    assert_memory_equal(f.p.msg.url.p, "/2", 2);
    fx_deinit(&f);
}

/* ---- responses ---- */

struct rfx {
    struct http1_parser p;
    struct http1_resp_opts o;
    char head[4096];
    size_t head_len;
    struct buffer out;
};

static int rfx_on_head(struct http1_parser *p)
{
    struct rfx *f = p->owner;
    f->head_len = http1_build_response_head(&p->msg, &f->o, f->head, sizeof f->head);
    f->head[f->head_len] = '\0';
    p->out = &f->out;
    p->out_mode = f->o.framing == HTTP1_FRAME_CHUNKED ? HTTP1_OUT_CHUNKED : HTTP1_OUT_IDENTITY;
    return 0;
}

static int parse_response(struct rfx *f, const char *s, struct http1_resp_opts o)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(http1_parser_init(&f->p, HTTP_RESPONSE), 0);
    assert_int_equal(buffer_alloc(&f->out, 4096), 0);
    f->p.owner = f;
    f->p.on_head = rfx_on_head;
    f->o = o;
    size_t used = 0;
    enum http1_result r = http1_execute(&f->p, s, strlen(s), &used);
    if (r == HTTP1_OK)
        r = http1_finish(&f->p);
    return r == HTTP1_ERROR ? f->p.error_status : r == HTTP1_DONE ? 0 : -1;
}

static void rfx_deinit(struct rfx *f)
{
    http1_parser_deinit(&f->p);
    buffer_release(&f->out);
}

static void test_response_head(void **state)
{
    (void)state;
    struct rfx f;
    struct http1_resp_opts o = {.framing = HTTP1_FRAME_CHUNKED};
    assert_int_equal(parse_response(&f,
                                    "HTTP/1.1 200 Fine\r\nX-A: 1\r\nConnection: close, X-B\r\n"
                                    "X-B: 2\r\nKeep-Alive: 1\r\nTransfer-Encoding: chunked\r\n"
                                    "Trailer: X-T\r\nUpgrade: x\r\nX-C: 3\r\n\r\n"
                                    "2\r\nhi\r\n0\r\nX-T: t\r\n\r\n",
                                    o),
                     0);
    assert_string_equal(f.head, "HTTP/1.1 200 Fine\r\nX-A: 1\r\nX-C: 3\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n");
    buffer_put(&f.out, "", 1);
    assert_string_equal(buffer_head(&f.out), "2\r\nhi\r\n0\r\nX-T: t\r\n\r\n");
    rfx_deinit(&f);

    struct http1_resp_opts keep = {.framing = HTTP1_FRAME_LENGTH, .keepalive = true};
    assert_int_equal(
        parse_response(&f, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX: y\r\n\r\nno", keep),
        0);
    assert_string_equal(f.head, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX: y\r\n"
                                "Connection: keep-alive\r\n\r\n");
    rfx_deinit(&f);

    /* close-delimited upstream response, de-chunked for an HTTP/1.0 client */
    struct http1_resp_opts close = {.framing = HTTP1_FRAME_CLOSE, .close = true};
    assert_int_equal(parse_response(&f, "HTTP/1.0 200 OK\r\nServer: s\r\n\r\nbody", close), 0);
    assert_string_equal(f.head, "HTTP/1.1 200 OK\r\nServer: s\r\nConnection: close\r\n\r\n");
    assert_int_equal(buffer_len(&f.out), 4);
    rfx_deinit(&f);

    struct http1_resp_opts upg = {.upgrade = true};
    assert_int_equal(parse_response(&f,
                                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\nX: 1\r\n\r\n",
                                    upg),
                     0);
    assert_string_equal(f.head, "HTTP/1.1 101 Switching Protocols\r\nX: 1\r\n"
                                "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    rfx_deinit(&f);
}

static void test_response_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\na",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 99x OK\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", /* closed early */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rfx f;
        struct http1_resp_opts o = {.framing = HTTP1_FRAME_LENGTH};
        int r = parse_response(&f, bad[i], o);
        if (r != 502)
            fail_msg("accepted: %s (%d)", bad[i], r);
        rfx_deinit(&f);
    }
}

static void test_error_bytes(void **state)
{
    (void)state;
    char out[512];
    size_t n = http1_build_error(502, "abc", false, false, NULL, out, sizeof out);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                             "Content-Length: 36\r\nX-Request-ID: abc\r\n\r\n"
                             "{\"code\":502,\"message\":\"Bad Gateway\"}");
    n = http1_build_error(431, "x", true, false, NULL, out, sizeof out);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             "Content-Type: application/json\r\nContent-Length: 56\r\n"
                             "X-Request-ID: x\r\nConnection: close\r\n\r\n"
                             "{\"code\":431,\"message\":\"Request Header Fields Too Large\"}");
    assert_true(http1_error_closes(400));
    assert_true(http1_error_closes(408));
    assert_true(http1_error_closes(413));
    assert_true(http1_error_closes(505));
    assert_false(http1_error_closes(429));
    assert_false(http1_error_closes(502));
    assert_false(http1_error_closes(503));
    assert_false(http1_error_closes(504));
    /* too small: nothing written, the length needed returned */
    assert_true(http1_build_error(400, "x", true, false, NULL, out, 10) > 10);
}

/* Contract 7 on a rate-limited listener: RateLimit-* after X-Request-ID (Retry-After
 * first on a 429, Reset omitted when it is -1), before Connection: close; on an
 * upstream response after its fields (its own RateLimit-* dropped), before the framing. */
static void test_ratelimit_fields(void **state)
{
    (void)state;
    char out[1024];
    struct ratelimit_result rl = {
        .verdict = RATELIMIT_LIMITED, .limit = 3, .remaining = 0, .reset = 6, .retry_after = 2};
    size_t n = http1_build_error(429, "r", false, false, &rl, out, sizeof out);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                             "Content-Length: 42\r\nX-Request-ID: r\r\nRetry-After: 2\r\n"
                             "RateLimit-Limit: 3\r\nRateLimit-Remaining: 0\r\n"
                             "RateLimit-Reset: 6\r\n\r\n"
                             "{\"code\":429,\"message\":\"Too Many Requests\"}");
    struct ratelimit_result ok = {
        .limit = 1000000000, .remaining = 999999999, .reset = -1, .retry_after = -1};
    n = http1_build_error(502, "r", true, false, &ok, out,
                          sizeof out); /* no Retry-After but on 429 */
    out[n] = '\0';
    assert_non_null(strstr(out, "X-Request-ID: r\r\nRateLimit-Limit: 1000000000\r\n"
                                "RateLimit-Remaining: 999999999\r\nConnection: close\r\n\r\n"));
    struct rfx f;
    struct http1_resp_opts o = {.framing = HTTP1_FRAME_CHUNKED, .close = true, .rl = &rl};
    assert_int_equal(parse_response(&f,
                                    "HTTP/1.1 200 OK\r\nratelimit-limit: 9\r\nX: 1\r\n"
                                    "RateLimit-Remaining: 9\r\nRateLimit-Reset: 9\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                    o),
                     0);
    assert_string_equal(f.head, "HTTP/1.1 200 OK\r\nX: 1\r\nRateLimit-Limit: 3\r\n"
                                "RateLimit-Remaining: 0\r\nRateLimit-Reset: 6\r\n"
                                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    rfx_deinit(&f);
    /* no rate limiting: an upstream's RateLimit-* pass */
    struct http1_resp_opts plain = {.framing = HTTP1_FRAME_LENGTH};
    assert_int_equal(parse_response(&f,
                                    "HTTP/1.1 200 OK\r\nRateLimit-Limit: 9\r\n"
                                    "Content-Length: 0\r\n\r\n",
                                    plain),
                     0);
    assert_string_equal(f.head,
                        "HTTP/1.1 200 OK\r\nRateLimit-Limit: 9\r\nContent-Length: 0\r\n\r\n");
    rfx_deinit(&f);
}

/* http1_head_scan() agrees with the byte-at-a-time matcher it replaces, whatever
 * the split of the input into feeds. */
static void test_head_scan(void **state)
{
    (void)state;
    static const char alphabet[] = "\r\n\r\nab";
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        char buf[64];
        size_t len = (size_t)(seed % sizeof buf);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        seed = seed * 1103515245u + 12345u;
        /* reference: the loop client.c used before */
        unsigned ref = 0;
        size_t ref_end = len;
        bool ref_found = false;
        for (size_t i = 0; i < len; i++) {
            char ch = buf[i];
            ref = ch == "\r\n\r\n"[ref] ? ref + 1 : ch == '\r' ? 1 : 0;
            if (ref == 4) {
                ref_end = i + 1;
                ref_found = true;
                break;
            }
        }
        /* the same bytes in feeds of random sizes */
        unsigned st = 0;
        size_t pos = 0;
        bool found = false;
        while (pos < len && !found) {
            seed = seed * 1103515245u + 12345u;
            size_t piece = 1 + (seed >> 16) % 9;
            if (piece > len - pos)
                piece = len - pos;
            size_t used = http1_head_scan(&st, buf + pos, piece, &found);
            assert_true(used <= piece);
            if (!found)
                assert_int_equal(used, piece);
            pos += used;
        }
        assert_int_equal(found, ref_found);
        assert_int_equal(pos, ref_end);
        assert_int_equal(st, ref);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_request_head_rewrite),
        cmocka_unit_test(test_request_framing_and_upgrade),
        cmocka_unit_test(test_http10_keepalive),
        cmocka_unit_test(test_chunked_reframe_and_trailers),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_pipelined_stop_at_message_end),
        cmocka_unit_test(test_connection_in_trailers_does_not_end_the_stream),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_response_rejects),
        cmocka_unit_test(test_error_bytes),
        cmocka_unit_test(test_ratelimit_fields),
        cmocka_unit_test(test_head_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
