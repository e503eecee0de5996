/* Rate-limit algorithms on a fixed 32-byte state, with the clock passed in (tests inject it).
 * The state lives in a shm/hash.c entry and is updated under that table's lock, which is what
 * makes a limit exact across workers. Each algorithm keeps bounded memory per key.
 *
 * FixedWindow: a counter per window; windows start at a key's first request (not at the epoch,
 * so a fresh key gets a whole window). Exact within a window; up to 2x the limit can pass across
 * a window boundary (the end of one and the start of the next).
 * SlidingWindow: two-window weighted counter. The estimate is
 *   current + floor(previous * (window - elapsed) / window);
 * a request passes when the estimate is below the limit. It assumes the previous window's
 * requests were spread evenly: exact then, and never more than the limit within one aligned
 * window; worst case (the previous window's quota spent in its last millisecond) just under
 * twice the limit within one window's span (tests/unit/test_ratelimit.c pins that bound).
 * TokenBucket: capacity `burst` tokens, refilled continuously at `limit` per window, one token
 * per request; integer arithmetic in units of 1/window of a token, so no drift. */
#ifndef FG_SHM_RATELIMIT_H
#define FG_SHM_RATELIMIT_H

#include <stdint.h>

enum { FG_RL_ALGO_SLIDING = 0, FG_RL_ALGO_FIXED = 1, FG_RL_ALGO_TOKEN = 2 };

typedef struct {
    int algo;
    uint64_t limit;     /* maxRequests per window (> 0) */
    uint64_t window_ms; /* > 0 */
    uint64_t burst;     /* token bucket capacity; 0 = limit */
} fg_rl_params_t;

typedef struct {
    uint64_t t; /* window start, or last refill */
    uint64_t x; /* current count, or tokens (scaled) */
    uint64_t y; /* previous window's count */
    uint64_t init;
} fg_rl_state_t;

typedef struct {
    int allowed;
    uint64_t limit;
    uint64_t remaining; /* requests that would still pass now */
    uint64_t reset_ms;  /* until the quota is whole again (window end, or bucket full) */
    uint64_t retry_ms;  /* when denied: until a request would pass */
} fg_rl_result_t;

/* Count one request at now_ms against state s. A now_ms older than the time s holds (another
 * worker read the clock later but took the lock first) counts as no time elapsed. */
void fg_rl_check(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now_ms, fg_rl_result_t *r);

#endif
