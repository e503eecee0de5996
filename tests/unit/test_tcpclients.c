#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/addr_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/mman.h>

#include "shm/tcpclients.h"

#define SIZE (64 * 1024)

static void *map(void)
{
    void *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void key_of(const char *text, uint8_t key[16])
{
    struct sockaddr_storage ss = test_addr(text);
    fg_tcpclients_key(&ss, key);
}

/* The cap holds whichever worker record counts; give makes room again; servers and addresses
 * count apart. */
static void test_cap_across_records(void **state)
{
    void *mem = map();
    fg_tcpclients_t *t = fg_tcpclients_init(mem, SIZE);
    assert_non_null(t);
    uint64_t ssh = fg_tcpclients_server_key("ssh"), db = fg_tcpclients_server_key("db");
    uint8_t a[16], b[16];
    key_of("192.0.2.1", a);
    key_of("192.0.2.2", b);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 0, 3), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 1, 3), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 2, 3), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 0, 3), 1);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 3, 3), 1);
    assert_int_equal(fg_tcpclients_take(t, ssh, b, 0, 3), 0);
    assert_int_equal(fg_tcpclients_take(t, db, a, 0, 3), 0);
    fg_tcpclients_give(t, ssh, a, 1);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 3, 3), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 3, 3), 1);
    /* a give for a record that holds nothing there changes nothing */
    fg_tcpclients_give(t, ssh, a, 7);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 3, 3), 1);
    munmap(mem, SIZE);
}

/* A dead worker's shares go back; the others' stay. */
static void test_worker_gone(void **state)
{
    void *mem = map();
    fg_tcpclients_t *t = fg_tcpclients_init(mem, SIZE);
    uint64_t ssh = fg_tcpclients_server_key("ssh");
    uint8_t a[16];
    key_of("2001:db8::1", a);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 4, 2), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 5, 2), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 6, 2), 1);
    fg_tcpclients_worker_gone(t, 4);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 6, 2), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 6, 2), 1);
    fg_tcpclients_worker_gone(t, 5);
    fg_tcpclients_worker_gone(t, 6);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 6, 2), 0);
    munmap(mem, SIZE);
}

/* IPv6 counts by /64: the addresses of one prefix share the cap. */
static void test_ipv6_by_prefix(void **state)
{
    void *mem = map();
    fg_tcpclients_t *t = fg_tcpclients_init(mem, SIZE);
    uint64_t ssh = fg_tcpclients_server_key("ssh");
    uint8_t a[16], b[16], c[16];
    key_of("2001:db8:0:1::1", a);
    key_of("2001:db8:0:1:ffff::2", b);
    key_of("2001:db8:0:2::1", c);
    assert_memory_equal(a, b, 16);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, 0, 1), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, b, 0, 1), 1);
    assert_int_equal(fg_tcpclients_take(t, ssh, c, 0, 1), 0);
    /* an IPv4 client of a dual-stack listener is its IPv4 address */
    uint8_t m1[16], m2[16], v4[16];
    key_of("::ffff:192.0.2.1", m1);
    key_of("::ffff:192.0.2.2", m2);
    key_of("192.0.2.1", v4);
    assert_memory_equal(m1, v4, 16);
    assert_memory_not_equal(m1, m2, 16);
    munmap(mem, SIZE);
}

/* More worker records than an entry tracks, or a full table: -1, the caller counts alone. */
static void test_not_counted(void **state)
{
    void *mem = map();
    fg_tcpclients_t *t = fg_tcpclients_init(mem, SIZE);
    uint64_t ssh = fg_tcpclients_server_key("ssh");
    uint8_t a[16];
    key_of("198.51.100.7", a);
    for (int r = 0; r < FG_TCPCLIENTS_RECORDS; r++)
        assert_int_equal(fg_tcpclients_take(t, ssh, a, r, 100), 0);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, FG_TCPCLIENTS_RECORDS, 100), -1);
    assert_int_equal(fg_tcpclients_take(t, ssh, a, -1, 100), -1);
    assert_int_equal(fg_tcpclients_take(NULL, ssh, a, 0, 100), -1);
    int full = 0;
    for (uint32_t i = 0; i < 100000 && !full; i++) {
        uint8_t k[16] = {0};
        memcpy(k, &i, sizeof(i));
        full = fg_tcpclients_take(t, ssh, k, 0, 1) == -1;
    }
    assert_true(full);
    munmap(mem, SIZE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_across_records),
        cmocka_unit_test(test_worker_gone),
        cmocka_unit_test(test_ipv6_by_prefix),
        cmocka_unit_test(test_not_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
