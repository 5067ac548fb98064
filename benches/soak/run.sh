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

LOG_PREFIX=soak
source benches/common.sh

parse_args python3 benches/soak/soak.py --help -- "$@"
install_missing openssl=openssl python3=python3
build_binaries
raise_nofile
run_driver benches/soak/soak.py
