/* libFuzzer target: the response parser of the master's blocking HTTP client (master/http_fetch.c)
 * on any bytes, as a response to a HEAD and to a POST. The input is copied to an exact-size buffer,
 * so ASan catches any read or write past it (the chunked body is decoded in place). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "master/http_fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int head = 0; head < 2; head++) {
        char *buf = malloc(size ? size : 1);
        if (buf == NULL)
            abort();
        memcpy(buf, data, size);
        fg_http_fetch_resp_t r;
        const char *why = NULL;
        if (fg_http_fetch_parse(buf, size, head, &r, &why) == 0) {
            if (r.body == NULL || r.len > size || r.body[r.len] != '\0')
                abort();
            if (head && r.len != 0)
                abort();
            fg_http_fetch_free(&r);
        } else if (why == NULL) {
            abort();
        }
        free(buf);
    }
    return 0;
}
