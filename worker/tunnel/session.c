#include "worker/tunnel/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "shm/metrics.h"
#include "shm/arena.h"
#include "shm/tunnels.h"
#include "worker/core/clock.h"
#include "worker/core/transport_ws.h"
#include "worker/tunnel/hop.h"

#define SLOT 2               /* fg_worker_t.frontend_state */
#define OUT_LOW (64 * 1024)  /* on_drain once the output fell to this */
#define CLOSE_LINGER_MS 1000 /* after our close frame: time for it to leave */
#define WS_GOING_AWAY 1001   /* RFC 6455 7.4.1 */
#define WS_POLICY 1008

/* Handshakes pending in one worker, at most: past it the oldest is closed. An agent's takes
 * one round trip, so the oldest are the slow (or hostile) ones, and a flood of connections
 * that never answer cannot keep agents out. */
#define HANDSHAKES_MAX FG_TUNNEL_AGENTS_MAX

enum { S_HANDSHAKE = 0, S_LIVE, S_CLOSING };

struct fg_tsession_s {
    fg_session_t base; /* first: the worker's list of sessions */
    fg_worker_t *w;
    fg_conn_t *c;
    int state;
    int agent; /* index in cfg->tunnels.agents once authenticated, else -1 */
    fg_tunnel_rec_t *rec;
    int index; /* its slot in rec->conns */
    uint64_t serial;
    fg_h2client_t *h2;
    struct event *tick;                  /* handshake timeout, then heartbeats */
    struct event *later;                 /* deferred close */
    fg_tunnel_handshake_fn on_handshake; /* control messages before OK */
    uint8_t nonce[FG_TUNNEL_NONCE_LEN];
    struct sockaddr_storage peer;
    char peer_text[64];
    uint64_t heard_ms;        /* monotonic: the last frame from the agent */
    uint64_t pinged_ms;       /* monotonic: our last ping */
    unsigned streams;         /* as last published */
    uint64_t in_pub, out_pub; /* bytes already added to the registry */
    const char *why;          /* the reason of a scheduled close, for the log */
    unsigned retiring : 1;    /* RECONNECT sent */
    unsigned counted : 1;     /* the tunnel-agents gauge counts it */
    unsigned pending : 1;     /* in the worker's list of pending handshakes */
    unsigned chatty : 1;      /* a control message after OK was logged */
    unsigned goaway : 1;      /* the agent sent GOAWAY: it takes no new stream */
    unsigned going : 1;       /* ... and that took the agent offline */
    struct fg_tsession_s *hs_prev, *hs_next;
};

/* Worker-wide: the newest authenticated session of each agent in this worker. */
typedef struct {
    fg_tsession_t *by_agent[FG_TUNNEL_AGENTS_MAX];
    fg_tsession_t *hs_first, *hs_last; /* pending handshakes, oldest first */
    unsigned hs_count;
} tstate_t;

static const fg_ws_cbs_t ws_cbs;
static const fg_h2client_owner_t h2_owner;
static void fe_retire(fg_session_t *b);

static tstate_t *tstate(fg_worker_t *w, int make)
{
    if (w->frontend_state[SLOT] == NULL && make)
        w->frontend_state[SLOT] = calloc(1, sizeof(tstate_t));
    return w->frontend_state[SLOT];
}

static const fg_tunnels_config_t *tcfg(const fg_tsession_t *s)
{
    return &s->w->cfg->tunnels;
}

static const char *agent_id(const fg_tsession_t *s)
{
    return s->agent >= 0 ? tcfg(s)->agents[s->agent].id : "-";
}

/* ---- pending handshakes ---- */

static void close_later(fg_tsession_t *s, const char *why);

static void hs_done(fg_tsession_t *s)
{
    tstate_t *ts = tstate(s->w, 0);
    if (!s->pending || ts == NULL)
        return;
    s->pending = 0;
    *(s->hs_prev ? &s->hs_prev->hs_next : &ts->hs_first) = s->hs_next;
    *(s->hs_next ? &s->hs_next->hs_prev : &ts->hs_last) = s->hs_prev;
    s->hs_prev = s->hs_next = NULL;
    ts->hs_count--;
}

static void hs_add(fg_tsession_t *s)
{
    tstate_t *ts = tstate(s->w, 0);
    s->pending = 1;
    s->hs_prev = ts->hs_last;
    *(ts->hs_last ? &ts->hs_last->hs_next : &ts->hs_first) = s;
    ts->hs_last = s;
    if (++ts->hs_count > HANDSHAKES_MAX) {
        fg_tsession_t *old = ts->hs_first;
        fg_log_warn("tunnel: handshake from %s closed: more than %d handshakes pending in this "
                    "worker",
                    old->peer_text, HANDSHAKES_MAX);
        close_later(old, "too many pending handshakes");
    }
}

/* ---- closing ---- */

static void publish(fg_tsession_t *s);

/* s's slot in the registry while it is s's (no takeover freed it), else NULL. */
static fg_tunnel_conn_t *conn(const fg_tsession_t *s)
{
    if (s->rec == NULL || s->serial == 0 || !fg_tunnels_current(s->rec, s->index, s->serial))
        return NULL;
    return &s->rec->conns[s->index];
}

/* RFC 6455 5.5.1: a close frame from the agent is answered with one before the TCP
 * connection goes (the layer queued the echo while reading it), and ours, when we close
 * first, is on its way too. One try without waiting: what the kernel does not take now is
 * lost with the connection. */
static void flush_close(fg_conn_t *c)
{
    if (fg_conn_ws_peer_close(c) == 0)
        fg_conn_ws_close(c, WS_GOING_AWAY, NULL);
    fg_conn_flush(c);
}

static void destroy(fg_tsession_t *s)
{
    fg_worker_t *w = s->w;
    tstate_t *ts = tstate(w, 0);
    hs_done(s);
    if (s->h2) {
        publish(s);
        fg_http2_client_close(s->h2, "tunnel closed");
        s->h2 = NULL;
    }
    if (s->rec) {
        fg_tunnels_streams(s->rec, conn(s), -(int)s->streams);
        for (unsigned i = 0; i < s->streams; i++)
            fg_metrics_conn_close(FG_MG_TUNNEL_STREAMS);
        if (s->serial) {
            fg_tunnels_release(fg_tunnels_zone(), s->rec, s->index, s->serial);
            fg_tunnel_hop_linger(w);
        }
    }
    if (ts && s->agent >= 0 && ts->by_agent[s->agent] == s)
        ts->by_agent[s->agent] = NULL;
    if (s->counted)
        fg_metrics_conn_close(FG_MG_TUNNEL_AGENTS);
    if (s->agent >= 0) /* a refused handshake was logged as such */
        fg_log_info("tunnel agent %s: connection %llu from %s closed: %s", agent_id(s),
                    (unsigned long long)s->serial, s->peer_text, s->why ? s->why : "closed");
    event_free(s->tick);
    event_free(s->later);
    flush_close(s->c);
    fg_conn_free(s->c);
    /* A retiring worker leaves its loop once this was its last session. */
    fg_frontend_remove(w, &s->base);
    free(s);
}

/* Close s from a safe place (the next loop turn): callbacks of its connection, its WebSocket
 * layer and its HTTP/2 client call this, never destroy. */
static void close_later(fg_tsession_t *s, const char *why)
{
    if (s->why == NULL)
        s->why = why;
    if (s->state == S_CLOSING)
        return;
    hs_done(s);
    s->state = S_CLOSING;
    event_active(s->later, EV_TIMEOUT, 0);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    destroy(arg);
}

/* Whether the gateway stops: no next generation will take the agent over. */
static int stopping(const fg_tsession_t *s)
{
    return s->w->shm != NULL && fg_shm_stopping(s->w->shm);
}

/* Whether s serves no new stream: another instance of the agent took over, a connection of
 * the same instance replaced it in this worker, or its worker retires and the agent has a
 * connection elsewhere that does not, or the gateway stops. */
static int superseded(const fg_tsession_t *s)
{
    return conn(s) == NULL ||
           (s->retiring && (stopping(s) || fg_tunnels_has_other(s->rec, s->serial)));
}

/* A session that serves no new stream (superseded) closes once its last stream ended; when the
 * gateway stops, with a WebSocket close (RFC 6455 7.4.1, 1001 going away), on which the agent
 * reconnects with its backoff. */
static void maybe_done(fg_tsession_t *s)
{
    if (s->state != S_LIVE || s->streams != 0 || !superseded(s))
        return;
    int gone = s->retiring && stopping(s) && conn(s) != NULL;
    if (gone) {
        fg_conn_ws_close(s->c, WS_GOING_AWAY, "gateway stopping");
        fg_conn_flush(s->c);
    }
    close_later(s, s->going      ? "the agent went away (GOAWAY)"
                   : gone        ? "gateway stopping"
                   : s->retiring ? "moved to a new worker"
                                 : "taken over");
}

/* ---- heartbeats and figures ---- */

static void publish(fg_tsession_t *s)
{
    if (s->rec == NULL || s->h2 == NULL)
        return;
    uint64_t in, out;
    fg_http2_client_bytes(s->h2, &in, &out);
    fg_tunnels_bytes(s->rec, in - s->in_pub, out - s->out_pub);
    s->in_pub = in;
    s->out_pub = out;
}

static uint64_t tick_ms(const fg_tsession_t *s)
{
    const fg_tunnels_config_t *tc = tcfg(s);
    uint64_t t = tc->heartbeat_ms < tc->grace_ms ? tc->heartbeat_ms : tc->grace_ms;
    return t < 1000 ? t : 1000; /* silence is noticed within a second of its limit */
}

static void arm(fg_tsession_t *s, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(s->tick, &tv);
}

static void ping(fg_tsession_t *s, uint64_t now_ms)
{
    uint64_t us = fg_clock_now_us();
    uint8_t p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(us >> (56 - 8 * i));
    s->pinged_ms = now_ms;
    if (fg_conn_ws_ping(s->c, p, sizeof(p)) != 0)
        close_later(s, "the agent does not read");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    fg_tsession_t *s = arg;
    uint64_t now = fg_clock_now_ms();
    if (s->state == S_HANDSHAKE) {
        fg_log_warn("tunnel: handshake from %s timed out", s->peer_text);
        close_later(s, "handshake timed out");
        return;
    }
    if (s->state != S_LIVE)
        return;
    const fg_tunnels_config_t *tc = tcfg(s);
    if (now - s->heard_ms > tc->heartbeat_ms + tc->grace_ms) {
        fg_log_warn("tunnel agent %s: silent for %llu ms (heartbeat %llu ms + grace %llu ms): "
                    "closing connection %llu",
                    agent_id(s), (unsigned long long)(now - s->heard_ms),
                    (unsigned long long)tc->heartbeat_ms, (unsigned long long)tc->grace_ms,
                    (unsigned long long)s->serial);
        close_later(s, "heartbeat lost");
        return;
    }
    /* Half a tick of slack: a tick that fires a little early still pings on time, rather than
     * a whole tick later (every other interval with a one-second heartbeat). */
    if (now + tick_ms(s) / 2 - s->pinged_ms >= tc->heartbeat_ms)
        ping(s, now);
    if (s->h2)
        fg_http2_client_expire(s->h2, fg_clock_now_us());
    publish(s);
    maybe_done(s);
    if (s->state == S_LIVE)
        arm(s, tick_ms(s));
}

static void heard(fg_tsession_t *s)
{
    s->heard_ms = fg_clock_now_ms();
}

/* ---- the connection and its WebSocket layer ---- */

static void on_text(void *arg, const char *msg, size_t len)
{
    fg_tsession_t *s = arg;
    heard(s);
    if (s->state == S_HANDSHAKE) {
        s->on_handshake(s, msg, len);
        return;
    }
    /* After OK the agent has nothing to say on the control channel (tunnel_proto.h); said
     * once per connection, so that an agent cannot fill the log with it. */
    if (s->state == S_LIVE && !s->chatty) {
        s->chatty = 1;
        fg_log_info("tunnel agent %s: unexpected control message ignored (connection %llu; "
                    "further ones are not logged)",
                    agent_id(s), (unsigned long long)s->serial);
    }
}

static void on_pong(void *arg, const uint8_t *p, size_t len)
{
    fg_tsession_t *s = arg;
    heard(s);
    fg_tunnel_conn_t *c = s->rec != NULL ? conn(s) : NULL;
    if (c == NULL)
        return;
    /* Any pong is a heartbeat; one that echoes our 8-byte send time gives the round trip. */
    fg_tunnels_beat(c, fg_clock_wall_ms());
    if (len != 8)
        return;
    uint64_t sent = 0;
    for (int i = 0; i < 8; i++)
        sent = sent << 8 | p[i];
    uint64_t now = fg_clock_now_us();
    if (sent <= now)
        fg_tunnels_rtt(c, now - sent);
}

static const fg_ws_cbs_t ws_cbs = {on_text, on_pong};

/* The agent sent GOAWAY (RFC 9113 6.8; it stops, or a newer tunnel of its own took over):
 * this connection takes no new stream. Its slot leaves the registry at once, so new requests
 * go to the agent's other connections, or, when it was the last, the agent is offline and the
 * balancer sends them to other destinations (or answers 503 at once) rather than here; the
 * streams in flight finish, then the tunnel closes. */
static void agent_going(fg_tsession_t *s)
{
    s->goaway = 1;
    if (!superseded(s)) {
        s->going = 1;
        fg_tunnels_release(fg_tunnels_zone(), s->rec, s->index, s->serial);
        fg_tunnel_hop_linger(s->w);
        fg_log_info("tunnel agent %s: connection %llu from %s goes away (GOAWAY): %s, %u "
                    "stream(s) finishing",
                    agent_id(s), (unsigned long long)s->serial, s->peer_text,
                    fg_tunnels_online(s->rec) ? "no new stream on it" : "the agent is offline",
                    s->streams);
    }
    maybe_done(s);
}

static void on_read(fg_conn_t *c, void *arg)
{
    fg_tsession_t *s = arg;
    heard(s);
    struct evbuffer *in = fg_conn_input(c);
    if (s->state == S_LIVE && s->h2) {
        fg_http2_client_input(s->h2);
        if (!s->goaway && s->state == S_LIVE && s->h2 && fg_http2_client_goaway(s->h2))
            agent_going(s);
        return;
    }
    /* Binary bytes before OK break the protocol (tunnel_proto.h). */
    if (evbuffer_get_length(in) > 0) {
        evbuffer_drain(in, evbuffer_get_length(in));
        if (s->state == S_HANDSHAKE)
            fg_tunnel_session_refuse(s);
    }
}

static void on_drain(fg_conn_t *c, void *arg)
{
    fg_tsession_t *s = arg;
    if (s->state == S_LIVE && s->h2)
        fg_http2_client_drain(s->h2);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    fg_tsession_t *s = arg;
    uint16_t code = fg_conn_ws_peer_close(c);
    if (what == FG_CONN_EOF)
        close_later(s, code ? "the agent closed the tunnel" : "the agent's connection ended");
    else if (what == FG_CONN_TIMEOUT_WRITE)
        close_later(s, "the agent stopped reading");
    else
        close_later(s, "connection error");
}

static const fg_conn_cbs_t conn_cbs = {on_read, on_drain, on_event};

/* ---- the HTTP/2 client's owner ---- */

static void h2_dead(void *arg, const char *detail)
{
    fg_tsession_t *s = arg;
    close_later(s, detail ? detail : "HTTP/2 session ended");
}

static void h2_streams(void *arg, unsigned n)
{
    fg_tsession_t *s = arg;
    for (unsigned i = s->streams; i < n; i++)
        fg_metrics_conn_open(FG_MG_TUNNEL_STREAMS);
    for (unsigned i = n; i < s->streams; i++)
        fg_metrics_conn_close(FG_MG_TUNNEL_STREAMS);
    int ended = n < s->streams;
    if (s->rec)
        fg_tunnels_streams(s->rec, conn(s), (int)n - (int)s->streams);
    s->streams = n;
    if (ended)
        publish(s); /* a stream ended: its bytes count now, not at the next tick */
    if (n == 0)
        maybe_done(s);
}

static const fg_h2client_owner_t h2_owner = {h2_dead, h2_streams};

/* ---- the endpoint's side ---- */

static void peer_format(fg_tsession_t *s)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (s->peer.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&s->peer;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(s->peer_text, sizeof(s->peer_text), "%s:%u", ip, port);
    } else if (s->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&s->peer;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(s->peer_text, sizeof(s->peer_text), "[%s]:%u", ip, port);
    } else {
        snprintf(s->peer_text, sizeof(s->peer_text), "local");
    }
}

int fg_tunnel_session_start(fg_worker_t *w, fg_conn_t *c, const struct sockaddr *peer,
                            socklen_t peerlen, fg_tunnel_handshake_fn on_handshake)
{
    fg_tsession_t *s = calloc(1, sizeof(*s));
    if (s == NULL || tstate(w, 1) == NULL)
        goto fail;
    s->w = w;
    s->on_handshake = on_handshake;
    s->c = c;
    s->agent = -1;
    if (peerlen > sizeof(s->peer))
        peerlen = sizeof(s->peer);
    memcpy(&s->peer, peer, peerlen);
    peer_format(s);
    s->tick = evtimer_new(w->base, on_tick, s);
    s->later = evtimer_new(w->base, on_later, s);
    if (s->tick == NULL || s->later == NULL || RAND_bytes(s->nonce, sizeof(s->nonce)) != 1 ||
        fg_conn_push_ws(c, FG_WS_SERVER, &ws_cbs, s) != 0)
        goto fail;
    fg_tunnel_msg_t m = {.kind = FG_TUNNEL_MSG_CHALLENGE};
    memcpy(m.nonce, s->nonce, sizeof(m.nonce));
    char buf[FG_TUNNEL_MSG_MAX];
    int n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    if (n < 0 || fg_conn_ws_text(c, buf, (size_t)n) != 0)
        goto fail;
    fg_frontend_add(w, &s->base, &fg_tunnel_frontend);
    fg_conn_set_cbs(c, &conn_cbs, s);
    fg_conn_set_low_watermark(c, OUT_LOW);
    fg_conn_set_write_timeout(c, tcfg(s)->heartbeat_ms + tcfg(s)->grace_ms);
    fg_conn_read(c, 1, 0);
    heard(s);
    arm(s, tcfg(s)->handshake_timeout_ms); /* the whole handshake, up to OK */
    hs_add(s);
    fg_conn_flush(c);
    return 0;
fail:
    if (s) {
        if (s->tick)
            event_free(s->tick);
        if (s->later)
            event_free(s->later);
        free(s);
    }
    fg_conn_free(c);
    return -1;
}

const uint8_t *fg_tunnel_session_nonce(const fg_tsession_t *s)
{
    return s->nonce;
}

const struct sockaddr *fg_tunnel_session_peer(const fg_tsession_t *s)
{
    return (const struct sockaddr *)&s->peer;
}

const char *fg_tunnel_session_peer_text(const fg_tsession_t *s)
{
    return s->peer_text;
}

const fg_config_t *fg_tunnel_session_config(const fg_tsession_t *s)
{
    return s->w->cfg;
}

void fg_tunnel_session_refuse(fg_tsession_t *s)
{
    if (s->state != S_HANDSHAKE)
        return;
    fg_conn_ws_close(s->c, WS_POLICY, "authentication failed");
    fg_conn_flush(s->c);
    hs_done(s);
    s->state = S_CLOSING;
    s->why = "authentication failed";
    /* the close frame leaves first; the connection goes a moment later */
    struct timeval tv = {0, CLOSE_LINGER_MS * 1000 / 4};
    evtimer_del(s->tick);
    evtimer_add(s->later, &tv);
}

/* The older session of the same agent in this worker serves no new stream from now on. */
static void take_place(fg_tsession_t *s)
{
    tstate_t *ts = tstate(s->w, 0);
    fg_tsession_t *old = ts->by_agent[s->agent];
    ts->by_agent[s->agent] = s;
    if (old && old != s)
        maybe_done(old);
}

/* The agent has a connection of this instance in this worker and asked for another worker:
 * DUPLICATE, then a normal close (RFC 6455 7.4.1, 1000). Not a failure: it authenticated. */
static void decline(fg_tsession_t *s)
{
    static const char msg[] = FG_TUNNEL_VERSION " DUPLICATE";
    fg_log_info("tunnel agent %s: connection from %s declined: this worker holds one of the "
                "agent's connections (DUPLICATE)",
                agent_id(s), s->peer_text);
    fg_conn_ws_text(s->c, msg, sizeof(msg) - 1);
    fg_conn_ws_close(s->c, 1000, "duplicate");
    fg_conn_flush(s->c);
    hs_done(s);
    s->state = S_CLOSING;
    s->agent = -1; /* logged already */
    struct timeval tv = {0, CLOSE_LINGER_MS * 1000 / 4};
    evtimer_del(s->tick);
    evtimer_add(s->later, &tv);
}

static void log_claim(const fg_tsession_t *s, const fg_tunnels_claim_t *cl)
{
    const char *id = agent_id(s);
    unsigned long long serial = (unsigned long long)s->serial;
    if (cl->displaced)
        fg_log_notice("tunnel agent %s: connection %llu from %s takes over from connection %llu "
                      "(worker pid %d)%s",
                      id, serial, s->peer_text, (unsigned long long)cl->prev_serial, cl->prev_pid,
                      cl->displaced > 1 ? " and the agent instance's other connections" : "");
    else if (cl->replaced)
        fg_log_notice("tunnel agent %s: connection %llu from %s online, replaces connection %llu "
                      "of this worker",
                      id, serial, s->peer_text, (unsigned long long)cl->prev_serial);
    else
        fg_log_notice("tunnel agent %s: connection %llu from %s online", id, serial, s->peer_text);
}

void fg_tunnel_session_authenticated(fg_tsession_t *s, int agent, const fg_tunnel_msg_t *auth)
{
    const fg_tunnels_config_t *tc = tcfg(s);
    s->agent = agent;
    s->rec = tc->agents[agent].state;
    if (s->rec == NULL) {
        fg_tunnel_session_refuse(s); /* no registry: nothing could find this tunnel */
        return;
    }
    /* The registry first: once OK is on the wire the agent may close its previous tunnel,
     * whose release must then find this connection in place (no offline moment). */
    fg_tunnels_claim_t cl;
    int short_form = auth->role == FG_TUNNEL_ROLE_NONE;
    fg_tunnels_claim(fg_tunnels_zone(), s->rec, s->w->pid, s->w->slot, s->w->generation,
                     s->peer_text, short_form ? NULL : auth->instance,
                     auth->role == FG_TUNNEL_ROLE_EXTRA, &cl);
    if (cl.index < 0) {
        decline(s);
        return;
    }
    s->index = cl.index;
    s->serial = cl.serial;
    fg_tunnels_beat(&s->rec->conns[s->index], fg_clock_wall_ms());
    hs_done(s);
    s->state = S_LIVE;
    s->counted = 1;
    fg_metrics_conn_open(FG_MG_TUNNEL_AGENTS);
    log_claim(s, &cl);
    fg_tunnel_msg_t m = {.kind = FG_TUNNEL_MSG_OK,
                         .heartbeat_s = (unsigned)(tc->heartbeat_ms / 1000),
                         .workers = short_form ? 0 : (unsigned)s->w->cfg->workers};
    if (m.workers > FG_TUNNEL_WORKERS_MAX)
        m.workers = FG_TUNNEL_WORKERS_MAX;
    char buf[FG_TUNNEL_MSG_MAX];
    int n = fg_tunnel_msg_format(&m, buf, sizeof(buf));
    /* OK first: the agent starts its HTTP/2 server once it has it, and the client's preface
     * (queued and framed by the adoption) must follow it on the wire. */
    if (n < 0 || fg_conn_ws_text(s->c, buf, (size_t)n) != 0 ||
        (s->h2 = fg_http2_client_adopt(s->w, s->c, &h2_owner, s)) == NULL) {
        close_later(s, "out of memory");
        return;
    }
    take_place(s);
    evtimer_del(s->tick);
    ping(s, fg_clock_now_ms());
    arm(s, tick_ms(s));
    if (s->w->retiring) /* authenticated while this worker retires: move on at once */
        fe_retire(&s->base);
    fg_conn_flush(s->c);
}

fg_h2client_t *fg_tunnel_session_client(fg_worker_t *w, int agent)
{
    tstate_t *ts = tstate(w, 0);
    if (ts == NULL || agent < 0 || agent >= FG_TUNNEL_AGENTS_MAX) {
        errno = ENOTCONN;
        return NULL;
    }
    fg_tsession_t *s = ts->by_agent[agent];
    if (s == NULL || s->state != S_LIVE || s->h2 == NULL || conn(s) == NULL) {
        errno = ENOTCONN;
        return NULL;
    }
    if (!fg_http2_client_available(s->h2)) {
        /* full (every stream the agent allows is open), or ending */
        int full = !fg_http2_client_goaway(s->h2) &&
                   fg_http2_client_nstreams(s->h2) >= fg_http2_client_max_streams(s->h2);
        errno = full ? EAGAIN : ENOTCONN;
        return NULL;
    }
    return s->h2;
}

/* ---- front end ---- */

static void fe_retire(fg_session_t *b)
{
    fg_tsession_t *s = (fg_tsession_t *)b;
    if (s->state == S_HANDSHAKE) {
        close_later(s, "worker retiring");
        return;
    }
    if (s->state != S_LIVE || s->retiring)
        return;
    s->retiring = 1;
    fg_tunnel_conn_t *c = conn(s);
    if (c != NULL)
        atomic_store(&c->draining, 1);
    if (stopping(s)) {
        /* nowhere to reconnect to: the streams in flight end, then the tunnel closes */
        fg_log_info("tunnel agent %s: gateway stopping: the tunnel closes after its %u "
                    "stream(s) in flight",
                    agent_id(s), s->streams);
        maybe_done(s);
        return;
    }
    static const char msg[] = FG_TUNNEL_VERSION " RECONNECT";
    fg_conn_ws_text(s->c, msg, sizeof(msg) - 1);
    fg_conn_flush(s->c);
    fg_log_info("tunnel agent %s: asked to reconnect (worker retiring)", agent_id(s));
}
static void fe_close_idle(fg_session_t *b)
{
    fg_tsession_t *s = (fg_tsession_t *)b;
    maybe_done(s);
}

static void fe_close(fg_session_t *b)
{
    fg_tsession_t *s = (fg_tsession_t *)b;
    if (s->c && s->state == S_LIVE)
        fg_conn_ws_close(s->c, WS_GOING_AWAY, "gateway stopping");
    if (s->why == NULL)
        s->why = "worker exiting";
    s->state = s->state == S_HANDSHAKE ? S_HANDSHAKE : S_CLOSING;
    destroy(s);
}

static void fe_release(fg_worker_t *w)
{
    free(w->frontend_state[SLOT]);
    w->frontend_state[SLOT] = NULL;
}

const fg_frontend_t fg_tunnel_frontend = {
    .name = "tunnel",
    .slot = SLOT,
    .start = NULL,
    .retire = fe_retire,
    .close_idle = fe_close_idle,
    .close = fe_close,
    .release = fe_release,
};
