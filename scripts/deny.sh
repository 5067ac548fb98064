#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, offline: advisories, bans, licenses
# and sources of the dependency tree, as deny.toml configures them, then a
# proof that the advisory check still bites.
#
#   scripts/deny.sh
#
# cargo-deny normally clones the RustSec advisory database; here it reads the
# snapshot committed in deny/advisory-db/ (see its README), so the check
# needs no network beyond crates.io and gives the same answer on every
# machine until the snapshot is refreshed. cargo-deny wants the database in
# a git checkout under the directory deny.toml names (db-path), in a
# subdirectory named after the database URL; the snapshot is copied into
# such a checkout under target/ first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "deny: $*" >&2; }

if ! cargo deny --version >/dev/null 2>&1; then
    log "installing cargo-deny"
    cargo install --locked cargo-deny
fi

# cargo-deny's directory for db-urls = ["https://github.com/rustsec/advisory-db"]:
# the URL's last segment and its 64-bit xxHash.
db_root=target/advisory-db
db="$db_root/advisory-db-3157b0e258782691"
snapshot=deny/advisory-db
stamp="$(find "$snapshot/crates" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
if [ "$(cat "$db/.snapshot" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$db"
    mkdir -p "$db"
    cp -R "$snapshot/crates" "$db/"
    git -C "$db" init -q
    git -C "$db" add crates
    git -C "$db" -c user.name=pgsni -c user.email=pgsni@localhost \
        commit -q -m "advisory-db snapshot" --no-gpg-sign
    echo "$stamp" >"$db/.snapshot"
fi

# A snapshot only knows the advisories published before it was taken.
taken="$(sed -n 's/^Taken: .*(\([0-9-]*\)).*/\1/p' "$snapshot/README.md")"
if [ -n "$taken" ] && [ "$(date -d "$taken + 90 days" +%s)" -lt "$(date +%s)" ]; then
    log "note: the advisory snapshot is from $taken; refresh it (see $snapshot/README.md)"
fi

# The project: every check, with the database as committed. --offline
# keeps cargo-deny from fetching the database, and cargo from the network,
# so the crates are fetched first.
cargo fetch --quiet
cargo deny --offline --log-level warn check --hide-inclusion-graph advisories bans licenses sources

# The proof: a throwaway crate that depends on smallvec 1.6.0, which has a
# known buffer overflow (RUSTSEC-2021-0003), must fail the advisory check with
# the project's own settings and database.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<'EOF'
[package]
name = "deny-canary"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
smallvec = "=1.6.0"

[workspace]
EOF
touch "$scratch/src/lib.rs"
(cd "$scratch" && cargo fetch --quiet)
# From here, so that deny.toml's db-path finds the same database.
if cargo deny --offline --log-level error --manifest-path "$scratch/Cargo.toml" \
    --config deny.toml check advisories >"$scratch/out" 2>&1; then
    log "cargo deny passed a crate with a known advisory:"
    cat "$scratch/out" >&2
    exit 1
fi
if ! grep -q 'RUSTSEC-2021-0003' "$scratch/out"; then
    log "cargo deny failed on the canary crate, but not for RUSTSEC-2021-0003:"
    cat "$scratch/out" >&2
    exit 1
fi
log "advisories, bans, licenses and sources pass; a known advisory (RUSTSEC-2021-0003) fails"
