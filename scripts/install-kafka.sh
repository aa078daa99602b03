#!/usr/bin/env bash
# Installs Apache Kafka's broker and tools (the test broker of record) into
# $BROOK_CACHE/tools/kafka-<version>/libs from Maven Central, using the pom
# in tools/kafka/ (no download site, no Docker). Idempotent and
# version-checked: does nothing when that version's jars are all there.
# Needs Java 17+ and Maven (`make deps` installs both when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)"
root="${BROOK_CACHE:-$HOME/.cache/brook}/tools/kafka-$version"
stamp="$root/installed"
pom_sum="$(sha256sum tools/kafka/pom.xml | cut -d' ' -f1)"

if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$pom_sum" ]] \
  && [[ -f "$root/libs/kafka_2.13-$version.jar" ]] && [[ -f "$root/libs/kafka-tools-$version.jar" ]]; then
  exit 0
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "install-kafka: $tool not found (make deps installs it)" >&2; exit 1; }
done
echo "install-kafka: fetching Apache Kafka $version (broker and tools) with Maven into $root"
rm -rf "$root.partial"
mkdir -p "$root.partial"
mvn -q -B -Dstyle.color=never -f tools/kafka/pom.xml dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$root.partial/libs"
for jar in "kafka_2.13-$version.jar" "kafka-tools-$version.jar" "kafka-clients-$version.jar"; do
  [[ -f "$root.partial/libs/$jar" ]] || { echo "install-kafka: $jar missing after the Maven run" >&2; exit 1; }
done
echo "$pom_sum" > "$root.partial/installed"
rm -rf "$root"
mv "$root.partial" "$root"
echo "install-kafka: Kafka $version ready ($(ls "$root/libs" | wc -l) jars, $(du -sh "$root/libs" | cut -f1))"
