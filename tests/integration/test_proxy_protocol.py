"""The PROXY protocol (docs/config.md "proxyProtocol", "sendProxyProtocol"): servers that read a
version 1 or 2 header before anything else and take the client it names as the peer, driven by
real senders (curl --haproxy-protocol, HAProxy's send-proxy and send-proxy-v2, the gateway's
own tcp servers) and by hand-made headers; tcp servers that send one, checked byte for byte."""
import contextlib
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_metrics import prom_samples
from conftest import (BINARY, REPO_ROOT, _live_groups, _port_open, base_config, example_certs,
                      free_port, recv_until_close, wait_until)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
REQ = b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def v2(src, dst, sport, dport, cmd=1, tlvs=b""):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    body = (socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) +
            struct.pack("!HH", sport, dport) + tlvs)
    famb = 0x21 if fam == socket.AF_INET6 else 0x11
    return SIG + bytes([0x20 | cmd, famb]) + struct.pack("!H", len(body)) + body


def v1(src, dst, sport, dport):
    proto = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def pp_config(tmp_path, port, upstream=None, workers=1, **pp):
    routes = None
    clusters = None
    if upstream is not None:
        routes = [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
        clusters = [{"id": "c", "destinations": [{"id": "d", "address": upstream.url}]}]
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=workers)
    cfg["servers"][0]["proxyProtocol"] = pp if pp else True
    return cfg


def ask(port, data, timeout=5.0):
    """Send data on a new connection and read until the gateway closes: the answer (b"" when it
    closed without one; closing with the client's bytes unread resets the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            return recv_until_close(s, timeout)
        except ConnectionResetError:
            return b""


def refused(gw, server="main"):
    """fastgateway_server_connections_refused_total{reason="proxy_protocol"} of server."""
    m = prom_samples(gw.status("show metrics")["text"])
    return m[("fastgateway_server_connections_refused_total",
              frozenset({("server", server), ("reason", "proxy_protocol")}))]


def with_certificate(cfg, certs):
    """cfg with the example certificate as "c" (certs: conftest.example_certs)."""
    cfg["certificates"] = [{"id": "c", "chain": str(certs / "server.crt"),
                            "key": str(certs / "server.key")}]
    return cfg


@contextlib.contextmanager
def tls_after_header(port, header, certs, alpn):
    """A TLS connection to port, for localhost, whose first bytes are header."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(header)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == alpn
            yield s


def last_client(gw, n, balancer="127.0.0.1"):
    """client and clientPort of the n-th access-log line, whose balancer field (the header's
    sender) must be balancer (None: absent)."""
    lines = gw.access_log(wait_for=n)
    assert len(lines) >= n, lines
    assert lines[n - 1].get("balancer") == balancer, lines[n - 1]
    return lines[n - 1]["client"], lines[n - 1]["clientPort"]


def test_curl_sends_version_1_and_the_request_is_served(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    out = subprocess.run(["curl", "-s", "--haproxy-protocol", gw.url("/x")], capture_output=True,
                         text=True, timeout=10)
    assert out.stdout == "hello"
    assert last_client(gw, 1)[0] == "127.0.0.1"


@pytest.mark.parametrize("header,client,port", [
    (v1("198.51.100.9", "127.0.0.1", 5555, 80), "198.51.100.9", 5555),
    (v1("2001:db8::7", "2001:db8::1", 40000, 443), "2001:db8::7", 40000),
    (v2("203.0.113.7", "127.0.0.1", 4444, 80), "203.0.113.7", 4444),
    (v2("2001:db8::9", "2001:db8::1", 1234, 443), "2001:db8::9", 1234),
    # TLVs after the addresses (AWS, GCP and Azure send some) are skipped
    (v2("192.0.2.44", "127.0.0.1", 7, 80, tlvs=b"\x01\x00\x02h2" + b"\xea\x00\x05vpc-1"),
     "192.0.2.44", 7),
])
def test_the_header_client_is_the_peer_in_the_log_and_forwarded_fields(
        tmp_path, gateway_factory, echo_upstream, header, client, port):
    gw = gateway_factory(pp_config(tmp_path, free_port(), echo_upstream))
    out = ask(gw.port, header + REQ)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    doc = json.loads(out.split(b"\r\n\r\n", 1)[1])
    fields = {n.lower(): v for n, v in doc["headers"]}
    assert fields["x-forwarded-for"] == client
    assert last_client(gw, 1) == (client, port)


def test_local_and_unknown_keep_the_socket_address(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    local = SIG + bytes([0x20, 0x00, 0, 0])          # v2 LOCAL: a balancer's health check
    unix = SIG + bytes([0x21, 0x31]) + struct.pack("!H", 216) + bytes(216)  # AF_UNIX
    for i, hdr in enumerate([local, unix, b"PROXY UNKNOWN\r\n",
                             b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"], start=1):
        assert ask(gw.port, hdr + REQ).startswith(b"HTTP/1.1 200")
        assert last_client(gw, i, balancer=None)[0] == "127.0.0.1"


def test_the_header_may_arrive_a_byte_at_a_time(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    for n, hdr in enumerate([v2("192.0.2.1", "127.0.0.1", 1, 2), v1("192.0.2.2", "127.0.0.1", 3,
                                                                    4)], start=1):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            for b in hdr:
                s.send(bytes([b]))
                time.sleep(0.005)
            s.sendall(REQ)
            assert recv_until_close(s).startswith(b"HTTP/1.1 200")
        assert last_client(gw, n)[0] == "192.0.2.%d" % n


@pytest.mark.parametrize("data,why", [
    (REQ, "the connection does not begin with a PROXY protocol header"),
    (b"\x16\x03\x01\x02\x00\x01", "the connection does not begin with a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "version 1 line has a byte that is not printable"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "version 1 address is not one of its protocol's family"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "version 1 port is not a number"),
    (b"PROXY " + b"A" * 120, "version 1 line is longer than 107 bytes"),
    (SIG + b"\x31\x11\x00\x0c" + bytes(12), "version 2 signature with another version"),
    (SIG + b"\x21\x12\x00\x0c" + bytes(12), "version 2 header names a datagram transport"),
    (SIG + b"\x21\x11\x00\x04" + bytes(4), "version 2 length is shorter than its addresses"),
    (SIG + b"\x21\x11\x10\x00", "version 2 header is longer than 1024 bytes"),
])
def test_a_bad_header_closes_the_connection_unanswered_and_is_logged(tmp_path, gateway_factory,
                                                                     data, why):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    # the harness's readiness check connected without a header: the first refusal
    wait_until(lambda: refused(gw) == 1, 5, "the readiness check's refusal")
    assert ask(gw.port, data) == b""
    wait_until(lambda: why in gw.error_log(), 5, "the log line")
    assert refused(gw) == 2
    assert "proxy protocol: " + why in gw.error_log()
    assert "server: main" in gw.error_log()
    assert gw.access_log() == []


def test_a_silent_or_slow_sender_is_closed_at_the_timeout(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port(), timeout="400ms"))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", gw.port), timeout=5) as slow:
        t0 = time.monotonic()
        slow.sendall(b"PROXY TCP4 1.2.3.4")  # never finished: the deadline is from the accept
        time.sleep(0.2)
        slow.sendall(b" 5.6.7.8")
        assert recv_until_close(silent) == b""
        assert recv_until_close(slow) == b""
        took = time.monotonic() - t0
    assert 0.3 < took < 3.0, took
    wait_until(lambda: gw.error_log().count("no complete header within proxyProtocol.timeout")
               == 2, 5, "two timeout lines")


def test_closed_before_the_header_ends_is_logged(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(SIG[:7])
        time.sleep(0.1)
    wait_until(lambda: "closed before the end of its header" in gw.error_log(), 5, "log line")


def test_trusted_peers_refuse_everyone_else(tmp_path, gateway_factory):
    port = free_port()
    gw = gateway_factory(pp_config(tmp_path, port, trustedPeers=["10.0.0.0/8"]))
    assert ask(port, v1("192.0.2.1", "127.0.0.1", 1, 2) + REQ) == b""
    wait_until(lambda: "proxy protocol: peer 127.0.0.1:" in gw.error_log(), 5, "log line")
    assert "is not in proxyProtocol.trustedPeers, server: main" in gw.error_log()
    gw.reload(pp_config(tmp_path, port, trustedPeers=["10.0.0.0/8", "127.0.0.1"]))
    assert ask(port, v1("192.0.2.1", "127.0.0.1", 1, 2) + REQ).startswith(b"HTTP/1.1 200")


def test_access_control_and_client_caps_judge_the_header_client(tmp_path, gateway_factory):
    port = free_port()
    cfg = pp_config(tmp_path, port)
    cfg["accessControl"] = [{"id": "bad", "type": "blacklist", "entries": ["192.0.2.66"]}]
    cfg["servers"][0]["accessControl"] = ["bad"]
    cfg["servers"][0]["limits"] = {"maxConnectionsPerClient": 1}
    gw = gateway_factory(cfg)
    assert ask(port, v1("192.0.2.66", "127.0.0.1", 1, 2) + REQ).startswith(b"HTTP/1.1 403")
    assert ask(port, v1("192.0.2.67", "127.0.0.1", 1, 2) + REQ).startswith(b"HTTP/1.1 200")
    # one open connection per client: the header's client, not the balancer's address
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.sendall(v1("192.0.2.70", "127.0.0.1", 1, 2) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    held.recv(4096)  # answered, kept alive
    try:
        assert ask(port, v1("192.0.2.70", "127.0.0.1", 9, 2) + REQ) == b""
        assert ask(port, v1("192.0.2.71", "127.0.0.1", 9, 2) + REQ).startswith(b"HTTP/1.1 200")
        assert "connection from 192.0.2.70 closed: maxConnectionsPerClient (1)" in \
            gw.error_log()
    finally:
        held.close()


def test_past_the_bound_the_oldest_waiting_connection_is_closed(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port(), timeout="60s"))
    socks = []
    try:
        for _ in range(1025):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(b"P")  # a header begun, never finished
            socks.append(s)
        # the first one waited longest: closed to make room; the newest still waits
        assert recv_until_close(socks[0], 5) == b""
        socks[-1].sendall(v1("192.0.2.5", "127.0.0.1", 1, 2)[1:] + REQ)
        assert recv_until_close(socks[-1], 5).startswith(b"HTTP/1.1 200")
        wait_until(lambda: "more than 1024 connections wait for their header" in gw.error_log(),
                   5, "log line")
    finally:
        for s in socks:
            s.close()


def test_tls_after_the_header_with_sni_and_alpn(tmp_path, gateway_factory):
    certs = example_certs(tmp_path)
    port = free_port()
    cfg = with_certificate(pp_config(tmp_path, port), certs)
    cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    gw = gateway_factory(cfg)
    with tls_after_header(port, v2("198.51.100.20", "127.0.0.1", 999, port), certs,
                          "http/1.1") as s:
        s.sendall(REQ.replace(b"Host: x", b"Host: localhost"))
        assert recv_until_close(s).startswith(b"HTTP/1.1 200")
    line = gw.access_log(wait_for=1)[0]
    assert line["client"] == "198.51.100.20" and line.get("sni") == "localhost", line
    assert line["balancer"] == "127.0.0.1", line


def _h2_get(sock, authority):
    """One GET / over HTTP/2 on sock (python3-h2): the response's :status."""
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/who"), (":scheme", "https"),
                          (":authority", authority)], end_stream=True)
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "closed before the response"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                return dict(ev.headers)[b":status"]
        sock.sendall(conn.data_to_send())
    raise AssertionError("no response")


def test_http2_after_the_header_by_prior_knowledge_and_by_alpn(tmp_path, gateway_factory):
    certs = example_certs(tmp_path)
    h2c_port, tls_port = free_port(), free_port()
    cfg = with_certificate(pp_config(tmp_path, h2c_port), certs)
    cfg["servers"][0]["http2"] = {"h2c": True}
    cfg["servers"].append({"id": "tls", "listen": "127.0.0.1:%d" % tls_port,
                           "proxyProtocol": True, "tls": {"certificates": ["c"]}})
    cfg["routes"][0]["servers"] = ["main", "tls"]
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", h2c_port), timeout=5) as s:
        s.sendall(v1("192.0.2.30", "127.0.0.1", 30, h2c_port))
        assert _h2_get(s, "x") == b"200"
    with tls_after_header(tls_port, v2("192.0.2.31", "127.0.0.1", 31, tls_port), certs,
                          "h2") as s:
        assert _h2_get(s, "localhost") == b"200"
    clients = sorted((l["client"], l["clientPort"], l["balancer"])
                     for l in gw.access_log(wait_for=2))
    assert clients == [("192.0.2.30", 30, "127.0.0.1"), ("192.0.2.31", 31, "127.0.0.1")]


def _haproxy(tmp_path, listen, target, send, bind_extra=""):
    conf = tmp_path / ("haproxy-%s.cfg" % send)
    conf.write_text("""global
    log stderr format raw local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:%d %s
    default_backend be
backend be
    server gw 127.0.0.1:%d %s
""" % (listen, bind_extra, target, send))
    p = subprocess.Popen(["haproxy", "-f", str(conf), "-db"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    _live_groups.add(p.pid)
    wait_until(lambda: _port_open(listen, 0.2), 10, "haproxy listening")
    return p


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_behind_haproxy(tmp_path, gateway_factory, echo_upstream, send):
    gw = gateway_factory(pp_config(tmp_path, free_port(), echo_upstream))
    front = free_port()
    p = _haproxy(tmp_path, front, gw.port, send)
    try:
        with socket.create_connection(("127.0.0.1", front), timeout=5) as s:
            s.sendall(REQ)
            out = recv_until_close(s)
            mine = s.getsockname()[1]
        assert out.startswith(b"HTTP/1.1 200"), out[:300]
        # the port the client used, not HAProxy's own connection to the gateway
        assert last_client(gw, 1) == ("127.0.0.1", mine)
    finally:
        p.kill()
        p.wait(5)


def _ssl_tlv(client=0x01):
    """PP2_TYPE_SSL: client flags, verify (0 = a verified client certificate, or none), then a
    PP2_SUBTYPE_SSL_VERSION sub-TLV, as HAProxy's send-proxy-v2-ssl writes it."""
    value = bytes([client]) + b"\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.3"
    return b"\x20" + struct.pack("!H", len(value)) + value


@pytest.mark.parametrize("tlv,proto", [(b"", "http"), (_ssl_tlv(), "https"),
                                       (_ssl_tlv(client=0x00), "http")])
def test_a_client_that_spoke_tls_to_the_balancer_is_https(tmp_path, gateway_factory,
                                                          echo_upstream, tlv, proto):
    cfg = pp_config(tmp_path, free_port(), echo_upstream)
    cfg["servers"][0]["http2"] = {"h2c": True}  # through the sniff as well
    gw = gateway_factory(cfg)
    out = ask(gw.port, v2("192.0.2.40", "127.0.0.1", 40, 443, tlvs=tlv) + REQ)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    fields = {n.lower(): v for n, v in json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"]}
    assert fields["x-forwarded-proto"] == proto
    assert fields["x-forwarded-for"] == "192.0.2.40"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_behind_haproxy_terminating_tls_with_send_proxy_v2_ssl(tmp_path, gateway_factory,
                                                              echo_upstream):
    certs = example_certs(tmp_path)
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes((certs / "server.crt").read_bytes() + (certs / "server.key").read_bytes())
    gw = gateway_factory(pp_config(tmp_path, free_port(), echo_upstream))
    front = free_port()
    p = _haproxy(tmp_path, front, gw.port, "send-proxy-v2-ssl", bind_extra="ssl crt %s" % pem)
    try:
        out = subprocess.run(["curl", "-s", "--cacert", str(certs / "ca.crt"),
                              "https://localhost:%d/x" % front], capture_output=True, timeout=10)
        doc = json.loads(out.stdout)
        fields = {n.lower(): v for n, v in doc["headers"]}
        assert fields["x-forwarded-proto"] == "https"
        assert fields["x-forwarded-for"] == "127.0.0.1"
    finally:
        p.kill()
        p.wait(5)


def _receiver():
    """A destination that records the first bytes of each connection, then closes it."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    got = []

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.settimeout(5)
            data = b""
            while b"hello" not in data:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            got.append(data)
            c.sendall(b"bye")
            c.close()

    threading.Thread(target=run, daemon=True).start()
    return srv, got


@pytest.mark.parametrize("version", [1, 2])
def test_a_tcp_server_sends_the_header_first(tmp_path, gateway_factory, version):
    srv, got = _receiver()
    port = free_port()
    cfg = base_config(tmp_path, port, workers=1, clusters=[
        {"id": "t", "destinations": [{"id": "d", "address": "tcp://127.0.0.1:%d" %
                                      srv.getsockname()[1]}]}])
    cfg["servers"][0]["tcp"] = {"clusterId": "t", "sendProxyProtocol": version}
    cfg["routes"] = []
    gw = gateway_factory(cfg)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hello")
            assert recv_until_close(s) == b"bye"
            cport = s.getsockname()[1]
        # (the start-up check's connection came through too, with the header alone)
        wait_until(lambda: any(g.endswith(b"hello") for g in got), 5, "the destination's bytes")
        if version == 1:
            want = b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (cport, port)
        else:
            want = v2("127.0.0.1", "127.0.0.1", cport, port)
        assert [g for g in got if g.endswith(b"hello")] == [want + b"hello"]
        line = [l for l in gw.access_log(wait_for=2) if l["clientPort"] == cport][0]
        assert line["bytesIn"] == 5 and line["clientPort"] == cport, line
    finally:
        srv.close()


def test_a_tcp_server_chain_carries_the_first_client(tmp_path, gateway_factory):
    """The example's shape: a tcp server sends version 2 to an HTTP server that reads it."""
    http_port, tcp_port = free_port(), free_port()
    cfg = pp_config(tmp_path, http_port, trustedPeers=["127.0.0.1"])
    cfg["servers"].append({"id": "front", "listen": "127.0.0.1:%d" % tcp_port,
                           "tcp": {"clusterId": "self", "sendProxyProtocol": 2}})
    cfg["routes"][0]["servers"] = ["main"]
    cfg["clusters"] = [{"id": "self", "destinations": [
        {"id": "http", "address": "tcp://127.0.0.1:%d" % http_port}]}]
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        s.sendall(REQ)
        assert recv_until_close(s).startswith(b"HTTP/1.1 200")
        mine = s.getsockname()[1]
    http_lines = [l for l in gw.access_log(wait_for=2) if "method" in l]
    assert http_lines and http_lines[0]["clientPort"] == mine


def test_the_example_runs(tmp_path, gateway_factory):
    example = REPO_ROOT / "etc" / "examples" / "proxy-protocol.json"
    p = subprocess.run([str(BINARY), "-T", "-c", str(example)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    http_port, tcp_port = free_port(), free_port()
    text = text.replace("127.0.0.1:8081", "127.0.0.1:%d" % http_port)
    text = text.replace("127.0.0.1:8080", "127.0.0.1:%d" % tcp_port)
    cfg = json.loads(text)
    cfg["pidFile"] = str(tmp_path / "fg.pid")
    cfg["statusSocket"] = str(tmp_path / "status.sock")
    cfg["log"] = {"errorLog": str(tmp_path / "error.log"), "level": "info",
                  "accessLog": str(tmp_path / "access.log"), "accessLogFlush": "100ms"}
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        s.sendall(REQ)
        out = recv_until_close(s)
        mine = s.getsockname()[1]
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    out = subprocess.run(["curl", "-s", "--haproxy-protocol", "http://127.0.0.1:%d/" % http_port],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "hello\n"
    assert ask(http_port, REQ) == b""  # without a header: refused
    # two workers write their own lines: in either order
    lines = [l for l in gw.access_log(wait_for=3) if "method" in l]
    assert mine in [l["clientPort"] for l in lines], lines


def check(tmp_path, cfg):
    """`fastgateway -t` of cfg: the finished process."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=10)


@pytest.mark.parametrize("value,msg", [
    ("yes", "proxyProtocol: expected true or an object, got a string"),
    ({"timeout": "0s"}, "proxyProtocol.timeout: must be greater than 0"),
    ({"timeout": "soon"}, "proxyProtocol.timeout"),
    ({"trustedPeers": ["10.0.0.300"]}, "proxyProtocol.trustedPeers[0]"),
    ({"trustedPeers": "10.0.0.1"}, "proxyProtocol.trustedPeers"),
    ({"from": []}, "proxyProtocol"),
    ({"trustedPeers": []}, "proxyProtocol.trustedPeers: is empty: leave it out"),
])
def test_configuration_errors(tmp_path, value, msg):
    cfg = base_config(tmp_path, free_port())
    cfg["servers"][0]["proxyProtocol"] = value
    p = check(tmp_path, cfg)
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr


@pytest.mark.parametrize("value", [0, 3, "2", True])
def test_send_proxy_protocol_errors(tmp_path, value):
    cfg = base_config(tmp_path, free_port(), routes=[], clusters=[
        {"id": "t", "destinations": [{"id": "d", "address": "tcp://127.0.0.1:9"}]}])
    cfg["servers"][0]["tcp"] = {"clusterId": "t", "sendProxyProtocol": value}
    p = check(tmp_path, cfg)
    if value == 0:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode != 0 and "tcp.sendProxyProtocol" in p.stderr, p.stderr


def test_a_tcp_server_relays_a_header_finished_while_its_worker_retires(tmp_path, gateway_factory):
    """A connection accepted before a reload whose header arrives after it is relayed, as an
    HTTP server serves it (it used to be closed unanswered and unlogged)."""
    srv, got = _receiver()
    port = free_port()
    cfg = base_config(tmp_path, port, workers=1, clusters=[
        {"id": "t", "destinations": [{"id": "d", "address": "tcp://127.0.0.1:%d" %
                                      srv.getsockname()[1]}]}])
    cfg["servers"][0]["tcp"] = {"clusterId": "t"}
    cfg["servers"][0]["proxyProtocol"] = {"timeout": "10s"}
    cfg["routes"] = []
    gw = gateway_factory(cfg)
    try:
        h = v1("198.51.100.3", "127.0.0.1", 4321, port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(h[:5])
            time.sleep(0.2)
            gw.reload()
            s.sendall(h[5:] + b"hello")
            assert recv_until_close(s) == b"bye"
        line = [l for l in gw.access_log(wait_for=1) if l.get("clientPort") == 4321][0]
        assert line["client"] == "198.51.100.3" and line["bytesIn"] == 5, line
        assert line["kind"] == "tcp" and line["balancer"] == "127.0.0.1", line
    finally:
        srv.close()


def test_a_version_1_header_of_mixed_families_is_all_ipv6(tmp_path, gateway_factory):
    """sendProxyProtocol 1 for an IPv6 client (named by a received header) on an IPv4 socket:
    TCP6 with the IPv4 side mapped, which a receiver (the gateway's own) accepts."""
    srv, got = _receiver()
    port = free_port()
    cfg = base_config(tmp_path, port, workers=1, clusters=[
        {"id": "t", "destinations": [{"id": "d", "address": "tcp://127.0.0.1:%d" %
                                      srv.getsockname()[1]}]}])
    cfg["servers"][0]["tcp"] = {"clusterId": "t", "sendProxyProtocol": 1}
    cfg["servers"][0]["proxyProtocol"] = True
    cfg["routes"] = []
    gateway_factory(cfg)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(v1("2001:db8::7", "2001:db8::1", 1111, 443) + b"hello")
            assert recv_until_close(s) == b"bye"
        wait_until(lambda: any(g.endswith(b"hello") for g in got), 5, "the destination's bytes")
        want = b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 1111 %d\r\nhello" % port
        assert [g for g in got if g.endswith(b"hello")] == [want]
    finally:
        srv.close()


def test_a_connection_after_its_header_counts_once(tmp_path, gateway_factory):
    gw = gateway_factory(pp_config(tmp_path, free_port()))
    time.sleep(1.5)  # the start-up check's connection, held by TCP_DEFER_ACCEPT, is counted
    wait_until(lambda: gw.all_workers()[0]["connections"] == 0, 10, "start-up check closed")
    before = gw.all_workers()[0]["connectionsTotal"]
    for _ in range(3):
        assert ask(gw.port, v1("192.0.2.1", "127.0.0.1", 1, 80) + REQ).startswith(b"HTTP/1.1 200")
    wait_until(lambda: gw.all_workers()[0]["connections"] == 0, 5, "connections closed")
    assert gw.all_workers()[0]["connectionsTotal"] - before == 3


def test_tls_and_h2c_connections_count_once(tmp_path, gateway_factory):
    """A connection passes through up to three sessions (header, TLS handshake or the h2c
    sniff, then HTTP): connectionsTotal counts it once."""
    certs = example_certs(tmp_path)
    tls_port, h2c_port = free_port(), free_port()
    cfg = with_certificate(pp_config(tmp_path, tls_port), certs)
    cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    cfg["servers"].append({"id": "h2c", "listen": "127.0.0.1:%d" % h2c_port,
                           "proxyProtocol": True, "http2": {"h2c": True}})
    gw = gateway_factory(cfg)
    time.sleep(1.5)  # the start-up check's connection, held by TCP_DEFER_ACCEPT, is counted
    wait_until(lambda: gw.all_workers()[0]["connections"] == 0, 10, "start-up check closed")
    before = gw.all_workers()[0]["connectionsTotal"]
    for _ in range(2):
        with tls_after_header(tls_port, v1("192.0.2.1", "127.0.0.1", 1, 443), certs,
                              "http/1.1") as s:
            s.sendall(REQ.replace(b"Host: x", b"Host: localhost"))
            assert recv_until_close(s).startswith(b"HTTP/1.1 200")
        assert ask(h2c_port, v1("192.0.2.1", "127.0.0.1", 1, 80) + REQ).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", h2c_port), timeout=5) as s:
        s.sendall(v1("192.0.2.2", "127.0.0.1", 2, 80))
        assert _h2_get(s, "x") == b"200"
    wait_until(lambda: gw.all_workers()[0]["connections"] == 0, 5, "connections closed")
    assert gw.all_workers()[0]["connectionsTotal"] - before == 5


def test_a_flood_of_refused_connections_writes_a_bounded_number_of_lines(tmp_path,
                                                                         gateway_factory):
    """One line per refused connection let any client write tens of thousands a second: at
    most 20 a second per worker, and the next line says how many were left out."""
    port = free_port()
    gw = gateway_factory(pp_config(tmp_path, port, trustedPeers=["10.0.0.0/8"]))
    start = time.monotonic()
    for _ in range(500):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"x")
    spent = time.monotonic() - start
    time.sleep(1.1)
    ask(port, b"x")  # a line in a new second, which counts the ones left out
    wait_until(lambda: "left out since the last one" in gw.error_log(), 5, "the count")
    lines = [l for l in gw.error_log().splitlines() if "is not in proxyProtocol.trustedPeers" in l]
    assert len(lines) <= 20 * (int(spent) + 3), len(lines)


def test_a_tunnel_agent_behind_a_balancer_is_judged_by_its_own_address(tmp_path,
                                                                       gateway_factory):
    """An acceptTunnels server with proxyProtocol: failed authentications count against (and
    are logged with) the client the header names, not the balancer's socket address, which
    every agent behind it shares: one guesser used to lock them all out for the minute."""
    import base64
    import os
    from test_tunnel import TUNNEL_PATH, secret_file
    port = free_port()
    cfg = pp_config(tmp_path, port)
    cfg["servers"][0]["acceptTunnels"] = True
    cfg["tunnels"] = {"path": TUNNEL_PATH, "authFailuresPerMinute": 2,
                      "agents": [{"id": "office", "secretFile": str(secret_file(tmp_path, "o"))}]}
    cfg["routes"] = []
    gw = gateway_factory(cfg)

    def upgrade(client):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(v1(client, "127.0.0.1", 5555, port) + (
            "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Protocol: fastgateway-tunnel.v1\r\n\r\n" % (TUNNEL_PATH, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(4096)
            if not d:
                break
            head += d
        return s, head.split(b"\r\n")[0]

    for _ in range(3):  # a malformed AUTH: one failure each
        s, status = upgrade("203.0.113.9")
        if b"101" not in status:
            s.close()
            break
        mask, payload = b"\x01\x02\x03\x04", b"garbage"
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                  bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        try:
            recv_until_close(s)
        except OSError:
            pass
        s.close()
    wait_until(lambda: "authentication failed from 203.0.113.9:5555" in gw.error_log(), 5,
               "the failure logged with the header's client")
    assert "authentication failed from 127.0.0.1" not in gw.error_log()
    # the guesser is refused at the upgrade; another agent behind the same balancer is not
    s, status = upgrade("203.0.113.9")
    s.close()
    assert b"429" in status, status
    s, status = upgrade("198.51.100.20")
    s.close()
    assert b"101" in status, status


def test_the_header_wait_counts_against_timeouts_header(tmp_path, gateway_factory):
    """A client cannot stretch its first request's time by proxyProtocol.timeout: the request
    head is due timeouts.header after the accept, as without a header."""
    cfg = pp_config(tmp_path, free_port(), timeout="5s")
    cfg["servers"][0]["timeouts"] = {"header": "1s"}
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        t0 = time.monotonic()
        hdr = v1("192.0.2.8", "127.0.0.1", 8, 80)
        s.sendall(hdr[:1])  # accepted now (the kernel defers the accept until a first byte)
        time.sleep(0.7)
        s.sendall(hdr[1:] + b"GET / HTTP/1.1\r\n")
        out = recv_until_close(s)
        took = time.monotonic() - t0
    assert out.startswith(b"HTTP/1.1 408") or out == b"", out[:100]
    assert 0.9 < took < 1.6, took


@pytest.mark.parametrize("wait", [0.6, 1.4])
def test_the_header_wait_counts_against_the_h2c_sniff(tmp_path, gateway_factory, wait):
    """On an h2c server, a connection silent after its header is closed timeouts.header after
    the accept (or at once when the header took longer), not timeouts.header after the header:
    the sniff's timer is what is left of it."""
    cfg = pp_config(tmp_path, free_port(), timeout="5s")
    cfg["servers"][0]["timeouts"] = {"header": "1s"}
    cfg["servers"][0]["http2"] = {"h2c": True}
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        t0 = time.monotonic()
        hdr = v1("192.0.2.8", "127.0.0.1", 8, 80)
        s.sendall(hdr[:1])  # accepted now (the kernel defers the accept until a first byte)
        time.sleep(wait)
        s.sendall(hdr[1:])
        try:
            out = recv_until_close(s)
        except ConnectionResetError:
            out = b""
        took = time.monotonic() - t0
    assert out == b"", out[:100]
    assert took < max(wait, 1.0) + 0.4, took


def test_redirect_https_leaves_a_client_that_spoke_tls_to_the_balancer(tmp_path,
                                                                       gateway_factory):
    """redirectHttps behind a balancer terminating TLS (send-proxy-v2-ssl for its :80 and :443
    alike): only the plaintext clients are sent to https, or the others would loop."""
    cfg = pp_config(tmp_path, free_port())
    cfg["servers"][0]["redirectHttps"] = True
    gw = gateway_factory(cfg)
    plain = ask(gw.port, v2("192.0.2.40", "127.0.0.1", 40, 80, tlvs=_ssl_tlv(client=0)) + REQ)
    assert plain.startswith(b"HTTP/1.1 308") and b"\r\nLocation: https://x/who\r\n" in plain
    tls = ask(gw.port, v2("192.0.2.41", "127.0.0.1", 41, 443, tlvs=_ssl_tlv()) + REQ)
    assert tls.startswith(b"HTTP/1.1 200"), tls[:200]
