"""gRPC proxied end to end: a real grpcio server (h2c on loopback) behind a cluster with
"httpVersion": "2".

- test_grpc_shaped_over_http11_*: an HTTP/1.1 client sends gRPC-framed messages (chunked, with
  te: trailers) through the gateway to the real gRPC server; grpc-status comes back in the
  trailers of the chunked response. Runs with any front end.
- test_grpc_client_*: a real grpcio client. It needs HTTP/2 from the gateway's server (h2 over
  TLS by ALPN); skipped, saying so, when this build refuses "alpn": ["h2"] (fastgateway -t)."""
import socket
import struct
import subprocess
from concurrent import futures

import pytest

from conftest import BINARY, base_config, free_port

grpc = pytest.importorskip("grpc")

SERVICE = "fg.test.Echo"


def _unary(request, context):
    return b"echo:" + request


def _server_stream(request, context):
    n = int(request.decode() or "3")
    for i in range(n):
        yield b"item-%d" % i


def _client_stream(request_iterator, context):
    return b"+".join(request_iterator)


def _bidi(request_iterator, context):
    for m in request_iterator:
        yield b"re:" + m


def _fail(request, context):
    context.set_trailing_metadata((("x-detail", "denied-by-test"),))
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")


@pytest.fixture
def grpc_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def gw_config(tmp_path, grpc_port, port=None):
    return base_config(
        tmp_path, port or free_port(), workers=1,
        routes=[{"id": "g", "match": {"path": "/{**rest}"}, "clusterId": "grpc"}],
        clusters=[{"id": "grpc", "httpVersion": "2",
                   "destinations": [{"id": "g1", "address": "http://127.0.0.1:%d" % grpc_port}]}])


# ---- gRPC-shaped requests over HTTP/1.1 to the gateway ----

def frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def unframe(data):
    out = []
    while data:
        n = struct.unpack(">I", data[1:5])[0]
        out.append(data[5:5 + n])
        data = data[5 + n:]
    return out


def grpc_over_http11(gw, method, messages):
    from test_trailers import dechunk, parse_trailers, read_chunked_message
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    req = (b"POST /%s/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" % (SERVICE.encode(), method.encode()))
    for m in messages:
        f = frame(m)
        req += b"%x\r\n" % len(f) + f + b"\r\n"
    req += b"0\r\n\r\n"
    c.sendall(req)
    c.settimeout(10)
    first = c.recv(65536)
    while b"\r\n\r\n" not in first:
        first += c.recv(65536)
    head = first.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"content-length: 0\r\n" in head.lower() + b"\r\n":
        # a trailers-only response (gRPC: status without messages): its fields are the head's
        c.close()
        fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
        return [], {n.strip().lower().decode(): v.strip().decode() for n, v in fields}
    msg = read_chunked_message(c, first)
    c.close()
    body = msg.partition(b"\r\n\r\n")[2]
    return unframe(dechunk(body)), dict(parse_trailers(body))


def test_grpc_shaped_over_http11_unary(tmp_path, gateway_factory, grpc_server):
    gw = gateway_factory(gw_config(tmp_path, grpc_server))
    msgs, tr = grpc_over_http11(gw, "Unary", [b"hi"])
    assert msgs == [b"echo:hi"]
    assert tr["grpc-status"] == "0"


def test_grpc_shaped_over_http11_streaming(tmp_path, gateway_factory, grpc_server):
    gw = gateway_factory(gw_config(tmp_path, grpc_server))
    msgs, tr = grpc_over_http11(gw, "ServerStream", [b"4"])
    assert msgs == [b"item-0", b"item-1", b"item-2", b"item-3"]
    assert tr["grpc-status"] == "0"
    msgs, tr = grpc_over_http11(gw, "ClientStream", [b"a", b"b", b"c"])
    assert msgs == [b"a+b+c"] and tr["grpc-status"] == "0"


def test_grpc_shaped_over_http11_error_status_in_trailers(tmp_path, gateway_factory,
                                                          grpc_server):
    gw = gateway_factory(gw_config(tmp_path, grpc_server))
    msgs, tr = grpc_over_http11(gw, "Fail", [b"x"])
    assert msgs == []
    assert tr["grpc-status"] == str(grpc.StatusCode.PERMISSION_DENIED.value[0])
    assert tr["grpc-message"] == "nope"
    assert tr["x-detail"] == "denied-by-test"


# ---- a real gRPC client: needs HTTP/2 from the gateway ----

def _cert(tmp_path):
    key, crt = tmp_path / "gk.pem", tmp_path / "gc.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out",
                    str(crt)], check=True, capture_output=True, timeout=60)
    return str(crt), str(key)


def h2_gateway_config(tmp_path, grpc_port):
    crt, key = _cert(tmp_path)
    cfg = gw_config(tmp_path, grpc_port)
    cfg["certificates"] = [{"id": "g", "chain": crt, "key": key}]
    cfg["servers"][0]["tls"] = {"certificates": ["g"], "default": "g", "alpn": ["h2", "http/1.1"]}
    return cfg, crt


def _h2_front_end_or_skip(tmp_path, cfg):
    import json
    p = tmp_path / "probe.json"
    p.write_text(json.dumps(cfg))
    r = subprocess.run([str(BINARY), "-t", "-c", str(p)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("this build has no HTTP/2 front end (fastgateway -t refuses alpn h2: %s)"
                    % (r.stderr or r.stdout).decode(errors="replace").strip()[:200])


@pytest.fixture
def grpc_channel(tmp_path, gateway_factory, grpc_server):
    cfg, crt = h2_gateway_config(tmp_path, grpc_server)
    _h2_front_end_or_skip(tmp_path, cfg)
    gw = gateway_factory(cfg)
    creds = grpc.ssl_channel_credentials(root_certificates=open(crt, "rb").read())
    ch = grpc.secure_channel("localhost:%d" % gw.port, creds)
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


def _m(ch, kind, name):
    return getattr(ch, kind)("/%s/%s" % (SERVICE, name))


def test_grpc_client_unary(grpc_channel):
    assert _m(grpc_channel, "unary_unary", "Unary")(b"hello", timeout=10) == b"echo:hello"


def test_grpc_client_server_streaming(grpc_channel):
    got = list(_m(grpc_channel, "unary_stream", "ServerStream")(b"5", timeout=10))
    assert got == [b"item-%d" % i for i in range(5)]


def test_grpc_client_client_streaming(grpc_channel):
    got = _m(grpc_channel, "stream_unary", "ClientStream")(iter([b"x", b"y", b"z"]), timeout=10)
    assert got == b"x+y+z"


def test_grpc_client_bidirectional(grpc_channel):
    got = list(_m(grpc_channel, "stream_stream", "Bidi")(iter([b"1", b"2", b"3"]), timeout=10))
    assert got == [b"re:1", b"re:2", b"re:3"]


def test_grpc_client_error_status(grpc_channel):
    with pytest.raises(grpc.RpcError) as e:
        _m(grpc_channel, "unary_unary", "Fail")(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "nope"
