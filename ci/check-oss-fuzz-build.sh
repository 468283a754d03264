#!/usr/bin/env bash
# Checks the OSS-Fuzz / ClusterFuzzLite build without Docker: runs
# ci/oss-fuzz/build.sh with SRC, OUT and WORK set to temporary folders, checks
# that $OUT holds every target's binary, seed corpus zip and options file, then
# runs each binary from its seed corpus for a fixed number of inputs (fixed
# libFuzzer seed, one process), with the options from its .options file.
# Fails on a missing file, a build failure, a crash or a divergence.
#
# Usage: ci/check-oss-fuzz-build.sh
# Env:   CHECK_RUNS=N    libFuzzer executions per target (default 20000)
#        CHECK_COPY=1    build a copy of the work tree in $SRC (slow: a full
#                        build); by default $SRC/mnfuzz is a symlink to this
#                        checkout, so the build reuses fuzz/target, the build
#                        directory of ci/engine-smoke.sh
#        CHECK_KEEP=1    keep the temporary folders
# Needs cargo-fuzz (ci/install-fuzzers.sh libfuzzer), and zip or python3.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${CHECK_RUNS:-20000}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "CHECK_RUNS must be a positive integer" >&2; exit 2; }
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

log() { echo "check-oss-fuzz-build: $*" >&2; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/oss-fuzz-check.XXXXXX")"
ok=0
cleanup() {
  if ((ok == 0)) || [[ "${CHECK_KEEP:-}" == 1 ]]; then
    log "temporary folders kept: $tmp"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

export SRC="$tmp/src" OUT="$tmp/out" WORK="$tmp/work"
mkdir -p "$SRC" "$OUT" "$WORK"
# Not in OSS-Fuzz: build.sh then builds with `-s none` (stable Rust).
unset SANITIZER FUZZING_ENGINE

if [[ "${CHECK_COPY:-}" == 1 ]]; then
  # The work tree as git sees it (tracked and new files, not ignored ones).
  mkdir "$SRC/mnfuzz"
  (cd "$root" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -C "$SRC/mnfuzz" -xf -
else
  ln -s "$root" "$SRC/mnfuzz"
fi
cp "$root/ci/oss-fuzz/build.sh" "$SRC/build.sh"

# As OSS-Fuzz's `compile` does: from $SRC/<project>, bash -eu $SRC/build.sh.
start=$SECONDS
log "build.sh (SRC=$SRC OUT=$OUT WORK=$WORK)"
(cd "$SRC/mnfuzz" && bash -eu "$SRC/build.sh")
log "build.sh finished in $((SECONDS - start))s"

mapfile -t targets < <(awk '
  /^\[\[bin\]\]/ { inbin = 1; next }
  /^\[/          { inbin = 0 }
  inbin && $1 == "name" { gsub(/"/, "", $3); if ($3 != "linux" && $3 != "kvm") print $3 }
' "$SRC/mnfuzz/fuzz/Cargo.toml")
((${#targets[@]})) || { log "no [[bin]] targets in fuzz/Cargo.toml"; exit 1; }

zip_names() {
  if command -v unzip >/dev/null; then
    unzip -Z1 "$1"
  else
    python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
  fi
}
zip_extract() {
  if command -v unzip >/dev/null; then
    unzip -q -o "$1" -d "$2"
  else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
  fi
}

# [libfuzzer] key = value lines of an .options file, as -key=value flags, the
# way OSS-Fuzz's runner passes them.
options_flags() {
  awk '
    /^[ \t]*[#;]/ || /^[ \t]*$/ { next }
    /^[ \t]*\[/ { sect = $0; gsub(/[][ \t]/, "", sect); next }
    sect == "libfuzzer" && index($0, "=") {
      k = substr($0, 1, index($0, "=") - 1); v = substr($0, index($0, "=") + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
      print "-" k "=" v
    }
  ' "$1"
}

missing=()
for t in "${targets[@]}"; do
  [[ -x "$OUT/$t" ]] || missing+=("$t (binary)")
  [[ -s "$OUT/${t}_seed_corpus.zip" ]] || missing+=("${t}_seed_corpus.zip")
  if [[ ! -s "$OUT/$t.options" ]]; then
    missing+=("$t.options")
  elif ! grep -q '^\[libfuzzer\]' "$OUT/$t.options"; then
    missing+=("$t.options ([libfuzzer] section)")
  fi
done
if ((${#missing[@]})); then
  log "missing from \$OUT: ${missing[*]}"
  exit 1
fi

failed=()
for t in "${targets[@]}"; do
  # The zip must hold exactly the non-empty files of corpus/<target>/.
  want="$(find "$SRC/mnfuzz/corpus/$t" -maxdepth 1 -type f -size +0 -printf '%f\n' | LC_ALL=C sort)"
  got="$(zip_names "$OUT/${t}_seed_corpus.zip" | LC_ALL=C sort)"
  if [[ "$want" != "$got" ]]; then
    log "$t: ${t}_seed_corpus.zip does not match corpus/$t/"
    diff <(echo "$want") <(echo "$got") >&2 || true
    failed+=("$t (seed zip)")
    continue
  fi
  nseeds="$(grep -c . <<<"$got")"

  dir="$WORK/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  zip_extract "$OUT/${t}_seed_corpus.zip" "$dir/corpus"
  mapfile -t opts < <(options_flags "$OUT/$t.options")
  dict=()
  if [[ -f "$OUT/$t.dict" ]]; then dict=(-dict="$OUT/$t.dict"); fi
  log "$t: $nseeds seeds, $runs runs, options: ${opts[*]} ${dict[*]}"
  # -seed: the same mutations every time. -max_total_time only guards
  # against a hang of the machine, the run count is the real bound.
  rc=0
  (cd "$dir" && "$OUT/$t" "${opts[@]}" "${dict[@]}" -runs="$runs" -seed=1 \
    -timeout=10 -max_total_time=300 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" corpus) </dev/null >"$dir/log" 2>&1 || rc=$?
  done_line="$(grep -a -E '^#[0-9]+[[:space:]]+DONE' "$dir/log" | tail -n 1 || true)"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)"
  found="$(find "$dir/artifacts" -type f | head -n 1)"
  ran="$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$dir/log" | tail -n 1)"
  if ((rc == 0)) && [[ -z "$found" ]] && [[ "$ran" != "$runs" ]]; then
    log "$t: stopped after ${ran:-no} runs instead of $runs (time limit?)"
    rc=1
  fi
  if ((rc != 0)) || [[ -n "$found" ]] || [[ -z "$done_line" ]]; then
    tail -n 60 "$dir/log" >&2
    [[ -n "$found" ]] && log "$t: finding: $found (base64: $(base64 -w0 <"$found"))"
    log "$t: FAILED (exit $rc)"
    failed+=("$t")
  else
    log "$t: ok, ${execs:-?} inputs run: $done_line"
  fi
done

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
ok=1
log "all passed: ${targets[*]} ($((SECONDS - start))s)"
