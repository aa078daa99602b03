//! brook-cluster: the `Cluster` port, what brook needs from a Kafka
//! cluster, with no Kafka client in it.
//!
//! Tasks, the commit loop, the test driver and the connectors are written
//! against these traits, not against a client library. Two adapters
//! implement them: the in-process [`MemoryCluster`](crate::memory::MemoryCluster)
//! here (deterministic; the test driver runs on it) and Kafka through
//! librdkafka in `brook-runtime` (production). So tests exercise the same
//! task and commit code production runs, and a connector depends on the
//! port rather than on the engine. [`partition`] is Kafka's key
//! partitioning in pure Rust. `brook-runtime` re-exports this crate as
//! `brook_runtime::cluster` (with `memory` and `partition` beside it).

pub mod memory;
pub mod partition;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use brook_topology::{Headers, TopicSpec, TopicSpecError};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic; shared, so copying a partition's name (once per record
    /// on the hot path) allocates nothing.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic[partition]`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
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

/// An error and its causes, `: `-separated (for logs and messages that
/// must say everything on one line).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A subscribed consumer's group membership (group, member, generation),
/// as a transaction needs it: offsets committed with it are refused if the
/// member has since lost the partitions (exactly_once_v2's zombie fencing).
/// Opaque: each adapter puts its own type inside.
#[derive(Clone)]
pub struct GroupMetadata(Arc<dyn Any + Send + Sync>);

impl GroupMetadata {
    /// Wraps an adapter's membership value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        GroupMetadata(Arc::new(value))
    }

    /// The adapter's value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupMetadata")
    }
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
    /// Another producer with the same transactional id took over; this one
    /// must stop and close its tasks without committing.
    #[error(
        "producer for transactional id {transactional_id:?} was fenced (epoch {epoch} < {current})"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// This producer's epoch.
        epoch: u32,
        /// The current epoch.
        current: u32,
    },
    /// The consumer group rebalanced under this member: it no longer owns
    /// partitions it tried to commit. Its uncommitted work must be dropped
    /// and its tasks taken up again from the committed offsets.
    #[error("consumer group {group:?} rebalanced: {reason}")]
    Rebalanced {
        /// The group.
        group: String,
        /// What was refused.
        reason: String,
    },
    /// The open transaction failed and can only be aborted (records timed
    /// out while the process was paused, say, or the coordinator aborted it
    /// after `transaction.timeout.ms`): like [`ClusterError::Rebalanced`],
    /// the uncommitted work must be dropped and the tasks taken up again
    /// from the committed offsets (Kafka Streams' task-corrupted case).
    #[error("the transaction of {transactional_id:?} failed and is aborted: {reason}")]
    TransactionAborted {
        /// The transactional id.
        transactional_id: String,
        /// What failed.
        reason: String,
    },
    /// The broker refused an operation for want of an ACL. Retrying does
    /// not mend it: the principal needs the ACL (the README lists the set
    /// a brook app needs).
    #[error("not authorized to {operation} {resource}: {detail}")]
    NotAuthorized {
        /// The ACL operation the request needed (`Read`, `Write`, `Create`,
        /// `Describe`).
        operation: &'static str,
        /// The resource, e.g. `topic "orders"`, `group "app"`,
        /// `transactional id "app-0_1"`.
        resource: String,
        /// What was refused, and the broker's words.
        detail: String,
    },
    /// A transaction call out of order (commit without begin, send outside one, ...).
    #[error("transaction state: {0}")]
    TransactionState(String),
    /// The cluster could not be reached or did not answer in time (broker
    /// down or restarting, no coordinator or leader yet, a timeout):
    /// trying again later may succeed.
    #[error("{0} (the cluster is unavailable; retrying may help)")]
    Unavailable(String),
    /// The client or broker failed in a way retrying does not mend
    /// (authentication, authorization, a record too large, bad settings).
    #[error("{0}")]
    Client(String),
}

impl ClusterError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClusterError::Unavailable(_))
    }
}

/// A cluster: topics, consumers, producers.
pub trait Cluster: Send + Sync {
    /// Creates topics; existing ones are left as they are.
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError>;
    /// The partition count of `topic`.
    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError>;
    /// The names of all topics.
    fn list_topics(&self) -> Result<Vec<String>, ClusterError>;
    /// Deletes topics and their data; absent ones are ignored.
    fn delete_topics(&self, topics: &[String]) -> Result<(), ClusterError>;
    /// A consumer in consumer group `group` (for committed offsets).
    fn consumer(
        &self,
        group: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError>;
    /// A static member of consumer group `group` (Kafka's
    /// `group.instance.id`, KIP-345) named `instance`: when a consumer with
    /// the same name joins again within the session timeout (a restarted
    /// process), it gets its partitions back without a rebalance; a static
    /// member that leaves keeps them until the session times out. Two
    /// consumers running at once need distinct names (the later fences the
    /// earlier). The default, for clusters without group sessions (the
    /// in-memory one), is a [`consumer`](Self::consumer).
    fn static_consumer(
        &self,
        group: &str,
        instance: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        let _ = instance;
        self.consumer(group, isolation)
    }
    /// A read_committed consumer for reading assigned partitions up to a
    /// known end and for offset queries (restoring stores, measuring lag).
    /// Unlike [`consumer`](Self::consumer)'s, its fetches do not wait at the
    /// broker for records that are not there yet: a broker answers one
    /// connection's requests in order, so an offset query sent after a
    /// partition was read to its end would otherwise wait out that long poll
    /// (500 ms with Kafka's defaults; once per restored store, before this).
    fn restore_consumer(&self, group: &str) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        self.consumer(group, Isolation::ReadCommitted)
    }
    /// A producer whose records are visible once flushed.
    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError>;
    /// A transactional producer for `transactional_id`. Creating one fences
    /// every earlier producer with the same id (their epoch is now stale)
    /// and aborts the transaction such a producer left open.
    fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<Box<dyn ClusterProducer>, ClusterError>;
}

/// Which records a consumer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything written, including records of open or aborted transactions.
    ReadUncommitted,
    /// Only records outside transactions or of committed ones; a partition
    /// is read up to its first open transaction (the last stable offset).
    ReadCommitted,
}

/// What a group rebalance changed for one consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalance {
    /// The group generation now in force.
    pub generation: u64,
    /// Partitions this consumer no longer owns (commit their work first).
    pub revoked: Vec<TopicPartition>,
    /// Partitions it now owns, read from the group's committed offsets.
    pub assigned: Vec<TopicPartition>,
}

/// Reads assigned partitions from their committed offsets.
pub trait ClusterConsumer: Send {
    /// Joins the consumer group for `topics`; the group assigns partitions.
    /// The resulting assignment arrives as a [`Rebalance`] from
    /// [`take_rebalance`](Self::take_rebalance).
    fn subscribe(&mut self, _topics: &[String]) -> Result<(), ClusterError> {
        Err(ClusterError::Client(
            "this consumer does not support group subscription".into(),
        ))
    }
    /// The assignment change since the last call, if the group rebalanced.
    fn take_rebalance(&mut self) -> Result<Option<Rebalance>, ClusterError> {
        Ok(None)
    }
    /// Leaves the consumer group (the others get its partitions).
    fn close(&mut self) -> Result<(), ClusterError> {
        Ok(())
    }
    /// This member's group membership, once subscribed, for
    /// [`ClusterProducer::send_offsets_to_transaction`].
    fn group_metadata(&self) -> Option<GroupMetadata> {
        None
    }
    /// Reads these partitions from now on, each from its committed offset or,
    /// without one, from the beginning.
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClusterError>;
    /// Up to `max` records available now, in partition order (no waiting).
    fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClusterError>;
    /// [`poll`](Self::poll), appending to `out`: a caller polling in a
    /// loop reuses one buffer.
    fn poll_into(&mut self, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<(), ClusterError> {
        out.extend(self.poll(max)?);
        Ok(())
    }
    /// Up to `max` records that are here already, appended to `out`; never
    /// waits (a poll that keeps the consumer in its group while the caller
    /// still has work).
    fn poll_now(&mut self, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<(), ClusterError> {
        self.poll_into(max, out)
    }
    /// Reads an assigned partition from `offset` on.
    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClusterError>;
    /// The offset of the next record [`poll`](Self::poll) considers in an
    /// assigned partition (past records a read-committed consumer skips).
    fn position(&self, tp: &TopicPartition) -> Result<i64, ClusterError>;
    /// For each partition, the first offset whose timestamp is at or after
    /// `timestamp` (ms), or the end offset when there is none; `i64::MIN`
    /// gives the earliest offset.
    fn offsets_for_times(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError>;
    /// The end offset (the offset the next written record will get) of each partition.
    fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError>;
    /// Commits, for each partition, the offset of the next record to read.
    fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClusterError>;
}

/// Writes records, optionally in transactions.
pub trait ClusterProducer: Send {
    /// Queues a record (inside the open transaction, for a transactional producer).
    fn send(&mut self, record: ProducedRecord) -> Result<(), ClusterError>;
    /// Waits until every queued record is written.
    fn flush(&mut self) -> Result<(), ClusterError>;
    /// For each partition this producer wrote to, the offset after the last
    /// of its records the cluster acknowledged (for a transactional
    /// producer, records of committed and open transactions). Changelog
    /// checkpoints are taken from these.
    fn written_offsets(&self) -> BTreeMap<TopicPartition, i64>;
    /// Starts a transaction.
    fn begin_transaction(&mut self) -> Result<(), ClusterError> {
        Err(ClusterError::TransactionState(
            "not a transactional producer".into(),
        ))
    }
    /// Adds `group`'s consumed offsets to the open transaction: they are
    /// committed if and only if the transaction is. With the membership of
    /// a subscribed consumer, offsets of partitions it no longer owns are
    /// refused ([`ClusterError::Rebalanced`]).
    fn send_offsets_to_transaction(
        &mut self,
        _group: &str,
        _offsets: &BTreeMap<TopicPartition, i64>,
        _member: Option<&GroupMetadata>,
    ) -> Result<(), ClusterError> {
        Err(ClusterError::TransactionState(
            "not a transactional producer".into(),
        ))
    }
    /// Writes what is queued and commits the transaction atomically.
    fn commit_transaction(&mut self) -> Result<(), ClusterError> {
        Err(ClusterError::TransactionState(
            "not a transactional producer".into(),
        ))
    }
    /// Discards the transaction: its records are never visible to
    /// read-committed consumers, its offsets never committed.
    fn abort_transaction(&mut self) -> Result<(), ClusterError> {
        Err(ClusterError::TransactionState(
            "not a transactional producer".into(),
        ))
    }
}
