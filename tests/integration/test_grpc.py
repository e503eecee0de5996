"""gRPC proxied end to end: a real grpcio server (h2c on loopback) behind a cluster with
"httpVersion": "2".

- test_grpc_shaped_over_http11_*: an HTTP/1.1 client sends gRPC-framed messages (chunked, with
  te: trailers) through the gateway to the real gRPC server; grpc-status comes back in the
  trailers of the chunked response. Runs with any front end.
- test_grpc_client_*: a real grpcio client. It needs HTTP/2 from the gateway's server (h2 over
  TLS by ALPN); skipped, saying so, when this build refuses "alpn": ["h2"] (fastgateway -t)."""
import importlib.util
import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BINARY, base_config, free_port

if importlib.util.find_spec("grpc") is None:
    pytest.skip("python3-grpcio is not installed", allow_module_level=True)
# grpc is never imported here: it crashes in a process that forks afterwards (the gateway
# fixtures do); the server and the client run in processes of their own (grpc_server.py, grpc_client.py).
PERMISSION_DENIED = 7

SERVICE = "fg.test.Echo"
SERVER_SCRIPT = Path(__file__).resolve().parent / "grpc_server.py"


@pytest.fixture
def grpc_server():
    """The gRPC server's port; it runs in its own process (grpc_server.py)."""
    p = subprocess.Popen([sys.executable, str(SERVER_SCRIPT)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.strip().isdigit(), "grpc_server.py did not start"
        yield int(line)
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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
    assert tr["grpc-status"] == str(PERMISSION_DENIED)
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
    p = tmp_path / "probe.json"
    p.write_text(json.dumps(cfg))
    r = subprocess.run([str(BINARY), "-t", "-c", str(p)], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("this build has no HTTP/2 front end (fastgateway -t refuses alpn h2: %s)"
                    % (r.stderr or r.stdout).decode(errors="replace").strip()[:200])


CLIENT_SCRIPT = Path(__file__).resolve().parent / "grpc_client.py"


@pytest.fixture
def grpc_calls(tmp_path, gateway_factory, grpc_server):
    """The outcome of every call made by a real gRPC client (grpc_client.py) through the
    gateway's HTTP/2 server to the gRPC server behind it."""
    cfg, crt = h2_gateway_config(tmp_path, grpc_server)
    _h2_front_end_or_skip(tmp_path, cfg)
    gw = gateway_factory(cfg)
    r = subprocess.run([sys.executable, str(CLIENT_SCRIPT), str(gw.port), crt],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return json.loads(r.stdout)


def test_grpc_client_unary_and_streaming(grpc_calls):
    assert grpc_calls["unary"] == "echo:hello"
    assert grpc_calls["server_stream"] == ["item-%d" % i for i in range(5)]
    assert grpc_calls["client_stream"] == "x+y+z"
    assert grpc_calls["bidi"] == ["re:1", "re:2", "re:3"]


def test_grpc_client_error_status(grpc_calls):
    f = grpc_calls["fail"]
    assert f is not None
    assert f["code"] == "PERMISSION_DENIED"
    assert f["details"] == "nope"
    assert f["trailing"].get("x-detail") == "denied-by-test"
