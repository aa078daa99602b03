#!/usr/bin/env bash
# make demo: start the embedded dev broker (librdkafka's mock cluster as its
# own process), run the demo pipeline against it, verify, and stop the broker.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p brook-apps --bin brook-dev-broker --bin brook-demo
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d -t brook-demo-XXXXXX)
broker_pid=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/brook-dev-broker" \
  --topic demo.page-views:3 --topic demo.page-views-by-page:3 \
  --topic demo.page-view-counts:3 --topic demo.dead-letters:1 \
  --bootstrap-file "$work/bootstrap" > "$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do
  [[ -s "$work/bootstrap" ]] && break
  kill -0 "$broker_pid" 2>/dev/null || { echo "dev broker exited:"; cat "$work/broker.log"; exit 1; }
  sleep 0.1
done
[[ -s "$work/bootstrap" ]] || { echo "dev broker did not start:"; cat "$work/broker.log"; exit 1; }
bootstrap=$(cat "$work/bootstrap")
echo "dev broker (librdkafka mock cluster, pid $broker_pid) at $bootstrap"

"$bin/brook-demo" --bootstrap "$bootstrap" --prefix demo --create-topics no "$@"
