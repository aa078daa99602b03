#!/usr/bin/env bash
# Installs tansu (the Kafka-compatible broker used by the tests) into
# $BROOK_CACHE/tools unless that exact version is already there.
# A plain `cargo install tansu` has no storage engine and silently drops data;
# the dynostore and libsql features give it sqlite storage.
# Building it takes ~20 minutes on 2 cores; the binary is cached.
set -euo pipefail

version="0.6.0"
root="${BROOK_CACHE:-$HOME/.cache/brook}/tools"
bin="$root/bin/tansu"

if [[ -x "$bin" ]] && [[ "$("$bin" --version 2>/dev/null)" == "tansu $version" ]]; then
  exit 0
fi

echo "install-tansu: building tansu $version with sqlite storage into $root (about 20 minutes on 2 cores)"
mkdir -p "$root"
# Its own target dir, so a failed build resumes instead of starting over.
CARGO_TARGET_DIR="${BROOK_CACHE:-$HOME/.cache/brook}/tansu-build" \
  cargo install "tansu@$version" --locked --features dynostore,libsql --root "$root" --force
rm -rf "${BROOK_CACHE:-$HOME/.cache/brook}/tansu-build"
