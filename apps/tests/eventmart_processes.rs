//! EventMart as separate processes on Apache Kafka, the
//! way it is deployed: `eventmart-topics apply`, `eventmart-generator`, and
//! `eventmart` — events per minute as two static instances (partitions
//! split between them) and the other apps in a third process with the
//! dashboard. Their JSON APIs, merged, must account for every generated
//! event; SIGTERM stops each cleanly. The broker lets in only clients that
//! log in over TLS (SASL_SSL, SCRAM-SHA-512, a test CA) and lets them do
//! only what ACLs allow (StandardAuthorizer, `allow.everyone.if.no.acl.found
//! =false`): EventMart's user may use topics, groups and transactional ids
//! under its prefix, nothing else. Every process gets the login from
//! `BROOK_KAFKA_*` environment variables, and the password is in none of
//! the files they write (state directories, the lake).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brook_schemas::server::RegistryServer;
use brook_testkit::{KafkaOptions, SaslMechanism, TestBroker};

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
        env: &[(&str, &str)],
    ) -> Result<App, Box<dyn std::error::Error>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventmart"))
            .envs(env.iter().copied())
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

/// What a test of EventMart's processes runs against.
struct Setup {
    /// The topics' prefix (a fresh namespace).
    prefix: String,
    bootstrap: String,
    registry: RegistryServer,
}

/// A registry, and EventMart's topics made by `eventmart-topics apply`
/// (with `login`'s environment) under `prefix` on `broker`.
fn provision(
    broker: &TestBroker,
    prefix: String,
    login: &[(&str, &str)],
) -> Result<Setup, Box<dyn std::error::Error>> {
    let bootstrap = broker.bootstrap().to_owned();
    let registry = RegistryServer::start_in_memory()?;
    let out = Command::new(env!("CARGO_BIN_EXE_eventmart-topics"))
        .envs(login.iter().copied())
        .args(["apply", "--bootstrap", &bootstrap, "--prefix", &prefix])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(Setup {
        prefix,
        bootstrap,
        registry,
    })
}

/// The number after `name` in the generator's report ("generated N
/// events: ecommerce-events C, eventmart-orders O, ...").
fn reported(report: &str, name: &str) -> Option<i64> {
    report
        .split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

const USER: &str = "eventmart";
const PASSWORD: &str = "Ev3ntM4rt-s3cret-pw";

/// Environment variables for a process: the login.
type Login = Vec<(&'static str, String)>;

/// A Kafka that takes only SASL_SSL SCRAM-SHA-512 logins and enforces
/// ACLs, with EventMart's user allowed everything under `prefix` (topics,
/// groups, transactional ids); and that login, as the environment of every
/// process.
fn secured_broker(prefix: &str) -> Result<(TestBroker, Login), Box<dyn std::error::Error>> {
    let broker = TestBroker::kafka_with(KafkaOptions {
        nodes: 1,
        tls: true,
        sasl: vec![SaslMechanism::ScramSha512],
        users: vec![(USER.to_owned(), PASSWORD.to_owned())],
        acls: true,
        ..KafkaOptions::default()
    })?;
    let kafka = broker.kafka_broker().ok_or("a Kafka broker")?;
    for resource in ["--topic", "--group", "--transactional-id"] {
        let out = kafka.run_tool(
            "org.apache.kafka.tools.AclCommand",
            &[
                "--bootstrap-server",
                &kafka.internal_bootstrap(),
                "--add",
                "--allow-principal",
                &format!("User:{USER}"),
                "--operation",
                "All",
                "--resource-pattern-type",
                "prefixed",
                resource,
                prefix,
            ],
        )?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ca = kafka.ca().ok_or("a test CA")?.ca_location();
    let login = vec![
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
        ("BROOK_KAFKA_SSL_CA_LOCATION", ca.display().to_string()),
        ("BROOK_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512".to_owned()),
        ("BROOK_KAFKA_SASL_USERNAME", USER.to_owned()),
        ("BROOK_KAFKA_SASL_PASSWORD", PASSWORD.to_owned()),
    ];
    Ok((broker, login))
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
    // Against an external Kafka (`make test-kafka`) its own settings
    // apply; here, a Kafka that wants a SCRAM login over TLS and ACLs.
    let prefix = format!("{}.", brook_testkit::Namespace::fresh().prefix());
    let (broker, login) = match TestBroker::external() {
        Some(external) => (external, Vec::new()),
        None => secured_broker(&prefix)?,
    };
    let login: Vec<(&str, &str)> = login.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Setup {
        prefix,
        bootstrap,
        registry,
    } = provision(&broker, prefix, &login)?;

    let out = Command::new(env!("CARGO_BIN_EXE_eventmart-generator"))
        .envs(login.iter().copied())
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
    let count = |topic: &str| reported(&report, topic).unwrap_or(-1);
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
        &login,
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
        &login,
    )?;
    let mut rest = App::start(
        "revenue-per-category,device-distribution,order-analytics,notifications,audit,lake",
        &common,
        &["--state-dir", &state("s2")],
        &login,
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

/// Resident memory of process `pid`, KiB (0 when it has exited).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A bounded soak: the generator at its maximum rate for `BROOK_SOAK_SECONDS`
/// (default 30) into two group-mode instances of events-per-minute and
/// revenue-per-category, the second joining halfway (a rebalance moves
/// tasks and their state to it). Afterwards the two instances together
/// must hold every generated click (at-least-once: a rebalance may count
/// a record twice, never lose one), and the first instance's memory in
/// the second half of the run must not keep growing. Prints the figures.
#[test]
fn soak_at_the_generators_maximum_rate_with_a_rebalance_in_the_middle() -> TestResult {
    let seconds: u64 = std::env::var("BROOK_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let broker = TestBroker::kafka()?;
    let Setup {
        prefix,
        bootstrap,
        registry,
    } = provision(&broker, format!("{}.", broker.namespace().prefix()), &[])?;

    let generator = Command::new(env!("CARGO_BIN_EXE_eventmart-generator"))
        .args(["--bootstrap", &bootstrap, "--registry", &registry.url()])
        .args(["--prefix", &prefix, "--rate", "0"])
        .args(["--duration", &seconds.to_string(), "--seed", "5"])
        .args(["--users", "500", "--drain", "no", "--progress", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let dir = tempfile::tempdir()?;
    let common: Vec<String> = [
        "--bootstrap",
        &bootstrap,
        "--registry",
        &registry.url(),
        "--prefix",
        &prefix,
        "--application-id",
        &format!("{prefix}soak"),
        "--guarantee",
        "at_least_once",
        "--commit-interval",
        "1000",
        // librdkafka's rejoin stall on a new group: short sessions.
        "--kafka.session.timeout.ms",
        "6000",
        "--kafka.heartbeat.interval.ms",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let apps = "events-per-minute,revenue-per-category";
    let state = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let started = Instant::now();
    let mut first = App::start(apps, &common, &["--state-dir", &state("a")], &[])?;
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut second: Option<App> = None;
    let mut rebalanced_at = None;
    while started.elapsed() < Duration::from_secs(seconds) {
        if second.is_none() && started.elapsed() >= Duration::from_secs(seconds / 2) {
            second = Some(App::start(
                apps,
                &common,
                &["--state-dir", &state("b")],
                &[],
            )?);
            rebalanced_at = Some(started.elapsed());
        }
        samples.push((
            started.elapsed().as_secs_f64(),
            rss_kib(first.child.id()),
            second.as_ref().map_or(0, |s| rss_kib(s.child.id())),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = generator.wait_with_output()?;
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let clicks =
        reported(&text, "ecommerce-events").ok_or_else(|| format!("no click count in {text:?}"))?;
    let generated = reported(&text, "generated").unwrap_or(clicks);
    let second = second.ok_or("the second instance never started")?;

    // Both instances together hold every click. The generator writes
    // faster than the broker serves the apps: they catch up after it stops, for
    // as long as they make progress (a stall of 2 minutes fails).
    let caught_up = Instant::now();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    let (mut last_total, mut last_progress) = (-1i64, Instant::now());
    loop {
        // A busy instance (restoring what the rebalance gave it) may not
        // answer a query in time: 503, ask again.
        match (
            first.get("/api/events-per-minute"),
            second.get("/api/events-per-minute"),
        ) {
            (Ok(x), Ok(y)) => (a, b) = (per_type(&x), per_type(&y)),
            (Err(e), _) | (_, Err(e)) if e.to_string().contains(" 503 ") => {
                eprintln!("soak: {e}");
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        }
        let total: i64 = a.values().chain(b.values()).sum();
        if total > last_total {
            (last_total, last_progress) = (total, Instant::now());
        }
        if total >= clicks || last_progress.elapsed() > Duration::from_secs(120) {
            break;
        }
        samples.push((
            started.elapsed().as_secs_f64(),
            rss_kib(first.child.id()),
            rss_kib(second.child.id()),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let lag_after_generator = caught_up.elapsed();
    let total: i64 = a.values().chain(b.values()).sum();
    assert!(
        total >= clicks,
        "{total} of {clicks} clicks counted: {a:?} + {b:?}"
    );
    assert!(
        !b.is_empty(),
        "the second instance took over part of the work: {b:?}"
    );

    // Memory: the first instance's peak in the last quarter of the load is
    // not far above its peak in the second quarter (a leak of records or
    // state would grow with every second).
    let load = samples
        .iter()
        .filter(|(t, _, _)| *t <= seconds as f64)
        .map(|&(t, a, _)| (t, a))
        .collect::<Vec<_>>();
    let peak = |from: f64, to: f64| {
        load.iter()
            .filter(|(t, _)| *t >= from * seconds as f64 && *t < to * seconds as f64)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    };
    let (q2, q4) = (peak(0.25, 0.5), peak(0.75, 1.01));
    let max_b = samples.iter().map(|s| s.2).max().unwrap_or(0);
    eprintln!(
        "soak {seconds} s: {generated} events generated ({:.0}/s), {clicks} clicks, counted {total} \
         ({} counted twice); second instance joined at {:.1} s; caught up {:.1} s after the \
         generator stopped; RSS of the first instance: peak {} MiB in the 2nd quarter, {} MiB \
         in the 4th; second instance peak {} MiB",
        generated as f64 / seconds as f64,
        total - clicks,
        rebalanced_at.map_or(0.0, |d| d.as_secs_f64()),
        lag_after_generator.as_secs_f64(),
        q2 / 1024,
        q4 / 1024,
        max_b / 1024
    );
    assert!(q2 > 0 && q4 > 0, "memory samples: {load:?}");
    assert!(
        q4 <= q2 + q2 / 2 + 64 * 1024,
        "memory kept growing: {q2} KiB → {q4} KiB ({load:?})"
    );
    let mut second = second;
    for p in [&mut first, &mut second] {
        p.stop()?;
    }
    Ok(())
}
