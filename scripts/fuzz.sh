#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each for SECONDS (default 60),
# starting from the committed seeds and past crashes. Fails if any target
# crashes; crashing inputs are kept in fuzz/artifacts/<target>/ and printed
# in hex.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]
#
# Uses the nightly toolchain with AddressSanitizer when there is one, else the
# stable toolchain without a sanitizer. Installs cargo-fuzz if it is missing.
# The repository is left as it is: the corpus grows in a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift $(($# > 0 ? 1 : 0))
log() { echo "fuzz: $*" >&2; }

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly fuzz)
    sanitizer=()
else
    log "no nightly toolchain: fuzzing on stable, without a sanitizer"
    cargo=(cargo fuzz)
    sanitizer=(--sanitizer none)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

"${cargo[@]}" build "${sanitizer[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <("${cargo[@]}" list)
fi
failed=()
for target in "${targets[@]}"; do
    corpus="$scratch/corpus/$target"
    mkdir -p "$corpus" fuzz/artifacts/"$target"
    for dir in fuzz/seeds/"$target" fuzz/regressions/"$target"; do
        find "$dir" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' -exec cp {} "$corpus" \;
    done
    options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [ -f fuzz/dicts/"$target".dict ]; then
        options+=(-dict=fuzz/dicts/"$target".dict)
    fi

    log "$target: ${seconds}s from $(find "$corpus" -type f | wc -l) inputs"
    touch "$scratch/start"
    output="$scratch/$target.log"
    if "${cargo[@]}" run "${sanitizer[@]}" "$target" "$corpus" -- "${options[@]}" >"$output" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$output" | sed "s/^/fuzz: $target: /" >&2
        continue
    fi

    failed+=("$target")
    log "$target FAILED; the end of its output:"
    grep -v '^#[0-9]' "$output" | tail -n 60 >&2
    find fuzz/artifacts/"$target" -type f -newer "$scratch/start" | while read -r artifact; do
        log "crashing input kept in $artifact:"
        od -A x -t x1z -v "$artifact" | head -n 64 >&2
    done
done

if [ "${#failed[@]}" -gt 0 ]; then
    log "failed: ${failed[*]}"
    log "reproduce with: ${cargo[*]} run TARGET fuzz/artifacts/TARGET/FILE"
    exit 1
fi
log "all targets ran ${seconds}s without a crash"
