#include "common/evmem.h"

#include <malloc.h>
#include <stdlib.h>

#include <event2/event.h>

/* Cached sizes: libevent rounds a chain up to a power of two from 1 KiB (evbuffer_chain_new);
 * 512 covers smaller builds of it. Each size keeps at most CACHE_BYTES of blocks. */
#define MIN_SHIFT 9
#define NCLASSES 8 /* 512 B .. 64 KiB */
#define CACHE_BYTES (128 * 1024)
#define MAX_BLOCKS (CACHE_BYTES >> MIN_SHIFT)

typedef struct {
    size_t usable; /* malloc_usable_size of a block of this class; 0 until learnt */
    unsigned n;
    unsigned cap;
    void *blk[MAX_BLOCKS];
} evmem_class_t;

/* Process-wide by necessity: libevent's allocator hooks take no context. Each process (master,
 * worker) has its own copy after fork, and neither runs threads. */
static evmem_class_t classes[NCLASSES];
static size_t cached_bytes;

/* The class of an allocation of exactly 2^k bytes, or -1. */
static int class_of(size_t size)
{
    if (size < ((size_t)1 << MIN_SHIFT) || (size & (size - 1)) != 0)
        return -1;
    int k = __builtin_ctzl(size) - MIN_SHIFT;
    return k < NCLASSES ? k : -1;
}

void *fg_evmem_malloc(size_t size)
{
    int k = class_of(size);
    if (k < 0)
        return malloc(size);
    evmem_class_t *c = &classes[k];
    if (c->n > 0) {
        cached_bytes -= c->usable;
        return c->blk[--c->n];
    }
    void *p = malloc(size);
    if (p != NULL && c->usable == 0) {
        c->usable = malloc_usable_size(p);
        c->cap = (unsigned)(CACHE_BYTES >> (MIN_SHIFT + k));
    }
    return p;
}

void *fg_evmem_realloc(void *ptr, size_t size)
{
    return realloc(ptr, size);
}

void fg_evmem_free(void *ptr)
{
    if (ptr == NULL)
        return;
    size_t usable = malloc_usable_size(ptr);
    /* A block serves its class when its usable size is the one a request of the class size
     * got: it is then at least that large, whoever asked for it first. */
    for (int k = 0; k < NCLASSES; k++) {
        evmem_class_t *c = &classes[k];
        if (c->usable == usable) {
            if (c->n < c->cap) {
                c->blk[c->n++] = ptr;
                cached_bytes += usable;
                return;
            }
            break;
        }
    }
    free(ptr);
}

size_t fg_evmem_cached(void)
{
    return cached_bytes;
}

void fg_evmem_install(void)
{
    event_set_mem_functions(fg_evmem_malloc, fg_evmem_realloc, fg_evmem_free);
}
