/* Route matching (YARP semantics, see worker/http/router.h).
 *
 * Build time: each route's path template is split into segments and its hosts are parsed
 * (route->compiled). Each server then gets an index (server->router): a trie over lower-cased
 * literal segments, where a route hangs on the node reached by its leading literal segments
 * ("/api/v1/{id}" under api -> v1); routes with no leading literal but only exact hosts are
 * bucketed by host instead of hanging on the root. Every list is sorted by the route's rank
 * on that server, a total order of (order, path specificity, configuration order).
 *
 * Match time: the request's segments walk the trie; the lists of the nodes passed and of the
 * request's host are merged by rank and the first route that fully matches wins. Only routes
 * whose literal prefix matches the request are ever looked at, so the cost does not grow with
 * the number of routes on the server. */
#include "worker/http/router.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { SEG_LITERAL, SEG_PARAM, SEG_OPTIONAL, SEG_CATCHALL };

typedef struct {
    int kind;
    fg_str_t text; /* literal text or parameter name, a slice of the template */
} seg_t;

typedef struct {
    fg_str_t name; /* without port; for wildcards the suffix including the dot: ".example.com" */
    int wildcard;  /* "*.example.com" */
    int any;       /* "*" */
    int port;      /* -1 = any port */
} host_pat_t;

typedef struct {
    const fg_route_t *route;
    int has_path;
    seg_t *segs;
    size_t nsegs;
    host_pat_t *hosts;
    size_t nhosts;
    int exact_hosts_only; /* hosts present and none is a wildcard: indexable by host */
    /* specificity, compared at build time */
    unsigned nliteral;
    unsigned nleading; /* literal segments before the first parameter */
    int catchall;
} compiled_t;

typedef struct {
    const compiled_t *c;
    uint32_t rank;
} entry_t;

typedef struct {
    entry_t *v;
    size_t n;
    size_t cap;
} list_t;

typedef struct {
    char *key; /* lower-case, owned; NULL = empty slot */
    size_t keylen;
    uint64_t hash;
    list_t list;          /* host table: the routes of that host */
    struct node_s *child; /* trie: the node under that segment */
} bucket_t;

typedef struct {
    bucket_t *b;
    size_t cap; /* power of two, or 0 */
    size_t n;
} table_t;

/* A trie node: routes whose leading literal segments lead exactly here. */
typedef struct node_s {
    table_t children;
    list_t routes;
} node_t;

/* Literal segments indexed per route; deeper literals are checked by the full match only. */
#define MAX_DEPTH 8

typedef struct {
    node_t root;
    table_t by_host;
    int has_tenant_routes;
} router_t;

/* ---- helpers ---- */

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

static uint64_t hash_lower(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= ascii_lower((unsigned char)s[i]);
        h *= 1099511628211ULL;
    }
    return h;
}

static int list_push(list_t *l, const compiled_t *c, uint32_t rank)
{
    /* A route listing one host twice ("a.com", "a.com:8080") lands in a bucket once. */
    if (l->n > 0 && l->v[l->n - 1].c == c)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        entry_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].c = c;
    l->v[l->n].rank = rank;
    l->n++;
    return 0;
}

static bucket_t *table_find(const table_t *t, const char *key, size_t len)
{
    if (t->cap == 0)
        return NULL;
    uint64_t h = hash_lower(key, len);
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        bucket_t *b = &t->b[i];
        if (b->key == NULL)
            return NULL;
        if (b->hash == h && b->keylen == len && strncasecmp(b->key, key, len) == 0)
            return b;
    }
}

static int table_grow(table_t *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    bucket_t *nb = calloc(cap, sizeof(*nb));
    if (nb == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->b[i].key == NULL)
            continue;
        size_t j = t->b[i].hash & (cap - 1);
        while (nb[j].key != NULL)
            j = (j + 1) & (cap - 1);
        nb[j] = t->b[i];
    }
    free(t->b);
    t->b = nb;
    t->cap = cap;
    return 0;
}

/* The bucket for key, created when absent. NULL on allocation failure. */
static bucket_t *table_get(table_t *t, const char *key, size_t len)
{
    bucket_t *b = table_find(t, key, len);
    if (b != NULL)
        return b;
    if ((t->n + 1) * 2 > t->cap && table_grow(t) != 0) /* load factor <= 1/2 */
        return NULL;
    uint64_t h = hash_lower(key, len);
    size_t i = h & (t->cap - 1);
    while (t->b[i].key != NULL)
        i = (i + 1) & (t->cap - 1);
    b = &t->b[i];
    b->key = malloc(len + 1);
    if (b->key == NULL)
        return NULL;
    for (size_t k = 0; k < len; k++)
        b->key[k] = (char)ascii_lower((unsigned char)key[k]);
    b->key[len] = '\0';
    b->keylen = len;
    b->hash = h;
    t->n++;
    return b;
}

static void node_free(node_t *n);

static void table_free(table_t *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->b[i].key);
        free(t->b[i].list.v);
        if (t->b[i].child != NULL) {
            node_free(t->b[i].child);
            free(t->b[i].child);
        }
    }
    free(t->b);
}

static void node_free(node_t *n)
{
    table_free(&n->children);
    free(n->routes.v);
}

/* ---- compiling one route ---- */

static int valid_name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.';
}

/* Parse one "{...}" segment s[0..n) into seg. Returns NULL or the reason it is invalid. */
static const char *parse_param(const char *s, size_t n, seg_t *seg)
{
    const char *p = s + 1, *end = s + n - 1; /* inside the braces */
    seg->kind = SEG_PARAM;
    if (end - p >= 2 && p[0] == '*' && p[1] == '*') {
        seg->kind = SEG_CATCHALL;
        p += 2;
    } else if (end - p >= 1 && p[0] == '*') {
        seg->kind = SEG_CATCHALL;
        p += 1;
    }
    if (end > p && end[-1] == '?') {
        if (seg->kind == SEG_CATCHALL)
            return "a catch-all parameter cannot be optional";
        seg->kind = SEG_OPTIONAL;
        end--;
    }
    if (end == p)
        return "empty parameter name";
    for (const char *q = p; q < end; q++) {
        if (*q == ':' || *q == '=')
            return "parameter constraints and defaults are not supported";
        if (!valid_name_char((unsigned char)*q))
            return "invalid character in parameter name";
    }
    seg->text = (fg_str_t){p, (size_t)(end - p)};
    return NULL;
}

/* Split a template into segments. Empty segments (a leading, doubled or trailing '/') are
 * ignored: "/api/" is the same template as "/api". Returns NULL or the reason it is invalid. */
static const char *parse_template(const char *tpl, compiled_t *c)
{
    size_t len = strlen(tpl), max = 1;
    for (size_t i = 0; i < len; i++)
        max += tpl[i] == '/';
    c->segs = calloc(max, sizeof(seg_t));
    if (c->segs == NULL)
        return "out of memory";
    size_t ncap = 0, i = 0;
    int leading = 1;
    while (i < len) {
        while (i < len && tpl[i] == '/')
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && tpl[i] != '/')
            i++;
        const char *s = tpl + start;
        size_t n = i - start;
        seg_t *seg = &c->segs[c->nsegs];
        if (c->nsegs > 0 && (seg[-1].kind == SEG_CATCHALL || seg[-1].kind == SEG_OPTIONAL))
            return seg[-1].kind == SEG_CATCHALL ? "a catch-all parameter must be the last segment"
                                                : "an optional parameter must be the last segment";
        if (s[0] == '{') {
            if (n < 2 || s[n - 1] != '}' || memchr(s + 1, '{', n - 2) || memchr(s + 1, '}', n - 2))
                return "unbalanced braces";
            const char *why = parse_param(s, n, seg);
            if (why != NULL)
                return why;
            for (size_t k = 0; k < c->nsegs; k++)
                if (c->segs[k].kind != SEG_LITERAL && fg_str_ieq(c->segs[k].text, seg->text))
                    return "a parameter name is used twice";
            if (++ncap > FG_MAX_CAPTURES)
                return "too many parameters";
            leading = 0;
            if (seg->kind == SEG_CATCHALL)
                c->catchall = 1;
        } else {
            if (memchr(s, '{', n) || memchr(s, '}', n))
                return memchr(s, '{', n) && memchr(s, '}', n)
                           ? "a parameter must be a whole segment"
                           : "unbalanced braces";
            /* A normalised request path has no such segment: the route could never match. */
            if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
                return "\".\" and \"..\" segments never match a normalised path";
            for (size_t k = 0; k < n; k++)
                if (strchr("?# \\\"<>^`|", s[k]) != NULL)
                    return "a literal segment cannot hold '?', '#', spaces or characters a "
                           "request path never has";
            seg->kind = SEG_LITERAL;
            seg->text = (fg_str_t){s, n};
            c->nliteral++;
            c->nleading += leading;
        }
        c->nsegs++;
    }
    return NULL;
}

static int parse_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return -2;
    int port = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -2;
        port = port * 10 + (s[i] - '0');
    }
    return port <= 65535 ? port : -2;
}

/* Split "host", "host:port", "[v6]" or "[v6]:port" into a name and a port (-1 when absent,
 * -2 when malformed). The name of an IPv6 literal keeps its brackets. */
static void split_host(fg_str_t in, fg_str_t *name, int *port)
{
    const char *colon = NULL;
    if (in.len > 0 && in.base[0] == '[') {
        const char *rb = memchr(in.base, ']', in.len);
        if (rb != NULL && (size_t)(rb - in.base) + 1 < in.len && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(in.base ? in.base : "", ':', in.len);
    }
    if (colon == NULL) {
        *name = in;
        *port = -1;
        return;
    }
    *name = (fg_str_t){in.base, (size_t)(colon - in.base)};
    *port = parse_port(colon + 1, in.len - (size_t)(colon - in.base) - 1);
}

static const char *parse_hosts(const fg_route_match_t *m, compiled_t *c)
{
    if (m->nhosts == 0)
        return NULL;
    c->hosts = calloc(m->nhosts, sizeof(host_pat_t));
    if (c->hosts == NULL)
        return "out of memory";
    c->exact_hosts_only = 1;
    for (size_t i = 0; i < m->nhosts; i++) {
        host_pat_t *h = &c->hosts[i];
        split_host(fg_str(m->hosts[i]), &h->name, &h->port);
        if (h->port == -2 || h->port == 0)
            return "invalid port";
        if (h->name.len > 1 && h->name.base[h->name.len - 1] == '.')
            h->name.len--; /* "example.com." names the same host as the request's form */
        if (h->name.len == 1 && h->name.base[0] == '*') {
            h->any = 1;
        } else if (h->name.len > 2 && h->name.base[0] == '*' && h->name.base[1] == '.') {
            h->wildcard = 1;
            h->name.base++;
            h->name.len--;
        } else if (h->name.len == 0 || memchr(h->name.base, '*', h->name.len)) {
            return "invalid host pattern";
        }
        if (h->any || h->wildcard)
            c->exact_hosts_only = 0;
    }
    c->nhosts = m->nhosts;
    return NULL;
}

static void compiled_free(compiled_t *c)
{
    if (c == NULL)
        return;
    free(c->segs);
    free(c->hosts);
    free(c);
}

/* Compile route r into r->compiled. Returns NULL or the reason it is invalid, and whether the
 * reason concerns the path (*field). */
static const char *compile_route(fg_route_t *r, const char **field)
{
    compiled_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return "out of memory";
    r->compiled = c;
    c->route = r;
    *field = "match.path";
    if (r->match.path != NULL) {
        c->has_path = 1;
        const char *why = parse_template(r->match.path, c);
        if (why != NULL)
            return why;
    } else {
        c->catchall = 1; /* no path ranks like "/{**any}" */
    }
    *field = "match.hosts";
    const char *why = parse_hosts(&r->match, c);
    if (why != NULL || r->kind != FG_ROUTE_REDIRECT || r->redirect_location == NULL)
        return why;
    /* Every {name} of the location is a variable or a parameter of the path template: an
     * unknown one would be sent literally. */
    *field = "redirect.location";
    for (const char *p = strchr(r->redirect_location, '{'); p; p = strchr(p + 1, '{')) {
        const char *close = strchr(p, '}');
        if (close == NULL)
            return "unbalanced braces";
        fg_str_t name = {p + 1, (size_t)(close - p - 1)};
        while (name.len && name.base[0] == '*') {
            name.base++;
            name.len--;
        }
        int known = fg_str_eq(name, FG_STR_LIT("scheme")) || fg_str_eq(name, FG_STR_LIT("host")) ||
                    fg_str_eq(name, FG_STR_LIT("path")) || fg_str_eq(name, FG_STR_LIT("query"));
        for (size_t k = 0; k < c->nsegs && !known; k++)
            known = c->segs[k].kind != SEG_LITERAL && fg_str_ieq(c->segs[k].text, name);
        if (!known)
            return "unknown variable in braces (use {scheme}, {host}, {path}, {query} or a "
                   "parameter of match.path)";
    }
    return NULL;
}

/* ---- ranking and indexing one server ---- */

/* Path specificity (YARP precedence): more literal segments first; then templates without a
 * catch-all; then the longer literal prefix. Ties keep configuration order. */
static int spec_cmp(const fg_route_t *a, const fg_route_t *b)
{
    const compiled_t *ca = a->compiled, *cb = b->compiled;
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    if (ca->nliteral != cb->nliteral)
        return ca->nliteral > cb->nliteral ? -1 : 1;
    if (ca->catchall != cb->catchall)
        return ca->catchall ? 1 : -1;
    if (ca->nleading != cb->nleading)
        return ca->nleading > cb->nleading ? -1 : 1;
    return 0;
}

typedef struct {
    const fg_route_t *r;
    uint32_t idx;
} rank_item_t;

static int rank_item_cmp(const void *a, const void *b)
{
    const rank_item_t *x = a, *y = b;
    int c = spec_cmp(x->r, y->r);
    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int index_route(router_t *rt, const compiled_t *c, uint32_t rank)
{
    if (c->nleading == 0 && c->exact_hosts_only) {
        for (size_t i = 0; i < c->nhosts; i++) {
            bucket_t *b = table_get(&rt->by_host, c->hosts[i].name.base, c->hosts[i].name.len);
            if (b == NULL || list_push(&b->list, c, rank) != 0)
                return -1;
        }
        return 0;
    }
    node_t *n = &rt->root;
    for (size_t i = 0; i < c->nleading && i < MAX_DEPTH; i++) {
        bucket_t *b = table_get(&n->children, c->segs[i].text.base, c->segs[i].text.len);
        if (b == NULL)
            return -1;
        if (b->child == NULL && (b->child = calloc(1, sizeof(node_t))) == NULL)
            return -1;
        n = b->child;
    }
    return list_push(&n->routes, c, rank);
}

static void router_free(router_t *rt)
{
    if (rt == NULL)
        return;
    node_free(&rt->root);
    table_free(&rt->by_host);
    free(rt);
}

/* Index the routes of srv into a new server->router. Returns 0 or -1 (out of memory; what was
 * built is left in srv->router for fg_router_free). */
static int build_server(fg_server_t *srv)
{
    router_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return -1;
    srv->router = rt;
    rank_item_t *items = calloc(srv->nroutes ? srv->nroutes : 1, sizeof(*items));
    if (items == NULL)
        return -1;
    for (size_t i = 0; i < srv->nroutes; i++) {
        items[i] = (rank_item_t){srv->routes[i], (uint32_t)i};
        rt->has_tenant_routes |= !srv->routes[i]->is_global && srv->routes[i]->tenant_code;
    }
    qsort(items, srv->nroutes, sizeof(*items), rank_item_cmp);
    /* Pushing in rank order keeps every list sorted by rank. */
    int rc = 0;
    for (size_t k = 0; k < srv->nroutes && rc == 0; k++)
        rc = index_route(rt, items[k].r->compiled, (uint32_t)k);
    free(items);
    return rc;
}

/* Whether r is one of cfg->routes (rather than attached to a server by hand). */
static int in_cfg(const fg_config_t *cfg, const fg_route_t *r)
{
    return cfg->nroutes > 0 && r >= cfg->routes && r < cfg->routes + cfg->nroutes;
}

void fg_router_free(fg_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nservers; i++) {
        router_free(cfg->servers[i].router);
        cfg->servers[i].router = NULL;
        /* Routes attached by hand (not in cfg->routes) were compiled for this server. */
        for (size_t k = 0; k < cfg->servers[i].nroutes; k++) {
            fg_route_t *r = cfg->servers[i].routes[k];
            if (!in_cfg(cfg, r)) {
                compiled_free(r->compiled);
                r->compiled = NULL;
            }
        }
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        compiled_free(cfg->routes[i].compiled);
        cfg->routes[i].compiled = NULL;
    }
}

int fg_router_build(fg_config_t *cfg, char *err, size_t errlen)
{
    /* Start from a clean slate so that fg_router_free copes with a failure at any point. */
    for (size_t i = 0; i < cfg->nroutes; i++)
        cfg->routes[i].compiled = NULL;
    for (size_t s = 0; s < cfg->nservers; s++) {
        cfg->servers[s].router = NULL;
        for (size_t k = 0; k < cfg->servers[s].nroutes; k++)
            cfg->servers[s].routes[k]->compiled = NULL;
    }
    const char *field = "match.path", *why = NULL;
    const fg_route_t *bad = NULL;
    for (size_t i = 0; i < cfg->nroutes && why == NULL; i++) {
        bad = &cfg->routes[i];
        why = compile_route(&cfg->routes[i], &field);
    }
    /* Routes attached to a server but absent from cfg->routes (built by hand) */
    for (size_t s = 0; s < cfg->nservers && why == NULL; s++) {
        fg_server_t *srv = &cfg->servers[s];
        for (size_t k = 0; k < srv->nroutes && why == NULL; k++) {
            bad = srv->routes[k];
            if (bad->compiled == NULL)
                why = compile_route(srv->routes[k], &field);
        }
        if (why == NULL && build_server(srv) != 0) {
            why = "out of memory";
            bad = NULL;
        }
    }
    if (why == NULL)
        return 0;
    if (bad != NULL && in_cfg(cfg, bad))
        snprintf(err, errlen, "routes[%zu].%s: %s", (size_t)(bad - cfg->routes), field, why);
    else if (bad != NULL)
        snprintf(err, errlen, "route %s: %s: %s", bad->id ? bad->id : "?", field, why);
    else
        snprintf(err, errlen, "router: %s", why);
    fg_router_free(cfg);
    return -1;
}

/* ---- matching ---- */

/* The request's authority, split once per match. */
typedef struct {
    fg_str_t name; /* without port and trailing dot */
    int port;      /* explicit, else the scheme's default */
} req_host_t;

static req_host_t request_host(const fg_request_t *req)
{
    req_host_t h;
    split_host(req->host, &h.name, &h.port);
    /* RFC 3986 3.2.2: a trailing dot names the same host (fully qualified form). */
    if (h.name.len > 1 && h.name.base[h.name.len - 1] == '.')
        h.name.len--;
    if (h.port == -1)
        h.port = fg_str_ieq_c(req->scheme, "https") ? 443 : 80;
    return h;
}

static int host_ok(const compiled_t *c, const req_host_t *rh)
{
    if (c->nhosts == 0)
        return 1;
    for (size_t i = 0; i < c->nhosts; i++) {
        const host_pat_t *p = &c->hosts[i];
        if (p->port >= 0 && p->port != rh->port)
            continue;
        if (p->any)
            return 1;
        if (p->wildcard) {
            /* "*.example.com" needs at least one more label: never the bare domain */
            if (rh->name.len > p->name.len &&
                strncasecmp(rh->name.base + rh->name.len - p->name.len, p->name.base,
                            p->name.len) == 0)
                return 1;
            continue;
        }
        if (fg_str_ieq(rh->name, p->name))
            return 1;
    }
    return 0;
}

static int method_ok(const fg_route_match_t *m, fg_str_t method)
{
    if (m->nmethods == 0)
        return 1;
    for (size_t i = 0; i < m->nmethods; i++)
        if (fg_str_eq(method, fg_str(m->methods[i])))
            return 1;
    return 0;
}

/* Match the template against the normalised path and fill the captures (slices of path). */
static int path_ok(const compiled_t *c, fg_request_t *req)
{
    req->ncaptures = 0;
    if (!c->has_path)
        return 1;
    const char *p = req->path.base;
    size_t len = req->path.len, pos = (len > 0 && p[0] == '/') ? 1 : 0;
    for (size_t i = 0; i < c->nsegs; i++) {
        const seg_t *s = &c->segs[i];
        if (s->kind == SEG_CATCHALL) {
            size_t from = pos < len ? pos : len;
            req->captures[req->ncaptures++] = (fg_capture_t){s->text, {p + from, len - from}};
            return 1;
        }
        if (pos >= len) { /* no segment left */
            if (s->kind == SEG_OPTIONAL)
                return 1;
            return 0;
        }
        const char *slash = memchr(p + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - p) : len;
        fg_str_t seg = {p + pos, end - pos};
        if (s->kind == SEG_LITERAL) {
            if (!fg_str_ieq(seg, s->text))
                return 0;
        } else {
            if (seg.len == 0)
                return 0;
            req->captures[req->ncaptures++] = (fg_capture_t){s->text, seg};
        }
        pos = end + 1;
    }
    /* Only a trailing slash may remain: "/api" matches "/api/". */
    return pos >= len;
}

static int ci_prefix(const char *s, size_t n, const char *pat, size_t m, int cs)
{
    if (m > n)
        return 0;
    return cs ? memcmp(s, pat, m) == 0 : strncasecmp(s, pat, m) == 0;
}

static int contains(fg_str_t v, const char *pat, int cs)
{
    size_t m = strlen(pat);
    if (m == 0)
        return 1;
    for (size_t i = 0; i + m <= v.len; i++)
        if (ci_prefix(v.base + i, v.len - i, pat, m, cs))
            return 1;
    return 0;
}

/* ExactHeader / HeaderPrefix against one element of a list value: YARP splits on ',' and ';'
 * and strips one pair of quotes before comparing. */
static int element_ok(fg_str_t el, const fg_match_kv_t *m)
{
    while (el.len && (el.base[0] == ' ' || el.base[0] == '\t')) {
        el.base++;
        el.len--;
    }
    while (el.len && (el.base[el.len - 1] == ' ' || el.base[el.len - 1] == '\t'))
        el.len--;
    if (el.len >= 2 && el.base[0] == '"' && el.base[el.len - 1] == '"') {
        el.base++;
        el.len -= 2;
    }
    for (size_t k = 0; k < m->nvalues; k++) {
        size_t vl = strlen(m->values[k]);
        if (m->mode == FG_HDR_EXACT && vl != el.len)
            continue;
        if (ci_prefix(el.base, el.len, m->values[k], vl, m->case_sensitive))
            return 1;
    }
    return 0;
}

static int header_value_ok(fg_str_t v, const fg_match_kv_t *m)
{
    if (m->mode == FG_HDR_CONTAINS || m->mode == FG_HDR_NOT_CONTAINS) {
        for (size_t k = 0; k < m->nvalues; k++)
            if (contains(v, m->values[k], m->case_sensitive))
                return 1;
        return 0;
    }
    size_t start = 0;
    for (size_t i = 0; i <= v.len; i++) {
        if (i == v.len || v.base[i] == ',' || v.base[i] == ';') {
            if (element_ok((fg_str_t){v.base + start, i - start}, m))
                return 1;
            start = i + 1;
        }
    }
    return 0;
}

/* One header rule over every field of that name (RFC 9110 5.3: repeated fields form one list).
 * Positive modes need a hit in any field; NotContains/NotExists need none. */
static int header_rule_ok(const fg_match_kv_t *m, const fg_request_t *req)
{
    fg_str_t name = fg_str(m->name);
    int hit = 0, present = 0;
    for (size_t i = 0; i < req->nheaders && !hit; i++) {
        const fg_http_header_t *h = &req->headers[i];
        if (!fg_str_ieq(h->name, name))
            continue;
        present = 1;
        if (m->mode == FG_HDR_EXISTS)
            hit = h->value.len > 0;
        else if (m->mode != FG_HDR_NOT_EXISTS)
            hit = header_value_ok(h->value, m);
    }
    switch (m->mode) {
    case FG_HDR_NOT_EXISTS:
        return !present;
    case FG_HDR_NOT_CONTAINS:
        return !hit;
    default:
        return hit;
    }
}

/* ---- query parameters, compared percent-decoded without a copy ---- */

typedef struct {
    const char *s;
    size_t n, i;
} qcur_t;

/* The next decoded byte, or -1 at the end. '+' is a space (application/x-www-form-urlencoded);
 * a malformed escape is taken literally. */
static int qnext(qcur_t *c)
{
    if (c->i >= c->n)
        return -1;
    unsigned char ch = (unsigned char)c->s[c->i++];
    if (ch == '+')
        return ' ';
    if (ch == '%' && c->n - c->i >= 2 && isxdigit((unsigned char)c->s[c->i]) &&
        isxdigit((unsigned char)c->s[c->i + 1])) {
        char hex[3] = {c->s[c->i], c->s[c->i + 1], 0};
        c->i += 2;
        return (int)strtol(hex, NULL, 16);
    }
    return ch;
}

static int fold(int ch, int cs)
{
    return cs ? ch : tolower(ch);
}

/* Whether the decoded form of raw starts with pat (whole: equals pat). */
static int qprefix(qcur_t c, const char *pat, int cs, int whole)
{
    for (; *pat; pat++) {
        int ch = qnext(&c);
        if (ch < 0 || fold(ch, cs) != fold((unsigned char)*pat, cs))
            return 0;
    }
    return !whole || qnext(&c) < 0;
}

static int qvalue_ok(fg_str_t raw, const fg_match_kv_t *m)
{
    for (size_t k = 0; k < m->nvalues; k++) {
        qcur_t c = {raw.base, raw.len, 0};
        switch (m->mode) {
        case FG_QUERY_EXACT:
        case FG_QUERY_PREFIX:
            if (qprefix(c, m->values[k], m->case_sensitive, m->mode == FG_QUERY_EXACT))
                return 1;
            break;
        default: /* Contains / NotContains: try each decoded start */
            for (;;) {
                if (qprefix(c, m->values[k], m->case_sensitive, 0))
                    return 1;
                if (qnext(&c) < 0)
                    break;
            }
        }
    }
    return 0;
}

static int query_rule_ok(const fg_match_kv_t *m, fg_str_t query)
{
    int hit = 0;
    size_t i = 0;
    while (i < query.len && !hit) {
        const char *amp = memchr(query.base + i, '&', query.len - i);
        size_t end = amp ? (size_t)(amp - query.base) : query.len;
        fg_str_t pair = {query.base + i, end - i};
        i = end + 1;
        const char *eq = memchr(pair.base, '=', pair.len);
        fg_str_t name = {pair.base, eq ? (size_t)(eq - pair.base) : pair.len};
        fg_str_t value = eq ? (fg_str_t){eq + 1, pair.len - name.len - 1} : FG_STR_LIT("");
        /* Parameter names are case-insensitive, as in ASP.NET's query collection. */
        if (name.len == 0 || !qprefix((qcur_t){name.base, name.len, 0}, m->name, 0, 1))
            continue;
        if (m->mode == FG_QUERY_EXISTS)
            hit = value.len > 0;
        else
            hit = qvalue_ok(value, m);
    }
    return m->mode == FG_QUERY_NOT_CONTAINS ? !hit : hit;
}

/* A tenant route (not global) matches only its own tenant; codes compare exactly. */
static int tenant_route(const fg_route_t *r)
{
    return !r->is_global && r->tenant_code != NULL;
}

static int tenant_ok(const fg_route_t *r, fg_str_t tenant)
{
    return !tenant_route(r) || fg_str_eq(tenant, fg_str(r->tenant_code));
}

static int full_match(const compiled_t *c, fg_request_t *req, const req_host_t *rh)
{
    const fg_route_match_t *m = &c->route->match;
    if (!tenant_ok(c->route, req->tenant) || !method_ok(m, req->method) || !host_ok(c, rh) ||
        !path_ok(c, req))
        return 0;
    for (size_t i = 0; i < m->nheaders; i++)
        if (!header_rule_ok(&m->headers[i], req))
            return 0;
    for (size_t i = 0; i < m->nquery; i++)
        if (!query_rule_ok(&m->query[i], req->query))
            return 0;
    return 1;
}

/* Tenant precedence compares path templates as written, literals case-insensitively as the
 * match does (same template text = same path). */
static int same_path(const fg_route_t *a, const fg_route_t *b)
{
    const char *x = a->match.path, *y = b->match.path;
    if (x == NULL || y == NULL)
        return x == y;
    return strcasecmp(x, y) == 0;
}

/* Candidate lists for req: the trie nodes along its path, then its host's bucket. Returns
 * how many were stored in lists (at most MAX_DEPTH + 2). */
static size_t candidates(const router_t *rt, const fg_request_t *req, const req_host_t *rh,
                         const list_t **lists)
{
    size_t k = 0;
    const node_t *n = &rt->root;
    lists[k++] = &n->routes;
    const char *p = req->path.base;
    size_t len = req->path.len, pos = (len > 0 && p[0] == '/') ? 1 : 0;
    for (int depth = 0; depth < MAX_DEPTH && pos < len; depth++) {
        const char *slash = memchr(p + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - p) : len;
        const bucket_t *b = table_find(&n->children, p + pos, end - pos);
        if (b == NULL || b->child == NULL)
            break;
        n = b->child;
        lists[k++] = &n->routes;
        pos = end + 1;
    }
    const bucket_t *bh = table_find(&rt->by_host, rh->name.base ? rh->name.base : "", rh->name.len);
    if (bh != NULL)
        lists[k++] = &bh->list;
    return k;
}

const fg_route_t *fg_router_match(const fg_server_t *srv, fg_request_t *req)
{
    const router_t *rt = srv->router;
    req->ncaptures = 0;
    if (rt == NULL)
        return NULL;
    req_host_t rh = request_host(req);
    const compiled_t *found = NULL;
    const list_t *lists[MAX_DEPTH + 2];
    size_t at[MAX_DEPTH + 2] = {0};
    size_t k = candidates(rt, req, &rh, lists);
    /* Merge the rank-sorted candidate lists; the first full match is the best route. */
    for (;;) {
        size_t best = k;
        for (size_t i = 0; i < k; i++)
            if (at[i] < lists[i]->n &&
                (best == k || lists[i]->v[at[i]].rank < lists[best]->v[at[best]].rank))
                best = i;
        if (best == k)
            break;
        const compiled_t *c = lists[best]->v[at[best]++].c;
        if (!full_match(c, req, &rh))
            continue;
        if (found == NULL) {
            /* A global route: a tenant route of the same path may still outrank it below. */
            if (req->tenant.len == 0 || tenant_route(c->route) || !rt->has_tenant_routes)
                return c->route;
            found = c;
        } else if (tenant_route(c->route) && same_path(found->route, c->route)) {
            return c->route;
        }
    }
    if (found != NULL) {
        full_match(found, req, &rh); /* its captures, overwritten by the later attempts */
        return found->route;
    }
    req->ncaptures = 0;
    return NULL;
}
