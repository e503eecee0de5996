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
 *   agent -> gateway   "FGT/1 AUTH <agent-id> <proof>"  proof: 64 hex digits
 *   gateway -> agent   "FGT/1 OK <heartbeat-seconds>"   or a close frame 1008
 *
 * proof = HMAC-SHA256(secret, "FGT/1" LF nonce LF agent-id): it binds the answer to the
 * protocol version, this connection's nonce and the id, so an answer seen once is worth
 * nothing on another connection (replay) or for another agent. The secret never travels.
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

typedef enum {
    FG_TUNNEL_MSG_CHALLENGE = 1,
    FG_TUNNEL_MSG_AUTH,
    FG_TUNNEL_MSG_OK,
    FG_TUNNEL_MSG_RECONNECT,
} fg_tunnel_msg_kind_t;

typedef struct {
    fg_tunnel_msg_kind_t kind;
    uint8_t nonce[FG_TUNNEL_NONCE_LEN]; /* CHALLENGE */
    char id[FG_TUNNEL_ID_MAX + 1];      /* AUTH, NUL-terminated */
    uint8_t proof[FG_TUNNEL_PROOF_LEN]; /* AUTH */
    unsigned heartbeat_s;               /* OK: 1..86400 */
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
/* Read an agent secret from path: the file's bytes without surrounding whitespace, between
 * FG_TUNNEL_SECRET_MIN and FG_TUNNEL_SECRET_MAX of them. Refuses a file that others than
 * its owner may read or write (mode & 077). Returns the length, or -1 with a reason in err
 * (never the secret). */
int fg_tunnel_secret_load(const char *path, uint8_t *secret, size_t cap, char *err, size_t errlen);

#endif
