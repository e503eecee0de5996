/* Configuration loader, part 2: routes (YARP's "Routes"): match, the action (cluster, static,
 * direct, redirect) and the transforms. References to servers and clusters are resolved here,
 * so clusters must be loaded first. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/config.h"
#include "common/config_impl.h"
#include "common/tunnel_proto.h"
#include "common/punycode.h"
#include "common/headers.h"

static void free_strings(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- match ---- */

/* A method is a token (RFC 9110 9.1); methods are case-sensitive but by convention upper
 * case, and YARP compares them case-insensitively, so store them upper-cased. */
static int load_methods(fg_config_ctx_t *c, const json_t *match, fg_route_match_t *m)
{
    if (fg_config_get_strings(c, match, "methods", &m->methods, &m->nmethods) < 0)
        return -1;
    for (size_t i = 0; i < m->nmethods; i++) {
        if (!fg_config_is_token(m->methods[i])) {
            size_t mark = fg_config_push_key(c, "methods");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL, "\"%s\" is not a valid method token", m->methods[i]);
            fg_config_pop(c, mark);
            return -1;
        }
        for (char *p = m->methods[i]; *p; p++)
            *p = (char)toupper((unsigned char)*p);
    }
    return 0;
}

/* Why host pattern h is invalid, or NULL: "name", "*.name" or "*", each with an optional
 * ":port" (1..65535); a name is letters, digits, '.', '-', '_' or an IPv6 literal in brackets. */
static const char *host_pattern_error(const char *h)
{
    const char *end = h + strlen(h), *colon = NULL;
    if (h[0] == '[') {
        const char *close = strchr(h, ']');
        if (close == NULL || close == h + 1)
            return "an IPv6 literal needs its closing \"]\"";
        if (strspn(h + 1, "0123456789abcdefABCDEF:.") != (size_t)(close - h - 1))
            return "not an IPv6 literal";
        if (close[1] != '\0' && close[1] != ':')
            return "nothing but \":PORT\" may follow \"]\"";
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strchr(h, ':');
        if (colon && strchr(colon + 1, ':'))
            return "an IPv6 address goes in brackets";
        const char *name_end = colon ? colon : end;
        size_t n = (size_t)(name_end - h);
        if (n > 1 && h[n - 1] == '.' && h[0] != '*')
            n--; /* "example.com." is the same host ("*." is no pattern at all) */
        if (n == 0)
            return "empty host name";
        if (strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_*") <
            (size_t)(name_end - h))
            return "not a valid host";
        const char *star = memchr(h, '*', n);
        if (star && !(n == 1 || (star == h && h[1] == '.' && n > 2 && !memchr(h + 1, '*', n - 1))))
            return "'*' may only stand alone or start \"*.\" followed by a name";
    }
    if (colon) {
        char *pend;
        long port = strtol(colon + 1, &pend, 10);
        if (colon[1] < '0' || colon[1] > '9' || *pend != '\0' || port < 1 || port > 65535)
            return "the port must be 1..65535";
    }
    return NULL;
}

/* A host written in Unicode is kept in its A-label form ("bücher.example" becomes
 * "xn--bcher-kva.example"), the form clients send on the wire (RFC 5891 4.4). Returns why it
 * cannot be converted, or NULL. */
static const char *to_ascii_host(char **host)
{
    const char *h = *host;
    size_t n = strlen(h);
    int ascii = 1;
    for (size_t i = 0; i < n; i++)
        ascii &= (unsigned char)h[i] < 0x80;
    if (ascii)
        return NULL;
    size_t cap = 4 * n + 64;
    char *out = fg_config_xcalloc(cap, 1);
    if (fg_punycode_host(h, n, out, cap) < 0) {
        free(out);
        return "not valid UTF-8, or a label too long to encode";
    }
    free(*host);
    *host = out;
    return NULL;
}

static int load_hosts(fg_config_ctx_t *c, const json_t *match, fg_route_match_t *m)
{
    if (fg_config_get_strings(c, match, "hosts", &m->hosts, &m->nhosts) < 0)
        return -1;
    for (size_t i = 0; i < m->nhosts; i++) {
        const char *why = to_ascii_host(&m->hosts[i]);
        if (why == NULL)
            why = host_pattern_error(m->hosts[i]);
        if (why) {
            size_t mark = fg_config_push_key(c, "hosts");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL, "\"%s\": %s", m->hosts[i], why);
            fg_config_pop(c, mark);
            return -1;
        }
    }
    return 0;
}

/* One entry of match.headers or match.queryParameters. Exists/NotExists take no values; all
 * other modes need at least one (YARP rejects both mistakes). */
static int load_kv(fg_config_ctx_t *c, const json_t *o, fg_match_kv_t *kv, int header)
{
    static const char *const keys[] = {"name", "values", "mode", "isCaseSensitive", NULL};
    static const char *const hmodes[] = {"ExactHeader", "HeaderPrefix", "Contains", "NotContains",
                                         "Exists",      "NotExists",    NULL};
    static const char *const qmodes[] = {"Exact",       "Prefix", "Contains",
                                         "NotContains", "Exists", NULL};
    const char *const *modes = header ? hmodes : qmodes;

    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 ||
        fg_config_require_string(c, o, "name", &kv->name) < 0)
        return -1;
    if (header && !fg_config_is_token(kv->name))
        return fg_config_fail(c, "name", "\"%s\" is not a valid header name", kv->name);
    if (fg_config_get_enum(c, o, "mode", modes, &kv->mode) < 0 ||
        fg_config_get_bool(c, o, "isCaseSensitive", &kv->case_sensitive) < 0 ||
        fg_config_get_strings(c, o, "values", &kv->values, &kv->nvalues) < 0)
        return -1;
    int exists = header ? kv->mode == FG_HDR_EXISTS || kv->mode == FG_HDR_NOT_EXISTS
                        : kv->mode == FG_QUERY_EXISTS;
    if (exists && kv->nvalues > 0)
        return fg_config_fail(c, "values", "must not be set for mode %s", modes[kv->mode]);
    if (!exists && kv->nvalues == 0)
        return fg_config_fail(c, "values", "at least one value is required for mode %s",
                              modes[kv->mode]);
    if (kv->values == NULL)
        kv->values = fg_config_xcalloc(1, sizeof(char *));
    return 0;
}

static int load_kvs(fg_config_ctx_t *c, const json_t *match, const char *key, fg_match_kv_t **out,
                    size_t *n, int header)
{
    json_t *arr = NULL;
    int rc = fg_config_get_array(c, match, key, &arr);
    if (rc <= 0)
        return rc;
    *n = json_array_size(arr);
    *out = fg_config_xcalloc(*n, sizeof(fg_match_kv_t));
    size_t mark = fg_config_push_key(c, key);
    for (size_t i = 0; i < *n; i++) {
        size_t m = fg_config_push_index(c, i);
        if (load_kv(c, json_array_get(arr, i), &(*out)[i], header) < 0)
            return -1;
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return 0;
}

static int load_match(fg_config_ctx_t *c, const json_t *ro, fg_route_t *r)
{
    static const char *const keys[] = {"path",    "hosts",           "methods",
                                       "headers", "queryParameters", NULL};
    fg_route_match_t *m = &r->match;
    json_t *o = NULL;

    if (fg_config_get_object(c, ro, "match", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return fg_config_fail(c, NULL, "missing required key \"match\"");
    size_t mark = fg_config_push_key(c, "match");
    int rc = -1;
    if (fg_config_get_string(c, o, "path", 1, &m->path) < 0)
        goto out;
    if (m->path && m->path[0] != '/') {
        fg_config_fail(c, "path", "\"%s\" must start with \"/\"", m->path);
        goto out;
    }
    if (load_hosts(c, o, m) < 0 || load_methods(c, o, m) < 0 ||
        load_kvs(c, o, "headers", &m->headers, &m->nheaders, 1) < 0 ||
        load_kvs(c, o, "queryParameters", &m->query, &m->nquery, 0) < 0)
        goto out;
    /* YARP: a route must match on a path or on hosts; anything else would match everything by
     * accident. */
    if (m->path == NULL && m->nhosts == 0) {
        fg_config_fail(c, NULL, "a route needs match.path or match.hosts");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* ---- actions ---- */

static int load_static(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    static const char *const keys[] = {"root", "index", "tryFiles", NULL};
    char *root = NULL;
    struct stat st;

    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "root", &root) < 0)
        return -1;
    r->static_root = fg_config_abs_path(c, root);
    free(root);
    if (stat(r->static_root, &st) == -1)
        return fg_config_fail(c, "root", "\"%s\": %s", r->static_root, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fg_config_fail(c, "root", "\"%s\" is not a directory", r->static_root);
    if (fg_config_get_strings(c, o, "index", &r->static_index, &r->nstatic_index) < 0 ||
        fg_config_get_strings(c, o, "tryFiles", &r->static_try_files, &r->nstatic_try_files) < 0)
        return -1;
    for (size_t i = 0; i < r->nstatic_try_files; i++) {
        /* A candidate names a file below the root ("/..." or "{path}..."); "=CODE" answers
         * with an error status and, as in nginx, can only come last. */
        const char *pat = r->static_try_files[i];
        const char *why = NULL;
        if (pat[0] == '=') {
            char *end;
            long code = strtol(pat + 1, &end, 10);
            if (end == pat + 1 || *end != '\0' || code < 400 || code > 599)
                why = "\"=CODE\" needs an error status 400..599";
            else if (i + 1 < r->nstatic_try_files)
                why = "\"=CODE\" must be the last entry: nothing after it is ever tried";
        } else if (pat[0] != '/' && strncmp(pat, "{path}", 6) != 0) {
            why = "a candidate starts with \"/\" or \"{path}\" (or is \"=CODE\")";
        }
        if (why) {
            size_t mark = fg_config_push_key(c, "tryFiles");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL, "\"%s\": %s", pat, why);
            fg_config_pop(c, mark);
            return -1;
        }
    }
    for (size_t i = 0; i < r->nstatic_index; i++)
        if (strchr(r->static_index[i], '/') != NULL) {
            size_t mark = fg_config_push_key(c, "index");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL, "\"%s\" must be a file name without \"/\"", r->static_index[i]);
            fg_config_pop(c, mark);
            return -1;
        }
    if (json_object_get(o, "index") == NULL) {
        r->static_index = fg_config_xcalloc(2, sizeof(char *));
        r->static_index[0] = fg_config_xstrdup("index.html");
        r->nstatic_index = 1;
    }
    return 0;
}

static int load_direct(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    static const char *const keys[] = {"status", "headers", "body", NULL};
    long long status = 0;
    json_t *hdrs = NULL, *v;
    const char *name;

    if (fg_config_check_keys(c, o, keys) < 0 ||
        fg_config_get_int(c, o, "status", 200, 599, &status) < 0)
        return -1;
    if (status == 0)
        return fg_config_fail(c, NULL, "missing required key \"status\"");
    /* a final status only: a 1xx would leave the client waiting for the real answer */
    r->direct_status = (int)status;
    if (fg_config_get_object(c, o, "headers", NULL, &hdrs) < 0)
        return -1;
    if (hdrs) {
        size_t i = 0;
        r->direct_headers = fg_config_xcalloc(json_object_size(hdrs), sizeof(fg_header_kv_t));
        size_t mark = fg_config_push_key(c, "headers");
        json_object_foreach(hdrs, name, v)
        {
            fg_header_kv_t *h = &r->direct_headers[i];
            if (!fg_config_is_token(name)) {
                fg_config_fail(c, name, "not a valid header name");
                fg_config_pop(c, mark);
                return -1;
            }
            if (fg_headers_is_framing(fg_str(name))) {
                fg_config_fail(c, name, "frames the message; the gateway sets it itself");
                fg_config_pop(c, mark);
                return -1;
            }
            if (!json_is_string(v) || !fg_config_is_field_value(json_string_value(v)) ||
                strlen(json_string_value(v)) != json_string_length(v)) {
                fg_config_fail(c, name,
                               "expected a header value string without control "
                               "characters");
                fg_config_pop(c, mark);
                return -1;
            }
            h->name = fg_config_xstrdup(name);
            h->value = fg_config_xstrdup(json_string_value(v));
            r->ndirect_headers = ++i;
        }
        fg_config_pop(c, mark);
    }
    if (fg_config_get_string(c, o, "body", 0, &r->direct_body) < 0)
        return -1;
    r->direct_body_len = r->direct_body ? strlen(r->direct_body) : 0;
    if (r->direct_body_len > 0 && (status == 204 || status == 304))
        return fg_config_fail(c, "body", "a %lld response has no body (RFC 9110 15.3.5, 15.4.5)",
                              status);
    return 0;
}

static int load_redirect(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    static const char *const keys[] = {"status", "location", NULL};
    long long status = 302;

    if (fg_config_check_keys(c, o, keys) < 0 ||
        fg_config_get_int(c, o, "status", 100, 599, &status) < 0)
        return -1;
    /* RFC 9110 15.4: the redirections that carry a Location; 300 and 304 do not redirect. */
    if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
        return fg_config_fail(c, "status", "%lld is not one of 301, 302, 303, 307, 308", status);
    r->redirect_status = (int)status;
    if (fg_config_require_string(c, o, "location", &r->redirect_location) < 0)
        return -1;
    if (!fg_config_is_field_value(r->redirect_location))
        return fg_config_fail(c, "location", "contains a control character");
    return 0;
}

/* Exactly one action key; each action validates its own object under its own path. */
static int load_action(fg_config_ctx_t *c, const json_t *ro, fg_route_t *r)
{
    static const char *const actions[] = {"clusterId", "static", "direct", "redirect"};
    int found = -1, count = 0;

    for (int i = 0; i < 4; i++)
        if (json_object_get(ro, actions[i])) {
            found = i;
            count++;
        }
    if (count != 1)
        return fg_config_fail(c, NULL,
                              "exactly one of clusterId, static, direct, redirect is required");
    r->kind = FG_ROUTE_CLUSTER + found;
    if (found == 0) {
        if (fg_config_get_string(c, ro, "clusterId", 1, &r->cluster_id) < 0)
            return -1;
        size_t pos;
        r->cluster = fg_config_index_find(c->cluster_ids, r->cluster_id, &pos)
                         ? &c->cfg->clusters[pos]
                         : NULL;
        if (r->cluster == NULL)
            return fg_config_fail(c, "clusterId", "unknown cluster \"%s\"", r->cluster_id);
        return 0;
    }
    json_t *o = NULL;
    if (fg_config_get_object(c, ro, actions[found], NULL, &o) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, actions[found]);
    int rc = found == 1   ? load_static(c, o, r)
             : found == 2 ? load_direct(c, o, r)
                          : load_redirect(c, o, r);
    fg_config_pop(c, mark);
    return rc;
}

/* ---- transforms ---- */

enum { V_PATH, V_HEADER, V_QUERY, V_METHOD, V_FLAG, V_XF, V_LIST };

typedef struct {
    const char *key;
    int kind;
    int value;
    const char *const *extra; /* the other keys the transform accepts */
} tx_spec_t;

static const char *const x_none[] = {NULL};
static const char *const x_set_append[] = {"Set", "Append", NULL};
static const char *const x_set[] = {"Set", NULL};
static const char *const x_xf[] = {"Action", "HeaderPrefix", "For", "Proto",
                                   "Host",   "Prefix",       NULL};
static const char *const x_fwd[] = {"Action", "ForFormat", "ByFormat", NULL};
static const char *const x_resp[] = {"Set", "Append", "When", NULL};
static const char *const x_when[] = {"When", NULL};

static const tx_spec_t tx_specs[] = {
    {"PathPrefix", FG_TX_PATH_PREFIX, V_PATH, x_none},
    {"PathRemovePrefix", FG_TX_PATH_REMOVE_PREFIX, V_PATH, x_none},
    {"PathSet", FG_TX_PATH_SET, V_PATH, x_none},
    {"PathPattern", FG_TX_PATH_PATTERN, V_PATH, x_none},
    {"QueryValueParameter", FG_TX_QUERY_VALUE, V_QUERY, x_set_append},
    {"QueryRemoveParameter", FG_TX_QUERY_REMOVE, V_QUERY, x_none},
    {"HttpMethodChange", FG_TX_METHOD_CHANGE, V_METHOD, x_set},
    {"RequestHeader", FG_TX_REQ_HEADER, V_HEADER, x_set_append},
    {"RequestHeaderRemove", FG_TX_REQ_HEADER_REMOVE, V_HEADER, x_none},
    {"RequestHeadersCopy", FG_TX_REQ_HEADERS_COPY, V_FLAG, x_none},
    {"RequestHeaderOriginalHost", FG_TX_REQ_ORIGINAL_HOST, V_FLAG, x_none},
    {"X-Forwarded", FG_TX_X_FORWARDED, V_XF, x_xf},
    {"Forwarded", FG_TX_FORWARDED, V_XF, x_fwd},
    {"ResponseHeader", FG_TX_RESP_HEADER, V_HEADER, x_resp},
    {"ResponseHeaderRemove", FG_TX_RESP_HEADER_REMOVE, V_HEADER, x_when},
    {"RequestHeaderRouteValue", FG_TX_REQ_HEADER_ROUTE, V_HEADER, x_set_append},
    {"QueryRouteParameter", FG_TX_QUERY_ROUTE, V_QUERY, x_set_append},
    {"RequestHeadersAllowed", FG_TX_REQ_HEADERS_ALLOWED, V_LIST, x_none},
    {"ResponseHeadersCopy", FG_TX_RESP_HEADERS_COPY, V_FLAG, x_none},
    {"ResponseHeadersAllowed", FG_TX_RESP_HEADERS_ALLOWED, V_LIST, x_none},
    {"ResponseTrailersCopy", FG_TX_RESP_TRAILERS_COPY, V_FLAG, x_none},
    {"ResponseTrailersAllowed", FG_TX_RESP_TRAILERS_ALLOWED, V_LIST, x_none},
    {"ResponseTrailer", FG_TX_RESP_TRAILER, V_HEADER, x_resp},
    {"ResponseTrailerRemove", FG_TX_RESP_TRAILER_REMOVE, V_HEADER, x_when},
    {"ClientCert", FG_TX_CLIENT_CERT, V_HEADER, x_none},
};
#define NSPECS (sizeof(tx_specs) / sizeof(tx_specs[0]))

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* "Set" or "Append", exactly one: the value to write and how. */
static int load_set_append(fg_config_ctx_t *c, const json_t *o, fg_transform_t *t, const char *what)
{
    int set = json_object_get(o, "Set") != NULL, append = json_object_get(o, "Append") != NULL;

    if (set + append != 1)
        return fg_config_fail(c, NULL, "%s needs exactly one of Set, Append", what);
    t->action = set ? FG_TX_SET : FG_TX_APPEND;
    if (fg_config_get_string(c, o, set ? "Set" : "Append", 0, &t->value) < 0)
        return -1;
    if (!fg_config_is_field_value(t->value))
        return fg_config_fail(c, set ? "Set" : "Append", "contains a control character");
    return 0;
}

static int parse_flag(fg_config_ctx_t *c, const json_t *v, const char *key, int *flag)
{
    if (json_is_boolean(v)) {
        *flag = json_is_true(v);
        return 0;
    }
    if (json_is_string(v) && strcasecmp(json_string_value(v), "true") == 0)
        *flag = 1;
    else if (json_is_string(v) && strcasecmp(json_string_value(v), "false") == 0)
        *flag = 0;
    else
        return fg_config_fail(c, key, "expected true or false");
    return 0;
}

/* A comma-separated list of four known names (case-insensitive, blanks around them ignored):
 * listed[i] is set for names[i]. Unknown names fail, naming `what` and the choices. */
static int name_list(fg_config_ctx_t *c, const char *key, const char *what, const char *list,
                     const char *const names[4], int listed[4])
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && *s == ' ')
            s++;
        while (e > s && e[-1] == ' ')
            e--;
        int i;
        for (i = 0; i < 4; i++)
            if ((size_t)(e - s) == strlen(names[i]) &&
                strncasecmp(s, names[i], (size_t)(e - s)) == 0)
                break;
        if (i == 4)
            return fg_config_fail(c, key, "unknown %s \"%.*s\" (expected %s, %s, %s, %s)", what,
                                  (int)(e - s), s, names[0], names[1], names[2], names[3]);
        listed[i] = 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* X-Forwarded takes two forms that cannot be confused, since no action is a header name.
 * YARP's: the value is the action of all four headers ("Set", "Append", "Remove", "Off").
 * The list form: "For,Proto,Host,Prefix" picks the headers (others are Off) and Action says
 * how (default Set, which also drops a spoofed incoming value). In both, a per-header key
 * overrides. */
static int load_xforwarded(fg_config_ctx_t *c, const json_t *o, fg_transform_t *t)
{
    static const char *const actions[] = {"Off", "Set", "Append", "Remove", NULL};
    static const char *const names[] = {"For", "Proto", "Host", "Prefix"};
    int *slots[] = {&t->xf_for, &t->xf_proto, &t->xf_host, &t->xf_prefix};
    int listed[4] = {0}, action = FG_XF_SET, yarp = -1;

    for (int k = 0; actions[k]; k++)
        if (strcasecmp(t->value, actions[k]) == 0)
            yarp = k;
    if (yarp >= 0) {
        if (json_object_get(o, "Action") != NULL)
            return fg_config_fail(
                c, "Action", "the action is already the value of X-Forwarded (\"%s\")", t->value);
        action = yarp; /* the enum follows the order of actions[] */
        listed[0] = listed[1] = listed[2] = listed[3] = 1;
    } else if (name_list(c, "X-Forwarded", "header", t->value, names, listed) < 0) {
        return -1;
    }
    if (fg_config_get_enum(c, o, "Action", actions, &action) < 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        *slots[i] = listed[i] ? action : FG_XF_OFF;
        if (fg_config_get_enum(c, o, names[i], actions, slots[i]) < 0)
            return -1;
    }
    t->xf_header_prefix = fg_config_xstrdup("X-Forwarded-");
    if (fg_config_get_string(c, o, "HeaderPrefix", 1, &t->xf_header_prefix) < 0)
        return -1;
    if (!fg_config_is_token(t->xf_header_prefix))
        return fg_config_fail(c, "HeaderPrefix", "\"%s\" is not a valid header name prefix",
                              t->xf_header_prefix);
    return 0;
}

/* Forwarded: "for,by,host,proto" picks the parameters; ForFormat and ByFormat say how the
 * nodes are written (default Random, as in YARP); Action as for X-Forwarded. */
static int load_forwarded(fg_config_ctx_t *c, const json_t *o, fg_transform_t *t)
{
    static const char *const actions[] = {"Off", "Set", "Append", "Remove", NULL};
    static const char *const formats[] = {"None",
                                          "Random",
                                          "RandomAndPort",
                                          "RandomAndRandomPort",
                                          "Unknown",
                                          "UnknownAndPort",
                                          "UnknownAndRandomPort",
                                          "Ip",
                                          "IpAndPort",
                                          "IpAndRandomPort",
                                          NULL};
    static const char *const names[] = {"for", "by", "host", "proto"};
    int listed[4] = {0}, for_format = FG_NODE_RANDOM, by_format = FG_NODE_RANDOM;

    if (name_list(c, "Forwarded", "parameter", t->value, names, listed) < 0)
        return -1;
    t->xf_for = FG_XF_SET;
    if (fg_config_get_enum(c, o, "Action", actions, &t->xf_for) < 0 ||
        fg_config_get_enum(c, o, "ForFormat", formats, &for_format) < 0 ||
        fg_config_get_enum(c, o, "ByFormat", formats, &by_format) < 0)
        return -1;
    t->fwd_for = listed[0] ? for_format : FG_NODE_NONE;
    t->fwd_by = listed[1] ? by_format : FG_NODE_NONE;
    t->fwd_host = listed[2];
    t->fwd_proto = listed[3];
    return 0;
}

/* A ';'-separated list of header names, as YARP splits it (blanks around names and empty
 * entries ignored; "" allows none). Stored normalised: "A;B". */
static int load_name_list(fg_config_ctx_t *c, const char *key, fg_transform_t *t)
{
    char *w = t->value;
    for (const char *p = t->value; *p;) {
        size_t len = strcspn(p, ";");
        const char *s = p, *e = p + len;
        p += len + (p[len] == ';');
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (s == e)
            continue;
        char name[256];
        if ((size_t)(e - s) >= sizeof(name))
            return fg_config_fail(c, key, "a header name is too long");
        memcpy(name, s, (size_t)(e - s));
        name[e - s] = '\0';
        if (!fg_config_is_token(name))
            return fg_config_fail(c, key, "\"%s\" is not a valid header name", name);
        if (w != t->value)
            *w++ = ';';
        memmove(w, name, (size_t)(e - s));
        w += e - s;
    }
    *w = '\0';
    return 0;
}

/* The main value of a transform, checked for its kind. */
static int load_tx_value(fg_config_ctx_t *c, const json_t *o, const tx_spec_t *sp,
                         fg_transform_t *t)
{
    json_t *v = json_object_get(o, sp->key);

    if (sp->value == V_FLAG)
        return parse_flag(c, v, sp->key, &t->flag);
    if (fg_config_get_string(c, o, sp->key, sp->value != V_PATH && sp->value != V_LIST, &t->value) <
        0)
        return -1;
    switch (sp->value) {
    case V_PATH:
        if (t->value[0] != '/')
            return fg_config_fail(c, sp->key, "\"%s\" must start with \"/\"", t->value);
        break;
    case V_HEADER:
        if (!fg_config_is_token(t->value))
            return fg_config_fail(c, sp->key, "\"%s\" is not a valid header name", t->value);
        break;
    case V_METHOD:
        if (!fg_config_is_token(t->value))
            return fg_config_fail(c, sp->key, "\"%s\" is not a valid method", t->value);
        break;
    case V_LIST:
        return load_name_list(c, sp->key, t);
    default:
        break;
    }
    /* The name-like value goes in `name`; paths and the X-Forwarded list stay in `value`. */
    if (sp->value == V_HEADER || sp->value == V_QUERY || sp->value == V_METHOD) {
        t->name = t->value;
        t->value = NULL;
    }
    return 0;
}

static int load_transform(fg_config_ctx_t *c, const json_t *o, fg_transform_t *t)
{
    static const char *const when[] = {"Success", "Always", "Failure", NULL};
    const tx_spec_t *sp = NULL;
    const char *key;
    json_t *v;

    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    json_object_foreach((json_t *)o, key, v)
    {
        for (size_t i = 0; i < NSPECS; i++) {
            if (strcmp(key, tx_specs[i].key) != 0)
                continue;
            if (sp)
                return fg_config_fail(c, NULL,
                                      "\"%s\" and \"%s\" in one object; write one transform "
                                      "per object",
                                      sp->key, key);
            sp = &tx_specs[i];
        }
    }
    if (sp == NULL)
        return fg_config_fail(c, NULL,
                              "no known transform key (such as PathPrefix, "
                              "RequestHeader, X-Forwarded)");
    if (c->on_keys)
        c->on_keys(c->on_keys_arg, c->path, sp->extra);
    json_object_foreach((json_t *)o, key, v)
    {
        if (strcmp(key, sp->key) != 0 && !in_list(sp->extra, key))
            return fg_config_fail(c, key, "unknown key for %s", sp->key);
    }
    t->kind = sp->kind;
    if (load_tx_value(c, o, sp, t) < 0)
        return -1;
    switch (t->kind) {
    case FG_TX_QUERY_VALUE:
    case FG_TX_REQ_HEADER:
    case FG_TX_RESP_HEADER:
    case FG_TX_RESP_TRAILER:
    case FG_TX_REQ_HEADER_ROUTE:
    case FG_TX_QUERY_ROUTE:
        if (fg_headers_is_framing(fg_str(t->name)))
            return fg_config_fail(c, sp->key,
                                  "\"%s\" frames the message; the gateway sets it itself", t->name);
        if (load_set_append(c, o, t, sp->key) < 0)
            return -1;
        break;
    case FG_TX_CLIENT_CERT:
        if (fg_headers_is_framing(fg_str(t->name)) || strcasecmp(t->name, "Host") == 0)
            return fg_config_fail(c, sp->key, "\"%s\" is not a header the certificate may take",
                                  t->name);
        break;
    case FG_TX_METHOD_CHANGE:
        if (fg_config_get_string(c, o, "Set", 1, &t->value) < 0)
            return -1;
        if (t->value == NULL)
            return fg_config_fail(c, NULL, "missing required key \"Set\"");
        if (!fg_config_is_token(t->value))
            return fg_config_fail(c, "Set", "\"%s\" is not a valid method", t->value);
        for (char *p = t->name; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        for (char *p = t->value; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        break;
    case FG_TX_X_FORWARDED:
        if (load_xforwarded(c, o, t) < 0)
            return -1;
        break;
    case FG_TX_FORWARDED:
        if (load_forwarded(c, o, t) < 0)
            return -1;
        break;
    default:
        break;
    }
    if (fg_config_get_enum(c, o, "When", when, &t->when) < 0)
        return -1;
    return 0;
}

/* A Host the route sets for a tunnel destination must not name the tunnels' placeholder: the
 * agent would take it for the gateway's own and give the service its internal authority. */
static int check_host_transform(fg_config_ctx_t *c, const fg_route_t *r, const fg_transform_t *t)
{
    if (t->kind != FG_TX_REQ_HEADER || r->cluster == NULL || t->value == NULL ||
        strcasecmp(t->name, "Host") != 0 ||
        !fg_tunnel_names_placeholder(t->value, strlen(t->value)))
        return 0;
    for (size_t i = 0; i < r->cluster->ndestinations; i++)
        if (r->cluster->destinations[i].tunnel)
            return fg_config_fail(c, t->action == FG_TX_SET ? "Set" : "Append",
                                  "\"%s\" is the tunnels' reserved placeholder and cluster "
                                  "\"%s\" has tunnel destinations",
                                  t->value, r->cluster->id);
    return 0;
}

static int load_transforms(fg_config_ctx_t *c, const json_t *ro, fg_route_t *r)
{
    json_t *arr = NULL;
    int rc = fg_config_get_array(c, ro, "transforms", &arr);
    if (rc <= 0)
        return rc;
    r->ntransforms = json_array_size(arr);
    r->transforms = fg_config_xcalloc(r->ntransforms, sizeof(fg_transform_t));
    size_t mark = fg_config_push_key(c, "transforms");
    for (size_t i = 0; i < r->ntransforms; i++) {
        size_t m = fg_config_push_index(c, i);
        if (load_transform(c, json_array_get(arr, i), &r->transforms[i]) < 0 ||
            check_host_transform(c, r, &r->transforms[i]) < 0)
            return -1;
        fg_config_pop(c, m);
    }
    fg_config_pop(c, mark);
    return 0;
}

/* ---- routes ---- */

static int load_route_servers(fg_config_ctx_t *c, const json_t *ro, fg_route_t *r)
{
    if (fg_config_get_strings(c, ro, "servers", &r->server_ids, &r->nserver_ids) < 0)
        return -1;
    for (size_t i = 0; i < r->nserver_ids; i++) {
        size_t j;
        for (j = 0; j < c->cfg->nservers; j++)
            if (strcmp(c->cfg->servers[j].id, r->server_ids[i]) == 0)
                break;
        if (j == c->cfg->nservers) {
            size_t mark = fg_config_push_key(c, "servers");
            fg_config_push_index(c, i);
            fg_config_fail(c, NULL, "unknown server \"%s\"", r->server_ids[i]);
            fg_config_pop(c, mark);
            return -1;
        }
    }
    return 0;
}

/* Tenant routes: "tenantCode", "isGlobal" and free string "metadata" (serviceName and the like).
 * A route that is not global needs a tenant to match. */
static int load_tenant(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    json_t *md = NULL;
    const char *k;
    json_t *v;

    if (fg_config_get_string(c, o, "tenantCode", 1, &r->tenant_code) < 0)
        return -1;
    if (r->tenant_code && !fg_config_is_field_value(r->tenant_code))
        return fg_config_fail(c, "tenantCode", "contains a control character");
    r->is_global = r->tenant_code == NULL;
    if (fg_config_get_bool(c, o, "isGlobal", &r->is_global) < 0)
        return -1;
    if (!r->is_global && r->tenant_code == NULL)
        return fg_config_fail(c, "isGlobal", "false needs a tenantCode");
    if (fg_config_get_object(c, o, "metadata", NULL, &md) < 0)
        return -1;
    if (md == NULL)
        return 0;
    r->metadata = fg_config_xcalloc(json_object_size(md) + 1, sizeof(fg_header_kv_t));
    size_t mark = fg_config_push_key(c, "metadata");
    json_object_foreach(md, k, v)
    {
        if (!json_is_string(v))
            return fg_config_fail(c, k, "expected a string, got %s", fg_config_type_name(v));
        r->metadata[r->nmetadata].name = fg_config_xstrdup(k);
        r->metadata[r->nmetadata++].value = fg_config_xstrdup(json_string_value(v));
    }
    fg_config_pop(c, mark);
    return 0;
}

/* Protocol switches relayed on the route (docs/websocket.md), their idle timeout, and the
 * activity-timeout exemption of event streams. */
static int load_upgrade(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    r->exempt_event_streams = 1;
    if (fg_config_get_duration(c, o, "webSocketIdleTimeout", &r->upgrade_idle_timeout_ms) < 0 ||
        fg_config_get_bool(c, o, "exemptEventStreams", &r->exempt_event_streams) < 0)
        return -1;
    if (json_object_get(o, "upgradeProtocols") == NULL) {
        r->upgrade_protocols = fg_config_xcalloc(2, sizeof(char *));
        r->upgrade_protocols[0] = fg_config_xstrdup("websocket");
        r->nupgrade_protocols = 1;
        return 0;
    }
    if (fg_config_get_strings(c, o, "upgradeProtocols", &r->upgrade_protocols,
                              &r->nupgrade_protocols) < 0)
        return -1;
    for (size_t i = 0; i < r->nupgrade_protocols; i++)
        if (!fg_config_is_token(r->upgrade_protocols[i]))
            return fg_config_fail(c, "upgradeProtocols", "\"%s\" is not a protocol name",
                                  r->upgrade_protocols[i]);
    return 0;
}

/* The default "types": text that compresses well and is not compressed already. */
static const char *const default_types[] = {"text/html",
                                            "text/plain",
                                            "text/css",
                                            "text/javascript",
                                            "application/javascript",
                                            "application/json",
                                            "application/xml",
                                            "image/svg+xml",
                                            NULL};

/* A "types" entry: type "/" subtype, both tokens (RFC 9110 8.3.1), where a "*" subtype is a
 * range of the type and "*" as type needs "*" as subtype; no parameters. Lowercased in place
 * (media types compare case-insensitively). */
static int valid_media_type(char *t)
{
    char *slash = strchr(t, '/');
    if (slash == NULL || slash == t || slash[1] == '\0')
        return 0;
    for (char *p = t; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    *slash = '\0';
    int ok = fg_config_is_token(t) && fg_config_is_token(slash + 1) &&
             (strcmp(t, "*") != 0 || strcmp(slash + 1, "*") == 0);
    *slash = '/';
    return ok;
}

int fg_config_load_compression(fg_config_ctx_t *c, const json_t *o, fg_compression_config_t *z)
{
    static const char *const keys[] = {"enabled", "types", "minLength", "level", NULL};
    json_t *co = NULL;
    long long level = 1;
    z->min_length = 1024;
    if (fg_config_get_object(c, o, "compression", keys, &co) < 0)
        return -1;
    size_t mark = fg_config_push_key(c, "compression");
    int rc = -1;
    if (fg_config_get_bool(c, co, "enabled", &z->enabled) < 0 ||
        fg_config_get_size(c, co, "minLength", &z->min_length) < 0 ||
        fg_config_get_int(c, co, "level", 1, 9, &level) < 0)
        goto out;
    z->level = (int)level;
    if (co == NULL || json_object_get(co, "types") == NULL) {
        size_t n = sizeof(default_types) / sizeof(default_types[0]) - 1;
        z->types = fg_config_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            z->types[i] = fg_config_xstrdup(default_types[i]);
        z->ntypes = n;
    } else {
        if (fg_config_get_strings(c, co, "types", &z->types, &z->ntypes) < 0)
            goto out;
        if (z->ntypes == 0) {
            fg_config_fail(c, "types", "is empty (set \"enabled\": false to compress nothing)");
            goto out;
        }
        for (size_t i = 0; i < z->ntypes; i++)
            if (!valid_media_type(z->types[i])) {
                fg_config_fail(c, "types", "\"%s\" is not a media type such as text/html or text/*",
                               z->types[i]);
                goto out;
            }
    }
    rc = co != NULL;
out:
    fg_config_pop(c, mark);
    return rc;
}

/* The route's "compression", or its servers' when it has none: r->compress_any says whether a
 * request on it may be compressed at all (worker/http/compress.h). */
static int load_route_compression(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    int rc = fg_config_load_compression(c, o, &r->compression);
    if (rc < 0)
        return -1;
    r->compression_from_server = rc == 0;
    r->compress_any = r->compression.enabled;
    const fg_config_t *cfg = c->cfg;
    for (size_t i = 0; r->compression_from_server && i < cfg->nservers; i++) {
        const fg_server_t *s = &cfg->servers[i];
        int attached = r->nserver_ids == 0;
        for (size_t j = 0; !attached && j < r->nserver_ids; j++)
            attached = strcmp(r->server_ids[j], s->id) == 0;
        if (attached && s->compression.enabled)
            r->compress_any = 1;
    }
    return 0;
}

/* "requireClientCertificate": only where a client can present one. Every server the route is
 * attached to (all of them without "servers") must ask for client certificates, or the route
 * would refuse all of its requests there. */
static int load_client_cert(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    if (fg_config_get_bool(c, o, "requireClientCertificate", &r->require_client_cert) < 0)
        return -1;
    if (!r->require_client_cert)
        return 0;
    for (size_t j = 0; j < c->cfg->nservers; j++) {
        const fg_server_t *s = &c->cfg->servers[j];
        int attached = r->nserver_ids == 0;
        for (size_t i = 0; i < r->nserver_ids && !attached; i++)
            attached = strcmp(r->server_ids[i], s->id) == 0;
        if (attached && !s->tcp.enabled && !s->tunnel_hop &&
            (s->tls == NULL || s->tls->client_auth == FG_TLS_CLIENT_AUTH_OFF))
            return fg_config_fail(c, "requireClientCertificate",
                                  "server \"%s\" has no tls.clientAuth: its clients present no "
                                  "certificate (attach the route to servers that ask for one)",
                                  s->id);
    }
    return 0;
}

static int load_route(fg_config_ctx_t *c, const json_t *o, fg_route_t *r)
{
    static const char *const keys[] = {"id",
                                       "order",
                                       "servers",
                                       "match",
                                       "clusterId",
                                       "static",
                                       "direct",
                                       "redirect",
                                       "transforms",
                                       "maxRequestBodySize",
                                       "rateLimits",
                                       "accessControl",
                                       "tenantCode",
                                       "isGlobal",
                                       "metadata",
                                       "upgradeProtocols",
                                       "webSocketIdleTimeout",
                                       "exemptEventStreams",
                                       "compression",
                                       "requireClientCertificate",
                                       NULL};
    long long order = 0;
    json_t *body;

    r->max_request_body_size = -1;
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &r->id) < 0 ||
        fg_config_get_int(c, o, "order", INT32_MIN, INT32_MAX, &order) < 0 ||
        load_route_servers(c, o, r) < 0 || load_match(c, o, r) < 0 || load_action(c, o, r) < 0 ||
        load_transforms(c, o, r) < 0 || fg_config_load_route_security(c, o, r) < 0 ||
        load_tenant(c, o, r) < 0 || load_upgrade(c, o, r) < 0 ||
        load_route_compression(c, o, r) < 0 || load_client_cert(c, o, r) < 0)
        return -1;
    r->order = (int)order;
    /* -1 in the struct means "the server's limit", so "unlimited" here is the largest size. */
    body = json_object_get(o, "maxRequestBodySize");
    if (json_is_string(body) && strcmp(json_string_value(body), "unlimited") == 0) {
        r->max_request_body_size = INT64_MAX;
    } else if (body) {
        uint64_t n = 0;
        if (fg_config_get_size(c, o, "maxRequestBodySize", &n) < 0)
            return -1;
        r->max_request_body_size = n > INT64_MAX ? INT64_MAX : (int64_t)n;
    }
    return 0;
}

static int load_route_item(fg_config_ctx_t *c, const json_t *o, void *out)
{
    return load_route(c, o, out);
}

int fg_config_load_routes(fg_config_ctx_t *c, const json_t *root)
{
    fg_config_t *cfg = c->cfg;
    if (fg_config_get_string(c, root, "tenantHeader", 1, &cfg->tenant_header) < 0)
        return -1;
    if (cfg->tenant_header == NULL)
        cfg->tenant_header = fg_config_xstrdup("X-Tenant-Code");
    else if (!fg_config_is_token(cfg->tenant_header))
        return fg_config_fail(c, "tenantHeader", "\"%s\" is not a header name", cfg->tenant_header);
    void *items;
    c->cluster_ids = fg_config_index_of(cfg->clusters, cfg->nclusters, sizeof(fg_cluster_t),
                                        offsetof(fg_cluster_t, id));
    int rc = fg_config_load_list(c, root, "routes", sizeof(fg_route_t), offsetof(fg_route_t, id),
                                 load_route_item, &items, &cfg->nroutes);
    cfg->routes = items; /* also on failure: what was loaded is freed with the config */
    fg_config_index_free(c->cluster_ids);
    c->cluster_ids = NULL;
    return rc;
}

static void free_kvs(fg_match_kv_t *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free_strings(kv[i].values, kv[i].nvalues);
    }
    free(kv);
}

void fg_config_free_routes(fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        fg_route_t *r = &cfg->routes[i];
        free(r->id);
        free_strings(r->server_ids, r->nserver_ids);
        free_strings(r->upgrade_protocols, r->nupgrade_protocols);
        free_strings(r->compression.types, r->compression.ntypes);
        free(r->match.path);
        free_strings(r->match.hosts, r->match.nhosts);
        free_strings(r->match.methods, r->match.nmethods);
        free_kvs(r->match.headers, r->match.nheaders);
        free_kvs(r->match.query, r->match.nquery);
        free(r->cluster_id);
        for (size_t j = 0; j < r->ndirect_headers; j++) {
            free(r->direct_headers[j].name);
            free(r->direct_headers[j].value);
        }
        free(r->direct_headers);
        free(r->direct_body);
        free(r->redirect_location);
        free(r->static_root);
        free_strings(r->static_index, r->nstatic_index);
        free_strings(r->static_try_files, r->nstatic_try_files);
        for (size_t j = 0; j < r->ntransforms; j++) {
            free(r->transforms[j].name);
            free(r->transforms[j].value);
            free(r->transforms[j].xf_header_prefix);
        }
        free(r->transforms);
        free(r->tenant_code);
        for (size_t j = 0; j < r->nmetadata; j++) {
            free(r->metadata[j].name);
            free(r->metadata[j].value);
        }
        free(r->metadata);
    }
    free(cfg->tenant_header);
    cfg->tenant_header = NULL;
    free(cfg->routes);
    cfg->routes = NULL;
    cfg->nroutes = 0;
}
