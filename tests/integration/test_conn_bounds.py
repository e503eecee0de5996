"""What one client connection may cost a worker (worker/http/http1.c, worker/core/conn.c): pipelined
requests from a client that never reads its answers are not parsed while the answers wait, static
files go out one at a time per connection (sendfile, no mapping), and an idle keep-alive
connection keeps only a small struct."""
import hashlib
import os
import re
import resource
import socket
import threading
import time

import pytest

from conftest import SANITIZED, base_config, free_port, http_request

# A sanitizer build's allocator (redzones, quarantine, shadow memory) makes RssAnon say nothing
# about the gateway's own memory: there, the memory bounds are not asserted; the rest is.


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/%d/status" % pid)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def only_worker(gw):
    workers = gw.workers()
    assert len(workers) == 1, workers
    return workers[0]["pid"]


class Pipeliner:
    """Sends `data` on a connection from a thread and never reads until told to."""

    def __init__(self, port, data):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        # Small kernel buffers on the client side, so the gateway's own queue is what fills.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.data = memoryview(data)
        self.sent = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while self.sent < len(self.data):
                self.sent += self.sock.send(self.data[self.sent:self.sent + 65536])
        except OSError as e:
            self.error = e

    def wait_stalled(self, quiet=1.0, timeout=30.0):
        """Until sending has made no progress for `quiet` seconds (or everything is sent)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def close(self):
        self.sock.close()


def served_promptly(port, path):
    t0 = time.monotonic()
    status, _, body = http_request("GET", "http://127.0.0.1:%d%s" % (port, path), timeout=5.0)
    return status, body, time.monotonic() - t0


DIRECT_ROUTES = [
    {"id": "d1", "match": {"path": "/d1"}, "direct": {"status": 200, "body": "one"}},
    {"id": "d2", "match": {"path": "/d2"}, "direct": {"status": 200, "body": "two!"}},
    {"id": "d3", "match": {"path": "/d3"}, "direct": {"status": 200, "body": "three"}},
]
REDIRECT_ROUTES = [
    {"id": "r", "match": {"path": "/r/{n}"},
     "redirect": {"status": 302, "location": "/dest/{n}"}},
]
PROXY_ROUTES = [{"id": "p", "match": {"path": "/p/{**rest}"}, "clusterId": "echo",
                 "transforms": [{"PathRemovePrefix": "/p"}]}]

# kind: (routes, the three request paths, bytes of requests sent, key of an answer, length of
# a request). The direct and redirect requests carry a padding field up to about the size of
# their answers (120 to 140 bytes): 24 MiB are then 260,000 requests rather than 870,000
# (reading the answers took 6 s), and either way a worker that read them all unparsed, or
# parsed them all and queued the answers, would hold well over the 8 MiB the test allows.
PIPELINES = {
    "direct": (DIRECT_ROUTES, ["/d1", "/d2", "/d3"], 24 << 20,
               lambda head, body: body, 96),
    "redirect": (REDIRECT_ROUTES, ["/r/1", "/r/2", "/r/3"], 24 << 20,
                 lambda head, body: re.search(rb"(?im)^location: (\S+)", head).group(1), 96),
    # Each answer costs a trip to a Python upstream: fewer requests, larger answers.
    "proxy": (PROXY_ROUTES, ["/p/bytes/4001", "/p/bytes/4002", "/p/bytes/4003"], 300 << 10,
              lambda head, body: len(body), None),
}


def pipelined_request(path, length):
    """A GET of path, padded with a field to `length` bytes (None: no padding)."""
    req = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()
    if length is None:
        return req
    pad = length - len(req) - len(b"X-Pad: \r\n")
    assert pad > 0
    return b"GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (path.encode(), b"p" * pad)


def read_answers(sock, count, key, deadline):
    """The keys of `count` Content-Length-framed answers read from sock, in order."""
    buf = bytearray()
    keys = []
    while len(keys) < count and time.monotonic() < deadline:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end])
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            assert m, head
            total = end + 4 + int(m.group(1))
            if len(buf) >= total:
                keys.append(key(head, bytes(buf[end + 4:total])))
                del buf[:total]
                continue
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed after %d answers" % len(keys)
        buf += chunk
    return keys


def settled_rss(pid, quiet=1.0, timeout=30.0):
    """RssAnon once it has not grown for `quiet` seconds (the worker caught up)."""
    deadline = time.monotonic() + timeout
    last, since = rss_anon_kib(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss_anon_kib(pid)
        if now > last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_pipelined_requests_from_a_non_reading_client_stay_bounded(
        tmp_path, gateway_factory, echo_upstream, kind):
    """Many MiB of pipelined GETs, never read: the worker stops parsing (and reading) while
    the answers wait, so its anonymous memory stays small and another client is served; once
    the client reads, every answer arrives, in order."""
    routes, paths, size, key, length = PIPELINES[kind]
    clusters = [{"id": "echo", "destinations": [{"id": "e", "address": echo_upstream.url}]}]
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=routes, clusters=clusters,
                                     workers=1))
    pid = only_worker(gw)
    for path in paths:
        assert http_request("GET", gw.url(path))[0] in (200, 302)
    base = rss_anon_kib(pid)

    reqs = [pipelined_request(path, length) for path in paths]
    assert len({len(r) for r in reqs}) == 1
    count = size // len(reqs[0])
    data = b"".join(reqs[i % 3] for i in range(count))
    p = Pipeliner(gw.port, data)
    try:
        p.wait_stalled()
        grown = settled_rss(pid) - base
        assert SANITIZED or grown < 8 * 1024, "worker grew by %d KiB for one client" % grown
        status, _, took = served_promptly(gw.port, paths[1])
        assert status in (200, 302)
        assert took < 2.0

        # Now read everything: each answer, in the order asked.
        keys = read_answers(p.sock, count, key, time.monotonic() + 100)
        assert p.error is None
        assert len(keys) == count
        want = [key(*head_body(gw, path)) for path in paths]
        assert all(k == want[i % 3] for i, k in enumerate(keys))
    finally:
        p.close()


def head_body(gw, path):
    """(head, body) of one answer to path on its own connection."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    end = data.find(b"\r\n\r\n")
    return bytes(data[:end]), bytes(data[end + 4:])


def test_pipelined_static_file_requests_hold_one_descriptor(tmp_path, gateway_factory):
    """200 pipelined GETs of a 1 MiB file, not read: the worker opens one file at a time for
    the connection, another client is served, and every body arrives intact."""
    www = tmp_path / "www"
    www.mkdir()
    content = os.urandom((1 << 20) + 7)
    (www / "big.bin").write_bytes(content)
    (www / "small.txt").write_bytes(b"small\n")
    routes = [{"id": "files", "match": {"path": "/static/{**rest}"},
               "static": {"root": str(www)}}]
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=routes, workers=1))
    pid = only_worker(gw)
    status, _, _ = http_request("GET", gw.url("/static/small.txt"))
    assert status == 200
    base = open_fds(pid)

    count = 200
    data = b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * count
    p = Pipeliner(gw.port, data)
    try:
        p.wait_stalled()
        time.sleep(0.5)
        held = open_fds(pid) - base
        assert held <= 3, "worker holds %d more descriptors for one client" % held
        status, body, took = served_promptly(gw.port, "/static/small.txt")
        assert (status, body) == (200, b"small\n")
        assert took < 2.0

        want = hashlib.sha256(content).hexdigest()
        buf = bytearray()
        got = 0
        deadline = time.monotonic() + 90
        while got < count and time.monotonic() < deadline:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(buf[:end]).decode("latin-1")
                assert head.startswith("HTTP/1.1 200 "), head
                m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                assert m and int(m.group(1)) == len(content), head
                if len(buf) >= end + 4 + len(content):
                    body = bytes(buf[end + 4:end + 4 + len(content)])
                    assert hashlib.sha256(body).hexdigest() == want, "body %d corrupt" % got
                    del buf[:end + 4 + len(content)]
                    got += 1
                    continue
            chunk = p.sock.recv(1 << 20)
            assert chunk, "connection closed after %d answers" % got
            buf += chunk
        assert got == count
        assert p.error is None
    finally:
        p.close()


def test_idle_keepalive_connection_holds_little_memory(tmp_path, gateway_factory):
    """2,000 keep-alive connections idle after one request each cost the worker under 2 KiB
    each (RssAnon delta / 2,000): request state and buffers are released between requests."""
    n = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:
        if hard != resource.RLIM_INFINITY and hard < n + 256:
            pytest.skip("RLIMIT_NOFILE hard limit %d is too low" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, hard))
    cfg = base_config(tmp_path, free_port(), routes=DIRECT_ROUTES, workers=1,
                      workerRlimitNofile=n + 1024)
    cfg["servers"][0]["timeouts"] = {"keepAlive": "300s"}
    gw = gateway_factory(cfg)
    pid = only_worker(gw)
    for _ in range(3):
        assert http_request("GET", gw.url("/d1"))[0] == 200
    time.sleep(0.2)
    base = rss_anon_kib(pid)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            socks.append(s)
            s.sendall(b"GET /d3 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"three"):
                chunk = s.recv(4096)
                assert chunk, "closed before the answer"
                data += chunk
        time.sleep(0.5)
        per = (rss_anon_kib(pid) - base) * 1024 / n
        assert SANITIZED or per < 2048, "an idle keep-alive connection costs %.0f bytes" % per
        # Idle, not dead: each still answers its next request.
        for s in socks[:: n // 20]:
            s.sendall(b"GET /d2 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"two!"):
                chunk = s.recv(4096)
                assert chunk
                data += chunk
    finally:
        for s in socks:
            s.close()
