/* Open connections per client address of tcp servers and HTTP servers (docs/config.md "tcp
 * servers" and "limits", maxConnectionsPerClient), counted across every worker process: one
 * named zone ("tcpclients") holding a shm/hash.c table under its robust lock. An entry is keyed by
 * the server (a hash of its id, so counts carry over a reload that keeps the server) and the
 * address; it holds the total and each worker record's share, so the master can give back the share
 * of a worker that died (its connections died with it). An entry lives while its address has a
 * connection.
 *
 * The table never evicts a count: when it is full, or an address already has connections in
 * FG_TCPCLIENTS_RECORDS other worker records, fg_tcpclients_take says so and the caller counts
 * by itself (worker/core/connlimit.c). */
#ifndef FG_SHM_TCPCLIENTS_H
#define FG_SHM_TCPCLIENTS_H

#include <stdint.h>

#include "common/config.h"
#include "shm/arena.h"

#define FG_TCPCLIENTS_ZONE_SIZE (1u << 20) /* 8,775 addresses with connections */
#define FG_TCPCLIENTS_RECORDS 14           /* worker records one address's entry tracks */

typedef struct fg_tcpclients_s fg_tcpclients_t;

/* Master: the zone, created when a server of cfg has maxConnectionsPerClient (kept with its
 * counts across reloads). No room in the arena: a warning, and workers count by themselves. */
void fg_tcpclients_attach(fg_shm_t *shm, const fg_config_t *cfg, uint64_t gen);
/* The zone, or NULL (none attached). */
fg_tcpclients_t *fg_tcpclients_zone(fg_shm_t *shm);
/* Master, after reaping the worker of arena record `record`: its shares are given back. */
void fg_tcpclients_worker_gone(fg_tcpclients_t *t, int record);

/* Lay out a table in mem[0..size) (the zone, or test memory); NULL when too small. */
fg_tcpclients_t *fg_tcpclients_init(void *mem, size_t size);

/* The key of an address: IPv4 as ::ffff:a.b.c.d, IPv6 as its /64 (one host's or one site's
 * prefix: a client given a /64 has all of its addresses). */
void fg_tcpclients_key(const struct sockaddr_storage *ss, uint8_t key[16]);

/* One connection of addr on server (fg_tcpclients_server_key) for worker record `record`, if
 * the address holds fewer than cap: 0 (counted; give it back with give), 1 (at the cap, nothing
 * counted), -1 (not counted here: table full, too many records, no lock). */
int fg_tcpclients_take(fg_tcpclients_t *t, uint64_t server, const uint8_t addr[16], int record,
                       unsigned cap);
void fg_tcpclients_give(fg_tcpclients_t *t, uint64_t server, const uint8_t addr[16], int record);
uint64_t fg_tcpclients_server_key(const char *server_id);

#endif
