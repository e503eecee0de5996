"""Logs (docs/logging.md): upstream failures in the error log with nginx's wording and the
request's context, access-log fields and their selection (log.accessLogFields), JSON escaping of
client bytes, parser-level rejections logged with their client, and the client/peer pair behind
a trusted proxy. Real upstream processes (upstream.py), closed ports and a black hole."""
import http.client
import json
import re
import socket
import subprocess
import time
from pathlib import Path

from conftest import BINARY, Blackhole, Scripted, base_config, free_port, recv_until_close


def closed_port():
    """A port nothing listens on: a connect to it is refused at once."""
    return free_port()


def proxy_cfg(tmp_path, dests, workers=1, failover=None, log=None, **cluster_extra):
    port = free_port()
    cl = {"id": "c", "loadBalancingPolicy": "FirstAlphabetical",
          "destinations": [{"id": "d%d" % i, "address": "http://127.0.0.1:%d" % p}
                           for i, p in enumerate(dests)]}
    if failover:
        cl["failover"] = failover
    cl.update(cluster_extra)
    routes = [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
    cfg = base_config(tmp_path, port, routes=routes, clusters=[cl], workers=workers)
    cfg["log"]["level"] = "info"
    if log:
        cfg["log"].update(log)
    return cfg


def get(gw, path="/x", headers=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        rid = r.getheader("X-Request-Id")
        if rid is None and r.status == 200 and data.startswith(b"{"):
            # a relayed answer: the id the destination received
            rid = next((v for k, v in json.loads(data).get("headers", [])
                        if k.lower() == "x-request-id"), None)
        return r.status, rid, data
    finally:
        c.close()


def wait_log(gw, pattern, timeout=5.0):
    """The first error-log line matching pattern (a regex), polling until it appears."""
    deadline = time.monotonic() + timeout
    while True:
        for line in gw.error_log().splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() >= deadline:
            raise AssertionError("no error-log line matches %r:\n%s" % (pattern, gw.error_log()))
        time.sleep(0.05)


def access_lines(gw, n, timeout=5.0):
    """The access log's lines, each parsed by a strict JSON decoder from strict UTF-8."""
    path = Path(gw.config["log"]["accessLog"])
    deadline = time.monotonic() + timeout
    while True:
        raw = path.read_bytes() if path.exists() else b""
        lines = [l for l in raw.split(b"\n") if l]
        if len(lines) >= n or time.monotonic() >= deadline:
            return [json.loads(l.decode("utf-8", errors="strict")) for l in lines]
        time.sleep(0.05)


def context(gw, path, port, rid, host=None):
    host = host or "127.0.0.1:%d" % gw.port
    return (re.escape(', client: 127.0.0.1, server: main, request: "GET %s HTTP/1.1", upstream: '
                      '"http://127.0.0.1:%d%s", host: "%s", route: r, cluster: c, '
                      % (path, port, path, host))
            + r"destination: d0, request_id: " + re.escape(rid))


# ---- error log: upstream failures ----

def test_refused_connect_logged_at_warn(gateway_factory, tmp_path):
    dead = closed_port()
    gw = gateway_factory(proxy_cfg(tmp_path, [dead]))
    st, rid, _ = get(gw, "/x?a=1")
    assert st == 502 and rid
    line = wait_log(gw, re.escape(rid))
    assert "[warn]" in line, line
    assert re.search(r"connect\(\) failed \(111: Connection refused\) while connecting to "
                     r"upstream" + context(gw, "/x?a=1", dead, rid) + r", attempt: 1; answering 502",
                     line), line
    entry = access_lines(gw, 1)[-1]
    assert entry["termination"] == "upstream_refused"
    assert entry["upstream"] == "127.0.0.1:%d" % dead


def test_connect_timeout_logged_at_warn(gateway_factory, tmp_path):
    hole = Blackhole()
    try:
        gw = gateway_factory(proxy_cfg(tmp_path, [hole.port],
                                       httpRequest={"connectTimeout": "200ms"}))
        st, rid, _ = get(gw)
        assert st == 504
        line = wait_log(gw, re.escape(rid))
        assert "[warn]" in line
        assert re.search(r"upstream timed out \(110: Connection timed out\) while connecting to "
                         r"upstream" + context(gw, "/x", hole.port, rid), line), line
        assert access_lines(gw, 1)[-1]["termination"] == "upstream_connect_timeout"
    finally:
        hole.close()


def test_response_timeout_logged_at_warn(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port], httpRequest={"activityTimeout": "300ms"}))
    st, rid, _ = get(gw, "/slow?ms=3000")
    assert st == 504
    line = wait_log(gw, re.escape(rid))
    assert re.search(r"\[warn\].*upstream timed out \(110: Connection timed out\) while reading "
                     r"response header from upstream" + context(gw, "/slow?ms=3000", up.port, rid)
                     + r", attempt: 1; answering 504", line), line
    entry = access_lines(gw, 1)[-1]
    assert entry["termination"] == "upstream_timeout"


def test_reset_before_answer_logged_at_warn(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port]))
    st, rid, _ = get(gw, "/reset")
    assert st == 502
    line = wait_log(gw, re.escape(rid))
    # upstream.py resets (SO_LINGER 0) right after reading the head
    assert re.search(r"\[warn\].*(recv\(\) failed \(104: Connection reset by peer\)|upstream "
                     r"prematurely closed connection) while reading response header from upstream"
                     + context(gw, "/reset", up.port, rid), line), line
    assert access_lines(gw, 1)[-1]["termination"] == "upstream_reset"


def test_failover_attempts_logged_and_listed(gateway_factory, upstream_factory, tmp_path):
    dead, up = closed_port(), upstream_factory()
    cfg = proxy_cfg(tmp_path, [dead, up.port], failover={"enabled": True},
                    log={"accessLogFields": ["upstream", "upstreamStatus", "attempts",
                                             "termination", "status", "requestId"]})
    gw = gateway_factory(cfg)
    st, rid, data = get(gw)
    assert st == 200 and json.loads(data)["upstream"] == up.port
    line = wait_log(gw, re.escape(rid))
    assert re.search(r"\[warn\].*connect\(\) failed \(111: Connection refused\) while connecting "
                     r"to upstream" + context(gw, "/x", dead, rid)
                     + r", attempt: 1; failing over to destination d1", line), line
    entry = access_lines(gw, 1)[-1]
    assert entry == {"status": 200, "upstream": "127.0.0.1:%d, 127.0.0.1:%d" % (dead, up.port),
                     "upstreamStatus": "502, 200", "attempts": 2, "termination": "ok",
                     "requestId": rid}, entry


def test_success_path_writes_no_error_log_line(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port]))
    before = gw.error_log()
    for _ in range(5):
        assert get(gw)[0] == 200
    access_lines(gw, 5)
    assert gw.error_log() == before


def test_truncated_body_logged_at_warn(gateway_factory, tmp_path):
    """A destination that closes mid-body: the client sees a cut response, the error log says
    so (nginx's "while reading upstream"), the access log says upstream_reset."""
    def script(sock, head):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    up = Scripted(script)
    try:
        gw = gateway_factory(proxy_cfg(tmp_path, [up.port]))
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /cut HTTP/1.1\r\nHost: h\r\nX-Request-Id: cut-1\r\n\r\n")
        resp = recv_until_close(s)
        s.close()
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"x" * 10)
        line = wait_log(gw, "cut-1")
        assert re.search(r"\[warn\].*upstream prematurely closed connection while reading "
                         r"upstream" + context(gw, "/cut", up.port, "cut-1", host="h")
                         + r", attempt: 1; response truncated", line), line
        e = access_lines(gw, 1)[-1]
        assert e["termination"] == "upstream_reset" and e["requestId"] == "cut-1"
    finally:
        up.close()


def test_json_error_log_line(gateway_factory, tmp_path):
    """With "format": "json" the failure is one JSON object whose msg is the same text."""
    dead = closed_port()
    gw = gateway_factory(proxy_cfg(tmp_path, [dead], log={"format": "json"}))
    st, rid, _ = get(gw, "/j%22q", headers={"Host": "json.test"})
    assert st == 502
    line = wait_log(gw, re.escape(rid))
    doc = json.loads(line)
    assert doc["level"] == "warn" and doc["role"].startswith("worker")
    assert doc["msg"].startswith("connect() failed (111: Connection refused) while connecting")
    assert 'request: "GET /j%22q HTTP/1.1"' in doc["msg"] and 'host: "json.test"' in doc["msg"]


# ---- access log fields ----

ALL_FIELDS = ["time", "client", "clientPort", "peer", "method", "host", "path", "query",
              "protocol", "status", "bytesIn", "bytesOut", "contentEncoding", "duration",
              "userAgent", "referer", "upstream", "upstreamStatus", "attempts", "upstreamConnectTime",
              "upstreamFirstByteTime", "upstreamTime", "route", "tenant", "metadata", "cluster",
              "error", "termination", "requestId"]


def test_access_log_all_fields(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port], log={"accessLogFields": ALL_FIELDS}))
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /slow?ms=50 HTTP/1.1\r\nHost: logs.test\r\nUser-Agent: probe/1.0\r\n"
              b"Referer: http://ref.test/page\r\nConnection: close\r\n\r\n")
    resp = recv_until_close(s)
    local_port = s.getsockname()[1]
    s.close()
    assert resp.startswith(b"HTTP/1.1 200")
    e = access_lines(gw, 1)[-1]
    # documented order, absent fields (peer, tenant, metadata, error, contentEncoding) left out
    present = [f for f in ALL_FIELDS
               if f not in ("peer", "tenant", "metadata", "error", "contentEncoding")]
    assert list(e) == present, list(e)
    assert e["client"] == "127.0.0.1" and e["clientPort"] == local_port
    assert e["protocol"] == "HTTP/1.1" and e["method"] == "GET"
    assert e["host"] == "logs.test" and e["path"] == "/slow" and e["query"] == "ms=50"
    assert e["userAgent"] == "probe/1.0" and e["referer"] == "http://ref.test/page"
    assert e["upstream"] == "127.0.0.1:%d" % up.port and e["upstreamStatus"] == "200"
    assert e["attempts"] == 1 and e["termination"] == "ok"
    # milliseconds: the destination waited 50 ms before its first byte
    assert e["upstreamFirstByteTime"] >= 45 and e["upstreamTime"] >= e["upstreamFirstByteTime"]
    assert e["duration"] >= e["upstreamTime"]
    assert 0 <= e["upstreamConnectTime"] < 1000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])


def test_access_log_field_selection(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port],
                                   log={"accessLogFields": ["requestId", "status", "userAgent"]}))
    st, rid, _ = get(gw, headers={"User-Agent": "sel/2"})
    assert st == 200
    e = access_lines(gw, 1)[-1]
    assert e == {"status": 200, "userAgent": "sel/2", "requestId": rid}, e


def test_access_log_default_fields(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    gw = gateway_factory(proxy_cfg(tmp_path, [up.port]))
    st, rid, _ = get(gw, headers={"User-Agent": "not-by-default"})
    e = access_lines(gw, 1)[-1]
    assert set(e) == {"time", "client", "clientPort", "method", "host", "path", "status",
                      "bytesIn", "bytesOut", "duration", "upstream", "upstreamTime", "route",
                      "cluster", "termination", "requestId"}, e
    assert e["requestId"] == rid


def test_unknown_access_log_field_refused(tmp_path):
    cfg = base_config(tmp_path, free_port())
    cfg["log"]["accessLogFields"] = ["time", "usrAgent"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = subprocess.run([str(BINARY), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    assert 'log.accessLogFields[1]: unknown access log field "usrAgent"' in r.stderr + r.stdout
    cfg["log"]["accessLogFields"] = ["status", "status"]
    p.write_text(json.dumps(cfg))
    r = subprocess.run([str(BINARY), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and 'accessLogFields[1]: field "status" listed twice' in r.stderr


def test_access_log_escapes_hostile_bytes(gateway_factory, tmp_path):
    """Quotes, backslashes, a tab and bytes that are not UTF-8 (obs-text, which RFC 9110 5.5
    lets a field value carry) in a User-Agent and a Referer still give one valid JSON object per
    line, read back by a strict decoder. (Other control bytes are refused by the parser;
    tests/unit/test_json.c covers their escapes.)"""
    cfg = base_config(tmp_path, free_port(), workers=1)
    cfg["log"]["accessLogFields"] = ["userAgent", "referer", "path", "status"]
    gw = gateway_factory(cfg)
    ua = b'a"b\\c\t\xff\xfe\xc3\x28 \xe2\x82\xac ok'
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /p%22q HTTP/1.1\r\nHost: h\r\nUser-Agent: " + ua + b"\r\nReferer: \xc0\xaf"
              b"\r\nConnection: close\r\n\r\n")
    resp = recv_until_close(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 200")
    e = access_lines(gw, 1)[-1]
    assert e["userAgent"] == 'a"b\\c\t\u00ff\u00fe\u00c3( \u20ac ok', e
    assert e["referer"] == "\u00c0\u00af"
    assert e["status"] == 200


# ---- parser-level rejections ----

def test_parser_rejection_logged_with_client(gateway_factory, tmp_path):
    cfg = base_config(tmp_path, free_port(), workers=1)
    gw = gateway_factory(cfg)
    s = socket.create_connection(("127.0.0.1", gw.port))
    local_port = s.getsockname()[1]
    s.sendall(b"GET /bad HTTP/1.1\r\nHost: reject.test\r\nBad Header: x\r\n\r\n")
    resp = recv_until_close(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 400")
    rid = re.search(rb"X-Request-Id: (\w+)", resp).group(1).decode()
    e = access_lines(gw, 1)[-1]
    assert e["status"] == 400 and e["client"] == "127.0.0.1" and e["clientPort"] == local_port
    assert e["host"] == "reject.test" and e["requestId"] == rid
    assert e["termination"] == "bad_request"
    line = wait_log(gw, re.escape(rid))
    assert re.search(r"\[info\].*client sent an invalid request \(400: malformed request\), "
                     r"client: 127\.0\.0\.1:%d, server: main, host: \"reject\.test\"" % local_port,
                     line), line


# ---- behind a trusted proxy ----

def test_trusted_proxy_client_and_peer(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    cfg = proxy_cfg(tmp_path, [up.port])
    cfg["servers"][0].update({"clientIpSource": "X-Forwarded-For",
                              "trustedProxies": ["127.0.0.1"]})
    gw = gateway_factory(cfg)
    st, _, data = get(gw, headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert st == 200
    echo = json.loads(data)
    xff = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"]
    # Set (the default): the client our trusted proxy named, then that proxy
    assert xff == ["203.0.113.9, 127.0.0.1"], xff
    e = access_lines(gw, 1)[-1]
    assert e["client"] == "203.0.113.9" and e["peer"] == "127.0.0.1", e
    # an untrusted peer's header is ignored: no peer field, its own address forwarded
    cfg["servers"][0]["trustedProxies"] = ["192.0.2.1"]
    gw.reload(cfg)
    st, _, data = get(gw, headers={"X-Forwarded-For": "203.0.113.9"})
    xff = [v for k, v in json.loads(data)["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["127.0.0.1"], xff
    e = access_lines(gw, 2)[-1]
    assert e["client"] == "127.0.0.1" and "peer" not in e, e


def test_trusted_proxy_append_adds_the_peer(gateway_factory, upstream_factory, tmp_path):
    up = upstream_factory()
    cfg = proxy_cfg(tmp_path, [up.port])
    cfg["routes"][0]["transforms"] = [{"X-Forwarded": "For", "Action": "Append"}]
    cfg["servers"][0].update({"clientIpSource": "X-Forwarded-For",
                              "trustedProxies": ["127.0.0.1"]})
    gw = gateway_factory(cfg)
    st, _, data = get(gw, headers={"X-Forwarded-For": "203.0.113.9"})
    xff = [v for k, v in json.loads(data)["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["203.0.113.9, 127.0.0.1"], xff


# ---- termination reasons decided before or without a destination ----

def test_termination_reasons(gateway_factory, upstream_factory, tmp_path):
    """denied (ACL, matched behind a trusted proxy), no_route, client_aborted, client_timeout:
    each line says who ended the exchange."""
    up = upstream_factory()
    cfg = proxy_cfg(tmp_path, [up.port], log={"accessLogFields": [
        "client", "clientPort", "path", "status", "termination", "requestId"]})
    cfg["routes"][0]["match"]["path"] = "/p/{**rest}"
    cfg["routes"][0]["transforms"] = [{"PathRemovePrefix": "/p"}]
    cfg["accessControl"] = [{"id": "bad", "type": "blacklist", "entries": ["198.51.100.66"]}]
    cfg["security"] = {"accessControl": ["bad"]}
    cfg["servers"][0].update({"clientIpSource": "X-Forwarded-For",
                              "trustedProxies": ["127.0.0.1"], "timeouts": {"header": "300ms"}})
    gw = gateway_factory(cfg)
    assert get(gw, "/p/x", headers={"X-Forwarded-For": "198.51.100.66"})[0] == 403
    assert get(gw, "/nowhere")[0] == 404
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET /p/slow?ms=2000 HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.3)
    s.close()  # the client leaves before the destination answers
    s = socket.create_connection(("127.0.0.1", gw.port))
    slow_port = s.getsockname()[1]
    s.sendall(b"GET /p/x HTTP/1.1\r\nHost: h\r\n")  # never finished
    resp = recv_until_close(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 408")
    lines = access_lines(gw, 4)
    by_status = {e["status"]: e for e in lines}
    assert by_status[403]["termination"] == "denied"
    assert by_status[403]["client"] == "198.51.100.66"
    assert by_status[404]["termination"] == "no_route"
    assert by_status[499]["termination"] == "client_aborted"
    t = by_status[408]
    assert t["termination"] == "client_timeout" and t["clientPort"] == slow_port
    assert t["client"] == "127.0.0.1" and re.fullmatch(r"[0-9a-f]{32}", t["requestId"]), t
