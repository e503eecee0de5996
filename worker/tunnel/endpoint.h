/* The tunnel endpoint (docs/tunnels.md): the path on servers with acceptTunnels where agents
 * connect. A request there never reaches a route: an agent's WebSocket upgrade (RFC 6455 4.2,
 * subprotocol FG_TUNNEL_SUBPROTOCOL) is answered 101 and its connection becomes a tunnel
 * session (worker/tunnel/session.h); anything else is refused. Then the handshake
 * (common/tunnel_proto.h): the session sends CHALLENGE, the agent answers AUTH, the endpoint
 * checks the id and the proof (constant time) and either authenticates the session or closes
 * it with 1008. Failures are logged with the client address and the id named (never the
 * proof) and counted per client address across workers (shm/tunnels.h): past
 * authFailuresPerMinute, the upgrade itself is refused with 429. */
#ifndef FG_TUNNEL_ENDPOINT_H
#define FG_TUNNEL_ENDPOINT_H

#include <stddef.h>

#include "common/str.h"
#include "common/tunnel_proto.h"
#include "worker/core/conn.h"
#include "worker/http/request.h"

/* Whether path is the tunnel path of srv (a server with acceptTunnels). */
int fg_tunnel_endpoint_match(const fg_config_t *cfg, const fg_server_t *srv, fg_str_t path);
/* Check an HTTP/1.1 request on the tunnel path: 0 when it is an agent's upgrade that may
 * go on, else -1 after answering it (400, 426, 429). */
int fg_tunnel_endpoint_check(fg_request_t *req);
/* Answer req's upgrade with 101 on c and make c a tunnel session (c is taken, whatever
 * happens). 0, or -1 (c freed). */
int fg_tunnel_endpoint_accept(fg_request_t *req, fg_conn_t *c);

enum { FG_TUNNEL_UNKNOWN_AGENT = -1, FG_TUNNEL_WRONG_PROOF = -2 };

/* Check an AUTH message m against cfg's agents for the connection's nonce: 0 (the proof is
 * right), FG_TUNNEL_UNKNOWN_AGENT or FG_TUNNEL_WRONG_PROOF; *agent: the id's index in
 * cfg->tunnels.agents, or -1. Both failures cost one HMAC and one constant-time comparison,
 * as a success does. */
int fg_tunnel_endpoint_verify(const fg_config_t *cfg, const uint8_t nonce[FG_TUNNEL_NONCE_LEN],
                              const fg_tunnel_msg_t *m, int *agent);

#endif
