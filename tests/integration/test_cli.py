"""The command line: --help, --version, exit codes, -T (the effective configuration), what -t
checks beyond the file (log files, pid-file and socket directories) and the warnings it gives
(CIDRs with host bits set, rate limits and access lists attached nowhere), which the master
also writes to the error log at start and on reload."""
import grp
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import BINARY, base_config, free_port

TIMEOUT = 10


def run(args):
    return subprocess.run([str(BINARY)] + args, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def write(tmp_path, cfg, name="fastgateway.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=2))
    return path


def direct(rid, path, **extra):
    r = {"id": rid, "match": {"path": path}, "direct": {"status": 200, "body": "x"}}
    r.update(extra)
    return r


# ---- --help, --version, exit codes ----

def test_help_long_option():
    proc = run(["--help"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for opt in ("-c FILE", "-t", "-T", "-s SIGNAL", "--version", "--help", "exit status"):
        assert opt in proc.stdout, opt


def test_version_names_libraries_built_and_running():
    proc = run(["--version"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "fastgateway 0.1.0"
    for lib in ("libevent", "OpenSSL", "nghttp2", "jansson"):
        hits = [l for l in lines if lib in l]
        assert hits, (lib, proc.stdout)
        assert "built with" in hits[0] and "running with" in hits[0], hits[0]
    assert run(["-v"]).stdout == proc.stdout


@pytest.mark.parametrize("args", [["-x"], ["--nonsense"], ["-c"], ["-t", "extra"],
                                  ["-s", "explode"], ["-t", "-s", "reload"]],
                         ids=["unknown-option", "unknown-long-option", "missing-argument",
                              "extra-argument", "unknown-signal", "test-and-signal"])
def test_usage_error_exits_2(args):
    proc = run(args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip()
    assert proc.stdout == ""


def test_invalid_configuration_exits_1(tmp_path):
    cfg = base_config(tmp_path, free_port(), workers="many")
    proc = run(["-t", "-c", str(write(tmp_path, cfg))])
    assert proc.returncode == 1, proc.stderr


# ---- -T ----

def rich_config(tmp_path):
    """A configuration that uses most sections, each key left at its default somewhere."""
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    routes = [
        {"id": "api", "match": {"path": "/api/{**rest}", "hosts": ["api.example.com"],
                                "methods": ["GET", "POST"],
                                "headers": [{"name": "X-V", "values": ["1"],
                                             "mode": "HeaderPrefix"}],
                                "queryParameters": [{"name": "q", "mode": "Exists"}]},
         "clusterId": "backend", "order": 5, "rateLimits": ["per-ip"],
         "maxRequestBodySize": "1m",
         "transforms": [{"PathRemovePrefix": "/api"},
                        {"RequestHeader": "X-A", "Append": "1"},
                        {"QueryValueParameter": "k", "Set": "v"},
                        {"HttpMethodChange": "put", "Set": "post"},
                        {"RequestHeaderRemove": "Cookie"},
                        {"RequestHeadersCopy": "false"},
                        {"RequestHeaderOriginalHost": True},
                        {"X-Forwarded": "For,Proto", "Action": "Append", "Host": "Set"},
                        {"Forwarded": "for,proto", "ForFormat": "IpAndPort"},
                        {"ResponseHeader": "X-R", "Set": "1", "When": "Always"},
                        {"ResponseHeaderRemove": "Server", "When": "Failure"}],
         "tenantCode": "t1", "metadata": {"serviceName": "svc"}},
        {"id": "files", "match": {"path": "/files/{**p}"}, "static": {"root": str(www)},
         "accessControl": ["office"]},
        {"id": "old", "match": {"path": "/old/{id}"},
         "redirect": {"status": 308, "location": "/new/{id}"}},
        direct("rest", "/{**catchall}"),
    ]
    clusters = [{"id": "backend", "loadBalancingPolicy": "RoundRobin",
                 "destinations": [{"id": "a", "address": "http://127.0.0.1:9/base"},
                                  {"id": "b", "address": "http://127.0.0.1:10", "weight": 3,
                                   "host": "b.internal"}],
                 "healthCheck": {"active": {"interval": "5s", "path": "/health"},
                                 "passive": {"failureRate": 0.5}},
                 "sessionAffinity": {"policy": "Cookie", "cookie": {"maxAge": "1h"}},
                 "failover": {"enabled": True}}]
    cfg = base_config(tmp_path, free_port(), routes=routes, clusters=clusters,
                      rateLimits=[{"id": "per-ip", "maxRequests": 10, "window": "1s"},
                                  {"id": "bucket", "type": "TokenBucket", "scope": "Global",
                                   "maxRequests": 5, "window": "1m", "burst": 2}],
                      accessControl=[{"id": "office", "type": "whitelist",
                                      "entries": ["10.0.0.0/8", "192.168.1.1-192.168.1.9"]}],
                      security={"rateLimits": ["bucket"]},
                      abnormalIp={"threshold": 5, "autoBlock": {"duration": "10m"}})
    cfg["servers"][0].update({"clientIpSource": "X-Forwarded-For",
                              "trustedProxies": ["127.0.0.1"],
                              "timeouts": {"header": "1500ms"}})
    return cfg


def dump(path):
    proc = run(["-T", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr
    assert "configuration is ok" in proc.stderr  # stdout carries only the JSON
    return json.loads(proc.stdout)


def test_dump_fills_in_defaults(tmp_path):
    eff = dump(write(tmp_path, rich_config(tmp_path)))
    srv = eff["servers"][0]
    assert srv["backlog"] == 511
    assert srv["limits"] == {"maxRequestLineSize": 8192, "maxHeaderSize": 32768,
                             "maxHeaders": 100, "maxRequestBodySize": 100 * 1024 * 1024,
                             "maxConnections": 0, "maxConnectionsPerClient": 0}
    assert srv["timeouts"] == {"header": "1500ms", "body": "1m", "keepAlive": "75s",
                               "send": "1m"}
    assert eff["shm"]["size"] == 64 * 1024 * 1024
    assert eff["log"]["accessLogBuffer"] == 65536 and eff["log"]["level"] == "info"
    cl = eff["clusters"][0]
    assert cl["httpRequest"] == {"connectTimeout": "5s", "activityTimeout": "100s"}
    assert cl["healthCheck"]["active"]["timeout"] == "10s"
    assert cl["healthCheck"]["passive"]["failureRate"] == 0.5
    assert cl["failover"] == {"enabled": True, "connectTimeout": "150ms", "budget": "500ms",
                              "allowNonIdempotent": False}
    assert cl["destinations"][0]["weight"] == 1
    files = [r for r in eff["routes"] if r["id"] == "files"][0]
    assert files["static"]["index"] == ["index.html"]
    assert eff["rateLimits"][0]["type"] == "SlidingWindow"
    assert eff["rateLimits"][0]["scope"] == "PerIp"
    assert eff["abnormalIp"]["autoBlock"]["threshold"] == 5
    assert eff["tenantHeader"] == "X-Tenant-Code"


def test_dump_is_a_configuration_that_loads_to_itself(tmp_path):
    """The output of -T loads again, and its own -T is identical: nothing is lost or changed."""
    first = dump(write(tmp_path, rich_config(tmp_path)))
    again = dump(write(tmp_path, first, "effective.json"))
    assert again == first


FULL_DIR = pathlib.Path(__file__).parent / "data" / "full"


def _ocsp_response(certs, crt, out):
    """A good DER OCSP response from certs' CA for the certificate in crt, valid for a day."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    cert = x509.load_pem_x509_certificate(open(crt, "rb").read())
    now = datetime.datetime.now(datetime.timezone.utc)
    resp = (ocsp.OCSPResponseBuilder()
            .add_response(cert=cert, issuer=certs.ca, algorithm=hashes.SHA1(),
                          cert_status=ocsp.OCSPCertStatus.GOOD,
                          this_update=now - datetime.timedelta(hours=1),
                          next_update=now + datetime.timedelta(days=1),
                          revocation_time=None, revocation_reason=None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, certs.ca)
            .sign(certs.ca_key, hashes.SHA256()))
    out.write_bytes(resp.public_bytes(serialization.Encoding.DER))


def full_config(tmp_path):
    """data/full/full_config.json (every key the loader knows; tests/unit/test_config_dump.c
    holds the loader's key lists against it) in tmp_path, with its certificates made here.
    Server "tls" is left out: the binary refuses TLS servers (termination is not wired)."""
    from test_tls_config import Certs, serialization
    shutil.copytree(FULL_DIR, tmp_path, dirs_exist_ok=True)
    certs = Certs(tmp_path)
    certs.leaf("site", "site.test")
    other, _ = certs.leaf("other", "other.test")
    ca_pem = certs.ca.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    # "other" staples an OCSP response: its chain file holds the issuer it is checked against
    with open(other, "ab") as f:
        f.write(ca_pem)
    _ocsp_response(certs, other, tmp_path / "other.ocsp")
    for d in ("run", "logs"):
        (tmp_path / d).mkdir(exist_ok=True)
    # the ACME external account's MAC key: a secret file of its owner's only
    (tmp_path / "eab.key").write_text("a2V5LWZvci10aGUtZnVsbC1jb25maWd1cmF0aW9u\n")
    os.chmod(tmp_path / "eab.key", 0o600)
    cfg = json.loads((tmp_path / "full_config.json").read_text())
    del cfg["servers"][0]["tls"]
    # -T checks that the user reaches the log and run directories: use the one running.
    cfg["user"] = pwd.getpwuid(os.getuid()).pw_name
    cfg["group"] = cfg["statusGroup"] = grp.getgrgid(os.getgid()).gr_name
    # -T binds the listeners: free ports, so that nothing else on the machine interferes
    from conftest import free_port
    for s in cfg["servers"]:
        s["listen"] = "127.0.0.1:%d" % free_port()
    cfg["metrics"]["listen"] = "127.0.0.1:%d" % free_port()
    return cfg


def missing_paths(given, out, path="$"):
    """The JSON paths of `given` (arrays by index) that `out` lacks."""
    if isinstance(given, dict):
        if not isinstance(out, dict):
            return [path]
        return [m for k, v in given.items()
                for m in (missing_paths(v, out[k], path + "." + k) if k in out
                          else [path + "." + k])]
    if isinstance(given, list):
        if not isinstance(out, list):
            return [path]
        return [m for i, v in enumerate(given)
                for m in (missing_paths(v, out[i], "%s[%d]" % (path, i)) if i < len(out)
                          else ["%s[%d]" % (path, i)])]
    return []


def test_dump_of_every_key_keeps_each_and_loads_to_itself(tmp_path):
    cfg = full_config(tmp_path)
    first = dump(write(tmp_path, cfg))
    assert missing_paths(cfg, first) == []
    assert first["servers"][0]["errorPages"]["403"] == {
        "file": str(tmp_path / "404.html"), "contentType": "text/html; charset=utf-8"}
    assert first["errorPages"]["404"] == {"file": str(tmp_path / "404.html")}
    assert first["servers"][1]["redirectHttps"] == {"status": 301, "port": 18443}
    assert first["clusters"][0]["httpClient"]["caFile"] == str(tmp_path / "ca.crt")
    assert first["log"]["accessLogFields"] == cfg["log"]["accessLogFields"]
    again = dump(write(tmp_path, first, "effective.json"))
    assert again == first


def test_dump_refuses_invalid_configuration(tmp_path):
    cfg = base_config(tmp_path, free_port(), routes=[direct("a", "/"), direct("a", "/b")])
    proc = run(["-T", "-c", str(write(tmp_path, cfg))])
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "routes[1].id" in proc.stderr


# ---- -t: what start-up needs ----

def check_fails(tmp_path, cfg, key, why):
    path = write(tmp_path, cfg)
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    line = [l for l in proc.stderr.splitlines() if l.startswith("%s: %s: " % (path, key))]
    assert line, proc.stderr
    assert why in line[0], line[0]
    assert "configuration is ok" not in proc.stdout


def test_error_log_directory_missing(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["log"]["errorLog"] = str(tmp_path / "nodir" / "error.log")
    check_fails(tmp_path, cfg, "log.errorLog", str(tmp_path / "nodir"))


def test_error_log_is_a_directory(tmp_path):
    cfg = base_config(tmp_path, free_port())
    (tmp_path / "logdir").mkdir()
    cfg["log"]["errorLog"] = str(tmp_path / "logdir")
    check_fails(tmp_path, cfg, "log.errorLog", "is a directory")


def test_access_log_directory_missing(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["log"]["accessLog"] = str(tmp_path / "gone" / "access.log")
    check_fails(tmp_path, cfg, "log.accessLog", str(tmp_path / "gone"))


def test_pid_file_directory_missing(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["pidFile"] = str(tmp_path / "run" / "fg.pid")
    check_fails(tmp_path, cfg, "pidFile", str(tmp_path / "run"))


def test_status_socket_directory_missing(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["statusSocket"] = str(tmp_path / "run" / "fg.sock")
    check_fails(tmp_path, cfg, "statusSocket", str(tmp_path / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_error_log_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cfg = base_config(tmp_path, free_port())
    cfg["log"]["errorLog"] = str(ro / "error.log")
    check_fails(tmp_path, cfg, "log.errorLog", "Permission denied")


def _nobody():
    try:
        return pwd.getpwnam("nobody").pw_name
    except KeyError:
        return None


@pytest.mark.skipif(os.geteuid() != 0 or _nobody() is None,
                    reason="checking as the worker user needs root and user nobody")
def test_access_log_unreachable_for_worker_user(tmp_path):
    """As root with `user`, the access log's directory must be reachable by that user: the
    workers open the file after dropping privileges."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    cfg = base_config(tmp_path, free_port(), user="nobody")
    cfg["log"]["accessLog"] = str(private / "access.log")
    check_fails(tmp_path, cfg, "log.accessLog", 'user "nobody" cannot reach')


@pytest.mark.skipif(os.geteuid() != 0 or _nobody() is None,
                    reason="checking as the worker user needs root and user nobody")
def test_access_log_reachable_for_worker_user(tmp_path):
    shared = tempfile.mkdtemp(prefix="fg-cli-")
    try:
        os.chmod(shared, 0o755)
        cfg = base_config(tmp_path, free_port(), user="nobody")
        cfg["log"]["accessLog"] = os.path.join(shared, "access.log")
        proc = run(["-t", "-c", str(write(tmp_path, cfg))])
        assert proc.returncode == 0, proc.stderr
    finally:
        os.rmdir(shared)


# ---- warnings ----

def warned_config(tmp_path):
    cfg = base_config(tmp_path, free_port(),
                      rateLimits=[{"id": "used", "maxRequests": 5, "window": "1s",
                                   "ipPattern": "10.1.2.3/24"},
                                  {"id": "spare", "maxRequests": 5, "window": "1s"}],
                      accessControl=[{"id": "office", "type": "whitelist",
                                      "entries": ["10.66.0.0/16", "10.66.0.1/16",
                                                  "fd00::1/8", "192.168.0.1"]},
                                     {"id": "orphan", "type": "blacklist", "entries": []}])
    cfg["servers"][0]["trustedProxies"] = ["127.0.0.1/8", "172.16.0.0/12"]
    cfg["servers"][0]["rateLimits"] = ["used"]
    cfg["routes"][0]["accessControl"] = ["office"]
    return cfg


EXPECTED_WARNINGS = [
    "rateLimits[0].ipPattern: low address bits of 10.1.2.3/24 are meaningless",
    "accessControl[0].entries[1]: low address bits of 10.66.0.1/16 are meaningless",
    "accessControl[0].entries[2]: low address bits of fd00::1/8 are meaningless",
    "servers[0].trustedProxies[0]: low address bits of 127.0.0.1/8 are meaningless",
    'rateLimits[1]: rate limit "spare" is attached to no route, server or "security" section',
    'accessControl[1]: access-control list "orphan" is attached to no route, server or',
]


def test_warnings_do_not_fail_the_test(tmp_path):
    path = write(tmp_path, warned_config(tmp_path))
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr
    assert "configuration is ok" in proc.stdout
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
    for w in EXPECTED_WARNINGS:
        assert any(("warning: %s: %s" % (path, w)) in l for l in warnings), (w, proc.stderr)
    assert len(warnings) == len(EXPECTED_WARNINGS), proc.stderr
    # well-formed prefixes, single addresses and attached rules and lists are not mentioned
    for quiet in ("10.66.0.0/16", "172.16.0.0/12", "192.168.0.1", '"used"', '"office"'):
        assert quiet not in proc.stderr, quiet


def test_clean_configuration_has_no_warnings(tmp_path):
    proc = run(["-t", "-c", str(write(tmp_path, base_config(tmp_path, free_port())))])
    assert proc.returncode == 0
    assert "warning" not in proc.stderr


def _wait_for(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def test_warnings_in_error_log_at_start_and_reload(tmp_path, gateway_factory):
    cfg = warned_config(tmp_path)
    gw = gateway_factory(cfg)
    assert _wait_for(lambda: "low address bits of 10.66.0.1/16" in gw.error_log()), gw.error_log()
    start_log = gw.error_log()
    for w in EXPECTED_WARNINGS:
        assert w in start_log, w
    assert "[warn]" in [l for l in start_log.splitlines() if "10.66.0.1/16" in l][0]
    gw.reload(cfg)
    assert _wait_for(lambda: gw.error_log().count("low address bits of 10.66.0.1/16") == 2), \
        gw.error_log()
    after = gw.error_log()[len(start_log):]
    for w in EXPECTED_WARNINGS:
        assert w in after, w
