#!/usr/bin/env bash
# make demo: EventMart end to end on the embedded broker, watched live.
#
# Builds eventmart-demo in release and runs it: the embedded broker
# (librdkafka's mock cluster) and brook's schema registry start in the
# process, the topics are provisioned, the generator and every app run, and
# the dashboard is served (http://127.0.0.1:8088/ unless taken). Ctrl-C stops
# everything cleanly.
#
# Without a terminal (CI, a pipe) it runs for DEMO_DURATION seconds (60);
# set DEMO_DURATION to bound an interactive run too. Other flags go through
# DEMO_ARGS, e.g. DEMO_ARGS="--rate 500 --lake ./lake", or, against
# docker-compose's Kafka and registry: DEMO_ARGS="--bootstrap localhost:9092".
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p brook-apps --bin eventmart-demo
bin="${CARGO_TARGET_DIR:-target}/release"

args=()
if [[ -n "${DEMO_DURATION:-}" ]]; then
  args+=(--duration "$DEMO_DURATION")
elif [[ ! -t 1 ]]; then
  echo "(no terminal: running for 60 s; DEMO_DURATION=N changes that)"
  args+=(--duration 60)
fi
# shellcheck disable=SC2206  # DEMO_ARGS is a list of flags on purpose
extra=(${DEMO_ARGS:-})
exec "$bin/eventmart-demo" "${args[@]}" "${extra[@]}" "$@"
