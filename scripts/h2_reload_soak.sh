#!/bin/sh
# A hundred reloads (or $1) under h2load load with GOAWAY-aware HTTP/2 clients: every request a
# client sent must be answered (docs/http2.md "Graceful retirement"). Runs the integration test
# tests/integration/test_http2.py::test_goaway_on_reload_loses_nothing with more reloads.
set -e
cd "$(dirname "$0")/.."
FG_H2_RELOADS="${1:-100}" FG_TEST_TIMEOUT=600 exec /usr/bin/python3 -m pytest -q \
    tests/integration/test_http2.py::test_goaway_on_reload_loses_nothing
