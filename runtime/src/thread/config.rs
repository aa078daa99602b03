//! A stream thread's configuration.

use super::*;

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
    /// Group mode: each stream thread's consumer joins the group as a
    /// static member named by its transactional id
    /// (`<application.id>-<instance_id>`; Kafka's `group.instance.id`, as
    /// Kafka Streams' threads get `<group.instance.id>-<thread>`), so an
    /// instance restarted within `session.timeout.ms` gets its tasks back
    /// without a rebalance and without waiting for its dead predecessor's
    /// session to time out. Needs an `instance_id` kept across restarts and
    /// distinct between instances. The other side: the tasks of an instance
    /// that stopped, cleanly or not, move to others only once its session
    /// times out. Default false.
    pub static_membership: bool,
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
            static_membership: false,
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
