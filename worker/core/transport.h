/* Transports: how a connection's bytes reach its socket. Plain TCP and TLS (OpenSSL) offer the
 * same operations, so fg_conn (worker/core/conn.c) and everything above it never touch a socket
 * or know which one carries them.
 *
 * Operations report "would block" as FG_TRANSPORT_AGAIN with t->want saying which readiness
 * unblocks them: a TLS read can need writability and a TLS write readability; the caller arms
 * that event and repeats the call.
 *
 * Capabilities a transport may lack: FG_TRANSPORT_SENDFILE (sendfile(2) straight to the socket)
 * and FG_TRANSPORT_SPLICE (splice(2) to and from a pipe). TLS has neither: its bytes pass
 * through user space to be encrypted. */
#ifndef FG_TRANSPORT_H
#define FG_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct evbuffer;

enum { FG_TRANSPORT_SENDFILE = 1, FG_TRANSPORT_SPLICE = 2 };
enum { FG_TRANSPORT_WANT_READ = 1, FG_TRANSPORT_WANT_WRITE = 2 };

#define FG_TRANSPORT_AGAIN (-2)
/* handshake: the peer sent plain HTTP where a TLS ClientHello was due (nothing consumed). */
#define FG_TRANSPORT_PLAINTEXT (-3)

typedef struct fg_transport_s fg_transport_t;

typedef struct {
    const char *name;
    unsigned caps; /* FG_TRANSPORT_SENDFILE | FG_TRANSPORT_SPLICE */
    /* Append up to max bytes to in. Returns the count, 0 at the peer's orderly end, -1 with
     * errno on an error, or FG_TRANSPORT_AGAIN. */
    ssize_t (*recv)(fg_transport_t *t, struct evbuffer *in, size_t max);
    /* Write from out's chains in place (no copy) and drain what was taken. Returns the count
     * (out empty: the held bytes written, see unsent), -1 with errno, or FG_TRANSPORT_AGAIN.
     * With t->last set, the transport may end its sending in the write of out's last bytes
     * (TLS: close_notify, RFC 8446 6.1). */
    ssize_t (*send_chain)(fg_transport_t *t, struct evbuffer *out);
    /* End the sending direction (TLS: close_notify first). 0 or -1 with errno. */
    int (*shutdown_write)(fg_transport_t *t);
    /* Advance the handshake: 0 when done, FG_TRANSPORT_AGAIN, FG_TRANSPORT_PLAINTEXT, -1. */
    int (*handshake)(fg_transport_t *t);
    /* Nonzero while recv has more to report that no socket event will announce: bytes received
     * and decoded but not yet returned, or (TLS) the end: a close_notify that came with the
     * last bytes returned, which the next recv reports as 0. */
    size_t (*pending)(const fg_transport_t *t);
    /* Release the transport's state (TLS: close_notify when the session is sound, so that it
     * stays resumable); the fd stays open, it is the connection's. */
    void (*close)(fg_transport_t *t);
    /* Bytes the transport holds for sending beyond what it took from the output (a layer that
     * frames: whole frames not yet written; TLS: records gathered for one write that the
     * socket did not take); NULL when it never holds any. While nonzero, the owner calls
     * send_chain again on writability, with an empty output too. */
    size_t (*unsent)(const fg_transport_t *t);
} fg_transport_ops_t;

struct fg_transport_s {
    const fg_transport_ops_t *ops;
    int fd;
    unsigned want : 8;   /* FG_TRANSPORT_WANT_* of the last FG_TRANSPORT_AGAIN */
    unsigned peeked : 1; /* TLS server: the first byte was checked for a ClientHello */
    unsigned failed : 1; /* TLS: a fatal error, no close_notify may follow */
    unsigned shut : 1;   /* TLS: close_notify sent */
    unsigned last : 1;   /* set by the owner: nothing follows this output (see send_chain) */
    SSL *ssl;            /* TLS only */
    size_t wpend;        /* TLS: length of a write to repeat (OpenSSL needs at least as much) */
    unsigned long err;   /* TLS: OpenSSL's first error of a failed handshake, or 0 */
    void *layer;         /* a layer above another transport (WebSocket): its state */
};

void fg_transport_tcp_init(fg_transport_t *t, int fd);
/* A server-side TLS transport on fd starting on ctx (SNI may switch it). 0 or -1 (out of
 * memory). The SSL reads and writes fd directly; partial writes and moving write buffers are
 * allowed, and idle connections give their record buffers back. The TLS 1.3 tickets written
 * at the end of the handshake are sent with the first write after it, and the records of one
 * send_chain leave together, up to 64 KiB per write(2) (see unsent). */
int fg_transport_tls_server_init(fg_transport_t *t, int fd, SSL_CTX *ctx);
/* A client-side TLS transport on fd with ssl (in connect state, owned from now on); writes as
 * the server's do. */
void fg_transport_tls_client_init(fg_transport_t *t, int fd, SSL *ssl);
/* Why a handshake failed, in buf. A client's: "certificate verify failed (20: unable to get
 * local issuer certificate)"; a server's, when the client's certificate was the cause: what
 * fg_tls_clientauth_why says; either side: "SSL_do_handshake() failed (SSL: error:...)" or, for
 * a system error err, "SSL_do_handshake() failed (104: Connection reset by peer)". */
void fg_transport_tls_why(const fg_transport_t *t, int err, char *buf, size_t len);

/* The WebSocket layer (worker/core/transport_ws.c; fg_conn_push_ws is its interface for
 * owners): push it on t, taking the bytes of already (may be NULL) as received frames; queue a
 * control frame; the close code the peer sent. */
struct fg_ws_cbs_s;
enum { FG_WS_CTL_TEXT = 1, FG_WS_CTL_PING, FG_WS_CTL_CLOSE };
int fg_transport_ws_push(fg_transport_t *t, int role, const struct fg_ws_cbs_s *cbs, void *arg,
                         struct evbuffer *already);
int fg_transport_ws_control(fg_transport_t *t, int kind, uint16_t code, const void *p, size_t n);
uint16_t fg_transport_ws_peer_close(const fg_transport_t *t);
uint64_t fg_transport_ws_received(const fg_transport_t *t);

#endif
