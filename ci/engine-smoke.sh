#!/usr/bin/env bash
# Short, bounded run of each external fuzzing engine on one target
# (SMOKE_TARGET: notifier, the default, mirror or threads).
# Fails on any finding (crash, divergence panic, timeout) or if an engine did not run.
#
# Usage: ci/engine-smoke.sh [libfuzzer|afl|honggfuzz|all]      (default: all)
# Env:   SMOKE_TARGET    notifier (default), mirror or threads
#        SMOKE_SECONDS   fuzzing time per engine (default 25)
#        SMOKE_TIMEOUT   seconds one input may run before it counts as a hang (default 10)
#        SMOKE_KEEP=1    keep the temp work dir even when all engines pass
#        SMOKE_FEATURES  cargo features for the entry points, e.g. planted-bugs
#                        (needed for MNFUZZ_PLANTED_BUG=<name> to be accepted)
# Needs the tools from ci/install-fuzzers.sh. Builds into the git-ignored target
# dirs under fuzz/, fuzzes in a temp dir, so the seed corpus is never modified.
set -euo pipefail

SMOKE_SECONDS="${SMOKE_SECONDS:-25}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-10}"
TARGET="${SMOKE_TARGET:-notifier}"
case "$TARGET" in
  notifier|mirror|threads) ;;
  *) echo "SMOKE_TARGET must be notifier, mirror or threads" >&2; exit 2 ;;
esac
features=()
if [[ -n "${SMOKE_FEATURES:-}" ]]; then features=(--features "$SMOKE_FEATURES"); fi
# 2 shared cores: one rustc job, one fuzzing process per engine.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seeds="$root/corpus/$TARGET"

engine="${1:-all}"
case "$engine" in
  all) engines=(libfuzzer afl honggfuzz) ;;
  libfuzzer|afl|honggfuzz) engines=("$engine") ;;
  *) echo "usage: $0 [libfuzzer|afl|honggfuzz|all]" >&2; exit 2 ;;
esac
[[ "$SMOKE_SECONDS" =~ ^[1-9][0-9]*$ ]] || { echo "SMOKE_SECONDS must be a positive integer" >&2; exit 2; }
# A harness built without planted-bugs exits on MNFUZZ_PLANTED_BUG; libFuzzer reports
# that, but AFL++ and honggfuzz would count the exits as clean runs and pass.
if [[ -n "${MNFUZZ_PLANTED_BUG:-}" && ! "${SMOKE_FEATURES:-}" =~ (^|[ ,])planted-bugs([ ,]|$) ]]; then
  echo "MNFUZZ_PLANTED_BUG is set: also set SMOKE_FEATURES=planted-bugs" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/engine-smoke.XXXXXX")"
failed=()
cleanup() {
  if ((${#failed[@]})) || [[ "${SMOKE_KEEP:-}" == 1 ]]; then
    echo "engine-smoke: work dir kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

log() { echo "engine-smoke: $*" >&2; }

# Fresh copy of the seed corpus per engine, as flat files (engines differ on subdirs).
# AFL++ refuses an empty input dir, so an empty corpus gets one neutral seed.
make_corpus() {
  local dir="$1" n=0 f
  mkdir -p "$dir"
  if [[ -d "$seeds" ]]; then
    while IFS= read -r -d '' f; do
      cp -- "$f" "$dir/seed-$((n++))-$(basename -- "$f")"
    done < <(find "$seeds" -type f -size +0 -print0)
  fi
  if ((n == 0)); then
    printf '\0' > "$dir/seed-empty-corpus"
  fi
  log "corpus: $n seed file(s) from ${seeds#"$root"/}"
}

# Print findings so they survive in the CI log even after the machine is gone:
# the smallest few, whole as base64 when small enough to paste back.
show_findings() {
  local f size sorted=()
  echo "---- $# finding(s); smallest first" >&2
  mapfile -t sorted < <(ls -Sr -- "$@")
  for f in "${sorted[@]:0:5}"; do
    size="$(stat -c %s "$f")"
    echo "---- finding: $f ($size bytes)" >&2
    if ((size <= 4096)); then
      echo "base64: $(base64 -w0 <"$f")" >&2
    else
      head -c 256 "$f" | od -A x -t x1z -v >&2
    fi
  done
  echo "---- reproduce: base64 -d <<<'...' >crash; cd fuzz && ${MNFUZZ_PLANTED_BUG:+MNFUZZ_PLANTED_BUG=$MNFUZZ_PLANTED_BUG }cargo fuzz run -s none -a ${features[*]} $TARGET ../crash" >&2
}

report_speed() {
  echo "engine=$1 target=$TARGET execs_per_sec=$2"
}

# Engines log a line per new coverage: show only the end on success. On failure
# show the harness's panic report from its start, then the engine's last words.
show_log() {
  local clean="$1.clean" at total
  sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$1" | grep -v 'Fuzzing test case' >"$clean" || true
  at="$(grep -n -m1 'panicked at' "$clean" | cut -d: -f1 || true)"
  total="$(wc -l <"$clean")"
  if [[ "$2" == fail && -n "$at" ]]; then
    tail -n "+$at" "$clean" | head -n 100 >&2
    if ((total - at >= 100)); then
      echo "[...]" >&2
      tail -n 20 "$clean" >&2
    fi
  elif [[ "$2" == fail ]]; then
    tail -n 80 "$clean" >&2
  else
    tail -n 15 "$clean" >&2
  fi
}

run_libfuzzer() {
  local dir="$work/libfuzzer" rc=0
  make_corpus "$dir/corpus"
  mkdir -p "$dir/artifacts"
  cd "$root/fuzz"
  # -s none: sanitizers need nightly (-Zsanitizer). -a: keep debug_assert!/overflow checks,
  # which cargo-fuzz's release build would otherwise drop.
  log "libfuzzer: build"
  cargo fuzz build -s none -a "${features[@]}" "$TARGET" || { log "libfuzzer: build failed"; return 1; }
  log "libfuzzer: fuzzing ${SMOKE_SECONDS}s"
  cargo fuzz run -s none -a "${features[@]}" "$TARGET" "$dir/corpus" -- \
    -max_total_time="$SMOKE_SECONDS" -timeout="$SMOKE_TIMEOUT" \
    -artifact_prefix="$dir/artifacts/" -print_final_stats=1 \
    </dev/null >"$dir/log" 2>&1 || rc=$?
  local found=()
  mapfile -t found < <(find "$dir/artifacts" -type f)
  local speed units
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)"
  # libFuzzer reports 0 when it stops within its first second (an early crash).
  if [[ "$speed" == 0 ]]; then
    units="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)"
    speed="${units:-0}"
  fi
  if ((${#found[@]})) || ((rc != 0)) || [[ -z "$speed" ]]; then show_log "$dir/log" fail; else show_log "$dir/log" ok; fi
  report_speed libfuzzer "${speed:-unknown}"
  if ((${#found[@]})); then
    log "libfuzzer: FINDING"; show_findings "${found[@]}"; return 1
  fi
  if ((rc != 0)) || [[ -z "$speed" ]]; then
    log "libfuzzer: did not run to completion (exit $rc)"; return 1
  fi
}

run_afl() {
  local dir="$work/afl" rc=0
  make_corpus "$dir/in"
  cd "$root/fuzz/afl"
  log "afl: build"
  cargo afl build --release "${features[@]}" || { log "afl: build failed"; return 1; }
  # Outside afl-fuzz the binary runs one input from stdin: a target that cannot run an
  # empty input cleanly (e.g. it exits at startup) would look like a quiet, passing run.
  if ! "$root/fuzz/afl/target/release/$TARGET" </dev/null >"$dir/preflight.log" 2>&1; then
    cat "$dir/preflight.log" >&2
    log "afl: target failed on an empty input outside the fuzzer"; return 1
  fi
  log "afl: fuzzing ${SMOKE_SECONDS}s"
  # CI has no tty, no stdin, maybe a core_pattern pipe and a shared CPU: tell AFL++ it is fine.
  # AFL_BENCH_UNTIL_CRASH stops at the first crash instead of spending the rest of -V.
  AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 AFL_BENCH_UNTIL_CRASH=1 AFL_NO_CRASH_README=1 \
    cargo afl fuzz -i "$dir/in" -o "$dir/out" -V "$SMOKE_SECONDS" -t "$((SMOKE_TIMEOUT * 1000))" \
      -- "$root/fuzz/afl/target/release/$TARGET" </dev/null >"$dir/log" 2>&1 || rc=$?
  local stats="$dir/out/default/fuzzer_stats" found=() seed
  mapfile -t found < <(find "$dir/out/default/crashes" "$dir/out/default/hangs" -type f -name 'id:*' 2>/dev/null)
  # AFL++ skips seeds that crash or hang in its dry run with only a warning, and may
  # never find them again: count them as findings.
  while IFS= read -r seed; do
    found+=("$dir/in/$seed")
  done < <(sed -n "s/.*Test case '[^']*orig:\([^']*\)' results in a \(crash\|timeout\).*/\1/p" "$dir/log")
  local speed=""
  if [[ -f "$stats" ]]; then
    # Whole-run average; the execs_per_sec field is only the recent rate.
    speed="$(awk -F' *: *' '$1=="execs_done"{e=$2} $1=="run_time"{t=$2} END{if(e!="") printf "%.0f", (t>0 ? e/t : e)}' "$stats")"
  fi
  # (Without a UI AFL++ prints a status line per queue entry; show_log drops those.)
  if ((${#found[@]})) || ((rc != 0)) || [[ -z "$speed" ]]; then show_log "$dir/log" fail; else show_log "$dir/log" ok; fi
  report_speed afl "${speed:-unknown}"
  if ((${#found[@]})); then
    log "afl: FINDING"; show_findings "${found[@]}"
    # afl-fuzz hides the target's stderr; outside afl-fuzz the binary runs one input from stdin.
    local smallest
    smallest="$(ls -Sr -- "${found[@]}" | head -n 1)"
    log "afl: harness report for $smallest:"
    "$root/fuzz/afl/target/release/$TARGET" <"$smallest" 2>&1 | head -n 100 >&2 || true
    return 1
  fi
  if ((rc != 0)) || [[ -z "$speed" ]]; then
    log "afl: did not run to completion (exit $rc)"; return 1
  fi
}

run_honggfuzz() {
  local dir="$work/honggfuzz" rc=0
  make_corpus "$dir/corpus"
  mkdir -p "$dir/ws"
  cd "$root/fuzz/hfuzz"
  log "honggfuzz: build"
  # `cargo hfuzz run` rebuilds too, so both read the build args from the environment.
  export HFUZZ_BUILD_ARGS="${features[*]}"
  cargo hfuzz build || { log "honggfuzz: build failed"; return 1; }
  log "honggfuzz: fuzzing ${SMOKE_SECONDS}s"
  # -Q keeps the target's stderr so the harness's panic report shows up; -T counts
  # timeouts as crashes, like libFuzzer and AFL++ do.
  HFUZZ_WORKSPACE="$dir/ws" HFUZZ_INPUT="$dir/corpus" \
  HFUZZ_RUN_ARGS="--run_time $SMOKE_SECONDS -n 1 -v -Q -t $SMOKE_TIMEOUT -T --exit_upon_crash --exit_code_upon_crash 99" \
    cargo hfuzz run "$TARGET" </dev/null >"$dir/log" 2>&1 || rc=$?
  local found=()
  mapfile -t found < <(find "$dir/ws" -type f -name '*.fuzz' 2>/dev/null)
  local speed
  speed="$(sed -n 's/.*Summary iterations:\([0-9]*\) time:\([0-9]*\).*/\1 \2/p' "$dir/log" | tail -1 |
    awk '{ if ($2 > 0) printf "%.0f", $1/$2; else print $1 }')"
  if ((${#found[@]})) || ((rc != 0)) || [[ -z "$speed" ]]; then show_log "$dir/log" fail; else show_log "$dir/log" ok; fi
  report_speed honggfuzz "${speed:-unknown}"
  if ((${#found[@]})) || ((rc == 99)); then
    log "honggfuzz: FINDING"
    ((${#found[@]})) && show_findings "${found[@]}"
    [[ -f "$dir/ws/$TARGET/HONGGFUZZ.REPORT.TXT" ]] && tail -n 30 "$dir/ws/$TARGET/HONGGFUZZ.REPORT.TXT" >&2
    return 1
  fi
  if ((rc != 0)) || [[ -z "$speed" ]]; then
    log "honggfuzz: did not run to completion (exit $rc)"; return 1
  fi
  # honggfuzz just restarts a persistent target that exits, and does not count it.
  if grep -q 'exited with status: EXITED, exit code: [1-9]' "$dir/log"; then
    show_log "$dir/log" fail
    log "honggfuzz: the target exited with a non-zero status"; return 1
  fi
}

for e in "${engines[@]}"; do
  start=$SECONDS
  # Subshell with errexit live: inside an `if` condition bash would ignore set -e,
  # and any unexpected error must fail the engine.
  set +e
  ( set -e; "run_$e" )
  rc=$?
  set -e
  if ((rc == 0)); then
    log "$e: OK ($((SECONDS - start))s incl. build)"
  else
    log "$e: FAILED ($((SECONDS - start))s incl. build)"
    failed+=("$e")
  fi
done

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all passed: ${engines[*]}"
