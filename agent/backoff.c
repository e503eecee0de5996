#include "agent/backoff.h"

#include <time.h>
#include <unistd.h>

void fg_backoff_init(fg_backoff_t *b, uint64_t initial_ms, uint64_t max_ms, double jitter,
                     uint64_t seed)
{
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    }
    b->initial_ms = initial_ms ? initial_ms : 1;
    b->max_ms = max_ms < b->initial_ms ? b->initial_ms : max_ms;
    b->jitter = jitter < 0 ? 0 : jitter > 1 ? 1 : jitter;
    b->attempt = 0;
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t fg_backoff_base(const fg_backoff_t *b)
{
    uint64_t d = b->initial_ms;
    /* Doubling stops at the cap, so the shift never overflows however long the outage. */
    for (unsigned i = 0; i < b->attempt && d < b->max_ms; i++)
        d *= 2;
    return d < b->max_ms ? d : b->max_ms;
}

/* A uniform draw in [0, 1) from xorshift64*: reconnect timing needs spread, not secrecy. */
static double uniform(fg_backoff_t *b)
{
    uint64_t x = b->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return (double)((x * 0x2545f4914f6cdd1dull) >> 11) / (double)(1ull << 53);
}

uint64_t fg_backoff_next(fg_backoff_t *b)
{
    uint64_t base = fg_backoff_base(b);
    if (b->attempt < 64)
        b->attempt++;
    double d = (double)base * (1.0 - b->jitter * uniform(b));
    uint64_t ms = (uint64_t)d;
    return ms > 0 ? ms : 1;
}

void fg_backoff_reset(fg_backoff_t *b)
{
    b->attempt = 0;
}
