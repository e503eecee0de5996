/* Unit tests for worker/http/transform.c. Routes and destinations are built by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/path.h"
#include "worker/http/transform.h"

#include "fake_request.h"

#define S(x) FG_STR_LIT(x)
#define MAXTX 16

typedef struct {
    fg_pool_t *pool;
    fg_route_t route;
    fg_transform_t tx[MAXTX];
    fg_destination_t dest;
    fg_request_t *req;
    fg_outreq_t out;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    fx->pool = fg_pool_new(16384);
    fx->route.id = "r";
    fx->route.kind = FG_ROUTE_CLUSTER;
    fx->route.transforms = fx->tx;
    fx->dest.id = "d1";
    fx->dest.host = "10.1.1.1";
    fx->dest.port = 9000;
    fx->dest.base_path = "";
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    fg_pool_free(fx->pool);
    free(fx);
    return 0;
}

static fg_transform_t *add(fx_t *fx, int kind, const char *name, const char *value)
{
    assert_true(fx->route.ntransforms < MAXTX);
    fg_transform_t *t = &fx->tx[fx->route.ntransforms++];
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->name = (char *)name;
    t->value = (char *)value;
    return t;
}

static fg_transform_t *add_xf(fx_t *fx, int xf_for, int xf_proto, int xf_host, int xf_prefix)
{
    fg_transform_t *t = add(fx, FG_TX_X_FORWARDED, NULL, NULL);
    t->xf_for = xf_for;
    t->xf_proto = xf_proto;
    t->xf_host = xf_host;
    t->xf_prefix = xf_prefix;
    return t;
}

/* A request for fx->route from a method, raw target, Host and "name", "value" pairs + NULL. */
static fg_request_t *mkreq(fx_t *fx, const char *method, const char *target, const char *host, ...)
{
    va_list ap;
    va_start(ap, host);
    fg_request_t *req = fake_request_va(fx->pool, method, target, host, ap);
    va_end(ap);
    req->route = &fx->route;
    strcpy(req->client_ip, "10.0.0.1");
    strcpy(req->request_id, "req-1");
    fx->req = req;
    return req;
}

static void run(fx_t *fx)
{
    memset(&fx->out, 0, sizeof(fx->out));
    assert_int_equal(fg_transform_request(fx->req, &fx->dest, &fx->out), 0);
}

/* The joined value of a header in the output, or NULL when absent; fails on duplicates. */
static void expect_header(const fg_headers_t *h, const char *name, const char *want)
{
    size_t count = 0;
    const fg_http_header_t *f = NULL;
    for (size_t i = 0; i < h->n; i++) {
        if (fg_str_ieq(h->v[i].name, fg_str(name))) {
            count++;
            f = &h->v[i];
        }
    }
    if (want == NULL) {
        if (count)
            fail_msg("%s should be absent, is \"%.*s\"", name, (int)f->value.len, f->value.base);
        return;
    }
    if (count != 1)
        fail_msg("%s present %zu times, want once", name, count);
    if (!fg_str_eq(f->value, fg_str(want)))
        fail_msg("%s = \"%.*s\", want \"%s\"", name, (int)f->value.len, f->value.base, want);
}

static void expect_str(fg_str_t got, const char *want)
{
    if (!fg_str_eq(got, fg_str(want)))
        fail_msg("got \"%.*s\", want \"%s\"", (int)got.len, got.base, want);
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/a/b?x=1", "gw.example.com", "Accept", "*/*", "User-Agent", "t", NULL);
    run(fx);
    expect_str(fx->out.method, "GET");
    expect_str(fx->out.path, "/a/b");
    expect_str(fx->out.query, "x=1");
    expect_header(&fx->out.headers, "Accept", "*/*");
    expect_header(&fx->out.headers, "User-Agent", "t");
    expect_header(&fx->out.headers, "Host", "10.1.1.1:9000");
    expect_header(&fx->out.headers, "X-Request-Id", "req-1");
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
    expect_header(&fx->out.headers, "X-Forwarded-Proto", "http");
    expect_header(&fx->out.headers, "X-Forwarded-Host", "gw.example.com");
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
}

static void test_hop_by_hop_dropped(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/", "h", "Connection", "keep-alive, X-Secret", "Keep-Alive", "timeout=5",
          "TE", "trailers", "Transfer-Encoding", "chunked", "Upgrade", "websocket", "Trailer",
          "X-T", "Proxy-Connection", "close", "Proxy-Authorization", "Basic x",
          "Proxy-Authenticate", "Basic", "X-Secret", "s", "connection", "x-other", "X-Other", "o",
          "X-Kept", "k", NULL);
    run(fx);
    const char *gone[] = {"Connection",
                          "Keep-Alive",
                          "TE",
                          "Transfer-Encoding",
                          "Upgrade",
                          "Trailer",
                          "Proxy-Connection",
                          "Proxy-Authorization",
                          "Proxy-Authenticate",
                          "X-Secret",
                          "X-Other"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        expect_header(&fx->out.headers, gone[i], NULL);
    expect_header(&fx->out.headers, "X-Kept", "k");
}

static void test_incoming_request_id_replaced(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/", "h", "X-Request-Id", "spoofed", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Request-Id", "req-1");
    mkreq(fx, "GET", "/", "h", "X-Request-Id", "spoofed", NULL);
    fx->req->request_id[0] = '\0';
    run(fx);
    expect_header(&fx->out.headers, "X-Request-Id", NULL);
}

static void test_no_route(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "DELETE", "/x", "h", "A", "1", NULL);
    fx->req->route = NULL;
    run(fx);
    expect_str(fx->out.method, "DELETE");
    expect_header(&fx->out.headers, "A", "1");
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
}

/* ---- X-Forwarded ---- */

static void test_xf_default_replaces_spoofed(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "6.6.6.6", "x-forwarded-for", "7.7.7.7",
          "X-Forwarded-Proto", "https", "X-Forwarded-Host", "evil", "X-Forwarded-Prefix", "/p",
          NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
    expect_header(&fx->out.headers, "X-Forwarded-Proto", "http");
    expect_header(&fx->out.headers, "X-Forwarded-Host", "h");
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
}

/* Each spoofed field alone, in any case, is replaced (or dropped); fields of the same lengths
 * with other names pass untouched. */
static void test_xf_default_replaces_each_field_alone(void **state)
{
    fx_t *fx = *state;
    static const char *const names[] = {"x-forwarded-for", "X-FORWARDED-PROTO", "x-Forwarded-Host",
                                        "X-Forwarded-prefix"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        mkreq(fx, "GET", "/", "h", names[i], "spoofed", "Accept-Encoding", "gzip", "Forwarded-By",
              "x", "Xforwardedfor-Pad", "y", NULL);
        run(fx);
        expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
        expect_header(&fx->out.headers, "X-Forwarded-Proto", "http");
        expect_header(&fx->out.headers, "X-Forwarded-Host", "h");
        expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
        expect_header(&fx->out.headers, "Accept-Encoding", "gzip");
        expect_header(&fx->out.headers, "Forwarded-By", "x");
        expect_header(&fx->out.headers, "Xforwardedfor-Pad", "y");
    }
}

static void test_xf_append(void **state)
{
    fx_t *fx = *state;
    add_xf(fx, FG_XF_APPEND, FG_XF_APPEND, FG_XF_APPEND, FG_XF_APPEND);
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "1.1.1.1", "X-Forwarded-For", "2.2.2.2",
          "X-Forwarded-Prefix", "/outer", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", "1.1.1.1, 2.2.2.2, 10.0.0.1");
    expect_header(&fx->out.headers, "X-Forwarded-Proto", "http");
    expect_header(&fx->out.headers, "X-Forwarded-Host", "h");
    /* nothing removed from the path: the incoming prefix stays as it is */
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", "/outer");
}

static void test_xf_remove(void **state)
{
    fx_t *fx = *state;
    add_xf(fx, FG_XF_REMOVE, FG_XF_REMOVE, FG_XF_SET, FG_XF_REMOVE);
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "1.1.1.1", "X-Forwarded-Proto", "https", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Proto", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Host", "h");
}

static void test_xf_off(void **state)
{
    fx_t *fx = *state;
    add_xf(fx, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF);
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "1.1.1.1", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", "1.1.1.1");
    expect_header(&fx->out.headers, "X-Forwarded-Proto", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Host", NULL);
}

static void test_xf_custom_prefix(void **state)
{
    fx_t *fx = *state;
    fg_transform_t *t = add_xf(fx, FG_XF_SET, FG_XF_SET, FG_XF_OFF, FG_XF_OFF);
    t->xf_header_prefix = "X-Fwd-";
    mkreq(fx, "GET", "/", "h", NULL);
    fx->req->scheme = S("https");
    run(fx);
    expect_header(&fx->out.headers, "X-Fwd-For", "10.0.0.1");
    expect_header(&fx->out.headers, "X-Fwd-Proto", "https");
    expect_header(&fx->out.headers, "X-Forwarded-For", NULL);
}

static void test_xf_prefix_from_remove_prefix(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/api");
    mkreq(fx, "GET", "/API/users", "h", "X-Forwarded-Prefix", "/spoof", NULL);
    run(fx);
    expect_str(fx->out.path, "/users");
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", "/API");
}

static void test_xf_before_remove_prefix_still_sees_it(void **state)
{
    fx_t *fx = *state;
    add_xf(fx, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF, FG_XF_SET);
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/v1");
    mkreq(fx, "GET", "/v1/x", "h", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", "/v1");
}

/* Regression: Append with Prefix and nothing removed from the path answered 500. */
static void test_xf_append_prefix_without_removed_prefix(void **state)
{
    fx_t *fx = *state;
    add_xf(fx, FG_XF_APPEND, FG_XF_APPEND, FG_XF_APPEND, FG_XF_APPEND);
    mkreq(fx, "GET", "/", "h", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
}

/* AddXForwarded removes the client's Forwarded; a route with everything Off keeps it. */
static void test_xf_drops_client_forwarded(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/", "h", "Forwarded", "for=6.6.6.6", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Forwarded", NULL);
    fx->route.ntransforms = 0;
    add_xf(fx, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF);
    mkreq(fx, "GET", "/", "h", "Forwarded", "for=6.6.6.6", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Forwarded", "for=6.6.6.6");
}

/* ---- headers copy ---- */

/* ---- Forwarded (RFC 7239) ---- */

static fg_transform_t *add_fwd(fx_t *fx, int action, int for_fmt, int by_fmt, int host, int proto)
{
    fg_transform_t *t = add(fx, FG_TX_FORWARDED, NULL, NULL);
    t->xf_for = action;
    t->fwd_for = for_fmt;
    t->fwd_by = by_fmt;
    t->fwd_host = host;
    t->fwd_proto = proto;
    return t;
}

static int local_addr_v4(fg_request_t *req, char *ip, size_t iplen, uint16_t *port)
{
    snprintf(ip, iplen, "192.0.2.9");
    *port = 8080;
    return 0;
}

static const fg_req_ops_t local_ops = {.local_addr = local_addr_v4};

/* TransformHelpers.RemoveAllXForwardedHeaders: a Forwarded transform drops X-Forwarded-*. */
static void test_forwarded_drops_client_x_forwarded(void **state)
{
    fx_t *fx = *state;
    add_fwd(fx, FG_XF_SET, FG_NODE_NONE, FG_NODE_NONE, 0, 1);
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil",
          "X-Forwarded-Proto", "gopher", "X-Forwarded-Prefix", "/e", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Host", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Proto", NULL);
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
    expect_header(&fx->out.headers, "Forwarded", "proto=http");
}

static void test_forwarded_set_replaces_spoofed(void **state)
{
    fx_t *fx = *state;
    add_fwd(fx, FG_XF_SET, FG_NODE_IP_AND_PORT, FG_NODE_IP, 1, 1);
    fg_request_t *req = mkreq(fx, "GET", "/", "gw.test:8080", "Forwarded", "for=6.6.6.6", NULL);
    req->client_port = 5000;
    req->ops = &local_ops;
    run(fx);
    /* a port makes the node a quoted-string (RFC 7239 4, 6) */
    expect_header(&fx->out.headers, "Forwarded",
                  "for=\"10.0.0.1:5000\";by=192.0.2.9;proto=http;host=\"gw.test:8080\"");
    /* Forwarded replaces the default X-Forwarded set, as in YARP */
    expect_header(&fx->out.headers, "X-Forwarded-For", NULL);
}

static void test_forwarded_append_ipv6_and_unknown(void **state)
{
    fx_t *fx = *state;
    add_fwd(fx, FG_XF_APPEND, FG_NODE_IP, FG_NODE_UNKNOWN_AND_PORT, 0, 0);
    fg_request_t *req = mkreq(fx, "GET", "/", "h", "Forwarded", "for=192.0.2.1", NULL);
    strcpy(req->client_ip, "2001:db8::7");
    req->ops = &local_ops;
    run(fx);
    expect_header(&fx->out.headers, "Forwarded",
                  "for=192.0.2.1, for=\"[2001:db8::7]\";by=\"unknown:8080\"");
    /* an IPv4 client seen on a dual-stack socket is written as IPv4 */
    fx->route.ntransforms = 0;
    add_fwd(fx, FG_XF_SET, FG_NODE_IP, FG_NODE_NONE, 0, 0);
    req = mkreq(fx, "GET", "/", "h", NULL);
    strcpy(req->client_ip, "::ffff:192.0.2.3");
    run(fx);
    expect_header(&fx->out.headers, "Forwarded", "for=192.0.2.3");
}

static void test_forwarded_random_nodes_and_remove(void **state)
{
    fx_t *fx = *state;
    add_fwd(fx, FG_XF_SET, FG_NODE_RANDOM, FG_NODE_RANDOM_AND_RANDOM_PORT, 0, 0);
    mkreq(fx, "GET", "/", "h", NULL);
    run(fx);
    const fg_http_header_t *f = fg_headers_get(&fx->out.headers, FG_STR_LIT("Forwarded"));
    assert_non_null(f);
    char v[128];
    snprintf(v, sizeof(v), "%.*s", (int)f->value.len, f->value.base);
    /* for=_xxxxxx;by="_yyyyyy:_zzzzzz": obfuscated identifiers (RFC 7239 6.3) */
    assert_int_equal(strlen(v), strlen("for=_123456;by=\"_123456:_123456\""));
    assert_memory_equal(v, "for=_", 5);
    assert_memory_equal(v + 11, ";by=\"_", 6);
    for (const char *p = v + 5; p < v + 11; p++)
        assert_true(isalnum((unsigned char)*p) || strchr("._-", *p));
    fx->route.ntransforms = 0;
    add_fwd(fx, FG_XF_REMOVE, FG_NODE_IP, FG_NODE_NONE, 1, 1);
    mkreq(fx, "GET", "/", "h", "Forwarded", "for=6.6.6.6", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Forwarded", NULL);
}

static void test_headers_copy_false(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADERS_COPY, NULL, NULL)->flag = 0;
    add(fx, FG_TX_REQ_HEADER, "X-Added", "yes");
    mkreq(fx, "GET", "/", "h", "Accept", "*/*", "Cookie", "c=1", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Accept", NULL);
    expect_header(&fx->out.headers, "Cookie", NULL);
    expect_header(&fx->out.headers, "X-Added", "yes");
    expect_header(&fx->out.headers, "Host", "10.1.1.1:9000");
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
    expect_header(&fx->out.headers, "X-Request-Id", "req-1");
}

static void test_headers_copy_false_xf_append_keeps_incoming(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADERS_COPY, NULL, NULL)->flag = 0;
    add_xf(fx, FG_XF_APPEND, FG_XF_OFF, FG_XF_OFF, FG_XF_OFF);
    mkreq(fx, "GET", "/", "h", "X-Forwarded-For", "1.1.1.1", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Forwarded-For", "1.1.1.1, 10.0.0.1");
}

static void test_headers_copy_true_explicit(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADERS_COPY, NULL, NULL)->flag = 1;
    mkreq(fx, "GET", "/", "h", "Accept", "*/*", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Accept", "*/*");
}

/* YARP RequestHeadersAllowedTransformTests.AllowedHeaders_Copied: only the named fields with a
 * value, names compared ignoring case; the gateway's own fields still follow. Hop-by-hop
 * fields are never forwarded, listed or not (RFC 9110 7.6.1). */
static void test_request_headers_allowed(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADERS_ALLOWED, NULL, "header1;HEADER3;Connection");
    add(fx, FG_TX_REQ_HEADERS_ALLOWED, NULL, "X-Empty");
    mkreq(fx, "GET", "/", "h", "Header1", "v1", "header2", "v2", "header3", "v3", "X-Empty", "",
          "Connection", "close", NULL);
    run(fx);
    expect_header(&fx->out.headers, "header1", "v1");
    expect_header(&fx->out.headers, "header2", NULL);
    expect_header(&fx->out.headers, "header3", "v3");
    expect_header(&fx->out.headers, "X-Empty", NULL);
    expect_header(&fx->out.headers, "Connection", NULL);
    expect_header(&fx->out.headers, "Host", "10.1.1.1:9000");
    expect_header(&fx->out.headers, "X-Forwarded-For", "10.0.0.1");
}

/* RequestHeadersAllowed "" (YARP: the list ["" ]) copies nothing. */
static void test_request_headers_allowed_empty(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADERS_ALLOWED, NULL, "");
    mkreq(fx, "GET", "/", "h", "Accept", "*/*", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Accept", NULL);
    expect_header(&fx->out.headers, "X-Request-Id", "req-1");
}

/* ResponseHeadersCopy false / ResponseHeadersAllowed (YARP's StructuredTransformer and
 * ResponseHeadersAllowedTransform). */
static void test_response_copy_fields(void **state)
{
    fx_t *fx = *state;
    fg_http_header_t in[] = {{S("Content-Type"), S("text/plain")}, {S("X-Secret"), S("1")}};
    mkreq(fx, "GET", "/", "h", NULL);
    fg_headers_t h;
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_copy_fields(fx->req, 0, in, 2, &h), 0);
    assert_int_equal(h.n, 2);
    fg_transform_t *t = add(fx, FG_TX_RESP_HEADERS_COPY, NULL, NULL);
    t->flag = 0;
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_copy_fields(fx->req, 0, in, 2, &h), 0);
    assert_int_equal(h.n, 0);
    add(fx, FG_TX_RESP_HEADERS_ALLOWED, NULL, "content-type");
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_copy_fields(fx->req, 0, in, 2, &h), 0);
    expect_header(&h, "Content-Type", "text/plain");
    expect_header(&h, "X-Secret", NULL);
    /* the trailers' policy is their own */
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_copy_fields(fx->req, 1, in, 2, &h), 0);
    assert_int_equal(h.n, 2);
}

/* YARP ResponseTrailerValueTransformTests / ResponseTrailerRemoveTransformTests /
 * ResponseTrailersAllowedTransformTests: Set replaces, Append adds, Remove drops, When decides
 * by status (< 400 is success). */
static void test_response_trailers(void **state)
{
    fx_t *fx = *state;
    fg_http_header_t in[] = {
        {S("grpc-status"), S("0")}, {S("X-Debug"), S("a")}, {S("X-Keep"), S("k")}};
    add(fx, FG_TX_RESP_TRAILERS_ALLOWED, NULL, "grpc-status;x-debug");
    add(fx, FG_TX_RESP_TRAILER, "X-Debug", "b")->action = FG_TX_APPEND;
    add(fx, FG_TX_RESP_TRAILER, "X-Server", "gw")->action = FG_TX_SET;
    add(fx, FG_TX_RESP_TRAILER, "X-Err", "1")->when = FG_WHEN_FAILURE;
    add(fx, FG_TX_RESP_TRAILER_REMOVE, "grpc-status", NULL)->when = FG_WHEN_FAILURE;
    mkreq(fx, "GET", "/", "h", NULL);
    assert_true(fg_transform_adds_trailers(&fx->route));
    fg_headers_t h;
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_trailers(fx->req, 200, in, 3, &h), 0);
    expect_header(&h, "grpc-status", "0");
    expect_header(&h, "X-Debug", "a, b");
    expect_header(&h, "X-Keep", NULL);
    expect_header(&h, "X-Server", "gw");
    expect_header(&h, "X-Err", NULL);
    fg_headers_init(&h, fx->pool, 4);
    assert_int_equal(fg_transform_trailers(fx->req, 503, NULL, 0, &h), 0);
    expect_header(&h, "grpc-status", NULL);
    expect_header(&h, "X-Err", "1");
    expect_header(&h, "X-Server", NULL);
}

/* ---- path ---- */

static void test_path_prefix(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_PREFIX, NULL, "/v2");
    mkreq(fx, "GET", "/users/1?a=b", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/v2/users/1");
    expect_str(fx->out.query, "a=b");
}

static void test_path_remove_prefix(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/api");
    mkreq(fx, "GET", "/api/x/y", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/x/y");
    mkreq(fx, "GET", "/api", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/");
    mkreq(fx, "GET", "/api/", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/");
    mkreq(fx, "GET", "/apix/y", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/apix/y");
    expect_header(&fx->out.headers, "X-Forwarded-Prefix", NULL);
    mkreq(fx, "GET", "/other/api", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/other/api");
}

static void test_path_remove_prefix_trailing_slash_value(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/api/");
    mkreq(fx, "GET", "/api/x", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/x");
}

static void test_path_set(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_SET, NULL, "/fixed/path");
    mkreq(fx, "GET", "/anything/else?q=1", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/fixed/path");
    expect_str(fx->out.query, "q=1");
}

static void test_path_pattern(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_PATTERN, NULL, "/new/{id}/{**rest}");
    mkreq(fx, "GET", "/old/42/a/b%2Fc/d", "h", NULL);
    /* as the router would fill them for "/old/{id}/{**rest}" */
    fg_str_t p = fx->req->path;
    fx->req->captures[0] = (fg_capture_t){S("id"), {p.base + 5, 2}};
    fx->req->captures[1] = (fg_capture_t){S("rest"), {p.base + 8, p.len - 8}};
    fx->req->ncaptures = 2;
    run(fx);
    expect_str(fx->out.path, "/new/42/a/b%2Fc/d");
}

static void test_path_pattern_missing_capture(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_PATTERN, NULL, "/x/{missing}/y");
    mkreq(fx, "GET", "/z", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/x//y");
}

/* PathRouteValuesTransform (ASP.NET TemplateBinder): "{*rest}" encodes '/', "{**rest}" not. */
static void test_path_pattern_single_star_encodes_slashes(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_PATTERN, NULL, "/new/{*rest}");
    mkreq(fx, "GET", "/old/a/b", "h", NULL);
    fg_str_t p = fx->req->path;
    fx->req->captures[0] = (fg_capture_t){S("rest"), {p.base + 5, p.len - 5}};
    fx->req->ncaptures = 1;
    run(fx);
    expect_str(fx->out.path, "/new/a%2Fb");
}

static void test_path_pattern_empty_last_value_no_trailing_slash(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_PATTERN, NULL, "/new/{**rest}");
    mkreq(fx, "GET", "/old", "h", NULL);
    fx->req->captures[0] = (fg_capture_t){S("rest"), S("")};
    fx->req->ncaptures = 1;
    run(fx);
    expect_str(fx->out.path, "/new");
}

static void test_path_transforms_in_order(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/public");
    add(fx, FG_TX_PATH_PREFIX, NULL, "/internal");
    mkreq(fx, "GET", "/public/doc", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/internal/doc");
}

static void test_base_path(void **state)
{
    fx_t *fx = *state;
    fx->dest.base_path = "/base";
    add(fx, FG_TX_PATH_REMOVE_PREFIX, NULL, "/api");
    mkreq(fx, "GET", "/api/x", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/base/x");
    mkreq(fx, "GET", "/api", "h", NULL);
    run(fx);
    expect_str(fx->out.path, "/base/");
    fx->dest.base_path = NULL;
    run(fx);
    expect_str(fx->out.path, "/");
}

/* ---- query ---- */

static void test_query_set_replaces(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_QUERY_VALUE, "page", "2")->action = FG_TX_SET;
    mkreq(fx, "GET", "/?a=1&page=1&b=2&PAGE=9", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "a=1&page=2&b=2");
}

static void test_query_set_adds(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_QUERY_VALUE, "k", "v")->action = FG_TX_SET;
    mkreq(fx, "GET", "/", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "k=v");
    mkreq(fx, "GET", "/?a=1", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "a=1&k=v");
}

static void test_query_append_and_encode(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_QUERY_VALUE, "tag", "a&b=c d/é")->action = FG_TX_APPEND;
    mkreq(fx, "GET", "/?tag=x", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "tag=x&tag=a%26b%3Dc%20d%2F%C3%A9");
}

static void test_query_remove(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_QUERY_REMOVE, "token", NULL);
    mkreq(fx, "GET", "/?token=1&keep=2&%74oken=3&tokens=4", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "keep=2&tokens=4");
    mkreq(fx, "GET", "/?token=1", "h", NULL);
    run(fx);
    expect_str(fx->out.query, "");
}

/* ---- method ---- */

static void test_method_change(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_METHOD_CHANGE, "DELETE", "POST");
    mkreq(fx, "DELETE", "/", "h", NULL);
    run(fx);
    expect_str(fx->out.method, "POST");
    mkreq(fx, "GET", "/", "h", NULL);
    run(fx);
    expect_str(fx->out.method, "GET");
}

/* ---- request headers ---- */

static void test_request_header_set_append_remove(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADER, "X-Set", "new")->action = FG_TX_SET;
    add(fx, FG_TX_REQ_HEADER, "X-App", "two")->action = FG_TX_APPEND;
    add(fx, FG_TX_REQ_HEADER, "X-Fresh", "f")->action = FG_TX_APPEND;
    add(fx, FG_TX_REQ_HEADER_REMOVE, "Cookie", NULL);
    mkreq(fx, "GET", "/", "h", "x-set", "old", "X-Set", "older", "X-App", "one", "Cookie", "c",
          NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-Set", "new");
    expect_header(&fx->out.headers, "X-App", "one, two");
    expect_header(&fx->out.headers, "X-Fresh", "f");
    expect_header(&fx->out.headers, "Cookie", NULL);
}

static void test_request_header_remove_then_set(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADER_REMOVE, "X-A", NULL);
    add(fx, FG_TX_REQ_HEADER, "X-A", "mine")->action = FG_TX_APPEND;
    mkreq(fx, "GET", "/", "h", "X-A", "theirs", NULL);
    run(fx);
    expect_header(&fx->out.headers, "X-A", "mine");
}

/* ---- Host ---- */

static void test_host_default_ports_omitted(void **state)
{
    fx_t *fx = *state;
    mkreq(fx, "GET", "/", "client.com", NULL);
    fx->dest.port = 80;
    run(fx);
    expect_header(&fx->out.headers, "Host", "10.1.1.1");
    fx->dest.https = 1;
    run(fx);
    expect_header(&fx->out.headers, "Host", "10.1.1.1:80");
    fx->dest.port = 443;
    run(fx);
    expect_header(&fx->out.headers, "Host", "10.1.1.1");
    fx->dest.https = 0;
    run(fx);
    expect_header(&fx->out.headers, "Host", "10.1.1.1:443");
}

static void test_host_ipv6_destination(void **state)
{
    fx_t *fx = *state;
    fx->dest.host = "::1";
    fx->dest.port = 8080;
    mkreq(fx, "GET", "/", "client.com", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "[::1]:8080");
}

static void test_host_original(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_ORIGINAL_HOST, NULL, NULL)->flag = 1;
    mkreq(fx, "GET", "/", "client.com:8443", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "client.com:8443");
}

/* YARP: RequestHeaderOriginalHost: true wins over a destination's host. */
static void test_original_host_wins_over_destination_host(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_ORIGINAL_HOST, NULL, NULL)->flag = 1;
    fx->dest.host_override = "api.internal";
    mkreq(fx, "GET", "/", "client.com", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "client.com");
}

static void test_destination_host_without_original_host(void **state)
{
    fx_t *fx = *state;
    fx->dest.host_override = "api.internal";
    mkreq(fx, "GET", "/", "client.com", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "api.internal");
}

static void test_host_original_false(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_ORIGINAL_HOST, NULL, NULL)->flag = 0;
    mkreq(fx, "GET", "/", "client.com", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "10.1.1.1:9000");
}

static void test_host_set_by_request_header(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADER, "Host", "custom.example")->action = FG_TX_SET;
    mkreq(fx, "GET", "/", "client.com", NULL);
    run(fx);
    expect_header(&fx->out.headers, "Host", "custom.example");
}

/* ---- response ---- */

static void resp(fx_t *fx, int status, fg_headers_t *h)
{
    fg_headers_init(h, fx->pool, 4);
    fg_headers_add(h, S("Server"), S("upstream"));
    fg_headers_add(h, S("Cache-Control"), S("private"));
    assert_int_equal(fg_transform_response(fx->req, status, h), 0);
}

static void test_response_when(void **state)
{
    fx_t *fx = *state;
    fg_transform_t *t = add(fx, FG_TX_RESP_HEADER, "X-Ok", "1");
    t->when = FG_WHEN_SUCCESS;
    t = add(fx, FG_TX_RESP_HEADER, "X-Err", "1");
    t->when = FG_WHEN_FAILURE;
    t = add(fx, FG_TX_RESP_HEADER, "X-Always", "1");
    t->when = FG_WHEN_ALWAYS;
    mkreq(fx, "GET", "/", "h", NULL);
    int statuses[] = {200, 304, 399, 400, 404, 502};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        fg_headers_t h;
        resp(fx, statuses[i], &h);
        int ok = statuses[i] < 400;
        expect_header(&h, "X-Ok", ok ? "1" : NULL);
        expect_header(&h, "X-Err", ok ? NULL : "1");
        expect_header(&h, "X-Always", "1");
    }
}

static void test_response_set_append_remove(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_RESP_HEADER, "Cache-Control", "no-store")->action = FG_TX_APPEND;
    add(fx, FG_TX_RESP_HEADER, "Server", "gw")->action = FG_TX_SET;
    fg_transform_t *t = add(fx, FG_TX_RESP_HEADER_REMOVE, "Server", NULL);
    t->when = FG_WHEN_FAILURE;
    mkreq(fx, "GET", "/", "h", NULL);
    fg_headers_t h;
    resp(fx, 200, &h);
    expect_header(&h, "Cache-Control", "private, no-store");
    expect_header(&h, "Server", "gw");
    resp(fx, 500, &h);
    expect_header(&h, "Cache-Control", "private");
    expect_header(&h, "Server", NULL);
}

static void test_response_ignores_request_transforms(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADER, "Server", "x");
    add(fx, FG_TX_REQ_HEADER_REMOVE, "Cache-Control", NULL);
    mkreq(fx, "GET", "/", "h", NULL);
    fg_headers_t h;
    resp(fx, 200, &h);
    expect_header(&h, "Server", "upstream");
    expect_header(&h, "Cache-Control", "private");
    fx->req->route = NULL;
    resp(fx, 200, &h);
    expect_header(&h, "Server", "upstream");
}

/* ---- transforms from route values ---- */

/* QueryRouteParameter and RequestHeaderRouteValue take a capture's value (YARP); an absent
 * capture leaves the request as it is. */
static void test_route_value_transforms(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_QUERY_ROUTE, "orderId", "id")->action = FG_TX_APPEND;
    add(fx, FG_TX_REQ_HEADER_ROUTE, "X-Order", "id");
    add(fx, FG_TX_QUERY_ROUTE, "none", "missing");
    add(fx, FG_TX_REQ_HEADER_ROUTE, "X-None", "missing");
    mkreq(fx, "GET", "/orders/a%20b?v=2", "h", NULL);
    fg_str_t p = fx->req->path;
    fx->req->captures[0] = (fg_capture_t){S("id"), {p.base + 8, p.len - 8}};
    fx->req->ncaptures = 1;
    run(fx);
    expect_str(fx->out.query, "v=2&orderId=a%20b");
    expect_header(&fx->out.headers, "X-Order", "a b");
    expect_header(&fx->out.headers, "X-None", NULL);
}

/* Route values are decoded as ASP.NET decodes them: every escape but %2F, which stays. */
static void test_route_value_keeps_encoded_slash(void **state)
{
    fx_t *fx = *state;
    add(fx, FG_TX_REQ_HEADER_ROUTE, "X-Order", "id");
    mkreq(fx, "GET", "/orders/a%2Fb%41", "h", NULL);
    fg_str_t p = fx->req->path;
    fx->req->captures[0] = (fg_capture_t){S("id"), {p.base + 8, p.len - 8}};
    fx->req->ncaptures = 1;
    run(fx);
    expect_header(&fx->out.headers, "X-Order", "a%2FbA");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_hop_by_hop_dropped),
        T(test_incoming_request_id_replaced),
        T(test_no_route),
        T(test_xf_default_replaces_spoofed),
        T(test_xf_default_replaces_each_field_alone),
        T(test_xf_append),
        T(test_xf_append_prefix_without_removed_prefix),
        T(test_xf_drops_client_forwarded),
        T(test_forwarded_drops_client_x_forwarded),
        T(test_path_pattern_single_star_encodes_slashes),
        T(test_path_pattern_empty_last_value_no_trailing_slash),
        T(test_xf_remove),
        T(test_xf_off),
        T(test_xf_custom_prefix),
        T(test_xf_prefix_from_remove_prefix),
        T(test_xf_before_remove_prefix_still_sees_it),
        T(test_forwarded_set_replaces_spoofed),
        T(test_forwarded_append_ipv6_and_unknown),
        T(test_forwarded_random_nodes_and_remove),
        T(test_headers_copy_false),
        T(test_headers_copy_false_xf_append_keeps_incoming),
        T(test_headers_copy_true_explicit),
        T(test_request_headers_allowed),
        T(test_request_headers_allowed_empty),
        T(test_response_copy_fields),
        T(test_response_trailers),
        T(test_path_prefix),
        T(test_path_remove_prefix),
        T(test_path_remove_prefix_trailing_slash_value),
        T(test_path_set),
        T(test_path_pattern),
        T(test_path_pattern_missing_capture),
        T(test_path_transforms_in_order),
        T(test_base_path),
        T(test_query_set_replaces),
        T(test_query_set_adds),
        T(test_query_append_and_encode),
        T(test_query_remove),
        T(test_method_change),
        T(test_request_header_set_append_remove),
        T(test_request_header_remove_then_set),
        T(test_host_default_ports_omitted),
        T(test_host_ipv6_destination),
        T(test_host_original),
        T(test_original_host_wins_over_destination_host),
        T(test_destination_host_without_original_host),
        T(test_host_original_false),
        T(test_host_set_by_request_header),
        T(test_response_when),
        T(test_response_set_append_remove),
        T(test_response_ignores_request_transforms),
        T(test_route_value_transforms),
        T(test_route_value_keeps_encoded_slash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
