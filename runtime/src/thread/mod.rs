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
//!    transaction while its records are still in flight, the producer is
//!    flushed, and the transaction commits outputs, changelog records and
//!    offsets atomically (a crash before the commit aborts all of them);
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

mod commit;
mod config;
mod errors;
mod faults;
mod globals;
mod restore;
mod tasks;
mod topics;

pub use config::{ProcessingGuarantee, StreamsConfig};
pub use errors::RuntimeError;
pub use faults::{FaultInjector, FaultPoint};
pub(crate) use restore::replay_changelog;
pub use restore::{LoggingRestoreListener, RestoreListener, RestoreMetrics};
pub use topics::check_topology;

use commit::Committer;
use globals::GlobalUpdater;
use restore::ChangelogReader;
use tasks::TaskManager;

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
    consumer: Box<dyn ClusterConsumer>,
    /// Restores tasks' stores from their changelogs (its own consumer).
    changelogs: ChangelogReader,
    /// The producer and the commit cycle.
    committer: Committer,
    tasks: TaskManager,
    /// The records of a poll, handed to tasks; kept to be reused.
    poll_buffer: Vec<ConsumedRecord>,
    wall_clock: Timestamp,
    last_commit: Timestamp,
    globals: Option<GlobalUpdater>,
    group_mode: bool,
    rebalances: u64,
    /// Records in and lag (the committer counts what goes out).
    io: ThreadMetrics,
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
        let consumer = match assignment {
            Assignment::Group if config.static_membership => cluster.static_consumer(
                &app,
                &config.transactional_id(),
                Isolation::ReadCommitted,
            )?,
            _ => cluster.consumer(&app, Isolation::ReadCommitted)?,
        };
        let mut thread = StreamThread {
            consumer,
            changelogs: ChangelogReader::new(
                cluster.restore_consumer(&format!("{app}-restore"))?,
                options
                    .restore_listener
                    .unwrap_or_else(|| Arc::new(LoggingRestoreListener::default())),
            ),
            committer: Committer::new(producer, &config, options.faults),
            tasks: TaskManager::new(topology, &config, counts, global_stores, state, rocksdb),
            poll_buffer: Vec::new(),
            wall_clock: now,
            last_commit: now,
            globals,
            group_mode: matches!(assignment, Assignment::Group),
            rebalances: 0,
            io: ThreadMetrics::default(),
            lag_measured: Timestamp::MIN,
            config,
        };
        match assignment {
            Assignment::Static(accept) => {
                let ids: Vec<TaskId> = thread
                    .tasks
                    .all_task_ids()
                    .into_iter()
                    .filter(|id| accept(*id))
                    .collect();
                thread.add_tasks(&ids)?;
                let partitions = thread.tasks.partitions();
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
        thread.committer.send_output(&mut thread.tasks)?;
        Ok(thread)
    }

    /// Group rebalances this thread went through.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    /// A task, to read its stores.
    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut StreamTask> {
        self.tasks.get_mut(id)
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
        self.tasks.iter().map(|(id, _)| *id).collect()
    }

    /// The tasks, by id.
    pub fn tasks(&self) -> impl Iterator<Item = (&TaskId, &StreamTask)> {
        self.tasks.iter()
    }

    /// Counters summed over all tasks this thread ran, including those it
    /// no longer has.
    pub fn metrics(&self) -> TaskMetrics {
        self.tasks.metrics()
    }

    /// Records in and out, commits, lag.
    pub fn thread_metrics(&self) -> ThreadMetrics {
        let mut metrics = ThreadMetrics {
            active_tasks: self.tasks.len(),
            ..self.io
        };
        self.committer.metrics(&mut metrics);
        metrics
    }

    /// Measures lag: end offsets minus positions of the input partitions.
    fn measure_lag(&mut self) -> Result<(), RuntimeError> {
        let partitions = self.tasks.partitions();
        if partitions.is_empty() {
            self.io.lag = 0;
            return Ok(());
        }
        // The idle restore consumer: the main one's offset queries would
        // wait behind its fetches.
        let ends = self.changelogs.end_offsets(&partitions)?;
        let mut lag = 0;
        for tp in &partitions {
            let done = self
                .tasks
                .committable_offset(tp)
                .or_else(|| self.consumer.position(tp).ok())
                .unwrap_or(0);
            lag += (ends.get(tp).copied().unwrap_or(0) - done).max(0);
        }
        self.io.lag = lag;
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

    /// What restoring the stores took, so far.
    pub fn restore_metrics(&self) -> RestoreMetrics {
        self.changelogs.metrics()
    }

    /// Store operation counts per store, summed over tasks.
    pub fn store_metrics(&self) -> BTreeMap<String, StoreMetrics> {
        self.tasks.store_metrics()
    }

    /// Whether records wait in the tasks' buffers (an iteration ran out of
    /// its processing budget).
    pub fn has_buffered(&self) -> bool {
        self.tasks.has_buffered()
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
                self.committer.send(letter)?;
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
        self.tasks.set_wall_clock(self.wall_clock);
        for record in records.drain(..) {
            if self.tasks.route(record) {
                self.committer.mark_dirty();
            }
        }
        self.poll_buffer = records;
        // Round robin over the tasks, until nothing is buffered or the
        // processing budget is spent.
        self.tasks
            .process(Instant::now() + self.config.processing_budget)?;
        self.advance_wall_clock(now)?;
        let interval = i64::try_from(self.config.commit_interval.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(self.last_commit) >= interval
            || self.tasks.uncommitted_bytes() > self.config.max_uncommitted_bytes
        {
            self.commit()?;
        }
        Ok(polled)
    }

    /// Fires wall-clock punctuations due at `now`, then sends the output.
    pub fn advance_wall_clock(&mut self, now: Timestamp) -> Result<(), RuntimeError> {
        self.wall_clock = self.wall_clock.max(now);
        self.tasks.advance_wall_clock(self.wall_clock)?;
        self.committer.send_output(&mut self.tasks)
    }

    /// Commits: writes all output and the stores' changelog records, then
    /// commits the consumed offsets (in the transaction, exactly-once),
    /// then applies the stores' buffered writes locally and checkpoints.
    pub fn commit(&mut self) -> Result<(), RuntimeError> {
        self.committer
            .commit(&mut self.tasks, &mut *self.consumer)?;
        // (Also when idle: the lag may still have changed, new input not
        // yet fetched or none left.)
        self.maybe_measure_lag()?;
        self.last_commit = self.wall_clock;
        Ok(())
    }

    /// Creates, restores and initializes tasks.
    fn add_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        self.tasks.add(
            ids,
            &mut self.changelogs,
            self.committer.faults(),
            self.wall_clock,
        )
    }

    /// Commits, checkpoints and closes tasks this thread no longer owns.
    fn remove_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        if !self.tasks.owns_any(ids) {
            return Ok(());
        }
        if let Err(e) = self.commit() {
            if self.committer.exactly_once() {
                return Err(e);
            }
            // At-least-once: the new owner processes the uncommitted
            // records again; nothing is lost.
            tracing::warn!(error = %e, "could not commit the tasks being revoked; their new owner will process their uncommitted records again");
        }
        let released = self.tasks.remove(ids)?;
        self.committer.forget(&released);
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
            .filter_map(|tp| self.tasks.task_of(tp))
            .collect();
        self.remove_tasks(&revoked)?;
        let mut assigned: Vec<TaskId> = change
            .assigned
            .iter()
            .filter_map(|tp| self.tasks.task_of(tp))
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

    /// Commits, checkpoints and closes every task (a clean shutdown: the
    /// next start restores nothing).
    pub fn close(mut self) -> Result<(), RuntimeError> {
        let committed = self.commit();
        let checkpoint = committed.is_ok();
        let mut result = committed.and(self.tasks.close_all(checkpoint));
        // Leave the group now rather than when the session times out.
        if self.group_mode {
            let left = self.consumer.close();
            result = result.and(left.map_err(RuntimeError::from));
        }
        result
    }
}
