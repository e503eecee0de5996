/* Reconnect delays of the tunnel agent: exponential backoff with jitter and a cap. The n-th
 * failed attempt in a row (n from 0) waits a delay drawn uniformly from
 * [base * (1 - jitter), base], base = min(initial * 2^n, max): the cap is never passed, and
 * agents cut off together (a gateway restart) spread their retries instead of arriving in
 * step. A connection that stayed up resets the sequence (fg_backoff_reset). */
#ifndef FG_AGENT_BACKOFF_H
#define FG_AGENT_BACKOFF_H

#include <stdint.h>

typedef struct {
    uint64_t initial_ms; /* > 0 */
    uint64_t max_ms;     /* >= initial_ms */
    double jitter;       /* 0 .. 1 */
    unsigned attempt;    /* failed attempts since the last reset */
    uint64_t rng;        /* xorshift64* state, never 0 */
} fg_backoff_t;

/* seed 0 takes one from the clock and the pid. */
void fg_backoff_init(fg_backoff_t *b, uint64_t initial_ms, uint64_t max_ms, double jitter,
                     uint64_t seed);
/* The delay before the next attempt; counts the attempt. */
uint64_t fg_backoff_next(fg_backoff_t *b);
/* The base (jitter-free) delay of the next attempt. */
uint64_t fg_backoff_base(const fg_backoff_t *b);
void fg_backoff_reset(fg_backoff_t *b);

#endif
