/* libFuzzer target: the HTTP/2 front end (worker/http/http2.c) fed what a client sends. The
 * input follows the connection preface on a socket pair and goes through the same conn
 * callbacks, nghttp2 session and handlers (direct, redirect, the JSON errors) as a real
 * connection; the server's output is read and dropped. Whatever the bytes, the session must
 * end cleanly: no crash, no leak (ASan), no undefined behaviour (UBSan). */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/config.h"
#include "common/log.h"
#include "tables/route_table.h"
#include "worker/core/conn.h"
#include "worker/core/frontend.h"
#include "worker/http/http2.h"
#include "worker/http/request.h"

static const char config_json[] =
    "{\"workers\": 1, \"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\","
    " \"http2\": {\"h2c\": true, \"maxConcurrentStreams\": 8}}],"
    " \"routes\": [{\"id\": \"d\", \"match\": {\"path\": \"/d/{**r}\"},"
    "  \"direct\": {\"status\": 200, \"body\": \"hello\"}},"
    " {\"id\": \"r\", \"match\": {\"path\": \"/r/{**r}\"},"
    "  \"redirect\": {\"status\": 301, \"location\": \"/d/{r}\"}}]}";

static fg_config_t *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    cfg = fg_config_load_string("fuzz.json", config_json, err, sizeof(err));
    if (cfg == NULL || fg_route_table_build(cfg, err, sizeof(err)) != 0)
        abort();
    fg_log_set_level(FG_LOG_ERROR);
    return 0;
}

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return 0;
    fg_worker_t w;
    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.pid = 1;
    w.base = event_base_new();
    w.scratch = evbuffer_new();
    fg_conn_t *c = fg_conn_new(w.base, sv[0], NULL, NULL);
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    peer.ss_family = AF_UNIX;
    if (c == NULL || fg_http2_adopt(&w, &cfg->servers[0], c, &peer, 0) != 0)
        abort();
    /* What does not fit the socket buffer at once follows as the server reads. */
    size_t off = 0, total = sizeof(preface) - 1 + size;
    uint8_t *in = malloc(total ? total : 1);
    memcpy(in, preface, sizeof(preface) - 1);
    if (size)
        memcpy(in + sizeof(preface) - 1, data, size);
    for (int round = 0; round < 64 && w.sessions != NULL; round++) {
        if (off < total) {
            ssize_t n = write(sv[1], in + off, total - off);
            if (n > 0)
                off += (size_t)n;
            if (off == total)
                shutdown(sv[1], SHUT_WR);
        }
        event_base_loop(w.base, EVLOOP_NONBLOCK);
        drain(sv[1]);
    }
    const fg_frontend_t *fes[] = {&fg_http2_frontend};
    fg_frontend_close_all(&w, fes, 1);
    fg_request_pools_free(&w);
    evbuffer_free(w.scratch);
    event_base_free(w.base);
    close(sv[1]);
    free(in);
    return 0;
}
