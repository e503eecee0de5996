"""System calls a keep-alive request costs a worker (worker/core/conn.c), counted with strace:
between two requests on an idle keep-alive connection the read event only drops its idle
timer, so the epoll registration is left alone (no EPOLL_CTL_DEL and EPOLL_CTL_ADD per
request), over plain TCP and over TLS. Counts, not timings."""
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import base_config, free_port

pytestmark = pytest.mark.skipif(shutil.which("strace") is None or shutil.which("openssl") is None,
                                reason="needs strace and the openssl CLI")

REQUESTS = 50


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return str(d / "cert.pem"), str(d / "key.pem")


def strace_counts(pid, fn):
    """fn() while strace -c watches pid; {syscall: calls}."""
    out = "/proc/self/fd/1"
    p = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-e",
                          "trace=epoll_ctl,epoll_wait", "-o", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached (strace prints nothing to say so)
    try:
        fn()
    finally:
        time.sleep(0.2)
        p.send_signal(2)
        text = p.communicate(timeout=20)[0].decode()
    counts = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and f[-1] in ("epoll_ctl", "epoll_wait"):
            counts[f[-1]] = int(f[3])
    return counts


def keepalive(sock):
    for _ in range(REQUESTS):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while not buf.endswith(b"hello"):
            data = sock.recv(4096)
            assert data, "closed"
            buf += data


@pytest.mark.parametrize("tls", [False, True])
def test_keepalive_requests_leave_the_epoll_registration_alone(tmp_path, gateway_factory, cert,
                                                               tls):
    port = free_port()
    cfg = base_config(tmp_path, port, workers=1)
    if tls:
        cfg["certificates"] = [{"id": "c", "chain": cert[0], "key": cert[1]}]
        cfg["servers"][0]["tls"] = {"certificates": ["c"]}
    gw = gateway_factory(cfg)
    pid = gw.workers()[0]["pid"]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(raw)
    else:
        sock = raw
    keepalive(sock)  # the connection is set up and has served before the count starts
    counts = strace_counts(pid, lambda: keepalive(sock))
    sock.close()
    assert counts.get("epoll_wait", 0) >= REQUESTS, counts  # strace saw the requests
    assert counts.get("epoll_ctl", 0) <= 4, counts
