"""A stand-in for the gateway's end of a tunnel, to test fastgateway-agent alone.

It listens on a local port, accepts the agent's WebSocket upgrade (RFC 6455) on the tunnel path,
runs the handshake of common/tunnel_proto.h (CHALLENGE, AUTH checked with the agent's secret,
OK or close 1008) and then speaks HTTP/2 as the CLIENT (python3-h2) inside binary WebSocket
frames, as the gateway does. Tests send requests naming a service in fg-tunnel-service.

Everything the agent sends is checked as it arrives: client frames must be masked, the
request head must carry no credential. Standard library + h2 only.
"""
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "fastgateway-tunnel.v1"


def proof(secret, nonce, agent_id, instance=None, role=None):
    msg = b"FGT/1\n" + nonce.hex().encode() + b"\n" + agent_id.encode()
    if instance is not None:
        msg += b"\n" + instance.encode() + b"\n" + role.encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()


class Closed(Exception):
    pass


class Response:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.done = False
        self.reset = None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Tunnel:
    """One authenticated tunnel: the HTTP/2 client side over WebSocket frames."""

    def __init__(self, gw, sock, agent_id):
        self.gw = gw
        self.sock = sock
        self.agent_id = agent_id
        self.lock = threading.Condition()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.responses = {}
        self.closed = False
        self.close_code = None
        self.pings = 0        # pings the agent sent
        self.pongs = []       # payloads of pongs to our pings
        self.texts = []
        self.goaway = None    # last stream id of the agent's latest GOAWAY
        self.goaways = []
        self.closing = False  # our close frame for a GOAWAY is sent
        self.inbuf = bytearray()
        self.last_frame = time.monotonic()
        self.answer_pings = True
        self.settings_seen = threading.Event()
        self.error = None     # why the reader stopped

    # ---- WebSocket framing (we are the server: our frames unmasked, theirs masked) ----
    def send_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        try:
            self.sock.sendall(head + payload)
        except OSError:
            pass

    def send_text(self, text):
        self.send_frame(1, text.encode())

    def ping(self, payload=b"fakegw"):
        self.send_frame(9, payload)

    def close_ws(self, code=1000, reason=b""):
        self.send_frame(8, struct.pack("!H", code) + reason)

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.send_frame(2, data)

    def start_h2(self):
        with self.lock:
            self.h2.initiate_connection()
            self.flush()
        threading.Thread(target=self.reader, daemon=True).start()

    def reader(self):
        try:
            while True:
                opcode, payload = read_frame(self.sock)
                self.last_frame = time.monotonic()
                if opcode == 2 or opcode == 0:
                    with self.lock:
                        goaways = len(self.goaways)
                        events = self.h2.receive_data(self.strip_goaway(payload))
                        for ev in events:
                            self.on_event(ev)
                        self.flush()
                        # as the gateway does (worker/tunnel/session.c, agent_going): a GOAWAY
                        # with no stream in flight closes the tunnel at once, where the agent
                        # would close it only after its HTTP/2 linger (2 s)
                        if (len(self.goaways) > goaways and not self.closing
                                and not self.h2.open_outbound_streams):
                            self.closing = True
                            self.close_ws(1000)
                        self.lock.notify_all()
                elif opcode == 1:
                    with self.lock:
                        self.texts.append(payload.decode())
                        self.lock.notify_all()
                elif opcode == 9:
                    self.pings += 1
                    if self.answer_pings:
                        self.send_frame(10, payload)
                elif opcode == 10:
                    self.pongs.append(payload)
                elif opcode == 8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    self.send_frame(8, payload[:2])
                    break
        except (Closed, OSError, h2.exceptions.ProtocolError) as e:
            self.error = e
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        try:
            self.sock.close()
        except OSError:
            pass

    def strip_goaway(self, data):
        """The HTTP/2 frames in data, less GOAWAY, which is recorded: python-h2 closes its
        state machine on any GOAWAY, where RFC 9113 6.8 lets the streams below the last id
        finish (the agent retires a tunnel that way)."""
        self.inbuf += data
        out = bytearray()
        while len(self.inbuf) >= 9:
            n = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + n:
                break
            frame = bytes(self.inbuf[:9 + n])
            del self.inbuf[:9 + n]
            if frame[3] == 7:
                self.goaways.append(int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF)
                self.goaway = self.goaways[-1]
            else:
                out += frame
        return bytes(out)

    def on_event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            r = self.responses[ev.stream_id]
            r.headers = ev.headers
            r.status = int(dict(ev.headers)[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            self.responses[ev.stream_id].body += ev.data
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.responses[ev.stream_id].done = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.responses:
                self.responses[ev.stream_id].reset = ev.error_code
                self.responses[ev.stream_id].done = True
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen.set()

    # ---- requests ----
    def start_request(self, service, method="GET", path="/", headers=None, body=None,
                      authority="app.example", end=True):
        hdrs = [(":method", method), (":scheme", "https"), (":authority", authority),
                (":path", path)]
        extra = list(headers or [])
        hdrs += [h for h in extra if h[0].startswith(":")]  # pseudo-fields first (RFC 9113 8.3)
        if service is not None:
            hdrs.append(("fg-tunnel-service", service))
        hdrs += [h for h in extra if not h[0].startswith(":")]
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        with self.lock:
            if self.closed:
                raise Closed("tunnel closed")
            sid = self.h2.get_next_available_stream_id()
            self.responses[sid] = Response()
            self.h2.send_headers(sid, hdrs, end_stream=body is None and end)
            self.flush()
        if body is not None:
            self.send_body(sid, body)
        return sid

    def wait_for(self, pred, timeout=15):
        """Wait until pred() holds (called under the lock)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not pred():
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise TimeoutError("condition not met (closed: %s)" % self.error)
                self.lock.wait(left)

    def send_body(self, sid, body, timeout=30, end=True):
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if self.closed:
                    raise Closed("tunnel closed during the upload")
                room = min(self.h2.local_flow_control_window(sid),
                           self.h2.max_outbound_frame_size, len(view))
                if room > 0 or len(view) == 0:
                    last = room == len(view)
                    self.h2.send_data(sid, view[:room].tobytes(), end_stream=last and end)
                    view = view[room:]
                    self.flush()
                    if last:
                        return
                    continue
                if not self.lock.wait(deadline - time.monotonic()):
                    raise TimeoutError("upload stalled: no window")

    def wait(self, sid, timeout=15):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.responses[sid].done:
                if self.closed:
                    raise Closed("tunnel closed before stream %d ended" % sid)
                left = deadline - time.monotonic()
                if left <= 0 or not self.lock.wait(left):
                    raise TimeoutError("stream %d: no answer" % sid)
            return self.responses.pop(sid)

    def request(self, service, method="GET", path="/", headers=None, body=None, timeout=15):
        return self.wait(self.start_request(service, method, path, headers, body), timeout)

    def wait_closed(self, timeout=10):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def kill(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed("peer closed")
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    """One whole WebSocket message from the agent (a client: frames must be masked)."""
    payload = bytearray()
    first_op = None
    while True:
        b0, b1 = recv_exact(sock, 2)
        op = b0 & 0x0F
        if not b1 & 0x80:
            raise AssertionError("the agent sent an unmasked frame (RFC 6455 5.1)")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", recv_exact(sock, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", recv_exact(sock, 8))[0]
        key = recv_exact(sock, 4)
        data = bytearray(recv_exact(sock, n))
        for i in range(n):
            data[i] ^= key[i & 3]
        if op >= 8:
            return op, bytes(data)
        if first_op is None:
            first_op = op
        payload += data
        if b0 & 0x80 or op in (0, 2):
            # binary data is a byte stream: hand on each frame as it comes
            return first_op, bytes(payload)


class FakeGateway:
    """Accepts agents on 127.0.0.1:port. agents: {id: secret bytes}."""

    def __init__(self, port, agents, heartbeat=30, path="/_fg/tunnel", tls=None):
        self.port = port
        self.sni = []           # server names the agent sent (TLS)
        self.tls_errors = []
        self.ctx = None
        if tls is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls)
            self.ctx.sni_callback = lambda so, name, ctx: self.sni.append(name)
        self.agents = agents
        self.heartbeat = heartbeat
        self.path = path
        self.lock = threading.Condition()
        self.tunnels = []       # authenticated, in order
        self.accepts = []       # monotonic time of every accepted TCP connection
        self.heads = []         # request heads of the upgrades (bytes)
        self.auth_failures = 0
        self.on_auth = None     # a function(tunnel) -> False to close right after OK
        self.refuse = False     # close every connection at once (no upgrade)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.running = True
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def close(self):
        self.running = False
        try:
            self.sock.close()
        except OSError:
            pass
        for t in list(self.tunnels):
            t.kill()

    def accept_loop(self):
        while self.running:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepts.append(time.monotonic())
                self.lock.notify_all()
            if self.refuse:
                s.close()
                continue
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, s):
        try:
            if self.ctx is not None:
                s.settimeout(10)
                try:
                    s = self.ctx.wrap_socket(s, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.tls_errors.append(str(e))
                    s.close()
                    return
            s.settimeout(None)
            t = self.handshake(s)
        except (Closed, OSError, AssertionError, ValueError):
            s.close()
            return
        if t is None:
            return
        if self.on_auth is not None and self.on_auth(t) is False:
            t.kill()
            return
        t.start_h2()
        with self.lock:
            self.tunnels.append(t)
            self.lock.notify_all()

    def handshake(self, s):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise Closed("no request")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        assert rest == b"", "the agent sent bytes before the 101"
        with self.lock:
            self.heads.append(head)
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        assert lines[0] == "GET %s HTTP/1.1" % self.path, lines[0]
        assert fields["upgrade"].lower() == "websocket"
        assert fields["sec-websocket-protocol"] == SUBPROTOCOL
        key = fields["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                   "Sec-WebSocket-Protocol: %s\r\n\r\n" % (accept, SUBPROTOCOL)).encode())
        t = Tunnel(self, s, None)
        nonce = os.urandom(32)
        t.send_text("FGT/1 CHALLENGE " + nonce.hex())
        s.settimeout(10)
        op, payload = read_frame(s)
        s.settimeout(None)
        assert op == 1, "expected AUTH as a text message, got opcode %d" % op
        parts = payload.decode().split(" ")
        assert parts[0] == "FGT/1" and parts[1] == "AUTH" and len(parts) in (4, 6), payload
        agent_id, got = parts[2], bytes.fromhex(parts[3])
        # with the instance and role (first/extra) of an agent keeping several connections
        instance, role = (parts[4], parts[5]) if len(parts) == 6 else (None, None)
        assert role in (None, "first", "extra"), payload
        secret = self.agents.get(agent_id)
        if secret is None or not hmac.compare_digest(
                proof(secret, nonce, agent_id, instance, role), got):
            with self.lock:
                self.auth_failures += 1
                self.lock.notify_all()
            t.close_ws(1008, b"authentication failed")
            time.sleep(0.2)
            s.close()
            return None
        t.agent_id = agent_id
        t.send_text("FGT/1 OK %d" % self.heartbeat)
        return t

    def wait_tunnels(self, n, timeout=10):
        """The n-th authenticated tunnel (1-based), once it has the agent's SETTINGS."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.tunnels) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%d tunnel(s) after %ss, wanted %d"
                                       % (len(self.tunnels), timeout, n))
                self.lock.wait(left)
            t = self.tunnels[n - 1]
        t.settings_seen.wait(timeout)
        return t

    def wait_accepts(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.accepts) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%d connection(s), wanted %d" % (len(self.accepts), n))
                self.lock.wait(left)
            return list(self.accepts)
