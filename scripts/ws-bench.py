#!/usr/bin/env python3
"""WebSocket echo through fastgateway, nginx and HAProxy, and direct, in the same run.

A raw-socket echo destination answers the handshake with a 101 and then echoes every byte; the
load client opens --conns WebSockets, keeps --depth masked frames of --size bytes in flight on
each, and counts echoed messages per second and the round-trip percentiles. Proxies relay bytes
without parsing frames, so the echo of a masked frame comes back as sent and the client only
counts bytes. Client and destination are Python (asyncio): on a small machine they may cap the
rate, so compare the rows of one run, never figures of different machines.

Every target is measured in turn, --rounds times over; the medians are printed.

usage: ws-bench.py [--fastgateway PATH] [--conns 50] [--depth 4] [--size 64] [--seconds 5]
                   [--rounds 3]
Run by scripts/bench.sh (WS_BENCH=0 skips it)."""
import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
HANDSHAKE = (b"GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def frame(size):
    """One masked binary frame (RFC 6455 5.2) of size bytes; the mask is zero, so the
    payload is sent as is."""
    if size < 126:
        hdr = bytes([0x82, 0x80 | size])
    elif size < 65536:
        hdr = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        hdr = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
    return hdr + b"\0\0\0\0" + b"x" * size


async def echo_dest(port):
    async def serve(r, w):
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, OSError):  # a readiness probe (wait_port)
            w.close()
            return
        if b"upgrade" not in head.lower():
            w.close()
            return
        w.write(SWITCH)
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                w.write(d)
                await w.drain()
        except OSError:  # the proxy in front was stopped (the next row)
            pass
        w.close()
    return await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)


async def one_conn(port, msg, depth, stop_at, rtts, counts):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(HANDSHAKE)
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("handshake refused: %r" % head[:40])
    sent = []
    for _ in range(depth):
        sent.append(time.perf_counter())
        w.write(msg)
    n = 0
    while True:
        await r.readexactly(len(msg))
        now = time.perf_counter()
        rtts.append(now - sent.pop(0))
        n += 1
        if now >= stop_at:
            break
        sent.append(now)
        w.write(msg)
    counts.append(n)
    w.close()


async def run_load(port, a):
    msg = frame(a.size)
    rtts, counts = [], []
    start = time.perf_counter()
    stop_at = start + a.seconds
    await asyncio.gather(*[one_conn(port, msg, a.depth, stop_at, rtts, counts)
                           for _ in range(a.conns)])
    elapsed = time.perf_counter() - start
    rtts.sort()
    p = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] * 1000
    return sum(counts) / elapsed, p(0.5), p(0.99)


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start_proxies(tmp, dest, fg_binary):
    procs, rows = [], [("direct", dest)]
    fg = free_port()
    cfg = os.path.join(tmp, "fg.json")
    with open(cfg, "w") as f:
        f.write('{"workers": 1, "pidFile": "%s/fg.pid", "statusSocket": "%s/fg.sock", '
                '"log": {"errorLog": "%s/fg.err", "level": "warn"}, '
                '"servers": [{"id": "s", "listen": "127.0.0.1:%d"}], '
                '"routes": [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c", '
                '"webSocketIdleTimeout": "300s"}], '
                '"clusters": [{"id": "c", "destinations": [{"id": "d", '
                '"address": "http://127.0.0.1:%d"}]}]}' % (tmp, tmp, tmp, fg, dest))
    procs.append(subprocess.Popen([fg_binary, "-f", "-c", cfg], start_new_session=True))
    rows.append(("fastgateway", fg))
    if shutil.which("nginx"):
        ng = free_port()
        os.makedirs(os.path.join(tmp, "ng/logs"), exist_ok=True)
        with open(os.path.join(tmp, "ng/nginx.conf"), "w") as f:
            f.write("%sworker_processes 1; pid %s/ng/nginx.pid; error_log %s/ng/logs/e.log;\n"
                    "events { worker_connections 4096; }\nhttp { access_log off;\n"
                    "server { listen 127.0.0.1:%d; location / { proxy_pass http://127.0.0.1:%d;\n"
                    "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;\n"
                    "proxy_set_header Connection upgrade; proxy_read_timeout 300s; } } }\n"
                    % ("user root;\n" if os.geteuid() == 0 else "", tmp, tmp, ng, dest))
        procs.append(subprocess.Popen(["nginx", "-p", tmp + "/ng", "-c", tmp + "/ng/nginx.conf",
                                       "-g", "daemon off;"], start_new_session=True,
                                      stderr=subprocess.DEVNULL))
        rows.append(("nginx", ng))
    if shutil.which("haproxy"):
        ha = free_port()
        with open(os.path.join(tmp, "ha.cfg"), "w") as f:
            f.write("global\n    nbthread 1\n    maxconn 4096\ndefaults\n    mode http\n"
                    "    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n"
                    "    timeout tunnel 300s\nfrontend fe\n    bind 127.0.0.1:%d\n"
                    "    default_backend be\nbackend be\n    server d 127.0.0.1:%d\n" % (ha, dest))
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", tmp + "/ha.cfg"],
                                      start_new_session=True, stderr=subprocess.DEVNULL))
        rows.append(("haproxy", ha))
    return procs, rows


async def main(a):
    dest = free_port()
    server = await echo_dest(dest)
    with tempfile.TemporaryDirectory() as tmp:
        procs, rows = start_proxies(tmp, dest, a.fastgateway)
        try:
            print("ws-bench: %d WebSockets, %d in flight each, %d-byte messages, %g s per run"
                  % (a.conns, a.depth, a.size, a.seconds))
            live = []
            for name, port in rows:
                ok = await asyncio.get_running_loop().run_in_executor(None, wait_port, port)
                if ok:
                    live.append((name, port))
                else:
                    print("%-12s %12s" % (name, "failed"))
            # the targets in turn, a.rounds times: a slow moment of the machine costs one
            # sample of every target instead of all the samples of one; medians reported
            samples = {name: [] for name, _ in live}
            for _ in range(a.rounds):
                for name, port in live:
                    samples[name].append(await run_load(port, a))
            print("%-12s %12s %9s %9s   (median of %d rounds)"
                  % ("target", "msgs/s", "p50 ms", "p99 ms", a.rounds))
            for name, _ in live:
                med = [statistics.median(v[i] for v in samples[name]) for i in range(3)]
                print("%-12s %12.0f %9.2f %9.2f" % (name, med[0], med[1], med[2]))
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
    server.close()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fastgateway", default=os.path.join(here, "..", "fastgateway"))
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
    sys.exit(0)
