#include "worker/core/connlimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/xxhash.h"
#include "worker/core/clock.h"

#define CLIENT_BUCKETS 1024 /* of the worker's own per-client counts */
#define LOG_EVERY_MS 1000   /* refusals logged per server and worker at most this often */

enum { PLACE_NONE = 0, PLACE_SHARED, PLACE_LOCAL }; /* where a hold counts one */

/* A client address's open connections on one server, in this worker's own count. */
typedef struct client_s {
    struct client_s *next;
    size_t server;
    uint8_t addr[16];
    unsigned open;
} client_t;

/* What a worker logged of one server's refusals. */
typedef struct {
    uint64_t last_ms;
    uint64_t quiet; /* refusals since then, not logged */
} refusals_t;

struct fg_connlimit_s {
    fg_tcpclients_t *shared;
    int record;
    uint64_t seed; /* a peer cannot aim its addresses at one bucket */
    size_t nservers;
    client_t *buckets[CLIENT_BUCKETS];
    refusals_t *refusals; /* per server */
    unsigned open[];      /* per server: the server's count when it has no shared column */
};

struct fg_connlimit_hold_s {
    fg_connlimit_t *cl;
    const fg_metrics_obj_t *metrics;
    uint64_t skey; /* fg_tcpclients_server_key of the server */
    size_t server;
    uint8_t addr[16];  /* fg_tcpclients_key of the peer */
    client_t *local;   /* PLACE_LOCAL client place */
    uint8_t client_at; /* PLACE_* */
    uint8_t server_at; /* PLACE_* */
};

fg_connlimit_t *fg_connlimit_new(fg_tcpclients_t *shared, int record, size_t nservers)
{
    fg_connlimit_t *cl = calloc(1, sizeof(*cl) + nservers * sizeof(unsigned));
    if (cl == NULL)
        return NULL;
    cl->refusals = calloc(nservers ? nservers : 1, sizeof(*cl->refusals));
    if (cl->refusals == NULL) {
        free(cl);
        return NULL;
    }
    cl->shared = shared;
    cl->record = record;
    cl->nservers = nservers;
    cl->seed = fg_clock_now_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)cl;
    return cl;
}

void fg_connlimit_free(fg_connlimit_t *cl)
{
    if (cl == NULL)
        return;
    for (size_t i = 0; i < CLIENT_BUCKETS; i++)
        while (cl->buckets[i]) {
            client_t *c = cl->buckets[i];
            cl->buckets[i] = c->next;
            free(c);
        }
    free(cl->refusals);
    free(cl);
}

/* ---- the worker's own counts ---- */

static client_t **bucket(fg_connlimit_t *cl, size_t server, const uint8_t addr[16])
{
    return &cl->buckets[fg_xxh64(addr, 16, cl->seed ^ server) % CLIENT_BUCKETS];
}

/* One place of h's address in this worker: 0 (held), 1 (at cap), -1 (out of memory). */
static int local_client_take(fg_connlimit_t *cl, fg_connlimit_hold_t *h, unsigned cap)
{
    client_t **b = bucket(cl, h->server, h->addr);
    client_t *c = *b;
    while (c != NULL && (c->server != h->server || memcmp(c->addr, h->addr, 16) != 0))
        c = c->next;
    if (c != NULL && c->open >= cap)
        return 1;
    if (c == NULL) {
        if ((c = calloc(1, sizeof(*c))) == NULL)
            return -1;
        c->server = h->server;
        memcpy(c->addr, h->addr, 16);
        c->next = *b;
        *b = c;
    }
    c->open++;
    h->local = c;
    return 0;
}

static void local_client_give(fg_connlimit_t *cl, client_t *c)
{
    if (--c->open > 0)
        return;
    client_t **p = bucket(cl, c->server, c->addr);
    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    free(c);
}

/* ---- places ---- */

/* One place of h's address: shared across workers, else this worker's. A verdict. */
static fg_connlimit_verdict_t client_take(fg_connlimit_t *cl, fg_connlimit_hold_t *h, unsigned cap)
{
    int rc = fg_tcpclients_take(cl->shared, h->skey, h->addr, cl->record, cap);
    if (rc == 0)
        h->client_at = PLACE_SHARED;
    if (rc >= 0)
        return rc == 0 ? FG_CONNLIMIT_OK : FG_CONNLIMIT_CLIENT;
    rc = local_client_take(cl, h, cap);
    if (rc == 0)
        h->client_at = PLACE_LOCAL;
    return rc == 0 ? FG_CONNLIMIT_OK : rc > 0 ? FG_CONNLIMIT_CLIENT_HERE : FG_CONNLIMIT_NOMEM;
}

/* One place of h's server: in the metrics zone's column, exact across workers, else this
 * worker's. 0 (held) or 1 (at cap). */
static int server_take(fg_connlimit_t *cl, fg_connlimit_hold_t *h, unsigned cap)
{
    int rc = fg_metrics_place_reserve(h->metrics, FG_MP_CONNECTIONS, cap);
    if (rc >= 0) {
        h->server_at = rc == 0 ? PLACE_SHARED : PLACE_NONE;
        return rc;
    }
    if (cl->open[h->server] >= cap)
        return 1;
    cl->open[h->server]++;
    h->server_at = PLACE_LOCAL;
    return 0;
}

fg_connlimit_verdict_t fg_connlimit_take(fg_connlimit_t *cl, const fg_connlimit_caps_t *caps,
                                         const struct sockaddr_storage *peer,
                                         fg_connlimit_hold_t **hold)
{
    *hold = NULL;
    if (caps->max_connections == 0 && caps->max_per_client == 0)
        return FG_CONNLIMIT_OK;
    if (cl == NULL || caps->server >= cl->nservers)
        return FG_CONNLIMIT_NOMEM;
    fg_connlimit_hold_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return FG_CONNLIMIT_NOMEM;
    *h = (fg_connlimit_hold_t){.cl = cl, .metrics = caps->metrics, .server = caps->server};
    fg_connlimit_verdict_t v = FG_CONNLIMIT_OK;
    if (caps->max_per_client > 0) {
        h->skey = fg_tcpclients_server_key(caps->id);
        fg_tcpclients_key(peer, h->addr);
        v = client_take(cl, h, caps->max_per_client);
    }
    if (v == FG_CONNLIMIT_OK && caps->max_connections > 0 &&
        server_take(cl, h, caps->max_connections) != 0)
        v = FG_CONNLIMIT_SERVER;
    if (v != FG_CONNLIMIT_OK) {
        fg_connlimit_give(h);
        return v;
    }
    *hold = h;
    return FG_CONNLIMIT_OK;
}

void fg_connlimit_give(fg_connlimit_hold_t *h)
{
    if (h == NULL)
        return;
    fg_connlimit_t *cl = h->cl;
    if (h->client_at == PLACE_SHARED)
        fg_tcpclients_give(cl->shared, h->skey, h->addr, cl->record);
    else if (h->client_at == PLACE_LOCAL)
        local_client_give(cl, h->local);
    if (h->server_at == PLACE_SHARED)
        fg_metrics_place_release(h->metrics, FG_MP_CONNECTIONS);
    else if (h->server_at == PLACE_LOCAL)
        cl->open[h->server]--;
    free(h);
}

/* ---- HTTP servers' accept path ---- */

fg_connlimit_t *fg_connlimit_of(fg_worker_t *w)
{
    if (w->connlimit == NULL && w->cfg != NULL) {
        int record = w->record && w->shm ? (int)(w->record - fg_shm_worker(w->shm, 0)) : -1;
        w->connlimit = fg_connlimit_new(fg_tcpclients_zone(w->shm), record, w->cfg->nservers);
    }
    return w->connlimit;
}

/* The warning of a refusal, at most once per LOG_EVERY_MS per server in this worker. */
static void log_refusal(fg_connlimit_t *cl, const fg_server_t *srv, size_t si,
                        const struct sockaddr_storage *peer, fg_connlimit_verdict_t v)
{
    refusals_t *r = &cl->refusals[si];
    uint64_t now = fg_clock_now_ms();
    if (r->last_ms != 0 && now - r->last_ms < LOG_EVERY_MS) {
        r->quiet++;
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    int v6 = 0;
    if (peer->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, ip, sizeof(ip));
    } else if (peer->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        inet_ntop(AF_INET6, a, ip, sizeof(ip));
        v6 = !IN6_IS_ADDR_V4MAPPED(a);
    }
    char what[96];
    if (v == FG_CONNLIMIT_SERVER)
        snprintf(what, sizeof(what), "maxConnections (%u) reached", srv->max_connections);
    else if (v == FG_CONNLIMIT_NOMEM)
        snprintf(what, sizeof(what), "out of memory for the connection counts");
    else
        snprintf(what, sizeof(what), "maxConnectionsPerClient (%u) reached%s%s",
                 srv->max_per_client, v6 ? " by its /64" : "",
                 v == FG_CONNLIMIT_CLIENT_HERE ? " in this worker" : "");
    fg_log_warn("server \"%s\": connection from %s closed: %s (%llu more refused since the last "
                "line)",
                srv->id, ip, what, (unsigned long long)r->quiet);
    r->last_ms = now;
    r->quiet = 0;
}

int fg_connlimit_accept(fg_worker_t *w, const fg_server_t *srv, const struct sockaddr_storage *peer)
{
    size_t si = (size_t)(srv - w->cfg->servers);
    fg_connlimit_caps_t caps = {.server = si,
                                .id = srv->id,
                                .metrics = srv->metrics,
                                .max_connections = srv->max_connections,
                                .max_per_client = srv->max_per_client};
    fg_connlimit_t *cl = fg_connlimit_of(w);
    fg_connlimit_verdict_t v = fg_connlimit_take(cl, &caps, peer, &w->accept_hold);
    if (v == FG_CONNLIMIT_OK)
        return 0;
    if (v != FG_CONNLIMIT_NOMEM)
        fg_metrics_add(srv->metrics,
                       v == FG_CONNLIMIT_SERVER ? FG_MS_REFUSED_SERVER : FG_MS_REFUSED_CLIENT, 1);
    if (cl != NULL)
        log_refusal(cl, srv, si, peer, v);
    else
        fg_log_warn("server \"%s\": connection closed: out of memory for the connection counts",
                    srv->id);
    return -1;
}

static void give_back(void *hold)
{
    fg_connlimit_give(hold);
}

void fg_connlimit_attach_hold(fg_worker_t *w, fg_conn_t *c)
{
    fg_conn_on_free(c, give_back, w->accept_hold);
    w->accept_hold = NULL;
}
