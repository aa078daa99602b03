//! One broker per test: mock cluster, Apache Kafka, or an external Kafka.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use brook_runtime::kafka::{KafkaAdmin, KafkaConfig};
use brook_topology::TopicSpec;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::{
    KafkaBroker, KafkaOptions, Namespace, Result, SaslMechanism, TestkitError, io_err, kafka_err,
};

/// Which kind of broker a [`TestBroker`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerKind {
    /// librdkafka's in-process mock cluster.
    Mock,
    /// Apache Kafka (KRaft) processes started by the test.
    Kafka,
    /// The Kafka named by `BROOK_BOOTSTRAP`.
    External,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Mock => "librdkafka mock",
            BrokerKind::Kafka => "Apache Kafka",
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
    /// DeleteTopics deletes the topics named, and only those.
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
    Kafka(KafkaBroker),
    External,
}

/// A broker for one test. Dropping it stops the broker (mock, Kafka).
pub struct TestBroker {
    kind: BrokerKind,
    config: KafkaConfig,
    backend: Backend,
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
        crate::capture_logs();
        if let Some(external) = Self::external() {
            return Ok(external);
        }
        let cluster =
            MockCluster::new(1).map_err(kafka_err("starting a librdkafka mock cluster"))?;
        Ok(TestBroker {
            kind: BrokerKind::Mock,
            config: test_config(cluster.bootstrap_servers()),
            backend: Backend::Mock(cluster),
        })
    }

    /// A fresh single-node Apache Kafka (plaintext), or the external Kafka
    /// when `BROOK_BOOTSTRAP` is set.
    pub fn kafka() -> Result<Self> {
        if let Some(external) = Self::external() {
            return Ok(external);
        }
        Self::kafka_with(KafkaOptions::single())
    }

    /// A fresh Apache Kafka as `options` describe (several nodes, TLS, SASL,
    /// ACLs). [`config`](Self::config) carries what a client needs: the
    /// test CA as `ssl.ca.location`; with mutual TLS a certificate for the
    /// first user (`CN=<user>`); with SASL the first user's login and the
    /// first mechanism. Never the external Kafka: its setup is not ours.
    pub fn kafka_with(options: KafkaOptions) -> Result<Self> {
        crate::capture_logs();
        let broker = KafkaBroker::start_with(options.clone())?;
        let mut config =
            test_config(broker.bootstrap()).set("security.protocol", broker.client_protocol());
        if let Some(ca) = broker.ca() {
            config = config.set("ssl.ca.location", ca.ca_location().display().to_string());
            if options.mutual_tls {
                let name = options
                    .users
                    .first()
                    .map_or("brook-test", |(u, _)| u.as_str());
                let (cert, key) = ca.client_certificate(name)?;
                config = config
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
        }
        if let (Some(mechanism), Some((user, password))) =
            (options.sasl.first(), options.users.first())
        {
            config = config
                .set("sasl.mechanisms", mechanism.name())
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        Ok(TestBroker {
            kind: BrokerKind::Kafka,
            config,
            backend: Backend::Kafka(broker),
        })
    }

    /// A fresh single-node Kafka whose client listener takes only SASL
    /// SCRAM-SHA-512 logins of `user` with `password`, over plaintext.
    pub fn kafka_with_scram(user: &str, password: &str) -> Result<Self> {
        Self::kafka_with(KafkaOptions {
            nodes: 1,
            sasl: vec![SaslMechanism::ScramSha512],
            users: vec![(user.to_owned(), password.to_owned())],
            ..KafkaOptions::default()
        })
    }

    /// A fresh single-node Kafka reached only through TLS (a test CA's
    /// certificate for 127.0.0.1).
    pub fn kafka_with_tls() -> Result<Self> {
        Self::kafka_with(KafkaOptions {
            nodes: 1,
            tls: true,
            ..KafkaOptions::default()
        })
    }

    /// The Kafka named by `BROOK_BOOTSTRAP`, if set.
    pub fn external() -> Option<Self> {
        let config = KafkaConfig::from_env()?;
        crate::capture_logs();
        Some(TestBroker {
            kind: BrokerKind::External,
            config: test_config(config.bootstrap()),
            backend: Backend::External,
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
            BrokerKind::Kafka => Capabilities {
                admin_api: true,
                delete_topics: true,
                topic_configs: true,
                transactions: true,
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
                    brook_runtime::kafka::create_mock_topic(cluster, spec).map_err(kafka_err(
                        format!("creating topic {:?} on the mock cluster", spec.name),
                    ))?;
                }
                Ok(())
            }
            Backend::Kafka(_) | Backend::External => {
                let admin = self.admin()?;
                block_on(admin.create_topics(specs))??;
                Ok(())
            }
        }
    }

    /// Makes the next requests of kind `api` fail with `errors`, one each,
    /// in order (the mock cluster's error injection; Kafka cannot).
    pub fn fail_requests(
        &self,
        api: rdkafka::types::RDKafkaApiKey,
        errors: &[rdkafka::types::RDKafkaRespErr],
    ) -> Result<()> {
        match &self.backend {
            Backend::Mock(cluster) => {
                cluster.request_errors(api, errors);
                Ok(())
            }
            _ => Err(self.unsupported("injecting request errors")),
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
            (Backend::Kafka(broker), Restart::Graceful) => broker.restart(),
            (Backend::Kafka(broker), Restart::Crash) => broker.crash_and_restart(),
            _ => Err(self.unsupported("restarting the broker")),
        }
    }

    /// Stops the broker (`Restart::Crash`: SIGKILL) and leaves it
    /// stopped: clients find no one at its address until
    /// [`resume`](Self::resume).
    pub fn stop(&mut self, how: Restart) -> Result<()> {
        match (&mut self.backend, how) {
            (Backend::Kafka(broker), Restart::Graceful) => broker.stop(),
            (Backend::Kafka(broker), Restart::Crash) => broker.kill(),
            _ => Err(self.unsupported("stopping the broker")),
        }
    }

    /// Starts a stopped broker again on the same address and data.
    pub fn resume(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Kafka(broker) => broker.resume(),
            _ => Err(self.unsupported("restarting the broker")),
        }
    }

    /// The end of the broker's own log, where it has one (Kafka started
    /// by the test).
    pub fn log_tail(&self) -> Option<String> {
        match &self.backend {
            Backend::Kafka(broker) => Some(broker.log_tail()),
            _ => None,
        }
    }

    /// The Kafka processes, when this test started them.
    pub fn kafka_broker(&self) -> Option<&KafkaBroker> {
        match &self.backend {
            Backend::Kafka(broker) => Some(broker),
            _ => None,
        }
    }

    /// The Kafka processes, to kill or restart single nodes.
    pub fn kafka_broker_mut(&mut self) -> Option<&mut KafkaBroker> {
        match &mut self.backend {
            Backend::Kafka(broker) => Some(broker),
            _ => None,
        }
    }

    /// Client settings of the test harness itself: on a Kafka started by
    /// the test, its plaintext internal listener (a super user when ACLs
    /// are on); elsewhere [`config`](Self::config).
    pub fn admin_config(&self) -> KafkaConfig {
        match &self.backend {
            Backend::Kafka(broker) => test_config(broker.internal_bootstrap()),
            _ => self.config.clone(),
        }
    }

    fn admin(&self) -> Result<KafkaAdmin> {
        Ok(KafkaAdmin::new(&self.admin_config())?.with_timeout(Duration::from_secs(15)))
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
