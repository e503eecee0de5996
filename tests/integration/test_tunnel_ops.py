"""Tunnel operations (docs/tunnels.md): the WebSocket closing handshake in both directions
(RFC 6455 5.5.1), authentication failures that look alike on the wire, fastgateway-agent's
graceful stop, and its name resolution off the event loop."""
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, http_request
from test_tunnel_agent import AGENT, SECRET, Agent, agent_factory, fakegw  # noqa: F401
from test_tunnel_attacks import RawAgent, frame, gw1, secret_of  # noqa: F401
from test_tunnel_gateway import TUNNEL_PATH, tunnel_config, wait_online

OP_TEXT, OP_BIN, OP_CLOSE, OP_PING = 1, 2, 8, 9


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def read_until_close(ra, timeout=5):
    """Frames from ra until a close frame (its payload) or the end of the stream (None)."""
    ra.s.settimeout(timeout)
    try:
        while True:
            op, p = ra.read_frame()
            if op == OP_CLOSE:
                return bytes(p)
    except (EOFError, ConnectionResetError):
        return None


# ---- the closing handshake, gateway side ----

def test_gateway_echoes_the_agents_close_during_the_handshake(gw1):
    ra = RawAgent(gw1.port)
    assert " 101 " in ra.upgrade()
    ra.s.sendall(frame(OP_CLOSE, close_payload(1001, b"bye")))
    got = read_until_close(ra)
    assert got is not None, "TCP closed without the close frame echoed"
    assert got[:2] == struct.pack(">H", 1001)
    ra.close()


def test_gateway_echoes_the_agents_close_on_a_live_tunnel(gw1, tmp_path):
    ra = RawAgent(gw1.port)
    assert " 101 " in ra.upgrade()
    ra.auth("office", secret_of(tmp_path, "office"))
    op, msg = ra.read_frame()
    assert op == OP_TEXT and msg.startswith(b"FGT/1 OK "), msg
    wait_online(gw1, "office")
    ra.s.sendall(frame(OP_CLOSE, close_payload(1000)))
    got = read_until_close(ra)
    assert got is not None, "TCP closed without the close frame echoed"
    assert got[:2] == struct.pack(">H", 1000)
    ra.close()
    wait_online(gw1, "office", online=False)
    assert "the agent closed the tunnel" in gw1.error_log()


# ---- authentication failures look alike ----

def _refusal(port, agent_id, secret):
    """The close frame the gateway sends for AUTH as agent_id with a proof made with secret,
    and the time from AUTH to it."""
    ra = RawAgent(port)
    assert " 101 " in ra.upgrade()
    t0 = time.monotonic()
    ra.auth(agent_id, secret)
    got = read_until_close(ra)
    dt = time.monotonic() - t0
    ra.close()
    return got, dt


def test_unknown_id_and_wrong_proof_get_the_same_close(gw1):
    wrong, _ = _refusal(gw1.port, "office", b"not-the-secret-0123456789")
    unknown, _ = _refusal(gw1.port, "nobody", b"not-the-secret-0123456789")
    assert wrong is not None and unknown is not None
    assert wrong == unknown == close_payload(1008, b"authentication failed")
    log = gw1.error_log()
    assert 'for agent "office": wrong proof' in log
    assert 'for agent "nobody": unknown agent' in log
