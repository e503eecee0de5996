/* Open addressing with linear probing over a power-of-two table kept at most half full; each
 * slot caches the key's hash so that probes compare strings only on a hash match. */
#include "common/config_index.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"

typedef struct {
    const char *key; /* NULL = empty slot */
    uint64_t hash;
    size_t pos;
} slot_t;

struct fg_config_index_s {
    slot_t *slots;
    size_t mask; /* capacity - 1 */
    size_t count;
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        abort();
    return p;
}

static uint64_t hash_key(const char *key)
{
    return fg_hash_mix64(fg_hash_fnv1a(FG_HASH_FNV_BASIS, key, strlen(key)));
}

/* The slot holding key, or the empty slot where it would go. */
static slot_t *probe(const fg_config_index_t *ix, const char *key, uint64_t h)
{
    for (size_t i = (size_t)h & ix->mask;; i = (i + 1) & ix->mask) {
        slot_t *s = &ix->slots[i];
        if (s->key == NULL || (s->hash == h && strcmp(s->key, key) == 0))
            return s;
    }
}

static void grow(fg_config_index_t *ix)
{
    slot_t *old = ix->slots;
    size_t cap = ix->mask + 1;
    ix->slots = xcalloc(cap * 2, sizeof(slot_t));
    ix->mask = cap * 2 - 1;
    for (size_t i = 0; i < cap; i++)
        if (old[i].key != NULL)
            *probe(ix, old[i].key, old[i].hash) = old[i];
    free(old);
}

fg_config_index_t *fg_config_index_new(size_t expected)
{
    fg_config_index_t *ix = xcalloc(1, sizeof(*ix));
    size_t cap = 16;
    while (cap < expected * 2)
        cap *= 2;
    ix->slots = xcalloc(cap, sizeof(slot_t));
    ix->mask = cap - 1;
    return ix;
}

void fg_config_index_free(fg_config_index_t *ix)
{
    if (ix == NULL)
        return;
    free(ix->slots);
    free(ix);
}

int fg_config_index_add(fg_config_index_t *ix, const char *key, size_t pos, size_t *first)
{
    if ((ix->count + 1) * 2 > ix->mask + 1)
        grow(ix);
    uint64_t h = hash_key(key);
    slot_t *s = probe(ix, key, h);
    if (s->key != NULL) {
        if (first)
            *first = s->pos;
        return 1;
    }
    *s = (slot_t){.key = key, .hash = h, .pos = pos};
    ix->count++;
    return 0;
}

int fg_config_index_find(const fg_config_index_t *ix, const char *key, size_t *pos)
{
    if (ix == NULL)
        return 0;
    const slot_t *s = probe(ix, key, hash_key(key));
    if (s->key == NULL)
        return 0;
    if (pos)
        *pos = s->pos;
    return 1;
}

size_t fg_config_index_count(const fg_config_index_t *ix)
{
    return ix ? ix->count : 0;
}

fg_config_index_t *fg_config_index_of(const void *items, size_t n, size_t size, size_t id_offset)
{
    fg_config_index_t *ix = fg_config_index_new(n);
    const char *base = items;
    for (size_t i = 0; i < n; i++) {
        const char *id = *(char *const *)(base + i * size + id_offset);
        if (id != NULL)
            fg_config_index_add(ix, id, i, NULL);
    }
    return ix;
}
