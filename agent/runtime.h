/* The agent's HTTP side: the gateway's own worker code run inside the agent. From the agent's
 * services the runtime synthesizes an in-memory gateway configuration (one cluster per
 * service; one route per service that matches the request field fg-tunnel-service, which a
 * transform removes; a last route answering 502 for any other request), compiles it as the
 * gateway's master would, and sets up an fg_worker_t for it on the agent's event loop: no
 * listeners, no master, a private anonymous shared-memory arena (nothing else maps it). Each
 * tunnel that authenticated gets an HTTP/2 server session of the worker's front end
 * (fg_http2_adopt), so requests from the gateway meet the gateway's proxy, keep-alive pools,
 * TLS client and WebSocket relay (RFC 8441 extended CONNECT to HTTP/1.1 upgrades).
 *
 * A reload (SIGHUP) builds a new runtime and moves to it with a new tunnel; the old one lives
 * until its last session has gone (fg_agent_rt_sessions). */
#ifndef FG_AGENT_RUNTIME_H
#define FG_AGENT_RUNTIME_H

#include <stddef.h>

#include "agent/config.h"
#include "worker/core/frontend.h"

struct event_base;
struct fg_conn_s;
typedef struct fg_agent_rt_s fg_agent_rt_t;

/* Called when a session of the runtime's worker registers (added 1) or goes (added 0). */
typedef void (*fg_agent_session_fn)(void *arg, fg_agent_rt_t *rt, fg_session_t *s, int added);

/* The gateway configuration for cfg's services, as JSON text (malloc'ed), or NULL. */
char *fg_agent_rt_gateway_json(const fg_agent_config_t *cfg);
/* Compile cfg's services and set up the worker on base (NULL: check only, for -t; the result
 * must then be freed at once). NULL with err. */
fg_agent_rt_t *fg_agent_rt_new(struct event_base *base, const fg_agent_config_t *cfg,
                               fg_agent_session_fn on_session, void *arg, char *err, size_t errlen);
/* Start the HTTP/2 server session on c (its WebSocket layer pushed, the tunnel authenticated);
 * peer is the gateway's address. The session owns c from now on, also on failure (-1). */
int fg_agent_rt_serve(fg_agent_rt_t *rt, struct fg_conn_s *c, const struct sockaddr_storage *peer);
/* Give back what the worker keeps for reuse (the spare request pools), so that an agent
 * idle after a burst returns to its idle size. */
void fg_agent_rt_trim(fg_agent_rt_t *rt);
/* Sessions open on the runtime's worker. */
unsigned fg_agent_rt_sessions(const fg_agent_rt_t *rt);
/* Close every session now and free everything. NULL is fine. */
void fg_agent_rt_free(fg_agent_rt_t *rt);

#endif
