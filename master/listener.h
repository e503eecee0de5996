/* The master's listening sockets: for every server address, one SO_REUSEPORT socket per worker
 * slot. Sockets outlive generations: a reload that keeps an address hands the same sockets to the
 * new workers, so nothing queued in the kernel is lost. Sockets a new configuration no longer
 * needs (address removed, fewer workers) are retired: a drop-all BPF filter stops new
 * handshakes on them, the old worker of that slot drains their queue, and the master closes its
 * copy once that worker has exited. Where the kernel allows it, a BPF program picks the socket
 * of the least loaded worker for each new connection (master/balance.h). See
 * docs/operations.md, "Listeners". */
#ifndef FG_LISTENER_H
#define FG_LISTENER_H

#include <stddef.h>
#include <sys/types.h>
#include "common/config.h"

typedef struct fg_listeners_s fg_listeners_t;

fg_listeners_t *fg_listeners_new(void);
/* Closes every socket, retired ones included. */
void fg_listeners_free(fg_listeners_t *ls);

/* Make sure every enabled server of cfg has cfg->workers bound, listening sockets, opening what
 * is missing; nothing is closed or retired yet. An address whose port none of our sockets has
 * yet is refused when any other socket listens on it (fg_listeners_probe), so that a second
 * instance never joins this one's SO_REUSEPORT group or the other way round. On success *fds
 * receives a malloc'ed table of cfg->nservers * cfg->workers descriptors, fds[server * cfg->workers
 * + slot] (-1 for a disabled server), owned by the caller (the descriptors stay owned by ls).
 * Returns 0, or -1 with a message in err after undoing what it opened. Two calls need a commit or
 * rollback in between. */
int fg_listeners_prepare(fg_listeners_t *ls, const fg_config_t *cfg, int **fds, char *err,
                         size_t errlen);

/* Whether every enabled server address of cfg is free of listening sockets (any process's,
 * SO_REUSEPORT or not): 0, or -1 with "servers[N].listen: bind() to ADDR failed (98: Address
 * already in use)" in err. prepare runs the same check for addresses whose port it does not
 * hold yet; this one is for `-t`. */
int fg_listeners_probe(const fg_config_t *cfg, char *err, size_t errlen);

/* The sockets prepare opened for `slot` start taking connections: its new worker is ready. Until
 * then they drop SYNs (fg_listener_block), so that no connection waits in a queue that no
 * worker accepts from yet, or is reset when a failed reload closes them; a dropped SYN is
 * retransmitted by the client. Commit opens every slot. */
void fg_listeners_open_slot(fg_listeners_t *ls, int slot);

/* The worker of the serving generation that accepts from the sockets of `slot` is gone (it
 * died): they are withdrawn from the balancing program, and the slot's counts, when the dead
 * worker of `generation` still owned them, make the program pass the slot by, so that new
 * connections go to live workers instead of waiting for the respawn. The sockets stay open and
 * listening: what is queued on them waits for the replacement, and so do the connections the
 * kernel's hash still gives them (every slot withdrawn, or no balancing program). Sockets
 * opened for a pending configuration are left alone. */
void fg_listeners_slot_down(fg_listeners_t *ls, int slot, uint64_t generation);
/* The replacement is ready: the serving generation's sockets of `slot` are offered again. */
void fg_listeners_slot_up(fg_listeners_t *ls, int slot);

/* The holder of the socket of `slot` that is being retired: its pid, or 0 when no process holds
 * it (then the socket is closed at once). */
typedef pid_t (*fg_listeners_owner_fn)(int slot, void *arg);

/* The prepared configuration becomes current: sockets it does not use are retired (filter
 * attached, kept open until fg_listeners_release of their owner). Returns how many were
 * retired. */
size_t fg_listeners_commit(fg_listeners_t *ls, fg_listeners_owner_fn owner, void *arg);

/* The prepared configuration is abandoned: sockets opened by prepare are retired the same way
 * (owner: the new worker that may hold them), everything else stays as it was. */
size_t fg_listeners_rollback(fg_listeners_t *ls, fg_listeners_owner_fn owner, void *arg);

/* Process `pid` has exited: close the retired sockets it held. Returns how many were closed. */
size_t fg_listeners_release(fg_listeners_t *ls, pid_t pid);

/* In a freshly forked worker: close every socket of ls except those in keep[0..nkeep). Frees no
 * memory (the child exits through fg_worker_main). */
void fg_listeners_close_in_child(const fg_listeners_t *ls, const int *keep, size_t nkeep);

/* Least-connections balancing (master/balance.h): where the worker of `slot` writes how many
 * connections it holds, (in *pending) where it clears the count of connections steered to it
 * but not accepted yet, (in *busy) where it says whether it is running callbacks, and (in
 * *owner) where it claims the slot with its generation. NULL (all) when the kernel's hash
 * spreads connections instead. */
uint32_t *fg_listeners_balance_slot(fg_listeners_t *ls, int slot, uint32_t **pending,
                                    uint32_t **busy, uint64_t **owner);

/* 1 when the balancing program spreads new connections (master/balance.h), 0 for the kernel's
 * hash. */
int fg_listeners_balanced(const fg_listeners_t *ls);

/* Counts, for status and tests. */
size_t fg_listeners_active(const fg_listeners_t *ls);
size_t fg_listeners_retired(const fg_listeners_t *ls);

/* Attach the drop-everything classic BPF program to a listening socket. Returns 0 or -errno. */
int fg_listener_block(int fd);

#endif
