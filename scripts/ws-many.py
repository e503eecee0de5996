#!/usr/bin/env python3
"""Open many WebSockets through a running gateway, reload it several times while they stay
open, and report when each group was closed relative to the reload that retired its worker
(docs/websocket.md). Needs python3-websockets and an echo destination behind the route
(tests/integration/ws_echo.py).

usage: ws-many.py --url ws://127.0.0.1:8080/ --count 1000 --reloads 10 --pidfile PID --drain S"""
import argparse
import asyncio
import os
import signal
import time

import websockets


async def main(a):
    pid = int(open(a.pidfile).read().split()[0])
    per = max(1, a.count // a.reloads)
    groups, closed = [], {}

    async def watch(ws, key):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            closed[key] = time.monotonic()

    tasks = []
    for g in range(a.reloads):
        socks = [await websockets.connect(a.url, ping_interval=None) for _ in range(per)]
        for ws in socks:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        os.kill(pid, signal.SIGHUP)
        retired = time.monotonic()
        groups.append((len(socks), retired))
        tasks += [asyncio.ensure_future(watch(ws, (g, i))) for i, ws in enumerate(socks)]
        await asyncio.sleep(a.interval)
    await asyncio.wait(tasks, timeout=a.drain + 15)
    early = 0
    for g, (n, retired) in enumerate(groups):
        lived = [closed[(g, i)] - retired for i in range(n) if (g, i) in closed]
        early += sum(1 for t in lived if t < a.drain - 0.5)
        print("group %d: %d open, %d closed, after %.1f..%.1f s" %
              (g, n, len(lived), min(lived, default=0), max(lived, default=0)))
    print("closed before the drain timeout: %d" % early)
    return 1 if early else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--reloads", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reloads")
    p.add_argument("--pidfile", required=True)
    p.add_argument("--drain", type=float, required=True, help="webSocketDrainTimeout, seconds")
    raise SystemExit(asyncio.run(main(p.parse_args())))
