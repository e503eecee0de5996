#!/usr/bin/env bash
# TLS handshake and download figures of fastgateway beside nginx and HAProxy, in one run on
# loopback (the TLS rows of `make bench` alone, with the server's CPU for each): every target
# terminates TLS with the same ECDSA P-256 certificate in front of one nginx upstream, with
# the same workers (THREADS) and the configuration bench.sh gives it.
#   full / resumed: HS_CLIENTS `openssl s_time -new|-reuse -www /` clients for HS_TIME seconds;
#                   handshakes/s and the server's CPU µs per handshake (user + sys of its
#                   process group, from /proc)
#   download:       `curl -k --http1.1` of a BIGFILE_MB file, best of DL_TRIES; GB/s and the
#                   server's CPU ms per MiB of the best try
# Targets are measured in turn, ROUNDS times; medians are printed with the ratios to nginx and
# HAProxy. FG_BEFORE=BINARY adds a second fastgateway (another build) to compare two builds in
# the same run. Knobs: ROUNDS (3), HS_TIME (2), HS_CLIENTS (2 x THREADS), THREADS (nproc),
# BIGFILE_MB (256), DL_TRIES (3), ONLY (full|resumed|download: one kind of measurement),
# TLS_GROUPS (groups for fastgateway; default its own).
# Not a test: the figures depend on the machine and its load.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FG=${FG:-$ROOT/fastgateway}
ROUNDS=${ROUNDS:-3}
HS_TIME=${HS_TIME:-2}
THREADS=${THREADS:-$(nproc)}
HS_CLIENTS=${HS_CLIENTS:-$((2 * THREADS))}
BIGFILE_MB=${BIGFILE_MB:-256}
DL_TRIES=${DL_TRIES:-3}
ONLY=${ONLY:-}
PATH=$PATH:/usr/sbin

TMP=$(mktemp -d /tmp/fg-tlsbench.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# ---- upstream: nginx with GET / (12 bytes) and the big file ----
UP_PORT=$(free_port)
mkdir -p "$TMP/www"
fallocate -l "${BIGFILE_MB}M" "$TMP/www/big.bin" 2>/dev/null ||
    dd if=/dev/zero of="$TMP/www/big.bin" bs=1M count="$BIGFILE_MB" status=none
nginx_hello "$TMP/upstream" "$UP_PORT" "$THREADS" 4096 "$TMP/www" tuned
wait_http "$UP_PORT" / || { echo "tls-bench: upstream did not start" >&2; exit 1; }

self_signed "$TMP/tls" "DNS:localhost,IP:127.0.0.1"

declare -A PORT PGID
NAMES=()

wait_https() {
    local i
    for i in $(seq 100); do
        [ "$(curl -k -s -o /dev/null -m 1 -w '%{http_code}' "https://127.0.0.1:$1/" || true)" != 200 ] ||
            return 0
        sleep 0.1
    done
    return 1
}

# add NAME PORT: the last spawned process group serves NAME on PORT.
add() {
    wait_https "$2" || { echo "tls-bench: $1 did not serve" >&2; cat "$TMP/$1.out" >&2; exit 1; }
    NAMES+=("$1")
    PORT[$1]=$2
    PGID[$1]=$LAST_PID
}

start_fg() {
    local name=$1 bin=$2 port
    port=$(free_port)
    mkdir -p "$TMP/$name"
    cat >"$TMP/$name/fastgateway.json" <<CONF
{
    "workers": $THREADS,
    "pidFile": "$TMP/$name/fastgateway.pid",
    "statusSocket": "$TMP/$name/status.sock",
    "log": { "errorLog": "$TMP/$name/error.log", "level": "warn", "accessLog": "off" },
    "certificates": [ { "id": "bench", "chain": "$TMP/tls/cert.pem", "key": "$TMP/tls/key.pem" } ],
    "servers": [ { "id": "main", "listen": "127.0.0.1:$port",
                   "tls": { "certificates": ["bench"], "sessionCache": 20000
                            ${TLS_GROUPS:+, \"groups\": \"$TLS_GROUPS\"} } } ],
    "routes": [ { "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" } ],
    "clusters": [ { "id": "up", "keepAlive": { "maxIdleConnections": 512 },
                    "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ]
}
CONF
    spawn "$TMP/$name.out" "$bin" -f -c "$TMP/$name/fastgateway.json"
    add "$name" "$port"
}

start_fg fastgateway "$FG"
[ -z "${FG_BEFORE:-}" ] || start_fg fg-before "$FG_BEFORE"

NGS_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
{
    nginx_main "$TMP/nginx" "$THREADS" 4096
    cat <<CONF
http {
    access_log off;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 512; }
    server {
        listen 127.0.0.1:$NGS_PORT ssl http2 backlog=4096;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
} >"$TMP/nginx/nginx.conf"
spawn "$TMP/nginx.out" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;'
add nginx "$NGS_PORT"

HAS_PORT=$(free_port)
haproxy_cfg "$THREADS" "$UP_PORT" "127.0.0.1:$HAS_PORT ssl crt $TMP/tls/bundle.pem alpn h2,http/1.1" \
    >"$TMP/haproxy.cfg"
spawn "$TMP/haproxy.out" haproxy -db -f "$TMP/haproxy.cfg"
add haproxy "$HAS_PORT"

# download NAME -> "GB/s CPU_MS_PER_MIB" of the best of DL_TRIES
download() {
    local n=$1 i t0 t1 s best="0 0"
    for i in $(seq "$DL_TRIES"); do
        t0=$(group_ticks "${PGID[$n]}")
        s=$(curl -k -s --http1.1 -o /dev/null -w '%{speed_download}' "https://127.0.0.1:${PORT[$n]}/big.bin")
        t1=$(group_ticks "${PGID[$n]}")
        best=$(awk -v s="$s" -v b="$best" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v mb="$BIGFILE_MB" 'BEGIN {
            split(b, o, " "); g = s / 1e9
            if (g > o[1]) printf "%.3f %.2f\n", g, (t1 - t0) / hz * 1000 / mb; else print b }')
    done
    echo "$best"
}

declare -A R
kinds=(full resumed download)
[ -z "$ONLY" ] || kinds=("$ONLY")
for r in $(seq "$ROUNDS"); do
    for k in "${kinds[@]}"; do
        for n in "${NAMES[@]}"; do
            case $k in
            full) v=$(handshakes "$n" -new) ;;
            resumed) v=$(handshakes "$n" -reuse) ;;
            download) v=$(download "$n") ;;
            esac
            R[$k.$n]="${R[$k.$n]:-} $v"
            echo "round $r $k $n: $v" >&2
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
field() { echo "$1" | awk -v f="$2" '{ for (i = f; i <= NF; i += 2) printf "%s ", $i }'; }

printf '\nload %s, %s rounds, %s workers, %s s_time clients x %ss\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$ROUNDS" "$THREADS" "$HS_CLIENTS" "$HS_TIME"
printf '| kind | target | rate | CPU | rate / nginx | rate / haproxy | CPU / nginx | CPU / haproxy |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
for k in "${kinds[@]}"; do
    nr=$(field "${R[$k.nginx]}" 1 | median); nc=$(field "${R[$k.nginx]}" 2 | median)
    hr=$(field "${R[$k.haproxy]}" 1 | median); hc=$(field "${R[$k.haproxy]}" 2 | median)
    for n in "${NAMES[@]}"; do
        rt=$(field "${R[$k.$n]}" 1 | median); c=$(field "${R[$k.$n]}" 2 | median)
        awk -v k="$k" -v n="$n" -v rt="$rt" -v c="$c" -v nr="$nr" -v nc="$nc" -v hr="$hr" -v hc="$hc" 'BEGIN {
            printf "| %s | %s | %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |\n", k, n, rt, c,
                rt / nr, rt / hr, c / nc, c / hc }'
    done
done
echo "(rate: handshakes/s or GB/s; CPU: server µs per handshake or ms per MiB)"
