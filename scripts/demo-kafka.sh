#!/usr/bin/env bash
# make demo-kafka: the EventMart demo on a real Apache Kafka 4.4 — the one
# `make tools` cached from Maven Central — instead of the embedded broker.
#
# Starts brook-kafka (one KRaft node on free loopback ports, data in a
# temporary directory), runs eventmart-demo against it with brook's schema
# registry keeping its schemas in the compacted topic `_schemas`, and stops
# Kafka afterwards. The demo provisions the topics of
# apps/eventmart/topics.toml and verifies their configs with DescribeConfigs,
# then checks the apps' results against what was generated and that the
# schemas reload from `_schemas`. DEMO_DURATION (default 60 s without a
# terminal) and DEMO_ARGS work as for `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-kafka.sh
cargo build --release --locked -p brook-apps --bin eventmart-demo -p brook-testkit --bin brook-kafka
bin="${CARGO_TARGET_DIR:-target}/release"

work="$(mktemp -d)"
kafka_pid=""
cleanup() {
  if [[ -n "$kafka_pid" ]]; then
    kill -TERM "$kafka_pid" 2>/dev/null || true
    wait "$kafka_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/brook-kafka" --bootstrap-file "$work/bootstrap" >"$work/kafka.out" 2>"$work/kafka.err" &
kafka_pid=$!
for _ in $(seq 1 600); do
  [[ -s "$work/bootstrap" ]] && break
  if ! kill -0 "$kafka_pid" 2>/dev/null; then
    echo "demo-kafka: Kafka did not start:" >&2
    cat "$work/kafka.err" >&2
    exit 1
  fi
  sleep 0.2
done
[[ -s "$work/bootstrap" ]] || { echo "demo-kafka: Kafka did not start within 120 s" >&2; exit 1; }
cat "$work/kafka.err"
bootstrap="$(cat "$work/bootstrap")"

args=()
if [[ -n "${DEMO_DURATION:-}" ]]; then
  args+=(--duration "$DEMO_DURATION")
elif [[ ! -t 1 ]]; then
  echo "(no terminal: running for 60 s; DEMO_DURATION=N changes that)"
  args+=(--duration 60)
fi
# shellcheck disable=SC2206  # DEMO_ARGS is a list of flags on purpose
extra=(${DEMO_ARGS:-})
status=0
"$bin/eventmart-demo" --bootstrap "$bootstrap" --registry-topic _schemas "${args[@]}" "${extra[@]}" "$@" || status=$?
kill -TERM "$kafka_pid" 2>/dev/null || true
wait "$kafka_pid" 2>/dev/null || true
kafka_pid=""
tail -n 1 "$work/kafka.err"
exit "$status"
