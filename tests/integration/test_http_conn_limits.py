"""Connection caps of HTTP servers (docs/config.md "limits": maxConnections,
maxConnectionsPerClient), counted across workers by worker/core/connlimit.c: a refused
connection is closed at accept, before any byte is read or any TLS handshake, counted in
fastgateway_server_connections_refused_total and logged; every close path gives its place back.
Clients are real sockets, bound to 127.0.0.x source addresses to act as distinct clients."""
import json
import os
import signal
import socket
import struct
import ssl
import subprocess
import time

import pytest

import h2raw
from conftest import BINARY, REPO_ROOT, base_config, free_port
from peers import self_signed_cert
from test_metrics import prom_samples
from test_websocket import raw_handshake, ws_config, ws_echo  # noqa: F401 (fixture)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def limited(tmp_path, port, workers=2, **limits):
    cfg = base_config(tmp_path, port, workers=workers)
    cfg["servers"][0]["limits"] = limits
    return cfg


def connect(port, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_response(s):
    """One response to REQUEST on a keep-alive connection (the body is "hello")."""
    buf = b""
    while not buf.endswith(b"hello"):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    return buf


def served(port, source="127.0.0.1"):
    """A keep-alive connection that got an answer, or None when the gateway closed it unread."""
    s = connect(port, source)
    try:
        s.sendall(REQUEST)
        buf = read_response(s)
    except (ConnectionResetError, BrokenPipeError):
        buf = b""
    if buf.startswith(b"HTTP/1.1 200"):
        return s
    s.close()
    assert buf == b"", buf
    return None


def refused(port, source="127.0.0.1"):
    """The gateway closes the connection at once, and sends nothing even for a request."""
    s = connect(port, source)
    try:
        s.sendall(REQUEST)
        data = s.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    finally:
        s.close()
    return data == b""


def eventually_served(port, source="127.0.0.1", timeout=5.0):
    """A released place is free once the worker has seen the close (the harness's readiness
    probe is one such connection): retried until then."""
    deadline = time.monotonic() + timeout
    while True:
        s = served(port, source)
        if s is not None or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def metrics(gw):
    return prom_samples(gw.status("show metrics")["text"])


def refusals(gw, reason, server="main"):
    return metrics(gw).get(("fastgateway_server_connections_refused_total",
                            frozenset({("server", server), ("reason", reason)})), 0)


def open_count(gw, server="main"):
    return metrics(gw).get(("fastgateway_server_connections_open",
                            frozenset({("server", server)})))


def wait_open(gw, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while open_count(gw) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return open_count(gw)


def test_per_client_cap_over_keepalive(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(limited(tmp_path, port, maxConnectionsPerClient=3))
    held = [eventually_served(port) for _ in range(3)]
    assert all(held)
    assert refused(port)
    assert refused(port)
    # another address is another client
    other = eventually_served(port, "127.0.0.2")
    assert other is not None
    # the held ones still work: keep-alive was never disturbed
    for s in held:
        s.sendall(REQUEST)
        assert read_response(s).startswith(b"HTTP/1.1 200")
    held.pop().close()
    s = eventually_served(port)
    assert s is not None
    assert refused(port)
    assert refusals(gw, "client") >= 3
    assert refusals(gw, "server") == 0
    log = gw.error_log()
    assert 'server "main": connection from 127.0.0.1 closed: maxConnectionsPerClient (3) ' \
           'reached' in log
    for x in held + [s, other]:
        x.close()


def test_refusals_are_logged_once_a_second(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(limited(tmp_path, port, workers=1, maxConnectionsPerClient=1))
    held = eventually_served(port)
    before = refusals(gw, "client")
    for _ in range(20):
        assert refused(port)
    assert refusals(gw, "client") == before + 20
    lines = [l for l in gw.error_log().splitlines() if "maxConnectionsPerClient (1)" in l]
    assert 1 <= len(lines) <= 2, lines
    assert all("[warn]" in l or "warn" in l for l in lines)
    held.close()


def test_server_cap_across_two_workers(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(limited(tmp_path, port, workers=2, maxConnections=4,
                                 maxConnectionsPerClient=2))
    held = [eventually_served(port, "127.0.0.%d" % i) for i in range(2, 6)]
    assert all(held)
    for s in held:  # the connections went to both workers: the count is the gateway's
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s)
    assert wait_open(gw, 4) == 4
    for i in range(6, 10):
        assert refused(port, "127.0.0.%d" % i)
    assert refusals(gw, "server") == 4
    assert "maxConnections (4) reached" in gw.error_log()
    held.pop().close()
    s = eventually_served(port, "127.0.0.9")
    assert s is not None
    assert refused(port, "127.0.0.10")
    for x in held + [s]:
        x.close()
    assert wait_open(gw, 0) == 0


def test_simultaneous_connects_never_pass_the_cap(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(limited(tmp_path, port, workers=2, maxConnections=10))
    assert wait_open(gw, 0) == 0  # the harness's readiness probe has given its place back
    before = refusals(gw, "server")
    socks = [connect(port, "127.0.0.%d" % (2 + i % 20)) for i in range(40)]
    for s in socks:
        try:
            s.sendall(REQUEST)
        except OSError:
            pass
    answered = []
    for s in socks:
        try:
            buf = read_response(s)
        except OSError:
            buf = b""
        if buf.startswith(b"HTTP/1.1 200"):
            answered.append(s)
    assert len(answered) == 10
    assert refusals(gw, "server") - before == 30
    for s in socks:
        s.close()
    assert wait_open(gw, 0) == 0


def tls_served(ctx, port, timeout=5.0):
    """A TLS connection that got an answer, retried while the one place is still taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = ctx.wrap_socket(connect(port), server_hostname="localhost")
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 200")
            return s
        except (ssl.SSLError, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_tls_server_refuses_before_the_handshake(tmp_path, gateway_factory):
    port = free_port()
    crt, key = self_signed_cert(tmp_path)
    cfg = limited(tmp_path, port, workers=2, maxConnectionsPerClient=1)
    cfg["certificates"] = [{"id": "c", "chain": crt, "key": key}]
    cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    gw = gateway_factory(cfg)
    ctx = ssl.create_default_context(cafile=crt)
    first = tls_served(ctx, port)
    failures = ("fastgateway_server_tls_handshake_failures_total", frozenset({("server", "main")}))
    before = metrics(gw)[failures], refusals(gw, "client")
    raw = connect(port)
    try:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")  # a ClientHello's start: nothing comes back
        assert raw.recv(100) == b""
    except ConnectionResetError:
        pass
    raw.close()
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        ctx.wrap_socket(connect(port), server_hostname="localhost")
    # no handshake was ever started for the refused ones
    assert metrics(gw)[failures] == before[0]
    assert refusals(gw, "client") == before[1] + 2
    first.close()
    # a handshake that fails gives its place back too: a ClientHello with an empty body is
    # answered with an alert (decode_error) at once, where one cut short waited for more bytes
    alerts = 0
    for _ in range(3):
        bad = connect(port)
        bad.sendall(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
        bad.settimeout(5)
        try:
            alerts += bad.recv(100)[:1] == b"\x15"
        except OSError:
            pass
        bad.close()
    tls_served(ctx, port).close()
    assert metrics(gw)[failures] == before[0] + alerts


def test_http2_connections_count(tmp_path, gateway_factory):
    port = free_port()
    cfg = limited(tmp_path, port, workers=2, maxConnections=2)
    cfg["servers"][0]["http2"] = {"h2c": True}
    gw = gateway_factory(cfg)
    clients = []
    for _ in range(2):
        c = h2raw.Client(port)
        assert c.response(c.request(path="/"))["status"] == 200
        clients.append(c)
    assert wait_open(gw, 2) == 2
    assert refused(port)
    c = clients.pop()
    c.send(h2raw.frame(h2raw.GOAWAY, 0, 0, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    c.sock.close()
    assert wait_open(gw, 1) == 1
    s = eventually_served(port)
    assert s is not None
    s.close()
    clients[0].sock.close()
    assert wait_open(gw, 0) == 0


@pytest.mark.parametrize("reset", [False, True])
def test_a_client_gone_midway_through_the_h2c_preface_gives_its_place_back(tmp_path,
                                                                           gateway_factory, reset):
    """A client that sends part of the HTTP/2 preface and closes (FIN or reset) is seen to go at
    once: its place is free again, not held until timeouts.header."""
    port = free_port()
    cfg = limited(tmp_path, port, workers=2, maxConnections=3)
    cfg["servers"][0]["http2"] = {"h2c": True}
    gw = gateway_factory(cfg)
    assert wait_open(gw, 0) == 0
    for _ in range(3):
        s = connect(port)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM")
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert wait_open(gw, 0, timeout=3.0) == 0
    s = eventually_served(port, timeout=2.0)
    assert s is not None
    s.close()


def ws_open(port, timeout=5.0):
    """A WebSocket through the gateway, retried while a closed connection's place is not yet
    given back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s, head, _ = raw_handshake(port)
        except OSError:
            s, head = None, ""
        if head.startswith("HTTP/1.1 101"):
            return s
        if s is not None:
            s.close()
        assert time.monotonic() < deadline, head
        time.sleep(0.05)


def test_websocket_counts_until_closed(tmp_path, gateway_factory, ws_echo):  # noqa: F811
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo, workers=2)
    cfg["servers"][0]["limits"] = {"maxConnections": 1}
    gw = gateway_factory(cfg)
    s = ws_open(port)
    assert wait_open(gw, 1) == 1
    assert refused(port)
    s.close()
    assert wait_open(gw, 0) == 0
    ws_open(port).close()


def test_every_close_path_gives_its_place_back(tmp_path, gateway_factory):
    port = free_port()
    cfg = limited(tmp_path, port, workers=2, maxConnections=5, maxConnectionsPerClient=5,
                  maxHeaderSize="1k")
    cfg["servers"][0]["timeouts"] = {"header": "1s"}
    cfg["servers"][0]["maxKeepAliveRequests"] = 2
    gw = gateway_factory(cfg)
    for i in range(30):
        kind = i % 5
        s = connect(port)
        if kind == 0:  # keep-alive, closed by the client
            s.sendall(REQUEST)
            read_response(s)
        elif kind == 1:  # Connection: close
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            read_response(s)
        elif kind == 2:  # maxKeepAliveRequests closes after the second
            s.sendall(REQUEST + REQUEST)
            read_response(s)
        elif kind == 3:  # a bad request: 4xx and close
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 4096 + b"\r\n\r\n")
        s.close()  # kind 4: nothing sent
    # one that the header timeout closes
    idle = connect(port)
    time.sleep(1.5)
    idle.close()
    assert wait_open(gw, 0) == 0
    held = [eventually_served(port) for _ in range(5)]
    assert all(held)
    assert refused(port)
    for s in held:
        s.close()


def test_reload_changes_the_cap_and_keeps_counts(tmp_path, gateway_factory, ws_echo):  # noqa: F811
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo, workers=2)
    cfg["servers"][0]["limits"] = {"maxConnections": 2}
    cfg["routes"].insert(0, {"id": "hello", "match": {"path": "/"},
                             "direct": {"status": 200, "body": "hello"}})
    cfg["shutdownTimeout"] = "30s"
    gw = gateway_factory(cfg)
    ws = ws_open(port)  # an old worker's relay: drains across the reload
    assert wait_open(gw, 1) == 1
    cfg["servers"][0]["limits"] = {"maxConnections": 3}
    gw.reload(cfg)
    assert wait_open(gw, 1) == 1  # still held by the old worker, still counted
    held = [eventually_served(port) for _ in range(2)]
    assert all(held)
    assert refused(port)
    ws.close()
    s = eventually_served(port)
    assert s is not None
    for x in held + [s]:
        x.close()
    cfg["servers"][0]["limits"] = {}
    gw.reload(cfg)
    many = [eventually_served(port) for _ in range(6)]
    assert all(many)
    for x in many:
        x.close()


def test_a_reload_drains_and_gives_every_place_back(tmp_path, gateway_factory):
    """Old workers close their idle keep-alive connections and send HTTP/2 GOAWAY: every place
    they held comes back."""
    port = free_port()
    cfg = limited(tmp_path, port, workers=2, maxConnections=6)
    cfg["servers"][0]["http2"] = {"h2c": True}
    gw = gateway_factory(cfg)
    h2 = []
    for _ in range(3):
        c = h2raw.Client(port)
        assert c.response(c.request(path="/"))["status"] == 200
        h2.append(c)
    h1 = [eventually_served(port) for _ in range(3)]
    assert all(h1)
    assert wait_open(gw, 6) == 6
    assert refused(port)
    cfg["servers"][0]["limits"]["maxConnections"] = 7
    gw.reload(cfg)
    for c in h2:
        assert c.goaway() is not None
    assert wait_open(gw, 0) == 0
    again = [eventually_served(port) for _ in range(7)]
    assert all(again)
    assert refused(port)
    for s in h1 + again:
        s.close()
    for c in h2:
        c.sock.close()


def test_a_killed_workers_places_are_dropped(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(limited(tmp_path, port, workers=2, maxConnections=3,
                                 maxConnectionsPerClient=3))
    held = [eventually_served(port) for _ in range(3)]
    assert all(held)
    assert wait_open(gw, 3) == 3
    assert refused(port)
    killed = {w["pid"] for w in gw.workers()}
    for pid in killed:
        os.kill(pid, signal.SIGKILL)  # its connections die with it, unclosed by the gateway
    deadline = time.monotonic() + 10
    while True:  # the master reaps them, drops their shares and starts new ones
        pids = {w["pid"] for w in gw.workers()}
        if len(pids) == 2 and not pids & killed:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert wait_open(gw, 0) == 0
    again = [eventually_served(port) for _ in range(3)]
    assert all(again)
    assert refused(port)
    for s in held + again:
        s.close()


def run_t(tmp_path, cfg):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("limits,message", [
    ({"maxConnections": -1}, "servers[1].limits.maxConnections: -1 is out of range 0..1000000"),
    ({"maxConnections": 1000001},
     "servers[1].limits.maxConnections: 1000001 is out of range 0..1000000"),
    ({"maxConnectionsPerClient": "x"},
     "servers[1].limits.maxConnectionsPerClient: expected an integer, got a string"),
    ({"maxConnections": 10, "maxConnectionsPerClient": 11},
     "servers[1].limits.maxConnectionsPerClient: 11 is more than maxConnections (10)"),
])
def test_config_errors(tmp_path, limits, message):
    cfg = base_config(tmp_path, free_port())
    cfg["servers"].append({"id": "edge", "listen": "127.0.0.1:%d" % free_port(),
                           "limits": limits})
    p = run_t(tmp_path, cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    assert message in p.stderr, p.stderr


def test_a_tcp_server_takes_its_caps_from_tcp(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["servers"].append({"id": "db", "listen": "127.0.0.1:%d" % free_port(),
                           "limits": {"maxConnections": 5},
                           "tcp": {"clusterId": "t"}})
    cfg["clusters"] = [{"id": "t", "destinations": [{"id": "d", "address": "tcp://127.0.0.1:9"}]}]
    p = run_t(tmp_path, cfg)
    assert p.returncode == 1
    assert "servers[1].limits: maxConnections and maxConnectionsPerClient of a tcp server are " \
           "tcp.maxConnections" in p.stderr, p.stderr


def test_config_accepts_caps_and_dumps_them(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["servers"][0]["limits"] = {"maxConnections": 1000000, "maxConnectionsPerClient": 64}
    assert run_t(tmp_path, cfg).returncode == 0
    path = tmp_path / "c.json"
    p = subprocess.run([str(BINARY), "-T", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    dumped = json.loads(p.stdout)["servers"][0]["limits"]
    assert dumped["maxConnections"] == 1000000
    assert dumped["maxConnectionsPerClient"] == 64


def test_example_configuration_is_accepted():
    example = REPO_ROOT / "etc/examples/http-conn-limits.json"
    p = subprocess.run([str(BINARY), "-T", "-c", str(example)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    limits = json.loads(p.stdout)["servers"][0]["limits"]
    assert (limits["maxConnections"], limits["maxConnectionsPerClient"]) == (10000, 64)
