//! Plumbing smoke tests, one per broker: topics, keyed produce, consumer
//! groups, committed offsets, and (Kafka) data surviving a broker restart.
//!
//! Each check runs only where the broker implements it (see
//! `brook_testkit::Capabilities`): the mock cluster keeps no topic configs,
//! so compaction is asserted on Kafka only.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::time::Duration;

use brook_runtime::kafka::send_blocking;
use brook_runtime::partition::partition_for_key;
use brook_testkit::{Namespace, Received, Restart, TestBroker, consume_exactly};
use brook_topology::{CleanupPolicy, TopicSpec};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(60);
const LINGER: Duration = Duration::from_secs(2);

/// What the plumbing scenario left behind, for checks after a restart.
struct Plumbed {
    events: String,
    group: String,
    /// Everything in `events`, as consumed, ordered by (partition, offset).
    all_events: Vec<Received>,
    /// The group's committed offsets per partition of `events`.
    committed: BTreeMap<i32, i64>,
}

fn produce(broker: &TestBroker, topic: &str, records: &[(String, String)]) -> TestResult {
    let producer: BaseProducer = broker.config().producer().create()?;
    for (key, value) in records {
        send_blocking(&producer, topic, Some(key.as_bytes()), value.as_bytes())?;
    }
    producer.flush(TIMEOUT)?;
    Ok(())
}

fn subscribed(broker: &TestBroker, group: &str, topic: &str) -> TestResult<BaseConsumer> {
    let consumer: BaseConsumer = broker.config().consumer(group).create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

fn committed(broker: &TestBroker, group: &str, topic: &str) -> TestResult<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = broker.config().consumer(group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, TIMEOUT)?;
    Ok(offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

fn high_watermarks(broker: &TestBroker, topic: &str) -> TestResult<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = broker.config().client().create()?;
    (0..PARTITIONS)
        .map(|p| Ok((p, consumer.fetch_watermarks(topic, p, TIMEOUT)?.1)))
        .collect()
}

fn text(bytes: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).into_owned()
}

fn keyed(batch: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("user-{}", i % 12), format!("{batch}-{i}")))
        .collect()
}

fn sorted(mut records: Vec<Received>) -> Vec<Received> {
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Topics, keyed produce, a consumer group that commits, and a second
/// consumer in the same group that resumes exactly after the commit.
fn plumbing(broker: &TestBroker) -> TestResult<Plumbed> {
    let ns: Namespace = broker.namespace();
    let events = ns.topic("events");
    let profiles = ns.topic("profiles");
    broker.create_topics(&[
        TopicSpec::new(&events, PARTITIONS),
        TopicSpec::new(&profiles, PARTITIONS).cleanup_policy(CleanupPolicy::Compact),
    ])?;
    assert_eq!(broker.partition_count(&events)?, PARTITIONS);
    assert_eq!(broker.partition_count(&profiles)?, PARTITIONS);
    if broker.capabilities().topic_configs {
        let configs = broker.topic_configs(&profiles)?;
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("compact"),
            "{configs:?}"
        );
        let configs = broker.topic_configs(&events)?;
        assert_ne!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("compact"),
            "{configs:?}"
        );
    }

    // Batch A: keyed records, consumed by the group and committed.
    let group = ns.group("smoke");
    let batch_a = keyed("a", 60);
    produce(broker, &events, &batch_a)?;
    let first = subscribed(broker, &group, &events)?;
    let got_a = consume_exactly(&first, batch_a.len(), TIMEOUT, LINGER)?;
    let mut partitions_used = BTreeSet::new();
    for record in &got_a {
        let key = record.key.as_deref().ok_or("record without key")?;
        // The Java client's partitioner: co-partitioning with JVM writers.
        assert_eq!(
            Some(record.partition),
            partition_for_key(key, PARTITIONS),
            "{record:?}"
        );
        partitions_used.insert(record.partition);
    }
    assert_eq!(
        partitions_used.len(),
        PARTITIONS as usize,
        "12 keys should cover 3 partitions"
    );
    // Per key, records arrive in the order they were produced.
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for record in &got_a {
        let seq = text(&record.value)["a-".len()..].parse()?;
        per_key.entry(text(&record.key)).or_default().push(seq);
    }
    for (key, seqs) in &per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
    }
    first.commit_consumer_state(CommitMode::Sync)?;
    let committed_a = committed(broker, &group, &events)?;
    assert_eq!(
        committed_a,
        high_watermarks(broker, &events)?,
        "committed = end of batch A"
    );
    drop(first);

    // Batch B: a new consumer in the same group sees B and nothing of A.
    let batch_b = keyed("b", 45);
    produce(broker, &events, &batch_b)?;
    let second = subscribed(broker, &group, &events)?;
    let got_b = consume_exactly(&second, batch_b.len(), TIMEOUT, LINGER)?;
    let mut values_b: Vec<String> = got_b.iter().map(|r| text(&r.value)).collect();
    values_b.sort();
    let mut expected_b: Vec<String> = batch_b.iter().map(|(_, v)| v.clone()).collect();
    expected_b.sort();
    assert_eq!(
        values_b, expected_b,
        "the group resumed at its committed offsets"
    );
    second.commit_consumer_state(CommitMode::Sync)?;
    let committed_b = committed(broker, &group, &events)?;
    assert_eq!(committed_b.values().sum::<i64>(), 105);
    drop(second);

    // The compacted topic takes keyed updates and serves them back in order.
    let updates: Vec<(String, String)> = (1..=3)
        .flat_map(|version| (0..5).map(move |k| (format!("profile-{k}"), format!("v{version}"))))
        .collect();
    produce(broker, &profiles, &updates)?;
    let reader = subscribed(broker, &ns.group("profiles"), &profiles)?;
    let got = consume_exactly(&reader, updates.len(), TIMEOUT, LINGER)?;
    let mut latest = BTreeMap::new();
    for record in sorted(got) {
        latest.insert(text(&record.key), text(&record.value));
    }
    assert_eq!(latest.len(), 5);
    assert!(latest.values().all(|v| v == "v3"), "{latest:?}");

    let mut all_events = got_a;
    all_events.extend(got_b);
    Ok(Plumbed {
        events,
        group,
        all_events: sorted(all_events),
        committed: committed_b,
    })
}

#[test]
fn mock_cluster_keyed_records_resume_from_committed_offsets() -> TestResult {
    let broker = TestBroker::mock()?;
    plumbing(&broker)?;
    Ok(())
}

#[test]
fn kafka_keyed_records_resume_from_committed_offsets() -> TestResult {
    let broker = TestBroker::kafka()?;
    plumbing(&broker)?;
    Ok(())
}

/// Needs a broker the test can restart: a Kafka it started. `make test-kafka` skips it.
#[test]
fn kafka_broker_restart_keeps_topics_records_and_committed_offsets() -> TestResult {
    survives_restart(Restart::Graceful)
}

/// Acknowledged records and committed offsets survive a SIGKILL of the broker.
#[test]
fn kafka_broker_restart_after_crash_keeps_acknowledged_records_and_offsets() -> TestResult {
    survives_restart(Restart::Crash)
}

fn survives_restart(how: Restart) -> TestResult {
    let mut broker = TestBroker::kafka()?;
    let before = plumbing(&broker)?;
    broker.restart(how)?;

    assert_eq!(broker.partition_count(&before.events)?, PARTITIONS);
    let ends: i64 = high_watermarks(&broker, &before.events)?.values().sum();
    assert_eq!(
        ends,
        before.all_events.len() as i64,
        "no record lost or added"
    );
    assert_eq!(
        committed(&broker, &before.group, &before.events)?,
        before.committed
    );

    // A new group reads back exactly what was there before the restart.
    let ns = broker.namespace();
    let reader = subscribed(&broker, &ns.group("after-restart"), &before.events)?;
    let after = sorted(consume_exactly(
        &reader,
        before.all_events.len(),
        TIMEOUT,
        LINGER,
    )?);
    assert_eq!(after, before.all_events);

    // The old group resumes where it was: it sees only what is new.
    produce(
        &broker,
        &before.events,
        &[("user-1".into(), "after-restart".into())],
    )?;
    let resumed = subscribed(&broker, &before.group, &before.events)?;
    let got = consume_exactly(&resumed, 1, TIMEOUT, LINGER)?;
    assert_eq!(text(&got[0].value), "after-restart");
    if let Some(log) = broker.log_tail() {
        assert!(
            !log.contains(" FATAL "),
            "Kafka logged a fatal error:\n{log}"
        );
    }
    Ok(())
}
