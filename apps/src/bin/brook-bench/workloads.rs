//! The comparison workloads of `make bench`: brook's engine on the Memory
//! cluster, and the same workloads end to end next to the raw client and
//! Quix Streams on the embedded broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::thread::{StreamThread, StreamsConfig};
use brook_topology::serdes::{Json, RawBytes, Utf8};
use brook_topology::window::TimeWindows;
use brook_topology::{
    Consumed, Grouped, Headers, Joined, Materialized, Produced, StreamsBuilder, TopicSpec, Topology,
};

use super::{PARTITIONS, VALUE_BYTES};

/// What one engine run measured.
pub struct EngineRun {
    /// Records/s on one stream thread (one core).
    pub rate: f64,
    /// Per-record latency inside the engine, µs: from the poll that
    /// returned a record to its output being sent, i.e. the time to process
    /// its poll batch (every record of a batch waits for the batch).
    pub p50_us: f64,
    /// The same, 99th percentile (commits included).
    pub p99_us: f64,
}

/// The engine workloads, by name.
pub const ENGINE: [&str; 4] = [
    "stateless",
    "windowed_count",
    "stream_table_join",
    "revenue_per_category",
];

/// Keys of the generic workloads (as in the end-to-end benchmarks).
const KEYS: usize = 100;

fn input_record(topic: &str, key: String, value: Vec<u8>, timestamp: i64) -> ProducedRecord {
    ProducedRecord {
        topic: topic.to_owned(),
        partition: None,
        key: Some(key.into_bytes()),
        value: Some(value),
        timestamp,
        headers: Headers::new(),
    }
}

/// The stateless, windowed-count and join topologies (and a count per
/// key, no window: `count_distinct`) from `input` to `output`, the join's
/// table on `table`; `seen` is called on every input record.
pub fn generic_topology(
    workload: &str,
    input: &str,
    output: &str,
    table: &str,
    seen: impl Fn() + Send + Sync + 'static,
) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let input = b
        .stream(input, Consumed::with(Utf8, RawBytes))
        .peek(move |_, _| seen());
    match workload {
        "stateless" => {
            input
                .map_values(|v: Vec<u8>| v.len() as i64 + i64::from(v[0]))
                .filter(|_, n: &i64| n % 2 == 0)
                .to(output, Produced::with(Utf8, Json::<i64>::new()));
        }
        "windowed_count" => {
            input
                .group_by_key(Grouped::with(Utf8, RawBytes))
                .windowed_by(TimeWindows::tumbling(
                    Duration::from_secs(1),
                    Duration::ZERO,
                )?)
                .count(Materialized::named(
                    "bench-counts",
                    Utf8,
                    Json::<i64>::new(),
                ))
                .to_stream()
                .map(|w, c| (w.key.clone(), c.unwrap_or(0)))
                .to(output, Produced::with(Utf8, Json::<i64>::new()));
        }
        "count_distinct" => {
            input
                .group_by_key(Grouped::with(Utf8, RawBytes))
                .count(Materialized::named(
                    "bench-counts",
                    Utf8,
                    Json::<i64>::new(),
                ))
                .to_stream()
                .map_values(|c: Option<i64>| c.unwrap_or(0))
                .to(output, Produced::with(Utf8, Json::<i64>::new()));
        }
        "stream_table_join" => {
            let table = b.table(
                table,
                Consumed::with(Utf8, Utf8),
                Materialized::named("bench-table-store", Utf8, Utf8),
            );
            input
                .join(
                    &table,
                    |_, v: Vec<u8>, name: String| format!("{name}:{}", v.len()),
                    Joined::named("bench-join", Utf8, RawBytes),
                )
                .to(output, Produced::with(Utf8, Utf8));
        }
        other => bail!("no workload {other:?}"),
    }
    Ok(b.build()?)
}

/// Runs `workload` over `records` input records on one stream thread on
/// the Memory cluster, RocksDB state in a temporary directory,
/// at-least-once.
pub fn engine(workload: &str, records: usize) -> Result<EngineRun> {
    let cluster = MemoryCluster::new();
    let mut specs = vec![
        TopicSpec::new("bench-in", PARTITIONS),
        TopicSpec::new("bench-out", PARTITIONS),
        TopicSpec::new("bench-table", PARTITIONS),
    ];
    // Records processed per input record beyond the first: the revenue
    // app repartitions its purchases by category.
    let mut internal = 0u64;
    let mut output = "bench-out";
    let (topology, _registry) = if workload == "revenue_per_category" {
        let (topology, registry, cfg) = revenue_app()?;
        specs.extend(cfg.topics.topics.iter().cloned());
        cluster.create_topics(&specs)?;
        internal = load_clicks(&cluster, &cfg, records)?;
        output = "eventmart-analytics";
        (topology, Some(registry))
    } else {
        cluster.create_topics(&specs)?;
        for k in 0..KEYS {
            cluster.produce(input_record(
                "bench-table",
                format!("key-{k}"),
                format!("customer {k}").into_bytes(),
                0,
            ))?;
        }
        (
            generic_topology(workload, "bench-in", "bench-out", "bench-table", || {})?,
            None,
        )
    };
    let dir = tempfile::tempdir()?;
    let mut config = StreamsConfig::new("bench").state_dir(dir.path());
    config.max_poll_records = 1_000;
    config.commit_interval = Duration::from_millis(100);
    let mut thread = StreamThread::new(&Arc::new(topology), config, &cluster, |_| true, 0)?;
    // The table (join) is loaded before the input is written and timed:
    // brook does not yet hold back a task's records until its other
    // partitions have caught up (Kafka Streams' task idling), so a stream
    // read ahead of its table would find it empty.
    let table_records = if workload == "stream_table_join" {
        KEYS as u64
    } else {
        0
    };
    let mut now = 0;
    while thread.metrics().processed < table_records {
        now += 1;
        thread.run_once(now)?;
    }
    if workload != "revenue_per_category" {
        let value = vec![b'x'; VALUE_BYTES];
        for i in 0..records {
            cluster.produce(input_record(
                "bench-in",
                format!("key-{}", i % KEYS),
                value.clone(),
                i as i64,
            ))?;
        }
    }
    let target = records as u64 + table_records + internal;
    let mut batches: Vec<(Duration, usize)> = Vec::new();
    let started = Instant::now();
    while thread.metrics().processed < target {
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "{workload}: processed {} of {target} in 600 s",
                thread.metrics().processed
            );
        }
        now += 1;
        let t = Instant::now();
        let polled = thread.run_once(now)?;
        if polled > 0 {
            batches.push((t.elapsed(), polled));
        }
    }
    thread.commit()?;
    let elapsed = started.elapsed().as_secs_f64();
    // Per record: each record waits for its batch.
    let mut per_record: Vec<f64> = Vec::with_capacity(records);
    for (took, n) in &batches {
        per_record.extend(std::iter::repeat_n(took.as_secs_f64() * 1e6, *n));
    }
    per_record.sort_by(f64::total_cmp);
    let pct = |p: f64| per_record[((per_record.len() as f64 - 1.0) * p) as usize];
    let out = cluster.records(output)?.len();
    if out == 0 {
        bail!(
            "{workload}: no output ({} processed, {} dead letters)",
            thread.metrics().processed,
            cluster
                .records("bench-dead-letters")
                .map(|r| r.len())
                .unwrap_or(0)
        );
    }
    thread.close()?;
    Ok(EngineRun {
        rate: records as f64 / elapsed,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    })
}

/// EventMart's revenue-per-category app with an in-process registry.
fn revenue_app() -> Result<(
    Topology,
    brook_schemas::server::RegistryServer,
    brook_apps::eventmart::apps::EventMartConfig,
)> {
    use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
    let server = brook_schemas::server::RegistryServer::start_in_memory()?;
    let client = SchemaRegistryClient::new(RegistryClientConfig::new(server.url()))?;
    let cfg = brook_apps::eventmart::apps::EventMartConfig::new("", client);
    let topology = brook_apps::eventmart::apps::revenue_per_category(&cfg)?;
    Ok((topology, server, cfg))
}

/// `records` v2 click events from EventMart's generator, Avro-encoded;
/// returns how many are purchases (the app repartitions those).
fn load_clicks(
    cluster: &MemoryCluster,
    cfg: &brook_apps::eventmart::apps::EventMartConfig,
    records: usize,
) -> Result<u64> {
    use brook_apps::eventmart::generator::{
        Encoder, Generated, Generator, GeneratorConfig, SchemaMode,
    };
    let encoder = Encoder::new(cfg.registry.clone());
    let mut generator = Generator::new(GeneratorConfig {
        schema: SchemaMode::V2,
        users: 1_000,
        ..GeneratorConfig::default()
    });
    let mut n = 0;
    let mut purchases = 0;
    let mut t = 1_795_000_000_000;
    while n < records {
        t += 5;
        let e = generator.next(t);
        if let Generated::Click(c) = &e {
            if c.as_v2().event_type == brook_schemas::events::ecommerce::EventType::Purchase {
                purchases += 1;
            }
            cluster.produce(input_record(
                brook_schemas::events::ecommerce::TOPIC,
                e.key().to_owned(),
                encoder.encode(&e)?,
                e.timestamp(),
            ))?;
            n += 1;
        }
    }
    Ok(purchases)
}

/// The raw client's ceiling for the broker path: an assigned librdkafka
/// consumer reading `input` and a producer writing each record to
/// `output`, no processing; records/s from the first record read until
/// all are written and flushed, and records per CPU-second of its threads
/// (this one and the clients'; not the broker's).
pub fn raw_loop(bootstrap: &str, input: &str, output: &str, records: usize) -> Result<Throughput> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let mut cpu = CpuMeter::new()?;
    let kafka = brook_runtime::kafka::KafkaConfig::new(bootstrap).set_producer("linger.ms", "5");
    let consumer: BaseConsumer = kafka.consumer("raw-loop").create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: BaseProducer = kafka.producer().create()?;
    let started = Instant::now();
    let mut first = None;
    let mut n = 0;
    while n < records {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("raw loop: {n} of {records} in 300 s");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.context("raw loop: consuming")?;
        if first.is_none() {
            first = Some(Instant::now());
            cpu.start()?;
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(output);
        if let Some(k) = message.key() {
            record = record.key(k);
        }
        if let Some(v) = message.payload() {
            record = record.payload(v);
        }
        // As brook's producer waits for room.
        brook_runtime::kafka::send_record(&producer, record, Duration::from_micros(200))
            .context("raw loop: producing")?;
        n += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("raw loop: flushing")?;
    let from = first.unwrap_or(started);
    Ok(Throughput {
        rate: records as f64 / from.elapsed().as_secs_f64(),
        per_cpu_second: records as f64 / cpu.seconds()?,
    })
}

/// Quix Streams (`bench/quix_bench.py` in the bench venv) on `workload`
/// (`stateless` or `windowed`): records/s as it reports them.
pub fn quix(
    bootstrap: &str,
    workload: &str,
    input: &str,
    output: &str,
    records: usize,
) -> Result<Throughput> {
    let python =
        std::env::var_os("BROOK_BENCH_PYTHON").map_or_else(bench_python, std::path::PathBuf::from);
    let python = python.display().to_string();
    let script = std::env::var("BROOK_BENCH_QUIX").unwrap_or_else(|_| "bench/quix_bench.py".into());
    let out = std::process::Command::new(&python)
        .args([
            &script,
            workload,
            bootstrap,
            input,
            output,
            &records.to_string(),
        ])
        .output()
        .with_context(|| {
            format!("running {python} {script} (`scripts/install-python.sh bench` installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "quix {workload} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no result line from quix")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    if v["records"].as_u64() != Some(records as u64) {
        bail!("quix {workload} processed {} of {records}", v["records"]);
    }
    Ok(Throughput {
        rate: v["records_per_second"]
            .as_f64()
            .context("records_per_second")?,
        per_cpu_second: v["records_per_cpu_second"]
            .as_f64()
            .context("records_per_cpu_second")?,
    })
}

/// The bench venv's python (`scripts/install-python.sh bench`).
pub fn bench_python() -> std::path::PathBuf {
    let cache = std::env::var_os("BROOK_CACHE").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/brook")
        },
        std::path::PathBuf::from,
    );
    cache.join("bench-venv/bin/python")
}

/// Records/s, and records per CPU-second of the framework's threads.
pub struct Throughput {
    /// Records/s (wall clock).
    pub rate: f64,
    /// Records per second of CPU time the framework's threads used.
    pub per_cpu_second: f64,
}

/// The CPU time of the threads a run starts, and of the calling thread,
/// from [`start`](Self::start) on: the threads that already ran when it was
/// made (the in-process broker's) are not counted.
pub struct CpuMeter {
    foreign: Vec<u32>,
    at_start: std::collections::BTreeMap<u32, u64>,
}

impl CpuMeter {
    /// Notes the threads running now, but the caller's, as not the run's.
    pub fn new() -> Result<Self> {
        let caller = current_thread_id()?;
        Ok(CpuMeter {
            foreign: thread_cpu_ns()?
                .into_keys()
                .filter(|&tid| tid != caller)
                .collect(),
            at_start: std::collections::BTreeMap::new(),
        })
    }

    /// Starts counting.
    pub fn start(&mut self) -> Result<()> {
        self.at_start = thread_cpu_ns()?;
        Ok(())
    }

    /// The run's CPU time since [`start`](Self::start), seconds (at least 1 ns).
    pub fn seconds(&self) -> Result<f64> {
        let ns: u64 = thread_cpu_ns()?
            .into_iter()
            .filter(|(tid, _)| !self.foreign.contains(tid))
            .map(|(tid, ns)| ns.saturating_sub(self.at_start.get(&tid).copied().unwrap_or(0)))
            .sum();
        Ok(ns.max(1) as f64 / 1e9)
    }
}

/// The calling thread's id (Linux: `/proc/thread-self`).
fn current_thread_id() -> Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no thread id in {}", link.display()))
}

/// CPU time each of this process's threads used so far, ns, by thread id
/// (Linux: the first field of `/proc/self/task/<tid>/schedstat`).
fn thread_cpu_ns() -> Result<std::collections::BTreeMap<u32, u64>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
            && let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse().ok())
        {
            out.insert(tid, ns);
        }
    }
    Ok(out)
}
