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
