#include "tables/route_table.h"

#include "tables/route_template.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

bucket_t *fg_route_table_find(const table_t *t, const char *key, size_t len)
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
    bucket_t *b = fg_route_table_find(t, key, len);
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

static int has_non_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 1;
    return 0;
}

/* A copy of s with every byte >= 0x80 written "%XX". NULL when out of memory. */
static char *percent_encode_high(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(3 * strlen(s) + 1), *w = out;
    if (out == NULL)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80) {
            *w++ = (char)c;
            continue;
        }
        *w++ = '%';
        *w++ = hex[c >> 4];
        *w++ = hex[c & 15];
    }
    *w = '\0';
    return out;
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

void fg_route_table_split_host(fg_str_t in, fg_str_t *name, int *port)
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
        fg_route_table_split_host(fg_str(m->hosts[i]), &h->name, &h->port);
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
    free(c->path_encoded);
    fg_route_template_free(&c->tpl);
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
        const char *tpl = r->match.path;
        if (has_non_ascii(tpl)) {
            /* A literal "/café" matches the request "/caf%C3%A9": requests carry UTF-8
             * percent-encoded (RFC 3986 2.5), and the match ignores the case of hex digits. */
            if ((c->path_encoded = percent_encode_high(tpl)) == NULL)
                return "out of memory";
            tpl = c->path_encoded;
        }
        const char *why = fg_route_template_parse(&c->tpl, tpl);
        if (why != NULL)
            return why;
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
        known = known || fg_route_template_has_param(&c->tpl, name);
        if (!known)
            return "unknown variable in braces (use {scheme}, {host}, {path}, {query} or a "
                   "parameter of match.path)";
    }
    return NULL;
}

/* ---- ranking and indexing one server ---- */

/* ASP.NET's inbound precedence digit of a segment (RoutePrecedence.ComputeInbound): literal 1,
 * complex segment or constrained parameter 2, parameter 3, constrained catch-all 4, catch-all 5.
 * A route without a path ranks as "/{**any}". */
static int seg_digit(const compiled_t *c, size_t i)
{
    if (!c->has_path)
        return 5;
    const seg_t *s = &c->tpl.segs[i];
    switch (s->kind) {
    case SEG_LITERAL:
        return 1;
    case SEG_COMPLEX:
        return 2;
    case SEG_CATCHALL:
        return s->p.ncons ? 4 : 5;
    default:
        return s->p.ncons ? 2 : 3;
    }
}

/* Path precedence as ASP.NET compares its decimal "1.13": digit by digit from the first
 * segment, a template that ends first (all digits equal so far) ranking first. */
static int precedence_cmp(const compiled_t *a, const compiled_t *b)
{
    size_t na = a->has_path ? a->tpl.nsegs : 1, nb = b->has_path ? b->tpl.nsegs : 1;
    for (size_t i = 0; i < na && i < nb; i++) {
        int x = seg_digit(a, i), y = seg_digit(b, i);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return na == nb ? 0 : na < nb ? -1 : 1;
}

/* A route with a constraint of some kind ranks before one without; then the one with more
 * rules of that kind. The kinds are compared in the order of ASP.NET's and YARP's matcher
 * policies: methods, hosts, headers, query parameters. */
static int constraints_cmp(const fg_route_t *a, const fg_route_t *b)
{
    size_t x[4] = {a->match.nmethods > 0, a->match.nhosts > 0, a->match.nheaders, a->match.nquery};
    size_t y[4] = {b->match.nmethods > 0, b->match.nhosts > 0, b->match.nheaders, b->match.nquery};
    for (int i = 0; i < 4; i++)
        if (x[i] != y[i])
            return x[i] > y[i] ? -1 : 1;
    return 0;
}

/* YARP's route order: lower `order`, then path precedence, then constraints. Ties keep
 * configuration order. */
static int spec_cmp(const fg_route_t *a, const fg_route_t *b)
{
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    int c = precedence_cmp(a->compiled, b->compiled);
    return c != 0 ? c : constraints_cmp(a, b);
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
    if (c->tpl.nleading == 0 && c->exact_hosts_only) {
        for (size_t i = 0; i < c->nhosts; i++) {
            bucket_t *b = table_get(&rt->by_host, c->hosts[i].name.base, c->hosts[i].name.len);
            if (b == NULL || list_push(&b->list, c, rank) != 0)
                return -1;
        }
        return 0;
    }
    node_t *n = &rt->root;
    for (size_t i = 0; i < c->tpl.nleading && i < MAX_DEPTH; i++) {
        bucket_t *b = table_get(&n->children, c->tpl.segs[i].text.base, c->tpl.segs[i].text.len);
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
 * built is left in srv->router for fg_route_table_free). */
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

void fg_route_table_free(fg_config_t *cfg)
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

int fg_route_table_build(fg_config_t *cfg, char *err, size_t errlen)
{
    /* Start from a clean slate so that fg_route_table_free copes with a failure at any point. */
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
    fg_route_table_free(cfg);
    return -1;
}
