#!/usr/bin/env bash
# Memory one connection holds in a fastgateway worker, per state (idle keep-alive, reading a
# head, waiting for a destination, relaying a body), and nginx's for the idle and head states.
# Loopback only; every process it starts is stopped and its temporary directory removed.
# Method and arguments: scripts/connmem.py (e.g. `scripts/connmem.sh --idle 5000`).
# Not a test: the figures depend on the allocator and the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
# 5,000 connections need as many descriptors in this process and more in the servers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
exec python3 scripts/connmem.py "$@"
