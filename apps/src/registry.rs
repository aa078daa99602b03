//! The schema registry's storage in a compacted Kafka topic.
//!
//! [`ClusterSchemaStore`] keeps the registry's log in a one-partition
//! compacted topic (`_schemas` by default, as Confluent's registry does,
//! in the same record format), through the runtime's cluster port — so it
//! works on Kafka and on the in-process Memory cluster alike.
//! A write returns once the broker acknowledged it; on start the registry
//! reads the topic from the beginning to its end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{
    Cluster, ClusterProducer, Isolation, ProducedRecord, TopicPartition, error_chain,
};
use brook_schemas::registry::{LogRecord, SchemaStore};
use brook_topology::{CleanupPolicy, Headers, TopicSpec};

/// The registry's log in a compacted topic.
pub struct ClusterSchemaStore {
    cluster: Arc<dyn Cluster>,
    topic: String,
    producer: Mutex<Box<dyn ClusterProducer>>,
    load_timeout: Duration,
}

impl std::fmt::Debug for ClusterSchemaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSchemaStore")
            .field("topic", &self.topic)
            .finish()
    }
}

impl ClusterSchemaStore {
    /// Opens (creating if needed) the compacted one-partition `topic`.
    pub fn open(cluster: Arc<dyn Cluster>, topic: &str) -> Result<Self, String> {
        let spec = TopicSpec::new(topic, 1).cleanup_policy(CleanupPolicy::Compact);
        cluster
            .create_topics(&[spec])
            .map_err(|e| format!("creating the registry topic {topic}: {}", error_chain(&e)))?;
        let partitions = cluster
            .partition_count(topic)
            .map_err(|e| format!("reading the registry topic {topic}: {}", error_chain(&e)))?;
        if partitions != 1 {
            return Err(format!(
                "the registry topic {topic} has {partitions} partitions; it needs exactly one (the log's order is the registry's history)"
            ));
        }
        let producer = cluster
            .producer()
            .map_err(|e| format!("a producer for {topic}: {}", error_chain(&e)))?;
        Ok(ClusterSchemaStore {
            cluster,
            topic: topic.to_owned(),
            producer: Mutex::new(producer),
            load_timeout: Duration::from_secs(60),
        })
    }
}

impl SchemaStore for ClusterSchemaStore {
    fn load(&self) -> Result<Vec<LogRecord>, String> {
        let fail = |what: &str, e: &dyn std::error::Error| {
            format!("{what} {}: {}", self.topic, error_chain(e))
        };
        let tp = TopicPartition::new(self.topic.clone(), 0);
        let mut consumer = self
            .cluster
            .consumer(&format!("{}-loader", self.topic), Isolation::ReadCommitted)
            .map_err(|e| fail("a consumer of", &e))?;
        consumer
            .assign(std::slice::from_ref(&tp))
            .map_err(|e| fail("assigning", &e))?;
        consumer.seek(&tp, 0).map_err(|e| fail("seeking", &e))?;
        let end = consumer
            .end_offsets(std::slice::from_ref(&tp))
            .map_err(|e| fail("the end of", &e))?
            .get(&tp)
            .copied()
            .unwrap_or(0);
        let mut records = Vec::new();
        let mut next = 0;
        let started = Instant::now();
        while next < end {
            if started.elapsed() > self.load_timeout {
                return Err(format!(
                    "reading {} timed out at offset {next} of {end}",
                    self.topic
                ));
            }
            for record in consumer.poll(10_000).map_err(|e| fail("reading", &e))? {
                next = record.offset + 1;
                if let Some(key) = record.key {
                    records.push((key, record.value));
                }
            }
        }
        Ok(records)
    }

    fn append(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), String> {
        let mut producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        producer
            .send(ProducedRecord {
                topic: self.topic.clone(),
                partition: Some(0),
                key: Some(key),
                value,
                timestamp: now,
                headers: Headers::default(),
            })
            .and_then(|()| producer.flush())
            .map_err(|e| format!("writing to {}: {}", self.topic, error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_runtime::memory::MemoryCluster;
    use brook_schemas::registry::Registry;

    const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"}]}"#;

    #[test]
    fn a_registry_on_a_topic_survives_a_restart() {
        let cluster: Arc<dyn Cluster> = Arc::new(MemoryCluster::new());
        {
            let store = ClusterSchemaStore::open(cluster.clone(), "_schemas").unwrap();
            let registry = Registry::open(Box::new(store)).unwrap();
            assert_eq!(registry.register("a-value", V1).unwrap(), 1);
            registry
                .set_global_level(brook_schemas::CompatibilityLevel::Full)
                .unwrap();
        }
        let store = ClusterSchemaStore::open(cluster.clone(), "_schemas").unwrap();
        let registry = Registry::open(Box::new(store)).unwrap();
        assert_eq!(registry.versions("a-value", false).unwrap(), vec![1]);
        assert_eq!(
            registry.global_level(),
            brook_schemas::CompatibilityLevel::Full
        );
        cluster.create_topics(&[TopicSpec::new("wide", 3)]).unwrap();
        let err = ClusterSchemaStore::open(cluster, "wide").unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
    }
}
