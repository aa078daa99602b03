//! brook-schemas: EventMart's Avro schemas and a Confluent-compatible
//! schema registry.
//!
//! This crate will hold the versioned `.avsc` files, typed events,
//! compatibility checking per the Avro specification's resolution rules, and
//! the registry server. It is empty until that work lands; it depends only
//! on `brook-topology`.
