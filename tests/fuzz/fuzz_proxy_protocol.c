/* libFuzzer target: the PROXY protocol header parser and writer (common/proxy_protocol.c) on
 * any bytes, as the first bytes of a connection to a server with "proxyProtocol". A result is
 * -1 with a reason, 0 (never once FG_PROXY_PROTOCOL_MAX bytes are there), or a length no
 * longer than the input and FG_PROXY_PROTOCOL_MAX; a header parses the same from exactly its own
 * bytes, every shorter prefix asks for more, a client it names is IPv4 or IPv6, and writing it
 * again (version 1 and 2) parses back to the same addresses. The input's first 37 bytes, taken as
 * an address pair of any families, also go through the writer and back. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/iprange.h"
#include "common/proxy_protocol.h"

/* Parse a copy of exactly len bytes, so that a read past them is one past the allocation. */
static int parse_exact(const uint8_t *data, size_t len, fg_proxy_protocol_t *h)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    const char *why = NULL;
    if (copy == NULL)
        abort();
    memcpy(copy, data, len);
    int n = fg_proxy_protocol_parse(copy, len, h, &why);
    free(copy);
    if (n < -1 || (n == -1 && why == NULL))
        abort();
    return n;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Both addresses and ports the same, an IPv4-mapped address being its IPv4 one. */
static int same_pair(const struct sockaddr_storage *s1, const struct sockaddr_storage *d1,
                     const struct sockaddr_storage *s2, const struct sockaddr_storage *d2)
{
    fg_ip_t a, b, c, d;
    if (fg_ip_from_sockaddr((const struct sockaddr *)s1, &a) != 0 ||
        fg_ip_from_sockaddr((const struct sockaddr *)d1, &b) != 0 ||
        fg_ip_from_sockaddr((const struct sockaddr *)s2, &c) != 0 ||
        fg_ip_from_sockaddr((const struct sockaddr *)d2, &d) != 0)
        return 0;
    return fg_ip_cmp(&a, &c) == 0 && fg_ip_cmp(&b, &d) == 0 && port_of(s1) == port_of(s2) &&
           port_of(d1) == port_of(d2);
}

static void check_client(const fg_proxy_protocol_t *h)
{
    if (h->src.ss_family != h->dst.ss_family)
        abort();
    if (h->src.ss_family == AF_INET    ? h->len != sizeof(struct sockaddr_in)
        : h->src.ss_family == AF_INET6 ? h->len != sizeof(struct sockaddr_in6)
                                       : 1)
        abort();
}

/* Write src/dst in both versions; each parses back, whole, to the same pair. */
static void check_rewrite(const struct sockaddr_storage *src, const struct sockaddr_storage *dst)
{
    uint8_t out[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    for (int v = 1; v <= 2; v++) {
        int n = fg_proxy_protocol_write(v, src, dst, out, sizeof(out));
        if (n <= 0 || (v == 1 && n > FG_PROXY_PROTOCOL_V1_MAX) || (v == 2 && n > 52))
            abort();
        if (parse_exact(out, (size_t)n, &h) != n || h.version != v || h.local)
            abort();
        check_client(&h);
        if (!same_pair(src, dst, &h.src, &h.dst))
            abort();
    }
}

static void set_pair_from(const uint8_t *d, struct sockaddr_storage *ss, int v6, size_t at)
{
    memset(ss, 0, sizeof(*ss));
    uint16_t port = (uint16_t)(d[at + 16] << 8 | d[at + 17]);
    if (v6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        memcpy(&in6->sin6_addr, d + at, 16);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, d + at, 4);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fg_proxy_protocol_t h, again;
    int n = parse_exact(data, size, &h);
    size_t lim = size < FG_PROXY_PROTOCOL_MAX ? size : FG_PROXY_PROTOCOL_MAX;
    /* worker/core/proxy_header.c buffers FG_PROXY_PROTOCOL_MAX bytes: by then it is decided */
    if (n == 0 && size >= FG_PROXY_PROTOCOL_MAX)
        abort();
    if (n > 0) {
        if ((size_t)n > lim || (h.version != 1 && h.version != 2) ||
            (h.version == 1 && n > FG_PROXY_PROTOCOL_V1_MAX))
            abort();
        if (parse_exact(data, (size_t)n, &again) != n || again.version != h.version ||
            again.local != h.local || again.len != h.len ||
            memcmp(&again.src, &h.src, sizeof(h.src)) != 0 ||
            memcmp(&again.dst, &h.dst, sizeof(h.dst)) != 0)
            abort();
        for (size_t i = 0; i < (size_t)n; i++) {
            if (parse_exact(data, i, &again) != 0)
                abort();
        }
        if (!h.local) {
            check_client(&h);
            check_rewrite(&h.src, &h.dst);
        }
    }
    if (size >= 37) {
        struct sockaddr_storage s, d;
        set_pair_from(data, &s, data[36] & 1, 0);
        set_pair_from(data, &d, data[36] & 2, 18);
        check_rewrite(&s, &d);
    }
    return 0;
}
