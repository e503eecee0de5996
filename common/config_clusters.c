/* Configuration loader, part 3: clusters and their destinations (YARP's "Clusters" section).
 * Destination addresses are parsed as http(s) URLs and resolved once here, at load, so a
 * worker never waits on DNS. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/hash.h"
#include "common/tunnel_proto.h"
#include "common/xxhash.h"

typedef struct {
    int https;
    int tcp;    /* tcp://HOST:PORT: a port, no path */
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
static int parse_url(const char *s, url_t *u, int tcp_ok, char *why, size_t whylen)
{
    const char *p, *hend, *pstart;

    memset(u, 0, sizeof(*u));
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        p = s + 8;
        u->https = 1;
    } else if (tcp_ok && strncasecmp(s, "tcp://", 6) == 0) {
        p = s + 6;
        u->tcp = 1;
    } else {
        snprintf(why, whylen,
                 tcp_ok ? "is not an http, https or tcp URL" : "is not an http or https URL");
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
    if (u->tcp && (hend == pstart || *pstart != '\0')) {
        snprintf(why, whylen, "is not tcp://HOST:PORT");
        return -1;
    }
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

static int check_url(fg_config_ctx_t *c, const char *key, const char *s, url_t *u);

static int resolve_to(fg_config_ctx_t *c, const char *key, const char *host, uint16_t p,
                      struct sockaddr_storage *ss, socklen_t *sslen)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char name[256], port[8];
    size_t hlen = strlen(host);

    if (host[0] == '[') {
        snprintf(name, sizeof(name), "%.*s", (int)(hlen - 2), host + 1);
        hints.ai_flags |= AI_NUMERICHOST;
    } else {
        snprintf(name, sizeof(name), "%s", host);
    }
    snprintf(port, sizeof(port), "%u", p);
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0)
        return fg_config_fail(c, key, "cannot resolve \"%s\": %s", name, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int resolve(fg_config_ctx_t *c, fg_destination_t *d)
{
    return resolve_to(c, "address", d->host, d->port, &d->addr, &d->addrlen);
}

/* The probe target: `health` when given, else the destination's own address; resolved here
 * like the address, so a probe never waits on DNS either. */
static int load_health_address(fg_config_ctx_t *c, fg_destination_t *d)
{
    url_t u;
    char auth[300];
    if (d->health == NULL) {
        d->health_addr = d->addr;
        d->health_addrlen = d->addrlen;
        snprintf(auth, sizeof(auth), "%s:%u", d->host, (unsigned)d->port);
        d->health_authority = fg_config_xstrdup(auth);
        d->health_base = fg_config_xstrdup(d->base_path);
        d->health_https = d->https;
        return 0;
    }
    if (check_url(c, "health", d->health, &u) < 0)
        return -1;
    d->health_https = u.https;
    int rc = resolve_to(c, "health", u.host, u.port, &d->health_addr, &d->health_addrlen);
    snprintf(auth, sizeof(auth), "%s:%u", u.host, (unsigned)u.port);
    d->health_authority = fg_config_xstrdup(auth);
    d->health_base = u.base;
    u.base = NULL;
    url_clear(&u);
    return rc;
}

static int check_url(fg_config_ctx_t *c, const char *key, const char *s, url_t *u)
{
    char why[96];
    if (parse_url(s, u, strcmp(key, "address") == 0, why, sizeof(why)) < 0)
        return fg_config_fail(c, key, "\"%s\" %s", s, why);
    return 0;
}

/* One UTF-8 sequence of s at *i as a code point (U+FFFD for a malformed one), *i advanced. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned char c = s[(*i)++];
    int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (c < 0x80)
        return c;
    uint32_t cp = c & (0x3F >> more);
    if (c < 0xC0 || c > 0xF7)
        return 0xFFFD;
    for (int k = 0; k < more; k++) {
        if (*i >= n || (s[*i] & 0xC0) != 0x80)
            return 0xFFFD;
        cp = cp << 6 | (s[(*i)++] & 0x3F);
    }
    return cp;
}

void fg_config_destination_hash(fg_destination_t *d)
{
    d->id_hash = fg_hash_fnv1a(FG_HASH_FNV_BASIS, d->id, strlen(d->id));
    /* YARP's HashCookie value: XXH64 (seed 0) of the id upper-cased and encoded UTF-16LE,
     * written as 16 lower-case hex digits of the big-endian hash. Only ASCII letters are
     * upper-cased here (YARP applies the invariant culture to every letter). */
    const unsigned char *s = (const unsigned char *)d->id;
    size_t n = strlen(d->id), w = 0;
    unsigned char stackbuf[256] = {0}, *buf = n * 4 <= sizeof(stackbuf) ? stackbuf : calloc(n, 4);
    if (buf == NULL)
        abort(); /* load time: out of memory ends start-up */
    for (size_t i = 0; i < n;) {
        uint32_t cp = utf8_next(s, n, &i);
        if (cp >= 'a' && cp <= 'z')
            cp -= 32;
        if (cp >= 0x10000) { /* a surrogate pair */
            uint32_t v = cp - 0x10000, hi = 0xD800 | v >> 10, lo = 0xDC00 | (v & 0x3FF);
            buf[w++] = (unsigned char)hi;
            buf[w++] = (unsigned char)(hi >> 8);
            cp = lo;
        }
        buf[w++] = (unsigned char)cp;
        buf[w++] = (unsigned char)(cp >> 8);
    }
    uint64_t h = fg_xxh64(buf, w, 0);
    if (buf != stackbuf)
        free(buf);
    snprintf(d->id_hash_hex, sizeof(d->id_hash_hex), "%016llx", (unsigned long long)h);
}

/* "httpVersion": "1.1" or "2" (YARP's HttpRequest.Version); *v stays as it was when absent. */
static int load_http_version(fg_config_ctx_t *c, const json_t *o, int *v)
{
    static const char *const names[] = {"1.1", "2", "2.0", NULL};
    int i = -1;
    if (fg_config_get_enum(c, o, "httpVersion", names, &i) < 0)
        return -1;
    if (i >= 0)
        *v = i == 0 ? FG_HTTP_V11 : FG_HTTP_V2;
    return 0;
}

/* "tunnel://AGENT/SERVICE" (docs/tunnels.md): AGENT one of tunnels.agents, SERVICE a name the
 * agent maps to a local address. No socket address: the agent's tunnel carries the requests,
 * and active probes skip the destination (its agent's presence is its health). */
static int load_tunnel_address(fg_config_ctx_t *c, fg_destination_t *d)
{
    const char *agent = d->address + 9, *slash = strchr(agent, '/');
    if (!c->cfg->tunnels.enabled)
        return fg_config_fail(c, "address", "\"%s\" needs a top-level \"tunnels\" section",
                              d->address);
    if (slash == NULL || slash[1] == '\0' || strchr(slash + 1, '/') != NULL ||
        !fg_config_is_token(slash + 1) || strlen(slash + 1) > 64)
        return fg_config_fail(c, "address", "\"%s\" is not tunnel://AGENT/SERVICE", d->address);
    d->tunnel_agent = fg_config_tunnel_agent(c->cfg, agent, (size_t)(slash - agent));
    if (d->tunnel_agent < 0)
        return fg_config_fail(c, "address", "\"%s\": no agent \"%.*s\" in tunnels.agents",
                              d->address, (int)(slash - agent), agent);
    d->tunnel = 1;
    d->tunnel_service = fg_config_xstrdup(slash + 1);
    d->host = fg_config_xstrdup(FG_TUNNEL_DEFAULT_AUTHORITY); /* the agent fills it in */
    d->base_path = fg_config_xstrdup("");
    d->health_authority = fg_config_xstrdup(d->host);
    d->health_base = fg_config_xstrdup("");
    return 0;
}

static int load_destination(fg_config_ctx_t *c, const json_t *o, fg_destination_t *d)
{
    static const char *const keys[] = {"id",      "address", "host",        "health",
                                       "enabled", "weight",  "httpVersion", NULL};
    long long weight = 1;
    url_t u;

    d->enabled = 1;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &d->id) < 0 ||
        fg_config_require_string(c, o, "address", &d->address) < 0)
        return -1;
    if (strncmp(d->address, "tunnel://", 9) == 0) {
        if (load_tunnel_address(c, d) < 0)
            return -1;
    } else {
        if (check_url(c, "address", d->address, &u) < 0)
            return -1;
        d->https = u.https;
        d->tcp = u.tcp;
        d->host = u.host;
        d->port = u.port;
        d->base_path = u.base;
        if (resolve(c, d) < 0)
            return -1;
    }
    if (fg_config_get_string(c, o, "host", 1, &d->host_override) < 0 ||
        fg_config_get_string(c, o, "health", 1, &d->health) < 0)
        return -1;
    if (d->host_override && !fg_config_is_field_value(d->host_override))
        return fg_config_fail(c, "host", "contains a control character");
    if (d->tunnel && d->host_override &&
        fg_tunnel_names_placeholder(d->host_override, strlen(d->host_override)))
        return fg_config_fail(c, "host",
                              "\"%s\" is the tunnels' reserved placeholder; leave \"host\" out "
                              "and the agent gives the service its own authority",
                              d->host_override);
    if (strlen(d->id) > 63)
        return fg_config_fail(c, "id", "longer than 63 bytes");
    fg_config_destination_hash(d);
    if (d->tunnel && d->health)
        return fg_config_fail(c, "health", "a tunnel destination has no health address");
    if (d->tcp && (d->health || d->host_override))
        return fg_config_fail(c, d->health ? "health" : "host",
                              "a tcp:// destination speaks no HTTP: no %s",
                              d->health ? "health address" : "Host to send");
    if (!d->tunnel && load_health_address(c, d) < 0)
        return -1;
    if (fg_config_get_bool(c, o, "enabled", &d->enabled) < 0 ||
        fg_config_get_int(c, o, "weight", 1, 1000, &weight) < 0)
        return -1;
    d->weight = (int)weight;
    return load_http_version(c, o, &d->http_version);
}

static int load_destination_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_destination(c, o, out);
}

static int load_destinations(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    void *items;
    int rc = fg_config_load_list(c, o, "destinations", sizeof(fg_destination_t),
                                 offsetof(fg_destination_t, id), load_destination_item, &items,
                                 &cl->ndestinations);
    cl->destinations = items;
    if (rc == 0 && cl->ndestinations == 0)
        return fg_config_fail(c, "destinations", "at least one destination is required");
    return rc;
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

/* healthCheck.active: YARP's defaults (15 s interval, 10 s timeout, 2 consecutive failures). */
static int load_active(fg_config_ctx_t *c, const json_t *hc, fg_health_config_t *h)
{
    static const char *const keys[] = {"enabled", "interval",  "timeout",        "path",
                                       "query",   "threshold", "expectedStatus", NULL};
    json_t *o = NULL;
    long long thr = h->threshold, st = 0;
    if (fg_config_get_object(c, hc, "active", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "active");
    int rc = -1;
    h->active = 1;
    if (fg_config_get_bool(c, o, "enabled", &h->active) < 0 ||
        fg_config_get_duration(c, o, "interval", &h->interval_ms) < 0 ||
        fg_config_get_duration(c, o, "timeout", &h->timeout_ms) < 0 ||
        fg_config_get_string(c, o, "path", 1, &h->path) < 0 ||
        fg_config_get_string(c, o, "query", 1, &h->query) < 0 ||
        fg_config_get_int(c, o, "threshold", 1, 1000, &thr) < 0 ||
        fg_config_get_int(c, o, "expectedStatus", 100, 599, &st) < 0)
        goto out;
    if (h->interval_ms == 0 || h->timeout_ms == 0) {
        fg_config_fail(c, h->interval_ms == 0 ? "interval" : "timeout", "must be greater than 0");
        goto out;
    }
    if (h->path[0] != '/' || !fg_config_is_field_value(h->path) || strchr(h->path, ' ')) {
        fg_config_fail(c, "path", "\"%s\" must start with \"/\" and contain no space", h->path);
        goto out;
    }
    if (h->query && (!fg_config_is_field_value(h->query) || strchr(h->query, ' '))) {
        fg_config_fail(c, "query", "contains a space or a control character");
        goto out;
    }
    if (h->query && h->query[0] == '?')
        memmove(h->query, h->query + 1, strlen(h->query));
    h->threshold = (unsigned)thr;
    h->expected_status = (int)st;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* healthCheck.passive: transport failures over a window (YARP's TransportFailureRate) or in a
 * row; then unhealthy for reactivationPeriod. */
static int load_passive(fg_config_ctx_t *c, const json_t *hc, fg_health_config_t *h)
{
    static const char *const keys[] = {"enabled",
                                       "window",
                                       "minimumRequests",
                                       "failureRate",
                                       "consecutiveFailures",
                                       "reactivationPeriod",
                                       NULL};
    json_t *o = NULL;
    long long minreq = h->min_requests, cons = h->consecutive;
    if (fg_config_get_object(c, hc, "passive", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "passive");
    int rc = -1;
    h->passive = 1;
    if (fg_config_get_bool(c, o, "enabled", &h->passive) < 0 ||
        fg_config_get_duration(c, o, "window", &h->window_ms) < 0 ||
        fg_config_get_int(c, o, "minimumRequests", 1, 1000000, &minreq) < 0 ||
        fg_config_get_int(c, o, "consecutiveFailures", 0, 1000000, &cons) < 0 ||
        fg_config_get_duration(c, o, "reactivationPeriod", &h->reactivation_ms) < 0)
        goto out;
    json_t *fr = json_object_get(o, "failureRate");
    if (fr && (!json_is_number(fr) || json_number_value(fr) <= 0 || json_number_value(fr) > 1)) {
        fg_config_fail(c, "failureRate", "expected a number in (0, 1]");
        goto out;
    }
    if (fr)
        h->failure_rate = json_number_value(fr);
    if (h->window_ms == 0 || h->reactivation_ms == 0) {
        fg_config_fail(c, h->window_ms == 0 ? "window" : "reactivationPeriod",
                       "must be greater than 0");
        goto out;
    }
    h->min_requests = (unsigned)minreq;
    h->consecutive = (unsigned)cons;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_health(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const keys[] = {"active", "passive", "availability", NULL};
    static const char *const avail[] = {"HealthyOrPanic", "HealthyAndUnknown", NULL};
    fg_health_config_t *h = &cl->health;
    json_t *hc = NULL;

    h->interval_ms = 15 * 1000;
    h->timeout_ms = 10 * 1000;
    h->path = fg_config_xstrdup("/");
    h->threshold = 2;
    h->window_ms = 60 * 1000;
    h->min_requests = 10;
    h->failure_rate = 0.3;
    h->consecutive = 5;
    h->reactivation_ms = 60 * 1000;
    if (fg_config_get_object(c, o, "healthCheck", keys, &hc) < 0)
        return -1;
    if (hc == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "healthCheck");
    int rc = -1;
    if (load_active(c, hc, h) == 0 && load_passive(c, hc, h) == 0 &&
        fg_config_get_enum(c, hc, "availability", avail, &h->availability) >= 0)
        rc = 0;
    fg_config_pop(c, mark);
    return rc;
}

static int load_cookie(fg_config_ctx_t *c, const json_t *sa, fg_affinity_config_t *a)
{
    static const char *const keys[] = {"path",     "domain", "httpOnly", "secure",
                                       "sameSite", "maxAge", NULL};
    static const char *const same[] = {"Unspecified", "Lax", "Strict", "None", NULL};
    json_t *o = NULL;
    uint64_t age = 0;
    if (fg_config_get_object(c, sa, "cookie", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "cookie");
    int rc = -1;
    if (fg_config_get_string(c, o, "path", 1, &a->cookie_path) < 0 ||
        fg_config_get_string(c, o, "domain", 1, &a->cookie_domain) < 0 ||
        fg_config_get_bool(c, o, "httpOnly", &a->cookie_http_only) < 0 ||
        fg_config_get_bool(c, o, "secure", &a->cookie_secure) < 0 ||
        fg_config_get_enum(c, o, "sameSite", same, &a->cookie_same_site) < 0)
        goto out;
    int has_age = fg_config_get_duration(c, o, "maxAge", &age);
    if (has_age < 0)
        goto out;
    if (has_age)
        a->cookie_max_age = (int64_t)(age / 1000);
    if ((a->cookie_path &&
         (!fg_config_is_field_value(a->cookie_path) || strpbrk(a->cookie_path, ";, "))) ||
        (a->cookie_domain &&
         (!fg_config_is_field_value(a->cookie_domain) || strpbrk(a->cookie_domain, ";, ")))) {
        fg_config_fail(c, NULL, "path and domain must not contain ';', ',' or spaces");
        goto out;
    }
    if (a->cookie_same_site == FG_SAMESITE_NONE && !a->cookie_secure) {
        /* Browsers drop SameSite=None cookies without Secure. */
        fg_config_fail(c, "sameSite", "None requires secure: true");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* sessionAffinity: YARP's policies plus FastGateway's key derivation (keySource "tenant"). */
static int load_affinity(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const keys[] = {
        "enabled", "policy", "failurePolicy", "affinityKeyName", "keySource", "cookie", NULL};
    static const char *const policies[] = {"HashCookie", "Cookie", "CustomHeader", NULL};
    static const char *const failures[] = {"Redistribute", "Return503Error", NULL};
    static const char *const sources[] = {"request", "tenant", NULL};
    fg_affinity_config_t *a = &cl->affinity;
    json_t *sa = NULL;

    a->cookie_http_only = 1;
    a->cookie_max_age = -1;
    if (fg_config_get_object(c, o, "sessionAffinity", keys, &sa) < 0)
        return -1;
    if (sa == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "sessionAffinity");
    int rc = -1;
    a->enabled = 1;
    /* FastGateway's "Header" is YARP's CustomHeader. */
    json_t *pv = json_object_get(sa, "policy");
    if (json_is_string(pv) && strcmp(json_string_value(pv), "Header") == 0)
        a->policy = FG_AFF_CUSTOM_HEADER;
    else if (fg_config_get_enum(c, sa, "policy", policies, &a->policy) < 0)
        goto out;
    if (fg_config_get_bool(c, sa, "enabled", &a->enabled) < 0 ||
        fg_config_get_enum(c, sa, "failurePolicy", failures, &a->failure_policy) < 0 ||
        fg_config_get_string(c, sa, "affinityKeyName", 1, &a->key_name) < 0 ||
        fg_config_get_enum(c, sa, "keySource", sources, &a->key_source) < 0 ||
        load_cookie(c, sa, a) < 0)
        goto out;
    if (a->key_name == NULL)
        a->key_name = fg_config_xstrdup(a->policy == FG_AFF_CUSTOM_HEADER || a->key_source
                                            ? "X-Session-Key"
                                            : ".FastGateway.Affinity");
    if (!fg_config_is_token(a->key_name)) {
        fg_config_fail(c, "affinityKeyName", "\"%s\" is not a valid name", a->key_name);
        goto out;
    }
    if (a->key_source == FG_AFF_KEY_TENANT && a->policy != FG_AFF_CUSTOM_HEADER) {
        fg_config_fail(c, "keySource", "\"tenant\" needs policy CustomHeader");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* failover: FastGateway's request failover, 150 ms per connect and 500 ms in all. */
static int load_failover(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const keys[] = {"enabled", "connectTimeout", "budget", "allowNonIdempotent",
                                       NULL};
    fg_failover_config_t *f = &cl->failover;
    json_t *fo = NULL;
    f->connect_timeout_ms = 150;
    f->budget_ms = 500;
    if (fg_config_get_object(c, o, "failover", keys, &fo) < 0)
        return -1;
    if (fo == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "failover");
    int rc = -1;
    f->enabled = 1;
    if (fg_config_get_bool(c, fo, "enabled", &f->enabled) == -1 ||
        fg_config_get_duration(c, fo, "connectTimeout", &f->connect_timeout_ms) < 0 ||
        fg_config_get_duration(c, fo, "budget", &f->budget_ms) < 0 ||
        fg_config_get_bool(c, fo, "allowNonIdempotent", &f->allow_non_idempotent) < 0)
        goto out;
    if (f->connect_timeout_ms == 0 || f->budget_ms < f->connect_timeout_ms) {
        fg_config_fail(c, f->connect_timeout_ms == 0 ? "connectTimeout" : "budget",
                       f->connect_timeout_ms == 0 ? "must be greater than 0"
                                                  : "must be at least connectTimeout");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_cluster(fg_config_ctx_t *c, const json_t *o, fg_cluster_t *cl)
{
    static const char *const keys[] = {
        "id",         "loadBalancingPolicy", "destinations",    "httpRequest",
        "keepAlive",  "healthCheck",         "sessionAffinity", "failover",
        "httpClient", "httpVersion",         "versionPolicy",   NULL};
    static const char *const vpolicies[] = {"RequestVersionOrLower", "RequestVersionExact", NULL};
    static const char *const policies[] = {
        "PowerOfTwoChoices", "RoundRobin", "LeastRequests", "Random", "FirstAlphabetical", NULL};

    cl->lb_policy = FG_LB_POWER_OF_TWO;
    cl->connect_timeout_ms = 5 * 1000;
    cl->activity_timeout_ms = 100 * 1000;
    cl->max_idle_connections = 512;
    cl->idle_timeout_ms = 60 * 1000;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &cl->id) < 0 ||
        fg_config_get_enum(c, o, "loadBalancingPolicy", policies, &cl->lb_policy) < 0 ||
        load_destinations(c, o, cl) < 0 || load_cluster_http(c, o, cl) < 0 ||
        load_health(c, o, cl) < 0 || load_affinity(c, o, cl) < 0 || load_failover(c, o, cl) < 0 ||
        fg_config_load_http_client(c, o, cl) < 0)
        return -1;
    cl->http_version = FG_HTTP_V11;
    if (load_http_version(c, o, &cl->http_version) < 0 ||
        fg_config_get_enum(c, o, "versionPolicy", vpolicies, &cl->version_policy) < 0)
        return -1;
    for (size_t i = 0; i < cl->ndestinations; i++)
        if (cl->destinations[i].http_version == 0)
            cl->destinations[i].http_version = cl->http_version;
    if (strlen(cl->id) > 63)
        return fg_config_fail(c, "id", "longer than 63 bytes");
    if (cl->ndestinations > 256)
        return fg_config_fail(c, "destinations", "more than 256 destinations");
    return 0;
}

static int load_cluster_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_cluster(c, o, out);
}

int fg_config_load_clusters(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    void *items;
    int rc =
        fg_config_load_list(c, root, "clusters", sizeof(fg_cluster_t), offsetof(fg_cluster_t, id),
                            load_cluster_item, &items, &cfg->nclusters);
    cfg->clusters = items;
    return rc;
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
            free(d->health_authority);
            free(d->health_base);
            free(d->tunnel_service);
        }
        free(cl->destinations);
        free(cl->health.path);
        free(cl->health.query);
        free(cl->affinity.key_name);
        free(cl->affinity.cookie_path);
        free(cl->affinity.cookie_domain);
        free(cl->id);
    }
    free(cfg->clusters);
    cfg->clusters = NULL;
    cfg->nclusters = 0;
}
