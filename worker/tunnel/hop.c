#include "worker/tunnel/hop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <netinet/in.h>

#include "common/log.h"
#include "worker/core/clock.h"
#include "worker/upstream/http1_client.h"
#include "worker/upstream/upstream.h"

#define HOP_FIELDS_MAX 256   /* request fields the hop carries, at most */
#define HOP_PROTOCOLS_MAX 16 /* distinct upgrade protocols of the configuration's routes */
#define ACCEPTS_PER_EVENT 32
#define HOP_KEEPALIVE_MS 5000 /* the hop socket's keep-alive limit, as its server */
/* Idle hop connections, per holder: kept below the holder's keep-alive limit, so that a
 * pooled connection is rarely one the holder is closing (the proxy replays a request that
 * meets one, as for any reused keep-alive connection). */
#define HOP_IDLE_MS 2000
#define HOP_IDLE_MAX 64
/* Holders with a pool, at most: a worker meets its generation's peers and, while it retires,
 * the next generation's; beyond it a hop uses a connection of its own. */
#define HOP_POOLS 64

/* A tunnel destination of the configuration, by its hop field value "AGENT SERVICE". */
typedef struct {
    char *key;
    size_t keylen;
    const fg_cluster_t *cl;
    int di;
} hop_dest_t;

typedef struct {
    int pid;
    fg_dest_pool_t *dp;
} hop_pool_t;

typedef struct {
    const fg_frontend_t *fe; /* serves the accepted connections */
    int fd;
    struct event *ev;
    fg_server_t server;                 /* what the HTTP/1.1 front end serves the socket as */
    fg_transform_t tx[3];               /* the hop route's transforms */
    fg_route_t route;                   /* template of the hop route */
    char *protocols[HOP_PROTOCOLS_MAX]; /* the hop route's upgradeProtocols */
    hop_dest_t *dests;                  /* sorted by key */
    size_t ndests;
    fg_cluster_t pool_cl; /* the idle limits of the pools */
    hop_pool_t pools[HOP_POOLS];
    size_t npools;
    struct event *linger; /* a retiring worker's exit once its linger is over */
} hop_t;

static socklen_t hop_addr(int pid, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    /* abstract namespace (unix(7)): no file to create, clean or leave behind */
    int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "fastgateway-hop-%d", pid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Only this user's processes (the gateway's workers) may hand requests to a tunnel. */
static int peer_trusted(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.uid == geteuid();
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    fg_worker_t *w = arg;
    hop_t *h = w->tunnel_hop;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                fg_log_warn("tunnel hop: accept failed: %s", strerror(errno));
            return;
        }
        if (!peer_trusted(fd)) {
            fg_log_warn("tunnel hop: connection from another user refused");
            close(fd);
            continue;
        }
        /* the front end wants a peer address: the hop's own, loopback */
        struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct sockaddr_storage ss;
        memcpy(&ss, &lo, sizeof(lo));
        if (h->fe->start(w, &h->server, fd, &ss, sizeof(lo)) != 0)
            close(fd);
    }
}

static void template(fg_worker_t *w, hop_t *h)
{
    fg_server_t *s = &h->server;
    s->id = "tunnel-hop";
    s->listen = "hop";
    s->enabled = 1;
    s->tunnel_hop = 1;
    /* the public server already bounded the request; these bound the hop's own parsing */
    s->max_request_line = 64 * 1024;
    s->max_header_size = 256 * 1024;
    s->max_headers = HOP_FIELDS_MAX;
    s->max_request_body_size = -1;
    s->header_timeout_ms = 60 * 1000;
    s->body_timeout_ms = 60 * 1000;
    s->keepalive_timeout_ms = HOP_KEEPALIVE_MS;
    s->send_timeout_ms = w->cfg->tunnels.heartbeat_ms + w->cfg->tunnels.grace_ms;
    s->ignore_client_abort = 0;
    s->responses.server_header = NULL;
    /* The requesting worker added X-Forwarded already and chose the Host: add nothing, keep
     * it, and drop the hop's own field. */
    h->tx[0] = (fg_transform_t){.kind = FG_TX_X_FORWARDED};
    h->tx[1] = (fg_transform_t){.kind = FG_TX_REQ_HEADER_REMOVE, .name = FG_TUNNEL_HOP_FIELD};
    h->tx[2] = (fg_transform_t){.kind = FG_TX_REQ_ORIGINAL_HOST, .flag = 1};
    h->route.id = "tunnel-hop";
    h->route.kind = FG_ROUTE_CLUSTER;
    h->route.transforms = h->tx;
    h->route.ntransforms = 3;
    h->route.max_request_body_size = -1;
    h->route.exempt_event_streams = 1;
    /* The requesting worker's route allowed the switch already: the hop relays every protocol
     * some route of the configuration allows (RFC 9110 7.8). */
    size_t np = 0;
    for (size_t i = 0; i < w->cfg->nroutes; i++) {
        const fg_route_t *rt = &w->cfg->routes[i];
        for (size_t j = 0; j < rt->nupgrade_protocols && np < HOP_PROTOCOLS_MAX; j++) {
            size_t k = 0;
            while (k < np && strcasecmp(h->protocols[k], rt->upgrade_protocols[j]) != 0)
                k++;
            if (k == np)
                h->protocols[np++] = rt->upgrade_protocols[j];
        }
    }
    /* a tcp server's connection to a tunnel comes over the hop as a switch to "tcp" */
    for (size_t i = 0; i < w->cfg->nservers && np < HOP_PROTOCOLS_MAX; i++)
        if (w->cfg->servers[i].tcp.enabled) {
            h->protocols[np++] = FG_TCP_PROTOCOL;
            break;
        }
    h->route.upgrade_protocols = h->protocols;
    h->route.nupgrade_protocols = np;
}

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : al < bl ? -1 : al > bl;
}

static int dest_cmp(const void *x, const void *y)
{
    const hop_dest_t *a = x, *b = y;
    return key_cmp(a->key, a->keylen, b->key, b->keylen);
}

static void hop_free(hop_t *h)
{
    for (size_t i = 0; i < h->ndests; i++)
        free(h->dests[i].key);
    free(h->dests);
    for (size_t i = 0; i < h->npools; i++)
        fg_upstream_pool_free(h->pools[i].dp);
    if (h->linger)
        event_free(h->linger);
    free(h);
}

/* The tunnel destinations by "AGENT SERVICE", so that the holder finds a hop request's
 * destination by a binary search. The first of equal keys wins (they lead to the same
 * tunnel service). 0, or -1 when out of memory. */
static int index_dests(const fg_config_t *cfg, hop_t *h)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->nclusters; i++)
        for (size_t j = 0; j < cfg->clusters[i].ndestinations; j++)
            n += cfg->clusters[i].destinations[j].tunnel != 0;
    h->dests = calloc(n ? n : 1, sizeof(*h->dests));
    if (h->dests == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const fg_cluster_t *c = &cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++) {
            const fg_destination_t *d = &c->destinations[j];
            if (!d->tunnel)
                continue;
            hop_dest_t *e = &h->dests[h->ndests];
            int kl = asprintf(&e->key, "%s %s", cfg->tunnels.agents[d->tunnel_agent].id,
                              d->tunnel_service);
            if (kl < 0)
                return -1;
            e->keylen = (size_t)kl;
            e->cl = c;
            e->di = (int)j;
            h->ndests++;
        }
    }
    /* a stable order among equal keys: configuration order (cluster, then destination) */
    for (size_t i = 1; i < h->ndests; i++)
        for (size_t k = i; k > 0 && dest_cmp(&h->dests[k - 1], &h->dests[k]) > 0; k--) {
            hop_dest_t t = h->dests[k];
            h->dests[k] = h->dests[k - 1];
            h->dests[k - 1] = t;
        }
    return 0;
}

int fg_tunnel_hop_listen(fg_worker_t *w, const fg_frontend_t *fe)
{
    if (w->cfg->tunnels.nagents == 0)
        return 0;
    hop_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->fe = fe;
    template(w, h);
    h->pool_cl.id = "tunnel-hop";
    h->pool_cl.max_idle_connections = HOP_IDLE_MAX;
    h->pool_cl.idle_timeout_ms = HOP_IDLE_MS;
    if (index_dests(w->cfg, h) != 0) {
        hop_free(h);
        errno = ENOMEM;
        return -1;
    }
    struct sockaddr_un sa;
    socklen_t len = hop_addr(w->pid, &sa);
    h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->fd == -1 || bind(h->fd, (struct sockaddr *)&sa, len) == -1 || listen(h->fd, 511) == -1) {
        int e = errno;
        fg_log_error("tunnel hop: cannot listen on @%s: %s", sa.sun_path + 1, strerror(e));
        if (h->fd != -1)
            close(h->fd);
        hop_free(h);
        errno = e;
        return -1;
    }
    h->ev = event_new(w->base, h->fd, EV_READ | EV_PERSIST, on_accept, w);
    if (h->ev == NULL || event_add(h->ev, NULL) != 0) {
        if (h->ev)
            event_free(h->ev);
        close(h->fd);
        hop_free(h);
        errno = ENOMEM;
        return -1;
    }
    w->tunnel_hop = h;
    return 0;
}

void fg_tunnel_hop_close(fg_worker_t *w)
{
    hop_t *h = w->tunnel_hop;
    if (h == NULL)
        return;
    event_free(h->ev);
    close(h->fd);
    hop_free(h);
    w->tunnel_hop = NULL;
}

/* The linger is over when its timer fires (each fg_tunnel_hop_linger re-arms it), whatever
 * the clock says: libevent's timers run on a coarser clock than fg_clock's, so the timer may
 * fire a few milliseconds before linger_until_ms, and nothing else would check again. */
static void on_linger_over(evutil_socket_t fd, short what, void *arg)
{
    fg_worker_t *w = arg;
    (void)fd;
    (void)what;
    w->linger_until_ms = 0;
    if (w->retiring && w->nconns == 0)
        event_base_loopexit(w->base, NULL);
}

void fg_tunnel_hop_linger(fg_worker_t *w)
{
    hop_t *h = w->tunnel_hop;
    if (h == NULL)
        return;
    if (h->linger == NULL && (h->linger = evtimer_new(w->base, on_linger_over, w)) == NULL)
        return; /* out of memory: the worker exits when its connections are done */
    w->linger_until_ms = fg_clock_now_ms() + FG_TUNNEL_HOP_LINGER_MS;
    struct timeval tv = {0, FG_TUNNEL_HOP_LINGER_MS * 1000};
    evtimer_add(h->linger, &tv);
}

/* The keep-alive pool of hop connections to holder pid, or NULL (none: a connection of its
 * own). Pools live as long as the worker: its exchanges release their connections into them. */
static fg_dest_pool_t *pool_of(fg_worker_t *w, int pid)
{
    hop_t *h = w->tunnel_hop;
    if (h == NULL)
        return NULL;
    for (size_t i = 0; i < h->npools; i++)
        if (h->pools[i].pid == pid)
            return h->pools[i].dp;
    if (h->npools == HOP_POOLS)
        return NULL;
    fg_dest_pool_t *dp = fg_upstream_pool_new(w, &h->pool_cl);
    if (dp != NULL)
        h->pools[h->npools++] = (hop_pool_t){pid, dp};
    return dp;
}

fg_exchange_t *fg_tunnel_hop_start(const fg_exchange_target_t *t, const fg_exchange_req_t *rq,
                                   int pid, const fg_exchange_cbs_t *cbs, void *arg)
{
    const fg_destination_t *d = &t->cl->destinations[t->di];
    const fg_config_t *cfg = t->w->cfg;
    const fg_headers_t *in = &rq->out->headers;
    fg_http_header_t v[HOP_FIELDS_MAX];
    char which[2 * 72];
    size_t n = 0;
    if (in->n + 1 > HOP_FIELDS_MAX) {
        errno = E2BIG;
        return NULL;
    }
    /* a client's own field of that name never travels: the hop names the destination */
    for (size_t i = 0; i < in->n; i++)
        if (!fg_str_ieq(in->v[i].name, FG_STR_LIT(FG_TUNNEL_HOP_FIELD)))
            v[n++] = in->v[i];
    int wl = snprintf(which, sizeof(which), "%s %s", cfg->tunnels.agents[d->tunnel_agent].id,
                      d->tunnel_service);
    v[n++] = (fg_http_header_t){FG_STR_LIT(FG_TUNNEL_HOP_FIELD), {which, (size_t)wl}};
    fg_outreq_t out = *rq->out;
    out.headers = (fg_headers_t){v, n, n, NULL};
    fg_exchange_req_t hr = *rq;
    hr.out = &out;
    struct sockaddr_un sa;
    fg_exchange_target_t ht = *t;
    ht.cl = NULL;
    ht.pool = pool_of(t->w, pid); /* keep-alive between workers */
    ht.addr = (const struct sockaddr *)&sa;
    ht.addrlen = hop_addr(pid, &sa);
    ht.http2 = 0;
    ht.fresh = t->fresh || ht.pool == NULL;
    ht.max_idle_us = 0;
    /* the head is queued at once: the copies above need not outlive the call */
    return fg_http1_client_start(&ht, &hr, cbs, arg);
}

/* The destination of this worker's configuration for "AGENT SERVICE" (binary search). */
static int find_dest(const hop_t *h, fg_str_t v, const fg_cluster_t **cl)
{
    size_t lo = 0, hi = h->ndests;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(h->dests[mid].key, h->dests[mid].keylen, v.base, v.len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == h->ndests || key_cmp(h->dests[lo].key, h->dests[lo].keylen, v.base, v.len) != 0)
        return -1;
    *cl = h->dests[lo].cl;
    return h->dests[lo].di;
}

int fg_tunnel_hop_route(fg_request_t *req)
{
    hop_t *h = req->worker->tunnel_hop;
    const fg_http_header_t *f = fg_request_header(req, FG_STR_LIT(FG_TUNNEL_HOP_FIELD));
    if (h == NULL || f == NULL) {
        fg_request_error(req, 400, "bad_request", "not a tunnel hop request");
        return -1;
    }
    const fg_cluster_t *cl = NULL;
    int di = find_dest(h, f->value, &cl);
    fg_route_t *r = di >= 0 ? fg_pool_calloc(req->pool, sizeof(*r)) : NULL;
    if (r == NULL) {
        fg_request_error(req, 502, "bad_gateway", "no such tunnel destination in this worker");
        return -1;
    }
    *r = h->route;
    r->cluster = (fg_cluster_t *)cl;
    r->cluster_id = cl->id;
    req->route = r;
    req->hop_dest = di + 1;
    return 0;
}
