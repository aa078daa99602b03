//! brook-connectors: serdes and sinks.
//!
//! - [`avro`]: Avro serdes in Confluent's wire format (magic byte, schema
//!   id, Avro binary) with a cached schema-registry client, resolving each
//!   record's writer schema to the reader's.
//! - [`lake`]: the pieces of the Parquet data lake — Arrow schemas from
//!   Avro schemas, Parquet files with zstd/snappy, Hive partition
//!   directories by event time, offset-derived file names, and an
//!   `object_store` location to write them to.
//!   The exactly-once sink built on them is [`lake::sink`].
//! - [`postgres`]: a PostgreSQL table mirroring a stream by key
//!   (idempotent upserts and deletes, created from the Avro schema).
//! - [`source`]: sources that bring outside data into topics and resume
//!   where they stopped: a JSON-lines file source.

pub mod avro;
pub mod lake;
pub mod postgres;
pub mod source;
