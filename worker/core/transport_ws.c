/* The WebSocket transport (worker/core/transport_ws.h): frames above another transport.
 *
 * Receiving decodes frames from `raw` (bytes the inner transport read) as they arrive: a data
 * frame's payload streams to the owner's input, a text message collects in `text`, a control
 * frame waits until it is whole (at most 131 bytes). Sending frames the owner's output into
 * `wire`, which only ever holds whole frames, so a control frame appended to it always lands
 * between two frames; the framing stops while `wire` holds WIRE_HIGH bytes, so the owner's
 * output (and its backpressure) stays where it was. */
#include "worker/core/transport_ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/rand.h>

#include "worker/core/transport.h"

#define WIRE_HIGH (2 * FG_WS_FRAME_MAX) /* framed bytes waiting before framing pauses */
#define CTL_MAX 65536                   /* control frames waiting in wire, at most */
#define HDR_MAX 14                      /* 2 + 8 (length) + 4 (mask) */
/* Bytes one receive takes from the inner transport while no payload comes of them (control
 * frames, text, empty frames): a peer sending those faster than they decode would otherwise
 * hold the worker's loop in one call. */
#define RECV_BUDGET 65536
#define TLS_READ_BUF (4 * (16384 + 256)) /* four full records with their overhead */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct {
    fg_transport_t inner;
    int role;
    const fg_ws_cbs_t *cbs;
    void *arg;
    struct evbuffer *raw;  /* received, not yet decoded */
    struct evbuffer *wire; /* whole frames, not yet sent */
    size_t ctl_bytes;      /* control frames among them (bounded by CTL_MAX) */
    /* the data frame being received */
    uint64_t left;  /* its payload bytes still to come */
    uint8_t key[4]; /* its mask (server side) */
    unsigned koff;  /* position in the mask of the next payload byte */
    unsigned in_frame : 1;
    unsigned frame_text : 1; /* the frame belongs to a text message */
    unsigned msg_text : 1;   /* a fragmented text message is open */
    unsigned msg_bin : 1;    /* a fragmented binary message is open */
    unsigned close_sent : 1;
    unsigned eof : 1;    /* a close frame arrived */
    unsigned failed : 1; /* a protocol error: nothing more is read */
    uint16_t peer_close;
    uint64_t received; /* bytes read from the inner transport */
    size_t textlen;
    char text[FG_WS_TEXT_MAX];
    uint8_t keys[64]; /* fresh masking keys (client side), 16 at a time */
    unsigned nkeys;
} ws_t;

static ws_t *layer(const fg_transport_t *t)
{
    return (ws_t *)t->layer;
}

typedef uint64_t mask_vec __attribute__((vector_size(16)));

/* dst = src XOR the key from key position off (RFC 6455 5.3), 64 bytes a step; dst may be
 * src. Every byte of a tunnel's upload or download passes here once on each side, so the copy
 * out of (or into) an evbuffer and the masking are one pass. */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                      unsigned off)
{
    size_t i = 0;
    uint8_t k8[8];
    for (int j = 0; j < 8; j++)
        k8[j] = key[(off + (unsigned)j) & 3];
    uint64_t k;
    memcpy(&k, k8, 8);
    mask_vec kv = {k, k};
    for (; i + 64 <= n; i += 64) {
        mask_vec a, b, c, d;
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i + 16, 16);
        memcpy(&c, src + i + 32, 16);
        memcpy(&d, src + i + 48, 16);
        a ^= kv;
        b ^= kv;
        c ^= kv;
        d ^= kv;
        memcpy(dst + i, &a, 16);
        memcpy(dst + i + 16, &b, 16);
        memcpy(dst + i + 32, &c, 16);
        memcpy(dst + i + 48, &d, 16);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[(off + i) & 3];
}

static void mask_bytes(uint8_t *p, size_t n, const uint8_t key[4], unsigned off)
{
    mask_copy(p, p, n, key, off);
}

/* Take n bytes (all there) from the front of src into dst, masked from key position off. */
static void remove_masked(struct evbuffer *src, uint8_t *dst, size_t n, const uint8_t key[4],
                          unsigned off)
{
    while (n > 0) {
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(src, (ev_ssize_t)n, NULL, v, 8);
        if (nv > 8)
            nv = 8; /* the count of chains n spans: only 8 were filled in */
        size_t took = 0;
        for (int i = 0; i < nv && took < n; i++) {
            size_t len = v[i].iov_len < n - took ? v[i].iov_len : n - took;
            mask_copy(dst + took, v[i].iov_base, len, key, off + (unsigned)took);
            took += len;
        }
        evbuffer_drain(src, took);
        dst += took;
        off += (unsigned)took;
        n -= took;
    }
}

/* A frame header for a payload of n bytes (RFC 6455 5.2); with key, masked. Returns its
 * length. */
static size_t frame_header(uint8_t *h, int opcode, uint64_t n, const uint8_t *key)
{
    size_t k = 2;
    h[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        k = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
        k = 10;
    }
    if (key) {
        h[1] |= 0x80;
        memcpy(h + k, key, 4);
        k += 4;
    }
    return k;
}

/* RFC 6455 5.3: a fresh, unpredictable key for every frame a client sends. */
static const uint8_t *next_key(ws_t *L)
{
    if (L->nkeys == 0) {
        if (RAND_bytes(L->keys, sizeof(L->keys)) != 1)
            return NULL;
        L->nkeys = sizeof(L->keys) / 4;
    }
    return L->keys + 4 * --L->nkeys;
}

/* Append one whole frame with payload p (n bytes, copied) to wire. 0 or -1. */
static int add_frame(ws_t *L, int opcode, const void *p, size_t n)
{
    uint8_t h[HDR_MAX];
    const uint8_t *key = NULL;
    if (L->role == FG_WS_CLIENT && (key = next_key(L)) == NULL)
        return -1;
    size_t hl = frame_header(h, opcode, n, key);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(L->wire, (ev_ssize_t)(hl + n), &v, 1) != 1)
        return -1;
    memcpy(v.iov_base, h, hl);
    if (n)
        memcpy((uint8_t *)v.iov_base + hl, p, n);
    if (key)
        mask_bytes((uint8_t *)v.iov_base + hl, n, key, 0);
    v.iov_len = hl + n;
    return evbuffer_commit_space(L->wire, &v, 1) == 0 ? 0 : -1;
}

/* Frame up to FG_WS_FRAME_MAX bytes of out as one binary frame into wire. Returns the payload
 * bytes taken, or -1. The server side moves the chains; the client side masks as it copies. */
static ssize_t frame_data(ws_t *L, struct evbuffer *out)
{
    size_t n = evbuffer_get_length(out);
    if (n > FG_WS_FRAME_MAX)
        n = FG_WS_FRAME_MAX;
    if (L->role == FG_WS_SERVER) {
        uint8_t h[HDR_MAX];
        size_t hl = frame_header(h, OP_BIN, n, NULL);
        if (evbuffer_add(L->wire, h, hl) != 0)
            return -1;
        return evbuffer_remove_buffer(out, L->wire, n) == (int)n ? (ssize_t)n : -1;
    }
    uint8_t h[HDR_MAX];
    const uint8_t *key = next_key(L);
    if (key == NULL)
        return -1;
    size_t hl = frame_header(h, OP_BIN, n, key);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(L->wire, (ev_ssize_t)(hl + n), &v, 1) != 1)
        return -1;
    memcpy(v.iov_base, h, hl);
    remove_masked(out, (uint8_t *)v.iov_base + hl, n, key, 0);
    v.iov_len = hl + n;
    return evbuffer_commit_space(L->wire, &v, 1) == 0 ? (ssize_t)n : -1;
}

static int queue_close(ws_t *L, uint16_t code, const char *reason)
{
    if (L->close_sent)
        return 0;
    uint8_t p[125];
    size_t rl = reason ? strnlen(reason, 123) : 0;
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    if (rl)
        memcpy(p + 2, reason, rl);
    L->close_sent = 1;
    return add_frame(L, OP_CLOSE, p, code ? 2 + rl : 0);
}

static int fail(ws_t *L, uint16_t code)
{
    L->failed = 1;
    queue_close(L, code, NULL);
    (void)L->inner.ops->send_chain(&L->inner, L->wire); /* best effort: we are closing */
    errno = EPROTO;
    return -1;
}

/* A whole control frame's payload p (n bytes, unmasked). */
static int control(ws_t *L, int op, const uint8_t *p, size_t n)
{
    switch (op) {
    case OP_PING:
        if (L->close_sent)
            return 0;
        if (L->ctl_bytes + n + HDR_MAX > CTL_MAX)
            return fail(L, 1008); /* pings faster than we can answer: the peer does not read */
        L->ctl_bytes += n + HDR_MAX;
        return add_frame(L, OP_PONG, p, n);
    case OP_PONG:
        if (L->cbs && L->cbs->on_pong)
            L->cbs->on_pong(L->arg, p, n);
        return 0;
    default: /* OP_CLOSE, RFC 6455 5.5.1: echo the code, then the stream ends */
        if (n == 1)
            return fail(L, 1002);
        L->peer_close = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
        L->eof = 1;
        queue_close(L, n >= 2 ? L->peer_close : 1000, NULL);
        return 0;
    }
}

/* Decode what raw holds: payload to in (at most max bytes). Returns the payload bytes given,
 * or -1 (a protocol error; errno EPROTO). */
static ssize_t decode(ws_t *L, struct evbuffer *in, size_t max)
{
    size_t given = 0;
    while (!L->eof && !L->failed) {
        size_t avail = evbuffer_get_length(L->raw);
        if (L->in_frame) {
            size_t n = avail < L->left ? avail : (size_t)L->left;
            if (n == 0 && L->left > 0)
                break;
            if (L->frame_text) {
                if (L->textlen + n > FG_WS_TEXT_MAX)
                    return fail(L, 1009);
                if (L->role == FG_WS_SERVER)
                    remove_masked(L->raw, (uint8_t *)L->text + L->textlen, n, L->key, L->koff);
                else
                    evbuffer_remove(L->raw, L->text + L->textlen, n);
                L->textlen += n;
            } else {
                if (n > max - given)
                    n = max - given;
                if (n == 0 && L->left > 0)
                    break;
                if (n == 0) {
                    /* an empty frame */
                } else if (L->role == FG_WS_SERVER) {
                    struct evbuffer_iovec v;
                    if (evbuffer_reserve_space(in, (ev_ssize_t)n, &v, 1) != 1)
                        return -1;
                    remove_masked(L->raw, v.iov_base, n, L->key, L->koff);
                    v.iov_len = n;
                    evbuffer_commit_space(in, &v, 1);
                } else {
                    evbuffer_remove_buffer(L->raw, in, n);
                }
                given += n;
            }
            L->koff = (L->koff + (unsigned)n) & 3;
            L->left -= n;
            if (L->left > 0)
                break;
            L->in_frame = 0;
            if (L->frame_text && !L->msg_text) { /* the text message is complete */
                for (size_t i = 0; i < L->textlen; i++)
                    if ((unsigned char)L->text[i] >= 0x80)
                        return fail(L, 1007); /* control messages are ASCII */
                if (L->cbs && L->cbs->on_text)
                    L->cbs->on_text(L->arg, L->text, L->textlen);
                L->textlen = 0;
            }
            continue;
        }
        /* a frame header (RFC 6455 5.2) */
        uint8_t h[HDR_MAX];
        if (avail < 2)
            break;
        evbuffer_copyout(L->raw, h, avail < HDR_MAX ? avail : HDR_MAX);
        int fin = h[0] & 0x80, op = h[0] & 0x0f, masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (h[0] & 0x70)
            return fail(L, 1002); /* no extension was negotiated */
        if ((L->role == FG_WS_SERVER) != (masked != 0))
            return fail(L, 1002); /* RFC 6455 5.1 */
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            if (len >> 63)
                return fail(L, 1002);
            hl = 10;
        }
        if (masked && avail < hl + 4)
            break;
        uint8_t key[4] = {0};
        if (masked)
            memcpy(key, h + hl, 4);
        size_t full = hl + (masked ? 4 : 0);
        if (op >= 8) { /* control: whole, at most 125 bytes, never fragmented (RFC 6455 5.5) */
            if (!fin || len > 125 || (op != OP_CLOSE && op != OP_PING && op != OP_PONG))
                return fail(L, 1002);
            if (avail < full + len)
                break;
            uint8_t p[125];
            evbuffer_drain(L->raw, full);
            evbuffer_remove(L->raw, p, (size_t)len);
            if (masked)
                mask_bytes(p, (size_t)len, key, 0);
            if (control(L, op, p, (size_t)len) != 0)
                return -1;
            continue;
        }
        /* data: a new message, or a continuation of the open one (RFC 6455 5.4) */
        if (op == OP_CONT) {
            if (!L->msg_text && !L->msg_bin)
                return fail(L, 1002);
            L->frame_text = L->msg_text;
        } else if (op == OP_TEXT || op == OP_BIN) {
            if (L->msg_text || L->msg_bin)
                return fail(L, 1002);
            L->frame_text = op == OP_TEXT;
        } else {
            return fail(L, 1002);
        }
        L->msg_text = !fin && L->frame_text;
        L->msg_bin = !fin && !L->frame_text;
        evbuffer_drain(L->raw, full);
        memcpy(L->key, key, 4);
        L->koff = 0;
        L->left = len;
        L->in_frame = 1;
    }
    return (ssize_t)given;
}

/* Whether raw holds something decode can act on without another read. */
static int decodable(const ws_t *L)
{
    size_t avail = evbuffer_get_length(L->raw);
    if (L->failed || L->eof || avail == 0)
        return 0;
    if (L->in_frame)
        return 1;
    uint8_t h[HDR_MAX];
    evbuffer_copyout(L->raw, h, avail < HDR_MAX ? avail : HDR_MAX);
    if (avail < 2)
        return 0;
    size_t need = 2 +
                  ((h[1] & 0x7f) == 126   ? 2
                   : (h[1] & 0x7f) == 127 ? 8
                                          : 0) +
                  (h[1] & 0x80 ? 4 : 0);
    if ((h[0] & 0x0f) >= 8 && need + (h[1] & 0x7f) > avail)
        return 0; /* a control frame is taken whole */
    return avail >= need;
}

static ssize_t ws_recv(fg_transport_t *t, struct evbuffer *in, size_t max)
{
    ws_t *L = layer(t);
    size_t taken = 0;
    for (;;) {
        if (L->failed) {
            errno = EPROTO;
            return -1;
        }
        ssize_t n = decode(L, in, max);
        if (n != 0)
            return n;
        if (L->eof)
            return 0;
        if (taken >= RECV_BUDGET) {
            /* yield to the loop; the owner's conn comes back while the inner transport still
             * holds bytes (the socket's readiness, or ws_pending for TLS's buffer) */
            t->want = FG_TRANSPORT_WANT_READ;
            return FG_TRANSPORT_AGAIN;
        }
        ssize_t r = L->inner.ops->recv(&L->inner, L->raw, max);
        if (r == FG_TRANSPORT_AGAIN)
            t->want = L->inner.want;
        if (r <= 0)
            return r;
        taken += (size_t)r;
        L->received += (uint64_t)r;
    }
}

/* Bytes the inner transport holds (TLS: records gathered, not yet written). */
static size_t inner_unsent(const ws_t *L)
{
    return L->inner.ops->unsent != NULL ? L->inner.ops->unsent(&L->inner) : 0;
}

static ssize_t ws_send_chain(fg_transport_t *t, struct evbuffer *out)
{
    ws_t *L = layer(t);
    ssize_t took = 0;
    if (L->close_sent) {
        /* RFC 6455 5.5.1: nothing follows a close frame; the owner's bytes are dropped */
        took = (ssize_t)evbuffer_get_length(out);
        evbuffer_drain(out, (size_t)took);
    }
    while (evbuffer_get_length(out) > 0 && evbuffer_get_length(L->wire) < WIRE_HIGH) {
        ssize_t n = frame_data(L, out);
        if (n < 0) {
            errno = ENOMEM;
            return -1;
        }
        took += n;
    }
    if (evbuffer_get_length(L->wire) == 0 && inner_unsent(L) == 0)
        return took;
    ssize_t r = L->inner.ops->send_chain(&L->inner, L->wire);
    if (r > 0) {
        /* control frames leave first among what wire held; count them out conservatively */
        size_t left = evbuffer_get_length(L->wire);
        if (left < L->ctl_bytes)
            L->ctl_bytes = left;
    }
    if (r == FG_TRANSPORT_AGAIN) {
        t->want = L->inner.want;
        return took > 0 ? took : FG_TRANSPORT_AGAIN;
    }
    if (r < 0)
        return r;
    return took > 0 ? took : r;
}

static size_t ws_unsent(const fg_transport_t *t)
{
    const ws_t *L = layer(t);
    return evbuffer_get_length(L->wire) + inner_unsent(L);
}

static int ws_shutdown_write(fg_transport_t *t)
{
    ws_t *L = layer(t);
    if (queue_close(L, 1000, NULL) != 0) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t r = L->inner.ops->send_chain(&L->inner, L->wire);
    if (r < 0 && r != FG_TRANSPORT_AGAIN)
        return -1;
    return 0; /* the close frame ends the stream; the inner transport stays open for it */
}

static int ws_handshake(fg_transport_t *t)
{
    (void)t;
    return 0;
}

static size_t ws_pending(const fg_transport_t *t)
{
    const ws_t *L = layer(t);
    return (size_t)decodable(L) + L->inner.ops->pending(&L->inner) + (L->eof ? 1 : 0);
}

static void ws_close(fg_transport_t *t)
{
    ws_t *L = layer(t);
    if (L == NULL)
        return;
    L->inner.ops->close(&L->inner);
    evbuffer_free(L->raw);
    evbuffer_free(L->wire);
    free(L);
    t->layer = NULL;
}

static const fg_transport_ops_t ws_ops = {
    .name = "websocket",
    .caps = 0,
    .recv = ws_recv,
    .send_chain = ws_send_chain,
    .shutdown_write = ws_shutdown_write,
    .handshake = ws_handshake,
    .pending = ws_pending,
    .close = ws_close,
    .unsent = ws_unsent,
};

int fg_transport_ws_push(fg_transport_t *t, int role, const fg_ws_cbs_t *cbs, void *arg,
                         struct evbuffer *already)
{
    ws_t *L = calloc(1, sizeof(*L));
    if (L == NULL)
        return -ENOMEM;
    L->raw = evbuffer_new();
    L->wire = evbuffer_new();
    if (L->raw == NULL || L->wire == NULL) {
        if (L->raw)
            evbuffer_free(L->raw);
        if (L->wire)
            evbuffer_free(L->wire);
        free(L);
        return -ENOMEM;
    }
    if (already && evbuffer_add_buffer(L->raw, already) != 0) {
        evbuffer_free(L->raw);
        evbuffer_free(L->wire);
        free(L);
        return -ENOMEM;
    }
    /* A tunnel carries bulk transfers: with read-ahead, one read(2) then takes several TLS
     * records (16 KiB each at most, RFC 8446 5.1) rather than one. The buffer exists only
     * while it holds bytes (SSL_MODE_RELEASE_BUFFERS). */
    if (t->ssl != NULL)
        SSL_set_default_read_buffer_len(t->ssl, TLS_READ_BUF);
    L->inner = *t;
    L->role = role;
    L->cbs = cbs;
    L->arg = arg;
    *t = (fg_transport_t){.ops = &ws_ops, .fd = L->inner.fd, .ssl = L->inner.ssl, .layer = L};
    return 0;
}

int fg_transport_ws_control(fg_transport_t *t, int kind, uint16_t code, const void *p, size_t n)
{
    ws_t *L = t->ops == &ws_ops ? layer(t) : NULL;
    if (L == NULL || L->close_sent)
        return -ENOTCONN;
    if (L->ctl_bytes + n + HDR_MAX > CTL_MAX)
        return -ENOBUFS;
    int r;
    switch (kind) {
    case FG_WS_CTL_TEXT:
        if (n > FG_WS_TEXT_MAX)
            return -EINVAL;
        r = add_frame(L, OP_TEXT, p, n);
        break;
    case FG_WS_CTL_PING:
        if (n > 125)
            return -EINVAL;
        r = add_frame(L, OP_PING, p, n);
        break;
    default:
        if (n > 123)
            return -EINVAL;
        r = queue_close(L, code, p);
        break;
    }
    if (r != 0)
        return -ENOMEM;
    L->ctl_bytes += n + HDR_MAX;
    return 0;
}

uint16_t fg_transport_ws_peer_close(const fg_transport_t *t)
{
    return t->ops == &ws_ops ? layer(t)->peer_close : 0;
}

uint64_t fg_transport_ws_received(const fg_transport_t *t)
{
    return t->ops == &ws_ops ? layer(t)->received : 0;
}
