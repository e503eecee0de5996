"""An agent keeping several tunnel connections (docs/tunnels.md, "Workers and connections"):
the real gateway with two workers and the real fastgateway-agent binary.

Covered: with `connections` "auto" every worker holds a connection of the agent (show tunnels)
and requests on every worker are served without the hop; an agent with one connection is still
served from every worker through the hop, whose Unix connections are kept alive between
requests; the handshake's instance and role (a connection of the same instance joins, "extra"
on a worker that holds one is told DUPLICATE, "first" replaces it, another instance takes
over, the short AUTH form still works); an agent restarted while its old process hangs takes
over at once; an agent reload (a new instance) moves every connection; gateway reloads under
load lose nothing and leave one connection per worker of the new generation."""
import hashlib
import hmac
import http.client
import json
import os
import signal
import time

import pytest

from conftest import free_port
from test_tunnel import (AGENT, Agent, under_load, _read_frame, _send_text, _ws_connect, agents,  # noqa: F401
                         certs, get, one_cluster, secret_file, tunnel_config, tunnels_status,
                         wait_online)

pytestmark = pytest.mark.skipif(not AGENT.exists(), reason="fastgateway-agent is not built")


def office(gw):
    return {a["id"]: a for a in tunnels_status(gw)["agents"]}["office"]


def wait_connections(gw, n, timeout=10.0, pids=None, not_in=()):
    """The agent's connections once there are n of them (on the workers pids, when given),
    none of them one of the serials not_in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conns = office(gw)["connections"]
        held = sorted(c["worker"]["pid"] for c in conns)
        if (len(conns) == n and (pids is None or held == sorted(pids)) and
                not set(not_in) & {c["connection"] for c in conns}):
            return conns
        time.sleep(0.05)
    raise AssertionError("wanted %d connection(s) on %s: %s" % (n, pids, office(gw)))


@pytest.fixture
def multi(tmp_path, certs, gateway_factory, upstream_factory, agents):  # noqa: F811
    """A gateway (2 workers by default) with agent `office` serving `web`; the agent's extra
    configuration (e.g. connections) as keywords."""
    def make(workers=2, start_agent=True, **agent_extra):
        up = upstream_factory()
        port, tport = free_port(), free_port()
        sec = secret_file(tmp_path, "office")
        cfg = tunnel_config(tmp_path, port, tport, certs,
                            [{"id": "office", "secretFile": str(sec)}],
                            one_cluster(("a", "tunnel://office/web", {})), workers=workers)
        gw = gateway_factory(cfg)
        ag = None
        if start_agent:
            ag = agents(tmp_path, "office", tport, certs["ca"], "office", sec,
                        {"web": "http://127.0.0.1:%d" % up.port}, **agent_extra)
            wait_online(gw, "office")
        return gw, ag, up, port, tport, sec
    return make


def worker_requests(gw):
    return {w["pid"]: w["requests"] for w in gw.workers()}


def test_auto_keeps_a_connection_on_every_worker(multi):
    gw, ag, up, port, _, _ = multi()
    pids = [w["pid"] for w in gw.workers()]
    assert len(pids) == 2
    conns = wait_connections(gw, 2, pids=pids)
    assert len({c["connection"] for c in conns}) == 2
    assert all(not c["draining"] and c["peer"].startswith("127.0.0.1:") for c in conns)
    before = worker_requests(gw)
    # connections open at the same time: the least-connections choice (master/balance.h)
    # spreads them over both workers (one at a time, each could go to the same idle worker)
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
    try:
        for c in clients:
            c.connect()
        for i, c in enumerate(clients):
            c.request("GET", "/tunnel/m%d" % i)
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["path"] == "/m%d" % i
    finally:
        for c in clients:
            c.close()
    after = worker_requests(gw)
    assert all(after[p] > before.get(p, 0) for p in pids), (before, after)
    t = office(gw)
    assert t["hopRequests"] == 0, t
    assert t["connects"] == 2 and t["takeovers"] == 0, t


def hop_connections(holder):
    """Connected Unix sockets named after holder's hop socket (either end's entry)."""
    name = "@fastgateway-hop-%d" % holder
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    # Num RefCount Protocol Flags Type St Inode Path; St 03: connected
    return sum(1 for r in rows if len(r) >= 8 and r[7] == name and r[5] == "03")


def test_one_connection_is_served_from_every_worker_through_the_hop(multi):
    gw, ag, up, port, _, _ = multi(connections=1)
    conns = wait_connections(gw, 1)
    holder = conns[0]["worker"]["pid"]
    for i in range(60):
        status, _, body = get(port, "/tunnel/h%d" % i)
        assert status == 200 and json.loads(body)["path"] == "/h%d" % i
    t = office(gw)
    assert len(t["connections"]) == 1 and t["hopRequests"] > 0, t
    # the other worker keeps its hop connection for the next request (keep-alive), instead of
    # one connection per request
    assert hop_connections(holder) >= 1
    time.sleep(0.5)
    assert len(office(gw)["connections"]) == 1  # no second connection was ever made
    assert "DUPLICATE" not in ag.logs()


# ---- the handshake's instance and role, by hand ----

def auth(tport, secret, instance, role, agent_id="office"):
    """A tunnel handshake with instance and role: (socket, leftover, the gateway's answer as
    (opcode, payload))."""
    s, buf = _ws_connect(tport)
    op, msg, buf = _read_frame(s, buf)
    assert op == 1 and msg.startswith(b"FGT/1 CHALLENGE "), msg
    nonce = msg.split()[2].decode()
    if instance is None:  # the short form
        signed = "FGT/1\n%s\n%s" % (nonce, agent_id)
    else:
        signed = "FGT/1\n%s\n%s\n%s\n%s" % (nonce, agent_id, instance, role)
    proof = hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()
    line = "FGT/1 AUTH %s %s" % (agent_id, proof)
    if instance is not None:
        line += " %s %s" % (instance, role)
    _send_text(s, line)
    op, msg, buf = _read_frame(s, buf)
    return s, buf, (op, msg)


def closed_within(s, buf, seconds):
    """Whether the gateway closes s (a close frame or the end) within seconds."""
    s.settimeout(seconds)
    try:
        while True:
            op, _, buf = _read_frame(s, buf)
            if op is None or op == 8:
                return True
    except OSError:
        return False


def test_instances_join_duplicate_replace_and_take_over(multi):
    gw, _, _, _, tport, sec = multi(workers=1, start_agent=False)
    secret = sec.read_text().strip().encode()
    a, b = os.urandom(16).hex(), os.urandom(16).hex()
    s1, buf1, (op, msg) = auth(tport, secret, a, "first")
    assert (op, msg) == (1, b"FGT/1 OK 2 1"), msg  # heartbeat 2 s, 1 worker
    wait_connections(gw, 1)
    # "extra" on the worker that holds one of the instance: DUPLICATE, then close 1000
    s2, buf2, (op, msg) = auth(tport, secret, a, "extra")
    assert (op, msg) == (1, b"FGT/1 DUPLICATE"), msg
    op, msg, _ = _read_frame(s2, buf2)
    assert op == 8 and int.from_bytes(msg[:2], "big") == 1000, (op, msg)
    s2.close()
    t = office(gw)
    assert len(t["connections"]) == 1 and t["duplicates"] == 1 and t["authFailures"] == 0, t
    first_serial = t["connections"][0]["connection"]
    # "first" of the same instance replaces it (the agent lost it): no takeover
    s3, buf3, (op, msg) = auth(tport, secret, a, "first")
    assert op == 1 and msg.startswith(b"FGT/1 OK"), msg
    assert closed_within(s1, buf1, 3)
    t = office(gw)
    assert [c["connection"] for c in t["connections"]] != [first_serial]
    assert len(t["connections"]) == 1 and t["takeovers"] == 0, t
    # a wrong proof for the instance form is refused like any other
    s4, _, (op, msg) = auth(tport, b"not-the-secret-0123456789abcdef", b, "first")
    assert op == 8 and int.from_bytes(msg[:2], "big") == 1008, (op, msg)
    s4.close()
    # another instance takes over
    s5, buf5, (op, msg) = auth(tport, secret, b, "first")
    assert op == 1 and msg.startswith(b"FGT/1 OK"), msg
    assert closed_within(s3, buf3, 3)
    t = office(gw)
    assert len(t["connections"]) == 1 and t["takeovers"] == 1, t
    assert "takes over from connection" in gw.error_log()
    # the short AUTH form: OK without the worker count, and it takes over too
    s6, _, (op, msg) = auth(tport, secret, None, None)
    assert (op, msg) == (1, b"FGT/1 OK 2"), msg
    assert closed_within(s5, buf5, 3)
    assert office(gw)["takeovers"] == 2
    s6.close()


def test_restarted_agent_takes_over_from_a_hung_one(multi, agents, tmp_path, certs):  # noqa: F811
    gw, ag, up, port, tport, sec = multi()
    pids = [w["pid"] for w in gw.workers()]
    old = {c["connection"] for c in wait_connections(gw, 2, pids=pids)}
    ag.kill(signal.SIGSTOP)  # hung: its connections stay open, silent
    try:
        ag2 = agents(tmp_path, "office2", tport, certs["ca"], "office", sec,
                     {"web": "http://127.0.0.1:%d" % up.port})
        wait_connections(gw, 2, pids=pids, not_in=old)
        assert office(gw)["takeovers"] == 1
        for i in range(20):
            assert get(port, "/tunnel/t%d" % i)[0] == 200
    finally:
        ag.kill(signal.SIGKILL)
    assert "takes over from connection" in gw.error_log()
    assert ag2.proc.poll() is None


def test_agent_reload_moves_every_connection(multi):
    gw, ag, up, port, _, _ = multi()
    pids = [w["pid"] for w in gw.workers()]
    old = {c["connection"] for c in wait_connections(gw, 2, pids=pids)}
    with under_load(port, clients=2) as results:
        time.sleep(0.3)
        os.kill(ag.proc.pid, signal.SIGHUP)  # a new configuration: a new instance
        wait_connections(gw, 2, pids=pids, not_in=old)
        time.sleep(0.3)
    assert office(gw)["takeovers"] == 1
    bad = [r for r in results if r != 200]
    assert results and not bad, (len(results), bad[:10])


def test_reloads_under_load_keep_a_connection_per_worker(multi):
    gw, ag, up, port, _, _ = multi()
    wait_connections(gw, 2, pids=[w["pid"] for w in gw.workers()])
    with under_load(port) as results:
        for _ in range(10):
            gw.reload()
            time.sleep(0.3)
    bad = [r for r in results if r != 200]
    assert len(results) > 50 and not bad, (len(results), bad[:10])
    gen = gw.info()["generation"]
    conns = wait_connections(gw, 2, pids=[w["pid"] for w in gw.workers()], timeout=15)
    assert all(c["worker"]["generation"] == gen for c in conns), conns
    hops = office(gw)["hopRequests"]
    for i in range(30):
        assert get(port, "/tunnel/after%d" % i)[0] == 200
    assert office(gw)["hopRequests"] == hops
