#include "shm/ratelimit.h"

/* Move a window-based state forward to the window holding now. */
static void advance(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now)
{
    uint64_t w = p->window_ms;
    if (!s->init) {
        s->init = 1;
        s->t = now;
        s->x = s->y = 0;
        return;
    }
    if (now - s->t < w)
        return;
    uint64_t windows = (now - s->t) / w;
    s->y = windows == 1 ? s->x : 0;
    s->x = 0;
    s->t += windows * w;
}

static void fixed(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now, fg_rl_result_t *r)
{
    advance(p, s, now);
    uint64_t end = s->t + p->window_ms - now;
    r->reset_ms = end;
    if (s->x < p->limit) {
        s->x++;
        r->allowed = 1;
        r->remaining = p->limit - s->x;
        return;
    }
    r->remaining = 0;
    r->retry_ms = end;
}

/* Elapsed time into a window from which prev * (w - e) / w + cur < limit holds (cur < limit). */
static uint64_t sliding_pass_at(uint64_t w, uint64_t prev, uint64_t cur, uint64_t limit)
{
    if (prev == 0)
        return 0;
    /* prev * (w - e) < (limit - cur) * w  <=>  w - e <= ((limit - cur) * w - 1) / prev */
    uint64_t room = ((limit - cur) * w - 1) / prev;
    return room >= w ? 0 : w - room;
}

static void sliding(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now, fg_rl_result_t *r)
{
    advance(p, s, now);
    uint64_t w = p->window_ms, e = now - s->t;
    /* 128-bit product: limits and windows are configuration-sized, counts are bounded by them,
     * but prev * w can pass 2^64 for large windows. */
    unsigned __int128 weighted = (unsigned __int128)s->y * (w - e) / w;
    uint64_t est = s->x + (weighted > UINT64_MAX - s->x ? UINT64_MAX - s->x : (uint64_t)weighted);
    if (est < p->limit) {
        s->x++;
        r->allowed = 1;
        r->remaining = p->limit - est - 1;
    }
    /* The quota is whole again once neither window weighs: the previous one stops counting at
     * the end of this one, this one's count only at the end of the next. */
    r->reset_ms = s->x > 0 ? (w - e) + w : s->y > 0 ? w - e : 0;
    if (r->allowed)
        return;
    r->remaining = 0;
    if (s->x < p->limit) {
        uint64_t at = sliding_pass_at(w, s->y, s->x, p->limit);
        r->retry_ms = at > e ? at - e : 1;
    } else {
        /* Not before the next window, where this window's count becomes the previous one. */
        r->retry_ms = (w - e) + sliding_pass_at(w, s->x, 0, p->limit);
    }
}

static void token(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now, fg_rl_result_t *r)
{
    uint64_t w = p->window_ms, burst = p->burst ? p->burst : p->limit;
    uint64_t cap = burst * w; /* one token = w units; refill = limit units per ms */
    if (!s->init) {
        s->init = 1;
        s->x = cap;
    } else {
        uint64_t el = now - s->t;
        uint64_t full = (cap - (s->x < cap ? s->x : cap)) / p->limit + 1;
        if (el > full)
            el = full;
        s->x += el * p->limit;
        if (s->x > cap)
            s->x = cap;
    }
    s->t = now;
    if (s->x >= w) {
        s->x -= w;
        r->allowed = 1;
    } else {
        r->retry_ms = (w - s->x + p->limit - 1) / p->limit;
    }
    r->remaining = s->x / w;
    r->reset_ms = (cap - s->x + p->limit - 1) / p->limit;
}

void fg_rl_check(const fg_rl_params_t *p, fg_rl_state_t *s, uint64_t now_ms, fg_rl_result_t *r)
{
    /* Workers read the clock before they take the zone lock, so a reading a little older than
     * the one another worker just stored is normal: no time has elapsed for this state. Time
     * never runs back for it, so it never refills a bucket or restarts a window. The stored
     * time is always a reading of the same monotonic clock (or a window start before one), so
     * it is never ahead of the newest reading. */
    if (s->init && now_ms < s->t)
        now_ms = s->t;
    *r = (fg_rl_result_t){.limit = p->algo == FG_RL_ALGO_TOKEN && p->burst ? p->burst : p->limit};
    switch (p->algo) {
    case FG_RL_ALGO_FIXED:
        fixed(p, s, now_ms, r);
        break;
    case FG_RL_ALGO_TOKEN:
        token(p, s, now_ms, r);
        break;
    default:
        sliding(p, s, now_ms, r);
        break;
    }
}
