"""TCP servers (layer 4, docs/config.md "tcp", docs/tunnels.md "TCP services"): the real gateway
relays raw connections to tcp:// destinations and, through the real fastgateway-agent, to tcp://
services behind it (an HTTP/2 CONNECT stream per connection inside the tunnel, over the hop
from workers that do not hold it). Destinations are tcp_echo.py processes."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BINARY, _live_groups, _port_open, base_config, free_port
from test_metrics import prom_samples
from test_tunnel import (AGENT, TUNNEL_PATH, agents, certs, secret_file,  # noqa: F401
                         wait_online)

ECHO = Path(__file__).resolve().parent / "tcp_echo.py"
MiB = 1 << 20


@pytest.fixture
def echo_server():
    procs = []

    def start():
        port = free_port()
        p = subprocess.Popen([sys.executable, str(ECHO), str(port)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        _live_groups.add(p.pid)
        procs.append(p)
        deadline = time.monotonic() + 10
        while not _port_open(port, 0.2):
            assert time.monotonic() < deadline, "echo server did not start"
            time.sleep(0.02)
        return port

    yield start
    for p in procs:
        p.kill()
        p.wait(5)


def exchange(port, payload, timeout=20.0):
    """Send payload, end the sending half (FIN), read until the relay's FIN: what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        got = bytearray()
        done = threading.Event()

        def reader():
            while True:
                d = s.recv(262144)
                if not d:
                    break
                got.extend(d)
            done.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(timeout)
        assert done.is_set(), "no FIN from the relay after %d bytes" % len(got)
        return bytes(got)


def tcp_config(tmp_path, web_port, tcp_port, dests, workers=2, **tcp):
    cfg = base_config(tmp_path, web_port, workers=workers,
                      routes=[{"id": "r", "match": {"path": "/{**x}"},
                               "direct": {"status": 200, "body": "web"}}])
    t = {"clusterId": "svc"}
    t.update(tcp)
    cfg["servers"].append({"id": "ssh", "listen": "127.0.0.1:%d" % tcp_port, "tcp": t})
    cfg["clusters"] = [{"id": "svc", "loadBalancingPolicy": "FirstAlphabetical",
                        "destinations": [{"id": i, "address": a} for i, a in dests]}]
    return cfg


def tcp_lines(gw, n, timeout=5.0):
    """The access log's tcp lines, polled until there are n."""
    deadline = time.monotonic() + timeout
    while True:
        tcp = [x for x in gw.access_log() if x.get("kind") == "tcp"]
        if len(tcp) >= n or time.monotonic() > deadline:
            return tcp
        time.sleep(0.1)


def closed_by_gateway(port, timeout=5):
    """Connect to the tcp server at port and wait for the gateway to close the connection
    without a byte (EOF or reset); returns the seconds it took."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    return time.monotonic() - t0


def wait_error_log(gw, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while text not in gw.error_log():
        assert time.monotonic() < deadline, gw.error_log()
        time.sleep(0.1)


def test_direct_tcp_forwarding_with_failover_and_log(tmp_path, gateway_factory, echo_server):
    echo = echo_server()
    dead = free_port()  # nothing listens: refused, then the next destination
    web, tport = free_port(), free_port()
    gw = gateway_factory(tcp_config(tmp_path, web, tport,
                                    [("a-dead", "tcp://127.0.0.1:%d" % dead),
                                     ("b", "tcp://127.0.0.1:%d" % echo)]))
    payload = os.urandom(MiB)
    assert exchange(tport, payload) == payload
    assert exchange(tport, b"x") == b"x"
    lines = tcp_lines(gw, 2)
    assert len(lines) == 2, lines
    for ln in lines:
        assert ln["server"] == "ssh" and ln["cluster"] == "svc" and ln["destination"] == "b"
        assert ln["client"] == "127.0.0.1" and ln["termination"] == "closed"
    big = [ln for ln in lines if ln["bytesIn"] == MiB]
    assert big and big[0]["bytesOut"] == MiB and big[0]["durationMs"] >= 0
    text = gw.status("show metrics")["text"]
    assert re.search(r"^fastgateway_tcp_connections_total 2$", text, re.M), text
    assert re.search(r"^fastgateway_tcp_connections 0$", text, re.M), text


def test_no_destination_closes_the_connection_and_logs_why(tmp_path, gateway_factory):
    web, tport = free_port(), free_port()
    gw = gateway_factory(tcp_config(tmp_path, web, tport,
                                    [("a", "tcp://127.0.0.1:%d" % free_port())]))
    assert closed_by_gateway(tport) < 2
    wait_error_log(gw, "tcp server ssh: connection from 127.0.0.1")
    assert "destination a (tcp://127.0.0.1:" in gw.error_log()
    line = tcp_lines(gw, 1)[0]
    assert line["termination"] == "no_destination" and line["bytesIn"] == 0


def test_idle_timeout_closes_a_silent_connection(tmp_path, gateway_factory, echo_server):
    echo = echo_server()
    web, tport = free_port(), free_port()
    gw = gateway_factory(tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)],
                                    idleTimeout="500ms"))
    with socket.create_connection(("127.0.0.1", tport), timeout=5) as s:
        s.sendall(b"ping")
        assert s.recv(10) == b"ping"
        t0 = time.monotonic()
        assert s.recv(10) == b""  # closed by the gateway
        assert time.monotonic() - t0 < 3
    assert tcp_lines(gw, 1)[0]["termination"] == "idle_timeout"


# ---- caps ----

def relayed(s):
    """Whether connection s reaches the echo service (else the gateway closed it unanswered)."""
    try:
        s.settimeout(5)
        s.sendall(b"x")
        return s.recv(1) == b"x"
    except OSError:
        return False


def connect(port, source="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def test_max_connections_is_exact_across_workers(tmp_path, gateway_factory, echo_server):
    """maxConnections counts the server's connections in shared memory: with two workers taking
    connections, exactly the cap is relayed; the rest are closed at once and logged; a place
    comes back when a connection ends."""
    echo = echo_server()
    web, tport = free_port(), free_port()
    gw = gateway_factory(tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)],
                                    workers=2, maxConnections=6, maxConnectionsPerClient=0))
    socks = [connect(tport) for _ in range(14)]
    try:
        ok = [relayed(s) for s in socks]
        assert ok.count(True) == 6, ok
        wait_error_log(gw, "closed: maxConnections (6) reached")
        lines = tcp_lines(gw, 8)
        assert len(lines) == 8 and all(ln["termination"] == "server_limit" for ln in lines), lines
        assert lines[0]["error"] == "maxConnections (6) reached", lines[0]
        m = prom_samples(gw.status("show metrics")["text"])
        assert m[("fastgateway_server_connections_refused_total",
                  frozenset({("server", "ssh"), ("reason", "server")}))] == 8
        assert m[("fastgateway_server_connections_open", frozenset({("server", "ssh")}))] == 6
        for s, good in zip(socks, ok):
            if good:
                s.close()
                break
        deadline = time.monotonic() + 5
        while True:  # the closed one's place is given back (once its relay saw the close)
            with connect(tport) as s:
                if relayed(s):
                    break
            assert time.monotonic() < deadline, "no place came back"
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()


def test_max_connections_per_client_is_exact_across_workers(tmp_path, gateway_factory,
                                                           echo_server):
    """maxConnectionsPerClient counts an address's connections in shared memory: with two
    workers taking them, exactly the cap is relayed; another address is not held back; closed
    connections give their places back, and so does a worker that is killed."""
    echo = echo_server()
    web, tport = free_port(), free_port()
    gw = gateway_factory(tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)],
                                    workers=2, maxConnectionsPerClient=3))
    socks = [connect(tport) for _ in range(10)]
    try:
        ok = [relayed(s) for s in socks]
        assert ok.count(True) == 3, ok
        wait_error_log(gw, "tcp server ssh: connection from 127.0.0.1:")
        wait_error_log(gw, "closed: maxConnectionsPerClient (3) reached: 127.0.0.1 holds as many")
        assert "in this worker" not in gw.error_log()
        assert all(ln["termination"] == "client_limit" for ln in tcp_lines(gw, 7)), tcp_lines(gw, 7)
        with connect(tport, "127.0.0.2") as s:  # another client is not held back
            assert relayed(s)
    finally:
        for s in socks:
            s.close()
    wait_places(tport, 3)
    # a worker killed while it relays: the master gives its places back
    held = wait_places(tport, 3, keep=True)
    for w in gw.workers():
        os.kill(w["pid"], signal.SIGKILL)
    for s in held:
        s.close()
    deadline = time.monotonic() + 10
    while len(gw.workers()) < 2:
        assert time.monotonic() < deadline, gw.all_workers()
        time.sleep(0.1)
    wait_places(tport, 3)


def wait_places(port, n, timeout=10, keep=False):
    """Wait until 127.0.0.1 can hold n relayed connections at once again (keep: return them
    open)."""
    deadline = time.monotonic() + timeout
    while True:
        socks = [connect(port) for _ in range(n)]
        good = all(relayed(s) for s in socks)
        if good and keep:
            return socks
        for s in socks:
            s.close()
        if good:
            return None
        assert time.monotonic() < deadline, "127.0.0.1 stayed at its cap"
        time.sleep(0.2)


# ---- configuration errors ----

@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["servers"][1].update(acceptTunnels=True),
     "servers[1].acceptTunnels: not for a tcp server"),
    (lambda c: c["servers"][1].update(http2={"h2c": True}),
     "servers[1].http2: not for a tcp server"),
    (lambda c: c["servers"][1]["tcp"].update(clusterId="nope"),
     "servers[1].tcp.clusterId: unknown cluster \"nope\""),
    (lambda c: c["servers"][1]["tcp"].pop("clusterId"),
     "servers[1].tcp: missing required key \"clusterId\""),
    (lambda c: c["servers"][1]["tcp"].update(connectTimeout="0s"),
     "servers[1].tcp.connectTimeout: must be greater than 0"),
    (lambda c: c["servers"][1]["tcp"].update(bogus=1),
     "servers[1].tcp.bogus: unknown key"),
    (lambda c: c["routes"][0].update(servers=["ssh"]),
     "routes[0].servers: \"ssh\" is a tcp server"),
    (lambda c: c["clusters"][0]["destinations"].append({"id": "h", "address": "http://127.0.0.1:1"}),
     "clusters[0].destinations[1].address: \"http://127.0.0.1:1\" cannot serve tcp server"),
    (lambda c: c["clusters"][0]["destinations"][0].update(address="tcp://127.0.0.1"),
     "is not tcp://HOST:PORT"),
    (lambda c: c["clusters"][0]["destinations"][0].update(address="tcp://127.0.0.1:22/x"),
     "is not tcp://HOST:PORT"),
    (lambda c: c["clusters"][0].update(healthCheck={"active": {}}),
     "clusters[0].healthCheck.active: not for the cluster of tcp server \"ssh\""),
    (lambda c: c["routes"][0].pop("direct") and c["routes"][0].update(clusterId="svc"),
     "routes[0].clusterId: cluster \"svc\" has tcp:// destinations"),
    (lambda c: c["servers"][1]["tcp"].update(maxConnections=-1),
     "servers[1].tcp.maxConnections: -1 is out of range 0..1000000"),
    (lambda c: c["servers"][1]["tcp"].update(maxConnectionsPerClient="8"),
     "servers[1].tcp.maxConnectionsPerClient: expected an integer, got a string"),
    (lambda c: c["servers"][1]["tcp"].update(maxConnections=10, maxConnectionsPerClient=11),
     "servers[1].tcp.maxConnectionsPerClient: 11 is more than maxConnections (10): it could "
     "never apply"),
    # a cluster with tcp:// destinations takes raw bytes only, whoever uses it
    (lambda c: c["clusters"].append({"id": "mix", "destinations": [
        {"id": "t", "address": "tcp://127.0.0.1:22"}, {"id": "h", "address": "http://127.0.0.1:1"}]}),
     "clusters[1].destinations[1].address: \"http://127.0.0.1:1\" speaks HTTP: it cannot share "
     "a cluster with tcp:// destinations"),
    (lambda c: c["clusters"].append({"id": "mix", "healthCheck": {"active": {}}, "destinations": [
        {"id": "t", "address": "tcp://127.0.0.1:22"}]}),
     "clusters[1].healthCheck.active: not for a cluster with tcp:// destinations"),
])
def test_config_errors(tmp_path, mutate, message):
    cfg = tcp_config(tmp_path, free_port(), free_port(), [("a", "tcp://127.0.0.1:22")])
    mutate(cfg)
    p = tmp_path / "gw.json"
    p.write_text(json.dumps(cfg))
    binary = str(BINARY)
    r = subprocess.run([binary, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert message in r.stderr + r.stdout, r.stderr + r.stdout


def test_valid_config_passes_t_and_dumps(tmp_path):
    cfg = tcp_config(tmp_path, free_port(), free_port(), [("a", "tcp://127.0.0.1:22")],
                     idleTimeout="1h", connectTimeout="5s")
    p = tmp_path / "gw.json"
    p.write_text(json.dumps(cfg))
    binary = str(BINARY)
    r = subprocess.run([binary, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([binary, "-T", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    dumped = json.loads(r.stdout)
    ssh = [s for s in dumped["servers"] if s["id"] == "ssh"][0]
    assert ssh["tcp"] == {"clusterId": "svc", "idleTimeout": "1h", "connectTimeout": "5s",
                          "maxConnections": 1024, "maxConnectionsPerClient": 64}


# ---- through the agent ----

def tunnel_tcp_config(tmp_path, certs, web, tport, aport, sec, workers=2, dests=None, **tcp):
    cfg = tcp_config(tmp_path, web, tport,
                     dests or [("a", "tunnel://office/ssh")], workers=workers, **tcp)
    cfg["certificates"] = [{"id": "gw", "chain": certs["crt"], "key": certs["key"]}]
    cfg["servers"].append({"id": "agents", "listen": "127.0.0.1:%d" % aport,
                           "acceptTunnels": True, "tls": {"certificates": ["gw"]}})
    cfg["tunnels"] = {"path": TUNNEL_PATH, "heartbeatSeconds": 2, "graceSeconds": 2,
                      "agents": [{"id": "office", "secretFile": str(sec)}]}
    return cfg


@pytest.fixture
def tunnel_setup(tmp_path, certs, gateway_factory, agents, echo_server):
    def make(workers=2, dests=None, web_service="http://127.0.0.1:1", mutate=None, **tcp):
        """tcp: keys of the tcp server's "tcp" object; mutate(cfg) edits the config."""
        echo = echo_server()
        web, tport, aport = free_port(), free_port(), free_port()
        sec = secret_file(tmp_path, "office")
        cfg = tunnel_tcp_config(tmp_path, certs, web, tport, aport, sec, workers=workers,
                                dests=dests, **tcp)
        if mutate:
            mutate(cfg)
        gw = gateway_factory(cfg)
        ag = agents(tmp_path, "office", aport, certs["ca"], "office", sec,
                    {"ssh": "tcp://127.0.0.1:%d" % echo, "web": web_service})
        wait_online(gw, "office")
        return gw, ag, tport
    return make


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_tcp_through_the_agent_concurrent_large_and_ordered(tunnel_setup):
    gw, ag, tport = tunnel_setup(workers=2)
    results, errors = {}, []

    def one(i):
        try:
            payload = (b"%06d" % i) * (MiB // 6) if i % 8 == 0 else os.urandom(4096 + i)
            results[i] = exchange(tport, payload) == payload
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 64 and all(results.values())
    lines = tcp_lines(gw, 64)
    assert len(lines) == 64
    assert all(ln["destination"] == "a" and ln["termination"] == "closed" for ln in lines)


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_half_close_through_the_agent(tunnel_setup):
    """The client's FIN reaches the service after its bytes; the service's answer still comes
    back on the half-open connection, then its own FIN."""
    gw, ag, tport = tunnel_setup(workers=1)
    with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
        s.sendall(b"first")
        assert s.recv(100) == b"first"
        s.sendall(b"second")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(100)
            if not d:
                break
            got += d
        assert got == b"second"


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_offline_agent_closes_promptly(tunnel_setup):
    gw, ag, tport = tunnel_setup(workers=2, dests=[("a", "tunnel://office/ssh")])
    ag.stop()
    wait_online(gw, "office", online=False)
    assert closed_by_gateway(tport) < 1.0
    wait_error_log(gw, "no destination of cluster svc is available")


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_offline_agent_fails_over_to_a_direct_destination(tunnel_setup, echo_server):
    """Two destinations, the tunnel first: while the agent is offline the balancer skips it and
    the connection goes to the direct one."""
    echo = echo_server()
    gw, ag, tport = tunnel_setup(workers=2, dests=[("a", "tunnel://office/ssh"),
                                                   ("b", "tcp://127.0.0.1:%d" % echo)])
    assert exchange(tport, b"via-agent") == b"via-agent"
    ag.stop()
    wait_online(gw, "office", online=False)
    assert exchange(tport, b"direct") == b"direct"
    lines = sorted(tcp_lines(gw, 2), key=lambda ln: ln["time"])  # workers flush apart
    assert [ln["destination"] for ln in lines] == ["a", "b"]


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_unknown_and_http_services_are_refused(tunnel_setup):
    """A CONNECT for a service the agent lacks (502) or for an http service (501) is an answer,
    not a switch: with no other destination the connection is closed and the log says so."""
    gw, ag, tport = tunnel_setup(workers=1, dests=[("a", "tunnel://office/nope"),
                                                   ("b", "tunnel://office/web")])
    closed_by_gateway(tport)
    wait_error_log(gw, "answered 501")
    line = tcp_lines(gw, 1)[0]
    assert line["attempts"] == 2 and line["termination"] == "no_destination"


def test_route_relays_an_http_upgrade_to_tcp(tmp_path, gateway_factory, echo_server):
    """A route to tcp:// destinations relays an HTTP/1.1 "Upgrade: tcp" as raw bytes; a request
    without the switch gets an error answer, never a hang."""
    echo = echo_server()
    web, tport = free_port(), free_port()
    cfg = tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)])
    cfg["clusters"].append({"id": "raw", "destinations": [
        {"id": "r", "address": "tcp://127.0.0.1:%d" % echo}]})
    cfg["routes"].insert(0, {"id": "up", "match": {"path": "/raw"}, "clusterId": "raw",
                             "upgradeProtocols": ["tcp"]})
    gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", web), timeout=5) as s:
        s.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: tcp\r\nConnection: upgrade\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(b"raw bytes")
        got = b""
        while len(got) < 9:
            got += s.recv(100)
        assert got == b"raw bytes"


def test_plain_request_to_a_tcp_route_is_refused_without_charging_the_destination(
        tmp_path, gateway_factory, echo_server):
    """A request that is not the switch to tcp, on a route to tcp:// destinations: the gateway's
    own 501 (the route relays only the switch), never sent to the raw destination, and never
    counted against it (its passive health would take it out of service for the tcp clients)."""
    echo = echo_server()
    web, tport = free_port(), free_port()
    cfg = tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)])
    cfg["clusters"].append({"id": "raw", "healthCheck": {"passive": {"enabled": True}},
                            "destinations": [{"id": "r", "address": "tcp://127.0.0.1:%d" % echo}]})
    cfg["routes"].insert(0, {"id": "up", "match": {"path": "/raw"}, "clusterId": "raw",
                             "upgradeProtocols": ["tcp"]})
    gw = gateway_factory(cfg)
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", web), timeout=5) as s:
            s.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = recv_all(s)
        assert head.split(b" ")[1] == b"501", head
        assert b"relays only the switch to tcp" in head, head
    text = gw.status("show metrics")["text"]
    assert re.search(r'^fastgateway_destination_failures_total\{cluster="raw",destination="r"\} 0$',
                     text, re.M), text
    assert "unhealthy" not in gw.error_log()
    with socket.create_connection(("127.0.0.1", web), timeout=5) as s:  # the switch still works
        s.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: tcp\r\nConnection: upgrade\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head


def recv_all(s, timeout=5):
    s.settimeout(timeout)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            return got
        got += d


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
def test_agent_service_that_refuses_answers_502(tmp_path, certs, gateway_factory, agents):
    """The agent's dial to its tcp service fails: its answer to the CONNECT is 502, and the
    gateway closes the client's connection and logs it."""
    web, tport, aport = free_port(), free_port(), free_port()
    sec = secret_file(tmp_path, "office")
    gw = gateway_factory(tunnel_tcp_config(tmp_path, certs, web, tport, aport, sec, workers=1))
    agents(tmp_path, "office", aport, certs["ca"], "office", sec,
           {"ssh": "tcp://127.0.0.1:%d" % free_port()})
    wait_online(gw, "office")
    closed_by_gateway(tport, timeout=10)
    wait_error_log(gw, "answered 502 instead of a switch")


def test_retiring_worker_relays_until_the_drain_timeout(tmp_path, gateway_factory, echo_server):
    """A reload leaves open connections to the old workers: they keep relaying, and are closed
    at webSocketDrainTimeout (termination "drained"); new connections go to the new ones."""
    echo = echo_server()
    web, tport = free_port(), free_port()
    cfg = tcp_config(tmp_path, web, tport, [("a", "tcp://127.0.0.1:%d" % echo)])
    cfg["webSocketDrainTimeout"] = "1500ms"
    cfg["shutdownTimeout"] = "5s"
    gw = gateway_factory(cfg)
    gen0 = gw.info()["generation"]
    with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
        s.sendall(b"before")
        assert s.recv(100) == b"before"
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while gw.info()["generation"] == gen0:
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.05)
        assert exchange(tport, b"new generation") == b"new generation"
        s.sendall(b"after the reload")
        assert s.recv(100) == b"after the reload"
        t0 = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""  # the drain timeout closes it
        assert time.monotonic() - t0 < 5
    drained = [ln for ln in tcp_lines(gw, 2) if ln["termination"] == "drained"]
    assert len(drained) == 1 and drained[0]["bytesIn"] == len(b"beforeafter the reload")


@pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")
@pytest.mark.parametrize("version", [1, 2])
def test_send_proxy_protocol_through_the_agent(tunnel_setup, version):
    """docs/config.md sendProxyProtocol: through a tunnel, the header travels inside the stream
    to the agent's service, ahead of the client's bytes (the echo service sends both back)."""
    gw, ag, tport = tunnel_setup(workers=1, sendProxyProtocol=version)
    got = exchange(tport, b"hello")
    sig = b"PROXY TCP4 127.0.0.1 127.0.0.1 " if version == 1 else b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"
    assert got.startswith(sig) and got.endswith(b"hello"), got
