#include "common/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/iprange.h"

/* proxy-protocol.txt 2.2: the twelve bytes that begin every version 2 header */
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN 6
#define V2_HEAD 16

enum { V2_LOCAL = 0, V2_PROXY = 1 };
enum { FAM_UNSPEC = 0, FAM_INET = 1, FAM_INET6 = 2, FAM_UNIX = 3 };
enum { TRANSPORT_UNSPEC = 0, TRANSPORT_STREAM = 1, TRANSPORT_DGRAM = 2 };

static int fail(const char **why, const char *reason)
{
    *why = reason;
    return -1;
}

static void set_addr(struct sockaddr_storage *ss, const fg_ip_t *ip, uint16_t port, int v4)
{
    memset(ss, 0, sizeof(*ss));
    if (v4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, ip->b + 12, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        memcpy(&sin6->sin6_addr, ip->b, 16);
    }
}

/* ---- version 1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" (2.1) ---- */

/* A decimal port of 1 to 5 digits, at most 65535. */
static int v1_port(const char *s, size_t n, uint16_t *out)
{
    unsigned long v = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* An address of the line's family: TCP4 a dotted quad, TCP6 an IPv6 text form. */
static int v1_addr(const char *s, size_t n, int v4, fg_ip_t *ip)
{
    if (n == 0 || fg_ip_parse(s, n, ip) != 0)
        return -1;
    int colon = memchr(s, ':', n) != NULL;
    return v4 == !colon ? 0 : -1;
}

/* The fields after "PROXY " up to the CR: "TCP4 SRC DST SPORT DPORT" (single spaces), or
 * "UNKNOWN" followed by anything. */
static int v1_fields(const char *s, size_t n, fg_proxy_protocol_t *out, const char **why)
{
    if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
        out->local = 1;
        return 0;
    }
    if (n < 5 || memcmp(s, "TCP", 3) != 0 || (s[3] != '4' && s[3] != '6') || s[4] != ' ')
        return fail(why, "version 1 protocol is not TCP4, TCP6 or UNKNOWN");
    int v4 = s[3] == '4';
    const char *f[4];
    size_t fl[4], nf = 0;
    const char *p = s + 5, *end = s + n;
    while (nf < 4) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *fe = sp != NULL ? sp : end;
        f[nf] = p;
        fl[nf++] = (size_t)(fe - p);
        if (sp == NULL)
            break;
        p = sp + 1;
    }
    if (nf != 4 || f[3] + fl[3] != end)
        return fail(why, "version 1 line does not have 4 fields after its protocol");
    fg_ip_t src, dst;
    uint16_t sport, dport;
    if (v1_addr(f[0], fl[0], v4, &src) != 0 || v1_addr(f[1], fl[1], v4, &dst) != 0)
        return fail(why, "version 1 address is not one of its protocol's family");
    if (v1_port(f[2], fl[2], &sport) != 0 || v1_port(f[3], fl[3], &dport) != 0)
        return fail(why, "version 1 port is not a number from 0 to 65535");
    set_addr(&out->src, &src, sport, v4);
    set_addr(&out->dst, &dst, dport, v4);
    out->len = v4 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    return 0;
}

static int parse_v1(const uint8_t *buf, size_t len, fg_proxy_protocol_t *out, const char **why)
{
    /* the CR ends the line at most 107 bytes long with its LF */
    size_t lim = len < FG_PROXY_PROTOCOL_V1_MAX - 1 ? len : FG_PROXY_PROTOCOL_V1_MAX - 1;
    for (size_t i = V1_SIG_LEN; i < lim; i++) {
        if (buf[i] == '\r') {
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return fail(why, "version 1 line has a CR without LF");
            out->version = 1;
            if (v1_fields((const char *)buf + V1_SIG_LEN, i - V1_SIG_LEN, out, why) != 0)
                return -1;
            return (int)(i + 2);
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return fail(why, "version 1 line has a byte that is not printable ASCII");
    }
    if (len >= FG_PROXY_PROTOCOL_V1_MAX - 1)
        return fail(why, "version 1 line is longer than 107 bytes");
    return 0;
}

/* ---- version 2: binary (2.2) ---- */

#define TLV_HEAD 3
#define PP2_TYPE_SSL 0x20
#define PP2_CLIENT_SSL 0x01

/* The TLVs after the addresses (2.2.1..2.2.7): each a type, a 16-bit length and its value,
 * filling the rest of the header exactly. Only PP2_TYPE_SSL is read (its first byte, client,
 * says whether the client's connection to the balancer used TLS); the others are skipped. */
static int parse_tlvs(const uint8_t *t, size_t n, fg_proxy_protocol_t *out, const char **why)
{
    while (n > 0) {
        if (n < TLV_HEAD)
            return fail(why, "version 2 TLVs do not fill the header");
        size_t vlen = (size_t)t[1] << 8 | t[2];
        if (vlen > n - TLV_HEAD)
            return fail(why, "version 2 TLV is longer than the header");
        if (t[0] == PP2_TYPE_SSL && vlen >= 5 && (t[TLV_HEAD] & PP2_CLIENT_SSL))
            out->client_tls = 1;
        t += TLV_HEAD + vlen;
        n -= TLV_HEAD + vlen;
    }
    return 0;
}

static int parse_v2(const uint8_t *buf, size_t len, fg_proxy_protocol_t *out, const char **why)
{
    if (len < V2_HEAD)
        return 0;
    if (buf[12] >> 4 != 2)
        return fail(why, "version 2 signature with another version");
    unsigned cmd = buf[12] & 0x0F, fam = buf[13] >> 4, transport = buf[13] & 0x0F;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (cmd != V2_LOCAL && cmd != V2_PROXY)
        return fail(why, "version 2 command is neither LOCAL nor PROXY");
    if (V2_HEAD + body > FG_PROXY_PROTOCOL_MAX)
        return fail(why, "version 2 header is longer than 1024 bytes");
    if (len < V2_HEAD + body)
        return 0;
    out->version = 2;
    /* 2.2: a LOCAL connection (the balancer's own, such as a health check) keeps the
     * connection's endpoints whatever its block holds. Of PROXY, the byte must be one of the
     * seven the protocol defines (others "must be rejected as invalid by receivers"): UNSPEC
     * and the Unix family keep the endpoints, TCP over IPv4 or IPv6 names them, UDP cannot
     * describe a stream. */
    int unspec = fam == FAM_UNSPEC && transport == TRANSPORT_UNSPEC;
    if (cmd == V2_PROXY && !unspec &&
        (fam == FAM_UNSPEC || fam > FAM_UNIX || transport < TRANSPORT_STREAM ||
         transport > TRANSPORT_DGRAM))
        return fail(why, "version 2 family and transport byte is not one the protocol defines");
    if (cmd == V2_LOCAL || unspec || fam == FAM_UNIX) {
        out->local = 1;
        return (int)(V2_HEAD + body);
    }
    if (transport == TRANSPORT_DGRAM)
        return fail(why, "version 2 header names a datagram transport on a stream");
    int v4 = fam == FAM_INET;
    size_t alen = v4 ? 4 : 16;
    if (body < 2 * alen + 4)
        return fail(why, "version 2 length is shorter than its addresses");
    const uint8_t *a = buf + V2_HEAD;
    fg_ip_t src = {{0}}, dst = {{0}};
    if (v4) {
        src.b[10] = src.b[11] = dst.b[10] = dst.b[11] = 0xFF;
        memcpy(src.b + 12, a, 4);
        memcpy(dst.b + 12, a + 4, 4);
    } else {
        memcpy(src.b, a, 16);
        memcpy(dst.b, a + 16, 16);
    }
    uint16_t sport = (uint16_t)(a[2 * alen] << 8 | a[2 * alen + 1]);
    uint16_t dport = (uint16_t)(a[2 * alen + 2] << 8 | a[2 * alen + 3]);
    set_addr(&out->src, &src, sport, v4);
    set_addr(&out->dst, &dst, dport, v4);
    out->len = v4 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (parse_tlvs(a + 2 * alen + 4, body - 2 * alen - 4, out, why) != 0)
        return -1;
    return (int)(V2_HEAD + body);
}

int fg_proxy_protocol_parse(const uint8_t *buf, size_t len, fg_proxy_protocol_t *out,
                            const char **why)
{
    memset(out, 0, sizeof(*out));
    size_t n1 = len < V1_SIG_LEN ? len : V1_SIG_LEN, n2 = len < 12 ? len : 12;
    if (memcmp(buf, v1_sig, n1) == 0)
        return n1 < V1_SIG_LEN ? 0 : parse_v1(buf, len, out, why);
    if (memcmp(buf, v2_sig, n2) == 0)
        return n2 < 12 ? 0 : parse_v2(buf, len, out, why);
    return fail(why, "the connection does not begin with a PROXY protocol header");
}

/* ---- writing ---- */

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The text of an address of a TCP4 or TCP6 line. fg_ip_format writes an IPv4-mapped address
 * as a dotted quad, which a TCP6 line cannot carry (2.1: both addresses of the protocol's
 * family): the IPv4 side of a mixed pair stays in IPv6 form ("::ffff:192.0.2.1"). */
static const char *v1_text(const fg_ip_t *ip, int v4, char *buf, size_t len)
{
    if (v4)
        return fg_ip_format(ip, buf, len);
    if (inet_ntop(AF_INET6, ip->b, buf, (socklen_t)len) == NULL && len > 0)
        buf[0] = '\0';
    return buf;
}

static int write_v1(const fg_ip_t *src, const fg_ip_t *dst, uint16_t sport, uint16_t dport, int v4,
                    int known, uint8_t *out, size_t cap)
{
    char a[64], b[64], line[FG_PROXY_PROTOCOL_V1_MAX + 1];
    int n = !known ? snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n")
                   : snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n", v4 ? "TCP4" : "TCP6",
                              v1_text(src, v4, a, sizeof(a)), v1_text(dst, v4, b, sizeof(b)),
                              (unsigned)sport, (unsigned)dport);
    if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > cap)
        return -1;
    memcpy(out, line, (size_t)n);
    return n;
}

static int write_v2(const fg_ip_t *src, const fg_ip_t *dst, uint16_t sport, uint16_t dport, int v4,
                    int known, uint8_t *out, size_t cap)
{
    size_t alen = !known ? 0 : v4 ? 4 : 16, body = known ? 2 * alen + 4 : 0;
    if (cap < V2_HEAD + body)
        return -1;
    memcpy(out, v2_sig, 12);
    out[12] = (uint8_t)(0x20 | (known ? V2_PROXY : V2_LOCAL));
    out[13] = !known ? 0 : (uint8_t)((v4 ? FAM_INET : FAM_INET6) << 4 | TRANSPORT_STREAM);
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    if (known) {
        uint8_t *a = out + V2_HEAD;
        memcpy(a, src->b + 16 - alen, alen);
        memcpy(a + alen, dst->b + 16 - alen, alen);
        a[2 * alen] = (uint8_t)(sport >> 8);
        a[2 * alen + 1] = (uint8_t)sport;
        a[2 * alen + 2] = (uint8_t)(dport >> 8);
        a[2 * alen + 3] = (uint8_t)dport;
    }
    return (int)(V2_HEAD + body);
}

int fg_proxy_protocol_write(int version, const struct sockaddr_storage *src,
                            const struct sockaddr_storage *dst, uint8_t *out, size_t cap)
{
    fg_ip_t s, d;
    int known = fg_ip_from_sockaddr((const struct sockaddr *)src, &s) == 0 &&
                fg_ip_from_sockaddr((const struct sockaddr *)dst, &d) == 0;
    /* both IPv4 (or IPv4-mapped) go as TCP4; otherwise as TCP6, an IPv4 side mapped */
    int v4 = known && fg_ip_is_v4(&s) && fg_ip_is_v4(&d);
    uint16_t sp = known ? port_of(src) : 0, dp = known ? port_of(dst) : 0;
    if (!known)
        memset(&s, 0, sizeof(s)), memset(&d, 0, sizeof(d));
    return version == 1 ? write_v1(&s, &d, sp, dp, v4, known, out, cap)
                        : write_v2(&s, &d, sp, dp, v4, known, out, cap);
}
