"""WebSocket and other protocol switches through the gateway (worker/http/relay.c,
worker/handlers/proxy.c): the handshake forwarded whole and its 101 relayed, echo over plain and
TLS fronts with python3-websockets as client and destination (tests/integration/ws_echo.py),
1 MiB messages, 10,000 messages in order, half-close, the idle timeout, drain on reload,
maxWebSockets, access control on the handshake, the access log line, and server-sent events
relayed event by event."""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import base_config, free_port, http_request, _kill_group, _live_groups, _port_open

websockets = pytest.importorskip("websockets")

WS_ECHO = Path(__file__).resolve().parent / "ws_echo.py"
MiB = 1 << 20


@pytest.fixture
def ws_echo():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(WS_ECHO), str(port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _live_groups.add(proc.pid)
    deadline = time.monotonic() + 10
    while not _port_open(port, 0.2):
        assert proc.poll() is None and time.monotonic() < deadline, "ws_echo did not start"
        time.sleep(0.02)
    yield "http://127.0.0.1:%d" % port
    _kill_group(proc.pid)
    _live_groups.discard(proc.pid)
    proc.wait(5)


def ws_config(tmp_path, port, dest, workers=1, route=None, **top):
    r = {"id": "ws", "match": {"path": "/{**rest}"}, "clusterId": "echo"}
    r.update(route or {})
    clusters = [{"id": "echo", "destinations": [{"id": "e", "address": dest}]}]
    return base_config(tmp_path, port, routes=[r], clusters=clusters, workers=workers, **top)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url, **kw):
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("compression", None)
    return websockets.connect(url, **kw)


# ---- a scripted raw destination ----

class RawDest:
    """Accepts one connection at a time, reads a request head, and hands the socket and the
    head to script(sock, head) in a thread."""

    def __init__(self, script):
        self.script = script
        self.heads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close()
                return
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        self.heads.append(head.decode("latin-1"))
        try:
            self.script(c, head.decode("latin-1"), rest)
        except OSError:
            pass  # the client side went first; its assertions tell
        finally:
            c.close()

    def close(self):
        self.sock.close()


def raw_handshake(port, path="/chat", extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head.decode("latin-1"), rest


SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def recv_all(s, timeout=10):
    s.settimeout(timeout)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d


# ---- tests ----

def test_echo_through_a_cluster_route_with_subprotocol(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, ws_echo))

    async def go():
        async with connect("ws://127.0.0.1:%d/headers" % port, subprotocols=["chat"],
                           extra_headers={"X-Custom": "1"}) as ws:
            # the destination chose the subprotocol: its 101 was relayed with its fields, and
            # the client checked Sec-WebSocket-Accept against its own key
            assert ws.subprotocol == "chat"
            seen = json.loads(await ws.recv())
            for msg in ["hello", b"\x00\x01binary", "x" * 70000]:
                await ws.send(msg)
                assert await ws.recv() == msg
            return seen
    seen = run(go())
    assert seen["upgrade"].lower() == "websocket" and "upgrade" in seen["connection"].lower()
    assert seen["sec-websocket-version"] == "13" and seen["sec-websocket-key"]
    assert seen["sec-websocket-protocol"] == "chat" and seen["x-custom"] == "1"


def test_large_messages_and_ten_thousand_in_order(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, ws_echo))

    async def go():
        async with connect("ws://127.0.0.1:%d/" % port) as ws:
            for i in range(4):
                big = bytes([i]) * MiB
                await ws.send(big)
                assert await ws.recv() == big

            async def sender():
                for i in range(10000):
                    await ws.send("m%d" % i)
            task = asyncio.ensure_future(sender())
            got = [await ws.recv() for _ in range(10000)]
            await task
            assert got == ["m%d" % i for i in range(10000)]
    run(go(), timeout=90)


def _leaf_certs(d):
    def sh(*a):
        subprocess.run(list(a), check=True, capture_output=True, timeout=60)
    sh("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-days", "30", "-subj", "/CN=Test CA", "-keyout", str(d / "ca.key"), "-out",
       str(d / "ca.crt"))
    sh("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-subj", "/CN=a.example.test", "-keyout", str(d / "a.key"), "-out", str(d / "a.csr"))
    (d / "a.ext").write_text("subjectAltName=DNS:a.example.test\n")
    sh("openssl", "x509", "-req", "-in", str(d / "a.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
       str(d / "ca.key"), "-CAcreateserial", "-days", "30", "-sha256", "-extfile",
       str(d / "a.ext"), "-out", str(d / "a.crt"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_echo_over_a_tls_front(tmp_path, gateway_factory, ws_echo):
    _leaf_certs(tmp_path)
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo)
    cfg["certificates"] = [{"id": "a", "chain": str(tmp_path / "a.crt"),
                            "key": str(tmp_path / "a.key")}]
    cfg["servers"][0]["tls"] = {"certificates": ["a"], "default": "a"}
    gw = gateway_factory(cfg)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))

    async def go():
        async with connect("wss://a.example.test:%d/" % port, ssl=ctx,
                           server_hostname="a.example.test",
                           host="127.0.0.1", port=port) as ws:
            big = b"\xab" * MiB
            await ws.send(big)
            assert await ws.recv() == big
            for i in range(500):
                await ws.send("t%d" % i)
            assert [await ws.recv() for _ in range(500)] == ["t%d" % i for i in range(500)]
    run(go())
    line = [l for l in gw.access_log(wait_for=1) if l.get("status") == 101]
    assert line and line[0]["tlsVersion"].startswith("TLS")


def test_half_close_is_passed_on_both_ways(tmp_path, gateway_factory):
    def script(c, head, rest):
        c.sendall(SWITCH)
        got = rest + recv_all(c)  # the client's bytes, then its half-close
        c.sendall(b"got:" + got)  # our side still writes after theirs ended
        c.shutdown(socket.SHUT_WR)
    dest = RawDest(script)
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, dest.url))
    s, head, rest = raw_handshake(port)
    assert head.startswith("HTTP/1.1 101") and "upgrade: websocket" in head.lower()
    s.sendall(b"raw bytes, no framing checks")
    s.shutdown(socket.SHUT_WR)
    assert rest + recv_all(s) == b"got:raw bytes, no framing checks"
    s.close()
    dest.close()


def test_101_without_upgrade_request_is_502_and_other_answers_relay(tmp_path, gateway_factory):
    def script(c, head, rest):
        if "upgrade:" not in head.lower():
            c.sendall(SWITCH)  # a switch nobody asked for
        elif "/deny" in head:
            c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
        elif "/other" in head:
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                      b"Connection: Upgrade\r\n\r\n")
    dest = RawDest(script)
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, dest.url))
    assert http_request("GET", "http://127.0.0.1:%d/plain" % port)[0] == 502
    s, head, _ = raw_handshake(port, "/deny")
    assert head.startswith("HTTP/1.1 403") and "\r\ncontent-length: 4" in head.lower()
    s.close()
    # a switch to a protocol the client did not offer (RFC 9110 7.8)
    s, head, _ = raw_handshake(port, "/other")
    assert head.startswith("HTTP/1.1 502")
    s.close()
    dest.close()


def test_upgrade_protocols_not_allowed_go_without_upgrade(tmp_path, gateway_factory):
    def script(c, head, rest):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    dest = RawDest(script)
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, dest.url, route={"upgradeProtocols": ["h2c"]}))
    s, head, _ = raw_handshake(port)
    assert head.startswith("HTTP/1.1 200")
    s.close()
    assert "upgrade" not in dest.heads[-1].lower()
    dest.close()


def test_idle_timeout_per_route(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, ws_echo,
                                   route={"webSocketIdleTimeout": "1s"}))

    async def go():
        async with connect("ws://127.0.0.1:%d/" % port) as ws:
            # activity keeps it open past the timeout
            for i in range(8):
                await asyncio.sleep(0.3)
                await ws.send("k")
                assert await ws.recv() == "k"
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return time.monotonic() - t0
    idle = run(go())
    assert 0.8 < idle < 3.0
    line = [l for l in gw.access_log(wait_for=1) if l.get("status") == 101]
    assert line and line[0]["termination"] == "idle_timeout"


def test_access_log_line_at_close(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, ws_echo))

    async def go():
        async with connect("ws://127.0.0.1:%d/logme" % port) as ws:
            await ws.send("a" * 1000)
            assert len(await ws.recv()) == 1000
            await asyncio.sleep(0.5)
            assert gw.access_log() == []  # one line at close, none at the handshake
    run(go())
    lines = gw.access_log(wait_for=1)
    assert len(lines) == 1
    l = lines[0]
    assert l["status"] == 101 and l["path"] == "/logme" and l["termination"] == "ok"
    assert l["duration"] >= 500
    # both ways: 1000 payload bytes plus framing (client frames are masked: 8 more bytes)
    assert l["bytesIn"] > 1000 and l["bytesOut"] > 1000


def test_max_websockets_cap(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo)
    cfg["servers"][0]["maxWebSockets"] = 2
    gw = gateway_factory(cfg)

    async def go():
        a = await connect("ws://127.0.0.1:%d/" % port)
        b = await connect("ws://127.0.0.1:%d/" % port)
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect("ws://127.0.0.1:%d/" % port)
        assert e.value.status_code == 503
        workers = gw.all_workers()
        assert sum(w["webSockets"] for w in workers) == 2
        await a.close()
        await asyncio.sleep(0.3)
        c = await connect("ws://127.0.0.1:%d/" % port)  # a place is free again
        await c.send("x")
        assert await c.recv() == "x"
        await b.close()
        await c.close()
    run(go())


def test_access_control_and_rate_limit_apply_to_the_handshake(tmp_path, gateway_factory,
                                                             ws_echo):
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo,
                    accessControl=[{"id": "bad", "type": "blacklist", "entries": ["127.0.0.1"]}],
                    rateLimits=[{"id": "rl", "type": "FixedWindow", "scope": "PerIp",
                                 "maxRequests": 2, "window": "60s"}])
    cfg["routes"].insert(0, dict(cfg["routes"][0], id="denied", order=-1,
                                 match={"path": "/denied"}, accessControl=["bad"]))
    cfg["routes"][1]["rateLimits"] = ["rl"]
    gateway_factory(cfg)

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect("ws://127.0.0.1:%d/denied" % port)
        assert e.value.status_code == 403
        for _ in range(2):
            ws = await connect("ws://127.0.0.1:%d/ok" % port)
            await ws.close()
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect("ws://127.0.0.1:%d/ok" % port)
        assert e.value.status_code == 429
    run(go())


def _reload(gw, timeout=10):
    """SIGHUP and wait for the new generation to be ready, without waiting for the old one
    to go (its WebSockets keep it until webSocketDrainTimeout)."""
    gen = gw.info()["generation"]
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = gw.info()
        if info["generation"] > gen and not info.get("reloading"):
            ws = [w for w in gw.all_workers()
                  if w["generation"] == info["generation"]]
            if ws and all(w["state"] == "ready" for w in ws):
                return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("reload did not complete")


N_DRAIN = 200  # scripts/ws-many.py opens 1,000 (docs/websocket.md)


def test_drain_on_reload_keeps_websockets_until_the_drain_timeout(tmp_path, gateway_factory,
                                                                 ws_echo):
    port = free_port()
    drain = 3.0
    cfg = ws_config(tmp_path, port, ws_echo, workers=2, webSocketDrainTimeout="3s",
                    shutdownTimeout="10s")
    gw = gateway_factory(cfg)

    async def go():
        groups = []  # (sockets, time their generation was retired)
        for round_ in range(3):
            socks = [await connect("ws://127.0.0.1:%d/" % port) for _ in range(N_DRAIN // 2
                                                                             if round_ < 2 else 0)]
            for ws in socks:
                await ws.send("before")
                assert await ws.recv() == "before"
            t = await asyncio.get_event_loop().run_in_executor(None, _reload, gw)
            groups.append((socks, t))
            # the retired generation's WebSockets still work after the reload
            for ws in socks[:20]:
                await ws.send("after")
                assert await ws.recv() == "after"
        closed_at = {}

        async def watch(ws, key):
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                closed_at[key] = time.monotonic()
        tasks = [asyncio.ensure_future(watch(ws, (g, i)))
                 for g, (socks, _) in enumerate(groups) for i, ws in enumerate(socks)]
        await asyncio.wait(tasks, timeout=drain + 8)
        return groups, closed_at
    groups, closed_at = run(go(), timeout=90)
    for g, (socks, retired) in enumerate(groups):
        for i in range(len(socks)):
            assert (g, i) in closed_at, "WebSocket %d of group %d never closed" % (i, g)
            lived = closed_at[(g, i)] - retired
            # none closed before its worker's drain timeout, all soon after
            assert drain - 0.3 <= lived <= drain + 3, (g, i, lived)
    lines = [l for l in gw.access_log(wait_for=N_DRAIN) if l.get("status") == 101]
    assert len(lines) == N_DRAIN and all(l["termination"] == "drained" for l in lines)


def test_server_sent_events_arrive_event_by_event(tmp_path, gateway_factory):
    gaps = {}

    def script(c, head, rest):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Cache-Control: no-cache\r\n\r\n")
        n = 20 if "/fast" in head else 2
        for i in range(n):
            time.sleep(1.5 if "/slow" in head else 0.1)
            c.sendall(b"data: %d %.6f\n\n" % (i, time.monotonic()))
        c.shutdown(socket.SHUT_WR)
    dest = RawDest(script)
    port = free_port()
    cfg = ws_config(tmp_path, port, dest.url)
    cfg["clusters"][0]["httpRequest"] = {"activityTimeout": "1s"}
    cfg["routes"].insert(0, dict(cfg["routes"][0], id="timed", order=-1,
                                 match={"path": "/timed/{**r}"}, exemptEventStreams=False))
    gateway_factory(cfg)

    def read_events(path):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        buf, delays, events = b"", [], []
        while True:
            d = s.recv(65536)
            if not d:
                break
            now = time.monotonic()
            buf += d
            # the body is chunked by the gateway: each event travels in a chunk of its own
            found = re.findall(rb"data: (\d+) ([\d.]+)\n\n", buf)
            for i, sent in found[len(events):]:
                events.append(int(i))
                delays.append(now - float(sent))
            if b"0\r\n\r\n" in buf[-7:]:
                break
        s.close()
        return events, delays

    events, delays = read_events(b"/fast")
    assert events == list(range(20))
    worst = max(delays)
    print("SSE event delay: max %.2f ms, median %.2f ms" % (worst * 1000,
                                                             sorted(delays)[10] * 1000))
    assert worst < 0.05
    # events 1.5 s apart outlive the cluster's 1 s activity timeout: exempt by default...
    events, _ = read_events(b"/slow")
    assert events == [0, 1]
    # ...and cut by it where the route says so
    events, _ = read_events(b"/timed/slow")
    assert events == []
    dest.close()


def _rss(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("front", ["plain", "tls"])
def test_backpressure_bounds_memory_both_ways(tmp_path, gateway_factory, front):
    """A peer that does not read holds the other back: 64 MiB each way, a reader that waits
    2 s, and the worker's resident memory grows by less than 16 MiB."""
    total = 64 * MiB
    chunk = b"\x5a" * MiB

    def script(c, head, rest):
        c.sendall(SWITCH)
        for _ in range(total // MiB):  # blocks while the gateway holds back
            c.sendall(chunk)
        time.sleep(2.0)  # now let the client's bytes pile up against us
        got = len(rest)
        c.settimeout(30)
        while got < total:
            d = c.recv(1 << 20)
            if not d:
                break
            got += len(d)
        c.sendall(b"%d" % got)
        c.shutdown(socket.SHUT_WR)
    dest = RawDest(script)
    port = free_port()
    cfg = ws_config(tmp_path, port, dest.url)
    if front == "tls":
        _leaf_certs(tmp_path)
        cfg["certificates"] = [{"id": "a", "chain": str(tmp_path / "a.crt"),
                                "key": str(tmp_path / "a.key")}]
        cfg["servers"][0]["tls"] = {"certificates": ["a"], "default": "a"}
    gw = gateway_factory(cfg)
    pid = gw.all_workers()[0]["pid"]
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    if front == "tls":
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        s = ctx.wrap_socket(raw, server_hostname="a.example.test")
    else:
        s = raw
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.test\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    before = _rss(pid)
    time.sleep(2.0)  # the destination sends, we do not read
    grown_down = _rss(pid) - before
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    got = len(body)
    while got < total:
        d = s.recv(1 << 20)
        assert d, "closed after %d bytes" % got
        got += len(d)
    assert got == total
    # the other way: the destination waits 2 s before reading our 64 MiB
    before = _rss(pid)
    sender = threading.Thread(target=lambda: [s.sendall(chunk) for _ in range(total // MiB)])
    sender.start()
    time.sleep(1.5)
    grown_up = _rss(pid) - before
    sender.join(60)
    assert s.recv(100) == b"%d" % total
    s.close()
    dest.close()
    assert grown_down < 16 * MiB and grown_up < 16 * MiB, (grown_down, grown_up)


def _prom(gw, name):
    m = re.search(r"^%s (\S+)$" % name, gw.status("show metrics")["text"], re.M)
    return float(m.group(1))


def test_open_websockets_in_show_metrics(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, ws_echo))
    total0 = _prom(gw, "fastgateway_websockets_total")

    async def go():
        socks = [await connect("ws://127.0.0.1:%d/" % port) for _ in range(3)]
        for ws in socks:
            await ws.send("x")
            assert await ws.recv() == "x"
        assert _prom(gw, "fastgateway_websockets") == 3
        for ws in socks:
            await ws.close()
    run(go())
    deadline = time.monotonic() + 5
    while _prom(gw, "fastgateway_websockets") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _prom(gw, "fastgateway_websockets") == 0
    assert _prom(gw, "fastgateway_websockets_total") == total0 + 3


def _fds(pid):
    return len(list(Path("/proc/%d/fd" % pid).iterdir()))


def test_idle_websockets_hold_two_descriptors_each(tmp_path, gateway_factory, ws_echo):
    """An idle spliced relay holds its two sockets and no pipe: with N idle WebSockets that
    each moved a message both ways, the worker holds at most 2 descriptors per WebSocket plus
    a constant (its cache of empty pipes)."""
    n = 100
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, ws_echo))
    pid = gw.all_workers()[0]["pid"]
    base = _fds(pid)
    socks = []
    mask = b"\x01\x02\x03\x04"
    frame = b"\x81\x82" + mask + bytes(a ^ b for a, b in zip(b"hi", mask))
    try:
        for _ in range(n):
            s, head, rest = raw_handshake(port, "/")
            assert head.startswith("HTTP/1.1 101"), head
            s.sendall(frame)
            got = rest
            while len(got) < 4:
                d = s.recv(100)
                assert d
                got += d
            assert got == b"\x81\x02hi"
            socks.append(s)
        time.sleep(0.3)
        grown = _fds(pid) - base
        assert grown <= 2 * n + 40, (grown, n)
    finally:
        for s in socks:
            s.close()


def test_max_websockets_is_a_cap_across_workers(tmp_path, gateway_factory, ws_echo):
    """maxWebSockets caps the server's open WebSockets summed over its workers: with two
    workers and a cap of 6, of 26 handshakes (new connections, spread over both workers by
    the kernel) exactly 6 switch, the rest are 503, and status shows 6 open in total."""
    cap, extra = 6, 20
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo, workers=2)
    cfg["servers"][0]["maxWebSockets"] = cap
    gw = gateway_factory(cfg)
    opened, refused = [], 0
    try:
        for _ in range(cap + extra):
            s, head, _ = raw_handshake(port, "/")
            if head.startswith("HTTP/1.1 101"):
                opened.append(s)
            else:
                assert head.startswith("HTTP/1.1 503"), head
                refused += 1
                s.close()
            # the open count must never pass the cap, whichever worker took the handshake
            assert len(opened) <= cap
        workers = gw.all_workers()
        assert sum(w["webSockets"] for w in workers) == cap
        assert len(opened) == cap and refused == extra
        # the handshakes reached both workers, so a per-worker count would have let more in
        assert len(workers) == 2 and all(w["connectionsTotal"] > 0 for w in workers), workers
        opened.pop().close()
        deadline = time.monotonic() + 5
        while sum(w["webSockets"] for w in gw.all_workers()) != cap - 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        s, head, _ = raw_handshake(port, "/")  # a place is free again
        assert head.startswith("HTTP/1.1 101"), head
        opened.append(s)
    finally:
        for s in opened:
            s.close()


def _burst(port, n):
    """n handshakes at once (threads released together): [(socket, head)]."""
    gate = threading.Barrier(n)
    out = [None] * n

    def one(i):
        gate.wait()
        s, head, _ = raw_handshake(port, "/")
        out[i] = (s, head)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_max_websockets_is_exact_under_concurrent_handshakes(tmp_path, gateway_factory):
    """The cap holds for handshakes in flight together: 30 at once over two workers, against
    a cap of 3 and a destination that takes 300 ms to switch, never open more than 3. A count
    checked at the handshake and taken at the 101 lets every one of them through."""
    cap, n = 3, 30
    release = threading.Event()

    def slow_switch(c, head, rest):
        time.sleep(0.3)
        c.sendall(SWITCH)
        release.wait(30)

    dest = RawDest(slow_switch)
    port = free_port()
    cfg = ws_config(tmp_path, port, dest.url, workers=2)
    cfg["servers"][0]["maxWebSockets"] = cap
    gw = gateway_factory(cfg)
    socks = []
    try:
        res = _burst(port, n)
        socks = [s for s, _ in res]
        heads = [h for _, h in res]
        switched = [h for h in heads if h.startswith("HTTP/1.1 101")]
        assert all(h.startswith("HTTP/1.1 101") or h.startswith("HTTP/1.1 503")
                   for h in heads), heads
        assert 1 <= len(switched) <= cap, len(switched)
        workers = gw.all_workers()
        assert sum(w["webSockets"] for w in workers) == len(switched)
        assert len(workers) == 2 and all(w["connectionsTotal"] > 0 for w in workers), workers
        # refused and concurrent handshakes hold no place: the rest of the cap opens one by
        # one, and the next is refused
        for _ in range(cap - len(switched)):
            s, head, _ = raw_handshake(port, "/")
            socks.append(s)
            assert head.startswith("HTTP/1.1 101"), head
        s, head, _ = raw_handshake(port, "/")
        socks.append(s)
        assert head.startswith("HTTP/1.1 503"), head
    finally:
        release.set()
        for s in socks:
            s.close()
        dest.close()


def test_max_websockets_place_freed_when_the_destination_does_not_switch(tmp_path,
                                                                          gateway_factory):
    """A handshake holds its place while the destination answers; one the destination
    refuses (a 403) or answers without switching (a 200 whose body is still coming) gives it
    back at that answer, so they never fill the cap."""
    release = threading.Event()

    def script(c, head, rest):
        if "/deny" in head.split("\r\n")[0]:
            c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if "/stream" in head.split("\r\n")[0]:
            # the GET answered, not switched, with a body that goes on
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            release.wait(30)
            return
        c.sendall(SWITCH)
        release.wait(30)

    dest = RawDest(script)
    port = free_port()
    cfg = ws_config(tmp_path, port, dest.url, workers=1)
    cfg["servers"][0]["maxWebSockets"] = 1
    gateway_factory(cfg)
    socks = []
    try:
        for _ in range(5):
            s, head, _ = raw_handshake(port, "/deny")
            s.close()
            assert head.startswith("HTTP/1.1 403"), head
        s, head, _ = raw_handshake(port, "/stream")  # its response still streaming
        socks.append(s)
        assert head.startswith("HTTP/1.1 200"), head
        s, head, _ = raw_handshake(port, "/")
        socks.append(s)
        assert head.startswith("HTTP/1.1 101"), head
        s, head, _ = raw_handshake(port, "/")
        socks.append(s)
        assert head.startswith("HTTP/1.1 503"), head
    finally:
        release.set()
        for s in socks:
            s.close()
        dest.close()


def test_max_websockets_places_of_a_killed_worker_come_back(tmp_path, gateway_factory,
                                                            ws_echo):
    """A worker killed with WebSockets open gives its places back (the master drops its
    share): its replacement admits up to the cap again."""
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo, workers=1)
    cfg["servers"][0]["maxWebSockets"] = 2
    gw = gateway_factory(cfg)
    socks = []
    try:
        for _ in range(2):
            s, head, _ = raw_handshake(port, "/")
            socks.append(s)
            assert head.startswith("HTTP/1.1 101"), head
        s, head, _ = raw_handshake(port, "/")
        s.close()
        assert head.startswith("HTTP/1.1 503"), head
        pid = gw.all_workers()[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            ws = [w for w in gw.all_workers() if w["pid"] != pid and w.get("state") == "ready"]
            if ws:
                break
            assert time.monotonic() < deadline, gw.all_workers()
            time.sleep(0.05)
        for _ in range(2):
            s, head, _ = raw_handshake(port, "/")
            socks.append(s)
            assert head.startswith("HTTP/1.1 101"), head
    finally:
        for s in socks:
            s.close()
