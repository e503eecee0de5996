"""The dashboard (admin/dashboard, docs/admin.md) in a real browser: Debian's chromium, headless,
driven over the DevTools protocol. The page loads from the admin listener, its numbers change
under traffic, and its Block button on an abnormal address makes that address get 403."""
import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _live_groups, base_config, free_port, http_get

websockets = pytest.importorskip("websockets")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token-0123456789"


class Page:
    """One page of a headless chromium, evaluated through Runtime.evaluate."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def send(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise AssertionError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    async def eval(self, expr):
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    async def wait_for(self, expr, timeout=10.0):
        deadline = time.monotonic() + timeout
        guarded = "(() => { try { return (%s); } catch (e) { return false; } })()" % expr
        while time.monotonic() < deadline:
            v = await self.eval(guarded)  # the page may still be loading
            if v:
                return v
            await asyncio.sleep(0.1)
        shown = await self.eval("(document.getElementById('status') || {}).textContent + ' | ' +"
                                " location.href")
        raise AssertionError("timed out waiting for %s; page: %s" % (expr, shown))


def start_chromium(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-dev-shm-usage",
         "--remote-debugging-port=%d" % port, "--remote-allow-origins=*",
         "--user-data-dir=%s" % (Path(tmp_path) / "chromium"), "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    _live_groups.add(proc.pid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=1) as r:
                pages = [p for p in json.load(r) if p.get("type") == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("chromium did not open its DevTools port")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-deps.sh)")
def test_dashboard_live_numbers_and_block(tmp_path, gateway_factory):
    port, aport = free_port(), free_port()
    (tmp_path / "token").write_text(TOKEN)
    cfg = base_config(tmp_path, port, admin={
        "listen": "127.0.0.1:%d" % aport, "tokenFile": "token", "stateFile": "state.json",
        "dashboard": str(REPO_ROOT / "admin" / "dashboard")},
        abnormalIp={"window": "60s", "threshold": 3,
                    "autoBlock": {"threshold": 100000, "duration": "5m"}},
        routes=[{"id": "ok", "match": {"path": "/ok"},
                 "direct": {"status": 200, "body": "ok"}}])
    gateway_factory(cfg)
    url = "http://127.0.0.1:%d" % port
    st, body = http_get("http://127.0.0.1:%d/" % aport)
    assert st == 200 and b"app.js" in body
    proc, ws_url = start_chromium(tmp_path)

    async def drive():
        async with websockets.connect(ws_url, max_size=None) as ws:
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Page.navigate", url="http://127.0.0.1:%d/#token=%s" % (aport, TOKEN))
            await page.wait_for("Number(document.body.dataset.polls || 0) >= 1")
            before = int(await page.eval("document.getElementById('total').textContent"))
            for _ in range(20):
                assert http_get(url + "/ok")[0] == 200
            for _ in range(5):  # errors from 127.0.0.1: it becomes abnormal (threshold 3)
                assert http_get(url + "/missing")[0] == 404
            await page.wait_for("Number(document.getElementById('total').textContent) >= %d"
                                % (before + 25))
            await page.wait_for("document.querySelector('#routes tr[data-route=\"ok\"]') &&"
                                " document.querySelector('#routes tr[data-route=\"ok\"]')"
                                ".children[2].textContent === '20'")
            btn = "document.querySelector('#abnormal button[data-ip=\"127.0.0.1\"]')"
            await page.wait_for(btn + " !== null")
            await page.wait_for("document.getElementById('blocklist').value === 'autoBlock'")
            assert http_get(url + "/ok")[0] == 200
            await page.eval(btn + ".click()")
            await page.wait_for("document.getElementById('blockmsg').textContent"
                                ".startsWith('blocked 127.0.0.1')")

    try:
        asyncio.run(asyncio.wait_for(drive(), 25))
        assert http_get(url + "/ok")[0] == 403
    finally:
        proc.kill()
        proc.wait(5)
        _live_groups.discard(proc.pid)
