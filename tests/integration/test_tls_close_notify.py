"""A TLS peer's close_notify that arrives in the same read as its last data, while its TCP stays
open: the gateway must act on it as the end of the peer's side at once, since no socket event
follows it.

The TLS peers here run Python ssl over memory BIOs, so that the data and the close_notify leave
in one write(2), as they do from a server that calls unwrap() (SSL_shutdown) right after its
answer:
- a destination that ends its side behind a Content-Length answer: its connection is never
  taken from the pool again, the next request (GET or POST) goes on a new connection at once;
- a destination that ends a close-delimited body with close_notify: the client's (chunked)
  response ends at once, with its last chunk;
- a client that sends its request and close_notify together: it gets the answer, then the
  gateway closes (a close_notify counts as the client's FIN: ignoreClientAbort decides what it
  means for a request still waiting for its destination)."""
import http.client
import shutil
import socket
import ssl
import time

import pytest

from conftest import base_config, free_port
from peers import BioTLS, ThreadedServer, self_signed_cert

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

# Far longer than any answer here takes: a wait for it is the defect under test.
ACTIVITY = "4s"
PROMPT = 2.0


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("cn_certs"))


class Destination(ThreadedServer):
    """A TLS destination. GET /cn: a 5-byte answer and close_notify in one write; /eof: a
    close-delimited answer and close_notify in one write. After close_notify it keeps TCP open
    and records, per connection, what the gateway did next: ("reused", t) for a request on it,
    ("closed", t) for its close_notify or FIN, t in seconds after the close_notify. Other
    paths: a keep-alive 200 "normal"."""

    def __init__(self, cert):
        super().__init__(backlog=16)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.after = []
        self.start()

    def _serve(self, s):
        s.settimeout(10)
        try:
            t = BioTLS(s, self.ctx, True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = t.read()
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                line = head.split(b"\r\n")[0]
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                while len(buf) < length:
                    buf += t.read()
                buf = buf[length:]
                path = line.split(b" ")[1]
                if path in (b"/cn", b"/eof"):
                    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                              if path == b"/cn" else b"HTTP/1.1 200 OK\r\n\r\nhello-until-close")
                    t.write(answer, close_notify=True)
                    self._watch(t, time.monotonic())
                    return
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnormal")
        except (OSError, EOFError, ssl.SSLError):
            pass
        finally:
            s.close()

    def _watch(self, t, since):
        try:
            what = "reused" if t.read() else "closed"
        except EOFError:
            what = "closed"
        except (OSError, ssl.SSLError):
            what = "error"
        with self.lock:
            self.after.append((what, time.monotonic() - since))
        try:
            while what == "reused" and t.read():
                pass  # a request sent after close_notify gets no answer, as from a real server
        except (OSError, EOFError, ssl.SSLError):
            pass


@pytest.fixture
def destination(cert):
    d = Destination(cert)
    yield d
    d.close()


def proxy_gateway(tmp_path, gateway_factory, dest):
    port = free_port()
    clusters = [{"id": "c",
                 "destinations": [{"id": "d", "address": "https://127.0.0.1:%d" % dest.port}],
                 "httpClient": {"dangerousAcceptAnyServerCertificate": True},
                 "httpRequest": {"activityTimeout": ACTIVITY}}]
    routes = [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
    return gateway_factory(base_config(tmp_path, port, routes=routes, clusters=clusters,
                                       workers=1))


def timed(gw, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.monotonic() - t0
    finally:
        conn.close()


def wait_after(dest, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with dest.lock:
            if len(dest.after) >= n:
                return list(dest.after)
        time.sleep(0.02)
    return list(dest.after)


@pytest.mark.parametrize("method,pause", [("GET", 0), ("POST", 0), ("GET", 0.3)])
def test_destination_close_notify_after_answer_is_not_reused(tmp_path, gateway_factory,
                                                             destination, method, pause):
    """The second request goes on a new connection at once: straight after the first answer
    (the connection never enters the pool) and after a pause (the pool drops it)."""
    gw = proxy_gateway(tmp_path, gateway_factory, destination)
    status, body, _ = timed(gw, "GET", "/cn")
    assert (status, body) == (200, b"hello")
    time.sleep(pause)
    status, body, took = timed(gw, method, "/next", b"data" if method == "POST" else None)
    assert (status, body) == (200, b"normal"), gw.error_log()[-2000:]
    assert took < PROMPT, "the second request waited %.2fs" % took
    assert destination.connections == 2
    after = wait_after(destination, 1)
    assert after and after[0][0] == "closed", after
    assert after[0][1] < PROMPT, after


def test_close_delimited_body_ended_by_close_notify(tmp_path, gateway_factory, destination):
    gw = proxy_gateway(tmp_path, gateway_factory, destination)
    status, body, took = timed(gw, "GET", "/eof")  # chunked to the client: its last chunk ends it
    assert (status, body) == (200, b"hello-until-close")
    assert took < PROMPT, "the response took %.2fs" % took
    after = wait_after(destination, 1)
    assert after and after[0][0] == "closed", after
    lines = gw.access_log(wait_for=1)
    assert lines and lines[-1].get("termination") != "upstream_timeout", lines


def client_close_notify(gw_port, request):
    """Send request and close_notify in one write; return (answer, seconds until the gateway
    ended the connection), the answer being all bytes before that end."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection(("127.0.0.1", gw_port), timeout=6)
    try:
        t = BioTLS(s, ctx, False)
        t0 = time.monotonic()
        t.write(request, close_notify=True)
        got = b""
        try:
            while True:
                data = t.read()
                if not data:
                    break
                got += data
        except EOFError:
            pass
        except socket.timeout:
            return got, None
        return got, time.monotonic() - t0
    finally:
        s.close()


@pytest.mark.parametrize("path", ["/direct", "/slow?ms=300"])
def test_client_request_with_close_notify_is_answered_then_closed(tmp_path, gateway_factory,
                                                                   echo_upstream, cert, path):
    port = free_port()
    routes = [{"id": "slow", "order": -1, "match": {"path": "/slow"}, "clusterId": "u"},
              {"id": "direct", "match": {"path": "/{**rest}"},
               "direct": {"status": 200, "body": "direct-answer"}}]
    clusters = [{"id": "u", "destinations": [{"id": "d", "address": echo_upstream.url}]}]
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=1)
    cfg["certificates"] = [{"id": "s", "chain": cert[0], "key": cert[1]}]
    cfg["servers"][0]["tls"] = {"certificates": ["s"]}
    # The close_notify is the client's FIN: only with ignoreClientAbort does a request still
    # waiting for its destination get its answer.
    cfg["servers"][0]["ignoreClientAbort"] = True
    cfg["servers"][0]["timeouts"] = {"keepAlive": "30s"}
    gw = gateway_factory(cfg)
    request = b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode()
    got, took = client_close_notify(port, request)
    assert got.startswith(b"HTTP/1.1 200"), got
    assert (b"direct-answer" in got) if path == "/direct" else (b'"/slow"' in got), got
    assert took is not None, "the gateway kept the connection open: %r" % got
    assert took < PROMPT + 0.3, took
