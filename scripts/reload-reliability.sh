#!/usr/bin/env bash
# Reliability under load: what clients see while the gateway reloads or loses a worker.
#
#   phase 1: wrk -t2 -c$CONNS -d$DURATION keep-alive through fastgateway to an nginx upstream,
#            while $RELOADS SIGHUPs are sent to the master at $RATE per second;
#   phase 2: the same load, SIGKILL of the worker in slot 0; reports the errors and the time
#            until that slot has a new pid in state "ready" (polled on the status socket);
#   phase 3: phase 1 with nginx itself as the gateway (nginx -s reload), for comparison.
# Prints wrk's socket errors and non-2xx/3xx counts in a table. Exits non-zero only when the
# setup fails (a tool missing, a server not starting), never because of the figures.
#
# Knobs: DURATION (15s), CONNS (64), THREADS (2), RELOADS (50), RATE (5), FG (./fastgateway).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-15s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
RELOADS=${RELOADS:-50}
RATE=${RATE:-5}
FG=${FG:-$ROOT/fastgateway}
PATH=$PATH:/usr/sbin:/sbin

for tool in nginx wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "reload-reliability: $tool missing (make deps)" >&2; exit 1; }
done
[ -x "$FG" ] || { echo "reload-reliability: $FG not built (make)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/fg-reload.XXXXXX)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

ROOTUSER=""
[ "$(id -u)" -eq 0 ] && ROOTUSER="user root;"

# ---- upstream -------------------------------------------------------------------------------
UP_PORT=$(free_port)
mkdir -p "$TMP/upstream/logs"
cat >"$TMP/upstream/nginx.conf" <<EOF
$ROOTUSER
worker_processes auto;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        location / { default_type text/plain; return 200 "hello world\n"; }
    }
}
EOF
spawn "$TMP/upstream.out" nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;'
UP_PG=$LAST_PID
wait_http "$UP_PORT" || { echo "upstream nginx did not start" >&2; cat "$TMP/upstream.out" >&2; exit 1; }

# ---- gateway --------------------------------------------------------------------------------
GW_PORT=$(free_port)
SOCK=$TMP/fg/status.sock
mkdir -p "$TMP/fg"
cat >"$TMP/fg/fastgateway.json" <<EOF
{
    "workers": "auto",
    "pidFile": "$TMP/fg/fastgateway.pid",
    "statusSocket": "$SOCK",
    "log": { "errorLog": "$TMP/fg/error.log", "level": "notice", "accessLog": "off" },
    "servers": [ { "id": "main", "listen": "127.0.0.1:$GW_PORT" } ],
    "routes": [ { "id": "all", "match": { "path": "/{**rest}" }, "clusterId": "up" } ],
    "clusters": [ { "id": "up",
                    "destinations": [ { "id": "u1", "address": "http://127.0.0.1:$UP_PORT" } ] } ]
}
EOF
"$FG" -t -c "$TMP/fg/fastgateway.json" || exit 1
spawn "$TMP/fg.out" "$FG" -f -c "$TMP/fg/fastgateway.json"
FG_PID=$LAST_PID
wait_http "$GW_PORT" || { echo "fastgateway did not start" >&2; tail "$TMP/fg.out" "$TMP/fg/error.log" >&2; exit 1; }

declare -A REQS SOCKERR NON2XX NOTE
ROWS=()

# run_wrk NAME PORT: wrk in the background, output in $TMP/NAME.wrk
run_wrk() {
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$2/" >"$TMP/$1.wrk" 2>&1 &
    WRK_PID=$!
}

collect() {
    local name=$1 out
    wait "$WRK_PID" || true
    out=$(cat "$TMP/$name.wrk")
    ROWS+=("$name")
    REQS[$name]=$(echo "$out" | awk '/requests in/ { print $1 }')
    SOCKERR[$name]=$(echo "$out" | awk '/Socket errors/ { gsub(",", ""); printf "connect %s, read %s, write %s, timeout %s", $4, $6, $8, $10 }')
    SOCKERR[$name]=${SOCKERR[$name]:-0}
    NON2XX[$name]=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
    NON2XX[$name]=${NON2XX[$name]:-0}
}

send_reloads() { # send_reloads COMMAND...: runs it $RELOADS times at $RATE per second
    local i interval
    interval=$(awk -v r="$RATE" 'BEGIN { printf "%.3f", 1 / r }')
    for i in $(seq "$RELOADS"); do
        "$@" >/dev/null 2>&1 || echo "reload command failed: $*" >&2
        sleep "$interval"
    done
}

# ---- phase 1: reloads -----------------------------------------------------------------------
echo "== phase 1: $RELOADS x SIGHUP to fastgateway at $RATE/s under wrk -c$CONNS" >&2
before=$(fg_status "$SOCK" "show info")
run_wrk fg-reload "$GW_PORT"
sleep 1
send_reloads kill -HUP "$FG_PID"
collect fg-reload
after=$(fg_status "$SOCK" "show info")
NOTE[fg-reload]=$(python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("generation %d -> %d, reloads %d ok / %d failed" % (a["generation"], b["generation"],
      b["reloads"] - a["reloads"], b["reloadFailures"] - a["reloadFailures"]))' "$before" "$after")

# ---- phase 2: SIGKILL of a worker -----------------------------------------------------------
echo "== phase 2: SIGKILL of worker slot 0 under wrk -c$CONNS" >&2
for i in $(seq 100); do # let the last reload's old generation finish draining
    n=$(fg_status "$SOCK" "show workers" | python3 -c '
import json, sys; print(sum(1 for w in json.load(sys.stdin)["workers"] if w["state"] != "ready"))')
    [ "$n" = 0 ] && break
    sleep 0.1
done
run_wrk fg-kill "$GW_PORT"
sleep 3
NOTE[fg-kill]=$(python3 - "$SOCK" <<'EOF'
import json, os, signal, socket, sys, time
def workers():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(b"show workers\n")
    buf = b""
    while b"\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return json.loads(buf)["workers"]
victim = [w for w in workers() if w["slot"] == 0 and w["state"] == "ready"][0]
t0 = time.monotonic()
os.kill(victim["pid"], signal.SIGKILL)
while time.monotonic() - t0 < 10:
    for w in workers():
        if w["slot"] == 0 and w["pid"] != victim["pid"] and w["state"] == "ready":
            # Each keep-alive connection of wrk has one request in flight at most, so the
            # victim's open connections bound what the kill may cost.
            print("slot 0 (pid %d -> %d, %d connections open) ready again after %.0f ms"
                  % (victim["pid"], w["pid"], victim["connections"],
                     (time.monotonic() - t0) * 1000))
            sys.exit(0)
    time.sleep(0.005)
print("slot 0 NOT ready within 10 s")
EOF
)
collect fg-kill
stop_group "$FG_PID"

# ---- phase 3: nginx as the gateway ----------------------------------------------------------
echo "== phase 3: $RELOADS x nginx -s reload at $RATE/s under wrk -c$CONNS" >&2
NG_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
$ROOTUSER
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
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
NG_PG=$LAST_PID
wait_http "$NG_PORT" || { echo "nginx gateway did not start" >&2; cat "$TMP/nginx.out" >&2; exit 1; }
run_wrk nginx-reload "$NG_PORT"
sleep 1
send_reloads nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' -s reload
collect nginx-reload
NOTE[nginx-reload]="$(nginx -v 2>&1 | sed 's/.*: //')"
stop_group "$NG_PG"
stop_group "$UP_PG"

# ---- report ---------------------------------------------------------------------------------
label() {
    case $1 in
    fg-reload) echo "fastgateway, $RELOADS x SIGHUP" ;;
    fg-kill) echo "fastgateway, SIGKILL worker" ;;
    nginx-reload) echo "nginx, $RELOADS x -s reload" ;;
    esac
}
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION keep-alive, upstream nginx 12-byte body, $(nproc) CPUs"
echo
echo "| test | requests | socket errors | non-2xx/3xx | notes |"
echo "|---|---:|---|---:|---|"
for r in "${ROWS[@]}"; do
    echo "| $(label "$r") | ${REQS[$r]:-?} | ${SOCKERR[$r]} | ${NON2XX[$r]} | ${NOTE[$r]:-} |"
done
