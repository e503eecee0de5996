/* The relay after a protocol switch (RFC 9110 7.8; WebSocket, RFC 6455 4): the bytes of an
 * upgraded exchange go both ways unchanged, messages are never reframed, until both sides have
 * ended. It has two ends:
 *  - the client end, given by the front end that took the request (HTTP/1.1: its connection,
 *    fg_req_ops_t.switch_protocols);
 *  - the destination end, given by the exchange: its connection (fg_exchange_take_over) or
 *    its HTTP/2 stream (fg_exchange_relay_end, RFC 8441 extended CONNECT).
 * An end is an fg_conn_t, or any object that offers the same few operations the relay uses
 * (input, output, read switch, flush, pending, drain and shutdown_write; fg_relay_end_ops_t):
 * an HTTP/2 stream (RFC 8441), on either side, is such an end. Splice needs two connection
 * ends.
 *
 * Flow: each direction buffers at most RELAY_HIGH bytes in user space (it stops reading its
 * source until the other end drained); when both ends are plain TCP, bytes move through a pipe
 * with splice(2) and never enter user space. An end's close is passed on as a half-close
 * (shutdown_write on the other end, after the bytes before it). The relay ends when both
 * directions ended, on an error of either side, when neither side sent anything for the idle
 * timeout, or when a retiring worker's webSocketDrainTimeout passes.
 *
 * A relay is a session of the worker (worker/core/frontend.h), counted in the worker's record
 * (open WebSockets in the status output) and per server across workers (maxWebSockets, shared
 * memory). At its end it writes one access log line for the exchange: status 101, duration,
 * and bytes each way. */
#ifndef FG_RELAY_H
#define FG_RELAY_H

#include <stdint.h>

#include "worker/core/conn.h"
#include "worker/core/context.h"
#include "worker/core/frontend.h"
#include "worker/http/request.h"

typedef struct fg_relay_s fg_relay_t;

enum { FG_RELAY_CLIENT = 0, FG_RELAY_DEST = 1 };

/* A relay for an upgrade of srv's route, not yet running; idle_ms 0 = no idle timeout. place:
 * what fg_relay_reserve gave for this exchange, owned by the relay from now on (given back
 * when it ends or is freed). NULL when out of memory (place still the caller's). */
fg_relay_t *fg_relay_new(fg_worker_t *w, const fg_server_t *srv, uint64_t idle_ms, int place);
/* Give side (FG_RELAY_CLIENT or FG_RELAY_DEST) its connection: owned from now on. Its input
 * holds the bytes already read from that side (they go to the other side first), its output
 * what is due to that side (the 101 head). */
void fg_relay_attach_conn(fg_relay_t *r, int side, fg_conn_t *c);
/* An end that is not a connection. Its owner calls cbs->on_read (c NULL, arg) when input
 * arrived, cbs->on_drain when pending() fell to 64 KiB or less after output went out, and
 * cbs->on_event with FG_CONN_EOF (the peer ended its sending), FG_CONN_ERROR (it is gone) or
 * FG_CONN_TIMEOUT_WRITE. Never from inside one of these operations. */
typedef struct {
    void (*set_cbs)(void *obj, const fg_conn_cbs_t *cbs, void *arg);
    struct evbuffer *(*input)(void *obj);  /* what the peer sent; the relay drains what it takes */
    struct evbuffer *(*output)(void *obj); /* what is due to the peer */
    int (*flush)(void *obj);               /* send what output holds: 0, or <0 when gone */
    size_t (*pending)(void *obj);          /* bytes due to the peer, not yet sent */
    void (*read)(void *obj, int enable);   /* whether on_read may report input */
    int (*shutdown_write)(void *obj);      /* end our sending once output went out: 0 or <0 */
    void (*close)(void *obj);              /* the relay ended: it never touches obj again */
} fg_relay_end_ops_t;
/* Give side an end that is not a connection (see fg_relay_end_ops_t). */
void fg_relay_attach_end(fg_relay_t *r, int side, const fg_relay_end_ops_t *ops, void *obj);
/* Keep what the access log line needs of req (a copy; the request's pool moves to the relay,
 * req->pool becomes NULL). The front end calls it once, before fg_relay_start. */
void fg_relay_adopt_request(fg_relay_t *r, fg_request_t *req);
/* The end of a relay that carries no request (a tcp server's connection, worker/stream/
 * tcp_proxy.h): fn gets the bytes received from each side and why it ended (NULL: both sides
 * ended), in place of the access log line, and the relay is not counted as a WebSocket. Called
 * once, before fg_relay_start; the relay is gone when fn returns. */
typedef void (*fg_relay_done_fn)(void *arg, uint64_t from_client, uint64_t from_dest,
                                 const char *termination);
void fg_relay_set_done(fg_relay_t *r, fg_relay_done_fn fn, void *arg);
/* Both ends attached: register the session and relay. r may be gone on return (an end had
 * already failed). */
void fg_relay_start(fg_relay_t *r);
/* Abandon a relay that did not start: its connections are closed. */
void fg_relay_free(fg_relay_t *r);

/* maxWebSockets: reserve one of srv's places for a WebSocket at its handshake, exactly across
 * all workers (concurrent handshakes never together pass the cap; a dead worker's places are
 * dropped by the master). Returns -1 when the cap is reached (nothing held), else the place,
 * which goes to fg_relay_new or back with fg_relay_unreserve if the exchange does not switch.
 * Every relay holds one, cap or not: the count decides when a reload sets one. */
enum { FG_RELAY_PLACE_NONE = 0, FG_RELAY_PLACE_SHARED = 1, FG_RELAY_PLACE_LOCAL = 2 };
int fg_relay_reserve(fg_worker_t *w, const fg_server_t *srv);
void fg_relay_unreserve(fg_worker_t *w, const fg_server_t *srv, int place);

/* The relays' front-end entry (retire, close_idle, close). */
extern const fg_frontend_t fg_relay_frontend;

#endif
