#include "worker/stream/tcp_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/iprange.h"
#include "common/log.h"
#include "common/proxy_protocol.h"
#include "shm/health.h"
#include "shm/metrics.h"
#include "shm/arena.h"
#include "worker/core/clock.h"
#include "worker/core/conn.h"
#include "worker/core/connlimit.h"
#include "worker/http/accesslog.h"
#include "worker/http/relay.h"
#include "worker/upstream/balancer.h"
#include "worker/upstream/client.h"
#include "worker/tunnel/hop.h"
#include "worker/upstream/upstream.h"

#define SLOT (FG_FRONTEND_SLOTS - 1) /* keeps no worker-wide state */

typedef struct {
    fg_session_t session; /* first: registered until the relay takes over */
    fg_worker_t *w;
    const fg_server_t *srv;
    const fg_cluster_t *cl;
    fg_conn_t *client;
    fg_exchange_t *x;
    int di; /* destination of the current attempt, -1 before */
    uint64_t tried[(FG_BALANCER_MAX_DESTS + 63) / 64]; /* destinations that failed it */
    fg_hdest_t *counted;                               /* in-flight share held (shm) */
    int record; /* this worker's index in the arena, -1 = none */
    unsigned attempts;
    uint64_t start_us;
    char peer[INET6_ADDRSTRLEN];
    uint16_t peer_port;
    char balancer[INET6_ADDRSTRLEN]; /* the PROXY protocol header's sender; "" = none */
    char why[256];                   /* the last attempt's failure, for the error log */
    fg_connlimit_hold_t *hold;       /* its places under the caps (worker/core/connlimit.h) */
    unsigned header_len; /* the PROXY protocol header it sends first (sendProxyProtocol) */
    unsigned registered : 1;
    unsigned starting : 1; /* in fg_relay_start: relay_done leaves t to relay() */
    unsigned finished : 1; /* relay_done ran during fg_relay_start */
} tcp_t;

static void start_attempt(tcp_t *t);
static void on_send_ready(void *arg);
static int on_head(void *arg, const fg_exchange_head_t *h);
static int on_body(void *arg, struct evbuffer *data);
static void on_end(void *arg);
static void on_error(void *arg, const fg_exchange_fail_t *f);
static const fg_exchange_cbs_t xcbs = {on_send_ready, NULL,   on_head, on_body,
                                       NULL,          on_end, on_error};

static void quiet_read(fg_conn_t *c, void *arg)
{
    fg_conn_read(c, 0, 0);
}
static void quiet_event(fg_conn_t *c, void *arg, int what)
{
    fg_conn_read(c, 0, 0);
}
/* The client waits, unread, while its destination is chosen and connected. */
static const fg_conn_cbs_t client_cbs = {quiet_read, NULL, quiet_event};

/* ---- caps: maxConnections, maxConnectionsPerClient ---- */

/* The caps, before any destination is tried: NULL when t may go on, else the termination, with
 * the reason in t->why. */
static const char *admit(tcp_t *t, const struct sockaddr_storage *peer)
{
    const fg_tcp_server_config_t *c = &t->srv->tcp;
    fg_connlimit_caps_t caps = {.server = (size_t)(t->srv - t->w->cfg->servers),
                                .id = t->srv->id,
                                .metrics = t->srv->metrics,
                                .max_connections = c->max_connections,
                                .max_per_client = c->max_per_client};
    fg_connlimit_t *cl = caps.max_connections || caps.max_per_client ? fg_connlimit_of(t->w) : NULL;
    fg_connlimit_verdict_t v = fg_connlimit_take(cl, &caps, peer, &t->hold);
    if (v == FG_CONNLIMIT_OK)
        return NULL;
    if (v == FG_CONNLIMIT_NOMEM) {
        snprintf(t->why, sizeof(t->why), "out of memory for the connection counts");
        return "gateway_error";
    }
    if (v == FG_CONNLIMIT_SERVER) {
        fg_metrics_add(t->srv->metrics, FG_MS_REFUSED_SERVER, 1);
        snprintf(t->why, sizeof(t->why), "maxConnections (%u) reached", c->max_connections);
        return "server_limit";
    }
    fg_metrics_add(t->srv->metrics, FG_MS_REFUSED_CLIENT, 1);
    /* an IPv6 client is its /64 (fg_tcpclients_key); IPv4 ones print without a colon */
    int v6 = strchr(t->peer, ':') != NULL && strchr(t->peer, '.') == NULL;
    snprintf(t->why, sizeof(t->why), "maxConnectionsPerClient (%u) reached: %s%s holds as many%s",
             c->max_per_client, t->peer, v6 ? " (its /64)" : "",
             v == FG_CONNLIMIT_CLIENT_HERE ? " in this worker" : "");
    return "client_limit";
}

/* ---- shared destination state ---- */

static void count_begin(tcp_t *t)
{
    fg_hdest_t *d = t->cl->destinations[t->di].state;
    if (d == NULL || t->counted == d)
        return;
    fg_health_begin(fg_health_zone(t->w->shm), d, t->record);
    t->counted = d;
}

static void count_end(tcp_t *t)
{
    if (t->counted == NULL)
        return;
    fg_health_end(fg_health_zone(t->w->shm), t->counted, t->record);
    t->counted = NULL;
}

/* Passive health of the current destination: a connection relayed (ok) or not (failed). */
static void report(tcp_t *t, int failed)
{
    const fg_destination_t *d = &t->cl->destinations[t->di];
    fg_metrics_attempt_done(d->metrics, failed, 0, 0);
    if (d->state &&
        fg_health_passive_report(d->state, &t->cl->health,
                                 failed ? FG_PASSIVE_FAILED : FG_PASSIVE_OK, fg_clock_now_ms()))
        fg_log_warn("cluster %s destination %s: unhealthy after transport failures (passive), "
                    "back in %llu ms",
                    t->cl->id, d->id, (unsigned long long)t->cl->health.reactivation_ms);
}

/* ---- the end ---- */

static void log_line(tcp_t *t, uint64_t from_client, uint64_t from_dest, const char *why,
                     const char *error)
{
    fg_accesslog_tcp_t e = {.server = t->srv->id,
                            .client_ip = t->peer,
                            .client_port = t->peer_port,
                            .balancer = t->balancer[0] ? t->balancer : NULL,
                            .cluster = t->cl->id,
                            .destination = t->di >= 0 ? t->cl->destinations[t->di].id : NULL,
                            .address = t->di >= 0 ? t->cl->destinations[t->di].address : NULL,
                            .attempts = t->attempts,
                            .duration_us = fg_clock_now_us() - t->start_us,
                            .bytes_in = from_client,
                            .bytes_out = from_dest,
                            .termination = why ? why : "closed",
                            .error = error};
    fg_accesslog_write_tcp(t->w->accesslog, &e);
}

static void unregister(tcp_t *t)
{
    if (!t->registered)
        return;
    t->registered = 0;
    fg_frontend_remove(t->w, &t->session);
}

static void t_free(tcp_t *t)
{
    fg_metrics_conn_close(FG_MG_TCP);
    fg_connlimit_give(t->hold);
    count_end(t);
    unregister(t);
    fg_conn_free(t->client);
    free(t);
}

/* No attempt left (or the worker closes): the client's connection is closed unanswered. */
static void give_up(tcp_t *t, const char *termination)
{
    if (t->x) {
        fg_exchange_t *x = t->x;
        t->x = NULL;
        fg_exchange_close(x);
    }
    if (t->why[0] == '\0')
        snprintf(t->why, sizeof(t->why),
                 "no destination of cluster %s is available (disabled, unhealthy, or its agent "
                 "offline)",
                 t->cl->id);
    fg_log_error("tcp server %s: connection from %s:%u closed: %s", t->srv->id, t->peer,
                 (unsigned)t->peer_port, t->why);
    log_line(t, 0, 0, termination, t->why);
    t_free(t);
}

static void relay_done(void *arg, uint64_t from_client, uint64_t from_dest, const char *termination)
{
    tcp_t *t = arg;
    /* the client did not send the header: it went ahead of the client's bytes */
    from_client -= from_client >= t->header_len ? t->header_len : from_client;
    log_line(t, from_client, from_dest, termination, NULL);
    t->client = NULL; /* the relay's, and closed by it */
    if (t->starting) {
        t->finished = 1; /* relay() frees it once fg_relay_start returns */
        return;
    }
    t_free(t);
}

/* ---- attempts ---- */

/* The destination failed this connection (what, err: for the log); the next one goes. */
static void attempt_failed(tcp_t *t, int transport, const char *what, int err)
{
    const fg_destination_t *d = &t->cl->destinations[t->di];
    snprintf(t->why, sizeof(t->why), "destination %s (%s): %s%s%s", d->id, d->address, what,
             err ? ": " : "", err ? strerror(err) : "");
    if (transport)
        report(t, 1);
    count_end(t);
    t->tried[t->di / 64] |= 1ULL << (t->di % 64);
    start_attempt(t);
}

static void on_error(void *arg, const fg_exchange_fail_t *f)
{
    tcp_t *t = arg;
    fg_exchange_t *x = t->x;
    t->x = NULL;
    if (x)
        fg_exchange_close(x);
    attempt_failed(t, 1, f->detail ? f->detail : "failed", f->err);
}

/* The switch went through: the destination's end and the client go to a relay, which is the
 * session from now on. Returns -1 (the exchange is gone either way). */
static int relay(tcp_t *t, int stream)
{
    fg_exchange_t *x = t->x;
    t->x = NULL;
    fg_relay_t *r = fg_relay_new(t->w, t->srv, t->srv->tcp.idle_timeout_ms, FG_RELAY_PLACE_NONE);
    int ok = 0;
    if (r != NULL) {
        if (stream) {
            ok = fg_exchange_relay_end(x, r) == 0;
        } else {
            fg_conn_t *c = fg_exchange_take_over(x, NULL);
            if (c != NULL)
                fg_relay_attach_conn(r, FG_RELAY_DEST, c);
            ok = c != NULL;
        }
    } else {
        fg_exchange_close(x);
    }
    if (!ok) {
        fg_relay_free(r);
        snprintf(t->why, sizeof(t->why), "out of memory for the relay");
        count_end(t);
        give_up(t, "gateway_error");
        return -1;
    }
    report(t, 0);
    fg_relay_attach_conn(r, FG_RELAY_CLIENT, t->client);
    fg_relay_set_done(r, relay_done, t);
    /* The relay is the session: it registers before this one goes, so that a retiring worker
     * (a proxyProtocol connection can start while it retires) never sees zero sessions and
     * leaves its loop in between. */
    t->starting = 1;
    fg_relay_start(r);
    t->starting = 0;
    if (t->finished)
        t_free(t);
    else
        unregister(t);
    return -1;
}

#define FULL_STREAMS "its agent's tunnel has no stream free (all the agent allows are open)"
#define FULL_TCP                                                                                   \
    "its agent's tunnel has no stream free for tcp (tcp relays hold their share; the rest is "     \
    "kept for HTTP)"

/* The cause a holder's FG_TUNNEL_FULL_FIELD names, or NULL when h has none. */
static const char *field(const fg_exchange_head_t *h, fg_str_t name)
{
    for (size_t i = 0; i < h->num_headers; i++)
        if (fg_str_ieq(h->headers[i].name, name))
            return fg_str_eq(h->headers[i].value, FG_STR_LIT("tcp")) ? FULL_TCP : FULL_STREAMS;
    return NULL;
}

static int on_head(void *arg, const fg_exchange_head_t *h)
{
    tcp_t *t = arg;
    const fg_exchange_info_t *info = fg_exchange_info(t->x);
    if (h->status == 101)
        return relay(t, 0);
    if (info->extended_connect && h->status >= 200 && h->status < 300)
        return relay(t, 1); /* RFC 9113 8.5: a 2xx makes the stream the connection */
    /* An answer, not a transport failure (an agent without that service: 502): the next
     * destination may have it. Over the hop, the holder's 503 may say its tunnel was full. */
    const char *full = h->status == 503 ? field(h, FG_STR_LIT(FG_TUNNEL_FULL_FIELD)) : NULL;
    fg_exchange_t *x = t->x;
    t->x = NULL;
    fg_exchange_close(x);
    char st[48];
    snprintf(st, sizeof(st), "answered %d instead of a switch", h->status);
    if (full != NULL)
        fg_metrics_attempt_done(t->cl->destinations[t->di].metrics, 1, 0, 0);
    attempt_failed(t, 0, full ? full : st, 0);
    return -1;
}

static int on_body(void *arg, struct evbuffer *data)
{
    if (data)
        evbuffer_drain(data, evbuffer_get_length(data));
    return 0;
}

static void on_end(void *arg)
{
    tcp_t *t = arg;
    fg_exchange_t *x = t->x;
    t->x = NULL;
    fg_exchange_close(x);
    attempt_failed(t, 0, "ended without a switch", 0);
}

static void on_send_ready(void *arg)
{
    tcp_t *t = arg;
    if (t->x)
        fg_exchange_send_body(t->x, NULL, 0);
}

/* The switch asked of the destination: over the hop an HTTP/1.1 Upgrade (RFC 9110 7.8), inside
 * a tunnel a CONNECT whose authority is the service (the HTTP/2 client builds it from Host). */
static fg_exchange_t *begin(tcp_t *t, const fg_destination_t *d)
{
    char host[300];
    if (d->tunnel)
        snprintf(host, sizeof(host), "%s", d->tunnel_service);
    else
        snprintf(host, sizeof(host), "%s:%u", d->host, (unsigned)d->port);
    fg_http_header_t v[] = {{FG_STR_LIT("Host"), fg_str(host)},
                            {FG_STR_LIT("Upgrade"), FG_STR_LIT(FG_TCP_PROTOCOL)},
                            {FG_STR_LIT("Connection"), FG_STR_LIT("upgrade")}};
    /* query "" rather than none: copies of the request memcpy it */
    fg_outreq_t out = {.method = FG_STR_LIT("GET"),
                       .path = FG_STR_LIT("/"),
                       .query = FG_STR_LIT(""),
                       .headers = {v, 3, 3, NULL}};
    fg_exchange_req_t rq = {
        .out = &out, .content_length = 0, .upgrade = 1, .protocol = FG_STR_LIT(FG_TCP_PROTOCOL)};
    fg_exchange_target_t tg = {.w = t->w,
                               .cl = t->cl,
                               .di = (size_t)t->di,
                               .fresh = 1,
                               .connect_timeout_ms = t->srv->tcp.connect_timeout_ms,
                               /* over the hop, the holder's answer to the switch: its wait is
                                * bounded too (after the switch the relay's idle timeout rules) */
                               .activity_timeout_ms = t->srv->tcp.connect_timeout_ms};
    return fg_client_start(&tg, &rq, &xcbs, t);
}

/* The next destination the balancer allows that has not failed this connection; when none
 * is left, the connection is closed. */
static void start_attempt(tcp_t *t)
{
    for (;;) {
        fg_pick_t pk = {fg_clock_now_ms(), t->tried, -1};
        t->di = fg_balancer_select(fg_upstream_balancer(t->w, t->cl), t->cl, &pk, NULL);
        if (t->di < 0) {
            give_up(t, "no_destination");
            return;
        }
        const fg_destination_t *d = &t->cl->destinations[t->di];
        t->attempts++;
        count_begin(t);
        fg_exchange_t *x = begin(t, d);
        if (x != NULL) {
            t->x = x;
            fg_exchange_send_body(x, NULL, 0); /* a stream's CONNECT leaves with the first send */
            return;
        }
        int e = errno;
        int full = d->tunnel && (e == EAGAIN || e == EBUSY);
        snprintf(t->why, sizeof(t->why), "destination %s (%s): %s", d->id, d->address,
                 e == ENOTCONN         ? "its agent is offline"
                 : full && e == EAGAIN ? FULL_STREAMS
                 : full                ? FULL_TCP
                                       : strerror(e));
        if (full) /* a failed attempt in the metrics, not against passive health: it is up */
            fg_metrics_attempt_done(d->metrics, 1, 0, 0);
        else if (e != ENOTCONN)
            report(t, 1);
        count_end(t);
        t->tried[t->di / 64] |= 1ULL << (t->di % 64);
    }
}

/* ---- the front end ---- */

static void peer_text(tcp_t *t, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, t->peer, sizeof(t->peer));
        t->peer_port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, t->peer, sizeof(t->peer));
        t->peer_port = ntohs(in6->sin6_port);
    }
}

/* sendProxyProtocol: the header naming the client (peer) and the address it connected to goes
 * ahead of the client's bytes, in the input the relay sends to the destination first. */
static int queue_proxy_header(tcp_t *t, const struct sockaddr_storage *peer)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    uint8_t buf[FG_PROXY_PROTOCOL_V1_MAX];
    if (fg_conn_local_addr(t->client, &local, &len) != 0)
        memset(&local, 0, sizeof(local)); /* not an IP socket: the header says so */
    int n =
        fg_proxy_protocol_write(t->srv->tcp.send_proxy_protocol, peer, &local, buf, sizeof(buf));
    if (n < 0 || evbuffer_add(fg_conn_input(t->client), buf, (size_t)n) != 0)
        return -1;
    t->header_len = (unsigned)n;
    return 0;
}

static int fe_start(fg_worker_t *w, const fg_server_t *srv, int fd,
                    const struct sockaddr_storage *peer, socklen_t len)
{
    /* A retiring worker still starts one: a server with proxyProtocol hands over a connection
     * accepted before the retirement once its header is read; its relay obeys the drain. */
    if (srv->tcp.cluster == NULL)
        return -1;
    tcp_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    t->client = fg_conn_new(w->base, fd, &client_cbs, t);
    if (t->client == NULL) {
        free(t);
        return -1;
    }
    t->w = w;
    t->srv = srv;
    t->cl = srv->tcp.cluster;
    t->di = -1;
    t->start_us = fg_clock_now_us();
    t->record = w->record && w->shm ? (int)(w->record - fg_shm_worker(w->shm, 0)) : -1;
    peer_text(t, peer);
    fg_ip_t via;
    if (w->accept_balancer != NULL &&
        fg_ip_from_sockaddr((const struct sockaddr *)w->accept_balancer, &via) == 0)
        fg_ip_format(&via, t->balancer, sizeof(t->balancer));
    fg_conn_read(t->client, 0, 0);
    fg_frontend_add(w, &t->session, &fg_tcp_proxy_frontend);
    t->registered = 1;
    fg_metrics_conn_open(FG_MG_TCP); /* closed by t_free, on every path */
    const char *refused = admit(t, peer);
    if (refused == NULL && srv->tcp.send_proxy_protocol && queue_proxy_header(t, peer) != 0) {
        snprintf(t->why, sizeof(t->why), "out of memory for its PROXY protocol header");
        refused = "gateway_error";
    }
    if (refused != NULL) {
        give_up(t, refused); /* closed at once, unanswered, and logged */
        return 0;
    }
    start_attempt(t);
    return 0;
}

/* A connection still choosing its destination: it goes on; its relay obeys the drain. */
static void fe_retire(fg_session_t *s)
{
    (void)s;
}

static void fe_close_idle(fg_session_t *s)
{
    (void)s;
}

static void fe_close(fg_session_t *s)
{
    tcp_t *t = (tcp_t *)s;
    snprintf(t->why, sizeof(t->why), "the worker is exiting");
    give_up(t, "drained");
}

const fg_frontend_t fg_tcp_proxy_frontend = {
    .name = "tcp",
    .slot = SLOT,
    .start = fe_start,
    .retire = fe_retire,
    .close_idle = fe_close_idle,
    .close = fe_close,
};
