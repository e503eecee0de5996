#include "shm/abnormal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "shm/arena.h"

#define DYN_MAGIC 0x46474144u /* "FGAD" */

/* ---- abnormal counters ---- */

typedef struct {
    fg_ip_t ip;
} abn_key_t;

fg_shm_hash_t *fg_abnormal_init(void *mem, size_t size, uint64_t seed)
{
    return fg_shm_hash_init(mem, size, sizeof(abn_key_t), sizeof(fg_abnormal_entry_t), seed);
}

/* Workers read the clock before they take the zone lock: a reading older than the window
 * start another worker just set counts as no time elapsed, never as a new window. */
static void advance(fg_abnormal_entry_t *e, uint64_t now, uint64_t w)
{
    if (e->t == 0) {
        e->t = now;
        e->cur = e->prev = 0;
        return;
    }
    if (now < e->t || now - e->t < w)
        return;
    uint64_t n = (now - e->t) / w;
    e->prev = n == 1 ? e->cur : 0;
    e->cur = 0;
    e->t += n * w;
}

static uint64_t estimate(const fg_abnormal_entry_t *e, uint64_t now, uint64_t w)
{
    if (e->t == 0)
        return 0;
    uint64_t el = now > e->t ? now - e->t : 0; /* an older reading: no time elapsed */
    if (el >= 2 * w)
        return 0;
    if (el >= w) /* not advanced yet: this window's count is the previous one now */
        return e->cur * (2 * w - el) / w;
    return e->cur + e->prev * (w - el) / w;
}

int fg_abnormal_record(fg_shm_hash_t *h, const fg_ip_t *ip, uint64_t now, uint64_t window_ms,
                       uint64_t block_threshold, uint64_t block_ms)
{
    abn_key_t k = {*ip};
    uint64_t hv = fg_shm_hash_key(h, &k);
    int rc = fg_shm_hash_lock(h);
    if (rc < 0)
        return rc;
    fg_abnormal_entry_t *e = fg_shm_hash_find(h, &k, hv);
    if (e == NULL)
        e = fg_shm_hash_insert(h, &k, hv, NULL, NULL);
    int block = 0;
    if (e != NULL) {
        advance(e, now, window_ms);
        e->cur++;
        e->total++;
        if (now > e->last_ms)
            e->last_ms = now;
        if (block_threshold && estimate(e, now, window_ms) >= block_threshold &&
            e->blocked_until <= now) {
            e->blocked_until = now + block_ms;
            block = 1;
        }
    }
    fg_shm_hash_unlock(h);
    return block;
}

typedef struct {
    uint64_t now, w, min;
    fg_abnormal_info_t *out;
    size_t max, n;
} top_ctx_t;

static int info_cmp(const void *a, const void *b)
{
    const fg_abnormal_info_t *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

/* out[0..n) is a min-heap on count, so that each entry of the zone costs O(log max) while
 * the status socket holds the zone's lock. */
static void sift_down(fg_abnormal_info_t *a, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && a[l].count < a[m].count)
            m = l;
        if (r < n && a[r].count < a[m].count)
            m = r;
        if (m == i)
            return;
        fg_abnormal_info_t tmp = a[i];
        a[i] = a[m];
        a[m] = tmp;
        i = m;
    }
}

/* Keep the max largest in out: fill, then replace the smallest when larger. */
static int top_each(const void *key, void *value, void *arg)
{
    top_ctx_t *t = arg;
    const fg_abnormal_entry_t *e = value;
    uint64_t c = estimate(e, t->now, t->w);
    if (c < t->min || c == 0)
        return 0;
    if (t->n == t->max && t->out[0].count >= c)
        return 0;
    fg_abnormal_info_t info = {((const abn_key_t *)key)->ip, c, e->total, e->last_ms,
                               e->blocked_until};
    if (t->n < t->max) {
        size_t i = t->n++;
        t->out[i] = info;
        while (i > 0 && t->out[(i - 1) / 2].count > t->out[i].count) {
            fg_abnormal_info_t tmp = t->out[i];
            t->out[i] = t->out[(i - 1) / 2];
            t->out[(i - 1) / 2] = tmp;
            i = (i - 1) / 2;
        }
        return 0;
    }
    t->out[0] = info;
    sift_down(t->out, t->n, 0);
    return 0;
}

size_t fg_abnormal_top(fg_shm_hash_t *h, uint64_t now, uint64_t window_ms, uint64_t min_count,
                       fg_abnormal_info_t *out, size_t max)
{
    top_ctx_t t = {now, window_ms, min_count, out, max, 0};
    if (max == 0 || fg_shm_hash_lock(h) < 0)
        return 0;
    fg_shm_hash_foreach(h, top_each, &t);
    fg_shm_hash_unlock(h);
    qsort(out, t.n, sizeof(*out), info_cmp);
    return t.n;
}

/* ---- dynamic access-control entries ---- */

typedef struct {
    uint64_t list;
    uint8_t plen;
    uint8_t pad[7];
    fg_ip_t ip;
} dyn_key_t;

typedef struct {
    uint64_t expires_ms, added_ms, hits;
} dyn_val_t;

/* Live entries per list, next to the entries themselves so that the two share one lifetime
 * (a whitelist is "non-empty" by this count). Open addressing on the list key; a slot, once
 * given to a list, keeps it for the zone's life, so readers probe without the lock. */
typedef struct {
    uint64_t list;    /* 0 = free; written once, with release */
    uint64_t entries; /* changed under the table lock, read without it */
} dyn_list_t;

struct fg_acl_dyn_s {
    _Alignas(FG_CACHELINE) uint32_t magic;
    uint64_t plens[3];        /* bit p set: some entry has prefix length p; only grows */
    uint64_t count;           /* entries, read without the lock */
    uint64_t table_off;       /* the hash table follows this header */
    uint64_t recoveries_seen; /* table repairs already reflected in lists[] */
    dyn_list_t lists[FG_ACL_DYN_LISTS];
};

static fg_shm_hash_t *table(fg_acl_dyn_t *d)
{
    return (fg_shm_hash_t *)((char *)d + d->table_off);
}

static void dyn_check(const fg_acl_dyn_t *d)
{
    if (d == NULL || d->magic != DYN_MAGIC) {
        fprintf(stderr, "shm acl zone corrupted\n");
        abort();
    }
}

fg_acl_dyn_t *fg_acl_dyn_init(void *mem, size_t size, uint64_t seed)
{
    size_t off = (sizeof(fg_acl_dyn_t) + FG_CACHELINE - 1) & ~(size_t)(FG_CACHELINE - 1);
    if (size <= off)
        return NULL;
    fg_acl_dyn_t *d = mem;
    memset(d, 0, sizeof(*d));
    d->table_off = off;
    if (fg_shm_hash_init((char *)mem + off, size - off, sizeof(dyn_key_t), sizeof(dyn_val_t),
                         seed) == NULL)
        return NULL;
    d->magic = DYN_MAGIC;
    return d;
}

fg_shm_hash_t *fg_acl_dyn_table(fg_acl_dyn_t *d)
{
    dyn_check(d);
    return table(d);
}

uint64_t fg_acl_dyn_count(const fg_acl_dyn_t *d)
{
    dyn_check(d);
    return __atomic_load_n(&d->count, __ATOMIC_ACQUIRE);
}

static dyn_key_t make_key(uint64_t list, const fg_ip_t *ip, unsigned plen)
{
    dyn_key_t k;
    memset(&k, 0, sizeof(k));
    k.list = list;
    k.plen = (uint8_t)plen;
    k.ip = *ip;
    fg_ip_mask(&k.ip, plen);
    return k;
}

static void recount(fg_acl_dyn_t *d)
{
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(table(d), &st);
    __atomic_store_n(&d->count, st.entries, __ATOMIC_RELEASE);
}

/* The slot of list, or NULL. With create (under the lock), a free slot is taken for it; NULL
 * then means every slot belongs to another list. */
static dyn_list_t *list_slot(fg_acl_dyn_t *d, uint64_t list, int create)
{
    size_t start = (size_t)(fg_hash_mix64(list) % FG_ACL_DYN_LISTS);
    for (size_t i = 0; i < FG_ACL_DYN_LISTS; i++) {
        dyn_list_t *s = &d->lists[(start + i) % FG_ACL_DYN_LISTS];
        uint64_t owner = __atomic_load_n(&s->list, __ATOMIC_ACQUIRE);
        if (owner == list)
            return s;
        if (owner == 0) {
            if (!create)
                return NULL;
            __atomic_store_n(&s->entries, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->list, list, __ATOMIC_RELEASE);
            return s;
        }
    }
    return NULL;
}

static void list_entries_add(fg_acl_dyn_t *d, uint64_t list, int64_t delta)
{
    dyn_list_t *s = list_slot(d, list, 0);
    if (s)
        __atomic_fetch_add(&s->entries, (uint64_t)delta, __ATOMIC_RELEASE);
}

static int count_each(const void *key, void *value, void *arg)
{
    const dyn_key_t *k = key;
    uint64_t *counts = arg;
    (void)value;
    for (size_t i = 0; i < FG_ACL_DYN_LISTS; i++)
        if (counts[FG_ACL_DYN_LISTS + i] == k->list) {
            counts[i]++;
            break;
        }
    return 0;
}

/* Lock the table. After a repair (a process died holding the lock) the per-list counts may
 * be off by the entry it was adding or removing: count them again from the entries. */
static int lock_table(fg_acl_dyn_t *d)
{
    fg_shm_hash_t *h = table(d);
    int rc = fg_shm_hash_lock(h);
    if (rc < 0)
        return rc;
    fg_shm_hash_stats_t st;
    fg_shm_hash_get_stats(h, &st);
    if (st.recoveries != d->recoveries_seen) {
        uint64_t counts[2 * FG_ACL_DYN_LISTS] = {0};
        for (size_t i = 0; i < FG_ACL_DYN_LISTS; i++)
            counts[FG_ACL_DYN_LISTS + i] = d->lists[i].list;
        fg_shm_hash_foreach(h, count_each, counts);
        for (size_t i = 0; i < FG_ACL_DYN_LISTS; i++)
            __atomic_store_n(&d->lists[i].entries, counts[i], __ATOMIC_RELEASE);
        d->recoveries_seen = st.recoveries;
        recount(d);
    }
    return 0;
}

int fg_acl_dyn_has(fg_acl_dyn_t *d, uint64_t list)
{
    dyn_check(d);
    if (__atomic_load_n(&d->count, __ATOMIC_ACQUIRE) == 0)
        return 0;
    const dyn_list_t *s = list_slot(d, list, 0);
    return s != NULL && __atomic_load_n(&s->entries, __ATOMIC_ACQUIRE) > 0;
}

/* Lock the table and look (list, ip/plen) up. Returns 0 with the table locked and *v set
 * (NULL when absent), or a negative errno with the table not locked. */
static int lookup_locked(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, unsigned plen,
                         dyn_key_t *k, uint64_t *hv, dyn_val_t **v)
{
    dyn_check(d);
    if (plen > 128)
        return -EINVAL;
    *k = make_key(list, ip, plen);
    fg_shm_hash_t *h = table(d);
    *hv = fg_shm_hash_key(h, k);
    int rc = lock_table(d);
    if (rc < 0)
        return rc;
    *v = fg_shm_hash_find(h, k, *hv);
    return 0;
}

int fg_acl_dyn_add(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, unsigned plen,
                   uint64_t expires_ms, uint64_t now)
{
    dyn_key_t k;
    uint64_t hv;
    dyn_val_t *v;
    int rc = lookup_locked(d, list, ip, plen, &k, &hv, &v);
    if (rc < 0)
        return rc;
    fg_shm_hash_t *h = table(d);
    if (v) {
        /* Adding again never shortens an entry's life: a permanent entry stays permanent, and
         * an expiry computed from an older clock reading than the stored one is ignored. */
        if (v->expires_ms != 0 && (expires_ms == 0 || expires_ms > v->expires_ms))
            v->expires_ms = expires_ms;
        rc = 1;
    } else if (list_slot(d, list, 1) == NULL) {
        rc = -ENOSPC; /* more than FG_ACL_DYN_LISTS lists with dynamic entries */
    } else if ((v = fg_shm_hash_try_insert(h, &k, hv)) != NULL) {
        v->expires_ms = expires_ms;
        v->added_ms = now;
        __atomic_fetch_or(&d->plens[plen / 64], 1ull << (plen % 64), __ATOMIC_RELEASE);
        list_entries_add(d, list, 1);
        rc = 0;
    } else {
        rc = -ENOSPC;
    }
    recount(d);
    fg_shm_hash_unlock(h);
    return rc;
}

int fg_acl_dyn_del(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, unsigned plen)
{
    dyn_key_t k;
    uint64_t hv;
    dyn_val_t *v;
    int rc = lookup_locked(d, list, ip, plen, &k, &hv, &v);
    if (rc < 0)
        return rc;
    if (v) {
        fg_shm_hash_remove(table(d), v);
        list_entries_add(d, list, -1);
    }
    rc = v ? 0 : -ENOENT;
    recount(d);
    fg_shm_hash_unlock(table(d));
    return rc;
}

int fg_acl_dyn_match(fg_acl_dyn_t *d, uint64_t list, const fg_ip_t *ip, uint64_t now)
{
    dyn_check(d);
    if (__atomic_load_n(&d->count, __ATOMIC_ACQUIRE) == 0)
        return 0;
    fg_shm_hash_t *h = table(d);
    uint64_t bits[3];
    for (int i = 0; i < 3; i++)
        bits[i] = __atomic_load_n(&d->plens[i], __ATOMIC_ACQUIRE);
    if (lock_table(d) < 0)
        return 0;
    int hit = 0;
    /* An IPv4 client is matched only by entries inside the IPv4-mapped block (prefix >= 96):
     * a shorter IPv6 prefix means IPv6 addresses, as in fg_iprange_set_add. */
    for (unsigned p = fg_ip_is_v4(ip) ? 96 : 0; p <= 128 && !hit; p++) {
        if (!(bits[p / 64] & (1ull << (p % 64))))
            continue;
        dyn_key_t k = make_key(list, ip, p);
        dyn_val_t *v = fg_shm_hash_find(h, &k, fg_shm_hash_key(h, &k));
        if (v == NULL)
            continue;
        if (v->expires_ms && v->expires_ms <= now) {
            fg_shm_hash_remove(h, v);
            list_entries_add(d, list, -1);
            recount(d);
            continue;
        }
        v->hits++;
        hit = 1;
    }
    fg_shm_hash_unlock(h);
    return hit;
}

typedef struct {
    fg_acl_dyn_t *d;
    uint64_t list, now;
    fg_acl_dyn_info_t *out;
    size_t max, n;
} list_ctx_t;

static int list_each(const void *key, void *value, void *arg)
{
    list_ctx_t *l = arg;
    const dyn_key_t *k = key;
    const dyn_val_t *v = value;
    if (v->expires_ms && v->expires_ms <= l->now) {
        list_entries_add(l->d, k->list, -1);
        return 1;
    }
    if ((l->list == 0 || k->list == l->list) && l->n < l->max)
        l->out[l->n++] =
            (fg_acl_dyn_info_t){k->list, k->ip, k->plen, v->expires_ms, v->added_ms, v->hits};
    return 0;
}

size_t fg_acl_dyn_list(fg_acl_dyn_t *d, uint64_t list, uint64_t now, fg_acl_dyn_info_t *out,
                       size_t max)
{
    dyn_check(d);
    list_ctx_t l = {d, list, now, out, max, 0};
    if (lock_table(d) < 0)
        return 0;
    fg_shm_hash_foreach(table(d), list_each, &l);
    recount(d);
    fg_shm_hash_unlock(table(d));
    return l.n;
}
