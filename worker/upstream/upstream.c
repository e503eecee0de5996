#include "worker/upstream/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/tls_client.h"
#include "worker/http/request.h"
#include "worker/upstream/balancer.h"
#include "worker/core/clock.h"

struct fg_dest_pool_s {
    fg_worker_t *w;
    const fg_cluster_t *cl;
    const fg_destination_t *dest;
    fg_upconn_t *idle; /* most recently released first */
    unsigned nidle;
    fg_upstream_ext_t *h2; /* the HTTP/2 client's connections (fg_upstream_h2_slot) */
};

typedef struct {
    fg_dest_pool_t *dests;
    fg_balancer_t *balancer;
} cluster_pools_t;

struct fg_upstream_pools_s {
    const fg_config_t *cfg;
    cluster_pools_t *clusters;
};

fg_upstream_pools_t *fg_upstream_pools_new(fg_worker_t *w)
{
    const fg_config_t *cfg = w->cfg;
    fg_upstream_pools_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->cfg = cfg;
    p->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*p->clusters));
    if (p->clusters == NULL) {
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *cl = &cfg->clusters[i];
        cluster_pools_t *cp = &p->clusters[i];
        cp->dests = calloc(cl->ndestinations ? cl->ndestinations : 1, sizeof(*cp->dests));
        /* Seeded per process and cluster, so workers do not draw the same sequence. */
        cp->balancer = fg_balancer_new(cl, ((uint64_t)w->pid << 32) ^ (uint64_t)(i + 1) * 0x9E37u ^
                                               (uint64_t)w->slot);
        if (cp->dests == NULL || cp->balancer == NULL) {
            fg_upstream_pools_free(p);
            return NULL;
        }
        for (size_t d = 0; d < cl->ndestinations; d++) {
            cp->dests[d].w = w;
            cp->dests[d].cl = cl;
            cp->dests[d].dest = &cl->destinations[d];
        }
    }
    return p;
}

static void idle_unlink(fg_upconn_t *u)
{
    fg_dest_pool_t *dp = u->pool;
    if (u->prev)
        u->prev->next = u->next;
    else
        dp->idle = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
    dp->nidle--;
}

void fg_upstream_close(fg_upconn_t *u)
{
    if (u == NULL)
        return;
    fg_conn_free(u->c);
    free(u);
}

void fg_upstream_pools_free(fg_upstream_pools_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->cfg->nclusters; i++) {
        cluster_pools_t *cp = &p->clusters[i];
        fg_balancer_free(cp->balancer);
        if (cp->dests == NULL)
            continue;
        for (size_t d = 0; d < p->cfg->clusters[i].ndestinations; d++) {
            if (cp->dests[d].h2)
                cp->dests[d].h2->release(cp->dests[d].h2);
            cp->dests[d].h2 = NULL;
            while (cp->dests[d].idle) {
                fg_upconn_t *u = cp->dests[d].idle;
                idle_unlink(u);
                fg_upstream_close(u);
            }
        }
        free(cp->dests);
    }
    free(p->clusters);
    free(p);
}

static fg_dest_pool_t *dest_pool(fg_worker_t *w, const fg_cluster_t *cl, size_t di)
{
    size_t ci = (size_t)(cl - w->cfg->clusters);
    return &w->upstreams->clusters[ci].dests[di];
}

fg_upstream_ext_t **fg_upstream_h2_slot(fg_worker_t *w, const fg_cluster_t *cl, size_t di)
{
    return &dest_pool(w, cl, di)->h2;
}

fg_balancer_t *fg_upstream_balancer(fg_worker_t *w, const fg_cluster_t *cl)
{
    return w->upstreams->clusters[cl - w->cfg->clusters].balancer;
}

/* An idle connection that becomes readable has either been closed by the destination or sent
 * bytes nobody asked for: it cannot be reused either way. */
static void idle_read(fg_conn_t *c, void *arg)
{
    fg_upconn_t *u = arg;
    idle_unlink(u);
    fg_upstream_close(u);
}

static void idle_event(fg_conn_t *c, void *arg, int what)
{
    idle_read(c, arg);
}

static const fg_conn_cbs_t idle_cbs = {idle_read, NULL, idle_event};

fg_upconn_t *fg_upstream_acquire(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                 uint64_t max_idle_us)
{
    return fg_upstream_pool_acquire(dest_pool(w, cl, di), max_idle_us);
}

fg_upconn_t *fg_upstream_pool_acquire(fg_dest_pool_t *dp, uint64_t max_idle_us)
{
    fg_upconn_t *u = dp->idle; /* the most recently used: if it is too old, all are */
    if (u == NULL)
        return NULL;
    if (max_idle_us && fg_clock_now_us() - u->idle_since_us >= max_idle_us)
        return NULL;
    idle_unlink(u);
    u->reused = 1;
    return u;
}

fg_dest_pool_t *fg_upstream_pool_new(fg_worker_t *w, const fg_cluster_t *cl)
{
    fg_dest_pool_t *dp = calloc(1, sizeof(*dp));
    if (dp != NULL) {
        dp->w = w;
        dp->cl = cl;
    }
    return dp;
}

void fg_upstream_pool_free(fg_dest_pool_t *dp)
{
    if (dp == NULL)
        return;
    while (dp->idle) {
        fg_upconn_t *u = dp->idle;
        idle_unlink(u);
        fg_upstream_close(u);
    }
    free(dp);
}

unsigned fg_upstream_pool_idle(const fg_dest_pool_t *dp)
{
    return dp->nidle;
}

void fg_upstream_pool_adopt(fg_dest_pool_t *dp, fg_upconn_t *u)
{
    u->pool = dp;
}

fg_upconn_t *fg_upstream_open(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                              const fg_conn_cbs_t *cbs, void *arg)
{
    return fg_upstream_open_timeout(w, cl, di, cbs, arg, cl->connect_timeout_ms);
}

fg_upconn_t *fg_upstream_open_addr(fg_worker_t *w, const struct sockaddr *sa, socklen_t len,
                                   const fg_conn_cbs_t *cbs, void *arg, uint64_t timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fg_upconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        close(fd);
        return NULL;
    }
    u->c = fg_conn_new(w->base, fd, cbs, arg);
    if (u->c == NULL) {
        close(fd);
        free(u);
        errno = ENOMEM;
        return NULL;
    }
    fg_conn_set_read_max(u->c, 64 * 1024 - 128);
    int r = fg_conn_connect(u->c, sa, len, timeout_ms);
    if (r < 0) {
        fg_upstream_close(u);
        errno = -r;
        return NULL;
    }
    return u;
}

/* fg_upstream_open_timeout; with http1, TLS offers ALPN http/1.1 alone (RFC 7301), whatever
 * the destination's httpVersion. */
static fg_upconn_t *open_dest(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                              const fg_conn_cbs_t *cbs, void *arg, uint64_t timeout_ms, int http1)
{
    const fg_destination_t *d = &cl->destinations[di];
    fg_upconn_t *u = fg_upstream_open_addr(w, (const struct sockaddr *)&d->addr, d->addrlen, cbs,
                                           arg, timeout_ms);
    if (u == NULL)
        return NULL;
    u->pool = dest_pool(w, cl, di);
    if (d->https) {
        /* The connect completes on the loop, so the transport can still change; no client
         * SSL (no context, out of memory) means no connection: never plaintext to https. */
        static const unsigned char alpn_http11[] = "\x08http/1.1";
        SSL *ssl = fg_tls_client_ssl_new(cl, di);
        /* SSL_set_alpn_protos returns 0 on success */
        if (ssl != NULL && http1 && SSL_set_alpn_protos(ssl, alpn_http11, 9) != 0) {
            SSL_free(ssl);
            ssl = NULL;
        }
        if (ssl == NULL) {
            fg_upstream_close(u);
            errno = ENOMEM;
            return NULL;
        }
        /* With failover on, an attempt's handshake stays within its connect timeout, so the
         * attempts keep to the budget. */
        uint64_t hs = cl->http_client.handshake_timeout_ms;
        if (cl->failover.enabled && timeout_ms < hs)
            hs = timeout_ms;
        fg_conn_start_tls_client(u->c, ssl, hs);
    }
    return u;
}

fg_upconn_t *fg_upstream_open_timeout(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                      const fg_conn_cbs_t *cbs, void *arg, uint64_t timeout_ms)
{
    return open_dest(w, cl, di, cbs, arg, timeout_ms, 0);
}

fg_upconn_t *fg_upstream_open_http1(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                    uint64_t timeout_ms)
{
    return open_dest(w, cl, di, NULL, NULL, timeout_ms, 1);
}

fg_upconn_t *fg_upstream_open_probe(fg_worker_t *w, const fg_cluster_t *cl, size_t di,
                                    uint64_t timeout_ms)
{
    const fg_destination_t *d = &cl->destinations[di];
    fg_upconn_t *u = fg_upstream_open_addr(w, (const struct sockaddr *)&d->health_addr,
                                           d->health_addrlen, NULL, NULL, timeout_ms);
    if (u == NULL || !d->health_https)
        return u;
    /* never plaintext where the address says https */
    SSL *ssl = fg_tls_client_health_ssl_new(cl, di);
    if (ssl == NULL) {
        fg_upstream_close(u);
        errno = ENOMEM;
        return NULL;
    }
    uint64_t hs = cl->http_client.handshake_timeout_ms;
    fg_conn_start_tls_client(u->c, ssl, timeout_ms < hs ? timeout_ms : hs);
    return u;
}

void fg_upstream_release(fg_upconn_t *u)
{
    fg_dest_pool_t *dp = u->pool;
    if (dp == NULL) {
        fg_upstream_close(u);
        return;
    }
    const fg_cluster_t *cl = dp->cl;
    int spent = cl->max_requests_per_connection && u->requests >= cl->max_requests_per_connection;
    if (spent || dp->nidle >= cl->max_idle_connections || dp->w->retiring ||
        evbuffer_get_length(fg_conn_input(u->c)) > 0 || fg_conn_pending(u->c) > 0 ||
        fg_conn_input_waiting(u->c)) {
        /* Not reusable: unread bytes, unsent ones, or a destination that ended its side
         * (a TLS close_notify behind the response), which the pool would only learn of
         * from its read event after a request taken from the pool first. */
        fg_upstream_close(u);
        return;
    }
    fg_conn_set_cbs(u->c, &idle_cbs, u);
    fg_conn_read(u->c, 1, cl->idle_timeout_ms);
    u->idle_since_us = fg_clock_now_us();
    u->next = dp->idle;
    u->prev = NULL;
    if (dp->idle)
        dp->idle->prev = u;
    dp->idle = u;
    dp->nidle++;
}

size_t fg_upstream_addr_text(const fg_destination_t *d, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&d->addr;
    if (d->tunnel && len > 0) { /* no socket address: the tunnel's, as written */
        int n = snprintf(buf, len, "%s", d->address);
        return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
    }
    const void *bin = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || len < 2 ||
        inet_ntop(sa->sa_family, bin, ip, sizeof(ip)) == NULL) {
        if (len)
            buf[0] = '\0';
        return 0;
    }
    /* no printf: the access log calls this for every proxied request */
    char tmp[INET6_ADDRSTRLEN + 10], *w = tmp;
    size_t il = strlen(ip);
    if (sa->sa_family == AF_INET6)
        *w++ = '[';
    memcpy(w, ip, il);
    w += il;
    if (sa->sa_family == AF_INET6)
        *w++ = ']';
    *w++ = ':';
    w = fg_put_u64(w, d->port);
    size_t n = (size_t)(w - tmp) < len - 1 ? (size_t)(w - tmp) : len - 1;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
    return n;
}

int fg_upstream_pick(fg_worker_t *w, const fg_cluster_t *cl, const fg_request_t *req, int avoid)
{
    fg_balancer_t *b = fg_upstream_balancer(w, cl);
    if (b == NULL)
        return -1;
    fg_pick_t pk = {fg_clock_now_ms(), NULL, avoid};
    return fg_balancer_select(b, cl, &pk, NULL);
}
