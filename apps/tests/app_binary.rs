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

/// Every binary of brook-apps, with a flag its `--help` must list.
const BINARIES: [(&str, &str); 11] = [
    (env!("CARGO_BIN_EXE_brook-wordcount"), "--commit-interval"),
    (env!("CARGO_BIN_EXE_brook-eos-test"), "--windowed"),
    (env!("CARGO_BIN_EXE_eventmart"), "--dashboard-addr"),
    (
        env!("CARGO_BIN_EXE_eventmart-generator"),
        "--payment-failure-rate",
    ),
    (env!("CARGO_BIN_EXE_eventmart-demo"), "--lifecycle-scale"),
    (env!("CARGO_BIN_EXE_eventmart-topics"), "--configs"),
    (env!("CARGO_BIN_EXE_brook-dev-broker"), "--bootstrap-file"),
    (env!("CARGO_BIN_EXE_brook-state"), "--input-topic"),
    (env!("CARGO_BIN_EXE_brook-schema"), "--subject"),
    (
        env!("CARGO_BIN_EXE_brook-schema-registry"),
        "--basic-auth-file",
    ),
    (env!("CARGO_BIN_EXE_brook-bench"), "--kafka-runs"),
];

#[test]
fn help_exits_0_with_the_usage_on_stdout_for_every_binary() -> TestResult {
    for (bin, flag) in BINARIES {
        let name = bin.rsplit('/').next().unwrap_or(bin);
        for help in ["--help", "-h"] {
            let out = Command::new(bin).arg(help).output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} {help}: {}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.starts_with("usage"), "{name} {help}: {stdout}");
            assert!(
                stdout.contains(flag),
                "{name} {help} lists no {flag}: {stdout}"
            );
        }
    }
    // After other flags too, and not mistaken for bad usage.
    let out = Command::new(BIN)
        .args(["--threads", "2", "--help"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_eventmart"))
        .args(["all", "--help"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

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
            timestamp: brook_testkit::now_ms(),
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
