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
//! Commit (at-least-once): flush the producer, so every output of the
//! processed records is written, then commit the consumed offsets. A crash
//! between the two re-processes records after restart but loses none.
//! Exactly-once (transactions) arrives with the Kafka runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use brook_topology::graph::{InternalTopicKind, NodeKind, TopicName};
use brook_topology::processor::TaskId;
use brook_topology::{CleanupPolicy, Timestamp, TopicSpec, Topology};

use crate::cluster::{
    Cluster, ClusterConsumer, ClusterError, ClusterProducer, Isolation, TopicPartition,
};
use brook_state::{KeyValueBytes, SharedStore};
use brook_topology::graph::GlobalStore;

use crate::cluster::ConsumedRecord;
use crate::task::{StreamTask, TaskError, TaskMetrics, dead_letter_record};

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
}

impl StreamsConfig {
    /// Defaults for `application_id`: commit every 30 s (Kafka Streams'
    /// at-least-once default), 500 records per poll.
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            commit_interval: Duration::from_secs(30),
            max_poll_records: 500,
            dead_letter_topic: None,
        }
    }

    /// The dead-letter topic's name.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}-dead-letters", self.application_id))
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
    /// A task failed.
    #[error("task {task} failed")]
    Task {
        /// The task.
        task: TaskId,
        /// What went wrong.
        source: Box<TaskError>,
    },
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
        let count = cluster.partition_count(&name).map_err(|e| match e {
            ClusterError::UnknownTopic(topic) => RuntimeError::MissingSourceTopic { topic },
            other => other.into(),
        })?;
        counts.insert(global.topic.clone(), count);
    }
    for sub in topology.subtopologies() {
        for topic in &sub.source_topics {
            if let TopicName::User(name) = topic {
                let count = cluster.partition_count(name).map_err(|e| match e {
                    ClusterError::UnknownTopic(topic) => RuntimeError::MissingSourceTopic { topic },
                    other => other.into(),
                })?;
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
        let spec = TopicSpec::new(internal.name.resolve(app), count);
        specs.push(match internal.kind {
            InternalTopicKind::Repartition => spec.cleanup_policy(CleanupPolicy::Delete),
        });
    }
    specs.push(TopicSpec::new(config.dead_letter_topic(), 1));
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

/// Rebuilds every task's logged stores from their changelog partitions,
/// reading each to its end offset.
fn restore(
    cluster: &dyn Cluster,
    application_id: &str,
    tasks: &mut BTreeMap<TaskId, StreamTask>,
) -> Result<(), RuntimeError> {
    // A group that never commits: restoration always reads from the start
    // (checkpoints that skip what local state already has come with
    // persistent stores).
    let mut consumer = cluster.consumer(
        &format!("{application_id}-restore"),
        Isolation::ReadCommitted,
    )?;
    for task in tasks.values_mut() {
        for (store, tp) in task.changelog_partitions() {
            let end = consumer.end_offsets(std::slice::from_ref(&tp))?[&tp];
            if end == 0 {
                continue;
            }
            consumer.assign(std::slice::from_ref(&tp))?;
            let mut position = 0;
            while position < end {
                let records = consumer.poll(10_000)?;
                if records.is_empty() {
                    return Err(ClusterError::Client(format!(
                        "restoring store {store} of task {}: {tp} ended at offset {position}, expected {end}",
                        task.id()
                    ))
                    .into());
                }
                for record in records {
                    position = record.offset + 1;
                    let key = record.key.as_deref().unwrap_or_default();
                    task.restore(&store, key, record.value.as_deref())
                        .map_err(|source| RuntimeError::Task {
                            task: task.id(),
                            source: Box::new(source),
                        })?;
                }
            }
        }
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
    dead_letter_topic: String,
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
            dead_letter_topic: config.dead_letter_topic(),
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
    fn update(&mut self) -> Result<Vec<crate::cluster::ProducedRecord>, RuntimeError> {
        let records = self.consumer.poll(10_000)?;
        self.apply(records)
    }

    fn apply(
        &mut self,
        records: Vec<ConsumedRecord>,
    ) -> Result<Vec<crate::cluster::ProducedRecord>, RuntimeError> {
        let mut letters = Vec::new();
        for record in records {
            let Some((global, store)) = self.stores.get_mut(&record.tp.topic) else {
                continue;
            };
            let Some(key) = record.key.as_deref() else {
                letters.push(dead_letter_record(
                    &record,
                    "global table record without a key",
                    &self.dead_letter_topic,
                ));
                continue;
            };
            if let Err(e) = (global.key)(Some(key)) {
                letters.push(dead_letter_record(
                    &record,
                    &format!("cannot deserialize the key: {e}"),
                    &self.dead_letter_topic,
                ));
                continue;
            }
            match record.value.as_deref() {
                None => store.put(key, None).map_err(|source| RuntimeError::Store {
                    store: global.store.clone(),
                    source,
                })?,
                Some(value) => match (global.value)(Some(value)) {
                    Ok(_) => store
                        .put(key, Some(value))
                        .map_err(|source| RuntimeError::Store {
                            store: global.store.clone(),
                            source,
                        })?,
                    Err(e) => letters.push(dead_letter_record(
                        &record,
                        &format!("cannot deserialize the value: {e}"),
                        &self.dead_letter_topic,
                    )),
                },
            }
        }
        Ok(letters)
    }
}

/// Runs tasks on one consumer and one producer.
pub struct StreamThread {
    config: StreamsConfig,
    consumer: Box<dyn ClusterConsumer>,
    producer: Box<dyn ClusterProducer>,
    tasks: BTreeMap<TaskId, StreamTask>,
    routes: HashMap<TopicPartition, TaskId>,
    wall_clock: Timestamp,
    last_commit: Timestamp,
    globals: Option<GlobalUpdater>,
}

impl StreamThread {
    /// Prepares topics and creates the tasks `assigned` accepts (all of them
    /// for a single instance; `partition % instances == k` for static
    /// assignment), with the wall clock at `now`.
    pub fn new(
        topology: &Arc<Topology>,
        config: StreamsConfig,
        cluster: &dyn Cluster,
        assigned: impl Fn(TaskId) -> bool,
        now: Timestamp,
    ) -> Result<Self, RuntimeError> {
        let counts = prepare_topics(topology, &config, cluster)?;
        let globals = GlobalUpdater::start(cluster, topology, &config, &counts)?;
        let global_stores: BTreeMap<String, SharedStore> = globals
            .iter()
            .flat_map(|g| g.stores.values())
            .map(|(spec, store)| (spec.store.clone(), store.clone()))
            .collect();
        let app = config.application_id.clone();
        let dead_letters = config.dead_letter_topic();
        let mut tasks = BTreeMap::new();
        let mut routes = HashMap::new();
        for sub in topology.subtopologies() {
            let inputs: Vec<(String, i32)> = sub
                .source_topics
                .iter()
                .map(|t| (t.resolve(&app), counts.get(t).copied().unwrap_or(1)))
                .collect();
            let Some(&(_, partitions)) = inputs.first() else {
                continue;
            };
            if inputs.iter().any(|(_, n)| *n != partitions) {
                return Err(RuntimeError::NotCopartitioned {
                    subtopology: sub.id,
                    counts: inputs
                        .iter()
                        .map(|(t, n)| format!("{t}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            for partition in 0..partitions {
                let id = TaskId {
                    subtopology: sub.id,
                    partition,
                };
                if !assigned(id) {
                    continue;
                }
                let task = StreamTask::new(
                    topology,
                    sub,
                    partition,
                    &app,
                    &dead_letters,
                    &global_stores,
                );
                for tp in task.partitions() {
                    routes.insert(tp.clone(), id);
                }
                tasks.insert(id, task);
            }
        }
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
                changelogs
                    .push(TopicSpec::new(name, partitions).cleanup_policy(CleanupPolicy::Compact));
            }
        }
        cluster.create_topics(&changelogs)?;
        // Stores first, then processors: init may read its stores.
        restore(cluster, &app, &mut tasks)?;
        for (id, task) in &mut tasks {
            task.init(now).map_err(|source| RuntimeError::Task {
                task: *id,
                source: Box::new(source),
            })?;
        }

        let mut consumer = cluster.consumer(&app, Isolation::ReadCommitted)?;
        let partitions: Vec<TopicPartition> = routes.keys().cloned().collect();
        consumer.assign(&partitions)?;
        let producer = cluster.producer()?;
        let mut thread = StreamThread {
            config,
            consumer,
            producer,
            tasks,
            routes,
            wall_clock: now,
            last_commit: now,
            globals,
        };
        // Records forwarded during init (rare) are written like any others.
        thread.send_output()?;
        Ok(thread)
    }

    /// A task, to read its stores.
    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut StreamTask> {
        self.tasks.get_mut(&id)
    }

    /// The ids of the tasks.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.keys().copied().collect()
    }

    /// The tasks, by id.
    pub fn tasks(&self) -> impl Iterator<Item = (&TaskId, &StreamTask)> {
        self.tasks.iter()
    }

    /// Counters summed over all tasks.
    pub fn metrics(&self) -> TaskMetrics {
        self.tasks
            .values()
            .fold(TaskMetrics::default(), |mut sum, task| {
                let m = task.metrics();
                sum.processed += m.processed;
                sum.dead_lettered += m.dead_lettered;
                sum.punctuations += m.punctuations;
                sum.late_records += m.late_records;
                sum
            })
    }

    /// One iteration: poll, process everything buffered, send the output,
    /// fire wall-clock punctuations at `now`, and commit if the commit
    /// interval has passed. Returns the number of records polled.
    pub fn run_once(&mut self, now: Timestamp) -> Result<usize, RuntimeError> {
        // Global stores first, so joins see every update written before.
        if let Some(globals) = &mut self.globals {
            for letter in globals.update()? {
                self.producer.send(letter)?;
            }
        }
        let records = self.consumer.poll(self.config.max_poll_records)?;
        let polled = records.len();
        for record in records {
            if let Some(id) = self.routes.get(&record.tp)
                && let Some(task) = self.tasks.get_mut(id)
            {
                task.add_record(record);
            }
        }
        for (id, task) in &mut self.tasks {
            while task.process_one().map_err(|source| RuntimeError::Task {
                task: *id,
                source: Box::new(source),
            })? {}
        }
        self.advance_wall_clock(now)?;
        self.send_output()?;
        let interval = i64::try_from(self.config.commit_interval.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(self.last_commit) >= interval {
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

    fn send_output(&mut self) -> Result<(), RuntimeError> {
        for task in self.tasks.values_mut() {
            for record in task.take_output() {
                self.producer.send(record)?;
            }
        }
        Ok(())
    }

    /// Writes all output, then commits the consumed offsets.
    pub fn commit(&mut self) -> Result<(), RuntimeError> {
        self.send_output()?;
        self.producer.flush()?;
        let offsets: BTreeMap<TopicPartition, i64> = self
            .tasks
            .values()
            .flat_map(|t| {
                t.committable_offsets()
                    .iter()
                    .map(|(tp, o)| (tp.clone(), *o))
            })
            .collect();
        if !offsets.is_empty() {
            self.consumer.commit(&offsets)?;
        }
        self.last_commit = self.wall_clock;
        Ok(())
    }

    /// Commits and closes every task.
    pub fn close(mut self) -> Result<(), RuntimeError> {
        let result = self.commit();
        for task in self.tasks.values_mut() {
            task.close();
        }
        result
    }
}
