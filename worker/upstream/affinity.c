#include "worker/upstream/affinity.h"

#include <stdio.h>
#include <string.h>

#include "common/hash.h"
#include "shm/health.h"

void fg_affinity_hash_id(const char *id, char out[17])
{
    fg_destination_t d = {.id = (char *)id};
    fg_config_destination_hash(&d);
    memcpy(out, d.id_hash_hex, 17);
}

/* Bound destinations may take a request unless disabled, in maintenance or unhealthy; a
 * draining destination still serves the sessions it has (HAProxy's drain). */
static int bound_ok(const fg_cluster_t *cl, size_t i, uint64_t now_ms)
{
    const fg_destination_t *d = &cl->destinations[i];
    const fg_hdest_t *h = d->state;
    if (!d->enabled)
        return 0;
    return h == NULL ||
           (fg_health_admin(h) != FG_ADMIN_MAINT && fg_health_usable(h, &cl->health, now_ms));
}

/* The value of cookie `name` in the request's Cookie fields (RFC 6265 5.4), or empty. */
static fg_str_t cookie_value(const fg_request_t *req, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!fg_str_ieq(req->headers[i].name, FG_STR_LIT("Cookie")))
            continue;
        const char *p = req->headers[i].value.base, *end = p + req->headers[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *pair_end = semi ? semi : end;
            const char *eq = memchr(p, '=', (size_t)(pair_end - p));
            if (eq && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
                const char *v = eq + 1;
                size_t vl = (size_t)(pair_end - v);
                while (vl > 0 && v[vl - 1] == ' ')
                    vl--;
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                    v++;
                    vl -= 2;
                }
                return (fg_str_t){v, vl};
            }
            p = pair_end;
        }
    }
    return FG_STR_NULL;
}

/* The destination whose id (or id hash, precomputed at load) is key, or -1. */
static int by_id(const fg_cluster_t *cl, fg_str_t key, int hashed)
{
    for (size_t i = 0; i < cl->ndestinations; i++) {
        const fg_destination_t *d = &cl->destinations[i];
        const char *id = hashed ? d->id_hash_hex : d->id;
        if (strlen(id) == key.len && memcmp(id, key.base, key.len) == 0)
            return (int)i;
    }
    return -1;
}

/* Rendezvous hashing: every destination scores hash(key, id); the highest score that may
 * take the request wins. Adding or removing a destination moves only the keys it wins or
 * loses, and a down destination's keys spread over the others instead of piling on one. */
static int rendezvous(const fg_cluster_t *cl, fg_str_t key, uint64_t now_ms, int only_first)
{
    uint64_t kh = fg_hash_fnv1a(FG_HASH_FNV_BASIS, key.base, key.len);
    int best = -1, first = -1;
    uint64_t best_score = 0, first_score = 0;
    for (size_t i = 0; i < cl->ndestinations; i++) {
        if (!cl->destinations[i].enabled)
            continue;
        uint64_t s = fg_hash_mix64(kh ^ cl->destinations[i].id_hash);
        if (first < 0 || s > first_score) {
            first = (int)i;
            first_score = s;
        }
        if (bound_ok(cl, i, now_ms) && (best < 0 || s > best_score)) {
            best = (int)i;
            best_score = s;
        }
    }
    if (only_first)
        return first;
    return best;
}

static size_t header_count(const fg_request_t *req, fg_str_t name)
{
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        n += fg_str_ieq(req->headers[i].name, name);
    return n;
}

/* A key that names no destination or cannot be read: Return503Error answers 503, Redistribute
 * balances and binds the request afresh (YARP's affinity failure policies). */
static int key_failed(const fg_affinity_config_t *a, fg_affinity_t *out)
{
    if (a->failure_policy == FG_AFF_RETURN_503)
        return FG_AFFINITY_FAIL;
    out->set = 1;
    return FG_AFFINITY_NONE;
}

int fg_affinity_resolve(const fg_cluster_t *cl, const fg_request_t *req, uint64_t now_ms,
                        fg_affinity_t *out)
{
    const fg_affinity_config_t *a = &cl->affinity;
    memset(out, 0, sizeof(*out));
    if (!a->enabled)
        return FG_AFFINITY_NONE;
    fg_str_t key = FG_STR_NULL;
    int di = -1, keyed = 0;
    if (a->key_source == FG_AFF_KEY_TENANT) {
        key = req->tenant.len ? req->tenant : FG_STR_LIT("anonymous");
        keyed = 1;
    } else if (a->policy == FG_AFF_CUSTOM_HEADER) {
        const fg_http_header_t *h = fg_request_header(req, fg_str(a->key_name));
        if (h == NULL || h->value.len == 0) {
            out->set = 1;
            return FG_AFFINITY_NONE;
        }
        /* Two fields are ambiguous: a failed key extraction, for the failure policy
         * (YARP's CustomHeaderSessionAffinityPolicy). */
        if (header_count(req, fg_str(a->key_name)) > 1)
            return key_failed(a, out);
        key = h->value;
        di = by_id(cl, key, 1);
        if (di < 0)
            di = by_id(cl, key, 0);
        keyed = di < 0;
    } else {
        key = cookie_value(req, a->key_name);
        if (key.len == 0) {
            out->set = 1;
            return FG_AFFINITY_NONE;
        }
        di = by_id(cl, key, a->policy == FG_AFF_HASH_COOKIE);
        if (di < 0) /* a stale or forged cookie names nothing (YARP: DestinationNotFound) */
            return key_failed(a, out);
    }
    out->key = key;
    if (keyed)
        di = rendezvous(cl, key, now_ms, 1);
    if (di >= 0 && bound_ok(cl, (size_t)di, now_ms))
        return di;
    if (a->failure_policy == FG_AFF_RETURN_503)
        return FG_AFFINITY_FAIL;
    if (keyed) {
        int next = rendezvous(cl, key, now_ms, 0);
        if (next >= 0)
            return next;
    }
    out->set = a->policy != FG_AFF_CUSTOM_HEADER || a->key_source != FG_AFF_KEY_TENANT;
    return FG_AFFINITY_NONE;
}

static const char *const same_site[] = {NULL, "Lax", "Strict", "None"};

int fg_affinity_response(const fg_cluster_t *cl, size_t di, fg_pool_t *pool, fg_str_t *name,
                         fg_str_t *value)
{
    const fg_affinity_config_t *a = &cl->affinity;
    const fg_destination_t *d = &cl->destinations[di];
    const char *id = a->policy == FG_AFF_COOKIE ? d->id : d->id_hash_hex;
    if (a->policy == FG_AFF_CUSTOM_HEADER) {
        *name = fg_str(a->key_name);
        *value = fg_pool_str(pool, fg_str(id));
        return value->base ? 0 : -1;
    }
    /* RFC 6265 4.1.1: name=value then attributes. */
    char age[32] = "";
    if (a->cookie_max_age >= 0)
        snprintf(age, sizeof(age), "; Max-Age=%lld", (long long)a->cookie_max_age);
    const char *ss = same_site[a->cookie_same_site & 3];
    char *s = fg_pool_printf(
        pool, "%s=%s; Path=%s%s%s%s%s%s%s%s", a->key_name, id,
        a->cookie_path ? a->cookie_path : "/", a->cookie_domain ? "; Domain=" : "",
        a->cookie_domain ? a->cookie_domain : "", age, a->cookie_http_only ? "; HttpOnly" : "",
        a->cookie_secure ? "; Secure" : "", ss ? "; SameSite=" : "", ss ? ss : "");
    if (s == NULL)
        return -1;
    *name = FG_STR_LIT("Set-Cookie");
    *value = fg_str(s);
    return 0;
}
