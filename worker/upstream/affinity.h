/* Session affinity (YARP's policies, FastGateway's key derivation). A request carries a key:
 *   Cookie       cookie affinityKeyName = the destination id;
 *   HashCookie   cookie affinityKeyName = a hash of the destination id (hides the id);
 *   CustomHeader header affinityKeyName = a destination id or its hash (as a response header
 *                gave it), or any other value, which picks a destination by rendezvous
 *                hashing over the cluster so one key keeps one destination;
 *   keySource "tenant": the key is the request's tenant code or "anonymous", hashed the same
 *                way, and forwarded upstream in header affinityKeyName.
 * Keys are derived from destination ids, never addresses, so a moved destination keeps its
 * sessions. */
#ifndef FG_AFFINITY_H
#define FG_AFFINITY_H

#include <stdint.h>

#include "common/config.h"
#include "common/pool.h"
#include "common/str.h"
#include "worker/http/request.h"

#define FG_AFFINITY_NONE (-1) /* no usable key: balance, then maybe hand out a key */
#define FG_AFFINITY_FAIL (-2) /* the key's destination is down and failurePolicy says 503 */

typedef struct {
    int set;      /* the response should carry the key of the chosen destination */
    fg_str_t key; /* the key derived from the request (tenant or header); empty when none */
} fg_affinity_t;

/* The destination req is bound to: an index, FG_AFFINITY_NONE or FG_AFFINITY_FAIL. A bound
 * destination is used when it is enabled, not in maintenance and not unhealthy (a draining
 * destination keeps its sessions). With Redistribute, a keyed request whose destination is
 * down moves to the next destination of its rendezvous order, so it stays sticky there too. */
int fg_affinity_resolve(const fg_cluster_t *cl, const fg_request_t *req, uint64_t now_ms,
                        fg_affinity_t *out);

/* The response field that binds the client to destination di: Set-Cookie (with the cookie
 * options) or the custom header. Returns 0, or -1 when out of memory. */
int fg_affinity_response(const fg_cluster_t *cl, size_t di, fg_pool_t *pool, fg_str_t *name,
                         fg_str_t *value);

/* The HashCookie value of a destination id: 16 lower-case hex digits (FNV-1a 64). */
void fg_affinity_hash_id(const char *id, char out[17]);

#endif
