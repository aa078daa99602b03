//! Apache Kafka brokers as child processes: the test broker of record.
//!
//! `make tools` (scripts/install-kafka.sh) copies Kafka's jars from Maven
//! Central into `$BROOK_CACHE/tools/kafka-<version>/libs`. A [`KafkaBroker`]
//! is one KRaft node or several: each node runs `kafka.Kafka` in combined
//! mode (`process.roles=broker,controller`) in a temporary directory
//! formatted by Kafka's storage tool, on free loopback ports, with a small
//! heap. Starting waits until every node answers a metadata request that
//! lists all brokers; dropping stops the JVMs, and on Linux the kernel kills
//! them if the thread that started them dies first (a test process killed
//! by a timeout leaves no JVM behind).
//!
//! Every node has three listeners: `CLIENT` (what tests hand to brook: plain,
//! TLS, SASL or SASL over TLS, per [`KafkaOptions`]), `INTERNAL` (plaintext;
//! brokers replicate over it and the test harness administers through it,
//! as a super user when ACLs are on) and `CONTROLLER`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{Result, TestkitError, io_err};

/// The Kafka version brook's tests run against (tools/kafka/pom.xml).
pub const KAFKA_VERSION: &str = "4.4.0";

/// Environment variable naming a folder of Kafka jars to use instead of the
/// cached ones.
pub const KAFKA_LIBS_ENV: &str = "BROOK_KAFKA_LIBS";

/// Extra JVM options for the brokers (replacing the defaults' heap and GC
/// settings when given).
pub const KAFKA_JVM_OPTS_ENV: &str = "BROOK_KAFKA_JVM_OPTS";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_BYTES: u64 = 6000;
/// Heap and GC for a test broker: enough for the suites, small on a 2-core,
/// shared machine.
const DEFAULT_JVM_OPTS: &[&str] = &[
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
];

fn cache_dir() -> PathBuf {
    std::env::var_os("BROOK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/brook")))
        .unwrap_or_else(|| PathBuf::from(".cache/brook"))
}

/// The folder with Kafka's jars: `$BROOK_KAFKA_LIBS`, else the copy `make
/// tools` installs (`$BROOK_CACHE/tools/kafka-<version>/libs`). Checked to
/// hold this version's broker and tools.
pub fn kafka_libs() -> Result<PathBuf> {
    let libs = std::env::var_os(KAFKA_LIBS_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("tools/kafka-{KAFKA_VERSION}/libs")));
    let broker_jar = libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    let tools_jar = libs.join(format!("kafka-tools-{KAFKA_VERSION}.jar"));
    if broker_jar.is_file() && tools_jar.is_file() {
        Ok(libs)
    } else {
        Err(TestkitError::KafkaMissing {
            libs: libs.display().to_string(),
        })
    }
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}

/// A SASL mechanism a broker offers on its client listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// `PLAIN`: user and password checked against the broker's JAAS list.
    Plain,
    /// `SCRAM-SHA-512`: credentials stored in the cluster metadata.
    ScramSha512,
}

impl SaslMechanism {
    /// The name in `sasl.mechanism(s)`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How clients reach a [`KafkaBroker`] and what it lets them do.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    /// Nodes (each broker and controller). 0 is taken as 1.
    pub nodes: usize,
    /// TLS on the client listener, with a test CA made for this broker.
    pub tls: bool,
    /// Clients must present a certificate signed by the test CA (mutual
    /// TLS); their principal is `User:CN=<name>`.
    pub mutual_tls: bool,
    /// SASL mechanisms on the client listener; empty means no SASL.
    pub sasl: Vec<SaslMechanism>,
    /// Users and passwords known to every mechanism in `sasl`.
    pub users: Vec<(String, String)>,
    /// KRaft's StandardAuthorizer with `allow.everyone.if.no.acl.found=false`:
    /// clients may do only what ACLs allow.
    pub acls: bool,
    /// Extra broker properties (overriding the defaults).
    pub properties: BTreeMap<String, String>,
}

impl KafkaOptions {
    /// One plaintext node.
    pub fn single() -> Self {
        KafkaOptions {
            nodes: 1,
            ..KafkaOptions::default()
        }
    }

    /// `n` plaintext nodes, topics replicated 3 times with
    /// `min.insync.replicas` 2 by default when `n >= 3`.
    pub fn cluster(n: usize) -> Self {
        let mut options = KafkaOptions {
            nodes: n,
            ..KafkaOptions::default()
        };
        if n >= 3 {
            for (key, value) in [
                ("default.replication.factor", "3"),
                ("min.insync.replicas", "2"),
                ("offsets.topic.replication.factor", "3"),
                ("transaction.state.log.replication.factor", "3"),
                ("transaction.state.log.min.isr", "2"),
            ] {
                options.properties.insert(key.into(), value.into());
            }
        }
        options
    }

    /// Sets a broker property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    fn client_protocol(&self) -> &'static str {
        match (self.tls, self.sasl.is_empty()) {
            (false, true) => "PLAINTEXT",
            (true, true) => "SSL",
            (false, false) => "SASL_PLAINTEXT",
            (true, false) => "SASL_SSL",
        }
    }
}

/// The test CA and the certificates made with it (PEM files).
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// The CA certificate clients and brokers trust (`ssl.ca.location`).
    pub fn ca_location(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Makes a client certificate for `name` (subject `CN=<name>`), signed
    /// by the CA: returns (certificate, key) paths for
    /// `ssl.certificate.location` and `ssl.key.location`.
    pub fn client_certificate(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let key = self.dir.join(format!("client-{name}.key"));
        let cert = self.dir.join(format!("client-{name}.pem"));
        self.issue(name, &key, &cert, None)?;
        Ok((cert, key))
    }

    fn make(dir: &Path) -> Result<Self> {
        let ca = TestCa {
            dir: dir.to_owned(),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=brook-test-ca",
            ],
        )?;
        // The broker's key and certificate (for 127.0.0.1 and localhost)
        // in one PEM file, as Kafka's `ssl.keystore.type=PEM` reads it.
        let key = dir.join("broker.key");
        let cert = dir.join("broker.pem");
        ca.issue(
            "localhost",
            &key,
            &cert,
            Some("subjectAltName=IP:127.0.0.1,DNS:localhost"),
        )?;
        let mut keystore = std::fs::read_to_string(&key).map_err(io_err("reading broker.key"))?;
        keystore.push_str(&std::fs::read_to_string(&cert).map_err(io_err("reading broker.pem"))?);
        std::fs::write(dir.join("broker-keystore.pem"), keystore)
            .map_err(io_err("writing broker-keystore.pem"))?;
        Ok(ca)
    }

    fn issue(&self, cn: &str, key: &Path, cert: &Path, san: Option<&str>) -> Result<()> {
        let csr = self.dir.join(format!("{cn}.csr"));
        let (key_s, cert_s, csr_s) = (
            key.display().to_string(),
            cert.display().to_string(),
            csr.display().to_string(),
        );
        // PKCS#8, unencrypted: what Kafka's PEM keystore and librdkafka read.
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key_s,
                "-out",
                &csr_s,
                "-subj",
                &format!("/CN={cn}"),
            ],
        )?;
        let ext = self.dir.join(format!("{cn}.ext"));
        std::fs::write(&ext, san.map(|s| format!("{s}\n")).unwrap_or_default())
            .map_err(io_err("writing an openssl extension file"))?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr_s,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert_s,
                "-days",
                "2",
                "-extfile",
                &ext.display().to_string(),
            ],
        )
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestkitError::Io {
            what: "running openssl (install it with `make tools`)".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Io {
            what: format!(
                "openssl {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            ),
            source: std::io::Error::other("openssl failed"),
        })
    }
}

#[derive(Debug)]
struct Node {
    id: usize,
    client_port: u16,
    internal_port: u16,
    controller_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }
}

/// A running Apache Kafka cluster of one or more KRaft nodes.
#[derive(Debug)]
pub struct KafkaBroker {
    libs: PathBuf,
    options: KafkaOptions,
    root: tempfile::TempDir,
    nodes: Vec<Node>,
    ca: Option<TestCa>,
    started_in: Duration,
}

impl KafkaBroker {
    /// Starts one plaintext node.
    pub fn start() -> Result<Self> {
        Self::start_with(KafkaOptions::single())
    }

    /// Starts the nodes `options` describe and waits until each answers.
    pub fn start_with(options: KafkaOptions) -> Result<Self> {
        let libs = kafka_libs()?;
        let started = Instant::now();
        let n = options.nodes.max(1);
        let root = tempfile::Builder::new()
            .prefix("brook-kafka-")
            .tempdir()
            .map_err(io_err("creating a directory for Kafka"))?;
        let mut ports = crate::free_ports(3 * n)?.into_iter();
        let mut nodes = Vec::with_capacity(n);
        for id in 1..=n {
            let dir = root.path().join(format!("node-{id}"));
            std::fs::create_dir_all(dir.join("data"))
                .map_err(io_err("creating a Kafka node directory"))?;
            nodes.push(Node {
                id,
                client_port: ports.next().expect("enough ports"),
                internal_port: ports.next().expect("enough ports"),
                controller_port: ports.next().expect("enough ports"),
                dir,
                child: None,
            });
        }
        let ca = if options.tls {
            Some(TestCa::make(root.path())?)
        } else {
            None
        };
        let mut broker = KafkaBroker {
            libs,
            options,
            root,
            nodes,
            ca,
            started_in: Duration::ZERO,
        };
        broker.write_configs()?;
        broker.format()?;
        for i in 0..broker.nodes.len() {
            broker.spawn(i)?;
        }
        for i in 0..broker.nodes.len() {
            broker.wait_ready(i)?;
        }
        broker.started_in = started.elapsed();
        Ok(broker)
    }

    /// How long [`start_with`](Self::start_with) took (format, JVM start,
    /// first metadata answer from every node).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The client listeners, `127.0.0.1:<port>,...`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The plaintext internal listeners (super user when ACLs are on).
    pub fn internal_bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.internal_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `security.protocol` of the client listener.
    pub fn client_protocol(&self) -> &'static str {
        self.options.client_protocol()
    }

    /// The test CA, when the client listener has TLS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node ids (Kafka's `node.id`, from 1).
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id as i32).collect()
    }

    /// The process id of a running node's JVM.
    pub fn pid(&self, node: i32) -> Option<u32> {
        self.node(node)
            .ok()
            .and_then(|i| self.nodes[i].child.as_ref())
            .map(Child::id)
    }

    /// The `node.id` leading `topic`'s `partition`, as a running node's
    /// metadata says (asked on the internal listener).
    pub fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let running: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.internal_port))
            .collect();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", running.join(","))
            .create()
            .map_err(crate::kafka_err("creating a metadata client"))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(crate::kafka_err("fetching metadata"))?;
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.leader())
            .filter(|&leader| leader >= 0)
            .ok_or_else(|| TestkitError::Io {
                what: format!("the leader of {topic}[{partition}]"),
                source: std::io::Error::other("no leader in the metadata"),
            })
    }

    /// Peak resident memory (VmHWM) of each running node's JVM, in KiB.
    pub fn peak_rss_kib(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref())
            .filter_map(|c| crate::proc_status_kib(c.id(), "VmHWM"))
            .collect()
    }

    /// Stops every node (SIGTERM; SIGKILL after 30 s) and starts them again
    /// on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.resume()
    }

    /// Kills every node without warning (SIGKILL) and starts them again on
    /// the same ports and data.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.kill()?;
        self.resume()
    }

    /// SIGKILLs every node and leaves them down.
    pub fn kill(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.kill_index(i)?;
        }
        Ok(())
    }

    /// SIGKILLs one node (by `node.id`) and leaves it down.
    pub fn kill_node(&mut self, node: i32) -> Result<()> {
        let i = self.node(node)?;
        self.kill_index(i)
    }

    /// Starts one stopped node again and waits until it answers.
    pub fn resume_node(&mut self, node: i32) -> Result<()> {
        let i = self.node(node)?;
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
            self.wait_ready(i)?;
        }
        Ok(())
    }

    /// Starts every stopped node again (a no-op for running ones).
    pub fn resume(&mut self) -> Result<()> {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i)?;
        }
        for &i in &stopped {
            self.wait_ready(i)?;
        }
        Ok(())
    }

    /// Stops every node cleanly; the data stays.
    pub fn stop(&mut self) -> Result<()> {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                crate::signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            loop {
                if child
                    .try_wait()
                    .map_err(io_err("waiting for Kafka"))?
                    .is_some()
                {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The lines of every node's whole log that contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|node| std::fs::read_to_string(node.log_path()).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|line| line.contains(needle))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The end of every node's log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(out, "--- node {} ---\n{}", node.id, tail(&node.log_path()));
        }
        out
    }

    /// Runs one of Kafka's command-line tools (`main_class`, e.g.
    /// `org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`) on the
    /// broker's classpath and returns what it printed.
    pub fn run_tool(&self, main_class: &str, args: &[&str]) -> Result<Output> {
        run_kafka_tool(&self.libs, main_class, args)
    }

    fn node(&self, node: i32) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.id as i32 == node)
            .ok_or_else(|| TestkitError::Io {
                what: format!("no Kafka node {node}"),
                source: std::io::Error::other("unknown node"),
            })
    }

    fn kill_index(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().map_err(io_err("killing Kafka"))?;
            child.wait().map_err(io_err("waiting for Kafka"))?;
        }
        Ok(())
    }

    fn voters(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn write_configs(&self) -> Result<()> {
        let protocol = self.options.client_protocol();
        let voters = self.voters();
        for node in &self.nodes {
            let mut props: BTreeMap<String, String> = BTreeMap::new();
            let mut set = |k: &str, v: String| {
                props.insert(k.to_owned(), v);
            };
            set("process.roles", "broker,controller".into());
            set("node.id", node.id.to_string());
            set("controller.quorum.voters", voters.clone());
            set(
                "listeners",
                format!(
                    "CLIENT://127.0.0.1:{},INTERNAL://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    node.client_port, node.internal_port, node.controller_port
                ),
            );
            set(
                "advertised.listeners",
                format!(
                    "CLIENT://127.0.0.1:{},INTERNAL://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    node.client_port, node.internal_port, node.controller_port
                ),
            );
            set(
                "listener.security.protocol.map",
                format!("CLIENT:{protocol},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"),
            );
            set("controller.listener.names", "CONTROLLER".into());
            set("inter.broker.listener.name", "INTERNAL".into());
            set("log.dirs", node.dir.join("data").display().to_string());
            set("num.partitions", "1".into());
            set("offsets.topic.replication.factor", "1".into());
            set("offsets.topic.num.partitions", "5".into());
            set("transaction.state.log.replication.factor", "1".into());
            set("transaction.state.log.min.isr", "1".into());
            set("transaction.state.log.num.partitions", "5".into());
            set(
                "share.coordinator.state.topic.replication.factor",
                "1".into(),
            );
            set("share.coordinator.state.topic.min.isr", "1".into());
            set("group.initial.rebalance.delay.ms", "0".into());
            // Off, as in production: brook creates the topics it needs and
            // tests create theirs. On, a client's metadata request can
            // create a topic with 1 partition before the topic tool makes
            // it with 10 (seen in eventmart_processes: co-partitioning).
            set("auto.create.topics.enable", "false".into());
            // The coordinator looks for transactions past their timeout
            // every second, not every 10 s: a crashed instance's open
            // transaction is aborted within its timeout plus a second.
            set(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                "1000".into(),
            );
            // Compaction visible within a test's lifetime.
            set("log.cleaner.backoff.ms", "1000".into());
            set("log.retention.check.interval.ms", "5000".into());
            if let Some(ca) = &self.ca {
                let dir = ca.dir.display();
                set("listener.name.client.ssl.keystore.type", "PEM".into());
                set(
                    "listener.name.client.ssl.keystore.location",
                    format!("{dir}/broker-keystore.pem"),
                );
                set("listener.name.client.ssl.truststore.type", "PEM".into());
                set(
                    "listener.name.client.ssl.truststore.location",
                    format!("{dir}/ca.pem"),
                );
                if self.options.mutual_tls {
                    set("listener.name.client.ssl.client.auth", "required".into());
                }
            }
            if !self.options.sasl.is_empty() {
                let names: Vec<&str> = self.options.sasl.iter().map(|m| m.name()).collect();
                set(
                    "listener.name.client.sasl.enabled.mechanisms",
                    names.join(","),
                );
                for mechanism in &self.options.sasl {
                    let jaas = match mechanism {
                        SaslMechanism::Plain => {
                            let mut jaas = String::from(
                                "org.apache.kafka.common.security.plain.PlainLoginModule required",
                            );
                            for (user, password) in &self.options.users {
                                let _ = write!(jaas, " user_{user}=\"{password}\"");
                            }
                            jaas + ";"
                        }
                        SaslMechanism::ScramSha512 => {
                            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                                .to_owned()
                        }
                    };
                    set(
                        &format!(
                            "listener.name.client.{}.sasl.jaas.config",
                            mechanism.name().to_lowercase()
                        ),
                        jaas,
                    );
                }
            }
            if self.options.acls {
                set(
                    "authorizer.class.name",
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
                );
                set("allow.everyone.if.no.acl.found", "false".into());
                // The internal and controller listeners are plaintext on
                // loopback, used by the brokers and the test harness only.
                set("super.users", "User:ANONYMOUS".into());
            }
            for (k, v) in &self.options.properties {
                set(k, v.clone());
            }
            let mut text = String::new();
            for (k, v) in &props {
                let _ = writeln!(text, "{k}={v}");
            }
            std::fs::write(node.dir.join("server.properties"), text)
                .map_err(io_err("writing server.properties"))?;
            std::fs::write(
                node.dir.join("log4j2.properties"),
                log4j_config(&std::env::var("BROOK_KAFKA_LOG").unwrap_or_else(|_| "WARN".into())),
            )
            .map_err(io_err("writing log4j2.properties"))?;
        }
        Ok(())
    }

    fn format(&self) -> Result<()> {
        let uuid = run_kafka_tool(&self.libs, "kafka.tools.StorageTool", &["random-uuid"])?;
        let cluster_id = String::from_utf8_lossy(&uuid.stdout).trim().to_owned();
        if !uuid.status.success() || cluster_id.is_empty() {
            return Err(self.start_error(
                0,
                format!(
                    "kafka-storage random-uuid failed: {}",
                    String::from_utf8_lossy(&uuid.stderr)
                ),
            ));
        }
        let scram: Vec<String> = if self.options.sasl.contains(&SaslMechanism::ScramSha512) {
            self.options
                .users
                .iter()
                .map(|(user, password)| format!("SCRAM-SHA-512=[name={user},password={password}]"))
                .collect()
        } else {
            Vec::new()
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let config = node.dir.join("server.properties").display().to_string();
            let mut args = vec!["format", "-t", &cluster_id, "-c", &config];
            for s in &scram {
                args.extend(["--add-scram", s]);
            }
            let out = run_kafka_tool(&self.libs, "kafka.tools.StorageTool", &args)?;
            if !out.status.success() {
                return Err(self.start_error(
                    i,
                    format!(
                        "kafka-storage format failed: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .map_err(io_err("opening Kafka's log"))?;
        let log_err = log.try_clone().map_err(io_err("opening Kafka's log"))?;
        let mut command = Command::new(java());
        command.current_dir(&node.dir).args(jvm_opts()).args([
            format!(
                "-Dlog4j2.configurationFile={}",
                node.dir.join("log4j2.properties").display()
            ),
            format!("-Dkafka.logs.dir={}", node.dir.display()),
            "-cp".into(),
            classpath(&self.libs),
            "kafka.Kafka".into(),
            node.dir.join("server.properties").display().to_string(),
        ]);
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        crate::die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(io_err(format!("starting {} (Kafka)", java().display())))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].internal_port));
        let started = Instant::now();
        loop {
            let child = self.nodes[i]
                .child
                .as_mut()
                .expect("spawned before waiting");
            if let Some(status) = child.try_wait().map_err(io_err("waiting for Kafka"))? {
                self.nodes[i].child = None;
                return Err(self.start_error(i, format!("exited with {status}")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.start_error(i, format!("not listening after {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening is not serving: wait until this node's metadata lists
        // every broker of the cluster.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr.to_string())
            .create()
            .map_err(|e| self.start_error(i, format!("cannot create a probe client: {e}")))?;
        let want = self.nodes.len();
        loop {
            let remaining = START_TIMEOUT.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(self.start_error(i, "no full metadata answer".into()));
            }
            match consumer.fetch_metadata(None, remaining.min(Duration::from_secs(5))) {
                Ok(metadata) if metadata.brokers().len() >= want => return Ok(()),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn start_error(&self, i: usize, reason: String) -> TestkitError {
        TestkitError::KafkaStart {
            node: self.nodes.get(i).map_or(0, |n| n.id),
            reason,
            log: self
                .nodes
                .get(i)
                .map(|n| tail(&n.log_path()))
                .unwrap_or_default(),
        }
    }

    /// The directory holding every node's configuration, data and log.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn jvm_opts() -> Vec<String> {
    match std::env::var(KAFKA_JVM_OPTS_ENV) {
        Ok(opts) if !opts.trim().is_empty() => opts.split_whitespace().map(str::to_owned).collect(),
        _ => DEFAULT_JVM_OPTS.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn log4j_config(level: &str) -> String {
    format!(
        "rootLogger.level={level}\n\
         rootLogger.appenderRef.out.ref=OUT\n\
         appender.out.type=Console\n\
         appender.out.name=OUT\n\
         appender.out.layout.type=PatternLayout\n\
         appender.out.layout.pattern=[%d] %p %m (%c)%n\n\
         logger.txnmarkers.name=kafka.coordinator.transaction.TransactionMarkerChannelManager\n\
         logger.txnmarkers.level=INFO\n"
    )
}

/// Runs a Kafka tool's main class on the jars of `libs` (tools log warnings
/// only; short heap).
pub fn run_kafka_tool(libs: &Path, main_class: &str, args: &[&str]) -> Result<Output> {
    let log4j = std::env::temp_dir().join("brook-kafka-tools-log4j2.properties");
    if !log4j.is_file() {
        std::fs::write(&log4j, log4j_config("WARN"))
            .map_err(io_err("writing the tools' log4j2.properties"))?;
    }
    let mut command = Command::new(java());
    command
        .args([
            "-Xmx256m".to_owned(),
            "-XX:TieredStopAtLevel=1".to_owned(),
            "-XX:+UseSerialGC".to_owned(),
            format!("-Dlog4j2.configurationFile={}", log4j.display()),
            "-cp".to_owned(),
            classpath(libs),
            main_class.to_owned(),
        ])
        .args(args)
        .stdin(Stdio::null());
    crate::die_with_parent(&mut command);
    command.output().map_err(io_err(format!(
        "running {main_class} with {}",
        java().display()
    )))
}

fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut tail = Vec::new();
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).into_owned()
}
