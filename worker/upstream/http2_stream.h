/* The HTTP/2 client's connection and stream objects and the functions its files share: the
 * streams as exchanges (worker/upstream/http2_client.c), the connections and their sessions
 * (http2_conn.c), the request's framing (http2_request.c), the response's (http2_response.c)
 * and the stream as a relay end (http2_tunnel.c). Not a public interface: other modules use
 * worker/upstream/http2_client.h. */
#ifndef FG_HTTP2_STREAM_H
#define FG_HTTP2_STREAM_H

#include <nghttp2/nghttp2.h>

#include "worker/upstream/exchange.h"
#include "worker/upstream/upstream.h"

#define HEAD_MAX 65536  /* bytes of one received header block */
#define HB_INLINE 512   /* bytes of a header block kept in the stream itself */
#define FIELDS_MAX 128  /* fields of one received header block */
#define INTERIM_MAX 8   /* as the HTTP/1.1 client */
#define OUT_HIGH 262144 /* session output queued on the connection before we stop producing */
#define BODY_LOW 65536  /* a stream's queued body at or below this: on_send_ready */
#define STREAM_WINDOW (256 * 1024)
#define CONN_WINDOW (16 * 1024 * 1024)
#define DEFAULT_STREAMS 100 /* assumed until the peer's SETTINGS say (RFC 9113 6.5.2) */

typedef struct h2conn_s h2conn_t;
typedef struct h2x_s h2x_t;

/* A destination's connections in one worker. */
typedef struct {
    fg_upstream_ext_t ext; /* first: the upstream pools release it (dest_free) */
    h2conn_t *conns;
    unsigned h1_only : 1; /* ALPN chose http/1.1: the HTTP/1.1 client serves it */
} h2dest_t;

struct h2conn_s {
    h2dest_t *dest; /* NULL: a private connection, closed once its streams are done */
    h2conn_t *prev, *next;
    fg_worker_t *w;
    const fg_cluster_t *cl;
    size_t di;
    fg_upconn_t *u; /* NULL in the memory mode of the tests and when adopted */
    fg_conn_t *fc;  /* adopted: a connection its owner opened and keeps */
    const struct fg_h2client_owner_s *owner; /* worker/upstream/http2_client.h */
    void *owner_arg;
    struct evbuffer *mem;         /* memory mode: what the session sends */
    uint64_t bytes_in, bytes_out; /* HTTP/2 bytes received and produced */
    nghttp2_session *s;
    h2x_t *streams;
    unsigned nstreams;
    uint64_t connect_at;
    uint64_t activity_ms;
    int busy;
    unsigned ready : 1;  /* connected, preface queued */
    unsigned goaway : 1; /* no new stream (GOAWAY received or sent) */
    unsigned dead : 1;
    unsigned flushing : 1; /* inside flush: a nested one only asks for another round */
    unsigned again : 1;
    unsigned in_recv : 1; /* inside nghttp2_session_mem_recv: nothing may be sent */
    unsigned https : 1;
    unsigned got_settings : 1; /* the peer's first SETTINGS arrived (RFC 9113 3.4) */
    unsigned settings_due : 1; /* upgrades wait for them: decide once the receive returns */
    unsigned ntunnels;         /* streams that are relay ends: silence on them is no fault */
    unsigned nplain;           /* streams opened as a plain CONNECT (a tcp relay, RFC 9113 8.5) */
    /* Adopted: fg_http2_client_flush only marks the connection and this event writes it once the
     * loop's current callbacks ran, so the streams a loop turn opens leave in one write. */
    struct event *flush_ev;
    unsigned flush_due : 1;
    /* Adopted: the request fields of the streams submitted since the session last had nothing
     * queued, which nghttp2 packs without copying them (pin_fields in http2_request.c). */
    char *nvbuf;
    size_t nvused;
};

struct h2x_s {
    fg_exchange_t base;
    const fg_exchange_cbs_t *cbs;
    void *arg;
    h2conn_t *conn;
    h2x_t *prev, *next;
    int32_t id;
    fg_exchange_info_t info;
    fg_exchange_target_t t; /* for the HTTP/1.1 fallback */
    fg_outreq_t *out_copy;  /* the request, kept while an ALPN fallback may need it */
    int64_t content_length;
    struct evbuffer *body; /* request body not yet framed */
    struct evbuffer *in;   /* response body held while paused */
    size_t unconsumed;     /* bytes of `in` not yet given back to the flow-control windows */
    nghttp2_nv *trailers;  /* request trailers to send after the body (one block) */
    size_t ntrailers;
    char *hb;      /* the header block being received: bytes, and fields as offsets */
    char *head_hb; /* the final head's bytes, kept while the trailers arrive: a front end may
                    * still hold slices of the head it was given */
    size_t hlen, hcap;
    unsigned nh;
    int status;
    int64_t clen;
    unsigned interims;
    int busy;
    fg_exchange_t *inner; /* the HTTP/1.1 exchange standing in for this one */
    uint64_t idle_ms;     /* adopted connections: the stream's own activity timeout (0: none) */
    uint64_t heard_us;    /* adopted connections: the last frame of this stream */
    unsigned exempt : 1;  /* the activity timeout spares a response body (event streams) */
    char protocol[32];    /* an upgrade's :protocol (RFC 8441 4), NUL-terminated */
    /* A relay end (worker/upstream/http2_tunnel.c): the relay's callbacks, and the event that
     * tells it what happened, outside nghttp2's callbacks and the relay's own operations. */
    const fg_conn_cbs_t *t_cbs;
    void *t_arg;
    struct event *t_ev;
    uint64_t t_progress_ms; /* when the destination last took bytes, or had none waiting */
    uint64_t t_send_ms;     /* it takes nothing this long while bytes wait: the relay ends */
    unsigned has_body : 1;
    unsigned body_end : 1;
    unsigned deferred : 1; /* the data source said NGHTTP2_ERR_DEFERRED */
    unsigned up_head : 1;
    unsigned paused : 1;
    unsigned ended : 1;    /* END_STREAM received; on_end pending while paused */
    unsigned finished : 1; /* on_end or on_error made */
    unsigned closed : 1;   /* the stream is closed in the session */
    unsigned wait_ready : 1;
    unsigned head_done : 1;
    unsigned dead : 1;
    unsigned upgrade : 1; /* waits for the peer's SETTINGS: extended CONNECT, or HTTP/1.1 */
    unsigned connect : 1; /* sent as an extended CONNECT: a 2xx is the switch (RFC 8441 5) */
    unsigned plain : 1;   /* counted in conn->nplain */
    unsigned relay : 1;   /* the stream is a relay's end; the handler is done with it */
    unsigned t_reading : 1;
    unsigned t_read_due : 1;  /* tell the relay about input */
    unsigned t_drain_due : 1; /* tell the relay its output went out */
    unsigned t_eof_due : 1;   /* tell the relay the destination ended its sending */
    unsigned t_gone_due : 1;  /* tell the relay the stream is gone */
    /* Last and left uninitialised by fg_http2_client_stream_new (2 KiB): only the first nh entries
     * are read. */
    uint32_t hoff[FIELDS_MAX][4];
    char hin[HB_INLINE]; /* the first header block's bytes while they fit (keep_field) */
};

static inline nghttp2_nv mknv(const char *n, size_t nl, const char *v, size_t vl)
{
    nghttp2_nv nv = {(uint8_t *)(uintptr_t)n, (uint8_t *)(uintptr_t)v, nl, vl,
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* ---- streams (http2_client.c) ---- */

/* A stream for an exchange, not on a connection yet; t (NULL on an adopted connection) is kept
 * for an HTTP/1.1 fallback. NULL when out of memory. */
h2x_t *fg_http2_client_stream_new(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                  const fg_exchange_cbs_t *cbs, void *arg);
void fg_http2_client_stream_free(h2x_t *x);
/* Put x on c's list of streams. */
void fg_http2_client_stream_attach(h2x_t *x, h2conn_t *c);
/* Take x off its connection: the session forgets it (its stream, if open, is reset with code
 * unless 0 and already closed). */
void fg_http2_client_stream_detach(h2x_t *x, uint32_t code);
/* Take x off its connection (its stream reset with code unless done) and let it go: freed
 * now, or when the last caller holding it leaves. */
void fg_http2_client_stream_end(h2x_t *x, uint32_t code);
/* Release a hold on x taken with x->busy++; returns 1 when x is gone. */
int fg_http2_client_stream_leave(h2x_t *x);
/* Tell the handler x failed (once) and end x. */
void fg_http2_client_stream_fail(h2x_t *x, fg_exchange_error_t kind, int err, const char *detail);
/* Give the handler what waits in x->in and its window back to the peer; the end follows once
 * unpaused. Returns 1 when x is gone. */
int fg_http2_client_deliver(h2x_t *x);

/* ---- connections (http2_conn.c) ---- */

/* A connection to t's destination, opening, on dest's list unless dest is NULL (private).
 * NULL with errno. */
h2conn_t *fg_http2_client_conn_new(const fg_exchange_target_t *t, h2dest_t *dest);
/* A session for c, its SETTINGS queued (RFC 9113 3.4: the preface). -1 when out of memory. */
int fg_http2_client_session_new(h2conn_t *c);
void fg_http2_client_conn_free(h2conn_t *c);
/* Hold c across calls that may end it; leave returns 1 when c is gone. */
static inline void fg_http2_client_conn_enter(h2conn_t *c)
{
    c->busy++;
}
int fg_http2_client_conn_leave(h2conn_t *c);
/* Fail every stream of c and close it. */
void fg_http2_client_conn_fail(h2conn_t *c, fg_exchange_error_t kind, int err, const char *detail);
/* A connection without streams: closed when private, goaway or the worker retires; else read
 * with the cluster's idle timeout. */
void fg_http2_client_conn_maybe_idle(h2conn_t *c);
/* Read with the activity timeout while a stream waits for its destination. */
void fg_http2_client_conn_busy_read(h2conn_t *c);
/* The most streams the peer allows at once (capped). */
unsigned fg_http2_client_conn_max_streams(h2conn_t *c);
/* RFC 8441 3: whether the peer announced SETTINGS_ENABLE_CONNECT_PROTOCOL 1. */
int fg_http2_client_connect_allowed(h2conn_t *c);
/* Produce the session's frames and write them (nothing while a receive is under way: the
 * receive path flushes once it returns). */
void fg_http2_client_flush(h2conn_t *c);
/* The reader of stream id took n bytes: the stream's window reopens by as much (RFC 9113
 * 6.9); the connection's reopened as the bytes arrived. What c holds unread is bounded by its
 * streams' windows (STREAM_WINDOW each), and a stream whose reader stalls never closes the
 * connection's window to the others. */
void fg_http2_client_consumed(h2conn_t *c, int32_t id, size_t n);

/* ---- requests (http2_request.c) ---- */

/* Submit x's HEADERS (and its body's data source) on its connection, with extra fields as
 * fg_http2_client_start_on takes them. -1 on failure. */
int fg_http2_client_submit(h2x_t *x, const fg_outreq_t *o, const fg_http_header_t *extra,
                           size_t nextra);
/* Submit x (x->protocol set, x->out_copy its request) as an extended or plain CONNECT. -1 on
 * failure. */
int fg_http2_client_submit_connect(h2x_t *x, const fg_http_header_t *extra, size_t nextra);
/* The stream's head leaves now (the connection is up). */
void fg_http2_client_stream_go(h2x_t *x);
/* A copy of o in one block (free), or NULL. */
fg_outreq_t *fg_http2_client_outreq_copy(const fg_outreq_t *o);

/* ---- responses (http2_response.c) ---- */

/* The receiving callbacks of a client session, for nghttp2_session_client_new2 (the caller
 * deletes them). NULL when out of memory. */
nghttp2_session_callbacks *fg_http2_client_callbacks(void);

#endif
