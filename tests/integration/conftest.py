"""Integration test harness: starts the real ./fastgateway master with a generated config on
free loopback ports, and real echo upstreams (upstream.py) in separate processes.

API: free_port(), base_config(), the fixtures
gateway_factory, echo_upstream, upstream_factory, and the Gateway and Upstream classes.
Tests import the helpers with `from conftest import base_config, free_port`.

Robustness: every wait has a timeout; every process started here runs in its own session
(process group) and the whole group is killed at teardown, so no worker outlives a test;
an alarm fails any single test that runs longer than FG_TEST_TIMEOUT seconds (default 120).
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peers import ThreadedServer

# Under `make SANITIZE=address,...` ASan keeps 256 MiB of freed memory in quarantine, which the
# RSS bounds of the streaming tests would count as growth: keep its quarantine small. Release
# builds ignore the variable.
os.environ.setdefault("ASAN_OPTIONS", "quarantine_size_mb=8:allocator_release_to_os_interval_ms=500")

REPO_ROOT = Path(__file__).resolve().parents[2]
# FASTGATEWAY=/path/to/binary runs the suite against another build (e.g. a sanitizer one)
BINARY = Path(os.environ.get("FASTGATEWAY", str(REPO_ROOT / "fastgateway"))).resolve()
# A sanitizer build (make SANITIZE=...): its runtime changes memory figures and system calls.
SANITIZED = BINARY.exists() and b"__asan_init" in BINARY.read_bytes()
# The test build (`make build/test/fastgateway`, built by `make integration`): the same sources
# with the fault-injection hooks (-DFG_TEST_HOOKS) that the release binary does not have.
TEST_BINARY = Path(os.environ.get("FASTGATEWAY_TEST",
                                  str(REPO_ROOT / "build/test/fastgateway"))).resolve()
UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "upstream.py"
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|runtime error: ")
TEST_TIMEOUT = float(os.environ.get("FG_TEST_TIMEOUT", "120"))

_given_ports = set()
_live_groups = set()  # process-group ids to kill at session end, whatever happens


def free_port():
    """A free TCP port on 127.0.0.1 (never the same one twice in a session)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port")


def wait_until(pred, timeout, what, step=0.05):
    """pred()'s first true value, polled every step seconds; an AssertionError naming what
    after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def example_certs(tmp_path):
    """`make example-certs` into tmp_path/certs (the files the examples name as certs/...);
    returns that directory."""
    certs_dir = tmp_path / "certs"
    p = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "example-certs",
                        "CERTS_DIR=" + str(certs_dir)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return certs_dir


def base_config(tmp_path, port, routes=None, clusters=None, workers=2, **top):
    """A minimal valid config dict. The default route is a catch-all direct 200 "hello"."""
    tmp_path = Path(tmp_path)
    if routes is None:
        routes = [{
            "id": "default",
            "match": {"path": "/{**catchall}"},
            "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                       "body": "hello"},
        }]
    cfg = {
        "workers": workers,
        "pidFile": str(tmp_path / "fastgateway.pid"),
        "statusSocket": str(tmp_path / "status.sock"),
        "shutdownTimeout": "10s",
        "log": {
            "errorLog": str(tmp_path / "error.log"),
            "level": "info",
            "accessLog": str(tmp_path / "access.log"),
            "accessLogFlush": "100ms",
        },
        "servers": [{"id": "main", "listen": "127.0.0.1:%d" % port}],
        "routes": routes,
        "clusters": clusters if clusters is not None else [],
    }
    cfg.update(top)
    return cfg


def _kill_group(pgid, sig=signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_open(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def status_query(path, cmd, timeout=5.0):
    """Send one command line to a status socket and parse the one-line JSON answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(cmd.encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    finally:
        s.close()
    return json.loads(buf.split(b"\n", 1)[0].decode())


def recv_until_close(sock, timeout=10.0):
    """Everything the peer sends on sock until it closes its side."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def http_request(method, url, body=None, headers=None, timeout=5.0):
    """One request on a fresh connection: returns (status, headers dict lower-cased, body)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def http_get(url, timeout=5.0):
    """GET on a fresh connection: returns (status, body bytes)."""
    status, _, body = http_request("GET", url, timeout=timeout)
    return status, body


class GatewayError(AssertionError):
    pass


class Gateway:
    """One running master started as `./fastgateway -f -c <file>`."""

    def __init__(self, config, tmp, name="fastgateway.json", binary=None):
        self.binary = binary or BINARY
        self.config = config
        self.tmp = Path(tmp)
        self.config_path = self.tmp / name
        self.port = int(config["servers"][0]["listen"].rsplit(":", 1)[1])
        self.proc = None
        self.pid = None
        self.returncode = None
        self.write_config(config)

    # ---- process ----
    def write_config(self, config=None):
        if config is not None:
            self.config = config
        tmpname = self.config_path.with_suffix(".tmp")
        if isinstance(self.config, str):
            tmpname.write_text(self.config)
        else:
            tmpname.write_text(json.dumps(self.config, indent=2))
        os.replace(tmpname, self.config_path)

    def start(self, wait=True, timeout=10):
        self.stdout_path = self.tmp / (self.config_path.stem + ".stdout")
        self.stderr_path = self.tmp / (self.config_path.stem + ".stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(self.binary), "-f", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=str(self.tmp),
                start_new_session=True)
        self.pid = self.proc.pid
        _live_groups.add(self.pid)
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def _diag(self):
        return "stderr:\n%s\nerror log (tail):\n%s" % (
            self.stderr()[-3000:], self.error_log()[-3000:])

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, graceful=False, timeout=10):
        """QUIT (graceful) or TERM; KILL after timeout. Returns the exit code (negative =
        killed by that signal). Any process left in the group is killed afterwards."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGQUIT if graceful else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        self.cleanup()
        return self.returncode

    def cleanup(self):
        if self.pid is not None:
            _kill_group(self.pid)
            _live_groups.discard(self.pid)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    # ---- status socket ----
    @property
    def status_socket(self):
        return self.config["statusSocket"]

    def status(self, cmd, timeout=5.0):
        try:
            return status_query(self.status_socket, cmd, timeout)
        except ConnectionRefusedError as e:
            # A Unix socket refuses only when nothing listens on it any more (a full backlog
            # is EAGAIN, a busy master a timeout): say whether the master is gone, and how.
            if self.proc is None or self.proc.poll() is None:
                raise
            raise GatewayError("status socket refused: the master exited with %s\n%s"
                               % (self.proc.returncode, self._diag())) from e

    def info(self):
        return self.status("show info")

    def all_workers(self):
        return self.status("show workers")["workers"]

    def workers(self):
        """Workers of the current generation in state "ready"."""
        gen = self.info()["generation"]
        return [w for w in self.all_workers()
                if w.get("generation") == gen and w.get("state") == "ready"]

    def expected_workers(self, info=None):
        info = info or self.info()
        n = info.get("workers")
        if isinstance(n, int) and n > 0:
            return n
        n = self.config.get("workers") if isinstance(self.config, dict) else None
        return n if isinstance(n, int) else os.cpu_count()

    def wait_ready(self, timeout=10):
        """Until the port accepts and all workers of the current generation are ready."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise GatewayError("gateway exited with %s during startup\n%s"
                                   % (self.proc.returncode, self._diag()))
            try:
                info = self.info()
                gen = info["generation"]
                ready = [w for w in self.all_workers()
                         if w.get("generation") == gen and w.get("state") == "ready"]
                last = (info, ready)
                if len(ready) >= self.expected_workers(info) and _port_open(self.port):
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise GatewayError("gateway not ready after %ss (last status %r)\n%s"
                           % (timeout, last, self._diag()))

    def wait_old_generations_drained(self, deadline):
        """Until no worker of an older generation accepts: a retiring worker reports
        "draining" once it has closed its listeners, so later connections reach the new
        generation and its configuration."""
        while time.monotonic() < deadline:
            try:
                gen = self.info()["generation"]
                if not [w for w in self.all_workers()
                        if w.get("generation", gen) < gen and w.get("state") == "ready"]:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        raise GatewayError("old generation still accepting after reload\n" + self._diag())

    def _reload_marker(self):
        info = self.info()
        return (info.get("reloads"), info.get("reloadFailures"),
                json.dumps(info.get("lastReload"), sort_keys=True))

    def reload(self, config=None, expect_ok=True, timeout=10):
        """Optionally rewrite the file, send SIGHUP, wait until lastReload changes.
        Returns the lastReload dict; asserts its result matches expect_ok."""
        before = self._reload_marker()
        if config is not None:
            self.write_config(config)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = self.info()
                marker = (info.get("reloads"), info.get("reloadFailures"),
                          json.dumps(info.get("lastReload"), sort_keys=True))
                if marker != before and info["lastReload"].get("result") in ("ok", "failed"):
                    last = info["lastReload"]
                    if expect_ok:
                        if last["result"] != "ok":
                            raise GatewayError("reload failed: %r" % (last,))
                        self.wait_ready(max(1.0, deadline - time.monotonic()))
                        self.wait_old_generations_drained(deadline)
                    elif last["result"] != "failed":
                        raise GatewayError("reload expected to fail: %r" % (last,))
                    return last
            except (OSError, ValueError, KeyError):
                pass
            if not self.alive():
                raise GatewayError("gateway exited during reload\n" + self._diag())
            time.sleep(0.05)
        raise GatewayError("no reload recorded after %ss\n%s" % (timeout, self._diag()))

    # ---- helpers ----
    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def error_log(self):
        try:
            return Path(self.config["log"]["errorLog"]).read_text(errors="replace")
        except (OSError, KeyError, TypeError):
            return ""

    def access_log(self, wait_for=0, timeout=5.0):
        """Parsed JSON lines of the access log; with wait_for=N, polls until N lines exist."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = Path(self.config["log"]["accessLog"]).read_text(errors="replace")
            except OSError:
                text = ""
            lines = [json.loads(l) for l in text.splitlines() if l.strip()]
            if len(lines) >= wait_for or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)


class Upstream:
    """tests/integration/upstream.py in its own process."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None

    def start(self, timeout=10):
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen([sys.executable, str(UPSTREAM_SCRIPT), str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _live_groups.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("upstream exited with %s" % self.proc.returncode)
            if _port_open(self.port, 0.2):
                return self
            time.sleep(0.02)
        raise RuntimeError("upstream on %d not listening" % self.port)

    def stop(self):
        if self.proc is None:
            return
        _kill_group(self.proc.pid)
        _live_groups.discard(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None


@pytest.fixture
def gateway_factory(tmp_path):
    started = []

    def factory(config, wait=True, timeout=10, binary=None):
        name = "fastgateway.json" if not started else "fastgateway-%d.json" % (len(started) + 1)
        gw = Gateway(config, tmp_path, name, binary)
        started.append(gw)
        return gw.start(wait=wait, timeout=timeout)

    yield factory
    for gw in started:
        try:
            gw.stop(graceful=False, timeout=5)
        except Exception:  # teardown must never leave processes behind
            gw.cleanup()
    # a sanitizer build (make SANITIZE=address,undefined) reports memory errors and undefined
    # behaviour on stderr or in the error log: make them fail the test that triggered them
    for gw in started:
        text = gw.stderr() + gw.error_log()
        m = SANITIZER_RE.search(text)
        if m:
            pytest.fail("sanitizer report from the gateway:\n" + text[max(0, m.start() - 200):
                                                                      m.start() + 3000])


@pytest.fixture
def upstream_factory():
    started = []

    def factory(port=None):
        up = Upstream(port)
        started.append(up)
        return up.start()

    yield factory
    for up in started:
        up.stop()


@pytest.fixture
def echo_upstream(upstream_factory):
    return upstream_factory()


@pytest.fixture(autouse=True)
def _test_alarm():
    """Fail (never hang) a test that runs longer than TEST_TIMEOUT seconds."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %ss" % TEST_TIMEOUT)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _untracked_in_repo():
    """Files in the repository that git neither tracks nor ignores (None without git)."""
    try:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                            "--untracked-files=all"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return {l[3:] for l in r.stdout.splitlines() if l.startswith("?? ")}


_untracked_at_start = None


def pytest_sessionstart(session):
    global _untracked_at_start
    if not BINARY.exists():
        sys.stderr.write("warning: %s not built; run `make`\n" % BINARY)
    _untracked_at_start = _untracked_in_repo()


def pytest_sessionfinish(session, exitstatus):
    for pgid in list(_live_groups):
        _kill_group(pgid)
    _live_groups.clear()
    # Tests write under tmp_path only: a file they leave in the repository (a pid file, a log)
    # would end up committed. Fail the session instead.
    after = _untracked_in_repo()
    if _untracked_at_start is not None and after is not None:
        new = sorted(after - _untracked_at_start)
        if new:
            sys.stderr.write("error: the tests left files in the repository: %s\n"
                             % ", ".join(new))
            session.exitstatus = 1


class Blackhole:
    """A listening socket whose accept queue is full: further SYNs are dropped, so a connect
    to it hangs until the connector gives up (a loopback stand-in for an unreachable host)."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(0)
        self.port = self.ls.getsockname()[1]
        self.fillers = []
        for _ in range(16):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
            _, w, _ = select.select([], [c], [], 0.3)
            if not w:  # this one hangs: the queue is full
                return
        raise RuntimeError("could not fill the accept queue")

    def close(self):
        for c in self.fillers:
            c.close()
        self.ls.close()


class Scripted(ThreadedServer):
    """A raw upstream for framing edge cases: every connection is handed to
    script(sock, head) once a whole request head (bytes up to and including the blank line)
    has arrived; the script writes whatever bytes it wants and may close. The request body,
    if any, is left unread for the script to read or ignore."""

    def __init__(self, script):
        super().__init__(backlog=64)
        self.script = script
        self.url = "http://127.0.0.1:%d" % self.port
        self.heads = []
        self.start()

    def _serve(self, s):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            head = buf[:buf.index(b"\r\n\r\n") + 4]
            self.heads.append(head)
            self.script(s, head)
        except OSError:
            pass
        finally:
            s.close()


def proxy_cfg(tmp_path, up, **cluster):
    """A one-worker gateway on a free port whose one route sends every path to a cluster of
    one destination, up.url; cluster adds settings to that cluster."""
    c = {"id": "c", "destinations": [{"id": "d", "address": up.url}]}
    c.update(cluster)
    return base_config(tmp_path, free_port(), workers=1,
                       routes=[{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c"}],
                       clusters=[c])


@pytest.fixture
def scripted():
    """A factory of Scripted upstreams: scripted(script) starts one; all close after the
    test."""
    made = []

    def factory(script):
        up = Scripted(script)
        made.append(up)
        return up

    yield factory
    for up in made:
        up.close()
