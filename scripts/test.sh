#!/usr/bin/env bash
# Runs the whole test suite: unit tests, protocol tests, and the end-to-end
# tests against real PostgreSQL servers (started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# The upgrade test hands connections from a closing listener to its
# SO_REUSEPORT successor, which needs the kernel to migrate queued requests.
if [ "$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null)" != 1 ]; then
    sysctl -qw net.ipv4.tcp_migrate_req=1 ||
        echo "warning: cannot set net.ipv4.tcp_migrate_req=1; the upgrade test will fail" >&2
fi

# The end-to-end tests already need the kernel data path (they run as root
# here); its unit tests must not pass untested either.
export PGSNI_REQUIRE_KERNEL_PATH=1

cargo test "$@"

# The attacker's-side tests once more against the release binary, the one
# that faces the internet (without arguments only: a filtered run is
# someone's quick check).
if [ "$#" -eq 0 ]; then
    cargo test --release --test edge_trust --test backend_trust
fi
