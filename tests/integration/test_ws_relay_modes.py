"""How a plain-TCP WebSocket relay moves bytes (worker/http/relay.c): small reads go by one
recv(2) and one send(2), a direction whose reads fill 16 KiB splices through a pipe until its
reads are small again, and bytes keep their order across those switches and across sends the
other side does not take at once."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port
from test_websocket import RawDest, SWITCH, raw_handshake, ws_config

KiB = 1 << 10


def echo_script(c, head, rest):
    c.sendall(SWITCH + rest)
    while True:
        d = c.recv(1 << 20)
        if not d:
            return
        c.sendall(d)


def read_exact(s, n, timeout=30):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        d = s.recv(min(1 << 20, n - len(out)))
        assert d, "closed after %d of %d bytes" % (len(out), n)
        out += d
    return out


def echo_round(s, payload):
    """payload through the relay to the echo destination and back, whole and in order."""
    t = threading.Thread(target=s.sendall, args=(payload,))
    t.start()
    assert read_exact(s, len(payload)) == payload
    t.join(30)


class Strace:
    """strace on the worker for the system calls that move the relay's bytes."""

    def __init__(self, pid, path, warm_up):
        """warm_up() makes the worker move bytes: it runs until strace shows it attached (it gives
        no sign of that with -qq), and what it traced is left out of calls()."""
        self.path = path
        self.proc = subprocess.Popen(["strace", "-qq", "-e", "trace=splice,recvfrom,sendto",
                                      "-o", str(path), "-p", str(pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        self.skip = 0
        while self.skip == 0:
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.1)
            warm_up()
            self.skip = len(self._lines())

    def _lines(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [l for l in text.splitlines() if re.match(r"(splice|recvfrom|sendto)\(", l)]

    def calls(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        return self._lines()[self.skip:]


def moved(line):
    m = re.search(r"= (-?\d+)", line)
    return int(m.group(1)) if m else None


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_small_messages_copy_and_bulk_splices(tmp_path, gateway_factory):
    """64-byte messages cross with recvfrom + sendto and no splice; a 4 MiB burst splices; small
    messages after it are copied again."""
    dest = RawDest(echo_script)
    port = free_port()
    gw = gateway_factory(ws_config(tmp_path, port, dest.url))
    pid = gw.all_workers()[0]["pid"]
    s, head, rest = raw_handshake(port, "/")
    assert head.startswith("HTTP/1.1 101") and rest == b""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    small = bytes(range(64))
    try:
        tr = Strace(pid, tmp_path / "small.trace", lambda: echo_round(s, small))
        for _ in range(20):
            echo_round(s, small)
        calls = tr.calls()
        assert calls, "strace saw nothing"
        assert not [l for l in calls if l.startswith("splice(")], calls[:20]
        assert sum(1 for l in calls if l.startswith("recvfrom(") and moved(l) == 64) >= 40
        assert sum(1 for l in calls if l.startswith("sendto(") and moved(l) == 64) >= 40

        tr = Strace(pid, tmp_path / "mixed.trace", lambda: echo_round(s, small))
        big = os.urandom(4 << 20)
        echo_round(s, big)
        for _ in range(20):
            echo_round(s, small)
        calls = tr.calls()
        spliced = [i for i, l in enumerate(calls) if l.startswith("splice(") and moved(l) > 0]
        assert spliced, "a 4 MiB burst was not spliced"
        after = calls[spliced[-1] + 1:]
        # the first read of each direction after the burst still splices: 64 bytes, small again
        assert sum(1 for l in after if l.startswith("recvfrom(") and moved(l) == 64) >= 36
    finally:
        s.close()
        dest.close()


def test_order_kept_across_copy_splice_switches_and_short_sends(tmp_path, gateway_factory):
    """About 13 MiB of pipelined 1 KiB and 200 KiB writes, each way, through a destination with
    a small receive buffer that stops reading for 3 s (copied sends toward it can fall short:
    the rest waits in the gateway's output and the direction holds): every byte comes back
    once, in order."""
    pause = threading.Event()

    def script(c, head, rest):
        c.sendall(SWITCH + rest)
        time.sleep(3.0)
        pause.set()
        while True:
            d = c.recv(64 * KiB)
            if not d:
                return
            c.sendall(d)
    dest = RawDest(script)
    dest.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KiB)
    port = free_port()
    gateway_factory(ws_config(tmp_path, port, dest.url))
    s, head, rest = raw_handshake(port, "/")
    assert head.startswith("HTTP/1.1 101") and rest == b""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # 1 KiB writes, read one at a time (copied), until the socket toward the destination is
    # full; a bulk stretch; small writes again
    parts = [b"%05d:" % i + os.urandom(KiB - 6) for i in range(12000)]
    parts += [os.urandom(200 * KiB) for _ in range(5)]
    parts += [b"%05d:" % i + os.urandom(KiB - 6) for i in range(500)]
    payload = b"".join(parts)

    def send():
        for p in parts:
            s.sendall(p)
            if len(p) == KiB:
                time.sleep(0.00005)
    t = threading.Thread(target=send)
    t.start()
    try:
        got = read_exact(s, len(payload), timeout=60)
        assert pause.is_set()
        assert got == payload
    finally:
        t.join(60)
        s.close()
        dest.close()
