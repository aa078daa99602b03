//! brook-topology: what a brook user writes.
//!
//! This crate holds the pure, I/O-free part of brook: the DSL
//! ([`StreamsBuilder`], [`KStream`]), the Processor API beneath it
//! ([`processor`]), serdes ([`serdes`]), the logical graph the DSL compiles
//! to ([`Topology`], with [`Topology::describe`]), and the data types shared
//! by the other crates ([`TopicSpec`], [`Record`]). It never depends on a
//! Kafka client, a storage engine or an async runtime (`make test` checks
//! that), so a topology can be built, described and tested anywhere; the
//! runtime (`brook-runtime`) executes it.

pub mod cache;
pub mod error;
pub mod graph;
pub mod join;
pub mod processor;
pub mod record;
pub mod serdes;
pub mod session;
pub mod sliding;
pub mod store;
pub mod stream;
pub mod stream_join;
pub mod table;
pub mod topic;
pub mod window;
pub mod window_store;
pub mod windowed;

pub use graph::{Topology, TopologyDescription, TopologyError};
pub use join::{GlobalKTable, Joined};
pub use record::{Headers, Record, RecordMetadata, Timestamp};
pub use store::{KeyValueStore, Materialized};
pub use stream::{Consumed, KStream, Produced, Repartitioned, SplitStream, StreamsBuilder};
pub use table::{Change, Grouped, KGroupedStream, KTable};
pub use topic::{CleanupPolicy, TopicSpec, TopicSpecError};
pub use window::{TimeWindows, Window, Windowed, WindowedSerde};
pub use window_store::{SessionStore, WindowStore};
pub use windowed::{TimeWindowedKStream, WindowedKTable, WindowedStream};
