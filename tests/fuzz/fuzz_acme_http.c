/* libFuzzer target: the ACME client's response parser (master/acme_http.c) on any bytes, as a
 * response to a HEAD and to a POST. The input is copied to an exact-size buffer, so ASan
 * catches any read or write past it (the chunked body is decoded in place). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "master/acme_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int head = 0; head < 2; head++) {
        char *buf = malloc(size ? size : 1);
        if (buf == NULL)
            abort();
        memcpy(buf, data, size);
        fg_acme_http_resp_t r;
        const char *why = NULL;
        if (fg_acme_http_parse(buf, size, head, &r, &why) == 0) {
            if (r.body == NULL || r.len > size || r.body[r.len] != '\0')
                abort();
            if (head && r.len != 0)
                abort();
            fg_acme_http_free(&r);
        } else if (why == NULL) {
            abort();
        }
        free(buf);
    }
    return 0;
}
