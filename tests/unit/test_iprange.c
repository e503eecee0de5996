#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/iprange.h"

static fg_ip_t ip(const char *s)
{
    fg_ip_t a;
    assert_int_equal(fg_ip_parse(s, strlen(s), &a), 0);
    return a;
}

static void test_parse_and_format(void **state)
{
    char buf[64];
    fg_ip_t a = ip("192.168.1.2");
    assert_true(fg_ip_is_v4(&a));
    assert_string_equal(fg_ip_format(&a, buf, sizeof(buf)), "192.168.1.2");
    /* IPv4-mapped IPv6 is the same address as the IPv4 one. */
    fg_ip_t m = ip("::ffff:192.168.1.2");
    assert_int_equal(fg_ip_cmp(&a, &m), 0);
    fg_ip_t b = ip("2001:DB8::1");
    assert_false(fg_ip_is_v4(&b));
    assert_string_equal(fg_ip_format(&b, buf, sizeof(buf)), "2001:db8::1");
    fg_ip_t bad;
    assert_int_equal(fg_ip_parse("1.2.3", 5, &bad), -1);
    assert_int_equal(fg_ip_parse("1.2.3.256", 9, &bad), -1);
    assert_int_equal(fg_ip_parse("", 0, &bad), -1);
    assert_int_equal(fg_ip_parse("fe80::1%eth0", 12, &bad), -1);
}

static void test_sockaddr(void **state)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    fg_ip_t a, b = ip("10.1.2.3");
    assert_int_equal(fg_ip_from_sockaddr((struct sockaddr *)&in, &a), 0);
    assert_int_equal(fg_ip_cmp(&a, &b), 0);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6.sin6_addr);
    assert_int_equal(fg_ip_from_sockaddr((struct sockaddr *)&in6, &a), 0);
    assert_int_equal(fg_ip_cmp(&a, &b), 0);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(fg_ip_from_sockaddr(&un, &a), -1);
}

static void test_parse_ranges(void **state)
{
    fg_iprange_t r;
    int plen;
    char err[128];
    assert_int_equal(fg_iprange_parse("10.0.0.0/8", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 104);
    fg_ip_t lo = ip("10.0.0.0"), hi = ip("10.255.255.255");
    assert_int_equal(fg_ip_cmp(&r.lo, &lo), 0);
    assert_int_equal(fg_ip_cmp(&r.hi, &hi), 0);
    /* Host bits in a CIDR are masked, as routers do. */
    assert_int_equal(fg_iprange_parse("10.1.2.3/16", &r, &plen, err, sizeof(err)), 0);
    lo = ip("10.1.0.0");
    assert_int_equal(fg_ip_cmp(&r.lo, &lo), 0);
    assert_int_equal(fg_iprange_parse("1.2.3.4", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 128);
    assert_int_equal(fg_iprange_parse("1.2.3.4-1.2.3.9", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, -1);
    assert_int_equal(fg_iprange_parse("2001:db8::/32", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 32);
    assert_int_equal(fg_iprange_parse("::/0", &r, &plen, err, sizeof(err)), 0);
    /* Errors name the problem. */
    assert_int_equal(fg_iprange_parse("10.0.0.0/33", &r, &plen, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "0..32"));
    assert_int_equal(fg_iprange_parse("::1/129", &r, &plen, err, sizeof(err)), -1);
    assert_int_equal(fg_iprange_parse("1.2.3.9-1.2.3.4", &r, &plen, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "backwards"));
    assert_int_equal(fg_iprange_parse("1.2.3.4-::9", &r, &plen, err, sizeof(err)), -1);
    assert_int_equal(fg_iprange_parse("1.2.3.4/", &r, &plen, err, sizeof(err)), -1);
    assert_int_equal(fg_iprange_parse("1.2.3.4/8x", &r, &plen, err, sizeof(err)), -1);
    assert_int_equal(fg_iprange_parse("host.example", &r, &plen, err, sizeof(err)), -1);
}

/* Address or CIDR only: a dash makes no range, the text is just not an address. */
static void test_parse_cidr_only(void **state)
{
    fg_iprange_t r;
    int plen;
    char err[128];
    assert_int_equal(fg_iprange_parse_cidr("10.1.2.3/16", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 112);
    fg_ip_t lo = ip("10.1.0.0");
    assert_int_equal(fg_ip_cmp(&r.lo, &lo), 0);
    assert_int_equal(fg_iprange_parse_cidr("2001:db8::1", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 128);
    assert_int_equal(fg_iprange_parse_cidr("not-an-ip", &r, &plen, err, sizeof(err)), -1);
    assert_string_equal(err, "\"not-an-ip\": not an IP address");
    assert_int_equal(fg_iprange_parse_cidr("1.2.3.4-1.2.3.9", &r, &plen, err, sizeof(err)), -1);
    assert_string_equal(err, "\"1.2.3.4-1.2.3.9\": not an IP address");
    assert_int_equal(fg_iprange_parse_cidr("1.2.3.4/33", &r, &plen, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "0..32"));
}

static void add(fg_iprange_set_t *s, const char *text)
{
    fg_iprange_t r;
    int plen;
    char err[128];
    assert_int_equal(fg_iprange_parse(text, &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(fg_iprange_set_add(s, &r), 0);
}

static int has(const fg_iprange_set_t *s, const char *text)
{
    fg_ip_t a = ip(text);
    return fg_iprange_set_contains(s, &a);
}

static void test_set_lookup_and_merge(void **state)
{
    fg_iprange_set_t s;
    fg_iprange_set_init(&s);
    assert_false(has(&s, "1.2.3.4"));
    add(&s, "10.0.0.0/8");
    add(&s, "10.20.0.0/16"); /* inside the first: merged */
    add(&s, "192.168.0.1-192.168.0.10");
    add(&s, "192.168.0.11"); /* adjacent: merged */
    add(&s, "2001:db8::/48");
    add(&s, "8.8.8.8");
    fg_iprange_set_finish(&s);
    assert_int_equal(s.n, 4);
    assert_true(has(&s, "10.0.0.0"));
    assert_true(has(&s, "10.255.255.255"));
    assert_false(has(&s, "11.0.0.0"));
    assert_false(has(&s, "9.255.255.255"));
    assert_true(has(&s, "192.168.0.11"));
    assert_false(has(&s, "192.168.0.12"));
    assert_true(has(&s, "::ffff:8.8.8.8"));
    assert_false(has(&s, "8.8.8.9"));
    assert_true(has(&s, "2001:db8:0:ffff::1"));
    assert_false(has(&s, "2001:db8:1::1"));
    /* An IPv6 address never falls in an IPv4 range and vice versa. */
    assert_false(has(&s, "::a00:1"));
    fg_iprange_set_free(&s);
}

static int set_of(fg_iprange_set_t *set, const char *const *entries, const char *probe)
{
    fg_iprange_set_init(set);
    for (size_t i = 0; entries[i]; i++) {
        fg_iprange_t r;
        int plen;
        char err[128];
        assert_int_equal(fg_iprange_parse(entries[i], &r, &plen, err, sizeof(err)), 0);
        assert_int_equal(fg_iprange_set_add(set, &r), 0);
    }
    fg_iprange_set_finish(set);
    fg_ip_t a = ip(probe);
    int in = fg_iprange_set_contains(set, &a);
    fg_iprange_set_free(set);
    return in;
}

/* Regressions: a CIDR in IPv6 notation over an IPv4-mapped address had its prefix read as an
 * IPv4 one, and IPv6 ranges such as ::/0 swallowed every IPv4 client. */
static void test_ipv6_notation_and_ipv4_clients(void **state)
{
    fg_iprange_t r;
    int plen;
    char err[128];
    assert_int_equal(fg_iprange_parse("::ffff:0:0/96", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 96);
    assert_int_equal(fg_iprange_parse("::ffff:10.0.0.0/104", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 104);
    fg_ip_t lo = ip("10.0.0.0"), hi = ip("10.255.255.255");
    assert_int_equal(fg_ip_cmp(&r.lo, &lo), 0);
    assert_int_equal(fg_ip_cmp(&r.hi, &hi), 0);
    /* ::ffff:10.0.0.0/8 is ::/8 in IPv6 notation, not 10.0.0.0/8 */
    assert_int_equal(fg_iprange_parse("::ffff:10.0.0.0/8", &r, &plen, err, sizeof(err)), 0);
    assert_int_equal(plen, 8);
    assert_int_equal(fg_iprange_parse("10.0.0.0/33", &r, &plen, err, sizeof(err)), -1);
    assert_int_equal(fg_iprange_parse("::ffff:0:0/129", &r, &plen, err, sizeof(err)), -1);

    fg_iprange_set_t set;
    const char *const all6[] = {"::/0", NULL};
    assert_false(set_of(&set, all6, "10.1.2.3"));
    assert_true(set_of(&set, all6, "2001:db8::1"));
    assert_true(set_of(&set, all6, "::1"));
    assert_true(set_of(&set, all6, "::fffe:ffff:ffff")); /* just below the mapped block */
    assert_true(set_of(&set, all6, "::1:0:0:0"));        /* just above it */
    const char *const range6[] = {"::-ffff::", NULL};
    assert_false(set_of(&set, range6, "192.0.2.1"));
    const char *const mapped[] = {"::ffff:0:0/96", NULL};
    assert_true(set_of(&set, mapped, "192.0.2.1"));
    assert_false(set_of(&set, mapped, "2001:db8::1"));
    const char *const both[] = {"::/0", "0.0.0.0/0", NULL};
    assert_true(set_of(&set, both, "192.0.2.1"));
    assert_true(set_of(&set, both, "2001:db8::1"));
}

static void test_large_set(void **state)
{
    fg_iprange_set_t s;
    fg_iprange_set_init(&s);
    char buf[32];
    /* 100,000 distinct /32s at stride 2: odd addresses stay out. */
    for (unsigned i = 0; i < 100000; i++) {
        unsigned a = 0x0b000000u + 2 * i;
        snprintf(buf, sizeof(buf), "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
                 a & 255);
        add(&s, buf);
    }
    fg_iprange_set_finish(&s);
    assert_int_equal(s.n, 100000);
    assert_true(has(&s, "11.0.0.0"));
    assert_false(has(&s, "11.0.0.1"));
    assert_true(has(&s, "11.3.13.62"));
    assert_false(has(&s, "127.0.0.1"));
    fg_iprange_set_free(&s);
}

static void test_host_bits(void **state)
{
    assert_true(fg_iprange_has_host_bits("10.66.0.1/16"));
    assert_true(fg_iprange_has_host_bits("127.0.0.1/8"));
    assert_true(fg_iprange_has_host_bits("fd00::1/8"));
    assert_true(fg_iprange_has_host_bits("::ffff:10.0.0.1/104"));
    assert_false(fg_iprange_has_host_bits("10.66.0.0/16"));
    assert_false(fg_iprange_has_host_bits("10.66.0.1/32"));
    assert_false(fg_iprange_has_host_bits("0.0.0.0/0"));
    assert_false(fg_iprange_has_host_bits("fd00::/8"));
    assert_false(fg_iprange_has_host_bits("10.66.0.1"));
    assert_false(fg_iprange_has_host_bits("10.0.0.1-10.0.0.9"));
    assert_false(fg_iprange_has_host_bits("10.0.0.1/33")); /* invalid: not this check's call */
    assert_false(fg_iprange_has_host_bits("nonsense/8"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_sockaddr),
        cmocka_unit_test(test_parse_ranges),
        cmocka_unit_test(test_parse_cidr_only),
        cmocka_unit_test(test_set_lookup_and_merge),
        cmocka_unit_test(test_large_set),
        cmocka_unit_test(test_ipv6_notation_and_ipv4_clients),
        cmocka_unit_test(test_host_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
