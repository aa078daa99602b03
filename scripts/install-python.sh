#!/usr/bin/env bash
# Installs Python packages into a venv under $BROOK_CACHE (default
# ~/.cache/brook), unless they are there. Two sets:
#   (no argument) $BROOK_CACHE/venv, for the tests:
#     confluent-kafka[avro,schemaregistry]  Confluent's Python client, for the
#                                           schema registry conformance test
#     duckdb, pyarrow                       readers of the Parquet data lake
#     moto[server]                          an S3-compatible server for the lake's S3 test
#   bench: $BROOK_CACHE/bench-venv, for `make bench`:
#     quixstreams                           the peer baseline (same workloads, same broker)
#     matplotlib                            the chart of bench/report.py
# Idempotent: does nothing (and needs no network) when the venv has them.
set -euo pipefail

cache="${BROOK_CACHE:-$HOME/.cache/brook}"
case "${1:-test}" in
  test)
    venv="$cache/venv"
    requirements=("confluent-kafka[avro,schemaregistry]==2.16.0" "duckdb==2.0.0" "pyarrow==26.0.1" "moto[server]==5.2.5")
    check='import confluent_kafka, fastavro, duckdb, pyarrow, moto, flask; from confluent_kafka.schema_registry.avro import AvroSerializer; assert confluent_kafka.__version__ == "2.16.0" and duckdb.__version__ == "2.0.0" and pyarrow.__version__ == "26.0.1" and moto.__version__ == "5.2.5"'
    ;;
  bench)
    venv="$cache/bench-venv"
    requirements=("quixstreams==3.28.1" "matplotlib==3.11.2")
    check='import quixstreams, matplotlib; assert quixstreams.__version__ == "3.28.1" and matplotlib.__version__ == "3.11.2"'
    ;;
  *)
    echo "install-python: unknown set ${1}; test or bench" >&2
    exit 2
    ;;
esac

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi

if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install-python: installing python3 and python3-venv"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv
fi

echo "install-python: creating $venv with ${requirements[*]}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
"$venv/bin/python" -c "$check"
