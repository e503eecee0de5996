/* Unit tests for agent/backoff.c (reconnect delays) and the pure parts of agent/dial.c (the
 * upgrade request and the check of the gateway's 101). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/backoff.h"
#include "agent/config.h"
#include "agent/dial.h"

/* Without jitter the delays double from initialMs and stay at maxMs. */
static void test_doubles_to_the_cap(void **state)
{
    (void)state;
    fg_backoff_t b;
    fg_backoff_init(&b, 500, 30000, 0, 1);
    const uint64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_int_equal(fg_backoff_next(&b), want[i]);
}

/* Hours of failures: the attempt count saturates and the doubling never overflows. */
static void test_no_overflow_after_many_attempts(void **state)
{
    (void)state;
    fg_backoff_t b;
    fg_backoff_init(&b, 1, 86400000, 0, 1);
    uint64_t d = 0;
    for (int i = 0; i < 10000; i++)
        d = fg_backoff_next(&b);
    assert_int_equal(d, 86400000);
}

/* With jitter j every delay is in [base * (1 - j), base], and the draws differ. */
static void test_jitter_stays_below_the_base(void **state)
{
    (void)state;
    fg_backoff_t b;
    fg_backoff_init(&b, 1000, 8000, 0.3, 42);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int round = 0; round < 200; round++) {
        fg_backoff_reset(&b);
        for (int i = 0; i < 6; i++) {
            uint64_t base = fg_backoff_base(&b);
            uint64_t d = fg_backoff_next(&b);
            assert_true(d <= base);
            assert_true(d >= (uint64_t)((double)base * 0.7) - 1);
            if (i == 0) {
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
            }
        }
    }
    /* 200 draws over [700, 1000]: spread, not one value */
    assert_true(hi - lo > 150);
}

static void test_reset_starts_over(void **state)
{
    (void)state;
    fg_backoff_t b;
    fg_backoff_init(&b, 100, 1000, 0, 7);
    for (int i = 0; i < 5; i++)
        fg_backoff_next(&b);
    assert_int_equal(fg_backoff_base(&b), 1000);
    fg_backoff_reset(&b);
    assert_int_equal(fg_backoff_next(&b), 100);
    assert_int_equal(fg_backoff_next(&b), 200);
}

/* Full jitter (1) may go down to 1 ms, never to 0 (a zero timer would spin). */
static void test_full_jitter_never_zero(void **state)
{
    (void)state;
    fg_backoff_t b;
    fg_backoff_init(&b, 1, 1, 1.0, 3);
    for (int i = 0; i < 1000; i++)
        assert_true(fg_backoff_next(&b) >= 1);
}

static fg_agent_config_t *config(void)
{
    static fg_agent_config_t cfg;
    cfg.path = (char *)"/_fg/tunnel";
    cfg.host_field = (char *)"gw.example:8443";
    return &cfg;
}

/* RFC 6455 4.1 request, with no credential in it. */
static void test_upgrade_request(void **state)
{
    (void)state;
    char buf[1024];
    int n = fg_dial_request(config(), "dGhlIHNhbXBsZSBub25jZQ==", buf, sizeof(buf));
    assert_true(n > 0);
    assert_non_null(strstr(buf, "GET /_fg/tunnel HTTP/1.1\r\nHost: gw.example:8443\r\n"));
    assert_non_null(strstr(buf, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    assert_non_null(strstr(buf, "\r\nSec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n"));
    assert_non_null(strstr(buf, "\r\nSec-WebSocket-Version: 13\r\n"));
    assert_int_equal(memcmp(buf + n - 4, "\r\n\r\n", 4), 0);
    assert_int_equal(fg_dial_request(config(), "k", buf, 40), -1);
}

/* The sample handshake of RFC 6455 1.3: key dGhlIHNhbXBsZSBub25jZQ== gives
 * s3pPLMBiTxaQ9kYGzzhZRbK+xOo=. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define GOOD                                                                                       \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, "           \
    "Upgrade\r\n"                                                                                  \
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"                                       \
    "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n"

static void test_101_accepted(void **state)
{
    (void)state;
    char err[256];
    const char *r = GOOD "\x81\x05hello";
    assert_int_equal(fg_dial_response(r, strlen(r), KEY, err, sizeof(err)), strlen(GOOD));
    /* incomplete: wait for more */
    assert_int_equal(fg_dial_response(GOOD, strlen(GOOD) - 2, KEY, err, sizeof(err)), 0);
}

static void expect_refused(const char *resp, const char *why)
{
    char err[256] = "";
    assert_int_equal(fg_dial_response(resp, strlen(resp), KEY, err, sizeof(err)), -1);
    if (strstr(err, why) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, why);
}

static void test_101_refused(void **state)
{
    (void)state;
    expect_refused("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                   "did not switch protocols: \"HTTP/1.1 404 Not Found\"");
    expect_refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n",
                   "Sec-WebSocket-Accept does not match");
    expect_refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "\r\n",
                   "lacks Sec-WebSocket-Protocol");
    expect_refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Sec-WebSocket-Protocol: chat\r\n\r\n",
                   "another subprotocol");
    expect_refused("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n",
                   "lacks Upgrade: websocket");
    expect_refused("HTTP/1.1 1010 Switching\r\n\r\n", "did not switch protocols");
    /* a head that never ends is refused at FG_DIAL_HEAD_MAX */
    char *big = malloc(FG_DIAL_HEAD_MAX + 1);
    assert_non_null(big);
    memset(big, 'a', FG_DIAL_HEAD_MAX);
    big[FG_DIAL_HEAD_MAX] = '\0';
    char err[256];
    assert_int_equal(fg_dial_response(big, FG_DIAL_HEAD_MAX, KEY, err, sizeof(err)), -1);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_to_the_cap),
        cmocka_unit_test(test_no_overflow_after_many_attempts),
        cmocka_unit_test(test_jitter_stays_below_the_base),
        cmocka_unit_test(test_reset_starts_over),
        cmocka_unit_test(test_full_jitter_never_zero),
        cmocka_unit_test(test_upgrade_request),
        cmocka_unit_test(test_101_accepted),
        cmocka_unit_test(test_101_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
