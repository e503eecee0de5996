#include "worker/handlers/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "shm/health.h"
#include "worker/upstream/affinity.h"
#include "worker/upstream/balancer.h"
#include "worker/http/transform.h"
#include "worker/upstream/upstream.h"
#include "worker/core/clock.h"

/* One exchange with a destination on behalf of one client request. Lives in req->pool. */
typedef struct {
    fg_request_t *req;
    fg_worker_t *w;
    const fg_cluster_t *cl;
    int di;
    fg_upconn_t *u;
    char *head; /* serialised request head, kept for a retry */
    size_t head_len;
    struct evbuffer *replay; /* body bytes already sent on a reused connection, for a retry */
    int state;
    int resp_mode;
    int64_t resp_left;
    fg_http1_chunked_t dec;
    uint64_t sent_at;
    unsigned req_chunked : 1; /* request body re-framed as chunked upstream */
    unsigned req_sent : 1;    /* whole request (head and body) is in the upstream output */
    unsigned body_moved : 1;  /* some body bytes left req->body for the upstream */
    unsigned replayable : 1;
    unsigned retried : 1;
    unsigned resp_started : 1; /* client response head sent */
    unsigned got_bytes : 1;    /* any response byte received on this connection */
    unsigned keep_alive : 1;   /* destination allows reuse */
    unsigned up_paused : 1;    /* upstream reading paused for a slow client */
    unsigned body_paused : 1;  /* we paused the client body (backpressure) */
    unsigned write_failed : 1; /* the destination refused our bytes: it had closed */
    unsigned splicing : 1;     /* body moves socket -> pipe -> socket in the kernel */
    unsigned up_head : 1;      /* the method sent upstream is HEAD (maybe not the client's) */
    int pipe[2];
    int cfd;        /* client socket while splicing */
    size_t in_pipe; /* bytes spliced from the destination, not yet to the client */
    /* shared destination state (shm/health.h) */
    fg_hdest_t *counted;   /* the destination holding this request's in-flight count */
    int record;            /* this worker's index in the arena's worker table */
    uint64_t *tried;       /* failover: bitmap of the destinations that failed (pool) */
    uint64_t first_ms;     /* failover: when the first attempt started (budget) */
    fg_str_t aff_key;      /* affinity key forwarded upstream (keySource tenant) */
    unsigned aff_set : 1;  /* bind the client to the chosen destination in the response */
    unsigned answered : 1; /* passive health already counted this exchange's answer */
    /* the current attempt's failure, for the error log (log_attempt) and the access log */
    int fail_kind;  /* F_* */
    int fail_err;   /* errno of it, 0 when none */
    int fail_state; /* p->state when it failed */
    unsigned fail_logged : 1;
    uint64_t connect_at; /* when the connect of a fresh connection started */
} proxy_t;

/* How an attempt failed. */
enum {
    F_NONE = 0,
    F_CONNECT,
    F_CONNECT_TIMEOUT,
    F_SEND_TIMEOUT,
    F_READ_TIMEOUT,
    F_EOF,
    F_RESET,
    F_INVALID
};

enum { P_CONNECTING = 1, P_WAIT_HEAD, P_BODY, P_DONE };
enum { R_NONE = 0, R_LENGTH, R_CHUNKED, R_CLOSE };

#define UP_HIGH_WATER (256 * 1024)
#define SPLICE_MIN (1024 * 1024) /* bodies this large skip user space */
#define SPLICE_CHUNK (1024 * 1024)
#define REPLAY_MAX (64 * 1024)
#define NONIDEMPOTENT_REUSE_US (1000 * 1000) /* pooled connections idle longer: fresh one */

static void up_read(fg_conn_t *c, void *arg);
static void up_drain(fg_conn_t *c, void *arg);
static void up_event(fg_conn_t *c, void *arg, int what);
static void on_body(fg_request_t *req);
static void on_writable(fg_request_t *req);
static void on_abort(fg_request_t *req);

static void release_replay(proxy_t *p);
static int process_upstream(proxy_t *p);

static const fg_conn_cbs_t up_cbs = {up_read, up_drain, up_event};
static const fg_req_handler_t proxy_handler = {on_body, on_writable, on_abort};

/* ---- request head ---- */

static char *put(char *p, fg_str_t s)
{
    memcpy(p, s.base, s.len);
    return p + s.len;
}

static int build_head(proxy_t *p)
{
    fg_request_t *req = p->req;
    const fg_destination_t *d = &p->cl->destinations[p->di];
    fg_outreq_t out;
    if (fg_transform_request(req, d, &out) != 0)
        return -1;
    /* Framing is ours to decide (RFC 9112 6): the client's Content-Length is re-stated below,
     * and the gateway already answered any Expect: 100-continue. */
    fg_headers_remove(&out.headers, FG_STR_LIT("Content-Length"));
    fg_headers_remove(&out.headers, FG_STR_LIT("Expect"));
    /* The seed's tenant-derived session key travels upstream, replacing any sent by the client. */
    if (p->aff_key.len &&
        fg_headers_set(&out.headers, fg_str(p->cl->affinity.key_name), p->aff_key) != 0)
        return -1;
    size_t need = out.method.len + out.path.len + out.query.len + 64;
    for (size_t i = 0; i < out.headers.n; i++)
        need += out.headers.v[i].name.len + out.headers.v[i].value.len + 4;
    char *buf = fg_pool_alloc(req->pool, need);
    if (buf == NULL)
        return -1;
    char *w = buf;
    w = put(w, out.method);
    p->up_head = fg_str_eq(out.method, FG_STR_LIT("HEAD"));
    *w++ = ' ';
    w = put(w, out.path);
    if (out.query.len) {
        *w++ = '?';
        w = put(w, out.query);
    }
    w = put(w, FG_STR_LIT(" HTTP/1.1\r\n"));
    for (size_t i = 0; i < out.headers.n; i++) {
        w = put(w, out.headers.v[i].name);
        w = put(w, FG_STR_LIT(": "));
        w = put(w, out.headers.v[i].value);
        w = put(w, FG_STR_LIT("\r\n"));
    }
    if (req->content_length >= 0) { /* an explicit "Content-Length: 0" too (some servers want it) */
        w = put(w, FG_STR_LIT("Content-Length: "));
        w = fg_put_u64(w, (uint64_t)req->content_length);
        w = put(w, FG_STR_LIT("\r\n"));
    } else if (req->has_body) {
        w = put(w, FG_STR_LIT("Transfer-Encoding: chunked\r\n"));
        p->req_chunked = 1;
    }
    w = put(w, FG_STR_LIT("\r\n"));
    p->head = buf;
    p->head_len = (size_t)(w - buf);
    return 0;
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
    p->fail_kind = F_NONE;
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
    case F_CONNECT:
        return "upstream_refused";
    case F_CONNECT_TIMEOUT:
        return "upstream_connect_timeout";
    case F_SEND_TIMEOUT:
    case F_READ_TIMEOUT:
        return "upstream_timeout";
    case F_INVALID:
        return "upstream_invalid";
    default:
        return "upstream_reset";
    }
}

/* The current attempt failed: remember how, for log_attempt and the access log. */
static void set_fail(proxy_t *p, int kind, int err)
{
    p->fail_kind = kind;
    p->fail_err = err;
    p->fail_state = p->state;
    int timeout = kind == F_CONNECT_TIMEOUT || kind == F_SEND_TIMEOUT || kind == F_READ_TIMEOUT;
    attempt_status(p, timeout ? 504 : 502);
    p->req->termination = termination_of(kind, err);
}

/* "connect() failed (111: Connection refused)" and "while connecting to upstream", in the
 * words nginx uses, so that operators' searches and alerts carry over. */
static void describe_fail(const proxy_t *p, char *what, size_t wl, const char **phase)
{
    int e = p->fail_err;
    *phase = p->fail_state == P_CONNECTING     ? "connecting to upstream"
             : p->fail_state == P_BODY         ? "reading upstream"
             : p->write_failed || !p->req_sent ? "sending request to upstream"
                                               : "reading response header from upstream";
    switch (p->fail_kind) {
    case F_CONNECT:
        snprintf(what, wl, "connect() failed (%d: %s)", e, strerror(e));
        break;
    case F_CONNECT_TIMEOUT:
    case F_SEND_TIMEOUT:
    case F_READ_TIMEOUT:
        snprintf(what, wl, "upstream timed out (%d: %s)", ETIMEDOUT, strerror(ETIMEDOUT));
        break;
    case F_EOF:
        snprintf(what, wl, "upstream prematurely closed connection");
        break;
    case F_RESET:
        snprintf(what, wl, "%s() failed (%d: %s)", p->write_failed ? "send" : "recv", e,
                 strerror(e));
        break;
    default:
        snprintf(what, wl, "upstream sent an invalid response");
        break;
    }
}

/* The target sent upstream: the request line of the serialised head. */
static fg_str_t upstream_target(const proxy_t *p)
{
    const char *sp = p->head ? memchr(p->head, ' ', p->head_len) : NULL;
    if (sp == NULL)
        return FG_STR_LIT("");
    const char *end = memchr(sp + 1, ' ', p->head_len - (size_t)(sp + 1 - p->head));
    return end ? (fg_str_t){sp + 1, (size_t)(end - sp - 1)} : FG_STR_LIT("");
}

/* Write the current attempt's failure to the error log at warn, once, with what happens next
 * (`then`). Formats only here: the success path never comes through. */
static void log_attempt(proxy_t *p, const char *then)
{
    if (p->fail_kind == F_NONE || p->fail_logged)
        return;
    p->fail_logged = 1;
    if (fg_log_level() < FG_LOG_WARN)
        return;
    const fg_request_t *req = p->req;
    const fg_destination_t *d = &p->cl->destinations[p->di];
    char what[160], addr[64], line[600], host[260], target[520];
    const char *phase;
    describe_fail(p, what, sizeof(what), &phase);
    fg_upstream_addr_text(d, addr, sizeof(addr));
    size_t n = fg_log_escape_text(line, 256, req->method.base, req->method.len);
    line[n++] = ' ';
    n += fg_log_escape_text(line + n, sizeof(line) - n - 12, req->target.base, req->target.len);
    memcpy(line + n, req->version == 10 ? " HTTP/1.0" : " HTTP/1.1", 9);
    n += 9;
    size_t hl = fg_log_escape_text(host, sizeof(host), req->host.base, req->host.len);
    fg_str_t t = upstream_target(p);
    size_t tl = fg_log_escape_text(target, sizeof(target), t.base, t.len);
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

/* Passive health: a transport outcome of destination p->di (failures are refused, reset,
 * closed or timed out; a 5xx is an answer and a client abort is not the destination's fault).
 * An exchange whose answer was already counted adds a failure, not a second request. */
static void report(proxy_t *p, int failed)
{
    fg_hdest_t *d = p->cl->destinations[p->di].state;
    if (d == NULL)
        return;
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
    if (p->u)
        fg_conn_set_raw(p->u->c, 0);
}

/* Detach from the upstream connection: back to the pool when the exchange ended cleanly. */
static void drop_upstream(proxy_t *p, int reusable)
{
    stop_splice(p);
    fg_upconn_t *u = p->u;
    p->u = NULL;
    if (u == NULL)
        return;
    if (reusable)
        fg_upstream_release(u);
    else
        fg_upstream_close(u);
}

static void fail(proxy_t *p, int status, const char *error, const char *msg)
{
    fg_request_t *req = p->req;
    if (p->fail_kind != F_NONE)
        log_attempt(p, p->resp_started ? "response truncated"
                       : status == 504 ? "answering 504"
                                       : "answering 502");
    drop_upstream(p, 0);
    release_replay(p);
    count_end(p);
    p->state = P_DONE;
    if (p->resp_started) {
        req->error = error;
        req->ops->abort(req);
        return;
    }
    fg_request_error(req, status, error, msg);
}

static void complete(proxy_t *p)
{
    fg_request_t *req = p->req;
    req->termination = NULL;
    p->state = P_DONE;
    drop_upstream(p, p->keep_alive && p->req_sent && req->body_done);
    release_replay(p);
    count_end(p);
    req->ops->finish(req);
}

/* ---- sending ---- */

/* Queue the body bytes that arrived (re-framed as chunks when the client's length is unknown)
 * and, once the body is complete, its end. While the exchange may have to be sent again on a
 * fresh connection, the framed bytes are also copied to p->replay, up to REPLAY_MAX. */
static void move_body(proxy_t *p)
{
    fg_request_t *req = p->req;
    struct evbuffer *out = fg_conn_output(p->u->c);
    size_t before = evbuffer_get_length(out);
    size_t n = evbuffer_get_length(req->body);
    if (n > 0) {
        if (p->req_chunked) {
            char line[24];
            int l = snprintf(line, sizeof(line), "%zx\r\n", n);
            evbuffer_add(out, line, (size_t)l);
            evbuffer_add_buffer(out, req->body);
            evbuffer_add(out, "\r\n", 2);
        } else {
            evbuffer_add_buffer(out, req->body);
        }
        p->body_moved = 1;
    }
    if (req->body_done && !p->req_sent) {
        if (p->req_chunked)
            evbuffer_add(out, "0\r\n\r\n", 5);
        p->req_sent = 1; /* the caller starts activityTimeout */
    }
    size_t added = evbuffer_get_length(out) - before;
    if (p->replayable && p->replay && added > 0) {
        if (evbuffer_get_length(p->replay) + added <= REPLAY_MAX) {
            struct evbuffer_ptr at;
            evbuffer_ptr_set(out, &at, before, EVBUFFER_PTR_SET);
            char tmp[4096];
            for (size_t off = 0; off < added;) {
                size_t k = added - off < sizeof(tmp) ? added - off : sizeof(tmp);
                ev_ssize_t got = evbuffer_copyout_from(out, &at, tmp, k);
                if (got <= 0)
                    break;
                evbuffer_add(p->replay, tmp, (size_t)got);
                evbuffer_ptr_set(out, &at, (size_t)got, EVBUFFER_PTR_ADD);
                off += (size_t)got;
            }
        } else {
            p->replayable = 0;
        }
    }
}

/* Pause the client body while more than the high watermark waits to be written (`queued`),
 * resume it once a quarter of that is left. Every pause has a resume: on_body, flush_upstream
 * and up_drain all come through here, so a pause decided while connecting is lifted by the
 * first flush even when the kernel takes everything at once and no write event follows. */
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

/* Write what is queued for the destination, then pause the client body while more than the
 * high watermark still waits (up_drain resumes it once the socket drained). The check must
 * follow the flush: a pause decided before it could outlive the last write event, and nothing
 * would ever resume the upload. Returns -1 when the exchange failed (p may be gone). */
static int flush_upstream(proxy_t *p)
{
    fg_upconn_t *u = p->u;
    if (fg_conn_flush(u->c) != 0) {
        p->write_failed = 1;
        up_event(u->c, p, FG_CONN_ERROR);
        return -1;
    }
    body_backpressure(p, fg_conn_pending(u->c));
    return 0;
}

static void send_request(proxy_t *p)
{
    fg_request_t *req = p->req;
    fg_upconn_t *u = p->u;
    struct evbuffer *out = fg_conn_output(u->c);
    u->requests++;
    p->state = P_WAIT_HEAD;
    p->got_bytes = 0;
    p->sent_at = fg_clock_now_us();
    evbuffer_add(out, p->head, p->head_len);
    if (p->replay && evbuffer_get_length(p->replay) > 0) {
        /* A retry: what the lost connection carried. Copied, as failover may need it again. */
        size_t n = evbuffer_get_length(p->replay);
        evbuffer_add(out, evbuffer_pullup(p->replay, (ev_ssize_t)n), n);
    }
    move_body(p);
    fg_conn_set_write_timeout(u->c, p->cl->activity_timeout_ms);
    /* activityTimeout measures the destination's silence once it has the whole request; while
     * the body streams, a slow client is the body timeout's business and a destination that
     * stops reading is the write timeout's. An early answer is read all the same. */
    fg_conn_read(u->c, 1, p->req_sent ? p->cl->activity_timeout_ms : 0);
    flush_upstream(p);
    (void)req;
}

/* A body small enough to keep a copy of, for a retry on a fresh connection. A chunked body is
 * copied while it fits (move_body gives up beyond REPLAY_MAX). */
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

static int start_exchange(proxy_t *p, int fresh)
{
    p->write_failed = 0;
    /* A pooled connection may have been closed by the destination while idle; the request is
     * then sent again on a fresh one, which needs the body. A body too large to keep a copy of
     * goes straight to a fresh connection, so a stale one never costs the client a 502. */
    if (p->req->content_length > REPLAY_MAX)
        fresh = 1;
    /* A non-idempotent request is never sent twice (RFC 9110 9.2.2), so it only rides a pooled
     * connection used moments ago: destinations close idle connections after seconds, and a
     * connection that fresh is very unlikely to be in the middle of being closed. */
    uint64_t max_idle = retry_allowed(p) ? 0 : NONIDEMPOTENT_REUSE_US;
    fg_upconn_t *u = fresh ? NULL : fg_upstream_acquire(p->w, p->cl, (size_t)p->di, max_idle);
    count_begin(p);
    begin_attempt(p);
    p->req->upstream_connect_us = 0;
    if (u != NULL) {
        p->u = u;
        fg_conn_set_cbs(u->c, &up_cbs, p);
        p->replayable = !p->body_moved && req_wants_replay(p);
        send_request(p);
        return 0;
    }
    /* A fresh connection keeps the body only when failover may have to send it again. */
    p->replayable = !p->body_moved && may_fail_over(p) && req_wants_replay(p);
    uint64_t timeout = p->cl->connect_timeout_ms;
    if (p->cl->failover.enabled) {
        uint64_t spent = fg_clock_now_ms() - p->first_ms;
        uint64_t left = spent < p->cl->failover.budget_ms ? p->cl->failover.budget_ms - spent : 1;
        timeout =
            p->cl->failover.connect_timeout_ms < left ? p->cl->failover.connect_timeout_ms : left;
    }
    p->connect_at = fg_clock_now_us();
    u = fg_upstream_open_timeout(p->w, p->cl, (size_t)p->di, &up_cbs, p, timeout);
    if (u == NULL) {
        int e = errno;
        p->state = P_CONNECTING;
        set_fail(p, F_CONNECT, e);
        errno = e;
        return -1;
    }
    p->u = u;
    p->state = P_CONNECTING;
    return 0;
}

/* A reused keep-alive connection that fails before any response byte was probably closed by
 * the destination while idle: try once more on a fresh one if the body can be sent again. */

/* eof: the destination closed the connection cleanly. A non-idempotent request is sent again
 * only when the destination cannot have processed it (RFC 9110 9.2.2): it closed the idle
 * connection (a clean EOF before any response byte) or refused our bytes. A reset after the
 * whole request went out may follow a crash mid-request: that one is answered 502. */
static int try_again(proxy_t *p, int eof)
{
    if (p->retried || p->u == NULL || !p->u->reused || p->got_bytes || p->resp_started)
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
    return f->enabled && (f->allow_non_idempotent || idempotent(p->req->method));
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
        if (p->cl->affinity.enabled && p->cl->affinity.key_source != FG_AFF_KEY_TENANT)
            p->aff_set = 1; /* the session moves with the request */
        if (build_head(p) != 0)
            return -1;
        if (start_exchange(p, 0) == 0)
            return 0;
        report(p, 1); /* refused at once: try the next one */
    }
}

/* ---- response ---- */

static void resume_upstream(proxy_t *p);

/* Move body bytes destination -> pipe -> client until one side would block. Returns 1 when the
 * exchange ended (p is gone), 0 to wait (for the destination's readability, or the client's
 * writability through on_writable), -1 on a client error, -3 on a destination error. */
static int splice_pump(proxy_t *p)
{
    fg_request_t *req = p->req;
    int cfd = p->cfd;
    int ufd = fg_conn_fd(p->u->c);
    for (;;) {
        while (p->in_pipe > 0) {
            ssize_t n =
                splice(p->pipe[0], NULL, cfd, NULL, p->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n > 0) {
                p->in_pipe -= (size_t)n;
                p->resp_left -= n;
                req->bytes_out += (uint64_t)n;
                continue;
            }
            if (n == -1 && errno == EINTR)
                continue;
            if (n == -1 && errno == EAGAIN) {
                /* Stop watching the destination until the client drains, or its level-
                 * triggered readiness would spin the loop. */
                fg_conn_read(p->u->c, 0, 0);
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
        ssize_t n = splice(ufd, NULL, p->pipe[1], NULL, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            p->in_pipe = (size_t)n;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && errno == EAGAIN)
            return 0; /* the raw read event calls again */
        return -3;    /* 0: the destination closed before the declared length */
    }
}

/* Switch a large identity-framed body to splice(2) when both sides are plain sockets and
 * nothing is buffered in user space. Returns 1 when switched. */
static int start_splice(proxy_t *p, struct evbuffer *in)
{
    fg_request_t *req = p->req;
    if (p->resp_mode != R_LENGTH || p->resp_left < SPLICE_MIN || evbuffer_get_length(in) > 0 ||
        p->up_paused || req->ops->raw_fd == NULL)
        return 0;
    p->cfd = req->ops->raw_fd(req);
    if (p->cfd < 0 || pipe2(p->pipe, O_NONBLOCK | O_CLOEXEC) == -1)
        return 0;
    fcntl(p->pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK);
    p->splicing = 1;
    p->in_pipe = 0;
    fg_conn_set_raw(p->u->c, 1);
    return 1;
}

/* Send the first n bytes of in to the client. */
static int send_part(proxy_t *p, struct evbuffer *in, size_t n)
{
    fg_request_t *req = p->req;
    if (n == evbuffer_get_length(in))
        return req->ops->send_body(req, in);
    struct evbuffer *tmp = evbuffer_new();
    if (tmp == NULL)
        return -1;
    evbuffer_remove_buffer(in, tmp, n);
    int r = req->ops->send_body(req, tmp);
    evbuffer_free(tmp);
    return r;
}

/* Relay response body bytes. Returns 1 when the exchange ended (p is gone), 0 to wait for more,
 * -1 when the client cannot take bytes, -2 for an invalid body. */
static int pass_body(proxy_t *p, struct evbuffer *in)
{
    fg_request_t *req = p->req;
    if (p->splicing) {
        int r = splice_pump(p);
        return r == -3 ? -4 : r;
    }
    while (evbuffer_get_length(in) > 0 && p->state == P_BODY) {
        if (p->resp_mode == R_LENGTH) {
            size_t n = evbuffer_get_length(in);
            if ((int64_t)n >= p->resp_left)
                n = (size_t)p->resp_left;
            if (send_part(p, in, n) != 0)
                return -1;
            p->resp_left -= (int64_t)n;
            if (p->resp_left == 0) {
                /* Bytes beyond the declared length make the connection unusable. */
                if (evbuffer_get_length(in) > 0)
                    p->keep_alive = 0;
                complete(p);
                return 1;
            }
        } else if (p->resp_mode == R_CLOSE) {
            if (req->ops->send_body(req, in) != 0)
                return -1;
        } else {
            struct evbuffer_iovec v;
            if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                break;
            size_t consumed = 0, data = 0;
            int r = fg_http1_chunked_step(&p->dec, v.iov_base, v.iov_len, &consumed, &data);
            if (r < 0)
                return -2;
            if (data > 0) {
                if (send_part(p, in, data) != 0)
                    return -1;
            } else {
                evbuffer_drain(in, consumed);
            }
            if (r == 1) {
                if (evbuffer_get_length(in) > 0)
                    p->keep_alive = 0;
                complete(p);
                return 1;
            }
            if (consumed == 0 && data == 0)
                break;
        }
        if (req->ops->pending(req) > UP_HIGH_WATER) {
            /* A slow client: stop reading the destination until it catches up. */
            p->up_paused = 1;
            fg_conn_read(p->u->c, 0, 0);
            break;
        }
    }
    /* Everything buffered went out: the rest of a large body can bypass user space. */
    start_splice(p, in);
    return 0;
}

/* Whether any Connection field of head names `name` (RFC 9110 7.6.1: every one counts). */
static int listed_in_connection(const fg_http1_head_t *head, fg_str_t name)
{
    for (size_t i = 0; i < head->num_headers; i++)
        if (fg_str_ieq(head->headers[i].name, FG_STR_LIT("Connection")) &&
            fg_headers_connection_lists(head->headers[i].value, name))
            return 1;
    return 0;
}

/* Copy the destination's response fields for the client, minus hop-by-hop ones and framing
 * (RFC 9110 7.6.1). */
static int end_to_end_headers(proxy_t *p, const fg_http1_head_t *head, fg_headers_t *out)
{
    int has_conn = head->conn_close || head->conn_keep_alive || head->conn_upgrade;
    for (size_t i = 0; i < head->num_headers && !has_conn; i++)
        has_conn = fg_str_ieq(head->headers[i].name, FG_STR_LIT("Connection"));
    fg_headers_init(out, p->req->pool, head->num_headers + 4);
    for (size_t i = 0; i < head->num_headers; i++) {
        fg_str_t name = head->headers[i].name;
        if (fg_headers_is_hop_by_hop(name) || fg_str_ieq(name, FG_STR_LIT("Content-Length")))
            continue;
        if (has_conn && listed_in_connection(head, name))
            continue;
        if (fg_headers_add(out, name, head->headers[i].value) != 0)
            return -1;
    }
    return 0;
}

/* The final response's fields: end-to-end ones, the affinity cookie, the route's transforms. */
static int response_headers(proxy_t *p, const fg_http1_head_t *head, fg_headers_t *out)
{
    if (end_to_end_headers(p, head, out) != 0)
        return -1;
    if (p->aff_set) {
        fg_str_t an, av;
        if (fg_affinity_response(p->cl, (size_t)p->di, p->req->pool, &an, &av) != 0 ||
            fg_headers_add(out, an, av) != 0)
            return -1;
    }
    return fg_transform_response(p->req, head->status, out);
}

enum { HEAD_BODY = 0, HEAD_MORE, HEAD_ENDED };

/* Returns HEAD_BODY when the body follows, HEAD_MORE when more bytes are needed, HEAD_ENDED
 * when the exchange ended (p is gone: the caller must not look at it again). */
static int handle_head(proxy_t *p)
{
    fg_request_t *req = p->req;
    struct evbuffer *in = fg_conn_input(p->u->c);
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return HEAD_MORE;
        size_t max = 65536;
        size_t n = avail < max ? avail : max;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        fg_http_header_t fields[128];
        fg_http1_head_t head;
        memset(&head, 0, sizeof(head));
        head.headers = fields;
        head.headers_cap = 128;
        fg_http1_limits_t lim = {65536, 65536, 128};
        int r = fg_http1_parse_response(buf, n, &lim, &head);
        if (r == FG_HTTP1_INCOMPLETE) {
            if (n < max)
                return HEAD_MORE;
            set_fail(p, F_INVALID, 0);
            fail(p, 502, "bad_gateway", "upstream response head too large");
            return HEAD_ENDED;
        }
        if (r < 0) {
            set_fail(p, F_INVALID, 0);
            fail(p, 502, "bad_gateway", "invalid response from upstream");
            return HEAD_ENDED;
        }
        if (head.status >= 100 && head.status < 200) {
            /* Interim responses (RFC 9110 15.2). A proxy MUST forward them unless it asked for
             * them itself: 100 Continue is the gateway's own business (it answered any
             * Expect: 100-continue and never forwards Expect); others, such as 103 Early
             * Hints, go to the client. */
            if (head.status == 101) {
                set_fail(p, F_INVALID, 0);
                fail(p, 502, "bad_gateway", "unexpected protocol switch from upstream");
                return HEAD_ENDED;
            }
            if (head.status != 100) {
                fg_headers_t hdrs;
                if (end_to_end_headers(p, &head, &hdrs) != 0 ||
                    req->ops->send_interim(req, head.status, &hdrs) != 0) {
                    evbuffer_drain(in, (size_t)r);
                    fail(p, 502, "internal_error", "cannot relay an interim response");
                    return HEAD_ENDED;
                }
            }
            evbuffer_drain(in, (size_t)r);
            continue;
        }
        req->upstream_us = fg_clock_now_us() - p->sent_at;
        attempt_status(p, head.status);
        req->termination = NULL;
        report(p, 0);
        p->keep_alive =
            head.minor_version >= 1 ? !head.conn_close : (head.conn_keep_alive && !head.conn_close);
        int64_t length = -1;
        /* The destination frames its answer by the method it was sent, which a transform
         * (HttpMethodChange) may have made differ from the client's (RFC 9112 6.3 rule 1). */
        fg_str_t up_method = p->up_head ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET");
        if (fg_http1_response_bodiless(up_method, head.status)) {
            p->resp_mode = R_NONE;
            /* The client's own HEAD keeps the length it would have had; a client whose GET
             * went upstream as HEAD gets what it will receive: nothing. */
            int client_head = fg_str_eq(req->method, FG_STR_LIT("HEAD"));
            length = p->up_head && !client_head ? 0 : head.content_length;
        } else if (head.te_other) {
            /* A coding such as gzip under (or instead of) chunked: the gateway decodes only
             * chunked, and Transfer-Encoding is hop-by-hop, so relaying the bytes would hand
             * the client encoded content as if it were plain (RFC 9112 6.1). nginx refuses
             * these too. */
            evbuffer_drain(in, (size_t)r);
            p->keep_alive = 0;
            set_fail(p, F_INVALID, 0);
            fail(p, 502, "bad_gateway", "unsupported transfer coding from upstream");
            return HEAD_ENDED;
        } else if (head.chunked) {
            p->resp_mode = R_CHUNKED;
            fg_http1_chunked_init(&p->dec);
        } else if (head.content_length >= 0) {
            p->resp_mode = R_LENGTH;
            p->resp_left = head.content_length;
            length = head.content_length;
        } else {
            p->resp_mode = R_CLOSE;
            p->keep_alive = 0;
        }
        fg_headers_t hdrs;
        req->relayed = 1; /* the destination's Date and Server stand (fg_request_stamp) */
        if (response_headers(p, &head, &hdrs) != 0 ||
            req->ops->send_head(req, head.status, &hdrs, length) != 0) {
            evbuffer_drain(in, (size_t)r);
            fail(p, 502, "internal_error", "cannot relay the response head");
            return HEAD_ENDED;
        }
        evbuffer_drain(in, (size_t)r);
        p->resp_started = 1;
        p->state = P_BODY;
        if (p->resp_mode == R_NONE || (p->resp_mode == R_LENGTH && p->resp_left == 0)) {
            if (evbuffer_get_length(in) > 0)
                p->keep_alive = 0;
            complete(p);
            return HEAD_ENDED;
        }
        return HEAD_BODY;
    }
}

/* Returns 1 when the exchange ended (p is gone), 0 otherwise. */
static int process_upstream(proxy_t *p)
{
    if (p->state == P_WAIT_HEAD) {
        int h = handle_head(p);
        if (h != HEAD_BODY)
            return h == HEAD_ENDED;
    }
    if (p->state != P_BODY || p->u == NULL)
        return 0;
    int r = pass_body(p, fg_conn_input(p->u->c));
    if (r == -2) {
        set_fail(p, F_INVALID, 0);
        fail(p, 502, "bad_gateway", "invalid chunked body from upstream");
        return 1;
    }
    if (r == -1) {
        p->req->termination = "client_aborted";
        fail(p, 502, "client_error", "client write failed");
        return 1;
    }
    if (r == -4) {
        set_fail(p, F_EOF, 0);
        fail(p, 502, "bad_gateway", "upstream closed the connection before the body ended");
        return 1;
    }
    return r;
}

/* The destination stopped taking the request (a write failed) before answering it as far
 * as we know. A server may answer early and close without reading the rest of the body, a 413
 * say (RFC 9112 9.3); the answer then waits in our receive buffer even after the reset. Read
 * it and relay it rather than a 502. Returns 1 when that answer now drives the exchange (p may
 * be gone), 0 when there is none and the write error stands. */
static int early_answer(proxy_t *p)
{
    if (p->state != P_WAIT_HEAD || p->u == NULL)
        return 0;
    struct evbuffer *in = fg_conn_input(p->u->c);
    int fd = fg_conn_fd(p->u->c);
    while (evbuffer_read(in, fd, 65536) > 0)
        ;
    if (evbuffer_get_length(in) == 0)
        return 0;
    p->got_bytes = 1; /* answered: never retried elsewhere */
    p->write_failed = 1;
    p->keep_alive = 0; /* a connection whose write failed never goes back to the pool */
    /* The rest of the request goes nowhere: drop what is queued, and on_body discards what
     * the client still sends (the front end closes after the response, body unread). */
    struct evbuffer *out = fg_conn_output(p->u->c);
    evbuffer_drain(out, evbuffer_get_length(out));
    if (process_upstream(p) != 0)
        return 1;
    if (p->state == P_WAIT_HEAD)
        return 0; /* not even a whole head: the error stands */
    return 1;
}

static void up_read(fg_conn_t *c, void *arg)
{
    proxy_t *p = arg;
    if (!p->got_bytes && p->state == P_WAIT_HEAD)
        p->req->upstream_first_us = fg_clock_now_us() - p->sent_at;
    p->got_bytes = 1;
    if (p->state == P_WAIT_HEAD || p->state == P_BODY)
        process_upstream(p);
}

static void up_drain(fg_conn_t *c, void *arg)
{
    proxy_t *p = arg;
    body_backpressure(p, fg_conn_pending(c));
}

static void up_event(fg_conn_t *c, void *arg, int what)
{
    proxy_t *p = arg;
    switch (what) {
    case FG_CONN_CONNECTED:
        p->req->upstream_connect_us = fg_clock_now_us() - p->connect_at;
        send_request(p);
        return;
    case FG_CONN_EOF:
        if (p->state == P_BODY && p->resp_mode == R_CLOSE) {
            /* The close is the end of this body (RFC 9112 6.3 rule 8). */
            if (process_upstream(p) != 0)
                return;
            p->keep_alive = 0;
            complete(p);
            return;
        }
        set_fail(p, F_EOF, 0);
        if (try_again(p, 1) == 0)
            return;
        report(p, 1); /* closed before the answer, or before the body's end */
        if (fail_over(p) == 0)
            return;
        fail(p, 502, "bad_gateway", "upstream closed the connection prematurely");
        return;
    case FG_CONN_TIMEOUT_WRITE:
        set_fail(p, p->state == P_CONNECTING ? F_CONNECT_TIMEOUT : F_SEND_TIMEOUT, ETIMEDOUT);
        report(p, 1);
        if (p->state == P_CONNECTING) {
            if (fail_over(p) == 0)
                return;
            fail(p, 504, "gateway_timeout", "upstream connect timed out");
            return;
        }
        fail(p, 504, "gateway_timeout", "upstream stopped accepting data");
        return;
    case FG_CONN_TIMEOUT_READ:
        /* YARP counts an activity timeout against the destination, and so do we once it had the
         * whole request: before that, the silence may be the client's slow upload. */
        set_fail(p, F_READ_TIMEOUT, ETIMEDOUT);
        if (p->req_sent)
            report(p, 1);
        fail(p, 504, "gateway_timeout", "upstream did not answer in time");
        return;
    default:
        if (early_answer(p))
            return;
        set_fail(p, p->state == P_CONNECTING ? F_CONNECT : F_RESET, fg_conn_errno(c));
        if (p->state != P_CONNECTING && try_again(p, 0) == 0)
            return;
        report(p, 1);
        if (fail_over(p) == 0)
            return;
        {
            char msg[128];
            snprintf(msg, sizeof(msg), "upstream %s: %s",
                     p->state == P_CONNECTING ? "connect failed" : "connection failed",
                     strerror(fg_conn_errno(c)));
            fail(p, 502, "bad_gateway", msg);
        }
        return;
    }
}

/* ---- the client side ---- */

static void on_body(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    if (p->u == NULL || p->state == P_CONNECTING || p->state == P_DONE) {
        body_backpressure(p, evbuffer_get_length(req->body));
        return;
    }
    if (p->write_failed) {
        /* the destination answered early and stopped reading (early_answer) */
        evbuffer_drain(req->body, evbuffer_get_length(req->body));
        return;
    }
    if (p->req_sent)
        return;
    move_body(p);
    if (p->req_sent) /* the destination has it all: its silence counts from now */
        fg_conn_read(p->u->c, 1, p->cl->activity_timeout_ms);
    flush_upstream(p);
}

static void resume_upstream(proxy_t *p)
{
    if (!p->up_paused || p->u == NULL)
        return;
    p->up_paused = 0;
    fg_conn_read(p->u->c, 1, p->cl->activity_timeout_ms);
    process_upstream(p);
}

static void on_writable(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    if (p->splicing) {
        fg_conn_read(p->u->c, 1, p->cl->activity_timeout_ms);
        process_upstream(p);
        return;
    }
    resume_upstream(p);
}

static void on_abort(fg_request_t *req)
{
    proxy_t *p = req->handler_data;
    req->termination = NULL; /* the client's going decides (access log: client_aborted) */
    drop_upstream(p, 0);
    release_replay(p);
    count_end(p);
    p->state = P_DONE;
}

void fg_proxy_handle(fg_request_t *req)
{
    const fg_cluster_t *cl = req->route->cluster;
    req->cluster_id = cl->id;
    proxy_t *p = fg_pool_calloc(req->pool, sizeof(*p));
    if (p == NULL) {
        fg_request_error(req, 500, "internal_error", "out of memory");
        return;
    }
    p->req = req;
    p->w = req->worker;
    p->cl = cl;
    p->record = p->w->record && p->w->shm ? (int)(p->w->record - fg_shm_worker(p->w->shm, 0)) : -1;
    p->first_ms = fg_clock_now_ms();
    fg_affinity_t aff;
    p->di = fg_affinity_resolve(cl, req, p->first_ms, &aff);
    if (p->di == FG_AFFINITY_FAIL) {
        fg_request_error(req, 503, "service_unavailable",
                         "the session's destination is unavailable");
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
        fg_request_error(req, 503, "service_unavailable", "no destination available");
        return;
    }
    if (build_head(p) != 0) {
        fg_request_error(req, 500, "internal_error", "cannot build the upstream request");
        return;
    }
    req->handler = &proxy_handler;
    req->handler_data = p;
    if (start_exchange(p, 0) != 0 && (report(p, 1), fail_over(p)) != 0) {
        char msg[128];
        log_attempt(p, "answering 502");
        count_end(p);
        snprintf(msg, sizeof(msg), "upstream connect failed: %s", strerror(errno));
        req->handler = NULL;
        fg_request_error(req, 502, "bad_gateway", msg);
    }
}
