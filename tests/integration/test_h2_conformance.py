"""HTTP/2 frame-level conformance of the front end (worker/http/http2.c): what h2spec checks,
driven on raw sockets with hand-built frames (h2raw.py) against one gateway for the module.

Each test is named after the RFC 9113 (or RFC 7541, HPACK) section whose rule it checks and
asserts the error code or behaviour that section requires. Where the RFC asks for a stream error
an endpoint may also end the connection with the same code (RFC 9113 5.4), so stream-error tests
accept either, and then check that a stream error left the connection usable."""
import json
import struct

import pytest

from conftest import SANITIZER_RE, Gateway, Upstream, base_config, free_port
from h2raw import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENABLE_CONNECT_PROTOCOL,
                   ENABLE_PUSH, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, HEADERS,
                   INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, PADDED, PING, PRIORITY, PRIORITY_FLAG,
                   PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM, SETTINGS, STREAM_CLOSED,
                   COMPRESSION_ERROR, WINDOW_UPDATE, Client, frame, request_fields,
                   settings_payload)

STREAM_WINDOW = 16384
BIG = 256 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2conf")
    files = tmp / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    up = Upstream().start()
    port = free_port()
    routes = [
        {"id": "direct", "match": {"path": "/direct/{**rest}"},
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": "ok"}},
        {"id": "static", "match": {"path": "/files/{**rest}"}, "static": {"root": str(files)}},
        {"id": "proxy", "match": {"path": "/{**rest}"}, "clusterId": "c"},
    ]
    clusters = [{"id": "c", "destinations": [
        {"id": "d1", "address": "http://127.0.0.1:%d" % up.port}]}]
    cfg = base_config(tmp, port, routes=routes, clusters=clusters, workers=1)
    cfg["servers"][0]["http2"] = {"h2c": True, "initialWindowSize": "16k",
                                  "connectionWindowSize": "64k", "maxConcurrentStreams": 8}
    g = Gateway(cfg, tmp).start()
    yield g
    g.stop()
    # a sanitizer build reports memory errors on stderr or in the error log
    report = SANITIZER_RE.search(g.stderr() + g.error_log())
    up.stop()
    assert report is None, (g.stderr() + g.error_log())[-3000:]


@pytest.fixture
def c(gw):
    cl = Client(gw.port)
    cl.handshake()
    yield cl
    cl.close()


def conn_error(cl, code, timeout=5):
    g = cl.goaway(timeout)
    assert g is not None, "connection closed without GOAWAY"
    assert g.error_code == code, "GOAWAY code %d, want %d" % (g.error_code, code)
    assert cl.until(lambda f: False, timeout=5) is None  # then the connection closes


def stream_error(cl, sid, code):
    kind, got = cl.stream_error(sid)
    assert (kind, got) in (("rst", code), ("goaway", code)), (kind, got)
    if kind == "rst":
        assert ok_request(cl) == 200  # a stream error leaves the connection in service


def ok_request(cl, path="/direct/x"):
    return cl.response(cl.request(path=path))["status"]


def block(cl, fields=None, **kw):
    return cl.block(request_fields(**kw) if fields is None else fields)


# ---- 3.4 connection preface ----

def test_3_4_server_preface_is_settings(gw):
    cl = Client(gw.port)
    f = cl.read_frame()
    assert f.type == SETTINGS and not f.flags & ACK and f.sid == 0
    cl.close()


def test_3_4_invalid_preface(gw):
    cl = Client(gw.port, preface=False)
    cl.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0))
    data = cl.sock.recv(4096)  # not HTTP/2: the HTTP/1.1 front end refuses the request line
    assert data == b"" or data.startswith((b"HTTP/1.1 4", b"HTTP/1.1 505"))
    cl.close()


def test_3_4_preface_not_followed_by_settings(gw):
    cl = Client(gw.port, preface=False)
    cl.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(PING, 0, 0, b"x" * 8))
    conn_error(cl, PROTOCOL_ERROR)


def test_3_4_settings_acknowledged(gw):
    cl = Client(gw.port, settings=[(INITIAL_WINDOW_SIZE, 65535)])
    assert cl.until(lambda f: f.type == SETTINGS and f.flags & ACK) is not None
    cl.close()


# ---- 4.1 / 4.2 frame format and size ----

def test_4_1_unknown_frame_type_ignored(c):
    c.send(frame(0xfa, 0, 0, b"abc") + frame(0xfa, 0, 1, b""))
    assert ok_request(c) == 200


def test_4_1_unknown_flags_ignored(c):
    c.send(frame(PING, 0x16, 0, b"flagsxxx"))
    f = c.until(lambda f: f.type == PING)
    assert f.flags == ACK and f.payload == b"flagsxxx"


def test_4_1_reserved_bit_ignored(c):
    sid = c.new_id()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid | 0x80000000, block(c)))
    assert c.response(sid)["status"] == 200


def test_4_2_frame_size_exceeds_max(c):
    sid = c.request(method="POST", end=False)
    c.send(frame(DATA, 0, sid, b"x" * 16385))
    conn_error(c, FRAME_SIZE_ERROR)


def test_4_2_headers_frame_exceeds_max(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                 block(c, extra=[("x-pad", "~" * 17000)])))
    conn_error(c, FRAME_SIZE_ERROR)


def test_4_2_max_size_frame_accepted(c):
    sid = c.request(method="POST", end=False, extra=[("content-length", "16384")])
    c.send(frame(DATA, END_STREAM, sid, b"x" * 16384))
    assert c.response(sid)["status"] == 200


def test_4_2_settings_frame_wrong_length(c):
    c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"))
    conn_error(c, FRAME_SIZE_ERROR)


def test_4_3_header_block_decoding_error(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82\x86\x84\x41\x8f\xff"))
    conn_error(c, COMPRESSION_ERROR)


# ---- 5.1 stream states ----

def test_5_1_idle_data(c):
    c.send(frame(DATA, 0, 1, b"x"))
    conn_error(c, PROTOCOL_ERROR)


def test_5_1_idle_rst_stream(c):
    c.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    conn_error(c, PROTOCOL_ERROR)


def test_5_1_idle_window_update(c):
    c.window(100, 1)
    conn_error(c, PROTOCOL_ERROR)


def test_5_1_idle_continuation(c):
    c.send(frame(CONTINUATION, END_HEADERS, 1, block(c)))
    conn_error(c, PROTOCOL_ERROR)


def test_5_1_half_closed_remote_data(c):
    sid = c.request(path="/slow?ms=500")
    c.send(frame(DATA, END_STREAM, sid, b"late"))
    stream_error(c, sid, STREAM_CLOSED)


def test_5_1_half_closed_remote_headers(c):
    sid = c.request(path="/slow?ms=500")
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block(c, [("x-trailer", "1")])))
    stream_error(c, sid, STREAM_CLOSED)


def test_5_1_half_closed_remote_rst_and_priority_allowed(c):
    sid = c.request(path="/slow?ms=300")
    c.send(frame(PRIORITY, 0, sid, struct.pack(">IB", 0, 15)))
    c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    assert ok_request(c) == 200


def test_5_1_closed_data_after_end_stream(c):
    sid = c.request()
    assert c.response(sid)["status"] == 200
    c.send(frame(DATA, 0, sid, b"x"))
    conn_error(c, STREAM_CLOSED)


def test_5_1_closed_after_rst_stream(c):
    sid = c.request(path="/slow?ms=300", end=False)
    c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    c.send(frame(DATA, 0, sid, b"x"))
    kind, code = c.stream_error(sid)
    assert code == STREAM_CLOSED, (kind, code)


def test_5_1_closed_headers_after_rst_stream(c):
    sid = c.request(path="/slow?ms=300", end=False)
    c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block([("x-trailer", "1")])))
    kind, code = c.stream_error(sid)
    assert code == STREAM_CLOSED, (kind, code)


def test_5_1_1_even_stream_id(c):
    c.request(sid=2)
    conn_error(c, PROTOCOL_ERROR)


@pytest.mark.xfail(strict=True, reason="nghttp2 1.52 ignores a HEADERS block on a stream id "
                   "below the last one (it cannot tell a skipped id from a closed stream)")
def test_5_1_1_decreasing_stream_id(c):
    c.request(sid=5)
    c.request(sid=3)
    # the GOAWAY that never comes (xfail) would come at once, as in the other connection errors
    conn_error(c, PROTOCOL_ERROR, timeout=2)


def test_5_1_1_stream_id_reuse(c):
    sid = c.request()
    assert c.response(sid)["status"] == 200
    c.request(sid=sid)
    g = c.goaway()
    assert g is not None and g.error_code in (PROTOCOL_ERROR, STREAM_CLOSED)


def test_5_1_2_concurrent_streams_refused_before_ack(gw):
    cl = Client(gw.port, auto_ack=False)
    sids = [cl.request(path="/slow?ms=400") for _ in range(9)]
    assert cl.response(sids[8])["rst"] == REFUSED_STREAM
    assert cl.response(sids[0])["status"] == 200
    cl.close()


@pytest.mark.xfail(strict=True, reason="nghttp2 1.52 makes a stream past the acknowledged "
                   "limit a connection error (GOAWAY PROTOCOL_ERROR), docs/http2.md")
def test_5_1_2_concurrent_streams_refused_after_ack(c):
    assert c.server_settings[3] == 8
    sids = [c.request(path="/slow?ms=400") for _ in range(9)]
    # RFC 9113 5.1.2: a stream error, PROTOCOL_ERROR or REFUSED_STREAM
    r = c.response(sids[8])
    assert r["goaway"] is None and r["rst"] in (REFUSED_STREAM, PROTOCOL_ERROR), r
    assert all(c.response(s)["status"] == 200 for s in sids[:8])
    assert ok_request(c) == 200


def test_5_3_1_headers_self_dependency(c):
    sid = c.new_id()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, sid,
                 struct.pack(">IB", sid, 15) + block(c)))
    stream_error(c, sid, PROTOCOL_ERROR)


def test_5_3_1_priority_self_dependency(c):
    c.send(frame(PRIORITY, 0, 9, struct.pack(">IB", 9, 15)))
    stream_error(c, 9, PROTOCOL_ERROR)


def test_5_4_1_goaway_then_close(c):
    c.send(frame(PING, 0, 3, b"x" * 8))
    g = c.goaway()
    assert g.error_code == PROTOCOL_ERROR and g.last_stream_id == 0
    assert c.until(lambda f: False) is None


def test_5_5_unknown_frame_inside_header_block(c):
    sid = c.new_id()
    hb = block(c)
    c.send(frame(HEADERS, END_STREAM, sid, hb[:2]) + frame(0xfa, 0, 0, b"x") +
           frame(CONTINUATION, END_HEADERS, sid, hb[2:]))
    conn_error(c, PROTOCOL_ERROR)


# ---- 6.1 DATA ----

def test_6_1_data_stream_zero(c):
    c.send(frame(DATA, 0, 0, b"x"))
    conn_error(c, PROTOCOL_ERROR)


def test_6_1_data_padding_exceeds_length(c):
    sid = c.request(method="POST", end=False)
    c.send(frame(DATA, PADDED | END_STREAM, sid, bytes([10]) + b"abc"))
    conn_error(c, PROTOCOL_ERROR)


def test_6_1_data_padded_accepted(c):
    sid = c.request(method="POST", end=False, path="/echo", extra=[("content-length", "3")])
    c.send(frame(DATA, PADDED | END_STREAM, sid, bytes([5]) + b"abc" + b"\0" * 5))
    r = c.response(sid)
    assert r["status"] == 200 and json.loads(r["body"])["body"] == "abc"


# ---- 6.2 HEADERS ----

def test_6_2_headers_stream_zero(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 0, block(c)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_2_headers_padding_exceeds_length(c):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([200]) + block(c)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_2_headers_padded_with_priority_accepted(c):
    sid = c.new_id()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIORITY_FLAG, sid,
                 bytes([4]) + struct.pack(">IB", 0, 200) + block(c) + b"\0" * 4))
    assert c.response(sid)["status"] == 200


def test_6_2_headers_without_end_headers_then_data(c):
    sid = c.new_id()
    c.send(frame(HEADERS, 0, sid, block(c, method="POST")) + frame(DATA, 0, sid, b"x"))
    conn_error(c, PROTOCOL_ERROR)


# ---- 6.3 PRIORITY ----

def test_6_3_priority_stream_zero(c):
    c.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 15)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_3_priority_wrong_length(c):
    c.send(frame(PRIORITY, 0, 1, struct.pack(">I", 0)))
    kind, code = c.stream_error(1)
    assert code == FRAME_SIZE_ERROR, (kind, code)


def test_6_3_priority_on_idle_stream_tolerated(c):
    c.send(frame(PRIORITY, 0, 7, struct.pack(">IB", 0, 100)))
    c.send(frame(PRIORITY, 0, 3, struct.pack(">IB", 7, 10)))
    assert c.ping_roundtrip() == []
    sid = c.request(sid=1)
    assert c.response(sid)["status"] == 200
    assert c.response(c.request(sid=3))["status"] == 200  # a stream named by PRIORITY opens


def test_6_3_priority_on_closed_stream_tolerated(c):
    sid = c.request()
    assert c.response(sid)["status"] == 200
    c.send(frame(PRIORITY, 0, sid, struct.pack(">IB", 0, 1)))
    assert ok_request(c) == 200


# ---- 6.4 RST_STREAM ----

def test_6_4_rst_stream_stream_zero(c):
    c.send(frame(RST_STREAM, 0, 0, struct.pack(">I", 8)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_4_rst_stream_wrong_length(c):
    sid = c.request(path="/slow?ms=300")
    c.send(frame(RST_STREAM, 0, sid, b"\0\0\0\x08\0"))
    conn_error(c, FRAME_SIZE_ERROR)


def test_6_4_rst_stream_cancels_request(c):
    sid = c.request(path="/slow?ms=300")
    c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    # nothing more on the reset stream: the next request's answer comes first
    sid2 = c.request()
    f = c.until(lambda f: f.type in (HEADERS, DATA) and f.sid in (sid, sid2))
    assert f.sid == sid2


# ---- 6.5 SETTINGS ----

def test_6_5_settings_ack_with_payload(c):
    c.send(frame(SETTINGS, ACK, 0, settings_payload([(INITIAL_WINDOW_SIZE, 1)])))
    conn_error(c, FRAME_SIZE_ERROR)


def test_6_5_settings_nonzero_stream(c):
    c.send(frame(SETTINGS, 0, 1, b""))
    conn_error(c, PROTOCOL_ERROR)


def test_6_5_2_enable_push_invalid(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(ENABLE_PUSH, 2)])))
    conn_error(c, PROTOCOL_ERROR)


def test_6_5_2_initial_window_too_large(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 2 ** 31)])))
    conn_error(c, FLOW_CONTROL_ERROR)


def test_6_5_2_max_frame_size_too_small(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(MAX_FRAME_SIZE, 16383)])))
    conn_error(c, PROTOCOL_ERROR)


def test_6_5_2_max_frame_size_too_large(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(MAX_FRAME_SIZE, 2 ** 24)])))
    conn_error(c, PROTOCOL_ERROR)


def test_6_5_2_unknown_setting_ignored(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(0xff, 1)])))
    assert c.until(lambda f: f.type == SETTINGS and f.flags & ACK) is not None
    assert ok_request(c) == 200


def test_6_5_2_enable_connect_protocol_invalid(c):
    # RFC 8441 3: 0 or 1
    c.send(frame(SETTINGS, 0, 0, settings_payload([(ENABLE_CONNECT_PROTOCOL, 2)])))
    conn_error(c, PROTOCOL_ERROR)


def test_6_5_3_settings_ack(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 100000)])))
    f = c.until(lambda f: f.type == SETTINGS and f.flags & ACK)
    assert f is not None and f.payload == b""


def test_6_5_3_settings_applied_in_order(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 100),
                                                   (INITIAL_WINDOW_SIZE, 10)])))
    c.until(lambda f: f.type == SETTINGS and f.flags & ACK)
    sid = c.request(path="/files/big.bin")
    got = b""
    try:
        while True:
            f = c.read_frame(timeout=1)
            if f.type == DATA and f.sid == sid:
                got += f.payload
    except OSError:
        pass
    assert len(got) == 10  # the last value wins


# ---- 6.7 PING ----

def test_6_7_ping_answered(c):
    c.send(frame(PING, 0, 0, b"12345678"))
    f = c.until(lambda f: f.type == PING)
    assert f.flags == ACK and f.payload == b"12345678" and f.sid == 0


def test_6_7_ping_ack_not_answered(c):
    c.send(frame(PING, ACK, 0, b"unsolici"))
    assert c.ping_roundtrip() == []


def test_6_7_ping_nonzero_stream(c):
    c.send(frame(PING, 0, 1, b"x" * 8))
    conn_error(c, PROTOCOL_ERROR)


def test_6_7_ping_wrong_length(c):
    c.send(frame(PING, 0, 0, b"x" * 6))
    conn_error(c, FRAME_SIZE_ERROR)


# ---- 6.8 GOAWAY ----

def test_6_8_goaway_nonzero_stream(c):
    c.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_8_client_goaway_lets_streams_finish(c):
    sid = c.request(path="/slow?ms=200")
    c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    assert c.response(sid)["status"] == 200


def test_6_8_server_goaway_names_last_stream(c):
    sid = c.request()
    assert c.response(sid)["status"] == 200
    c.send(frame(PING, 0, 1, b"x" * 8))
    g = c.goaway()
    assert g.last_stream_id == sid


# ---- 6.9 WINDOW_UPDATE and flow control ----

def test_6_9_window_update_zero_increment_connection(c):
    c.window(0)
    conn_error(c, PROTOCOL_ERROR)


def test_6_9_window_update_zero_increment_stream(c):
    sid = c.request(path="/slow?ms=300")
    c.window(0, sid)
    stream_error(c, sid, PROTOCOL_ERROR)


def test_6_9_window_update_wrong_length(c):
    c.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\x01\0"))
    conn_error(c, FRAME_SIZE_ERROR)


def test_6_9_1_window_overflow_connection(c):
    c.window(2 ** 31 - 1)
    conn_error(c, FLOW_CONTROL_ERROR)


def test_6_9_1_window_overflow_stream(c):
    sid = c.request(path="/slow?ms=300")
    c.window(2 ** 31 - 1, sid)
    stream_error(c, sid, FLOW_CONTROL_ERROR)


def test_6_9_1_data_beyond_stream_window(c):
    assert c.server_settings[INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    sid = c.new_id()
    # one write, so that the gateway takes no body (opening the window) between the frames
    c.send(frame(HEADERS, END_HEADERS, sid, block(c, path="/slow?ms=2000", method="POST")) +
           frame(DATA, 0, sid, b"x" * 16384) + frame(DATA, 0, sid, b"x"))
    kind, code = c.stream_error(sid)
    assert code == FLOW_CONTROL_ERROR, (kind, code)


def test_6_9_1_sender_respects_window(c):
    sid = c.request(path="/files/big.bin")
    got = 0
    try:
        while True:
            f = c.read_frame(timeout=1)
            if f.type == DATA and f.sid == sid:
                got += len(f.payload)
    except OSError:
        pass
    assert got == 65535  # the default initial windows, not a byte more
    c.window(1000, sid)
    c.window(1000)
    more = 0
    try:
        while True:
            f = c.read_frame(timeout=1)
            if f.type == DATA and f.sid == sid:
                more += len(f.payload)
    except OSError:
        pass
    assert more == 1000


def test_6_9_2_negative_window_after_settings_change(c):
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 100)])))
    c.until(lambda f: f.type == SETTINGS and f.flags & ACK)
    sid = c.request(path="/files/big.bin")
    assert c.until(lambda f: f.type == DATA and f.sid == sid).payload == bytes(range(100))
    # window 100 - 100 = 0, then 50 - 100 = -50: a WINDOW_UPDATE of 60 leaves 10 to send
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 50)])))
    c.until(lambda f: f.type == SETTINGS and f.flags & ACK)
    c.window(60, sid)
    f = c.until(lambda f: f.type == DATA and f.sid == sid)
    assert len(f.payload) == 10 and f.payload == bytes(range(100, 110))


def test_6_9_2_settings_window_overflow(c):
    sid = c.request(path="/files/big.bin")
    c.until(lambda f: f.type == DATA and f.sid == sid)
    c.window(2 ** 31 - 1 - 65535, sid)
    c.send(frame(SETTINGS, 0, 0, settings_payload([(INITIAL_WINDOW_SIZE, 2 ** 31 - 1)])))
    # RFC 9113 6.9.2 wants a connection error; nghttp2 1.52 resets the stream that overflows
    kind, code = c.stream_error(sid)
    assert code == FLOW_CONTROL_ERROR, (kind, code)


# ---- 6.10 CONTINUATION ----

def test_6_10_continuation_without_headers(c):
    sid = c.request()
    c.response(sid)
    c.send(frame(CONTINUATION, END_HEADERS, sid, block(c)))
    conn_error(c, PROTOCOL_ERROR)


def test_6_10_interleaved_frame_in_header_block(c):
    hb = block(c)
    c.send(frame(HEADERS, END_STREAM, 1, hb[:3]) + frame(PING, 0, 0, b"x" * 8) +
           frame(CONTINUATION, END_HEADERS, 1, hb[3:]))
    conn_error(c, PROTOCOL_ERROR)


def test_6_10_continuation_on_other_stream(c):
    hb = block(c)
    c.send(frame(HEADERS, END_STREAM, 1, hb[:3]) + frame(CONTINUATION, END_HEADERS, 3, hb[3:]))
    conn_error(c, PROTOCOL_ERROR)


def test_6_10_continuation_stream_zero(c):
    hb = block(c)
    c.send(frame(HEADERS, END_STREAM, 1, hb[:3]) + frame(CONTINUATION, END_HEADERS, 0, hb[3:]))
    conn_error(c, PROTOCOL_ERROR)


def test_6_10_continuation_after_end_headers(c):
    sid = c.new_id()
    hb = block(c, path="/slow?ms=300")
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, hb) +
           frame(CONTINUATION, END_HEADERS, sid, block(c, [("x-more", "1")])))
    conn_error(c, PROTOCOL_ERROR)


def test_6_10_header_block_in_continuations_accepted(c):
    sid = c.new_id()
    hb = block(c, extra=[("x-a", "a" * 100)])
    c.send(frame(HEADERS, END_STREAM, sid, hb[:5]) + frame(CONTINUATION, 0, sid, hb[5:40]) +
           frame(CONTINUATION, END_HEADERS, sid, hb[40:]))
    assert c.response(sid)["status"] == 200


# ---- 8.1 HTTP message framing ----

def test_8_1_trailers_without_end_stream(c):
    sid = c.request(path="/slow?ms=300", method="POST", end=False)
    c.send(frame(DATA, 0, sid, b"x") +
           frame(HEADERS, END_HEADERS, sid, c.block([("x-trailer", "1")])))
    stream_error(c, sid, PROTOCOL_ERROR)


def test_8_1_1_content_length_larger_than_data(c):
    sid = c.request(path="/slow?ms=300", method="POST", end=False,
                    extra=[("content-length", "10")])
    c.send(frame(DATA, END_STREAM, sid, b"x" * 5))
    stream_error(c, sid, PROTOCOL_ERROR)


def test_8_1_1_content_length_smaller_than_data(c):
    sid = c.request(path="/slow?ms=300", method="POST", end=False,
                    extra=[("content-length", "2")])
    c.send(frame(DATA, END_STREAM, sid, b"x" * 5))
    stream_error(c, sid, PROTOCOL_ERROR)


def test_8_1_request_trailers_accepted(c):
    sid = c.request(path="/echo", method="POST", end=False)
    c.send(frame(DATA, 0, sid, b"abc") +
           frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block([("x-trailer", "1")])))
    r = c.response(sid)
    assert r["status"] == 200 and b"abc" in r["body"]


# ---- 8.2 fields ----

def bad_fields(c, fields):
    sid = c.new_id()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block(fields)))
    stream_error(c, sid, PROTOCOL_ERROR)


def test_8_2_uppercase_field_name(c):
    bad_fields(c, request_fields(extra=[("X-Upper", "1")]))


def test_8_2_1_invalid_character_in_name(c):
    bad_fields(c, request_fields(extra=[("x a", "1")]))


def test_8_2_1_crlf_in_value(c):
    bad_fields(c, request_fields(extra=[("x-a", "1\r\nx-b: 2")]))


def test_8_2_1_leading_space_in_value(c):
    # RFC 9113 8.2.1: "MUST NOT start or end with an ASCII whitespace character"
    bad_fields(c, request_fields(extra=[("x-a", " 1")]))


@pytest.mark.parametrize("name", ["connection", "keep-alive", "proxy-connection",
                                  "transfer-encoding", "upgrade"])
def test_8_2_2_connection_specific_field(c, name):
    bad_fields(c, request_fields(extra=[(name, "close" if name == "connection" else "x")]))


def test_8_2_2_te_other_than_trailers(c):
    bad_fields(c, request_fields(extra=[("te", "gzip")]))


def test_8_2_2_te_trailers_accepted(c):
    assert c.response(c.request(extra=[("te", "trailers")]))["status"] == 200


# ---- 8.3 pseudo-header fields ----

def test_8_3_unknown_pseudo_header(c):
    bad_fields(c, request_fields(extra=[(":foo", "bar")]))


def test_8_3_response_pseudo_header_in_request(c):
    bad_fields(c, request_fields(extra=[(":status", "200")]))


def test_8_3_pseudo_header_after_regular(c):
    f = request_fields()
    bad_fields(c, f[:2] + [("x-a", "1")] + f[2:])


def test_8_3_pseudo_header_in_trailers(c):
    sid = c.request(path="/slow?ms=300", method="POST", end=False)
    c.send(frame(DATA, 0, sid, b"x") +
           frame(HEADERS, END_HEADERS | END_STREAM, sid, c.block([(":path", "/x")])))
    stream_error(c, sid, PROTOCOL_ERROR)


@pytest.mark.parametrize("missing", [":method", ":scheme", ":path"])
def test_8_3_1_missing_pseudo_header(c, missing):
    bad_fields(c, [f for f in request_fields() if f[0] != missing])


@pytest.mark.parametrize("dup", [":method", ":scheme", ":path", ":authority"])
def test_8_3_1_duplicate_pseudo_header(c, dup):
    f = request_fields()
    bad_fields(c, f + [g for g in f if g[0] == dup])


def test_8_3_1_empty_path(c):
    bad_fields(c, request_fields(path=""))


def test_8_3_1_authority_conflicting_host(c):
    r = c.response(c.request(extra=[("host", "other.test")]))
    assert r["status"] == 400


def test_8_5_connect_with_scheme_and_path(c):
    bad_fields(c, [(":method", "CONNECT"), (":scheme", "http"), (":path", "/"),
                   (":authority", "h2.test:443")])


def test_8_4_push_promise_from_client(c):
    sid = c.request(path="/slow?ms=300")
    c.send(frame(PUSH_PROMISE, END_HEADERS, sid, struct.pack(">I", 2) + block(c)))
    conn_error(c, PROTOCOL_ERROR)


def test_8_4_client_disables_push(gw):
    cl = Client(gw.port, settings=[(ENABLE_PUSH, 0)])
    cl.handshake()
    assert cl.response(cl.request())["status"] == 200
    cl.close()


# ---- RFC 7541 HPACK ----

BASE = b"\x82\x86\x84\x01\x07h2.test"  # :method GET, :scheme http, :path /, :authority h2.test


def hpack_error(c, hb):
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, c.new_id(), hb))
    conn_error(c, COMPRESSION_ERROR)


def test_7541_2_3_3_index_zero(c):
    hpack_error(c, BASE + b"\x80")


def test_7541_2_3_3_index_out_of_range(c):
    hpack_error(c, BASE + b"\xff\x10")


def test_7541_4_2_table_size_update_too_large(c):
    hpack_error(c, b"\x3f\xe2\x1f" + BASE)  # 4097 > SETTINGS_HEADER_TABLE_SIZE (4096)


def test_7541_4_2_table_size_update_after_field(c):
    hpack_error(c, BASE + b"\x20")


def test_7541_4_2_table_size_update_accepted(c):
    sid = c.new_id()
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, b"\x20\x3f\xe1\x1f" + BASE))
    assert c.response(sid)["status"] == 200
    assert ok_request(c, "/direct/y") == 200


def test_7541_5_1_integer_overflow(c):
    hpack_error(c, BASE + b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f")


def test_7541_5_2_huffman_padding_too_long(c):
    hpack_error(c, BASE + b"\x00\x03x-a\x82\x1f\xff")  # 'a' then 8 bits of padding


def test_7541_5_2_huffman_padding_not_eos_prefix(c):
    hpack_error(c, BASE + b"\x00\x03x-a\x81\x18")  # 'a' then padding of zeros


def test_7541_5_2_huffman_eos_in_string(c):
    hpack_error(c, BASE + b"\x00\x03x-a\x84\xff\xff\xff\xff")


def test_7541_2_3_2_dynamic_table_reused_across_streams(c):
    fields = request_fields(extra=[("x-long", "v" * 500)])
    assert c.response(c.request(fields=fields))["status"] == 200
    assert c.response(c.request(fields=fields))["status"] == 200
