//! Global stores (Kafka Streams' GlobalStreamThread, run inside each
//! stream thread here).

use super::*;

/// Keeps the global stores current: reads every partition of each global
/// topic, from the beginning on start (global stores are rebuilt from their
/// topics, which serve as their changelogs).
pub(super) struct GlobalUpdater {
    consumer: Box<dyn ClusterConsumer>,
    /// Global topic name → its spec and store.
    pub(super) stores: HashMap<String, (GlobalStore, SharedStore)>,
    bad_records: BadRecords,
}

impl GlobalUpdater {
    pub(super) fn start(
        cluster: &dyn Cluster,
        topology: &Topology,
        config: &StreamsConfig,
        counts: &HashMap<TopicName, i32>,
    ) -> Result<Option<Self>, RuntimeError> {
        if topology.global_stores().is_empty() {
            return Ok(None);
        }
        let app = &config.application_id;
        let mut stores = HashMap::new();
        let mut partitions = Vec::new();
        for global in topology.global_stores() {
            let topic = global.topic.resolve(app);
            for p in 0..counts.get(&global.topic).copied().unwrap_or(1) {
                partitions.push(TopicPartition::new(topic.clone(), p));
            }
            stores.insert(topic, (global.clone(), SharedStore::new()));
        }
        // A group that never commits: every start reads the topics from the beginning.
        let mut consumer = cluster.consumer(&format!("{app}-global"), Isolation::ReadCommitted)?;
        consumer.assign(&partitions)?;
        let ends = consumer.end_offsets(&partitions)?;
        let mut updater = GlobalUpdater {
            consumer,
            stores,
            bad_records: config.bad_records(),
        };
        // Load everything present before any task processes a record.
        let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        while ends
            .iter()
            .any(|(tp, end)| positions.get(tp).copied().unwrap_or(0) < *end)
        {
            let records = updater.consumer.poll(10_000)?;
            if records.is_empty() {
                return Err(ClusterError::Client(
                    "global topics ended before their end offsets while loading".into(),
                )
                .into());
            }
            for record in &records {
                positions.insert(record.tp.clone(), record.offset + 1);
            }
            updater.apply(records)?;
        }
        Ok(Some(updater))
    }

    /// Applies what the global topics have now; returns dead letters for
    /// records that cannot be decoded.
    pub(super) fn update(&mut self) -> Result<Vec<ProducedRecord>, RuntimeError> {
        let records = self.consumer.poll(10_000)?;
        self.apply(records)
    }

    pub(super) fn apply(
        &mut self,
        records: Vec<ConsumedRecord>,
    ) -> Result<Vec<ProducedRecord>, RuntimeError> {
        let mut letters = Vec::new();
        for record in records {
            let Some((global, store)) = self.stores.get_mut(&*record.tp.topic) else {
                continue;
            };
            let oversized = self.bad_records.limits.check_size(record_bytes(&record));
            let reason = match record.key.as_deref() {
                _ if oversized.is_some() => oversized,
                None => Some("global table record without a key".to_owned()),
                Some(key) => match (global.key)(Some(key)) {
                    Err(e) => Some(format!("cannot deserialize the key: {e}")),
                    Ok(_) => match record.value.as_deref() {
                        None => {
                            store.put(key, None).map_err(|source| RuntimeError::Store {
                                store: global.store.clone(),
                                source,
                            })?;
                            None
                        }
                        Some(value) => match (global.value)(Some(value)) {
                            Ok(_) => {
                                store.put(key, Some(value)).map_err(|source| {
                                    RuntimeError::Store {
                                        store: global.store.clone(),
                                        source,
                                    }
                                })?;
                                None
                            }
                            Err(e) => Some(format!("cannot deserialize the value: {e}")),
                        },
                    },
                },
            };
            if let Some(reason) = reason {
                let handled = self.bad_records.handle(&record, &reason).map_err(|e| {
                    RuntimeError::Global {
                        store: global.store.clone(),
                        source: Box::new(e),
                    }
                })?;
                letters.extend(handled);
            }
        }
        Ok(letters)
    }
}
