//! The Kafka adapter of the `Cluster` port, against the real-protocol
//! brokers here: the port's consumer and producer contract on the mock
//! cluster and Apache Kafka; on Kafka (which has an admin API) also the runtime
//! itself with RocksDB state — process, restore on a fresh state directory,
//! rebuild from changelogs, and reset.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord, TopicPartition};
use brook_runtime::kafka::KafkaCluster;
use brook_runtime::thread::{StreamThread, StreamsConfig};
use brook_runtime::tools::{self, ResetTo};
use brook_testkit::{Namespace, TestBroker, read_topic};
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, StreamsBuilder, TopicSpec,
};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

fn record(topic: &str, key: &str, value: &str, timestamp: i64) -> ProducedRecord {
    let mut headers = Headers::new();
    headers.add("h", Some(b"1".to_vec()));
    ProducedRecord {
        topic: topic.to_owned(),
        partition: Some(0),
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        timestamp,
        headers,
    }
}

fn port_contract(broker: &TestBroker) -> TestResult {
    let ns = broker.namespace();
    let topic = ns.topic("port");
    broker.create_topics(&[TopicSpec::new(&topic, 1)])?;
    let cluster = KafkaCluster::new(broker.config().clone())?.with_timeout(Duration::from_secs(30));
    let mut producer = cluster.producer()?;
    // Stamped now: a real broker's retention (7 days, checked every 5 s
    // from 30 s after it starts) deletes older records under the reader.
    let base = brook_testkit::now_ms();
    for i in 0..10 {
        producer.send(record(&topic, &format!("k{i}"), &format!("v{i}"), base + i))?;
    }
    producer.flush()?;
    let tp = TopicPartition::new(topic.clone(), 0);
    assert_eq!(producer.written_offsets().get(&tp), Some(&10));

    let group = ns.group("port");
    let mut consumer = cluster.consumer(&group, Isolation::ReadCommitted)?;
    assert_eq!(consumer.end_offsets(std::slice::from_ref(&tp))?[&tp], 10);
    consumer.assign(std::slice::from_ref(&tp))?;
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < 10 && started.elapsed() < Duration::from_secs(30) {
        got.extend(consumer.poll(100)?);
    }
    assert_eq!(got.len(), 10);
    assert_eq!(got[3].key.as_deref(), Some(&b"k3"[..]));
    assert_eq!(got[3].timestamp, base + 3);
    assert_eq!(got[3].headers.last("h"), Some(Some(&b"1"[..])));
    assert_eq!(consumer.position(&tp)?, 10);
    consumer.seek(&tp, 7)?;
    assert_eq!(consumer.position(&tp)?, 7);
    let mut again = Vec::new();
    let started = Instant::now();
    while again.len() < 3 && started.elapsed() < Duration::from_secs(30) {
        again.extend(consumer.poll(100)?);
    }
    assert_eq!(
        again.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    consumer.commit(&BTreeMap::from([(tp.clone(), 5)]))?;
    drop(consumer);
    // A new member of the group starts at the committed offset.
    let mut resumed = cluster.consumer(&group, Isolation::ReadCommitted)?;
    resumed.assign(std::slice::from_ref(&tp))?;
    assert_eq!(resumed.position(&tp)?, 5);
    assert_eq!(
        resumed.offsets_for_times(std::slice::from_ref(&tp), i64::MIN)?[&tp],
        0
    );
    Ok(())
}

#[test]
fn the_port_contract_holds_on_the_mock_cluster() -> TestResult {
    port_contract(&TestBroker::mock()?)
}

#[test]
fn the_port_contract_holds_on_kafka() -> TestResult {
    port_contract(&TestBroker::kafka()?)
}

fn word_count(ns: &Namespace) -> TestResult<brook_topology::Topology> {
    let b = StreamsBuilder::new();
    b.stream(&ns.topic("lines"), Consumed::with(Utf8, Utf8))
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()))
        .to(
            &ns.topic("counts"),
            Produced::with(Utf8, Json::<i64>::new()),
        );
    Ok(b.build()?)
}

#[test]
fn on_kafka_state_is_restored_rebuilt_and_reset() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let lines = ns.topic("lines");
    broker.create_topics(&[
        TopicSpec::new(&lines, 2),
        TopicSpec::new(ns.topic("counts"), 2),
    ])?;
    let cluster = KafkaCluster::new(broker.config().clone())?;
    let mut producer = cluster.producer()?;
    let text = ["a b a", "c a", "b b", "d"];
    // Stamped now, not at 1970: the broker's retention check would delete
    // the input (seen: "counts after 60 s: {}" once the test ran past the
    // check's first pass, 30 s after the broker started).
    let base = brook_testkit::now_ms();
    for (i, line) in text.iter().enumerate() {
        let mut r = record(&lines, &format!("doc{i}"), line, base + i as i64);
        r.partition = None;
        producer.send(r)?;
    }
    producer.flush()?;
    let expected = BTreeMap::from([
        ("a".to_string(), 3),
        ("b".to_string(), 3),
        ("c".to_string(), 1),
        ("d".to_string(), 1),
    ]);

    let app = ns.group("wc");
    let dir = tempfile::tempdir()?;
    let topology = Arc::new(word_count(&ns)?);
    let mut config = StreamsConfig::new(&app).state_dir(dir.path());
    config.commit_interval = Duration::ZERO;
    let mut thread = StreamThread::new(&topology, config.clone(), &cluster, |_| true, 0)?;
    let started = Instant::now();
    let mut now = 0;
    while thread.read_store::<String, i64>("counts")? != expected {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "counts after 60 s: {:?}",
                thread.read_store::<String, i64>("counts")?
            )
            .into());
        }
        now += 10;
        thread.run_once(now)?;
    }
    thread.close()?;

    // A fresh state directory: rebuilt from the changelog before processing.
    let fresh = tempfile::tempdir()?;
    let changelog = format!("{app}-counts-changelog");
    let mut thread = StreamThread::new(
        &topology,
        config.clone().state_dir(fresh.path()),
        &cluster,
        |_| true,
        now,
    )?;
    assert!(
        thread.restore_metrics().records >= 4,
        "{:?}",
        thread.restore_metrics()
    );
    assert_eq!(thread.read_store::<String, i64>("counts")?, expected);
    drop(thread);

    // Rebuild from changelogs only, into the first state directory.
    let rebuilt = tools::rebuild_state(
        &cluster,
        &app,
        dir.path(),
        &[],
        &[],
        brook_state::RocksDbConfig::default(),
    )?;
    assert_eq!(rebuilt.len(), 2, "{rebuilt:?}");
    assert!(rebuilt.iter().all(|r| *r.changelog.topic == *changelog));
    let stores = tools::list_stores(dir.path(), &app)?;
    assert_eq!(stores.len(), 2);
    let mut total = 0;
    for s in &stores {
        let db = tools::open_store_read_only(dir.path(), &app, &s.task, &s.store)?;
        total += brook_state::KeyValueBytes::len(&db)?;
    }
    assert_eq!(total, 4);

    // Reset: offsets back to the start, internal topics gone, state wiped.
    // Only where DeleteTopics deletes just what it names (the mock has no DeleteTopics).
    if !broker.capabilities().delete_topics {
        eprintln!(
            "skipping the reset part: {} deletes every topic on DeleteTopics",
            broker.kind()
        );
        return Ok(());
    }
    let report = tools::reset_application(
        &cluster,
        &app,
        std::slice::from_ref(&lines),
        ResetTo::Earliest,
        Some(dir.path()),
    )?;
    assert!(report.input_offsets.values().all(|&o| o == 0), "{report:?}");
    assert!(report.deleted_topics.contains(&changelog), "{report:?}");
    assert!(tools::list_stores(dir.path(), &app)?.is_empty());
    // (The rewound offsets show below: with its state and changelogs gone,
    // the application can only get the counts back by reading the input
    // again from the start.)
    // The application recomputes the same result from its inputs.
    let mut thread = StreamThread::new(&topology, config, &cluster, |_| true, now)?;
    let started = Instant::now();
    while thread.read_store::<String, i64>("counts")? != expected {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "recomputed: {:?}",
                thread.read_store::<String, i64>("counts")?
            )
            .into());
        }
        now += 10;
        thread.run_once(now)?;
    }
    Ok(())
}

#[test]
fn on_kafka_instances_split_partitions_and_a_joiner_rebalances_without_loss() -> TestResult {
    use brook_runtime::streams::{KafkaStreams, StreamsState};
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (input, output) = (ns.topic("events"), ns.topic("echo"));
    broker.create_topics(&[TopicSpec::new(&input, 4), TopicSpec::new(&output, 4)])?;
    let cluster = Arc::new(KafkaCluster::new(broker.config().clone())?);
    let base = brook_testkit::now_ms();
    let produce = |from: i64, to: i64| -> TestResult {
        let mut producer = cluster.producer()?;
        for i in from..to {
            let mut r = record(&input, &format!("k{}", i % 50), &i.to_string(), base + i);
            r.partition = None;
            producer.send(r)?;
        }
        producer.flush()?;
        Ok(())
    };
    let app = ns.group("split");
    let instance = |k: usize| -> TestResult<KafkaStreams> {
        let b = StreamsBuilder::new();
        b.stream(&input, Consumed::with(Utf8, Utf8))
            .to(&output, Produced::with(Utf8, Utf8));
        let mut config = StreamsConfig::new(&app);
        config.commit_interval = Duration::from_millis(100);
        config.instance_id = format!("i{k}");
        let mut streams = KafkaStreams::new(b.build()?, config, cluster.clone());
        streams.start()?;
        Ok(streams)
    };
    let echoed = || -> TestResult<BTreeMap<i64, usize>> {
        let mut seen = BTreeMap::new();
        for r in read_topic(
            cluster.as_ref(),
            &output,
            &ns.group("reader"),
            Duration::from_secs(30),
        )? {
            *seen
                .entry(String::from_utf8(r.value.unwrap_or_default())?.parse()?)
                .or_insert(0) += 1;
        }
        Ok(seen)
    };
    let wait_for = |n: i64| -> TestResult {
        let started = Instant::now();
        loop {
            let seen = echoed()?;
            if (0..n).all(|i| seen.contains_key(&i)) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(120) {
                let missing: Vec<i64> = (0..n).filter(|i| !seen.contains_key(i)).take(10).collect();
                return Err(format!("after 120 s, missing e.g. {missing:?}").into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut a = instance(0)?;
    let mut b = instance(1)?;
    produce(0, 500)?;
    wait_for(500)?;
    // A third member joins: partitions move, nothing is lost.
    let mut c = instance(2)?;
    // Produced once the group has settled with c in it: before that, a and
    // b would process all of it and leave c nothing to show for its share.
    let started = Instant::now();
    while [&a, &b, &c].iter().any(|s| {
        s.threads_metrics()
            .iter()
            .map(|t| t.io.active_tasks)
            .sum::<usize>()
            == 0
    }) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "after 60 s a member still has no task: a {:?}, b {:?}, c {:?}",
                a.threads_metrics(),
                b.threads_metrics(),
                c.threads_metrics()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    produce(500, 1_000)?;
    wait_for(1_000)?;
    // Every member got a share of the partitions (counted before `a`
    // leaves; the failure says what each did).
    for (name, s) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(
            s.metrics().processed > 0,
            "{name} processed nothing: {:?} {:?}; errors {:?}",
            s.state(),
            s.threads_metrics(),
            s.errors()
        );
    }
    // One leaves cleanly: its partitions move to the others.
    a.close()?;
    produce(1_000, 1_500)?;
    wait_for(1_500)?;
    // Revoked partitions were committed before they moved (the revocation
    // is held until then): nothing was processed twice.
    let twice: Vec<(i64, usize)> = echoed()?.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "records processed twice: {twice:?}");
    for s in [&mut b, &mut c] {
        assert_eq!(s.state(), StreamsState::Running, "{:?}", s.errors());
        s.close()?;
    }
    Ok(())
}

/// A coordinator that answers the first fetches of committed offsets with
/// A mock cluster with a one-partition topic `name` holding three records,
/// a client with a 20 s timeout, and the topic's partition.
fn mock_with_three_records(
    name: &str,
) -> TestResult<(TestBroker, Namespace, KafkaCluster, TopicPartition)> {
    let broker = TestBroker::mock()?;
    let ns = broker.namespace();
    let topic = ns.topic(name);
    broker.create_topics(&[TopicSpec::new(&topic, 1)])?;
    let cluster = KafkaCluster::new(broker.config().clone())?.with_timeout(Duration::from_secs(20));
    let mut producer = cluster.producer()?;
    for i in 0..3 {
        producer.send(record(
            &topic,
            "k",
            &format!("v{i}"),
            brook_testkit::now_ms(),
        ))?;
    }
    producer.flush()?;
    let tp = TopicPartition::new(topic, 0);
    Ok((broker, ns, cluster, tp))
}

/// A topic just created on a cluster of several brokers: its leader is
/// not known everywhere yet, and the first ListOffsets requests are
/// answered "not leader for partition" (seen in the three-node eos test:
/// an instance exited reading its control topic's end). The watermarks are
/// asked again with fresh metadata.
#[test]
fn end_offsets_are_asked_again_while_the_leader_is_not_known_yet() -> TestResult {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, ns, cluster, tp) = mock_with_three_records("fresh")?;
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3];
    if let Err(e) = broker.fail_requests(RDKafkaApiKey::ListOffsets, &errors) {
        eprintln!("skipping: {e}");
        return Ok(());
    }
    let mut consumer = cluster.consumer(&ns.group("fresh"), Isolation::ReadCommitted)?;
    let ends = consumer.end_offsets(std::slice::from_ref(&tp))?;
    assert_eq!(ends[&tp], 3);
    Ok(())
}

/// NOT_COORDINATOR (a coordinator still loading its partition of
/// `__consumer_offsets`, as on a fresh broker) must not leave the assigned
/// partitions unread: librdkafka left them waiting forever (its issue
/// 5586); brook fetches the committed offsets itself, with retries. Both
/// ways a consumer is given partitions: by the group, and assigned.
#[test]
fn a_coordinator_answering_not_coordinator_at_first_does_not_stall_a_consumer() -> TestResult {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (broker, ns, cluster, tp) = mock_with_three_records("stalls")?;
    let topic = tp.topic.to_string();
    for subscribed in [true, false] {
        let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR; 3];
        if let Err(e) = broker.fail_requests(RDKafkaApiKey::OffsetFetch, &errors) {
            eprintln!("skipping: {e}");
            return Ok(());
        }
        let group = ns.group(if subscribed { "subscribed" } else { "assigned" });
        let mut consumer = cluster.consumer(&group, Isolation::ReadCommitted)?;
        if subscribed {
            consumer.subscribe(std::slice::from_ref(&topic))?;
        } else {
            consumer.assign(std::slice::from_ref(&tp))?;
        }
        let mut got = Vec::new();
        let started = Instant::now();
        while got.len() < 3 {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "{} consumer: {} of 3 records after 20 s",
                    if subscribed {
                        "a subscribed"
                    } else {
                        "an assigned"
                    },
                    got.len()
                )
                .into());
            }
            let _ = consumer.take_rebalance()?;
            match consumer.poll(10) {
                Ok(records) => got.extend(records),
                // The injected errors may also reach the poll.
                Err(e) => eprintln!("poll: {e}"),
            }
        }
        assert_eq!(got.len(), 3);
        consumer.close()?;
    }
    Ok(())
}
