/* HTTP/1.1 server side of a client connection (RFC 9112): parses requests with
 * common/http1_parser, fills the protocol-neutral fg_request_t, dispatches it to its route's
 * handler and frames the response. One request at a time per connection; pipelined requests
 * wait in the input buffer until the previous response is finished, and are not parsed (nor
 * more bytes read) while more than 64 KiB of answers, or a file, wait to be sent. */
#ifndef FG_HTTP1_H
#define FG_HTTP1_H

#include <sys/socket.h>
#include "common/config.h"
#include "worker/core/frontend.h"

typedef struct fg_http1_conn_s fg_http1_conn_t;

/* Take an accepted socket. Returns 0, or -1 (the caller closes fd). */
int fg_http1_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                    const struct sockaddr_storage *peer, socklen_t len);

struct fg_conn_s;
/* The client sent plain HTTP to a TLS port: answer its first request 400 and close. */
#define FG_HTTP1_PLAIN_ON_TLS 1
/* Take a connection whose transport is ready (a finished TLS handshake, or plain TCP with
 * FG_HTTP1_PLAIN_ON_TLS). Returns 0, or -1 (the caller frees c). */
int fg_http1_adopt(fg_worker_t *w, const fg_server_t *srv, struct fg_conn_s *c,
                   const struct sockaddr_storage *peer, int flags);
/* The HTTP/1.1 front end: start is fg_http1_accept. */
extern const fg_frontend_t fg_http1_frontend;

#endif
