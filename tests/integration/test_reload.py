"""Synchronous `-s reload`, the status socket's `reload` command, watchConfig and systemd's
notify protocol (a Python datagram socket stands in for systemd's $NOTIFY_SOCKET)."""
import json
import os
import socket
import subprocess
import signal
import threading
import time

import pytest

from conftest import BINARY, Gateway, base_config, free_port, http_get, status_query, \
    wait_until


def direct(body):
    return [{"id": "d", "match": {"path": "/{**rest}"},
             "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": body}}]



def s_reload(gw, timeout=70):
    return subprocess.run([str(BINARY), "-s", "reload", "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=timeout)


def s_status(gw):
    return subprocess.run([str(BINARY), "-s", "status", "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=10)


# ---- -s reload ----

def test_s_reload_returns_once_the_new_generation_serves(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("one")))
    gen0 = gw.info()["generation"]
    for i in range(3):
        gw.write_config(dict(gw.config, routes=direct("two-%d" % i)))
        r = s_reload(gw)
        assert r.returncode == 0, r.stderr
        assert "generation %d serving" % (gen0 + 1 + i) in r.stdout
        # no waiting here: when -s reload returns, the new configuration answers
        assert gw.info()["generation"] == gen0 + 1 + i
        assert gw.info()["lastReload"]["result"] == "ok"
        assert http_get(gw.url("/")) == (200, ("two-%d" % i).encode())


def test_s_reload_fails_with_the_masters_reason(tmp_path, gateway_factory):
    """A file that is valid but cannot be applied (its new listener's port is taken): the
    master refuses it, -s reload prints why and exits non-zero, the old generation serves."""
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("old")))
    gen0 = gw.info()["generation"]
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        taken = blocker.getsockname()[1]
        servers = gw.config["servers"] + [{"id": "b", "listen": "127.0.0.1:%d" % taken}]
        gw.write_config(dict(gw.config, servers=servers, routes=direct("new")))
        r = s_reload(gw)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "reload failed" in r.stderr and "in use" in r.stderr, r.stderr
        info = gw.info()
        assert info["generation"] == gen0
        assert info["lastReload"]["result"] == "failed"
        assert "in use" in info["lastFailedReload"]["error"]
        assert http_get(gw.url("/")) == (200, b"old")
        out = s_status(gw).stdout
        assert "error:" in out and "in use" in out, out
    finally:
        blocker.close()
    # a later success keeps the last failure visible in the status
    gw.write_config(dict(gw.config, servers=gw.config["servers"][:1]))
    r = s_reload(gw)
    assert r.returncode == 0, r.stderr
    info = gw.info()
    assert info["lastReload"]["result"] == "ok" and info["lastReload"]["error"] is None
    assert "in use" in info["lastFailedReload"]["error"]
    out = s_status(gw).stdout
    assert "last failed:" in out and "in use" in out, out


def test_s_reload_of_a_file_that_does_not_load(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("old")))
    gw.config_path.write_text('{"workers": 2, "servers": [')
    r = s_reload(gw)
    assert r.returncode == 1
    assert str(gw.config_path) in r.stderr
    assert http_get(gw.url("/")) == (200, b"old")


def test_s_reload_without_a_master(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port()))
    gw.stop()
    r = s_reload(gw)
    assert r.returncode != 0
    assert "is it running" in r.stderr


def test_reload_command_waits_for_its_own_reload(tmp_path, gateway_factory):
    """Concurrent requests: each answer reports a reload that read the file after the request
    was made, and later commands on the same connection are answered after it."""
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("a")))
    gen0 = gw.info()["generation"]
    gw.write_config(dict(gw.config, routes=direct("b")))
    answers = []

    def ask():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(gw.status_socket)
        s.sendall(b"reload\nshow info\n")
        buf = b""
        while buf.count(b"\n") < 2:
            data = s.recv(65536)
            if not data:
                break
            buf += data
        s.close()
        answers.append([json.loads(line) for line in buf.split(b"\n")[:2]])

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert len(answers) == 4
    for reload_ans, info in answers:
        assert reload_ans["result"] == "ok", reload_ans
        assert reload_ans["generation"] > gen0
        assert info["generation"] >= reload_ans["generation"]
    # a retiring worker still drains the connections its listener accepted before it closed it
    wait_until(lambda: http_get(gw.url("/")) == (200, b"b"), 2, "the new generation's answer")


def test_reload_command_during_shutdown_is_answered(tmp_path, gateway_factory):
    """A graceful stop held open by an idle keep-alive connection: a reload asked meanwhile is
    refused at once instead of waiting for a reload that will never run."""
    import http.client
    gw = gateway_factory(base_config(tmp_path, free_port(), drainTimeout="5s"))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello"
    try:
        gw.signal(signal.SIGQUIT)
        time.sleep(0.3)
        assert gw.alive()
        t0 = time.monotonic()
        r = s_reload(gw)
        assert r.returncode == 1
        assert "stopping" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 3
    finally:
        conn.close()


# ---- watchConfig ----

def watching(tmp_path, body="one", **top):
    return base_config(tmp_path, free_port(), routes=direct(body), watchConfig=True, **top)


def test_watch_applies_an_in_place_write(tmp_path, gateway_factory):
    gw = gateway_factory(watching(tmp_path))
    assert gw.info()["watchConfig"] is True
    gen0 = gw.info()["generation"]
    gw.config_path.write_text(json.dumps(dict(gw.config, routes=direct("two"))))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"two"), 10, "the new body")
    assert gw.info()["generation"] == gen0 + 1
    assert "watchConfig: %s changed" % gw.config_path in gw.error_log()


def test_watch_applies_a_rename_over_the_file(tmp_path, gateway_factory):
    gw = gateway_factory(watching(tmp_path))
    gen0 = gw.info()["generation"]
    gw.write_config(dict(gw.config, routes=direct("renamed")))  # .tmp, then os.replace
    wait_until(lambda: http_get(gw.url("/")) == (200, b"renamed"), 10, "the new body")
    assert gw.info()["generation"] == gen0 + 1
    # and again: the directory watch survives the old inode's replacement
    gw.write_config(dict(gw.config, routes=direct("again")))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"again"), 10, "the second body")


def test_watch_refuses_an_invalid_file(tmp_path, gateway_factory):
    gw = gateway_factory(watching(tmp_path))
    gen0 = gw.info()["generation"]
    gw.config_path.write_text('{"workers": 2, "routes": [ oops')
    wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10, "a failed reload")
    info = gw.info()
    assert info["generation"] == gen0
    assert str(gw.config_path) in info["lastReload"]["error"]
    assert http_get(gw.url("/")) == (200, b"one")
    assert "reload failed" in gw.error_log()
    # the file fixed: applied
    gw.write_config(dict(gw.config, routes=direct("fixed")))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"fixed"), 10, "the fixed file")


def test_watch_never_reads_a_half_written_file(tmp_path, gateway_factory):
    """A writer that pauses mid-file: nothing happens until it closes the file."""
    gw = gateway_factory(watching(tmp_path))
    before = gw.info()
    text = json.dumps(dict(gw.config, routes=direct("whole")))
    with open(gw.config_path, "w") as f:
        f.write(text[:len(text) // 2])
        f.flush()
        time.sleep(1.5)  # three debounce periods
        info = gw.info()
        assert (info["reloads"], info["reloadFailures"]) == (before["reloads"],
                                                             before["reloadFailures"])
        f.write(text[len(text) // 2:])
    wait_until(lambda: http_get(gw.url("/")) == (200, b"whole"), 10, "the whole file")
    assert gw.info()["reloadFailures"] == before["reloadFailures"]


def test_watch_debounces_a_burst_of_writes(tmp_path, gateway_factory):
    gw = gateway_factory(watching(tmp_path))
    gen0 = gw.info()["generation"]
    for i in range(5):
        gw.write_config(dict(gw.config, routes=direct("burst-%d" % i)))
        time.sleep(0.1)
    wait_until(lambda: http_get(gw.url("/")) == (200, b"burst-4"), 10, "the last body")
    time.sleep(1.0)
    assert gw.info()["generation"] == gen0 + 1


def test_watch_is_off_by_default_and_follows_reloads(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("one")))
    assert gw.info()["watchConfig"] is False
    gen0 = gw.info()["generation"]
    gw.write_config(dict(gw.config, routes=direct("two")))
    time.sleep(1.5)
    assert gw.info()["generation"] == gen0
    assert http_get(gw.url("/")) == (200, b"one")
    # turned on by a reload, then off again by an edit it picks up itself
    gw.write_config(dict(gw.config, routes=direct("three"), watchConfig=True))
    assert s_reload(gw).returncode == 0
    assert gw.info()["watchConfig"] is True
    gw.write_config(dict(gw.config, routes=direct("four"), watchConfig=False))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"four"), 10, "the watched edit")
    assert gw.info()["watchConfig"] is False


# ---- watchConfig: the files the configuration names ----

def paged(tmp_path, **top):
    """Only /ok is routed: every other path is a 404 answered with pages/404.html."""
    pages = tmp_path / "pages"
    pages.mkdir(exist_ok=True)
    (pages / "404.html").write_text("first page\n")
    routes = [{"id": "ok", "match": {"path": "/ok"}, "direct": {"status": 200, "body": "ok"}}]
    return base_config(tmp_path, free_port(), routes=routes, watchConfig=True,
                       errorPages={"404": "pages/404.html"}, **top)


def page(gw):
    st, body = http_get(gw.url("/nothing"))
    assert st == 404
    return body


def replace(path, text):
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_watch_applies_a_rewritten_error_page(tmp_path, gateway_factory):
    gw = gateway_factory(paged(tmp_path))
    assert page(gw) == b"first page\n"
    gen0 = gw.info()["generation"]
    target = tmp_path / "pages" / "404.html"
    target.write_text("second page\n")
    wait_until(lambda: page(gw) == b"second page\n", 10, "the rewritten page")
    assert gw.info()["generation"] == gen0 + 1
    assert "watchConfig: %s changed" % target in gw.error_log()


def test_watch_applies_an_error_page_renamed_over(tmp_path, gateway_factory):
    gw = gateway_factory(paged(tmp_path))
    target = tmp_path / "pages" / "404.html"
    replace(target, "renamed page\n")
    wait_until(lambda: page(gw) == b"renamed page\n", 10, "the renamed page")
    # and again: the watch follows the name, not the replaced inode
    replace(target, "renamed again\n")
    wait_until(lambda: page(gw) == b"renamed again\n", 10, "the second rename")


def test_watch_never_applies_a_half_written_error_page(tmp_path, gateway_factory):
    gw = gateway_factory(paged(tmp_path))
    before = gw.info()
    with open(tmp_path / "pages" / "404.html", "w") as f:
        f.write("half ")
        f.flush()
        time.sleep(1.5)  # three debounce periods
        info = gw.info()
        assert (info["reloads"], info["reloadFailures"]) == (before["reloads"],
                                                             before["reloadFailures"])
        assert page(gw) == b"first page\n"
        f.write("and whole\n")
    wait_until(lambda: page(gw) == b"half and whole\n", 10, "the whole page")
    # the new generation serves before the master records the reload as done
    wait_until(lambda: gw.info()["reloads"] == before["reloads"] + 1, 10, "the reload recorded")


def test_watch_follows_the_files_the_serving_configuration_names(tmp_path, gateway_factory):
    """A page the configuration stops naming is no longer watched; the new one is."""
    gw = gateway_factory(paged(tmp_path))
    (tmp_path / "pages" / "other.html").write_text("other page\n")
    gw.write_config(dict(gw.config, errorPages={"404": "pages/other.html"}))
    wait_until(lambda: page(gw) == b"other page\n", 10, "the page the new file names")
    gen = gw.info()["generation"]
    (tmp_path / "pages" / "404.html").write_text("dropped\n")
    time.sleep(1.5)
    assert gw.info()["generation"] == gen
    (tmp_path / "pages" / "other.html").write_text("other, edited\n")
    wait_until(lambda: page(gw) == b"other, edited\n", 10, "the watched page")


def test_watch_retries_when_a_file_named_by_a_refused_configuration_appears(tmp_path,
                                                                             gateway_factory):
    gw = gateway_factory(paged(tmp_path))
    config = gw.config
    # with a comment: the names are looked up in the refused file as the loader reads it
    gw.write_config("// the page is not written yet\n" +
                    json.dumps(dict(config, errorPages={"404": "pages/later.html"})))
    gw.config = config  # the fixture reads paths from it
    wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10, "a failed reload")
    assert "later.html" in gw.info()["lastReload"]["error"]
    assert page(gw) == b"first page\n"
    (tmp_path / "pages" / "later.html").write_text("late page\n")
    wait_until(lambda: page(gw) == b"late page\n", 10, "the retried reload")
    assert gw.info()["lastReload"]["result"] == "ok"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)


def test_watch_reloads_when_a_certificate_is_replaced(tmp_path, gateway_factory):
    """The certificate is named by a cluster's httpClient (servers' `tls` is refused until the
    TLS transport exists); the master loads it at every reload all the same."""
    key, chain = tmp_path / "key.pem", tmp_path / "chain.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(chain), "-days", "2", "-subj", "/CN=one.test")
    cfg = base_config(tmp_path, free_port(), routes=direct("x"), watchConfig=True,
                      certificates=[{"id": "c", "chain": "chain.pem", "key": "key.pem"}],
                      clusters=[{"id": "cl", "httpClient": {"clientCertificate": "c"},
                                 "destinations": [{"id": "d",
                                                   "address": "http://127.0.0.1:%d" % free_port()}]}])
    gw = gateway_factory(cfg)
    gen0 = gw.info()["generation"]
    # a new certificate for the same key, written aside and renamed over the old one
    fresh = tmp_path / "chain.pem.new"
    openssl("req", "-x509", "-new", "-key", str(key), "-out", str(fresh), "-days", "3",
            "-subj", "/CN=two.test")
    os.replace(fresh, chain)
    wait_until(lambda: gw.info()["generation"] == gen0 + 1, 10, "a reload")
    assert gw.info()["lastReload"]["result"] == "ok"
    assert "watchConfig: %s changed" % chain in gw.error_log()
    # a broken key is refused, and the key fixed is applied
    good = key.read_bytes()
    key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10, "a refused key")
    assert gw.info()["generation"] == gen0 + 1
    key.write_bytes(good)
    wait_until(lambda: gw.info()["generation"] == gen0 + 2, 10, "the fixed key")


# ---- systemd notify ----

class NotifySocket:
    """A datagram socket where systemd's would be; collects the messages."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def _drain(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.messages.append(dict(line.split("=", 1)
                                      for line in data.decode().split("\n") if line))

    def wait_for(self, pred, timeout=10, what="a message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            for i, msg in enumerate(self.messages):
                if pred(msg):
                    del self.messages[:i + 1]
                    return msg
        raise AssertionError("no %s from the gateway; got %r" % (what, self.messages))

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path, monkeypatch):
    ns = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    yield ns
    ns.close()


def test_notify_ready_reloading_status_stopping(tmp_path, gateway_factory, notify):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("one")), wait=False)
    msg = notify.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
    assert msg["STATUS"] == "generation 1 serving, 2 workers"
    # READY=1 means serving: no retry here
    assert http_get(gw.url("/")) == (200, b"one")
    assert len(gw.workers()) == 2

    gw.write_config(dict(gw.config, routes=direct("two")))
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert s_reload(gw).returncode == 0
    msg = notify.wait_for(lambda m: m.get("RELOADING") == "1", what="RELOADING=1")
    usec = int(msg["MONOTONIC_USEC"])
    assert t0 * 1e6 <= usec <= time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    assert msg["STATUS"].startswith("reloading ")
    msg = notify.wait_for(lambda m: m.get("READY") == "1", what="READY=1 after the reload")
    assert msg["STATUS"] == "generation 2 serving, 2 workers; last reload ok"

    gw.config_path.write_text('{"workers": [')
    gw.signal(signal.SIGHUP)  # kill -HUP behaves the same
    notify.wait_for(lambda m: m.get("RELOADING") == "1", what="RELOADING=1 (HUP)")
    msg = notify.wait_for(lambda m: m.get("READY") == "1", what="READY=1 after a failure")
    assert msg["STATUS"].startswith("generation 2 serving, 2 workers; last reload failed: ")
    assert str(gw.config_path) in msg["STATUS"]

    gw.stop(graceful=True)
    msg = notify.wait_for(lambda m: "STOPPING" in m, what="STOPPING=1")
    assert msg["STOPPING"] == "1"


def test_notify_status_on_a_failed_start(tmp_path, notify):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        cfg = base_config(tmp_path, blocker.getsockname()[1])
        path = tmp_path / "taken.json"
        path.write_text(json.dumps(cfg))
        r = subprocess.run([str(BINARY), "-f", "-c", str(path)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1
        msg = notify.wait_for(lambda m: "STATUS" in m, what="STATUS=")
        assert msg["STATUS"].startswith("start-up failed: ") and "in use" in msg["STATUS"]
        assert "READY" not in msg
    finally:
        blocker.close()


def test_notify_abstract_socket(tmp_path, gateway_factory, monkeypatch):
    name = "fastgateway-test-%d" % os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        gateway_factory(base_config(tmp_path, free_port()))
        assert b"READY=1" in sock.recv(4096).split(b"\n")
    finally:
        sock.close()


# ---- a configuration reached through symlinks ----

def configmap(tmp_path, cfg):
    """A Kubernetes ConfigMap volume's layout: cfg.json -> ..data/cfg.json, ..data -> a
    timestamped directory; swap() publishes new content by renaming a new ..data link over
    the old one and removing the old directory, as the kubelet does."""
    d = tmp_path / "cm"
    d.mkdir()
    state = {"n": 0}

    def swap(content):
        state["n"] += 1
        ts = d / ("..2026_%d" % state["n"])
        ts.mkdir()
        (ts / "cfg.json").write_text(json.dumps(content))
        old = os.readlink(d / "..data") if (d / "..data").is_symlink() else None
        os.symlink(ts.name, d / "..data_tmp")
        os.rename(d / "..data_tmp", d / "..data")
        if old:
            for f in (d / old).iterdir():
                f.unlink()
            (d / old).rmdir()

    swap(cfg)
    os.symlink("..data/cfg.json", d / "cfg.json")
    return d / "cfg.json", swap


@pytest.fixture
def linked_gateway(tmp_path):
    """Starts a gateway on configmap()'s link; stops it at the end."""
    started = []

    def start(cfg):
        link, swap = configmap(tmp_path, cfg)
        gw = Gateway(cfg, tmp_path, "unused.json")
        gw.config_path = link
        started.append(gw)
        return gw.start(), swap

    yield start
    for gw in started:
        try:
            gw.stop(graceful=False, timeout=5)
        except Exception:
            gw.cleanup()


def test_s_reload_follows_a_configmap_symlink_swap(tmp_path, linked_gateway):
    """Regression: the file's path was resolved once at start, so a reload after the ..data
    link was swapped read the old target (or failed once it was removed)."""
    cfg = base_config(tmp_path, free_port(), routes=direct("one"))
    gw, swap = linked_gateway(cfg)
    assert gw.info()["configFile"] == str(gw.config_path)
    for body in ("two", "three"):
        swap(dict(cfg, routes=direct(body)))
        r = s_reload(gw)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: http_get(gw.url("/")) == (200, body.encode()), 5, "the new body")


def test_watch_follows_a_configmap_symlink_swap(tmp_path, linked_gateway):
    """With watchConfig, renaming a new ..data link over the old one is a change of the file:
    it reloads, and the watch follows the new chain for the next swap."""
    cfg = base_config(tmp_path, free_port(), routes=direct("one"), watchConfig=True)
    gw, swap = linked_gateway(cfg)
    gen0 = gw.info()["generation"]
    swap(dict(cfg, routes=direct("two")))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"two"), 10, "the swapped file")
    wait_until(lambda: gw.info()["generation"] == gen0 + 1, 5, "the generation committed")
    swap(dict(cfg, routes=direct("three")))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"three"), 10, "the second swap")
    # an edit of the file the chain ends at is seen too
    target = gw.config_path.parent / os.readlink(gw.config_path.parent / "..data") / "cfg.json"
    target.write_text(json.dumps(dict(cfg, routes=direct("four"))))
    wait_until(lambda: http_get(gw.url("/")) == (200, b"four"), 10, "the in-place edit")


# ---- the command line with a file that does not load ----

def test_s_status_and_stop_reach_the_master_while_the_file_is_broken(tmp_path, gateway_factory):
    """Regression: -s status and -s stop parsed the whole file to find statusSocket and
    pidFile, so while the file was broken the status (with the failed reload's error) was out
    of reach. They fall back to a tolerant scan (comments, nested keys, relative paths);
    -s reload still refuses the file with its parse error."""
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("one")))
    assert gw.config["statusSocket"] == str(tmp_path / "status.sock")
    assert gw.config["pidFile"] == str(tmp_path / "fastgateway.pid")
    gw.config_path.write_text(
        '// edited by hand\n'
        '{ "servers": [ { "statusSocket": "/nowhere.sock", "pidFile": "/nowhere.pid" } ],\n'
        '  "statusSocket": "status.sock", /* relative to this file */ "pidFile": "fastgateway.pid",\n'
        '  "routes": [ oops\n')
    r = s_reload(gw)
    assert r.returncode == 1
    assert "%s:4:" % gw.config_path in r.stderr, r.stderr
    gw.signal(signal.SIGHUP)  # the master tries the file itself and keeps serving
    wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10, "the failed reload")
    r = s_status(gw)
    assert r.returncode == 0, r.stderr
    assert "%s:4:" % gw.config_path in r.stderr  # the load error
    assert "last: failed" in r.stdout and "error: %s:4:" % gw.config_path in r.stdout, r.stdout
    assert http_get(gw.url("/")) == (200, b"one")
    r = subprocess.run([str(BINARY), "-s", "stop", "-c", str(gw.config_path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    gw.proc.wait(timeout=10)


def test_s_status_of_a_broken_file_without_the_keys_uses_the_defaults(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{ "workers": 2, "routes": [ oops')
    r = subprocess.run([str(BINARY), "-s", "status", "-c", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert "%s:1:" % path in r.stderr and "/run/fastgateway.sock" in r.stderr, r.stderr


@pytest.mark.parametrize("text,pid_file,sock", [
    ('{"a": "}{[", "statusSocket": "/x/s.sock", "pidFile": "p.pid", oops',
     "{dir}/p.pid", "/x/s.sock"),
    ('{"n": {"statusSocket": "/no", "pidFile": "/no"}, "l": [{"statusSocket": "/no"}],\n'
     ' "statusSocket": "/yes.sock" ,, ', "/run/fastgateway.pid", "/yes.sock"),
    ('// "pidFile": "/comment.pid"\n/* "statusSocket": "/c.sock" */ '
     '{"statusSocket": "/d\\"q.sock", "pidFile": "sub/./f.pid" x', "{dir}/sub/./f.pid",
     '/d"q.sock'),
    ('{"statusSocket": "/cut', "/run/fastgateway.pid", "/run/fastgateway.sock"),
], ids=["braces-in-strings", "nested-keys-ignored", "comments-and-escapes", "unterminated"])
def test_tolerant_scan_of_a_broken_file(tmp_path, text, pid_file, sock):
    path = tmp_path / "broken.json"
    path.write_text(text)
    r = subprocess.run([str(BINARY), "-s", "status", "-c", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert ("its pidFile %s and statusSocket %s are used as found in it"
            % (pid_file.format(dir=tmp_path), sock)) in r.stderr, r.stderr


def test_reload_requested_during_a_reload_runs_after_it(tmp_path, gateway_factory):
    """A HUP that arrives while a reload is in progress is queued, then run: the file written
    in between is the one served at the end. The first reload is held up by its workers'
    first health round (a destination that never answers, 1 s probe timeout)."""
    from conftest import Blackhole
    hole = Blackhole()
    try:
        gw = gateway_factory(base_config(tmp_path, free_port(), routes=direct("a")))
        gen0 = gw.info()["generation"]
        slow = dict(gw.config, routes=direct("b") + [
            {"id": "p", "match": {"path": "/probe"}, "clusterId": "c"}],
            clusters=[{"id": "c", "destinations": [
                {"id": "d", "address": "http://127.0.0.1:%d" % hole.port}],
                "healthCheck": {"active": {"interval": "10s", "timeout": "1s"}}}])
        gw.write_config(slow)
        gw.signal(signal.SIGHUP)
        time.sleep(0.3)
        gw.write_config(dict(gw.config, routes=direct("c"), clusters=[]))
        gw.signal(signal.SIGHUP)
        wait_until(lambda: http_get(gw.url("/")) == (200, b"c"), 10, "the second file served")
        assert "reload requested while one is in progress: queued" in gw.error_log()
        assert gw.info()["generation"] == gen0 + 2
    finally:
        hole.close()
