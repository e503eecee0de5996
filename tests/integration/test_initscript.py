"""scripts/fastgateway.init driven like an operator would: start, status, reload, configtest,
stop, with DAEMON pointing at ./fastgateway and a temporary config."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BINARY, REPO_ROOT, base_config, free_port, http_get, status_query

INIT = REPO_ROOT / "scripts" / "fastgateway.init"


def direct(body):
    return [{"id": "d", "match": {"path": "/{**catchall}"},
             "direct": {"status": 200, "body": body}}]


@pytest.fixture
def service(tmp_path):
    port = free_port()
    cfg = base_config(tmp_path, port, routes=direct("one"))
    conf = tmp_path / "fastgateway.json"
    conf.write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, DAEMON=str(BINARY), CONF=str(conf), PIDFILE=cfg["pidFile"],
               DEFAULTS=str(tmp_path / "no-such-defaults"), STOP_TIMEOUT="10")

    def run(action, **more_env):
        return subprocess.run(["sh", str(INIT), action], env=dict(env, **more_env),
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    svc = type("Service", (), {})()
    svc.run, svc.cfg, svc.conf, svc.port = run, cfg, conf, port
    svc.url = "http://127.0.0.1:%d/" % port
    yield svc
    # never leave the daemon behind
    try:
        kill_tree(int(open(cfg["pidFile"]).read().strip()))
    except (OSError, ValueError):
        pass


def kill_tree(pid):
    """SIGKILL pid and its children (workers), whatever process group they are in."""
    victims = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid or int(fields[2]) == pid:
                    victims.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def get(url):
    try:
        return http_get(url, timeout=3)
    except OSError:
        return None


def wait_for(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_lifecycle(service):
    r = service.run("status")
    assert r.returncode == 3, r.stdout + r.stderr

    r = service.run("configtest")
    assert r.returncode == 0, r.stdout + r.stderr

    r = service.run("start")
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(open(service.cfg["pidFile"]).read().strip())
    r = service.run("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(pid) in r.stdout
    assert wait_for(lambda: get(service.url) == (200, b"one")), get(service.url)

    # starting again is harmless
    r = service.run("start")
    assert r.returncode == 0
    assert int(open(service.cfg["pidFile"]).read().strip()) == pid

    # reload picks up a changed file
    gen = status_query(service.cfg["statusSocket"], "show info")["generation"]
    cfg = dict(service.cfg, routes=direct("two"))
    service.conf.write_text(json.dumps(cfg))
    r = service.run("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(lambda: get(service.url) == (200, b"two")), get(service.url)
    assert wait_for(lambda: status_query(service.cfg["statusSocket"], "show info")[
        "generation"] == gen + 1)

    # reload with a broken file: refused by the config test, nothing signalled
    service.conf.write_text(json.dumps(dict(cfg, wokers=3)))
    r = service.run("reload")
    assert r.returncode != 0
    assert "wokers" in r.stdout + r.stderr
    time.sleep(0.3)
    info = status_query(service.cfg["statusSocket"], "show info")
    assert info["generation"] == gen + 1
    assert info["reloadFailures"] == 0  # the master never saw the bad file
    assert get(service.url) == (200, b"two")
    r = service.run("configtest")
    assert r.returncode == 1

    # force-reload behaves as reload
    service.conf.write_text(json.dumps(dict(cfg, routes=direct("three"))))
    r = service.run("force-reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(lambda: get(service.url) == (200, b"three"))

    r = service.run("stop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists("/proc/%d" % pid) or _zombie(pid)
    assert get(service.url) is None
    r = service.run("status")
    assert r.returncode == 3, r.stdout + r.stderr

    # stopping a stopped service succeeds (LSB)
    assert service.run("stop").returncode == 0


def test_restart_and_dead_pidfile(service):
    assert service.run("start").returncode == 0
    pid = int(open(service.cfg["pidFile"]).read().strip())
    r = service.run("restart")
    assert r.returncode == 0, r.stdout + r.stderr
    pid2 = int(open(service.cfg["pidFile"]).read().strip())
    assert pid2 != pid
    assert wait_for(lambda: get(service.url) == (200, b"one"))
    # a master killed hard leaves its pid file: status says "dead" (1)
    kill_tree(pid2)
    assert wait_for(lambda: not os.path.exists("/proc/%d" % pid2) or _zombie(pid2))
    r = service.run("status")
    assert r.returncode == 1, r.stdout + r.stderr
    # start recovers from the stale pid file
    r = service.run("start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(lambda: get(service.url) == (200, b"one"))
    assert service.run("stop").returncode == 0


def test_start_with_bad_config_fails(service):
    service.conf.write_text("{ not json")
    r = service.run("start")
    assert r.returncode != 0
    assert service.run("status").returncode == 3


def test_usage(service):
    r = service.run("dance")
    assert r.returncode == 2
    assert "Usage" in r.stderr


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_pid_file_naming_another_process(service):
    """Regression: a stale pid file holding a reused pid made `status` report that process as
    the gateway and `stop` send it QUIT and TERM (it killed a `sleep` in review)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        with open(service.cfg["pidFile"], "w") as f:
            f.write("%d\n" % other.pid)
        r = service.run("status")
        assert r.returncode == 1, r.stdout + r.stderr  # LSB: dead, pid file exists
        r = service.run("stop")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(0.2)
        assert other.poll() is None  # untouched
        # and start works: the stale file is not the gateway's
        r = service.run("start")
        assert r.returncode == 0, r.stdout + r.stderr
        assert http_get(service.url) == (200, b"one")
        assert service.run("stop").returncode == 0
    finally:
        other.kill()
        other.wait()


def _nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3]), int(line.split()[4])
    raise AssertionError("no open-files limit for %d" % pid)


def test_start_sets_the_open_file_limit(service):
    """The init script gives the gateway its descriptor budget (NOFILE, like LimitNOFILE in
    the systemd unit) instead of whatever limit the shell that ran it had."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 4096:
        pytest.skip("needs a finite hard limit of at least 4096")
    want = hard - 3  # lowering the hard limit needs no privilege
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        r = service.run("start", NOFILE=str(want))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(open(service.cfg["pidFile"]).read().strip())
    assert _nofile(pid) == (want, want)
    workers = status_query(service.cfg["statusSocket"], "show workers")["workers"]
    assert workers and all(_nofile(w["pid"]) == (want, want) for w in workers)
    assert service.run("stop").returncode == 0


def test_start_with_an_open_file_limit_it_may_not_set(service):
    """Above the hard limit without the privilege to raise it, start still works, with the hard
    limit as the soft one, and says so."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 4096:
        pytest.skip("needs a finite hard limit of at least 4096")
    with open("/proc/sys/fs/nr_open") as f:
        want = int(f.read()) + 1  # more than any process may have, root or not
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        r = service.run("start", NOFILE=str(want))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cannot set the open file limit to %d, starting with %d" % (want, hard) in r.stdout
    pid = int(open(service.cfg["pidFile"]).read().strip())
    assert _nofile(pid) == (hard, hard)
    assert service.run("stop").returncode == 0
