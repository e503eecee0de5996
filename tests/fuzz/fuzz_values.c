/* libFuzzer target: the small text parsers that read operator and client input outside JSON
 * structure: IP addresses and ranges (common/iprange.h: configuration lists, trustedProxies,
 * `add acl` over the status socket), durations, sizes and listen addresses (common/config.h).
 * Checks, beyond memory safety:
 *   - an address that parses formats back to text that parses to the same address;
 *   - a range has lo <= hi, a CIDR's plen is 0..128 and masks lo, and a set holding the range
 *     contains both ends (unless the IPv4 block was cut out of an IPv6 range);
 *   - a duration or size that parses is consistent with a second parse of the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/iprange.h"

static void check_ip(const char *s, size_t n)
{
    fg_ip_t a, b;
    if (fg_ip_parse(s, n, &a) != 0)
        return;
    char buf[64];
    fg_ip_format(&a, buf, sizeof(buf));
    if (fg_ip_parse(buf, strlen(buf), &b) != 0 || fg_ip_cmp(&a, &b) != 0)
        abort();
}

static void check_range(const char *s)
{
    fg_iprange_t r;
    int plen;
    char err[160];
    if (fg_iprange_parse(s, &r, &plen, err, sizeof(err)) != 0) {
        if (memchr(err, '\0', sizeof(err)) == NULL)
            abort();
        return;
    }
    if (fg_ip_cmp(&r.lo, &r.hi) > 0 || plen < -1 || plen > 128)
        abort();
    if (plen >= 0) {
        fg_ip_t m = r.lo;
        fg_ip_mask(&m, (unsigned)plen);
        if (fg_ip_cmp(&m, &r.lo) != 0)
            abort();
    }
    fg_iprange_set_t set;
    fg_iprange_set_init(&set);
    if (fg_iprange_set_add(&set, &r) != 0)
        abort();
    fg_iprange_set_finish(&set);
    /* Both ends are in, except an end inside the IPv4 block when the range also reaches
     * outside it (IPv6 notation): that part is cut out. */
    int lo_v4 = fg_ip_is_v4(&r.lo), hi_v4 = fg_ip_is_v4(&r.hi);
    if (fg_iprange_set_contains(&set, &r.lo) != !(lo_v4 && !hi_v4))
        abort();
    if (fg_iprange_set_contains(&set, &r.hi) != !(hi_v4 && !lo_v4))
        abort();
    fg_iprange_set_free(&set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256)
        return 0;
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    check_ip(s, size);
    if (strlen(s) == size) {
        check_range(s);
        uint64_t a, b;
        if (fg_config_parse_duration(s, &a) == 0 &&
            (fg_config_parse_duration(s, &b) != 0 || a != b))
            abort();
        if (fg_config_parse_size(s, &a) == 0 && (fg_config_parse_size(s, &b) != 0 || a != b))
            abort();
        struct sockaddr_storage ss;
        socklen_t len = 0;
        if (fg_config_parse_listen(s, &ss, &len) == 0 && (len == 0 || len > sizeof(ss)))
            abort();
    }
    free(s);
    return 0;
}
