"""Tunnels end to end (docs/tunnels.md): the real gateway, the real fastgateway-agent binary and
real destinations behind the agent (upstream.py, ws_echo.py). The agent dials the gateway's TLS
server, authenticates, and the gateway serves tunnel://AGENT/SERVICE destinations through it.

Covered: HTTP both ways and fields, the tunnel path never reaching a destination, WebSocket
through the tunnel, a large upload and download, 1,000 concurrent streams, authentication
failures (wrong secret, an answer replayed on another connection, an unknown agent), the agent
killed with SIGKILL and restarted, gateway reloads under load and a gateway restart, heartbeat
loss (SIGSTOP), and two agents serving one cluster with weights and failover."""
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
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

from conftest import (REPO_ROOT, Upstream, _kill_group, _live_groups, _port_open, base_config,
                      free_port, http_request)
from peers import ca_signed_cert

AGENT = Path(os.environ.get("FASTGATEWAY_AGENT", str(REPO_ROOT / "fastgateway-agent"))).resolve()
WS_ECHO = Path(__file__).resolve().parent / "ws_echo.py"
MiB = 1 << 20
TUNNEL_PATH = "/_fg/tunnel"

pytestmark = [
    pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built"),
    pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                       reason="needs the openssl and curl CLIs"),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return ca_signed_cert(tmp_path_factory.mktemp("tunnelcerts"))


def secret_file(tmp, name, value=None):
    p = Path(tmp) / (name + ".key")
    p.write_text((value or base64.b64encode(os.urandom(32)).decode()) + "\n")
    p.chmod(0o600)
    return p


class Agent:
    """A fastgateway-agent process with its own configuration."""

    def __init__(self, tmp, name, gw_port, ca, agent_id, secret, services, **extra):
        self.tmp = Path(tmp)
        self.name = name
        self.cfg_path = self.tmp / (name + ".json")
        self.log = self.tmp / (name + ".log")
        self.cfg = {
            "gateway": "wss://127.0.0.1:%d%s" % (gw_port, TUNNEL_PATH),
            "id": agent_id,
            "secretFile": str(secret),
            "tls": {"ca": ca, "serverName": "localhost"},
            "services": services,
            "reconnect": {"initialMs": 100, "maxMs": 1000, "jitter": 0.2},
            "heartbeatSeconds": 2,
            "graceSeconds": 2,
            "log": {"level": "info", "errorLog": str(self.log)},
        }
        self.cfg.update(extra)
        self.proc = None

    def start(self):
        self.cfg_path.write_text(json.dumps(self.cfg))
        self.proc = subprocess.Popen([str(AGENT), "-c", str(self.cfg_path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.tmp / (self.name + ".stderr"), "w"),
                                     start_new_session=True)
        _live_groups.add(self.proc.pid)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait(5)

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def logs(self):
        out = ""
        for p in (self.log, self.tmp / (self.name + ".stderr")):
            if p.exists():
                out += p.read_text()
        return out


@pytest.fixture
def agents():
    made = []

    def factory(*args, **kw):
        a = Agent(*args, **kw)
        made.append(a)
        return a.start()

    yield factory
    for a in made:
        a.stop()


def tunnel_config(tmp, port, tport, certs, agents_cfg, clusters, workers=2, routes=None,
                  **tunnels):
    """Clients on 127.0.0.1:port (plain); agents on 127.0.0.1:tport (TLS, acceptTunnels)."""
    if routes is None:
        routes = [{"id": "tun", "match": {"path": "/tunnel/{**rest}"}, "clusterId": "office-web",
                   "transforms": [{"PathRemovePrefix": "/tunnel"}]}]
    cfg = base_config(tmp, port, routes=routes, clusters=clusters, workers=workers)
    cfg["certificates"] = [{"id": "gw", "chain": certs["crt"], "key": certs["key"]}]
    cfg["servers"].append({"id": "agents", "listen": "127.0.0.1:%d" % tport,
                           "acceptTunnels": True, "tls": {"certificates": ["gw"]}})
    t = {"path": TUNNEL_PATH, "heartbeatSeconds": 2, "graceSeconds": 2, "agents": agents_cfg}
    t.update(tunnels)
    cfg["tunnels"] = t
    return cfg


def one_cluster(*dests):
    return [{"id": "office-web", "loadBalancingPolicy": "RoundRobin",
             "destinations": [dict(id=i, address=a, **kw) for i, a, kw in dests]}]


def tunnels_status(gw):
    return gw.status("show tunnels")


def agent_online(gw, agent_id):
    st = tunnels_status(gw)
    items = st.get("tunnels", st.get("agents", st)) if isinstance(st, dict) else st
    if isinstance(items, dict):
        items = list(items.values())
    for a in items:
        if a.get("id") == agent_id:
            return a.get("online", a.get("state") == "online")
    return False


def wait_online(gw, agent_id, timeout=10.0, online=True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if bool(agent_online(gw, agent_id)) == online:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("agent %s never became %s: %s" % (
        agent_id, "online" if online else "offline", tunnels_status(gw)))


def get(gw_port, path, timeout=10.0, **kw):
    return http_request("GET", "http://127.0.0.1:%d%s" % (gw_port, path), timeout=timeout, **kw)


@pytest.fixture
def setup(tmp_path, certs, gateway_factory, upstream_factory, agents):
    """One upstream, one agent `office` exposing it as `web`, a gateway with route /tunnel/."""
    def make(workers=2, upstream=None, **tunnels):
        up = upstream or upstream_factory()
        port, tport = free_port(), free_port()
        sec = secret_file(tmp_path, "office")
        cfg = tunnel_config(tmp_path, port, tport, certs,
                            [{"id": "office", "secretFile": str(sec)}],
                            one_cluster(("a", "tunnel://office/web", {})), workers=workers,
                            **tunnels)
        gw = gateway_factory(cfg)
        ag = agents(tmp_path, "office", tport, certs["ca"], "office", sec,
                    {"web": "http://127.0.0.1:%d" % up.port})
        wait_online(gw, "office")
        return gw, ag, up, port, tport, sec
    return make


def test_agents_server_requiring_client_certificates(tmp_path, certs, gateway_factory,
                                                      upstream_factory, agents):
    """An acceptTunnels server with tls.clientAuth "required": an agent without a client
    certificate never gets past the TLS handshake (the gateway logs why); with tls.certificate
    and tls.key it comes online and serves, its secret still checked as always."""
    from test_client_auth import ClientPKI
    (tmp_path / "pki").mkdir()
    pki = ClientPKI(tmp_path / "pki")
    up = upstream_factory()
    port, tport = free_port(), free_port()
    sec = secret_file(tmp_path, "office")
    cfg = tunnel_config(tmp_path, port, tport, certs, [{"id": "office", "secretFile": str(sec)}],
                        one_cluster(("a", "tunnel://office/web", {})))
    cfg["servers"][1]["tls"]["clientAuth"] = {"mode": "required", "caFile": pki.ca}
    gw = gateway_factory(cfg)
    services = {"web": "http://127.0.0.1:%d" % up.port}
    bare = agents(tmp_path, "bare", tport, certs["ca"], "office", sec, services)
    deadline = time.monotonic() + 10
    while "no client certificate" not in gw.error_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "no client certificate" in gw.error_log(), gw.error_log()[-2000:]
    assert not agent_online(gw, "office")
    bare.stop()
    agents(tmp_path, "office", tport, certs["ca"], "office", sec, services,
           tls={"ca": certs["ca"], "serverName": "localhost", "certificate": pki.alice["crt"],
                "key": pki.alice["key"]})
    wait_online(gw, "office")
    status, _, body = get(port, "/tunnel/with-cert")
    assert status == 200 and json.loads(body)["path"] == "/with-cert", body


def test_http_through_the_tunnel(setup):
    gw, ag, up, port, tport, _ = setup()
    for _ in range(20):  # every worker, whichever holds the agent
        status, headers, body = get(port, "/tunnel/hello?x=1")
        assert status == 200, body
        echo = json.loads(body)
        assert echo["path"] == "/hello" and echo["query"] == "x=1"
        names = [h[0].lower() for h in echo["headers"]]
        assert "fg-tunnel-service" not in names, "the service field reached the destination"
    status, _, body = http_request("POST", "http://127.0.0.1:%d/tunnel/up" % port,
                                   body=b"payload" * 1000)
    assert status == 200 and json.loads(body)["bodyLength"] == 7000


def _host_at_service(port):
    status, _, body = get(port, "/tunnel/h")
    assert status == 200, body
    return [v for n, v in json.loads(body)["headers"] if n.lower() == "host"]


def test_destination_host_names_the_service_host(tmp_path, certs, gateway_factory,
                                                 upstream_factory, agents):
    """A tunnel destination's "host" is the Host the service behind the agent gets, on every
    worker (a request on a worker without the agent's connection hops first)."""
    up = upstream_factory()
    port, tport = free_port(), free_port()
    sec = secret_file(tmp_path, "branch")
    cfg = tunnel_config(tmp_path, port, tport, certs,
                        [{"id": "branch", "secretFile": str(sec)}],
                        one_cluster(("a", "tunnel://branch/web", {"host": "app.internal"})))
    gw = gateway_factory(cfg)
    agents(tmp_path, "branch", tport, certs["ca"], "branch", sec,
           {"web": "http://127.0.0.1:%d" % up.port})
    wait_online(gw, "branch")
    for _ in range(20):
        assert _host_at_service(port) == ["app.internal"]



def _host_gateway(tmp_path, certs, gateway_factory, agents, service, dest=None, transforms=(),
                  server=None):
    """A two-worker gateway whose route /tunnel/ goes to tunnel://office/web (dest: the
    destination's extra keys, transforms: the route's beyond PathRemovePrefix), and agent
    office serving web at the address service. Returns the gateway's client port."""
    port, tport = free_port(), free_port()
    sec = secret_file(tmp_path, "office")
    routes = [{"id": "tun", "match": {"path": "/tunnel/{**rest}"}, "clusterId": "office-web",
               "transforms": [{"PathRemovePrefix": "/tunnel"}] + list(transforms)}]
    cfg = tunnel_config(tmp_path, port, tport, certs, [{"id": "office", "secretFile": str(sec)}],
                        one_cluster(("a", "tunnel://office/web", dest or {})), routes=routes)
    cfg["servers"][0].update(server or {})
    gw = gateway_factory(cfg)
    agents(tmp_path, "office", tport, certs["ca"], "office", sec, {"web": service})
    wait_online(gw, "office")
    return port


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["literal", "name"])
def test_service_gets_its_own_authority_as_host_by_default(tmp_path, certs, gateway_factory,
                                                           upstream_factory, agents, host):
    """With no destination "host" and no RequestHeaderOriginalHost, the service behind the
    agent gets its own authority, host:port of its address in the agent's file (RFC 9110 7.2),
    as an http:// destination does: not the agent's id, nor the gateway's placeholder. A name
    (resolved by the agent) stays the name. On every worker (a request may hop first)."""
    up = upstream_factory()
    port = _host_gateway(tmp_path, certs, gateway_factory, agents,
                         "http://%s:%d" % (host, up.port))
    for _ in range(20):
        assert _host_at_service(port) == ["%s:%d" % (host, up.port)]


def test_original_host_reaches_the_service_through_the_tunnel(tmp_path, certs, gateway_factory,
                                                             upstream_factory, agents):
    """RequestHeaderOriginalHost on the gateway's route: the client's Host reaches the service,
    also over a destination "host" (docs/config.md, transforms)."""
    up = upstream_factory()
    port = _host_gateway(tmp_path, certs, gateway_factory, agents,
                         "http://127.0.0.1:%d" % up.port, dest={"host": "app.internal"},
                         transforms=[{"RequestHeaderOriginalHost": True}])
    for _ in range(20):
        status, _, body = get(port, "/tunnel/h", headers={"Host": "shop.example:8080"})
        assert status == 200, body
        assert [v for n, v in json.loads(body)["headers"] if n.lower() == "host"] == \
            ["shop.example:8080"]


def test_the_tunnel_path_never_reaches_a_destination(setup):
    gw, ag, up, port, tport, _ = setup()
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", tport), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % TUNNEL_PATH.encode())
            line = s.recv(4096).split(b"\r\n", 1)[0]
    assert line.split()[1] in (b"400", b"426"), line
    status, _, body = get(port, "/tunnel/__count")
    assert TUNNEL_PATH not in json.loads(body)


def test_websocket_through_the_tunnel(setup, upstream_factory):
    """RFC 8441 inside the tunnel: the gateway sends the client's Upgrade as an extended
    CONNECT stream to the agent, which makes it an HTTP/1.1 Upgrade to its local service."""
    websockets = pytest.importorskip("websockets")
    wsport = free_port()
    proc = subprocess.Popen([sys.executable, str(WS_ECHO), str(wsport)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _live_groups.add(proc.pid)
    try:
        deadline = time.monotonic() + 10
        while not _port_open(wsport, 0.2):
            assert time.monotonic() < deadline
            time.sleep(0.02)

        class WsUp:
            port = wsport
        gw, ag, up, port, tport, _ = setup(upstream=WsUp)
        big = os.urandom(2 * MiB)

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/tunnel/echo" % port, max_size=None,
                                          ping_interval=None, compression=None) as ws:
                for i in range(50):
                    await ws.send("message %d" % i)
                    assert await ws.recv() == "message %d" % i
                await ws.send(big)
                assert await ws.recv() == big
        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        _kill_group(proc.pid)


def test_large_download_and_upload(setup, tmp_path):
    gw, ag, up, port, tport, _ = setup()
    n = 64 * MiB
    out = subprocess.run(["curl", "-sS", "--max-time", "120", "-o", "/dev/null", "-w",
                          "%{http_code} %{size_download}",
                          "http://127.0.0.1:%d/tunnel/bytes/%d" % (port, n)],
                         capture_output=True, text=True, timeout=150)
    assert out.stdout == "200 %d" % n, out.stderr
    f = tmp_path / "upload.bin"
    data = os.urandom(32 * MiB)
    f.write_bytes(data)
    out = subprocess.run(["curl", "-sS", "--max-time", "120", "--data-binary", "@%s" % f,
                          "http://127.0.0.1:%d/tunnel/upload" % port],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    echo = json.loads(out.stdout)
    assert echo["bodyLength"] == len(data)
    assert echo["bodySha256"] == hashlib.sha256(data).hexdigest()


def test_1000_concurrent_streams(setup):
    if shutil.which("h2load") is None:
        pytest.skip("needs h2load")
    gw, ag, up, port, tport, _ = setup()
    # 10 client connections x 100 requests each, all waiting 300 ms at the destination: about
    # 1,000 requests are in flight through the tunnel at once
    out = subprocess.run(["h2load", "--h1", "-n", "1000", "-c", "1000", "-t", "2",
                          "http://127.0.0.1:%d/tunnel/slow?ms=300" % port],
                         capture_output=True, text=True, timeout=120)
    assert "1000 succeeded" in out.stdout and "0 failed" in out.stdout, out.stdout[-800:]
    assert "status codes: 1000 2xx" in out.stdout, out.stdout[-800:]


# ---- authentication ----

def _ws_connect(tport):
    """A raw WebSocket client to the tunnel path: (ssl socket, the first text message)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport), timeout=5),
                        server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n" % (TUNNEL_PATH, key))
              .encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        assert d, "closed during the upgrade"
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def _read_frame(s, buf):
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7f
            off = 2
            if n == 126:
                if len(buf) < 4:
                    n = None
                else:
                    n = int.from_bytes(buf[2:4], "big")
                    off = 4
            if n is not None and len(buf) >= off + n:
                return buf[0] & 0x0f, buf[off:off + n], buf[off + n:]
        d = s.recv(4096)
        if not d:
            return None, b"", b""
        buf += d


def _send_text(s, text):
    p = text.encode()
    key = os.urandom(4)
    hdr = bytes([0x81, 0x80 | len(p)]) if len(p) < 126 else \
        bytes([0x81, 0x80 | 126]) + len(p).to_bytes(2, "big")
    s.sendall(hdr + key + bytes(b ^ key[i & 3] for i, b in enumerate(p)))


def _handshake(tport, agent_id, secret, proof_for=None):
    """Run the handshake by hand; returns (opcode, payload) of the gateway's answer and the
    AUTH line sent."""
    s, buf = _ws_connect(tport)
    op, msg, buf = _read_frame(s, buf)
    assert op == 1 and msg.startswith(b"FGT/1 CHALLENGE "), msg
    nonce = msg.split()[2].decode()
    proof = hmac.new(secret, ("FGT/1\n%s\n%s" % (nonce, agent_id)).encode(),
                     hashlib.sha256).hexdigest()
    line = proof_for or "FGT/1 AUTH %s %s" % (agent_id, proof)
    _send_text(s, line)
    op, msg, buf = _read_frame(s, buf)
    s.close()
    return op, msg, line


def test_concurrent_requests_keep_their_own_fields(setup):
    """Many requests in flight on one tunnel connection, each with fields of its own (and of
    its own lengths): each reaches the destination with exactly its own path, query and fields,
    whichever requests the gateway submitted and sent with it."""
    import http.client
    gw, ag, up, port, tport, _ = setup(workers=1)
    errors = []

    def client(t):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in range(25):
                probe = "%d-%d-%s" % (t, i, "z" * ((t * 7 + i * 13) % 300))
                extra = {"X-Probe-%d" % (i % 5): "v" * (i % 40 + 1)}
                conn.request("GET", "/tunnel/p/%d/%d?q=%s" % (t, i, probe[:20]),
                             headers=dict({"X-Probe": probe, "User-Agent": "t%d" % t}, **extra))
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors.append((t, i, resp.status, body[:200]))
                    continue
                echo = json.loads(body)
                got = {n.lower(): v for n, v in echo["headers"]}
                want = {"x-probe": probe, "user-agent": "t%d" % t}
                want.update({k.lower(): v for k, v in extra.items()})
                if (echo["path"] != "/p/%d/%d" % (t, i) or echo["query"] != "q=" + probe[:20]
                        or any(got.get(k) != v for k, v in want.items())):
                    errors.append((t, i, echo))
        except Exception as e:  # a torn connection is a failure of its own
            errors.append((t, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(48)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:3]


def test_auth_failures(setup, tmp_path):
    gw, ag, up, port, tport, sec = setup()
    secret = sec.read_text().strip().encode()
    # the right secret by hand works (and takes over from the agent, which comes back)
    op, msg, good_line = _handshake(tport, "office", secret)
    assert op == 1 and msg.startswith(b"FGT/1 OK"), msg
    # wrong secret
    op, msg, _ = _handshake(tport, "office", b"not-the-secret-at-all-0123456789")
    assert op == 8 and int.from_bytes(msg[:2], "big") == 1008, (op, msg)
    # the good answer replayed on a new connection (a new nonce)
    op, msg, _ = _handshake(tport, "office", secret, proof_for=good_line)
    assert op == 8 and int.from_bytes(msg[:2], "big") == 1008, (op, msg)
    # an unknown agent, even with a well-formed proof
    op, msg, _ = _handshake(tport, "nobody", secret)
    assert op == 8 and int.from_bytes(msg[:2], "big") == 1008, (op, msg)
    log = gw.error_log()
    assert secret.decode() not in log and good_line.split()[-1] not in log
    assert log.count("authentication failed") >= 3 or log.count("auth") >= 3, log[-2000:]
    wait_online(gw, "office")
    assert get(port, "/tunnel/after")[0] == 200


def test_auth_failures_are_rate_limited(setup):
    gw, ag, up, port, tport, sec = setup(authFailuresPerMinute=3)
    codes = []
    for _ in range(6):
        try:
            op, msg, _ = _handshake(tport, "office", b"wrong-secret-0123456789abcdef")
            codes.append(int.from_bytes(msg[:2], "big") if op == 8 else op)
        except AssertionError as e:  # refused before the upgrade
            codes.append(str(e)[:40])
    assert codes[:3] == [1008, 1008, 1008], codes
    assert all(c != 1008 for c in codes[4:]), codes  # refused without a challenge


# ---- liveness ----

def test_agent_killed_then_restarted(setup):
    gw, ag, up, port, tport, _ = setup()
    assert get(port, "/tunnel/a")[0] == 200
    ag.kill(signal.SIGKILL)
    t0 = time.monotonic()
    wait_online(gw, "office", online=False, timeout=5)
    status, _, _ = get(port, "/tunnel/b", timeout=5)
    assert status in (502, 503) and time.monotonic() - t0 < 5
    t1 = time.monotonic()
    status, _, _ = get(port, "/tunnel/c", timeout=5)
    assert status in (502, 503) and time.monotonic() - t1 < 1.0
    ag.start()
    wait_online(gw, "office", timeout=10)
    assert get(port, "/tunnel/d")[0] == 200


def test_heartbeat_loss_closes_the_tunnel(setup):
    gw, ag, up, port, tport, _ = setup()
    assert get(port, "/tunnel/a")[0] == 200
    ag.kill(signal.SIGSTOP)
    try:
        # heartbeat 2 s + grace 2 s: the gateway gives up on the silent agent
        wait_online(gw, "office", online=False, timeout=8)
        t0 = time.monotonic()
        status, _, _ = get(port, "/tunnel/b", timeout=5)
        assert status in (502, 503) and time.monotonic() - t0 < 1.0
    finally:
        ag.kill(signal.SIGCONT)
    wait_online(gw, "office", timeout=15)
    assert get(port, "/tunnel/c")[0] == 200


def _load(port, stop, results):
    while not stop.is_set():
        try:
            status, _, _ = get(port, "/tunnel/load", timeout=10)
        except Exception as e:  # noqa: BLE001 - every failure counts
            status = repr(e)
        results.append(status)


@contextlib.contextmanager
def under_load(port, clients=4):
    """GET /tunnel/load from `clients` threads while the block runs; yields their statuses (or
    the exceptions' repr), complete once the block ended."""
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_load, args=(port, stop, results)) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def test_reloads_under_load_lose_nothing(setup):
    gw, ag, up, port, tport, _ = setup()
    with under_load(port) as results:
        for _ in range(20):
            gw.reload()
            time.sleep(0.3)
    bad = [r for r in results if r != 200]
    assert len(results) > 100 and not bad, (len(results), bad[:10])
    assert "office" in json.dumps(tunnels_status(gw))


def test_gateway_restart_agent_returns(setup, gateway_factory):
    gw, ag, up, port, tport, _ = setup()
    cfg = gw.config
    gw.stop()
    gw2 = gateway_factory(cfg)
    wait_online(gw2, "office", timeout=10)  # backoff capped at 1 s
    assert get(port, "/tunnel/back")[0] == 200


def test_two_agents_share_a_cluster_with_weights(tmp_path, certs, gateway_factory,
                                                 upstream_factory, agents):
    up1, up2 = upstream_factory(), upstream_factory()
    port, tport = free_port(), free_port()
    s1, s2 = secret_file(tmp_path, "office"), secret_file(tmp_path, "branch")
    cfg = tunnel_config(tmp_path, port, tport, certs,
                        [{"id": "office", "secretFile": str(s1)},
                         {"id": "branch", "secretFile": str(s2)}],
                        [{"id": "office-web", "loadBalancingPolicy": "RoundRobin",
                          "destinations": [
                              {"id": "a", "address": "tunnel://office/web", "weight": 3},
                              {"id": "b", "address": "tunnel://branch/web", "weight": 1}]}])
    gw = gateway_factory(cfg)
    a1 = agents(tmp_path, "office", tport, certs["ca"], "office", s1,
                {"web": "http://127.0.0.1:%d" % up1.port})
    agents(tmp_path, "branch", tport, certs["ca"], "branch", s2,
           {"web": "http://127.0.0.1:%d" % up2.port})
    wait_online(gw, "office")
    wait_online(gw, "branch")
    seen = {up1.port: 0, up2.port: 0}
    for i in range(200):
        status, _, body = get(port, "/tunnel/w%d" % i)
        assert status == 200
        seen[json.loads(body)["upstream"]] += 1
    assert 120 <= seen[up1.port] <= 180 and seen[up1.port] + seen[up2.port] == 200, seen
    a1.kill(signal.SIGKILL)
    wait_online(gw, "office", online=False, timeout=5)
    for i in range(20):
        status, _, body = get(port, "/tunnel/f%d" % i)
        assert status == 200 and json.loads(body)["upstream"] == up2.port


def test_agent_idle_memory_is_small(setup):
    """The agent's own memory once idle after traffic: RssAnon (its heap, stacks and buffers).
    VmRSS adds the shared libraries' resident pages (libcrypto alone maps about 4 MiB of them
    over TLS), which docs/tunnels.md reports beside it."""
    if AGENT.exists() and b"__asan_init" in AGENT.read_bytes():
        pytest.skip("a sanitizer build's memory is the sanitizer's")
    gw, ag, up, port, tport, _ = setup()
    for _ in range(50):
        get(port, "/tunnel/warm")
    time.sleep(0.5)
    with open("/proc/%d/status" % ag.proc.pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    anon = int(fields["RssAnon"].split()[0])
    assert anon <= 2048, "RssAnon %d KiB, VmRSS %s" % (anon, fields["VmRSS"].strip())


def _smaps_top(pid, n=8):
    """The n mappings with the most resident KiB, for a failure message."""
    rows, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if not head[0].endswith(":"):
                cur = head[5] if len(head) > 5 else "[anon]"
            elif head[0] == "Rss:" and int(head[1]) > 0:
                rows.append((int(head[1]), cur))
    rows.sort(reverse=True)
    return ", ".join("%s %d KiB" % (name, kb) for kb, name in rows[:n])


def test_agent_idle_vmrss_within_8_mib(setup):
    """The agent's whole footprint as `make bench` reads it: VmRSS once online over TLS
    (wss://, the CA checked) after traffic has come and gone. It counts the shared libraries'
    resident pages too, so what the agent makes resident at start-up (OpenSSL's initialisation,
    relocations) counts as well as its heap."""
    if AGENT.exists() and b"__asan_init" in AGENT.read_bytes():
        pytest.skip("a sanitizer build's memory is the sanitizer's")
    gw, ag, up, port, tport, _ = setup()
    for _ in range(50):
        assert get(port, "/tunnel/warm")[0] == 200
    time.sleep(1.0)
    rss = ag.rss_kb()
    print("agent VmRSS idle over wss://: %d KiB" % rss)
    assert 0 < rss <= 8192, "VmRSS %d KiB: %s" % (rss, _smaps_top(ag.proc.pid))



def _raw_status(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("client_host", ["fg-tunnel.invalid", "FG-Tunnel.Invalid",
                                         "fg-tunnel.invalid:8080", "fg-tunnel.invalid."])
def test_client_host_cannot_pass_for_the_placeholder(tmp_path, certs, gateway_factory,
                                                     upstream_factory, agents, client_host):
    """With RequestHeaderOriginalHost the client's Host goes to the service as it came; a Host
    the agent would read as the gateway's placeholder (any case, port or trailing dot) would
    be replaced by the service's own authority, so that a client could reach the service's
    internal name and learn its address: the gateway answers 400 instead (RFC 6761 6.4), also
    for an absolute-form target (RFC 9112 3.2.2: its authority is the Host), and the service
    sees nothing. Other Hosts still pass as they came."""
    up = upstream_factory()
    port = _host_gateway(tmp_path, certs, gateway_factory, agents,
                         "http://127.0.0.1:%d" % up.port,
                         transforms=[{"RequestHeaderOriginalHost": True}],
                         server={"http2": {"h2c": True}})
    for _ in range(4):  # every worker, whichever holds the agent
        status, _, body = get(port, "/tunnel/h", headers={"Host": client_host})
        assert status == 400, body
        if shutil.which("curl"):  # HTTP/2: the Host field becomes :authority (RFC 9113 8.3.1)
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} "
                                  "%{http_code}", "--http2-prior-knowledge", "-H",
                                  "Host: " + client_host, "http://127.0.0.1:%d/tunnel/h" % port],
                                 capture_output=True, text=True, timeout=10).stdout
            assert out == "2 400", out
        status, raw = _raw_status(port, b"GET http://%s/tunnel/h HTTP/1.1\r\nHost: shop.example"
                                  b"\r\nConnection: close\r\n\r\n" % client_host.encode())
        assert status == 400, raw
    status, _, body = get(port, "/tunnel/__count")
    assert status == 200 and "/h" not in json.loads(body), body
    status, _, body = get(port, "/tunnel/h", headers={"Host": "fg-tunnel.example"})
    assert status == 200, body
    assert [v for n, v in json.loads(body)["headers"] if n.lower() == "host"] == \
        ["fg-tunnel.example"]


class _V6HostEcho:
    """An HTTP/1.1 server on [::1] answering each request with the Host fields it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        with c:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                hosts = [l.split(b":", 1)[1].strip().decode()
                         for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"host:")]
                body = json.dumps(hosts).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def test_ipv6_literal_service_gets_a_bracketed_host(tmp_path, certs, gateway_factory, agents):
    """A service at an IPv6 literal gets its authority with the brackets (RFC 3986 3.2.2,
    RFC 9110 7.2), with its port, or without one at the scheme's default."""
    try:
        srv = _V6HostEcho()
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = _host_gateway(tmp_path, certs, gateway_factory, agents, "http://[::1]:%d" % srv.port)
    for _ in range(4):
        status, _, body = get(port, "/tunnel/h")
        assert status == 200, body
        assert json.loads(body) == ["[::1]:%d" % srv.port]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["literal", "name"])
def test_service_on_the_default_port_gets_its_host_without_port(tmp_path, certs, gateway_factory,
                                                                  upstream_factory, agents, host):
    """A service written with the scheme's default port (http://NAME:80) gets the normal form
    of its authority, without the port (RFC 9110 4.2.3), as a gateway's http:// destination
    does: for an address literal and for a name the agent resolves alike."""
    if os.geteuid() != 0:
        pytest.skip("port 80 needs root")
    try:
        up = upstream_factory(80)
    except Exception:
        pytest.skip("port 80 is taken")
    port = _host_gateway(tmp_path, certs, gateway_factory, agents, "http://%s:80" % host)
    for _ in range(4):
        assert _host_at_service(port) == [host]
