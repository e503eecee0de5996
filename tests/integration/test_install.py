"""`make install`: the installed example configuration is valid where it is installed, and the
init script and systemd unit name the installed binary and configuration."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_install_into_prefix(tmp_path):
    prefix = tmp_path / "pfx"
    logdir = tmp_path / "log"
    subprocess.run(["make", "-s", "install", "PREFIX=%s" % prefix, "LOGDIR=%s" % logdir],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    binary = prefix / "sbin" / "fastgateway"
    conf = prefix / "etc" / "fastgateway" / "fastgateway.json"
    assert binary.is_file() and conf.is_file()
    text = conf.read_text()
    assert "/run/fastgateway.pid" in text and "/tmp/fastgateway" not in text
    assert str(prefix / "share" / "doc" / "fastgateway") in text
    # Valid as installed: the static root it serves exists, log paths are absolute.
    r = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    init = (prefix / "etc" / "init.d" / "fastgateway").read_text()
    assert "DAEMON=${DAEMON:-%s}" % binary in init
    assert "CONF=${CONF:-%s}" % conf in init
    unit = (prefix / "lib" / "systemd" / "system" / "fastgateway.service").read_text()
    assert "ExecStart=%s -c %s" % (binary, conf) in unit
    assert (prefix / "share" / "doc" / "fastgateway" / "config.md").is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_systemd_unit_verifies(tmp_path):
    """systemd's own checker accepts the unit as installed (directives, commands present and
    executable)."""
    prefix = tmp_path / "pfx"
    subprocess.run(["make", "-s", "install", "PREFIX=%s" % prefix, "LOGDIR=%s" % (tmp_path / "l")],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    unit = prefix / "lib" / "systemd" / "system" / "fastgateway.service"
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fastgateway.service" not in r.stderr, r.stderr  # no warning about our unit
