#!/bin/sh
# Installs every Debian package FastGateway's build, tests and benchmarks need.
# Idempotent: only missing packages are installed; when nothing is missing it does nothing
# (no apt-get update, no root needed). nginx and haproxy are only benchmark/comparison tools,
# and prometheus is only there for promtool (tests/integration/test_metrics.py): their Debian
# services are stopped so they never hold port 80, 9090 or any other port. chromium runs
# tests/integration/test_dashboard.py headless. pebble (an ACME test CA, with pebble-challtestsrv)
# is only run by tests/integration/test_acme.py, on free loopback ports; it has no service.
set -eu

PACKAGES="build-essential pkg-config clang libevent-dev libssl-dev libnghttp2-dev
libjansson-dev zlib1g-dev libcmocka-dev libclang-rt-14-dev python3 python3-pytest curl nghttp2-client wrk
nginx-light haproxy procps psmisc clang-format cppcheck socat systemd logrotate strace groff-base
man-db python3-cryptography openssl testssl.sh python3-h2 python3-grpcio nghttp2-server
prometheus python3-websockets chromium node-ws pebble"

missing=""
for p in $PACKAGES; do
    # dpkg -s succeeds for removed-but-configured packages too; require "install ok installed"
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing" >&2
    echo "install-deps: run as root (or: sudo apt-get install$missing)" >&2
    exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing

# Packages may have started their services (nginx on port 80): stop them.
stop_service() {
    name=$1
    pidfile=$2
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop "$name" >/dev/null 2>&1 || true
        systemctl disable "$name" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service "$name" stop >/dev/null 2>&1 || true
    fi
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
        case "$pid" in
        '' | *[!0-9]*) ;;
        *) kill "$pid" 2>/dev/null || true ;;
        esac
    fi
}
case "$missing" in
*nginx*) stop_service nginx /run/nginx.pid ;;
esac
case "$missing" in
*haproxy*) stop_service haproxy /run/haproxy.pid ;;
esac
case "$missing" in
*prometheus*) stop_service prometheus /run/prometheus/prometheus.pid ;;
esac
exit 0
