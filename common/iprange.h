/* IP addresses and numeric address sets. Every address is held as 16 bytes in network order;
 * IPv4 is stored IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2) so that one ordering covers
 * both families and an IPv4-mapped IPv6 peer matches IPv4 entries. A set is a sorted array of
 * disjoint inclusive ranges searched by bisection: single addresses, "a-b" ranges and CIDRs all
 * become ranges, 100,000 entries cost about 17 comparisons per lookup. */
#ifndef FG_IPRANGE_H
#define FG_IPRANGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct {
    uint8_t b[16];
} fg_ip_t;

typedef struct {
    fg_ip_t lo, hi; /* inclusive */
} fg_iprange_t;

typedef struct {
    fg_iprange_t *r; /* sorted, disjoint, non-adjacent after fg_iprange_set_finish */
    size_t n, cap;
} fg_iprange_set_t;

/* Parse a textual IPv4 or IPv6 address (len bytes, not NUL-terminated). Returns 0 or -1. */
int fg_ip_parse(const char *s, size_t len, fg_ip_t *out);
/* From a socket address (AF_INET or AF_INET6). Returns 0 or -1. */
int fg_ip_from_sockaddr(const struct sockaddr *sa, fg_ip_t *out);
int fg_ip_is_v4(const fg_ip_t *ip);
/* Text form: dotted quad for IPv4 (mapped), RFC 5952 for IPv6. Returns buf. */
char *fg_ip_format(const fg_ip_t *ip, char *buf, size_t len);
/* A socket address as logs write it: "192.0.2.1:443", "[2001:db8::1]:443" (an IPv4-mapped
 * address as IPv4), "local" for any other family. Returns buf. */
char *fg_ip_format_peer(const struct sockaddr_storage *ss, char *buf, size_t len);
int fg_ip_cmp(const fg_ip_t *a, const fg_ip_t *b);
/* Keep the first plen bits (plen counted in the 128-bit space). */
void fg_ip_mask(fg_ip_t *ip, unsigned plen);

/* Parse "IP", "IP/len" or "IP-IP" (IPv4 prefix lengths are 0..32, IPv6 0..128, by the
 * notation of the address, so "::ffff:10.0.0.0/104" is an IPv6 prefix; a range must not mix
 * families nor run backwards). *plen receives the 128-bit prefix length of a CIDR or
 * single address, or -1 for an a-b range. Returns 0 or -1 with a reason in err. */
int fg_iprange_parse(const char *s, fg_iprange_t *out, int *plen, char *err, size_t errlen);
/* The same for "IP" and "IP/len" only: a dash is no range here, just not an address. */
int fg_iprange_parse_cidr(const char *s, fg_iprange_t *out, int *plen, char *err, size_t errlen);

/* 1 when s is a CIDR ("IP/len") whose address has bits set after the prefix length, such as
 * "10.66.0.1/16": the bits are ignored, which usually hides a typo. 0 otherwise, also for text
 * fg_iprange_parse refuses. */
int fg_iprange_has_host_bits(const char *s);

/* Sets: add in any order, then finish (sort and merge) before lookups. A range added that
 * reaches outside the IPv4-mapped block (IPv6 notation) loses the part inside it: IPv6 entries
 * never match IPv4 clients. */
void fg_iprange_set_init(fg_iprange_set_t *set);
int fg_iprange_set_add(fg_iprange_set_t *set, const fg_iprange_t *r);
void fg_iprange_set_finish(fg_iprange_set_t *set);
int fg_iprange_set_contains(const fg_iprange_set_t *set, const fg_ip_t *ip);
void fg_iprange_set_free(fg_iprange_set_t *set);

#endif
