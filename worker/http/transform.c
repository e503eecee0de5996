/* Request and response transforms (see worker/http/transform.h). Everything is allocated from
 * req->pool; slices of the client's request and of the frozen config are shared, not copied. */
#include "worker/http/transform.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/tls_clientauth.h"
#include "common/tunnel_proto.h"

/* Per-call state of fg_transform_request. */
typedef struct {
    const fg_request_t *req;
    fg_pool_t *pool;
    fg_outreq_t *out;
    int copy;          /* RequestHeadersCopy */
    int original_host; /* RequestHeaderOriginalHost */
    fg_str_t removed;  /* what PathRemovePrefix took off, for X-Forwarded-Prefix */
    int h2;            /* the destination speaks HTTP/2 */
    int allow_list;    /* RequestHeadersAllowed: copy only the fields it names */
} tx_t;

static int query_route_value(tx_t *tx, const fg_transform_t *t);
static int header_route_value(tx_t *tx, const fg_transform_t *t);

/* ---- small string helpers ---- */

static fg_str_t concat3(fg_pool_t *pool, fg_str_t a, fg_str_t b, fg_str_t c)
{
    size_t len = a.len + b.len + c.len;
    char *buf = fg_pool_alloc(pool, len + 1);
    if (buf == NULL)
        return FG_STR_NULL;
    char *w = buf;
    if (a.len)
        memcpy(w, a.base, a.len);
    w += a.len;
    if (b.len)
        memcpy(w, b.base, b.len);
    w += b.len;
    if (c.len)
        memcpy(w, c.base, c.len);
    buf[len] = '\0';
    return (fg_str_t){buf, len};
}

static fg_str_t concat(fg_pool_t *pool, fg_str_t a, fg_str_t b)
{
    return concat3(pool, a, b, FG_STR_LIT(""));
}

static int is_unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Percent-encode everything but unreserved characters (RFC 3986 2.1, 2.3), so that a value
 * never introduces '&', '=', '#' or spaces into the query. */
static fg_str_t encode(fg_pool_t *pool, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = s ? strlen(s) : 0;
    char *buf = fg_pool_alloc(pool, n * 3 + 1);
    if (buf == NULL)
        return FG_STR_NULL;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            buf[w++] = (char)c;
        } else {
            buf[w++] = '%';
            buf[w++] = hex[c >> 4];
            buf[w++] = hex[c & 15];
        }
    }
    buf[w] = '\0';
    return (fg_str_t){buf, w};
}

/* All fields of that name joined with ", " (RFC 9110 5.3), or an empty slice. */
static fg_str_t joined(fg_pool_t *pool, const fg_http_header_t *v, size_t n, fg_str_t name)
{
    fg_str_t acc = FG_STR_LIT("");
    for (size_t i = 0; i < n; i++) {
        if (!fg_str_ieq(v[i].name, name) || v[i].value.len == 0)
            continue;
        acc = acc.len ? concat3(pool, acc, FG_STR_LIT(", "), v[i].value) : v[i].value;
        if (acc.base == NULL)
            return acc;
    }
    return acc;
}

/* ---- path ---- */

static int path_remove_prefix(tx_t *tx, const char *value)
{
    fg_str_t pre = fg_str(value);
    while (pre.len > 1 && pre.base[pre.len - 1] == '/')
        pre.len--;
    fg_str_t path = tx->out->path;
    if (pre.len <= 1 || path.len < pre.len || strncasecmp(path.base, pre.base, pre.len) != 0)
        return 0;
    /* Only on a segment boundary: "/api" takes "/api/x" and "/api", never "/apix". */
    if (path.len > pre.len && path.base[pre.len] != '/')
        return 0;
    fg_str_t taken = {path.base, pre.len};
    tx->removed = tx->removed.len ? concat(tx->pool, tx->removed, taken) : taken;
    if (path.len == pre.len)
        tx->out->path = FG_STR_LIT("/");
    else
        tx->out->path = (fg_str_t){path.base + pre.len, path.len - pre.len};
    return tx->removed.base ? 0 : -1;
}

static fg_str_t capture(const fg_request_t *req, fg_str_t name)
{
    for (size_t i = 0; i < req->ncaptures; i++)
        if (fg_str_ieq(req->captures[i].name, name))
            return req->captures[i].value;
    return FG_STR_LIT("");
}

/* Find the next "{...}" in tpl from *i; returns its parameter name (without '*' and '?') and
 * leaves *i after it, or an empty slice with *i at the end. *lit gets the text before it,
 * *stars the number of leading '*' (1: a catch-all whose slashes are encoded, 2: kept). */
static fg_str_t next_param(fg_str_t tpl, size_t *i, fg_str_t *lit, int *stars)
{
    *stars = 0;
    size_t start = *i;
    const char *open = memchr(tpl.base + start, '{', tpl.len - start);
    const char *close = open ? memchr(open, '}', tpl.len - (size_t)(open - tpl.base)) : NULL;
    if (close == NULL) {
        *lit = (fg_str_t){tpl.base + start, tpl.len - start};
        *i = tpl.len;
        return FG_STR_LIT("");
    }
    *lit = (fg_str_t){tpl.base + start, (size_t)(open - tpl.base) - start};
    *i = (size_t)(close - tpl.base) + 1;
    fg_str_t name = {open + 1, (size_t)(close - open - 1)};
    while (name.len && name.base[0] == '*') {
        name.base++;
        name.len--;
        (*stars)++;
    }
    if (name.len && name.base[name.len - 1] == '?')
        name.len--;
    return name;
}

/* Copy a captured value into w; a "{*name}" value has its '/' written as "%2F" (ASP.NET's
 * template binder encodes slashes for one star, not for two). Returns the bytes written. */
static size_t put_value(char *w, fg_str_t val, int stars)
{
    if (stars != 1) {
        if (val.len)
            memcpy(w, val.base, val.len);
        return val.len;
    }
    size_t n = 0;
    for (size_t k = 0; k < val.len; k++) {
        if (val.base[k] == '/') {
            memcpy(w + n, "%2F", 3);
            n += 3;
        } else {
            w[n++] = val.base[k];
        }
    }
    return n;
}

/* PathPattern: fill "/new/{id}/{**rest}" from the route's captures. Captured values are slices
 * of the normalised path, hence already encoded. An empty value ending the pattern takes the
 * '/' before it along ("/new/{**rest}" gives "/new", as ASP.NET's binder does). */
static int path_pattern(tx_t *tx, const char *pattern)
{
    fg_str_t tpl = fg_str(pattern), lit, name;
    size_t len = 0, i = 0;
    int stars;
    while (i < tpl.len) {
        name = next_param(tpl, &i, &lit, &stars);
        len += lit.len + 3 * capture(tx->req, name).len;
    }
    char *buf = fg_pool_alloc(tx->pool, len + 1);
    if (buf == NULL)
        return -1;
    size_t w = 0;
    i = 0;
    while (i < tpl.len) {
        name = next_param(tpl, &i, &lit, &stars);
        fg_str_t val = capture(tx->req, name);
        if (lit.len)
            memcpy(buf + w, lit.base, lit.len);
        w += lit.len;
        w += put_value(buf + w, val, stars);
        if (name.len && val.len == 0 && i == tpl.len && w > 1 && buf[w - 1] == '/')
            w--;
    }
    buf[w] = '\0';
    tx->out->path = w ? (fg_str_t){buf, w} : FG_STR_LIT("/");
    return 0;
}

/* ---- query ---- */

static int unhex(char c)
{
    return isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10;
}

/* Whether the percent-decoded raw parameter name equals name, ignoring case like the
 * router does. */
static int qname_eq(fg_str_t raw, const char *name)
{
    size_t i = 0;
    for (; *name; name++) {
        if (i >= raw.len)
            return 0;
        int ch = (unsigned char)raw.base[i++];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%' && raw.len - i >= 2 && isxdigit((unsigned char)raw.base[i]) &&
                   isxdigit((unsigned char)raw.base[i + 1])) {
            ch = unhex(raw.base[i]) << 4 | unhex(raw.base[i + 1]);
            i += 2;
        }
        if (tolower(ch) != tolower((unsigned char)*name))
            return 0;
    }
    return i == raw.len;
}

/* Rebuild the query without parameters named `name`; when `repl` is not empty, the first of
 * them is replaced by it in place (QueryValueParameter Set), else they are dropped.
 * *found tells whether any was there. */
static fg_str_t query_filter(fg_pool_t *pool, fg_str_t q, const char *name, fg_str_t repl,
                             int *found)
{
    char *buf = fg_pool_alloc(pool, q.len + repl.len + 1);
    if (buf == NULL)
        return FG_STR_NULL;
    size_t w = 0, i = 0;
    *found = 0;
    while (i < q.len) {
        const char *amp = memchr(q.base + i, '&', q.len - i);
        size_t end = amp ? (size_t)(amp - q.base) : q.len;
        fg_str_t pair = {q.base + i, end - i};
        i = end + 1;
        if (pair.len == 0)
            continue;
        const char *eq = memchr(pair.base, '=', pair.len);
        fg_str_t pname = {pair.base, eq ? (size_t)(eq - pair.base) : pair.len};
        if (qname_eq(pname, name)) {
            if (*found || repl.len == 0) {
                *found = 1;
                continue;
            }
            *found = 1;
            pair = repl;
        }
        if (w)
            buf[w++] = '&';
        memcpy(buf + w, pair.base, pair.len);
        w += pair.len;
    }
    buf[w] = '\0';
    return (fg_str_t){buf, w};
}

static int query_value(tx_t *tx, const fg_transform_t *t)
{
    fg_str_t name = encode(tx->pool, t->name), value = encode(tx->pool, t->value);
    if (name.base == NULL || value.base == NULL)
        return -1;
    fg_str_t pair = concat3(tx->pool, name, FG_STR_LIT("="), value);
    if (pair.base == NULL)
        return -1;
    int found = 0;
    fg_str_t q = tx->out->query;
    if (t->action == FG_TX_SET) {
        q = query_filter(tx->pool, q, t->name ? t->name : "", pair, &found);
        if (q.base == NULL)
            return -1;
    }
    if (!found)
        q = q.len ? concat3(tx->pool, q, FG_STR_LIT("&"), pair) : pair;
    tx->out->query = q;
    return q.base ? 0 : -1;
}

static int query_remove(tx_t *tx, const char *name)
{
    int found;
    fg_str_t q = query_filter(tx->pool, tx->out->query, name ? name : "", FG_STR_LIT(""), &found);
    if (q.base == NULL)
        return -1;
    tx->out->query = q;
    return 0;
}

/* ---- headers ---- */

/* Whether a client field must not be forwarded: hop-by-hop fields and those the client's
 * Connection header names (RFC 9110 7.6.1); Host and X-Request-Id, which are set later. */
static int dropped(const fg_conn_options_t *co, fg_str_t name)
{
    return (fg_headers_class(name) & (FG_HDR_HOP | FG_HDR_HOST | FG_HDR_REQUEST_ID)) ||
           fg_headers_conn_listed(co, name);
}

/* Whether name is in the normalised "A;B" list of an allow-list transform (ASCII
 * case-insensitive, as YARP's OrdinalIgnoreCase set). */
static int in_list(const char *list, fg_str_t name)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t len = strcspn(p, ";");
        if (len == name.len && strncasecmp(p, name.base, len) == 0)
            return 1;
        p += len + (p[len] == ';');
    }
    return 0;
}

/* Whether any allow-list transform of `kind` on the route names `name`. */
static int allowed(const fg_route_t *r, int kind, fg_str_t name)
{
    for (size_t i = 0; i < r->ntransforms; i++)
        if (r->transforms[i].kind == kind && in_list(r->transforms[i].value, name))
            return 1;
    return 0;
}

/* The client's fields, all of them (RequestHeadersCopy) or, with RequestHeadersAllowed, those
 * it names with a value (YARP's RequestHeadersAllowedTransform); never the fields the gateway
 * must not forward. */
static int copy_headers(tx_t *tx)
{
    const fg_request_t *req = tx->req;
    fg_conn_options_t co;
    fg_headers_conn_options(&co, req->headers, req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const fg_http_header_t *h = &req->headers[i];
        if (tx->allow_list &&
            (h->value.len == 0 || !allowed(req->route, FG_TX_REQ_HEADERS_ALLOWED, h->name)))
            continue;
        /* "TE: trailers" says the client takes trailer fields (RFC 9110 10.1.4), which the
         * gateway relays; an HTTP/2 destination gets it as the one TE value HTTP/2 allows
         * (RFC 9113 8.2.2), which gRPC servers require. */
        int te_trailers =
            tx->h2 && fg_str_ieq_c(h->name, "TE") && fg_str_ieq_c(h->value, "trailers");
        if ((te_trailers || !dropped(&co, h->name)) &&
            fg_headers_add(&tx->out->headers, h->name, h->value) != 0)
            return -1;
    }
    return 0;
}

/* Whether the outgoing list may hold a field x_forwarded removes under the default names
 * (X-Forwarded-For, -Proto, -Host, -Prefix, Forwarded): one look at each name's length and
 * first letter, so that a request without them costs no removal pass per field. */
static int may_hold_forwarded(const fg_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        fg_str_t n = h->v[i].name;
        int c = n.len ? n.base[0] | 0x20 : 0;
        if ((n.len == 9 && c == 'f') || ((n.len == 15 || n.len == 17 || n.len == 18) && c == 'x'))
            return 1;
    }
    return 0;
}

/* One X-Forwarded-* field. Set replaces whatever the client sent (a spoofed value must not
 * reach the destination); Append extends it; Remove drops it; Off leaves it as it is.
 * `present` is 0 when the outgoing list is known to hold no field of this name. */
static int xf_one(tx_t *tx, const char *prefix, const char *suffix, const char *dflt, int action,
                  fg_str_t value, int present)
{
    if (action == FG_XF_OFF)
        return 0;
    fg_headers_t *h = &tx->out->headers;
    fg_str_t name = fg_str(dflt);
    if (prefix != NULL && strcmp(prefix, "X-Forwarded-") != 0)
        name = concat(tx->pool, fg_str(prefix), fg_str(suffix));
    if (name.base == NULL)
        return -1;
    fg_str_t incoming = FG_STR_LIT("");
    if (action == FG_XF_APPEND) {
        /* Without RequestHeadersCopy the client's value was not copied, but it still exists. */
        incoming = tx->copy ? joined(tx->pool, h->v, h->n, name)
                            : joined(tx->pool, tx->req->headers, tx->req->nheaders, name);
        if (incoming.base == NULL)
            return -1;
        if (incoming.len && value.len)
            value = concat3(tx->pool, incoming, FG_STR_LIT(", "), value);
        else if (incoming.len)
            value = incoming;
        if (value.base == NULL)
            return -1;
    }
    if (present)
        fg_headers_remove(h, name);
    if (action == FG_XF_REMOVE || value.len == 0)
        return 0;
    return fg_headers_add(h, name, value);
}

static int x_forwarded(tx_t *tx, const fg_transform_t *t)
{
    const fg_request_t *req = tx->req;
    const char *pre = t->xf_header_prefix;
    fg_str_t proto = req->scheme.len ? req->scheme : FG_STR_LIT("http");
    /* Set: the client, then the peer when a trusted proxy named the client (its own hops, our
     * infrastructure, are left out). Append: the incoming list plus the peer, as each proxy
     * adds the address it saw. */
    fg_str_t peer = fg_str(req->peer_ip[0] ? req->peer_ip : req->client_ip);
    fg_str_t xff = t->xf_for == FG_XF_APPEND ? peer
                   : req->peer_ip[0]
                       ? concat3(tx->pool, fg_str(req->client_ip), FG_STR_LIT(", "), peer)
                       : peer;
    if (xff.base == NULL)
        return -1;
    /* The fields set here have other names than those removed after them, so what the list
     * held before the first is what decides. */
    int present =
        (pre != NULL && strcmp(pre, "X-Forwarded-") != 0) || may_hold_forwarded(&tx->out->headers);
    if (xf_one(tx, pre, "For", "X-Forwarded-For", t->xf_for, xff, present) != 0 ||
        xf_one(tx, pre, "Proto", "X-Forwarded-Proto", t->xf_proto, proto, present) != 0 ||
        xf_one(tx, pre, "Host", "X-Forwarded-Host", t->xf_host, req->host, present) != 0 ||
        xf_one(tx, pre, "Prefix", "X-Forwarded-Prefix", t->xf_prefix, tx->removed, present) != 0)
        return -1;
    /* A client's Forwarded field is not vouched for by anyone once the gateway speaks
     * X-Forwarded (YARP's X-Forwarded transforms remove it). */
    if (present && (t->xf_for != FG_XF_OFF || t->xf_proto != FG_XF_OFF || t->xf_host != FG_XF_OFF ||
                    t->xf_prefix != FG_XF_OFF))
        fg_headers_remove(&tx->out->headers, FG_STR_LIT("Forwarded"));
    return 0;
}

/* ---- Forwarded (RFC 7239) ---- */

/* Obfuscated identifiers need to be unguessable enough to reveal nothing, not secret: a
 * per-process xorshift generator seeded from the pid and the clock. */
static uint64_t obf_random(void)
{
    static uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state =
            fg_hash_mix64((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec) |
            1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

/* "_" and six characters of obfnode / obfport (RFC 7239 6.3). */
static char *put_obf(char *p)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    uint64_t r = obf_random();
    *p++ = '_';
    for (int i = 0; i < 6; i++, r >>= 6)
        *p++ = chars[r & 63];
    return p;
}

/* A node (RFC 7239 6): nodename [":" node-port] in the chosen format. ip may be NULL
 * (unknown address). Writes at most 80 bytes and a NUL into buf. */
static void put_node(char *buf, int fmt, const char *ip, uint16_t port)
{
    char *p = buf;
    int name =
        fmt == FG_NODE_RANDOM || fmt == FG_NODE_RANDOM_AND_PORT ||
                fmt == FG_NODE_RANDOM_AND_RANDOM_PORT
            ? 0
        : fmt == FG_NODE_IP || fmt == FG_NODE_IP_AND_PORT || fmt == FG_NODE_IP_AND_RANDOM_PORT
            ? 2
            : 1; /* 0 random, 1 unknown, 2 address */
    if (name == 2 && (ip == NULL || ip[0] == '\0'))
        name = 1;
    if (name == 2 && strncmp(ip, "::ffff:", 7) == 0 && strchr(ip, '.'))
        ip += 7; /* an IPv4 client on a dual-stack socket is an IPv4 client */
    if (name == 0) {
        p = put_obf(p);
    } else if (name == 1) {
        memcpy(p, "unknown", 7);
        p += 7;
    } else {
        int v6 = strchr(ip, ':') != NULL; /* IPv6 in brackets (RFC 7239 6.1) */
        size_t n = strnlen(ip, 47);
        if (v6)
            *p++ = '[';
        memcpy(p, ip, n);
        p += n;
        if (v6)
            *p++ = ']';
    }
    if (fmt == FG_NODE_RANDOM_AND_PORT || fmt == FG_NODE_UNKNOWN_AND_PORT ||
        fmt == FG_NODE_IP_AND_PORT) {
        *p++ = ':';
        p = fg_put_u64(p, port);
    } else if (fmt == FG_NODE_RANDOM_AND_RANDOM_PORT || fmt == FG_NODE_UNKNOWN_AND_RANDOM_PORT ||
               fmt == FG_NODE_IP_AND_RANDOM_PORT) {
        *p++ = ':';
        p = put_obf(p);
    }
    *p = '\0';
}

static int is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* ";name=value", the value a token or else a quoted-string (RFC 7239 4, RFC 9110 5.6.4). */
static char *put_param(char *p, const char *name, fg_str_t v)
{
    int token = v.len > 0;
    for (size_t i = 0; i < v.len && token; i++)
        token = is_tchar((unsigned char)v.base[i]);
    size_t nl = strlen(name);
    *p++ = ';';
    memcpy(p, name, nl);
    p += nl;
    *p++ = '=';
    if (token) {
        memcpy(p, v.base, v.len);
        return p + v.len;
    }
    *p++ = '"';
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] == '"' || v.base[i] == '\\')
            *p++ = '\\';
        *p++ = v.base[i];
    }
    *p++ = '"';
    return p;
}

static int forwarded(tx_t *tx, const fg_transform_t *t)
{
    int action = t->xf_for;
    if (action == FG_XF_OFF)
        return 0;
    fg_headers_t *h = &tx->out->headers;
    /* Likewise the client's X-Forwarded-* fields once the gateway speaks Forwarded (YARP
     * removes the four of the default prefix). */
    static const fg_str_t xf[] = {FG_STR_LIT("X-Forwarded-For"), FG_STR_LIT("X-Forwarded-Proto"),
                                  FG_STR_LIT("X-Forwarded-Host"), FG_STR_LIT("X-Forwarded-Prefix")};
    if (t->fwd_for != FG_NODE_NONE || t->fwd_by != FG_NODE_NONE || t->fwd_host || t->fwd_proto)
        for (size_t i = 0; i < sizeof(xf) / sizeof(xf[0]); i++)
            fg_headers_remove(h, xf[i]);
    const fg_str_t name = FG_STR_LIT("Forwarded");
    fg_str_t incoming = FG_STR_LIT("");
    if (action == FG_XF_APPEND) {
        incoming = tx->copy ? joined(tx->pool, h->v, h->n, name)
                            : joined(tx->pool, tx->req->headers, tx->req->nheaders, name);
        if (incoming.base == NULL)
            return -1;
    }
    fg_headers_remove(h, name);
    if (action == FG_XF_REMOVE)
        return 0;
    fg_request_t *req = (fg_request_t *)tx->req;
    fg_str_t proto = req->scheme.len ? req->scheme : FG_STR_LIT("http");
    char node[96];
    /* each parameter: ";name=" and a value quoted with every byte escaped at worst */
    size_t room = 2 * (16 + 2 * sizeof(node)) + 2 * (16 + 2 * req->host.len) + 16 + 2 * proto.len;
    char *buf = fg_pool_alloc(tx->pool, room);
    if (buf == NULL)
        return -1;
    char *p = buf;
    if (t->fwd_for != FG_NODE_NONE) {
        /* the node that connected to us, with its port (docs/logging.md) */
        put_node(node, t->fwd_for, req->peer_ip[0] ? req->peer_ip : req->client_ip,
                 req->client_port);
        p = put_param(p, "for", fg_str(node));
    }
    if (t->fwd_by != FG_NODE_NONE) {
        char ip[64];
        uint16_t port = 0;
        int known = req->ops && req->ops->local_addr &&
                    req->ops->local_addr(req, ip, sizeof(ip), &port) == 0;
        put_node(node, t->fwd_by, known ? ip : NULL, port);
        p = put_param(p, "by", fg_str(node));
    }
    if (t->fwd_proto)
        p = put_param(p, "proto", proto);
    if (t->fwd_host && req->host.len)
        p = put_param(p, "host", req->host);
    if (p == buf)
        return 0;                                        /* nothing to say */
    fg_str_t element = {buf + 1, (size_t)(p - buf - 1)}; /* without the first ';' */
    if (incoming.len)
        element = concat3(tx->pool, incoming, FG_STR_LIT(", "), element);
    return element.base ? fg_headers_add(h, name, element) : -1;
}

static int request_header(tx_t *tx, const fg_transform_t *t)
{
    fg_headers_t *h = &tx->out->headers;
    fg_str_t name = fg_str(t->name), value = fg_str(t->value ? t->value : "");
    if (name.len == 0)
        return 0;
    if (t->action == FG_TX_APPEND)
        return fg_headers_append(h, name, value);
    return fg_headers_set(h, name, value);
}

/* ---- request ---- */

/* Path, query and method transforms. Header transforms run afterwards, in their own order,
 * so that X-Forwarded-Prefix sees every PathRemovePrefix of the route. */
static int apply_target(tx_t *tx, const fg_transform_t *t)
{
    fg_outreq_t *out = tx->out;
    switch (t->kind) {
    case FG_TX_PATH_PREFIX:
        out->path = concat(tx->pool, fg_str(t->value), out->path);
        return out->path.base ? 0 : -1;
    case FG_TX_PATH_REMOVE_PREFIX:
        return path_remove_prefix(tx, t->value);
    case FG_TX_PATH_SET:
        out->path = t->value && t->value[0] ? fg_str(t->value) : FG_STR_LIT("/");
        return 0;
    case FG_TX_PATH_PATTERN:
        return path_pattern(tx, t->value ? t->value : "/");
    case FG_TX_QUERY_VALUE:
        return query_value(tx, t);
    case FG_TX_QUERY_REMOVE:
        return query_remove(tx, t->name);
    case FG_TX_METHOD_CHANGE:
        if (t->name && t->value && fg_str_eq(out->method, fg_str(t->name)))
            out->method = fg_str(t->value);
        return 0;
    case FG_TX_QUERY_ROUTE:
        return query_route_value(tx, t);
    default:
        return 0;
    }
}

/* Whether field names a and b give the same CGI meta-variable (RFC 3875 4.1.18: upper case,
 * "-" as "_"), as WSGI and Rack servers name fields: X_Client_Cert reads as X-Client-Cert. */
static int cgi_name_eq(fg_str_t a, fg_str_t b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++) {
        int x = a.base[i] == '_' ? '-' : tolower((unsigned char)a.base[i]);
        int y = b.base[i] == '_' ? '-' : tolower((unsigned char)b.base[i]);
        if (x != y)
            return 0;
    }
    return 1;
}

/* ClientCert (YARP's RequestHeaderClientCertTransform): the client's own field of that name
 * never passes, nor one that differs only in "_" for "-" (cgi_name_eq); a connection with a
 * verified certificate (tls.clientAuth) sends its DER in base64 (RFC 4648 4, no line
 * breaks). */
static int client_cert(tx_t *tx, const fg_transform_t *t)
{
    fg_str_t name = fg_str(t->name);
    fg_headers_t *h = &tx->out->headers;
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!cgi_name_eq(h->v[i].name, name))
            h->v[k++] = h->v[i];
    h->n = k;
    if (tx->req->ssl == NULL || fg_tls_client_cert(tx->req->ssl) == NULL)
        return 0;
    /* The connection keeps the encoding; the request its own copy, as it may outlive it. */
    const fg_tls_client_id_t *id = fg_tls_client_id(tx->req->ssl);
    fg_str_t v = id ? fg_pool_str(tx->pool, id->der64) : FG_STR_NULL;
    return v.base != NULL ? fg_headers_add(h, name, v) : -1;
}

int fg_transform_request_trailer_allowed(const fg_route_t *route, fg_str_t name)
{
    for (size_t i = 0; route != NULL && i < route->ntransforms; i++) {
        const fg_transform_t *t = &route->transforms[i];
        if (t->kind == FG_TX_CLIENT_CERT && cgi_name_eq(fg_str(t->name), name))
            return 0;
    }
    return 1;
}

static int apply_header(tx_t *tx, const fg_transform_t *t)
{
    switch (t->kind) {
    case FG_TX_REQ_HEADER:
        return request_header(tx, t);
    case FG_TX_REQ_HEADER_REMOVE:
        if (t->name)
            fg_headers_remove(&tx->out->headers, fg_str(t->name));
        return 0;
    case FG_TX_X_FORWARDED:
        return x_forwarded(tx, t);
    case FG_TX_FORWARDED:
        return forwarded(tx, t);
    case FG_TX_REQ_HEADER_ROUTE:
        return header_route_value(tx, t);
    case FG_TX_CLIENT_CERT:
        return client_cert(tx, t);
    default:
        return 0;
    }
}

/* "host[:port]" of the destination, omitting the scheme's default port (RFC 9110 7.2). */
static fg_str_t dest_authority(fg_pool_t *pool, const fg_destination_t *d)
{
    const char *host = d->host ? d->host : "";
    int v6 = strchr(host, ':') != NULL && host[0] != '[';
    int dflt = d->port == 0 || d->port == (d->https ? 443 : 80);
    size_t hl = strlen(host);
    /* Built by hand: this runs for every proxied request, and printf costs more than the rest. */
    char *s = fg_pool_alloc(pool, hl + sizeof("[]:65535"));
    if (s == NULL)
        return FG_STR_NULL;
    char *p = s;
    if (v6)
        *p++ = '[';
    memcpy(p, host, hl);
    p += hl;
    if (v6)
        *p++ = ']';
    if (!dflt) {
        *p++ = ':';
        p = fg_put_u64(p, d->port);
    }
    *p = '\0';
    return (fg_str_t){s, (size_t)(p - s)};
}

static int finish_request(tx_t *tx, const fg_destination_t *dest)
{
    fg_outreq_t *out = tx->out;
    const fg_request_t *req = tx->req;
    if (dest->base_path && dest->base_path[0]) {
        out->path = concat(tx->pool, fg_str(dest->base_path), out->path);
        if (out->path.base == NULL)
            return -1;
    }
    /* A Host set by a RequestHeader transform wins; otherwise the documented order. */
    const fg_http_header_t *set = fg_headers_get(&out->headers, FG_STR_LIT("Host"));
    fg_str_t host = set ? set->value : FG_STR_NULL;
    int placeholder = 0; /* host is the gateway's own placeholder for a tunnel destination */
    if (set == NULL) {
        /* RequestHeaderOriginalHost is the route's explicit wish: it wins over the
         * destination's host (YARP's RequestHeaderOriginalHostTransform runs after the
         * destination's Host is chosen). */
        if (tx->original_host && req->host.len)
            host = req->host;
        else if (dest->host_override && dest->host_override[0])
            host = fg_str(dest->host_override);
        else
            host = dest_authority(tx->pool, dest), placeholder = dest->tunnel;
        if (host.base == NULL || fg_headers_set(&out->headers, FG_STR_LIT("Host"), host) != 0)
            return -1;
    }
    /* The agent gives a request whose Host is the placeholder its service's own authority: a
     * Host the client chose (RequestHeaderOriginalHost, a transform's route value) must not
     * pass for it. ".invalid" names are never a real host's (RFC 6761 6.4). A request that
     * hopped from another worker carries the Host that worker chose and checked. */
    if (dest->tunnel && !placeholder && !(req->server && req->server->tunnel_hop) &&
        fg_tunnel_names_placeholder(host.base, host.len))
        return FG_TRANSFORM_RESERVED_HOST;
    if (req->request_id[0] &&
        fg_headers_set(&out->headers, FG_STR_LIT("X-Request-Id"), fg_str(req->request_id)) != 0)
        return -1;
    return 0;
}

int fg_transform_request(const fg_request_t *req, const fg_destination_t *dest, fg_outreq_t *out)
{
    tx_t tx = {.req = req,
               .pool = req->pool,
               .out = out,
               .copy = 1,
               .removed = FG_STR_LIT(""),
               .h2 = dest != NULL && dest->http_version == FG_HTTP_V2};
    const fg_route_t *route = req->route;
    const fg_transform_t *tr = route ? route->transforms : NULL;
    size_t ntr = route ? route->ntransforms : 0;
    int has_xf = 0;

    for (size_t i = 0; i < ntr; i++) {
        if (tr[i].kind == FG_TX_REQ_HEADERS_COPY)
            tx.copy = tr[i].flag != 0;
        else if (tr[i].kind == FG_TX_REQ_ORIGINAL_HOST)
            tx.original_host = tr[i].flag != 0;
        else if (tr[i].kind == FG_TX_X_FORWARDED || tr[i].kind == FG_TX_FORWARDED)
            has_xf = 1; /* as in YARP, either one replaces the default X-Forwarded set */
        else if (tr[i].kind == FG_TX_REQ_HEADERS_ALLOWED)
            tx.allow_list = 1;
    }
    /* An allow-list copies what it names whatever RequestHeadersCopy says. */
    tx.copy |= tx.allow_list;
    out->method = req->method;
    out->path = req->path.len ? req->path : FG_STR_LIT("/");
    out->query = req->query.base ? req->query : FG_STR_LIT("");
    fg_headers_init(&out->headers, req->pool, req->nheaders + 8);
    if (tx.copy && copy_headers(&tx) != 0)
        return -1;
    for (size_t i = 0; i < ntr; i++)
        if (apply_target(&tx, &tr[i]) != 0)
            return -1;
    for (size_t i = 0; i < ntr; i++)
        if (apply_header(&tx, &tr[i]) != 0)
            return -1;
    if (!has_xf) {
        /* YARP's default: X-Forwarded For, Proto, Host and Prefix, all with Set. */
        static const fg_transform_t dflt = {.kind = FG_TX_X_FORWARDED,
                                            .xf_for = FG_XF_SET,
                                            .xf_proto = FG_XF_SET,
                                            .xf_host = FG_XF_SET,
                                            .xf_prefix = FG_XF_SET};
        if (x_forwarded(&tx, &dflt) != 0)
            return -1;
    }
    return finish_request(&tx, dest);
}

/* ---- response ---- */

static int when_applies(int when, int status)
{
    switch (when) {
    case FG_WHEN_ALWAYS:
        return 1;
    case FG_WHEN_FAILURE:
        return status >= 400;
    default: /* Success */
        return status < 400;
    }
}

/* Apply the route's field transforms of kind set_kind (set, or append) and remove_kind to
 * hdrs, those whose When matches status. Returns 0, or -1 when out of memory. */
static int apply_fields(const fg_route_t *route, int set_kind, int remove_kind, int status,
                        fg_headers_t *hdrs)
{
    for (size_t i = 0; route != NULL && i < route->ntransforms; i++) {
        const fg_transform_t *t = &route->transforms[i];
        if ((t->kind != set_kind && t->kind != remove_kind) || t->name == NULL ||
            !when_applies(t->when, status))
            continue;
        fg_str_t name = fg_str(t->name), value = fg_str(t->value ? t->value : "");
        int rc = 0;
        if (t->kind == remove_kind)
            fg_headers_remove(hdrs, name);
        else if (t->action == FG_TX_APPEND)
            rc = fg_headers_append(hdrs, name, value);
        else
            rc = fg_headers_set(hdrs, name, value);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int fg_transform_response(const fg_request_t *req, int status, fg_headers_t *hdrs)
{
    return apply_fields(req->route, FG_TX_RESP_HEADER, FG_TX_RESP_HEADER_REMOVE, status, hdrs);
}

/* How the destination's fields are copied: copy and allow-list kinds for the head or the
 * trailers. */
static void copy_policy(const fg_route_t *r, int trailers, int *copy, int *allow_kind)
{
    int copy_kind = trailers ? FG_TX_RESP_TRAILERS_COPY : FG_TX_RESP_HEADERS_COPY;
    *allow_kind = trailers ? FG_TX_RESP_TRAILERS_ALLOWED : FG_TX_RESP_HEADERS_ALLOWED;
    int lists = 0;
    *copy = 1;
    for (size_t i = 0; r != NULL && i < r->ntransforms; i++) {
        if (r->transforms[i].kind == copy_kind)
            *copy = r->transforms[i].flag != 0;
        lists |= r->transforms[i].kind == *allow_kind;
    }
    if (!lists)
        *allow_kind = 0;
}

int fg_transform_copy_fields(const fg_request_t *req, int trailers, const fg_http_header_t *in,
                             size_t n, fg_headers_t *out)
{
    int copy, allow_kind;
    copy_policy(req->route, trailers, &copy, &allow_kind);
    for (size_t i = 0; i < n; i++) {
        if (allow_kind ? !allowed(req->route, allow_kind, in[i].name) : !copy)
            continue;
        if (fg_headers_add(out, in[i].name, in[i].value) != 0)
            return -1;
    }
    return 0;
}

int fg_transform_trailers(const fg_request_t *req, int status, const fg_http_header_t *in, size_t n,
                          fg_headers_t *out)
{
    if (fg_transform_copy_fields(req, 1, in, n, out) != 0)
        return -1;
    return apply_fields(req->route, FG_TX_RESP_TRAILER, FG_TX_RESP_TRAILER_REMOVE, status, out);
}

int fg_transform_adds_trailers(const fg_route_t *route)
{
    for (size_t i = 0; route != NULL && i < route->ntransforms; i++)
        if (route->transforms[i].kind == FG_TX_RESP_TRAILER)
            return 1;
    return 0;
}

/* ---- transforms from route values ---- */

/* The value of the route's capture named by t->value (YARP's route value key), decoded as
 * ASP.NET decodes route values (every escape but %2F, which would change the segments),
 * NUL-terminated in the request's pool; NULL when the route has no such capture or it is
 * empty: YARP's QueryRouteParameter and RequestHeaderRouteValue then change nothing. */
static const char *route_value(tx_t *tx, const fg_transform_t *t, int *oom)
{
    fg_str_t v = capture(tx->req, fg_str(t->value ? t->value : ""));
    *oom = 0;
    if (v.len == 0)
        return NULL;
    char *s = fg_pool_alloc(tx->pool, v.len + 1);
    if (s == NULL) {
        *oom = 1;
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < v.len; i++) {
        int esc = v.base[i] == '%' && i + 2 < v.len && isxdigit((unsigned char)v.base[i + 1]) &&
                  isxdigit((unsigned char)v.base[i + 2]);
        int c = esc ? unhex(v.base[i + 1]) << 4 | unhex(v.base[i + 2]) : 0;
        if (esc && c != '/' && c != 0) {
            s[o++] = (char)c;
            i += 2;
        } else {
            s[o++] = v.base[i];
        }
    }
    s[o] = '\0';
    return s;
}

/* QueryRouteParameter: QueryValueParameter with the capture's value (percent-encoded). */
static int query_route_value(tx_t *tx, const fg_transform_t *t)
{
    int oom;
    const char *v = route_value(tx, t, &oom);
    if (v == NULL)
        return oom ? -1 : 0;
    fg_transform_t q = *t;
    q.value = (char *)v;
    return query_value(tx, &q);
}

/* RequestHeaderRouteValue: RequestHeader with the capture's value. A value a header cannot
 * carry (a decoded control character) is not sent (RFC 9110 5.5). */
static int header_route_value(tx_t *tx, const fg_transform_t *t)
{
    int oom;
    const char *v = route_value(tx, t, &oom);
    if (v == NULL)
        return oom ? -1 : 0;
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return 0;
    fg_transform_t h = *t;
    h.value = (char *)v;
    return request_header(tx, &h);
}
