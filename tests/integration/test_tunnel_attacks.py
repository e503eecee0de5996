"""Tunnels under attack (docs/tunnels.md, "Security model"): hostile clients on the tunnel
path, hostile agents after authentication, hostile gateways against fastgateway-agent. Each
test is named after what it attacks; the WebSocket frames are built by hand (RFC 6455 5.2)
on raw sockets so that the attacks can break the rules a library would keep."""
import hashlib
import hmac
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, http_request
from test_tunnel_gateway import TUNNEL_PATH, agents, tunnel_config, tunnels, wait_online  # noqa: F401

UPGRADE = ("GET %s HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n" % TUNNEL_PATH).encode()


def frame(op, payload=b"", fin=True, mask=True):
    """One WebSocket frame; masked as a client's must be (RFC 6455 5.3)."""
    h = bytes([(0x80 if fin else 0) | op])
    n, m = len(payload), 0x80 if mask else 0
    if n < 126:
        h += bytes([m | n])
    elif n < 65536:
        h += bytes([m | 126]) + struct.pack(">H", n)
    else:
        h += bytes([m | 127]) + struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        h += key
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return h + payload


class RawAgent:
    """A tunnel client on a raw socket: the upgrade, then frames as the test wants them."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def upgrade(self):
        """Sends the upgrade; returns the status line, and reads CHALLENGE after a 101."""
        self.s.sendall(UPGRADE)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode()
        self.nonce = None
        if " 101 " in status:
            op, msg = self.read_frame()
            assert op == 1 and msg.startswith(b"FGT/1 CHALLENGE "), msg
            self.nonce = msg.split()[2].decode()
        return status

    def _more(self):
        c = self.s.recv(65536)
        if not c:
            raise EOFError(self.buf)
        self.buf += c

    def read_frame(self):
        while len(self.buf) < 2:
            self._more()
        n, hl = self.buf[1] & 0x7f, 2
        if n >= 126:
            hl = 4 if n == 126 else 10
            while len(self.buf) < hl:
                self._more()
            n = int.from_bytes(self.buf[2:hl], "big")
        while len(self.buf) < hl + n:
            self._more()
        op, p = self.buf[0] & 0x0f, self.buf[hl:hl + n]
        self.buf = self.buf[hl + n:]
        return op, p

    def auth(self, agent_id, secret):
        msg = "FGT/1\n%s\n%s" % (self.nonce, agent_id)
        proof = hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()
        self.s.sendall(frame(1, ("FGT/1 AUTH %s %s" % (agent_id, proof)).encode()))

    def close(self):
        self.s.close()


def secret_of(tmp_path, agent_id):
    return (Path(tmp_path) / ("%s.key" % agent_id)).read_bytes().strip()


def quick_get(gw, path="/x", timeout=3):
    t0 = time.monotonic()
    try:
        st = http_request("GET", gw.url(path), timeout=timeout)[0]
    except OSError as e:
        st = repr(e)
    return st, time.monotonic() - t0


@pytest.fixture
def gw1(gateway_factory, tmp_path):
    """One worker (every connection shares its loop), agent "office" configured."""
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1)
    return gateway_factory(cfg)


def flood(sock, blob, stop):
    def run():
        try:
            while not stop.is_set():
                sock.sendall(blob)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_control_frame_flood_does_not_stall_the_worker(gw1):
    """Frames that carry no payload (pongs, empty binary frames) sent as fast as the client
    can: the worker still serves its other connections."""
    stop = threading.Event()
    raws = []
    try:
        for unit in (frame(10), frame(2)):
            r = RawAgent(gw1.port)
            assert r.upgrade().startswith("HTTP/1.1 101")
            raws.append(r)
            flood(r.s, unit * (65536 // len(unit)), stop)
        time.sleep(0.3)
        slow = [quick_get(gw1) for _ in range(5)]
        assert all(st == 200 and took < 1.0 for st, took in slow), slow
    finally:
        stop.set()
        for r in raws:
            r.close()


def test_preopened_handshakes_cannot_exceed_the_failure_budget(gateway_factory, tmp_path):
    """A guesser opens many handshakes before its first failure (each upgrade passes the
    429 check then), then answers them all: past authFailuresPerMinute no proof is checked,
    not even a right one, and the log shows no more than the budget of wrong proofs."""
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1, fails=3)
    gw = gateway_factory(cfg)
    raws = [RawAgent(gw.port) for _ in range(8)]
    try:
        for r in raws:
            assert r.upgrade().startswith("HTTP/1.1 101")
        for r in raws[:7]:
            r.auth("office", b"a-guessed-secret-0123456789")
            op, p = r.read_frame()
            assert op == 8 and p[:2] == struct.pack(">H", 1008)
        raws[7].auth("office", secret_of(tmp_path, "office"))
        op, p = raws[7].read_frame()
        assert op == 8 and p[:2] == struct.pack(">H", 1008), (op, p)
        log = gw.error_log()
        assert log.count("wrong proof") == 3, log
        assert "too many failed authentications" in log
        assert not tunnels(gw)["office"]["online"]
    finally:
        for r in raws:
            r.close()


def test_handshake_flood_cannot_keep_agents_out(gw1, tmp_path):
    """More handshakes than a worker keeps pending (256), none ever answered: the oldest are
    closed at once rather than after the 10 s timeout, and an agent still gets in."""
    raws = []
    try:
        for _ in range(256 + 20):
            r = RawAgent(gw1.port)
            assert r.upgrade().startswith("HTTP/1.1 101")
            raws.append(r)
        t0 = time.monotonic()
        for r in raws[:20]:
            r.s.settimeout(3)
            with pytest.raises((EOFError, ConnectionResetError)):
                while True:  # a close frame (1001) first, then the end of the stream
                    assert r.read_frame()[0] == 8
        assert time.monotonic() - t0 < 3
        good = RawAgent(gw1.port)
        raws.append(good)
        assert good.upgrade().startswith("HTTP/1.1 101")
        good.auth("office", secret_of(tmp_path, "office"))
        assert good.read_frame() == (1, b"FGT/1 OK 30")
        assert "handshakes pending in this worker" in gw1.error_log()
    finally:
        for r in raws:
            r.close()


def test_unanswered_handshake_times_out(gw1):
    """A client that never answers the challenge, trickling pongs to look alive: closed
    after the handshake's 10 s."""
    r = RawAgent(gw1.port)
    try:
        assert r.upgrade().startswith("HTTP/1.1 101")
        t0 = time.monotonic()
        r.s.settimeout(0.5)
        closed = False
        while time.monotonic() - t0 < 13 and not closed:
            try:
                r.s.sendall(frame(10))
                r.read_frame()
            except socket.timeout:
                continue
            except (EOFError, OSError):
                closed = True
        took = time.monotonic() - t0
        assert closed and 9 < took < 12, took
        assert "handshake from 127.0.0.1" in gw1.error_log()
    finally:
        r.close()


def test_unanswered_handshake_times_out_after_handshake_timeout(gateway_factory, tmp_path):
    """tunnels.handshakeTimeout 300ms: a client that upgrades and never answers the challenge
    is closed about 300 ms later, and the log names its address."""
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=1)
    cfg["tunnels"]["handshakeTimeout"] = "300ms"
    gw = gateway_factory(cfg)
    r = RawAgent(gw.port)
    try:
        assert r.upgrade().startswith("HTTP/1.1 101")
        t0 = time.monotonic()
        peer = "127.0.0.1:%d" % r.s.getsockname()[1]
        r.s.settimeout(5)
        closed = False
        try:
            while True:
                op, _ = r.read_frame()
                assert op in (8, 9), op  # a close (or a ping), never OK
        except (EOFError, OSError):
            closed = True
        took = time.monotonic() - t0
        assert closed and 0.2 < took < 2.0, took
        line = "tunnel: handshake from %s timed out" % peer
        deadline = time.monotonic() + 2
        while line not in gw.error_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert line in gw.error_log()
    finally:
        r.close()


def test_agent_text_flood_does_not_fill_the_log(gw1, tmp_path):
    """An authenticated agent that sends control messages after OK, where the protocol has
    none for it: ignored, and logged once rather than once per message."""
    r = RawAgent(gw1.port)
    try:
        assert r.upgrade().startswith("HTTP/1.1 101")
        r.auth("office", secret_of(tmp_path, "office"))
        assert r.read_frame() == (1, b"FGT/1 OK 30")
        r.s.sendall(frame(1, b"FGT/1 HELLO") * 500)
        wait_online(gw1, "office")
        deadline = time.monotonic() + 5
        while "unexpected control message" not in gw1.error_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert gw1.error_log().count("unexpected control message") == 1
        assert tunnels(gw1)["office"]["online"]
    finally:
        r.close()


AGENT_BINARY = Path(os.environ.get("FG_AGENT_BINARY",
                                   Path(__file__).resolve().parents[2] / "fastgateway-agent"))
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_gateway_pong_flood_does_not_stall_the_agent(tmp_path):
    """A hostile gateway answers the upgrade, sends CHALLENGE, then pongs as fast as it can:
    fastgateway-agent's loop still runs (SIGTERM stops it at once)."""
    import base64
    import json
    import signal
    import subprocess
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    port = ls.getsockname()[1]
    key = Path(tmp_path) / "office.key"
    key.write_bytes(b"office-secret-0123456789abcdef")
    key.chmod(0o600)
    conf = Path(tmp_path) / "agent.json"
    conf.write_text(json.dumps({
        "gateway": "ws://127.0.0.1:%d%s" % (port, TUNNEL_PATH), "id": "office",
        "secretFile": str(key), "services": {"web": "http://127.0.0.1:9"},
        "log": {"level": "info", "errorLog": str(Path(tmp_path) / "agent.log")}}))
    agent = subprocess.Popen([str(AGENT_BINARY), "-c", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    stop = threading.Event()
    try:
        ls.settimeout(10)
        c, _ = ls.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(4096)
        k = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
             if line.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(k + WS_GUID).digest())
        challenge = b"FGT/1 CHALLENGE " + os.urandom(32).hex().encode()
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc +
                  b"\r\nSec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n" +
                  frame(1, challenge, mask=False))
        flood(c, frame(10, mask=False) * 30000, stop)
        time.sleep(1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(3) == 0
    finally:
        stop.set()
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
        ls.close()


def test_oversized_fragmented_text_is_refused(gw1):
    """A control message in 1-byte fragments, pings between them, past FG_WS_TEXT_MAX (1024
    bytes): close 1009 (RFC 6455 7.4.1), not a buffer that grows."""
    r = RawAgent(gw1.port)
    try:
        assert r.upgrade().startswith("HTTP/1.1 101")
        data = frame(1, b"F", fin=False)
        for i in range(1100):
            data += frame(0, b"x", fin=False) + (frame(9, b"p") if i % 100 == 0 else b"")
        r.s.sendall(data)
        while True:
            op, p = r.read_frame()
            if op == 8:
                break
            assert op == 10
        assert p[:2] == struct.pack(">H", 1009)
    finally:
        r.close()


def test_auth_after_close_frame_is_ignored(gw1, tmp_path):
    """A right AUTH that follows the client's own close frame: nothing after a close counts
    (RFC 6455 5.5.1), the agent does not come online."""
    r = RawAgent(gw1.port)
    try:
        assert r.upgrade().startswith("HTTP/1.1 101")
        nonce_msg = "FGT/1\n%s\noffice" % r.nonce
        proof = hmac.new(secret_of(tmp_path, "office"), nonce_msg.encode(),
                         hashlib.sha256).hexdigest()
        r.s.sendall(frame(8, struct.pack(">H", 1000)) +
                    frame(1, ("FGT/1 AUTH office %s" % proof).encode()))
        try:
            assert r.read_frame()[0] == 8
        except EOFError:
            pass  # the connection ended with or without the close echo
        time.sleep(0.3)
        assert not tunnels(gw1)["office"]["online"]
        assert "online" not in gw1.error_log().split("started")[-1]
    finally:
        r.close()


def test_simultaneous_takeovers_leave_one_tunnel(gateway_factory, tmp_path):
    """Twenty connections with the same id authenticate at once, over two workers: the
    registry names one of them, every other one is closed, none is left half-owned."""
    cfg = tunnel_config(tmp_path, free_port(), ["office"],
                        [{"id": "a", "address": "tunnel://office/web"}], workers=2)
    gw = gateway_factory(cfg)
    raws = [RawAgent(gw.port) for _ in range(20)]
    try:
        for r in raws:
            assert r.upgrade().startswith("HTTP/1.1 101")
        secret = secret_of(tmp_path, "office")
        for r in raws:
            r.auth("office", secret)
        deadline = time.monotonic() + 5
        while (gw.error_log().count("closed: taken over") < 19 and
               time.monotonic() < deadline):
            time.sleep(0.1)
        open_ = []
        for r in raws:
            r.s.settimeout(0.2)
            try:
                while r.read_frame()[0] != 8:
                    pass
            except socket.timeout:
                open_.append(r)
            except (EOFError, OSError):
                pass
        t = tunnels(gw)["office"]
        assert len(open_) == 1 and t["online"] and t["connects"] == 20, (len(open_), t)
        assert t["peer"] == "127.0.0.1:%d" % open_[0].s.getsockname()[1]
    finally:
        for r in raws:
            r.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_hop_socket_refuses_another_user(gw1):
    """A local process of another user connects to a worker's hop socket and names a tunnel
    destination: refused by its credentials (SO_PEERCRED), no answer."""
    import subprocess
    import sys
    pid = gw1.workers()[0]["pid"]
    code = ("import socket\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(5)\n"
            "s.connect('\\0fastgateway-hop-%d')\n"
            "try:\n"
            "    s.sendall(b'GET /x HTTP/1.1\\r\\nHost: a\\r\\nfg-tunnel-hop: office web\\r\\n\\r\\n')\n"
            "    print(repr(s.recv(100)))\n"
            "except OSError as e:\n"
            "    print('refused', e.errno)\n" % pid)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20, preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    # closed unanswered: EOF, or a reset / broken pipe when the close came first
    assert out.stdout.strip() in ("b''", "refused 104", "refused 32"), out
    assert "tunnel hop: connection from another user refused" in gw1.error_log()
