"""Destination responses at the edges of HTTP/1.1 framing, each from a scripted raw upstream:
transfer codings the gateway cannot decode, early answers to uploads, timers of reused
connections."""
import re
import socket
import threading
import time

import pytest

from conftest import SANITIZED, http_request, proxy_cfg, recv_until_close


@pytest.mark.parametrize("te, body", [
    (b"gzip, chunked", b"a\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\r\n0\r\n\r\n"),
    (b"gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
])
def test_transfer_coding_other_than_chunked_is_refused(tmp_path, gateway_factory, scripted,
                                                       te, body):
    """Regression: the gateway de-chunked "gzip, chunked" and dropped the hop-by-hop
    Transfer-Encoding, so the client got gzip bytes as plain content (RFC 9112 6.1)."""
    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n" + body)
        if te == b"gzip":
            s.shutdown(socket.SHUT_WR)
            recv_until_close(s, 5)

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    status, headers, data = http_request("GET", gw.url("/x"))
    assert status == 502
    assert b"transfer coding" in data


def test_reused_connection_does_not_inherit_its_idle_timer(tmp_path, gateway_factory, scripted):
    """Regression: with activityTimeout equal to the pool's idleTimeout, a pooled connection
    kept the read timer armed when it went idle, so its idle time was charged to the next
    response: a 2 s answer after 2.5 s idle got 504 after 1.5 s."""
    def script(s, head):
        first = True
        while True:
            if not first:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                time.sleep(2.0)
            first = False
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = scripted(script)
    cfg = proxy_cfg(tmp_path, up, httpRequest={"activityTimeout": "4s"},
                    keepAlive={"idleTimeout": "4s"})
    gw = gateway_factory(cfg)
    assert http_request("GET", gw.url("/1"))[0] == 200
    time.sleep(2.5)
    status, _, _ = http_request("GET", gw.url("/2"))
    assert status == 200
    assert len(up.heads) == 1  # the second request rode the pooled connection


def test_early_answer_to_an_upload_reaches_the_client(tmp_path, gateway_factory, scripted):
    """Regression: a destination that answers 413 at once and closes without reading the body
    made our next write fail, and the client got 502 instead of the 413 (RFC 9112 9.3)."""
    def script(s, head):
        s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n"
                  b"Connection: close\r\n\r\nnope")

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    results = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /up HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 8000000\r\n\r\n")
        s.settimeout(10)
        sent = 0
        block = b"x" * 65536
        try:
            while sent < 8000000:
                sent += s.send(block)
        except OSError:
            pass  # the gateway may close once it has answered
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        s.close()
        results.append(data.split(b"\r\n", 1)[0])
    assert results == [b"HTTP/1.1 413 Content Too Large"] * 5, results


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/%d/status" % pid)


INTERIM_MAX = 8  # worker/upstream/http1_client.c
PROCESSING = b"HTTP/1.1 102 Processing\r\nX-Pad: " + b"p" * 4000 + b"\r\n\r\n"


def flood_or_ok(s, head):
    """/ok answers 200; anything else gets 102 interim heads without end (for 8 s at most)."""
    if head.startswith(b"GET /ok "):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return
    deadline = time.monotonic() + 8
    s.settimeout(2)
    while time.monotonic() < deadline:
        s.sendall(PROCESSING * 16)


def test_interim_flood_to_a_non_reading_client_stays_bounded(tmp_path, gateway_factory, scripted):
    """Regression: interim heads from the destination were relayed without a count and without
    waiting for the client: a destination flooding 102s to a client that sends a GET and never
    reads grew one worker by gigabytes within seconds. Beyond INTERIM_MAX the exchange fails
    with 502; the worker stays small and serves others."""
    up = scripted(flood_or_ok)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    pid = gw.workers()[0]["pid"]
    before = rss_anon_kib(pid)
    c = socket.create_connection(("127.0.0.1", gw.port))
    c.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
    peak = before
    for _ in range(30):  # 3 s of not reading
        time.sleep(0.1)
        peak = max(peak, rss_anon_kib(pid))
    if not SANITIZED:
        assert peak - before < 32 * 1024, (before, peak)
    c.settimeout(5)
    data = b""
    try:
        while b"HTTP/1.1 502 " not in data and len(data) < 4 * 1024 * 1024:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    c.close()
    assert data.count(b"HTTP/1.1 102 ") <= INTERIM_MAX
    assert b"HTTP/1.1 502 " in data
    assert b"too many interim responses" in data
    assert http_request("GET", gw.url("/ok"))[0] == 200
    assert re.search(r"\[warn\].*upstream sent an invalid response", gw.error_log())


@pytest.mark.parametrize("n, want", [(INTERIM_MAX, 200), (INTERIM_MAX + 1, 502)])
def test_interim_responses_up_to_the_bound_are_taken(tmp_path, gateway_factory, scripted,
                                                      n, want):
    def script(s, head):
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * n +
                  b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.5)

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up))
    c = socket.create_connection(("127.0.0.1", gw.port))
    c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_until_close(c, 5)
    c.close()
    final = data.split(b"HTTP/1.1 103 Early Hints\r\n")[-1]
    assert data.count(b"HTTP/1.1 103 ") == min(n, INTERIM_MAX)
    assert b"HTTP/1.1 %d " % want in final


@pytest.mark.parametrize("answer", [b"hello world\r\n", b"HTTP/1.1 999 OK\r\n",
                                    b"HTTP/1.1 600 OK\r\nContent-Length: 5\r\n\r\nhello"])
def test_answer_with_no_valid_status_line_is_refused_at_once(tmp_path, gateway_factory,
                                                             scripted, answer):
    """Regression: a destination answering a line that is no status line (RFC 9112 4) got 504
    after activityTimeout, as the parser waited for a blank line; and a status code outside
    100..599 (RFC 9110 15) was relayed. Both are 502 as soon as the first line is in."""
    def script(s, head):
        s.sendall(answer)
        s.settimeout(6)
        try:
            s.recv(1)
        except OSError:
            pass

    up = scripted(script)
    gw = gateway_factory(proxy_cfg(tmp_path, up, httpRequest={"activityTimeout": "4s"}))
    t0 = time.monotonic()
    status, _, _ = http_request("GET", gw.url("/x"), timeout=8)
    assert status == 502
    assert time.monotonic() - t0 < 2


def _hold(s, seconds=6):
    s.settimeout(seconds)
    try:
        s.recv(1)
    except OSError:
        pass


def raw_get(gw, path, timeout=8):
    """Send GET path; return (status, body bytes received until the gateway closed)."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    with s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n" % path)
        data = recv_until_close(s, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]) if head else 0, head, body


def test_oversized_answer_head_is_502(tmp_path, gateway_factory, scripted):
    """A response head larger than the gateway accepts is refused whole, not relayed in part."""
    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 4000)
                                                   for i in range(300)) + b"\r\n")
        _hold(s)

    gw = gateway_factory(proxy_cfg(tmp_path, scripted(script)))
    t0 = time.monotonic()
    status, _, _ = http_request("GET", gw.url("/big-head"), timeout=8)
    assert status == 502 and time.monotonic() - t0 < 3


def test_truncated_answer_body_closes_the_client_connection(tmp_path, gateway_factory, scripted):
    """A destination that closes before its Content-Length is complete: the head is already
    out, so the client's connection is closed short of the length (it can tell), at once."""
    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)

    gw = gateway_factory(proxy_cfg(tmp_path, scripted(script)))
    t0 = time.monotonic()
    status, head, body = raw_get(gw, b"/truncated")
    assert status == 200 and b"100000" in head
    assert 0 < len(body) < 100000
    assert time.monotonic() - t0 < 3


def test_close_framed_answer_is_relayed_whole(tmp_path, gateway_factory, scripted):
    """No Content-Length nor chunked: the body runs to the destination's close (RFC 9112
    6.3 item 8); the client gets every byte, framed so that it can tell where it ends."""
    payload = bytes(range(256)) * 300

    def script(s, head):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for i in range(0, len(payload), 7000):
            s.sendall(payload[i:i + 7000])
            time.sleep(0.002)

    gw = gateway_factory(proxy_cfg(tmp_path, scripted(script)))
    status, _, data = http_request("GET", gw.url("/close-framed"), timeout=8)
    assert status == 200 and data == payload
    status, _, data = http_request("GET", gw.url("/close-framed"), timeout=8)  # twice: no reuse
    assert status == 200 and data == payload


def test_unexpected_101_is_502(tmp_path, gateway_factory, scripted):
    """101 answers only a request that asked to upgrade (RFC 9110 15.2.2); to a plain GET it
    is a broken destination, and the client's connection is never switched."""
    def script(s, head):
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\nraw bytes after the switch")
        _hold(s)

    gw = gateway_factory(proxy_cfg(tmp_path, scripted(script)))
    status, _, _ = http_request("GET", gw.url("/no-upgrade"), timeout=8)
    assert status == 502


def test_destination_that_stops_reading_the_upload_is_504(tmp_path, gateway_factory, scripted):
    """The destination takes the head and never reads the body: the gateway's writes stall, and
    after activityTimeout without progress the client gets 504 rather than waiting forever."""
    def script(s, head):
        time.sleep(12)  # reads nothing more: the socket buffers fill and the writes stall

    gw = gateway_factory(proxy_cfg(tmp_path, scripted(script),
                                   httpRequest={"activityTimeout": "1s"}))
    n = 64 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)

    def upload():
        try:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n" % n)
            block = b"u" * 65536
            for _ in range(n // len(block)):
                s.sendall(block)
        except OSError:
            pass

    t = threading.Thread(target=upload, daemon=True)
    t0 = time.monotonic()
    t.start()
    with s:
        s.settimeout(10)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 504"), data[:200]
    assert time.monotonic() - t0 < 8


def test_cluster_with_no_available_destination_is_503(tmp_path, gateway_factory, scripted):
    """Every destination disabled: nothing to try, 503 at once (not 502: no transport failed)."""
    up = scripted(lambda s, head: None)
    cfg = proxy_cfg(tmp_path, up)
    cfg["clusters"][0]["destinations"][0]["enabled"] = False
    gw = gateway_factory(cfg)
    status, headers, data = http_request("GET", gw.url("/x"), timeout=8)
    assert status == 503 and b"service_unavailable" in data
    assert up.heads == []
