/* The HTTP/2 client behind fg_exchange (worker/upstream/exchange.h): each exchange is a stream
 * on a multiplexed connection (RFC 9113) shared by the worker's exchanges with one destination;
 * another connection opens when the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached. h2 over
 * TLS is chosen by ALPN (RFC 9113 3.2; a destination that selects http/1.1 is spoken to by the
 * HTTP/1.1 client unless versionPolicy is RequestVersionExact), h2c by prior knowledge for
 * http:// (RFC 9113 3.3). An upgrade (rq->upgrade) goes as an RFC 8441 extended CONNECT when the
 * peer allows it (the stream then becomes a relay end, worker/upstream/http2_tunnel.h), else to
 * the HTTP/1.1 client on a connection of its own. Built on nghttp2 (the 1.52 API). */
#ifndef FG_HTTP2_CLIENT_H
#define FG_HTTP2_CLIENT_H

#include <nghttp2/nghttp2.h>

#include "worker/upstream/exchange.h"

/* fg_client_start for an HTTP/2 destination; same contract. t->fresh opens a new connection
 * (one of its own, closed after the exchange, when t->cl is NULL). */
fg_exchange_t *fg_http2_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                     const fg_exchange_cbs_t *cbs, void *arg);

/* A client session on a connection the caller opened and keeps (a tunnel's): every stream
 * started on it with fg_http2_client_start_on shares it, whatever destination names it. The
 * owner keeps the connection's callbacks and passes its reads (fg_http2_client_input) and
 * drains (fg_http2_client_drain) on; the session never reads with a timeout, never closes the
 * connection and never frees it. The owner's callbacks may not free the session: on_dead
 * (the session ended: a protocol error, a write error or the peer's GOAWAY; every stream
 * failed) and on_streams (the open streams changed) schedule what they want done. */
typedef struct fg_h2client_s fg_h2client_t;
typedef struct fg_h2client_owner_s {
    void (*on_dead)(void *arg, const char *detail);
    void (*on_streams)(void *arg, unsigned nstreams);
} fg_h2client_owner_t;
#define FG_H2CLIENT_EXTRA_MAX 4 /* request fields start_on adds after the request's own */

/* The session on fc, its preface queued and flushed. NULL when out of memory. */
fg_h2client_t *fg_http2_client_adopt(fg_worker_t *w, fg_conn_t *fc, const fg_h2client_owner_t *o,
                                     void *arg);
void fg_http2_client_input(fg_h2client_t *h);
void fg_http2_client_drain(fg_h2client_t *h);
/* The owner's connection is over: every open stream fails (FG_XERR_EOF with detail) and h is
 * freed. Not from inside the session's callbacks. */
void fg_http2_client_close(fg_h2client_t *h, const char *detail);
/* Whether a new stream may start (alive, no GOAWAY, below the peer's stream limit). */
int fg_http2_client_available(const fg_h2client_t *h);
unsigned fg_http2_client_nstreams(const fg_h2client_t *h);
/* Of those, the streams opened as a plain CONNECT (RFC 9113 8.5: relays of the "tcp" switch),
 * and the most streams the peer allows at once (its SETTINGS_MAX_CONCURRENT_STREAMS). */
unsigned fg_http2_client_nplain(const fg_h2client_t *h);
unsigned fg_http2_client_max_streams(const fg_h2client_t *h);
/* Whether the peer sent GOAWAY (RFC 9113 6.8): no new stream may go to h. */
int fg_http2_client_goaway(const fg_h2client_t *h);
/* HTTP/2 bytes received from and produced for the peer so far. */
void fg_http2_client_bytes(const fg_h2client_t *h, uint64_t *in, uint64_t *out);
/* An exchange as a new stream on h (fg_client_start's contract, already connected; t gives
 * the activity timeout), with
 * extra fields (lowercase names, at most FG_H2CLIENT_EXTRA_MAX) in place of the request's own
 * of those names (a value with a NULL base: the name is only removed).
 * NULL with errno: ENOTCONN (h ended), EAGAIN (no stream left), ENOMEM, EINVAL. */
fg_exchange_t *fg_http2_client_start_on(fg_h2client_t *h, const fg_exchange_target_t *t,
                                        const fg_exchange_req_t *rq, const fg_http_header_t *extra,
                                        size_t nextra, const fg_exchange_cbs_t *cbs, void *arg);
/* The session never reads with a timeout: the owner calls this every second or so, and each
 * stream that heard nothing from the peer for t->activity_timeout_ms fails with
 * FG_XERR_READ_TIMEOUT (and is reset), except while its handler paused it and, with
 * t->exempt_event_streams, once its response head arrived. */
void fg_http2_client_expire(fg_h2client_t *h, uint64_t now_us);

/* The request head as HTTP/2 fields (RFC 9113 8.3.1, 8.2.2): pseudo-header fields first
 * (:authority from Host), lowercase names written into names (namecap bytes), fields specific to
 * a connection dropped, TE kept only as "trailers", Content-Length re-stated from
 * content_length (>= 0). Returns the count stored in nv (cap entries), or -1 when nv or names
 * is too small. The nv point into out, scheme, names and lenbuf (24 bytes). */
int fg_http2_client_request_nv(const fg_outreq_t *out, fg_str_t scheme, int64_t content_length,
                               nghttp2_nv *nv, size_t cap, char *names, size_t namecap,
                               char *lenbuf);

/* Test and fuzz entry: an exchange whose session writes into and reads from memory instead of
 * a connection. fg_http2_client_test_feed hands it server bytes (returns what nghttp2's
 * mem_recv returned); fg_http2_client_test_output moves what the session would send into
 * out. fg_http2_client_test_free ends it (x may already be gone by then). */
typedef struct fg_h2test_s fg_h2test_t;
fg_h2test_t *fg_http2_client_test_new(const fg_exchange_req_t *rq, const fg_exchange_cbs_t *cbs,
                                      void *arg, fg_exchange_t **x);
ssize_t fg_http2_client_test_feed(fg_h2test_t *t, const uint8_t *data, size_t len);
void fg_http2_client_test_output(fg_h2test_t *t, struct evbuffer *out);
void fg_http2_client_test_free(fg_h2test_t *t);

#endif
