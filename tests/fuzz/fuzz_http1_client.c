/* libFuzzer target: the HTTP/1.1 client (worker/upstream/http1_client.c) fed a destination's
 * answer. The first input byte picks the method (GET or HEAD) and whether the handler pauses
 * after the first body piece; the rest is what the destination sends, followed by a close.
 * Whatever the bytes, the exchange must end exactly once (end or error), never deliver more
 * body than a declared Content-Length, and never deliver a hop-by-hop field. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/headers.h"
#include "worker/upstream/http1_client.h"

typedef struct {
    struct event_base *base;
    fg_exchange_t *x;
    int outcomes;
    int pause;
    int paused_once;
    int64_t clen;
    size_t body;
} st_t;

static void ready(void *arg)
{
    (void)arg;
}

static void check_fields(const fg_http_header_t *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fg_headers_is_hop_by_hop(h[i].name) ||
            fg_str_ieq(h[i].name, FG_STR_LIT("Content-Length")))
            abort();
}

static int interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    (void)arg;
    if (status < 100 || status > 199 || status == 101)
        abort();
    check_fields(h, n);
    return 0;
}

static int head(void *arg, const fg_exchange_head_t *h)
{
    st_t *s = arg;
    check_fields(h->headers, h->num_headers);
    s->clen = h->bodiless ? 0 : h->content_length;
    return 0;
}

static int body(void *arg, struct evbuffer *data)
{
    st_t *s = arg;
    s->body += evbuffer_get_length(data);
    evbuffer_drain(data, evbuffer_get_length(data));
    if (s->clen >= 0 && s->body > (size_t)s->clen)
        abort();
    if (s->pause && !s->paused_once) {
        s->paused_once = 1;
        fg_exchange_pause(s->x, 1);
        fg_exchange_pause(s->x, 0);
    }
    return 0;
}

static void end(void *arg)
{
    st_t *s = arg;
    s->outcomes++;
    fg_exchange_release(s->x);
    event_base_loopbreak(s->base);
}

static void error(void *arg, const fg_exchange_fail_t *f)
{
    st_t *s = arg;
    (void)f;
    s->outcomes++;
    fg_exchange_close(s->x);
    event_base_loopbreak(s->base);
}

static const fg_exchange_cbs_t cbs = {
    .on_send_ready = ready,
    .on_interim = interim,
    .on_head = head,
    .on_body = body,
    .on_end = end,
    .on_error = error,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 60000)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    st_t s = {0};
    s.pause = data[0] & 2;
    s.clen = -1;
    s.base = event_base_new();
    fg_conn_t *c = fg_conn_new(s.base, sv[0], NULL, NULL);
    fg_http_header_t host = {FG_STR_LIT("Host"), FG_STR_LIT("d")};
    fg_outreq_t out = {(data[0] & 1) ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET"),
                       FG_STR_LIT("/"),
                       FG_STR_NULL,
                       {&host, 1, 1, NULL}};
    fg_exchange_req_t rq = {&out, -1, NULL, 0, 0, FG_STR_NULL};
    s.x = fg_http1_client_attach(c, &rq, &cbs, &s, 0);
    if (s.x == NULL)
        abort();
    fg_exchange_send_body(s.x, NULL, 1);
    if (write(sv[1], data + 1, size - 1) != (ssize_t)(size - 1))
        abort();
    shutdown(sv[1], SHUT_WR);
    struct timeval limit = {2, 0};
    event_base_loopexit(s.base, &limit);
    event_base_dispatch(s.base);
    if (s.outcomes != 1) /* the close ends every exchange one way or the other */
        abort();
    close(sv[1]);
    event_base_free(s.base);
    return 0;
}
