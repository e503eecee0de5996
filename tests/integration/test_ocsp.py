"""OCSP stapling (RFC 6066 8, RFC 8446 4.4.2.1, RFC 6960): a certificate's `ocspFile`, a DER
OCSP response made here with python3-cryptography's OCSPResponseBuilder for a PKI made at test
time (a CA, an intermediate that issues the server certificates, a delegated OCSP responder).
Driven with `openssl s_client -status` (which prints the stapled response) and `curl
--cert-status` (which verifies it), against the real binary. Covers TLS 1.2 and 1.3, a
certificate without a response beside one with, every reason a response is refused at load
(`-t`), an out-of-date response (loaded with a warning, not stapled), a response expiring while
served, the response replaced on reload, and `show certificates`."""
import datetime
import json
import shutil
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import BINARY, REPO_ROOT, base_config, example_certs, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs the openssl and curl CLIs")

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, sans=None, eku=None):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """Root CA -> intermediate -> server certificates; the intermediate also delegates OCSP
    signing to a responder certificate."""

    def __init__(self, d):
        self.dir = d
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert("Test Root", self.root_key, "Test Root", self.root_key, ca=True)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.int = _cert("Test Intermediate", self.int_key, "Test Root", self.root_key, ca=True)
        self.resp_key = ec.generate_private_key(ec.SECP256R1())
        self.responder = _cert("Test OCSP Responder", self.resp_key, "Test Intermediate",
                               self.int_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
        (d / "root.crt").write_bytes(_pem(self.root))
        self.leaves = {}
        for name, host in (("a", "a.example.test"), ("b", "b.example.test")):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(host, key, "Test Intermediate", self.int_key, sans=[host])
            (d / (name + ".crt")).write_bytes(_pem(cert) + _pem(self.int))
            (d / (name + ".leaf.crt")).write_bytes(_pem(cert))
            (d / (name + ".key")).write_bytes(_key_pem(key))
            self.leaves[name] = cert

    def response(self, name, path, status=ocsp.OCSPCertStatus.GOOD, this=None, next_=None,
                 signer="intermediate", for_cert=None, algorithm=None):
        """Writes a DER OCSP response for leaf `name` (or for_cert) to path."""
        cert = for_cert or self.leaves[name]
        this = this or NOW - datetime.timedelta(hours=1)
        next_ = next_ if next_ is not None else NOW + DAY
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=self.int, algorithm=algorithm or hashes.SHA1(), cert_status=status,
            this_update=this, next_update=next_,
            revocation_time=NOW - DAY if status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=(x509.ReasonFlags.key_compromise
                               if status == ocsp.OCSPCertStatus.REVOKED else None))
        if signer == "intermediate":
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, self.int)
            resp = b.sign(self.int_key, hashes.SHA256())
        elif signer == "responder":
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder)
            b = b.certificates([self.responder])
            resp = b.sign(self.resp_key, hashes.SHA256())
        else:  # a look-alike of the intermediate, with a key nobody certified
            key = ec.generate_private_key(ec.SECP256R1())
            fake = _cert("Test Intermediate", key, "Test Intermediate", key, ca=True)
            b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, fake).certificates([fake])
            resp = b.sign(key, hashes.SHA256())
        path.write_bytes(resp.public_bytes(serialization.Encoding.DER))
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("ocsp-pki"))


def ocsp_config(tmp_path, pki, port, ocsp_a=None, ocsp_b=None):
    cfg = base_config(tmp_path, port, workers=1)
    cfg["certificates"] = [
        {"id": "a", "chain": str(pki.dir / "a.crt"), "key": str(pki.dir / "a.key")},
        {"id": "b", "chain": str(pki.dir / "b.crt"), "key": str(pki.dir / "b.key")}]
    if ocsp_a:
        cfg["certificates"][0]["ocspFile"] = ocsp_a
    if ocsp_b:
        cfg["certificates"][1]["ocspFile"] = ocsp_b
    cfg["servers"][0]["tls"] = {"certificates": ["a", "b"], "default": "a"}
    return cfg


def status_out(port, host, *extra):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername",
                        host, "-status", *extra], input=b"", capture_output=True, timeout=30)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def curl_cert_status(port, pki, host="a.example.test"):
    return subprocess.run(
        ["curl", "-sS", "--cert-status", "--max-time", "20", "--cacert",
         str(pki.dir / "root.crt"), "--resolve", "%s:%d:127.0.0.1" % (host, port),
         "https://%s:%d/" % (host, port)], capture_output=True, timeout=60)


def check(tmp_path, cfg):
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("signer", ["intermediate", "responder"])
def test_the_response_is_stapled_for_clients_that_ask(tmp_path, pki, gateway_factory, version,
                                                      signer):
    """RFC 6066 8 (TLS 1.2 CertificateStatus) and RFC 8446 4.4.2.1 (TLS 1.3, in the certificate's
    entry): a client sending status_request gets the response, whether the issuer signed it or a
    responder it delegated to (RFC 6960 4.2.2.2); curl --cert-status verifies it."""
    port = free_port()
    gateway_factory(ocsp_config(tmp_path, pki, port,
                                pki.response("a", tmp_path / "a.ocsp", signer=signer)))
    out = status_out(port, "a.example.test", version)
    assert "OCSP Response Status: successful" in out, out[-3000:]
    assert "Cert Status: good" in out, out[-3000:]
    p = curl_cert_status(port, pki)
    assert p.returncode == 0 and p.stdout == b"hello", p.stderr


def test_a_certificate_without_a_response_staples_nothing(tmp_path, pki, gateway_factory):
    """b has no ocspFile: its handshakes answer status_request with nothing (RFC 6066 8 lets the
    server ignore it), and curl --cert-status refuses, while a's are stapled."""
    port = free_port()
    gateway_factory(ocsp_config(tmp_path, pki, port, pki.response("a", tmp_path / "a.ocsp")))
    out = status_out(port, "b.example.test")
    assert "OCSP response: no response sent" in out, out[-3000:]
    assert "CN = b.example.test" in out or "CN=b.example.test" in out, out[-3000:]
    assert curl_cert_status(port, pki, "b.example.test").returncode != 0
    assert "Cert Status: good" in status_out(port, "a.example.test")


def _der(tag, content):
    n = len(content)
    size = bytes([n]) if n < 128 else (
        bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + size + content


def _der_items(b):
    """[(tag, content, whole encoding)] of the DER elements in b, one level."""
    out, i = [], 0
    while i < len(b):
        n, j = b[i + 1], i + 2
        if n & 0x80:
            n, j = int.from_bytes(b[j:j + (n & 0x7F)], "big"), j + (n & 0x7F)
        out.append((b[i], b[j:j + n], b[i:j + n]))
        i = j + n
    return out


def _two_statuses(pki, path, first, second):
    """One response from the intermediate with two SingleResponses for leaf a (first's status,
    then second's): cryptography builds one only, so the two are spliced together and the
    tbsResponseData signed again."""
    def parts(status):
        der = open(pki.response("a", path, status=status), "rb").read()
        top = _der_items(_der_items(der)[0][1])                   # responseStatus, [0]
        rbytes = _der_items(_der_items(top[1][1])[0][1])           # responseType, response
        basic = _der_items(_der_items(rbytes[1][1])[0][1])         # tbs, sigAlg, sig, [0] certs
        return top, rbytes, basic, _der_items(basic[0][1])
    top, rbytes, basic, tbs = parts(first)
    other = [t for t in parts(second)[3] if t[0] == 0x30][0]
    new_tbs = _der(0x30, b"".join(
        _der(0x30, t[1] + other[1]) if t[0] == 0x30 else t[2] for t in tbs))
    sig = pki.int_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    new_basic = _der(0x30, new_tbs + basic[1][2] + _der(0x03, b"\0" + sig) +
                     b"".join(t[2] for t in basic[3:]))
    resp = _der(0x30, top[0][2] + _der(0xA0, _der(0x30, rbytes[0][2] + _der(0x04, new_basic))))
    path.write_bytes(resp)
    return str(path)


def _bad(pki, tmp_path, kind):
    path = tmp_path / ("bad-%s.ocsp" % kind)
    if kind == "other-certificate":
        return pki.response("b", path), "does not cover this certificate"
    if kind == "revoked":
        return (pki.response("a", path, status=ocsp.OCSPCertStatus.REVOKED),
                "status is revoked since")
    if kind == "unknown":
        return pki.response("a", path, status=ocsp.OCSPCertStatus.UNKNOWN), "status is unknown"
    if kind == "good-then-revoked":  # RFC 6960 4.2.1: a client may read every SingleResponse
        return (_two_statuses(pki, path, ocsp.OCSPCertStatus.GOOD,
                              ocsp.OCSPCertStatus.REVOKED), "status is revoked since")
    if kind == "sha256-certid":  # clients ask and match with SHA-1 (RFC 5019 2.1.1)
        return (pki.response("a", path, algorithm=hashes.SHA256()),
                "whose CertID is not hashed with SHA-1")
    if kind == "forged-signature":
        return pki.response("a", path, signer="stranger"), "signature does not verify"
    if kind == "not-der":
        path.write_text("-----BEGIN OCSP RESPONSE-----\nnope\n")
        return str(path), "not a DER OCSP response"
    if kind == "unsuccessful":
        resp = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        path.write_bytes(resp.public_bytes(serialization.Encoding.DER))
        return str(path), "status is trylater, not successful"
    if kind == "empty":
        path.write_bytes(b"")
        return str(path), "not a DER OCSP response"
    if kind == "too-large":
        path.write_bytes(b"\x30" * 70000)
        return str(path), "larger than 65536 bytes"
    if kind == "missing":
        return str(tmp_path / "absent.ocsp"), "cannot read"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["other-certificate", "revoked", "unknown", "good-then-revoked",
                                  "sha256-certid", "forged-signature", "not-der",
                                  "unsuccessful", "empty", "too-large", "missing"])
def test_a_response_that_does_not_fit_is_refused_with_its_reason(tmp_path, pki, kind):
    """-t refuses, naming the key, the file and why."""
    path, why = _bad(pki, tmp_path, kind)
    p = check(tmp_path, ocsp_config(tmp_path, pki, free_port(), path))
    assert p.returncode != 0, p.stderr
    assert "certificates[0].ocspFile: %s:" % path in p.stderr, p.stderr
    assert why in p.stderr, p.stderr


def test_a_chain_without_the_issuer_is_refused(tmp_path, pki):
    """The response is checked against the certificate's issuer, which must follow the
    certificate in the chain file."""
    cfg = ocsp_config(tmp_path, pki, free_port(), pki.response("a", tmp_path / "a.ocsp"))
    cfg["certificates"][0]["chain"] = str(pki.dir / "a.leaf.crt")
    p = check(tmp_path, cfg)
    assert p.returncode != 0 and "holds no issuer of the certificate" in p.stderr, p.stderr


def test_ocsp_file_and_acme_are_refused_together(tmp_path, pki):
    cfg = ocsp_config(tmp_path, pki, free_port(), pki.response("a", tmp_path / "a.ocsp"))
    cfg["certificates"][0].update({"acme": True, "names": ["a.example.test"]})
    cfg["acme"] = {"directory": "https://127.0.0.1:1/dir", "stateDir": str(tmp_path / "acme")}
    p = check(tmp_path, cfg)
    assert p.returncode != 0 and "certificates[0].ocspFile" in p.stderr, p.stderr
    assert "changes with each renewal" in p.stderr, p.stderr


def test_an_out_of_date_response_loads_with_a_warning_and_is_not_stapled(tmp_path, pki,
                                                                         gateway_factory):
    """A response past its nextUpdate (an updater late for once) does not stop the load: -t warns,
    the server runs, and nothing is stapled (a stale response fails the client's check, RFC 6960
    4.2.2.1). show certificates says so."""
    path = pki.response("a", tmp_path / "a.ocsp", this=NOW - 3 * DAY, next_=NOW - DAY)
    port = free_port()
    cfg = ocsp_config(tmp_path, pki, port, path)
    p = check(tmp_path, cfg)
    assert p.returncode == 0, p.stderr
    assert "certificates[0].ocspFile: %s: the response is out of date" % path in p.stderr, p.stderr
    gw = gateway_factory(cfg)
    assert "OCSP response: no response sent" in status_out(port, "a.example.test")
    certs = {c["id"]: c for c in gw.status("show certificates")["certificates"]}
    assert certs["a"]["ocsp"]["stapled"] is False and certs["a"]["ocsp"]["file"] == path
    assert "ocsp" not in certs["b"]


def test_a_response_just_past_its_next_update_warns_as_it_is_not_stapled(tmp_path, pki):
    """Within the 5 minutes of clock-skew leeway after nextUpdate the handshake staples nothing
    (a client would refuse it, RFC 6960 4.2.2.1): -t must say so, not load it silently."""
    path = pki.response("a", tmp_path / "a.ocsp", this=NOW - DAY,
                        next_=datetime.datetime.now(datetime.timezone.utc) -
                        datetime.timedelta(seconds=120))
    p = check(tmp_path, ocsp_config(tmp_path, pki, free_port(), path))
    assert p.returncode == 0, p.stderr
    assert "certificates[0].ocspFile: %s: the response is out of date" % path in p.stderr, p.stderr


def test_the_staple_stops_at_its_next_update(tmp_path, pki, gateway_factory):
    """Stapled while valid; from its nextUpdate on, no longer sent."""
    port = free_port()
    next_update = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)
    gw = gateway_factory(ocsp_config(tmp_path, pki, port, pki.response(
        "a", tmp_path / "a.ocsp", next_=next_update)))
    assert "Cert Status: good" in status_out(port, "a.example.test")
    a = gw.status("show certificates")["certificates"][0]
    assert a["ocsp"]["stapled"] is True
    assert a["ocsp"]["nextUpdate"] == next_update.strftime("%Y-%m-%dT%H:%M:%SZ"), a
    time.sleep(max(0.0, (next_update - datetime.datetime.now(datetime.timezone.utc))
                   .total_seconds() + 1.2))
    assert "OCSP response: no response sent" in status_out(port, "a.example.test")
    assert gw.status("show certificates")["certificates"][0]["ocsp"]["stapled"] is False


@pytest.mark.parametrize("window", ["next-update-at-the-epoch", "next-update-before-this-update"])
def test_a_response_whose_next_update_is_not_after_its_this_update_is_never_stapled(
        tmp_path, pki, gateway_factory, window):
    """A nextUpdate is a time like any other, even 1970-01-01T00:00:00Z (it must not read as
    "none given", which would staple the response forever), and one before thisUpdate gives the
    response no validity at all (RFC 6960 4.2.2.1; OpenSSL's OCSP_check_validity, which curl
    --cert-status applies, refuses it): neither is ever stapled, and show certificates says so."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if window == "next-update-at-the-epoch":
        this, next_ = epoch - datetime.timedelta(hours=1), epoch
    else:  # stapled within the thisUpdate leeway, before nextUpdate, if only those counted
        this, next_ = now + datetime.timedelta(seconds=250), now + datetime.timedelta(seconds=100)
    port = free_port()
    path = pki.response("a", tmp_path / "a.ocsp", this=this, next_=next_)
    gw = gateway_factory(ocsp_config(tmp_path, pki, port, path))
    out = status_out(port, "a.example.test")
    assert "OCSP response: no response sent" in out, out[-3000:]
    a = gw.status("show certificates")["certificates"][0]
    assert a["ocsp"]["stapled"] is False, a
    assert a["ocsp"]["nextUpdate"] == next_.strftime("%Y-%m-%dT%H:%M:%SZ"), a


def _this_update(out):
    for line in out.splitlines():
        if "This Update:" in line:
            return line.split("This Update:", 1)[1].strip()
    return None


def test_a_new_response_is_served_after_a_reload(tmp_path, pki, gateway_factory):
    """The updater writes a new response and reloads (or watchConfig sees it): the next handshakes
    staple it; a response that does not fit is refused and the old one keeps being stapled."""
    port = free_port()
    path = tmp_path / "a.ocsp"
    gw = gateway_factory(ocsp_config(tmp_path, pki, port, pki.response(
        "a", path, this=NOW - datetime.timedelta(hours=5))))
    first = _this_update(status_out(port, "a.example.test"))
    pki.response("a", path, this=NOW - datetime.timedelta(hours=1))
    gw.reload()
    second = _this_update(status_out(port, "a.example.test"))
    assert first and second and first != second, (first, second)
    pki.response("b", path)  # another certificate's: refused, the old generation serves on
    last = gw.reload(expect_ok=False)
    assert "does not cover this certificate" in json.dumps(last), last
    assert _this_update(status_out(port, "a.example.test")) == second


def test_the_example_staples_its_response(tmp_path, gateway_factory):
    """etc/examples/ocsp.json with the files `make example-certs` makes: it loads, and a client
    asking for the certificate's status gets the CA's answer."""
    certs_dir = example_certs(tmp_path)
    example = json.loads((REPO_ROOT / "etc/examples/ocsp.json").read_text()
                         .replace("certs/", str(certs_dir) + "/"))
    port = free_port()
    example["servers"][0]["listen"] = "127.0.0.1:%d" % port
    example["pidFile"] = str(tmp_path / "fg.pid")
    example["statusSocket"] = str(tmp_path / "status.sock")
    example["log"]["errorLog"] = str(tmp_path / "error.log")
    gateway_factory(example)
    out = status_out(port, "localhost", "-CAfile", str(certs_dir / "ca.crt"))
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out[-3000:]


def test_watch_config_serves_a_renamed_response(tmp_path, pki, gateway_factory):
    """An updater that writes the new response to a temporary file and renames it over the old
    one: watchConfig reloads, and the new response is stapled."""
    port = free_port()
    path = tmp_path / "a.ocsp"
    cfg = ocsp_config(tmp_path, pki, port, pki.response(
        "a", path, this=NOW - datetime.timedelta(hours=5)))
    cfg["watchConfig"] = True
    gw = gateway_factory(cfg)
    before = gw.status("show certificates")["certificates"][0]["ocsp"]["thisUpdate"]
    pki.response("a", tmp_path / "a.ocsp.tmp", this=NOW - datetime.timedelta(hours=2))
    (tmp_path / "a.ocsp.tmp").rename(path)
    deadline = time.monotonic() + 10
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            after = gw.status("show certificates")["certificates"][0]["ocsp"]["thisUpdate"]
        except (OSError, ValueError, KeyError):
            pass
    assert after != before, (before, after)
    assert _this_update(status_out(port, "a.example.test")) is not None
