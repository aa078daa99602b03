//! `KafkaStreams`: one application instance, as a handle.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use brook_runtime::memory::MemoryCluster;
//! # use brook_runtime::streams::{KafkaStreams, StreamsState};
//! # use brook_runtime::thread::StreamsConfig;
//! # fn topology() -> brook_topology::Topology {
//! #     use brook_topology::serdes::Utf8;
//! #     let b = brook_topology::StreamsBuilder::new();
//! #     b.stream("in", brook_topology::Consumed::with(Utf8, Utf8))
//! #         .to("out", brook_topology::Produced::with(Utf8, Utf8));
//! #     b.build().expect("a valid topology")
//! # }
//! let cluster = Arc::new(MemoryCluster::new()); // or KafkaCluster::new(config)?
//! let mut config = StreamsConfig::new("revenue").exactly_once();
//! config.num_threads = 2;
//! let mut streams = KafkaStreams::new(topology(), config, cluster);
//! streams.set_state_listener(|old, new| eprintln!("{old:?} -> {new:?}"));
//! streams.start()?;
//! // ... until SIGTERM ...
//! streams.close()?;
//! assert_eq!(streams.state(), StreamsState::NotRunning);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The instance runs `num_threads` stream threads, each with its own
//! consumer, producer (its own transactional id under exactly-once:
//! `<application.id>-<instance id>-<thread>`) and tasks. Tasks are
//! assigned either by the consumer group (every thread a member; partitions
//! move as instances join and leave) or statically
//! (`StreamsConfig::static_assignment`: instance `k` of `n` owns the tasks
//! whose partition falls on its threads, and no group rebalances happen).
//!
//! A thread that fails is handled by the uncaught error handler: replace
//! the thread (its tasks restart from the last commit), shut this instance
//! down, or shut the whole application down (every instance, through the
//! application's control topic `<application.id>-control`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brook_topology::processor::TaskId;
use brook_topology::{Headers, Timestamp, TopicSpec, Topology};

use crate::cluster::{
    Cluster, ClusterConsumer, Isolation, ProducedRecord, TopicPartition, error_chain,
};
use crate::task::TaskMetrics;
use crate::thread::{
    Assignment, RestoreMetrics, RuntimeError, StreamThread, StreamsConfig, ThreadMetrics,
    ThreadOptions,
};

/// One thread's counters, as of its last loop (including the threads it
/// replaced, so counters never go back).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ThreadSnapshot {
    /// Its tasks' counters.
    pub tasks: TaskMetrics,
    /// Records in and out, commits, lag.
    pub io: ThreadMetrics,
    /// Restoration so far.
    pub restore: RestoreMetrics,
}

impl ThreadSnapshot {
    fn of(thread: &StreamThread) -> Self {
        ThreadSnapshot {
            tasks: thread.metrics(),
            io: thread.thread_metrics(),
            restore: thread.restore_metrics(),
        }
    }

    /// These counters continued by `later`'s (gauges from `later`).
    fn then(&self, later: &ThreadSnapshot) -> Self {
        let mut tasks = self.tasks;
        tasks.add(&later.tasks);
        let (a, b) = (self.io, later.io);
        ThreadSnapshot {
            tasks,
            io: ThreadMetrics {
                records_in: a.records_in + b.records_in,
                records_out: a.records_out + b.records_out,
                commits: a.commits + b.commits,
                commit_nanos: a.commit_nanos.saturating_add(b.commit_nanos),
                commit_max_nanos: a.commit_max_nanos.max(b.commit_max_nanos),
                lag: b.lag,
                active_tasks: b.active_tasks,
            },
            restore: RestoreMetrics {
                records: self.restore.records + later.restore.records,
                elapsed: self.restore.elapsed + later.restore.elapsed,
                stores: self.restore.stores + later.restore.stores,
            },
        }
    }
}

/// The life of an instance, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamsState {
    /// Made, not started.
    Created,
    /// Threads are starting, restoring state, or taking new tasks.
    Rebalancing,
    /// Processing.
    Running,
    /// `close` was called; threads are committing and stopping.
    PendingShutdown,
    /// Stopped cleanly.
    NotRunning,
    /// Stopped because of an error the handler did not recover from.
    Error,
}

/// What to do when a stream thread fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorResponse {
    /// Start a new thread in its place; its tasks resume from their last
    /// commit (under exactly-once the failed thread's transaction aborts).
    ReplaceThread,
    /// Stop this instance (state `Error`).
    ShutdownInstance,
    /// Stop every instance of the application.
    ShutdownApplication,
}

type StateListener = Box<dyn Fn(StreamsState, StreamsState) + Send + Sync>;
type ErrorHandler = Box<dyn Fn(&RuntimeError) -> ErrorResponse + Send + Sync>;

struct Shared {
    state: Mutex<StreamsState>,
    listener: Mutex<Option<StateListener>>,
    handler: Mutex<Option<ErrorHandler>>,
    stop: AtomicBool,
    /// Threads still starting (restoring) or being replaced.
    starting: Mutex<usize>,
    metrics: Mutex<Vec<ThreadSnapshot>>,
    errors: Mutex<Vec<String>>,
    /// One mailbox per stream thread for interactive queries.
    queries: Mutex<Vec<mpsc::Sender<StoreQuery>>>,
}

/// A question for one stream thread, answered between two of its loops.
type StoreQuery = Box<dyn FnOnce(&mut StreamThread) + Send>;

impl Shared {
    fn set_state(&self, new: StreamsState) {
        let old = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let old = *state;
            // Terminal states stay.
            if old == new
                || matches!(old, StreamsState::NotRunning | StreamsState::Error)
                || (old == StreamsState::PendingShutdown
                    && new != StreamsState::NotRunning
                    && new != StreamsState::Error)
            {
                return;
            }
            *state = new;
            old
        };
        tracing::info!(?old, ?new, "state");
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(|p| p.into_inner()) {
            listener(old, new);
        }
    }

    fn state(&self) -> StreamsState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One instance of a streams application.
pub struct KafkaStreams {
    topology: Arc<Topology>,
    config: StreamsConfig,
    cluster: Arc<dyn Cluster>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    options: ThreadOptions,
}

impl std::fmt::Debug for KafkaStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStreams")
            .field("application_id", &self.config.application_id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The control topic of an application: a shutdown request written there
/// stops every instance.
pub fn control_topic(application_id: &str) -> String {
    format!("{application_id}-control")
}

const SHUTDOWN: &[u8] = b"shutdown-application";

impl KafkaStreams {
    /// An instance of `topology` on `cluster`.
    pub fn new(topology: Topology, config: StreamsConfig, cluster: Arc<dyn Cluster>) -> Self {
        KafkaStreams {
            topology: Arc::new(topology),
            config,
            cluster,
            shared: Arc::new(Shared {
                state: Mutex::new(StreamsState::Created),
                listener: Mutex::new(None),
                handler: Mutex::new(None),
                stop: AtomicBool::new(false),
                starting: Mutex::new(0),
                metrics: Mutex::new(Vec::new()),
                errors: Mutex::new(Vec::new()),
                queries: Mutex::new(Vec::new()),
            }),
            threads: Vec::new(),
            options: ThreadOptions::default(),
        }
    }

    /// Options every thread gets (restore listener, shared RocksDB budget).
    pub fn with_thread_options(mut self, options: ThreadOptions) -> Self {
        self.options = options;
        self
    }

    /// Called with (old, new) on every state change.
    pub fn set_state_listener(
        &mut self,
        listener: impl Fn(StreamsState, StreamsState) + Send + Sync + 'static,
    ) {
        *self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(listener));
    }

    /// Decides what a thread failure does (default: shut the instance down).
    pub fn set_uncaught_error_handler(
        &mut self,
        handler: impl Fn(&RuntimeError) -> ErrorResponse + Send + Sync + 'static,
    ) {
        *self
            .shared
            .handler
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(handler));
    }

    /// The current state.
    pub fn state(&self) -> StreamsState {
        self.shared.state()
    }

    /// The errors threads failed with, in order.
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counters summed over every thread's tasks (as of their last loop).
    pub fn metrics(&self) -> TaskMetrics {
        self.threads_metrics()
            .iter()
            .fold(TaskMetrics::default(), |mut sum, m| {
                sum.add(&m.tasks);
                sum
            })
    }

    /// Every thread's counters, as of its last loop.
    pub fn threads_metrics(&self) -> Vec<ThreadSnapshot> {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A handle that reads this instance's metrics from any thread (for a
    /// metrics endpoint).
    pub fn metrics_handle(&self) -> MetricsHandle {
        MetricsHandle {
            application_id: self.config.application_id.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The metrics in Prometheus' text format; see [`MetricsHandle::prometheus`].
    pub fn prometheus(&self) -> String {
        self.metrics_handle().prometheus()
    }

    /// Starts the threads. Fails if the instance was started before, or if
    /// the topology cannot run on the cluster (a missing source topic,
    /// inputs not co-partitioned): those are checked here, before any
    /// thread starts.
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        if self.state() != StreamsState::Created {
            return Err(RuntimeError::Cluster(crate::cluster::ClusterError::Client(
                format!("cannot start an instance in state {:?}", self.state()),
            )));
        }
        let threads = self.config.num_threads.max(1);
        self.cluster.create_topics(&[TopicSpec::new(
            control_topic(&self.config.application_id),
            1,
        )
        .replication(self.config.replication_factor)])?;
        // Topic checks happen once, synchronously, so errors reach the caller.
        crate::thread::check_topology(&self.topology, &self.config, self.cluster.as_ref())?;
        *self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = vec![ThreadSnapshot::default(); threads];
        *self
            .shared
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = threads;
        // One state directory lock and one RocksDB budget for all threads.
        let mut options = self.options.clone();
        if options.state_directory.is_none()
            && let Some(dir) = &self.config.state_dir
        {
            let state = brook_state::StateDirectory::open(dir, &self.config.application_id)
                .map_err(|source| RuntimeError::Store {
                    store: "(state directory)".into(),
                    source,
                })?;
            options.state_directory = Some(Arc::new(state));
        }
        if options.rocksdb.is_none() && self.config.state_dir.is_some() {
            options.rocksdb = Some(brook_state::RocksDbEnv::new(self.config.rocksdb));
        }
        self.shared.set_state(StreamsState::Rebalancing);
        let control = {
            let mut consumer = self.cluster.consumer(
                &format!("{}-control", self.config.application_id),
                Isolation::ReadCommitted,
            )?;
            let tp = TopicPartition::new(control_topic(&self.config.application_id), 0);
            let end = consumer.end_offsets(std::slice::from_ref(&tp))?[&tp];
            consumer.assign(std::slice::from_ref(&tp))?;
            consumer.seek(&tp, end)?;
            consumer
        };
        let control = Arc::new(Mutex::new(control));
        let mut mailboxes = Vec::new();
        for index in 0..threads {
            let (sender, queries) = mpsc::channel();
            mailboxes.push(sender);
            let runner = ThreadRunner {
                queries,
                index,
                threads,
                topology: self.topology.clone(),
                config: self.config.clone(),
                cluster: self.cluster.clone(),
                shared: self.shared.clone(),
                options: options.clone(),
                control: control.clone(),
                retrying: Cell::new(None),
            };
            let handle = std::thread::Builder::new()
                .name(format!("{}-stream-{index}", self.config.application_id))
                .spawn(move || runner.run())
                .map_err(|e| {
                    RuntimeError::Cluster(crate::cluster::ClusterError::Client(format!(
                        "spawning stream thread {index}: {e}"
                    )))
                })?;
            self.threads.push(handle);
        }
        *self
            .shared
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = mailboxes;
        Ok(())
    }

    /// A handle for interactive queries over this instance's stores, to
    /// use from any thread (a REST endpoint, a dashboard).
    pub fn store_queries(&self) -> StoreQueries {
        StoreQueries {
            shared: self.shared.clone(),
            topology: self.topology.clone(),
        }
    }

    /// Stops: every thread commits, checkpoints and closes its tasks.
    /// Waits for them; the state ends `NotRunning` (or `Error`).
    pub fn close(&mut self) -> Result<(), RuntimeError> {
        if self.state() != StreamsState::Error {
            self.shared.set_state(StreamsState::PendingShutdown);
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        if self.state() != StreamsState::Error {
            self.shared.set_state(StreamsState::NotRunning);
        }
        Ok(())
    }

    /// Waits until the state is `want` or `timeout` passes; the state then.
    pub fn wait_for_state(&self, want: StreamsState, timeout: Duration) -> StreamsState {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if state == want || Instant::now() >= deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.close();
        }
    }
}

/// Reads an instance's metrics; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct MetricsHandle {
    application_id: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle")
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// The instance's state.
    pub fn state(&self) -> StreamsState {
        self.shared.state()
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// Every thread's counters, as of its last loop.
    pub fn threads(&self) -> Vec<ThreadSnapshot> {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The metrics in Prometheus' text format, labelled with the
    /// application id and thread.
    pub fn prometheus(&self) -> String {
        type Value = fn(&ThreadSnapshot) -> f64;
        const METRICS: &[(&str, &str, &str, Value)] = &[
            (
                "records_in_total",
                "counter",
                "Records read from input partitions.",
                |t| t.io.records_in as f64,
            ),
            (
                "records_processed_total",
                "counter",
                "Records processed by tasks.",
                |t| t.tasks.processed as f64,
            ),
            (
                "records_out_total",
                "counter",
                "Records sent: results, changelog records, dead letters.",
                |t| t.io.records_out as f64,
            ),
            (
                "dead_letters_total",
                "counter",
                "Records sent to the dead-letter topic.",
                |t| t.tasks.dead_lettered as f64,
            ),
            (
                "skipped_records_total",
                "counter",
                "Bad records logged and skipped (log-and-continue handler).",
                |t| t.tasks.skipped as f64,
            ),
            (
                "late_records_dropped_total",
                "counter",
                "Records dropped because their windows had closed.",
                |t| t.tasks.late_records as f64,
            ),
            (
                "consumer_lag_records",
                "gauge",
                "Records in the input partitions not yet processed.",
                |t| t.io.lag as f64,
            ),
            (
                "active_tasks",
                "gauge",
                "Active tasks the thread owns.",
                |t| t.io.active_tasks as f64,
            ),
            (
                "commits_total",
                "counter",
                "Commits that wrote something.",
                |t| t.io.commits as f64,
            ),
            (
                "commit_latency_seconds_sum",
                "counter",
                "Time spent committing.",
                |t| t.io.commit_nanos as f64 / 1e9,
            ),
            (
                "commit_latency_seconds_max",
                "gauge",
                "The slowest commit.",
                |t| t.io.commit_max_nanos as f64 / 1e9,
            ),
            (
                "e2e_latency_seconds_sum",
                "counter",
                "Sum of wall clock minus record timestamp when processed.",
                |t| t.tasks.e2e_latency_ms_sum as f64 / 1e3,
            ),
            (
                "e2e_latency_seconds_max",
                "gauge",
                "The largest end-to-end latency.",
                |t| t.tasks.e2e_latency_ms_max as f64 / 1e3,
            ),
            (
                "restore_records_total",
                "counter",
                "Changelog records restored.",
                |t| t.restore.records as f64,
            ),
            (
                "restore_seconds_total",
                "counter",
                "Time spent restoring.",
                |t| t.restore.elapsed.as_secs_f64(),
            ),
        ];
        let app = &self.application_id;
        let threads = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help, value) in METRICS {
            out.push_str(&format!(
                "# HELP brook_{name} {help}\n# TYPE brook_{name} {kind}\n"
            ));
            for (i, t) in threads.iter().enumerate() {
                out.push_str(&format!(
                    "brook_{name}{{application_id=\"{app}\",thread=\"{i}\"}} {}\n",
                    value(t)
                ));
            }
        }
        let state = self.shared.state();
        out.push_str("# HELP brook_state The instance state (1 for the current one).\n# TYPE brook_state gauge\n");
        for s in [
            StreamsState::Created,
            StreamsState::Rebalancing,
            StreamsState::Running,
            StreamsState::PendingShutdown,
            StreamsState::NotRunning,
            StreamsState::Error,
        ] {
            out.push_str(&format!(
                "brook_state{{application_id=\"{app}\",state=\"{s:?}\"}} {}\n",
                u8::from(s == state)
            ));
        }
        out
    }
}

/// Interactive queries: reads of an instance's local stores, as its
/// processors see them (the state of the last processed record, including
/// writes not committed yet, like Kafka Streams' interactive queries under
/// at-least-once).
///
/// Each stream thread answers between two of its loops, so a query waits
/// at most one loop (a poll and its processing, or one restore batch) per
/// thread. Only this instance's tasks are read: with several instances,
/// each holds the keys of its own partitions.
#[derive(Clone)]
pub struct StoreQueries {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
}

impl std::fmt::Debug for StoreQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreQueries").finish_non_exhaustive()
    }
}

/// Why an interactive query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The instance is not running (not started, stopping, or failed).
    #[error("the instance is {0:?}, not running")]
    NotRunning(StreamsState),
    /// The topology has no store of that name.
    #[error("the topology has no store {0:?}")]
    UnknownStore(String),
    /// A thread did not answer in time (busy restoring a large store?).
    #[error("stream thread {thread} did not answer within {timeout:?}")]
    Timeout {
        /// Which thread.
        thread: usize,
        /// How long it was given.
        timeout: Duration,
    },
    /// The store could not be read (bytes its serdes cannot decode).
    #[error("reading store {store:?}")]
    Store {
        /// The store.
        store: String,
        /// Why.
        source: brook_topology::processor::ProcessError,
    },
}

impl StoreQueries {
    /// Asks every stream thread `question` and collects the answers, in
    /// thread order.
    pub fn ask<R: Send + 'static>(
        &self,
        question: impl Fn(&mut StreamThread) -> R + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<Vec<R>, QueryError> {
        let state = self.shared.state();
        if !matches!(state, StreamsState::Running | StreamsState::Rebalancing) {
            return Err(QueryError::NotRunning(state));
        }
        let question = Arc::new(question);
        let mailboxes = self
            .shared
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut answers = Vec::new();
        for (thread, mailbox) in mailboxes.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(1);
            let q = question.clone();
            let sent = mailbox.send(Box::new(move |t: &mut StreamThread| {
                let _ = tx.send(q(t));
            }));
            if sent.is_err() {
                // The thread ended (instance stopping).
                return Err(QueryError::NotRunning(self.shared.state()));
            }
            answers.push((thread, rx));
        }
        let deadline = Instant::now() + timeout;
        answers
            .into_iter()
            .map(|(thread, rx)| {
                let left = deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(left)
                    .map_err(|_| QueryError::Timeout { thread, timeout })
            })
            .collect()
    }

    fn known(&self, name: &str) -> Result<(), QueryError> {
        match self.topology.store(name) {
            Some(_) => Ok(()),
            None => Err(QueryError::UnknownStore(name.to_owned())),
        }
    }

    /// The contents of store `name` over all of this instance's tasks.
    pub fn read_store<K, V>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<K, V>, QueryError>
    where
        K: Ord + Send + 'static,
        V: Send + 'static,
    {
        self.known(name)?;
        let store = name.to_owned();
        let mut all = BTreeMap::new();
        for part in self.ask(move |t| t.read_store::<K, V>(&store), timeout)? {
            all.extend(part.map_err(|source| QueryError::Store {
                store: name.to_owned(),
                source,
            })?);
        }
        Ok(all)
    }

    /// The value of `key` in store `name`, from whichever task holds it.
    pub fn get<K, V>(&self, name: &str, key: K, timeout: Duration) -> Result<Option<V>, QueryError>
    where
        K: Send + Sync + 'static,
        V: Send + 'static,
    {
        self.known(name)?;
        let store = name.to_owned();
        let mut found = None;
        for part in self.ask(move |t| t.get_from_store::<K, V>(&store, &key), timeout)? {
            if let Some(v) = part.map_err(|source| QueryError::Store {
                store: name.to_owned(),
                source,
            })? {
                found = Some(v);
            }
        }
        Ok(found)
    }
}

struct ThreadRunner {
    queries: mpsc::Receiver<StoreQuery>,
    index: usize,
    threads: usize,
    topology: Arc<Topology>,
    config: StreamsConfig,
    cluster: Arc<dyn Cluster>,
    shared: Arc<Shared>,
    options: ThreadOptions,
    control: Arc<Mutex<Box<dyn ClusterConsumer>>>,
    /// Since when, when last, and how many times the thread has been
    /// replaced without recovering in between.
    retrying: Cell<Option<Retrying>>,
}

/// A run of failed threads with no recovery in between.
#[derive(Debug, Clone, Copy)]
struct Retrying {
    /// The first failure.
    since: Instant,
    /// The last replacement.
    last: Instant,
    attempts: u32,
}

/// The pause before the `attempt`th replacement of a failed thread: 100 ms
/// doubling, at most 5 s.
fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

impl ThreadRunner {
    /// What a failure does when the application set no handler: a
    /// retryable failure replaces the thread until `retry_timeout` has
    /// passed without a commit; any other stops the instance.
    fn default_response(&self, error: &RuntimeError) -> ErrorResponse {
        if !error.is_retryable() {
            return ErrorResponse::ShutdownInstance;
        }
        let now = Instant::now();
        let run = self.retrying.get().unwrap_or(Retrying {
            since: now,
            last: now,
            attempts: 0,
        });
        self.retrying.set(Some(run));
        if run.since.elapsed() >= self.config.retry_timeout {
            tracing::error!(
                thread = self.index,
                attempts = run.attempts,
                seconds = run.since.elapsed().as_secs(),
                "giving up: the failure lasted longer than the retry timeout ({:?})",
                self.config.retry_timeout
            );
            return ErrorResponse::ShutdownInstance;
        }
        ErrorResponse::ReplaceThread
    }

    /// Waits before replacing a thread (longer each time in a row); `false`
    /// when the instance is closing meanwhile.
    fn pause_before_retry(&self) -> bool {
        let now = Instant::now();
        let mut run = self.retrying.get().unwrap_or(Retrying {
            since: now,
            last: now,
            attempts: 0,
        });
        let attempts = run.attempts;
        run.attempts += 1;
        run.last = now;
        self.retrying.set(Some(run));
        let until = now + retry_backoff(attempts);
        tracing::warn!(
            thread = self.index,
            attempt = attempts + 1,
            pause_ms = retry_backoff(attempts).as_millis() as u64,
            "replacing the failed stream thread; its tasks resume from their last commit"
        );
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn thread_config(&self) -> StreamsConfig {
        let mut config = self.config.clone();
        config.instance_id = format!("{}-{}", self.config.instance_id, self.index);
        config
    }

    fn assignment(&self) -> Assignment {
        match self.config.static_assignment {
            Some((instance, instances)) => {
                let slots = i64::from(instances) * self.threads as i64;
                let slot = i64::from(instance) * self.threads as i64 + self.index as i64;
                Assignment::Static(Arc::new(move |task: TaskId| {
                    i64::from(task.partition) % slots == slot
                }))
            }
            None => Assignment::Group,
        }
    }

    fn start_thread(&self) -> Result<StreamThread, RuntimeError> {
        StreamThread::start(
            &self.topology,
            self.thread_config(),
            self.cluster.as_ref(),
            self.assignment(),
            now_ms(),
            self.options.clone(),
        )
    }

    fn started(&self) {
        let mut starting = self
            .shared
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *starting = starting.saturating_sub(1);
        if *starting == 0 {
            self.shared.set_state(StreamsState::Running);
        }
    }

    /// Reads the control topic; `true` when the application must stop.
    fn shutdown_requested(&self) -> bool {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match control.poll(10) {
            Ok(records) => records.iter().any(|r| r.value.as_deref() == Some(SHUTDOWN)),
            Err(_) => false,
        }
    }

    fn request_application_shutdown(&self) {
        let request = ProducedRecord {
            topic: control_topic(&self.config.application_id),
            partition: Some(0),
            key: Some(self.config.instance_id.clone().into_bytes()),
            value: Some(SHUTDOWN.to_vec()),
            timestamp: now_ms(),
            headers: Headers::new(),
        };
        let sent = self
            .cluster
            .producer()
            .and_then(|mut p| p.send(request).and_then(|()| p.flush()));
        if let Err(e) = sent {
            tracing::error!(error = %e, "could not ask the other instances to shut down");
        }
    }

    /// Handles a failure; `Some(thread)` to go on with a replacement.
    fn on_error(&self, mut error: RuntimeError) -> Option<StreamThread> {
        loop {
            tracing::error!(thread = self.index, error = %error_chain(&error), "stream thread failed");
            self.shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("thread {}: {}", self.index, error_chain(&error)));
            let response = match &*self
                .shared
                .handler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
            {
                Some(handler) => handler(&error),
                None => self.default_response(&error),
            };
            match response {
                ErrorResponse::ReplaceThread => {
                    if self.shared.stop.load(Ordering::SeqCst) || !self.pause_before_retry() {
                        return None;
                    }
                    self.shared.set_state(StreamsState::Rebalancing);
                    match self.start_thread() {
                        Ok(thread) => {
                            self.shared.set_state(StreamsState::Running);
                            return Some(thread);
                        }
                        Err(e) => error = e,
                    }
                }
                ErrorResponse::ShutdownInstance => {
                    self.shared.set_state(StreamsState::Error);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return None;
                }
                ErrorResponse::ShutdownApplication => {
                    self.request_application_shutdown();
                    self.shared.set_state(StreamsState::Error);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return None;
                }
            }
        }
    }

    fn run(self) {
        let mut thread = match self.start_thread() {
            Ok(thread) => thread,
            Err(e) => match self.on_error(e) {
                Some(thread) => thread,
                None => {
                    self.started();
                    return;
                }
            },
        };
        self.started();
        // Counters of the threads this one replaced.
        let mut retired = ThreadSnapshot::default();
        let mut control_checked = Instant::now();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            // The control topic, twice a second.
            if control_checked.elapsed() >= Duration::from_millis(500) && {
                control_checked = Instant::now();
                self.shutdown_requested()
            } {
                tracing::warn!("another instance asked the application to shut down");
                self.shared.set_state(StreamsState::Error);
                self.shared.stop.store(true, Ordering::SeqCst);
                break;
            }
            match thread.run_once(now_ms()) {
                Ok(polled) => {
                    // The replacement committed, or has run for a whole
                    // retry timeout (an idle thread does not commit): the
                    // failure is over.
                    if let Some(run) = self.retrying.get()
                        && (thread.thread_metrics().commits > 0
                            || run.last.elapsed() >= self.config.retry_timeout)
                    {
                        tracing::info!(thread = self.index, "recovered");
                        self.retrying.set(None);
                    }
                    if let Some(slot) = self
                        .shared
                        .metrics
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(self.index)
                    {
                        *slot = retired.then(&ThreadSnapshot::of(&thread));
                    }
                    while let Ok(query) = self.queries.try_recv() {
                        query(&mut thread);
                    }
                    if polled == 0 && !thread.has_buffered() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(RuntimeError::Cluster(
                    e @ (crate::cluster::ClusterError::Rebalanced { .. }
                    | crate::cluster::ClusterError::TransactionAborted { .. }),
                )) => {
                    // Not a failure of the application: the group moved
                    // tasks under this thread mid-commit (Kafka Streams'
                    // "task migrated"), or the open transaction can only be
                    // aborted (its "task corrupted": records timed out while
                    // the process was paused, say). Drop the uncommitted
                    // work with the thread; a fresh one re-initialises the
                    // transactional id (aborting what was open), rejoins,
                    // restores its tasks and resumes from committed offsets.
                    if matches!(e, crate::cluster::ClusterError::Rebalanced { .. }) {
                        tracing::info!(thread = self.index, reason = %e, "rebalanced mid-commit; rejoining");
                    } else {
                        tracing::warn!(thread = self.index, reason = %e, "resuming from the committed state");
                    }
                    retired = retired.then(&ThreadSnapshot::of(&thread));
                    drop(thread);
                    match self.start_thread() {
                        Ok(next) => thread = next,
                        Err(e) => match self.on_error(e) {
                            Some(next) => thread = next,
                            None => return,
                        },
                    }
                }
                Err(e) => {
                    retired = retired.then(&ThreadSnapshot::of(&thread));
                    drop(thread);
                    match self.on_error(e) {
                        Some(next) => thread = next,
                        None => return,
                    }
                }
            }
        }
        if let Err(e) = thread.close() {
            tracing::error!(thread = self.index, error = %e, "closing the stream thread failed");
            self.shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "thread {} on close: {}",
                    self.index,
                    error_chain(&e)
                ));
        }
    }
}
