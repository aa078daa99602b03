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
//!
//! Every binary linking this crate allocates with mimalloc: the engine
//! allocates a few small buffers per record, and with glibc's malloc a
//! quarter of a stateless engine run went to malloc, free and the page
//! faults of memory handed back to the OS and taken again. `make bench`
//! measured the engine's stateless workload at 1.72M records/s with glibc
//! and 2.37M with mimalloc (back-to-back runs); an application binary of
//! your own gets the same by declaring it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
//! ```

/// The allocator of brook's binaries (see above).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod args;
pub mod eventmart;
pub mod migrate;
pub mod registry;
