/* One tunnel connection of the agent, from the dial to its end: TCP (+ TLS for wss://), the
 * WebSocket upgrade, the handshake (CHALLENGE -> AUTH with the proof -> OK; common/
 * tunnel_proto.h), then an HTTP/2 server session of the runtime's worker on the connection
 * (agent/runtime.h), with heartbeats: a WebSocket ping every heartbeatSeconds, and the tunnel
 * closed when nothing was heard for heartbeatSeconds + graceSeconds (a pong, a control
 * message). The gateway's RECONNECT is passed to the owner (agent/agent.c), which opens the
 * next tunnel and retires this one once that one is up; its DUPLICATE (this gateway worker
 * holds a connection of the agent already) ends the attempt.
 *
 * The owner hears of a tunnel only through the callbacks, always from the loop, never from
 * inside a call it made. */
#ifndef FG_AGENT_TUNNEL_H
#define FG_AGENT_TUNNEL_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "agent/config.h"
#include "agent/runtime.h"

struct event_base;
struct evdns_base;
typedef struct fg_tunnel_s fg_tunnel_t;

typedef struct {
    /* Authenticated, and serving HTTP/2. */
    void (*up)(void *arg, fg_tunnel_t *t);
    /* The gateway asked for a new tunnel (RECONNECT). */
    void (*reconnect)(void *arg, fg_tunnel_t *t);
    /* Over (why says how); t is freed when this returns. up_ms: how long it served (0: it
     * never did). auth: the gateway refused the proof (close 1008). */
    void (*gone)(void *arg, fg_tunnel_t *t, const char *why, uint64_t up_ms, int auth);
} fg_tunnel_cbs_t;

/* Start a tunnel to cfg's gateway that will serve on rt. dns resolves the gateway's name
 * (agent/resolve.h). ctx: the TLS client context for wss:// (NULL for ws://). dns, cfg, ctx,
 * rt and cbs outlive the tunnel. NULL when out of memory; any other failure comes as gone. */
fg_tunnel_t *fg_tunnel_open(struct event_base *base, struct evdns_base *dns,
                            const fg_agent_config_t *cfg, SSL_CTX *ctx, fg_agent_rt_t *rt,
                            const fg_tunnel_cbs_t *cbs, void *arg);
/* Before the handshake: the agent instance t belongs to and its AUTH role (extra: the agent
 * serves already and wants t on another gateway worker; common/tunnel_proto.h). */
void fg_tunnel_join(fg_tunnel_t *t, const uint8_t instance[FG_TUNNEL_INSTANCE_LEN], int extra);
/* The gateway's worker count from its OK (0: not said). */
unsigned fg_tunnel_workers(const fg_tunnel_t *t);
/* Whether the gateway answered DUPLICATE (for gone). */
int fg_tunnel_duplicate(const fg_tunnel_t *t);
/* Graceful end: a serving tunnel sends GOAWAY (RFC 9113 6.8), finishes its streams and
 * closes; one not serving yet closes now. gone follows. */
void fg_tunnel_retire(fg_tunnel_t *t);
/* The same for the agent's stop: the WebSocket close frame says 1001 "agent stopping". */
void fg_tunnel_drain(fg_tunnel_t *t);
/* Whether t serves (between up and gone). */
int fg_tunnel_is_up(const fg_tunnel_t *t);
fg_agent_rt_t *fg_tunnel_rt(const fg_tunnel_t *t);
/* The runtime's session hook, for the owner to pass on: whether s was t's session. */
int fg_tunnel_session(fg_tunnel_t *t, fg_session_t *s, int added);
/* Free t without a word (agent exit), after its runtime closed its sessions. */
void fg_tunnel_free(fg_tunnel_t *t);

#endif
