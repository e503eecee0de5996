"""HTTP/2 destinations (cluster "httpVersion": "2"): an HTTP/1.1 client talks to the gateway,
which speaks h2c by prior knowledge or h2 over TLS (ALPN) to a python3-h2 destination
(h2upstream.py) or to nghttpd."""
import json
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import base_config, free_port, http_request, recv_until_close
from h2upstream import H2Upstream


def _run(*args):
    return subprocess.run(list(args), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("h2certs")
    _run("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "k.pem"),
         "-out", str(d / "c.pem"))
    return str(d / "c.pem"), str(d / "k.pem")


@pytest.fixture
def h2up():
    made = []

    def factory(**kw):
        up = H2Upstream(**kw)
        made.append(up)
        return up

    yield factory
    for up in made:
        up.close()


def cfg(tmp_path, url, workers=1, **cluster):
    c = {"id": "c", "httpVersion": "2", "destinations": [{"id": "d", "address": url}]}
    if url.startswith("https"):
        c["httpClient"] = {"dangerousAcceptAnyServerCertificate": True}
    c.update(cluster)
    return base_config(tmp_path, free_port(), workers=workers,
                       routes=[{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}],
                       clusters=[c])


def get(gw, path, **kw):
    return http_request("GET", gw.url(path), **kw)


def test_h2c_request_fields_are_mapped(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url))
    status, headers, body = http_request("GET", gw.url("/info?a=1"), headers={
        "X-Mixed-Case": "v", "TE": "trailers", "Connection": "keep-alive, X-Hop",
        "X-Hop": "1", "Keep-Alive": "timeout=5"})
    assert status == 200
    fields = json.loads(body)
    names = [n for n, _ in fields]
    assert names[:4] == [":method", ":scheme", ":authority", ":path"]
    d = dict(fields)
    assert d[":path"] == "/info?a=1"
    assert d[":scheme"] == "http"
    assert d[":authority"] == "127.0.0.1:%d" % up.port
    assert d["x-mixed-case"] == "v"  # RFC 9113 8.2.1: lowercase
    assert d["te"] == "trailers"      # the one TE value allowed (RFC 9113 8.2.2)
    for hop in ("connection", "keep-alive", "x-hop", "host", "transfer-encoding"):
        assert hop not in d


def test_h2c_upload_and_trailers_both_ways(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url))
    payload = bytes(range(256)) * 200  # 51200 bytes, in several chunks
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
    for i in range(0, len(payload), 10000):
        part = payload[i:i + 10000]
        req += b"%x\r\n" % len(part) + part + b"\r\n"
    req += b"0\r\nx-up: 42\r\nAuthorization: nope\r\n\r\n"
    c.sendall(req)
    from test_trailers import dechunk, parse_trailers, read_chunked_message
    msg = read_chunked_message(c)
    c.close()
    head, _, body = msg.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert dechunk(body) == payload
    tr = dict(parse_trailers(body))
    assert tr["grpc-status"] == "0"
    assert tr["x-echo-trailers"] == "x-up=42"  # Authorization is not allowed in trailers


def test_h2_over_tls_by_alpn(tmp_path, gateway_factory, h2up, cert):
    up = h2up(tls=cert, alpn=("h2", "http/1.1"))
    gw = gateway_factory(cfg(tmp_path, up.url))
    status, _, body = get(gw, "/info")
    assert status == 200
    d = dict(json.loads(body))
    assert d[":scheme"] == "https"
    assert up.alpn_seen == ["h2"]


def test_alpn_fallback_to_http11(tmp_path, gateway_factory, h2up, cert):
    up = h2up(tls=cert, alpn=("http/1.1",))
    gw = gateway_factory(cfg(tmp_path, up.url))
    for _ in range(3):
        status, headers, body = get(gw, "/x")
        assert status == 200 and body == b"h1 fallback"
    assert up.alpn_seen[0] == "http/1.1"
    assert up.connections == 1  # the fallback connection went to the HTTP/1.1 pool


def test_alpn_exact_policy_refuses_http11(tmp_path, gateway_factory, h2up, cert):
    up = h2up(tls=cert, alpn=("http/1.1",))
    gw = gateway_factory(cfg(tmp_path, up.url, versionPolicy="RequestVersionExact"))
    status, _, _ = get(gw, "/x")
    assert status == 502


def test_refused_stream_is_retried(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url))
    status, _, body = http_request("POST", gw.url("/refuse"), body=b"abc")
    assert status == 200
    assert up.refused
    assert up.requests == 2


def test_destination_dies_mid_body(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    c.sendall(b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
    data = recv_until_close(c)
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200"):
        assert b"Content-Length: 100000" in head
        assert len(body) < 100000  # truncated: the client sees the close before the end
    else:
        assert head.startswith(b"HTTP/1.1 502")
    # the gateway keeps serving: a new connection to the destination
    status, _, _ = get(gw, "/ok")
    assert status == 200


def test_concurrent_requests_share_one_connection_per_worker(tmp_path, gateway_factory, h2up):
    up = h2up()
    workers = 2
    gw = gateway_factory(cfg(tmp_path, up.url, workers=workers))

    def one(i):
        return get(gw, "/slow/%d" % i, timeout=10)

    with ThreadPoolExecutor(max_workers=40) as ex:
        results = list(ex.map(one, range(80)))
    assert all(r[0] == 200 and r[2] == b"slow" for r in results)
    assert up.requests == 80
    assert 1 <= up.connections <= workers


def test_idle_connection_closed_after_idle_timeout(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url, keepAlive={"idleTimeout": "300ms"}))
    assert get(gw, "/a")[0] == 200
    time.sleep(0.8)
    assert get(gw, "/b")[0] == 200
    assert up.connections == 2


def test_status_and_bodiless_responses(tmp_path, gateway_factory, h2up):
    up = h2up()
    gw = gateway_factory(cfg(tmp_path, up.url))
    assert get(gw, "/status/404")[0] == 404
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    c.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_until_close(c)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")


def start_nghttpd(root):
    port = free_port()
    p = subprocess.Popen(["nghttpd", "--no-tls", "-d", str(root), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return p, port


@pytest.mark.skipif(shutil.which("nghttpd") is None, reason="nghttpd (nghttp2-server) missing")
def test_slow_stream_does_not_stall_another(tmp_path, gateway_factory):
    """Two downloads share the worker's connection to the destination: a client that stops
    reading holds only its own stream (its window is given back as its client reads)."""
    root = tmp_path / "root"
    root.mkdir()
    blob = bytes(range(256)) * 32768  # 8 MiB
    (root / "big.bin").write_bytes(blob)
    p, port = start_nghttpd(root)
    try:
        gw = gateway_factory(cfg(tmp_path, "http://127.0.0.1:%d" % port))
        stalled = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        stalled.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # its stream fills the gateway's buffers and stops
        t0 = time.monotonic()
        out = subprocess.run(["curl", "-sS", gw.url("/big.bin")], capture_output=True,
                             timeout=30).stdout
        assert out == blob
        assert time.monotonic() - t0 < 20
        # the stalled client still gets all of its body once it reads
        got = bytearray()
        stalled.settimeout(10)
        while not (len(got) > len(blob) and got.endswith(blob[-64:])):
            d = stalled.recv(1 << 20)
            if not d:
                break
            got += d
        assert bytes(got).endswith(blob)
        stalled.close()
    finally:
        p.kill()
        p.wait()


@pytest.mark.skipif(shutil.which("nghttpd") is None, reason="nghttpd (nghttp2-server) missing")
def test_clients_that_stop_reading_do_not_close_the_connection_window(tmp_path, gateway_factory):
    """72 downloads whose clients never read share the worker's connection to the destination
    with a third client: each holds its own stream's 256 KiB window unread, 18 MiB in all, more
    than the connection's 16 MiB window, which must not close to the third client."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(b"b" * (8 << 20))
    (root / "small.txt").write_bytes(b"small")
    p, port = start_nghttpd(root)
    stalled = []
    try:
        gw = gateway_factory(cfg(tmp_path, "http://127.0.0.1:%d" % port))
        for _ in range(72):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", gw.port))
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        time.sleep(2)  # their streams fill the gateway's buffers and stop
        status, body = get(gw, "/small.txt", timeout=8)[::2]
        assert (status, body) == (200, b"small")
    finally:
        for s in stalled:
            s.close()
        p.kill()
        p.wait()


@pytest.mark.skipif(shutil.which("nghttpd") is None, reason="nghttpd (nghttp2-server) missing")
def test_nghttpd_large_download(tmp_path, gateway_factory):
    root = tmp_path / "root"
    root.mkdir()
    blob = bytes(range(256)) * 8192  # 2 MiB: many windows' worth
    (root / "big.bin").write_bytes(blob)
    p, port = start_nghttpd(root)
    try:
        gw = gateway_factory(cfg(tmp_path, "http://127.0.0.1:%d" % port))
        out = subprocess.run(["curl", "-sS", "--limit-rate", "4M", gw.url("/big.bin")],
                             capture_output=True, timeout=30).stdout
        assert out == blob
    finally:
        p.kill()
        p.wait()


def test_health_probe_over_h2c(tmp_path, gateway_factory, h2up):
    up = h2up()
    c = cfg(tmp_path, up.url, healthCheck={"active": {"enabled": True, "interval": "200ms",
                                                      "timeout": "1s", "path": "/info"}})
    gw = gateway_factory(c)
    deadline = time.time() + 5
    while up.requests == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert up.requests >= 1  # a probe reached the destination over h2c
    assert get(gw, "/ok")[0] == 200
