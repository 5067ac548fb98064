#!/usr/bin/env bash
# Soak: proves with real parts (PostgreSQL 15 over TLS, pgbench, the release
# pgsni) that the broker does not fall over: 10 000 idle sessions, 1 000
# stallers, a reload storm and a garbage storm. See README.md ("Soak") and
# `benches/soak/run.sh --help`.
#
# This script makes sure the machine has what the soak needs (PostgreSQL
# server and client from Debian's packages, openssl, python3), builds pgsni
# and the two helper examples in release mode (into $CARGO_TARGET_DIR, or
# target/), raises the open-files soft limit to the hard one, then hands over
# to soak.py with all its arguments. soak.py owns every process it starts
# and stops them all on exit, failure, Ctrl-C or SIGTERM.
#
#   --no-build   use the binaries already in the target directory
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "soak: $*" >&2; }

build=1
args=()
previous=
for arg in "$@"; do
    case "$arg" in
    -h | --help) exec python3 benches/soak/soak.py --help ;;
    --no-build) build=0 ;;
    *) args+=("$arg") ;;
    esac
    # Build where soak.py will look for the binaries.
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

# PostgreSQL server (with pgbench) and psql, and the `postgres` OS user.
scripts/install-test-deps.sh >/dev/null

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# --- binaries ---------------------------------------------------------------

if [ "$build" -eq 1 ]; then
    log "cargo build --release (pgsni, examples tls_tenant and idle_clients)"
    "${CARGO:-cargo}" build --release --quiet --bin pgsni --example tls_tenant --example idle_clients
fi

# --- limits -----------------------------------------------------------------

# Each forwarding session costs pgsni two descriptors. The soft limit goes as
# high as the hard one; soak.py computes everything from what it gets (and
# splits the idle sessions over several pgsni processes on one port when one
# process cannot hold them).
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ]; then
    hard="$(cat /proc/sys/fs/nr_open)"
fi
ulimit -n "$hard"

# --- run ------------------------------------------------------------------

# soak.py runs as a child so that a SIGTERM or SIGHUP sent to this script
# reaches it and it can stop what it started. Ctrl-C reaches it directly from
# the terminal, so this script only has to outlast it.
python3 benches/soak/soak.py "${args[@]}" &
soak=$!
trap 'kill -TERM "$soak" 2>/dev/null || true' TERM HUP
trap ':' INT
status=0
wait "$soak" || status=$?
# `wait` returns early when a trapped signal arrives: wait for the clean-up.
while kill -0 "$soak" 2>/dev/null; do
    wait "$soak" || status=$?
done
exit "$status"
