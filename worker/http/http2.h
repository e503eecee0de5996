/* HTTP/2 server side of a client connection (RFC 9113), on nghttp2: reached by ALPN "h2" on
 * TLS servers and by prior knowledge (the connection preface) on plaintext servers with
 * "http2": {"h2c": true}. Every stream becomes one fg_request_t with its own pool, dispatched
 * like an HTTP/1.1 request (worker/http/dispatch.c); the handlers answer through the same
 * fg_req_ops_t. Flow control is per stream: a handler's output waits in its stream's queue
 * (ops->pending) and the connection's output is produced only while the transport holds less
 * than a bound, so a slow stream never stalls the others. docs/http2.md has the settings,
 * limits and mitigations. */
#ifndef FG_HTTP2_H
#define FG_HTTP2_H

#include <sys/socket.h>

#include "common/config.h"
#include "worker/core/frontend.h"

struct fg_conn_s;

/* The peer is authenticated and speaks for many clients (the gateway at the end of a tunnel):
 * no flood budget for control frames and no bound on stream resets, which it sends whenever
 * one of its clients goes away. The other limits stay. */
#define FG_HTTP2_TRUSTED 1

/* Take a connection whose transport is ready and negotiated h2 (flags: 0 or
 * FG_HTTP2_TRUSTED). Returns 0, or -1 (the caller frees c). */
int fg_http2_adopt(fg_worker_t *w, const fg_server_t *srv, struct fg_conn_s *c,
                   const struct sockaddr_storage *peer, int flags);

/* The HTTP/2 front end (start takes an accepted plaintext socket that sent the preface). */
extern const fg_frontend_t fg_http2_frontend;

#endif
