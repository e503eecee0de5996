#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/config.h"

#define SERVER "\"servers\": [{\"id\": \"s\", \"listen\": \"127.0.0.1:1\" %s}]"

static char err[512];

static fg_config_t *load(const char *server_extra, const char *top)
{
    char json[4096];
    char servers[1024];
    snprintf(servers, sizeof(servers), SERVER, server_extra);
    snprintf(json, sizeof(json), "{%s%s%s}", servers, top[0] ? ", " : "", top);
    return fg_config_load_string("t.json", json, err, sizeof(err));
}

static void expect_error(const char *server_extra, const char *top, const char *msg)
{
    fg_config_t *cfg = load(server_extra, top);
    if (cfg != NULL || strstr(err, msg) == NULL)
        fail_msg("expected \"%s\", got \"%s\"", msg, cfg ? "success" : err);
}

static void test_full_section_loads(void **state)
{
    fg_config_t *cfg = load(
        ", \"rateLimits\": [\"a\"], \"accessControl\": [\"bl\"], \"clientIpSource\": "
        "\"X-Forwarded-For\", \"trustedProxies\": [\"10.0.0.0/8\", \"::1\"]",
        "\"rateLimits\": [{\"id\": \"a\", \"type\": \"TokenBucket\", \"scope\": \"PerHeader\", "
        "\"header\": \"X-Tenant-Code\", \"maxRequests\": 10, \"window\": \"1m\", \"burst\": 20, "
        "\"methods\": [\"get\"], \"pathPattern\": \"/api/*\", \"ipPattern\": \"10.0.0.0/8\", "
        "\"dryRun\": true}], "
        "\"accessControl\": [{\"id\": \"bl\", \"type\": \"blacklist\", \"entries\": "
        "[\"1.2.3.4\", \"1.2.3.10-1.2.3.20\", \"2001:db8::/32\"]}], "
        "\"security\": {\"rateLimits\": [\"a\"]}, "
        "\"abnormalIp\": {\"window\": \"30s\", \"threshold\": 7, \"autoBlock\": "
        "{\"duration\": \"5m\"}}, \"shm\": {\"rateLimitZone\": \"2m\"}");
    assert_non_null(cfg);
    assert_int_equal(cfg->nratelimits, 1);
    fg_ratelimit_rule_t *r = &cfg->ratelimits[0];
    assert_int_equal(r->type, FG_RLT_TOKEN);
    assert_int_equal(r->scope, FG_RLS_PER_HEADER);
    assert_int_equal(r->window_ms, 60000);
    assert_int_equal(r->burst, 20);
    assert_string_equal(r->methods[0], "GET");
    assert_true(r->dry_run);
    assert_int_equal(cfg->acls[0].nentries, 3);
    assert_int_equal(cfg->servers[0].client_ip_source, FG_CIP_XFF);
    assert_int_equal(cfg->servers[0].ntrusted_proxies, 2);
    assert_int_equal(cfg->security.nratelimits, 1);
    assert_true(cfg->abnormal.enabled && cfg->abnormal.autoblock);
    assert_int_equal(cfg->abnormal.autoblock_threshold, 7);
    assert_int_equal(cfg->abnormal.autoblock_ms, 300000);
    assert_int_equal(cfg->shm_ratelimit_zone, 2 * 1024 * 1024);
    fg_config_free(cfg);
}

static void test_errors_are_precise(void **state)
{
    expect_error(", \"rateLimits\": [\"nope\"]", "",
                 "t.json: servers[0].rateLimits[0]: unknown rate limit \"nope\"");
    expect_error("", "\"security\": {\"accessControl\": [\"x\"]}",
                 "security.accessControl[0]: unknown access-control list \"x\"");
    expect_error("", "\"rateLimits\": [{\"id\": \"a\", \"window\": \"1s\"}]",
                 "rateLimits[0].maxRequests: is required");
    expect_error("", "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1}]",
                 "rateLimits[0].window: is required");
    expect_error("",
                 "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\", "
                 "\"scope\": \"PerHeader\"}]",
                 "rateLimits[0].header: is required with scope \"PerHeader\"");
    expect_error("",
                 "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\", "
                 "\"burst\": 5}]",
                 "rateLimits[0].burst: only applies to type \"TokenBucket\"");
    expect_error("",
                 "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\", "
                 "\"typo\": 5}]",
                 "rateLimits[0].typo: unknown key");
    expect_error("",
                 "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\", "
                 "\"ipPattern\": \"10.0.0.0/40\"}]",
                 "rateLimits[0].ipPattern: invalid CIDR");
    expect_error("",
                 "\"rateLimits\": [{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\", "
                 "\"pathPattern\": \"/a*b*\"}]",
                 "rateLimits[0].pathPattern:");
    expect_error("",
                 "\"accessControl\": [{\"id\": \"l\", \"type\": \"blacklist\", \"entries\": "
                 "[\"1.2.3.4\", \"1.2.3.999\"]}]",
                 "accessControl[0].entries[1]: \"1.2.3.999\": not an IP address");
    expect_error("", "\"accessControl\": [{\"id\": \"l\", \"entries\": []}]",
                 "accessControl[0].type: is required");
    expect_error("", "\"accessControl\": [{\"id\": \"autoBlock\", \"type\": \"blacklist\"}]",
                 "is reserved");
    expect_error(", \"clientIpSource\": \"X-Real-IP\"", "",
                 "servers[0].trustedProxies: is required when clientIpSource");
    expect_error(", \"trustedProxies\": [\"10.0.0.0/33\"]", "", "servers[0].trustedProxies[0]:");
    expect_error("", "\"abnormalIp\": {\"autoBlock\": {\"duration\": \"0s\"}}",
                 "abnormalIp.autoBlock.duration: must be greater than 0");
    expect_error("", "\"shm\": {\"rateLimitZone\": \"1k\"}",
                 "shm.rateLimitZone: must be between 64k and 4g");
    expect_error("",
                 "\"shm\": {\"size\": \"4m\", \"rateLimitZone\": \"4m\"}, \"rateLimits\": "
                 "[{\"id\": \"a\", \"maxRequests\": 1, \"window\": \"1s\"}]",
                 "must fit twice in shm.size");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_section_loads),
        cmocka_unit_test(test_errors_are_precise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
