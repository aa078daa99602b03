//! brook-apps: the binaries.
//!
//! - `brook-dev-broker`: librdkafka's mock cluster as a standalone process
//!   for local development; prints its bootstrap address and serves until
//!   killed. Any Kafka client on this machine can connect to it.
//! - `brook-demo`: a small pipeline run end to end by `make demo` (page views
//!   → re-keyed through a repartition topic → counted per page → verified).
//!
//! EventMart's applications join them as the DSL and runtime land.

pub mod args;
pub mod demo;
