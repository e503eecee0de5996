"""The admin API (docs/admin.md): authentication, CRUD on every resource kind with the change
visible in traffic after the reload, validation, ETag/If-Match, the state file's crash safety,
and the refusal of anonymous writes on a non-loopback listener."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (BINARY, base_config, free_port, http_get, http_request,
                      recv_until_close)

TOKEN = "s3cret-admin-token-0123456789"


def admin_config(tmp_path, port, aport, **admin):
    (Path(tmp_path) / "token").write_text(TOKEN + "\n")
    a = {"listen": "127.0.0.1:%d" % aport, "tokenFile": "token", "stateFile": "state.json"}
    a.update(admin)
    cfg = base_config(tmp_path, port, admin=a)
    return cfg


class Api:
    def __init__(self, aport, token=TOKEN, gw=None):
        self.base = "http://127.0.0.1:%d" % aport
        self.token = token
        self.gw = gw

    def call(self, method, path, body=None, if_match=None, token="default", timeout=15):
        headers = {}
        tok = self.token if token == "default" else token
        if tok:
            headers["Authorization"] = "Bearer " + tok
        if if_match:
            headers["If-Match"] = if_match
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        st, hdrs, raw = http_request(method, self.base + path, data, headers, timeout=timeout)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw
        if self.gw is not None and st < 300 and isinstance(doc, dict) and "reload" in doc:
            # the answer comes once the new generation serves; retiring workers close their
            # listeners a moment later
            self.gw.wait_old_generations_drained(time.monotonic() + 10)
        return st, hdrs, doc

    def etag(self, path):
        st, hdrs, _ = self.call("GET", path)
        assert st == 200, path
        return hdrs["etag"]

    def write(self, method, path, body=None, tag_path=None):
        """A write with the current ETag of tag_path (the document by default)."""
        tag = self.etag(tag_path or "/api/state")
        return self.call(method, path, body, if_match=tag)


@pytest.fixture
def admin_gw(tmp_path, gateway_factory):
    port, aport = free_port(), free_port()
    gw = gateway_factory(admin_config(tmp_path, port, aport))
    return gw, Api(aport, gw=gw), port


def direct(rid, path, body):
    return {"id": rid, "match": {"path": path},
            "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": body}}


# ---- authentication ----

def http_get_auth(url):
    st, _, body = http_request("GET", url, headers={"Authorization": "Bearer " + TOKEN})
    return st, body


def test_auth_no_token_wrong_token_and_right_token(admin_gw):
    gw, api, _ = admin_gw
    st, hdrs, _ = api.call("GET", "/api/routes", token=None)
    assert st == 401 and hdrs["www-authenticate"].startswith("Bearer")
    st, _, _ = api.call("GET", "/api/routes", token=TOKEN + "x")
    assert st == 401
    st, _, _ = api.call("GET", "/api/routes", token=TOKEN[:-1])
    assert st == 401
    st, _, doc = api.call("GET", "/api/routes")
    assert st == 200 and [r["id"] for r in doc["items"]] == ["default"]
    # writes too: a wrong token changes nothing
    st, _, _ = api.call("POST", "/api/routes", direct("x", "/x", "x"), if_match="*",
                        token="wrong-token-wrong-token")
    assert st == 401
    assert not (gw.tmp / "state.json").exists()
    # /metrics needs the token unless anonymousMetrics
    assert api.call("GET", "/metrics", token=None)[0] == 401
    st, body = http_get_auth(api.base + "/metrics")
    assert st == 200 and b"fastgateway_process_workers" in body


def test_anonymous_metrics(tmp_path, gateway_factory):
    port, aport = free_port(), free_port()
    gateway_factory(admin_config(tmp_path, port, aport, anonymousMetrics=True))
    st, body = http_get("http://127.0.0.1:%d/metrics" % aport)
    assert st == 200 and b"fastgateway_process_workers" in body
    assert http_get("http://127.0.0.1:%d/api/status" % aport)[0] == 401


def test_anonymous_writes_on_loopback(tmp_path, gateway_factory):
    port, aport = free_port(), free_port()
    gw = gateway_factory(admin_config(tmp_path, port, aport, anonymousWrites=True))
    api = Api(aport, token=None, gw=gw)
    st, _, doc = api.write("POST", "/api/routes", direct("anon", "/anon", "anon"))
    assert st == 201, doc
    assert http_get("http://127.0.0.1:%d/anon" % port) == (200, b"anon")


def run_t(tmp_path, cfg):
    path = Path(tmp_path) / "t.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=10)


def test_anonymous_writes_refused_off_loopback(tmp_path):
    cfg = admin_config(tmp_path, free_port(), 9901, anonymousWrites=True)
    cfg["admin"]["listen"] = "0.0.0.0:%d" % free_port()
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1
    assert "admin.anonymousWrites: allowed only on a loopback listen address" in proc.stderr
    cfg["admin"]["listen"] = "127.0.0.2:%d" % free_port()
    assert run_t(tmp_path, cfg).returncode == 0


def test_token_file_checked_by_t(tmp_path):
    cfg = admin_config(tmp_path, free_port(), free_port())
    cfg["admin"]["tokenFile"] = "missing-token"
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1 and "admin.tokenFile: cannot read" in proc.stderr
    (Path(tmp_path) / "short").write_text("abc\n")
    cfg["admin"]["tokenFile"] = "short"
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1 and "16 bytes or more" in proc.stderr


# ---- resources ----

def test_routes_crud_visible_in_traffic(admin_gw):
    gw, api, port = admin_gw
    url = "http://127.0.0.1:%d" % port
    st, hdrs, doc = api.write("POST", "/api/routes", direct("r1", "/r1", "one"))
    assert st == 201 and doc["reload"]["result"] == "ok", doc
    assert http_get(url + "/r1") == (200, b"one")
    st, hdrs, doc = api.call("GET", "/api/routes/r1")
    assert st == 200 and doc["direct"]["body"] == "one"
    tag = hdrs["etag"]
    st, hdrs, doc = api.call("PUT", "/api/routes/r1", direct("r1", "/r1", "two"), if_match=tag)
    assert st == 200, doc
    assert http_get(url + "/r1") == (200, b"two")
    # the hand-written file is never touched; the state file holds the change
    assert json.loads(gw.config_path.read_text())["routes"][0]["id"] == "default"
    st, _, doc = api.call("DELETE", "/api/routes/default", if_match=api.etag("/api/routes/default"))
    assert st == 200, doc
    assert http_get(url + "/other")[0] == 404
    state = json.loads((gw.tmp / "state.json").read_text())
    assert state["deleted"]["routes"] == ["default"]
    # re-creating a deleted id lifts its tombstone
    st, _, doc = api.write("POST", "/api/routes", direct("default", "/{**c}", "back"))
    assert st == 201, doc
    assert http_get(url + "/other") == (200, b"back")
    assert "default" not in json.loads((gw.tmp / "state.json").read_text())["deleted"]["routes"]
    assert api.call("GET", "/api/routes/nope")[0] == 404


def test_clusters_destinations_state(admin_gw, upstream_factory):
    gw, api, port = admin_gw
    up1, up2 = upstream_factory(), upstream_factory()
    cl = {"id": "c1", "destinations": [{"id": "d1", "address": up1.url}]}
    assert api.write("POST", "/api/clusters", cl)[0] == 201
    route = {"id": "p", "match": {"path": "/p/{**r}"}, "clusterId": "c1"}
    assert api.write("POST", "/api/routes", route)[0] == 201
    st, body = http_get("http://127.0.0.1:%d/p/x" % port)
    assert st == 200
    st, _, doc = api.write("POST", "/api/clusters/c1/destinations",
                           {"id": "d2", "address": up2.url, "weight": 3})
    assert st == 201, doc
    st, _, doc = api.call("GET", "/api/clusters/c1/destinations")
    assert [d["id"] for d in doc["items"]] == ["d1", "d2"]
    st, _, doc = api.call("PUT", "/api/clusters/c1/destinations/d1/state", {"state": "maint"})
    assert st == 200, doc
    st, _, doc = api.call("GET", "/api/health")
    d1 = [d for c in doc["clusters"] if c["id"] == "c1" for d in c["destinations"]
          if d["id"] == "d1"]
    assert d1 and d1[0]["admin"] == "maint", doc
    # with d1 in maintenance every request goes to the destination the API added
    for _ in range(4):
        st, hdrs, _ = http_request("GET", "http://127.0.0.1:%d/p/x" % port)
        assert st == 200 and hdrs["x-upstream"] == str(up2.port)
    st, _, doc = api.call("PUT", "/api/clusters/c1/destinations/d1/state", {"state": "bogus"})
    assert st == 400
    tag = api.etag("/api/clusters/c1/destinations/d2")
    st, _, doc = api.call("DELETE", "/api/clusters/c1/destinations/d2", if_match=tag)
    assert st == 200, doc
    st, _, doc = api.call("GET", "/api/clusters/c1")
    assert [d["id"] for d in doc["destinations"]] == ["d1"]
    assert api.call("PUT", "/api/clusters/c1/destinations/d1/state", {"state": "ready"})[0] == 200
    st, hdrs, _ = http_request("GET", "http://127.0.0.1:%d/p/x" % port)
    assert st == 200 and hdrs["x-upstream"] == str(up1.port)
    # a cluster a route still uses cannot go: the loader names the reference
    st, _, doc = api.write("DELETE", "/api/clusters/c1")
    assert st == 400 and "clusterId" in doc["error"], doc


def test_acl_entries_and_ratelimits(admin_gw):
    gw, api, port = admin_gw
    url = "http://127.0.0.1:%d/" % port
    acl = {"id": "deny", "type": "blacklist", "entries": ["192.0.2.1"]}
    assert api.write("POST", "/api/accessControl", acl)[0] == 201
    rl = {"id": "rl", "scope": "Global", "maxRequests": 2, "window": "1m"}
    assert api.write("POST", "/api/rateLimits", rl)[0] == 201
    st, hdrs, doc = api.call("GET", "/api/routes/default")
    doc["accessControl"] = ["deny"]
    doc["rateLimits"] = ["rl"]
    st, _, out = api.call("PUT", "/api/routes/default", doc, if_match=hdrs["etag"])
    assert st == 200, out
    assert http_get(url)[0] == 200
    st, _, out = api.write("POST", "/api/accessControl/deny/entries", {"entry": "127.0.0.1"},
                           tag_path="/api/accessControl/deny")
    assert st == 201, out
    assert http_get(url)[0] == 403
    st, _, doc = api.call("GET", "/api/accessControl/deny/entries")
    assert doc["items"] == ["192.0.2.1", "127.0.0.1"]
    st, _, out = api.write("DELETE", "/api/accessControl/deny/entries/127.0.0.1",
                           tag_path="/api/accessControl/deny")
    assert st == 200, out
    # the rate limit of 2 a minute now answers 429 (the rule is fresh after each reload)
    codes = [http_get(url)[0] for _ in range(4)]
    assert 429 in codes and codes[0] == 200, codes
    st, _, doc = api.call("GET", "/api/rateLimits/rl")
    assert st == 200 and doc["maxRequests"] == 2


def test_acl_dynamic_block(admin_gw):
    gw, api, port = admin_gw
    acl = {"id": "deny", "type": "blacklist"}
    assert api.write("POST", "/api/accessControl", acl)[0] == 201
    cfg = api.call("GET", "/api/routes/default")
    doc, tag = cfg[2], cfg[1]["etag"]
    doc["accessControl"] = ["deny"]
    assert api.call("PUT", "/api/routes/default", doc, if_match=tag)[0] == 200
    url = "http://127.0.0.1:%d/" % port
    assert http_get(url)[0] == 200
    st, _, out = api.call("POST", "/api/accessControl/deny/dynamic", {"entry": "127.0.0.1"})
    assert st == 200, out
    assert http_get(url)[0] == 403
    st, _, out = api.call("DELETE", "/api/accessControl/deny/dynamic/127.0.0.1")
    assert st == 200, out
    assert http_get(url)[0] == 200


def test_certificates(admin_gw):
    gw, api, port = admin_gw
    key, crt = gw.tmp / "k.pem", gw.tmp / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "30", "-subj", "/CN=admin.test",
                    "-addext", "subjectAltName=DNS:admin.test"], check=True,
                   capture_output=True)
    st, _, doc = api.write("POST", "/api/certificates", {"id": "c", "chain": str(crt),
                                                         "key": str(key)})
    assert st == 201, doc
    st, _, doc = api.call("GET", "/api/certificates/c")
    assert st == 200 and doc["chain"] == str(crt)
    # a certificate whose key file does not exist is refused by the loader
    st, _, doc = api.write("POST", "/api/certificates", {"id": "bad", "chain": str(crt),
                                                         "key": str(gw.tmp / "none.pem")})
    assert st == 400 and "certificates[1].key" in doc["error"], doc


# ---- validation, preconditions ----

def test_invalid_change_400_with_path(admin_gw):
    gw, api, _ = admin_gw
    route = {"id": "bad", "match": {"path": "/b"}, "clusterId": "nope"}
    st, _, doc = api.write("POST", "/api/routes", route)
    assert st == 400
    assert 'routes[1].clusterId: unknown cluster "nope"' in doc["error"]
    st, _, doc = api.write("POST", "/api/routes", {"id": "t", "match": {"path": "/t"},
                                                   "direct": {"status": 99}})
    assert st == 400 and "routes[1].direct.status" in doc["error"], doc
    assert not (gw.tmp / "state.json").exists()
    st, _, doc = api.call("POST", "/api/routes", "not an object", if_match="*")
    assert st == 400
    st, _, doc = api.call("PUT", "/api/routes/a", direct("b", "/a", "x"), if_match="*")
    assert st == 400 and "differs" in doc["error"]


def test_if_match_required_and_stale(admin_gw):
    gw, api, _ = admin_gw
    st, _, _ = api.call("POST", "/api/routes", direct("a", "/a", "a"))
    assert st == 428
    st, _, _ = api.call("POST", "/api/routes", direct("a", "/a", "a"), if_match='"0"')
    assert st == 412
    tag = api.etag("/api/routes/default")
    assert api.call("GET", "/api/routes/default")[1]["etag"] == tag
    st, _, _ = api.call("PUT", "/api/routes/default", direct("default", "/{**c}", "v2"),
                        if_match=tag)
    assert st == 200
    assert api.etag("/api/routes/default") != tag
    st, _, _ = api.call("PUT", "/api/routes/default", direct("default", "/{**c}", "v3"),
                        if_match=tag)
    assert st == 412


def test_concurrent_edits_one_412(admin_gw):
    gw, api, port = admin_gw
    tag = api.etag("/api/routes/default")
    results = []

    def edit(body):
        results.append(api.call("PUT", "/api/routes/default",
                                direct("default", "/{**c}", body), if_match=tag)[0])

    threads = [threading.Thread(target=edit, args=(b,)) for b in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412]
    assert http_get("http://127.0.0.1:%d/" % port)[1] in (b"one", b"two")


# ---- persistence ----

def test_state_file_survives_sigkill_during_writes(tmp_path, gateway_factory):
    port, aport = free_port(), free_port()
    cfg = admin_config(tmp_path, port, aport)
    cfg["workers"] = 1
    state = Path(tmp_path) / "state.json"
    seen = 0
    for round_ in range(3):
        gw = gateway_factory(cfg)
        api = Api(aport)
        stop = threading.Event()

        def burst():
            i = 0
            while not stop.is_set():
                try:
                    tag = api.call("GET", "/api/state", timeout=3)[1]["etag"]
                    api.call("PUT", "/api/routes/r%d" % (i % 4),
                             direct("r%d" % (i % 4), "/r%d" % (i % 4), "v%d-%d" % (round_, i)),
                             if_match=tag, timeout=3)
                except (OSError, KeyError):
                    pass
                i += 1

        t = threading.Thread(target=burst)
        t.start()
        time.sleep(0.4 + 0.2 * round_)
        os.kill(gw.pid, signal.SIGKILL)
        stop.set()
        t.join()
        gw.cleanup()
        if state.exists():
            doc = json.loads(state.read_text())  # old or new, never torn
            assert {r["id"] for r in doc["routes"]} <= {"r0", "r1", "r2", "r3"}
            seen += 1
    assert seen >= 1


def test_state_file_merge_rule_and_t(tmp_path):
    """The loader merges the state file: entries replace by id or are appended; deleted ids
    go; a torn state file is a load error naming it."""
    cfg = admin_config(tmp_path, free_port(), free_port())
    state = Path(tmp_path) / "state.json"
    state.write_text(json.dumps({"routes": [direct("default", "/{**c}", "api"),
                                            direct("n", "/n", "n")]}))
    path = Path(tmp_path) / "t.json"
    path.write_text(json.dumps(cfg))
    dump = subprocess.run([str(BINARY), "-T", "-c", str(path)], capture_output=True, text=True,
                          timeout=10)
    assert dump.returncode == 0, dump.stderr
    routes = json.loads(dump.stdout)["routes"]
    assert [r["id"] for r in routes] == ["default", "n"]
    state.write_text('{"routes": [')
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1 and "state.json:1:" in proc.stderr
    state.write_text(json.dumps({"servers": []}))
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1 and 'unknown key "servers"' in proc.stderr


def test_reload_status_and_stats(admin_gw):
    gw, api, port = admin_gw
    http_get("http://127.0.0.1:%d/" % port)
    st, _, doc = api.call("POST", "/api/reload")
    assert st == 200 and doc["reload"]["result"] == "ok"
    st, _, doc = api.call("GET", "/api/status")
    assert st == 200 and doc["generation"] == 2
    st, _, doc = api.call("GET", "/api/stats")
    assert st == 200 and isinstance(doc, dict)
    st, _, doc = api.call("GET", "/api/reloads")
    assert [r["generation"] for r in doc["reloads"]] == [2]
    # the certificate view answers; /api/certificates stays the configuration collection
    st, _, doc = api.call("GET", "/api/certificateStatus")
    assert st == 200 and doc["acme"] is None and isinstance(doc["certificates"], list), doc
    # no acme section: the check is refused; only POST starts one
    st, _, doc = api.call("POST", "/api/acme/check")
    assert st == 400 and "acme" in doc["error"], doc
    assert api.call("GET", "/api/acme/check")[0] == 405
    # no ocspUpdate certificate: the update is refused the same way
    st, _, doc = api.call("POST", "/api/ocsp/update")
    assert st == 400 and "ocspUpdate" in doc["error"], doc
    assert api.call("GET", "/api/ocsp/update")[0] == 405
    assert doc_ocsp_none(api)


def doc_ocsp_none(api):
    st, _, doc = api.call("GET", "/api/certificateStatus")
    return st == 200 and doc["ocspUpdate"] is None


def test_bounds_and_cross_origin(admin_gw):
    gw, api, _ = admin_gw
    with socket.create_connection(("127.0.0.1", int(api.base.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /api/routes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                  TOKEN.encode() + b"\r\nContent-Length: 2000000\r\n\r\n")
        assert recv_until_close(s).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", int(api.base.rsplit(":", 1)[1]))) as s:
        s.sendall(b"GET /api/status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert recv_until_close(s).startswith(b"HTTP/1.1 431 ")
    st, _, _ = http_request("POST", api.base + "/api/reload", None,
                            {"Authorization": "Bearer " + TOKEN,
                             "Origin": "http://evil.example", "Content-Length": "0"})
    assert st == 403


# ---- TLS and client certificates ----

def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / (name + ".key")),
            "-out", str(d / (name + ".crt")), "-days", "30", "-subj", "/CN=" + name)


def make_leaf(d, ca, name, san=None):
    key, csr, crt = d / (name + ".key"), d / (name + ".csr"), d / (name + ".crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=" + name)
    ext = d / (name + ".ext")
    ext.write_text("subjectAltName=DNS:%s\n" % (san or name))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / (ca + ".crt")), "-CAkey",
            str(d / (ca + ".key")), "-CAcreateserial", "-out", str(crt), "-days", "30",
            "-extfile", str(ext))
    return crt, key


def curl_tls(url, ca, token=None, cert=None):
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
           "--cacert", str(ca), "--resolve", "admin.test:%s:127.0.0.1" % url.rsplit(":", 1)[1]
           .split("/")[0], url.replace("127.0.0.1", "admin.test")]
    if token:
        cmd += ["-H", "Authorization: Bearer " + token]
    if cert:
        cmd += ["--cert", str(cert[0]), "--key", str(cert[1])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout


def test_tls_listener_and_client_certificate(tmp_path, gateway_factory):
    d = Path(tmp_path)
    make_ca(d, "ca")
    make_ca(d, "otherca")
    srv = make_leaf(d, "ca", "admin.test")
    client = make_leaf(d, "ca", "operator")
    stranger = make_leaf(d, "otherca", "stranger")
    port, aport = free_port(), free_port()
    cfg = admin_config(tmp_path, port, aport,
                       tls={"certificate": "adm", "clientCaFile": str(d / "ca.crt")})
    cfg["certificates"] = [{"id": "adm", "chain": str(srv[0]), "key": str(srv[1])}]
    gateway_factory(cfg)
    url = "https://127.0.0.1:%d/api/status" % aport
    assert curl_tls(url, d / "ca.crt") == "401"
    assert curl_tls(url, d / "ca.crt", token=TOKEN) == "200"
    assert curl_tls(url, d / "ca.crt", cert=client) == "200"
    # a certificate of another CA fails the handshake: no HTTP status at all
    assert curl_tls(url, d / "ca.crt", cert=stranger) in ("000", "401")
    # plain HTTP on the TLS listener gets nothing useful
    with pytest.raises(Exception):
        http_request("GET", "http://127.0.0.1:%d/api/status" % aport, timeout=2)


def test_tls_certificate_must_exist(tmp_path):
    cfg = admin_config(tmp_path, free_port(), free_port(), tls={"certificate": "nope"})
    proc = run_t(tmp_path, cfg)
    assert proc.returncode == 1
    assert 'admin.tls.certificate: unknown certificate "nope"' in proc.stderr


def test_anonymous_access_needs_a_loopback_host(tmp_path, gateway_factory):
    """A page whose DNS name was re-pointed at 127.0.0.1 sends its own Host: refused."""
    port, aport = free_port(), free_port()
    gateway_factory(admin_config(tmp_path, port, aport, anonymousWrites=True))
    base = "http://127.0.0.1:%d/api/status" % aport
    assert http_request("GET", base)[0] == 200
    assert http_request("GET", base, headers={"Host": "localhost:%d" % aport})[0] == 200
    assert http_request("GET", base, headers={"Host": "evil.example:%d" % aport})[0] == 401
    assert http_request("GET", base, headers={"Host": "127.0.0.1.evil.example"})[0] == 401
    # a token still works whatever the Host
    assert http_request("GET", base, headers={"Host": "evil.example",
                                              "Authorization": "Bearer " + TOKEN})[0] == 200
