"""`fastgateway -t` on invalid configurations: exit 1 and one line "FILE: json.path: reason"
naming the offending key (syntax errors: "FILE:LINE:COL: reason"); valid ones exit 0."""
import copy
import json
import os
import re
import subprocess

import pytest

from conftest import BINARY, base_config, free_port

TIMEOUT = 10


def run(args, cwd=None):
    return subprocess.run([str(BINARY)] + args, capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd, stdin=subprocess.DEVNULL)


def write(tmp_path, cfg, name="bad.json"):
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
    return path


def cluster(cid="c1", address="http://127.0.0.1:9"):
    return {"id": cid, "destinations": [{"id": "d1", "address": address}]}


def proxy_route(rid="r1", cluster_id="c1", path="/api/{**rest}"):
    return {"id": rid, "match": {"path": path}, "clusterId": cluster_id}


def direct_route(rid="d", path="/{**catchall}"):
    return {"id": rid, "match": {"path": path}, "direct": {"status": 200, "body": "x"}}


def valid(tmp_path):
    return base_config(tmp_path, free_port(), routes=[proxy_route(), direct_route()],
                       clusters=[cluster()])


def mutate(tmp_path, fn):
    cfg = copy.deepcopy(valid(tmp_path))
    fn(cfg)
    return cfg


def set_path(cfg, dotted, value):
    """set_path(cfg, "servers.0.listen", v); value DELETE removes the key."""
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    obj = cfg
    for k in keys[:-1]:
        obj = obj[k]
    if value is DELETE:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value


DELETE = object()

# (case id, mutation as (dotted path, value) or callable, key path the message must name)
CASES = [
    ("unknown-top-level-key", ("wokers", 2), "wokers"),
    ("unknown-nested-key", ("servers.0.lisen", "127.0.0.1:1"), "servers[0].lisen"),
    ("unknown-key-in-destination", ("clusters.0.destinations.0.adress", "http://x"),
     "clusters[0].destinations[0].adress"),
    ("bad-type-workers", ("workers", "two"), "workers"),
    ("bad-type-backlog", ("servers.0.backlog", "big"), "servers[0].backlog"),
    ("bad-type-routes", ("routes", {"id": "x"}), "routes"),
    ("duplicate-route-id", lambda c: c["routes"].append(direct_route("r1", "/other")),
     "routes[2].id"),
    ("duplicate-cluster-id", lambda c: c["clusters"].append(cluster("c1")), "clusters[1].id"),
    ("duplicate-destination-id",
     lambda c: c["clusters"][0]["destinations"].append({"id": "d1", "address": "http://127.0.0.1:2"}),
     "clusters[0].destinations[1].id"),
    ("dangling-cluster-id", ("routes.0.clusterId", "nope"), "routes[0].clusterId"),
    ("dangling-server-ref", ("routes.0.servers", ["nosuchserver"]), "routes[0].servers"),
    ("bad-url-scheme", ("clusters.0.destinations.0.address", "htp://x"),
     "clusters[0].destinations[0].address"),
    ("bad-url-port", ("clusters.0.destinations.0.address", "http://127.0.0.1:70000"),
     "clusters[0].destinations[0].address"),
    ("bad-duration", ("shutdownTimeout", "10 parsecs"), "shutdownTimeout"),
    ("bad-duration-nested", ("servers.0.timeouts", {"header": "5x"}),
     "servers[0].timeouts.header"),
    ("bad-size", ("shm", {"size": "lots"}), "shm.size"),
    ("bad-listen-port", ("servers.0.listen", "127.0.0.1:99999"), "servers[0].listen"),
    ("bad-listen-host", ("servers.0.listen", "not an address"), "servers[0].listen"),
    ("missing-listen", ("servers.0.listen", DELETE), "servers[0]"),
    ("missing-destinations-address", ("clusters.0.destinations.0.address", DELETE),
     "clusters[0].destinations[0]"),
    ("route-without-kind", ("routes.1.direct", DELETE), "routes[1]"),
    ("route-two-kinds", ("routes.0.direct", {"status": 200}), "routes[0]"),
    ("bad-enum-lb-policy", ("clusters.0.loadBalancingPolicy", "Fastest"),
     "clusters[0].loadBalancingPolicy"),
    ("bad-enum-header-mode",
     ("routes.0.match.headers", [{"name": "X-A", "values": ["1"], "mode": "Exactly"}]),
     "routes[0].match.headers[0].mode"),
    ("bad-enum-log-level", ("log.level", "loud"), "log.level"),
    ("bad-direct-status", ("routes.1.direct.status", 99), "routes[1].direct.status"),
    ("bad-workers-count", ("workers", -3), "workers"),
    # regression: 200 passed -t, then failed at start (the worker table holds 2 x 128)
    ("too-many-workers", ("workers", 200), "workers"),
    # templates and locations that could never do what they say
    ("path-param-twice", ("routes.0.match.path", "/{a}/{A}"), "routes[0].match.path"),
    ("path-dot-segment", ("routes.0.match.path", "/a/../b"), "routes[0].match.path"),
    ("path-query-in-literal", ("routes.0.match.path", "/a?b"), "routes[0].match.path"),
    ("redirect-unknown-variable",
     lambda c: c["routes"].append({"id": "rd", "match": {"path": "/old/{id}"},
                                   "redirect": {"location": "/new/{idd}"}}),
     "routes[2].redirect.location"),
    ("host-star-dot", ("routes.0.match.hosts", ["*."]), "routes[0].match.hosts[0]"),
    ("tunnel-handshake-timeout-too-short", ("tunnels", {"handshakeTimeout": "99ms"}),
     "tunnels.handshakeTimeout"),
    ("tunnel-handshake-timeout-too-long", ("tunnels", {"handshakeTimeout": "6m"}),
     "tunnels.handshakeTimeout"),
    ("tunnel-handshake-timeout-not-a-duration", ("tunnels", {"handshakeTimeout": "soon"}),
     "tunnels.handshakeTimeout"),
]


def check_error(proc, cfg_path, key_path):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines, "no error message on stderr"
    prefix = "%s: " % cfg_path
    hits = [l for l in lines if l.startswith(prefix) and key_path in l[len(prefix):]]
    assert hits, "stderr does not name %r after %r:\n%s" % (key_path, prefix, proc.stderr)
    # the key path comes first, then the reason
    rest = hits[0][len(prefix):]
    assert rest.startswith(key_path), rest
    assert len(rest) > len(key_path) + 2, "no reason given: %r" % hits[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_config(tmp_path, case):
    _, change, key_path = case
    if callable(change):
        cfg = mutate(tmp_path, change)
    else:
        cfg = mutate(tmp_path, lambda c: set_path(c, change[0], change[1]))
    path = write(tmp_path, cfg)
    check_error(run(["-t", "-c", str(path)]), path, key_path)


def test_distinct_messages_for_distinct_errors(tmp_path):
    """Not one generic message: each invalid config gets its own reason."""
    seen = set()
    for name, change, key_path in CASES[:12]:
        cfg = mutate(tmp_path, change if callable(change)
                     else (lambda c, ch=change: set_path(c, ch[0], ch[1])))
        path = write(tmp_path, cfg)
        seen.add(run(["-t", "-c", str(path)]).stderr.strip())
    assert len(seen) == 12


def test_syntax_error_line_and_column(tmp_path):
    text = '{\n  "workers": 1,\n  "servers": [ { "id": "a" "listen": "127.0.0.1:1" } ]\n}\n'
    path = write(tmp_path, text)
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1
    m = re.search(re.escape(str(path)) + r":(\d+):(\d+): \S", proc.stderr)
    assert m, proc.stderr
    assert int(m.group(1)) == 3, proc.stderr
    assert 24 <= int(m.group(2)) <= 36, proc.stderr


def test_trailing_garbage_is_syntax_error(tmp_path):
    path = write(tmp_path, json.dumps(valid(tmp_path)) + "\n}\n")
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1
    assert re.search(re.escape(str(path)) + r":\d+:\d+: ", proc.stderr), proc.stderr


def test_top_level_not_object(tmp_path):
    path = write(tmp_path, "[1, 2]\n")
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1
    assert str(path) in proc.stderr


def test_missing_file(tmp_path):
    path = tmp_path / "does-not-exist.json"
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1
    assert str(path) in proc.stderr


def test_valid_config_passes(tmp_path):
    path = write(tmp_path, valid(tmp_path), "good.json")
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_comments_allowed(tmp_path):
    body = json.dumps(valid(tmp_path), indent=2)
    text = "// FastGateway test config\n" + body.replace(
        '"workers": 2,', '"workers": 2, // two workers\n  // a whole-line comment', 1)
    assert "// two workers" in text
    path = write(tmp_path, text, "comments.json")
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_durations_and_sizes_accept_units(tmp_path):
    cfg = valid(tmp_path)
    cfg["shutdownTimeout"] = "5m"
    cfg["servers"][0]["timeouts"] = {"header": "500ms", "keepAlive": "30s"}
    cfg["servers"][0]["limits"] = {"maxHeaderSize": "64k", "maxRequestBodySize": "64m"}
    proc = run(["-t", "-c", str(write(tmp_path, cfg, "units.json"))])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("value", ["99ms", "301s", 0])
def test_tunnel_handshake_timeout_out_of_range(tmp_path, value):
    cfg = valid(tmp_path)
    cfg["tunnels"] = {"handshakeTimeout": value}
    path = write(tmp_path, cfg)
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 1, proc.stderr
    assert "%s: tunnels.handshakeTimeout: must be between 100ms and 5m" % path in proc.stderr


@pytest.mark.parametrize("value", ["100ms", "5m", 2])
def test_tunnel_handshake_timeout_bounds_accepted(tmp_path, value):
    cfg = valid(tmp_path)
    cfg["tunnels"] = {"handshakeTimeout": value}
    proc = run(["-t", "-c", str(write(tmp_path, cfg, "ok.json"))])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_start_with_bad_config_exits_1(tmp_path, foreground):
    cfg = mutate(tmp_path, lambda c: set_path(c, "clusters.0.destinations.0.address", "htp://x"))
    path = write(tmp_path, cfg)
    args = (["-f"] if foreground else []) + ["-c", str(path)]
    proc = run(args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "clusters[0].destinations[0].address" in proc.stderr
    # nothing left behind: no pid file with a live process, nothing listening
    pid_file = cfg["pidFile"]
    if os.path.exists(pid_file):
        pid = int(open(pid_file).read().strip() or 0)
        assert pid == 0 or not os.path.exists("/proc/%d" % pid)
    assert not os.path.exists(cfg["statusSocket"])


# ---- what the loader reads: a regular file of bounded size, whatever -c names ----

MAX_CONFIG_BYTES = 64 * 1024 * 1024  # FG_CONFIG_MAX_FILE_SIZE, docs/config.md


def check_refused(proc, path, why):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    line = proc.stderr.strip().splitlines()[0]
    prefix = "%s: " % path
    assert line.startswith(prefix), proc.stderr
    assert why in line[len(prefix):], proc.stderr


@pytest.mark.parametrize("device,why", [("/dev/zero", "character device"),
                                        ("/dev/urandom", "character device")],
                         ids=["dev-zero", "dev-urandom"])
def test_device_is_refused(device, why):
    """A device never ends: the loader refuses it instead of reading until the OOM killer."""
    check_refused(run(["-t", "-c", device]), device, why)


def test_fifo_is_refused(tmp_path):
    """Nobody writes to the FIFO: opening or reading it must not block."""
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    check_refused(run(["-t", "-c", str(fifo)]), fifo, "FIFO")


def test_directory_is_refused(tmp_path):
    check_refused(run(["-t", "-c", str(tmp_path)]), tmp_path, "directory")


def test_symlink_to_device_is_refused(tmp_path):
    link = tmp_path / "fastgateway.json"
    os.symlink("/dev/zero", link)
    check_refused(run(["-t", "-c", str(link)]), link, "character device")


def test_symlink_to_regular_file_is_followed(tmp_path):
    target = write(tmp_path, valid(tmp_path), "real.json")
    link = tmp_path / "link.json"
    os.symlink(target, link)
    proc = run(["-t", "-c", str(link)])
    assert proc.returncode == 0, proc.stderr


def test_oversized_file_is_refused(tmp_path):
    """A sparse file one byte over the limit: refused by its size, before it is read."""
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)
    check_refused(run(["-t", "-c", str(path)]), path, "64 MiB")


def test_file_at_the_limit_is_read(tmp_path):
    """Exactly the limit is allowed: a valid configuration padded with spaces to 64 MiB."""
    text = json.dumps(valid(tmp_path))
    path = tmp_path / "padded.json"
    with open(path, "w") as f:
        f.write(text)
        f.write(" " * (MAX_CONFIG_BYTES - len(text)))
    assert path.stat().st_size == MAX_CONFIG_BYTES
    proc = run(["-t", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_reload_from_a_fifo_fails_and_keeps_serving(tmp_path, gateway_factory):
    """The master reads the file on SIGHUP too: a FIFO in its place fails the reload at once
    instead of blocking the master."""
    gw = gateway_factory(valid(tmp_path))
    os.unlink(gw.config_path)
    os.mkfifo(gw.config_path)
    last = gw.reload(expect_ok=False, timeout=10)
    assert "FIFO" in last.get("error", ""), last
    assert gw.info()["reloadFailures"] == 1


# ---- load time grows with n log n of routes, not n^2 ----

def many_routes_config(tmp_path, n, nclusters=100):
    routes = []
    for i in range(n):
        if i % 2:
            routes.append({"id": "r%d" % i, "order": n - i,
                           "match": {"path": "/api/%d/{**rest}" % i,
                                     "hosts": ["h%d.example.com" % (i % 50)]},
                           "clusterId": "c%d" % (i % nclusters)})
        else:
            routes.append({"id": "r%d" % i, "order": n - i, "match": {"path": "/d/%d" % i},
                           "direct": {"status": 200, "body": "x"}})
    clusters = [cluster("c%d" % j) for j in range(nclusters)]
    return base_config(tmp_path, free_port(), routes=routes, clusters=clusters)


def test_100000_routes_load(tmp_path):
    """100,000 routes (descending `order`, so no input order makes sorting cheap) with 100
    clusters pass -t well inside a generous bound; with a quadratic loader they take minutes."""
    path = write(tmp_path, many_routes_config(tmp_path, 100000), "many.json")
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr


def test_duplicate_id_among_many_routes_names_the_first(tmp_path):
    """The hashed duplicate check still points at the first occurrence."""
    cfg = many_routes_config(tmp_path, 5000)
    cfg["routes"].append(direct_route("r1234", "/dup"))
    path = write(tmp_path, cfg)
    proc = run(["-t", "-c", str(path)])
    check_error(proc, path, "routes[5000].id")
    assert "first at routes[1234]" in proc.stderr, proc.stderr


def test_many_clusters_and_destinations_load(tmp_path):
    """30,000 clusters of 3 destinations each, every route referring to one: -t scales in
    clusters and destinations as it does in routes."""
    cfg = many_routes_config(tmp_path, 30000, nclusters=30000)
    for cl in cfg["clusters"]:
        cl["destinations"] = [{"id": "d%d" % k, "address": "http://127.0.0.1:%d" % (9000 + k)}
                              for k in range(3)]
    path = write(tmp_path, cfg, "clusters.json")
    proc = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
