/* FastGateway's config.json (servers, domainNames, certificates, accessControls, rateLimits,
 * settings; camelCase, keys ignoring case) converted into ours: docs/import.md lists every key
 * and what it becomes. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "master/import_impl.h"

static void put_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, json_string(v));
}

/* The server settings that shape the routes and clusters generated for its domain names. */
typedef struct {
    const char *id;
    long long timeout; /* seconds */
    int copy_host, failover;
} server_info_t;

typedef struct {
    server_info_t *servers;
    size_t nservers;
    json_t *blacklists, *whitelists; /* ids of enabled lists of each kind */
} state_t;

static const server_info_t *find_server(const state_t *st, const char *id)
{
    for (size_t i = 0; i < st->nservers; i++)
        if (strcmp(st->servers[i].id, id) == 0)
            return &st->servers[i];
    return NULL;
}

/* ---- accessControls ---- */

static int convert_list(fg_import_t *im, const json_t *l, json_t *out, state_t *st)
{
    static const char *const keys[] = {"id",     "name",        "description", "ips",
                                       "enable", "isBlacklist", NULL};
    const char *id = NULL, *name = NULL;
    int enable = 1, black = 0, has;
    json_t *ips;
    if (fg_import_want_object(im, l, NULL) < 0 || fg_import_check_keys(im, l, keys) < 0 ||
        fg_import_string(im, l, "id", &id) < 0 || fg_import_string(im, l, "name", &name) < 0 ||
        fg_import_bool(im, l, "enable", &enable, &has) < 0 ||
        fg_import_bool(im, l, "isBlacklist", &black, &has) < 0 ||
        fg_import_string_list(im, l, "ips", &ips) < 0)
        return -1;
    if (id == NULL)
        return json_decref(ips), fg_import_fail(im, NULL, "missing \"id\"");
    json_t *o = json_object();
    put_str(o, "id", id);
    if (name)
        put_str(o, "name", name);
    json_object_set_new(o, "enabled", json_boolean(enable));
    put_str(o, "type", black ? "blacklist" : "whitelist");
    json_object_set_new(o, "entries", ips ? ips : json_array());
    json_array_append_new(out, o);
    if (enable)
        json_array_append_new(black ? st->blacklists : st->whitelists, json_string(id));
    return 0;
}

/* ---- rateLimits ---- */

static int convert_rate(fg_import_t *im, const json_t *r, json_t *out, json_t *attach)
{
    static const char *const keys[] = {"id",        "name",        "enable",
                                       "type",      "scope",       "pathPattern",
                                       "ipPattern", "maxRequests", "windowSizeSeconds",
                                       NULL};
    static const char *const types[] = {"SlidingWindow", "FixedWindow", "TokenBucket", NULL};
    static const char *const scopes[] = {"Global", "PerIp", NULL};
    const char *id = NULL, *name = NULL, *type = "SlidingWindow", *scope = "Global", *pp = NULL,
               *ip = NULL;
    int enable = 1, has;
    long long max = 0, win = 0;
    int has_max, has_win;
    if (fg_import_want_object(im, r, NULL) < 0 || fg_import_check_keys(im, r, keys) < 0 ||
        fg_import_string(im, r, "id", &id) < 0 || fg_import_string(im, r, "name", &name) < 0 ||
        fg_import_bool(im, r, "enable", &enable, &has) < 0 ||
        fg_import_enum(im, r, "type", types, &type) < 0 ||
        fg_import_enum(im, r, "scope", scopes, &scope) < 0 ||
        fg_import_string(im, r, "pathPattern", &pp) < 0 ||
        fg_import_string(im, r, "ipPattern", &ip) < 0 ||
        fg_import_int(im, r, "maxRequests", &max, &has_max) < 0 ||
        fg_import_int(im, r, "windowSizeSeconds", &win, &has_win) < 0)
        return -1;
    if (id == NULL)
        return fg_import_fail(im, NULL, "missing \"id\"");
    if (!has_max || !has_win)
        return fg_import_fail(im, NULL, "missing \"%s\"",
                              has_max ? "windowSizeSeconds" : "maxRequests");
    if (win < 1)
        return fg_import_fail(im, "windowSizeSeconds", "expected an integer >= 1");
    json_t *o = json_object();
    put_str(o, "id", id);
    if (name)
        put_str(o, "name", name);
    json_object_set_new(o, "enabled", json_boolean(enable));
    /* FastGateway's TokenBucket counts a fixed window: converted as what it does. */
    if (strcmp(type, "TokenBucket") == 0)
        fg_import_note(im, "type",
                       "FastGateway's TokenBucket counts per fixed window: converted "
                       "to FixedWindow, which is what it did");
    put_str(o, "type", strcmp(type, "TokenBucket") == 0 ? "FixedWindow" : type);
    put_str(o, "scope", scope);
    json_object_set_new(o, "maxRequests", json_integer(max));
    char w[32];
    fg_import_duration((unsigned long long)win * 1000, w, sizeof(w));
    put_str(o, "window", w);
    if (pp && *pp)
        put_str(o, "pathPattern", pp);
    if (ip && *ip)
        put_str(o, "ipPattern", ip);
    json_array_append_new(out, o);
    json_array_append_new(attach, json_string(id));
    return 0;
}

/* ---- certificates ---- */

static int convert_cert(fg_import_t *im, const json_t *c, json_t *out)
{
    static const char *const keys[] = {"id",         "domain",    "domains",   "chain",
                                       "key",        "certs",     "autoRenew", "isActive",
                                       "expired",    "issuer",    "email",     "renewTime",
                                       "renewStats", "notBefore", "notAfter",  NULL};
    const char *id = NULL, *chain = NULL, *key = NULL;
    int active = 1, has, renew = 0, has_renew;
    json_t *names = NULL, *one = NULL;
    if (fg_import_want_object(im, c, NULL) < 0 || fg_import_check_keys(im, c, keys) < 0 ||
        fg_import_string(im, c, "id", &id) < 0 || fg_import_string(im, c, "chain", &chain) < 0 ||
        fg_import_string(im, c, "key", &key) < 0 ||
        fg_import_bool(im, c, "isActive", &active, &has) < 0 ||
        fg_import_bool(im, c, "autoRenew", &renew, &has_renew) < 0 ||
        fg_import_string_list(im, c, "domains", &names) < 0 ||
        fg_import_string_list(im, c, "domain", &one) < 0)
        goto fail;
    if (id == NULL) {
        fg_import_fail(im, NULL, "missing \"id\"");
        goto fail;
    }
    if (!active) {
        fg_import_note(im, NULL, "inactive certificate: not converted");
        goto skip;
    }
    if (chain == NULL || key == NULL) {
        fg_import_fail(im, fg_import_get(c, "certs") ? "certs" : NULL,
                       "FastGateway keeps certificates as PKCS#12 files: convert them to PEM "
                       "(openssl pkcs12 -in F.pfx -nokeys -out chain.pem; -nocerts -nodes -out "
                       "key.pem) and give \"chain\" and \"key\" here");
        goto fail;
    }
    if (renew)
        fg_import_note(im, "autoRenew",
                       "ACME renewal is not done by the gateway: renew the files "
                       "with an ACME client and reload");
    json_t *o = json_object();
    put_str(o, "id", id);
    put_str(o, "chain", chain);
    put_str(o, "key", key);
    if (one != NULL)
        json_array_extend(names ? names : (names = json_array()), one);
    if (names != NULL && json_array_size(names) > 0)
        json_object_set(o, "names", names);
    json_array_append_new(out, o);
skip:
    json_decref(names);
    json_decref(one);
    return 0;
fail:
    json_decref(names);
    json_decref(one);
    return -1;
}

/* ---- servers ---- */

static int server_tls(fg_import_t *im, json_t *s, const json_t *certs)
{
    if (json_array_size(certs) == 0)
        return fg_import_fail(im, "isHttps", "an https server needs certificates (none active)");
    json_t *tls = json_object(), *ids = json_array(), *c;
    size_t i;
    json_array_foreach(certs, i, c)
    {
        json_array_append(ids, json_object_get(c, "id"));
    }
    json_object_set_new(tls, "certificates", ids);
    /* FastGateway's SNI falls back to a default certificate: the first one here. */
    json_object_set(tls, "default", json_object_get(json_array_get(certs, 0), "id"));
    json_object_set_new(s, "tls", tls);
    return 0;
}

static int convert_server(fg_import_t *im, const json_t *in, json_t *out, const json_t *certs,
                          state_t *st, json_t *routes)
{
    static const char *const keys[] = {"id",
                                       "listen",
                                       "name",
                                       "description",
                                       "enable",
                                       "isHttps",
                                       "redirectHttps",
                                       "staticCompress",
                                       "enableTunnel",
                                       "enableBlacklist",
                                       "enableWhitelist",
                                       "clientIpSource",
                                       "trustedProxies",
                                       "copyRequestHost",
                                       "maxRequestBodySize",
                                       "timeout",
                                       "enableRequestFailover",
                                       NULL};
    static const char *const sources[] = {"socket", "X-Forwarded-For", "X-Real-IP",
                                          "CF-Connecting-IP", NULL};
    const char *id = NULL, *name = NULL, *src = NULL;
    long long port = 0, body = 0, timeout = 900;
    int has_port, has_body, has, enable = 1, https = 0, redirect = 0, compress = 0, tunnel = 0,
                                 black = 0, white = 0, copy = 0, failover = 0;
    json_t *trusted = NULL;
    if (fg_import_want_object(im, in, NULL) < 0 || fg_import_check_keys(im, in, keys) < 0 ||
        fg_import_string(im, in, "id", &id) < 0 || fg_import_string(im, in, "name", &name) < 0 ||
        fg_import_int(im, in, "listen", &port, &has_port) < 0 ||
        fg_import_bool(im, in, "enable", &enable, &has) < 0 ||
        fg_import_bool(im, in, "isHttps", &https, &has) < 0 ||
        fg_import_bool(im, in, "redirectHttps", &redirect, &has) < 0 ||
        fg_import_bool(im, in, "staticCompress", &compress, &has) < 0 ||
        fg_import_bool(im, in, "enableTunnel", &tunnel, &has) < 0 ||
        fg_import_bool(im, in, "enableBlacklist", &black, &has) < 0 ||
        fg_import_bool(im, in, "enableWhitelist", &white, &has) < 0 ||
        fg_import_bool(im, in, "copyRequestHost", &copy, &has) < 0 ||
        fg_import_bool(im, in, "enableRequestFailover", &failover, &has) < 0 ||
        fg_import_int(im, in, "maxRequestBodySize", &body, &has_body) < 0 ||
        fg_import_int(im, in, "timeout", &timeout, &has) < 0 ||
        fg_import_enum(im, in, "clientIpSource", sources, &src) < 0 ||
        fg_import_string_list(im, in, "trustedProxies", &trusted) < 0)
        return -1;
    if (id == NULL || !has_port)
        return json_decref(trusted),
               fg_import_fail(im, NULL, "missing \"%s\"", id ? "listen" : "id");
    if (port < 1 || port > 65535)
        return json_decref(trusted), fg_import_fail(im, "listen", "expected a port 1..65535");
    if (tunnel)
        return json_decref(trusted),
               fg_import_fail(im, "enableTunnel", "tunnels have no equivalent");
    if (timeout < 1)
        return json_decref(trusted), fg_import_fail(im, "timeout", "expected seconds >= 1");
    json_t *s = json_object();
    json_array_append_new(out, s);
    char listen[32];
    snprintf(listen, sizeof(listen), "*:%lld", port);
    put_str(s, "id", id);
    if (name)
        put_str(s, "name", name);
    put_str(s, "listen", listen);
    json_object_set_new(s, "enabled", json_boolean(enable));
    if (has_body && body != 0) { /* FastGateway: 0 or absent = Kestrel's default */
        json_t *lim = json_object();
        json_object_set_new(lim, "maxRequestBodySize",
                            body < 0 ? json_string("unlimited") : json_integer(body));
        json_object_set_new(s, "limits", lim);
    }
    if (src != NULL && strcmp(src, "socket") != 0) {
        if (trusted == NULL || json_array_size(trusted) == 0)
            return json_decref(trusted),
                   fg_import_fail(im, "clientIpSource",
                                  "\"%s\" is believed only from trusted proxies: add "
                                  "\"trustedProxies\": [addresses or CIDRs] to this server "
                                  "(FastGateway believed anyone, so clients could choose their "
                                  "address)",
                                  src);
        put_str(s, "clientIpSource", src);
        json_object_set_new(s, "trustedProxies", trusted);
    } else {
        json_decref(trusted);
    }
    json_t *acl = json_array();
    if (black)
        json_array_extend(acl, st->blacklists);
    if (white)
        json_array_extend(acl, st->whitelists);
    if (json_array_size(acl) > 0)
        json_object_set_new(s, "accessControl", acl);
    else
        json_decref(acl);
    if (https && server_tls(im, s, certs) < 0)
        return -1;
    if (compress)
        fg_import_note(im, "staticCompress", "static files are sent uncompressed");
    if (redirect && !https) {
        /* FastGateway answers 307 (method and body kept) to the same host and path. */
        char rid[300];
        snprintf(rid, sizeof(rid), "%s-redirect-https", id);
        json_t *r = json_pack("{s:s, s:[s], s:i, s:{s:s}, s:{s:i, s:s}}", "id", rid, "servers", id,
                              "order", -1000000, "match", "path", "/{**path}", "redirect", "status",
                              307, "location", "https://{host}{path}{query}");
        json_array_append_new(routes, r);
    }
    st->servers[st->nservers++] =
        (server_info_t){.id = id, .timeout = timeout, .copy_host = copy, .failover = failover};
    return 0;
}

/* ---- domainNames ---- */

/* "/api" -> "/api/{**catch-all}", as FastGateway builds the YARP route: the prefix is kept in
 * the forwarded path. */
static json_t *route_path(const char *p)
{
    while (p && *p == '/')
        p++;
    if (p == NULL || *p == '\0')
        return json_string("/{**catch-all}");
    size_t n = strlen(p);
    while (n && p[n - 1] == '/')
        n--;
    char *s = malloc(n + 20);
    if (s == NULL)
        abort();
    snprintf(s, n + 20, "/%.*s/{**catch-all}", (int)n, p);
    json_t *v = json_string(s);
    free(s);
    return v;
}

static int convert_upstreams(fg_import_t *im, const json_t *ups, json_t *dests)
{
    static const char *const keys[] = {"service", "weight", NULL};
    size_t i, mark = fg_import_push(im, "upStreams");
    json_t *u;
    if (!json_is_array(ups) || json_array_size(ups) == 0)
        return fg_import_fail(im, NULL, "expected a non-empty array");
    json_array_foreach(ups, i, u)
    {
        size_t m2 = fg_import_push_index(im, i);
        const char *svc = NULL;
        long long w = 1;
        int has;
        if (fg_import_want_object(im, u, NULL) < 0 || fg_import_check_keys(im, u, keys) < 0 ||
            fg_import_string(im, u, "service", &svc) < 0 ||
            fg_import_int(im, u, "weight", &w, &has) < 0)
            return -1;
        if (svc == NULL)
            return fg_import_fail(im, NULL, "missing \"service\"");
        if (w < 1 || w > 1000)
            return fg_import_fail(im, "weight", "expected 1..1000");
        char id[24];
        snprintf(id, sizeof(id), "%zu", i + 1);
        json_array_append_new(
            dests, json_pack("{s:s, s:s, s:I}", "id", id, "address", svc, "weight", (json_int_t)w));
        fg_import_pop(im, m2);
    }
    fg_import_pop(im, mark);
    return 0;
}

static int convert_health(fg_import_t *im, const json_t *d, json_t *cluster)
{
    int on = 0, has;
    const char *path = NULL;
    long long iv = 10, to = 3;
    if (fg_import_bool(im, d, "enableHealthCheck", &on, &has) < 0 ||
        fg_import_string(im, d, "healthCheckPath", &path) < 0 ||
        fg_import_int(im, d, "healthCheckIntervalSeconds", &iv, &has) < 0 ||
        fg_import_int(im, d, "healthCheckTimeoutSeconds", &to, &has) < 0)
        return -1;
    if (!on)
        return 0;
    if (iv < 1 || to < 1)
        return fg_import_fail(im,
                              iv < 1 ? "healthCheckIntervalSeconds" : "healthCheckTimeoutSeconds",
                              "expected seconds >= 1");
    char a[32], b[32];
    fg_import_duration((unsigned long long)iv * 1000, a, sizeof(a));
    fg_import_duration((unsigned long long)to * 1000, b, sizeof(b));
    json_t *act = json_pack("{s:s, s:s}", "interval", a, "timeout", b);
    if (path && *path)
        put_str(act, "path", path);
    json_object_set_new(cluster, "healthCheck", json_pack("{s:o}", "active", act));
    return 0;
}

static int convert_static(fg_import_t *im, const json_t *d, json_t *route)
{
    const char *root = NULL;
    json_t *tf;
    if (fg_import_string(im, d, "root", &root) < 0 ||
        fg_import_string_list(im, d, "tryFiles", &tf) < 0)
        return -1;
    if (root == NULL)
        return json_decref(tf), fg_import_fail(im, NULL, "a StaticFile service needs \"root\"");
    json_t *st = json_object();
    put_str(st, "root", root);
    if (tf != NULL && json_array_size(tf) > 0) {
        /* FastGateway serves the requested file first and falls back to its entries, which
         * name files ("index.html"); ours are paths or {path}, tried in order. */
        json_array_insert_new(tf, 0, json_string("{path}"));
        size_t i;
        json_t *e;
        json_array_foreach(tf, i, e)
        {
            const char *s = json_string_value(e);
            if (s[0] != '/' && s[0] != '{' && s[0] != '=') {
                char *p = malloc(strlen(s) + 2);
                if (p == NULL)
                    abort();
                sprintf(p, "/%s", s);
                json_array_set_new(tf, i, json_string(p));
                free(p);
            }
        }
        json_object_set_new(st, "tryFiles", tf);
    } else {
        json_decref(tf);
    }
    json_object_set_new(route, "static", st);
    return 0;
}

static int convert_domain(fg_import_t *im, const json_t *d, json_t *routes, json_t *clusters,
                          const state_t *st)
{
    static const char *const keys[] = {"id",
                                       "serverId",
                                       "path",
                                       "domains",
                                       "serviceType",
                                       "service",
                                       "host",
                                       "upStreams",
                                       "root",
                                       "tryFiles",
                                       "enable",
                                       "enableHealthCheck",
                                       "healthCheckPath",
                                       "healthCheckIntervalSeconds",
                                       "healthCheckTimeoutSeconds",
                                       "accessNodeId",
                                       NULL};
    static const char *const types[] = {"Service", "ServiceCluster", "StaticFile", NULL};
    const char *id = NULL, *sid = NULL, *path = NULL, *type = NULL, *svc = NULL, *host = NULL,
               *node = NULL;
    int enable = 1, has;
    json_t *hosts;
    if (fg_import_want_object(im, d, NULL) < 0 || fg_import_check_keys(im, d, keys) < 0 ||
        fg_import_string(im, d, "id", &id) < 0 || fg_import_string(im, d, "serverId", &sid) < 0 ||
        fg_import_string(im, d, "path", &path) < 0 ||
        fg_import_enum(im, d, "serviceType", types, &type) < 0 ||
        fg_import_string(im, d, "service", &svc) < 0 ||
        fg_import_string(im, d, "host", &host) < 0 ||
        fg_import_string(im, d, "accessNodeId", &node) < 0 ||
        fg_import_bool(im, d, "enable", &enable, &has) < 0)
        return -1;
    if (id == NULL || sid == NULL || type == NULL)
        return fg_import_fail(im, NULL, "missing \"%s\"",
                              id == NULL    ? "id"
                              : sid == NULL ? "serverId"
                                            : "serviceType");
    if (node != NULL && *node)
        return fg_import_fail(im, "accessNodeId",
                              "relaying through another node has no "
                              "equivalent");
    const server_info_t *srv = find_server(st, sid);
    if (srv == NULL)
        return fg_import_fail(im, "serverId", "no server has the id \"%s\"", sid);
    if (!enable) {
        fg_import_note(im, "enable", "disabled: not converted");
        return 0;
    }
    if (fg_import_string_list(im, d, "domains", &hosts) < 0)
        return -1;
    json_t *route = json_pack("{s:s, s:[s], s:{s:o}}", "id", id, "servers", sid, "match", "path",
                              route_path(path));
    json_array_append_new(routes, route);
    if (hosts != NULL && json_array_size(hosts) > 0)
        json_object_set_new(json_object_get(route, "match"), "hosts", hosts);
    else
        json_decref(hosts);
    if (strcmp(type, "StaticFile") == 0)
        return convert_static(im, d, route);
    json_t *cluster = json_pack("{s:s}", "id", id), *dests = json_array();
    json_array_append_new(clusters, cluster);
    if (strcmp(type, "Service") == 0) {
        if (svc == NULL)
            return json_decref(dests), fg_import_fail(im, NULL, "a Service needs \"service\"");
        json_t *dst = json_pack("{s:s, s:s}", "id", "default", "address", svc);
        if (host && *host)
            put_str(dst, "host", host);
        json_array_append_new(dests, dst);
    } else {
        put_str(cluster, "loadBalancingPolicy", "LeastRequests"); /* FastGateway's choice */
        if (convert_upstreams(im, fg_import_get(d, "upStreams"), dests) < 0)
            return json_decref(dests), -1;
    }
    json_object_set_new(cluster, "destinations", dests);
    put_str(route, "clusterId", id);
    char t[32];
    fg_import_duration((unsigned long long)srv->timeout * 1000, t, sizeof(t));
    json_object_set_new(cluster, "httpRequest", json_pack("{s:s}", "activityTimeout", t));
    if (srv->failover)
        json_object_set_new(cluster, "failover", json_object());
    if (srv->copy_host)
        json_object_set_new(route, "transforms",
                            json_pack("[{s:b}]", "RequestHeaderOriginalHost", 1));
    return convert_health(im, d, cluster);
}

/* Run fn over the array at key of root; each element under "key[i]". */
static int each(fg_import_t *im, const json_t *root, const char *key,
                int (*fn)(fg_import_t *, const json_t *, void *), void *arg)
{
    json_t *arr = fg_import_get(root, key), *e;
    size_t i, mark = fg_import_push(im, key);
    if (arr == NULL || json_is_null(arr))
        return fg_import_pop(im, mark), 0;
    if (!json_is_array(arr))
        return fg_import_fail(im, NULL, "expected an array");
    json_array_foreach(arr, i, e)
    {
        size_t m2 = fg_import_push_index(im, i);
        if (fn(im, e, arg) < 0)
            return -1;
        fg_import_pop(im, m2);
    }
    fg_import_pop(im, mark);
    return 0;
}

typedef struct {
    json_t *ours, *certs, *routes, *clusters, *rates, *acls, *security_rates, *servers;
    state_t st;
} conv_t;

static int do_list(fg_import_t *im, const json_t *e, void *a)
{
    conv_t *c = a;
    return convert_list(im, e, c->acls, &c->st);
}

static int do_rate(fg_import_t *im, const json_t *e, void *a)
{
    conv_t *c = a;
    return convert_rate(im, e, c->rates, c->security_rates);
}

static int do_cert(fg_import_t *im, const json_t *e, void *a)
{
    conv_t *c = a;
    return convert_cert(im, e, c->certs);
}

static int do_server(fg_import_t *im, const json_t *e, void *a)
{
    conv_t *c = a;
    return convert_server(im, e, c->servers, c->certs, &c->st, c->routes);
}

static int do_domain(fg_import_t *im, const json_t *e, void *a)
{
    conv_t *c = a;
    return convert_domain(im, e, c->routes, c->clusters, &c->st);
}

json_t *fg_import_fastgateway(fg_import_t *im, const json_t *root)
{
    static const char *const top[] = {
        "servers", "domainNames", "certificates", "accessControls", "rateLimits", "settings", NULL};
    conv_t c = {.ours = json_object()};
    json_t *v = fg_import_get(root, "servers");
    c.st.servers = calloc(json_array_size(v) + 1, sizeof(server_info_t));
    c.st.blacklists = json_array();
    c.st.whitelists = json_array();
    if (c.st.servers == NULL)
        abort();
#define SECTION(var, name)                                                                         \
    var = json_array();                                                                            \
    json_object_set_new(c.ours, name, var)
    SECTION(c.servers, "servers");
    SECTION(c.routes, "routes");
    SECTION(c.clusters, "clusters");
    SECTION(c.certs, "certificates");
    SECTION(c.rates, "rateLimits");
    SECTION(c.acls, "accessControl");
#undef SECTION
    c.security_rates = json_array();
    json_object_set_new(c.ours, "security", json_pack("{s:o}", "rateLimits", c.security_rates));
    if (fg_import_check_keys(im, root, top) < 0 ||
        each(im, root, "accessControls", do_list, &c) < 0 ||
        each(im, root, "rateLimits", do_rate, &c) < 0 ||
        each(im, root, "certificates", do_cert, &c) < 0 ||
        each(im, root, "servers", do_server, &c) < 0 ||
        each(im, root, "domainNames", do_domain, &c) < 0)
        goto fail;
    json_t *settings = fg_import_get(root, "settings");
    if (json_object_size(settings) > 0)
        fg_import_note(im, "settings", "dashboard settings: not converted");
    if (json_array_size(c.servers) == 0) {
        fg_import_fail(im, "servers", "at least one server is needed");
        goto fail;
    }
    /* Empty sections are left out, so that the result reads like a hand-written file. */
    static const char *const sections[] = {"certificates", "rateLimits", "accessControl", "routes",
                                           "clusters"};
    for (size_t i = 0; i < 5; i++)
        if (json_array_size(json_object_get(c.ours, sections[i])) == 0)
            json_object_del(c.ours, sections[i]);
    if (json_array_size(c.security_rates) == 0)
        json_object_del(c.ours, "security");
    free(c.st.servers);
    json_decref(c.st.blacklists);
    json_decref(c.st.whitelists);
    return c.ours;
fail:
    free(c.st.servers);
    json_decref(c.st.blacklists);
    json_decref(c.st.whitelists);
    json_decref(c.ours);
    return NULL;
}
