#!/usr/bin/env bash
# The tunnel row of `make bench` for two builds in one run: for each, a gateway (NPROC workers)
# whose route goes through tunnel://bench/web to a fastgateway-agent connected by wss:// on the
# same machine, in front of one nginx answering GET / with 12 bytes; wrk -c64 in turn against
# each, ROUNDS times (a slow moment of the shared machine then costs one sample of each). Prints
# req/s and the CPU µs per request of the gateway's and the agent's processes (user + sys from
# /proc), each round and the medians.
#   scripts/tunnel-ab.sh DIR_A DIR_B   (each holding fastgateway and fastgateway-agent)
#   ROUNDS=5 DURATION=10s CONNS=64 THREADS=2
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -eq 2 ] || { echo "usage: $0 DIR_A DIR_B" >&2; exit 2; }
DIRS=("$(cd "$1" && pwd)" "$(cd "$2" && pwd)")
ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-10s} CONNS=${CONNS:-64} THREADS=${THREADS:-2}
NPROC=$(nproc)
PATH=$PATH:/usr/sbin
TMP=$(mktemp -d /tmp/fg-tunnel-ab.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

UP_PORT=$(free_port)
nginx_hello "$TMP/up" "$UP_PORT" 1 4096
self_signed "$TMP" "DNS:localhost,IP:127.0.0.1"
head -c 32 /dev/urandom | base64 >"$TMP/bench.key"
chmod 600 "$TMP/bench.key"

PORTS=() GROUPS_=()
for i in 0 1; do
    d=$TMP/b$i port=$(free_port) ag_port=$(free_port)
    mkdir -p "$d"
    cat >"$d/fastgateway.json" <<CONF
{ "workers": $NPROC, "pidFile": "$d/fg.pid", "statusSocket": "$d/status.sock",
  "log": { "errorLog": "$d/error.log", "level": "warn", "accessLog": "off" },
  "certificates": [ { "id": "c", "chain": "$TMP/cert.pem", "key": "$TMP/key.pem" } ],
  "tunnels": { "agents": [ { "id": "bench", "secretFile": "$TMP/bench.key" } ] },
  "servers": [ { "id": "main", "listen": "127.0.0.1:$port" },
               { "id": "agents", "listen": "127.0.0.1:$ag_port", "acceptTunnels": true,
                 "tls": { "certificates": ["c"] } } ],
  "routes": [ { "id": "all", "servers": ["main"], "match": { "path": "/{**rest}" },
                "clusterId": "tun" } ],
  "clusters": [ { "id": "tun", "destinations": [ { "id": "t1", "address": "tunnel://bench/web" } ] } ] }
CONF
    cat >"$d/agent.json" <<CONF
{ "gateway": "wss://127.0.0.1:$ag_port/_fg/tunnel", "id": "bench",
  "secretFile": "$TMP/bench.key", "tls": { "ca": "$TMP/cert.pem", "serverName": "localhost" },
  "services": { "web": "http://127.0.0.1:$UP_PORT" },
  "reconnect": { "initialMs": 100, "maxMs": 1000, "jitter": 0.2 },
  "log": { "level": "warn", "errorLog": "$d/agent.log" } }
CONF
    # one process group: the gateway in the background, the agent in place of the shell
    spawn "$d/out" bash -c "\"${DIRS[$i]}/fastgateway\" -f -c \"$d/fastgateway.json\" &
        sleep 0.5; exec \"${DIRS[$i]}/fastgateway-agent\" -c \"$d/agent.json\""
    GROUPS_+=("$LAST_PID")
    PORTS+=("$port")
done
for i in 0 1; do
    wait_http "${PORTS[$i]}" / || { echo "tunnel-ab: ${DIRS[$i]} did not serve" >&2; exit 1; }
    wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:${PORTS[$i]}/" >/dev/null 2>&1 || true
done
declare -a RPS0 RPS1 CPU0 CPU1
for r in $(seq "$ROUNDS"); do
    for i in 0 1; do
        t0=$(group_ticks "${GROUPS_[$i]}")
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:${PORTS[$i]}/" 2>&1) || true
        t1=$(group_ticks "${GROUPS_[$i]}")
        reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
        rps=$(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
        cpu=$(cpu_per "$t0" "$t1" "${reqs:-0}")
        bad=$(echo "$out" | awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s; ", $0 }')
        echo "round $r: ${DIRS[$i]}: $rps req/s, $cpu µs CPU/req ${bad}"
        eval "RPS$i+=(\"$rps\") CPU$i+=(\"$cpu\")"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "| build | req/s (median) | CPU µs/req gateway + agent (median) |"
echo "|---|---:|---:|"
echo "| ${DIRS[0]} | $(echo "${RPS0[*]}" | median) | $(echo "${CPU0[*]}" | median) |"
echo "| ${DIRS[1]} | $(echo "${RPS1[*]}" | median) | $(echo "${CPU1[*]}" | median) |"
