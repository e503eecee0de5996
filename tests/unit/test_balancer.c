#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "shm/health.h"
#include "worker/upstream/balancer.h"

#define N 4

typedef struct {
    fg_cluster_t cl;
    fg_destination_t d[N];
    fg_hdest_t h[N];
    fg_hcluster_t hc;
    char ids[N][8];
} fixture_t;

static fixture_t fx;

static fg_cluster_t *make(int policy, size_t n, const int *weights)
{
    memset(&fx, 0, sizeof(fx));
    fx.cl.id = "c";
    fx.cl.lb_policy = policy;
    fx.cl.health.active = 1; /* both checks on: the tests set their states directly */
    fx.cl.health.passive = 1;
    fx.cl.destinations = fx.d;
    fx.cl.ndestinations = n;
    fg_health_cluster_init(&fx.hc, "c");
    fx.cl.state = &fx.hc;
    for (size_t i = 0; i < n; i++) {
        snprintf(fx.ids[i], sizeof(fx.ids[i]), "%c", (char)('d' - (int)i)); /* d c b a */
        fx.d[i].id = fx.ids[i];
        fx.d[i].enabled = 1;
        fx.d[i].weight = weights ? weights[i] : 1;
        fg_health_dest_init(&fx.h[i], "c", fx.ids[i]);
        fx.d[i].state = &fx.h[i];
    }
    return &fx.cl;
}

/* Choices of `rounds` selections, per destination. */
static void run(fg_balancer_t *b, fg_cluster_t *cl, int rounds, int *hits)
{
    fg_pick_t pk = {1000, NULL, -1};
    for (int i = 0; i < rounds; i++) {
        int d = fg_balancer_select(b, cl, &pk, NULL);
        assert_true(d >= 0 && d < (int)cl->ndestinations);
        hits[d]++;
    }
}

static void test_round_robin_smooth_weighted(void **state)
{
    int w[] = {5, 1, 1};
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 3, w);
    fg_balancer_t *b = fg_balancer_new(cl, 1);
    fg_pick_t pk = {1000, NULL, -1};
    int seq[7];
    for (int i = 0; i < 7; i++)
        seq[i] = fg_balancer_select(b, cl, &pk, NULL);
    /* nginx's example for 5:1:1 is a a b a c a a */
    int want[] = {0, 0, 1, 0, 2, 0, 0};
    assert_memory_equal(seq, want, sizeof(want));
    assert_int_equal(atomic_load(&fx.hc.rr), 7); /* the cursor lives in the shared record */
    /* A second worker's balancer continues the same sequence. */
    fg_balancer_t *b2 = fg_balancer_new(cl, 2);
    assert_int_equal(fg_balancer_select(b2, cl, &pk, NULL), 0);
    fg_balancer_free(b2);
    fg_balancer_free(b);
}

static void test_round_robin_skips_unavailable(void **state)
{
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 3, NULL);
    fg_balancer_t *b = fg_balancer_new(cl, 1);
    atomic_store(&fx.h[1].admin, FG_ADMIN_DRAIN);
    int hits[N] = {0};
    run(b, cl, 30, hits);
    assert_int_equal(hits[1], 0);
    assert_int_equal(hits[0] + hits[2], 30);
    fg_balancer_free(b);
}

/* Weights with a common divisor make the period they would make without it. */
static void test_round_robin_large_weights(void **state)
{
    int w[] = {300, 100};
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 2, w);
    fg_balancer_t *b = fg_balancer_new(cl, 1);
    fg_pick_t pk = {1000, NULL, -1};
    int seq[4];
    for (int i = 0; i < 4; i++)
        seq[i] = fg_balancer_select(b, cl, &pk, NULL);
    int want[] = {0, 0, 1, 0};
    assert_memory_equal(seq, want, sizeof(want));
    fg_balancer_free(b);
}

/* Two candidates left, far apart in a 1,002-step sequence: the choice takes a bounded walk
 * and falls back to a draw by weight, still spreading evenly and never picking the drained. */
static void test_round_robin_bounded_walk(void **state)
{
    int w[] = {1000, 1, 1};
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 3, w);
    fg_balancer_t *b = fg_balancer_new(cl, 7);
    atomic_store(&fx.h[0].admin, FG_ADMIN_DRAIN);
    int hits[N] = {0};
    run(b, cl, 2000, hits);
    assert_int_equal(hits[0], 0);
    assert_true(hits[1] > 900 && hits[1] < 1100);
    assert_int_equal(hits[1] + hits[2], 2000);
    assert_int_equal(atomic_load(&fx.hc.rr), 2000);
    fg_balancer_free(b);
}

static void test_random_weighted(void **state)
{
    int w[] = {3, 1};
    fg_cluster_t *cl = make(FG_LB_RANDOM, 2, w);
    fg_balancer_t *b = fg_balancer_new(cl, 42);
    int hits[N] = {0};
    run(b, cl, 20000, hits);
    double share = hits[0] / 20000.0;
    assert_true(share > 0.73 && share < 0.77);
    fg_balancer_free(b);
}

static void test_power_of_two_prefers_less_loaded_per_weight(void **state)
{
    int w[] = {1, 1};
    fg_cluster_t *cl = make(FG_LB_POWER_OF_TWO, 2, w);
    fg_balancer_t *b = fg_balancer_new(cl, 7);
    atomic_store(&fx.h[0].inflight, 10);
    int hits[N] = {0};
    run(b, cl, 100, hits);
    assert_int_equal(hits[1], 100);
    /* weight 4 with 10 in flight (2.5 per unit) beats weight 1 with 3 */
    fx.d[0].weight = 4;
    atomic_store(&fx.h[1].inflight, 3);
    memset(hits, 0, sizeof(hits));
    run(b, cl, 100, hits);
    assert_int_equal(hits[0], 100);
    /* equal loads: weights decide */
    atomic_store(&fx.h[0].inflight, 0);
    atomic_store(&fx.h[1].inflight, 0);
    fx.d[0].weight = 3;
    memset(hits, 0, sizeof(hits));
    run(b, cl, 20000, hits);
    assert_true(hits[0] / 20000.0 > 0.73 && hits[0] / 20000.0 < 0.77);
    fg_balancer_free(b);
}

static void test_least_requests(void **state)
{
    fg_cluster_t *cl = make(FG_LB_LEAST_REQUESTS, 4, NULL);
    fg_balancer_t *b = fg_balancer_new(cl, 3);
    atomic_store(&fx.h[0].inflight, 5);
    atomic_store(&fx.h[1].inflight, 2);
    atomic_store(&fx.h[2].inflight, 1);
    atomic_store(&fx.h[3].inflight, 4);
    int hits[N] = {0};
    run(b, cl, 50, hits);
    assert_int_equal(hits[2], 50);
    /* a dead worker's negative transient never makes a destination look better than idle */
    atomic_store(&fx.h[0].inflight, -3);
    atomic_store(&fx.h[2].inflight, 0);
    memset(hits, 0, sizeof(hits));
    run(b, cl, 200, hits);
    assert_true(hits[0] > 0 && hits[2] > 0 && hits[1] == 0 && hits[3] == 0);
    fg_balancer_free(b);
}

static void test_first_alphabetical(void **state)
{
    fg_cluster_t *cl = make(FG_LB_FIRST_ALPHABETICAL, 4, NULL);
    fg_balancer_t *b = fg_balancer_new(cl, 3);
    fg_pick_t pk = {1000, NULL, -1};
    assert_int_equal(fg_balancer_select(b, cl, &pk, NULL), 3); /* "a" */
    atomic_store(&fx.h[3].active, FG_HS_UNHEALTHY);
    assert_int_equal(fg_balancer_select(b, cl, &pk, NULL), 2); /* "b" */
    uint64_t failed = 1u << 2;
    pk.tried = &failed;
    assert_int_equal(fg_balancer_select(b, cl, &pk, NULL), 1); /* "c" */
    fg_balancer_free(b);
}

static void test_panic_and_healthy_and_unknown(void **state)
{
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 2, NULL);
    fg_balancer_t *b = fg_balancer_new(cl, 3);
    fg_pick_t pk = {1000, NULL, -1};
    atomic_store(&fx.h[0].active, FG_HS_UNHEALTHY);
    atomic_store(&fx.h[1].passive_until_ms, 2000);
    int panic = 0;
    /* HealthyOrPanic: all unhealthy, so any ready one */
    assert_true(fg_balancer_select(b, cl, &pk, &panic) >= 0);
    assert_int_equal(panic, 1);
    cl->health.availability = FG_AVAIL_HEALTHY_AND_UNKNOWN;
    assert_int_equal(fg_balancer_select(b, cl, &pk, &panic), -1);
    /* passive unhealthiness ends with reactivation */
    pk.now_ms = 2000;
    assert_int_equal(fg_balancer_select(b, cl, &pk, &panic), 1);
    assert_int_equal(panic, 0);
    /* maintenance is never chosen, not even in panic */
    cl->health.availability = FG_AVAIL_HEALTHY_OR_PANIC;
    atomic_store(&fx.h[1].admin, FG_ADMIN_MAINT);
    atomic_store(&fx.h[0].admin, FG_ADMIN_MAINT);
    assert_int_equal(fg_balancer_select(b, cl, &pk, &panic), -1);
    fg_balancer_free(b);
}

static void test_avoid_and_disabled(void **state)
{
    fg_cluster_t *cl = make(FG_LB_RANDOM, 3, NULL);
    fg_balancer_t *b = fg_balancer_new(cl, 9);
    fx.d[2].enabled = 0;
    fg_pick_t pk = {1000, NULL, 0};
    for (int i = 0; i < 50; i++)
        assert_int_equal(fg_balancer_select(b, cl, &pk, NULL), 1);
    /* avoid is a preference: the only one left is still returned */
    uint64_t failed = 2;
    pk.tried = &failed;
    assert_int_equal(fg_balancer_select(b, cl, &pk, NULL), 0);
    fg_balancer_free(b);
}

static void test_without_shared_state(void **state)
{
    fg_cluster_t *cl = make(FG_LB_ROUND_ROBIN, 2, NULL);
    cl->state = NULL;
    fx.d[0].state = fx.d[1].state = NULL;
    fg_balancer_t *b = fg_balancer_new(cl, 1);
    int hits[N] = {0};
    run(b, cl, 10, hits);
    assert_int_equal(hits[0], 5);
    assert_int_equal(fg_balancer_inflight(cl, 0), 0);
    fg_balancer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_smooth_weighted),
        cmocka_unit_test(test_round_robin_skips_unavailable),
        cmocka_unit_test(test_round_robin_large_weights),
        cmocka_unit_test(test_round_robin_bounded_walk),
        cmocka_unit_test(test_random_weighted),
        cmocka_unit_test(test_power_of_two_prefers_less_loaded_per_weight),
        cmocka_unit_test(test_least_requests),
        cmocka_unit_test(test_first_alphabetical),
        cmocka_unit_test(test_panic_and_healthy_and_unknown),
        cmocka_unit_test(test_avoid_and_disabled),
        cmocka_unit_test(test_without_shared_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
