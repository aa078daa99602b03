//! The Kafka adapter of the [`Cluster`] port, on librdkafka.
//!
//! Consumers here are assign-mode consumers in a consumer group (for
//! committed offsets): they read the partitions they are given, from the
//! group's committed offsets or the beginning. Producers track the offsets
//! the brokers acknowledged, per partition, from delivery reports (the
//! runtime checkpoints changelogs with them). Transactional producers run
//! Kafka's transaction protocol: `init_transactions` on creation fences
//! earlier producers with the same transactional id.
//!
//! Calls block up to the cluster's timeout (30 s by default).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_topology::{Headers, TopicSpec};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::log::transient;
use super::{AdminError, ClientLog, KafkaAdmin, KafkaConfig};
use crate::cluster::{
    Cluster, ClusterConsumer, ClusterError, ClusterProducer, ConsumedRecord, Isolation,
    ProducedRecord, Rebalance, TopicPartition,
};

/// A Kafka cluster reached through librdkafka.
pub struct KafkaCluster {
    config: KafkaConfig,
    admin: KafkaAdmin,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("bootstrap", &self.config.bootstrap())
            .finish_non_exhaustive()
    }
}

/// Whether `e` (a librdkafka error, or any other) says the cluster is
/// unavailable for now.
fn is_transient(e: &(dyn std::any::Any + 'static)) -> bool {
    let Some(e) = e.downcast_ref::<KafkaError>() else {
        return false;
    };
    matches!(e, KafkaError::Transaction(t) if t.is_retriable()) || code_of(e).is_some_and(transient)
}

/// A `ClusterError` for `e` while doing `what`: `Unavailable` when the
/// cluster could not be reached or answer in time, `Client` otherwise.
fn client_err(what: impl std::fmt::Display, e: impl std::fmt::Display + 'static) -> ClusterError {
    let message = format!("{what}: {e}");
    if is_transient(&e) {
        ClusterError::Unavailable(message)
    } else {
        ClusterError::Client(message)
    }
}

/// Whether `code` says the principal lacks an ACL.
fn unauthorized(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
    )
}

/// The librdkafka error code of `e`, transactional errors included.
fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    match e {
        KafkaError::Transaction(t) => Some(t.code()),
        other => other.rdkafka_error_code(),
    }
}

/// Names resources for a message: `topic "a"`, `topics "a", "b"`.
fn topics_resource<'a>(topics: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = topics.into_iter().map(|t| format!("{t:?}")).collect();
    match names.len() {
        1 => format!("topic {}", names[0]),
        _ => format!("topics {}", names.join(", ")),
    }
}

/// A [`ClusterError::NotAuthorized`] for a refused `what`, if `e` is an
/// authorization error: `operation` on `topics` for a topic, on the group
/// or transactional id (`Read` / `Write`, what a brook app needs of them)
/// for those, on the cluster for a cluster-wide refusal.
fn not_authorized(
    e: &KafkaError,
    what: &str,
    operation: &'static str,
    topics: &[&str],
    group: Option<&str>,
    transactional_id: Option<&str>,
) -> Option<ClusterError> {
    use RDKafkaErrorCode as C;
    let code = code_of(e).filter(|c| unauthorized(*c))?;
    let detail = format!("{what}: {e}");
    let (operation, resource) = match code {
        C::GroupAuthorizationFailed => ("Read", format!("group {:?}", group.unwrap_or("?"))),
        C::TransactionalIdAuthorizationFailed => (
            "Write",
            format!("transactional id {:?}", transactional_id.unwrap_or("?")),
        ),
        C::ClusterAuthorizationFailed => (operation, "the cluster".to_owned()),
        _ if topics.is_empty() => (operation, "a topic".to_owned()),
        _ => (operation, topics_resource(topics.iter().copied())),
    };
    Some(ClusterError::NotAuthorized {
        operation,
        resource,
        detail,
    })
}

fn admin_err(e: AdminError) -> ClusterError {
    match e {
        AdminError::InvalidSpec(spec) => ClusterError::InvalidSpec(spec),
        AdminError::Topic {
            operation,
            ref topic,
            code,
        } if unauthorized(code) => {
            let needed = match operation {
                "CreateTopics" => "Create",
                "DeleteTopics" => "Delete",
                "DescribeConfigs" => "DescribeConfigs",
                _ => "Describe",
            };
            ClusterError::NotAuthorized {
                operation: needed,
                resource: if code == RDKafkaErrorCode::ClusterAuthorizationFailed {
                    format!("topic {topic:?} (nor the cluster)")
                } else {
                    format!("topic {topic:?}")
                },
                detail: format!("{operation} refused by the broker: {code}"),
            }
        }
        AdminError::Topic {
            topic,
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
            ..
        } => ClusterError::UnknownTopic(topic),
        AdminError::Request {
            ref source,
            ref reported,
            ..
        } if is_transient(source) && reported.as_ref().is_none_or(|r| r.transient) => {
            ClusterError::Unavailable(crate::cluster::error_chain(&e))
        }
        AdminError::Topic { code, .. } if transient(code) => {
            ClusterError::Unavailable(crate::cluster::error_chain(&e))
        }
        other => ClusterError::Client(crate::cluster::error_chain(&other)),
    }
}

fn block_on<F: Future>(future: F) -> Result<F::Output, ClusterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| client_err("starting an admin runtime", e))?;
    Ok(runtime.block_on(future))
}

impl KafkaCluster {
    /// The cluster of `config`.
    pub fn new(config: KafkaConfig) -> Result<Self, ClusterError> {
        let timeout = Duration::from_secs(30);
        let admin = KafkaAdmin::new(&config)
            .map_err(admin_err)?
            .with_timeout(timeout);
        Ok(KafkaCluster {
            config,
            admin,
            timeout,
        })
    }

    /// How long calls wait for the brokers (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.admin = self.admin.with_timeout(timeout);
        self
    }

    fn new_producer(&self, transactional_id: Option<&str>) -> Result<KafkaProducer, ClusterError> {
        let mut config = self.config.producer();
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
            // Kafka Streams' default under exactly-once: a transaction left
            // open by a crashed instance that no successor with its id
            // fences is aborted by the broker within 10 s (librdkafka's
            // default, 60 s, would hold read_committed readers of its
            // partitions back that long).
            if !self.config.is_set("transaction.timeout.ms") {
                config.set("transaction.timeout.ms", "10000");
            }
            // librdkafka refuses a transactional producer whose records may
            // wait longer than its transactions may stay open: a longer
            // `message.timeout.ms` (set for plain producers) is capped.
            if let (Some(message), Some(txn)) = (
                millis(&config, "message.timeout.ms"),
                millis(&config, "transaction.timeout.ms"),
            ) && message > txn
            {
                config.set("message.timeout.ms", txn.to_string());
            }
        }
        let tracker = DeliveryTracker::default();
        let producer: BaseProducer<DeliveryTracker> =
            config
                .create_with_context(tracker.clone())
                .map_err(|e| client_err("creating a producer", e))?;
        if let Some(id) = transactional_id {
            producer
                .init_transactions(self.timeout)
                .map_err(|e| txn_err(id, "init_transactions", e))?;
        }
        let txn_timeout = millis(&config, "transaction.timeout.ms")
            .map_or(Duration::from_secs(60), Duration::from_millis);
        Ok(KafkaProducer {
            producer: Arc::new(producer),
            tracker,
            transactional_id: transactional_id.map(str::to_owned),
            txn_timeout,
            txn_began: None,
            group_metadata: BTreeMap::new(),
            config: self.config.clone(),
            timeout: self.timeout,
            stuck: None,
        })
    }
}

impl Cluster for KafkaCluster {
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError> {
        if specs.is_empty() {
            return Ok(()); // the admin API refuses an empty request
        }
        block_on(self.admin.create_topics(specs))?.map_err(admin_err)?;
        // A created topic reaches every broker's metadata a little later
        // (on a cluster, not at once): wait until each is there, as Kafka
        // Streams' InternalTopicManager does, so that the caller's next
        // metadata request does not find it missing.
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(30));
        for spec in specs {
            loop {
                match self.admin.partition_count(&spec.name).map_err(admin_err) {
                    Ok(_) => break,
                    Err(ClusterError::UnknownTopic(_)) | Err(ClusterError::Unavailable(_))
                        if Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError> {
        self.admin.partition_count(topic).map_err(admin_err)
    }

    fn list_topics(&self) -> Result<Vec<String>, ClusterError> {
        let consumer: BaseConsumer<ClientLog> = self
            .config
            .client()
            .create_with_context(ClientLog::default())
            .map_err(|e| client_err("creating a metadata client", e))?;
        let metadata = consumer
            .fetch_metadata(None, self.timeout)
            .map_err(|e| client_err("fetching metadata", e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .collect())
    }

    fn delete_topics(&self, topics: &[String]) -> Result<(), ClusterError> {
        if topics.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        block_on(self.admin.delete_topics(&names))?.map_err(admin_err)
    }

    fn consumer(
        &self,
        group: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        Ok(Box::new(self.new_consumer(group, isolation, &[])?))
    }

    fn static_consumer(
        &self,
        group: &str,
        instance: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        Ok(Box::new(self.new_consumer(
            group,
            isolation,
            &[("group.instance.id", instance)],
        )?))
    }

    fn restore_consumer(&self, group: &str) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        // Fetches return what is there after at most 10 ms instead of
        // Kafka's 500 ms long poll (see the trait).
        Ok(Box::new(self.new_consumer(
            group,
            Isolation::ReadCommitted,
            &[("fetch.wait.max.ms", "10")],
        )?))
    }

    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        Ok(Box::new(self.new_producer(None)?))
    }

    fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        Ok(Box::new(self.new_producer(Some(transactional_id))?))
    }
}

impl KafkaCluster {
    /// A consumer in `group` with `extra` librdkafka properties over the
    /// configured ones.
    fn new_consumer(
        &self,
        group: &str,
        isolation: Isolation,
        extra: &[(&str, &str)],
    ) -> Result<KafkaConsumer, ClusterError> {
        let level = match isolation {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        };
        let mut config = self.config.consumer(group);
        config
            .set("isolation.level", level)
            .set("enable.partition.eof", "true");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        let context = GroupContext {
            start: StartOffsets::new(group, self.timeout, &config),
            ..GroupContext::default()
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context.clone())
            .map_err(|e| client_err(format!("creating a consumer in group {group:?}"), e))?;
        Ok(KafkaConsumer {
            consumer,
            context,
            subscribed: false,
            subscription: Vec::new(),
            owned: BTreeSet::new(),
            generation: 0,
            group: group.to_owned(),
            timeout: self.timeout,
            assigned: BTreeMap::new(),
            assign_pending: false,
            next: BTreeMap::new(),
            ends: BTreeMap::new(),
            transient_logged: None,
            topic_names: Vec::new(),
        })
    }
}

/// Follows the assignment librdkafka's group protocol gives a subscribed
/// consumer (the rebalance callback runs inside `poll`).
///
/// A revocation is held, as Kafka Streams does in `onPartitionsRevoked`:
/// the callback records it without giving the partitions up, the runtime
/// learns of it from `take_rebalance` and commits the revoked tasks' work
/// while this member still owns them (so the commit is valid for the
/// current generation), and the next `poll` gives them up (librdkafka
/// waits for that before rejoining the group).
#[derive(Clone, Default)]
struct GroupContext {
    state: Arc<Mutex<GroupState>>,
    log: ClientLog,
    /// How partitions the group gave start (see [`start_offsets`]).
    start: StartOffsets,
}

/// What [`start_offsets`] needs: the group, how long to keep asking, and
/// where a partition without a committed offset starts.
#[derive(Clone, Debug, Default)]
struct StartOffsets {
    group: String,
    timeout: Duration,
    /// `auto.offset.reset` as an offset (`None`: a policy librdkafka
    /// applies itself, such as `error`).
    reset: Option<Offset>,
}

impl StartOffsets {
    fn new(group: &str, timeout: Duration, config: &rdkafka::ClientConfig) -> Self {
        let reset = match config.get("auto.offset.reset") {
            Some("earliest" | "smallest" | "beginning") => Some(Offset::Beginning),
            Some("latest" | "largest" | "end") | None => Some(Offset::End),
            Some(_) => None,
        };
        StartOffsets {
            group: group.to_owned(),
            timeout,
            reset,
        }
    }
}

/// How long [`start_offsets`] keeps asking for committed offsets.
const START_OFFSETS_WAIT: Duration = Duration::from_secs(5);

/// `wanted` with every partition that should start at the group's
/// committed offset (`Offset::Invalid` or `Offset::Stored`) given that
/// offset explicitly, or the reset offset where nothing is committed.
///
/// librdkafka would fetch those offsets itself after `assign`, but a
/// request-level `NOT_COORDINATOR` answer to that fetch (a coordinator
/// still loading, e.g. the group's first use of a fresh broker) leaves the
/// partitions waiting forever: it is neither retried nor started
/// (librdkafka issue 5586, open in 2.12; seen here as a thread that
/// processed nothing for 60 s after one "Not coordinator" poll error).
/// This asks with retries for up to 5 s (or the cluster timeout if
/// shorter); if that fails, the partitions are left to librdkafka as
/// before, with a warning.
fn start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    wanted: &TopicPartitionList,
    start: &StartOffsets,
) -> TopicPartitionList {
    let stored = |offset: Offset| matches!(offset, Offset::Invalid | Offset::Stored);
    let mut query = TopicPartitionList::new();
    for e in wanted.elements() {
        if stored(e.offset()) {
            query.add_partition(e.topic(), e.partition());
        }
    }
    if query.count() == 0 {
        return wanted.clone();
    }
    // Briefly: this runs inside poll (the group's assign callback), where a
    // long wait would hold up shutdown and the next rebalance (seen: a
    // 30 s wait while the broker was down kept an instance from stopping
    // within 60 s of SIGTERM). A coordinator still loading answers at once
    // and is ready within a few retries; past the deadline librdkafka's own
    // fetch takes over, as before.
    let deadline = Instant::now() + start.timeout.min(START_OFFSETS_WAIT);
    let mut attempts = 0;
    let committed = loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let failure =
            match consumer.committed_offsets(query.clone(), left.min(Duration::from_secs(1))) {
                Ok(list) => match list.elements().iter().find_map(|e| e.error().err()) {
                    None => break Some(list),
                    Some(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
        if Instant::now() >= deadline {
            tracing::warn!(group = %start.group, attempts, error = %failure, "could not fetch the committed offsets of assigned partitions; librdkafka fetches them");
            break None;
        }
        tracing::debug!(group = %start.group, error = %failure, "fetching committed offsets; retrying");
        std::thread::sleep(Duration::from_millis(100).min(left));
    };
    let Some(committed) = committed else {
        return wanted.clone();
    };
    let mut out = TopicPartitionList::new();
    for e in wanted.elements() {
        let offset = if stored(e.offset()) {
            match committed
                .find_partition(e.topic(), e.partition())
                .map(|c| c.offset())
            {
                Some(Offset::Offset(n)) if n >= 0 => Offset::Offset(n),
                // Nothing committed: the reset policy (or librdkafka's).
                _ => start.reset.unwrap_or(Offset::Invalid),
            }
        } else {
            e.offset()
        };
        // Only fails for an offset librdkafka cannot represent.
        let _ = out.add_partition_offset(e.topic(), e.partition(), offset);
    }
    out
}

#[derive(Default)]
struct GroupState {
    /// The partitions the runtime should own now.
    current: BTreeSet<TopicPartition>,
    /// A revocation waits for the runtime.
    revoke_pending: bool,
    /// The runtime was told of it (committed by its next poll).
    revoke_reported: bool,
    /// Closing: give partitions up at once.
    closing: bool,
}

impl GroupContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn partitions_of(list: &TopicPartitionList) -> BTreeSet<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

super::log::forward_client_log!(GroupContext);

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr;
        let mut state = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let start = start_offsets(consumer, partitions, &self.start);
                if let Err(e) = consumer.assign(&start) {
                    tracing::error!(error = %e, "assigning the partitions the group gave");
                }
                state.current = partitions_of(partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if !state.closing => {
                // Eager protocol: everything is revoked; kept until the
                // runtime has committed (see the type's docs).
                state.current.clear();
                state.revoke_pending = true;
                state.revoke_reported = false;
            }
            _ => {
                let _ = consumer.unassign();
                state.current.clear();
                state.revoke_pending = false;
            }
        }
    }
}

struct KafkaConsumer {
    consumer: BaseConsumer<GroupContext>,
    context: GroupContext,
    /// Subscribed (group mode) rather than assigned.
    subscribed: bool,
    /// The topics subscribed to (group mode).
    subscription: Vec<String>,
    /// The partitions the runtime was last told it owns (group mode).
    owned: BTreeSet<TopicPartition>,
    generation: u64,
    group: String,
    timeout: Duration,
    /// Assigned partitions and where reading (re)starts.
    assigned: BTreeMap<TopicPartition, Offset>,
    /// `assigned` has partitions starting at committed offsets and is not
    /// yet given to librdkafka: the next poll does (fetching those offsets
    /// first, see [`start_offsets`]), unless a seek comes before. Readers
    /// that assign and then seek (restore, global stores, tools) so never
    /// fetch committed offsets they would not use (doing so slowed each
    /// store's restore from ~60 ms to ~520 ms in brook-bench's state runs).
    assign_pending: bool,
    /// Offset after the last record returned, per partition.
    next: BTreeMap<TopicPartition, i64>,
    /// The names of the topics read, shared by their records (a record's
    /// partition then costs no allocation).
    topic_names: Vec<Arc<str>>,
    /// End offsets learnt from `end_offsets`, for positions at partition EOF
    /// (read-committed readers skip transaction markers silently).
    ends: BTreeMap<TopicPartition, i64>,
    /// When a transient error was last logged (they come in bursts while
    /// a broker is away).
    transient_logged: Option<Instant>,
}

impl KafkaConsumer {
    /// Up to `max` records: waits up to `wait` for the first, then takes
    /// what is there.
    fn poll_waiting(
        &mut self,
        max: usize,
        wait: Duration,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), ClusterError> {
        self.finish_revocation();
        if self.assign_pending {
            self.apply_assignment()?;
        }
        let max = out.len().saturating_add(max);
        let mut wait = wait;

        while out.len() < max {
            let Some(result) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            match result {
                Ok(message) => {
                    let record = Self::record(&mut self.topic_names, &message);
                    match self.next.get_mut(&record.tp) {
                        Some(next) => *next = record.offset + 1,
                        None => {
                            self.next.insert(record.tp.clone(), record.offset + 1);
                        }
                    }
                    out.push(record);
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    // At the end: past any trailing transaction markers.
                    for (tp, end) in &self.ends {
                        if tp.partition == partition && self.assigned.contains_key(tp) {
                            let next = self.next.entry(tp.clone()).or_insert(0);
                            *next = (*next).max(*end);
                        }
                    }
                }
                // librdkafka reports losing a broker to the consumer and
                // reconnects by itself: not a reason to stop.
                Err(e) if is_transient(&e) => {
                    self.report_transient(&e);
                    break;
                }
                Err(e) => {
                    let what = format!("polling in group {:?}", self.group);
                    return Err(self
                        .refused(&e, &what)
                        .unwrap_or_else(|| client_err(what, e)));
                }
            }
        }
        Ok(())
    }

    /// A [`ClusterError::NotAuthorized`] if `e` is an authorization error,
    /// naming the topics read that this principal may not even describe
    /// (librdkafka's poll error does not say which), else all of them.
    fn refused(&self, e: &KafkaError, what: &str) -> Option<ClusterError> {
        let mut topics: Vec<&str> = if self.subscribed {
            self.subscription.iter().map(String::as_str).collect()
        } else {
            self.assigned.keys().map(|tp| &*tp.topic).collect()
        };
        topics.dedup();
        if code_of(e) == Some(RDKafkaErrorCode::TopicAuthorizationFailed) && topics.len() > 1 {
            let hidden: Vec<&str> = topics
                .iter()
                .copied()
                .filter(|topic| {
                    self.consumer
                        .fetch_metadata(Some(topic), self.timeout)
                        .ok()
                        .and_then(|m| {
                            m.topics()
                                .iter()
                                .find(|t| t.name() == *topic)
                                .and_then(|t| t.error())
                        })
                        .is_some_and(|error| {
                            RDKafkaErrorCode::from(error)
                                == RDKafkaErrorCode::TopicAuthorizationFailed
                        })
                })
                .collect();
            if !hidden.is_empty() {
                topics = hidden;
            }
        }
        not_authorized(e, what, "Read", &topics, Some(&self.group), None)
    }

    /// Logs a transient poll error, at most every 10 s.
    fn report_transient(&mut self, e: &KafkaError) {
        if self
            .transient_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            self.transient_logged = Some(Instant::now());
            tracing::warn!(group = %self.group, error = %e, "the cluster is unavailable; the consumer reconnects");
        }
    }

    /// Low and high watermarks of `tp`. A client that has not seen the
    /// topic yet may answer "unknown partition": it then loads the topic's
    /// metadata and asks again. A topic just created on a cluster of
    /// several brokers may not have its leader known everywhere yet ("not
    /// leader for partition", "leader not available"): asked again, with
    /// fresh metadata, until the cluster timeout.
    fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), ClusterError> {
        let deadline = Instant::now() + self.timeout;
        let mut refreshed = false;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .consumer
                .fetch_watermarks(&tp.topic, tp.partition, left)
            {
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition))
                    if !refreshed =>
                {
                    refreshed = true;
                    self.consumer
                        .fetch_metadata(Some(&tp.topic), left)
                        .map_err(|e| client_err(format!("metadata of {}", tp.topic), e))?;
                }
                Err(KafkaError::MetadataFetch(code))
                    if transient(code) && Instant::now() < deadline =>
                {
                    tracing::debug!(%tp, error = %code, "watermarks: refreshing metadata and asking again");
                    let _ = self.consumer.fetch_metadata(Some(&tp.topic), left);
                    std::thread::sleep(Duration::from_millis(100).min(left));
                }
                other => break other,
            }
        };
        result.map_err(|e| match e {
            KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownPartition,
            ) => ClusterError::UnknownPartition(tp.clone()),
            other => client_err(format!("watermarks of {tp}"), other),
        })
    }

    fn apply_assignment(&mut self) -> Result<(), ClusterError> {
        self.assign_pending = false;
        let mut list = TopicPartitionList::new();
        for (tp, offset) in &self.assigned {
            list.add_partition_offset(&tp.topic, tp.partition, *offset)
                .map_err(|e| client_err(format!("assigning {tp}"), e))?;
        }
        let list = start_offsets(&self.consumer, &list, &self.context.start);
        self.consumer
            .assign(&list)
            .map_err(|e| client_err(format!("assigning partitions in group {:?}", self.group), e))
    }

    /// `message` as a record; `topic_names` shares topic names among
    /// records.
    fn record(
        topic_names: &mut Vec<Arc<str>>,
        message: &rdkafka::message::BorrowedMessage<'_>,
    ) -> ConsumedRecord {
        let topic = shared_name(topic_names, message.topic());
        let mut headers = Headers::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.add(header.key, header.value.map(<[u8]>::to_vec));
            }
        }
        ConsumedRecord {
            tp: TopicPartition::new(topic, message.partition()),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis().unwrap_or(0),
            headers,
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // librdkafka's close runs the revocation callback, and waits for a
        // held one to be given up: neither may wait for the runtime now.
        self.context.lock().closing = true;
        self.finish_revocation_now();
    }
}

impl KafkaConsumer {
    /// Gives up a held revocation whatever the runtime knows (closing).
    fn finish_revocation_now(&mut self) {
        self.context.lock().revoke_reported = true;
        self.finish_revocation();
    }

    /// Gives up revoked partitions once the runtime has been told.
    fn finish_revocation(&mut self) {
        let mut state = self.context.lock();
        if state.revoke_pending && state.revoke_reported {
            if let Err(e) = self.consumer.unassign() {
                tracing::warn!(error = %e, "giving up revoked partitions");
            }
            state.revoke_pending = false;
            state.revoke_reported = false;
        }
    }
}

impl ClusterConsumer for KafkaConsumer {
    fn subscribe(&mut self, topics: &[String]) -> Result<(), ClusterError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names).map_err(|e| {
            client_err(
                format!("subscribing group {:?} to {topics:?}", self.group),
                e,
            )
        })?;
        self.subscribed = true;
        self.subscription = topics.to_vec();
        Ok(())
    }

    fn group_metadata(&self) -> Option<crate::cluster::GroupMetadata> {
        if !self.subscribed {
            return None;
        }
        self.consumer
            .group_metadata()
            .map(crate::cluster::GroupMetadata::new)
    }

    fn take_rebalance(&mut self) -> Result<Option<Rebalance>, ClusterError> {
        if !self.subscribed {
            return Ok(None);
        }
        let current = {
            let mut state = self.context.lock();
            if state.revoke_pending {
                state.revoke_reported = true;
            }
            state.current.clone()
        };
        if current == self.owned {
            return Ok(None);
        }
        let revoked: Vec<TopicPartition> = self.owned.difference(&current).cloned().collect();
        let assigned: Vec<TopicPartition> = current.difference(&self.owned).cloned().collect();
        for tp in &revoked {
            self.next.remove(tp);
        }
        self.owned = current;
        self.generation += 1;
        Ok(Some(Rebalance {
            generation: self.generation,
            revoked,
            assigned,
        }))
    }

    fn close(&mut self) -> Result<(), ClusterError> {
        self.context.lock().closing = true;
        self.finish_revocation_now();
        if self.subscribed {
            self.consumer.unsubscribe();
            self.subscribed = false;
            self.owned.clear();
        }
        Ok(())
    }

    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClusterError> {
        self.assigned = partitions
            .iter()
            .map(|tp| (tp.clone(), Offset::Stored))
            .collect();
        self.next.clear();
        if self.assigned.is_empty() {
            // Given up at once: an idle consumer answers offset queries
            // without waiting behind its own fetches.
            self.apply_assignment()
        } else {
            self.assign_pending = true;
            Ok(())
        }
    }

    fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClusterError> {
        let mut out = Vec::new();
        self.poll_into(max, &mut out)?;
        Ok(out)
    }

    fn poll_into(&mut self, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<(), ClusterError> {
        // Wait a little for the first record, then take what is there.
        self.poll_waiting(max, Duration::from_millis(100), out)
    }

    fn poll_now(&mut self, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<(), ClusterError> {
        self.poll_waiting(max, Duration::ZERO, out)
    }

    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClusterError> {
        if self.subscribed {
            return Err(ClusterError::Client(format!(
                "seek on {tp}: a subscribed consumer reads from committed offsets"
            )));
        }
        let entry = self
            .assigned
            .get_mut(tp)
            .ok_or_else(|| ClusterError::Client(format!("seek on {tp}, which is not assigned")))?;
        *entry = Offset::Offset(offset);
        self.next.insert(tp.clone(), offset);
        if self.assign_pending {
            // Not read from yet: the next poll assigns it all at once.
            return Ok(());
        }
        // Re-assigning restarts every partition where this consumer is now.
        for (other, start) in self.assigned.iter_mut() {
            if other != tp
                && let Some(next) = self.next.get(other)
            {
                *start = Offset::Offset(*next);
            }
        }
        self.apply_assignment()
    }

    fn position(&self, tp: &TopicPartition) -> Result<i64, ClusterError> {
        if let Some(next) = self.next.get(tp) {
            return Ok(*next);
        }
        match self.assigned.get(tp) {
            Some(Offset::Offset(o)) => Ok(*o),
            Some(_) => {
                let committed = self
                    .consumer
                    .committed_offsets(
                        {
                            let mut list = TopicPartitionList::new();
                            list.add_partition(&tp.topic, tp.partition);
                            list
                        },
                        self.timeout,
                    )
                    .map_err(|e| client_err(format!("committed offset of {tp}"), e))?;
                let offset = committed
                    .find_partition(&tp.topic, tp.partition)
                    .map(|e| e.offset());
                match offset {
                    Some(Offset::Offset(o)) => Ok(o),
                    _ => Ok(self.watermarks(tp)?.0),
                }
            }
            None => Err(ClusterError::Client(format!(
                "position of {tp}, which is not assigned"
            ))),
        }
    }

    fn offsets_for_times(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError> {
        let mut out = BTreeMap::new();
        let mut list = TopicPartitionList::new();
        for tp in partitions {
            let (low, high) = self.watermarks(tp)?;
            if timestamp == i64::MIN {
                out.insert(tp.clone(), low);
            } else {
                out.insert(tp.clone(), high);
                list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(timestamp))
                    .map_err(|e| client_err(format!("offsets of {tp}"), e))?;
            }
        }
        if list.count() > 0 {
            let found = self
                .consumer
                .offsets_for_times(list, self.timeout)
                .map_err(|e| client_err("looking up offsets by time", e))?;
            for element in found.elements() {
                if let Offset::Offset(o) = element.offset() {
                    out.insert(TopicPartition::new(element.topic(), element.partition()), o);
                }
            }
        }
        Ok(out)
    }

    fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError> {
        let mut out = BTreeMap::new();
        for tp in partitions {
            let (_, high) = self.watermarks(tp)?;
            self.ends.insert(tp.clone(), high);
            out.insert(tp.clone(), high);
        }
        Ok(out)
    }

    fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClusterError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = offsets_list(offsets)?;
        self.consumer.commit(&list, CommitMode::Sync).map_err(|e| {
            if rebalanced(e.rdkafka_error_code()) {
                ClusterError::Rebalanced {
                    group: self.group.clone(),
                    reason: format!("committing offsets: {e}"),
                }
            } else {
                let what = format!("committing offsets of group {:?}", self.group);
                self.refused(&e, &what)
                    .unwrap_or_else(|| client_err(what, e))
            }
        })
    }
}

fn offsets_list(
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<TopicPartitionList, ClusterError> {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in offsets {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|e| client_err(format!("offset of {tp}"), e))?;
    }
    Ok(list)
}

/// `topic` as one of `names` (added if new): the records of a client share
/// a handful of topic names, so naming a record's partition allocates
/// nothing.
fn shared_name(names: &mut Vec<Arc<str>>, topic: &str) -> Arc<str> {
    if let Some(name) = names.iter().find(|name| &***name == topic) {
        return Arc::clone(name);
    }
    let name: Arc<str> = topic.into();
    names.push(Arc::clone(&name));
    name
}

/// Collects delivery reports: acknowledged offsets and the first failure.
#[derive(Clone, Default)]
struct DeliveryTracker {
    state: Arc<Mutex<Deliveries>>,
    log: ClientLog,
}

#[derive(Default)]
struct Deliveries {
    written: BTreeMap<TopicPartition, i64>,
    failure: Option<ClusterError>,
    /// Topic names seen, shared by `written`'s keys (a report then
    /// allocates nothing).
    topic_names: Vec<Arc<str>>,
}

super::log::forward_client_log!(DeliveryTracker);

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(message) => {
                let end = message.offset() + 1;
                let topic = shared_name(&mut state.topic_names, message.topic());
                let tp = TopicPartition::new(topic, message.partition());
                match state.written.get_mut(&tp) {
                    Some(next) => *next = (*next).max(end),
                    None => {
                        state.written.insert(tp, end);
                    }
                }
            }
            Err((error, message)) => {
                let refused = not_authorized(
                    error,
                    &format!("delivery to {}[{}]", message.topic(), message.partition()),
                    "Write",
                    &[message.topic()],
                    None,
                    None,
                );
                // A refused topic says more than any other failure.
                let known = matches!(state.failure, Some(ClusterError::NotAuthorized { .. }));
                if let Some(refused) = refused.filter(|_| !known) {
                    state.failure = Some(refused);
                } else if state.failure.is_none() {
                    state.failure = Some(client_err(
                        format!(
                            "delivery to {}[{}] failed",
                            message.topic(),
                            message.partition()
                        ),
                        error.clone(),
                    ));
                }
            }
        }
    }
}

struct KafkaProducer {
    /// Shared with a helper thread while a transactional call that may
    /// hang runs there (see [`call_bounded`]).
    producer: Arc<BaseProducer<DeliveryTracker>>,
    tracker: DeliveryTracker,
    transactional_id: Option<String>,
    /// Its `transaction.timeout.ms`.
    txn_timeout: Duration,
    /// When the open transaction began.
    txn_began: Option<Instant>,
    /// Consumer group metadata for `send_offsets_to_transaction`, by group.
    group_metadata: BTreeMap<String, BaseConsumer>,
    config: KafkaConfig,
    timeout: Duration,
    /// Why this producer was given up, if a call of its got stuck: every
    /// later transactional call fails with it at once.
    stuck: Option<String>,
}

/// How much longer than its own timeout a transactional call may take
/// before its producer is given up as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(10);

/// Runs `call` on a helper thread and waits for it until `deadline`:
/// `None` if it has not returned by then (the thread is left to finish on
/// its own, holding what `call` owns). For librdkafka calls that can block
/// past their own timeout.
fn call_bounded<T: Send + 'static>(
    name: &str,
    deadline: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, ClusterError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("brook-{name}"))
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| client_err(format!("starting a thread for {name}"), e))?;
    match rx.recv_timeout(deadline) {
        Ok(value) => Ok(Some(value)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ClusterError::Client(format!(
            "{name} ended without an answer (its thread panicked)"
        ))),
    }
}

/// A duration property of `config` in milliseconds, if set.
fn millis(config: &rdkafka::ClientConfig, key: &str) -> Option<u64> {
    config.get(key).and_then(|v| v.parse().ok())
}

/// Codes meaning this producer's epoch is stale: a newer one holds its
/// transactional id (or the coordinator bumped it).
fn stale_epoch(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

/// Codes meaning the group moved on without this member.
fn rebalanced(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
        )
    )
}

fn txn_err(id: &str, call: &str, e: KafkaError) -> ClusterError {
    txn_err_in(id, call, e, None)
}

/// A transactional call's error; `group` is the group whose offsets it
/// carried, if any.
fn txn_err_in(id: &str, call: &str, e: KafkaError, group: Option<&str>) -> ClusterError {
    let code = code_of(&e);
    let what = format!("{call} for transactional id {id:?}");
    if let Some(refused) = not_authorized(&e, &what, "Write", &[], group, Some(id)) {
        return refused;
    }
    if rebalanced(code) {
        return ClusterError::Rebalanced {
            group: String::new(),
            reason: format!("{call} for transactional id {id:?}: {e}"),
        };
    }
    match code {
        _ if stale_epoch(code) => ClusterError::Fenced {
            transactional_id: id.to_owned(),
            epoch: 0,
            current: 0,
        },
        _ if matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort() && !t.is_fatal()) => {
            ClusterError::TransactionAborted {
                transactional_id: id.to_owned(),
                reason: format!("{call}: {e}"),
            }
        }
        _ => client_err(format!("{call} for transactional id {id:?}"), e),
    }
}

impl KafkaProducer {
    /// `e` of a transactional call, unless a delivery was refused for want
    /// of an ACL: that names the topic, which the transaction's error
    /// (`TopicAuthorizationFailed` from AddPartitionsToTxn) does not.
    fn txn_failed(&self, id: &str, call: &str, e: KafkaError, group: Option<&str>) -> ClusterError {
        if code_of(&e).is_some_and(unauthorized)
            && let Err(refused @ ClusterError::NotAuthorized { .. }) = self.take_failure()
        {
            return refused;
        }
        // A fatal error whose cause was the fence (librdkafka reports the
        // call's own failure, `Fatal`, or the purge that followed).
        if matches!(&e, KafkaError::Transaction(t) if t.is_fatal())
            && let Some(fenced) = self.fenced()
        {
            return fenced;
        }
        txn_err_in(id, call, e, group)
    }

    fn take_failure(&self) -> Result<(), ClusterError> {
        let mut state = self.tracker.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.failure.take() {
            // A fenced producer purges its queue: the purged deliveries are
            // a consequence, the fence is the cause.
            Some(failure) => Err(self.fenced().unwrap_or(failure)),
            None => Ok(()),
        }
    }

    /// The error of a producer librdkafka fenced (fatally: its epoch is
    /// stale), if it was. Two causes look alike: another producer took the
    /// id over (`Fenced`: this one must stop), or the coordinator aborted
    /// this producer's own transaction for outliving
    /// `transaction.timeout.ms` and bumped the epoch (the broker was away
    /// longer than that, say). The second only happens to a transaction
    /// open that long, and then it is `TransactionAborted`: a new producer
    /// takes the id up again and the tasks resume from the committed state
    /// (as KIP-588 lets a Java producer recover from a timed-out
    /// transaction).
    fn fenced(&self) -> Option<ClusterError> {
        let id = self.transactional_id.as_deref()?;
        let (code, reason) = self.producer.client().fatal_error()?;
        if !stale_epoch(Some(code)) {
            return None;
        }
        let open = self.txn_began.map(|began| began.elapsed());
        Some(match open {
            Some(open) if open >= self.txn_timeout => ClusterError::TransactionAborted {
                transactional_id: id.to_owned(),
                reason: format!(
                    "fenced after the transaction was open {:.1} s, past transaction.timeout.ms \
                     ({} ms): the coordinator aborted it ({reason})",
                    open.as_secs_f64(),
                    self.txn_timeout.as_millis()
                ),
            },
            _ => ClusterError::Fenced {
                transactional_id: id.to_owned(),
                epoch: 0,
                current: 0,
            },
        })
    }

    /// Its transactional id, unless it is not transactional or was given
    /// up as stuck.
    fn txn_id(&self) -> Result<&str, ClusterError> {
        let id = self
            .transactional_id
            .as_deref()
            .ok_or_else(|| ClusterError::TransactionState("not a transactional producer".into()))?;
        match &self.stuck {
            Some(reason) => Err(ClusterError::TransactionAborted {
                transactional_id: id.to_owned(),
                reason: reason.clone(),
            }),
            None => Ok(id),
        }
    }
}

impl ClusterProducer for KafkaProducer {
    fn send(&mut self, record: ProducedRecord) -> Result<(), ClusterError> {
        let mut message = BaseRecord::<[u8], [u8]>::to(&record.topic).timestamp(record.timestamp);
        // librdkafka allocates a header list even for none: only records
        // with headers get one.
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new();
            for (key, value) in record.headers.iter() {
                headers = headers.insert(Header { key, value });
            }
            message = message.headers(headers);
        }
        if let Some(partition) = record.partition {
            message = message.partition(partition);
        }
        if let Some(key) = &record.key {
            message = message.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            message = message.payload(value.as_slice());
        }
        let started = Instant::now();
        loop {
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < self.timeout =>
                {
                    message = back;
                    // Delivery reports free room; a sleep, not a spinning
                    // `poll(1 ms)` (see `flush`).
                    self.producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_micros(200));
                }
                // A transaction in an abortable error state (records timed
                // out, say) refuses further sends: the failure that put it
                // there says why.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::State), _))
                    if self.transactional_id.is_some() =>
                {
                    let reason = match self.take_failure() {
                        Err(
                            refused @ (ClusterError::NotAuthorized { .. }
                            | ClusterError::Fenced { .. }
                            | ClusterError::TransactionAborted { .. }),
                        ) => return Err(refused),
                        Err(failure) => failure.to_string(),
                        Ok(()) => "the producer refuses records (erroneous state)".to_owned(),
                    };
                    return Err(ClusterError::TransactionAborted {
                        transactional_id: self.transactional_id.clone().unwrap_or_default(),
                        reason: format!("producing to {}: {reason}", record.topic),
                    });
                }
                Err((e, _)) => {
                    if let Some(fenced) = self.fenced() {
                        return Err(fenced);
                    }
                    return Err(client_err(format!("producing to {}", record.topic), e));
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), ClusterError> {
        super::flush_without_waiting(&*self.producer, self.timeout).map_err(|e| {
            self.fenced()
                .unwrap_or_else(|| client_err("flushing the producer", e))
        })?;
        self.take_failure()
    }

    fn written_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.tracker
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .written
            .clone()
    }

    fn begin_transaction(&mut self) -> Result<(), ClusterError> {
        let id = self.txn_id()?.to_owned();
        self.producer
            .begin_transaction()
            .map_err(|e| self.txn_failed(&id, "begin_transaction", e, None))?;
        self.txn_began = Some(Instant::now());
        Ok(())
    }

    fn send_offsets_to_transaction(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
        member: Option<&crate::cluster::GroupMetadata>,
    ) -> Result<(), ClusterError> {
        let id = self.txn_id()?.to_owned();
        let list = offsets_list(offsets)?;
        // A subscribed consumer's membership: the broker refuses the offsets
        // if that member has lost the partitions (zombie fencing). Else
        // that of a consumer made for the group.
        let member = match member.filter(|m| {
            m.downcast_ref::<rdkafka::consumer::ConsumerGroupMetadata>()
                .is_some()
        }) {
            Some(m) => m.clone(),
            None => {
                if !self.group_metadata.contains_key(group) {
                    let consumer: BaseConsumer =
                        self.config.consumer(group).create().map_err(|e| {
                            client_err(format!("creating a consumer in group {group:?}"), e)
                        })?;
                    self.group_metadata.insert(group.to_owned(), consumer);
                }
                crate::cluster::GroupMetadata::new(
                    self.group_metadata
                        .get(group)
                        .and_then(|c| c.group_metadata())
                        .ok_or_else(|| {
                            ClusterError::Client(format!("no metadata for group {group:?}"))
                        })?,
                )
            }
        };
        // librdkafka 2.12 can block in this call forever, whatever its
        // timeout, once the group coordinator's broker is gone (librdkafka
        // issues 5456 and 5511; seen here with gdb when a node of three was
        // killed). So it runs on a helper thread: stuck past its timeout,
        // the producer is given up (the transaction is still open, nothing
        // is committed) and the stream thread starts over with a new one,
        // whose init_transactions fences this one and aborts what it left.
        let producer = Arc::clone(&self.producer);
        let timeout = self.timeout;
        let answer = call_bounded("send-offsets", timeout + STUCK_GRACE, move || {
            member
                .downcast_ref::<rdkafka::consumer::ConsumerGroupMetadata>()
                .map(|metadata| producer.send_offsets_to_transaction(&list, metadata, timeout))
        })?;
        match answer {
            Some(Some(result)) => result
                .map_err(|e| self.txn_failed(&id, "send_offsets_to_transaction", e, Some(group))),
            Some(None) => Err(ClusterError::Client(format!(
                "no metadata for group {group:?}"
            ))),
            None => {
                let reason = format!(
                    "send_offsets_to_transaction did not return within {:.0} s (its timeout is \
                     {:.0} s): librdkafka's transaction manager is stuck (librdkafka issues 5456, \
                     5511); the producer is given up and a new one fences it",
                    (timeout + STUCK_GRACE).as_secs_f64(),
                    timeout.as_secs_f64()
                );
                tracing::warn!(transactional_id = %id, group, "{reason}");
                self.stuck = Some(reason.clone());
                Err(ClusterError::TransactionAborted {
                    transactional_id: id,
                    reason,
                })
            }
        }
    }

    fn commit_transaction(&mut self) -> Result<(), ClusterError> {
        let id = self.txn_id()?.to_owned();
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| self.txn_failed(&id, "commit_transaction", e, None))?;
        self.txn_began = None;
        self.take_failure()
    }

    fn abort_transaction(&mut self) -> Result<(), ClusterError> {
        let id = self.txn_id()?.to_owned();
        self.producer
            .abort_transaction(self.timeout)
            .map_err(|e| self.txn_failed(&id, "abort_transaction", e, None))?;
        self.txn_began = None;
        // Deliveries of an aborted transaction do not count as failures.
        let _ = self.take_failure();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::call_bounded;

    #[test]
    fn a_call_that_does_not_return_is_given_up_at_its_deadline() {
        // Blocks until `hold` is dropped, at the end of the test.
        let (hold, blocked) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let answer = call_bounded("test", Duration::from_millis(300), move || {
            blocked.recv().is_ok()
        });
        let waited = started.elapsed();
        assert!(matches!(answer, Ok(None)), "{answer:?}");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        drop(hold);
        let answer = call_bounded("test", Duration::from_secs(30), || 7);
        assert!(matches!(answer, Ok(Some(7))), "{answer:?}");
    }
}
