#!/usr/bin/env bash
# Reproduces bench/hunt/: every planted bug against every engine, from an empty
# corpus, merged into bench/hunt/results.json and drawn in bench/hunt/detection.svg.
# Prints the README table at the end.
#
# Usage: ci/hunt-external.sh [builtin|random|libfuzzer|afl|honggfuzz ...]   (default: all five)
# Env:   HUNT_TRIALS       trials per bug for libfuzzer, afl, honggfuzz (default 3)
#        HUNT_SECONDS      time limit of one of their trials (default 30)
#        HUNT_TRIALS_BUILTIN, HUNT_SECONDS_BUILTIN   the same for builtin and random (5, 30)
#        HUNT_ARGS         more arguments for every `mnfuzz hunt`, e.g. --seeds
# Needs the tools from ci/install-fuzzers.sh for the external engines. Worst case
# every planted bug (`mnfuzz planted`: 30 split-phase, 4 on real threads) x 3
# engines x HUNT_TRIALS x HUNT_SECONDS, about 2.5 hours with the defaults; most
# bugs fall in seconds, so a run takes about an hour on 2 cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# 2 shared cores: one rustc job; every engine fuzzes with one process.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

engines=("$@")
if ((${#engines[@]} == 0)); then engines=(builtin random libfuzzer afl honggfuzz); fi
for e in "${engines[@]}"; do
  case "$e" in
    builtin|random|libfuzzer|afl|honggfuzz) ;;
    *) echo "usage: $0 [builtin|random|libfuzzer|afl|honggfuzz ...]" >&2; exit 2 ;;
  esac
done

# Its own target dir: other builds of the workspace (without the planted bugs)
# cannot replace this binary while it hunts.
cargo build --release -p harness --features planted-bugs --bin mnfuzz --target-dir target/hunt/mnfuzz
mnfuzz="$root/target/hunt/mnfuzz/release/mnfuzz"

# shellcheck disable=SC2086  # HUNT_ARGS is a word list
for e in "${engines[@]}"; do
  case "$e" in
    builtin|random)
      "$mnfuzz" hunt --all --engine "$e" --trials "${HUNT_TRIALS_BUILTIN:-5}" \
        --seconds "${HUNT_SECONDS_BUILTIN:-30}" ${HUNT_ARGS:-} ;;
    *)
      "$mnfuzz" hunt --all --engine "$e" --trials "${HUNT_TRIALS:-3}" \
        --seconds "${HUNT_SECONDS:-30}" ${HUNT_ARGS:-} ;;
  esac
done
"$mnfuzz" hunt --report
