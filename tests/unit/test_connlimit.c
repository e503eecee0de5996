#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/addr_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/config.h"
#include "shm/metrics.h"
#include "shm/tcpclients.h"
#include "worker/core/connlimit.h"

#define TABLE_SIZE (64 * 1024)

/* Two workers (records 0 and 1) sharing one per-client table and one metrics table. */
typedef struct {
    void *mem;
    fg_tcpclients_t *shared;
    fg_metrics_t *mt;
    fg_config_t *cfg;
    fg_connlimit_t *w[2];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->mem = mmap(NULL, TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(f->mem != MAP_FAILED);
    f->shared = fg_tcpclients_init(f->mem, TABLE_SIZE);
    assert_non_null(f->shared);
    size_t n = (fg_metrics_zone_size() + 63) / 64 * 64;
    void *m = aligned_alloc(64, n);
    assert_non_null(m);
    f->mt = fg_metrics_init(m, n);
    char err[512] = "";
    f->cfg = fg_config_load_string(
        "t.json",
        "{\"servers\":[{\"id\":\"a\",\"listen\":\"127.0.0.1:1\"},"
        "{\"id\":\"b\",\"listen\":\"127.0.0.1:2\"}],"
        "\"routes\":[{\"id\":\"r\",\"match\":{\"path\":\"/\"},\"direct\":{\"status\":200}}]}",
        err, sizeof(err));
    if (f->cfg == NULL)
        fail_msg("%s", err);
    assert_int_equal(fg_metrics_attach_table(f->mt, f->cfg, 1, 1, 1), 0);
    for (int i = 0; i < 2; i++)
        assert_non_null(f->w[i] = fg_connlimit_new(f->shared, i, f->cfg->nservers));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    fg_metrics_worker_start(NULL, -1);
    for (int i = 0; i < 2; i++)
        fg_connlimit_free(f->w[i]);
    fg_config_free(f->cfg);
    free(f->mt);
    munmap(f->mem, TABLE_SIZE);
    free(f);
    return 0;
}

static fg_connlimit_caps_t caps(fixture_t *f, size_t server, unsigned maxc, unsigned perc)
{
    return (fg_connlimit_caps_t){.server = server,
                                 .id = f->cfg->servers[server].id,
                                 .metrics = f->cfg->servers[server].metrics,
                                 .max_connections = maxc,
                                 .max_per_client = perc};
}

/* Worker w of the fixture takes a place for peer; its metrics row is the one written. */
static fg_connlimit_verdict_t take(fixture_t *f, int w, const fg_connlimit_caps_t *c,
                                   const char *peer, fg_connlimit_hold_t **h)
{
    fg_metrics_worker_start(f->mt, w);
    struct sockaddr_storage ss = test_addr(peer);
    return fg_connlimit_take(f->w[w], c, &ss, h);
}

static void give(fixture_t *f, int w, fg_connlimit_hold_t *h)
{
    fg_metrics_worker_start(f->mt, w);
    fg_connlimit_give(h);
}

static uint64_t server_open(fixture_t *f, size_t server)
{
    uint64_t open = 0;
    fg_metrics_place_open(f->mt, f->cfg->servers[server].metrics, FG_MP_CONNECTIONS, &open);
    return open;
}

/* Without a cap nothing is counted and nothing is held: the accept path's fast case. */
static void test_no_cap_holds_nothing(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_caps_t c = caps(f, 0, 0, 0);
    fg_connlimit_hold_t *h = (void *)1;
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h), FG_CONNLIMIT_OK);
    assert_null(h);
    assert_int_equal(fg_connlimit_take(NULL, &c, &(struct sockaddr_storage){0}, &h),
                     FG_CONNLIMIT_OK);
    fg_connlimit_give(NULL);
    assert_int_equal(server_open(f, 0), 0);
}

/* maxConnectionsPerClient counts one address across both workers; another address, or the
 * same address on another server, counts apart; a give makes room again. */
static void test_per_client_across_workers(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_caps_t c = caps(f, 0, 0, 2), other = caps(f, 1, 0, 2);
    fg_connlimit_hold_t *h[4], *x = (void *)1, *y, *z;
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[0]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &h[1]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &x), FG_CONNLIMIT_CLIENT);
    assert_null(x);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &x), FG_CONNLIMIT_CLIENT);
    assert_int_equal(take(f, 0, &c, "10.0.0.2", &y), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &other, "10.0.0.1", &z), FG_CONNLIMIT_OK);
    give(f, 1, h[1]);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[2]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &x), FG_CONNLIMIT_CLIENT);
    give(f, 0, h[0]);
    give(f, 0, h[2]);
    give(f, 0, y);
    give(f, 0, z);
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &h[3]), FG_CONNLIMIT_OK);
    give(f, 1, h[3]);
}

/* An IPv6 client is its /64; an IPv4-mapped address is the IPv4 client. */
static void test_ipv6_by_prefix_and_mapped_ipv4(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_caps_t c = caps(f, 0, 0, 1);
    fg_connlimit_hold_t *a, *b, *x;
    assert_int_equal(take(f, 0, &c, "2001:db8:1:2::1", &a), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "2001:db8:1:2:ffff::9", &x), FG_CONNLIMIT_CLIENT);
    assert_int_equal(take(f, 1, &c, "2001:db8:1:3::1", &b), FG_CONNLIMIT_OK);
    give(f, 1, b);
    assert_int_equal(take(f, 0, &c, "192.0.2.7", &b), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "::ffff:192.0.2.7", &x), FG_CONNLIMIT_CLIENT);
    give(f, 0, a);
    give(f, 0, b);
}

/* maxConnections is exact over both workers; a refusal by the server cap gives back the
 * client place it took first. */
static void test_server_cap_across_workers(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_caps_t c = caps(f, 0, 3, 3);
    fg_connlimit_hold_t *h[3], *x;
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[0]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.2", &h[1]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.3", &h[2]), FG_CONNLIMIT_OK);
    assert_int_equal(server_open(f, 0), 3);
    assert_int_equal(take(f, 1, &c, "10.0.0.4", &x), FG_CONNLIMIT_SERVER);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &x), FG_CONNLIMIT_SERVER);
    assert_int_equal(server_open(f, 0), 3);
    give(f, 1, h[2]);
    assert_int_equal(server_open(f, 0), 2);
    /* 10.0.0.1's refused attempt left its count at 1: two more fit under the per-client 3 */
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &h[2]), FG_CONNLIMIT_OK);
    give(f, 0, h[0]);
    give(f, 0, h[1]);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[0]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[1]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &x), FG_CONNLIMIT_CLIENT);
    assert_int_equal(take(f, 0, &c, "10.0.0.9", &x), FG_CONNLIMIT_SERVER);
    for (int i = 0; i < 2; i++)
        give(f, 0, h[i]);
    give(f, 1, h[2]);
    assert_int_equal(server_open(f, 0), 0);
}

/* A worker that died has its shares dropped by the master: what it held is free again, what
 * the other worker holds still counts. */
static void test_crashed_worker_share_dropped(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_caps_t c = caps(f, 0, 4, 2);
    fg_connlimit_hold_t *mine, *dead[3], *x;
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &mine), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.1", &dead[0]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.2", &dead[1]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 1, &c, "10.0.0.3", &dead[2]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.5", &x), FG_CONNLIMIT_SERVER);
    fg_tcpclients_worker_gone(f->shared, 1);
    fg_metrics_worker_gone(f->mt, 1);
    assert_int_equal(server_open(f, 0), 1);
    fg_connlimit_hold_t *h[3];
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h[0]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &x), FG_CONNLIMIT_CLIENT);
    assert_int_equal(take(f, 0, &c, "10.0.0.2", &h[1]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.3", &h[2]), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.4", &x), FG_CONNLIMIT_SERVER);
    give(f, 0, mine);
    for (int i = 0; i < 3; i++)
        give(f, 0, h[i]);
    assert_int_equal(server_open(f, 0), 0);
    /* the dead worker's holds are only memory now (its process is gone in the gateway) */
    for (int i = 0; i < 3; i++)
        free(dead[i]);
}

/* Without the shared tables a worker counts by itself: the caps apply per worker. */
static void test_without_shared_tables_counts_per_worker(void **state)
{
    fixture_t *f = *state;
    fg_connlimit_t *alone = fg_connlimit_new(NULL, -1, 2);
    assert_non_null(alone);
    fg_metrics_worker_start(NULL, -1);
    fg_connlimit_caps_t c = {.server = 1, .id = "b", .max_connections = 2, .max_per_client = 1};
    struct sockaddr_storage a = test_addr("10.0.0.1"), b = test_addr("10.0.0.2"),
                            d = test_addr("10.0.0.3");
    fg_connlimit_hold_t *h[2], *x;
    assert_int_equal(fg_connlimit_take(alone, &c, &a, &h[0]), FG_CONNLIMIT_OK);
    assert_int_equal(fg_connlimit_take(alone, &c, &a, &x), FG_CONNLIMIT_CLIENT_HERE);
    assert_int_equal(fg_connlimit_take(alone, &c, &b, &h[1]), FG_CONNLIMIT_OK);
    assert_int_equal(fg_connlimit_take(alone, &c, &d, &x), FG_CONNLIMIT_SERVER);
    fg_connlimit_give(h[0]);
    assert_int_equal(fg_connlimit_take(alone, &c, &d, &h[0]), FG_CONNLIMIT_OK);
    c.server = 2; /* no such server in this worker's configuration */
    assert_int_equal(fg_connlimit_take(alone, &c, &d, &x), FG_CONNLIMIT_NOMEM);
    fg_connlimit_give(h[0]);
    fg_connlimit_give(h[1]);
    fg_connlimit_free(alone);
    (void)f;
}

/* The connections column is a column of its own: WebSockets of the same server do not count
 * against maxConnections, nor connections against maxWebSockets. */
static void test_connections_and_websockets_count_apart(void **state)
{
    fixture_t *f = *state;
    fg_metrics_worker_start(f->mt, 0);
    const fg_metrics_obj_t *srv = f->cfg->servers[0].metrics;
    assert_int_equal(fg_metrics_ws_reserve(srv, 1), 0);
    fg_connlimit_caps_t c = caps(f, 0, 1, 0);
    fg_connlimit_hold_t *h, *x;
    assert_int_equal(take(f, 0, &c, "10.0.0.1", &h), FG_CONNLIMIT_OK);
    assert_int_equal(take(f, 0, &c, "10.0.0.2", &x), FG_CONNLIMIT_SERVER);
    uint64_t ws = 0;
    assert_int_equal(fg_metrics_ws_count(srv, &ws), 0);
    assert_int_equal(ws, 1);
    fg_metrics_ws_close(srv);
    give(f, 0, h);
    assert_int_equal(server_open(f, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_cap_holds_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_client_across_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_by_prefix_and_mapped_ipv4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_cap_across_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crashed_worker_share_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_shared_tables_counts_per_worker, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connections_and_websockets_count_apart, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
