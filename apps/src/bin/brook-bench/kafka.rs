//! `make bench`'s real-broker group (`--only kafka`): brook, Kafka Streams
//! (`bench/kstreams/`, one runnable jar), Quix Streams and the raw
//! librdkafka loop, each as a process of its own against one Apache Kafka
//! 4.4 broker (`brook-kafka`, a JVM with a 1 GiB heap), on the same input
//! topics: the same records, keys and bytes for every framework.
//!
//! A run starts the framework's process with the same flags for all
//! (workload, topics, guarantee, stream threads, 100 ms commits, state
//! directory, warm-up count) and reads the lines it prints: `warm <ms>` when
//! its source has seen the warm-up records (timing starts), `running <ms>`
//! when it reached RUNNING. The harness counts the results arriving on the
//! output topic with a read_committed consumer, and the run ends when every
//! expected result is readable. Measured per run: records/s (timed records
//! over the wall clock from `warm` to the last result), records per
//! CPU-second of the framework's process (utime + stime from /proc, all
//! its threads: the JVM's JIT and GC included, the broker's not), the
//! process's peak RSS (VmHWM) and the broker's CPU over the same interval
//! (percent of the machine's cores: the broker shares them).
//!
//! The frameworks' client settings are the same where both expose them:
//! `max.poll.records` 1000, `linger.ms` 5, `batch.size` 1,000,000 (librdkafka's
//! default), no compression, `acks=all`, `session.timeout.ms` 10 s, `auto.offset.reset`
//! earliest. The generic workloads' aggregations are uncached (one update
//! per record) in both, Kafka Streams with `statestore.cache.max.bytes=0`;
//! EventMart's revenue app caches (`with_caching`), Kafka Streams then with
//! its default 10 MiB cache, and that run ends when the latest result of
//! each window counts every purchase rather than after a number of records.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_runtime::cluster::Cluster;
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::streams::{KafkaStreams, StreamsState};
use brook_runtime::thread::{ProcessingGuarantee, StreamsConfig};
use brook_topology::TopicSpec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::{PARTITIONS, Sample, VALUE_BYTES};

/// The workloads on the real broker.
pub const WORKLOADS: [&str; 4] = [
    "stateless",
    "windowed_count",
    "stream_table_join",
    "revenue_per_category",
];

/// The broker's JVM: a heap of its own size, the default (G1, tiered) JIT.
const BROKER_JVM_OPTS: &str = "-Xms1g -Xmx1g -XX:+UseG1GC";
/// Kafka Streams' JVM: the same heap as the broker's, G1.
const KSTREAMS_JVM_OPTS: [&str; 3] = ["-Xms1g", "-Xmx1g", "-XX:+UseG1GC"];
const COMMIT_INTERVAL_MS: u64 = 100;
const SESSION_TIMEOUT_MS: u64 = 10_000;
/// Kafka Streams' default `statestore.cache.max.bytes` (10 MiB), for the
/// cached revenue app.
const KSTREAMS_CACHE_BYTES: u64 = 10 * 1024 * 1024;

/// The revenue windows' grace: longer than the clicks' whole span (5 ms
/// apart), so no purchase is late however far one input partition runs
/// ahead of another on its way through the repartition topic, and every
/// framework writes one result per purchase. (With EventMart's 30 s, how
/// many are dropped as late depends on each framework's processing order.)
const REVENUE_GRACE_MS: u64 = 3_600_000;
/// Keys of the generic workloads.
const KEYS: usize = 100;
/// The latency runs: records/s, seconds not counted, seconds counted.
const LATENCY_RATE: u64 = 10_000;
const LATENCY_WARM_SECONDS: u64 = 5;
const LATENCY_SECONDS: u64 = 10;
/// A run that has not delivered every result by then failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The frameworks compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framework {
    Brook,
    KafkaStreams,
    Quix,
    Raw,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::Brook => "brook",
            Framework::KafkaStreams => "kstreams",
            Framework::Quix => "quix",
            Framework::Raw => "raw",
        }
    }
}

/// Processing guarantees, as the frameworks spell them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnceV2,
}

impl Guarantee {
    fn flag(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnceV2 => "exactly_once_v2",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "alos",
            Guarantee::ExactlyOnceV2 => "eos",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "at_least_once" => Ok(Guarantee::AtLeastOnce),
            "exactly_once_v2" => Ok(Guarantee::ExactlyOnceV2),
            other => bail!("--guarantee {other:?}: at_least_once or exactly_once_v2"),
        }
    }
}

/// One framework run's figures.
#[derive(Debug)]
pub struct Measured {
    /// Timed records per second, wall clock.
    pub rate: f64,
    /// Timed records per CPU-second of the framework's process.
    pub per_cpu_second: f64,
    /// The process's peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// The broker's CPU over the timed interval, percent of all cores.
    pub broker_cpu_pct: f64,
}

/// What a run reads and how many results it waits for.
struct Input {
    topic: String,
    output: String,
    table: Option<String>,
    expected: u64,
}

/// Where the other programs are.
pub struct Programs {
    /// brook-kafka (the broker).
    pub broker: PathBuf,
    /// The Kafka Streams jar.
    pub kstreams_jar: PathBuf,
    /// The bench venv's python and bench/quix_bench.py.
    pub python: PathBuf,
    pub quix_script: PathBuf,
    /// The v2 click schema (schemas/subjects/ecommerce-events-value/v2.avsc).
    pub click_schema: PathBuf,
}

impl Programs {
    /// From the environment scripts/bench.sh sets, else beside this binary
    /// and in the working directory.
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("brook-bench has no directory")?;
        let env_or =
            |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
        let programs = Programs {
            broker: env_or("BROOK_BENCH_BROKER", dir.join("brook-kafka")),
            kstreams_jar: env_or(
                "BROOK_BENCH_KSTREAMS_JAR",
                PathBuf::from("bench/kstreams/target/brook-kstreams-bench.jar"),
            ),
            python: env_or("BROOK_BENCH_PYTHON", super::workloads::bench_python()),
            quix_script: env_or("BROOK_BENCH_QUIX", PathBuf::from("bench/quix_bench.py")),
            click_schema: env_or(
                "BROOK_BENCH_CLICK_SCHEMA",
                PathBuf::from("schemas/subjects/ecommerce-events-value/v2.avsc"),
            ),
        };
        for (what, path, how) in [
            (
                "brook-kafka",
                &programs.broker,
                "cargo build --release -p brook-testkit --bin brook-kafka",
            ),
            (
                "the Kafka Streams jar",
                &programs.kstreams_jar,
                "mvn -f bench/kstreams/pom.xml package (scripts/bench.sh does)",
            ),
            (
                "the click schema",
                &programs.click_schema,
                "run from the repository root",
            ),
        ] {
            if !path.exists() {
                bail!("{what} is not at {} ({how})", path.display());
            }
        }
        Ok(programs)
    }
}

/// The real-broker benchmarks: one broker for all runs, the inputs loaded
/// once.
pub struct KafkaBench {
    programs: Programs,
    broker: BrokerProcess,
    registry: brook_schemas::server::RegistryServer,
    config: KafkaConfig,
    dir: tempfile::TempDir,
    warmup: usize,
    records: usize,
    inputs: BTreeMap<&'static str, Input>,
    runs: u64,
    /// The key count the state runs' input was loaded with.
    state_keys: Option<usize>,
    /// Keys of the state runs' input probed so far (by every run: the input
    /// keeps the probes, so a later run's store counts them too).
    probed: Arc<AtomicUsize>,
}

impl KafkaBench {
    /// Starts the broker and loads `warmup + records` input records per
    /// workload.
    pub fn start(programs: Programs, warmup: usize, records: usize) -> Result<Self> {
        // BROOK_BENCH_KEEP=1 keeps the runs' logs and state (the path is
        // printed).
        let keep = std::env::var_os("BROOK_BENCH_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("brook-bench-kafka-")
            .disable_cleanup(keep)
            .tempdir()?;
        if keep {
            eprintln!("kafka: keeping {}", dir.path().display());
        }
        let broker = BrokerProcess::start(&programs.broker, dir.path())?;
        let config = KafkaConfig::new(&broker.bootstrap);
        let registry = brook_schemas::server::RegistryServer::start_in_memory()?;
        let mut bench = KafkaBench {
            programs,
            broker,
            registry,
            config,
            dir,
            warmup,
            records,
            inputs: BTreeMap::new(),
            runs: 0,
            state_keys: None,
            probed: Arc::new(AtomicUsize::new(0)),
        };
        bench.load()?;
        Ok(bench)
    }

    /// The broker's address.
    pub fn bootstrap(&self) -> &str {
        &self.broker.bootstrap
    }

    fn load(&mut self) -> Result<()> {
        let total = self.warmup + self.records;
        let cluster = KafkaCluster::new(self.config.clone())?;
        let spec = |name: &str| TopicSpec::new(name, PARTITIONS).replication(1);
        cluster.create_topics(&[spec("bench-in"), spec("bench-table"), spec("bench-out")])?;
        let producer: BaseProducer = self.config.producer().create()?;
        let base = now_ms();
        // The table's rows are older than every stream record, so a
        // framework that picks the lowest timestamp first joins them first.
        for k in 0..KEYS {
            send(
                &producer,
                "bench-table",
                format!("key-{k}").as_bytes(),
                format!("customer {k}").as_bytes(),
                base - 3_600_000,
            )?;
        }
        let value = vec![b'x'; VALUE_BYTES];
        for i in 0..total {
            // 100 records per ms: 1 s windows hold 100,000 records.
            send(
                &producer,
                "bench-in",
                format!("key-{}", i % KEYS).as_bytes(),
                &value,
                base + (i / 100) as i64,
            )?;
        }
        producer.flush(Duration::from_secs(120))?;
        let every = total as u64;
        for (workload, expected) in [
            ("stateless", every),
            ("windowed_count", every),
            ("stream_table_join", every),
        ] {
            self.inputs.insert(
                workload,
                Input {
                    topic: "bench-in".into(),
                    output: "bench-out".into(),
                    table: (workload == "stream_table_join").then(|| "bench-table".into()),
                    expected,
                },
            );
        }
        let purchases = self.load_clicks(&cluster, &producer, total)?;
        self.inputs.insert(
            "revenue_per_category",
            Input {
                topic: brook_schemas::events::ecommerce::TOPIC.into(),
                output: "eventmart-analytics".into(),
                table: None,
                expected: purchases,
            },
        );
        Ok(())
    }

    /// `total` v2 clicks from EventMart's generator, Avro with the
    /// registry's framing, stamped from now on, 5 ms apart; returns how many
    /// are purchases with a category and a price (what the windows' latest
    /// counts add up to at the end).
    fn load_clicks(
        &self,
        cluster: &KafkaCluster,
        producer: &BaseProducer,
        total: usize,
    ) -> Result<u64> {
        use brook_apps::eventmart::generator::{
            Encoder, Generated, Generator, GeneratorConfig, SchemaMode,
        };
        use brook_schemas::events::ecommerce::EventType;
        let cfg = self.eventmart()?;
        let wanted = [
            brook_schemas::events::ecommerce::TOPIC,
            "eventmart-analytics",
        ];
        let specs: Vec<TopicSpec> = cfg
            .topics
            .topics
            .iter()
            .filter(|t| wanted.contains(&t.name.as_str()))
            .map(|t| t.clone().replication(1))
            .collect();
        cluster.create_topics(&specs)?;
        let encoder = Encoder::new(cfg.registry.clone());
        let mut generator = Generator::new(GeneratorConfig {
            schema: SchemaMode::V2,
            users: 1_000,
            ..GeneratorConfig::default()
        });
        let (mut n, mut purchases) = (0, 0);
        let mut t = now_ms();
        while n < total {
            t += 5;
            let e = generator.next(t);
            if let Generated::Click(c) = &e {
                let v2 = c.as_v2();
                if v2.event_type == EventType::Purchase
                    && v2.category.is_some()
                    && v2.price.is_some()
                {
                    purchases += 1;
                }
                send(
                    producer,
                    brook_schemas::events::ecommerce::TOPIC,
                    e.key().as_bytes(),
                    &encoder.encode(&e)?,
                    e.timestamp(),
                )?;
                n += 1;
            }
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(purchases)
    }

    fn eventmart(&self) -> Result<brook_apps::eventmart::apps::EventMartConfig> {
        use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
        let client = SchemaRegistryClient::new(RegistryClientConfig::new(self.registry.url()))?;
        Ok(brook_apps::eventmart::apps::EventMartConfig::new(
            "", client,
        ))
    }

    /// Runs `framework` on `workload` once in a fresh process and consumer
    /// group.
    pub fn run(
        &mut self,
        framework: Framework,
        workload: &str,
        guarantee: Guarantee,
        threads: usize,
    ) -> Result<Measured> {
        let input = self
            .inputs
            .get(workload)
            .with_context(|| format!("no input for workload {workload:?}"))?;
        let spec = Spec {
            framework,
            workload: workload.to_owned(),
            guarantee,
            threads,
            input: input.topic.clone(),
            output: input.output.clone(),
            table: input.table.clone(),
            warmup: self.warmup,
            static_member: None,
        };
        let expected = input.expected;
        let timed = self.records as f64;
        let (app_id, mut command) = self.command(&spec)?;
        let what = format!("{app_id} ({})", self.broker.bootstrap);
        let mut counter = OutputCounter::at_end(&self.config, &spec.output)?;
        if workload == "revenue_per_category" {
            counter = counter.by_window_counts();
        }
        let mut child =
            ChildProcess::spawn(&mut command, &self.dir.path().join(format!("{app_id}.log")))
                .with_context(|| format!("starting {what}"))?;
        let result = measure(&mut child, counter, expected, &self.broker, timed);
        let stopped = child.stop();
        let measured = result
            .and_then(|m| stopped.map(|()| m))
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}; {}", child.log_tail()))?;
        let _ = std::fs::remove_dir_all(self.dir.path().join(&app_id));
        Ok(measured)
    }

    /// End-to-end latency of `framework`'s stateless workload under
    /// exactly_once_v2 with 100 ms commits, one stream thread: the harness
    /// writes `rate` records/s to a fresh input topic, each stamped with
    /// the wall clock when sent (its record timestamp, which every
    /// framework passes on to the result), and a read_committed consumer
    /// notes when each result becomes readable. The first `warm` seconds
    /// (start-up, group join, JIT) are not counted; the next `seconds` are.
    pub fn latency(
        &mut self,
        framework: Framework,
        rate: u64,
        warm: u64,
        seconds: u64,
    ) -> Result<Latency> {
        self.runs += 1;
        let (input, output) = (
            format!("latency-in-{}", self.runs),
            format!("latency-out-{}", self.runs),
        );
        let cluster = KafkaCluster::new(self.config.clone())?;
        cluster.create_topics(&[
            TopicSpec::new(&input, PARTITIONS).replication(1),
            TopicSpec::new(&output, PARTITIONS).replication(1),
        ])?;
        let spec = Spec {
            framework,
            workload: "stateless".into(),
            guarantee: Guarantee::ExactlyOnceV2,
            threads: 1,
            input: input.clone(),
            output: output.clone(),
            table: None,
            warmup: 1,
            static_member: None,
        };
        let (app_id, mut command) = self.command(&spec)?;
        let what = format!("{app_id} latency ({})", self.broker.bootstrap);
        let mut counter = OutputCounter::at_end(&self.config, &output)?;
        let mut child =
            ChildProcess::spawn(&mut command, &self.dir.path().join(format!("{app_id}.log")))
                .with_context(|| format!("starting {what}"))?;
        let result = (|| {
            let deadline = Instant::now() + RUN_TIMEOUT;
            while !child.has_said("running") {
                if Instant::now() > deadline {
                    bail!("not running after {} s", RUN_TIMEOUT.as_secs());
                }
                if let Some(status) = child.exited()? {
                    bail!("exited ({status}) before it was running");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Timing starts `warm` seconds after the first result (the group
            // joined, the pipeline flowing), and lasts `seconds`.
            let window = Arc::new([AtomicI64::new(i64::MAX), AtomicI64::new(i64::MAX)]);
            let mut sender = Some(Pacer::start(
                self.config.clone(),
                input.clone(),
                rate,
                window.clone(),
            )?);
            while counter.seen == 0 {
                if Instant::now() > deadline {
                    bail!("no result {} s after start", RUN_TIMEOUT.as_secs());
                }
                if let Some(status) = child.exited()? {
                    bail!("exited ({status}) before its first result");
                }
                counter.poll(Duration::from_millis(20))?;
            }
            let from = now_ms() + (warm * 1000) as i64;
            let until = from + (seconds * 1000) as i64;
            window[0].store(from, Ordering::SeqCst);
            window[1].store(until, Ordering::SeqCst);
            let mut latencies = Vec::new();
            let mut sent_timed = None;
            let last_wait = Instant::now() + Duration::from_secs(warm + seconds + 30);
            loop {
                if let Some(status) = child.exited()? {
                    bail!("exited ({status}) during the latency run");
                }
                counter.poll_each(Duration::from_millis(20), |ts| {
                    if (from..until).contains(&ts) {
                        latencies.push((now_ms() - ts) as f64);
                    }
                })?;
                if let Some(pacer) = sender.take_if(|p| p.is_finished()) {
                    sent_timed = Some(pacer.join()?);
                }
                if let Some(n) = sent_timed
                    && latencies.len() as u64 >= n
                {
                    break;
                }
                if Instant::now() > last_wait {
                    bail!(
                        "{} of {} timed results arrived",
                        latencies.len(),
                        sent_timed.map_or("?".into(), |n| n.to_string())
                    );
                }
            }
            if latencies.is_empty() {
                bail!("no timed record was sent");
            }
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
            Ok(Latency {
                p50_ms: pct(0.5),
                p99_ms: pct(0.99),
                p999_ms: pct(0.999),
            })
        })();
        let stopped = child.stop();
        let measured = result
            .and_then(|m| stopped.map(|()| m))
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}; {}", child.log_tail()))?;
        let _ = std::fs::remove_dir_all(self.dir.path().join(&app_id));
        Ok(measured)
    }

    /// A fresh application id for `spec` and the command that runs it.
    fn command(&mut self, spec: &Spec) -> Result<(String, Command)> {
        self.runs += 1;
        let app_id = format!(
            "bench-{}-{}-{}-{}t-{}",
            spec.framework.name(),
            spec.workload,
            spec.guarantee.short(),
            spec.threads,
            self.runs
        );
        let state_dir = self.dir.path().join(&app_id);
        let command = self.command_with(spec, &app_id, &state_dir)?;
        Ok((app_id, command))
    }

    /// The command that runs `spec` as application `app_id` with its state
    /// in `state_dir`.
    fn command_with(&self, spec: &Spec, app_id: &str, state_dir: &Path) -> Result<Command> {
        let app_id = app_id.to_owned();
        let mut flags: Vec<String> = [
            ("workload", spec.workload.clone()),
            ("bootstrap", self.broker.bootstrap.clone()),
            ("application-id", app_id.clone()),
            ("input", spec.input.clone()),
            ("output", spec.output.clone()),
            ("guarantee", spec.guarantee.flag().to_owned()),
            ("threads", spec.threads.to_string()),
            ("commit-interval-ms", COMMIT_INTERVAL_MS.to_string()),
            ("session-timeout-ms", SESSION_TIMEOUT_MS.to_string()),
            ("state-dir", state_dir.display().to_string()),
            ("warmup", spec.warmup.to_string()),
            ("window-grace-ms", REVENUE_GRACE_MS.to_string()),
        ]
        .into_iter()
        .chain(spec.table.clone().map(|t| ("table", t)))
        .chain(spec.static_member.clone().map(|m| ("group-instance-id", m)))
        .flat_map(|(k, v)| [format!("--{k}"), v])
        .collect();
        let command = match spec.framework {
            Framework::Brook | Framework::Raw => {
                flags.extend(["--registry".into(), self.registry.url().to_owned()]);
                let mode = if spec.framework == Framework::Brook {
                    "--kafka-child"
                } else {
                    "--raw-child"
                };
                let mut c = Command::new(std::env::current_exe()?);
                c.arg(mode).arg("1").args(&flags);
                c
            }
            Framework::KafkaStreams => {
                flags.extend([
                    "--schema".into(),
                    self.programs.click_schema.display().to_string(),
                ]);
                // EventMart's revenue app caches (`with_caching`), so Kafka
                // Streams runs it with its record cache at its default size;
                // the generic workloads run uncached in both.
                if spec.workload == "revenue_per_category" {
                    flags.extend(["--cache-max-bytes".into(), KSTREAMS_CACHE_BYTES.to_string()]);
                }
                let mut c = Command::new("java");
                c.args(KSTREAMS_JVM_OPTS)
                    .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                    .arg(format!("-Djava.io.tmpdir={}", self.dir.path().display()))
                    .arg("-jar")
                    .arg(&self.programs.kstreams_jar)
                    .args(&flags);
                c
            }
            Framework::Quix => {
                let mut c = Command::new(&self.programs.python);
                c.arg(&self.programs.quix_script).arg("kafka").args(&flags);
                c
            }
        };
        Ok(command)
    }

    /// Restore and recovery of a count store holding `keys` keys (one per
    /// input record), at-least-once, one stream thread. First the
    /// application counts the keys (its changelog then holds `keys`
    /// records) and stops cleanly. Then, each timed from the moment it is
    /// measured against until the first result for a probe record written
    /// after that moment, with count 2 (the old count was restored, not
    /// started over):
    /// - restore: restarted with an empty state directory (the changelog is
    ///   replayed), from the process's start;
    /// - recovery with its state: SIGKILLed and restarted at once on the
    ///   same state directory, from the kill;
    /// - recovery without it: SIGKILLed and restarted on an empty one.
    ///
    /// Probes go to a key of the store every 20 ms (timing resolution).
    /// Every framework joins the group as a static member (the same
    /// `group.instance.id` for each of its processes), so a restarted
    /// process gets its partitions back without waiting for the killed
    /// one's session (10 s) to time out.
    pub fn state_runs(&mut self, framework: Framework, keys: usize) -> Result<StateTimes> {
        self.load_state_input(keys)?;
        self.runs += 1;
        let output = format!("state-out-{}", self.runs);
        let cluster = KafkaCluster::new(self.config.clone())?;
        cluster.create_topics(&[TopicSpec::new(&output, PARTITIONS).replication(1)])?;
        let spec = Spec {
            framework,
            workload: "count_distinct".into(),
            guarantee: Guarantee::AtLeastOnce,
            threads: 1,
            input: "state-in".into(),
            output: output.clone(),
            table: None,
            warmup: 1,
            // Every framework a static member, as one tuned for recovery
            // runs (and each process the same member): without, a restart
            // waits out the killed process's session (10 s here) first.
            static_member: Some(format!(
                "bench-{}-state-{}-member",
                framework.name(),
                self.runs
            )),
        };
        let app_id = format!("bench-{}-state-{}", framework.name(), self.runs);
        let dirs: Vec<PathBuf> = (0..3)
            .map(|i| self.dir.path().join(format!("{app_id}-{i}")))
            .collect();
        let what = format!("{app_id} ({})", self.broker.bootstrap);
        let log = |i: usize| self.dir.path().join(format!("{app_id}-{i}.log"));
        let mut counter = OutputCounter::at_end(&self.config, &output)?;
        // Counting the keys.
        let mut child =
            ChildProcess::spawn(&mut self.command_with(&spec, &app_id, &dirs[0])?, &log(0))?;
        let built = (|| {
            let deadline = Instant::now() + RUN_TIMEOUT;
            while counter.seen < keys as u64 {
                if Instant::now() > deadline {
                    bail!(
                        "counted {} of {keys} keys in {} s",
                        counter.seen,
                        RUN_TIMEOUT.as_secs()
                    );
                }
                if let Some(status) = child.exited()? {
                    bail!("exited ({status}) while counting");
                }
                counter.poll(Duration::from_millis(50))?;
            }
            Ok(())
        })();
        let stopped = child.stop();
        built
            .and(stopped)
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}; {}", child.log_tail()))?;
        drop(child);
        let mut probes = Prober::start(self.config.clone(), keys, self.probed.clone())?;
        let mut times = [0.0; 3];
        let mut child: Option<ChildProcess> = None;
        for (phase, dir) in [(0, &dirs[1]), (1, &dirs[1]), (2, &dirs[2])] {
            // From the kill (reaped: nothing it sent later exists).
            if let Some(mut old) = child.take() {
                old.kill()?;
            }
            let from = Instant::now();
            let from_ms = now_ms();
            let mut next = ChildProcess::spawn(
                &mut self.command_with(&spec, &app_id, dir)?,
                &log(phase + 1),
            )?;
            let waited = wait_for_probe(&mut next, &mut counter, from_ms);
            let waited = waited.map_err(|e| {
                anyhow::anyhow!("{what}, phase {phase}: {e:#}; {}", next.log_tail())
            })?;
            times[phase] = waited.duration_since(from).as_secs_f64();
            child = Some(next);
        }
        probes.stop()?;
        if let Some(mut last) = child.take() {
            last.stop()
                .map_err(|e| anyhow::anyhow!("{what}: {e:#}; {}", last.log_tail()))?;
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(StateTimes {
            restore_s: times[0],
            recover_with_state_s: times[1],
            recover_without_state_s: times[2],
        })
    }

    /// The restore runs' input: `keys` records with distinct keys (loaded
    /// once).
    fn load_state_input(&mut self, keys: usize) -> Result<()> {
        if self.state_keys == Some(keys) {
            return Ok(());
        }
        if self.state_keys.is_some() {
            bail!("the state runs' input was loaded with another key count");
        }
        let cluster = KafkaCluster::new(self.config.clone())?;
        cluster.create_topics(&[TopicSpec::new("state-in", PARTITIONS).replication(1)])?;
        let producer: BaseProducer = self.config.producer().create()?;
        let value = vec![b'x'; VALUE_BYTES];
        let now = now_ms();
        for i in 0..keys {
            send(&producer, "state-in", state_key(i).as_bytes(), &value, now)?;
        }
        producer.flush(Duration::from_secs(120))?;
        self.state_keys = Some(keys);
        Ok(())
    }
}

/// The key of record `i` of the state runs' input.
fn state_key(i: usize) -> String {
    format!("state-key-{i:08}")
}

/// Restore and recovery times, seconds.
#[derive(Debug)]
pub struct StateTimes {
    pub restore_s: f64,
    pub recover_with_state_s: f64,
    pub recover_without_state_s: f64,
}

/// Waits until a result for a probe written at or after `from_ms` arrives,
/// with count 2; returns when it arrived.
fn wait_for_probe(
    child: &mut ChildProcess,
    counter: &mut OutputCounter,
    from_ms: i64,
) -> Result<Instant> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if Instant::now() > deadline {
            bail!("no result for a probe in {} s", RUN_TIMEOUT.as_secs());
        }
        if let Some(status) = child.exited()? {
            bail!("exited ({status}) before a probe's result");
        }
        let mut found: Option<Result<Instant>> = None;
        counter.poll_records(Duration::from_millis(5), |key, value, ts| {
            if found.is_none() && ts >= from_ms && key.starts_with(b"state-key-") {
                found = Some(if value == b"2" {
                    Ok(Instant::now())
                } else {
                    Err(anyhow::anyhow!(
                        "probe {} counted {} (the state was not restored)",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    ))
                });
            }
        })?;
        if let Some(found) = found {
            return found;
        }
    }
}

/// Writes one record every 20 ms to a key of the state runs' input not
/// probed before by any run (`probed` counts them; so its count goes from 1
/// to 2), stamped with the wall clock, until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Prober {
    fn start(config: KafkaConfig, keys: usize, probed: Arc<AtomicUsize>) -> Result<Self> {
        let producer: BaseProducer = config.set_producer("linger.ms", "0").producer().create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                let value = vec![b'p'; VALUE_BYTES];
                while !stopping.load(Ordering::SeqCst) {
                    let i = probed.fetch_add(1, Ordering::SeqCst);
                    if i >= keys {
                        bail!("probed every one of the {keys} keys");
                    }
                    send(
                        &producer,
                        "state-in",
                        state_key(i).as_bytes(),
                        &value,
                        now_ms(),
                    )?;
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(20));
                }
                producer.flush(Duration::from_secs(30))?;
                Ok(())
            })?;
        Ok(Prober {
            stop,
            handle: Some(handle),
        })
    }

    fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the prober thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What a framework process is asked to run.
struct Spec {
    framework: Framework,
    workload: String,
    guarantee: Guarantee,
    threads: usize,
    input: String,
    output: String,
    table: Option<String>,
    warmup: usize,
    /// Join the consumer group as a static member with this
    /// `group.instance.id` (the state runs: a restart gets its partitions
    /// back without waiting for the killed process's session to time out).
    static_member: Option<String>,
}

/// End-to-end latency percentiles, ms.
#[derive(Debug)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Writes records at a steady rate on a thread of its own, each stamped
/// with the wall clock when sent, until the end of `window` (epoch ms:
/// from, until; `i64::MAX` until set); its result is how many it stamped
/// inside the window (the timed records).
struct Pacer {
    handle: std::thread::JoinHandle<Result<u64>>,
}

impl Pacer {
    fn start(
        config: KafkaConfig,
        topic: String,
        rate: u64,
        window: Arc<[AtomicI64; 2]>,
    ) -> Result<Self> {
        let producer: BaseProducer = config.set_producer("linger.ms", "0").producer().create()?;
        let handle = std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                let value = vec![b'x'; VALUE_BYTES];
                let started = Instant::now();
                let (mut sent, mut timed) = (0u64, 0u64);
                while now_ms() < window[1].load(Ordering::SeqCst) {
                    // The records due by now at `rate`, checked every 1 ms.
                    let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                    while sent < due {
                        let stamp = now_ms();
                        send(
                            &producer,
                            &topic,
                            format!("key-{}", sent % KEYS as u64).as_bytes(),
                            &value,
                            stamp,
                        )?;
                        sent += 1;
                        let (from, until) = (
                            window[0].load(Ordering::SeqCst),
                            window[1].load(Ordering::SeqCst),
                        );
                        if (from..until).contains(&stamp) {
                            timed += 1;
                        }
                    }
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(1));
                }
                producer.flush(Duration::from_secs(30))?;
                Ok(timed)
            })?;
        Ok(Pacer { handle })
    }

    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    fn join(self) -> Result<u64> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?
    }
}

/// Waits for `warm`, then for `expected` results, and measures.
fn measure(
    child: &mut ChildProcess,
    mut counter: OutputCounter,
    expected: u64,
    broker: &BrokerProcess,
    timed: f64,
) -> Result<Measured> {
    let started = Instant::now();
    let mut warm: Option<(Instant, f64, f64)> = None;
    loop {
        if started.elapsed() > RUN_TIMEOUT {
            bail!(
                "{} of {expected} results after {} s (warm: {})",
                counter.progress(),
                RUN_TIMEOUT.as_secs(),
                warm.is_some()
            );
        }
        if let Some(status) = child.exited()? {
            bail!(
                "exited ({status}) with {} of {expected} results",
                counter.progress()
            );
        }
        for line in child.new_lines() {
            if line.starts_with("warm ") && warm.is_none() {
                warm = Some((
                    Instant::now(),
                    cpu_seconds(child.pid())?,
                    broker.cpu_seconds()?,
                ));
            }
        }
        counter.poll(Duration::from_millis(20))?;
        if counter.progress() >= expected {
            let Some((at, cpu, broker_cpu)) = warm else {
                bail!("all {expected} results arrived before the warm-up mark");
            };
            let elapsed = at.elapsed().as_secs_f64();
            let cpu = cpu_seconds(child.pid())? - cpu;
            let broker_cpu = broker.cpu_seconds()? - broker_cpu;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            return Ok(Measured {
                rate: timed / elapsed,
                per_cpu_second: timed / cpu.max(0.01),
                peak_rss_mib: peak_rss_mib(child.pid())?,
                broker_cpu_pct: 100.0 * broker_cpu / (elapsed * cores),
            });
        }
    }
}

/// Counts the records arriving on a topic after a point (read_committed).
struct OutputCounter {
    consumer: BaseConsumer,
    seen: u64,
    /// For windowed metrics (EventMart's JSON): what their latest counts add up to.
    windows: Option<WindowCounts>,
}

/// The latest count per key and window of windowed metrics, and their sum.
#[derive(Default)]
struct WindowCounts {
    latest: BTreeMap<(String, i64), i64>,
    sum: i64,
}

impl WindowCounts {
    fn note(&mut self, payload: &[u8]) -> Result<()> {
        let metric: MetricCount =
            serde_json::from_slice(payload).context("a result that is not a windowed metric")?;
        let before = self
            .latest
            .insert((metric.key, metric.window_start), metric.count)
            .unwrap_or(0);
        self.sum += metric.count - before;
        Ok(())
    }
}

/// The fields of an EventMart windowed metric the counter reads.
#[derive(serde::Deserialize)]
struct MetricCount {
    key: String,
    window_start: i64,
    count: i64,
}

impl OutputCounter {
    /// From the topic's current end on.
    fn at_end(config: &KafkaConfig, topic: &str) -> Result<Self> {
        let consumer: BaseConsumer = config
            .consumer("brook-bench-output-counter")
            .set("isolation.level", "read_committed")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            bail!("topic {topic} has no partitions");
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            // A topic just created may not have its leaders yet.
            let deadline = Instant::now() + Duration::from_secs(30);
            let high = loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                    Ok((_, high)) => break high,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("{topic}/{p}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("the end of {topic}/{p}"));
                    }
                }
            };
            tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        Ok(OutputCounter {
            consumer,
            seen: 0,
            windows: None,
        })
    }

    /// Counts what the windowed metrics on the topic add up to rather
    /// than records: a framework that caches writes one result per window
    /// and commit, one that does not, one per input record; both end with
    /// every input record counted in its window's latest result.
    fn by_window_counts(mut self) -> Self {
        self.windows = Some(WindowCounts::default());
        self
    }

    /// Results seen: records, or with [`by_window_counts`](Self::by_window_counts)
    /// the sum of the latest counts per window.
    fn progress(&self) -> u64 {
        match &self.windows {
            Some(windows) => u64::try_from(windows.sum).unwrap_or(0),
            None => self.seen,
        }
    }

    /// Reads what has arrived, calling `f` with each record's timestamp.
    fn poll_each(&mut self, wait: Duration, mut f: impl FnMut(i64)) -> Result<()> {
        let mut timeout = wait;
        while let Some(message) = self.consumer.poll(timeout) {
            let message = message.context("reading the output")?;
            self.seen += 1;
            if let Some(windows) = &mut self.windows {
                windows.note(message.payload().unwrap_or_default())?;
            }
            f(message.timestamp().to_millis().unwrap_or(0));
            timeout = Duration::ZERO;
        }
        Ok(())
    }

    fn poll(&mut self, wait: Duration) -> Result<()> {
        self.poll_each(wait, |_| {})
    }

    /// Reads what has arrived, calling `f` with each record's key, value
    /// and timestamp.
    fn poll_records(&mut self, wait: Duration, mut f: impl FnMut(&[u8], &[u8], i64)) -> Result<()> {
        let mut timeout = wait;
        while let Some(message) = self.consumer.poll(timeout) {
            let message = message.context("reading the output")?;
            self.seen += 1;
            f(
                message.key().unwrap_or_default(),
                message.payload().unwrap_or_default(),
                message.timestamp().to_millis().unwrap_or(0),
            );
            timeout = Duration::ZERO;
        }
        Ok(())
    }
}

/// A framework's process: its stdout lines on a channel, its stderr in a
/// log file.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    said: Vec<String>,
    log: PathBuf,
}

impl ChildProcess {
    fn spawn(command: &mut Command, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProcess {
            child,
            lines,
            said: Vec::new(),
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines printed since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        let fresh: Vec<String> = self.lines.try_iter().collect();
        self.said.extend(fresh.iter().cloned());
        fresh
    }

    /// Whether the process has printed a line starting `word ` so far.
    fn has_said(&mut self, word: &str) -> bool {
        self.new_lines();
        self.said
            .iter()
            .any(|l| l.split_whitespace().next() == Some(word))
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGKILL, and reaps it.
    fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 30 s.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("did not stop within 30 s of SIGTERM (killed)")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
        format!("its log ({}) ends:\n  {tail}", self.log.display())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The benchmark broker: `brook-kafka` and the JVM it starts.
struct BrokerProcess {
    child: Child,
    bootstrap: String,
}

impl BrokerProcess {
    fn start(program: &Path, dir: &Path) -> Result<Self> {
        let file = dir.join("bootstrap");
        let log = std::fs::File::create(dir.join("brook-kafka.log"))?;
        let mut child = Command::new(program)
            .arg("--bootstrap-file")
            .arg(&file)
            .env("BROOK_KAFKA_JVM_OPTS", BROKER_JVM_OPTS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && !text.trim().is_empty()
            {
                return Ok(BrokerProcess {
                    child,
                    bootstrap: text.trim().to_owned(),
                });
            }
            if let Some(status) = child.try_wait()? {
                let mut log = String::new();
                std::fs::File::open(dir.join("brook-kafka.log"))?.read_to_string(&mut log)?;
                bail!("brook-kafka exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("brook-kafka did not start within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CPU time of brook-kafka and its descendants (the JVM), seconds.
    fn cpu_seconds(&self) -> Result<f64> {
        let mut total = 0.0;
        for pid in descendants(self.child.id())? {
            // A process may end between the listing and the read.
            total += cpu_seconds(pid).unwrap_or(0.0);
        }
        Ok(total)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a child this process started and has not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> Result<Vec<u32>> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(p) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some(fields) = stat_fields(&stat)
            && let Some(ppid) = fields.get(1).and_then(|f| f.parse().ok())
        {
            parents.entry(ppid).or_default().push(p);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        out.extend(parents.get(&out[i]).into_iter().flatten());
        i += 1;
    }
    Ok(out)
}

/// The fields of /proc/<pid>/stat after the command name (field 3 on).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// User plus system CPU time of process `pid` (all its threads, finished
/// ones included), seconds.
#[allow(unsafe_code)]
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let fields = stat_fields(&stat).context("malformed /proc stat")?;
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / per_second as f64)
}

/// Peak resident set of process `pid` (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Produces one record, waiting for room in the queue.
fn send(
    producer: &BaseProducer,
    topic: &str,
    key: &[u8],
    value: &[u8],
    timestamp: i64,
) -> Result<()> {
    let record = BaseRecord::to(topic)
        .key(key)
        .payload(value)
        .timestamp(timestamp);
    brook_runtime::kafka::send_record(producer, record, Duration::from_millis(10))
        .with_context(|| format!("producing to {topic}"))
}

/// Prints a protocol line (`warm`, `running`) for the harness.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line} {}", now_ms());
    let _ = out.flush();
}

/// The options the framework children take (the Kafka Streams jar's too).
pub const CHILD_OPTIONS: [&str; 16] = [
    "workload",
    "bootstrap",
    "application-id",
    "input",
    "output",
    "table",
    "guarantee",
    "threads",
    "commit-interval-ms",
    "session-timeout-ms",
    "state-dir",
    "warmup",
    "registry",
    "schema",
    "window-grace-ms",
    "group-instance-id",
];

fn required<'a>(args: &'a Args, name: &str) -> Result<&'a str> {
    args.get(name)
        .with_context(|| format!("--{name} is required"))
}

fn client_config(args: &Args) -> Result<KafkaConfig> {
    let config = KafkaConfig::new(required(args, "bootstrap")?)
        .set_consumer(
            "session.timeout.ms",
            args.get("session-timeout-ms").unwrap_or("10000"),
        )
        .set_producer("linger.ms", "5")
        .set_producer("batch.size", "1000000")
        .set_producer("compression.type", "none")
        .set_producer("acks", "all");
    librdkafka_overrides(config, std::env::var("BROOK_BENCH_RDKAFKA").ok().as_deref())
}

/// `config` with the librdkafka properties of `spec` over it, for trying
/// client settings on brook and the raw loop (Kafka Streams and Quix do not
/// read it): `consumer.<property>=<value>` or `producer.<property>=<value>`,
/// separated by `;`.
fn librdkafka_overrides(mut config: KafkaConfig, spec: Option<&str>) -> Result<KafkaConfig> {
    for item in spec
        .unwrap_or("")
        .split(';')
        .filter(|i| !i.trim().is_empty())
    {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("BROOK_BENCH_RDKAFKA: {item:?} is not property=value"))?;
        config = match key.trim().split_once('.') {
            Some(("consumer", property)) => config.set_consumer(property, value.trim()),
            Some(("producer", property)) => config.set_producer(property, value.trim()),
            _ => bail!(
                "BROOK_BENCH_RDKAFKA: {key:?} names neither consumer.<property> nor producer.<property>"
            ),
        };
    }
    Ok(config)
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

/// `brook-bench --kafka-child 1 --workload ...`: brook's side of a run,
/// until SIGTERM.
pub fn brook_child(args: &Args) -> Result<()> {
    // Its log goes to the run's log file (stderr): info by default, as an
    // application's would; BROOK_LOG changes the filter.
    brook_apps::app::init_logging(&std::env::var("BROOK_LOG").unwrap_or_else(|_| "info".into()));
    let workload = required(args, "workload")?;
    let warmup: u64 = args.parse_or("warmup", 0)?;
    let seen = Arc::new(AtomicU64::new(0));
    let topology = if workload == "revenue_per_category" {
        use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
        let client =
            SchemaRegistryClient::new(RegistryClientConfig::new(required(args, "registry")?))?;
        let mut cfg = brook_apps::eventmart::apps::EventMartConfig::new("", client);
        cfg.grace = Duration::from_millis(args.parse_or("window-grace-ms", 30_000)?);
        brook_apps::eventmart::apps::revenue_per_category(&cfg)?
    } else {
        let seen = seen.clone();
        super::workloads::generic_topology(
            workload,
            required(args, "input")?,
            required(args, "output")?,
            args.get("table").unwrap_or("bench-table"),
            move || {
                if seen.fetch_add(1, Ordering::Relaxed) + 1 == warmup {
                    say("warm");
                }
            },
        )?
    };
    let mut config = StreamsConfig::new(required(args, "application-id")?);
    if let Some(dir) = args.get("state-dir") {
        config = config.state_dir(dir);
    }
    config.guarantee = match Guarantee::parse(args.get("guarantee").unwrap_or("at_least_once"))? {
        Guarantee::AtLeastOnce => ProcessingGuarantee::AtLeastOnce,
        Guarantee::ExactlyOnceV2 => ProcessingGuarantee::ExactlyOnceV2,
    };
    config.num_threads = args.parse_or("threads", 1)?;
    config.commit_interval = Duration::from_millis(args.parse_or("commit-interval-ms", 100)?);
    config.max_poll_records = 1_000;
    config.replication_factor = 1;
    if let Some(member) = args.get("group-instance-id") {
        // The threads' consumers join as `<application-id>-<member>-<thread>`.
        config.instance_id = member.to_owned();
        config.static_membership = true;
    }
    let cluster = Arc::new(KafkaCluster::new(client_config(args)?)?);
    let stop = stop_flag()?;
    let mut streams = KafkaStreams::new(topology, config, cluster);
    let announced = AtomicBool::new(false);
    streams.set_state_listener(move |_, new| {
        if new == StreamsState::Running && !announced.swap(true, Ordering::SeqCst) {
            say("running");
        }
    });
    streams.start()?;
    // The revenue app is EventMart's own topology, without a counting
    // step: its warm-up mark comes from the processed-records metric
    // (repartitioned purchases included, so the mark comes a little early
    // and the timed interval holds slightly more work than it is credited).
    let by_metric = workload == "revenue_per_category";
    let mut warm = !by_metric || warmup == 0;
    while !stop.load(Ordering::SeqCst) && streams.state() != StreamsState::Error {
        if !warm && streams.metrics().processed >= warmup {
            say("warm");
            warm = true;
        }
        std::thread::sleep(Duration::from_millis(if warm { 50 } else { 5 }));
    }
    // Where the time went, in the run's log: record age when processed,
    // and the commit cycle.
    for (i, t) in streams.threads_metrics().iter().enumerate() {
        let processed = t.tasks.processed.max(1);
        let commits = t.io.commits.max(1);
        eprintln!(
            "brook thread {i}: {} processed, mean age when processed {:.1} ms; {} commits, mean {:.1} ms, max {:.1} ms",
            t.tasks.processed,
            t.tasks.e2e_latency_ms_sum as f64 / processed as f64,
            t.io.commits,
            t.io.commit_nanos as f64 / commits as f64 / 1e6,
            t.io.commit_max_nanos as f64 / 1e6
        );
    }
    streams.close()?;
    if streams.state() == StreamsState::Error {
        bail!("brook failed: {}", streams.errors().join("; "));
    }
    Ok(())
}

/// `brook-bench --raw-child 1 ...`: librdkafka consuming the input and
/// producing each record unchanged, committing every commit interval
/// (exactly_once_v2: one transaction per commit, offsets inside it), until
/// SIGTERM. The ceiling for a framework's end-to-end path.
pub fn raw_child(args: &Args) -> Result<()> {
    use rdkafka::consumer::CommitMode;
    let app_id = required(args, "application-id")?;
    let input = required(args, "input")?;
    let output = required(args, "output")?;
    let warmup: u64 = args.parse_or("warmup", 0)?;
    let eos = Guarantee::parse(args.get("guarantee").unwrap_or("at_least_once"))?
        == Guarantee::ExactlyOnceV2;
    let interval = Duration::from_millis(args.parse_or("commit-interval-ms", 100)?);
    let kafka = client_config(args)?;
    let consumer: BaseConsumer = kafka
        .consumer(app_id)
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[input])?;
    let mut producer_config = kafka.producer();
    if eos {
        producer_config.set("transactional.id", app_id);
    }
    let producer: BaseProducer = producer_config.create()?;
    let timeout = Duration::from_secs(30);
    if eos {
        producer.init_transactions(timeout)?;
        producer.begin_transaction()?;
    }
    let stop = stop_flag()?;
    let mut seen = 0u64;
    let mut last_commit = Instant::now();
    let mut pending = false;
    let mut phases: Vec<(Duration, Duration)> = Vec::new();
    say("running");
    while !stop.load(Ordering::SeqCst) {
        if let Some(message) = consumer.poll(Duration::from_millis(10)) {
            let message = message.context("consuming")?;
            let mut record = BaseRecord::<[u8], [u8]>::to(output);
            if let Some(ts) = message.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            if let Some(k) = message.key() {
                record = record.key(k);
            }
            if let Some(v) = message.payload() {
                record = record.payload(v);
            }
            brook_runtime::kafka::send_record(&producer, record, Duration::from_micros(200))
                .context("producing")?;
            seen += 1;
            pending = true;
            if seen == warmup {
                say("warm");
            }
        }
        producer.poll(Duration::ZERO);
        if pending && last_commit.elapsed() >= interval {
            let positions = consumer.position()?;
            if eos {
                let t0 = Instant::now();
                producer.send_offsets_to_transaction(
                    &positions,
                    &consumer.group_metadata().context("no group metadata")?,
                    timeout,
                )?;
                let t1 = Instant::now();
                // rdkafka's commit_transaction flushes first with
                // `BaseProducer::flush`, whose polls last 100 ms each while
                // records are in flight; flushed before, it has nothing to
                // wait for.
                brook_runtime::kafka::flush_without_waiting(&producer, timeout)
                    .context("flushing")?;
                producer.commit_transaction(timeout)?;
                let t2 = Instant::now();
                producer.begin_transaction()?;
                phases.push((t1 - t0, t2 - t1));
            } else {
                brook_runtime::kafka::flush_without_waiting(&producer, timeout)
                    .context("flushing")?;
                consumer.commit(&positions, CommitMode::Sync)?;
            }
            last_commit = Instant::now();
            pending = false;
        }
    }
    if eos {
        producer.abort_transaction(timeout)?;
    }
    if !phases.is_empty() {
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        eprintln!(
            "raw: {} commits; median send_offsets_to_transaction {:.1} ms, flush and commit_transaction {:.1} ms",
            phases.len(),
            median(phases.iter().map(|p| p.0).collect()),
            median(phases.iter().map(|p| p.1).collect())
        );
    }
    Ok(())
}

/// One round of the real-broker group: every workload, guarantee and
/// thread count for brook and Kafka Streams, and Quix Streams and the raw
/// loop where they apply, into `samples`.
pub fn round(bench: &mut KafkaBench, samples: &mut Vec<Sample>, state_keys: usize) -> Result<()> {
    let mut push = |name: String, unit: &'static str, value: f64| match samples
        .iter_mut()
        .find(|s| s.name == name)
    {
        Some(s) => s.runs.push(value),
        None => {
            let mut s = Sample::new(name, unit);
            s.runs.push(value);
            samples.push(s);
        }
    };
    // BROOK_BENCH_KAFKA=throughput,state,latency runs only those parts
    // (for profiling and trying changes).
    let only = std::env::var("BROOK_BENCH_KAFKA").ok();
    let part = |p: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == p));
    // BROOK_BENCH_FRAMEWORKS=brook,raw and BROOK_BENCH_WORKLOADS=stateless
    // narrow them further.
    let listed = |var: &str, name: &str| {
        std::env::var(var)
            .ok()
            .is_none_or(|list| list.split(',').any(|x| x == name))
    };
    let chosen = |f: Framework| listed("BROOK_BENCH_FRAMEWORKS", f.name());
    for workload in WORKLOADS
        .into_iter()
        .filter(|w| part("throughput") && listed("BROOK_BENCH_WORKLOADS", w))
    {
        for guarantee in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnceV2] {
            let mut runs = vec![
                (Framework::Brook, 1),
                (Framework::KafkaStreams, 1),
                (Framework::Brook, 2),
                (Framework::KafkaStreams, 2),
            ];
            if workload == "stateless" {
                runs.push((Framework::Raw, 1));
            }
            if matches!(workload, "stateless" | "windowed_count") {
                runs.push((Framework::Quix, 1));
            }
            for (framework, threads) in runs.into_iter().filter(|(f, _)| chosen(*f)) {
                let m = bench
                    .run(framework, workload, guarantee, threads)
                    .with_context(|| {
                        format!(
                            "{} {workload} {} {threads} thread(s)",
                            framework.name(),
                            guarantee.flag()
                        )
                    })?;
                let name = sample_name(framework, workload, guarantee, threads);
                push(name.clone(), "records/s", m.rate);
                push(format!("{name}_per_cpu"), "records/CPU-s", m.per_cpu_second);
                push(format!("{name}_peak_rss"), "MiB", m.peak_rss_mib);
                push(format!("{name}_broker_cpu"), "% of cores", m.broker_cpu_pct);
                eprintln!(
                    "  {name}: {:.0} records/s, {:.0} per CPU-s, {:.0} MiB, broker {:.0}%",
                    m.rate, m.per_cpu_second, m.peak_rss_mib, m.broker_cpu_pct
                );
            }
        }
    }
    for framework in [Framework::Brook, Framework::KafkaStreams]
        .into_iter()
        .filter(|f| part("state") && chosen(*f))
    {
        let t = bench
            .state_runs(framework, state_keys)
            .with_context(|| format!("{} restore and recovery", framework.name()))?;
        let name = format!("kafka_state_{}", framework.name());
        push(format!("{name}_restore"), "s", t.restore_s);
        push(
            format!("{name}_recover_with_state"),
            "s",
            t.recover_with_state_s,
        );
        push(
            format!("{name}_recover_without_state"),
            "s",
            t.recover_without_state_s,
        );
        eprintln!(
            "  {name}: restore {:.1} s, recovery {:.1} s with its state, {:.1} s without",
            t.restore_s, t.recover_with_state_s, t.recover_without_state_s
        );
    }
    for framework in [
        Framework::Brook,
        Framework::KafkaStreams,
        Framework::Raw,
        Framework::Quix,
    ]
    .into_iter()
    .filter(|f| part("latency") && chosen(*f))
    {
        let l = bench
            .latency(
                framework,
                LATENCY_RATE,
                LATENCY_WARM_SECONDS,
                LATENCY_SECONDS,
            )
            .with_context(|| format!("{} latency", framework.name()))?;
        let name = latency_name(framework);
        push(format!("{name}_p50"), "ms", l.p50_ms);
        push(format!("{name}_p99"), "ms", l.p99_ms);
        push(format!("{name}_p999"), "ms", l.p999_ms);
        eprintln!(
            "  {name}: p50 {:.0} ms, p99 {:.0} ms, p99.9 {:.0} ms",
            l.p50_ms, l.p99_ms, l.p999_ms
        );
    }
    Ok(())
}

/// `kafka_latency_eos_<framework>` (then `_p50`, `_p99`, `_p999`).
fn latency_name(framework: Framework) -> String {
    format!("kafka_latency_eos_{}", framework.name())
}

/// `kafka_<workload>_<framework>_<alos|eos>_<threads>t`.
pub fn sample_name(
    framework: Framework,
    workload: &str,
    guarantee: Guarantee,
    threads: usize,
) -> String {
    format!(
        "kafka_{workload}_{}_{}_{threads}t",
        framework.name(),
        guarantee.short()
    )
}

/// The ratios and goals of the real-broker group (medians from `median`).
pub fn comparisons(median: &dyn Fn(&str) -> Option<f64>) -> Vec<super::Comparison> {
    let mut out = Vec::new();
    let mut ratio = |what: String, a: String, b: String, goal: Option<(f64, bool)>| {
        if let (Some(a), Some(b)) = (median(&a), median(&b))
            && b > 0.0
        {
            out.push(super::Comparison {
                what,
                value: a / b,
                unit: "×",
                goal,
            });
        }
    };
    for guarantee in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnceV2] {
        let g = guarantee.flag();
        for workload in WORKLOADS {
            for threads in [1, 2] {
                let brook = sample_name(Framework::Brook, workload, guarantee, threads);
                let ks = sample_name(Framework::KafkaStreams, workload, guarantee, threads);
                ratio(
                    format!("{workload} {g} {threads}t: brook / Kafka Streams, per CPU-second"),
                    format!("{brook}_per_cpu"),
                    format!("{ks}_per_cpu"),
                    Some((2.0, true)),
                );
                ratio(
                    format!("{workload} {g} {threads}t: brook / Kafka Streams, wall clock"),
                    brook.clone(),
                    ks.clone(),
                    None,
                );
                ratio(
                    format!("{workload} {g} {threads}t: brook / Kafka Streams, peak RSS"),
                    format!("{brook}_peak_rss"),
                    format!("{ks}_peak_rss"),
                    Some((0.25, false)),
                );
            }
            let brook = sample_name(Framework::Brook, workload, guarantee, 1);
            let quix = sample_name(Framework::Quix, workload, guarantee, 1);
            ratio(
                format!("{workload} {g}: brook / Quix Streams, per CPU-second"),
                format!("{brook}_per_cpu"),
                format!("{quix}_per_cpu"),
                Some((10.0, true)),
            );
            let raw = sample_name(Framework::Raw, workload, guarantee, 1);
            ratio(
                format!("{workload} {g}: brook / raw client, wall clock"),
                brook.clone(),
                raw.clone(),
                Some((0.8, true)),
            );
            ratio(
                format!("{workload} {g}: brook / raw client, per CPU-second"),
                format!("{brook}_per_cpu"),
                format!("{raw}_per_cpu"),
                None,
            );
        }
    }
    for phase in ["restore", "recover_with_state", "recover_without_state"] {
        ratio(
            format!("{phase}: Kafka Streams / brook (speed-up)"),
            format!("kafka_state_kstreams_{phase}"),
            format!("kafka_state_brook_{phase}"),
            Some((2.0, true)),
        );
    }
    for p in ["p50", "p99", "p999"] {
        ratio(
            format!("latency {p}, exactly_once_v2 at {LATENCY_RATE}/s: brook / Kafka Streams"),
            format!("{}_{p}", latency_name(Framework::Brook)),
            format!("{}_{p}", latency_name(Framework::KafkaStreams)),
            (p == "p99").then_some((1.0, false)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_start_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 1 2 3 4 250 30 0 0 20 0";
        let fields = stat_fields(stat).expect("fields");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "17", "the parent pid");
        assert_eq!((fields[11], fields[12]), ("250", "30"), "utime and stime");
        assert!(stat_fields("no parenthesis").is_none());
    }

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss_and_its_children_are_its_descendants() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("cpu");
        // Busy until the kernel has charged a tick (10 s at most).
        let started = Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me).expect("cpu") <= before && started.elapsed() < Duration::from_secs(10)
        {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(
            cpu_seconds(me).expect("cpu") > before,
            "no CPU time charged"
        );
        assert!(peak_rss_mib(me).expect("rss") > 1.0);
        let mut child = Command::new("sleep").arg("5").spawn().expect("sleep");
        let found = descendants(me).expect("descendants");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.contains(&me) && found.contains(&child.id()),
            "{found:?}"
        );
    }

    #[test]
    fn client_overrides_go_to_the_client_kind_they_name_and_bad_ones_are_refused() {
        let base = || KafkaConfig::new("b:1").set_producer("linger.ms", "5");
        let config = librdkafka_overrides(
            base(),
            Some("consumer.fetch.wait.max.ms=10; producer.linger.ms = 1;"),
        )
        .unwrap();
        assert_eq!(config.consumer("g").get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(config.producer().get("fetch.wait.max.ms"), None);
        assert_eq!(config.producer().get("linger.ms"), Some("1"));
        assert!(librdkafka_overrides(base(), None).is_ok());
        for bad in ["linger.ms=1", "producer.linger.ms", "admin.x=1"] {
            let e = librdkafka_overrides(base(), Some(bad)).unwrap_err();
            assert!(e.to_string().contains("BROOK_BENCH_RDKAFKA"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_goals_compare_medians_of_the_same_run_each_way_round() {
        let medians: BTreeMap<String, f64> = [
            ("kafka_stateless_brook_eos_1t_per_cpu", 300_000.0),
            ("kafka_stateless_kstreams_eos_1t_per_cpu", 100_000.0),
            ("kafka_stateless_brook_eos_1t_peak_rss", 60.0),
            ("kafka_stateless_kstreams_eos_1t_peak_rss", 300.0),
            ("kafka_state_brook_restore", 2.0),
            ("kafka_state_kstreams_restore", 3.0),
            ("kafka_latency_eos_brook_p99", 150.0),
            ("kafka_latency_eos_kstreams_p99", 120.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let median = |n: &str| medians.get(n).copied();
        let found = comparisons(&median);
        let get = |what: &str| {
            found
                .iter()
                .find(|c| c.what == what)
                .unwrap_or_else(|| panic!("no comparison {what:?}"))
        };
        let cpu = get("stateless exactly_once_v2 1t: brook / Kafka Streams, per CPU-second");
        assert!((cpu.value - 3.0).abs() < 1e-9 && cpu.goal == Some((2.0, true)));
        let rss = get("stateless exactly_once_v2 1t: brook / Kafka Streams, peak RSS");
        assert!((rss.value - 0.2).abs() < 1e-9 && rss.goal == Some((0.25, false)));
        let restore = get("restore: Kafka Streams / brook (speed-up)");
        assert!((restore.value - 1.5).abs() < 1e-9);
        let p99 = get("latency p99, exactly_once_v2 at 10000/s: brook / Kafka Streams");
        assert!((p99.value - 1.25).abs() < 1e-9 && p99.goal == Some((1.0, false)));
        // Nothing is compared without both sides.
        assert!(found.iter().all(|c| !c.what.contains("Quix")));
    }
}
