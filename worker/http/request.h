/* The request object: one per client request whatever the front protocol (HTTP/1.1 now,
 * HTTP/2 and tunnels later). The front end (worker/http/http1.c) fills it and owns its memory
 * (req->pool); a handler (proxy, static, direct, redirect) answers through req->ops.
 *
 * Body flow, client -> handler: the front end appends decoded body bytes to req->body and
 * calls handler->on_body; req->body_done is set once the whole body has arrived. A handler that
 * cannot take more calls req->ops->pause_body(req, 1) and resumes with 0.
 * Response flow, handler -> client: send_head once, then send_body/send_file any number of
 * times, then finish. When the client is slow, ops->pending grows; the front end calls
 * handler->on_writable when it has drained below its low watermark. A multiplexing front end
 * (HTTP/2) may report more than the request holds when its connection's budget is spent, so
 * that the handler pauses.
 * If the client goes away, the front end calls handler->on_abort; after that the handler must
 * free its own state and never touch req again. */
#ifndef FG_REQUEST_H
#define FG_REQUEST_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "common/config.h"
#include "common/headers.h"
#include "common/http1_parser.h"
#include "common/pool.h"
#include "common/str.h"

struct evbuffer;
struct fg_relay_s;
typedef struct fg_request_s fg_request_t;

typedef struct {
    /* Start the response. hdrs exclude framing and hop-by-hop fields; content_length -1 means
     * unknown (the protocol frames it: chunked for HTTP/1.1). Returns 0 or <0. */
    int (*send_head)(fg_request_t *req, int status, const fg_headers_t *hdrs,
                     int64_t content_length);
    /* Relay an interim 1xx response before the final one (RFC 9110 15.2); the front end drops
     * it where its protocol forbids it. Returns 0 or <0. */
    int (*send_interim)(fg_request_t *req, int status, const fg_headers_t *hdrs);
    /* Move all bytes of buf to the client. Returns 0, or <0 when the client is gone. */
    int (*send_body)(fg_request_t *req, struct evbuffer *buf);
    /* Send len bytes of fd from off; the front end takes ownership of fd and closes it. */
    int (*send_file)(fg_request_t *req, int fd, off_t off, off_t len);
    /* Response trailers (RFC 9110 6.5): after the last send_body, before finish, at most once.
     * NULL: the front end cannot carry trailers and the caller drops them (a recipient may
     * discard trailer fields, RFC 9110 6.5.1). A front end whose framing of this response has
     * no room for them (HTTP/1.1 with a Content-Length) drops them too. Returns 0 or <0. */
    int (*send_trailers)(fg_request_t *req, const fg_headers_t *trailers);
    /* The response is complete. The front end logs it and frees the request. */
    void (*finish)(fg_request_t *req);
    /* Bytes queued to the client and not yet written. */
    size_t (*pending)(fg_request_t *req);
    void (*pause_body)(fg_request_t *req, int pause);
    /* The response cannot be completed (upstream died mid-body): drop the client stream so that
     * the client sees a truncated message, never a wrong one. The front end frees req. */
    void (*abort)(fg_request_t *req);
    /* Zero-copy body relay: the client connection when body bytes may be spliced to it
     * (fg_conn_splice_out: a transport that can, identity framing, nothing queued), else NULL.
     * The caller counts bytes_out. */
    struct fg_conn_s *(*raw_conn)(fg_request_t *req);
    /* Call handler->on_writable once the client can take bytes (after a splice -EAGAIN). */
    void (*want_writable)(fg_request_t *req);
    /* The gateway's own address on the client's connection (Forwarded "by"): 0 with ip set as
     * text and *port, or -1. */
    int (*local_addr)(fg_request_t *req, char *ip, size_t iplen, uint16_t *port);
    /* The destination switched protocols (RFC 9110 7.8, a 101 to req->upgrade): send the 101
     * with hdrs (its Upgrade field included), give relay the request's log facts
     * (fg_relay_adopt_request) and the client's end, and start it (worker/http/relay.h).
     * Returns 0 (req is gone, the relay runs), or <0 with req untouched (the caller answers
     * and frees relay). NULL: the front end cannot switch (the request is sent without its
     * Upgrade). */
    int (*switch_protocols)(fg_request_t *req, const fg_headers_t *hdrs, struct fg_relay_s *relay);
} fg_req_ops_t;

typedef struct {
    void (*on_body)(fg_request_t *req);
    void (*on_writable)(fg_request_t *req);
    void (*on_abort)(fg_request_t *req);
} fg_req_handler_t;

typedef struct {
    fg_str_t name;  /* route template parameter name, e.g. "id" or "rest" */
    fg_str_t value; /* matched segment(s), as in the normalised path */
} fg_capture_t;

#define FG_MAX_CAPTURES 16
#define FG_REQUEST_ID_LEN 32
#define FG_MAX_TRIES 8

struct fg_worker_s;

struct fg_request_s {
    fg_pool_t *pool;
    struct fg_worker_s *worker;
    const fg_server_t *server;
    const fg_route_t *route;

    /* head, all slices in pool memory */
    fg_str_t method;
    fg_str_t target;           /* as received */
    fg_str_t path;             /* normalised (common/path.h), used for matching and forwarding */
    fg_str_t query;            /* after '?', without it; empty when absent */
    fg_str_t host;             /* authority: Host header or :authority */
    fg_str_t scheme;           /* "http" or "https" */
    int version;               /* 10, 11, 20 */
    fg_http_header_t *headers; /* as received, in order */
    size_t nheaders;

    /* Extended CONNECT (RFC 8441 4): the :protocol of an HTTP/2 CONNECT ("websocket"), in
     * which case method is CONNECT and path the :path; empty for every other request. */
    fg_str_t protocol;
    int64_t content_length; /* -1 unknown (chunked / h2 without length) */
    unsigned has_body : 1;
    unsigned body_done : 1;
    unsigned expect_continue : 1;
    unsigned keep_alive : 1; /* the front end will keep the connection */
    /* The Upgrade field's value when the client asked to switch protocols (RFC 9110 7.8:
     * HTTP/1.1 with "Connection: upgrade"); empty otherwise. */
    fg_str_t upgrade;
    struct evbuffer *body; /* decoded body bytes not yet consumed by the handler */
    /* Request trailers (RFC 9110 6.5) in pool memory, set by the front end no later than
     * body_done; NULL when the body had none. */
    fg_http_header_t *trailers;
    size_t ntrailers;
    uint64_t body_bytes; /* total decoded body bytes received */
    uint64_t head_bytes; /* size of the request head as received */

    fg_capture_t captures[FG_MAX_CAPTURES];
    size_t ncaptures;

    char request_id[FG_REQUEST_ID_LEN + 1]; /* X-Request-Id: incoming or generated */
    char client_ip[64]; /* textual peer, or the address a trusted proxy gave (peer_ip) */
    uint16_t client_port;
    struct sockaddr_storage client_addr;
    /* worker/admission/security.c: the address requests are judged by (clientIpSource,
     * trustedProxies), 16 bytes as in common/iprange.h; valid when real_ip_set. */
    uint8_t real_ip[16];
    unsigned real_ip_set : 1;
    unsigned security_denied : 1; /* answered 403/429 by access control or a rate limit */
    unsigned relayed : 1; /* the response head is a destination's (worker/handlers/proxy.c) */
    /* The client connection's TLS session (fg_tls_host_allowed, fg_tls_info), or NULL. */
    const struct ssl_st *ssl;

    /* response facts, for the access log */
    int status;
    uint64_t bytes_out;   /* body bytes sent to the client */
    unsigned gzip : 1;    /* the body went out gzip-coded (worker/http/compress.c) */
    uint64_t start_us;    /* monotonic microseconds at head complete */
    uint64_t upstream_us; /* request sent upstream to response head, last attempt */
    /* upstream attempts (worker/handlers/proxy.c): every exchange started with a destination,
     * retries on a fresh connection included; the first FG_MAX_TRIES are kept for the access log */
    uint8_t attempts;
    struct {
        const fg_destination_t *dest;
        int status; /* the destination's status, or 502/504 when it gave none (nginx's way) */
    } tries[FG_MAX_TRIES];
    uint64_t upstream_connect_us; /* connect time of the answering attempt; 0 = pooled */
    uint64_t upstream_first_us;   /* request sent upstream to its first response byte */
    const char *termination;      /* why the exchange ended, when the handler knows (proxy) */
    char peer_ip[64];             /* the TCP peer when a trusted proxy supplied client_ip */
    char balancer_ip[48];         /* the TCP peer that sent a PROXY protocol header; "" = none */
    const char *cluster_id;
    fg_str_t tenant;   /* the tenant header's value (cfg->tenant_header); empty = none */
    const char *error; /* short error kind when the gateway answered an error */
    /* An errorPages "route" answers an error (fg_request_error_with): the front end's ops,
     * whose send_head gets error_status whatever the route's handler answers. Set once: an
     * error raised while that route answers gets the JSON error. */
    const fg_req_ops_t *error_ops;
    int error_status;

    int hop_dest; /* a tunnel hop's request (worker/tunnel/hop.h): its destination + 1 */
    const fg_req_ops_t *ops;
    /* worker/http/compress.c: the response filter's state while it sits in ops, else NULL */
    struct fg_compress_s *compress;
    void *proto; /* front end's private state */
    const fg_req_handler_t *handler;
    void *handler_data; /* handler's private state */
};

/* Request pools. Every request owns one pool (req->pool) from the moment its head is taken
 * until it is finished or aborted, whatever the front end (HTTP/2 runs many requests on one
 * connection). A pool has a 4 KiB first block; w (NULL in unit tests) keeps up to
 * FG_REQUEST_POOL_SPARES reset pools, so keep-alive traffic allocates none per request. */
fg_pool_t *fg_request_pool_take(struct fg_worker_s *w);
/* Release pool (may be NULL): reset and kept by w, or freed. */
void fg_request_pool_give(struct fg_worker_s *w, fg_pool_t *pool);
/* Free w's spare pools (worker exit). */
void fg_request_pools_free(struct fg_worker_s *w);

/* Give req its request id (X-Request-Id): the client's when it is 1-32 characters of
 * [0-9A-Za-z._-], else 32 hex digits of start time, pid and a per-worker sequence. Needs
 * req->worker and req->start_us. */
void fg_request_make_id(fg_request_t *req);

/* The body size limit that applies to req: the route's, else the server's (-1 = none). */
int64_t fg_request_body_limit(const fg_request_t *req);

/* Answer with the gateway's error for status, the one shape of every error it answers:
 * {"status", "error" (a stable kind such as "not_found"), "message", "requestId", "path"}
 * as application/json (docs/config.md "Error responses"), or the operator's errorPages entry
 * for that status. extra (may be NULL) adds fields such as Allow or Retry-After; they are
 * copied. Sets req->error; calls finish. */
void fg_request_error_with(fg_request_t *req, int status, const char *error, const char *message,
                           const fg_headers_t *extra);
/* The error kind the gateway uses for status ("not_found" for 404, ...): "client_error" or
 * "server_error" for a status it has no name for. */
const char *fg_request_error_kind(int status);
/* fg_request_error_with without extra fields. */
void fg_request_error(fg_request_t *req, int status, const char *error, const char *message);

/* What a connection's TLS state decides before routing, for every front end: a Host that
 * the certificate of the TLS connection does not cover gets 421; on a plaintext server with
 * redirectHttps, the redirect to https, or 400 with the connection closing (keep_alive off)
 * when the request has no host to redirect to. Returns 1 when answered, 0 to route. */
int fg_request_tls_answer(fg_request_t *req);
/* The path of HTTP-01 challenges (RFC 8555 8.3), answered by worker/handlers/acme_challenge.c
 * when the configuration has "acme". */
#define FG_ACME_CHALLENGE_PREFIX "/.well-known/acme-challenge/"
#define FG_ACME_CHALLENGE_PREFIX_LEN (sizeof(FG_ACME_CHALLENGE_PREFIX) - 1)
int fg_request_is_acme_challenge(const fg_request_t *req);
/* fg_request_tls_answer where it has something to decide: a plaintext request on a server
 * without redirectHttps, the common case, costs no call. */
static inline int fg_request_tls_gate(fg_request_t *req)
{
    if (req->ssl == NULL && !req->server->redirect.enabled)
        return 0;
    return fg_request_tls_answer(req);
}

/* The fields a front end adds to every response head: date, the Date value (RFC 9110 6.6.1)
 * unless hdrs carry one; server, the server's serverHeader unless it is off, hdrs carry
 * one, or the response is relayed from a destination. An empty slice means "add none". */
void fg_request_stamp(fg_request_t *req, const fg_headers_t *hdrs, fg_str_t *date,
                      fg_str_t *server);
/* Now as an IMF-fixdate; formatted at most once a second per worker (worker-owned memory). */
fg_str_t fg_request_date(fg_request_t *req);

/* Answer with a complete in-memory response; calls finish. */
void fg_request_respond(fg_request_t *req, int status, const fg_headers_t *hdrs, const char *body,
                        size_t len);

/* The first request header of that name or NULL. */
const fg_http_header_t *fg_request_header(const fg_request_t *req, fg_str_t name);

#endif
