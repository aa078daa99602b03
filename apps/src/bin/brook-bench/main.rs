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

mod avro;
mod e2e;
mod kafka;
mod lake;
mod mock;
mod report;
mod state;
mod workloads;

use avro::*;
use e2e::*;
use lake::*;
use mock::*;
use report::*;
use state::*;

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
    --window-grace-ms MS --group-instance-id ID";
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
    let mut e2e_cached = Sample::new("e2e_windowed_cached_mock", "records/s");
    let mut e2e_cached_eos = Sample::new("e2e_windowed_cached_mock_eos", "records/s");
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
            for (sample, cpu, shape, eos) in [
                (
                    &mut e2e_stateless,
                    Some(e2e_stateless_cpu),
                    E2e::Stateless,
                    false,
                ),
                (
                    &mut e2e_windowed,
                    Some(e2e_windowed_cpu),
                    E2e::Windowed,
                    false,
                ),
                (&mut e2e_cached, None, E2e::WindowedCached, false),
                (&mut e2e_stateless_eos, None, E2e::Stateless, true),
                (&mut e2e_windowed_eos, None, E2e::Windowed, true),
                (&mut e2e_cached_eos, None, E2e::WindowedCached, true),
            ] {
                let r = bench_e2e(records, shape, eos)
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
        e2e_cached,
        e2e_cached_eos,
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

#[cfg(test)]
mod usage_tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = brook_apps::args::unlisted(super::USAGE, &super::options());
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
