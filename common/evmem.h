/* libevent's allocator: malloc and free with a small per-process cache of the power-of-two
 * blocks that evbuffer chains are made of.
 *
 * A buffer that is drained empty frees its chains and the next read or write allocates them
 * again: several large blocks per request, each a trip through malloc's bins (tcache holds
 * nothing this large). Freed blocks of those sizes are kept on a bounded list per size and
 * handed back out. Every block is an ordinary malloc block, so memory that libevent returns
 * to us (evbuffer_readln) is still released with free(). */
#ifndef FG_EVMEM_H
#define FG_EVMEM_H

#include <stddef.h>

/* Install the allocator with event_set_mem_functions. Call once, before libevent allocates
 * anything (first thing in main). */
void fg_evmem_install(void);

/* The three functions given to libevent (exported for tests). */
void *fg_evmem_malloc(size_t size);
void *fg_evmem_realloc(void *ptr, size_t size);
void fg_evmem_free(void *ptr);
/* Bytes held in the cache now. */
size_t fg_evmem_cached(void);

#endif
