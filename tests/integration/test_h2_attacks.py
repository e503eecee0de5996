"""Known attacks on an HTTP/2 server, scripted on raw frames (h2raw.py) against one gateway for
the module (one worker, so its RSS can be read from /proc). For each attack: the attacker gets
what docs/http2.md promises (GOAWAY with its code, a reset, a 431), a second, well-behaved client
is served while the attacker's connection is still open, and the worker's RSS stays bounded.
Also the HTTP/2 stream gauge of `show metrics`."""
import re
import socket
import struct
import threading
import time

import pytest

from conftest import SANITIZER_RE, Gateway, Upstream, base_config, free_port
from h2raw import (CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM,
                   GOAWAY, HEADERS, INITIAL_WINDOW_SIZE, NO_ERROR, PING, RST_STREAM, SETTINGS,
                   WINDOW_UPDATE, Client, frame, request_fields, rss_kib, settings_payload)

BIG = 16 * 1024 * 1024
RSS_SLACK_KIB = 40 * 1024  # request pools and buffers kept for reuse, allocator slack


class BlackHole:
    """A destination that accepts connections and never reads or answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.conns.append(s)

    def close(self):
        self.stop = True
        self.sock.close()
        for s in self.conns:
            s.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2attack")
    files = tmp / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(b"z" * BIG)
    up = Upstream().start()
    hole = BlackHole()
    port = free_port()
    routes = [
        {"id": "direct", "match": {"path": "/direct/{**rest}"},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": "ok"}},
        {"id": "static", "match": {"path": "/files/{**rest}"}, "static": {"root": str(files)}},
        {"id": "hole", "match": {"path": "/hole/{**rest}"}, "clusterId": "hole"},
        {"id": "proxy", "match": {"path": "/{**rest}"}, "clusterId": "c"},
    ]
    clusters = [
        {"id": "c", "destinations": [{"id": "d1", "address": "http://127.0.0.1:%d" % up.port}]},
        {"id": "hole", "destinations": [
            {"id": "h1", "address": "http://127.0.0.1:%d" % hole.port}]},
    ]
    cfg = base_config(tmp, port, routes=routes, clusters=clusters, workers=1)
    srv = cfg["servers"][0]
    srv["http2"] = {"h2c": True}
    srv["timeouts"] = {"send": "2s"}
    g = Gateway(cfg, tmp).start()
    yield g
    g.stop()
    # a sanitizer build reports memory errors on stderr or in the error log
    report = SANITIZER_RE.search(g.stderr() + g.error_log())
    hole.close()
    up.stop()
    assert report is None, (g.stderr() + g.error_log())[-3000:]


def worker_pid(gw):
    return gw.workers()[0]["pid"]


def well_behaved(gw):
    """A second client, on its own connection, is served."""
    cl = Client(gw.port)
    r = cl.response(cl.request(path="/direct/ok"))
    cl.close()
    assert r["status"] == 200 and r["body"] == b"ok"


@pytest.fixture
def bounded(gw):
    """Worker RSS before the test and after it must differ by less than RSS_SLACK_KIB."""
    pid = worker_pid(gw)
    before = rss_kib(pid)
    peak = [before]
    yield lambda: peak.append(rss_kib(pid))
    peak.append(rss_kib(pid))
    assert worker_pid(gw) == pid, "the worker died"
    assert max(peak) - before < RSS_SLACK_KIB, "worker RSS %d KiB -> peak %d KiB" % (
        before, max(peak))


def flood(cl, data, times):
    try:
        for _ in range(times):
            cl.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_rapid_reset_cve_2023_44487(gw, bounded):
    cl = Client(gw.port)
    out = b""
    for _ in range(3000):
        sid = cl.new_id()
        out += frame(HEADERS, END_HEADERS, sid, cl.block(request_fields(path="/slow?ms=1000")))
        out += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
    flood(cl, out, 1)
    well_behaved(gw)
    bounded()
    g = cl.goaway(timeout=10)
    assert g is not None and g.error_code in (ENHANCE_YOUR_CALM, 2)  # ours or nghttp2's budget
    cl.close()


def test_continuation_flood_cve_2024_27316(gw, bounded):
    cl = Client(gw.port)
    cl.handshake()
    sid = cl.new_id()
    cl.send(frame(HEADERS, 0, sid, cl.block(request_fields())))
    # endless CONTINUATION without END_HEADERS, each adding fields the decoder must process
    piece = b"".join(b"\x40\x05x-abc\x88" + b"a" * 8 for _ in range(500))
    flood(cl, frame(CONTINUATION, 0, sid, piece), 2000)
    well_behaved(gw)
    bounded()
    g = cl.goaway()
    assert g is not None and g.error_code != NO_ERROR
    cl.close()


def test_settings_flood(gw, bounded):
    cl = Client(gw.port)
    flood(cl, frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 65535)])) * 100,
          50)
    well_behaved(gw)
    bounded()
    # GOAWAY, or a plain close once nghttp2's queue of unread ACKs is full (ERR_FLOODED)
    g = cl.goaway()
    assert g is None or g.error_code == ENHANCE_YOUR_CALM
    assert cl.until(lambda f: False) is None
    cl.close()


def test_ping_flood(gw, bounded):
    cl = Client(gw.port)
    flood(cl, frame(PING, 0, 0, b"floodxxx") * 100, 50)
    well_behaved(gw)
    bounded()
    g = cl.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    cl.close()


def test_empty_data_frame_flood(gw, bounded):
    cl = Client(gw.port)
    sid = cl.request(path="/slow?ms=3000", method="POST", end=False)
    flood(cl, frame(DATA, 0, sid, b"") * 100, 50)
    well_behaved(gw)
    bounded()
    g = cl.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    cl.close()


def test_hpack_bomb(gw, bounded):
    cl = Client(gw.port)
    cl.handshake()
    # one 4000-byte field into the dynamic table (literal with incremental indexing) ...
    big = b"\x40\x05x-big\x7f" + bytes([0x80 | ((4000 - 127) & 0x7f), (4000 - 127) >> 7]) + \
        b"b" * 4000
    base = b"\x82\x86\x84\x01\x07h2.test"
    sids = []
    for i in range(20):
        sid = cl.new_id()
        # ... then referenced 16000 times (index 62, one byte each): 64 MB of fields per block
        hb = base + (big if i == 0 else b"") + b"\xbe" * (16000 - (len(big) if i == 0 else 0))
        cl.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, hb[:16384]))
        sids.append(sid)
    for sid in sids:
        assert cl.response(sid, timeout=10)["status"] == 431
    well_behaved(gw)
    cl.close()


def test_stream_id_exhaustion(gw, bounded):
    cl = Client(gw.port)
    cl.handshake()
    sid = cl.request(sid=0x7ff00001)
    goaways, status = [], None
    while len(goaways) < 2:  # the shutdown notice, then the final GOAWAY naming this stream
        f = cl.read_frame()
        assert f is not None, "closed before the final GOAWAY"
        if f.type == GOAWAY:
            goaways.append((f.error_code, f.last_stream_id))
        elif f.type == HEADERS and f.sid == sid:
            status = dict(f.fields)[":status"]
    assert status == "200"
    assert goaways == [(NO_ERROR, 2 ** 31 - 1), (NO_ERROR, sid)]
    well_behaved(gw)


def test_zero_window_stall(gw, bounded):
    cl = Client(gw.port, settings=[(INITIAL_WINDOW_SIZE, 0)])
    cl.handshake()
    sid = cl.request(path="/files/big.bin")
    well_behaved(gw)
    r = cl.response(sid, timeout=8, ack_data=False)
    assert r["rst"] == CANCEL and r["body"] == b""  # reset after timeouts.send (2s)
    # the connection goes on: a new stream, given a window (its initial one is 0 too, where it
    # would be reset after 2 s as well), is answered in full
    sid = cl.request()
    cl.window(1 << 16, sid)
    r = cl.response(sid)
    assert r["status"] == 200 and r["rst"] is None, r
    cl.close()


def test_many_streams_holding_upload_windows(gw, bounded):
    """128 streams each filling its 1 MiB upload window towards a destination that never reads:
    the connection window (8 MiB) bounds what the worker holds."""
    cl = Client(gw.port)
    cl.handshake()
    sids = [cl.request(path="/hole/up", method="POST", end=False) for _ in range(120)]
    chunk = b"u" * 16384
    sent = 0
    cl.sock.settimeout(0.5)
    try:
        for _ in range(64):
            for sid in sids:
                cl.sock.sendall(frame(DATA, 0, sid, chunk))
                sent += len(chunk)
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    bounded()
    well_behaved(gw)
    cl.close()


def test_client_that_never_reads(gw, bounded):
    """Large windows, eight 16 MiB downloads, and no reading: the worker keeps a bounded
    output, and the send timeout closes the connection."""
    # the streams of an earlier test's connection go once the worker has seen it close
    deadline = time.monotonic() + 5
    while prom(gw, "fastgateway_http2_streams") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    open0 = prom(gw, "fastgateway_http2_streams")
    total0 = prom(gw, "fastgateway_http2_streams_total")
    cl = Client(gw.port, settings=[(INITIAL_WINDOW_SIZE, 2 ** 31 - 1)])
    cl.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    cl.window(2 ** 31 - 1 - 65535)
    for _ in range(8):
        cl.request(path="/files/big.bin")
    for _ in range(4):
        time.sleep(0.5)
        bounded()
        well_behaved(gw)
    # the worker stops reading a connection whose output is full, so the later requests may
    # still wait in the socket: at least the first was taken
    assert prom(gw, "fastgateway_http2_streams_total") >= total0 + 1
    # nothing read: once the socket takes nothing for timeouts.send (2s) the connection ends
    # and its streams go (the kernel's buffers delay when "nothing" begins)
    deadline = time.monotonic() + 20
    while prom(gw, "fastgateway_http2_streams") > open0 and time.monotonic() < deadline:
        time.sleep(0.2)
        bounded()
    assert prom(gw, "fastgateway_http2_streams") == open0
    cl.close()


def test_many_streams_with_closed_windows_share_a_connection_budget(gw, bounded):
    """128 proxied downloads whose client opens no window, from a destination that sends as
    fast as it can: the streams share the connection's 1 MiB budget (each then holds its share
    and one destination read) instead of holding 256 KiB each (32 MiB)."""
    pid = worker_pid(gw)
    before = rss_kib(pid)
    open0 = prom(gw, "fastgateway_http2_streams")
    cl = Client(gw.port, settings=[(INITIAL_WINDOW_SIZE, 0)])
    cl.handshake()
    for _ in range(128):
        cl.request(path="/bytes/%d" % (64 * 1024 * 1024))
    peak = before
    for _ in range(8):
        time.sleep(0.5)
        peak = max(peak, rss_kib(pid))
    well_behaved(gw)
    cl.close()
    streams_back_to(gw, open0)
    assert peak - before < 20 * 1024, "worker RSS %d KiB -> peak %d KiB" % (before, peak)


def test_one_byte_window_update_flood(gw, bounded):
    """WINDOW_UPDATE is outside the control-frame budget (a slow reader legitimately sends
    many): 300,000 one-byte increments on the connection and on eight open downloads cost the
    worker only the bytes they let out, and a second client is served meanwhile."""
    cl = Client(gw.port, settings=[(INITIAL_WINDOW_SIZE, 0)])
    cl.handshake()
    sids = [cl.request(path="/files/big.bin") for _ in range(8)]
    burst = b"".join(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 1)) for sid in [0] + sids)
    stop = threading.Event()

    def drain():  # read what the increments let out, so the flood is not stopped by output
        try:
            while not stop.is_set() and cl.sock.recv(1 << 20):
                pass
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for _ in range(30):
            cl.sock.sendall(burst * 1000)
            bounded()
        well_behaved(gw)
    finally:
        stop.set()
        cl.close()
        reader.join(5)


def test_large_field_sections_on_every_stream_stay_bounded(gw, bounded):
    """128 streams, each with 95 fields of 560 bytes (55 KiB, within maxHeaderListSize and
    limits.maxHeaders), to a destination that never reads: the worker holds each request's
    fields and its encoded head, within about 10 MiB, and serves a second client."""
    before = rss_kib(worker_pid(gw))
    open0 = prom(gw, "fastgateway_http2_streams")
    cl = Client(gw.port)
    cl.handshake()
    extra = [("x-f%02d" % i, "v" * 560) for i in range(95)]
    for _ in range(128):
        sid = cl.new_id()
        block = cl.block(request_fields(path="/hole/fields", extra=extra))
        parts = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = frame(HEADERS, END_STREAM | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0])
        for k, part in enumerate(parts[1:], 2):
            out += frame(CONTINUATION, END_HEADERS if k == len(parts) else 0, sid, part)
        cl.send(out)
    time.sleep(1)
    grown = rss_kib(worker_pid(gw)) - before
    well_behaved(gw)
    cl.ping_roundtrip()  # the connection is alive, its streams waiting
    cl.close()
    streams_back_to(gw, open0)
    assert grown < 24 * 1024, "worker RSS grew by %d KiB" % grown


def streams_back_to(gw, n, timeout=20):
    """Wait until the worker has closed the streams of a connection the test closed, so that
    the next test sees its own."""
    deadline = time.monotonic() + timeout
    while prom(gw, "fastgateway_http2_streams") > n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert prom(gw, "fastgateway_http2_streams") == n


def prom(gw, name):
    text = gw.status("show metrics")["text"]
    m = re.search(r"^%s (\S+)$" % name, text, re.M)
    return float(m.group(1))


def test_http2_streams_gauge_in_show_metrics(gw):
    open0 = prom(gw, "fastgateway_http2_streams")
    total0 = prom(gw, "fastgateway_http2_streams_total")
    cl = Client(gw.port)
    cl.handshake()
    sids = [cl.request(path="/slow?ms=1500") for _ in range(3)]
    deadline = time.monotonic() + 1
    while prom(gw, "fastgateway_http2_streams") < open0 + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert prom(gw, "fastgateway_http2_streams") == open0 + 3
    assert prom(gw, "fastgateway_http2_streams_total") == total0 + 3
    assert all(cl.response(s)["status"] == 200 for s in sids)
    assert prom(gw, "fastgateway_http2_streams") == open0
    cl.close()
