#!/usr/bin/env bash
# make fuzz: runs each fuzz target (fuzz/fuzz_targets/) under libFuzzer for
# FUZZ_SECONDS (default 60) each. Needs the nightly toolchain (sanitizer
# flags); installs cargo-fuzz into $BROOK_CACHE/tools.
#
# Seeds come from fuzz/corpus/<target>/ (tracked); what the fuzzer adds goes
# to $BROOK_CACHE/fuzz-corpus/<target>/ (not tracked). A crash fails the run
# and its input is copied to fuzz/regressions/<target>/: commit it with the
# fix, and `make test` replays it from then on (brook-fuzz's tests).
#
# FUZZ_TARGETS="avro key_codecs" runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."

version="0.13.2"
cache="${BROOK_CACHE:-$HOME/.cache/brook}"
root="$cache/tools"
if ! [[ -x "$root/bin/cargo-fuzz" ]] || [[ "$("$root/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $version" ]]; then
  echo "fuzz: installing cargo-fuzz $version into $root"
  CARGO_TARGET_DIR="$cache/cargo-fuzz-build" \
    cargo install "cargo-fuzz@$version" --locked --root "$root" --force
  rm -rf "$cache/cargo-fuzz-build"
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-wire_format avro registry_request key_codecs}"
# Nightly and sanitizer builds of their own, kept between runs.
export CARGO_TARGET_DIR="$cache/fuzz-target"
export PATH="$root/bin:$PATH"
failed=()
for target in $targets; do
  corpus="$cache/fuzz-corpus/$target"
  artifacts="$cache/fuzz-artifacts/$target"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $target for ${seconds}s"
  if cargo +nightly fuzz run --fuzz-dir fuzz --features libfuzzer "$target" \
      "$corpus" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1; then
    continue
  fi
  if ! compgen -G "$artifacts/*" >/dev/null; then
    echo "fuzz: $target did not run (no crash input was written): see the errors above" >&2
    exit 2
  fi
  failed+=("$target")
  mkdir -p "fuzz/regressions/$target"
  for crash in "$artifacts"/*; do
    [[ -f "$crash" ]] || continue
    cp "$crash" "fuzz/regressions/$target/"
    echo "fuzz: $target crashed on $crash, kept as fuzz/regressions/$target/$(basename "$crash")" >&2
  done
done
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no crash in ${seconds}s per target ($targets)"
