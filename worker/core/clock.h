/* The worker's clock: monotonic and wall time read from the kernel at most once per loop turn.
 *
 * libevent 2.1 has no prepare/check hook, so the worker drives its loop one turn at a time
 * (fg_clock_loop_once) and each turn marks the cached readings stale; the first reader after the
 * wait asks the kernel, every later reader in the same turn gets that value. A reading is thus
 * never older than the wake-up that started the callbacks running, which is what timeouts and
 * latency figures need. libevent's own cached time (event_base_gettimeofday_cached) is not used
 * for timeouts: it is wall time rebuilt from an offset resynchronised every few seconds, and can
 * step backwards.
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

/* One loop turn: event_base_loop(base, EVLOOP_ONCE), with the readings taken by its callbacks
 * cached from the first one on. Returns event_base_loop's result. */
int fg_clock_loop_once(struct event_base *base);
/* Run base until loopexit/loopbreak or no events are left, one fg_clock_loop_once at a time. */
int fg_clock_dispatch(struct event_base *base);

#endif
