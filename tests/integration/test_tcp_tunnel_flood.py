"""Regression (hostile review, attack2): a tcp server relaying to tunnel://AGENT/SERVICE lets any
client that can reach it hold the agent's tunnel streams with connections that never send a
byte (idleTimeout defaults to 1h). Once the tunnel takes no more streams, the next connection
is refused with the diagnosis "its agent is offline" although the agent is online: the
operator is sent looking for a network problem instead of the flood. The gateway must name
the real cause (the tunnel has no stream left)."""
import socket
import time

import pytest

from conftest import free_port  # noqa: F401
from test_tcp_tunnel import echo_server, tunnel_setup  # noqa: F401
from test_tunnel import AGENT, agents, certs, tunnels_status  # noqa: F401


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_full_tunnel_is_not_reported_as_an_offline_agent(tunnel_setup):
    gw, ag, tport = tunnel_setup(workers=1)
    socks = []
    try:
        for _ in range(1100):  # more than the tunnel's concurrent streams; none sends a byte
            socks.append(socket.create_connection(("127.0.0.1", tport), timeout=5))
        deadline = time.monotonic() + 10
        refused = []
        while time.monotonic() < deadline:
            refused = [ln for ln in gw.error_log().splitlines()
                       if "tcp server ssh: connection from" in ln and "closed:" in ln]
            if refused:
                break
            time.sleep(0.1)
        assert refused, "the connections past the tunnel's streams were not refused"
        agent = {a["id"]: a for a in tunnels_status(gw)["agents"]}["office"]
        assert agent["online"], agent
        assert not any("its agent is offline" in ln for ln in refused), refused[-1]
    finally:
        for s in socks:
            s.close()
