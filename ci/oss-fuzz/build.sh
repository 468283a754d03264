#!/bin/bash -eu
# OSS-Fuzz / ClusterFuzzLite build script for mnfuzz (language: rust).
#
# Inside the base-builder-rust image: SRC, OUT, WORK and SANITIZER are set, the
# source is in $SRC/mnfuzz, and `cargo` is OSS-Fuzz's wrapper (a coverage build
# turns `cargo fuzz build` into a plain instrumented `cargo build --bins`).
# Without Docker (ci/check-oss-fuzz-build.sh): set SRC and OUT yourself and
# leave SANITIZER unset (or `none`): stable Rust has no ASan, so the targets
# are built with `-s none`, as ci/engine-smoke.sh builds them.
#
# For every cargo-fuzz target T in fuzz/Cargo.toml it writes to $OUT:
#   T                    the libFuzzer binary (cargo fuzz build -O)
#   T_seed_corpus.zip    the files of corpus/T/
#   T.options            from ci/oss-fuzz/T.options ([libfuzzer] options)
#   T.dict               from ci/oss-fuzz/T.dict, if there is one
set -euo pipefail

: "${SRC:?SRC must be set}" "${OUT:?OUT must be set}"
# MNFUZZ_SRC: a checkout somewhere other than $SRC/mnfuzz (local use only).
cd "${MNFUZZ_SRC:-$SRC/mnfuzz}"
mkdir -p "$OUT"

log() { echo "oss-fuzz build.sh: $*" >&2; }

# cargo-fuzz's default sanitizer is address, which is what OSS-Fuzz runs Rust
# with; `coverage` is handled by OSS-Fuzz's cargo wrapper whatever we pass.
sanitizer="${SANITIZER:-none}"
case "$sanitizer" in
  none) sanitizer_args=(--sanitizer none) ;;
  address|coverage) sanitizer_args=() ;;
  memory|thread|leak) sanitizer_args=(--sanitizer "$sanitizer") ;;
  *) log "unsupported SANITIZER=$sanitizer (Rust on OSS-Fuzz: address, coverage)"; exit 1 ;;
esac

# Target names from the [[bin]] tables of fuzz/Cargo.toml, but `linux` and
# `kvm`: they need root and userfaultfd (kvm also /dev/kvm), which
# OSS-Fuzz's runners do not give (CI runs them as `mnfuzz conform`). Not
# `cargo fuzz list`: under SANITIZER=coverage OSS-Fuzz's wrapper turns any `cargo fuzz`
# command into a build.
mapfile -t targets < <(awk '
  /^\[\[bin\]\]/ { inbin = 1; next }
  /^\[/          { inbin = 0 }
  inbin && $1 == "name" { gsub(/"/, "", $3); if ($3 != "linux" && $3 != "kvm") print $3 }
' fuzz/Cargo.toml)
((${#targets[@]})) || { log "no [[bin]] targets in fuzz/Cargo.toml"; exit 1; }
log "targets: ${targets[*]}; sanitizer: $sanitizer"

# -O: optimized (cargo-fuzz's default, spelled out as OSS-Fuzz's Rust guide
# does). --debug-assertions: keep the debug_assert!s and overflow checks of
# notifier/mm/mirror, which are part of what we fuzz for; ci/engine-smoke.sh
# builds the same way, so locally this reuses its build.
cargo fuzz build -O --debug-assertions "${sanitizer_args[@]}"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$host/release"

# One zip per target, flat, in a fixed order (zip -X: no extra file attributes).
make_zip() {
  local zip_out="$1" dir="$2"
  rm -f "$zip_out"
  if command -v zip >/dev/null; then
    (cd "$dir" && find . -maxdepth 1 -type f -size +0 -printf '%P\n' | LC_ALL=C sort | zip -q -X "$zip_out" -@)
  else
    python3 - "$zip_out" "$dir" <<'PY'
import os, sys, zipfile
out, d = sys.argv[1], sys.argv[2]
names = sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)) and os.path.getsize(os.path.join(d, n)) > 0)
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for n in names:
        z.write(os.path.join(d, n), n)
PY
  fi
}

for t in "${targets[@]}"; do
  cp "$bin_dir/$t" "$OUT/$t"
  if [[ -d "corpus/$t" ]] && [[ -n "$(find "corpus/$t" -maxdepth 1 -type f -size +0 -print -quit)" ]]; then
    make_zip "$OUT/${t}_seed_corpus.zip" "corpus/$t"
  else
    log "warning: no seed corpus in corpus/$t"
  fi
  if [[ -f "ci/oss-fuzz/$t.options" ]]; then
    cp "ci/oss-fuzz/$t.options" "$OUT/$t.options"
  else
    log "warning: no ci/oss-fuzz/$t.options"
  fi
  if [[ -f "ci/oss-fuzz/$t.dict" ]]; then
    cp "ci/oss-fuzz/$t.dict" "$OUT/$t.dict"
  fi
done
log "done: $(cd "$OUT" && printf '%s ' *)"
