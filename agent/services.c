/* See agent/services.h. */
#include "agent/services.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "agent/resolve.h"
#include "common/log.h"

struct fg_services_lookup_s;

typedef struct {
    struct fg_services_lookup_s *l;
    size_t i;        /* the service */
    fg_resolve_t *r; /* pending; NULL once answered */
    char host[256];
} slot_t;

struct fg_services_lookup_s {
    fg_agent_config_t *cfg;
    fg_services_cb cb;
    void *arg;
    struct event *timer; /* connectTimeoutMs */
    slot_t *slots;
    size_t pending;
    unsigned starting : 1; /* inside fg_services_resolve: callbacks only count */
    char err[800];
};

int fg_services_split(const char *address, char *authority, size_t alen, char *host, size_t hlen,
                      char *port, size_t plen, const char **path)
{
    const char *a = strstr(address, "://");
    if (a == NULL)
        return -1;
    a += 3;
    size_t n = strcspn(a, "/?#");
    const char *h = a, *he, *colon;
    if (*a == '[') {
        h = a + 1;
        he = memchr(h, ']', n);
        if (he == NULL)
            return -1;
        colon = he + 1 < a + n && he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(a, ':', n);
        he = colon ? colon : a + n;
    }
    size_t hl = (size_t)(he - h), pl = colon ? (size_t)(a + n - colon - 1) : 0;
    if (hl == 0 || hl >= hlen || n >= alen || pl >= plen || (colon && pl == 0))
        return -1;
    for (size_t i = 0; i < pl; i++)
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return -1;
    memcpy(authority, a, n);
    authority[n] = '\0';
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (colon != NULL)
        memcpy(port, colon + 1, pl), port[pl] = '\0';
    else
        snprintf(port, plen, "%s", strncmp(address, "https:", 6) == 0 ? "443" : "80");
    *path = a + n;
    return 0;
}

/* Whether address names a host to look up (into host and port); an address literal, in
 * brackets or not, or an address the loader will refuse (and explain) needs none. */
static int needs_lookup(const char *address, char *host, size_t hlen, char port[8])
{
    char authority[300];
    const char *path;
    unsigned char buf[sizeof(struct in6_addr)];
    if (fg_services_split(address, authority, sizeof(authority), host, hlen, port, 8, &path) < 0 ||
        authority[0] == '[')
        return 0;
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

/* s's address with its host replaced by sa. 0, or -1 when out of memory. */
static int set_resolved(fg_agent_service_t *s, const struct sockaddr *sa)
{
    char authority[300], host[256], port[8], ip[INET6_ADDRSTRLEN], out[1200];
    const char *path;
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (fg_services_split(s->address, authority, sizeof(authority), host, sizeof(host), port,
                          sizeof(port), &path) < 0 ||
        inet_ntop(sa->sa_family, src, ip, sizeof(ip)) == NULL)
        return -1;
    int n = snprintf(out, sizeof(out), "%.*s://%s%s%s:%s%s",
                     (int)(strstr(s->address, "://") - s->address), s->address,
                     sa->sa_family == AF_INET6 ? "[" : "", ip, sa->sa_family == AF_INET6 ? "]" : "",
                     port, path);
    if (n < 0 || (size_t)n >= sizeof(out))
        return -1;
    /* The Host the service gets (agent/runtime.c): its normal form omits the scheme's default
     * port (RFC 9110 4.2.3), as the gateway writes an http:// destination's. A name is never
     * bracketed, so without its port the authority is the host. */
    unsigned long p = strtoul(port, NULL, 10);
    if (p == (strncmp(s->address, "https:", 6) == 0 ? 443u : 80u))
        snprintf(authority, sizeof(authority), "%s", host);
    free(s->resolved);
    free(s->authority);
    s->resolved = strdup(out);
    s->authority = strdup(authority);
    return s->resolved && s->authority ? 0 : -1;
}

/* Every answer is in, or one failed: cancel the rest, tell the owner, free. */
static void finish(fg_services_lookup_t *l)
{
    fg_services_cb cb = l->cb;
    void *arg = l->arg;
    fg_agent_config_t *cfg = l->cfg;
    char err[sizeof(l->err)];
    snprintf(err, sizeof(err), "%s", l->err);
    l->cb = NULL;
    fg_services_cancel(l);
    cb(arg, cfg, err[0] ? err : NULL);
}

static void on_answer(void *arg, const struct sockaddr *sa, socklen_t len, const char *err)
{
    slot_t *s = arg;
    fg_services_lookup_t *l = s->l;
    fg_agent_service_t *svc = &l->cfg->services[s->i];
    (void)len;
    s->r = NULL;
    l->pending--;
    if (l->err[0] == '\0' && sa == NULL)
        snprintf(l->err, sizeof(l->err), "%s: services.%s: %s", l->cfg->file, svc->name, err);
    else if (l->err[0] == '\0' && set_resolved(svc, sa) < 0)
        snprintf(l->err, sizeof(l->err), "%s: services.%s: out of memory", l->cfg->file, svc->name);
    if (!l->starting && (l->pending == 0 || l->err[0] != '\0'))
        finish(l);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    fg_services_lookup_t *l = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < l->cfg->nservices; i++)
        if (l->slots[i].r != NULL) {
            snprintf(l->err, sizeof(l->err),
                     "%s: services.%s: cannot resolve %s: no answer within connectTimeoutMs "
                     "(%llu ms)",
                     l->cfg->file, l->cfg->services[i].name, l->slots[i].host,
                     (unsigned long long)l->cfg->connect_timeout_ms);
            break;
        }
    finish(l);
}

fg_services_lookup_t *fg_services_resolve(struct event_base *base, struct evdns_base *dns,
                                          fg_agent_config_t *cfg, fg_services_cb cb, void *arg)
{
    fg_services_lookup_t *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->slots = calloc(cfg->nservices + 1, sizeof(slot_t))) == NULL ||
        (l->timer = evtimer_new(base, on_timeout, l)) == NULL) {
        if (l != NULL)
            free(l->slots);
        free(l);
        cb(arg, cfg, "out of memory");
        return NULL;
    }
    l->cfg = cfg;
    l->cb = cb;
    l->arg = arg;
    l->starting = 1;
    for (size_t i = 0; i < cfg->nservices && l->err[0] == '\0'; i++) {
        slot_t *s = &l->slots[i];
        char port[8];
        s->l = l;
        s->i = i;
        if (!needs_lookup(cfg->services[i].address, s->host, sizeof(s->host), port))
            continue;
        l->pending++;
        s->r = fg_resolve_start(dns, s->host, port, on_answer, s);
    }
    l->starting = 0;
    if (l->pending == 0 || l->err[0] != '\0') {
        finish(l);
        return NULL;
    }
    struct timeval tv = {(time_t)(cfg->connect_timeout_ms / 1000),
                         (suseconds_t)(cfg->connect_timeout_ms % 1000) * 1000};
    evtimer_add(l->timer, &tv);
    return l;
}

void fg_services_cancel(fg_services_lookup_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->cfg->nservices; i++)
        if (l->slots[i].r != NULL)
            fg_resolve_cancel(l->slots[i].r);
    event_free(l->timer);
    free(l->slots);
    free(l);
}

typedef struct {
    struct event_base *base;
    int done;
    char *err;
    size_t errlen;
} wait_t;

static void on_done_now(void *arg, fg_agent_config_t *cfg, const char *err)
{
    wait_t *w = arg;
    (void)cfg;
    w->done = err ? -1 : 1;
    if (err)
        snprintf(w->err, w->errlen, "%s", err);
    event_base_loopbreak(w->base);
}

/* Whether some service's host is a name (not an address literal). */
static int has_names(const fg_agent_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++) {
        char host[256], port[8];
        if (needs_lookup(cfg->services[i].address, host, sizeof(host), port))
            return 1;
    }
    return 0;
}

int fg_services_resolve_now(fg_agent_config_t *cfg, char *err, size_t errlen)
{
    if (!has_names(cfg))
        return 0; /* no loop, no resolver to set up */
    wait_t w = {event_base_new(), 0, err, errlen};
    struct evdns_base *dns = w.base ? fg_resolve_base_new(w.base) : NULL;
    if (dns == NULL) {
        if (w.base)
            event_base_free(w.base);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (fg_services_resolve(w.base, dns, cfg, on_done_now, &w) != NULL)
        while (!w.done && event_base_loop(w.base, EVLOOP_ONCE) == 0)
            ;
    /* cancelled lookups end from the loop */
    event_base_loop(w.base, EVLOOP_NONBLOCK);
    fg_resolve_base_free(dns);
    event_base_free(w.base);
    return w.done == 1 ? 0 : -1;
}
