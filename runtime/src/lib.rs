//! brook-runtime: runs topologies.
//!
//! A [`thread::StreamThread`] owns [`task::StreamTask`]s (one per
//! sub-topology and partition) and runs the poll → process → produce →
//! commit loop against the [`cluster::Cluster`] port (its own crate,
//! `brook-cluster`, re-exported here). Adapters: the
//! in-process [`memory::MemoryCluster`], on which the public
//! [`driver::TopologyTestDriver`] runs topologies in tests, and Kafka.
//!
//! The runtime talks to brokers through the [`kafka`] module: one place that
//! turns brook's settings into librdkafka client configs (with the
//! Java-compatible partitioner, so keys land where JVM producers and Kafka
//! Streams put them) and creates and inspects topics. [`partition`] holds the
//! same key-to-partition function in pure Rust, for code that must predict
//! where a key lives without asking a broker (static assignment, the
//! in-memory cluster, co-partitioning checks).

pub use brook_cluster as cluster;
pub use brook_cluster::{memory, partition};

pub mod driver;
pub mod kafka;
pub mod streams;
pub mod task;
pub mod thread;
pub mod tools;
