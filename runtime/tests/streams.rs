//! The `KafkaStreams` handle on the Memory cluster: lifecycle and state
//! listener, several threads in group mode, static assignment across
//! instances, the uncaught error handler's three answers, and clear errors
//! at start.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::streams::{ErrorResponse, KafkaStreams, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_topology::processor::{ProcessError, Processor, ProcessorContext};
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, Record, StreamsBuilder, TopicSpec,
};

type TestResult = Result<(), Box<dyn Error>>;

const WAIT: Duration = Duration::from_secs(30);

fn produce(cluster: &MemoryCluster, n: i64) -> TestResult {
    for i in 0..n {
        cluster.produce(ProducedRecord {
            topic: "in".into(),
            partition: None,
            key: Some(format!("k{}", i % 13).into_bytes()),
            value: Json::<i64>::new().serialize(&i)?,
            timestamp: i,
            headers: Headers::new(),
        })?;
    }
    Ok(())
}

fn cluster(partitions: i32) -> Result<MemoryCluster, Box<dyn Error>> {
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[
        TopicSpec::new("in", partitions),
        TopicSpec::new("out", partitions),
        TopicSpec::new("counts", partitions),
    ])?;
    Ok(cluster)
}

/// Echo to `out` (failing where `fail` says so) and count per key.
fn topology(
    fail: Arc<dyn Fn(i64) -> bool + Send + Sync>,
) -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let input = b.stream("in", Consumed::with(Utf8, Json::<i64>::new()));
    input
        .process(move || Poison { fail: fail.clone() })
        .to("out", Produced::with(Utf8, Json::<i64>::new()));
    input
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()))
        .to("counts", Produced::with(Utf8, Json::<i64>::new()));
    Ok(b.build()?)
}

/// Forwards values, failing on those `fail` picks.
struct Poison {
    fail: Arc<dyn Fn(i64) -> bool + Send + Sync>,
}

impl Processor<String, i64, String, i64> for Poison {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        record: Record<String, i64>,
    ) -> Result<(), ProcessError> {
        if (self.fail)(record.value) {
            return Err(ProcessError::user(format!("poison value {}", record.value)));
        }
        ctx.forward(record);
        Ok(())
    }
}

fn never() -> Arc<dyn Fn(i64) -> bool + Send + Sync> {
    Arc::new(|_| false)
}

/// Waits until `out` holds `n` records; returns them by value.
fn wait_for_output(
    cluster: &MemoryCluster,
    n: usize,
) -> Result<BTreeMap<i64, usize>, Box<dyn Error>> {
    let started = Instant::now();
    loop {
        let records = cluster.records("out")?;
        if records.len() >= n || started.elapsed() > WAIT {
            let mut seen = BTreeMap::new();
            for r in records {
                *seen
                    .entry(Json::<i64>::new().deserialize(r.record.value.as_deref())?)
                    .or_default() += 1;
            }
            return Ok(seen);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn latest_counts(cluster: &MemoryCluster) -> Result<BTreeMap<String, i64>, Box<dyn Error>> {
    let mut latest = BTreeMap::new();
    for r in cluster.records("counts")? {
        latest.insert(
            String::from_utf8(r.record.key.clone().unwrap_or_default())?,
            Json::<i64>::new().deserialize(r.record.value.as_deref())?,
        );
    }
    Ok(latest)
}

fn expected_counts(n: i64) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        *counts.entry(format!("k{}", i % 13)).or_default() += 1;
    }
    counts
}

#[test]
fn two_threads_in_group_mode_process_everything_and_report_their_states() -> TestResult {
    let cluster = cluster(4)?;
    produce(&cluster, 500)?;
    let dir = tempfile::tempdir()?;
    // Two threads share the instance's state directory (locked once).
    let mut config = StreamsConfig::new("life")
        .exactly_once()
        .state_dir(dir.path());
    config.num_threads = 2;
    let mut streams = KafkaStreams::new(topology(never())?, config, Arc::new(cluster.clone()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    streams.set_state_listener(move |old, new| log.lock().expect("lock").push((old, new)));
    assert_eq!(streams.state(), StreamsState::Created);
    streams.start()?;
    assert_eq!(
        streams.wait_for_state(StreamsState::Running, WAIT),
        StreamsState::Running
    );
    let out = wait_for_output(&cluster, 500)?;
    assert_eq!(out.len(), 500);
    assert!(out.values().all(|&n| n == 1), "exactly once");
    let started = Instant::now();
    while latest_counts(&cluster)? != expected_counts(500) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(latest_counts(&cluster)?, expected_counts(500));
    assert_eq!(streams.metrics().processed, 500);
    let text = streams.prometheus();
    let processed: f64 = text
        .lines()
        .filter(|l| l.starts_with("brook_records_processed_total{application_id=\"life\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(processed, 500.0, "{text}");
    assert!(
        text.contains("brook_state{application_id=\"life\",state=\"Running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE brook_consumer_lag_records gauge"),
        "{text}"
    );
    streams.close()?;
    assert_eq!(streams.state(), StreamsState::NotRunning);
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            (StreamsState::Created, StreamsState::Rebalancing),
            (StreamsState::Rebalancing, StreamsState::Running),
            (StreamsState::Running, StreamsState::PendingShutdown),
            (StreamsState::PendingShutdown, StreamsState::NotRunning),
        ]
    );
    assert!(streams.errors().is_empty(), "{:?}", streams.errors());
    // Nothing arrived twice, even after the threads' final commits.
    let out = wait_for_output(&cluster, 500)?;
    assert!(out.values().all(|&n| n == 1), "exactly once");
    Ok(())
}

#[test]
fn static_instances_split_the_tasks_without_rebalancing() -> TestResult {
    let cluster = cluster(4)?;
    produce(&cluster, 400)?;
    let instance = |k| -> Result<KafkaStreams, Box<dyn Error>> {
        let mut config = StreamsConfig::new("static");
        config.commit_interval = Duration::from_millis(10);
        config.num_threads = 2;
        config.static_assignment = Some((k, 2));
        config.instance_id = format!("i{k}");
        Ok(KafkaStreams::new(
            topology(never())?,
            config,
            Arc::new(cluster.clone()),
        ))
    };
    // One of two instances: half of the partitions, no more.
    let mut first = instance(0)?;
    first.start()?;
    let started = Instant::now();
    while first.metrics().processed < 200 && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let alone = cluster.records("out")?;
    assert!(
        alone.len() < 400,
        "instance 0 of 2 processed {} records",
        alone.len()
    );
    assert!(
        alone.iter().all(|r| r.record.tp.partition % 4 < 2),
        "partitions 0 and 1 only"
    );
    let mut second = instance(1)?;
    second.start()?;
    let out = wait_for_output(&cluster, 400)?;
    assert_eq!(out.len(), 400);
    first.close()?;
    second.close()?;
    Ok(())
}

#[test]
fn a_failed_thread_is_replaced_and_resumes_from_its_last_commit() -> TestResult {
    let cluster = cluster(2)?;
    produce(&cluster, 300)?;
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    let fail = Arc::new(move |v: i64| v == 150 && !flag.swap(true, Ordering::SeqCst));
    let mut config = StreamsConfig::new("replace").exactly_once();
    config.num_threads = 1;
    let mut streams = KafkaStreams::new(topology(fail)?, config, Arc::new(cluster.clone()));
    streams.set_uncaught_error_handler(|_| ErrorResponse::ReplaceThread);
    streams.start()?;
    let out = wait_for_output(&cluster, 300)?;
    assert!(
        failed_once.load(Ordering::SeqCst),
        "the poison value was hit"
    );
    assert_eq!(out.len(), 300);
    assert!(
        out.values().all(|&n| n == 1),
        "exactly once across the replacement"
    );
    let started = Instant::now();
    while latest_counts(&cluster)? != expected_counts(300) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(latest_counts(&cluster)?, expected_counts(300));
    assert_eq!(streams.errors().len(), 1);
    assert!(
        streams.errors()[0].contains("poison value 150"),
        "{:?}",
        streams.errors()
    );
    // Counters carry over the replaced thread's (they never go back): the
    // records it processed before failing count, and are processed again.
    let started = Instant::now();
    while streams.metrics().processed <= 300 && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(streams.metrics().processed > 300, "{:?}", streams.metrics());
    streams.close()?;
    assert_eq!(streams.state(), StreamsState::NotRunning);
    Ok(())
}

#[test]
fn shutting_down_the_instance_or_the_whole_application() -> TestResult {
    // Instance: the default answer.
    let cluster = cluster(2)?;
    produce(&cluster, 50)?;
    let mut streams = KafkaStreams::new(
        topology(Arc::new(|v| v == 10))?,
        StreamsConfig::new("die"),
        Arc::new(cluster.clone()),
    );
    streams.start()?;
    assert_eq!(
        streams.wait_for_state(StreamsState::Error, WAIT),
        StreamsState::Error
    );
    streams.close()?;
    assert_eq!(streams.state(), StreamsState::Error);

    // Application: the other instance stops too.
    let cluster = self::cluster(2)?;
    produce(&cluster, 50)?;
    let instance = |k: u32,
                    fail: Arc<dyn Fn(i64) -> bool + Send + Sync>|
     -> Result<KafkaStreams, Box<dyn Error>> {
        let mut config = StreamsConfig::new("app-down");
        config.static_assignment = Some((k, 2));
        config.instance_id = format!("i{k}");
        let mut streams = KafkaStreams::new(topology(fail)?, config, Arc::new(cluster.clone()));
        streams.set_uncaught_error_handler(|_| ErrorResponse::ShutdownApplication);
        Ok(streams)
    };
    let mut healthy = instance(1, never())?;
    healthy.start()?;
    assert_eq!(
        healthy.wait_for_state(StreamsState::Running, WAIT),
        StreamsState::Running
    );
    // Instance 0 owns partition 0; fail on whatever lands there.
    let mut failing = instance(0, Arc::new(|_| true))?;
    failing.start()?;
    assert_eq!(
        failing.wait_for_state(StreamsState::Error, WAIT),
        StreamsState::Error
    );
    assert_eq!(
        healthy.wait_for_state(StreamsState::Error, WAIT),
        StreamsState::Error
    );
    failing.close()?;
    healthy.close()?;
    Ok(())
}

#[test]
fn a_missing_source_topic_fails_start_with_its_name() -> TestResult {
    let cluster = MemoryCluster::new();
    let mut streams = KafkaStreams::new(
        topology(never())?,
        StreamsConfig::new("x"),
        Arc::new(cluster),
    );
    let err = streams.start().expect_err("no topic");
    assert!(
        err.to_string()
            .contains("source topic \"in\" does not exist"),
        "{err}"
    );
    assert_eq!(streams.state(), StreamsState::Created);
    Ok(())
}

#[test]
fn a_fenced_instance_stops_and_its_successor_keeps_results_exactly_once() -> TestResult {
    let cluster = cluster(2)?;
    produce(&cluster, 200)?;
    let instance = || -> Result<KafkaStreams, Box<dyn Error>> {
        let mut config = StreamsConfig::new("fence").exactly_once();
        // Both claim to be instance 0 of 1: the same transactional id.
        config.static_assignment = Some((0, 1));
        config.instance_id = "0".into();
        Ok(KafkaStreams::new(
            topology(never())?,
            config,
            Arc::new(cluster.clone()),
        ))
    };
    let mut first = instance()?;
    first.start()?;
    assert_eq!(
        first.wait_for_state(StreamsState::Running, WAIT),
        StreamsState::Running
    );
    let mut second = instance()?;
    second.start()?;
    assert_eq!(
        second.wait_for_state(StreamsState::Running, WAIT),
        StreamsState::Running
    );
    // The first one's next transaction is refused: it stops with the reason.
    let more = cluster.produce(ProducedRecord {
        topic: "in".into(),
        partition: Some(0),
        key: Some(b"late".to_vec()),
        value: Json::<i64>::new().serialize(&1_000)?,
        timestamp: 1_000,
        headers: Headers::new(),
    });
    more?;
    assert_eq!(
        first.wait_for_state(StreamsState::Error, WAIT),
        StreamsState::Error
    );
    assert!(
        first.errors().iter().any(|e| e.contains("fenced")),
        "{:?}",
        first.errors()
    );
    let out = wait_for_output(&cluster, 201)?;
    assert_eq!(out.len(), 201);
    assert!(out.values().all(|&n| n == 1), "exactly once: {out:?}");
    first.close()?;
    second.close()?;
    assert_eq!(second.state(), StreamsState::NotRunning);
    Ok(())
}

#[test]
fn instances_joining_and_leaving_under_load_keep_exactly_once() -> TestResult {
    let cluster = cluster(6)?;
    let make = |id: &str, threads: usize| -> Result<KafkaStreams, Box<dyn Error>> {
        let mut config = StreamsConfig::new("churn").exactly_once();
        config.commit_interval = Duration::from_millis(5);
        config.max_poll_records = 7;
        config.num_threads = threads;
        config.instance_id = id.into();
        Ok(KafkaStreams::new(
            topology(never())?,
            config,
            Arc::new(cluster.clone()),
        ))
    };
    let mut a = make("a", 2)?;
    a.start()?;
    let writer = {
        let cluster = cluster.clone();
        std::thread::spawn(move || -> Result<(), String> {
            for i in 0..3_000i64 {
                cluster
                    .produce(ProducedRecord {
                        topic: "in".into(),
                        partition: None,
                        key: Some(format!("k{}", i % 13).into_bytes()),
                        value: Json::<i64>::new()
                            .serialize(&i)
                            .map_err(|e| e.to_string())?,
                        timestamp: i,
                        headers: Headers::new(),
                    })
                    .map_err(|e| e.to_string())?;
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let mut b = make("b", 1)?;
    b.start()?;
    std::thread::sleep(Duration::from_millis(30));
    let mut c = make("c", 2)?;
    c.start()?;
    std::thread::sleep(Duration::from_millis(30));
    a.close()?;
    writer.join().map_err(|_| "writer panicked")??;
    let out = wait_for_output(&cluster, 3_000)?;
    std::thread::sleep(Duration::from_millis(100));
    let out_after = wait_for_output(&cluster, 3_000)?;
    assert_eq!(out.len(), 3_000);
    let twice: Vec<_> = out_after.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "exactly once: {twice:?}");
    for s in [&b, &c] {
        assert_eq!(s.state(), StreamsState::Running, "{:?}", s.errors());
    }
    let started = Instant::now();
    while latest_counts(&cluster)? != expected_counts(3_000) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(latest_counts(&cluster)?, expected_counts(3_000));
    b.close()?;
    c.close()?;
    Ok(())
}

#[test]
fn a_state_directory_in_use_fails_start_and_leaves_the_instance_created() -> TestResult {
    let cluster = cluster(1)?;
    let dir = tempfile::tempdir()?;
    let config = StreamsConfig::new("locked").state_dir(dir.path());
    let mut first = KafkaStreams::new(
        topology(never())?,
        config.clone(),
        Arc::new(cluster.clone()),
    );
    first.start()?;
    let mut second = KafkaStreams::new(topology(never())?, config, Arc::new(cluster));
    let err = second.start().expect_err("the directory is locked");
    assert!(
        brook_runtime::cluster::error_chain(&err).contains("in use by another instance"),
        "{}",
        brook_runtime::cluster::error_chain(&err)
    );
    assert_eq!(second.state(), StreamsState::Created);
    first.close()?;
    Ok(())
}

#[test]
fn a_zombie_member_is_fenced_and_rejoins_without_duplicates() -> TestResult {
    let cluster = cluster(4)?;
    let make = |id: &str| -> Result<KafkaStreams, Box<dyn Error>> {
        let mut config = StreamsConfig::new("zombie").exactly_once();
        config.commit_interval = Duration::from_millis(20);
        config.max_poll_records = 5;
        config.instance_id = id.into();
        Ok(KafkaStreams::new(
            topology(never())?,
            config,
            Arc::new(cluster.clone()),
        ))
    };
    let mut a = make("a")?;
    a.start()?;
    let mut b = make("b")?;
    b.start()?;
    assert_eq!(
        b.wait_for_state(StreamsState::Running, WAIT),
        StreamsState::Running
    );
    produce(&cluster, 400)?;
    // A stalls past its session: the group gives its partitions to B at
    // once. A's next commit is refused; it rejoins with a fresh thread.
    std::thread::sleep(Duration::from_millis(5));
    assert!(cluster.expire_member("zombie").is_some());
    let out = wait_for_output(&cluster, 400)?;
    assert_eq!(out.len(), 400);
    std::thread::sleep(Duration::from_millis(100));
    let out = wait_for_output(&cluster, 400)?;
    let twice: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "exactly once: {twice:?}");
    let started = Instant::now();
    while latest_counts(&cluster)? != expected_counts(400) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(latest_counts(&cluster)?, expected_counts(400));
    for s in [&a, &b] {
        assert_eq!(s.state(), StreamsState::Running, "{:?}", s.errors());
        assert!(
            s.errors().is_empty(),
            "a rebalance is not a failure: {:?}",
            s.errors()
        );
    }
    a.close()?;
    b.close()?;
    Ok(())
}

#[test]
fn interactive_queries_read_the_stores_of_every_thread_while_running() -> TestResult {
    let cluster = cluster(4)?;
    let mut config = StreamsConfig::new("iq");
    config.num_threads = 2;
    let mut streams = KafkaStreams::new(topology(never())?, config, Arc::new(cluster.clone()));
    let queries = streams.store_queries();
    // Not started: a clear refusal, no hang.
    assert!(matches!(
        queries.read_store::<String, i64>("counts", WAIT),
        Err(brook_runtime::streams::QueryError::NotRunning(
            StreamsState::Created
        ))
    ));
    streams.start()?;
    streams.wait_for_state(StreamsState::Running, WAIT);
    produce(&cluster, 300)?;
    let started = Instant::now();
    let mut counts = BTreeMap::new();
    while started.elapsed() < WAIT {
        counts = queries.read_store::<String, i64>("counts", WAIT)?;
        if counts == expected_counts(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Both threads' tasks, merged: every key once.
    assert_eq!(counts, expected_counts(300));
    assert_eq!(
        queries.get::<String, i64>("counts", "k3".into(), WAIT)?,
        Some(expected_counts(300)["k3"])
    );
    assert_eq!(
        queries.get::<String, i64>("counts", "nope".into(), WAIT)?,
        None
    );
    assert!(matches!(
        queries.read_store::<String, i64>("no-such-store", WAIT),
        Err(brook_runtime::streams::QueryError::UnknownStore(s)) if s == "no-such-store"
    ));
    // Another thread can ask too.
    let q = queries.clone();
    let from_elsewhere = std::thread::spawn(move || q.read_store::<String, i64>("counts", WAIT))
        .join()
        .map_err(|_| "query thread panicked")??;
    assert_eq!(from_elsewhere, expected_counts(300));
    streams.close()?;
    assert!(matches!(
        queries.read_store::<String, i64>("counts", WAIT),
        Err(brook_runtime::streams::QueryError::NotRunning(_))
    ));
    Ok(())
}
