"""Tunnels, the gateway's side (docs/tunnels.md): agents connect by WebSocket to the tunnel
path of a server with acceptTunnels, authenticate (CHALLENGE/AUTH/OK), and serve
tunnel://AGENT/SERVICE destinations over HTTP/2 inside the tunnel. The agent here is
tests/integration/tunnel_agent.py (python3-h2 + websockets) in its own process, forwarding to
real upstreams (upstream.py)."""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import _kill_group, _live_groups, base_config, free_port, http_get, http_request
from peers import ca_signed_cert

AGENT = Path(__file__).resolve().parent / "tunnel_agent.py"
TUNNEL_PATH = "/_fg/tunnel"


def secret_file(tmp_path, name, value=None):
    p = Path(tmp_path) / ("%s.key" % name)
    p.write_text(value or ("s3cret-of-%s-0123456789abcdef" % name))
    os.chmod(p, 0o600)
    return p


def tunnel_config(tmp_path, port, agents, dests, workers=2, heartbeat=30, grace=10, fails=10,
                  failover=False):
    """A gateway with the tunnel path on its server and /tunnel/{**rest} -> cluster "tun"."""
    clusters = [{"id": "tun", "loadBalancingPolicy": "RoundRobin", "destinations": dests}]
    if failover:
        clusters[0]["failover"] = {"enabled": True}
    routes = [{"id": "tun", "match": {"path": "/tunnel/{**rest}"}, "clusterId": "tun",
               "transforms": [{"PathRemovePrefix": "/tunnel"}]},
              {"id": "any", "match": {"path": "/{**rest}"},
               "direct": {"status": 200, "body": "route"}}]
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=workers)
    cfg["servers"][0]["acceptTunnels"] = True
    cfg["tunnels"] = {"heartbeatSeconds": heartbeat, "graceSeconds": grace,
                      "authFailuresPerMinute": fails,
                      "agents": [{"id": a, "secretFile": str(secret_file(tmp_path, a))}
                                 for a in agents]}
    return cfg


class Agent:
    """tunnel_agent.py in its own process group; its stdout lines are read by a thread."""

    def __init__(self, gw_port, agent_id, secret, services, *extra):
        self.cmd = [sys.executable, str(AGENT), "--gateway",
                    "ws://127.0.0.1:%d%s" % (gw_port, TUNNEL_PATH), "--id", agent_id,
                    "--secret-file", str(secret)]
        for name, url in services.items():
            self.cmd += ["--service", "%s=%s" % (name, url)]
        self.cmd += list(extra)
        self.lines = []
        self.cond = threading.Condition()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     text=True)
        _live_groups.add(self.proc.pid)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait_line(self, prefix, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if l.startswith(prefix)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("agent never said %r (%d); said %r" %
                                         (prefix, count, self.lines))
                self.cond.wait(left)
        return [l for l in self.lines if l.startswith(prefix)][count - 1]

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            _kill_group(self.proc.pid)
            self.proc.wait(5)
        _live_groups.discard(self.proc.pid)


@pytest.fixture
def agents():
    started = []

    def factory(*a, **kw):
        ag = Agent(*a, **kw)
        started.append(ag)
        return ag.start()

    yield factory
    for ag in started:
        try:
            ag.stop()
        except Exception:
            pass


def get(gw, path, timeout=5, **kw):
    return http_request("GET", gw.url(path), timeout=timeout, **kw)


def tunnels(gw):
    return {a["id"]: a for a in gw.status("show tunnels")["agents"]}


def wait_online(gw, agent_id, online=True, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tunnels(gw)[agent_id]["online"] == online:
            return tunnels(gw)[agent_id]
        time.sleep(0.05)
    raise AssertionError("agent %s never %s: %r" % (agent_id, online, tunnels(gw)))


@pytest.fixture
def one(gateway_factory, upstream_factory, agents, tmp_path):
    """A gateway with agent "office" serving web -> an echo upstream."""
    up = upstream_factory()
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}])
    gw = gateway_factory(cfg)
    ag = agents(port, "office", Path(tmp_path) / "office.key", {"web": up.url})
    ag.wait_line("online")
    wait_online(gw, "office")
    return gw, ag, up, tmp_path


def test_http_through_the_tunnel(one):
    gw, ag, up, _ = one
    st, hdrs, body = get(gw, "/tunnel/hello?x=1", headers={"X-Test": "yes"})
    assert st == 200, body
    doc = json.loads(body)
    assert doc["path"] == "/hello" and doc["query"] == "x=1"
    names = {n.lower(): v for n, v in doc["headers"]}
    assert names["x-test"] == "yes"
    # the service field is the gateway's business: the agent consumed it, the upstream never
    # sees it
    assert "fg-tunnel-service" not in names
    t = tunnels(gw)["office"]
    assert t["online"] and t["connects"] == 1 and t["bytesIn"] > 0 and t["bytesOut"] > 0
    assert t["worker"]["pid"] in [w["pid"] for w in gw.workers()]
    assert "rttUs" in t and "connectedSince" in t


def test_client_cannot_choose_the_service(one, upstream_factory):
    gw, ag, up, _ = one
    # a client's own fg-tunnel-service field is replaced by the destination's
    st, _, body = get(gw, "/tunnel/x", headers={"fg-tunnel-service": "other"})
    assert st == 200 and json.loads(body)["upstream"] == up.port


def test_tunnel_path_never_reaches_a_route(one):
    gw, ag, up, _ = one
    st, hdrs, body = get(gw, TUNNEL_PATH)
    assert st == 426 and body != b"route"
    st, _, body = http_request("POST", gw.url(TUNNEL_PATH), body=b"x")
    assert st == 426 and body != b"route"
    # the upgrade of a plain WebSocket client (no tunnel subprotocol) is refused too
    st, _, body = get(gw, TUNNEL_PATH, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert st == 400 and body != b"route"


def test_large_upload_and_download(one):
    gw, ag, up, _ = one
    st, _, body = get(gw, "/tunnel/bytes/%d" % (8 << 20), timeout=30)
    assert st == 200 and len(body) == 8 << 20 and body == b"x" * (8 << 20)
    payload = os.urandom(4 << 20)
    st, _, body = http_request("POST", gw.url("/tunnel/up"), body=payload, timeout=30)
    doc = json.loads(body)
    import hashlib
    assert st == 200 and doc["bodyLength"] == len(payload)
    assert doc["bodySha256"] == hashlib.sha256(payload).hexdigest()


def test_many_concurrent_streams(one):
    gw, ag, up, _ = one
    results = []
    lock = threading.Lock()

    def worker(n):
        for i in range(n):
            try:
                st, _, _ = get(gw, "/tunnel/c%d" % i, timeout=30)
            except Exception as e:  # noqa: BLE001 (counted as a failure)
                st = repr(e)
            with lock:
                results.append(st)

    threads = [threading.Thread(target=worker, args=(5,)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(200) == 200, [r for r in results if r != 200][:5]
    deadline = time.monotonic() + 5
    while tunnels(gw)["office"]["streams"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tunnels(gw)["office"]["streams"] == 0


def test_offline_agent_answers_at_once(one):
    gw, ag, up, _ = one
    ag.stop()
    wait_online(gw, "office", online=False)
    t0 = time.monotonic()
    st, _, _ = get(gw, "/tunnel/x")
    assert st in (502, 503) and time.monotonic() - t0 < 1.0


def test_agent_killed_then_back(one, agents):
    gw, ag, up, tmp = one
    ag.signal(signal.SIGKILL)
    wait_online(gw, "office", online=False)
    ag2 = agents(gw.port, "office", Path(tmp) / "office.key", {"web": up.url})
    ag2.wait_line("online")
    wait_online(gw, "office")
    st, _, _ = get(gw, "/tunnel/back")
    assert st == 200
    assert tunnels(gw)["office"]["connects"] == 2


def test_auth_failures(gateway_factory, agents, tmp_path):
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], fails=3)
    gw = gateway_factory(cfg)
    good = Path(tmp_path) / "office.key"
    # a proof seen once, replayed on a new connection (fresh nonce): worthless
    first = agents(port, "office", good, {}, "--once", "--print-proof")
    proof = first.wait_line("proof").split()[1]
    first.wait_line("online")
    first.stop()
    wait_online(gw, "office", online=False)
    replay = agents(port, "office", good, {}, "--once", "--proof", proof)
    assert replay.wait_line("refused") == "refused 1008"
    wrong = secret_file(tmp_path, "wrong", "not-the-secret-0123456789")
    bad = agents(port, "office", wrong, {}, "--once")
    assert bad.wait_line("refused") == "refused 1008"
    unknown = agents(port, "nobody", good, {}, "--once")
    assert unknown.wait_line("refused") == "refused 1008"
    log = gw.error_log()
    assert 'for agent "office": wrong proof' in log
    assert 'for agent "nobody": unknown agent' in log
    assert proof not in log and "s3cret" not in log
    assert tunnels(gw)["office"]["authFailures"] == 2
    # 3 failures this minute: the next upgrade from this address is refused before a challenge
    st, hdrs, _ = get(gw, TUNNEL_PATH, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": "fastgateway-tunnel.v1"})
    assert st == 429
    status = json.dumps(gw.status("show tunnels"))
    assert "s3cret" not in status and proof not in status


def test_takeover_after_auth_is_logged(one, agents):
    gw, ag, up, tmp = one
    first = tunnels(gw)["office"]["connection"]
    ag2 = agents(gw.port, "office", Path(tmp) / "office.key", {"web": up.url})
    ag2.wait_line("online")
    deadline = time.monotonic() + 5
    while tunnels(gw)["office"]["connection"] == first and time.monotonic() < deadline:
        time.sleep(0.05)
    t = tunnels(gw)["office"]
    assert t["connection"] != first and t["takeovers"] == 1
    assert "takes over from connection %d" % first in gw.error_log()
    # the old tunnel had no stream: it is closed
    ag.wait_line("closed")
    assert get(gw, "/tunnel/after")[0] == 200


def one_second_heartbeats(gateway_factory, upstream_factory, agents, tmp_path):
    """A gateway and an agent "office" online, both with heartbeats of 1 s and a grace of 1 s."""
    up = upstream_factory()
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], heartbeat=1, grace=1)
    gw = gateway_factory(cfg)
    ag = agents(port, "office", Path(tmp_path) / "office.key", {"web": up.url},
                "--heartbeat", "1")
    ag.wait_line("online")
    wait_online(gw, "office")
    return gw, ag


def test_heartbeat_loss_closes_the_tunnel(gateway_factory, upstream_factory, agents, tmp_path):
    gw, ag = one_second_heartbeats(gateway_factory, upstream_factory, agents, tmp_path)
    time.sleep(1.5)  # pings flow: still online after more than one interval
    deadline = time.monotonic() + 1.5
    t = tunnels(gw)["office"]
    while t["rttUs"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        t = tunnels(gw)["office"]
    assert t["online"] and t["rttUs"] > 0 and t["lastHeartbeatAgoMs"] < 1500, t
    ag.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_online(gw, "office", online=False, timeout=6)
        assert time.monotonic() - t0 < 4.5  # interval + grace, and a tick
        assert "heartbeat" in gw.error_log()
        st, _, _ = get(gw, "/tunnel/x")
        assert st in (502, 503)
    finally:
        ag.signal(signal.SIGCONT)


def test_heartbeats_come_every_interval(gateway_factory, upstream_factory, agents, tmp_path):
    """The gateway pings each tunnel once per heartbeatSeconds: a tick that fires a little early
    still pings, rather than leaving the interval to the next tick (a ping every two seconds with
    a one-second heartbeat, which an agent with graceSeconds 1 takes for silence)."""
    gw, ag = one_second_heartbeats(gateway_factory, upstream_factory, agents, tmp_path)
    worst, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 6:
        worst = max(worst, tunnels(gw)["office"]["lastHeartbeatAgoMs"])
        time.sleep(0.05)
    assert worst < 1500, worst


def test_two_agents_weights_and_failover(gateway_factory, upstream_factory, agents, tmp_path):
    up1, up2 = upstream_factory(), upstream_factory()
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office", "branch"],
                        [{"id": "a", "address": "tunnel://office/web", "weight": 3},
                         {"id": "b", "address": "tunnel://branch/web", "weight": 1}])
    gw = gateway_factory(cfg)
    a1 = agents(port, "office", Path(tmp_path) / "office.key", {"web": up1.url})
    a2 = agents(port, "branch", Path(tmp_path) / "branch.key", {"web": up2.url})
    a1.wait_line("online")
    a2.wait_line("online")
    wait_online(gw, "office")
    wait_online(gw, "branch")
    seen = {up1.port: 0, up2.port: 0}
    for i in range(40):
        st, _, body = get(gw, "/tunnel/w%d" % i)
        assert st == 200
        seen[json.loads(body)["upstream"]] += 1
    assert seen == {up1.port: 30, up2.port: 10}
    # one agent gone: every request goes to the other, none fails
    a1.stop()
    wait_online(gw, "office", online=False)
    for i in range(10):
        st, _, body = get(gw, "/tunnel/f%d" % i)
        assert st == 200 and json.loads(body)["upstream"] == up2.port
    a2.stop()
    wait_online(gw, "branch", online=False)
    t0 = time.monotonic()
    st, _, _ = get(gw, "/tunnel/none")
    assert st == 503 and time.monotonic() - t0 < 1.0


def test_reload_moves_agents_without_failures(one):
    gw, ag, up, _ = one
    stop = threading.Event()
    results = []

    def load():
        while not stop.is_set():
            try:
                st, _, _ = get(gw, "/tunnel/load", timeout=10)
            except Exception as e:  # noqa: BLE001
                st = repr(e)
            results.append(st)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # FG_TEST_RELOADS: more reloads, for hunting a rare race in a loop
        for i in range(int(os.environ.get("FG_TEST_RELOADS", "10"))):
            gw.reload()
            ag.wait_line("online", count=i + 2, timeout=15)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    bad = [r for r in results if r != 200]
    assert results and not bad, (len(results), bad[:5], ag.lines)
    assert ag.lines.count("reconnect") >= 10
    t = tunnels(gw)["office"]
    assert t["online"] and t["worker"]["generation"] == gw.info()["generation"]


def test_hop_between_workers(one):
    gw, ag, up, _ = one
    holder = tunnels(gw)["office"]["worker"]["pid"]
    assert len(gw.workers()) == 2
    # Fresh connections: least-connections balancing sends them to the worker without the
    # agent's connection (the hop), the kernel's hash spreads them over both workers.
    for i in range(30):
        st, _, body = get(gw, "/tunnel/h%d" % i, headers={"fg-tunnel-hop": "office nope"})
        assert st == 200, body
        names = [n.lower() for n, _ in json.loads(body)["headers"]]
        # X-Forwarded-For added once (by the worker that took the request), no hop field
        assert names.count("x-forwarded-for") == 1 and "fg-tunnel-hop" not in names
    lines = gw.access_log(wait_for=60)
    hops = [l for l in lines if l.get("route") == "tunnel-hop"]
    public = [l for l in lines if l.get("route") == "tun"]
    assert len(public) == 30 and 0 < len(hops) <= 30, (len(public), len(hops))
    assert all(l["upstream"] == "tunnel://office/web" for l in public + hops)
    assert tunnels(gw)["office"]["worker"]["pid"] == holder


def test_hop_socket_refuses_a_request_without_destination(one):
    gw, ag, up, _ = one
    pid = tunnels(gw)["office"]["worker"]["pid"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0fastgateway-hop-%d" % pid)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    s.settimeout(5)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data[:100]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0fastgateway-hop-%d" % pid)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nfg-tunnel-hop: office other\r\n"
              b"Connection: close\r\n\r\n")
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 502")


def test_gateway_restart_agents_come_back(one):
    """A graceful stop (QUIT) with an agent online and a tunneled request in flight: the
    request completes, then the tunnel closes at once (there is no next generation to move it
    to), so the stop does not wait out shutdownTimeout (30 s by default). Then a start: the
    agent comes back."""
    gw, ag, up, _ = one
    http_get("%s/__set?delay=1000" % up.url)
    result = {}
    slow = threading.Thread(target=lambda: result.update(r=get(gw, "/tunnel/slow", timeout=10)))
    slow.start()
    time.sleep(0.3)  # the request is in the tunnel
    t0 = time.monotonic()
    assert gw.stop(graceful=True) == 0
    took = time.monotonic() - t0
    slow.join()
    assert result["r"][0] == 200, result
    assert took < 5, "the graceful stop took %.1f s" % took
    ag.wait_line("closed")
    http_get("%s/__set?delay=0" % up.url)
    gw.start()
    ag.wait_line("online", count=2, timeout=15)
    wait_online(gw, "office")
    assert get(gw, "/tunnel/again")[0] == 200


def test_agent_over_tls(gateway_factory, upstream_factory, agents, tmp_path):
    d = Path(tmp_path)
    ca_signed_cert(d, days=2)
    up = upstream_factory()
    port, tls_port = free_port(), free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}])
    cfg["servers"][0]["acceptTunnels"] = False
    cfg["certificates"] = [{"id": "c", "chain": str(d / "srv.crt"), "key": str(d / "srv.key")}]
    cfg["servers"].append({"id": "edge", "listen": "127.0.0.1:%d" % tls_port,
                           "acceptTunnels": True, "tls": {"certificates": ["c"]}})
    gw = gateway_factory(cfg)
    ag = Agent(port, "office", d / "office.key", {"web": up.url}, "--ca", str(d / "ca.crt"))
    ag.cmd[ag.cmd.index("--gateway") + 1] = "wss://localhost:%d%s" % (tls_port, TUNNEL_PATH)
    ag.start()
    try:
        ag.wait_line("online")
        wait_online(gw, "office")
        st, _, body = get(gw, "/tunnel/tls")
        assert st == 200 and json.loads(body)["path"] == "/tls"
        # the plain server has no tunnel path: the request goes to the routes
        assert get(gw, TUNNEL_PATH)[2] == b"route"
    finally:
        ag.stop()


@pytest.mark.parametrize("change,message", [
    (lambda c: c.pop("tunnels"), 'needs a top-level "tunnels" section'),
    (lambda c: c["clusters"][0]["destinations"][0].update(address="tunnel://ghost/web"),
     'no agent "ghost" in tunnels.agents'),
    (lambda c: c["clusters"][0]["destinations"][0].update(address="tunnel://office"),
     "is not tunnel://AGENT/SERVICE"),
    (lambda c: c["tunnels"]["agents"][0].update(id="bad id"), "tunnels.agents[0].id"),
    (lambda c: os.chmod(c["tunnels"]["agents"][0]["secretFile"], 0o644),
     "tunnels.agents[0].secretFile"),
    # the placeholder the agent replaces, set by the operator, would reach the service as the
    # gateway's own: refused at load, in any spelling the agent's router accepts
    (lambda c: c["clusters"][0]["destinations"][0].update(host="FG-Tunnel.Invalid.:8080"),
     "destinations[0].host: \"FG-Tunnel.Invalid.:8080\" is the tunnels' reserved placeholder"),
    (lambda c: c["routes"][0].setdefault("transforms", []).append(
        {"RequestHeader": "host", "Set": "fg-tunnel.invalid"}),
     "].Set: \"fg-tunnel.invalid\" is the tunnels' reserved placeholder"),
])
def test_config_errors(tmp_path, change, message):
    from conftest import BINARY
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}])
    change(cfg)
    f = Path(tmp_path) / "bad.json"
    f.write_text(json.dumps(cfg))
    r = subprocess.run([str(BINARY), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and message in (r.stdout + r.stderr), r.stdout + r.stderr
    # the secret never appears in an error
    assert "s3cret" not in r.stdout + r.stderr


def test_silent_service_times_out_on_activity_timeout(gateway_factory, upstream_factory, agents,
                                                      tmp_path):
    """The tunnel stays alive (heartbeats flow) while the service behind it never answers: the
    cluster's activityTimeout still ends the request with 504, and the tunnel serves on."""
    up = upstream_factory()
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], heartbeat=2, grace=2)
    cfg["clusters"][0]["httpRequest"] = {"activityTimeout": "1s"}
    gw = gateway_factory(cfg)
    ag = agents(port, "office", Path(tmp_path) / "office.key", {"web": up.url},
                "--heartbeat", "2")
    ag.wait_line("online")
    wait_online(gw, "office")
    t0 = time.monotonic()
    st, _, _ = get(gw, "/tunnel/slow?ms=6000", timeout=10)
    took = time.monotonic() - t0
    assert st == 504 and 0.9 < took < 5.0, (st, took)
    assert get(gw, "/tunnel/fine")[0] == 200
    assert tunnels(gw)["office"]["connects"] == 1


@pytest.mark.skipif(__import__("shutil").which("h2load") is None, reason="needs h2load")
def test_thousand_concurrent_streams(gateway_factory, upstream_factory, agents, tmp_path):
    """10 HTTP/2 clients with 100 streams each: 1,000 requests in flight at once, one tunnel
    (workers: 1, so they all ride the same connection to the agent)."""
    up = upstream_factory()
    port = free_port()
    cfg = tunnel_config(tmp_path, port, ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1)
    cfg["servers"][0]["http2"] = {"h2c": True, "maxConcurrentStreams": 100}
    gw = gateway_factory(cfg)
    ag = agents(port, "office", Path(tmp_path) / "office.key", {"web": up.url})
    ag.wait_line("online")
    wait_online(gw, "office")
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], tunnels(gw)["office"]["streams"])
            time.sleep(0.02)

    w = threading.Thread(target=watch)
    w.start()
    try:
        r = subprocess.run(["h2load", "-n", "2000", "-c", "10", "-m", "100",
                            gw.url("/tunnel/slow?ms=1000")],
                           capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        w.join()
    assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout[-800:]
    assert "status codes: 2000 2xx" in r.stdout, r.stdout[-800:]
    assert peak[0] > 500, peak[0]  # many streams were in flight together on the one tunnel
