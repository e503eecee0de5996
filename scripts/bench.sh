#!/usr/bin/env bash
# `make bench`: fastgateway vs nginx vs HAProxy on loopback, in front of one nginx upstream.
#
# The upstream (nginx) answers GET / with a 12-byte body and serves a 256 MiB file. Each proxy
# runs in turn with as many workers/threads as CPUs and is measured with
#   wrk -t$THREADS -c$CONNS -d$DURATION --latency   (keep-alive req/s, p50, p99)
#   curl -o /dev/null of the 256 MiB file            (best of 3, GB/s = 1e9 bytes/s)
# and the CPU time (user + sys) that the target's processes spent during each wrk run, divided by
# the requests of that run: microseconds of CPU per request, steadier than req/s on a shared box.
# The upstream alone is measured the same way as the ceiling.
#
# TLS rows: fastgateway, nginx and HAProxy also terminate TLS (1.2 and 1.3, default ciphers,
# session tickets and a session cache on) with one ECDSA P-256 certificate made here, in front
# of the same upstream, measured in the same rounds with
#   wrk -d$TLS_DURATION ... https://127.0.0.1:PORT/  (keep-alive req/s, p99, CPU per request)
#   openssl s_time -new / -reuse -www /, $HS_CLIENTS in parallel for HS_TIME seconds
#                                                    (handshakes/s, full and resumed, and the
#                                                     server's CPU per handshake)
#   curl -k --http1.1 -o /dev/null of the 256 MiB file (best of 3)
# HTTP/2 rows: the same three TLS instances also speak h2 by ALPN, and a fourth instance of each
# speaks h2c (prior knowledge) on a plaintext port; both measured in the same rounds with
#   h2load -t$THREADS -c$H2_CONNS -m$H2_STREAMS -D$H2_DURATION --log-file
#                                                    (req/s, p99 from the per-request log, CPU
#                                                     per request)
#   curl --http2 (h2) / --http2-prior-knowledge (h2c) of the 256 MiB file (best of 3)
# The markdown table with the ratios fastgateway/nginx and fastgateway/haproxy is printed and
# written, with the machine description, to docs/benchmarks.md (OUT=... to write elsewhere).
#
# Every target is started first and measured in turn, ROUNDS times; medians are reported.
# Knobs: DURATION (10s), CONNS (64), THREADS (2), WARMUP (2s), ROUNDS (3), FG (./fastgateway),
#        OUT (docs/benchmarks.md), BIGFILE_MB (256), TLS_DURATION (10s, wrk over TLS),
#        HS_TIME (3, seconds per s_time run), HS_CLIENTS (2 x THREADS, s_time clients in
#        parallel: each client waits for its own connection, so twice as many as there are
#        workers keep every worker busy), FG_BEFORE (another fastgateway binary: its TLS and h2
#        rows too, to compare two builds in one run), H2_DURATION (5, seconds of h2load),
#        H2_CONNS (32), H2_STREAMS (10), ONLY_H2 (1: only the HTTP/2 rows and the TLS download
#        they are compared with; the table is printed, and written only when OUT is given).
# Not a test: the numbers depend on the machine and its load.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
FG=${FG:-$ROOT/fastgateway}
if [ -n "${ONLY_H2:-}" ] && [ -z "${OUT:-}" ]; then OUT=/dev/null; fi
OUT=${OUT:-$ROOT/docs/benchmarks.md}
BIGFILE_MB=${BIGFILE_MB:-256}
TLS_DURATION=${TLS_DURATION:-10s}
HS_TIME=${HS_TIME:-3}
HS_CLIENTS=${HS_CLIENTS:-$((2 * THREADS))}
H2_DURATION=${H2_DURATION:-5}
H2_CONNS=${H2_CONNS:-32}
H2_STREAMS=${H2_STREAMS:-10}
ONLY_H2=${ONLY_H2:-}
# Idle upstream connections each proxy worker keeps (fastgateway's maxIdleConnections, nginx's
# `keepalive`): above the concurrency of every load here (h2load's 32 x 10 streams), so that no
# proxy closes and reopens upstream connections between bursts. HAProxy keeps them unbounded.
UP_IDLE=${UP_IDLE:-512}
NPROC=$(nproc)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

for tool in nginx haproxy wrk curl python3 openssl h2load; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool not found (make deps)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/fg-bench.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# ---- upstream -------------------------------------------------------------------------------
UP_PORT=$(free_port)
mkdir -p "$TMP/www"
if ! fallocate -l "${BIGFILE_MB}M" "$TMP/www/big.bin" 2>/dev/null; then
    dd if=/dev/zero of="$TMP/www/big.bin" bs=1M count="$BIGFILE_MB" status=none
fi
BIG_BYTES=$((BIGFILE_MB * 1024 * 1024))

nginx_hello "$TMP/upstream" "$UP_PORT" "$NPROC" 4096 "$TMP/www" tuned
UP_PGID=$LAST_PID
if ! wait_http "$UP_PORT" /; then
    echo "bench: the upstream nginx did not start:" >&2
    cat "$TMP/upstream.out" "$TMP/upstream/logs/error.log" >&2 2>/dev/null || true
    exit 1
fi
body=$(curl -s "http://127.0.0.1:$UP_PORT/")
if [ "${#body}" -ne 11 ]; then # 12 bytes with the newline that $(...) strips
    echo "bench: unexpected upstream body '$body'" >&2
    exit 1
fi

# ---- measurements ---------------------------------------------------------------------------
# wrk latency like "812.00us", "1.23ms", "1.02s" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n = n * 60000;
        else if (v ~ /s$/) n = n * 1000;
        printf "%.3f", n }'
}

declare -A RPS P50 P99 DL ERRS PORT MODE PGID CPU URL HSN HSR HSNCPU HSRCPU
NAMES=()
ROUNDS=${ROUNDS:-3}

# target NAME PORT MODE: measure NAME later (MODE full: req/s and download; rps: req/s only;
# tls: over TLS, req/s, handshakes and download; h2 / h2c: HTTP/2 over TLS / prior knowledge,
# h2load and download). The target's processes are the process group of the last `spawn`.
target() {
    NAMES+=("$1")
    PORT[$1]=$2
    MODE[$1]=$3
    PGID[$1]=$LAST_PID
    case $3 in
    tls | h2) URL[$1]="https://127.0.0.1:$2" ;;
    *) URL[$1]="http://127.0.0.1:$2" ;;
    esac
}

# h2_alias NAME OF: NAME is HTTP/2 (by ALPN) to the running TLS target OF, same processes.
h2_alias() {
    if [ -z "${PORT[$2]:-}" ]; then
        failed "$1" h2
        return 0
    fi
    local last=$LAST_PID
    LAST_PID=${PGID[$2]}
    target "$1" "${PORT[$2]}" h2
    LAST_PID=$last
}

# skipped NAME: with ONLY_H2, only the HTTP/2 targets take load (the TLS ones give a download).
skipped() {
    [ -n "$ONLY_H2" ] && [ "${MODE[$1]}" != h2 ] && [ "${MODE[$1]}" != h2c ]
}

# h2_load NAME: one h2load run; prints "REQ/S P99_MS CPU_US REQUESTS FAILED" (p99 of the
# per-request times of its --log-file).
h2_load() {
    local n=$1 t0 t1 out rps reqs failed p99
    rm -f "$TMP/h2load.log"
    t0=$(group_ticks "${PGID[$n]}")
    out=$(h2load -t"$THREADS" -c"$H2_CONNS" -m"$H2_STREAMS" -D "$H2_DURATION" \
        --log-file="$TMP/h2load.log" "${URL[$n]}/" 2>&1) || true
    t1=$(group_ticks "${PGID[$n]}")
    rps=$(echo "$out" | awk '/^finished in/ { sub(/,$/, "", $4); printf "%.0f", $4 }')
    reqs=$(echo "$out" | awk '/^requests:/ { print $8 }')
    failed=$(echo "$out" | awk '/^requests:/ { print $10 + $12 + $14 }')
    p99=$(awk -F'\t' '$2 == 200 { print $3 }' "$TMP/h2load.log" 2>/dev/null | sort -n |
        awk '{ v[NR] = $1 } END { if (NR) { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 } }')
    echo "${rps:-0} ${p99:-0} $(cpu_per "$t0" "$t1" "${reqs:-0}") ${reqs:-0} ${failed:-0}"
}


failed() {
    NAMES+=("$1")
    MODE[$1]=${2:-full}
    RPS[$1]=0 P50[$1]=0 P99[$1]=0 DL[$1]=0 HSN[$1]=0 HSR[$1]=0 ERRS[$1]="did not start"
}



median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# Every server runs for the whole measurement, idle while another is measured, and the targets
# are measured in turn, ROUNDS times over: a slow moment of this shared machine then costs one
# sample of every target instead of all the samples of one. Reported: the median of the rounds.
measure_all() {
    local round n out
    declare -A runs p50s p99s cpus hsn hsr hsncpu hsrcpu
    local t0 t1 reqs r c d p
    for n in "${NAMES[@]}"; do
        [ -n "${PORT[$n]:-}" ] || continue
        skipped "$n" && continue
        case ${MODE[$n]} in
        h2 | h2c) h2load -t"$THREADS" -c"$H2_CONNS" -m"$H2_STREAMS" -D "${WARMUP%s}" \
            "${URL[$n]}/" >/dev/null 2>&1 || true ;;
        *) wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "${URL[$n]}/" >/dev/null 2>&1 || true ;;
        esac
    done
    for round in $(seq "$ROUNDS"); do
        for n in "${NAMES[@]}"; do
            [ -n "${PORT[$n]:-}" ] || continue
            skipped "$n" && continue
            echo "== round $round: $n (port ${PORT[$n]})" >&2
            if [ "${MODE[$n]}" = h2 ] || [ "${MODE[$n]}" = h2c ]; then
                local f
                read -r r p c reqs f <<<"$(h2_load "$n")"
                echo "   h2load req/s $r, p99 ms $p, CPU µs/req $c, requests $reqs, failed $f" >&2
                runs[$n]+=" $r" p99s[$n]+=" $p" cpus[$n]+=" $c" p50s[$n]+=" 0"
                [ "$f" = 0 ] || ERRS[$n]+="$f failed; "
                continue
            fi
            t0=$(group_ticks "${PGID[$n]}")
            d=$DURATION
            [ "${MODE[$n]}" != tls ] || d=$TLS_DURATION
            out=$(wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency "${URL[$n]}/" 2>&1) || true
            t1=$(group_ticks "${PGID[$n]}")
            reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
            cpus[$n]+=" $(cpu_per "$t0" "$t1" "${reqs:-0}")"
            echo "$out" | grep -E "Requests/sec|99%|errors|Non-2xx" | sed 's/^/   /' >&2
            runs[$n]+=" $(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')"
            p50s[$n]+=" $(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")"
            p99s[$n]+=" $(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")"
            ERRS[$n]+=$(echo "$out" | awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s; ", $0 }')
            [ "${MODE[$n]}" = tls ] || continue
            read -r r c <<<"$(handshakes "$n" -new)"
            hsn[$n]+=" $r" hsncpu[$n]+=" $c"
            echo "   full handshakes/s $r, CPU µs each $c" >&2
            read -r r c <<<"$(handshakes "$n" -reuse)"
            hsr[$n]+=" $r" hsrcpu[$n]+=" $c"
            echo "   resumed handshakes/s $r, CPU µs each $c" >&2
        done
    done
    for n in "${NAMES[@]}"; do
        [ -n "${PORT[$n]:-}" ] || continue
        DL[$n]="-"
        skipped "$n" && continue
        RPS[$n]=$(echo "${runs[$n]}" | median)
        CPU[$n]=$(echo "${cpus[$n]}" | median)
        P50[$n]=$(echo "${p50s[$n]}" | median)
        P99[$n]=$(echo "${p99s[$n]}" | median)
        DL[$n]="-"
        [ "${MODE[$n]}" = tls ] || continue
        HSN[$n]=$(echo "${hsn[$n]}" | median)
        HSR[$n]=$(echo "${hsr[$n]}" | median)
        HSNCPU[$n]=$(echo "${hsncpu[$n]}" | median)
        HSRCPU[$n]=$(echo "${hsrcpu[$n]}" | median)
    done
    # Downloads: best of 3, taken in turn as well.
    # TLS downloads are HTTP/1.1 (curl would pick h2 by ALPN), h2 and h2c ones HTTP/2.
    local i s code size speed ver proto
    for i in 1 2 3; do
        for n in "${NAMES[@]}"; do
            [ -n "${PORT[$n]:-}" ] || continue
            [ -z "$ONLY_H2" ] || [ "${MODE[$n]}" != full ] || continue
            case ${MODE[$n]} in
            full) proto=--http1.1 ;;
            tls) proto=--http1.1 ;;
            h2) proto=--http2 ;;
            h2c) proto=--http2-prior-knowledge ;;
            *) continue ;;
            esac
            s=$(curl -k "$proto" -s -o /dev/null -m 120 \
                -w '%{http_code} %{size_download} %{speed_download} %{http_version}' \
                "${URL[$n]}/big.bin" || true)
            read -r code size speed ver <<<"$s"
            case ${MODE[$n]} in h2 | h2c) [ "${ver:-}" = 2 ] || code="$code (HTTP/${ver:-?})" ;; esac
            if [ "${code:-0}" != 200 ] || [ "${size:-0}" != "$BIG_BYTES" ]; then
                echo "   $n download $i failed: $s" >&2
                continue
            fi
            DL[$n]=$(awk -v a="${DL[$n]}" -v b="$speed" 'BEGIN {
                b = b / 1e9; if (a == "-" || b > a + 0) printf "%.2f", b; else print a }')
        done
    done
}

[ -n "$ONLY_H2" ] || target upstream "$UP_PORT" full

# ---- fastgateway ----------------------------------------------------------------------------
# fg_config NAME PORT ROUTES_JSON [TOP_KEYS [SERVER_KEYS]]: a gateway config in
# $TMP/NAME/fastgateway.json; the optional arguments start with a comma.
fg_config() {
    local name=$1 port=$2 routes=$3 top=${4:-} srv=${5:-}
    mkdir -p "$TMP/$name"
    cat >"$TMP/$name/fastgateway.json" <<EOF
{
    "workers": $NPROC,
    "pidFile": "$TMP/$name/fastgateway.pid",
    "statusSocket": "$TMP/$name/status.sock",
    "log": { "errorLog": "$TMP/$name/error.log", "level": "warn", "accessLog": "off" },
    "servers": [ { "id": "main", "listen": "127.0.0.1:$port" $srv } ],
    "routes": [ $routes ],
    "clusters": [ { "id": "up", "keepAlive": { "maxIdleConnections": $UP_IDLE },
                    "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ]
    $top
}
EOF
}

# wait_https PORT: until https://127.0.0.1:PORT/ answers 200 (10 s at most).
wait_https() {
    local i
    for i in $(seq 100); do
        if [ "$(curl -k -s -o /dev/null -m 1 -w '%{http_code}' "https://127.0.0.1:$1/" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_h2c PORT: until an h2c request to http://127.0.0.1:PORT/ answers 200 (10 s at most).
wait_h2c() {
    local i
    for i in $(seq 100); do
        if [ "$(curl --http2-prior-knowledge -s -o /dev/null -m 1 -w '%{http_code}' \
            "http://127.0.0.1:$1/" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_target PORT MODE: until the target answers, over TLS for MODE tls, by h2c for MODE h2c.
wait_target() {
    case $2 in
    tls) wait_https "$1" ;;
    h2c) wait_h2c "$1" ;;
    *) wait_http "$1" / ;;
    esac
}

# start_peer NAME PORT MODE CMD...: start another proxy (its output in $TMP/NAME.out) and
# register it as a target once it answers, else as failed, with its output and
# $TMP/NAME/logs/error.log (nginx) on stderr.
start_peer() {
    local name=$1 port=$2 mode=$3
    shift 3
    spawn "$TMP/$name.out" "$@"
    if wait_target "$port" "$mode"; then
        target "$name" "$port" "$mode"
    else
        cat "$TMP/$name.out" "$TMP/$name/logs/error.log" >&2 2>/dev/null || true
        failed "$name" "$mode"
    fi
}

# start_fg NAME MODE [BINARY]: start the gateway of $TMP/NAME and register it as a target.
start_fg() {
    local name=$1 mode=$2 port
    local FG=${3:-$FG}
    port=$(sed -n 's/.*"listen": "127.0.0.1:\([0-9]*\)".*/\1/p' "$TMP/$name/fastgateway.json")
    if [ -x "$FG" ] && "$FG" -t -c "$TMP/$name/fastgateway.json" >"$TMP/$name.test" 2>&1; then
        spawn "$TMP/$name.out" "$FG" -f -c "$TMP/$name/fastgateway.json"
        if wait_target "$port" "$mode"; then
            target "$name" "$port" "$mode"
            return 0
        fi
        echo "bench: $name did not serve:" >&2
        tail -5 "$TMP/$name.out" "$TMP/$name/error.log" >&2 2>/dev/null || true
    else
        echo "bench: $FG missing or config rejected: $(cat "$TMP/$name.test" 2>/dev/null)" >&2
    fi
    failed "$name" "$mode"
}

CATCH_ALL='{ "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" }'
if [ -z "$ONLY_H2" ]; then
    fg_config fastgateway "$(free_port)" "$CATCH_ALL"
    start_fg fastgateway full
fi

# ---- TLS: one ECDSA P-256 certificate for the three proxies ---------------------------------
self_signed "$TMP/tls" "DNS:localhost,IP:127.0.0.1"

fg_config fastgateway-tls "$(free_port)" "$CATCH_ALL" \
    ", \"certificates\": [ { \"id\": \"bench\", \"chain\": \"$TMP/tls/cert.pem\", \"key\": \"$TMP/tls/key.pem\" } ]" \
    ', "tls": { "certificates": ["bench"], "sessionCache": 20000 }'
start_fg fastgateway-tls tls
if [ -n "${FG_BEFORE:-}" ]; then
    fg_config fastgateway-tls-before "$(free_port)" "$CATCH_ALL" \
        ", \"certificates\": [ { \"id\": \"bench\", \"chain\": \"$TMP/tls/cert.pem\", \"key\": \"$TMP/tls/key.pem\" } ]" \
        ', "tls": { "certificates": ["bench"], "sessionCache": 20000 }'
    start_fg fastgateway-tls-before tls "$FG_BEFORE"
fi

# The plaintext HTTP/1.1 variants (not with ONLY_H2).
if [ -z "$ONLY_H2" ]; then

# The same traffic with 999 other routes in front (literal prefixes, templates, hosts,
# methods): matching must not scan them (at least 90% of the 1-route throughput).
MANY=$(python3 -c '
import json
routes = []
for i in range(999):
    m = {"path": "/svc%d/{id}/items/{**rest}" % i}
    if i % 3 == 1:
        m["hosts"] = ["api%d.example.com" % i]
    if i % 3 == 2:
        m["methods"] = ["POST", "PUT"]
    routes.append(json.dumps({"id": "r%d" % i, "match": m, "clusterId": "up"}))
print(", ".join(routes))
')
fg_config fastgateway-1000-routes "$(free_port)" "$MANY, $CATCH_ALL"
start_fg fastgateway-1000-routes rps

# Two rate-limit rules on every request, limits never reached (at least 95% of the no-rule
# throughput), and a 100,000-entry blacklist that does not hold the client vs an empty one.
RULES=', "rateLimits": [
    { "id": "ip", "type": "SlidingWindow", "scope": "PerIp", "maxRequests": 1000000000, "window": "1s" },
    { "id": "all", "type": "TokenBucket", "scope": "Global", "maxRequests": 1000000000, "window": "1s" } ],
    "security": { "rateLimits": ["ip", "all"] }'
fg_config fastgateway-2-ratelimits "$(free_port)" "$CATCH_ALL" "$RULES"
start_fg fastgateway-2-ratelimits rps
fg_config fastgateway-acl-empty "$(free_port)" "$CATCH_ALL" \
    ', "accessControl": [ { "id": "bl", "type": "blacklist", "entries": [] } ]' \
    ', "accessControl": ["bl"]'
start_fg fastgateway-acl-empty rps
BIG=$(python3 -c '
import json
print(json.dumps(["10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255) for i in range(100000)]))
')
fg_config fastgateway-acl-100k "$(free_port)" "$CATCH_ALL" \
    ", \"accessControl\": [ { \"id\": \"bl\", \"type\": \"blacklist\", \"entries\": $BIG } ]" \
    ', "accessControl": ["bl"]'
start_fg fastgateway-acl-100k rps

# ---- nginx as proxy -------------------------------------------------------------------------
NG_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
{
    nginx_main "$TMP/nginx" "$NPROC" 4096
    cat <<EOF
http {
    access_log off;
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive $UP_IDLE;
    }
    server {
        listen 127.0.0.1:$NG_PORT backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx/nginx.conf"
start_peer nginx "$NG_PORT" full nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;'

# ---- HAProxy --------------------------------------------------------------------------------
HA_PORT=$(free_port)
mkdir -p "$TMP/haproxy"
haproxy_cfg "$NPROC" "$UP_PORT" "127.0.0.1:$HA_PORT" >"$TMP/haproxy/haproxy.cfg"
start_peer haproxy "$HA_PORT" full haproxy -db -f "$TMP/haproxy/haproxy.cfg"
fi # ONLY_H2

# ---- nginx and HAProxy terminating TLS --------------------------------------------------------
NGS_PORT=$(free_port)
mkdir -p "$TMP/nginx-tls/logs"
{
    nginx_main "$TMP/nginx-tls" "$NPROC" 4096
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000; # also HTTP/2's requests per connection (default 1000)
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive $UP_IDLE;
    }
    server {
        listen 127.0.0.1:$NGS_PORT ssl http2 backlog=4096;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx-tls/nginx.conf"
start_peer nginx-tls "$NGS_PORT" tls nginx -p "$TMP/nginx-tls" -c "$TMP/nginx-tls/nginx.conf" -g 'daemon off;'

HAS_PORT=$(free_port)
mkdir -p "$TMP/haproxy-tls"
haproxy_cfg "$NPROC" "$UP_PORT" "127.0.0.1:$HAS_PORT ssl crt $TMP/tls/bundle.pem alpn h2,http/1.1" \
    >"$TMP/haproxy-tls/haproxy.cfg"
start_peer haproxy-tls "$HAS_PORT" tls haproxy -db -f "$TMP/haproxy-tls/haproxy.cfg"

# ---- HTTP/2 ---------------------------------------------------------------------------------
# h2 by ALPN: the three TLS instances above (fastgateway offers h2 by default; nginx `listen ...
# ssl http2`, HAProxy `alpn h2,http/1.1`). h2c by prior knowledge: one more instance of each on a
# plaintext port (fastgateway `"http2": {"h2c": true}`, nginx `listen ... http2`, HAProxy
# `proto h2`), same workers, same upstream.
h2_alias fastgateway-h2 fastgateway-tls
[ -z "${FG_BEFORE:-}" ] || h2_alias fastgateway-h2-before fastgateway-tls-before
h2_alias nginx-h2 nginx-tls
h2_alias haproxy-h2 haproxy-tls

fg_config fastgateway-h2c "$(free_port)" "$CATCH_ALL" "" ', "http2": { "h2c": true }'
start_fg fastgateway-h2c h2c

NGC_PORT=$(free_port)
mkdir -p "$TMP/nginx-h2c/logs"
sed -e "s|$TMP/nginx-tls|$TMP/nginx-h2c|g" \
    -e "s|listen 127.0.0.1:$NGS_PORT ssl http2|listen 127.0.0.1:$NGC_PORT http2|" \
    -e '/ssl_/d' "$TMP/nginx-tls/nginx.conf" >"$TMP/nginx-h2c/nginx.conf"
start_peer nginx-h2c "$NGC_PORT" h2c nginx -p "$TMP/nginx-h2c" -c "$TMP/nginx-h2c/nginx.conf" -g 'daemon off;'

HAC_PORT=$(free_port)
mkdir -p "$TMP/haproxy-h2c"
sed -e "s|bind 127.0.0.1:$HAS_PORT .*|bind 127.0.0.1:$HAC_PORT proto h2|" \
    "$TMP/haproxy-tls/haproxy.cfg" >"$TMP/haproxy-h2c/haproxy.cfg"
start_peer haproxy-h2c "$HAC_PORT" h2c haproxy -db -f "$TMP/haproxy-h2c/haproxy.cfg"

# ---- tunnel: a route served through fastgateway-agent vs the same upstream proxied directly --
# The gateway (NPROC workers) takes the agent on a TLS server (acceptTunnels) and serves "/"
# through tunnel://bench/web; the agent reaches the upstream. Gateway and agent run in one
# process group, so CPU µs/req counts both. Measured as a `full` target beside `fastgateway`.
# The agent's VmRSS: idle once online, the peak sampled during the whole measurement, and after
# it settles. TUNNEL_BENCH=0 skips it.
AGENT=${AGENT:-$ROOT/fastgateway-agent}
AG_RSS_IDLE=- AG_RSS_PEAK=- AG_RSS_AFTER=- AG_PID=
# vmrss PID: its VmRSS in KiB, or "-" once it is gone (a zombie's status has no VmRSS line)
vmrss() {
    local r
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
    echo "${r:--}"
}
if [ -z "$ONLY_H2" ] && [ "${TUNNEL_BENCH:-1}" != 0 ] && [ -x "$AGENT" ]; then
    TN_PORT=$(free_port) TN_AGENT_PORT=$(free_port)
    mkdir -p "$TMP/tunnel"
    head -c 32 /dev/urandom | base64 >"$TMP/tunnel/bench.key"
    chmod 600 "$TMP/tunnel/bench.key"
    cat >"$TMP/tunnel/fastgateway.json" <<EOF
{
    "workers": $NPROC,
    "pidFile": "$TMP/tunnel/fastgateway.pid",
    "statusSocket": "$TMP/tunnel/status.sock",
    "log": { "errorLog": "$TMP/tunnel/error.log", "level": "warn", "accessLog": "off" },
    "certificates": [ { "id": "bench", "chain": "$TMP/tls/cert.pem", "key": "$TMP/tls/key.pem" } ],
    "tunnels": { "agents": [ { "id": "bench", "secretFile": "$TMP/tunnel/bench.key" } ] },
    "servers": [ { "id": "main", "listen": "127.0.0.1:$TN_PORT" },
                 { "id": "agents", "listen": "127.0.0.1:$TN_AGENT_PORT", "acceptTunnels": true,
                   "tls": { "certificates": ["bench"] } } ],
    "routes": [ { "id": "all", "servers": ["main"], "match": { "path": "/{**rest}" }, "clusterId": "tun" } ],
    "clusters": [ { "id": "tun", "destinations": [ { "id": "t1", "address": "tunnel://bench/web" } ] } ]
}
EOF
    cat >"$TMP/tunnel/agent.json" <<EOF
{
    "gateway": "wss://127.0.0.1:$TN_AGENT_PORT/_fg/tunnel",
    "id": "bench",
    "secretFile": "$TMP/tunnel/bench.key",
    "tls": { "ca": "$TMP/tls/cert.pem", "serverName": "localhost" },
    "services": { "web": "http://127.0.0.1:$UP_PORT" },
    "reconnect": { "initialMs": 100, "maxMs": 1000, "jitter": 0.2 },
    "log": { "level": "warn", "errorLog": "$TMP/tunnel/agent.log" }
}
EOF
    # one process group: the gateway in the background, the agent in place of the shell
    spawn "$TMP/tunnel.out" bash -c "\"$FG\" -f -c \"$TMP/tunnel/fastgateway.json\" &
        sleep 0.5; exec \"$AGENT\" -c \"$TMP/tunnel/agent.json\""
    AG_PID=$LAST_PID
    if wait_http "$TN_PORT" /; then
        target fastgateway-tunnel "$TN_PORT" full
        sleep 1
        AG_RSS_IDLE=$(vmrss "$AG_PID")
        (
            peak=0
            while kill -0 "$AG_PID" 2>/dev/null; do
                r=$(vmrss "$AG_PID")
                if [ "$r" != - ] && [ "$r" -gt "$peak" ]; then
                    peak=$r
                    echo "$peak" >"$TMP/tunnel/rss.peak"
                fi
                sleep 0.2
            done
        ) &
    else
        echo "bench: the tunnel did not serve:" >&2
        tail -5 "$TMP/tunnel.out" "$TMP/tunnel/error.log" "$TMP/tunnel/agent.log" >&2 2>/dev/null || true
        failed fastgateway-tunnel full
        AG_PID=
    fi
fi

measure_all
if [ -n "$AG_PID" ]; then
    AG_RSS_PEAK=$(cat "$TMP/tunnel/rss.peak" 2>/dev/null || echo -)
    sleep 6 # the agent gives idle memory back every 5 s
    AG_RSS_AFTER=$(vmrss "$AG_PID")
fi

# ---- report ---------------------------------------------------------------------------------
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2fx", a / b; else print "n/a" }'
}

table() {
    echo "| target | req/s | CPU µs/req | p50 ms | p99 ms | 256 MiB download GB/s | wrk errors |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    local n
    for n in "${NAMES[@]}"; do
        case ${MODE[$n]:-} in tls | h2 | h2c) continue ;; esac
        echo "| $n | ${RPS[$n]:-0} | ${CPU[$n]:--} | ${P50[$n]:-0} | ${P99[$n]:-0} | ${DL[$n]:-0} | ${ERRS[$n]:-none} |"
    done
    echo
    echo "| ratio | req/s | CPU per request (lower is better) | p99 latency (lower is better) | download |"
    echo "|---|---:|---:|---:|---:|"
    for n in nginx haproxy; do
        echo "| fastgateway/$n | $(ratio "${RPS[fastgateway]}" "${RPS[$n]}") |" \
            "$(ratio "${CPU[fastgateway]}" "${CPU[$n]}") |" \
            "$(ratio "${P99[fastgateway]}" "${P99[$n]}") |" \
            "$(ratio "${DL[fastgateway]}" "${DL[$n]}") |"
    done
    echo "| fastgateway 1,000 routes / 1 route | $(ratio "${RPS[fastgateway-1000-routes]}" "${RPS[fastgateway]}") | $(ratio "${CPU[fastgateway-1000-routes]}" "${CPU[fastgateway]}") | | |"
    echo "| fastgateway 2 rate limits / none | $(ratio "${RPS[fastgateway-2-ratelimits]}" "${RPS[fastgateway]}") | $(ratio "${CPU[fastgateway-2-ratelimits]}" "${CPU[fastgateway]}") | | |"
    echo "| fastgateway 100,000-entry blacklist / empty | $(ratio "${RPS[fastgateway-acl-100k]}" "${RPS[fastgateway-acl-empty]}") | $(ratio "${CPU[fastgateway-acl-100k]}" "${CPU[fastgateway]}") | | |"
    echo
    local verdict
    verdict=$(awk -v fr="${RPS[fastgateway]}" -v nr="${RPS[nginx]}" -v fp="${P99[fastgateway]}" \
        -v np="${P99[nginx]}" -v fd="${DL[fastgateway]}" -v hd="${DL[haproxy]}" 'BEGIN {
        ok = (fr > 0 && fr >= nr && fp <= np && fd >= hd)
        print ok ? "met" : "not met" }')
    echo "Target (req/s >= 1.0x nginx, p99 <= nginx, download >= 1.0x HAProxy): **$verdict**."
    tunnel_table
    tls_table
    h2_table
}

# The HTTP/2 rows: h2 (TLS, ALPN) and h2c for the three proxies, with the ratios and the targets.
h2_table() {
    echo
    echo "### HTTP/2"
    echo
    echo "h2load -t$THREADS -c$H2_CONNS -m$H2_STREAMS -D$H2_DURATION per round; p99 from h2load's per-request log."
    echo
    echo "| target | req/s | CPU µs/req | p99 ms | $BIGFILE_MB MiB download GB/s | h2load failures |"
    echo "|---|---:|---:|---:|---:|---|"
    local n p
    for n in fastgateway-h2 nginx-h2 haproxy-h2 fastgateway-h2c nginx-h2c haproxy-h2c; do
        echo "| $n | ${RPS[$n]:-0} | ${CPU[$n]:--} | ${P99[$n]:-0} | ${DL[$n]:-0} | ${ERRS[$n]:-none} |"
    done
    echo "| fastgateway-tls, HTTP/1.1 | | | | ${DL[fastgateway-tls]:-0} | |"
    if [ -n "${FG_BEFORE:-}" ]; then
        n=fastgateway-h2-before
        echo "| $n | ${RPS[$n]:-0} | ${CPU[$n]:--} | ${P99[$n]:-0} | ${DL[$n]:-0} | ${ERRS[$n]:-none} |"
        echo "| fastgateway-tls-before, HTTP/1.1 | | | | ${DL[fastgateway-tls-before]:-0} | |"
    fi
    echo
    echo "| ratio | req/s | CPU/req (lower is better) | p99 (lower is better) | download |"
    echo "|---|---:|---:|---:|---:|"
    for p in h2 h2c; do
        for n in nginx haproxy; do
            echo "| fastgateway/$n, $p | $(ratio "${RPS[fastgateway-$p]}" "${RPS[$n-$p]}") |" \
                "$(ratio "${CPU[fastgateway-$p]}" "${CPU[$n-$p]}") |" \
                "$(ratio "${P99[fastgateway-$p]}" "${P99[$n-$p]}") |" \
                "$(ratio "${DL[fastgateway-$p]}" "${DL[$n-$p]}") |"
        done
    done
    echo "| fastgateway h2 / HTTP/1.1 over TLS | | | | $(ratio "${DL[fastgateway-h2]}" "${DL[fastgateway-tls]}") |"
    echo
    local missed
    missed=$(awk -v fr="${RPS[fastgateway-h2]:-0}" -v hr="${RPS[haproxy-h2]:-0}" \
        -v fp="${P99[fastgateway-h2]:-0}" -v np="${P99[nginx-h2]:-0}" -v hp="${P99[haproxy-h2]:-0}" \
        -v fd="${DL[fastgateway-h2]:-0}" -v td="${DL[fastgateway-tls]:-0}" '
        BEGIN {
            m = ""
            if (!(fr + 0 > 0 && fr + 0 >= 1.1 * hr)) m = m " req/s,"
            b = (np + 0 > 0 && (hp + 0 == 0 || np + 0 < hp + 0)) ? np : hp
            if (!(fp + 0 > 0 && fp + 0 <= b + 0)) m = m " p99,"
            if (!(fd + 0 > 0 && fd + 0 >= 0.8 * td)) m = m " download,"
            sub(/,$/, "", m); print m }')
    local goal="HTTP/2 target (h2 req/s >= 1.1x HAProxy's, h2 p99 <= the better of nginx and HAProxy, h2 download >= 0.8x fastgateway's HTTP/1.1 over TLS)"
    if [ -z "$missed" ]; then
        echo "$goal: **met**."
    else
        echo "$goal: **not met** (${missed# })."
    fi
}

# The tunnel rows: fastgateway-tunnel against fastgateway (direct), and the agent's memory.
tunnel_table() {
    [ -n "${MODE[fastgateway-tunnel]:-}" ] || return 0
    echo
    echo "### Tunnel"
    echo
    echo "| ratio tunnel / direct | req/s | CPU/req (lower is better) | p99 (lower is better) | download |"
    echo "|---|---:|---:|---:|---:|"
    echo "| fastgateway-tunnel/fastgateway | $(ratio "${RPS[fastgateway-tunnel]}" "${RPS[fastgateway]}") |" \
        "$(ratio "${CPU[fastgateway-tunnel]}" "${CPU[fastgateway]}") |" \
        "$(ratio "${P99[fastgateway-tunnel]}" "${P99[fastgateway]}") |" \
        "$(ratio "${DL[fastgateway-tunnel]}" "${DL[fastgateway]}") |"
    echo
    echo "Agent VmRSS: ${AG_RSS_IDLE} KiB idle once online, ${AG_RSS_PEAK} KiB at the peak of the"
    echo "measurement, ${AG_RSS_AFTER} KiB after it settled."
    echo
    local missed
    missed=$(awk -v tr="${RPS[fastgateway-tunnel]:-0}" -v dr="${RPS[fastgateway]:-0}" \
        -v td="${DL[fastgateway-tunnel]:-0}" -v dd="${DL[fastgateway]:-0}" -v rss="$AG_RSS_IDLE" '
        BEGIN {
            m = ""
            if (!(tr + 0 > 0 && tr + 0 >= 0.8 * dr)) m = m " req/s,"
            if (!(td + 0 > 0 && td + 0 >= 0.8 * dd)) m = m " download,"
            if (!(rss + 0 > 0 && rss + 0 <= 8192)) m = m " agent idle RSS,"
            sub(/,$/, "", m); print m }')
    local goal="Tunnel target (req/s and download >= 0.8x direct, agent idle RSS <= 8 MiB)"
    if [ -z "$missed" ]; then
        echo "$goal: **met**."
    else
        echo "$goal: **not met** (${missed# })."
    fi
}

# The TLS rows: fastgateway-tls, nginx-tls and haproxy-tls with their ratios.
tls_table() {
    echo
    echo "### TLS"
    echo
    echo "| target | req/s | CPU µs/req | p50 ms | p99 ms | full handshakes/s | CPU µs/full | resumed handshakes/s | CPU µs/resumed | 256 MiB download GB/s | wrk errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local n
    local rows=(fastgateway-tls nginx-tls haproxy-tls)
    [ -z "${FG_BEFORE:-}" ] || rows+=(fastgateway-tls-before)
    for n in "${rows[@]}"; do
        echo "| $n | ${RPS[$n]:-0} | ${CPU[$n]:--} | ${P50[$n]:-0} | ${P99[$n]:-0} |" \
            "${HSN[$n]:-0} | ${HSNCPU[$n]:--} | ${HSR[$n]:-0} | ${HSRCPU[$n]:--} | ${DL[$n]:-0} | ${ERRS[$n]:-none} |"
    done
    echo
    echo "| ratio | req/s | CPU/req (lower is better) | p99 (lower is better) | full handshakes/s | CPU/full (lower is better) | resumed handshakes/s | CPU/resumed (lower is better) | download |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    local f=fastgateway-tls
    local others=(nginx-tls haproxy-tls)
    [ -z "${FG_BEFORE:-}" ] || others+=(fastgateway-tls-before)
    for n in "${others[@]}"; do
        local label=${n%-tls}
        echo "| fastgateway/${label#fastgateway-tls-} | $(ratio "${RPS[$f]}" "${RPS[$n]}") | $(ratio "${CPU[$f]}" "${CPU[$n]}") |" \
            "$(ratio "${P99[$f]}" "${P99[$n]}") | $(ratio "${HSN[$f]}" "${HSN[$n]}") |" \
            "$(ratio "${HSNCPU[$f]}" "${HSNCPU[$n]}") | $(ratio "${HSR[$f]}" "${HSR[$n]}") |" \
            "$(ratio "${HSRCPU[$f]}" "${HSRCPU[$n]}") | $(ratio "${DL[$f]}" "${DL[$n]}") |"
    done
    echo
    # Above the better of the two on each row: the higher req/s, handshakes/s and download, the
    # lower p99.
    local missed
    missed=$(awk -v fr="${RPS[$f]}" -v nr="${RPS[nginx-tls]}" -v hr="${RPS[haproxy-tls]}" \
        -v fp="${P99[$f]}" -v np="${P99[nginx-tls]}" -v hp="${P99[haproxy-tls]}" \
        -v fn="${HSN[$f]}" -v nn="${HSN[nginx-tls]}" -v hn="${HSN[haproxy-tls]}" \
        -v fs="${HSR[$f]}" -v ns="${HSR[nginx-tls]}" -v hs="${HSR[haproxy-tls]}" \
        -v fd="${DL[$f]}" -v nd="${DL[nginx-tls]}" -v hd="${DL[haproxy-tls]}" '
        function max(a, b) { return a + 0 > b + 0 ? a + 0 : b + 0 }
        function min(a, b) { return a + 0 < b + 0 ? a + 0 : b + 0 }
        BEGIN {
            m = ""
            if (!(fr + 0 > 0 && fr + 0 >= max(nr, hr))) m = m " req/s,"
            if (!(fp + 0 > 0 && fp + 0 <= min(np, hp))) m = m " p99,"
            if (!(fn + 0 >= max(nn, hn))) m = m " full handshakes,"
            if (!(fs + 0 >= max(ns, hs))) m = m " resumed handshakes,"
            if (!(fd + 0 >= max(nd, hd))) m = m " download,"
            sub(/,$/, "", m); print m }')
    if [ -z "$missed" ]; then
        echo "TLS target (each row at least the better of nginx and HAProxy): **met**."
    else
        echo "TLS target (each row at least the better of nginx and HAProxy): **not met** (${missed# })."
    fi
}

first_line() { "$@" 2>&1 | head -1 || true; }

if [ -n "$ONLY_H2" ]; then TABLE=$(h2_table); else TABLE=$(table); fi
echo
echo "$TABLE"

mkdir -p "$(dirname "$OUT")"
{
    echo "# Benchmarks"
    echo
    echo "Generated by \`make bench\` (scripts/bench.sh); every figure below comes from one run."
    echo "Loopback only: client, proxies and upstream share the machine, so the numbers compare"
    echo "the proxies with each other, not with a real network."
    echo
    echo "## Machine"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPUs: $NPROC ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
    echo "- memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- kernel: $(uname -srm)"
    echo "- load average before the run: $LOADAVG (other work on the machine skews the figures)"
    echo "- fastgateway: $(first_line "$FG" -v)"
    echo "- nginx: $(first_line nginx -v)"
    echo "- haproxy: $(first_line haproxy -v)"
    echo "- wrk: $(first_line wrk -v)"
    echo "- curl: $(first_line curl --version)"
    echo
    echo "## Method"
    echo
    echo "- upstream: nginx, $NPROC workers, \`return 200\` with a 12-byte body on \`/\`, and a"
    echo "  ${BIGFILE_MB} MiB file served with sendfile; its listener has \`reuseport\`, so the"
    echo "  connections of one proxy process spread over its workers (without it, a burst of"
    echo "  connections from one process, such as the tunnel agent's, lands on one worker)."
    echo "- fastgateway: $NPROC workers, one cluster route to the upstream, access log off,"
    echo "  \`keepAlive.maxIdleConnections: $UP_IDLE\`."
    echo "- nginx: $NPROC workers, \`proxy_pass\` to an upstream block with \`keepalive $UP_IDLE\`,"
    echo "  \`proxy_http_version 1.1\`, \`proxy_set_header Connection \"\"\`, access log off,"
    echo "  other settings default (proxy_buffering on)."
    echo "- HAProxy: \`nbthread $NPROC\`, \`mode http\`, \`http-reuse always\`."
    echo "- load: \`wrk -t$THREADS -c$CONNS -d$DURATION --latency\` on \`/\` (keep-alive). Every server"
    echo "  runs for the whole benchmark; after a $WARMUP warm-up of each, the targets are measured"
    echo "  in turn, $ROUNDS rounds, and each figure is the median of its rounds (req/s, p50, p99)."
    echo "- download: \`curl -o /dev/null\` of the file, best of 3 taken in turn, GB/s = 10^9 B/s."
    echo "- TLS: fastgateway, nginx and HAProxy each also run a second instance ($NPROC workers or"
    echo "  threads) that terminates TLS with one ECDSA P-256 certificate made by the script"
    echo "  (\`openssl req -x509 -newkey ec\`), in front of the same upstream. TLS 1.2 and 1.3, each"
    echo "  server's default ciphers and groups (TLS 1.3 with TLS_AES_256_GCM_SHA384 for these"
    echo "  clients), session tickets on and a session cache (fastgateway \`sessionCache: 20000\`"
    echo "  per worker, nginx \`ssl_session_cache shared:SSL:10m\`, HAProxy \`tune.ssl.cachesize"
    echo "  20000\`); HAProxy reads the certificate and key from one PEM bundle (\`ssl crt\`), nginx"
    echo "  from \`ssl_certificate\`/\`ssl_certificate_key\`."
    echo "  - keep-alive: the same wrk load as above for $TLS_DURATION against"
    echo "    \`https://127.0.0.1:PORT/\`, in the same rounds (wrk offers no ALPN; one handshake per"
    echo "    connection)."
    echo "  - handshakes: in each round, $HS_CLIENTS \`openssl s_time -new -www / -time $HS_TIME\` clients in"
    echo "    parallel (full handshakes), then $HS_CLIENTS \`openssl s_time -reuse -www / -time $HS_TIME\`"
    echo "    (resumed handshakes). Each connection is one handshake, one HTTP/1.0 \`GET /\` proxied"
    echo "    to the upstream and the close: s_time reads the TLS 1.3 ticket only with a response."
    echo "    Handshakes/s = all the clients' connections / wall time. Each client waits for its"
    echo "    own connection, so there are twice as many clients as workers; they share the CPUs"
    echo "    with the server, and most of a handshake's CPU is the client's: the rate says more"
    echo "    about the clients than about the server. The server's CPU µs per handshake (its"
    echo "    process group's user + sys time over the run / connections) is its own cost. Every"
    echo "    resumed TLS 1.3 handshake ends with a fresh ticket from all three servers (s_time"
    echo "    offers the first session's ticket each time). A full handshake ends with one ticket"
    echo "    from fastgateway (its default \`ticketsPerHandshake\`) and two from nginx and HAProxy"
    echo "    (OpenSSL's default)."
    echo "  - download: \`curl -k --http1.1 -o /dev/null\` of the same file over https, best of 3."
    echo "- HTTP/2: the three TLS instances also offer h2 by ALPN (fastgateway by default, nginx"
    echo "  \`listen ... ssl http2\` and \`keepalive_requests 1000000\`, HAProxy \`alpn h2,http/1.1\`);"
    echo "  a fourth instance of each, configured the same on a plaintext port, takes h2c by prior"
    echo "  knowledge (fastgateway \`\"http2\": {\"h2c\": true}\`, nginx \`listen ... http2\`, HAProxy"
    echo "  \`proto h2\`). In the same rounds: \`h2load -t$THREADS -c$H2_CONNS -m$H2_STREAMS -D $H2_DURATION --log-file\`"
    echo "  on \`/\` (req/s from h2load; p99 of the per-request times in its log; CPU µs/req as below),"
    echo "  and \`curl --http2\` (\`--http2-prior-knowledge\` for h2c) of the file, best of 3."
    if [ -n "${FG_BEFORE:-}" ]; then
        echo "  - fastgateway-tls-before: the same TLS target run by another build"
        echo "    (\`FG_BEFORE=$FG_BEFORE\`, $(first_line "$FG_BEFORE" -v)), measured in the same rounds."
    fi
    echo "- tunnel: fastgateway-tunnel is a gateway ($NPROC workers) whose route goes through"
    echo "  \`tunnel://bench/web\` to a fastgateway-agent on the same machine (TLS to the gateway's"
    echo "  acceptTunnels server, WebSocket, HTTP/2 inside), which proxies to the same upstream;"
    echo "  measured in the same rounds as fastgateway (direct), with the same wrk load and"
    echo "  download. Its CPU µs/req counts the gateway's and the agent's processes."
    echo "- CPU µs/req: user + sys time of all the target's processes (master and workers, or"
    echo "  nginx's, HAProxy's) read from /proc over each wrk run, divided by that run's requests;"
    echo "  median of the rounds. It does not depend on how busy the rest of the machine is the way"
    echo "  req/s does."
    echo "- WebSocket echo (scripts/ws-bench.py): fastgateway, nginx and HAProxy, one worker or"
    echo "  thread each, relay to one echo destination; client and destination are"
    echo "  scripts/ws-load.c (C, epoll, one process each): 50 WebSockets, 4 masked 64-byte"
    echo "  messages in flight on each, 5s per target, rounds in turn (8, each starting one row"
    echo "  further on, with every process of the measurement under SCHED_FIFO when run as root;"
    echo "  otherwise 3 at normal priority), medians and per-round ratios. Besides msgs/s"
    echo "  and the round-trip p50/p99, each row gives the proxy's CPU µs per echoed message (as"
    echo "  above; a message crosses the proxy twice) and the CPU share of the client and of the"
    echo "  destination (100 = one core): near 100, they and not the proxy set the rate."
    echo
    echo "## Results"
    echo
    echo "$TABLE"
} >"$OUT"
echo
echo "written to $OUT"

# ---- WebSocket echo (scripts/ws-bench.py): fastgateway vs nginx vs HAProxy vs direct ----------
# WS_BENCH=0 skips it; WS_BENCH_ARGS sets its options. As root the default is real-time
# scheduling for every process of the measurement over 8 rounds: a p99 of a few hundred µs is
# otherwise decided by the machine's run queue, not by the proxies. Its own processes and
# ports; its table goes to the terminal and the file.
if [ "${WS_BENCH:-1}" != 0 ] && command -v "${CC:-cc}" >/dev/null; then
    [ "$(id -u)" -ne 0 ] || WS_BENCH_ARGS=${WS_BENCH_ARGS---realtime --rounds 8}
    echo
    # shellcheck disable=SC2086 # WS_BENCH_ARGS is a list of options
    WS_TABLE=$(python3 "$(dirname "$0")/ws-bench.py" --fastgateway "$FG" ${WS_BENCH_ARGS:-} \
        2>/dev/null) || true
    printf '%s\n' "$WS_TABLE"
    { echo; echo "## WebSocket echo"; echo; echo '```'; printf '%s\n' "$WS_TABLE"; echo '```'; } >>"$OUT"
fi

# ---- memory of idle WebSockets (scripts/ws-mem.py): fastgateway vs nginx ---------------------
# WS_MEM_COUNT WebSockets (default 10,000; fewer when the descriptor limit cannot hold them).
if [ "${WS_BENCH:-1}" != 0 ] && python3 -c 'import asyncio' 2>/dev/null; then
    echo
    WS_MEM=$(python3 "$(dirname "$0")/ws-mem.py" --fastgateway "$FG" \
        --count "${WS_MEM_COUNT:-10000}" 2>/dev/null) || true
    printf '%s\n' "$WS_MEM"
    { echo; echo "## Idle WebSocket memory"; echo; echo '```'; printf '%s\n' "$WS_MEM"; echo '```'; } >>"$OUT"
fi
