//! Security on Apache Kafka itself: SASL_SSL with SCRAM-SHA-512 and PLAIN,
//! TLS with a test CA (and mutual TLS), and ACLs enforced by KRaft's
//! StandardAuthorizer with `allow.everyone.if.no.acl.found=false`.
//!
//! `brook-wordcount` (a repartition topic and a changelog, exactly_once_v2
//! in group mode) runs as user `brook` with exactly the ACLs the README
//! lists for a brook app; with any one of them missing it stops (exit 1)
//! with a message naming the resource and the operation, instead of
//! hanging. Secrets come from the environment and never reach the log.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord, TopicPartition};
use brook_runtime::kafka::KafkaCluster;
use brook_testkit::{KafkaOptions, Namespace, SaslMechanism, TestBroker};
use brook_topology::{Headers, TopicSpec};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_brook-wordcount");
const USER: &str = "brook";
const PASSWORD: &str = "Br00k-app-s3cret";

/// One app's names: its id, input and output.
struct App {
    id: String,
    input: String,
    output: String,
}

impl App {
    fn new(ns: &Namespace, name: &str) -> Self {
        App {
            id: ns.group(name),
            input: ns.topic(&format!("{name}-lines")),
            output: ns.topic(&format!("{name}-counts")),
        }
    }
}

/// An ACL of the set a brook app needs, to leave out in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acl {
    /// READ on each source topic.
    SourceRead,
    /// WRITE on each sink topic.
    SinkWrite,
    /// ALL on topics prefixed `<application.id>-` (changelogs, repartition
    /// topics, dead letters: created, written, read).
    InternalTopics,
    /// READ on groups prefixed `<application.id>` (the app's group, and
    /// those of its restore, global-table and control consumers).
    Group,
    /// WRITE on transactional ids prefixed `<application.id>-`.
    TransactionalIds,
}

const ALL_ACLS: [Acl; 5] = [
    Acl::SourceRead,
    Acl::SinkWrite,
    Acl::InternalTopics,
    Acl::Group,
    Acl::TransactionalIds,
];

/// Runs Kafka's `kafka-acls --add` on the broker's internal listener.
fn add_acl(broker: &TestBroker, principal: &str, args: &[&str]) -> TestResult {
    let kafka = broker.kafka_broker().ok_or("a Kafka broker")?;
    let bootstrap = kafka.internal_bootstrap();
    let mut all = vec![
        "--bootstrap-server",
        bootstrap.as_str(),
        "--add",
        "--allow-principal",
        principal,
    ];
    all.extend_from_slice(args);
    let out = kafka.run_tool("org.apache.kafka.tools.AclCommand", &all)?;
    if !out.status.success() {
        return Err(format!(
            "kafka-acls {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Grants `principal` the README's ACL set for `app`, except `missing`.
fn grant(broker: &TestBroker, principal: &str, app: &App, missing: Option<Acl>) -> TestResult {
    for acl in ALL_ACLS {
        if Some(acl) == missing {
            continue;
        }
        let prefix = format!("{}-", app.id);
        match acl {
            Acl::SourceRead => add_acl(
                broker,
                principal,
                &["--operation", "Read", "--topic", &app.input],
            )?,
            Acl::SinkWrite => add_acl(
                broker,
                principal,
                &["--operation", "Write", "--topic", &app.output],
            )?,
            Acl::InternalTopics => add_acl(
                broker,
                principal,
                &[
                    "--operation",
                    "All",
                    "--resource-pattern-type",
                    "prefixed",
                    "--topic",
                    &prefix,
                ],
            )?,
            Acl::Group => add_acl(
                broker,
                principal,
                &[
                    "--operation",
                    "Read",
                    "--resource-pattern-type",
                    "prefixed",
                    "--group",
                    &app.id,
                ],
            )?,
            Acl::TransactionalIds => add_acl(
                broker,
                principal,
                &[
                    "--operation",
                    "Write",
                    "--resource-pattern-type",
                    "prefixed",
                    "--transactional-id",
                    &prefix,
                ],
            )?,
        }
    }
    Ok(())
}

/// What one run of the app did.
struct Ran {
    log: String,
    exit: Option<ExitStatus>,
    counts: BTreeMap<String, i64>,
    took: Duration,
}

/// Runs `brook-wordcount` (exactly_once_v2, group mode) with `env` until it
/// has counted `text`'s words or exited, then SIGTERMs it. The test's own
/// clients use the internal listener (a super user).
fn run_app(
    broker: &TestBroker,
    app: &App,
    env: &[(&str, &str)],
    text: &str,
    timeout: Duration,
) -> TestResult<Ran> {
    let admin = KafkaCluster::new(broker.admin_config())?;
    admin.create_topics(&[
        TopicSpec::new(&app.input, 2),
        TopicSpec::new(&app.output, 1),
    ])?;
    let state = tempfile::tempdir()?;
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["--input", &app.input, "--output", &app.output])
        .args(["--application-id", &app.id])
        .args(["--guarantee", "exactly_once_v2", "--commit-interval", "100"])
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
    let mut producer = admin.producer()?;
    producer.send(ProducedRecord {
        topic: app.input.clone(),
        partition: None,
        key: Some(b"line".to_vec()),
        value: Some(text.as_bytes().to_vec()),
        timestamp: brook_testkit::now_ms(),
        headers: Headers::new(),
    })?;
    producer.flush()?;
    let mut reader = admin.consumer(&format!("{}-reader", app.id), Isolation::ReadCommitted)?;
    reader.assign(&[TopicPartition::new(app.output.as_str(), 0)])?;
    let words = text
        .split_whitespace()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut counts = BTreeMap::new();
    let mut exit = None;
    while counts.len() < words && started.elapsed() < timeout {
        if let Some(status) = child.try_wait()? {
            exit = Some(status);
            break;
        }
        for r in reader.poll(100)? {
            let word = String::from_utf8(r.key.unwrap_or_default())?;
            let n: i64 = String::from_utf8(r.value.unwrap_or_default())?.parse()?;
            counts.insert(word, n);
        }
    }
    let took = started.elapsed();
    if exit.is_none() {
        brook_testkit::signal(child.id(), libc::SIGTERM);
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
    Ok(Ran {
        log,
        exit,
        counts,
        took,
    })
}

fn expect_counted(ran: &Ran, want: &[(&str, i64)]) {
    let want: BTreeMap<String, i64> = want.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect();
    assert_eq!(
        ran.counts, want,
        "the app logged in and counted; exit {:?}, log:\n{}",
        ran.exit, ran.log
    );
    assert_eq!(ran.exit.and_then(|e| e.code()), Some(0), "{}", ran.log);
}

fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SASL_SSL (test CA) with SCRAM-SHA-512 and PLAIN, ACLs on.
fn sasl_ssl_broker() -> TestResult<TestBroker> {
    Ok(TestBroker::kafka_with(KafkaOptions {
        nodes: 1,
        tls: true,
        sasl: vec![SaslMechanism::ScramSha512, SaslMechanism::Plain],
        users: vec![(USER.to_owned(), PASSWORD.to_owned())],
        acls: true,
        ..KafkaOptions::default()
    })?)
}

fn sasl_env<'a>(ca: &'a str, mechanism: &'a str, password: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("BROOK_KAFKA_SSL_CA_LOCATION", ca),
        ("BROOK_KAFKA_SASL_MECHANISMS", mechanism),
        ("BROOK_KAFKA_SASL_USERNAME", USER),
        ("BROOK_KAFKA_SASL_PASSWORD", password),
    ]
}

fn ca_of(broker: &TestBroker) -> TestResult<String> {
    Ok(broker
        .kafka_broker()
        .and_then(|k| k.ca())
        .ok_or("no test CA")?
        .ca_location()
        .display()
        .to_string())
}

#[test]
fn over_sasl_ssl_the_readme_acls_suffice_for_scram_and_plain_and_no_secret_is_logged() -> TestResult
{
    let broker = sasl_ssl_broker()?;
    let ca = ca_of(&broker)?;
    let ns = broker.namespace();
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let app = App::new(&ns, &format!("wc-{}", mechanism.to_lowercase()));
        grant(&broker, &format!("User:{USER}"), &app, None)?;
        let ran = run_app(
            &broker,
            &app,
            &sasl_env(&ca, mechanism, PASSWORD),
            "to be or not to be",
            Duration::from_secs(120),
        )?;
        expect_counted(&ran, &[("to", 2), ("be", 2), ("or", 1), ("not", 1)]);
        assert!(
            !ran.log.contains(PASSWORD),
            "the password is in the log:\n{}",
            ran.log
        );
        eprintln!(
            "{mechanism} over SASL_SSL with the README's ACLs: counted in {:.1} s",
            ran.took.as_secs_f64()
        );
    }

    // A wrong password: exit 1, saying why, without the password.
    let app = App::new(&ns, "wc-wrong");
    let wrong = "Wr0ng-s3cret-4-brook";
    let ran = run_app(
        &broker,
        &app,
        &sasl_env(&ca, "SCRAM-SHA-512", wrong),
        "denied",
        Duration::from_secs(90),
    )?;
    assert!(ran.counts.is_empty());
    assert_eq!(ran.exit.and_then(|e| e.code()), Some(1), "{}", ran.log);
    assert!(
        ran.log.to_lowercase().contains("authentication"),
        "the reason is given:\n{}",
        ran.log
    );
    assert!(!ran.log.contains(wrong), "the password is in the log");
    Ok(())
}

#[test]
fn each_missing_acl_stops_the_app_with_the_resource_and_operation_named() -> TestResult {
    let broker = sasl_ssl_broker()?;
    let ca = ca_of(&broker)?;
    let ns = broker.namespace();
    for missing in ALL_ACLS {
        let app = App::new(
            &ns,
            &format!("wc-no-{}", format!("{missing:?}").to_lowercase()),
        );
        grant(&broker, &format!("User:{USER}"), &app, Some(missing))?;
        let ran = run_app(
            &broker,
            &app,
            &sasl_env(&ca, "SCRAM-SHA-512", PASSWORD),
            "never counted",
            Duration::from_secs(90),
        )?;
        let said = last_lines(&ran.log, 6);
        assert!(
            ran.counts.is_empty(),
            "without {missing:?} nothing is counted: {:?}",
            ran.counts
        );
        assert_eq!(
            ran.exit.and_then(|e| e.code()),
            Some(1),
            "without {missing:?} the app stops by itself (exit 1) within 90 s; it said:\n{said}"
        );
        let prefix = format!("{}-", app.id);
        let (resource, operation) = match missing {
            Acl::SourceRead => (app.input.as_str(), "Read"),
            Acl::SinkWrite => (app.output.as_str(), "Write"),
            Acl::InternalTopics => (prefix.as_str(), "Create"),
            Acl::Group => (app.id.as_str(), "Read"),
            Acl::TransactionalIds => (prefix.as_str(), "Write"),
        };
        let failure = ran
            .log
            .lines()
            .rev()
            .find(|l| l.contains("not authorized"))
            .unwrap_or_default();
        assert!(
            failure.contains(resource) && failure.contains(operation),
            "without {missing:?}: the failure names {resource:?} and {operation}; the log ends:\n{said}"
        );
        eprintln!(
            "without {missing:?}: exit 1 after {:.1} s: {failure}",
            ran.took.as_secs_f64()
        );
    }
    Ok(())
}

#[test]
fn mutual_tls_clients_are_known_by_their_certificate() -> TestResult {
    let broker = TestBroker::kafka_with(KafkaOptions {
        nodes: 1,
        tls: true,
        mutual_tls: true,
        users: vec![(USER.to_owned(), String::new())],
        acls: true,
        ..KafkaOptions::default()
    })?;
    let ca = ca_of(&broker)?;
    let client = broker.config().client();
    let cert = client
        .get("ssl.certificate.location")
        .ok_or("a client certificate")?
        .to_owned();
    let key = client
        .get("ssl.key.location")
        .ok_or("a client key")?
        .to_owned();
    let app = App::new(&broker.namespace(), "wc-mtls");
    // The principal is the certificate's subject.
    grant(&broker, &format!("User:CN={USER}"), &app, None)?;
    let env = [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("BROOK_KAFKA_SSL_CA_LOCATION", ca.as_str()),
        ("BROOK_KAFKA_SSL_CERTIFICATE_LOCATION", cert.as_str()),
        ("BROOK_KAFKA_SSL_KEY_LOCATION", key.as_str()),
    ];
    let ran = run_app(
        &broker,
        &app,
        &env,
        "over tls over tls",
        Duration::from_secs(120),
    )?;
    expect_counted(&ran, &[("over", 2), ("tls", 2)]);

    // Without a certificate the broker refuses the handshake: exit 1.
    let app = App::new(&broker.namespace(), "wc-no-cert");
    // A refused handshake looks like a network fault to the client, which
    // retries: the instance stops once its retry timeout has passed.
    let env = [
        ("BROOK_KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("BROOK_KAFKA_SSL_CA_LOCATION", ca.as_str()),
        ("BROOK_RETRY_TIMEOUT", "15000"),
    ];
    let ran = run_app(&broker, &app, &env, "refused", Duration::from_secs(90))?;
    assert!(ran.counts.is_empty());
    assert_eq!(
        ran.exit.and_then(|e| e.code()),
        Some(1),
        "{}",
        last_lines(&ran.log, 10)
    );
    Ok(())
}
