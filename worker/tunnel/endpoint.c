#include "worker/tunnel/endpoint.h"

#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/tunnel_proto.h"
#include "shm/tunnels.h"
#include "worker/core/clock.h"
#include "worker/tunnel/session.h"

#define WS_KEY_LEN 24 /* base64 of 16 bytes (RFC 6455 4.1) */

int fg_tunnel_endpoint_match(const fg_config_t *cfg, const fg_server_t *srv, fg_str_t path)
{
    if (!srv->accept_tunnels || cfg->tunnels.path == NULL)
        return 0;
    return fg_str_eq(path, fg_str(cfg->tunnels.path));
}

/* Whether the comma-separated list v names token (case-insensitively when icase). */
static int lists(fg_str_t v, fg_str_t token, int icase)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t' || v.base[i] == ','))
            i++;
        size_t b = i;
        while (i < v.len && v.base[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (v.base[e - 1] == ' ' || v.base[e - 1] == '\t'))
            e--;
        fg_str_t t = {v.base + b, e - b};
        if (icase ? fg_str_ieq(t, token) : fg_str_eq(t, token))
            return 1;
    }
    return 0;
}

static fg_str_t field(const fg_request_t *req, const char *name)
{
    const fg_http_header_t *h = fg_request_header(req, fg_str(name));
    return h ? h->value : FG_STR_NULL;
}

/* A 16-byte nonce in base64: 22 characters of the alphabet, then "==" (RFC 6455 4.1). */
static int key_ok(fg_str_t k)
{
    unsigned char raw[20];
    if (k.len != WS_KEY_LEN || k.base[22] != '=' || k.base[23] != '=')
        return 0;
    return EVP_DecodeBlock(raw, (const unsigned char *)k.base, WS_KEY_LEN) == 18;
}

static void answer(fg_request_t *req, int status, const char *name, const char *value,
                   const char *msg)
{
    fg_headers_t h;
    fg_headers_init(&h, req->pool, 1);
    if (name)
        fg_headers_add(&h, fg_str(name), fg_str(value));
    req->error = fg_request_error_kind(status);
    fg_request_respond(req, status, &h, msg, strlen(msg));
}

int fg_tunnel_endpoint_check(fg_request_t *req)
{
    const fg_tunnels_config_t *tc = &req->worker->cfg->tunnels;
    /* RFC 6455 4.1: a GET with Upgrade: websocket and Connection: Upgrade. Anything else on
     * this path is not for a route either (RFC 9110 15.5.22: 426 names the protocol). */
    if (!fg_str_eq(req->method, FG_STR_LIT("GET")) || req->version != 11 ||
        !lists(req->upgrade, FG_STR_LIT("websocket"), 1)) {
        answer(req, 426, "Upgrade", "websocket", "tunnel agents connect by WebSocket\n");
        return -1;
    }
    if (!fg_str_eq(field(req, "Sec-WebSocket-Version"), FG_STR_LIT("13"))) {
        /* RFC 6455 4.4: name the version we speak */
        answer(req, 426, "Sec-WebSocket-Version", "13", "WebSocket version 13 required\n");
        return -1;
    }
    if (req->has_body || !key_ok(field(req, "Sec-WebSocket-Key")) ||
        !lists(field(req, "Sec-WebSocket-Protocol"), FG_STR_LIT(FG_TUNNEL_SUBPROTOCOL), 0)) {
        answer(req, 400, NULL, NULL, "not a tunnel agent's upgrade\n");
        return -1;
    }
    /* Refused before any challenge: a guesser learns nothing more this minute. */
    if (fg_tunnels_auth_blocked(fg_tunnels_zone(), (const struct sockaddr *)&req->client_addr,
                                tc->auth_failures_max, fg_clock_now_ms())) {
        fg_log_warn("tunnel: upgrade from %s refused: too many failed authentications",
                    req->client_ip);
        answer(req, 429, "Retry-After", "60", "too many failed tunnel authentications\n");
        return -1;
    }
    return 0;
}

/* base64(SHA-1(key + GUID)) (RFC 6455 4.2.2, item 5.4). Returns its length or -1. */
static int accept_value(fg_str_t key, char out[32])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[WS_KEY_LEN + sizeof(guid)];
    unsigned char md[20];
    memcpy(in, key.base, WS_KEY_LEN);
    memcpy(in + WS_KEY_LEN, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, WS_KEY_LEN + sizeof(guid) - 1, md, NULL, EVP_sha1(), NULL) != 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, sizeof(md));
}

/* The key an unknown id's proof is checked with. Its result is thrown away, so it needs no
 * secrecy; it has the length of the documented secret (base64 of 32 bytes), and HMAC pads any
 * key up to 64 bytes to one block, so the work is that of a configured id's check. */
static const uint8_t dummy_secret[44];

int fg_tunnel_endpoint_verify(const fg_config_t *cfg, const uint8_t nonce[FG_TUNNEL_NONCE_LEN],
                              const fg_tunnel_msg_t *m, int *agent)
{
    int a = fg_config_tunnel_agent(cfg, m->id, strlen(m->id));
    *agent = a;
    const fg_tunnel_agent_t *ag = a >= 0 ? &cfg->tunnels.agents[a] : NULL;
    /* An unknown id costs the same HMAC and comparison as a known one, so neither the close
     * nor the time it takes tells a guesser which ids exist. */
    int ok = fg_tunnel_auth_ok(ag ? ag->secret : dummy_secret,
                               ag ? ag->secret_len : sizeof(dummy_secret), nonce, m);
    if (ag == NULL)
        return FG_TUNNEL_UNKNOWN_AGENT;
    return ok ? 0 : FG_TUNNEL_WRONG_PROOF;
}

/* AUTH: the id must be configured and the proof right (compared in constant time). */
static void on_handshake(fg_tsession_t *ts, const char *msg, size_t len)
{
    fg_tunnel_msg_t m;
    const char *peer = fg_tunnel_session_peer_text(ts);
    if (fg_tunnel_msg_parse(msg, len, &m) != 0 || m.kind != FG_TUNNEL_MSG_AUTH) {
        fg_log_warn("tunnel: authentication failed from %s: malformed handshake message", peer);
        fg_tunnels_auth_failed(fg_tunnels_zone(), NULL, fg_tunnel_session_peer(ts),
                               fg_clock_now_ms());
        fg_tunnel_session_refuse(ts);
        return;
    }
    const fg_config_t *cfg = fg_tunnel_session_config(ts);
    /* Handshakes opened before the address used its budget were let through the upgrade's
     * check: past the budget no proof is checked on them either, so a guesser cannot test
     * more answers a minute by opening many handshakes first. */
    if (fg_tunnels_auth_blocked(fg_tunnels_zone(), fg_tunnel_session_peer(ts),
                                cfg->tunnels.auth_failures_max, fg_clock_now_ms())) {
        fg_log_warn("tunnel: authentication from %s refused: too many failed authentications",
                    peer);
        fg_tunnel_session_refuse(ts);
        return;
    }
    int a;
    int rc = fg_tunnel_endpoint_verify(cfg, fg_tunnel_session_nonce(ts), &m, &a);
    if (rc != 0) {
        const fg_tunnel_agent_t *ag = a >= 0 ? &cfg->tunnels.agents[a] : NULL;
        fg_log_warn("tunnel: authentication failed from %s for agent \"%s\": %s", peer, m.id,
                    ag ? "wrong proof" : "unknown agent");
        fg_tunnels_auth_failed(fg_tunnels_zone(), ag ? ag->state : NULL, fg_tunnel_session_peer(ts),
                               fg_clock_now_ms());
        fg_tunnel_session_refuse(ts);
        return;
    }
    fg_tunnel_session_authenticated(ts, a, &m);
}

int fg_tunnel_endpoint_accept(fg_request_t *req, fg_conn_t *c)
{
    char acc[32];
    int n = accept_value(field(req, "Sec-WebSocket-Key"), acc);
    if (n < 0) {
        fg_conn_free(c);
        return -1;
    }
    evbuffer_add_printf(fg_conn_output(c),
                        "HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %.*s\r\n"
                        "Sec-WebSocket-Protocol: " FG_TUNNEL_SUBPROTOCOL "\r\n\r\n",
                        n, acc);
    /* The 101 leaves as it is, before the WebSocket layer frames what follows: a kernel that
     * does not take 200 bytes at once means a connection not worth keeping. */
    if (fg_conn_flush(c) != 0 || fg_conn_pending(c) != 0) {
        fg_conn_free(c);
        return -1;
    }
    req->status = 101;
    /* The connection's client as the front end knows it: the socket's peer, or the client a
     * PROXY protocol header named (servers' proxyProtocol), which the upgrade's check above
     * judged too. The socket's own peer would be the balancer's: every agent behind it would
     * share one budget of failed authentications, and its log lines. */
    struct sockaddr_storage peer = req->client_addr;
    socklen_t len = peer.ss_family == AF_INET    ? (socklen_t)sizeof(struct sockaddr_in)
                    : peer.ss_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
                                                 : (socklen_t)sizeof(peer);
    return fg_tunnel_session_start(req->worker, c, (const struct sockaddr *)&peer, len,
                                   on_handshake);
}
