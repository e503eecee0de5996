/* The effective configuration as JSON (`fastgateway -T`): every key the loader knows, with
 * the defaults it filled in and references resolved, in the schema of docs/config.md, so the
 * output is itself a valid configuration that loads to the same values. Durations are written
 * in the largest unit that is exact ("90s", "1500ms"), sizes as byte counts. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/config.h"
#include "common/log.h"
#include "common/tls.h"

static const char *const lb_names[] = {"PowerOfTwoChoices", "RoundRobin", "LeastRequests", "Random",
                                       "FirstAlphabetical"};
static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};
static const char *const xf_names[] = {"Off", "Set", "Append", "Remove"};
static const char *const node_names[] = {
    "None",      "Random",         "RandomAndPort",        "RandomAndRandomPort",
    "Unknown",   "UnknownAndPort", "UnknownAndRandomPort", "Ip",
    "IpAndPort", "IpAndRandomPort"};
static const char *const when_names[] = {"Success", "Always", "Failure"};

static json_t *duration(uint64_t ms)
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    char buf[32];
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, sizeof(buf), "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
            return json_string(buf);
        }
    }
    snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
    return json_string(buf);
}

static json_t *size(uint64_t n)
{
    return json_integer((json_int_t)n);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *strings(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static void set(json_t *o, const char *key, json_t *v)
{
    json_object_set_new(o, key, v);
}

static void attach(json_t *o, const fg_security_attach_t *a)
{
    set(o, "rateLimits", strings(a->ratelimits, a->nratelimits));
    set(o, "accessControl", strings(a->acls, a->nacls));
}

/* ---- responses (serverHeader, errorPages, exposeAccessListIds) ---- */

/* One errorPages value in the object form: the file as loaded (absolute) and its contentType,
 * the redirect, or the route and its status. */
static json_t *error_page(const fg_error_page_t *p)
{
    json_t *o = json_object();
    if (p->redirect) {
        set(o, "redirect", json_string(p->redirect));
        return o;
    }
    if (p->route_id) {
        set(o, "route", json_string(p->route_id));
        if (p->route_status)
            set(o, "status", json_integer(p->route_status));
        return o;
    }
    set(o, "file", json_string(p->file));
    if (p->content_type)
        set(o, "contentType", json_string(p->content_type));
    return o;
}

/* The three keys of a server or the top level; an errorPages status (400..599) or class (4, 5)
 * becomes its key again: "404", "5xx". */
static void responses(json_t *o, const fg_responses_config_t *r)
{
    json_t *pages = json_object();
    char key[16];
    for (size_t i = 0; i < r->nerror_pages; i++) {
        const fg_error_page_t *p = &r->error_pages[i];
        if (p->status < 10)
            snprintf(key, sizeof(key), "%dxx", p->status);
        else
            snprintf(key, sizeof(key), "%d", p->status);
        set(pages, key, error_page(p));
    }
    set(o, "serverHeader", r->server_header ? json_string(r->server_header) : json_false());
    set(o, "errorPages", pages);
    set(o, "exposeAccessListIds", json_boolean(r->expose_acl_ids));
}

/* ---- TLS ---- */

static json_t *tls_version(int v)
{
    return json_string(v == FG_TLS_VERSION_1_3 ? "TLSv1.3" : "TLSv1.2");
}

static json_t *certificate(const fg_tls_cert_config_t *cert)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "id", cert->id, "chain", cert->chain, "key", cert->key);
    if (cert->names)
        set(o, "names", strings(cert->names, cert->nnames));
    if (cert->acme)
        set(o, "acme", json_true());
    if (cert->ocsp_file)
        set(o, "ocspFile", json_string(cert->ocsp_file));
    if (cert->ocsp_update)
        set(o, "ocspUpdate", json_true());
    if (cert->ocsp_responder)
        set(o, "ocspResponder", json_string(cert->ocsp_responder));
    return o;
}

/* The loader keeps only the header value it builds ("max-age=N[; includeSubDomains]
 * [; preload]"); the object is read back from it. */
static json_t *hsts(const char *header)
{
    unsigned long long age = 0;
    if (header == NULL || sscanf(header, "max-age=%llu", &age) != 1)
        return json_string("off");
    return json_pack("{s:o, s:b, s:b}", "maxAge", duration(age * 1000), "includeSubDomains",
                     strstr(header, "; includeSubDomains") != NULL, "preload",
                     strstr(header, "; preload") != NULL);
}

static json_t *server_tls(const fg_tls_server_config_t *t)
{
    json_t *o = json_object();
    set(o, "certificates", strings(t->certificates, t->ncertificates));
    set(o, "default", json_string(t->default_id));
    set(o, "protocols",
        json_pack("{s:o, s:o}", "min", tls_version(t->min_version), "max",
                  tls_version(t->max_version)));
    if (t->ciphers)
        set(o, "ciphers", json_string(t->ciphers));
    if (t->ciphersuites)
        set(o, "ciphersuites", json_string(t->ciphersuites));
    set(o, "groups", json_string(t->groups));
    set(o, "alpn", strings(t->alpn, t->nalpn));
    set(o, "sessionTickets", json_boolean(t->session_tickets));
    set(o, "sessionCache", json_integer(t->session_cache));
    set(o, "ticketsPerHandshake", json_integer(t->tickets_per_handshake));
    set(o, "hsts", hsts(t->hsts_header));
    set(o, "handshakeTimeout", duration(t->handshake_timeout_ms));
    if (t->client_auth != FG_TLS_CLIENT_AUTH_OFF) {
        static const char *const modes[] = {"off", "optional", "required"};
        json_t *ca = json_pack("{s:s, s:s, s:i}", "mode", modes[t->client_auth], "caFile",
                               t->client_ca_file, "verifyDepth", t->client_verify_depth);
        if (t->client_crl_file)
            set(ca, "crlFile", json_string(t->client_crl_file));
        set(o, "clientAuth", ca);
    }
    return o;
}

/* port and authority exclude each other: the authority, when set, replaces the port. */
static json_t *redirect_https(const fg_redirect_https_t *r)
{
    if (!r->enabled)
        return json_false();
    json_t *o = json_pack("{s:i}", "status", r->status);
    if (r->authority)
        set(o, "authority", json_string(r->authority));
    else
        set(o, "port", json_integer(r->port));
    return o;
}

static json_t *http_client(const fg_tls_client_config_t *h)
{
    json_t *protos = json_array();
    if (h->min_version <= FG_TLS_VERSION_1_2)
        json_array_append_new(protos, json_string("Tls12"));
    if (h->max_version >= FG_TLS_VERSION_1_3)
        json_array_append_new(protos, json_string("Tls13"));
    json_t *o = json_pack("{s:b, s:o}", "dangerousAcceptAnyServerCertificate", !h->verify,
                          "sslProtocols", protos);
    if (h->ca_file)
        set(o, "caFile", json_string(h->ca_file));
    if (h->server_name)
        set(o, "serverName", json_string(h->server_name));
    if (h->client_cert_id)
        set(o, "clientCertificate", json_string(h->client_cert_id));
    if (h->ciphers)
        set(o, "ciphers", json_string(h->ciphers));
    if (h->ciphersuites)
        set(o, "ciphersuites", json_string(h->ciphersuites));
    if (h->groups)
        set(o, "groups", json_string(h->groups));
    set(o, "handshakeTimeout", duration(h->handshake_timeout_ms));
    return o;
}

/* ---- servers ---- */

static json_t *compression(const fg_compression_config_t *z)
{
    return json_pack("{s:b, s:o, s:o, s:i}", "enabled", z->enabled, "types",
                     strings(z->types, z->ntypes), "minLength", size(z->min_length), "level",
                     z->level);
}

static json_t *server(const fg_server_t *s)
{
    static const char *const sources[] = {"socket", "X-Forwarded-For", "X-Real-IP",
                                          "CF-Connecting-IP"};
    json_t *o = json_object();
    set(o, "id", json_string(s->id));
    if (s->name)
        set(o, "name", json_string(s->name));
    set(o, "listen", json_string(s->listen));
    set(o, "enabled", json_boolean(s->enabled));
    set(o, "backlog", json_integer(s->backlog));
    set(o, "limits",
        json_pack("{s:o, s:o, s:i, s:o, s:I, s:I}", "maxRequestLineSize", size(s->max_request_line),
                  "maxHeaderSize", size(s->max_header_size), "maxHeaders", (int)s->max_headers,
                  "maxRequestBodySize",
                  s->max_request_body_size < 0 ? json_string("unlimited")
                                               : size((uint64_t)s->max_request_body_size),
                  "maxConnections", (json_int_t)s->max_connections, "maxConnectionsPerClient",
                  (json_int_t)s->max_per_client));
    set(o, "timeouts",
        json_pack("{s:o, s:o, s:o, s:o}", "header", duration(s->header_timeout_ms), "body",
                  duration(s->body_timeout_ms), "keepAlive", duration(s->keepalive_timeout_ms),
                  "send", duration(s->send_timeout_ms)));
    set(o, "maxKeepAliveRequests", json_integer(s->max_keepalive_requests));
    set(o, "ignoreClientAbort", json_boolean(s->ignore_client_abort));
    set(o, "maxWebSockets", json_integer(s->max_websockets));
    set(o, "acceptTunnels", json_boolean(s->accept_tunnels));
    set(o, "compression", compression(&s->compression));
    if (s->tcp.enabled)
        set(o, "tcp",
            json_pack("{s:s, s:o, s:o, s:I, s:I}", "clusterId", s->tcp.cluster_id, "idleTimeout",
                      duration(s->tcp.idle_timeout_ms), "connectTimeout",
                      duration(s->tcp.connect_timeout_ms), "maxConnections",
                      (json_int_t)s->tcp.max_connections, "maxConnectionsPerClient",
                      (json_int_t)s->tcp.max_per_client));
    if (s->tcp.enabled && s->tcp.send_proxy_protocol)
        json_object_set_new(json_object_get(o, "tcp"), "sendProxyProtocol",
                            json_integer(s->tcp.send_proxy_protocol));
    attach(o, &s->security);
    set(o, "clientIpSource", json_string(sources[s->client_ip_source]));
    set(o, "trustedProxies", strings(s->trusted_proxies, s->ntrusted_proxies));
    const fg_proxy_protocol_config_t *pp = &s->proxy_protocol;
    if (pp->enabled)
        set(o, "proxyProtocol",
            json_pack("{s:o, s:o}", "timeout", duration(pp->timeout_ms), "trustedPeers",
                      strings(pp->trusted_peers, pp->ntrusted_peers)));
    responses(o, &s->responses);
    if (s->tls)
        set(o, "tls", server_tls(s->tls));
    set(o, "redirectHttps", redirect_https(&s->redirect));
    const fg_http2_config_t *h = &s->http2;
    set(o, "http2",
        json_pack("{s:b, s:i, s:o, s:o, s:o, s:o, s:b}", "h2c", h->h2c, "maxConcurrentStreams",
                  (int)h->max_concurrent_streams, "maxHeaderListSize",
                  size(h->max_header_list_size), "initialWindowSize", size(h->initial_window_size),
                  "connectionWindowSize", size(h->connection_window_size), "maxFrameSize",
                  size(h->max_frame_size), "enableConnectProtocol", h->enable_connect_protocol));
    return o;
}

/* ---- routes ---- */

static json_t *match_kvs(const fg_match_kv_t *kv, size_t n, int header)
{
    static const char *const hmodes[] = {"ExactHeader", "HeaderPrefix", "Contains",
                                         "NotContains", "Exists",       "NotExists"};
    static const char *const qmodes[] = {"Exact", "Prefix", "Contains", "NotContains", "Exists"};
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s, s:s, s:b}", "name", kv[i].name, "mode",
                              header ? hmodes[kv[i].mode] : qmodes[kv[i].mode], "isCaseSensitive",
                              kv[i].case_sensitive);
        if (kv[i].nvalues)
            set(o, "values", strings(kv[i].values, kv[i].nvalues));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *match(const fg_route_match_t *m)
{
    json_t *o = json_object();
    if (m->path)
        set(o, "path", json_string(m->path));
    set(o, "hosts", strings(m->hosts, m->nhosts));
    set(o, "methods", strings(m->methods, m->nmethods));
    set(o, "headers", match_kvs(m->headers, m->nheaders, 1));
    set(o, "queryParameters", match_kvs(m->query, m->nquery, 0));
    return o;
}

static json_t *headers(const fg_header_kv_t *h, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        set(o, h[i].name, json_string(h[i].value));
    return o;
}

/* Set or Append with its value, and When for response transforms. */
static void tx_value(json_t *o, const fg_transform_t *t, int response)
{
    set(o, t->action == FG_TX_APPEND ? "Append" : "Set", json_string(t->value));
    if (response)
        set(o, "When", json_string(when_names[t->when]));
}

static int xf_action(const fg_transform_t *t)
{
    const int slots[] = {t->xf_for, t->xf_proto, t->xf_host, t->xf_prefix};
    for (size_t i = 0; i < 4; i++)
        if (slots[i] != FG_XF_OFF)
            return slots[i];
    return FG_XF_SET;
}

static int xf_yarp_form(const fg_transform_t *t)
{
    for (size_t i = 0; i < 4; i++)
        if (t->value && strcasecmp(t->value, xf_names[i]) == 0)
            return 1;
    return 0;
}

static json_t *transform(const fg_transform_t *t)
{
    static const char *const path_keys[] = {"PathPrefix", "PathRemovePrefix", "PathSet",
                                            "PathPattern"};
    json_t *o = json_object();
    switch (t->kind) {
    case FG_TX_PATH_PREFIX:
    case FG_TX_PATH_REMOVE_PREFIX:
    case FG_TX_PATH_SET:
    case FG_TX_PATH_PATTERN:
        set(o, path_keys[t->kind - FG_TX_PATH_PREFIX], json_string(t->value));
        break;
    case FG_TX_QUERY_VALUE:
        set(o, "QueryValueParameter", json_string(t->name));
        tx_value(o, t, 0);
        break;
    case FG_TX_QUERY_REMOVE:
        set(o, "QueryRemoveParameter", json_string(t->name));
        break;
    case FG_TX_METHOD_CHANGE:
        set(o, "HttpMethodChange", json_string(t->name));
        set(o, "Set", json_string(t->value));
        break;
    case FG_TX_REQ_HEADER:
        set(o, "RequestHeader", json_string(t->name));
        tx_value(o, t, 0);
        break;
    case FG_TX_REQ_HEADER_REMOVE:
        set(o, "RequestHeaderRemove", json_string(t->name));
        break;
    case FG_TX_REQ_HEADERS_COPY:
        set(o, "RequestHeadersCopy", json_boolean(t->flag));
        break;
    case FG_TX_REQ_ORIGINAL_HOST:
        set(o, "RequestHeaderOriginalHost", json_boolean(t->flag));
        break;
    case FG_TX_X_FORWARDED:
        set(o, "X-Forwarded", json_string(t->value));
        set(o, "For", json_string(xf_names[t->xf_for]));
        set(o, "Proto", json_string(xf_names[t->xf_proto]));
        set(o, "Host", json_string(xf_names[t->xf_host]));
        set(o, "Prefix", json_string(xf_names[t->xf_prefix]));
        set(o, "HeaderPrefix", json_string(t->xf_header_prefix));
        /* The four keys above decide; Action repeats the first header's for the reader of
         * the list form (YARP's form has the action as its value already). */
        if (!xf_yarp_form(t))
            set(o, "Action", json_string(xf_names[xf_action(t)]));
        break;
    case FG_TX_FORWARDED:
        set(o, "Forwarded", json_string(t->value));
        set(o, "Action", json_string(xf_names[t->xf_for]));
        if (t->fwd_for != FG_NODE_NONE)
            set(o, "ForFormat", json_string(node_names[t->fwd_for]));
        if (t->fwd_by != FG_NODE_NONE)
            set(o, "ByFormat", json_string(node_names[t->fwd_by]));
        break;
    case FG_TX_RESP_HEADER:
        set(o, "ResponseHeader", json_string(t->name));
        tx_value(o, t, 1);
        break;
    case FG_TX_RESP_HEADER_REMOVE:
        set(o, "ResponseHeaderRemove", json_string(t->name));
        set(o, "When", json_string(when_names[t->when]));
        break;
    case FG_TX_REQ_HEADER_ROUTE:
        set(o, "RequestHeaderRouteValue", json_string(t->name));
        tx_value(o, t, 0);
        break;
    case FG_TX_QUERY_ROUTE:
        set(o, "QueryRouteParameter", json_string(t->name));
        tx_value(o, t, 0);
        break;
    case FG_TX_CLIENT_CERT:
        set(o, "ClientCert", json_string(t->name));
        break;
    case FG_TX_REQ_HEADERS_ALLOWED:
        set(o, "RequestHeadersAllowed", json_string(t->value));
        break;
    case FG_TX_RESP_HEADERS_COPY:
        set(o, "ResponseHeadersCopy", json_boolean(t->flag));
        break;
    case FG_TX_RESP_HEADERS_ALLOWED:
        set(o, "ResponseHeadersAllowed", json_string(t->value));
        break;
    case FG_TX_RESP_TRAILERS_COPY:
        set(o, "ResponseTrailersCopy", json_boolean(t->flag));
        break;
    case FG_TX_RESP_TRAILERS_ALLOWED:
        set(o, "ResponseTrailersAllowed", json_string(t->value));
        break;
    case FG_TX_RESP_TRAILER:
        set(o, "ResponseTrailer", json_string(t->name));
        tx_value(o, t, 1);
        break;
    case FG_TX_RESP_TRAILER_REMOVE:
        set(o, "ResponseTrailerRemove", json_string(t->name));
        set(o, "When", json_string(when_names[t->when]));
        break;
    }
    return o;
}

/* The one action of a route: clusterId, static, direct or redirect. */
static void action(json_t *o, const fg_route_t *r)
{
    switch (r->kind) {
    case FG_ROUTE_CLUSTER:
        set(o, "clusterId", json_string(r->cluster_id));
        break;
    case FG_ROUTE_STATIC:
        set(o, "static",
            json_pack("{s:s, s:o, s:o}", "root", r->static_root, "index",
                      strings(r->static_index, r->nstatic_index), "tryFiles",
                      strings(r->static_try_files, r->nstatic_try_files)));
        break;
    case FG_ROUTE_DIRECT:
        set(o, "direct",
            json_pack("{s:i, s:o, s:o}", "status", r->direct_status, "headers",
                      headers(r->direct_headers, r->ndirect_headers), "body",
                      r->direct_body ? json_stringn(r->direct_body, r->direct_body_len)
                                     : json_string("")));
        break;
    case FG_ROUTE_REDIRECT:
        set(o, "redirect",
            json_pack("{s:i, s:s}", "status", r->redirect_status, "location",
                      r->redirect_location));
        break;
    }
}

static json_t *route(const fg_route_t *r)
{
    json_t *o = json_object();
    set(o, "id", json_string(r->id));
    set(o, "order", json_integer(r->order));
    set(o, "servers", strings(r->server_ids, r->nserver_ids));
    set(o, "match", match(&r->match));
    action(o, r);
    json_t *tx = json_array();
    for (size_t i = 0; i < r->ntransforms; i++)
        json_array_append_new(tx, transform(&r->transforms[i]));
    set(o, "transforms", tx);
    if (r->max_request_body_size >= 0)
        set(o, "maxRequestBodySize",
            r->max_request_body_size == INT64_MAX ? json_string("unlimited")
                                                  : size((uint64_t)r->max_request_body_size));
    attach(o, &r->security);
    if (r->tenant_code)
        set(o, "tenantCode", json_string(r->tenant_code));
    set(o, "isGlobal", json_boolean(r->is_global));
    set(o, "metadata", headers(r->metadata, r->nmetadata));
    set(o, "upgradeProtocols", strings(r->upgrade_protocols, r->nupgrade_protocols));
    set(o, "webSocketIdleTimeout", duration(r->upgrade_idle_timeout_ms)); /* 0: the cluster's */
    set(o, "exemptEventStreams", json_boolean(r->exempt_event_streams));
    set(o, "requireClientCertificate", json_boolean(r->require_client_cert));
    if (!r->compression_from_server)
        set(o, "compression", compression(&r->compression));
    return o;
}

/* ---- clusters ---- */

static json_t *destination(const fg_destination_t *d)
{
    json_t *o = json_pack("{s:s, s:s}", "id", d->id, "address", d->address);
    if (d->host_override)
        set(o, "host", json_string(d->host_override));
    if (d->health)
        set(o, "health", json_string(d->health));
    set(o, "enabled", json_boolean(d->enabled));
    set(o, "weight", json_integer(d->weight));
    set(o, "httpVersion", json_string(d->http_version == FG_HTTP_V2 ? "2" : "1.1"));
    return o;
}

static json_t *health(const fg_health_config_t *h)
{
    json_t *active = json_pack("{s:b, s:o, s:o, s:s, s:i}", "enabled", h->active, "interval",
                               duration(h->interval_ms), "timeout", duration(h->timeout_ms), "path",
                               h->path ? h->path : "/", "threshold", (int)h->threshold);
    if (h->query)
        set(active, "query", json_string(h->query));
    if (h->expected_status)
        set(active, "expectedStatus", json_integer(h->expected_status));
    json_t *passive =
        json_pack("{s:b, s:o, s:i, s:f, s:i, s:o}", "enabled", h->passive, "window",
                  duration(h->window_ms), "minimumRequests", (int)h->min_requests, "failureRate",
                  h->failure_rate, "consecutiveFailures", (int)h->consecutive, "reactivationPeriod",
                  duration(h->reactivation_ms));
    return json_pack("{s:o, s:o, s:s}", "active", active, "passive", passive, "availability",
                     h->availability == FG_AVAIL_HEALTHY_AND_UNKNOWN ? "HealthyAndUnknown"
                                                                     : "HealthyOrPanic");
}

static json_t *affinity(const fg_affinity_config_t *a)
{
    static const char *const policies[] = {"HashCookie", "Cookie", "CustomHeader"};
    static const char *const same[] = {"Unspecified", "Lax", "Strict", "None"};
    json_t *cookie =
        json_pack("{s:s, s:o, s:b, s:b, s:s}", "path", a->cookie_path ? a->cookie_path : "/",
                  "domain", str_or_null(a->cookie_domain), "httpOnly", a->cookie_http_only,
                  "secure", a->cookie_secure, "sameSite", same[a->cookie_same_site]);
    if (a->cookie_domain == NULL)
        json_object_del(cookie, "domain");
    if (a->cookie_max_age >= 0)
        set(cookie, "maxAge", duration((uint64_t)a->cookie_max_age * 1000));
    return json_pack(
        "{s:b, s:s, s:s, s:s, s:s, s:o}", "enabled", a->enabled, "policy", policies[a->policy],
        "failurePolicy", a->failure_policy == FG_AFF_RETURN_503 ? "Return503Error" : "Redistribute",
        "affinityKeyName", a->key_name ? a->key_name : ".FastGateway.Affinity", "keySource",
        a->key_source == FG_AFF_KEY_TENANT ? "tenant" : "request", "cookie", cookie);
}

static json_t *cluster(const fg_cluster_t *cl)
{
    json_t *dests = json_array();
    for (size_t i = 0; i < cl->ndestinations; i++)
        json_array_append_new(dests, destination(&cl->destinations[i]));
    const fg_failover_config_t *f = &cl->failover;
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:{s:o, s:o}, s:{s:i, s:o, s:i}, s:o, s:o, s:{s:b, s:o, s:o, s:b}}", "id",
        cl->id, "loadBalancingPolicy", lb_names[cl->lb_policy], "destinations", dests,
        "httpRequest", "connectTimeout", duration(cl->connect_timeout_ms), "activityTimeout",
        duration(cl->activity_timeout_ms), "keepAlive", "maxIdleConnections",
        (int)cl->max_idle_connections, "idleTimeout", duration(cl->idle_timeout_ms),
        "maxRequestsPerConnection", (int)cl->max_requests_per_connection, "healthCheck",
        health(&cl->health), "sessionAffinity", affinity(&cl->affinity), "failover", "enabled",
        f->enabled, "connectTimeout", duration(f->connect_timeout_ms), "budget",
        duration(f->budget_ms), "allowNonIdempotent", f->allow_non_idempotent);
    set(o, "httpClient", http_client(&cl->http_client));
    set(o, "httpVersion", json_string(cl->http_version == FG_HTTP_V2 ? "2" : "1.1"));
    set(o, "versionPolicy",
        json_string(cl->version_policy == FG_VERSION_EXACT ? "RequestVersionExact"
                                                           : "RequestVersionOrLower"));
    return o;
}

/* ---- security ---- */

static json_t *rule(const fg_ratelimit_rule_t *r)
{
    static const char *const types[] = {"SlidingWindow", "FixedWindow", "TokenBucket"};
    static const char *const scopes[] = {"Global", "PerIp", "PerRoute", "PerHeader"};
    json_t *o = json_pack("{s:s, s:b, s:s, s:s, s:I, s:o}", "id", r->id, "enabled", r->enabled,
                          "type", types[r->type], "scope", scopes[r->scope], "maxRequests",
                          (json_int_t)r->max_requests, "window", duration(r->window_ms));
    if (r->name)
        set(o, "name", json_string(r->name));
    if (r->type == FG_RLT_TOKEN && r->burst)
        set(o, "burst", json_integer((json_int_t)r->burst));
    if (r->scope == FG_RLS_PER_HEADER)
        set(o, "header", json_string(r->header));
    if (r->scope == FG_RLS_PER_IP)
        set(o, "ipv6Prefix", json_integer(r->ipv6_prefix));
    if (r->path_pattern)
        set(o, "pathPattern", json_string(r->path_pattern));
    if (r->ip_pattern)
        set(o, "ipPattern", json_string(r->ip_pattern));
    set(o, "methods", strings(r->methods, r->nmethods));
    set(o, "dryRun", json_boolean(r->dry_run));
    return o;
}

static json_t *acl(const fg_acl_list_t *l)
{
    json_t *o = json_pack("{s:s, s:b, s:s, s:o}", "id", l->id, "enabled", l->enabled, "type",
                          l->whitelist ? "whitelist" : "blacklist", "entries",
                          strings(l->entries, l->nentries));
    if (l->name)
        set(o, "name", json_string(l->name));
    return o;
}

static void security(json_t *root, const fg_config_t *cfg)
{
    json_t *rules = json_array(), *acls = json_array(), *glob = json_object();
    for (size_t i = 0; i < cfg->nratelimits; i++)
        json_array_append_new(rules, rule(&cfg->ratelimits[i]));
    for (size_t i = 0; i < cfg->nacls; i++)
        json_array_append_new(acls, acl(&cfg->acls[i]));
    attach(glob, &cfg->security);
    set(root, "rateLimits", rules);
    set(root, "accessControl", acls);
    set(root, "security", glob);
    const fg_abnormal_config_t *a = &cfg->abnormal;
    if (a->enabled)
        set(root, "abnormalIp",
            json_pack("{s:b, s:o, s:I, s:{s:b, s:I, s:o}}", "enabled", 1, "window",
                      duration(a->window_ms), "threshold", (json_int_t)a->threshold, "autoBlock",
                      "enabled", a->autoblock, "threshold", (json_int_t)a->autoblock_threshold,
                      "duration", duration(a->autoblock_ms)));
}

/* ---- top level ---- */

/* The accessLogFields bits as names in line order; 0 stands for the default set. */
static json_t *access_fields(uint64_t bits)
{
    json_t *a = json_array();
    if (bits == 0)
        bits = FG_AL_DEFAULT;
    for (int f = 0; f < FG_AL_COUNT; f++)
        if (bits & FG_AL_BIT(f))
            json_array_append_new(a, json_string(fg_log_access_field_name(f)));
    return a;
}

static void globals(json_t *root, const fg_config_t *cfg)
{
    const fg_log_config_t *lc = &cfg->log;
    set(root, "workers", json_integer(cfg->workers));
    set(root, "user", str_or_null(cfg->user));
    set(root, "group", str_or_null(cfg->group));
    if (cfg->user == NULL) {
        json_object_del(root, "user");
        json_object_del(root, "group");
    }
    set(root, "pidFile", json_string(cfg->pid_file));
    set(root, "statusSocket", json_string(cfg->status_socket));
    if (cfg->status_group)
        set(root, "statusGroup", json_string(cfg->status_group));
    set(root, "workerRlimitNofile", json_integer((json_int_t)cfg->rlimit_nofile));
    set(root, "shutdownTimeout", duration(cfg->shutdown_timeout_ms));
    set(root, "drainTimeout", duration(cfg->drain_timeout_ms));
    set(root, "webSocketDrainTimeout", duration(cfg->websocket_drain_timeout_ms));
    set(root, "watchConfig", json_boolean(cfg->watch_config));
    if (cfg->metrics_listen)
        set(root, "metrics",
            json_pack("{s:s, s:s}", "listen", cfg->metrics_listen, "path", cfg->metrics_path));
    if (cfg->admin.listen) {
        const fg_admin_config_t *a = &cfg->admin;
        json_t *o = json_pack("{s:s, s:b, s:b, s:s}", "listen", a->listen, "anonymousWrites",
                              a->anonymous_writes, "anonymousMetrics", a->anonymous_metrics,
                              "metricsPath", a->metrics_path);
        if (a->token_file)
            set(o, "tokenFile", json_string(a->token_file));
        if (a->state_file)
            set(o, "stateFile", json_string(a->state_file));
        if (a->dashboard)
            set(o, "dashboard", json_string(a->dashboard));
        if (a->tls_cert_id) {
            json_t *t = json_pack("{s:s}", "certificate", a->tls_cert_id);
            if (a->client_ca_file)
                set(t, "clientCaFile", json_string(a->client_ca_file));
            set(o, "tls", t);
        }
        set(root, "admin", o);
    }
    set(root, "shm",
        json_pack("{s:o, s:o, s:o, s:o}", "size", size(cfg->shm_size), "rateLimitZone",
                  size(cfg->shm_ratelimit_zone), "accessControlZone", size(cfg->shm_acl_zone),
                  "abnormalIpZone", size(cfg->shm_abnormal_zone)));
    set(root, "log",
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "errorLog", lc->path ? lc->path : "stderr",
                  "level", level_names[lc->level], "format", lc->json ? "json" : "text",
                  "accessLog", lc->access_path ? lc->access_path : "off", "accessLogBuffer",
                  size(lc->access_buffer), "accessLogFlush", duration(lc->access_flush_ms)));
    set(json_object_get(root, "log"), "accessLogFields", access_fields(lc->access_fields));
    set(root, "tenantHeader", json_string(cfg->tenant_header));
    responses(root, &cfg->responses);
    json_t *certs = json_array();
    for (size_t i = 0; i < cfg->ncertificates; i++)
        json_array_append_new(certs, certificate(&cfg->certificates[i]));
    set(root, "certificates", certs);
    set(root, "tls",
        json_pack("{s:o}", "ticketKeyRotation", duration(cfg->tls_ticket_rotation_ms)));
    const fg_acme_config_t *a = &cfg->acme;
    if (a->enabled) {
        json_t *o = json_pack("{s:s, s:s, s:o, s:o}", "directory", a->directory, "stateDir",
                              a->state_dir, "renewBefore", duration(a->renew_before_ms),
                              "checkInterval", duration(a->check_interval_ms));
        if (a->email)
            set(o, "email", json_string(a->email));
        if (a->ca_file)
            set(o, "caFile", json_string(a->ca_file));
        if (a->eab_key_id) /* the key's file is named, the key never written */
            set(o, "externalAccount",
                json_pack("{s:s, s:s}", "keyId", a->eab_key_id, "macKeyFile", a->eab_mac_file));
        set(root, "acme", o);
    }
}

/* "tunnels", with its defaults when absent (an empty section changes nothing). The agents'
 * secret files are named, their secrets never written. */
static json_t *tunnels(const fg_tunnels_config_t *tc)
{
    json_t *agents = json_array();
    for (size_t i = 0; i < tc->nagents; i++)
        json_array_append_new(agents, json_pack("{s:s, s:s}", "id", tc->agents[i].id, "secretFile",
                                                tc->agents[i].secret_file));
    return json_pack(
        "{s:s, s:I, s:I, s:I, s:o, s:o}", "path", tc->path ? tc->path : "/_fg/tunnel",
        "heartbeatSeconds", (json_int_t)(tc->enabled ? tc->heartbeat_ms / 1000 : 30),
        "graceSeconds", (json_int_t)(tc->enabled ? tc->grace_ms / 1000 : 10),
        "authFailuresPerMinute", (json_int_t)(tc->enabled ? tc->auth_failures_max : 10),
        "handshakeTimeout",
        duration(tc->enabled ? tc->handshake_timeout_ms : FG_TUNNEL_HANDSHAKE_TIMEOUT_MS), "agents",
        agents);
}

json_t *fg_config_dump(const fg_config_t *cfg)
{
    json_t *root = json_object(), *a;
    globals(root, cfg);
    a = json_array();
    for (size_t i = 0; i < cfg->nservers; i++)
        json_array_append_new(a, server(&cfg->servers[i]));
    set(root, "servers", a);
    a = json_array();
    for (size_t i = 0; i < cfg->nroutes; i++)
        json_array_append_new(a, route(&cfg->routes[i]));
    set(root, "routes", a);
    a = json_array();
    for (size_t i = 0; i < cfg->nclusters; i++)
        json_array_append_new(a, cluster(&cfg->clusters[i]));
    set(root, "clusters", a);
    security(root, cfg);
    set(root, "tunnels", tunnels(&cfg->tunnels));
    return root;
}
