#!/usr/bin/env bash
# Mutation testing of the crates whose tests must fail on a wrong
# implementation (docs/mutants.md has the scores and what stays missed).
# Too long for .ci/run: hours at one job on two cores.
#
# Usage: ci/mutants.sh [notifier|mm|mirror|all] [extra cargo-mutants args]
#   e.g. ci/mutants.sh mm --shard 1/4
# Results: mutants.out/<crate>/ (caught.txt, missed.txt, timeout.txt,
# unviable.txt), or under $MUTANTS_OUT if set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

crate="${1:-all}"
shift || true
case "$crate" in
  notifier|mm|mirror|all) ;;
  *) echo "usage: $0 [notifier|mm|mirror|all] [cargo-mutants args]" >&2; exit 2 ;;
esac
out="${MUTANTS_OUT:-mutants.out}"

bash ci/install-cargo-tools.sh mutants
# cargo-mutants builds in its own copy of the tree; a shared target dir
# would make every mutant rebuild the others' artifacts.
unset CARGO_TARGET_DIR
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

# -j 1: the machine is shared. --timeout: a mutant that makes a test block
# for ever is a TIMEOUT, not a hang; the real-thread tests' own bounds are
# shorter, so most such mutants already fail the test.
common=(-j 1 --profile mutants)

run() {
  local pkg="$1"; shift
  echo "=== cargo mutants -p $pkg ${common[*]} $*" >&2
  # Exit 2 means missed mutants and 3 timeouts: the score is the result, so
  # report it rather than stop; any other failure (baseline red) stops.
  local rc=0
  mkdir -p "$out/$pkg"
  cargo mutants -p "$pkg" "${common[@]}" --output "$out/$pkg" "$@" || rc=$?
  case "$rc" in 0|2|3) ;; *) exit "$rc" ;; esac
  for f in caught missed timeout unviable; do
    printf '%s %s: %s\n' "$pkg" "$f" "$(wc -l <"$out/$pkg/mutants.out/$f.txt")"
  done
}

# Each crate with its own tests (mm and notifier have direct tests for every
# rule they implement). The mirror is tested mostly through the harness.
if [[ "$crate" == notifier || "$crate" == all ]]; then run notifier --timeout 45 "$@"; fi
if [[ "$crate" == mm || "$crate" == all ]]; then run mm --timeout 45 "$@"; fi
# The mirror has few tests of its own: the harness's unit tests (the
# executor, the oracles' checks) and the corpus replay (every scenario and
# regression with its expect lines) are its tests. They take about 40 s
# unoptimized, hence the longer timeout; the harness's differential and
# soak tests would take minutes per mutant.
if [[ "$crate" == mirror || "$crate" == all ]]; then
  # `-p mirror` would also pick the package whose tests run: name the
  # files to mutate instead, and the package to test.
  echo "=== cargo mutants --file mirror/src ${common[*]} --test-package harness $*" >&2
  mkdir -p "$out/mirror"
  rc=0
  cargo mutants --file 'mirror/src/**/*.rs' "${common[@]}" --timeout 240 \
    --test-package harness --cargo-test-arg=--package=harness --output "$out/mirror" "$@" \
    -- --lib --test corpus || rc=$?
  case "$rc" in 0|2|3) ;; *) exit "$rc" ;; esac
  for f in caught missed timeout unviable; do
    printf 'mirror %s: %s\n' "$f" "$(wc -l <"$out/mirror/mutants.out/$f.txt")"
  done
fi
