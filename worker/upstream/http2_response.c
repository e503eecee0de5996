/* The HTTP/2 client's responses (worker/upstream/http2_stream.h): the nghttp2 callbacks that
 * receive the response's header blocks (interim, final, trailers), its DATA and the stream's
 * end, and hand them to the exchange's handler or to a relay. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "worker/core/clock.h"
#include "worker/upstream/http1_client.h"
#include "worker/upstream/http2_client.h"
#include "worker/upstream/http2_stream.h"
#include "worker/upstream/http2_tunnel.h"

static h2x_t *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x && x->head_done && x->head_hb == NULL) {
        x->head_hb = x->hb; /* the trailers get memory of their own */
        x->hb = NULL;
        x->hcap = 0;
    }
    if (x) {
        x->hlen = 0;
        x->nh = 0;
        x->status = 0;
        x->clen = -1;
    }
    return 0;
}

/* Keep a field in x's header block: bytes in hb (grown up to HEAD_MAX), offsets in hoff. */
static int keep_field(h2x_t *x, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    if (x->nh >= FIELDS_MAX || x->hlen + nl + vl > HEAD_MAX)
        return -1;
    /* A response head usually fits in the stream (hin): no allocation for it. */
    if (x->hb == NULL && x->head_hb == NULL) {
        x->hb = x->hin;
        x->hcap = sizeof(x->hin);
    }
    if (x->hlen + nl + vl > x->hcap) {
        size_t cap = x->hcap ? x->hcap : 4096;
        while (cap < x->hlen + nl + vl)
            cap *= 2;
        char *nb = x->hb == x->hin ? malloc(cap) : realloc(x->hb, cap);
        if (nb == NULL)
            return -1;
        if (x->hb == x->hin)
            memcpy(nb, x->hin, x->hlen);
        x->hb = nb;
        x->hcap = cap;
    }
    uint32_t *o = x->hoff[x->nh++];
    o[0] = (uint32_t)x->hlen;
    o[1] = (uint32_t)nl;
    memcpy(x->hb + x->hlen, n, nl);
    x->hlen += nl;
    o[2] = (uint32_t)x->hlen;
    o[3] = (uint32_t)vl;
    memcpy(x->hb + x->hlen, v, vl);
    x->hlen += vl;
    return 0;
}

static int parse_status(const uint8_t *v, size_t len)
{
    if (len != 3)
        return -1;
    int st = 0;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        st = st * 10 + (v[i] - '0');
    }
    return st >= 100 ? st : -1;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x == NULL)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        x->status = parse_status(value, valuelen);
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        int64_t cl = 0;
        for (size_t i = 0; i < valuelen && cl >= 0; i++)
            cl = cl < ((int64_t)1 << 58) ? cl * 10 + (value[i] - '0') : -1;
        x->clen = cl; /* nghttp2 checked it is digits and matches the DATA (RFC 9113 8.1.1) */
        return 0;
    }
    if (keep_field(x, name, namelen, value, valuelen) != 0) {
        fg_http2_client_stream_fail(x, FG_XERR_INVALID, 0, "upstream response head too large");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* The kept header block as fields (names as received: lowercase). */
static size_t fields_of(h2x_t *x, fg_http_header_t *out)
{
    for (unsigned i = 0; i < x->nh; i++) {
        out[i].name = (fg_str_t){x->hb + x->hoff[i][0], x->hoff[i][1]};
        out[i].value = (fg_str_t){x->hb + x->hoff[i][2], x->hoff[i][3]};
    }
    return x->nh;
}

/* A complete HEADERS block for x: interim, final head or trailers. Returns 1 when x is gone
 * or failed. */
static int got_headers(h2x_t *x, const nghttp2_frame *f)
{
    fg_http_header_t fields[FIELDS_MAX];
    size_t n = fields_of(x, fields);
    int eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (x->head_done) {
        /* A trailer section (RFC 9113 8.1); END_STREAM follows (nghttp2 checks it). */
        if (x->cbs->on_trailers && n > 0 && x->cbs->on_trailers(x->arg, fields, n) != 0)
            return 1;
        return x->dead;
    }
    if (x->status < 0 || x->status == 0) {
        fg_http2_client_stream_fail(x, FG_XERR_INVALID, 0, "invalid response from upstream");
        return 1;
    }
    if (x->status < 200) {
        if (x->status == 101 || ++x->interims > INTERIM_MAX) {
            fg_http2_client_stream_fail(x, FG_XERR_INVALID, 0,
                                        "invalid interim response from upstream");
            return 1;
        }
        if (x->cbs->on_interim(x->arg, x->status, fields, n) != 0)
            return 1;
        return x->dead;
    }
    x->head_done = 1;
    x->info.phase = FG_XPHASE_BODY;
    fg_exchange_head_t h = {x->status, fields, n, x->clen, 0};
    fg_str_t m = x->up_head ? FG_STR_LIT("HEAD") : FG_STR_LIT("GET");
    if (fg_http1_response_bodiless(m, x->status))
        h.bodiless = 1;
    else if (eos)
        h.content_length = 0;
    if (x->cbs->on_head(x->arg, &h) != 0 || x->dead)
        return 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2conn_t *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1; /* streams above last-stream-id close with REFUSED_STREAM */
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->got_settings) {
        /* RFC 9113 3.4: the server's preface; waiting upgrades learn whether extended CONNECT
         * is allowed (RFC 8441 3) once the receive returns */
        c->got_settings = 1;
        c->settings_due = 1;
        return 0;
    }
    if (f->hd.stream_id == 0)
        return 0;
    h2x_t *x = stream_of(s, f->hd.stream_id);
    if (x != NULL && x->relay) {
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            fg_http2_tunnel_eof(x); /* RFC 8441 4: the destination's half-close */
        return 0;
    }
    if (x == NULL || x->finished)
        return 0;
    x->busy++;
    int gone = 0;
    if (f->hd.type == NGHTTP2_HEADERS)
        gone = got_headers(x, f);
    if (!gone && !x->dead && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && x->head_done) {
        x->ended = 1;
        if (!x->paused)
            fg_http2_client_deliver(x);
    }
    fg_http2_client_stream_leave(x);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    h2conn_t *c = ud;
    h2x_t *x = stream_of(s, id);
    /* The connection window reopens as the bytes arrive: what the streams hold unread is
     * bounded by their own windows (fg_http2_client_consumed), and clients that stop reading
     * never close the window that other clients' streams share (RFC 9113 5.2.2, 6.9). */
    nghttp2_session_consume_connection(s, len);
    if (x != NULL && x->relay) {
        fg_http2_tunnel_data(x, data, len);
        return 0;
    }
    if (x == NULL || x->finished) {
        fg_http2_client_consumed(c, id, len); /* nobody reads it: the window goes back */
        return 0;
    }
    if (!x->info.got_bytes)
        x->info.first_byte_us = fg_clock_now_us() - x->info.sent_at_us;
    x->info.got_bytes = 1;
    evbuffer_add(x->in, data, len);
    x->unconsumed += len;
    if (x->paused)
        return 0; /* held within the stream's window (STREAM_WINDOW) */
    x->busy++;
    fg_http2_client_deliver(x);
    fg_http2_client_stream_leave(x);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    h2x_t *x = stream_of(s, id);
    if (x == NULL)
        return 0;
    x->closed = 1;
    if (x->relay) {
        /* Both ways ended cleanly: the relay heard the destination's end already. */
        if (!(x->ended && code == NGHTTP2_NO_ERROR))
            fg_http2_tunnel_gone(x);
        return 0;
    }
    if (x->finished || (x->ended && code == NGHTTP2_NO_ERROR))
        return 0;
    if (code == NGHTTP2_REFUSED_STREAM) {
        /* RFC 9113 8.7: not processed, so it may go again, as after a stale pooled
         * connection (the proxy retries once on a fresh connection). */
        x->info.reused = 1;
        x->info.got_bytes = 0;
        fg_http2_client_stream_fail(x, FG_XERR_EOF, 0, "upstream refused the stream");
    } else if (x->info.phase == FG_XPHASE_BODY) {
        fg_http2_client_stream_fail(x, FG_XERR_EOF_BODY, 0, "upstream reset the stream");
    } else {
        fg_http2_client_stream_fail(x, FG_XERR_RESET, ECONNRESET, "upstream reset the stream");
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    h2x_t *x = hd->stream_id ? stream_of(s, hd->stream_id) : NULL;
    if (x && x->idle_ms)
        x->heard_us = fg_clock_now_us();
    if (x && !x->info.got_bytes && hd->type == NGHTTP2_HEADERS) {
        x->info.first_byte_us = fg_clock_now_us() - x->info.sent_at_us;
        x->info.got_bytes = 1;
    }
    return 0;
}

nghttp2_session_callbacks *fg_http2_client_callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    return cbs;
}
