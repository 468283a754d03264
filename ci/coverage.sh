#!/usr/bin/env bash
# Source-coverage report of each fuzz target's corpus: `cargo fuzz coverage`
# (an instrumented build, -C instrument-coverage), then llvm-cov from rustc's
# own llvm-tools component, so that the profile format matches rustc's LLVM.
#
# Usage: ci/coverage.sh [-o OUTDIR] [TARGET[=DIR[:DIR...]]]...
#   TARGET        a cargo-fuzz target (default: all of fuzz/Cargo.toml)
#   =DIR:DIR      the corpus directories to measure (default: corpus/TARGET)
#   -o OUTDIR     where the report goes (default: fuzz/coverage/report)
#
# Writes, under OUTDIR:
#   TARGET/index.html      llvm-cov's HTML report, line by line
#   TARGET/report.txt      llvm-cov's per-file table
#   TARGET/lcov.info       the same data as LCOV
#   all/...                the same for every target's corpus together
#   summary.md             line coverage per crate and target (also printed)
# Only the workspace's own sources are counted (not std, not dependencies).
#
# Needs cargo-fuzz (ci/install-fuzzers.sh libfuzzer) and rustup's
# llvm-tools component, which this script adds if it can; LLVM_TOOLS=DIR
# points at another llvm-cov/llvm-profdata of rustc's LLVM version.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
log() { echo "coverage: $*" >&2; }

out="$root/fuzz/coverage/report"
specs=()
while (($#)); do
  case "$1" in
    -o) out="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) log "unknown option $1"; exit 2 ;;
    *) specs+=("$1"); shift ;;
  esac
done

mapfile -t all_targets < <(awk '
  /^\[\[bin\]\]/ { inbin = 1; next }
  /^\[/          { inbin = 0 }
  inbin && $1 == "name" { gsub(/"/, "", $3); print $3 }
' fuzz/Cargo.toml)
if ((${#specs[@]} == 0)); then specs=("${all_targets[@]}"); fi

# llvm-profdata and llvm-cov of rustc's LLVM major version: a profile written
# by a newer LLVM cannot be read by an older llvm-cov.
host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
tools="${LLVM_TOOLS:-$(rustc --print sysroot)/lib/rustlib/$host/bin}"
if [[ ! -x "$tools/llvm-cov" && -z "${LLVM_TOOLS:-}" ]]; then
  log "adding rustup's llvm-tools component"
  rustup component add llvm-tools-preview >&2 || true
fi
for tool in llvm-cov llvm-profdata; do
  if [[ ! -x "$tools/$tool" ]]; then
    log "no $tool in $tools: install rustup's llvm-tools component, or set LLVM_TOOLS to a directory with LLVM $llvm_major's $tool"
    exit 1
  fi
done
tool_major="$("$tools/llvm-cov" --version | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -n 1)"
if [[ "$tool_major" != "$llvm_major" ]]; then
  log "$tools/llvm-cov is LLVM $tool_major, rustc is LLVM $llvm_major: the profile formats differ"
  exit 1
fi

# Count only this workspace's sources.
ignore='/\.cargo/|/\.rustup/|^/rustc/|/rustlib/'
mkdir -p "$out"

# lcov.info -> "crate lines_found lines_hit" per crate (the first path
# component under the repository root: notifier, mm, mirror, oracles, ...).
crate_lines() {
  awk -v root="$root/" '
    /^SF:/ { f = substr($0, 4); crate = ""
             if (index(f, root) == 1) { rel = substr(f, length(root) + 1); split(rel, p, "/"); crate = p[1] } }
    /^LF:/ { if (crate != "") lf[crate] += substr($0, 4) }
    /^LH:/ { if (crate != "") lh[crate] += substr($0, 4) }
    END { for (c in lf) print c, lf[c], lh[c] + 0 }
  ' "$1" | LC_ALL=C sort
}

# report NAME PROFDATA BINARY...: HTML, text table and LCOV for one profile.
report() {
  local name="$1" profdata="$2" bin="$3"
  shift 3
  local objects=() o
  for o in "$@"; do objects+=(-object "$o"); done
  local dir="$out/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  "$tools/llvm-cov" show "$bin" "${objects[@]}" -instr-profile="$profdata" \
    -ignore-filename-regex="$ignore" -format=html -output-dir="$dir" \
    -show-line-counts-or-regions -show-instantiations=false \
    -project-title="mnfuzz: $name" >/dev/null
  "$tools/llvm-cov" report "$bin" "${objects[@]}" -instr-profile="$profdata" \
    -ignore-filename-regex="$ignore" >"$dir/report.txt"
  "$tools/llvm-cov" export "$bin" "${objects[@]}" -instr-profile="$profdata" \
    -ignore-filename-regex="$ignore" -format=lcov >"$dir/lcov.info"
  crate_lines "$dir/lcov.info" >"$dir/crates.txt"
}

names=() profiles=() bins=()
for spec in "${specs[@]}"; do
  t="${spec%%=*}"
  if [[ ! " ${all_targets[*]} " == *" $t "* ]]; then
    log "unknown target '$t' (targets: ${all_targets[*]})"
    exit 2
  fi
  dirs=()
  if [[ "$spec" == *=* ]]; then
    IFS=: read -r -a dirs <<<"${spec#*=}"
  else
    dirs=("corpus/$t")
  fi
  abs=()
  for d in "${dirs[@]}"; do
    [[ -d "$d" ]] || { log "$t: no corpus directory $d"; exit 2; }
    abs+=("$(realpath "$d")")
  done
  n="$(find "${abs[@]}" -type f | wc -l)"
  log "$t: $n input(s) from ${dirs[*]}"
  # -s none: stable Rust. -a: the same debug assertions the fuzzers run with.
  # -j1: the machine has two shared cores. cargo fuzz builds into
  # fuzz/target/$host/coverage and writes fuzz/coverage/$t/coverage.profdata.
  (cd fuzz && cargo fuzz coverage -s none -a -j 1 "$t" "${abs[@]}") >"$out/$t.run.log" 2>&1 || {
    tail -n 40 "$out/$t.run.log" >&2
    log "$t: cargo fuzz coverage failed (log: $out/$t.run.log)"
    exit 1
  }
  profdata="$root/fuzz/coverage/$t/coverage.profdata"
  bin="$root/fuzz/target/$host/coverage/$host/release/$t"
  report "$t" "$profdata" "$bin"
  names+=("$t") profiles+=("$profdata") bins+=("$bin")
done

if ((${#names[@]} > 1)); then
  "$tools/llvm-profdata" merge -sparse "${profiles[@]}" -o "$out/all.profdata"
  report all "$out/all.profdata" "${bins[@]}"
  names+=(all)
fi

# Summary: one row per crate, one column per target (and all together).
{
  echo "Line coverage by crate (llvm-cov; corpus: ${specs[*]})"
  echo
  printf '| crate |'
  for n in "${names[@]}"; do printf ' %s |' "$n"; done
  echo
  printf '|---|'
  for _ in "${names[@]}"; do printf -- '---|'; done
  echo
  crate_files=()
  for n in "${names[@]}"; do crate_files+=("$out/$n/crates.txt"); done
  mapfile -t crates < <(awk '{ print $1 }' "${crate_files[@]}" | LC_ALL=C sort -u)
  for c in "${crates[@]}"; do
    printf '| %s |' "$c"
    for n in "${names[@]}"; do
      awk -v c="$c" '$1 == c { found = 1; printf " %.1f%% (%d/%d) |", ($2 ? 100 * $3 / $2 : 0), $3, $2 }
        END { if (!found) printf " - |" }' "$out/$n/crates.txt"
    done
    echo
  done
} | tee "$out/summary.md"
log "HTML: $out/<target>/index.html; summary: $out/summary.md"
