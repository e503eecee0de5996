"""Route matching end to end (worker/http/router.c): path templates, hosts, methods, header and
query conditions, order and specificity, and the route kinds direct, redirect and cluster.

Every route answers with its own id (direct routes) or a distinct Location / upstream path,
so each request shows which route won. One gateway serves the whole module."""
import json
import socket

import pytest

from conftest import SANITIZER_RE, Gateway, Upstream, base_config, free_port, http_request


def direct(rid, match, order=None, **kw):
    r = {"id": rid, "match": match, "direct": {"status": 200, "body": rid}}
    if order is not None:
        r["order"] = order
    r.update(kw)
    return r


def hdr_route(rid, path, name, mode, values=None, cs=None):
    cond = {"name": name, "mode": mode}
    if values is not None:
        cond["values"] = values
    if cs is not None:
        cond["isCaseSensitive"] = cs
    return direct(rid, {"path": path, "headers": [cond]})


def query_route(rid, path, name, mode, values=None, cs=None):
    cond = {"name": name, "mode": mode}
    if values is not None:
        cond["values"] = values
    if cs is not None:
        cond["isCaseSensitive"] = cs
    return direct(rid, {"path": path, "queryParameters": [cond]})


ROUTES = [
    # path templates
    direct("items-id", {"path": "/items/{id}"}),
    direct("items-id-edit", {"path": "/items/{id}/edit"}),
    direct("files-rest", {"path": "/files/{**rest}"}),
    direct("exact-path", {"path": "/Exact/Path"}),
    # hosts (hosts-only routes: any path)
    direct("host-exact", {"hosts": ["exact.test"]}),
    direct("host-wild", {"hosts": ["*.example.com"]}),
    direct("host-port", {"hosts": ["port.test:8080"]}),
    direct("host-multi", {"hosts": ["one.test", "two.test"], "path": "/multi"}),
    # methods
    direct("m-get-put", {"path": "/m", "methods": ["get", "PUT"]}),
    direct("m-post", {"path": "/m", "methods": ["POST"]}),
    # headers: each path has a conditional route and a fallback with a higher order
    hdr_route("hx-exact", "/hx", "X-Env", "ExactHeader", ["prod", "stage"]),
    hdr_route("hcs-exact", "/hcs", "X-Env", "ExactHeader", ["Prod"], cs=True),
    hdr_route("hp-prefix", "/hp", "X-Env", "HeaderPrefix", ["abc"]),
    hdr_route("hpcs-prefix", "/hpcs", "X-Env", "HeaderPrefix", ["Abc"], cs=True),
    hdr_route("hc-contains", "/hc", "X-Env", "Contains", ["mid"]),
    hdr_route("hccs-contains", "/hccs", "X-Env", "Contains", ["Mid"], cs=True),
    hdr_route("hnc-notcontains", "/hnc", "X-Env", "NotContains", ["bad"]),
    hdr_route("he-exists", "/he", "X-Flag", "Exists"),
    hdr_route("hne-notexists", "/hne", "X-Flag", "NotExists"),
    direct("hand-both", {"path": "/hand", "headers": [
        {"name": "X-A", "values": ["1"]}, {"name": "X-B", "mode": "Exists"}]}),
    # query parameters
    query_route("q-exact", "/q", "v", "Exact", ["one", "two"]),
    query_route("qcs-exact", "/qcs", "v", "Exact", ["One"], cs=True),
    query_route("qp-prefix", "/qp", "v", "Prefix", ["ab"]),
    query_route("qc-contains", "/qc", "v", "Contains", ["mid"]),
    query_route("qnc-notcontains", "/qnc", "v", "NotContains", ["bad"]),
    query_route("qe-exists", "/qe", "v", "Exists"),
    # order and specificity: written in the "wrong" file order on purpose
    direct("ord-5", {"path": "/ord"}, order=5),
    direct("ord-1", {"path": "/ord"}, order=1),
    direct("spec-catchall", {"path": "/spec/{**rest}"}),
    direct("spec-param", {"path": "/spec/{id}"}),
    direct("spec-literal", {"path": "/spec/exact"}),
    direct("spec-deeper", {"path": "/spec/{id}/more"}),
    direct("ordwin-catchall", {"path": "/ordwin/{**rest}"}, order=-1),
    direct("ordwin-literal", {"path": "/ordwin/exact"}),
    direct("tie-first", {"path": "/tie"}),
    direct("tie-second", {"path": "/tie"}),
    # route kinds
    {"id": "redir-rest", "match": {"path": "/go/{**rest}"},
     "redirect": {"status": 301, "location": "/dest/{rest}"}},
    {"id": "redir-https", "match": {"path": "/secure/{**rest}"},
     "redirect": {"status": 308, "location": "https://{host}{path}{query}"}},
    {"id": "redir-default", "match": {"path": "/moved/{id}"},
     "redirect": {"location": "http://new.test/items/{id}"}},
    {"id": "direct-created", "match": {"path": "/created"},
     "direct": {"status": 201, "headers": {"X-Kind": "direct", "Content-Type": "text/plain"},
                "body": "made"}},
    {"id": "direct-empty", "match": {"path": "/empty"}, "direct": {"status": 204}},
    {"id": "to-cluster", "match": {"path": "/api/{id}/{**rest}"}, "clusterId": "echo",
     "transforms": [{"PathPattern": "/seen/{id}/{rest}"}]},
]
FALLBACKS = ["/hx", "/hcs", "/hp", "/hpcs", "/hc", "/hccs", "/hnc", "/he", "/hne", "/hand",
             "/q", "/qcs", "/qp", "/qc", "/qnc", "/qe"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    up = Upstream().start()
    routes = list(ROUTES)
    for p in FALLBACKS:
        routes.append(direct("fallback" + p.replace("/", "-"), {"path": p}, order=100))
    clusters = [{"id": "echo", "destinations": [{"id": "e", "address": up.url}]}]
    g = Gateway(base_config(tmp, free_port(), routes=routes, clusters=clusters, workers=2), tmp)
    try:
        g.start()
        yield g
    finally:
        g.stop()
        up.stop()
    text = g.stderr() + g.error_log()
    assert not SANITIZER_RE.search(text), text[-3000:]


def which(gw, path, method="GET", headers=None, host=None):
    """(status, body text) of one request; Host defaults to the gateway's address."""
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    status, _, body = http_request(method, gw.url(path), headers=h)
    return status, body.decode()


def route_of(gw, path, **kw):
    status, body = which(gw, path, **kw)
    if status == 404:
        return None
    assert status == 200, (status, body)
    return body


# ---- path templates ----

@pytest.mark.parametrize("path,expected", [
    ("/items/42", "items-id"),
    ("/items/42/", "items-id"),
    ("/ITEMS/42", "items-id"),
    ("/Items/abc/EDIT", "items-id-edit"),
    ("/items/42/edit", "items-id-edit"),
    ("/items", None),
    ("/items/42/other", None),
    ("/files", "files-rest"),
    ("/files/", "files-rest"),
    ("/files/a", "files-rest"),
    ("/files/a/b/c.txt", "files-rest"),
    ("/FILES/a/b", "files-rest"),
    ("/filesx", None),
    ("/exact/path", "exact-path"),
    ("/EXACT/PATH", "exact-path"),
    ("/exact/path/more", None),
    ("/exact", None),
])
def test_path_templates(gw, path, expected):
    assert route_of(gw, path) == expected


def test_path_is_normalised_before_matching(gw):
    assert route_of(gw, "/x/../items/7") == "items-id"
    assert route_of(gw, "/files/./a//b") == "files-rest"
    # encoded dot segments are dot segments (no escape from a prefix route)...
    assert route_of(gw, "/files/%2e%2e/items/7") == "items-id"
    assert route_of(gw, "/files/.%2E/items/7") == "items-id"
    # ...but an encoded slash is not a separator
    assert route_of(gw, "/files/..%2Fitems/7") == "files-rest"


# ---- hosts ----

@pytest.mark.parametrize("host,expected", [
    ("exact.test", "host-exact"),
    ("EXACT.Test", "host-exact"),
    ("exact.test:80", "host-exact"),
    ("other.test", None),
    ("sub.exact.test", None),
    ("a.example.com", "host-wild"),
    ("a.b.example.com", "host-wild"),
    ("A.EXAMPLE.COM", "host-wild"),
    ("example.com", None),
    ("aexample.com", None),
    ("port.test:8080", "host-port"),
    ("port.test", None),
    ("port.test:9090", None),
    ("one.test", "host-multi"),
    ("two.test", "host-multi"),
])
def test_hosts(gw, host, expected):
    path = "/multi" if expected == "host-multi" else "/some/path"
    assert route_of(gw, path, host=host) == expected


def test_host_only_route_matches_any_path(gw):
    assert route_of(gw, "/", host="exact.test") == "host-exact"
    assert route_of(gw, "/deep/er/path?q=1", host="exact.test") == "host-exact"


def test_host_route_does_not_catch_other_hosts(gw):
    # the gateway's own address is not one of the host routes
    assert route_of(gw, "/some/path") is None


# ---- methods ----

@pytest.mark.parametrize("method,expected", [
    ("GET", "m-get-put"), ("PUT", "m-get-put"), ("POST", "m-post"),
])
def test_methods(gw, method, expected):
    assert route_of(gw, "/m", method=method) == expected


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "HEAD"])
def test_method_no_route_accepts_is_405_with_allow(gw, method):
    """RFC 9110 15.5.6: the path exists for other methods (HEAD does not match a GET-only
    route, as in YARP)."""
    status, h, _ = http_request(method, gw.url("/m"))
    assert status == 405
    assert sorted(m.strip() for m in h["allow"].split(",")) == ["GET", "POST", "PUT"]


# ---- header conditions ----

@pytest.mark.parametrize("path,headers,expected", [
    ("/hx", {"X-Env": "prod"}, "hx-exact"),
    ("/hx", {"X-Env": "stage"}, "hx-exact"),
    ("/hx", {"X-Env": "PROD"}, "hx-exact"),
    ("/hx", {"X-Env": "production"}, "fallback-hx"),
    ("/hx", {"X-Env": "pro"}, "fallback-hx"),
    ("/hx", {}, "fallback-hx"),
    ("/hcs", {"X-Env": "Prod"}, "hcs-exact"),
    ("/hcs", {"X-Env": "prod"}, "fallback-hcs"),
    ("/hp", {"X-Env": "abcdef"}, "hp-prefix"),
    ("/hp", {"X-Env": "ABC"}, "hp-prefix"),
    ("/hp", {"X-Env": "xabc"}, "fallback-hp"),
    ("/hpcs", {"X-Env": "Abcd"}, "hpcs-prefix"),
    ("/hpcs", {"X-Env": "abcd"}, "fallback-hpcs"),
    ("/hc", {"X-Env": "xxmidxx"}, "hc-contains"),
    ("/hc", {"X-Env": "xxMIDxx"}, "hc-contains"),
    ("/hc", {"X-Env": "xxmixx"}, "fallback-hc"),
    ("/hccs", {"X-Env": "aMidb"}, "hccs-contains"),
    ("/hccs", {"X-Env": "amidb"}, "fallback-hccs"),
    ("/hnc", {"X-Env": "good"}, "hnc-notcontains"),
    ("/hnc", {"X-Env": "is-bad-one"}, "fallback-hnc"),
    ("/hnc", {"X-Env": "is-BAD-one"}, "fallback-hnc"),
    ("/he", {"X-Flag": "1"}, "he-exists"),
    ("/he", {"x-flag": "yes"}, "he-exists"),
    ("/he", {}, "fallback-he"),
    ("/hne", {}, "hne-notexists"),
    ("/hne", {"X-Flag": "1"}, "fallback-hne"),
    ("/hand", {"X-A": "1", "X-B": "z"}, "hand-both"),
    ("/hand", {"X-A": "1"}, "fallback-hand"),
    ("/hand", {"X-B": "z"}, "fallback-hand"),
    ("/hand", {"X-A": "2", "X-B": "z"}, "fallback-hand"),
])
def test_header_conditions(gw, path, headers, expected):
    assert route_of(gw, path, headers=headers) == expected


# ---- query parameter conditions ----

@pytest.mark.parametrize("target,expected", [
    ("/q?v=one", "q-exact"),
    ("/q?v=two&x=1", "q-exact"),
    ("/q?x=1&v=ONE", "q-exact"),
    ("/q?v=%6Fne", "q-exact"),
    ("/q?v=one1", "fallback-q"),
    ("/q?w=one", "fallback-q"),
    ("/q", "fallback-q"),
    ("/qcs?v=One", "qcs-exact"),
    ("/qcs?v=one", "fallback-qcs"),
    ("/qp?v=abc", "qp-prefix"),
    ("/qp?v=xab", "fallback-qp"),
    ("/qc?v=amidb", "qc-contains"),
    ("/qc?v=amdb", "fallback-qc"),
    ("/qnc?v=good", "qnc-notcontains"),
    ("/qnc?v=isbad", "fallback-qnc"),
    ("/qe?v=1", "qe-exists"),
    ("/qe?w=1", "fallback-qe"),
    ("/qe", "fallback-qe"),
])
def test_query_conditions(gw, target, expected):
    assert route_of(gw, target) == expected


# ---- order and specificity ----

def test_lower_order_wins_over_file_order(gw):
    assert route_of(gw, "/ord") == "ord-1"


@pytest.mark.parametrize("path,expected", [
    ("/spec/exact", "spec-literal"),
    ("/spec/other", "spec-param"),
    ("/spec/a/b", "spec-catchall"),
    ("/spec/a/more", "spec-deeper"),
    ("/spec", "spec-catchall"),
])
def test_more_specific_path_wins(gw, path, expected):
    assert route_of(gw, path) == expected


def test_order_beats_specificity(gw):
    assert route_of(gw, "/ordwin/exact") == "ordwin-catchall"


def test_equal_routes_keep_file_order(gw):
    assert route_of(gw, "/tie") == "tie-first"


# ---- route kinds ----

def test_direct_status_headers_body(gw):
    status, headers, body = http_request("GET", gw.url("/created"))
    assert status == 201
    assert headers["x-kind"] == "direct"
    assert headers["content-type"] == "text/plain"
    assert body == b"made"


def test_direct_204_has_no_body(gw):
    status, headers, body = http_request("GET", gw.url("/empty"))
    assert status == 204
    assert body == b""
    assert "content-length" not in headers or headers["content-length"] == "0"


@pytest.mark.parametrize("path,location", [
    ("/go/a/b/c", "/dest/a/b/c"),
    ("/GO/MixedCase", "/dest/MixedCase"),
])
def test_redirect_with_catchall_capture(gw, path, location):
    status, headers, _ = http_request("GET", gw.url(path))
    assert status == 301
    assert headers["location"] == location


def test_redirect_never_gets_a_raw_backslash(gw):
    """Regression (open redirect): a raw backslash survived normalisation, so "/go/\\evil.com"
    answered "Location: /dest/..." with the backslash, and a template starting with the
    capture gave "/\\evil.com", which browsers follow to evil.com. Raw backslashes are 400."""
    s = socket.create_connection(("127.0.0.1", gw.port))
    try:
        s.sendall(b"GET /go/\\evil.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(4096)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Location" not in data


def test_redirect_with_host_path_query(gw):
    status, headers, _ = http_request("GET", gw.url("/secure/x/y?a=1&b=2"),
                                      headers={"Host": "shop.test"})
    assert status == 308
    assert headers["location"] == "https://shop.test/secure/x/y?a=1&b=2"
    # {query} brings its own '?', and nothing without a query
    status, headers, _ = http_request("GET", gw.url("/secure/z"), headers={"Host": "shop.test"})
    assert status == 308
    assert headers["location"] == "https://shop.test/secure/z"


def test_redirect_default_status_302(gw):
    status, headers, _ = http_request("GET", gw.url("/moved/77"))
    assert status == 302
    assert headers["location"] == "http://new.test/items/77"


def test_cluster_route_with_captures(gw):
    status, _, body = http_request("POST", gw.url("/api/9/x/y?z=1"), body=b"payload")
    assert status == 200
    doc = json.loads(body)
    assert doc["method"] == "POST"
    assert doc["path"] == "/seen/9/x/y"
    assert doc["query"] == "z=1"
    assert doc["body"] == "payload"


def test_redirect_variables_used_twice(gateway_factory, tmp_path):
    """Regression: the location buffer counted each variable once, so a template using {path}
    or {query} twice answered 500 once the value passed about 64 bytes."""
    routes = [{"id": "twice", "match": {"path": "/{**rest}"},
               "redirect": {"status": 301,
                            "location": "https://new.test{path}{query}&from={path}{query}"}}]
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=routes))
    path = "/" + "p" * 300
    status, headers, _ = http_request("GET", gw.url(path + "?q=" + "v" * 300))
    assert status == 301
    q = "?q=" + "v" * 300
    assert headers["location"] == "https://new.test" + path + q + "&from=" + path + q
