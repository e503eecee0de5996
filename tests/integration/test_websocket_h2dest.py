"""WebSocket to HTTP/2 destinations (cluster "httpVersion": "2"): the gateway opens an RFC 8441
extended CONNECT stream when the destination's connection announced
SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, answers the client itself (101 with its own
Sec-WebSocket-Accept for HTTP/1.1, 200 for an RFC 8441 client), and relays the stream's DATA
(worker/upstream/http2_tunnel.c, worker/http/relay.c). Without the setting the WebSocket goes as
an HTTP/1.1 Upgrade on a connection of its own.

The destination is ws_h2_echo.py (python3-h2); the clients are python3-websockets over HTTP/1.1
and the raw RFC 8441 client of test_websocket_h2.py over h2c. Tests are named after the RFC
section whose rule they check."""
import asyncio
import base64
import hashlib
import os
import socket
import subprocess
import time

import pytest

from conftest import base_config, free_port
from test_websocket import MiB, RawDest, _reload, connect, raw_handshake, run
from test_websocket_h2 import Client, ws_frame
from ws_h2_echo import WsH2Echo

websockets = pytest.importorskip("websockets")

LOG_FIELDS = ["method", "path", "status", "protocol", "bytesIn", "bytesOut", "termination"]


@pytest.fixture
def dest():
    made = []

    def factory(**kw):
        d = WsH2Echo(**kw)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsh2certs")
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem")], check=True, capture_output=True, timeout=60)
    return str(d / "c.pem"), str(d / "k.pem")


def cfg(tmp_path, port, url, route=None, h2c=False, **cluster):
    c = {"id": "c", "httpVersion": "2", "destinations": [{"id": "d", "address": url}]}
    if url.startswith("https"):
        c["httpClient"] = {"dangerousAcceptAnyServerCertificate": True}
    c.update(cluster)
    r = {"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}
    r.update(route or {})
    conf = base_config(tmp_path, port, workers=1, routes=[r], clusters=[c])
    conf["log"]["accessLogFields"] = LOG_FIELDS
    if h2c:
        conf["servers"][0]["http2"] = {"h2c": True}
    return conf


def echo_h1(port, path="/", msgs=("hello", b"\x00\x01binary\xff"), **kw):
    """Echo msgs through an HTTP/1.1 WebSocket; returns (replies, subprotocol, close code)."""
    async def go():
        async with connect("ws://127.0.0.1:%d%s" % (port, path), **kw) as ws:
            got = []
            for m in msgs:
                await ws.send(m)
                got.append(await ws.recv())
            sub = ws.subprotocol
        return got, sub, ws.close_code
    return run(go())


def h2_handshakes(d):
    return [f for kind, f in d.handshakes if kind == "h2"]


def h1_handshakes(d):
    return [f for kind, f in d.handshakes if kind == "http/1.1"]


def log_line(gw, path):
    lines = [l for l in gw.access_log(wait_for=1) if l.get("path") == path]
    assert len(lines) == 1, lines
    return lines[0]


# ---- extended CONNECT to the destination ----

def test_rfc8441_4_http11_client_reaches_the_destination_by_extended_connect(
        tmp_path, gateway_factory, dest):
    d = dest()
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url))
    got, sub, code = echo_h1(port, "/subproto", msgs=("text", b"\x00\xffbin"),
                             subprotocols=["chat"])
    assert got == ["text", b"\x00\xffbin"]
    # the 101 carried Upgrade and a Sec-WebSocket-Accept the client's library checked, and the
    # destination's sec-websocket-protocol
    assert sub == "chat" and code == 1000
    hs = h2_handshakes(d)
    assert len(hs) == 1 and not h1_handshakes(d), d.handshakes
    f = hs[0]
    assert f[":method"] == "CONNECT" and f[":protocol"] == "websocket"
    assert f[":scheme"] == "http" and f[":path"] == "/subproto" and f[":authority"]
    assert f["sec-websocket-version"] == "13" and f["sec-websocket-protocol"] == "chat"
    # RFC 8441 5: no key, and no hop-by-hop fields of the HTTP/1.1 handshake
    for gone in ("sec-websocket-key", "upgrade", "connection", "host"):
        assert gone not in f, f


def test_rfc8441_5_h2_client_gets_200_and_echo(tmp_path, gateway_factory, dest):
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url, h2c=True))
    c = Client(port)
    sid = c.open("/h2c")
    r = c.response(sid)
    assert r["headers"][":status"] == "200", r
    assert "sec-websocket-accept" not in r["headers"]
    assert c.echo(sid, "over h2 twice") == "over h2 twice"
    assert c.echo(sid, b"\x01\x02") == b"\x01\x02"
    c.send(sid, ws_frame(b"\x03\xe8", opcode=8))  # close; the destination echoes and ends
    assert c.message(sid) == b"\x03\xe8"
    c.until(lambda: c.st[sid]["ended"])
    c.send(sid, b"", end=True)
    c.close()
    hs = h2_handshakes(d)
    assert len(hs) == 1 and "sec-websocket-key" not in hs[0] and hs[0][":protocol"] == "websocket"
    line = log_line(gw, "/h2c")
    assert line["status"] == 200 and line["method"] == "CONNECT"
    assert line["termination"] == "ok"


def test_rfc9113_6_9_large_messages_both_ways_within_flow_control(tmp_path, gateway_factory,
                                                                   dest):
    """Messages far larger than every window on the way (the destination stream's 256 KiB, the
    relay's 256 KiB): the windows reopen as the bytes are passed on, both ways."""
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url, h2c=True))
    big = [os.urandom(4 * MiB), b"\x5a" * (3 * MiB + 17), "t" * MiB]
    got, _, code = echo_h1(port, "/big", msgs=big)
    assert got == big and code == 1000
    c = Client(port)
    sid = c.open("/bigh2")
    assert c.response(sid)["headers"][":status"] == "200"
    for m in big[:2]:
        assert c.echo(sid, m) == m
    # many messages queued at once come back whole and in order
    for i in range(300):
        c.send(sid, ws_frame("m%d" % i))
    assert [c.message(sid) for _ in range(300)] == ["m%d" % i for i in range(300)]
    c.close()
    assert len(h2_handshakes(d)) == 2 and not h1_handshakes(d)
    line = log_line(gw, "/big")
    assert line["bytesIn"] > 8 * MiB and line["bytesOut"] > 8 * MiB


def test_rfc6455_7_close_handshake_ends_both_ways(tmp_path, gateway_factory, dest):
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url))

    async def go():
        ws = await connect("ws://127.0.0.1:%d/closing" % port)
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(code=4001, reason="bye")
        return ws.close_code, ws.close_reason
    # the destination echoed the close frame (RFC 6455 5.5.1), then ended its stream, which
    # the gateway passed on as the end of the TCP connection
    assert run(go()) == (4001, "bye")
    line = log_line(gw, "/closing")
    assert line["status"] == 101 and line["termination"] == "ok"
    time.sleep(0.3)
    assert d.resets == []  # ended both ways with END_STREAM, nothing reset
    assert len(h2_handshakes(d)) == 1 and not h1_handshakes(d)


def test_rfc9113_5_1_many_websockets_share_one_destination_connection(tmp_path,
                                                                      gateway_factory, dest):
    d = dest()
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url))

    async def one(i):
        async with connect("ws://127.0.0.1:%d/m%d" % (port, i)) as ws:
            for k in range(5):
                await ws.send("w%d-%d" % (i, k))
                assert await ws.recv() == "w%d-%d" % (i, k)

    async def go():
        await asyncio.gather(*(one(i) for i in range(30)))
    run(go())
    assert len(h2_handshakes(d)) == 30
    assert d.connections == 1


# ---- no extended CONNECT: HTTP/1.1 ----

@pytest.mark.parametrize("announced", [None, 0], ids=["setting_absent", "setting_0"])
def test_rfc8441_3_without_the_setting_falls_back_to_http11_upgrade(tmp_path, gateway_factory,
                                                                    dest, announced):
    d = dest(connect_protocol=announced)
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url, h2c=True))
    got, _, code = echo_h1(port, "/fb1")
    assert got == ["hello", b"\x00\x01binary\xff"] and code == 1000
    c = Client(port)
    sid = c.open("/fb2")
    assert c.response(sid)["headers"][":status"] == "200"
    assert c.echo(sid, "via http/1.1") == "via http/1.1"
    c.close()
    # no extended CONNECT was sent; each WebSocket went on an HTTP/1.1 connection of its own
    assert h2_handshakes(d) == []
    hs = h1_handshakes(d)
    assert len(hs) == 2, d.handshakes
    for f in hs:
        assert f[":request-line"].startswith("GET /fb") and f["upgrade"] == "websocket"
        assert len(f["sec-websocket-key"]) == 24
    assert d.connections >= 3  # the HTTP/2 connection that told, then one per WebSocket


def test_rfc7301_fallback_over_tls_offers_http11_alone(tmp_path, gateway_factory, dest, cert):
    """An https destination that speaks h2 but not extended CONNECT: the HTTP/1.1 Upgrade goes on
    a TLS connection whose ALPN offers only http/1.1, else the destination would pick h2 again."""
    d = dest(connect_protocol=None, tls=cert)
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url))
    # a plain request first opens the HTTP/2 connection and learns its SETTINGS
    got, _, _ = echo_h1(port, "/tls1")
    assert got == ["hello", b"\x00\x01binary\xff"]
    got, _, _ = echo_h1(port, "/tls2")
    assert got == ["hello", b"\x00\x01binary\xff"]
    assert len(h1_handshakes(d)) == 2 and h2_handshakes(d) == []
    assert "h2" in d.alpn_seen and d.alpn_seen.count("http/1.1") == 2, d.alpn_seen


def test_rfc8441_4_over_tls_destination(tmp_path, gateway_factory, dest, cert):
    d = dest(tls=cert)
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url))
    big = os.urandom(2 * MiB)
    got, _, _ = echo_h1(port, "/tls", msgs=("a", big))
    assert got == ["a", big]
    hs = h2_handshakes(d)
    assert len(hs) == 1 and hs[0][":scheme"] == "https"
    assert d.alpn_seen == ["h2"]


# ---- refusals and timeouts ----

def test_rfc8441_5_a_refusal_reaches_the_client_with_its_status(tmp_path, gateway_factory, dest):
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url, h2c=True))

    s, head, rest = raw_handshake(port, "/refuse")
    assert head.startswith("HTTP/1.1 403"), head
    assert "upgrade" not in head.lower().split("\r\n", 1)[1]
    s.settimeout(5)
    while len(rest) < 7:
        rest += s.recv(100)
    assert rest == b"refused"
    s.close()
    c = Client(port)
    sid = c.open("/refuse-h2")
    r = c.response(sid)
    assert r["headers"][":status"] == "403"
    c.until(lambda: r["ended"])
    assert bytes(r["data"]) == b"refused"
    c.close()
    assert [l["status"] for l in gw.access_log(wait_for=2)
            if l.get("path", "").startswith("/refuse")] == [403, 403]


def test_rfc6455_idle_websocket_closed_at_the_route_idle_timeout(tmp_path, gateway_factory, dest):
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url, route={"webSocketIdleTimeout": "1s"}))

    async def go():
        async with connect("ws://127.0.0.1:%d/idle" % port) as ws:
            for _ in range(6):  # activity keeps it open past the timeout
                await asyncio.sleep(0.3)
                await ws.send("k")
                assert await ws.recv() == "k"
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return time.monotonic() - t0
    idle = run(go())
    assert 0.8 < idle < 3.0
    assert log_line(gw, "/idle")["termination"] == "idle_timeout"
    # the destination's stream was reset (RFC 8441 4: the relay did not end cleanly)
    deadline = time.monotonic() + 3
    while not d.resets and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(d.resets) == 1


def test_rfc8441_4_a_quiet_websocket_outlives_the_cluster_activity_timeout(
        tmp_path, gateway_factory, dest):
    """The destination connection's activity timeout is for streams waiting for an answer; a
    connection whose streams are all WebSockets may be silent up to webSocketIdleTimeout."""
    d = dest()
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url, route={"webSocketIdleTimeout": "10s"},
                        httpRequest={"activityTimeout": "1s"}))

    async def go():
        async with connect("ws://127.0.0.1:%d/quiet" % port) as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            await asyncio.sleep(2.2)
            await ws.send("b")
            return await ws.recv()
    assert run(go()) == "b"
    assert d.resets == [] and len(h2_handshakes(d)) == 1


def test_rfc9113_6_9_a_destination_that_never_opens_its_window_times_out(tmp_path,
                                                                         gateway_factory, dest):
    """The destination takes nothing (its stream window stays closed): what the client sends
    waits in the gateway's bounded buffers, and after the cluster's activityTimeout without
    progress the relay ends (upstream_timeout), long before webSocketIdleTimeout."""
    d = dest()
    port = free_port()
    gw = gateway_factory(cfg(tmp_path, port, d.url, route={"webSocketIdleTimeout": "30s"},
                             httpRequest={"activityTimeout": "1s"}))
    s, head, _ = raw_handshake(port, "/stall")
    assert head.startswith("HTTP/1.1 101"), head
    s.settimeout(0.2)
    frame = ws_frame(os.urandom(64 * 1024))
    sent, t0 = 0, time.monotonic()
    closed = None
    while time.monotonic() - t0 < 10 and closed is None:
        try:
            sent += s.send(frame)
        except socket.timeout:
            pass
        except OSError:
            closed = time.monotonic() - t0
            break
        try:
            if s.recv(65536) == b"":
                closed = time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            closed = time.monotonic() - t0
    s.close()
    assert closed is not None and closed < 6, (closed, sent)
    # bounded: the destination's window, the gateway's buffers and the sockets, not 10 s of
    # sending
    assert sent < 16 * MiB
    assert log_line(gw, "/stall")["termination"] == "upstream_timeout"


def test_rfc8441_3_request_version_exact_refuses_the_http11_fallback(tmp_path, gateway_factory,
                                                                      dest):
    d = dest(connect_protocol=None)
    port = free_port()
    gateway_factory(cfg(tmp_path, port, d.url, versionPolicy="RequestVersionExact"))
    # the first waits for the connection's SETTINGS, the second finds them known
    for path in ("/exact1", "/exact2"):
        s, head, _ = raw_handshake(port, path)
        assert head.startswith("HTTP/1.1 502"), head
        s.close()
    assert h1_handshakes(d) == [] and h2_handshakes(d) == []


def _keepalive_then_upgrade(sock, head, rest):
    """An HTTP/1.1 destination: plain requests answered with keep-alive, an Upgrade switched
    (RFC 6455 4.2.2) and echoed raw on the same connection."""
    while True:
        fields = {ln.partition(":")[0].strip().lower(): ln.partition(":")[2].strip()
                  for ln in head.split("\r\n")[1:]}
        if "upgrade" in fields:
            acc = base64.b64encode(hashlib.sha1(fields["sec-websocket-key"].encode() +
                                                b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n" +
                         rest)
            while True:
                d = sock.recv(65536)
                if not d:
                    return
                sock.sendall(d)  # the client's frames come back as they are: enough here
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        buf = rest
        while b"\r\n\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                return
            buf += d
        h, _, rest = buf.partition(b"\r\n\r\n")
        head = h.decode("latin-1")


def test_rfc8441_5_extended_connect_on_a_pooled_http11_connection(tmp_path, gateway_factory):
    """An RFC 8441 client's WebSocket to an HTTP/1.1 destination that takes a keep-alive
    connection from the pool: its Upgrade head is sent at once, not left queued."""
    d = RawDest(_keepalive_then_upgrade)
    port = free_port()
    conf = base_config(tmp_path, port, workers=1,
                       routes=[{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}],
                       clusters=[{"id": "c", "destinations": [{"id": "d", "address": d.url}]}])
    conf["servers"][0]["http2"] = {"h2c": True}
    gateway_factory(conf)
    c = Client(port)
    sid = c.conn.get_next_available_stream_id()
    c.st[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None,
                 "unacked": 0}
    c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/plain"),
                              (":authority", "a.example.test")], end_stream=True)
    c.flush()
    c.until(lambda: c.st[sid]["ended"])
    assert c.st[sid]["headers"][":status"] == "200"
    ws = c.open("/ws")
    r = c.response(ws)
    assert r["headers"][":status"] == "200", r
    frame = ws_frame("raw echo")
    c.send(ws, frame)
    c.until(lambda: len(c.st[ws]["data"]) >= len(frame), timeout=5)
    assert bytes(c.st[ws]["data"]) == frame
    c.close()
    d.close()
    assert len(d.heads) == 1  # both requests rode the one pooled connection


def test_rfc9113_6_8_reload_keeps_the_streams_until_the_drain_timeout(tmp_path,
                                                                      gateway_factory, dest):
    """A retiring worker keeps its WebSockets' destination streams (and so their connection)
    until webSocketDrainTimeout, then resets them; new WebSockets go from the new generation."""
    d = dest()
    port = free_port()
    conf = cfg(tmp_path, port, d.url)
    conf.update(webSocketDrainTimeout="2s", shutdownTimeout="10s")
    gw = gateway_factory(conf)

    async def go():
        old = [await connect("ws://127.0.0.1:%d/old%d" % (port, i)) for i in range(5)]
        for ws in old:
            await ws.send("before")
            assert await ws.recv() == "before"
        retired = await asyncio.get_event_loop().run_in_executor(None, _reload, gw)
        for ws in old:
            await ws.send("after")
            assert await ws.recv() == "after"
        async with connect("ws://127.0.0.1:%d/new" % port) as ws:
            await ws.send("new")
            assert await ws.recv() == "new"
        lived = []
        for ws in old:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            lived.append(time.monotonic() - retired)
        return lived
    lived = run(go(), timeout=30)
    assert all(1.7 <= t <= 5 for t in lived), lived
    lines = [l for l in gw.access_log(wait_for=6) if l.get("path", "").startswith("/old")]
    assert len(lines) == 5 and all(l["termination"] == "drained" for l in lines)
    deadline = time.monotonic() + 3
    while len(d.resets) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(d.resets) == 5  # RST_STREAM CANCEL for each drained tunnel
    assert d.connections == 2  # one per generation
