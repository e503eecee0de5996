"""TLS to https:// destinations end to end: the real binary in front of upstream.py speaking
HTTPS (Python ssl, in its own process), with certificates made at test time by the openssl CLI.

Covers verification with caFile (by name with SNI, and by IP address without SNI), a failed
verification (unknown CA, hostname mismatch: 502 and the reason in the error log, termination
upstream_tls), dangerousAcceptAnyServerCertificate, mutual TLS, session resumption across new
connections (TLS 1.2 and 1.3), active health probes over TLS (an https address in front of a
plain server is unhealthy, and answers 502 instead of plaintext), and a large download and a
chunked upload through TLS to the destination."""
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import UPSTREAM_SCRIPT, Upstream, _live_groups, _port_open, base_config, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs the openssl and curl CLIs")


def _run(*args):
    return subprocess.run(list(args), check=True, capture_output=True, timeout=60)


def _ca(d, name):
    _run("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=" + name,
         "-keyout", str(d / (name + ".key")), "-out", str(d / (name + ".crt")))
    return str(d / (name + ".crt"))


def _leaf(d, ca, name, cn, sans):
    key, csr, ext, crt = (d / (name + s) for s in (".key", ".csr", ".ext", ".crt"))
    _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=" + cn, "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=" + ",".join(sans) + "\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / (ca + ".crt")), "-CAkey",
         str(d / (ca + ".key")), "-CAcreateserial", "-days", "30", "-sha256", "-extfile",
         str(ext), "-out", str(crt))
    return str(crt), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    return {
        "ca": _ca(d, "ca"),
        "other_ca": _ca(d, "otherca"),
        "up": _leaf(d, "ca", "up", "up.example.test",
                    ["DNS:up.example.test", "IP:127.0.0.1"]),
        "client": _leaf(d, "ca", "client", "client.example.test", ["DNS:client.example.test"]),
    }


class TLSUpstream(Upstream):
    """upstream.py with --tls (and --client-ca for mutual TLS)."""

    def __init__(self, cert, key, client_ca=None):
        super().__init__()
        self.url = "https://127.0.0.1:%d" % self.port
        self.args = ["--tls", cert, key] + (["--client-ca", client_ca] if client_ca else [])

    def start(self, timeout=10):
        self.proc = subprocess.Popen([sys.executable, str(UPSTREAM_SCRIPT), str(self.port)] +
                                     self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _live_groups.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "upstream exited"
            if _port_open(self.port, 0.2):
                return self
            time.sleep(0.02)
        raise RuntimeError("upstream on %d not listening" % self.port)

    def tls_stats(self, cafile):
        p = subprocess.run(["curl", "-sS", "--cacert", cafile, self.url + "/__tls"],
                           capture_output=True, timeout=20, check=True)
        return json.loads(p.stdout)


@pytest.fixture
def tls_upstreams():
    started = []

    def factory(cert, key, client_ca=None):
        up = TLSUpstream(cert, key, client_ca)
        started.append(up)
        return up.start()

    yield factory
    for up in started:
        up.stop()


def proxy_config(tmp_path, certs, clusters, workers=1, **top):
    port = free_port()
    routes = [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": clusters[0]["id"]}]
    cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=workers, **top)
    cfg["certificates"] = [{"id": "client", "chain": certs["client"][0],
                            "key": certs["client"][1]}]
    return cfg


def get(gw, path, *extra):
    """(status, body bytes) of a GET through the gateway, with curl."""
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"] +
                       list(extra) + ["http://127.0.0.1:%d%s" % (gw.port, path)],
                       capture_output=True, timeout=60)
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), body


def wait_log(gw, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in gw.error_log():
            return True
        time.sleep(0.05)
    return text in gw.error_log()


def test_verify_ok_with_ca_file_by_name_and_by_ip(tmp_path, certs, gateway_factory,
                                                  tls_upstreams):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "byname", "destinations": [{"id": "d", "address": up.url,
                                                   "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["ca"]}},
                {"id": "byip", "destinations": [{"id": "d", "address": up.url}],
                 "httpClient": {"caFile": certs["ca"]}}]
    cfg = proxy_config(tmp_path, certs, clusters)
    cfg["routes"].insert(0, {"id": "ip", "order": -1, "match": {"path": "/ip/{**rest}"},
                             "clusterId": "byip"})
    gw = gateway_factory(cfg)
    status, body = get(gw, "/hello")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["path"] == "/hello" and doc["upstream"] == up.port
    status, body = get(gw, "/ip/x")
    assert status == 200, body
    stats = up.tls_stats(certs["ca"])
    # SNI from the destination's host; an IP address sends none (RFC 6066 3) and is checked
    # against the certificate's IP SAN
    assert "up.example.test" in stats["sni"]
    assert None in stats["sni"]


@pytest.mark.parametrize("case,client,why", [
    ("unknown_ca", {"caFile": "other_ca"},
     "certificate verify failed (20: unable to get local issuer certificate)"),
    ("hostname_mismatch", {"caFile": "ca", "serverName": "wrong.example.test"},
     "certificate verify failed (62: hostname mismatch)"),
])
def test_failed_verification_is_502_with_the_reason_logged(tmp_path, certs, gateway_factory,
                                                           tls_upstreams, case, client, why):
    up = tls_upstreams(*certs["up"])
    http_client = {k: certs[v] if k == "caFile" else v for k, v in client.items()}
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": http_client}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    status, body = get(gw, "/secret")
    assert status == 502, body
    assert b"upstream" not in body or b"certificate" not in body  # the reason is the log's
    assert wait_log(gw, why + " while SSL handshaking to upstream, client: 127.0.0.1"), \
        gw.error_log()[-2000:]
    line = [l for l in gw.error_log().splitlines() if why in l][0]
    assert "[warn]" in line or "warn" in line
    assert 'upstream: "https://127.0.0.1:%d/secret"' % up.port in line
    log = gw.access_log(wait_for=1)
    assert log[-1]["status"] == 502 and log[-1]["termination"] == "upstream_tls"
    # the destination never saw a request
    assert up.tls_stats(certs["ca"])["handshakes"] == 1  # only this query's own


def test_accept_any_certificate(tmp_path, certs, gateway_factory, tls_upstreams):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["other_ca"],
                                "dangerousAcceptAnyServerCertificate": True}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    status, body = get(gw, "/any")
    assert status == 200, body
    assert json.loads(body)["path"] == "/any"


@pytest.mark.parametrize("with_cert", [False, True])
def test_mutual_tls(tmp_path, certs, gateway_factory, tls_upstreams, with_cert):
    up = tls_upstreams(*certs["up"], client_ca=certs["ca"])
    hc = {"caFile": certs["ca"]}
    if with_cert:
        hc["clientCertificate"] = "client"
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": hc}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    status, body = get(gw, "/m")
    if with_cert:
        assert status == 200, body
        assert json.loads(body)["path"] == "/m"
    else:
        assert status == 502, body


@pytest.mark.parametrize("versions", [["Tls12"], ["Tls13"]])
def test_sessions_resume_across_new_connections(tmp_path, certs, gateway_factory,
                                                tls_upstreams, versions):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["ca"], "sslProtocols": versions},
                 "keepAlive": {"maxIdleConnections": 0}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters, workers=1))
    for i in range(6):
        status, body = get(gw, "/r%d" % i)
        assert status == 200, body
    stats = up.tls_stats(certs["ca"])
    # six connections from the gateway (no idle pool), plus this query's own
    assert stats["handshakes"] == 7, stats
    # the first is full, every later one resumes the session the previous one left
    assert stats["resumed"] == 5, stats


def test_keepalive_connections_stay_tls(tmp_path, certs, gateway_factory, tls_upstreams):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["ca"]}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters, workers=1))
    peers = set()
    for i in range(5):
        status, body = get(gw, "/k%d" % i)
        assert status == 200, body
        peers.add(json.loads(body)["peer"])
    assert len(peers) == 1  # one pooled connection carried them all
    assert up.tls_stats(certs["ca"])["handshakes"] == 2


def probed_cluster(certs, destinations):
    """Cluster c of destinations, checked actively (GET /health every 300 ms, healthy or
    unhealthy after one probe) through an httpClient that trusts the test CA."""
    return [{"id": "c", "destinations": destinations,
             "httpClient": {"caFile": certs["ca"], "handshakeTimeout": "1s"},
             "healthCheck": {"active": {"enabled": True, "interval": "300ms",
                                        "timeout": "500ms", "path": "/health",
                                        "threshold": 1}}}]


def wait_active_states(gw, want, timeout=5):
    """Until the active-check states of cluster c's destinations (id: state) are want."""
    def states():
        for c in gw.status("show servers")["clusters"]:
            if c["id"] == "c":
                return {d["id"]: d["active"]["state"] for d in c["destinations"]}

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and states() != want:
        time.sleep(0.1)
    assert states() == want


def test_health_probes_over_tls(tmp_path, certs, gateway_factory, tls_upstreams,
                                upstream_factory):
    good = tls_upstreams(*certs["up"])
    plain = upstream_factory()  # a plain HTTP server behind an https:// address
    clusters = probed_cluster(certs, [
        {"id": "good", "address": good.url, "host": "up.example.test"},
        {"id": "plain", "address": "https://127.0.0.1:%d" % plain.port,
         "host": "up.example.test"}])
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    wait_active_states(gw, {"good": "healthy", "plain": "unhealthy"})
    # the probes went over TLS: the good destination counted them as TLS handshakes
    assert good.tls_stats(certs["ca"])["handshakes"] >= 2
    assert plain.proc.poll() is None


def test_https_health_address_probes_over_tls(tmp_path, certs, gateway_factory, tls_upstreams,
                                              upstream_factory):
    """A `health` address given as https:// is probed over TLS, with the cluster's httpClient
    (caFile; the address's IP checked against the certificate's IP SAN), whatever the
    destination's own scheme."""
    tls_health = tls_upstreams(*certs["up"])
    plain = upstream_factory()
    clusters = probed_cluster(certs, [
        {"id": "good", "address": plain.url, "health": tls_health.url},
        {"id": "plain", "address": plain.url, "health": "https://127.0.0.1:%d" % plain.port}])
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    wait_active_states(gw, {"good": "healthy", "plain": "unhealthy"})
    stats = tls_health.tls_stats(certs["ca"])
    assert stats["handshakes"] >= 2 and None in stats["sni"]  # IP address: no SNI
    # the plain server behind the https health address never got a request in plaintext
    p = subprocess.run(["curl", "-sS", plain.url + "/__count"], capture_output=True, timeout=20)
    assert "/health" not in json.loads(p.stdout)
    assert wait_log(gw, "destination plain: unhealthy by active check")


@pytest.mark.parametrize("client,expected", [
    ({"sslProtocols": ["Tls12"], "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305"},
     "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ({"sslProtocols": ["Tls13"], "ciphersuites": "TLS_CHACHA20_POLY1305_SHA256",
      "groups": "P-384"},
     "TLS_CHACHA20_POLY1305_SHA256"),
])
def test_http_client_ciphers_are_offered(tmp_path, certs, gateway_factory, tls_upstreams,
                                         client, expected):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": dict(client, caFile=certs["ca"])}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    status, body = get(gw, "/x")
    assert status == 200, body
    # the first handshake is the gateway's (the second, curl's for /__tls)
    assert up.tls_stats(certs["ca"])["ciphers"][0] == expected


@pytest.mark.parametrize("key,value,why", [
    ("ciphers", "NOPE-CIPHER", 'httpClient.ciphers: no usable cipher in "NOPE-CIPHER"'),
    ("ciphersuites", "TLS_NOPE", 'httpClient.ciphersuites: not a valid TLS 1.3 suite list: '
                                 '"TLS_NOPE"'),
    ("groups", "P-1", 'httpClient.groups: not a valid group list: "P-1"'),
])
def test_check_refuses_bad_http_client_cipher_lists(tmp_path, certs, key, value, why):
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:1"}],
                 "httpClient": {key: value}}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(proxy_config(tmp_path, certs, clusters)))
    from conftest import BINARY
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, timeout=30)
    assert p.returncode != 0 and why in p.stderr.decode(), p.stderr


def test_https_address_in_front_of_a_plain_server_fails(tmp_path, certs, gateway_factory,
                                                        upstream_factory):
    """The bug this closes: https://127.0.0.1:PORT in front of a plain server answered 200
    (the request went out in plaintext). It must fail the handshake instead."""
    plain = upstream_factory()
    clusters = [{"id": "c", "destinations": [{"id": "d",
                                              "address": "https://127.0.0.1:%d" % plain.port}],
                 "httpClient": {"dangerousAcceptAnyServerCertificate": True,
                                "handshakeTimeout": "1s"}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    status, body = get(gw, "/plain")
    assert status in (502, 504), body
    assert b'"upstream"' not in body and b'bad_gateway' in body or status == 504
    assert wait_log(gw, "while SSL handshaking to upstream")
    # the plain server never got an HTTP request from the gateway
    p = subprocess.run(["curl", "-sS", plain.url + "/__count"], capture_output=True, timeout=20)
    assert "/plain" not in json.loads(p.stdout)


def test_large_download_and_chunked_upload_through_tls(tmp_path, certs, gateway_factory,
                                                       tls_upstreams):
    up = tls_upstreams(*certs["up"])
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": up.url,
                                              "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["ca"]}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
    size = 48 << 20  # an identity body large enough to be spliced on a plain destination
    p = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", "-",
                        "http://127.0.0.1:%d/bytes/%d" % (gw.port, size)],
                       capture_output=True, timeout=90)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) == size
    assert hashlib.sha256(p.stdout).hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    data = bytes(range(256)) * (12 << 12)  # 12 MiB
    src = tmp_path / "upload.bin"
    src.write_bytes(data)
    p = subprocess.run(["curl", "-sS", "--max-time", "60", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", "@" + str(src),
                        "http://127.0.0.1:%d/up" % gw.port], capture_output=True, timeout=90)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["bodyLength"] == len(data)
    assert doc["bodySha256"] == hashlib.sha256(data).hexdigest()


def test_handshake_timeout_is_504(tmp_path, certs, gateway_factory):
    """A destination that completes the TCP connect (the kernel's accept queue) but never
    answers the ClientHello: the handshake gives up after handshakeTimeout."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    try:
        clusters = [{"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:%d"
                                                  % ls.getsockname()[1]}],
                     "httpClient": {"handshakeTimeout": "300ms"}}]
        gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
        t0 = time.monotonic()
        status, body = get(gw, "/silent")
        assert status == 504, body
        assert time.monotonic() - t0 < 5
        assert wait_log(gw, "upstream timed out (110: Connection timed out) while SSL "
                            "handshaking to upstream")
        assert gw.access_log(wait_for=1)[-1]["termination"] == "upstream_tls"
    finally:
        ls.close()


def test_handshake_timeout_is_a_deadline_for_a_dribbling_destination(tmp_path, certs,
                                                                       gateway_factory):
    """A destination sending its handshake record one byte at a time, each well within the
    timeout, still meets handshakeTimeout counted from the start of the handshake: 504."""
    import threading
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    stop = threading.Event()

    def dribble():
        ls.settimeout(10)
        try:
            a, _ = ls.accept()
        except OSError:
            return
        # A handshake record header announcing 16 KiB, then its body a byte at a time.
        record = b"\x16\x03\x03\x40\x00" + b"\x00" * 100
        try:
            for i in range(len(record)):
                if stop.wait(0.4):
                    break
                a.send(record[i:i + 1])
        except OSError:
            pass
        finally:
            a.close()

    th = threading.Thread(target=dribble, daemon=True)
    th.start()
    try:
        clusters = [{"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:%d"
                                                  % ls.getsockname()[1]}],
                     "httpClient": {"handshakeTimeout": "1500ms"}}]
        gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
        t0 = time.monotonic()
        status, body = get(gw, "/dribble")
        took = time.monotonic() - t0
        assert status == 504, body
        assert took < 4, took
        assert wait_log(gw, "SSL handshaking to upstream")
    finally:
        stop.set()
        ls.close()
        th.join(5)


def test_weak_tls12_ciphers_are_refused(tmp_path, certs, gateway_factory):
    """A destination offering only CBC suites (no AEAD) over TLS 1.2: no handshake, 502, and
    the reason in the error log."""
    import ssl
    import threading
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:AES128-SHA")
    ctx.load_cert_chain(*certs["up"])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    ls.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                a, _ = ls.accept()
            except OSError:
                continue
            a.settimeout(5)
            try:
                with ctx.wrap_socket(a, server_side=True) as t:
                    t.recv(65536)
                    t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                              b"Connection: close\r\n\r\nweak")
            except OSError:
                a.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        clusters = [{"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:%d"
                                                  % ls.getsockname()[1]}],
                     "httpClient": {"caFile": certs["ca"]}}]
        gw = gateway_factory(proxy_config(tmp_path, certs, clusters))
        status, body = get(gw, "/weak")
        assert status == 502, body
        assert wait_log(gw, "alert handshake failure) while SSL handshaking to upstream"), \
            gw.error_log()[-2000:]
    finally:
        stop.set()
        th.join(5)
        ls.close()


def test_failed_handshake_fails_over(tmp_path, certs, gateway_factory, tls_upstreams,
                                     upstream_factory):
    """A failed handshake is a destination failure: the request goes to the next one."""
    good = tls_upstreams(*certs["up"])
    plain = upstream_factory()
    clusters = [{"id": "c", "loadBalancingPolicy": "RoundRobin", "destinations": [
                    {"id": "bad", "address": "https://127.0.0.1:%d" % plain.port,
                     "host": "up.example.test"},
                    {"id": "good", "address": good.url, "host": "up.example.test"}],
                 "httpClient": {"caFile": certs["ca"]},
                 "failover": {"enabled": True, "connectTimeout": "1s", "budget": "3s"}}]
    gw = gateway_factory(proxy_config(tmp_path, certs, clusters, workers=1))
    for i in range(4):
        status, body = get(gw, "/f%d" % i)
        assert status == 200, body
        assert json.loads(body)["upstream"] == good.port
    assert wait_log(gw, "while SSL handshaking to upstream")
    assert "failing over to destination good" in gw.error_log()
