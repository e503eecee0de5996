/* A tunnel session (docs/tunnels.md): one agent's connection to this worker, from the 101 on.
 * The connection carries a WebSocket layer (worker/core/transport_ws.h); while the handshake
 * runs, its text messages go to the endpoint (worker/tunnel/endpoint.h), and once the agent is
 * authenticated the session runs the HTTP/2 client on it (the gateway is the client, the agent
 * the server), sends heartbeats (WebSocket pings whose payload is the send time, for the RTT)
 * and closes the connection after heartbeatSeconds + graceSeconds without a frame from the
 * agent. It writes itself into a slot of its agent's registry record (shm/tunnels.h): an agent
 * keeps a connection in each worker it can, and each worker sends its requests for the agent
 * down its own connection, to another worker's only when it has none.
 *
 * A session is a front-end session of the worker (worker/core/frontend.h): a retiring worker
 * sends each of its agents RECONNECT, keeps serving their in-flight streams, and closes each
 * tunnel once the agent has a connection in a worker that is not retiring and its last stream
 * ended (or at the worker's shutdown deadline). A retiring worker thus stays up while agents
 * move. */
#ifndef FG_TUNNEL_SESSION_H
#define FG_TUNNEL_SESSION_H

#include <stdint.h>
#include <sys/socket.h>

#include "common/tunnel_proto.h"
#include "worker/core/conn.h"
#include "worker/core/context.h"
#include "worker/core/frontend.h"
#include "worker/upstream/http2_client.h"

typedef struct fg_tsession_s fg_tsession_t;

extern const fg_frontend_t fg_tunnel_frontend;

/* The endpoint's handler of the control messages that arrive before OK. */
typedef void (*fg_tunnel_handshake_fn)(fg_tsession_t *s, const char *msg, size_t len);

/* Take c, whose 101 is sent, as a new session: WebSocket layer (server role), CHALLENGE with
 * a fresh nonce, the handshake timeout; messages before OK go to on_handshake. Returns 0, or
 * -1 (c is freed). */
int fg_tunnel_session_start(fg_worker_t *w, fg_conn_t *c, const struct sockaddr *peer,
                            socklen_t peerlen, fg_tunnel_handshake_fn on_handshake);

/* For the endpoint during the handshake. */
const uint8_t *fg_tunnel_session_nonce(const fg_tsession_t *s);
const struct sockaddr *fg_tunnel_session_peer(const fg_tsession_t *s);
const char *fg_tunnel_session_peer_text(const fg_tsession_t *s);
const fg_config_t *fg_tunnel_session_config(const fg_tsession_t *s);
/* The agent (index in cfg->tunnels.agents) proved who it is with auth (its instance and
 * role): the registry claim, then OK and the HTTP/2 client, or DUPLICATE and a close when
 * this worker holds a connection of the instance already and auth asked for another worker. */
void fg_tunnel_session_authenticated(fg_tsession_t *s, int agent, const fg_tunnel_msg_t *auth);
/* The handshake failed: close 1008 "authentication failed", then the connection. */
void fg_tunnel_session_refuse(fg_tsession_t *s);

/* The HTTP/2 client of agent's connection in this worker when it is live in the registry and
 * may take a stream; NULL otherwise, with errno ENOTCONN (none live here) or EAGAIN (live, but
 * every stream the agent allows is open). */
fg_h2client_t *fg_tunnel_session_client(fg_worker_t *w, int agent);

#endif
