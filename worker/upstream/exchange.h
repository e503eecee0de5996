/* One request/response exchange with a destination, whatever protocol carries it. A handler
 * (the proxy, the health prober) starts an exchange, gives it the request head and streams the
 * body; the exchange calls back with interim responses, the final head, body bytes (framing
 * already removed), the end, or a failure of a precise kind. The HTTP/1.1 client
 * (worker/upstream/http1_client.c) implements it over an fg_conn, plain or TLS; the HTTP/2
 * client (worker/upstream/http2_client.h) as a stream of a shared connection.
 *
 * Slices the exchange hands over (fields of a head, interim response or trailers) are valid
 * only during the callback that gives them: a caller that keeps them longer copies them.
 *
 * Flow control, both ways:
 *  - request body: fg_exchange_pending says how much waits to be written; on_send_ready fires
 *    when the exchange can take body bytes (after the head went out) and again each time the
 *    output drained after a wait, so a handler that paused its client resumes it there;
 *  - response body: a handler whose client is slow calls fg_exchange_pause(x, 1) (typically
 *    inside on_body) and fg_exchange_pause(x, 0) once its client drained.
 *
 * Lifetime: callbacks may end the exchange (fg_exchange_release, fg_exchange_close); the
 * exchange notices on return and touches nothing more. After on_end the handler calls
 * fg_exchange_release (connection back to the pool when reusable); after on_error,
 * fg_exchange_close. Exactly one of on_end/on_error is called, unless the handler closed the
 * exchange first. */
#ifndef FG_EXCHANGE_H
#define FG_EXCHANGE_H

#include <stdint.h>
#include "common/config.h"
#include "common/http1_parser.h"
#include "worker/core/conn.h"
#include "worker/core/context.h"
#include "worker/http/transform.h"

struct evbuffer;
typedef struct fg_exchange_s fg_exchange_t;
typedef struct fg_relay_s fg_relay_t;

/* How an exchange failed. */
typedef enum {
    FG_XERR_NONE = 0,
    FG_XERR_CONNECT,         /* connect refused or failed (err = errno) */
    FG_XERR_CONNECT_TIMEOUT, /* connect did not complete in time */
    FG_XERR_SEND_TIMEOUT,    /* the destination stopped taking the request */
    FG_XERR_READ_TIMEOUT,    /* the destination was silent for the activity timeout */
    FG_XERR_EOF,             /* closed before the response head was complete */
    FG_XERR_EOF_BODY,        /* closed before the response body's declared end */
    FG_XERR_RESET,           /* read or write error (err = errno) */
    FG_XERR_INVALID,         /* malformed or unsupported response (detail says which) */
    FG_XERR_TLS, /* TLS handshake with the destination failed (detail: OpenSSL's reason) or
                  * timed out (err = ETIMEDOUT) */
} fg_exchange_error_t;

/* Where an exchange was when something happened. */
typedef enum {
    FG_XPHASE_CONNECTING = 1,
    FG_XPHASE_WAIT_HEAD, /* request (part) sent, no final response head yet */
    FG_XPHASE_BODY,      /* final response head received */
    FG_XPHASE_DONE,
} fg_exchange_phase_t;

typedef struct {
    fg_exchange_error_t kind;
    int err; /* errno, 0 when none */
    fg_exchange_phase_t phase;
    const char *detail; /* a short text for the client's error page */
} fg_exchange_fail_t;

/* The request: the transform's output plus the body's framing facts. Content-Length and Expect
 * in headers are skipped (framing is the exchange's business, RFC 9112 6). */
typedef struct {
    const fg_outreq_t *out;
    int64_t content_length;  /* >= 0: declared length (0 too); -1 with has_body: streamed */
    struct evbuffer *replay; /* body bytes to send first (copied, not drained), or NULL */
    unsigned has_body : 1;
    /* A switch: a 101 is the final answer (then fg_exchange_take_over), or over HTTP/2, when
     * protocol is set and the destination allows extended CONNECT (RFC 8441 3), a 2xx to a
     * CONNECT with :protocol (info.extended_connect; then fg_exchange_relay_end). */
    unsigned upgrade : 1;
    fg_str_t protocol; /* with upgrade: the one protocol to switch to ("websocket"), or empty */
} fg_exchange_req_t;

/* A final response head: end-to-end fields only (hop-by-hop and framing removed, RFC 9110
 * 7.6.1), and the body's length as far as the protocol says it. */
typedef struct {
    int status;
    fg_http_header_t *headers;
    size_t num_headers;
    int64_t content_length; /* -1: unknown (streamed); with bodiless, the length of the
                             * representation a GET would have had, or -1 */
    unsigned bodiless : 1;  /* no body follows (RFC 9112 6.3 rules 1-2) */
} fg_exchange_head_t;

/* What the exchange knows about itself, for the handler's retry decisions and timings. */
typedef struct {
    fg_exchange_phase_t phase;
    unsigned reused : 1;       /* rides a pooled connection */
    unsigned got_bytes : 1;    /* any response byte arrived */
    unsigned req_sent : 1;     /* the whole request is in the output */
    unsigned write_failed : 1; /* the destination refused our bytes */
    unsigned reusable : 1;     /* the connection may carry another exchange after this one */
    uint64_t connect_us;       /* connect duration of a fresh connection, 0 when pooled */
    uint64_t sent_at_us;       /* when the head was queued */
    uint64_t first_byte_us;    /* from sent_at to the first response byte, 0 before */

    /* an upgrade sent as extended CONNECT (RFC 8441 4): a 2xx is the switch */
    unsigned extended_connect : 1;
} fg_exchange_info_t;

/* Callbacks, all with the handler's arg. Those returning int return 0, or -1 when the handler
 * could not take what it was given and ended the exchange (closed it). on_body with data NULL
 * reports readiness in raw mode (fg_exchange_raw_begin). */
typedef struct {
    void (*on_send_ready)(void *arg);
    int (*on_interim)(void *arg, int status, fg_http_header_t *headers, size_t n);
    int (*on_head)(void *arg, const fg_exchange_head_t *head);
    int (*on_body)(void *arg, struct evbuffer *data); /* takes all of data; NULL: raw ready */
    /* Response trailers, after the last on_body and before on_end (RFC 9110 6.5); NULL: the
     * handler has no use for them and the exchange discards them. */
    int (*on_trailers)(void *arg, fg_http_header_t *trailers, size_t n);
    void (*on_end)(void *arg);
    void (*on_error)(void *arg, const fg_exchange_fail_t *f);
} fg_exchange_cbs_t;

/* Where and how to connect. */
typedef struct {
    fg_worker_t *w;
    const fg_cluster_t *cl; /* with di: pooled connections; NULL: addr, pooled in pool */
    size_t di;
    const struct sockaddr *addr;
    socklen_t addrlen;
    struct fg_dest_pool_s *pool; /* with cl NULL: keep-alive connections to addr (HTTP/1.1
                                  * only, fg_upstream_pool_new); NULL: never pooled */
    int fresh;                   /* never take a pooled connection */
    int probe;                   /* with cl, di: d's health target (fg_upstream_open_probe) */
    uint64_t max_idle_us;        /* a pooled connection idle longer is not taken (0: any) */
    uint64_t connect_timeout_ms;
    uint64_t activity_timeout_ms; /* destination silence once it has the request; 0: none */
    /* a response of type text/event-stream has no activity timeout: its events may come
     * minutes apart (docs/config.md, route exemptEventStreams) */
    unsigned exempt_event_streams : 1;
    int http2; /* with cl NULL: speak HTTP/2 (h2c prior knowledge); with cl, the destination's
                * httpVersion decides */
    /* HTTP/1.1 to an HTTP/2 destination (an upgrade it cannot take as extended CONNECT): a
     * fresh TLS connection offers ALPN http/1.1 alone */
    unsigned http1_alpn : 1;
    /* a tunnel hop's request (worker/tunnel/hop.h): a full tunnel here does not send it on */
    unsigned hopped : 1;
} fg_exchange_target_t;

/* The protocol behind an exchange. */
typedef struct {
    int (*send_body)(fg_exchange_t *x, struct evbuffer *data, int end);
    int (*send_trailers)(fg_exchange_t *x, const fg_http_header_t *trailers, size_t n);
    size_t (*pending)(const fg_exchange_t *x);
    void (*pause)(fg_exchange_t *x, int paused);
    const fg_exchange_info_t *(*info)(const fg_exchange_t *x);
    int64_t (*raw_left)(const fg_exchange_t *x);
    fg_conn_t *(*raw_begin)(fg_exchange_t *x);
    void (*raw_consumed)(fg_exchange_t *x, size_t n);
    void (*release)(fg_exchange_t *x);
    void (*close)(fg_exchange_t *x);
    fg_conn_t *(*take_over)(fg_exchange_t *x, struct evbuffer *rest);
    int (*relay_end)(fg_exchange_t *x, fg_relay_t *r); /* NULL: the protocol has no such end */
} fg_exchange_vt_t;

struct fg_exchange_s {
    const fg_exchange_vt_t *vt;
};

/* An exchange is started by the destination's client (worker/upstream/client.h). */

/* Queue request body bytes (all of data is taken) and, with end, the body's end. Bytes given
 * after the destination refused the request are dropped. Returns 0, or -1 when the exchange
 * failed (on_error was called). */
static inline int fg_exchange_send_body(fg_exchange_t *x, struct evbuffer *data, int end)
{
    return x->vt->send_body(x, data, end);
}
/* End the request body with trailers (RFC 9110 6.5), in place of send_body's end; a protocol
 * or framing that cannot carry them (HTTP/1.1 with a Content-Length) drops them. Returns 0 or
 * -1 as send_body. */
static inline int fg_exchange_send_trailers(fg_exchange_t *x, const fg_http_header_t *trailers,
                                            size_t n)
{
    return x->vt->send_trailers(x, trailers, n);
}
/* Request bytes queued and not yet written. */
static inline size_t fg_exchange_pending(const fg_exchange_t *x)
{
    return x->vt->pending(x);
}
static inline void fg_exchange_pause(fg_exchange_t *x, int paused)
{
    x->vt->pause(x, paused);
}
static inline const fg_exchange_info_t *fg_exchange_info(const fg_exchange_t *x)
{
    return x->vt->info(x);
}
/* Raw relay of an identity body: the bytes left when nothing of the body is buffered and its
 * length is known, else -1. raw_begin hands the connection to the caller (it reads with
 * splice; readiness arrives as on_body(arg, NULL)); raw_consumed accounts what it moved. The
 * caller ends with fg_exchange_release once raw_left reaches 0. */
static inline int64_t fg_exchange_raw_left(const fg_exchange_t *x)
{
    return x->vt->raw_left(x);
}
static inline fg_conn_t *fg_exchange_raw_begin(fg_exchange_t *x)
{
    return x->vt->raw_begin(x);
}
static inline void fg_exchange_raw_consumed(fg_exchange_t *x, size_t n)
{
    x->vt->raw_consumed(x, n);
}
/* End a complete exchange: the connection goes back to its pool when the protocol allows
 * reuse (RFC 9112 9.3), else it is closed. x is gone. */
static inline void fg_exchange_release(fg_exchange_t *x)
{
    x->vt->release(x);
}
/* Abandon the exchange and close its connection. x is gone. */
static inline void fg_exchange_close(fg_exchange_t *x)
{
    x->vt->close(x);
}
/* An upgrade (rq->upgrade and a 101, typically from inside on_head): the connection, with the
 * bytes already read after the response head moved into rest. x is gone; the caller owns the
 * connection, which neither reads nor reports until the caller sets its callbacks. */
static inline fg_conn_t *fg_exchange_take_over(fg_exchange_t *x, struct evbuffer *rest)
{
    return x->vt->take_over(x, rest);
}

/* An upgrade answered on a stream (info.extended_connect and a 2xx, RFC 8441 5, typically from
 * inside on_head): the stream becomes relay r's destination end (fg_relay_attach_end), its DATA
 * the relay's bytes both ways. x is gone either way. Returns 0, or -1 when the stream is no
 * longer usable. */
static inline int fg_exchange_relay_end(fg_exchange_t *x, fg_relay_t *r)
{
    if (x->vt->relay_end == NULL) {
        x->vt->close(x);
        return -1;
    }
    return x->vt->relay_end(x, r);
}

#endif
