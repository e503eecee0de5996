/* The configuration loader: JSONC text -> validated, resolved, frozen fg_config_t.
 * This file holds the entry points, comment stripping, the top-level keys, log and servers,
 * and route attachment. The load context, getters and value parsers are in config_values.c,
 * routes in config_routes.c, clusters in config_clusters.c. Schema: docs/config.md. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/log.h"

#define KIB 1024ULL

/* ---- JSONC comments ---- */

/* Copy text into a new buffer with comments blanked so jansson sees plain JSON. Comment bytes
 * become spaces and newlines stay, so jansson's line and column numbers still point into the
 * original text; UTF-8 continuation bytes inside comments are dropped because jansson counts
 * columns in characters. Returns NULL for an unterminated block comment (*line, *col = its
 * start). */
char *fg_config_strip_comments(const char *text, int *line, int *col)
{
    size_t len = strlen(text);
    char *out = fg_config_xcalloc(len + 1, 1);
    size_t o = 0;
    int ln = 1, cl = 0, start_ln = 0, start_cl = 0;
    enum { CODE, STRING, LINE, BLOCK } st = CODE;

    /* A UTF-8 byte order mark is not JSON; editors on some platforms write one. */
    if ((unsigned char)text[0] == 0xef && (unsigned char)text[1] == 0xbb &&
        (unsigned char)text[2] == 0xbf)
        text += 3;
    for (const char *p = text; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        int cont = (ch & 0xc0) == 0x80;
        if (ch == '\n') {
            ln++;
            cl = 0;
        } else if (!cont) {
            cl++;
        }
        switch (st) {
        case CODE:
            if (ch == '"') {
                st = STRING;
            } else if (ch == '/' && p[1] == '/') {
                st = LINE;
                out[o++] = ' ';
                continue;
            } else if (ch == '/' && p[1] == '*') {
                st = BLOCK;
                start_ln = ln;
                start_cl = cl;
                out[o++] = ' ';
                out[o++] = ' ';
                p++;
                cl++;
                continue;
            }
            break;
        case STRING:
            if (ch == '\\' && p[1] != '\0') {
                out[o++] = (char)ch;
                ch = (unsigned char)*++p;
                cl++;
            } else if (ch == '"' || ch == '\n') {
                st = CODE; /* a raw newline is a JSON error; let jansson report it */
            }
            break;
        case LINE:
            if (ch == '\n')
                st = CODE;
            else if (!cont)
                ch = ' ';
            else
                continue;
            break;
        case BLOCK:
            if (ch == '*' && p[1] == '/') {
                st = CODE;
                out[o++] = ' ';
                out[o++] = ' ';
                p++;
                cl++;
                continue;
            }
            if (cont)
                continue;
            if (ch != '\n' && ch != '\r')
                ch = ' ';
            break;
        }
        out[o++] = (char)ch;
    }
    if (st == BLOCK) {
        free(out);
        *line = start_ln;
        *col = start_cl;
        return NULL;
    }
    out[o] = '\0';
    return out;
}

/* ---- top level ---- */

static int load_user(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;

    if (fg_config_get_string(c, root, "user", 1, &cfg->user) < 0 ||
        fg_config_get_string(c, root, "group", 1, &cfg->group) < 0 ||
        fg_config_get_string(c, root, "statusGroup", 1, &cfg->status_group) < 0)
        return -1;
    if (cfg->group && cfg->user == NULL)
        return fg_config_fail(c, "group", "requires \"user\"");
    if (cfg->user) {
        struct passwd *pw = getpwnam(cfg->user);
        if (pw == NULL)
            return fg_config_fail(c, "user", "unknown user \"%s\"", cfg->user);
        if (cfg->group == NULL) {
            struct group *gr = getgrgid(pw->pw_gid);
            if (gr)
                cfg->group = fg_config_xstrdup(gr->gr_name);
        }
    }
    if (cfg->group && getgrnam(cfg->group) == NULL)
        return fg_config_fail(c, "group", "unknown group \"%s\"", cfg->group);
    if (cfg->status_group && getgrnam(cfg->status_group) == NULL)
        return fg_config_fail(c, "statusGroup", "unknown group \"%s\"", cfg->status_group);
    return 0;
}

static int load_workers(fg_config_ctx_t *c, const json_t *root)
{
    json_t *v = json_object_get(root, "workers");
    long n = 0;

    if (v == NULL || (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        c->cfg->workers = n < 1 ? 1 : n > FG_CONFIG_MAX_WORKERS ? FG_CONFIG_MAX_WORKERS : (int)n;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > FG_CONFIG_MAX_WORKERS)
        return fg_config_fail(c, "workers", "expected \"auto\" or an integer 1..%d",
                              FG_CONFIG_MAX_WORKERS);
    c->cfg->workers = (int)json_integer_value(v);
    return 0;
}

static int load_path(fg_config_ctx_t *c, const json_t *obj, const char *key, char **out)
{
    char *s = NULL;
    int rc = fg_config_get_string(c, obj, key, 1, &s);
    if (rc == 1) {
        free(*out);
        *out = fg_config_abs_path(c, s);
        free(s);
    }
    return rc;
}

/* log.accessLogFields: the names of common/log.h, each once, in any order (lines keep
 * the documented order). Absent: *out stays 0, the default set. */
static int load_access_fields(fg_config_ctx_t *c, const json_t *o, uint64_t *out)
{
    json_t *arr = NULL, *v;
    size_t i;
    if (fg_config_get_array(c, o, "accessLogFields", &arr) < 0)
        return -1;
    if (arr == NULL)
        return 0;
    if (json_array_size(arr) == 0)
        return fg_config_fail(c, "accessLogFields", "must name at least one field");
    size_t mark = fg_config_push_key(c, "accessLogFields");
    int rc = 0;
    json_array_foreach(arr, i, v)
    {
        size_t m = fg_config_push_index(c, i);
        int f = json_is_string(v) ? fg_log_access_field(json_string_value(v)) : -1;
        if (!json_is_string(v))
            rc = fg_config_fail(c, NULL, "expected a field name, got %s", fg_config_type_name(v));
        else if (f < 0)
            rc = fg_config_fail(c, NULL, "unknown access log field \"%s\" (see docs/logging.md)",
                                json_string_value(v));
        else if (*out & FG_AL_BIT(f))
            rc = fg_config_fail(c, NULL, "field \"%s\" listed twice", json_string_value(v));
        else
            *out |= FG_AL_BIT(f);
        fg_config_pop(c, m);
        if (rc < 0)
            break;
    }
    fg_config_pop(c, mark);
    return rc;
}

static int load_log(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {
        "errorLog",        "level",          "format",          "accessLog",
        "accessLogBuffer", "accessLogFlush", "accessLogFields", NULL};
    static const char *const levels[] = {"error", "warn", "notice", "info", "debug", NULL};
    static const char *const formats[] = {"text", "json", NULL};
    fg_log_config_t *lc = &c->cfg->log;
    json_t *o = NULL;
    char *s = NULL;
    uint64_t n;

    lc->level = FG_LOG_INFO;
    lc->access_buffer = 64 * KIB;
    lc->access_flush_ms = 1000;
    if (fg_config_get_object(c, root, "log", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "log");
    int rc = -1;
    if (fg_config_get_string(c, o, "errorLog", 1, &s) < 0)
        goto out;
    lc->path = fg_config_xstrdup("stderr");
    if (s && strcmp(s, "stderr") != 0) {
        free(lc->path);
        lc->path = fg_config_abs_path(c, s);
    }
    free(s);
    s = NULL;
    if (fg_config_get_enum(c, o, "level", levels, &lc->level) < 0 ||
        fg_config_get_enum(c, o, "format", formats, &lc->json) < 0 ||
        fg_config_get_string(c, o, "accessLog", 1, &s) < 0)
        goto out;
    if (s && strcmp(s, "off") != 0)
        lc->access_path = fg_config_abs_path(c, s);
    n = lc->access_buffer;
    if (fg_config_get_size(c, o, "accessLogBuffer", &n) < 0)
        goto out;
    if (n > 64 * KIB * KIB) {
        fg_config_fail(c, "accessLogBuffer", "must be at most 64m");
        goto out;
    }
    lc->access_buffer = (size_t)n;
    if (fg_config_get_duration(c, o, "accessLogFlush", &lc->access_flush_ms) < 0 ||
        load_access_fields(c, o, &lc->access_fields) < 0)
        goto out;
    rc = 0;
out:
    free(s);
    fg_config_pop(c, mark);
    return rc;
}

/* "webSocketDrainTimeout": a retiring worker's open WebSockets stay until then. The worker
 * itself ends at shutdownTimeout, so the drain must end before. */
static int load_websocket_drain(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    uint64_t def = cfg->shutdown_timeout_ms / 3 * 2;
    cfg->websocket_drain_timeout_ms = def < 20 * 1000 ? def : 20 * 1000;
    if (json_object_get(root, "webSocketDrainTimeout") == NULL)
        return 0;
    if (fg_config_get_duration(c, root, "webSocketDrainTimeout", &cfg->websocket_drain_timeout_ms) <
        0)
        return -1;
    if (cfg->websocket_drain_timeout_ms >= cfg->shutdown_timeout_ms)
        return fg_config_fail(c, "webSocketDrainTimeout", "must be shorter than shutdownTimeout");
    return 0;
}

static int load_globals(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const shm_keys[] = {"size", "rateLimitZone", "accessControlZone",
                                           "abnormalIpZone", NULL};
    fg_config_t *cfg = c->cfg;
    long long n = 0;
    uint64_t size = 64 * KIB * KIB;
    json_t *shm = NULL;

    cfg->pid_file = fg_config_xstrdup("/run/fastgateway.pid");
    cfg->status_socket = fg_config_xstrdup("/run/fastgateway.sock");
    cfg->shutdown_timeout_ms = 30 * 1000;
    cfg->drain_timeout_ms = 2 * 1000;
    if (load_workers(c, root) < 0 || load_user(c, root) < 0 ||
        load_path(c, root, "pidFile", &cfg->pid_file) < 0 ||
        load_path(c, root, "statusSocket", &cfg->status_socket) < 0 ||
        fg_config_get_int(c, root, "workerRlimitNofile", 0, INT_MAX, &n) < 0 ||
        fg_config_get_duration(c, root, "shutdownTimeout", &cfg->shutdown_timeout_ms) < 0 ||
        fg_config_get_duration(c, root, "drainTimeout", &cfg->drain_timeout_ms) < 0 ||
        load_websocket_drain(c, root) < 0 ||
        fg_config_get_bool(c, root, "watchConfig", &cfg->watch_config) < 0 ||
        fg_config_get_object(c, root, "shm", shm_keys, &shm) < 0)
        return -1;
    cfg->rlimit_nofile = (uint64_t)n;
    size_t mark = fg_config_push_key(c, "shm");
    int rc = fg_config_get_size(c, shm, "size", &size);
    if (rc >= 0 && size < KIB * KIB)
        rc = fg_config_fail(c, "size", "must be at least 1m");
    else if (rc >= 0 && size > (uint64_t)SIZE_MAX / 2)
        rc = fg_config_fail(c, "size", "is larger than this machine can map");
    fg_config_pop(c, mark);
    cfg->shm_size = (size_t)size;
    /* The status socket path must fit sun_path (108 bytes on Linux, with the NUL). */
    if (rc >= 0 && strlen(cfg->status_socket) >= 108)
        rc = fg_config_fail(c, "statusSocket", "path is longer than 107 bytes");
    return rc < 0 ? -1 : 0;
}

/* ---- servers ---- */

static int load_server_limits(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {
        "maxRequestLineSize", "maxHeaderSize",           "maxHeaders", "maxRequestBodySize",
        "maxConnections",     "maxConnectionsPerClient", NULL};
    json_t *o = NULL, *body;
    uint64_t line = s->max_request_line, hdr = s->max_header_size, bs;
    long long nh = s->max_headers, maxc = 0, perc = 0;

    if (fg_config_get_object(c, srv, "limits", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "limits");
    int rc = -1;
    if (fg_config_get_size(c, o, "maxRequestLineSize", &line) < 0 ||
        fg_config_get_size(c, o, "maxHeaderSize", &hdr) < 0 ||
        fg_config_get_int(c, o, "maxHeaders", 1, 65535, &nh) < 0 ||
        fg_config_get_int(c, o, "maxConnections", 0, FG_MAX_CONN_CAP, &maxc) < 0 ||
        fg_config_get_int(c, o, "maxConnectionsPerClient", 0, FG_MAX_CONN_CAP, &perc) < 0)
        goto out;
    if (maxc > 0 && perc > maxc) {
        fg_config_fail(c, "maxConnectionsPerClient",
                       "%lld is more than maxConnections (%lld): it could never apply", perc, maxc);
        goto out;
    }
    if (line < 16 || line > 1024 * KIB) {
        fg_config_fail(c, "maxRequestLineSize", "must be between 16 and 1m");
        goto out;
    }
    if (hdr < 64 || hdr > 16 * KIB * KIB) {
        fg_config_fail(c, "maxHeaderSize", "must be between 64 and 16m");
        goto out;
    }
    body = o ? json_object_get(o, "maxRequestBodySize") : NULL;
    if ((json_is_integer(body) && json_integer_value(body) == -1) ||
        (json_is_string(body) && strcmp(json_string_value(body), "unlimited") == 0)) {
        s->max_request_body_size = -1;
    } else {
        bs = (uint64_t)s->max_request_body_size;
        if (fg_config_get_size(c, o, "maxRequestBodySize", &bs) < 0)
            goto out;
        if (bs > INT64_MAX) {
            fg_config_fail(c, "maxRequestBodySize", "is too large");
            goto out;
        }
        s->max_request_body_size = (int64_t)bs;
    }
    s->max_request_line = (size_t)line;
    s->max_header_size = (size_t)hdr;
    s->max_headers = (unsigned)nh;
    s->max_connections = (unsigned)maxc;
    s->max_per_client = (unsigned)perc;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_server_timeouts(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"header", "body", "keepAlive", "send", NULL};
    static const char *const positive[] = {"header", "body", "send"};
    uint64_t *vals[] = {&s->header_timeout_ms, &s->body_timeout_ms, &s->send_timeout_ms};
    json_t *o = NULL;

    if (fg_config_get_object(c, srv, "timeouts", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "timeouts");
    int rc = 0;
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        if (fg_config_get_duration(c, o, positive[i], vals[i]) < 0)
            rc = -1;
        else if (*vals[i] == 0)
            rc = fg_config_fail(c, positive[i], "must be greater than 0");
    }
    /* keepAlive 0 is allowed: it disables keep-alive, as in nginx. */
    if (rc == 0 && fg_config_get_duration(c, o, "keepAlive", &s->keepalive_timeout_ms) < 0)
        rc = -1;
    fg_config_pop(c, mark);
    return rc;
}

static int load_server(fg_config_ctx_t *c, const json_t *o, fg_server_t *s)
{
    static const char *const keys[] = {"id",
                                       "name",
                                       "listen",
                                       "enabled",
                                       "backlog",
                                       "limits",
                                       "timeouts",
                                       "maxKeepAliveRequests",
                                       "rateLimits",
                                       "accessControl",
                                       "clientIpSource",
                                       "trustedProxies",
                                       "proxyProtocol",
                                       "ignoreClientAbort",
                                       "serverHeader",
                                       "errorPages",
                                       "exposeAccessListIds",
                                       "tls",
                                       "redirectHttps",
                                       "http2",
                                       "maxWebSockets",
                                       "acceptTunnels",
                                       "tcp",
                                       "compression",
                                       NULL};
    long long backlog = 511, maxka = 0, maxws = 0;

    s->enabled = 1;
    s->max_request_line = 8 * KIB;
    s->max_header_size = 32 * KIB;
    s->max_headers = 100;
    s->max_request_body_size = 100 * KIB * KIB;
    s->header_timeout_ms = 60 * 1000;
    s->body_timeout_ms = 60 * 1000;
    s->keepalive_timeout_ms = 75 * 1000;
    s->send_timeout_ms = 60 * 1000;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &s->id) < 0 ||
        fg_config_get_string(c, o, "name", 0, &s->name) < 0 ||
        fg_config_require_string(c, o, "listen", &s->listen) < 0)
        return -1;
    if (fg_config_parse_listen(s->listen, &s->addr, &s->addrlen) < 0)
        return fg_config_fail(c, "listen",
                              "\"%s\" is not a valid listen address (use \"IP:PORT\", "
                              "\"[IPv6]:PORT\", \"*:PORT\" or \":PORT\")",
                              s->listen);
    if (fg_config_get_bool(c, o, "enabled", &s->enabled) < 0 ||
        fg_config_get_int(c, o, "backlog", 1, 65535, &backlog) < 0 ||
        load_server_limits(c, o, s) < 0 || load_server_timeouts(c, o, s) < 0 ||
        fg_config_get_int(c, o, "maxKeepAliveRequests", 0, UINT_MAX, &maxka) < 0 ||
        fg_config_get_bool(c, o, "ignoreClientAbort", &s->ignore_client_abort) < 0 ||
        fg_config_get_int(c, o, "maxWebSockets", 0, UINT_MAX, &maxws) < 0 ||
        fg_config_get_bool(c, o, "acceptTunnels", &s->accept_tunnels) < 0 ||
        fg_config_load_server_security(c, o, s) < 0 ||
        fg_config_load_server_responses(c, o, s) < 0 || fg_config_load_server_tls(c, o, s) < 0 ||
        fg_config_load_server_http2(c, o, s) < 0 || fg_config_load_server_tcp(c, o, s) < 0 ||
        fg_config_load_compression(c, o, &s->compression) < 0)
        return -1;
    if (s->accept_tunnels && !c->cfg->tunnels.enabled)
        return fg_config_fail(c, "acceptTunnels", "needs a top-level \"tunnels\" section");
    s->backlog = (int)backlog;
    s->max_keepalive_requests = (unsigned)maxka;
    s->max_websockets = (unsigned)maxws;
    return 0;
}

static int load_server_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_server(c, o, out);
}

static int load_servers(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    void *items;
    int rc = fg_config_load_list(c, root, "servers", sizeof(fg_server_t), offsetof(fg_server_t, id),
                                 load_server_item, &items, &cfg->nservers);
    cfg->servers = items;
    if (rc < 0)
        return -1;
    if (cfg->nservers == 0)
        return fg_config_fail(c, "servers", "at least one server is required");
    for (size_t i = 1; i < cfg->nservers; i++) {
        const fg_server_t *s = &cfg->servers[i];
        for (size_t j = 0; j < i; j++) {
            if (cfg->servers[j].addrlen != s->addrlen ||
                memcmp(&cfg->servers[j].addr, &s->addr, s->addrlen) != 0)
                continue;
            size_t mark = fg_config_push_key(c, "servers");
            fg_config_push_index(c, i);
            int r = fg_config_fail(c, "listen",
                                   "duplicate listen address \"%s\" (first at servers[%zu])",
                                   s->listen, j);
            fg_config_pop(c, mark);
            return r;
        }
    }
    return 0;
}

/* ---- resolution ---- */

static int route_on_server(const fg_route_t *r, const fg_server_t *s)
{
    if (s->tcp.enabled)
        return 0; /* it relays bytes: no request reaches a route there */
    if (r->nserver_ids == 0)
        return 1;
    for (size_t i = 0; i < r->nserver_ids; i++)
        if (strcmp(r->server_ids[i], s->id) == 0)
            return 1;
    return 0;
}

/* Route pointers by `order`, then by position in cfg->routes (configuration order), which
 * makes qsort's order stable. */
static int route_order_cmp(const void *a, const void *b)
{
    const fg_route_t *x = *(fg_route_t *const *)a, *y = *(fg_route_t *const *)b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* server->routes: the server's routes by `order`, keeping configuration order among equals;
 * O(n log n) per server. */
static void attach_routes(fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nservers; i++) {
        fg_server_t *s = &cfg->servers[i];
        s->routes = fg_config_xcalloc(cfg->nroutes + 1, sizeof(fg_route_t *));
        for (size_t j = 0; j < cfg->nroutes; j++)
            if (route_on_server(&cfg->routes[j], s))
                s->routes[s->nroutes++] = &cfg->routes[j];
        qsort(s->routes, s->nroutes, sizeof(fg_route_t *), route_order_cmp);
    }
}

static int load_root(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {"workers",
                                       "user",
                                       "group",
                                       "pidFile",
                                       "statusSocket",
                                       "statusGroup",
                                       "workerRlimitNofile",
                                       "shutdownTimeout",
                                       "drainTimeout",
                                       "webSocketDrainTimeout",
                                       "shm",
                                       "log",
                                       "servers",
                                       "routes",
                                       "clusters",
                                       "rateLimits",
                                       "accessControl",
                                       "security",
                                       "abnormalIp",
                                       "tenantHeader",
                                       "serverHeader",
                                       "errorPages",
                                       "exposeAccessListIds",
                                       "certificates",
                                       "tls",
                                       "watchConfig",
                                       "metrics",
                                       "admin",
                                       "tunnels",
                                       "acme",
                                       NULL};

    if (!json_is_object(root))
        return fg_config_fail(c, NULL, "expected an object at the top level, got %s",
                              fg_config_type_name(root));
    if (fg_config_check_keys(c, root, keys) < 0 || load_globals(c, root) < 0 ||
        load_log(c, root) < 0 || fg_config_load_responses(c, root) < 0 ||
        fg_config_load_certificates(c, root) < 0 || fg_config_load_tunnels(c, root) < 0 ||
        load_servers(c, root) < 0 || fg_config_load_clusters(c, root) < 0 ||
        fg_config_load_routes(c, root) < 0 || fg_config_resolve_error_pages(c) < 0 ||
        fg_config_load_security(c, root) < 0 || fg_config_resolve_security(c) < 0 ||
        fg_config_load_metrics(c, root) < 0 || fg_config_load_admin(c, root) < 0 ||
        fg_config_link_tcp(c) < 0)
        return -1;
    attach_routes(c->cfg);
    return 0;
}

/* ---- public ---- */

/* The document of text (comments stripped) with the API state merged in; NULL with err. */
static json_t *parse_merged(fg_config_ctx_t *c, const char *json, const json_t *state)
{
    json_error_t jerr;
    int line = 0, col = 0;
    char *text = fg_config_strip_comments(json, &line, &col);
    if (text == NULL) {
        snprintf(c->err, c->errlen, "%s:%d:%d: unterminated /* comment", c->name, line, col);
        return NULL;
    }
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (root == NULL) {
        snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->name, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (json_is_object(root) && fg_config_admin_apply_state(c, root, state) < 0) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static fg_config_t *load_text(const char *name, const char *json, fg_config_keys_fn on_keys,
                              void *arg, const json_t *state, char *err, size_t errlen)
{
    fg_config_ctx_t c = {
        .name = name, .err = err, .errlen = errlen, .on_keys = on_keys, .on_keys_arg = arg};
    fg_config_t *cfg = NULL;

    if (errlen)
        err[0] = '\0';
    char *dir = fg_config_base_dir(name);
    c.basedir = dir;
    json_t *root = parse_merged(&c, json, state);
    if (root == NULL) {
        free(dir);
        return NULL;
    }
    cfg = fg_config_xcalloc(1, sizeof(*cfg));
    cfg->file = fg_config_xstrdup(name);
    c.cfg = cfg;
    int rc = load_root(&c, root);
    free(dir);
    json_decref(root);
    if (rc < 0) {
        fg_config_free(cfg);
        return NULL;
    }
    return cfg;
}

fg_config_t *fg_config_load_string(const char *name, const char *json, char *err, size_t errlen)
{
    return load_text(name, json, NULL, NULL, NULL, err, errlen);
}

static const char *file_kind(mode_t mode)
{
    return S_ISDIR(mode)    ? "a directory"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISFIFO(mode) ? "a FIFO"
           : S_ISSOCK(mode) ? "a socket"
                            : "not a regular file";
}

/* The whole of `file` as a NUL-terminated string (*len bytes), or NULL with the reason in err.
 * Only a regular file (after symlinks) up to FG_CONFIG_MAX_FILE_SIZE is read: a device such as
 * /dev/zero would never end, and a FIFO could block forever (O_NONBLOCK makes its open return
 * at once, and fstat refuses it before any read). The bound holds for a file that grows while
 * it is read. */
static char *read_file(const char *file, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

    if (fd == -1) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == -1) {
        snprintf(err, errlen, "%s: fstat: %s", file, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: is %s, not a regular file", file, file_kind(st.st_mode));
        goto out_close;
    }
    if (st.st_size > FG_CONFIG_MAX_FILE_SIZE) {
        snprintf(err, errlen, "%s: file is %lld bytes, more than the %d MiB a configuration may be",
                 file, (long long)st.st_size, FG_CONFIG_MAX_FILE_SIZE >> 20);
        goto out_close;
    }
    size_t cap = (size_t)st.st_size + 4096, n = 0;
    buf = fg_config_xcalloc(cap + 1, 1);
    for (;;) {
        if (n == cap) {
            if (cap > FG_CONFIG_MAX_FILE_SIZE) {
                snprintf(err, errlen,
                         "%s: grew past the %d MiB a configuration may be while "
                         "being read",
                         file, FG_CONFIG_MAX_FILE_SIZE >> 20);
                goto out_free;
            }
            cap = cap * 2 > (size_t)FG_CONFIG_MAX_FILE_SIZE + 1
                      ? (size_t)FG_CONFIG_MAX_FILE_SIZE + 1
                      : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL)
                abort();
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            snprintf(err, errlen, "%s: read: %s", file, strerror(errno));
            goto out_free;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
out_free:
    free(buf);
out_close:
    close(fd);
    return NULL;
}

static fg_config_t *load_file(const char *file, fg_config_keys_fn on_keys, void *arg,
                              const json_t *state, char *err, size_t errlen)
{
    size_t len = 0;
    char *buf = read_file(file, &len, err, errlen);
    if (buf == NULL)
        return NULL;
    if (strlen(buf) != len) {
        snprintf(err, errlen, "%s: file contains a NUL byte", file);
        free(buf);
        return NULL;
    }
    fg_config_t *cfg = load_text(file, buf, on_keys, arg, state, err, errlen);
    free(buf);
    return cfg;
}

fg_config_t *fg_config_load_traced(const char *file, fg_config_keys_fn on_keys, void *arg,
                                   char *err, size_t errlen)
{
    return load_file(file, on_keys, arg, NULL, err, errlen);
}

fg_config_t *fg_config_load_state(const char *file, const json_t *state, char *err, size_t errlen)
{
    return load_file(file, NULL, NULL, state, err, errlen);
}

json_t *fg_config_merged_json(const char *file, const json_t *state, char *err, size_t errlen)
{
    size_t len = 0;
    char *buf = read_file(file, &len, err, errlen);
    if (buf == NULL)
        return NULL;
    fg_config_ctx_t c = {.name = file, .err = err, .errlen = errlen};
    char *dir = fg_config_base_dir(file);
    c.basedir = dir;
    json_t *root = parse_merged(&c, buf, state);
    free(dir);
    free(buf);
    return root;
}

fg_config_t *fg_config_load(const char *file, char *err, size_t errlen)
{
    return fg_config_load_traced(file, NULL, NULL, err, errlen);
}

fg_cluster_t *fg_config_find_cluster(const fg_config_t *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (strcmp(cfg->clusters[i].id, id) == 0)
            return &cfg->clusters[i];
    return NULL;
}

void fg_config_free(fg_config_t *cfg)
{
    if (cfg == NULL)
        return;
    fg_config_free_tls(cfg);
    fg_config_free_security(cfg);
    fg_config_free_routes(cfg);
    fg_config_free_clusters(cfg);
    fg_config_free_tunnels(cfg);
    for (size_t i = 0; i < cfg->nservers; i++) {
        fg_server_t *s = &cfg->servers[i];
        free(s->id);
        free(s->name);
        free(s->listen);
        free(s->routes);
        free(s->tcp.cluster_id);
        for (size_t j = 0; j < s->compression.ntypes; j++)
            free(s->compression.types[j]);
        free(s->compression.types);
        fg_config_free_responses(&s->responses);
    }
    fg_config_free_responses(&cfg->responses);
    free(cfg->servers);
    free(cfg->log.path);
    free(cfg->log.access_path);
    free(cfg->file);
    free(cfg->user);
    free(cfg->group);
    free(cfg->pid_file);
    free(cfg->status_socket);
    free(cfg->status_group);
    fg_config_free_metrics(cfg);
    fg_config_free_admin(cfg);
    if (cfg->json_root)
        json_decref(cfg->json_root);
    for (size_t i = 0; i < cfg->nwarnings; i++)
        free(cfg->warnings[i]);
    free(cfg->warnings);
    free(cfg);
}

void fg_config_log_warnings(const fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nwarnings; i++)
        fg_log_warn("%s", cfg->warnings[i]);
}
