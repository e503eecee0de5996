/* libFuzzer target: the chunked decoder fed the input in pseudo-random pieces (1 byte up to
 * the rest) must agree with the one-shot decode on the outcome, the body and where the message
 * ends. Each piece is an exact-size copy, so ASan catches reads past what was given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http1_parser.h"

struct result {
    int rc;        /* 1 done, 0 needs more, < 0 error */
    size_t end;    /* bytes consumed */
    size_t outlen; /* body bytes */
};

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Decode data[0..size); piece sizes come from the rng when seed != 0, else all at once. */
static struct result decode(const uint8_t *data, size_t size, uint64_t seed, size_t max_trailer,
                            uint8_t *out)
{
    fg_http1_chunked_t d;
    struct result r = {0, 0, 0};
    size_t avail = seed ? 0 : size;

    fg_http1_chunked_init(&d);
    d.max_trailer = max_trailer;
    for (;;) {
        size_t n = avail - r.end, consumed = 99, dl = 99;
        char *piece = malloc(n ? n : 1);
        if (!piece)
            abort();
        memcpy(piece, data + r.end, n);
        r.rc = fg_http1_chunked_step(&d, piece, n, &consumed, &dl);
        if (r.rc >= 0 && (consumed > n || (dl && dl != consumed)))
            abort();
        if (r.rc >= 0) {
            memcpy(out + r.outlen, piece, dl);
            r.outlen += dl;
            r.end += consumed;
        }
        free(piece);
        if (r.rc != 0)
            return r;
        if (consumed == 0) {
            if (avail == size)
                return r;
            size_t more = seed == 0 ? size : 1 + next_rand(&seed) % 16;
            avail = size - avail < more ? size : avail + more;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *a = malloc(size + 1), *b = malloc(size + 1);
    if (!a || !b)
        abort();
    /* The trailer limit is small for short inputs so that the limit path is exercised. */
    size_t max_trailer = size % 3 == 0 ? 16 : 0;
    struct result one = decode(data, size, 0, max_trailer, a);

    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < size && i < 16; i++)
        seed = seed * 31 + data[i];
    for (int round = 0; round < 3; round++) {
        seed = seed ? seed : 1;
        struct result inc = decode(data, size, seed, max_trailer, b);
        if ((inc.rc < 0) != (one.rc < 0) || (inc.rc >= 0 && inc.rc != one.rc))
            abort();
        if (one.rc >= 0 &&
            (inc.end != one.end || inc.outlen != one.outlen || memcmp(a, b, one.outlen) != 0))
            abort();
        seed += 0x1234567;
    }
    free(a);
    free(b);
    return 0;
}
