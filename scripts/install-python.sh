#!/usr/bin/env bash
# Installs the Python packages brook's tests use into a venv at
# $BROOK_CACHE/venv (default ~/.cache/brook/venv), unless they are there:
#   confluent-kafka[avro,schemaregistry]  Confluent's Python client, for the
#                                         schema registry conformance test
#   duckdb, pyarrow                       readers of the Parquet data lake
#   moto[server]                          an S3-compatible server for the lake's S3 test
# Idempotent: does nothing (and needs no network) when the venv has them.
set -euo pipefail

venv="${BROOK_CACHE:-$HOME/.cache/brook}/venv"
requirements=("confluent-kafka[avro,schemaregistry]==2.16.0" "duckdb==2.0.0" "pyarrow==26.0.1" "moto[server]==5.2.5")
check='import confluent_kafka, fastavro, duckdb, pyarrow, moto, flask; from confluent_kafka.schema_registry.avro import AvroSerializer; assert confluent_kafka.__version__ == "2.16.0" and duckdb.__version__ == "2.0.0" and pyarrow.__version__ == "26.0.1" and moto.__version__ == "5.2.5"'

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
