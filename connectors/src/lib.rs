//! brook-connectors: serdes and sinks.
//!
//! - [`avro`]: Avro serdes in Confluent's wire format (magic byte, schema
//!   id, Avro binary) with a cached schema-registry client, resolving each
//!   record's writer schema to the reader's.
//!
//! The sinks (an exactly-once Parquet data lake on `object_store`, a
//! relational sink) come with issue 7.

pub mod avro;
