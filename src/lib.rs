//! brook: Kafka Streams-style stream processing in Rust.
//!
//! This facade re-exports brook's crates so applications depend on one
//! package:
//!
//! - [`topology`]: the DSL and the pure data types (no I/O);
//! - [`state`]: state stores;
//! - [`runtime`]: running topologies against Kafka;
//! - [`connectors`]: serdes and sinks;
//! - [`schemas`]: Avro schemas and the schema registry.
//!
//! The prelude holds what a program writes first: a word count per minute,
//! run against Kafka, with nothing else imported:
//!
//! ```no_run
//! use brook::prelude::*;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let builder = StreamsBuilder::new();
//!     builder
//!         .stream("lines", Consumed::with(Utf8, Utf8))
//!         .flat_map_values(|line: String| {
//!             line.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
//!         })
//!         .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
//!         .windowed_by(TimeWindows::tumbling(
//!             Duration::from_secs(60),
//!             Duration::from_secs(10),
//!         )?)
//!         .count(Materialized::named("words-per-minute", Utf8, Json::<i64>::new()).with_caching())
//!         .to_stream()
//!         .map(|w: Windowed<String>, n: Option<i64>| (w.key, n.unwrap_or(0)))
//!         .to("word-counts", Produced::with(Utf8, Json::<i64>::new()));
//!     let cluster = Arc::new(KafkaCluster::new(KafkaConfig::new("127.0.0.1:9092"))?);
//!     let mut streams = KafkaStreams::new(
//!         builder.build()?,
//!         StreamsConfig::new("word-count").exactly_once(),
//!         cluster,
//!     );
//!     streams.start()?;
//!     std::thread::sleep(Duration::from_secs(60));
//!     streams.close()?;
//!     Ok(())
//! }
//! ```
//!
//! ```
//! use brook::prelude::*;
//!
//! let changelog = TopicSpec::new("app-counts-changelog", 3).cleanup_policy(CleanupPolicy::Compact);
//! assert!(changelog.is_compacted());
//! let config = KafkaConfig::new("127.0.0.1:9092");
//! assert_eq!(config.producer().get("partitioner"), Some("murmur2_random"));
//! ```

pub use brook_connectors as connectors;
pub use brook_runtime as runtime;
pub use brook_schemas as schemas;
pub use brook_state as state;
pub use brook_topology as topology;

/// The names most brook programs need: the DSL, serdes, windows, and
/// running a topology (`use brook::prelude::*;`).
pub mod prelude {
    pub use std::sync::Arc;
    pub use std::time::Duration;

    pub use brook_runtime::driver::TopologyTestDriver;
    pub use brook_runtime::kafka::{KafkaAdmin, KafkaCluster, KafkaConfig};
    pub use brook_runtime::streams::{KafkaStreams, StreamsState};
    pub use brook_runtime::thread::{ProcessingGuarantee, StreamsConfig};
    pub use brook_topology::serdes::{Bincode, Json, Nullable, RawBytes, Serde, Utf8};
    pub use brook_topology::session::SessionWindows;
    pub use brook_topology::sliding::SlidingWindows;
    pub use brook_topology::{
        Change, CleanupPolicy, Consumed, Grouped, KStream, KTable, Materialized, Produced, Record,
        Repartitioned, StreamsBuilder, TimeWindows, TopicSpec, Topology, Window, Windowed,
    };
}
