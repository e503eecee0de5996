#include "worker/http/h2mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define H2MEM_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2MEM_CACHE 0
#endif
#endif
#ifndef H2MEM_CACHE
#define H2MEM_CACHE 1
#endif

#define MIN_SHIFT 6              /* 64 B */
#define NCLASSES 7               /* 64 B .. 4 KiB */
#define CLASS_BYTES (256 * 1024) /* each class keeps at most this much */
#define LARGE 0xff               /* a block above the largest class: malloc's own */
/* Every block starts with this header (16 bytes keep the payload aligned like malloc's). */
#define HDR 16

typedef struct free_s {
    struct free_s *next;
} free_t;

typedef struct {
    free_t *head;
    unsigned n, cap;
} class_t;

struct fg_h2mem_s {
    nghttp2_mem mem;
    class_t cls[NCLASSES];
    size_t cached;
};

/* The class of a block of `size` payload bytes, or LARGE. */
static unsigned class_of(size_t size)
{
    size_t need = size + HDR;
    if (need > ((size_t)1 << (MIN_SHIFT + NCLASSES - 1)))
        return LARGE;
    unsigned k = 0;
    while (((size_t)1 << (MIN_SHIFT + k)) < need)
        k++;
    return k;
}

/* The caller's part of block b (NULL for NULL). */
static void *payload(void *b)
{
    return b != NULL ? (uint8_t *)b + HDR : NULL;
}

static void *take(fg_h2mem_t *m, size_t size)
{
    unsigned k = H2MEM_CACHE ? class_of(size) : LARGE;
    uint8_t *b;
    if (k != LARGE && m->cls[k].head != NULL) {
        class_t *c = &m->cls[k];
        b = (uint8_t *)c->head;
        c->head = c->head->next;
        c->n--;
        m->cached -= (size_t)1 << (MIN_SHIFT + k);
    } else {
        b = malloc(k == LARGE ? size + HDR : (size_t)1 << (MIN_SHIFT + k));
        if (b == NULL)
            return NULL;
    }
    b[0] = (uint8_t)k;
    return b + HDR;
}

static void give(fg_h2mem_t *m, void *ptr)
{
    if (ptr == NULL)
        return;
    uint8_t *b = (uint8_t *)ptr - HDR;
    unsigned k = b[0];
    if (k != LARGE && m->cls[k].n < m->cls[k].cap) {
        class_t *c = &m->cls[k];
        free_t *f = (free_t *)b;
        f->next = c->head;
        c->head = f;
        c->n++;
        m->cached += (size_t)1 << (MIN_SHIFT + k);
        return;
    }
    free(b);
}

static void *mem_malloc(size_t size, void *arg)
{
    return take(arg, size);
}

static void mem_free(void *ptr, void *arg)
{
    give(arg, ptr);
}

static void *mem_calloc(size_t n, size_t size, void *arg)
{
    if (size != 0 && n > SIZE_MAX / 2 / size)
        return NULL;
    void *p = take(arg, n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

/* A block of a class grows in place up to the class size; otherwise it moves. */
static void *mem_realloc(void *ptr, size_t size, void *arg)
{
    if (ptr == NULL)
        return take(arg, size);
    uint8_t *b = (uint8_t *)ptr - HDR;
    unsigned k = b[0];
    if (k == LARGE) {
        void *nb = realloc(b, size + HDR); /* on failure b stays nghttp2's to free */
        return payload(nb);
    }
    size_t have = ((size_t)1 << (MIN_SHIFT + k)) - HDR;
    if (size <= have)
        return ptr;
    void *p = take(arg, size);
    if (p == NULL)
        return NULL;
    memcpy(p, ptr, have);
    give(arg, ptr);
    return p;
}

fg_h2mem_t *fg_h2mem_new(void)
{
    fg_h2mem_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->mem = (nghttp2_mem){m, mem_malloc, mem_free, mem_calloc, mem_realloc};
    for (unsigned k = 0; k < NCLASSES; k++)
        m->cls[k].cap = H2MEM_CACHE ? CLASS_BYTES >> (MIN_SHIFT + k) : 0;
    return m;
}

void fg_h2mem_free(fg_h2mem_t *m)
{
    if (m == NULL)
        return;
    for (unsigned k = 0; k < NCLASSES; k++) {
        while (m->cls[k].head != NULL) {
            free_t *f = m->cls[k].head;
            m->cls[k].head = f->next;
            free(f);
        }
    }
    free(m);
}

nghttp2_mem *fg_h2mem_nghttp2(fg_h2mem_t *m)
{
    return &m->mem;
}

size_t fg_h2mem_cached(const fg_h2mem_t *m)
{
    return m->cached;
}
