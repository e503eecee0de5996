/* YARP's configuration (the ReverseProxy section of appsettings.json, alone or within the whole
 * file) converted into ours: docs/import.md lists every key and what it becomes. Keys ignore
 * case, as .NET's configuration binder does; values may be strings or JSON scalars. Whatever
 * changes how YARP treats traffic and has no equivalent is an error naming the key. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "master/import_impl.h"
#include "tables/route_template.h"

/* Helpers for writing the converted document. */
static void put_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, json_string(v));
}

/* ---- route path templates ---- */

/* The route's path template, checked by the router's own parser so that an error names the
 * source key. Constraints, defaults, optional parameters and complex segments are ASP.NET's
 * and kept as written. A missing leading '/' is added (ASP.NET accepts "api/{x}"). */
static int convert_path(fg_import_t *im, const char *tpl, json_t *match)
{
    const char *p = tpl[0] == '~' ? tpl + 1 : tpl;
    char *fixed = malloc(strlen(p) + 2);
    if (fixed == NULL)
        abort();
    strcpy(fixed + (p[0] != '/'), p);
    fixed[0] = '/';
    fg_route_tpl_t c;
    memset(&c, 0, sizeof(c));
    const char *why = fg_route_template_parse(&c, fixed);
    int rc = why ? fg_import_fail(im, "Path", "\"%s\": %s", tpl, why) : 0;
    fg_route_template_free(&c);
    if (rc == 0)
        put_str(match, "path", fixed);
    free(fixed);
    return rc;
}

/* ---- route match ---- */

static const char *const header_modes[] = {"ExactHeader", "HeaderPrefix", "Contains", "NotContains",
                                           "Exists",      "NotExists",    NULL};
static const char *const query_modes[] = {"Exact",  "Contains", "NotContains",
                                          "Prefix", "Exists",   NULL};

/* Headers or QueryParameters: an array of {Name, Values, Mode, IsCaseSensitive}. */
static int convert_conditions(fg_import_t *im, const json_t *list, const char *key,
                              const char *const modes[], json_t **out)
{
    static const char *const keys[] = {"Name", "Values", "Mode", "IsCaseSensitive", NULL};
    size_t i, mark = fg_import_push(im, key);
    json_t *e, *arr = json_array();
    *out = arr;
    if (!json_is_array(list))
        return fg_import_fail(im, NULL, "expected an array");
    json_array_foreach(list, i, e)
    {
        size_t m2 = fg_import_push_index(im, i);
        const char *name = NULL, *mode = NULL;
        json_t *values = NULL, *c = json_object();
        int cs = 0, has_cs = 0;
        json_array_append_new(arr, c);
        if (fg_import_want_object(im, e, NULL) < 0 || fg_import_check_keys(im, e, keys) < 0 ||
            fg_import_string(im, e, "Name", &name) < 0 ||
            fg_import_enum(im, e, "Mode", modes, &mode) < 0 ||
            fg_import_string_list(im, e, "Values", &values) < 0 ||
            fg_import_bool(im, e, "IsCaseSensitive", &cs, &has_cs) < 0)
            return json_decref(values), -1;
        if (name == NULL)
            return json_decref(values), fg_import_fail(im, NULL, "missing \"Name\"");
        put_str(c, "name", name);
        if (values != NULL && json_array_size(values) > 0)
            json_object_set_new(c, "values", values);
        else
            json_decref(values);
        if (mode != NULL)
            put_str(c, "mode", mode);
        if (has_cs)
            json_object_set_new(c, "isCaseSensitive", json_boolean(cs));
        fg_import_pop(im, m2);
    }
    fg_import_pop(im, mark);
    return 0;
}

static int convert_match(fg_import_t *im, const json_t *m, json_t *route)
{
    static const char *const keys[] = {"Path",    "Hosts",           "Methods",
                                       "Headers", "QueryParameters", NULL};
    size_t mark = fg_import_push(im, "Match");
    json_t *match = json_object(), *list;
    const char *path = NULL;
    json_object_set_new(route, "match", match);
    if (fg_import_want_object(im, m, NULL) < 0 || fg_import_check_keys(im, m, keys) < 0 ||
        fg_import_string(im, m, "Path", &path) < 0)
        return -1;
    if (path != NULL && convert_path(im, path, match) < 0)
        return -1;
    if (fg_import_string_list(im, m, "Hosts", &list) < 0)
        return -1;
    if (list != NULL)
        json_object_set_new(match, "hosts", list);
    if (fg_import_string_list(im, m, "Methods", &list) < 0)
        return -1;
    if (list != NULL)
        json_object_set_new(match, "methods", list);
    json_t *h = fg_import_get(m, "Headers"), *q = fg_import_get(m, "QueryParameters");
    if (h != NULL) {
        if (convert_conditions(im, h, "Headers", header_modes, &list) < 0)
            return json_decref(list), -1;
        json_object_set_new(match, "headers", list);
    }
    if (q != NULL) {
        if (convert_conditions(im, q, "QueryParameters", query_modes, &list) < 0)
            return json_decref(list), -1;
        json_object_set_new(match, "queryParameters", list);
    }
    if (path == NULL && fg_import_get(m, "Hosts") == NULL)
        return fg_import_fail(im, NULL, "a route needs \"Path\" or \"Hosts\"");
    fg_import_pop(im, mark);
    return 0;
}

/* ---- transforms ---- */

/* Transforms that are ours under the same name, with the other keys they may carry. */
static const struct {
    const char *name;
    const char *others[4];
} same_tx[] = {
    {"PathPrefix", {NULL}},
    {"PathRemovePrefix", {NULL}},
    {"PathSet", {NULL}},
    {"PathPattern", {NULL}},
    {"QueryValueParameter", {"Set", "Append", NULL}},
    {"QueryRemoveParameter", {NULL}},
    {"HttpMethodChange", {"Set", NULL}},
    {"RequestHeader", {"Set", "Append", NULL}},
    {"RequestHeaderRemove", {NULL}},
    {"RequestHeadersCopy", {NULL}},
    {"RequestHeaderOriginalHost", {NULL}},
    {"Forwarded", {"Action", "ForFormat", "ByFormat", NULL}},
    {"ResponseHeader", {"Set", "Append", "When", NULL}},
    {"ResponseHeaderRemove", {"When", NULL}},
    {"QueryRouteParameter", {"Set", "Append", NULL}},
    {"RequestHeaderRouteValue", {"Set", "Append", NULL}},
    {"RequestHeadersAllowed", {NULL}},
    {"ResponseHeadersAllowed", {NULL}},
    {"ResponseTrailersAllowed", {NULL}},
    {"ResponseTrailer", {"Set", "Append", "When", NULL}},
    {"ResponseTrailerRemove", {"When", NULL}},
    {"ClientCert", {NULL}},
};

/* {"X-Forwarded": ACTION, "For"|"Proto"|"Host"|"Prefix": ACTION, "HeaderPrefix": P}: YARP's
 * form, where the value is the default action of all four headers, written in ours, where the
 * value lists the headers and "Action" gives their action (per-header keys override both). */
static int convert_xforwarded(fg_import_t *im, const json_t *t, json_t *out)
{
    /* YARP's ForwardedTransformActions, in its order (an integer is its number). */
    static const char *const actions[] = {"Off", "Set", "Append", "Remove", NULL};
    static const char *const parts[] = {"For", "Proto", "Host", "Prefix"};
    const char *action = "Set", *prefix = NULL;
    if (fg_import_enum(im, t, "X-Forwarded", actions, &action) < 0 ||
        fg_import_string(im, t, "HeaderPrefix", &prefix) < 0)
        return -1;
    put_str(out, "X-Forwarded", "For,Proto,Host,Prefix");
    put_str(out, "Action", action);
    for (size_t i = 0; i < 4; i++) {
        const char *a = NULL;
        if (fg_import_enum(im, t, parts[i], actions, &a) < 0)
            return -1;
        if (a != NULL)
            put_str(out, parts[i], a);
    }
    if (prefix != NULL)
        put_str(out, "HeaderPrefix", prefix);
    return 0;
}

/* The values an enumerated transform key takes (YARP reads them ignoring case), or NULL; each in
 * the order of YARP's enum (ResponseCondition, ForwardedTransformActions, NodeFormat). */
static const char *const *enum_values(const char *key)
{
    static const char *const when[] = {"Always", "Success", "Failure", NULL};
    static const char *const action[] = {"Off", "Set", "Append", "Remove", NULL};
    static const char *const node[] = {"None",
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
    if (strcmp(key, "When") == 0)
        return when;
    if (strcmp(key, "Action") == 0)
        return action;
    if (strcmp(key, "ForFormat") == 0 || strcmp(key, "ByFormat") == 0)
        return node;
    return NULL;
}

/* A transform whose keys are ours: copied with our spelling of each key, values as strings
 * (YARP's are strings; "true"/"false" are accepted where ours takes a boolean). */
static int copy_transform(fg_import_t *im, const json_t *t, size_t k, json_t *out)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)t, key, v)
    {
        const char *canon = strcasecmp(key, same_tx[k].name) == 0 ? same_tx[k].name : NULL;
        for (size_t j = 0; canon == NULL && same_tx[k].others[j] != NULL; j++)
            if (strcasecmp(key, same_tx[k].others[j]) == 0)
                canon = same_tx[k].others[j];
        if (canon == NULL)
            return fg_import_fail(im, key, "not a key of the %s transform", same_tx[k].name);
        if (!json_is_string(v) && !json_is_boolean(v))
            return fg_import_fail(im, key, "expected a string");
        const char *const *names = enum_values(canon);
        const char *value = NULL;
        if (names != NULL && fg_import_enum(im, t, key, names, &value) < 0)
            return -1;
        json_object_set_new(out, canon, value ? json_string(value) : json_incref(v));
    }
    /* The value of a Set/Append transform is required: said here with the source's key. */
    int set = json_object_get(out, "Set") != NULL, append = json_object_get(out, "Append") != NULL;
    const char *const *o = same_tx[k].others;
    if (o[0] != NULL && strcmp(o[0], "Set") == 0 && o[1] != NULL && strcmp(o[1], "Append") == 0 &&
        set + append != 1)
        return fg_import_fail(im, NULL, "%s needs exactly one of Set, Append", same_tx[k].name);
    if (o[0] != NULL && strcmp(o[0], "Set") == 0 && o[1] == NULL && !set)
        return fg_import_fail(im, NULL, "%s needs Set", same_tx[k].name);
    return 0;
}

/* One transform object; *out is NULL when it converts to nothing (a default restated). */
static int convert_transform(fg_import_t *im, const json_t *t, json_t **out)
{
    *out = NULL;
    if (fg_import_want_object(im, t, NULL) < 0)
        return -1;
    if (json_object_size(t) == 0)
        return fg_import_fail(im, NULL, "an empty transform");
    int on, has;
    if (fg_import_get(t, "ResponseHeadersCopy") || fg_import_get(t, "ResponseTrailersCopy")) {
        const char *which = fg_import_get(t, "ResponseHeadersCopy") ? "ResponseHeadersCopy"
                                                                    : "ResponseTrailersCopy";
        if (json_object_size(t) != 1 || fg_import_bool(im, t, which, &on, &has) < 0)
            return json_object_size(t) != 1 ? fg_import_fail(im, NULL, "one key expected") : -1;
        if (!on) {
            *out = json_object();
            json_object_set_new(*out, which, json_false());
        }
        return 0; /* "true" is what happens anyway */
    }
    *out = json_object();
    if (fg_import_get(t, "X-Forwarded") != NULL) {
        static const char *const keys[] = {"X-Forwarded", "For",          "Proto", "Host",
                                           "Prefix",      "HeaderPrefix", NULL};
        if (fg_import_check_keys(im, t, keys) < 0)
            return -1;
        return convert_xforwarded(im, t, *out);
    }
    for (size_t k = 0; k < sizeof(same_tx) / sizeof(same_tx[0]); k++)
        if (fg_import_get(t, same_tx[k].name) != NULL)
            return copy_transform(im, t, k, *out);
    return fg_import_fail(im, json_object_iter_key(json_object_iter((json_t *)t)),
                          "unknown transform, or one with no equivalent");
}

static int convert_transforms(fg_import_t *im, const json_t *list, json_t *route)
{
    size_t i, mark = fg_import_push(im, "Transforms");
    json_t *e, *arr = json_array();
    json_object_set_new(route, "transforms", arr);
    if (!json_is_array(list))
        return fg_import_fail(im, NULL, "expected an array");
    json_array_foreach(list, i, e)
    {
        size_t m2 = fg_import_push_index(im, i);
        json_t *t;
        if (convert_transform(im, e, &t) < 0)
            return json_decref(t), -1;
        if (t != NULL)
            json_array_append_new(arr, t);
        fg_import_pop(im, m2);
    }
    if (json_array_size(arr) == 0)
        json_object_del(route, "transforms");
    fg_import_pop(im, mark);
    return 0;
}

/* ---- routes ---- */

/* ASP.NET endpoint policies a route may name. "Disable" (and "Anonymous" for authorization)
 * mean what we do anyway; any other name refers to a policy defined in the application's code,
 * which has no equivalent. */
static int check_policy(fg_import_t *im, const json_t *r, const char *key, const char *none,
                        const char *none2)
{
    const char *v = NULL;
    if (fg_import_string(im, r, key, &v) < 0)
        return -1;
    if (v == NULL || strcasecmp(v, none) == 0 || (none2 && strcasecmp(v, none2) == 0))
        return 0;
    return fg_import_fail(im, key,
                          "\"%s\" names an ASP.NET policy defined in code: no equivalent "
                          "(only \"%s\" converts)",
                          v, none);
}

static int convert_metadata(fg_import_t *im, const json_t *md, json_t *route)
{
    const char *k;
    json_t *v, *out = json_object();
    json_object_set_new(route, "metadata", out);
    if (fg_import_want_object(im, md, "Metadata") < 0)
        return -1;
    json_object_foreach((json_t *)md, k, v)
    {
        if (!json_is_string(v)) {
            size_t mark = fg_import_push(im, "Metadata");
            fg_import_fail(im, k, "expected a string");
            fg_import_pop(im, mark);
            return -1;
        }
        json_object_set(out, k, v);
    }
    return 0;
}

static int convert_route(fg_import_t *im, const char *id, const json_t *r, json_t *routes)
{
    static const char *const keys[] = {"RouteId",
                                       "ClusterId",
                                       "Order",
                                       "Match",
                                       "Transforms",
                                       "Metadata",
                                       "MaxRequestBodySize",
                                       "AuthorizationPolicy",
                                       "CorsPolicy",
                                       "RateLimiterPolicy",
                                       "TimeoutPolicy",
                                       "Timeout",
                                       "OutputCachePolicy",
                                       NULL};
    json_t *route = json_object();
    json_array_append_new(routes, route);
    const char *rid = NULL, *cluster = NULL;
    long long order = 0, body = 0;
    int has_order, has_body;
    if (fg_import_want_object(im, r, NULL) < 0 || fg_import_check_keys(im, r, keys) < 0 ||
        fg_import_string(im, r, "RouteId", &rid) < 0 ||
        fg_import_string(im, r, "ClusterId", &cluster) < 0 ||
        fg_import_int(im, r, "Order", &order, &has_order) < 0 ||
        fg_import_int(im, r, "MaxRequestBodySize", &body, &has_body) < 0 ||
        check_policy(im, r, "AuthorizationPolicy", "Anonymous", NULL) < 0 ||
        check_policy(im, r, "CorsPolicy", "Disable", NULL) < 0 ||
        check_policy(im, r, "RateLimiterPolicy", "Disable", NULL) < 0 ||
        check_policy(im, r, "TimeoutPolicy", "Disable", NULL) < 0 ||
        check_policy(im, r, "OutputCachePolicy", "Disable", NULL) < 0)
        return -1;
    if (fg_import_get(r, "Timeout") != NULL)
        return fg_import_fail(im, "Timeout",
                              "a route's request timeout has no equivalent; set the cluster's "
                              "HttpRequest:ActivityTimeout");
    if (rid != NULL && id != NULL && strcmp(rid, id) != 0)
        return fg_import_fail(im, "RouteId", "\"%s\" differs from the route's key \"%s\"", rid, id);
    put_str(route, "id", id ? id : rid ? rid : "");
    if (id == NULL && rid == NULL)
        return fg_import_fail(im, NULL, "missing \"RouteId\"");
    if (has_order)
        json_object_set_new(route, "order", json_integer(order));
    json_t *m = fg_import_get(r, "Match");
    if (m == NULL)
        return fg_import_fail(im, NULL, "missing \"Match\"");
    if (convert_match(im, m, route) < 0)
        return -1;
    if (cluster == NULL)
        return fg_import_fail(im, NULL,
                              "missing \"ClusterId\" (a route without a cluster is served by "
                              "application code: no equivalent)");
    put_str(route, "clusterId", cluster);
    json_t *t = fg_import_get(r, "Transforms");
    if (t != NULL && !json_is_null(t) && convert_transforms(im, t, route) < 0)
        return -1;
    if (has_body) /* YARP: -1 disables the limit; 0 or absent keeps the server's */
        if (body == -1 || body > 0)
            json_object_set_new(route, "maxRequestBodySize",
                                body == -1 ? json_string("unlimited") : json_integer(body));
    json_t *md = fg_import_get(r, "Metadata");
    if (md != NULL && !json_is_null(md) && convert_metadata(im, md, route) < 0)
        return -1;
    return 0;
}

/* Routes and Clusters are objects keyed by id in configuration files; an array (each element
 * with its RouteId / ClusterId, as code builds them) is accepted too. */
static int each_entry(fg_import_t *im, const json_t *coll, const char *key,
                      int (*fn)(fg_import_t *, const char *, const json_t *, json_t *), json_t *out)
{
    size_t mark = fg_import_push(im, key);
    if (json_is_object(coll)) {
        const char *id;
        json_t *v;
        json_object_foreach((json_t *)coll, id, v)
        {
            size_t m2 = fg_import_push(im, id);
            if (fn(im, id, v, out) < 0)
                return -1;
            fg_import_pop(im, m2);
        }
    } else if (json_is_array(coll)) {
        size_t i;
        json_t *v;
        json_array_foreach(coll, i, v)
        {
            size_t m2 = fg_import_push_index(im, i);
            if (fn(im, NULL, v, out) < 0)
                return -1;
            fg_import_pop(im, m2);
        }
    } else if (!json_is_null(coll)) {
        return fg_import_fail(im, NULL, "expected an object keyed by id");
    }
    fg_import_pop(im, mark);
    return 0;
}

/* ---- clusters ---- */

static const char *const lb_policies[] = {
    "PowerOfTwoChoices", "RoundRobin", "LeastRequests", "Random", "FirstAlphabetical", NULL};

static int convert_cookie(fg_import_t *im, const json_t *c, json_t *aff)
{
    static const char *const keys[] = {"Path",         "Domain",      "HttpOnly",
                                       "SecurePolicy", "SameSite",    "Expiration",
                                       "MaxAge",       "IsEssential", NULL};
    /* ASP.NET Core's SameSiteMode numbers Unspecified -1, then None 0, Lax 1, Strict 2. */
    static const char *const same[] = {"Unspecified", "None", "Lax", "Strict", NULL};
    static const char *const secure[] = {"SameAsRequest", "Always", "None", NULL};
    size_t mark = fg_import_push(im, "Cookie");
    json_t *out = json_object();
    json_object_set_new(aff, "cookie", out);
    const char *path = NULL, *domain = NULL, *ss = NULL, *sp = NULL;
    int http_only, has_ho, essential, has_ess, has_exp, has_max;
    char exp[32], max[32];
    if (fg_import_want_object(im, c, NULL) < 0 || fg_import_check_keys(im, c, keys) < 0 ||
        fg_import_string(im, c, "Path", &path) < 0 ||
        fg_import_string(im, c, "Domain", &domain) < 0 ||
        fg_import_bool(im, c, "HttpOnly", &http_only, &has_ho) < 0 ||
        fg_import_enum_from(im, c, "SameSite", same, -1, &ss) < 0 ||
        fg_import_enum(im, c, "SecurePolicy", secure, &sp) < 0 ||
        fg_import_timespan(im, c, "Expiration", exp, sizeof(exp), &has_exp) < 0 ||
        fg_import_timespan(im, c, "MaxAge", max, sizeof(max), &has_max) < 0 ||
        fg_import_bool(im, c, "IsEssential", &essential, &has_ess) < 0)
        return -1;
    if (path)
        put_str(out, "path", path);
    if (domain)
        put_str(out, "domain", domain);
    if (has_ho)
        json_object_set_new(out, "httpOnly", json_boolean(http_only));
    if (ss)
        put_str(out, "sameSite", ss);
    if (sp != NULL && strcmp(sp, "SameAsRequest") == 0)
        return fg_import_fail(im, "SecurePolicy",
                              "\"SameAsRequest\" has no equivalent: the cookie's Secure flag is "
                              "fixed; write \"Always\" or \"None\"");
    if (sp != NULL)
        json_object_set_new(out, "secure", json_boolean(strcmp(sp, "Always") == 0));
    if (has_exp && has_max)
        return fg_import_fail(im, "Expiration", "give Expiration or MaxAge, not both");
    if (has_exp || has_max) /* a persistent cookie either way: Max-Age says the same */
        put_str(out, "maxAge", has_exp ? exp : max);
    if (has_ess)
        fg_import_note(im, "IsEssential",
                       "consent tracking is ASP.NET's; the cookie is always "
                       "sent");
    fg_import_pop(im, mark);
    return 0;
}

static int convert_affinity(fg_import_t *im, const json_t *a, json_t *cluster)
{
    static const char *const keys[] = {"Enabled",         "Policy", "FailurePolicy",
                                       "AffinityKeyName", "Cookie", NULL};
    static const char *const policies[] = {"HashCookie", "Cookie", "CustomHeader", "ArrCookie",
                                           NULL};
    static const char *const failures[] = {"Redistribute", "Return503Error", NULL};
    size_t mark = fg_import_push(im, "SessionAffinity");
    json_t *out = json_object();
    json_object_set_new(cluster, "sessionAffinity", out);
    int enabled = 0, has_en;
    const char *policy = NULL, *fail = NULL, *name = NULL;
    if (fg_import_want_object(im, a, NULL) < 0 || fg_import_check_keys(im, a, keys) < 0 ||
        fg_import_bool(im, a, "Enabled", &enabled, &has_en) < 0 ||
        fg_import_enum_from(im, a, "Policy", policies, FG_IMPORT_NAMES_ONLY, &policy) < 0 ||
        fg_import_enum_from(im, a, "FailurePolicy", failures, FG_IMPORT_NAMES_ONLY, &fail) < 0 ||
        fg_import_string(im, a, "AffinityKeyName", &name) < 0)
        return -1;
    if (!enabled) { /* YARP: affinity is off unless Enabled is true */
        json_object_del(cluster, "sessionAffinity");
        fg_import_pop(im, mark);
        return 0;
    }
    if (policy != NULL && strcmp(policy, "ArrCookie") == 0)
        return fg_import_fail(im, "Policy",
                              "\"ArrCookie\" (IIS ARR's cookie values) has no "
                              "equivalent; HashCookie is the nearest");
    if (policy)
        put_str(out, "policy", policy);
    if (fail)
        put_str(out, "failurePolicy", fail);
    if (name)
        put_str(out, "affinityKeyName", name);
    json_t *c = fg_import_get(a, "Cookie");
    if (c != NULL && !json_is_null(c) && convert_cookie(im, c, out) < 0)
        return -1;
    fg_import_pop(im, mark);
    return 0;
}

/* Metadata keys of a cluster that YARP's health policies read; the rest is inert data. */
static int metadata_number(fg_import_t *im, const json_t *md, const char *key, double *v, int *has)
{
    size_t mark = fg_import_push(im, "Metadata");
    int rc = fg_import_number(im, md, key, v, has);
    fg_import_pop(im, mark);
    return rc;
}

static int convert_active(fg_import_t *im, const json_t *a, const json_t *md, json_t *hc)
{
    static const char *const keys[] = {"Enabled", "Interval", "Timeout", "Policy",
                                       "Path",    "Query",    NULL};
    static const char *const policies[] = {"ConsecutiveFailures", NULL};
    size_t mark = fg_import_push(im, "Active");
    json_t *out = json_object();
    json_object_set_new(hc, "active", out);
    int enabled = 0, has_en, has_i, has_t, has_th;
    char interval[32], timeout[32];
    const char *policy = NULL, *path = NULL, *query = NULL;
    double th = 2;
    if (fg_import_want_object(im, a, NULL) < 0 || fg_import_check_keys(im, a, keys) < 0 ||
        fg_import_bool(im, a, "Enabled", &enabled, &has_en) < 0 ||
        fg_import_timespan(im, a, "Interval", interval, sizeof(interval), &has_i) < 0 ||
        fg_import_timespan(im, a, "Timeout", timeout, sizeof(timeout), &has_t) < 0 ||
        fg_import_enum_from(im, a, "Policy", policies, FG_IMPORT_NAMES_ONLY, &policy) < 0 ||
        fg_import_string(im, a, "Path", &path) < 0 || fg_import_string(im, a, "Query", &query) < 0)
        return -1;
    fg_import_pop(im, mark);
    if (metadata_number(im, md, "ConsecutiveFailuresHealthPolicy.Threshold", &th, &has_th) < 0)
        return -1;
    if (th < 1 || th > 1000 || th != (long long)th)
        return fg_import_fail(im, "Metadata:ConsecutiveFailuresHealthPolicy.Threshold",
                              "expected an integer 1..1000");
    json_object_set_new(out, "enabled", json_boolean(enabled)); /* YARP: off unless true */
    if (has_i)
        put_str(out, "interval", interval);
    if (has_t)
        put_str(out, "timeout", timeout);
    if (path && *path)
        put_str(out, "path", path);
    if (query && *query)
        put_str(out, "query", query + (query[0] == '?'));
    json_object_set_new(out, "threshold", json_integer((json_int_t)th));
    return 0;
}

/* YARP's passive policy: failure rate over a 60 s window with at least 10 requests; it has no
 * consecutive-failure rule, so ours is turned off. */
static int convert_passive(fg_import_t *im, const json_t *p, const json_t *md, json_t *hc)
{
    static const char *const keys[] = {"Enabled", "Policy", "ReactivationPeriod", NULL};
    static const char *const policies[] = {"TransportFailureRate", NULL};
    size_t mark = fg_import_push(im, "Passive");
    json_t *out = json_object();
    json_object_set_new(hc, "passive", out);
    int enabled = 0, has_en, has_r, has_rate;
    char react[32];
    const char *policy = NULL;
    double rate = 0.3;
    if (fg_import_want_object(im, p, NULL) < 0 || fg_import_check_keys(im, p, keys) < 0 ||
        fg_import_bool(im, p, "Enabled", &enabled, &has_en) < 0 ||
        fg_import_enum_from(im, p, "Policy", policies, FG_IMPORT_NAMES_ONLY, &policy) < 0 ||
        fg_import_timespan(im, p, "ReactivationPeriod", react, sizeof(react), &has_r) < 0)
        return -1;
    fg_import_pop(im, mark);
    if (metadata_number(im, md, "TransportFailureRateHealthPolicy.RateLimit", &rate, &has_rate) < 0)
        return -1;
    if (!(rate > 0 && rate <= 1))
        return fg_import_fail(im, "Metadata:TransportFailureRateHealthPolicy.RateLimit",
                              "expected a number in (0, 1]");
    json_object_set_new(out, "enabled", json_boolean(enabled));
    json_object_set_new(out, "failureRate", json_real(rate));
    json_object_set_new(out, "consecutiveFailures", json_integer(0));
    if (has_r)
        put_str(out, "reactivationPeriod", react);
    return 0;
}

static int convert_health(fg_import_t *im, const json_t *h, const json_t *md, json_t *cluster)
{
    static const char *const keys[] = {"Active", "Passive", "AvailableDestinationsPolicy", NULL};
    static const char *const avail[] = {"HealthyAndUnknown", "HealthyOrPanic", NULL};
    size_t mark = fg_import_push(im, "HealthCheck");
    json_t *hc = json_object();
    json_object_set_new(cluster, "healthCheck", hc);
    const char *a = NULL;
    if (fg_import_want_object(im, h, NULL) < 0 || fg_import_check_keys(im, h, keys) < 0 ||
        fg_import_enum_from(im, h, "AvailableDestinationsPolicy", avail, FG_IMPORT_NAMES_ONLY, &a) <
            0)
        return -1;
    json_t *act = fg_import_get(h, "Active"), *pas = fg_import_get(h, "Passive");
    if (act != NULL && !json_is_null(act) && convert_active(im, act, md, hc) < 0)
        return -1;
    if (pas != NULL && !json_is_null(pas) && convert_passive(im, pas, md, hc) < 0)
        return -1;
    if (a)
        put_str(hc, "availability", a);
    fg_import_pop(im, mark);
    return 0;
}

static int convert_http_client(fg_import_t *im, const json_t *h, json_t *cluster)
{
    static const char *const keys[] = {"SslProtocols",
                                       "DangerousAcceptAnyServerCertificate",
                                       "MaxConnectionsPerServer",
                                       "EnableMultipleHttp2Connections",
                                       "RequestHeaderEncoding",
                                       "ResponseHeaderEncoding",
                                       "WebProxy",
                                       NULL};
    size_t mark = fg_import_push(im, "HttpClient");
    json_t *out = json_object(), *protos;
    int danger, has_d, multi, has_m;
    if (fg_import_want_object(im, h, NULL) < 0 || fg_import_check_keys(im, h, keys) < 0 ||
        fg_import_bool(im, h, "DangerousAcceptAnyServerCertificate", &danger, &has_d) < 0 ||
        fg_import_bool(im, h, "EnableMultipleHttp2Connections", &multi, &has_m) < 0 ||
        fg_import_string_list(im, h, "SslProtocols", &protos) < 0)
        return json_decref(out), -1;
    json_object_set_new(cluster, "httpClient", out);
    static const char *const refused[] = {"MaxConnectionsPerServer", "RequestHeaderEncoding",
                                          "ResponseHeaderEncoding", "WebProxy"};
    for (size_t i = 0; i < 4; i++)
        if (fg_import_get(h, refused[i]) != NULL && !json_is_null(fg_import_get(h, refused[i])))
            return json_decref(protos), fg_import_fail(im, refused[i], "no equivalent");
    if (has_d)
        json_object_set_new(out, "dangerousAcceptAnyServerCertificate", json_boolean(danger));
    if (protos != NULL) {
        size_t i;
        json_t *p;
        json_array_foreach(protos, i, p)
        {
            const char *s = json_string_value(p);
            if (strcasecmp(s, "Tls12") != 0 && strcasecmp(s, "Tls13") != 0)
                return json_decref(protos),
                       fg_import_fail(im, "SslProtocols",
                                      "\"%s\": only Tls12 and Tls13 are offered", s);
            json_array_set_new(protos, i, json_string(s[4] == '2' ? "Tls12" : "Tls13"));
        }
        json_object_set_new(out, "sslProtocols", protos);
    }
    if (has_m)
        fg_import_note(im, "EnableMultipleHttp2Connections",
                       "destinations are spoken to over HTTP/1.1: nothing to convert");
    if (json_object_size(out) == 0)
        json_object_del(cluster, "httpClient");
    fg_import_pop(im, mark);
    return 0;
}

static int convert_http_request(fg_import_t *im, const json_t *h, json_t *cluster)
{
    static const char *const keys[] = {"ActivityTimeout", "Version", "VersionPolicy",
                                       "AllowResponseBuffering", NULL};
    static const char *const vpol[] = {"RequestVersionOrLower", "RequestVersionOrHigher",
                                       "RequestVersionExact", NULL};
    size_t mark = fg_import_push(im, "HttpRequest");
    char act[32];
    int has_a, buf = 0, has_b;
    const char *version = NULL, *policy = NULL;
    if (fg_import_want_object(im, h, NULL) < 0 || fg_import_check_keys(im, h, keys) < 0 ||
        fg_import_timespan(im, h, "ActivityTimeout", act, sizeof(act), &has_a) < 0 ||
        fg_import_string(im, h, "Version", &version) < 0 ||
        fg_import_enum(im, h, "VersionPolicy", vpol, &policy) < 0 ||
        fg_import_bool(im, h, "AllowResponseBuffering", &buf, &has_b) < 0)
        return -1;
    /* HTTP/1.1 is what we speak to destinations; a request for a higher version converts only
     * when YARP itself may fall back to a lower one. */
    int v11 = version == NULL || strcmp(version, "1.1") == 0 || strcmp(version, "1.0") == 0;
    if (!v11 && policy != NULL && strcmp(policy, "RequestVersionOrLower") != 0)
        return fg_import_fail(im, "VersionPolicy",
                              "HTTP/%s with \"%s\": destinations are spoken to over HTTP/1.1 "
                              "only",
                              version, policy);
    if (buf)
        return fg_import_fail(im, "AllowResponseBuffering",
                              "true has no equivalent: responses are streamed");
    if (has_a) {
        json_t *out = json_object();
        put_str(out, "activityTimeout", act);
        json_object_set_new(cluster, "httpRequest", out);
    }
    fg_import_pop(im, mark);
    return 0;
}

static int convert_destination(fg_import_t *im, const char *id, const json_t *d, json_t *dests)
{
    static const char *const keys[] = {"Address", "Health", "Host", "Metadata", NULL};
    const char *addr = NULL, *health = NULL, *host = NULL;
    json_t *out = json_object();
    json_array_append_new(dests, out);
    if (fg_import_want_object(im, d, NULL) < 0 || fg_import_check_keys(im, d, keys) < 0 ||
        fg_import_string(im, d, "Address", &addr) < 0 ||
        fg_import_string(im, d, "Health", &health) < 0 ||
        fg_import_string(im, d, "Host", &host) < 0)
        return -1;
    if (id == NULL)
        return fg_import_fail(im, NULL, "destinations are an object keyed by id");
    if (addr == NULL)
        return fg_import_fail(im, NULL, "missing \"Address\"");
    put_str(out, "id", id);
    put_str(out, "address", addr);
    if (health && *health)
        put_str(out, "health", health);
    if (host && *host)
        put_str(out, "host", host);
    if (fg_import_get(d, "Metadata") != NULL)
        fg_import_note(im, "Metadata", "inert data read by no built-in feature: not converted");
    return 0;
}

static int note_cluster_metadata(fg_import_t *im, const json_t *md)
{
    const char *k;
    json_t *v;
    if (md == NULL || json_is_null(md))
        return 0;
    if (fg_import_want_object(im, md, "Metadata") < 0)
        return -1;
    json_object_foreach((json_t *)md, k, v)
    {
        if (strcasecmp(k, "ConsecutiveFailuresHealthPolicy.Threshold") != 0 &&
            strcasecmp(k, "TransportFailureRateHealthPolicy.RateLimit") != 0) {
            size_t mark = fg_import_push(im, "Metadata");
            fg_import_note(im, k, "inert data read by no built-in feature: not converted");
            fg_import_pop(im, mark);
        }
    }
    return 0;
}

static int convert_cluster(fg_import_t *im, const char *id, const json_t *c, json_t *clusters)
{
    static const char *const keys[] = {
        "ClusterId",   "LoadBalancingPolicy", "SessionAffinity", "HealthCheck", "HttpClient",
        "HttpRequest", "Destinations",        "Metadata",        NULL};
    json_t *cluster = json_object();
    json_array_append_new(clusters, cluster);
    const char *cid = NULL, *lb = NULL;
    if (fg_import_want_object(im, c, NULL) < 0 || fg_import_check_keys(im, c, keys) < 0 ||
        fg_import_string(im, c, "ClusterId", &cid) < 0 ||
        fg_import_enum_from(im, c, "LoadBalancingPolicy", lb_policies, FG_IMPORT_NAMES_ONLY, &lb) <
            0)
        return -1;
    if (cid != NULL && id != NULL && strcmp(cid, id) != 0)
        return fg_import_fail(im, "ClusterId", "\"%s\" differs from the cluster's key \"%s\"", cid,
                              id);
    if (id == NULL && cid == NULL)
        return fg_import_fail(im, NULL, "missing \"ClusterId\"");
    put_str(cluster, "id", id ? id : cid);
    if (lb)
        put_str(cluster, "loadBalancingPolicy", lb);
    json_t *md = fg_import_get(c, "Metadata"), *v;
    if (note_cluster_metadata(im, md) < 0)
        return -1;
    json_t *dests = json_array();
    json_object_set_new(cluster, "destinations", dests);
    v = fg_import_get(c, "Destinations");
    if (v == NULL || json_object_size(v) == 0)
        return fg_import_fail(im, "Destinations", "at least one destination is needed");
    if (each_entry(im, v, "Destinations", convert_destination, dests) < 0)
        return -1;
    if ((v = fg_import_get(c, "SessionAffinity")) && !json_is_null(v) &&
        convert_affinity(im, v, cluster) < 0)
        return -1;
    if ((v = fg_import_get(c, "HealthCheck")) && !json_is_null(v) &&
        convert_health(im, v, md, cluster) < 0)
        return -1;
    if ((v = fg_import_get(c, "HttpClient")) && !json_is_null(v) &&
        convert_http_client(im, v, cluster) < 0)
        return -1;
    if ((v = fg_import_get(c, "HttpRequest")) && !json_is_null(v) &&
        convert_http_request(im, v, cluster) < 0)
        return -1;
    return 0;
}

/* ---- the rest of appsettings.json ---- */

/* A Kestrel URL ("http://+:80", "http://localhost:5000", "http://[::]:8080") as our listen
 * address. Kestrel binds a host that is neither an IP address nor localhost to every
 * address. */
static int kestrel_listen(fg_import_t *im, const char *key, const char *url, int *https, char *out,
                          size_t len)
{
    const char *p = url;
    *https = strncasecmp(p, "https://", 8) == 0;
    if (strncasecmp(p, "http://", 7) != 0 && !*https)
        return fg_import_fail(im, key, "\"%s\" is not an http:// or https:// URL", url);
    p += *https ? 8 : 7;
    const char *colon = p[0] == '[' ? strstr(p, "]:") : strrchr(p, ':');
    if (colon == NULL)
        return fg_import_fail(im, key, "\"%s\": no port", url);
    const char *port = colon + (p[0] == '[' ? 2 : 1);
    char *end;
    long n = strtol(port, &end, 10);
    if (n < 1 || n > 65535 || (*end != '\0' && *end != '/'))
        return fg_import_fail(im, key, "\"%s\": bad port", url);
    size_t hl = (size_t)(colon - p) + (p[0] == '[');
    if ((hl == 1 && (p[0] == '*' || p[0] == '+')) || (hl == 7 && !strncmp(p, "0.0.0.0", 7)))
        snprintf(out, len, "*:%ld", n);
    else if (hl == 9 && strncasecmp(p, "localhost", 9) == 0)
        snprintf(out, len, "127.0.0.1:%ld", n);
    else if (p[0] == '[' || strspn(p, "0123456789.") == hl)
        snprintf(out, len, "%.*s:%ld", (int)hl, p, n);
    else
        snprintf(out, len, "*:%ld", n);
    return 0;
}

static void add_server(json_t *servers, const char *id, const char *listen)
{
    json_t *s = json_object();
    put_str(s, "id", id);
    put_str(s, "listen", listen);
    json_array_append_new(servers, s);
}

static int convert_limits(fg_import_t *im, const json_t *l, json_t *servers)
{
    static const char *const keys[] = {"MaxRequestBodySize",
                                       "MaxRequestHeaderCount",
                                       "MaxRequestLineSize",
                                       "MaxRequestHeadersTotalSize",
                                       "KeepAliveTimeout",
                                       "RequestHeadersTimeout",
                                       NULL};
    static const char *const ints[][2] = {{"MaxRequestBodySize", "maxRequestBodySize"},
                                          {"MaxRequestHeaderCount", "maxHeaders"},
                                          {"MaxRequestLineSize", "maxRequestLineSize"},
                                          {"MaxRequestHeadersTotalSize", "maxHeaderSize"}};
    size_t mark = fg_import_push(im, "Limits");
    json_t *limits = json_object(), *timeouts = json_object();
    int rc = -1;
    if (fg_import_want_object(im, l, NULL) < 0 || fg_import_check_keys(im, l, keys) < 0)
        goto out;
    for (size_t i = 0; i < 4; i++) {
        long long v;
        int has;
        json_t *raw = fg_import_get(l, ints[i][0]);
        if (i == 0 && raw != NULL && json_is_null(raw)) { /* Kestrel: null = no limit */
            put_str(limits, ints[i][1], "unlimited");
            continue;
        }
        if (fg_import_int(im, l, ints[i][0], &v, &has) < 0)
            goto out;
        if (has)
            json_object_set_new(limits, ints[i][1], json_integer(v));
    }
    char ka[32], hd[32];
    int has_ka, has_hd;
    if (fg_import_timespan(im, l, "KeepAliveTimeout", ka, sizeof(ka), &has_ka) < 0 ||
        fg_import_timespan(im, l, "RequestHeadersTimeout", hd, sizeof(hd), &has_hd) < 0)
        goto out;
    if (has_ka)
        put_str(timeouts, "keepAlive", ka);
    if (has_hd)
        put_str(timeouts, "header", hd);
    size_t i;
    json_t *s;
    json_array_foreach(servers, i, s)
    {
        if (json_object_size(limits))
            json_object_set(s, "limits", limits);
        if (json_object_size(timeouts))
            json_object_set(s, "timeouts", timeouts);
    }
    rc = 0;
    fg_import_pop(im, mark);
out:
    json_decref(limits);
    json_decref(timeouts);
    return rc;
}

/* An https endpoint's Certificate (PEM Path and KeyPath) as one of our certificates, and its
 * server's tls. Kestrel's development certificate, the certificate store and PKCS#12 files
 * have no equivalent: the loader reads PEM files. */
static int kestrel_tls(fg_import_t *im, const char *name, const json_t *ep, json_t *server,
                       json_t *ours)
{
    static const char *const ckeys[] = {"Path",  "KeyPath",  "Password",     "Subject",
                                        "Store", "Location", "AllowInvalid", NULL};
    json_t *c = fg_import_get(ep, "Certificate"), *protos;
    const char *path = NULL, *key = NULL;
    if (c == NULL)
        return fg_import_fail(im, NULL,
                              "an https endpoint needs \"Certificate\" with PEM \"Path\" and "
                              "\"KeyPath\" (Kestrel's development certificate has no "
                              "equivalent)");
    size_t mark = fg_import_push(im, "Certificate");
    if (fg_import_want_object(im, c, NULL) < 0 || fg_import_check_keys(im, c, ckeys) < 0 ||
        fg_import_string(im, c, "Path", &path) < 0 || fg_import_string(im, c, "KeyPath", &key) < 0)
        return -1;
    static const char *const refused[] = {"Password", "Subject", "Store"};
    for (size_t i = 0; i < 3; i++)
        if (fg_import_get(c, refused[i]) != NULL)
            return fg_import_fail(im, refused[i],
                                  "no equivalent: give an unencrypted PEM key in \"KeyPath\"");
    if (path == NULL || key == NULL)
        return fg_import_fail(im, path ? "KeyPath" : "Path",
                              "missing: a PKCS#12 file converts with openssl pkcs12 into a PEM "
                              "chain (Path) and key (KeyPath)");
    fg_import_pop(im, mark);
    char id[300];
    snprintf(id, sizeof(id), "%s-certificate", name);
    json_t *certs = json_object_get(ours, "certificates");
    if (certs == NULL)
        json_object_set_new(ours, "certificates", certs = json_array());
    json_array_append_new(certs, json_pack("{s:s, s:s, s:s}", "id", id, "chain", path, "key", key));
    json_t *tls = json_pack("{s:[s]}", "certificates", id);
    json_object_set_new(server, "tls", tls);
    if (fg_import_string_list(im, ep, "SslProtocols", &protos) < 0)
        return -1;
    if (protos != NULL) {
        int has12 = 0, has13 = 0;
        size_t i;
        json_t *v;
        json_array_foreach(protos, i, v)
        {
            const char *pr = json_string_value(v);
            has12 |= strcasecmp(pr, "Tls12") == 0;
            has13 |= strcasecmp(pr, "Tls13") == 0;
            if (strcasecmp(pr, "Tls12") != 0 && strcasecmp(pr, "Tls13") != 0 &&
                strcasecmp(pr, "None") != 0)
                return json_decref(protos),
                       fg_import_fail(im, "SslProtocols", "\"%s\": only Tls12 and Tls13", pr);
        }
        json_decref(protos);
        if (has12 || has13)
            json_object_set_new(tls, "protocols",
                                json_pack("{s:s, s:s}", "min", has12 ? "TLSv1.2" : "TLSv1.3", "max",
                                          has13 ? "TLSv1.3" : "TLSv1.2"));
    }
    return 0;
}

static int convert_kestrel(fg_import_t *im, const json_t *k, json_t *servers, json_t *ours)
{
    static const char *const keys[] = {"Endpoints", "Limits", NULL};
    static const char *const ekeys[] = {"Url", "Protocols", "Certificate", "SslProtocols", NULL};
    size_t mark = fg_import_push(im, "Kestrel");
    if (fg_import_want_object(im, k, NULL) < 0 || fg_import_check_keys(im, k, keys) < 0)
        return -1;
    json_t *eps = fg_import_get(k, "Endpoints"), *ep;
    const char *name;
    if (eps != NULL && fg_import_want_object(im, eps, "Endpoints") < 0)
        return -1;
    size_t m2 = fg_import_push(im, "Endpoints");
    json_object_foreach(eps, name, ep)
    {
        size_t m3 = fg_import_push(im, name);
        const char *url = NULL, *protos = NULL;
        char listen[80];
        if (fg_import_want_object(im, ep, NULL) < 0 || fg_import_check_keys(im, ep, ekeys) < 0 ||
            fg_import_string(im, ep, "Url", &url) < 0 ||
            fg_import_string(im, ep, "Protocols", &protos) < 0)
            return -1;
        if (url == NULL)
            return fg_import_fail(im, NULL, "missing \"Url\"");
        int https;
        if (kestrel_listen(im, "Url", url, &https, listen, sizeof(listen)) < 0)
            return -1;
        /* Over TLS, ALPN settles on HTTP/1.1 with a client that also offers h2: the requests
         * mean the same. A plaintext or h2-only endpoint speaking HTTP/2 has no equivalent. */
        if (protos != NULL && strcasecmp(protos, "Http1") != 0 &&
            !(https && strcasecmp(protos, "Http1AndHttp2") == 0))
            return fg_import_fail(im, "Protocols", "\"%s\": servers speak HTTP/1.1 only", protos);
        if (!https && (fg_import_get(ep, "Certificate") || fg_import_get(ep, "SslProtocols")))
            return fg_import_fail(im,
                                  fg_import_get(ep, "Certificate") ? "Certificate" : "SslProtocols",
                                  "only for an https:// endpoint");
        add_server(servers, name, listen);
        if (https && kestrel_tls(im, name, ep,
                                 json_array_get(servers, json_array_size(servers) - 1), ours) < 0)
            return -1;
        fg_import_pop(im, m3);
    }
    fg_import_pop(im, m2);
    json_t *l = fg_import_get(k, "Limits");
    if (json_array_size(servers) == 0)
        add_server(servers, "http", "127.0.0.1:5000");
    if (l != NULL && convert_limits(im, l, servers) < 0)
        return -1;
    fg_import_pop(im, mark);
    return 0;
}

/* "Urls": several URLs separated by semicolons. */
static int convert_urls(fg_import_t *im, const json_t *root, json_t *servers)
{
    json_t *list;
    if (fg_import_string_list(im, root, "Urls", &list) < 0)
        return -1;
    size_t i;
    json_t *u;
    json_array_foreach(list, i, u)
    {
        char listen[80], id[32];
        int https;
        if (kestrel_listen(im, "Urls", json_string_value(u), &https, listen, sizeof(listen)) < 0)
            return json_decref(list), -1;
        if (https)
            return json_decref(list),
                   fg_import_fail(im, "Urls",
                                  "\"%s\": an https URL needs a certificate: declare it as a "
                                  "Kestrel endpoint with \"Certificate\"",
                                  json_string_value(u));
        snprintf(id, sizeof(id), "url%zu", i + 1);
        add_server(servers, id, listen);
    }
    json_decref(list);
    return 0;
}

static int convert_logging(fg_import_t *im, const json_t *lg, json_t *ours)
{
    static const char *const levels[] = {"Trace", "Debug",    "Information", "Warning",
                                         "Error", "Critical", "None",        NULL};
    static const char *const mapped[] = {"debug", "debug", "info", "warn",
                                         "error", "error", "error"};
    size_t mark = fg_import_push(im, "Logging");
    json_t *ll = fg_import_get(lg, "LogLevel");
    const char *k;
    json_t *v;
    if (fg_import_want_object(im, lg, NULL) < 0)
        return -1;
    json_object_foreach((json_t *)lg, k, v)
    {
        if (strcasecmp(k, "LogLevel") != 0)
            fg_import_note(im, k, "logging providers are ASP.NET's: not converted");
    }
    if (ll != NULL) {
        size_t m2 = fg_import_push(im, "LogLevel");
        const char *level = NULL;
        if (fg_import_want_object(im, ll, NULL) < 0 ||
            fg_import_enum(im, ll, "Default", levels, &level) < 0)
            return -1;
        for (size_t i = 0; level != NULL && levels[i]; i++)
            if (strcmp(levels[i], level) == 0) {
                json_t *log = json_object();
                put_str(log, "level", mapped[i]);
                json_object_set_new(ours, "log", log);
            }
        json_object_foreach(ll, k, v)
        {
            if (strcasecmp(k, "Default") != 0)
                fg_import_note(im, k,
                               "per-category log levels have no equivalent: the level "
                               "is the Default one");
        }
        fg_import_pop(im, m2);
    }
    fg_import_pop(im, mark);
    return 0;
}

/* AllowedHosts "*" admits every Host; a list would need a 400 for the others. */
static int convert_allowed_hosts(fg_import_t *im, const json_t *root)
{
    const char *h = NULL;
    if (fg_import_string(im, root, "AllowedHosts", &h) < 0)
        return -1;
    if (h != NULL && strcmp(h, "*") != 0)
        return fg_import_fail(im, "AllowedHosts",
                              "\"%s\": host filtering has no equivalent; give the routes "
                              "Match:Hosts instead",
                              h);
    return 0;
}

json_t *fg_import_yarp(fg_import_t *im, const json_t *root)
{
    static const char *const top[] = {"ReverseProxy", "Logging", "AllowedHosts", "Kestrel",
                                      "Urls",         "Routes",  "Clusters",     NULL};
    static const char *const rp_keys[] = {"Routes", "Clusters", NULL};
    json_t *ours = json_object(), *servers = json_array(), *routes = json_array(),
           *clusters = json_array();
    json_object_set_new(ours, "servers", servers);
    json_object_set_new(ours, "routes", routes);
    json_object_set_new(ours, "clusters", clusters);
    json_t *rp = fg_import_get(root, "ReverseProxy"), *v;
    if (fg_import_check_keys(im, root, top) < 0)
        goto fail;
    if (rp != NULL && (fg_import_get(root, "Routes") || fg_import_get(root, "Clusters"))) {
        fg_import_fail(im, "Routes", "outside the ReverseProxy section");
        goto fail;
    }
    if (rp == NULL)
        rp = (json_t *)root; /* the section's content alone */
    else if (fg_import_want_object(im, rp, "ReverseProxy") < 0)
        goto fail;
    size_t mark = rp != root ? fg_import_push(im, "ReverseProxy") : 0;
    if (rp != root && fg_import_check_keys(im, rp, rp_keys) < 0)
        goto fail;
    if ((v = fg_import_get(rp, "Routes")) && each_entry(im, v, "Routes", convert_route, routes) < 0)
        goto fail;
    if ((v = fg_import_get(rp, "Clusters")) &&
        each_entry(im, v, "Clusters", convert_cluster, clusters) < 0)
        goto fail;
    fg_import_pop(im, mark);
    if (convert_allowed_hosts(im, root) < 0 ||
        ((v = fg_import_get(root, "Logging")) && convert_logging(im, v, ours) < 0))
        goto fail;
    if ((v = fg_import_get(root, "Kestrel")) && convert_kestrel(im, v, servers, ours) < 0)
        goto fail;
    if (json_array_size(servers) == 0 && convert_urls(im, root, servers) < 0)
        goto fail;
    if (json_array_size(servers) == 0) /* ASP.NET's default endpoint */
        add_server(servers, "http", "127.0.0.1:5000");
    return ours;
fail:
    json_decref(ours);
    return NULL;
}
