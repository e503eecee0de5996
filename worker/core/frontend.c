#include "worker/core/frontend.h"

#include <event2/event.h>

#include "worker/core/clock.h"

void fg_frontend_accepted_one(fg_worker_t *w)
{
    if (w->lb_pending == NULL)
        return;
    /* The program adds to the word concurrently; it never goes below zero (a SYN that was
     * never steered, such as one taken before the program was attached, has nothing to undo). */
    uint32_t v = __atomic_load_n(w->lb_pending, __ATOMIC_RELAXED);
    while (v > 0 && !__atomic_compare_exchange_n(w->lb_pending, &v, v - 1, 0, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
    }
}

void fg_frontend_publish_load(fg_worker_t *w, int accepted_all)
{
    if (w->lb_open == NULL)
        return;
    /* A newer worker of this slot claimed it (reload): its counts, not ours, while it holds
     * the slot. An abandoned reload gives the slot back (the master writes our generation
     * again), and the next publication, at the latest the balancing tick, rewrites the
     * counts the other worker left. */
    if (__atomic_load_n(w->lb_owner, __ATOMIC_RELAXED) != w->generation)
        return;
    __atomic_store_n(w->lb_open, (uint32_t)w->nconns, __ATOMIC_RELAXED);
    if (accepted_all)
        __atomic_store_n(w->lb_pending, 0, __ATOMIC_RELAXED);
}

void fg_frontend_add(fg_worker_t *w, fg_session_t *s, const fg_frontend_t *fe)
{
    s->fe = fe;
    s->prev = NULL;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nconns++;
    fg_frontend_publish_load(w, 0);
    if (w->record) {
        w->record->connections++;
        w->record->connections_total++;
    }
    if (w->session_hook)
        w->session_hook(w, s, 1);
}

void fg_frontend_handed_over(fg_worker_t *w)
{
    if (w->record)
        w->record->connections_total--;
}

void fg_frontend_remove(fg_worker_t *w, fg_session_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    w->nconns--;
    fg_frontend_publish_load(w, 0);
    if (w->record)
        w->record->connections--;
    if (w->session_hook)
        w->session_hook(w, s, 0);
    if (w->retiring && w->nconns == 0 && w->base != NULL && fg_clock_now_ms() >= w->linger_until_ms)
        event_base_loopexit(w->base, NULL);
}

void fg_frontend_retire_all(fg_worker_t *w)
{
    for (fg_session_t *s = w->sessions; s; s = s->next)
        s->fe->retire(s);
}

void fg_frontend_close_idle(fg_worker_t *w)
{
    fg_session_t *s = w->sessions;
    while (s) {
        /* close_idle may free s: step first. */
        fg_session_t *next = s->next;
        s->fe->close_idle(s);
        s = next;
    }
}

void fg_frontend_close_all(fg_worker_t *w, const fg_frontend_t *const *fes, size_t n)
{
    while (w->sessions)
        w->sessions->fe->close(w->sessions);
    for (size_t i = 0; i < n; i++)
        if (fes[i]->release)
            fes[i]->release(w);
}
