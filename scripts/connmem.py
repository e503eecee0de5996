#!/usr/bin/env python3
"""Memory one client connection holds in a worker, per connection state (run by connmem.sh).

For each state a fresh gateway (one worker, loopback) is started, its worker's RssAnon
(/proc/PID/status) is read after one warm-up request, N connections are put in the state, and
after a settle time RssAnon is read again: (after - before) / N is the cost of one connection.
nginx (one worker, `return 200`) is measured the same way for the idle and head states.

States:
  idle   one request answered, then nothing (keep-alive)
  head   part of a request head sent, the rest never comes
  wait   a proxied request whose destination accepted and never answers
  relay  a proxied 768 KiB response that the client does not read, relayed through the
         worker's buffers (so they are full toward the client and from the destination);
         at most 200 connections
  splice the same with an 8 MiB response, which goes destination -> pipe -> client with
         splice(2): the bytes in flight sit in kernel pipes, not in RssAnon

Usage: connmem.py [--idle N] [--others N] [--fg BINARY] [--no-nginx] [--states a,b]
Prints one line per (target, state) and a markdown table.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from proclib import children, free_port, rss_anon_kib, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = {"relay": b"big768k", "splice": b"big8m"}  # files of the upstream nginx


def one_worker(master, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(master)
        if len(kids) == 1:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError("master %d has no single worker" % master)


def get(port, path="/"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b


class Blackhole:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


class Proc:
    def __init__(self, argv, log):
        self.log = open(log, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        self.log.close()


def start_gateway(tmp, fg, upstream_port, hole_port):
    port = free_port()
    cfg = {
        "workers": 1,
        "pidFile": os.path.join(tmp, "fg.pid"),
        "statusSocket": os.path.join(tmp, "fg.sock"),
        "log": {"errorLog": os.path.join(tmp, "fg-error.log"), "level": "warn"},
        "servers": [{"id": "main", "listen": "127.0.0.1:%d" % port,
                     "timeouts": {"keepAlive": "300s", "header": "300s", "send": "300s"}}],
        "routes": [
            {"id": "wait", "match": {"path": "/wait"}, "clusterId": "hole"},
            {"id": "relay", "match": {"path": "/big768k"}, "clusterId": "files"},
            {"id": "splice", "match": {"path": "/big8m"}, "clusterId": "files"},
            {"id": "hello", "match": {"path": "/{**rest}"},
             "direct": {"status": 200, "body": "hello"}},
        ],
        "clusters": [
            {"id": "hole", "destinations": [{"id": "h", "address": "http://127.0.0.1:%d"
                                             % hole_port}],
             "httpRequest": {"activityTimeout": "300s"}},
            {"id": "files", "destinations": [{"id": "f", "address": "http://127.0.0.1:%d"
                                              % upstream_port}],
             "httpRequest": {"activityTimeout": "300s"}},
        ],
    }
    path = os.path.join(tmp, "fg.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    proc = Proc([fg, "-f", "-c", path], os.path.join(tmp, "fg.out"))
    wait_port(port)
    return proc, port, one_worker(proc.p.pid)


NGINX_FRONT = """
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}-error.log warn;
events {{ worker_connections {nofile}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    keepalive_timeout 300s; keepalive_requests 100000; client_header_timeout 300s;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location / {{ return 200 "hello"; }}
    }}
}}
"""


def start_nginx(tmp, name, nofile):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = os.path.join(tmp, "nginx-%s.conf" % name)
    with open(conf, "w") as f:
        f.write(NGINX_FRONT.format(tmp=tmp, port=port, name=name, nofile=nofile))
    proc = Proc([nginx, "-p", tmp, "-c", conf], os.path.join(tmp, "nginx-%s.out" % name))
    wait_port(port)
    return proc, port, one_worker(proc.p.pid)


def open_state(port, state, n):
    """n client sockets in `state`."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if state == "idle":
            s.sendall(REQ)
            data = b""
            while not data.endswith(b"hello"):
                b = s.recv(4096)
                if not b:
                    raise RuntimeError("closed before the answer")
                data += b
        elif state == "head":
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: connmem\r\nX-Pad: " + b"p" * 64)
        elif state == "wait":
            s.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        elif state in BODY:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % BODY[state])
        socks.append(s)
    return socks


def measure(target, start, state, n, settle):
    proc, port, worker = start()
    try:
        if state in BODY:
            get(port, "/" + BODY[state].decode())  # warm the relay path too
        for _ in range(3):
            get(port)
        time.sleep(0.3)
        before = rss_anon_kib(worker)
        socks = open_state(port, state, n)
        time.sleep(settle)
        after = rss_anon_kib(worker)
        alive = proc.p.poll() is None
        for s in socks:
            s.close()
        if not alive:
            raise RuntimeError("%s exited during the %s measurement" % (target, state))
        per = (after - before) * 1024 / n
        print("%-12s %-6s conns=%-5d RssAnon %d -> %d KiB: %.0f bytes per connection"
              % (target, state, n, before, after, per), flush=True)
        return per
    finally:
        proc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=5000, help="connections for the idle state")
    ap.add_argument("--others", type=int, default=1000, help="connections for other states")
    ap.add_argument("--fg", default=os.path.join(ROOT, "fastgateway"))
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--states", default="idle,head,wait,relay,splice")
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    states = args.states.split(",")

    # This process holds one descriptor per connection, each server one (two when proxying).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = 2 * max(args.idle, args.others) + 1024
    if hard != resource.RLIM_INFINITY:
        nofile = min(nofile, hard)
    if soft < nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    tmp = tempfile.mkdtemp(prefix="fg-connmem.")
    os.chmod(tmp, 0o755)  # nginx workers started by root run as nobody and serve from here
    hole = Blackhole()
    up = None
    rows = []
    try:
        os.mkdir(os.path.join(tmp, "www"), 0o755)
        for name, size in (("big768k", 768 << 10), ("big8m", 8 << 20)):
            with open(os.path.join(tmp, "www", name), "wb") as f:
                f.write(os.urandom(size))
        need_up = "relay" in states or "splice" in states
        if need_up:
            up, up_port, _ = start_nginx(tmp, "upstream", nofile)
        else:
            up_port = free_port()
        targets = [("fastgateway", lambda: start_gateway(tmp, args.fg, up_port, hole.port))]
        if not args.no_nginx:
            targets.append(("nginx", lambda: start_nginx(tmp, "front", nofile)))
        for state in states:
            n = args.idle if state == "idle" else args.others
            if state == "relay":
                n = min(n, 200)
            for name, start in targets:
                if name == "nginx" and state not in ("idle", "head"):
                    continue
                rows.append((state, name, n, measure(name, start, state, n, args.settle)))
    finally:
        if up is not None:
            up.stop()
        hole.sock.close()
        for s in hole.held:
            s.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| State | Server | Connections | RssAnon per connection |")
    print("|---|---|---|---|")
    for state, name, n, per in rows:
        print("| %s | %s | %d | %.2f KiB |" % (state, name, n, per / 1024))


if __name__ == "__main__":
    sys.exit(main())
