#!/usr/bin/env bash
# Installs the system packages brook's build needs, if any are missing.
# Idempotent: does nothing (and needs no network) when all are present.
#   cmake, g++            librdkafka's CMake build, RocksDB's C++
#   libclang-dev          bindgen for RocksDB
#   libcurl4-openssl-dev  librdkafka >= 2.11 includes curl.h even without its curl feature
#   libssl-dev zlib1g-dev pkg-config
#   openjdk-17-jdk-headless, maven  when java or mvn is missing (the Kafka test broker)
# Extra packages may be named as arguments (`make tools` adds postgresql: the
# server the PostgreSQL connectors' tests start themselves).
set -euo pipefail

packages=(cmake g++ libclang-dev libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config "$@")
# Java and Maven: Apache Kafka, the test broker, runs on the JVM and comes
# from Maven Central (scripts/install-kafka.sh). Any JDK >= 17 will do.
command -v java >/dev/null || packages+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || packages+=(maven)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo rustc; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool not found; install Rust (rustup) first" >&2; exit 1; }
done
for sub in fmt clippy; do
  cargo "$sub" --version >/dev/null 2>&1 || { echo "install-deps: cargo $sub missing: rustup component add ${sub/fmt/rustfmt}" >&2; exit 1; }
done
