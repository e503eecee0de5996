#!/usr/bin/env python3
"""Memory of idle WebSockets through fastgateway and through nginx, in the same run.

For each proxy a fresh instance (loopback; as few workers as the descriptor limit allows) is started in front of a raw echo
destination (a 101, then every byte echoed), its workers' RssAnon is read, --count WebSockets
are opened through it (handshake and one echoed frame each, so that every relay is established),
and after --settle seconds RssAnon is read again: (after - before) / count is the user-space
memory one idle WebSocket costs the proxy. Kernel memory is not in RssAnon: the growth of the
machine's slab (/proc/meminfo Slab) per WebSocket is printed, which counts the client's and the
destination's sockets too (the same for both proxies, so the rows compare) and anything else the
machine allocates meanwhile; and the descriptors each proxy's workers hold per WebSocket.

Needs count descriptors here and in the destination (a child process), and 2 x count in the
proxy (its two sockets; an idle relay holds no splice pipe), spread over as many workers as it
takes for each to stay within the hard limit (`ulimit -Hn`); both proxies run with the same
number of workers, nginx with `reuseport` like fastgateway's listeners. Not a test: the figures depend on the allocator and kernel.

usage: ws-mem.py [--fastgateway PATH] [--count 10000] [--settle 2]
Run by scripts/bench.sh (WS_BENCH=0 skips it)."""
import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from proclib import children, free_port, rss_anon_kib, wait_port

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
HANDSHAKE = (b"GET /idle HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
FRAME = bytes([0x82, 0x84]) + b"\0\0\0\0" + b"ping"  # masked with a zero mask


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in ((want, max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def all_workers(master, n, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = children(master)
        if len(kids) == n:
            return kids
        time.sleep(0.05)
    raise RuntimeError("not %d workers under %d" % (n, master))


def start_fastgateway(tmp, fg, dest, nofile, workers):
    port = free_port()
    cfg = {"workers": workers, "workerRlimitNofile": nofile,
           "pidFile": os.path.join(tmp, "fg.pid"), "statusSocket": os.path.join(tmp, "fg.sock"),
           "log": {"errorLog": os.path.join(tmp, "fg-error.log"), "level": "warn"},
           "servers": [{"id": "s", "listen": "127.0.0.1:%d" % port}],
           "routes": [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c",
                       "webSocketIdleTimeout": "300s"}],
           "clusters": [{"id": "c", "destinations": [{"id": "d", "address":
                                                      "http://127.0.0.1:%d" % dest}]}]}
    path = os.path.join(tmp, "fg.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    p = subprocess.Popen([fg, "-f", "-c", path], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, port, all_workers(p.pid, workers)


NGINX = """user root;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {nofile}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location / {{
            proxy_pass http://127.0.0.1:{dest};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection upgrade;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(tmp, dest, nofile, workers):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    text = NGINX.format(tmp=tmp, port=port, dest=dest, nofile=nofile, workers=workers)
    if os.geteuid() != 0:
        text = text.replace("user root;\n", "")
    with open(conf, "w") as f:
        f.write(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = subprocess.Popen([nginx, "-p", tmp, "-c", conf, "-g", "daemon off;"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, port, all_workers(p.pid, workers)


async def echo_dest(port):
    async def serve(r, w):
        try:
            await r.readuntil(b"\r\n\r\n")
            w.write(SWITCH)
            while True:
                d = await r.read(65536)
                if not d:
                    break
                w.write(d)
        except (OSError, asyncio.IncompleteReadError):
            pass
        w.close()
    return await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)


def run_dest(port, nofile):
    """The destination in a process of its own: its descriptors do not count against ours."""
    raise_nofile(nofile)

    async def serve_forever():
        await echo_dest(port)
        await asyncio.Future()
    asyncio.run(serve_forever())


async def open_ws(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(HANDSHAKE)
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("handshake refused: %r" % head[:40])
    w.write(FRAME)
    await r.readexactly(len(FRAME))
    return w


def slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


async def measure(name, port, workers, a):
    before = sum(rss_anon_kib(w) for w in workers)
    fd0, slab0 = sum(fds(w) for w in workers), slab_kib()
    conns = []
    try:
        for i in range(0, a.count, 250):
            conns += await asyncio.gather(*[open_ws(port)
                                            for _ in range(min(250, a.count - i))])
        await asyncio.sleep(a.settle)
        after = sum(rss_anon_kib(w) for w in workers)
        fd1, slab1 = sum(fds(w) for w in workers), slab_kib()
    finally:
        for w in conns:
            w.close()
    per = (after - before) * 1024.0 / a.count
    print("%-12s %8d %12d %12d %14.0f %8.1f %14.0f" % (name, a.count, before, after, per,
                                                       (fd1 - fd0) / a.count,
                                                       (slab1 - slab0) * 1024.0 / a.count))
    return per


async def main(a):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Each WebSocket holds one descriptor here, one in the destination (a process of its own)
    # and two in the proxy: enough workers that each one's share fits the limit with room for
    # an uneven spread (SO_REUSEPORT hashes connections over the workers).
    if a.count + 1024 > hard:
        fit = hard - 1024
        print("ws-mem: descriptor limit %d (ulimit -Hn) fits %d WebSockets here, not %d: "
              "measuring %d" % (hard, fit, a.count, fit))
        a.count = fit
    workers = max(1, -(-2 * a.count // (hard - 1024)))
    if workers > 1:
        workers += 1
    nofile = raise_nofile(a.count + 1024)
    if nofile < a.count + 256:
        sys.exit("ws-mem: %d WebSockets need %d descriptors here, the limit is %d"
                 % (a.count, a.count + 256, nofile))
    dest = free_port()
    dp = multiprocessing.Process(target=run_dest, args=(dest, a.count + 1024), daemon=True)
    dp.start()
    wait_port(dest)
    want = min(hard, 4 * a.count // workers + 1024)
    rows = [("fastgateway", lambda tmp: start_fastgateway(tmp, a.fastgateway, dest, want,
                                                          workers))]
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        rows.append(("nginx", lambda tmp: start_nginx(tmp, dest, want, workers)))
    print("ws-mem: %d idle WebSockets per proxy (%d worker%s), RssAnon of the workers"
          % (a.count, workers, "s" if workers > 1 else ""))
    print("%-12s %8s %12s %12s %14s %8s %14s" % ("proxy", "count", "before KiB", "after KiB",
                                                 "bytes per WS", "fds/WS", "slab B/WS"))
    for name, start in rows:
        with tempfile.TemporaryDirectory() as tmp:
            p, port, wpids = start(tmp)
            try:
                await measure(name, port, wpids, a)
            except (OSError, RuntimeError, asyncio.IncompleteReadError) as e:
                print("%-12s failed: %s" % (name, e))
            finally:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            await asyncio.sleep(0.5)  # the destination sees the closes
    dp.kill()
    dp.join()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fastgateway", default=os.path.join(here, "..", "fastgateway"))
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=2)
    asyncio.run(main(ap.parse_args()))
