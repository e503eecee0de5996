"""TLS configuration as the binary checks it: `-t` on certificates and keys (bad key, missing
file, malformed PEM, expired, expiring soon), a start refused on a bad key, and a reload with a
bad key refused while the old generation keeps serving and status shows why. Certificates are
made here with the `cryptography` package: an ECDSA P-256 CA and leaves with any validity."""
import datetime
import json
import signal
import subprocess

import pytest

from conftest import BINARY, base_config, free_port, http_get

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Certs:
    """A CA and leaves written as NAME.crt / NAME.key into a directory."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        self.ca = (x509.CertificateBuilder().subject_name(_name("Test CA"))
                   .issuer_name(_name("Test CA")).public_key(self.ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                   .sign(self.ca_key, hashes.SHA256()))

    def leaf(self, name, dns, valid_from=-1, valid_to=90):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        cert = (x509.CertificateBuilder().subject_name(_name(dns))
                .issuer_name(self.ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + valid_from * DAY).not_valid_after(now + valid_to * DAY)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), False)
                .sign(self.ca_key, hashes.SHA256()))
        crt, k = self.dir / (name + ".crt"), self.dir / (name + ".key")
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(_pem_key(key))
        return str(crt), str(k)


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def check(tmp_path, cfg):
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr


def with_certs(tmp_path, *pairs):
    cfg = base_config(tmp_path, free_port())
    cfg["certificates"] = [{"id": "c%d" % i, "chain": crt, "key": key}
                           for i, (crt, key) in enumerate(pairs)]
    return cfg


def test_check_accepts_good_certificates(tmp_path, certs):
    rc, out = check(tmp_path, with_certs(tmp_path, certs.leaf("good", "good.test")))
    assert rc == 0, out
    assert "configuration is ok" in out
    assert "warning" not in out


def test_check_refuses_a_key_of_another_certificate(tmp_path, certs):
    crt, _ = certs.leaf("one", "one.test")
    _, other_key = certs.leaf("two", "two.test")
    rc, out = check(tmp_path, with_certs(tmp_path, (crt, other_key)))
    assert rc == 1, out
    assert "certificates[0].key: %s: does not match the certificate in %s" % (other_key, crt) \
        in out, out
    assert "key values mismatch" in out  # OpenSSL's reason


def test_check_refuses_a_missing_file(tmp_path, certs):
    crt, key = certs.leaf("one", "one.test")
    missing = str(tmp_path / "missing.key")
    rc, out = check(tmp_path, with_certs(tmp_path, (crt, missing)))
    assert rc == 1, out
    assert "certificates[0].key: %s: cannot read: No such file or directory" % missing in out


def test_check_refuses_malformed_pem(tmp_path, certs):
    crt, key = certs.leaf("one", "one.test")
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    rc, out = check(tmp_path, with_certs(tmp_path, (str(bad), key)))
    assert rc == 1, out
    assert "certificates[0].chain: %s:" % bad in out, out
    assert "error:" in out  # OpenSSL's reason string


def test_check_refuses_an_expired_certificate(tmp_path, certs):
    pair = certs.leaf("old", "old.test", valid_from=-30, valid_to=-1)
    rc, out = check(tmp_path, with_certs(tmp_path, certs.leaf("ok", "ok.test"), pair))
    assert rc == 1, out
    assert "certificates[1].chain: %s: certificate /CN=old.test expired on" % pair[0] in out, out


def test_check_warns_about_a_certificate_expiring_soon(tmp_path, certs):
    pair = certs.leaf("soon", "soon.test", valid_to=5)
    rc, out = check(tmp_path, with_certs(tmp_path, pair))
    assert rc == 0, out
    assert "warning:" in out and "certificates[0].chain" in out, out
    assert "/CN=soon.test expires on" in out


def test_check_accepts_tls_servers_and_https_destinations(tmp_path, certs):
    """A server with tls and an https destination both pass -t (the destination is spoken to
    over TLS: test_https_dest.py)."""
    cfg = with_certs(tmp_path, certs.leaf("one", "one.test"))
    cfg["servers"][0]["tls"] = {"certificates": ["c0"]}
    rc, out = check(tmp_path, cfg)
    assert rc == 0, out
    cfg = base_config(tmp_path, free_port(), clusters=[
        {"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:%d" % free_port()}]}])
    rc, out = check(tmp_path, cfg)
    assert rc == 0, out
    assert "https destinations" not in out


def test_start_refuses_a_bad_key(tmp_path, certs):
    crt, _ = certs.leaf("one", "one.test")
    _, other = certs.leaf("two", "two.test")
    cfg = with_certs(tmp_path, (crt, other))
    path = tmp_path / "start.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-f", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert "does not match the certificate" in p.stderr + (tmp_path / "error.log").read_text()


def test_reload_with_a_bad_key_keeps_the_old_generation(tmp_path, certs, gateway_factory):
    good = certs.leaf("good", "good.test")
    cfg = with_certs(tmp_path, good)
    gw = gateway_factory(cfg)
    gen0 = gw.info()["generation"]
    assert http_get(gw.url("/")) == (200, b"hello")

    _, wrong_key = certs.leaf("other", "other.test")
    bad = json.loads(json.dumps(cfg))
    bad["certificates"][0]["key"] = wrong_key
    last = gw.reload(bad, expect_ok=False)
    assert "certificates[0].key: %s: does not match the certificate in %s" % (
        wrong_key, good[0]) in last["error"], last
    info = gw.info()
    assert info["generation"] == gen0 and info["reloadFailures"] == 1
    assert http_get(gw.url("/")) == (200, b"hello")
    assert "does not match the certificate" in gw.error_log()
    # `-s status` reads the file only for its status socket: it still works and shows why
    p = subprocess.run([str(BINARY), "-s", "status", "-c", str(gw.config_path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "key values mismatch" in p.stdout, p.stdout

    # an expired certificate is refused the same way
    old = certs.leaf("old", "old.test", valid_from=-10, valid_to=-1)
    bad["certificates"][0]["chain"], bad["certificates"][0]["key"] = old
    last = gw.reload(bad, expect_ok=False)
    assert "expired on" in last["error"], last

    # fixed: the next reload goes through
    renewed = certs.leaf("renewed", "good.test")
    cfg["certificates"][0]["chain"], cfg["certificates"][0]["key"] = renewed
    gw.reload(cfg)
    assert gw.info()["generation"] == gen0 + 1
    assert http_get(gw.url("/")) == (200, b"hello")


def _not_a_file(tmp_path, kind):
    """A FIFO or a directory where a PEM file is expected."""
    import os
    path = tmp_path / ("pem-" + kind)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return str(path)


def _unblock(path):
    """Give a reader blocked in open() on a FIFO its writer (a binary that waits there)."""
    import os
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize("kind", ["fifo", "dir"])
@pytest.mark.parametrize("which", ["chain", "key"])
def test_check_refuses_a_fifo_or_directory_as_pem_file(tmp_path, certs, kind, which):
    """-t answers promptly, naming the file, instead of waiting in open() on a FIFO."""
    crt, key = certs.leaf("one", "one.test")
    bad = _not_a_file(tmp_path, kind)
    pair = (bad, key) if which == "chain" else (crt, bad)
    cfg = with_certs(tmp_path, pair)
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    try:
        p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                           timeout=10)
    finally:
        _unblock(bad)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "certificates[0].%s: %s: cannot read: not a regular file" % (which, bad) in out, out


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_check_refuses_a_fifo_or_directory_as_ca_file(tmp_path, kind):
    bad = _not_a_file(tmp_path, kind)
    cfg = base_config(tmp_path, free_port(), clusters=[
        {"id": "c", "destinations": [{"id": "d", "address": "https://127.0.0.1:%d" % free_port()}],
         "httpClient": {"caFile": bad}}])
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    try:
        p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                           timeout=10)
    finally:
        _unblock(bad)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "clusters[0].httpClient.caFile: %s: cannot read: not a regular file" % bad in out, out


@pytest.mark.parametrize("which", ["chain", "key", "caFile"])
def test_reload_with_a_fifo_as_pem_file_keeps_the_old_generation(tmp_path, certs,
                                                                  gateway_factory, which):
    """The master refuses the FIFO at once: the reload fails, `-s status` answers, the old
    generation keeps serving."""
    good = certs.leaf("good", "good.test")
    cfg = with_certs(tmp_path, good)
    gw = gateway_factory(cfg)
    gen0 = gw.info()["generation"]
    bad_path = _not_a_file(tmp_path, "fifo")
    bad = json.loads(json.dumps(cfg))
    if which == "caFile":
        bad["clusters"] = [{"id": "tls", "destinations": [
            {"id": "d", "address": "https://127.0.0.1:%d" % free_port()}],
            "httpClient": {"caFile": bad_path}}]
        where = "clusters[0].httpClient.caFile"
    else:
        bad["certificates"][0][which] = bad_path
        where = "certificates[0].%s" % which
    try:
        last = gw.reload(bad, expect_ok=False, timeout=5)
        assert "%s: %s: cannot read: not a regular file" % (where, bad_path) in last["error"], last
        p = subprocess.run([str(BINARY), "-s", "status", "-c", str(gw.config_path)],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        assert "not a regular file" in p.stdout, p.stdout
        info = gw.info()
        assert info["generation"] == gen0 and info["reloadFailures"] == 1
        assert http_get(gw.url("/")) == (200, b"hello")
    finally:
        _unblock(bad_path)
