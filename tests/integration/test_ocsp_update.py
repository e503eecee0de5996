"""OCSP updates (`ocspUpdate`): the master fetches each certificate's OCSP response from its
responder (RFC 6960 A.1: GET when the URL is short enough, RFC 5019 5, else POST) in a child
process, keeps it in `ocspFile`, reloads, and the
handshakes staple it. The responders are real HTTP servers: one in this process that answers
with responses made by python3-cryptography for the PKI of test_ocsp.py (and can answer revoked,
an error, garbage, another certificate's response), and `openssl ocsp -port` over an index file.
Clients: `openssl s_client -status` and `curl --cert-status`."""
import base64
import datetime
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from conftest import REPO_ROOT, example_certs, free_port, wait_until
from test_ocsp import NOW, DAY, Pki, _key_pem, _pem, check, curl_cert_status, ocsp_config, \
    status_out

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs the openssl and curl CLIs")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("ocsp-update-pki"))


def leaf_with_aia(pki, name, host, url):
    """A server certificate for host whose Authority Information Access names url as its OCSP
    responder (RFC 5280 4.2.2.1), issued by the intermediate; name.crt holds it and the
    intermediate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, host)]))
            .issuer_name(pki.int.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))]),
                critical=False)
            .sign(pki.int_key, hashes.SHA256()))
    (pki.dir / (name + ".crt")).write_bytes(_pem(cert) + _pem(pki.int))
    (pki.dir / (name + ".key")).write_bytes(_key_pem(key))
    pki.leaves[name] = cert
    return cert


class Responder:
    """An OCSP responder over HTTP: it answers each request, a POST of the DER or a GET with it
    in the path's last segment (RFC 6960 A.1), as `mode` says, and records what it was asked:
    in `asked` (content type, the serial of the request's CertID, path), in `requests` (method,
    path, the request's DER, the request's fields)."""

    def __init__(self, pki, tmp_path):
        self.pki, self.tmp, self.mode, self.asked = pki, tmp_path, "good", []
        self.requests = []
        self.this = self.next_ = None
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                responder.requests.append(("POST", self.path, body, dict(self.headers)))
                responder.answer(self, body)

            def do_GET(self):
                segment = self.path.rsplit("/", 1)[1]
                try:
                    der = base64.b64decode(urllib.parse.unquote(segment), validate=True)
                except ValueError:
                    self.send_error(400)
                    return
                responder.requests.append(("GET", self.path, der, dict(self.headers)))
                responder.answer(self, der)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/ocsp" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, h, body):
        req = ocsp.load_der_ocsp_request(body)
        self.asked.append((h.headers.get("Content-Type"), req.serial_number, h.path))
        cert = next(c for c in self.pki.leaves.values() if c.serial_number == req.serial_number)
        if self.mode == "error":
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if self.mode == "garbage":
            der = b"not an OCSP response"
        elif self.mode == "trylater":  # RFC 6960 2.3: the responder cannot answer now
            der = ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(serialization.Encoding.DER)
        else:
            status = {"revoked": ocsp.OCSPCertStatus.REVOKED,
                      "unknown": ocsp.OCSPCertStatus.UNKNOWN}.get(self.mode,
                                                                 ocsp.OCSPCertStatus.GOOD)
            other = self.mode == "other"
            for_cert = self.pki.leaves["b"] if other else cert
            path = self.tmp / "answer.der"
            kw = {}
            if self.mode == "stale":
                kw = {"this": NOW - 3 * DAY, "next_": NOW - DAY}
            else:
                if self.this is not None:
                    kw["this"] = self.this
                if self.next_ is not None:
                    kw["next_"] = self.next_
            self.pki.response(None, path, status=status, for_cert=for_cert, **kw)
            der = path.read_bytes()
        self.send(h, der)

    def send(self, h, der):
        h.send_response(200)
        h.send_header("Content-Type", "application/ocsp-response")
        h.send_header("Content-Length", str(len(der)))
        h.end_headers()
        h.wfile.write(der)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def responder(pki, tmp_path):
    r = Responder(pki, tmp_path)
    yield r
    r.close()


def update_config(tmp_path, pki, port, name, responder_url=None):
    """Server certificate `name` (default) with ocspUpdate into tmp_path/name.ocsp."""
    cfg = ocsp_config(tmp_path, pki, port)
    cfg["certificates"][0] = {"id": name, "chain": str(pki.dir / (name + ".crt")),
                              "key": str(pki.dir / (name + ".key")),
                              "ocspFile": str(tmp_path / (name + ".ocsp")), "ocspUpdate": True}
    if responder_url:
        cfg["certificates"][0]["ocspResponder"] = responder_url
    cfg["servers"][0]["tls"] = {"certificates": [name, "b"], "default": name}
    return cfg


def ocsp_status(gw):
    return gw.status("show certificates")["ocspUpdate"]


def stapled_good(port, host):
    out = status_out(port, host)
    return "Cert Status: good" in out


def test_the_master_fetches_the_response_from_the_certificates_responder(
        tmp_path, pki, responder, gateway_factory):
    """No file at start (a warning, not an error); the master asks the responder its certificate
    names (AIA) for the certificate's CertID, writes the answer, reloads, and handshakes staple
    it: curl --cert-status verifies it."""
    leaf_with_aia(pki, "aia", "aia.example.test", responder.url)
    port = free_port()
    cfg = update_config(tmp_path, pki, port, "aia")
    p = check(tmp_path, cfg)
    assert p.returncode == 0, p.stderr
    assert "no response yet: the master fetches one" in p.stderr, p.stderr
    gw = gateway_factory(cfg)
    wait_until(lambda: stapled_good(port, "aia.example.test"), 15, "a stapled response")
    assert responder.asked[0][1] == pki.leaves["aia"].serial_number, responder.asked
    assert (tmp_path / "aia.ocsp").stat().st_size > 0
    assert not (tmp_path / "aia.ocsp.ocsp-new").exists()
    p = curl_cert_status(port, pki, "aia.example.test")
    assert p.returncode == 0 and p.stdout == b"hello", p.stderr
    st = wait_until(
        lambda: (lambda s: s if s["lastResult"] == "updated" else None)(ocsp_status(gw)), 15,
        "lastResult updated")
    assert st["running"] is False and st["nextCheck"], st
    cert = gw.status("show certificates")["certificates"][0]
    assert cert["ocsp"]["stapled"] is True, cert
    assert "a new response from %s written to" % responder.url in gw.error_log()


def test_ocsp_responder_names_the_responder_of_a_certificate_without_one(
        tmp_path, pki, responder, gateway_factory):
    """A certificate without AIA: -t refuses ocspUpdate alone with what to set; with
    ocspResponder the master asks that URL."""
    port = free_port()
    cfg = update_config(tmp_path, pki, port, "a")
    p = check(tmp_path, cfg)
    assert p.returncode != 0, p.stderr
    assert "certificates[0].ocspUpdate" in p.stderr and "set \"ocspResponder\"" in p.stderr, \
        p.stderr
    cfg = update_config(tmp_path, pki, port, "a", responder.url + "?x=1")
    gateway_factory(cfg)
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "a stapled response")
    # a path segment cannot follow the query: the request goes by POST
    assert responder.asked[0][:3:2] == ("application/ocsp-request", "/ocsp?x=1"), responder.asked
    assert responder.requests[0][0] == "POST", responder.requests[0][:2]


def expected_cert_id(pki, name):
    """The CertID of certificate `name` issued by the intermediate, hashed with SHA-1 (RFC 5019
    2.1.1), as python3-cryptography builds it."""
    req = (ocsp.OCSPRequestBuilder()
           .add_certificate(pki.leaves[name], pki.int, hashes.SHA1()).build())
    return (req.serial_number, req.issuer_name_hash, req.issuer_key_hash,
            req.hash_algorithm.name)


def cert_id(der):
    req = ocsp.load_der_ocsp_request(der)
    return (req.serial_number, req.issuer_name_hash, req.issuer_key_hash,
            req.hash_algorithm.name)


@pytest.mark.parametrize("slash", [False, True], ids=["url", "url-with-slash"])
def test_a_short_request_goes_by_get(tmp_path, pki, responder, gateway_factory, slash):
    """RFC 5019 5: a request whose URL is at most 255 bytes goes by GET, as RFC 6960 A.1
    writes it: {url}/{url-encoding of the base64 of the DER}, one segment after the
    responder's path (no double slash when the URL ends with one), without a body or its
    fields; the request it carries is the certificate's CertID."""
    leaf_with_aia(pki, "get", "get.example.test", responder.url + ("/" if slash else ""))
    port = free_port()
    gateway_factory(update_config(tmp_path, pki, port, "get"))
    wait_until(lambda: stapled_good(port, "get.example.test"), 15, "a stapled response")
    method, path, der, fields = responder.requests[0]
    assert method == "GET", responder.requests[0][:2]
    b64 = base64.b64encode(der).decode()
    assert path == "/ocsp/" + urllib.parse.quote(b64, safe=""), path
    assert "//" not in path and "+" not in path and "=" not in path.rsplit("/", 1)[1]
    assert len("http://127.0.0.1:%d" % responder.port + path) <= 255
    assert cert_id(der) == expected_cert_id(pki, "get")
    assert "Content-Length" not in fields and "Content-Type" not in fields, fields
    assert fields.get("Accept") == "application/ocsp-response", fields


def test_a_request_whose_url_is_too_long_goes_by_post(tmp_path, pki, responder,
                                                        gateway_factory):
    """A responder URL that leaves no room for the request within 255 bytes: RFC 5019 5 has
    the request go by POST, to the URL as it is."""
    long_path = "/" + "p" * 200
    url = "http://127.0.0.1:%d%s" % (responder.port, long_path)
    port = free_port()
    gateway_factory(update_config(tmp_path, pki, port, "a", url))
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "a stapled response")
    method, path, der, fields = responder.requests[0]
    assert (method, path) == ("POST", long_path)
    assert fields.get("Content-Type") == "application/ocsp-request", fields
    assert cert_id(der) == expected_cert_id(pki, "a")


@pytest.mark.parametrize("mode,logged", [
    ("error", "answered 500"),
    ("garbage", "not a DER OCSP response"),
    ("trylater", "the response status is trylater, not successful"),
    ("other", "does not cover this certificate"),
    ("stale", "the response is out of date"),
])
def test_a_bad_answer_keeps_the_response_being_stapled(tmp_path, pki, responder, gateway_factory,
                                                       mode, logged):
    """An answer that cannot be kept (an HTTP error, garbage, another certificate's response, an
    out-of-date one) leaves the file as it was: the staple goes on, the error log says why, and
    show certificates reports the run as failed."""
    port = free_port()
    gw = gateway_factory(update_config(tmp_path, pki, port, "a", responder.url))
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "the first response")
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "updated", 15, "the first run's end")
    before = (tmp_path / "a.ocsp").read_bytes()
    responder.mode = mode
    assert gw.status("ocsp update") == {"result": "started"}
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "failed", 15, "a failed run")
    assert (tmp_path / "a.ocsp").read_bytes() == before
    assert logged in gw.error_log(), gw.error_log()[-2000:]
    assert stapled_good(port, "a.example.test")


def test_a_revoked_answer_removes_the_staple(tmp_path, pki, responder, gateway_factory):
    """The responder says revoked: the good response would lie, so the file goes and nothing is
    stapled after the reload; the error log says revoked, with the reason."""
    port = free_port()
    gw = gateway_factory(update_config(tmp_path, pki, port, "a", responder.url))
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "the first response")
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "updated", 15, "the first run's end")
    responder.mode = "revoked"
    assert gw.status("ocsp update")["result"] == "started"
    wait_until(lambda: "OCSP response: no response sent" in status_out(port, "a.example.test"),
               timeout=15, what="no staple")
    assert not (tmp_path / "a.ocsp").exists()
    log = gw.error_log()
    assert "the certificate's status is revoked" in log and "keyCompromise" in log, log[-2000:]
    assert "removed the response file, nothing is stapled" in log


def test_only_a_due_response_is_fetched(tmp_path, pki, responder, gateway_factory):
    """At start the master asks only for a response that is due: none for a fresh one (an hour
    into a day's validity), one for a response past half of its validity (CA/B Baseline
    Requirements 4.9.10: the CA has the next one by then) when the responder was not asked in
    the last hour."""
    port = free_port()
    cfg = update_config(tmp_path, pki, port, "a", responder.url)
    pki.response("a", tmp_path / "a.ocsp", this=NOW - datetime.timedelta(hours=1))
    gw = gateway_factory(cfg)
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "unchanged", 15, "a run with nothing due")
    assert responder.asked == []
    gw.stop()
    # past half of its validity, but the responder was asked for it (the file's time) 10 minutes
    # ago: not yet; two hours ago: due
    pki.response("a", tmp_path / "a.ocsp", this=NOW - datetime.timedelta(hours=20),
                 next_=NOW + datetime.timedelta(hours=4))
    ten_minutes_ago = time.time() - 600
    os.utime(tmp_path / "a.ocsp", (ten_minutes_ago, ten_minutes_ago))
    gw = gateway_factory(cfg)
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "unchanged", 15, "a run with nothing due")
    assert responder.asked == []
    gw.stop()
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / "a.ocsp", (two_hours_ago, two_hours_ago))
    gw = gateway_factory(cfg)
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "updated", 15, "an update")
    assert len(responder.asked) == 1, responder.asked
    assert "half of the response's validity has passed" in gw.error_log()


def test_an_answer_no_newer_than_the_file_is_not_written(tmp_path, pki, responder,
                                                        gateway_factory):
    """A responder that serves the same precomputed response (or replays an older one): the
    fetch neither writes the file nor asks for a reload; the file's time records the question,
    so that the responder is not asked again within the hour."""
    port = free_port()
    gw = gateway_factory(update_config(tmp_path, pki, port, "a", responder.url))
    wait_until(lambda: ocsp_status(gw)["lastResult"] == "updated", 15, "the first response")
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "its reload")
    fixed = (tmp_path / "a.ocsp").read_bytes()
    generation = gw.info()["generation"]
    for answer in ("same", "older"):
        if answer == "same":
            responder.answer = lambda h, body: (responder.asked.append(("same", None, h.path)),
                                                responder.send(h, fixed))
        else:
            responder.this = NOW - datetime.timedelta(hours=3)
            del responder.answer  # the class's: a response signed now, with that thisUpdate
        old = time.time() - 7200
        os.utime(tmp_path / "a.ocsp", (old, old))
        asked = len(responder.asked)
        assert gw.status("ocsp update")["result"] == "started"
        wait_until(lambda: len(responder.asked) == asked + 1 and not ocsp_status(gw)["running"],
                   timeout=15, what="a run")
        assert ocsp_status(gw)["lastResult"] == "unchanged"
        assert (tmp_path / "a.ocsp").read_bytes() == fixed
        assert (tmp_path / "a.ocsp").stat().st_mtime > time.time() - 60
    assert "nothing newer than the response kept" in gw.error_log()
    assert gw.info()["generation"] == generation


def test_an_answer_already_half_way_is_fetched_once(tmp_path, pki, responder, gateway_factory):
    """A responder whose newest response is already past half of its validity: it is kept and
    stapled, and the run after that reload does not ask again (the responder was just asked):
    one question, one reload, not one a second."""
    port = free_port()
    responder.this = NOW - datetime.timedelta(hours=30)
    responder.next_ = NOW + datetime.timedelta(hours=24)
    gw = gateway_factory(update_config(tmp_path, pki, port, "a", responder.url))
    wait_until(lambda: stapled_good(port, "a.example.test"), 15, "the response")
    time.sleep(3)  # the run after the reload (1 s) and then some
    assert len(responder.asked) == 1, responder.asked
    assert gw.info()["generation"] == 2


def test_a_run_cut_short_still_reloads_what_it_wrote(tmp_path, pki, responder, gateway_factory):
    """The run's time limit (an alarm) ends it while a second responder stalls: the response it
    wrote for the first certificate is still reloaded and stapled."""
    from conftest import Blackhole
    hole = Blackhole()
    try:
        port = free_port()
        cfg = update_config(tmp_path, pki, port, "a", responder.url)
        cfg["certificates"][1].update({"ocspFile": str(tmp_path / "b.ocsp"), "ocspUpdate": True,
                                       "ocspResponder": "http://127.0.0.1:%d/" % hole.port})
        gw = gateway_factory(cfg)
        line = wait_until(lambda: re.search(r"\] (\d+) \(ocsp\): .*a new response", gw.error_log()),
                          timeout=15, what="the first certificate's response")
        os.kill(int(line.group(1)), signal.SIGALRM)
        wait_until(lambda: stapled_good(port, "a.example.test"), 15, "its reload")
        assert ocsp_status(gw)["lastResult"] == "failed"
    finally:
        hole.close()


def _serve_raw(handler):
    """A one-connection-at-a-time TCP server: handler(conn, request body) answers."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head)  # none: a GET
            n = int(m.group(1)) if m else 0
            while len(body) < n:
                body += c.recv(65536)
            try:
                handler(c, body)
            except OSError:
                pass
            c.close()
    threading.Thread(target=loop, daemon=True).start()
    return ls, stop


@pytest.mark.parametrize("kind", ["keep-open", "trickle"])
def test_the_exchange_ends_by_content_length_and_has_a_deadline(tmp_path, pki, responder,
                                                                gateway_factory, monkeypatch,
                                                                kind):
    """A responder that answers in full but keeps the connection open: the answer is complete by
    its Content-Length (RFC 9112 6.3) and kept at once. One that sends its answer a byte at a
    time: the whole exchange has a limit (2 s in the test build), not each read."""
    from conftest import TEST_BINARY
    monkeypatch.setenv("FG_TEST_OCSP_TIMEOUT", "2")
    der = {}

    def answer(c, body):
        if "der" not in der:
            path = tmp_path / "raw.der"
            pki.response("a", path)
            der["der"] = path.read_bytes()
        msg = (b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
               b"Content-Length: %d\r\n\r\n" % len(der["der"])) + der["der"]
        if kind == "keep-open":
            c.sendall(msg)
            time.sleep(10)
        else:
            for i in range(len(msg)):
                c.sendall(msg[i:i + 1])
                time.sleep(0.5)
    ls, stop = _serve_raw(answer)
    try:
        port = free_port()
        cfg = update_config(tmp_path, pki, port, "a",
                            "http://127.0.0.1:%d/" % ls.getsockname()[1])
        t0 = time.monotonic()
        gw = gateway_factory(cfg, binary=TEST_BINARY)
        if kind == "keep-open":
            wait_until(lambda: stapled_good(port, "a.example.test"), 8, "the staple")
            assert time.monotonic() - t0 < 8
        else:
            wait_until(lambda: ocsp_status(gw)["lastResult"] == "failed", timeout=8,
                       what="a failed run")
            assert "receive: timed out" in gw.error_log(), gw.error_log()[-1000:]
            assert time.monotonic() - t0 < 8
    finally:
        stop.set()
        ls.close()


def test_openssl_ocsp_as_the_responder(tmp_path, pki, gateway_factory):
    """`openssl ocsp -port`, a CA's responder over an index file, answers the master's request:
    the response is kept and stapled; after the index marks the certificate revoked, `ocsp
    update` removes it."""
    rport = free_port()
    leaf_with_aia(pki, "idx", "idx.example.test", "http://127.0.0.1:%d" % rport)
    cert = pki.leaves["idx"]
    index = tmp_path / "index.txt"

    def write_index(flag, revoked=""):
        index.write_text("%s\t%s\t%s\t%X\tunknown\t/CN=idx.example.test\n" % (
            flag, cert.not_valid_after.strftime("%y%m%d%H%M%SZ"), revoked,
            cert.serial_number))
    write_index("V")
    (tmp_path / "int.crt").write_bytes(_pem(pki.int))
    (tmp_path / "int.key").write_bytes(_key_pem(pki.int_key))

    def start_responder():
        p = subprocess.Popen(
            ["openssl", "ocsp", "-index", str(index), "-port", str(rport), "-rsigner",
             str(tmp_path / "int.crt"), "-rkey", str(tmp_path / "int.key"), "-CA",
             str(tmp_path / "int.crt"), "-ndays", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # it serves one connection at a time, and one that closes unused stalls it: no probe,
        # its own word that it listens
        for line in p.stderr:
            if "waiting for OCSP client connections" in line:
                break
        return p
    resp = start_responder()
    try:
        port = free_port()
        gw = gateway_factory(update_config(tmp_path, pki, port, "idx"))
        wait_until(lambda: stapled_good(port, "idx.example.test"), 15, "a stapled response")
        resp.kill()
        resp.wait()
        write_index("R", datetime.datetime.now(datetime.timezone.utc).strftime("%y%m%d%H%M%SZ"))
        resp = start_responder()
        assert gw.status("ocsp update")["result"] == "started"
        wait_until(
            lambda: "OCSP response: no response sent" in status_out(port, "idx.example.test"), 15,
            "no staple")
        assert "the certificate's status is revoked" in gw.error_log()
    finally:
        resp.kill()
        resp.wait()


@pytest.mark.parametrize("change,message", [
    ({"ocspFile": None}, "certificates[0].ocspUpdate: needs \"ocspFile\""),
    ({"ocspUpdate": False}, "certificates[0].ocspResponder: is used only with"),
    ({"ocspResponder": "ftp://127.0.0.1/"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http:///x"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://a b/"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://127.0.0.1:70000/"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://[::1/"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://h/x#frag"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://h\u00e9/"}, "not an http:// or https:// URL"),
    ({"ocspResponder": "http://h/" + "x" * 1100}, "not an http:// or https:// URL"),
])
def test_ocsp_update_settings_are_checked(tmp_path, pki, change, message):
    cfg = update_config(tmp_path, pki, free_port(), "a", "http://127.0.0.1:9/")
    for k, v in change.items():
        if v is None:
            del cfg["certificates"][0][k]
        else:
            cfg["certificates"][0][k] = v
    p = check(tmp_path, cfg)
    assert p.returncode != 0 and message in p.stderr, p.stderr


@pytest.mark.parametrize("which", ["own chain", "own key", "other's file"])
def test_the_file_the_master_writes_is_its_own(tmp_path, pki, which):
    """The ocspFile of an ocspUpdate certificate is written by the master: it may be neither the
    certificate's chain or key nor a file of another certificate."""
    cfg = update_config(tmp_path, pki, free_port(), "a", "http://127.0.0.1:9/")
    c = cfg["certificates"][0]
    c["ocspFile"] = {"own chain": c["chain"], "own key": c["key"],
                     "other's file": cfg["certificates"][1]["chain"]}[which]
    p = check(tmp_path, cfg)
    assert p.returncode != 0 and "certificates[0].ocspFile" in p.stderr, p.stderr
    assert ("own chain or key" if which != "other's file" else "also a file of certificates[1]") \
        in p.stderr, p.stderr


def test_ocsp_update_follows_an_acme_certificate(tmp_path, pki):
    """An ACME certificate changes with each renewal: a fixed ocspFile is refused, ocspUpdate
    (which fetches a response for each) is taken, and the placeholder served before issuance
    needs no responder."""
    cfg = update_config(tmp_path, pki, free_port(), "a", None)
    cfg["certificates"][0].update({"acme": True, "names": ["a.example.test"],
                                   "chain": str(tmp_path / "acme.crt"),
                                   "key": str(tmp_path / "acme.key")})
    cfg["acme"] = {"directory": "https://127.0.0.1:1/dir", "stateDir": str(tmp_path / "acme")}
    p = check(tmp_path, cfg)
    assert p.returncode == 0, p.stderr
    cfg["certificates"][0]["ocspUpdate"] = False
    p = check(tmp_path, cfg)
    assert p.returncode != 0 and "\"ocspUpdate\": true fetches one for each" in p.stderr, p.stderr


def test_ocsp_update_without_the_setting_is_an_error(tmp_path, pki, gateway_factory):
    port = free_port()
    gw = gateway_factory(ocsp_config(tmp_path, pki, port))
    r = gw.status("ocsp update")
    assert r["result"] == "failed" and "ocspUpdate" in r["error"], r
    assert gw.status("show certificates")["ocspUpdate"] is None


def test_the_example_fetches_from_openssl_ocsp(tmp_path, gateway_factory):
    """etc/examples/ocsp-update.json with the files `make example-certs` makes and the responder
    its documentation starts (openssl ocsp over the example CA's index): the response is fetched
    and stapled."""
    certs_dir = example_certs(tmp_path)
    rport = free_port()
    example = json.loads((REPO_ROOT / "etc/examples/ocsp-update.json").read_text()
                         .replace("certs/", str(certs_dir) + "/")
                         .replace("/tmp/fastgateway-example.ocsp", str(tmp_path / "ex.ocsp"))
                         .replace("127.0.0.1:8889", "127.0.0.1:%d" % rport))
    port = free_port()
    example["servers"][0]["listen"] = "127.0.0.1:%d" % port
    example["pidFile"] = str(tmp_path / "fg.pid")
    example["statusSocket"] = str(tmp_path / "status.sock")
    example["log"]["errorLog"] = str(tmp_path / "error.log")
    resp = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(certs_dir / "ocsp-index.txt"), "-port", str(rport),
         "-rsigner", str(certs_dir / "ca.crt"), "-rkey", str(certs_dir / "ca.key"), "-CA",
         str(certs_dir / "ca.crt"), "-ndays", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in resp.stderr:
            if "waiting for OCSP client connections" in line:
                break
        gateway_factory(example)
        wait_until(lambda: "Cert Status: good" in status_out(
            port, "localhost", "-CAfile", str(certs_dir / "ca.crt")), 15, "a stapled response")
    finally:
        resp.kill()
        resp.wait()
