/* See master/http_fetch.h. */
#include "master/http_fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/http1_parser.h"

#define RESPONSE_MAX (4u << 20)

static int fail(char *err, size_t errlen, const char *what, const char *detail)
{
    snprintf(err, errlen, "%s: %s", what, detail);
    return -1;
}

static const char *ossl_why(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, len, "%s", errno ? strerror(errno) : "closed");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

SSL_CTX *fg_http_fetch_ctx(const char *ca_file, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        fail(err, errlen, "TLS", ossl_why(why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "caFile %s: %s", ca_file ? ca_file : "(system)",
                 ossl_why(why, sizeof(why)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* "http[s]://HOST[:PORT]/PATH" into its parts; *tls for https. */
static int parse_url(const char *url, int *tls, char *host, size_t hlen, char *port, size_t plen,
                     const char **path)
{
    size_t skip;
    if (strncmp(url, "https://", 8) == 0)
        *tls = 1, skip = 8;
    else if (strncmp(url, "http://", 7) == 0)
        *tls = 0, skip = 7;
    else
        return -1;
    /* RFC 3986 2: no space, control or non-ASCII byte (one would split the request line); no
     * fragment (3.5: never sent) */
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '#')
            return -1;
    const char *h = url + skip, *end = h + strcspn(h, "/?#"), *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL)
            return -1;
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if ((size_t)(rb - h - 1) >= hlen)
            return -1;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        const char *hend = colon ? colon : end;
        if (hend == h || (size_t)(hend - h) >= hlen)
            return -1;
        memcpy(host, h, (size_t)(hend - h));
        host[hend - h] = '\0';
    }
    if (colon) {
        size_t n = (size_t)(end - colon - 1);
        if (n == 0 || n >= plen || strspn(colon + 1, "0123456789") < n)
            return -1;
        memcpy(port, colon + 1, n);
        port[n] = '\0';
        if (n > 5 || atoi(port) < 1 || atoi(port) > 65535)
            return -1;
    } else {
        snprintf(port, plen, "%s", *tls ? "443" : "80");
    }
    *path = *end ? end : "/";
    return 0;
}

static int dial(const char *host, const char *port, unsigned timeout_s, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        return fail(err, errlen, "resolve", gai_strerror(rc));
    int fd = -1, e = 0;
    struct timeval tv = {(time_t)timeout_s, 0};
    for (struct addrinfo *a = res; a != NULL && fd == -1; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd == -1) {
            e = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd == -1)
        return fail(err, errlen, "connect", strerror(e ? e : ECONNREFUSED));
    return fd;
}

/* value into out (cut to fit). */
static void copy_value(fg_str_t v, char *out, size_t olen)
{
    size_t n = v.len < olen - 1 ? v.len : olen - 1;
    memcpy(out, v.base, n);
    out[n] = '\0';
}

int fg_http_fetch_parse(char *buf, size_t len, int head_request, fg_http_fetch_resp_t *out,
                        const char **why)
{
    memset(out, 0, sizeof(*out));
    fg_http_header_t hdrs[64];
    fg_http1_head_t head = {.headers = hdrs, .headers_cap = sizeof(hdrs) / sizeof(hdrs[0])};
    fg_http1_limits_t lim = {0};
    int hl = fg_http1_parse_response(buf, len, &lim, &head);
    if (hl < 0) {
        *why = len == 0                    ? "empty (closed)"
               : hl == FG_HTTP1_INCOMPLETE ? "incomplete response head"
                                           : "malformed response head";
        return -1;
    }
    out->status = head.status;
    for (size_t i = 0; i < head.num_headers; i++) {
        fg_str_t name = hdrs[i].name;
        if (fg_str_ieq(name, FG_STR_LIT("Replay-Nonce")))
            copy_value(hdrs[i].value, out->nonce, sizeof(out->nonce));
        else if (fg_str_ieq(name, FG_STR_LIT("Location")))
            copy_value(hdrs[i].value, out->location, sizeof(out->location));
        else if (fg_str_ieq(name, FG_STR_LIT("Content-Type")))
            copy_value(hdrs[i].value, out->content_type, sizeof(out->content_type));
    }
    char *body = buf + hl;
    size_t n = len - (size_t)hl;
    if (fg_http1_response_bodiless(head_request ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET"),
                                   head.status)) {
        n = 0; /* RFC 9112 6.3 rules 1-2 */
    } else if (head.chunked) {
        /* RFC 9112 7.1: decoded in place, the payload moved down over the framing */
        fg_http1_chunked_t d;
        fg_http1_chunked_init(&d);
        size_t r = 0, w = 0;
        for (;;) {
            size_t consumed = 0, dl = 0;
            int rc = fg_http1_chunked_step(&d, body + r, n - r, &consumed, &dl);
            if (rc < 0 || (rc == 0 && consumed == 0)) {
                *why = rc < 0 ? "malformed chunked body" : "truncated chunked body";
                return -1;
            }
            memmove(body + w, body + r, dl);
            w += dl;
            r += consumed;
            if (rc == 1)
                break;
        }
        n = w;
    } else if (head.content_length >= 0) {
        if ((uint64_t)head.content_length > n) {
            *why = "truncated body";
            return -1;
        }
        n = (size_t)head.content_length;
    }
    out->body = malloc(n + 1);
    if (out->body == NULL)
        abort();
    memcpy(out->body, body, n);
    out->body[n] = '\0';
    out->len = n;
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The socket's send and receive timeouts set to what is left until deadline (monotonic ms): a
 * peer that trickles bytes cannot stretch the exchange past it. -1 when it has passed. */
static int time_left(int fd, uint64_t deadline)
{
    uint64_t now = mono_ms();
    if (now >= deadline)
        return -1;
    uint64_t left = deadline - now;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return 0;
}

/* Whether buf holds a whole response framed by Content-Length (or one without a body): it is
 * read no further, whether or not the server closes (RFC 9112 6.3). A chunked body, or one that
 * ends with the connection, is read to the end. */
static int complete(const char *buf, size_t len, int head_request)
{
    fg_http_header_t hdrs[64];
    fg_http1_head_t head = {.headers = hdrs, .headers_cap = sizeof(hdrs) / sizeof(hdrs[0])};
    fg_http1_limits_t lim = {0};
    int hl = fg_http1_parse_response(buf, len, &lim, &head);
    if (hl < 0)
        return 0;
    if (fg_http1_response_bodiless(head_request ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET"),
                                   head.status))
        return 1;
    return !head.chunked && head.content_length >= 0 &&
           (uint64_t)(len - (size_t)hl) >= (uint64_t)head.content_length;
}

/* Writes all of p through ssl, or the plain socket fd when ssl is NULL, by deadline. */
static int send_all(SSL *ssl, int fd, const void *p, size_t n, uint64_t deadline)
{
    const char *c = p;
    while (n > 0) {
        if (time_left(fd, deadline) < 0)
            return -1;
        int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
        ssize_t w = ssl ? SSL_write(ssl, c, chunk) : send(fd, c, (size_t)chunk, MSG_NOSIGNAL);
        if (w <= 0) {
            if (ssl == NULL && w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to n bytes by deadline: > 0 read, 0 end of the response, -1 timed out, -2 failed. */
static ssize_t recv_some(SSL *ssl, int fd, char *p, size_t n, uint64_t deadline)
{
    if (time_left(fd, deadline) < 0)
        return -1;
    errno = 0;
    if (ssl == NULL) {
        ssize_t r;
        do
            r = recv(fd, p, n, 0);
        while (r < 0 && errno == EINTR);
        return r >= 0 ? r : (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    }
    int r = SSL_read(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    /* SO_RCVTIMEO expired: the response is cut, not ended (a body without framing ends only
     * with the connection, RFC 9112 6.3 rule 8) */
    int se = SSL_get_error(ssl, r);
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE ||
        (se == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)))
        return -1;
    return 0;
}

/* A TLS session over fd with host verified (its name, or its address for a literal). */
static SSL *tls_open(SSL_CTX *ctx, int fd, const char *host, char *err, size_t errlen)
{
    char why[256];
    unsigned char ip[16];
    int literal = inet_pton(AF_INET6, host, ip) == 1 || inet_pton(AF_INET, host, ip) == 1;
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 ||
        (!literal && SSL_set_tlsext_host_name(ssl, host) != 1) ||
        (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
                 : SSL_set1_host(ssl, host) != 1)) {
        fail(err, errlen, "TLS", ossl_why(why, sizeof(why)));
        SSL_free(ssl);
        return NULL;
    }
    errno = 0;
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            fail(err, errlen, "TLS: certificate verify failed", X509_verify_cert_error_string(v));
        else
            fail(err, errlen, "TLS", ossl_why(why, sizeof(why)));
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

int fg_http_fetch(SSL_CTX *ctx, const fg_http_fetch_req_t *req, unsigned timeout_s,
                  fg_http_fetch_resp_t *out, char *err, size_t errlen)
{
    char host[256], port[16], why[256];
    const char *path;
    int tls;
    memset(out, 0, sizeof(*out));
    if (parse_url(req->url, &tls, host, sizeof(host), port, sizeof(port), &path) < 0)
        return fail(err, errlen, "URL", req->url);
    if (tls && ctx == NULL)
        return fail(err, errlen, "URL", "https is not available here");
    uint64_t deadline = mono_ms() + (uint64_t)timeout_s * 1000;
    int fd = dial(host, port, timeout_s, err, errlen);
    if (fd < 0)
        return -1;
    int v6 = strchr(host, ':') != NULL, rc = -1;
    const char *default_port = tls ? "443" : "80";
    char *buf = NULL;
    if (time_left(fd, deadline) < 0) {
        fail(err, errlen, "connect", "timed out");
        close(fd);
        return -1;
    }
    SSL *ssl = tls ? tls_open(ctx, fd, host, err, errlen) : NULL;
    if (tls && ssl == NULL)
        goto out;
    char head[3072], length[48] = "";
    /* RFC 9110 8.6: no Content-Length on a GET or HEAD without content; 0 on another method */
    if (req->body || (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0))
        snprintf(length, sizeof(length), "Content-Length: %zu\r\n", req->body ? req->body_len : 0);
    /* RFC 9112 3.2.1: an empty path is "/" ("http://h?q" asks for "/?q") */
    int hn = snprintf(head, sizeof(head),
                      "%s %s%s HTTP/1.1\r\nHost: %s%s%s%s%s\r\nUser-Agent: fastgateway\r\n"
                      "Accept: %s\r\n%s%s%s%sConnection: close\r\n\r\n",
                      req->method, path[0] == '/' ? "" : "/", path, v6 ? "[" : "", host,
                      v6 ? "]" : "", /* RFC 3986 3.2.2 */
                      strcmp(port, default_port) ? ":" : "", strcmp(port, default_port) ? port : "",
                      req->accept ? req->accept : "*/*", req->body ? "Content-Type: " : "",
                      req->body ? req->content_type : "", req->body ? "\r\n" : "", length);
    if (hn < 0 || (size_t)hn >= sizeof(head) || send_all(ssl, fd, head, (size_t)hn, deadline) < 0 ||
        (req->body && send_all(ssl, fd, req->body, req->body_len, deadline) < 0)) {
        fail(err, errlen, "send", ossl_why(why, sizeof(why)));
        goto out;
    }
    size_t cap = 16384, len = 0;
    buf = malloc(cap + 1);
    for (;;) {
        if (buf == NULL)
            abort();
        if (len == cap) {
            if (cap >= RESPONSE_MAX) {
                fail(err, errlen, "response", "larger than 4 MiB");
                goto out;
            }
            cap *= 2;
            char *more = realloc(buf, cap + 1);
            if (more == NULL)
                abort();
            buf = more;
        }
        ssize_t n = recv_some(ssl, fd, buf + len, cap - len, deadline);
        if (n == -1) {
            fail(err, errlen, "receive", "timed out");
            goto out;
        }
        if (n == -2) {
            fail(err, errlen, "receive", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (complete(buf, len, strcmp(req->method, "HEAD") == 0))
            break;
    }
    ERR_clear_error();
    const char *why_not = NULL;
    if (fg_http_fetch_parse(buf, len, strcmp(req->method, "HEAD") == 0, out, &why_not) < 0) {
        fail(err, errlen, "response", why_not);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    if (ssl)
        SSL_free(ssl);
    close(fd);
    return rc;
}

void fg_http_fetch_free(fg_http_fetch_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}
