# Sourced by the benchmark harness (benches/pgbench/run.sh) and the soak
# (benches/soak/run.sh), run from the repository's root: both parse the same
# build options, install what the machine lacks from
# Debian's packages, build the release binaries, raise the open-files limit
# and run a Python driver that owns every process it starts.

log() { echo "$LOG_PREFIX: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# parse_args HELP_COMMAND... -- ARGS...: sets `build` (0 after --no-build)
# and `args` (everything else, for the driver), exports CARGO_TARGET_DIR
# when --target-dir is given so that the build lands where the driver looks,
# and runs HELP_COMMAND for -h/--help.
parse_args() {
    local help=()
    while [ "$1" != -- ]; do
        help+=("$1")
        shift
    done
    shift
    build=1
    args=()
    local previous= arg
    for arg in "$@"; do
        case "$arg" in
        -h | --help) exec "${help[@]}" ;;
        --no-build) build=0 ;;
        *) args+=("$arg") ;;
        esac
        case "$previous:$arg" in
        --target-dir:*) export CARGO_TARGET_DIR="$arg" ;;
        *:--target-dir=*) export CARGO_TARGET_DIR="${arg#--target-dir=}" ;;
        esac
        previous="$arg"
    done
}

# install_missing COMMAND=PACKAGE...: PostgreSQL (the project's test
# dependency script, quiet when all is present), then each package whose
# command is missing.
install_missing() {
    scripts/install-test-deps.sh >/dev/null
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    # Keep packages such as haproxy from starting their own service while
    # they are installed: a policy-rc.d that denies, only if there is none
    # already, and only ours is removed afterwards.
    local own_policy=0
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
}

# build_binaries: pgsni and the two helper examples, in release mode,
# unless --no-build was given.
build_binaries() {
    if [ "$build" -eq 1 ]; then
        log "cargo build --release (pgsni, examples tls_tenant and idle_clients)"
        "${CARGO:-cargo}" build --release --quiet --bin pgsni --example tls_tenant --example idle_clients
    fi
}

# raise_nofile: the open-files limit raised for tens of thousands of
# sessions (each costs a proxy two descriptors): the hard limit to 200 000
# where the process may raise it, the soft one to the hard one. The drivers
# read what they got and size their runs from it.
raise_nofile() {
    local hard want=200000
    hard="$(ulimit -Hn)"
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
        ulimit -Hn "$want" 2>/dev/null && hard="$want"
    fi
    if [ "$hard" = unlimited ]; then
        hard="$(cat /proc/sys/fs/nr_open)"
    fi
    ulimit -n "$hard"
}

# run_driver SCRIPT: runs the Python driver with `args` as a child, so that a
# SIGTERM or SIGHUP sent to this script reaches it and it can stop what it
# started. Ctrl-C reaches it directly from the terminal, so this script only
# has to outlast it. Exits with the driver's status.
run_driver() {
    python3 "$1" "${args[@]}" &
    driver=$!
    trap 'kill -TERM "$driver" 2>/dev/null || true' TERM HUP
    trap ':' INT
    local status=0
    wait "$driver" || status=$?
    # `wait` returns early when a trapped signal arrives: wait for the clean-up.
    while kill -0 "$driver" 2>/dev/null; do
        wait "$driver" || status=$?
    done
    exit "$status"
}
