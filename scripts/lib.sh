# Shared helpers of the measurement scripts (bench.sh, tls-bench.sh, callgrind.sh,
# tls-callgrind.sh, tunnel-ab.sh, reload-reliability.sh, failover.sh).
# Source it after `set -euo pipefail` and after setting TMP to a fresh directory: every process
# started with `spawn` runs in its own session and is killed, with its children, at exit.

PGIDS=()

lib_cleanup() {
    local pg
    for pg in "${PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
    sleep 0.3
    for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

# spawn LOG CMD...: start CMD in its own session; its pid (and process group) in LAST_PID.
spawn() {
    local log=$1
    shift
    setsid "$@" </dev/null >"$log" 2>&1 &
    LAST_PID=$!
    PGIDS+=("$LAST_PID")
}

# stop_group PGID: TERM the group, KILL it after 5 s.
stop_group() {
    local i
    kill -TERM -- "-$1" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 -- "-$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$1" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http PORT [PATH]: until http://127.0.0.1:PORT/PATH answers 200 (10 s at most).
wait_http() {
    local i
    for i in $(seq 100); do
        if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1${2:-/}" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (5 s at most).
wait_port() {
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# fg_status SOCKET COMMAND: the status socket's JSON answer on one line.
fg_status() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while b"\n" not in buf:
    d = s.recv(65536)
    if not d:
        break
    buf += d
print(buf.decode().strip())
PY
}

# ---- CPU and TLS handshakes of a target (bench.sh, tls-bench.sh) ------------------------------
# They read the callers' PGID[NAME] and PORT[NAME] arrays, TMP, HS_CLIENTS and HS_TIME.

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

# cpu_per T0 T1 COUNT: microseconds of CPU per unit from two group_ticks readings.
cpu_per() {
    awk -v a="$1" -v b="$2" -v r="${3:-0}" -v hz="$CLK_TCK" 'BEGIN {
        if (r > 0) printf "%.2f", (b - a) / hz / r * 1e6 }'
}

# handshakes NAME -new|-reuse: $HS_CLIENTS `openssl s_time` clients in parallel for HS_TIME
# seconds, each connection one handshake and one HTTP/1.0 GET / (s_time reads a TLS 1.3 ticket
# only when it reads a response); prints "RATE CPU_US" (handshakes/s, server CPU per handshake).
handshakes() {
    local n=$1 how=$2 i t0 t1 w0 w1 total=0 c
    local pids=()
    t0=$(group_ticks "${PGID[$n]}")
    w0=$(date +%s.%N)
    for i in $(seq "$HS_CLIENTS"); do
        openssl s_time -connect "127.0.0.1:${PORT[$n]}" "$how" -www / -time "$HS_TIME" \
            >"$TMP/s_time.$i" 2>&1 </dev/null &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    w1=$(date +%s.%N)
    t1=$(group_ticks "${PGID[$n]}")
    for i in $(seq "$HS_CLIENTS"); do
        # "N connections in 1.12s; ..." (the reuse run's line comes last)
        c=$(awk '/connections in .*s;/ { v = $1 } END { print v + 0 }' "$TMP/s_time.$i")
        if [ "$how" = -reuse ] && ! grep -q 'rrr' "$TMP/s_time.$i"; then
            echo "   $n: s_time -reuse resumed no session" >&2
            c=0
        fi
        total=$((total + c))
    done
    awk -v c="$total" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.0f ", c / (b - a) }'
    cpu_per "$t0" "$t1" "$total"
}

# ---- nginx and HAProxy peers and certificates (bench.sh, tls-bench.sh, callgrind.sh,
# tls-callgrind.sh, tunnel-ab.sh) -----------------------------------------------------------------

# nginx_main DIR WORKERS CONNS: the main and events sections of an nginx.conf whose pid file and
# error log are under DIR; as root, the workers stay root (they read files under $TMP).
nginx_main() {
    [ "$(id -u)" -ne 0 ] || echo "user root;"
    cat <<CONF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections $3; }
CONF
}

# nginx_hello DIR PORT WORKERS CONNS [WWW [TUNED]]: spawn an nginx (its files in DIR, its output
# in DIR.out, its process group in LAST_PID) on 127.0.0.1:PORT that answers GET / with
# "hello world\n" (12 bytes) and, given WWW, serves the files under WWW with sendfile. TUNED
# adds what the throughput runs set: tcp_nopush, a listen backlog of 4096, and reuseport (one
# socket per worker, so that a burst of connections from one client process, which nginx's
# shared socket hands mostly to one worker, spreads over the workers by the kernel's hash).
nginx_hello() {
    local dir=$1 workers=$3 conns=$4 www=${5:-} tuned=${6:-}
    local http="access_log off;" listen="127.0.0.1:$2" files=""
    if [ -n "$www" ]; then
        http+=" sendfile on;"
        files="root $www; location / { }"
    fi
    if [ -n "$tuned" ]; then
        http+=" tcp_nopush on;"
        listen+=" backlog=4096 reuseport"
    fi
    mkdir -p "$dir/logs"
    {
        nginx_main "$dir" "$workers" "$conns"
        cat <<CONF
http {
    $http keepalive_requests 1000000;
    server {
        listen $listen;
        location = / { default_type text/plain; return 200 "hello world\n"; }
        $files
    }
}
CONF
    } >"$dir/nginx.conf"
    spawn "$dir.out" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
}

# haproxy_cfg THREADS UP_PORT BIND: on stdout, the haproxy.cfg of HAProxy as a peer proxy: HTTP
# with keep-alive to the destination 127.0.0.1:UP_PORT, the frontend on BIND ("127.0.0.1:PORT",
# or "127.0.0.1:PORT ssl crt BUNDLE alpn h2,http/1.1"); TLS 1.2 at the least and a session cache
# of 20000 where it terminates TLS.
haproxy_cfg() {
    cat <<CONF
global
    nbthread $1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
    tune.ssl.cachesize 20000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 75s
    http-reuse always

frontend fe
    bind $3
    default_backend be

backend be
    server u1 127.0.0.1:$2
CONF
}

# self_signed DIR SAN: a throw-away ECDSA P-256 certificate for localhost with subjectAltName
# SAN: DIR/cert.pem, DIR/key.pem, and both in DIR/bundle.pem (HAProxy's `crt`).
self_signed() {
    mkdir -p "$1"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=$2" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>"$1/openssl.out"
    cat "$1/cert.pem" "$1/key.pem" >"$1/bundle.pem"
}
