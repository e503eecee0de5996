/* Route matching (YARP semantics, see worker/http/router.h) over the table the master built
 * (tables/route_table.h).
 *
 * The request's segments walk the trie; the lists of the nodes passed and of the request's
 * host are merged by rank and the first route that fully matches wins. Only routes whose
 * literal prefix matches the request are ever looked at, so the cost does not grow with the
 * number of routes on the server. */
#include "worker/http/router.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tables/route_table.h"
#include "tables/route_template.h"

_Static_assert(FG_MAX_CAPTURES >= FG_ROUTE_MAX_PARAMS, "a capture for every template parameter");

/* ---- matching ---- */

/* The request's authority, split once per match. */
typedef struct {
    fg_str_t name; /* without port and trailing dot */
    int port;      /* explicit, else the scheme's default */
} req_host_t;

static req_host_t request_host(const fg_request_t *req)
{
    req_host_t h;
    fg_route_table_split_host(req->host, &h.name, &h.port);
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

static void add_capture(fg_request_t *req, fg_str_t name, fg_str_t value)
{
    req->captures[req->ncaptures++] = (fg_capture_t){name, value};
}

/* A whole-segment parameter s: its value v when the request has one (present), else its
 * default. ASP.NET's rules: an absent optional parameter has no value and passes its
 * constraints; an absent catch-all has an empty one, which fails any constraint. */
static int param_ok(fg_request_t *req, const seg_t *s, fg_str_t v, int present)
{
    const part_t *p = &s->p;
    if (!present && p->has_default) {
        v = p->dflt;
    } else if (!present && s->kind == SEG_OPTIONAL) {
        return 1;
    } else if (!present && s->kind != SEG_CATCHALL) {
        return 0;
    } else if (!present && p->ncons > 0) {
        return 0;
    }
    if (present && !fg_route_constraints_ok(p, v))
        return 0;
    if (!present && p->has_default && !fg_route_constraints_ok(p, v))
        return 0;
    add_capture(req, s->text, v);
    return 1;
}

/* The segments from i on, when the request path has none left: each must be a parameter
 * that may be absent (optional, with a default, a catch-all). */
static int rest_ok(const compiled_t *c, size_t i, fg_request_t *req, fg_str_t at_end)
{
    for (; i < c->tpl.nsegs; i++) {
        const seg_t *s = &c->tpl.segs[i];
        if (s->kind == SEG_LITERAL || s->kind == SEG_COMPLEX || !param_ok(req, s, at_end, 0))
            return 0;
    }
    return 1;
}

/* A complex segment against the request segment v: the parts' values, then their
 * constraints. */
static int complex_ok(fg_request_t *req, const seg_t *s, fg_str_t v)
{
    fg_str_t vals[FG_ROUTE_MAX_PARTS];
    if (!fg_route_complex_match(s, v, vals))
        return 0;
    for (size_t j = 0; j < s->nparts; j++) {
        if (s->parts[j].literal || vals[j].base == NULL)
            continue;
        if (!fg_route_constraints_ok(&s->parts[j], vals[j]))
            return 0;
        add_capture(req, s->parts[j].text, vals[j]);
    }
    return 1;
}

/* Match the template against the normalised path and fill the captures (slices of path, or
 * a parameter's default value). */
static int path_ok(const compiled_t *c, fg_request_t *req)
{
    req->ncaptures = 0;
    if (!c->has_path)
        return 1;
    const char *p = req->path.base;
    size_t len = req->path.len, pos = (len > 0 && p[0] == '/') ? 1 : 0;
    for (size_t i = 0; i < c->tpl.nsegs; i++) {
        const seg_t *s = &c->tpl.segs[i];
        if (s->kind == SEG_CATCHALL) {
            size_t from = pos < len ? pos : len;
            return param_ok(req, s, (fg_str_t){p + from, len - from}, from < len);
        }
        if (pos >= len) /* no segment left */
            return rest_ok(c, i, req, (fg_str_t){p + len, 0});
        const char *slash = memchr(p + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - p) : len;
        fg_str_t seg = {p + pos, end - pos};
        if (s->kind == SEG_LITERAL) {
            if (!fg_str_ieq(seg, s->text))
                return 0;
        } else if (seg.len == 0) {
            return 0;
        } else if (s->kind == SEG_COMPLEX ? !complex_ok(req, s, seg) : !param_ok(req, s, seg, 1)) {
            return 0;
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

/* ExactHeader / HeaderPrefix against one element of a field: leading spaces are skipped and
 * one pair of surrounding quotes is stripped (YARP's HeaderMatcherPolicy). */
static int element_ok(fg_str_t el, const fg_match_kv_t *m)
{
    while (el.len && el.base[0] == ' ') {
        el.base++;
        el.len--;
    }
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

/* The end of the element of v that starts at i: the next separator outside a quoted string
 * (an unclosed quote runs to the end), or v.len. */
static size_t element_end(fg_str_t v, size_t i, char sep)
{
    for (; i < v.len; i++) {
        if (v.base[i] == sep)
            return i;
        if (v.base[i] == '"') {
            const char *q = memchr(v.base + i + 1, '"', v.len - i - 1);
            if (q == NULL)
                return v.len;
            i = (size_t)(q - v.base);
        }
    }
    return v.len;
}

/* One field against the rule. Elements are separated by ',' and, for Cookie only, by ';'
 * (RFC 6265 4.2.1); a separator inside quotes does not split. Contains looks at the whole
 * field. */
static int header_value_ok(fg_str_t v, const fg_match_kv_t *m, char sep)
{
    if (m->mode == FG_HDR_CONTAINS || m->mode == FG_HDR_NOT_CONTAINS) {
        for (size_t k = 0; k < m->nvalues; k++)
            if (contains(v, m->values[k], m->case_sensitive))
                return 1;
        return 0;
    }
    for (size_t i = 0; i < v.len;) {
        while (i < v.len && v.base[i] == ' ')
            i++;
        size_t end = element_end(v, i, sep);
        if (element_ok((fg_str_t){v.base + i, end - i}, m))
            return 1;
        i = end + 1;
    }
    return 0;
}

/* One header rule over every field of that name (RFC 9110 5.3: repeated fields form one list).
 * As YARP's HeaderMatcherPolicy: the header is "empty" when absent or when its only field has
 * an empty value; Exists needs it non-empty, NotExists empty; the value modes need a hit in any
 * field (NotContains: none, or an empty header). */
static int header_rule_ok(const fg_match_kv_t *m, const fg_request_t *req)
{
    fg_str_t name = fg_str(m->name);
    char sep = fg_str_ieq_c(name, "Cookie") ? ';' : ',';
    size_t fields = 0, last_len = 0;
    int hit = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const fg_http_header_t *h = &req->headers[i];
        if (!fg_str_ieq(h->name, name))
            continue;
        fields++;
        last_len = h->value.len;
        if (!hit && m->mode != FG_HDR_EXISTS && m->mode != FG_HDR_NOT_EXISTS)
            hit = header_value_ok(h->value, m, sep);
    }
    int empty = fields == 0 || (fields == 1 && last_len == 0);
    switch (m->mode) {
    case FG_HDR_EXISTS:
        return !empty;
    case FG_HDR_NOT_EXISTS:
        return empty;
    case FG_HDR_NOT_CONTAINS:
        return empty || !hit;
    default:
        return !empty && hit;
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

/* Whether route c matches req; with any_method, whatever the request's method. */
static int full_match_m(const compiled_t *c, fg_request_t *req, const req_host_t *rh,
                        int any_method)
{
    const fg_route_match_t *m = &c->route->match;
    if (!tenant_ok(c->route, req->tenant) || (!any_method && !method_ok(m, req->method)) ||
        !host_ok(c, rh) || !path_ok(c, req))
        return 0;
    for (size_t i = 0; i < m->nheaders; i++)
        if (!header_rule_ok(&m->headers[i], req))
            return 0;
    for (size_t i = 0; i < m->nquery; i++)
        if (!query_rule_ok(&m->query[i], req->query))
            return 0;
    return 1;
}

static int full_match(const compiled_t *c, fg_request_t *req, const req_host_t *rh)
{
    return full_match_m(c, req, rh, 0);
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
        const bucket_t *b = fg_route_table_find(&n->children, p + pos, end - pos);
        if (b == NULL || b->child == NULL)
            break;
        n = b->child;
        lists[k++] = &n->routes;
        pos = end + 1;
    }
    const bucket_t *bh =
        fg_route_table_find(&rt->by_host, rh->name.base ? rh->name.base : "", rh->name.len);
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

/* Append the methods of m missing from the list to buf (", "-separated), within cap. */
static size_t add_methods(char *buf, size_t len, size_t cap, const fg_route_match_t *m)
{
    for (size_t i = 0; i < m->nmethods; i++) {
        size_t ml = strlen(m->methods[i]);
        int seen = 0;
        for (const char *p = buf; p < buf + len && !seen; p += strcspn(p, ",") + 2)
            seen = strncmp(p, m->methods[i], ml) == 0 && (p[ml] == ',' || p + ml == buf + len);
        if (seen || len + ml + 2 >= cap)
            continue;
        if (len) {
            memcpy(buf + len, ", ", 2);
            len += 2;
        }
        memcpy(buf + len, m->methods[i], ml);
        len += ml;
    }
    buf[len] = '\0';
    return len;
}

size_t fg_router_allowed(const fg_server_t *srv, fg_request_t *req, char *buf, size_t cap)
{
    const router_t *rt = srv->router;
    size_t len = 0;
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    if (rt == NULL)
        return 0;
    req_host_t rh = request_host(req);
    const list_t *lists[MAX_DEPTH + 2];
    size_t k = candidates(rt, req, &rh, lists);
    /* Only the candidates of the request's path are looked at, as for a match. */
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < lists[i]->n; j++) {
            const compiled_t *c = lists[i]->v[j].c;
            if (full_match_m(c, req, &rh, 1))
                len = add_methods(buf, len, cap, &c->route->match);
        }
    req->ncaptures = 0;
    return len;
}
