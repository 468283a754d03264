#!/usr/bin/env bash
# Cargo features are additive and unified per build, so every feature must
# build on its own. Two passes with cargo-hack (ci/install-cargo-tools.sh):
#  1. each crate with each of its own features alone (and none);
#  2. each crate with each feature of its workspace dependencies alone: this
#     is the build `cargo test -p notifier -p oracles --features
#     notifier/planted-bugs` makes, where a dependency has a feature its
#     dependent did not ask for. Pass 1 cannot see it.
# Usage: ci/features.sh [check|test]   (default: check)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmd="${1:-check}"
case "$cmd" in
  check|test) ;;
  *) echo "usage: $0 [check|test]" >&2; exit 2 ;;
esac
command -v jq >/dev/null || { echo "features.sh: needs jq" >&2; exit 2; }

cargo hack "$cmd" --workspace --each-feature --all-targets

# "<crate> <dep>/<feature>,..." for every crate whose workspace
# dependencies have features; derived, so a new feature is covered at once.
cargo metadata --no-deps --format-version 1 | jq -r '
  (.packages | map({key: .name, value: (.features | keys - ["default"])}) | from_entries) as $feats
  | .packages[] | . as $p
  | [ .dependencies[] | select(.path != null) | .name as $d
      | ($feats[$d] // [])[] | "\($d)/\(.)" ] | unique
  | select(length > 0) | "\($p.name) \(join(","))"' |
  while read -r pkg feats; do
    cargo hack "$cmd" -p "$pkg" --each-feature --include-features "$feats" --all-targets </dev/null
  done
