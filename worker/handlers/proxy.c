#include "worker/handlers/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "shm/health.h"
#include "shm/metrics.h"
#include "worker/upstream/affinity.h"
#include "worker/upstream/balancer.h"
#include "worker/http/transform.h"
#include "worker/upstream/client.h"
#include "worker/upstream/upstream.h"
#include "worker/core/clock.h"
#include "worker/http/relay.h"
#include "worker/tunnel/hop.h"

/* One client request proxied to a destination: picks it (balancer, affinity), applies the
 * transforms, drives an exchange (worker/upstream/exchange.h) and decides retries and
 * failover. It writes no protocol bytes. Lives in req->pool. */
typedef struct {
    fg_request_t *req;
    fg_worker_t *w;
    const fg_cluster_t *cl;
    int di;
    fg_exchange_t *x;
    fg_outreq_t out;         /* the request for destination di, kept for a retry */
    struct evbuffer *replay; /* body bytes already given to an exchange, for a retry */
    unsigned body_moved : 1; /* some body bytes left req->body for an exchange */
    unsigned end_sent : 1;   /* the body's end was given to the current exchange */
    unsigned replayable : 1;
    unsigned retried : 1;
    unsigned resp_started : 1; /* client response head sent */
    unsigned up_paused : 1;    /* exchange paused for a slow client */
    unsigned body_paused : 1;  /* we paused the client body (backpressure) */
    unsigned splicing : 1;     /* body moves socket -> pipe -> socket in the kernel */
    unsigned up_head : 1;      /* the method sent upstream is HEAD (maybe not the client's) */
    unsigned done : 1;
    /* the exchange's facts when it failed (fg_exchange_info_t), for retries and the log */
    unsigned reused : 1;
    unsigned got_bytes : 1;
    unsigned write_failed : 1;
    unsigned req_sent : 1;
    int pipe[2];
    fg_conn_t *cc;     /* client connection while splicing */
    fg_conn_t *raw;    /* destination connection while splicing */
    size_t in_pipe;    /* bytes spliced from the destination, not yet to the client */
    int64_t resp_left; /* body bytes left while splicing */
    /* shared destination state (shm/health.h) */
    fg_hdest_t *counted;   /* the destination holding this request's in-flight count */
    int record;            /* this worker's index in the arena's worker table */
    uint64_t *tried;       /* failover: bitmap of the destinations that failed (pool) */
    uint64_t first_ms;     /* failover: when the first attempt started (budget) */
    fg_str_t aff_key;      /* affinity key forwarded upstream (keySource tenant) */
    unsigned aff_set : 1;  /* bind the client to the chosen destination in the response */
    unsigned answered : 1; /* passive health already counted this exchange's answer */
    /* the current attempt's failure, for the error log (log_attempt) and the access log */
    int fail_kind;       /* fg_exchange_error_t */
    int fail_err;        /* errno of it, 0 when none */
    int fail_state;      /* fg_exchange_phase_t when it failed */
    const char *tls_why; /* FG_XERR_TLS: OpenSSL's reason (req->pool) */
    unsigned fail_logged : 1;
    unsigned upgrade : 1; /* the request goes with its Upgrade (RFC 9110 7.8) */
    /* An extended CONNECT (RFC 8441): the switch goes to the destination as an HTTP/1.1
     * Upgrade of a GET, the client's stream bytes wait for the 101. */
    unsigned tunnel : 1;
    char ws_key[25]; /* the Sec-WebSocket-Key we generated for it (RFC 6455 4.1), or "" */
    fg_str_t proto;  /* with upgrade: the one protocol asked of the destination (RFC 8441 4) */
    int ws_place;    /* with upgrade: the server's maxWebSockets place (fg_relay_reserve) */
    unsigned trailers_sent : 1; /* the response's trailers went to the client's front end */
} proxy_t;

#define UP_HIGH_WATER (256 * 1024)
#define SPLICE_MIN (1024 * 1024) /* bodies this large skip user space */
#define SPLICE_CHUNK (1024 * 1024)
#define REPLAY_MAX (64 * 1024)
#define NONIDEMPOTENT_REUSE_US (1000 * 1000) /* pooled connections idle longer: fresh one */

static void x_send_ready(void *arg);
static int x_interim(void *arg, int status, fg_http_header_t *h, size_t n);
static int x_head(void *arg, const fg_exchange_head_t *h);
static int x_body(void *arg, struct evbuffer *data);
static int x_trailers(void *arg, fg_http_header_t *t, size_t n);
static void x_end(void *arg);
static void x_error(void *arg, const fg_exchange_fail_t *f);
static void on_body(fg_request_t *req);
static void on_writable(fg_request_t *req);
static void on_abort(fg_request_t *req);

static void release_replay(proxy_t *p);
static int upgrade_headers(proxy_t *p);
static int tunnel_headers(proxy_t *p);
static int switch_protocols(proxy_t *p, const fg_exchange_head_t *h);

static const fg_exchange_cbs_t x_cbs = {
    .on_send_ready = x_send_ready,
    .on_interim = x_interim,
    .on_head = x_head,
    .on_body = x_body,
    .on_trailers = x_trailers,
    .on_end = x_end,
    .on_error = x_error,
};
static const fg_req_handler_t proxy_handler = {on_body, on_writable, on_abort};

/* ---- the request for a destination ---- */

static int build_out(proxy_t *p)
{
    fg_request_t *req = p->req;
    const fg_destination_t *d = &p->cl->destinations[p->di];
    int rc = fg_transform_request(req, d, &p->out);
    if (rc != 0)
        return rc;
    /* FastGateway's tenant-derived session key travels upstream, replacing any sent by the client.
     */
    if (p->aff_key.len &&
        fg_headers_set(&p->out.headers, fg_str(p->cl->affinity.key_name), p->aff_key) != 0)
        return -1;
    p->up_head = fg_str_eq(p->out.method, FG_STR_LIT("HEAD"));
    if (p->tunnel && tunnel_headers(p) != 0)
        return -1;
    return p->upgrade ? upgrade_headers(p) : 0;
}

/* ---- attempts, for the logs ---- */

/* A new attempt at destination p->di: counted, and named in the access log's lists. */
static void begin_attempt(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (req->attempts < FG_MAX_TRIES) {
        req->tries[req->attempts].dest = &p->cl->destinations[p->di];
        req->tries[req->attempts].status = 0;
    }
    if (req->attempts < 255)
        req->attempts++;
    fg_metrics_attempt(p->cl->destinations[p->di].metrics);
    p->fail_kind = FG_XERR_NONE;
    p->fail_err = 0;
    p->fail_logged = 0;
}

static void attempt_status(proxy_t *p, int status)
{
    fg_request_t *req = p->req;
    if (req->attempts > 0 && req->attempts <= FG_MAX_TRIES)
        req->tries[req->attempts - 1].status = status;
}

static const char *termination_of(int kind, int err)
{
    switch (kind) {
    case FG_XERR_CONNECT:
        return "upstream_refused";
    case FG_XERR_CONNECT_TIMEOUT:
        return "upstream_connect_timeout";
    case FG_XERR_SEND_TIMEOUT:
    case FG_XERR_READ_TIMEOUT:
        return "upstream_timeout";
    case FG_XERR_INVALID:
        return "upstream_invalid";
    case FG_XERR_TLS:
        return "upstream_tls";
    default:
        return "upstream_reset";
    }
}

/* The current attempt failed: remember how, for log_attempt and the access log. */
static void set_fail(proxy_t *p, int kind, int err, int phase)
{
    p->fail_kind = kind;
    p->fail_err = err;
    p->fail_state = phase;
    int timeout = kind == FG_XERR_CONNECT_TIMEOUT || kind == FG_XERR_SEND_TIMEOUT ||
                  kind == FG_XERR_READ_TIMEOUT || (kind == FG_XERR_TLS && err == ETIMEDOUT);
    attempt_status(p, timeout ? 504 : 502);
    p->req->termination = termination_of(kind, err);
}

/* "connect() failed (111: Connection refused)" and "while connecting to upstream", in the
 * words nginx uses, so that operators' searches and alerts carry over. */
static void describe_fail(const proxy_t *p, char *what, size_t wl, const char **phase)
{
    int e = p->fail_err;
    *phase = p->fail_kind == FG_XERR_TLS             ? "SSL handshaking to upstream"
             : p->fail_state == FG_XPHASE_CONNECTING ? "connecting to upstream"
             : p->fail_state == FG_XPHASE_BODY       ? "reading upstream"
             : p->write_failed || !p->req_sent       ? "sending request to upstream"
                                                     : "reading response header from upstream";
    switch (p->fail_kind) {
    case FG_XERR_CONNECT:
        snprintf(what, wl, "connect() failed (%d: %s)", e, strerror(e));
        break;
    case FG_XERR_CONNECT_TIMEOUT:
    case FG_XERR_SEND_TIMEOUT:
    case FG_XERR_READ_TIMEOUT:
        snprintf(what, wl, "upstream timed out (%d: %s)", ETIMEDOUT, strerror(ETIMEDOUT));
        break;
    case FG_XERR_EOF:
    case FG_XERR_EOF_BODY:
        snprintf(what, wl, "upstream prematurely closed connection");
        break;
    case FG_XERR_TLS:
        if (e == ETIMEDOUT)
            snprintf(what, wl, "upstream timed out (%d: %s)", ETIMEDOUT, strerror(ETIMEDOUT));
        else
            snprintf(what, wl, "%s", p->tls_why ? p->tls_why : "SSL handshake failed");
        break;
    case FG_XERR_RESET:
        snprintf(what, wl, "%s() failed (%d: %s)", p->write_failed ? "send" : "recv", e,
                 strerror(e));
        break;
    default:
        snprintf(what, wl, "upstream sent an invalid response");
        break;
    }
}

/* The target sent upstream, escaped into buf: path, then "?query". */
static size_t upstream_target(const proxy_t *p, char *buf, size_t len)
{
    size_t n = fg_log_escape_text(buf, len, p->out.path.base, p->out.path.len);
    if (p->out.query.len && n + 2 < len) {
        buf[n++] = '?';
        n += fg_log_escape_text(buf + n, len - n, p->out.query.base, p->out.query.len);
    }
    return n;
}

/* Write the current attempt's failure to the error log at warn, once, with what happens next
 * (`then`). Formats only here: the success path never comes through. */
static void log_attempt(proxy_t *p, const char *then)
{
    if (p->fail_kind == FG_XERR_NONE || p->fail_logged)
        return;
    p->fail_logged = 1;
    if (fg_log_level() < FG_LOG_WARN)
        return;
    const fg_request_t *req = p->req;
    const fg_destination_t *d = &p->cl->destinations[p->di];
    char what[256], addr[64], line[600], host[260], target[520];
    const char *phase;
    describe_fail(p, what, sizeof(what), &phase);
    fg_upstream_addr_text(d, addr, sizeof(addr));
    size_t n = fg_log_escape_text(line, 256, req->method.base, req->method.len);
    line[n++] = ' ';
    n += fg_log_escape_text(line + n, sizeof(line) - n - 12, req->target.base, req->target.len);
    memcpy(line + n, req->version == 10 ? " HTTP/1.0" : " HTTP/1.1", 9);
    n += 9;
    size_t hl = fg_log_escape_text(host, sizeof(host), req->host.base, req->host.len);
    size_t tl = upstream_target(p, target, sizeof(target));
    fg_log_warn("%s while %s, client: %s, server: %s, request: \"%.*s\", upstream: "
                "\"%s://%s%.*s\", host: \"%.*s\", route: %s, cluster: %s, destination: %s, "
                "request_id: %s, attempt: %u; %s",
                what, phase, req->client_ip, req->server ? req->server->id : "-", (int)n, line,
                d->https ? "https" : "http", addr, (int)tl, target, (int)hl, host,
                req->route ? req->route->id : "-", p->cl->id, d->id, req->request_id,
                (unsigned)req->attempts, then);
}

/* ---- shared destination state ---- */

/* The request now counts against destination p->di (shm: seen by every worker's balancer). */
static void count_begin(proxy_t *p)
{
    fg_hdest_t *d = p->cl->destinations[p->di].state;
    if (d == NULL || p->counted == d)
        return;
    fg_health_begin(fg_health_zone(p->w->shm), d, p->record);
    p->counted = d;
}

/* Every way an exchange ends passes here (complete, fail, client abort, failover); a worker
 * that dies instead has its shares given back by the master (fg_health_worker_gone). */
static void count_end(proxy_t *p)
{
    if (p->counted == NULL)
        return;
    fg_health_end(fg_health_zone(p->w->shm), p->counted, p->record);
    p->counted = NULL;
}

/* The exchange ends without a relay: its maxWebSockets place is free again. */
static void release_place(proxy_t *p)
{
    if (p->ws_place == FG_RELAY_PLACE_NONE)
        return; /* no upgrade: every plain request passes here */
    fg_relay_unreserve(p->w, p->req->server, p->ws_place);
    p->ws_place = FG_RELAY_PLACE_NONE;
}

/* Passive health: a transport outcome of destination p->di (failures are refused, reset,
 * closed or timed out; a 5xx is an answer and a client abort is not the destination's fault).
 * An exchange whose answer was already counted adds a failure, not a second request. */
/* The attempt found the agent's tunnel without a stream for it (worker/tunnel/client.h). */
static int tunnel_full(const proxy_t *p)
{
    return p->fail_kind == FG_XERR_CONNECT && p->cl->destinations[p->di].tunnel &&
           (p->fail_err == EAGAIN || p->fail_err == EBUSY);
}

static void report(proxy_t *p, int failed)
{
    fg_metrics_attempt_done(p->cl->destinations[p->di].metrics, failed,
                            failed ? 0 : p->req->upstream_connect_us,
                            failed ? 0 : p->req->upstream_us);
    fg_hdest_t *d = p->cl->destinations[p->di].state;
    if (d == NULL)
        return;
    if (failed && tunnel_full(p))
        return; /* the destination is up: its agent's tunnel is busy */
    int outcome = !failed       ? FG_PASSIVE_OK
                  : p->answered ? FG_PASSIVE_FAILED_LATE
                                : FG_PASSIVE_FAILED;
    p->answered |= !failed;
    if (fg_health_passive_report(d, &p->cl->health, outcome, fg_clock_now_ms()))
        fg_log_warn("cluster %s destination %s: unhealthy after transport failures (passive), "
                    "back in %llu ms",
                    p->cl->id, p->cl->destinations[p->di].id,
                    (unsigned long long)p->cl->health.reactivation_ms);
}

/* ---- finishing ---- */

static void stop_splice(proxy_t *p)
{
    if (!p->splicing)
        return;
    close(p->pipe[0]);
    close(p->pipe[1]);
    p->splicing = 0;
    p->raw = NULL;
}

/* Detach from the exchange: its connection goes back to the pool when it ended cleanly and
 * the protocol allows reuse. */
static void drop_upstream(proxy_t *p, int complete)
{
    stop_splice(p);
    fg_exchange_t *x = p->x;
    p->x = NULL;
    if (x == NULL)
        return;
    if (complete)
        fg_exchange_release(x);
    else
        fg_exchange_close(x);
}

/* The gateway's own error answer on a proxied route. It is the route's response too: its
 * ResponseHeader transforms with When Failure or Always apply, as YARP runs the response
 * transforms when the destination gave no response. */
static void proxy_error(fg_request_t *req, int status, const char *error, const char *msg)
{
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 2);
    if (fg_transform_response(req, status, &h) != 0)
        h.n = 0; /* out of pool memory: the plain error still tells the client */
    fg_request_error_with(req, status, error, msg, h.n ? &h : NULL);
}

static void fail(proxy_t *p, int status, const char *error, const char *msg)
{
    fg_request_t *req = p->req;
    if (p->fail_kind != FG_XERR_NONE)
        log_attempt(p, p->resp_started ? "response truncated"
                       : status == 504 ? "answering 504"
                                       : "answering 502");
    drop_upstream(p, 0);
    release_replay(p);
    count_end(p);
    release_place(p);
    p->done = 1;
    if (p->resp_started) {
        req->error = error;
        req->ops->abort(req);
        return;
    }
    proxy_error(req, status, error, msg);
}

static void complete(proxy_t *p)
{
    fg_request_t *req = p->req;
    req->termination = NULL;
    p->done = 1;
    drop_upstream(p, req->body_done);
    release_replay(p);
    count_end(p);
    release_place(p);
    req->ops->finish(req);
}

/* The exchange's timings for the access log. */
static void sync_timing(proxy_t *p)
{
    const fg_exchange_info_t *in = fg_exchange_info(p->x);
    p->req->upstream_connect_us = in->connect_us;
    if (in->first_byte_us)
        p->req->upstream_first_us = in->first_byte_us;
}

/* ---- sending ---- */

/* Keep a copy of the body bytes about to leave req->body, while the exchange may have to be
 * sent again on a fresh connection, up to REPLAY_MAX. */
static void keep_for_replay(proxy_t *p)
{
    struct evbuffer *body = p->req->body;
    size_t n = evbuffer_get_length(body);
    if (!p->replayable || p->replay == NULL || n == 0)
        return;
    if (evbuffer_get_length(p->replay) + n > REPLAY_MAX) {
        p->replayable = 0;
        return;
    }
    struct evbuffer_iovec v[16];
    struct evbuffer_ptr at;
    evbuffer_ptr_set(body, &at, 0, EVBUFFER_PTR_SET);
    for (size_t off = 0; off < n;) {
        int nv = evbuffer_peek(body, (ev_ssize_t)(n - off), &at, v, 16);
        if (nv <= 0)
            break;
        for (int i = 0; i < nv && i < 16; i++) {
            evbuffer_add(p->replay, v[i].iov_base, v[i].iov_len);
            off += v[i].iov_len;
        }
        evbuffer_ptr_set(body, &at, off, EVBUFFER_PTR_SET);
    }
}

/* Pause the client body while more than the high watermark waits to be written (`queued`),
 * resume it once a quarter of that is left. Every pause has a resume: on_body and
 * x_send_ready (connect, drain) both come through here, so a pause decided while connecting is
 * lifted by the first flush even when the kernel takes everything at once and no write event
 * follows. */
static void body_backpressure(proxy_t *p, size_t queued)
{
    fg_request_t *req = p->req;
    if (req->body_done)
        return;
    if (!p->body_paused && queued > UP_HIGH_WATER) {
        p->body_paused = 1;
        req->ops->pause_body(req, 1);
    } else if (p->body_paused && queued <= UP_HIGH_WATER / 4) {
        p->body_paused = 0;
        req->ops->pause_body(req, 0);
    }
}

/* Keep, in place, the trailer fields a proxy may forward (RFC 9110 6.5.1: not framing,
 * routing, authentication, controls...; fg_headers_trailer_allowed) and, for a request's
 * (route not NULL), not a field a ClientCert transform owns. Returns how many. */
static size_t relayable(const fg_route_t *route, fg_http_header_t *t, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (fg_headers_trailer_allowed(t[i].name) &&
            fg_transform_request_trailer_allowed(route, t[i].name))
            t[k++] = t[i];
    return k;
}

/* Give the exchange the body bytes that arrived and, once complete, the body's end; then
 * pause the client while too much waits. Returns -1 when the exchange failed (p may be gone). */
static int move_body(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (p->tunnel) {
        /* The stream's bytes are the new protocol's (the relay takes them): the exchange gets
         * only the request's end, which sends its head. */
        if (p->end_sent)
            return 0;
        p->end_sent = 1;
        return fg_exchange_send_body(p->x, NULL, 1);
    }
    if (evbuffer_get_length(req->body) > 0) {
        keep_for_replay(p);
        p->body_moved = 1;
    }
    int end = req->body_done && !p->end_sent;
    p->end_sent |= end;
    size_t nt = end && req->trailers ? relayable(req->route, req->trailers, req->ntrailers) : 0;
    if (nt > 0) {
        if (fg_exchange_send_body(p->x, req->body, 0) != 0 ||
            fg_exchange_send_trailers(p->x, req->trailers, nt) != 0)
            return -1;
    } else if (fg_exchange_send_body(p->x, req->body, end) != 0) {
        return -1;
    }
    body_backpressure(p, fg_exchange_pending(p->x));
    return 0;
}

/* A body small enough to keep a copy of, for a retry on a fresh connection. A chunked body is
 * copied while it fits (keep_for_replay gives up beyond REPLAY_MAX). */
static int req_wants_replay(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (!req->has_body)
        return 1;
    if (req->content_length > REPLAY_MAX)
        return 0;
    if (p->replay == NULL)
        p->replay = evbuffer_new();
    return p->replay != NULL;
}

static void release_replay(proxy_t *p)
{
    if (p->replay) {
        evbuffer_free(p->replay);
        p->replay = NULL;
    }
}

static int may_fail_over(const proxy_t *p);

static int idempotent(fg_str_t m);

/* Whether the request may be sent again after it reached a destination. */
static int retry_allowed(const proxy_t *p)
{
    return idempotent(p->req->method) || p->cl->failover.allow_non_idempotent;
}

/* Start an attempt at destination di. Returns -1 when no connection could be started (the
 * failure is recorded), 0 otherwise (p may be gone when the exchange failed at once). */
static int start_exchange(proxy_t *p, int fresh)
{
    fg_request_t *req = p->req;
    /* A pooled connection may have been closed by the destination while idle; the request is
     * then sent again on a fresh one, which needs the body. A body too large to keep a copy of
     * goes straight to a fresh connection, so a stale one never costs the client a 502. */
    if (req->content_length > REPLAY_MAX)
        fresh = 1;
    /* A non-idempotent request is never sent twice (RFC 9110 9.2.2), so it only rides a pooled
     * connection used moments ago: destinations close idle connections after seconds, and a
     * connection that fresh is very unlikely to be in the middle of being closed. */
    uint64_t timeout = p->cl->connect_timeout_ms;
    if (p->cl->failover.enabled) {
        uint64_t spent = fg_clock_now_ms() - p->first_ms;
        uint64_t left = spent < p->cl->failover.budget_ms ? p->cl->failover.budget_ms - spent : 1;
        timeout =
            p->cl->failover.connect_timeout_ms < left ? p->cl->failover.connect_timeout_ms : left;
    }
    fg_exchange_target_t t = {.w = p->w,
                              .cl = p->cl,
                              .di = (size_t)p->di,
                              .fresh = fresh,
                              .max_idle_us = retry_allowed(p) ? 0 : NONIDEMPOTENT_REUSE_US,
                              .connect_timeout_ms = timeout,
                              .activity_timeout_ms = p->cl->activity_timeout_ms,
                              .exempt_event_streams = req->route->exempt_event_streams,
                              .hopped = req->hop_dest != 0};
    /* On a retry, what the lost exchange already carried goes first. */
    fg_exchange_req_t rq = {.out = &p->out,
                            .content_length = req->content_length,
                            .replay = p->body_moved ? p->replay : NULL,
                            .has_body = req->has_body && !p->tunnel,
                            .upgrade = p->upgrade,
                            .protocol = p->proto};
    count_begin(p);
    begin_attempt(p);
    req->upstream_connect_us = 0;
    p->end_sent = 0;
    p->x = fg_client_start(&t, &rq, &x_cbs, p);
    if (p->x == NULL) {
        int e = errno;
        set_fail(p, FG_XERR_CONNECT, e, FG_XPHASE_CONNECTING);
        errno = e;
        return -1;
    }
    /* A fresh connection keeps the body only when failover may have to send it again. Its
     * body stays in req->body until the connect succeeds (x_send_ready), so a failed connect
     * leaves it there for the next destination. */
    int reused = fg_exchange_info(p->x)->reused;
    if (!p->body_moved)
        p->replayable = (reused || may_fail_over(p)) && req_wants_replay(p);
    if (reused)
        move_body(p);
    return 0;
}

/* A reused keep-alive connection that fails before any response byte was probably closed by
 * the destination while idle: try once more on a fresh one if the body can be sent again.
 * eof: the destination closed the connection cleanly. A non-idempotent request is sent again
 * only when the destination cannot have processed it (RFC 9110 9.2.2): it closed the idle
 * connection (a clean EOF before any response byte) or refused our bytes. A reset after the
 * whole request went out may follow a crash mid-request: that one is answered 502. */
static int try_again(proxy_t *p, int eof)
{
    if (p->retried || p->x == NULL || !p->reused || p->got_bytes || p->resp_started)
        return -1;
    if (!retry_allowed(p) && !eof && !p->write_failed && p->req_sent)
        return -1;
    if (p->body_moved && !p->replayable)
        return -1;
    p->retried = 1;
    log_attempt(p, "retrying on a new connection");
    drop_upstream(p, 0);
    if (start_exchange(p, 1) != 0)
        return -1;
    return 0;
}

/* RFC 9110 9.2.2: a request with an idempotent method may be sent again. */
static int idempotent(fg_str_t m)
{
    static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", NULL};
    for (int i = 0; ok[i]; i++)
        if (fg_str_eq(m, fg_str(ok[i])))
            return 1;
    return 0;
}

static int may_fail_over(const proxy_t *p)
{
    const fg_failover_config_t *f = &p->cl->failover;
    /* a hop's destination was chosen by the worker that received the request */
    return f->enabled && !p->req->hop_dest &&
           (f->allow_non_idempotent || idempotent(p->req->method));
}

/* Failover: the destination failed before answering (connect refused or timed out, reset) and
 * nothing of the response reached the client: send the request to another destination that
 * has not failed it, within the cluster's budget, when its method and body allow it. Returns 0
 * when a new attempt started. */
static int fail_over(proxy_t *p)
{
    if (!may_fail_over(p) || p->resp_started || p->got_bytes)
        return -1;
    if (p->body_moved && !p->replayable)
        return -1;
    for (;;) {
        uint64_t now = fg_clock_now_ms();
        if (now - p->first_ms >= p->cl->failover.budget_ms)
            return -1;
        if (p->tried == NULL &&
            (p->tried = fg_pool_calloc(p->req->pool, (p->cl->ndestinations + 63) / 64 * 8)) == NULL)
            return -1;
        p->tried[p->di / 64] |= 1ULL << (p->di % 64);
        fg_pick_t pk = {now, p->tried, p->di};
        int next = fg_balancer_select(fg_upstream_balancer(p->w, p->cl), p->cl, &pk, NULL);
        if (next < 0 || next == p->di)
            return -1;
        char then[160];
        snprintf(then, sizeof(then), "failing over to destination %s",
                 p->cl->destinations[next].id);
        log_attempt(p, then);
        drop_upstream(p, 0);
        count_end(p);
        p->di = next;
        p->retried = 0;
        p->reused = p->got_bytes = p->write_failed = p->req_sent = 0;
        if (p->cl->affinity.enabled && p->cl->affinity.key_source != FG_AFF_KEY_TENANT)
            p->aff_set = 1; /* the session moves with the request */
        if (build_out(p) != 0)
            return -1;
        if (start_exchange(p, 0) == 0)
            return 0;
        report(p, 1); /* refused at once: try the next one */
    }
}

/* ---- response ---- */

/* Move body bytes destination -> pipe -> client until one side would block. Returns 1 when the
 * exchange ended (p is gone), 0 to wait (for the destination's readability, or the client's
 * writability through on_writable), -1 on a client error, -3 on a destination error. */
static int splice_pump(proxy_t *p)
{
    fg_request_t *req = p->req;
    for (;;) {
        while (p->in_pipe > 0) {
            ssize_t n = fg_conn_splice_out(p->cc, p->pipe[0], p->in_pipe);
            if (n > 0) {
                p->in_pipe -= (size_t)n;
                p->resp_left -= n;
                fg_exchange_raw_consumed(p->x, (size_t)n);
                req->bytes_out += (uint64_t)n;
                continue;
            }
            if (n == -EINTR)
                continue;
            if (n == -EAGAIN) {
                /* Stop watching the destination until the client drains, or its level-
                 * triggered readiness would spin the loop. */
                fg_conn_read(p->raw, 0, 0);
                req->ops->want_writable(req);
                return 0;
            }
            return -1;
        }
        if (p->resp_left == 0) {
            complete(p);
            return 1;
        }
        size_t want = p->resp_left > SPLICE_CHUNK ? SPLICE_CHUNK : (size_t)p->resp_left;
        ssize_t n = fg_conn_splice_in(p->raw, p->pipe[1], want);
        if (n > 0) {
            p->in_pipe = (size_t)n;
            continue;
        }
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN)
            return 0; /* the raw read event calls again */
        return -3;    /* 0: the destination closed before the declared length */
    }
}

static void pump(proxy_t *p)
{
    int r = splice_pump(p);
    if (r == -1) {
        p->req->termination = "client_aborted";
        fail(p, 502, "client_error", "client write failed");
    } else if (r == -3) {
        set_fail(p, FG_XERR_EOF_BODY, 0, FG_XPHASE_BODY);
        fail(p, 502, "bad_gateway", "upstream closed the connection before the body ended");
    }
}

/* Switch a large identity-framed body to splice(2) when both sides are plain sockets and
 * nothing is buffered in user space. */
static void start_splice(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (p->up_paused || req->ops->raw_conn == NULL)
        return;
    int64_t left = fg_exchange_raw_left(p->x);
    if (left < SPLICE_MIN)
        return;
    p->cc = req->ops->raw_conn(req);
    if (p->cc == NULL || !fg_conn_can_splice(p->cc) || pipe2(p->pipe, O_NONBLOCK | O_CLOEXEC) == -1)
        return;
    fcntl(p->pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK);
    p->splicing = 1;
    p->in_pipe = 0;
    p->resp_left = left;
    p->raw = fg_exchange_raw_begin(p->x);
}

/* The final response's fields: the destination's end-to-end ones, the affinity cookie, the
 * route's transforms. */
static int response_headers(proxy_t *p, const fg_exchange_head_t *h, fg_headers_t *out)
{
    fg_headers_init(out, p->req->pool, h->num_headers + 4);
    if (fg_transform_copy_fields(p->req, 0, h->headers, h->num_headers, out) != 0)
        return -1;
    if (h->status == 503 && p->cl->destinations[p->di].tunnel)
        fg_headers_remove(out, FG_STR_LIT(FG_TUNNEL_FULL_FIELD)); /* between workers only */
    if (p->aff_set) {
        fg_str_t an, av;
        if (fg_affinity_response(p->cl, (size_t)p->di, p->req->pool, &an, &av) != 0 ||
            fg_headers_add(out, an, av) != 0)
            return -1;
    }
    return fg_transform_response(p->req, h->status, out);
}

/* The exchange can take body bytes (connected, or its output drained): give it what the
 * client sent meanwhile. */
static void x_send_ready(void *arg)
{
    proxy_t *p = arg;
    sync_timing(p);
    move_body(p);
}

/* Interim responses (RFC 9110 15.2). A proxy MUST forward them unless it asked for them
 * itself: 100 Continue is the gateway's own business (it answered any Expect: 100-continue and
 * never forwards Expect); others, such as 103 Early Hints, go to the client. The exchange
 * bounds how many come (and so the pool they take); the client's pace bounds their output. */
static int x_interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    proxy_t *p = arg;
    fg_request_t *req = p->req;
    if (status == 100)
        return 0;
    fg_headers_t hdrs;
    fg_headers_init(&hdrs, req->pool, n + 1);
    for (size_t i = 0; i < n; i++)
        if (fg_headers_add(&hdrs, h[i].name, h[i].value) != 0)
            goto fail;
    if (req->ops->send_interim(req, status, &hdrs) != 0)
        goto fail;
    if (req->ops->pending(req) > UP_HIGH_WATER) {
        /* A client that does not read: interim heads wait like body bytes (on_writable). */
        p->up_paused = 1;
        fg_exchange_pause(p->x, 1);
    }
    return 0;
fail:
    fail(p, 502, "internal_error", "cannot relay an interim response");
    return -1;
}

static int x_head(void *arg, const fg_exchange_head_t *h)
{
    proxy_t *p = arg;
    fg_request_t *req = p->req;
    if (h->status == 101)
        return switch_protocols(p, h);
    /* RFC 8441 5: to an extended CONNECT, a 2xx is the switch. */
    if (fg_exchange_info(p->x)->extended_connect && h->status >= 200 && h->status < 300)
        return switch_protocols(p, h);
    if (p->tunnel && h->status >= 200 && h->status < 300) {
        /* RFC 8441 5: a 2xx opens the tunnel; a destination that ignored the Upgrade and
         * answered the GET did not switch, so the client must not be told it did. */
        attempt_status(p, h->status);
        set_fail(p, FG_XERR_INVALID, 0, FG_XPHASE_BODY);
        fail(p, 502, "bad_gateway", "upstream did not switch protocols");
        return -1;
    }
    release_place(p); /* an answer that is no switch: no WebSocket, whatever its body's length */
    sync_timing(p);
    req->upstream_us = fg_clock_now_us() - fg_exchange_info(p->x)->sent_at_us;
    attempt_status(p, h->status);
    req->termination = NULL;
    report(p, 0);
    int64_t length = h->content_length;
    if (h->bodiless) {
        /* The client's own HEAD keeps the length it would have had; a client whose GET went
         * upstream as HEAD (HttpMethodChange) gets what it will receive: nothing. */
        int client_head = fg_str_eq(req->method, FG_STR_LIT("HEAD"));
        length = p->up_head && !client_head ? 0 : h->content_length;
    }
    fg_headers_t hdrs;
    req->relayed = 1; /* the destination's Date and Server stand (fg_request_stamp) */
    if (response_headers(p, h, &hdrs) != 0 ||
        req->ops->send_head(req, h->status, &hdrs, length) != 0) {
        fail(p, 502, "internal_error", "cannot relay the response head");
        return -1;
    }
    p->resp_started = 1;
    start_splice(p); /* a head that came alone: the whole body may bypass user space */
    return 0;
}

static int x_body(void *arg, struct evbuffer *data)
{
    proxy_t *p = arg;
    fg_request_t *req = p->req;
    if (data == NULL) {
        if (p->splicing)
            pump(p);
        return 0;
    }
    if (req->ops->send_body(req, data) != 0) {
        req->termination = "client_aborted";
        fail(p, 502, "client_error", "client write failed");
        return -1;
    }
    if (req->ops->pending(req) > UP_HIGH_WATER) {
        /* A slow client: stop reading the destination until it catches up. */
        p->up_paused = 1;
        fg_exchange_pause(p->x, 1);
        return 0;
    }
    /* Everything buffered went out: the rest of a large body can bypass user space. */
    start_splice(p);
    return 0;
}

/* The destination's trailers, through the route's trailer transforms, go to the client when
 * its front end carries them (ops NULL: dropped, RFC 9110 6.5.1). Fields that may not be
 * trailers (RFC 9110 6.5.1) are left out. The exchange's slices live until on_end, so the
 * trailers are copied into the request's pool now: a front end may write them after the
 * exchange ended (an HTTP/2 stream's last DATA). Returns 0 or -1 (p failed). */
static int send_trailers(proxy_t *p, fg_http_header_t *t, size_t n)
{
    fg_request_t *req = p->req;
    p->trailers_sent = 1;
    if (req->ops->send_trailers == NULL)
        return 0;
    fg_headers_t hdrs;
    fg_headers_init(&hdrs, req->pool, n + 2);
    if (fg_transform_trailers(req, req->status, t, n, &hdrs) != 0)
        goto oom;
    hdrs.n = relayable(NULL, hdrs.v, hdrs.n);
    for (size_t i = 0; i < hdrs.n; i++) {
        hdrs.v[i].name = fg_pool_str(req->pool, hdrs.v[i].name);
        hdrs.v[i].value = fg_pool_str(req->pool, hdrs.v[i].value);
        if (hdrs.v[i].name.base == NULL || hdrs.v[i].value.base == NULL)
            goto oom;
    }
    if (hdrs.n == 0)
        return 0;
    if (req->ops->send_trailers(req, &hdrs) != 0) {
        req->termination = "client_aborted";
        fail(p, 502, "client_error", "client write failed");
        return -1;
    }
    return 0;
oom:
    fail(p, 502, "internal_error", "out of memory");
    return -1;
}

static int x_trailers(void *arg, fg_http_header_t *t, size_t n)
{
    return send_trailers(arg, t, n);
}

static void x_end(void *arg)
{
    proxy_t *p = arg;
    /* A ResponseTrailer transform adds its trailer when the destination sent none, as YARP
     * runs its trailer transforms after every proxied body. */
    if (!p->trailers_sent && fg_transform_adds_trailers(p->req->route) &&
        send_trailers(p, NULL, 0) != 0)
        return;
    complete(p);
}

static void x_error(void *arg, const fg_exchange_fail_t *f)
{
    proxy_t *p = arg;
    const fg_exchange_info_t *in = fg_exchange_info(p->x);
    p->reused = in->reused;
    p->got_bytes = in->got_bytes;
    p->write_failed = in->write_failed;
    p->req_sent = in->req_sent;
    sync_timing(p);
    if (f->kind == FG_XERR_NONE) {
        fail(p, 502, "internal_error", f->detail);
        return;
    }
    set_fail(p, f->kind, f->err, f->phase);
    switch (f->kind) {
    case FG_XERR_EOF:
    case FG_XERR_EOF_BODY:
        if (try_again(p, 1) == 0)
            return;
        report(p, 1); /* closed before the answer, or before the body's end */
        if (fail_over(p) == 0)
            return;
        fail(p, 502, "bad_gateway", f->detail);
        return;
    case FG_XERR_CONNECT_TIMEOUT:
        report(p, 1);
        if (fail_over(p) == 0)
            return;
        fail(p, 504, "gateway_timeout", f->detail);
        return;
    case FG_XERR_SEND_TIMEOUT:
        report(p, 1);
        fail(p, 504, "gateway_timeout", f->detail);
        return;
    case FG_XERR_READ_TIMEOUT:
        /* YARP counts an activity timeout against the destination, and so do we once it had the
         * whole request: before that, the silence may be the client's slow upload. */
        if (p->req_sent)
            report(p, 1);
        fail(p, 504, "gateway_timeout", f->detail);
        return;
    case FG_XERR_INVALID:
        fail(p, 502, "bad_gateway", f->detail);
        return;
    case FG_XERR_TLS: {
        /* A destination whose certificate or handshake fails is failing, as a refused connect
         * is. The reason goes to the error log only, not to the client. */
        p->tls_why = f->detail ? fg_pool_strndup(p->req->pool, f->detail, strlen(f->detail)) : NULL;
        report(p, 1);
        if (fail_over(p) == 0)
            return;
        int timeout = f->err == ETIMEDOUT;
        fail(p, timeout ? 504 : 502, timeout ? "gateway_timeout" : "bad_gateway",
             timeout ? "upstream TLS handshake timed out" : "upstream TLS handshake failed");
        return;
    }
    default: {
        if (f->kind == FG_XERR_RESET && try_again(p, 0) == 0)
            return;
        report(p, 1);
        if (fail_over(p) == 0)
            return;
        char msg[128];
        snprintf(msg, sizeof(msg), "upstream %s: %s",
                 f->kind == FG_XERR_CONNECT ? "connect failed" : "connection failed",
                 strerror(f->err));
        fail(p, 502, "bad_gateway", msg);
        return;
    }
    }
}

/* ---- protocol switches (RFC 9110 7.8, RFC 6455 4) ---- */

/* Whether the comma-separated protocol list (an Upgrade field value, RFC 9110 7.8) names
 * proto; protocol names compare case-insensitively, a "/version" ignored on both sides. */
static int names_protocol(fg_str_t list, fg_str_t proto)
{
    size_t pl = 0;
    while (pl < proto.len && proto.base[pl] != '/')
        pl++;
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.base[i] == ' ' || list.base[i] == '\t' || list.base[i] == ','))
            i++;
        size_t b = i;
        while (i < list.len && list.base[i] != ',' && list.base[i] != '/' && list.base[i] != ' ' &&
               list.base[i] != '\t')
            i++;
        if (i - b == pl && pl > 0 &&
            fg_str_ieq((fg_str_t){list.base + b, pl}, (fg_str_t){proto.base, pl}))
            return 1;
        while (i < list.len && list.base[i] != ',')
            i++;
    }
    return 0;
}

/* Whether the route relays a switch to one of the protocols in list. */
static int route_allows(const fg_route_t *rt, fg_str_t list)
{
    for (size_t i = 0; i < rt->nupgrade_protocols; i++)
        if (names_protocol(list, fg_str(rt->upgrade_protocols[i])))
            return 1;
    return 0;
}

/* The first protocol of the client's Upgrade list that the route relays, without its
 * "/version": the one an extended CONNECT names (RFC 8441 4 has a single :protocol). */
static fg_str_t chosen_protocol(const fg_route_t *rt, fg_str_t list)
{
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.base[i] == ' ' || list.base[i] == '\t' || list.base[i] == ','))
            i++;
        size_t b = i;
        while (i < list.len && list.base[i] != ',' && list.base[i] != '/' && list.base[i] != ' ' &&
               list.base[i] != '\t')
            i++;
        fg_str_t name = {list.base + b, i - b};
        if (name.len > 0 && route_allows(rt, name))
            return name;
        while (i < list.len && list.base[i] != ',')
            i++;
    }
    return FG_STR_NULL;
}

/* One of the server's maxWebSockets places for this exchange, held until it switches (the
 * relay takes it) or ends. Returns 0, or -1 after answering 503. */
static int reserve_place(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (req->server == NULL)
        return 0;
    int place = fg_relay_reserve(p->w, req->server);
    if (place < 0) {
        req->termination = "websocket_limit";
        fg_request_error(req, 503, "service_unavailable", "too many open WebSockets");
        return -1;
    }
    p->ws_place = place;
    return 0;
}

/* An extended CONNECT (RFC 8441 4) is only a request to switch: a route that does not relay
 * its :protocol, or a front end that cannot hand its stream over, answers 501 (RFC 9110
 * 15.6.2), past maxWebSockets 503. The stream's bytes stay where they are (body paused) until
 * the destination switched. Returns 0 to go on, -1 after answering. */
static int begin_tunnel(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (req->ops->switch_protocols == NULL || !route_allows(req->route, req->protocol)) {
        fg_request_error(req, 501, "not_implemented", "the route does not relay this protocol");
        return -1;
    }
    if (reserve_place(p) != 0)
        return -1;
    req->upgrade = req->protocol;
    p->proto = req->protocol;
    p->upgrade = 1;
    p->tunnel = 1;
    req->ops->pause_body(req, 1);
    return 0;
}

/* Decide whether the client's Upgrade goes to the destination: a switch the route allows,
 * asked without a body (the new protocol's bytes would follow it), through a front end that
 * can hand its connection over. Otherwise the request goes without it, which RFC 9110 7.8
 * allows ("a server MAY ignore a received Upgrade"). Past the server's maxWebSockets the
 * answer is 503. Returns 0 to go on, -1 after answering. */
static int begin_upgrade(proxy_t *p)
{
    fg_request_t *req = p->req;
    if (req->protocol.len > 0)
        return begin_tunnel(p);
    if (req->upgrade.len == 0 || req->has_body || req->ops->switch_protocols == NULL ||
        !route_allows(req->route, req->upgrade))
        return 0;
    if (reserve_place(p) != 0)
        return -1;
    p->upgrade = 1;
    p->proto = chosen_protocol(req->route, req->upgrade);
    return 0;
}

/* The hop-by-hop fields of this exchange's switch, for the destination (RFC 9110 7.8: the
 * Upgrade field, and Connection naming it). Sec-WebSocket-* are end-to-end and already there. */
static int upgrade_headers(proxy_t *p)
{
    if (fg_headers_set(&p->out.headers, FG_STR_LIT("Upgrade"), p->req->upgrade) != 0 ||
        fg_headers_set(&p->out.headers, FG_STR_LIT("Connection"), FG_STR_LIT("upgrade")) != 0)
        return -1;
    return 0;
}

/* An extended CONNECT as an HTTP/1.1 switch (RFC 8441 5): a GET, and for WebSocket a key of
 * our own (RFC 6455 4.1: 16 random bytes, base64); Sec-WebSocket-Version, -Protocol and
 * -Extensions are the client's and already copied. */
static int tunnel_headers(proxy_t *p)
{
    p->out.method = FG_STR_LIT("GET");
    if (!names_protocol(p->req->protocol, FG_STR_LIT("websocket")))
        return 0;
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)p->ws_key, raw, sizeof(raw));
    return fg_headers_set(&p->out.headers, FG_STR_LIT("Sec-WebSocket-Key"), fg_str(p->ws_key));
}

/* RFC 6455 4.2.2: Sec-WebSocket-Accept is base64(SHA-1(key + the GUID)), written into out
 * (29 bytes, NUL-terminated). Returns its length, or -1 (a key of 24 characters only, RFC 6455
 * 4.1: 16 bytes in base64). */
static int ws_accept(fg_str_t key, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[24 + sizeof(guid)];
    unsigned char md[20];
    if (key.len != 24)
        return -1;
    memcpy(in, key.base, 24);
    memcpy(in + 24, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, 24 + sizeof(guid) - 1, md, NULL, EVP_sha1(), NULL) != 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, sizeof(md));
}

/* The 101's Sec-WebSocket-Accept must answer our key (RFC 8441 5: the gateway stands in for
 * the client's check). Returns 1 when it does. */
static int accept_ok(const proxy_t *p, const fg_exchange_head_t *h)
{
    char want[29];
    int n = ws_accept(fg_str(p->ws_key), want);
    for (size_t i = 0; n > 0 && i < h->num_headers; i++)
        if (fg_str_ieq(h->headers[i].name, FG_STR_LIT("Sec-WebSocket-Accept")))
            return fg_str_eq(h->headers[i].value, (fg_str_t){want, (size_t)n});
    return 0;
}

/* An HTTP/1.1 client's 101 for a switch the destination made on an HTTP/2 stream (RFC 8441
 * 5): Upgrade names the protocol, and for WebSocket the gateway answers the client's key
 * itself (RFC 6455 4.2.2; Connection is the front end's). Returns 0 or -1. */
static int h1_switch_headers(proxy_t *p, fg_headers_t *hdrs)
{
    fg_request_t *req = p->req;
    fg_headers_remove(hdrs, FG_STR_LIT("Sec-WebSocket-Accept"));
    if (fg_headers_set(hdrs, FG_STR_LIT("Upgrade"), p->proto) != 0)
        return -1;
    const fg_http_header_t *key = fg_request_header(req, FG_STR_LIT("Sec-WebSocket-Key"));
    if (key == NULL || !names_protocol(p->proto, FG_STR_LIT("websocket")))
        return 0;
    char *acc = fg_pool_alloc(req->pool, 29);
    int n = acc ? ws_accept(key->value, acc) : -1;
    if (n < 0)
        return 0; /* no valid key: no answer to it, the client's check fails as it should */
    return fg_headers_set(hdrs, FG_STR_LIT("Sec-WebSocket-Accept"), (fg_str_t){acc, (size_t)n});
}

/* The 101's protocol: its Upgrade field's value, or an empty slice. */
static fg_str_t switched_to(const fg_exchange_head_t *h)
{
    for (size_t i = 0; i < h->num_headers; i++)
        if (fg_str_ieq(h->headers[i].name, FG_STR_LIT("Upgrade")))
            return h->headers[i].value;
    return FG_STR_NULL;
}

/* The destination switched protocols: the connection leaves the exchange for a relay whose
 * other end the front end gives. A switch to a protocol the client did not offer, or the route
 * does not allow, is an invalid answer (RFC 9110 7.8: the server MUST NOT switch to one the
 * client did not ask for). Returns -1 (the exchange is gone either way). */
static int switch_protocols(proxy_t *p, const fg_exchange_head_t *h)
{
    fg_request_t *req = p->req;
    int stream = h->status != 101; /* a 2xx to an extended CONNECT: the stream is the end */
    sync_timing(p);
    req->upstream_us = fg_clock_now_us() - fg_exchange_info(p->x)->sent_at_us;
    attempt_status(p, h->status);
    fg_str_t proto = stream ? p->proto : switched_to(h);
    if (proto.len == 0 || !names_protocol(req->upgrade, proto) ||
        !route_allows(req->route, proto)) {
        set_fail(p, FG_XERR_INVALID, 0, FG_XPHASE_BODY);
        fail(p, 502, "bad_gateway", "upstream switched to a protocol the client did not ask for");
        return -1;
    }
    if (!stream && p->ws_key[0] && !accept_ok(p, h)) {
        set_fail(p, FG_XERR_INVALID, 0, FG_XPHASE_BODY);
        fail(p, 502, "bad_gateway", "upstream's Sec-WebSocket-Accept does not match the key");
        return -1;
    }
    req->termination = NULL;
    report(p, 0);
    fg_headers_t hdrs;
    uint64_t idle = req->route->upgrade_idle_timeout_ms ? req->route->upgrade_idle_timeout_ms
                                                        : p->cl->activity_timeout_ms;
    fg_relay_t *r = fg_relay_new(p->w, req->server, idle, p->ws_place);
    if (r != NULL)
        p->ws_place = FG_RELAY_PLACE_NONE;
    req->relayed = 1;
    if (r == NULL || response_headers(p, h, &hdrs) != 0 ||
        (stream && !p->tunnel && h1_switch_headers(p, &hdrs) != 0)) {
        fg_relay_free(r);
        fail(p, 502, "internal_error", "cannot relay the protocol switch");
        return -1;
    }
    if (p->tunnel) /* RFC 8441 5: the client sent no key and checks no accept */
        fg_headers_remove(&hdrs, FG_STR_LIT("Sec-WebSocket-Accept"));
    /* The fields point into the destination's 101 in the connection's input, which the take
     * over drains: they move to the request's pool first (once per switch, not per request). */
    for (size_t i = 0; i < hdrs.n; i++) {
        fg_str_t name = fg_pool_str(req->pool, hdrs.v[i].name);
        fg_str_t value = fg_pool_str(req->pool, hdrs.v[i].value);
        if (name.base == NULL || value.base == NULL) {
            fg_relay_free(r);
            fail(p, 502, "internal_error", "cannot relay the protocol switch");
            return -1;
        }
        hdrs.v[i].name = name;
        hdrs.v[i].value = value;
    }
    /* Bytes the destination sent after its 101 stay in the connection's input: the relay
     * passes them on first. */
    int attached = 0;
    if (stream) {
        attached = fg_exchange_relay_end(p->x, r) == 0;
    } else {
        fg_conn_t *c = fg_exchange_take_over(p->x, NULL);
        if (c != NULL)
            fg_relay_attach_conn(r, FG_RELAY_DEST, c);
        attached = c != NULL;
    }
    p->x = NULL;
    count_end(p);
    release_replay(p);
    if (!attached || req->ops->switch_protocols(req, &hdrs, r) != 0) {
        fg_relay_free(r);
        fail(p, 502, "internal_error", "cannot relay the protocol switch");
        return -1;
    }
    p->done = 1; /* req is gone: the relay holds what the access log needs */
    return -1;
}

/* ---- the client side ---- */

static void on_body(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    if (p->tunnel)
        return;
    if (p->x == NULL || p->done || fg_exchange_info(p->x)->phase == FG_XPHASE_CONNECTING) {
        body_backpressure(p, evbuffer_get_length(req->body));
        return;
    }
    move_body(p);
}

static void on_writable(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    if (p->x == NULL)
        return;
    if (p->splicing) {
        fg_conn_read(p->raw, 1, p->cl->activity_timeout_ms);
        pump(p);
        return;
    }
    if (!p->up_paused)
        return;
    p->up_paused = 0;
    fg_exchange_pause(p->x, 0);
}

static void on_abort(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    req->termination = NULL; /* the client's going decides (access log: client_aborted) */
    drop_upstream(p, 0);
    release_replay(p);
    count_end(p);
    release_place(p);
    p->done = 1;
}

/* The destination's agent is online but its tunnel took no stream: 503 (RFC 9110 15.6.4:
 * overloaded, not broken), no passive failure; the error names the cause, and so does a field
 * for the worker that sent a hop request (worker/tunnel/hop.h). */
static void tunnel_full_error(proxy_t *p)
{
    fg_request_t *req = p->req;
    int tcp = p->fail_err == EBUSY;
    const char *msg = tcp ? "the agent's tunnel has no stream free for tcp"
                          : "the agent's tunnel has no stream free";
    req->termination = "tunnel_full";
    if (!req->hop_dest) {
        proxy_error(req, 503, "service_unavailable", msg);
        return;
    }
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 1);
    if (fg_headers_add(&h, FG_STR_LIT(FG_TUNNEL_FULL_FIELD),
                       tcp ? FG_STR_LIT("tcp") : FG_STR_LIT("streams")) != 0)
        h.n = 0;
    fg_request_error_with(req, 503, "service_unavailable", msg, h.n ? &h : NULL);
}

void fg_proxy_handle(fg_request_t *req)
{
    const fg_cluster_t *cl = req->route->cluster;
    req->cluster_id = cl->id;
    proxy_t *p = fg_pool_calloc(req->pool, sizeof(*p));
    if (p == NULL) {
        proxy_error(req, 500, "internal_error", "out of memory");
        return;
    }
    p->req = req;
    p->w = req->worker;
    p->cl = cl;
    p->record = p->w->record && p->w->shm ? (int)(p->w->record - fg_shm_worker(p->w->shm, 0)) : -1;
    p->first_ms = fg_clock_now_ms();
    fg_affinity_t aff = {0};
    /* A tunnel hop names its destination (worker/tunnel/hop.h): the other worker chose it. */
    p->di = req->hop_dest ? req->hop_dest - 1 : fg_affinity_resolve(cl, req, p->first_ms, &aff);
    if (p->di == FG_AFFINITY_FAIL) {
        proxy_error(req, 503, "service_unavailable", "the session's destination is unavailable");
        return;
    }
    p->aff_key = cl->affinity.key_source == FG_AFF_KEY_TENANT ? aff.key : FG_STR_NULL;
    p->aff_set = aff.set;
    if (p->di < 0)
        p->di = fg_upstream_pick(p->w, cl, req, -1);
    if (p->di < 0) {
        req->termination = "no_destination";
        fg_log_warn("no destination available, client: %s, server: %s, route: %s, cluster: %s, "
                    "request_id: %s",
                    req->client_ip, req->server ? req->server->id : "-", req->route->id, cl->id,
                    req->request_id);
        proxy_error(req, 503, "service_unavailable", "no destination available");
        return;
    }
    if (begin_upgrade(p) != 0)
        return;
    if (cl->tcp && !p->upgrade) {
        /* Raw destinations (the route relays only "tcp", common/config_tcp.c): a request that
         * is not that switch has nothing to go to. The gateway's answer, no attempt: no
         * destination is charged with it (RFC 9110 15.6.2). */
        req->termination = "bad_request";
        proxy_error(req, 501, "not_implemented",
                    "the route relays only the switch to tcp (Upgrade: tcp)");
        return;
    }
    int built = build_out(p);
    if (built == FG_TRANSFORM_RESERVED_HOST) {
        /* The client's request names no host the gateway can serve (RFC 9110 15.5.1). */
        release_place(p);
        req->termination = "bad_request";
        proxy_error(req, 400, "bad_request", "the Host names the tunnels' reserved placeholder");
        return;
    }
    if (built != 0) {
        release_place(p);
        proxy_error(req, 500, "internal_error", "cannot build the upstream request");
        return;
    }
    req->handler = &proxy_handler;
    req->handler_data = p;
    if (start_exchange(p, 0) != 0 && (report(p, 1), fail_over(p)) != 0) {
        char msg[128];
        int full = tunnel_full(p);
        log_attempt(p, full ? "answering 503" : "answering 502");
        count_end(p);
        release_place(p);
        req->handler = NULL;
        if (full) {
            tunnel_full_error(p);
            return;
        }
        snprintf(msg, sizeof(msg), "upstream connect failed: %s", strerror(errno));
        proxy_error(req, 502, "bad_gateway", msg);
    }
}
