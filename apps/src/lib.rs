//! brook-apps: the binaries.
//!
//! - `brook-dev-broker`: librdkafka's mock cluster as a standalone process
//!   for local development; prints its bootstrap address and serves until
//!   killed. Any Kafka client on this machine can connect to it.
//! - `brook-demo`: a small pipeline run end to end by `make demo` (page views
//!   → re-keyed through a repartition topic → counted per page → verified).
//!
//! - `brook-state`: inspect, wipe, rebuild and reset application state.
//! - `brook-wordcount`: a word count as an application binary, the example
//!   of [`app`]: the helper that turns a topology into a binary with the
//!   common flags, config file, environment overrides, logs, a Prometheus
//!   endpoint and clean shutdown on SIGINT/SIGTERM.
//!
//! - `brook-schema-registry`: brook's Confluent-compatible schema registry
//!   (storage in a compacted `_schemas` topic via [`registry`], or in
//!   memory).
//! - `brook-schema`: check a schema file against a subject before
//!   deploying, register schemas, and run the seed's v1 → v2 dual-write
//!   migration ([`migrate`]).
//!
//! EventMart's applications join them as the DSL and runtime land.

pub mod app;
pub mod args;
pub mod demo;
pub mod eventmart;
pub mod migrate;
pub mod registry;
