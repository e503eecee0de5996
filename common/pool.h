/* Bump allocator for per-request and per-connection memory (nginx pools, h2o req->pool).
 * Everything allocated from a pool is released at once by fg_pool_reset or fg_pool_free;
 * there is no per-object free. Allocation failure returns NULL (the caller fails one request). */
#ifndef FG_POOL_H
#define FG_POOL_H

#include <stddef.h>
#include "common/str.h"

typedef struct fg_pool_s fg_pool_t;

/* A pool whose first block holds `first_size` bytes; larger requests get their own block. */
fg_pool_t *fg_pool_new(size_t first_size);
void fg_pool_free(fg_pool_t *pool);
/* Drop everything but the first block, which is reused. */
void fg_pool_reset(fg_pool_t *pool);
void *fg_pool_alloc(fg_pool_t *pool, size_t size);
void *fg_pool_calloc(fg_pool_t *pool, size_t size);
char *fg_pool_strndup(fg_pool_t *pool, const char *s, size_t len);
/* Copy a slice into the pool; the result is NUL-terminated (base[len] == 0). */
fg_str_t fg_pool_str(fg_pool_t *pool, fg_str_t s);
/* printf into the pool; NULL on failure. */
char *fg_pool_printf(fg_pool_t *pool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
