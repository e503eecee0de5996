/* See agent/resolve.h. */
#include "agent/resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "common/log.h"

/* One lookup; it lives until evdns calls back, even when cancelled before. */
struct fg_resolve_s {
    struct evdns_getaddrinfo_request *req;
    fg_resolve_cb cb; /* NULL once cancelled */
    void *arg;
    char host[256];
};

/* evdns' own lines (a nameserver failing, coming back) into the agent's log; its debug
 * lines (every query) at debug. */
static void evdns_line(int is_warn, const char *msg)
{
    fg_log(is_warn ? FG_LOG_WARN : FG_LOG_DEBUG, "dns: %s", msg);
}

struct evdns_base *fg_resolve_base_new(struct event_base *base)
{
    evdns_set_log_fn(evdns_line);
    /* DISABLE_WHEN_INACTIVE: no socket or event stays registered between lookups. */
    return evdns_base_new(base,
                          EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
}

void fg_resolve_base_reload(struct evdns_base *dns)
{
    evdns_base_clear_nameservers_and_suspend(dns);
    /* not /etc/hosts: evdns would add its lines to the ones it has, the old ones winning */
    evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL & ~DNS_OPTION_HOSTSFILE, "/etc/resolv.conf");
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
        /* cancelled: nobody waits */
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
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(dns, host, port, &hints, on_result, r);
    if (req == NULL)
        return NULL; /* on_result ran and freed r */
    r->req = req;
    return r;
}

void fg_resolve_cancel(fg_resolve_t *r)
{
    /* on_result runs from the loop with EVUTIL_EAI_CANCEL (or the answer, if one is already on
     * its way) and frees r */
    r->cb = NULL;
    evdns_getaddrinfo_cancel(r->req);
}
