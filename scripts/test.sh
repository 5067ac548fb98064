#!/usr/bin/env bash
# Runs the whole test suite: unit tests, protocol tests, and the end-to-end
# tests against real PostgreSQL servers (started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo test "$@"
