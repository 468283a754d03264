#!/usr/bin/env bash
# Installs the external fuzzing engines used by ci/engine-smoke.sh.
# Idempotent: a tool already installed at its pinned version is skipped.
# Usage: ci/install-fuzzers.sh [libfuzzer|afl|honggfuzz|all]   (default: all)
set -euo pipefail

# Newest releases that build and run on stable Rust 1.95 here.
CARGO_FUZZ_VERSION=0.13.2
# Must equal `afl = "=..."` in fuzz/afl/Cargo.toml: the runtime it builds is linked into that binary.
CARGO_AFL_VERSION=0.18.2
# Must equal `honggfuzz = "=..."` in fuzz/hfuzz/Cargo.toml: the crate's build.rs checks it.
HONGGFUZZ_VERSION=0.5.62

# 2 shared cores: one rustc at a time keeps the rest of the machine usable.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export DEBIAN_FRONTEND=noninteractive

engine="${1:-all}"
case "$engine" in
  libfuzzer|afl|honggfuzz|all) ;;
  *) echo "usage: $0 [libfuzzer|afl|honggfuzz|all]" >&2; exit 2 ;;
esac
wants() { [[ "$engine" == all || "$engine" == "$1" ]]; }

log() { echo "install-fuzzers: $*" >&2; }

SUDO=()
if [[ "$(id -u)" != 0 ]]; then SUDO=(sudo); fi

apt_updated=0
apt_install() {
  local missing=() p
  for p in "$@"; do
    # Checking first keeps re-runs offline and fast (no apt-get update).
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  if ((apt_updated == 0)); then
    "${SUDO[@]}" apt-get update -qq
    apt_updated=1
  fi
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True if `cargo install` already has CRATE at exactly VERSION.
installed_at() {
  cargo install --list | grep -qx "$1 v$2:"
}

cargo_install() {
  local crate="$1" version="$2"
  if installed_at "$crate" "$version"; then
    log "$crate $version already installed"
    return 0
  fi
  log "cargo install $crate $version"
  # --force replaces a different installed version in place.
  cargo install --locked --force "$crate" --version "=$version"
}

# gcc/make are on the image, but be explicit: honggfuzz and AFL++ are C built by make.
apt_install make gcc libc6-dev

if wants libfuzzer; then
  # libFuzzer itself is compiled from C++ by libfuzzer-sys' build script.
  apt_install g++
  cargo_install cargo-fuzz "$CARGO_FUZZ_VERSION"
fi

if wants afl; then
  cargo_install cargo-afl "$CARGO_AFL_VERSION"
  # cargo-afl's own build script usually builds the AFL++ runtime already; this
  # covers the case where it could not (it only warns), and a changed rustc,
  # since the runtime is kept per rustc version under ~/.local/share/afl.rs.
  # No --plugins: they load through `-Z llvm-plugins`, which needs nightly.
  if ! out="$(cargo afl config --build 2>&1)"; then
    if grep -q 'already built' <<<"$out"; then
      log "AFL++ runtime already built for this rustc"
    else
      echo "$out" >&2
      exit 1
    fi
  fi
fi

if wants honggfuzz; then
  # honggfuzz links libbfd/libopcodes (binutils-dev) and libunwind-ptrace;
  # BlocksRuntime only matters if CC is clang; it is tiny, so install it anyway.
  apt_install binutils-dev libunwind-dev libblocksruntime-dev
  cargo_install honggfuzz "$HONGGFUZZ_VERSION"
fi

if wants afl; then cargo afl --version >&2; fi
# `cargo hfuzz version` needs a Cargo.toml in the cwd, so ask cargo instead.
cargo install --list | grep -E '^(cargo-fuzz|cargo-afl|honggfuzz) v' >&2 || true
