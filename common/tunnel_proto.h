/* The tunnel handshake: how an agent proves who it is before its connection carries requests.
 * Shared by the gateway (worker/tunnel/) and the agent (agent/).
 *
 * The agent opens a WebSocket (RFC 6455) to the gateway's tunnel path, asking for the
 * subprotocol FG_TUNNEL_SUBPROTOCOL. Once the 101 is through, both sides speak WebSocket
 * frames (worker/core/transport_ws.h); text messages form the control channel, binary
 * messages carry one HTTP/2 connection (RFC 9113) in which the gateway is the client and the
 * agent the server. The handshake is three text messages, each one line without a line end:
 *
 *   gateway -> agent   "FGT/1 CHALLENGE <nonce>"        nonce: 64 hex digits, 32 random bytes
 *   agent -> gateway   "FGT/1 AUTH <agent-id> <proof> <instance> <role>"
 *                                                     proof: 64 hex digits; instance: 32 hex
 *                                                     digits; role: "first" or "extra"
 *   gateway -> agent   "FGT/1 OK <heartbeat-seconds> <workers>"   or a close frame 1008,
 *                      or "FGT/1 DUPLICATE" then a close frame 1000 (below)
 *
 * proof = HMAC-SHA256(secret, "FGT/1" LF nonce LF agent-id LF instance LF role): it binds the
 * answer to the protocol version, this connection's nonce, the id and what the connection
 * asks for, so an answer seen once is worth nothing on another connection (replay), for
 * another agent or another instance. The secret never travels.
 *
 * An agent keeps several connections, ideally one on each worker of the gateway (workers in
 * OK: its count of workers). The instance is 16 random bytes an agent process draws for its
 * configuration: connections of one instance serve together, and a connection of another
 * instance displaces them all (a takeover). "first": the agent has no serving connection,
 * so this one is wanted wherever it lands (it replaces a connection of the same instance held
 * by the same worker, which the agent lost). "extra": the agent serves already and wants this
 * one on another worker; a worker that holds a connection of the instance answers DUPLICATE
 * and the agent dials again.
 *
 * The short forms "FGT/1 AUTH <agent-id> <proof>", with proof = HMAC-SHA256(secret, "FGT/1"
 * LF nonce LF agent-id), and "FGT/1 OK <heartbeat-seconds>" are accepted too: such an agent
 * keeps one connection, and each of its connections is an instance of its own.
 *
 * After OK, control messages are lines of their own:
 *   gateway -> agent   "FGT/1 RECONNECT"   open a new tunnel now, then let this one finish
 *                                          its streams and close it (the gateway is
 *                                          reloading or stopping)
 * Heartbeats are WebSocket pings and pongs, both ways. An agent id is 1 to 64 characters of
 * [A-Za-z0-9._-]. */
#ifndef FG_TUNNEL_PROTO_H
#define FG_TUNNEL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define FG_TUNNEL_SUBPROTOCOL "fastgateway-tunnel.v1"
#define FG_TUNNEL_VERSION "FGT/1"
#define FG_TUNNEL_NONCE_LEN 32 /* bytes; 64 hex digits on the wire */
#define FG_TUNNEL_PROOF_LEN 32 /* HMAC-SHA256 */
#define FG_TUNNEL_ID_MAX 64
#define FG_TUNNEL_MSG_MAX 256   /* longest control message either side accepts */
#define FG_TUNNEL_SECRET_MIN 16 /* bytes of an agent secret, at least */
#define FG_TUNNEL_SECRET_MAX 1024
#define FG_TUNNEL_INSTANCE_LEN 16  /* bytes; 32 hex digits on the wire */
#define FG_TUNNEL_WORKERS_MAX 1024 /* largest worker count OK may carry */
/* The Host (HTTP/2 :authority) the gateway sends for a tunnel destination when neither the
 * route (RequestHeaderOriginalHost, a Host transform) nor the destination ("host") names one.
 * Only the agent knows the service's address: it replaces this name with the service's own
 * authority, as a proxy sends to an http:// destination (RFC 9110 7.2). ".invalid" is
 * reserved (RFC 6761 6.4), so no service expects it as its own name. */
#define FG_TUNNEL_DEFAULT_AUTHORITY "fg-tunnel.invalid"

/* Whether a Host field value (or :authority) names FG_TUNNEL_DEFAULT_AUTHORITY as the agent's
 * router reads it: in any case, with or without a port, with a trailing dot (RFC 3986 3.2.2).
 * Only the gateway's own placeholder may: a Host a client or an operator chose that names it
 * would pass for it. */
int fg_tunnel_names_placeholder(const char *host, size_t len);

typedef enum {
    FG_TUNNEL_MSG_CHALLENGE = 1,
    FG_TUNNEL_MSG_AUTH,
    FG_TUNNEL_MSG_OK,
    FG_TUNNEL_MSG_RECONNECT,
    FG_TUNNEL_MSG_DUPLICATE,
} fg_tunnel_msg_kind_t;

typedef enum {
    FG_TUNNEL_ROLE_NONE = 0, /* AUTH without instance and role */
    FG_TUNNEL_ROLE_FIRST,
    FG_TUNNEL_ROLE_EXTRA,
} fg_tunnel_role_t;

typedef struct {
    fg_tunnel_msg_kind_t kind;
    uint8_t nonce[FG_TUNNEL_NONCE_LEN];       /* CHALLENGE */
    char id[FG_TUNNEL_ID_MAX + 1];            /* AUTH, NUL-terminated */
    uint8_t proof[FG_TUNNEL_PROOF_LEN];       /* AUTH */
    uint8_t instance[FG_TUNNEL_INSTANCE_LEN]; /* AUTH, unless role is NONE */
    fg_tunnel_role_t role;                    /* AUTH */
    unsigned heartbeat_s;                     /* OK: 1..86400 */
    unsigned workers;                         /* OK: 1..FG_TUNNEL_WORKERS_MAX; 0: not said */
} fg_tunnel_msg_t;

/* Whether id (len bytes) is a valid agent id. */
int fg_tunnel_id_valid(const char *id, size_t len);
/* Parse one control message (len bytes, no line end). 0, or -1 for anything malformed,
 * oversized or of another version. */
int fg_tunnel_msg_parse(const char *msg, size_t len, fg_tunnel_msg_t *m);
/* Format m into buf (at least FG_TUNNEL_MSG_MAX bytes); returns the length, or -1 when m is
 * invalid (an id that fg_tunnel_id_valid refuses). */
int fg_tunnel_msg_format(const fg_tunnel_msg_t *m, char *buf, size_t len);
/* proof = HMAC-SHA256(secret, "FGT/1\n" hex(nonce) "\n" id). 0, or -1. */
int fg_tunnel_proof(const uint8_t *secret, size_t secret_len,
                    const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                    uint8_t proof[FG_TUNNEL_PROOF_LEN]);
/* Whether got is the proof for (secret, nonce, id), compared in constant time. */
int fg_tunnel_proof_ok(const uint8_t *secret, size_t secret_len,
                       const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const char *id,
                       const uint8_t got[FG_TUNNEL_PROOF_LEN]);
/* The proof of an AUTH message m (its id, and its instance and role unless NONE) into
 * m->proof. 0, or -1. */
int fg_tunnel_auth_sign(const uint8_t *secret, size_t secret_len,
                        const uint8_t nonce[FG_TUNNEL_NONCE_LEN], fg_tunnel_msg_t *m);
/* Whether the AUTH message m carries the right proof, compared in constant time. */
int fg_tunnel_auth_ok(const uint8_t *secret, size_t secret_len,
                      const uint8_t nonce[FG_TUNNEL_NONCE_LEN], const fg_tunnel_msg_t *m);

#endif
