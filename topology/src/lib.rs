//! brook-topology: what a brook user writes.
//!
//! This crate holds the pure, I/O-free part of brook: the description of a
//! stream-processing topology and the data types shared by every other crate.
//! It never depends on a Kafka client, a storage engine or an async runtime
//! (`make test` checks that), so a topology can be built, described and
//! tested anywhere.
//!
//! Today it holds [`TopicSpec`], the declaration of a topic (partitions,
//! replication, configs) that user topologies, internal repartition and
//! changelog topics and EventMart's topic provisioning all share.

pub mod topic;

pub use topic::{CleanupPolicy, TopicSpec, TopicSpecError};
