/* The agent's configuration file: see agent/config.h. The typed getters and the error format
 * are the gateway loader's (common/config_impl.h), so both programs report a bad value the
 * same way. */
#include "agent/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_impl.h"
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/secret.h"

#define CONF_MAX (1024 * 1024) /* an agent's file is a few lines */

static const char *const top_keys[] = {
    "gateway",           "id",        "secretFile",       "tls",
    "services",          "reconnect", "heartbeatSeconds", "graceSeconds",
    "connectTimeoutMs",  "log",       "pidFile",          "connections",
    "shutdownTimeoutMs", NULL};

/* Split a ws:// or wss:// URL into cfg's host, port, path and Host field. */
static int parse_gateway(fg_config_ctx_t *c, fg_agent_config_t *cfg)
{
    const char *u = cfg->gateway, *p;
    if (strncmp(u, "wss://", 6) == 0) {
        cfg->tls = 1;
        p = u + 6;
    } else if (strncmp(u, "ws://", 5) == 0) {
        p = u + 5;
    } else {
        return fg_config_fail(c, "gateway", "\"%s\" is not a ws:// or wss:// URL", u);
    }
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (alen == 0 || memchr(p, '@', alen) != NULL || *rest == '#')
        return fg_config_fail(
            c, "gateway", "\"%s\": expected ws[s]://HOST[:PORT][/PATH] (no user, no fragment)", u);
    const char *host = p, *hend, *port = NULL;
    if (*p == '[') {
        hend = memchr(p, ']', alen);
        if (hend == NULL)
            return fg_config_fail(c, "gateway", "\"%s\": unterminated IPv6 address", u);
        host = p + 1;
        if (hend + 1 < p + alen) {
            if (hend[1] != ':')
                return fg_config_fail(c, "gateway", "\"%s\": bad port", u);
            port = hend + 2;
        }
    } else {
        hend = memchr(p, ':', alen);
        if (hend != NULL)
            port = hend + 1;
        else
            hend = p + alen;
    }
    size_t plen = port ? (size_t)(p + alen - port) : 0;
    if (hend == host)
        return fg_config_fail(c, "gateway", "\"%s\": no host", u);
    if (port && (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen || atoi(port) < 1 ||
                 atoi(port) > 65535))
        return fg_config_fail(c, "gateway", "\"%s\": the port must be 1..65535", u);
    cfg->host = strndup(host, (size_t)(hend - host));
    cfg->port = port ? strndup(port, plen) : strdup(cfg->tls ? "443" : "80");
    cfg->host_field = strndup(p, alen);
    cfg->path = strdup(*rest == '/' ? rest : *rest == '?' ? "/" : "/");
    if (*rest == '?') {
        free(cfg->path);
        if (asprintf(&cfg->path, "/%s", rest) < 0)
            cfg->path = NULL;
    }
    if (!cfg->host || !cfg->port || !cfg->host_field || !cfg->path)
        abort();
    for (const char *q = cfg->path; *q; q++)
        if (*q <= ' ' || *q == 0x7f)
            return fg_config_fail(c, "gateway", "\"%s\": the path has a space or control byte", u);
    return 0;
}

static int load_tls(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    static const char *const keys[] = {"ca", "serverName", "verify", "certificate", "key", NULL};
    json_t *o = NULL;
    if (fg_config_get_object(c, root, "tls", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "tls");
    char *ca = NULL, *crt = NULL, *key = NULL;
    int rc = -1;
    if (fg_config_get_string(c, o, "ca", 1, &ca) < 0 ||
        fg_config_get_string(c, o, "serverName", 1, &cfg->server_name) < 0 ||
        fg_config_get_bool(c, o, "verify", &cfg->verify) < 0 ||
        fg_config_get_string(c, o, "certificate", 1, &crt) < 0 ||
        fg_config_get_string(c, o, "key", 1, &key) < 0)
        goto out;
    if (ca != NULL)
        cfg->ca_file = fg_config_abs_path(c, ca);
    if ((crt == NULL) != (key == NULL)) {
        fg_config_fail(c, crt ? "key" : "certificate",
                       "\"certificate\" and \"key\" go together (a client certificate)");
        goto out;
    }
    if (crt != NULL) {
        cfg->cert_file = fg_config_abs_path(c, crt);
        cfg->key_file = fg_config_abs_path(c, key);
    }
    if (o != NULL && !cfg->tls) {
        fg_config_fail(c, NULL, "the gateway URL is ws://: TLS settings need wss://");
        goto out;
    }
    rc = 0;
out:
    free(ca);
    free(crt);
    free(key);
    fg_config_pop(c, mark);
    return rc;
}

/* A service name travels in a request field and names a cluster: the agent id's alphabet. */
static int load_service(fg_config_ctx_t *c, const char *name, const json_t *v,
                        fg_agent_service_t *s)
{
    static const char *const keys[] = {"address", "httpClient", NULL};
    size_t mark = fg_config_push_key(c, name);
    int rc = -1;
    s->name = fg_config_xstrdup(name);
    if (!fg_tunnel_id_valid(name, strlen(name))) {
        fg_config_fail(c, NULL, "a service name is 1 to %d characters of A-Z a-z 0-9 . _ -",
                       FG_TUNNEL_ID_MAX);
        goto out;
    }
    if (json_is_string(v)) {
        s->address = fg_config_xstrdup(json_string_value(v));
    } else if (json_is_object(v)) {
        json_t *client = NULL;
        if (fg_config_check_keys(c, v, keys) < 0 ||
            fg_config_require_string(c, v, "address", &s->address) < 0 ||
            fg_config_get_object(c, v, "httpClient", NULL, &client) < 0)
            goto out;
        if (client != NULL)
            s->client = json_incref(client);
    } else {
        fg_config_fail(c, NULL, "expected a URL string or an object with \"address\", got %s",
                       fg_config_type_name(v));
        goto out;
    }
    if (strncmp(s->address, "http://", 7) != 0 && strncmp(s->address, "https://", 8) != 0 &&
        strncmp(s->address, "tcp://", 6) != 0) {
        fg_config_fail(c, json_is_object(v) ? "address" : NULL,
                       "\"%s\" is not an http://, https:// or tcp:// URL", s->address);
        goto out;
    }
    if (s->client != NULL && strncmp(s->address, "https://", 8) != 0) {
        fg_config_fail(c, "httpClient", "applies to an https:// address only");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_services(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    json_t *o = json_object_get(root, "services");
    if (o == NULL)
        return fg_config_fail(c, "services", "is required (at least one service)");
    if (!json_is_object(o))
        return fg_config_fail(c, "services", "expected an object {name: URL}, got %s",
                              fg_config_type_name(o));
    if (json_object_size(o) == 0)
        return fg_config_fail(c, "services", "at least one service is required");
    cfg->services = fg_config_xcalloc(json_object_size(o), sizeof(*cfg->services));
    size_t mark = fg_config_push_key(c, "services");
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach(o, name, v)
    {
        if (load_service(c, name, v, &cfg->services[cfg->nservices++]) < 0) {
            rc = -1;
            break;
        }
    }
    fg_config_pop(c, mark);
    return rc;
}

static int get_number(fg_config_ctx_t *c, const json_t *o, const char *key, double min, double max,
                      double *out)
{
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return fg_config_fail(c, key, "expected a number, got %s", fg_config_type_name(v));
    double d = json_number_value(v);
    if (d < min || d > max)
        return fg_config_fail(c, key, "%g is out of range %g..%g", d, min, max);
    *out = d;
    return 1;
}

/* connections: "auto" (0: the gateway's worker count) or 1..FG_AGENT_CONNECTIONS_MAX. */
static int load_connections(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    const json_t *v = json_object_get(root, "connections");
    if (v == NULL || (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > FG_AGENT_CONNECTIONS_MAX)
        return fg_config_fail(c, "connections", "expected \"auto\" or an integer 1..%d",
                              FG_AGENT_CONNECTIONS_MAX);
    cfg->connections = (unsigned)json_integer_value(v);
    return 0;
}

static int load_reconnect(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    static const char *const keys[] = {"initialMs", "maxMs", "jitter", "stableMs", NULL};
    json_t *o = NULL;
    long long initial = 500, max = 30000, stable = 10000;
    if (fg_config_get_object(c, root, "reconnect", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "reconnect");
    int rc = -1;
    if (fg_config_get_int(c, o, "initialMs", 1, 3600000, &initial) < 0 ||
        fg_config_get_int(c, o, "maxMs", 1, 86400000, &max) < 0 ||
        fg_config_get_int(c, o, "stableMs", 0, 86400000, &stable) < 0 ||
        get_number(c, o, "jitter", 0, 1, &cfg->jitter) < 0)
        goto out;
    if (max < initial) {
        fg_config_fail(c, "maxMs", "%lld is less than initialMs (%lld)", max, initial);
        goto out;
    }
    cfg->initial_ms = (uint64_t)initial;
    cfg->max_ms = (uint64_t)max;
    cfg->stable_ms = (uint64_t)stable;
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

static int load_log(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    static const char *const keys[] = {"level", "errorLog", NULL};
    static const char *const levels[] = {"error", "warn", "notice", "info", "debug", NULL};
    json_t *o = NULL;
    if (fg_config_get_object(c, root, "log", keys, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "log");
    char *path = NULL;
    int rc = -1;
    if (fg_config_get_enum(c, o, "level", levels, &cfg->log_level) < 0 ||
        fg_config_get_string(c, o, "errorLog", 1, &path) < 0)
        goto out;
    if (path != NULL && strcmp(path, "stderr") != 0)
        cfg->error_log = fg_config_abs_path(c, path);
    rc = 0;
out:
    free(path);
    fg_config_pop(c, mark);
    return rc;
}

static int load_secret(fg_config_ctx_t *c, fg_agent_config_t *cfg)
{
    char why[256];
    int n = fg_secret_load(cfg->secret_file, cfg->secret, sizeof(cfg->secret), FG_TUNNEL_SECRET_MIN,
                           why, sizeof(why));
    if (n < 0)
        return fg_config_fail(c, "secretFile", "%s", why);
    cfg->secret_len = (size_t)n;
    return 0;
}

static int load_root(fg_config_ctx_t *c, const json_t *root, fg_agent_config_t *cfg)
{
    char *id = NULL, *secret = NULL, *pid = NULL;
    long long hb = 30, grace = 10, connect = 10000, drain = 30000;
    int rc = -1;
    if (!json_is_object(root))
        return fg_config_fail(c, NULL, "expected an object at the top, got %s",
                              fg_config_type_name(root));
    if (fg_config_check_keys(c, root, top_keys) < 0 ||
        fg_config_require_string(c, root, "gateway", &cfg->gateway) < 0 ||
        parse_gateway(c, cfg) < 0 || fg_config_require_string(c, root, "id", &id) < 0)
        goto out;
    if (!fg_tunnel_id_valid(id, strlen(id))) {
        fg_config_fail(c, "id", "\"%s\": an agent id is 1 to %d characters of A-Z a-z 0-9 . _ -",
                       id, FG_TUNNEL_ID_MAX);
        goto out;
    }
    snprintf(cfg->id, sizeof(cfg->id), "%s", id);
    if (fg_config_require_string(c, root, "secretFile", &secret) < 0)
        goto out;
    cfg->secret_file = fg_config_abs_path(c, secret);
    if (load_secret(c, cfg) < 0 || load_tls(c, root, cfg) < 0 || load_services(c, root, cfg) < 0 ||
        load_reconnect(c, root, cfg) < 0 || load_connections(c, root, cfg) < 0 ||
        fg_config_get_int(c, root, "heartbeatSeconds", 1, 86400, &hb) < 0 ||
        fg_config_get_int(c, root, "graceSeconds", 1, 86400, &grace) < 0 ||
        fg_config_get_int(c, root, "connectTimeoutMs", 100, 600000, &connect) < 0 ||
        fg_config_get_int(c, root, "shutdownTimeoutMs", 0, 3600000, &drain) < 0 ||
        load_log(c, root, cfg) < 0 || fg_config_get_string(c, root, "pidFile", 1, &pid) < 0)
        goto out;
    cfg->heartbeat_s = (unsigned)hb;
    cfg->grace_s = (unsigned)grace;
    cfg->connect_timeout_ms = (uint64_t)connect;
    cfg->shutdown_timeout_ms = (uint64_t)drain;
    if (pid != NULL)
        cfg->pid_file = fg_config_abs_path(c, pid);
    rc = 0;
out:
    free(id);
    free(secret);
    free(pid);
    return rc;
}

fg_agent_config_t *fg_agent_config_parse(const char *name, const char *text, char *err,
                                         size_t errlen)
{
    fg_config_ctx_t c = {.name = name, .err = err, .errlen = errlen};
    fg_agent_config_t *cfg = fg_config_xcalloc(1, sizeof(*cfg));
    cfg->file = fg_config_xstrdup(name);
    cfg->verify = 1;
    cfg->jitter = 0.3;
    cfg->log_level = FG_LOG_INFO;
    char *dir = fg_config_base_dir(name);
    c.basedir = dir;
    int line = 0, col = 0;
    json_error_t jerr;
    json_t *root = NULL;
    char *clean = fg_config_strip_comments(text, &line, &col);
    if (clean == NULL) {
        snprintf(err, errlen, "%s:%d:%d: unterminated /* comment", name, line, col);
        goto fail;
    }
    root = json_loads(clean, JSON_REJECT_DUPLICATES, &jerr);
    free(clean);
    if (root == NULL) {
        snprintf(err, errlen, "%s:%d:%d: %s", name, jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    if (load_root(&c, root, cfg) < 0)
        goto fail;
    json_decref(root);
    free(dir);
    return cfg;
fail:
    json_decref(root);
    free(dir);
    fg_agent_config_free(cfg);
    return NULL;
}

fg_agent_config_t *fg_agent_config_load(const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CONF_MAX + 1);
    size_t n = buf ? fread(buf, 1, CONF_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (buf == NULL || bad || n > CONF_MAX) {
        snprintf(err, errlen, "%s: %s", file,
                 buf == NULL ? "out of memory"
                 : bad       ? "read error"
                             : "larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        snprintf(err, errlen, "%s: file contains a NUL byte", file);
        free(buf);
        return NULL;
    }
    fg_agent_config_t *cfg = fg_agent_config_parse(file, buf, err, errlen);
    free(buf);
    return cfg;
}

void fg_agent_config_free(fg_agent_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nservices; i++) {
        free(cfg->services[i].name);
        free(cfg->services[i].address);
        free(cfg->services[i].resolved);
        free(cfg->services[i].authority);
        json_decref(cfg->services[i].client);
    }
    free(cfg->services);
    char **strs[] = {&cfg->file,        &cfg->gateway,    &cfg->host,        &cfg->port,
                     &cfg->path,        &cfg->host_field, &cfg->secret_file, &cfg->ca_file,
                     &cfg->server_name, &cfg->error_log,  &cfg->pid_file,    &cfg->cert_file,
                     &cfg->key_file};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    OPENSSL_cleanse(cfg->secret, sizeof(cfg->secret));
    free(cfg);
}
