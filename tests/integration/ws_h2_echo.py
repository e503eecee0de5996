"""A WebSocket echo destination that speaks HTTP/2 (python3-h2, one thread per connection) for
the tests of WebSocket to HTTP/2 destinations: h2c by prior knowledge, or h2 over TLS with the
ALPN protocols given.

- Over HTTP/2 it announces SETTINGS_ENABLE_CONNECT_PROTOCOL = connect_protocol (RFC 8441 3: 1,
  or 0; None announces nothing, which means 0), and answers an extended CONNECT with :protocol websocket with 200,
  then echoes every WebSocket frame of the stream's DATA back unmasked (RFC 6455 5.1), within
  the peer's flow-control windows. A close frame is echoed, then the stream ends (END_STREAM).
- The path /refuse gets 403; /subproto answers with sec-websocket-protocol: chat; /stall
  opens the tunnel but never reads it (the stream's window is never given back).
- A connection that does not start with the HTTP/2 preface (or TLS with ALPN http/1.1) is an
  HTTP/1.1 WebSocket handshake (RFC 6455 4.2.2: the 101 with Sec-WebSocket-Accept), then the
  same echo over the socket: the fallback of a gateway whose peer did not allow extended
  CONNECT.

`handshakes` lists what arrived: ("h2", {field: value}) or ("http/1.1", {field: value}) with
lowercase names; `resets` the ids of the streams the gateway reset."""
import base64
import hashlib
import socket
import ssl
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings

from peers import ThreadedServer, server_context

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def unmask(data, mask):
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


class Frames:
    """Client frames (masked) in, the same frames unmasked out (RFC 6455 5.2)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        """Returns [(opcode, raw unmasked frame)] for every complete frame."""
        self.buf += data
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                return out
            n, off = b[1] & 0x7f, 2
            if n == 126:
                if len(b) < 4:
                    return out
                n, off = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return out
                n, off = struct.unpack("!Q", b[2:10])[0], 10
            masked = b[1] & 0x80
            mlen = 4 if masked else 0
            if len(b) < off + mlen + n:
                return out
            payload = bytes(b[off + mlen:off + mlen + n])
            if masked:
                payload = unmask(payload, bytes(b[off:off + 4]))
            head = bytes([b[0]])
            if n < 126:
                head += bytes([n])
            elif n < 65536:
                head += bytes([126]) + struct.pack("!H", n)
            else:
                head += bytes([127]) + struct.pack("!Q", n)
            out.append((b[0] & 0x0f, head + payload))
            del self.buf[:off + mlen + n]


class WsH2Echo(ThreadedServer):
    def __init__(self, connect_protocol=1, tls=None, alpn=("h2", "http/1.1")):
        """tls: (certfile, keyfile) or None for h2c (and HTTP/1.1 on the same port)."""
        super().__init__()
        self.connect_protocol = connect_protocol
        self.ctx = server_context(tls, alpn)
        self.url = ("https" if tls else "http") + "://127.0.0.1:%d" % self.port
        self.handshakes = []
        self.resets = []
        self.alpn_seen = []
        self.start()

    def _serve(self, s):
        try:
            if self.ctx:
                s = self.ctx.wrap_socket(s, server_side=True)
                self.alpn_seen.append(s.selected_alpn_protocol())
                if s.selected_alpn_protocol() == "h2":
                    return self._serve_h2(s, b"")
                return self._serve_h1(s, b"")
            first = b""
            while len(first) < len(PREFACE) and PREFACE.startswith(first):
                d = s.recv(len(PREFACE) - len(first))
                if not d:
                    return
                first += d
            if first == PREFACE:
                return self._serve_h2(s, first)
            return self._serve_h1(s, first)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    # ---- HTTP/1.1 ----

    def _serve_h1(self, s, buf):
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            fields[k.strip().lower()] = v.strip()
        fields[":request-line"] = lines[0]
        self.handshakes.append(("http/1.1", fields))
        if lines[0].split(" ")[1].startswith("/refuse"):
            s.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        key = fields.get("sec-websocket-key", "").encode()
        acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        frames = Frames()
        data = rest
        while True:
            for op, raw in frames.feed(data):
                s.sendall(raw)
                if op == 8:
                    s.shutdown(socket.SHUT_WR)
            data = s.recv(1 << 20)
            if not data:
                return

    # ---- HTTP/2 ----

    def _serve_h2(self, s, first):
        cfg = h2.config.H2Configuration(client_side=False, validate_inbound_headers=True)
        conn = h2.connection.H2Connection(cfg)
        initial = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                   h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536}
        if self.connect_protocol is not None:
            initial[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = self.connect_protocol
        conn.local_settings = h2.settings.Settings(client=False, initial_values=initial)
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        st = {}  # stream id -> {"frames": Frames, "out": bytearray, "end": bool}
        data = first
        while True:
            if data:
                for ev in conn.receive_data(data):
                    self._event(conn, st, ev)
            self._pump(conn, st)
            out = conn.data_to_send()
            if out:
                s.sendall(out)
            data = s.recv(1 << 20)
            if not data:
                return

    def _event(self, conn, st, ev):
        if isinstance(ev, h2.events.RequestReceived):
            f = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes)
                 else v for k, v in ev.headers}
            self.handshakes.append(("h2", f))
            sid = ev.stream_id
            if f.get(":method") != "CONNECT" or f.get(":protocol") != "websocket":
                conn.send_headers(sid, [(":status", "400")], end_stream=True)
            elif f.get(":path", "").startswith("/refuse"):
                conn.send_headers(sid, [(":status", "403"), ("content-length", "7")])
                conn.send_data(sid, b"refused", end_stream=True)
            else:
                extra = [("sec-websocket-protocol", "chat")] \
                    if f.get(":path", "").startswith("/subproto") else []
                conn.send_headers(sid, [(":status", "200")] + extra)
                st[sid] = {"frames": Frames(), "out": bytearray(), "end": False, "closed": False,
                           "stall": f.get(":path", "").startswith("/stall")}
        elif isinstance(ev, h2.events.DataReceived):
            r = st.get(ev.stream_id)
            if r is not None and r["stall"]:
                return
            if ev.flow_controlled_length:
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if r is None or r["closed"]:
                return
            for op, raw in r["frames"].feed(ev.data):
                r["out"] += raw
                if op == 8:  # RFC 6455 5.5.1: echo the close, then end our sending
                    r["end"] = True
        elif isinstance(ev, h2.events.StreamEnded):
            r = st.get(ev.stream_id)
            if r is not None:
                r["end"] = True
        elif isinstance(ev, h2.events.StreamReset):
            self.resets.append(ev.stream_id)
            st.pop(ev.stream_id, None)

    def _pump(self, conn, st):
        """Send what each stream has queued, as the windows allow."""
        for sid, r in list(st.items()):
            while r["out"]:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                           len(r["out"]))
                if room <= 0:
                    break
                conn.send_data(sid, bytes(r["out"][:room]))
                del r["out"][:room]
            if not r["out"] and r["end"] and not r["closed"]:
                r["closed"] = True
                conn.end_stream(sid)
