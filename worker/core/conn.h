/* The connection layer: one non-blocking socket with an input and an output evbuffer, read and
 * write events on the worker's loop, and idle timeouts. The protocol sessions (HTTP/1.1 client
 * side, upstream side) sit on top and never touch the socket. Reads happen when the socket is
 * readable; writes are attempted at once by fg_conn_flush and fall back to a write event only
 * when the kernel buffer is full, so a small response costs one write(2) and no epoll change.
 * A file can follow the output (sendfile, one at a time). An idle owner can give back the
 * empty buffers and the write event (fg_conn_release).
 * The bytes pass through a transport (worker/core/transport.h): plain TCP, or TLS after
 * fg_conn_start_tls and fg_conn_handshake. No socket leaves this layer: addresses, half-close
 * and zero-copy moves (splice, a capability TLS lacks) are functions of the conn. */
#ifndef FG_CONN_H
#define FG_CONN_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "common/tls.h"

struct event_base;
struct evbuffer;
typedef struct fg_conn_s fg_conn_t;

enum {
    FG_CONN_EOF = 1,   /* peer closed its side */
    FG_CONN_ERROR = 2, /* read/write/connect error; errno in fg_conn_errno */
    FG_CONN_TIMEOUT_READ = 3,
    FG_CONN_TIMEOUT_WRITE = 4,
    FG_CONN_CONNECTED = 5,      /* an outgoing connect completed */
    FG_CONN_HANDSHAKE_DONE = 6, /* fg_conn_handshake finished; reading is still on */
    /* fg_conn_handshake met a plain HTTP request instead of a ClientHello: the conn is plain
     * TCP from now on, the request unread, reading off. */
    FG_CONN_PLAINTEXT = 7,
    /* the client handshake after a connect (fg_conn_start_tls_client) failed: fg_conn_errno
     * (ETIMEDOUT when it ran out of time) and fg_conn_tls_error say why; reading is off. */
    FG_CONN_TLS_FAILED = 8,
};

typedef struct {
    void (*on_read)(fg_conn_t *c, void *arg);  /* new bytes in fg_conn_input */
    void (*on_drain)(fg_conn_t *c, void *arg); /* output fell to the low watermark after a wait */
    void (*on_event)(fg_conn_t *c, void *arg, int what);
} fg_conn_cbs_t;

/* Wrap an accepted or connecting socket (non-blocking). NULL on allocation failure (the fd is
 * then still the caller's). */
fg_conn_t *fg_conn_new(struct event_base *base, int fd, const fg_conn_cbs_t *cbs, void *arg);
/* Close the socket and free everything. Safe to call from the conn's own callbacks. */
void fg_conn_free(fg_conn_t *c);
void fg_conn_set_cbs(fg_conn_t *c, const fg_conn_cbs_t *cbs, void *arg);
/* fn(arg) runs once when c is freed, after its socket is closed: what the connection holds
 * outside the conn (its places under the connection caps, worker/core/connlimit.h) lives
 * exactly as long as the socket, whichever owner frees it. One per conn; a later call
 * replaces it. */
void fg_conn_on_free(fg_conn_t *c, void (*fn)(void *arg), void *arg);
/* Free the input and output buffers while they are empty, and the write event while no
 * write waits (an idle keep-alive connection). They are allocated again before the next
 * callback: fg_conn_input/fg_conn_output/fg_conn_flush/fg_conn_want_write are valid inside
 * every callback, and outside one only if fg_conn_release was not called since the last. */
void fg_conn_release(fg_conn_t *c);

/* Buffers and write events released by the connections of one worker, kept (up to a bound)
 * for the next ones, so that keep-alive traffic does not free and allocate them per request. */
typedef struct fg_conn_spares_s fg_conn_spares_t;
fg_conn_spares_t *fg_conn_spares_new(void);
void fg_conn_spares_free(fg_conn_spares_t *sp);
/* fg_conn_release gives to sp and the next callback takes from it; sp outlives c. */
void fg_conn_set_spares(fg_conn_t *c, fg_conn_spares_t *sp);

/* Start an outgoing connect; FG_CONN_CONNECTED or FG_CONN_ERROR/TIMEOUT_WRITE follow.
 * Returns 0 or -errno for an immediate failure. */
int fg_conn_connect(fg_conn_t *c, const struct sockaddr *sa, socklen_t len, uint64_t timeout_ms);

struct evbuffer *fg_conn_input(fg_conn_t *c);
/* Where the next output bytes go: while a file is being sent, a buffer that follows it. */
struct evbuffer *fg_conn_output(fg_conn_t *c);
/* Queue len bytes of fd from off after the output queued so far; the conn owns fd from now on
 * (closed when sent or on free, and on failure). One file at a time: -EBUSY while one is being
 * sent; -ENOMEM. The bytes go out with sendfile(2), or with pread + write, 16 KiB at a time,
 * when the transport cannot take sendfile (fg_conn_set_sendfile). */
int fg_conn_send_file(fg_conn_t *c, int fd, off_t off, off_t len);
/* Whether a file is still being sent. */
int fg_conn_sending_file(const fg_conn_t *c);
/* Transport capability: 1 (default, plain TCP) sends files with sendfile(2); 0 reads them
 * into the output in small pieces (a transport that encrypts, such as TLS). */
void fg_conn_set_sendfile(fg_conn_t *c, int on);
int fg_conn_errno(const fg_conn_t *c);

/* Enable or disable reading. timeout_ms 0 = no read timeout; otherwise it runs from this call
 * and restarts on every read. */
void fg_conn_read(fg_conn_t *c, int enable, uint64_t timeout_ms);
/* Write as much of the output as the kernel takes now; the rest goes out when writable.
 * Returns 0, or -1 on a write error (on_event is not called for it). */
int fg_conn_flush(fg_conn_t *c);
void fg_conn_set_write_timeout(fg_conn_t *c, uint64_t timeout_ms);
/* The owner queues nothing after what is queued now (output, file and what follows it): the
 * transport may end its sending in the same write as the last bytes (TLS: the close_notify
 * alert, RFC 8446 6.1), so that closing costs no write of its own. */
void fg_conn_last_output(fg_conn_t *c);
/* on_drain fires when pending output falls to `low` bytes (after a flush that left more). */
void fg_conn_set_low_watermark(fg_conn_t *c, size_t low);
/* Bytes read per readable event at most (default 64 KiB). */
void fg_conn_set_read_max(fg_conn_t *c, size_t max);
/* Bytes queued and not yet written: output, the rest of the file, and what follows it. */
size_t fg_conn_pending(const fg_conn_t *c);
/* Whether the conn is still waiting for writability. */
int fg_conn_writing(const fg_conn_t *c);
/* Raw mode: on_read reports readiness without reading, for an owner that moves bytes with
 * splice(2). The read timer still applies. */
void fg_conn_set_raw(fg_conn_t *c, int raw);
/* Arm the write event even with empty output: on_drain fires once the socket is writable. */
void fg_conn_want_write(fg_conn_t *c);

/* Put the accepted connection on a server-side TLS transport starting on ctx; sendfile and
 * splice are off from now on. 0 or -ENOMEM (the conn stays plain). */
int fg_conn_start_tls(fg_conn_t *c, SSL_CTX *ctx);
/* Put an outgoing connection on a client TLS transport with ssl (connect state; owned from now
 * on), before the loop completes its fg_conn_connect: once connected, the handshake runs within
 * timeout_ms, and FG_CONN_CONNECTED follows it (reading off, as after a plain connect), or
 * FG_CONN_TLS_FAILED. sendfile and splice are off. */
void fg_conn_start_tls_client(fg_conn_t *c, SSL *ssl, uint64_t timeout_ms);
/* After FG_CONN_TLS_FAILED: OpenSSL's reason ("certificate verify failed (20: ...)"), valid
 * until the conn is freed; "" before. */
const char *fg_conn_tls_error(const fg_conn_t *c);
/* After a server handshake ended in FG_CONN_ERROR: why, in buf (fg_transport_tls_why). */
void fg_conn_tls_why(const fg_conn_t *c, char *buf, size_t len);
/* Run the transport's handshake on the loop: on_event gets FG_CONN_HANDSHAKE_DONE,
 * FG_CONN_PLAINTEXT, FG_CONN_ERROR or FG_CONN_TIMEOUT_READ (timeout_ms from this call). The
 * first step waits for the socket to turn readable, or with data_ready (the peer's first bytes
 * are known to be there) runs in this loop turn. */
void fg_conn_handshake(fg_conn_t *c, uint64_t timeout_ms, int data_ready);
/* The TLS session, or NULL on plain TCP. */
SSL *fg_conn_ssl(const fg_conn_t *c);
/* The protocol ALPN settled; FG_TLS_ALPN_NONE on plain TCP. */
fg_tls_alpn_t fg_conn_alpn(const fg_conn_t *c);
/* End our sending direction (TLS: close_notify, then the TCP FIN). 0 or -errno. */
int fg_conn_shutdown_write(fg_conn_t *c);
/* The local and the peer's socket address. 0 or -errno. */
int fg_conn_local_addr(const fg_conn_t *c, struct sockaddr_storage *ss, socklen_t *len);
/* The local address as text in ip and its port (Forwarded "by"): 0, or -1. */
int fg_conn_local_addr_text(const fg_conn_t *c, char *ip, size_t iplen, uint16_t *port);
int fg_conn_peer_addr(const fg_conn_t *c, struct sockaddr_storage *ss, socklen_t *len);
/* Zero-copy moves through a pipe, for raw mode: from c's socket into pipe_wr, and from pipe_rd
 * to c's socket. They return the bytes moved, 0 (splice_in: the peer closed), -EAGAIN, another
 * -errno, or -ENOTSUP when c's transport cannot splice (fg_conn_can_splice is 0: TLS). */
int fg_conn_can_splice(const fg_conn_t *c);
ssize_t fg_conn_splice_in(fg_conn_t *c, int pipe_wr, size_t len);
ssize_t fg_conn_splice_out(fg_conn_t *c, int pipe_rd, size_t len);
/* Plain moves for raw mode: one recv(2) from c's socket into buf, one send(2) of buf to it
 * (small messages cost less this way than through a pipe). Same returns as the splice pair. */
ssize_t fg_conn_recv_raw(fg_conn_t *c, void *buf, size_t len);
ssize_t fg_conn_send_raw(fg_conn_t *c, const void *buf, size_t len);
/* Whether the transport holds what the next read takes without a socket event: bytes it
 * decoded, or the peer's end (a TLS close_notify that came with the last bytes read). A
 * connection in that state has more to say than its input shows. */
int fg_conn_input_waiting(const fg_conn_t *c);
/* Read what the socket holds now into the input, whatever the read settings (an answer
 * waiting behind a failed write). Returns the bytes added. */
size_t fg_conn_read_now(fg_conn_t *c);

#endif
