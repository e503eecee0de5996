/* libFuzzer target: request-target path normalisation and decoding (common/path.h).
 * On success: the output is no longer than the input, starts with '/', holds no "." or ".."
 * segment and no empty segment from repeated slashes, and normalising again changes nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/path.h"

static void check_segments(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/')
        abort();
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && p[j] != '/')
            j++;
        size_t seg = j - i - 1;
        if (seg == 2 && p[i + 1] == '.' && p[i + 2] == '.')
            abort();
        if (seg == 1 && p[i + 1] == '.')
            abort();
        if (seg == 0 && j < n) /* "//" */
            abort();
        i = j;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    char *out = malloc(size + 1);
    char *again = malloc(size + 1);
    if (!in || !out || !again)
        abort();
    memcpy(in, data, size);

    long n = fg_path_normalize(in, size, out);
    if (n >= 0) {
        if ((size_t)n > size)
            abort();
        check_segments(out, (size_t)n);
        long m = fg_path_normalize(out, (size_t)n, again);
        if (m != n || memcmp(out, again, (size_t)n) != 0)
            abort();
    }

    n = fg_path_decode(in, size, out);
    if (n >= 0 && ((size_t)n > size || out[n] != '\0'))
        abort();

    free(in);
    free(out);
    free(again);
    return 0;
}
