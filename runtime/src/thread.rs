//! A stream thread: owns tasks, one consumer and one producer, and runs the
//! poll → process → produce → commit loop.
//!
//! On start it creates the topology's internal topics (a repartition topic
//! gets the partition count of the sub-topology that writes it, unless one
//! is given; a store's compacted changelog gets one partition per task of
//! its sub-topology) and the dead-letter topic, checks that the input topics
//! of each sub-topology are co-partitioned, creates one task per
//! (sub-topology, partition) it is assigned, restores each task's stores
//! from their changelog partitions, and only then assigns the input
//! partitions to its consumer.
//!
//! State: with a state directory, each store is a RocksDB database in its
//! task's directory and restore replays only the changelog past the task's
//! checkpoint; without one, stores live in memory and are rebuilt from their
//! changelogs on every start. Writes stay in each store's transaction buffer
//! until the commit, so local state only ever holds committed changes.
//!
//! The commit cycle:
//!
//! 1. every task turns its buffered store writes into changelog records
//!    (one per key written since the last commit);
//! 2. all output — results, dead letters, changelog records — is sent;
//! 3. at-least-once: the producer is flushed, then the consumed offsets are
//!    committed (a crash between the two re-processes records but loses
//!    none). Exactly-once: the consumed offsets are added to the open
//!    transaction, which then commits outputs, changelog records and offsets
//!    atomically (a crash before the commit aborts all of them);
//! 4. only then are the buffered writes applied to the stores, and every
//!    `checkpoint_interval_records` changelog records the stores are flushed
//!    and the task's checkpoint written.
//!
//! A crash anywhere leaves local state a prefix of the committed changelog,
//! not ahead of its checkpoint, so a restart restores only the tail.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_topology::graph::{InternalTopicKind, NodeKind, TopicName};
use brook_topology::processor::TaskId;
use brook_topology::{CleanupPolicy, Timestamp, TopicSpec, Topology};

use crate::cluster::{
    Cluster, ClusterConsumer, ClusterError, ClusterProducer, Isolation, ProducedRecord,
    TopicPartition,
};
use brook_state::{
    Checkpoint, CheckpointError, InMemoryKeyValueStore, KeyValueBytes, RocksDbConfig, RocksDbEnv,
    RocksDbKeyValueStore, SharedStore, StateDirectory, StoreMetrics,
};
use brook_topology::graph::GlobalStore;

use crate::cluster::ConsumedRecord;
use crate::task::{
    BadRecords, DeserializationHandler, RecordLimits, StreamTask, TaskError, TaskMetrics,
    record_bytes,
};

/// Records a task processes before the next task's turn (and before the
/// clock is read for the processing budget).
const PROCESS_BATCH: usize = 64;

/// What a crash may do to results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Nothing is lost; after a crash some records are processed again.
    AtLeastOnce,
    /// Outputs, changelog records and input offsets commit atomically in
    /// one transaction per commit (Kafka's exactly_once_v2).
    ExactlyOnceV2,
}

/// Settings of a streams application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Names the consumer group and prefixes internal topics.
    pub application_id: String,
    /// How often offsets are committed.
    pub commit_interval: Duration,
    /// Records read per poll.
    pub max_poll_records: usize,
    /// Where undeserializable records go; default `<application.id>-dead-letters`.
    pub dead_letter_topic: Option<String>,
    /// What happens to undeserializable records (default: dead letters).
    pub deserialization_handler: DeserializationHandler,
    /// What else makes a record bad: its size, a timestamp far from the
    /// wall clock (default: larger than 1 MiB; timestamps unbounded).
    pub record_limits: RecordLimits,
    /// At-least-once (default) or exactly-once.
    pub guarantee: ProcessingGuarantee,
    /// Names this instance's transactional producer:
    /// `<application.id>-<instance_id>`. A restarted instance must keep
    /// its id, so that it fences its predecessor; instances running at the
    /// same time need distinct ids (they would fence each other), which
    /// `brook_apps::app` sees to: `k` in static mode, `instance-id` or a
    /// per-process id in group mode.
    pub instance_id: String,
    /// Replication factor of the internal topics brook creates
    /// (changelogs, repartition topics, dead letters; Kafka Streams'
    /// `replication.factor`). Default -1: the broker's
    /// `default.replication.factor`.
    pub replication_factor: i32,
    /// Where RocksDB stores and checkpoints live; `None`: stores in memory,
    /// rebuilt from their changelogs on every start.
    pub state_dir: Option<PathBuf>,
    /// Memory budget of all RocksDB stores of the instance.
    pub rocksdb: RocksDbConfig,
    /// Uncommitted store writes held per thread before a commit is forced,
    /// bytes.
    pub max_uncommitted_bytes: usize,
    /// Changelog records written between two checkpoints of a task (0:
    /// checkpoint at every commit). Fewer checkpoints cost less I/O; more
    /// shorten the restore after a crash.
    pub checkpoint_interval_records: u64,
    /// Stream threads per instance (`KafkaStreams`).
    pub num_threads: usize,
    /// How long one iteration of a stream thread processes buffered records
    /// before it polls again (and commits, if due); the rest waits in the
    /// tasks' buffers, and while it does the consumer takes at most one
    /// record per poll. Keeps a slow topology in its consumer group: a
    /// consumer that does not poll for `max.poll.interval.ms` (Kafka's
    /// default 5 min) is put out of it. Default 1 s.
    pub processing_budget: Duration,
    /// How long a stream thread keeps being replaced after failures that
    /// may go away by themselves (cluster or schema registry unavailable)
    /// before the instance gives up and stops (Kafka Streams'
    /// `task.timeout.ms`; default 5 min). Other failures stop the instance
    /// at once unless an uncaught-error handler says otherwise.
    pub retry_timeout: Duration,
    /// `Some((k, n))`: this is instance `k` of `n` and owns a fixed share
    /// of the tasks, without group rebalances; `None`: the consumer group
    /// assigns tasks (`KafkaStreams`).
    pub static_assignment: Option<(u32, u32)>,
}

impl StreamsConfig {
    /// Defaults for `application_id`: at-least-once, commit every 30 s
    /// (Kafka Streams' at-least-once default), 500 records per poll, stores
    /// in memory, 64 MiB of uncommitted writes, a checkpoint every 10 000
    /// changelog records.
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            commit_interval: Duration::from_secs(30),
            max_poll_records: 500,
            dead_letter_topic: None,
            deserialization_handler: DeserializationHandler::DeadLetter,
            record_limits: RecordLimits::default(),
            guarantee: ProcessingGuarantee::AtLeastOnce,
            instance_id: "0".into(),
            replication_factor: TopicSpec::BROKER_DEFAULT_REPLICATION,
            state_dir: None,
            rocksdb: RocksDbConfig::default(),
            max_uncommitted_bytes: 64 << 20,
            checkpoint_interval_records: 10_000,
            num_threads: 1,
            processing_budget: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(300),
            static_assignment: None,
        }
    }

    /// Exactly-once, committing every 100 ms (Kafka Streams' default for it).
    pub fn exactly_once(mut self) -> Self {
        self.guarantee = ProcessingGuarantee::ExactlyOnceV2;
        self.commit_interval = Duration::from_millis(100);
        self
    }

    /// RocksDB stores under `dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The transactional id of this instance's producer.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.application_id, self.instance_id)
    }

    /// The dead-letter topic's name.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}-dead-letters", self.application_id))
    }

    /// The handler and dead-letter topic for bad records.
    pub fn bad_records(&self) -> BadRecords {
        BadRecords {
            handler: self.deserialization_handler,
            dead_letter_topic: self.dead_letter_topic(),
            limits: self.record_limits,
        }
    }
}

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A source topic does not exist; create it first.
    #[error("source topic {topic:?} does not exist; create it before starting the application")]
    MissingSourceTopic {
        /// The topic.
        topic: String,
    },
    /// The inputs of a sub-topology differ in partition count.
    #[error(
        "the input topics of sub-topology {subtopology} must have the same number of partitions \
         (co-partitioning), but have: {counts}"
    )]
    NotCopartitioned {
        /// The sub-topology.
        subtopology: u32,
        /// `topic: partitions` for each input.
        counts: String,
    },
    /// A store failed outside a task (global stores).
    #[error("store {store} failed")]
    Store {
        /// The store.
        store: String,
        /// What failed.
        source: brook_topology::store::StoreError,
    },
    /// A global store's update failed.
    #[error("global store {store} failed")]
    Global {
        /// The store.
        store: String,
        /// What went wrong.
        source: Box<TaskError>,
    },
    /// A task failed.
    #[error("task {task} failed")]
    Task {
        /// The task.
        task: TaskId,
        /// What went wrong.
        source: Box<TaskError>,
    },
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A [`FaultInjector`] stopped the thread here (tests).
    #[error("injected fault at {0:?}")]
    InjectedFault(FaultPoint),
}

impl RuntimeError {
    /// Whether the failure may go away by itself: the cluster or the
    /// schema registry could not be reached. By default an instance then
    /// replaces the failed thread after a pause (its tasks resume from
    /// their last commit), for up to [`StreamsConfig::retry_timeout`].
    pub fn is_retryable(&self) -> bool {
        match self {
            RuntimeError::Cluster(e) => e.is_retryable(),
            RuntimeError::Task { source, .. } | RuntimeError::Global { source, .. } => {
                matches!(**source, TaskError::Unavailable { .. })
            }
            _ => false,
        }
    }
}

/// A step of the commit cycle or of restore where a test can make the
/// thread fail as if the process had crashed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultPoint {
    /// Records were processed; nothing of this commit was sent yet.
    BeforeProduce,
    /// Outputs and changelog records were sent (and flushed, at-least-once).
    AfterProduce,
    /// Exactly-once: the offsets were added to the transaction.
    AfterSendOffsets,
    /// Right before the transaction (or the offsets) commit.
    BeforeCommit,
    /// The cluster committed; local stores were not updated yet.
    AfterCommit,
    /// Local stores were updated; the processors' `committed` hooks have
    /// not run yet.
    AfterLocalApply,
    /// The processors' `committed` hooks ran (an external two-phase commit
    /// published); the checkpoint was not written yet.
    AfterCommittedHooks,
    /// A checkpoint was written.
    AfterCheckpoint,
    /// In the middle of restoring a store (after its first batch).
    DuringRestore,
}

impl FaultPoint {
    /// Every point, in cycle order.
    pub const ALL: [FaultPoint; 9] = [
        FaultPoint::BeforeProduce,
        FaultPoint::AfterProduce,
        FaultPoint::AfterSendOffsets,
        FaultPoint::BeforeCommit,
        FaultPoint::AfterCommit,
        FaultPoint::AfterLocalApply,
        FaultPoint::AfterCommittedHooks,
        FaultPoint::AfterCheckpoint,
        FaultPoint::DuringRestore,
    ];
}

/// Decides whether the thread fails at a [`FaultPoint`] (for crash tests;
/// production threads have none).
pub trait FaultInjector: Send + Sync {
    /// `true`: fail now.
    fn inject(&self, point: FaultPoint) -> bool;
}

/// Hears about restoration progress (as Kafka Streams' `StateRestoreListener`).
pub trait RestoreListener: Send + Sync {
    /// Restoring `store` of `task` from `changelog`, offsets `from..to`.
    fn on_restore_start(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _from: i64,
        _to: i64,
    ) {
    }
    /// A batch was written; `restored` records so far, `remaining` to go.
    fn on_batch_restored(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _restored: u64,
        _remaining: u64,
    ) {
    }
    /// Done: `restored` records in `elapsed`.
    fn on_restore_end(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _restored: u64,
        _elapsed: Duration,
    ) {
    }
}

/// The default listener: logs start, progress (at most every 5 s) and end,
/// with records per second.
#[derive(Debug, Default)]
pub struct LoggingRestoreListener {
    last: std::sync::Mutex<Option<Instant>>,
}

impl RestoreListener for LoggingRestoreListener {
    fn on_restore_start(
        &self,
        task: TaskId,
        store: &str,
        changelog: &TopicPartition,
        from: i64,
        to: i64,
    ) {
        tracing::info!(%task, store, %changelog, from, to, "restoring {} records", to - from);
    }

    fn on_batch_restored(
        &self,
        task: TaskId,
        store: &str,
        _changelog: &TopicPartition,
        restored: u64,
        remaining: u64,
    ) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            tracing::info!(%task, store, restored, remaining, "restoring");
        }
    }

    fn on_restore_end(
        &self,
        task: TaskId,
        store: &str,
        changelog: &TopicPartition,
        restored: u64,
        elapsed: Duration,
    ) {
        let rate = restored as f64 / elapsed.as_secs_f64().max(1e-9);
        tracing::info!(%task, store, %changelog, restored, records_per_sec = rate as u64, "restored");
    }
}

/// Restoration so far, over all stores of a thread.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RestoreMetrics {
    /// Changelog records applied.
    pub records: u64,
    /// Time spent restoring.
    pub elapsed: Duration,
    /// Stores restored (including ones with nothing to replay).
    pub stores: u64,
}

impl RestoreMetrics {
    /// Records per second while restoring.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a thread is given besides its configuration.
#[derive(Clone, Default)]
pub struct ThreadOptions {
    /// Restoration progress goes here; default: [`LoggingRestoreListener`].
    pub restore_listener: Option<Arc<dyn RestoreListener>>,
    /// Crash tests: where to fail.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// The RocksDB memory budget shared with other threads of the instance;
    /// default: one made from the configuration.
    pub rocksdb: Option<RocksDbEnv>,
    /// The instance's state directory, shared by its threads (it is locked
    /// once per instance); default: opened from the configuration.
    pub state_directory: Option<Arc<StateDirectory>>,
}

impl std::fmt::Debug for ThreadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadOptions")
            .field("faults", &self.faults.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a source topic's partition count is not known: it is missing, or
/// the app may not read it (a refused Describe means a missing Read ACL,
/// as Read includes Describe).
fn source_topic_err(e: ClusterError) -> RuntimeError {
    match e {
        ClusterError::UnknownTopic(topic) => RuntimeError::MissingSourceTopic { topic },
        ClusterError::NotAuthorized {
            operation: "Describe",
            resource,
            detail,
        } => ClusterError::NotAuthorized {
            operation: "Read",
            resource: format!("source {resource}"),
            detail,
        }
        .into(),
        other => other.into(),
    }
}

/// Resolves partition counts of every source topic, creating internal
/// topics (and the dead-letter topic) as needed.
fn prepare_topics(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &dyn Cluster,
) -> Result<HashMap<TopicName, i32>, RuntimeError> {
    let app = &config.application_id;
    let mut counts: HashMap<TopicName, i32> = HashMap::new();
    for global in topology.global_stores() {
        let name = global.topic.resolve(app);
        let count = cluster.partition_count(&name).map_err(source_topic_err)?;
        counts.insert(global.topic.clone(), count);
    }
    for sub in topology.subtopologies() {
        for topic in &sub.source_topics {
            if let TopicName::User(name) = topic {
                let count = cluster.partition_count(name).map_err(source_topic_err)?;
                counts.insert(topic.clone(), count);
            }
        }
    }
    // An internal topic's writer may itself read internal topics: resolve
    // until nothing changes.
    let mut pending: Vec<_> = topology.internal_topics().to_vec();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|internal| {
            let writer = topology.subtopologies().iter().find(|s| {
                s.nodes.iter().any(|&n| {
                    matches!(&topology.nodes()[n].kind, NodeKind::Sink(sink) if sink.topic == internal.name)
                })
            });
            let upstream = writer.map(|w| w.source_topics.iter().map(|t| counts.get(t).copied()).collect::<Option<Vec<_>>>());
            let count = match (internal.partitions, upstream) {
                (Some(explicit), _) => explicit,
                (None, Some(Some(upstream))) => upstream.into_iter().max().unwrap_or(1),
                _ => return true,
            };
            counts.insert(internal.name.clone(), count);
            false
        });
        if pending.len() == before {
            // Written by nothing we can size: fall back to one partition.
            for internal in pending.drain(..) {
                counts.insert(internal.name.clone(), 1);
            }
        }
    }
    let mut specs = Vec::new();
    for internal in topology.internal_topics() {
        let count = counts[&internal.name];
        let spec = TopicSpec::new(internal.name.resolve(app), count)
            .replication(config.replication_factor);
        specs.push(match internal.kind {
            InternalTopicKind::Repartition => spec.cleanup_policy(CleanupPolicy::Delete),
        });
    }
    specs
        .push(TopicSpec::new(config.dead_letter_topic(), 1).replication(config.replication_factor));
    cluster.create_topics(&specs)?;
    for spec in &specs {
        let actual = cluster.partition_count(&spec.name)?;
        let internal = topology
            .internal_topics()
            .iter()
            .any(|t| t.name.resolve(app) == spec.name);
        if internal && actual != spec.partitions {
            return Err(ClusterError::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            }
            .into());
        }
    }
    Ok(counts)
}

/// Where a store's restore starts: its checkpointed offset if its local
/// state survived, else the beginning.
fn restore_start(
    checkpoint: Option<&Checkpoint>,
    existed: &dyn Fn(&str) -> bool,
    store: &str,
    tp: &TopicPartition,
) -> i64 {
    match checkpoint.and_then(|c| c.offset(&tp.topic, tp.partition)) {
        Some(entry) if existed(store) => entry.offset,
        _ => 0,
    }
}

/// Reads changelog partition `tp` from offset `from` to `end` in batches
/// of up to 10 000 `(key, value)` records, handing each to `apply` with
/// the offset after it and the records read so far; then stops fetching
/// (an idle consumer answers offset queries at once, a fetching one queues
/// them behind its long polls). `what` names the work in errors. Returns
/// the records read.
pub(crate) fn replay_changelog(
    consumer: &mut dyn ClusterConsumer,
    tp: &TopicPartition,
    from: i64,
    end: i64,
    what: &str,
    mut apply: impl FnMut(&[(Vec<u8>, Option<Vec<u8>>)], i64, u64) -> Result<(), RuntimeError>,
) -> Result<u64, RuntimeError> {
    const BATCH: usize = 10_000;
    consumer.assign(std::slice::from_ref(tp))?;
    consumer.seek(tp, from)?;
    let mut read = 0u64;
    let mut idle_polls = 0;
    let mut progress = Instant::now();
    loop {
        let position = consumer.position(tp)?;
        if position >= end {
            break;
        }
        let records = consumer.poll(BATCH)?;
        if records.is_empty() {
            idle_polls += 1;
            // Nothing for a while below the end offset the broker gave: its
            // leader is away, most likely (killed mid-restore, say). That
            // mends: the thread is replaced and restores again, until the
            // retry timeout.
            if idle_polls > 100 && progress.elapsed() > Duration::from_secs(10) {
                return Err(ClusterError::Unavailable(format!(
                    "{what}: {tp} stopped at offset {position}, expected {end}; \
                     nothing read for {} s",
                    progress.elapsed().as_secs()
                ))
                .into());
            }
            continue;
        }
        idle_polls = 0;
        progress = Instant::now();
        let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = records
            .into_iter()
            .filter(|r| r.offset < end)
            .map(|r| (r.key.unwrap_or_default(), r.value))
            .collect();
        read += batch.len() as u64;
        let next = consumer.position(tp)?.min(end);
        apply(&batch, next, read)?;
    }
    consumer.assign(&[])?;
    Ok(read)
}

/// Replays the changelog of every logged store of `task` from where its
/// local state ends to the changelog's end, in batches.
#[allow(clippy::too_many_arguments)]
fn restore_task(
    consumer: &mut dyn ClusterConsumer,
    task: &mut StreamTask,
    checkpoint: Option<&Checkpoint>,
    existed: &dyn Fn(&str) -> bool,
    listener: &dyn RestoreListener,
    faults: Option<&dyn FaultInjector>,
    metrics: &mut RestoreMetrics,
) -> Result<(), RuntimeError> {
    let task_err = |id, source| RuntimeError::Task {
        task: id,
        source: Box::new(source),
    };
    let id = task.id();
    for (store, tp) in task.changelog_partitions() {
        let started = Instant::now();
        let end = consumer.end_offsets(std::slice::from_ref(&tp))?[&tp];
        let mut from = restore_start(checkpoint, existed, &store, &tp);
        if from > end {
            // The changelog is shorter than local state says (it was
            // deleted and recreated): local state cannot be trusted.
            tracing::warn!(task = %id, store, %tp, checkpoint = from, end, "changelog is behind the checkpoint; rebuilding the store from scratch");
            task.clear_store(&store).map_err(|e| task_err(id, e))?;
            from = 0;
        }
        metrics.stores += 1;
        if from == end {
            task.restore_batch(&store, &[], end)
                .map_err(|e| task_err(id, e))?;
            continue;
        }
        listener.on_restore_start(id, &store, &tp, from, end);
        let what = format!("restoring store {store} of task {id}");
        let restored = replay_changelog(consumer, &tp, from, end, &what, |batch, next, so_far| {
            task.restore_batch(&store, batch, next)
                .map_err(|e| task_err(id, e))?;
            listener.on_batch_restored(
                id,
                &store,
                &tp,
                so_far,
                u64::try_from(end - next).unwrap_or(0),
            );
            if faults.is_some_and(|f| f.inject(FaultPoint::DuringRestore)) {
                return Err(RuntimeError::InjectedFault(FaultPoint::DuringRestore));
            }
            Ok(())
        })?;
        task.restore_batch(&store, &[], end)
            .map_err(|e| task_err(id, e))?;
        let elapsed = started.elapsed();
        metrics.records += restored;
        metrics.elapsed += elapsed;
        listener.on_restore_end(id, &store, &tp, restored, elapsed);
    }
    Ok(())
}

/// Keeps the global stores current: reads every partition of each global
/// topic, from the beginning on start (global stores are rebuilt from their
/// topics, which serve as their changelogs).
struct GlobalUpdater {
    consumer: Box<dyn ClusterConsumer>,
    /// Global topic name → its spec and store.
    stores: HashMap<String, (GlobalStore, SharedStore)>,
    bad_records: BadRecords,
}

impl GlobalUpdater {
    fn start(
        cluster: &dyn Cluster,
        topology: &Topology,
        config: &StreamsConfig,
        counts: &HashMap<TopicName, i32>,
    ) -> Result<Option<Self>, RuntimeError> {
        if topology.global_stores().is_empty() {
            return Ok(None);
        }
        let app = &config.application_id;
        let mut stores = HashMap::new();
        let mut partitions = Vec::new();
        for global in topology.global_stores() {
            let topic = global.topic.resolve(app);
            for p in 0..counts.get(&global.topic).copied().unwrap_or(1) {
                partitions.push(TopicPartition::new(topic.clone(), p));
            }
            stores.insert(topic, (global.clone(), SharedStore::new()));
        }
        // A group that never commits: every start reads the topics from the beginning.
        let mut consumer = cluster.consumer(&format!("{app}-global"), Isolation::ReadCommitted)?;
        consumer.assign(&partitions)?;
        let ends = consumer.end_offsets(&partitions)?;
        let mut updater = GlobalUpdater {
            consumer,
            stores,
            bad_records: config.bad_records(),
        };
        // Load everything present before any task processes a record.
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        while ends
            .iter()
            .any(|(tp, end)| positions.get(tp).copied().unwrap_or(0) < *end)
        {
            let records = updater.consumer.poll(10_000)?;
            if records.is_empty() {
                return Err(ClusterError::Client(
                    "global topics ended before their end offsets while loading".into(),
                )
                .into());
            }
            for record in &records {
                positions.insert(record.tp.clone(), record.offset + 1);
            }
            updater.apply(records)?;
        }
        Ok(Some(updater))
    }

    /// Applies what the global topics have now; returns dead letters for
    /// records that cannot be decoded.
    fn update(&mut self) -> Result<Vec<ProducedRecord>, RuntimeError> {
        let records = self.consumer.poll(10_000)?;
        self.apply(records)
    }

    fn apply(&mut self, records: Vec<ConsumedRecord>) -> Result<Vec<ProducedRecord>, RuntimeError> {
        let mut letters = Vec::new();
        for record in records {
            let Some((global, store)) = self.stores.get_mut(&*record.tp.topic) else {
                continue;
            };
            let oversized = self.bad_records.limits.check_size(record_bytes(&record));
            let reason = match record.key.as_deref() {
                _ if oversized.is_some() => oversized,
                None => Some("global table record without a key".to_owned()),
                Some(key) => match (global.key)(Some(key)) {
                    Err(e) => Some(format!("cannot deserialize the key: {e}")),
                    Ok(_) => match record.value.as_deref() {
                        None => {
                            store.put(key, None).map_err(|source| RuntimeError::Store {
                                store: global.store.clone(),
                                source,
                            })?;
                            None
                        }
                        Some(value) => match (global.value)(Some(value)) {
                            Ok(_) => {
                                store.put(key, Some(value)).map_err(|source| {
                                    RuntimeError::Store {
                                        store: global.store.clone(),
                                        source,
                                    }
                                })?;
                                None
                            }
                            Err(e) => Some(format!("cannot deserialize the value: {e}")),
                        },
                    },
                },
            };
            if let Some(reason) = reason {
                let handled = self.bad_records.handle(&record, &reason).map_err(|e| {
                    RuntimeError::Global {
                        store: global.store.clone(),
                        source: Box::new(e),
                    }
                })?;
                letters.extend(handled);
            }
        }
        Ok(letters)
    }
}

/// Which tasks a thread runs.
#[derive(Clone)]
pub enum Assignment {
    /// The tasks this predicate accepts, fixed for the thread's life (all
    /// of them for a single instance; `partition % instances == k` for
    /// static assignment).
    Static(Arc<dyn Fn(TaskId) -> bool + Send + Sync>),
    /// The tasks of the input partitions the consumer group gives this
    /// thread's consumer; they change as members join and leave.
    Group,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Assignment::Static(_) => f.write_str("Static"),
            Assignment::Group => f.write_str("Group"),
        }
    }
}

/// Runs tasks on one consumer and one producer.
pub struct StreamThread {
    config: StreamsConfig,
    topology: Arc<Topology>,
    consumer: Box<dyn ClusterConsumer>,
    /// Reads changelogs while restoring.
    restorer: Box<dyn ClusterConsumer>,
    producer: Box<dyn ClusterProducer>,
    tasks: BTreeMap<TaskId, StreamTask>,
    /// The records of a poll, handed to tasks; kept to be reused.
    poll_buffer: Vec<ConsumedRecord>,
    routes: HashMap<TopicPartition, TaskId>,
    /// Partition count of every topic the topology reads.
    counts: HashMap<TopicName, i32>,
    wall_clock: Timestamp,
    last_commit: Timestamp,
    globals: Option<GlobalUpdater>,
    global_stores: BTreeMap<String, SharedStore>,
    state: Option<Arc<StateDirectory>>,
    rocksdb: Option<RocksDbEnv>,
    restore_listener: Arc<dyn RestoreListener>,
    faults: Option<Arc<dyn FaultInjector>>,
    group_mode: bool,
    /// Exactly-once: a transaction is open.
    in_transaction: bool,
    /// Records processed or output sent since the last commit.
    dirty: bool,
    /// Offsets committed last, to skip empty commits.
    committed: BTreeMap<TopicPartition, i64>,
    /// Changelog positions at each task's last checkpoint.
    checkpointed: BTreeMap<TaskId, i64>,
    restore_metrics: RestoreMetrics,
    rebalances: u64,
    io: ThreadMetrics,
    /// Counters of tasks this thread closed (they moved elsewhere).
    retired: TaskMetrics,
    /// When lag was last measured (wall clock, ms).
    lag_measured: Timestamp,
}

/// What a thread did, besides its tasks' counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ThreadMetrics {
    /// Records read from input partitions.
    pub records_in: u64,
    /// Records sent: results, changelog records, dead letters.
    pub records_out: u64,
    /// Commits that wrote something.
    pub commits: u64,
    /// Time spent in them, ns.
    pub commit_nanos: u64,
    /// The slowest, ns.
    pub commit_max_nanos: u64,
    /// Records in the input partitions not yet processed, as last measured
    /// (every 5 s).
    pub lag: i64,
    /// Active tasks the thread owns now (Kafka Streams' `activeTasks` of
    /// its thread metadata): 0 until the group gave it partitions.
    pub active_tasks: usize,
}

/// Checks that `topology` can run on `cluster` — its source topics exist,
/// the inputs of each sub-topology are co-partitioned — and creates its
/// internal topics; returns the partition count of every topic it reads.
pub fn check_topology(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &dyn Cluster,
) -> Result<HashMap<TopicName, i32>, RuntimeError> {
    let counts = prepare_topics(topology, config, cluster)?;
    let app = &config.application_id;
    for sub in topology.subtopologies() {
        let inputs: Vec<(String, i32)> = sub
            .source_topics
            .iter()
            .map(|t| (t.resolve(app), counts.get(t).copied().unwrap_or(1)))
            .collect();
        if let Some(&(_, partitions)) = inputs.first()
            && inputs.iter().any(|(_, n)| *n != partitions)
        {
            return Err(RuntimeError::NotCopartitioned {
                subtopology: sub.id,
                counts: inputs
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(counts)
}

/// Sum of the changelog positions of a task (to tell how many changelog
/// records it wrote since the last checkpoint).
fn position_sum(task: &StreamTask) -> i64 {
    task.changelog_positions().iter().map(|(_, _, p)| *p).sum()
}

fn task_error(task: TaskId) -> impl FnOnce(TaskError) -> RuntimeError {
    move |source| RuntimeError::Task {
        task,
        source: Box::new(source),
    }
}

impl StreamThread {
    /// Prepares topics and creates the tasks `assigned` accepts (all of them
    /// for a single instance; `partition % instances == k` for static
    /// assignment), with the wall clock at `now`.
    pub fn new(
        topology: &Arc<Topology>,
        config: StreamsConfig,
        cluster: &dyn Cluster,
        assigned: impl Fn(TaskId) -> bool + Send + Sync + 'static,
        now: Timestamp,
    ) -> Result<Self, RuntimeError> {
        Self::with_options(
            topology,
            config,
            cluster,
            assigned,
            now,
            ThreadOptions::default(),
        )
    }

    /// [`new`](Self::new) with a restore listener, fault injection or a
    /// shared RocksDB budget.
    pub fn with_options(
        topology: &Arc<Topology>,
        config: StreamsConfig,
        cluster: &dyn Cluster,
        assigned: impl Fn(TaskId) -> bool + Send + Sync + 'static,
        now: Timestamp,
        options: ThreadOptions,
    ) -> Result<Self, RuntimeError> {
        Self::start(
            topology,
            config,
            cluster,
            Assignment::Static(Arc::new(assigned)),
            now,
            options,
        )
    }

    /// Starts a thread whose tasks come from `assignment`.
    pub fn start(
        topology: &Arc<Topology>,
        config: StreamsConfig,
        cluster: &dyn Cluster,
        assignment: Assignment,
        now: Timestamp,
        options: ThreadOptions,
    ) -> Result<Self, RuntimeError> {
        let counts = check_topology(topology, &config, cluster)?;
        let app = config.application_id.clone();
        // Changelogs: compacted, one partition per task of the sub-topology.
        let mut changelogs = Vec::new();
        for sub in topology.subtopologies() {
            let partitions = sub
                .source_topics
                .first()
                .and_then(|t| counts.get(t).copied())
                .unwrap_or(1);
            for store in sub
                .stores
                .iter()
                .filter_map(|s| topology.store(s))
                .filter(|s| s.logged)
            {
                let name = TopicName::Internal(store.changelog_suffix()).resolve(&app);
                changelogs.push(
                    TopicSpec::new(name, partitions)
                        .replication(config.replication_factor)
                        .cleanup_policy(CleanupPolicy::Compact),
                );
            }
        }
        cluster.create_topics(&changelogs)?;
        let globals = GlobalUpdater::start(cluster, topology, &config, &counts)?;
        let global_stores: BTreeMap<String, SharedStore> = globals
            .iter()
            .flat_map(|g| g.stores.values())
            .map(|(spec, store)| (spec.store.clone(), store.clone()))
            .collect();
        let state = match (options.state_directory, config.state_dir.as_deref()) {
            (Some(shared), _) => Some(shared),
            (None, Some(dir)) => Some(Arc::new(StateDirectory::open(dir, &app).map_err(
                |source| RuntimeError::Store {
                    store: "(state directory)".into(),
                    source,
                },
            )?)),
            (None, None) => None,
        };
        let rocksdb = match (&state, options.rocksdb) {
            (Some(_), Some(env)) => Some(env),
            (Some(_), None) => Some(RocksDbEnv::new(config.rocksdb)),
            (None, _) => None,
        };
        let producer = match config.guarantee {
            // Fences a predecessor with the same id and aborts what it left
            // open, before restore reads the changelogs.
            ProcessingGuarantee::ExactlyOnceV2 => {
                cluster.transactional_producer(&config.transactional_id())?
            }
            ProcessingGuarantee::AtLeastOnce => cluster.producer()?,
        };
        let mut thread = StreamThread {
            consumer: cluster.consumer(&app, Isolation::ReadCommitted)?,
            restorer: cluster.restore_consumer(&format!("{app}-restore"))?,
            producer,
            topology: topology.clone(),
            tasks: BTreeMap::new(),
            poll_buffer: Vec::new(),
            routes: HashMap::new(),
            counts,
            wall_clock: now,
            last_commit: now,
            globals,
            global_stores,
            state,
            rocksdb,
            restore_listener: options
                .restore_listener
                .unwrap_or_else(|| Arc::new(LoggingRestoreListener::default())),
            faults: options.faults,
            group_mode: matches!(assignment, Assignment::Group),
            in_transaction: false,
            dirty: false,
            committed: BTreeMap::new(),
            checkpointed: BTreeMap::new(),
            restore_metrics: RestoreMetrics::default(),
            rebalances: 0,
            io: ThreadMetrics::default(),
            retired: TaskMetrics::default(),
            lag_measured: Timestamp::MIN,
            config,
        };
        match assignment {
            Assignment::Static(accept) => {
                let ids: Vec<TaskId> = thread
                    .all_task_ids()
                    .into_iter()
                    .filter(|id| accept(*id))
                    .collect();
                thread.add_tasks(&ids)?;
                let partitions: Vec<TopicPartition> = thread.routes.keys().cloned().collect();
                thread.consumer.assign(&partitions)?;
            }
            Assignment::Group => {
                let topics: Vec<String> = topology
                    .subtopologies()
                    .iter()
                    .flat_map(|s| s.source_topics.iter().map(|t| t.resolve(&app)))
                    .collect();
                thread.consumer.subscribe(&topics)?;
                thread.rebalance()?;
            }
        }
        // Records forwarded during init (rare) are written like any others.
        thread.send_output()?;
        Ok(thread)
    }

    /// Every task of the topology.
    fn all_task_ids(&self) -> Vec<TaskId> {
        let mut ids = Vec::new();
        for sub in self.topology.subtopologies() {
            let Some(partitions) = sub.source_topics.first().and_then(|t| self.counts.get(t))
            else {
                continue;
            };
            for partition in 0..*partitions {
                ids.push(TaskId {
                    subtopology: sub.id,
                    partition,
                });
            }
        }
        ids
    }

    /// The task reading `tp`, if the topology reads its topic.
    fn task_of(&self, tp: &TopicPartition) -> Option<TaskId> {
        let app = &self.config.application_id;
        self.topology
            .subtopologies()
            .iter()
            .find(|s| s.source_topics.iter().any(|t| *t.resolve(app) == *tp.topic))
            .map(|s| TaskId {
                subtopology: s.id,
                partition: tp.partition,
            })
    }

    /// Creates, restores and initializes tasks.
    fn add_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        let app = self.config.application_id.clone();
        let bad_records = self.config.bad_records();
        for &id in ids {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let Some(sub) = self
                .topology
                .subtopologies()
                .iter()
                .find(|s| s.id == id.subtopology)
            else {
                continue;
            };
            let task_name = id.to_string();
            let mut existed = Vec::new();
            let checkpoint = match &self.state {
                Some(state) => {
                    state
                        .task_dir(&task_name)
                        .map_err(|source| RuntimeError::Store {
                            store: format!("(task {id} directory)"),
                            source,
                        })?;
                    match Checkpoint::read(&state.checkpoint_path(&task_name)) {
                        Ok(c) => c,
                        Err(CheckpointError::Corrupt { path, reason }) => {
                            tracing::warn!(task = %id, path = %path.display(), reason, "ignoring a corrupt checkpoint; restoring from the beginning of the changelogs");
                            None
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => None,
            };
            let (state, env) = (&self.state, &self.rocksdb);
            let mut open_store = |spec: &brook_topology::store::StoreSpec| -> brook_state::StoreResult<Box<dyn KeyValueBytes>> {
                match (state, env) {
                    (Some(state), Some(env)) => {
                        let path = state.store_path(&task_name, &spec.name);
                        if path.exists() {
                            existed.push(spec.name.clone());
                        }
                        Ok(Box::new(RocksDbKeyValueStore::open(path, env)?))
                    }
                    _ => Ok(Box::new(InMemoryKeyValueStore::new())),
                }
            };
            let mut task = StreamTask::new(
                &self.topology,
                sub,
                id.partition,
                &app,
                &bad_records,
                &self.global_stores,
                &mut open_store,
            )
            .map_err(task_error(id))?;
            // Stores first, then processors: init may read its stores.
            restore_task(
                self.restorer.as_mut(),
                &mut task,
                checkpoint.as_ref(),
                &|store: &str| existed.iter().any(|s| s == store),
                self.restore_listener.as_ref(),
                self.faults.as_deref(),
                &mut self.restore_metrics,
            )?;
            task.init(self.wall_clock).map_err(task_error(id))?;
            for tp in task.partitions() {
                self.routes.insert(tp.clone(), id);
            }
            self.tasks.insert(id, task);
            self.checkpoint(id)?;
        }
        Ok(())
    }

    /// Commits, checkpoints and closes tasks this thread no longer owns.
    fn remove_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        if ids.iter().all(|id| !self.tasks.contains_key(id)) {
            return Ok(());
        }
        if let Err(e) = self.commit() {
            if self.exactly_once() {
                return Err(e);
            }
            // At-least-once: the new owner processes the uncommitted
            // records again; nothing is lost.
            tracing::warn!(error = %e, "could not commit the tasks being revoked; their new owner will process their uncommitted records again");
        }
        for id in ids {
            if self.tasks.contains_key(id) {
                self.checkpoint(*id)?;
            }
            if let Some(mut task) = self.tasks.remove(id) {
                task.close();
                self.retired.add(&task.metrics());
                self.routes.retain(|_, t| t != id);
                self.checkpointed.remove(id);
                for tp in task.partitions() {
                    self.committed.remove(tp);
                }
            }
        }
        Ok(())
    }

    /// Applies what the consumer group changed, if anything: tasks of
    /// revoked partitions are committed and closed, tasks of assigned ones
    /// created and restored before they process anything.
    fn rebalance(&mut self) -> Result<(), RuntimeError> {
        let Some(change) = self.consumer.take_rebalance()? else {
            return Ok(());
        };
        self.rebalances += 1;
        let revoked: Vec<TaskId> = change
            .revoked
            .iter()
            .filter_map(|tp| self.task_of(tp))
            .collect();
        self.remove_tasks(&revoked)?;
        let mut assigned: Vec<TaskId> = change
            .assigned
            .iter()
            .filter_map(|tp| self.task_of(tp))
            .collect();
        assigned.sort();
        assigned.dedup();
        self.add_tasks(&assigned)?;
        tracing::info!(
            generation = change.generation,
            revoked = revoked.len(),
            assigned = assigned.len(),
            tasks = self.tasks.len(),
            "rebalanced"
        );
        Ok(())
    }

    /// Group rebalances this thread went through.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    /// A task, to read its stores.
    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut StreamTask> {
        self.tasks.get_mut(&id)
    }

    /// The contents of store `name`, merged over this thread's tasks
    /// (uncommitted writes included, as processors see them).
    pub fn read_store<K: Ord + 'static, V: 'static>(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<K, V>, brook_topology::processor::ProcessError> {
        let mut all = BTreeMap::new();
        for task in self.tasks.values_mut() {
            if let Some((spec, bytes)) = task.store_mut(name) {
                all.extend(brook_topology::KeyValueStore::<K, V>::new(spec, bytes)?.all()?);
            }
        }
        Ok(all)
    }

    /// The value of `key` in store `name`, from the task that has it.
    pub fn get_from_store<K: 'static, V: 'static>(
        &mut self,
        name: &str,
        key: &K,
    ) -> Result<Option<V>, brook_topology::processor::ProcessError> {
        for task in self.tasks.values_mut() {
            if let Some((spec, bytes)) = task.store_mut(name)
                && let Some(v) =
                    brook_topology::KeyValueStore::<K, V>::new(spec, bytes)?.get(key)?
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The ids of the tasks.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.keys().copied().collect()
    }

    /// The tasks, by id.
    pub fn tasks(&self) -> impl Iterator<Item = (&TaskId, &StreamTask)> {
        self.tasks.iter()
    }

    /// Counters summed over all tasks this thread ran, including those it
    /// no longer has.
    pub fn metrics(&self) -> TaskMetrics {
        self.tasks.values().fold(self.retired, |mut sum, task| {
            sum.add(&task.metrics());
            sum
        })
    }

    /// Records in and out, commits, lag.
    pub fn thread_metrics(&self) -> ThreadMetrics {
        ThreadMetrics {
            active_tasks: self.tasks.len(),
            ..self.io
        }
    }

    /// Measures lag: end offsets minus positions of the input partitions.
    fn measure_lag(&mut self) -> Result<(), RuntimeError> {
        let partitions: Vec<TopicPartition> = self.routes.keys().cloned().collect();
        if partitions.is_empty() {
            self.io.lag = 0;
            return Ok(());
        }
        // The idle restore consumer: the main one's offset queries would
        // wait behind its fetches.
        let ends = self.restorer.end_offsets(&partitions)?;
        let mut lag = 0;
        for tp in &partitions {
            let done = self
                .tasks
                .values()
                .find_map(|t| t.committable_offset(tp))
                .or_else(|| self.consumer.position(tp).ok())
                .unwrap_or(0);
            lag += (ends.get(tp).copied().unwrap_or(0) - done).max(0);
        }
        self.io.lag = lag;
        Ok(())
    }

    /// What restoring the stores took, so far.
    pub fn restore_metrics(&self) -> RestoreMetrics {
        self.restore_metrics
    }

    /// Store operation counts per store, summed over tasks.
    pub fn store_metrics(&self) -> BTreeMap<String, StoreMetrics> {
        let mut all: BTreeMap<String, StoreMetrics> = BTreeMap::new();
        for task in self.tasks.values() {
            for (name, m) in task.store_metrics() {
                all.entry(name).or_default().add(&m);
            }
        }
        all
    }

    /// Whether records wait in the tasks' buffers (an iteration ran out of
    /// its processing budget).
    pub fn has_buffered(&self) -> bool {
        self.tasks.values().any(|t| t.buffered() > 0)
    }

    /// One iteration: poll, process what is buffered (for up to the
    /// processing budget), send the output,
    /// fire wall-clock punctuations at `now`, and commit if the commit
    /// interval has passed (or uncommitted store writes exceed their
    /// budget). Returns the number of records polled.
    pub fn run_once(&mut self, now: Timestamp) -> Result<usize, RuntimeError> {
        self.wall_clock = self.wall_clock.max(now);
        if self.group_mode {
            self.rebalance()?;
        }
        // Global stores first, so joins see every update written before.
        if let Some(globals) = &mut self.globals {
            let letters = globals.update()?;
            for letter in letters {
                self.send(letter)?;
            }
        }
        let mut records = std::mem::take(&mut self.poll_buffer);
        records.clear();
        if self.has_buffered() {
            // Work left from the last iteration: poll all the same (to stay
            // in the group), for at most one record, without waiting.
            self.consumer.poll_now(1, &mut records)?;
        } else {
            self.consumer
                .poll_into(self.config.max_poll_records, &mut records)?;
        }
        let polled = records.len();
        self.io.records_in += polled as u64;
        for task in self.tasks.values_mut() {
            task.set_wall_clock(self.wall_clock);
        }
        for record in records.drain(..) {
            if let Some(id) = self.routes.get(&record.tp)
                && let Some(task) = self.tasks.get_mut(id)
            {
                task.add_record(record);
                self.dirty = true;
            }
        }
        self.poll_buffer = records;
        // Round robin over the tasks, until nothing is buffered or the
        // processing budget is spent.
        let deadline = Instant::now() + self.config.processing_budget;
        loop {
            let mut processed = false;
            for (id, task) in &mut self.tasks {
                for _ in 0..PROCESS_BATCH {
                    if !task.process_one().map_err(|source| RuntimeError::Task {
                        task: *id,
                        source: Box::new(source),
                    })? {
                        break;
                    }
                    processed = true;
                }
            }
            if !processed || Instant::now() >= deadline {
                break;
            }
        }
        self.advance_wall_clock(now)?;
        self.send_output()?;
        let interval = i64::try_from(self.config.commit_interval.as_millis()).unwrap_or(i64::MAX);
        let uncommitted: usize = self.tasks.values().map(StreamTask::uncommitted_bytes).sum();
        if now.saturating_sub(self.last_commit) >= interval
            || uncommitted > self.config.max_uncommitted_bytes
        {
            self.commit()?;
        }
        Ok(polled)
    }

    /// Fires wall-clock punctuations due at `now`.
    pub fn advance_wall_clock(&mut self, now: Timestamp) -> Result<(), RuntimeError> {
        self.wall_clock = self.wall_clock.max(now);
        for (id, task) in &mut self.tasks {
            task.advance_wall_clock(self.wall_clock)
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
        }
        self.send_output()
    }

    fn exactly_once(&self) -> bool {
        self.config.guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    fn fault(&self, point: FaultPoint) -> Result<(), RuntimeError> {
        match &self.faults {
            Some(f) if f.inject(point) => Err(RuntimeError::InjectedFault(point)),
            _ => Ok(()),
        }
    }

    fn send(&mut self, record: ProducedRecord) -> Result<(), RuntimeError> {
        if self.exactly_once() && !self.in_transaction {
            self.producer.begin_transaction()?;
            self.in_transaction = true;
        }
        self.dirty = true;
        self.producer.send(record)?;
        self.io.records_out += 1;
        Ok(())
    }

    fn send_output(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.has_output())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(mut output) = self.tasks.get_mut(&id).map(StreamTask::take_output) else {
                continue;
            };
            for record in output.drain(..) {
                self.send(record)?;
            }
            // The emptied buffer back, so the next batch does not grow a
            // new one.
            if let Some(task) = self.tasks.get_mut(&id) {
                task.recycle_output(output);
            }
        }
        Ok(())
    }

    /// Commits: writes all output and the stores' changelog records, then
    /// commits the consumed offsets (in the transaction, exactly-once),
    /// then applies the stores' buffered writes locally and checkpoints.
    pub fn commit(&mut self) -> Result<(), RuntimeError> {
        for (id, task) in &mut self.tasks {
            task.flush_processors()
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
            task.prepare_commit();
        }
        let offsets: BTreeMap<TopicPartition, i64> = self
            .tasks
            .values()
            .flat_map(StreamTask::committable_offsets)
            .collect();
        let has_output = self.tasks.values().any(|t| t.has_output());
        if !self.dirty && !has_output && offsets == self.committed {
            self.last_commit = self.wall_clock;
            // Idle: the lag may still have changed (new input not yet
            // fetched, or none left).
            return self.maybe_measure_lag();
        }
        self.fault(FaultPoint::BeforeProduce)?;
        let started = Instant::now();
        self.send_output()?;
        let app = self.config.application_id.clone();
        if self.exactly_once() {
            if !self.in_transaction {
                self.producer.begin_transaction()?;
                self.in_transaction = true;
            }
            self.producer.flush()?;
            // (Since `started`: the last sends, then the flush.)
            let flushed = started.elapsed();
            self.fault(FaultPoint::AfterProduce)?;
            if !offsets.is_empty() {
                let member = self.consumer.group_metadata();
                self.producer
                    .send_offsets_to_transaction(&app, &offsets, member.as_ref())?;
            }
            let offsets_sent = started.elapsed();
            self.fault(FaultPoint::AfterSendOffsets)?;
            self.fault(FaultPoint::BeforeCommit)?;
            self.producer.commit_transaction()?;
            self.in_transaction = false;
            tracing::debug!(
                send_and_flush_us = flushed.as_micros() as u64,
                send_offsets_us = (offsets_sent - flushed).as_micros() as u64,
                commit_us = (started.elapsed() - offsets_sent).as_micros() as u64,
                "transaction committed"
            );
        } else {
            self.producer.flush()?;
            self.fault(FaultPoint::AfterProduce)?;
            self.fault(FaultPoint::BeforeCommit)?;
            if !offsets.is_empty() {
                self.consumer.commit(&offsets)?;
            }
        }
        self.committed = offsets;
        self.dirty = false;
        self.fault(FaultPoint::AfterCommit)?;
        let written = self.producer.written_offsets();
        for (id, task) in &mut self.tasks {
            task.commit_local(&written)
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
        }
        self.fault(FaultPoint::AfterLocalApply)?;
        for (id, task) in &mut self.tasks {
            task.committed_processors()
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
        }
        self.fault(FaultPoint::AfterCommittedHooks)?;
        let due: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, task)| {
                let since = position_sum(task) - self.checkpointed.get(id).copied().unwrap_or(0);
                since > 0
                    && u64::try_from(since).unwrap_or(0) >= self.config.checkpoint_interval_records
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.checkpoint(*id)?;
        }
        if !due.is_empty() {
            self.fault(FaultPoint::AfterCheckpoint)?;
        }
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.io.commits += 1;
        self.io.commit_nanos = self.io.commit_nanos.saturating_add(took);
        self.io.commit_max_nanos = self.io.commit_max_nanos.max(took);
        self.maybe_measure_lag()?;
        self.last_commit = self.wall_clock;
        Ok(())
    }

    /// Measures the lag if the last measurement is 5 s old.
    fn maybe_measure_lag(&mut self) -> Result<(), RuntimeError> {
        if self.wall_clock.saturating_sub(self.lag_measured) >= 5_000 {
            self.lag_measured = self.wall_clock;
            self.measure_lag()?;
        }
        Ok(())
    }

    /// Flushes a task's stores and writes its checkpoint (with a state
    /// directory; a no-op for in-memory stores).
    fn checkpoint(&mut self, id: TaskId) -> Result<(), RuntimeError> {
        let (Some(state), Some(task)) = (&self.state, self.tasks.get_mut(&id)) else {
            return Ok(());
        };
        task.flush_stores().map_err(|source| RuntimeError::Task {
            task: id,
            source: Box::new(source),
        })?;
        let mut checkpoint = Checkpoint::default();
        for (store, tp, position) in task.changelog_positions() {
            checkpoint.set(&store, &tp.topic, tp.partition, position);
        }
        checkpoint.write(&state.checkpoint_path(&id.to_string()))?;
        self.checkpointed.insert(id, position_sum(task));
        Ok(())
    }

    /// Commits, checkpoints and closes every task (a clean shutdown: the
    /// next start restores nothing).
    pub fn close(mut self) -> Result<(), RuntimeError> {
        let mut result = self.commit();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            if result.is_ok() {
                result = self.checkpoint(id);
            }
        }
        for task in self.tasks.values_mut() {
            task.close();
        }
        // Leave the group now rather than when the session times out.
        if self.group_mode {
            let left = self.consumer.close();
            result = result.and(left.map_err(RuntimeError::from));
        }
        result
    }
}
