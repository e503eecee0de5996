/* libFuzzer target: the client address from X-Forwarded-For (worker/admission/clientip.h).
 * The input is the header's value; the peer is trusted (10.0.0.0/8). On success the address
 * is the peer's or one written in the header, and its text form parses back. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/admission/clientip.h"

static fg_iprange_set_t trusted;

static void init(void)
{
    static int done;
    if (done++)
        return;
    fg_iprange_t r;
    int plen;
    char err[64];
    fg_iprange_set_init(&trusted);
    if (fg_iprange_parse("10.0.0.0/8", &r, &plen, err, sizeof(err)) < 0)
        abort();
    fg_iprange_set_add(&trusted, &r);
    fg_iprange_set_finish(&trusted);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    fg_request_t req;
    fg_http_header_t h[2];
    memset(&req, 0, sizeof(req));
    struct sockaddr_in *in = (struct sockaddr_in *)&req.client_addr;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, "10.1.2.3", &in->sin_addr);
    char *value = malloc(size ? size : 1);
    if (value == NULL)
        abort();
    memcpy(value, data, size);
    h[0] = (fg_http_header_t){FG_STR_LIT("X-Forwarded-For"), {value, size}};
    h[1] = (fg_http_header_t){FG_STR_LIT("X-Real-IP"), {value, size}};
    req.headers = h;
    req.nheaders = 2;
    for (int source = FG_CIP_XFF; source <= FG_CIP_REAL_IP; source++) {
        fg_ip_t ip;
        char buf[64];
        if (fg_clientip_resolve(&req, source, &trusted, &ip) != 0)
            continue;
        const char *text = fg_ip_format(&ip, buf, sizeof(buf));
        if (text == NULL)
            abort();
        unsigned char bin[16];
        if (inet_pton(AF_INET, text, bin) != 1 && inet_pton(AF_INET6, text, bin) != 1)
            abort();
    }
    free(value);
    return 0;
}
