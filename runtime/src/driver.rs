//! `TopologyTestDriver`: run a topology in a test, deterministically, on
//! topics with as many partitions as production has.
//!
//! The driver is brook's runtime — the same [`StreamThread`], tasks and
//! commit loop that run against Kafka — on the in-process
//! [`MemoryCluster`], with a manual wall clock. Piping a record in writes it
//! to its topic (partitioned by key with Kafka's murmur2, or to a partition
//! you choose) and then runs the topology until nothing is left to process,
//! repartition topics included; output topics are then read back in the
//! order records were written.
//!
//! ```
//! use brook_runtime::driver::TopologyTestDriver;
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::{Consumed, Produced, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("words", Consumed::with(Utf8, Utf8))
//!     .flat_map_values(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     .map_values(|word| word.len() as u64)
//!     .to("lengths", Produced::with(Utf8, Json::<u64>::new()));
//!
//! let driver = TopologyTestDriver::builder(builder.build().unwrap())
//!     .topic("words", 3)
//!     .topic("lengths", 3)
//!     .build()
//!     .unwrap();
//! let words = driver.input_topic("words", Utf8, Utf8);
//! let lengths = driver.output_topic("lengths", Utf8, Json::<u64>::new());
//! words.pipe_input("line-1".to_string(), "hello brook".to_string(), 1_000).unwrap();
//! let out: Vec<u64> = lengths.read_values().unwrap();
//! assert_eq!(out, vec![5, 5]);
//! ```

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use brook_topology::graph::{NodeKind, TopicName};
use brook_topology::serdes::{Serde, SerdeError};
use brook_topology::{Headers, Timestamp, TopicSpec, Topology};

use crate::cluster::{Cluster, ClusterError, ProducedRecord};
use crate::memory::MemoryCluster;
use crate::task::TaskMetrics;
use crate::thread::{RuntimeError, StreamThread, StreamsConfig};

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The runtime failed (a processor error, a missing topic, ...).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The memory cluster refused (unknown topic or partition).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A test record could not be (de)serialized.
    #[error("{what} on topic {topic:?}")]
    Serde {
        /// Serializing or deserializing, key or value.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The serde's error.
        source: SerdeError,
    },
    /// A store could not be read.
    #[error("reading store {store:?}")]
    Store {
        /// The store.
        store: String,
        /// What went wrong.
        source: brook_topology::processor::ProcessError,
    },
    /// The topology kept producing records for longer than a test should.
    #[error("the topology did not become idle after {0} iterations (a cycle through a topic?)")]
    NotIdle(usize),
}

/// Configures a [`TopologyTestDriver`].
pub struct DriverBuilder {
    topology: Topology,
    config: StreamsConfig,
    partitions: BTreeMap<String, i32>,
    default_partitions: i32,
    wall_clock: Timestamp,
}

impl DriverBuilder {
    /// The application id (default `test-app`): it names internal topics.
    pub fn application_id(mut self, id: impl Into<String>) -> Self {
        self.config.application_id = id.into();
        self
    }

    /// Creates `topic` with `partitions` partitions (input or output).
    pub fn topic(mut self, topic: impl Into<String>, partitions: i32) -> Self {
        self.partitions.insert(topic.into(), partitions);
        self
    }

    /// Partitions of the topology's topics not named with
    /// [`topic`](Self::topic) (default 1).
    pub fn default_partitions(mut self, partitions: i32) -> Self {
        self.default_partitions = partitions;
        self
    }

    /// Keeps stores in RocksDB under `dir` (default: in memory), so tests
    /// can exercise checkpoints and restore as production does.
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.state_dir = Some(dir.into());
        self
    }

    /// What happens to records that cannot be deserialized (default: the
    /// dead-letter topic).
    pub fn deserialization_handler(mut self, handler: crate::task::DeserializationHandler) -> Self {
        self.config.deserialization_handler = handler;
        self
    }

    /// What else makes a record bad (default: larger than 1 MiB).
    pub fn record_limits(mut self, limits: crate::task::RecordLimits) -> Self {
        self.config.record_limits = limits;
        self
    }

    /// Runs with exactly-once transactions (default: at-least-once).
    pub fn exactly_once(mut self) -> Self {
        self.config.guarantee = crate::thread::ProcessingGuarantee::ExactlyOnceV2;
        self
    }

    /// The wall clock at start, ms (default 0).
    pub fn wall_clock(mut self, now: Timestamp) -> Self {
        self.wall_clock = now;
        self
    }

    /// Creates the topics and starts the runtime.
    pub fn build(self) -> Result<TopologyTestDriver, DriverError> {
        let cluster = MemoryCluster::new();
        let mut specs: BTreeMap<String, TopicSpec> = BTreeMap::new();
        for node in self.topology.nodes() {
            let topics: Vec<&TopicName> = match &node.kind {
                NodeKind::Source(s) => s.topics.iter().collect(),
                NodeKind::Sink(s) => vec![&s.topic],
                NodeKind::Processor(_) => Vec::new(),
            };
            for topic in topics {
                if let TopicName::User(name) = topic {
                    let partitions = self
                        .partitions
                        .get(name)
                        .copied()
                        .unwrap_or(self.default_partitions);
                    specs.insert(name.clone(), TopicSpec::new(name.clone(), partitions));
                }
            }
        }
        for global in self.topology.global_stores() {
            if let TopicName::User(name) = &global.topic {
                let partitions = self
                    .partitions
                    .get(name)
                    .copied()
                    .unwrap_or(self.default_partitions);
                specs.insert(name.clone(), TopicSpec::new(name.clone(), partitions));
            }
        }
        for (name, &partitions) in &self.partitions {
            specs
                .entry(name.clone())
                .or_insert_with(|| TopicSpec::new(name.clone(), partitions));
        }
        cluster.create_topics(&specs.into_values().collect::<Vec<_>>())?;
        TopologyTestDriver::start(
            cluster,
            Arc::new(self.topology),
            self.config,
            self.wall_clock,
        )
    }
}

/// Runs a topology on the in-memory cluster; see the [module docs](self).
pub struct TopologyTestDriver {
    cluster: MemoryCluster,
    topology: Arc<Topology>,
    config: StreamsConfig,
    dead_letter_topic: String,
    thread: RefCell<StreamThread>,
    wall_clock: Cell<Timestamp>,
}

const MAX_ITERATIONS: usize = 10_000;

impl TopologyTestDriver {
    /// Starts configuring a driver for `topology`.
    pub fn builder(topology: Topology) -> DriverBuilder {
        let mut config = StreamsConfig::new("test-app");
        // Commit after every step, as the test driver of Kafka Streams does.
        config.commit_interval = Duration::ZERO;
        DriverBuilder {
            topology,
            config,
            partitions: BTreeMap::new(),
            default_partitions: 1,
            wall_clock: 0,
        }
    }

    fn start(
        cluster: MemoryCluster,
        topology: Arc<Topology>,
        config: StreamsConfig,
        wall_clock: Timestamp,
    ) -> Result<Self, DriverError> {
        let thread = StreamThread::new(&topology, config.clone(), &cluster, |_| true, wall_clock)?;
        let driver = TopologyTestDriver {
            cluster,
            topology,
            dead_letter_topic: config.dead_letter_topic(),
            config,
            thread: RefCell::new(thread),
            wall_clock: Cell::new(wall_clock),
        };
        driver.run_until_idle()?;
        Ok(driver)
    }

    /// Stops the application without a final commit (as a crash would) and
    /// starts it again on the same cluster: input resumes from the last
    /// committed offsets and stores are rebuilt from their changelogs.
    pub fn restart(self) -> Result<Self, DriverError> {
        let TopologyTestDriver {
            cluster,
            topology,
            config,
            wall_clock,
            thread,
            ..
        } = self;
        // Gone before the new one starts (it releases the state directory).
        drop(thread);
        TopologyTestDriver::start(cluster, topology, config, wall_clock.get())
    }

    /// The contents of store `name`, merged over all tasks.
    pub fn read_store<K: Ord + 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<BTreeMap<K, V>, DriverError> {
        self.thread
            .borrow_mut()
            .read_store(name)
            .map_err(|source| DriverError::Store {
                store: name.to_owned(),
                source,
            })
    }

    /// A driver with defaults: application `test-app`, one partition per topic.
    pub fn new(topology: Topology) -> Result<Self, DriverError> {
        Self::builder(topology).build()
    }

    /// The cluster the topology runs on (to inspect any topic or offset).
    pub fn cluster(&self) -> &MemoryCluster {
        &self.cluster
    }

    /// The dead-letter topic's name.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// The manual wall clock, ms.
    pub fn wall_clock(&self) -> Timestamp {
        self.wall_clock.get()
    }

    /// Advances the wall clock, firing wall-clock punctuations that fall due.
    pub fn advance_wall_clock(&self, by: Duration) -> Result<(), DriverError> {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.wall_clock
            .set(self.wall_clock.get().saturating_add(by));
        self.thread
            .borrow_mut()
            .advance_wall_clock(self.wall_clock.get())?;
        self.run_until_idle()
    }

    /// Counters summed over all tasks.
    pub fn metrics(&self) -> TaskMetrics {
        self.thread.borrow().metrics()
    }

    /// What restoring the stores took when the runtime (re)started.
    pub fn restore_metrics(&self) -> crate::thread::RestoreMetrics {
        self.thread.borrow().restore_metrics()
    }

    /// Store operation counts per store, summed over tasks.
    pub fn store_metrics(&self) -> BTreeMap<String, brook_state::StoreMetrics> {
        self.thread.borrow().store_metrics()
    }

    /// Stream time of each task, by `subtopology_partition`.
    pub fn stream_times(&self) -> BTreeMap<String, Timestamp> {
        self.thread
            .borrow()
            .tasks()
            .map(|(id, task)| (id.to_string(), task.stream_time()))
            .collect()
    }

    /// A handle to write test records into `topic`.
    pub fn input_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> TestInputTopic<'_, K, V> {
        TestInputTopic {
            driver: self,
            topic: topic.to_owned(),
            key: Box::new(key),
            value: Box::new(value),
        }
    }

    /// A handle to read what the topology wrote to `topic`.
    pub fn output_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> TestOutputTopic<'_, K, V> {
        TestOutputTopic {
            driver: self,
            topic: topic.to_owned(),
            key: Box::new(key),
            value: Box::new(value),
            read: Cell::new(0),
            _types: PhantomData,
        }
    }

    fn run_until_idle(&self) -> Result<(), DriverError> {
        let mut thread = self.thread.borrow_mut();
        for _ in 0..MAX_ITERATIONS {
            let polled = thread.run_once(self.wall_clock.get())?;
            thread.commit()?;
            if polled == 0
                && !thread.has_buffered()
                && thread.run_once(self.wall_clock.get())? == 0
                && !thread.has_buffered()
            {
                thread.commit()?;
                return Ok(());
            }
        }
        Err(DriverError::NotIdle(MAX_ITERATIONS))
    }
}

/// Maps a serde error of a test record on `topic` to a `DriverError`.
fn serde_error(topic: &str, what: &'static str) -> impl FnOnce(SerdeError) -> DriverError {
    let topic = topic.to_owned();
    move |source| DriverError::Serde {
        what,
        topic,
        source,
    }
}

/// Writes test records into a topic; see [`TopologyTestDriver::input_topic`].
pub struct TestInputTopic<'d, K, V> {
    driver: &'d TopologyTestDriver,
    topic: String,
    key: Box<dyn Serde<K>>,
    value: Box<dyn Serde<V>>,
}

impl<K: 'static, V: 'static> TestInputTopic<'_, K, V> {
    fn write(
        &self,
        partition: Option<i32>,
        key: &K,
        value: Option<&V>,
        timestamp: Timestamp,
    ) -> Result<(), DriverError> {
        self.produce(partition, key, value, timestamp)?;
        self.driver.run_until_idle()
    }

    fn produce(
        &self,
        partition: Option<i32>,
        key: &K,
        value: Option<&V>,
        timestamp: Timestamp,
    ) -> Result<(), DriverError> {
        let serde_err = |what| serde_error(&self.topic, what);
        let key = self
            .key
            .serialize(key)
            .map_err(serde_err("serializing the key"))?;
        let value = match value {
            Some(value) => self
                .value
                .serialize(value)
                .map_err(serde_err("serializing the value"))?,
            None => None,
        };
        self.driver.cluster.produce(ProducedRecord {
            topic: self.topic.clone(),
            partition,
            key,
            value,
            timestamp,
            headers: Headers::new(),
        })?;
        Ok(())
    }

    /// Writes a record (partitioned by key) and runs the topology until idle.
    pub fn pipe_input(&self, key: K, value: V, timestamp: Timestamp) -> Result<(), DriverError> {
        self.write(None, &key, Some(&value), timestamp)
    }

    /// Writes all `records` (partitioned by key), then runs the topology
    /// until idle: up to `max_poll_records` (500) of them are polled and
    /// processed together before one commit, as a batch is in a running
    /// application, so caches coalesce updates across them.
    pub fn pipe_batch(
        &self,
        records: impl IntoIterator<Item = (K, V, Timestamp)>,
    ) -> Result<(), DriverError> {
        for (key, value, timestamp) in records {
            self.produce(None, &key, Some(&value), timestamp)?;
        }
        self.driver.run_until_idle()
    }

    /// Writes a record to the given partition and runs the topology.
    pub fn pipe_input_to(
        &self,
        partition: i32,
        key: K,
        value: V,
        timestamp: Timestamp,
    ) -> Result<(), DriverError> {
        self.write(Some(partition), &key, Some(&value), timestamp)
    }

    /// Writes a record with a null value (a tombstone) and runs the topology.
    pub fn pipe_tombstone(&self, key: K, timestamp: Timestamp) -> Result<(), DriverError> {
        self.write(None, &key, None, timestamp)
    }

    /// Writes raw bytes (to test bad input) and runs the topology.
    pub fn pipe_raw(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: Timestamp,
    ) -> Result<(), DriverError> {
        self.driver.cluster.produce(ProducedRecord {
            topic: self.topic.clone(),
            partition: None,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp,
            headers: Headers::new(),
        })?;
        self.driver.run_until_idle()
    }
}

/// A record read from an output topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord<K, V> {
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
    /// Timestamp.
    pub timestamp: Timestamp,
    /// The partition it was written to.
    pub partition: i32,
    /// Headers.
    pub headers: Headers,
}

/// Reads what the topology wrote to a topic, in write order; each handle
/// remembers how far it has read.
pub struct TestOutputTopic<'d, K, V> {
    driver: &'d TopologyTestDriver,
    topic: String,
    key: Box<dyn Serde<K>>,
    value: Box<dyn Serde<V>>,
    read: Cell<usize>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: 'static, V: 'static> TestOutputTopic<'_, K, V> {
    /// The records written since the last read.
    pub fn read_records(&self) -> Result<Vec<TestRecord<K, V>>, DriverError> {
        let all = self.driver.cluster.records(&self.topic)?;
        let new = &all[self.read.get().min(all.len())..];
        let serde_err = |what| serde_error(&self.topic, what);
        let records = new
            .iter()
            .map(|stored| {
                let r = &stored.record;
                Ok(TestRecord {
                    key: self
                        .key
                        .deserialize(r.key.as_deref())
                        .map_err(serde_err("deserializing the key"))?,
                    value: self
                        .value
                        .deserialize(r.value.as_deref())
                        .map_err(serde_err("deserializing the value"))?,
                    timestamp: r.timestamp,
                    partition: r.tp.partition,
                    headers: r.headers.clone(),
                })
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        self.read.set(all.len());
        Ok(records)
    }

    /// Key-value pairs written since the last read.
    pub fn read_key_values(&self) -> Result<Vec<(K, V)>, DriverError> {
        Ok(self
            .read_records()?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }

    /// Values written since the last read.
    pub fn read_values(&self) -> Result<Vec<V>, DriverError> {
        Ok(self.read_records()?.into_iter().map(|r| r.value).collect())
    }

    /// The last value per key among the records written since the last read.
    pub fn read_latest_by_key(&self) -> Result<BTreeMap<K, V>, DriverError>
    where
        K: Ord,
    {
        Ok(self.read_key_values()?.into_iter().collect())
    }

    /// Whether nothing new was written.
    pub fn is_empty(&self) -> Result<bool, DriverError> {
        Ok(self.driver.cluster.records(&self.topic)?.len() <= self.read.get())
    }
}
