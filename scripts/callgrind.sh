#!/usr/bin/env bash
# Instructions per proxied request, exactly: one worker under valgrind's callgrind in front of a
# one-process nginx answering GET / with 12 bytes, driven by h2load (HTTP/1.1, 4 connections,
# keep-alive). The counters are zeroed after a warm-up and dumped after N requests, so start-up
# and warm-up are left out. Prints the instructions per request and the functions that cost
# most (self cost). A steady A/B figure on a shared machine, where CPU time is noisy; it counts
# user-space instructions only, not the system calls' cost.
#   scripts/callgrind.sh [N]   (N requests, default 20000; FG=./fastgateway, KEEP=dir to keep
#                               the callgrind output for callgrind_annotate)
# MODE picks the client side: h1 (default: HTTP/1.1, C connections, default 4), h2c (HTTP/2 by
# prior knowledge) or h2 (HTTP/2 over TLS by ALPN, with a throw-away ECDSA P-256 certificate);
# the HTTP/2 modes use 4 connections with 10 streams in flight on each (h2load -m10), and the
# destination side is HTTP/1.1 in every mode.
# MODE=tunnel: clients as in h1, but the route goes through tunnel://bench/web to a
# fastgateway-agent (AGENT=./fastgateway-agent) connected by wss:// (TLS, WebSocket, HTTP/2
# inside) to a TLS server of the gateway, which proxies to the same nginx. The gateway's worker
# and the agent both run under callgrind; each side gets its instructions per request, the
# share of each library (self cost by object file) and its costliest functions.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-20000}
FG=${FG:-$ROOT/fastgateway}
AGENT=${AGENT:-$ROOT/fastgateway-agent}
MODE=${MODE:-h1}
C=${C:-4}
for tool in nginx valgrind callgrind_control callgrind_annotate h2load curl python3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null 2>&1 || { echo "callgrind: $tool not found" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/fg-callgrind.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

UP_PORT=$(free_port)
FG_PORT=$(free_port)
nginx_hello "$TMP/up" "$UP_PORT" 1 1024

CERT="{ \"id\": \"c\", \"chain\": \"$TMP/cert.pem\", \"key\": \"$TMP/key.pem\" }"
SRV="" TOP="" SCHEME=http LOAD=(--h1 -c "$C") CURL=() DEST="http://127.0.0.1:$UP_PORT" EXTRA=""
case $MODE in
h1) ;;
h2c) SRV=', "http2": { "h2c": true }' LOAD=(-c 4 -m 10) CURL=(--http2-prior-knowledge) ;;
h2)
    self_signed "$TMP" "IP:127.0.0.1"
    TOP=", \"certificates\": [ $CERT ]"
    SRV=', "tls": { "certificates": ["c"] }' SCHEME=https LOAD=(-c 4 -m 10) CURL=(-k --http2)
    ;;
tunnel)
    [ -x "$AGENT" ] || { echo "callgrind: $AGENT not found (make fastgateway-agent)" >&2; exit 1; }
    AG_PORT=$(free_port)
    self_signed "$TMP" "DNS:localhost,IP:127.0.0.1"
    head -c 32 /dev/urandom | base64 >"$TMP/bench.key"
    chmod 600 "$TMP/bench.key"
    TOP=", \"certificates\": [ $CERT ],
  \"tunnels\": { \"agents\": [ { \"id\": \"bench\", \"secretFile\": \"$TMP/bench.key\" } ] }"
    EXTRA=", { \"id\": \"agents\", \"listen\": \"127.0.0.1:$AG_PORT\", \"acceptTunnels\": true,
                \"tls\": { \"certificates\": [\"c\"] } }"
    DEST="tunnel://bench/web"
    cat >"$TMP/agent.json" <<CONF
{ "gateway": "wss://127.0.0.1:$AG_PORT/_fg/tunnel", "id": "bench",
  "secretFile": "$TMP/bench.key", "tls": { "ca": "$TMP/cert.pem", "serverName": "localhost" },
  "services": { "web": "http://127.0.0.1:$UP_PORT" },
  "reconnect": { "initialMs": 100, "maxMs": 1000, "jitter": 0.2 },
  "log": { "level": "warn", "errorLog": "$TMP/agent.log" } }
CONF
    ;;
*)
    echo "callgrind: MODE must be h1, h2c, h2 or tunnel" >&2
    exit 1
    ;;
esac

cat >"$TMP/fg.json" <<CONF
{ "workers": 1, "pidFile": "$TMP/fg.pid", "statusSocket": "$TMP/status.sock",
  "log": { "errorLog": "$TMP/error.log", "level": "warn", "accessLog": "off" },
  "servers": [ { "id": "main", "listen": "127.0.0.1:$FG_PORT" $SRV } $EXTRA ],
  "routes": [ { "id": "all", "servers": ["main"], "match": { "path": "/{**rest}" },
                "clusterId": "up" } ],
  "clusters": [ { "id": "up", "destinations": [ { "id": "u1", "address": "$DEST" } ] } ]
  $TOP }
CONF
spawn "$TMP/vg.out" valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$TMP/cg.%p" "$FG" -f -c "$TMP/fg.json"
VG=$LAST_PID
AG=""
if [ "$MODE" = tunnel ]; then
    sleep 1
    spawn "$TMP/ag.out" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
        "$AGENT" -c "$TMP/agent.json"
    AG=$LAST_PID
fi
served() {
    local i
    for i in $(seq 300); do
        if [ "$(curl "${CURL[@]}" -s -o /dev/null -m 2 -w '%{http_code}' \
            "$SCHEME://127.0.0.1:$FG_PORT/" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}
if ! served; then
    echo "callgrind: the gateway did not serve" >&2
    cat "$TMP/vg.out" "$TMP/error.log" "$TMP/ag.out" "$TMP/agent.log" >&2 2>/dev/null || true
    exit 1
fi
h2load "${LOAD[@]}" -n 2000 "$SCHEME://127.0.0.1:$FG_PORT/" >/dev/null 2>&1
WORKER=$(pgrep -P "$VG" | head -1)
SIDES=("$WORKER")
[ -z "$AG" ] || SIDES+=("$AG")
for pid in "${SIDES[@]}"; do callgrind_control -z "$pid" >/dev/null 2>&1; done
h2load "${LOAD[@]}" -n "$N" "$SCHEME://127.0.0.1:$FG_PORT/" >"$TMP/h2load.txt" 2>&1
for pid in "${SIDES[@]}"; do callgrind_control -d "$pid" >/dev/null 2>&1; done
ok=$(awk '/^requests:/ { print $8 }' "$TMP/h2load.txt")
echo "requests: $N sent, ${ok:-0} succeeded"

# report LABEL PID: the figures of one process's dump
report() {
    local out total
    out=$(ls "$TMP"/cg."$2".* | head -1)
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    SUM=$((SUM + total))
    awk -v l="$1" -v t="$total" -v n="$N" 'BEGIN { printf "%s instructions per request: %.0f\n", l, t / n }'
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP"
        cp "$out" "$KEEP/$1.$(basename "$out")"
    fi
    [ "$MODE" = tunnel ] || { top_functions "$out"; return 0; }
    echo "  per request, by object (self cost):"
    callgrind_annotate --auto=no --threshold=100 "$out" 2>/dev/null |
        awk -v n="$N" '/file:function/ { go = 1; next }
            go && NF && !/^---/ && !/\(100.0%\)/ {
                c = $1; gsub(",", "", c)
                obj = $NF
                if (obj ~ /^\[.*\]$/) { gsub(/[][]/, "", obj); sub(".*/", "", obj) } else obj = "?"
                sum[obj] += c
            }
            END { for (o in sum) if (sum[o] / n >= 50) printf "    %8.0f  %s\n", sum[o] / n, o }' |
        sort -rn
    echo "  costliest functions (self):"
    top_functions "$out"
}
top_functions() {
    # head closes the pipe early: the writers' SIGPIPE is not a failure here
    callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/file:function/ { go = 1; next } go && NF && !/^---/' | grep -v '(100.0%)' |
        head -"${TOPN:-25}" | sed "s|$ROOT/||; s|\(???:[^ ]*\) \[.*/\([^]/]*\)\]|\1 (\2)|; s| \[.*\]||" || true
}
SUM=0
if [ "$MODE" = tunnel ]; then
    report gateway "$WORKER"
    report agent "$AG"
    awk -v t="$SUM" -v n="$N" 'BEGIN { printf "gateway + agent instructions per request: %.0f\n", t / n }'
else
    report all "$WORKER"
fi
