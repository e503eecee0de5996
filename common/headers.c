/* Header field lists backed by a pool (see common/headers.h). */
#include "common/headers.h"

#include <string.h>

#define DEFAULT_CAP 16

void fg_headers_init(fg_headers_t *h, fg_pool_t *pool, size_t cap_hint)
{
    h->v = NULL;
    h->n = 0;
    h->cap = cap_hint;
    h->pool = pool;
}

/* Make room for one more field. The array lives in the pool, so growing abandons the old copy
 * there; doubling keeps that waste below the final size. Returns 0 or -1. */
static int grow(fg_headers_t *h)
{
    if (h->v != NULL && h->n < h->cap)
        return 0;
    size_t cap = h->cap;
    if (h->v != NULL)
        cap *= 2;
    if (cap == 0)
        cap = DEFAULT_CAP;
    fg_http_header_t *v = fg_pool_alloc(h->pool, cap * sizeof(*v));
    if (v == NULL)
        return -1;
    if (h->n)
        memcpy(v, h->v, h->n * sizeof(*v));
    h->v = v;
    h->cap = cap;
    return 0;
}

int fg_headers_add_grow(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    if (grow(h) != 0)
        return -1;
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
    return 0;
}

/* Remove every field named `name` at index >= from; keeps the order of the others. */
static size_t remove_from(fg_headers_t *h, fg_str_t name, size_t from)
{
    /* Usually the name is absent: nothing moves until the first match. */
    while (from < h->n && !fg_str_ieq(h->v[from].name, name))
        from++;
    if (from == h->n)
        return 0;
    size_t w = from;
    for (size_t r = from; r < h->n; r++) {
        if (fg_str_ieq(h->v[r].name, name))
            continue;
        h->v[w++] = h->v[r];
    }
    size_t removed = h->n - w;
    h->n = w;
    return removed;
}

int fg_headers_set(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    for (size_t i = 0; i < h->n; i++) {
        if (fg_str_ieq(h->v[i].name, name)) {
            /* Keep the first field's position; later duplicates go. */
            h->v[i].value = value;
            remove_from(h, name, i + 1);
            return 0;
        }
    }
    return fg_headers_add(h, name, value);
}

int fg_headers_append(fg_headers_t *h, fg_str_t name, fg_str_t value)
{
    fg_http_header_t *last = NULL;
    for (size_t i = 0; i < h->n; i++)
        if (fg_str_ieq(h->v[i].name, name))
            last = &h->v[i];
    if (last == NULL)
        return fg_headers_add(h, name, value);
    if (last->value.len == 0) {
        last->value = value;
        return 0;
    }
    /* RFC 9110 5.3: a list-valued field may be combined with ", ". */
    size_t len = last->value.len + 2 + value.len;
    char *buf = fg_pool_alloc(h->pool, len + 1);
    if (buf == NULL)
        return -1;
    memcpy(buf, last->value.base, last->value.len);
    memcpy(buf + last->value.len, ", ", 2);
    if (value.len)
        memcpy(buf + last->value.len + 2, value.base, value.len);
    buf[len] = '\0';
    last->value = (fg_str_t){buf, len};
    return 0;
}

size_t fg_headers_remove(fg_headers_t *h, fg_str_t name)
{
    return remove_from(h, name, 0);
}

const fg_http_header_t *fg_headers_get(const fg_headers_t *h, fg_str_t name)
{
    for (size_t i = 0; i < h->n; i++)
        if (fg_str_ieq(h->v[i].name, name))
            return &h->v[i];
    return NULL;
}

/* The names fg_headers_class knows. RFC 9110 7.6.1 names Connection, Proxy-Connection,
 * Keep-Alive, TE, Transfer-Encoding and Upgrade as hop-by-hop; Trailer (RFC 9110 6.6.2) and the
 * Proxy-Authenticate/-Authorization pair (RFC 9110 11.7) only concern the next hop as well.
 * Framing fields are those that frame the message or manage the connection. */
enum {
    K_TE,
    K_HOST,
    K_TRAILER,
    K_UPGRADE,
    K_CONNECTION,
    K_KEEP_ALIVE,
    K_REQUEST_ID,
    K_CONTENT_LENGTH,
    K_PROXY_CONNECTION,
    K_TRANSFER_ENCODING,
    K_PROXY_AUTHENTICATE,
    K_PROXY_AUTHORIZATION,
    K_ALPN,
    K_CLOSE,
    K_ALT_SVC,
    K_PROXY_FEATURES,
    K_HTTP2_SETTINGS,
    K_SECURITY_SCHEME,
    K_PROXY_INSTRUCTION,
    K_PROXY_AUTHENTICATION_INFO,
    K_UPGRADE_INSECURE_REQUESTS,
};

#define HOP_FRAMING (FG_HDR_HOP | FG_HDR_FRAMING)

/* Lower case, and letters and '-' only, for fg_str_ieq_lower. */
static const struct {
    const char *lower;
    unsigned cls;
} known[] = {
    [K_TE] = {"te", HOP_FRAMING},
    [K_HOST] = {"host", FG_HDR_HOST},
    [K_TRAILER] = {"trailer", HOP_FRAMING},
    [K_UPGRADE] = {"upgrade", HOP_FRAMING | FG_HDR_UPGRADE},
    [K_CONNECTION] = {"connection", HOP_FRAMING | FG_HDR_CONNECTION},
    [K_KEEP_ALIVE] = {"keep-alive", HOP_FRAMING},
    [K_REQUEST_ID] = {"x-request-id", FG_HDR_REQUEST_ID},
    [K_CONTENT_LENGTH] = {"content-length", FG_HDR_FRAMING | FG_HDR_CONTENT_LENGTH},
    [K_PROXY_CONNECTION] = {"proxy-connection", HOP_FRAMING},
    [K_TRANSFER_ENCODING] = {"transfer-encoding", HOP_FRAMING},
    [K_PROXY_AUTHENTICATE] = {"proxy-authenticate", FG_HDR_HOP},
    [K_PROXY_AUTHORIZATION] = {"proxy-authorization", FG_HDR_HOP},
    /* fields that only describe the connection they arrived on, which YARP never forwards in
     * either direction (RequestUtilities): RFC 7301 ALPN, RFC 7838 Alt-Svc, RFC 7540 3.2.1
     * HTTP2-Settings, Proxy-Authentication-Info (RFC 9110 11.7.4) and a few registered
     * connection-scoped names */
    [K_ALPN] = {"alpn", FG_HDR_HOP},
    [K_CLOSE] = {"close", FG_HDR_HOP},
    [K_ALT_SVC] = {"alt-svc", FG_HDR_HOP},
    [K_PROXY_FEATURES] = {"proxy-features", FG_HDR_HOP},
    [K_HTTP2_SETTINGS] = {"http2-settings", FG_HDR_HOP},
    [K_SECURITY_SCHEME] = {"security-scheme", FG_HDR_HOP},
    [K_PROXY_INSTRUCTION] = {"proxy-instruction", FG_HDR_HOP},
    [K_PROXY_AUTHENTICATION_INFO] = {"proxy-authentication-info", FG_HDR_HOP},
    [K_UPGRADE_INSECURE_REQUESTS] = {"upgrade-insecure-requests", FG_HDR_HOP},
};

unsigned fg_headers_class(fg_str_t name)
{
    /* The length, and for the lengths that names share the first letter, leave one candidate:
     * a perfect hash of the table above. */
    int k;
    switch (name.len) {
    case 2:
        k = K_TE;
        break;
    case 4:
        k = (name.base[0] | 0x20) == 'h' ? K_HOST : K_ALPN;
        break;
    case 5:
        k = K_CLOSE;
        break;
    case 7: {
        int c = name.base[0] | 0x20;
        k = c == 't' ? K_TRAILER : c == 'u' ? K_UPGRADE : K_ALT_SVC;
        break;
    }
    case 10:
        k = (name.base[0] | 0x20) == 'c' ? K_CONNECTION : K_KEEP_ALIVE;
        break;
    case 12:
        k = K_REQUEST_ID;
        break;
    case 14: {
        int c = name.base[0] | 0x20;
        k = c == 'c' ? K_CONTENT_LENGTH : c == 'p' ? K_PROXY_FEATURES : K_HTTP2_SETTINGS;
        break;
    }
    case 15:
        k = K_SECURITY_SCHEME;
        break;
    case 16:
        k = K_PROXY_CONNECTION;
        break;
    case 17:
        k = (name.base[0] | 0x20) == 't' ? K_TRANSFER_ENCODING : K_PROXY_INSTRUCTION;
        break;
    case 18:
        k = K_PROXY_AUTHENTICATE;
        break;
    case 19:
        k = K_PROXY_AUTHORIZATION;
        break;
    case 25:
        k = (name.base[0] | 0x20) == 'p' ? K_PROXY_AUTHENTICATION_INFO
                                         : K_UPGRADE_INSECURE_REQUESTS;
        break;
    default:
        return 0;
    }
    return fg_str_ieq_lower(name.base, known[k].lower, name.len) ? known[k].cls : 0;
}

int fg_headers_is_hop_by_hop(fg_str_t name)
{
    return (fg_headers_class(name) & FG_HDR_HOP) != 0;
}

int fg_headers_is_framing(fg_str_t name)
{
    return (fg_headers_class(name) & FG_HDR_FRAMING) != 0;
}

int fg_headers_trailer_allowed(fg_str_t name)
{
    static const fg_str_t banned[] = {
        FG_STR_LIT("Content-Length"),
        FG_STR_LIT("Transfer-Encoding"),
        FG_STR_LIT("Trailer"),
        FG_STR_LIT("TE"),
        FG_STR_LIT("Connection"),
        FG_STR_LIT("Keep-Alive"),
        FG_STR_LIT("Proxy-Connection"),
        FG_STR_LIT("Upgrade"),
        FG_STR_LIT("Host"),
        FG_STR_LIT("Authorization"),
        FG_STR_LIT("Proxy-Authorization"),
        FG_STR_LIT("WWW-Authenticate"),
        FG_STR_LIT("Proxy-Authenticate"),
        FG_STR_LIT("Cookie"),
        FG_STR_LIT("Set-Cookie"),
        FG_STR_LIT("Cache-Control"),
        FG_STR_LIT("Expect"),
        FG_STR_LIT("Max-Forwards"),
        FG_STR_LIT("Pragma"),
        FG_STR_LIT("Range"),
        FG_STR_LIT("If-Match"),
        FG_STR_LIT("If-None-Match"),
        FG_STR_LIT("If-Modified-Since"),
        FG_STR_LIT("If-Unmodified-Since"),
        FG_STR_LIT("If-Range"),
        FG_STR_LIT("Age"),
        FG_STR_LIT("Date"),
        FG_STR_LIT("Expires"),
        FG_STR_LIT("Location"),
        FG_STR_LIT("Retry-After"),
        FG_STR_LIT("Vary"),
        FG_STR_LIT("Content-Type"),
        FG_STR_LIT("Content-Encoding"),
        FG_STR_LIT("Content-Range"),
    };
    if (name.len == 0 || name.base[0] == ':')
        return 0;
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
        if (fg_str_ieq(name, banned[i]))
            return 0;
    return 1;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The next non-empty element of a Connection value from *i on, OWS trimmed. RFC 9110 7.6.1:
 * Connection = #connection-option; list elements are separated by commas with optional
 * whitespace, and empty elements are allowed (RFC 9110 5.6.1). Returns 0 at the end. */
static int next_option(fg_str_t value, size_t *i, fg_str_t *opt)
{
    while (*i < value.len) {
        while (*i < value.len && (is_ows(value.base[*i]) || value.base[*i] == ','))
            (*i)++;
        size_t start = *i;
        while (*i < value.len && value.base[*i] != ',')
            (*i)++;
        size_t end = *i;
        while (end > start && is_ows(value.base[end - 1]))
            end--;
        if (end > start) {
            *opt = (fg_str_t){value.base + start, end - start};
            return 1;
        }
    }
    return 0;
}

int fg_headers_connection_lists(fg_str_t value, fg_str_t name)
{
    size_t i = 0;
    fg_str_t opt;
    while (next_option(value, &i, &opt))
        if (fg_str_ieq(opt, name))
            return 1;
    return 0;
}

/* Connection is the one name of class FG_HDR_CONNECTION: this runs for every field of every
 * message, where the whole classification costs a few times more. */
static int is_connection(fg_str_t name)
{
    return name.len == 10 && fg_str_ieq_lower(name.base, "connection", 10);
}

void fg_headers_conn_options(fg_conn_options_t *o, const fg_http_header_t *v, size_t n)
{
    o->n = 0;
    o->v = NULL;
    o->nv = 0;
    for (size_t f = 0; f < n; f++) {
        if (!is_connection(v[f].name))
            continue;
        size_t i = 0;
        fg_str_t opt;
        while (next_option(v[f].value, &i, &opt)) {
            if (o->n == FG_HEADERS_OPTIONS_MAX) {
                o->v = v; /* too many to keep: fg_headers_conn_listed reads the values */
                o->nv = n;
                return;
            }
            o->opt[o->n++] = opt;
        }
    }
}

int fg_headers_conn_listed(const fg_conn_options_t *o, fg_str_t name)
{
    if (o->v != NULL) {
        for (size_t f = 0; f < o->nv; f++)
            if (is_connection(o->v[f].name) && fg_headers_connection_lists(o->v[f].value, name))
                return 1;
        return 0;
    }
    for (size_t i = 0; i < o->n; i++)
        if (fg_str_ieq(o->opt[i], name))
            return 1;
    return 0;
}
