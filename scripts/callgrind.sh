#!/usr/bin/env bash
# Instructions per proxied request, exactly: one worker under valgrind's callgrind in front of a
# one-process nginx answering GET / with 12 bytes, driven by h2load (HTTP/1.1, 4 connections,
# keep-alive). The counters are zeroed after a warm-up and dumped after N requests, so start-up
# and warm-up are left out. Prints the instructions per request and the functions that cost
# most (self cost). A steady A/B figure on a shared machine, where CPU time is noisy; it counts
# user-space instructions only, not the system calls' cost.
#   scripts/callgrind.sh [N]   (N requests, default 20000; FG=./fastgateway, KEEP=dir to keep
#                               the callgrind output for callgrind_annotate)
# MODE picks the client side: h1 (default: HTTP/1.1, 4 connections), h2c (HTTP/2 by prior
# knowledge) or h2 (HTTP/2 over TLS by ALPN, with a throw-away ECDSA P-256 certificate); the
# HTTP/2 modes use 4 connections with 10 streams in flight on each (h2load -m10), and the
# destination side is HTTP/1.1 in every mode.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-20000}
FG=${FG:-$ROOT/fastgateway}
MODE=${MODE:-h1}
for tool in nginx valgrind callgrind_control callgrind_annotate h2load curl python3; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null 2>&1 || { echo "callgrind: $tool not found" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/fg-callgrind.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

UP_PORT=$(free_port)
FG_PORT=$(free_port)
mkdir -p "$TMP/up/logs"
RUN_AS_ROOT=""
[ "$(id -u)" -ne 0 ] || RUN_AS_ROOT="user root;"
cat >"$TMP/up/nginx.conf" <<CONF
$RUN_AS_ROOT
worker_processes 1;
pid $TMP/up/nginx.pid;
error_log $TMP/up/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP_PORT;
        location = / { default_type text/plain; return 200 "hello world\n"; }
    }
}
CONF
spawn "$TMP/up.out" nginx -p "$TMP/up" -c "$TMP/up/nginx.conf" -g 'daemon off;'

SRV="" TOP="" SCHEME=http LOAD=(--h1 -c 4) CURL=()
case $MODE in
h1) ;;
h2c) SRV=', "http2": { "h2c": true }' LOAD=(-c 4 -m 10) CURL=(--http2-prior-knowledge) ;;
h2)
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1" \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.out"
    TOP=", \"certificates\": [ { \"id\": \"c\", \"chain\": \"$TMP/cert.pem\", \"key\": \"$TMP/key.pem\" } ]"
    SRV=', "tls": { "certificates": ["c"] }' SCHEME=https LOAD=(-c 4 -m 10) CURL=(-k --http2)
    ;;
*)
    echo "callgrind: MODE must be h1, h2c or h2" >&2
    exit 1
    ;;
esac

cat >"$TMP/fg.json" <<CONF
{ "workers": 1, "pidFile": "$TMP/fg.pid", "statusSocket": "$TMP/status.sock",
  "log": { "errorLog": "$TMP/error.log", "level": "warn", "accessLog": "off" },
  "servers": [ { "id": "main", "listen": "127.0.0.1:$FG_PORT" $SRV } ],
  "routes": [ { "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" } ],
  "clusters": [ { "id": "up",
                  "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ]
  $TOP }
CONF
spawn "$TMP/vg.out" valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$TMP/cg.%p" "$FG" -f -c "$TMP/fg.json"
VG=$LAST_PID
served() {
    local i
    for i in $(seq 100); do
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
    cat "$TMP/vg.out" "$TMP/error.log" >&2 2>/dev/null || true
    exit 1
fi
h2load "${LOAD[@]}" -n 2000 "$SCHEME://127.0.0.1:$FG_PORT/" >/dev/null 2>&1
WORKER=$(pgrep -P "$VG" | head -1)
callgrind_control -z "$WORKER" >/dev/null 2>&1
h2load "${LOAD[@]}" -n "$N" "$SCHEME://127.0.0.1:$FG_PORT/" >"$TMP/h2load.txt" 2>&1
callgrind_control -d "$WORKER" >/dev/null 2>&1
ok=$(awk '/^requests:/ { print $8 }' "$TMP/h2load.txt")
OUT=$(ls "$TMP"/cg."$WORKER".* | head -1)
total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "requests: $N sent, ${ok:-0} succeeded"
awk -v t="$total" -v n="$N" 'BEGIN { printf "instructions per request: %.0f\n", t / n }'
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$OUT" "$KEEP/"
fi
# head closes the pipe early: the writers' SIGPIPE is not a failure here
callgrind_annotate --threshold=100 "$OUT" 2>/dev/null |
    awk '/file:function/ { go = 1; next } go && NF && !/^---/' | grep -v '(100.0%)' | head -25 |
    sed "s|$ROOT/||; s| \[.*\]||" || true
