//! Exactly-once on Apache Kafka (the test's own broker, or the one
//! `BROOK_BOOTSTRAP` names), which implements transactions, read_committed
//! and fencing.
//!
//! An echo and a count per key run with exactly_once_v2 and a thread that
//! fails once mid-stream, then dies at each step of a commit in turn (after
//! producing, after sending the offsets to the transaction, before
//! committing it), and is replaced each time: its open transaction is
//! aborted by its successor, which resumes from the last commit. A read-committed
//! reader then sees every input exactly once and every count exact.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, ClusterError, ProducedRecord};
use brook_runtime::kafka::KafkaCluster;
use brook_runtime::streams::{ErrorResponse, KafkaStreams};
use brook_runtime::thread::{FaultPoint, StreamsConfig, ThreadOptions};
use brook_testkit::{CrashOnceAtEach, TestBroker, read_topic};
use brook_topology::processor::{ProcessError, Processor, ProcessorContext};
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, Record, StreamsBuilder, TopicSpec,
};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const RECORDS: i64 = 2_000;

struct FailOnce(Arc<AtomicBool>);

impl Processor<String, i64, String, i64> for FailOnce {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        record: Record<String, i64>,
    ) -> Result<(), ProcessError> {
        if record.value == RECORDS / 2 && !self.0.swap(true, Ordering::SeqCst) {
            return Err(ProcessError::user("failing once, mid-stream"));
        }
        ctx.forward(record);
        Ok(())
    }
}

fn read_all(cluster: &KafkaCluster, topic: &str, group: &str) -> TestResult<Vec<(String, i64)>> {
    read_topic(cluster, topic, group, Duration::from_secs(60))?
        .into_iter()
        .map(|r| {
            Ok((
                String::from_utf8(r.key.unwrap_or_default())?,
                Json::<i64>::new().deserialize(r.value.as_deref())?,
            ))
        })
        .collect()
}

#[test]
fn exactly_once_on_kafka_across_a_failed_thread() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (input, echo, counts) = (ns.topic("in"), ns.topic("echo"), ns.topic("counts"));
    broker.create_topics(&[
        TopicSpec::new(&input, 3),
        TopicSpec::new(&echo, 3),
        TopicSpec::new(&counts, 3),
    ])?;
    let cluster = Arc::new(KafkaCluster::new(broker.config().clone())?);
    let mut producer = cluster.producer()?;
    for i in 0..RECORDS {
        producer.send(ProducedRecord {
            topic: input.clone(),
            partition: None,
            key: Some(format!("k{}", i % 7).into_bytes()),
            value: Json::<i64>::new().serialize(&i)?,
            timestamp: brook_testkit::now_ms() + i,
            headers: Headers::new(),
        })?;
    }
    producer.flush()?;
    let failed = Arc::new(AtomicBool::new(false));
    let b = StreamsBuilder::new();
    let stream = b.stream(&input, Consumed::with(Utf8, Json::<i64>::new()));
    let flag = failed.clone();
    stream
        .process(move || FailOnce(flag.clone()))
        .to(&echo, Produced::with(Utf8, Json::<i64>::new()));
    stream
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()))
        .to(&counts, Produced::with(Utf8, Json::<i64>::new()));
    let dir = tempfile::tempdir()?;
    let mut config = StreamsConfig::new(ns.group("eos"))
        .exactly_once()
        .state_dir(dir.path());
    config.static_assignment = Some((0, 1));
    let crashes = Arc::new(CrashOnceAtEach::new(&[
        FaultPoint::AfterProduce,
        FaultPoint::AfterSendOffsets,
        FaultPoint::BeforeCommit,
    ]));
    let mut streams =
        KafkaStreams::new(b.build()?, config, cluster.clone()).with_thread_options(ThreadOptions {
            faults: Some(crashes.clone()),
            ..ThreadOptions::default()
        });
    streams.set_uncaught_error_handler(|_| ErrorResponse::ReplaceThread);
    streams.start()?;
    // Until every input is echoed (committed), or two minutes: records
    // processed again after a crash count in `processed` twice.
    let started = Instant::now();
    let mut reads = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        reads += 1;
        let echoed = read_all(&cluster, &echo, &ns.group(&format!("wait{reads}")))?;
        let distinct: std::collections::BTreeSet<i64> = echoed.iter().map(|(_, v)| *v).collect();
        if distinct.len() >= RECORDS as usize || started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    streams.close()?;
    assert!(failed.load(Ordering::SeqCst), "the failure was injected");
    assert_eq!(crashes.left(), 0, "every commit step crashed once");

    let echoed = read_all(&cluster, &echo, &ns.group("r1"))?;
    let mut seen = BTreeMap::new();
    for (_, v) in &echoed {
        *seen.entry(*v).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), RECORDS as usize, "every input echoed");
    assert!(seen.values().all(|&n| n == 1), "and exactly once");
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (k, c) in read_all(&cluster, &counts, &ns.group("r2"))? {
        per_key.entry(k).or_default().push(c);
    }
    for k in 0..7 {
        let n = (0..RECORDS).filter(|i| i % 7 == k).count() as i64;
        assert_eq!(per_key[&format!("k{k}")], (1..=n).collect::<Vec<_>>());
    }
    Ok(())
}

fn record(topic: &str, value: &str) -> ProducedRecord {
    ProducedRecord {
        topic: topic.to_owned(),
        partition: Some(0),
        key: None,
        value: Some(value.as_bytes().to_vec()),
        // Now: a timestamp older than the retention (7 days) would let the
        // broker delete a rolled segment under the reader.
        timestamp: brook_testkit::now_ms(),
        headers: Headers::new(),
    }
}

fn committed_values(cluster: &KafkaCluster, topic: &str, group: &str) -> TestResult<Vec<String>> {
    read_topic(cluster, topic, group, Duration::from_secs(60))?
        .into_iter()
        .map(|r| Ok(String::from_utf8(r.value.unwrap_or_default())?))
        .collect()
}

/// Two stale epochs that librdkafka reports alike (a fatal fence) and brook
/// tells apart: another producer took the transactional id over (`Fenced`:
/// the instance must stop), or the coordinator aborted the producer's own
/// transaction for outliving `transaction.timeout.ms` and bumped its epoch
/// (`TransactionAborted`: a new producer takes the id up again and the
/// tasks resume from the committed state; what a broker outage longer than
/// the timeout leads to). Nothing of either aborted transaction is ever
/// read committed.
#[test]
fn a_transaction_timed_out_by_the_coordinator_is_aborted_and_a_taken_id_is_fenced() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let topic = ns.topic("txn");
    broker.create_topics(&[TopicSpec::new(&topic, 1)])?;
    let cluster = KafkaCluster::new(broker.config().clone())?;

    // Taken over: the older producer's commit is refused as `Fenced`.
    let id = ns.topic("taken");
    let mut older = cluster.transactional_producer(&id)?;
    older.begin_transaction()?;
    older.send(record(&topic, "older"))?;
    older.flush()?;
    let mut newer = cluster.transactional_producer(&id)?;
    let refused = older.commit_transaction().unwrap_err();
    assert!(
        matches!(refused, ClusterError::Fenced { .. }),
        "another producer holds the id: {refused}"
    );
    newer.begin_transaction()?;
    newer.send(record(&topic, "newer"))?;
    newer.commit_transaction()?;
    drop((older, newer));

    // Timed out: every record of the transaction acknowledged, then nothing
    // for longer than the 10 s transaction timeout; the coordinator looks
    // for expired transactions every second here.
    let id = ns.topic("timed-out");
    let mut producer = cluster.transactional_producer(&id)?;
    producer.begin_transaction()?;
    producer.send(record(&topic, "timed out"))?;
    producer.flush()?;
    std::thread::sleep(Duration::from_secs(13));
    let aborted = producer.commit_transaction().unwrap_err();
    assert!(
        matches!(&aborted, ClusterError::TransactionAborted { reason, .. }
            if reason.contains("past transaction.timeout.ms")),
        "the coordinator aborted the transaction: {aborted}"
    );
    drop(producer);
    let mut successor = cluster.transactional_producer(&id)?;
    successor.begin_transaction()?;
    successor.send(record(&topic, "successor"))?;
    successor.commit_transaction()?;

    assert_eq!(
        committed_values(&cluster, &topic, &ns.topic("reader"))?,
        ["newer", "successor"]
    );
    Ok(())
}
