#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include <event2/event.h>

#include "worker/core/clock.h"

#define ROUNDS 200 /* more than the callbacks a base runs between two polls */

typedef struct {
    struct event *ev;
    int calls;
    uint64_t first_us, last_us;
} spin_t;

static void pause_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A callback that activates itself again, as a busy connection does: libevent polls again
 * inside the same EVLOOP_ONCE call until the chain ends. */
static void spin(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    spin_t *s = arg;
    uint64_t now = fg_clock_now_us();
    if (s->calls++ == 0)
        s->first_us = now;
    s->last_us = now;
    if (s->calls < ROUNDS) {
        pause_us(250);
        event_active(s->ev, EV_READ, 0);
    }
}

/* 200 callbacks 0.25 ms apart run inside one loop turn: the readings must follow the kernel's
 * clock (at most the callbacks between two polls behind), not stay at the turn's first one. */
static void test_readings_advance_within_one_busy_turn(void **state)
{
    (void)state;
    struct event_base *base = fg_clock_base_new();
    assert_non_null(base);
    spin_t s = {0};
    s.ev = event_new(base, -1, 0, spin, &s);
    assert_non_null(s.ev);
    event_active(s.ev, EV_READ, 0);
    uint64_t t0 = fg_clock_now_us();
    assert_int_equal(fg_clock_loop_once(base), 0);
    uint64_t t1 = fg_clock_now_us();
    assert_int_equal(s.calls, ROUNDS); /* all within the one call */
    uint64_t spent = t1 - t0;
    assert_true(spent >= (ROUNDS - 1) * 250u);
    /* The last reading is within 20 ms of the end, however coarse libevent's clock is. */
    assert_true(s.last_us - s.first_us + 20000u >= spent);
    event_free(s.ev);
    event_base_free(base);
}

static void twice(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    uint64_t *r = arg;
    r[0] = fg_clock_now_us();
    pause_us(2000);
    r[1] = fg_clock_now_us();
}

/* Readings taken after the same poll are one reading: the kernel is asked once per poll. */
static void test_readings_after_one_poll_are_equal(void **state)
{
    (void)state;
    struct event_base *base = fg_clock_base_new();
    assert_non_null(base);
    uint64_t r[2] = {0, 0};
    struct event *ev = event_new(base, -1, 0, twice, r);
    assert_non_null(ev);
    event_active(ev, EV_READ, 0);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_true(r[0] != 0);
    assert_true(r[0] == r[1]);
    /* Outside a turn every call reads the kernel. */
    uint64_t a = fg_clock_now_us();
    pause_us(2000);
    assert_true(fg_clock_now_us() >= a + 2000u);
    event_free(ev);
    event_base_free(base);
}

/* The busy word (the balancing page's, for a worker): 0 while the loop waits, 1 from the first
 * fg_clock_busy of a turn to the next turn's wait. */
typedef struct {
    uint32_t *flag;
    uint32_t seen;
} busy_probe_t;

static void probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    busy_probe_t *p = arg;
    p->seen = *p->flag;
    fg_clock_busy();
}

static void test_busy_word_follows_the_turn(void **state)
{
    (void)state;
    struct event_base *base = fg_clock_base_new();
    assert_non_null(base);
    uint32_t flag = 1;
    busy_probe_t p = {&flag, 7};
    struct event *ev = evtimer_new(base, probe, &p);
    struct timeval tv = {0, 1000};
    evtimer_add(ev, &tv);
    fg_clock_busy_flag(&flag, NULL, 0);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_int_equal(p.seen, 0); /* cleared before the wait */
    assert_int_equal(flag, 1);   /* set by the callback */
    fg_clock_busy_flag(NULL, NULL, 0);
    fg_clock_busy(); /* nowhere to write: a no-op */
    flag = 5;
    evtimer_add(ev, &tv);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_int_equal(flag, 5);
    event_free(ev);
    event_base_free(base);
}

/* While another generation's worker holds the slot, this one writes neither 0 before its wait
 * nor 1 from its callbacks; once the slot is given back it writes both again. */
static void test_busy_word_left_to_the_slot_owner(void **state)
{
    (void)state;
    struct event_base *base = fg_clock_base_new();
    assert_non_null(base);
    uint32_t flag = 1;
    uint64_t owner = 8; /* a newer worker's generation */
    busy_probe_t p = {&flag, 7};
    struct event *ev = evtimer_new(base, probe, &p);
    struct timeval tv = {0, 1000};
    fg_clock_busy_flag(&flag, &owner, 7);
    evtimer_add(ev, &tv);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_int_equal(p.seen, 1); /* the owner's 1, not cleared */
    flag = 0;
    evtimer_add(ev, &tv);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_int_equal(flag, 0); /* the owner's 0, not set */
    owner = 7;                 /* given back */
    flag = 1;
    evtimer_add(ev, &tv);
    assert_int_equal(fg_clock_loop_once(base), 0);
    assert_int_equal(p.seen, 0);
    assert_int_equal(flag, 1);
    fg_clock_busy_flag(NULL, NULL, 0);
    event_free(ev);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readings_advance_within_one_busy_turn),
        cmocka_unit_test(test_readings_after_one_poll_are_equal),
        cmocka_unit_test(test_busy_word_follows_the_turn),
        cmocka_unit_test(test_busy_word_left_to_the_slot_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
