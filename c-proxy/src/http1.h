/* http1: llhttp glue, strictness checks beyond llhttp, and the pure functions
 * that turn a parsed head into the bytes the proxy sends.
 *
 * Twin: py-proxy/pyproxy/http1.py (httptools, the same llhttp).
 *
 * A struct http1_parser wraps one llhttp parser. Head fields are recorded as
 * spans pointing into the caller's input buffer: the caller must not move the
 * bytes of a head that is still being parsed (http1_parser_in_head()). When the
 * head is complete the parser calls on_head() synchronously (still inside
 * http1_execute, so every span is valid); the owner validates and writes the
 * outgoing head there. Body bytes are then re-framed straight into p->out
 * (identity, chunked, or discarded), trailers are passed through minus framing
 * and hop-by-hop fields, and http1_execute() stops with HTTP1_DONE at the end of
 * each message so pipelined bytes stay in the caller's buffer.
 */
#ifndef TWINPROXY_HTTP1_H
#define TWINPROXY_HTTP1_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "ratelimit.h"

/* Output room the caller keeps free beyond the bytes it feeds: chunk framing
 * of one on_body call plus a trailer name held over from the previous feed. */
#define HTTP1_SLACK 512
#define HTTP1_TRAILER_NAME_MAX 256 /* longer trailer field names are an error */

enum http1_hdr_id {
    HTTP1_H_OTHER = 0,         /* any other field: forwarded */
    HTTP1_H_HOST,              /* Host */
    HTTP1_H_CONTENT_LENGTH,    /* framing, regenerated */
    HTTP1_H_TRANSFER_ENCODING, /* framing, regenerated */
    HTTP1_H_CONNECTION,        /* hop-by-hop */
    HTTP1_H_KEEP_ALIVE,        /* hop-by-hop */
    HTTP1_H_PROXY_CONNECTION,  /* hop-by-hop */
    HTTP1_H_TE,                /* hop-by-hop */
    HTTP1_H_TRAILER,           /* hop-by-hop */
    HTTP1_H_UPGRADE,           /* hop-by-hop except on upgrade */
    HTTP1_H_EXPECT,            /* answered by the proxy, never forwarded */
    HTTP1_H_X_FORWARDED_FOR,   /* re-added by the proxy */
    HTTP1_H_X_FORWARDED_PROTO, /* re-added */
    HTTP1_H_X_FORWARDED_HOST,  /* re-added */
    HTTP1_H_X_REQUEST_ID,      /* re-added */
    HTTP1_H_VIA,               /* re-added */
    HTTP1_H_RATELIMIT,         /* RateLimit-Limit/-Remaining/-Reset: replaced on a rate-limited
                                  listener's responses */
};

#define HTTP1_CONN_CLOSE 0x1     /* Connection: close */
#define HTTP1_CONN_KEEPALIVE 0x2 /* Connection: keep-alive */
#define HTTP1_CONN_UPGRADE 0x4   /* Connection: upgrade */

struct http1_span {
    const char *p; /* into the input buffer */
    size_t len;    /* bytes */
};

struct http1_header {
    struct http1_span name;  /* as received */
    struct http1_span value; /* as received, trailing OWS trimmed by http1_msg_analyze */
    unsigned char id;        /* enum http1_hdr_id */
    bool hop;                /* named in Connection: never forwarded */
};

/* One parsed head (request or response). */
struct http1_msg {
    unsigned method;           /* llhttp_method_t, requests */
    unsigned major, minor;     /* HTTP version */
    bool has_version;          /* a version token was present (not a bare HTTP/0.9 line) */
    unsigned status;           /* responses */
    struct http1_span url;     /* request target */
    struct http1_span reason;  /* response reason phrase */
    struct http1_header *hdrs; /* owned array */
    size_t n_hdrs;             /* headers in use */
    size_t cap_hdrs;           /* allocated */
    /* derived by http1_msg_analyze() */
    unsigned conn;        /* HTTP1_CONN_* tokens seen in Connection */
    unsigned n_host;      /* Host fields */
    unsigned n_te;        /* Transfer-Encoding fields */
    int host;             /* index of the (first) Host, -1 if none */
    int upgrade;          /* index of the Upgrade field, -1 if none */
    int request_id;       /* index of the first non-empty X-Request-ID, -1 if none */
    bool te_chunked;      /* exactly one Transfer-Encoding, its value exactly "chunked" */
    bool expect_continue; /* Expect: 100-continue */
};

enum http1_phase {
    HTTP1_PH_HEAD = 0, /* before/inside the head */
    HTTP1_PH_BODY,     /* after the head */
    HTTP1_PH_TRAILERS, /* after the last chunk */
    HTTP1_PH_DONE,     /* message complete (parser paused) */
};

enum http1_out {
    HTTP1_OUT_NONE = 0, /* discard body bytes */
    HTTP1_OUT_IDENTITY, /* copy payload bytes as they are (Content-Length, close, de-chunk) */
    HTTP1_OUT_CHUNKED,  /* emit each payload piece as a chunk, then 0 + trailers */
};

enum http1_result {
    HTTP1_OK = 0, /* consumed everything fed, message not complete */
    HTTP1_DONE,   /* message complete; *used tells where it ended */
    HTTP1_ERROR,  /* invalid input; see p->error_status */
};

struct http1_parser {
    llhttp_t llp;           /* the llhttp state; llp.data == this */
    enum http1_phase phase; /* where in the message we are */
    struct http1_msg msg;   /* head of the current message */
    bool in_head;           /* a head is partly parsed: its bytes must not move */
    bool interim;           /* current response is a 1xx other than 101 */
    int last_cb;            /* 1 header field, 2 header value: merges split callbacks */
    int (*on_head)(struct http1_parser *p); /* head complete: 0, 1 (no body), 2 (upgrade), -1 */
    void *owner;                            /* for on_head */
    struct buffer *out;                     /* body sink, NULL = discard */
    enum http1_out out_mode;                /* how body bytes are re-framed into out */
    uint64_t body_bytes;                    /* payload bytes of this message so far */
    uint64_t body_limit;                    /* 0 = none; over it the message fails with 413 */
    int error_status;                   /* status an error maps to (400, 413, 431, 501, 505, 502) */
    const char *error_reason;           /* short text for logs */
    bool last_chunk;                    /* the 0-size chunk was seen */
    size_t ext_len;                     /* bytes of the current chunk-extension name or value */
    bool tkeep;                         /* the current trailer field is forwarded */
    size_t tname_len;                   /* bytes in tname */
    char tname[HTTP1_TRAILER_NAME_MAX]; /* current trailer field name */
};

/* type: HTTP_REQUEST or HTTP_RESPONSE. Returns 0 or -1 (allocation). */
int http1_parser_init(struct http1_parser *p, llhttp_type_t type);
void http1_parser_deinit(struct http1_parser *p);
/* Ready for the next message (after HTTP1_DONE). */
void http1_parser_next(struct http1_parser *p);
/* Back to the start state, as if new (a new exchange on another connection). */
void http1_parser_reset(struct http1_parser *p);

/* Feed len bytes. *used = bytes consumed (== len unless DONE/ERROR). */
enum http1_result http1_execute(struct http1_parser *p, const char *data, size_t len, size_t *used);
/* The peer closed: completes a close-delimited message (HTTP1_DONE), else
 * HTTP1_ERROR, or HTTP1_OK if no message had started. */
enum http1_result http1_finish(struct http1_parser *p);

/* Fill the derived fields of m (Connection tokens, counts, indexes) and trim
 * trailing whitespace off values. Called before on_head. */
void http1_msg_analyze(struct http1_msg *m);

/* Request rules the contract adds to llhttp's: returns 0, or the status to
 * answer (400, 501, 505) with *why set. */
int http1_request_check(const struct http1_msg *m, const char **why);

/* Whether the client may keep the connection after this request. */
bool http1_request_keepalive(const struct http1_msg *m);

/* Inputs of the upstream request head besides the parsed head. */
struct http1_fwd {
    const char *client_ip;  /* appended to X-Forwarded-For */
    const char *request_id; /* X-Request-ID to send */
    bool chunked;           /* body re-framed chunked */
    bool has_cl;            /* Content-Length: cl */
    uint64_t cl;            /* normalized length */
    bool upgrade;           /* add Connection: upgrade + the client's Upgrade */
};

/* The request head sent upstream (docs/behaviour.md "The request sent upstream").
 * Returns its length; the bytes are written only if length <= cap. */
size_t http1_build_request_head(const struct http1_msg *m, const struct http1_fwd *f, char *out,
                                size_t cap);

enum http1_framing {
    HTTP1_FRAME_NONE = 0, /* no body (HEAD, 1xx, 204, 304): Content-Length passes as sent */
    HTTP1_FRAME_LENGTH,   /* upstream's Content-Length, passed as sent */
    HTTP1_FRAME_CHUNKED,  /* Transfer-Encoding: chunked added */
    HTTP1_FRAME_CLOSE,    /* close-delimited (HTTP/1.0 client) */
};

struct http1_resp_opts {
    enum http1_framing framing;        /* body framing towards the client */
    bool close;                        /* add Connection: close */
    bool keepalive;                    /* add Connection: keep-alive (HTTP/1.0 client) */
    bool upgrade;                      /* 101: keep Upgrade, add Connection: upgrade */
    const struct ratelimit_result *rl; /* rate-limited listener: the request's RateLimit-*
                                          fields (the upstream's are dropped); NULL: none */
};

/* The response head sent to the client (docs/behaviour.md "The response sent to
 * the client"); with o->rl, RateLimit-Limit, -Remaining and -Reset (omitted when
 * reset < 0) follow the upstream's fields, before the framing and Connection.
 * Returns its length; written only if length <= cap. */
size_t http1_build_response_head(const struct http1_msg *m, const struct http1_resp_opts *o,
                                 char *out, size_t cap);

/* The proxy's own error response (contract 4). head: the request was a HEAD, so
 * the body is left out (Content-Length still says what a GET would get: RFC 9110
 * 9.3.2), or a kept-alive client would read it as the next response. rl (a
 * rate-limited listener; NULL:
 * none) adds, after X-Request-ID: Retry-After on a 429 (when retry_after >= 0),
 * then RateLimit-Limit, -Remaining and -Reset (when reset >= 0) (contract 7,
 * docs/behaviour.md). Returns its length; written only if length <= cap. */
size_t http1_build_error(int code, const char *request_id, bool close, bool head,
                         const struct ratelimit_result *rl, char *out, size_t cap);

/* Standard reason phrase of the codes the proxy sends itself. */
const char *http1_reason(int code);

/* Whether the proxy closes the client connection after sending this error. */
bool http1_error_closes(int code);

/* Find the end of a head: advance the "\r\n\r\n" matcher (*state: 0..3
 * terminator bytes already seen, carried across calls) over p[0, n). Returns the
 * bytes up to and including the terminator and sets *found, or returns n with
 * *state updated. Same result as feeding the bytes one at a time, but uses
 * memchr between line ends. */
size_t http1_head_scan(unsigned *state, const char *p, size_t n, bool *found);

/* Case-insensitive compare of a span with a NUL-terminated literal. */
bool http1_span_eq(struct http1_span s, const char *lit);

#endif
