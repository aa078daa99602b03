//! An in-process, deterministic Kafka: the `Cluster` the test driver runs on.
//!
//! Topics are vectors of records per partition; offsets, consumer groups and
//! committed offsets behave as in Kafka; keyed records are partitioned with
//! Kafka's murmur2 (so multi-partition tests put keys where a real cluster
//! would), null keys round robin. Every record also gets a cluster-wide
//! sequence number, so a test can read a multi-partition topic in the order
//! it was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use brook_topology::TopicSpec;

use crate::cluster::{
    Cluster, ClusterConsumer, ClusterError, ClusterProducer, ConsumedRecord, ProducedRecord,
    TopicPartition,
};
use crate::partition::partition_for_key;

/// A record stored in a memory partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record.
    pub record: ConsumedRecord,
    /// Position in the cluster-wide write order.
    pub sequence: u64,
}

#[derive(Debug, Default)]
struct Topic {
    spec: Option<TopicSpec>,
    partitions: Vec<Vec<StoredRecord>>,
}

#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    committed: HashMap<String, BTreeMap<TopicPartition, i64>>,
    next_sequence: u64,
    round_robin: u64,
}

/// The in-memory cluster. Cheap to clone; clones share the cluster.
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
}

impl MemoryCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        MemoryCluster::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way later readers would misread: every update is one push or
        // one insert.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every record of `topic`, in write order across its partitions.
    pub fn records(&self, topic: &str) -> Result<Vec<StoredRecord>, ClusterError> {
        let state = self.lock();
        let topic = state
            .topics
            .get(topic)
            .ok_or_else(|| ClusterError::UnknownTopic(topic.to_owned()))?;
        let mut all: Vec<StoredRecord> = topic.partitions.iter().flatten().cloned().collect();
        all.sort_by_key(|r| r.sequence);
        Ok(all)
    }

    /// The end offset (next offset to be written) of a partition.
    pub fn end_offset(&self, tp: &TopicPartition) -> Result<i64, ClusterError> {
        let state = self.lock();
        let topic = state
            .topics
            .get(&tp.topic)
            .ok_or_else(|| ClusterError::UnknownTopic(tp.topic.clone()))?;
        topic
            .partitions
            .get(tp.partition as usize)
            .map(|p| p.len() as i64)
            .ok_or_else(|| ClusterError::UnknownPartition(tp.clone()))
    }

    /// The committed offset of `group` for a partition.
    pub fn committed(&self, group: &str, tp: &TopicPartition) -> Option<i64> {
        self.lock()
            .committed
            .get(group)
            .and_then(|c| c.get(tp))
            .copied()
    }

    /// Topic names.
    pub fn topics(&self) -> Vec<String> {
        self.lock().topics.keys().cloned().collect()
    }

    /// The spec a topic was created with.
    pub fn topic_spec(&self, topic: &str) -> Option<TopicSpec> {
        self.lock().topics.get(topic).and_then(|t| t.spec.clone())
    }

    fn write(&self, record: ProducedRecord) -> Result<(i32, i64), ClusterError> {
        let mut state = self.lock();
        let sequence = state.next_sequence;
        let round_robin = state.round_robin;
        let topic = state
            .topics
            .get_mut(&record.topic)
            .ok_or_else(|| ClusterError::UnknownTopic(record.topic.clone()))?;
        let count = topic.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, count).unwrap_or(0),
            (None, None) => (round_robin % count as u64) as i32,
        };
        let round_robin_used = record.partition.is_none() && record.key.is_none();
        let tp = TopicPartition::new(record.topic.clone(), partition);
        let log = topic
            .partitions
            .get_mut(partition as usize)
            .ok_or_else(|| ClusterError::UnknownPartition(tp.clone()))?;
        let offset = log.len() as i64;
        log.push(StoredRecord {
            record: ConsumedRecord {
                tp,
                offset,
                key: record.key,
                value: record.value,
                timestamp: record.timestamp,
                headers: record.headers,
            },
            sequence,
        });
        state.next_sequence += 1;
        if round_robin_used {
            state.round_robin += 1;
        }
        Ok((partition, offset))
    }

    /// Writes one record now (outside any producer); returns partition and offset.
    pub fn produce(&self, record: ProducedRecord) -> Result<(i32, i64), ClusterError> {
        self.write(record)
    }
}

impl Cluster for MemoryCluster {
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError> {
        for spec in specs {
            spec.validate()?;
        }
        let mut state = self.lock();
        for spec in specs {
            state
                .topics
                .entry(spec.name.clone())
                .or_insert_with(|| Topic {
                    spec: Some(spec.clone()),
                    partitions: vec![Vec::new(); spec.partitions as usize],
                });
        }
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError> {
        self.lock()
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as i32)
            .ok_or_else(|| ClusterError::UnknownTopic(topic.to_owned()))
    }

    fn consumer(&self, group: &str) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        Ok(Box::new(MemoryConsumer {
            cluster: self.clone(),
            group: group.to_owned(),
            positions: BTreeMap::new(),
        }))
    }

    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        Ok(Box::new(MemoryProducer {
            cluster: self.clone(),
            queued: Vec::new(),
        }))
    }
}

struct MemoryConsumer {
    cluster: MemoryCluster,
    group: String,
    positions: BTreeMap<TopicPartition, i64>,
}

impl ClusterConsumer for MemoryConsumer {
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClusterError> {
        let mut positions = BTreeMap::new();
        for tp in partitions {
            self.cluster.end_offset(tp)?;
            let start = self.cluster.committed(&self.group, tp).unwrap_or(0);
            positions.insert(tp.clone(), start);
        }
        self.positions = positions;
        Ok(())
    }

    fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClusterError> {
        let state = self.cluster.lock();
        let mut out = Vec::new();
        for (tp, position) in self.positions.iter_mut() {
            let log = state
                .topics
                .get(&tp.topic)
                .and_then(|t| t.partitions.get(tp.partition as usize))
                .ok_or_else(|| ClusterError::UnknownPartition(tp.clone()))?;
            while out.len() < max && (*position as usize) < log.len() {
                out.push(log[*position as usize].record.clone());
                *position += 1;
            }
        }
        Ok(out)
    }

    fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError> {
        partitions
            .iter()
            .map(|tp| Ok((tp.clone(), self.cluster.end_offset(tp)?)))
            .collect()
    }

    fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        let committed = state.committed.entry(self.group.clone()).or_default();
        for (tp, offset) in offsets {
            committed.insert(tp.clone(), *offset);
        }
        Ok(())
    }
}

struct MemoryProducer {
    cluster: MemoryCluster,
    queued: Vec<ProducedRecord>,
}

impl ClusterProducer for MemoryProducer {
    fn send(&mut self, record: ProducedRecord) -> Result<(), ClusterError> {
        self.queued.push(record);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClusterError> {
        for record in self.queued.drain(..) {
            self.cluster.write(record)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_topology::Headers;

    fn rec(topic: &str, key: Option<&str>, value: &str) -> ProducedRecord {
        ProducedRecord {
            topic: topic.into(),
            partition: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp: 0,
            headers: Headers::new(),
        }
    }

    #[test]
    fn keys_land_where_the_java_client_puts_them_and_null_keys_round_robin() {
        let cluster = MemoryCluster::new();
        cluster.create_topics(&[TopicSpec::new("t", 4)]).unwrap();
        assert_eq!(
            cluster.produce(rec("t", Some("foobar"), "v")).unwrap(),
            (2, 0)
        );
        let parts: Vec<i32> = (0..4)
            .map(|_| cluster.produce(rec("t", None, "v")).unwrap().0)
            .collect();
        assert_eq!(parts, vec![0, 1, 2, 3]);
        assert!(matches!(
            cluster.produce(rec("nope", None, "v")),
            Err(ClusterError::UnknownTopic(_))
        ));
    }

    #[test]
    fn consumers_resume_from_committed_offsets_and_producers_write_on_flush() {
        let cluster = MemoryCluster::new();
        cluster.create_topics(&[TopicSpec::new("t", 1)]).unwrap();
        let mut producer = cluster.producer().unwrap();
        for v in ["a", "b", "c"] {
            producer.send(rec("t", Some("k"), v)).unwrap();
        }
        assert_eq!(cluster.end_offset(&TopicPartition::new("t", 0)).unwrap(), 0);
        producer.flush().unwrap();
        let tp = TopicPartition::new("t", 0);
        let mut consumer = cluster.consumer("g").unwrap();
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        let got = consumer.poll(2).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1]);
        consumer.commit(&BTreeMap::from([(tp.clone(), 2)])).unwrap();
        let mut again = cluster.consumer("g").unwrap();
        again.assign(std::slice::from_ref(&tp)).unwrap();
        let rest = again.poll(10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].value.as_deref(), Some(&b"c"[..]));
        assert_eq!(cluster.committed("g", &tp), Some(2));
    }
}
