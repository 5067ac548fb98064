#!/usr/bin/env bash
# Benchmark harness: PostgreSQL over TLS on loopback, direct vs through pgsni
# vs through HAProxy in TCP mode (the L4 baseline). See README.md
# ("Benchmarks") and `benches/pgbench/run.sh --help`.
#
# This script makes sure the machine has what the harness needs (Debian
# packages: PostgreSQL server + client, haproxy, gnuplot, openssl), builds
# pgsni and the two helper examples in release mode, raises the open-files
# limit, then hands over to harness.py with all its arguments. The harness
# owns every process it starts and stops them all on exit, failure, Ctrl-C or
# SIGTERM (and they die with it even if it is killed).
#
#   --no-build   use the binaries already in the target directory
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "pgbench-harness: $*" >&2; }

build=1
args=()
previous=
for arg in "$@"; do
    case "$arg" in
    -h | --help) exec python3 benches/pgbench/harness.py --help ;;
    --no-build) build=0 ;;
    *) args+=("$arg") ;;
    esac
    # Build where the harness will look for the binaries.
    case "$previous:$arg" in
    --target-dir:*) export CARGO_TARGET_DIR="$arg" ;;
    *:--target-dir=*) export CARGO_TARGET_DIR="${arg#--target-dir=}" ;;
    esac
    previous="$arg"
done

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# --- packages ---------------------------------------------------------------

# PostgreSQL server and psql, and the `postgres` OS user (the project's test
# dependency script does exactly that, and is quiet when all is present).
scripts/install-test-deps.sh >/dev/null

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    # Keep the haproxy package from starting its own service while it is
    # installed: a policy-rc.d that denies, only if there is none already,
    # and only ours is removed afterwards.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    log "apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if [ "$own_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi

# --- binaries ---------------------------------------------------------------

if [ "$build" -eq 1 ]; then
    log "cargo build --release (pgsni, examples tls_tenant and idle_clients)"
    cargo build --release --quiet --bin pgsni --example tls_tenant --example idle_clients
fi

# --- limits -----------------------------------------------------------------

# Each idle session costs a proxy two descriptors (client and backend side).
# Raise the soft limit as far as the hard limit allows; the harness lowers the
# session count (and says so) when even that is not enough.
hard="$(ulimit -Hn)"
want=200000
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || want="$hard"
fi
ulimit -n "$want"

# --- run ------------------------------------------------------------------

# The harness runs as a child so that a SIGTERM or SIGHUP sent to this script
# reaches it and it can stop what it started. Ctrl-C reaches it directly from
# the terminal, so this script only has to outlast it.
python3 benches/pgbench/harness.py "${args[@]}" &
harness=$!
trap 'kill -TERM "$harness" 2>/dev/null || true' TERM HUP
trap ':' INT
status=0
wait "$harness" || status=$?
# `wait` returns early when a trapped signal arrives: wait for the clean-up.
while kill -0 "$harness" 2>/dev/null; do
    wait "$harness" || status=$?
done
exit "$status"
