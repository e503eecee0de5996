"""Destination responses at the edges of HTTP/1.1 framing, each from a scripted raw upstream:
transfer codings the gateway cannot decode, early answers to uploads, timers of reused
connections."""
import socket
import time

import pytest

from conftest import Scripted, base_config, free_port, http_request, recv_until_close


def proxy_cfg(tmp_path, up, **cluster):
    c = {"id": "c", "destinations": [{"id": "d", "address": up.url}]}
    c.update(cluster)
    return base_config(tmp_path, free_port(), workers=1,
                       routes=[{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}],
                       clusters=[c])


@pytest.fixture
def scripted():
    made = []

    def factory(script):
        up = Scripted(script)
        made.append(up)
        return up

    yield factory
    for up in made:
        up.close()


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
