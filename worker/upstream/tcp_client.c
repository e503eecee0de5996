#include "worker/upstream/tcp_client.h"

#include <errno.h>
#include <stdlib.h>
#include <strings.h>

#include <event2/buffer.h>

#include "worker/core/clock.h"
#include "worker/upstream/upstream.h"

typedef struct {
    fg_exchange_t base;
    fg_upconn_t *u;
    const fg_exchange_cbs_t *cbs;
    void *arg;
    fg_exchange_info_t info;
    uint64_t connect_at;
    unsigned busy : 1; /* inside a callback: the handler may end x there */
    unsigned dead : 1; /* ended while busy: freed on the way out */
} tcpx_t;

static void on_event(fg_conn_t *c, void *arg, int what);
static void quiet_read(fg_conn_t *c, void *arg)
{
    fg_conn_read(c, 0, 0);
}
static void quiet_event(fg_conn_t *c, void *arg, int what)
{
    fg_conn_read(c, 0, 0);
}
static const fg_conn_cbs_t up_cbs = {quiet_read, NULL, on_event};
/* A taken-over connection until the relay sets its callbacks. */
static const fg_conn_cbs_t quiet_cbs = {quiet_read, NULL, quiet_event};

static void x_end(tcpx_t *x)
{
    if (x->u) {
        fg_upstream_close(x->u);
        x->u = NULL;
    }
    if (x->busy)
        x->dead = 1;
    else
        free(x);
}

/* The connect's outcome: a 101 (the switch) or the failure. */
static void on_event(fg_conn_t *c, void *arg, int what)
{
    tcpx_t *x = arg;
    x->busy = 1;
    if (what == FG_CONN_CONNECTED) {
        x->info.connect_us = fg_clock_now_us() - x->connect_at;
        x->info.sent_at_us = fg_clock_now_us();
        x->info.phase = FG_XPHASE_BODY;
        x->info.req_sent = 1;
        fg_http_header_t up = {FG_STR_LIT("Upgrade"), FG_STR_LIT(FG_TCP_PROTOCOL)};
        fg_exchange_head_t h = {
            .status = 101, .headers = &up, .num_headers = 1, .content_length = -1, .bodiless = 1};
        x->cbs->on_head(x->arg, &h);
    } else {
        int timeout = what == FG_CONN_TIMEOUT_WRITE || what == FG_CONN_TIMEOUT_READ;
        fg_exchange_fail_t f = {.kind = timeout ? FG_XERR_CONNECT_TIMEOUT : FG_XERR_CONNECT,
                                .err = timeout ? ETIMEDOUT : fg_conn_errno(c),
                                .phase = FG_XPHASE_CONNECTING,
                                .detail = timeout ? "upstream connect timed out"
                                                  : "upstream connect failed"};
        x->cbs->on_error(x->arg, &f);
    }
    x->busy = 0;
    if (x->dead)
        free(x);
}

static int xs_send_body(fg_exchange_t *b, struct evbuffer *data, int end)
{
    if (data)
        evbuffer_drain(data, evbuffer_get_length(data)); /* a switch has no body */
    return 0;
}

static int xs_send_trailers(fg_exchange_t *b, const fg_http_header_t *t, size_t n)
{
    return 0;
}

static size_t xs_pending(const fg_exchange_t *b)
{
    return 0;
}

static void xs_pause(fg_exchange_t *b, int paused) {}

static const fg_exchange_info_t *xs_info(const fg_exchange_t *b)
{
    return &((const tcpx_t *)b)->info;
}

static int64_t xs_raw_left(const fg_exchange_t *b)
{
    return -1;
}

static fg_conn_t *xs_raw_begin(fg_exchange_t *b)
{
    return NULL;
}

static void xs_raw_consumed(fg_exchange_t *b, size_t n) {}

static void xs_close(fg_exchange_t *b)
{
    x_end((tcpx_t *)b);
}

static fg_conn_t *xs_take_over(fg_exchange_t *b, struct evbuffer *rest)
{
    tcpx_t *x = (tcpx_t *)b;
    fg_conn_t *c = x->u ? x->u->c : NULL;
    if (c != NULL) {
        if (rest)
            evbuffer_add_buffer(rest, fg_conn_input(c));
        fg_conn_set_cbs(c, &quiet_cbs, NULL);
        free(x->u); /* the connection leaves its pool record (it was never pooled) */
        x->u = NULL;
    }
    x_end(x);
    return c;
}

static const fg_exchange_vt_t vt = {
    .send_body = xs_send_body,
    .send_trailers = xs_send_trailers,
    .pending = xs_pending,
    .pause = xs_pause,
    .info = xs_info,
    .raw_left = xs_raw_left,
    .raw_begin = xs_raw_begin,
    .raw_consumed = xs_raw_consumed,
    .release = xs_close,
    .close = xs_close,
    .take_over = xs_take_over,
    .relay_end = NULL,
};

fg_exchange_t *fg_tcp_client_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                   const fg_exchange_cbs_t *cbs, void *arg)
{
    if (!rq->upgrade || rq->protocol.len != sizeof(FG_TCP_PROTOCOL) - 1 ||
        strncasecmp(rq->protocol.base, FG_TCP_PROTOCOL, rq->protocol.len) != 0) {
        errno = EPROTONOSUPPORT;
        return NULL;
    }
    tcpx_t *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    x->base.vt = &vt;
    x->cbs = cbs;
    x->arg = arg;
    x->info.phase = FG_XPHASE_CONNECTING;
    x->connect_at = fg_clock_now_us();
    x->u = fg_upstream_open_timeout(t->w, t->cl, t->di, &up_cbs, x, t->connect_timeout_ms);
    if (x->u == NULL) {
        int e = errno;
        free(x);
        errno = e;
        return NULL;
    }
    return &x->base;
}
