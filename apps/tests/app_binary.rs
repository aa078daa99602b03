//! An application binary built with `brook_apps::app` (`brook-wordcount`),
//! run as a process against Apache Kafka: it counts, serves Prometheus metrics,
//! refuses bad settings with exit code 2, and on SIGTERM shuts down cleanly
//! (exit 0, checkpoints written at the changelog's end).

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord, TopicPartition};
use brook_runtime::kafka::KafkaCluster;
use brook_testkit::TestBroker;
use brook_topology::{Headers, TopicSpec};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_brook-wordcount");

#[test]
fn bad_settings_exit_2_with_the_reason() -> TestResult {
    let out = Command::new(BIN)
        .args([
            "--bootstrap",
            "127.0.0.1:1",
            "--input",
            "a",
            "--output",
            "b",
            "--threads",
            "0",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one stream thread"));
    let out = Command::new(BIN).args(["--colour", "red"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --colour"));
    let out = Command::new(BIN)
        .args(["--bootstrap", "127.0.0.1:1", "--input", "x"])
        .env_remove("BROOK_OUTPUT")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--output is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn http_get(addr: &str, path: &str) -> TestResult<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn the_wordcount_binary_counts_serves_metrics_and_stops_cleanly_on_sigterm() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (lines, counts) = (ns.topic("lines"), ns.topic("counts"));
    broker.create_topics(&[TopicSpec::new(&lines, 2), TopicSpec::new(&counts, 2)])?;
    let app = ns.group("wc");
    let state = tempfile::tempdir()?;
    let mut child = Command::new(BIN)
        .args(["--input", &lines, "--output", &counts])
        .args(["--application-id", &app, "--metrics-addr", "127.0.0.1:0"])
        .args(["--commit-interval", "100", "--threads", "2"])
        .arg("--state-dir")
        .arg(state.path())
        .env("BROOK_BOOTSTRAP", broker.bootstrap())
        // librdkafka's rejoin stall on a new group: short sessions.
        .args([
            "--kafka.session.timeout.ms",
            "6000",
            "--kafka.heartbeat.interval.ms",
            "500",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    // The log says where the metrics are.
    let stderr = child.stderr.take().ok_or("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("no metrics address logged; log so far: {log:#?}"))?;
        if let Some(rest) = line.split("metrics at http://").nth(1) {
            break rest.trim_end_matches("/metrics").to_owned();
        }
        log.push(line);
    };

    let cluster = KafkaCluster::new(broker.config().clone())?;
    let mut producer = cluster.producer()?;
    for (i, text) in ["the cat", "the dog", "a cat and the bird"]
        .iter()
        .enumerate()
    {
        producer.send(ProducedRecord {
            topic: lines.clone(),
            partition: None,
            key: Some(format!("line{i}").into_bytes()),
            value: Some(text.as_bytes().to_vec()),
            timestamp: 1_000,
            headers: Headers::new(),
        })?;
    }
    producer.flush()?;
    let expected: BTreeMap<String, i64> = [
        ("the", 3),
        ("cat", 2),
        ("dog", 1),
        ("a", 1),
        ("and", 1),
        ("bird", 1),
    ]
    .iter()
    .map(|(w, n)| ((*w).to_owned(), *n))
    .collect();
    let mut reader = cluster.consumer(&ns.group("reader"), Isolation::ReadCommitted)?;
    let tps: Vec<_> = (0..2)
        .map(|p| TopicPartition::new(counts.as_str(), p))
        .collect();
    reader.assign(&tps)?;
    let mut latest = BTreeMap::new();
    let started = Instant::now();
    while latest != expected {
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let log: Vec<String> = rx.try_iter().collect();
            return Err(format!(
                "counts after 90 s: {latest:?}; the app's log:\n{}",
                log.join("\n")
            )
            .into());
        }
        for r in reader.poll(100)? {
            let word = String::from_utf8(r.key.unwrap_or_default())?;
            let n: i64 = String::from_utf8(r.value.unwrap_or_default())?.parse()?;
            latest.insert(word, n);
        }
    }

    let metrics = http_get(&addr, "/metrics")?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "brook_state{{application_id=\"{app}\",state=\"Running\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("brook_records_processed_total{"),
        "{metrics}"
    );
    assert!(http_get(&addr, "/nope")?.starts_with("HTTP/1.1 404"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err("no exit 60 s after SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "clean shutdown");
    // Closed cleanly: checkpoints name the changelogs' ends.
    let stores = brook_runtime::tools::list_stores(state.path(), &app)?;
    assert!(!stores.is_empty());
    assert!(
        stores.iter().any(|s| s.checkpoint.unwrap_or(0) > 0),
        "{stores:?}"
    );
    Ok(())
}

/// Runs the wordcount binary with `env` until it has counted `text`'s
/// words or exited; its whole log (stderr, at debug level) and its exit
/// status, if it exited.
fn run_logged(
    broker: &TestBroker,
    env: &[(&str, &str)],
    text: &str,
    timeout: Duration,
) -> TestResult<(
    String,
    Option<std::process::ExitStatus>,
    BTreeMap<String, i64>,
)> {
    let ns = broker.namespace();
    let (lines, counts) = (ns.topic("lines"), ns.topic("counts"));
    broker.create_topics(&[TopicSpec::new(&lines, 1), TopicSpec::new(&counts, 1)])?;
    let state = tempfile::tempdir()?;
    let mut child = Command::new(BIN)
        .args(["--input", &lines, "--output", &counts])
        .args(["--application-id", &ns.group("wc-sasl")])
        .args([
            "--commit-interval",
            "100",
            "--instance",
            "0",
            "--instances",
            "1",
        ])
        .args(["--log", "debug"])
        .arg("--state-dir")
        .arg(state.path())
        .env("BROOK_BOOTSTRAP", broker.bootstrap())
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut all);
        all
    });
    // The test's own clients log in with the broker's configuration.
    let cluster = KafkaCluster::new(broker.config().clone())?;
    let mut producer = cluster.producer()?;
    producer.send(ProducedRecord {
        topic: lines.clone(),
        partition: None,
        key: Some(b"line".to_vec()),
        value: Some(text.as_bytes().to_vec()),
        timestamp: 1_000,
        headers: Headers::new(),
    })?;
    producer.flush()?;
    let mut reader = cluster.consumer(&ns.group("reader"), Isolation::ReadCommitted)?;
    reader.assign(&[TopicPartition::new(counts.as_str(), 0)])?;
    let words = text
        .split_whitespace()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut latest = BTreeMap::new();
    let started = Instant::now();
    let mut exit = None;
    while latest.len() < words && started.elapsed() < timeout {
        if let Some(status) = child.try_wait()? {
            exit = Some(status);
            break;
        }
        for r in reader.poll(100)? {
            let word = String::from_utf8(r.key.unwrap_or_default())?;
            let n: i64 = String::from_utf8(r.value.unwrap_or_default())?.parse()?;
            latest.insert(word, n);
        }
    }
    if exit.is_none() {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let stopping = Instant::now();
        while exit.is_none() && stopping.elapsed() < Duration::from_secs(30) {
            exit = child.try_wait()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        if exit.is_none() {
            let _ = child.kill();
            exit = Some(child.wait()?);
        }
    }
    let log = log.join().map_err(|_| "log reader panicked")?;
    Ok((log, exit, latest))
}

#[test]
fn sasl_scram_settings_from_the_environment_log_in_and_never_reach_the_log() -> TestResult {
    let password = "Sup3r-s3cret-4-brook";
    let broker = TestBroker::kafka_with_scram("brook-app", password)?;
    let env = [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("BROOK_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
        ("BROOK_KAFKA_SASL_USERNAME", "brook-app"),
        ("BROOK_KAFKA_SASL_PASSWORD", password),
    ];
    let (log, exit, counts) =
        run_logged(&broker, &env, "to be or not to be", Duration::from_secs(90))?;
    assert_eq!(
        counts,
        BTreeMap::from([
            ("to".to_owned(), 2),
            ("be".to_owned(), 2),
            ("or".to_owned(), 1),
            ("not".to_owned(), 1)
        ]),
        "the app logged in and counted; exit {exit:?}, log:\n{log}"
    );
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "{log}");
    assert!(
        !log.contains(password),
        "the password is in the log:\n{log}"
    );
    assert!(
        log.contains("brook_runtime"),
        "a debug log was written:\n{log}"
    );

    // A wrong password: the app stops (exit 1) saying why, without the
    // password it was given either.
    let wrong = "Wr0ng-s3cret-4-brook";
    let env = [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("BROOK_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
        ("BROOK_KAFKA_SASL_USERNAME", "brook-app"),
        ("BROOK_KAFKA_SASL_PASSWORD", wrong),
    ];
    let started = Instant::now();
    let (log, exit, counts) = run_logged(&broker, &env, "denied", Duration::from_secs(90))?;
    assert!(counts.is_empty());
    assert_eq!(exit.and_then(|e| e.code()), Some(1), "{log}");
    assert!(
        log.to_lowercase().contains("authentication"),
        "the reason is given:\n{log}"
    );
    assert!(!log.contains(wrong), "the password is in the log:\n{log}");
    eprintln!(
        "wrong password: exit 1 after {:?}; last lines:\n{}",
        started.elapsed(),
        log.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

#[test]
fn ssl_settings_from_the_environment_reach_a_broker_behind_tls() -> TestResult {
    let broker = TestBroker::kafka_with_tls()?;
    let ca = broker
        .config()
        .client()
        .get("ssl.ca.location")
        .ok_or("no CA")?
        .to_owned();
    let env = [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("BROOK_KAFKA_SSL_CA_LOCATION", ca.as_str()),
    ];
    let (log, exit, counts) =
        run_logged(&broker, &env, "over tls over tls", Duration::from_secs(90))?;
    assert_eq!(
        counts,
        BTreeMap::from([("over".to_owned(), 2), ("tls".to_owned(), 2)]),
        "exit {exit:?}, log:\n{log}"
    );
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "{log}");
    Ok(())
}
