/* The metrics listener: a master/http_server.h server in the master's event loop that answers
 * `GET <path>` with the Prometheus text exposition (config "metrics", docs/metrics.md). It is
 * served by the master, not the workers, because the master holds the view of every worker and
 * of the reloads; the admin listener (master/admin_http.c, docs/admin.md) serves the same text
 * beside its API. One request per connection (Connection: close), heads up to 8 KiB and 64
 * fields, no body, 64 connections at most, 10 s to send the request. */
#ifndef FG_METRICS_HTTP_H
#define FG_METRICS_HTTP_H

#include <stddef.h>

#include "common/config.h"

struct event_base;
struct evbuffer;

/* Append the body of a scrape to out; 0, or -1 to answer 500. */
typedef int (*fg_metrics_http_fn)(void *arg, struct evbuffer *out);

typedef struct fg_metrics_http_s fg_metrics_http_t;

/* Listen on cfg's metrics address; NULL with err filled on failure. cfg->metrics_listen must
 * be set. fn renders a scrape. */
fg_metrics_http_t *fg_metrics_http_new(struct event_base *base, const fg_config_t *cfg,
                                       fg_metrics_http_fn fn, void *arg, char *err, size_t errlen);
/* After a reload: keep *h when the address is unchanged (the path follows cfg), else listen on
 * the new address (or none) and close the old one. On failure *h is kept, err filled, -1. */
int fg_metrics_http_apply(fg_metrics_http_t **h, struct event_base *base, const fg_config_t *cfg,
                          fg_metrics_http_fn fn, void *arg, char *err, size_t errlen);
void fg_metrics_http_free(fg_metrics_http_t *h);
/* In a forked child: close the descriptors without touching the shared event base. */
void fg_metrics_http_close_in_child(const fg_metrics_http_t *h);

#endif
