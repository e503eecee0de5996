#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "shm/ratelimit.h"
#include "worker/admission/ratelimit.h"

/* Requests at `now` until one is denied; returns how many passed (bounded). */
static int pass_count(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now, int max,
                      fg_rl_result_t *last)
{
    for (int i = 0; i < max; i++) {
        fg_rl_check(p, s, now, last);
        if (!last->allowed)
            return i;
    }
    return max;
}

static void test_fixed_window(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_FIXED, 100, 60000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    uint64_t t0 = 1000000;
    fg_rl_check(&p, &s, t0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 99);
    assert_int_equal(r.reset_ms, 60000);
    /* The window starts at the key's first request: 99 more pass, then none. */
    assert_int_equal(pass_count(&p, &s, t0 + 30000, 1000, &r), 99);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_ms, 30000);
    assert_int_equal(r.limit, 100);
    /* Still denied 1 ms before the window ends, whole again at its end. */
    fg_rl_check(&p, &s, t0 + 59999, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_ms, 1);
    assert_int_equal(pass_count(&p, &s, t0 + 60000, 1000, &r), 100);
    /* A long idle gap starts a fresh window aligned to the old ones. */
    fg_rl_check(&p, &s, t0 + 10 * 60000 + 5, &r);
    assert_true(r.allowed);
    assert_int_equal(r.reset_ms, 60000 - 5);
}

static void test_sliding_window(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_SLIDING, 100, 60000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    uint64_t t0 = 5000;
    assert_int_equal(pass_count(&p, &s, t0, 1000, &r), 100);
    assert_false(r.allowed);
    /* At once into the next window the previous 100 still weigh fully: nothing passes. */
    assert_int_equal(pass_count(&p, &s, t0 + 60000, 1000, &r), 0);
    /* Retry-After points where the weighted previous count leaves room for one request. */
    uint64_t retry = r.retry_ms;
    assert_true(retry > 0 && retry <= 60000);
    fg_rl_check(&p, &s, t0 + 60000 + retry - 1, &r);
    assert_false(r.allowed);
    fg_rl_check(&p, &s, t0 + 60000 + retry, &r);
    assert_true(r.allowed);
    /* Half-way through the next window: previous weighs 50, so about 50 pass in total. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, t0, 1000, &r), 100);
    int n = pass_count(&p, &s, t0 + 90000, 1000, &r);
    assert_int_equal(n, 50);
    /* Two idle windows forget everything. */
    assert_int_equal(pass_count(&p, &s, t0 + 200000, 1000, &r), 100);
}

/* Denied while the current window alone is full: retry covers the rest of the window plus the
 * weighted wait in the next one. */
static void test_sliding_retry_next_window(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_SLIDING, 10, 1000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, 100, 100, &r), 10);
    assert_int_equal(r.retry_ms, 1000 + 1); /* 10 * (1000 - e) / 1000 < 10 needs e >= 1 */
    /* Reset is when the whole quota is back, never before a request passes (regression: it
     * said the end of this window, when the previous one still weighs in full) */
    assert_int_equal(r.reset_ms, 2000);
    assert_true(r.reset_ms >= r.retry_ms);
    fg_rl_check(&p, &s, 100 + 1000, &r);
    assert_false(r.allowed);
    fg_rl_check(&p, &s, 100 + 1001, &r);
    assert_true(r.allowed);
}

/* The documented worst case of the two-window counter: a full previous window spent in its last
 * millisecond weighs almost nothing late in the next window, so just under twice the limit can
 * pass within one window's span; never more than the limit inside one aligned window. */
static void test_sliding_worst_case_boundary(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_SLIDING, 100, 1000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    fg_rl_check(&p, &s, 0, &r); /* the key's windows start at 0 */
    assert_int_equal(pass_count(&p, &s, 999, 1000, &r), 99);
    /* 990 ms into the next window the previous 100 weigh 1 (rounded down): 99 more pass. */
    assert_int_equal(pass_count(&p, &s, 1990, 1000, &r), 99);
    /* At 999 ms they weigh 0.1, rounded to 0: one more, 199 within [999, 1999]. */
    assert_int_equal(pass_count(&p, &s, 1999, 1000, &r), 1);
    /* The current aligned window [1000, 2000) holds 100: the limit. */
    assert_int_equal(s.x, 100);
}

static void test_token_bucket(void **state)
{
    /* 10 per second, bursts of 20. */
    fg_rl_params_t p = {FG_RL_ALGO_TOKEN, 10, 1000, 20};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, 1000, 100, &r), 20);
    assert_int_equal(r.limit, 20);
    assert_int_equal(r.retry_ms, 100); /* one token per 100 ms */
    fg_rl_check(&p, &s, 1099, &r);
    assert_false(r.allowed);
    fg_rl_check(&p, &s, 1100, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* Half a second later: 5 tokens. */
    assert_int_equal(pass_count(&p, &s, 1600, 100, &r), 5);
    /* Refill never passes the capacity, however long the idle time. */
    assert_int_equal(pass_count(&p, &s, 1000000000, 100, &r), 20);
    assert_int_equal(r.reset_ms, 2000);
    /* burst 0 means capacity = maxRequests, and fractional refill accumulates exactly. */
    fg_rl_params_t q = {FG_RL_ALGO_TOKEN, 3, 1000, 0};
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&q, &s, 0, 100, &r), 3);
    fg_rl_check(&q, &s, 333, &r);
    assert_false(r.allowed);
    fg_rl_check(&q, &s, 334, &r);
    assert_true(r.allowed);
}

/* Workers read the clock before they take the zone lock: a reading older than the one the state
 * holds is no time elapsed, for every algorithm. It never refills a bucket nor restarts a
 * window (which admitted several times the rate under load). */
static void test_older_reading_token_bucket_no_refill(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_TOKEN, 10, 1000, 20};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, 5000, 100, &r), 20);
    assert_int_equal(pass_count(&p, &s, 4999, 100, &r), 0);
    assert_int_equal(r.retry_ms, 100);
    assert_int_equal(pass_count(&p, &s, 1000, 100, &r), 0);
    /* The refill still counts from 5000: one token 100 ms later, not more. */
    assert_int_equal(pass_count(&p, &s, 5099, 100, &r), 0);
    assert_int_equal(pass_count(&p, &s, 5100, 100, &r), 1);
    /* Interleaved readings (two workers, 1 ms apart) earn exactly the elapsed time's tokens. */
    int passed = 0;
    for (uint64_t t = 5101; t < 6100; t += 2) {
        fg_rl_check(&p, &s, t + 1, &r);
        passed += r.allowed;
        fg_rl_check(&p, &s, t, &r);
        passed += r.allowed;
    }
    assert_int_equal(passed + pass_count(&p, &s, 6100, 100, &r), 10);
}

static void test_older_reading_fixed_window_no_restart(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_FIXED, 2, 1000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, 5000, 10, &r), 2);
    assert_int_equal(pass_count(&p, &s, 4000, 10, &r), 0);
    assert_int_equal(r.retry_ms, 1000); /* the window still ends at 6000 */
    assert_int_equal(pass_count(&p, &s, 5999, 10, &r), 0);
    /* Another worker opens the next window at 6000; a reading of 5999 taken before it counts
     * in that window, which the two requests then fill. */
    assert_int_equal(pass_count(&p, &s, 6000, 1, &r), 1);
    assert_int_equal(pass_count(&p, &s, 5999, 10, &r), 1);
    assert_int_equal(pass_count(&p, &s, 6999, 10, &r), 0);
    assert_int_equal(pass_count(&p, &s, 7000, 10, &r), 2);
}

static void test_older_reading_sliding_window_no_restart(void **state)
{
    fg_rl_params_t p = {FG_RL_ALGO_SLIDING, 2, 1000, 0};
    fg_rl_state_t s;
    fg_rl_result_t r;
    memset(&s, 0, sizeof(s));
    assert_int_equal(pass_count(&p, &s, 5000, 10, &r), 2);
    assert_int_equal(pass_count(&p, &s, 4000, 10, &r), 0);
    assert_int_equal(pass_count(&p, &s, 5999, 10, &r), 0);
    /* At 6000 the previous window weighs fully; a reading of 5999 after it changes nothing. */
    assert_int_equal(pass_count(&p, &s, 6000, 10, &r), 0);
    assert_int_equal(pass_count(&p, &s, 5999, 10, &r), 0);
    /* Half-way through, the previous window's 2 weigh 1: one more passes, as without the
     * older readings. */
    assert_int_equal(pass_count(&p, &s, 6500, 10, &r), 1);
    assert_int_equal(pass_count(&p, &s, 6000, 10, &r), 0);
}

static void test_glob(void **state)
{
    fg_rl_pattern_t any = {0}, pre = {2, "/api/", 5, {{{0}}, {{0}}}},
                    suf = {3, ".json", 5, {{{0}}, {{0}}}}, ex = {1, "/login", 6, {{{0}}, {{0}}}};
    assert_true(fg_ratelimit_glob(&any, "", 0));
    assert_true(fg_ratelimit_glob(&pre, "/API/x", 6));
    assert_false(fg_ratelimit_glob(&pre, "/ap", 3));
    assert_true(fg_ratelimit_glob(&suf, "/a.JSON", 7));
    assert_false(fg_ratelimit_glob(&suf, "/a.jso", 6));
    assert_true(fg_ratelimit_glob(&ex, "/login", 6));
    assert_false(fg_ratelimit_glob(&ex, "/login2", 7));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_window),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_sliding_retry_next_window),
        cmocka_unit_test(test_sliding_worst_case_boundary),
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_older_reading_token_bucket_no_refill),
        cmocka_unit_test(test_older_reading_fixed_window_no_restart),
        cmocka_unit_test(test_older_reading_sliding_window_no_restart),
        cmocka_unit_test(test_glob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
