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

LOG_PREFIX=pgbench-harness
source benches/common.sh

parse_args python3 benches/pgbench/harness.py --help -- "$@"
install_missing haproxy=haproxy gnuplot=gnuplot-nox openssl=openssl python3=python3
build_binaries
raise_nofile
run_driver benches/pgbench/harness.py
