/* The worker's layer seams: the clock read once per loop turn (worker/core/clock.c), the
 * protocol-neutral session list front ends register with (worker/core/frontend.c), and the
 * per-request pools with their worker-wide spares (worker/http/request.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <event2/event.h>

#include "common/pool.h"
#include "worker/core/clock.h"
#include "worker/core/frontend.h"
#include "worker/http/request.h"

/* ---- clock ---- */

static void spin_ms(unsigned ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct {
    uint64_t first, second, wall_first, wall_second;
    int runs;
} turn_t;

/* Two readings in one callback, a sleep between them: one turn, one value. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    turn_t *t = arg;
    t->first = fg_clock_now_us();
    t->wall_first = fg_clock_wall_ms();
    spin_ms(5);
    t->second = fg_clock_now_us();
    t->wall_second = fg_clock_wall_ms();
    t->runs++;
}

static void test_clock_once_per_turn(void **state)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    turn_t t = {0};
    struct event *ev = evtimer_new(base, on_timer, &t);
    struct timeval tv = {0, 20000};
    evtimer_add(ev, &tv);
    uint64_t before = fg_clock_now_us();
    assert_int_equal(fg_clock_dispatch(base), 0);
    assert_int_equal(t.runs, 1);
    assert_true(t.first == t.second);
    assert_true(t.wall_first == t.wall_second);
    /* Read after the wait, not before it: the timer fired 20 ms after `before`. */
    assert_true(t.first >= before + 19000);
    /* Outside the loop every call reads the kernel again. */
    uint64_t a = fg_clock_now_us();
    spin_ms(2);
    assert_true(fg_clock_now_us() >= a + 1500);
    event_free(ev);
    event_base_free(base);
}

static void on_second(evutil_socket_t fd, short what, void *arg)
{
    uint64_t *v = arg;
    *v = fg_clock_now_us();
}

static void test_clock_fresh_each_turn(void **state)
{
    struct event_base *base = event_base_new();
    uint64_t v1 = 0, v2 = 0;
    struct event *e1 = evtimer_new(base, on_second, &v1);
    struct event *e2 = evtimer_new(base, on_second, &v2);
    struct timeval t1 = {0, 5000}, t2 = {0, 30000};
    evtimer_add(e1, &t1);
    evtimer_add(e2, &t2);
    assert_int_equal(fg_clock_dispatch(base), 0);
    assert_true(v2 >= v1 + 20000);
    event_free(e1);
    event_free(e2);
    event_base_free(base);
}

/* ---- front ends ---- */

typedef struct {
    fg_session_t s;
    fg_worker_t *w;
    int idle, retired, closed;
} fake_session_t;

static void fake_retire(fg_session_t *s)
{
    ((fake_session_t *)s)->retired++;
}

static void fake_close(fg_session_t *s)
{
    fake_session_t *f = (fake_session_t *)s;
    f->closed++;
    fg_frontend_remove(f->w, s);
}

static void fake_close_idle(fg_session_t *s)
{
    if (((fake_session_t *)s)->idle)
        fake_close(s);
}

static int released;
static void fake_release(fg_worker_t *w)
{
    released++;
}

static const fg_frontend_t fake_fe = {
    .name = "fake",
    .slot = 1,
    .retire = fake_retire,
    .close_idle = fake_close_idle,
    .close = fake_close,
    .release = fake_release,
};

static void test_frontend_sessions(void **state)
{
    fg_worker_t w;
    memset(&w, 0, sizeof(w));
    w.base = event_base_new();
    fake_session_t s[4];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < 4; i++) {
        s[i].w = &w;
        s[i].idle = i % 2; /* 1 and 3 are idle */
        fg_frontend_add(&w, &s[i].s, &fake_fe);
    }
    assert_int_equal(w.nconns, 4);
    fg_frontend_retire_all(&w);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s[i].retired, 1);
    /* Closing while walking the list: every idle session closes, the others stay. */
    fg_frontend_close_idle(&w);
    assert_int_equal(w.nconns, 2);
    assert_int_equal(s[1].closed + s[3].closed, 2);
    assert_int_equal(s[0].closed + s[2].closed, 0);
    const fg_frontend_t *fes[] = {&fake_fe};
    released = 0;
    fg_frontend_close_all(&w, fes, 1);
    assert_int_equal(w.nconns, 0);
    assert_null(w.sessions);
    assert_int_equal(s[0].closed + s[2].closed, 2);
    assert_int_equal(released, 1);
    event_base_free(w.base);
}

/* A retiring worker leaves its loop when its last session goes. */
static void on_close_last(evutil_socket_t fd, short what, void *arg)
{
    fake_session_t *f = arg;
    fake_close(&f->s);
}

static void on_never(evutil_socket_t fd, short what, void *arg)
{
    fail_msg("the loop outlived its last session");
}

static void test_frontend_retiring_exit(void **state)
{
    fg_worker_t w;
    memset(&w, 0, sizeof(w));
    w.base = event_base_new();
    fake_session_t f = {.w = &w};
    fg_frontend_add(&w, &f.s, &fake_fe);
    w.retiring = 1;
    struct event *close_ev = evtimer_new(w.base, on_close_last, &f);
    /* Keeps the loop busy well past the close: only the loop exit can end the dispatch. */
    struct event *keep = event_new(w.base, -1, EV_PERSIST, on_never, NULL);
    struct timeval t = {0, 1000}, forever = {60, 0};
    evtimer_add(close_ev, &t);
    event_add(keep, &forever);
    uint64_t start = fg_clock_now_us();
    assert_int_equal(fg_clock_dispatch(w.base), 0);
    assert_true(fg_clock_now_us() - start < 10 * 1000000u);
    assert_int_equal(w.nconns, 0);
    event_free(close_ev);
    event_free(keep);
    event_base_free(w.base);
}

/* ---- per-request pools ---- */

static void test_request_pools(void **state)
{
    fg_worker_t w;
    memset(&w, 0, sizeof(w));
    fg_pool_t *a = fg_request_pool_take(&w);
    assert_non_null(a);
    char *p = fg_pool_alloc(a, 100);
    assert_non_null(p);
    fg_request_pool_give(&w, a);
    assert_int_equal(w.nrequest_pools, 1);
    /* Keep-alive traffic: the next request gets the same, reset pool. */
    fg_pool_t *b = fg_request_pool_take(&w);
    assert_ptr_equal(a, b);
    assert_int_equal(w.nrequest_pools, 0);
    assert_ptr_equal(fg_pool_alloc(b, 100), p);
    /* Many requests at once (HTTP/2): each its own pool; the spares stay bounded. */
    fg_pool_t *many[FG_REQUEST_POOL_SPARES + 8];
    many[0] = b;
    for (size_t i = 1; i < sizeof(many) / sizeof(many[0]); i++) {
        many[i] = fg_request_pool_take(&w);
        assert_non_null(many[i]);
        assert_ptr_not_equal(many[i], many[i - 1]);
    }
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
        fg_request_pool_give(&w, many[i]);
    assert_int_equal(w.nrequest_pools, FG_REQUEST_POOL_SPARES);
    fg_request_pool_give(&w, NULL);
    fg_request_pools_free(&w);
    assert_int_equal(w.nrequest_pools, 0);
    /* Without a worker (unit tests, tools): plain new and free. */
    fg_pool_t *c = fg_request_pool_take(NULL);
    assert_non_null(c);
    fg_request_pool_give(NULL, c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_once_per_turn), cmocka_unit_test(test_clock_fresh_each_turn),
        cmocka_unit_test(test_frontend_sessions),   cmocka_unit_test(test_frontend_retiring_exit),
        cmocka_unit_test(test_request_pools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
