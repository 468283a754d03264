#!/usr/bin/env bash
# Installs the pinned cargo tools behind ci/features.sh and ci/mutants.sh.
# Idempotent: a tool already installed at its pinned version is skipped.
# Usage: ci/install-cargo-tools.sh [hack|mutants|all]   (default: all)
set -euo pipefail

# Newest releases that build with --locked on stable Rust 1.95 here.
CARGO_HACK_VERSION=0.6.46
CARGO_MUTANTS_VERSION=27.1.0

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

tool="${1:-all}"
case "$tool" in
  hack|mutants|all) ;;
  *) echo "usage: $0 [hack|mutants|all]" >&2; exit 2 ;;
esac
wants() { [[ "$tool" == all || "$tool" == "$1" ]]; }

install_pinned() {
  local crate="$1" version="$2"
  if cargo install --list | grep -qx "$crate v$version:"; then
    echo "install-cargo-tools: $crate $version already installed" >&2
    return
  fi
  echo "install-cargo-tools: cargo install $crate $version" >&2
  # --force replaces a different installed version in place.
  cargo install --locked --force "$crate" --version "=$version"
}

if wants hack; then install_pinned cargo-hack "$CARGO_HACK_VERSION"; fi
if wants mutants; then install_pinned cargo-mutants "$CARGO_MUTANTS_VERSION"; fi
