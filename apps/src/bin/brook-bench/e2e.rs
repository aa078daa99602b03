//! The e2e group: brook end to end on the mock cluster (throughput and latency).

use super::*;

/// A mock cluster with `records` 100-byte records keyed by 100 keys in
/// `e2e-in` (16 partitions) and the topics in `extra`; its bootstrap.
pub(crate) fn mock_with_input(
    records: usize,
    extra: &[(&str, i32)],
) -> Result<(Arc<EmbeddedBroker>, String)> {
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

/// What the end-to-end runs compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum E2e {
    /// A `map_values`.
    Stateless,
    /// A 1-second tumbling-window count per key with RocksDB state, every
    /// update forwarded.
    Windowed,
    /// The same count with `with_caching()`: one update per key and
    /// window per commit.
    WindowedCached,
}

/// The end-to-end topology from `e2e-in` to `e2e-out`.
pub(crate) fn e2e_topology(shape: E2e) -> Result<brook_topology::Topology> {
    use brook_topology::serdes::{Json, RawBytes, Utf8};
    use brook_topology::window::TimeWindows;
    use brook_topology::{Consumed, Grouped, Materialized, Produced, StreamsBuilder};
    let b = StreamsBuilder::new();
    let input = b.stream("e2e-in", Consumed::with(Utf8, RawBytes));
    if shape == E2e::Stateless {
        input
            .map_values(|v: Vec<u8>| v.len() as i64)
            .to("e2e-out", Produced::with(Utf8, Json::<i64>::new()));
    } else {
        let store = Materialized::named("e2e-counts", Utf8, Json::<i64>::new());
        let store = if shape == E2e::WindowedCached {
            store.with_caching()
        } else {
            store
        };
        input
            .group_by_key(Grouped::with(Utf8, RawBytes))
            .windowed_by(TimeWindows::tumbling(
                Duration::from_secs(1),
                Duration::ZERO,
            )?)
            .count(store)
            .to_stream()
            .map(|w, c| (w.key.clone(), c.unwrap_or(0)))
            .to("e2e-out", Produced::with(Utf8, Json::<i64>::new()));
    }
    Ok(b.build()?)
}

/// The topics of the end-to-end runs besides `e2e-in`.
pub(crate) const E2E_TOPICS: [(&str, i32); 3] = [
    ("e2e-out", PARTITIONS),
    ("e2e-e2e-counts-changelog", PARTITIONS),
    ("e2e-dead-letters", 1),
];

/// The end-to-end runs' stream-thread configuration.
pub(crate) fn e2e_config(dir: &std::path::Path, eos: bool) -> StreamsConfig {
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
pub(crate) fn bench_e2e(records: usize, shape: E2e, eos: bool) -> Result<workloads::Throughput> {
    // Every topic is made beforehand, as in the other runs of this group.
    let (mock, _) = mock_with_input(records, &E2E_TOPICS)?;
    // The broker's threads run already: not counted.
    let mut cpu = workloads::CpuMeter::new()?;
    let cluster = EmbeddedCluster::new(mock, |kafka| kafka.set_producer("linger.ms", "5"))?;
    let dir = tempfile::tempdir()?;
    let config = e2e_config(dir.path(), eos);
    let started = Instant::now();
    let mut thread = StreamThread::new(
        &Arc::new(e2e_topology(shape)?),
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
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// End-to-end latency percentiles, ms.
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
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
pub(crate) fn bench_e2e_latency(windowed: bool, rate: u64, seconds: u64) -> Result<Latency> {
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
        &Arc::new(e2e_topology(if windowed {
            E2e::Windowed
        } else {
            E2e::Stateless
        })?),
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
