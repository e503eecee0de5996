"""TLS termination end to end: certificates made at test time with the openssl CLI (a CA, a
certificate for a.example.test, a wildcard *.w.example.test and a default), driven with curl,
`openssl s_client` and wrk against the real binary and a real upstream (upstream.py).

Covers SNI (exact, wildcard, default, none), keep-alive HTTP/1.1 over TLS with a large download
and a chunked upload, X-Forwarded-Proto, HSTS, 421, plain HTTP to the TLS port (400), the
handshake timeout, redirectHttps, the access log's TLS fields, session resumption across
workers (TLS 1.2 and 1.3), the tickets sent per handshake, a certificate swap under wrk load,
and the shipped example."""
import hashlib
import datetime
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BINARY, REPO_ROOT, base_config, example_certs, free_port, \
    recv_until_close

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs the openssl and curl CLIs")


def _run(*args, **kw):
    return subprocess.run(list(args), check=True, capture_output=True, timeout=60, **kw)


def _leaf(d, name, cn, sans):
    key, csr, ext, crt = (d / (name + s) for s in (".key", ".csr", ".ext", ".crt"))
    _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=" + cn, "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=" + ",".join("DNS:" + s for s in sans) + "\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / "ca.crt"), "-CAkey",
         str(d / "ca.key"), "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(ext),
         "-out", str(crt))
    return str(crt), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    _run("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=Test CA",
         "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    return {
        "dir": d,
        "ca": str(d / "ca.crt"),
        "a": _leaf(d, "a", "a.example.test", ["a.example.test"]),
        "w": _leaf(d, "w", "wild", ["*.w.example.test"]),
        "def": _leaf(d, "def", "default.example.test", ["default.example.test"]),
        "a2": _leaf(d, "a2", "a2.example.test", ["a.example.test"]),
    }


def tls_config(tmp_path, certs, port, routes=None, clusters=None, workers=2, **tls):
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=workers)
    cfg["certificates"] = [{"id": i, "chain": certs[i][0], "key": certs[i][1]}
                           for i in ("a", "w", "def")]
    t = {"certificates": ["a", "w", "def"], "default": "def"}
    t.update(tls)
    cfg["servers"][0]["tls"] = t
    return cfg


def curl(port, path="/", host="a.example.test", *extra, cacert=None):
    args = ["curl", "-sS", "--http1.1", "--max-time", "20", "--resolve",
            "%s:%d:127.0.0.1" % (host, port), "--cacert", cacert, "-D", "-"] + list(extra) + ["https://%s:%d%s" % (host, port, path)]
    return subprocess.run(args, capture_output=True, timeout=60)


def s_client(port, *args, stdin=b""):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=stdin, capture_output=True, timeout=30)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def subject_cn(out):
    m = re.search(r"subject=.*?CN\s*=\s*([^,\n/]+)", out)
    return m.group(1).strip() if m else None


def test_sni_exact_wildcard_default_and_none(tmp_path, certs, gateway_factory):
    port = free_port()
    gateway_factory(tls_config(tmp_path, certs, port))
    assert subject_cn(s_client(port, "-servername", "a.example.test")) == "a.example.test"
    assert subject_cn(s_client(port, "-servername", "x.w.example.test")) == "wild"
    # a one-level wildcard covers neither its parent nor a name two levels down
    assert subject_cn(s_client(port, "-servername", "a.b.w.example.test")) == \
        "default.example.test"
    assert subject_cn(s_client(port, "-servername", "w.example.test")) == "default.example.test"
    assert subject_cn(s_client(port, "-servername", "unknown.test")) == "default.example.test"
    assert subject_cn(s_client(port, "-noservername")) == "default.example.test"
    # curl verifies the chain and the name against the CA
    for host in ("a.example.test", "x.w.example.test", "default.example.test"):
        p = curl(port, "/", host, cacert=certs["ca"])
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(b"HTTP/1.1 200") and p.stdout.endswith(b"hello")


def test_keepalive_download_upload_and_forwarded_proto(tmp_path, certs, gateway_factory,
                                                       echo_upstream):
    port = free_port()
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": echo_upstream.url}]}]
    gateway_factory(tls_config(tmp_path, certs, port, routes=routes, clusters=clusters))
    size = 24 << 20
    expect = hashlib.sha256(b"x" * size).hexdigest()
    body = tmp_path / "up.bin"
    body.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    out = tmp_path / "down.bin"
    base = "https://a.example.test:%d" % port
    common = ["--resolve", "a.example.test:%d:127.0.0.1" % port, "--cacert", certs["ca"]]
    p = subprocess.run(["curl", "-sS", "-v", "--max-time", "30"] + common +
                       ["-o", str(out), base + "/bytes/%d" % size, "--next"] + common +
                       ["-H", "Transfer-Encoding: chunked", "--data-binary", "@" + str(body),
                        base + "/upload"], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == expect
    assert b"Re-using existing connection" in p.stderr or b"Reusing existing" in p.stderr, \
        p.stderr[-2000:]
    echo = json.loads(p.stdout[p.stdout.index(b"{"):])
    assert echo["method"] == "POST" and echo["bodyLength"] == 2 << 20
    assert echo["bodySha256"] == hashlib.sha256(body.read_bytes()).hexdigest()
    hdrs = {k.lower(): v for k, v in echo["headers"]}
    assert hdrs.get("x-forwarded-proto") == "https"


def test_hsts_421_and_access_log_fields(tmp_path, certs, gateway_factory):
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port,
                                    hsts={"maxAge": "1d", "includeSubDomains": True}))
    p = curl(port, "/", "a.example.test", cacert=certs["ca"])
    assert p.stdout.startswith(b"HTTP/1.1 200")
    assert b"\r\nStrict-Transport-Security: max-age=86400; includeSubDomains\r\n" in p.stdout
    # RFC 9110 15.5.20: a Host the connection's certificate does not cover
    p = curl(port, "/", "a.example.test", "-H", "Host: x.w.example.test", cacert=certs["ca"])
    assert p.stdout.startswith(b"HTTP/1.1 421"), p.stdout
    # without SNI any Host is served (routing by Host)
    out = s_client(port, "-noservername", "-ign_eof",
                   stdin=b"GET / HTTP/1.1\r\nHost: x.w.example.test\r\nConnection: close\r\n\r\n")
    assert "HTTP/1.1 200" in out
    lines = gw.access_log(wait_for=3)  # each worker writes its own lines: any order
    assert sorted(l["status"] for l in lines) == [200, 200, 421], lines
    ok = [l for l in lines if l["status"] == 200 and l["host"].startswith("a.example.test")][0]
    assert ok["tlsVersion"] == "TLSv1.3" and ok["sni"] == "a.example.test"
    assert ok["tlsCipher"].startswith("TLS_") and ok["tlsResumed"] is False
    bare = [l for l in lines if l["host"].startswith("x.w.example.test") and l["status"] == 200][0]
    assert "sni" not in bare and bare["tlsVersion"] == "TLSv1.3"


def test_plain_http_to_tls_port_gets_400_then_close(tmp_path, certs, gateway_factory):
    port = free_port()
    gateway_factory(tls_config(tmp_path, certs, port))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
    data = recv_until_close(s)  # an orderly close: a reset would raise
    s.close()
    assert data.startswith(b"HTTP/1.1 400"), data
    assert b"Connection: close" in data and b"TLS port" in data


def test_handshake_timeout_closes_a_silent_client(tmp_path, certs, gateway_factory):
    port = free_port()
    gateway_factory(tls_config(tmp_path, certs, port, handshakeTimeout="1s"))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    assert s.recv(100) == b""
    waited = time.monotonic() - t0
    s.close()
    assert 0.5 < waited < 8, waited


def _accepted(gw):
    return sum(w["connectionsTotal"] for w in gw.workers())


def _settled_accepted(gw):
    """The accept count once two reads 0.2 s apart agree."""
    last = _accepted(gw)
    for _ in range(20):
        time.sleep(0.2)
        now = _accepted(gw)
        if now == last:
            return now
        last = now
    return last


def test_a_tls_connection_reaches_a_worker_with_its_clienthello(tmp_path, certs,
                                                                  gateway_factory):
    """TLS listeners defer the accept until the client's first bytes (TCP_DEFER_ACCEPT): a
    connection that has sent nothing is no worker's yet; its ClientHello brings it in and the
    handshake and a request complete as usual."""
    import ssl
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port))
    # The check must run within the kernel's deferral (about a second), and the count it reads
    # must have settled: a closed connection (the factory's readiness probe, an earlier try)
    # is accepted by its FIN, a moment later. A try that is slow or sees another's accept goes
    # again; with the deferral off, every try sees its own connection accepted.
    tries = []
    for _ in range(10):
        before = _settled_accepted(gw)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t0 = time.monotonic()
        time.sleep(0.2)
        silent = _accepted(gw)
        tries.append((silent - before, round(time.monotonic() - t0, 2)))
        if time.monotonic() - t0 < 0.8 and silent == before:
            break
        s.close()
    else:
        pytest.fail("a connection that sent nothing was accepted: %r" % tries)
    ctx = ssl.create_default_context(cafile=certs["ca"])
    with ctx.wrap_socket(s, server_hostname="a.example.test") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n")
        data = recv_until_close(tls)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_silent_connections_hold_no_handshake_buffers(tmp_path, certs, gateway_factory):
    """Connections that send nothing reach the worker once the kernel's deferral gives up
    (about a second): until their first byte, each holds its connection and TLS object only,
    not OpenSSL's handshake and record buffers (about 33 KiB more), and a handshake that then
    comes completes."""
    import ssl
    n = 400
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port, workers=1))
    pid = gw.workers()[0]["pid"]
    time.sleep(0.3)
    before = _accepted(gw)
    base = _rss_anon_kib(pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    try:
        deadline = time.monotonic() + 15
        while _accepted(gw) < before + n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _accepted(gw) >= before + n
        time.sleep(0.3)
        per = (_rss_anon_kib(pid) - base) * 1024 / n
        ctx = ssl.create_default_context(cafile=certs["ca"])
        with ctx.wrap_socket(socks.pop(), server_hostname="a.example.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n")
            data = recv_until_close(tls)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert per < 16 * 1024, "a silent TLS connection costs %.0f bytes" % per
    finally:
        for s in socks:
            s.close()


def _rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/%d/status" % pid)


def _client_hello():
    """The bytes of a real ClientHello, taken from a memory BIO."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="a.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_handshake_timeout_is_a_deadline_for_a_dribbling_client(tmp_path, certs,
                                                                  gateway_factory):
    """A client sending its ClientHello one byte at a time, each within the timeout, is closed
    at handshakeTimeout counted from the accept."""
    import select
    port = free_port()
    gateway_factory(tls_config(tmp_path, certs, port, handshakeTimeout="2s"))
    hello = _client_hello()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    closed = None
    try:
        for i in range(len(hello) - 1):
            s.send(hello[i:i + 1])
            if select.select([s], [], [], 0.5)[0]:
                assert s.recv(100) == b""
                closed = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = time.monotonic() - t0
    finally:
        s.close()
    assert closed is not None, "still open after 8 s of dribbling"
    assert 1.5 < closed < 4, closed


def test_redirect_https(tmp_path, certs, gateway_factory):
    port, plain = free_port(), free_port()
    cfg = tls_config(tmp_path, certs, port)
    cfg["servers"].append({"id": "plain", "listen": "127.0.0.1:%d" % plain,
                           "redirectHttps": {"port": port, "status": 301}})
    gateway_factory(cfg)
    p = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null",
                        "http://localhost:%d/a/b?c=1" % plain], capture_output=True, timeout=30)
    assert p.stdout.startswith(b"HTTP/1.1 301"), p.stdout
    assert b"\r\nLocation: https://localhost:%d/a/b?c=1\r\n" % port in p.stdout
    # followed, it lands on the TLS server
    p = subprocess.run(["curl", "-sS", "-L", "--cacert", certs["ca"], "--resolve",
                        "a.example.test:%d:127.0.0.1" % port, "--resolve",
                        "a.example.test:%d:127.0.0.1" % plain,
                        "http://a.example.test:%d/x" % plain], capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout == b"hello", p.stderr


def test_redirect_https_without_host_closes(tmp_path, certs, gateway_factory):
    """A request with no host to redirect to gets 400, and the connection ends after it: a
    request pipelined behind it is not answered."""
    port, plain = free_port(), free_port()
    cfg = tls_config(tmp_path, certs, port)
    cfg["servers"].append({"id": "plain", "listen": "127.0.0.1:%d" % plain,
                           "redirectHttps": {"port": port}})
    gateway_factory(cfg)
    s = socket.create_connection(("127.0.0.1", plain), timeout=5)
    try:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: \r\n\r\n"
                  b"GET /b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        out = recv_until_close(s)
    finally:
        s.close()
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"no valid host to redirect to" in out and b"\r\nConnection: close\r\n" in out, out
    assert out.count(b"HTTP/1.1 ") == 1, out


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_resumption_across_workers(tmp_path, certs, gateway_factory, version):
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port, workers=3))
    assert len(gw.workers()) == 3
    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
    out = s_client(port, version, "-servername", "a.example.test", "-ign_eof", "-sess_out",
                   str(sess), stdin=req)
    assert "HTTP/1.1 200" in out and sess.exists()
    reused = 0
    for _ in range(100):
        out = s_client(port, version, "-servername", "a.example.test", "-ign_eof", "-sess_in",
                       str(sess), "-sess_out", str(sess), stdin=req)
        assert "HTTP/1.1 200" in out
        reused += "Reused," in out
    assert reused == 100
    lines = gw.access_log(wait_for=101)
    assert sum(1 for l in lines if l.get("tlsResumed")) == 100


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("tickets", [True, False])
def test_a_session_resumes_only_for_its_server_name(tmp_path, certs, gateway_factory, version,
                                                    tickets):
    """RFC 6066 3: a server MUST NOT resume a session whose server_name differs from the new
    ClientHello's, but do a full handshake (RFC 8446 4.6.1 lets a TLS 1.3 server hold to the
    same). A session of a.example.test offered for x.w.example.test gets a full handshake with
    the wildcard certificate; one of x.w offered for y.w (the same certificate) is not resumed
    either; offered for its own name it resumes. Both a ticket and, without tickets, a session
    id kept in the cache."""
    port = free_port()
    extra = {} if tickets else {"sessionTickets": False, "sessionCache": 1000}
    gateway_factory(tls_config(tmp_path, certs, port, workers=1, **extra))
    sess = tmp_path / "sess.pem"

    def connect(name, *more):
        return s_client(port, version, "-servername", name, *more,
                        stdin=b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                        % name.encode())
    out = connect("a.example.test", "-ign_eof", "-sess_out", str(sess))
    assert "HTTP/1.1 200" in out and sess.exists(), out[-2000:]
    out = connect("x.w.example.test", "-ign_eof", "-sess_in", str(sess))
    assert "Reused," not in out and "New," in out, out[-2000:]
    assert subject_cn(out) == "wild" and "HTTP/1.1 200" in out, out[-2000:]
    out = connect("x.w.example.test", "-ign_eof", "-sess_out", str(sess))
    assert "HTTP/1.1 200" in out, out[-2000:]
    out = connect("y.w.example.test", "-ign_eof", "-sess_in", str(sess))
    assert "Reused," not in out and "HTTP/1.1 200" in out, out[-2000:]
    out = connect("x.w.example.test", "-ign_eof", "-sess_in", str(sess))
    assert "Reused," in out and "HTTP/1.1 200" in out, out[-2000:]


def test_tls13_resumption_issues_a_fresh_ticket(tmp_path, certs, gateway_factory):
    """RFC 8446 C.4: TLS 1.3 clients use a ticket once (browsers do), so a resumed handshake
    must hand out the next ticket, or every third connection of such a client is a full
    handshake. A chain of single-use resumptions all resume, each with a NewSessionTicket."""
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port))
    req = b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
    sess = [tmp_path / ("sess%d.pem" % i) for i in range(6)]
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof", "-sess_out",
                   str(sess[0]), stdin=req)
    assert "HTTP/1.1 200" in out and sess[0].exists()
    for i in range(1, 6):
        out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof", "-msg",
                       "-sess_in", str(sess[i - 1]), "-sess_out", str(sess[i]), stdin=req)
        assert "HTTP/1.1 200" in out and "Reused," in out, out[-2000:]
        assert "NewSessionTicket" in out, "resumption %d issued no ticket" % i
        assert sess[i].read_bytes() != sess[i - 1].read_bytes()


@pytest.mark.parametrize("configured,expected", [(None, 1), (2, 2)])
def test_tickets_per_full_handshake(tmp_path, certs, gateway_factory, configured, expected):
    """A full TLS 1.3 handshake ends with tls.ticketsPerHandshake tickets (default 1), sent
    with the response; a resumption with exactly one."""
    port = free_port()
    extra = {} if configured is None else {"ticketsPerHandshake": configured}
    gateway_factory(tls_config(tmp_path, certs, port, **extra))
    req = b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
    sess = tmp_path / "sess.pem"
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof", "-msg",
                   "-sess_out", str(sess), stdin=req)
    assert "HTTP/1.1 200" in out and "New," in out
    assert out.count("NewSessionTicket") == expected, out[-3000:]
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof", "-msg",
                   "-sess_in", str(sess), stdin=req)
    assert "HTTP/1.1 200" in out and "Reused," in out
    assert out.count("NewSessionTicket") == 1, out[-3000:]


def test_certificate_swap_under_wrk_load(tmp_path, certs, gateway_factory):
    if shutil.which("wrk") is None:
        pytest.skip("needs wrk")
    port = free_port()
    cfg = tls_config(tmp_path, certs, port)
    gw = gateway_factory(cfg)
    result = {}

    def load():
        p = subprocess.run(["wrk", "-t2", "-c8", "-d4s", "https://127.0.0.1:%d/" % port],
                           capture_output=True, text=True, timeout=60)
        result["out"] = p.stdout + p.stderr

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.5)
    swapped = json.loads(json.dumps(cfg))
    swapped["certificates"][0]["chain"], swapped["certificates"][0]["key"] = certs["a2"]
    gw.reload(swapped)
    t.join()
    out = result["out"]
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    # the new generation offers the new certificate
    assert subject_cn(s_client(port, "-servername", "a.example.test")) == "a2.example.test"


def test_example_config_checks(tmp_path):
    certs_dir = example_certs(tmp_path)
    example = json.loads((REPO_ROOT / "etc/examples/tls.json").read_text())
    text = json.dumps(example).replace("certs/", str(certs_dir) + "/")
    cfg = tmp_path / "tls.json"
    cfg.write_text(text)
    p = subprocess.run([str(BINARY), "-t", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert Path(certs_dir / "server.crt").exists()


def test_static_file_over_tls_without_sendfile(tmp_path, certs, gateway_factory):
    """TLS cannot take sendfile: the file goes through the read + write path, whole."""
    www = tmp_path / "www"
    www.mkdir()
    data = bytes((i * 31 + i // 977) & 0xFF for i in range(5 * 1024 * 1024 + 3))
    (www / "big.bin").write_bytes(data)
    port = free_port()
    routes = [{"id": "files", "match": {"path": "/static/{**rest}"}, "static": {"root": str(www)}}]
    gateway_factory(tls_config(tmp_path, certs, port, routes=routes))
    out = tmp_path / "got.bin"
    p = curl(port, "/static/big.bin", "a.example.test", "-o", str(out), cacert=certs["ca"])
    assert p.returncode == 0, p.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_reload_keeps_open_tls_connections_on_their_generation(tmp_path, certs, gateway_factory):
    """A keep-alive TLS connection opened before a reload that swaps the certificate is
    served after it by its retiring worker; new connections get the new certificate."""
    import ssl
    port = free_port()
    cfg = tls_config(tmp_path, certs, port)
    gw = gateway_factory(cfg)
    ctx = ssl.create_default_context(cafile=certs["ca"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="a.example.test")
    req = b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n"
    s.sendall(req)
    first = b""
    while not first.endswith(b"hello"):  # the head and the body may come as two records
        chunk = s.recv(4096)
        assert chunk, first
        first += chunk
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"hello")
    old_cert = s.getpeercert()
    swapped = json.loads(json.dumps(cfg))
    swapped["certificates"][0]["chain"], swapped["certificates"][0]["key"] = certs["a2"]
    gw.reload(swapped)
    s.sendall(req)
    second = recv_until_close(s)  # the retiring worker answers, then closes
    s.close()
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"hello"), second
    assert dict(x[0] for x in old_cert["subject"])["commonName"] == "a.example.test"
    assert subject_cn(s_client(port, "-servername", "a.example.test")) == "a2.example.test"


def test_chunked_response_over_tls(tmp_path, certs, gateway_factory, echo_upstream):
    """A chunked relay (1 KiB chunks from the destination, chunk-size lines between them)
    arrives whole; small chains are gathered into records with what follows."""
    port = free_port()
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": echo_upstream.url}]}]
    gateway_factory(tls_config(tmp_path, certs, port, routes=routes, clusters=clusters))
    out = tmp_path / "chunked.bin"
    size = 3 * 1024 * 1024 + 5
    p = curl(port, "/chunked/%d" % size, "a.example.test", "-o", str(out), cacert=certs["ca"])
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == b"x" * size


def test_reload_waits_for_a_handshake_in_progress(tmp_path, certs, gateway_factory):
    """A connection accepted before a reload whose client has sent only the start of its
    ClientHello is a session of the retiring worker: the worker waits for the handshake, serves
    the request (closing after it), and does not exit under the client."""
    import ssl
    port = free_port()
    cfg = tls_config(tmp_path, certs, port, workers=1)
    gw = gateway_factory(cfg)
    ctx = ssl.create_default_context(cafile=certs["ca"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="a.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = out.read()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(hello[:5])  # the record header: the listener defers accepts until bytes come
    time.sleep(0.3)  # accepted by the worker of generation 1, handshake pending
    gw.reload(cfg)
    time.sleep(0.5)  # the old worker is retiring now
    raw.sendall(hello[5:])

    def pump():
        data = out.read()
        if data:
            raw.sendall(data)
        chunk = raw.recv(65536)
        if not chunk:
            raise EOFError
        inc.write(chunk)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    tls.write(b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
    answer = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:  # close_notify
                break
            answer += chunk
        except ssl.SSLWantReadError:
            pump()
        except (ssl.SSLZeroReturnError, EOFError):
            break
    raw.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in answer.lower()


def test_certificates_in_show_certificates_and_their_expiry_in_metrics(tmp_path, certs,
                                                                      gateway_factory):
    """`show certificates` names what each certificate entry serves, and the metric
    fastgateway_certificate_expiry_timestamp_seconds{certificate} is its notAfter."""
    from cryptography import x509
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port))
    doc = gw.status("show certificates")
    by_id = {c["id"]: c for c in doc["certificates"]}
    assert set(by_id) == {"a", "w", "def"} and doc["acme"] is None
    leaf = x509.load_pem_x509_certificate(open(certs["a"][0], "rb").read())
    assert by_id["a"]["subject"] == "/CN=a.example.test"
    assert by_id["a"]["issuer"] == "/CN=Test CA"
    assert by_id["a"]["placeholder"] is False and by_id["a"]["acme"] is False
    assert 0 < by_id["a"]["daysLeft"] <= 30
    text = gw.status("show metrics")["text"]
    m = re.search(r'^fastgateway_certificate_expiry_timestamp_seconds\{certificate="a"\} (\d+)$',
                  text, re.M)
    assert m, text[-2000:]
    not_after = leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    assert int(m.group(1)) == int(not_after.timestamp())
