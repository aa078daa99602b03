#!/usr/bin/env bash
# Installs what `make bench` runs in Python into a venv at
# $BROOK_CACHE/bench-venv (default ~/.cache/brook/bench-venv), unless there:
#   quixstreams   the peer baseline (the same workloads on the same broker)
#   matplotlib    the chart of bench/report.py
# Idempotent: does nothing (and needs no network) when the venv has them.
set -euo pipefail

venv="${BROOK_CACHE:-$HOME/.cache/brook}/bench-venv"
requirements=("quixstreams==3.28.1" "matplotlib==3.11.2")
check='import quixstreams, matplotlib; assert quixstreams.__version__ == "3.28.1" and matplotlib.__version__ == "3.11.2"'

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install-bench-python: installing python3 and python3-venv"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv
fi
echo "install-bench-python: creating $venv with ${requirements[*]}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
"$venv/bin/python" -c "$check"
