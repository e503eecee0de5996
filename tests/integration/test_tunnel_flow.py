"""Per-stream flow control inside an agent's tunnel (docs/tunnels.md "Flow control"): HTTP
downloads through the real fastgateway-agent whose clients stop reading hold back their own
streams only; another request on the same agent's tunnel is served at once."""
import json
import socket
import time

import pytest

from conftest import http_request
from test_tunnel import AGENT, MiB, agents, certs, setup  # noqa: F401

STALLED = 100  # streams whose clients never read: more than the connection window holds


def _stalled_download(port, size):
    """A GET of `size` bytes through the tunnel whose client reads nothing, its receive buffer
    small so that the gateway's buffers fill soon."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /tunnel/bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % size)
    return s


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_downloads_whose_clients_stop_reading_do_not_stall_the_tunnel(setup):
    gw, ag, up, port, tport, _ = setup(workers=1)  # one worker: every stream in one tunnel
    status, _, _ = http_request("GET", "http://127.0.0.1:%d/tunnel/warm" % port, timeout=10)
    assert status == 200
    stalled = []
    try:
        for _ in range(STALLED):
            stalled.append(_stalled_download(port, 64 * MiB))
        time.sleep(3)  # the stalled streams fill their windows and every buffer on the way
        for i in range(3):
            t0 = time.monotonic()
            status, _, body = http_request(
                "GET", "http://127.0.0.1:%d/tunnel/bytes/%d" % (port, MiB), timeout=8)
            assert status == 200 and len(body) == MiB, (i, status, len(body))
            status, _, body = http_request("GET", "http://127.0.0.1:%d/tunnel/hello" % port,
                                           timeout=8)
            assert status == 200 and json.loads(body)["path"] == "/hello", body
            assert time.monotonic() - t0 < 8, i
        # the stalled ones were held back, not failed: one reads again and gets its bytes
        s = stalled.pop()
        s.settimeout(20)
        got = 0
        while got < 4 * MiB:
            d = s.recv(1 << 20)
            assert d, "the stalled download ended after %d bytes" % got
            got += len(d)
        s.close()
        closed = [ln for ln in gw.error_log().splitlines()
                  if "tunnel agent office: connection" in ln and "closed:" in ln]
        assert not closed, closed
    finally:
        for s in stalled:
            s.close()
