//! A task: one sub-topology working on one partition of its input topics.
//!
//! The task buffers the records of its partitions and always processes the
//! buffered record with the lowest timestamp next (as Kafka Streams does),
//! so records from co-partitioned topics interleave in event-time order.
//! Stream time is the largest timestamp processed so far; stream-time
//! punctuations fire as it advances, wall-clock punctuations when the
//! runtime's clock does.
//!
//! A record whose key or value cannot be deserialized, that is larger than
//! [`RecordLimits::max_record_bytes`] (or makes a sink write a record that
//! is), or whose timestamp is negative or further from the wall clock than
//! the [`RecordLimits`] allow, is not processed; the
//! [`DeserializationHandler`] decides what happens to it. By default it goes, bytes unchanged, to the dead-letter
//! topic with headers saying what was wrong and where it came from
//! (`brook.error`, `brook.topic`, `brook.partition`, `brook.offset`), and
//! its offset counts as consumed, so one bad record neither stops the
//! application nor disappears; it can instead be logged and skipped, or
//! fail the task with an error naming topic, partition and offset. A
//! schema registry that does not answer is not the record's fault
//! ([`SerdeError::Unavailable`]): the record stays unconsumed and the task
//! fails with [`TaskError::Unavailable`], to be retried.
//!
//! Processors forward depth-first: a forwarded record is processed by the
//! whole downstream chain before the forwarding processor's next output.
//!
//! Stores: each store of the task is a byte store (RocksDB or in-memory)
//! under a metered transaction buffer. Writes stay in the buffer until the
//! commit: [`StreamTask::prepare_commit`] turns them into changelog records
//! (one per key written), [`StreamTask::commit_local`] applies them after
//! the cluster committed, [`StreamTask::abort_local`] drops them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use brook_state::{BufferedStore, MeteredStore, SharedStore, StoreMetrics};
use brook_topology::graph::{NodeId, NodeKind, SerializeFn, SourceNode, Subtopology, TopicName};
use brook_topology::processor::{
    DynContext, DynProcessor, DynRecord, ProcessError, PunctuationType, ScheduleId, TaskId,
};
use brook_topology::serdes::SerdeError;
use brook_topology::store::{KeyValueBytes, StoreResult, StoreSpec};
use brook_topology::{Headers, RecordMetadata, Timestamp, Topology};

use crate::cluster::{ConsumedRecord, ProducedRecord, TopicPartition};

mod bad_records;

pub use bad_records::{
    BadRecords, DEFAULT_MAX_RECORD_BYTES, DeserializationHandler, RecordLimits, dead_letter_error,
    dead_letter_record, record_bytes,
};

/// Why a task failed. The task's uncommitted work must be discarded.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A processor failed.
    #[error("processor {node} failed")]
    Process {
        /// The processor's node name.
        node: String,
        /// Its error.
        source: ProcessError,
    },
    /// A store failed while restoring.
    #[error("store {store} failed")]
    Store {
        /// The store.
        store: String,
        /// What failed.
        source: brook_topology::store::StoreError,
    },
    /// A record could not be deserialized (or had an invalid timestamp)
    /// and the handler is [`DeserializationHandler::Fail`].
    #[error("cannot process the record at {topic}/{partition}@{offset}: {reason}")]
    BadRecord {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
    /// Something a record's deserialization needs cannot be reached (a
    /// schema registry that does not answer); the record stays unconsumed.
    #[error("cannot process the record at {topic}/{partition}@{offset} now: {what}")]
    Unavailable {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// What is unavailable, and why.
        what: String,
    },
    /// A sink was to write a record larger than
    /// [`RecordLimits::max_record_bytes`] (outside of processing an input
    /// record, e.g. in a punctuation; an input record that causes it is
    /// handled as a bad record).
    #[error(
        "sink {node} was to write a record of {bytes} bytes to {topic}, larger than max.record.bytes"
    )]
    OutputTooLarge {
        /// The sink's node name.
        node: String,
        /// Its topic.
        topic: String,
        /// Key plus value, bytes.
        bytes: usize,
    },
    /// A sink could not serialize a record.
    #[error("sink {node} could not serialize the {part} of a record for topic {topic}")]
    Serialize {
        /// The sink's node name.
        node: String,
        /// Its topic.
        topic: String,
        /// `key` or `value`.
        part: &'static str,
        /// The serde's error.
        source: Box<SerdeError>,
    },
}

/// Counters of one task.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TaskMetrics {
    /// Records processed.
    pub processed: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Bad records skipped (logged) by [`DeserializationHandler::LogAndContinue`].
    pub skipped: u64,
    /// Punctuations fired.
    pub punctuations: u64,
    /// Records dropped because their windows had closed.
    pub late_records: u64,
    /// Sum over processed records of wall clock minus record timestamp
    /// (end-to-end latency), ms.
    pub e2e_latency_ms_sum: u64,
    /// The largest end-to-end latency seen, ms.
    pub e2e_latency_ms_max: u64,
}

impl TaskMetrics {
    /// Adds `other`'s counts to these (summing over tasks and threads).
    pub fn add(&mut self, other: &TaskMetrics) {
        self.processed += other.processed;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
        self.punctuations += other.punctuations;
        self.late_records += other.late_records;
        self.e2e_latency_ms_sum += other.e2e_latency_ms_sum;
        self.e2e_latency_ms_max = self.e2e_latency_ms_max.max(other.e2e_latency_ms_max);
    }
}

// Children and the source's deserializers are shared (`Arc`): the task
// holds them while it lends itself out to route a record, once per record
// and hop, so taking them must not allocate.
enum Instance {
    Source {
        source: Arc<SourceNode>,
        children: Arc<[NodeId]>,
    },
    Processor {
        name: String,
        processor: Box<dyn DynProcessor>,
        children: Arc<[NodeId]>,
        child_names: Vec<String>,
        stores: Vec<String>,
    },
    Sink {
        name: String,
        topic: String,
        key: SerializeFn,
        value: SerializeFn,
    },
}

struct Schedule {
    id: ScheduleId,
    node: NodeId,
    interval: i64,
    kind: PunctuationType,
    next: Timestamp,
    cancelled: bool,
}

/// Layers of a task's store: metered, over the transaction buffer, over
/// the byte store.
type Layered = MeteredStore<BufferedStore<Box<dyn KeyValueBytes>>>;

/// A store of this task, with its changelog partition if it is logged.
struct TaskStore {
    spec: StoreSpec,
    store: Layered,
    changelog: Option<TopicPartition>,
    /// The changelog offset local state reflects (next record to restore).
    position: i64,
}

/// Advances a store's changelog position to what the producer wrote.
fn continue_position(store: &mut TaskStore, written: &BTreeMap<TopicPartition, i64>) {
    if let Some(end) = store.changelog.as_ref().and_then(|tp| written.get(tp)) {
        store.position = store.position.max(*end);
    }
}

fn layered(base: Box<dyn KeyValueBytes>) -> Layered {
    MeteredStore::new(BufferedStore::new(base))
}

/// Creates the byte store under each of a task's stores.
pub type StoreFactory<'a> = dyn FnMut(&StoreSpec) -> StoreResult<Box<dyn KeyValueBytes>> + 'a;

struct TaskState {
    id: TaskId,
    stores: BTreeMap<String, TaskStore>,
    stream_time: Timestamp,
    wall_clock: Timestamp,
    metadata: Option<RecordMetadata>,
    schedules: Vec<Schedule>,
    next_schedule: u64,
    output: Vec<ProducedRecord>,
    metrics: TaskMetrics,
    /// Timestamp given to store writes: the current record's, or the
    /// punctuation's time.
    write_time: Timestamp,
}

enum Target {
    All,
    One(NodeId),
}

struct Ctx<'a> {
    state: &'a mut TaskState,
    node: NodeId,
    name: &'a str,
    children: &'a [NodeId],
    child_names: &'a [String],
    stores: &'a [String],
    forwards: Vec<(Target, DynRecord)>,
}

impl DynContext for Ctx<'_> {
    fn forward(&mut self, record: DynRecord) {
        self.forwards.push((Target::All, record));
    }

    fn forward_to(&mut self, child: &str, record: DynRecord) -> Result<(), ProcessError> {
        let index = self
            .child_names
            .iter()
            .position(|name| name == child)
            .ok_or_else(|| ProcessError::UnknownChild {
                child: child.to_owned(),
            })?;
        self.forwards
            .push((Target::One(self.children[index]), record));
        Ok(())
    }

    fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> ScheduleId {
        let id = ScheduleId(self.state.next_schedule);
        self.state.next_schedule += 1;
        let interval = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let next = match kind {
            // Aligned to multiples of the interval; the first record fires it.
            PunctuationType::StreamTime => 0,
            PunctuationType::WallClockTime => self.state.wall_clock.saturating_add(interval),
        };
        self.state.schedules.push(Schedule {
            id,
            node: self.node,
            interval,
            kind,
            next,
            cancelled: false,
        });
        id
    }

    fn cancel(&mut self, id: ScheduleId) {
        for schedule in &mut self.state.schedules {
            if schedule.id == id {
                schedule.cancelled = true;
            }
        }
    }

    fn stream_time(&self) -> Timestamp {
        self.state.stream_time
    }

    fn wall_clock_time(&self) -> Timestamp {
        self.state.wall_clock
    }

    fn record_metadata(&self) -> Option<&RecordMetadata> {
        self.state.metadata.as_ref()
    }

    fn task_id(&self) -> TaskId {
        self.state.id
    }

    fn node_name(&self) -> &str {
        self.name
    }

    fn record_late(&mut self) {
        self.state.metrics.late_records += 1;
    }

    fn store(&mut self, name: &str) -> Result<(&StoreSpec, &mut dyn KeyValueBytes), ProcessError> {
        let unknown = || ProcessError::UnknownStore {
            store: name.to_owned(),
        };
        if !self.stores.iter().any(|s| s == name) {
            return Err(unknown());
        }
        let write_time = self.state.write_time;
        let store = self.state.stores.get_mut(name).ok_or_else(unknown)?;
        store.store.inner_mut().set_timestamp(write_time);
        Ok((&store.spec, &mut store.store))
    }
}

/// One input partition of a task.
struct InputQueue {
    tp: TopicPartition,
    /// The source node that reads it.
    source: NodeId,
    /// Records buffered, not yet processed.
    records: VecDeque<ConsumedRecord>,
    /// The offset after the last record processed, once one was.
    consumed: Option<i64>,
}

/// What processors forwarded, with the child (or all children) each goes to.
type Forwards = Vec<(Target, DynRecord)>;

/// One sub-topology over one partition.
pub struct StreamTask {
    nodes: BTreeMap<NodeId, Instance>,
    /// A handful (one per source topic): searched linearly.
    queues: Vec<InputQueue>,
    bad_records: BadRecords,
    state: TaskState,
    /// Emptied forward buffers, reused (routing is recursive: one per
    /// depth), so that forwarding a record allocates nothing.
    forward_pool: Vec<Forwards>,
}

impl StreamTask {
    /// The task for `partition` of `subtopology`; topic names are resolved
    /// for `application_id`. `open_store` creates the byte store of each of
    /// its stores (in memory, or RocksDB in the task's directory).
    pub fn new(
        topology: &Topology,
        subtopology: &Subtopology,
        partition: i32,
        application_id: &str,
        bad_records: &BadRecords,
        globals: &BTreeMap<String, SharedStore>,
        open_store: &mut StoreFactory<'_>,
    ) -> Result<Self, TaskError> {
        let all = topology.nodes();
        let mut nodes = BTreeMap::new();
        let mut queues = Vec::new();
        for &id in &subtopology.nodes {
            let node = &all[id];
            let instance = match &node.kind {
                NodeKind::Source(source) => {
                    for topic in &source.topics {
                        queues.push(InputQueue {
                            tp: TopicPartition::new(topic.resolve(application_id), partition),
                            source: id,
                            records: VecDeque::new(),
                            consumed: None,
                        });
                    }
                    Instance::Source {
                        source: Arc::new(source.clone()),
                        children: node.children.as_slice().into(),
                    }
                }
                NodeKind::Processor(p) => Instance::Processor {
                    name: node.name.clone(),
                    processor: (p.supplier)(),
                    children: node.children.as_slice().into(),
                    child_names: node.children.iter().map(|&c| all[c].name.clone()).collect(),
                    stores: p.stores.clone(),
                },
                NodeKind::Sink(sink) => Instance::Sink {
                    name: node.name.clone(),
                    topic: sink.topic.resolve(application_id),
                    key: sink.key.clone(),
                    value: sink.value.clone(),
                },
            };
            nodes.insert(id, instance);
        }
        let mut stores = BTreeMap::new();
        for spec in subtopology
            .stores
            .iter()
            .filter_map(|name| topology.store(name))
        {
            let changelog = spec.logged.then(|| {
                TopicPartition::new(
                    TopicName::Internal(spec.changelog_suffix()).resolve(application_id),
                    partition,
                )
            });
            let base = open_store(spec).map_err(|source| TaskError::Store {
                store: spec.name.clone(),
                source,
            })?;
            let store = TaskStore {
                spec: spec.clone(),
                store: layered(base),
                changelog,
                position: 0,
            };
            stores.insert(spec.name.clone(), store);
        }
        // Global stores this sub-topology's processors read: shared, not logged.
        for node in subtopology.nodes.iter().map(|&id| &all[id]) {
            if let NodeKind::Processor(p) = &node.kind {
                for name in &p.stores {
                    if let (Some(shared), Some(spec)) = (globals.get(name), topology.store(name)) {
                        let shared: Box<dyn KeyValueBytes> = Box::new(shared.clone());
                        stores.insert(
                            name.clone(),
                            TaskStore {
                                spec: spec.clone(),
                                store: layered(shared),
                                changelog: None,
                                position: 0,
                            },
                        );
                    }
                }
            }
        }
        Ok(StreamTask {
            nodes,
            queues,
            bad_records: bad_records.clone(),
            state: TaskState {
                id: TaskId {
                    subtopology: subtopology.id,
                    partition,
                },
                stores,
                stream_time: Timestamp::MIN,
                wall_clock: 0,
                metadata: None,
                schedules: Vec::new(),
                next_schedule: 0,
                output: Vec::new(),
                metrics: TaskMetrics::default(),
                write_time: 0,
            },
            forward_pool: Vec::new(),
        })
    }

    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.state.id
    }

    /// The input partitions it reads.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.queues.iter().map(|q| &q.tp)
    }

    /// Its counters.
    pub fn metrics(&self) -> TaskMetrics {
        self.state.metrics
    }

    /// The task's stream time (`i64::MIN` before the first record).
    pub fn stream_time(&self) -> Timestamp {
        self.state.stream_time
    }

    /// Initializes the processors (they may schedule punctuations) with the
    /// wall clock at `now`.
    pub fn init(&mut self, now: Timestamp) -> Result<(), TaskError> {
        self.state.wall_clock = now;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.state.write_time = now.max(0);
        for id in ids {
            // Records forwarded from init are processed like any other.
            self.run_processor(id, |processor, ctx| processor.init(ctx))?;
        }
        Ok(())
    }

    /// Buffers a record of one of this task's partitions.
    pub fn add_record(&mut self, record: ConsumedRecord) {
        if let Some(queue) = self.queues.iter_mut().find(|q| q.tp == record.tp) {
            queue.records.push_back(record);
        }
    }

    /// Records buffered and not yet processed.
    pub fn buffered(&self) -> usize {
        self.queues.iter().map(|q| q.records.len()).sum()
    }

    /// The queue whose first record has the lowest timestamp (the first
    /// such queue on ties), if any holds a record.
    fn next_queue(&self) -> Option<usize> {
        if let [only] = self.queues.as_slice() {
            return (!only.records.is_empty()).then_some(0);
        }
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.records.front().map(|r| (r.timestamp, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// Processes the buffered record with the lowest timestamp; `false` when
    /// nothing is buffered.
    pub fn process_one(&mut self) -> Result<bool, TaskError> {
        let Some(index) = self.next_queue() else {
            return Ok(false);
        };
        let queue = &mut self.queues[index];
        let Some(raw) = queue.records.pop_front() else {
            return Ok(false);
        };
        let consumed_before = queue.consumed.replace(raw.offset + 1);
        let Some(Instance::Source { source, children }) = self.nodes.get(&queue.source) else {
            return Ok(true);
        };
        let (source, children) = (Arc::clone(source), Arc::clone(children));
        if let Some(reason) = self.bad_records.limits.check_size(record_bytes(&raw)) {
            self.bad_record(&raw, reason)?;
            return Ok(true);
        }
        let decoded = (source.key)(raw.key.as_deref())
            .map_err(|e| ("key", e))
            .and_then(|key| {
                (source.value)(raw.value.as_deref())
                    .map(|value| (key, value))
                    .map_err(|e| ("value", e))
            });
        let (key, value) = match decoded {
            Ok(decoded) => decoded,
            Err((part, SerdeError::Unavailable { what, reason })) => {
                // Not the record's fault: it goes back to the head of its
                // queue, unconsumed, and the task fails (to be retried) —
                // no commit can pass it.
                let error = TaskError::Unavailable {
                    topic: raw.tp.topic.to_string(),
                    partition: raw.tp.partition,
                    offset: raw.offset,
                    what: format!("{what} is unavailable (needed for the {part}): {reason}"),
                };
                let queue = &mut self.queues[index];
                queue.records.push_front(raw);
                queue.consumed = consumed_before;
                return Err(error);
            }
            Err((part, error)) => {
                self.bad_record(&raw, format!("cannot deserialize the {part}: {error}"))?;
                return Ok(true);
            }
        };
        let timestamp = match &source.timestamp_extractor {
            Some(extract) => extract(&key, &value, raw.timestamp),
            None => raw.timestamp,
        };
        if let Some(reason) = self
            .bad_records
            .limits
            .check_timestamp(timestamp, self.state.wall_clock)
        {
            self.bad_record(&raw, reason)?;
            return Ok(true);
        }
        self.state.stream_time = self.state.stream_time.max(timestamp);
        self.state.metadata = Some(RecordMetadata {
            topic: Arc::clone(&raw.tp.topic),
            partition: raw.tp.partition,
            offset: raw.offset,
        });
        let record = DynRecord {
            key,
            value,
            timestamp,
            // The raw record's headers stay for a dead letter (cloning
            // none allocates nothing).
            headers: raw.headers.clone(),
        };
        self.state.write_time = timestamp;
        let result = self.route_all(&children, record);
        self.state.metadata = None;
        match result {
            Ok(()) => {}
            // The record made a sink write a record too large to send: the
            // input record is handled as a bad one (what its processing
            // forwarded to other sinks before stays).
            Err(TaskError::OutputTooLarge { node, topic, bytes }) => {
                let reason = format!(
                    "processing it made sink {node} write a record of {bytes} bytes to {topic}, \
                     larger than max.record.bytes = {}",
                    self.bad_records.limits.max_record_bytes
                );
                return self.bad_record(&raw, reason).map(|()| true);
            }
            Err(e) => return Err(e),
        }
        self.state.metrics.processed += 1;
        let e2e = u64::try_from(self.state.wall_clock.saturating_sub(timestamp)).unwrap_or(0);
        self.state.metrics.e2e_latency_ms_sum += e2e;
        self.state.metrics.e2e_latency_ms_max = self.state.metrics.e2e_latency_ms_max.max(e2e);
        self.punctuate(PunctuationType::StreamTime, self.state.stream_time)?;
        Ok(true)
    }

    /// Sets the wall clock (for latency) without firing punctuations.
    pub fn set_wall_clock(&mut self, now: Timestamp) {
        self.state.wall_clock = self.state.wall_clock.max(now);
    }

    /// Advances the wall clock to `now` and fires wall-clock punctuations due.
    pub fn advance_wall_clock(&mut self, now: Timestamp) -> Result<(), TaskError> {
        self.state.wall_clock = self.state.wall_clock.max(now);
        self.punctuate(PunctuationType::WallClockTime, self.state.wall_clock)
    }

    fn punctuate(&mut self, kind: PunctuationType, now: Timestamp) -> Result<(), TaskError> {
        let due: Vec<usize> = self
            .state
            .schedules
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.cancelled && s.kind == kind && s.next <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let (id, node) = {
                let s = &mut self.state.schedules[i];
                s.next = match kind {
                    PunctuationType::StreamTime => {
                        (now.div_euclid(s.interval) + 1).saturating_mul(s.interval)
                    }
                    PunctuationType::WallClockTime => {
                        let next = s.next.saturating_add(s.interval);
                        if next <= now {
                            now.saturating_add(s.interval)
                        } else {
                            next
                        }
                    }
                };
                (s.id, s.node)
            };
            self.state.write_time = now.max(0);
            if self.run_processor(node, |processor, ctx| processor.punctuate(ctx, id, now))? {
                self.state.metrics.punctuations += 1;
            }
        }
        Ok(())
    }

    /// Calls `call` on processor `node` with a context, then routes what it
    /// forwarded. `false` when `node` is not a processor of this task.
    fn run_processor(
        &mut self,
        node: NodeId,
        call: impl FnOnce(&mut dyn DynProcessor, &mut Ctx<'_>) -> Result<(), ProcessError>,
    ) -> Result<bool, TaskError> {
        let Some(Instance::Processor {
            name,
            processor,
            children,
            child_names,
            stores,
        }) = self.nodes.get_mut(&node)
        else {
            return Ok(false);
        };
        let mut ctx = Ctx {
            state: &mut self.state,
            node,
            name,
            children,
            child_names,
            stores,
            forwards: self.forward_pool.pop().unwrap_or_default(),
        };
        call(processor.as_mut(), &mut ctx).map_err(|source| TaskError::Process {
            node: name.clone(),
            source,
        })?;
        let forwards = std::mem::take(&mut ctx.forwards);
        let children = Arc::clone(children);
        self.route(&children, forwards)?;
        Ok(true)
    }

    fn route(&mut self, children: &[NodeId], mut forwards: Forwards) -> Result<(), TaskError> {
        for (target, record) in forwards.drain(..) {
            match target {
                Target::One(child) => self.dispatch(child, record)?,
                Target::All => self.route_all(children, record)?,
            }
        }
        // A buffer grown by a burst (a flat_map of thousands) is not kept.
        if forwards.capacity() <= 1024 {
            self.forward_pool.push(forwards);
        }
        Ok(())
    }

    /// Sends `record` to every one of `children`.
    fn route_all(&mut self, children: &[NodeId], record: DynRecord) -> Result<(), TaskError> {
        // The last child takes the record itself: a value with a single
        // consumer is never cloned.
        if let Some((&last, rest)) = children.split_last() {
            for &child in rest {
                self.dispatch(child, record.clone())?;
            }
            self.dispatch(last, record)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, node: NodeId, record: DynRecord) -> Result<(), TaskError> {
        match self.nodes.get_mut(&node) {
            Some(Instance::Processor { .. }) => {
                self.run_processor(node, |processor, ctx| processor.process(ctx, record))?;
                Ok(())
            }
            Some(Instance::Sink {
                name,
                topic,
                key,
                value,
            }) => {
                let serialize_err = |part, source| TaskError::Serialize {
                    node: name.clone(),
                    topic: topic.clone(),
                    part,
                    source: Box::new(source),
                };
                let key = key(&record.key).map_err(|e| serialize_err("key", e))?;
                let value = value(&record.value).map_err(|e| serialize_err("value", e))?;
                let bytes = key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
                if bytes > self.bad_records.limits.max_record_bytes {
                    return Err(TaskError::OutputTooLarge {
                        node: name.clone(),
                        topic: topic.clone(),
                        bytes,
                    });
                }
                self.state.output.push(ProducedRecord {
                    topic: topic.clone(),
                    partition: None,
                    key,
                    value,
                    timestamp: record.timestamp,
                    headers: record.headers,
                });
                Ok(())
            }
            Some(Instance::Source { children, .. }) => {
                let children = Arc::clone(children);
                self.route_all(&children, record)
            }
            None => Ok(()),
        }
    }

    fn bad_record(&mut self, raw: &ConsumedRecord, error: String) -> Result<(), TaskError> {
        match self.bad_records.handle(raw, &error)? {
            Some(letter) => {
                self.state.output.push(letter);
                self.state.metrics.dead_lettered += 1;
            }
            None => self.state.metrics.skipped += 1,
        }
        Ok(())
    }

    /// Lets every processor forward what it held back (caches), before a
    /// commit; what they forward is processed downstream as usual.
    pub fn flush_processors(&mut self) -> Result<(), TaskError> {
        self.state.write_time = self.state.stream_time.max(0);
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.run_processor(id, |processor, ctx| processor.flush(ctx))?;
        }
        Ok(())
    }

    /// Runs every processor's [`committed`](brook_topology::processor::Processor::committed)
    /// hook, after the commit was applied locally.
    pub fn committed_processors(&mut self) -> Result<(), TaskError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.run_processor(id, |processor, ctx| processor.committed(ctx))?;
        }
        Ok(())
    }

    /// Turns the stores' uncommitted writes into changelog records (one
    /// per key, its last value), into this task's partition of each
    /// changelog; they are part of the output the commit writes.
    pub fn prepare_commit(&mut self) {
        let TaskState { stores, output, .. } = &mut self.state;
        for store in stores.values() {
            let Some(changelog) = &store.changelog else {
                continue;
            };
            for (key, pending) in store.store.inner().pending() {
                output.push(ProducedRecord {
                    topic: changelog.topic.to_string(),
                    partition: Some(changelog.partition),
                    key: Some(key.to_vec()),
                    value: pending.value.clone(),
                    timestamp: pending.timestamp.max(0),
                    headers: Headers::new(),
                });
            }
        }
    }

    /// After the cluster committed: applies the uncommitted writes to the
    /// stores (one batch per store) and advances each changelog position
    /// to what the producer wrote (`written`, offsets after the last
    /// record per partition). Returns the keys written.
    pub fn commit_local(
        &mut self,
        written: &BTreeMap<TopicPartition, i64>,
    ) -> Result<usize, TaskError> {
        let mut total = 0;
        for (name, store) in &mut self.state.stores {
            let entries = store.store.inner().pending_len();
            if entries == 0 {
                continue_position(store, written);
                continue;
            }
            total += store
                .store
                .batch_below(entries, BufferedStore::commit)
                .map_err(|source| TaskError::Store {
                    store: name.clone(),
                    source,
                })?;
            continue_position(store, written);
        }
        Ok(total)
    }

    /// Discards the uncommitted writes (the transaction aborted).
    pub fn abort_local(&mut self) {
        for store in self.state.stores.values_mut() {
            store.store.inner_mut().abort();
        }
    }

    /// Memory held by uncommitted writes, bytes.
    pub fn uncommitted_bytes(&self) -> usize {
        self.state
            .stores
            .values()
            .map(|s| s.store.inner().pending_bytes())
            .sum()
    }

    /// Makes the stores' committed state durable (before a checkpoint).
    pub fn flush_stores(&mut self) -> Result<(), TaskError> {
        for (name, store) in &mut self.state.stores {
            store
                .store
                .flush_below(|buffered| buffered.inner_mut().flush())
                .map_err(|source| TaskError::Store {
                    store: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Each logged store with its changelog partition and the offset its
    /// local state reflects.
    pub fn changelog_positions(&self) -> Vec<(String, TopicPartition, i64)> {
        self.state
            .stores
            .iter()
            .filter_map(|(name, s)| {
                s.changelog
                    .as_ref()
                    .map(|tp| (name.clone(), tp.clone(), s.position))
            })
            .collect()
    }

    /// Each logged store with the changelog partition that restores it.
    pub fn changelog_partitions(&self) -> Vec<(String, TopicPartition)> {
        self.changelog_positions()
            .into_iter()
            .map(|(store, tp, _)| (store, tp))
            .collect()
    }

    /// Applies changelog records to store `store` in one batch, bypassing
    /// the transaction buffer (restore), and sets its position to `next`.
    pub fn restore_batch(
        &mut self,
        store: &str,
        batch: &[(Vec<u8>, Option<Vec<u8>>)],
        next: i64,
    ) -> Result<(), TaskError> {
        if let Some(s) = self.state.stores.get_mut(store) {
            s.store
                .inner_mut()
                .inner_mut()
                .write_batch(batch)
                .map_err(|source| TaskError::Store {
                    store: store.to_owned(),
                    source,
                })?;
            s.position = next;
        }
        Ok(())
    }

    /// Deletes every entry of `store` (its local state cannot be trusted)
    /// and sets its position to 0.
    pub fn clear_store(&mut self, store: &str) -> Result<(), TaskError> {
        if let Some(s) = self.state.stores.get_mut(store) {
            let err = |source| TaskError::Store {
                store: store.to_owned(),
                source,
            };
            s.store.inner_mut().abort();
            let base = s.store.inner_mut().inner_mut();
            let keys: Vec<(Vec<u8>, Option<Vec<u8>>)> = base
                .range(None, None)
                .map_err(err)?
                .into_iter()
                .map(|(k, _)| (k, None))
                .collect();
            base.write_batch(&keys).map_err(err)?;
            s.position = 0;
        }
        Ok(())
    }

    /// Operation counts per store.
    pub fn store_metrics(&self) -> BTreeMap<String, StoreMetrics> {
        self.state
            .stores
            .iter()
            .map(|(name, s)| (name.clone(), s.store.metrics()))
            .collect()
    }

    /// A store of this task, for reads from outside the topology
    /// (interactive queries, the test driver).
    pub fn store_mut(&mut self, name: &str) -> Option<(&StoreSpec, &mut dyn KeyValueBytes)> {
        self.state
            .stores
            .get_mut(name)
            .map(|s| (&s.spec, &mut s.store as &mut dyn KeyValueBytes))
    }

    /// The records produced since the last call.
    pub fn take_output(&mut self) -> Vec<ProducedRecord> {
        std::mem::take(&mut self.state.output)
    }

    /// Gives back an output buffer taken with
    /// [`take_output`](Self::take_output), emptied, to be reused.
    pub fn recycle_output(&mut self, mut buffer: Vec<ProducedRecord>) {
        if self.state.output.is_empty() && buffer.capacity() > self.state.output.capacity() {
            buffer.clear();
            self.state.output = buffer;
        }
    }

    /// Whether records wait to be taken with [`take_output`](Self::take_output).
    pub fn has_output(&self) -> bool {
        !self.state.output.is_empty()
    }

    /// For each input partition a record was processed from, the offset
    /// of the next record to process.
    pub fn committable_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.queues
            .iter()
            .filter_map(|q| q.consumed.map(|offset| (q.tp.clone(), offset)))
            .collect()
    }

    /// [`committable_offsets`](Self::committable_offsets) of one partition.
    pub fn committable_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.queues
            .iter()
            .find(|q| &q.tp == tp)
            .and_then(|q| q.consumed)
    }

    /// Closes the processors.
    pub fn close(&mut self) {
        for instance in self.nodes.values_mut() {
            if let Instance::Processor { processor, .. } = instance {
                processor.close();
            }
        }
    }
}
