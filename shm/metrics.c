#include "shm/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "shm/zone.h"

#define METRICS_MAGIC 0x46474d54u /* "FGMT" */
#define OBJ_USED 0x4f424a55u      /* "OBJU" */
#define ZONE_NAME "metrics"
#define ZONE_KIND 0x4d455452u /* "METR" */
#define ZONE_LAYOUT                                                                                \
    ((uint64_t)FG_METRICS_LANES << 48 | (uint64_t)FG_METRICS_FIELDS << 32 |                        \
     (uint64_t)FG_METRICS_MAX_OBJECTS << 8 | 3u)

#define LANE_BYTES (FG_METRICS_FIELDS * sizeof(uint64_t))
#define KIND_SHIFT 16                     /* of a place column's tag: its fg_metrics_place_t */
#define OBJ_MASK ((1u << KIND_SHIFT) - 1) /* its object's index + 1 */
_Static_assert(FG_METRICS_MAX_OBJECTS < (1u << KIND_SHIFT), "an object index fits a column tag");

struct fg_metrics_obj_s {
    uint64_t lanes[FG_METRICS_LANES][FG_METRICS_FIELDS];
};

_Static_assert(LANE_BYTES % FG_CACHELINE == 0, "a lane fills whole cache lines");

/* What the master knows of an object; workers never read it. */
typedef struct {
    uint32_t used;
    uint32_t kind;
    uint64_t last_gen; /* newest generation attached to it */
    char id[FG_METRICS_ID_LEN];
} objrec_t;

/* Gauges of one arena worker record, a cache line of their own. */
typedef struct {
    _Alignas(FG_CACHELINE) int64_t g[FG_MG_COUNT];
} gauge_row_t;

struct fg_metrics_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint32_t global; /* index of the FG_MK_GLOBAL object, + 1 (0 = none yet) */
    objrec_t recs[FG_METRICS_MAX_OBJECTS];
    gauge_row_t gauges[FG_SHM_MAX_WORKERS];
    /* Open places per worker record and server (fg_metrics_place_t: WebSockets for
     * maxWebSockets, connections for maxConnections): a worker writes its record's row only, a
     * check adds a column up, and a dead worker's row is zeroed. Column k belongs to the object
     * (ws_obj[k] & OBJ_MASK) - 1, for the place kind ws_obj[k] >> KIND_SHIFT (0 = free): a
     * worker claims one for a server and kind when it first counts there, the master frees it
     * when it recycles the object. */
    uint32_t ws_obj[FG_METRICS_WS_SERVERS];
    _Alignas(FG_CACHELINE) uint32_t ws_open[FG_SHM_MAX_WORKERS][FG_METRICS_WS_SERVERS];
    _Alignas(FG_CACHELINE) fg_metrics_obj_t objs[FG_METRICS_MAX_OBJECTS];
};

const uint64_t fg_metrics_bucket_bounds_us[FG_METRICS_BUCKETS - 1] = {
    1000,   2500,   5000,    10000,   25000,   50000,    100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* The writer's side, set once per worker (fg_metrics_worker_start). */
static struct {
    size_t lane;
    gauge_row_t *row;
    fg_metrics_obj_t *global;
    fg_metrics_t *mt;
    uint32_t *ws_row; /* this record's row of ws_open */
} self;

static void check(const fg_metrics_t *mt)
{
    if (mt == NULL || mt->magic != METRICS_MAGIC) {
        fprintf(stderr, "shm metrics zone corrupted\n");
        abort();
    }
}

size_t fg_metrics_zone_size(void)
{
    return sizeof(fg_metrics_t);
}

fg_metrics_t *fg_metrics_init(void *mem, size_t size)
{
    if (size < sizeof(fg_metrics_t))
        return NULL;
    fg_metrics_t *mt = mem;
    memset(mt, 0, sizeof(*mt));
    mt->magic = METRICS_MAGIC;
    return mt;
}

/* ---- attaching a configuration (master) ---- */

static void zero_obj(fg_metrics_obj_t *o)
{
    for (int l = 0; l < FG_METRICS_LANES; l++)
        for (int f = 0; f < FG_METRICS_FIELDS; f++)
            __atomic_store_n(&o->lanes[l][f], 0, __ATOMIC_RELAXED);
}

/* Object i is recycled: its place columns, if any, are free again (its workers are gone). */
static void free_ws_column(fg_metrics_t *mt, size_t i)
{
    for (size_t k = 0; k < FG_METRICS_WS_SERVERS; k++) {
        uint32_t v = __atomic_load_n(&mt->ws_obj[k], __ATOMIC_RELAXED);
        if (v == 0 || (v & OBJ_MASK) != i + 1)
            continue;
        for (int r = 0; r < FG_SHM_MAX_WORKERS; r++)
            __atomic_store_n(&mt->ws_open[r][k], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&mt->ws_obj[k], 0, __ATOMIC_RELEASE);
    }
}

/* The object of (kind, id) for generation gen: kept when the serving generation had it, zeroed
 * when it is new or comes back after a removal. NULL when the table is full of live objects. */
static fg_metrics_obj_t *object(fg_metrics_t *mt, uint32_t kind, const char *id, uint64_t gen,
                                uint64_t serving_gen, uint64_t min_live_gen)
{
    objrec_t *spare = NULL;
    for (size_t i = 0; i < FG_METRICS_MAX_OBJECTS; i++) {
        objrec_t *r = &mt->recs[i];
        if (r->used == OBJ_USED && r->kind == kind && strcmp(r->id, id) == 0) {
            if (r->last_gen < serving_gen)
                zero_obj(&mt->objs[i]);
            if (gen > r->last_gen)
                r->last_gen = gen;
            return &mt->objs[i];
        }
        /* a record no live generation uses: its workers are gone, nothing writes to it */
        if (spare == NULL && (r->used != OBJ_USED || r->last_gen < min_live_gen))
            spare = r;
    }
    if (spare == NULL)
        return NULL;
    size_t i = (size_t)(spare - mt->recs);
    zero_obj(&mt->objs[i]);
    free_ws_column(mt, i);
    spare->kind = kind;
    spare->last_gen = gen;
    snprintf(spare->id, sizeof(spare->id), "%s", id);
    spare->used = OBJ_USED;
    return &mt->objs[i];
}

size_t fg_metrics_attach_table(fg_metrics_t *mt, fg_config_t *cfg, uint64_t gen,
                               uint64_t serving_gen, uint64_t min_live_gen)
{
    check(mt);
    size_t missing = 0;
#define ATTACH(field, kind, id)                                                                    \
    do {                                                                                           \
        (field) = object(mt, (kind), (id), gen, serving_gen, min_live_gen);                        \
        missing += (field) == NULL;                                                                \
    } while (0)
    fg_metrics_obj_t *global;
    ATTACH(global, FG_MK_GLOBAL, "");
    if (global != NULL)
        mt->global = (uint32_t)(global - mt->objs) + 1;
    for (size_t i = 0; i < cfg->nservers; i++)
        ATTACH(cfg->servers[i].metrics, FG_MK_SERVER, cfg->servers[i].id);
    for (size_t i = 0; i < cfg->nroutes; i++)
        ATTACH(cfg->routes[i].metrics, FG_MK_ROUTE, cfg->routes[i].id);
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fg_cluster_t *c = &cfg->clusters[i];
        ATTACH(c->metrics, FG_MK_CLUSTER, c->id);
        for (size_t j = 0; j < c->ndestinations; j++) {
            char id[FG_METRICS_ID_LEN];
            snprintf(id, sizeof(id), "%s/%s", c->id, c->destinations[j].id);
            ATTACH(c->destinations[j].metrics, FG_MK_DEST, id);
        }
    }
#undef ATTACH
    return missing;
}

void fg_metrics_attach(fg_shm_t *shm, fg_config_t *cfg, uint64_t gen, uint64_t serving_gen,
                       uint64_t min_live_gen)
{
    int created;
    void *mem = fg_shm_zone_get(shm, ZONE_NAME, sizeof(fg_metrics_t), ZONE_KIND, ZONE_LAYOUT, gen,
                                &created);
    if (mem == NULL) {
        fg_log_warn("metrics: no room for the metrics zone (%zu bytes) in the shm arena; running "
                    "without metrics (raise shm.size, takes effect at restart)",
                    sizeof(fg_metrics_t));
        return;
    }
    fg_metrics_t *mt = created ? fg_metrics_init(mem, sizeof(fg_metrics_t)) : mem;
    size_t missing = fg_metrics_attach_table(mt, cfg, gen, serving_gen, min_live_gen);
    if (missing)
        fg_log_warn("metrics: %zu servers, routes, clusters or destinations beyond the %d the "
                    "metrics zone holds have no metrics",
                    missing, FG_METRICS_MAX_OBJECTS);
}

fg_metrics_t *fg_metrics_zone(fg_shm_t *shm)
{
    fg_shm_zone_info_t z[FG_SHM_MAX_ZONES];
    size_t n = fg_shm_zone_list(shm, z, FG_SHM_MAX_ZONES);
    fg_metrics_t *found = NULL;
    uint64_t newest = 0;
    for (size_t i = 0; i < n; i++) {
        if (z[i].kind != ZONE_KIND || strcmp(z[i].name, ZONE_NAME) != 0 || z[i].max_gen < newest)
            continue;
        found = z[i].mem;
        newest = z[i].max_gen;
    }
    if (found)
        check(found);
    return found;
}

void fg_metrics_worker_gone(fg_metrics_t *mt, int record)
{
    if (mt == NULL || record < 0 || record >= FG_SHM_MAX_WORKERS)
        return;
    check(mt);
    for (int g = 0; g < FG_MG_COUNT; g++)
        __atomic_store_n(&mt->gauges[record].g[g], 0, __ATOMIC_RELAXED);
    for (size_t k = 0; k < FG_METRICS_WS_SERVERS; k++)
        __atomic_store_n(&mt->ws_open[record][k], 0, __ATOMIC_RELAXED);
}

size_t fg_metrics_used(const fg_metrics_t *mt)
{
    check(mt);
    size_t n = 0;
    for (size_t i = 0; i < FG_METRICS_MAX_OBJECTS; i++)
        n += mt->recs[i].used == OBJ_USED;
    return n;
}

/* ---- readers ---- */

void fg_metrics_read(const fg_metrics_obj_t *obj, uint64_t out[FG_METRICS_FIELDS])
{
    memset(out, 0, FG_METRICS_FIELDS * sizeof(uint64_t));
    if (obj == NULL)
        return;
    for (int l = 0; l < FG_METRICS_LANES; l++)
        for (int f = 0; f < FG_METRICS_FIELDS; f++)
            out[f] += __atomic_load_n(&obj->lanes[l][f], __ATOMIC_RELAXED);
}

int64_t fg_metrics_gauge(const fg_metrics_t *mt, fg_metrics_gauge_t g)
{
    check(mt);
    int64_t sum = 0;
    for (int r = 0; r < FG_SHM_MAX_WORKERS; r++)
        sum += __atomic_load_n(&mt->gauges[r].g[g], __ATOMIC_RELAXED);
    return sum < 0 ? 0 : sum;
}

uint64_t fg_metrics_gauge_total(const fg_metrics_t *mt, fg_metrics_gauge_t g)
{
    check(mt);
    uint64_t v[FG_METRICS_FIELDS];
    fg_metrics_read(mt->global ? &mt->objs[mt->global - 1] : NULL, v);
    return v[g];
}

int fg_metrics_class(int status)
{
    return status >= 100 && status < 600 ? status / 100 - 1 : FG_MC_OTHER;
}

/* ---- writers ---- */

void fg_metrics_worker_start(fg_metrics_t *mt, int record)
{
    if (mt == NULL) {
        memset(&self, 0, sizeof(self));
        return;
    }
    check(mt);
    self.lane = record < 0 ? 0 : (size_t)record % FG_METRICS_LANES;
    self.row = record >= 0 && record < FG_SHM_MAX_WORKERS ? &mt->gauges[record] : NULL;
    self.global = mt->global ? &mt->objs[mt->global - 1] : NULL;
    self.mt = mt;
    self.ws_row = record >= 0 && record < FG_SHM_MAX_WORKERS ? mt->ws_open[record] : NULL;
}

static inline void add(fg_metrics_obj_t *o, int i, uint64_t n)
{
    __atomic_fetch_add(&o->lanes[self.lane][i], n, __ATOMIC_RELAXED);
}

/* The bucket of a duration: the first whose bound is at least us (Prometheus' le). */
static inline int bucket(uint64_t us)
{
    int b = 0;
    while (b < FG_METRICS_BUCKETS - 1 && us > fg_metrics_bucket_bounds_us[b])
        b++;
    return b;
}

void fg_metrics_add(fg_metrics_obj_t *obj, int i, uint64_t n)
{
    if (obj != NULL)
        add(obj, i, n);
}

void fg_metrics_request(fg_metrics_obj_t *server, fg_metrics_obj_t *route,
                        fg_metrics_obj_t *cluster, int status, uint64_t bytes_in,
                        uint64_t bytes_out, uint64_t latency_us, unsigned retries)
{
    int cls = fg_metrics_class(status);
    if (server != NULL) {
        add(server, FG_MS_REQUESTS + cls, 1);
        add(server, FG_MS_BYTES_IN, bytes_in);
        add(server, FG_MS_BYTES_OUT, bytes_out);
    }
    if (route != NULL) {
        add(route, FG_MR_REQUESTS + cls, 1);
        add(route, FG_MR_LATENCY + bucket(latency_us), 1);
        add(route, FG_MR_LATENCY_SUM, latency_us);
    }
    if (cluster != NULL && retries > 0)
        add(cluster, FG_MCL_RETRIES, retries);
}

void fg_metrics_attempt(fg_metrics_obj_t *dest)
{
    if (dest != NULL)
        add(dest, FG_MD_REQUESTS, 1);
}

void fg_metrics_attempt_done(fg_metrics_obj_t *dest, int failed, uint64_t connect_us,
                             uint64_t response_us)
{
    if (dest == NULL)
        return;
    if (failed) {
        add(dest, FG_MD_FAILURES, 1);
        return;
    }
    if (connect_us > 0) {
        add(dest, FG_MD_CONNECT + bucket(connect_us), 1);
        add(dest, FG_MD_CONNECT_SUM, connect_us);
    }
    add(dest, FG_MD_RESPONSE + bucket(response_us), 1);
    add(dest, FG_MD_RESPONSE_SUM, response_us);
}

void fg_metrics_conn_open(fg_metrics_gauge_t g)
{
    if (self.row == NULL)
        return;
    __atomic_fetch_add(&self.row->g[g], 1, __ATOMIC_RELAXED);
    if (self.global != NULL)
        add(self.global, (int)g, 1);
}

void fg_metrics_conn_close(fg_metrics_gauge_t g)
{
    if (self.row != NULL)
        __atomic_fetch_sub(&self.row->g[g], 1, __ATOMIC_RELAXED);
}

/* ---- open WebSockets per server ---- */

/* The column in ws_open of (server, kind), claimed when it has none; -1 when server is no
 * object of this worker's table or every column is taken. A scan of FG_METRICS_WS_SERVERS
 * words, per check and release only. */
static long column(const fg_metrics_obj_t *server, fg_metrics_place_t kind)
{
    if (self.mt == NULL || self.ws_row == NULL || server == NULL || server < self.mt->objs ||
        server >= self.mt->objs + FG_METRICS_MAX_OBJECTS)
        return -1;
    uint32_t want = ((uint32_t)(server - self.mt->objs) + 1) | (uint32_t)kind << KIND_SHIFT;
    uint32_t *cols = self.mt->ws_obj;
    for (int round = 0; round < 2; round++) {
        for (long k = 0; k < FG_METRICS_WS_SERVERS; k++) {
            uint32_t v = __atomic_load_n(&cols[k], __ATOMIC_ACQUIRE);
            if (v == want)
                return k;
            uint32_t none = 0;
            /* second round: claim a free column (another worker may claim it first) */
            if (round == 1 && v == 0 &&
                __atomic_compare_exchange_n(&cols[k], &none, want, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return k;
            if (round == 1 && none == want)
                return k;
        }
    }
    return -1;
}

int fg_metrics_place_count(const fg_metrics_obj_t *server, fg_metrics_place_t kind, uint64_t *open)
{
    long col = column(server, kind);
    if (col < 0)
        return -1;
    uint64_t sum = 0;
    for (int r = 0; r < FG_SHM_MAX_WORKERS; r++)
        sum += __atomic_load_n(&self.mt->ws_open[r][col], __ATOMIC_RELAXED);
    *open = sum;
    return 0;
}

/* Increment first, then add the column up: of two workers reserving at once, the later
 * increment (in the single order of sequentially consistent operations) is seen by the other's
 * sum, so they never both pass with the cap exceeded; both may back off near the cap, which
 * refuses one but never admits one too many. No lock: a worker that dies at any point leaves
 * only its own row, which the master zeroes. */
int fg_metrics_place_reserve(const fg_metrics_obj_t *server, fg_metrics_place_t kind, uint64_t cap)
{
    long col = column(server, kind);
    if (col < 0)
        return -1;
    __atomic_fetch_add(&self.ws_row[col], 1, __ATOMIC_SEQ_CST);
    if (cap == 0)
        return 0;
    uint64_t sum = 0;
    for (int r = 0; r < FG_SHM_MAX_WORKERS; r++)
        sum += __atomic_load_n(&self.mt->ws_open[r][col], __ATOMIC_SEQ_CST);
    if (sum <= cap)
        return 0;
    __atomic_fetch_sub(&self.ws_row[col], 1, __ATOMIC_SEQ_CST);
    return 1;
}

void fg_metrics_place_release(const fg_metrics_obj_t *server, fg_metrics_place_t kind)
{
    long col = column(server, kind);
    if (col >= 0 && __atomic_load_n(&self.ws_row[col], __ATOMIC_RELAXED) > 0)
        __atomic_fetch_sub(&self.ws_row[col], 1, __ATOMIC_RELAXED);
}

int fg_metrics_place_open(const fg_metrics_t *mt, const fg_metrics_obj_t *server, int kind,
                          uint64_t *open)
{
    *open = 0;
    if (mt == NULL || server == NULL || server < mt->objs ||
        server >= mt->objs + FG_METRICS_MAX_OBJECTS)
        return -1;
    check(mt);
    uint32_t want = ((uint32_t)(server - mt->objs) + 1) | (uint32_t)kind << KIND_SHIFT;
    for (size_t k = 0; k < FG_METRICS_WS_SERVERS; k++) {
        if (__atomic_load_n(&mt->ws_obj[k], __ATOMIC_ACQUIRE) != want)
            continue;
        for (int r = 0; r < FG_SHM_MAX_WORKERS; r++)
            *open += __atomic_load_n(&mt->ws_open[r][k], __ATOMIC_RELAXED);
        return 0;
    }
    return -1;
}

int fg_metrics_ws_count(const fg_metrics_obj_t *server, uint64_t *open)
{
    return fg_metrics_place_count(server, FG_MP_WEBSOCKETS, open);
}

int fg_metrics_ws_reserve(const fg_metrics_obj_t *server, uint64_t cap)
{
    return fg_metrics_place_reserve(server, FG_MP_WEBSOCKETS, cap);
}

void fg_metrics_ws_close(const fg_metrics_obj_t *server)
{
    fg_metrics_place_release(server, FG_MP_WEBSOCKETS);
}
