"""WebSocket over HTTP/2 (RFC 8441) through the gateway: a python3-h2 client opens extended
CONNECT streams over h2c and over TLS (ALPN h2); the gateway turns each into an HTTP/1.1 Upgrade
to the destination (worker/handlers/proxy.c), checks its Sec-WebSocket-Accept, answers 200, and
relays the stream's DATA frames (worker/http/http2.c tunnel_*, worker/http/relay.c).

Covers echo with python3-websockets as the destination (tests/integration/ws_echo.py), 1 MiB
messages, many WebSockets on one connection, a stream whose reader stalls next to a live one,
half-close both ways, a wrong Sec-WebSocket-Accept (502), other answers, other :protocol values
by the route's upgradeProtocols, the access log line, and a reload: the retiring worker's
connection stays open past its GOAWAY until webSocketDrainTimeout resets the streams."""
import base64
import hashlib
import os
import socket
import ssl
import struct
import time

import pytest

from conftest import free_port
from test_websocket import MiB, RawDest, _leaf_certs, _reload, ws_config, ws_echo  # noqa: F401

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def ws_frame(payload, opcode=2):
    """One masked client frame (RFC 6455 5.2)."""
    if isinstance(payload, str):
        payload, opcode = payload.encode(), 1
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    data = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
         ).to_bytes(n, "big")
    return head + mask + data


def ws_parse(buf):
    """(payload, rest) for one unmasked server frame at the start of buf, or (None, buf)."""
    if len(buf) < 2:
        return None, buf
    n, off = buf[1] & 0x7f, 2
    if n == 126:
        if len(buf) < 4:
            return None, buf
        n, off = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None, buf
        n, off = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < off + n:
        return None, buf
    payload = bytes(buf[off:off + n])
    return (payload.decode() if buf[0] & 0x0f == 1 else payload), buf[off + n:]


class Client:
    """An HTTP/2 client on one connection (h2c, or TLS with ALPN h2). Streams listed in
    `stalled` get no stream-level WINDOW_UPDATE (the connection's window is still opened)."""

    def __init__(self, port, tls=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            ctx = ssl.create_default_context(cafile=tls)
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname="a.example.test")
            assert s.selected_alpn_protocol() == "h2"
        self.sock, self.scheme = s, "https" if tls else "http"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.st = {}
        self.stalled = set()
        self.settings_seen = False

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def pump(self, timeout=10):
        self.sock.settimeout(timeout)
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("connection closed")
        for ev in self.conn.receive_data(data):
            r = self.st.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(ev, h2.events.ResponseReceived):
                r["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                r["data"] += ev.data
                n = ev.flow_controlled_length
                if n:
                    if ev.stream_id in self.stalled:
                        self.conn.increment_flow_control_window(n)
                        r["unacked"] += n
                    else:
                        self.conn.acknowledge_received_data(n, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                if r is not None:
                    r["reset"] = ev.error_code
        self.flush()

    def until(self, cond, timeout=20):
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            assert left > 0, "timed out"
            try:
                self.pump(left)
            except socket.timeout:
                pass

    def open(self, path="/", protocol="websocket", extra=()):
        while not self.settings_seen:
            self.pump()
        sid = self.conn.get_next_available_stream_id()
        self.st[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None,
                        "unacked": 0}
        self.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", protocol),
                                     (":scheme", self.scheme), (":path", path),
                                     (":authority", "a.example.test"),
                                     ("sec-websocket-version", "13")] + list(extra))
        self.flush()
        return sid

    def response(self, sid):
        r = self.st[sid]
        self.until(lambda: r["headers"] is not None or r["reset"] is not None)
        return r

    def send(self, sid, data, end=False, block=True):
        """Send what the windows allow; with block, all of it. Returns the bytes sent."""
        sent = 0
        while sent < len(data):
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(data) - sent)
            if room <= 0:
                if not block:
                    break
                try:
                    self.pump(10)
                except socket.timeout:
                    pass
                continue
            self.conn.send_data(sid, data[sent:sent + room])
            sent += room
            self.flush()
        if end and sent == len(data):
            self.conn.end_stream(sid)
            self.flush()
        return sent

    def message(self, sid, timeout=20):
        r = self.st[sid]
        out = []

        def one():
            msg, rest = ws_parse(r["data"])
            if msg is not None:
                r["data"] = bytearray(rest)
                out.append(msg)
            return out
        self.until(one, timeout)
        return out[0]

    def echo(self, sid, msg):
        self.send(sid, ws_frame(msg))
        return self.message(sid)

    def close(self):
        self.sock.close()


def tls_cfg(tmp_path, cfg):
    _leaf_certs(tmp_path)
    cfg["log"]["accessLogFields"] = LOG_FIELDS
    cfg["certificates"] = [{"id": "a", "chain": str(tmp_path / "a.crt"),
                            "key": str(tmp_path / "a.key")}]
    cfg["servers"][0]["tls"] = {"certificates": ["a"], "default": "a"}
    return str(tmp_path / "ca.crt")


LOG_FIELDS = ["method", "path", "status", "protocol", "bytesIn", "bytesOut", "duration",
              "termination", "tlsVersion"]


def h2c(cfg):
    cfg["servers"][0]["http2"] = {"h2c": True}
    cfg["log"]["accessLogFields"] = LOG_FIELDS
    return cfg


# ---- tests ----

def test_h2c_echo_and_1mib_messages(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gw = gateway_factory(h2c(ws_config(tmp_path, port, ws_echo)))
    c = Client(port)
    sid = c.open("/logme")
    r = c.response(sid)
    # RFC 8441 5: the 101 becomes a 200 without Sec-WebSocket-Accept
    assert r["headers"][":status"] == "200", r
    assert "sec-websocket-accept" not in r["headers"] and "upgrade" not in r["headers"]
    assert c.echo(sid, "hello") == "hello"
    for i in range(3):
        big = bytes([i + 1]) * MiB
        assert c.echo(sid, big) == big
    c.send(sid, ws_frame(b"\x03\xe8", opcode=8))  # a close frame, then our half-close
    assert c.message(sid) == b"\x03\xe8"
    c.send(sid, b"", end=True)
    c.until(lambda: c.st[sid]["ended"] or c.st[sid]["reset"] is not None)
    line = [l for l in gw.access_log(wait_for=1) if l.get("path") == "/logme"]
    assert len(line) == 1
    assert line[0]["protocol"] == "HTTP/2.0" and line[0]["status"] == 200
    assert line[0]["method"] == "CONNECT"
    assert line[0]["bytesIn"] > 3 * MiB and line[0]["bytesOut"] > 3 * MiB
    assert line[0]["termination"] == "ok"
    c.close()


def test_h2_over_tls_echo(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    cfg = ws_config(tmp_path, port, ws_echo)
    ca = tls_cfg(tmp_path, cfg)
    gw = gateway_factory(cfg)
    c = Client(port, tls=ca)
    sid = c.open("/tls", extra=[("sec-websocket-protocol", "chat")])
    r = c.response(sid)
    assert r["headers"][":status"] == "200" and r["headers"]["sec-websocket-protocol"] == "chat"
    big = b"\xab" * MiB
    assert c.echo(sid, big) == big
    for i in range(200):
        c.send(sid, ws_frame("t%d" % i))
    assert [c.message(sid) for _ in range(200)] == ["t%d" % i for i in range(200)]
    c.close()
    line = [l for l in gw.access_log(wait_for=1) if l.get("path") == "/tls"]
    assert line and line[0]["protocol"] == "HTTP/2.0" and line[0]["tlsVersion"].startswith("TLS")


def test_many_websockets_on_one_connection(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gateway_factory(h2c(ws_config(tmp_path, port, ws_echo)))
    c = Client(port)
    sids = [c.open("/m%d" % i) for i in range(40)]
    for sid in sids:
        assert c.response(sid)["headers"][":status"] == "200"
    for rnd in range(5):
        for sid in sids:
            c.send(sid, ws_frame("s%d-r%d" % (sid, rnd)))
        for sid in sids:
            assert c.message(sid) == "s%d-r%d" % (sid, rnd)
    c.close()


def test_a_stalled_reader_does_not_stall_another_stream(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gateway_factory(h2c(ws_config(tmp_path, port, ws_echo)))
    c = Client(port)
    slow, live = c.open("/slow"), c.open("/live")
    assert c.response(slow)["headers"][":status"] == "200"
    assert c.response(live)["headers"][":status"] == "200"
    c.stalled.add(slow)
    # The slow stream's echoes fill its window (never reopened); what the gateway cannot pass
    # on waits in its bounded buffers, then in the destination, then in our send window.
    payload = os.urandom(256 * 1024)
    nframes = 160  # 40 MiB: more than the buffers on the way hold (sockets, the echo queue)
    frames = ws_frame(payload) * nframes
    sent = c.send(slow, frames, block=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            c.pump(0.2)
        except socket.timeout:
            pass
        sent += c.send(slow, frames[sent:], block=False)
    print("slow stream: %d of %d bytes taken" % (sent, len(frames)))
    assert sent < len(frames), "the slow stream's sending should have been held back"
    assert c.st[slow]["unacked"] <= 65535
    for i in range(100):
        assert c.echo(live, "live%d" % i) == "live%d" % i
    # Opening the slow stream's window lets everything through, in order.
    c.stalled.discard(slow)
    c.conn.increment_flow_control_window(4 * MiB, slow)
    c.flush()
    c.send(slow, frames[sent:])
    for _ in range(nframes):
        got = c.message(slow, timeout=60)
        if c.st[slow]["unacked"]:
            c.st[slow]["unacked"] = 0
        assert got == payload
    c.close()


def test_half_close_both_ways(tmp_path, gateway_factory):
    def script(s, head, rest):
        key = [l.split(":", 1)[1].strip() for l in head.split("\r\n")
               if l.lower().startswith("sec-websocket-key:")][0]
        assert head.startswith("GET /half HTTP/1.1")
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_of(key).encode() +
                  b"\r\n\r\n")
        got = rest
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.sendall(b"got:" + got)  # still writing after the client's END_STREAM
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
    dest = RawDest(script)
    port = free_port()
    gw = gateway_factory(h2c(ws_config(tmp_path, port, dest.url)))
    c = Client(port)
    sid = c.open("/half")
    assert c.response(sid)["headers"][":status"] == "200"
    c.send(sid, b"raw bytes, no framing checks", end=True)
    c.until(lambda: c.st[sid]["ended"] or c.st[sid]["reset"] is not None)
    assert c.st[sid]["reset"] is None
    assert bytes(c.st[sid]["data"]) == b"got:raw bytes, no framing checks"
    head = dest.heads[0].lower()
    assert "upgrade: websocket" in head and "sec-websocket-version: 13" in head
    line = [l for l in gw.access_log(wait_for=1) if l.get("path") == "/half"]
    assert line and line[0]["termination"] == "ok"
    c.close()
    dest.close()


def test_wrong_accept_is_502_and_other_answers(tmp_path, gateway_factory):
    def script(s, head, rest):
        if "/bad" in head:  # an accept for some other key
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                      b"\r\n\r\n")
        elif "/deny" in head:
            s.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
        elif "/ignored" in head:  # a server that ignored the Upgrade and answered the GET
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.3)
    dest = RawDest(script)
    port = free_port()
    gw = gateway_factory(h2c(ws_config(tmp_path, port, dest.url)))
    c = Client(port)
    bad, deny, ignored = c.open("/bad"), c.open("/deny"), c.open("/ignored")
    assert c.response(bad)["headers"][":status"] == "502"
    assert c.response(deny)["headers"][":status"] == "403"
    c.until(lambda: c.st[deny]["ended"])
    assert bytes(c.st[deny]["data"]) == b"nope"
    assert c.response(ignored)["headers"][":status"] == "502"
    lines = {l["path"]: l for l in gw.access_log(wait_for=3)}
    assert lines["/bad"]["termination"] == "upstream_invalid"
    c.close()
    dest.close()


def test_other_protocols_follow_upgrade_protocols(tmp_path, gateway_factory):
    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade"
                  b"\r\n\r\n")
        d = rest or s.recv(65536)
        s.sendall(b"foo:" + d)
        time.sleep(0.3)
    dest = RawDest(script)
    port = free_port()
    gateway_factory(h2c(ws_config(tmp_path, port, dest.url,
                                  route={"upgradeProtocols": ["websocket", "foo"]})))
    c = Client(port)
    sid = c.open("/foo", protocol="foo")
    assert c.response(sid)["headers"][":status"] == "200"
    c.send(sid, b"ping")
    c.until(lambda: bytes(c.st[sid]["data"]) == b"foo:ping")
    assert "upgrade: foo" in dest.heads[0].lower()
    assert "sec-websocket-key" not in dest.heads[0].lower()  # only WebSocket has a key
    # a protocol the route does not relay: 501, nothing reaches the destination
    other = c.open("/bar", protocol="bar")
    assert c.response(other)["headers"][":status"] == "501"
    assert len(dest.heads) == 1
    c.close()
    dest.close()


class RawTunnels:
    """Tunnels on test_http2.Raw (hyperframe): unlike python3-h2, it goes on reading streams
    after a GOAWAY, as RFC 9113 6.8 allows for the streams the GOAWAY keeps."""

    def __init__(self, port):
        from test_http2 import Raw
        self.c = Raw(port)
        while 8 not in self.c.server_settings:
            self.c.read_frame()
        self.st = {}
        self.goaways = 0

    def open(self, path):
        sid = self.c.headers([(":method", "CONNECT"), (":protocol", "websocket"),
                              (":scheme", "http"), (":path", path), (":authority", "a.test"),
                              ("sec-websocket-version", "13")], end=False)
        self.st[sid] = {"status": None, "data": b"", "rst": None}
        return sid

    def read(self, cond, timeout=20):
        from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            f = self.c.read_frame(max(0.1, deadline - time.monotonic()))
            assert f is not None, "connection closed"
            r = self.st.get(f.stream_id)
            if isinstance(f, GoAwayFrame):
                self.goaways += 1
            elif isinstance(f, HeadersFrame) and r is not None:
                r["status"] = dict(self.c.dec.decode(f.data)).get(":status")
            elif isinstance(f, DataFrame) and r is not None:
                r["data"] += f.data
                if f.flow_controlled_length:
                    self.c.window(f.flow_controlled_length, f.stream_id)
            elif isinstance(f, RstStreamFrame) and r is not None:
                r["rst"] = f.error_code

    def echo(self, sid, msg):
        from hyperframe.frame import DataFrame
        d = DataFrame(sid)
        d.data = ws_frame(msg)
        self.c.send(d)
        r, out = self.st[sid], []

        def got():
            m, rest = ws_parse(r["data"])
            if m is not None:
                r["data"] = rest
                out.append(m)
            return out
        self.read(got)
        return out[0]


def test_reload_keeps_tunnels_until_the_drain_timeout(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    drain = 3.0
    gw = gateway_factory(h2c(ws_config(tmp_path, port, ws_echo, workers=1,
                                       webSocketDrainTimeout="3s", shutdownTimeout="10s")))
    c = RawTunnels(port)
    sids = [c.open("/d%d" % i) for i in range(5)]
    c.read(lambda: all(c.st[s]["status"] for s in sids))
    for sid in sids:
        assert c.st[sid]["status"] == "200"
        assert c.echo(sid, "before") == "before"
    retired = _reload(gw)
    # past the final GOAWAY (a second after the notice) the WebSockets still work
    time.sleep(1.5)
    for sid in sids:
        assert c.echo(sid, "after") == "after"
    assert c.goaways >= 1
    c.read(lambda: all(c.st[s]["rst"] is not None for s in sids), timeout=drain + 5)
    lived = time.monotonic() - retired
    assert drain - 0.3 <= lived <= drain + 3, lived
    lines = [l for l in gw.access_log(wait_for=5) if l["path"].startswith("/d")]
    assert len(lines) == 5 and all(l["termination"] == "drained" for l in lines)
    c.c.close()


def test_rst_stream_aborts_the_relay_and_the_destination_sees_the_close(tmp_path,
                                                                      gateway_factory):
    closed = []

    def script(s, head, rest):
        key = [l.split(":", 1)[1].strip() for l in head.split("\r\n")
               if l.lower().startswith("sec-websocket-key:")][0]
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_of(key).encode() +
                  b"\r\n\r\n")
        s.settimeout(10)
        while True:
            try:
                d = s.recv(65536)
            except OSError:
                d = b""
            if not d:
                closed.append(time.monotonic())
                return
            s.sendall(d)
    dest = RawDest(script)
    port = free_port()
    gw = gateway_factory(h2c(ws_config(tmp_path, port, dest.url)))
    c = Client(port)
    sid, other = c.open("/abort"), c.open("/stays")
    assert c.response(sid)["headers"][":status"] == "200"
    assert c.response(other)["headers"][":status"] == "200"
    c.send(sid, b"x")
    c.until(lambda: bytes(c.st[sid]["data"]) == b"x")
    c.conn.reset_stream(sid, error_code=8)  # CANCEL
    c.flush()
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed, "the destination's connection was not closed"
    # the connection and its other WebSocket go on
    c.send(other, b"still")
    c.until(lambda: bytes(c.st[other]["data"]) == b"still")
    line = [l for l in gw.access_log(wait_for=1) if l["path"] == "/abort"]
    assert line and line[0]["termination"] == "client_aborted"
    c.close()
    dest.close()
