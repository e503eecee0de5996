/* See agent/tunnel.h. */
#include "agent/tunnel.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "agent/dial.h"
#include "agent/resolve.h"
#include "common/log.h"
#include "common/tunnel_proto.h"
#include "worker/core/clock.h"
#include "worker/core/conn.h"
#include "worker/core/transport_ws.h"
#include "worker/http/http2.h"

#define TICK_MS 1000

enum {
    P_RESOLVE,   /* the gateway's name being resolved (agent/resolve.h) */
    P_CONNECT,   /* TCP (and TLS) under way */
    P_UPGRADE,   /* request sent, waiting for the 101 */
    P_CHALLENGE, /* WebSocket up, waiting for CHALLENGE */
    P_AUTH,      /* AUTH sent, waiting for OK */
    P_OK,        /* authenticated: the HTTP/2 session starts from the loop */
    P_UP,        /* the HTTP/2 session owns the connection */
    P_DEAD,      /* gone follows from the loop */
};

enum { DUE_ADOPT = 1, DUE_RECONNECT = 2, DUE_FAIL = 4, DUE_GONE = 8 };

struct fg_tunnel_s {
    const fg_agent_config_t *cfg;
    SSL_CTX *ctx;
    fg_agent_rt_t *rt;
    const fg_tunnel_cbs_t *cbs;
    void *arg;
    struct evdns_base *dns;
    fg_resolve_t *lookup; /* pending in P_RESOLVE */
    fg_conn_t *c;         /* ours before P_UP; the session's after (valid while sess) */
    fg_session_t *sess;   /* the HTTP/2 session serving on c */
    struct event *tick;   /* TICK_MS: the dial deadline, heartbeats */
    struct event *due_ev; /* runs the due bits from the loop */
    unsigned due;
    int phase;
    unsigned adopting : 1; /* inside fg_agent_rt_serve: the next session is ours */
    unsigned auth_failed : 1;
    unsigned duplicate : 1; /* the gateway answered DUPLICATE */
    unsigned extra : 1;     /* AUTH role "extra" (else "first") */
    unsigned workers;       /* from OK; 0: not said */
    uint8_t instance[FG_TUNNEL_INSTANCE_LEN];
    unsigned going_away : 1; /* the agent stops: our close frame says 1001 */
    uint64_t started_ms, up_ms, heard_ms, pinged_ms;
    uint64_t received; /* the WebSocket layer's byte count at the last heartbeat tick */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    char key[FG_DIAL_KEY_LEN + 1];
    char why[300];
};

static void on_read(fg_conn_t *c, void *arg);
static void on_event(fg_conn_t *c, void *arg, int what);
static const fg_conn_cbs_t dial_cbs = {on_read, NULL, on_event};
static void on_text(void *arg, const char *msg, size_t len);
static void on_pong(void *arg, const uint8_t *payload, size_t len);
static const fg_ws_cbs_t ws_cbs = {on_text, on_pong};

static void later(fg_tunnel_t *t, unsigned what)
{
    t->due |= what;
    event_active(t->due_ev, EV_WRITE, 1);
}

/* Record why the tunnel ends (the first reason wins) and end it from the loop. */
static void fail(fg_tunnel_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(fg_tunnel_t *t, const char *fmt, ...)
{
    if (t->why[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->why, sizeof(t->why), fmt, ap);
        va_end(ap);
    }
    later(t, DUE_FAIL);
}

static int start_connect(fg_tunnel_t *t)
{
    t->phase = P_CONNECT;
    int fd = socket(t->peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        fail(t, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    t->c = fg_conn_new(event_get_base(t->tick), fd, &dial_cbs, t);
    if (t->c == NULL) {
        close(fd);
        fail(t, "out of memory");
        return -1;
    }
    int rc =
        fg_conn_connect(t->c, (struct sockaddr *)&t->peer, t->peerlen, t->cfg->connect_timeout_ms);
    if (rc < 0) {
        fail(t, "connect: %s", strerror(-rc));
        return -1;
    }
    if (t->ctx != NULL) {
        SSL *ssl = fg_dial_tls_new(t->ctx, t->cfg);
        if (ssl == NULL) {
            fail(t, "out of memory for TLS");
            return -1;
        }
        fg_conn_start_tls_client(t->c, ssl, t->cfg->connect_timeout_ms);
    }
    return 0;
}

static void on_resolved(void *arg, const struct sockaddr *sa, socklen_t len, const char *err)
{
    fg_tunnel_t *t = arg;
    t->lookup = NULL;
    if (sa == NULL) {
        fail(t, "%s", err);
        return;
    }
    if (len > sizeof(t->peer))
        len = sizeof(t->peer);
    memcpy(&t->peer, sa, len);
    t->peerlen = len;
    start_connect(t);
}

/* The gateway's address, without blocking the loop: on_resolved goes on (perhaps before this
 * returns); the tick ends a lookup that takes longer than connectTimeoutMs. */
static void start_resolve(fg_tunnel_t *t)
{
    t->phase = P_RESOLVE;
    t->lookup = fg_resolve_start(t->dns, t->cfg->host, t->cfg->port, on_resolved, t);
}

static void send_upgrade(fg_tunnel_t *t)
{
    char req[1024];
    int n = fg_dial_key(t->key) == 0 ? fg_dial_request(t->cfg, t->key, req, sizeof(req)) : -1;
    if (n < 0 || evbuffer_add(fg_conn_output(t->c), req, (size_t)n) != 0 ||
        fg_conn_flush(t->c) != 0) {
        fail(t, "cannot send the upgrade request: %s", strerror(fg_conn_errno(t->c)));
        return;
    }
    t->phase = P_UPGRADE;
    fg_conn_read(t->c, 1, 0);
}

/* The gateway's 101, then the WebSocket layer; bytes after the head are frames. */
static void read_upgrade(fg_tunnel_t *t)
{
    struct evbuffer *in = fg_conn_input(t->c);
    size_t len = evbuffer_get_length(in);
    size_t look = len < FG_DIAL_HEAD_MAX ? len : FG_DIAL_HEAD_MAX;
    const char *head = (const char *)evbuffer_pullup(in, (ssize_t)look);
    char err[256];
    int n = fg_dial_response(head, look, t->key, err, sizeof(err));
    if (n == 0)
        return;
    if (n < 0) {
        fg_conn_read(t->c, 0, 0);
        fail(t, "%s", err);
        return;
    }
    evbuffer_drain(in, (size_t)n);
    t->phase = P_CHALLENGE;
    if (fg_conn_push_ws(t->c, FG_WS_CLIENT, &ws_cbs, t) != 0)
        fail(t, "out of memory for the WebSocket layer");
}

static void on_read(fg_conn_t *c, void *arg)
{
    fg_tunnel_t *t = arg;
    (void)c;
    if (t->phase == P_UPGRADE) {
        read_upgrade(t);
        return;
    }
    /* Binary bytes are HTTP/2, which the gateway starts only after OK: before it, a protocol
     * error; after it they wait in the input for the session (fg_http2_adopt reads them). */
    if (t->phase < P_OK && evbuffer_get_length(fg_conn_input(c)) > 0) {
        fg_conn_read(c, 0, 0);
        fail(t, "the gateway sent data before the handshake ended");
    }
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    fg_tunnel_t *t = arg;
    if (what == FG_CONN_CONNECTED) {
        send_upgrade(t);
        return;
    }
    fg_conn_read(c, 0, 0);
    uint16_t code = t->phase >= P_CHALLENGE ? fg_conn_ws_peer_close(c) : 0;
    if (what == FG_CONN_TLS_FAILED) {
        fail(t, "TLS with the gateway failed: %s", fg_conn_tls_error(c));
    } else if (code == 1008) {
        t->auth_failed = 1;
        fail(t, "the gateway refused the agent (close 1008): check the id and the secret");
    } else if (code != 0) {
        fail(t, "the gateway closed the connection (close %u) during the handshake",
             (unsigned)code);
    } else if (what == FG_CONN_EOF) {
        fail(t, "the gateway closed the connection during the %s",
             t->phase == P_UPGRADE ? "upgrade" : "handshake");
    } else if (what == FG_CONN_ERROR) {
        fail(t, "%s: %s", t->phase == P_CONNECT ? "connect" : "read", strerror(fg_conn_errno(c)));
    } else {
        fail(t, "timed out (connectTimeoutMs)");
    }
}

/* CHALLENGE: answer with AUTH. The proof leaves this function only on the wire. */
static void answer_challenge(fg_tunnel_t *t, const fg_tunnel_msg_t *m)
{
    fg_tunnel_msg_t auth = {.kind = FG_TUNNEL_MSG_AUTH,
                            .role = t->extra ? FG_TUNNEL_ROLE_EXTRA : FG_TUNNEL_ROLE_FIRST};
    char line[FG_TUNNEL_MSG_MAX];
    snprintf(auth.id, sizeof(auth.id), "%s", t->cfg->id);
    memcpy(auth.instance, t->instance, sizeof(auth.instance));
    int n = -1;
    if (fg_tunnel_auth_sign(t->cfg->secret, t->cfg->secret_len, m->nonce, &auth) == 0)
        n = fg_tunnel_msg_format(&auth, line, sizeof(line));
    if (n < 0 || fg_conn_ws_text(t->c, line, (size_t)n) != 0)
        fail(t, "cannot answer the challenge");
    else
        t->phase = P_AUTH;
    OPENSSL_cleanse(&auth, sizeof(auth));
    OPENSSL_cleanse(line, sizeof(line));
}

static void on_text(void *arg, const char *msg, size_t len)
{
    fg_tunnel_t *t = arg;
    fg_tunnel_msg_t m;
    t->heard_ms = fg_clock_now_ms();
    if (fg_tunnel_msg_parse(msg, len, &m) != 0) {
        fail(t, "malformed control message from the gateway");
        return;
    }
    if (t->phase == P_CHALLENGE && m.kind == FG_TUNNEL_MSG_CHALLENGE) {
        answer_challenge(t, &m);
    } else if (t->phase == P_AUTH && m.kind == FG_TUNNEL_MSG_OK) {
        t->phase = P_OK;
        t->workers = m.workers;
        fg_log_info("tunnel: authenticated to %s as \"%s\" (gateway heartbeat %us)",
                    t->cfg->gateway, t->cfg->id, m.heartbeat_s);
        later(t, DUE_ADOPT);
    } else if (t->phase == P_AUTH && m.kind == FG_TUNNEL_MSG_DUPLICATE) {
        t->duplicate = 1;
        fail(t, "this gateway worker holds one of the agent's connections (DUPLICATE)");
    } else if (t->phase >= P_OK && m.kind == FG_TUNNEL_MSG_RECONNECT) {
        later(t, DUE_RECONNECT);
    } else {
        fail(t, "unexpected control message from the gateway (kind %d)", (int)m.kind);
    }
}

static void on_pong(void *arg, const uint8_t *payload, size_t len)
{
    fg_tunnel_t *t = arg;
    (void)payload;
    (void)len;
    t->heard_ms = fg_clock_now_ms();
}

static void adopt(fg_tunnel_t *t)
{
    fg_conn_t *c = t->c;
    t->adopting = 1;
    int rc = fg_agent_rt_serve(t->rt, c, &t->peer);
    t->adopting = 0;
    if (rc != 0 || t->sess == NULL) {
        /* The conn went with the failed session. */
        if (t->sess == NULL)
            t->c = NULL;
        fail(t, "cannot start the HTTP/2 session");
        return;
    }
    t->phase = P_UP;
    t->up_ms = t->heard_ms = t->pinged_ms = fg_clock_now_ms();
    t->cbs->up(t->arg, t);
}

/* Before the connection goes (RFC 6455 5.5.1): the echo of the gateway's close frame, which
 * the WebSocket layer queued when it read it, or our own close frame. One try without
 * waiting: the gateway learns why the tunnel ends even when TCP closes right after. */
static void send_close(fg_tunnel_t *t)
{
    if (fg_conn_ws_peer_close(t->c) == 0)
        fg_conn_ws_close(t->c, t->going_away ? 1001 : 1000,
                         t->going_away ? "agent stopping" : NULL);
    fg_conn_flush(t->c);
}

/* End now: the session closes its connection (its end comes back through the session hook),
 * or the connection we hold is freed. */
static void close_now(fg_tunnel_t *t)
{
    if (t->lookup != NULL) {
        fg_resolve_cancel(t->lookup);
        t->lookup = NULL;
    }
    if (t->sess != NULL) {
        fg_session_t *s = t->sess;
        s->fe->close(s);
        return;
    }
    if (t->c != NULL) {
        if (t->phase >= P_CHALLENGE)
            send_close(t);
        fg_conn_free(t->c);
        t->c = NULL;
    }
    t->phase = P_DEAD;
    later(t, DUE_GONE);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    fg_tunnel_t *t = arg;
    (void)fd;
    (void)what;
    unsigned due = t->due;
    t->due = 0;
    if (due & DUE_FAIL) {
        if (t->phase != P_DEAD)
            close_now(t);
    } else if ((due & DUE_ADOPT) && t->phase == P_OK) {
        adopt(t);
    }
    if ((due & DUE_RECONNECT) && t->phase == P_UP)
        t->cbs->reconnect(t->arg, t);
    if ((due & DUE_GONE) && t->phase == P_DEAD) {
        uint64_t up = t->up_ms ? fg_clock_now_ms() - t->up_ms : 0;
        t->cbs->gone(t->arg, t, t->why[0] ? t->why : "closed", up, t->auth_failed);
        fg_tunnel_free(t);
    }
}

/* Heartbeats (RFC 6455 5.5.2): the ping carries the send time, 8 bytes of monotonic µs. */
static void heartbeat(fg_tunnel_t *t, uint64_t now)
{
    /* Any frame is a sign of life, not only the pong: behind a busy tunnel's data the pong
     * may come late while the gateway is plainly there. */
    uint64_t rx = fg_conn_ws_received(t->c);
    if (rx != t->received) {
        t->received = rx;
        t->heard_ms = now;
    }
    uint64_t silent = now - t->heard_ms;
    uint64_t limit = (uint64_t)(t->cfg->heartbeat_s + t->cfg->grace_s) * 1000;
    if (silent >= limit) {
        fail(t, "nothing heard from the gateway for %llu s (heartbeatSeconds + graceSeconds)",
             (unsigned long long)(silent / 1000));
        return;
    }
    /* Half a tick of slack: a tick that fires a little early still pings on time. */
    if (now + TICK_MS / 2 - t->pinged_ms < (uint64_t)t->cfg->heartbeat_s * 1000)
        return;
    uint64_t us = fg_clock_now_us();
    uint8_t p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(us >> (56 - 8 * i));
    t->pinged_ms = now;
    if (fg_conn_ws_ping(t->c, p, sizeof(p)) == -ENOBUFS)
        fail(t, "the gateway does not read (control frames pile up)");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    fg_tunnel_t *t = arg;
    (void)fd;
    (void)what;
    uint64_t now = fg_clock_now_ms();
    if (t->phase == P_RESOLVE && now - t->started_ms >= t->cfg->connect_timeout_ms)
        fail(t, "cannot resolve %s: no answer within connectTimeoutMs (%llu ms)", t->cfg->host,
             (unsigned long long)t->cfg->connect_timeout_ms);
    else if (t->phase < P_OK && now - t->started_ms >= t->cfg->connect_timeout_ms)
        fail(t, "timed out (connectTimeoutMs %llu)",
             (unsigned long long)t->cfg->connect_timeout_ms);
    else if (t->phase == P_UP)
        heartbeat(t, now);
}

fg_tunnel_t *fg_tunnel_open(struct event_base *base, struct evdns_base *dns,
                            const fg_agent_config_t *cfg, SSL_CTX *ctx, fg_agent_rt_t *rt,
                            const fg_tunnel_cbs_t *cbs, void *arg)
{
    fg_tunnel_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cfg = cfg;
    t->ctx = ctx;
    t->rt = rt;
    t->cbs = cbs;
    t->arg = arg;
    t->dns = dns;
    t->started_ms = fg_clock_now_ms();
    t->tick = event_new(base, -1, EV_PERSIST, on_tick, t);
    t->due_ev = event_new(base, -1, 0, on_due, t);
    struct timeval tv = {TICK_MS / 1000, 0};
    if (t->tick == NULL || t->due_ev == NULL || event_add(t->tick, &tv) != 0) {
        fg_tunnel_free(t);
        return NULL;
    }
    start_resolve(t);
    return t;
}

void fg_tunnel_retire(fg_tunnel_t *t)
{
    if (t->phase == P_UP && t->sess != NULL)
        t->sess->fe->retire(t->sess);
    else if (t->phase != P_DEAD)
        fail(t, "replaced by a newer tunnel");
}

void fg_tunnel_join(fg_tunnel_t *t, const uint8_t instance[FG_TUNNEL_INSTANCE_LEN], int extra)
{
    memcpy(t->instance, instance, FG_TUNNEL_INSTANCE_LEN);
    t->extra = extra != 0;
}

unsigned fg_tunnel_workers(const fg_tunnel_t *t)
{
    return t->workers;
}

int fg_tunnel_duplicate(const fg_tunnel_t *t)
{
    return t->duplicate;
}

void fg_tunnel_drain(fg_tunnel_t *t)
{
    t->going_away = 1;
    if (t->phase == P_UP && t->sess != NULL)
        t->sess->fe->retire(t->sess);
    else if (t->phase != P_DEAD)
        fail(t, "the agent is stopping");
}

int fg_tunnel_is_up(const fg_tunnel_t *t)
{
    return t->phase == P_UP;
}

fg_agent_rt_t *fg_tunnel_rt(const fg_tunnel_t *t)
{
    return t->rt;
}

int fg_tunnel_session(fg_tunnel_t *t, fg_session_t *s, int added)
{
    if (added) {
        if (!t->adopting || t->sess != NULL)
            return 0;
        t->sess = s;
        return 1;
    }
    if (s != t->sess)
        return 0;
    /* The session frees the connection once this returns: its close code is still there. */
    uint16_t code = t->c != NULL ? fg_conn_ws_peer_close(t->c) : 0;
    if (t->c != NULL)
        send_close(t);
    t->sess = NULL;
    t->c = NULL;
    if (t->phase == P_UP || t->phase == P_OK) {
        if (t->why[0] == '\0' && code != 0)
            snprintf(t->why, sizeof(t->why), "the tunnel closed (WebSocket close %u)",
                     (unsigned)code);
        else if (t->why[0] == '\0')
            snprintf(t->why, sizeof(t->why), "the tunnel's HTTP/2 session ended");
        t->phase = P_DEAD;
        later(t, DUE_GONE);
    }
    return 1;
}

void fg_tunnel_free(fg_tunnel_t *t)
{
    if (t == NULL)
        return;
    if (t->lookup != NULL)
        fg_resolve_cancel(t->lookup);
    if (t->sess == NULL && t->c != NULL)
        fg_conn_free(t->c);
    if (t->tick)
        event_free(t->tick);
    if (t->due_ev)
        event_free(t->due_ev);
    free(t);
}
