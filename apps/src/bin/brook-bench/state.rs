//! The restore and count groups: restoring a store from its changelog, and a count's memory.

use super::*;

/// The process's resident set size, MiB (Linux).
pub(crate) fn rss_mib() -> Result<f64> {
    status_mib("VmRSS:")
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`,
/// `VmHWM:` the peak), MiB.
pub(crate) fn status_mib(field: &str) -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(kib / 1024.0)
}

pub(crate) fn count_topology(logged: bool) -> Result<Arc<brook_topology::Topology>> {
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

pub(crate) fn record(topic: &str, key: String, value: Vec<u8>) -> ProducedRecord {
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
pub(crate) fn bench_restore(n: usize) -> Result<f64> {
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
pub(crate) fn count_in_child(n: usize) -> Result<(f64, f64, f64, f64)> {
    let [rate, before, after, cache] =
        in_child(&["--count-child", &n.to_string()], "count benchmark")?;
    Ok((rate, before, after, cache))
}

/// Counts `n` records with distinct keys into a RocksDB store; returns
/// records/s, the process RSS with the input loaded and after counting
/// (MiB), and the RocksDB cache usage (MiB).
pub(crate) fn bench_count(n: usize) -> Result<(f64, f64, f64, f64)> {
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
