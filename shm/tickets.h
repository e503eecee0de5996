/* Session ticket keys in shared memory (RFC 5077 4 ticket protection; RFC 8446 4.6.1 tickets
 * in TLS 1.3), shared by every worker of every generation so that a ticket issued by one
 * worker resumes on any other. Three keys are kept: the newest encrypts, the two before it
 * still decrypt. Rotation is lazy: whoever touches the zone once a period has passed shifts
 * the keys (one shift per elapsed period; after three every old key is gone), so no timer is
 * needed and a quiet night never leaves day-old keys accepted. Keys come from RAND_bytes and
 * leave shared memory only into the caller's buffer. All access is under a robust lock. */
#ifndef FG_SHM_TICKETS_H
#define FG_SHM_TICKETS_H

#include <stddef.h>
#include <stdint.h>

#include "shm/arena.h"

#define FG_TICKETS_KEYS 3
#define FG_TICKET_NAME_LEN 16 /* the key_name field of a ticket */

typedef struct {
    unsigned char name[FG_TICKET_NAME_LEN];
    unsigned char aes_key[32];  /* AES-256-CBC */
    unsigned char hmac_key[32]; /* HMAC-SHA256 */
} fg_ticket_key_t;

typedef struct fg_tickets_s fg_tickets_t;

/* The zone, found or created (a created zone gets its first key at once). Master only,
 * before forking generation gen. NULL when the arena has no room or randomness failed. */
fg_tickets_t *fg_tickets_attach(fg_shm_t *shm, uint64_t gen);

/* The key to encrypt with at now_ms (monotonic), rotating first when period_ms has passed.
 * Returns 0, or -1 (lock or randomness failure: issue no ticket). */
int fg_tickets_current(fg_tickets_t *t, uint64_t now_ms, uint64_t period_ms, fg_ticket_key_t *out);
/* The key named `name`: returns 1 when it is the newest, 2 when an older one still accepted
 * (the caller renews the ticket), 0 when unknown or retired, -1 on lock failure. */
int fg_tickets_find(fg_tickets_t *t, const unsigned char *name, uint64_t now_ms, uint64_t period_ms,
                    fg_ticket_key_t *out);
/* Rotate now: a new newest key, the oldest dropped. Returns 0 or -1. */
int fg_tickets_rotate(fg_tickets_t *t, uint64_t now_ms);
/* Rotations so far. */
uint64_t fg_tickets_rotations(fg_tickets_t *t);

#endif
