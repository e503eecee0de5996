/* XXH64, the 64-bit xxHash (Yann Collet's specification, version 0.1.1): the hash YARP's
 * HashCookie affinity policy hands out, computed here so that its cookies stay valid. */
#ifndef FG_XXHASH_H
#define FG_XXHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t fg_xxh64(const void *data, size_t len, uint64_t seed);

#endif
