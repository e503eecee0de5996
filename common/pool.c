#include "common/pool.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct block_s {
    struct block_s *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
} block_t;

struct fg_pool_s {
    block_t *first;
    block_t *cur;
    block_t *large; /* oversized allocations, freed on reset */
};

#define ALIGN 16

static block_t *block_new(size_t size)
{
    block_t *b = malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

fg_pool_t *fg_pool_new(size_t first_size)
{
    fg_pool_t *p = malloc(sizeof(*p));
    if (p == NULL)
        return NULL;
    p->first = block_new(first_size ? first_size : 4096);
    if (p->first == NULL) {
        free(p);
        return NULL;
    }
    p->cur = p->first;
    p->large = NULL;
    return p;
}

static void free_chain(block_t *b)
{
    while (b != NULL) {
        block_t *next = b->next;
        free(b);
        b = next;
    }
}

void fg_pool_reset(fg_pool_t *p)
{
    free_chain(p->first->next);
    free_chain(p->large);
    p->first->next = NULL;
    p->first->used = 0;
    p->cur = p->first;
    p->large = NULL;
}

void fg_pool_free(fg_pool_t *p)
{
    if (p == NULL)
        return;
    free_chain(p->first);
    free_chain(p->large);
    free(p);
}

void *fg_pool_alloc(fg_pool_t *p, size_t size)
{
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (size > p->first->size / 2) {
        block_t *b = block_new(size);
        if (b == NULL)
            return NULL;
        b->next = p->large;
        p->large = b;
        return b->data;
    }
    if (p->cur->size - p->cur->used < size) {
        block_t *b = block_new(p->first->size);
        if (b == NULL)
            return NULL;
        p->cur->next = b;
        p->cur = b;
    }
    void *r = p->cur->data + p->cur->used;
    p->cur->used += size;
    return r;
}

void *fg_pool_calloc(fg_pool_t *p, size_t size)
{
    void *r = fg_pool_alloc(p, size);
    if (r != NULL)
        memset(r, 0, size);
    return r;
}

char *fg_pool_strndup(fg_pool_t *p, const char *s, size_t len)
{
    char *r = fg_pool_alloc(p, len + 1);
    if (r == NULL)
        return NULL;
    if (len)
        memcpy(r, s, len);
    r[len] = '\0';
    return r;
}

fg_str_t fg_pool_str(fg_pool_t *p, fg_str_t s)
{
    char *r = fg_pool_strndup(p, s.base, s.len);
    return r ? (fg_str_t){r, s.len} : FG_STR_NULL;
}

char *fg_pool_printf(fg_pool_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *r = fg_pool_alloc(p, (size_t)n + 1);
    if (r == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(r, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return r;
}
