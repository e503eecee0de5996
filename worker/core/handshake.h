/* TLS termination at accept: an accepted socket of a TLS server runs its handshake on the
 * worker's loop (within the server's tls.handshakeTimeout), then goes to the front end that
 * ALPN chose. A client that sends plain HTTP instead gets the HTTP/1.1 front end in its
 * "plain HTTP on a TLS port" mode, which answers 400 and closes. */
#ifndef FG_HANDSHAKE_H
#define FG_HANDSHAKE_H

#include <sys/socket.h>

#include "common/config.h"
#include "worker/core/context.h"

/* Take an accepted socket of a server with TLS. data_ready: the listener defers accepts until
 * the client's first bytes (TCP_DEFER_ACCEPT), so the handshake starts in this loop turn rather
 * than at the next readiness event. Returns 0, or -1 (the caller closes fd). */
int fg_handshake_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                        const struct sockaddr_storage *peer, int data_ready);

#endif
