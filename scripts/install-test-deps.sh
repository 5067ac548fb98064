#!/usr/bin/env bash
# Makes sure this machine has what pgsni's integration tests need:
#   - PostgreSQL server binaries (postgres, initdb, pg_ctl, pgbench), 15 on
#     Debian 12, found the way tests/common/postgres.rs finds them:
#     $PGSNI_PG_BINDIR, else /usr/lib/postgresql/15/bin, else pg_config --bindir
#   - the psql client on PATH
#   - a `postgres` OS user (the tests run the server as it when run as root)
#   - runuser (util-linux)
# Idempotent and quiet when everything is present; prints the bindir it found.
set -euo pipefail

log() { echo "install-test-deps: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

has_server() {
    local dir="$1"
    [ -n "$dir" ] && [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] &&
        [ -x "$dir/pgbench" ]
}

find_bindir() {
    if [ -n "${PGSNI_PG_BINDIR:-}" ]; then
        if has_server "$PGSNI_PG_BINDIR"; then
            echo "$PGSNI_PG_BINDIR"
            return 0
        fi
        log "PGSNI_PG_BINDIR=$PGSNI_PG_BINDIR lacks postgres/initdb/pg_ctl/pgbench"
        return 1
    fi
    if has_server /usr/lib/postgresql/15/bin; then
        echo /usr/lib/postgresql/15/bin
        return 0
    fi
    local dir
    if command -v pg_config >/dev/null 2>&1 && dir="$(pg_config --bindir 2>/dev/null)" &&
        has_server "$dir"; then
        echo "$dir"
        return 0
    fi
    # Debian installs one versioned directory per major version.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

bindir="$(find_bindir || true)"
if [ -z "$bindir" ] || ! command -v psql >/dev/null 2>&1; then
    if [ -n "${PGSNI_PG_BINDIR:-}" ] && [ -z "$bindir" ]; then
        log "fix or unset PGSNI_PG_BINDIR"
        exit 1
    fi
    # postgresql (server, with pgbench) and postgresql-client (psql). Keep the
    # package from starting its default cluster on 5432: the tests start
    # their own servers.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install postgresql postgresql-client
    bindir="$(find_bindir || true)"
fi
if [ -z "$bindir" ]; then
    log "no PostgreSQL server binaries found after installing; set PGSNI_PG_BINDIR"
    exit 1
fi
if ! command -v psql >/dev/null 2>&1; then
    log "psql is still not on PATH"
    exit 1
fi
if [ "$bindir" != /usr/lib/postgresql/15/bin ] && [ -z "${PGSNI_PG_BINDIR:-}" ]; then
    # The harness falls back to `pg_config --bindir`; make sure it agrees.
    cfg="$(pg_config --bindir 2>/dev/null || true)"
    if [ "$cfg" != "$bindir" ]; then
        log "note: export PGSNI_PG_BINDIR=$bindir for the tests (pg_config says '${cfg}')"
    fi
fi

if ! id -u postgres >/dev/null 2>&1; then
    log "creating the postgres OS user"
    "${SUDO[@]}" useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
        --shell /bin/bash postgres
fi

if ! command -v runuser >/dev/null 2>&1; then
    apt_install util-linux
fi

echo "PostgreSQL bindir: $bindir"
