#include "master/metrics_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "master/http_server.h"
#include "master/metrics_view.h"

#define MAX_CONNS 64
#define MAX_HEAD 8192
#define MAX_FIELDS 64
#define TIMEOUT_MS 10000

struct fg_metrics_http_s {
    fg_http_server_t *srv;
    fg_http_server_conf_t conf;
    char *listen;
    char *path;
    fg_metrics_http_fn fn;
    void *arg;
};

/* Only GET and HEAD of the configured path are served; the query is ignored. */
static void serve(void *arg, fg_http_server_conn_t *c, const fg_http_server_req_t *req)
{
    fg_metrics_http_t *h = arg;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        /* RFC 9110 15.5.6: a 405 names the methods the resource allows */
        fg_http_server_respond(c, 405, NULL, NULL, "Allow: GET, HEAD\r\n", NULL);
        return;
    }
    if (strcmp(req->path, h->path) != 0) {
        fg_http_server_respond(c, 404, NULL, NULL, NULL, NULL);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || h->fn(h->arg, body) != 0)
        fg_http_server_respond(c, 500, NULL, NULL, NULL, NULL);
    else
        fg_http_server_respond(c, 200, FG_METRICS_CONTENT_TYPE, NULL, NULL, body);
    if (body)
        evbuffer_free(body);
}

fg_metrics_http_t *fg_metrics_http_new(struct event_base *base, const fg_config_t *cfg,
                                       fg_metrics_http_fn fn, void *arg, char *err, size_t errlen)
{
    fg_metrics_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->listen = strdup(cfg->metrics_listen)) == NULL ||
        (h->path = strdup(cfg->metrics_path)) == NULL) {
        snprintf(err, errlen, "metrics: out of memory");
        goto out_free;
    }
    h->fn = fn;
    h->arg = arg;
    h->conf = (fg_http_server_conf_t){
        .max_head = MAX_HEAD,
        .max_fields = MAX_FIELDS,
        .max_conns = MAX_CONNS,
        .timeout_ms = TIMEOUT_MS,
        .handler = serve,
        .arg = h,
    };
    char label[300];
    snprintf(label, sizeof(label), "metrics.listen %s", cfg->metrics_listen);
    h->srv = fg_http_server_new(base, (const struct sockaddr *)&cfg->metrics_addr,
                                cfg->metrics_addrlen, label, &h->conf, err, errlen);
    if (h->srv == NULL)
        goto out_free;
    return h;
out_free:
    if (h) {
        free(h->path);
        free(h->listen);
    }
    free(h);
    return NULL;
}

int fg_metrics_http_apply(fg_metrics_http_t **h, struct event_base *base, const fg_config_t *cfg,
                          fg_metrics_http_fn fn, void *arg, char *err, size_t errlen)
{
    fg_metrics_http_t *cur = *h;
    if (cur && cfg->metrics_listen && strcmp(cur->listen, cfg->metrics_listen) == 0) {
        char *path = strdup(cfg->metrics_path);
        if (path == NULL) {
            snprintf(err, errlen, "metrics: out of memory");
            return -1;
        }
        free(cur->path);
        cur->path = path;
        return 0;
    }
    fg_metrics_http_t *next = NULL;
    if (cfg->metrics_listen) {
        /* the new listener first: when it cannot listen, the old one keeps serving */
        next = fg_metrics_http_new(base, cfg, fn, arg, err, errlen);
        if (next == NULL)
            return -1;
    }
    fg_metrics_http_free(cur);
    *h = next;
    return 0;
}

void fg_metrics_http_free(fg_metrics_http_t *h)
{
    if (h == NULL)
        return;
    fg_http_server_free(h->srv);
    free(h->path);
    free(h->listen);
    free(h);
}

void fg_metrics_http_close_in_child(const fg_metrics_http_t *h)
{
    if (h)
        fg_http_server_close_in_child(h->srv);
}
