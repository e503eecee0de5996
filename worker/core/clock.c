#include "worker/core/clock.h"

#include <time.h>

#include <event2/event.h>

/* The per-process reading cache. Like the signal flags this is process state outside shm/: it
 * is a cache of the kernel's clock, owned by the loop that drives it, never shared. */
static struct {
    int driven; /* inside fg_clock_loop_once: readings are cached for the turn */
    int mono_ok, wall_ok;
    uint64_t mono_us;
    struct timeval wall;
} clk;

uint64_t fg_clock_now_us(void)
{
    if (!clk.mono_ok) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        clk.mono_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        clk.mono_ok = clk.driven;
    }
    return clk.mono_us;
}

uint64_t fg_clock_now_ms(void)
{
    return fg_clock_now_us() / 1000u;
}

void fg_clock_wall(struct timeval *tv)
{
    if (!clk.wall_ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        clk.wall.tv_sec = ts.tv_sec;
        clk.wall.tv_usec = (suseconds_t)(ts.tv_nsec / 1000);
        clk.wall_ok = clk.driven;
    }
    *tv = clk.wall;
}

uint64_t fg_clock_wall_ms(void)
{
    struct timeval tv;
    fg_clock_wall(&tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

int fg_clock_loop_once(struct event_base *base)
{
    /* Stale before the wait: no callback runs before epoll returns, so the first reading of the
     * turn is taken after the wake-up. */
    clk.driven = 1;
    clk.mono_ok = clk.wall_ok = 0;
    int rc = event_base_loop(base, EVLOOP_ONCE);
    /* Between turns (start-up after a nested wait, teardown) every reading is a fresh one. */
    clk.driven = 0;
    clk.mono_ok = clk.wall_ok = 0;
    return rc;
}

int fg_clock_dispatch(struct event_base *base)
{
    for (;;) {
        int rc = fg_clock_loop_once(base);
        if (rc != 0 || event_base_got_exit(base) || event_base_got_break(base))
            return rc < 0 ? -1 : 0;
    }
}
