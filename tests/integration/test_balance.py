"""Least-connections balancing of new connections over the workers (master/balance.h): a burst
of keep-alive connections is spread evenly, before and after a reload. Needs CAP_BPF (root);
the kernel's hash otherwise, and these tests are skipped."""
import os
import re
import signal
import socket
import time

import pytest

from conftest import Blackhole, base_config, free_port, wait_until

BURST = 64


def direct_config(tmp_path, workers=2):
    routes = [{"id": "d", "match": {"path": "/{**rest}"},
               "direct": {"status": 200, "headers": {"Content-Type": "text/plain"},
                          "body": "ok"}}]
    return base_config(tmp_path, free_port(), routes=routes, workers=workers)


def open_burst(port, n=BURST):
    """n connections opened at once (the SYNs leave before any is accepted), then one
    keep-alive request answered on each, so that every one is held by a worker."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    for s in socks:
        s.setblocking(True)
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in socks:
        data = b""
        while not data.endswith(b"ok"):
            chunk = s.recv(4096)
            assert chunk, "connection closed before the answer"
            data += chunk
    return socks


def held(gw):
    """Connections held by each ready worker of the current generation, by slot."""
    return {w["slot"]: w["connections"] for w in gw.workers()}


def skip_unless_balanced(gw):
    if gw.info().get("acceptBalance") != "leastConnections":
        pytest.skip("least-connections balancing unavailable here (needs CAP_BPF): %s"
                    % gw.info().get("acceptBalance"))


def assert_even(counts, total):
    assert sum(counts.values()) == total, counts
    share = total / len(counts)
    assert all(abs(c - share) <= 1 for c in counts.values()), counts


def assert_burst_even(gw, n=BURST):
    """A burst of n connections (open_burst) is held evenly by the workers; closed after."""
    socks = open_burst(gw.port, n)
    try:
        assert_even(held(gw), n)
    finally:
        for s in socks:
            s.close()


def test_status_names_the_balancing(tmp_path, gateway_factory):
    gw = gateway_factory(direct_config(tmp_path))
    expected = "leastConnections" if os.geteuid() == 0 else None
    got = gw.info()["acceptBalance"]
    assert got in ("leastConnections", "hash")
    if expected:
        assert got == expected


def test_burst_of_connections_is_spread_evenly(tmp_path, gateway_factory):
    gw = gateway_factory(direct_config(tmp_path))
    skip_unless_balanced(gw)
    assert_burst_even(gw)


def test_three_workers_share_evenly(tmp_path, gateway_factory):
    gw = gateway_factory(direct_config(tmp_path, workers=3))
    skip_unless_balanced(gw)
    assert_burst_even(gw, 63)


def test_new_generation_is_balanced_after_reload(tmp_path, gateway_factory):
    """The new workers share their slots' sockets with the retiring ones and claim the slots'
    counts: a burst after the reload is spread evenly over the new generation."""
    gw = gateway_factory(direct_config(tmp_path))
    skip_unless_balanced(gw)
    old = open_burst(gw.port, 40)
    try:
        gw.reload()
        assert_burst_even(gw)
    finally:
        for s in old:
            s.close()


def test_fewer_workers_after_reload_take_everything(tmp_path, gateway_factory):
    gw = gateway_factory(direct_config(tmp_path, workers=3))
    skip_unless_balanced(gw)
    gw.reload(direct_config(tmp_path, workers=2) | {"servers": gw.config["servers"]})
    assert_burst_even(gw)



def test_failed_reload_gives_the_slots_back(tmp_path, gateway_factory):
    """A reload abandoned after one of its workers claimed its slot (that worker got ready, the
    other one died before it did): the serving worker of that slot counts its connections and
    clears its steered ones again, so later bursts stay even. The new workers are held up by
    their first health round (a destination that never answers, 3 s probe timeout) long enough
    to stop the slot-1 one."""
    hole = Blackhole()
    try:
        gw = gateway_factory(direct_config(tmp_path))
        skip_unless_balanced(gw)
        gen0 = gw.info()["generation"]
        slow = dict(gw.config, routes=gw.config["routes"] + [
            {"id": "p", "match": {"path": "/probe"}, "clusterId": "c"}],
            clusters=[{"id": "c", "destinations": [
                {"id": "d", "address": "http://127.0.0.1:%d" % hole.port}],
                "healthCheck": {"active": {"interval": "10s", "timeout": "3s"}}}])
        gw.write_config(slow)
        gw.signal(signal.SIGHUP)

        def new(slot, state=None):
            return next((w for w in gw.all_workers() if w["generation"] == gen0 + 1
                         and w["slot"] == slot and (state is None or w["state"] == state)),
                        None)
        late = wait_until(lambda: new(1), 5, "the new slot-1 worker")
        os.kill(late["pid"], signal.SIGSTOP)
        wait_until(lambda: new(0, "ready"), 10, "the new slot-0 worker ready")
        os.kill(late["pid"], signal.SIGKILL)
        wait_until(lambda: gw.info()["lastReload"]["result"] == "failed", 10, "the reload failed")
        assert gw.info()["generation"] == gen0
        time.sleep(1.5)  # a balancing tick of the serving workers
        for _ in range(2):
            assert_burst_even(gw)
            wait_until(lambda: sum(held(gw).values()) == 0, 5, "the connections closed")
    finally:
        hole.close()


def test_many_workers_share_evenly(tmp_path, gateway_factory):
    """The program for 64 slots (15 instructions each) loads and spreads a burst of 128."""
    gw = gateway_factory(direct_config(tmp_path, workers=64), timeout=30)
    skip_unless_balanced(gw)
    socks = open_burst(gw.port, 128)
    try:
        assert_even(held(gw), 128)
    finally:
        for s in socks:
            s.close()


RESPAWN_RE = r"worker %d crashes repeatedly; respawning in (\d+) ms"


def crash_loop(gw, slots, min_delay_ms):
    """Kill the serving workers of `slots` as soon as they start, until the master delays the
    respawn of each by at least min_delay_ms (its crash-loop backoff): then none of them has a
    worker for that long. Returns the time of the last kill."""
    gen = gw.info()["generation"]
    left, killed, last = set(slots), set(), 0.0
    deadline = time.monotonic() + 30
    while left:
        assert time.monotonic() < deadline, "no respawn delay of %d ms: %s" % (
            min_delay_ms, gw.error_log()[-2000:])
        for w in gw.all_workers():
            if w["generation"] == gen and w["slot"] in left and w["pid"] not in killed:
                os.kill(w["pid"], signal.SIGKILL)
                killed.add(w["pid"])
                last = time.monotonic()
        time.sleep(0.01)
        if any(w["pid"] in killed for w in gw.all_workers()):
            continue  # not reaped yet: its respawn delay is not logged yet
        log = gw.error_log()
        for slot in list(left):
            delays = re.findall(RESPAWN_RE % slot, log)
            if delays and int(delays[-1]) >= min_delay_ms:
                left.discard(slot)
    return last


def ready_and_offered(gw, slot):
    """Wait for the master to take the respawned worker of `slot` as ready: it logs that, then
    offers the slot, before it answers the next status command."""
    gen = gw.info()["generation"]
    pid = wait_until(lambda: next((w["pid"] for w in gw.workers() if w["slot"] == slot), None),
                   10, "the respawned worker of slot %d" % slot)
    line = r"worker %d \(pid %d, generation %d\) ready" % (slot, pid, gen)
    wait_until(lambda: re.search(line, gw.error_log()), 5, "the master's ready line")
    gw.info()


def send_get(port, timeout):
    """A connection with one request sent on it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def read_answer(s):
    """Read the answer to the request send_get sent on s."""
    data = b""
    while not data.endswith(b"ok"):
        chunk = s.recv(4096)
        assert chunk, "connection closed before the answer"
        data += chunk


def ask(port, timeout):
    """One connection, kept open, with one request answered on it."""
    s = send_get(port, timeout)
    read_answer(s)
    return s


def test_dead_worker_slot_is_passed_over(tmp_path, gateway_factory):
    """The worker of slot 0 in a crash loop: while the master holds back its respawn (3.2 s),
    new connections go to the live worker at once instead of waiting in the dead worker's
    queue; once the replacement is ready its slot is offered again and a burst evens out."""
    gw = gateway_factory(direct_config(tmp_path))
    skip_unless_balanced(gw)
    killed_at = crash_loop(gw, [0], 3200)
    socks = []
    try:
        for _ in range(6):
            socks.append(ask(gw.port, timeout=1))
        gen = gw.info()["generation"]
        slots = [w["slot"] for w in gw.all_workers() if w["generation"] == gen]
        counts = held(gw)
        # read before this check: a respawn between the two would change what they show
        assert time.monotonic() - killed_at < 3.2, "too slow to tell: the respawn came first"
        assert slots == [1] and counts == {1: 6}, (slots, counts)
        ready_and_offered(gw, 0)
        burst = open_burst(gw.port)
        try:
            assert_even(held(gw), BURST + 6)
        finally:
            for s in burst:
                s.close()
    finally:
        for s in socks:
            s.close()


def test_queued_on_a_dead_worker_are_served_by_its_replacement(tmp_path, gateway_factory):
    """Connections waiting in the accept queue of a worker that dies are neither refused nor
    lost: the master keeps the socket, and the replacement accepts them."""
    gw = gateway_factory(direct_config(tmp_path))
    skip_unless_balanced(gw)
    stopped = next(w["pid"] for w in gw.workers() if w["slot"] == 0)
    # the start-up probes' connections are gone: a count frozen by the stop would steer
    wait_until(lambda: held(gw) == {0: 0, 1: 0}, 5, "both workers idle")
    os.kill(stopped, signal.SIGSTOP)
    try:
        socks = []
        for _ in range(4):
            socks.append(send_get(gw.port, timeout=10))
        time.sleep(0.5)
        # both idle: the first goes to slot 0 (ties go to the lower slot), where it waits
        assert held(gw).get(1, 0) < 4, held(gw)
    finally:
        os.kill(stopped, signal.SIGKILL)
    for s in socks:
        read_answer(s)
        s.close()


def test_every_worker_dead_queues_until_respawn(tmp_path, gateway_factory):
    """With every worker in a crash loop no slot is offered and the kernel's hash queues new
    connections on the master's sockets: each is answered once the workers are back."""
    gw = gateway_factory(direct_config(tmp_path))
    skip_unless_balanced(gw)
    crash_loop(gw, [0, 1], 1600)
    assert gw.workers() == []
    socks = []
    for _ in range(8):
        socks.append(send_get(gw.port, timeout=15))
    for s in socks:
        read_answer(s)
        s.close()
    assert sorted(held(gw)) == [0, 1]
