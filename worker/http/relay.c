#include "worker/http/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "shm/metrics.h"
#include "worker/core/clock.h"
#include "worker/http/accesslog.h"

/* User-space bytes one direction holds at most before it stops reading its source, and the
 * level below which it reads again (TLS, or a side that cannot splice). */
#define RELAY_HIGH (256 * 1024)
#define RELAY_LOW (64 * 1024)
/* Bytes one splice(2) takes from a socket: what a pipe holds by default. */
#define SPLICE_CHUNK (64 * 1024)
/* Bytes one plain recv(2) takes (on the stack). A read that fills it marks its direction bulk:
 * it splices from then on, until a splice brings less than this again. */
#define COPY_CHUNK (16 * 1024)
/* Empty pipes a worker keeps for the next direction that has bytes to move, so that a busy
 * relay does not pay pipe2() and two close() per message; the rest are closed. */
#define PIPE_CACHE 16

typedef struct fg_relay_s relay_t;

/* One side: its connection and what it sent. The direction "from this end" is read here and
 * written to the other end. */
typedef struct {
    relay_t *r;
    fg_conn_t *c;
    /* An end that is not a connection (fg_relay_attach_end): its operations and object. */
    const fg_relay_end_ops_t *ops;
    void *obj;
    uint64_t bytes; /* bytes received from this end */
    /* splice: this end's bytes on their way to the other; -1 while the direction is idle (a
     * pipe is taken when bytes arrive and given back once it drained) */
    int pipe[2];
    size_t in_pipe;    /* bytes in the pipe */
    unsigned eof : 1;  /* this end ended its sending */
    unsigned held : 1; /* reading stopped: the other end's output is full */
    unsigned shut : 1; /* we ended our sending toward this end */
    unsigned bulk : 1; /* raw relay: large reads, moved by splice (else recv + send) */
} end_t;

struct fg_relay_s {
    fg_session_t session; /* first: the worker's list of sessions */
    fg_worker_t *w;
    const fg_server_t *srv;
    end_t end[2];
    fg_request_t req; /* the handshake's facts, for the access log; req.pool is ours */
    struct event *timer;
    uint64_t idle_ms;
    uint64_t last_ms;  /* last byte moved either way */
    uint64_t drain_at; /* retiring: close then; 0 = not retiring */
    unsigned splice : 1;
    unsigned started : 1;
    int place; /* srv's maxWebSockets place it holds (fg_relay_reserve) */
    unsigned have_req : 1;
    fg_relay_done_fn done; /* a relay without request: its owner's end (fg_relay_set_done) */
    void *done_arg;
};

/* The relays' worker-wide state: open relays per server, for maxWebSockets when the server has
 * no shared-memory count (no metrics zone: tests, a full table). */
typedef struct {
    size_t n;
    unsigned open[];
} counts_t;

static void on_read(fg_conn_t *c, void *arg);
static void on_drain(fg_conn_t *c, void *arg);
static void on_event(fg_conn_t *c, void *arg, int what);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static const fg_conn_cbs_t relay_cbs = {on_read, on_drain, on_event};

#define SLOT 3

/* The worker's empty pipes (PIPE_CACHE); a worker is one process with one thread. */
static int pipe_cache[PIPE_CACHE][2];
static int pipes_cached;

/* A pipe for e's direction: an empty cached one, or a new one. 0, or -errno. */
static int take_pipe(end_t *e)
{
    if (pipes_cached > 0) {
        pipes_cached--;
        e->pipe[0] = pipe_cache[pipes_cached][0];
        e->pipe[1] = pipe_cache[pipes_cached][1];
        return 0;
    }
    if (pipe2(e->pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
        e->pipe[0] = e->pipe[1] = -1;
        return -errno;
    }
    return 0;
}

/* e's direction is idle: its pipe goes back to the cache when empty, else it is closed (bytes
 * still in it belong to no one once the relay ended). */
static void give_pipe(end_t *e)
{
    if (e->pipe[0] < 0)
        return;
    if (e->in_pipe == 0 && pipes_cached < PIPE_CACHE) {
        pipe_cache[pipes_cached][0] = e->pipe[0];
        pipe_cache[pipes_cached][1] = e->pipe[1];
        pipes_cached++;
    } else {
        close(e->pipe[0]);
        close(e->pipe[1]);
    }
    e->pipe[0] = e->pipe[1] = -1;
    e->in_pipe = 0;
}

static end_t *other(end_t *e)
{
    return e == &e->r->end[0] ? &e->r->end[1] : &e->r->end[0];
}

/* An end's operations: its connection's, or those its owner gave (fg_relay_attach_end). */
static struct evbuffer *end_input(end_t *e)
{
    return e->ops ? e->ops->input(e->obj) : fg_conn_input(e->c);
}

static struct evbuffer *end_output(end_t *e)
{
    return e->ops ? e->ops->output(e->obj) : fg_conn_output(e->c);
}

static int end_flush(end_t *e)
{
    return e->ops ? e->ops->flush(e->obj) : fg_conn_flush(e->c);
}

static size_t end_pending(end_t *e)
{
    return e->ops ? e->ops->pending(e->obj) : fg_conn_pending(e->c);
}

static void end_read(end_t *e, int enable)
{
    if (e->ops)
        e->ops->read(e->obj, enable);
    else
        fg_conn_read(e->c, enable, 0);
}

static int end_shutdown_write(end_t *e)
{
    return e->ops ? e->ops->shutdown_write(e->obj) : fg_conn_shutdown_write(e->c);
}

static counts_t *counts(fg_worker_t *w, int create)
{
    counts_t *ct = w->frontend_state[SLOT];
    if (ct == NULL && create && w->cfg != NULL) {
        ct = calloc(1, sizeof(*ct) + w->cfg->nservers * sizeof(unsigned));
        if (ct != NULL)
            ct->n = w->cfg->nservers;
        w->frontend_state[SLOT] = ct;
    }
    return ct;
}

static unsigned *server_count(fg_worker_t *w, const fg_server_t *srv, int create)
{
    counts_t *ct = counts(w, create);
    if (ct == NULL || srv == NULL || w->cfg == NULL)
        return NULL;
    size_t i = (size_t)(srv - w->cfg->servers);
    return i < ct->n ? &ct->open[i] : NULL;
}

/* maxWebSockets is a cap for the server across all workers: the places are counted in shared
 * memory (shm/metrics.h), reserved at the handshake and given back when the relay ends or the
 * handshake does not switch; a worker's dead places are dropped by the master. Without a
 * shared count (no metrics zone: tests, a full table) the worker counts its own. */
int fg_relay_reserve(fg_worker_t *w, const fg_server_t *srv)
{
    int rc = fg_metrics_ws_reserve(srv->metrics, srv->max_websockets);
    if (rc >= 0)
        return rc == 0 ? FG_RELAY_PLACE_SHARED : -1;
    unsigned *n = server_count(w, srv, 1);
    if (n == NULL)
        return FG_RELAY_PLACE_NONE;
    if (srv->max_websockets && *n >= srv->max_websockets)
        return -1;
    (*n)++;
    return FG_RELAY_PLACE_LOCAL;
}

void fg_relay_unreserve(fg_worker_t *w, const fg_server_t *srv, int place)
{
    if (srv == NULL || place == FG_RELAY_PLACE_NONE)
        return;
    if (place == FG_RELAY_PLACE_SHARED) {
        fg_metrics_ws_close(srv->metrics);
        return;
    }
    unsigned *n = server_count(w, srv, 0);
    if (n != NULL && *n > 0)
        (*n)--;
}

fg_relay_t *fg_relay_new(fg_worker_t *w, const fg_server_t *srv, uint64_t idle_ms, int place)
{
    relay_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->timer = evtimer_new(w->base, on_timer, r);
    if (r->timer == NULL) {
        free(r);
        return NULL;
    }
    r->w = w;
    r->srv = srv;
    r->place = place;
    r->idle_ms = idle_ms;
    for (int i = 0; i < 2; i++) {
        r->end[i].r = r;
        r->end[i].pipe[0] = r->end[i].pipe[1] = -1;
    }
    return r;
}

void fg_relay_attach_conn(fg_relay_t *r, int side, fg_conn_t *c)
{
    r->end[side].c = c;
    fg_conn_set_spares(c, NULL); /* its buffers stay its own: the relay outlives front ends */
    fg_conn_set_cbs(c, &relay_cbs, &r->end[side]);
    fg_conn_read(c, 0, 0);
}

void fg_relay_attach_end(fg_relay_t *r, int side, const fg_relay_end_ops_t *ops, void *obj)
{
    r->end[side].ops = ops;
    r->end[side].obj = obj;
    ops->set_cbs(obj, &relay_cbs, &r->end[side]);
    ops->read(obj, 0);
}

void fg_relay_set_done(fg_relay_t *r, fg_relay_done_fn fn, void *arg)
{
    r->done = fn;
    r->done_arg = arg;
}

void fg_relay_adopt_request(fg_relay_t *r, fg_request_t *req)
{
    r->req = *req;
    req->pool = NULL;
    r->have_req = 1;
    /* The fields may sit in the front end's per-connection memory: the log needs a copy. */
    fg_http_header_t *h = NULL;
    if (req->nheaders && r->req.pool)
        h = fg_pool_alloc(r->req.pool, req->nheaders * sizeof(*h));
    if (h != NULL)
        memcpy(h, req->headers, req->nheaders * sizeof(*h));
    r->req.headers = h;
    r->req.nheaders = h ? req->nheaders : 0;
    r->req.body = NULL;
    r->req.ops = NULL;
    r->req.proto = NULL;
    r->req.handler = NULL;
    r->req.handler_data = NULL;
}

/* ---- the end ---- */

static void close_ends(relay_t *r)
{
    for (int i = 0; i < 2; i++) {
        end_t *e = &r->end[i];
        give_pipe(e);
        if (e->ops) {
            const fg_relay_end_ops_t *ops = e->ops;
            e->ops = NULL;
            ops->close(e->obj);
        }
        fg_conn_free(e->c);
        e->c = NULL;
    }
}

void fg_relay_free(fg_relay_t *r)
{
    if (r == NULL)
        return;
    close_ends(r);
    fg_relay_unreserve(r->w, r->srv, r->place);
    event_free(r->timer);
    fg_request_pool_give(r->w, r->req.pool);
    free(r);
}

/* End the relay: the access log line (termination NULL: both sides ended), the counts, the
 * session. r is gone. */
static void finish(relay_t *r, const char *termination)
{
    fg_worker_t *w = r->w;
    if (r->have_req) {
        fg_request_t *q = &r->req;
        if (q->status == 0)
            q->status = 101; /* the front end says what its client saw (HTTP/2: 200) */
        q->body_bytes = r->end[FG_RELAY_CLIENT].bytes;
        q->bytes_out = r->end[FG_RELAY_DEST].bytes;
        q->termination = termination;
        /* req.ssl is the client connection's: still open here. */
        fg_accesslog_write(w->accesslog, q);
    }
    if (r->done)
        r->done(r->done_arg, r->end[FG_RELAY_CLIENT].bytes, r->end[FG_RELAY_DEST].bytes,
                termination);
    if (r->started && !r->done) { /* a WebSocket (or other upgrade), not a tcp server's relay */
        if (w->record)
            w->record->websockets--;
        fg_metrics_conn_close(FG_MG_WEBSOCKETS);
    }
    if (r->started) {
        fg_frontend_remove(w, &r->session);
        if (w->record && r->end[FG_RELAY_CLIENT].ops != NULL)
            w->record->connections++; /* remove took one off for a session start did not add */
    }
    fg_relay_free(r);
}

/* ---- moving bytes ---- */

/* Half-close (RFC 9112 9.6 for the connection, RFC 6455 7.1.1 leaves the TCP close to the
 * peers): once everything e sent reached the other end, end our sending there. Returns 1 when
 * the relay ended (both directions done). */
static int pass_end(end_t *e)
{
    end_t *o = other(e);
    if (!e->eof || o->shut || e->in_pipe > 0 || end_pending(o) > 0 ||
        evbuffer_get_length(end_input(e)) > 0)
        return 0;
    o->shut = 1;
    if (end_shutdown_write(o) != 0 || (o->eof && e->shut)) {
        finish(e->r, NULL);
        return 1;
    }
    return 0;
}

/* Buffered: what e's input holds goes to the other end's output. Returns 1 when r is gone. */
static int move_buffered(end_t *e)
{
    end_t *o = other(e);
    struct evbuffer *in = end_input(e);
    size_t n = evbuffer_get_length(in);
    if (n > 0) {
        e->bytes += n;
        e->r->last_ms = fg_clock_now_ms();
        evbuffer_add_buffer(end_output(o), in);
        if (end_flush(o) != 0) {
            finish(e->r, e == &e->r->end[0] ? "upstream_reset" : "client_aborted");
            return 1;
        }
    }
    if (!e->held && end_pending(o) > RELAY_HIGH) {
        /* The other end does not keep up: stop reading this one (on_drain resumes). */
        e->held = 1;
        end_read(e, 0);
    }
    return pass_end(e);
}

/* Raw, small reads: one recv into the stack, one send to the other end, as nginx relays an
 * upgraded connection. What the other end does not take at once waits in its output, and e is
 * not read until that drained (on_drain). Returns 1 when r is gone. */
static int move_copied(end_t *e)
{
    end_t *o = other(e);
    relay_t *r = e->r;
    char buf[COPY_CHUNK];
    ssize_t n = fg_conn_recv_raw(e->c, buf, sizeof(buf));
    if (n == -EAGAIN || n == -EINTR)
        return 0; /* the (level-triggered) read event comes back */
    if (n == 0) {
        e->eof = 1;
        fg_conn_read(e->c, 0, 0);
        return pass_end(e);
    }
    if (n < 0) {
        finish(r, e == &r->end[0] ? "client_aborted" : "upstream_reset");
        return 1;
    }
    e->bytes += (uint64_t)n;
    r->last_ms = fg_clock_now_ms();
    if ((size_t)n == sizeof(buf))
        e->bulk = 1;
    ssize_t sent = fg_conn_send_raw(o->c, buf, (size_t)n);
    if (sent < 0 && sent != -EAGAIN && sent != -EINTR) {
        finish(r, e == &r->end[0] ? "upstream_reset" : "client_aborted");
        return 1;
    }
    if (sent < 0)
        sent = 0;
    if (sent == n)
        return 0;
    if (evbuffer_add(fg_conn_output(o->c), buf + sent, (size_t)(n - sent)) != 0) {
        finish(r, "gateway_error");
        return 1;
    }
    e->held = 1;
    fg_conn_read(e->c, 0, 0);
    fg_conn_want_write(o->c);
    return 0;
}

/* Raw: e's bytes toward the other end's socket, by recv + send while reads are small, through
 * a pipe with splice (socket -> pipe -> socket until one would block) while they are large.
 * Returns 1 when r is gone. */
static int move_spliced(end_t *e)
{
    end_t *o = other(e);
    relay_t *r = e->r;
    int drained = 0;
    if (fg_conn_pending(o->c) > 0) {
        /* Bytes queued in user space (the 101, what came before the switch, what a send did
         * not take) go first: its write event is armed, and on_drain comes back once they are
         * out. */
        e->held = 1;
        fg_conn_read(e->c, 0, 0);
        if (e->in_pipe == 0)
            give_pipe(e);
        return 0;
    }
    if (!e->bulk && e->in_pipe == 0 && !e->eof)
        return move_copied(e);
    for (;;) {
        while (e->in_pipe > 0) {
            ssize_t n = fg_conn_splice_out(o->c, e->pipe[0], e->in_pipe);
            if (n > 0) {
                e->in_pipe -= (size_t)n;
                continue;
            }
            if (n == -EINTR)
                continue;
            if (n == -EAGAIN) {
                e->held = 1;
                fg_conn_read(e->c, 0, 0);
                fg_conn_want_write(o->c);
                return 0;
            }
            finish(r, e == &r->end[0] ? "upstream_reset" : "client_aborted");
            return 1;
        }
        /* The pipe is empty here. */
        if (e->eof) {
            give_pipe(e);
            return pass_end(e);
        }
        /* A short read took all the socket had: the (level-triggered) read event tells when
         * more comes, so one more splice_in would only learn EAGAIN. The direction is idle
         * until then and holds no pipe. */
        if (drained) {
            give_pipe(e);
            return 0;
        }
        if (e->pipe[0] < 0) {
            int err = take_pipe(e);
            if (err != 0) {
                /* Out of descriptors: this relay cannot go on without dropping bytes' order. */
                fg_log_warn("websocket relay: pipe2: %s", strerror(-err));
                finish(r, "gateway_error");
                return 1;
            }
        }
        ssize_t n = fg_conn_splice_in(e->c, e->pipe[1], SPLICE_CHUNK);
        if (n > 0) {
            e->in_pipe = (size_t)n;
            e->bytes += (uint64_t)n;
            r->last_ms = fg_clock_now_ms();
            if ((size_t)n < SPLICE_CHUNK)
                drained = 1;
            if ((size_t)n < COPY_CHUNK)
                e->bulk = 0;
            continue;
        }
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN) {
            give_pipe(e);
            return 0;
        }
        if (n == 0) {
            e->eof = 1;
            fg_conn_read(e->c, 0, 0);
            give_pipe(e);
            return pass_end(e);
        }
        finish(r, e == &r->end[0] ? "client_aborted" : "upstream_reset");
        return 1;
    }
}

/* Bytes from e toward the other end, by whichever way this relay moves them. */
static int move(end_t *e)
{
    return e->r->splice ? move_spliced(e) : move_buffered(e);
}

static void on_read(fg_conn_t *c, void *arg)
{
    move(arg);
}

/* The end's output drained: the direction toward it may go on. */
static void on_drain(fg_conn_t *c, void *arg)
{
    end_t *o = arg;      /* the end that drained */
    end_t *e = other(o); /* the one sending to it */
    (void)c;
    if (e->held && end_pending(o) <= (e->r->splice ? 0 : RELAY_LOW)) {
        e->held = 0;
        if (!e->eof)
            end_read(e, 1);
        if (move(e))
            return;
    }
    pass_end(e);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    end_t *e = arg;
    relay_t *r = e->r;
    int client = e == &r->end[FG_RELAY_CLIENT];
    if (what == FG_CONN_EOF) {
        e->eof = 1;
        if (!r->splice)
            move_buffered(e);
        else
            pass_end(e);
        return;
    }
    if (what == FG_CONN_TIMEOUT_WRITE) {
        finish(r, client ? "client_timeout" : "upstream_timeout");
        return;
    }
    finish(r, client ? "client_aborted" : "upstream_reset");
}

/* ---- timers ---- */

static void arm(relay_t *r)
{
    uint64_t now = fg_clock_now_ms(), due = 0;
    if (r->idle_ms)
        due = r->last_ms + r->idle_ms;
    if (r->drain_at && (due == 0 || r->drain_at < due))
        due = r->drain_at;
    if (due == 0)
        return;
    uint64_t in = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(in / 1000), (suseconds_t)(in % 1000 * 1000)};
    evtimer_add(r->timer, &tv);
}

/* One timer serves both limits; bytes moved since it was armed push the idle one back. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    relay_t *r = arg;
    uint64_t now = fg_clock_now_ms();
    if (r->drain_at && now >= r->drain_at) {
        finish(r, "drained");
        return;
    }
    if (r->idle_ms && now >= r->last_ms + r->idle_ms) {
        finish(r, "idle_timeout");
        return;
    }
    arm(r);
}

/* ---- start ---- */

/* Raw when both ends are plain sockets and a pipe can be had now (it goes to the cache: a
 * direction takes one only while it has bulk bytes to move); else buffered. In raw mode a
 * direction copies small reads and splices reads of COPY_CHUNK and more: on loopback TCP one
 * recv + send of 64 B to 8 KiB costs about 10% less CPU than one splice in + out through a
 * pipe, at 16 KiB they cost the same, and beyond the pipe saves the copies. */
static void choose_splice(relay_t *r)
{
    for (int i = 0; i < 2; i++)
        if (r->end[i].c == NULL || !fg_conn_can_splice(r->end[i].c))
            return;
    end_t *e = &r->end[0];
    if (take_pipe(e) != 0)
        return;
    give_pipe(e);
    r->splice = 1;
}

void fg_relay_start(fg_relay_t *r)
{
    fg_worker_t *w = r->w;
    fg_frontend_add(w, &r->session, &fg_relay_frontend);
    r->started = 1;
    if (!r->done)
        fg_metrics_conn_open(FG_MG_WEBSOCKETS); /* closed where the session is removed */
    if (w->record) {
        if (!r->done)
            w->record->websockets++;
        /* The session is no new connection: a client connection that became the end was
         * counted at its accept, and a stream (fg_relay_attach_end) is its connection's. */
        w->record->connections_total--;
        if (r->end[FG_RELAY_CLIENT].ops != NULL)
            w->record->connections--;
    }
    r->last_ms = fg_clock_now_ms();
    if (w->retiring)
        r->drain_at = r->last_ms + w->cfg->websocket_drain_timeout_ms;
    arm(r);
    /* The 101 goes out, and bytes read before the switch follow it, through user space
     * whatever the mode. */
    for (int i = 0; i < 2; i++) {
        if (r->end[i].c != NULL)
            fg_conn_set_low_watermark(r->end[i].c, RELAY_LOW);
        if (end_flush(&r->end[i]) != 0) {
            finish(r, i == FG_RELAY_CLIENT ? "client_aborted" : "upstream_reset");
            return;
        }
    }
    for (int i = 0; i < 2; i++)
        if (move_buffered(&r->end[i]))
            return;
    choose_splice(r);
    for (int i = 0; i < 2; i++) {
        end_t *e = &r->end[i];
        if (r->splice) {
            fg_conn_set_low_watermark(e->c, 0);
            fg_conn_set_raw(e->c, 1);
        }
        if (!e->held)
            end_read(e, 1);
    }
}

/* ---- the session (worker/core/frontend.h) ---- */

/* A retiring worker keeps its relays until they end or webSocketDrainTimeout passes. */
static void fe_retire(fg_session_t *s)
{
    relay_t *r = (relay_t *)s;
    if (r->drain_at)
        return;
    r->drain_at = fg_clock_now_ms() + r->w->cfg->websocket_drain_timeout_ms;
    arm(r);
}

/* A relay is never idle between requests: the drain timer decides. */
static void fe_close_idle(fg_session_t *s)
{
    (void)s;
}

static void fe_close(fg_session_t *s)
{
    finish((relay_t *)s, "drained");
}

static void fe_release(fg_worker_t *w)
{
    while (pipes_cached > 0) {
        pipes_cached--;
        close(pipe_cache[pipes_cached][0]);
        close(pipe_cache[pipes_cached][1]);
    }
    free(w->frontend_state[SLOT]);
    w->frontend_state[SLOT] = NULL;
}

const fg_frontend_t fg_relay_frontend = {
    .name = "relay",
    .slot = SLOT,
    .start = NULL,
    .retire = fe_retire,
    .close_idle = fe_close_idle,
    .close = fe_close,
    .release = fe_release,
};
