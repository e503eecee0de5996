/* The accept path of a server with "proxyProtocol": before anything else, each connection's
 * PROXY protocol header (common/proxy_protocol.h) is read, exactly to its end, and the client it
 * names replaces the socket's peer for the rest of the connection's life. A connection waiting
 * for its header is a session of the "proxy" front end: bounded in number per worker (the
 * oldest is closed past FG_PROXY_HEADER_PENDING_MAX) and in time (the server's
 * proxyProtocol.timeout from the accept). */
#ifndef FG_PROXY_HEADER_H
#define FG_PROXY_HEADER_H

#include <sys/socket.h>

#include "common/config.h"
#include "worker/core/context.h"
#include "worker/core/frontend.h"

#define FG_PROXY_HEADER_PENDING_MAX 1024

/* What runs once the header is read: the rest of the accept path for a connection from peer
 * (the client the header names, or the socket's peer for a LOCAL or UNKNOWN header).
 * data_ready: bytes after the header have arrived. Returns 0, or -1 (the callee did not take
 * fd, which is closed). */
typedef int (*fg_proxy_header_next_fn)(fg_worker_t *w, const fg_server_t *srv, int fd,
                                       const struct sockaddr_storage *peer, socklen_t len,
                                       int data_ready);

/* Take an accepted socket of srv (proxy_protocol enabled). data_ready: the first bytes may have
 * arrived (TCP_DEFER_ACCEPT), so the header is looked for at once. A peer outside
 * proxyProtocol.trustedPeers, a malformed header, a close or the timeout close the connection
 * and log why (info). Returns 0 (fd is taken), or -1 (the caller closes fd). */
int fg_proxy_header_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                           const struct sockaddr_storage *peer, socklen_t len, int data_ready,
                           fg_proxy_header_next_fn next);

extern const fg_frontend_t fg_proxy_header_frontend;

#endif
