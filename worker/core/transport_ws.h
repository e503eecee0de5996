/* A WebSocket transport (RFC 6455 5): a connection whose bytes travel as the payload of binary
 * WebSocket messages, over the transport it had (plain TCP or TLS). The tunnel stands on it:
 * once the agent's upgrade is through, both ends push this layer on their fg_conn and the
 * protocols above (the tunnel handshake, then HTTP/2) read and write a plain byte stream.
 *
 * Received: binary and continuation frames give their payload to the input as they arrive
 * (a frame is never buffered whole); a complete text message (at most FG_WS_TEXT_MAX bytes,
 * possibly fragmented) goes to on_text; a ping is answered with a pong; a pong goes to on_pong;
 * a close frame is answered with a close frame and reads as the end of the stream (0). The
 * server side requires masked frames and the client side unmasked ones (RFC 6455 5.1); a
 * violation, a reserved bit or opcode, a control frame over 125 bytes or a fragmented control
 * frame is an error (EPROTO), after which the layer sends close 1002.
 *
 * Sent: what the owner writes to the output leaves as binary frames of at most
 * FG_WS_FRAME_MAX payload bytes, masked with fresh keys on the client side (in the one copy
 * into the frame); the server side moves the payload's chains without copying. A masked
 * payload received is unmasked in the one copy to the input. Text, ping and close frames go
 * first, between two data frames. */
#ifndef FG_TRANSPORT_WS_H
#define FG_TRANSPORT_WS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fg_conn_s fg_conn_t; /* worker/core/conn.h, which implements these */

#define FG_WS_TEXT_MAX 1024
#define FG_WS_FRAME_MAX 65536

enum { FG_WS_SERVER = 0, FG_WS_CLIENT = 1 };

typedef struct fg_ws_cbs_s {
    /* Called from inside the connection's read. They may queue frames (fg_conn_ws_send) and
     * change conn settings, but must not free the connection: an owner that wants to close
     * schedules it (or waits for on_read / on_event). Either may be NULL. */
    void (*on_text)(void *arg, const char *msg, size_t len);
    void (*on_pong)(void *arg, const uint8_t *payload, size_t len);
} fg_ws_cbs_t;

/* Put c on a WebSocket layer above its current transport, in role FG_WS_SERVER or
 * FG_WS_CLIENT. Bytes already in c's input (read after the 101) are taken as received frames.
 * cbs outlives c. 0, or -ENOMEM (c unchanged). */
int fg_conn_push_ws(fg_conn_t *c, int role, const fg_ws_cbs_t *cbs, void *arg);
/* Queue a text message, a ping (payload at most 125 bytes) or a close frame (code, reason at
 * most 123 bytes) ahead of the data not yet framed, and start writing. 0, -EINVAL, -ENOTCONN
 * (c has no WebSocket layer, or a close was sent), or -ENOBUFS (more than 64 KiB of control
 * frames wait: the peer does not read). */
int fg_conn_ws_text(fg_conn_t *c, const char *msg, size_t len);
int fg_conn_ws_ping(fg_conn_t *c, const void *payload, size_t len);
int fg_conn_ws_close(fg_conn_t *c, uint16_t code, const char *reason);
/* The close code the peer sent (0: none yet, 1005: a close without a code). */
uint16_t fg_conn_ws_peer_close(const fg_conn_t *c);
/* Bytes received on c's WebSocket layer so far, frames of every kind (0 without the layer):
 * any of them shows the peer alive. */
uint64_t fg_conn_ws_received(const fg_conn_t *c);

#endif
