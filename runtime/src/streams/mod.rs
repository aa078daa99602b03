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

mod metrics;
mod queries;
mod supervision;

pub use metrics::{MetricsHandle, ThreadSnapshot};
pub use queries::{QueryError, StoreQueries};

use supervision::ThreadRunner;

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
