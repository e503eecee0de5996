"""Client certificates (mutual TLS) on TLS servers: tls.clientAuth ("required" / "optional",
caFile, crlFile, verifyDepth), the ClientCert transform, the access log's tlsClientSubject,
HTTP/2, TLS 1.3 resumption, and the configuration checks (-t and reload).

The server certificates are test_tls's `certs` (a.example.test, signed by its CA, which curl
trusts with --cacert). The client PKI is made here with the `cryptography` package, which sets
any dates: a client CA, an unrelated CA, the clients alice (valid), mallory (signed by the
unrelated CA), old (expired) and revoked (valid, but in the client CA's CRL), and an expired
CRL. Clients are curl (--cert/--key, --local-port so that the error log's client address can be
checked) and `openssl s_client` for resumption."""
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import BINARY, REPO_ROOT, SANITIZED, example_certs, free_port
from test_config_errors import check_error
from test_tls import certs, curl, s_client, tls_config  # noqa: F401 (certs is a fixture)

# How long a brief client (or intermediate) certificate stays valid once made: the handshakes
# and resumptions before its notAfter take about 0.2 s here (6 openssl s_client runs), and
# notAfter has whole seconds (up to 1 s less); a sanitizer build is given the former 8 s.
BRIEF_S = 8 if SANITIZED else 4

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from test_tls_config import DAY, _pem_key  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs the openssl and curl CLIs")

HEADER = "X-Client-Cert"
ALICE_SUBJECT = "CN=alice,O=Example"  # RFC 2253 order: the last RDN first


# ---------------------------------------------------------------- the client PKI

def _dn(cn, org="Example"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class ClientPKI:
    """CAs, client certificates and CRLs written into a directory. Each client is a dict:
    crt, key (paths), der (the certificate's DER bytes), subject (RFC 4514/2253 string)."""

    def __init__(self, d):
        self.dir = d
        self.now = datetime.datetime.utcnow()
        self.ca_key, self.ca_cert, self.ca = self._ca("client-ca", "Example Client CA")
        self.other_key, self.other_cert, self.other_ca = self._ca("other-ca", "Unrelated CA")
        self.alice = self._leaf("alice", self.ca_key, self.ca_cert)
        self.mallory = self._leaf("mallory", self.other_key, self.other_cert)
        self.old = self._leaf("old", self.ca_key, self.ca_cert, valid_from=-30, valid_to=-1)
        self.revoked = self._leaf("revoked", self.ca_key, self.ca_cert)
        # carol: signed by an intermediate CA under the client CA; her chain file has both
        self.sub_key, self.sub_cert, self.sub_ca = self._ca(
            "sub-ca", "Example Intermediate CA", self.ca_key, self.ca_cert)
        self.carol = self._leaf("carol", self.sub_key, self.sub_cert)
        chain = self.dir / "carol-chain.crt"
        chain.write_text(open(self.carol["crt"]).read() + open(self.sub_ca).read())
        self.carol["crt"] = str(chain)
        self.crl = self._crl("client-ca.crl", [self.revoked["serial"]], -1, 30)
        self.expired_crl = self._crl("expired.crl", [self.revoked["serial"]], -30, -1)

    def _ca(self, name, cn, issuer_key=None, issuer=None):
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_key = issuer_key or key
        cert = (x509.CertificateBuilder().subject_name(_dn(cn))
                .issuer_name(issuer.subject if issuer else _dn(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - DAY).not_valid_after(self.now + 365 * DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               False)
                .sign(issuer_key, hashes.SHA256()))
        path = self.dir / (name + ".crt")
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert, str(path)

    def _leaf(self, name, ca_key, ca_cert, valid_from=-1, valid_to=30):
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder().subject_name(_dn(name)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(self.now + valid_from * DAY)
                .not_valid_after(self.now + valid_to * DAY)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), False)
                .sign(ca_key, hashes.SHA256()))
        crt, k = self.dir / (name + ".crt"), self.dir / (name + ".key")
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(_pem_key(key))
        return {"crt": str(crt), "key": str(k), "serial": serial, "name": name,
                "der": cert.public_bytes(serialization.Encoding.DER),
                "subject": cert.subject.rfc4514_string()}

    def _crl(self, name, serials, last, nxt):
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.ca_cert.subject)
             .last_update(self.now + last * DAY).next_update(self.now + nxt * DAY)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.ca_key.public_key()), False)
             .add_extension(x509.CRLNumber(1), False))
        for s in serials:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(s)
                .revocation_date(self.now - DAY).build())
        crl = b.sign(self.ca_key, hashes.SHA256())
        path = self.dir / name
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ClientPKI(tmp_path_factory.mktemp("client-pki"))


# ---------------------------------------------------------------- gateway and clients

def mtls_config(tmp_path, certs, pki, port, upstream, mode="required", header=HEADER,  # noqa: F811
                workers=1, alpn=None, **auth):
    """One TLS server ("main") whose catch-all route proxies to the echo upstream with the
    ClientCert transform; clientAuth = {mode, caFile: the client CA} + auth."""
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "c",
               "transforms": [{"ClientCert": header}]}]
    clusters = [{"id": "c", "destinations": [{"id": "d", "address": upstream.url}]}]
    client_auth = {"mode": mode, "caFile": pki.ca}
    client_auth.update(auth)
    extra = {"clientAuth": client_auth}
    if alpn is not None:
        extra["alpn"] = alpn
    return tls_config(tmp_path, certs, port, routes=routes, clusters=clusters, workers=workers,
                      **extra)


def request(port, certs, client=None, path="/echo", *extra):  # noqa: F811
    """curl over HTTP/1.1 with client's certificate (None: without one) from a known local port.
    Returns (CompletedProcess, local port)."""
    local = free_port()
    args = ["--local-port", str(local)]
    if client is not None:
        args += ["--cert", client["crt"], "--key", client["key"]]
    return curl(port, path, "a.example.test", *args, *extra, cacert=certs["ca"]), local


def echoed(p):
    """The echo upstream's document from curl's output (-D -: head, blank line, body)."""
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"200", p.stdout[:500]
    return json.loads(body)


def header_values(doc, name=HEADER):
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def b64(client):
    return base64.b64encode(client["der"]).decode()


def _raw_get(path):
    return ("GET %s HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
            % path).encode()


def _s_client_echo(out):
    """The echo document of the response in s_client's output (which goes on after it)."""
    assert "HTTP/1.1 200" in out, out[-3000:]
    body = out[out.index("HTTP/1.1 200"):]
    return json.JSONDecoder().raw_decode(body[body.index("{"):])[0]


def wait_log_line(gw, needle, timeout=5.0):
    """The first error-log line that contains needle (workers write it after the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in gw.error_log().splitlines():
            if needle in line:
                return line
        if time.monotonic() >= deadline:
            raise AssertionError("no error-log line with %r:\n%s" % (needle,
                                                                     gw.error_log()[-3000:]))
        time.sleep(0.05)


def assert_refused(gw, port, certs, client, reasons, server="main"):  # noqa: F811
    """The handshake fails (no HTTP response; curl exits 35 in the handshake, or 56/55 when
    the TLS 1.3 alert comes after its Finished, RFC 8446 4.4.2.4), and the error log has one
    `tls: handshake failed:` line with the client's address, the server id, every reason in
    reasons and, for a certificate, its subject's CN."""
    p, local = request(port, certs, client)
    assert p.returncode in (35, 55, 56), (p.returncode, p.stdout[:300], p.stderr)
    assert b"HTTP/" not in p.stdout, p.stdout[:300]
    line = wait_log_line(gw, "client: 127.0.0.1:%d" % local)
    assert "tls: handshake failed:" in line, line
    assert "server: %s" % server in line, line
    for r in reasons:
        assert r in line, (r, line)
    if client is not None:
        # the certificate's subject (its CN: "revoked" is also in "certificate revoked")
        assert re.search(r"CN\s*=\s*%s\b" % client["name"], line), line
    return line


# ---------------------------------------------------------------- required

def test_required_serves_a_verified_client_and_forwards_its_certificate(
        tmp_path, certs, pki, gateway_factory, echo_upstream):  # noqa: F811
    """mode "required": alice (signed by the client CA) is served through the proxied route,
    and the destination gets X-Client-Cert = base64(DER of alice's certificate), one line."""
    port = free_port()
    gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream))
    p, _ = request(port, certs, pki.alice)
    doc = echoed(p)
    assert header_values(doc) == [b64(pki.alice)], doc["headers"]
    assert "\n" not in b64(pki.alice)


def test_required_refuses_a_client_without_a_certificate(tmp_path, certs, pki, gateway_factory,
                                                         echo_upstream):  # noqa: F811
    """RFC 8446 4.3.2 / 4.4.2.4: the server asks for a certificate; a client that sends an empty
    Certificate is refused with an alert (certificate_required), never served."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream))
    assert_refused(gw, port, certs, None, ["no client certificate"])
    # the alert says why (RFC 8446 6.2: certificate_required, 116)
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   stdin=_raw_get("/nocert"))
    assert "alert certificate required" in out and "HTTP/1.1" not in out, out[-3000:]
    # the upstream never saw a request, and alice right after is served
    p, _ = request(port, certs, pki.alice, "/__count")
    assert json.loads(p.stdout.partition(b"\r\n\r\n")[2]) == {}, p.stdout


def test_required_refuses_unknown_ca_and_expired_certificates(tmp_path, certs, pki,
                                                              gateway_factory,
                                                              echo_upstream):  # noqa: F811
    """RFC 8446 4.4.2.4: a certificate that does not verify aborts the handshake: mallory's CA
    is not in caFile (OpenSSL: unable to get local issuer certificate), old has expired. A
    revoked certificate is accepted when no crlFile is configured (it is still valid)."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream))
    assert_refused(gw, port, certs, pki.mallory, ["unable to get local issuer certificate"])
    assert_refused(gw, port, certs, pki.old, ["certificate has expired"])
    # the alert names the reason: unknown_ca (48) for mallory
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-cert", pki.mallory["crt"], "-key", pki.mallory["key"],
                   stdin=_raw_get("/mallory"))
    assert "alert unknown ca" in out and "HTTP/1.1" not in out, out[-3000:]
    doc = echoed(request(port, certs, pki.revoked)[0])
    assert header_values(doc) == [b64(pki.revoked)]


def test_required_with_crl_refuses_a_revoked_certificate(tmp_path, certs, pki, gateway_factory,
                                                         echo_upstream):  # noqa: F811
    """With crlFile, a certificate the client CA's CRL lists is refused (certificate revoked);
    alice, not listed, is still served."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream,
                                     crlFile=pki.crl))
    assert_refused(gw, port, certs, pki.revoked, ["certificate revoked"])
    doc = echoed(request(port, certs, pki.alice)[0])
    assert header_values(doc) == [b64(pki.alice)]
    assert_refused(gw, port, certs, pki.mallory, ["unable to get local issuer certificate"])


def test_verify_depth_allows_an_intermediate_ca(tmp_path, certs, pki, gateway_factory,
                                                 echo_upstream):  # noqa: F811
    """carol's certificate is signed by an intermediate CA (sent in her chain) under the client
    CA: the default verifyDepth (2) accepts her, and the header is her leaf certificate alone;
    verifyDepth 0 (no intermediate) refuses her but still serves alice, signed by the CA."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream))
    doc = echoed(request(port, certs, pki.carol)[0])
    assert header_values(doc) == [b64(pki.carol)], doc["headers"]
    port0, d0 = free_port(), tmp_path / "depth0"  # a second gateway: its own files
    d0.mkdir()
    gw0 = gateway_factory(mtls_config(d0, certs, pki, port0, echo_upstream, verifyDepth=0))
    assert_refused(gw0, port0, certs, pki.carol, ["certificate chain too long"])
    doc = echoed(request(port0, certs, pki.alice)[0])
    assert header_values(doc) == [b64(pki.alice)]
    assert gw.alive()


# ---------------------------------------------------------------- optional

def test_optional_serves_clients_without_a_certificate(tmp_path, certs, pki, gateway_factory,
                                                       echo_upstream):  # noqa: F811
    """mode "optional": the certificate is asked for (RFC 8446 4.3.2) but a client without one
    is served, and no header reaches the destination; alice's certificate is forwarded; one
    that does not verify still fails the handshake. The header name is the transform's."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream, mode="optional",
                                     header="X-Peer-Cert"))
    doc = echoed(request(port, certs, None)[0])
    assert header_values(doc, "X-Peer-Cert") == [] and header_values(doc) == [], doc["headers"]
    out = s_client(port, "-tls1_3", "-msg", "-servername", "a.example.test", "-ign_eof",
                   stdin=_raw_get("/asked"))
    assert "CertificateRequest" in out and "HTTP/1.1 200" in out, out[-3000:]
    doc = echoed(request(port, certs, pki.alice)[0])
    assert header_values(doc, "X-Peer-Cert") == [b64(pki.alice)], doc["headers"]
    assert header_values(doc) == []
    assert_refused(gw, port, certs, pki.mallory, ["unable to get local issuer certificate"])
    assert_refused(gw, port, certs, pki.old, ["certificate has expired"])


def test_a_forged_certificate_header_is_removed(tmp_path, certs, pki, gateway_factory,
                                                echo_upstream):  # noqa: F811
    """A client cannot pose as a certificate holder: the header the transform names, sent by
    the client (any case, several times), is removed; with a certificate only the gateway's
    value arrives."""
    port = free_port()
    gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream, mode="optional"))
    forged = ["-H", "X-Client-Cert: forged", "-H", "x-client-cert: %s" % b64(pki.mallory)]
    doc = echoed(request(port, certs, None, "/echo", *forged)[0])
    assert header_values(doc) == [], doc["headers"]
    doc = echoed(request(port, certs, pki.alice, "/echo", *forged)[0])
    assert header_values(doc) == [b64(pki.alice)], doc["headers"]


# ---------------------------------------------------------------- access log, HTTP/2

def test_access_log_names_the_client_certificate_subject(tmp_path, certs, pki, gateway_factory,
                                                         echo_upstream):  # noqa: F811
    """tlsClientSubject: the verified certificate's subject, RFC 2253 (CN=alice,O=Example), on
    requests of a connection with a client certificate; absent on one without."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream, mode="optional")
    cfg["log"]["accessLogFields"] = ["time", "client", "path", "status", "tlsVersion",
                                     "tlsClientSubject"]
    gw = gateway_factory(cfg)
    echoed(request(port, certs, pki.alice, "/with")[0])
    echoed(request(port, certs, None, "/without")[0])
    lines = {l["path"]: l for l in gw.access_log(wait_for=2)}
    assert pki.alice["subject"] == ALICE_SUBJECT
    assert lines["/with"]["tlsClientSubject"] == ALICE_SUBJECT, lines
    assert "tlsClientSubject" not in lines["/without"], lines
    assert lines["/without"]["tlsVersion"] == "TLSv1.3"


def test_http2_forwards_the_client_certificate(tmp_path, certs, pki, gateway_factory,
                                               echo_upstream):  # noqa: F811
    """Over h2 (ALPN) the identity is the connection's: the stream's request carries it, and
    a forged field of that name is dropped as over HTTP/1.1."""
    port = free_port()
    gw = gateway_factory(mtls_config(tmp_path, certs, pki, port, echo_upstream,
                                     alpn=["h2", "http/1.1"]))
    p, _ = request(port, certs, pki.alice, "/h2", "--http2", "-H", "x-client-cert: forged")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/2 200"), p.stdout[:300]
    doc = json.loads(p.stdout.partition(b"\r\n\r\n")[2])
    assert header_values(doc) == [b64(pki.alice)], doc["headers"]
    assert_refused(gw, port, certs, None, ["no client certificate"])


# ---------------------------------------------------------------- resumption

def test_resumed_session_keeps_the_client_identity(tmp_path, certs, pki, gateway_factory,
                                                   echo_upstream):  # noqa: F811
    """A TLS 1.3 session resumed from a ticket (RFC 8446 2.2: the PSK stands for the original
    handshake, with no new Certificate from the client) still carries alice's certificate:
    the resumed connection forwards the same header, without the client presenting it."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    cfg["log"]["accessLogFields"] = ["time", "path", "status", "tlsResumed", "tlsClientSubject"]
    gw = gateway_factory(cfg)
    sess = tmp_path / "sess.pem"
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-cert", pki.alice["crt"], "-key", pki.alice["key"], "-sess_out", str(sess),
                   stdin=_raw_get("/full"))
    assert "New," in out and sess.exists(), out[-3000:]
    assert header_values(_s_client_echo(out)) == [b64(pki.alice)]
    # resumed, with no certificate offered: the identity comes from the session
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-sess_in", str(sess), stdin=_raw_get("/resumed"))
    assert "Reused," in out, out[-3000:]
    assert header_values(_s_client_echo(out)) == [b64(pki.alice)]
    lines = {l["path"]: l for l in gw.access_log(wait_for=2)}
    assert lines["/resumed"]["tlsResumed"] is True and lines["/full"]["tlsResumed"] is False
    assert lines["/resumed"]["tlsClientSubject"] == ALICE_SUBJECT, lines
    assert lines["/full"]["tlsClientSubject"] == ALICE_SUBJECT, lines


def test_session_of_a_server_without_client_auth_does_not_resume_with_it(
        tmp_path, certs, pki, gateway_factory, echo_upstream):  # noqa: F811
    """Two servers of one gateway with the same certificate, one without clientAuth: a ticket
    from that one must not skip the client authentication of the other (RFC 8446 4.6.1: a
    ticket only resumes in a context like the one it came from). The handshake on the mTLS
    server is a full one, which asks for and gets alice's certificate; without a certificate
    the ticket does not get a client in."""
    port, mport = free_port(), free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    mtls_tls = cfg["servers"][0]["tls"]
    cfg["servers"][0]["tls"] = {k: v for k, v in mtls_tls.items() if k != "clientAuth"}
    cfg["servers"].append({"id": "mtls", "listen": "127.0.0.1:%d" % mport, "tls": mtls_tls})
    gw = gateway_factory(cfg)
    sess = tmp_path / "plain-sess.pem"
    out = s_client(port, "-tls1_3", "-msg", "-servername", "a.example.test", "-ign_eof",
                   "-sess_out", str(sess), stdin=_raw_get("/plain"))
    assert header_values(_s_client_echo(out)) == [] and sess.exists()
    assert "CertificateRequest" not in out, out[-3000:]  # this server asks for none
    # the same ticket resumes on its own server...
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-sess_in", str(sess), stdin=_raw_get("/plain-again"))
    assert "Reused," in out, out[-3000:]
    # ...but not on the mTLS server: a full handshake, with the certificate
    out = s_client(mport, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-cert", pki.alice["crt"], "-key", pki.alice["key"],
                   "-sess_in", str(sess), stdin=_raw_get("/mtls"))
    assert "New," in out and "Reused," not in out, out[-3000:]
    assert header_values(_s_client_echo(out)) == [b64(pki.alice)]
    # and without one the ticket does not stand in for it
    out = s_client(mport, "-tls1_3", "-servername", "a.example.test", "-ign_eof",
                   "-sess_in", str(sess), stdin=_raw_get("/sneak"))
    assert "Reused," not in out and "HTTP/1.1 200" not in out, out[-3000:]
    line = wait_log_line(gw, "no client certificate")
    assert "server: mtls" in line, line


def _brief_client(tmp_path, pki, now, seconds):  # noqa: F811
    """A client certificate from pki's CA valid until now + seconds: (crt path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_dn("brief"))
            .issuer_name(pki.ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY).not_valid_after(now + datetime.timedelta(seconds=seconds))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(pki.ca_key, hashes.SHA256()))
    crt, k = tmp_path / "brief.crt", tmp_path / "brief.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(_pem_key(key))
    return crt, k


# The session kinds a client certificate's expiry must end: s_client options of each.
SESSION_KINDS = {"tls13-ticket": ["-tls1_3"], "tls12-ticket": ["-tls1_2"],
                 "tls12-session-id": ["-tls1_2", "-no_ticket"]}


def _full_handshakes(tmp_path, port, crt, k, *extra):
    """One full handshake with the client certificate per SESSION_KINDS kind, each served 200;
    returns {kind: the saved session file}."""
    sessions = {}
    for kind, opts in SESSION_KINDS.items():
        sessions[kind] = tmp_path / ("brief-%s.sess" % kind)
        out = s_client(port, *opts, "-servername", "a.example.test", "-cert", str(crt), *extra,
                       "-key", str(k), "-sess_out", str(sessions[kind]), "-ign_eof",
                       stdin=_raw_get("/before"))
        assert "HTTP/1.1 200" in out, (kind, out[-3000:])
    return sessions


def test_a_ticket_does_not_outlive_its_client_certificate(tmp_path, certs, pki,
                                                         gateway_factory,
                                                         echo_upstream):  # noqa: F811
    """A ticket stands for the verification of its full handshake (RFC 8446 2.2), which a
    certificate past its notAfter would fail (RFC 5280 6.1.3 (a)(2)): once the client's
    certificate has expired, its TLS 1.3 or TLS 1.2 ticket, or its TLS 1.2 session id in the
    server's sessionCache, gives a full handshake, which "required" refuses without a
    certificate, instead of resuming with the expired identity."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    cfg["servers"][0]["tls"]["sessionCache"] = 100
    gateway_factory(cfg)
    # made once the gateway runs: BRIEF_S are left for the two full handshakes
    now = datetime.datetime.utcnow()
    crt, k = _brief_client(tmp_path, pki, now, BRIEF_S)
    kinds = SESSION_KINDS
    sessions = _full_handshakes(tmp_path, port, crt, k)
    # each session resumes while the certificate is valid
    out = s_client(port, *kinds["tls12-session-id"], "-servername", "a.example.test",
                   "-sess_in", str(sessions["tls12-session-id"]), "-ign_eof",
                   stdin=_raw_get("/valid"))
    assert "Reused," in out and "HTTP/1.1 200" in out, out[-3000:]
    time.sleep(max(0.0, (now + datetime.timedelta(seconds=BRIEF_S + 0.5) -
                         datetime.datetime.utcnow()).total_seconds()))
    for kind, sess in sessions.items():
        out = s_client(port, *kinds[kind], "-servername", "a.example.test", "-sess_in",
                       str(sess), "-ign_eof", stdin=_raw_get("/after"))
        assert "Reused," not in out and "HTTP/1.1 200" not in out, (kind, out[-3000:])


def test_a_stateful_ticket_does_not_outlive_its_client_certificate(tmp_path, certs, pki,
                                                                  gateway_factory,
                                                                  echo_upstream):  # noqa: F811
    """With sessionTickets off and sessionCache on, a TLS 1.3 ticket is a session id in the
    server's cache (a stateful ticket), which on_ticket_decrypted never sees: the lifetime bound
    at notAfter (on_new_session) must end it, including the one a resumed handshake issues. Once
    the client's certificate has expired it gives a full handshake, as a stateless ticket does
    (RFC 8446 2.2, RFC 5280 6.1.3 (a)(2))."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    cfg["servers"][0]["tls"]["sessionCache"] = 100
    cfg["servers"][0]["tls"]["sessionTickets"] = False
    gateway_factory(cfg)
    now = datetime.datetime.utcnow()
    crt, k = _brief_client(tmp_path, pki, now, BRIEF_S)
    sess = tmp_path / "brief.sess"
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-cert", str(crt),
                   "-key", str(k), "-sess_out", str(sess), "-ign_eof", stdin=_raw_get("/before"))
    assert "HTTP/1.1 200" in out, out[-3000:]
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-sess_in", str(sess),
                   "-sess_out", str(sess), "-ign_eof", stdin=_raw_get("/valid"))
    assert "Reused," in out and "HTTP/1.1 200" in out, out[-3000:]
    time.sleep(max(0.0, (now + datetime.timedelta(seconds=BRIEF_S + 0.5) -
                         datetime.datetime.utcnow()).total_seconds()))
    out = s_client(port, "-tls1_3", "-servername", "a.example.test", "-sess_in", str(sess),
                   "-ign_eof", stdin=_raw_get("/after"))
    assert "Reused," not in out and "HTTP/1.1 200" not in out, out[-3000:]


@pytest.mark.parametrize("tickets", [True, False])
def test_a_session_does_not_outlive_its_client_intermediate(tmp_path, certs, pki,
                                                            gateway_factory,
                                                            echo_upstream, tickets):  # noqa: F811
    """RFC 5280 6.1.3 (a)(2) holds for every certificate of the path: once the intermediate CA
    that issued the client's certificate has expired, a full handshake fails, so a TLS 1.3 or
    1.2 ticket or a TLS 1.2 session id in sessionCache, also one issued by a resumed handshake
    while it was valid, must not resume either, though the client certificate itself is valid
    for a day more. With sessionTickets off, the TLS 1.3 tickets are stateful (sessionCache)."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    cfg["servers"][0]["tls"]["sessionCache"] = 100
    cfg["servers"][0]["tls"]["sessionTickets"] = tickets
    gateway_factory(cfg)
    now = datetime.datetime.utcnow()
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = (x509.CertificateBuilder().subject_name(_dn("Brief Intermediate"))
           .issuer_name(pki.ca_cert.subject).public_key(sub_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - DAY).not_valid_after(now + datetime.timedelta(seconds=BRIEF_S))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
           .sign(pki.ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_dn("brief"))
            .issuer_name(sub.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY).not_valid_after(now + DAY)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(sub_key, hashes.SHA256()))
    crt, k = tmp_path / "brief.crt", tmp_path / "brief.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "sub.crt").write_bytes(sub.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(_pem_key(key))
    kinds = SESSION_KINDS
    sessions = _full_handshakes(tmp_path, port, crt, k, "-cert_chain", str(tmp_path / "sub.crt"))
    for kind, sess in sessions.items():  # resumed while valid: the session it leaves ends too
        out = s_client(port, *kinds[kind], "-servername", "a.example.test", "-sess_in",
                       str(sess), "-sess_out", str(sess), "-ign_eof", stdin=_raw_get("/valid"))
        assert "Reused," in out and "HTTP/1.1 200" in out, (kind, out[-3000:])
    time.sleep(max(0.0, (now + datetime.timedelta(seconds=BRIEF_S + 0.5) -
                         datetime.datetime.utcnow()).total_seconds()))
    out = s_client(port, "-tls1_2", "-servername", "a.example.test", "-cert", str(crt),
                   "-cert_chain", str(tmp_path / "sub.crt"),
                   "-key", str(k), "-ign_eof", stdin=_raw_get("/full"))
    assert "HTTP/1.1 200" not in out, out[-3000:]
    resumed = {}
    for kind, sess in sessions.items():
        out = s_client(port, *kinds[kind], "-servername", "a.example.test", "-sess_in",
                       str(sess), "-ign_eof", stdin=_raw_get("/after"))
        resumed[kind] = "Reused," in out or "HTTP/1.1 200" in out
    assert not any(resumed.values()), resumed


# ---------------------------------------------------------------- configuration checks

def _check(tmp_path, cfg, name="check.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    return path, p


def _auth_cfg(tmp_path, certs, pki, **auth):  # noqa: F811
    cfg = tls_config(tmp_path, certs, free_port(), workers=1)
    a = {"mode": "required", "caFile": pki.ca}
    a.update(auth)
    cfg["servers"][0]["tls"]["clientAuth"] = {k: v for k, v in a.items() if v is not None}
    return cfg


def test_check_accepts_client_auth_with_a_relative_ca_file(tmp_path, certs, pki):  # noqa: F811
    """A valid clientAuth passes -t; relative caFile and crlFile are relative to the config
    file's directory, not the working directory."""
    d = tmp_path / "conf"
    (d / "pki").mkdir(parents=True)
    shutil.copy(pki.ca, d / "pki" / "ca.crt")
    shutil.copy(pki.crl, d / "pki" / "ca.crl")
    cfg = _auth_cfg(tmp_path, certs, pki, caFile="pki/ca.crt", crlFile="pki/ca.crl",
                    verifyDepth=3, mode="optional")
    _, p = _check(d, cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "configuration is ok" in p.stdout + p.stderr


@pytest.mark.parametrize("case", [
    ("missing-ca-file", {"caFile": "/nonexistent/client-ca.crt"}, "caFile",
     "/nonexistent/client-ca.crt"),
    ("no-ca-file", {"caFile": None}, "caFile", None),
    ("bad-mode", {"mode": "sometimes"}, "mode", None),
    ("no-mode", {"mode": None}, "mode", None),
    ("depth-too-large", {"verifyDepth": 9}, "verifyDepth", None),
    ("expired-crl", {"crlFile": "EXPIRED"}, "crlFile", "EXPIRED"),
    ("ca-file-not-pem", {"caFile": "NOTPEM"}, "caFile", "NOTPEM"),
    # a damaged second CA, a half-written second CRL (watchConfig sees files being written):
    # refused rather than loaded without what follows the first object
    ("ca-file-damaged", {"caFile": "DAMAGED"}, "caFile", "certificate 2 of the file"),
    ("crl-file-truncated", {"crlFile": "TRUNCATED"}, "crlFile", "CRL 2 of the file"),
], ids=lambda c: c[0])
def test_check_refuses_bad_client_auth(tmp_path, certs, pki, case):  # noqa: F811
    """`fastgateway -t` exits 1 naming servers[0].tls.clientAuth.KEY first (and the file)."""
    _, change, key, named = case
    change = dict(change)
    subst = {"EXPIRED": pki.expired_crl, "NOTPEM": str(tmp_path / "notpem.crt"),
             "DAMAGED": str(tmp_path / "damaged.crt"), "TRUNCATED": str(tmp_path / "half.crl")}
    (tmp_path / "notpem.crt").write_text("this is not a certificate\n")
    other = open(pki.other_ca).read()
    body = other.index("\n") + 1
    (tmp_path / "damaged.crt").write_text(open(pki.ca).read() + other[:body] + "!!!!" +
                                          other[body + 4:])
    crl = open(pki.crl).read()
    (tmp_path / "half.crl").write_text(crl + crl[:len(crl) // 2])
    for k, v in change.items():
        change[k] = subst.get(v, v)
    named = subst.get(named, named)
    path, p = _check(tmp_path, _auth_cfg(tmp_path, certs, pki, **change))
    check_error(p, path, "servers[0].tls.clientAuth." + key)
    if named:
        assert named in p.stderr, p.stderr


def test_check_warns_of_a_ca_without_a_crl(tmp_path, certs, pki):  # noqa: F811
    """With crlFile every CA of a chain needs its CRL (CRL_CHECK_ALL): a CA of caFile that no
    CRL of crlFile comes from would fail each of its clients (unable to get certificate CRL),
    so -t warns, naming it; the configuration still passes. A crlFile with the CRL of each CA
    draws no warning."""
    both = tmp_path / "both-cas.crt"
    both.write_text(open(pki.ca).read() + open(pki.other_ca).read())
    _, p = _check(tmp_path, _auth_cfg(tmp_path, certs, pki, caFile=str(both),
                                      crlFile=pki.crl))
    assert p.returncode == 0, p.stdout + p.stderr
    warned = [l for l in p.stderr.splitlines() if l.startswith("warning:")]
    assert len(warned) == 1 and "Unrelated CA" in warned[0], p.stderr
    assert "servers[0].tls.clientAuth.crlFile" in warned[0] and "no CRL" in warned[0], p.stderr
    _, p = _check(tmp_path, _auth_cfg(tmp_path, certs, pki, crlFile=pki.crl), "one.json")
    assert p.returncode == 0 and "warning:" not in p.stderr, p.stderr
    # a bundle of many such CAs: three are named, then a count
    many = tmp_path / "many-cas.crt"
    many.write_text(open(pki.ca).read() + "".join(
        open(pki._ca("extra%d" % i, "Extra CA %d" % i)[2]).read() for i in range(5)))
    _, p = _check(tmp_path, _auth_cfg(tmp_path, certs, pki, caFile=str(many),
                                      crlFile=pki.crl), "many.json")
    warned = [l for l in p.stderr.splitlines() if l.startswith("warning:")]
    assert p.returncode == 0 and len(warned) == 4, p.stderr
    assert "no CRL of 2 more CAs of caFile" in warned[3], p.stderr


def test_check_accepts_client_auth_on_a_tunnel_server(tmp_path, certs, pki):  # noqa: F811
    """An acceptTunnels server may require client certificates: agents present one with their
    tls.certificate and tls.key (tests/integration/test_tunnel.py runs it)."""
    secret = tmp_path / "office.key"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    secret.chmod(0o600)
    cfg = _auth_cfg(tmp_path, certs, pki)
    cfg["servers"][0]["acceptTunnels"] = True
    cfg["tunnels"] = {"path": "/_fg/tunnel",
                      "agents": [{"id": "office", "secretFile": str(secret)}]}
    _, p = _check(tmp_path, cfg)
    assert p.returncode == 0, p.stdout + p.stderr


def test_reload_with_a_missing_ca_file_is_refused_and_keeps_requiring(
        tmp_path, certs, pki, gateway_factory, echo_upstream):  # noqa: F811
    """A reload whose caFile cannot be read fails (naming clientAuth.caFile); the running
    generation still refuses clients without a certificate and serves alice."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream)
    gw = gateway_factory(cfg)
    gen = gw.info()["generation"]
    bad = json.loads(json.dumps(cfg))
    missing = str(tmp_path / "gone" / "ca.crt")
    bad["servers"][0]["tls"]["clientAuth"]["caFile"] = missing
    last = gw.reload(bad, expect_ok=False)
    assert "clientAuth.caFile" in (last.get("error") or ""), last
    assert missing in last["error"], last
    assert gw.info()["generation"] == gen
    assert_refused(gw, port, certs, None, ["no client certificate"])
    doc = echoed(request(port, certs, pki.alice)[0])
    assert header_values(doc) == [b64(pki.alice)]


def test_reload_applies_a_new_client_auth(tmp_path, certs, pki, gateway_factory,
                                          echo_upstream):  # noqa: F811
    """A reload from "optional" to "required" with a crlFile takes effect on new connections:
    a client without a certificate, served before, is refused after; revoked, served before,
    is refused after; alice is served by both generations."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream, mode="optional")
    gw = gateway_factory(cfg)
    echoed(request(port, certs, None)[0])
    echoed(request(port, certs, pki.revoked)[0])
    new = json.loads(json.dumps(cfg))
    new["servers"][0]["tls"]["clientAuth"].update(mode="required", crlFile=pki.crl)
    gw.reload(new)
    assert_refused(gw, port, certs, None, ["no client certificate"])
    assert_refused(gw, port, certs, pki.revoked, ["certificate revoked"])
    doc = echoed(request(port, certs, pki.alice)[0])
    assert header_values(doc) == [b64(pki.alice)]


def test_a_new_crl_revokes_on_watch_config_and_old_sessions_do_not_resume(
        tmp_path, certs, pki, gateway_factory, echo_upstream):  # noqa: F811
    """With watchConfig, writing a new CRL over crlFile reloads: a certificate it revokes is
    refused from then on, and a session alice held from before (a TLS 1.3 ticket) gives a full
    handshake instead of resuming (the session id context covers the CRL's bytes), so a
    revoked client cannot come back through a ticket."""
    port = free_port()
    crl = tmp_path / "clients.crl"
    crl.write_bytes(open(pki.crl, "rb").read())  # revokes "revoked" only
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream, crlFile=str(crl))
    cfg["watchConfig"] = True
    gw = gateway_factory(cfg)
    sess = tmp_path / "alice.sess"
    out = s_client(port, "-servername", "a.example.test", "-cert", pki.alice["crt"], "-key",
                   pki.alice["key"], "-sess_out", str(sess), "-ign_eof",
                   stdin=_raw_get("/before"))
    assert header_values(_s_client_echo(out)) == [b64(pki.alice)]
    gen = gw.info()["generation"]
    revoke_alice = pki._crl("both.crl", [pki.revoked["serial"], pki.alice["serial"]], -1, 30)
    tmp = tmp_path / "clients.crl.new"
    tmp.write_bytes(open(revoke_alice, "rb").read())
    os.rename(tmp, crl)
    deadline = time.monotonic() + 10
    while gw.info()["generation"] == gen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gw.info()["generation"] != gen, "the new CRL did not reload"
    assert_refused(gw, port, certs, pki.alice, ["certificate revoked"])
    out = s_client(port, "-servername", "a.example.test", "-sess_in", str(sess), "-ign_eof",
                   stdin=_raw_get("/after"))
    assert "Reused" not in out, out[-2000:]
    assert "HTTP/1.1 200" not in out, out[-2000:]


# ---------------------------------------------------------------- the shipped example

def test_mtls_example_checks_and_runs(tmp_path, gateway_factory, echo_upstream):
    """etc/examples/mtls.json passes -t with the files `make example-certs` makes, and, moved
    to free ports and temporary files, serves its client certificate and refuses a client
    without one."""
    certs_dir = example_certs(tmp_path)
    example = json.loads((REPO_ROOT / "etc/examples/mtls.json").read_text())
    assert example["servers"][0]["listen"] == "127.0.0.1:8445"
    assert example["servers"][0]["tls"]["clientAuth"]["mode"] == "required"
    text = json.dumps(example).replace("certs/", str(certs_dir) + "/")
    cfg = tmp_path / "mtls.json"
    cfg.write_text(text)
    p = subprocess.run([str(BINARY), "-t", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    run = json.loads(text)
    port = free_port()
    run["servers"][0]["listen"] = "127.0.0.1:%d" % port
    run["pidFile"], run["statusSocket"] = str(tmp_path / "ex.pid"), str(tmp_path / "ex.sock")
    run["log"]["accessLog"] = str(tmp_path / "ex-access.log")
    run["clusters"][0]["destinations"][0]["address"] = echo_upstream.url
    gateway_factory(run)
    base = ["curl", "-sS", "--max-time", "20", "--cacert", str(certs_dir / "ca.crt")]
    client = ["--cert", str(certs_dir / "client.crt"), "--key", str(certs_dir / "client.key")]
    url = "https://127.0.0.1:%d" % port
    p = subprocess.run(base + client + [url + "/"], capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith(b"hello"), p.stderr
    p = subprocess.run(base + client + [url + "/api/x"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    der = x509.load_pem_x509_certificate((certs_dir / "client.crt").read_bytes()).public_bytes(
        serialization.Encoding.DER)
    assert header_values(json.loads(p.stdout)) == [base64.b64encode(der).decode()]
    p = subprocess.run(base + [url + "/"], capture_output=True, timeout=30)
    assert p.returncode != 0 and not p.stdout, p.stdout


# ---------------------------------------------------------------- hostile clients

def _raw_upstream(n=1):
    """A destination that keeps the raw bytes of n requests (head, chunked body, trailers),
    one per connection, and answers each 200. Returns (url, got: a list that receives the
    bytes, thread)."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(n)

    def complete(data):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep or b"transfer-encoding: chunked" not in head.lower():
            return bool(sep)
        return (rest.startswith(b"0\r\n") or b"\r\n0\r\n" in rest) and \
            rest.endswith(b"\r\n\r\n")

    def serve():
        for _ in range(n):
            c, _ = srv.accept()
            c.settimeout(10)
            data = b""
            try:
                while not complete(data):
                    more = c.recv(65536)
                    if not more:
                        break
                    data += more
            except OSError:
                pass
            got.append(data)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            c.close()
        srv.close()

    got = []
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return "http://127.0.0.1:%d" % srv.getsockname()[1], got, t


def _tls_exchange(port, certs, client, raw):  # noqa: F811
    """Send raw over TLS (client's certificate, or None) and return the whole response."""
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if client is not None:
        ctx.load_cert_chain(client["crt"], client["key"])
    resp = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="a.example.test") as s:
            s.sendall(raw)
            while True:
                more = s.recv(65536)
                if not more:
                    break
                resp += more
    return resp


def _cert_fields(raw):
    """The values of the fields of raw (a request's bytes) named X-Client-Cert, in any case."""
    fields = [l.partition(b":") for l in raw.split(b"\r\n")]
    return [v.strip() for k, _, v in fields if k.strip().lower() == b"x-client-cert"]


def test_a_forged_certificate_trailer_is_removed(tmp_path, certs, pki,
                                                 gateway_factory):  # noqa: F811
    """The client's own field of the ClientCert name never reaches the destination, not even
    in the request's trailer section (RFC 9110 6.5: a recipient may merge trailers into the
    header section): a chunked request from alice with the trailer `X-Client-Cert: forged`
    arrives with the gateway's header only, and without the trailer."""
    url, got, t = _raw_upstream()
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, type("Up", (), {"url": url}),
                      mode="optional")
    gateway_factory(cfg)
    resp = _tls_exchange(port, certs, pki.alice,
                         b"POST /t HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\nX-Client-Cert: forged\r\n"
                         b"x-client-cert: forged2\r\n\r\n")
    t.join(10)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    assert got, "the destination saw no request"
    assert b"forged" not in got[0], got[0]
    assert _cert_fields(got[0]) == [b64(pki.alice).encode()], got[0]


def test_a_forged_certificate_header_with_underscores_is_removed(tmp_path, certs, pki,
                                                                 gateway_factory):  # noqa: F811
    """CGI, WSGI and Rack servers name a field HTTP_X_CLIENT_CERT (RFC 3875 4.1.18: upper
    case, "-" as "_"), so X_Client_Cert and X-Client_Cert reach the application as the
    certificate header: the ClientCert transform removes them too, in the header and the
    trailer section, with or without a client certificate."""
    url, got, t = _raw_upstream(2)
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, type("Up", (), {"url": url}),
                      mode="optional")
    gateway_factory(cfg)
    forged = (b"POST /u HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n"
              b"X_Client_Cert: forged1\r\nx-client_cert: forged2\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n"
              b"0\r\nX_CLIENT_CERT: forged3\r\n\r\n")
    for client in (None, pki.alice):
        resp = _tls_exchange(port, certs, client, forged)
        assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    t.join(10)
    assert len(got) == 2, got
    for raw, want in zip(got, ([], [b64(pki.alice).encode()])):
        assert b"forged" not in raw, raw
        assert _cert_fields(raw) == want, raw


# ---------------------------------------------------------------- requireClientCertificate

def test_route_requiring_a_client_certificate_on_an_optional_server(
        tmp_path, certs, pki, gateway_factory, echo_upstream):  # noqa: F811
    """One "optional" server, two routes: /admin/ has requireClientCertificate and answers 403
    to a client without a certificate (the request never reaches the destination), / serves
    it; with alice both are served, and over HTTP/2 too."""
    port = free_port()
    cfg = mtls_config(tmp_path, certs, pki, port, echo_upstream, mode="optional",
                      alpn=["h2", "http/1.1"])
    admin = dict(cfg["routes"][0], id="admin", match={"path": "/admin/{**rest}"},
                 requireClientCertificate=True)
    cfg["routes"].insert(0, admin)
    gw = gateway_factory(cfg)
    p, _ = request(port, certs, None, "/admin/x")
    head = p.stdout.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 403"), p.stdout[:300]
    assert b"client_certificate_required" in p.stdout
    echoed(request(port, certs, None, "/other")[0])
    doc = echoed(request(port, certs, pki.alice, "/admin/x")[0])
    assert doc["path"] == "/admin/x" and header_values(doc) == [b64(pki.alice)]
    p, _ = request(port, certs, None, "/admin/x", "--http2")
    assert p.stdout.startswith(b"HTTP/2 403"), p.stdout[:200]
    p, _ = request(port, certs, pki.alice, "/admin/x", "--http2")
    assert p.stdout.startswith(b"HTTP/2 200"), p.stdout[:200]
    assert gw.alive()


def test_check_refuses_a_route_requiring_certificates_where_none_are_asked(tmp_path, certs,
                                                                          pki):  # noqa: F811
    """requireClientCertificate on a route attached to a server without clientAuth (here: all
    servers, one of them plaintext) is refused at load, naming the server."""
    cfg = _auth_cfg(tmp_path, certs, pki, mode="optional")
    cfg["servers"].append({"id": "plain", "listen": "127.0.0.1:%d" % free_port()})
    cfg["routes"][0]["requireClientCertificate"] = True
    _, out = _check(tmp_path, cfg)
    assert out.returncode != 0
    assert "routes[0].requireClientCertificate" in out.stderr and '"plain"' in out.stderr, \
        out.stderr
    cfg["routes"][0]["servers"] = [cfg["servers"][0]["id"]]
    _, out = _check(tmp_path, cfg, "ok.json")
    assert out.returncode == 0, out.stderr
