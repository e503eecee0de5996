"""A scripted HTTP/2 client on raw sockets for the conformance and attack tests.

Frames are built by hand (frame()), so a test can send what python3-h2 refuses to: bad lengths,
wrong stream ids, broken HPACK. Valid header blocks come from python3-h2's HPACK encoder.
The client sends only what a test says (no automatic WINDOW_UPDATE); it answers the server's
SETTINGS with an ACK unless told not to."""
import socket
import struct
import time

from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
# flags
ACK = END_STREAM = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
ENABLE_CONNECT_PROTOCOL = 8


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings_payload(entries):
    return b"".join(struct.pack(">HI", k, v) for k, v in entries)


class Frame:
    def __init__(self, ftype, flags, sid, payload):
        self.type, self.flags, self.sid, self.payload = ftype, flags, sid, payload

    @property
    def error_code(self):
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        return None

    @property
    def last_stream_id(self):
        return struct.unpack(">I", self.payload[:4])[0] & 0x7fffffff

    def __repr__(self):
        return "Frame(type=%d flags=%#x sid=%d len=%d)" % (self.type, self.flags, self.sid,
                                                            len(self.payload))


def request_fields(path="/direct/x", method="GET", authority="h2.test", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority)] + list(extra)


class Client:
    def __init__(self, port, settings=(), preface=True, auto_ack=True, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.enc = Encoder()
        self.dec = Decoder()
        self.buf = b""
        self.auto_ack = auto_ack
        self.server_settings = {}
        self.settings_acked = 0  # ACKs of our SETTINGS seen
        self.got_settings = False
        self.backlog = []  # frames of other streams that response() read past
        self.next_id = 1
        if preface:
            self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings)))

    # ---- sending ----
    def send(self, data):
        self.sock.sendall(data)

    def block(self, fields):
        return self.enc.encode(fields)

    def new_id(self):
        sid = self.next_id
        self.next_id += 2
        return sid

    def request(self, fields=None, end=True, sid=None, **kw):
        sid = self.new_id() if sid is None else sid
        fields = request_fields(**kw) if fields is None else fields
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid,
                        self.block(fields)))
        return sid

    def window(self, n, sid=0):
        self.send(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", n)))

    # ---- receiving ----
    def read_frame(self, timeout=5):
        """The next frame, or None when the server closed (or reset) the connection."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = time.monotonic() + timeout
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame within %ss" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        f = Frame(self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7fffffff,
                  self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        f.fields = None
        if f.type == HEADERS:  # every block, so the decoder's dynamic table stays in step
            f.fields = self.dec.decode(f.payload)
        if f.type == SETTINGS:
            if f.flags & ACK:
                self.settings_acked += 1
            else:
                self.got_settings = True
                for i in range(0, len(f.payload) - 5, 6):
                    k, v = struct.unpack(">HI", f.payload[i:i + 6])
                    self.server_settings[k] = v
                if self.auto_ack:
                    self.send(frame(SETTINGS, ACK, 0))
        return f

    def handshake(self):
        """Until the server's SETTINGS arrived and our SETTINGS were acknowledged; ACKs theirs
        and makes sure the ACK was processed (a PING round trip after it)."""
        while not self.got_settings or self.settings_acked == 0:
            f = self.read_frame()
            assert f is not None, "connection closed during the handshake"
        self.ping_roundtrip()
        return self

    def ping_roundtrip(self, data=b"roundtrp", timeout=5):
        """Sends a PING and reads until its ACK; returns the frames seen on the way, or raises
        when the connection ends first."""
        self.send(frame(PING, 0, 0, data))
        seen = []
        while True:
            f = self.read_frame(timeout)
            assert f is not None, "connection closed before the PING ACK (saw %r)" % seen
            if f.type == PING and f.flags & ACK and f.payload == data:
                return seen
            assert f.type != GOAWAY, "GOAWAY code %d before the PING ACK" % f.error_code
            seen.append(f)

    def until(self, pred, timeout=5):
        """Frames until pred(frame); returns that frame, or None when the connection closed."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.05, deadline - time.monotonic()))
            if f is None or pred(f):
                return f

    def goaway(self, timeout=5):
        """The GOAWAY the server sends (None if it closed without one)."""
        try:
            return self.until(lambda f: f.type == GOAWAY, timeout)
        except (ConnectionResetError, BrokenPipeError):
            return None

    def response(self, sid, timeout=5, ack_data=True):
        """Reads until stream sid ends: {"status", "headers", "body", "rst", "goaway"}."""
        out = {"headers": [], "body": b"", "rst": None, "goaway": None, "status": None}
        skipped = []
        try:
            return self._response(sid, out, time.monotonic() + timeout, ack_data, skipped)
        finally:
            self.backlog[:0] = skipped

    def _response(self, sid, out, deadline, ack_data, skipped):
        while True:
            f = self.read_frame(max(0.05, deadline - time.monotonic()))
            if f is None:
                return out
            if f.type == GOAWAY:
                out["goaway"] = f.error_code
                return out
            if f.sid != sid:
                if f.type in (HEADERS, DATA, RST_STREAM):
                    skipped.append(f)
                continue
            if f.type == HEADERS:
                fields = f.fields
                out["headers"].append(fields)
                st = dict(fields).get(":status")
                if st and int(st) >= 200:
                    out["status"] = int(st)
            elif f.type == DATA:
                out["body"] += f.payload
                if ack_data and f.payload:
                    self.window(len(f.payload))
                    self.window(len(f.payload), sid)
            elif f.type == RST_STREAM:
                out["rst"] = f.error_code
                return out
            if f.flags & END_STREAM and f.type in (HEADERS, DATA):
                return out

    def stream_error(self, sid, timeout=5):
        """("rst", code) for a RST_STREAM on sid, ("goaway", code) for a connection error, or
        ("closed", None) / ("response", status) otherwise."""
        r = self.response(sid, timeout)
        if r["rst"] is not None:
            return ("rst", r["rst"])
        if r["goaway"] is not None:
            return ("goaway", r["goaway"])
        if r["status"] is not None:
            return ("response", r["status"])
        return ("closed", None)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def worker_pids(gw):
    return [w["pid"] for w in gw.workers()]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
