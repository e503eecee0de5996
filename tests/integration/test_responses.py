"""The gateway's own answers (worker/http/request.c, worker/http/http1.c): a Date field (RFC 9110 6.6.1)
on every one, a Server field that the operator can rename or turn off, one JSON shape for
every error whatever produced it, errorPages (a file or a redirect per status or class) and a
403 that names no access-control list unless exposeAccessListIds asks for it. Proxied
responses keep the destination's Date and Server."""
import email.utils
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import (BINARY, SANITIZER_RE, Gateway, Scripted, Upstream, base_config,
                      free_port, http_request, recv_until_close)

IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                         r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")
ERROR_KEYS = {"status", "error", "message", "requestId", "path"}
ORIGIN_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"


# ---- helpers ----

def raw(port, data, timeout=10.0):
    """Send raw bytes, read until the gateway closes; returns the bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_until_close(s, timeout)


def parse(resp):
    """(status, [(name, value)], body) of the first response in resp (Content-Length framed,
    or up to the end when there is none)."""
    head, _, rest = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
    cl = [int(v) for n, v in fields if n.lower() == "content-length"]
    return status, fields, rest[:cl[0]] if cl else rest


def values(fields, name):
    return [v for n, v in fields if n.lower() == name.lower()]


def get(port, path, method="GET", extra=b""):
    req = ("%s %s HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n" % (method, path)).encode()
    return parse(raw(port, req + extra + b"\r\n"))


def assert_date(fields):
    dates = values(fields, "Date")
    assert len(dates) == 1, fields
    assert IMF_FIXDATE.match(dates[0]), dates[0]
    when = email.utils.parsedate_to_datetime(dates[0]).timestamp()
    assert abs(when - time.time()) < 5, dates[0]


def assert_error(resp, status):
    """The one error shape: JSON with exactly ERROR_KEYS, right Content-Length, Date."""
    st, fields, body = resp
    assert st == status, (st, fields, body)
    assert values(fields, "Content-Type") == ["application/json"], fields
    assert int(values(fields, "Content-Length")[0]) == len(body) > 0
    doc = json.loads(body)
    assert set(doc) == ERROR_KEYS, doc
    assert doc["status"] == status
    assert isinstance(doc["error"], str) and re.match(r"^[a-z_]+$", doc["error"]), doc
    assert isinstance(doc["message"], str) and doc["message"]
    if doc["requestId"]:
        assert values(fields, "X-Request-Id") == [doc["requestId"]]
    assert_date(fields)
    assert values(fields, "Server") == ["fastgateway"], fields
    return doc


def origin(with_date):
    """A destination that answers 200 "ok", with a fixed Date and Server or with neither."""
    extra = ("Date: %s\r\nServer: origin/1\r\n" % ORIGIN_DATE).encode() if with_date else b""

    def script(sock, head):
        sock.sendall(b"HTTP/1.1 200 OK\r\n" + extra +
                     b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    return Scripted(script)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("responses")
    www = tmp / "www"
    www.mkdir()
    (www / "a.txt").write_text("static file\n")
    up = Upstream().start()
    dated, undated = origin(True), origin(False)
    routes = [
        {"id": "direct", "match": {"path": "/direct"}, "direct": {"status": 200, "body": "d"}},
        {"id": "redir", "match": {"path": "/redir"},
         "redirect": {"status": 302, "location": "/direct"}},
        {"id": "files", "match": {"path": "/static/{**rest}"}, "static": {"root": str(www)}},
        {"id": "down", "match": {"path": "/down/{**rest}"}, "clusterId": "down"},
        {"id": "slow", "match": {"path": "/slow/{**rest}"}, "clusterId": "slow",
         "transforms": [{"PathRemovePrefix": "/slow"}]},
        {"id": "dated", "match": {"path": "/dated"}, "clusterId": "dated"},
        {"id": "undated", "match": {"path": "/undated"}, "clusterId": "undated"},
    ]
    clusters = [
        {"id": "down", "destinations": [{"id": "d",
                                         "address": "http://127.0.0.1:%d" % free_port()}]},
        {"id": "slow", "destinations": [{"id": "s", "address": up.url}],
         "httpRequest": {"activityTimeout": "1s"}},
        {"id": "dated", "destinations": [{"id": "o", "address": dated.url}]},
        {"id": "undated", "destinations": [{"id": "o", "address": undated.url}]},
    ]
    cfg = base_config(tmp, free_port(), routes=routes, clusters=clusters, workers=1,
                      accessControl=[{"id": "secret-list-7", "type": "blacklist",
                                      "entries": ["127.0.0.0/8"]}],
                      rateLimits=[{"id": "one", "type": "FixedWindow", "scope": "PerIp",
                                   "maxRequests": 1, "window": "1h"}])
    main = cfg["servers"][0]
    main["limits"] = {"maxRequestLineSize": "1k", "maxHeaderSize": "4k",
                      "maxRequestBodySize": "1k"}
    main["timeouts"] = {"header": "1s"}
    cfg["servers"] += [
        {"id": "acl", "listen": "127.0.0.1:%d" % free_port(), "accessControl": ["secret-list-7"]},
        {"id": "rl", "listen": "127.0.0.1:%d" % free_port(), "rateLimits": ["one"]},
        {"id": "quiet", "listen": "127.0.0.1:%d" % free_port(), "serverHeader": False},
        {"id": "named", "listen": "127.0.0.1:%d" % free_port(), "serverHeader": "acme/2.1"},
    ]
    g = Gateway(cfg, tmp)
    g.ports = {s["id"]: int(s["listen"].rsplit(":", 1)[1]) for s in cfg["servers"]}
    try:
        g.start()
        yield g
    finally:
        g.stop()
        up.stop()
        dated.close()
        undated.close()
    text = g.stderr() + g.error_log()
    assert not SANITIZER_RE.search(text), text[-3000:]


# ---- Date and Server ----

def test_date_on_direct_static_redirect_and_options(gw):
    p = gw.port
    for resp, status in [(get(p, "/direct"), 200), (get(p, "/static/a.txt"), 200),
                         (get(p, "/redir"), 302), (get(p, "*", "OPTIONS"), 200)]:
        st, fields, _ = resp
        assert st == status, resp
        assert_date(fields)
        assert values(fields, "Server") == ["fastgateway"], fields


def test_date_on_304(gw):
    st, fields, _ = get(gw.port, "/static/a.txt")
    etag = values(fields, "ETag")[0]
    st, fields, body = get(gw.port, "/static/a.txt", extra=b"If-None-Match: %s\r\n" %
                           etag.encode())
    assert st == 304 and body == b""
    assert_date(fields)


def test_date_advances(gw):
    """The cached value is refreshed every second: two answers 1.2 s apart differ."""
    d1 = values(get(gw.port, "/direct")[1], "Date")[0]
    time.sleep(1.2)
    d2 = values(get(gw.port, "/direct")[1], "Date")[0]
    assert email.utils.parsedate_to_datetime(d2) > email.utils.parsedate_to_datetime(d1)


def test_server_header_off_and_renamed(gw):
    st, fields, _ = get(gw.ports["quiet"], "/direct")
    assert st == 200 and values(fields, "Server") == []
    assert_date(fields)  # Date stays when Server is off
    st, fields, _ = get(gw.ports["quiet"], "/nothing")
    assert st == 404 and values(fields, "Server") == []
    st, fields, _ = get(gw.ports["named"], "/direct")
    assert values(fields, "Server") == ["acme/2.1"]


def test_proxied_keeps_destination_date_and_server(gw):
    st, fields, body = get(gw.port, "/dated")
    assert st == 200 and body == b"ok"
    assert values(fields, "Date") == [ORIGIN_DATE]
    assert values(fields, "Server") == ["origin/1"]


def test_proxied_without_date_gets_one_and_no_server(gw):
    st, fields, body = get(gw.port, "/undated")
    assert st == 200 and body == b"ok"
    assert_date(fields)  # RFC 9110 6.6.1: a forwarded response without Date gets one
    assert values(fields, "Server") == []  # Server names the origin: none is invented


# ---- one error shape ----

def trigger(gw, kind):
    p = gw.port
    if kind == 400:
        return parse(raw(p, b"GET /x HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n"))
    if kind == 403:
        return get(gw.ports["acl"], "/direct")
    if kind == 404:
        return get(p, "/nothing/here")
    if kind == 405:
        return get(p, "/static/a.txt", "POST", b"Content-Length: 0\r\n")
    if kind == 408:
        return parse(raw(p, b"GET /direct HTTP/1.1\r\nHost: a\r\n"))
    if kind == 413:
        return get(p, "/direct", "POST", b"Content-Length: 5000\r\n")
    if kind == 414:
        return get(p, "/" + "a" * 2000)
    if kind == 429:
        for _ in range(3):
            resp = get(gw.ports["rl"], "/direct")
            if resp[0] == 429:
                return resp
        return resp
    if kind == 431:
        return get(p, "/direct", extra=b"X-Big: " + b"b" * 6000 + b"\r\n")
    if kind == 501:
        return get(p, "/direct", "POST", b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n")
    if kind == 505:
        return parse(raw(p, b"GET /direct HTTP/2.0\r\nHost: a\r\n\r\n"))
    if kind == 502:
        return get(p, "/down/x")
    if kind == 504:
        return get(p, "/slow/slow?ms=3000")
    raise AssertionError(kind)


@pytest.mark.parametrize("status", [400, 403, 404, 405, 408, 413, 414, 429, 431, 501, 502, 504, 505])
def test_every_error_has_one_shape(gw, status):
    doc = assert_error(trigger(gw, status), status)
    if status in (404, 405, 413, 429, 502, 504):
        assert doc["requestId"]


def test_request_coding_under_chunked_is_501(gw):
    """Regression: a request body sent with "Transfer-Encoding: gzip, chunked" was de-chunked
    and forwarded without its gzip coding, so the destination took gzip bytes as the content.
    The gateway cannot undo gzip: 501 (RFC 9112 6.1), and the handler never runs."""
    st, _, body = get(gw.port, "/dated", "POST", b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                               b"3\r\nabc\r\n0\r\n")
    assert st == 501 and json.loads(body)["error"] == "not_implemented"


def test_405_keeps_allow(gw):
    _, fields, _ = trigger(gw, 405)
    assert values(fields, "Allow")


def test_429_keeps_retry_after(gw):
    st, fields, _ = trigger(gw, 429)
    assert st == 429 and int(values(fields, "Retry-After")[0]) >= 1


def test_head_error_has_length_and_no_body(gw):
    """HEAD gets the error's head (Content-Length of the JSON) and no body: the next response
    on the connection starts right after the head."""
    data = raw(gw.port, b"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                        b"GET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), data
    assert b"Content-Type: application/json" in head
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 0
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]


def test_error_path_with_raw_bytes_is_valid_json(gw):
    """Bytes >= 0x80 in the path are shown percent-encoded: the body stays ASCII JSON."""
    resp = parse(raw(gw.port, b"GET /caf\xc3\xa9/\xff HTTP/1.1\r\nHost: a\r\n"
                              b"Connection: close\r\n\r\n"))
    body = resp[2]
    assert all(b < 0x80 for b in body), body
    doc = assert_error(resp, resp[0])
    if resp[0] == 404:
        assert doc["path"] == "/caf%C3%A9/%FF", doc


# ---- 403 without list ids ----

def test_403_does_not_name_the_list_by_default(gw):
    _, _, body = trigger(gw, 403)
    assert b"secret-list-7" not in body
    assert json.loads(body)["error"] == "forbidden"


def test_403_names_the_list_when_asked(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, exposeAccessListIds=True,
                      accessControl=[{"id": "lst-9", "type": "blacklist",
                                      "entries": ["127.0.0.1"]}])
    cfg["servers"][0]["accessControl"] = ["lst-9"]
    gw = gateway_factory(cfg)
    doc = assert_error(get(port, "/x"), 403)
    assert "lst-9" in doc["message"]


# ---- errorPages ----

def pages_config(tmp_path, port):
    pages = tmp_path / "pages"
    pages.mkdir(exist_ok=True)
    (pages / "404.html").write_text("<h1>not here</h1>\n")
    (pages / "oops.txt").write_text("something broke\n")
    cfg = base_config(tmp_path, port, routes=[
        {"id": "down", "match": {"path": "/down/{**rest}"}, "clusterId": "down"},
        {"id": "direct", "match": {"path": "/direct"}, "direct": {"status": 200, "body": "d"}}],
        clusters=[{"id": "down", "destinations": [
            {"id": "d", "address": "http://127.0.0.1:%d" % free_port()}]}],
        errorPages={"404": "pages/404.html", "5xx": "pages/oops.txt"},
        accessControl=[{"id": "bl", "type": "blacklist", "entries": ["127.0.0.1"]}])
    acl_port = free_port()
    cfg["servers"].append({"id": "acl", "listen": "127.0.0.1:%d" % acl_port,
                           "accessControl": ["bl"],
                           "errorPages": {"403": {"redirect": "https://example.test/denied"},
                                          "5xx": {"file": "pages/oops.txt",
                                                  "contentType": "text/x-oops"}}})
    return cfg, acl_port


def test_error_pages_file_class_and_redirect(gateway_factory, tmp_path):
    port = free_port()
    cfg, acl_port = pages_config(tmp_path, port)
    gateway_factory(cfg)
    st, fields, body = get(port, "/nothing")
    assert st == 404 and body == b"<h1>not here</h1>\n"
    assert values(fields, "Content-Type")[0].startswith("text/html")
    assert int(values(fields, "Content-Length")[0]) == len(body)
    assert values(fields, "X-Request-Id")
    assert_date(fields)
    # a class entry: every 5xx the gateway answers
    st, fields, body = get(port, "/down/x")
    assert st == 502 and body == b"something broke\n"
    assert values(fields, "Content-Type")[0].startswith("text/plain")
    # a status without an entry keeps the JSON shape
    st, fields, body = get(port, "/direct", extra=b"Bad header\r\n")
    assert_error((st, fields, body), 400)
    # HEAD: the page's length, no body
    data = raw(port, b"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                     b"GET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 18\r\n" in head + b"\r\n" and rest.startswith(b"HTTP/1.1 200")
    # per server: a redirect for 403
    st, fields, body = get(acl_port, "/direct")
    assert st == 302 and values(fields, "Location") == ["https://example.test/denied"]
    assert body == b""


def test_error_pages_reread_on_reload(gateway_factory, tmp_path):
    port = free_port()
    cfg, _ = pages_config(tmp_path, port)
    gw = gateway_factory(cfg)
    assert get(port, "/nothing")[2] == b"<h1>not here</h1>\n"
    (tmp_path / "pages" / "404.html").write_text("<p>moved on</p>\n")
    gw.reload(cfg)
    assert get(port, "/nothing")[2] == b"<p>moved on</p>\n"


def check_t(tmp_path, mutate):
    cfg, _ = pages_config(tmp_path, free_port())
    mutate(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    return proc.stderr


def test_error_pages_validated_at_load(tmp_path):
    big = tmp_path / "big.html"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    cases = [
        (lambda c: c["errorPages"].update({"404": "pages/missing.html"}),
         ["errorPages.404", "missing.html", "No such file"]),
        (lambda c: c["errorPages"].update({"404": str(big)}),
         ["errorPages.404", "65537 bytes, more than the 65536 allowed"]),
        (lambda c: c["errorPages"].update({"404": str(tmp_path)}),
         ["errorPages.404", "not a regular file"]),
        (lambda c: c["errorPages"].update({"404": str(fifo)}),
         ["errorPages.404", "not a regular file"]),
        (lambda c: c["errorPages"].update({"600": "pages/404.html"}),
         ["errorPages", "\"600\" is not a status 400..599"]),
        (lambda c: c["errorPages"].update({"3xx": "pages/404.html"}), ["\"3xx\""]),
        (lambda c: c["servers"][1]["errorPages"].update({"403": {"redirect": "javascript:1"}}),
         ["servers[1].errorPages.403.redirect", "not an absolute path or an http(s) URI"]),
        (lambda c: c["errorPages"].update({"404": {"file": "pages/404.html", "redirect": "/x"}}),
         ["errorPages.404", "exactly one of"]),
        (lambda c: c["errorPages"].update({"404": 7}), ["errorPages.404", "expected"]),
        (lambda c: c.update({"serverHeader": "bad\nvalue"}), ["serverHeader"]),
        (lambda c: c.update({"serverHeader": 3}), ["serverHeader", "true, false or a string"]),
        (lambda c: c.update({"exposeAccessListIds": "yes"}), ["exposeAccessListIds"]),
    ]
    for mutate, needles in cases:
        err = check_t(tmp_path, mutate)
        for n in needles:
            assert n in err, (n, err)


def test_429_message_names_limit_and_window(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, rateLimits=[
        {"id": "ms", "type": "FixedWindow", "maxRequests": 1, "window": "1500ms"},
        {"id": "s", "type": "FixedWindow", "maxRequests": 2, "window": "2m"}])
    cfg["servers"][0]["rateLimits"] = ["ms"]
    cfg["servers"].append({"id": "b", "listen": "127.0.0.1:%d" % free_port(),
                           "rateLimits": ["s"]})
    gateway_factory(cfg)
    for _ in range(5):  # a window boundary between two requests only delays the 429
        resp = get(port, "/x")
        if resp[0] == 429:
            break
    doc = assert_error(resp, 429)
    assert doc["message"] == "rate limit exceeded: 1 requests per 1500ms", doc
    other = int(cfg["servers"][1]["listen"].rsplit(":", 1)[1])
    codes = [get(other, "/x") for _ in range(3)]
    doc = assert_error(codes[-1], 429)
    assert doc["message"] == "rate limit exceeded: 2 requests per 120s", doc


# ---- errorPages: a route per status ----

def route_pages_config(tmp_path, port, up):
    www = tmp_path / "www"
    (www / "errors").mkdir(parents=True, exist_ok=True)
    (www / "errors" / "404.html").write_text("<h1>custom 404</h1>\n")
    routes = [
        {"id": "direct", "match": {"path": "/direct"}, "direct": {"status": 200, "body": "d"}},
        {"id": "down", "match": {"path": "/down/{**rest}"}, "clusterId": "down"},
        {"id": "relay", "match": {"path": "/relay/{**rest}"}, "clusterId": "echo",
         "transforms": [{"PathRemovePrefix": "/relay"}]},
        {"id": "page404", "match": {"path": "/errors/404.html"}, "static": {"root": str(www)}},
        {"id": "missing", "match": {"path": "/errors/missing.html"},
         "static": {"root": str(www)}},
        {"id": "oops", "match": {"path": "/oops-page"},
         "direct": {"status": 200, "headers": {"Content-Type": "text/x-oops"},
                    "body": "oops page"}},
        {"id": "echo-page", "match": {"path": "/echo-page"}, "clusterId": "echo"},
        {"id": "only-b", "servers": ["b"], "match": {"path": "/b"}, "direct": {"status": 200}},
    ]
    clusters = [
        {"id": "down", "destinations": [{"id": "d",
                                         "address": "http://127.0.0.1:%d" % free_port()}]},
        {"id": "echo", "destinations": [{"id": "e", "address": up.url}]},
    ]
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=1,
                      rateLimits=[{"id": "one", "type": "FixedWindow", "scope": "PerIp",
                                   "maxRequests": 1, "window": "1h"}],
                      errorPages={"404": {"route": "page404"},
                                  "5xx": {"route": "oops", "status": 503}})
    ports = {"broken": free_port(), "rl": free_port(), "b": free_port(), "px": free_port()}
    cfg["servers"] += [
        {"id": "broken", "listen": "127.0.0.1:%d" % ports["broken"],
         "errorPages": {"404": {"route": "missing"}}},
        {"id": "rl", "listen": "127.0.0.1:%d" % ports["rl"], "rateLimits": ["one"],
         "errorPages": {"429": {"route": "echo-page"}}},
        {"id": "b", "listen": "127.0.0.1:%d" % ports["b"]},
        {"id": "px", "listen": "127.0.0.1:%d" % ports["px"],
         "errorPages": {"502": {"route": "echo-page"}}},
    ]
    return cfg, ports


def test_error_page_routes(gateway_factory, upstream_factory, tmp_path):
    port = free_port()
    cfg, ports = route_pages_config(tmp_path, port, upstream_factory())
    gw = gateway_factory(cfg)
    # 404 -> a static route: the error's status, the page's body and type
    st, fields, body = get(port, "/nothing?x=1")
    assert st == 404 and body == b"<h1>custom 404</h1>\n", (st, fields, body)
    assert values(fields, "Content-Type")[0].startswith("text/html")
    assert int(values(fields, "Content-Length")[0]) == len(body)
    assert_date(fields)
    # the client's conditionals and Range concern the missing resource, not the page
    st, fields, body = get(port, "/nothing", extra=b"Range: bytes=0-3\r\nIf-Modified-Since: "
                           b"Sun, 06 Nov 2095 08:49:37 GMT\r\n")
    assert st == 404 and body == b"<h1>custom 404</h1>\n", (st, fields, body)
    assert values(fields, "Content-Range") == []
    # a POST is served the page as a GET would be
    st, _, body = get(port, "/nothing", method="DELETE")
    assert st == 404 and body == b"<h1>custom 404</h1>\n"
    # 502 from an unreachable destination -> a direct route, with the status overridden
    st, fields, body = get(port, "/down/x")
    assert st == 503 and body == b"oops page", (st, fields, body)
    assert values(fields, "Content-Type") == ["text/x-oops"]
    # a destination's own 500 is relayed, never replaced
    st, fields, body = get(port, "/relay/status/500")
    assert st == 500 and json.loads(body)["path"] == "/status/500"
    # HEAD: the page's head, no body; the next request on the connection is intact
    data = raw(port, b"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                     b"GET /direct HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), data
    assert b"Content-Length: 20\r\n" in head + b"\r\n", data
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\nd"), data
    # the access log keeps the status the client saw and says a page route answered
    lines = gw.access_log(wait_for=5)
    first = [l for l in lines if l.get("status") == 404][0]
    assert first["termination"] == "error_page", first
    assert first["route"] == "page404" and first["error"] == "not_found", first
    down = [l for l in lines if l.get("status") == 503][0]
    assert down["termination"] == "error_page", down


def test_error_page_route_failing_falls_back_to_json(gateway_factory, upstream_factory,
                                                     tmp_path):
    port = free_port()
    cfg, ports = route_pages_config(tmp_path, port, upstream_factory())
    gw = gateway_factory(cfg)
    # the page route's own 404 (its file is missing) gets the plain JSON error: no second hop
    doc = assert_error(get(ports["broken"], "/nothing?q=1"), 404)
    assert doc["message"] == "file not found", doc
    assert doc["path"] == "/nothing", doc  # what the client asked for, not the page's path
    line = gw.access_log(wait_for=1)[0]
    assert line["status"] == 404 and line["termination"] == "no_route", line
    # a request with a body is not handed to the page route
    data = raw(port, b"POST /nothing HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\nab")
    assert_error(parse(data), 404)


def test_error_page_route_proxied_gets_original_uri(gateway_factory, upstream_factory,
                                                   tmp_path):
    port = free_port()
    cfg, ports = route_pages_config(tmp_path, port, upstream_factory())
    gateway_factory(cfg)
    assert get(ports["rl"], "/direct")[0] == 200
    st, fields, body = get(ports["rl"], "/direct?q=1", method="PUT",
                           extra=b"X-Original-URI: /forged\r\n")
    assert st == 429, (st, fields, body)
    assert values(fields, "Retry-After") == []  # the page route's head, not the error's
    doc = json.loads(body)
    assert doc["method"] == "GET" and doc["path"] == "/echo-page", doc
    sent = [v for n, v in doc["headers"] if n.lower() == "x-original-uri"]
    assert sent == ["/direct?q=1"], doc["headers"]
    # a failed exchange handed to a proxied page: a fresh exchange with the page's destination
    st, fields, body = get(ports["px"], "/down/y")
    assert st == 502 and json.loads(body)["path"] == "/echo-page", (st, fields, body)
    sent = [v for n, v in json.loads(body)["headers"] if n.lower() == "x-original-uri"]
    assert sent == ["/down/y"]


def test_error_page_routes_validated_at_load(upstream_factory, tmp_path):
    up = upstream_factory()

    def check(mutate, needles):
        cfg, _ = route_pages_config(tmp_path, free_port(), up)
        mutate(cfg)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        for n in needles:
            assert n in proc.stderr, (n, proc.stderr)

    check(lambda c: c["errorPages"].update({"404": {"route": "nope"}}),
          ["errorPages.404.route", "no route has the id \"nope\""])
    check(lambda c: c["servers"][1]["errorPages"].update({"404": {"route": "only-b"}}),
          ["servers[1].errorPages.404.route", "\"only-b\" is not attached to server \"broken\""])
    check(lambda c: c["errorPages"].update({"4xx": {"route": "only-b"}}),
          ["errorPages.4xx.route", "\"only-b\" is not attached to server \"main\""])
    check(lambda c: c["errorPages"].update({"404": {"route": "oops", "status": 99}}),
          ["errorPages.404.status"])
    check(lambda c: c["errorPages"].update({"404": {"route": "oops", "file": "x.html"}}),
          ["errorPages.404", "exactly one of"])
    check(lambda c: c["errorPages"].update({"404": {"file": "www/errors/404.html",
                                                    "status": 200}}),
          ["errorPages.404.status", "applies to \"route\" only"])
    # the same server-level entry is accepted where the route is attached
    cfg, _ = route_pages_config(tmp_path, free_port(), up)
    cfg["servers"][3]["errorPages"] = {"404": {"route": "only-b"}}
    path = tmp_path / "good.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr


def check_ok(tmp_path, mutate):
    cfg, _ = pages_config(tmp_path, free_port())
    mutate(cfg)
    path = tmp_path / "good.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)


def redirect_https(authority):
    return lambda c: c["servers"][0].update({"redirectHttps": {"authority": authority}})


@pytest.mark.parametrize("mutate,needles", [
    # a protocol-relative location is another site; a backslash is read as "/" by browsers
    (lambda c: c["errorPages"].update({"404": {"redirect": "//evil.example/x"}}),
     ["errorPages.404.redirect", "not an absolute path or an http(s) URI"]),
    (lambda c: c["errorPages"].update({"404": {"redirect": "/\\evil.example/x"}}),
     ["errorPages.404.redirect", "not an absolute path"]),
    (lambda c: c["errorPages"].update({"404": {"redirect": "https://a.example\\@b/"}}),
     ["errorPages.404.redirect"]),
    (redirect_https("a:99999"), ["redirectHttps.authority", "not a host[:port]"]),
    (redirect_https("a:0"), ["redirectHttps.authority"]),
    (redirect_https("a:"), ["redirectHttps.authority"]),
    (redirect_https("a:8x"), ["redirectHttps.authority"]),
    (redirect_https("[::1"), ["redirectHttps.authority"]),
    (redirect_https("[::1]x"), ["redirectHttps.authority"]),
    (redirect_https("[nothex]:443"), ["redirectHttps.authority"]),
    (redirect_https("::1"), ["redirectHttps.authority"]),
    (redirect_https("a b"), ["redirectHttps.authority"]),
    (lambda c: c.update({"serverHeader": " acme"}), ["serverHeader", "not a valid field value"]),
    (lambda c: c.update({"serverHeader": "acme\t"}), ["serverHeader", "not a valid field value"]),
    (lambda c: c.update({"serverHeader": "a" * 257}),
     ["serverHeader", "257 bytes, more than the 256 allowed"]),
    (lambda c: c.update({"serverHeader": "a" * 200000}), ["serverHeader", "200000 bytes"]),
], ids=["protocol-relative", "backslash-path", "backslash-uri", "port-too-big", "port-0",
        "port-empty", "port-not-digits", "ipv6-unclosed", "ipv6-trailing", "ipv6-bad",
        "ipv6-unbracketed", "space", "server-leading-space", "server-trailing-tab",
        "server-257", "server-200000"])
def test_locations_authorities_and_server_header_validated(tmp_path, mutate, needles):
    err = check_t(tmp_path, mutate)
    for n in needles:
        assert n in err, (n, err)


@pytest.mark.parametrize("mutate", [
    lambda c: c["errorPages"].update({"404": {"redirect": "/a//b"}}),
    lambda c: c["errorPages"].update({"404": {"redirect": "https://example.com//x"}}),
    redirect_https("example.com:8443"), redirect_https("192.0.2.1"),
    redirect_https("[2001:db8::1]:65535"), redirect_https("[::1]"),
    lambda c: c.update({"serverHeader": "a" * 256}),
    lambda c: c.update({"serverHeader": "acme/2.1 (edge)"}),
], ids=["path-with-double-slash", "uri-with-double-slash", "host-port", "ipv4", "ipv6-port",
        "ipv6", "server-256", "server-comment"])
def test_valid_locations_authorities_and_server_header_pass(tmp_path, mutate):
    check_ok(tmp_path, mutate)
