//! EventMart as separate processes on a Kafka-protocol broker (tansu), the
//! way it is deployed: `eventmart-topics apply`, `eventmart-generator`, and
//! `eventmart` — events per minute as two static instances (partitions
//! split between them) and the other apps in a third process with the
//! dashboard. Their JSON APIs, merged, must account for every generated
//! event; SIGTERM stops each cleanly. The broker lets in only clients that
//! log in (SASL SCRAM-SHA-512): every process gets the login from
//! `BROOK_KAFKA_*` environment variables, and the password is in none of
//! the files they write (state directories, the lake).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_schemas::registry::Registry;
use brook_schemas::server::{RegistryServer, ServerConfig};
use brook_testkit::TestBroker;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct App {
    child: Child,
    url: String,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl App {
    fn start(
        apps: &str,
        common: &[String],
        extra: &[&str],
    ) -> Result<App, Box<dyn std::error::Error>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventmart"))
            .envs(login())
            .arg(apps)
            .args(common)
            .args(extra)
            .args(["--dashboard-addr", "127.0.0.1:0", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("dashboard at ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(App { child, url })
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let addr = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = TcpStream::connect(addr)?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out.split_once("\r\n\r\n").ok_or("no body")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("GET {path}: {head} {body}").into());
        }
        Ok(serde_json::from_str(body)?)
    }

    fn stop(&mut self) -> TestResult {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        assert!(status.success(), "eventmart exited with {status}");
        Ok(())
    }
}

/// Sum of the counts per event type over every window.
fn per_type(windows: &serde_json::Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for w in windows.as_array().into_iter().flatten() {
        for (k, v) in w["counts"].as_object().into_iter().flatten() {
            *out.entry(k.clone()).or_default() += v.as_i64().unwrap_or(0);
        }
    }
    out
}

const USER: &str = "eventmart";
const PASSWORD: &str = "Ev3ntM4rt-s3cret-pw";

/// The broker's login, as environment variables of every process.
fn login() -> [(&'static str, &'static str); 4] {
    [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        (
            "BROOK_KAFKA_SASL_MECHANISMS",
            brook_testkit::TANSU_SASL_MECHANISM,
        ),
        ("BROOK_KAFKA_SASL_USERNAME", USER),
        ("BROOK_KAFKA_SASL_PASSWORD", PASSWORD),
    ]
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    Ok(found)
}

#[test]
fn the_binaries_run_eventmart_on_a_broker_with_static_instances() -> TestResult {
    let broker = TestBroker::tansu_with_scram(USER, PASSWORD)?;
    let ns = broker.namespace();
    let prefix = format!("{}.", ns.prefix());
    let bootstrap = broker.bootstrap().to_owned();
    let registry = RegistryServer::start(
        Arc::new(Registry::in_memory()),
        ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            ..ServerConfig::default()
        },
    )?;

    let out = Command::new(env!("CARGO_BIN_EXE_eventmart-topics"))
        .envs(login())
        .args(["apply", "--bootstrap", &bootstrap, "--prefix", &prefix])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_eventmart-generator"))
        .envs(login())
        .args([
            "--bootstrap",
            &bootstrap,
            "--registry",
            &registry.url(),
            "--prefix",
            &prefix,
        ])
        .args([
            "--rate", "0", "--count", "3000", "--seed", "11", "--users", "30",
        ])
        .args([
            "--lifecycle-scale",
            "0.01",
            "--drain",
            "yes",
            "--progress",
            "off",
        ])
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "generated N events: ecommerce-events C, eventmart-orders O, ..."
    let count = |topic: &str| -> i64 {
        report
            .split(&format!("{topic} "))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    let clicks = count("ecommerce-events");
    assert!(clicks > 2000, "{report}");

    let dir = tempfile::tempdir()?;
    let common: Vec<String> = [
        "--bootstrap",
        &bootstrap,
        "--registry",
        &registry.url(),
        "--prefix",
        &prefix,
        "--application-id",
        &format!("{prefix}em"),
        "--guarantee",
        "at_least_once",
        "--commit-interval",
        "500",
        "--lake",
        dir.path().join("lake").to_str().ok_or("path")?,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let state = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let mut epm0 = App::start(
        "events-per-minute",
        &common,
        &[
            "--instance",
            "0",
            "--instances",
            "2",
            "--state-dir",
            &state("s0"),
        ],
    )?;
    let mut epm1 = App::start(
        "events-per-minute",
        &common,
        &[
            "--instance",
            "1",
            "--instances",
            "2",
            "--state-dir",
            &state("s1"),
        ],
    )?;
    let mut rest = App::start(
        "revenue-per-category,device-distribution,order-analytics,notifications,audit,lake",
        &common,
        &["--state-dir", &state("s2")],
    )?;

    // The two instances together hold every click, each type once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut merged, mut a, mut b);
    loop {
        a = per_type(&epm0.get("/api/events-per-minute")?);
        b = per_type(&epm1.get("/api/events-per-minute")?);
        merged = a.clone();
        for (k, v) in &b {
            *merged.entry(k.clone()).or_default() += v;
        }
        if merged.values().sum::<i64>() == clicks || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(merged.values().sum::<i64>(), clicks, "{a:?} + {b:?}");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both instances hold keys: {a:?} {b:?}"
    );
    assert!(
        a.keys().all(|k| !b.contains_key(k)),
        "a key in both: {a:?} {b:?}"
    );

    // The third process: the funnel accounts for every order.
    let orders = count("eventmart-orders");
    let deadline = Instant::now() + Duration::from_secs(120);
    let funnel = loop {
        let f = rest.get("/api/order-funnel")?;
        let placed = f["1-placed"].as_i64().unwrap_or(0);
        let delivered = f["4-delivered"].as_i64().unwrap_or(0);
        let failed = f["x-payment-failed"].as_i64().unwrap_or(0);
        if (placed > 0 && placed == delivered + failed) || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let placed = funnel["1-placed"].as_i64().unwrap_or(0);
    assert_eq!(
        placed,
        funnel["4-delivered"].as_i64().unwrap_or(0)
            + funnel["x-payment-failed"].as_i64().unwrap_or(0),
        "drained: every order delivered or failed: {funnel}"
    );
    // Each order emits ORDER_PLACED, then CONFIRMED, SHIPPED, DELIVERED or nothing more.
    assert!(orders >= placed, "{report} {funnel}");
    let apps = rest.get("/api/apps")?;
    assert_eq!(apps.as_array().map(Vec::len), Some(6));
    for p in [&mut epm0, &mut epm1, &mut rest] {
        p.stop()?;
    }
    // The lake was written, and neither it nor any state directory holds
    // the password.
    assert!(!files_containing(&dir.path().join("lake"), b"PAR1")?.is_empty());
    assert_eq!(
        files_containing(dir.path(), PASSWORD.as_bytes())?,
        Vec::<String>::new()
    );
    Ok(())
}
