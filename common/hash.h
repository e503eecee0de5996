/* Small non-cryptographic hashes shared by the modules: FNV-1a 64 for identifiers and keys
 * (stable across processes and restarts, so values derived from it can be handed to clients
 * or kept in shared memory) and a 64-bit finaliser that spreads FNV's weak low bits. */
#ifndef FG_HASH_H
#define FG_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FG_HASH_FNV_BASIS 0xcbf29ce484222325ull

static inline uint64_t fg_hash_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *s = data;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* MurmurHash3's fmix64: every input bit affects every output bit. */
static inline uint64_t fg_hash_mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

#endif
