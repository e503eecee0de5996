"""Metrics (docs/metrics.md): counts exact under concurrent load across workers, kept across a
reload for unchanged ids and reset for removed ones, `show stat` (JSON, CSV) and `show metrics`
(Prometheus text, checked by promtool when installed)."""
import http.client
import json
import pathlib
import re
import socket
import shutil
import subprocess
import threading
import time

import pytest

from conftest import BINARY, base_config, free_port, http_get, recv_until_close
from test_tls import certs, s_client, tls_config  # noqa: F401 (certs is a fixture)

THREADS = 8
PER_THREAD = 150
PER_CONN = 15  # requests per keep-alive connection: many connections, spread by SO_REUSEPORT


def proxy_config(tmp_path, port, up, routes=None, workers=2):
    if routes is None:
        routes = ["api", "other"]
    rs = [{"id": r, "match": {"path": "/%s/{**rest}" % r}, "clusterId": "up"} for r in routes]
    rs.append({"id": "st", "match": {"path": "/status/{code}"}, "clusterId": "up"})
    rs.append({"id": "direct", "match": {"path": "/d/{**rest}"},
               "direct": {"status": 404, "body": "no"}})
    clusters = [{"id": "up", "destinations": [{"id": "u1", "address": up.url}]}]
    return base_config(tmp_path, port, routes=rs, clusters=clusters, workers=workers)


def load(port, paths):
    """Every thread sends PER_THREAD requests, cycling through paths, on a new connection every
    PER_CONN requests. Returns (statuses by path, connections opened)."""
    got = {}
    conns = [0]
    lock = threading.Lock()
    errors = []

    def run():
        mine = {}
        opened = 0
        c = None
        try:
            for i in range(PER_THREAD):
                if i % PER_CONN == 0:
                    if c is not None:
                        c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    opened += 1
                path = paths[i % len(paths)]
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                mine.setdefault(path, []).append(r.status)
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            if c is not None:
                c.close()
        with lock:
            for k, v in mine.items():
                got.setdefault(k, []).extend(v)
            conns[0] += opened

    ts = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    return got, conns[0]


def by_id(items):
    return {x["id"]: x for x in items}


def wait_stat(gw, done, timeout=5.0):
    """`show stat` once done(stat) holds: a response can reach the client just before its
    worker counts it. The last answer is returned either way, for the asserts to explain."""
    deadline = time.monotonic() + timeout
    while True:
        stat = gw.status("show stat")
        if done(stat) or time.monotonic() > deadline:
            return stat
        time.sleep(0.05)


def prom_samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_counts_exact_under_concurrent_load(tmp_path, gateway_factory, echo_upstream):
    port = free_port()
    gw = gateway_factory(proxy_config(tmp_path, port, echo_upstream))
    paths = ["/api/a", "/api/b", "/other/x", "/d/nothing", "/status/503"]
    got, nconns = load(port, paths)
    total = THREADS * PER_THREAD
    api_ok = len(got["/api/a"]) + len(got["/api/b"])
    assert set(got["/api/a"] + got["/api/b"] + got["/other/x"]) == {200}
    assert set(got["/d/nothing"]) == {404} and set(got["/status/503"]) == {503}

    def settled(s):
        srv = by_id(s["servers"])["main"]
        return sum(srv["requests"].values()) >= total
    stat = wait_stat(gw, settled)
    srv = by_id(stat["servers"])["main"]
    assert srv["requests"] == {"1xx": 0, "2xx": api_ok + len(got["/other/x"]),
                               "3xx": 0, "4xx": len(got["/d/nothing"]),
                               "5xx": len(got["/status/503"]), "other": 0}
    # the fixture's readiness probes connect too: compare with the workers' own totals
    workers = gw.status("show workers")["workers"]
    assert srv["connections"] == sum(w["connectionsTotal"] for w in workers)
    assert nconns <= srv["connections"] <= nconns + 3
    assert srv["bytesIn"] > 0 and srv["bytesOut"] > 0
    routes = by_id(stat["routes"])
    assert routes["api"]["requests"]["2xx"] == api_ok
    assert routes["st"]["requests"]["5xx"] == len(got["/status/503"])
    assert routes["api"]["latency"]["count"] == api_ok
    assert routes["other"]["requests"]["2xx"] == len(got["/other/x"])
    assert routes["direct"]["requests"]["4xx"] == len(got["/d/nothing"])
    cl = by_id(stat["clusters"])["up"]
    proxied = api_ok + len(got["/other/x"]) + len(got["/status/503"])
    # a pooled connection the destination closed is retried once on a new one: counted as an
    # attempt and a retry, never as a second request
    assert cl["requests"] - cl["retries"] == proxied
    assert cl["responseTime"]["count"] == proxied
    assert cl["inFlight"] == 0 and cl["destinationsUp"] == 1
    dest = by_id(cl["destinations"])["u1"]
    assert dest["requests"] == cl["requests"] and dest["failures"] == 0
    assert dest["up"] is True and dest["admin"] == "ready"
    # the load was spread over both workers, and the sums add their lanes up
    served = [w["requests"] for w in workers]
    assert len([n for n in served if n > 0]) == 2, served
    assert sum(served) == total

    prom = prom_samples(gw.status("show metrics")["text"])
    key = ("fastgateway_route_requests_total", frozenset({("route", "api"), ("code", "2xx")}))
    assert prom[key] == api_ok
    key = ("fastgateway_route_request_duration_seconds_count", frozenset({("route", "api")}))
    assert prom[key] == api_ok
    inf = ("fastgateway_route_request_duration_seconds_bucket",
           frozenset({("route", "api"), ("le", "+Inf")}))
    assert prom[inf] == prom[key]
    key = ("fastgateway_destination_requests_total",
           frozenset({("cluster", "up"), ("destination", "u1")}))
    assert prom[key] == dest["requests"]
    assert prom[("fastgateway_process_workers", frozenset())] == 2


def test_failures_counted_per_destination(tmp_path, gateway_factory, echo_upstream):
    port = free_port()
    dead = free_port()  # nothing listens there: every connect is refused
    cfg = proxy_config(tmp_path, port, echo_upstream)
    cfg["clusters"] = [{"id": "up", "destinations": [
        {"id": "dead", "address": "http://127.0.0.1:%d" % dead}]}]
    gw = gateway_factory(cfg)
    for _ in range(5):
        assert http_get(gw.url("/api/x"))[0] == 502
    stat = wait_stat(gw, lambda s: by_id(s["routes"])["api"]["requests"]["5xx"] >= 5)
    dest = by_id(by_id(stat["clusters"])["up"]["destinations"])["dead"]
    assert dest["requests"] == 5 and dest["failures"] == 5
    assert dest["responseTime"]["count"] == 0
    assert by_id(stat["routes"])["api"]["requests"]["5xx"] == 5


def test_reload_keeps_unchanged_ids_and_resets_removed(tmp_path, gateway_factory,
                                                       echo_upstream):
    port = free_port()
    gw = gateway_factory(proxy_config(tmp_path, port, echo_upstream))
    for _ in range(7):
        assert http_get(gw.url("/api/x"))[0] == 200
    for _ in range(3):
        assert http_get(gw.url("/other/x"))[0] == 200
    wait_stat(gw, lambda s: by_id(s["routes"])["other"]["requests"]["2xx"] >= 3)

    # "other" removed, "third" added, workers changed: "api", the server, cluster and
    # destination keep their figures
    gw.reload(proxy_config(tmp_path, port, echo_upstream, routes=["api", "third"], workers=3))
    stat = gw.status("show stat")
    routes = by_id(stat["routes"])
    assert "other" not in routes
    assert routes["api"]["requests"]["2xx"] == 7
    assert routes["third"]["requests"]["2xx"] == 0
    assert sum(by_id(stat["servers"])["main"]["requests"].values()) == 10
    cl = by_id(stat["clusters"])["up"]
    assert cl["requests"] - cl["retries"] == 10
    assert gw.status("show info")["reloads"] == 1

    # "other" comes back: it starts from zero, it does not resume its old figures
    gw.reload(proxy_config(tmp_path, port, echo_upstream, routes=["api", "other"]))
    routes = by_id(gw.status("show stat")["routes"])
    assert routes["other"]["requests"]["2xx"] == 0
    assert routes["api"]["requests"]["2xx"] == 7
    prom = prom_samples(gw.status("show metrics")["text"])
    assert prom[("fastgateway_process_reloads_total", frozenset())] == 2
    assert prom[("fastgateway_process_last_reload_success", frozenset())] == 1
    assert prom[("fastgateway_process_last_reload_timestamp_seconds", frozenset())] > 0


def test_show_stat_csv(tmp_path, gateway_factory, echo_upstream):
    port = free_port()
    gw = gateway_factory(proxy_config(tmp_path, port, echo_upstream))
    for _ in range(4):
        assert http_get(gw.url("/api/x"))[0] == 200
    wait_stat(gw, lambda s: by_id(s["routes"])["api"]["requests"]["2xx"] >= 4)
    ans = gw.status("show stat csv")
    assert ans["contentType"] == "text/csv"
    lines = ans["text"].splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, l.split(","))) for l in lines[1:]]
    assert all(len(l.split(",")) == len(head) for l in lines[1:])
    srv = [r for r in rows if r["type"] == "server" and r["id"] == "main"][0]
    assert srv["hrsp_2xx"] == "4" and srv["req_tot"] == "4"
    api = [r for r in rows if r["type"] == "route" and r["id"] == "api"][0]
    assert api["hrsp_2xx"] == "4" and api["cluster"] == "up"
    dest = [r for r in rows if r["type"] == "destination" and r["id"] == "u1"][0]
    assert dest["cluster"] == "up" and dest["up"] == "1" and dest["failures"] == "0"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) "
                    "not installed")
def test_promtool_check_metrics(tmp_path, gateway_factory, echo_upstream):
    port = free_port()
    gw = gateway_factory(proxy_config(tmp_path, port, echo_upstream))
    for p in ("/api/x", "/other/y", "/d/z", "/status/500"):
        http_get(gw.url(p))
    text = gw.status("show metrics")["text"]
    assert gw.status("show metrics")["contentType"].startswith("text/plain; version=0.0.4")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        r.stdout + r.stderr


def scrape(port, path="/metrics", method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def test_metrics_listener(tmp_path, gateway_factory, echo_upstream):
    port, mport = free_port(), free_port()
    cfg = proxy_config(tmp_path, port, echo_upstream)
    cfg["metrics"] = {"listen": "127.0.0.1:%d" % mport}
    gw = gateway_factory(cfg)
    for _ in range(3):
        assert http_get(gw.url("/api/x"))[0] == 200
    wait_stat(gw, lambda s: by_id(s["routes"])["api"]["requests"]["2xx"] >= 3)
    status, headers, body = scrape(mport)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    prom = prom_samples(body)
    assert prom[("fastgateway_route_requests_total",
                 frozenset({("route", "api"), ("code", "2xx")}))] == 3
    assert scrape(mport, "/metrics?x=1")[0] == 200
    assert scrape(mport, "/other")[0] == 404
    status, headers, _ = scrape(mport, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = scrape(mport, method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 0

    # a reload moves the path, then the port
    cfg["metrics"] = {"listen": "127.0.0.1:%d" % mport, "path": "/m2"}
    gw.reload(cfg)
    assert scrape(mport, "/m2")[0] == 200 and scrape(mport)[0] == 404
    mport2 = free_port()
    cfg["metrics"] = {"listen": "127.0.0.1:%d" % mport2}
    gw.reload(cfg)
    assert scrape(mport2)[0] == 200
    with pytest.raises(OSError):
        scrape(mport)
    # and removes it
    del cfg["metrics"]
    gw.reload(cfg)
    with pytest.raises(OSError):
        scrape(mport2)


def test_metrics_listener_config_errors(tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port)
    path = tmp_path / "fg.json"

    def check(metrics):
        if metrics is None:
            cfg.pop("metrics", None)
        else:
            cfg["metrics"] = metrics
        path.write_text(json.dumps(cfg))
        return subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True,
                              text=True, timeout=10)

    r = check({"listen": "127.0.0.1:%d" % free_port()})
    assert r.returncode == 0, r.stdout + r.stderr
    bad = [({"listen": "127.0.0.1:%d" % port}, "metrics.listen"),
           ({"path": "/m"}, "missing required key \"listen\""),
           ({"listen": "nowhere"}, "metrics.listen"),
           ({"listen": "127.0.0.1:%d" % free_port(), "path": "m"}, "metrics.path"),
           ({"listen": "127.0.0.1:1", "extra": 1}, "extra")]
    for m, want in bad:
        r = check(m)
        assert r.returncode != 0 and want in r.stdout + r.stderr, (m, r.stdout + r.stderr)


def test_example_configuration_is_valid():
    example = pathlib.Path(__file__).resolve().parents[2] / "etc/examples/metrics.json"
    r = subprocess.run([str(BINARY), "-t", "-c", str(example)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(example.read_text())["metrics"]["listen"] == "127.0.0.1:9901"



def tls_stat(gw):
    return by_id(gw.status("show stat")["servers"])["main"]["tls"]


def test_tls_handshakes_resumed_and_failed(tmp_path, certs, gateway_factory):
    port = free_port()
    gw = gateway_factory(tls_config(tmp_path, certs, port))
    # the fixture's readiness probes connected and left without a handshake: wait until the
    # workers have taken them all
    last, deadline = None, time.monotonic() + 5
    while time.monotonic() < deadline:
        cur = tls_stat(gw)
        if cur == last:
            break
        last = cur
        time.sleep(0.3)
    assert last["handshakes"] == 0 and last["resumed"] == 0
    failed = last["failures"]

    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n"
    out = s_client(port, "-tls1_2", "-servername", "a.example.test", "-ign_eof", "-sess_out",
                   str(sess), stdin=req)
    assert "HTTP/1.1 200" in out
    for _ in range(3):
        out = s_client(port, "-tls1_2", "-servername", "a.example.test", "-ign_eof", "-sess_in",
                       str(sess), stdin=req)
        assert "Reused," in out
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00\x05hello")  # a record too short for a ClientHello
    recv_until_close(s)
    s.close()
    deadline = time.monotonic() + 5
    while tls_stat(gw)["failures"] < failed + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tls_stat(gw) == {"handshakes": 4, "resumed": 3, "failures": failed + 1}
    prom = prom_samples(gw.status("show metrics")["text"])
    assert prom[("fastgateway_server_tls_resumed_handshakes_total",
                 frozenset({("server", "main")}))] == 3


def test_rate_limit_and_acl_counters(tmp_path, gateway_factory):
    port = free_port()
    direct = {"status": 200, "body": "ok"}
    routes = [{"id": "limited", "match": {"path": "/limited"}, "direct": direct,
               "rateLimits": ["r1"]},
              {"id": "blocked", "match": {"path": "/blocked"}, "direct": direct,
               "accessControl": ["bad"]}]
    cfg = base_config(tmp_path, port, routes=routes,
                      rateLimits=[{"id": "r1", "type": "FixedWindow", "scope": "PerIp",
                                   "maxRequests": 3, "window": "60s"}],
                      accessControl=[{"id": "bad", "type": "blacklist",
                                      "entries": ["127.0.0.1"]}])
    gw = gateway_factory(cfg)
    assert [http_get(gw.url("/limited"))[0] for _ in range(5)] == [200] * 3 + [429] * 2
    assert [http_get(gw.url("/blocked"))[0] for _ in range(2)] == [403] * 2
    stat = wait_stat(gw, lambda s: by_id(s["routes"])["blocked"]["requests"]["4xx"] >= 2)
    assert by_id(stat["rateLimits"])["r1"] == {"id": "r1", "allowed": 3, "limited": 2,
                                               "dryRunLimited": 0}
    assert by_id(stat["acls"])["bad"] == {"id": "bad", "checks": 2, "hits": 2, "denied": 2}
    assert by_id(stat["routes"])["limited"]["requests"]["4xx"] == 2
    prom = prom_samples(gw.status("show metrics")["text"])
    assert prom[("fastgateway_ratelimit_limited_total", frozenset({("ratelimit", "r1")}))] == 2
    assert prom[("fastgateway_acl_denied_total", frozenset({("acl", "bad")}))] == 2
