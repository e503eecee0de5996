/* The worker's clock: monotonic and wall time read from the kernel at most once per poll.
 *
 * libevent 2.1 has no prepare/check hook, so the worker drives its loop one turn at a time
 * (fg_clock_loop_once). A turn may poll many times without returning (while callbacks keep
 * activating events; fg_clock_base_new bounds the callbacks between two polls), so a reading is
 * also marked stale whenever libevent's cached time, which it refreshes after every poll, has
 * changed. The first reader after a poll asks the kernel,
 * every later reader before the next poll gets that value: a reading is never older than the
 * wake-up that started the callbacks running, which is what timeouts and latency figures need.
 * libevent's cached time itself is never returned: it is wall time rebuilt from an offset
 * resynchronised every few seconds, and can step backwards.
 *
 * Outside a driven loop turn (the master, unit tests, start-up, between turns) every call
 * reads the kernel. */
#ifndef FG_CLOCK_H
#define FG_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

struct event_base;

/* Monotonic microseconds / milliseconds (CLOCK_MONOTONIC). */
uint64_t fg_clock_now_us(void);
uint64_t fg_clock_now_ms(void);
/* Wall clock (CLOCK_REALTIME), for dates and log timestamps only: never for intervals. */
void fg_clock_wall(struct timeval *tv);
uint64_t fg_clock_wall_ms(void);

/* An epoll event base whose loop polls again after a bounded number of callbacks, so that
 * readings stay fresh while callbacks keep activating events. NULL on failure. */
struct event_base *fg_clock_base_new(void);
/* One loop turn: event_base_loop(base, EVLOOP_ONCE), with the readings taken by its callbacks
 * cached from the first one on. Returns event_base_loop's result. */
int fg_clock_loop_once(struct event_base *base);
/* Run base until loopexit/loopbreak or no events are left, one fg_clock_loop_once at a time. */
int fg_clock_dispatch(struct event_base *base);

/* Where the loop says whether it is waiting for events (0) or running callbacks (1): the
 * worker's busy word of the balancing page (master/balance.h), read by the kernel's choice of
 * a listening socket for each SYN. fg_clock_loop_once stores 0 before it waits; the I/O
 * callbacks call fg_clock_busy, which stores 1 once per turn. Timer callbacks do not: libevent
 * 2.1 runs them without a hook common to all of them, and they are short (timeouts, ticks,
 * flushes), so a turn of timers alone counts as waiting. NULL (the default): nowhere.
 * With owner, only while *owner == gen: the slot's word then belongs to another generation's
 * worker. */
void fg_clock_busy_flag(uint32_t *flag, const uint64_t *owner, uint64_t gen);
void fg_clock_busy(void);

#endif
