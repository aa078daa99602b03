//! brook-schemas: EventMart's Avro schemas, schema compatibility and a
//! Confluent-compatible schema registry.
//!
//! - [`events`]: the `.avsc` files under `schemas/subjects/<subject>/v<N>.avsc`
//!   (the seed's `user_event` v1 and v2, EventMart's service events) and a
//!   typed Rust struct for each.
//! - [`avro`]: a model of Avro schemas that checks them as the
//!   specification requires; [`compat`]: the specification's resolution
//!   rules as compatibility checks, and the registry's compatibility levels.
//! - [`codec`]: Avro binary encoding of typed values and decoding with
//!   schema resolution (a v1 reader of v2 data, a v2 reader of v1 data).
//! - [`registry`]: the schema registry's subjects, versions, ids, levels and
//!   deletes with Confluent's semantics and error codes, kept in a log in
//!   the format of Confluent's `_schemas` topic; [`server`]: its HTTP API,
//!   Confluent Schema Registry's REST interface.

pub mod avro;
pub mod codec;
pub mod compat;
pub mod events;
pub mod registry;
pub mod server;
pub mod wire;

pub use compat::CompatibilityLevel;
pub use events::Event;
