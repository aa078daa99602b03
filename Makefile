# brook's two commands:
#   make demo   runs EventMart end to end on the embedded broker, with a live dashboard (no external services)
#   make test   the whole test suite: fmt, dependency rules, clippy, unit, doc and broker tests
# Each installs what it needs first (apt packages, Apache Kafka's jars from Maven Central
# for the test broker, a Python venv with Confluent's client) and is idempotent.
#
# Builds go to a persistent target directory outside the clone, so repeated
# runs on one machine reuse them: $BROOK_TARGET_DIR, else ~/.cache/brook/target.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

BROOK_CACHE ?= $(HOME)/.cache/brook
BROOK_TARGET_DIR ?= $(BROOK_CACHE)/target
export BROOK_CACHE
export CARGO_TARGET_DIR := $(BROOK_TARGET_DIR)
CARGO ?= cargo
# Where `make test-kafka` finds Kafka (e.g. the docker-compose broker).
BROOK_BOOTSTRAP ?= 127.0.0.1:9092

.PHONY: help deps python-deps tools test fmt-check check-deps clippy unit demo demo-kafka bench fuzz soak test-kafka test-cluster

help:
	@echo "make demo        EventMart end to end on the embedded broker; dashboard at http://127.0.0.1:8088/ (Ctrl-C stops)"
	@echo "make test        fmt check, dependency rules, clippy -D warnings, all tests (mock + Apache Kafka brokers)"
	@echo "make demo-kafka  the same demo on a local Apache Kafka 4.4 (cached from Maven Central), schemas in _schemas"
	@echo "make test-cluster exactly-once on a three-broker Kafka cluster, partition leaders killed (also part of make test)"
	@echo "make bench       run the benchmarks (release build), results under bench/results/"
	@echo "make fuzz        each fuzz target under libFuzzer for FUZZ_SECONDS (default 60; nightly toolchain)"
	@echo "make soak        EventMart at the generator's maximum rate on Kafka for SOAK_SECONDS (default 300), two instances, a rebalance halfway;"
	@echo "                 then the exactly-once kill tests with SOAK_KILLS kills (default 40) over SOAK_RECORDS records (default 60000)"
	@echo "make test-kafka  broker-backed tests against an external Kafka at BROOK_BOOTSTRAP ($(BROOK_BOOTSTRAP))"
	@echo "make deps        install the system packages the build needs"
	@echo "make tools       deps, postgresql, chromium, openssl (test CA), Apache Kafka 4.4 from Maven Central (cached under $(BROOK_CACHE)/tools) and python-deps"
	@echo "make python-deps Confluent's Python client for the registry conformance test ($(BROOK_CACHE)/venv)"

deps:
	@scripts/install-deps.sh

python-deps:
	@scripts/install-python.sh

tools: deps python-deps
	@scripts/install-deps.sh postgresql chromium openssl
	@scripts/install-kafka.sh

fmt-check: deps
	$(CARGO) fmt --all --check

check-deps: deps
	@scripts/check-deps.sh

clippy: deps
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: tools
	$(CARGO) test --workspace --locked

test: fmt-check check-deps clippy unit

demo: deps
	@scripts/demo.sh

demo-kafka: deps
	@scripts/demo-kafka.sh

bench: deps
	@scripts/bench.sh

fuzz: deps
	@scripts/fuzz.sh

# The soak test of `make test` (30 s there), for longer; then the
# exactly-once system tests with more kills over more records.
SOAK_SECONDS ?= 300
SOAK_KILLS ?= 40
SOAK_RECORDS ?= 60000
soak: tools
	BROOK_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --locked -p brook-apps --test eventmart_processes soak -- --nocapture
	BROOK_EOS_KILLS=$(SOAK_KILLS) BROOK_EOS_RECORDS=$(SOAK_RECORDS) $(CARGO) test --locked -p brook-apps --test eos_system killed_at_random -- --nocapture --test-threads 1

# Exactly-once on three Kafka brokers (replication 3, min.insync.replicas 2)
# with partition leaders killed mid-stream; `make test` runs it too.
test-cluster: tools
	$(CARGO) test --locked -p brook-apps --test eos_system cluster_ -- --nocapture

# The same broker-backed tests, against any Kafka. Tests that restart or
# kill the broker, or run Kafka's tools on its internal listener, cannot run
# there and are skipped by name; tests that need a broker set up their way
# (TLS, SASL, ACLs, three nodes) start their own Kafka from the cached jars.
test-kafka: tools
	BROOK_BOOTSTRAP=$(BROOK_BOOTSTRAP) $(CARGO) test --locked -p brook-tests -p brook-apps -- --include-ignored --skip broker_restart --skip broker_crash --skip broker_stays_away --skip broker_killed --skip kafkas_tools --skip child_instance
