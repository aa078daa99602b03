//! Topic setup: source partition counts, internal and dead-letter
//! topics, co-partitioning (Kafka Streams' InternalTopicManager).

use super::*;

/// Why a source topic's partition count is not known: it is missing, or
/// the app may not read it (a refused Describe means a missing Read ACL,
/// as Read includes Describe).
pub(super) fn source_topic_err(e: ClusterError) -> RuntimeError {
    match e {
        ClusterError::UnknownTopic(topic) => RuntimeError::MissingSourceTopic { topic },
        ClusterError::NotAuthorized {
            operation: "Describe",
            resource,
            detail,
        } => ClusterError::NotAuthorized {
            operation: "Read",
            resource: format!("source {resource}"),
            detail,
        }
        .into(),
        other => other.into(),
    }
}

/// Resolves partition counts of every source topic, creating internal
/// topics (and the dead-letter topic) as needed.
pub(super) fn prepare_topics(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &dyn Cluster,
) -> Result<HashMap<TopicName, i32>, RuntimeError> {
    let app = &config.application_id;
    let mut counts: HashMap<TopicName, i32> = HashMap::new();
    for global in topology.global_stores() {
        let name = global.topic.resolve(app);
        let count = cluster.partition_count(&name).map_err(source_topic_err)?;
        counts.insert(global.topic.clone(), count);
    }
    for sub in topology.subtopologies() {
        for topic in &sub.source_topics {
            if let TopicName::User(name) = topic {
                let count = cluster.partition_count(name).map_err(source_topic_err)?;
                counts.insert(topic.clone(), count);
            }
        }
    }
    // An internal topic's writer may itself read internal topics: resolve
    // until nothing changes.
    let mut pending: Vec<_> = topology.internal_topics().to_vec();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|internal| {
            let writer = topology.subtopologies().iter().find(|s| {
                s.nodes.iter().any(|&n| {
                    matches!(&topology.nodes()[n].kind, NodeKind::Sink(sink) if sink.topic == internal.name)
                })
            });
            let upstream = writer.map(|w| w.source_topics.iter().map(|t| counts.get(t).copied()).collect::<Option<Vec<_>>>());
            let count = match (internal.partitions, upstream) {
                (Some(explicit), _) => explicit,
                (None, Some(Some(upstream))) => upstream.into_iter().max().unwrap_or(1),
                _ => return true,
            };
            counts.insert(internal.name.clone(), count);
            false
        });
        if pending.len() == before {
            // Written by nothing we can size: fall back to one partition.
            for internal in pending.drain(..) {
                counts.insert(internal.name.clone(), 1);
            }
        }
    }
    let mut specs = Vec::new();
    for internal in topology.internal_topics() {
        let count = counts[&internal.name];
        let spec = TopicSpec::new(internal.name.resolve(app), count)
            .replication(config.replication_factor);
        specs.push(match internal.kind {
            InternalTopicKind::Repartition => spec.cleanup_policy(CleanupPolicy::Delete),
        });
    }
    specs
        .push(TopicSpec::new(config.dead_letter_topic(), 1).replication(config.replication_factor));
    cluster.create_topics(&specs)?;
    for spec in &specs {
        let actual = cluster.partition_count(&spec.name)?;
        let internal = topology
            .internal_topics()
            .iter()
            .any(|t| t.name.resolve(app) == spec.name);
        if internal && actual != spec.partitions {
            return Err(ClusterError::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            }
            .into());
        }
    }
    Ok(counts)
}

/// Checks that `topology` can run on `cluster` — its source topics exist,
/// the inputs of each sub-topology are co-partitioned — and creates its
/// internal topics; returns the partition count of every topic it reads.
pub fn check_topology(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &dyn Cluster,
) -> Result<HashMap<TopicName, i32>, RuntimeError> {
    let counts = prepare_topics(topology, config, cluster)?;
    let app = &config.application_id;
    for sub in topology.subtopologies() {
        let inputs: Vec<(String, i32)> = sub
            .source_topics
            .iter()
            .map(|t| (t.resolve(app), counts.get(t).copied().unwrap_or(1)))
            .collect();
        if let Some(&(_, partitions)) = inputs.first()
            && inputs.iter().any(|(_, n)| *n != partitions)
        {
            return Err(RuntimeError::NotCopartitioned {
                subtopology: sub.id,
                counts: inputs
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(counts)
}
