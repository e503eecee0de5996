/* "metrics": the master's metrics listener (master/metrics_http.c, docs/metrics.md). */
#include <stdlib.h>
#include <string.h>

#include "common/config_impl.h"

/* Absent: no listener. "listen" is required inside; "path" defaults to "/metrics". The
 * listener must not take a server's address: the master binds it without SO_REUSEPORT. */
int fg_config_load_metrics(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {"listen", "path", NULL};
    fg_config_t *cfg = c->cfg;
    json_t *m = NULL;
    int rc = fg_config_get_object(c, root, "metrics", keys, &m);
    if (rc <= 0)
        return rc;
    size_t mark = fg_config_push_key(c, "metrics");
    cfg->metrics_path = fg_config_xstrdup("/metrics");
    if (fg_config_require_string(c, m, "listen", &cfg->metrics_listen) < 0 ||
        fg_config_get_string(c, m, "path", 1, &cfg->metrics_path) < 0)
        goto fail;
    if (fg_config_parse_listen(cfg->metrics_listen, &cfg->metrics_addr, &cfg->metrics_addrlen) <
        0) {
        fg_config_fail(c, "listen", "\"%s\" is not a valid listen address (use \"IP:PORT\")",
                       cfg->metrics_listen);
        goto fail;
    }
    if (cfg->metrics_path[0] != '/' || strpbrk(cfg->metrics_path, "? \t") != NULL) {
        fg_config_fail(c, "path", "must start with \"/\" and hold no query or blank");
        goto fail;
    }
    for (size_t i = 0; i < cfg->nservers; i++) {
        if (strcmp(cfg->servers[i].listen, cfg->metrics_listen) == 0) {
            fg_config_fail(c, "listen", "\"%s\" is the address of servers[%zu]",
                           cfg->metrics_listen, i);
            goto fail;
        }
    }
    fg_config_pop(c, mark);
    return 0;
fail:
    fg_config_pop(c, mark);
    return -1;
}

void fg_config_free_metrics(fg_config_t *cfg)
{
    free(cfg->metrics_listen);
    free(cfg->metrics_path);
}
