//! One broker per test: mock cluster, tansu, or an external Kafka.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use brook_runtime::kafka::{KafkaAdmin, KafkaConfig};
use brook_topology::TopicSpec;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::{Namespace, Result, TansuBroker, TestkitError, io_err, kafka_err};

/// Which kind of broker a [`TestBroker`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerKind {
    /// librdkafka's in-process mock cluster.
    Mock,
    /// A tansu process with sqlite storage.
    Tansu,
    /// The Kafka named by `BROOK_BOOTSTRAP`.
    External,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Mock => "librdkafka mock",
            BrokerKind::Tansu => "tansu",
            BrokerKind::External => "external Kafka",
        })
    }
}

/// What a broker implements faithfully (see `DESIGN.md`, "Brokers on these
/// machines"). Tests check these instead of assuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// CreateTopics through the admin API.
    pub admin_api: bool,
    /// DeleteTopics deletes the topics named, and only those (tansu 0.6.0
    /// deletes every topic on any DeleteTopics request).
    pub delete_topics: bool,
    /// Topics keep their configs (`cleanup.policy=compact`) and DescribeConfigs reports them.
    pub topic_configs: bool,
    /// Transactions commit and abort, read_committed hides aborted records,
    /// and zombie producers are fenced.
    pub transactions: bool,
    /// The test can stop and restart the broker and keep its data.
    pub restart: bool,
    /// Partitions keep everything written (the mock cluster drops data past ~5 MiB).
    pub unbounded_partitions: bool,
}

/// How [`TestBroker::restart`] stops the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// SIGTERM: the broker shuts down cleanly.
    Graceful,
    /// SIGKILL: no chance to flush anything.
    Crash,
}

enum Backend {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(TansuBroker),
    External,
}

/// A broker for one test. Dropping it stops the broker (mock, tansu).
pub struct TestBroker {
    kind: BrokerKind,
    config: KafkaConfig,
    backend: Backend,
    /// A TLS front the clients go through, kept for as long as the broker
    /// (dropping it stops it).
    _tls: Option<crate::TlsProxy>,
}

impl fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBroker")
            .field("kind", &self.kind)
            .field("bootstrap", &self.config.bootstrap())
            .finish()
    }
}

/// Client settings that make tests fail fast instead of hanging.
///
/// `session.timeout.ms` is Kafka's minimum (6 s) instead of 45 s: a consumer
/// that rejoins a group it has just left can stall until the session of a
/// stale member id expires (seen on the mock cluster: 44 s per rejoin;
/// librdkafka issue 5569 describes the cause).
fn test_config(bootstrap: impl Into<String>) -> KafkaConfig {
    KafkaConfig::new(bootstrap)
        .set("socket.timeout.ms", "10000")
        .set_producer("message.timeout.ms", "30000")
        .set_consumer("session.timeout.ms", "6000")
        .set_consumer("heartbeat.interval.ms", "500")
}

impl TestBroker {
    /// A fresh librdkafka mock cluster (one broker), or the external Kafka
    /// when `BROOK_BOOTSTRAP` is set.
    pub fn mock() -> Result<Self> {
        if let Some(external) = Self::external() {
            return Ok(external);
        }
        let cluster =
            MockCluster::new(1).map_err(kafka_err("starting a librdkafka mock cluster"))?;
        Ok(TestBroker {
            kind: BrokerKind::Mock,
            config: test_config(cluster.bootstrap_servers()),
            backend: Backend::Mock(cluster),
            _tls: None,
        })
    }

    /// A fresh tansu broker process, or the external Kafka when
    /// `BROOK_BOOTSTRAP` is set.
    pub fn tansu() -> Result<Self> {
        if let Some(external) = Self::external() {
            return Ok(external);
        }
        let broker = TansuBroker::start()?;
        Ok(TestBroker {
            kind: BrokerKind::Tansu,
            config: test_config(broker.bootstrap()),
            backend: Backend::Tansu(broker),
            _tls: None,
        })
    }

    /// A fresh tansu broker that lets in only clients logged in as `user`
    /// with `password` (SASL SCRAM-SHA-512); [`config`](Self::config)
    /// carries the login. No external Kafka: its users are not ours.
    pub fn tansu_with_scram(user: &str, password: &str) -> Result<Self> {
        let mut broker = TansuBroker::start()?;
        broker.require_scram(user, password)?;
        let config = test_config(broker.bootstrap())
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanisms", crate::tansu::TANSU_SASL_MECHANISM)
            .set("sasl.username", user)
            .set("sasl.password", password);
        Ok(TestBroker {
            kind: BrokerKind::Tansu,
            config,
            backend: Backend::Tansu(broker),
            _tls: None,
        })
    }

    /// A fresh tansu broker reached only through TLS (a [`TlsProxy`]
    /// in front of it, with a self-signed certificate);
    /// [`config`](Self::config) carries `security.protocol=SSL` and the
    /// certificate as `ssl.ca.location`.
    ///
    /// [`TlsProxy`]: crate::TlsProxy
    pub fn tansu_with_tls() -> Result<Self> {
        let (broker, proxy) = TansuBroker::start_behind(|broker_port| {
            let port = crate::tansu::free_port()?;
            let proxy = crate::TlsProxy::start(port, ([127, 0, 0, 1], broker_port).into())?;
            Ok((proxy, Some(port)))
        })?;
        let config = test_config(proxy.bootstrap())
            .set("security.protocol", "SSL")
            .set("ssl.ca.location", proxy.ca_location().display().to_string());
        Ok(TestBroker {
            kind: BrokerKind::Tansu,
            config,
            backend: Backend::Tansu(broker),
            _tls: Some(proxy),
        })
    }

    /// The Kafka named by `BROOK_BOOTSTRAP`, if set.
    pub fn external() -> Option<Self> {
        let config = KafkaConfig::from_env()?;
        Some(TestBroker {
            kind: BrokerKind::External,
            config: test_config(config.bootstrap()),
            backend: Backend::External,
            _tls: None,
        })
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// What this broker implements.
    pub fn capabilities(&self) -> Capabilities {
        match self.kind {
            BrokerKind::Mock => Capabilities {
                admin_api: false,
                delete_topics: false,
                topic_configs: false,
                transactions: false,
                restart: false,
                unbounded_partitions: false,
            },
            BrokerKind::Tansu => Capabilities {
                admin_api: true,
                delete_topics: false,
                topic_configs: true,
                transactions: false,
                restart: true,
                unbounded_partitions: true,
            },
            BrokerKind::External => Capabilities {
                admin_api: true,
                delete_topics: true,
                topic_configs: true,
                transactions: true,
                restart: false,
                unbounded_partitions: true,
            },
        }
    }

    /// Client settings for this broker (brook's defaults plus short timeouts).
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> &str {
        self.config.bootstrap()
    }

    /// Fresh, unique topic and group names for one test.
    pub fn namespace(&self) -> Namespace {
        Namespace::fresh()
    }

    /// Creates topics. On the mock cluster, which has no admin API, topics
    /// are created through the mock's own interface and their configs are
    /// not kept.
    pub fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        match &self.backend {
            Backend::Mock(cluster) => {
                for spec in specs {
                    spec.validate()
                        .map_err(brook_runtime::kafka::AdminError::from)?;
                    cluster
                        .create_topic(&spec.name, spec.partitions, spec.replication)
                        .map_err(kafka_err(format!(
                            "creating topic {:?} on the mock cluster",
                            spec.name
                        )))?;
                }
                Ok(())
            }
            Backend::Tansu(_) | Backend::External => {
                let admin = self.admin()?;
                block_on(admin.create_topics(specs))??;
                Ok(())
            }
        }
    }

    /// The configs the broker reports for `topic`.
    pub fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        if !self.capabilities().topic_configs {
            return Err(self.unsupported("topic configs (DescribeConfigs)"));
        }
        let admin = self.admin()?;
        Ok(block_on(admin.topic_configs(topic))??)
    }

    /// The number of partitions of `topic`, from metadata.
    pub fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.admin()?.partition_count(topic)?)
    }

    /// Stops the broker and starts it again on the same address and data.
    pub fn restart(&mut self, how: Restart) -> Result<()> {
        match (&mut self.backend, how) {
            (Backend::Tansu(broker), Restart::Graceful) => broker.restart(),
            (Backend::Tansu(broker), Restart::Crash) => broker.crash_and_restart(),
            _ => Err(self.unsupported("restarting the broker")),
        }
    }

    /// Stops the broker (tansu; `Restart::Crash`: SIGKILL) and leaves it
    /// stopped: clients find no one at its address until
    /// [`resume`](Self::resume).
    pub fn stop(&mut self, how: Restart) -> Result<()> {
        match (&mut self.backend, how) {
            (Backend::Tansu(broker), Restart::Graceful) => broker.stop(),
            (Backend::Tansu(broker), Restart::Crash) => broker.kill(),
            _ => Err(self.unsupported("stopping the broker")),
        }
    }

    /// Starts a stopped broker again on the same address and data.
    pub fn resume(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Tansu(broker) => broker.resume(),
            _ => Err(self.unsupported("restarting the broker")),
        }
    }

    /// The end of the broker's own log, where it has one (tansu).
    pub fn log_tail(&self) -> Option<String> {
        match &self.backend {
            Backend::Tansu(broker) => Some(broker.log_tail()),
            _ => None,
        }
    }

    fn admin(&self) -> Result<KafkaAdmin> {
        Ok(KafkaAdmin::new(&self.config)?.with_timeout(Duration::from_secs(15)))
    }

    fn unsupported(&self, what: &'static str) -> TestkitError {
        TestkitError::Unsupported {
            broker: self.kind,
            what,
        }
    }
}

/// Runs a future to completion on a private current-thread runtime. Admin
/// futures are driven by librdkafka's own threads, so this never deadlocks.
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(io_err("starting a tokio runtime"))?;
    Ok(runtime.block_on(future))
}
