//! The `make demo` pipeline: a small, real stream-processing job on Kafka.
//!
//! ```text
//! generator ──► <prefix>.page-views (keyed by user)
//!                  │ re-key stage: parse, select key = page; bad JSON ──► <prefix>.dead-letters
//!                  ▼
//!               <prefix>.page-views-by-page (repartition topic, keyed by page)
//!                  │ count stage: count per page, emit changed counts each commit
//!                  ▼
//!               <prefix>.page-view-counts (latest count per page)
//! ```
//!
//! Topics and consumer groups live under one prefix: against a Kafka that
//! keeps data between runs, each run needs its own, or the verifier could
//! read an earlier run's (identical) counts and pass without this run doing
//! anything.
//!
//! Both stages are consumer-group members that produce their results, flush,
//! then commit their input offsets (at-least-once). The count stage keeps its
//! state in memory and emits only the pages that changed since the last
//! commit, like a cache in front of a changelog. The verifier reads the
//! output from the beginning and checks that the last count of every page
//! equals what the generator produced. This job predates brook's DSL; once
//! the DSL and runtime land, EventMart's apps replace it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use brook_runtime::kafka::{KafkaAdmin, KafkaConfig, send_blocking};
use brook_topology::{CleanupPolicy, TopicSpec};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use serde::{Deserialize, Serialize};

/// The demo's topic names, all under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The prefix; consumer groups use it too.
    pub prefix: String,
    /// Input: page views keyed by user.
    pub page_views: String,
    /// Internal repartition topic: page views keyed by page.
    pub by_page: String,
    /// Output: the latest view count per page.
    pub counts: String,
    /// Records the re-key stage could not parse, with the reason.
    pub dead_letters: String,
}

impl Topics {
    /// The topics under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_owned(),
            page_views: format!("{prefix}.page-views"),
            by_page: format!("{prefix}.page-views-by-page"),
            counts: format!("{prefix}.page-view-counts"),
            dead_letters: format!("{prefix}.dead-letters"),
        }
    }

    /// The topics to create: 3 partitions each, the counts compacted.
    pub fn specs(&self) -> Vec<TopicSpec> {
        vec![
            TopicSpec::new(&self.page_views, 3),
            TopicSpec::new(&self.by_page, 3),
            TopicSpec::new(&self.counts, 3).cleanup_policy(CleanupPolicy::Compact),
            TopicSpec::new(&self.dead_letters, 1),
        ]
    }

    fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// One page view, as JSON on the input topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageView {
    /// Who viewed.
    pub user: String,
    /// What was viewed.
    pub page: String,
    /// When, in ms since the epoch.
    pub ts_ms: u64,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the demo's topics and groups live.
    pub topics: Topics,
    /// Number of valid page views.
    pub events: u64,
    /// Number of malformed records mixed in (they must reach the dead-letter topic).
    pub malformed: u64,
    /// Distinct pages.
    pub pages: u64,
    /// Distinct users.
    pub users: u64,
    /// Seed of the generator.
    pub seed: u64,
    /// How long the verifier waits for the counts to converge.
    pub timeout: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            topics: Topics::new("demo"),
            events: 20_000,
            malformed: 3,
            pages: 40,
            users: 500,
            seed: 42,
            timeout: Duration::from_secs(120),
        }
    }
}

/// splitmix64: a small, deterministic generator (same seed, same events).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Generates the page views (popular pages skewed towards low numbers) and
/// returns them with the expected count per page.
pub fn generate(config: &DemoConfig) -> (Vec<PageView>, BTreeMap<String, u64>) {
    let mut rng = SplitMix(config.seed);
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut expected = BTreeMap::new();
    let views = (0..config.events)
        .map(|i| {
            let user = format!("user-{}", rng.next() % config.users.max(1));
            let skewed = rng.unit() * rng.unit();
            let page = format!("/products/{}", (skewed * config.pages.max(1) as f64) as u64);
            *expected.entry(page.clone()).or_insert(0) += 1;
            PageView {
                user,
                page,
                ts_ms: start + i * 10,
            }
        })
        .collect();
    (views, expected)
}

/// Produces the page views, keyed by user, with `malformed` bad records
/// spread among them.
pub fn produce_page_views(
    kafka: &KafkaConfig,
    topics: &Topics,
    views: &[PageView],
    malformed: u64,
) -> Result<()> {
    let producer: BaseProducer = kafka
        .producer()
        .create()
        .context("creating the generator's producer")?;
    let every = (views.len() as u64 / (malformed + 1)).max(1);
    let mut bad_sent = 0;
    for (i, view) in views.iter().enumerate() {
        if bad_sent < malformed && (i as u64 + 1).is_multiple_of(every) {
            let junk = format!("{{\"user\": \"broken-{bad_sent}\", \"page\": ");
            send(
                &producer,
                &topics.page_views,
                Some(format!("broken-{bad_sent}").as_bytes()),
                junk.as_bytes(),
            )?;
            bad_sent += 1;
        }
        let json = serde_json::to_vec(view)?;
        send(
            &producer,
            &topics.page_views,
            Some(view.user.as_bytes()),
            &json,
        )?;
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the generator's producer")?;
    Ok(())
}

/// Sends one record with back-pressure, naming the topic on failure.
fn send(producer: &BaseProducer, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
    send_blocking(producer, topic, key, value).with_context(|| format!("producing to {topic}"))
}

/// A running stage: a thread that consumes, processes, produces and commits
/// until stopped.
pub struct Stage {
    name: &'static str,
    handle: JoinHandle<Result<StageStats>>,
}

/// What a stage did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageStats {
    /// Records consumed.
    pub consumed: u64,
    /// Records produced.
    pub produced: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Offset commits made.
    pub commits: u64,
}

impl Stage {
    /// Waits for the stage to finish (after the stop flag is set).
    pub fn join(self) -> Result<StageStats> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("stage {} panicked", self.name))?
            .with_context(|| format!("stage {}", self.name))
    }
}

/// What a stage does with each record: returns the records to produce.
trait Processor: Send + 'static {
    fn process(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, out: &mut Vec<Output>);
    /// Called before each commit; returns records to produce (e.g. cached state).
    fn flush(&mut self, _out: &mut Vec<Output>) {}
}

struct Output {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    dead_letter: bool,
}

fn spawn_stage(
    name: &'static str,
    kafka: &KafkaConfig,
    input: &str,
    group: &str,
    mut processor: impl Processor,
    stop: Arc<AtomicBool>,
) -> Result<Stage> {
    let input = input.to_owned();
    let consumer: BaseConsumer = kafka
        .consumer(group)
        .create()
        .with_context(|| format!("creating stage {name}'s consumer"))?;
    consumer
        .subscribe(&[&input])
        .with_context(|| format!("subscribing to {input}"))?;
    let producer: BaseProducer = kafka
        .producer()
        .create()
        .with_context(|| format!("creating stage {name}'s producer"))?;
    let handle = std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            let mut stats = StageStats::default();
            let mut out = Vec::new();
            let mut last_commit = Instant::now();
            let mut uncommitted = false;
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                if let Some(message) = consumer.poll(Duration::from_millis(20)) {
                    let message = message.with_context(|| format!("consuming {input}"))?;
                    stats.consumed += 1;
                    uncommitted = true;
                    processor.process(message.key(), message.payload(), &mut out);
                }
                if uncommitted && (stopping || last_commit.elapsed() >= COMMIT_INTERVAL) {
                    // Produce results, make sure they are written, then commit
                    // the input they came from: at-least-once.
                    processor.flush(&mut out);
                    for record in out.drain(..) {
                        send(&producer, &record.topic, Some(&record.key), &record.value)?;
                        stats.produced += 1;
                        if record.dead_letter {
                            stats.dead_lettered += 1;
                        }
                    }
                    producer.flush(FLUSH_TIMEOUT).context("flushing results")?;
                    consumer
                        .commit_consumer_state(CommitMode::Sync)
                        .context("committing offsets")?;
                    stats.commits += 1;
                    last_commit = Instant::now();
                    uncommitted = false;
                }
                if stopping && !uncommitted {
                    return Ok(stats);
                }
            }
        })
        .context("spawning a stage thread")?;
    Ok(Stage { name, handle })
}

/// Parses page views and re-keys them by page; unparsable records go to the
/// dead-letter topic with the parse error.
struct Rekey {
    topics: Topics,
}

impl Processor for Rekey {
    fn process(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, out: &mut Vec<Output>) {
        let value = value.unwrap_or_default();
        match serde_json::from_slice::<PageView>(value) {
            Ok(view) => out.push(Output {
                topic: self.topics.by_page.clone(),
                key: view.page.into_bytes(),
                value: value.to_vec(),
                dead_letter: false,
            }),
            Err(error) => {
                let letter = serde_json::json!({
                    "topic": self.topics.page_views,
                    "key": key.map(|k| String::from_utf8_lossy(k).into_owned()),
                    "error": error.to_string(),
                    "value": String::from_utf8_lossy(value),
                });
                out.push(Output {
                    topic: self.topics.dead_letters.clone(),
                    key: key.unwrap_or_default().to_vec(),
                    value: letter.to_string().into_bytes(),
                    dead_letter: true,
                });
            }
        }
    }
}

/// Counts records per key; emits the counts that changed at each commit.
struct CountByKey {
    output: String,
    counts: HashMap<Vec<u8>, u64>,
    dirty: BTreeSet<Vec<u8>>,
}

impl Processor for CountByKey {
    fn process(&mut self, key: Option<&[u8]>, _value: Option<&[u8]>, _out: &mut Vec<Output>) {
        let key = key.unwrap_or_default().to_vec();
        *self.counts.entry(key.clone()).or_insert(0) += 1;
        self.dirty.insert(key);
    }

    fn flush(&mut self, out: &mut Vec<Output>) {
        for key in std::mem::take(&mut self.dirty) {
            let count = self.counts[&key];
            out.push(Output {
                topic: self.output.clone(),
                key,
                value: count.to_string().into_bytes(),
                dead_letter: false,
            });
        }
    }
}

/// Starts the re-key and count stages.
pub fn start_stages(
    kafka: &KafkaConfig,
    topics: &Topics,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Stage>> {
    let rekey = Rekey {
        topics: topics.clone(),
    };
    let count = CountByKey {
        output: topics.counts.clone(),
        counts: HashMap::new(),
        dirty: BTreeSet::new(),
    };
    Ok(vec![
        spawn_stage(
            "rekey",
            kafka,
            &topics.page_views,
            &topics.group("rekey"),
            rekey,
            stop.clone(),
        )?,
        spawn_stage(
            "count",
            kafka,
            &topics.by_page,
            &topics.group("count"),
            count,
            stop.clone(),
        )?,
    ])
}

/// Reads `topic` from the beginning until `done` says the latest value per
/// key is complete, or `timeout` passes. Returns the latest values.
pub fn read_latest(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&BTreeMap<String, String>) -> bool,
) -> Result<BTreeMap<String, String>> {
    // A group of its own per topic and run: rejoining a group just left can
    // stall for a whole session timeout.
    let group = format!("{topic}.verify-{}", std::process::id());
    let consumer: BaseConsumer = kafka
        .consumer(&group)
        .create()
        .context("creating the verifier")?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut latest = BTreeMap::new();
    while !done(&latest) {
        if started.elapsed() > timeout {
            bail!("{topic} did not reach the expected state within {timeout:?}");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(50)) {
            let message = message.with_context(|| format!("reading {topic}"))?;
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            latest.insert(key, value);
        }
    }
    Ok(latest)
}

/// Fails fast, naming the broker and topic, when the broker cannot be
/// reached or a topic is missing (instead of stages waiting for data that
/// can never arrive).
fn preflight(kafka: &KafkaConfig, topics: &Topics) -> Result<()> {
    let admin = KafkaAdmin::new(kafka)?.with_timeout(Duration::from_secs(10));
    for spec in topics.specs() {
        admin.partition_count(&spec.name).with_context(|| {
            format!(
                "topic {} on {} is not usable (is the broker up, and the topic created?)",
                spec.name,
                kafka.bootstrap()
            )
        })?;
    }
    Ok(())
}

/// What a demo run showed.
#[derive(Debug)]
pub struct DemoReport {
    /// Expected (and verified) count per page.
    pub counts: BTreeMap<String, u64>,
    /// Dead letters read back, keyed by record key.
    pub dead_letters: BTreeMap<String, String>,
    /// Stage statistics: re-key, count.
    pub stages: Vec<(&'static str, StageStats)>,
    /// Wall time from first produce to verified output.
    pub elapsed: Duration,
}

/// Runs the whole demo against the cluster of `kafka`, whose topics exist.
pub fn run(kafka: &KafkaConfig, config: &DemoConfig) -> Result<DemoReport> {
    preflight(kafka, &config.topics)?;
    let (views, expected) = generate(config);
    let stop = Arc::new(AtomicBool::new(false));
    let topics = &config.topics;
    let stages = start_stages(kafka, topics, &stop)?;
    let started = Instant::now();
    let outcome = (|| -> Result<_> {
        produce_page_views(kafka, topics, &views, config.malformed)?;
        let wanted: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        read_latest(kafka, &topics.counts, config.timeout, |latest| {
            *latest == wanted
        })?;
        let elapsed = started.elapsed();
        let malformed = config.malformed as usize;
        let dead_letters = read_latest(kafka, &topics.dead_letters, config.timeout, |latest| {
            latest.len() >= malformed
        })?;
        Ok((elapsed, dead_letters))
    })();
    stop.store(true, Ordering::Relaxed);
    let mut stats = Vec::new();
    for stage in stages {
        let name = stage.name;
        stats.push((name, stage.join()?));
    }
    let (elapsed, dead_letters) = outcome?;
    if dead_letters.len() as u64 != config.malformed {
        bail!(
            "expected {} dead letters, found {}",
            config.malformed,
            dead_letters.len()
        );
    }
    Ok(DemoReport {
        counts: expected,
        dead_letters,
        stages: stats,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_counts_every_view() {
        let config = DemoConfig {
            events: 1000,
            ..DemoConfig::default()
        };
        let (views, expected) = generate(&config);
        let (again, _) = generate(&config);
        assert_eq!(
            views.iter().map(|v| &v.page).collect::<Vec<_>>(),
            again.iter().map(|v| &v.page).collect::<Vec<_>>()
        );
        assert_eq!(expected.values().sum::<u64>(), 1000);
        assert!(expected.len() > 10 && expected.len() as u64 <= config.pages);
    }

    #[test]
    fn rekey_sends_unparsable_records_to_dead_letters_with_the_reason() {
        let mut out = Vec::new();
        let good = serde_json::to_vec(&PageView {
            user: "u".into(),
            page: "/p".into(),
            ts_ms: 1,
        })
        .unwrap();
        let topics = Topics::new("t");
        let mut rekey = Rekey {
            topics: topics.clone(),
        };
        rekey.process(Some(b"u"), Some(&good), &mut out);
        rekey.process(Some(b"bad"), Some(b"{\"user\": "), &mut out);
        assert_eq!(out[0].topic, "t.page-views-by-page");
        assert!(!out[0].dead_letter);
        assert_eq!(out[0].key, b"/p");
        assert_eq!(out[1].topic, "t.dead-letters");
        assert!(out[1].dead_letter);
        let letter: serde_json::Value = serde_json::from_slice(&out[1].value).unwrap();
        assert_eq!(letter["key"], "bad");
        assert_eq!(letter["topic"], "t.page-views");
        assert!(
            letter["error"].as_str().unwrap().contains("EOF"),
            "{letter}"
        );
    }

    #[test]
    fn count_emits_only_changed_keys_at_flush() {
        let mut count = CountByKey {
            output: "counts".into(),
            counts: HashMap::new(),
            dirty: BTreeSet::new(),
        };
        let mut out = Vec::new();
        for key in [&b"a"[..], b"b", b"a"] {
            count.process(Some(key), None, &mut out);
        }
        count.flush(&mut out);
        let emitted: Vec<_> = out.drain(..).map(|o| (o.key, o.value)).collect();
        assert_eq!(
            emitted,
            vec![
                (b"a".to_vec(), b"2".to_vec()),
                (b"b".to_vec(), b"1".to_vec())
            ]
        );
        count.process(Some(b"b"), None, &mut out);
        count.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, b"2");
    }
}
