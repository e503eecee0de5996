"""A real browser through the gateway: Debian's chromium, headless, loads a page from a static
route (tests/integration/data/ws_browser/index.html) over TLS + HTTP/2, and the page's script
opens WebSockets through the gateway to a python3-websockets echo destination: one on the same
HTTP/2 connection (Chromium uses RFC 8441 extended CONNECT when the server offers
SETTINGS_ENABLE_CONNECT_PROTOCOL), one on a server that speaks only HTTP/1.1 (an Upgrade). The
page writes the outcome into the DOM; the test reads it through the DevTools protocol
(--remote-debugging-port, python3-websockets), since --dump-dom's virtual time does not wait for
WebSockets. The access log says which protocol each WebSocket used."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import base_config, free_port, wait_until
from test_websocket import _leaf_certs, ws_echo  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None or shutil.which("openssl") is None,
                                reason="needs Debian's chromium (apt-get install chromium) and "
                                       "the openssl CLI")

PAGE_ROOT = Path(__file__).resolve().parent / "data" / "ws_browser"
HOST = "a.example.test"


def browser_config(tmp_path, h2_port, h1_port, dest):
    _leaf_certs(tmp_path)
    cfg = base_config(tmp_path, h2_port, workers=1, routes=[
        {"id": "ws", "match": {"path": "/ws/{**rest}"}, "clusterId": "echo"},
        {"id": "page", "match": {"path": "/{**rest}"},
         "static": {"root": str(PAGE_ROOT), "tryFiles": ["{path}", "/index.html"]}},
    ], clusters=[{"id": "echo", "destinations": [{"id": "e", "address": dest}]}])
    cfg["certificates"] = [{"id": "a", "chain": str(tmp_path / "a.crt"),
                            "key": str(tmp_path / "a.key")}]
    main = cfg["servers"][0]
    main["tls"] = {"certificates": ["a"], "default": "a"}  # ALPN h2, http/1.1
    h1 = dict(main, id="h1", listen="127.0.0.1:%d" % h1_port)
    h1["tls"] = dict(main["tls"], alpn=["http/1.1"])
    cfg["servers"].append(h1)
    cfg["log"]["accessLogFields"] = ["method", "path", "status", "protocol", "termination",
                                     "bytesIn", "bytesOut"]
    return cfg


async def _page_result(devtools_port, timeout=60):
    """Evaluate #result's text in the page until the script has written it."""
    import websockets
    with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % devtools_port,
                                timeout=10) as r:
        targets = [t for t in json.load(r) if t.get("type") == "page"]
    async with websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=None,
                                  ping_interval=None) as ws:
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            await ws.send(json.dumps({"id": n, "method": "Runtime.evaluate", "params": {
                "expression": "document.getElementById('result') ? "
                              "document.getElementById('result').textContent : 'pending'",
                "returnByValue": True}}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == n:
                    break
            text = msg.get("result", {}).get("result", {}).get("value", "pending")
            if text != "pending":
                return json.loads(text)
            await asyncio.sleep(0.2)
    raise AssertionError("the page did not report within %ds" % timeout)


def run_chromium(tmp_path, url):
    """Chromium on url; the page's result (JSON)."""
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--user-data-dir=%s" % profile, "--ignore-certificate-errors",
         "--host-resolver-rules=MAP %s 127.0.0.1" % HOST, "--remote-debugging-port=0", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        return asyncio.run(_page_result(port))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_chromium_websockets_over_h2_and_http11(tmp_path, gateway_factory, ws_echo):
    h2_port, h1_port = free_port(), free_port()
    gw = gateway_factory(browser_config(tmp_path, h2_port, h1_port, ws_echo))
    url = ("https://%s:%d/index.html?h2=wss://%s:%d/ws/h2&h1=wss://%s:%d/ws/h1"
           % (HOST, h2_port, HOST, h2_port, HOST, h1_port))
    result = run_chromium(tmp_path, url)
    assert result["h2"]["ok"] and result["h1"]["ok"], result
    # the page, both WebSockets (each logged when it closes) and whatever else the browser
    # asks for (/favicon.ico): wait for the lines of the three under test, not for a count
    lines = wait_until(lambda: (lambda ls: ls if {"/index.html", "/ws/h2", "/ws/h1"} <=
                                {l["path"] for l in ls} else None)(gw.access_log()), 10,
                       "the access-log lines of the page and both WebSockets")
    page = [l for l in lines if l["path"] == "/index.html"]
    h2 = [l for l in lines if l["path"] == "/ws/h2"]
    h1 = [l for l in lines if l["path"] == "/ws/h1"]
    assert page and page[0]["protocol"] == "HTTP/2.0" and page[0]["status"] == 200
    # RFC 8441 on the page's own connection: an extended CONNECT answered 200
    assert h2 and h2[0]["protocol"] == "HTTP/2.0" and h2[0]["method"] == "CONNECT", lines
    assert h2[0]["status"] == 200 and h2[0]["bytesIn"] > 256 * 1024
    # HTTP/1.1 Upgrade on the server that offers only http/1.1
    assert h1 and h1[0]["protocol"] == "HTTP/1.1" and h1[0]["status"] == 101, lines
    assert h1[0]["method"] == "GET" and h1[0]["bytesOut"] > 256 * 1024
