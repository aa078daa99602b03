//! Kafka clients: configuration, topic administration, and
//! [`KafkaCluster`], the Kafka adapter of the runtime's `Cluster` port.
//!
//! [`KafkaConfig`] is the single place where brook's defaults for librdkafka
//! live; [`KafkaAdmin`] creates, describes and deletes topics through the
//! admin API. Brokers without an admin API (librdkafka's mock cluster) are
//! handled by their own adapters, so nothing here assumes one exists.

mod admin;
mod cluster;
mod config;
pub(crate) mod log;
mod produce;

pub use admin::{AdminError, CreateOutcome, KafkaAdmin};
pub use cluster::KafkaCluster;
pub use config::{
    BOOTSTRAP_ENV, KafkaConfig, PROPERTY_ENV_PREFIX, is_secret_property, property_of_env,
};
pub use log::{ClientLog, ClientReport};
pub use produce::{flush_without_waiting, send_blocking, send_record};

/// Creates `spec`'s topic on librdkafka's mock cluster, which has no admin
/// API. Replication -1 (the broker's default, what internal topics ask for)
/// becomes 1: the mock cluster crashes on -1.
pub fn create_mock_topic<C: rdkafka::ClientContext>(
    cluster: &rdkafka::mocking::MockCluster<'_, C>,
    spec: &brook_topology::TopicSpec,
) -> rdkafka::error::KafkaResult<()> {
    cluster.create_topic(&spec.name, spec.partitions, spec.replication.max(1))
}
