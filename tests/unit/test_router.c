/* Unit tests for worker/http/router.c. Configurations are built by hand (no config loader). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/path.h"
#include "tables/route_table.h"
#include "worker/http/router.h"

#include "fake_request.h"

/* ---- fixture: a config with one server and hand-made routes ---- */

typedef struct {
    fg_pool_t *pool; /* test-owned memory: strings, arrays, requests */
    fg_config_t cfg;
    fg_server_t srv;
    fg_route_t *routes;
    fg_route_t **ptrs;
    size_t n, cap;
    int built;
} fx_t;

static fx_t *fx_new(size_t cap)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->pool = fg_pool_new(64 * 1024);
    fx->routes = calloc(cap, sizeof(fg_route_t));
    fx->ptrs = calloc(cap, sizeof(fg_route_t *));
    assert_non_null(fx->pool);
    assert_non_null(fx->routes);
    assert_non_null(fx->ptrs);
    fx->cap = cap;
    return fx;
}

static void fx_free(fx_t *fx)
{
    if (fx->built)
        fg_route_table_free(&fx->cfg);
    free(fx->routes);
    free(fx->ptrs);
    fg_pool_free(fx->pool);
    free(fx);
}

static char *dup(fx_t *fx, const char *s)
{
    return s ? fg_pool_strndup(fx->pool, s, strlen(s)) : NULL;
}

/* A NULL-terminated argument list copied into a pool array; *n gets the count. */
static char **vlist(fx_t *fx, va_list ap, size_t *n)
{
    const char *items[64];
    size_t k = 0;
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL) {
        assert_true(k < 63);
        items[k++] = s;
    }
    char **v = fg_pool_calloc(fx->pool, (k + 1) * sizeof(char *));
    for (size_t i = 0; i < k; i++)
        v[i] = dup(fx, items[i]);
    *n = k;
    return v;
}

static fg_route_t *route(fx_t *fx, const char *id, const char *path, int order)
{
    assert_true(fx->n < fx->cap);
    fg_route_t *r = &fx->routes[fx->n++];
    r->id = dup(fx, id);
    r->match.path = dup(fx, path);
    r->order = order;
    r->kind = FG_ROUTE_DIRECT;
    return r;
}

static void hosts(fx_t *fx, fg_route_t *r, ...)
{
    va_list ap;
    va_start(ap, r);
    r->match.hosts = vlist(fx, ap, &r->match.nhosts);
    va_end(ap);
}

static void methods(fx_t *fx, fg_route_t *r, ...)
{
    va_list ap;
    va_start(ap, r);
    r->match.methods = vlist(fx, ap, &r->match.nmethods);
    va_end(ap);
}

static fg_match_kv_t *add_kv(fx_t *fx, fg_match_kv_t **arr, size_t *n, const char *name, int mode,
                             int cs, va_list ap)
{
    fg_match_kv_t *v = fg_pool_calloc(fx->pool, (*n + 1) * sizeof(*v));
    if (*n)
        memcpy(v, *arr, *n * sizeof(*v));
    fg_match_kv_t *kv = &v[*n];
    kv->name = dup(fx, name);
    kv->mode = mode;
    kv->case_sensitive = cs;
    kv->values = vlist(fx, ap, &kv->nvalues);
    *arr = v;
    (*n)++;
    return kv;
}

static void header_rule(fx_t *fx, fg_route_t *r, const char *name, int mode, int cs, ...)
{
    va_list ap;
    va_start(ap, cs);
    add_kv(fx, &r->match.headers, &r->match.nheaders, name, mode, cs, ap);
    va_end(ap);
}

static void query_rule(fx_t *fx, fg_route_t *r, const char *name, int mode, int cs, ...)
{
    va_list ap;
    va_start(ap, cs);
    add_kv(fx, &r->match.query, &r->match.nquery, name, mode, cs, ap);
    va_end(ap);
}

/* Attach every route to the one server (stably sorted by order, as the loader does) and build.
 * Returns fg_route_table_build's result; err receives its message. */
static int build_err(fx_t *fx, char *err, size_t errlen)
{
    size_t k = 0;
    int lo = 0, hi = 0;
    for (size_t i = 0; i < fx->n; i++) {
        lo = fx->routes[i].order < lo ? fx->routes[i].order : lo;
        hi = fx->routes[i].order > hi ? fx->routes[i].order : hi;
    }
    /* stable: collect by increasing order value */
    for (long o = lo; o <= hi && k < fx->n; o++)
        for (size_t i = 0; i < fx->n; i++)
            if (fx->routes[i].order == o)
                fx->ptrs[k++] = &fx->routes[i];
    fx->srv.id = "s1";
    fx->srv.routes = fx->ptrs;
    fx->srv.nroutes = fx->n;
    fx->cfg.servers = &fx->srv;
    fx->cfg.nservers = 1;
    fx->cfg.routes = fx->routes;
    fx->cfg.nroutes = fx->n;
    int rc = fg_route_table_build(&fx->cfg, err, errlen);
    fx->built = rc == 0;
    return rc;
}

static void build(fx_t *fx)
{
    char err[256] = "";
    if (build_err(fx, err, sizeof(err)) != 0)
        fail_msg("build failed: %s", err);
}

/* ---- requests ---- */

/* A request from a method, a raw target, a Host and "name", "value" pairs ending with NULL. */
static fg_request_t *mkreq(fg_pool_t *pool, const char *method, const char *target,
                           const char *host, ...)
{
    va_list ap;
    va_start(ap, host);
    fg_request_t *req = fake_request_va(pool, method, target, host, ap);
    va_end(ap);
    return req;
}

/* Id of the matched route, or "none". */
static const char *matched(const fg_server_t *srv, fg_request_t *req)
{
    const fg_route_t *r = fg_router_match(srv, req);
    return r ? r->id : "none";
}

#define M(fx, method, target, host, ...)                                                           \
    matched(&(fx)->srv, mkreq((fx)->pool, method, target, host, ##__VA_ARGS__, NULL))

static void assert_capture(const fg_request_t *req, const char *name, const char *value)
{
    for (size_t i = 0; i < req->ncaptures; i++) {
        if (fg_str_eq(req->captures[i].name, fg_str(name))) {
            if (!fg_str_eq(req->captures[i].value, fg_str(value)))
                fail_msg("capture %s = \"%.*s\", want \"%s\"", name,
                         (int)req->captures[i].value.len, req->captures[i].value.base, value);
            /* captures are slices of the request path, not copies */
            assert_true(req->captures[i].value.base >= req->path.base &&
                        req->captures[i].value.base <= req->path.base + req->path.len);
            return;
        }
    }
    fail_msg("no capture named %s", name);
}

/* ---- tenant routes ---- */

static fg_route_t *tenant(fx_t *fx, fg_route_t *r, const char *code)
{
    r->tenant_code = dup(fx, code);
    r->is_global = 0;
    return r;
}

static const char *tmatch(fx_t *fx, const char *path, const char *code)
{
    fg_request_t *req = mkreq(fx->pool, "GET", path, "a", NULL);
    req->tenant = code ? fg_str(code) : FG_STR_NULL;
    const fg_route_t *r = fg_router_match(&fx->srv, req);
    return r ? r->id : "none";
}

static void test_tenant_route_matches_only_its_tenant(void **state)
{
    fx_t *fx = fx_new(4);
    tenant(fx, route(fx, "acme", "/only", 0), "acme");
    build(fx);
    assert_string_equal(tmatch(fx, "/only", "acme"), "acme");
    assert_string_equal(tmatch(fx, "/only", "ACME"), "none"); /* codes compare exactly */
    assert_string_equal(tmatch(fx, "/only", "globex"), "none");
    assert_string_equal(tmatch(fx, "/only", NULL), "none");
    fx_free(fx);
}

static void test_tenant_route_beats_global_of_same_path(void **state)
{
    fx_t *fx = fx_new(8);
    route(fx, "global", "/api/{id}", 0)->is_global = 1;
    tenant(fx, route(fx, "t1", "/API/{id}", 10), "t1"); /* worse order, same template */
    tenant(fx, route(fx, "t2-other", "/api/{x}/more", 0), "t2");
    route(fx, "specific", "/api/special", 0)->is_global = 1;
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/api/42", "a", NULL);
    req->tenant = FG_STR_LIT("t1");
    const fg_route_t *r = fg_router_match(&fx->srv, req);
    assert_string_equal(r->id, "t1");
    assert_capture(req, "id", "42");
    assert_string_equal(tmatch(fx, "/api/42", "t2"), "global");
    assert_string_equal(tmatch(fx, "/api/42", NULL), "global");
    /* a more specific global route with another template is not outranked */
    assert_string_equal(tmatch(fx, "/api/special", "t1"), "specific");
    /* the global route's captures survive the search for a tenant route */
    req = mkreq(fx->pool, "GET", "/api/7", "a", NULL);
    req->tenant = FG_STR_LIT("t9");
    assert_string_equal(fg_router_match(&fx->srv, req)->id, "global");
    assert_capture(req, "id", "7");
    fx_free(fx);
}

/* ---- path templates ---- */

static void test_literal_case_insensitive(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "api", "/Api/Users", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/users", "a"), "api");
    assert_string_equal(M(fx, "GET", "/API/USERS", "a"), "api");
    assert_string_equal(M(fx, "GET", "/api/users2", "a"), "none");
    assert_string_equal(M(fx, "GET", "/api", "a"), "none");
    fx_free(fx);
}

static void test_trailing_slash(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "api", "/api", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api", "a"), "api");
    assert_string_equal(M(fx, "GET", "/api/", "a"), "api");
    assert_string_equal(M(fx, "GET", "/apix", "a"), "none");
    assert_string_equal(M(fx, "GET", "/api/x", "a"), "none");
    assert_string_equal(M(fx, "GET", "/", "a"), "none");
    fx_free(fx);
}

static void test_template_trailing_slash_ignored(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "api", "/api/", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api", "a"), "api");
    assert_string_equal(M(fx, "GET", "/api/", "a"), "api");
    fx_free(fx);
}

static void test_param_one_segment(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "user", "/users/{id}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/users/42", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "user");
    assert_int_equal(req->ncaptures, 1);
    assert_capture(req, "id", "42");
    req = mkreq(fx->pool, "GET", "/users/42/", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "user");
    assert_capture(req, "id", "42");
    assert_string_equal(M(fx, "GET", "/users", "a"), "none");
    assert_string_equal(M(fx, "GET", "/users/", "a"), "none");
    assert_string_equal(M(fx, "GET", "/users/42/x", "a"), "none");
    fx_free(fx);
}

static void test_several_params(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "r", "/{tenant}/orders/{id}/lines/{line}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/acme/ORDERS/7/lines/%41b", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "r");
    assert_int_equal(req->ncaptures, 3);
    assert_capture(req, "tenant", "acme");
    assert_capture(req, "id", "7");
    assert_capture(req, "line", "Ab");
    fx_free(fx);
}

static void test_catchall(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "files", "/files/{**rest}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/files/a/b/c.txt", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "files");
    assert_capture(req, "rest", "a/b/c.txt");
    req = mkreq(fx->pool, "GET", "/files/a/b/", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "files");
    assert_capture(req, "rest", "a/b/");
    req = mkreq(fx->pool, "GET", "/files", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "files");
    assert_capture(req, "rest", "");
    req = mkreq(fx->pool, "GET", "/files/", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "files");
    assert_capture(req, "rest", "");
    assert_string_equal(M(fx, "GET", "/filesx/a", "a"), "none");
    fx_free(fx);
}

static void test_catchall_single_star_and_root(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "all", "/{*path}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "all");
    assert_capture(req, "path", "");
    req = mkreq(fx->pool, "GET", "/x/y", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "all");
    assert_capture(req, "path", "x/y");
    fx_free(fx);
}

static void test_optional_last(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "opt", "/items/{id?}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/items/9", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "opt");
    assert_capture(req, "id", "9");
    req = mkreq(fx->pool, "GET", "/items", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "opt");
    assert_int_equal(req->ncaptures, 0);
    assert_string_equal(M(fx, "GET", "/items/9/10", "a"), "none");
    fx_free(fx);
}

static void test_root_template(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "root", "/", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "a"), "root");
    assert_string_equal(M(fx, "GET", "/a", "a"), "none");
    fx_free(fx);
}

static void test_no_path_matches_any(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "host-only", NULL, 0);
    hosts(fx, r, "example.com", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "example.com"), "host-only");
    assert_string_equal(M(fx, "GET", "/deep/path/x", "example.com"), "host-only");
    assert_string_equal(M(fx, "GET", "/", "other.com"), "none");
    fx_free(fx);
}

/* ---- hosts ---- */

static void test_host_exact_any_port(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "h", "/", 0);
    hosts(fx, r, "Example.COM", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "example.com"), "h");
    assert_string_equal(M(fx, "GET", "/", "EXAMPLE.com:8080"), "h");
    assert_string_equal(M(fx, "GET", "/", "example.com."), "h");
    assert_string_equal(M(fx, "GET", "/", "www.example.com"), "none");
    assert_string_equal(M(fx, "GET", "/", "example.co"), "none");
    assert_string_equal(M(fx, "GET", "/", NULL), "none");
    fx_free(fx);
}

static void test_host_with_port(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "p8080", "/", 0);
    hosts(fx, r, "example.com:8080", NULL);
    r = route(fx, "p80", "/", 0);
    hosts(fx, r, "plain.com:80", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "example.com:8080"), "p8080");
    assert_string_equal(M(fx, "GET", "/", "example.com:8081"), "none");
    assert_string_equal(M(fx, "GET", "/", "example.com"), "none");
    /* no port in the request: the scheme's default port */
    assert_string_equal(M(fx, "GET", "/", "plain.com"), "p80");
    assert_string_equal(M(fx, "GET", "/", "plain.com:80"), "p80");
    fg_request_t *req = mkreq(fx->pool, "GET", "/", "plain.com", NULL);
    req->scheme = FG_STR_LIT("https");
    assert_string_equal(matched(&fx->srv, req), "none");
    fx_free(fx);
}

static void test_host_wildcard(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "wild", "/", 0);
    hosts(fx, r, "*.example.com", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "a.example.com"), "wild");
    assert_string_equal(M(fx, "GET", "/", "a.b.c.EXAMPLE.com:9000"), "wild");
    assert_string_equal(M(fx, "GET", "/", "example.com"), "none");
    assert_string_equal(M(fx, "GET", "/", "badexample.com"), "none");
    assert_string_equal(M(fx, "GET", "/", "a.example.org"), "none");
    fx_free(fx);
}

static void test_host_wildcard_with_port(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "wild", "/", 0);
    hosts(fx, r, "*.example.com:8443", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "a.example.com:8443"), "wild");
    assert_string_equal(M(fx, "GET", "/", "a.example.com:8080"), "none");
    fx_free(fx);
}

static void test_host_ipv6_and_star(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "v6", "/v6", 0);
    hosts(fx, r, "[::1]:8080", NULL);
    r = route(fx, "v6any", "/v6any", 0);
    hosts(fx, r, "[::1]", NULL);
    r = route(fx, "star", "/star", 0);
    hosts(fx, r, "*:9000", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/v6", "[::1]:8080"), "v6");
    assert_string_equal(M(fx, "GET", "/v6", "[::1]:8081"), "none");
    assert_string_equal(M(fx, "GET", "/v6", "[::1]"), "none");
    assert_string_equal(M(fx, "GET", "/v6any", "[::1]"), "v6any");
    assert_string_equal(M(fx, "GET", "/v6any", "[::1]:1"), "v6any");
    assert_string_equal(M(fx, "GET", "/v6any", "[::2]"), "none");
    assert_string_equal(M(fx, "GET", "/star", "anything:9000"), "star");
    assert_string_equal(M(fx, "GET", "/star", "anything:9001"), "none");
    fx_free(fx);
}

static void test_several_hosts_or(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "multi", "/x", 0);
    hosts(fx, r, "a.com", "b.com:81", "*.c.com", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/x", "a.com"), "multi");
    assert_string_equal(M(fx, "GET", "/x", "b.com:81"), "multi");
    assert_string_equal(M(fx, "GET", "/x", "b.com"), "none");
    assert_string_equal(M(fx, "GET", "/x", "z.c.com"), "multi");
    assert_string_equal(M(fx, "GET", "/x", "c.com"), "none");
    fx_free(fx);
}

/* ---- methods ---- */

static void test_methods(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "rw", "/m", 0);
    methods(fx, r, "GET", "PUT", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/m", "a"), "rw");
    assert_string_equal(M(fx, "PUT", "/m", "a"), "rw");
    assert_string_equal(M(fx, "POST", "/m", "a"), "none");
    assert_string_equal(M(fx, "get", "/m", "a"), "none"); /* methods are case-sensitive */
    fx_free(fx);
}

/* ---- headers ---- */

static void test_header_exact(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "ci", "/ci", 0);
    header_rule(fx, r, "X-Env", FG_HDR_EXACT, 0, "beta", "canary", NULL);
    r = route(fx, "cs", "/cs", 0);
    header_rule(fx, r, "X-Env", FG_HDR_EXACT, 1, "Beta", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/ci", "a", "x-env", "BETA"), "ci");
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "canary"), "ci");
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "betas"), "none");
    assert_string_equal(M(fx, "GET", "/ci", "a"), "none");
    /* HeaderMatcherPolicy: list values split on ',' (';' only for Cookie), a quoted comma
     * does not split, and one pair of quotes is stripped */
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "alpha, \"beta\""), "ci");
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "alpha;canary"), "none");
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "\"beta, x\""), "none");
    assert_string_equal(M(fx, "GET", "/ci", "a", "X-Env", "\"x,y\",canary"), "ci");
    assert_string_equal(M(fx, "GET", "/cs", "a", "X-Env", "Beta"), "cs");
    assert_string_equal(M(fx, "GET", "/cs", "a", "X-Env", "beta"), "none");
    fx_free(fx);
}

static void test_header_prefix(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "p", "/p", 0);
    header_rule(fx, r, "User-Agent", FG_HDR_PREFIX, 0, "curl/", "Wget", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/p", "a", "User-Agent", "curl/8.0"), "p");
    assert_string_equal(M(fx, "GET", "/p", "a", "User-Agent", "wget/1.2"), "p");
    assert_string_equal(M(fx, "GET", "/p", "a", "User-Agent", "Mozilla curl/"), "none");
    fx_free(fx);
}

static void test_header_contains_not_contains(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "c", "/c", 0);
    header_rule(fx, r, "Accept", FG_HDR_CONTAINS, 0, "json", NULL);
    r = route(fx, "nc", "/nc", 0);
    header_rule(fx, r, "Accept", FG_HDR_NOT_CONTAINS, 0, "html", "xml", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/c", "a", "Accept", "application/JSON; q=1"), "c");
    assert_string_equal(M(fx, "GET", "/c", "a", "Accept", "text/html"), "none");
    assert_string_equal(M(fx, "GET", "/nc", "a", "Accept", "application/json"), "nc");
    assert_string_equal(M(fx, "GET", "/nc", "a", "Accept", "text/HTML"), "none");
    assert_string_equal(M(fx, "GET", "/nc", "a"), "nc"); /* absent: nothing contains it */
    /* several fields: none may contain a value */
    assert_string_equal(M(fx, "GET", "/nc", "a", "Accept", "a/b", "Accept", "x/xml"), "none");
    fx_free(fx);
}

static void test_header_exists_not_exists(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "e", "/e", 0);
    header_rule(fx, r, "Authorization", FG_HDR_EXISTS, 0, NULL);
    r = route(fx, "ne", "/ne", 0);
    header_rule(fx, r, "Authorization", FG_HDR_NOT_EXISTS, 0, NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/e", "a", "authorization", "Bearer x"), "e");
    assert_string_equal(M(fx, "GET", "/e", "a", "Authorization", ""), "none");
    assert_string_equal(M(fx, "GET", "/e", "a"), "none");
    assert_string_equal(M(fx, "GET", "/ne", "a"), "ne");
    /* HeaderMatcherPolicyTests.ApplyAsync_MatchingScenarios_AnyHeaderValue: an empty value
     * is no value for NotExists */
    assert_string_equal(M(fx, "GET", "/ne", "a", "Authorization", ""), "ne");
    assert_string_equal(M(fx, "GET", "/ne", "a", "Authorization", "x"), "none");
    fx_free(fx);
}

static void test_header_rules_and_fields_or(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "both", "/b", 0);
    header_rule(fx, r, "X-A", FG_HDR_EXACT, 0, "1", "2", NULL);
    header_rule(fx, r, "X-B", FG_HDR_EXISTS, 0, NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/b", "a", "X-A", "2", "X-B", "y"), "both");
    assert_string_equal(M(fx, "GET", "/b", "a", "X-A", "2"), "none");
    assert_string_equal(M(fx, "GET", "/b", "a", "X-A", "3", "X-B", "y"), "none");
    /* repeated field: a match in any of them counts */
    assert_string_equal(M(fx, "GET", "/b", "a", "X-A", "9", "X-B", "y", "x-a", "1"), "both");
    fx_free(fx);
}

/* ---- query ---- */

static void test_query_modes(void **state)
{
    fx_t *fx = fx_new(8);
    fg_route_t *r = route(fx, "exact", "/e", 0);
    query_rule(fx, r, "v", FG_QUERY_EXACT, 0, "2", "beta", NULL);
    r = route(fx, "prefix", "/p", 0);
    query_rule(fx, r, "name", FG_QUERY_PREFIX, 1, "Jo", NULL);
    r = route(fx, "contains", "/c", 0);
    query_rule(fx, r, "q", FG_QUERY_CONTAINS, 0, "a b", NULL);
    r = route(fx, "notcontains", "/n", 0);
    query_rule(fx, r, "q", FG_QUERY_NOT_CONTAINS, 0, "bad", NULL);
    r = route(fx, "exists", "/x", 0);
    query_rule(fx, r, "debug", FG_QUERY_EXISTS, 0, NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/e?x=1&v=2", "a"), "exact");
    assert_string_equal(M(fx, "GET", "/e?V=BETA", "a"), "exact");
    assert_string_equal(M(fx, "GET", "/e?v=%62eta", "a"), "exact");
    assert_string_equal(M(fx, "GET", "/e?v=22", "a"), "none");
    assert_string_equal(M(fx, "GET", "/e?vv=2", "a"), "none");
    assert_string_equal(M(fx, "GET", "/e", "a"), "none");
    assert_string_equal(M(fx, "GET", "/p?name=John", "a"), "prefix");
    assert_string_equal(M(fx, "GET", "/p?name=john", "a"), "none");
    assert_string_equal(M(fx, "GET", "/c?q=xa+by", "a"), "contains");
    assert_string_equal(M(fx, "GET", "/c?q=xA%20By", "a"), "contains");
    assert_string_equal(M(fx, "GET", "/c?q=ab", "a"), "none");
    assert_string_equal(M(fx, "GET", "/n?q=good", "a"), "notcontains");
    assert_string_equal(M(fx, "GET", "/n", "a"), "notcontains");
    assert_string_equal(M(fx, "GET", "/n?q=good&q=BAD", "a"), "none");
    assert_string_equal(M(fx, "GET", "/x?debug=1", "a"), "exists");
    assert_string_equal(M(fx, "GET", "/x?debug=", "a"), "none");
    assert_string_equal(M(fx, "GET", "/x?debug", "a"), "none");
    fx_free(fx);
}

/* ---- precedence ---- */

static void test_order_wins(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "specific", "/api/users", 5);
    route(fx, "catchall", "/{**rest}", 1);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/users", "a"), "catchall");
    fx_free(fx);
}

static void test_literal_beats_param(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "param", "/api/{id}", 0);
    route(fx, "literal", "/api/items", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/items", "a"), "literal");
    assert_string_equal(M(fx, "GET", "/api/other", "a"), "param");
    fx_free(fx);
}

static void test_param_beats_catchall(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "catch", "/api/{**rest}", 0);
    route(fx, "param", "/api/{id}", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/1", "a"), "param");
    assert_string_equal(M(fx, "GET", "/api/1/2", "a"), "catch");
    assert_string_equal(M(fx, "GET", "/api", "a"), "catch");
    fx_free(fx);
}

static void test_longer_literal_prefix_wins(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "late", "/{t}/items/z", 0);
    route(fx, "early", "/api/{x}/z", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/items/z", "a"), "early");
    assert_string_equal(M(fx, "GET", "/web/items/z", "a"), "late");
    fx_free(fx);
}

static void test_config_order_breaks_ties(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "first", "/same", 0);
    hosts(fx, r, "a.com", NULL);
    route(fx, "second", "/same", 0);
    r = route(fx, "third", "/same", 0);
    methods(fx, r, "GET", NULL);
    route(fx, "fourth", "/same", 0);
    build(fx);
    /* constraints rank before configuration order: methods, then hosts */
    assert_string_equal(M(fx, "GET", "/same", "a.com"), "third");
    assert_string_equal(M(fx, "POST", "/same", "a.com"), "first");
    /* equal constraints: configuration order */
    assert_string_equal(M(fx, "POST", "/same", "b.com"), "second");
    fx_free(fx);
}

/* HttpMethodMatcherPolicy: the methods of the routes that match but for the method; none when
 * the path is unknown or another constraint fails too. */
static void test_allowed_methods(void **state)
{
    fx_t *fx = fx_new(8);
    fg_route_t *r = route(fx, "a", "/m", 0);
    methods(fx, r, "POST", "PUT", NULL);
    r = route(fx, "b", "/m", 0);
    methods(fx, r, "PUT", "DELETE", NULL);
    r = route(fx, "h", "/mh", 0);
    methods(fx, r, "POST", NULL);
    hosts(fx, r, "b.example", NULL);
    build(fx);
    char buf[64];
    fg_request_t *req = mkreq(fx->pool, "GET", "/m", "a", NULL);
    assert_null(fg_router_match(&fx->srv, req));
    size_t n = fg_router_allowed(&fx->srv, req, buf, sizeof(buf));
    assert_string_equal(buf, "POST, PUT, DELETE");
    assert_int_equal(n, strlen(buf));
    req = mkreq(fx->pool, "GET", "/nothing", "a", NULL);
    assert_int_equal(fg_router_allowed(&fx->srv, req, buf, sizeof(buf)), 0);
    req = mkreq(fx->pool, "GET", "/mh", "c.example", NULL);
    assert_int_equal(fg_router_allowed(&fx->srv, req, buf, sizeof(buf)), 0);
    req = mkreq(fx->pool, "GET", "/mh", "b.example", NULL);
    assert_int_equal(fg_router_allowed(&fx->srv, req, buf, sizeof(buf)), 4);
    assert_string_equal(buf, "POST");
    /* cut to the buffer, never overrun */
    req = mkreq(fx->pool, "GET", "/m", "a", NULL);
    assert_true(fg_router_allowed(&fx->srv, req, buf, 10) < 10);
    fx_free(fx);
}

/* A literal written in UTF-8 matches its percent-encoded form, hex digits in either case. */
static void test_non_ascii_literal(void **state)
{
    fx_t *fx = fx_new(2);
    route(fx, "cafe", "/caf\xC3\xA9/menu", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/caf%C3%A9/menu", "a"), "cafe");
    assert_string_equal(M(fx, "GET", "/CAF%c3%a9/menu", "a"), "cafe");
    assert_string_equal(M(fx, "GET", "/cafe/menu", "a"), "none");
    fx_free(fx);
}

/* Issue cases: a canary with a header rule listed after the plain route wins when its header
 * is there (HeaderMatcherPolicy's comparer); a literal first segment beats a parameter
 * whatever the later segments (ASP.NET RoutePrecedence). */
static void test_precedence_constraints_and_segments(void **state)
{
    fx_t *fx = fx_new(8);
    route(fx, "meta", "/meta", 0);
    fg_route_t *r = route(fx, "canary", "/meta", 0);
    header_rule(fx, r, "X-Canary", FG_HDR_EXISTS, 0, NULL);
    route(fx, "param", "/{a}/zzb", 0);
    route(fx, "pr1", "/pr1/{**rest}", 0);
    route(fx, "lit", "/x/y", 0);
    route(fx, "xparam", "/x/{id}", 0);
    route(fx, "xcatch", "/x/{**rest}", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/meta", "a", "X-Canary", "1"), "canary");
    assert_string_equal(M(fx, "GET", "/meta", "a"), "meta");
    assert_string_equal(M(fx, "GET", "/pr1/zzb", "a"), "pr1");
    assert_string_equal(M(fx, "GET", "/pr2/zzb", "a"), "param");
    assert_string_equal(M(fx, "GET", "/x/y", "a"), "lit");
    assert_string_equal(M(fx, "GET", "/x/z", "a"), "xparam");
    assert_string_equal(M(fx, "GET", "/x/z/w", "a"), "xcatch");
    fx_free(fx);
}

/* The value of capture `name` after a match, or fails. */
static void assert_value(const fg_request_t *req, const char *name, const char *value)
{
    for (size_t i = 0; i < req->ncaptures; i++)
        if (fg_str_eq(req->captures[i].name, fg_str(name))) {
            if (!fg_str_eq(req->captures[i].value, fg_str(value)))
                fail_msg("capture %s = \"%.*s\", want \"%s\"", name,
                         (int)req->captures[i].value.len, req->captures[i].value.base, value);
            return;
        }
    fail_msg("no capture named %s", name);
}

static void assert_no_value(const fg_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->ncaptures; i++)
        if (fg_str_eq(req->captures[i].name, fg_str(name)))
            fail_msg("unexpected capture %s", name);
}

/* ASP.NET RoutePrecedence.ComputeInbound: a constrained parameter (digit 2) ranks before an
 * unconstrained one (3) whatever the file order; a constraint that fails is no match, so the
 * next route gets the request (DfaMatcher drops candidates whose constraints fail). */
static void test_constraint_precedence_and_fallthrough(void **state)
{
    for (int flip = 0; flip < 2; flip++) {
        fx_t *fx = fx_new(8);
        if (flip)
            route(fx, "name", "/api/{name}", 0);
        route(fx, "int", "/api/{id:int}", 0);
        if (!flip)
            route(fx, "name", "/api/{name}", 0);
        route(fx, "me", "/api/me", 0);
        route(fx, "guid", "/g/{x:guid}", 0);
        route(fx, "gany", "/g/{**rest}", 0);
        build(fx);
        assert_string_equal(M(fx, "GET", "/api/42", "a"), "int");
        assert_string_equal(M(fx, "GET", "/api/-42", "a"), "int");
        assert_string_equal(M(fx, "GET", "/api/4x", "a"), "name");
        assert_string_equal(M(fx, "GET", "/api/99999999999", "a"), "name");
        assert_string_equal(M(fx, "GET", "/api/me", "a"), "me");
        assert_string_equal(M(fx, "GET", "/g/6F9619FF-8B86-D011-B42D-00CF4FC964FF", "a"), "guid");
        assert_string_equal(M(fx, "GET", "/g/not-a-guid", "a"), "gany");
        fx_free(fx);
    }
}

/* A complex segment ranks with constrained parameters (digit 2), before "{any}" (3); a
 * constrained catch-all (4) before a plain one (5). */
static void test_complex_segment_precedence(void **state)
{
    fx_t *fx = fx_new(8);
    route(fx, "any", "/files/{any}", 0);
    route(fx, "ext", "/files/{name}.{ext}", 0);
    route(fx, "all", "/c/{**p}", 0);
    route(fx, "img", "/c/{**p:regex(^img/)}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/files/report.final.pdf", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "ext");
    assert_value(req, "name", "report.final");
    assert_value(req, "ext", "pdf");
    assert_string_equal(M(fx, "GET", "/files/readme", "a"), "any");
    assert_string_equal(M(fx, "GET", "/files/.profile", "a"), "any");
    assert_string_equal(M(fx, "GET", "/c/img/a.png", "a"), "img");
    assert_string_equal(M(fx, "GET", "/c/IMG/a.png", "a"), "img");
    assert_string_equal(M(fx, "GET", "/c/css/a.css", "a"), "all");
    fx_free(fx);
}

/* RoutePatternMatcher: segments the request leaves out may be optional or have defaults; an
 * absent optional parameter has no value and passes its constraints. */
static void test_defaults_and_optional_constraints(void **state)
{
    fx_t *fx = fx_new(8);
    route(fx, "mvc", "/m/{controller=Home}/{action=Index}/{id?}", 0);
    route(fx, "opt", "/o/{id:int?}", 0);
    route(fx, "dflt", "/d/{n:range(1,9)=5}", 0);
    route(fx, "ver", "/v/v{major:int}.{minor:int}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/m", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "mvc");
    assert_value(req, "controller", "Home");
    assert_value(req, "action", "Index");
    assert_no_value(req, "id");
    req = mkreq(fx->pool, "GET", "/m/shop/list/7", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "mvc");
    assert_capture(req, "controller", "shop");
    assert_capture(req, "id", "7");
    assert_string_equal(M(fx, "GET", "/o", "a"), "opt");
    assert_string_equal(M(fx, "GET", "/o/12", "a"), "opt");
    assert_string_equal(M(fx, "GET", "/o/x", "a"), "none");
    req = mkreq(fx->pool, "GET", "/d", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "dflt");
    assert_value(req, "n", "5");
    assert_string_equal(M(fx, "GET", "/d/9", "a"), "dflt");
    assert_string_equal(M(fx, "GET", "/d/10", "a"), "none");
    req = mkreq(fx->pool, "GET", "/v/V2.15", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "ver");
    assert_capture(req, "major", "2");
    assert_capture(req, "minor", "15");
    assert_string_equal(M(fx, "GET", "/v/v2.x", "a"), "none");
    assert_string_equal(M(fx, "GET", "/v/2.1", "a"), "none");
    fx_free(fx);
}

static void test_negative_order_and_fallback_merge(void **state)
{
    fx_t *fx = fx_new(8);
    route(fx, "api", "/api/{**rest}", 0);
    fg_route_t *r = route(fx, "maint", "/{**rest}", -1);
    header_rule(fx, r, "X-Maintenance", FG_HDR_EXISTS, 0, NULL);
    r = route(fx, "hostonly", NULL, 0);
    hosts(fx, r, "admin.com", NULL);
    route(fx, "last", "/{**rest}", 10);
    build(fx);
    assert_string_equal(M(fx, "GET", "/api/x", "a", "X-Maintenance", "1"), "maint");
    assert_string_equal(M(fx, "GET", "/api/x", "admin.com"), "api");
    assert_string_equal(M(fx, "GET", "/other", "admin.com"), "hostonly");
    assert_string_equal(M(fx, "GET", "/other", "b.com"), "last");
    fx_free(fx);
}

static void test_full_match_falls_through(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "post", "/x/{id}", 0);
    methods(fx, r, "POST", NULL);
    route(fx, "any", "/x/{**rest}", 0);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/x/5", "a", NULL);
    assert_string_equal(matched(&fx->srv, req), "any");
    /* captures belong to the route that matched, not to a rejected candidate */
    assert_int_equal(req->ncaptures, 1);
    assert_capture(req, "rest", "5");
    fx_free(fx);
}

static void test_no_match_clears_captures(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "x", "/x/{id}", 0);
    methods(fx, r, "POST", NULL);
    build(fx);
    fg_request_t *req = mkreq(fx->pool, "GET", "/x/5", "a", NULL);
    req->ncaptures = 3;
    assert_null(fg_router_match(&fx->srv, req));
    assert_int_equal(req->ncaptures, 0);
    fx_free(fx);
}

static void test_empty_server(void **state)
{
    fx_t *fx = fx_new(1);
    build(fx);
    assert_string_equal(M(fx, "GET", "/", "a"), "none");
    fg_server_t bare = {0};
    fg_request_t *req = mkreq(fx->pool, "GET", "/", "a", NULL);
    assert_null(fg_router_match(&bare, req));
    fx_free(fx);
}

/* ---- validation ---- */

static void expect_invalid(const char *path, const char *want)
{
    fx_t *fx = fx_new(4);
    route(fx, "ok0", "/fine", 0);
    route(fx, "ok1", "/also/{fine}", 0);
    route(fx, "bad", path, 0);
    char err[256] = "";
    assert_int_equal(build_err(fx, err, sizeof(err)), -1);
    if (strcmp(err, want) != 0)
        fail_msg("template %s: error \"%s\", want \"%s\"", path, err, want);
    /* everything built before the failure was released */
    for (size_t i = 0; i < fx->n; i++)
        assert_null(fx->routes[i].compiled);
    assert_null(fx->srv.router);
    fx_free(fx);
}

static void test_invalid_templates(void **state)
{
    expect_invalid("/a/{id", "routes[2].match.path: unbalanced braces");
    expect_invalid("/a/id}", "routes[2].match.path: unbalanced braces");
    expect_invalid("/a/{{id}}", "routes[2].match.path: a literal brace never matches a request "
                                "path (clients send %7B)");
    expect_invalid("/a/{**rest}/b",
                   "routes[2].match.path: a catch-all parameter must be the last segment");
    expect_invalid("/a/{}", "routes[2].match.path: empty parameter name");
    expect_invalid("/a/{**}", "routes[2].match.path: empty parameter name");
    expect_invalid("/a/{?}", "routes[2].match.path: empty parameter name");
    expect_invalid("/a/{i d}", "routes[2].match.path: invalid character in parameter name");
    /* RoutePatternParser's rules for constraints, defaults and complex segments */
    expect_invalid("/a/{id=1?}", "routes[2].match.path: an optional parameter cannot have a "
                                 "default value");
    expect_invalid("/a/{*rest?}", "routes[2].match.path: a catch-all parameter cannot be optional");
    expect_invalid("/a/{x}{y}", "routes[2].match.path: two parameters in one segment must be "
                                "separated by literal text");
    expect_invalid("/a/x{*rest}", "routes[2].match.path: a catch-all parameter cannot share its "
                                  "segment with anything else");
    expect_invalid("/a/{x}-{y?}",
                   "routes[2].match.path: an optional parameter in a segment with other parts "
                   "must be last and follow a period (\"{name}.{ext?}\")");
    expect_invalid("/a/{id:float}",
                   "routes[2].match.path: the constraint \"float\" of parameter \"id\" is not "
                   "supported (int, long, bool, guid, alpha, required, minlength, maxlength, "
                   "length, min, max, range, regex)");
    expect_invalid("/a/{id:int(3)}",
                   "routes[2].match.path: the constraint \"int\" takes no argument");
    expect_invalid("/a/{id:min}", "routes[2].match.path: the constraint \"min\" needs an argument");
    expect_invalid("/a/{id:range(9,1)}",
                   "routes[2].match.path: the constraint \"range(9,1)\" has an invalid range");
    expect_invalid("/a/{id:length(x)}", "routes[2].match.path: the constraint \"length\" needs "
                                        "integer arguments, not \"x\"");
    expect_invalid("/a/{id:regex(a(?=b))}",
                   "routes[2].match.path: regex(a(?=b)): lookarounds and inline options "
                   "\"(?...)\" have no POSIX equivalent");
    expect_invalid("/a/{id:regex(a+?)}", "routes[2].match.path: regex(a+?): lazy and possessive "
                                         "quantifiers have no POSIX equivalent");
    expect_invalid("/a/{id:regex(abc}",
                   "routes[2].match.path: unclosed parenthesis in a constraint");
    expect_invalid("/a/{id}/{ID}", "routes[2].match.path: a parameter name is used twice");
}

static void test_invalid_host(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "bad", "/", 0);
    hosts(fx, r, "example.com:99999", NULL);
    char err[256] = "";
    assert_int_equal(build_err(fx, err, sizeof(err)), -1);
    assert_string_equal(err, "routes[0].match.hosts: invalid port");
    fx_free(fx);
}

static void test_too_many_params(void **state)
{
    char tpl[512] = "";
    for (int i = 0; i <= FG_MAX_CAPTURES; i++)
        snprintf(tpl + strlen(tpl), sizeof(tpl) - strlen(tpl), "/{p%d}", i);
    expect_invalid(tpl, "routes[2].match.path: too many parameters");
}

static void test_rebuild_after_free(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "a", "/a", 0);
    build(fx);
    fg_route_table_free(&fx->cfg);
    assert_null(fx->srv.router);
    assert_null(fx->routes[0].compiled);
    build(fx);
    assert_string_equal(M(fx, "GET", "/a", "h"), "a");
    fx_free(fx);
}

/* Two servers sharing cfg->routes with different lists, plus a route attached by hand. */
static void test_two_servers(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "a", "/x", 0);
    route(fx, "b", "/{**rest}", 0);
    fg_route_t extra = {.id = "extra", .match.path = "/x/{id}"};
    fg_route_t *list1[] = {&fx->routes[0]};
    fg_route_t *list2[] = {&fx->routes[1], &extra, &fx->routes[0]};
    fg_server_t srv[2] = {{.id = "s1", .routes = list1, .nroutes = 1},
                          {.id = "s2", .routes = list2, .nroutes = 3}};
    fg_config_t cfg = {.servers = srv, .nservers = 2, .routes = fx->routes, .nroutes = 2};
    char err[128] = "";
    assert_int_equal(fg_route_table_build(&cfg, err, sizeof(err)), 0);
    assert_string_equal(matched(&srv[0], mkreq(fx->pool, "GET", "/x", "h", NULL)), "a");
    assert_string_equal(matched(&srv[0], mkreq(fx->pool, "GET", "/y", "h", NULL)), "none");
    assert_string_equal(matched(&srv[1], mkreq(fx->pool, "GET", "/x", "h", NULL)), "a");
    assert_string_equal(matched(&srv[1], mkreq(fx->pool, "GET", "/x/1", "h", NULL)), "extra");
    assert_string_equal(matched(&srv[1], mkreq(fx->pool, "GET", "/y", "h", NULL)), "b");
    fg_route_table_free(&cfg);
    assert_null(extra.compiled);
    assert_null(srv[1].router);
    fx_free(fx);
}

static void test_hand_attached_invalid(void **state)
{
    fg_route_t bad = {.id = "oops", .match.path = "/{a"};
    fg_route_t *list[] = {&bad};
    fg_server_t srv = {.id = "s", .routes = list, .nroutes = 1};
    fg_config_t cfg = {.servers = &srv, .nservers = 1};
    char err[128] = "";
    assert_int_equal(fg_route_table_build(&cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "route oops: match.path: unbalanced braces");
    assert_null(bad.compiled);
}

static void test_host_index_trailing_dot_pattern(void **state)
{
    fx_t *fx = fx_new(4);
    fg_route_t *r = route(fx, "dot", NULL, 0);
    hosts(fx, r, "Example.com.", NULL);
    r = route(fx, "p", "/{x}", 0);
    hosts(fx, r, "p.com", "P.com:8080", NULL);
    build(fx);
    assert_string_equal(M(fx, "GET", "/a", "example.COM"), "dot");
    assert_string_equal(M(fx, "GET", "/a", "example.com.:81"), "dot");
    assert_string_equal(M(fx, "GET", "/a", "p.com:8080"), "p");
    assert_string_equal(M(fx, "GET", "/a/b", "p.com"), "none");
    fx_free(fx);
}

/* ---- many routes ---- */

#define NBIG 1000

/* PREFIX/svcI/{id} on host hI.example.com (I mod 10), GET or POST by parity; plus three fallback
 * routes that must not shadow or be shadowed wrongly. */
static fx_t *big_fixture(size_t nroutes, const char *prefix)
{
    fx_t *fx = fx_new(nroutes + 3);
    char buf[64];
    for (size_t i = 0; i < nroutes; i++) {
        snprintf(buf, sizeof(buf), "svc%zu", i);
        char id[32];
        memcpy(id, buf, sizeof(id));
        snprintf(buf, sizeof(buf), "%s/svc%zu/{id}", prefix, i);
        fg_route_t *r = route(fx, id, buf, 0);
        snprintf(buf, sizeof(buf), "h%zu.example.com", i % 10);
        hosts(fx, r, buf, NULL);
        methods(fx, r, i % 2 ? "POST" : "GET", NULL);
    }
    fg_route_t *r = route(fx, "admin", NULL, 0);
    hosts(fx, r, "admin.example.com", NULL);
    r = route(fx, "wild", "/{**rest}", 0);
    hosts(fx, r, "*.wild.com", NULL);
    route(fx, "default", "/{**rest}", 100);
    build(fx);
    return fx;
}

static void check_thousand(const char *prefix)
{
    fx_t *fx = big_fixture(NBIG, prefix);
    size_t probes[] = {0, 1, 499, 500, 998, 999};
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++) {
        size_t i = probes[k];
        char target[64], host[64], want[32];
        snprintf(target, sizeof(target), "%s/SVC%zu/item-%zu", prefix, i, i);
        snprintf(host, sizeof(host), "h%zu.example.com:8080", i % 10);
        snprintf(want, sizeof(want), "svc%zu", i);
        const char *method = i % 2 ? "POST" : "GET";
        fg_request_t *req = mkreq(fx->pool, method, target, host, NULL);
        assert_string_equal(matched(&fx->srv, req), want);
        assert_int_equal(req->ncaptures, 1);
        char value[32];
        snprintf(value, sizeof(value), "item-%zu", i);
        assert_capture(req, "id", value);
        /* wrong method, wrong host: the default route */
        const char *other = i % 2 ? "GET" : "POST";
        assert_string_equal(matched(&fx->srv, mkreq(fx->pool, other, target, host, NULL)),
                            "default");
        snprintf(host, sizeof(host), "h%zu.example.com", (i + 1) % 10);
        assert_string_equal(matched(&fx->srv, mkreq(fx->pool, method, target, host, NULL)),
                            "default");
    }
    char t[64];
    snprintf(t, sizeof(t), "%s/svc1000/x", prefix);
    assert_string_equal(M(fx, "GET", t, "h0.example.com"), "default");
    snprintf(t, sizeof(t), "%s/svc5", prefix);
    assert_string_equal(M(fx, "GET", t, "h5.example.com"), "default");
    snprintf(t, sizeof(t), "%s/svc4/x", prefix);
    assert_string_equal(M(fx, "GET", t, "admin.example.com"), "admin");
    assert_string_equal(M(fx, "GET", t, "a.wild.com"), "wild");
    assert_string_equal(M(fx, "GET", t, "h4.example.com"), "svc4");
    fx_free(fx);
}

static void test_thousand_routes(void **state)
{
    check_thousand("");
}

/* The same under a shared prefix: the index must not degrade to one bucket of 1,000. */
static void test_thousand_routes_shared_prefix(void **state)
{
    check_thousand("/api/v1");
}

/* Literal segments past the indexed depth are still compared. */
static void test_deep_literal_template(void **state)
{
    fx_t *fx = fx_new(4);
    route(fx, "deep", "/a/b/c/d/e/f/g/h/i/j/{x}", 0);
    route(fx, "deep2", "/a/b/c/d/e/f/g/h/i/k/{x}", 0);
    build(fx);
    assert_string_equal(M(fx, "GET", "/a/b/c/d/e/f/g/h/i/j/1", "h"), "deep");
    assert_string_equal(M(fx, "GET", "/a/b/c/d/e/f/g/h/i/k/1", "h"), "deep2");
    assert_string_equal(M(fx, "GET", "/a/b/c/d/e/f/g/h/i/z/1", "h"), "none");
    fx_free(fx);
}

static double ns_per_match(fx_t *fx, fg_request_t *req, const char *want, long iters)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    const fg_route_t *r = NULL;
    for (long i = 0; i < iters; i++)
        r = fg_router_match(&fx->srv, req);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_non_null(r);
    assert_string_equal(r->id, want);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)iters;
}

/* Micro-benchmark: prints ns/match for 1 and 1,000 routes; timings are not asserted (noisy
 * shared machines), only that both return the right route. */
static void bench(const char *prefix)
{
    fx_t *one = big_fixture(1, prefix), *many = big_fixture(NBIG, prefix);
    char t1path[64], t2path[64];
    snprintf(t1path, sizeof(t1path), "%s/svc0/42", prefix);
    snprintf(t2path, sizeof(t2path), "%s/svc500/42", prefix);
    fg_request_t *r1 = mkreq(one->pool, "GET", t1path, "h0.example.com", "Accept", "*/*",
                             "User-Agent", "bench", NULL);
    fg_request_t *r2 = mkreq(many->pool, "GET", t2path, "h0.example.com", "Accept", "*/*",
                             "User-Agent", "bench", NULL);
    long iters = 100000;
    double t1 = 1e18, t2 = 1e18;
    /* Alternate the two and keep the best round of each: the machine is shared and noisy. */
    for (int round = 0; round < 5; round++) {
        double a = ns_per_match(one, r1, "svc0", iters);
        double b = ns_per_match(many, r2, "svc500", iters);
        t1 = a < t1 ? a : t1;
        t2 = b < t2 ? b : t2;
    }
    printf("router bench \"%s/svcN/{id}\": 1 route %.1f ns/match, %d routes %.1f ns/match "
           "(speed ratio %.2f)\n",
           prefix, t1, NBIG, t2, t1 / t2);
    fx_free(one);
    fx_free(many);
}

/* Micro-benchmark: prints ns/match for 1 and 1,000 routes; timings are not asserted (noisy
 * shared machines), only that both return the right route. */
static void test_bench_1_vs_1000(void **state)
{
    bench("");
    bench("/api/v1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tenant_route_matches_only_its_tenant),
        cmocka_unit_test(test_tenant_route_beats_global_of_same_path),
        cmocka_unit_test(test_literal_case_insensitive),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_template_trailing_slash_ignored),
        cmocka_unit_test(test_param_one_segment),
        cmocka_unit_test(test_several_params),
        cmocka_unit_test(test_catchall),
        cmocka_unit_test(test_catchall_single_star_and_root),
        cmocka_unit_test(test_optional_last),
        cmocka_unit_test(test_root_template),
        cmocka_unit_test(test_no_path_matches_any),
        cmocka_unit_test(test_host_exact_any_port),
        cmocka_unit_test(test_host_with_port),
        cmocka_unit_test(test_host_wildcard),
        cmocka_unit_test(test_host_wildcard_with_port),
        cmocka_unit_test(test_host_ipv6_and_star),
        cmocka_unit_test(test_several_hosts_or),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_header_exact),
        cmocka_unit_test(test_header_prefix),
        cmocka_unit_test(test_header_contains_not_contains),
        cmocka_unit_test(test_header_exists_not_exists),
        cmocka_unit_test(test_header_rules_and_fields_or),
        cmocka_unit_test(test_query_modes),
        cmocka_unit_test(test_order_wins),
        cmocka_unit_test(test_literal_beats_param),
        cmocka_unit_test(test_param_beats_catchall),
        cmocka_unit_test(test_longer_literal_prefix_wins),
        cmocka_unit_test(test_config_order_breaks_ties),
        cmocka_unit_test(test_precedence_constraints_and_segments),
        cmocka_unit_test(test_constraint_precedence_and_fallthrough),
        cmocka_unit_test(test_complex_segment_precedence),
        cmocka_unit_test(test_defaults_and_optional_constraints),
        cmocka_unit_test(test_allowed_methods),
        cmocka_unit_test(test_non_ascii_literal),
        cmocka_unit_test(test_negative_order_and_fallback_merge),
        cmocka_unit_test(test_full_match_falls_through),
        cmocka_unit_test(test_no_match_clears_captures),
        cmocka_unit_test(test_empty_server),
        cmocka_unit_test(test_invalid_templates),
        cmocka_unit_test(test_invalid_host),
        cmocka_unit_test(test_too_many_params),
        cmocka_unit_test(test_rebuild_after_free),
        cmocka_unit_test(test_two_servers),
        cmocka_unit_test(test_hand_attached_invalid),
        cmocka_unit_test(test_host_index_trailing_dot_pattern),
        cmocka_unit_test(test_thousand_routes),
        cmocka_unit_test(test_thousand_routes_shared_prefix),
        cmocka_unit_test(test_deep_literal_template),
        cmocka_unit_test(test_bench_1_vs_1000),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
