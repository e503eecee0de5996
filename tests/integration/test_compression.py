"""Response compression (worker/http/compress.c, docs/compression.md): gzip of proxied, static
and direct responses over HTTP/1.1 and HTTP/2 when the route enables it and the client accepts
it, and every case that must go out as it is."""
import gzip
import http.client
import json
import os
import shutil
import subprocess
import time
import zlib

import pytest

from conftest import base_config, free_port, recv_until_close

PAGE = b"".join(b"<li class=\"item\">entry %d of the list</li>\n" % i for i in range(2000))
SMALL = b"tiny text\n"
JSON_DOC = json.dumps([{"id": i, "name": "user %d" % i, "active": i % 2 == 0}
                       for i in range(500)]).encode()
EVENTS = [b"data: event %d %s\n\n" % (i, b"x" * 40) for i in range(5)]


def big_text():
    return b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(8 * 1024 * 1024 // 55))


def respond(sock, status, headers, body=b""):
    head = "HTTP/1.1 %d X\r\n" % status + "".join("%s: %s\r\n" % h for h in headers)
    sock.sendall(head.encode() + b"\r\n" + body)


def upstream_script(sock, head):
    """The destination of the compressing routes: what it answers depends on the path."""
    path = head.split(b" ", 2)[1].decode()
    if path.endswith("/json"):
        respond(sock, 200, [("Content-Type", "application/json; charset=utf-8"),
                            ("Content-Length", len(JSON_DOC)), ("ETag", '"v1"'),
                            ("Vary", "Origin")], JSON_DOC)
    elif path.endswith("/encoded"):
        body = gzip.compress(PAGE)
        respond(sock, 200, [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                            ("Content-Length", len(body))], body)
    elif path.endswith("/notransform"):
        respond(sock, 200, [("Content-Type", "text/html"), ("Content-Length", len(PAGE)),
                            ("Cache-Control", "public, no-transform")], PAGE)
    elif path.endswith("/notmodified"):
        respond(sock, 304, [("ETag", '"v1"')])
    elif path.endswith("/unknown-length"):
        respond(sock, 200, [("Content-Type", "text/plain"), ("Connection", "close")], PAGE)
    elif path.endswith("/stream"):
        respond(sock, 200, [("Content-Type", "text/event-stream"),
                            ("Transfer-Encoding", "chunked")])
        for ev in EVENTS:
            sock.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            time.sleep(0.1)
        sock.sendall(b"0\r\n\r\n")
    elif path.endswith("/tinychunks"):
        # 20,000 one-byte chunks in one write: many send_body calls in one turn of the loop
        respond(sock, 200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
                b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(20000)) + b"0\r\n\r\n")
    elif path.endswith("/big"):
        body = big_text()
        respond(sock, 200, [("Content-Type", "text/plain"), ("Content-Length", len(body))], body)
    else:
        respond(sock, 404, [("Content-Type", "text/plain"), ("Content-Length", 0)])


@pytest.fixture
def gw(tmp_path, gateway_factory, scripted):
    www = tmp_path / "www"
    www.mkdir()
    (www / "page.html").write_bytes(PAGE)
    (www / "small.txt").write_bytes(SMALL)
    (www / "image.png").write_bytes(os.urandom(20000))
    (www / "big.txt").write_bytes(big_text())
    up = scripted(upstream_script)
    on = {"enabled": True,
          "types": ["text/html", "text/plain", "application/json", "text/event-stream"]}
    routes = [
        {"id": "up", "match": {"path": "/up/{**rest}"}, "clusterId": "c", "compression": on},
        {"id": "files", "match": {"path": "/static/{**rest}"}, "static": {"root": str(www)},
         "compression": {"enabled": True, "level": 6}},
        {"id": "direct", "match": {"path": "/direct"}, "compression": {"enabled": True},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                    "body": PAGE.decode()[:5000]}},
        {"id": "off", "match": {"path": "/off/{**rest}"}, "clusterId": "c"},
    ]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url}]}]
    cfg = base_config(tmp_path, free_port(), routes=routes, clusters=clusters, workers=1)
    cfg["servers"][0]["http2"] = {"h2c": True}
    g = gateway_factory(cfg)
    g.www = www
    return g


def get(gw, path, method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


GZ = {"Accept-Encoding": "gzip"}


def assert_gzip(r, body, original):
    assert r.status == 200
    assert r.getheader("Content-Encoding") == "gzip"
    assert r.getheader("Content-Length") is None
    assert "accept-encoding" in r.getheader("Vary", "").lower()
    assert gzip.decompress(body) == original


def assert_identity(r, body, original, vary):
    assert r.getheader("Content-Encoding") is None
    assert body == original
    assert ("accept-encoding" in r.getheader("Vary", "").lower()) == vary


def test_proxied_json_is_gzipped_vary_appended_etag_weakened(gw):
    r, body = get(gw, "/up/json", headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"})
    assert_gzip(r, body, JSON_DOC)
    assert r.getheader("Vary") == "Origin, Accept-Encoding"
    assert r.getheader("ETag") == 'W/"v1"'
    assert r.getheader("Transfer-Encoding") == "chunked"


def test_curl_compressed_proxied_and_static(gw):
    for path, original in (("/up/json", JSON_DOC), ("/static/page.html", PAGE)):
        out = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", "-o", "/dev/stdout",
                              "http://127.0.0.1:%d%s" % (gw.port, path)],
                             capture_output=True, timeout=20, check=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower()
        assert b"content-length" not in head.lower()
        assert body == original


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing")
def test_http2_static_and_proxied(gw):
    for path, original in (("/up/json", JSON_DOC), ("/static/page.html", PAGE),
                           ("/static/big.txt", big_text())):
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H",
                              "Accept-Encoding: gzip", "-D", "-", "-o", "/dev/stdout",
                              "http://127.0.0.1:%d%s" % (gw.port, path)],
                             capture_output=True, timeout=30, check=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/2 200")
        assert b"content-encoding: gzip" in head.lower()
        assert b"content-length" not in head.lower()
        assert gzip.decompress(body) == original


def test_static_file_and_direct_are_gzipped(gw):
    r, body = get(gw, "/static/page.html", headers=GZ)
    assert_gzip(r, body, PAGE)
    assert r.getheader("ETag", "").startswith('W/"')
    r, body = get(gw, "/direct", headers=GZ)
    assert_gzip(r, body, PAGE[:5000])


def test_no_accept_encoding_or_q0_gets_identity_with_vary(gw):
    for h in ({}, {"Accept-Encoding": "gzip;q=0"}, {"Accept-Encoding": "br, identity"},
              {"Accept-Encoding": "*;q=0"}, {"Accept-Encoding": "gzip;q=0, *"}):
        r, body = get(gw, "/static/page.html", headers=h)
        assert_identity(r, body, PAGE, vary=True)
        assert r.getheader("Content-Length") == str(len(PAGE))
    r, body = get(gw, "/up/json", headers={"Accept-Encoding": "*"})
    assert_gzip(r, body, JSON_DOC)


def test_a_body_relayed_in_tiny_chunks_is_coded_once_per_read_not_per_chunk(gw):
    """Chunks that arrive together are deflated together and flushed once: coding them one by
    one (a sync flush each) made 20,000 one-byte chunks 140,020 bytes, seven times the body."""
    original = bytes(97 + i % 26 for i in range(20000))
    r, body = get(gw, "/up/tinychunks", headers={"Accept-Encoding": "gzip"})
    assert_gzip(r, body, original)
    assert len(body) < len(original) // 4, len(body)


def test_head_range_and_304_are_not_compressed(gw):
    r, body = get(gw, "/static/page.html", method="HEAD", headers=GZ)
    assert r.getheader("Content-Encoding") is None and body == b""
    assert r.getheader("Content-Length") == str(len(PAGE))
    r, body = get(gw, "/static/page.html", headers={"Accept-Encoding": "gzip",
                                                    "Range": "bytes=0-99"})
    assert r.status == 206 and body == PAGE[:100]
    assert r.getheader("Content-Encoding") is None
    etag = get(gw, "/static/page.html")[0].getheader("ETag")
    r, body = get(gw, "/static/page.html", headers={"Accept-Encoding": "gzip",
                                                    "If-None-Match": etag})
    assert r.status == 304 and r.getheader("Content-Encoding") is None
    # RFC 9110 15.4.5: the 304 has the ETag and Vary of the 200 it stands for, the coded one
    r, body = get(gw, "/up/notmodified", headers=GZ)
    assert r.status == 304 and r.getheader("Content-Encoding") is None
    assert r.getheader("ETag") == 'W/"v1"' and r.getheader("Vary") == "Accept-Encoding"
    r, body = get(gw, "/up/notmodified")
    assert r.getheader("ETag") == '"v1"' and r.getheader("Vary") is None


def test_encoded_no_transform_small_and_unlisted_go_as_they_are(gw):
    r, body = get(gw, "/up/encoded", headers=GZ)
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == PAGE
    r, body = get(gw, "/up/notransform", headers=GZ)
    assert_identity(r, body, PAGE, vary=False)
    r, body = get(gw, "/static/small.txt", headers=GZ)
    assert_identity(r, body, SMALL, vary=False)
    r, body = get(gw, "/static/image.png", headers=GZ)
    assert r.getheader("Content-Encoding") is None and len(body) == 20000


def test_route_without_compression_is_untouched(gw):
    r, body = get(gw, "/off/json", headers=GZ)
    assert_identity(r, body, JSON_DOC, vary=False)
    assert r.getheader("Vary") == "Origin" and r.getheader("ETag") == '"v1"'
    assert r.getheader("Content-Length") == str(len(JSON_DOC))


def test_unknown_length_is_compressed(gw):
    r, body = get(gw, "/up/unknown-length", headers=GZ)
    assert_gzip(r, body, PAGE)


def test_stream_arrives_event_by_event(gw):
    """Each event decompresses as soon as it arrives: the filter never holds one back."""
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.request("GET", "/up/stream", headers=GZ)
    r = c.getresponse()
    assert r.getheader("Content-Encoding") == "gzip"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    got, times = b"", []
    while len(got) < sum(map(len, EVENTS)):
        piece = r.read1(65536)
        assert piece, "stream ended early"
        got += d.decompress(piece)
        times.append((time.monotonic(), len(got)))
        # every chunk read so far decompresses to whole events
        assert got == b"".join(EVENTS)[:len(got)]
    rest = r.read()
    assert d.decompress(rest) + d.flush() == b"" and d.eof
    assert got == b"".join(EVENTS)
    # the events came apart in time, not all at the end
    assert times[-1][0] - times[0][0] >= 0.3
    c.close()


def test_large_proxied_and_static_bodies_intact(gw):
    original = big_text()
    for path in ("/up/big", "/static/big.txt"):
        r, body = get(gw, path, headers=GZ)
        assert_gzip(r, body, original)
        assert len(body) < len(original) // 3


def test_keep_alive_after_compressed_responses(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    for path, original in (("/static/page.html", PAGE), ("/up/json", JSON_DOC),
                           ("/static/small.txt", SMALL), ("/direct", PAGE[:5000])):
        c.request("GET", path, headers=GZ)
        r = c.getresponse()
        body = r.read()
        if r.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert body == original
    c.close()


@pytest.mark.parametrize("compression,message", [
    ({"enabled": "yes"}, "routes[0].compression.enabled"),
    ({"level": 0}, "routes[0].compression.level"),
    ({"level": 10}, "routes[0].compression.level"),
    ({"types": ["text"]}, "\"text\" is not a media type"),
    ({"types": ["*/html"]}, "\"*/html\" is not a media type"),
    ({"types": []}, "routes[0].compression.types: is empty"),
    ({"minLength": "lots"}, "routes[0].compression.minLength"),
    ({"gzip": True}, "routes[0].compression"),
    ([], "routes[0].compression"),
])
def test_config_errors(tmp_path, compression, message):
    from conftest import BINARY
    cfg = base_config(tmp_path, free_port())
    cfg["routes"][0]["compression"] = compression
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode != 0
    assert message in p.stdout + p.stderr, p.stdout + p.stderr


def test_example_config_is_accepted():
    from conftest import BINARY, REPO_ROOT
    p = subprocess.run([str(BINARY), "-t", "-c", str(REPO_ROOT / "etc/examples/compression.json")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stdout + p.stderr


def test_defaults_in_config_dump(tmp_path):
    """-T shows the defaults a route without the key gets: off, level 1, 1024 bytes."""
    from conftest import BINARY
    cfg = base_config(tmp_path, free_port())
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-T", "-c", str(path)], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0, p.stderr
    dumped = json.loads(p.stdout[p.stdout.index("{"):])
    c = dumped["servers"][0]["compression"]
    assert c["enabled"] is False and c["level"] == 1 and c["minLength"] == 1024
    assert "application/json" in c["types"] and "image/svg+xml" in c["types"]
    # a route without the key takes its server's, and says nothing of its own
    assert "compression" not in dumped["routes"][0]


def test_server_default_and_route_override(tmp_path, gateway_factory):
    routes = [
        {"id": "inherits", "match": {"path": "/a"},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                    "body": PAGE.decode()[:5000]}},
        {"id": "opts-out", "match": {"path": "/b"}, "compression": {"enabled": False},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                    "body": PAGE.decode()[:5000]}},
    ]
    cfg = base_config(tmp_path, free_port(), routes=routes, workers=1)
    cfg["servers"][0]["compression"] = {"enabled": True, "level": 9}
    gw = gateway_factory(cfg)
    r, body = get(gw, "/a", headers=GZ)
    assert_gzip(r, body, PAGE[:5000])
    r, body = get(gw, "/b", headers=GZ)
    assert_identity(r, body, PAGE[:5000], vary=False)


def test_client_gone_mid_response_leaves_the_worker_serving(gw):
    """Clients that leave in the middle of a compressed file and of a compressed stream: the
    worker frees their state and goes on compressing for the next client."""
    import socket
    for path in ("/static/big.txt", "/up/stream", "/up/big"):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" % path.encode())
        s.recv(4096)
        s.close()
    time.sleep(0.3)
    r, body = get(gw, "/static/big.txt", headers=GZ)
    assert_gzip(r, body, big_text())
    r, body = get(gw, "/up/json", headers=GZ)
    assert_gzip(r, body, JSON_DOC)


def test_file_shrinking_mid_response_aborts_it(gw):
    """The file is cut while it is being compressed: the client sees a truncated message (no
    chunked end), never one that looks whole, and the error log says why."""
    import base64
    import socket
    victim = gw.www / "shrinks.txt"
    victim.write_bytes(base64.b64encode(os.urandom(24 * 1024 * 1024)))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", gw.port))
    s.sendall(b"GET /static/shrinks.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    first = s.recv(4096)
    assert b"Content-Encoding: gzip" in first
    time.sleep(0.3)  # the gateway fills the socket and waits for the client
    os.truncate(victim, 1024 * 1024)
    data = first + recv_until_close(s, timeout=20)
    s.close()
    assert not data.endswith(b"\r\n0\r\n\r\n")
    deadline = time.monotonic() + 5
    while "compress: reading" not in gw.error_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "the file is shorter than when opened" in gw.error_log()


def test_http2_stream_arrives_event_by_event(gw):
    """The same over HTTP/2: DATA frames as the events come, each decompressible on arrival."""
    import socket
    h2conn = pytest.importorskip("h2.connection")
    h2events = pytest.importorskip("h2.events")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    c = h2conn.H2Connection()
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":path", "/up/stream"), (":scheme", "http"),
                       (":authority", "x"), ("accept-encoding", "gzip")], end_stream=True)
    s.sendall(c.data_to_send())
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    got, arrivals, head, ended = b"", [], None, False
    while not ended:
        data = s.recv(65536)
        assert data, "connection closed"
        for ev in c.receive_data(data):
            if isinstance(ev, h2events.ResponseReceived):
                head = dict(ev.headers)
            elif isinstance(ev, h2events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                got += d.decompress(ev.data)
                assert got == b"".join(EVENTS)[:len(got)]
                arrivals.append((time.monotonic(), len(got)))
            elif isinstance(ev, h2events.StreamEnded):
                ended = True
        s.sendall(c.data_to_send())
    s.close()
    assert head[b"content-encoding"] == b"gzip" and b"content-length" not in head
    assert got == b"".join(EVENTS) and d.eof
    # at least one event was whole before the last one was sent
    early = [n for t, n in arrivals if t < arrivals[-1][0] - 0.25]
    assert early and early[-1] >= len(EVENTS[0])


def test_http10_client_gets_the_end_by_close(gw):
    """HTTP/1.0 has no chunked coding: the compressed body ends with the connection."""
    import socket
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"GET /static/page.html HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
    data = recv_until_close(s)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert gzip.decompress(body) == PAGE


def test_access_log_notes_the_encoding(gw):
    get(gw, "/static/page.html", headers=GZ)
    get(gw, "/static/page.html")
    lines = gw.access_log(wait_for=2)
    gz = [e for e in lines if e.get("contentEncoding") == "gzip"]
    plain = [e for e in lines if e["path"] == "/static/page.html" and "contentEncoding" not in e]
    assert gz and plain
    assert gz[-1]["bytesOut"] < len(PAGE) // 3 and plain[-1]["bytesOut"] == len(PAGE)


@pytest.mark.parametrize("path", ["/up/big", "/static/big.txt"])
def test_deflate_failure_aborts_the_response(tmp_path, gateway_factory, scripted, monkeypatch,
                                             path):
    """zlib failing mid-response (the test build's FG_TEST_DEFLATE_FAIL hook): the client sees
    a truncated message, never a chunked end after bad data, and the error log says why."""
    import socket
    from conftest import TEST_BINARY
    assert TEST_BINARY.exists(), "%s not built: make build/test/fastgateway" % TEST_BINARY
    www = tmp_path / "www"
    www.mkdir()
    (www / "big.txt").write_bytes(big_text())
    up = scripted(upstream_script)
    routes = [
        {"id": "up", "match": {"path": "/up/{**rest}"}, "clusterId": "c",
         "compression": {"enabled": True}},
        {"id": "files", "match": {"path": "/static/{**rest}"}, "static": {"root": str(www)},
         "compression": {"enabled": True}},
    ]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url}]}]
    monkeypatch.setenv("FG_TEST_DEFLATE_FAIL", "100000")
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=routes, clusters=clusters,
                                     workers=1), binary=TEST_BINARY)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" % path.encode())
    data = recv_until_close(s, timeout=20)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert not body.endswith(b"\r\n0\r\n\r\n")
    deadline = time.monotonic() + 5
    while "compress: deflate failed" not in gw.error_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "compress: deflate failed" in gw.error_log()
    assert "TEST FAULT HOOK ARMED (FG_TEST_DEFLATE_FAIL" in gw.error_log()


def test_release_binary_has_no_deflate_fault_hook():
    from conftest import BINARY
    assert b"FG_TEST_DEFLATE_FAIL" not in BINARY.read_bytes()


def test_server_config_error(tmp_path):
    from conftest import BINARY
    cfg = base_config(tmp_path, free_port())
    cfg["servers"][0]["compression"] = {"types": ["text"]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode != 0
    assert 'servers[0].compression.types: "text" is not a media type' in p.stdout + p.stderr


def test_worker_cap_sends_the_rest_uncompressed(tmp_path, gateway_factory, scripted):
    """Past 256 responses compressing at once in a worker, the next goes out identity-coded
    (with Vary); once they end, compression is available again."""
    import socket
    import threading
    release = threading.Event()

    def hold(sock, head):
        respond(sock, 200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        sock.sendall(b"5\r\nhello\r\n")
        release.wait(30)
        sock.sendall(b"0\r\n\r\n")

    up = scripted(hold)
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "c",
               "compression": {"enabled": True}}]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url}]}]
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=routes, clusters=clusters,
                                     workers=1))
    held = []
    try:
        for i in range(256):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
            s.sendall(b"GET /h%d HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" % i)
            held.append(s)
        for s in held:  # every one of them is compressing
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            assert b"Content-Encoding: gzip" in got
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        s.sendall(b"GET /over HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        s.close()
        assert b"Content-Encoding" not in got and b"Vary: Accept-Encoding" in got
    finally:
        release.set()
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        r, body = get(gw, "/after", headers=GZ)
        if r.getheader("Content-Encoding") == "gzip" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == b"hello"
