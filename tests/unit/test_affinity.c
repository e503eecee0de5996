#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "shm/health.h"
#include "worker/upstream/affinity.h"

static fg_cluster_t cl;
static fg_destination_t d[3];
static fg_hdest_t h[3];
static fg_http_header_t hdrs[4];
static fg_request_t req;

static void setup_cluster(int policy, int failure)
{
    static const char *const ids[] = {"alpha", "beta", "gamma"};
    memset(&cl, 0, sizeof(cl));
    memset(&req, 0, sizeof(req));
    cl.id = "c";
    cl.destinations = d;
    cl.ndestinations = 3;
    cl.affinity.enabled = 1;
    cl.health.active = 1; /* the tests mark destinations unhealthy through the active state */
    cl.affinity.policy = policy;
    cl.affinity.failure_policy = failure;
    cl.affinity.key_name = policy == FG_AFF_CUSTOM_HEADER ? "X-Session-Key" : "aff";
    cl.affinity.cookie_http_only = 1;
    cl.affinity.cookie_max_age = -1;
    for (int i = 0; i < 3; i++) {
        memset(&d[i], 0, sizeof(d[i]));
        d[i].id = (char *)ids[i];
        fg_config_destination_hash(&d[i]);
        d[i].enabled = 1;
        d[i].weight = 1;
        fg_health_dest_init(&h[i], "c", ids[i]);
        d[i].state = &h[i];
    }
    req.headers = hdrs;
}

static void header(const char *name, const char *value)
{
    hdrs[req.nheaders].name = fg_str(name);
    hdrs[req.nheaders].value = fg_str(value);
    req.nheaders++;
}

static void test_cookie_binds_by_id(void **state)
{
    setup_cluster(FG_AFF_COOKIE, FG_AFF_REDISTRIBUTE);
    fg_affinity_t a;
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_NONE);
    assert_true(a.set);
    header("Cookie", "x=1; aff=beta; y=2");
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), 1);
    assert_false(a.set);
    /* quoted values (RFC 6265 cookie-value) */
    hdrs[0].value = fg_str("aff=\"gamma\"");
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), 2);
    /* a cookie naming nothing is ignored, and replaced */
    hdrs[0].value = fg_str("aff=nobody; affx=alpha");
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_NONE);
    assert_true(a.set);
}

static void test_hash_cookie_hides_id(void **state)
{
    setup_cluster(FG_AFF_HASH_COOKIE, FG_AFF_RETURN_503);
    char hex[17], cookie[64];
    fg_affinity_hash_id("gamma", hex);
    assert_int_equal(strlen(hex), 16);
    snprintf(cookie, sizeof(cookie), "aff=%s", hex);
    header("Cookie", cookie);
    fg_affinity_t a;
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), 2);
    /* the plain id names no destination for HashCookie: Return503Error answers 503
     * (YARP: DestinationNotFound goes to the failure policy) */
    hdrs[0].value = fg_str("aff=gamma");
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_FAIL);
    /* destination down: Return503Error */
    hdrs[0].value = fg_str(cookie);
    atomic_store(&h[2].admin, FG_ADMIN_MAINT);
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_FAIL);
    /* draining keeps its sessions */
    atomic_store(&h[2].admin, FG_ADMIN_DRAIN);
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), 2);
    /* unhealthy, Redistribute: balance and hand out a new cookie */
    atomic_store(&h[2].active, FG_HS_UNHEALTHY);
    cl.affinity.failure_policy = FG_AFF_REDISTRIBUTE;
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_NONE);
    assert_true(a.set);
}

static void test_custom_header_key_is_sticky_and_spreads(void **state)
{
    setup_cluster(FG_AFF_CUSTOM_HEADER, FG_AFF_REDISTRIBUTE);
    header("X-Session-Key", "");
    int seen[3] = {0};
    char key[32];
    fg_affinity_t a;
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        hdrs[0].value = fg_str(key);
        int first = fg_affinity_resolve(&cl, &req, 0, &a);
        assert_true(first >= 0);
        assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), first);
        seen[first]++;
    }
    assert_true(seen[0] > 5 && seen[1] > 5 && seen[2] > 5);
    /* a key's destination goes down: it moves, and only its keys move */
    int before[60];
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        hdrs[0].value = fg_str(key);
        before[i] = fg_affinity_resolve(&cl, &req, 0, &a);
    }
    atomic_store(&h[0].admin, FG_ADMIN_MAINT);
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        hdrs[0].value = fg_str(key);
        int now = fg_affinity_resolve(&cl, &req, 0, &a);
        assert_true(now == 1 || now == 2);
        if (before[i] != 0)
            assert_int_equal(now, before[i]);
    }
    /* a key that is a destination's hash (as handed out) binds to it */
    char hex[17];
    fg_affinity_hash_id("beta", hex);
    hdrs[0].value = fg_str(hex);
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), 1);
}

static void test_tenant_key(void **state)
{
    setup_cluster(FG_AFF_CUSTOM_HEADER, FG_AFF_REDISTRIBUTE);
    cl.affinity.key_source = FG_AFF_KEY_TENANT;
    fg_affinity_t a;
    int anon = fg_affinity_resolve(&cl, &req, 0, &a);
    assert_true(anon >= 0);
    assert_true(fg_str_eq(a.key, FG_STR_LIT("anonymous")));
    assert_false(a.set);
    req.tenant = FG_STR_LIT("acme");
    int acme = fg_affinity_resolve(&cl, &req, 0, &a);
    assert_true(fg_str_eq(a.key, FG_STR_LIT("acme")));
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), acme);
    /* disabled: nothing */
    cl.affinity.enabled = 0;
    assert_int_equal(fg_affinity_resolve(&cl, &req, 0, &a), FG_AFFINITY_NONE);
    assert_false(a.set);
}

static void test_response_field(void **state)
{
    setup_cluster(FG_AFF_COOKIE, FG_AFF_REDISTRIBUTE);
    fg_pool_t *pool = fg_pool_new(1024);
    fg_str_t n, v;
    cl.affinity.cookie_domain = "example.com";
    cl.affinity.cookie_secure = 1;
    cl.affinity.cookie_same_site = FG_SAMESITE_STRICT;
    cl.affinity.cookie_max_age = 60;
    assert_int_equal(fg_affinity_response(&cl, 1, pool, &n, &v), 0);
    assert_true(fg_str_eq(n, FG_STR_LIT("Set-Cookie")));
    assert_true(fg_str_eq(v, FG_STR_LIT("aff=beta; Path=/; Domain=example.com; Max-Age=60; "
                                        "HttpOnly; Secure; SameSite=Strict")));
    cl.affinity.policy = FG_AFF_CUSTOM_HEADER;
    cl.affinity.key_name = "X-Session-Key";
    char hex[17];
    fg_affinity_hash_id("beta", hex);
    assert_int_equal(fg_affinity_response(&cl, 1, pool, &n, &v), 0);
    assert_true(fg_str_eq(n, FG_STR_LIT("X-Session-Key")) && fg_str_eq(v, fg_str(hex)));
    fg_pool_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_binds_by_id),
        cmocka_unit_test(test_hash_cookie_hides_id),
        cmocka_unit_test(test_custom_header_key_is_sticky_and_spreads),
        cmocka_unit_test(test_tenant_key),
        cmocka_unit_test(test_response_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
