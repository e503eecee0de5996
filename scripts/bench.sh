#!/usr/bin/env bash
# `make bench`: fastgateway vs nginx vs HAProxy on loopback, in front of one nginx upstream.
#
# The upstream (nginx) answers GET / with a 12-byte body and serves a 256 MiB file. Each proxy
# runs in turn with as many workers/threads as CPUs and is measured with
#   wrk -t$THREADS -c$CONNS -d$DURATION --latency   (keep-alive req/s, p50, p99)
#   curl -o /dev/null of the 256 MiB file            (best of 3, GB/s = 1e9 bytes/s)
# and the CPU time (user + sys) that the target's processes spent during each wrk run, divided by
# the requests of that run: microseconds of CPU per request, steadier than req/s on a shared box.
# The upstream alone is measured the same way as the ceiling. The markdown table with the
# ratios fastgateway/nginx and fastgateway/haproxy is printed and written, with the machine
# description, to docs/benchmarks.md (OUT=... to write elsewhere).
#
# Every target is started first and measured in turn, ROUNDS times; medians are reported.
# Knobs: DURATION (10s), CONNS (64), THREADS (2), WARMUP (2s), ROUNDS (3), FG (./fastgateway),
#        OUT (docs/benchmarks.md), BIGFILE_MB (256).
# Not a test: the numbers depend on the machine and its load.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
FG=${FG:-$ROOT/fastgateway}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
BIGFILE_MB=${BIGFILE_MB:-256}
NPROC=$(nproc)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

for tool in nginx haproxy wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool not found (make deps)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/fg-bench.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

RUN_AS_ROOT=""
if [ "$(id -u)" -eq 0 ]; then
    RUN_AS_ROOT="user root;"
fi

# ---- upstream -------------------------------------------------------------------------------
UP_PORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/upstream/logs"
if ! fallocate -l "${BIGFILE_MB}M" "$TMP/www/big.bin" 2>/dev/null; then
    dd if=/dev/zero of="$TMP/www/big.bin" bs=1M count="$BIGFILE_MB" status=none
fi
BIG_BYTES=$((BIGFILE_MB * 1024 * 1024))

cat >"$TMP/upstream/nginx.conf" <<EOF
$RUN_AS_ROOT
worker_processes $NPROC;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        root $TMP/www;
        location = / { default_type text/plain; return 200 "hello world\n"; }
        location / { }
    }
}
EOF

spawn "$TMP/upstream.out" nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;'
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

declare -A RPS P50 P99 DL ERRS PORT MODE PGID CPU
NAMES=()
ROUNDS=${ROUNDS:-3}

# target NAME PORT MODE: measure NAME later (MODE full: req/s and download; rps: req/s only).
# The target's processes are the process group of the last `spawn`.
target() {
    NAMES+=("$1")
    PORT[$1]=$2
    MODE[$1]=$3
    PGID[$1]=$LAST_PID
}

# group_ticks PGID: user + sys clock ticks of every live process of the group. Field 2 (comm)
# may hold spaces, so fields are counted after its closing parenthesis.
group_ticks() {
    local f
    for f in /proc/[0-9]*/stat; do
        cat "$f" 2>/dev/null || true
    done | awk -v g="$1" '{
        s = substr($0, index($0, ") ") + 2); split(s, a, " ")
        if (a[3] == g) t += a[12] + a[13] } END { printf "%d", t }'
}
CLK_TCK=$(getconf CLK_TCK)

failed() {
    NAMES+=("$1")
    RPS[$1]=0 P50[$1]=0 P99[$1]=0 DL[$1]=0 ERRS[$1]="did not start"
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# Every server runs for the whole measurement, idle while another is measured, and the targets
# are measured in turn, ROUNDS times over: a slow moment of this shared machine then costs one
# sample of every target instead of all the samples of one. Reported: the median of the rounds.
measure_all() {
    local round n out
    declare -A runs p50s p99s cpus
    local t0 t1 reqs
    for n in "${NAMES[@]}"; do
        [ -n "${PORT[$n]:-}" ] || continue
        wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:${PORT[$n]}/" >/dev/null 2>&1 || true
    done
    for round in $(seq "$ROUNDS"); do
        for n in "${NAMES[@]}"; do
            [ -n "${PORT[$n]:-}" ] || continue
            echo "== round $round: $n (port ${PORT[$n]})" >&2
            t0=$(group_ticks "${PGID[$n]}")
            out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:${PORT[$n]}/" 2>&1) || true
            t1=$(group_ticks "${PGID[$n]}")
            reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
            cpus[$n]+=" $(awk -v a="$t0" -v b="$t1" -v r="${reqs:-0}" -v hz="$CLK_TCK" 'BEGIN {
                if (r > 0) printf "%.2f", (b - a) / hz / r * 1e6 }')"
            echo "$out" | grep -E "Requests/sec|99%|errors|Non-2xx" | sed 's/^/   /' >&2
            runs[$n]+=" $(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')"
            p50s[$n]+=" $(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")"
            p99s[$n]+=" $(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")"
            ERRS[$n]+=$(echo "$out" | awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s; ", $0 }')
        done
    done
    for n in "${NAMES[@]}"; do
        [ -n "${PORT[$n]:-}" ] || continue
        RPS[$n]=$(echo "${runs[$n]}" | median)
        CPU[$n]=$(echo "${cpus[$n]}" | median)
        P50[$n]=$(echo "${p50s[$n]}" | median)
        P99[$n]=$(echo "${p99s[$n]}" | median)
        DL[$n]="-"
    done
    # Downloads: best of 3, taken in turn as well.
    local i s code size speed
    for i in 1 2 3; do
        for n in "${NAMES[@]}"; do
            [ "${MODE[$n]:-}" = full ] || continue
            s=$(curl -s -o /dev/null -m 120 -w '%{http_code} %{size_download} %{speed_download}' \
                "http://127.0.0.1:${PORT[$n]}/big.bin" || true)
            read -r code size speed <<<"$s"
            if [ "${code:-0}" != 200 ] || [ "${size:-0}" != "$BIG_BYTES" ]; then
                echo "   $n download $i failed: $s" >&2
                continue
            fi
            DL[$n]=$(awk -v a="${DL[$n]}" -v b="$speed" 'BEGIN {
                b = b / 1e9; if (a == "-" || b > a + 0) printf "%.2f", b; else print a }')
        done
    done
}

target upstream "$UP_PORT" full

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
    "clusters": [ { "id": "up",
                    "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ]
    $top
}
EOF
}

# start_fg NAME MODE: start the gateway of $TMP/NAME and register it as a target.
start_fg() {
    local name=$1 mode=$2 port
    port=$(sed -n 's/.*"listen": "127.0.0.1:\([0-9]*\)".*/\1/p' "$TMP/$name/fastgateway.json")
    if [ -x "$FG" ] && "$FG" -t -c "$TMP/$name/fastgateway.json" >"$TMP/$name.test" 2>&1; then
        spawn "$TMP/$name.out" "$FG" -f -c "$TMP/$name/fastgateway.json"
        if wait_http "$port" /; then
            target "$name" "$port" "$mode"
            return 0
        fi
        echo "bench: $name did not serve:" >&2
        tail -5 "$TMP/$name.out" "$TMP/$name/error.log" >&2 2>/dev/null || true
    else
        echo "bench: $FG missing or config rejected: $(cat "$TMP/$name.test" 2>/dev/null)" >&2
    fi
    failed "$name"
}

CATCH_ALL='{ "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" }'
fg_config fastgateway "$(free_port)" "$CATCH_ALL"
start_fg fastgateway full

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
cat >"$TMP/nginx/nginx.conf" <<EOF
$RUN_AS_ROOT
worker_processes $NPROC;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
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
spawn "$TMP/nginx.out" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;'
NG_PGID=$LAST_PID
if wait_http "$NG_PORT" /; then
    target nginx "$NG_PORT" full
else
    cat "$TMP/nginx.out" "$TMP/nginx/logs/error.log" >&2 2>/dev/null || true
    failed nginx
fi

# ---- HAProxy --------------------------------------------------------------------------------
HA_PORT=$(free_port)
mkdir -p "$TMP/haproxy"
cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread $NPROC
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 75s
    http-reuse always

frontend fe
    bind 127.0.0.1:$HA_PORT
    default_backend be

backend be
    server u1 127.0.0.1:$UP_PORT
EOF
spawn "$TMP/haproxy.out" haproxy -db -f "$TMP/haproxy/haproxy.cfg"
HA_PGID=$LAST_PID
if wait_http "$HA_PORT" /; then
    target haproxy "$HA_PORT" full
else
    cat "$TMP/haproxy.out" >&2 2>/dev/null || true
    failed haproxy
fi

measure_all

# ---- report ---------------------------------------------------------------------------------
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2fx", a / b; else print "n/a" }'
}

table() {
    echo "| target | req/s | CPU µs/req | p50 ms | p99 ms | 256 MiB download GB/s | wrk errors |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    local n
    for n in "${NAMES[@]}"; do
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
}

first_line() { "$@" 2>&1 | head -1 || true; }

TABLE=$(table)
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
    echo "  ${BIGFILE_MB} MiB file served with sendfile."
    echo "- fastgateway: $NPROC workers, one cluster route to the upstream, access log off."
    echo "- nginx: $NPROC workers, \`proxy_pass\` to an upstream block with \`keepalive 64\`,"
    echo "  \`proxy_http_version 1.1\`, \`proxy_set_header Connection \"\"\`, access log off,"
    echo "  other settings default (proxy_buffering on)."
    echo "- HAProxy: \`nbthread $NPROC\`, \`mode http\`, \`http-reuse always\`."
    echo "- load: \`wrk -t$THREADS -c$CONNS -d$DURATION --latency\` on \`/\` (keep-alive). Every server"
    echo "  runs for the whole benchmark; after a $WARMUP warm-up of each, the targets are measured"
    echo "  in turn, $ROUNDS rounds, and each figure is the median of its rounds (req/s, p50, p99)."
    echo "- download: \`curl -o /dev/null\` of the file, best of 3 taken in turn, GB/s = 10^9 B/s."
    echo "- CPU µs/req: user + sys time of all the target's processes (master and workers, or"
    echo "  nginx's, HAProxy's) read from /proc over each wrk run, divided by that run's requests;"
    echo "  median of the rounds. It does not depend on how busy the rest of the machine is the way"
    echo "  req/s does."
    echo
    echo "## Results"
    echo
    echo "$TABLE"
} >"$OUT"
echo
echo "written to $OUT"
