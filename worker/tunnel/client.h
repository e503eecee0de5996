/* The exchange for a tunnel destination ("tunnel://AGENT/SERVICE", docs/tunnels.md), behind
 * fg_client_start. When this worker holds a connection of the agent, the exchange is a new
 * stream of that tunnel's HTTP/2 client with the field fg-tunnel-service naming the service (a
 * client's own field of that name is replaced). Otherwise the registry (shm/tunnels.h) names
 * the other workers holding one, and the exchange is an HTTP/1.1 exchange over the socket of
 * the one with the fewest streams (worker/tunnel/hop.h), which sends it on. While the agent is
 * offline no exchange starts (ENOTCONN at once: the proxy fails over or answers 502 without
 * waiting). */
#ifndef FG_TUNNEL_CLIENT_H
#define FG_TUNNEL_CLIENT_H

#include "worker/upstream/exchange.h"

/* fg_client_start's contract for a destination with d->tunnel. */
fg_exchange_t *fg_tunnel_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                      const fg_exchange_cbs_t *cbs, void *arg);

#endif
