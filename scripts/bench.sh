#!/usr/bin/env bash
# make bench: build the benchmark harness in release and run it.
# Extra arguments go to brook-bench (e.g. scripts/bench.sh --runs 9).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p brook-apps --bin brook-bench
label="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
"${CARGO_TARGET_DIR:-target}/release/brook-bench" --out bench/results --label "$label" "$@"
