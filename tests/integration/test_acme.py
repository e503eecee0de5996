"""Automatic certificates with ACME (RFC 8555, HTTP-01) against a real ACME server: pebble,
Let's Encrypt's test CA (Debian package `pebble`), with `pebble-challtestsrv` as its DNS server
answering every name with 127.0.0.1, so that pebble's HTTP-01 validation of any name reaches
the gateway's plaintext listener on pebble's httpPort.

One pebble per module (fixture `pebble`): its ACME listener, management listener and httpPort
are free ports; its own TLS certificate is signed by a CA made here, given to the gateway as
acme.caFile. PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0 and PEBBLE_AUTHZREUSE=0 make it fast
and deterministic (every order needs a fresh HTTP-01 validation). Every test that wants a
certificate issued runs its gateway's first (plaintext) server on pebble["http_port"].

Covers: the placeholder a TLS server starts on, issuance and the reload that serves the new
certificate without a restart, the files (chain, key 0600, account key 0600, no challenge file
left), the challenge endpoint on plaintext servers that redirect or route everything, tokens
that try to leave the challenge directory, a valid certificate left alone, renewal of one that
expires within renewBefore or misses a name, one that has expired (the start must not refuse
it), a forced renewal (files deleted, reload), certificates that live less than renewBefore
(no order loop; a second pebble issuing 5-day certificates), an ACME server that does not
answer, a failed validation, a stop during a hung check, `-t` errors, and the shipped example
etc/examples/acme.json. Tests that need pebble skip when it is not installed.

FakeACME (at the end) is a small HTTPS ACME server written here that misbehaves on demand: a
chain the TLS loader would refuse, hostile tokens, http:// or CR LF URLs, a stalled answer, an
IPv6 literal, a problem detail with a newline, a slow failing check during a reload; with
files that cannot be written, a key that no longer matches, FIFOs among the challenges."""
import base64
import contextlib
import datetime
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BINARY, REPO_ROOT, base_config, free_port, http_request
from test_config_errors import check_error

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("curl") is None,
    reason="needs the openssl and curl CLIs")

DAY = datetime.timedelta(days=1)
ISSUE_TIMEOUT = 25.0  # the child starts ~1 s after the master; pebble issues in well under 1 s
NAMES = ["site.example.test", "www.site.example.test"]
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def need_pebble():
    for tool in ("pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (Debian package pebble)" % tool)


# ---------------------------------------------------------------- certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A P-256 CA that signs leaves with any validity and any names (DNS or IP)."""

    def __init__(self, cn="ACME Test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, crt_path, key_path, names, valid_from=-1, valid_to=90, ips=()):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        import ipaddress
        san = [x509.DNSName(n) for n in names] + \
              [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + valid_from * DAY).not_valid_after(now + valid_to * DAY)
                .add_extension(x509.SubjectAlternativeName(san), False)
                .sign(self.key, hashes.SHA256()))
        Path(crt_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(key_path).write_bytes(_pem_key(key))
        os.chmod(key_path, 0o600)
        return cert


# ---------------------------------------------------------------- pebble

def _wait_for(path, text, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = Path(path).read_text(errors="replace") if Path(path).exists() else ""
        if text in log:
            return
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s" % (what, proc.returncode, log[-3000:]))
        time.sleep(0.05)
    raise RuntimeError("%s not ready after %ss:\n%s" % (what, timeout, log[-3000:]))


def _kill(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


@contextlib.contextmanager
def run_pebble(d, validity=None, eab=None):
    """pebble-challtestsrv (DNS only: every A query -> 127.0.0.1, no AAAA) and pebble, in
    directory d; validity: pebble's certificateValidityPeriod in seconds (default: 5 years).
    Yields a dict: directory (URL), ca_file (the CA of pebble's TLS certificate),
    http_port (pebble's HTTP-01 port: the gateway's plaintext listener), root (PEM of pebble's
    issuing root, from its management interface), dir, log (pebble's output file).
    eab: {key id: base64url MAC key}: pebble then requires an external account binding
    (RFC 8555 7.3.4) with one of them."""
    need_pebble()
    ca = CA("Pebble Listener Test CA")
    (d / "ca.crt").write_bytes(ca.pem)
    ca.leaf(d / "pebble.crt", d / "pebble.key", ["localhost"], ips=["127.0.0.1"])
    dns_port, cts_mgmt = free_port(), free_port()
    acme_port, mgmt_port, http_port, tls_port = free_port(), free_port(), free_port(), free_port()
    (d / "pebble-config.json").write_text(json.dumps({"pebble": {
        "listenAddress": "127.0.0.1:%d" % acme_port,
        "managementListenAddress": "127.0.0.1:%d" % mgmt_port,
        "certificate": str(d / "pebble.crt"),
        "privateKey": str(d / "pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}, indent=2))
    cfg = json.loads((d / "pebble-config.json").read_text())
    if validity is not None:
        cfg["pebble"]["certificateValidityPeriod"] = validity
    if eab is not None:
        cfg["pebble"]["externalAccountBindingRequired"] = True
        cfg["pebble"]["externalAccountMACKeys"] = eab
    (d / "pebble-config.json").write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
               PEBBLE_AUTHZREUSE="0")
    cts = pb = None
    try:
        with open(d / "challtestsrv.log", "wb") as out:
            cts = subprocess.Popen(
                ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", "127.0.0.1:%d" % dns_port, "-http01", "", "-https01", "",
                 "-tlsalpn01", "", "-management", "127.0.0.1:%d" % cts_mgmt],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait_for(d / "challtestsrv.log", "Starting management server", cts, 15,
                  "pebble-challtestsrv")
        with open(d / "pebble.log", "wb") as out:
            pb = subprocess.Popen(
                ["pebble", "-config", str(d / "pebble-config.json"),
                 "-dnsserver", "127.0.0.1:%d" % dns_port],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=str(d), start_new_session=True)
        _wait_for(d / "pebble.log", "ACME directory available at", pb, 30, "pebble")
        # pebble prints that line just before it starts serving: ask until it answers
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        directory = "https://127.0.0.1:%d/dir" % acme_port
        deadline = time.monotonic() + 15
        while True:
            try:
                json.loads(urllib.request.urlopen(directory, context=ctx, timeout=10).read())
                break
            except OSError:
                if time.monotonic() > deadline or pb.poll() is not None:
                    raise
                time.sleep(0.1)
        root = urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % mgmt_port, context=ctx,
                                      timeout=10).read()
        (d / "pebble-root.pem").write_bytes(root)
        yield {"directory": directory, "ca_file": str(d / "ca.crt"), "http_port": http_port,
               "root": str(d / "pebble-root.pem"), "dir": d, "log": d / "pebble.log"}
    finally:
        _kill(pb)
        _kill(cts)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    with run_pebble(tmp_path_factory.mktemp("pebble")) as p:
        yield p


# ---------------------------------------------------------------- gateway and clients

def acme_section(directory, ca_file=None, **extra):
    a = {"directory": directory, "email": "ops@example.test", "stateDir": "acme"}
    if ca_file:
        a["caFile"] = ca_file
    a.update(extra)
    return a


def acme_config(tmp_path, http_port, tls_port, certificates, acme, http_server=None, **top):
    """Servers: "http" (plaintext, on http_port, + http_server settings) and "https" (TLS on
    tls_port with every certificate). The default route answers 200 "hello" everywhere."""
    cfg = base_config(tmp_path, http_port, workers=1, **top)
    cfg["servers"][0]["id"] = "http"
    cfg["servers"][0].update(http_server or {})
    cfg["servers"].append({"id": "https", "listen": "127.0.0.1:%d" % tls_port,
                           "tls": {"certificates": [c["id"] for c in certificates],
                                   "default": certificates[0]["id"]}})
    cfg["certificates"] = certificates
    cfg["acme"] = acme
    return cfg


def served_chain(port, name):
    """The certificates the TLS server sends for SNI name (leaf first), as cryptography
    objects; [] when the handshake fails."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", name, "-showcerts"], input=b"", capture_output=True,
                       timeout=30)
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?",
                      p.stdout, re.S)
    return [x509.load_pem_x509_certificate(b) for b in pems]


def sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def self_signed(cert):
    return cert.issuer == cert.subject


def wait_issued(gw, port, name, timeout=ISSUE_TIMEOUT, not_this=None):
    """Until the TLS server serves, for name, a certificate not signed by itself (and not
    the DER not_this). Returns the chain."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        chain = served_chain(port, name)
        if chain:
            last = chain[0]
            der = last.public_bytes(serialization.Encoding.DER)
            if not self_signed(last) and der != not_this:
                return chain
        assert gw.alive(), "gateway exited\n" + gw._diag()
        time.sleep(0.5)
    raise AssertionError("no issued certificate for %s after %ss (last served: %s)\n%s"
                         % (name, timeout, last.subject.rfc4514_string() if last else None,
                            acme_lines(gw)))


def acme_lines(gw):
    return "\n".join(l for l in gw.error_log().splitlines() if "acme:" in l)


def wait_log(gw, pattern, timeout):
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        for line in gw.error_log().splitlines():
            if rx.search(line):
                return line
        time.sleep(0.2)
    raise AssertionError("no log line matching %r after %ss; acme lines:\n%s\n%s"
                         % (pattern, timeout, acme_lines(gw), gw._diag()))


def file_leaf(path):
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def key_matches(key_path, cert):
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, pub) == cert.public_key().public_bytes(enc, pub)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def closed_port():
    """A port nothing listens on (bound, then closed)."""
    return free_port()


# ---------------------------------------------------------------- issuance

def test_placeholder_then_issued_certificate_served_without_restart(tmp_path, pebble,
                                                                     gateway_factory):
    """A TLS server whose acme certificate has no files yet starts on a self-signed
    placeholder for the names, then serves pebble's certificate (chain verified up to pebble's
    root, SAN = the names) after the child's reload; the files are written (key 0600), the
    account key is kept (0600), no challenge file is left."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                      acme_section(pebble["directory"], pebble["ca_file"]))
    gw = gateway_factory(cfg)
    pid = gw.pid
    first = served_chain(tls_port, NAMES[0])
    assert first, "no certificate served at start\n" + gw._diag()
    if self_signed(first[0]):  # the placeholder (unless the child was already done)
        assert NAMES[0] in sans(first[0]) or NAMES[0] in first[0].subject.rfc4514_string()

    chain = wait_issued(gw, tls_port, NAMES[0])
    leaf = chain[0]
    assert sorted(sans(leaf)) == sorted(NAMES), sans(leaf)
    assert "Pebble" in leaf.issuer.rfc4514_string(), leaf.issuer.rfc4514_string()
    assert len(chain) >= 2, "the intermediate is not sent"
    # the other name is served the same certificate
    assert der(served_chain(tls_port, NAMES[1])[0]) == der(leaf)
    # a client that trusts pebble's root accepts it for both names
    for name in NAMES:
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", pebble["root"],
                            "--resolve", "%s:%d:127.0.0.1" % (name, tls_port),
                            "https://%s:%d/" % (name, tls_port)], capture_output=True,
                           timeout=30)
        assert p.returncode == 0 and p.stdout == b"hello", (p.returncode, p.stderr)

    # no restart: the same master, a reload of its configuration
    assert gw.alive() and gw.pid == pid
    assert gw.info().get("reloads", 0) >= 1, gw.info()
    line = wait_log(gw, r"acme: certificates\[0\] \(site\): issued", 5)
    assert "valid until" in line, line

    # the files, relative to the configuration file
    crt, key = tmp_path / "site.crt", tmp_path / "site.key"
    assert der(file_leaf(crt)) == der(leaf)
    assert key_matches(key, leaf)
    assert mode(key) == 0o600, oct(mode(key))
    state = tmp_path / "acme"
    assert (state / "account.key").is_file()
    assert mode(state / "account.key") == 0o600, oct(mode(state / "account.key"))
    challenges = state / "challenges"
    left = sorted(p.name for p in challenges.iterdir()) if challenges.is_dir() else []
    assert left == [], "challenge files left behind: %s" % left
    # no temporary file left next to the certificate
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("site.")) == \
        ["site.crt", "site.key"]


def test_check_warns_about_a_placeholder(tmp_path):
    """-t accepts an acme certificate whose files do not exist yet, with a warning."""
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    cfg = acme_config(tmp_path, free_port(), free_port(), [cert],
                      acme_section("https://127.0.0.1:14000/dir"))
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "warning" in out.lower(), out
    assert "certificates[0]" in out, out


# ---------------------------------------------------------------- renewal

def test_renews_expiring_or_incomplete_and_leaves_valid_alone(tmp_path, pebble,
                                                              gateway_factory):
    """Three acme certificates with files made by a test CA: "fresh" (90 days, all its names)
    is left alone; "soon" (expires in 5 days < renewBefore 30d) and "partial" (90 days but
    missing one of its names) are replaced by pebble's, served after the reload."""
    ca = CA()
    tls_port = free_port()
    fresh = ca.leaf(tmp_path / "fresh.crt", tmp_path / "fresh.key", ["fresh.example.test"])
    # a 90-day certificate with 5 days left (< renewBefore 30d, and < a third of its life)
    soon = ca.leaf(tmp_path / "soon.crt", tmp_path / "soon.key", ["soon.example.test"],
                   valid_from=-85, valid_to=5)
    ca.leaf(tmp_path / "partial.crt", tmp_path / "partial.key", ["partial.example.test"])
    certs = [
        {"id": "fresh", "chain": "fresh.crt", "key": "fresh.key",
         "names": ["fresh.example.test"], "acme": True},
        {"id": "soon", "chain": "soon.crt", "key": "soon.key",
         "names": ["soon.example.test"], "acme": True},
        {"id": "partial", "chain": "partial.crt", "key": "partial.key",
         "names": ["partial.example.test", "more.partial.example.test"], "acme": True},
    ]
    before = {n: ((tmp_path / (n + ".crt")).read_bytes(), (tmp_path / (n + ".key")).read_bytes(),
                  os.stat(tmp_path / (n + ".crt")).st_mtime_ns) for n in ("fresh", "soon")}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, certs,
                      acme_section(pebble["directory"], pebble["ca_file"],
                                   renewBefore="30d", checkInterval="12h"))
    gw = gateway_factory(cfg)
    # at start, the files as they are (or, for "soon", already pebble's if the child was quick)
    at_start = served_chain(tls_port, "soon.example.test")[0]
    assert der(at_start) == der(soon) or "Pebble" in at_start.issuer.rfc4514_string()
    assert der(served_chain(tls_port, "fresh.example.test")[0]) == der(fresh)

    new_soon = wait_issued(gw, tls_port, "soon.example.test", not_this=der(soon))[0]
    assert sans(new_soon) == ["soon.example.test"]
    assert new_soon.not_valid_after > datetime.datetime.utcnow() + 30 * DAY
    new_partial = wait_issued(gw, tls_port, "partial.example.test")[0]
    assert sorted(sans(new_partial)) == ["more.partial.example.test", "partial.example.test"]
    assert der(served_chain(tls_port, "more.partial.example.test")[0]) == der(new_partial)
    assert der(file_leaf(tmp_path / "soon.crt")) == der(new_soon)
    assert (tmp_path / "soon.key").read_bytes() != before["soon"][1], "the key was not renewed"
    assert key_matches(tmp_path / "soon.key", new_soon)
    wait_log(gw, r"acme: certificates\[1\] \(soon\): issued", 5)
    wait_log(gw, r"acme: certificates\[2\] \(partial\): issued", 5)

    # the same pass looked at "fresh": untouched, still served, no order for it
    crt, key, mtime = before["fresh"]
    assert (tmp_path / "fresh.crt").read_bytes() == crt
    assert (tmp_path / "fresh.key").read_bytes() == key
    assert os.stat(tmp_path / "fresh.crt").st_mtime_ns == mtime
    assert der(served_chain(tls_port, "fresh.example.test")[0]) == der(fresh)
    assert not re.search(r"acme: certificates\[0\] \(fresh\): issued", gw.error_log()), \
        acme_lines(gw)
    assert "fresh.example.test" not in pebble["log"].read_text(errors="replace")


def test_expired_certificate_does_not_block_the_start_and_is_renewed(tmp_path, pebble,
                                                                     gateway_factory):
    """An acme certificate whose file has expired (the gateway was down past the expiry, or
    renewals kept failing) must not stop the gateway from starting: otherwise the ACME child
    never runs and the gateway cannot heal itself. -t accepts it with a warning; the gateway
    starts and the child replaces it."""
    ca = CA()
    tls_port = free_port()
    old = ca.leaf(tmp_path / "old.crt", tmp_path / "old.key", ["old.example.test"],
                  valid_from=-30, valid_to=-1)
    cert = {"id": "old", "chain": "old.crt", "key": "old.key", "names": ["old.example.test"],
            "acme": True}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                      acme_section(pebble["directory"], pebble["ca_file"]))
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, "an expired acme certificate is refused:\n" + out
    assert "warning" in out.lower() and "certificates[0]" in out, out
    gw = gateway_factory(cfg)
    new = wait_issued(gw, tls_port, "old.example.test", not_this=der(old))[0]
    assert "Pebble" in new.issuer.rfc4514_string()
    assert der(file_leaf(tmp_path / "old.crt")) == der(new)


def test_short_lived_certificates_are_not_reordered_in_a_loop(tmp_path_factory, tmp_path,
                                                              gateway_factory):
    """A CA whose certificates live less than renewBefore (Let's Encrypt's 6-day profile with
    the default 30d): the certificate just issued is "expiring within renewBefore" at once.
    The client must not order again at the check that follows its own reload, and again, and
    again (a loop that burns the CA's rate limits): one order, then quiet. Here pebble issues
    5-day certificates. The check after the reload must end with `nothing due` (`show
    certificates`), where the test slept 6 s and counted the orders."""
    with run_pebble(tmp_path_factory.mktemp("pebble-short"), validity=5 * 86400) as short:
        tls_port = free_port()
        cert = {"id": "site", "chain": "site.crt", "key": "site.key",
                "names": ["short.example.test"], "acme": True}
        gw = gateway_factory(acme_config(tmp_path, short["http_port"], tls_port, [cert],
                                         acme_section(short["directory"], short["ca_file"],
                                                      renewBefore="30d")))
        first = wait_issued(gw, tls_port, "short.example.test")[0]
        assert first.not_valid_after < datetime.datetime.utcnow() + 6 * DAY
        # the check that follows the reload (1 s after it): nothing due; a loop orders again
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            acme = gw.status("show certificates")["acme"]
            if acme["lastResult"] == "nothing due" and not acme["running"]:
                break
            time.sleep(0.2)
        assert acme["lastResult"] == "nothing due", (acme, acme_lines(gw))
        issued = re.findall(r"acme: certificates\[0\] \(site\): issued", gw.error_log())
        assert len(issued) == 1, "%d orders in a row:\n%s" % (len(issued), acme_lines(gw))


def test_reissues_after_the_files_are_deleted_and_reload(tmp_path, pebble, gateway_factory):
    """Forcing a renewal as docs/acme.md says: delete the files and reload; the account key is
    reused (same file), the new certificate has another key."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": ["again.example.test"],
            "acme": True}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                      acme_section(pebble["directory"], pebble["ca_file"]))
    gw = gateway_factory(cfg)
    first = wait_issued(gw, tls_port, "again.example.test")[0]
    account = (tmp_path / "acme" / "account.key").read_bytes()
    # wait for the files (the reload may come just before or after them being visible)
    deadline = time.monotonic() + 5
    while not (tmp_path / "site.key").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.unlink(tmp_path / "site.crt")
    os.unlink(tmp_path / "site.key")
    gw.reload()
    second = wait_issued(gw, tls_port, "again.example.test", not_this=der(first))[0]
    assert second.serial_number != first.serial_number
    assert second.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
        first.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (tmp_path / "acme" / "account.key").read_bytes() == account


def test_ocsp_update_on_a_certificate_that_names_no_responder(tmp_path, pebble,
                                                             gateway_factory):
    """ocspUpdate on an ACME certificate whose CA names no OCSP responder in it (pebble; Let's
    Encrypt since 2025): the reload after issuance takes the certificate all the same, with a
    warning, and the OCSP updater skips it without an error."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key",
            "names": ["noocsp.example.test"], "acme": True, "ocspFile": "site.ocsp",
            "ocspUpdate": True}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                      acme_section(pebble["directory"], pebble["ca_file"]))
    gw = gateway_factory(cfg)
    wait_issued(gw, tls_port, "noocsp.example.test")
    log = gw.error_log()
    assert "the certificate names no OCSP responder: nothing is fetched or stapled" in log, log
    gw.status("ocsp update")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            gw.status("show certificates")["ocspUpdate"]["running"] or
            "names no OCSP responder: nothing to staple" not in gw.error_log()):
        time.sleep(0.2)
    assert "names no OCSP responder: nothing to staple" in gw.error_log()
    assert gw.status("show certificates")["ocspUpdate"]["lastResult"] == "unchanged"
    assert "reload failed" not in gw.error_log()


def test_acme_check_and_show_certificates(tmp_path, pebble, gateway_factory):
    """`show certificates` shows the placeholder, then pebble's certificate and the client's
    last check; deleting the chain and `acme check` (no reload) orders a new one at once, and
    the reload it triggers serves it. Without an acme section, `acme check` is refused."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": ["check.example.test"],
            "acme": True}
    cfg = acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                      acme_section(pebble["directory"], pebble["ca_file"]))
    gw = gateway_factory(cfg)
    first = wait_issued(gw, tls_port, "check.example.test")[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = gw.status("show certificates")
        c = doc["certificates"][0]
        if not c["placeholder"] and doc["acme"]["lastResult"] and not doc["acme"]["running"]:
            break
        time.sleep(0.2)
    assert c["id"] == "site" and c["acme"] is True and c["names"] == ["check.example.test"]
    assert "Pebble" in c["issuer"] and c["daysLeft"] > 30, doc
    assert doc["acme"]["directory"] == pebble["directory"] and doc["acme"]["nextCheck"], doc
    os.unlink(tmp_path / "site.crt")
    assert gw.status("acme check")["result"] in ("started", "queued")
    second = wait_issued(gw, tls_port, "check.example.test", not_this=der(first))[0]
    assert second.serial_number != first.serial_number
    port = free_port()
    (tmp_path / "plain").mkdir()
    plain = gateway_factory(base_config(tmp_path / "plain", port))
    r = plain.status("acme check")
    assert r["result"] == "failed" and "acme" in r["error"]
    assert plain.status("show certificates") == {"certificates": [], "acme": None,
                                                 "ocspUpdate": None}


# ---------------------------------------------------------------- failure

def test_unreachable_directory_logs_the_step_and_keeps_the_placeholder(tmp_path,
                                                                        gateway_factory):
    """An ACME directory on a closed port: an `acme:` error line naming the step; the TLS
    server keeps serving its placeholder, the plaintext server keeps answering."""
    http_port, tls_port, dead = free_port(), free_port(), closed_port()
    directory = "https://127.0.0.1:%d/dir" % dead
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    gw = gateway_factory(acme_config(tmp_path, http_port, tls_port, [cert],
                                     acme_section(directory)))
    first = served_chain(tls_port, NAMES[0])
    assert first and self_signed(first[0]), "not a self-signed placeholder"
    leaf = first[0]
    assert NAMES[0] in sans(leaf) or NAMES[0] in leaf.subject.rfc4514_string(), \
        leaf.subject.rfc4514_string()
    # the error line (not the info line "ordering: ..."), naming the step and the URL
    line = wait_log(gw, r"\[error\].*acme: ", 10)
    assert re.search(r"acme: .*directory https://127\.0\.0\.1:%d/dir: .*refused" % dead, line), \
        line
    time.sleep(0.5)
    assert gw.alive()
    assert der(served_chain(tls_port, NAMES[0])[0]) == der(leaf)
    assert http_request("GET", gw.url("/"))[0] == 200
    assert not (tmp_path / "site.crt").exists() and not (tmp_path / "site.key").exists()


def test_reloads_after_a_failed_check_wait_for_the_retry(tmp_path, gateway_factory):
    """After a failed check, reloads that leave the ACME settings alone do not check again
    before the 5-minute retry (a public CA counts failed validations); `acme check` does, and
    a reload that changes them (another name) does."""
    http_port, tls_port, dead = free_port(), free_port(), closed_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    cfg = acme_config(tmp_path, http_port, tls_port, [cert],
                      acme_section("https://127.0.0.1:%d/dir" % dead))
    gw = gateway_factory(cfg)
    wait_log(gw, r"\[error\].*acme: directory", 10)

    def failures():
        return len(re.findall(r"\[error\].*acme: directory", gw.error_log()))
    assert failures() == 1
    for _ in range(3):
        gw.reload()
    time.sleep(2.5)
    assert failures() == 1, acme_lines(gw)
    assert gw.status("acme check")["result"] in ("started", "queued")
    deadline = time.monotonic() + 10
    while failures() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert failures() == 2, acme_lines(gw)
    changed = json.loads(json.dumps(cfg))
    changed["certificates"][0]["names"] = NAMES + ["other." + NAMES[0]]
    gw.reload(changed)
    deadline = time.monotonic() + 10
    while failures() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert failures() == 3, acme_lines(gw)


def test_failed_validation_logs_the_problem_and_removes_the_challenge(tmp_path, pebble,
                                                                      gateway_factory):
    """pebble's HTTP-01 request finds nothing on its httpPort (the gateway's plaintext server
    is elsewhere): the authorization is invalid, the error line names the certificate, the
    step and pebble's problem detail; no challenge file is left; the placeholder stays."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key",
            "names": ["unreachable.example.test"], "acme": True}
    gw = gateway_factory(acme_config(tmp_path, free_port(), tls_port, [cert],
                                     acme_section(pebble["directory"], pebble["ca_file"])))
    line = wait_log(gw, r"\[error\].*acme: ", ISSUE_TIMEOUT)
    assert "acme: certificates[0] (site): authorization for unreachable.example.test: invalid" \
        in line, line
    assert "%d" % pebble["http_port"] in line, line  # pebble's detail: the address it tried
    chain = served_chain(tls_port, "unreachable.example.test")
    assert chain and self_signed(chain[0])
    assert gw.alive()
    challenges = tmp_path / "acme" / "challenges"
    left = sorted(p.name for p in challenges.iterdir()) if challenges.is_dir() else []
    assert left == [], "challenge files left behind: %s" % left
    assert not (tmp_path / "site.crt").exists()


def _group_members(pgid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def test_stop_during_a_check_leaves_no_acme_child(tmp_path, gateway_factory):
    """The ACME server hangs (a connect that never completes): the child is blocked in the
    directory step when the master is told to stop; the master ends it, nothing is left."""
    from conftest import Blackhole
    hole = Blackhole()
    try:
        cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES,
                "acme": True}
        gw = gateway_factory(acme_config(tmp_path, free_port(), free_port(), [cert],
                                         acme_section("https://127.0.0.1:%d/dir" % hole.port)))
        wait_log(gw, r"acme: certificates\[0\] \(site\): ordering", 10)
        time.sleep(0.3)
        assert len(_group_members(gw.pid)) >= 3  # master, worker, acme child
        gw.proc.send_signal(15)
        gw.proc.wait(15)
        deadline = time.monotonic() + 5
        while _group_members(gw.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _group_members(gw.pid)
        assert not left, "left after the master exited: %s" % [
            open("/proc/%d/cmdline" % p).read().replace("\0", " ") for p in left]
    finally:
        hole.close()


# ---------------------------------------------------------------- challenge endpoint

CHALLENGE = "/.well-known/acme-challenge/"


def test_challenge_endpoint_before_redirect_and_routes(tmp_path, gateway_factory):
    """GET /.well-known/acme-challenge/TOKEN answers stateDir/challenges/TOKEN (200,
    application/octet-stream) on a plaintext server with redirectHttps and on one whose routes
    would catch the path; 404 for an unknown token; tokens outside base64url never read a file
    outside the challenge directory."""
    http_port, plain_port, tls_port = free_port(), free_port(), free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    # nothing answers the directory: the child never writes or removes challenge files here
    cfg = acme_config(tmp_path, http_port, tls_port, [cert],
                      acme_section("https://127.0.0.1:%d/dir" % closed_port()),
                      http_server={"redirectHttps": {"port": tls_port, "status": 308}})
    cfg["servers"].append({"id": "plain", "listen": "127.0.0.1:%d" % plain_port})
    cfg["routes"].insert(0, {"id": "grab", "match": {"path": "/.well-known/{**rest}"},
                             "direct": {"status": 418, "body": "routed"}})
    state = tmp_path / "acme"
    (state / "challenges").mkdir(parents=True)
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    keyauth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    (state / "challenges" / token).write_text(keyauth)
    (state / "secret").write_text("account secret")
    (state / "challenges" / "dot.ted").write_text("not a token")
    # a symbolic link with a valid token name that points out of the directory
    os.symlink(state / "secret", state / "challenges" / "LinkToken_0123456789")
    gateway_factory(cfg)
    # one written while the gateway runs is served too
    late = "LATE_token-0123456789"
    (state / "challenges" / late).write_text(late + ".thumbprint")

    for port in (http_port, plain_port):
        base = "http://127.0.0.1:%d" % port
        for tok, body in ((token, keyauth), (late, late + ".thumbprint")):
            st, hdrs, got = http_request("GET", base + CHALLENGE + tok,
                                         headers={"Host": "site.example.test"})
            assert st == 200, (port, st, got)
            assert got == body.encode()
            assert hdrs.get("content-type") == "application/octet-stream", hdrs
        st, _, got = http_request("GET", base + CHALLENGE + "unknownTOKEN123")
        assert st == 404, (port, st, got)
        st, _, got = http_request("GET", base + CHALLENGE + "LinkToken_0123456789")
        assert st == 404 and b"account secret" not in got, (port, st, got)
        for bad in ("..%2Fsecret", "%2E%2E%2Fsecret", "..%2f..%2facme%2fsecret", "dot.ted",
                    "a%00b", "%2e%2e", "..", "x/../../secret", "../secret", "..%5Csecret"):
            st, _, got = http_request("GET", base + CHALLENGE + bad)
            assert b"account secret" not in got and b"not a token" not in got, (port, bad, st)
            # one segment that is not a dot segment (".." and "%2e%2e" are removed by the
            # path normalization, RFC 3986 6.2.2: that path is routed): the endpoint refuses it
            if "/" not in bad and bad not in ("..", "%2e%2e"):
                assert st in (400, 404), (port, bad, st, got)
        # HEAD: the same head, no body; a query does not change the token
        st, hdrs, got = http_request("HEAD", base + CHALLENGE + token)
        assert st == 200 and got == b"" and hdrs.get("content-length") == str(len(keyauth))
        assert http_request("GET", base + CHALLENGE + token + "?x=1")[2] == keyauth.encode()
    # other methods are routed as usual
    st, _, got = http_request("POST", "http://127.0.0.1:%d%s%s" % (plain_port, CHALLENGE, token),
                              body=b"x")
    assert st == 418 and got == b"routed", (st, got)
    # the routes and the redirect still apply to every other path
    st, hdrs, _ = http_request("GET", "http://127.0.0.1:%d/x" % http_port)
    assert st == 308 and hdrs["location"].startswith("https://"), (st, hdrs)
    assert http_request("GET", "http://127.0.0.1:%d/.well-known/other" % plain_port)[0] == 418
    assert http_request("GET", "http://127.0.0.1:%d/x" % plain_port)[2] == b"hello"
    # the TLS server answers it as well (an ACME server may follow a redirect to https)
    p = subprocess.run(["curl", "-sS", "-k", "--max-time", "10",
                        "https://127.0.0.1:%d%s%s" % (tls_port, CHALLENGE, token)],
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout == keyauth.encode(), (p.returncode, p.stderr)


def test_challenge_path_is_routed_without_an_acme_section(tmp_path, gateway_factory):
    """Without the top-level acme section the path is an ordinary one."""
    gw = gateway_factory(base_config(tmp_path, free_port(), workers=1))
    st, _, got = http_request("GET", gw.url(CHALLENGE + "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ"))
    assert st == 200 and got == b"hello", (st, got)


# ---------------------------------------------------------------- -t errors

# ---------------------------------------------------------------- external account binding

EAB_KID = "kid-fastgateway"
EAB_KEY = base64.urlsafe_b64encode(b"k" * 8 + bytes(range(24))).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def pebble_eab(tmp_path_factory):
    with run_pebble(tmp_path_factory.mktemp("pebble-eab"), eab={EAB_KID: EAB_KEY}) as p:
        yield p


def _mac_file(tmp_path, text, mode=0o600):
    path = tmp_path / "eab.key"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def test_external_account_binding_issues_from_a_ca_that_requires_it(tmp_path, pebble_eab,
                                                                    gateway_factory):
    """RFC 8555 7.3.4: a CA that requires an external account (its directory's
    meta.externalAccountRequired, as ZeroSSL's and Google's) creates the account when newAccount
    carries the binding MACed with the key it gave for keyId; the certificate is issued."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    acme = acme_section(pebble_eab["directory"], pebble_eab["ca_file"], externalAccount={
        "keyId": EAB_KID, "macKeyFile": _mac_file(tmp_path, EAB_KEY)})
    gw = gateway_factory(acme_config(tmp_path, pebble_eab["http_port"], tls_port, [cert], acme))
    chain = wait_issued(gw, tls_port, NAMES[0])
    assert "Pebble" in chain[0].issuer.rfc4514_string()
    dumped = subprocess.run([str(BINARY), "-T", "-c", str(gw.config_path)], capture_output=True,
                            text=True, timeout=30)
    assert EAB_KEY not in dumped.stdout + dumped.stderr + gw.error_log()


@pytest.mark.parametrize("case", ["none", "wrong-key", "unknown-kid"])
def test_external_account_binding_refused_or_missing_is_logged(tmp_path, pebble_eab,
                                                               gateway_factory, case):
    """Without a binding the ACME client says what to configure before asking; with a wrong
    key or key id the CA's refusal is logged; the placeholder keeps serving."""
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    extra = {}
    if case == "wrong-key":
        other = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
        extra = {"keyId": EAB_KID, "macKeyFile": _mac_file(tmp_path, other)}
    elif case == "unknown-kid":
        extra = {"keyId": "kid-nobody", "macKeyFile": _mac_file(tmp_path, EAB_KEY)}
    acme = acme_section(pebble_eab["directory"], pebble_eab["ca_file"],
                        **({"externalAccount": extra} if extra else {}))
    gw = gateway_factory(acme_config(tmp_path, pebble_eab["http_port"], tls_port, [cert], acme))
    if case == "none":
        line = wait_log(gw, r"acme: .*requires an external account binding", ISSUE_TIMEOUT)
        assert "acme.externalAccount" in line, line
    else:
        line = wait_log(gw, r"acme: .*newAccount", ISSUE_TIMEOUT)
        assert "HTTP 4" in line or "unauthorized" in line or "malformed" in line, line
    assert self_signed(served_chain(tls_port, NAMES[0])[0])
    assert EAB_KEY not in gw.error_log()


def _check_cfg(tmp_path, change):
    cert = {"id": "site", "chain": str(tmp_path / "site.crt"), "key": str(tmp_path / "site.key"),
            "names": ["site.example.test"], "acme": True}
    cfg = acme_config(tmp_path, free_port(), free_port(), [cert],
                      acme_section("https://127.0.0.1:14000/dir"))
    change(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path, subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True,
                                text=True, timeout=30, stdin=subprocess.DEVNULL)


def _set(obj, key, value):
    obj[key] = value


CHECK_CASES = [
    ("no-names", lambda c: c["certificates"][0].pop("names"), "certificates[0].names"),
    ("empty-names", lambda c: _set(c["certificates"][0], "names", []), "certificates[0].names"),
    ("wildcard-name", lambda c: _set(c["certificates"][0], "names", ["*.example.test"]),
     "certificates[0].names", "DNS-01"),
    ("no-acme-section", lambda c: c.pop("acme"), "certificates[0].acme"),
    ("http-directory", lambda c: _set(c["acme"], "directory", "http://127.0.0.1:14000/dir"),
     "acme.directory"),
    # a missing required key is reported on its object, naming the key (as everywhere)
    ("no-directory", lambda c: c["acme"].pop("directory"), "acme", "directory"),
    ("no-stateDir", lambda c: c["acme"].pop("stateDir"), "acme", "stateDir"),
    ("bad-renewBefore", lambda c: _set(c["acme"], "renewBefore", "soon"), "acme.renewBefore"),
    ("unknown-key", lambda c: _set(c["acme"], "directoryUrl", "https://x.test/dir"),
     "acme.directoryUrl"),
    # two certificates writing one file would order again after every reload (a loop)
    ("shared-chain", lambda c: c["certificates"].insert(0, dict(
        c["certificates"][0], id="other", key=c["certificates"][0]["key"] + "2",
        names=["other.example.test"])), "certificates[0].chain", "certificates[1]"),
    ("eab-no-key-file", lambda c: _set(c["acme"], "externalAccount", {"keyId": "k"}),
     "acme.externalAccount", "macKeyFile"),
    ("eab-missing-key-file", lambda c: _set(c["acme"], "externalAccount", {
        "keyId": "k", "macKeyFile": "/nonexistent/eab.key"}),
     "acme.externalAccount.macKeyFile", "cannot open"),
    ("eab-empty-key-id", lambda c: _set(c["acme"], "externalAccount", {
        "keyId": "", "macKeyFile": "/nonexistent/eab.key"}),
     "acme.externalAccount.keyId"),
    ("shared-key-with-a-manual-certificate", lambda c: c["certificates"].append(dict(
        c["certificates"][0], id="manual", chain=c["certificates"][0]["chain"] + "2",
        acme=False)), "certificates[0].key", "certificates[1]"),
]


@pytest.mark.parametrize("case", CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_refuses(tmp_path, case):
    change, key_path = case[1], case[2]
    path, proc = _check_cfg(tmp_path, change)
    check_error(proc, path, key_path)
    if len(case) > 3:
        assert case[3] in proc.stderr, proc.stderr


@pytest.mark.parametrize("text,mode,why", [
    (EAB_KEY, 0o644, "chmod 600"),
    ("not*base64url", 0o600, "not a base64url key"),
    (base64.urlsafe_b64encode(b"short").decode(), 0o600, "shorter than 16 bytes"),
])
def test_check_refuses_a_bad_mac_key_file(tmp_path, text, mode, why):
    """The MAC key file is read at load (and -t): a secret others can read, a key that is not
    base64url, or one too short is refused, naming the key file, never printing the key."""
    key_file = _mac_file(tmp_path, text, mode)
    path, proc = _check_cfg(tmp_path, lambda c: _set(c["acme"], "externalAccount", {
        "keyId": EAB_KID, "macKeyFile": key_file}))
    check_error(proc, path, "acme.externalAccount.macKeyFile")
    assert why in proc.stderr and text not in proc.stderr, proc.stderr


def test_check_accepts_the_valid_base(tmp_path):
    path, proc = _check_cfg(tmp_path, lambda c: None)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- the example

def test_example_checks(tmp_path):
    """etc/examples/acme.json passes -t (its certificate files do not exist yet: the
    placeholder warning) once its pebble CA path points at a file."""
    text = (REPO_ROOT / "etc/examples/acme.json").read_text()
    ca = CA()
    (tmp_path / "pebble.minica.pem").write_bytes(ca.pem)
    m = re.search(r'"caFile"\s*:\s*"([^"]+)"', text)
    assert m, "the example names no caFile"
    text = text.replace(m.group(1), str(tmp_path / "pebble.minica.pem"))
    cfg = tmp_path / "acme.json"
    cfg.write_text(text)
    p = subprocess.run([str(BINARY), "-t", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- review regressions

def test_unwritable_chain_keeps_the_old_pair_and_orders_nothing(tmp_path, pebble,
                                                                gateway_factory):
    """A certificate due for renewal whose chain cannot be written (here: a directory where the
    temporary file goes) must not have its key replaced alone: the old key and chain stay a
    pair (a reload and a restart still load them), and no order is sent to the CA for files
    that cannot be written (it would count against the CA's rate limits at every retry)."""
    ca = CA()
    tls_port = free_port()
    old = ca.leaf(tmp_path / "soon.crt", tmp_path / "soon.key", ["blocked.example.test"],
                  valid_from=-85, valid_to=5)
    (tmp_path / "soon.crt.acme-new").mkdir()
    old_key = (tmp_path / "soon.key").read_bytes()
    cert = {"id": "soon", "chain": "soon.crt", "key": "soon.key",
            "names": ["blocked.example.test"], "acme": True}
    gw = gateway_factory(acme_config(tmp_path, pebble["http_port"], tls_port, [cert],
                                     acme_section(pebble["directory"], pebble["ca_file"])))
    line = wait_log(gw, r"\[error\].*acme: certificates\[0\] \(soon\)", ISSUE_TIMEOUT)
    assert "soon.crt" in line, line
    assert (tmp_path / "soon.key").read_bytes() == old_key, "the key was replaced alone"
    assert key_matches(tmp_path / "soon.key", old)
    assert "blocked.example.test" not in pebble["log"].read_text(errors="replace")
    gw.reload()
    assert der(served_chain(tls_port, "blocked.example.test")[0]) == der(old)


class FakeACME:
    """A minimal ACME server over HTTPS (certificate for 127.0.0.1 from a test CA, the gateway's
    acme.caFile) that misbehaves on demand: `directory` (a dict merged over the real one),
    `authz` (the authorization documents an order lists), `chain(csr)` (the certificate
    answer, PEM bytes, for the CSR of the finalize request). Orders are valid at once."""

    def __init__(self, tmp_path, chain=None, directory=None, authz=(), ipv6=False):
        import http.server
        import base64
        import threading
        self.ca = CA("Fake ACME CA")
        self.ca_file = tmp_path / "fake-acme-ca.pem"
        self.ca_file.write_bytes(self.ca.pem)
        self.ca.leaf(tmp_path / "fake-acme.crt", tmp_path / "fake-acme.key", ["localhost"],
                     ips=["127.0.0.1", "::1"])
        self.hosts = []  # the Host header of every request
        self.chain = chain or (lambda csr: self.issue(csr))
        self.authz = list(authz)
        self.requests = []
        fake = self

        def b64d(s):
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, body=b"", ctype="application/json", location=None):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Replay-Nonce", "n%d" % len(fake.requests))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                if location:
                    self.send_header("Location", fake.url + location)
                self.end_headers()
                self.wfile.write(body)

            def parse_request(self):
                ok = super().parse_request()
                if ok:
                    fake.hosts.append(self.headers.get("Host"))
                return ok

            def do_HEAD(self):
                fake.requests.append(("HEAD", self.path))
                self.send(200)

            def do_GET(self):
                fake.requests.append(("GET", self.path))
                if fake.on_directory and fake.on_directory(self):
                    return
                d = {"newNonce": fake.url + "/nonce", "newAccount": fake.url + "/account",
                     "newOrder": fake.url + "/order"}
                d.update(fake.directory)
                self.send(200, d)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                jws = json.loads(self.rfile.read(n))
                payload = json.loads(b64d(jws["payload"])) if jws["payload"] else None
                fake.requests.append(("POST", self.path))
                if self.path in fake.problems:
                    return self.send(*fake.problems[self.path])
                order = {"status": "valid", "finalize": fake.url + "/finalize",
                         "certificate": fake.url + "/cert",
                         "authorizations": [fake.url + "/authz/%d" % i
                                            for i in range(len(fake.authz))]}
                if self.path == "/account":
                    self.send(201, {"status": "valid"}, location="/acct/1")
                elif self.path == "/order":
                    self.send(201, order, location="/order/1")
                elif self.path.startswith("/authz/"):
                    self.send(200, fake.authz[int(self.path.rsplit("/", 1)[1])])
                elif self.path.startswith("/chall"):
                    self.send(200, {"status": "pending"})
                elif self.path == "/finalize":
                    fake.csr = x509.load_der_x509_csr(b64d(payload["csr"]))
                    self.send(200, order, location="/order/1")
                elif self.path == "/order/1":
                    self.send(200, order)
                elif self.path == "/cert" and fake.on_cert:
                    fake.on_cert(self, fake.chain(fake.csr))
                elif self.path == "/cert":
                    self.send(200, fake.chain(fake.csr), "application/pem-certificate-chain")
                else:
                    self.send(404, {"type": "urn:ietf:params:acme:error:malformed"})

        self.directory = dict(directory or {})
        self.on_directory = None  # f(handler): True when it answered
        self.on_cert = None  # f(handler, pem): answers the certificate download
        self.problems = {}  # path: (status, problem document) answered to a POST
        import socket

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.httpd = Server(("::1" if ipv6 else "127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / "fake-acme.crt", tmp_path / "fake-acme.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = ("https://[::1]:%d" if ipv6 else "https://127.0.0.1:%d") % \
            self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def issue(self, csr, names=None, valid_from=-1, valid_to=90, key=None):
        """A leaf for the CSR's key (or key) and names (default: the CSR's), PEM."""
        if names is None:
            names = csr.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        now = datetime.datetime.utcnow()
        cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
                .issuer_name(self.ca.cert.subject)
                .public_key(key or csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + valid_from * DAY).not_valid_after(now + valid_to * DAY)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               False)
                .sign(self.ca.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_acme(tmp_path):
    made = []

    def factory(**kw):
        made.append(FakeACME(tmp_path, **kw))
        return made[-1]
    yield factory
    for f in made:
        f.close()


def _fake_gateway(tmp_path, gateway_factory, fake, names=("fake.example.test",), binary=None):
    tls_port = free_port()
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": list(names),
            "acme": True}
    gw = gateway_factory(acme_config(tmp_path, free_port(), tls_port, [cert],
                                     acme_section(fake.url + "/dir", str(fake.ca_file))),
                         binary=binary)
    return gw, tls_port


def test_fake_acme_issues(tmp_path, fake_acme, gateway_factory):
    """The fake ACME server itself: a well-behaved answer is written and served."""
    fake = fake_acme()
    gw, tls_port = _fake_gateway(tmp_path, gateway_factory, fake)
    wait_log(gw, r"acme: certificates\[0\] \(site\): issued by", ISSUE_TIMEOUT)
    leaf = wait_issued(gw, tls_port, "fake.example.test")[0]
    assert key_matches(tmp_path / "site.key", leaf)


def _garbage_intermediate(fake):
    return lambda csr: fake.issue(csr) + b"-----BEGIN CERTIFICATE-----\nAAAA\n" \
                                         b"-----END CERTIFICATE-----\n"


def _expired_intermediate(fake):
    return lambda csr: fake.issue(csr) + fake.issue(csr, valid_from=-30, valid_to=-1)


def _future_leaf(fake):
    return lambda csr: fake.issue(csr, valid_from=1, valid_to=90)


def _wrong_key(fake):
    return lambda csr: fake.issue(csr, key=ec.generate_private_key(ec.SECP256R1()).public_key())


def _wrong_names(fake):
    return lambda csr: fake.issue(csr, names=["other.example.test"])


@pytest.mark.parametrize("bad,why", [
    (_garbage_intermediate, "malformed"),
    (_expired_intermediate, "expired"),
    (_future_leaf, "not valid before"),
    (_wrong_key, "does not match the key"),
    (_wrong_names, "does not cover fake.example.test"),
])
def test_a_chain_the_gateway_would_refuse_is_not_written(tmp_path, fake_acme, gateway_factory,
                                                         bad, why):
    """A certificate answer that the TLS loader would refuse at the next reload or start
    (a malformed or expired certificate in the chain, a leaf not valid yet, another key,
    other names) is refused by the client: nothing written, the placeholder stays, the gateway
    still restarts. Before: the chain was written, the reload failed, a restart refused to
    start, and fg_acme_due saw a valid leaf and never replaced it."""
    fake = fake_acme()
    fake.chain = bad(fake)
    gw, tls_port = _fake_gateway(tmp_path, gateway_factory, fake)
    line = wait_log(gw, r"\[error\].*acme: certificates\[0\] \(site\)", ISSUE_TIMEOUT)
    assert why in line, line
    assert not (tmp_path / "site.crt").exists() and not (tmp_path / "site.key").exists()
    assert self_signed(served_chain(tls_port, "fake.example.test")[0])


@pytest.mark.parametrize("token", ["../../escape", "a/b", "x" * 10240, ""])
def test_hostile_challenge_tokens_write_nothing(tmp_path, fake_acme, gateway_factory, token):
    """Tokens that are not base64url (RFC 8555 8.3) are refused before any file is written."""
    authz = {"status": "pending", "identifier": {"type": "dns", "value": "fake.example.test"},
             "challenges": [{"type": "http-01", "url": "PLACEHOLDER", "token": token}]}
    fake = fake_acme(authz=[authz])
    authz["challenges"][0]["url"] = fake.url + "/chall/0"
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake)
    line = wait_log(gw, r"\[error\].*acme: certificates\[0\]", ISSUE_TIMEOUT)
    assert "no usable http-01 challenge" in line, line
    assert not (tmp_path / "escape").exists()
    left = sorted(p.name for p in (tmp_path / "acme" / "challenges").iterdir())
    assert left == [], left
    assert ("POST", "/chall/0") not in fake.requests


@pytest.mark.parametrize("key", ["newNonce", "newOrder"])
def test_directory_urls_without_tls_are_not_followed(tmp_path, fake_acme, gateway_factory, key):
    """A directory that points elsewhere over plain http:// (RFC 8555 6.1: HTTPS only)."""
    fake = fake_acme(directory={key: "http://127.0.0.1:%d/x" % closed_port()})
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake)
    line = wait_log(gw, r"\[error\].*acme: ", ISSUE_TIMEOUT)
    assert "URL: http://" in line, line


def test_a_reload_during_a_check_is_checked_when_the_check_ends(tmp_path, fake_acme,
                                                                 gateway_factory):
    """A reload that lands while a check runs (the child has the old configuration) gets its
    own check once that one ends, not only after checkInterval (or 5 minutes after a
    failure): here the running check fails slowly, the reload adds a name."""
    fake = fake_acme()
    first = []

    def slow_failure(h):
        if first:
            return False
        first.append(1)
        time.sleep(3)
        h.send(503, {"type": "urn:ietf:params:acme:error:serverInternal"})
        return True
    fake.on_directory = slow_failure
    gw, tls_port = _fake_gateway(tmp_path, gateway_factory, fake)
    deadline = time.monotonic() + 10
    while not first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first, "no check started\n" + acme_lines(gw)
    cfg = json.loads(gw.config_path.read_text())
    cfg["certificates"][0]["names"].append("more.fake.example.test")
    gw.reload(cfg)
    wait_log(gw, r"\[error\].*acme: directory", 10)
    wait_log(gw, r"acme: certificates\[0\] \(site\): issued by", 15)
    leaf = wait_issued(gw, tls_port, "more.fake.example.test")[0]
    assert sorted(sans(leaf)) == ["fake.example.test", "more.fake.example.test"]


def test_a_stalled_response_is_a_timeout_not_its_end(tmp_path, fake_acme, gateway_factory,
                                                      monkeypatch):
    """A certificate answer without Content-Length (its end is the connection's) that stalls
    after the leaf: the receive timeout (30 s; 3 s in the test build, FG_TEST_ACME_TIMEOUT)
    fails the download instead of taking what came as the whole chain (before: the leaf alone
    was written, its intermediates lost)."""
    fake = fake_acme()

    def stall(h, pem):
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/pem-certificate-chain\r\n"
                      b"Replay-Nonce: x\r\nConnection: close\r\n\r\n" + pem)
        h.wfile.flush()
        time.sleep(10)
        h.close_connection = True
    fake.on_cert = stall
    # the test build's FG_TEST_ACME_TIMEOUT: a 3 s receive timeout instead of 30 s
    from conftest import TEST_BINARY
    monkeypatch.setenv("FG_TEST_ACME_TIMEOUT", "3")
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake, binary=TEST_BINARY)
    line = wait_log(gw, r"\[error\].*acme: certificates\[0\] \(site\)", 20)
    assert "timed out" in line, line
    assert not (tmp_path / "site.crt").exists()


def test_challenge_endpoint_serves_only_regular_files(tmp_path, gateway_factory):
    """A FIFO or a directory under a token's name in challenges/ (a careless operator, a
    shared challenges directory on a network filesystem): 404 at once. Before: open() of the
    FIFO blocked the worker, and every connection it served with it."""
    cert = {"id": "site", "chain": "site.crt", "key": "site.key", "names": NAMES, "acme": True}
    cfg = acme_config(tmp_path, free_port(), free_port(), [cert],
                      acme_section("https://127.0.0.1:%d/dir" % closed_port()))
    challenges = tmp_path / "acme" / "challenges"
    challenges.mkdir(parents=True)
    os.mkfifo(challenges / "FifoToken_0123456789")
    (challenges / "DirToken_0123456789").mkdir()
    gw = gateway_factory(cfg)
    for tok in ("FifoToken_0123456789", "DirToken_0123456789"):
        st, _, _ = http_request("GET", gw.url(CHALLENGE + tok), timeout=5)
        assert st == 404, (tok, st)
    assert http_request("GET", gw.url("/x"), timeout=5)[2] == b"hello"


def test_an_ipv6_literal_directory_gets_a_valid_host_header(tmp_path, fake_acme,
                                                           gateway_factory):
    """A CA at https://[::1]:PORT/dir: Host is "[::1]:PORT" (RFC 9110 7.2 with RFC 3986's
    IP-literal); before: "::1:PORT", which a strict server (Go's, pebble's, Boulder's) answers
    with 400."""
    fake = fake_acme(ipv6=True)
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake)
    wait_log(gw, r"acme: certificates\[0\] \(site\): issued by", ISSUE_TIMEOUT)
    port = fake.httpd.server_address[1]
    assert fake.hosts and set(fake.hosts) == {"[::1]:%d" % port}, fake.hosts


def test_urls_with_control_characters_are_refused(tmp_path, fake_acme, gateway_factory):
    """A URL with CR LF (from the CA's JSON, here the directory's newOrder) would split the
    request line into extra header lines: the client refuses the URL instead of sending it."""
    fake = fake_acme()
    fake.directory["newOrder"] = fake.url + "/order\r\nX-Injected: 1"
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake)
    wait_log(gw, r"\[error\].*acme: ", ISSUE_TIMEOUT)
    wait_log(gw, r": URL: ", 5)  # the line goes on after the URL's CR LF
    assert "signal" not in acme_lines(gw), acme_lines(gw)
    assert not any(p.startswith("/order") for _, p in fake.requests), fake.requests



def test_a_key_that_does_not_match_its_chain_is_due(tmp_path, fake_acme, gateway_factory):
    """A key file that no longer matches the chain (a stop between the two renames, a key
    copied by hand): the next reload or start would refuse the pair, so the check orders a new
    one instead of finding the certificate valid (before: not due, never repaired)."""
    fake = fake_acme()
    ca = CA()
    ca.leaf(tmp_path / "site.crt", tmp_path / "site.key", ["fake.example.test"])
    gw, tls_port = _fake_gateway(tmp_path, gateway_factory, fake)
    time.sleep(2)  # the first check: nothing due
    assert not any(m == "POST" for m, _ in fake.requests), fake.requests
    (tmp_path / "site.key").write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    gw.status("acme check")
    wait_log(gw, r"acme: certificates\[0\] \(site\): ordering: .*does not match", 10)
    wait_log(gw, r"acme: certificates\[0\] \(site\): issued by", ISSUE_TIMEOUT)
    leaf = file_leaf(tmp_path / "site.crt")
    assert key_matches(tmp_path / "site.key", leaf)
    deadline = time.monotonic() + 10
    while der(served_chain(tls_port, "fake.example.test")[0]) != der(leaf):
        assert time.monotonic() < deadline, "the new pair is not served\n" + acme_lines(gw)
        time.sleep(0.3)


def test_a_ca_cannot_write_lines_into_the_error_log(tmp_path, fake_acme, gateway_factory):
    """A problem document's detail with a newline (RFC 8555 6.7: text of the CA's choosing)
    reaches the error log escaped, on the one line of the failure: it cannot forge lines."""
    fake = fake_acme()
    fake.problems["/account"] = (403, {
        "type": "urn:ietf:params:acme:error:unauthorized",
        "detail": "no\n2026-01-01T00:00:00.000 [notice] 1 (acme): acme: FORGED"})
    gw, _ = _fake_gateway(tmp_path, gateway_factory, fake)
    line = wait_log(gw, r"\[error\].*acme: newAccount: HTTP 403", ISSUE_TIMEOUT)
    assert "FORGED" in line, line
    assert not any(l.startswith("2026-01-01") for l in gw.error_log().splitlines())
