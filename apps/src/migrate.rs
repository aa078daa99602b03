//! The seed's schema migration: from `user_event` v1 to v2 with a period
//! of dual writes, proven by a v1 and a v2 consumer that both read
//! everything.
//!
//! [`run_migration`] does what the seed's `migrate_schema.py` does, and
//! checks the outcome instead of asking someone to look in a UI:
//!
//! 1. reads the subject's current version and compatibility level;
//! 2. checks v2 against the subject (the registry's verdict, with its
//!    reasons) and stops if it is incompatible;
//! 3. registers v1 (if the subject does not have it) and v2;
//! 4. runs a v1 producer and a v2 producer at the same time, each writing
//!    `count` events keyed by user;
//! 5. runs a v1 consumer and a v2 consumer at the same time, each reading
//!    the topic from the beginning until it has read every record written:
//!    the v1 consumer reads v2 records without the new fields, the v2
//!    consumer reads v1 records with the new fields at their defaults.
//!
//! The report says how many records each consumer read, by writer schema,
//! and whether every v1 record read as v2 had exactly the defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use brook_connectors::avro::{AvroSerde, SchemaRegistryClient, split_wire_format};
use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord, TopicPartition, error_chain};
use brook_schemas::events::Event;
use brook_schemas::events::ecommerce::{DeviceType, EventType, TOPIC, UserEventV1, UserEventV2};
use brook_topology::serdes::Serde;
use brook_topology::{Headers, TopicSpec};

/// What to run.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    /// The topic (`ecommerce-events`).
    pub topic: String,
    /// Events each producer writes.
    pub count: u64,
    /// Partitions if the topic is created.
    pub partitions: i32,
    /// How long the consumers may take to read everything.
    pub timeout: Duration,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            topic: TOPIC.into(),
            count: 1000,
            partitions: 3,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What one consumer read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Records read and decoded.
    pub read: u64,
    /// Of those, by writer schema id.
    pub by_writer_id: BTreeMap<u32, u64>,
    /// Records that could not be decoded (with the first reason).
    pub failed: u64,
    /// The first decoding error, if any.
    pub first_error: Option<String>,
    /// v2 consumer only: v1 records whose new fields were not all at their
    /// defaults (must be 0).
    pub wrong_defaults: u64,
}

/// The outcome of a migration run.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// The subject.
    pub subject: String,
    /// `(version, id)` of the subject's latest version before the run.
    pub before: Option<(u32, u32)>,
    /// The subject's compatibility level.
    pub level: String,
    /// Registry ids of v1 and v2.
    pub v1_id: u32,
    /// Registry ids of v1 and v2.
    pub v2_id: u32,
    /// Records written per producer.
    pub written_per_version: u64,
    /// Records in the topic before the run (read too).
    pub already_there: u64,
    /// The v1 consumer.
    pub v1_consumer: ConsumerReport,
    /// The v2 consumer.
    pub v2_consumer: ConsumerReport,
    /// How long the run took.
    pub elapsed: Duration,
}

impl MigrationReport {
    /// Whether both consumers read every record, and v1 records read as v2
    /// had their defaults.
    pub fn ok(&self) -> bool {
        let expected = self.already_there + 2 * self.written_per_version;
        [&self.v1_consumer, &self.v2_consumer]
            .iter()
            .all(|c| c.read == expected && c.failed == 0)
            && self.v2_consumer.wrong_defaults == 0
    }
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expected = self.already_there + 2 * self.written_per_version;
        writeln!(f, "subject {} (level {})", self.subject, self.level)?;
        match self.before {
            Some((v, id)) => writeln!(f, "  before:   latest version {v} (id {id})")?,
            None => writeln!(f, "  before:   no version registered")?,
        }
        writeln!(
            f,
            "  schemas:  v1 = id {}, v2 = id {}",
            self.v1_id, self.v2_id
        )?;
        writeln!(
            f,
            "  written:  {} v1 + {} v2 records at once ({} already in the topic)",
            self.written_per_version, self.written_per_version, self.already_there
        )?;
        for (name, c) in [("v1", &self.v1_consumer), ("v2", &self.v2_consumer)] {
            let by: Vec<String> = c
                .by_writer_id
                .iter()
                .map(|(id, n)| format!("{n} written with id {id}"))
                .collect();
            writeln!(
                f,
                "  {name} consumer read {} of {expected}: {}{}",
                c.read,
                by.join(", "),
                match &c.first_error {
                    Some(e) => format!("; {} failed, first: {e}", c.failed),
                    None => String::new(),
                }
            )?;
        }
        writeln!(
            f,
            "  v1 records read as v2 with all new fields at their defaults: {}",
            if self.v2_consumer.wrong_defaults == 0 {
                "yes".to_owned()
            } else {
                format!("NO ({} differ)", self.v2_consumer.wrong_defaults)
            }
        )?;
        write!(
            f,
            "  took {:.1} s: {}",
            self.elapsed.as_secs_f64(),
            if self.ok() { "OK" } else { "FAILED" }
        )
    }
}

/// The `n`-th event of the run (deterministic).
fn event_v1(n: u64) -> UserEventV1 {
    UserEventV1 {
        event_id: format!("migrate-v1-{n}"),
        user_id: format!("user_{:04}", n % 100),
        event_type: EventType::ALL[(n % 5) as usize],
        timestamp: now_ms(),
        session_id: format!("session-{}", n / 10),
    }
}

fn event_v2(n: u64) -> UserEventV2 {
    let devices = [DeviceType::Mobile, DeviceType::Desktop, DeviceType::Tablet];
    let countries = ["US", "GB", "DE", "NL", "FR"];
    let searching = n % 5 == 4;
    let product = |s: String| (!searching).then_some(s);
    UserEventV2 {
        event_id: format!("migrate-v2-{n}"),
        user_id: format!("user_{:04}", n % 100),
        event_type: EventType::ALL[(n % 5) as usize],
        timestamp: now_ms(),
        session_id: format!("session-{}", n / 10),
        product_id: product(format!("PROD-{:03}", n % 20)),
        product_name: product(format!("Product {}", n % 20)),
        price: (!searching).then_some(9.99 + (n % 20) as f64),
        category: product(["Electronics", "Books", "Home"][(n % 3) as usize].into()),
        device_type: Some(devices[(n % 3) as usize]),
        country: Some(countries[(n % 5) as usize].into()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn produce<T: Event>(
    cluster: &dyn Cluster,
    serde: &AvroSerde<T>,
    topic: &str,
    count: u64,
    make: impl Fn(u64) -> T,
) -> Result<()> {
    let mut producer = cluster
        .producer()
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    for n in 0..count {
        let event = make(n);
        let value = serde
            .serialize(&event)
            .with_context(|| format!("serializing {} event {n}", T::SUBJECT))?;
        producer
            .send(ProducedRecord {
                topic: topic.to_owned(),
                partition: None,
                key: Some(event.key().as_bytes().to_vec()),
                value,
                timestamp: now_ms(),
                headers: Headers::default(),
            })
            .map_err(|e| anyhow::anyhow!("producing to {topic}: {}", error_chain(&e)))?;
    }
    producer
        .flush()
        .map_err(|e| anyhow::anyhow!("flushing to {topic}: {}", error_chain(&e)))
}

/// Reads `topic` from the beginning until `expected` records were read (or
/// the deadline), decoding each with `serde`; `inspect` sees each value
/// with its writer id.
fn consume<T: Event>(
    cluster: &dyn Cluster,
    serde: &AvroSerde<T>,
    topic: &str,
    partitions: i32,
    expected: u64,
    deadline: Instant,
    mut inspect: impl FnMut(u32, &T, &mut ConsumerReport),
) -> Result<ConsumerReport> {
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic.to_owned(), p))
        .collect();
    let mut consumer = cluster
        .consumer(
            &format!("{topic}-migration-check"),
            Isolation::ReadCommitted,
        )
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    consumer
        .assign(&tps)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    for tp in &tps {
        consumer
            .seek(tp, 0)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    }
    let mut report = ConsumerReport::default();
    while report.read + report.failed < expected && Instant::now() < deadline {
        for record in consumer
            .poll(1000)
            .map_err(|e| anyhow::anyhow!("reading {topic}: {}", error_chain(&e)))?
        {
            let decoded = record
                .value
                .as_deref()
                .ok_or_else(|| "a null value".to_owned())
                .and_then(|v| split_wire_format(v).map(|(id, _)| id))
                .and_then(|id| {
                    serde
                        .deserialize(record.value.as_deref())
                        .map(|value| (id, value))
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok((id, value)) => {
                    report.read += 1;
                    *report.by_writer_id.entry(id).or_default() += 1;
                    inspect(id, &value, &mut report);
                }
                Err(e) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| {
                        format!(
                            "{}/{}@{}: {e}",
                            record.tp.topic, record.tp.partition, record.offset
                        )
                    });
                }
            }
        }
    }
    Ok(report)
}

/// Runs the migration; see the [module docs](self).
pub fn run_migration(
    cluster: Arc<dyn Cluster>,
    registry: Arc<SchemaRegistryClient>,
    options: &MigrationOptions,
) -> Result<MigrationReport> {
    let started = Instant::now();
    let subject = format!("{}-value", options.topic);
    let client = registry.clone();
    let s = subject.clone();
    let (before, level) = registry
        .block_on(move |_| {
            Box::pin(async move {
                let before = client.latest_version(&s).await?;
                let level = client.compatibility_level(&s).await?;
                Ok((before, level))
            })
        })
        .context("reading the subject's current version")?;
    if before.is_some() {
        let client = registry.clone();
        let s = subject.clone();
        let (compatible, reasons) = registry
            .block_on(move |_| {
                Box::pin(async move {
                    client
                        .check_compatibility(&s, UserEventV2::SCHEMA, None)
                        .await
                })
            })
            .context("checking v2 against the subject")?;
        if !compatible {
            bail!(
                "v2 is not compatible with {subject} under {level}; migration aborted:\n  {}",
                reasons.join("\n  ")
            );
        }
    }
    // Created only when missing (some brokers, like the dev broker, have
    // no admin API but do have the topic).
    let partitions = match cluster.partition_count(&options.topic) {
        Ok(n) => n,
        Err(_) => {
            cluster
                .create_topics(&[TopicSpec::new(options.topic.clone(), options.partitions)])
                .map_err(|e| anyhow::anyhow!("creating {}: {}", options.topic, error_chain(&e)))?;
            cluster
                .partition_count(&options.topic)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))?
        }
    };
    let v1 = AvroSerde::<UserEventV1>::new(registry.clone(), subject.clone(), UserEventV1::SCHEMA)?;
    let v2 = AvroSerde::<UserEventV2>::new(registry.clone(), subject.clone(), UserEventV2::SCHEMA)?;
    // v1 first: the subject's history is v1 then v2.
    let v1_id = v1.schema_id().context("registering v1")?;
    let v2_id = v2.schema_id().context("registering v2")?;
    let already_there = {
        let mut consumer = cluster
            .consumer(
                &format!("{}-migration-count", options.topic),
                Isolation::ReadCommitted,
            )
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
        let tps: Vec<TopicPartition> = (0..partitions)
            .map(|p| TopicPartition::new(options.topic.clone(), p))
            .collect();
        consumer
            .end_offsets(&tps)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?
            .values()
            .sum::<i64>() as u64
    };
    let expected = already_there + 2 * options.count;
    let deadline = Instant::now() + options.timeout;
    let topic = options.topic.as_str();
    let (v1_report, v2_report) = std::thread::scope(|scope| -> Result<_> {
        let p1 = scope.spawn(|| produce(cluster.as_ref(), &v1, topic, options.count, event_v1));
        let p2 = scope.spawn(|| produce(cluster.as_ref(), &v2, topic, options.count, event_v2));
        let c1 = scope.spawn(|| {
            consume(
                cluster.as_ref(),
                &v1,
                topic,
                partitions,
                expected,
                deadline,
                |_, _, _| {},
            )
        });
        let c2 = scope.spawn(|| {
            consume(
                cluster.as_ref(),
                &v2,
                topic,
                partitions,
                expected,
                deadline,
                |id, event: &UserEventV2, report| {
                    let defaults = UserEventV2::from(UserEventV1::from(event.clone()));
                    if id == v1_id && *event != defaults {
                        report.wrong_defaults += 1;
                    }
                },
            )
        });
        p1.join().expect("the v1 producer thread")?;
        p2.join().expect("the v2 producer thread")?;
        Ok((
            c1.join().expect("the v1 consumer thread")?,
            c2.join().expect("the v2 consumer thread")?,
        ))
    })?;
    Ok(MigrationReport {
        subject,
        before,
        level,
        v1_id,
        v2_id,
        written_per_version: options.count,
        already_there,
        v1_consumer: v1_report,
        v2_consumer: v2_report,
        elapsed: started.elapsed(),
    })
}
