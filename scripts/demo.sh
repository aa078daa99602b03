#!/usr/bin/env bash
# make demo: start the embedded dev broker (librdkafka's mock cluster as its
# own process) and brook's schema registry (in memory), run the demo
# pipeline against them, verify, run the seed's v1 -> v2 schema migration
# (dual write, a v1 and a v2 consumer reading everything), and stop both.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p brook-apps --bin brook-dev-broker --bin brook-demo \
  --bin brook-schema-registry --bin brook-schema
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d -t brook-demo-XXXXXX)
broker_pid=""
registry_pid=""
cleanup() {
  for pid in "$registry_pid" "$broker_pid"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/brook-dev-broker" \
  --topic demo.page-views:3 --topic demo.page-views-by-page:3 \
  --topic demo.page-view-counts:3 --topic demo.dead-letters:1 --topic ecommerce-events:3 \
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

# Schema evolution: brook's registry (loopback, in memory) and the migration.
"$bin/brook-schema-registry" --storage memory --listen 127.0.0.1:0 > "$work/registry.out" 2> "$work/registry.log" &
registry_pid=$!
for _ in $(seq 1 100); do
  grep -q "^listening on " "$work/registry.out" 2>/dev/null && break
  kill -0 "$registry_pid" 2>/dev/null || { echo "schema registry exited:"; cat "$work/registry.log"; exit 1; }
  sleep 0.1
done
registry=$(sed -n 's/^listening on //p' "$work/registry.out")
[[ -n "$registry" ]] || { echo "schema registry did not start:"; cat "$work/registry.log"; exit 1; }
echo
echo "schema registry (brook-schema-registry, pid $registry_pid) at $registry"
echo "schema migration user_event v1 -> v2 with dual writes:"
"$bin/brook-schema" migrate --registry "$registry" --bootstrap "$bootstrap" --count 2000
