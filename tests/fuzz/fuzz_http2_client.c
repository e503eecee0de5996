/* libFuzzer target: the HTTP/2 client (worker/upstream/http2_client.h) fed a destination's
 * bytes. The first input byte picks the method (GET, HEAD or POST with a body and trailers)
 * and whether the handler pauses after its first body piece (resumed after the input); the rest
 * goes to the client session in pieces whose sizes come from the input too. Whatever the
 * bytes, the exchange must end at most once (end or error), deliver trailers only after its
 * head, and never a pseudo-header field to the handler. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "worker/upstream/http2_client.h"

typedef struct {
    fg_exchange_t *x;
    int outcomes, heads, pause, paused;
} st_t;

static void ready(void *arg) {}

static int interim(void *arg, int status, fg_http_header_t *h, size_t n)
{
    st_t *s = arg;
    if (s->heads || status < 100 || status > 199)
        abort();
    return 0;
}

static int head(void *arg, const fg_exchange_head_t *h)
{
    st_t *s = arg;
    if (s->heads++ || h->status < 200 || h->status > 999)
        abort();
    for (size_t i = 0; i < h->num_headers; i++)
        if (h->headers[i].name.len == 0 || h->headers[i].name.base[0] == ':')
            abort();
    return 0;
}

static int body(void *arg, struct evbuffer *data)
{
    st_t *s = arg;
    if (!s->heads)
        abort();
    evbuffer_drain(data, evbuffer_get_length(data));
    if (s->pause && !s->paused) {
        s->paused = 1;
        fg_exchange_pause(s->x, 1);
    }
    return 0;
}

static int trailers(void *arg, fg_http_header_t *t, size_t n)
{
    st_t *s = arg;
    if (!s->heads)
        abort();
    return 0;
}

static void end(void *arg)
{
    st_t *s = arg;
    if (s->outcomes++)
        abort();
    fg_exchange_release(s->x);
    s->x = NULL;
}

static void error(void *arg, const fg_exchange_fail_t *f)
{
    st_t *s = arg;
    if (s->outcomes++)
        abort();
    fg_exchange_close(s->x);
    s->x = NULL;
}

static const fg_exchange_cbs_t cbs = {ready, interim, head, body, trailers, end, error};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    st_t s = {0};
    s.pause = data[0] & 4;
    static const char *const methods[] = {"GET", "HEAD", "POST", "GET"};
    const char *m = methods[data[0] & 3];
    fg_http_header_t f[] = {{FG_STR_LIT("Host"), FG_STR_LIT("fuzz")},
                            {FG_STR_LIT("TE"), FG_STR_LIT("trailers")}};
    fg_outreq_t out = {fg_str(m), FG_STR_LIT("/f"), FG_STR_NULL, {f, 2, 0, NULL}};
    int post = (data[0] & 3) == 2;
    fg_exchange_req_t rq = {.out = &out, .content_length = -1, .has_body = post};
    fg_h2test_t *t = fg_http2_client_test_new(&rq, &cbs, &s, &s.x);
    if (t == NULL)
        return 0;
    if (post && s.x) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "body", 4);
        fg_exchange_send_body(s.x, b, 0);
        fg_http_header_t tr[] = {{FG_STR_LIT("X-Sum"), FG_STR_LIT("1")}};
        if (s.x)
            fg_exchange_send_trailers(s.x, tr, 1);
        evbuffer_free(b);
    }
    struct evbuffer *sink = evbuffer_new();
    size_t off = 1, piece = (data[1] & 63) + 1;
    while (off < size && s.x) {
        size_t n = size - off < piece ? size - off : piece;
        if (fg_http2_client_test_feed(t, data + off, n) < 0)
            break;
        fg_http2_client_test_output(t, sink);
        evbuffer_drain(sink, evbuffer_get_length(sink));
        off += n;
    }
    if (s.x && s.paused)
        fg_exchange_pause(s.x, 0);
    fg_http2_client_test_free(t);
    evbuffer_free(sink);
    return 0;
}
