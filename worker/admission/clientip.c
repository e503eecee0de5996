#include "worker/admission/clientip.h"

#include <string.h>

static int trusted_peer(const fg_iprange_set_t *t, const fg_ip_t *ip)
{
    return t != NULL && t->n > 0 && fg_iprange_set_contains(t, ip);
}

/* One hop: optional blanks around, "[v6]" brackets and an IPv4 ":port" tolerated. */
static int parse_hop(const char *s, size_t n, fg_ip_t *out)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= 2 && s[0] == '[') {
        const char *end = memchr(s, ']', n);
        if (end == NULL)
            return -1;
        return fg_ip_parse(s + 1, (size_t)(end - s - 1), out);
    }
    const char *colon = memchr(s, ':', n);
    if (colon && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) == NULL)
        n = (size_t)(colon - s); /* "1.2.3.4:5678" */
    return fg_ip_parse(s, n, out);
}

/* Walk every X-Forwarded-For field value right to left (later fields are nearer to us,
 * RFC 9110 5.3 lets them be combined in order). Returns 1 when *client was set. */
static int walk_xff(const fg_request_t *req, const fg_iprange_set_t *t, fg_ip_t *client)
{
    static const fg_str_t name = FG_STR_LIT("X-Forwarded-For");
    for (size_t i = req->nheaders; i-- > 0;) {
        if (!fg_str_ieq(req->headers[i].name, name))
            continue;
        const char *v = req->headers[i].value.base;
        size_t end = req->headers[i].value.len;
        while (end > 0) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            if (end > start) {
                fg_ip_t hop;
                if (parse_hop(v + start, end - start, &hop) < 0)
                    return 1; /* keep the last good one */
                *client = hop;
                if (!trusted_peer(t, &hop))
                    return 1;
            }
            end = start ? start - 1 : 0;
        }
    }
    return 1;
}

int fg_clientip_resolve(const fg_request_t *req, int source, const fg_iprange_set_t *trusted,
                        fg_ip_t *out)
{
    fg_ip_t peer;
    if (fg_ip_from_sockaddr((const struct sockaddr *)&req->client_addr, &peer) < 0)
        return -1;
    *out = peer;
    if (source == FG_CIP_SOCKET || !trusted_peer(trusted, &peer))
        return 0;
    if (source == FG_CIP_XFF) {
        walk_xff(req, trusted, out);
        return 0;
    }
    fg_str_t name =
        source == FG_CIP_REAL_IP ? FG_STR_LIT("X-Real-IP") : FG_STR_LIT("CF-Connecting-IP");
    const fg_http_header_t *h = fg_request_header(req, name);
    fg_ip_t ip;
    if (h && parse_hop(h->value.base, h->value.len, &ip) == 0)
        *out = ip;
    return 0;
}

void fg_clientip_apply(fg_request_t *req, const fg_ip_t *ip)
{
    fg_ip_t peer;
    if (fg_ip_from_sockaddr((const struct sockaddr *)&req->client_addr, &peer) < 0 ||
        fg_ip_cmp(&peer, ip) == 0)
        return;
    memcpy(req->peer_ip, req->client_ip, sizeof(req->peer_ip));
    fg_ip_format(ip, req->client_ip, sizeof(req->client_ip));
}
