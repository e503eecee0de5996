#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/config.h"
#include "shm/health.h"
#include "worker/upstream/health.h"
#include "worker/core/clock.h"

static fg_health_config_t passive_cfg(void)
{
    fg_health_config_t hc = {0};
    hc.passive = 1;
    hc.window_ms = 60000;
    hc.min_requests = 10;
    hc.failure_rate = 0.3;
    hc.consecutive = 0;
    hc.reactivation_ms = 60000;
    hc.threshold = 2;
    return hc;
}

/* ---- passive: failure rate over a window, with a fake clock ---- */

static void test_rate_needs_minimum_requests(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    uint64_t t = 1000;
    /* 9 failures: 100 % failures but below minimumRequests */
    for (int i = 0; i < 9; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 0);
    assert_int_equal(fg_health_passive_state(&d, t), FG_HS_HEALTHY);
    /* the 10th makes it */
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 1);
    assert_int_equal(fg_health_passive_state(&d, t), FG_HS_UNHEALTHY);
    assert_false(fg_health_usable(&d, &hc, t));
    assert_int_equal(atomic_load(&d.failures), 10);
}

static void test_rate_below_threshold_stays_healthy(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    for (int i = 0; i < 100; i++) /* 20 % failures */
        assert_int_equal(fg_health_passive_report(&d, &hc, i % 5 == 0, 1000 + (uint64_t)i), 0);
    assert_true(fg_health_usable(&d, &hc, 2000));
    /* 3 more failures make 23/103 < 0.3 */
    for (int i = 0; i < 3; i++)
        fg_health_passive_report(&d, &hc, 1, 2000);
    assert_true(fg_health_usable(&d, &hc, 2000));
}

static void test_window_rolls_over(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    uint32_t r, f;
    for (int i = 0; i < 9; i++)
        fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, 1000);
    fg_health_passive_window(&d, &hc, 1000, &r, &f);
    assert_int_equal(r, 9);
    assert_int_equal(f, 9);
    /* a window later the old failures are forgotten */
    assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_OK, 1000 + 66000), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, 1000 + 66001), 0);
    fg_health_passive_window(&d, &hc, 67001, &r, &f);
    assert_int_equal(r, 3);
    assert_int_equal(f, 2);
    assert_true(fg_health_usable(&d, &hc, 67001));
}

/* Regression: with fixed windows, failures on both sides of a window boundary were split in
 * two windows that each stayed under the rate, and the destination was never marked. */
static void test_window_slides_across_boundaries(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    for (int i = 0; i < 20; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_OK, 1000), 0);
    /* 8 failures among 28 requests in the last minute: 0.29 < 0.3 */
    for (int i = 0; i < 8; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, 50000), 0);
    assert_true(fg_health_usable(&d, &hc, 50000));
    /* 15 s later the successes of t = 1 s left the window: 10 requests, all failed */
    assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, 65000), 0);
    assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, 65000), 1);
    assert_int_equal(fg_health_passive_state(&d, 65000), FG_HS_UNHEALTHY);
    /* the trip cleared the history for the Unknown period that follows */
    uint32_t r, f;
    fg_health_passive_window(&d, &hc, 65000, &r, &f);
    assert_int_equal(r, 0);
    assert_int_equal(f, 0);
}

/* A failure after the answer was counted (reset mid-body) adds a failure, not a request. */
static void test_late_failure_counts_once(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    uint32_t r, f;
    fg_health_passive_report(&d, &hc, FG_PASSIVE_OK, 1000);
    fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED_LATE, 1001);
    fg_health_passive_window(&d, &hc, 1001, &r, &f);
    assert_int_equal(r, 1);
    assert_int_equal(f, 1);
    assert_int_equal(atomic_load(&d.failures), 1);
    assert_int_equal(atomic_load(&d.consecutive), 1);
}

static void test_reactivation_then_unknown(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    hc.consecutive = 3;
    hc.reactivation_ms = 500;
    uint64_t t = 5000;
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 0);
    assert_int_equal(fg_health_passive_report(&d, &hc, 0, t), 0); /* a success resets the row */
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 0);
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 0);
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t), 1);
    assert_int_equal(fg_health_passive_state(&d, t + 499), FG_HS_UNHEALTHY);
    /* failures while unhealthy do not extend it */
    assert_int_equal(fg_health_passive_report(&d, &hc, 1, t + 100), 0);
    assert_int_equal(fg_health_passive_state(&d, t + 500), FG_HS_UNKNOWN);
    assert_true(fg_health_usable(&d, &hc, t + 500));
    assert_int_equal(atomic_load(&d.passive_trips), 1);
    /* the first answer after reactivation makes it Healthy again (YARP) */
    assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_OK, t + 600), 0);
    assert_int_equal(fg_health_passive_state(&d, t + 600), FG_HS_HEALTHY);
    /* and a new row of failures trips it again */
    for (int i = 0; i < 2; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, t + 700), 0);
    assert_int_equal(fg_health_passive_report(&d, &hc, FG_PASSIVE_FAILED, t + 700), 1);
    assert_int_equal(atomic_load(&d.passive_trips), 2);
}

static void test_passive_disabled_counts_only(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    hc.passive = 0;
    for (int i = 0; i < 50; i++)
        assert_int_equal(fg_health_passive_report(&d, &hc, 1, 1), 0);
    assert_true(fg_health_usable(&d, &hc, 1));
    assert_int_equal(atomic_load(&d.failures), 50);
}

/* ---- active: threshold, first failure of an unknown destination, lease ---- */

static void test_active_threshold(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    hc.threshold = 2;
    hc.active = 1;
    /* Unknown that fails its first probe: unhealthy at once (start-up rule). */
    fg_health_probe_report(&d, &hc, 0, 0, 10, "connection refused", 111);
    assert_int_equal(atomic_load(&d.active), FG_HS_UNHEALTHY);
    assert_string_equal(d.last_error, "connection refused");
    fg_health_probe_report(&d, &hc, 1, 200, 10, NULL, 112);
    assert_int_equal(atomic_load(&d.active), FG_HS_HEALTHY);
    assert_string_equal(d.last_error, "");
    /* Healthy: one failure is tolerated, the second (threshold) is not. */
    fg_health_probe_report(&d, &hc, 0, 500, 10, "status 500", 113);
    assert_int_equal(atomic_load(&d.active), FG_HS_HEALTHY);
    fg_health_probe_report(&d, &hc, 0, 500, 10, "status 500", 114);
    assert_int_equal(atomic_load(&d.active), FG_HS_UNHEALTHY);
    assert_false(fg_health_usable(&d, &hc, 0));
    assert_int_equal(atomic_load(&d.probes), 4);
    assert_int_equal(atomic_load(&d.last_probe_wall_ms), 114);
    /* Regression: a reload that turns active checks off leaves this state behind with no
     * prober to clear it; it must no longer keep the destination out. */
    hc.active = 0;
    assert_true(fg_health_usable(&d, &hc, 0));
}

/* Regression: likewise for a passive trip once passive checks are off. */
static void test_disabled_passive_check_does_not_count(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    fg_health_config_t hc = passive_cfg();
    for (int i = 0; i < 10; i++)
        fg_health_passive_report(&d, &hc, 1, 1000);
    assert_false(fg_health_usable(&d, &hc, 1000));
    hc.passive = 0;
    assert_true(fg_health_usable(&d, &hc, 1000));
}

static void test_probe_lease_once_per_interval(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    uint64_t t = 10000;
    assert_true(fg_health_probe_claim(&d, t, 1000));
    /* every other worker's timer in the same interval loses */
    for (int w = 0; w < 8; w++)
        assert_false(fg_health_probe_claim(&d, t + 999, 1000));
    assert_true(fg_health_probe_claim(&d, t + 1000, 1000));
    assert_false(fg_health_probe_claim(&d, t + 1001, 1000));
    /* A shorter interval after a reload counts from the last claim, not from the old lease. */
    assert_false(fg_health_probe_claim(&d, t + 1099, 100));
    assert_true(fg_health_probe_claim(&d, t + 1100, 100));
    assert_false(fg_health_probe_claim(&d, t + 1101, 100));
}

/* A worker whose clock reading is older than the last claim (it read the clock first, another
 * worker claimed first) does not probe again: no time elapsed. */
static void test_probe_lease_older_reading(void **state)
{
    fg_hdest_t d;
    fg_health_dest_init(&d, "c", "a");
    uint64_t t = 10000;
    assert_true(fg_health_probe_claim(&d, t, 1000));
    assert_false(fg_health_probe_claim(&d, t - 1, 1000));
    assert_false(fg_health_probe_claim(&d, t - 999, 1000));
    assert_false(fg_health_probe_claim(&d, t + 999, 1000));
    assert_true(fg_health_probe_claim(&d, t + 1000, 1000));
    assert_false(fg_health_probe_claim(&d, t + 999, 1000));
    /* a gateway started less than one interval after boot still probes at once */
    fg_health_dest_init(&d, "c", "a");
    assert_true(fg_health_probe_claim(&d, 5, 1000));
}

/* ---- shared memory: attach, reload, worker death ---- */

static fg_config_t *config(const char *json)
{
    char err[512];
    fg_config_t *cfg = fg_config_load_string("t.json", json, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static const char *two =
    "{\"servers\":[{\"id\":\"s\",\"listen\":\"127.0.0.1:1\"}],"
    "\"clusters\":[{\"id\":\"c\",\"destinations\":[{\"id\":\"a\",\"address\":\"http://"
    "127.0.0.1:2\"},"
    "{\"id\":\"b\",\"address\":\"http://127.0.0.1:3\"}]}],"
    "\"routes\":[{\"id\":\"r\",\"match\":{\"path\":\"/\"},\"clusterId\":\"c\"}]}";
static const char *one =
    "{\"servers\":[{\"id\":\"s\",\"listen\":\"127.0.0.1:1\"}],"
    "\"clusters\":[{\"id\":\"c\",\"destinations\":[{\"id\":\"b\",\"address\":\"http://"
    "127.0.0.1:9\"},"
    "{\"id\":\"z\",\"address\":\"http://127.0.0.1:3\"}]}],"
    "\"routes\":[{\"id\":\"r\",\"match\":{\"path\":\"/\"},\"clusterId\":\"c\"}]}";

static const char *other =
    "{\"servers\":[{\"id\":\"s\",\"listen\":\"127.0.0.1:1\"}],"
    "\"clusters\":[{\"id\":\"c\",\"destinations\":[{\"id\":\"b\",\"address\":\"http://"
    "127.0.0.1:9\"},"
    "{\"id\":\"n\",\"address\":\"http://127.0.0.1:3\"}]}],"
    "\"routes\":[{\"id\":\"r\",\"match\":{\"path\":\"/\"},\"clusterId\":\"c\"}]}";

static void test_attach_keeps_state_across_reload(void **state)
{
    fg_shm_t *shm = fg_shm_new(8 << 20);
    assert_non_null(shm);
    char err[256];
    fg_config_t *g1 = config(two);
    assert_int_equal(fg_health_attach(shm, g1, 1, 1, err, sizeof(err)), 0);
    fg_health_t *h = fg_health_zone(shm);
    assert_non_null(h);
    fg_hdest_t *b1 = g1->clusters[0].destinations[1].state;
    assert_non_null(b1);
    assert_ptr_equal(fg_health_find(h, "c", "b"), b1);
    fg_health_begin(h, b1, 3);
    atomic_store(&b1->admin, FG_ADMIN_MAINT);
    /* Generation 2 keeps b (same cluster and id, new address) and adds z. */
    fg_config_t *g2 = config(one);
    assert_int_equal(fg_health_attach(shm, g2, 2, 1, err, sizeof(err)), 0);
    assert_ptr_equal(fg_health_zone(shm), h);
    assert_ptr_equal(g2->clusters[0].destinations[0].state, b1);
    assert_int_equal(atomic_load(&b1->requests), 1);
    assert_int_equal(fg_health_admin(b1), FG_ADMIN_MAINT);
    fg_hdest_t *z = g2->clusters[0].destinations[1].state;
    assert_true(z != b1 && z != g1->clusters[0].destinations[0].state);
    assert_ptr_equal(g1->clusters[0].state, g2->clusters[0].state);
    /* Worker record 3 is killed: the master gives back its in-flight share. */
    assert_int_equal(atomic_load(&b1->inflight), 1);
    fg_health_worker_gone(h, 3);
    assert_int_equal(atomic_load(&b1->inflight), 0);
    fg_health_worker_gone(h, 3); /* idempotent */
    assert_int_equal(atomic_load(&b1->inflight), 0);
    /* Once generation 1 is gone, a's record is recycled for a new destination. */
    fg_hdest_t *a1 = g1->clusters[0].destinations[0].state;
    fg_config_t *g3 = config(two);
    assert_int_equal(fg_health_attach(shm, g3, 3, 3, err, sizeof(err)), 0);
    fg_hdest_t *a3 = g3->clusters[0].destinations[0].state;
    assert_ptr_equal(a3, a1); /* found by its ids: generation 2 did not use it, 1 did */
    /* Generation 4 alone: records of generations before it may be recycled for new ids. */
    fg_config_t *g4 = config(other);
    assert_int_equal(fg_health_attach(shm, g4, 4, 4, err, sizeof(err)), 0);
    fg_hdest_t *n4 = g4->clusters[0].destinations[1].state;
    assert_null(fg_health_find(h, "c", "a"));
    assert_ptr_equal(n4, a1); /* a's record, recycled and reset */
    assert_int_equal(atomic_load(&n4->requests), 0);
    assert_string_equal(n4->dest, "n");
    fg_config_free(g1);
    fg_config_free(g2);
    fg_config_free(g3);
    fg_config_free(g4);
    fg_shm_free(shm);
}

static void test_begin_end_balance(void **state)
{
    fg_shm_t *shm = fg_shm_new(8 << 20);
    char err[256];
    fg_config_t *g1 = config(two);
    assert_int_equal(fg_health_attach(shm, g1, 1, 1, err, sizeof(err)), 0);
    fg_health_t *h = fg_health_zone(shm);
    fg_hdest_t *a = g1->clusters[0].destinations[0].state;
    for (int i = 0; i < 5; i++)
        fg_health_begin(h, a, 0);
    fg_health_begin(h, a, 1);
    for (int i = 0; i < 5; i++)
        fg_health_end(h, a, 0);
    assert_int_equal(atomic_load(&a->inflight), 1);
    fg_health_worker_gone(h, 0); /* worker 0 had nothing left: no change */
    assert_int_equal(atomic_load(&a->inflight), 1);
    fg_health_end(h, a, 1);
    assert_int_equal(atomic_load(&a->inflight), 0);
    assert_int_equal(atomic_load(&a->requests), 6);
    fg_config_free(g1);
    fg_shm_free(shm);
}

static void test_status_commands(void **state)
{
    fg_shm_t *shm = fg_shm_new(8 << 20);
    char err[256];
    fg_config_t *cfg = config(two);
    assert_int_equal(fg_health_attach(shm, cfg, 1, 1, err, sizeof(err)), 0);
    fg_health_t *h = fg_health_zone(shm);
    json_t *r = fg_health_set_command(h, cfg, "c/b state drain");
    assert_string_equal(json_string_value(json_object_get(r, "state")), "drain");
    json_decref(r);
    r = fg_health_set_command(h, cfg, "c/b state off");
    assert_non_null(json_object_get(r, "error"));
    json_decref(r);
    r = fg_health_set_command(h, cfg, "c/x state maint");
    assert_non_null(json_object_get(r, "error"));
    json_decref(r);
    r = fg_health_set_command(h, cfg, "cb");
    assert_non_null(json_object_get(r, "error"));
    json_decref(r);
    r = fg_health_show_servers(cfg, fg_clock_now_ms());
    json_t *d = json_array_get(
        json_object_get(json_array_get(json_object_get(r, "clusters"), 0), "destinations"), 1);
    assert_string_equal(json_string_value(json_object_get(d, "admin")), "drain");
    assert_int_equal(json_integer_value(json_object_get(d, "inflight")), 0);
    json_decref(r);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_needs_minimum_requests),
        cmocka_unit_test(test_rate_below_threshold_stays_healthy),
        cmocka_unit_test(test_window_rolls_over),
        cmocka_unit_test(test_window_slides_across_boundaries),
        cmocka_unit_test(test_late_failure_counts_once),
        cmocka_unit_test(test_reactivation_then_unknown),
        cmocka_unit_test(test_passive_disabled_counts_only),
        cmocka_unit_test(test_active_threshold),
        cmocka_unit_test(test_disabled_passive_check_does_not_count),
        cmocka_unit_test(test_probe_lease_once_per_interval),
        cmocka_unit_test(test_probe_lease_older_reading),
        cmocka_unit_test(test_attach_keeps_state_across_reload),
        cmocka_unit_test(test_begin_end_balance),
        cmocka_unit_test(test_status_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
