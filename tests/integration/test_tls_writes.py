"""How a TLS 1.3 connection's server bytes leave the gateway: the tickets sent after the
handshake (RFC 8446 4.6.1) wait for the first response and leave in its write, and the
close_notify alert (RFC 8446 6.1) of a connection that closes after its response leaves in the
write of that response's last bytes.

The client runs Python ssl over memory BIOs on a plain socket, so that it sees the raw bytes and
when they arrive; the segments that carried data are counted with TCP_INFO's tcpi_data_segs_in
(Linux): on loopback with TCP_NODELAY, each small write of the gateway is one segment."""
import select
import shutil
import socket
import ssl
import struct
import time

import pytest

from conftest import base_config, free_port
from peers import BioTLS, self_signed_cert

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (Linux 4.6+)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tw_certs"))


def data_segs_in(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert len(info) >= TCPI_DATA_SEGS_IN + 4, "kernel without tcpi_data_segs_in"
    return struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]


class Client(BioTLS):
    """A TLS 1.3 client over memory BIOs; the handshake is done when the constructor returns
    (the client's Finished sent)."""

    def __init__(self, port):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["http/1.1"])
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=10), ctx, False)

    def send(self, data):
        self.obj.write(data)
        self._flush()

    def read_to_close_notify(self):
        """Everything decrypted until the gateway's close_notify, where read() gives b""
        (EOFError if TCP ends first)."""
        got = b""
        while True:
            try:
                data = self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            if not data:
                return got
            got += data


def gateway(tmp_path, gateway_factory, cert, routes=None, clusters=None):
    port = free_port()
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=1)
    cfg["certificates"] = [{"id": "c", "chain": cert[0], "key": cert[1]}]
    cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    gateway_factory(cfg)
    return port


def test_tickets_wait_for_the_first_response(tmp_path, cert, gateway_factory, echo_upstream):
    """While the destination takes its time, the gateway sends the client nothing: the ticket
    comes with the response, and the client holds a resumable session."""
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": echo_upstream.url}]}]
    port = gateway(tmp_path, gateway_factory, cert, routes, clusters)
    c = Client(port)
    c.send(b"GET /slow?ms=800 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    ready, _, _ = select.select([c.sock], [], [], 0.4)
    assert ready == [], "the gateway wrote before the response: %r" % c.sock.recv(65536)[:64]
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        try:
            got += c.obj.read(65536)
        except ssl.SSLWantReadError:
            c._fill()
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    assert c.obj.session is not None and c.obj.session.has_ticket
    c.sock.close()


def last_answer(port, request):
    """Send request on a new connection; returns the client (still open), what it read up to
    the gateway's close_notify, and the data segments that carried it."""
    c = Client(port)
    before = data_segs_in(c.sock)
    c.send(request)
    got = c.read_to_close_notify()
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello"), got
    return c, got, data_segs_in(c.sock) - before


def test_close_notify_leaves_with_the_last_response(tmp_path, cert, gateway_factory):
    """A response that ends the connection (Connection: close) and the close_notify that
    follows it arrive in one segment, with the ticket: one write for the whole answer."""
    port = gateway(tmp_path, gateway_factory, cert)
    c, got, segments = last_answer(
        port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert c.obj.session is not None and c.obj.session.has_ticket
    assert segments == 1
    assert c.sock.recv(1) == b""  # then the gateway closes TCP
    c.sock.close()


def test_http10_response_and_close_notify_in_one_segment(tmp_path, cert, gateway_factory):
    """The same for an HTTP/1.0 request (openssl s_time -www sends these), whose response
    always ends the connection."""
    port = gateway(tmp_path, gateway_factory, cert)
    c, got, segments = last_answer(port, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
    assert segments == 1
    c.sock.close()


def test_silent_client_gets_its_tickets_with_the_close_notify(tmp_path, cert, gateway_factory):
    """A client that sends nothing after the handshake: the header timeout still ends the
    connection on time, and the tickets held for a first response leave with the close_notify,
    so that the session resumes."""
    port = free_port()
    cfg = base_config(tmp_path, port, workers=1)
    cfg["certificates"] = [{"id": "c", "chain": cert[0], "key": cert[1]}]
    cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    cfg["servers"][0]["timeouts"] = {"header": "1s"}
    gateway_factory(cfg)
    c = Client(port)
    t0 = time.monotonic()
    assert c.read_to_close_notify() == b""
    assert 0.9 < time.monotonic() - t0 < 5
    assert c.obj.session is not None and c.obj.session.has_ticket
    c.sock.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with c.obj.context.wrap_socket(raw, server_hostname="localhost",
                                       session=c.obj.session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            got = b""
            while not got.endswith(b"hello"):
                data = s.recv(65536)
                assert data, got
                got += data
            assert s.session_reused


def test_pipelined_requests_then_half_close_are_all_answered(tmp_path, cert, gateway_factory):
    """200 requests in one flight, then the client's FIN: every response arrives, then the
    close_notify."""
    port = gateway(tmp_path, gateway_factory, cert)
    c = Client(port)
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" * 200)
    c.sock.shutdown(socket.SHUT_WR)
    assert c.read_to_close_notify().count(b"HTTP/1.1 200") == 200
    c.sock.close()
