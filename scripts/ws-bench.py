#!/usr/bin/env python3
"""WebSocket echo through fastgateway, nginx and HAProxy, and direct, in the same run.

Client and echo destination are scripts/ws-load.c (built here with the system compiler): the
destination answers the handshake with a 101 and then echoes every byte; the client opens
--conns WebSockets, keeps --depth masked frames of --size bytes in flight on each, and counts
echoed messages per second and the round-trip percentiles. Proxies relay bytes without parsing
frames, so the echo of a masked frame comes back as sent and the client only counts bytes.

Client, destination and proxy share the machine's CPUs, so msgs/s is capped by all three
together; each row also gives the proxy's own cost, its processes' user + system CPU time over
the run divided by the messages echoed (a message crosses the proxy twice), and the CPU share
of the client and of the destination (100 = one core busy): a row whose client or destination
is near 100 measured them, not the proxy.

Every target is measured in turn, --rounds times over, each round starting one target further
on (a multiple of the number of targets gives each the same places); the medians are printed, then
fastgateway's ratios to nginx and HAProxy and whether it meets its target (msgs/s at least the
better of theirs, p99 at or below theirs). --compare PATH adds a row for a second fastgateway
binary (A/B of two builds in one run). The "per round" lines compare two rows round by round
(the median of the ratios): on a busy machine a round's load weighs on every row of it, so
these ratios vary less than the ratios of the medians.

usage: ws-bench.py [--fastgateway PATH] [--compare PATH] [--targets a,b] [--conns 50]
                   [--depth 4] [--size 64] [--seconds 5] [--rounds 3] [--realtime]

On a shared machine the round trips' tail follows the machine's run queue more than the proxy
(a proxy woken behind other work waits for a CPU): --realtime runs the client, the destination
and the proxies under SCHED_FIFO, which the kernel caps at 95% of each CPU
(sched_rt_runtime_us), so that rows compare the proxies themselves.
Run by scripts/bench.sh (WS_BENCH=0 skips it)."""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from proclib import free_port

def build_load(tmp):
    """scripts/ws-load.c, compiled with the system compiler into tmp: the path of the binary."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(tmp, "ws-load")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", out, os.path.join(here, "ws-load.c")],
                   check=True)
    return out


def group_cpu(pgid):
    """User + system seconds of the live processes of process group pgid (a proxy and its
    workers), read from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # the fields after the command: state ppid pgrp ... utime (14th) stime (15th)
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total / tick


def run_load(load, port, a, pgids):
    """One run of the C client against port: (msgs/s, p50 ms, p99 ms, proxy CPU us per
    message, client CPU %, echo CPU %). pgids: the proxy's process group (None for direct)
    and the echo destination's."""
    proxy_pg, echo_pg = pgids
    p0 = group_cpu(proxy_pg) if proxy_pg else 0.0
    e0 = group_cpu(echo_pg)
    out = subprocess.run([load, "client", str(port), str(a.conns), str(a.depth), str(a.size),
                          str(a.seconds)], check=True, capture_output=True, text=True).stdout
    rate, p50, p99, client_cpu = (float(x) for x in out.split())
    msgs = rate * a.seconds
    proxy_us = (group_cpu(proxy_pg) - p0) * 1e6 / msgs if proxy_pg and msgs else 0.0
    echo_pct = (group_cpu(echo_pg) - e0) * 100 / a.seconds
    return rate, p50, p99, proxy_us, client_cpu * 100 / a.seconds, echo_pct


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start_proxies(tmp, dest, fg_binary, compare):
    procs, rows = [], [("direct", dest, None)]
    for name, binary in (("fastgateway", fg_binary), ("fg-compare", compare)):
        if binary is None:
            continue
        fg = free_port()
        cfg = os.path.join(tmp, name + ".json")
        with open(cfg, "w") as f:
            f.write('{"workers": 1, "pidFile": "%s/%s.pid", "statusSocket": "%s/%s.sock", '
                    '"log": {"errorLog": "%s/%s.err", "level": "warn"}, '
                    '"servers": [{"id": "s", "listen": "127.0.0.1:%d"}], '
                    '"routes": [{"id": "r", "match": {"path": "/{**rest}"}, "clusterId": "c", '
                    '"webSocketIdleTimeout": "300s"}], '
                    '"clusters": [{"id": "c", "destinations": [{"id": "d", '
                    '"address": "http://127.0.0.1:%d"}]}]}'
                    % (tmp, name, tmp, name, tmp, name, fg, dest))
        procs.append(subprocess.Popen([binary, "-f", "-c", cfg], start_new_session=True))
        rows.append((name, fg, procs[-1].pid))
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
        rows.append(("nginx", ng, procs[-1].pid))
    if shutil.which("haproxy"):
        ha = free_port()
        with open(os.path.join(tmp, "ha.cfg"), "w") as f:
            f.write("global\n    nbthread 1\n    maxconn 4096\ndefaults\n    mode http\n"
                    "    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n"
                    "    timeout tunnel 300s\nfrontend fe\n    bind 127.0.0.1:%d\n"
                    "    default_backend be\nbackend be\n    server d 127.0.0.1:%d\n" % (ha, dest))
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", tmp + "/ha.cfg"],
                                      start_new_session=True, stderr=subprocess.DEVNULL))
        rows.append(("haproxy", ha, procs[-1].pid))
    return procs, rows


def paired(samples, a, b):
    """Row a against row b round by round (a round runs every row within seconds of the
    others, so the machine's load weighs on both alike): the median of the rounds' ratios of
    msgs/s, p50, p99 and CPU per message, and the range of the p99 ratios."""
    rounds = list(zip(samples[a], samples[b]))
    ratio = [[x[i] / y[i] if y[i] else 0.0 for x, y in rounds] for i in range(4)]
    print("%s/%-8s per round: msgs/s %.2fx, p50 %.2fx, p99 %.2fx (%.2f to %.2f), CPU per "
          "message %.2fx" % (a, b, statistics.median(ratio[0]), statistics.median(ratio[1]),
                             statistics.median(ratio[2]), min(ratio[2]), max(ratio[2]),
                             statistics.median(ratio[3])))


def verdict(meds, samples):
    """The target of the WebSocket rows: fastgateway's msgs/s at least the better of nginx's
    and HAProxy's, its p99 at or below theirs; with its CPU per message beside."""
    others = [n for n in ("nginx", "haproxy") if n in meds]
    if "fg-compare" in meds and "fastgateway" in meds:
        paired(samples, "fastgateway", "fg-compare")
    if "fastgateway" not in meds or not others:
        return
    fg = meds["fastgateway"]
    for n in others:
        o = meds[n]
        print("fastgateway/%-8s msgs/s %.2fx, p99 %.2fx, CPU per message %.2fx (lower is better)"
              % (n, fg[0] / o[0], fg[2] / o[2], fg[3] / o[3] if o[3] else 0.0))
        paired(samples, "fastgateway", n)
    ok = fg[0] >= max(meds[n][0] for n in others) and fg[2] <= min(meds[n][2] for n in others)
    print("WebSocket target (msgs/s >= the better of %s, p99 <= theirs): %s"
          % (" and ".join(others), "met" if ok else "not met"))


def main(a):
    if a.realtime:
        # Inherited by the client, the destination and every proxy: they preempt the
        # machine's other work at once, so a round measures them rather than its queue.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            sys.exit("ws-bench: --realtime needs root (or CAP_SYS_NICE)")
    with tempfile.TemporaryDirectory() as tmp:
        load = build_load(tmp)
        dest = free_port()
        echo = subprocess.Popen([load, "echo", str(dest)], start_new_session=True)
        procs, rows = start_proxies(tmp, dest, a.fastgateway, a.compare)
        procs.append(echo)
        try:
            print("ws-bench: %d WebSockets, %d in flight each, %d-byte messages, %g s per run"
                  % (a.conns, a.depth, a.size, a.seconds))
            live = []
            for name, port, pg in rows:
                if a.targets and name not in a.targets.split(","):
                    continue
                if wait_port(port):
                    live.append((name, port, pg))
                else:
                    print("%-12s %12s" % (name, "failed"))
            # the targets in turn, a.rounds times: a slow moment of the machine costs one
            # sample of every target instead of all the samples of one; medians reported.
            # Each round starts one row further on: a fixed order would give one row the same
            # place in every round (after the direct row, whose run fills both CPUs).
            samples = {name: [] for name, _, _ in live}
            for k in range(a.rounds):
                for name, port, pg in live[k % len(live):] + live[:k % len(live)]:
                    samples[name].append(run_load(load, port, a, (pg, echo.pid)))
            print("%-12s %10s %8s %8s %14s %9s %7s   (median of %d rounds)"
                  % ("target", "msgs/s", "p50 ms", "p99 ms", "proxy CPU us/msg", "client %",
                     "echo %", a.rounds))
            meds = {}
            for name, _, _ in live:
                med = [statistics.median(v[i] for v in samples[name]) for i in range(6)]
                meds[name] = med
                print("%-12s %10.0f %8.2f %8.2f %14.2f %9.0f %7.0f"
                      % (name, med[0], med[1], med[2], med[3], med[4], med[5]))
            verdict(meds, samples)
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fastgateway", default=os.path.join(here, "..", "fastgateway"))
    ap.add_argument("--compare", help="a second fastgateway binary, one more row (A/B)")
    ap.add_argument("--targets", help="only these rows, comma-separated (direct, fastgateway, "
                    "fg-compare, nginx, haproxy)")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--realtime", action="store_true",
                    help="run everything under SCHED_FIFO priority 1 (root): the machine's "
                    "other work out of the way of every row alike")
    main(ap.parse_args())
    sys.exit(0)
