/* The exchange for a tunnel destination ("tunnel://AGENT/SERVICE", docs/tunnels.md), behind
 * fg_client_start. When this worker holds a connection of the agent, the exchange is a new
 * stream of that tunnel's HTTP/2 client with the field fg-tunnel-service naming the service (a
 * client's own field of that name is replaced). Otherwise the registry (shm/tunnels.h) names
 * the other workers holding one, and the exchange is an HTTP/1.1 exchange over the socket of
 * the one with the fewest streams (worker/tunnel/hop.h), which sends it on. While the agent is
 * offline no exchange starts (ENOTCONN at once: the proxy fails over or answers 502 without
 * waiting). A connection that is full sends the request to another worker's connection of the
 * agent, unless the request came over a hop (EAGAIN or EBUSY then, as when no other worker holds
 * one). */
#ifndef FG_TUNNEL_CLIENT_H
#define FG_TUNNEL_CLIENT_H

#include "worker/upstream/exchange.h"

/* Relays of the "tcp" switch (plain CONNECT streams) take at most (DIV - 1) / DIV of a tunnel
 * connection's streams (of the 1,000 a tunnel carries at once: 750); the rest stays for HTTP.
 * A tcp switch past it fails with EBUSY, any request on a connection with no stream free with
 * EAGAIN. */
#define FG_TUNNEL_TCP_SHARE_DIV 4

/* fg_client_start's contract for a destination with d->tunnel. */
fg_exchange_t *fg_tunnel_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                      const fg_exchange_cbs_t *cbs, void *arg);

#endif
