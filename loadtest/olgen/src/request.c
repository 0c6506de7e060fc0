#include "request.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int copy_part(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

int url_parse(struct url *u, const char *s, const char **err)
{
    static const char scheme[] = "http://";
    memset(u, 0, sizeof(*u));
    if (strncasecmp(s, scheme, sizeof(scheme) - 1) != 0) {
        *err = "url must start with http://";
        return -1;
    }
    const char *p = s + sizeof(scheme) - 1;
    const char *auth_end = p + strcspn(p, "/?#");
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL) {
            *err = "url has an unterminated [ipv6] host";
            return -1;
        }
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':') {
                *err = "url has junk after ]";
                return -1;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(host, ':', (size_t)(auth_end - host));
        if (host_end != NULL)
            port = host_end + 1;
        else
            host_end = auth_end;
    }
    if (host_end == host || copy_part(u->host, sizeof(u->host), host, (size_t)(host_end - host))) {
        *err = "url host is empty or too long";
        return -1;
    }
    if (port != NULL) {
        size_t n = (size_t)(auth_end - port);
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)port[i]) || (v = v * 10 + (port[i] - '0')) > 65535) {
                n = 0;
                break;
            }
        }
        if (n == 0 || v == 0) {
            *err = "url port must be 1..65535";
            return -1;
        }
        snprintf(u->port, sizeof(u->port), "%hu", (unsigned short)v);
    } else {
        strcpy(u->port, "80");
    }
    /* Host header: the authority as written (RFC 9112 3.2), without a default :80. */
    if (copy_part(u->authority, sizeof(u->authority), p, (size_t)(auth_end - p))) {
        *err = "url host is too long";
        return -1;
    }
    const char *path = auth_end;
    size_t plen = strcspn(path, "#"); /* the fragment is never sent */
    if (plen == 0) {
        path = "/";
        plen = 1;
    }
    if (path[0] == '?') { /* "http://h?q" means "/?q" */
        if (plen + 1 >= sizeof(u->path)) {
            *err = "url path is too long";
            return -1;
        }
        u->path[0] = '/';
        memcpy(u->path + 1, path, plen);
        u->path[plen + 1] = '\0';
        return 0;
    }
    if (copy_part(u->path, sizeof(u->path), path, plen)) {
        *err = "url path is too long";
        return -1;
    }
    for (const char *c = u->path; *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            *err = "url path has spaces or control characters";
            return -1;
        }
    }
    return 0;
}

static int is_tchar(int c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int header_valid(const char *h)
{
    const char *colon = strchr(h, ':');
    if (colon == NULL || colon == h)
        return 0;
    for (const char *c = h; c < colon; c++)
        if (!is_tchar((unsigned char)*c))
            return 0;
    return strpbrk(h, "\r\n") == NULL;
}

static int header_is(const char *h, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(h, name, n) == 0 && h[n] == ':';
}

int request_build(struct request *r, const struct url *u, const char *method,
                  const char *const *headers, size_t nheaders, size_t body_bytes, int close_mode,
                  size_t depth, const char **err)
{
    char *one = NULL;
    size_t cap, len = 0;
    int has_host = 0;

    memset(r, 0, sizeof(*r));
    if (method[0] == '\0') {
        *err = "method is empty";
        goto error;
    }
    for (const char *c = method; *c; c++) {
        if (!is_tchar((unsigned char)*c)) {
            *err = "method is not an HTTP token";
            goto error;
        }
    }
    if (depth == 0)
        depth = 1;
    cap = strlen(method) + strlen(u->path) + strlen(u->authority) + 128 + body_bytes;
    for (size_t i = 0; i < nheaders; i++) {
        if (!header_valid(headers[i])) {
            *err = "header must be \"Name: value\" without CR/LF";
            goto error;
        }
        has_host |= header_is(headers[i], "host");
        cap += strlen(headers[i]) + 2;
    }
    one = malloc(cap);
    if (one == NULL) {
        *err = "out of memory";
        goto error;
    }
    len += (size_t)snprintf(one + len, cap - len, "%s %s HTTP/1.1\r\n", method, u->path);
    if (!has_host)
        len += (size_t)snprintf(one + len, cap - len, "Host: %s\r\n", u->authority);
    for (size_t i = 0; i < nheaders; i++)
        len += (size_t)snprintf(one + len, cap - len, "%s\r\n", headers[i]);
    if (body_bytes > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0)
        len += (size_t)snprintf(one + len, cap - len, "Content-Length: %zu\r\n", body_bytes);
    if (close_mode)
        len += (size_t)snprintf(one + len, cap - len, "Connection: close\r\n");
    len += (size_t)snprintf(one + len, cap - len, "\r\n");
    memset(one + len, 'x', body_bytes);
    len += body_bytes;

    r->wire = malloc(len * depth);
    if (r->wire == NULL) {
        *err = "out of memory";
        goto error;
    }
    for (size_t i = 0; i < depth; i++)
        memcpy(r->wire + i * len, one, len);
    r->len = len;
    r->depth = depth;
    r->head = strcmp(method, "HEAD") == 0;
    free(one);
    return 0;

error:
    free(one);
    memset(r, 0, sizeof(*r));
    return -1;
}

void request_deinit(struct request *r)
{
    if (r == NULL)
        return;
    free(r->wire);
    memset(r, 0, sizeof(*r));
}
