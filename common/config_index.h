/* A string-keyed index for the configuration loader: id -> position, by hashing, so that
 * duplicate-id checks and id references cost O(1) each and a configuration of n routes or
 * clusters loads in O(n). Keys are borrowed: the strings must outlive the index (they belong
 * to the fg_config_t being built). Load-time only; out of memory aborts. */
#ifndef FG_CONFIG_INDEX_H
#define FG_CONFIG_INDEX_H

#include <stddef.h>

typedef struct fg_config_index_s fg_config_index_t;

/* An empty index sized for about `expected` keys (it grows past that). */
fg_config_index_t *fg_config_index_new(size_t expected);
void fg_config_index_free(fg_config_index_t *ix);

/* Add key -> pos. Returns 0 when added; 1 when the key was already present, with its position
 * in *first (and the index unchanged). */
int fg_config_index_add(fg_config_index_t *ix, const char *key, size_t pos, size_t *first);
/* 1 and *pos when key is present, else 0. ix may be NULL (nothing is present). */
int fg_config_index_find(const fg_config_index_t *ix, const char *key, size_t *pos);
size_t fg_config_index_count(const fg_config_index_t *ix);

/* The index of n elements of `size` bytes at items, keyed by the char * at id_offset of each;
 * on duplicates the first position is kept. */
fg_config_index_t *fg_config_index_of(const void *items, size_t n, size_t size, size_t id_offset);

#endif
