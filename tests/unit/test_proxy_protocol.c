#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "common/proxy_protocol.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int parse_n(const void *buf, size_t len, fg_proxy_protocol_t *h)
{
    const char *why = NULL;
    int n = fg_proxy_protocol_parse(buf, len, h, &why);
    if (n == -1)
        assert_non_null(why);
    return n;
}

static int parse_s(const char *s, fg_proxy_protocol_t *h)
{
    return parse_n(s, strlen(s), h);
}

/* A socket address from text: IPv6 when it holds a colon. */
static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    }
    return ss;
}

static void assert_in4(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(in->sin_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), port);
    assert_memory_equal(&in->sin_addr, &want, 4);
}

static void assert_in6(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_int_equal(in6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(in6->sin6_port), port);
    assert_memory_equal(&in6->sin6_addr, &want, 16);
}

/* A version 2 header: signature, version/command byte, family/transport byte, body. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen > 0)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

/* 192.0.2.1:56324 -> 198.51.100.7:443, then a NOOP TLV (3 bytes) and an ALPN TLV "h2" */
static const uint8_t inet_body[] = {0xC0, 0x00, 0x02, 0x01, 0xC6, 0x33, 0x64, 0x07,
                                    0xDC, 0x04, 0x01, 0xBB, 0x04, 0x00, 0x03, 0xAA,
                                    0xBB, 0xCC, 0x01, 0x00, 0x02, 'h',  '2'};

/* 2001:db8::1:1234 -> 2001:db8::2:80 */
static const uint8_t inet6_body[] = {0x20, 0x01, 0x0D, 0xB8, 0,    0,   0, 0, 0, 0, 0, 0, 0, 0, 0,
                                     1,    0x20, 0x01, 0x0D, 0xB8, 0,   0, 0, 0, 0, 0, 0, 0, 0, 0,
                                     0,    2,    0x04, 0xD2, 0x00, 0x50};

/* ---- version 1 ---- */

static void test_v1_tcp4(void **state)
{
    const char *hdr = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    char buf[128];
    snprintf(buf, sizeof(buf), "%sGET / HTTP/1.1\r\n", hdr);
    fg_proxy_protocol_t h;
    assert_int_equal(parse_s(buf, &h), (int)strlen(hdr));
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.len, sizeof(struct sockaddr_in));
    assert_in4(&h.src, "192.0.2.1", 56324);
    assert_in4(&h.dst, "198.51.100.7", 443);
}

static void test_v1_tcp6(void **state)
{
    const char *hdr = "PROXY TCP6 2001:db8::1 2001:db8:0:0::2:1 65535 0\r\n";
    char buf[128];
    snprintf(buf, sizeof(buf), "%s\x16\x03\x01", hdr);
    fg_proxy_protocol_t h;
    assert_int_equal(parse_s(buf, &h), (int)strlen(hdr));
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.len, sizeof(struct sockaddr_in6));
    assert_in6(&h.src, "2001:db8::1", 65535);
    assert_in6(&h.dst, "2001:db8::2:1", 0);

    /* an IPv4-mapped address is IPv6 text: it stays AF_INET6 */
    hdr = "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
    assert_int_equal(parse_s(hdr, &h), (int)strlen(hdr));
    assert_in6(&h.src, "::ffff:192.0.2.1", 1);
    assert_in6(&h.dst, "::1", 2);
}

static void test_v1_unknown(void **state)
{
    fg_proxy_protocol_t h;
    assert_int_equal(parse_s("PROXY UNKNOWN\r\nxyz", &h), 15);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.len, 0);
    assert_int_equal(parse_s("PROXY UNKNOWN anything\r\n", &h), 24);
    assert_int_equal(h.local, 1);
    const char *full = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(parse_s(full, &h), (int)strlen(full));
    assert_int_equal(h.local, 1);
    /* UNKNOWN is a whole word */
    assert_int_equal(parse_s("PROXY UNKNOWNX\r\n", &h), -1);
    assert_int_equal(parse_s("PROXY UNKNOW\r\n", &h), -1);
}

/* Each proper prefix needs more, the whole header is taken, and so is it with more behind. */
static void check_prefixes(const uint8_t *hdr, size_t n)
{
    uint8_t buf[FG_PROXY_PROTOCOL_MAX + 64];
    fg_proxy_protocol_t h;
    assert_true(n + 8 <= sizeof(buf));
    memcpy(buf, hdr, n);
    memcpy(buf + n, "\r\nXY\0\r\n\x16", 8);
    for (size_t i = 0; i < n; i++) {
        if (parse_n(buf, i, &h) != 0)
            fail_msg("prefix of %zu of %zu bytes did not ask for more", i, n);
    }
    assert_int_equal(parse_n(buf, n, &h), (int)n);
    for (size_t k = 1; k <= 8; k++)
        assert_int_equal(parse_n(buf, n + k, &h), (int)n);
}

static void test_prefixes_need_more(void **state)
{
    const char *lines[] = {
        "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",
        "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        check_prefixes((const uint8_t *)lines[i], strlen(lines[i]));

    uint8_t b[FG_PROXY_PROTOCOL_MAX];
    size_t n = v2(b, 0x21, 0x11, inet_body, sizeof(inet_body));
    check_prefixes(b, n);
    n = v2(b, 0x21, 0x21, inet6_body, sizeof(inet6_body));
    check_prefixes(b, n);
    n = v2(b, 0x20, 0x00, NULL, 0);
    check_prefixes(b, n);
    n = v2(b, 0x20, 0x11, inet_body, 12);
    check_prefixes(b, n);
    uint8_t big[FG_PROXY_PROTOCOL_MAX - 16] = {0};
    n = v2(b, 0x20, 0x00, big, sizeof(big));
    check_prefixes(b, n);
}

static void test_v1_refusals(void **state)
{
    const char *bad[] = {
        "PROXY TCP5 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n",
        "PROXY TCP4 192.0.2.1 ::ffff:198.51.100.7 1 2\r\n",
        "PROXY TCP6 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY TCP6 2001:db8::1 198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 \r\n",
        "PROXY TCP4\r\n",
        "PROXY TCP4 \r\n",
        "PROXY \r\n",
        "PROXY  TCP4 192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY TCP4  192.0.2.1 198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.1  198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7  1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1  2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 65536\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 100000 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 8o 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 1 0x50\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 -1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.7 +1 2\r\n",
        "PROXY TCP4 192.0.2 198.51.100.7 1 2\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.7 1 2\r\n",
        "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fg_proxy_protocol_t h;
        if (parse_s(bad[i], &h) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* the limits themselves are taken */
    fg_proxy_protocol_t h;
    const char *edge = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    assert_int_equal(parse_s(edge, &h), (int)strlen(edge));
    assert_in4(&h.src, "0.0.0.0", 0);
    assert_in4(&h.dst, "255.255.255.255", 65535);
}

/* Refused at the byte that breaks the line, without waiting for a CRLF. */
static void test_v1_refused_early(void **state)
{
    fg_proxy_protocol_t h;
    const char *cr = "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\rX";
    assert_int_equal(parse_s(cr, &h), -1);
    assert_int_equal(parse_n(cr, strlen(cr) - 1, &h), 0);
    const char *lf = "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n";
    assert_int_equal(parse_s(lf, &h), -1);
    assert_int_equal(parse_n(lf, strlen(lf) - 1, &h), 0);
    assert_int_equal(parse_s("PROXY TCP4 192.0.2.1\n198.51.100.7 1 2\r\n", &h), -1);
    assert_int_equal(parse_n("PROXY TCP4 1\x01", 13, &h), -1);
    assert_int_equal(parse_n("PROXY TCP4 1\x00", 13, &h), -1);
    assert_int_equal(parse_n("PROXY TCP4 1\x7f", 13, &h), -1);
    assert_int_equal(parse_n("PROXY TCP4 1\x80", 13, &h), -1);
    assert_int_equal(parse_n("PROXY TCP4 1\t", 13, &h), -1);
    assert_int_equal(parse_n("PROXY \xff", 7, &h), -1);
}

static void test_v1_length_limit(void **state)
{
    /* 107 bytes exactly, the longest line: both addresses in their longest text form */
    const char *max = "PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
                      "2001:0db8:0000:0000:0000:0000:0000:1 65535 65535\r\n";
    assert_int_equal(strlen(max), FG_PROXY_PROTOCOL_V1_MAX);
    fg_proxy_protocol_t h;
    assert_int_equal(parse_s(max, &h), FG_PROXY_PROTOCOL_V1_MAX);
    assert_int_equal(h.local, 0);
    assert_in6(&h.src, "::ffff:255.255.255.255", 65535);
    assert_in6(&h.dst, "2001:db8::1", 65535);
    check_prefixes((const uint8_t *)max, strlen(max));

    /* one byte more: no CR among the first 106 bytes, refused once 106 are there */
    const char *over = "PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
                       "2001:0db8:0000:0000:0000:0000:0000:01 65535 65535\r\n";
    assert_int_equal(strlen(over), FG_PROXY_PROTOCOL_V1_MAX + 1);
    assert_int_equal(parse_n(over, 105, &h), 0);
    assert_int_equal(parse_n(over, 106, &h), -1);
    assert_int_equal(parse_s(over, &h), -1);

    char junk[300];
    memset(junk, 'A', sizeof(junk));
    memcpy(junk, "PROXY ", 6);
    assert_int_equal(parse_n(junk, 105, &h), 0);
    assert_int_equal(parse_n(junk, 106, &h), -1);
    assert_int_equal(parse_n(junk, sizeof(junk), &h), -1);
}

/* ---- version 2 ---- */

static void test_v2_inet_with_tlvs(void **state)
{
    uint8_t b[FG_PROXY_PROTOCOL_MAX + 8];
    size_t n = v2(b, 0x21, 0x11, inet_body, sizeof(inet_body));
    memcpy(b + n, "GET", 3);
    fg_proxy_protocol_t h;
    assert_int_equal(parse_n(b, n + 3, &h), 16 + (int)sizeof(inet_body));
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.len, sizeof(struct sockaddr_in));
    assert_in4(&h.src, "192.0.2.1", 56324);
    assert_in4(&h.dst, "198.51.100.7", 443);
}

/* 2.2.1..2.2.7: TLVs fill the header exactly; PP2_TYPE_SSL's PP2_CLIENT_SSL bit says the
 * client spoke TLS to the balancer */
static void test_v2_tlvs(void **state)
{
    uint8_t body[64], b[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    memcpy(body, inet_body, 12);
    /* PP2_TYPE_SSL: client 0x01 (and 0x04 PP2_CLIENT_CERT_SESS), verify 0, a version sub-TLV */
    static const uint8_t ssl[] = {0x20, 0x00, 0x0A, 0x05, 0, 0, 0, 0, 0x21, 0x00, 0x02, '1', '3'};
    memcpy(body + 12, ssl, sizeof(ssl));
    size_t n = v2(b, 0x21, 0x11, body, 12 + sizeof(ssl));
    assert_int_equal(parse_n(b, n, &h), (int)n);
    assert_int_equal(h.client_tls, 1);
    body[15] = 0x04; /* client bits without PP2_CLIENT_SSL */
    n = v2(b, 0x21, 0x11, body, 12 + sizeof(ssl));
    assert_int_equal(parse_n(b, n, &h), (int)n);
    assert_int_equal(h.client_tls, 0);
    /* an SSL TLV too short to hold client and verify is skipped, not read past */
    static const uint8_t short_ssl[] = {0x20, 0x00, 0x01, 0x01};
    memcpy(body + 12, short_ssl, sizeof(short_ssl));
    n = v2(b, 0x21, 0x11, body, 12 + sizeof(short_ssl));
    assert_int_equal(parse_n(b, n, &h), (int)n);
    assert_int_equal(h.client_tls, 0);
    /* without TLVs: no TLS */
    n = v2(b, 0x21, 0x11, body, 12);
    assert_int_equal(parse_n(b, n, &h), 16 + 12);
    assert_int_equal(h.client_tls, 0);
    /* a TLV whose length runs past the header, and bytes too few for a TLV's head */
    static const uint8_t over[] = {0x01, 0x00, 0x05, 'h', '2'};
    memcpy(body + 12, over, sizeof(over));
    n = v2(b, 0x21, 0x11, body, 12 + sizeof(over));
    assert_int_equal(parse_n(b, n, &h), -1);
    n = v2(b, 0x21, 0x11, body, 12 + 2);
    assert_int_equal(parse_n(b, n, &h), -1);
    /* LOCAL skips its block whatever it holds */
    n = v2(b, 0x20, 0x11, body, 12 + 2);
    assert_int_equal(parse_n(b, n, &h), (int)n);
    assert_int_equal(h.local, 1);
}

static void test_v2_inet6(void **state)
{
    uint8_t b[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    size_t n = v2(b, 0x21, 0x21, inet6_body, sizeof(inet6_body));
    assert_int_equal(parse_n(b, n, &h), 52);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.len, sizeof(struct sockaddr_in6));
    assert_in6(&h.src, "2001:db8::1", 1234);
    assert_in6(&h.dst, "2001:db8::2", 80);

    /* with a TLV behind the addresses */
    uint8_t body[sizeof(inet6_body) + 4];
    memcpy(body, inet6_body, sizeof(inet6_body));
    memcpy(body + sizeof(inet6_body), "\x04\x00\x01\x00", 4);
    n = v2(b, 0x21, 0x21, body, sizeof(body));
    assert_int_equal(parse_n(b, n, &h), 56);
    assert_in6(&h.dst, "2001:db8::2", 80);
}

static void test_v2_local(void **state)
{
    uint8_t b[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    size_t n = v2(b, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse_n(b, n, &h), 16);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.len, 0);
    /* LOCAL with a body: the body is skipped, whatever its family */
    n = v2(b, 0x20, 0x11, inet_body, sizeof(inet_body));
    assert_int_equal(parse_n(b, n, &h), (int)n);
    assert_int_equal(h.local, 1);
    n = v2(b, 0x20, 0x71, inet_body, 5);
    assert_int_equal(parse_n(b, n, &h), 21);
    assert_int_equal(h.local, 1);
}

static void test_v2_unspec_and_unix(void **state)
{
    uint8_t b[FG_PROXY_PROTOCOL_MAX];
    uint8_t paths[216] = {0};
    fg_proxy_protocol_t h;
    size_t n = v2(b, 0x21, 0x00, NULL, 0);
    assert_int_equal(parse_n(b, n, &h), 16);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 1);
    memcpy(paths, "/run/a.sock", 11);
    n = v2(b, 0x21, 0x31, paths, sizeof(paths));
    assert_int_equal(parse_n(b, n, &h), 16 + 216);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.len, 0);
    n = v2(b, 0x21, 0x32, paths, sizeof(paths)); /* Unix datagram: no address either */
    assert_int_equal(parse_n(b, n, &h), 16 + 216);
    assert_int_equal(h.local, 1);
}

static void test_v2_refusals(void **state)
{
    uint8_t b[FG_PROXY_PROTOCOL_MAX + 64];
    fg_proxy_protocol_t h;
    /* version nibble: refused as soon as the 16 fixed bytes are there */
    const uint8_t vers[] = {0x01, 0x11, 0x31, 0xF1};
    for (size_t i = 0; i < sizeof(vers); i++) {
        v2(b, vers[i], 0x11, inet_body, 12);
        assert_int_equal(parse_n(b, 15, &h), 0);
        assert_int_equal(parse_n(b, 16, &h), -1);
        assert_int_equal(parse_n(b, 28, &h), -1);
    }
    for (unsigned cmd = 2; cmd <= 15; cmd++) {
        v2(b, (uint8_t)(0x20 | cmd), 0x11, inet_body, 12);
        assert_int_equal(parse_n(b, 16, &h), -1);
    }
    for (unsigned fam = 4; fam <= 15; fam++) {
        size_t n = v2(b, 0x21, (uint8_t)(fam << 4 | 1), inet6_body, sizeof(inet6_body));
        assert_int_equal(parse_n(b, n, &h), -1);
    }
    /* 2.2: of PROXY, only the seven defined family and transport bytes; any other is refused
     * (a family with an unspecified transport, UNSPEC with a transport, transports 3..15),
     * while LOCAL ignores the byte */
    const uint8_t undefined[] = {0x10, 0x20, 0x30, 0x01, 0x02, 0x13, 0x1F, 0x23, 0x33};
    for (size_t i = 0; i < sizeof(undefined); i++) {
        size_t m = v2(b, 0x21, undefined[i], inet6_body, sizeof(inet6_body));
        assert_int_equal(parse_n(b, m, &h), -1);
        m = v2(b, 0x20, undefined[i], inet6_body, sizeof(inet6_body));
        assert_int_equal(parse_n(b, m, &h), (int)m);
        assert_int_equal(h.local, 1);
    }
    /* datagram transport */
    size_t n = v2(b, 0x21, 0x12, inet_body, 12);
    assert_int_equal(parse_n(b, n, &h), -1);
    n = v2(b, 0x21, 0x22, inet6_body, sizeof(inet6_body));
    assert_int_equal(parse_n(b, n, &h), -1);
    /* length shorter than the addresses */
    n = v2(b, 0x21, 0x11, inet_body, 11);
    assert_int_equal(parse_n(b, n, &h), -1);
    n = v2(b, 0x21, 0x21, inet6_body, 35);
    assert_int_equal(parse_n(b, n, &h), -1);
    n = v2(b, 0x21, 0x21, inet_body, 12); /* INET's 12 bytes under INET6 */
    assert_int_equal(parse_n(b, n, &h), -1);
    /* over FG_PROXY_PROTOCOL_MAX in all: refused from the length field, not buffered */
    uint8_t big[FG_PROXY_PROTOCOL_MAX] = {0};
    memcpy(big, inet_body, 12);
    n = v2(b, 0x21, 0x11, big, FG_PROXY_PROTOCOL_MAX - 15);
    assert_int_equal(parse_n(b, 16, &h), -1);
    assert_int_equal(parse_n(b, n, &h), -1);
    b[14] = b[15] = 0xFF;
    assert_int_equal(parse_n(b, 16, &h), -1);
    /* exactly the maximum is taken */
    n = v2(b, 0x21, 0x11, big, FG_PROXY_PROTOCOL_MAX - 16);
    assert_int_equal(parse_n(b, 16, &h), 0);
    assert_int_equal(parse_n(b, n, &h), FG_PROXY_PROTOCOL_MAX);
    assert_int_equal(h.local, 0);
    assert_in4(&h.src, "192.0.2.1", 56324);
}

/* ---- neither signature ---- */

static void test_not_a_header(void **state)
{
    fg_proxy_protocol_t h;
    assert_int_equal(parse_n("", 0, &h), 0);
    assert_int_equal(parse_n("GET / HTTP/1.1\r\n", 1, &h), -1);
    assert_int_equal(parse_s("GET / HTTP/1.1\r\n", &h), -1);
    assert_int_equal(parse_n("\x16\x03\x01\x02\x00", 1, &h), -1);
    assert_int_equal(parse_n("PRI * HTTP/2.0", 1, &h), 0);
    assert_int_equal(parse_n("PRI * HTTP/2.0", 2, &h), 0);
    assert_int_equal(parse_n("PRI * HTTP/2.0", 3, &h), -1);
    assert_int_equal(parse_n("proxy ", 1, &h), -1);
    assert_int_equal(parse_n("PROX", 4, &h), 0);
    assert_int_equal(parse_n("PROXX", 5, &h), -1);
    assert_int_equal(parse_n("PROXY\r\n", 6, &h), -1);
    assert_int_equal(parse_n("\r\n\r\n", 4, &h), 0);
    assert_int_equal(parse_n("\r\n\r\n\r\n", 5, &h), -1);
    /* the signature with its last byte wrong */
    uint8_t b[16];
    memcpy(b, sig, 12);
    assert_int_equal(parse_n(b, 11, &h), 0);
    b[11] = 0x0B;
    assert_int_equal(parse_n(b, 12, &h), -1);
}

/* ---- writing ---- */

static void test_write_v1_exact(void **state)
{
    struct sockaddr_storage s = sa("192.0.2.1", 56324), d = sa("198.51.100.7", 443);
    const char *want = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    uint8_t out[FG_PROXY_PROTOCOL_V1_MAX];
    int n = fg_proxy_protocol_write(1, &s, &d, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(out, want, strlen(want));
    /* exactly enough room, then one byte less */
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, strlen(want)), n);
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, strlen(want) - 1), -1);
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, 0), -1);
}

static void test_write_v2_exact(void **state)
{
    struct sockaddr_storage s = sa("192.0.2.1", 56324), d = sa("198.51.100.7", 443);
    uint8_t want[28];
    v2(want, 0x21, 0x11, inet_body, 12);
    uint8_t out[64];
    assert_int_equal(fg_proxy_protocol_write(2, &s, &d, out, sizeof(out)), 28);
    assert_memory_equal(out, want, 28);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &d, out, 28), 28);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &d, out, 27), -1);

    struct sockaddr_storage s6 = sa("2001:db8::1", 1234), d6 = sa("2001:db8::2", 80);
    uint8_t want6[52];
    v2(want6, 0x21, 0x21, inet6_body, sizeof(inet6_body));
    assert_int_equal(fg_proxy_protocol_write(2, &s6, &d6, out, sizeof(out)), 52);
    assert_memory_equal(out, want6, 52);
    assert_int_equal(fg_proxy_protocol_write(2, &s6, &d6, out, 51), -1);
}

static void check_round_trip(int version, const char *src, uint16_t sport, const char *dst,
                             uint16_t dport)
{
    struct sockaddr_storage s = sa(src, sport), d = sa(dst, dport);
    uint8_t out[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    int n = fg_proxy_protocol_write(version, &s, &d, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal(parse_n(out, (size_t)n, &h), n);
    assert_int_equal(h.version, version);
    assert_int_equal(h.local, 0);
    if (strchr(src, ':') == NULL) {
        assert_int_equal(h.len, sizeof(struct sockaddr_in));
        assert_in4(&h.src, src, sport);
        assert_in4(&h.dst, dst, dport);
    } else {
        assert_int_equal(h.len, sizeof(struct sockaddr_in6));
        assert_in6(&h.src, src, sport);
        assert_in6(&h.dst, dst, dport);
    }
}

static void test_write_round_trip(void **state)
{
    for (int v = 1; v <= 2; v++) {
        check_round_trip(v, "192.0.2.1", 56324, "198.51.100.7", 443);
        check_round_trip(v, "0.0.0.0", 0, "255.255.255.255", 65535);
        check_round_trip(v, "2001:db8::1", 1234, "2001:db8::2", 80);
        check_round_trip(v, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "::", 0);
    }
}

static void test_write_mapped_pair_as_ipv4(void **state)
{
    struct sockaddr_storage s = sa("::ffff:192.0.2.1", 56324), d = sa("::ffff:198.51.100.7", 443);
    uint8_t out[FG_PROXY_PROTOCOL_MAX];
    const char *want = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, sizeof(out)), (int)strlen(want));
    assert_memory_equal(out, want, strlen(want));

    uint8_t want2[28];
    v2(want2, 0x21, 0x11, inet_body, 12);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &d, out, sizeof(out)), 28);
    assert_memory_equal(out, want2, 28);

    /* one side mapped, the other plain IPv4: still IPv4 */
    struct sockaddr_storage d4 = sa("198.51.100.7", 443);
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d4, out, sizeof(out)), (int)strlen(want));
    assert_memory_equal(out, want, strlen(want));
}

/* A client named over IPv4 by a header in front, relayed from an IPv6 listener: the TCP6 line
 * wrote the IPv4 side as a dotted quad, which receivers (this parser too) refuse. */
static void test_write_v1_mixed_pair_keeps_ipv6_form(void **state)
{
    struct sockaddr_storage s = sa("192.0.2.1", 56324), d = sa("2001:db8::1", 443);
    uint8_t out[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;
    const char *want = "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 56324 443\r\n";
    int n = fg_proxy_protocol_write(1, &s, &d, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(out, want, strlen(want));
    assert_int_equal(parse_n(out, (size_t)n, &h), n);
    assert_in6(&h.src, "::ffff:192.0.2.1", 56324);
    assert_in6(&h.dst, "2001:db8::1", 443);

    n = fg_proxy_protocol_write(2, &d, &s, out, sizeof(out));
    assert_int_equal(n, 52);
    assert_int_equal(out[13], 0x21);
    assert_int_equal(parse_n(out, (size_t)n, &h), n);
    assert_in6(&h.src, "2001:db8::1", 443);
    assert_in6(&h.dst, "::ffff:192.0.2.1", 56324);
}

static void test_write_not_ip(void **state)
{
    struct sockaddr_storage s, d = sa("192.0.2.1", 80);
    memset(&s, 0, sizeof(s));
    struct sockaddr_un *un = (struct sockaddr_un *)&s;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, "/run/x.sock");
    uint8_t out[FG_PROXY_PROTOCOL_MAX];
    fg_proxy_protocol_t h;

    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, sizeof(out)), 15);
    assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
    assert_int_equal(fg_proxy_protocol_write(1, &d, &s, out, sizeof(out)), 15);
    assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
    assert_int_equal(parse_n(out, 15, &h), 15);
    assert_int_equal(h.local, 1);
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, 15), 15);
    assert_int_equal(fg_proxy_protocol_write(1, &s, &d, out, 14), -1);

    uint8_t want[16];
    v2(want, 0x20, 0x00, NULL, 0);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &s, out, sizeof(out)), 16);
    assert_memory_equal(out, want, 16);
    assert_int_equal(parse_n(out, 16, &h), 16);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 1);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &s, out, 16), 16);
    assert_int_equal(fg_proxy_protocol_write(2, &s, &s, out, 15), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown),
        cmocka_unit_test(test_prefixes_need_more),
        cmocka_unit_test(test_v1_refusals),
        cmocka_unit_test(test_v1_refused_early),
        cmocka_unit_test(test_v1_length_limit),
        cmocka_unit_test(test_v2_inet_with_tlvs),
        cmocka_unit_test(test_v2_tlvs),
        cmocka_unit_test(test_v2_inet6),
        cmocka_unit_test(test_v2_local),
        cmocka_unit_test(test_v2_unspec_and_unix),
        cmocka_unit_test(test_v2_refusals),
        cmocka_unit_test(test_not_a_header),
        cmocka_unit_test(test_write_v1_exact),
        cmocka_unit_test(test_write_v2_exact),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_write_mapped_pair_as_ipv4),
        cmocka_unit_test(test_write_v1_mixed_pair_keeps_ipv6_form),
        cmocka_unit_test(test_write_not_ip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
