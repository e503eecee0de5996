/* The TLS transport: OpenSSL on the non-blocking socket (a socket BIO on the fd). Reads decrypt
 * straight into reserved evbuffer space and writes encrypt straight from the output's chains
 * (evbuffer_peek): body chains of about 16 KiB (reads from a destination, file pieces) become
 * full records (RFC 8446 5.1: 16 KiB at most) without a copy. Small chains (a response head,
 * chunk-size lines) are gathered with what follows into one record instead of each making a
 * record of a few bytes. */
#include "worker/core/transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#define TLS_RECORD_MAX 16384
/* A chain shorter than this is gathered with what follows it into one record. */
#define TLS_SMALL_CHAIN 4096

/* Map an OpenSSL failure to the transport's results; ret is the call's return value. */
static ssize_t tls_fail(fg_transport_t *t, int ret)
{
    int e = SSL_get_error(t->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->want = FG_TRANSPORT_WANT_READ;
        return FG_TRANSPORT_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        t->want = FG_TRANSPORT_WANT_WRITE;
        return FG_TRANSPORT_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify: the orderly end */
    case SSL_ERROR_SYSCALL:
        t->failed = 1;
        ERR_clear_error();
        if (errno == 0)
            errno = ECONNRESET; /* the TCP stream ended without close_notify */
        return -1;
    default:
        t->failed = 1;
        ERR_clear_error();
        errno = EPROTO;
        return -1;
    }
}

static ssize_t tls_recv(fg_transport_t *t, struct evbuffer *in, size_t max)
{
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < TLS_RECORD_MAX ? max - total : TLS_RECORD_MAX;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(in, (ev_ssize_t)want, &v, 1) < 1) {
            errno = ENOMEM;
            return total > 0 ? (ssize_t)total : -1;
        }
        size_t n = 0;
        errno = 0;
        int ret = SSL_read_ex(t->ssl, v.iov_base, want < v.iov_len ? want : v.iov_len, &n);
        if (ret == 1) {
            v.iov_len = n;
            evbuffer_commit_space(in, &v, 1);
            total += n;
            /* With read-ahead, OpenSSL's last read took what the socket held: once that is
             * consumed, another call would only meet EAGAIN. Bytes that arrived since raise the
             * (level-triggered) read event again. */
            if (!SSL_has_pending(t->ssl))
                break;
            continue;
        }
        evbuffer_commit_space(in, &v, 0);
        if (total > 0) {
            /* Reported again by the next call, which must come without a socket event when
             * the peer's close_notify was among the bytes taken (tls_pending says so). */
            ERR_clear_error();
            return (ssize_t)total;
        }
        return tls_fail(t, ret);
    }
    return (ssize_t)total;
}

/* The bytes of the next record: the first chain in place when it is large enough to make a
 * sizeable record, else up to a full record gathered from the chains into gather (a response
 * head before its body, chunk-size lines between chunks), so that small chains do not each
 * become a record of a few bytes. A repeated write offers at least the bytes of the one that
 * blocked, as OpenSSL requires (the output was not drained meanwhile). */
static const void *next_record(fg_transport_t *t, struct evbuffer *out,
                               unsigned char gather[TLS_RECORD_MAX], size_t *len)
{
    size_t avail = evbuffer_get_length(out);
    struct evbuffer_iovec v;
    if (evbuffer_peek(out, -1, NULL, &v, 1) < 1)
        return NULL;
    if (v.iov_len < TLS_SMALL_CHAIN && avail > v.iov_len && t->wpend <= TLS_RECORD_MAX) {
        *len = avail < TLS_RECORD_MAX ? avail : TLS_RECORD_MAX;
        evbuffer_copyout(out, gather, *len);
        return gather;
    }
    if (v.iov_len < t->wpend) {
        if (evbuffer_pullup(out, (ev_ssize_t)t->wpend) == NULL)
            return NULL;
        evbuffer_peek(out, -1, NULL, &v, 1);
    }
    *len = v.iov_len;
    return v.iov_base;
}

static ssize_t tls_send_chain(fg_transport_t *t, struct evbuffer *out)
{
    ssize_t total = 0;
    unsigned char gather[TLS_RECORD_MAX];
    while (evbuffer_get_length(out) > 0) {
        size_t len = 0;
        const void *src = next_record(t, out, gather, &len);
        if (src == NULL) {
            errno = ENOMEM;
            return total > 0 ? total : -1;
        }
        size_t n = 0;
        errno = 0;
        int ret = SSL_write_ex(t->ssl, src, len, &n);
        if (ret == 1) {
            t->wpend = 0;
            evbuffer_drain(out, n);
            total += (ssize_t)n;
            continue;
        }
        ssize_t r = tls_fail(t, ret);
        if (r == FG_TRANSPORT_AGAIN) {
            t->wpend = len;
            return total > 0 ? total : r;
        }
        if (r == 0) {
            errno = EPIPE;
            r = -1;
        }
        return total > 0 ? total : r;
    }
    return total;
}

static int tls_shutdown_write(fg_transport_t *t)
{
    if (!t->failed && !t->shut && SSL_is_init_finished(t->ssl)) {
        SSL_shutdown(t->ssl);
        t->shut = 1;
    }
    return shutdown(t->fd, SHUT_WR);
}

/* Whether the first bytes look like an HTTP request line (a method's capital letters) rather
 * than a TLS record: a ClientHello record starts with content type 22 (RFC 8446 5.1). */
static int plain_http(fg_transport_t *t)
{
    unsigned char b;
    ssize_t n = recv(t->fd, &b, 1, MSG_PEEK);
    if (n == 1)
        t->peeked = 1;
    return n == 1 && b >= 'A' && b <= 'Z';
}

static int tls_handshake(fg_transport_t *t)
{
    if (!t->peeked && plain_http(t))
        return FG_TRANSPORT_PLAINTEXT;
    errno = 0;
    int ret = SSL_do_handshake(t->ssl);
    if (ret == 1)
        return 0;
    ssize_t r = tls_fail(t, ret);
    return r == FG_TRANSPORT_AGAIN ? FG_TRANSPORT_AGAIN : -1;
}

/* Decrypted bytes, or with read-ahead received records not yet decrypted (SSL_pending counts
 * only the former): neither raises a socket event. Nor does the peer's close_notify once
 * OpenSSL has taken it in, typically in the same read(2) as the data before it while the peer
 * keeps TCP open (RFC 8446 6.1): recv must still report that end. */
static size_t tls_pending(const fg_transport_t *t)
{
    int n = SSL_pending(t->ssl);
    if (n > 0)
        return (size_t)n;
    if (SSL_has_pending(t->ssl))
        return 1;
    return (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) ? 1 : 0;
}

static void tls_close(fg_transport_t *t)
{
    if (t->ssl == NULL)
        return;
    /* A session freed without close_notify is marked not resumable (SSL_free). */
    if (!t->failed && !t->shut && SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
    SSL_free(t->ssl);
    t->ssl = NULL;
}

static const fg_transport_ops_t tls_ops = {
    .name = "tls",
    .caps = 0,
    .recv = tls_recv,
    .send_chain = tls_send_chain,
    .shutdown_write = tls_shutdown_write,
    .handshake = tls_handshake,
    .pending = tls_pending,
    .close = tls_close,
};

static void tls_setup(fg_transport_t *t, int fd, SSL *ssl)
{
    *t = (fg_transport_t){.ops = &tls_ops, .fd = fd, .ssl = ssl};
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    /* One read(2) takes a record's header and body, and whatever records follow, instead of a
     * read for each header and each body. */
    SSL_set_read_ahead(ssl, 1);
}

int fg_transport_tls_server_init(fg_transport_t *t, int fd, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return -1;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return -1;
    }
    SSL_set_accept_state(ssl);
    /* A client that closes TCP without close_notify has ended, not failed: requests are never
     * delimited by the close (RFC 9112 6.3), so no truncation can pass unnoticed. */
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    tls_setup(t, fd, ssl);
    return 0;
}

/* A client speaks first and never meets plain HTTP; a failure keeps OpenSSL's reason for the
 * error log (tls_fail clears the queue). */
static int tls_client_handshake(fg_transport_t *t)
{
    errno = 0;
    int ret = SSL_do_handshake(t->ssl);
    if (ret == 1)
        return 0;
    if (SSL_get_error(t->ssl, ret) == SSL_ERROR_SSL)
        t->err = ERR_peek_error();
    ssize_t r = tls_fail(t, ret);
    return r == FG_TRANSPORT_AGAIN ? FG_TRANSPORT_AGAIN : -1;
}

static const fg_transport_ops_t tls_client_ops = {
    .name = "tls",
    .caps = 0,
    .recv = tls_recv,
    .send_chain = tls_send_chain,
    .shutdown_write = tls_shutdown_write,
    .handshake = tls_client_handshake,
    .pending = tls_pending,
    .close = tls_close,
};

void fg_transport_tls_client_init(fg_transport_t *t, int fd, SSL *ssl)
{
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    tls_setup(t, fd, ssl);
    t->ops = &tls_client_ops;
    t->peeked = 1;
}

void fg_transport_tls_client_why(const fg_transport_t *t, int err, char *buf, size_t len)
{
    long v = t->ssl ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    if (t->ssl && (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER) && v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed (%ld: %s)", v,
                 X509_verify_cert_error_string(v));
    } else if (t->err != 0) {
        char why[200];
        ERR_error_string_n(t->err, why, sizeof(why));
        snprintf(buf, len, "SSL_do_handshake() failed (SSL: %s)", why);
    } else {
        snprintf(buf, len, "SSL_do_handshake() failed (%d: %s)", err, strerror(err));
    }
}
