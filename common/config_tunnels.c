/* "tunnels" (docs/tunnels.md): the path agents connect on, their liveness settings, and the
 * agents allowed in, each with its secret. The secrets are read here, by the master, at every
 * load: a worker never opens a secret file, and a changed secret takes effect on reload. */
#include <stdlib.h>
#include <string.h>

#include "common/config_impl.h"
#include "common/secret.h"
#include "common/tunnel_proto.h"

_Static_assert(sizeof(((fg_tunnel_agent_t *)0)->secret) >= FG_TUNNEL_SECRET_MAX,
               "fg_tunnel_agent_t.secret holds the longest secret");

int fg_config_tunnel_agent(const fg_config_t *cfg, const char *id, size_t len)
{
    for (size_t i = 0; i < cfg->tunnels.nagents; i++) {
        const char *a = cfg->tunnels.agents[i].id;
        if (strlen(a) == len && memcmp(a, id, len) == 0)
            return (int)i;
    }
    return -1;
}

static int load_agent(fg_config_ctx_t *c, const json_t *o, void *out)
{
    static const char *const keys[] = {"id", "secretFile", NULL};
    fg_tunnel_agent_t *a = out;
    char *file = NULL, why[160];
    if (!json_is_object(o))
        return fg_config_fail(c, NULL, "expected an object, got %s", fg_config_type_name(o));
    if (fg_config_check_keys(c, o, keys) < 0 || fg_config_require_string(c, o, "id", &a->id) < 0 ||
        fg_config_require_string(c, o, "secretFile", &file) < 0) {
        free(file);
        return -1;
    }
    a->secret_file = fg_config_abs_path(c, file);
    free(file);
    if (!fg_tunnel_id_valid(a->id, strlen(a->id)))
        return fg_config_fail(c, "id", "must be 1 to %d characters of A-Z a-z 0-9 . _ -",
                              FG_TUNNEL_ID_MAX);
    int n = fg_secret_load(a->secret_file, a->secret, FG_TUNNEL_SECRET_MAX, FG_TUNNEL_SECRET_MIN,
                           why, sizeof(why));
    if (n < 0)
        return fg_config_fail(c, "secretFile", "%s: %s", a->secret_file, why);
    a->secret_len = (size_t)n;
    return 0;
}

/* The handshake timeout bounds: below 100 ms an agent across a slow link cannot answer the
 * challenge in time; past 5 minutes silent connections hold handshake slots for too long. */
#define HANDSHAKE_MIN_MS 100
#define HANDSHAKE_MAX_MS (5 * 60 * 1000)

static int load_limits(fg_config_ctx_t *c, const json_t *t, fg_tunnels_config_t *tc)
{
    long long hb = 30, grace = 10, fails = 10;
    tc->handshake_timeout_ms = FG_TUNNEL_HANDSHAKE_TIMEOUT_MS;
    if (fg_config_get_int(c, t, "heartbeatSeconds", 1, 86400, &hb) < 0 ||
        fg_config_get_int(c, t, "graceSeconds", 1, 86400, &grace) < 0 ||
        fg_config_get_int(c, t, "authFailuresPerMinute", 1, 1000000, &fails) < 0 ||
        fg_config_get_duration(c, t, "handshakeTimeout", &tc->handshake_timeout_ms) < 0)
        return -1;
    if (tc->handshake_timeout_ms < HANDSHAKE_MIN_MS || tc->handshake_timeout_ms > HANDSHAKE_MAX_MS)
        return fg_config_fail(c, "handshakeTimeout", "must be between 100ms and 5m");
    tc->heartbeat_ms = (uint64_t)hb * 1000;
    tc->grace_ms = (uint64_t)grace * 1000;
    tc->auth_failures_max = (unsigned)fails;
    return 0;
}

/* Absent: no tunnels (a tunnel:// destination or acceptTunnels is then an error, checked by
 * their loaders). Loaded before servers and clusters, which refer to it. */
int fg_config_load_tunnels(fg_config_ctx_t *c, const json_t *root)
{
    static const char *const keys[] = {"path",
                                       "heartbeatSeconds",
                                       "graceSeconds",
                                       "authFailuresPerMinute",
                                       "handshakeTimeout",
                                       "agents",
                                       NULL};
    fg_tunnels_config_t *tc = &c->cfg->tunnels;
    json_t *t = NULL;
    int rc = fg_config_get_object(c, root, "tunnels", keys, &t);
    if (rc <= 0)
        return rc;
    size_t mark = fg_config_push_key(c, "tunnels");
    tc->enabled = 1;
    tc->path = fg_config_xstrdup("/_fg/tunnel");
    void *items = NULL;
    if (fg_config_get_string(c, t, "path", 1, &tc->path) < 0 || load_limits(c, t, tc) < 0)
        goto fail;
    if (tc->path[0] != '/' || strpbrk(tc->path, "? \t#") != NULL) {
        fg_config_fail(c, "path", "must start with \"/\" and hold no query or blank");
        goto fail;
    }
    rc = fg_config_load_list(c, t, "agents", sizeof(fg_tunnel_agent_t),
                             offsetof(fg_tunnel_agent_t, id), load_agent, &items, &tc->nagents);
    tc->agents = items;
    if (rc < 0)
        goto fail;
    if (tc->nagents > FG_TUNNEL_AGENTS_MAX) {
        fg_config_fail(c, "agents", "more than %d agents", FG_TUNNEL_AGENTS_MAX);
        goto fail;
    }
    fg_config_pop(c, mark);
    return 0;
fail:
    fg_config_pop(c, mark);
    return -1;
}

void fg_config_free_tunnels(fg_config_t *cfg)
{
    fg_tunnels_config_t *tc = &cfg->tunnels;
    for (size_t i = 0; i < tc->nagents; i++) {
        fg_tunnel_agent_t *a = &tc->agents[i];
        free(a->id);
        free(a->secret_file);
        /* the secret must not linger in freed memory */
        explicit_bzero(a->secret, sizeof(a->secret));
    }
    free(tc->agents);
    free(tc->path);
    memset(tc, 0, sizeof(*tc));
}
