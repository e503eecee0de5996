/* Unit tests for worker/core/transport_ws.c over a socketpair with small socket buffers: a
 * large stream both ways (masked from the client, unmasked from the server) arrives intact
 * through partial writes; text messages, pings and closes reach the control callbacks and are
 * answered; frames handed over at push time and frames split across reads decode; and every
 * RFC 6455 framing violation a peer can send is refused (EPROTO) with a close 1002 sent back.
 * Raw frames are written to the socket by hand, so the decoder is checked against the wire
 * format and not against our own encoder. Finally an fg_conn on a real loop answers a ping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "worker/core/conn.h"
#include "worker/core/transport.h"
#include "worker/core/transport_ws.h"

#define BIG (1024 * 1024 + 333)

typedef struct {
    char text[8][FG_WS_TEXT_MAX + 1];
    size_t ntext;
    uint8_t pong[126];
    size_t pong_len;
    int npong;
} seen_t;

static void on_text(void *arg, const char *msg, size_t len)
{
    seen_t *s = arg;
    assert_true(s->ntext < 8);
    memcpy(s->text[s->ntext], msg, len);
    s->text[s->ntext++][len] = '\0';
}

static void on_pong(void *arg, const uint8_t *p, size_t len)
{
    seen_t *s = arg;
    memcpy(s->pong, p, len);
    s->pong_len = len;
    s->npong++;
}

static const fg_ws_cbs_t cbs = {.on_text = on_text, .on_pong = on_pong};

typedef struct {
    int fds[2];
    fg_transport_t srv, cli; /* srv on fds[0], cli on fds[1] */
    seen_t ss, cs;
} pair_t;

static void pair_open(pair_t *p, int layered_client)
{
    memset(p, 0, sizeof(*p));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds), 0);
    int sz = 4096;
    for (int i = 0; i < 2; i++) {
        setsockopt(p->fds[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        setsockopt(p->fds[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    }
    fg_transport_tcp_init(&p->srv, p->fds[0]);
    assert_int_equal(fg_transport_ws_push(&p->srv, FG_WS_SERVER, &cbs, &p->ss, NULL), 0);
    fg_transport_tcp_init(&p->cli, p->fds[1]);
    if (layered_client)
        assert_int_equal(fg_transport_ws_push(&p->cli, FG_WS_CLIENT, &cbs, &p->cs, NULL), 0);
}

static void pair_close(pair_t *p)
{
    p->srv.ops->close(&p->srv);
    p->cli.ops->close(&p->cli);
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Move `total` bytes from a to b (a sending out, b receiving into in) until all arrived. */
static void pump(fg_transport_t *a, struct evbuffer *out, fg_transport_t *b, struct evbuffer *in,
                 size_t total)
{
    int spins = 0;
    while (evbuffer_get_length(in) < total) {
        if (evbuffer_get_length(out) > 0 || (a->ops->unsent && a->ops->unsent(a) > 0)) {
            ssize_t n = a->ops->send_chain(a, out);
            assert_true(n > 0 || n == FG_TRANSPORT_AGAIN);
        }
        ssize_t r = b->ops->recv(b, in, 65536);
        assert_true(r > 0 || r == FG_TRANSPORT_AGAIN);
        assert_true(++spins < 1000000);
    }
}

static void fill(struct evbuffer *b, size_t n, unsigned seed)
{
    uint8_t chunk[4096];
    for (size_t off = 0; off < n;) {
        size_t k = n - off < sizeof(chunk) ? n - off : sizeof(chunk);
        for (size_t i = 0; i < k; i++)
            chunk[i] = (uint8_t)((off + i) * 31 + seed);
        evbuffer_add(b, chunk, k);
        off += k;
    }
}

static void check(struct evbuffer *b, size_t n, unsigned seed)
{
    assert_int_equal(evbuffer_get_length(b), n);
    uint8_t *p = evbuffer_pullup(b, -1);
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(i * 31 + seed))
            fail_msg("byte %zu differs", i);
}

static void test_stream_both_ways(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 1);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    fill(out, BIG, 1);
    pump(&p.cli, out, &p.srv, in, BIG); /* client to server: masked frames */
    check(in, BIG, 1);
    evbuffer_drain(in, BIG);
    fill(out, BIG, 7);
    pump(&p.srv, out, &p.cli, in, BIG); /* server to client: unmasked, chains moved */
    check(in, BIG, 7);
    evbuffer_free(out);
    evbuffer_free(in);
    pair_close(&p);
}

/* Every frame read counts as a sign of the peer, data as much as a pong (agent heartbeats). */
static void test_received_counts_every_frame(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 1);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    assert_int_equal(fg_transport_ws_received(&p.cli), 0);
    fill(out, 1000, 3);
    pump(&p.srv, out, &p.cli, in, 1000);
    uint64_t after_data = fg_transport_ws_received(&p.cli);
    assert_int_equal(after_data, 1000 + 4); /* payload and a 4-byte header (126: 16-bit length) */
    assert_int_equal(fg_transport_ws_control(&p.srv, FG_WS_CTL_PING, 0, "x", 1), 0);
    assert_true(p.srv.ops->send_chain(&p.srv, out) >= 0);
    assert_int_equal(p.cli.ops->recv(&p.cli, in, 65536), FG_TRANSPORT_AGAIN);
    assert_int_equal(fg_transport_ws_received(&p.cli), after_data + 3);
    assert_int_equal(fg_transport_ws_received(&p.srv), 0); /* the client sent nothing */
    evbuffer_free(out);
    evbuffer_free(in);
    pair_close(&p);
}

static void test_control_messages(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 1);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    assert_int_equal(fg_transport_ws_control(&p.cli, FG_WS_CTL_TEXT, 0, "FGT/1 AUTH x y", 14), 0);
    assert_int_equal(fg_transport_ws_control(&p.cli, FG_WS_CTL_PING, 0, "12345678", 8), 0);
    evbuffer_add(out, "data", 4);
    pump(&p.cli, out, &p.srv, in, 4);
    assert_int_equal(p.ss.ntext, 1);
    assert_string_equal(p.ss.text[0], "FGT/1 AUTH x y");
    /* the server answered the ping: its pong waits in the layer until the next write */
    assert_true(p.srv.ops->unsent(&p.srv) > 0);
    assert_true(p.srv.ops->send_chain(&p.srv, out) > 0);
    assert_int_equal(p.cli.ops->recv(&p.cli, in, 65536), FG_TRANSPORT_AGAIN);
    assert_int_equal(p.cs.npong, 1);
    assert_memory_equal(p.cs.pong, "12345678", 8);
    /* a close: the server reads the end, answers with the same code; both see it */
    assert_int_equal(fg_transport_ws_control(&p.cli, FG_WS_CTL_CLOSE, 1000, "bye", 3), 0);
    assert_true(p.cli.ops->send_chain(&p.cli, out) > 0);
    assert_int_equal(p.srv.ops->recv(&p.srv, in, 65536), 0);
    assert_int_equal(fg_transport_ws_peer_close(&p.srv), 1000);
    assert_true(p.srv.ops->send_chain(&p.srv, out) > 0);
    assert_int_equal(p.cli.ops->recv(&p.cli, in, 65536), 0);
    /* nothing is framed after a close */
    assert_int_equal(fg_transport_ws_control(&p.srv, FG_WS_CTL_TEXT, 0, "x", 1), -ENOTCONN);
    evbuffer_free(out);
    evbuffer_free(in);
    pair_close(&p);
}

static void test_close_code_echoed(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 1);
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    assert_int_equal(fg_transport_ws_control(&p.srv, FG_WS_CTL_CLOSE, 1008, "auth", 4), 0);
    assert_true(p.srv.ops->send_chain(&p.srv, out) > 0);
    assert_int_equal(p.cli.ops->recv(&p.cli, in, 65536), 0);
    assert_int_equal(fg_transport_ws_peer_close(&p.cli), 1008);
    assert_true(p.cli.ops->send_chain(&p.cli, out) > 0);
    assert_int_equal(p.srv.ops->recv(&p.srv, in, 65536), 0);
    assert_int_equal(fg_transport_ws_peer_close(&p.srv), 1008);
    evbuffer_free(out);
    evbuffer_free(in);
    pair_close(&p);
}

/* Write raw bytes as the client to the server's socket. */
static void raw_write(pair_t *p, const void *b, size_t n)
{
    assert_int_equal(write(p->fds[1], b, n), (ssize_t)n);
}

/* A masked client frame; key fixed, payload masked here. */
static size_t masked_frame(uint8_t *f, int b0, const char *payload, size_t n)
{
    static const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t k = 0;
    f[k++] = (uint8_t)b0;
    if (n < 126) {
        f[k++] = (uint8_t)(0x80 | n);
    } else {
        f[k++] = 0x80 | 126;
        f[k++] = (uint8_t)(n >> 8);
        f[k++] = (uint8_t)n;
    }
    memcpy(f + k, key, 4);
    k += 4;
    for (size_t i = 0; i < n; i++)
        f[k + i] = (uint8_t)(payload[i] ^ key[i & 3]);
    return k + n;
}

static void test_fragments_and_split_reads(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 0);
    struct evbuffer *in = evbuffer_new();
    uint8_t f[512];
    /* written one byte at a time */
    size_t n = 0;
    n += masked_frame(f + n, 0x02, "ab", 2);     /* binary, not final */
    n += masked_frame(f + n, 0x89, "pp", 2);     /* a ping between fragments */
    n += masked_frame(f + n, 0x80, "cd", 2);     /* continuation, final */
    n += masked_frame(f + n, 0x01, "FGT/1 ", 6); /* text, not final */
    n += masked_frame(f + n, 0x80, "RECONNECT", 9);
    n += masked_frame(f + n, 0x82, "", 0); /* an empty binary frame */
    n += masked_frame(f + n, 0x82, "e", 1);
    for (size_t i = 0; i < n; i++) {
        raw_write(&p, f + i, 1);
        ssize_t r = p.srv.ops->recv(&p.srv, in, 65536);
        assert_true(r > 0 || r == FG_TRANSPORT_AGAIN);
    }
    assert_int_equal(evbuffer_get_length(in), 5);
    assert_memory_equal(evbuffer_pullup(in, -1), "abcde", 5);
    assert_int_equal(p.ss.ntext, 1);
    assert_string_equal(p.ss.text[0], "FGT/1 RECONNECT");
    assert_true(p.srv.ops->unsent(&p.srv) > 0); /* the pong */
    evbuffer_free(in);
    pair_close(&p);
}

static void test_bytes_given_at_push(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    fg_transport_t t;
    fg_transport_tcp_init(&t, fds[0]);
    struct evbuffer *already = evbuffer_new(), *in = evbuffer_new();
    uint8_t f[64];
    size_t n = masked_frame(f, 0x81, "FGT/1 RECONNECT", 15);
    n += masked_frame(f + n, 0x82, "xyz", 3);
    evbuffer_add(already, f, n);
    seen_t s = {0};
    assert_int_equal(fg_transport_ws_push(&t, FG_WS_SERVER, &cbs, &s, already), 0);
    assert_int_equal(evbuffer_get_length(already), 0);
    assert_true(t.ops->pending(&t) > 0); /* no socket event will announce them */
    assert_int_equal(t.ops->recv(&t, in, 65536), 3);
    assert_int_equal(s.ntext, 1);
    assert_int_equal(t.ops->pending(&t), 0);
    t.ops->close(&t);
    evbuffer_free(already);
    evbuffer_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* Frames whose bytes lie in many small chains of odd sizes, read back a few bytes at a time:
 * the unmasking picks up the key at the right position across every chain and read boundary. */
static void test_unmask_across_chains_and_reads(void **state)
{
    (void)state;
    enum { N = 40000 };
    static uint8_t f[2 * (N + 14)];
    static char payload[N];
    for (size_t i = 0; i < N; i++)
        payload[i] = (char)(i * 7 + 3);
    size_t n = 0;
    for (int k = 0; k < 2; k++) { /* two frames of N / 2, the second one's key restarts */
        f[n++] = 0x82;
        f[n++] = 0x80 | 126;
        f[n++] = (uint8_t)((N / 2) >> 8);
        f[n++] = (uint8_t)(N / 2);
        const uint8_t key[4] = {0xa5, (uint8_t)(0x13 + k), 0x7e, 0xc1};
        memcpy(f + n, key, 4);
        n += 4;
        for (size_t i = 0; i < N / 2; i++)
            f[n + i] = (uint8_t)(payload[k * (N / 2) + i] ^ key[i & 3]);
        n += N / 2;
    }
    struct evbuffer *already = evbuffer_new(), *in = evbuffer_new();
    for (size_t off = 0, step = 1; off < n; off += step, step = step % 13 + 2)
        evbuffer_add_reference(already, f + off, off + step <= n ? step : n - off, NULL, NULL);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    fg_transport_t t;
    fg_transport_tcp_init(&t, fds[0]);
    seen_t s = {0};
    assert_int_equal(fg_transport_ws_push(&t, FG_WS_SERVER, &cbs, &s, already), 0);
    for (size_t max = 1; evbuffer_get_length(in) < N; max = max % 11 + 1) {
        ssize_t r = t.ops->recv(&t, in, max);
        assert_true(r > 0 && (size_t)r <= max);
    }
    assert_memory_equal(evbuffer_pullup(in, -1), payload, N);
    t.ops->close(&t);
    evbuffer_free(already);
    evbuffer_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* The client masks output that lies in many small chains: read off the socket by hand, every
 * frame is masked (RFC 6455 5.3) and unmasks to the bytes given, in order. */
static void test_client_masks_across_chains(void **state)
{
    (void)state;
    enum { N = 3 * FG_WS_FRAME_MAX + 4321 };
    static uint8_t src[N], wire[N + 64 * 14], got[N];
    for (size_t i = 0; i < N; i++)
        src[i] = (uint8_t)(i * 13 + 5);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    fg_transport_t t;
    fg_transport_tcp_init(&t, fds[1]);
    seen_t s = {0};
    assert_int_equal(fg_transport_ws_push(&t, FG_WS_CLIENT, &cbs, &s, NULL), 0);
    struct evbuffer *out = evbuffer_new();
    for (size_t off = 0, step = 3; off < N; off += step, step = step * 7 % 1021 + 1)
        evbuffer_add_reference(out, src + off, off + step <= N ? step : N - off, NULL, NULL);
    size_t have = 0;
    for (int spins = 0; evbuffer_get_length(out) > 0 || t.ops->unsent(&t) > 0; spins++) {
        ssize_t r = t.ops->send_chain(&t, out);
        assert_true(r > 0 || r == FG_TRANSPORT_AGAIN);
        ssize_t k = read(fds[0], wire + have, sizeof(wire) - have);
        if (k > 0)
            have += (size_t)k;
        assert_true(spins < 100000);
    }
    ssize_t k;
    while ((k = read(fds[0], wire + have, sizeof(wire) - have)) > 0)
        have += (size_t)k;
    size_t pos = 0, n = 0;
    while (pos < have) {
        assert_int_equal(wire[pos], 0x82);
        assert_true(wire[pos + 1] & 0x80);
        size_t len = wire[pos + 1] & 0x7f, hl = 2;
        if (len == 126) {
            len = (size_t)wire[pos + 2] << 8 | wire[pos + 3];
            hl = 4;
        } else if (len == 127) {
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | wire[pos + 2 + i];
            hl = 10;
        }
        const uint8_t *key = wire + pos + hl;
        assert_true(n + len <= N);
        for (size_t i = 0; i < len; i++)
            got[n + i] = wire[pos + hl + 4 + i] ^ key[i & 3];
        n += len;
        pos += hl + 4 + len;
    }
    assert_int_equal(pos, have);
    assert_int_equal(n, N);
    assert_memory_equal(got, src, N);
    t.ops->close(&t);
    evbuffer_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* One violation per case: the server refuses it with EPROTO and sends close 1002. */
static void expect_refused(const uint8_t *f, size_t n, uint16_t code)
{
    pair_t p;
    pair_open(&p, 0);
    struct evbuffer *in = evbuffer_new();
    raw_write(&p, f, n);
    errno = 0;
    ssize_t r;
    while ((r = p.srv.ops->recv(&p.srv, in, 65536)) > 0)
        ;
    assert_int_equal(r, -1);
    assert_int_equal(errno, EPROTO);
    uint8_t back[16];
    ssize_t got = read(p.fds[1], back, sizeof(back));
    assert_true(got >= 4);
    assert_int_equal(back[0], 0x88); /* close, final */
    assert_int_equal(back[1], 2);    /* unmasked from the server, code only */
    assert_int_equal(back[2] << 8 | back[3], code);
    evbuffer_free(in);
    pair_close(&p);
}

static void test_rfc6455_5_1_unmasked_client_frame_refused(void **state)
{
    (void)state;
    const uint8_t f[] = {0x82, 0x01, 'x'};
    expect_refused(f, sizeof(f), 1002);
}

static void test_rfc6455_5_2_reserved_bits_refused(void **state)
{
    (void)state;
    uint8_t f[16];
    size_t n = masked_frame(f, 0xc2, "x", 1); /* RSV1 without an extension */
    expect_refused(f, n, 1002);
    n = masked_frame(f, 0x83, "x", 1); /* reserved opcode 3 */
    expect_refused(f, n, 1002);
    n = masked_frame(f, 0x8b, "x", 1); /* reserved control opcode 0xB */
    expect_refused(f, n, 1002);
}

static void test_rfc6455_5_5_control_frames(void **state)
{
    (void)state;
    uint8_t f[300];
    char big[126];
    memset(big, 'p', sizeof(big));
    size_t n = masked_frame(f, 0x89, big, 126); /* a ping over 125 bytes */
    expect_refused(f, n, 1002);
    n = masked_frame(f, 0x09, "p", 1); /* a fragmented ping */
    expect_refused(f, n, 1002);
    n = masked_frame(f, 0x88, "x", 1); /* a close with a one-byte body */
    expect_refused(f, n, 1002);
}

static void test_rfc6455_5_4_fragmentation_order(void **state)
{
    (void)state;
    uint8_t f[64];
    size_t n = masked_frame(f, 0x80, "x", 1); /* a continuation with nothing open */
    expect_refused(f, n, 1002);
    n = masked_frame(f, 0x02, "a", 1);
    n += masked_frame(f + n, 0x82, "b", 1); /* a new message before the open one ended */
    expect_refused(f, n, 1002);
}

static void test_text_limits(void **state)
{
    (void)state;
    uint8_t *f = malloc(FG_WS_TEXT_MAX + 32);
    char *t = malloc(FG_WS_TEXT_MAX + 1);
    memset(t, 'a', FG_WS_TEXT_MAX + 1);
    size_t n = masked_frame(f, 0x81, t, FG_WS_TEXT_MAX + 1);
    expect_refused(f, n, 1009);
    n = masked_frame(f, 0x81, "caf\xc3\xa9", 5); /* control messages are ASCII */
    expect_refused(f, n, 1007);
    free(f);
    free(t);
}

static void test_64bit_length_with_high_bit_refused(void **state)
{
    (void)state;
    const uint8_t f[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    expect_refused(f, sizeof(f), 1002);
}

/* fg_conn on a loop: a ping from the peer is answered without the owner writing anything. */
static void nop_read(fg_conn_t *c, void *arg)
{
    (void)c;
    (void)arg;
}
static void nop_event(fg_conn_t *c, void *arg, int what)
{
    (void)c;
    (void)arg;
    (void)what;
}
static const fg_conn_cbs_t conn_cbs = {.on_read = nop_read, .on_event = nop_event};

static void test_conn_answers_ping(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    struct event_base *base = event_base_new();
    fg_conn_t *c = fg_conn_new(base, fds[0], &conn_cbs, NULL);
    assert_non_null(c);
    seen_t s = {0};
    assert_int_equal(fg_conn_push_ws(c, FG_WS_SERVER, &cbs, &s), 0);
    fg_conn_read(c, 1, 0);
    uint8_t f[32];
    size_t n = masked_frame(f, 0x89, "hb", 2);
    assert_int_equal(write(fds[1], f, n), (ssize_t)n);
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    uint8_t back[8];
    assert_int_equal(read(fds[1], back, sizeof(back)), 4);
    assert_int_equal(back[0], 0x8a);
    assert_int_equal(back[1], 2);
    assert_memory_equal(back + 2, "hb", 2);
    /* a text message from the owner goes out on the loop */
    assert_int_equal(fg_conn_ws_text(c, "FGT/1 RECONNECT", 15), 0);
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    uint8_t t[32];
    assert_int_equal(read(fds[1], t, sizeof(t)), 17);
    assert_int_equal(t[0], 0x81);
    assert_memory_equal(t + 2, "FGT/1 RECONNECT", 15);
    fg_conn_free(c);
    close(fds[1]);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_both_ways),
        cmocka_unit_test(test_received_counts_every_frame),
        cmocka_unit_test(test_control_messages),
        cmocka_unit_test(test_close_code_echoed),
        cmocka_unit_test(test_fragments_and_split_reads),
        cmocka_unit_test(test_bytes_given_at_push),
        cmocka_unit_test(test_unmask_across_chains_and_reads),
        cmocka_unit_test(test_client_masks_across_chains),
        cmocka_unit_test(test_rfc6455_5_1_unmasked_client_frame_refused),
        cmocka_unit_test(test_rfc6455_5_2_reserved_bits_refused),
        cmocka_unit_test(test_rfc6455_5_5_control_frames),
        cmocka_unit_test(test_rfc6455_5_4_fragmentation_order),
        cmocka_unit_test(test_text_limits),
        cmocka_unit_test(test_64bit_length_with_high_bit_refused),
        cmocka_unit_test(test_conn_answers_ping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
