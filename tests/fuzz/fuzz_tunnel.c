/* libFuzzer target: what a tunnel peer sends before and around HTTP/2 — the WebSocket frames
 * (worker/core/transport_ws.c) and the handshake messages inside them (common/tunnel_proto.h).
 * The first byte picks the role (even: the gateway's server side, odd: the agent's client
 * side); the rest arrives as received bytes in pieces of 1 to 64 bytes whose sizes come from
 * the input. Checked: payload bytes only ever grow the input by what recv reports, a text
 * message never exceeds FG_WS_TEXT_MAX and parses or is refused without reading past it, a
 * parsed message is well-formed (a valid id, role and worker count) and formats back to one
 * that parses the same, and once recv reports the end or an error it stays so. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/tunnel_proto.h"
#include "worker/core/transport.h"
#include "worker/core/transport_ws.h"

/* A message that parses is well-formed: its id valid, its role and worker count in range, and
 * formatting it gives a message that parses to the same. */
static void check_msg(const char *msg, size_t len)
{
    fg_tunnel_msg_t m, again;
    char buf[FG_TUNNEL_MSG_MAX];
    if (fg_tunnel_msg_parse(msg, len, &m) != 0)
        return;
    if (m.kind == FG_TUNNEL_MSG_AUTH &&
        (!fg_tunnel_id_valid(m.id, strlen(m.id)) || m.role > FG_TUNNEL_ROLE_EXTRA))
        abort();
    if (m.kind == FG_TUNNEL_MSG_OK && m.workers > FG_TUNNEL_WORKERS_MAX)
        abort();
    int n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    if (n < 0 || fg_tunnel_msg_parse(buf, (size_t)n, &again) != 0 || again.kind != m.kind ||
        again.role != m.role || again.workers != m.workers ||
        memcmp(again.instance, m.instance, sizeof(m.instance)) != 0)
        abort();
}

static void on_text(void *arg, const char *msg, size_t len)
{
    (void)arg;
    if (len > FG_WS_TEXT_MAX)
        abort();
    check_msg(msg, len);
}

static void on_pong(void *arg, const uint8_t *p, size_t len)
{
    (void)arg;
    (void)p;
    if (len > 125)
        abort();
}

static const fg_ws_cbs_t cbs = {.on_text = on_text, .on_pong = on_pong};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* the handshake message parser on the raw input as well */
    check_msg((const char *)data, size);

    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0)
        abort();
    fg_transport_t t;
    fg_transport_tcp_init(&t, fds[0]);
    if (fg_transport_ws_push(&t, data[0] & 1 ? FG_WS_CLIENT : FG_WS_SERVER, &cbs, NULL, NULL))
        abort();
    struct evbuffer *in = evbuffer_new();
    size_t off = 1, total = 0;
    int ended = 0;
    while (off < size && !ended) {
        size_t k = 1 + data[off] % 64;
        off++;
        if (k > size - off)
            k = size - off;
        if (k && write(fds[1], data + off, k) != (ssize_t)k)
            abort();
        off += k;
        for (;;) {
            ssize_t r = t.ops->recv(&t, in, 4096);
            if (r > 0) {
                if (ended)
                    abort(); /* bytes after the end */
                total += (size_t)r;
                if (evbuffer_get_length(in) != total)
                    abort();
                continue;
            }
            if (r == 0 || r == -1)
                ended = 1;
            break;
        }
        /* drain what the layer answered (pongs, closes) so the socket never fills */
        char sink[4096];
        while (read(fds[1], sink, sizeof(sink)) > 0)
            ;
        struct evbuffer *none = evbuffer_new();
        (void)t.ops->send_chain(&t, none);
        evbuffer_free(none);
    }
    t.ops->close(&t);
    evbuffer_free(in);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
