#include "shm/tcpclients.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/log.h"
#include "shm/hash.h"
#include "shm/zone.h"

#define ZONE_NAME "tcpclients"
#define ZONE_KIND 0x54435043u /* "TCPC" */
#define ZONE_LAYOUT ((uint64_t)FG_TCPCLIENTS_RECORDS << 8 | 1u)

typedef struct {
    uint64_t server;
    uint8_t addr[16];
} client_key_t;

typedef struct {
    uint32_t total;
    uint16_t rec[FG_TCPCLIENTS_RECORDS]; /* worker record + 1; 0: free */
    uint16_t n[FG_TCPCLIENTS_RECORDS];   /* its connections */
} val_t;

/* The zone is the table itself. */
static fg_shm_hash_t *table(fg_tcpclients_t *t)
{
    return (fg_shm_hash_t *)t;
}

fg_tcpclients_t *fg_tcpclients_init(void *mem, size_t size)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    return (fg_tcpclients_t *)fg_shm_hash_init(mem, size, sizeof(client_key_t), sizeof(val_t),
                                               seed);
}

static int wanted(const fg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nservers; i++)
        if ((cfg->servers[i].tcp.enabled && cfg->servers[i].tcp.max_per_client > 0) ||
            cfg->servers[i].max_per_client > 0)
            return 1;
    return 0;
}

void fg_tcpclients_attach(fg_shm_t *shm, const fg_config_t *cfg, uint64_t gen)
{
    if (!wanted(cfg))
        return;
    int created;
    void *mem = fg_shm_zone_get(shm, ZONE_NAME, FG_TCPCLIENTS_ZONE_SIZE, ZONE_KIND, ZONE_LAYOUT,
                                gen, &created);
    if (mem == NULL || (created && fg_tcpclients_init(mem, FG_TCPCLIENTS_ZONE_SIZE) == NULL))
        fg_log_warn("servers: no room for the zone of maxConnectionsPerClient (%u bytes) in "
                    "the shm arena: each worker counts its own (raise shm.size, takes effect at "
                    "restart)",
                    FG_TCPCLIENTS_ZONE_SIZE);
}

fg_tcpclients_t *fg_tcpclients_zone(fg_shm_t *shm)
{
    if (shm == NULL)
        return NULL;
    fg_shm_zone_info_t z[FG_SHM_MAX_ZONES];
    size_t n = fg_shm_zone_list(shm, z, FG_SHM_MAX_ZONES);
    for (size_t i = 0; i < n; i++)
        if (z[i].kind == ZONE_KIND && strcmp(z[i].name, ZONE_NAME) == 0)
            return z[i].mem;
    return NULL;
}

void fg_tcpclients_key(const struct sockaddr_storage *ss, uint8_t key[16])
{
    memset(key, 0, 16);
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        /* an IPv4 client of a dual-stack listener is that IPv4 address, not a /64 */
        memcpy(key, a, IN6_IS_ADDR_V4MAPPED(a) ? 16 : 8);
    } else if (ss->ss_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

uint64_t fg_tcpclients_server_key(const char *server_id)
{
    return fg_hash_fnv1a(FG_HASH_FNV_BASIS, server_id, strlen(server_id));
}

/* The slot of record in v (claimed when absent and claim), or -1. */
static int slot_of(val_t *v, int record, int claim)
{
    int free_slot = -1;
    for (int i = 0; i < FG_TCPCLIENTS_RECORDS; i++) {
        if (v->rec[i] == (uint16_t)(record + 1))
            return i;
        if (v->rec[i] == 0 && free_slot < 0)
            free_slot = i;
    }
    if (claim && free_slot >= 0)
        v->rec[free_slot] = (uint16_t)(record + 1);
    return claim ? free_slot : -1;
}

int fg_tcpclients_take(fg_tcpclients_t *t, uint64_t server, const uint8_t addr[16], int record,
                       unsigned cap)
{
    if (t == NULL || record < 0 || record >= FG_SHM_MAX_WORKERS)
        return -1;
    fg_shm_hash_t *h = table(t);
    client_key_t k = {.server = server};
    memcpy(k.addr, addr, 16);
    uint64_t hv = fg_shm_hash_key(h, &k);
    if (fg_shm_hash_lock(h) < 0)
        return -1;
    int rc = -1;
    val_t *v = fg_shm_hash_find(h, &k, hv);
    if (v == NULL && (v = fg_shm_hash_try_insert(h, &k, hv)) == NULL)
        goto out;
    if (v->total >= cap) {
        rc = 1;
        goto out;
    }
    int i = slot_of(v, record, 1);
    if (i >= 0) {
        v->n[i]++;
        v->total++;
        rc = 0;
    }
out:
    if (v != NULL && v->total == 0)
        fg_shm_hash_remove(h, v);
    fg_shm_hash_unlock(h);
    return rc;
}

void fg_tcpclients_give(fg_tcpclients_t *t, uint64_t server, const uint8_t addr[16], int record)
{
    fg_shm_hash_t *h = table(t);
    client_key_t k = {.server = server};
    memcpy(k.addr, addr, 16);
    uint64_t hv = fg_shm_hash_key(h, &k);
    if (fg_shm_hash_lock(h) < 0)
        return;
    val_t *v = fg_shm_hash_find(h, &k, hv);
    int i = v ? slot_of(v, record, 0) : -1;
    if (i >= 0 && v->n[i] > 0) {
        v->n[i]--;
        v->total--;
        if (v->n[i] == 0)
            v->rec[i] = 0;
        if (v->total == 0)
            fg_shm_hash_remove(h, v);
    }
    fg_shm_hash_unlock(h);
}

static int drop_record(const void *key, void *value, void *arg)
{
    val_t *v = value;
    int i = slot_of(v, *(const int *)arg, 0);
    if (i >= 0) {
        v->total -= v->n[i] < v->total ? v->n[i] : v->total;
        v->n[i] = 0;
        v->rec[i] = 0;
    }
    return v->total == 0;
}

void fg_tcpclients_worker_gone(fg_tcpclients_t *t, int record)
{
    if (t == NULL || record < 0 || record >= FG_SHM_MAX_WORKERS)
        return;
    fg_shm_hash_t *h = table(t);
    if (fg_shm_hash_lock(h) < 0)
        return;
    fg_shm_hash_foreach(h, drop_record, &record);
    fg_shm_hash_unlock(h);
}
