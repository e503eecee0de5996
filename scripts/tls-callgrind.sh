#!/usr/bin/env bash
# Instructions per TLS handshake and per MiB downloaded over TLS, exactly: one process of the
# target under valgrind's callgrind (fastgateway: one worker; nginx: one worker; HAProxy: one
# thread) terminating TLS with an ECDSA P-256 certificate in front of a one-process nginx
# upstream. Counters are zeroed after a warm-up and dumped after the load, so start-up is left
# out. User-space instructions only (not the system calls' cost), and under valgrind's CPU
# model (no AVX-512), so compare targets and builds with each other, not with CPU time.
#   scripts/tls-callgrind.sh new|reuse|download [TARGET]
#     new / reuse: `openssl s_time -new|-reuse -www /` for S seconds (default 20); per handshake
#     download:    `curl -k --http1.1` of a MB MiB file (default 64); per MiB
#     keepalive:   `h2load --h1` over TLS, 4 keep-alive connections, N requests (default 20000)
#                  after a warm-up; per request (the HTTPS/1.1 keep-alive row's cost)
#   TARGET: fastgateway (FG=./fastgateway), nginx or haproxy. KEEP=dir keeps the output.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:?new, reuse, download or keepalive}
TARGET=${2:-fastgateway}
FG=${FG:-$ROOT/fastgateway}
S=${S:-20}
MB=${MB:-64}
N=${N:-20000}
PATH=$PATH:/usr/sbin
TMP=$(mktemp -d /tmp/fg-tlscg.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

UP_PORT=$(free_port)
PORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/ng/logs"
fallocate -l "${MB}M" "$TMP/www/big.bin" 2>/dev/null ||
    dd if=/dev/zero of="$TMP/www/big.bin" bs=1M count="$MB" status=none
nginx_hello "$TMP/up" "$UP_PORT" 1 1024 "$TMP/www"
self_signed "$TMP" "DNS:localhost,IP:127.0.0.1"

VG=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$TMP/cg.%p")
case $TARGET in
fastgateway)
    cat >"$TMP/fg.json" <<CONF
{ "workers": 1, "pidFile": "$TMP/fg.pid", "statusSocket": "$TMP/status.sock",
  "log": { "errorLog": "$TMP/error.log", "level": "warn", "accessLog": "off" },
  "certificates": [ { "id": "c", "chain": "$TMP/cert.pem", "key": "$TMP/key.pem" } ],
  "servers": [ { "id": "main", "listen": "127.0.0.1:$PORT",
                 "tls": { "certificates": ["c"], "sessionCache": 20000 } } ],
  "routes": [ { "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" } ],
  "clusters": [ { "id": "up",
                  "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ] }
CONF
    spawn "$TMP/vg.out" "${VG[@]}" "$FG" -f -c "$TMP/fg.json"
    ;;
nginx)
    {
        nginx_main "$TMP/ng" 1 1024
        cat <<CONF
http {
    access_log off;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
    } >"$TMP/ng/nginx.conf"
    spawn "$TMP/vg.out" "${VG[@]}" nginx -p "$TMP/ng" -c "$TMP/ng/nginx.conf" -g 'daemon off;'
    ;;
haproxy)
    haproxy_cfg 1 "$UP_PORT" "127.0.0.1:$PORT ssl crt $TMP/bundle.pem alpn h2,http/1.1" >"$TMP/haproxy.cfg"
    spawn "$TMP/vg.out" "${VG[@]}" haproxy -db -f "$TMP/haproxy.cfg"
    ;;
*) echo "tls-callgrind: unknown target $TARGET" >&2; exit 1 ;;
esac
VGPID=$LAST_PID
for _ in $(seq 300); do
    [ "$(curl -k -s -o /dev/null -m 2 -w '%{http_code}' "https://127.0.0.1:$PORT/" || true)" != 200 ] || break
    sleep 0.2
done
# The process that serves: the worker (fastgateway, nginx) or the one process (HAProxy).
if [ "$TARGET" = haproxy ]; then PID=$VGPID; else PID=$(pgrep -P "$VGPID" | head -1); fi

load() {
    case $MODE in
    new | reuse)
        openssl s_time -connect "127.0.0.1:$PORT" "-$MODE" -www / -time "$1" 2>&1 |
            awk '/connections in .* real/ { n += $1 } END { print n + 0 }' ;;
    download)
        curl -k -s --http1.1 -o /dev/null "https://127.0.0.1:$PORT/big.bin"
        echo "$MB" ;;
    keepalive)
        # the warm-up (load 2) sends 2000, the measured load N
        local n=$N
        [ "$1" != 2 ] || n=2000
        h2load --h1 -c 4 -n "$n" "https://127.0.0.1:$PORT/" 2>&1 |
            awk '/^requests:/ { print $8 + 0 }' ;;
    esac
}
load 2 >/dev/null
callgrind_control -z "$PID" >/dev/null 2>&1
n=$(load "$S")
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 0.5
OUT=$(ls -t "$TMP"/cg."$PID".* | head -1)
total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
unit=handshake
[ "$MODE" != download ] || unit=MiB
[ "$MODE" != keepalive ] || unit=request
echo "$TARGET $MODE: $n ${unit}s"
awk -v t="$total" -v n="$n" -v u="$unit" 'BEGIN { printf "instructions per %s: %.0f\n", u, t / n }'
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$OUT" "$KEEP/$TARGET.$MODE.cg"
    echo "$n" >"$KEEP/$TARGET.$MODE.n"
fi
callgrind_annotate --inclusive=no "$OUT" 2>/dev/null |
    awk '/file:function/ { go = 1; next } go && NF && !/^---/' | head -"${TOP:-20}" || true
