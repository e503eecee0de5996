/* A server's "http2" object (docs/http2.md): h2c by prior knowledge on a plaintext server, and
 * the limits an HTTP/2 connection advertises in its SETTINGS (RFC 9113 6.5.2). */
#include <limits.h>

#include "common/config_impl.h"

#define KIB 1024ULL

/* Defaults: the stream window bounds an upload's memory per stream, the connection window
 * bounds it per connection; both sit far above a LAN's bandwidth-delay product. */
static void defaults(fg_http2_config_t *h)
{
    h->h2c = 0;
    h->max_concurrent_streams = 128;
    h->max_header_list_size = 64 * KIB;
    h->initial_window_size = 1024 * KIB;
    h->connection_window_size = 8 * 1024 * KIB;
    h->max_frame_size = 16 * KIB;
    h->enable_connect_protocol = 1;
}

/* A size key within [lo, hi] into *out. */
static int get_bounded(fg_config_ctx_t *c, const json_t *o, const char *key, uint64_t lo,
                       uint64_t hi, const char *range, uint32_t *out)
{
    uint64_t v = *out;
    if (fg_config_get_size(c, o, key, &v) < 0)
        return -1;
    if (v < lo || v > hi)
        return fg_config_fail(c, key, "must be between %s", range);
    *out = (uint32_t)v;
    return 0;
}

int fg_config_load_server_http2(fg_config_ctx_t *c, const json_t *srv, fg_server_t *s)
{
    static const char *const keys[] = {"h2c",
                                       "maxConcurrentStreams",
                                       "maxHeaderListSize",
                                       "initialWindowSize",
                                       "connectionWindowSize",
                                       "maxFrameSize",
                                       "enableConnectProtocol",
                                       NULL};
    fg_http2_config_t *h = &s->http2;
    json_t *o = NULL;
    defaults(h);
    if (fg_config_get_object(c, srv, "http2", keys, &o) < 0)
        return -1;
    if (o == NULL)
        return 0;
    size_t mark = fg_config_push_key(c, "http2");
    long long streams = h->max_concurrent_streams;
    int rc = -1;
    /* RFC 9113 6.5.2: windows up to 2^31-1, frames between 2^14 and 2^24-1. */
    if (fg_config_get_bool(c, o, "h2c", &h->h2c) < 0 ||
        fg_config_get_bool(c, o, "enableConnectProtocol", &h->enable_connect_protocol) < 0 ||
        fg_config_get_int(c, o, "maxConcurrentStreams", 1, 65535, &streams) < 0 ||
        get_bounded(c, o, "maxHeaderListSize", 1 * KIB, 16 * 1024 * KIB, "1k and 16m",
                    &h->max_header_list_size) < 0 ||
        get_bounded(c, o, "initialWindowSize", 16 * KIB, 1024 * 1024 * KIB, "16k and 1g",
                    &h->initial_window_size) < 0 ||
        get_bounded(c, o, "connectionWindowSize", 64 * KIB, 1024 * 1024 * KIB, "64k and 1g",
                    &h->connection_window_size) < 0 ||
        get_bounded(c, o, "maxFrameSize", 16 * KIB, 16 * 1024 * KIB - 1, "16k and 16m-1",
                    &h->max_frame_size) < 0)
        goto out;
    h->max_concurrent_streams = (unsigned)streams;
    if (h->h2c && s->tls != NULL) {
        fg_config_fail(c, "h2c", "is for plaintext servers (a TLS server offers h2 by ALPN)");
        goto out;
    }
    rc = 0;
out:
    fg_config_pop(c, mark);
    return rc;
}
