#!/usr/bin/env bash
# Dependency rules, checked by `make test`:
# 1. brook-topology is the pure core: it must never depend (directly or not)
#    on a Kafka client, a storage engine or an async runtime.
# 2. brook-cluster (the Cluster port) neither; brook-connectors depends on
#    the port, not on brook-runtime.
# 3. The big crates exist in one version only: two majors of RocksDB, arrow or
#    librdkafka double a cold build that already takes most of CI's budget.
set -euo pipefail

tree=$(cargo tree --locked -p brook-topology -e normal,build,dev --prefix none --format '{p}')
if offenders=$(grep -E '^(rdkafka|rdkafka-sys|rocksdb|librocksdb-sys|tokio) ' <<<"$tree" | sort -u) && [[ -n "$offenders" ]]; then
  echo "check-deps: brook-topology must not depend on rdkafka, rocksdb or tokio, but pulls in:" >&2
  echo "$offenders" >&2
  echo "(cargo tree -p brook-topology -i <crate> shows the path)" >&2
  exit 1
fi
echo "check-deps: brook-topology is free of rdkafka/rocksdb/tokio ($(wc -l <<<"$tree") packages)"

# 2. The Cluster port (brook-cluster) has no Kafka client, storage engine
#    or async runtime either, and connectors depend on it, not on the engine.
tree=$(cargo tree --locked -p brook-cluster -e normal,build --prefix none --format '{p}')
if offenders=$(grep -E '^(rdkafka|rdkafka-sys|rocksdb|librocksdb-sys|tokio|brook-runtime) ' <<<"$tree" | sort -u) && [[ -n "$offenders" ]]; then
  echo "check-deps: brook-cluster must not depend on rdkafka, rocksdb, tokio or brook-runtime, but pulls in:" >&2
  echo "$offenders" >&2
  exit 1
fi
if cargo tree --locked -p brook-connectors -e normal,build --prefix none --format '{p}' | grep -qE '^brook-runtime '; then
  echo "check-deps: brook-connectors must depend on the Cluster port (brook-cluster), not on brook-runtime" >&2
  echo "(cargo tree -p brook-connectors -e normal -i brook-runtime shows the path)" >&2
  exit 1
fi
echo "check-deps: brook-cluster is free of rdkafka/rocksdb/tokio; brook-connectors does not depend on brook-runtime"

big='^(rdkafka|rdkafka-sys|rocksdb|librocksdb-sys|arrow|arrow-[a-z-]+|parquet|object_store|tokio|apache-avro|schema_registry_converter|reqwest|bincode) v'
dups=$(cargo tree --locked --workspace -e normal,build,dev --duplicates --depth 0 --prefix none --format '{p}' | grep -E "$big" | sort -u || true)
if [[ -n "$dups" ]]; then
  echo "check-deps: big crates in more than one version:" >&2
  echo "$dups" >&2
  echo "(cargo tree -d -i <crate> shows who wants which)" >&2
  exit 1
fi
echo "check-deps: no big crate in two versions"
