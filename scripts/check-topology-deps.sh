#!/usr/bin/env bash
# brook-topology is the pure core: it must never depend (directly or not) on
# a Kafka client, a storage engine or an async runtime.
set -euo pipefail

forbidden='^(rdkafka|rdkafka-sys|rocksdb|librocksdb-sys|tokio) '
tree=$(cargo tree --locked -p brook-topology -e normal,build,dev --prefix none --format '{p}')
if offenders=$(grep -E "$forbidden" <<<"$tree" | sort -u) && [[ -n "$offenders" ]]; then
  echo "check-topology-deps: brook-topology must not depend on rdkafka, rocksdb or tokio, but pulls in:" >&2
  echo "$offenders" >&2
  echo "(run: cargo tree -p brook-topology -i <crate> to see the path)" >&2
  exit 1
fi
echo "check-topology-deps: ok ($(wc -l <<<"$tree") packages, none of rdkafka/rocksdb/tokio)"
