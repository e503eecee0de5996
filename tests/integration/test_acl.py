"""Access control: black and white lists for IPv4 and IPv6, attachment levels, forwarded
addresses, dynamic entries over the status socket, and abnormal-IP autoBlock."""
import json
import time

from conftest import base_config, free_port, http_request


def lst(lid, kind, entries, **kw):
    d = {"id": lid, "type": kind, "entries": entries}
    d.update(kw)
    return d


def get(url, headers=None):
    return http_request("GET", url, headers=headers)


def code(url, headers=None):
    return get(url, headers)[0]


def test_blacklist_ipv4_403_json(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[
        lst("bad", "blacklist", ["10.0.0.0/8", "127.0.0.1-127.0.0.3"])])
    cfg["servers"][0]["accessControl"] = ["bad"]
    cfg["servers"][0]["exposeAccessListIds"] = True  # the body names the list (default: not)
    gw = gateway_factory(cfg)
    status, headers, body = get(gw.url("/x"))
    assert status == 403
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["error"] == "forbidden" and "bad" in doc["message"]
    # Also when no route would match: refused before routing.
    lists = {x["id"]: x for x in gw.status("show acl")["lists"]}
    assert lists["bad"]["hits"] >= 1 and lists["bad"]["denied"] >= 1


def test_whitelist_ipv4(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[
        lst("office", "whitelist", ["192.0.2.0/24"]),
        lst("local", "whitelist", ["127.0.0.0/8"]),
        lst("empty", "whitelist", [])])
    cfg["servers"][0]["accessControl"] = ["office"]
    gw = gateway_factory(cfg)
    assert code(gw.url()) == 403
    # Several whitelists: membership in any one admits; an empty whitelist admits everyone.
    cfg["servers"][0]["accessControl"] = ["office", "local"]
    gw.reload(cfg)
    assert code(gw.url()) == 200
    cfg["servers"][0]["accessControl"] = ["empty"]
    gw.reload(cfg)
    assert code(gw.url()) == 200
    # A disabled list is ignored.
    cfg["accessControl"][0]["enabled"] = False
    cfg["servers"][0]["accessControl"] = ["office"]
    gw.reload(cfg)
    assert code(gw.url()) == 200


def test_ipv6_lists(gateway_factory, tmp_path):
    port4, port6 = free_port(), free_port()
    cfg = base_config(tmp_path, port4, accessControl=[
        lst("v6black", "blacklist", ["::1/128"]),
        lst("v6white", "whitelist", ["2001:db8::/32"]),
        lst("v6local", "whitelist", ["::1"])])
    cfg["servers"].append({"id": "v6", "listen": "[::1]:%d" % port6,
                           "accessControl": ["v6black"]})
    gw = gateway_factory(cfg)
    url6 = "http://[::1]:%d/" % port6
    assert code(gw.url()) == 200  # IPv4 server: no lists
    assert code(url6) == 403
    cfg["servers"][1]["accessControl"] = ["v6white"]
    gw.reload(cfg)
    assert code(url6) == 403
    cfg["servers"][1]["accessControl"] = ["v6white", "v6local"]
    gw.reload(cfg)
    assert code(url6) == 200


def test_route_and_global_attachment(gateway_factory, tmp_path):
    port = free_port()
    routes = [
        {"id": "admin", "match": {"path": "/admin/{**r}"}, "direct": {"status": 200},
         "accessControl": ["nobody"]},
        {"id": "rest", "match": {"path": "/{**r}"}, "direct": {"status": 200}},
    ]
    cfg = base_config(tmp_path, port, routes=routes,
                      accessControl=[lst("nobody", "whitelist", ["192.0.2.1"]),
                                     lst("me", "blacklist", ["127.0.0.1"])])
    gw = gateway_factory(cfg)
    assert code(gw.url("/admin/x")) == 403
    assert code(gw.url("/public")) == 200
    cfg["security"] = {"accessControl": ["me"]}
    gw.reload(cfg)
    assert code(gw.url("/public")) == 403


def test_forwarded_addresses_trusted_and_spoofed(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[
        lst("bad", "blacklist", ["203.0.113.5"]),
        lst("partners", "whitelist", ["198.51.100.0/24", "127.0.0.1"])])
    srv = cfg["servers"][0]
    srv.update(accessControl=["bad"], clientIpSource="X-Forwarded-For",
               trustedProxies=["10.0.0.0/8"])
    gw = gateway_factory(cfg)
    # Untrusted peer (127.0.0.1 not in trustedProxies): the header is ignored either way.
    assert code(gw.url(), {"X-Forwarded-For": "203.0.113.5"}) == 200
    srv["accessControl"] = ["partners"]
    srv["trustedProxies"] = ["10.0.0.0/8"]
    gw.reload(cfg)
    cfg["accessControl"][1]["entries"] = ["198.51.100.0/24"]
    gw.reload(cfg)
    assert code(gw.url(), {"X-Forwarded-For": "198.51.100.7"}) == 403
    # Trusted peer: the right-most untrusted hop decides.
    srv["trustedProxies"] = ["127.0.0.1", "10.0.0.0/8"]
    srv["accessControl"] = ["bad"]
    gw.reload(cfg)
    assert code(gw.url(), {"X-Forwarded-For": "203.0.113.5"}) == 403
    assert code(gw.url(), {"X-Forwarded-For": "203.0.113.5, 10.2.3.4"}) == 403
    assert code(gw.url(), {"X-Forwarded-For": "203.0.113.5, 192.0.2.9"}) == 200


def test_add_del_acl_without_reload(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[
        lst("dyn", "blacklist", ["192.0.2.0/24"])])
    cfg["servers"][0]["accessControl"] = ["dyn"]
    gw = gateway_factory(cfg)
    gen = gw.status("show info")["generation"]
    assert code(gw.url()) == 200
    ans = gw.status("add acl dyn 127.0.0.0/8")
    assert ans.get("ok") is True, ans
    # Every worker sees it at once: try on many fresh connections.
    assert {code(gw.url()) for _ in range(10)} == {403}
    dyn = {x["id"]: x for x in gw.status("show acl")["lists"]}["dyn"]["dynamic"]
    assert [d["entry"] for d in dyn] == ["127.0.0.0/8"]
    assert gw.status("del acl dyn 127.0.0.0/8").get("ok") is True
    assert {code(gw.url()) for _ in range(10)} == {200}
    assert gw.status("show info")["generation"] == gen
    # Errors are precise.
    assert "unknown access-control list" in gw.status("add acl nope 1.2.3.4")["error"]
    assert "not an IP address" in gw.status("add acl dyn banana")["error"]
    assert "configuration file" in gw.status("del acl dyn 192.0.2.0/24")["error"]
    assert "no dynamic entry" in gw.status("del acl dyn 198.51.100.1")["error"]
    assert "usage" in gw.status("add acl dyn")["error"]


def test_dynamic_whitelist_entry(gateway_factory, tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[lst("allow", "whitelist", [])])
    cfg["servers"][0]["accessControl"] = ["allow"]
    gw = gateway_factory(cfg)
    assert code(gw.url()) == 200  # empty whitelist admits everyone
    assert gw.status("add acl allow 192.0.2.1")["ok"] is True
    assert code(gw.url()) == 403  # now only 192.0.2.1
    assert gw.status("add acl allow ::ffff:127.0.0.1")["ok"] is True  # mapped = IPv4
    assert code(gw.url()) == 200


def test_abnormal_autoblock(gateway_factory, tmp_path):
    port = free_port()
    routes = [
        {"id": "missing", "match": {"path": "/missing"}, "direct": {"status": 404}},
        {"id": "ok", "match": {"path": "/{**r}"}, "direct": {"status": 200}},
    ]
    cfg = base_config(tmp_path, port, routes=routes, abnormalIp={
        "window": "60s", "threshold": 3,
        "autoBlock": {"enabled": True, "threshold": 5, "duration": "2s"}})
    gw = gateway_factory(cfg)
    assert [code(gw.url("/missing")) for _ in range(5)] == [404] * 5
    assert code(gw.url("/fine")) == 403  # blocked for every worker
    ab = gw.status("show abnormal")
    me = [a for a in ab["addresses"] if a["ip"] == "127.0.0.1"][0]
    assert me["errors"] >= 5 and me["blocked"] is True and me["abnormal"] is True
    lists = {x["id"]: x for x in gw.status("show acl")["lists"]}
    assert [d["entry"] for d in lists["autoBlock"]["dynamic"]] == ["127.0.0.1"]
    # The block lifts by itself after its duration.
    time.sleep(2.2)
    assert code(gw.url("/fine")) == 200
    # And operators can lift one early.
    for _ in range(5):
        code(gw.url("/missing"))
    assert code(gw.url("/fine")) == 403
    assert gw.status("del acl autoBlock 127.0.0.1")["ok"] is True
    assert code(gw.url("/fine")) == 200


def test_empty_whitelist_admits_again_after_its_dynamic_entries_are_gone(gateway_factory,
                                                                         tmp_path):
    """Regression: whether a whitelist had dynamic entries was counted outside the acl zone, so
    a reload that rebuilt the zone (new size) left an empty whitelist denying everyone, and no
    add/del could repair it."""
    port = free_port()
    cfg = base_config(tmp_path, port, accessControl=[lst("w", "whitelist", [])])
    cfg["servers"][0]["accessControl"] = ["w"]
    gw = gateway_factory(cfg)
    assert code(gw.url()) == 200
    assert gw.status("add acl w 192.0.2.1")["ok"]
    assert code(gw.url()) == 403  # non-empty now, and we are not in it
    assert gw.status("add acl w 127.0.0.1")["ok"]
    assert code(gw.url()) == 200
    cfg["shm"] = {"accessControlZone": "2m"}
    gw.reload(cfg)
    lists = {x["id"]: x for x in gw.status("show acl")["lists"]}
    assert lists["w"]["dynamic"] == []
    assert code(gw.url()) == 200
    # and the count follows add and del exactly
    assert gw.status("add acl w 192.0.2.1")["ok"]
    assert code(gw.url()) == 403
    assert gw.status("del acl w 192.0.2.1")["ok"]
    assert code(gw.url()) == 200


def test_del_acl_says_the_entry_existed(gateway_factory, tmp_path):
    """del acl right after add acl removes an entry that existed, and says so."""
    cfg = base_config(tmp_path, free_port(), accessControl=[lst("dyn", "blacklist", [])])
    cfg["servers"][0]["accessControl"] = ["dyn"]
    gw = gateway_factory(cfg)
    ans = gw.status("add acl dyn 192.0.2.9")
    assert ans["ok"] is True and ans["action"] == "added" and ans["existed"] is False, ans
    assert gw.status("add acl dyn 192.0.2.9")["existed"] is True
    ans = gw.status("del acl dyn 192.0.2.9")
    assert ans["ok"] is True and ans["action"] == "deleted" and ans["existed"] is True, ans
    assert "no dynamic entry" in gw.status("del acl dyn 192.0.2.9")["error"]
    ans = gw.status("add acl dyn 2001:db8::/64")
    assert ans["existed"] is False, ans
    assert gw.status("del acl dyn 2001:db8::/64")["existed"] is True


def test_acl_command_errors_name_the_forms_it_takes(gateway_factory, tmp_path):
    """add/del acl take an address or a CIDR: a word with a dash is not an IP address (not a
    malformed a-b range); a well-formed range is pointed to the configuration file."""
    cfg = base_config(tmp_path, free_port(), accessControl=[lst("dyn", "blacklist", [])])
    cfg["servers"][0]["accessControl"] = ["dyn"]
    gw = gateway_factory(cfg)
    for verb in ("add", "del"):
        err = gw.status("%s acl dyn not-an-ip" % verb)["error"]
        assert err == '"not-an-ip": not an IP address', err
        err = gw.status("%s acl dyn 10.0.0.1-10.0.0.9" % verb)["error"]
        assert "ranges (a-b) belong in the configuration file" in err, err
        err = gw.status("%s acl dyn 10.0.0.0/33" % verb)["error"]
        assert "IPv4 prefix length must be 0..32" in err, err
        err = gw.status("%s acl dyn 10.0.0.1-host/8" % verb)["error"]
        assert "not an IP address" in err, err
    assert code(gw.url()) == 200  # nothing was added
