"""Tunnel operations (docs/tunnels.md): the WebSocket closing handshake in both directions
(RFC 6455 5.5.1), authentication failures that look alike on the wire, fastgateway-agent's
graceful stop, and its name resolution off the event loop."""
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, http_request
from test_tunnel_agent import AGENT, SECRET, Agent, agent_factory, fakegw  # noqa: F401
from test_tunnel_attacks import RawAgent, frame, gw1, secret_of  # noqa: F401
from test_tunnel_gateway import TUNNEL_PATH, tunnel_config, wait_online

OP_TEXT, OP_BIN, OP_CLOSE, OP_PING = 1, 2, 8, 9


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def read_frame(ra):
    """One frame from ra's socket, masked (an agent's) or not (the gateway's)."""
    while len(ra.buf) < 2:
        ra._more()
    n, hl, masked = ra.buf[1] & 0x7f, 2, ra.buf[1] & 0x80
    if n >= 126:
        hl = 4 if n == 126 else 10
        while len(ra.buf) < hl:
            ra._more()
        n = int.from_bytes(ra.buf[2:hl], "big")
    if masked:
        hl += 4
    while len(ra.buf) < hl + n:
        ra._more()
    op, p = ra.buf[0] & 0x0f, ra.buf[hl:hl + n]
    if masked:
        key = ra.buf[hl - 4:hl]
        p = bytes(b ^ key[i & 3] for i, b in enumerate(p))
    ra.buf = ra.buf[hl + n:]
    return op, p


def read_until_close(ra, timeout=5):
    """Frames from ra until a close frame (its payload) or the end of the stream (None)."""
    ra.s.settimeout(timeout)
    try:
        while True:
            op, p = read_frame(ra)
            if op == OP_CLOSE:
                return bytes(p)
    except (EOFError, ConnectionResetError):
        return None


# ---- the closing handshake, gateway side ----

def test_gateway_echoes_the_agents_close_during_the_handshake(gw1):
    ra = RawAgent(gw1.port)
    assert " 101 " in ra.upgrade()
    ra.s.sendall(frame(OP_CLOSE, close_payload(1001, b"bye")))
    got = read_until_close(ra)
    assert got is not None, "TCP closed without the close frame echoed"
    assert got[:2] == struct.pack(">H", 1001)
    ra.close()


def test_gateway_echoes_the_agents_close_on_a_live_tunnel(gw1, tmp_path):
    ra = RawAgent(gw1.port)
    assert " 101 " in ra.upgrade()
    ra.auth("office", secret_of(tmp_path, "office"))
    op, msg = ra.read_frame()
    assert op == OP_TEXT and msg.startswith(b"FGT/1 OK "), msg
    wait_online(gw1, "office")
    ra.s.sendall(frame(OP_CLOSE, close_payload(1000)))
    got = read_until_close(ra)
    assert got is not None, "TCP closed without the close frame echoed"
    assert got[:2] == struct.pack(">H", 1000)
    ra.close()
    wait_online(gw1, "office", online=False)
    assert "the agent closed the tunnel" in gw1.error_log()


# ---- authentication failures look alike ----

def _refusal(port, agent_id, secret):
    """The close frame the gateway sends for AUTH as agent_id with a proof made with secret,
    and the time from AUTH to it."""
    ra = RawAgent(port)
    assert " 101 " in ra.upgrade()
    t0 = time.monotonic()
    ra.auth(agent_id, secret)
    got = read_until_close(ra)
    dt = time.monotonic() - t0
    ra.close()
    return got, dt


def test_unknown_id_and_wrong_proof_get_the_same_close(gw1):
    wrong, _ = _refusal(gw1.port, "office", b"not-the-secret-0123456789")
    unknown, _ = _refusal(gw1.port, "nobody", b"not-the-secret-0123456789")
    assert wrong is not None and unknown is not None
    assert wrong == unknown == close_payload(1008, b"authentication failed")
    log = gw1.error_log()
    assert 'for agent "office": wrong proof' in log
    assert 'for agent "nobody": unknown agent' in log


# ---- the closing handshake, agent side ----

class RawGateway:
    """One tunnel handshake by hand on a listening socket, for fastgateway-agent: the 101,
    CHALLENGE, then whatever the test sends (unmasked frames, server role)."""

    def __init__(self, secret):
        self.secret = secret
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(10)
        self.port = self.lsock.getsockname()[1]

    def accept(self):
        s, _ = self.lsock.accept()
        s.settimeout(10)
        ra = RawAgent.__new__(RawAgent)  # its frame reader, on the gateway's end
        ra.s, ra.buf = s, b""
        while b"\r\n\r\n" not in ra.buf:
            ra._more()
        head, ra.buf = ra.buf.split(b"\r\n\r\n", 1)
        key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:")][0]
        import base64
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                               .digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n"
                  b"Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n")
        ra.s.sendall(frame(OP_TEXT, b"FGT/1 CHALLENGE " + b"ab" * 32, mask=False))
        op, msg = read_frame(ra)
        assert op == OP_TEXT and msg.startswith(b"FGT/1 AUTH office "), msg
        return ra

    def close(self):
        self.lsock.close()


def _raw_gw_agent(tmp_path, echo_upstream):
    gw = RawGateway(SECRET)
    a = Agent(tmp_path, gw.port, {"web": echo_upstream.url}, connectTimeoutMs=5000)
    return gw, a.start()


@pytest.mark.parametrize("after_ok", [False, True], ids=["handshake", "live"])
def test_agent_echoes_the_gateways_close(tmp_path, echo_upstream, after_ok):
    gw, a = _raw_gw_agent(tmp_path, echo_upstream)
    try:
        ra = gw.accept()
        if after_ok:
            ra.s.sendall(frame(OP_TEXT, b"FGT/1 OK 30", mask=False))
            op, _ = read_frame(ra)  # the agent's HTTP/2 SETTINGS: it serves
            assert op == OP_BIN
        ra.s.sendall(frame(OP_CLOSE, close_payload(1001, b"gateway stopping"), mask=False))
        got = read_until_close(ra)
        assert got is not None, "the agent closed TCP without echoing the close frame"
        assert got[:2] == struct.pack(">H", 1001)
        ra.close()
    finally:
        _stop_checked([a])
        gw.close()


# ---- graceful stop of the agent ----

GW_SECRET = b"s3cret-of-office-0123456789abcdef"


@pytest.fixture
def gw_agent(gateway_factory, echo_upstream, tmp_path):
    """A one-worker gateway with agent "office" (fastgateway-agent) serving /tunnel/."""
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1)
    gw = gateway_factory(cfg)
    d = Path(tmp_path) / "agent"
    d.mkdir()
    started = []

    def make(**top):
        a = Agent(d, gw.port, {"web": echo_upstream.url}, secret=GW_SECRET, **top).start()
        started.append(a)
        wait_online(gw, "office")
        return a

    yield gw, make
    _stop_checked(started)


def _stop_checked(agents):
    for a in agents:
        a.stop()
        err = a.proc.stderr.read().decode(errors="replace")
        assert "Sanitizer" not in err and "runtime error" not in err, err


def _get_in_thread(gw, path, timeout=20):
    out = {}

    def run():
        try:
            out["status"] = http_request("GET", gw.url(path), timeout=timeout)[0]
        except OSError as e:
            out["status"] = repr(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def _wait_streams(gw, n, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.status("show tunnels")["agents"][0]["streams"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError("never %d streams in flight" % n)


def test_sigterm_lets_inflight_streams_finish(gw_agent):
    gw, make = gw_agent
    a = make()
    th, out = _get_in_thread(gw, "/tunnel/slow?ms=1500")
    _wait_streams(gw, 1)
    a.signal(signal.SIGTERM)
    time.sleep(0.3)
    # the agent takes no new stream: a new request is answered at once, not by this agent
    st, _, _ = http_request("GET", gw.url("/tunnel/x"), timeout=5)
    assert st in (502, 503), st
    th.join(10)
    assert out.get("status") == 200, out
    assert a.proc.wait(5) == 0
    assert not a.pid_file.exists()
    logs = a.logs()
    assert "stopping: the tunnels finish their streams" in logs
    assert "stopping: every tunnel closed" in logs
    wait_online(gw, "office", online=False)


def test_sigterm_drain_is_bounded(gw_agent):
    gw, make = gw_agent
    a = make(shutdownTimeoutMs=500)
    th, out = _get_in_thread(gw, "/tunnel/slow?ms=6000")
    _wait_streams(gw, 1)
    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.proc.wait(5) == 0
    assert time.monotonic() - t0 < 3
    assert "shutdownTimeoutMs (500) is over" in a.logs()
    th.join(10)
    assert out.get("status") != 200


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_second_signal_stops_at_once(gw_agent, second):
    gw, make = gw_agent
    a = make()
    th, out = _get_in_thread(gw, "/tunnel/slow?ms=6000")
    _wait_streams(gw, 1)
    a.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert a.proc.poll() is None  # draining
    t0 = time.monotonic()
    a.signal(second)
    assert a.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2
    assert "stopping now" in a.logs()
    th.join(10)


# ---- name resolution off the agent's loop ----

class SilentDns:
    """A DNS server on 127.53.x.y:53 that takes every query and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            self.addr = "127.53.%d.%d" % (os.getpid() % 250 + 1, os.urandom(1)[0] % 250 + 1)
            try:
                self.sock.bind((self.addr, 53))
                break
            except OSError:
                continue
        else:
            pytest.skip("no free loopback address for port 53")
        self.queries = []
        self.sock.settimeout(0.2)
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop:
            try:
                q, _ = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries.append(q)

    def asked(self, label):
        # resolvers may mix the case of a name's letters (0x20 bits, against spoofing)
        return any(label.encode() in q.lower() for q in self.queries)

    def close(self):
        self.stop = True
        self.th.join(2)
        self.sock.close()


def _can_mount_namespace():
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        "mount --bind /etc/hostname /etc/hostname"], capture_output=True)
    return r.returncode == 0


class NsAgent(Agent):
    """fastgateway-agent in a mount namespace of its own where /etc/resolv.conf and /etc/hosts
    are the test's files: its resolver (and the C library's, in an older agent) asks only the
    test's DNS server."""

    def __init__(self, tmp_path, gw_port, services, resolv, hosts, **kw):
        super().__init__(tmp_path, gw_port, services, **kw)
        self.resolv, self.hosts = resolv, hosts

    def start(self):
        script = ("mount --bind %s /etc/resolv.conf && mount --bind %s /etc/hosts && exec %s -c %s"
                  % (self.resolv, self.hosts, AGENT, self.file))
        self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        return self


@pytest.fixture
def ns_agent(gateway_factory, echo_upstream, tmp_path):
    if not _can_mount_namespace():
        pytest.skip("needs a mount namespace (unshare -m) to give the agent its own resolv.conf")
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1)
    gw = gateway_factory(cfg)
    dns = SilentDns()
    d = Path(tmp_path) / "agent"
    d.mkdir()
    resolv = d / "resolv.conf"
    # one attempt of 4 s: a resolver that blocks the loop blocks it that long
    resolv.write_text("nameserver %s\noptions timeout:4 attempts:1\n" % dns.addr)
    hosts = d / "hosts"
    hosts.write_text("127.0.0.1 localhost gw.hosts.test\n")
    started = []

    def make(gateway_host, **top):
        a = NsAgent(d, gw.port, {"web": echo_upstream.url}, resolv, hosts, secret=GW_SECRET,
                    connectTimeoutMs=2000, **top)
        a.conf["gateway"] = "ws://%s:%d%s" % (gateway_host, gw.port, TUNNEL_PATH)
        a.write()
        started.append(a.start())
        return a

    yield gw, dns, make
    dns.close()
    _stop_checked(started)


def _wait_until(cond, timeout):
    """Polls cond() until it holds or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def _serving_agent(gw, make):
    """An agent of ns_agent that reaches the gateway by address, online."""
    a = make("127.0.0.1")
    wait_online(gw, "office")
    return a


def _reload_into_silent_dns(a, dns, label, key, value):
    """Sets a.conf[key] = value (a host name holding label, which only the silent DNS server
    could resolve), writes the file and HUPs the agent; returns once the server was asked."""
    a.conf[key] = value
    a.write()
    a.signal(signal.SIGHUP)
    assert _wait_until(lambda: dns.asked(label), 5), "the agent never asked the DNS server"


def _assert_served_during_lookup(gw, seconds=1.5):
    """Every request for `seconds` is answered 200 within 1.5 s, while a lookup is pending."""
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        try:
            st = http_request("GET", gw.url("/tunnel/x"), timeout=1.5)[0]
        except OSError as e:
            st = repr(e)
        assert st == 200, "request during the lookup: %s after %.2f s" % (st, time.monotonic() - t0)


def _log_line(a, text, timeout=6):
    """The agent's first log line whose message holds text, waiting up to timeout s; or None."""
    _wait_until(lambda: text in a.logs(), timeout)
    lines = [l for l in a.log_lines() if text in l["msg"]]
    return lines[0] if lines else None


def test_agent_resolves_the_gateway_from_etc_hosts(ns_agent):
    gw, dns, make = ns_agent
    make("gw.hosts.test")
    wait_online(gw, "office")
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200


def test_slow_dns_does_not_stall_a_serving_tunnel(ns_agent):
    gw, dns, make = ns_agent
    a = _serving_agent(gw, make)
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200
    # a reload names a gateway that only the silent DNS server could resolve
    _reload_into_silent_dns(a, dns, "slow", "gateway",
                            "ws://gw.slow.test:%d%s" % (gw.port, TUNNEL_PATH))
    # the lookup is pending: the serving tunnel answers as ever meanwhile
    _assert_served_during_lookup(gw)
    line = _log_line(a, "cannot resolve gw.slow.test")
    assert line and line["level"] == "warn", a.logs()
    assert "no answer within connectTimeoutMs (2000 ms)" in line["msg"]
    assert "retrying in" in line["msg"]
    # and the old tunnel still serves
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200


def test_sigterm_sends_new_requests_to_the_other_agent(gateway_factory, upstream_factory,
                                                       tmp_path):
    """Two agents serve one cluster: while one drains after TERM, every new request goes to
    the other, and the draining one's slow request still completes."""
    up_a, up_b = upstream_factory(), upstream_factory()
    cfg = tunnel_config(tmp_path, free_port(), ["office", "branch"],
                        [{"id": "a", "address": "tunnel://office/web"},
                         {"id": "b", "address": "tunnel://branch/web"}], workers=1)
    gw = gateway_factory(cfg)
    agents = []
    for name, up in (("office", up_a), ("branch", up_b)):
        d = Path(tmp_path) / name
        d.mkdir()
        secret = ("s3cret-of-%s-0123456789abcdef" % name).encode()
        a = Agent(d, gw.port, {"web": up.url}, secret=secret, id=name)
        agents.append(a.start())
        wait_online(gw, name)
    try:
        # a slow request on office (round robin: retry until one lands there)
        th = out = None
        for _ in range(6):
            th, out = _get_in_thread(gw, "/tunnel/slow?ms=2000")
            time.sleep(0.3)
            agents_now = {x["id"]: x for x in gw.status("show tunnels")["agents"]}
            if agents_now["office"]["streams"] == 1:
                break
            th.join(5)
        assert agents_now["office"]["streams"] == 1
        agents[0].signal(signal.SIGTERM)
        time.sleep(0.3)
        seen = []
        for _ in range(10):
            st, _, body = http_request("GET", gw.url("/tunnel/who"), timeout=5)
            assert st == 200, (st, body)
            seen.append(json.loads(body)["upstream"])
        assert set(seen) == {up_b.port}
        th.join(10)
        assert out.get("status") == 200, out
        assert agents[0].proc.wait(5) == 0
    finally:
        _stop_checked(agents)


# ---- the services' host names, resolved off the loop ----

def _service_url(upstream_url, host):
    port = int(upstream_url.rsplit(":", 1)[1].split("/")[0])
    return "http://%s:%d" % (host, port)


def test_agent_resolves_a_service_name_from_etc_hosts(ns_agent, echo_upstream, tmp_path):
    gw, dns, make = ns_agent
    hosts = Path(tmp_path) / "agent" / "hosts"  # read by the agent at start only
    hosts.write_text(hosts.read_text().replace("gw.hosts.test", "gw.hosts.test svc.hosts.test"))
    a = _serving_agent(gw, make)
    a.conf["services"] = {"web": _service_url(echo_upstream.url, "svc.hosts.test")}
    a.write()
    a.signal(signal.SIGHUP)
    assert _log_line(a, "reloaded: 1 service(s)", timeout=10), a.logs()
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200
    assert not dns.asked("svc"), "a name of /etc/hosts went to the DNS server"


def test_slow_dns_for_a_service_does_not_stall_a_serving_tunnel(ns_agent, echo_upstream):
    """A reload names a service host that only the silent DNS server could resolve: the
    running tunnel serves throughout the lookup (a blocking resolver would freeze the agent's
    loop for the resolver's 4 s timeout), and the reload fails after connectTimeoutMs with the
    service and the host named."""
    gw, dns, make = ns_agent
    a = _serving_agent(gw, make)
    _reload_into_silent_dns(a, dns, "svc", "services",
                            {"web": _service_url(echo_upstream.url, "svc.slow.test")})
    _assert_served_during_lookup(gw)
    want = "services.web: cannot resolve svc.slow.test: no answer within connectTimeoutMs (2000 ms)"
    line = _log_line(a, want)
    assert line and line["level"] == "error", a.logs()
    assert "reload failed, the running configuration stays" in line["msg"]
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200


def test_agent_start_with_an_unanswered_service_name_fails_within_the_timeout(ns_agent,
                                                                               echo_upstream,
                                                                               tmp_path):
    """At start-up the lookup is bounded by connectTimeoutMs, not by the resolver's own
    timeouts (10 s here), and the error names the service and the host."""
    gw, dns, _ = ns_agent
    d = Path(tmp_path) / "slowstart"
    d.mkdir()
    resolv, hosts = d / "resolv.conf", d / "hosts"
    resolv.write_text("nameserver %s\noptions timeout:10 attempts:1\n" % dns.addr)
    hosts.write_text("127.0.0.1 localhost\n")
    a = NsAgent(d, gw.port, {"web": _service_url(echo_upstream.url, "svc.slow.test")}, resolv,
                hosts, secret=GW_SECRET, connectTimeoutMs=1000)
    t0 = time.monotonic()
    a.start()
    try:
        rc = a.proc.wait(8)
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(5)
    took = time.monotonic() - t0
    assert rc == 1
    assert "services.web: cannot resolve svc.slow.test: no answer within connectTimeoutMs " \
           "(1000 ms)" in a.logs(), a.logs()
    assert took < 8


def test_a_second_hup_replaces_a_reload_waiting_for_a_name(ns_agent, echo_upstream):
    """A reload waiting on a silent DNS server is dropped by the next HUP: the second file
    (an address literal) takes effect at once, and the first lookup never reports."""
    gw, dns, make = ns_agent
    a = _serving_agent(gw, make)
    _reload_into_silent_dns(a, dns, "svc", "services",
                            {"web": _service_url(echo_upstream.url, "svc.slow.test")})
    a.conf["services"] = {"web": echo_upstream.url}
    a.write()
    a.signal(signal.SIGHUP)
    assert _log_line(a, "reloaded: 1 service(s)", timeout=5), a.logs()
    time.sleep(2.5)  # past connectTimeoutMs of the dropped lookup
    assert "cannot resolve" not in a.logs(), a.logs()
    assert http_request("GET", gw.url("/tunnel/x"), timeout=5)[0] == 200
