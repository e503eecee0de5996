/* Least-connections choice of the listening socket for each new connection.
 *
 * The kernel hashes a SYN over the sockets of an SO_REUSEPORT group, one per worker slot, so the
 * connections of a few clients can land unevenly (64 keep-alive connections split 41/23 or
 * worse), and the connections of the busier worker wait longer for every answer. Here a
 * BPF_PROG_TYPE_SK_REUSEPORT program, attached to each group, picks the slot whose worker holds
 * the fewest connections instead. Its inputs live in a page shared by the master, every worker
 * and the kernel (an mmap'ed BPF array): per slot, the connections the worker holds (the worker
 * writes it as they open and close) and the connections steered to it that it has not accepted
 * yet (the program adds one per SYN it steers; the worker clears it whenever its accept queue is
 * empty), so that a burst of SYNs is spread before any of them is accepted. A worker that is
 * running callbacks when the SYN arrives counts two connections more than it holds: unless it
 * holds two more than a busy one, a worker waiting for events takes the new connection, so the
 * expensive start of a connection (a TLS handshake) does not queue behind another's while a
 * worker sits idle, and a burst still ends within two connections of even.
 *
 * Only sockets that are taking connections are offered to the program (a BPF
 * REUSEPORT_SOCKARRAY map): a slot whose socket is not in it, or any failure of the program,
 * leaves the choice to the kernel's hash, over every socket of the group. A slot nobody takes
 * connections for (beyond the workers configured, or its worker dead and not replaced yet) is
 * therefore both withdrawn and given a load no live worker reaches, so that the program never
 * picks it while another slot is offered (master/listener.c). Loading needs CAP_BPF (root):
 * without it, or on a kernel without these program and map types, fg_balance_new fails and
 * the hash stays. */
#ifndef FG_BALANCE_H
#define FG_BALANCE_H

#include <stddef.h>
#include <stdint.h>

/* Slots the shared page covers (FG_CONFIG_MAX_WORKERS), and groups (listen addresses) the
 * socket map covers; a group beyond it keeps the kernel's hash. */
#define FG_BALANCE_SLOTS 128
#define FG_BALANCE_GROUPS 64

typedef struct fg_balance_s fg_balance_t;

/* The shared page, as a worker uses it: open[slot], pending[slot] and busy[slot] (read by the
 * program), and owner[slot], the generation of the worker that writes them: a worker replaced
 * by a newer one of its slot on reload stops writing while the newer one holds it (the master
 * writes the serving generation back when that reload is abandoned). busy[slot] is 1 while the
 * worker runs callbacks and 0 while it waits for events (worker/core/clock.h): I/O callbacks set
 * it, a turn that runs only timer callbacks leaves it 0. */
typedef struct {
    uint32_t open[FG_BALANCE_SLOTS];
    uint32_t pending[FG_BALANCE_SLOTS];
    uint64_t owner[FG_BALANCE_SLOTS];
    uint32_t busy[FG_BALANCE_SLOTS];
} fg_balance_page_t;

/* Create the maps and map the shared page. NULL with the reason in err when the kernel or the
 * process's privileges do not allow it. */
fg_balance_t *fg_balance_new(char *err, size_t errlen);
void fg_balance_free(fg_balance_t *b);
/* The shared page (MAP_SHARED: forked workers keep it). */
fg_balance_page_t *fg_balance_page(fg_balance_t *b);

/* A group id for a new listen address, or -1 when all FG_BALANCE_GROUPS are taken. */
int fg_balance_group_new(fg_balance_t *b);
/* The group is gone: its socket entries are dropped and the id can be reused. */
void fg_balance_group_free(fg_balance_t *b, int group);

/* Attach to the reuseport group of fd (any socket of the group) a program choosing among slots
 * 0..nslots-1 of `group`. 0 or -errno. */
int fg_balance_attach(fg_balance_t *b, int group, int nslots, int fd, char *err, size_t errlen);
/* Offer the listening socket fd as `slot` of `group` (fd -1: withdraw the slot). 0 or -errno. */
int fg_balance_offer(fg_balance_t *b, int group, int slot, int fd);

/* In a forked worker: close the descriptors (the shared page stays mapped). */
void fg_balance_close_in_child(fg_balance_t *b);

#endif
