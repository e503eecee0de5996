"""`fastgateway --import yarp|fastgateway FILE` (docs/import.md): realistic source files in
data/import/ are converted, served by the real binary, and every request is checked against
what the source configuration means in YARP or FastGateway."""
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import BINARY, base_config, free_port, http_request, recv_until_close

DATA = Path(__file__).resolve().parent / "data" / "import"


def run_import(kind, path):
    return subprocess.run([str(BINARY), "--import", kind, str(path)], capture_output=True,
                          text=True, timeout=10)


def convert(kind, text, tmp_path, name="source.json"):
    src = tmp_path / name
    src.write_text(text)
    r = run_import(kind, src)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def with_process_settings(tmp_path, ours, port):
    """The converted document plus what a test run needs (files under tmp, the test port)."""
    cfg = base_config(tmp_path, port)
    for k in ("servers", "routes", "clusters"):
        cfg.pop(k)
    cfg.update({k: v for k, v in ours.items() if k != "log"})
    return cfg


def get(port, path, headers=None, method="GET", body=None, host=None):
    h = dict(headers or {})
    if host:
        h["Host"] = host
    return http_request(method, "http://127.0.0.1:%d%s" % (port, path), body=body, headers=h)


def echo(resp):
    return json.loads(resp[2])


def hdr(echoed, name):
    for k, v in echoed["headers"]:
        if k.lower() == name.lower():
            return v
    return None


# ---------------------------------------------------------------- YARP


@pytest.fixture
def yarp_gateway(tmp_path, gateway_factory, upstream_factory):
    ups = {k: upstream_factory() for k in ("CATALOG1", "CATALOG2", "CANARY", "ORDERS")}
    text = (DATA / "yarp_appsettings.json").read_text()
    for k, up in ups.items():
        text = text.replace(k, str(up.port))
    ours, notes = convert("yarp", text, tmp_path, "appsettings.json")
    port = free_port()
    ours["servers"][0]["listen"] = "127.0.0.1:%d" % port
    gw = gateway_factory(with_process_settings(tmp_path, ours, port))
    return gw, ups, ours, notes


def test_yarp_appsettings_converts_to_what_it_means(yarp_gateway):
    gw, ups, ours, notes = yarp_gateway
    # Kestrel's endpoint, Logging's default level; the category level is reported, not lost
    assert ours["servers"][0]["id"] == "Http"
    assert ours["log"] == {"level": "info"}
    assert "Logging:LogLevel:Microsoft.AspNetCore" in notes
    catalog = next(c for c in ours["clusters"] if c["id"] == "catalog")
    assert catalog["httpRequest"] == {"activityTimeout": "30s"}
    assert catalog["healthCheck"]["active"]["threshold"] == 3  # from the cluster's Metadata
    assert catalog["healthCheck"]["passive"]["failureRate"] == 0.5
    assert catalog["healthCheck"]["passive"]["reactivationPeriod"] == "120s"


def test_yarp_routes_served_request_by_request(yarp_gateway):
    gw, ups, ours, notes = yarp_gateway
    port = gw.port
    catalog_ports = {ups["CATALOG1"].port, ups["CATALOG2"].port}

    # catalog: PathPattern, RequestHeader Set, X-Forwarded Set without Prefix, ResponseHeader
    seen = set()
    for _ in range(4):
        r = get(port, "/catalog/items/7?color=red", headers={"X-Forwarded-For": "6.6.6.6"})
        assert r[0] == 200
        e = echo(r)
        seen.add(e["upstream"])
        assert e["path"] == "/api/v2/items/7" and e["query"] == "color=red"
        assert hdr(e, "X-Shop") == "edge"
        assert hdr(e, "X-Forwarded-For") == "127.0.0.1"  # Set replaces the client's value
        assert hdr(e, "X-Forwarded-Proto") == "http"
        assert hdr(e, "X-Forwarded-Prefix") is None
        assert r[1].get("x-served-by") == "yarp-edge"
    assert seen == catalog_ports  # RoundRobin over both destinations

    # Methods: GET and HEAD only
    assert get(port, "/catalog/items/7", method="POST", body=b"x")[0] in (404, 405)
    # the canary route (Order -1, header match) takes requests carrying X-Canary: yes
    assert echo(get(port, "/catalog/a", headers={"X-Canary": "yes"}))["upstream"] == \
        ups["CANARY"].port
    assert echo(get(port, "/catalog/a", headers={"X-Canary": "no"}))["upstream"] in catalog_ports

    # orders: query match, PathRemovePrefix, QueryValueParameter Append, body limit, affinity
    r = get(port, "/orders/42?v=2")
    assert r[0] == 200
    e = echo(r)
    assert e["upstream"] == ups["ORDERS"].port and e["path"] == "/42"
    assert e["query"] == "v=2&source=edge&orderId=42"  # QueryRouteParameter
    assert hdr(e, "X-Order-Id") == "42"  # RequestHeaderRouteValue
    cookie = r[1].get("set-cookie")
    assert cookie.startswith(".Shop.Affinity=orders-a")
    assert re.search(r"(?i)max-age=86400", cookie) and re.search(r"(?i)samesite=lax", cookie)
    assert re.search(r"(?i)httponly", cookie) and not re.search(r"(?i);\s*secure", cookie)
    assert get(port, "/orders/42")[0] == 404  # no v=2
    assert get(port, "/orders/42?v=2", method="POST", body=b"x" * 2000)[0] == 413
    assert get(port, "/orders/42?v=2", method="POST", body=b"x" * 1000)[0] == 200

    # invoices: constraints and a complex segment with an optional part; allow-lists
    r = get(port, "/invoices/7/report.pdf", headers={"X-Tenant": "t1", "X-Other": "o"})
    assert r[0] == 200
    e = echo(r)
    assert e["upstream"] == ups["ORDERS"].port and e["path"] == "/invoices/7/report.pdf"
    assert hdr(e, "X-Tenant") == "t1" and hdr(e, "X-Other") is None
    assert "x-upstream" not in r[1] and r[1]["content-type"] == "application/json"
    assert get(port, "/invoices/7/readme")[0] == 200
    assert get(port, "/invoices/0/report.pdf")[0] == 404   # min(1)
    assert get(port, "/invoices/x/report.pdf")[0] == 404   # int

    # admin: host match, PathPrefix
    e = echo(get(port, "/users", host="admin.shop.test"))
    assert e["path"] == "/admin/users" and e["upstream"] in catalog_ports
    assert get(port, "/users")[0] == 404


def test_yarp_section_alone_and_timespans(tmp_path):
    section = {
        "Routes": {"r": {"ClusterId": "c", "Match": {"Path": "api/{id?}"}}},
        "Clusters": {"c": {
            "HttpRequest": {"ActivityTimeout": "1.02:03:04.5"},
            "HealthCheck": {"Active": {"Enabled": "false", "Interval": "00:01"}},
            "Destinations": {"d": {"Address": "http://127.0.0.1:9", "Host": "api.internal"}}}},
    }
    ours, _ = convert("yarp", json.dumps(section), tmp_path)
    assert ours["servers"] == [{"id": "http", "listen": "127.0.0.1:5000"}]  # ASP.NET's default
    assert ours["routes"][0]["match"]["path"] == "/api/{id?}"
    c = ours["clusters"][0]
    assert c["httpRequest"]["activityTimeout"] == "93784500ms"
    assert c["healthCheck"]["active"]["enabled"] is False
    assert c["healthCheck"]["active"]["interval"] == "60s"
    assert c["destinations"][0]["host"] == "api.internal"


def _route(extra=None, match=None, cluster=None):
    r = {"ClusterId": "c", "Match": match or {"Path": "/x/{**rest}"}}
    r.update(extra or {})
    c = {"Destinations": {"d": {"Address": "http://127.0.0.1:9"}}}
    c.update(cluster or {})
    return {"ReverseProxy": {"Routes": {"r": r}, "Clusters": {"c": c}}}


R = "ReverseProxy:Routes:r"
C = "ReverseProxy:Clusters:c"


@pytest.mark.parametrize("xf,action", [(0, "Off"), (1, "Set"), (2, "Append"), (3, "Remove")])
def test_yarp_enums_written_as_numbers_follow_dotnet_numbering(tmp_path, xf, action):
    """An enum written as its number means the member .NET numbers so: YARP's
    ForwardedTransformActions (Off 0), HeaderMatchMode (Exists 4), ASP.NET Core's SameSiteMode
    (Unspecified -1, None 0, Lax 1, Strict 2) and CookieSecurePolicy (Always 1)."""
    doc = _route({"Transforms": [{"X-Forwarded": xf}]},
                 match={"Path": "/x/{**rest}", "Headers": [{"Name": "X-A", "Mode": 4}]},
                 cluster={"SessionAffinity": {"Enabled": True, "Policy": "Cookie",
                                              "Cookie": {"SameSite": xf - 1, "SecurePolicy": 1}}})
    ours, _ = convert("yarp", json.dumps(doc), tmp_path, "appsettings.json")
    route = ours["routes"][0]
    assert route["transforms"] == [{"X-Forwarded": "For,Proto,Host,Prefix", "Action": action}]
    assert route["match"]["headers"] == [{"name": "X-A", "mode": "Exists"}]
    same = ["Unspecified", "None", "Lax", "Strict"][xf]
    assert ours["clusters"][0]["sessionAffinity"]["cookie"]["sameSite"] == same


@pytest.mark.parametrize("cluster,where", [
    ({"LoadBalancingPolicy": 1}, C + ":LoadBalancingPolicy"),
    ({"SessionAffinity": {"Enabled": True, "Policy": 1}}, C + ":SessionAffinity:Policy"),
    ({"HealthCheck": {"AvailableDestinationsPolicy": 0}}, C + ":HealthCheck:AvailableDestinationsPolicy"),
])
def test_yarp_policy_names_take_no_number(tmp_path, cluster, where):
    """YARP reads policies as names (strings): a number names none of them."""
    src = tmp_path / "appsettings.json"
    src.write_text(json.dumps(_route(cluster=cluster)))
    r = run_import("yarp", src)
    assert r.returncode == 1 and r.stdout == ""
    assert where in r.stderr and "expected one of" in r.stderr, r.stderr


@pytest.mark.parametrize("doc,where,why", [
    (_route(match={"Path": "/items/{id:float}"}), R + ":Match:Path",
     "the constraint \"float\" of parameter \"id\" is not supported"),
    (_route(match={"Path": "/p/{slug:regex(^a(?=b))}"}), R + ":Match:Path",
     "lookarounds and inline options"),
    (_route(match={"Path": "/files/{name}{ext}"}), R + ":Match:Path",
     "separated by literal text"),
    (_route(match={"Path": "/a/{x=1?}"}), R + ":Match:Path", "cannot have a default value"),
    (_route({"Transforms": [{"QueryRouteParameter": "id", "Sett": "id"}]}),
     R + ":Transforms:0:Sett", "not a key of the QueryRouteParameter transform"),
    (_route({"Transforms": [{"PathSet": "/"}, {"RequestHeaderRouteValue": "X-Id"}]}),
     R + ":Transforms:1", "exactly one of Set, Append"),
    (_route({"Transforms": [{"ResponseTrailer": "X-T"}]}),
     R + ":Transforms:0", "ResponseTrailer needs exactly one of Set, Append"),
    (_route({"Transforms": [{"ResponseTrailerRemove": "X-T", "Sett": "1"}]}),
     R + ":Transforms:0:Sett", "not a key of the ResponseTrailerRemove transform"),
    (_route({"Transforms": [{"X-Forwarded": "Sometimes"}]}),
     R + ":Transforms:0:X-Forwarded", "unknown value \"Sometimes\""),
    (_route({"Transforms": [{"ResponseHeader": "X", "Set": "1", "When": "Sometimes"}]}),
     R + ":Transforms:0:When", "unknown value \"Sometimes\""),
    (_route({"AuthorizationPolicy": "AdminsOnly"}), R + ":AuthorizationPolicy", "policy"),
    (_route({"Timeout": "00:00:10"}), R + ":Timeout", "ActivityTimeout"),
    (_route({"Matchh": {}}), R + ":Matchh", "unknown key"),
    (_route({"clusterId": "c"}), R + ":ClusterId", "keys ignore case"),
    (_route(cluster={"HealthCheck": {"AvailableDestinationsPolicy": "Any"}}),
     C + ":HealthCheck:AvailableDestinationsPolicy", "HealthyAndUnknown"),
    (_route(cluster={"HealthCheck": {"Active": {"Enabled": True, "Policy": "Custom"}}}),
     C + ":HealthCheck:Active:Policy", "ConsecutiveFailures"),
    (_route(cluster={"HttpRequest": {"ActivityTimeout": "30s"}}),
     C + ":HttpRequest:ActivityTimeout", "not a TimeSpan"),
    (_route(cluster={"HttpClient": {"MaxConnectionsPerServer": 10}}),
     C + ":HttpClient:MaxConnectionsPerServer", "no equivalent"),
    (_route(cluster={"SessionAffinity": {"Enabled": True, "Cookie": {"SecurePolicy": "SameAsRequest"}}}),
     C + ":SessionAffinity:Cookie:SecurePolicy", "SameAsRequest"),
    (_route(cluster={"Destinations": {"d": {"Address": "ftp://x"}}}),
     "does not load", "ftp://x"),
    ({"ReverseProxy": {}, "AllowedHosts": "shop.test"}, "AllowedHosts", "host filtering"),
])
def test_yarp_without_equivalent_is_an_error_naming_the_key(tmp_path, doc, where, why):
    src = tmp_path / "appsettings.json"
    src.write_text(json.dumps(doc))
    r = run_import("yarp", src)
    assert r.returncode == 1 and r.stdout == ""
    assert where in r.stderr and why in r.stderr, r.stderr


def test_yarp_constraints_and_header_transforms_convert(tmp_path):
    """Route constraints, defaults, complex segments and the allow-list, copy, trailer and
    client certificate transforms convert as written (YARP's own keys in our spelling)."""
    doc = _route({"Transforms": [
        {"RequestHeadersAllowed": "Accept; X-Tenant"},
        {"ResponseHeadersCopy": "false"},
        {"ResponseHeadersAllowed": "Content-Type"},
        {"responsetrailersallowed": "grpc-status"},
        {"ResponseTrailersCopy": "true"},
        {"ResponseTrailer": "X-Trace", "Append": "gw", "When": "always"},
        {"ResponseTrailerRemove": "X-Internal"},
        {"ClientCert": "X-Client-Cert"}]},
        match={"Path": "api/v{ver:int}/{id:guid}/{name}.{ext?}"})
    ours, _ = convert("yarp", json.dumps(doc), tmp_path, "appsettings.json")
    route = ours["routes"][0]
    assert route["match"]["path"] == "/api/v{ver:int}/{id:guid}/{name}.{ext?}"
    assert route["transforms"] == [
        {"RequestHeadersAllowed": "Accept; X-Tenant"},
        {"ResponseHeadersCopy": False},
        {"ResponseHeadersAllowed": "Content-Type"},
        {"ResponseTrailersAllowed": "grpc-status"},
        {"ResponseTrailer": "X-Trace", "Append": "gw", "When": "Always"},
        {"ResponseTrailerRemove": "X-Internal"},
        {"ClientCert": "X-Client-Cert"}]


def test_import_usage_errors(tmp_path):
    src = tmp_path / "a.json"
    src.write_text("{}")
    r = subprocess.run([str(BINARY), "--import", "nginx", str(src)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "unknown kind" in r.stderr
    r = subprocess.run([str(BINARY), "--import", "yarp"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    src.write_text('{"ReverseProxy": {"Routes": {} /* unterminated')
    r = run_import("yarp", src)
    assert r.returncode == 1 and "unterminated /* comment" in r.stderr


# ---------------------------------------------------------------- FastGateway


@pytest.fixture
def fastgateway_gateway(tmp_path, gateway_factory, upstream_factory):
    api, shop1, shop2 = upstream_factory(), upstream_factory(), upstream_factory()
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "index.html").write_text("<h1>shop</h1>")
    (assets / "app.js").write_text("console.log(1)")
    ports = {"WEBPORT": free_port(), "LEGACYPORT": free_port(), "QUARANTINEPORT": free_port()}
    text = (DATA / "fastgateway_config.json").read_text()
    for k, v in list(ports.items()) + [("APIPORT", api.port), ("SHOP1PORT", shop1.port),
                                       ("SHOP2PORT", shop2.port), ("ASSETSROOT", str(assets))]:
        text = text.replace(k, str(v))
    ours, notes = convert("fastgateway", text, tmp_path, "config.json")
    for s in ours["servers"]:  # "*:PORT" as FastGateway listens; loopback for the test
        s["listen"] = s["listen"].replace("*", "127.0.0.1")
    cfg = with_process_settings(tmp_path, ours, ports["WEBPORT"])
    gw = gateway_factory(cfg)
    return gw, ports, (api, shop1, shop2), ours, notes


def test_fastgateway_config_served_request_by_request(fastgateway_gateway):
    gw, ports, (api, shop1, shop2), ours, notes = fastgateway_gateway
    web = ports["WEBPORT"]
    assert "domainNames[3].enable" in notes  # the disabled domain name is reported

    # Service with a domain: the path prefix stays in the forwarded path; copyRequestHost
    r = get(web, "/api/orders?id=1", host="shop.test")
    e = echo(r)
    assert e["upstream"] == api.port and e["path"] == "/api/orders" and e["query"] == "id=1"
    assert hdr(e, "Host") == "shop.test"
    # without the domain the catch-all ServiceCluster takes it
    assert echo(get(web, "/api/orders"))["upstream"] in (shop1.port, shop2.port)

    # ServiceCluster with weights 3:1 (LeastRequests, one request at a time: weighted draw)
    counts = {shop1.port: 0, shop2.port: 0}
    for _ in range(40):
        counts[echo(get(web, "/products"))["upstream"]] += 1
    assert counts[shop1.port] > counts[shop2.port] > 0

    # StaticFile: the file itself, else the tryFiles fallback
    r = get(web, "/assets/app.js")
    assert r[0] == 200 and r[2] == b"console.log(1)"
    r = get(web, "/assets/deep/link")
    assert r[0] == 200 and r[2] == b"<h1>shop</h1>"

    # maxRequestBodySize 4096
    assert get(web, "/upload", method="POST", body=b"x" * 5000)[0] == 413

    # the disabled domain name is not served: /old goes to the catch-all
    assert echo(get(web, "/old/x"))["path"] == "/old/x"

    # rate limit: PerIp, FixedWindow, 3 per 60 s, on /login* from 127.0.0.*
    statuses = [get(web, "/login")[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert get(web, "/products")[0] == 200  # other paths are not counted

    # redirectHttps: 307 to the same host, path and query
    r = get(ports["LEGACYPORT"], "/cart?item=9", host="shop.test")
    assert r[0] == 307 and r[1]["location"] == "https://shop.test/cart?item=9"

    # the blacklist (enableBlacklist) refuses 127.0.0.1 on the quarantine server
    assert get(ports["QUARANTINEPORT"], "/")[0] == 403


@pytest.mark.parametrize("doc,where,why", [
    ({"servers": [{"id": "s", "listen": 80, "enableTunnel": True}]},
     "servers[0].enableTunnel", "tunnels"),
    ({"servers": [{"id": "s", "listen": 80, "clientIpSource": "X-Forwarded-For"}]},
     "servers[0].clientIpSource", "trustedProxies"),
    ({"servers": [{"id": "s", "listen": 80, "isHttps": True}]},
     "servers[0].isHttps", "certificates"),
    ({"certificates": [{"id": "c", "domain": "a.test", "certs": {"file": "a.pfx"}}],
      "servers": [{"id": "s", "listen": 80}]}, "certificates[0].certs", "PKCS#12"),
    ({"servers": [{"id": "s", "listen": 80}],
      "domainNames": [{"id": "d", "serverId": "t", "serviceType": "Service",
                       "service": "http://127.0.0.1:9"}]}, "domainNames[0].serverId", "\"t\""),
    ({"servers": [{"id": "s", "listen": 80}],
      "domainNames": [{"id": "d", "serverId": "s", "serviceType": "Tunnel"}]},
     "domainNames[0].serviceType", "unknown value \"Tunnel\""),
    ({"servers": [{"id": "s", "listen": 80}],
      "rateLimits": [{"id": "r", "scope": "PerUser", "maxRequests": 1, "windowSizeSeconds": 1}]},
     "rateLimits[0].scope", "Global, PerIp"),
    ({"servers": [{"id": "s", "listen": 80, "listne": 81}]}, "servers[0].listne", "unknown key"),
])
def test_fastgateway_without_equivalent_is_an_error_naming_the_key(tmp_path, doc, where, why):
    src = tmp_path / "config.json"
    src.write_text(json.dumps(doc))
    r = run_import("fastgateway", src)
    assert r.returncode == 1 and r.stdout == ""
    assert where in r.stderr and why in r.stderr, r.stderr


def test_fastgateway_token_bucket_becomes_the_fixed_window_it_was(tmp_path):
    doc = {"servers": [{"id": "s", "listen": 80}],
           "rateLimits": [{"id": "r", "type": "TokenBucket", "scope": "Global",
                           "maxRequests": 5, "windowSizeSeconds": 10}]}
    ours, notes = convert("fastgateway", json.dumps(doc), tmp_path)
    assert ours["rateLimits"] == [{"id": "r", "enabled": True, "type": "FixedWindow",
                                   "scope": "Global", "maxRequests": 5, "window": "10s"}]
    assert ours["security"] == {"rateLimits": ["r"]}
    assert "TokenBucket" in notes


def test_yarp_kestrel_https_endpoint(tmp_path, gateway_factory, echo_upstream):
    """A Kestrel https endpoint with a PEM certificate becomes a TLS server (relative paths as
    the source wrote them, resolved beside the file); SslProtocols Tls13 refuses TLS 1.2."""
    import shutil
    import ssl
    import socket
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    (tmp_path / "certs").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout",
                    str(tmp_path / "certs" / "site.key"), "-out",
                    str(tmp_path / "certs" / "site.crt")], check=True, capture_output=True)
    http_port, https_port = free_port(), free_port()
    doc = {
        "Kestrel": {"Endpoints": {
            "Http": {"Url": "http://127.0.0.1:%d" % http_port},
            "Https": {"Url": "https://127.0.0.1:%d" % https_port, "Protocols": "Http1AndHttp2",
                      "SslProtocols": ["Tls13"],
                      "Certificate": {"Path": "certs/site.crt", "KeyPath": "certs/site.key"}}}},
        "ReverseProxy": {
            "Routes": {"all": {"ClusterId": "app", "Match": {"Path": "{**catch-all}"}}},
            "Clusters": {"app": {"Destinations": {"a": {"Address": echo_upstream.url}}}}},
    }
    ours, _ = convert("yarp", json.dumps(doc), tmp_path, "appsettings.json")
    assert ours["certificates"] == [{"id": "Https-certificate", "chain": "certs/site.crt",
                                     "key": "certs/site.key"}]
    assert ours["servers"][1]["tls"] == {
        "certificates": ["Https-certificate"], "protocols": {"min": "TLSv1.3", "max": "TLSv1.3"}}
    gw = gateway_factory(with_process_settings(tmp_path, ours, http_port))
    assert echo(get(http_port, "/plain"))["path"] == "/plain"
    ctx = ssl.create_default_context(cafile=str(tmp_path / "certs" / "site.crt"))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.3"
            s.sendall(b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = recv_until_close(s, 5)
    assert data.startswith(b"HTTP/1.1 200") and b'"path": "/secure"' in data
    old = ssl.create_default_context(cafile=str(tmp_path / "certs" / "site.crt"))
    old.check_hostname = False
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("endpoint,key,why", [
    ({"Url": "https://127.0.0.1:8443"}, "Kestrel:Endpoints:E", "development certificate"),
    ({"Url": "https://127.0.0.1:8443", "Certificate": {"Path": "site.pfx", "Password": "x"}},
     "Kestrel:Endpoints:E:Certificate:Password", "unencrypted PEM"),
    ({"Url": "http://127.0.0.1:8080", "Protocols": "Http2"}, "Kestrel:Endpoints:E:Protocols",
     "HTTP/1.1 only"),
])
def test_yarp_kestrel_endpoint_errors(tmp_path, endpoint, key, why):
    src = tmp_path / "appsettings.json"
    src.write_text(json.dumps({"Kestrel": {"Endpoints": {"E": endpoint}}, "ReverseProxy": {}}))
    r = run_import("yarp", src)
    assert r.returncode == 1 and key in r.stderr and why in r.stderr, r.stderr
