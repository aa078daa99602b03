//! brook-bench: brook's benchmark harness (`make bench`).
//!
//! ```text
//! brook-bench [--runs N] [--records N] [--state-records N] [--out DIR]
//!             [--label TEXT] [--only GROUP,...] [--kafka-runs N]
//!             [--kafka-records N] [--kafka-warmup N]
//! ```
//!
//! `--only` runs some groups: `partition`, `mock`, `restore`, `count`,
//! `engine`, `e2e`, `baseline`, `avro`, `lake`, `kafka` (default: all).
//! `kafka` is the real-broker comparison (`kafka.rs`): brook, Kafka Streams,
//! Quix Streams and the raw librdkafka loop as processes of their own on one
//! Apache Kafka 4.4 broker, `--kafka-runs` rounds (default 3) of
//! `--kafka-warmup` (100,000) untimed then `--kafka-records` (300,000) timed
//! records per run; its restore and recovery runs hold `--state-records`
//! keys.
//!
//! Runs each benchmark `--runs` times (default 5) in one process, prints a
//! table of medians with min and max and a table of ratios and goals, and
//! writes them as Markdown, JSON and CSV under `--out` (default
//! `bench/results`); `scripts/bench.sh` then draws the chart and
//! regenerates the README's section (`bench/report.py`). The machine is
//! shared and noisy: compare medians of benchmarks run side by side in one
//! run, not numbers from different runs.
//!
//! Benchmarks:
//! - `engine_<workload>` (`workloads.rs`): stateless map/filter, 1 s
//!   window count with RocksDB, stream-table join, EventMart's revenue per
//!   category (Avro clicks from the generator), on the Memory cluster with
//!   one stream thread, each run in a fresh process after one untimed
//!   warm-up run: records/s,
//!   per-record latency (poll to output sent, batches of 1,000) p50/p99 in
//!   µs, and the process's peak RSS in MiB (the Memory cluster holding the
//!   input and output included);
//! - `raw_consume_produce_mock`: librdkafka consuming the end-to-end input
//!   and producing each record to the output, no processing: the ceiling;
//! - `quix_stateless_mock`, `quix_windowed_mock`: Quix Streams on the same
//!   broker and data (`bench/quix_bench.py`, Python from the bench venv);
//! - `murmur2_partition`: brook's Java-compatible key partitioner, keys/s;
//! - `mock_produce`: 100-byte keyed records into librdkafka's mock cluster
//!   (16 partitions, so no partition passes the mock's ~5 MiB cap) with
//!   brook's producer defaults (idempotent), records/s;
//! - `mock_produce_plain`: the same with `enable.idempotence=false`, side by
//!   side, to show what idempotence costs;
//! - `mock_consume`: reading them back with an assigned consumer, records/s;
//! - `restore_rocksdb`: rebuilding a RocksDB store from a changelog of
//!   `--state-records` records (default 1M, distinct keys, 100-byte values)
//!   on the Memory cluster, records/s;
//! - `count_rocksdb_distinct_keys`: counting `--state-records` records with
//!   distinct keys into a RocksDB store through the engine (Memory cluster,
//!   at-least-once), records/s;
//! - `rss_before_count_input_only` and `rss_after_count_1m_keys`: that
//!   count runs in a fresh process; its RSS with only the input loaded into
//!   the Memory cluster, and after counting (the store then holds one key
//!   per record), MiB; the same with twice the keys (`..._2m_keys`: memory
//!   should grow with the input held by the Memory cluster, not with the
//!   keys in RocksDB); and `rocksdb_cache_usage`: the shared block cache
//!   and memtables, MiB;
//! - `e2e_stateless_mock`, `e2e_windowed_mock` (and `..._eos`,
//!   exactly-once): brook's runtime on the Kafka
//!   adapter against the mock cluster, at-least-once, from an input topic of
//!   `--records` records to an output topic: a `map_values`, and a 1-second
//!   tumbling-window count per key (100 keys) with RocksDB state; records/s
//!   after the first poll that returned records (consumer start-up is not
//!   counted) until every record is processed and the output flushed;
//! - `e2e_<workload>_latency_p50`/`_p99`: the same topologies, at-least-once,
//!   at a steady 20,000 records/s for 3 s, each input record stamped with
//!   the wall clock when sent; an output record's latency is the time it
//!   arrives at a consumer minus that stamp (ms). Not measured for
//!   exactly-once: the mock broker does not hold back uncommitted records
//!   from read-committed consumers, so it would show at-least-once's
//!   numbers; on Kafka, exactly-once output becomes readable when its
//!   transaction commits, adding up to the commit interval (100 ms here).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_apps::eventmart::embedded::{EmbeddedBroker, EmbeddedCluster};
use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::kafka::{KafkaConfig, send_blocking};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::partition::partition_for_key;
use brook_runtime::thread::{StreamThread, StreamsConfig, ThreadOptions};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

mod kafka;
mod workloads;

const USAGE: &str = "usage: brook-bench [--runs N (5)] [--records N] [--state-records N]
    [--out DIR (bench/results)] [--label TEXT] [--only GROUP,... (all)]
    [--kafka-runs N (3)] [--kafka-records N] [--kafka-warmup N]
groups: partition, mock, restore, count, engine, e2e, baseline, avro, lake, kafka
environment: BROOK_BENCH_BROKER, BROOK_BENCH_KSTREAMS_JAR, BROOK_BENCH_PYTHON, BROOK_BENCH_QUIX,
    BROOK_BENCH_CLICK_SCHEMA (programs the kafka group runs); BROOK_BENCH_KAFKA (its parts:
    throughput,state,latency), BROOK_BENCH_FRAMEWORKS (brook,kstreams,quix,raw),
    BROOK_BENCH_WORKLOADS, BROOK_BENCH_RDKAFKA (\"consumer.K=V;producer.K=V\" for brook and raw),
    BROOK_BENCH_KEEP=1 (keep the run directories), BROOK_BENCH_ENGINE
internal (the harness runs itself as a child with): --count-child N, --engine-child WORKLOAD,
    --kafka-child 1 or --raw-child 1 with --workload W --bootstrap B --application-id ID
    --input T --output T --table T --guarantee G --threads N --commit-interval-ms MS
    --session-timeout-ms MS --state-dir DIR --warmup N --registry URL --schema FILE
    --window-grace-ms MS";
pub(crate) const PARTITIONS: i32 = 16;
pub(crate) const VALUE_BYTES: usize = 100;
/// The end-to-end latency runs: input records/s (about a tenth of what
/// brook sustains end to end on the mock) and for how long.
const LATENCY_RATE: u64 = 20_000;
const LATENCY_SECONDS: u64 = 3;

struct Sample {
    name: String,
    unit: &'static str,
    /// Throughput of each run, in `unit`.
    runs: Vec<f64>,
}

impl Sample {
    fn new(name: impl Into<String>, unit: &'static str) -> Self {
        Sample {
            name: name.into(),
            unit,
            runs: Vec::new(),
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut runs = self.runs.clone();
        runs.sort_by(f64::total_cmp);
        runs
    }

    fn median(&self) -> f64 {
        let runs = self.sorted();
        let mid = runs.len() / 2;
        if runs.len() % 2 == 1 {
            runs[mid]
        } else {
            (runs[mid - 1] + runs[mid]) / 2.0
        }
    }
}

/// Every option, the harness's own and its children's.
fn options() -> Vec<&'static str> {
    [
        "runs",
        "records",
        "state-records",
        "out",
        "label",
        "count-child",
        "engine-child",
        "kafka-child",
        "raw-child",
        "kafka-records",
        "kafka-warmup",
        "kafka-runs",
        "only",
    ]
    .into_iter()
    .chain(kafka::CHILD_OPTIONS)
    .collect()
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), &options(), USAGE) {
        Ok(args) => args,
        Err(error) if error.is::<brook_apps::args::HelpRequested>() => {
            println!("{USAGE}");
            return;
        }
        Err(error) => {
            eprintln!("brook-bench: {error:#}");
            std::process::exit(2);
        }
    };
    // The count benchmark runs in a child process of its own, so its RSS
    // is not that of the allocator after the other benchmarks.
    if let Some(n) = args.get("count-child") {
        match n
            .parse::<usize>()
            .map_err(anyhow::Error::from)
            .and_then(bench_count)
        {
            Ok((rate, before, after, cache)) => {
                println!("{rate} {before} {after} {cache}");
                return;
            }
            Err(error) => {
                eprintln!("brook-bench: {error:#}");
                std::process::exit(1);
            }
        }
    }
    // Each engine run, too: its peak RSS is its own. A first, untimed run
    // warms the process up (the allocator's heap, the pages it touches), as
    // the runs of a long-lived process are; the second is measured.
    if let Some(workload) = args.get("engine-child") {
        let run = args
            .parse_or("records", 200_000)
            .and_then(|records| {
                workloads::engine(workload, records)?;
                workloads::engine(workload, records)
            })
            .and_then(|r| Ok((r, status_mib("VmHWM:")?)));
        match run {
            Ok((r, peak)) => {
                println!("{} {} {} {peak}", r.rate, r.p50_us, r.p99_us);
                return;
            }
            Err(error) => {
                eprintln!("brook-bench: {error:#}");
                std::process::exit(1);
            }
        }
    }
    // The real-broker group's framework processes.
    for (mode, child) in [
        ("kafka-child", kafka::brook_child as fn(&Args) -> Result<()>),
        ("raw-child", kafka::raw_child),
    ] {
        if args.get(mode).is_some() {
            if let Err(error) = child(&args) {
                eprintln!("brook-bench --{mode}: {error:#}");
                std::process::exit(1);
            }
            return;
        }
    }
    if let Err(error) = run(&args) {
        eprintln!("brook-bench: {error:#}");
        std::process::exit(1);
    }
}

/// Runs engine workload `workload` in a fresh process: records/s, p50 and
/// p99 latency (µs), and the process's peak RSS (MiB).
fn engine_in_child(workload: &str, records: usize) -> Result<[f64; 4]> {
    let records = records.to_string();
    in_child(
        &["--engine-child", workload, "--records", &records],
        &format!("engine workload {workload}"),
    )
}

/// Runs this binary with `args` (a `--*-child` mode) and reads the `N`
/// numbers it prints.
fn in_child<const N: usize>(args: &[&str], what: &str) -> Result<[f64; N]> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .with_context(|| format!("running the {what}"))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let v: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {text:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("unexpected output {text:?}"))
}

fn run(args: &Args) -> Result<()> {
    let runs: usize = args.parse_or("runs", 5)?;
    let records: usize = args.parse_or("records", 200_000)?;
    let state_records: usize = args.parse_or("state-records", 1_000_000)?;
    if runs == 0 || records == 0 || state_records == 0 {
        bail!("--runs, --records and --state-records must be positive");
    }
    let out_dir = args.get("out").unwrap_or("bench/results").to_owned();
    let label = args.get("label").unwrap_or("unlabelled").to_owned();

    let mut partition = Sample::new("murmur2_partition", "keys/s");
    let mut produce = Sample::new("mock_produce", "records/s");
    let mut produce_plain = Sample::new("mock_produce_plain", "records/s");
    let mut consume = Sample::new("mock_consume", "records/s");
    let mut restore = Sample::new("restore_rocksdb", "records/s");
    let mut count = Sample::new("count_rocksdb_distinct_keys", "records/s");
    let mut rss_before = Sample::new("rss_before_count_input_only", "MiB");
    let mut rss = Sample::new("rss_after_count_1m_keys", "MiB");
    let mut rss_before2 = Sample::new("rss_before_count_2x_input_only", "MiB");
    let mut rss2 = Sample::new("rss_after_count_2m_keys", "MiB");
    let mut cache = Sample::new("rocksdb_cache_usage", "MiB");
    let mut engine: Vec<[Sample; 4]> = workloads::ENGINE
        .iter()
        .map(|w| {
            [
                Sample::new(format!("engine_{w}"), "records/s"),
                Sample::new(format!("engine_{w}_latency_p50"), "µs"),
                Sample::new(format!("engine_{w}_latency_p99"), "µs"),
                Sample::new(format!("engine_{w}_peak_rss"), "MiB"),
            ]
        })
        .collect();
    let mut e2e_stateless = Sample::new("e2e_stateless_mock", "records/s");
    let mut e2e_windowed = Sample::new("e2e_windowed_mock", "records/s");
    let mut e2e_stateless_eos = Sample::new("e2e_stateless_mock_eos", "records/s");
    let mut e2e_windowed_eos = Sample::new("e2e_windowed_mock_eos", "records/s");
    let mut e2e_latency: Vec<[Sample; 2]> = ["stateless", "windowed"]
        .iter()
        .map(|w| {
            [
                Sample::new(format!("e2e_{w}_latency_p50"), "ms"),
                Sample::new(format!("e2e_{w}_latency_p99"), "ms"),
            ]
        })
        .collect();
    let mut raw_loop = Sample::new("raw_consume_produce_mock", "records/s");
    let mut quix_stateless = Sample::new("quix_stateless_mock", "records/s");
    let mut quix_windowed = Sample::new("quix_windowed_mock", "records/s");
    // Records per CPU-second: brook's threads (not the mock broker's) and
    // the Quix process's.
    let mut per_cpu: [Sample; 5] = [
        "e2e_stateless_mock",
        "e2e_windowed_mock",
        "raw_consume_produce_mock",
        "quix_stateless_mock",
        "quix_windowed_mock",
    ]
    .map(|n| Sample::new(format!("{n}_per_cpu"), "records/CPU-s"));
    let mut avro_encode = Sample::new("avro_encode_user_event_v2", "records/s");
    let mut avro_decode = Sample::new("avro_decode_v2_as_v2", "records/s");
    let mut avro_resolve = Sample::new("avro_decode_v1_as_v2_resolving", "records/s");
    let mut json_decode = Sample::new("json_decode_user_event_v2", "records/s");
    let mut lake = Sample::new("lake_sink_parquet_local_eos", "records/s");
    let mut lake_bytes = Sample::new("lake_parquet_bytes_per_record", "B");
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("customer-{i:08}")).collect();
    let only: Option<Vec<String>> = args
        .get("only")
        .map(|o| o.split(',').map(str::to_owned).collect());
    let groups = [
        "partition",
        "mock",
        "restore",
        "count",
        "engine",
        "e2e",
        "baseline",
        "avro",
        "lake",
        "kafka",
    ];
    if let Some(unknown) = only
        .iter()
        .flatten()
        .find(|g| !groups.contains(&g.as_str()))
    {
        bail!("--only {unknown:?}: groups are {}", groups.join(", "));
    }
    let want = |group: &str| only.as_ref().is_none_or(|o| o.iter().any(|g| g == group));
    for run in 1..=runs {
        if want("partition") {
            partition.runs.push(bench_partition(&keys));
        }
        if want("mock") {
            let (p, c) =
                bench_mock_roundtrip(records, true).with_context(|| format!("run {run}"))?;
            produce.runs.push(p);
            consume.runs.push(c);
            let (p, _) =
                bench_mock_roundtrip(records, false).with_context(|| format!("run {run}"))?;
            produce_plain.runs.push(p);
        }
        if want("restore") {
            restore
                .runs
                .push(bench_restore(state_records).with_context(|| format!("run {run}: restore"))?);
        }
        if want("count") {
            let (rate, before, after, used) =
                count_in_child(state_records).with_context(|| format!("run {run}: count"))?;
            count.runs.push(rate);
            rss_before.runs.push(before);
            rss.runs.push(after);
            cache.runs.push(used);
            let (_, before, after, _) = count_in_child(2 * state_records)
                .with_context(|| format!("run {run}: count twice the keys"))?;
            rss_before2.runs.push(before);
            rss2.runs.push(after);
        }
        if want("engine") {
            // BROOK_BENCH_ENGINE=stateless,... runs only those (for profiling).
            let only_engine = std::env::var("BROOK_BENCH_ENGINE").ok();
            for (w, samples) in workloads::ENGINE.iter().zip(engine.iter_mut()) {
                if only_engine
                    .as_deref()
                    .is_some_and(|o| !o.split(',').any(|x| x == *w))
                {
                    continue;
                }
                let measured = engine_in_child(w, records)
                    .with_context(|| format!("run {run}: engine {w}"))?;
                for (sample, value) in samples.iter_mut().zip(measured) {
                    sample.runs.push(value);
                }
            }
        }
        if want("e2e") {
            let [e2e_stateless_cpu, e2e_windowed_cpu, _, _, _] = &mut per_cpu;
            for (sample, cpu, windowed, eos) in [
                (&mut e2e_stateless, Some(e2e_stateless_cpu), false, false),
                (&mut e2e_windowed, Some(e2e_windowed_cpu), true, false),
                (&mut e2e_stateless_eos, None, false, true),
                (&mut e2e_windowed_eos, None, true, true),
            ] {
                let r = bench_e2e(records, windowed, eos)
                    .with_context(|| format!("run {run}: {}", sample.name))?;
                sample.runs.push(r.rate);
                if let Some(cpu) = cpu {
                    cpu.runs.push(r.per_cpu_second);
                }
            }
            for (windowed, samples) in [false, true].into_iter().zip(e2e_latency.iter_mut()) {
                let latency = bench_e2e_latency(windowed, LATENCY_RATE, LATENCY_SECONDS)
                    .with_context(|| format!("run {run}: {}", samples[0].name))?;
                samples[0].runs.push(latency.p50_ms);
                samples[1].runs.push(latency.p99_ms);
            }
        }
        if want("baseline") {
            let (mock, bootstrap) = mock_with_input(records, &[("e2e-out", PARTITIONS)])?;
            let r = workloads::raw_loop(&bootstrap, "e2e-in", "e2e-out", records)
                .with_context(|| format!("run {run}: raw loop"))?;
            raw_loop.runs.push(r.rate);
            let [_, _, raw_cpu, quix_stateless_cpu, quix_windowed_cpu] = &mut per_cpu;
            raw_cpu.runs.push(r.per_cpu_second);
            for (sample, cpu, workload) in [
                (&mut quix_stateless, quix_stateless_cpu, "stateless"),
                (&mut quix_windowed, quix_windowed_cpu, "windowed"),
            ] {
                let r = workloads::quix(&bootstrap, workload, "e2e-in", "e2e-out", records)
                    .with_context(|| format!("run {run}: {}", sample.name))?;
                sample.runs.push(r.rate);
                cpu.runs.push(r.per_cpu_second);
            }
            drop(mock);
        }
        if want("avro") {
            let (enc, dec, res, json) =
                bench_avro(records).with_context(|| format!("run {run}: avro serde"))?;
            avro_encode.runs.push(enc);
            avro_decode.runs.push(dec);
            avro_resolve.runs.push(res);
            json_decode.runs.push(json);
        }
        if want("lake") {
            let (rate, per_record) =
                bench_lake(records).with_context(|| format!("run {run}: lake sink"))?;
            lake.runs.push(rate);
            lake_bytes.runs.push(per_record);
        }
        eprintln!("run {run}/{runs} done");
    }

    // The real-broker group: its own broker, rounds and figures.
    let mut kafka_samples = Vec::new();
    if want("kafka") {
        let kafka_runs: usize = args.parse_or("kafka-runs", 3)?;
        let kafka_records: usize = args.parse_or("kafka-records", 300_000)?;
        let kafka_warmup: usize = args.parse_or("kafka-warmup", 100_000)?;
        if kafka_runs == 0 || kafka_records == 0 || kafka_warmup == 0 {
            bail!("--kafka-runs, --kafka-records and --kafka-warmup must be positive");
        }
        let mut bench =
            kafka::KafkaBench::start(kafka::Programs::locate()?, kafka_warmup, kafka_records)
                .context("starting the real-broker benchmarks")?;
        eprintln!(
            "kafka: broker at {}, {kafka_warmup} warm-up + {kafka_records} timed records per run",
            bench.bootstrap()
        );
        for round in 1..=kafka_runs {
            kafka::round(&mut bench, &mut kafka_samples, state_records)
                .with_context(|| format!("kafka round {round}"))?;
            eprintln!("kafka round {round}/{kafka_runs} done");
        }
    }

    let mut samples = vec![
        partition,
        produce,
        produce_plain,
        consume,
        restore,
        count,
        rss_before,
        rss,
        rss_before2,
        rss2,
        cache,
        e2e_stateless,
        e2e_windowed,
        e2e_stateless_eos,
        e2e_windowed_eos,
    ];
    samples.extend(e2e_latency.into_iter().flatten());
    samples.extend([raw_loop, quix_stateless, quix_windowed]);
    samples.extend(per_cpu);
    samples.extend([
        avro_encode,
        avro_decode,
        avro_resolve,
        json_decode,
        lake,
        lake_bytes,
    ]);
    samples.extend(engine.into_iter().flatten());
    samples.extend(kafka_samples);
    let samples: Vec<Sample> = samples.into_iter().filter(|s| !s.runs.is_empty()).collect();
    let mut table = render_table(&samples, runs, records, &label);
    let comparisons = compare(&samples);
    if !comparisons.is_empty() {
        table.push_str(&render_comparisons(&comparisons));
    }
    println!("{table}");
    write_results(
        &out_dir,
        &samples,
        &comparisons,
        &table,
        runs,
        records,
        &label,
    )
}

/// One ratio or goal: `what` = `value` (a ratio of medians, or a measured
/// median) against `goal` (`None`: reported only).
struct Comparison {
    what: String,
    value: f64,
    unit: &'static str,
    goal: Option<(f64, bool)>,
}

/// Ratios of medians measured side by side in this run, and the goals of
/// the performance issue. `bool` in a goal: higher is better.
fn compare(samples: &[Sample]) -> Vec<Comparison> {
    let median = |name: &str| samples.iter().find(|s| s.name == name).map(Sample::median);
    let mut out = Vec::new();
    let mut ratio = |what: &str, a: &str, b: &str, goal: Option<f64>| {
        if let (Some(a), Some(b)) = (median(a), median(b))
            && b > 0.0
        {
            out.push(Comparison {
                what: what.to_owned(),
                value: a / b,
                unit: "×",
                goal: goal.map(|g| (g, true)),
            });
        }
    };
    ratio(
        "e2e stateless: brook / raw client",
        "e2e_stateless_mock",
        "raw_consume_produce_mock",
        Some(0.8),
    );
    ratio(
        "e2e windowed count: brook / raw client",
        "e2e_windowed_mock",
        "raw_consume_produce_mock",
        Some(0.8),
    );
    // Per core: records per CPU-second of each framework's threads. The
    // wall-clock ratios below are capped by the broker both share (the raw
    // client's ratio to Quix is the most any client can show there).
    ratio(
        "e2e stateless: brook / Quix Streams, per CPU-second",
        "e2e_stateless_mock_per_cpu",
        "quix_stateless_mock_per_cpu",
        Some(10.0),
    );
    ratio(
        "e2e windowed count: brook / Quix Streams, per CPU-second",
        "e2e_windowed_mock_per_cpu",
        "quix_windowed_mock_per_cpu",
        Some(10.0),
    );
    ratio(
        "e2e stateless: brook / Quix Streams, wall clock",
        "e2e_stateless_mock",
        "quix_stateless_mock",
        None,
    );
    ratio(
        "e2e windowed count: brook / Quix Streams, wall clock",
        "e2e_windowed_mock",
        "quix_windowed_mock",
        None,
    );
    ratio(
        "raw client / Quix Streams (stateless), wall clock",
        "raw_consume_produce_mock",
        "quix_stateless_mock",
        None,
    );
    ratio(
        "raw client / Quix Streams (stateless), per CPU-second",
        "raw_consume_produce_mock_per_cpu",
        "quix_stateless_mock_per_cpu",
        None,
    );
    ratio(
        "e2e stateless: brook / raw client, per CPU-second",
        "e2e_stateless_mock_per_cpu",
        "raw_consume_produce_mock_per_cpu",
        None,
    );
    ratio(
        "e2e stateless: exactly-once / at-least-once",
        "e2e_stateless_mock_eos",
        "e2e_stateless_mock",
        None,
    );
    let mut measured = |what: &str, name: &str, unit, goal: f64, higher: bool| {
        if let Some(v) = median(name) {
            out.push(Comparison {
                what: what.to_owned(),
                value: v,
                unit,
                goal: Some((goal, higher)),
            });
        }
    };
    measured(
        "engine stateless, records/s per core",
        "engine_stateless",
        "records/s",
        2_000_000.0,
        true,
    );
    measured(
        "engine windowed count (RocksDB), records/s per core",
        "engine_windowed_count",
        "records/s",
        500_000.0,
        true,
    );
    measured(
        "restore, records/s",
        "restore_rocksdb",
        "records/s",
        500_000.0,
        true,
    );
    measured(
        "RSS with 1M keys, MiB",
        "rss_after_count_1m_keys",
        "MiB",
        512.0,
        false,
    );
    out.extend(kafka::comparisons(&median));
    out
}

fn render_comparisons(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "\n| comparison (medians, this run) | measured | goal | met |\n|---|---:|---:|---|\n",
    );
    for c in comparisons {
        let value = if c.unit == "×" {
            format!("{:.2}×", c.value)
        } else {
            format!("{:.0} {}", c.value, c.unit)
        };
        let (goal, met) = match c.goal {
            Some((g, higher)) => {
                let met = if higher { c.value >= g } else { c.value <= g };
                let g = if c.unit == "×" {
                    format!("{} {g}×", if higher { "≥" } else { "≤" })
                } else if higher {
                    format!("≥ {g:.0}")
                } else {
                    format!("≤ {g:.0}")
                };
                (g, if met { "yes" } else { "no" })
            }
            None => (String::from("—"), ""),
        };
        let _ = writeln!(out, "| {} | {value} | {goal} | {met} |", c.what);
    }
    out
}

/// The Avro serde on the seed's user_event, against an in-process registry
/// (schemas cached after the first record): encode v2, decode v2 as v2,
/// decode v1 as v2 (schema resolution), and JSON decoding of the same v2
/// events for comparison. Records/s each.
fn bench_avro(records: usize) -> Result<(f64, f64, f64, f64)> {
    use brook_connectors::avro::{AvroSerde, RegistryClientConfig, SchemaRegistryClient};
    use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
    use brook_topology::serdes::{Json, Serde};
    let server = brook_schemas::server::RegistryServer::start_in_memory()?;
    let client = SchemaRegistryClient::new(RegistryClientConfig::new(server.url()))?;
    let v1 = AvroSerde::<UserEventV1>::for_event(client.clone());
    let v2 = AvroSerde::<UserEventV2>::for_event(client);
    let event = |i: usize| UserEventV2 {
        event_id: format!("event-{i:08}"),
        user_id: format!("user_{:04}", i % 1000),
        event_type: EventType::ALL[i % 5],
        timestamp: 1_700_000_000_000 + i as i64,
        session_id: format!("session-{}", i / 10),
        product_id: Some(format!("PROD-{:03}", i % 100)),
        product_name: Some("Wireless Headphones".into()),
        price: Some(79.99),
        category: Some("Electronics".into()),
        device_type: Some(DeviceType::Mobile),
        country: Some("US".into()),
    };
    let events: Vec<UserEventV2> = (0..records).map(event).collect();
    let old: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            v1.serialize(&UserEventV1::from(e.clone()))
                .map(|b| b.unwrap_or_default())
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut new = Vec::with_capacity(records);
    for e in &events {
        new.push(v2.serialize(e)?.unwrap_or_default());
    }
    let encode = records as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for bytes in &new {
        std::hint::black_box(v2.deserialize(Some(bytes))?);
    }
    let decode = records as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for bytes in &old {
        std::hint::black_box(v2.deserialize(Some(bytes))?);
    }
    let resolve = records as f64 / started.elapsed().as_secs_f64();
    let json = Json::<UserEventV2>::new();
    let as_json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| json.serialize(e).map(|b| b.unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for bytes in &as_json {
        std::hint::black_box(json.deserialize(Some(bytes))?);
    }
    let json_rate = records as f64 / started.elapsed().as_secs_f64();
    Ok((encode, decode, resolve, json_rate))
}

/// The exactly-once lake sink on the Memory cluster: `records` EventMart
/// orders (JSON in, 16 partitions) written as zstd Parquet files to a
/// local directory, hourly Hive directories, one commit at the end (which
/// stages, commits and publishes). Returns records/s and Parquet bytes per
/// record.
fn bench_lake(records: usize) -> Result<(f64, f64)> {
    use brook_connectors::lake::sink::{LakeSinkConfig, to_lake};
    use brook_connectors::lake::{Lake, arrow_schema};
    use brook_schemas::events::Event;
    use brook_schemas::events::eventmart::{OrderEvent, OrderEventType, OrderItem};
    use brook_topology::serdes::{Json, Serde, Utf8};
    use brook_topology::{Consumed, StreamsBuilder};
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[brook_topology::TopicSpec::new("orders", PARTITIONS)])?;
    let serde = Json::<OrderEvent>::new();
    let mut producer = cluster.producer()?;
    for n in 0..records as i64 {
        let order = OrderEvent {
            event_id: format!("event-{n:08}"),
            event_type: OrderEventType::ALL[(n % 4) as usize],
            order_id: format!("order-{n:08}"),
            user_id: format!("user-{:05}", n % 10_000),
            timestamp: 1_795_471_200_000 + n * 50,
            items: vec![OrderItem {
                product_id: format!("PROD-{:03}", n % 200),
                category: ["Books", "Home", "Toys"][(n % 3) as usize].into(),
                quantity: (n % 4 + 1) as i32,
                unit_price: 9.99,
            }],
            total: 9.99 * (n % 4 + 1) as f64,
            currency: "EUR".into(),
            carrier: None,
            tracking_number: None,
        };
        producer.send(ProducedRecord {
            topic: "orders".into(),
            partition: None,
            key: Some(order.order_id.clone().into_bytes()),
            value: serde.serialize(&order)?,
            timestamp: order.timestamp,
            headers: brook_topology::Headers::new(),
        })?;
    }
    producer.flush()?;
    let dir = tempfile::tempdir()?;
    let lake = Arc::new(Lake::open(dir.path().to_str().context("path")?)?);
    let b = StreamsBuilder::new();
    let orders = b.stream("orders", Consumed::with(Utf8, Json::<OrderEvent>::new()));
    let schema = Arc::new(arrow_schema(&apache_avro::Schema::parse_str(
        OrderEvent::SCHEMA,
    )?)?);
    to_lake(
        &b,
        &orders,
        lake.clone(),
        schema,
        LakeSinkConfig::new("orders"),
    );
    let mut config = StreamsConfig::new("lake").exactly_once();
    config.max_poll_records = 10_000;
    config.commit_interval = Duration::from_secs(3600);
    let mut thread = StreamThread::new(&Arc::new(b.build()?), config, &cluster, |_| true, 0)?;
    let started = Instant::now();
    while thread.metrics().processed < records as u64 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "processed {} of {records} records in 300 s",
                thread.metrics().processed
            );
        }
        thread.run_once(1)?;
    }
    thread.commit()?;
    let rate = records as f64 / started.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    for path in lake.list("orders")? {
        bytes += std::fs::metadata(dir.path().join(&path))?.len();
    }
    Ok((rate, bytes as f64 / records as f64))
}

fn bench_partition(keys: &[String]) -> f64 {
    let started = Instant::now();
    let mut checksum = 0i64;
    for key in keys {
        checksum += i64::from(partition_for_key(key.as_bytes(), 12).unwrap_or(0));
    }
    let elapsed = started.elapsed();
    std::hint::black_box(checksum);
    keys.len() as f64 / elapsed.as_secs_f64()
}

/// Produces `records` 100-byte keyed records to a fresh mock cluster and
/// consumes them back; returns (produce, consume) records/s.
fn bench_mock_roundtrip(records: usize, idempotent: bool) -> Result<(f64, f64)> {
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    let topic = "bench";
    cluster.create_topic(topic, PARTITIONS, 1)?;
    let kafka = KafkaConfig::new(cluster.bootstrap_servers())
        .set_producer("linger.ms", "5")
        .set_producer("enable.idempotence", idempotent.to_string());
    let producer: BaseProducer = kafka.producer().create()?;
    let value = vec![b'x'; VALUE_BYTES];
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();

    let started = Instant::now();
    for i in 0..records {
        let key = &keys[i % keys.len()];
        send_blocking(&producer, topic, Some(key.as_bytes()), &value).context("producing")?;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing")?;
    let produce_rate = records as f64 / started.elapsed().as_secs_f64();

    let consumer: BaseConsumer = kafka.consumer("brook-bench").create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut got = 0;
    while got < records {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("consumed only {got} of {records} records in 120 s");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.context("consuming")?;
            got += 1;
        }
    }
    let consume_rate = records as f64 / started.elapsed().as_secs_f64();
    Ok((produce_rate, consume_rate))
}

/// The process's resident set size, MiB (Linux).
fn rss_mib() -> Result<f64> {
    status_mib("VmRSS:")
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`,
/// `VmHWM:` the peak), MiB.
fn status_mib(field: &str) -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(kib / 1024.0)
}

fn count_topology(logged: bool) -> Result<Arc<brook_topology::Topology>> {
    use brook_topology::serdes::{Json, Utf8};
    use brook_topology::{Consumed, Grouped, Materialized, StreamsBuilder};
    let b = StreamsBuilder::new();
    let materialized = Materialized::named("counts", Utf8, Json::<i64>::new());
    let materialized = if logged {
        materialized
    } else {
        materialized.without_logging()
    };
    b.stream("bench-in", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(materialized);
    Ok(Arc::new(b.build()?))
}

fn record(topic: &str, key: String, value: Vec<u8>) -> ProducedRecord {
    ProducedRecord {
        topic: topic.to_owned(),
        partition: Some(0),
        key: Some(key.into_bytes()),
        value: Some(value),
        timestamp: 0,
        headers: brook_topology::Headers::new(),
    }
}

/// Restores a RocksDB store from a changelog of `n` records with distinct
/// keys on the Memory cluster; records/s.
fn bench_restore(n: usize) -> Result<f64> {
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[
        brook_topology::TopicSpec::new("bench-in", 1),
        brook_topology::TopicSpec::new("bench-counts-changelog", 1),
    ])?;
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..n {
        cluster.produce(record(
            "bench-counts-changelog",
            format!("customer-{i:08}"),
            value.clone(),
        ))?;
    }
    let dir = tempfile::tempdir()?;
    let config = StreamsConfig::new("bench").state_dir(dir.path());
    let thread = StreamThread::with_options(
        &count_topology(true)?,
        config,
        &cluster,
        |_| true,
        0,
        ThreadOptions::default(),
    )?;
    let metrics = thread.restore_metrics();
    if metrics.records != n as u64 {
        bail!("restored {} records, expected {n}", metrics.records);
    }
    Ok(metrics.records_per_sec())
}

/// Runs [`bench_count`] in a fresh process.
fn count_in_child(n: usize) -> Result<(f64, f64, f64, f64)> {
    let [rate, before, after, cache] =
        in_child(&["--count-child", &n.to_string()], "count benchmark")?;
    Ok((rate, before, after, cache))
}

/// Counts `n` records with distinct keys into a RocksDB store; returns
/// records/s, the process RSS with the input loaded and after counting
/// (MiB), and the RocksDB cache usage (MiB).
fn bench_count(n: usize) -> Result<(f64, f64, f64, f64)> {
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[brook_topology::TopicSpec::new("bench-in", 1)])?;
    for i in 0..n {
        cluster.produce(record(
            "bench-in",
            format!("customer-{i:08}"),
            b"v".to_vec(),
        ))?;
    }
    let dir = tempfile::tempdir()?;
    let mut config = StreamsConfig::new("bench").state_dir(dir.path());
    config.max_poll_records = 10_000;
    let env = brook_state::RocksDbEnv::new(config.rocksdb);
    let before = rss_mib()?;
    let started = Instant::now();
    let mut thread = StreamThread::with_options(
        &count_topology(false)?,
        config,
        &cluster,
        |_| true,
        0,
        ThreadOptions {
            rocksdb: Some(env.clone()),
            ..ThreadOptions::default()
        },
    )?;
    let mut now = 0;
    while thread.metrics().processed < n as u64 {
        now += 1_000;
        thread.run_once(now)?;
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "counted only {} of {n} records in 600 s",
                thread.metrics().processed
            );
        }
    }
    thread.commit()?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let after = rss_mib()?;
    let cache = env.cache_usage() as f64 / (1024.0 * 1024.0);
    drop(thread);
    Ok((rate, before, after, cache))
}

/// A mock cluster with `records` 100-byte records keyed by 100 keys in
/// `e2e-in` (16 partitions) and the topics in `extra`; its bootstrap.
fn mock_with_input(records: usize, extra: &[(&str, i32)]) -> Result<(Arc<EmbeddedBroker>, String)> {
    let mock = Arc::new(EmbeddedBroker::start(1)?);
    mock.create_topic(&brook_topology::TopicSpec::new("e2e-in", PARTITIONS))?;
    for (name, partitions) in extra {
        mock.create_topic(&brook_topology::TopicSpec::new(*name, *partitions))?;
    }
    let bootstrap = mock.bootstrap().to_owned();
    let kafka = KafkaConfig::new(&bootstrap).set_producer("linger.ms", "5");
    let producer: BaseProducer = kafka.producer().create()?;
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..records {
        let key = format!("key-{}", i % 100);
        send_blocking(&producer, "e2e-in", Some(key.as_bytes()), &value).context("producing")?;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing")?;
    Ok((mock, bootstrap))
}

/// The end-to-end topology from `e2e-in` to `e2e-out`: a `map_values`,
/// or (`windowed`) a 1-second tumbling-window count per key with RocksDB
/// state.
fn e2e_topology(windowed: bool) -> Result<brook_topology::Topology> {
    use brook_topology::serdes::{Json, RawBytes, Utf8};
    use brook_topology::window::TimeWindows;
    use brook_topology::{Consumed, Grouped, Materialized, Produced, StreamsBuilder};
    let b = StreamsBuilder::new();
    let input = b.stream("e2e-in", Consumed::with(Utf8, RawBytes));
    if windowed {
        input
            .group_by_key(Grouped::with(Utf8, RawBytes))
            .windowed_by(TimeWindows::tumbling(
                Duration::from_secs(1),
                Duration::ZERO,
            )?)
            .count(Materialized::named("e2e-counts", Utf8, Json::<i64>::new()))
            .to_stream()
            .map(|w, c| (w.key.clone(), c.unwrap_or(0)))
            .to("e2e-out", Produced::with(Utf8, Json::<i64>::new()));
    } else {
        input
            .map_values(|v: Vec<u8>| v.len() as i64)
            .to("e2e-out", Produced::with(Utf8, Json::<i64>::new()));
    }
    Ok(b.build()?)
}

/// The topics of the end-to-end runs besides `e2e-in`.
const E2E_TOPICS: [(&str, i32); 3] = [
    ("e2e-out", PARTITIONS),
    ("e2e-e2e-counts-changelog", PARTITIONS),
    ("e2e-dead-letters", 1),
];

/// The end-to-end runs' stream-thread configuration.
fn e2e_config(dir: &std::path::Path, eos: bool) -> StreamsConfig {
    let mut config = StreamsConfig::new("e2e").state_dir(dir);
    if eos {
        config = config.exactly_once();
    }
    config.max_poll_records = 10_000;
    config.commit_interval = Duration::from_millis(
        std::env::var("BENCH_COMMIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );
    config
}

/// Runs a topology on the mock cluster from `records` input records to the
/// output topic: records/s, and records per CPU-second of brook's threads
/// (the stream thread and its clients' librdkafka threads; not the mock
/// broker's, which run in this process too).
fn bench_e2e(records: usize, windowed: bool, eos: bool) -> Result<workloads::Throughput> {
    // Every topic is made beforehand, as in the other runs of this group.
    let (mock, _) = mock_with_input(records, &E2E_TOPICS)?;
    // The broker's threads run already: not counted.
    let mut cpu = workloads::CpuMeter::new()?;
    let cluster = EmbeddedCluster::new(mock, |kafka| kafka.set_producer("linger.ms", "5"))?;
    let dir = tempfile::tempdir()?;
    let config = e2e_config(dir.path(), eos);
    let started = Instant::now();
    let mut thread = StreamThread::new(
        &Arc::new(e2e_topology(windowed)?),
        config,
        &cluster,
        |_| true,
        0,
    )?;
    // Timed from the first poll that returns records: consumer start-up
    // (group coordinator lookup, first fetch) is not throughput.
    let mut first: Option<(Instant, u64)> = None;
    while thread.metrics().processed < records as u64 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "processed {} of {records} records in 300 s",
                thread.metrics().processed
            );
        }
        let polled = thread.run_once(started.elapsed().as_millis() as i64)?;
        if first.is_none() && polled > 0 {
            first = Some((Instant::now(), thread.metrics().processed));
            cpu.start()?;
        }
    }
    thread.commit()?;
    // Before close: the clients' threads end with it.
    let cpu_seconds = cpu.seconds()?;
    if std::env::var("BENCH_DEBUG").is_ok() {
        let io = thread.thread_metrics();
        eprintln!(
            "commits {} total {:.0} ms max {:.1} ms, wall {:.0} ms",
            io.commits,
            io.commit_nanos as f64 / 1e6,
            io.commit_max_nanos as f64 / 1e6,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let (from, done) = first.unwrap_or((started, 0));
    let timed = (records as u64 - done).max(1) as f64;
    let rate = timed / from.elapsed().as_secs_f64();
    thread.close()?;
    Ok(workloads::Throughput {
        rate,
        per_cpu_second: timed / cpu_seconds,
    })
}

/// Milliseconds since the Unix epoch (record timestamps).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// End-to-end latency percentiles, ms.
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

/// The end-to-end workload (at-least-once) at a steady `rate` records/s
/// for `seconds`, below what the runtime can do: a producer thread writes
/// the input (each record stamped with the wall clock when it is sent),
/// brook processes it, and a consumer thread stamps each output record on
/// arrival. The
/// latency of an output record is its arrival time minus its timestamp,
/// which brook carries over from the input record (the count's updates
/// carry the timestamp of the record that made them): from the moment the
/// input was sent to the moment its result could be read, in ms.
fn bench_e2e_latency(windowed: bool, rate: u64, seconds: u64) -> Result<Latency> {
    let mock = Arc::new(EmbeddedBroker::start(1)?);
    mock.create_topic(&brook_topology::TopicSpec::new("e2e-in", PARTITIONS))?;
    for (name, partitions) in E2E_TOPICS {
        mock.create_topic(&brook_topology::TopicSpec::new(name, partitions))?;
    }
    let bootstrap = mock.bootstrap().to_owned();
    let total = rate * seconds;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The reader of the output, from its beginning.
    let reader = {
        let kafka = KafkaConfig::new(&bootstrap);
        let done = Arc::clone(&done);
        std::thread::spawn(move || -> Result<Vec<i64>> {
            let consumer: BaseConsumer = kafka
                .consumer("brook-bench-latency")
                .set("fetch.wait.max.ms", "5")
                .create()?;
            let mut assignment = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                assignment.add_partition_offset("e2e-out", p, Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            let mut latencies = Vec::new();
            let mut idle_since: Option<Instant> = None;
            loop {
                match consumer.poll(Duration::from_millis(5)) {
                    Some(message) => {
                        let message = message.context("reading the output")?;
                        let sent = message.timestamp().to_millis().unwrap_or(0);
                        latencies.push(now_ms() - sent);
                        idle_since = None;
                    }
                    None if done.load(std::sync::atomic::Ordering::Acquire) => {
                        // Everything was processed and committed: stop once
                        // nothing more arrives for a second.
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(1) {
                            return Ok(latencies);
                        }
                    }
                    None => {}
                }
            }
        })
    };

    // librdkafka's mock broker holds every fetch for the consumer's
    // fetch.wait.max.ms (500 ms by default) even when data arrives
    // meanwhile, where a real broker answers as soon as there is a byte
    // (fetch.min.bytes=1): with the default, latency here would measure the
    // mock's timer. Both consumers wait at most 5 ms.
    let cluster = EmbeddedCluster::new(mock, |kafka| {
        kafka
            .set_producer("linger.ms", "5")
            .set_consumer("fetch.wait.max.ms", "5")
    })?;
    let dir = tempfile::tempdir()?;
    let mut thread = StreamThread::new(
        &Arc::new(e2e_topology(windowed)?),
        e2e_config(dir.path(), false),
        &cluster,
        |_| true,
        0,
    )?;
    // Start-up (group join, first fetches of the application and of the
    // reader) is not latency: both run a while before the input starts.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(1500) {
        thread.run_once(now_ms())?;
    }
    // The input, paced: each millisecond tops the count up to rate × elapsed.
    let writer = {
        let kafka = KafkaConfig::new(&bootstrap).set_producer("linger.ms", "1");
        std::thread::spawn(move || -> Result<()> {
            let producer: BaseProducer = kafka.producer().create()?;
            let value = vec![b'x'; VALUE_BYTES];
            let started = Instant::now();
            let mut sent = 0u64;
            while sent < total {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due.min(total) {
                    let key = format!("key-{}", sent % 100);
                    send_blocking(&producer, "e2e-in", Some(key.as_bytes()), &value)
                        .context("producing")?;
                    sent += 1;
                }
                // Delivery reports, then a sleep (not `poll(1 ms)`, which
                // spins: this thread shares the machine with brook).
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_micros(500));
            }
            producer
                .flush(Duration::from_secs(60))
                .context("flushing")?;
            Ok(())
        })
    };

    let started = Instant::now();
    let limit = Duration::from_secs(seconds + 120);
    while thread.metrics().processed < total {
        if started.elapsed() > limit {
            done.store(true, std::sync::atomic::Ordering::Release);
            bail!(
                "processed {} of {total} records in {} s",
                thread.metrics().processed,
                limit.as_secs()
            );
        }
        thread.run_once(now_ms())?;
    }
    thread.commit()?;
    done.store(true, std::sync::atomic::Ordering::Release);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the input writer panicked"))??;
    let mut latencies = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader panicked"))??;
    thread.close()?;
    // The count drops nothing here (one partition's records arrive in
    // order), so every input has its output.
    if (latencies.len() as u64) < total {
        bail!(
            "read {} output records of {total} expected",
            latencies.len()
        );
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64;
    Ok(Latency {
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

fn render_table(samples: &[Sample], runs: usize, records: usize, label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "brook-bench {label}: {runs} runs, {records} records of {VALUE_BYTES} B over {PARTITIONS} partitions\n"
    );
    let _ = writeln!(out, "| benchmark | median | min | max | unit |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for sample in samples {
        let sorted = sample.sorted();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            sample.name,
            sample.median(),
            sorted[0],
            sorted[sorted.len() - 1],
            sample.unit
        );
    }
    out
}

fn write_results(
    dir: &str,
    samples: &[Sample],
    comparisons: &[Comparison],
    table: &str,
    runs: usize,
    records: usize,
    label: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let stem = format!("{dir}/bench-{secs}");
    let json = serde_json::json!({
        "label": label,
        "unix_time": secs,
        "runs": runs,
        "records": records,
        "value_bytes": VALUE_BYTES,
        "partitions": PARTITIONS,
        "results": samples.iter().map(|s| serde_json::json!({
            "name": s.name,
            "unit": s.unit,
            "median": s.median(),
            "runs": s.runs,
        })).collect::<Vec<_>>(),
        "comparisons": comparisons.iter().map(|c| serde_json::json!({
            "what": c.what,
            "value": c.value,
            "unit": c.unit,
            "goal": c.goal.map(|(g, _)| g),
            "higher_is_better": c.goal.map(|(_, h)| h),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(format!("{stem}.json"), serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {stem}.json"))?;
    std::fs::write(format!("{stem}.md"), table).with_context(|| format!("writing {stem}.md"))?;
    let mut csv = String::from("benchmark,unit,median,min,max,runs\n");
    for s in samples {
        let sorted = s.sorted();
        let runs: Vec<String> = s.runs.iter().map(|r| format!("{r:.1}")).collect();
        let _ = writeln!(
            csv,
            "{},{},{:.1},{:.1},{:.1},{}",
            s.name,
            s.unit,
            s.median(),
            sorted[0],
            sorted[sorted.len() - 1],
            runs.join(" ")
        );
    }
    std::fs::write(format!("{stem}.csv"), csv).with_context(|| format!("writing {stem}.csv"))?;
    eprintln!("wrote {stem}.json, {stem}.md and {stem}.csv");
    Ok(())
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = brook_apps::args::unlisted(super::USAGE, &super::options());
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
