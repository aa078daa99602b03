//! brook-connectors: serdes and sinks.
//!
//! This crate will hold the Avro serde with Confluent's wire format (magic
//! byte, schema id, Avro binary) and the sinks: an exactly-once Parquet data
//! lake on `object_store` and a relational sink. It is empty until that work
//! lands; it depends only on `brook-topology`.
