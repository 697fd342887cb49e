#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of the service's input decoders (fuzz/, cargo-fuzz
# with libFuzzer and AddressSanitizer on nightly Rust).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    # default: 60 s for each target in fuzz/Cargo.toml
#
# Installs the pinned cargo-fuzz and nightly if missing (scripts/lib/test-tools.sh),
# builds every target once, then runs each for SECONDS from its seed corpus
# fuzz/corpus/<target>/ (kept in the repository, read-only here: new inputs go to
# fuzz/work/<target>/, ignored by git). Fails on the first crash, panic, leak or
# input slower than 10 s; the reproducer is left in fuzz/artifacts/<target>/:
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# A crash becomes a regression unit test in crates/products-service before it is fixed.
# FUZZ_TARGET_DIR (default ~/.cache/products-stack/fuzz-target) keeps the build between runs.
# FUZZ_BUILD_ARGS passes options to `cargo fuzz build/run`, e.g. "--dev" (debug profile:
# a much shorter cold build, fewer executions per second) or "--sanitizer none".
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/stack-lib.sh
source "$SCRIPT_DIR/lib/stack-lib.sh"
# shellcheck source=lib/test-tools.sh
source "$SCRIPT_DIR/lib/test-tools.sh"
log() { printf '[fuzz] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

seconds="${1:-60}"
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(( $# > 0 ? 1 : 0 ))
cd "$REPO"

ensure_cargo_fuzz
read -r -a build_args <<<"${FUZZ_BUILD_ARGS:-}"
# The instrumented build takes ~18 min cold on 2 cores (one codegen unit, every
# dependency of the service), so its target dir lives in the machine's cache, not
# in the clone: CI on a warm machine rebuilds only the project's own crates.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
fuzz() { local sub=$1; shift; cargo "+$FUZZ_TOOLCHAIN" fuzz "$sub" --target-dir "$FUZZ_TARGET_DIR" "${build_args[@]}" "$@"; }

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo "+$FUZZ_TOOLCHAIN" fuzz list)
fi

started=$(date +%s)
log "building ${targets[*]} ($(rustup run "$FUZZ_TOOLCHAIN" rustc --version))"
fuzz build
log "built in $(( $(date +%s) - started )) s"

mkdir -p fuzz/work
summary=()
for target in "${targets[@]}"; do
  [[ -d fuzz/corpus/$target ]] || die "no seed corpus fuzz/corpus/$target"
  mkdir -p "fuzz/work/$target"
  out="fuzz/work/$target.log"
  log "$target: ${seconds} s from $(ls "fuzz/corpus/$target" | wc -l) seeds"
  if ! fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
       -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$out" 2>&1; then
    tail -60 "$out" >&2
    die "$target: crash found — reproducer in fuzz/artifacts/$target/ (full log: $out)"
  fi
  runs=$(awk '/stat::number_of_executed_units/{print $2}' "$out")
  rate=$(grep -oE 'exec/s: [0-9]+' "$out" | tail -1 | awk '{print $2}')
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$out" | tail -1)
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out" | tail -1)
  summary+=("$(printf '%-14s %9s runs  %6s exec/s  %s  %s' "$target" "$runs" "$rate" "$cov" "$corpus")")
done
log "no crashes in $(( $(date +%s) - started )) s:"
printf '  %s\n' "${summary[@]}" >&2
