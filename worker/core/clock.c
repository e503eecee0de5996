#include "worker/core/clock.h"

#include <time.h>

#include <event2/event.h>

/* The per-process reading cache. Like the signal flags this is process state outside shm/: it
 * is a cache of the kernel's clock, owned by the loop that drives it, never shared. */
static struct {
    struct event_base *base; /* the loop driven by fg_clock_loop_once, NULL between turns */
    int mono_ok, wall_ok;
    uint64_t mono_us;
    struct timeval wall;
    struct timeval poll;   /* libevent's cached time when the readings were taken */
    uint32_t *busy;        /* fg_clock_busy_flag */
    const uint64_t *owner; /* the slot's owner word: busy is written while it holds gen */
    uint64_t gen;
} clk;

/* One EVLOOP_ONCE call does not return while callbacks keep activating events (event_active),
 * so a busy loop can stay inside one call for seconds. A base from fg_clock_base_new polls
 * again after DISPATCH_MAX callbacks, and libevent refreshes its cached time after every poll:
 * a change in it marks the readings stale. It serves only as that marker: its value is never
 * returned. */
static void sync_poll(void)
{
    struct timeval tv;
    if (clk.base == NULL || event_base_gettimeofday_cached(clk.base, &tv) != 0)
        return;
    if (tv.tv_sec != clk.poll.tv_sec || tv.tv_usec != clk.poll.tv_usec) {
        clk.poll = tv;
        clk.mono_ok = clk.wall_ok = 0;
    }
}

uint64_t fg_clock_now_us(void)
{
    sync_poll();
    if (!clk.mono_ok) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        clk.mono_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        clk.mono_ok = clk.base != NULL;
    }
    return clk.mono_us;
}

uint64_t fg_clock_now_ms(void)
{
    return fg_clock_now_us() / 1000u;
}

void fg_clock_wall(struct timeval *tv)
{
    sync_poll();
    if (!clk.wall_ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        clk.wall.tv_sec = ts.tv_sec;
        clk.wall.tv_usec = (suseconds_t)(ts.tv_nsec / 1000);
        clk.wall_ok = clk.base != NULL;
    }
    *tv = clk.wall;
}

uint64_t fg_clock_wall_ms(void)
{
    struct timeval tv;
    fg_clock_wall(&tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* Callbacks run between two polls at most: bounds how stale a reading gets in a busy turn (and
 * lets sockets that became ready meanwhile join the queue). A poll that finds nothing new costs
 * one epoll_wait with a zero timeout. */
#define DISPATCH_MAX 64

struct event_base *fg_clock_base_new(void)
{
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return NULL;
    event_config_avoid_method(ec, "select");
    event_config_avoid_method(ec, "poll");
    struct event_base *base = NULL;
    if (event_config_set_max_dispatch_interval(ec, NULL, DISPATCH_MAX, 0) == 0)
        base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

/* Whether the busy word is this process's to write: not while a worker of another generation
 * holds the slot (a reload's new worker claims it as it starts; the master gives it back when
 * that reload is abandoned). */
static int owned(void)
{
    return clk.owner == NULL || __atomic_load_n(clk.owner, __ATOMIC_RELAXED) == clk.gen;
}

int fg_clock_loop_once(struct event_base *base)
{
    /* Stale before the wait: no callback runs before epoll returns, so the first reading of the
     * turn is taken after the wake-up. */
    clk.base = base;
    clk.mono_ok = clk.wall_ok = 0;
    if (clk.busy != NULL && owned())
        __atomic_store_n(clk.busy, 0, __ATOMIC_RELAXED);
    int rc = event_base_loop(base, EVLOOP_ONCE);
    /* Between turns (start-up after a nested wait, teardown) every reading is a fresh one. */
    clk.base = NULL;
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

void fg_clock_busy_flag(uint32_t *flag, const uint64_t *owner, uint64_t gen)
{
    clk.busy = flag;
    clk.owner = owner;
    clk.gen = gen;
}

void fg_clock_busy(void)
{
    /* Stored once per turn: the word shares a cache line with the other workers' words. */
    if (clk.busy != NULL && __atomic_load_n(clk.busy, __ATOMIC_RELAXED) == 0 && owned())
        __atomic_store_n(clk.busy, 1, __ATOMIC_RELAXED);
}
