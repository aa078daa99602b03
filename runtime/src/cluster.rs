//! The `Cluster` port: what the runtime needs from a Kafka cluster.
//!
//! Tasks, the commit loop and the test driver are written against these
//! traits, not against a client library. Two adapters implement them: the
//! in-process [`MemoryCluster`](crate::memory::MemoryCluster) (deterministic;
//! the test driver runs on it) and Kafka through librdkafka (production).
//! So tests exercise the same task and commit code production runs.

use std::collections::BTreeMap;
use std::fmt;

use brook_topology::{Headers, TopicSpec, TopicSpecError};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic[partition]`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Where it is.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Key bytes (`None`: null).
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: null, a tombstone).
    pub value: Option<Vec<u8>>,
    /// Broker (or producer) timestamp, ms.
    pub timestamp: i64,
    /// Headers.
    pub headers: Headers,
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducedRecord {
    /// Target topic.
    pub topic: String,
    /// Target partition; `None`: by key (murmur2, as the Java client) or,
    /// for a null key, round robin.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Timestamp, ms.
    pub timestamp: i64,
    /// Headers.
    pub headers: Headers,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The partition does not exist.
    #[error("unknown partition {0}")]
    UnknownPartition(TopicPartition),
    /// A topic spec is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] TopicSpecError),
    /// A topic exists with another partition count than required.
    #[error("topic {topic:?} has {actual} partitions, {expected} required")]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Required.
        expected: i32,
        /// Found.
        actual: i32,
    },
    /// The client or broker failed; often transient.
    #[error("{0}")]
    Client(String),
}

/// A cluster: topics, consumers, producers.
pub trait Cluster: Send + Sync {
    /// Creates topics; existing ones are left as they are.
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError>;
    /// The partition count of `topic`.
    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError>;
    /// A consumer in consumer group `group` (for committed offsets).
    fn consumer(&self, group: &str) -> Result<Box<dyn ClusterConsumer>, ClusterError>;
    /// A producer.
    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError>;
}

/// Reads assigned partitions from their committed offsets.
pub trait ClusterConsumer: Send {
    /// Reads these partitions from now on, each from its committed offset or,
    /// without one, from the beginning.
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClusterError>;
    /// Up to `max` records available now, in partition order (no waiting).
    fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClusterError>;
    /// The end offset (the offset the next written record will get) of each partition.
    fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError>;
    /// Commits, for each partition, the offset of the next record to read.
    fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClusterError>;
}

/// Writes records.
pub trait ClusterProducer: Send {
    /// Queues a record.
    fn send(&mut self, record: ProducedRecord) -> Result<(), ClusterError>;
    /// Waits until every queued record is written.
    fn flush(&mut self) -> Result<(), ClusterError>;
}
