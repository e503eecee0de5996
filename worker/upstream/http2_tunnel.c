#include "worker/upstream/http2_tunnel.h"

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/core/clock.h"

/* Tell the relay what happened, from the stream's event (t_run). */
static void kick(h2x_t *x)
{
    if (x->t_ev != NULL)
        event_active(x->t_ev, EV_TIMEOUT, 0);
}

/* A destination that leaves the stream's window closed while bytes wait for it (a zero-window
 * stall, RFC 9113 6.9) ends the relay after t_send_ms without progress, as a connection end
 * that takes nothing does (FG_CONN_TIMEOUT_WRITE); the stream's event doubles as the timer.
 * Returns 1 when the time is up. */
static int send_stalled(h2x_t *x)
{
    if (x->t_send_ms == 0 || evbuffer_get_length(x->body) == 0)
        return 0;
    uint64_t now = fg_clock_now_ms(), due = x->t_progress_ms + x->t_send_ms;
    if (now >= due)
        return 1;
    uint64_t in = due - now;
    struct timeval tv = {(time_t)(in / 1000), (suseconds_t)(in % 1000 * 1000)};
    event_add(x->t_ev, &tv);
    return 0;
}

/* The stream's event: frames produced for what the relay did (window updates, DATA), then the
 * relay hears of input, output drained, the destination's end, the stream's loss, a send
 * stall, in that order. Each callback may end the relay (t_close): the hold keeps x until the
 * last. */
static void t_run(evutil_socket_t fd, short what, void *arg)
{
    h2x_t *x = arg;
    (void)fd;
    (void)what;
    x->busy++;
    if (x->conn != NULL)
        fg_http2_client_flush(x->conn);
    if (x->t_cbs != NULL && x->t_read_due && x->t_reading) {
        x->t_read_due = 0;
        if (evbuffer_get_length(x->in) > 0)
            x->t_cbs->on_read(NULL, x->t_arg);
    }
    if (x->t_cbs != NULL && x->t_drain_due) {
        x->t_drain_due = 0;
        x->t_cbs->on_drain(NULL, x->t_arg);
    }
    if (x->t_cbs != NULL && x->t_eof_due) {
        x->t_eof_due = 0;
        x->t_cbs->on_event(NULL, x->t_arg, FG_CONN_EOF);
    }
    if (x->t_cbs != NULL && x->t_gone_due) {
        x->t_gone_due = 0;
        x->t_cbs->on_event(NULL, x->t_arg, FG_CONN_ERROR);
    }
    if (x->t_cbs != NULL && send_stalled(x))
        x->t_cbs->on_event(NULL, x->t_arg, FG_CONN_TIMEOUT_WRITE);
    fg_http2_client_stream_leave(x);
}

/* The relay took bytes from the stream's input: the windows reopen by as much (RFC 9113 6.9),
 * in the frames the stream's event produces. */
static void in_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    h2x_t *x = arg;
    (void)buf;
    if (info->n_deleted == 0 || x->conn == NULL)
        return;
    fg_http2_client_consumed(x->conn, x->id, info->n_deleted);
    kick(x);
}

/* ---- the relay end's operations (fg_relay_end_ops_t) ---- */

static void t_set_cbs(void *obj, const fg_conn_cbs_t *cbs, void *arg)
{
    h2x_t *x = obj;
    x->t_cbs = cbs;
    x->t_arg = arg;
}

static struct evbuffer *t_input(void *obj)
{
    return ((h2x_t *)obj)->in;
}

static struct evbuffer *t_output(void *obj)
{
    return ((h2x_t *)obj)->body;
}

static int usable(const h2x_t *x)
{
    return x->conn != NULL && !x->closed && !x->t_gone_due;
}

/* DATA frames go as the destination's windows allow; the frames leave in the stream's event,
 * so a relay that writes both ways in one turn sends once. */
static int t_flush(void *obj)
{
    h2x_t *x = obj;
    if (!usable(x))
        return -1;
    if (x->deferred) /* nothing was waiting: the stall clock starts with these bytes */
        x->t_progress_ms = fg_clock_now_ms();
    if (x->deferred && evbuffer_get_length(x->body) > 0) {
        x->deferred = 0;
        nghttp2_session_resume_data(x->conn->s, x->id);
    }
    kick(x);
    return 0;
}

static size_t t_pending(void *obj)
{
    return evbuffer_get_length(((h2x_t *)obj)->body);
}

/* Input the relay does not take stays in the stream's input, its window closed: the
 * destination's sending on this stream stops, and only on this stream. */
static void t_read(void *obj, int enable)
{
    h2x_t *x = obj;
    x->t_reading = enable ? 1 : 0;
    if (enable && evbuffer_get_length(x->in) > 0) {
        x->t_read_due = 1;
        kick(x);
    }
}

/* RFC 8441 4: our half-close is END_STREAM, after the queued DATA (fg_http2_tunnel_read). */
static int t_shutdown_write(void *obj)
{
    h2x_t *x = obj;
    if (!usable(x))
        return -1;
    x->body_end = 1;
    if (x->deferred) {
        x->deferred = 0;
        nghttp2_session_resume_data(x->conn->s, x->id);
    }
    kick(x);
    return 0;
}

/* The relay ended. Unread input gives its window back. A tunnel that ended both ways cleanly
 * needs no reset (the data source sends our END_STREAM if it is still due); any other end is
 * reset with CANCEL (RFC 8441 4: the equivalent of a TCP reset). */
static void t_close(void *obj)
{
    h2x_t *x = obj;
    x->t_cbs = NULL;
    x->t_arg = NULL;
    evbuffer_drain(x->in, evbuffer_get_length(x->in));
    evbuffer_drain(x->body, evbuffer_get_length(x->body));
    if (x->conn != NULL)
        x->conn->ntunnels--;
    if (x->ended && x->body_end)
        x->info.req_sent = 1; /* detach: nothing to reset */
    fg_http2_client_stream_end(x, NGHTTP2_CANCEL);
}

static const fg_relay_end_ops_t tunnel_ops = {
    .set_cbs = t_set_cbs,
    .input = t_input,
    .output = t_output,
    .flush = t_flush,
    .pending = t_pending,
    .read = t_read,
    .shutdown_write = t_shutdown_write,
    .close = t_close,
};

int fg_http2_tunnel_attach(h2x_t *x, fg_relay_t *r)
{
    h2conn_t *c = x->conn;
    x->t_ev = c->w ? event_new(c->w->base, -1, 0, t_run, x) : NULL;
    if (x->t_ev == NULL || evbuffer_add_cb(x->in, in_drained, x) == NULL) {
        fg_http2_client_stream_end(x, NGHTTP2_CANCEL);
        return -1;
    }
    x->finished = 1; /* the handler hears nothing more of this stream */
    x->relay = 1;
    x->wait_ready = 0;
    x->t_eof_due = x->ended; /* a 2xx with END_STREAM: the destination sends nothing */
    x->t_send_ms = c->activity_ms;
    x->t_progress_ms = fg_clock_now_ms();
    c->ntunnels++;
    fg_relay_attach_end(r, FG_RELAY_DEST, &tunnel_ops, x);
    if (x->t_eof_due)
        kick(x);
    return 0;
}

/* ---- from the session ---- */

ssize_t fg_http2_tunnel_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2x_t *x = nghttp2_session_get_stream_user_data(s, id);
    (void)src;
    (void)ud;
    if (x == NULL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t avail = evbuffer_get_length(x->body);
    size_t n = avail < len ? avail : len;
    if (n > 0) {
        evbuffer_remove(x->body, buf, n);
        x->t_progress_ms = fg_clock_now_ms();
    }
    if (n == avail && x->body_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        x->info.req_sent = 1;
    } else if (n == 0) {
        x->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (x->relay && avail - n <= BODY_LOW) {
        x->t_drain_due = 1;
        kick(x);
    }
    return (ssize_t)n;
}

void fg_http2_tunnel_data(h2x_t *x, const uint8_t *data, size_t len)
{
    evbuffer_add(x->in, data, len);
    x->t_read_due = 1;
    kick(x);
}

void fg_http2_tunnel_eof(h2x_t *x)
{
    x->ended = 1;
    x->t_eof_due = 1;
    kick(x);
}

void fg_http2_tunnel_gone(h2x_t *x)
{
    x->t_gone_due = 1;
    kick(x);
}
