//! brook-apps: the binaries.
//!
//! - `brook-dev-broker`: librdkafka's mock cluster as a standalone process
//!   for local development; prints its bootstrap address and serves until
//!   killed. Any Kafka client on this machine can connect to it.
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
//! EventMart ([`eventmart`]):
//!
//! - `eventmart-demo`: `make demo` — embedded broker and registry, topics,
//!   the generator, every app and the live dashboard in one process.
//! - `eventmart`: runs one, several or all apps (per partition instance or
//!   in a consumer group) and serves the dashboard and JSON API.
//! - `eventmart-generator`: shoppers, carts and order lifecycles into Kafka.
//! - `eventmart-topics`: creates and verifies the topics from one file.

pub mod app;
pub mod args;
pub mod eventmart;
pub mod migrate;
pub mod registry;
