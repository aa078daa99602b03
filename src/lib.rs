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

/// The names most brook programs need.
pub mod prelude {
    pub use brook_runtime::kafka::{KafkaAdmin, KafkaConfig};
    pub use brook_topology::{CleanupPolicy, TopicSpec};
}
