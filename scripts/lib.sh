# Shared helpers of the measurement scripts (bench.sh, reload-reliability.sh, failover.sh).
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
