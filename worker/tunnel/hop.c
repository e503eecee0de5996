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
#include "worker/upstream/http1_client.h"

#define HOP_FIELDS_MAX 256   /* request fields the hop carries, at most */
#define HOP_PROTOCOLS_MAX 16 /* distinct upgrade protocols of the configuration's routes */
#define ACCEPTS_PER_EVENT 32

typedef struct {
    const fg_frontend_t *fe; /* serves the accepted connections */
    int fd;
    struct event *ev;
    fg_server_t server;                 /* what the HTTP/1.1 front end serves the socket as */
    fg_transform_t tx[3];               /* the hop route's transforms */
    fg_route_t route;                   /* template of the hop route */
    char *protocols[HOP_PROTOCOLS_MAX]; /* the hop route's upgradeProtocols */
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
    s->keepalive_timeout_ms = 5 * 1000;
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

int fg_tunnel_hop_listen(fg_worker_t *w, const fg_frontend_t *fe)
{
    if (w->cfg->tunnels.nagents == 0)
        return 0;
    hop_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->fe = fe;
    template(w, h);
    struct sockaddr_un sa;
    socklen_t len = hop_addr(w->pid, &sa);
    h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->fd == -1 || bind(h->fd, (struct sockaddr *)&sa, len) == -1 || listen(h->fd, 511) == -1) {
        int e = errno;
        fg_log_error("tunnel hop: cannot listen on @%s: %s", sa.sun_path + 1, strerror(e));
        if (h->fd != -1)
            close(h->fd);
        free(h);
        errno = e;
        return -1;
    }
    h->ev = event_new(w->base, h->fd, EV_READ | EV_PERSIST, on_accept, w);
    if (h->ev == NULL || event_add(h->ev, NULL) != 0) {
        if (h->ev)
            event_free(h->ev);
        close(h->fd);
        free(h);
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
    free(h);
    w->tunnel_hop = NULL;
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
    ht.cl = NULL; /* a connection of its own: one exchange, then closed */
    ht.addr = (const struct sockaddr *)&sa;
    ht.addrlen = hop_addr(pid, &sa);
    ht.http2 = 0;
    ht.fresh = 1;
    /* the head is queued at once: the copies above need not outlive the call */
    return fg_http1_client_start(&ht, &hr, cbs, arg);
}

/* The destination of this worker's configuration for "AGENT SERVICE". */
static int find_dest(const fg_config_t *cfg, fg_str_t v, const fg_cluster_t **cl)
{
    const char *sp = memchr(v.base, ' ', v.len);
    if (sp == NULL)
        return -1;
    int agent = fg_config_tunnel_agent(cfg, v.base, (size_t)(sp - v.base));
    fg_str_t svc = {sp + 1, v.len - (size_t)(sp + 1 - v.base)};
    for (size_t i = 0; agent >= 0 && i < cfg->nclusters; i++) {
        const fg_cluster_t *c = &cfg->clusters[i];
        for (size_t j = 0; j < c->ndestinations; j++) {
            const fg_destination_t *d = &c->destinations[j];
            if (d->tunnel && d->tunnel_agent == agent &&
                fg_str_eq(svc, fg_str(d->tunnel_service))) {
                *cl = c;
                return (int)j;
            }
        }
    }
    return -1;
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
    int di = find_dest(req->worker->cfg, f->value, &cl);
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
