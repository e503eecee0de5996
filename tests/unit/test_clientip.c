#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "worker/admission/clientip.h"

static fg_iprange_set_t trusted;
static fg_http_header_t hdrs[4];
static fg_request_t req;

static void peer(const char *v4)
{
    memset(&req, 0, sizeof(req));
    struct sockaddr_in *in = (struct sockaddr_in *)&req.client_addr;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, v4, &in->sin_addr);
    req.headers = hdrs;
}

static void header(const char *name, const char *value)
{
    hdrs[req.nheaders].name = fg_str(name);
    hdrs[req.nheaders].value = fg_str(value);
    req.nheaders++;
}

static const char *resolve(int source)
{
    static char buf[64];
    fg_ip_t ip;
    assert_int_equal(fg_clientip_resolve(&req, source, &trusted, &ip), 0);
    return fg_ip_format(&ip, buf, sizeof(buf));
}

static int setup(void **state)
{
    const char *nets[] = {"10.0.0.0/8", "192.168.1.1"};
    fg_iprange_set_init(&trusted);
    for (size_t i = 0; i < 2; i++) {
        fg_iprange_t r;
        int plen;
        char err[64];
        fg_iprange_parse(nets[i], &r, &plen, err, sizeof(err));
        fg_iprange_set_add(&trusted, &r);
    }
    fg_iprange_set_finish(&trusted);
    return 0;
}

static int teardown(void **state)
{
    fg_iprange_set_free(&trusted);
    return 0;
}

static void test_socket_ignores_headers(void **state)
{
    peer("10.1.1.1");
    header("X-Forwarded-For", "203.0.113.1");
    assert_string_equal(resolve(FG_CIP_SOCKET), "10.1.1.1");
}

static void test_untrusted_peer_header_ignored(void **state)
{
    peer("198.51.100.9");
    header("X-Forwarded-For", "203.0.113.1");
    header("X-Real-IP", "203.0.113.2");
    assert_string_equal(resolve(FG_CIP_XFF), "198.51.100.9");
    assert_string_equal(resolve(FG_CIP_REAL_IP), "198.51.100.9");
}

static void test_xff_rightmost_untrusted(void **state)
{
    peer("10.0.0.1");
    header("X-Forwarded-For", "1.1.1.1, 203.0.113.7,10.2.2.2");
    assert_string_equal(resolve(FG_CIP_XFF), "203.0.113.7");
    /* Later header lines are nearer to us. */
    peer("10.0.0.1");
    header("X-Forwarded-For", "1.1.1.1");
    header("X-Forwarded-For", "203.0.113.8, 192.168.1.1");
    assert_string_equal(resolve(FG_CIP_XFF), "203.0.113.8");
    /* All hops trusted: the left-most. */
    peer("10.0.0.1");
    header("X-Forwarded-For", "10.9.9.9, 10.8.8.8");
    assert_string_equal(resolve(FG_CIP_XFF), "10.9.9.9");
    /* Garbage stops the walk at the last good hop. */
    peer("10.0.0.1");
    header("X-Forwarded-For", "203.0.113.1, nonsense, 10.3.3.3");
    assert_string_equal(resolve(FG_CIP_XFF), "10.3.3.3");
    /* Ports and brackets are tolerated. */
    peer("10.0.0.1");
    header("X-Forwarded-For", "[2001:db8::1]:443, 203.0.113.4:5555");
    assert_string_equal(resolve(FG_CIP_XFF), "203.0.113.4");
    peer("10.0.0.1");
    assert_string_equal(resolve(FG_CIP_XFF), "10.0.0.1"); /* no header */
}

static void test_single_value_headers(void **state)
{
    peer("192.168.1.1");
    header("X-Real-IP", " 2001:db8::7 ");
    header("CF-Connecting-IP", "203.0.113.3");
    assert_string_equal(resolve(FG_CIP_REAL_IP), "2001:db8::7");
    assert_string_equal(resolve(FG_CIP_CF), "203.0.113.3");
    peer("192.168.1.1");
    header("X-Real-IP", "bogus");
    assert_string_equal(resolve(FG_CIP_REAL_IP), "192.168.1.1");
}

/* The resolved client replaces client_ip and the peer moves to peer_ip; a client equal to the
 * peer leaves both as they are (no peer field in the access log). */
static void test_apply_keeps_peer(void **state)
{
    peer("10.1.2.3");
    strcpy(req.client_ip, "10.1.2.3");
    header("X-Forwarded-For", "203.0.113.9");
    fg_ip_t ip;
    assert_int_equal(fg_clientip_resolve(&req, FG_CIP_XFF, &trusted, &ip), 0);
    fg_clientip_apply(&req, &ip);
    assert_string_equal(req.client_ip, "203.0.113.9");
    assert_string_equal(req.peer_ip, "10.1.2.3");

    peer("198.51.100.1"); /* not trusted: the header is ignored */
    strcpy(req.client_ip, "198.51.100.1");
    header("X-Forwarded-For", "203.0.113.9");
    assert_int_equal(fg_clientip_resolve(&req, FG_CIP_XFF, &trusted, &ip), 0);
    fg_clientip_apply(&req, &ip);
    assert_string_equal(req.client_ip, "198.51.100.1");
    assert_string_equal(req.peer_ip, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_ignores_headers),
        cmocka_unit_test(test_untrusted_peer_header_ignored),
        cmocka_unit_test(test_xff_rightmost_untrusted),
        cmocka_unit_test(test_single_value_headers),
        cmocka_unit_test(test_apply_keeps_peer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
