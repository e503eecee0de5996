/* A stream of the HTTP/2 client as a relay end (worker/http/relay.h): after an extended
 * CONNECT the destination answered 2xx (RFC 8441 5), the stream's DATA frames carry the switched
 * protocol's bytes both ways until each side ended its sending with END_STREAM (RFC 8441 4).
 *
 * Flow control: the destination's bytes wait in the stream's input, and its window
 * (WINDOW_UPDATE) reopens only as the relay takes them, so a stream holds at most its window
 * (256 KiB) unread; the relay's bytes for the destination wait in the stream's output, sent as
 * the destination's windows allow, and the relay stops reading its client above 256 KiB there.
 *
 * Events from the session (DATA, END_STREAM, the stream's or the connection's end) reach the
 * relay from an event of the stream's own, never from inside nghttp2's callbacks or the relay's
 * operations. */
#ifndef FG_HTTP2_TUNNEL_H
#define FG_HTTP2_TUNNEL_H

#include "worker/http/relay.h"
#include "worker/upstream/http2_stream.h"

/* x (answered 2xx to its extended CONNECT, on its connection) becomes r's destination end; the
 * handler is done with it. Returns 0, or -1 when out of memory (x is then gone). */
int fg_http2_tunnel_attach(h2x_t *x, fg_relay_t *r);

/* The data source of an extended CONNECT stream (nghttp2_data_source_read_callback): the
 * relay's bytes, END_STREAM once the relay ended its sending, or once the stream left the
 * relay (its user data gone). */
ssize_t fg_http2_tunnel_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                             uint32_t *flags, nghttp2_data_source *src, void *ud);

/* From the client's nghttp2 callbacks, for a stream that is a relay end: DATA bytes arrived,
 * the destination ended its sending (END_STREAM), the stream or its connection is gone. */
void fg_http2_tunnel_data(h2x_t *x, const uint8_t *data, size_t len);
void fg_http2_tunnel_eof(h2x_t *x);
void fg_http2_tunnel_gone(h2x_t *x);

#endif
