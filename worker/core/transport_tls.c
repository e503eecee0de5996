/* The TLS transport: OpenSSL on the non-blocking socket (a socket BIO of our own on the fd,
 * which lets a server's tickets leave with its first response). Reads decrypt
 * straight into reserved evbuffer space and writes encrypt straight from the output's chains
 * (evbuffer_peek): body chains of about 16 KiB (reads from a destination, file pieces) become
 * full records (RFC 8446 5.1: 16 KiB at most) without a copy. Small chains (a response head,
 * chunk-size lines) are gathered with what follows into one record instead of each making a
 * record of a few bytes. The records of one send_chain leave in writes of up to 64 KiB, not a
 * write(2) each (the socket BIO below). */
#include "worker/core/transport.h"

#include "common/tls_clientauth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/bio.h>
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

/* ---- the socket BIO ----
 * A socket BIO that can hold writes back, for two reasons.
 * - OpenSSL flushes after each TLS 1.3 NewSessionTicket (RFC 8446 4.6.1), so with a plain
 *   socket BIO every ticket is a write(2) of its own, and a segment and a wake-up for the
 *   client, just before the first response is written anyway. While `hold` is set, writes are
 *   kept (up to HOLD_MAX) and flushes ignored; the next write that is not held sends them
 *   first, in one writev(2) with its own bytes. The tickets of a handshake thus leave with the
 *   first response, which RFC 8446 4.6.1 allows ("at any time after the server has received
 *   the client Finished").
 * - SSL_write writes each record (16 KiB at most, RFC 8446 5.1) on its own: a bulk transfer
 *   would make a write(2), and on the other side a wake-up and a read(2), per 16 KiB. While
 *   `batch` is set (tls_send_chain), records are gathered up to BATCH_MAX and sent by the
 *   writev(2) of the record that does not fit, or at the end of the call. What the socket
 *   did not take stays held (tls_unsent reports it; the next send_chain sends it first):
 *   OpenSSL counts those records as written. */
#define HOLD_MAX 4096
#define BATCH_MAX (64 * 1024)

typedef struct {
    int fd;
    unsigned hold : 1;
    unsigned batch : 1;
    unsigned eof : 1;
    /* What is held is what the handshake's last step wrote (its tickets), kept for the first
     * write: not reported as unsent, or the owner would arm writability to send it alone. */
    unsigned deferred : 1;
    /* A read while hold is set came back short: the socket had no more. Within that
     * handshake step the client cannot have sent more (it waits for the flight still held), so
     * a further read would meet EAGAIN: it is answered so without the read(2). Bytes that did
     * arrive meanwhile raise the (level-triggered) read event for the next step. */
    unsigned drained : 1;
    size_t len;         /* bytes held */
    size_t cap;         /* size of buf */
    unsigned char *buf; /* cap bytes while some are held, else NULL */
} hold_bio_t;

/* Send what is held. 1 when nothing is left, 0 when the socket is full (retry flag set), -1. */
static int hold_flush(BIO *b, hold_bio_t *h)
{
    while (h->len > 0) {
        ssize_t n = write(h->fd, h->buf, h->len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                BIO_set_retry_write(b);
                return 0;
            }
            return -1;
        }
        memmove(h->buf, h->buf + n, h->len - (size_t)n);
        h->len -= (size_t)n;
    }
    free(h->buf);
    h->buf = NULL;
    h->cap = 0;
    return 1;
}

/* Keep n bytes of data after the held ones, within max. 1 when kept, 0 when they do not fit,
 * -1 out of memory. */
static int hold_keep(hold_bio_t *h, const char *data, size_t n, size_t max)
{
    if (h->len + n > max)
        return 0;
    if (h->len + n > h->cap) {
        unsigned char *nb = realloc(h->buf, max);
        if (nb == NULL)
            return -1;
        h->buf = nb;
        h->cap = max;
    }
    memcpy(h->buf + h->len, data, n);
    h->len += n;
    return 1;
}

static int hold_write(BIO *b, const char *data, int dlen)
{
    hold_bio_t *h = BIO_get_data(b);
    size_t n = (size_t)dlen;
    BIO_clear_retry_flags(b);
    if (h->hold || h->batch) {
        int k = hold_keep(h, data, n, h->batch ? BATCH_MAX : HOLD_MAX);
        if (k != 0)
            return k > 0 ? dlen : -1;
    }
    ssize_t w;
    if (h->len == 0) {
        w = write(h->fd, data, n);
    } else {
        struct iovec iov[2] = {{h->buf, h->len}, {(void *)data, n}};
        w = writev(h->fd, iov, 2);
        if (w >= 0 && (size_t)w < h->len) {
            memmove(h->buf, h->buf + w, h->len - (size_t)w);
            h->len -= (size_t)w;
            errno = EAGAIN; /* the caller repeats this write later, as after EAGAIN */
            w = -1;
        } else if (w >= 0) {
            w -= (ssize_t)h->len;
            h->len = 0;
            free(h->buf);
            h->buf = NULL;
            h->cap = 0;
            if (w == 0) {
                errno = EAGAIN;
                w = -1;
            }
        }
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return w < 0 ? -1 : (int)w;
}

static int hold_read(BIO *b, char *out, int outl)
{
    hold_bio_t *h = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (h->hold && h->drained) {
        BIO_set_retry_read(b);
        errno = EAGAIN;
        return -1;
    }
    ssize_t n = read(h->fd, out, (size_t)outl);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    else if (n == 0)
        h->eof = 1; /* BIO_eof: SSL_OP_IGNORE_UNEXPECTED_EOF tells an end from an error by it */
    else if (n > 0 && n < outl)
        h->drained = h->hold;
    return (int)n;
}

static long hold_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    hold_bio_t *h = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return h->hold || h->batch ? 1 : hold_flush(b, h);
    case BIO_CTRL_EOF:
        return h->eof;
    case BIO_CTRL_WPENDING:
        return (long)h->len;
    case BIO_C_GET_FD:
        if (ptr != NULL)
            *(int *)ptr = h->fd;
        return h->fd;
    default:
        return 0;
    }
}

static int hold_destroy(BIO *b)
{
    hold_bio_t *h = BIO_get_data(b);
    if (h != NULL) {
        free(h->buf);
        free(h);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static BIO *hold_bio_new(int fd)
{
    static BIO_METHOD *method; /* one per process, for its lifetime */
    if (method == NULL) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fg socket");
        if (m == NULL || !BIO_meth_set_write(m, hold_write) || !BIO_meth_set_read(m, hold_read) ||
            !BIO_meth_set_ctrl(m, hold_ctrl) || !BIO_meth_set_destroy(m, hold_destroy)) {
            BIO_meth_free(m);
            return NULL;
        }
        method = m;
    }
    hold_bio_t *h = calloc(1, sizeof(*h));
    BIO *b = h ? BIO_new(method) : NULL;
    if (b == NULL) {
        free(h);
        return NULL;
    }
    h->fd = fd;
    BIO_set_data(b, h);
    BIO_set_init(b, 1);
    return b;
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

/* SSL_write the output's bytes, record by record, until it is empty or the socket is full. */
static ssize_t send_records(fg_transport_t *t, struct evbuffer *out)
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

/* The output's records, after what the BIO holds (a handshake's tickets join the first
 * record's writev; records a full socket left are sent first). A call with more than one
 * record's worth gathers them (batch) and sends them in as few writes as BATCH_MAX allows.
 * Returns the bytes taken from out or, when out is empty, the held bytes written. */
static ssize_t tls_send_chain(fg_transport_t *t, struct evbuffer *out)
{
    BIO *b = SSL_get_wbio(t->ssl);
    hold_bio_t *h = b != NULL ? BIO_get_data(b) : NULL;
    if (h == NULL)
        return send_records(t, out); /* no BIO: the SSL reports it */
    h->deferred = 0; /* from here on, what stays held is what the socket did not take */
    if (evbuffer_get_length(out) == 0) {
        ssize_t held = (ssize_t)h->len;
        int f = hold_flush(b, h);
        if (f == 0)
            t->want = FG_TRANSPORT_WANT_WRITE;
        if (f < 0)
            t->failed = 1;
        return f == 1 ? held : f == 0 ? FG_TRANSPORT_AGAIN : -1;
    }
    h->batch = evbuffer_get_length(out) > TLS_RECORD_MAX || t->last;
    ssize_t total = send_records(t, out);
    /* The last output: close_notify (RFC 8446 6.1) joins its records in the write below. */
    if (t->last && total != FG_TRANSPORT_AGAIN && evbuffer_get_length(out) == 0 && !t->failed &&
        !t->shut && SSL_is_init_finished(t->ssl)) {
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        t->shut = 1;
    }
    h->batch = 0;
    /* What the batch kept leaves now; what the socket does not take stays held (unsent). */
    if (h->len > 0 && total != FG_TRANSPORT_AGAIN && hold_flush(b, h) < 0) {
        t->failed = 1;
        return -1;
    }
    return total;
}

/* Encrypted bytes the BIO holds: the output they came from is drained already. */
static size_t tls_unsent(const fg_transport_t *t)
{
    BIO *b = t->ssl != NULL ? SSL_get_wbio(t->ssl) : NULL;
    const hold_bio_t *h = b != NULL ? BIO_get_data(b) : NULL;
    return h != NULL && !h->deferred ? h->len : 0;
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
 * than a TLS record: a ClientHello record starts with content type 22 (RFC 8446 5.1). Returns
 * 1 (plain), 0 (TLS, or an end or error for the handshake to report) or -1 (nothing yet). */
static int plain_http(fg_transport_t *t)
{
    unsigned char b;
    ssize_t n = recv(t->fd, &b, 1, MSG_PEEK);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return -1;
    if (n == 1)
        t->peeked = 1;
    return n == 1 && b >= 'A' && b <= 'Z';
}

/* The server's handshake holds its writes back: a flight that ends in a wait for the client
 * (or any TLS 1.2 flight, which the client needs before it sends) is sent at once; what the
 * step that completes a TLS 1.3 handshake wrote (its tickets) waits for the first write. */
static int tls_handshake(fg_transport_t *t)
{
    int plain = t->peeked ? 0 : plain_http(t);
    if (plain > 0)
        return FG_TRANSPORT_PLAINTEXT;
    if (plain < 0) {
        /* A silent client (the listener's TCP_DEFER_ACCEPT gave up waiting for its bytes):
         * OpenSSL's handshake and record buffers, about 33 KiB, wait for its first byte. */
        t->want = FG_TRANSPORT_WANT_READ;
        return FG_TRANSPORT_AGAIN;
    }
    BIO *b = SSL_get_wbio(t->ssl);
    hold_bio_t *h = BIO_get_data(b);
    errno = 0;
    int ret = 1;
    if (!SSL_is_init_finished(t->ssl)) {
        h->hold = 1;
        h->drained = 0;
        ret = SSL_do_handshake(t->ssl);
        h->hold = 0;
        if (ret != 1 && SSL_get_error(t->ssl, ret) == SSL_ERROR_SSL)
            t->err = ERR_peek_error(); /* for the error log (fg_transport_tls_why) */
    }
    if (ret == 1 && SSL_version(t->ssl) == TLS1_3_VERSION) {
        h->deferred = h->len > 0;
        return 0;
    }
    int f = hold_flush(b, h); /* after a failure too: the alert that tells the client why */
    if (f < 0) {
        t->failed = 1;
        return -1;
    }
    if (ret == 1 || f == 0) {
        t->want = FG_TRANSPORT_WANT_WRITE;
        return f == 1 ? 0 : FG_TRANSPORT_AGAIN;
    }
    ssize_t r = tls_fail(t, ret);
    if (r == 0)
        errno = ECONNRESET; /* the client's stream ended before the handshake did */
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
    .unsent = tls_unsent,
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
    BIO *b = hold_bio_new(fd);
    if (b == NULL) {
        SSL_free(ssl);
        return -1;
    }
    SSL_set_bio(ssl, b, b);
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
    .unsent = tls_unsent,
};

/* Without memory for the BIO the SSL has none, and its handshake fails (BIO not set). */
void fg_transport_tls_client_init(fg_transport_t *t, int fd, SSL *ssl)
{
    BIO *b = hold_bio_new(fd);
    if (b != NULL)
        SSL_set_bio(ssl, b, b);
    SSL_set_connect_state(ssl);
    tls_setup(t, fd, ssl);
    t->ops = &tls_client_ops;
    t->peeked = 1;
}

void fg_transport_tls_why(const fg_transport_t *t, int err, char *buf, size_t len)
{
    long v = t->ssl ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    if (t->ssl && SSL_is_server(t->ssl) && fg_tls_clientauth_why(t->ssl, t->err, buf, len)) {
        return;
    } else if (t->ssl && (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER) && v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed (%ld: %s)", v,
                 X509_verify_cert_error_string(v));
    } else if (t->err == 0 && (err == ECONNRESET || err == EPIPE)) {
        snprintf(buf, len, "the peer closed the connection before the handshake ended");
    } else if (t->err != 0) {
        char why[200];
        ERR_error_string_n(t->err, why, sizeof(why));
        snprintf(buf, len, "SSL_do_handshake() failed (SSL: %s)", why);
    } else {
        snprintf(buf, len, "SSL_do_handshake() failed (%d: %s)", err, strerror(err));
    }
}
