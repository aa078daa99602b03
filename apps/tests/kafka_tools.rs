//! Kafka's own tools agree with brook, run on the test broker's classpath
//! against a `brook-wordcount` instance (exactly_once_v2, group mode):
//!
//! - `kafka-consumer-groups --describe` shows brook's committed offsets and
//!   the lag of records written while it was stopped;
//! - `kafka-transactions list` shows its transactional id;
//! - `kafka-topics --describe` shows its changelog compacted;
//! - `kafka-streams-application-reset` resets it (input offsets to the
//!   start, internal topics deleted) so that a rerun on an empty state
//!   directory recomputes the same counts, not doubled ones.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::kafka::KafkaCluster;
use brook_testkit::{KafkaBroker, TestBroker, read_topic};
use brook_topology::{Headers, TopicSpec};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_brook-wordcount");

fn tool(kafka: &KafkaBroker, main_class: &str, args: &[&str]) -> TestResult<String> {
    let bootstrap = kafka.internal_bootstrap();
    let mut all = vec!["--bootstrap-server", bootstrap.as_str()];
    all.extend_from_slice(args);
    let out = kafka.run_tool(main_class, &all)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{main_class} {args:?} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// A running `brook-wordcount`: killed if the test fails before stopping
/// it (no process outlives the test); its log goes to `log`, printed when
/// a count does not come.
struct Instance {
    child: Option<Child>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(
    broker: &TestBroker,
    app: &str,
    lines: &str,
    counts: &str,
    state: &str,
    log: &Path,
) -> TestResult<Instance> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = Command::new(BIN);
    command
        .args(["--bootstrap", broker.bootstrap()])
        .args(["--input", lines, "--output", counts])
        .args(["--application-id", app, "--instance-id", "tools-1"])
        .args(["--guarantee", "exactly_once_v2", "--commit-interval", "100"])
        .args(["--state-dir", state])
        .stdout(Stdio::null())
        .stderr(log);
    brook_testkit::die_with_parent(&mut command);
    Ok(Instance {
        child: Some(command.spawn()?),
    })
}

fn stop(mut instance: Instance) -> TestResult {
    let mut child = instance.child.take().ok_or("running")?;
    brook_testkit::signal(child.id(), libc::SIGTERM);
    let status = child.wait()?;
    assert!(status.success(), "a clean stop: {status}");
    Ok(())
}

/// The last 40 lines of the app's log.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The latest count per word in `counts`, once it equals `want` (or the
/// deadline passes: then what there is).
fn counted(
    cluster: &KafkaCluster,
    counts: &str,
    want: &BTreeMap<String, i64>,
) -> TestResult<BTreeMap<String, i64>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut latest = BTreeMap::new();
        for r in read_topic(cluster, counts, "tools-reader", Duration::from_secs(60))? {
            let word = String::from_utf8(r.key.unwrap_or_default())?;
            let n: i64 = String::from_utf8(r.value.unwrap_or_default())?.parse()?;
            latest.insert(word, n);
        }
        if &latest == want || Instant::now() > deadline {
            return Ok(latest);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn write_lines(cluster: &KafkaCluster, topic: &str, lines: &[&str]) -> TestResult {
    let mut producer = cluster.producer()?;
    for (i, line) in lines.iter().enumerate() {
        producer.send(ProducedRecord {
            topic: topic.to_owned(),
            partition: Some((i % 2) as i32),
            key: None,
            value: Some(line.as_bytes().to_vec()),
            // Now, not 1970: the broker deletes segments whose records are
            // older than its retention (7 days) within seconds.
            timestamp: brook_testkit::now_ms() + i as i64,
            headers: Headers::new(),
        })?;
    }
    producer.flush()?;
    Ok(())
}

fn word_counts(lines: &[&str]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// The `kafka-consumer-groups --describe` rows of `topic`: partition ->
/// (current offset, log end offset, lag).
fn group_rows(described: &str, topic: &str) -> BTreeMap<i32, (String, String, String)> {
    let mut rows = BTreeMap::new();
    for line in described.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        if cols.len() >= 6
            && cols[1] == topic
            && let Ok(partition) = cols[2].parse()
        {
            rows.insert(
                partition,
                (cols[3].to_owned(), cols[4].to_owned(), cols[5].to_owned()),
            );
        }
    }
    rows
}

#[test]

fn kafkas_tools_see_brooks_offsets_transactions_changelogs_and_reset_it() -> TestResult {
    let broker = TestBroker::kafka()?;
    let kafka = broker.kafka_broker().ok_or("a Kafka broker")?;
    let ns = broker.namespace();
    let (app, lines, counts) = (ns.group("tools"), ns.topic("lines"), ns.topic("counts"));
    broker.create_topics(&[TopicSpec::new(&lines, 2), TopicSpec::new(&counts, 1)])?;
    let cluster = KafkaCluster::new(broker.config().clone())?;
    let state = tempfile::tempdir()?;
    let state_dir = state.path().display().to_string();
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("brook-wordcount.log");

    let first = ["a b c", "a b", "a", "d e", "d"];
    write_lines(&cluster, &lines, &first)?;
    let child = start(&broker, &app, &lines, &counts, &state_dir, &log)?;
    assert_eq!(
        counted(&cluster, &counts, &word_counts(&first))?,
        word_counts(&first),
        "the first counts; the app's log:\n{}",
        log_tail(&log)
    );

    // While it runs: its transactional id, its compacted changelog.
    let transactions = tool(
        kafka,
        "org.apache.kafka.tools.TransactionsCommand",
        &["list"],
    )?;
    let txn_id = format!("{app}-tools-1");
    assert!(
        transactions.lines().any(|l| l
            .split_whitespace()
            .next()
            .is_some_and(|id| id.starts_with(&txn_id))),
        "kafka-transactions list shows {txn_id}*:\n{transactions}"
    );
    let changelog = format!("{app}-word-counts-changelog");
    let topics = tool(
        kafka,
        "org.apache.kafka.tools.TopicCommand",
        &["--describe", "--topic", &changelog],
    )?;
    assert!(
        topics.contains("cleanup.policy=compact"),
        "kafka-topics --describe shows {changelog} compacted:\n{topics}"
    );
    stop(child)?;

    // Stopped, three more lines behind: the group's offsets and lag.
    let more = ["e f", "f", "g"];
    write_lines(&cluster, &lines, &more)?;
    let described = tool(
        kafka,
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--describe", "--group", &app],
    )?;
    let rows = group_rows(&described, &lines);
    let expected = BTreeMap::from([
        (0, ("3".to_owned(), "5".to_owned(), "2".to_owned())),
        (1, ("2".to_owned(), "3".to_owned(), "1".to_owned())),
    ]);
    assert_eq!(
        rows, expected,
        "kafka-consumer-groups --describe: brook committed 3 + 2 records and lags 2 + 1:\n{described}"
    );

    // Catch up, then reset with Kafka Streams' reset tool and recompute
    // from an empty state directory.
    let all: Vec<&str> = first.iter().chain(&more).copied().collect();
    let child = start(&broker, &app, &lines, &counts, &state_dir, &log)?;
    assert_eq!(
        counted(&cluster, &counts, &word_counts(&all))?,
        word_counts(&all),
        "the counts after catching up; the app's log:\n{}",
        log_tail(&log)
    );
    stop(child)?;
    let reset = tool(
        kafka,
        "org.apache.kafka.tools.StreamsResetter",
        &["--application-id", &app, "--input-topics", &lines],
    )?;
    assert!(
        reset.contains(&changelog),
        "the reset tool deleted brook's changelog:\n{reset}"
    );
    let rows = group_rows(
        &tool(
            kafka,
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            &["--describe", "--group", &app],
        )?,
        &lines,
    );
    assert!(
        rows.values().all(|(current, _, _)| current == "0"),
        "offsets reset to the start: {rows:?}"
    );
    std::fs::remove_dir_all(state.path())?;
    let before = read_topic(&cluster, &counts, "tools-before", Duration::from_secs(60))?.len();
    let child = start(&broker, &app, &lines, &counts, &state_dir, &log)?;
    // Every word counted again from 1 up to its true value: recomputed, not
    // added to the old counts (the changelog went with the reset).
    let want = word_counts(&all);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rerun: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    while Instant::now() < deadline {
        rerun.clear();
        let records = read_topic(&cluster, &counts, "tools-rerun", Duration::from_secs(60))?;
        for r in records.into_iter().skip(before) {
            let word = String::from_utf8(r.key.unwrap_or_default())?;
            let n: i64 = String::from_utf8(r.value.unwrap_or_default())?.parse()?;
            rerun.entry(word).or_default().push(n);
        }
        let latest: BTreeMap<String, i64> = rerun
            .iter()
            .map(|(w, ns)| (w.clone(), ns[ns.len() - 1]))
            .collect();
        if latest == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop(child)?;
    let recounted: BTreeMap<String, Vec<i64>> = want
        .iter()
        .map(|(w, &n)| (w.clone(), (1..=n).collect()))
        .collect();
    assert_eq!(
        rerun,
        recounted,
        "the rerun after the reset recomputes every count from 1; the app's log:\n{}",
        log_tail(&log)
    );
    Ok(())
}
