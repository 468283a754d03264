#!/usr/bin/env bash
# Runs every fuzz target on every engine within one time budget, one run
# after another (the machine has two shared cores), and ends with one
# aggregate status line. Fails if any run finds something or does not run.
#
# Usage: ci/fuzz-all.sh [BUDGET_SECONDS]        (default: $FUZZ_ALL_BUDGET or 600)
# Env:   FUZZ_ALL_TARGETS  targets (default: "notifier mirror threads")
#        FUZZ_ALL_ENGINES  engines (default: "builtin libfuzzer afl honggfuzz")
#        FUZZ_ALL_KEEP=1   keep the logs even when every run is clean
#
# The budget covers everything: first the builds of every engine, then the
# runs. What is left after the builds is shared out run by run: each run gets
# an equal part of the time still left, less the start-up and shut-down time
# that runs of that engine have taken so far (seed loading, AFL++'s
# calibration, ...). The built-in engine runs as
#   cargo run --release -p harness --bin mnfuzz -- fuzz --target T --seconds S --no-progress
# (findings go to the log folder, not to corpus/regressions); the external
# engines through `SMOKE_TARGET=T SMOKE_SECONDS=S ci/engine-smoke.sh ENGINE`,
# on a copy of the seed corpus. The external engines come from
# ci/install-fuzzers.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
budget="${1:-${FUZZ_ALL_BUDGET:-600}}"
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [BUDGET_SECONDS]" >&2; exit 2; }
read -r -a targets <<<"${FUZZ_ALL_TARGETS:-notifier mirror threads}"
read -r -a engines <<<"${FUZZ_ALL_ENGINES:-builtin libfuzzer afl honggfuzz}"
for e in "${engines[@]}"; do
  case "$e" in
    builtin|libfuzzer|afl|honggfuzz) ;;
    *) echo "unknown engine '$e' (builtin libfuzzer afl honggfuzz)" >&2; exit 2 ;;
  esac
done
for t in "${targets[@]}"; do
  case "$t" in
    notifier|mirror|threads) ;;
    *) echo "unknown target '$t' (notifier mirror threads)" >&2; exit 2 ;;
  esac
done
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

started=$SECONDS
deadline=$((started + budget))
log() { echo "fuzz-all: [$((SECONDS - started))s] $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-all.XXXXXX")"
problems=()
cleanup() {
  if ((${#problems[@]})) || [[ "${FUZZ_ALL_KEEP:-}" == 1 ]]; then
    echo "fuzz-all: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# --- builds (the same commands and flags as ci/engine-smoke.sh, whose own
# builds are then no-ops) -----------------------------------------------------
declare -A broken=()
build() {
  local e="$1" rc=0
  case "$e" in
    builtin) cargo build --release -q -p harness --bin mnfuzz ;;
    libfuzzer) (cd fuzz && cargo fuzz build -s none -a) ;;
    afl) (cd fuzz/afl && cargo afl build --release) ;;
    honggfuzz) (cd fuzz/hfuzz && HFUZZ_BUILD_ARGS="" cargo hfuzz build) ;;
  esac >"$work/build-$e.log" 2>&1 || rc=$?
  if ((rc != 0)); then
    tail -n 30 "$work/build-$e.log" >&2
    log "$e: build failed (is it installed? ci/install-fuzzers.sh)"
    broken[$e]=1
  fi
}
for e in "${engines[@]}"; do
  log "$e: build"
  build "$e"
done

# --- runs ----------------------------------------------------------------
runs=()
for t in "${targets[@]}"; do
  for e in "${engines[@]}"; do runs+=("$e/$t"); done
done
# Seconds a run takes beyond its fuzzing time, by engine: a first guess,
# then what the last run of that engine took, plus one.
declare -A overhead=([builtin]=2 [libfuzzer]=3 [afl]=8 [honggfuzz]=4)
min_secs=2
need=0
for r in "${runs[@]}"; do need=$((need + overhead[${r%/*}] + min_secs)); done
if ((deadline - SECONDS < need)); then
  log "budget too small: ${#runs[@]} runs need about ${need}s more, $((deadline - SECONDS))s left after the builds"
  echo "fuzz-all: FAIL: budget of ${budget}s too small for ${#runs[@]} runs"
  problems+=(budget)
  exit 1
fi

results=()
clean=0
for i in "${!runs[@]}"; do
  r="${runs[$i]}" e="${runs[$i]%/*}" t="${runs[$i]#*/}"
  if [[ -n "${broken[$e]:-}" ]]; then
    results+=("$r: not run (build failed)")
    problems+=("$r: build failed")
    continue
  fi
  # Equal share of what is left, after the start-up time of the runs to come.
  left=$((deadline - SECONDS)) later=0
  for r2 in "${runs[@]:i}"; do later=$((later + overhead[${r2%/*}])); done
  secs=$(((left - later) / (${#runs[@]} - i)))
  ((secs >= min_secs)) || secs=$min_secs
  runlog="$work/$e-$t.log"
  log "$r: ${secs}s"
  t0=$SECONDS rc=0
  if [[ "$e" == builtin ]]; then
    cargo run --release -q -p harness --bin mnfuzz -- fuzz --target "$t" --seconds "$secs" \
      --no-progress --regressions "$work/regressions/$t" </dev/null >"$runlog" 2>&1 || rc=$?
    speed="$(sed -n 's/.* execs_per_sec=\([0-9]*\).*/\1/p' "$runlog" | tail -n 1)"
  else
    SMOKE_TARGET="$t" SMOKE_SECONDS="$secs" bash ci/engine-smoke.sh "$e" </dev/null >"$runlog" 2>&1 || rc=$?
    speed="$(sed -n "s/^engine=$e target=$t execs_per_sec=\([0-9]*\).*/\1/p" "$runlog" | tail -n 1)"
  fi
  took=$((SECONDS - t0))
  # +1: SECONDS counts whole seconds; err on the side of finishing early.
  overhead[$e]=$(((took > secs ? took - secs : 0) + 1))
  if ((rc == 0)) && [[ -n "$speed" ]]; then
    what="clean"
    clean=$((clean + 1))
  else
    if grep -q -e 'FINDING' -e 'result=divergence' -e 'divergence after' "$runlog"; then
      what="FINDING"
    else
      what="FAILED (exit $rc)"
    fi
    problems+=("$r: $what")
    tail -n 60 "$runlog" >&2
  fi
  line="$r: $what, ${secs}s fuzzing, ${speed:-?} execs/s (${took}s in all)"
  results+=("$line")
  log "$line"
done

total=$((SECONDS - started))
echo "fuzz-all: runs (log folder: $work):" >&2
printf '  %s\n' "${results[@]}" >&2
if ((${#problems[@]})); then
  joined="$(printf '%s; ' "${problems[@]}")"
  echo "fuzz-all: FAIL: $clean/${#runs[@]} runs clean; ${joined%; }; ${total}s of ${budget}s budget"
  exit 1
fi
echo "fuzz-all: PASS: ${#runs[@]}/${#runs[@]} runs clean (${#targets[@]} target(s) x ${#engines[@]} engine(s): ${engines[*]}); ${total}s of ${budget}s budget"
