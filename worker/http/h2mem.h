/* nghttp2's allocator for a worker: malloc and free with a bounded cache of small blocks.
 *
 * nghttp2 allocates a few small blocks per stream (the stream, its outbound frames, a copy of
 * the response fields) and frees them when the stream ends. A worker serving many streams per
 * loop turn frees more blocks of one size than malloc's per-thread cache keeps, so most of
 * them go through malloc's bins. This cache keeps freed blocks by size class (powers of two,
 * 64 B to 4 KiB, header included) on bounded lists and hands them back out. Larger blocks are
 * plain malloc blocks. Not thread-safe: one per worker process.
 *
 * Under AddressSanitizer nothing is cached, so that a use after free is still reported. */
#ifndef FG_H2MEM_H
#define FG_H2MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

typedef struct fg_h2mem_s fg_h2mem_t;

/* A new, empty cache; NULL without memory. */
fg_h2mem_t *fg_h2mem_new(void);
/* Frees the cached blocks and the cache. Blocks still held by sessions must have been freed
 * (every session that used it deleted) before. */
void fg_h2mem_free(fg_h2mem_t *m);
/* The allocator to give nghttp2_session_*_new3; valid while m lives. */
nghttp2_mem *fg_h2mem_nghttp2(fg_h2mem_t *m);
/* Bytes held in the cache now (for tests and bounds). */
size_t fg_h2mem_cached(const fg_h2mem_t *m);

#endif
