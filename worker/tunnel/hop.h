/* The hop between workers (docs/tunnels.md, "Workers"): an agent's tunnel lands on one
 * worker, and a request for it may arrive on any. Each worker with tunnels configured listens
 * on a private Unix socket (abstract namespace, "fastgateway-hop-PID", connections from other
 * users refused by their credentials, SO_PEERCRED) served by the HTTP/1.1 front end. A worker
 * that does not hold the agent sends the request, as the proxy built it, there as an ordinary
 * HTTP/1.1 exchange with the field fg-tunnel-hop naming the agent and the service; the holder
 * takes it as a request for that tunnel destination (no route matches there, no admission
 * runs again, no X-Forwarded is added twice) and sends it down the tunnel. A retiring worker
 * keeps its socket until it exits, which its tunnels delay until their agents moved. */
#ifndef FG_TUNNEL_HOP_H
#define FG_TUNNEL_HOP_H

#include "worker/core/frontend.h"
#include "worker/http/request.h"
#include "worker/upstream/exchange.h"

#define FG_TUNNEL_HOP_FIELD "fg-tunnel-hop"
/* On the holder's 503 to a hop request that found the agent's tunnel without a stream for it:
 * "tcp" (tcp relays hold their share) or "streams" (every stream open), so the worker that sent
 * it logs the cause (worker/tunnel/client.h). The proxy never passes it to a client. */
#define FG_TUNNEL_FULL_FIELD "fg-tunnel-full"

/* Open this worker's hop socket (when tunnels are configured), its connections served by fe
 * (the HTTP/1.1 front end). 0, or -1 with errno. */
int fg_tunnel_hop_listen(fg_worker_t *w, const fg_frontend_t *fe);
void fg_tunnel_hop_close(fg_worker_t *w);
/* One of this worker's tunnel connections left the registry: other workers may have chosen
 * this worker as its holder an instant before and have a request on the way. A retiring
 * worker keeps its hop socket open and serves them (over the agent's other connections) for
 * FG_TUNNEL_HOP_LINGER_MS more before it exits. */
#define FG_TUNNEL_HOP_LINGER_MS 500
void fg_tunnel_hop_linger(fg_worker_t *w);
/* fg_client_start for a tunnel destination whose agent worker pid holds. */
fg_exchange_t *fg_tunnel_hop_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                   int pid, const fg_exchange_cbs_t *cbs, void *arg);
/* A request on the hop socket: its route (the tunnel destination the field names), or -1
 * after answering it (400 without the field, 502 for a destination this worker lacks). */
int fg_tunnel_hop_route(fg_request_t *req);

#endif
