"""`make install`: a staged (DESTDIR) install lays out every file with the installed paths; the
production configuration is valid and runs where it is installed; the systemd unit verifies,
is sandboxed to an exposure of 5.0 at most and its capabilities are enough to bind a low port
and switch the workers to their user; logrotate accepts and runs the rotation file; the man
pages render without warnings."""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SANITIZED, free_port, http_get

ROOT = Path(__file__).resolve().parents[2]


def make_install(*args):
    r = subprocess.run(["make", "-s", "install"] + list(args), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def world_dir():
    """A directory the workers' user can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="fg-install-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def strip_comments(text):
    return "\n".join(re.sub(r"^\s*//.*$", "", line) for line in text.splitlines())


# ---- staged install ----

def test_destdir_install_lays_out_every_file(tmp_path):
    dest = tmp_path / "stage"
    had_user = user_exists("fastgateway")
    make_install("DESTDIR=%s" % dest, "PREFIX=/usr")
    assert user_exists("fastgateway") == had_user  # a staged install creates no user

    binary = dest / "usr/sbin/fastgateway"
    assert binary.is_file() and os.access(binary, os.X_OK)

    conf = (dest / "etc/fastgateway/fastgateway.json").read_text()
    cfg = json.loads(strip_comments(conf))
    assert cfg["user"] == "fastgateway"
    assert cfg["pidFile"] == "/run/fastgateway/fastgateway.pid"
    assert cfg["statusSocket"] == "/run/fastgateway/fastgateway.sock"
    assert cfg["log"]["errorLog"] == "/var/log/fastgateway/error.log"
    assert cfg["log"]["accessLog"] == "/var/log/fastgateway/access.log"
    assert cfg["routes"] == [] and cfg["clusters"] == []
    assert "/tmp/" not in conf and "welcome" not in conf.lower()
    assert (dest / "var/log/fastgateway").is_dir()

    init = dest / "etc/init.d/fastgateway"
    assert os.access(init, os.X_OK)
    text = init.read_text()
    assert "DAEMON=${DAEMON:-/usr/sbin/fastgateway}" in text
    assert "CONF=${CONF:-/etc/fastgateway/fastgateway.json}" in text
    assert "PIDFILE=${PIDFILE:-/run/fastgateway/fastgateway.pid}" in text
    assert 'mkdir -p "${PIDFILE%/*}"' in text

    unit = (dest / "usr/lib/systemd/system/fastgateway.service").read_text()
    assert "Type=notify" in unit
    assert "ExecStart=/usr/sbin/fastgateway -f -c /etc/fastgateway/fastgateway.json" in unit
    assert "ExecReload=/usr/sbin/fastgateway -s reload -c /etc/fastgateway/fastgateway.json" in unit
    assert "RuntimeDirectory=fastgateway" in unit and "LogsDirectory=fastgateway" in unit
    assert "/usr/local" not in unit

    rotate = (dest / "etc/logrotate.d/fastgateway").read_text()
    assert "/var/log/fastgateway/*.log" in rotate
    assert "/run/fastgateway/fastgateway.pid" in rotate

    assert (dest / "usr/share/man/man8/fastgateway.8").is_file()
    assert (dest / "usr/share/man/man5/fastgateway.json.5").is_file()
    assert (dest / "usr/share/doc/fastgateway/config.md").is_file()
    assert (dest / "usr/share/doc/fastgateway/operations.md").is_file()


def test_reinstall_keeps_the_configuration(tmp_path):
    dest = tmp_path / "stage"
    make_install("DESTDIR=%s" % dest, "PREFIX=/usr")
    conf = dest / "etc/fastgateway/fastgateway.json"
    conf.write_text(conf.read_text().replace('"workers": "auto"', '"workers": 3'))
    r = make_install("DESTDIR=%s" % dest, "PREFIX=/usr")
    assert '"workers": 3' in conf.read_text()
    assert (dest / "etc/fastgateway/fastgateway.json.new").is_file()
    assert "fastgateway.json.new" in r.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None and
                    not os.path.exists("/usr/sbin/useradd"), reason="needs root and useradd")
def test_install_creates_the_workers_user_or_falls_back(world_dir):
    name = "fgtest%d" % os.getpid()
    assert not user_exists(name)
    try:
        r = make_install("PREFIX=%s" % (world_dir / "a"), "LOGDIR=%s" % (world_dir / "la"),
                         "LOGROTATEDIR=%s" % (world_dir / "ra"), "FG_USER=%s" % name)
        assert "created system user %s" % name in r.stdout
        pw = pwd.getpwnam(name)
        assert pw.pw_uid < 1000 and pw.pw_shell.endswith("nologin")
        conf = (world_dir / "a/etc/fastgateway/fastgateway.json").read_text()
        assert '"user": "%s"' % name in conf
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], capture_output=True, timeout=30)
    # a name useradd refuses: the configuration names nobody, and the install says so
    r = make_install("PREFIX=%s" % (world_dir / "b"), "LOGDIR=%s" % (world_dir / "lb"),
                     "LOGROTATEDIR=%s" % (world_dir / "rb"), "FG_USER=-bad:name")
    assert "workers run as nobody" in r.stderr
    conf = (world_dir / "b/etc/fastgateway/fastgateway.json").read_text()
    assert '"user": "nobody"' in conf


# ---- the installed configuration runs ----

def install_runnable(base, user="nobody"):
    """Install into base (PREFIX), with logs and run directory inside it."""
    prefix, logdir, rundir = base / "pfx", base / "log", base / "run"
    rundir.mkdir()
    make_install("PREFIX=%s" % prefix, "LOGDIR=%s" % logdir, "RUNDIR=%s" % rundir,
                 "FG_USER=%s" % user, "LOGROTATEDIR=%s" % (base / "logrotate.d"))
    conf = prefix / "etc/fastgateway/fastgateway.json"
    return prefix / "sbin/fastgateway", conf, logdir, rundir


def use_port(conf, listen):
    conf.write_text(conf.read_text().replace('"listen": "*:80"', '"listen": "%s"' % listen))


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def proc_uid(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def children(pid):
    try:
        return [int(p) for p in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
    except OSError:
        return []


class Running:
    """The installed binary in the foreground, optionally under `prefix` (setpriv ...)."""

    def __init__(self, binary, conf, prefix=()):
        self.proc = subprocess.Popen(list(prefix) + [str(binary), "-f", "-c", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.stderr.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="workers switch user only when started as root")
def test_installed_configuration_runs(world_dir):
    binary, conf, logdir, rundir = install_runnable(world_dir)
    r = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    port = free_port()
    use_port(conf, "127.0.0.1:%d" % port)
    gw = Running(binary, conf)
    try:
        wait_until(lambda: (rundir / "fastgateway.pid").exists()
                   and (rundir / "fastgateway.sock").exists(), 10, "pid file and socket")
        wait_until(lambda: http_get("http://127.0.0.1:%d/" % port)[0] == 404, 10, "a 404")
        workers = children(gw.proc.pid)
        assert workers and all(proc_uid(w) == pwd.getpwnam("nobody").pw_uid for w in workers)
        r = subprocess.run([str(binary), "-s", "reload", "-c", str(conf)], capture_output=True,
                           text=True, timeout=70)
        assert r.returncode == 0, r.stderr
        assert http_get("http://127.0.0.1:%d/x" % port)[0] == 404
        access = logdir / "access.log"
        wait_until(lambda: access.exists() and access.stat().st_size > 0, 10, "access log")
        assert access.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert "started" in (logdir / "error.log").read_text()
    finally:
        gw.stop()


# ---- systemd ----

@pytest.fixture
def unit_install(world_dir):
    binary, conf, logdir, rundir = install_runnable(world_dir)
    unit = world_dir / "pfx/lib/systemd/system/fastgateway.service"
    return unit, world_dir / "pfx"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_systemd_unit_verifies(unit_install):
    """systemd's own checker accepts the unit as installed (directives, commands present and
    executable, the man pages it names)."""
    unit, prefix = unit_install
    env = dict(os.environ, MANPATH=str(prefix / "share/man"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fastgateway.service" not in r.stderr, r.stderr  # no warning about our unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_systemd_unit_is_sandboxed(unit_install):
    unit, _ = unit_install
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=50",
                        str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for fastgateway.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 5.0, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def unit_capabilities(unit):
    line = [l for l in unit.read_text().splitlines() if l.startswith("CapabilityBoundingSet=")]
    assert len(line) == 1
    return [c.lower().replace("cap_", "+", 1) for c in line[0].split("=", 1)[1].split()]


def free_low_port():
    for port in range(81, 1024):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv")
@pytest.mark.parametrize("drop", [None, "+net_bind_service"])
def test_unit_capabilities_bind_low_ports_and_switch_user(world_dir, drop):
    """The master under exactly the unit's capability bounding set (and no new privileges)
    binds a port below 1024, starts its workers as `user`, and reloads (signals them). Without
    CAP_NET_BIND_SERVICE the same start fails: the check can tell."""
    binary, conf, logdir, rundir = install_runnable(world_dir)
    unit = world_dir / "pfx/lib/systemd/system/fastgateway.service"
    caps = [c for c in unit_capabilities(unit) if c != drop]
    port = free_low_port()
    use_port(conf, "127.0.0.1:%d" % port)
    sandbox = ["setpriv", "--bounding-set=-all," + ",".join(caps), "--no-new-privs"]
    gw = Running(binary, conf, sandbox)
    try:
        if drop:
            assert gw.proc.wait(15) != 0
            err = gw.proc.stderr.read() + (logdir / "error.log").read_text()
            assert "Permission denied" in err, err
            return
        wait_until(lambda: _get(port) == 404, 10, "a 404 on port %d" % port)
        nobody = pwd.getpwnam("nobody").pw_uid
        old = children(gw.proc.pid)
        assert old and all(proc_uid(w) == nobody for w in old)
        r = subprocess.run([str(binary), "-s", "reload", "-c", str(conf)], capture_output=True,
                           text=True, timeout=70)
        assert r.returncode == 0, r.stderr
        # the old workers (another uid) got the master's QUIT and exited
        wait_until(lambda: not set(old) & set(children(gw.proc.pid)), 10, "old workers gone")
        assert all(proc_uid(w) == nobody for w in children(gw.proc.pid))
        assert _get(port) == 404
    finally:
        gw.stop()


def _get(port):
    try:
        return http_get("http://127.0.0.1:%d/" % port)[0]
    except OSError:
        return None


def syscall_groups():
    """systemd's system call groups, expanded to system call names."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         timeout=30).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())

    def expand(names, seen):
        calls = set()
        for n in names:
            if not n.startswith("@"):
                calls.add(n)
            elif n not in seen:
                seen.add(n)
                calls |= expand(groups.get(n, []), seen)
        return calls
    return lambda names: expand(names, set())


def strace_calls(path):
    calls = set()
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if fields and re.match(r"^[0-9.]+$", fields[0]) and not line.startswith("100.00"):
            calls.add(fields[-1])
    return calls


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or shutil.which("strace") is None,
                    reason="needs systemd-analyze and strace")
@pytest.mark.skipif(SANITIZED, reason="the filter is for the release build; a sanitizer runtime "
                    "makes system calls of its own and cannot run under ptrace")
def test_unit_system_call_filter_allows_what_the_gateway_uses(world_dir, upstream_factory):
    """Every system call the master, its workers and `-s reload` make while serving static
    files, proxying, reloading, watching the file, reopening logs and stopping is allowed by
    the unit's SystemCallFilter= lines (a denied one would kill the process under systemd)."""
    binary, conf, logdir, rundir = install_runnable(world_dir)
    unit = world_dir / "pfx/lib/systemd/system/fastgateway.service"
    filters = [l.split("=", 1)[1] for l in unit.read_text().splitlines()
               if l.startswith("SystemCallFilter=")]
    expand = syscall_groups()
    allowed = expand([n for f in filters if not f.startswith("~") for n in f.split()])
    denied = expand([n for f in filters if f.startswith("~") for n in f[1:].split()])
    assert "epoll_wait" in allowed and "mount" in denied  # the groups were understood

    up = upstream_factory()
    port = free_port()
    cfg = json.loads(strip_comments(conf.read_text()))
    cfg.update(watchConfig=True, workers=2, servers=[{"id": "main",
                                                      "listen": "127.0.0.1:%d" % port}])
    (world_dir / "www").mkdir()
    (world_dir / "www/big.bin").write_bytes(os.urandom(300000))
    cfg["routes"] = [
        {"id": "files", "match": {"path": "/files/{**rest}"},
         "static": {"root": str(world_dir / "www")}},
        {"id": "api", "match": {"path": "/api/{**rest}"}, "clusterId": "up"}]
    cfg["clusters"] = [{"id": "up", "destinations": [{"id": "u", "address": up.url}]}]
    conf.write_text(json.dumps(cfg))
    trace, client_trace = world_dir / "strace.out", world_dir / "strace-client.out"
    gw = Running(binary, conf, ["strace", "-f", "-qq", "-c", "-o", str(trace)])
    try:
        wait_until(lambda: _get(port) is not None, 20, "the gateway under strace")
        assert http_get("http://127.0.0.1:%d/files/big.bin" % port)[0] == 200
        assert http_get("http://127.0.0.1:%d/api/x" % port)[0] == 200
        r = subprocess.run(["strace", "-f", "-qq", "-c", "-o", str(client_trace), str(binary),
                            "-s", "reload", "-c", str(conf)], capture_output=True, text=True,
                           timeout=70)
        assert r.returncode == 0, r.stderr
        cfg["routes"] = cfg["routes"][:1]
        conf.write_text(json.dumps(cfg))  # watchConfig: inotify
        wait_until(lambda: _get(port) == 404, 20, "the watched change")
        os.kill(int((rundir / "fastgateway.pid").read_text()), signal.SIGUSR1)
        wait_until(lambda: "log files reopened" in (logdir / "error.log").read_text(), 10,
                   "the reopen")
    finally:
        tracer = gw.proc
        master = int((rundir / "fastgateway.pid").read_text()) if (
            rundir / "fastgateway.pid").exists() else None
        if master:
            os.kill(master, signal.SIGQUIT)
        tracer.wait(30)
    used = strace_calls(trace) | strace_calls(client_trace)
    assert {"epoll_wait", "accept4", "inotify_add_watch"} <= used, sorted(used)  # it served
    assert not used - allowed, sorted(used - allowed)
    assert not used & denied, sorted(used & denied)


# ---- logrotate ----

@pytest.mark.skipif(shutil.which("logrotate") is None and not os.path.exists("/usr/sbin/logrotate"),
                    reason="logrotate not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="logrotate insists on root-owned files")
def test_logrotate_file_rotates_and_reopens(world_dir):
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    binary, conf, logdir, rundir = install_runnable(world_dir)
    rotate = world_dir / "logrotate.d/fastgateway"
    state = world_dir / "logrotate.state"
    r = subprocess.run([logrotate, "-d", "-s", str(state), str(rotate)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    port = free_port()
    use_port(conf, "127.0.0.1:%d" % port)
    gw = Running(binary, conf)
    try:
        wait_until(lambda: _get(port) == 404, 10, "a 404")
        r = subprocess.run([logrotate, "-f", "-s", str(state), str(rotate)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (logdir / "error.log.1").exists(), r.stdout + r.stderr + str(list(logdir.iterdir()))
        # the master reopened: the new error.log exists and gets the reopen notice
        wait_until(lambda: (logdir / "error.log").exists()
                   and "log files reopened" in (logdir / "error.log").read_text(), 10,
                   "the reopened error log")
    finally:
        gw.stop()


# ---- man pages ----

@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("page", ["fastgateway.8", "fastgateway.json.5"])
def test_man_page_renders_without_warnings(page):
    src = ROOT / "docs/man" / page
    env = dict(os.environ, LC_ALL="C.UTF-8")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(src)], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", str(src)], capture_output=True, text=True, timeout=30,
                           env=dict(env, MANPAGER="cat", MANWIDTH="80"))
        assert r.returncode == 0, r.stderr
        assert "NAME" in r.stdout and "SEE ALSO" in r.stdout
        assert r.stderr == "", r.stderr


def rendered(page):
    """The page as a reader sees it: plain text, no hyphenation, so words stay whole."""
    r = subprocess.run(["groff", "-man", "-Tascii", "-rHY=0", "-P-cbou",
                        str(ROOT / "docs/man" / page)], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert r.returncode == 0, r.stderr
    return r.stdout


def section(text, title):
    """The body of one top-level section (a title at column 0) of a rendered page."""
    m = re.search(r"^%s\n(.*?)(?=^[A-Z][A-Z -]+\n|\Z)" % re.escape(title), text, re.S | re.M)
    assert m, "no %s section" % title
    return m.group(1)


def has_word(text, word):
    return re.search(r"(?<![\w.-])%s(?![\w-])" % re.escape(word), text) is not None


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_lists_every_option_of_help():
    from conftest import BINARY
    r = subprocess.run([str(BINARY), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    # the option column of each help line: "  -v, --version  ..." and the usage line
    options = set()
    for line in r.stdout.splitlines():
        m = re.match(r"\s+((?:--?[A-Za-z][\w-]*(?:, )?)+)", line)
        if m:
            options.update(o.strip() for o in m.group(1).split(","))
    options.update(re.findall(r"\[(-[A-Za-z])\b", r.stdout.splitlines()[0]))
    assert {"-c", "-t", "-T", "-s", "-h", "--help", "-v", "--version"} <= options, options
    text = rendered("fastgateway.8")
    opts = section(text, "OPTIONS")
    missing = [o for o in sorted(options) if not has_word(opts, o)]
    assert not missing, "fastgateway(8) OPTIONS lacks %s" % missing
    synopsis = section(text, "SYNOPSIS")
    assert not [o for o in options if not has_word(synopsis, o)], synopsis
    # exit statuses of docs/operations.md: 0, 1, 2 (usage), 3 (-s reload timeout)
    status = section(text, "EXIT STATUS")
    for code in ("0", "1", "2", "3"):
        assert re.search(r"^\s+%s\s" % code, status, re.M), "exit status %s" % code


def top_level_keys():
    """The keys of the "Top level" table of docs/config.md (a row may name several)."""
    doc = (ROOT / "docs/config.md").read_text()
    table = re.search(r"^## Top level\n(.*?)(?=^## )", doc, re.S | re.M).group(1)
    keys = []
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            keys += re.findall(r"`([A-Za-z]+)`", cells[1])
    return keys


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_config_man_page_lists_every_top_level_key():
    keys = top_level_keys()
    assert {"workers", "servers", "watchConfig", "certificates", "errorPages"} <= set(keys)
    section_text = section(rendered("fastgateway.json.5"), "TOP-LEVEL KEYS")
    missing = [k for k in keys if not has_word(section_text, k)]
    assert not missing, "fastgateway.json(5) TOP-LEVEL KEYS lacks %s" % missing
    for nested in ("accessLogFields", "tls", "redirectHttps", "httpClient"):
        assert has_word(section_text, nested), nested
