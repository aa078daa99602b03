//! A real process crash: an instance counting on Apache Kafka, with RocksDB state,
//! is killed with SIGKILL mid-stream (no close, no flush: RocksDB loses its
//! memtables, the producer its queue), then restarted on the same state
//! directory. The restart must restore its stores to exactly the latest
//! value per key in the changelog (local state never ahead of it), and the
//! application must go on to count every input (at-least-once: nothing lost).
//!
//! The instance runs in a child process: this test binary, re-run with
//! `BROOK_KILL_CHILD` set, executes `child_instance` only.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord, TopicPartition};
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::thread::{StreamThread, StreamsConfig};
use brook_testkit::{TestBroker, read_topic};
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{Consumed, Grouped, Headers, Materialized, StreamsBuilder, TopicSpec};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const CHILD: &str = "BROOK_KILL_CHILD";
const RECORDS: i64 = 4_000;
const KEYS: i64 = 40;

/// The counting topology; `slow` makes each record take 1 ms, so that the
/// parent reliably kills the child mid-stream however fast brook is.
fn topology(input: &str, slow: bool) -> TestResult<Arc<brook_topology::Topology>> {
    let b = StreamsBuilder::new();
    b.stream(input, Consumed::with(Utf8, Utf8))
        .peek(move |_, _| {
            if slow {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
    Ok(Arc::new(b.build()?))
}

fn config(app: &str, state: &Path) -> StreamsConfig {
    let mut config = StreamsConfig::new(app).state_dir(state);
    config.commit_interval = Duration::from_millis(50);
    config.checkpoint_interval_records = 50;
    config.max_poll_records = 100;
    config
}

/// The instance the parent kills: processes until killed.
#[test]
#[ignore = "runs only as the child process of a_killed_instance_restarts_from_its_state_directory_on_kafka"]
fn child_instance() -> TestResult {
    let spec = std::env::var(CHILD).map_err(|_| format!("{CHILD} is not set"))?;
    let parts: Vec<&str> = spec.split('|').collect();
    let [bootstrap, input, app, state] = parts[..] else {
        return Err(format!("bad {CHILD}: {spec}").into());
    };
    let cluster = KafkaCluster::new(KafkaConfig::new(bootstrap))?;
    let mut thread = StreamThread::new(
        &topology(input, true)?,
        config(app, Path::new(state)),
        &cluster,
        |_| true,
        brook_testkit::now_ms(),
    )?;
    loop {
        thread.run_once(brook_testkit::now_ms())?;
    }
}

fn changelog_latest(cluster: &KafkaCluster, topic: &str) -> TestResult<BTreeMap<String, i64>> {
    let mut latest = BTreeMap::new();
    for r in read_topic(cluster, topic, "kill-test-reader", Duration::from_secs(60))? {
        let key = String::from_utf8(r.key.unwrap_or_default())?;
        latest.insert(key, Json::<i64>::new().deserialize(r.value.as_deref())?);
    }
    Ok(latest)
}

fn committed(cluster: &KafkaCluster, group: &str, input: &str) -> TestResult<i64> {
    let mut consumer = cluster.consumer(group, Isolation::ReadCommitted)?;
    let mut total = 0;
    for p in 0..2 {
        let tp = TopicPartition::new(input, p);
        consumer.assign(std::slice::from_ref(&tp))?;
        total += consumer.position(&tp)?;
    }
    Ok(total)
}

#[test]
fn a_killed_instance_restarts_from_its_state_directory_on_kafka() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let input = ns.topic("clicks");
    let app = ns.group("kill");
    broker.create_topics(&[TopicSpec::new(&input, 2)])?;
    let cluster = KafkaCluster::new(broker.config().clone())?;
    let mut producer = cluster.producer()?;
    for i in 0..RECORDS {
        producer.send(ProducedRecord {
            topic: input.clone(),
            partition: None,
            key: Some(format!("k{}", i % KEYS).into_bytes()),
            value: Some(b"1".to_vec()),
            timestamp: brook_testkit::now_ms() + i,
            headers: Headers::new(),
        })?;
    }
    producer.flush()?;
    let state = tempfile::tempdir()?;

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "child_instance", "--ignored", "--nocapture"])
        .env(
            CHILD,
            format!(
                "{}|{input}|{app}|{}",
                broker.bootstrap(),
                state.path().display()
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill it mid-stream: after some commits, before the end.
    let started = Instant::now();
    loop {
        let done = committed(&cluster, &app, &input).unwrap_or(0);
        if done >= RECORDS / 4 {
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("the instance exited early: {status}").into());
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            return Err(format!("the instance committed only {done} records in 120 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    let committed_at_kill = committed(&cluster, &app, &input)?;
    assert!(committed_at_kill < RECORDS, "killed too late to matter");

    // Restart on the same state directory.
    let changelog = format!("{app}-counts-changelog");
    let expected_after_restore = changelog_latest(&cluster, &changelog)?;
    let mut thread = StreamThread::new(
        &topology(&input, false)?,
        config(&app, state.path()),
        &cluster,
        |_| true,
        brook_testkit::now_ms(),
    )?;
    assert_eq!(
        thread.read_store::<String, i64>("counts")?,
        expected_after_restore,
        "local state after restore is the changelog's latest values"
    );
    // The checkpoint survived the kill: not everything was replayed.
    let restored = thread.restore_metrics().records;
    let changelog_len: i64 = {
        let mut c = cluster.consumer("kill-test-ends", Isolation::ReadCommitted)?;
        let tps: Vec<_> = (0..2)
            .map(|p| TopicPartition::new(changelog.as_str(), p))
            .collect();
        c.end_offsets(&tps)?.values().sum()
    };
    assert!(
        (restored as i64) < changelog_len,
        "restored {restored} of {changelog_len} changelog records: a full restore"
    );

    // Nothing is lost: every input counted at least once.
    let started = Instant::now();
    loop {
        thread.run_once(brook_testkit::now_ms())?;
        thread.commit()?;
        let counts = thread.read_store::<String, i64>("counts")?;
        let counted: i64 = counts.values().sum();
        // Done when every input record is behind the committed offsets
        // (duplicates may push the sum past RECORDS earlier).
        if committed(&cluster, &app, &input)? >= RECORDS {
            for (key, n) in &counts {
                assert!(*n >= RECORDS / KEYS, "{key} counted {n} times");
            }
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("counted {counted} of {RECORDS} after the restart").into());
        }
    }
    thread.close()?;
    Ok(())
}
