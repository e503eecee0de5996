"""node's ws (Debian: node-ws) as a WebSocket client through the gateway over HTTP/1.1, to the
python3-websockets echo destination (tests/integration/ws_echo.py): a subprotocol, text, a
1 MiB binary message and 1,000 messages in order."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import free_port
from test_websocket import ws_config, ws_echo  # noqa: F401

NODE = shutil.which("nodejs") or shutil.which("node")
NODE_PATH = "/usr/share/nodejs"  # where Debian's node-* packages install


def have_node_ws():
    if NODE is None:
        return False
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    return subprocess.run([NODE, "-e", "require('ws')"], env=env,
                          capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not have_node_ws(),
                                reason="needs node and Debian's node-ws (apt-get install node-ws)")

CLIENT = r"""
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1], ['chat']);
const big = Buffer.alloc(1 << 20, 7);
const want = ['hello', 'binary:' + big.length];
for (let i = 0; i < 1000; i++) want.push('m' + i);
const got = [];
const finish = (err) => {
  console.log(JSON.stringify({ok: !err && JSON.stringify(got) === JSON.stringify(want),
                              protocol: ws.protocol, received: got.length, error: err || null}));
  ws.close();
};
ws.on('open', () => {
  ws.send('hello');
  ws.send(big);
  for (let i = 0; i < 1000; i++) ws.send('m' + i);
});
ws.on('message', (data, isBinary) => {
  got.push(isBinary ? (Buffer.compare(data, big) === 0 ? 'binary:' + data.length : 'bad')
                    : data.toString());
  if (got.length === want.length) finish(null);
});
ws.on('error', (e) => finish(String(e)));
ws.on('close', () => { if (got.length < want.length) finish('closed early'); });
"""


def test_node_ws_client_over_http11(tmp_path, gateway_factory, ws_echo):
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, ws_echo))
    p = subprocess.run([NODE, "-e", CLIENT, "ws://127.0.0.1:%d/node" % port],
                       env=dict(os.environ, NODE_PATH=NODE_PATH), capture_output=True,
                       timeout=60)
    out = json.loads(p.stdout.decode().strip().splitlines()[0])
    assert out["ok"] and out["protocol"] == "chat", (out, p.stderr[-1000:])
    lines = [l for l in gw.access_log(wait_for=1) if l.get("path") == "/node"]
    assert lines and lines[0]["status"] == 101 and lines[0]["bytesOut"] > 1 << 20
