#include "worker/core/handshake.h"

#include <stdlib.h>
#include <string.h>

#include "common/iprange.h"
#include "common/log.h"
#include "common/tls.h"
#include "shm/metrics.h"
#include "worker/core/conn.h"
#include "worker/core/connlimit.h"
#include "worker/core/frontend.h"
#include "worker/http/http1.h"
#include "worker/http/http2.h"

/* A connection in its handshake is a session of its own (the "tls" front end below), so the
 * worker counts it: a retiring worker waits for it to finish and hand over, the drain period's
 * end and the worker's exit close it. */
typedef struct {
    fg_session_t session; /* first: the worker's list of sessions */
    fg_worker_t *w;
    const fg_server_t *srv;
    fg_conn_t *c;
    struct sockaddr_storage peer;
    int via_balancer; /* fg_worker_t.accept_balancer was set at the accept: balancer holds it */
    struct sockaddr_storage balancer;
} pending_t;

static void hs_retire(fg_session_t *s)
{
    (void)s; /* the handshake finishes; the front end it goes to sees the worker retiring */
}

/* A handshake is not a request in flight: the drain period's end closes it like an idle
 * connection. */
static void hs_close(fg_session_t *s)
{
    pending_t *p = (pending_t *)s;
    fg_conn_free(p->c);
    fg_frontend_remove(p->w, &p->session);
    free(p);
}

static const fg_frontend_t handshake_fe = {
    .name = "tls",
    .slot = FG_FRONTEND_SLOTS - 1, /* keeps no worker-wide state */
    .retire = hs_retire,
    .close_idle = hs_close,
    .close = hs_close,
};

typedef int (*front_adopt_fn)(fg_worker_t *w, const fg_server_t *srv, fg_conn_t *c,
                              const struct sockaddr_storage *peer, int flags);

/* The front end of each ALPN outcome (RFC 7301): a client that offered none speaks HTTP/1.1.
 * A protocol without a front end here is never offered (fg_tls_build refuses it in "alpn"). */
static const front_adopt_fn fronts[] = {
    [FG_TLS_ALPN_NONE] = fg_http1_adopt,
    [FG_TLS_ALPN_HTTP11] = fg_http1_adopt,
    [FG_TLS_ALPN_H2] = fg_http2_adopt,
};

static void hand_over(fg_conn_t *c, pending_t *p, int plain)
{
    fg_tls_alpn_t alpn = plain ? FG_TLS_ALPN_NONE : fg_conn_alpn(c);
    front_adopt_fn adopt = (size_t)alpn < sizeof(fronts) / sizeof(fronts[0]) ? fronts[alpn] : NULL;
    /* The front end's session is registered before this one goes, so a retiring worker never
     * sees zero sessions in between. */
    p->w->accept_balancer = p->via_balancer ? &p->balancer : NULL;
    int rc =
        adopt == NULL ? -1 : adopt(p->w, p->srv, c, &p->peer, plain ? FG_HTTP1_PLAIN_ON_TLS : 0);
    p->w->accept_balancer = NULL;
    if (rc != 0)
        fg_conn_free(c);
    else
        fg_frontend_handed_over(p->w);
    fg_frontend_remove(p->w, &p->session);
    free(p);
}

static void on_event(fg_conn_t *c, void *arg, int what)
{
    pending_t *p = arg;
    if (what == FG_CONN_HANDSHAKE_DONE) {
        fg_metrics_add(p->srv->metrics, FG_MS_TLS_HANDSHAKES, 1);
        if (SSL_session_reused(fg_conn_ssl(c)))
            fg_metrics_add(p->srv->metrics, FG_MS_TLS_RESUMED, 1);
    } else if (what != FG_CONN_PLAINTEXT) {
        fg_metrics_add(p->srv->metrics, FG_MS_TLS_FAILURES, 1);
    }
    if (what == FG_CONN_HANDSHAKE_DONE || what == FG_CONN_PLAINTEXT) {
        hand_over(c, p, what == FG_CONN_PLAINTEXT);
        return;
    }
    char peer[64], why[512];
    if (what == FG_CONN_TIMEOUT_READ) {
        fg_log_info("tls: handshake timed out, client: %s, server: %s",
                    fg_ip_format_peer(&p->peer, peer, sizeof(peer)), p->srv->id);
    } else if (what == FG_CONN_ERROR) {
        fg_conn_tls_why(c, why, sizeof(why));
        fg_log_info("tls: handshake failed: %s, client: %s, server: %s", why,
                    fg_ip_format_peer(&p->peer, peer, sizeof(peer)), p->srv->id);
    }
    hs_close(&p->session);
}

static void on_nothing(fg_conn_t *c, void *arg)
{
    (void)c;
    (void)arg;
}

static const fg_conn_cbs_t cbs = {on_nothing, on_nothing, on_event};

int fg_handshake_accept(fg_worker_t *w, const fg_server_t *srv, int fd,
                        const struct sockaddr_storage *peer, int data_ready)
{
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL)
        return -1;
    *p = (pending_t){.w = w, .srv = srv, .peer = *peer, .via_balancer = w->accept_balancer != NULL};
    if (w->accept_balancer != NULL)
        p->balancer = *w->accept_balancer;
    fg_conn_t *c = fg_conn_new(w->base, fd, &cbs, p);
    if (c == NULL) {
        free(p);
        return -1;
    }
    p->c = c;
    fg_connlimit_attach(w, c);
    fg_frontend_add(w, &p->session, &handshake_fe);
    if (fg_conn_start_tls(c, fg_tls_server_ctx(srv)) != 0) {
        fg_log_error("tls: out of memory for a connection, server: %s", srv->id);
        hs_close(&p->session); /* closes fd */
        return 0;
    }
    fg_conn_set_write_timeout(c, srv->tls->handshake_timeout_ms);
    fg_conn_handshake(c, srv->tls->handshake_timeout_ms, data_ready);
    return 0;
}
