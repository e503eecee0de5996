#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "common/config.h"
#include "master/metrics_view.h"
#include "shm/metrics.h"

static fg_config_t *load(const char *routes_json)
{
    char text[8192], err[512] = "";
    snprintf(text, sizeof(text),
             "{\"servers\":[{\"id\":\"main\",\"listen\":\"127.0.0.1:1\"}],"
             "\"routes\":%s,"
             "\"clusters\":[{\"id\":\"c\",\"destinations\":["
             "{\"id\":\"d1\",\"address\":\"http://127.0.0.1:2\"},"
             "{\"id\":\"d2\",\"address\":\"http://127.0.0.1:3\"}]}]}",
             routes_json);
    fg_config_t *cfg = fg_config_load_string("t.json", text, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

#define ROUTES_AB                                                                                  \
    "[{\"id\":\"a\",\"match\":{\"path\":\"/a\"},\"clusterId\":\"c\"},"                             \
    "{\"id\":\"b\",\"match\":{\"path\":\"/b\"},\"clusterId\":\"c\"}]"
#define ROUTES_A "[{\"id\":\"a\",\"match\":{\"path\":\"/a\"},\"clusterId\":\"c\"}]"

static fg_metrics_t *table(void)
{
    size_t n = (fg_metrics_zone_size() + 63) / 64 * 64;
    void *mem = aligned_alloc(64, n);
    assert_non_null(mem);
    fg_metrics_t *mt = fg_metrics_init(mem, n);
    assert_non_null(mt);
    return mt;
}

static uint64_t field(void *obj, int f)
{
    uint64_t v[FG_METRICS_FIELDS];
    fg_metrics_read(obj, v);
    return v[f];
}

/* Workers in different lanes, and two sharing one (records 1 and 17), add up exactly. */
static void test_lanes_sum(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *cfg = load(ROUTES_AB);
    assert_int_equal(fg_metrics_attach_table(mt, cfg, 1, 1, 1), 0);
    void *srv = cfg->servers[0].metrics, *ra = cfg->routes[0].metrics;
    int records[] = {0, 1, 17, 5};
    for (size_t w = 0; w < 4; w++) {
        fg_metrics_worker_start(mt, records[w]);
        for (int i = 0; i < 10; i++)
            fg_metrics_request(srv, ra, cfg->clusters[0].metrics, 200, 100, 7, 50, 0);
        fg_metrics_request(srv, ra, cfg->clusters[0].metrics, 404, 1, 1, 50, 2);
    }
    assert_int_equal(field(srv, FG_MS_REQUESTS + FG_MC_2XX), 40);
    assert_int_equal(field(srv, FG_MS_REQUESTS + FG_MC_4XX), 4);
    assert_int_equal(field(srv, FG_MS_BYTES_IN), 4 * 1001);
    assert_int_equal(field(srv, FG_MS_BYTES_OUT), 4 * 71);
    assert_int_equal(field(ra, FG_MR_REQUESTS + FG_MC_2XX), 40);
    assert_int_equal(field(cfg->clusters[0].metrics, FG_MCL_RETRIES), 8);
    /* route b and the destinations were not touched */
    assert_int_equal(field(cfg->routes[1].metrics, FG_MR_REQUESTS + FG_MC_2XX), 0);
    assert_int_equal(field(cfg->clusters[0].destinations[0].metrics, FG_MD_REQUESTS), 0);
    fg_metrics_worker_start(NULL, -1);
    fg_config_free(cfg);
    free(mt);
}

static void test_classes_and_buckets(void **state)
{
    assert_int_equal(fg_metrics_class(0), FG_MC_OTHER);
    assert_int_equal(fg_metrics_class(99), FG_MC_OTHER);
    assert_int_equal(fg_metrics_class(100), FG_MC_1XX);
    assert_int_equal(fg_metrics_class(299), FG_MC_2XX);
    assert_int_equal(fg_metrics_class(499), FG_MC_4XX);
    assert_int_equal(fg_metrics_class(599), FG_MC_5XX);
    assert_int_equal(fg_metrics_class(600), FG_MC_OTHER);

    fg_metrics_t *mt = table();
    fg_config_t *cfg = load(ROUTES_A);
    fg_metrics_attach_table(mt, cfg, 1, 1, 1);
    void *r = cfg->routes[0].metrics;
    /* the bound belongs to its bucket (le); above the last bound is +Inf */
    fg_metrics_request(NULL, r, NULL, 200, 0, 0, 1000, 0);
    fg_metrics_request(NULL, r, NULL, 200, 0, 0, 1001, 0);
    fg_metrics_request(NULL, r, NULL, 200, 0, 0, 0, 0);
    fg_metrics_request(NULL, r, NULL, 200, 0, 0, 10000000, 0);
    fg_metrics_request(NULL, r, NULL, 200, 0, 0, 10000001, 0);
    assert_int_equal(field(r, FG_MR_LATENCY + 0), 2);
    assert_int_equal(field(r, FG_MR_LATENCY + 1), 1);
    assert_int_equal(field(r, FG_MR_LATENCY + FG_METRICS_BUCKETS - 2), 1);
    assert_int_equal(field(r, FG_MR_LATENCY + FG_METRICS_BUCKETS - 1), 1);
    assert_int_equal(field(r, FG_MR_LATENCY_SUM), 1000 + 1001 + 10000000 + 10000001);

    void *d = cfg->clusters[0].destinations[0].metrics;
    fg_metrics_attempt(d);
    fg_metrics_attempt_done(d, 0, 0, 3000); /* pooled: no connect time */
    fg_metrics_attempt(d);
    fg_metrics_attempt_done(d, 0, 400, 3000);
    fg_metrics_attempt(d);
    fg_metrics_attempt_done(d, 1, 0, 0);
    assert_int_equal(field(d, FG_MD_REQUESTS), 3);
    assert_int_equal(field(d, FG_MD_FAILURES), 1);
    assert_int_equal(field(d, FG_MD_CONNECT + 0), 1);
    assert_int_equal(field(d, FG_MD_CONNECT_SUM), 400);
    assert_int_equal(field(d, FG_MD_RESPONSE + 2), 2);
    fg_config_free(cfg);
    free(mt);
}

/* An unchanged id keeps its counters across a reload; a removed id that comes back starts
 * from zero; objects of generations no longer alive are recycled. */
static void test_reload_keeps_and_resets(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *g1 = load(ROUTES_AB);
    fg_metrics_attach_table(mt, g1, 1, 1, 1);
    fg_metrics_request(g1->servers[0].metrics, g1->routes[0].metrics, NULL, 200, 0, 0, 5, 0);
    fg_metrics_request(NULL, g1->routes[1].metrics, NULL, 500, 0, 0, 5, 0);
    fg_metrics_attempt(g1->clusters[0].destinations[1].metrics);

    fg_config_t *g2 = load(ROUTES_A);
    assert_int_equal(fg_metrics_attach_table(mt, g2, 2, 1, 1), 0);
    assert_ptr_equal(g2->routes[0].metrics, g1->routes[0].metrics);
    assert_int_equal(field(g2->routes[0].metrics, FG_MR_REQUESTS + FG_MC_2XX), 1);
    assert_int_equal(field(g2->servers[0].metrics, FG_MS_REQUESTS + FG_MC_2XX), 1);
    assert_int_equal(field(g2->clusters[0].destinations[1].metrics, FG_MD_REQUESTS), 1);

    fg_config_t *g3 = load(ROUTES_AB);
    fg_metrics_attach_table(mt, g3, 3, 2, 1);
    assert_int_equal(field(g3->routes[1].metrics, FG_MR_REQUESTS + FG_MC_5XX), 0);
    assert_int_equal(field(g3->routes[0].metrics, FG_MR_REQUESTS + FG_MC_2XX), 1);
    size_t used = fg_metrics_used(mt);
    /* global, server, 2 routes, cluster, 2 destinations */
    assert_int_equal(used, 7);
    fg_config_free(g1);
    fg_config_free(g2);
    fg_config_free(g3);
    free(mt);
}

static fg_config_t *many_routes(const char *prefix, int n)
{
    size_t cap = (size_t)n * 80 + 16;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t len = (size_t)snprintf(s, cap, "[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"id\":\"%s%d\",\"match\":{\"path\":\"/%s%d\"},\"clusterId\":"
                                "\"c\"}",
                                i ? "," : "", prefix, i, prefix, i);
    snprintf(s + len, cap - len, "]");
    char err[512] = "";
    char *text = malloc(cap + 512);
    assert_non_null(text);
    snprintf(text, cap + 512,
             "{\"servers\":[{\"id\":\"main\",\"listen\":\"127.0.0.1:1\"}],\"routes\":%s,"
             "\"clusters\":[{\"id\":\"c\",\"destinations\":[{\"id\":\"d1\",\"address\":"
             "\"http://127.0.0.1:2\"}]}]}",
             s);
    fg_config_t *cfg = fg_config_load_string("t.json", text, err, sizeof(err));
    free(text);
    free(s);
    if (cfg == NULL)
        fail_msg("%s", err);
    return cfg;
}

static void test_full_table_and_recycling(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *big = many_routes("r", FG_METRICS_MAX_OBJECTS);
    /* global, server and 1024 routes come first: the last 2 routes, the cluster and its
     * destination do not fit, and nothing is refused */
    assert_int_equal(fg_metrics_attach_table(mt, big, 1, 1, 1), 4);
    assert_null(big->routes[FG_METRICS_MAX_OBJECTS - 1].metrics);
    fg_metrics_request(NULL, NULL, NULL, 200, 0, 0, 0, 0); /* no object: nothing to count */
    /* a generation of other routes while generation 1 still runs: no room but for the global
     * object and the server, which it shares */
    fg_config_t *other = many_routes("x", 10);
    assert_int_equal(fg_metrics_attach_table(mt, other, 2, 1, 1), 10 + 2);
    /* once generation 1 is gone its objects are recycled */
    assert_int_equal(fg_metrics_attach_table(mt, other, 3, 2, 2), 0);
    assert_non_null(other->routes[9].metrics);
    assert_int_equal(field(other->routes[9].metrics, FG_MR_REQUESTS + FG_MC_2XX), 0);
    fg_config_free(big);
    fg_config_free(other);
    free(mt);
}

static void test_gauges_and_worker_gone(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *cfg = load(ROUTES_A);
    fg_metrics_attach_table(mt, cfg, 1, 1, 1);
    fg_metrics_conn_open(FG_MG_WEBSOCKETS); /* before worker_start: a no-op */
    fg_metrics_worker_start(mt, 3);
    fg_metrics_conn_open(FG_MG_WEBSOCKETS);
    fg_metrics_conn_open(FG_MG_WEBSOCKETS);
    fg_metrics_conn_close(FG_MG_WEBSOCKETS);
    fg_metrics_worker_start(mt, 4);
    fg_metrics_conn_open(FG_MG_WEBSOCKETS);
    fg_metrics_conn_open(FG_MG_H2_STREAMS);
    assert_int_equal(fg_metrics_gauge(mt, FG_MG_WEBSOCKETS), 2);
    assert_int_equal(fg_metrics_gauge_total(mt, FG_MG_WEBSOCKETS), 3);
    fg_metrics_worker_gone(mt, 4); /* killed with one WebSocket and one stream open */
    assert_int_equal(fg_metrics_gauge(mt, FG_MG_WEBSOCKETS), 1);
    assert_int_equal(fg_metrics_gauge(mt, FG_MG_H2_STREAMS), 0);
    assert_int_equal(fg_metrics_gauge_total(mt, FG_MG_WEBSOCKETS), 3);
    fg_metrics_worker_start(NULL, -1);
    fg_config_free(cfg);
    free(mt);
}

/* ---- views ---- */

static char *render(const fg_metrics_snap_t *s,
                    int (*view)(const fg_metrics_snap_t *, struct evbuffer *))
{
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(view(s, b), 0);
    size_t n = evbuffer_get_length(b);
    char *text = malloc(n + 1);
    evbuffer_remove(b, text, n);
    text[n] = '\0';
    evbuffer_free(b);
    return text;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static fg_metrics_snap_t *sample_snap(fg_shm_t **shm, fg_config_t **cfg)
{
    *shm = fg_shm_new(16 << 20);
    assert_non_null(*shm);
    *cfg = load(ROUTES_AB);
    fg_metrics_attach(*shm, *cfg, 1, 1, 1);
    fg_metrics_t *mt = fg_metrics_zone(*shm);
    assert_non_null(mt);
    fg_metrics_worker_start(mt, 0);
    fg_config_t *c = *cfg;
    fg_metrics_request(c->servers[0].metrics, c->routes[0].metrics, c->clusters[0].metrics, 200, 10,
                       20, 2000, 1);
    fg_metrics_request(c->servers[0].metrics, c->routes[0].metrics, c->clusters[0].metrics, 200, 10,
                       20, 300000, 0);
    fg_metrics_request(c->servers[0].metrics, c->routes[0].metrics, c->clusters[0].metrics, 502, 10,
                       20, 20000000, 0);
    fg_metrics_attempt(c->clusters[0].destinations[1].metrics);
    fg_metrics_attempt_done(c->clusters[0].destinations[1].metrics, 0, 1500, 2000);
    fg_metrics_worker_start(NULL, -1);
    fg_metrics_process_t p = {.workers = 2,
                              .generation = 1,
                              .reloads = 3,
                              .reload_failures = 1,
                              .last_reload_result = 1,
                              .last_reload_time = 1700000000,
                              .start_time = 1600000000};
    fg_metrics_snap_t *s = fg_metrics_snap_new(c, *shm, &p, 0);
    assert_non_null(s);
    return s;
}

/* Open WebSockets per server add up over workers (maxWebSockets); a dead worker's share goes,
 * and a server without an object, or a worker without the table, reports -1. */
static void test_websockets_per_server_across_workers(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *cfg = load(ROUTES_A);
    fg_metrics_attach_table(mt, cfg, 1, 1, 1);
    void *srv = cfg->servers[0].metrics;
    uint64_t open = 99;
    assert_int_equal(fg_metrics_ws_count(srv, &open), -1); /* no worker_start yet */
    assert_int_equal(fg_metrics_ws_reserve(srv, 0), -1);
    fg_metrics_worker_start(mt, 3);
    assert_int_equal(fg_metrics_ws_reserve(srv, 0), 0);
    assert_int_equal(fg_metrics_ws_reserve(srv, 0), 0);
    fg_metrics_worker_start(mt, 200);
    assert_int_equal(fg_metrics_ws_reserve(srv, 0), 0);
    assert_int_equal(fg_metrics_ws_count(srv, &open), 0);
    assert_int_equal(open, 3);
    fg_metrics_ws_close(srv);
    fg_metrics_ws_close(srv); /* more closes than opens in this worker: stays at 0 */
    assert_int_equal(fg_metrics_ws_count(srv, &open), 0);
    assert_int_equal(open, 2);
    fg_metrics_worker_start(mt, 5);
    fg_metrics_ws_reserve(srv, 0);
    fg_metrics_worker_gone(mt, 3); /* died with two open */
    assert_int_equal(fg_metrics_ws_count(srv, &open), 0);
    assert_int_equal(open, 1);
    assert_int_equal(fg_metrics_ws_count(cfg->routes[0].metrics, &open), 0); /* another column */
    assert_int_equal(open, 0);
    int not_an_object;
    assert_int_equal(fg_metrics_ws_count((void *)&not_an_object, &open), -1);
    fg_metrics_worker_start(NULL, -1);
    fg_config_free(cfg);
    free(mt);
}

/* A reservation past the cap is refused and holds nothing; one that fits is counted in the
 * reserving worker's row, whatever other workers hold. */
static void test_websockets_reserve_respects_cap(void **state)
{
    fg_metrics_t *mt = table();
    fg_config_t *cfg = load(ROUTES_A);
    fg_metrics_attach_table(mt, cfg, 1, 1, 1);
    void *srv = cfg->servers[0].metrics;
    uint64_t open = 0;
    fg_metrics_worker_start(mt, 1);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    fg_metrics_worker_start(mt, 2);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 1); /* 3 held across two workers */
    assert_int_equal(fg_metrics_ws_count(srv, &open), 0);
    assert_int_equal(open, 3);
    fg_metrics_worker_gone(mt, 1); /* its two places come back */
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 1);
    fg_metrics_ws_close(srv);
    assert_int_equal(fg_metrics_ws_reserve(srv, 3), 0);
    assert_int_equal(fg_metrics_ws_count(srv, &open), 0);
    assert_int_equal(open, 3);
    fg_metrics_worker_start(NULL, -1);
    fg_config_free(cfg);
    free(mt);
}

static void test_prometheus_view(void **state)
{
    fg_shm_t *shm;
    fg_config_t *cfg;
    fg_metrics_snap_t *s = sample_snap(&shm, &cfg);
    char *t = render(s, fg_metrics_view_prometheus);
    assert_non_null(strstr(t, "fastgateway_route_requests_total{route=\"a\",code=\"2xx\"} 2\n"));
    assert_non_null(strstr(t, "fastgateway_route_requests_total{route=\"a\",code=\"5xx\"} 1\n"));
    assert_non_null(strstr(t, "fastgateway_route_requests_total{route=\"b\",code=\"2xx\"} 0\n"));
    /* cumulative buckets: 2 ms lands in le=0.0025, 300 ms in le=0.5, 20 s only in +Inf */
    assert_non_null(strstr(
        t, "fastgateway_route_request_duration_seconds_bucket{route=\"a\",le=\"0.001\"} 0\n"));
    assert_non_null(strstr(
        t, "fastgateway_route_request_duration_seconds_bucket{route=\"a\",le=\"0.0025\"} 1\n"));
    assert_non_null(
        strstr(t, "fastgateway_route_request_duration_seconds_bucket{route=\"a\",le=\"0.5\"} 2\n"));
    assert_non_null(
        strstr(t, "fastgateway_route_request_duration_seconds_bucket{route=\"a\",le=\"10\"} 2\n"));
    assert_non_null(strstr(
        t, "fastgateway_route_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"));
    assert_non_null(
        strstr(t, "fastgateway_route_request_duration_seconds_sum{route=\"a\"} 20.302000\n"));
    assert_non_null(strstr(t, "fastgateway_route_request_duration_seconds_count{route=\"a\"} 3\n"));
    assert_non_null(strstr(t, "fastgateway_server_requests_total{server=\"main\",code=\"5xx\"} 1"));
    assert_non_null(strstr(t, "fastgateway_server_received_bytes_total{server=\"main\"} 30\n"));
    assert_non_null(strstr(t, "fastgateway_cluster_retries_total{cluster=\"c\"} 1\n"));
    assert_non_null(strstr(t, "fastgateway_cluster_requests_total{cluster=\"c\"} 1\n"));
    assert_non_null(
        strstr(t, "fastgateway_destination_requests_total{cluster=\"c\",destination=\"d2\"} 1\n"));
    assert_non_null(
        strstr(t, "fastgateway_destination_requests_total{cluster=\"c\",destination=\"d1\"} 0\n"));
    assert_non_null(strstr(t, "fastgateway_destination_connect_duration_seconds_bucket{cluster="
                              "\"c\",destination=\"d2\",le=\"0.0025\"} 1\n"));
    assert_non_null(strstr(t, "fastgateway_process_reloads_total 3\n"));
    assert_non_null(strstr(t, "fastgateway_process_last_reload_timestamp_seconds 1700000000\n"));
    /* one HELP and one TYPE per family, before its samples */
    assert_int_equal(count(t, "# TYPE fastgateway_route_requests_total counter\n"), 1);
    assert_int_equal(count(t, "# HELP fastgateway_route_requests_total "), 1);
    assert_int_equal(count(t, "# TYPE fastgateway_route_request_duration_seconds histogram\n"), 1);
    assert_true(strstr(t, "# TYPE fastgateway_route_requests_total") <
                strstr(t, "fastgateway_route_requests_total{"));
    free(t);
    fg_metrics_snap_free(s);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

static void test_csv_and_json_views(void **state)
{
    fg_shm_t *shm;
    fg_config_t *cfg;
    fg_metrics_snap_t *s = sample_snap(&shm, &cfg);
    char *t = render(s, fg_metrics_view_csv);
    int header_fields = 0;
    char *line = strtok(t, "\n");
    assert_true(line && line[0] == '#');
    header_fields = count(line, ",") + 1;
    int lines = 0;
    while ((line = strtok(NULL, "\n")) != NULL) {
        assert_int_equal(count(line, ",") + 1, header_fields);
        lines++;
    }
    assert_int_equal(lines, 1 + 2 + 1 + 2); /* server, routes, cluster, destinations */
    free(t);
    t = render(s, fg_metrics_view_csv);
    assert_non_null(strstr(t, "\nserver,,main,0,2,0,0,1,0,0,3,30,60,"));
    assert_non_null(strstr(t, "\nroute,c,a,0,2,0,0,1,0,0,3,"));
    free(t);

    json_t *j = fg_metrics_view_json(s);
    json_t *route = json_array_get(json_object_get(j, "routes"), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(route, "requests"), "2xx")),
                     2);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(route, "latency"), "count")), 3);
    json_t *cl = json_array_get(json_object_get(j, "clusters"), 0);
    assert_int_equal(json_integer_value(json_object_get(cl, "retries")), 1);
    assert_int_equal(json_integer_value(json_object_get(cl, "requests")), 1);
    json_decref(j);
    fg_metrics_snap_free(s);
    fg_config_free(cfg);
    fg_shm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lanes_sum),
        cmocka_unit_test(test_classes_and_buckets),
        cmocka_unit_test(test_reload_keeps_and_resets),
        cmocka_unit_test(test_full_table_and_recycling),
        cmocka_unit_test(test_gauges_and_worker_gone),
        cmocka_unit_test(test_websockets_per_server_across_workers),
        cmocka_unit_test(test_websockets_reserve_respects_cap),
        cmocka_unit_test(test_prometheus_view),
        cmocka_unit_test(test_csv_and_json_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
