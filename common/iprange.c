#include "common/iprange.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int fg_ip_is_v4(const fg_ip_t *ip)
{
    return memcmp(ip->b, v4_prefix, 12) == 0;
}

int fg_ip_parse(const char *s, size_t len, fg_ip_t *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (memchr(buf, ':', len) == NULL) {
        memcpy(out->b, v4_prefix, 12);
        return inet_pton(AF_INET, buf, out->b + 12) == 1 ? 0 : -1;
    }
    /* A zone index ("fe80::1%eth0") names an interface, not an address: refused. */
    return inet_pton(AF_INET6, buf, out->b) == 1 ? 0 : -1;
}

int fg_ip_from_sockaddr(const struct sockaddr *sa, fg_ip_t *out)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(out->b, v4_prefix, 12);
        memcpy(out->b + 12, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

char *fg_ip_format(const fg_ip_t *ip, char *buf, size_t len)
{
    const char *r = fg_ip_is_v4(ip) ? inet_ntop(AF_INET, ip->b + 12, buf, (socklen_t)len)
                                    : inet_ntop(AF_INET6, ip->b, buf, (socklen_t)len);
    if (r == NULL && len > 0)
        buf[0] = '\0';
    return buf;
}

char *fg_ip_format_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    fg_ip_t ip;
    char text[INET6_ADDRSTRLEN];
    if (fg_ip_from_sockaddr((const struct sockaddr *)ss, &ip) != 0) {
        snprintf(buf, len, "local");
        return buf;
    }
    unsigned port = ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
                                             : ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    fg_ip_format(&ip, text, sizeof(text));
    snprintf(buf, len, fg_ip_is_v4(&ip) ? "%s:%u" : "[%s]:%u", text, port);
    return buf;
}

int fg_ip_cmp(const fg_ip_t *a, const fg_ip_t *b)
{
    return memcmp(a->b, b->b, 16);
}

void fg_ip_mask(fg_ip_t *ip, unsigned plen)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = plen > i * 8 ? plen - i * 8 : 0;
        if (bits >= 8)
            continue;
        ip->b[i] &= (uint8_t)(0xff00u >> bits);
    }
}

static void fill_host(fg_ip_t *ip, unsigned plen)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = plen > i * 8 ? plen - i * 8 : 0;
        if (bits < 8)
            ip->b[i] |= (uint8_t)(0xffu >> bits);
    }
}

static int fail(char *err, size_t errlen, const char *why, const char *s)
{
    snprintf(err, errlen, "\"%s\": %s", s, why);
    return -1;
}

int fg_iprange_parse(const char *s, fg_iprange_t *out, int *plen, char *err, size_t errlen)
{
    const char *slash = strchr(s, '/'), *dash = strchr(s, '-');

    if (slash && dash)
        return fail(err, errlen, "use either a CIDR or an a-b range, not both", s);
    if (dash) {
        if (fg_ip_parse(s, (size_t)(dash - s), &out->lo) < 0 ||
            fg_ip_parse(dash + 1, strlen(dash + 1), &out->hi) < 0)
            return fail(err, errlen, "not an address range (\"a-b\")", s);
        if (fg_ip_is_v4(&out->lo) != fg_ip_is_v4(&out->hi))
            return fail(err, errlen, "range mixes IPv4 and IPv6", s);
        if (fg_ip_cmp(&out->lo, &out->hi) > 0)
            return fail(err, errlen, "range runs backwards", s);
        *plen = -1;
        return 0;
    }
    return fg_iprange_parse_cidr(s, out, plen, err, errlen);
}

int fg_iprange_parse_cidr(const char *s, fg_iprange_t *out, int *plen, char *err, size_t errlen)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (fg_ip_parse(s, alen, &out->lo) < 0)
        return fail(err, errlen, "not an IP address", s);
    /* The notation decides how the prefix counts: "::ffff:10.0.0.0/104" is an IPv6 prefix. */
    int v4 = memchr(s, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128, n = max;
    if (slash) {
        char *end;
        const char *p = slash + 1;
        if (*p < '0' || *p > '9')
            return fail(err, errlen, "bad prefix length", s);
        unsigned long v = strtoul(p, &end, 10);
        if (*end != '\0' || v > max)
            return fail(
                err, errlen,
                v4 ? "IPv4 prefix length must be 0..32" : "IPv6 prefix length must be 0..128", s);
        n = (unsigned)v;
    }
    unsigned p128 = v4 ? 96 + n : n;
    fg_ip_mask(&out->lo, p128);
    out->hi = out->lo;
    fill_host(&out->hi, p128);
    *plen = (int)p128;
    return 0;
}

int fg_iprange_has_host_bits(const char *s)
{
    const char *slash = strchr(s, '/');
    fg_iprange_t r;
    fg_ip_t addr;
    int plen;
    char why[8];

    if (slash == NULL || fg_iprange_parse(s, &r, &plen, why, sizeof(why)) < 0 ||
        fg_ip_parse(s, (size_t)(slash - s), &addr) < 0)
        return 0;
    return fg_ip_cmp(&addr, &r.lo) != 0;
}

void fg_iprange_set_init(fg_iprange_set_t *set)
{
    memset(set, 0, sizeof(*set));
}

static const fg_ip_t mapped_lo = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}};
static const fg_ip_t mapped_hi = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

static fg_ip_t ip_step(fg_ip_t ip, int up)
{
    for (int i = 15; i >= 0; i--) {
        if (up ? ++ip.b[i] != 0 : ip.b[i]-- != 0)
            break;
    }
    return ip;
}

static int add_one(fg_iprange_set_t *set, const fg_iprange_t *r)
{
    if (set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 16;
        fg_iprange_t *nr = realloc(set->r, cap * sizeof(*nr));
        if (nr == NULL)
            return -1;
        set->r = nr;
        set->cap = cap;
    }
    set->r[set->n++] = *r;
    return 0;
}

/* IPv4 lives in the IPv4-mapped block. A range that reaches outside that block was written in
 * IPv6 notation, and IPv6 entries do not match IPv4 clients (as in nginx: "::/0" is every
 * IPv6 address, not every address), so the block is cut out of it. */
int fg_iprange_set_add(fg_iprange_set_t *set, const fg_iprange_t *r)
{
    int starts_before = fg_ip_cmp(&r->lo, &mapped_lo) < 0;
    int ends_after = fg_ip_cmp(&r->hi, &mapped_hi) > 0;
    int overlaps = fg_ip_cmp(&r->lo, &mapped_hi) <= 0 && fg_ip_cmp(&r->hi, &mapped_lo) >= 0;
    if (!overlaps || (!starts_before && !ends_after))
        return add_one(set, r);
    if (starts_before) {
        fg_iprange_t below = {r->lo, ip_step(mapped_lo, 0)};
        if (add_one(set, &below) < 0)
            return -1;
    }
    if (ends_after) {
        fg_iprange_t above = {ip_step(mapped_hi, 1), r->hi};
        if (add_one(set, &above) < 0)
            return -1;
    }
    return 0;
}

static int range_cmp(const void *a, const void *b)
{
    return fg_ip_cmp(&((const fg_iprange_t *)a)->lo, &((const fg_iprange_t *)b)->lo);
}

/* hi + 1 == lo, so that adjacent ranges merge too. */
static int adjacent(const fg_ip_t *hi, const fg_ip_t *lo)
{
    fg_ip_t next = *hi;
    for (int i = 15; i >= 0; i--)
        if (++next.b[i] != 0)
            return fg_ip_cmp(&next, lo) == 0;
    return 0; /* hi was the last address */
}

void fg_iprange_set_finish(fg_iprange_set_t *set)
{
    if (set->n < 2)
        return;
    qsort(set->r, set->n, sizeof(*set->r), range_cmp);
    size_t w = 0;
    for (size_t i = 1; i < set->n; i++) {
        fg_iprange_t *cur = &set->r[w];
        if (fg_ip_cmp(&set->r[i].lo, &cur->hi) <= 0 || adjacent(&cur->hi, &set->r[i].lo)) {
            if (fg_ip_cmp(&set->r[i].hi, &cur->hi) > 0)
                cur->hi = set->r[i].hi;
        } else {
            set->r[++w] = set->r[i];
        }
    }
    set->n = w + 1;
}

int fg_iprange_set_contains(const fg_iprange_set_t *set, const fg_ip_t *ip)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const fg_iprange_t *r = &set->r[mid];
        if (fg_ip_cmp(ip, &r->lo) < 0)
            hi = mid;
        else if (fg_ip_cmp(ip, &r->hi) > 0)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

void fg_iprange_set_free(fg_iprange_set_t *set)
{
    free(set->r);
    memset(set, 0, sizeof(*set));
}
