/* See agent/resolve.h. */
#include "agent/resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

/* One lookup; it lives until evdns answers, even when forgotten before. */
struct fg_resolve_s {
    fg_resolve_cb cb; /* NULL once forgotten */
    void *arg;
    char host[256];
};

struct evdns_base *fg_resolve_base_new(struct event_base *base)
{
    /* DISABLE_WHEN_INACTIVE: no socket or event stays registered between lookups. */
    return evdns_base_new(base,
                          EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
}

void fg_resolve_base_reload(struct evdns_base *dns)
{
    evdns_base_clear_nameservers_and_suspend(dns);
    evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
    evdns_base_resume(dns);
}

void fg_resolve_base_free(struct evdns_base *dns)
{
    if (dns != NULL)
        evdns_base_free(dns, 0);
}

static void on_result(int rc, struct evutil_addrinfo *res, void *arg)
{
    fg_resolve_t *r = arg;
    if (r->cb == NULL || rc == EVUTIL_EAI_CANCEL) {
        /* forgotten: nobody waits */
    } else if (rc != 0 || res == NULL) {
        char err[400];
        snprintf(err, sizeof(err), "cannot resolve %s: %s", r->host,
                 rc ? evutil_gai_strerror(rc) : "no address");
        r->cb(r->arg, NULL, 0, err);
    } else {
        r->cb(r->arg, res->ai_addr, (socklen_t)res->ai_addrlen, NULL);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    free(r);
}

fg_resolve_t *fg_resolve_start(struct evdns_base *dns, const char *host, const char *port,
                               fg_resolve_cb cb, void *arg)
{
    fg_resolve_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        cb(arg, NULL, 0, "cannot resolve: out of memory");
        return NULL;
    }
    r->cb = cb;
    r->arg = arg;
    snprintf(r->host, sizeof(r->host), "%s", host);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
                                    .ai_socktype = SOCK_STREAM,
                                    .ai_protocol = IPPROTO_TCP,
                                    .ai_flags = EVUTIL_AI_ADDRCONFIG};
    /* Answered at once (a literal, /etc/hosts, an error), on_result ran and freed r. */
    return evdns_getaddrinfo(dns, host, port, &hints, on_result, r) ? r : NULL;
}

void fg_resolve_forget(fg_resolve_t *r)
{
    r->cb = NULL;
}
