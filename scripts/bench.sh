#!/usr/bin/env bash
# make bench: build the benchmark harness in release and run it, then draw
# the chart and regenerate the README's benchmark section from the results.
# Extra arguments go to brook-bench (e.g. scripts/bench.sh --runs 9).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-python.sh bench
# The real-broker group: Apache Kafka's jars (the test broker), brook-kafka
# to run it, and Kafka Streams on the same workloads as one runnable jar.
scripts/install-kafka.sh
cargo build --release --locked -p brook-apps --bin brook-bench -p brook-testkit --bin brook-kafka
jar=bench/kstreams/target/brook-kstreams-bench.jar
if [[ ! -f "$jar" ]] || [[ -n "$(find bench/kstreams/pom.xml bench/kstreams/src -newer "$jar" -print -quit)" ]]; then
  echo "bench: building $jar (Kafka Streams 4.4.0, Maven)"
  mvn -q -B -Dstyle.color=never -f bench/kstreams/pom.xml package
fi
label="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
venv="${BROOK_CACHE:-$HOME/.cache/brook}/bench-venv"
BROOK_BENCH_PYTHON="$venv/bin/python" BROOK_BENCH_QUIX="$PWD/bench/quix_bench.py" \
  BROOK_BENCH_KSTREAMS_JAR="$PWD/$jar" BROOK_BENCH_BROKER="${CARGO_TARGET_DIR:-target}/release/brook-kafka" \
  "${CARGO_TARGET_DIR:-target}/release/brook-bench" --out bench/results --label "$label" "$@"
"$venv/bin/python" bench/report.py bench/results README.md
