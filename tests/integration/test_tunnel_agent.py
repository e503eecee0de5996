"""fastgateway-agent against a fake gateway (tunnel_fakegw.py) and real local upstreams.

The fake gateway accepts the agent's WebSocket upgrade, runs the tunnel handshake and sends
HTTP/2 requests (python3-h2) naming a service in fg-tunnel-service, as the gateway does.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from tunnel_fakegw import FakeGateway

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(os.environ.get("FG_AGENT_BINARY", REPO / "fastgateway-agent"))
SECRET = b"office-secret-0123456789abcdef"


def vmrss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class Agent:
    def __init__(self, tmp_path, gw_port, services, secret=SECRET, **top):
        self.dir = Path(tmp_path)
        self.key = self.dir / "office.key"
        self.key.write_bytes(secret + b"\n")
        self.key.chmod(0o600)
        self.log = self.dir / "agent.log"
        self.pid_file = self.dir / "agent.pid"
        self.conf = {
            "gateway": "ws://127.0.0.1:%d/_fg/tunnel" % gw_port,
            "id": "office",
            "secretFile": str(self.key),
            "services": services,
            "reconnect": {"initialMs": 100, "maxMs": 2000, "jitter": 0.3},
            "log": {"level": "info", "errorLog": str(self.log)},
            "pidFile": str(self.pid_file),
        }
        self.conf.update(top)
        self.file = self.dir / "agent.json"
        self.write()
        self.proc = None

    def write(self):
        self.file.write_text(json.dumps(self.conf))

    def start(self):
        self.proc = subprocess.Popen([str(AGENT), "-c", str(self.file)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def logs(self):
        return self.log.read_text() if self.log.exists() else ""

    def log_lines(self):
        return [json.loads(l) for l in self.logs().splitlines() if l.strip()]


@pytest.fixture
def fakegw():
    gws = []

    def make(**kw):
        gw = FakeGateway(free_port(), {"office": SECRET}, **kw)
        gws.append(gw)
        return gw

    yield make
    for gw in gws:
        gw.close()


@pytest.fixture
def agent_factory(tmp_path):
    agents = []

    def make(gw, services, **kw):
        a = Agent(tmp_path, gw.port, services, **kw)
        agents.append(a)
        return a.start()

    yield make
    for a in agents:
        a.stop()
        err = a.proc.stderr.read().decode(errors="replace") if a.proc else ""
        assert "Sanitizer" not in err and "runtime error" not in err, err


def test_http_get_post_through_the_tunnel(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    r = t.request("web", path="/hello/world?x=1", headers=[("x-client", "a")])
    assert r.status == 200
    echo = json.loads(bytes(r.body))
    assert echo["path"] == "/hello/world" and echo["query"] == "x=1"
    names = [k.lower() for k, _ in echo["headers"]]
    # the service field is for the agent alone; the gateway's Host travels as it is
    assert "fg-tunnel-service" not in names
    assert ["Host", "app.example"] in echo["headers"]
    assert ["x-client", "a"] in [[k.lower(), v] for k, v in echo["headers"]]
    body = b"posted " * 100
    r = t.request("web", method="POST", path="/submit", body=body)
    assert r.status == 200
    echo = json.loads(bytes(r.body))
    assert echo["method"] == "POST" and echo["body"] == body.decode()


def test_request_head_carries_no_credential(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    gw.wait_tunnels(1)
    head = gw.heads[0]
    assert SECRET not in head and b"office" not in head
    assert b"Sec-WebSocket-Protocol: fastgateway-tunnel.v1" in head


def test_large_upload_and_download(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    body = os.urandom(8 << 20)
    r = t.request("web", method="POST", path="/up", body=body, timeout=60)
    assert r.status == 200
    echo = json.loads(bytes(r.body))
    assert echo["bodyLength"] == len(body)
    assert echo["bodySha256"] == hashlib.sha256(body).hexdigest()
    r = t.request("web", path="/bytes/%d" % (16 << 20), timeout=60)
    assert r.status == 200 and len(r.body) == 16 << 20 and r.body[:1] == b"x"


def test_concurrent_streams(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    sids = [t.start_request("web", path="/slow?ms=300&i=%d" % i) for i in range(200)]
    got = [t.wait(s, timeout=60) for s in sids]
    assert [r.status for r in got] == [200] * 200
    queries = sorted(json.loads(bytes(r.body))["query"] for r in got)
    assert queries == sorted("ms=300&i=%d" % i for i in range(200))


def test_unknown_or_missing_service_is_502(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    for service in ("nope", "WEB", None):
        r = t.request(service, path="/x")
        assert r.status == 502, service
        assert bytes(r.body) == b"unknown tunnel service\n"
    assert t.request("web", path="/x").status == 200


def test_two_services(fakegw, agent_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = fakegw()
    agent_factory(gw, {"a": a.url, "b": {"address": b.url}})
    t = gw.wait_tunnels(1)
    assert json.loads(bytes(t.request("a", path="/").body))["upstream"] == a.port
    assert json.loads(bytes(t.request("b", path="/").body))["upstream"] == b.port


def test_wrong_secret_is_refused_and_retried(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url}, secret=b"not-the-right-secret-at-all")
    gw.wait_accepts(3, timeout=10)
    assert gw.auth_failures >= 2 and gw.tunnels == []
    time.sleep(0.2)
    logs = a.logs()
    assert "close 1008" in logs and "check the id and the secret" in logs
    assert "not-the-right-secret" not in logs and SECRET.decode() not in logs
    errors = [l for l in a.log_lines() if l["level"] == "error"]
    assert errors and all("retrying in" in l["msg"] for l in errors)


def test_reconnect_backoff_grows_to_the_cap(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    gw.on_auth = lambda t: False  # every tunnel closed right after OK
    agent_factory(gw, {"web": echo_upstream.url},
                  reconnect={"initialMs": 100, "maxMs": 800, "jitter": 0.25, "stableMs": 5000})
    acc = gw.wait_accepts(8, timeout=20)
    gaps = [b - a for a, b in zip(acc, acc[1:])]
    # base delays 100, 200, 400, 800, 800...: each gap is in [0.75 base, base] plus the
    # dial and handshake; generous margins for a shared machine
    bases = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8, 0.8]
    for gap, base in zip(gaps, bases):
        assert 0.75 * base - 0.02 <= gap <= base + 0.5, (gaps, base)


def test_backoff_resets_after_a_stable_tunnel(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    closes = {"n": 0}

    def first_few_fail(t):
        closes["n"] += 1
        return closes["n"] > 4  # four quick failures push the backoff up, then it stays up

    gw.on_auth = first_few_fail
    agent_factory(gw, {"web": echo_upstream.url},
                  reconnect={"initialMs": 100, "maxMs": 3000, "jitter": 0, "stableMs": 500})
    t = gw.wait_tunnels(1, timeout=20)
    time.sleep(1.0)  # longer than stableMs
    n = len(gw.accepts)
    killed = time.monotonic()
    t.kill()
    acc = gw.wait_accepts(n + 1, timeout=10)
    # after a stable tunnel the first retry waits initialMs, not the 1.6 s the failures reached
    assert acc[n] - killed < 1.0, acc[n] - killed


def test_reconnect_message_moves_to_a_new_tunnel(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url})
    t1 = gw.wait_tunnels(1)
    slow = t1.start_request("web", path="/slow?ms=1500")
    time.sleep(0.2)
    t1.send_text("FGT/1 RECONNECT")
    t2 = gw.wait_tunnels(2, timeout=5)
    # the new tunnel serves at once; the old one finishes its stream, then closes
    assert t2.request("web", path="/after").status == 200
    r = t1.wait(slow, timeout=10)
    assert r.status == 200
    assert t1.wait_closed(timeout=10)
    assert t1.goaway == 1  # the final GOAWAY names the stream it finished
    assert not t2.closed
    assert t2.request("web", path="/still").status == 200
    assert "RECONNECT" in a.logs()


def test_heartbeat_pings_and_silence_closes(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url}, heartbeatSeconds=1, graceSeconds=1)
    t = gw.wait_tunnels(1)
    time.sleep(2.5)
    assert t.pings >= 2 and not t.closed
    t.answer_pings = False  # the gateway goes silent
    assert t.wait_closed(timeout=6)
    gw.wait_tunnels(2, timeout=5)  # and the agent dials again
    assert "nothing heard from the gateway" in a.logs()


def test_sighup_reloads_the_services(fakegw, agent_factory, upstream_factory):
    up1, up2 = upstream_factory(), upstream_factory()
    gw = fakegw()
    a = agent_factory(gw, {"web": up1.url})
    t1 = gw.wait_tunnels(1)
    assert t1.request("api", path="/").status == 502
    a.conf["services"] = {"web": up1.url, "api": up2.url}
    a.write()
    a.signal(signal.SIGHUP)
    t2 = gw.wait_tunnels(2, timeout=5)
    r = t2.request("api", path="/")
    assert r.status == 200 and json.loads(bytes(r.body))["upstream"] == up2.port
    assert t1.wait_closed(timeout=10)
    # a broken file is refused and the running tunnel stays
    a.file.write_text("{")
    a.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert t2.request("api", path="/").status == 200
    assert "reload failed" in a.logs()


def test_sigterm_stops_cleanly(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    assert int(a.pid_file.read_text()) == a.proc.pid
    a.signal(signal.SIGTERM)
    assert a.proc.wait(5) == 0
    assert not a.pid_file.exists()
    assert t.wait_closed(timeout=5)


def _sanitized():
    r = subprocess.run(["ldd", str(AGENT)], capture_output=True, text=True)
    return "libasan" in r.stdout or "libubsan" in r.stdout


@pytest.mark.skipif(_sanitized(), reason="a sanitizer build's memory says nothing")
def test_idle_rss_within_8_mb(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    for _ in range(20):
        assert t.request("web", path="/warm").status == 200
    time.sleep(0.3)
    rss = vmrss_kb(a.proc.pid)
    print("agent VmRSS idle: %d kB" % rss)
    assert 0 < rss <= 8192


@pytest.mark.parametrize("conf,msg", [
    ({"gateway": "http://x/"}, "gateway: \"http://x/\" is not a ws:// or wss:// URL"),
    ({"bogus": 1}, "unknown key"),
    ({"id": "bad id"}, "id: \"bad id\": an agent id is"),
    ({"services": {}}, "services: at least one service is required"),
    ({"services": {"web": "ftp://x"}},
     "services.web: \"ftp://x\" is not an http://, https:// or tcp:// URL"),
    ({"services": {"ssh": "tcp://127.0.0.1"}}, "\"tcp://127.0.0.1\" is not tcp://HOST:PORT"),
    ({"reconnect": {"initialMs": 500, "maxMs": 100}}, "reconnect.maxMs: 100 is less than"),
    ({"connections": 0}, "connections: expected \"auto\" or an integer 1..16"),
    ({"connections": 17}, "connections: expected \"auto\" or an integer 1..16"),
    ({"connections": "all"}, "connections: expected \"auto\" or an integer 1..16"),
    ({"tls": {"verify": False}}, "tls: the gateway URL is ws://"),
    ({"gateway": "wss://127.0.0.1:1/_fg/tunnel", "tls": {"certificate": "c.pem"}},
     "tls.key: \"certificate\" and \"key\" go together"),
    ({"services": {"web": {"address": "http://127.0.0.1:1", "httpClient": {}}}},
     "services.web.httpClient: applies to an https:// address only"),
])
def test_config_errors(tmp_path, conf, msg):
    conf = dict(conf)
    services = conf.pop("services", {"web": "http://127.0.0.1:9"})
    a = Agent(tmp_path, 1, services, **conf)
    r = subprocess.run([str(AGENT), "-t", "-c", str(a.file)], capture_output=True, text=True)
    assert r.returncode == 1
    assert msg in r.stderr and str(a.file) in r.stderr, r.stderr


def test_ca_file_error_names_its_reason_when_running(tmp_path):
    """The agent leaves libcrypto's error strings unloaded at start-up (its idle memory) and
    loads them when a configuration fails: the reason is a phrase, not reason(NNN)."""
    a = Agent(tmp_path, 1, {"web": "http://127.0.0.1:9"},
              gateway="wss://127.0.0.1:1/_fg/tunnel", tls={"ca": str(a_file_not_pem(tmp_path))})
    a.start()
    assert a.proc.wait(10) == 1
    text = a.logs() + a.proc.stderr.read().decode()
    assert "tls.ca" in text and "no certificate or crl found" in text, text
    assert "reason(" not in text, text


def a_file_not_pem(tmp_path):
    p = Path(tmp_path) / "not-a-ca.pem"
    p.write_text("not a certificate\n")
    return p


def test_secret_file_must_be_private(tmp_path):
    a = Agent(tmp_path, 1, {"web": "http://127.0.0.1:9"})
    a.key.chmod(0o644)
    r = subprocess.run([str(AGENT), "-t", "-c", str(a.file)], capture_output=True, text=True)
    assert r.returncode == 1 and "secretFile" in r.stderr
    assert SECRET.decode() not in r.stderr
    a.key.chmod(0o600)
    r = subprocess.run([str(AGENT), "-t", "-c", str(a.file)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1, and an unrelated one."""
    d = tmp_path_factory.mktemp("agentcerts")
    for name in ("gw", "other"):
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "30", "-subj", "/CN=localhost", "-addext",
                 "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(d / (name + ".key")),
                 "-out", str(d / (name + ".crt")))
    return d


def test_wss_with_ca_and_server_name(fakegw, agent_factory, echo_upstream, certs):
    gw = fakegw(tls=(str(certs / "gw.crt"), str(certs / "gw.key")))
    agent_factory(gw, {"web": echo_upstream.url}, gateway="wss://127.0.0.1:%d/_fg/tunnel" % gw.port,
                  tls={"ca": str(certs / "gw.crt"), "serverName": "localhost"})
    t = gw.wait_tunnels(1)
    assert gw.sni == ["localhost"]
    assert t.request("web", path="/tls").status == 200


def test_wss_ip_address_checked_without_sni(fakegw, agent_factory, echo_upstream, certs):
    gw = fakegw(tls=(str(certs / "gw.crt"), str(certs / "gw.key")))
    agent_factory(gw, {"web": echo_upstream.url}, gateway="wss://127.0.0.1:%d/_fg/tunnel" % gw.port,
                  tls={"ca": str(certs / "gw.crt")})
    t = gw.wait_tunnels(1)
    assert gw.sni == [None]  # RFC 6066 3: no IP address in SNI
    assert t.request("web", path="/tls").status == 200


def test_wss_unknown_ca_is_refused(fakegw, agent_factory, echo_upstream, certs):
    gw = fakegw(tls=(str(certs / "gw.crt"), str(certs / "gw.key")))
    a = agent_factory(gw, {"web": echo_upstream.url},
                      gateway="wss://127.0.0.1:%d/_fg/tunnel" % gw.port,
                      tls={"ca": str(certs / "other.crt"), "serverName": "localhost"})
    gw.wait_accepts(2, timeout=10)
    time.sleep(0.3)
    assert gw.tunnels == []
    assert "certificate verify failed" in a.logs()


def test_wss_verify_off(fakegw, agent_factory, echo_upstream, certs):
    gw = fakegw(tls=(str(certs / "gw.crt"), str(certs / "gw.key")))
    agent_factory(gw, {"web": echo_upstream.url}, gateway="wss://127.0.0.1:%d/_fg/tunnel" % gw.port,
                  tls={"verify": False})
    assert gw.wait_tunnels(1).request("web", path="/").status == 200


def _ws_frame(payload, opcode=2):
    """One masked client frame (RFC 6455 5.2)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    data = (int.from_bytes(payload, "big") ^
            int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + mask + data


def _ws_unframe(buf):
    """(payload, rest) for one whole unmasked frame at the start of buf, or (None, buf)."""
    if len(buf) < 2:
        return None, buf
    n, off = buf[1] & 0x7f, 2
    if n == 126:
        n, off = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        n, off = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < off + n:
        return None, buf
    return bytes(buf[off:off + n]), buf[off + n:]


@pytest.fixture
def ws_echo_dest():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/integration/ws_echo.py"),
                             str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    yield "http://127.0.0.1:%d" % port
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def test_websocket_through_the_tunnel(fakegw, agent_factory, ws_echo_dest):
    gw = fakegw()
    # the WebSocket stays open: at the teardown's TERM the agent waits shutdownTimeoutMs for it
    # (the default 30 s outlasted Agent.stop's 5 s, which then killed the agent)
    a = agent_factory(gw, {"chat": ws_echo_dest}, shutdownTimeoutMs=500)
    t = gw.wait_tunnels(1)
    # RFC 8441 4: the extended CONNECT the gateway sends for a client's WebSocket
    sid = t.start_request("chat", method="CONNECT", path="/room",
                          headers=[(":protocol", "websocket"), ("sec-websocket-version", "13")],
                          end=False)
    t.wait_for(lambda: t.responses[sid].status is not None)
    assert t.responses[sid].status == 200
    for msg in (b"hello", os.urandom(200000)):
        t.send_body(sid, _ws_frame(msg), end=False)
        got = {}

        def whole():
            p, rest = _ws_unframe(t.responses[sid].body)
            if p is not None:
                got["p"] = p
                del t.responses[sid].body[:len(t.responses[sid].body) - len(rest)]
            return p is not None
        t.wait_for(whole, timeout=15)
        assert got["p"] == msg
    assert a.stop() == 0  # a graceful stop, the open stream cut at shutdownTimeoutMs


def test_init_script_start_reload_stop(fakegw, echo_upstream, tmp_path):
    gw = fakegw()
    a = Agent(tmp_path, gw.port, {"web": echo_upstream.url})
    env = dict(os.environ, DAEMON=str(AGENT), CONF=str(a.file), PIDFILE=str(a.pid_file),
               DEFAULTS=str(tmp_path / "none"))
    script = str(REPO / "scripts/fastgateway-agent.init")

    def run(cmd):
        return subprocess.run(["sh", script, cmd], env=env, capture_output=True, text=True,
                              timeout=30)

    try:
        r = run("start")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = int(a.pid_file.read_text())
        t1 = gw.wait_tunnels(1)
        assert t1.request("web", path="/").status == 200
        assert run("status").returncode == 0
        assert run("reload").returncode == 0
        gw.wait_tunnels(2, timeout=5)
        assert t1.wait_closed(timeout=10)
        r = run("stop")
        assert r.returncode == 0 and "stopped" in r.stdout
        assert run("status").returncode == 3
        try:  # gone, or a zombie its new parent has not reaped yet
            state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        assert state in ("gone", "Z")
    finally:
        if a.pid_file.exists():
            os.kill(int(a.pid_file.read_text()), signal.SIGKILL)


def test_many_client_aborts_do_not_close_the_tunnel(fakegw, agent_factory, echo_upstream):
    """The gateway resets a stream whenever one of its clients goes away: on a busy gateway
    that is hundreds a second on one tunnel, which must not count as a flood (an
    unauthenticated client's HTTP/2 connection gets GOAWAY ENHANCE_YOUR_CALM for it)."""
    gw = fakegw()
    agent_factory(gw, {"web": echo_upstream.url})
    t = gw.wait_tunnels(1)
    for _ in range(15):
        sids = [t.start_request("nope", method="POST", path="/abort", end=False)
                for _ in range(100)]
        with t.lock:
            for sid in sids:
                t.h2.reset_stream(sid)
                t.responses.pop(sid, None)
            t.flush()
    assert t.request("web", path="/after-aborts").status == 200
    time.sleep(0.5)
    assert not t.closed and t.goaway is None


def test_https_service_with_its_ca(fakegw, agent_factory, certs, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/integration/upstream.py"),
                             str(port), "--tls", str(certs / "gw.crt"), str(certs / "gw.key")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        gw = fakegw()
        url = "https://127.0.0.1:%d" % port
        agent_factory(gw, {"good": {"address": url,
                                    "httpClient": {"caFile": str(certs / "gw.crt")}},
                           "bad": {"address": url,
                                   "httpClient": {"caFile": str(certs / "other.crt")}},
                           # a name: resolved by the agent, still the certificate's name
                           "named": {"address": "https://localhost:%d" % port,
                                     "httpClient": {"caFile": str(certs / "gw.crt")}}})
        t = gw.wait_tunnels(1)
        r = t.request("good", path="/secure")
        assert r.status == 200 and json.loads(bytes(r.body))["path"] == "/secure"
        r = t.request("named", path="/named")
        assert r.status == 200 and json.loads(bytes(r.body))["path"] == "/named"
        assert t.request("bad", path="/secure").status == 502  # certificate not trusted
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_dash_s_reload_and_stop(fakegw, agent_factory, echo_upstream):
    gw = fakegw()
    a = agent_factory(gw, {"web": echo_upstream.url})
    t1 = gw.wait_tunnels(1)
    r = subprocess.run([str(AGENT), "-s", "reload", "-c", str(a.file)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    gw.wait_tunnels(2, timeout=5)
    assert t1.wait_closed(timeout=10)
    r = subprocess.run([str(AGENT), "-s", "stop", "-c", str(a.file)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert a.proc.wait(5) == 0
    r = subprocess.run([str(AGENT), "-s", "bogus", "-c", str(a.file)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "unknown signal" in r.stderr
