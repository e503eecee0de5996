"""Process model: reload, broken reload, worker respawn, graceful and fast stop, log reopen,
daemon mode, -s signals, -v and -h."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BINARY, base_config, free_port, http_get, http_request, status_query


def direct(body, rid="d", path="/{**catchall}"):
    return {"id": rid, "match": {"path": path},
            "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": body}}


def proxy_config(tmp_path, upstream, workers=2, **top):
    routes = [{"id": "up", "match": {"path": "/{**rest}"}, "clusterId": "echo"}]
    clusters = [{"id": "echo", "destinations": [{"id": "e1", "address": upstream.url}]}]
    return base_config(tmp_path, free_port(), routes=routes, clusters=clusters,
                       workers=workers, **top)


def wait_until(pred, timeout=5.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid):
    """Live processes whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


class Loader(threading.Thread):
    """Sends requests on fresh connections until stopped; records status and latency."""

    def __init__(self, url, timeout=3.0):
        super().__init__(daemon=True)
        self.url, self.timeout = url, timeout
        self.results = []  # (status or exception text, seconds, monotonic start)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                status, _ = http_get(self.url, timeout=self.timeout)
            except Exception as e:  # recorded, asserted by the test
                status = "%s: %s" % (type(e).__name__, e)
            self.results.append((status, time.monotonic() - t0, t0))
            time.sleep(0.005)

    def finish(self):
        self.halt.set()
        self.join(10)
        return self.results


# ---- reload ----

def test_reload_changes_direct_response(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("old")]))
    assert http_get(gw.url("/x")) == (200, b"old")
    gen0 = gw.info()["generation"]
    old_pids = {w["pid"] for w in gw.workers()}
    assert len(old_pids) == 2

    cfg = dict(gw.config, routes=[direct("new")])
    last = gw.reload(cfg)
    assert last["result"] == "ok"
    assert http_get(gw.url("/x")) == (200, b"new")
    info = gw.info()
    assert info["generation"] == gen0 + 1
    assert info["reloads"] == 1 and info["reloadFailures"] == 0
    new_workers = gw.workers()
    assert len(new_workers) == 2
    assert all(w["generation"] == gen0 + 1 for w in new_workers)
    assert not old_pids & {w["pid"] for w in new_workers}
    # the old generation is retired: its processes exit (idle, so well before shutdownTimeout)
    wait_until(lambda: not any(pid_alive(p) for p in old_pids), 8, what="old workers to exit")
    # every request after the reload sees the new body
    for _ in range(20):
        assert http_get(gw.url("/y")) == (200, b"new")


def test_reload_broken_file_keeps_serving(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("old")]))
    pids = {w["pid"] for w in gw.workers()}
    gen0 = gw.info()["generation"]

    good = gw.config
    gw.config_path.write_text('{ "workers": 2, "servers": [ }')
    last = gw.reload(expect_ok=False)
    assert last["result"] == "failed"
    assert str(gw.config_path) in last["error"] or gw.config_path.name in last["error"]
    assert re.search(r":\d+:\d+:", last["error"]), last["error"]
    info = gw.info()
    assert info["generation"] == gen0
    assert info["reloadFailures"] == 1
    assert http_get(gw.url("/")) == (200, b"old")
    assert {w["pid"] for w in gw.workers()} == pids
    assert gw.alive()
    assert "failed" in gw.error_log().lower() or "error" in gw.error_log().lower()

    # a semantically invalid file fails too, naming the key
    bad = json.loads(json.dumps(good))
    bad["routes"][0]["direct"]["colour"] = "red"
    last = gw.reload(bad, expect_ok=False)
    assert "routes[0].direct.colour" in last["error"], last
    assert gw.info()["reloadFailures"] == 2
    assert http_get(gw.url("/")) == (200, b"old")

    # fixing the file recovers
    last = gw.reload(dict(good, routes=[direct("fixed")]))
    assert last["result"] == "ok"
    assert http_get(gw.url("/")) == (200, b"fixed")
    assert gw.info()["generation"] == gen0 + 1


def test_reload_under_traffic_loses_nothing(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("v0")]))
    loader = Loader(gw.url("/"))
    loader.start()
    try:
        for i in range(1, 6):
            gw.reload(dict(gw.config, routes=[direct("v%d" % i)]))
            time.sleep(0.1)
    finally:
        results = loader.finish()
    assert len(results) > 20
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    assert http_get(gw.url("/")) == (200, b"v5")


def test_reload_changing_workers_and_addresses_loses_nothing(tmp_path, gateway_factory):
    """Growing and shrinking the worker count and adding and removing a listen address: every
    connection that reached the kept address is served (retired sockets are drained by their
    old worker; docs/operations.md, "Listeners")."""
    cfg = base_config(tmp_path, free_port(), routes=[direct("ok")], workers=2)
    gw = gateway_factory(cfg)
    loaders = [Loader(gw.url("/"), timeout=5.0) for _ in range(3)]
    for ld in loaders:
        ld.start()
    extra_port = free_port()
    try:
        for workers in (3, 1, 4, 2):
            gw.reload(dict(gw.config, workers=workers))
            assert len(gw.workers()) == workers
            time.sleep(0.2)
        extra = {"id": "extra", "listen": "127.0.0.1:%d" % extra_port}
        gw.reload(dict(gw.config, servers=gw.config["servers"] + [extra]))
        assert http_get("http://127.0.0.1:%d/" % extra_port) == (200, b"ok")
        gw.reload(dict(gw.config, servers=gw.config["servers"][:1], workers=3))
        time.sleep(0.2)
    finally:
        results = [r for ld in loaders for r in ld.finish()]
    assert len(results) > 50
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    # The removed address is closed once its last worker left.
    wait_until(lambda: not _port_listening(extra_port), 10, what="removed address to close")


def _port_listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_reload_answers_keepalive_with_connection_close(tmp_path, gateway_factory):
    cfg = base_config(tmp_path, free_port(), routes=[direct("old")], drainTimeout="5s")
    gw = gateway_factory(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"old")
        assert (r.getheader("Connection") or "").lower() != "close"
        gw.reload(dict(gw.config, routes=[direct("new")]))
        # the old worker drains: it answers the next request, then closes the connection
        conn.request("GET", "/")
        r = conn.getresponse()
        assert r.status == 200
        r.read()
        assert (r.getheader("Connection") or "").lower() == "close"
    finally:
        conn.close()
    assert http_get(gw.url("/")) == (200, b"new")


def test_s_reload(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("one")]))
    gen0 = gw.info()["generation"]
    gw.write_config(dict(gw.config, routes=[direct("two")]))
    proc = subprocess.run([str(BINARY), "-s", "reload", "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: http_get(gw.url("/")) == (200, b"two"), 10, what="new body")
    wait_until(lambda: gw.info()["generation"] == gen0 + 1, 5, what="generation + 1")


def test_s_reopen_and_signal_without_master(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port()))
    proc = subprocess.run([str(BINARY), "-s", "reopen", "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert gw.alive()
    gw.stop()
    # no master: -s fails with a message instead of signalling a random process
    proc = subprocess.run([str(BINARY), "-s", "reload", "-c", str(gw.config_path)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    assert proc.stderr.strip()


# ---- workers dying ----

def test_sigkill_worker_is_respawned(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("alive")]))
    workers = sorted(gw.workers(), key=lambda w: w["slot"])
    assert [w["slot"] for w in workers] == [0, 1]
    victim, other = workers
    loader = Loader(gw.url("/"), timeout=5.0)
    loader.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        def respawned():
            for w in gw.all_workers():
                if (w["slot"] == victim["slot"] and w["pid"] != victim["pid"]
                        and w["state"] == "ready"):
                    return w
            return None
        new = wait_until(respawned, 5, 0.02, "slot %d respawned" % victim["slot"])
        ready_after = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        results = loader.finish()
    assert ready_after < 1.5, ready_after
    assert new["generation"] == victim["generation"]
    assert new["restarts"] >= 1
    assert not pid_alive(victim["pid"])
    still = {w["slot"]: w for w in gw.all_workers()}
    assert still[other["slot"]]["pid"] == other["pid"]  # the other worker was not touched
    # the one request that the victim had in flight may be lost (our loader sends one at a
    # time); every later one must succeed, served by the other worker or the new one
    bad = [r for r in results if r[0] != 200]
    assert len(bad) <= 1, bad[:5]
    assert all(abs(r[2] - t0) < 0.2 for r in bad), (t0, bad)
    slow = [r for r in results if r[1] >= 1.0]
    assert not slow, slow[:5]
    assert len(results) > 20
    log = gw.error_log()
    assert str(victim["pid"]) in log and re.search(r"signal 9|SIGKILL|killed", log, re.I), log
    assert http_get(gw.url("/")) == (200, b"alive")


# ---- stopping ----

def test_quit_lets_slow_request_finish(tmp_path, gateway_factory, echo_upstream):
    gw = gateway_factory(proxy_config(tmp_path, echo_upstream))
    result = {}

    def slow():
        t0 = time.monotonic()
        try:
            result["status"], result["body"] = http_get(gw.url("/slow?ms=1500"), timeout=10)
        except Exception as e:
            result["error"] = repr(e)
        result["time"] = time.monotonic() - t0

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.4)  # the request is now at the upstream
    gw.signal(signal.SIGQUIT)
    # stops accepting quickly
    wait_until(lambda: not _accepts(gw.port), 5, what="listener closed")
    t.join(10)
    assert "error" not in result, result
    assert result["status"] == 200
    assert json.loads(result["body"])["path"] == "/slow"
    assert result["time"] >= 1.4
    assert gw.proc.wait(10) == 0
    assert not group_members(gw.pid)


def _accepts(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.settimeout(2)
            return bool(s.recv(1))
    except OSError:
        return False


def _fast_stop_with_a_request_in_flight(gw, sig):
    """Sends sig to gw while a 5 s request is in flight: the master must exit 0 within 2 s."""
    t = threading.Thread(target=lambda: _swallow(http_get, gw.url("/slow?ms=5000"), 10),
                         daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    gw.signal(sig)
    assert gw.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0


def test_term_exits_quickly(tmp_path, gateway_factory, echo_upstream):
    gw = gateway_factory(proxy_config(tmp_path, echo_upstream, shutdownTimeout="30s"))
    _fast_stop_with_a_request_in_flight(gw, signal.SIGTERM)
    wait_until(lambda: not group_members(gw.pid), 2, what="workers gone")
    assert not os.path.exists(gw.config["pidFile"])


def test_int_is_fast_stop(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port()))
    gw.signal(signal.SIGINT)
    assert gw.proc.wait(5) == 0
    wait_until(lambda: not group_members(gw.pid), 2, what="workers gone")


def test_int_does_not_wait_for_requests_in_flight(tmp_path, gateway_factory, echo_upstream):
    """SIGINT is a fast stop, as TERM (nginx): a 5 s request in flight does not hold it up
    under a 30 s shutdownTimeout, as it would a graceful QUIT."""
    gw = gateway_factory(proxy_config(tmp_path, echo_upstream, shutdownTimeout="30s"))
    _fast_stop_with_a_request_in_flight(gw, signal.SIGINT)


def _swallow(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass


# ---- logs ----

def test_usr1_reopens_logs(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port()))
    assert http_get(gw.url("/before")) == (200, b"hello")
    lines = gw.access_log(wait_for=1)
    assert any(l.get("path") == "/before" for l in lines), lines
    err = tmp_path / "error.log"
    acc = tmp_path / "access.log"
    os.rename(err, tmp_path / "error.log.1")
    os.rename(acc, tmp_path / "access.log.1")
    gw.signal(signal.SIGUSR1)
    wait_until(err.exists, 5, what="new error.log")
    # workers reopen asynchronously: keep requesting until the new file gets our lines
    n = [0]

    def logged():
        n[0] += 1
        http_get(gw.url("/after-%d" % n[0]))
        time.sleep(0.15)
        return acc.exists() and any(
            l.get("path", "").startswith("/after-") for l in gw.access_log())
    wait_until(logged, 5, 0, "access lines in the new access.log")
    assert gw.alive()
    old = (tmp_path / "access.log.1").read_text()
    assert "/before" in old
    # after the reopen settles, new requests go to the new file only
    time.sleep(0.3)
    http_get(gw.url("/final"))
    wait_until(lambda: any(l.get("path") == "/final" for l in gw.access_log()), 5,
               what="/final in new log")
    assert "/final" not in (tmp_path / "access.log.1").read_text()


def test_access_log_line_fields(tmp_path, gateway_factory):
    gw = gateway_factory(base_config(tmp_path, free_port()))
    status, _, _ = http_request("POST", gw.url("/fields?q=1"), body=b"abc",
                                headers={"Host": "example.test"})
    assert status == 200
    lines = wait_until(lambda: [l for l in gw.access_log() if l.get("path", "").startswith(
        "/fields")], 5, what="access log line")
    line = lines[0]
    for key in ("time", "client", "method", "host", "path", "status", "bytesIn", "bytesOut",
                "duration", "route", "requestId"):
        assert key in line, (key, line)
    assert line["method"] == "POST" and line["status"] == 200
    assert line["host"].startswith("example.test")
    assert line["route"] == "default"
    assert line["bytesOut"] >= 5


# ---- daemon mode and command line ----

def test_daemon_mode(tmp_path):
    cfg = base_config(tmp_path, free_port())
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(cfg))
    pid = None
    try:
        t0 = time.monotonic()
        proc = subprocess.run([str(BINARY), "-c", str(path)], capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - t0 < 5
        pid = int(wait_until(lambda: open(cfg["pidFile"]).read().strip()
                             if os.path.exists(cfg["pidFile"]) else None, 5, what="pid file"))
        assert pid_alive(pid)
        from conftest import status_query
        info = wait_until(lambda: _try(status_query, cfg["statusSocket"], "show info"), 5,
                          what="status socket")
        assert info["pid"] == pid
        wait_until(lambda: _try(http_get, "http://127.0.0.1:%d/" % int(
            cfg["servers"][0]["listen"].rsplit(":", 1)[1])) == (200, b"hello"), 5,
            what="daemon serving")
        # the daemon is detached: not our child, its own session
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # after ")": state, ppid, pgrp, session, tty_nr (proc(5))
        ppid, session, tty_nr = int(fields[1]), int(fields[3]), int(fields[4])
        assert ppid != os.getpid()
        assert session != os.getsid(0)
        # double fork: the session leader was the intermediate child, so the master
        # can never reacquire a controlling terminal
        assert session != pid
        assert tty_nr == 0
        stop = subprocess.run([str(BINARY), "-s", "stop", "-c", str(path)],
                              capture_output=True, text=True, timeout=10)
        assert stop.returncode == 0, stop.stderr
        wait_until(lambda: not pid_alive(pid), 5, what="daemon exit")
        wait_until(lambda: not group_members(pid), 2, what="daemon workers exit")
        assert not os.path.exists(cfg["pidFile"])
    finally:
        if pid:
            for p in group_members(pid) + [pid]:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def test_version():
    proc = subprocess.run([str(BINARY), "-v"], capture_output=True, text=True, timeout=5)
    assert proc.returncode == 0
    out = proc.stdout + proc.stderr
    assert "fastgateway" in out.lower() and "0.1.0" in out


def test_help():
    proc = subprocess.run([str(BINARY), "-h"], capture_output=True, text=True, timeout=5)
    assert proc.returncode == 0
    out = proc.stdout + proc.stderr
    for opt in ("-c", "-f", "-t", "-s", "-v", "-h", "reload", "quit", "reopen", "status"):
        assert opt in out, opt


@pytest.mark.parametrize("args", [["-x"], ["-s", "explode", "-c", "/nonexistent.json"], ["-c"]],
                         ids=["unknown-option", "bad-signal", "missing-argument"])
def test_bad_command_line(args):
    proc = subprocess.run([str(BINARY)] + args, capture_output=True, text=True, timeout=5)
    assert proc.returncode != 0
    assert proc.stderr.strip()


def _uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line for %d" % pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_to_configured_user(tmp_path, gateway_factory):
    """Started as root with `user` set, the master stays root (it owns the listeners and must
    reopen logs) while every worker runs as that user, and still serves."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    cfg = base_config(tmp_path, free_port(), routes=[direct("dropped")], user="nobody")
    cfg["log"]["accessLog"] = "off"
    gw = gateway_factory(cfg)
    assert http_get(gw.url("/x")) == (200, b"dropped")
    assert _uid_of(gw.pid) == 0
    workers = gw.workers()
    assert len(workers) == 2
    assert all(_uid_of(w["pid"]) == nobody.pw_uid for w in workers)


def _nofile_soft(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit for %d" % pid)


def test_workers_get_the_configured_open_file_limit(tmp_path, gateway_factory):
    """workerRlimitNofile raises the limit in the master, so every worker inherits it. The
    gateway starts with a lowered soft limit and asks for one under the hard limit, which needs
    no privilege (raising the hard limit needs CAP_SYS_RESOURCE, which containers may lack)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 4096:
        pytest.skip("needs a finite hard limit of at least 4096")
    want = hard - 7
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("ok")],
                                         workerRlimitNofile=want))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert http_get(gw.url("/x")) == (200, b"ok")
    assert _nofile_soft(gw.pid) == want
    assert all(_nofile_soft(w["pid"]) == want for w in gw.workers())


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1])
def test_signal_as_soon_as_the_pid_file_appears(tmp_path, sig):
    """Regression: the pid file was written before the signal handlers were installed, so a
    `-s reload` (HUP) or logrotate's `-s reopen` (USR1) in that window killed the master: 20
    starts out of 20 in review. A HUP during start-up is now queued, not dropped."""
    for attempt in range(5):
        cfg = base_config(tmp_path, free_port())
        path = tmp_path / ("early-%d.json" % attempt)
        path.write_text(json.dumps(cfg))
        pidfile = cfg["pidFile"]
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        launcher = subprocess.Popen([str(BINARY), "-c", str(path)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        pid = None
        try:
            deadline = time.monotonic() + 5
            while pid is None and time.monotonic() < deadline:
                try:  # no sleep: the window was a few milliseconds wide
                    pid = int(open(pidfile).read().strip() or 0) or None
                except (OSError, ValueError):
                    pass
            assert pid
            os.kill(pid, sig)
            assert launcher.wait(10) == 0, launcher.stderr.read()
            port = int(cfg["servers"][0]["listen"].rsplit(":", 1)[1])
            wait_until(lambda: _try(http_get, "http://127.0.0.1:%d/" % port) == (200, b"hello"),
                       5, what="serving after an early signal")
            assert pid_alive(pid)
        finally:
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda: not pid_alive(pid), 10, what="master exit")


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGTERM])
def test_stop_while_workers_wait_for_the_first_health_round(tmp_path, sig):
    """Regression: a worker waiting for its first health probe ran a nested loop that
    swallowed the stop, then opened its listeners anyway and served until its shutdown
    timeout."""
    from conftest import Blackhole
    hole = Blackhole()
    try:
        port = free_port()
        clusters = [{"id": "c", "destinations": [
            {"id": "d", "address": "http://127.0.0.1:%d" % hole.port}],
            "healthCheck": {"active": {"enabled": True, "interval": "10s", "timeout": "4s"}}}]
        routes = [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"},
                  {"id": "h", "match": {"path": "/here"}, "direct": {"status": 200}}]
        cfg = base_config(tmp_path, port, routes=routes, clusters=clusters, workers=1,
                          shutdownTimeout="10s")
        path = tmp_path / "waiting.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.Popen([str(BINARY), "-f", "-c", str(path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # the worker is in its first-round wait (4 s probe timeout)
            t0 = time.monotonic()
            proc.send_signal(sig)
            proc.wait(8)
            assert time.monotonic() - t0 < 3
            assert _try(http_get, "http://127.0.0.1:%d/here" % port) is None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        hole.close()


def test_two_masters_started_at_once_one_wins(tmp_path):
    """Regression: SO_REUSEPORT let two masters bind the same port, and the pid-file check was
    not atomic: in review one run had both serving, five lost the pid file. An instance lock
    (pidFile + ".lock") now lets exactly one start."""
    for attempt in range(4):
        cfg = base_config(tmp_path, free_port())
        path = tmp_path / ("twin-%d.json" % attempt)
        path.write_text(json.dumps(cfg))
        procs = [subprocess.Popen([str(BINARY), "-c", str(path)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        codes = [p.wait(15) for p in procs]
        errors = [p.stderr.read() for p in procs]
        pid = None
        try:
            assert sorted(codes) == [0, 1], (codes, errors)
            assert "already running" in errors[codes.index(1)]
            pid = int(wait_until(lambda: open(cfg["pidFile"]).read().strip()
                                 if os.path.exists(cfg["pidFile"]) else None, 5,
                                 what="pid file"))
            assert pid_alive(pid)
            from conftest import status_query
            assert status_query(cfg["statusSocket"], "show info")["pid"] == pid
        finally:
            if pid:
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda: not pid_alive(pid), 10, what="master exit")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_access_log_in_root_owned_directory_with_user(tmp_path, gateway_factory):
    """Regression: workers opened the access log after dropping to `user`, so in a root-owned
    log directory (as `make install` makes it) there was none, at start and after logrotate.
    The master now creates the file and hands it to the user, as nginx does."""
    import pwd
    import shutil
    import tempfile
    nobody = pwd.getpwnam("nobody")
    logdir = tempfile.mkdtemp(prefix="fg-logs-", dir="/tmp")
    try:
        os.chmod(logdir, 0o755)
        log = os.path.join(logdir, "access.log")
        cfg = base_config(tmp_path, free_port(), routes=[direct("logged")], user="nobody")
        cfg["log"]["accessLog"] = log
        cfg["log"]["accessLogFlush"] = "100ms"
        gw = gateway_factory(cfg)

        def logged(marker):
            try:
                return marker in open(log).read()
            except OSError:
                return False

        assert http_get(gw.url("/first")) == (200, b"logged")
        wait_until(lambda: logged("/first"), 5, what="first access log line")
        os.rename(log, log + ".1")
        os.kill(gw.pid, signal.SIGUSR1)
        wait_until(lambda: os.path.exists(log), 5, what="a new access log")
        # USR1 reaches the workers after the master made the file: give them a moment to reopen
        deadline = time.monotonic() + 5
        while not logged("/second") and time.monotonic() < deadline:
            http_get(gw.url("/second"))
            time.sleep(0.2)
        assert logged("/second")
        assert os.stat(log).st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def test_failed_reload_that_added_workers_resets_no_connection(tmp_path, gateway_factory):
    """Regression: sockets opened for added worker slots listened from the start of a reload,
    so the kernel queued connections on them that no worker accepted yet, and a failed reload
    closed them with a reset (57 of 285 in review). They now drop SYNs until their worker is
    ready; a dropped SYN is retransmitted, to a live socket once the failed one is gone."""
    from concurrent.futures import ThreadPoolExecutor
    from conftest import Blackhole
    hole = Blackhole()
    try:
        clusters = [{"id": "c", "destinations": [
            {"id": "d", "address": "http://127.0.0.1:%d" % hole.port}],
            "healthCheck": {"active": {"enabled": True, "interval": "30s", "timeout": "3s"}}}]
        routes = [{"id": "h", "match": {"path": "/{**rest}"}, "direct": {"status": 200,
                                                                        "body": "ok"}},
                  {"id": "p", "match": {"path": "/p/{**rest}"}, "clusterId": "c"}]
        cfg = base_config(tmp_path, free_port(), routes=routes, clusters=clusters, workers=1)
        gw = gateway_factory(cfg, timeout=15)
        gen = gw.info()["generation"]
        cfg["workers"] = 2
        # a destination never probed yet: the new workers wait up to 3 s for its first round
        cfg["clusters"][0]["destinations"].append(
            {"id": "d2", "address": "http://127.0.0.1:%d" % hole.port})
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        newer = wait_until(lambda: [w for w in gw.all_workers() if w["generation"] > gen], 5,
                           what="the new generation's workers")
        with ThreadPoolExecutor(max_workers=16) as ex:
            futures = [ex.submit(lambda: _try(http_get, gw.url("/x"), 15)) for _ in range(48)]
            time.sleep(0.8)
            for w in newer:
                if w["slot"] == 1:
                    os.kill(w["pid"], signal.SIGKILL)  # the reload fails
            results = [f.result() for f in futures]
        assert results == [(200, b"ok")] * 48
        # with least-connections balancing no SYN waits for a retransmission, so the answers
        # can all be in before the master has recorded the failure
        wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10,
                   what="the failed reload")
    finally:
        hole.close()


# ---- descriptor limit ----

def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after ")": fields 11 and 12 are utime and stime in clock ticks (proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_at_the_descriptor_limit_pauses_instead_of_spinning(tmp_path, gateway_factory):
    """Regression: at EMFILE the level-triggered listener fired again at once, so the worker
    spun at 100% CPU writing "Too many open files" to the error log tens of MB a second. It now
    stops accepting for a moment, logs one line per interval with a count, and serves again
    once descriptors are free."""
    import resource
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("ok")], workers=1))
    worker = gw.workers()[0]["pid"]
    held = len(os.listdir("/proc/%d/fd" % worker))
    soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (held + 8, hard))
    clients = []
    try:
        for _ in range(40):  # well past the limit: the rest wait in the kernel's queue
            clients.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        wait_until(lambda: "Too many open files" in gw.error_log(), 5, what="EMFILE logged")
        time.sleep(0.3)
        lines0, cpu0 = len(gw.error_log().splitlines()), _cpu_seconds(worker)
        time.sleep(2.0)
        lines1, cpu1 = len(gw.error_log().splitlines()), _cpu_seconds(worker)
        assert cpu1 - cpu0 < 0.3, "worker used %.2f s of CPU in 2 s" % (cpu1 - cpu0)
        assert lines1 - lines0 <= 2, gw.error_log()[-2000:]
        line = [l for l in gw.error_log().splitlines() if "Too many open files" in l][0]
        assert re.search(r"\d+ accept\(s\) deferred", line), line
    finally:
        for c in clients:
            c.close()
    # the accepted connections close, the queued ones are taken and closed: room again
    wait_until(lambda: _try(http_get, gw.url("/after")) == (200, b"ok"), 10,
               what="serving again after the clients left")
    assert gw.alive()


# ---- one instance per address ----

def _in_use(port):
    return "bind() to 127.0.0.1:%d failed (98: Address already in use)" % port


def _foreign_listener(port, reuseport, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(16)
    return s


def _start_refused(path, port):
    """-t and a start (foreground and daemon) with config path all refuse port, in nginx's
    words, and exit 1."""
    for args in (["-t"], ["-f"], []):
        r = subprocess.run([str(BINARY)] + args + ["-c", str(path)], capture_output=True,
                           text=True, timeout=15, stdin=subprocess.DEVNULL)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert _in_use(port) in r.stderr, (args, r.stderr)


def test_second_instance_on_the_same_address_is_refused(tmp_path, gateway_factory):
    """Regression: a second master with its own pid file and the same listen address started
    without a word (SO_REUSEPORT let it bind) and took part of the traffic."""
    port = free_port()
    gw = gateway_factory(base_config(tmp_path, port, routes=[direct("first")]))
    other_dir = tmp_path / "second"
    other_dir.mkdir()
    path = other_dir / "second.json"
    path.write_text(json.dumps(base_config(other_dir, port, routes=[direct("second")])))
    _start_refused(path, port)
    assert not os.path.exists(other_dir / "fastgateway.pid")
    assert [http_get(gw.url("/x"))[1] for _ in range(12)] == [b"first"] * 12
    # the running instance's own configuration: its sockets are no obstacle
    r = subprocess.run([str(BINARY), "-t", "-c", str(gw.config_path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    gw.config["routes"] = [direct("reloaded")]
    gw.reload(gw.config)
    assert http_get(gw.url("/x")) == (200, b"reloaded")


@pytest.mark.parametrize("reuseport,host", [(False, "127.0.0.1"), (True, "127.0.0.1"),
                                            (True, "0.0.0.0")],
                         ids=["plain", "reuseport", "reuseport-wildcard"])
def test_foreign_listener_on_the_address_is_refused(tmp_path, reuseport, host):
    port = free_port()
    path = tmp_path / "fg.json"
    path.write_text(json.dumps(base_config(tmp_path, port)))
    holder = _foreign_listener(port, reuseport, host)
    try:
        _start_refused(path, port)
    finally:
        holder.close()


def test_reload_adding_an_address_held_by_another_fails_cleanly(tmp_path, gateway_factory):
    cfg = base_config(tmp_path, free_port(), routes=[direct("one")])
    gw = gateway_factory(cfg)
    port2 = free_port()
    holder = _foreign_listener(port2, True)
    try:
        cfg["servers"].append({"id": "second", "listen": "127.0.0.1:%d" % port2})
        last = gw.reload(cfg, expect_ok=False)
        assert _in_use(port2) in last["error"], last
        assert http_get(gw.url("/x")) == (200, b"one")
    finally:
        holder.close()
    gw.reload(cfg)
    assert http_get("http://127.0.0.1:%d/x" % port2) == (200, b"one")


# ---- daemon: stdio and pid file ----

def test_daemon_does_not_keep_the_callers_stdio(tmp_path):
    """Regression: with errorLog "stderr" the daemon kept its caller's stderr, so
    `fastgateway -c x.json 2>&1 | cat` never returned. Start-up output still reaches the
    pipe, a descriptor the caller left open (fd 3) is closed, and a start-up error reaches the
    pipe too."""
    port = free_port()
    cfg = base_config(tmp_path, port)
    cfg["log"]["errorLog"] = "stderr"
    path = tmp_path / "stdio.json"
    path.write_text(json.dumps(cfg))
    extra_r, extra_w = os.pipe()
    pid = None
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(BINARY), "-c", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=10,
                           pass_fds=(extra_w,), text=True)
        assert r.returncode == 0, r.stdout
        assert time.monotonic() - t0 < 5
        assert 'errorLog is "stderr"' in r.stdout and "started" in r.stdout, r.stdout
        pid = int(open(cfg["pidFile"]).read())
        assert http_get("http://127.0.0.1:%d/" % port) == (200, b"hello")
        os.close(extra_w)
        extra_w = None
        import select
        assert select.select([extra_r], [], [], 5)[0], "the daemon still holds fd 3"
        assert os.read(extra_r, 1) == b""
    finally:
        if extra_w is not None:
            os.close(extra_w)
        os.close(extra_r)
        if pid is None and os.path.exists(cfg["pidFile"]):
            pid = int(open(cfg["pidFile"]).read() or 0) or None
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), 10, what="master exit")
    # a start-up error with the error log in a file still reaches the pipe
    cfg = base_config(tmp_path, port)
    path.write_text(json.dumps(cfg))
    holder = _foreign_listener(port, True)
    try:
        r = subprocess.run([str(BINARY), "-c", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=10,
                           text=True)
    finally:
        holder.close()
    assert r.returncode == 1 and _in_use(port) in r.stdout, r.stdout


def test_pid_file_naming_another_process_does_not_block_start(tmp_path, gateway_factory):
    """Regression: a pid file left behind whose pid now names an unrelated live process made
    start refuse ("already running"); the instance lock is what tells whether one runs."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        cfg = base_config(tmp_path, free_port(), routes=[direct("started")])
        with open(cfg["pidFile"], "w") as f:
            f.write("%d\n" % other.pid)
        gw = gateway_factory(cfg)
        assert http_get(gw.url("/x")) == (200, b"started")
        assert int(open(cfg["pidFile"]).read()) == gw.pid
        assert other.poll() is None
        assert "names pid %d, which is no running instance" % other.pid in gw.error_log()
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("sig", ["stop", "quit", "reopen"])
def test_s_refuses_a_pid_file_naming_another_process(tmp_path, sig):
    """Regression: `-s SIGNAL` signalled whatever process the pid file named. With no instance
    holding the lock (a stale pid file whose number was reused), nothing is signalled."""
    cfg = base_config(tmp_path, free_port())
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(cfg))
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with open(cfg["pidFile"], "w") as f:
            f.write("%d\n" % other.pid)
        r = subprocess.run([str(BINARY), "-s", sig, "-c", str(path)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 1, r.stderr
        assert "names process %d, which is not a running fastgateway master" % other.pid \
            in r.stderr, r.stderr
        time.sleep(0.2)
        assert other.poll() is None, "the unrelated process was signalled"
    finally:
        other.kill()
        other.wait()


def test_s_refuses_a_pid_that_is_not_the_gateway_while_one_runs(tmp_path, gateway_factory):
    """The lock is held by the running master, but the pid file names another binary's
    process: refused, that process and the master untouched; the real pid is signalled."""
    cfg = base_config(tmp_path, free_port(), routes=[direct("up")])
    gw = gateway_factory(cfg)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with open(cfg["pidFile"], "w") as f:
            f.write("%d\n" % other.pid)
        r = subprocess.run([str(BINARY), "-s", "stop", "-c", str(gw.config_path)],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and "not a running fastgateway master" in r.stderr, r.stderr
        time.sleep(0.2)
        assert other.poll() is None and gw.alive()
        with open(cfg["pidFile"], "w") as f:
            f.write("%d\n" % gw.pid)
        r = subprocess.run([str(BINARY), "-s", "reopen", "-c", str(gw.config_path)],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert gw.alive() and http_get(gw.url("/")) == (200, b"up")
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("error_log", ["file", "stderr"])
def test_daemon_processes_hold_no_pipe_of_the_caller(tmp_path, error_log):
    """`fastgateway -c x.json 2>&1 | cat` returns once start-up is over, with the error log in a
    file or on stderr: neither the master nor a worker keeps the pipe on fds 0-2."""
    cfg = base_config(tmp_path, free_port())
    if error_log == "stderr":
        cfg["log"]["errorLog"] = "stderr"
    path = tmp_path / "pipe.json"
    path.write_text(json.dumps(cfg))
    pid = None
    try:
        r = subprocess.run([str(BINARY), "-c", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=10,
                           text=True)
        assert r.returncode == 0, r.stdout
        pid = int(open(cfg["pidFile"]).read())
        procs = [pid] + [int(w["pid"]) for w in
                         status_query(cfg["statusSocket"], "show workers")["workers"]]
        assert len(procs) == 1 + cfg["workers"]
        for p in procs:
            for fd in (0, 1, 2):
                target = os.readlink("/proc/%d/fd/%d" % (p, fd))
                assert not target.startswith("pipe:"), (p, fd, target)
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), 10, what="master exit")


def test_t_refuses_a_file_whose_socket_another_configurations_instance_serves(
        tmp_path, gateway_factory):
    """Regression: a copy of the running configuration at another path (same pidFile,
    statusSocket and addresses) passed -t, the held instance lock excusing the probe, though it
    could never start beside the running instance. -t of the running file itself, directly or
    through a symlink, keeps passing."""
    gw = gateway_factory(base_config(tmp_path, free_port(), routes=[direct("first")]))
    copy = tmp_path / "copy" / "fastgateway.json"
    copy.parent.mkdir()
    copy.write_text(gw.config_path.read_text())
    r = subprocess.run([str(BINARY), "-t", "-c", str(copy)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert ("statusSocket %s is served by a running instance (pid %d) of another configuration "
            "file, %s" % (gw.config["statusSocket"], gw.pid, gw.config_path)) in r.stderr, r.stderr
    assert "configuration is ok" not in r.stdout
    link = tmp_path / "link.json"
    link.symlink_to(gw.config_path)
    for path in (gw.config_path, link):
        r = subprocess.run([str(BINARY), "-t", "-c", str(path)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, (path, r.stderr)


# ---- deadlines and backoff ----

def _slot_pid(gw, slot, not_pid):
    for w in gw.all_workers():
        if w["slot"] == slot and w["pid"] != not_pid and w["state"] == "ready":
            return w["pid"]
    return None


def test_crash_loop_respawns_back_off(tmp_path, gateway_factory):
    """A slot whose workers die within 2 s of starting is respawned after 100, 200, 400 ms...
    (operations.md, Worker crashes): the later respawns wait, the first does not."""
    gw = gateway_factory(base_config(tmp_path, free_port(), workers=1))
    pid = gw.workers()[0]["pid"]
    gaps = []
    for _ in range(5):
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        pid = wait_until(lambda: _slot_pid(gw, 0, pid), 10, 0.01, "respawn")
        gaps.append(time.monotonic() - t0)
    assert gaps[0] < 0.5, gaps
    assert gaps[-1] >= 0.35 and gaps[-1] > gaps[0], gaps  # 400 ms or more by the fifth
    assert http_get(gw.url("/"))[0] == 200


def test_quit_closes_requests_still_running_at_shutdown_timeout(tmp_path, gateway_factory,
                                                              echo_upstream):
    """Graceful stop: a request longer than shutdownTimeout is cut there, and the master exits
    soon after, not when the request would have ended."""
    gw = gateway_factory(proxy_config(tmp_path, echo_upstream, shutdownTimeout="1s"))
    t = threading.Thread(target=lambda: _swallow(http_get, gw.url("/slow?ms=8000"), 12),
                         daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    gw.signal(signal.SIGQUIT)
    assert gw.proc.wait(6) == 0
    took = time.monotonic() - t0
    assert 0.8 <= took < 4.0, took
    wait_until(lambda: not group_members(gw.pid), 2, what="workers gone")


@pytest.mark.parametrize("sig,limit", [(signal.SIGQUIT, 5.0), (signal.SIGTERM, 4.5)])
def test_master_kills_a_worker_that_does_not_exit(tmp_path, gateway_factory, sig, limit):
    """A worker that cannot exit (stopped here) is killed by the master at its deadline:
    shutdownTimeout + 1 s for QUIT, 2 s for TERM; the master still exits 0."""
    gw = gateway_factory(base_config(tmp_path, free_port(), shutdownTimeout="1s"))
    stuck = gw.workers()[0]["pid"]
    os.kill(stuck, signal.SIGSTOP)
    t0 = time.monotonic()
    gw.signal(sig)
    assert gw.proc.wait(limit + 3) == 0
    took = time.monotonic() - t0
    assert 1.5 <= took < limit, took
    assert not pid_alive(stuck)
