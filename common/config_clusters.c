/* Configuration loader, part 3: clusters and their destinations (YARP's "Clusters" section).
 * Destination addresses are parsed as http(s) URLs and resolved once here, at load, so a
 * worker never waits on DNS. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/config_impl.h"

typedef struct {
    int https;
    char *host; /* as written, IPv6 literals keep their brackets (a Host header needs them) */
    uint16_t port;
    char *base; /* "" or "/base" without trailing slash */
} url_t;

static void url_clear(url_t *u)
{
    free(u->host);
    free(u->base);
    memset(u, 0, sizeof(*u));
}

static int host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

/* Split "http[s]://host[:port][/base]". Returns 0, or -1 with the reason in why (to follow
 * the quoted URL in the message). No user info, query or fragment: none has a meaning for an
 * upstream address. */
static int parse_url(const char *s, url_t *u, char *why, size_t whylen)
{
    const char *p, *hend, *pstart;

    memset(u, 0, sizeof(*u));
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        p = s + 8;
        u->https = 1;
    } else {
        snprintf(why, whylen, "is not an http or https URL");
        return -1;
    }
    if (strpbrk(p, "?#") != NULL) {
        snprintf(why, whylen, "must not have a query or fragment");
        return -1;
    }
    pstart = p + strcspn(p, "/");
    if (memchr(p, '@', (size_t)(pstart - p)) != NULL) {
        snprintf(why, whylen, "must not contain user information");
        return -1;
    }
    if (*p == '[') {
        hend = memchr(p, ']', (size_t)(pstart - p));
        if (hend == NULL || hend == p + 1) {
            snprintf(why, whylen, "has an invalid IPv6 address");
            return -1;
        }
        for (const char *q = p + 1; q < hend; q++)
            if (!(host_char(*q) || *q == ':')) {
                snprintf(why, whylen, "has an invalid IPv6 address");
                return -1;
            }
        hend++;
    } else {
        for (hend = p; hend < pstart && *hend != ':'; hend++)
            if (!host_char(*hend)) {
                snprintf(why, whylen, "has an invalid host");
                return -1;
            }
    }
    if (hend == p) {
        snprintf(why, whylen, "has no host");
        return -1;
    }
    u->port = u->https ? 443 : 80;
    if (hend < pstart) {
        unsigned long n = 0;
        const char *q = hend + 1;
        if (*hend != ':' || q == pstart) {
            snprintf(why, whylen, "has an invalid port");
            return -1;
        }
        for (; q < pstart; q++) {
            if (*q < '0' || *q > '9' || (n = n * 10 + (unsigned long)(*q - '0')) > 65535) {
                snprintf(why, whylen, "has an invalid port");
                return -1;
            }
        }
        if (n == 0) {
            snprintf(why, whylen, "has an invalid port");
            return -1;
        }
        u->port = (uint16_t)n;
    }
    size_t plen = strlen(pstart);
    while (plen > 0 && pstart[plen - 1] == '/')
        plen--;
    for (size_t i = 0; i < plen; i++) {
        unsigned char ch = (unsigned char)pstart[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            snprintf(why, whylen, "has an invalid character in its path");
            return -1;
        }
    }
    u->host = fg_config_xcalloc((size_t)(hend - p) + 1, 1);
    memcpy(u->host, p, (size_t)(hend - p));
    u->base = fg_config_xcalloc(plen + 1, 1);
    memcpy(u->base, pstart, plen);
    return 0;
}

static int resolve(fg_config_ctx_t *c, fg_destination_t *d)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char name[256], port[8];
    size_t hlen = strlen(d->host);

    if (d->host[0] == '[') {
        snprintf(name, sizeof(name), "%.*s", (int)(hlen - 2), d->host + 1);
        hints.ai_flags |= AI_NUMERICHOST;
    } else {
        snprintf(name, sizeof(name), "%s", d->host);
    }
    snprintf(port, sizeof(port), "%u", d->port);
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0)
        return fg_config_fail(c, "address", "cannot resolve \"%s\": %s", name, gai_strerror(rc));
    memcpy(&d->addr, res->ai_addr, res->ai_addrlen);
    d->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int check_url(fg_config_ctx_t *c, const char *key, const char *s, url_t *u)
{
    char why[96];
    if (parse_url(s, u, why, sizeof(why)) < 0)
        return fg_config_fail(c, key, "\"%s\" %s", s, why);
    return 0;
}

static int load_destination(fg_config_ctx_t *c, const json_t *o, fg_destination_t *d)
{
    static const char *const keys[] = {"id",      "address", "host", "health",
                                       "enabled", "weight",  NULL};
    long long weight = 1;
    url_t u;

    d->enabled = 1;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &d->id) < 0 ||
        fg_config_require_string(c, o, "address", &d->address) < 0 ||
        check_url(c, "address", d->address, &u) < 0)
        return -1;
    d->https = u.https;
    d->host = u.host;
    d->port = u.port;
    d->base_path = u.base;
    if (resolve(c, d) < 0 || fg_config_get_string(c, o, "host", 1, &d->host_override) < 0 ||
        fg_config_get_string(c, o, "health", 1, &d->health) < 0)
        return -1;
    if (d->host_override && !fg_config_is_field_value(d->host_override))
        return fg_config_fail(c, "host", "contains a control character");
    if (d->health) {
        if (check_url(c, "health", d->health, &u) < 0)
            return -1;
        url_clear(&u);
    }
    if (fg_config_get_bool(c, o, "enabled", &d->enabled) < 0 ||
        fg_config_get_int(c, o, "weight", 1, 1000, &weight) < 0)
        return -1;
    d->weight = (int)weight;
    return 0;
}

static int load_destinations(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    json_t *arr = NULL;

    if (fg_config_get_array(c, o, "destinations", &arr) < 0)
        return -1;
    if (arr == NULL || json_array_size(arr) == 0)
        return fg_config_fail(c, "destinations", "at least one destination is required");
    cl->ndestinations = json_array_size(arr);
    cl->destinations = fg_config_xcalloc(cl->ndestinations, sizeof(fg_destination_t));
    size_t mark = fg_config_push_key(c, "destinations");
    for (size_t i = 0; i < cl->ndestinations; i++) {
        fg_destination_t *d = &cl->destinations[i];
        size_t m = fg_config_push_index(c, i);
        if (load_destination(c, json_array_get(arr, i), d) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cl->destinations[j].id, d->id) == 0)
                return fg_config_fail(c, "id", "duplicate id \"%s\" (first at destinations[%zu])",
                                      d->id, j);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return 0;
}

static int load_cluster_http(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const http_keys[] = {"connectTimeout", "activityTimeout", NULL};
    static const char *const ka_keys[] = {"maxIdleConnections", "idleTimeout",
                                          "maxRequestsPerConnection", NULL};
    json_t *http = NULL, *ka = NULL;
    long long idle = cl->max_idle_connections, maxreq = cl->max_requests_per_connection;
    int rc = -1;

    if (fg_config_get_object(c, o, "httpRequest", http_keys, &http) < 0 ||
        fg_config_get_object(c, o, "keepAlive", ka_keys, &ka) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "httpRequest");
    if (fg_config_get_duration(c, http, "connectTimeout", &cl->connect_timeout_ms) < 0 ||
        fg_config_get_duration(c, http, "activityTimeout", &cl->activity_timeout_ms) < 0)
        goto out;
    if (cl->connect_timeout_ms == 0 || cl->activity_timeout_ms == 0) {
        fg_config_fail(c, cl->connect_timeout_ms == 0 ? "connectTimeout" : "activityTimeout",
                       "must be greater than 0");
        goto out;
    }
    fg_config_pop(c, mark);
    mark = fg_config_push_key(c, "keepAlive");
    if (fg_config_get_int(c, ka, "maxIdleConnections", 0, 100000, &idle) < 0 ||
        fg_config_get_duration(c, ka, "idleTimeout", &cl->idle_timeout_ms) < 0 ||
        fg_config_get_int(c, ka, "maxRequestsPerConnection", 0, UINT32_MAX, &maxreq) < 0)
        goto out;
    cl->max_idle_connections = (unsigned)idle;
    cl->max_requests_per_connection = (unsigned)maxreq;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_cluster(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const keys[] = {"id",          "loadBalancingPolicy", "destinations",
                                       "httpRequest", "keepAlive",           NULL};
    static const char *const policies[] = {
        "PowerOfTwoChoices", "RoundRobin", "LeastRequests", "Random", "FirstAlphabetical", NULL};

    cl->lb_policy = FG_LB_POWER_OF_TWO;
    cl->connect_timeout_ms = 5 * 1000;
    cl->activity_timeout_ms = 100 * 1000;
    cl->max_idle_connections = 64;
    cl->idle_timeout_ms = 60 * 1000;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &cl->id) < 0 ||
        fg_config_get_enum(c, o, "loadBalancingPolicy", policies, &cl->lb_policy) < 0 ||
        load_destinations(c, o, cl) < 0 || load_cluster_http(c, o, cl) < 0)
        return -1;
    return 0;
}

int fg_config_load_clusters(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    json_t *arr = NULL;

    int rc = fg_config_get_array(c, root, "clusters", &arr);
    if (rc <= 0)
        return rc;
    cfg->nclusters = json_array_size(arr);
    cfg->clusters = fg_config_xcalloc(cfg->nclusters, sizeof(fg_cluster_t));
    size_t mark = fg_config_push_key(c, "clusters");
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *cl = &cfg->clusters[i];
        size_t m = fg_config_push_index(c, i);
        if (load_cluster(c, json_array_get(arr, i), cl) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->clusters[j].id, cl->id) == 0)
                return fg_config_fail(c, "id", "duplicate id \"%s\" (first at clusters[%zu])",
                                      cl->id, j);
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return 0;
}

void fg_config_free_clusters(fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *cl = &cfg->clusters[i];
        for (size_t j = 0; j < cl->ndestinations; j++) {
            fg_destination_t *d = &cl->destinations[j];
            free(d->id);
            free(d->address);
            free(d->host);
            free(d->base_path);
            free(d->host_override);
            free(d->health);
        }
        free(cl->destinations);
        free(cl->id);
    }
    free(cfg->clusters);
    cfg->clusters = NULL;
    cfg->nclusters = 0;
}
