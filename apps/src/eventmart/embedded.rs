//! The embedded broker of `make demo`: librdkafka's mock cluster in this
//! process, reachable by any Kafka client on the machine at its bootstrap
//! address, and a [`Cluster`] on it for brook.
//!
//! The mock cluster has no admin API (CreateTopics times out), so
//! [`EmbeddedCluster`] creates topics — EventMart's and the apps' internal
//! repartition and changelog topics — through the mock's own interface, and
//! does everything else through the ordinary Kafka adapter. The mock keeps
//! no topic configs, does not enforce transactions and keeps about 5 MiB
//! per partition (older data is dropped): a broker for a demo, not a store.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use brook_runtime::cluster::{Cluster, ClusterConsumer, ClusterError, ClusterProducer, Isolation};
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_topology::TopicSpec;
use rdkafka::mocking::MockCluster;

type Request = (TopicSpec, Sender<Result<(), String>>);

/// The mock cluster, owned by a thread of its own (its handle cannot move
/// between threads); stopped when dropped.
pub struct EmbeddedBroker {
    bootstrap: String,
    requests: Mutex<Option<Sender<Request>>>,
    created: Mutex<BTreeSet<String>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (tx, rx): (Sender<Request>, Receiver<Request>) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serves topic creations until every sender is gone.
                for (spec, reply) in rx {
                    let result = brook_runtime::kafka::create_mock_topic(&cluster, &spec)
                        .map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
            })
            .context("spawning the embedded broker's thread")?;
        let bootstrap = ready_rx
            .recv()
            .context("the embedded broker's thread ended")?
            .map_err(|e| anyhow::anyhow!("starting librdkafka's mock cluster: {e}"))?;
        Ok(EmbeddedBroker {
            bootstrap,
            requests: Mutex::new(Some(tx)),
            created: Mutex::new(BTreeSet::new()),
            thread: Some(thread),
        })
    }

    /// The bootstrap address clients connect to.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `spec` unless this broker created it before.
    pub fn create_topic(&self, spec: &TopicSpec) -> Result<(), ClusterError> {
        spec.validate()
            .map_err(|e| ClusterError::Client(e.to_string()))?;
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        if created.contains(&spec.name) {
            return Ok(());
        }
        let (reply, answer) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send((spec.clone(), reply)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(ClusterError::Client(
                "the embedded broker is stopped".into(),
            ));
        }
        answer
            .recv()
            .map_err(|_| ClusterError::Client("the embedded broker stopped".into()))?
            .map_err(|e| {
                ClusterError::Client(format!(
                    "creating topic {:?} on the embedded broker: {e}",
                    spec.name
                ))
            })?;
        created.insert(spec.name.clone());
        Ok(())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A [`Cluster`] on the embedded broker: the Kafka adapter, with topics
/// created through the mock's interface.
pub struct EmbeddedCluster {
    broker: Arc<EmbeddedBroker>,
    kafka: KafkaCluster,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// A cluster on `broker`; `configure` adds client settings to the
    /// broker's bootstrap config.
    pub fn new(
        broker: Arc<EmbeddedBroker>,
        configure: impl FnOnce(KafkaConfig) -> KafkaConfig,
    ) -> Result<Self> {
        let kafka = configure(KafkaConfig::new(broker.bootstrap()));
        Ok(EmbeddedCluster {
            kafka: KafkaCluster::new(kafka).context("a Kafka client for the embedded broker")?,
            broker,
        })
    }
}

impl Cluster for EmbeddedCluster {
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError> {
        for spec in specs {
            self.broker.create_topic(spec)?;
        }
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError> {
        self.kafka.partition_count(topic)
    }

    fn list_topics(&self) -> Result<Vec<String>, ClusterError> {
        self.kafka.list_topics()
    }

    fn delete_topics(&self, topics: &[String]) -> Result<(), ClusterError> {
        self.kafka.delete_topics(topics)
    }

    fn consumer(
        &self,
        group: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        self.kafka.consumer(group, isolation)
    }

    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        self.kafka.producer()
    }

    fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        self.kafka.transactional_producer(transactional_id)
    }
}
