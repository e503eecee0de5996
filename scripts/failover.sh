#!/usr/bin/env bash
# Failover under load: two echo upstreams (tests/integration/upstream.py) behind fastgateway,
# `wrk -c$CONNS` for $DURATION, and one upstream killed with SIGKILL a third of the way in.
# With cluster failover on (connect refused or reset before any response byte: the request is
# sent to the other destination), the client must see no error at all. Prints wrk's summary and
# the destinations' state from `show servers`; exits 1 when wrk saw any error or non-2xx.
#
# Knobs: DURATION (9s), CONNS (64), THREADS (2), FG (./fastgateway), WORKERS (2).
# Not a test of speed: the Python upstreams are the bottleneck.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-9s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
FG=${FG:-$ROOT/fastgateway}
TMP=$(mktemp -d /tmp/fg-failover.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "failover: port $1 not listening" >&2
    exit 1
}

A=$(free_port)
B=$(free_port)
GW=$(free_port)
python3 tests/integration/upstream.py "$A" >/dev/null 2>&1 &
PID_A=$!
PIDS+=($PID_A)
python3 tests/integration/upstream.py "$B" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$A"
wait_port "$B"

cat >"$TMP/fg.json" <<JSON
{
  "workers": $WORKERS,
  "pidFile": "$TMP/fg.pid",
  "statusSocket": "$TMP/status.sock",
  "log": {"errorLog": "$TMP/error.log", "level": "notice"},
  "servers": [{"id": "main", "listen": "127.0.0.1:$GW"}],
  "clusters": [{
    "id": "c",
    "loadBalancingPolicy": "PowerOfTwoChoices",
    "destinations": [{"id": "a", "address": "http://127.0.0.1:$A"},
                     {"id": "b", "address": "http://127.0.0.1:$B"}],
    "healthCheck": {"active": {"interval": "1s", "timeout": "500ms", "path": "/health"},
                    "passive": {"consecutiveFailures": 3, "reactivationPeriod": "30s"}},
    "failover": {"enabled": true, "connectTimeout": "150ms", "budget": "500ms"}
  }],
  "routes": [{"id": "all", "match": {"path": "/{**rest}"}, "clusterId": "c"}]
}
JSON

"$FG" -f -c "$TMP/fg.json" &
PIDS+=($!)
wait_port "$GW"
sleep 0.5

secs=${DURATION%s}
(sleep $((secs / 3)) && kill -KILL "$PID_A" && echo "failover: killed destination a at $((secs / 3))s") &
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$GW/" | tee "$TMP/wrk.txt"
python3 - "$TMP/status.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show servers\n")
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
for d in json.loads(buf)["clusters"][0]["destinations"]:
    print("failover: destination %s health=%s active=%s passive=%s requests=%d failures=%d "
          "inflight=%d" % (d["id"], d["health"], d["active"]["state"], d["passive"]["state"],
                           d["requests"], d["failures"], d["inflight"]))
PY
if grep -qE "Socket errors|Non-2xx" "$TMP/wrk.txt"; then
    echo "failover: FAILED: client errors (above)"
    exit 1
fi
echo "failover: OK: 0 client errors"
