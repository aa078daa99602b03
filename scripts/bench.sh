#!/usr/bin/env bash
# make bench: build the benchmark harness in release and run it, then draw
# the chart and regenerate the README's benchmark section from the results.
# Extra arguments go to brook-bench (e.g. scripts/bench.sh --runs 9).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-python.sh bench
cargo build --release --locked -p brook-apps --bin brook-bench
label="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
venv="${BROOK_CACHE:-$HOME/.cache/brook}/bench-venv"
BROOK_BENCH_PYTHON="$venv/bin/python" BROOK_BENCH_QUIX="$PWD/bench/quix_bench.py" \
  "${CARGO_TARGET_DIR:-target}/release/brook-bench" --out bench/results --label "$label" "$@"
"$venv/bin/python" bench/report.py bench/results README.md
