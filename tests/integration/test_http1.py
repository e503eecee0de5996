"""HTTP/1.1 front end over raw sockets (worker/http/http1.c, common/http1_parser.c): keep-alive,
HTTP/1.0, pipelining, 100-continue, HEAD, every request-smuggling vector of RFC 9112 sections
6.3 and 11.2 (400, close, and nothing reaches the upstream), size limits, timeouts, chunked
request bodies and the 404 document.

One gateway serves the whole module; it has two clusters: the echo upstream (upstream.py) and
an in-process recorder that keeps every byte it receives, so a test can prove that a rejected
request never left the gateway."""
import json
import socket
import threading
import time

import pytest

from conftest import SANITIZER_RE, Gateway, Upstream, base_config, free_port

SERVER_BODY_LIMIT = 64 * 1024
ROUTE_BODY_LIMIT = 1024


# ---- raw HTTP helpers ----

class Reader:
    """Buffered reader of HTTP responses from a raw socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head_only=False, interim=False):
        """One response: (status, [(name, value)], body, raw_head). With interim=True a 1xx
        response is returned as such instead of being skipped."""
        while True:
            status_line = self.line().decode("latin-1")
            version, status = status_line.split(" ", 2)[:2]
            assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
            status = int(status)
            headers = []
            while True:
                h = self.line().decode("latin-1")
                if h == "":
                    break
                name, _, value = h.partition(":")
                headers.append((name, value.strip()))
            if 100 <= status < 200 and not interim:
                continue
            break
        hd = {k.lower(): v for k, v in headers}
        if head_only or 100 <= status < 200 or status in (204, 304):
            return status, headers, b""
        if "chunked" in hd.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line() != b"":
                        pass
                    break
                body += self.exact(size)
                assert self.exact(2) == b"\r\n"
            return status, headers, body
        if "content-length" in hd:
            return status, headers, self.exact(int(hd["content-length"]))
        body = self.buf
        self.buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return status, headers, body
            body += data

    def closed(self, timeout=5.0):
        """Whether the peer closes the connection (EOF or reset) within timeout, with no
        further bytes."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def hdr(headers, name):
    """Value of the first header of that name (case-insensitive), or None."""
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def echo_header(doc, name):
    return [v for n, v in doc["headers"] if n.lower() == name.lower()]


def connect(gw, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return s, Reader(s)


def get(path, extra=b"", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + path + b" " + version + b"\r\nHost: gw.test\r\n" + extra + b"\r\n"


# ---- recorder upstream: remembers every byte, answers every head with 200 ----

class Recorder:
    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.data = b""
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        pending = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    return
                with self.lock:
                    self.data += data
                pending += data
                while b"\r\n\r\n" in pending:
                    pending = pending.split(b"\r\n\r\n", 1)[1]
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nrec")
        except OSError:
            pass
        finally:
            s.close()

    def seen(self, marker):
        with self.lock:
            return marker in self.data

    def stop(self):
        self.stopped = True
        self.ls.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http1")
    up = Upstream().start()
    rec = Recorder()
    routes = [
        {"id": "direct", "match": {"path": "/direct/{**rest}"},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                    "body": "direct-ok"}},
        {"id": "d1", "match": {"path": "/d1"}, "direct": {"status": 200, "body": "one"}},
        {"id": "d2", "match": {"path": "/d2"}, "direct": {"status": 200, "body": "two!"}},
        {"id": "d3", "match": {"path": "/d3"}, "direct": {"status": 200, "body": "three"}},
        {"id": "up", "match": {"path": "/up/{**rest}"}, "clusterId": "echo",
         "transforms": [{"PathRemovePrefix": "/up"}]},
        {"id": "small", "match": {"path": "/small/{**rest}"}, "clusterId": "echo",
         "maxRequestBodySize": ROUTE_BODY_LIMIT},
        {"id": "rec", "match": {"path": "/rec/{**rest}"}, "clusterId": "rec"},
    ]
    clusters = [
        {"id": "echo", "destinations": [{"id": "e", "address": up.url}]},
        {"id": "rec", "destinations": [{"id": "r", "address": "http://127.0.0.1:%d" % rec.port}]},
    ]
    cfg = base_config(tmp, free_port(), routes=routes, clusters=clusters, workers=2)
    cfg["servers"][0]["limits"] = {"maxRequestLineSize": "1k", "maxHeaderSize": "4k",
                                   "maxHeaders": 20, "maxRequestBodySize": SERVER_BODY_LIMIT}
    cfg["servers"][0]["timeouts"] = {"header": "1s", "body": "1s", "keepAlive": "1s"}
    g = Gateway(cfg, tmp)
    try:
        g.start()
        g.upstream = up
        g.recorder = rec
        yield g
    finally:
        g.stop()
        up.stop()
        rec.stop()
    text = g.stderr() + g.error_log()
    assert not SANITIZER_RE.search(text), text[-3000:]


# ---- keep-alive and HTTP/1.0 ----

@pytest.mark.parametrize("path", [b"/direct/a", b"/up/a"])
def test_keep_alive_two_requests_on_one_connection(gw, path):
    s, r = connect(gw)
    with s:
        s.sendall(get(path + b"?n=1"))
        st1, h1, b1 = r.response()
        s.sendall(get(path + b"?n=2"))
        st2, h2, b2 = r.response()
        assert (st1, st2) == (200, 200)
        assert hdr(h1, "Connection") != "close"
        if path.startswith(b"/up"):
            assert json.loads(b1)["query"] == "n=1"
            assert json.loads(b2)["query"] == "n=2"
        else:
            assert b1 == b2 == b"direct-ok"
        assert not r.closed(timeout=0.2)


def test_keep_alive_connection_close_is_honoured(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/up/a", b"Connection: close\r\n"))
        st, h, _ = r.response()
        assert st == 200
        assert hdr(h, "Connection").lower() == "close"
        assert r.closed()


@pytest.mark.parametrize("path", [b"/direct/a", b"/up/a"])
def test_http10_closes_by_default(gw, path):
    s, r = connect(gw)
    with s:
        s.sendall(get(path, version=b"HTTP/1.0"))
        st, h, body = r.response()
        assert st == 200
        assert body
        assert r.closed()


@pytest.mark.parametrize("path", [b"/direct/a", b"/up/a"])
def test_http10_keep_alive_on_request(gw, path):
    s, r = connect(gw)
    with s:
        s.sendall(get(path, b"Connection: keep-alive\r\n", version=b"HTTP/1.0"))
        st, h, body = r.response()
        assert st == 200
        assert hdr(h, "Connection").lower() == "keep-alive"
        assert hdr(h, "Content-Length") == str(len(body))
        s.sendall(get(path + b"2", b"Connection: keep-alive\r\n", version=b"HTTP/1.0"))
        st, h, body = r.response()
        assert st == 200 and body


# ---- pipelining ----

def test_pipelining_cluster_route(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/up/p1") + get(b"/up/p2", method=b"DELETE") + get(b"/up/p3"))
        docs = [json.loads(r.response()[2]) for _ in range(3)]
        assert [(d["method"], d["path"]) for d in docs] == [
            ("GET", "/p1"), ("DELETE", "/p2"), ("GET", "/p3")]


def test_pipelining_direct_route(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/d1") + get(b"/d2") + get(b"/d3"))
        bodies = [r.response()[2] for _ in range(3)]
        assert bodies == [b"one", b"two!", b"three"]


def test_pipelining_with_bodies_mixed_routes(gw):
    body = b"0123456789"
    post = (b"POST /up/post HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n\r\n" + body)
    s, r = connect(gw)
    with s:
        s.sendall(post + get(b"/d2") + post + get(b"/up/last", b"Connection: close\r\n"))
        st1, _, b1 = r.response()
        st2, _, b2 = r.response()
        st3, _, b3 = r.response()
        st4, _, b4 = r.response()
        assert (st1, st2, st3, st4) == (200, 200, 200, 200)
        assert json.loads(b1)["body"] == body.decode()
        assert b2 == b"two!"
        assert json.loads(b3)["body"] == body.decode()
        assert json.loads(b4)["path"] == "/last"
        assert r.closed()


def test_pipelining_after_body_to_direct_route(gw):
    s, r = connect(gw)
    with s:
        s.sendall(b"POST /d1 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\n\r\nbody"
                  + get(b"/d2"))
        assert r.response()[2] == b"one"
        assert r.response()[2] == b"two!"


def test_absolute_form_target(gw):
    s, r = connect(gw)
    with s:
        s.sendall(b"GET http://abs.test/up/abs?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        st, _, body = r.response()
        assert st == 200
        doc = json.loads(body)
        assert (doc["path"], doc["query"]) == ("/abs", "q=1")
        assert echo_header(doc, "X-Forwarded-Host") == ["abs.test"]


def test_options_asterisk_answered_by_the_gateway(gw):
    """RFC 9112 3.2.4 / RFC 9110 9.3.7: OPTIONS * asks about the server itself."""
    s, r = connect(gw)
    with s:
        s.sendall(get(b"*", method=b"OPTIONS") + get(b"/up/after"))
        st, headers, body = r.response()
        assert st == 200 and body == b""
        assert "OPTIONS" in hdr(headers, "Allow")
        assert hdr(headers, "Content-Length") == "0"
        st, _, body = r.response()  # the connection stays usable
        assert st == 200 and json.loads(body)["path"] == "/after"


def test_asterisk_target_only_for_options(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"*"))
        st, _, body = r.response()
        assert st == 400 and b"OPTIONS only" in body


@pytest.mark.parametrize("target", [
    b"http://user@abs.test/up/x",                 # userinfo (RFC 9110 4.2.4)
    b'http://a<b>"{}|c@evil:99/up/x',             # characters no host has
    b"http:///up/x",                              # no host (RFC 9110 4.2.1)
])
def test_absolute_form_authority_validated(gw, target):
    # Regression: the authority of an absolute-form target replaced Host unchecked and went on
    # to routing, the access log and X-Forwarded-Host.
    s, r = connect(gw)
    with s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: good.test\r\n\r\n")
        st, _, _ = r.response()
        assert st == 400


def test_fragment_is_not_forwarded(gw):
    # Regression: "#frag" used to reach the upstream inside the query (RFC 9112 3.2).
    s, r = connect(gw)
    with s:
        s.sendall(b"GET /up/frag?q=1#section HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        st, _, body = r.response()
        assert st == 200
        doc = json.loads(body)
        assert (doc["path"], doc["query"]) == ("/frag", "q=1")


# ---- Expect: 100-continue, HEAD ----

def test_expect_100_continue(gw):
    s, r = connect(gw)
    with s:
        s.sendall(b"POST /up/e HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        st, _, _ = r.response(interim=True)
        assert st == 100
        s.sendall(b"hello")
        st, _, body = r.response()
        assert st == 200
        doc = json.loads(body)
        assert doc["body"] == "hello"
        assert echo_header(doc, "Expect") == []


def test_expect_100_continue_not_sent_when_body_refused(gw):
    s, r = connect(gw)
    with s:
        s.sendall(b"POST /rec/expect-413 HTTP/1.1\r\nHost: gw.test\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                  % (SERVER_BODY_LIMIT + 1))
        st, _, body = r.response(interim=True)
        assert st == 413, body
        assert r.closed()
    assert not gw.recorder.seen(b"expect-413")


def test_head_has_no_body_but_content_length(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/direct/h", method=b"HEAD"))
        st, h, _ = r.response(head_only=True)
        assert st == 200
        assert hdr(h, "Content-Length") == str(len(b"direct-ok"))
        s.sendall(get(b"/up/bytes/1000", method=b"HEAD"))
        st, h, _ = r.response(head_only=True)
        assert st == 200
        assert hdr(h, "Content-Length") == "1000"
        # no body bytes were sent: the next response on the connection parses cleanly
        s.sendall(get(b"/d1"))
        st, _, body = r.response()
        assert (st, body) == (200, b"one")


# ---- request smuggling vectors: 400, close, nothing forwarded ----

SMUGGLING = {
    "cl_and_te": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "two_differing_cl": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n"
                        b"Content-Length: 6\r\n\r\nhello!",
    "cl_list_differing": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5, 6\r\n"
                         b"\r\nhello!",
    "cl_plus_sign": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +5\r\n\r\nhello",
    "cl_minus_sign": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -5\r\n\r\nhello",
    "te_gzip_only": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip\r\n"
                    b"\r\n0\r\n\r\n",
    "te_chunked_then_gzip": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\n"
                            b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_chunked_twice_list": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\n"
                             b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_twice_fields": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\n"
                               b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
                               b"\r\n0\r\n\r\n",
    "space_before_colon": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nContent-Length : 5\r\n"
                          b"\r\nhello",
    "tab_before_colon": b"GET /rec/M HTTP/1.1\r\nHost: gw.test\r\nX-A\t: b\r\n\r\n",
    "obs_fold": b"GET /rec/M HTTP/1.1\r\nHost: gw.test\r\nX-A: b\r\n c\r\n\r\n",
    "nul_in_value": b"GET /rec/M HTTP/1.1\r\nHost: gw.test\r\nX-A: b\x00c\r\n\r\n",
    "cr_in_value": b"GET /rec/M HTTP/1.1\r\nHost: gw.test\r\nX-A: b\rc\r\n\r\n",
    "bare_lf": b"GET /rec/M HTTP/1.1\nHost: gw.test\n\n",
    "bare_lf_in_headers": b"GET /rec/M HTTP/1.1\r\nHost: gw.test\nX-A: b\r\n\r\n",
    "chunk_size_zz": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_without_crlf": b"POST /rec/M HTTP/1.1\r\nHost: gw.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "http11_without_host": b"GET /rec/M HTTP/1.1\r\nX-A: b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_vector_rejected(gw, name):
    marker = ("/rec/smuggle-%s-%d" % (name, time.monotonic_ns())).encode()
    data = SMUGGLING[name].replace(b"/rec/M", marker)
    # a well-formed request after the bad one must never be executed either
    follow = get(marker + b"-after")
    s, r = connect(gw)
    with s:
        s.sendall(data + follow)
        st, h, body = r.response()
        assert st == 400, (st, body)
        assert hdr(h, "Connection").lower() == "close"
        assert json.loads(body)["status"] == 400
        assert r.closed()
    # a control request through the same cluster proves the recorder is reachable
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/rec/control-" + marker[5:]))
        assert r.response()[0] == 200
    assert gw.recorder.seen(b"/rec/control-" + marker[5:])
    assert not gw.recorder.seen(marker + b" "), name
    assert not gw.recorder.seen(marker + b"-after"), name


# A transfer coding the gateway does not decode, before a final chunked: 501 (RFC 9112 6.1),
# the connection closed and nothing forwarded (it used to go upstream without the coding).
UNKNOWN_CODINGS = {
    "gzip_chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "x_chunked": b"Transfer-Encoding: x, chunked\r\n",
    "two_fields": b"Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
def test_unsupported_http_version_505(gw, version):
    """RFC 9112 2.3 / RFC 9110 15.6.6: a request line with a major version other than 1."""
    expect_error(gw, b"GET /rec/v505 " + version + b"\r\nHost: gw.test\r\n\r\n", 505,
                 marker=b"v505")


@pytest.mark.parametrize("name", sorted(UNKNOWN_CODINGS))
def test_unknown_transfer_coding_501(gw, name):
    marker = ("/rec/coding-%s-%d" % (name, time.monotonic_ns())).encode()
    data = (b"POST " + marker + b" HTTP/1.1\r\nHost: gw.test\r\n" + UNKNOWN_CODINGS[name]
            + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    s, r = connect(gw)
    with s:
        s.sendall(data + get(marker + b"-after"))
        st, h, body = r.response()
        assert st == 501, (st, body)
        assert json.loads(body)["status"] == 501
        assert r.closed()
    assert not gw.recorder.seen(marker)


# ---- limits ----

def expect_error(gw, data, status, marker=None):
    s, r = connect(gw)
    with s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer and close before reading everything
        st, h, body = r.response()
        assert st == status, (st, body)
        doc = json.loads(body)
        assert doc["status"] == status
        assert r.closed()
    if marker is not None:
        assert not gw.recorder.seen(marker)


def test_request_line_too_long_414(gw):
    path = b"/rec/long-line-" + b"a" * 1100
    expect_error(gw, get(path), 414, marker=b"long-line-")


def test_request_line_just_under_limit_ok(gw):
    path = b"/direct/" + b"a" * 900
    s, r = connect(gw)
    with s:
        s.sendall(get(path))
        assert r.response()[:1] == (200,)


def test_header_section_too_large_431(gw):
    extra = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 500) for i in range(10))
    expect_error(gw, get(b"/rec/big-headers", extra), 431, marker=b"big-headers")


def test_too_many_headers_431(gw):
    extra = b"".join(b"X-H-%d: v\r\n" % i for i in range(30))
    expect_error(gw, get(b"/rec/many-headers", extra), 431, marker=b"many-headers")


def test_headers_within_limits_ok(gw):
    extra = b"".join(b"X-H-%d: v\r\n" % i for i in range(15))
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/up/ok-headers", extra))
        st, _, body = r.response()
        assert st == 200
        assert len(echo_header(json.loads(body), "X-H-14")) == 1


def test_body_over_server_limit_413(gw):
    n = SERVER_BODY_LIMIT + 1
    data = (b"POST /rec/server-limit HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n"
            % n) + b"a" * n
    expect_error(gw, data, 413, marker=b"server-limit")


def test_chunked_body_over_server_limit_413(gw):
    chunk = b"a" * 8192
    body = b"".join(b"2000\r\n" + chunk + b"\r\n" for _ in range(9)) + b"0\r\n\r\n"
    data = (b"POST /up/chunked-limit HTTP/1.1\r\nHost: gw.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body)
    expect_error(gw, data, 413)


def test_body_over_route_limit_413(gw):
    n = ROUTE_BODY_LIMIT + 1
    data = (b"POST /small/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % n
            + b"a" * n)
    expect_error(gw, data, 413)


def test_chunked_body_over_route_limit_413(gw):
    data = (b"POST /small/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"400\r\n" + b"a" * 1024 + b"\r\n1\r\nb\r\n0\r\n\r\n")
    expect_error(gw, data, 413)


def test_chunked_body_at_route_limit_ok(gw):
    """A chunked body of exactly the limit is accepted: only a byte more is too large."""
    half = ROUTE_BODY_LIMIT // 2
    data = (b"POST /small/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n" % half + b"a" * half + b"\r\n") * 2 + b"0\r\n\r\n")
    s, r = connect(gw)
    with s:
        s.sendall(data)
        st, _, body = r.response()
        assert st == 200
        assert json.loads(body)["bodyLength"] == ROUTE_BODY_LIMIT


def test_body_at_route_limit_ok(gw):
    n = ROUTE_BODY_LIMIT
    data = (b"POST /small/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % n
            + b"a" * n)
    s, r = connect(gw)
    with s:
        s.sendall(data)
        st, _, body = r.response()
        assert st == 200
        assert json.loads(body)["bodyLength"] == n


# ---- timeouts ----

def test_header_timeout_408(gw):
    s, r = connect(gw, timeout=10)
    with s:
        t0 = time.monotonic()
        s.sendall(b"GET /rec/half-head HTTP/1.1\r\nHost: gw.test\r\n")
        st, h, body = r.response()
        assert st == 408, body
        assert json.loads(body)["status"] == 408
        assert r.closed()
        assert time.monotonic() - t0 < 8  # header timeout is 1s
    assert not gw.recorder.seen(b"half-head")


def test_header_timeout_is_a_deadline_for_the_whole_head(gw):
    # Regression (slowloris): the header timeout (1 s) restarted on every byte, so a client
    # sending one header byte every 0.3 s could hold the connection as long as it liked.
    s, r = connect(gw, timeout=10)
    with s:
        t0 = time.monotonic()
        s.sendall(b"GET /rec/trickle HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ")
        try:
            for _ in range(20):  # 6 s of trickling if nobody stops it
                time.sleep(0.3)
                s.sendall(b"a")
        except OSError:
            pass  # the gateway answered and closed: expected
        st, _, body = r.response()
        assert st == 408, body
        assert time.monotonic() - t0 < 3.0
    assert not gw.recorder.seen(b"trickle")


def test_lingering_close_has_a_total_limit(gw):
    # Regression: after an error answer the gateway shuts its side and reads until the client
    # stops; every byte restarted the 2 s wait, so a client trickling a byte a second held the
    # connection for ever. The whole linger is now bounded (5 s).
    s, r = connect(gw, timeout=10)
    with s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: gw.test\r\nBad Header: y\r\n\r\n")
        st, _, _ = r.response()
        assert st == 400
        t0 = time.monotonic()
        closed = False
        for _ in range(30):  # 15 s of trickling if nobody stops it
            time.sleep(0.5)
            try:
                s.sendall(b"z")
            except OSError:
                closed = True
                break
        assert closed
        assert time.monotonic() - t0 < 10


def test_header_deadline_counts_from_accept(gw):
    # Regression: the deadline started at the first byte, so waiting 0.9 s before sending
    # anything left another full second for the head.
    s, r = connect(gw, timeout=10)
    with s:
        t0 = time.monotonic()
        time.sleep(0.8)
        s.sendall(b"GET /rec/late HTTP/1.1\r\nHost: gw.test\r\n")
        st, _, _ = r.response()
        assert st == 408
        assert time.monotonic() - t0 < 1.6


def test_idle_new_connection_closed_without_response(gw):
    s, r = connect(gw, timeout=10)
    with s:
        t0 = time.monotonic()
        assert r.closed(timeout=8)  # header timeout is 1s; nothing was asked, nothing said
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("path", [b"/up/body-timeout", b"/direct/body-timeout"])
def test_body_timeout_408(gw, path):
    s, r = connect(gw, timeout=10)
    with s:
        t0 = time.monotonic()
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n"
                  b"\r\nhalf!")
        st, h, body = r.response()
        if path.startswith(b"/direct"):
            # a direct route answers without waiting for the body; the unread rest of it
            # means the connection cannot be reused
            assert (st, body) == (200, b"direct-ok")
        else:
            assert st == 408, body
            assert json.loads(body)["status"] == 408
        assert hdr(h, "Connection").lower() == "close"
        assert r.closed(timeout=8)
        assert time.monotonic() - t0 < 8  # body timeout is 1s


def test_body_timeout_runs_from_the_last_read(gw):
    # The read timer is left armed when a read pushes the due time forward and is armed again
    # for the rest when it fires early: a body trickled within the timeout (1 s) between reads
    # is never cut, and the 408 comes a full timeout after the last byte, not at the first
    # timer's expiry.
    s, r = connect(gw, timeout=10)
    with s:
        s.sendall(b"POST /up/trickle-ok HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 6\r\n\r\na")
        for ch in b"bcdef":  # 3 s in all, 0.6 s apart
            time.sleep(0.6)
            s.sendall(bytes([ch]))
        st, _, body = r.response()
        assert st == 200, body
        assert json.loads(body)["bodyLength"] == 6
    s, r = connect(gw, timeout=10)
    with s:
        s.sendall(b"POST /up/trickle-stop HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n\r\na")
        for ch in b"bcd":
            time.sleep(0.6)
            s.sendall(bytes([ch]))
        t_last = time.monotonic()
        st, _, body = r.response()
        waited = time.monotonic() - t_last
        assert st == 408, body
        assert 0.9 <= waited < 5, waited


def test_keep_alive_timeout_closes_idle_connection(gw):
    s, r = connect(gw, timeout=10)
    with s:
        s.sendall(get(b"/d1"))
        assert r.response()[2] == b"one"
        t0 = time.monotonic()
        assert r.closed(timeout=8)  # keepAlive is 1s
        assert time.monotonic() - t0 < 8


# ---- chunked request body, 404 ----

def test_chunked_request_body_reaches_upstream(gw):
    parts = [b"hello ", b"chunked ", b"x" * 5000, b" world"]
    body = b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in parts)
    data = (b"POST /up/chunked HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body + b"0\r\nX-Trailer: t\r\n\r\n")
    s, r = connect(gw)
    with s:
        s.sendall(data)
        st, _, resp = r.response()
        assert st == 200
        doc = json.loads(resp)
        assert doc["body"] == b"".join(parts).decode()
        assert doc["bodyLength"] == len(b"".join(parts))
        assert [v.lower() for v in echo_header(doc, "Transfer-Encoding")] == ["chunked"]
        assert echo_header(doc, "Content-Length") == []
        # the connection stays usable after the chunked body
        s.sendall(get(b"/d3"))
        assert r.response()[2] == b"three"


def test_chunked_request_body_sent_slowly(gw):
    s, r = connect(gw)
    with s:
        s.sendall(b"POST /up/slow-chunks HTTP/1.1\r\nHost: gw.test\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b"3\r\nabc\r\n", b"4\r\n", b"defg", b"\r\n", b"0\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.02)
        st, _, resp = r.response()
        assert st == 200
        assert json.loads(resp)["body"] == "abcdefg"


def test_no_route_404_json(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/nothing/here?x=1"))
        st, h, body = r.response()
        assert st == 404
        assert hdr(h, "Content-Type").startswith("application/json")
        doc = json.loads(body)
        assert set(doc) == {"status", "error", "message", "requestId", "path"}
        assert doc["status"] == 404
        assert doc["path"] == "/nothing/here"
        assert isinstance(doc["error"], str) and doc["error"]
        assert isinstance(doc["message"], str) and doc["message"]
        assert doc["requestId"]
        # the connection survives a 404
        s.sendall(get(b"/d1"))
        assert r.response()[2] == b"one"


def test_404_keeps_client_request_id(gw):
    s, r = connect(gw)
    with s:
        s.sendall(get(b"/nothing", b"X-Request-Id: my-id-123\r\n"))
        st, _, body = r.response()
        assert st == 404
        assert json.loads(body)["requestId"] == "my-id-123"



def test_request_state_does_not_outlive_its_connection(gw):
    """Request state released by an idle keep-alive connection and taken by another connection's
    next request starts clear: an error recorded for a refused request on one connection is
    never logged for a good request on another."""
    held = []
    try:
        for i in range(8):
            a, ra = connect(gw)
            held.append(a)
            a.sendall(get(b"/nowhere/%d" % i))
            st, h, _ = ra.response()
            assert st == 404 and hdr(h, "Connection") != "close"
            b, rb = connect(gw)
            held.append(b)
            b.sendall(get(b"/d1?clean=%d" % i))
            assert rb.response()[0] == 200
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while True:
        lines = gw.access_log()
        clean = [ln for ln in lines if ln.get("query", "").startswith("clean=")]
        refused = [ln for ln in lines if ln.get("path", "").startswith("/nowhere/")]
        if len(clean) == 8 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(clean) == 8 and len(refused) == 8
    assert all(ln.get("error") in (None, "", "-") for ln in clean), clean
