//! Faults while an application runs, on Apache Kafka (a broker these tests can
//! stop, kill and start again on the same data):
//!
//! - the broker is killed (SIGKILL) mid-stream and comes back on its
//!   log directory: the instance keeps running (its consumer reconnects;
//!   a commit that fails while the broker is away replaces the stream
//!   thread, which resumes from the last commit), and every record in the
//!   input ends up in the output (at-least-once: duplicates allowed, loss
//!   not);
//! - the broker stays away longer than the retry timeout: the instance
//!   stops with an error saying so, instead of spinning forever;
//! - a state directory that cannot be written: the instance stops at once
//!   with an error naming it (not retried: it will not mend itself);
//! - a topology slower per batch than the consumer's `max.poll.interval.ms`:
//!   it keeps its place in the group and gets through every record.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::kafka::KafkaCluster;
use brook_runtime::streams::{KafkaStreams, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_testkit::{Restart, TestBroker, read_topic};
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, StreamsBuilder, TopicSpec,
};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// Copies `input` to `output` with the value upper-cased.
fn copy_topology(input: &str, output: &str) -> TestResult<brook_topology::Topology> {
    let b = StreamsBuilder::new();
    b.stream(input, Consumed::with(Utf8, Utf8))
        .map_values(|v: String| v.to_uppercase())
        .to(output, Produced::with(Utf8, Utf8));
    Ok(b.build()?)
}

fn config(app: &str) -> StreamsConfig {
    let mut config = StreamsConfig::new(app);
    config.commit_interval = Duration::from_millis(200);
    config.retry_timeout = Duration::from_secs(120);
    config.static_assignment = Some((0, 1));
    config
}

fn produce(cluster: &KafkaCluster, topic: &str, from: u32, to: u32) -> TestResult {
    let mut producer = cluster.producer()?;
    for i in from..to {
        producer.send(ProducedRecord {
            topic: topic.to_owned(),
            partition: None,
            key: Some(format!("k{}", i % 16).into_bytes()),
            value: Some(format!("record-{i}").into_bytes()),
            timestamp: brook_testkit::now_ms(),
            headers: Headers::new(),
        })?;
    }
    producer.flush()?;
    Ok(())
}

/// The values of `topic`, counted.
fn values(cluster: &KafkaCluster, topic: &str, group: &str) -> TestResult<BTreeMap<String, u32>> {
    let mut counts = BTreeMap::new();
    for r in read_topic(cluster, topic, group, Duration::from_secs(60))? {
        *counts
            .entry(String::from_utf8(r.value.unwrap_or_default())?)
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// Waits until every value of `input` is in `output` (upper-cased); when
/// they do not come, the error says what the instance was doing.
fn wait_complete(
    streams: &KafkaStreams,
    cluster: &KafkaCluster,
    input: &str,
    output: &str,
    timeout: Duration,
) -> TestResult<(BTreeMap<String, u32>, BTreeMap<String, u32>)> {
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        let inputs = values(cluster, input, &format!("{input}-check-{round}"))?;
        let outputs = values(cluster, output, &format!("{output}-check-{round}"))?;
        let missing = inputs
            .keys()
            .filter(|v| !outputs.contains_key(&v.to_uppercase()))
            .count();
        if missing == 0 {
            return Ok((inputs, outputs));
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "{missing} of {} input records never reached the output ({} records there); \
                 the instance is {:?}, its thread failures: {:?}, its threads: {:?}",
                inputs.len(),
                outputs.len(),
                streams.state(),
                streams.errors(),
                streams.threads_metrics()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_instance_survives_a_broker_crash_mid_stream_and_loses_nothing() -> TestResult {
    let mut broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (input, output) = (ns.topic("orders"), ns.topic("orders-upper"));
    let app = ns.group("survivor");
    broker.create_topics(&[TopicSpec::new(&input, 2), TopicSpec::new(&output, 2)])?;
    // Calls give up after 3 s, so that commits fail while the broker is
    // away (rather than wait for it) and the retry path runs.
    let cluster =
        Arc::new(KafkaCluster::new(broker.config().clone())?.with_timeout(Duration::from_secs(3)));
    produce(&cluster, &input, 0, 1_000)?;

    let mut streams = KafkaStreams::new(
        copy_topology(&input, &output)?,
        config(&app),
        cluster.clone(),
    );
    streams.start()?;
    wait_complete(&streams, &cluster, &input, &output, Duration::from_secs(60))?;

    // Records keep arriving while the broker dies and comes back.
    let more = {
        let cluster = KafkaCluster::new(broker.config().clone())?;
        let input = input.clone();
        std::thread::spawn(move || -> Result<(), String> {
            for batch in 0..20u32 {
                produce(&cluster, &input, 1_000 + batch * 50, 1_050 + batch * 50)
                    .map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Down for several commit intervals: commits fail meanwhile.
    let down = Instant::now();
    broker.stop(Restart::Crash)?;
    std::thread::sleep(Duration::from_secs(8));
    broker.resume()?;
    let downtime = down.elapsed();
    more.join().map_err(|_| "producer panicked")??;

    let (inputs, outputs) = wait_complete(
        &streams,
        &cluster,
        &input,
        &output,
        Duration::from_secs(120),
    )?;
    assert_eq!(
        streams.state(),
        StreamsState::Running,
        "errors: {:?}",
        streams.errors()
    );
    // Every record the broker kept was processed; nothing else came out.
    assert!(inputs.len() >= 1_000, "{} inputs", inputs.len());
    for value in outputs.keys() {
        assert!(
            inputs.contains_key(&value.to_lowercase()),
            "output {value} has no input"
        );
    }
    let duplicates: u32 = outputs.values().map(|n| n - 1).sum();
    eprintln!(
        "broker down and back in {downtime:?}; {} inputs, {} outputs ({duplicates} duplicates); \
         thread failures: {:?}",
        inputs.len(),
        outputs.values().sum::<u32>(),
        streams.errors()
    );
    streams.close()?;
    assert_eq!(streams.state(), StreamsState::NotRunning);
    Ok(())
}

#[test]
fn an_instance_gives_up_when_the_broker_stays_away_longer_than_the_retry_timeout() -> TestResult {
    let mut broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (input, output) = (ns.topic("orders"), ns.topic("orders-upper"));
    broker.create_topics(&[TopicSpec::new(&input, 1), TopicSpec::new(&output, 1)])?;
    let cluster =
        Arc::new(KafkaCluster::new(broker.config().clone())?.with_timeout(Duration::from_secs(3)));
    produce(&cluster, &input, 0, 100)?;
    let mut config = config(&ns.group("quitter"));
    config.retry_timeout = Duration::from_secs(5);
    let mut streams = KafkaStreams::new(copy_topology(&input, &output)?, config, cluster.clone());
    streams.start()?;
    wait_complete(&streams, &cluster, &input, &output, Duration::from_secs(60))?;
    broker.stop(Restart::Graceful)?;
    let stopped = Instant::now();
    let state = streams.wait_for_state(StreamsState::Error, Duration::from_secs(90));
    // Retried (the thread replaced, again and again) until the timeout.
    assert!(
        stopped.elapsed() >= Duration::from_secs(5),
        "gave up after {:?}: {:?}",
        stopped.elapsed(),
        streams.errors()
    );
    assert!(streams.errors().len() >= 2, "{:?}", streams.errors());
    assert_eq!(state, StreamsState::Error, "errors: {:?}", streams.errors());
    let errors = streams.errors().join("\n");
    eprintln!("gave up after {:?}: {errors}", stopped.elapsed());
    assert!(errors.contains("unavailable"), "{errors}");
    Ok(())
}

#[test]
fn an_unwritable_state_directory_stops_the_instance_with_an_error_naming_it() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let input = ns.topic("clicks");
    broker.create_topics(&[TopicSpec::new(&input, 1)])?;
    let cluster = Arc::new(KafkaCluster::new(broker.config().clone())?);
    produce(&cluster, &input, 0, 10)?;
    // A state directory inside a regular file cannot be created, whoever
    // runs the test (root ignores permissions).
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"")?;
    let state = file.join("state");
    let b = StreamsBuilder::new();
    b.stream(&input, Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
    let config = config(&ns.group("unwritable")).state_dir(&state);
    let mut streams = KafkaStreams::new(b.build()?, config, cluster);
    let started = Instant::now();
    // Found when starting (opening the directory), or by the thread.
    let errors = match streams.start() {
        Err(e) => brook_runtime::cluster::error_chain(&e),
        Ok(()) => {
            let state = streams.wait_for_state(StreamsState::Error, Duration::from_secs(30));
            let errors = streams.errors().join("\n");
            assert_eq!(state, StreamsState::Error, "{errors}");
            errors
        }
    };
    assert!(
        errors.contains(&file.display().to_string()),
        "the error names the directory: {errors}"
    );
    // Not retried for minutes: it stopped at once.
    assert!(started.elapsed() < Duration::from_secs(20));
    Ok(())
}

/// A slow topology (20 ms a record: a poll's 500 records take 10 s) with
/// a consumer that must poll every 7 s (`max.poll.interval.ms`) to stay in
/// its group: the thread processes for at most its processing budget
/// between polls, so it stays in the group and gets through everything.
#[test]
fn a_slow_topology_keeps_its_place_in_the_group_and_gets_through() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let (input, output) = (ns.topic("slow-in"), ns.topic("slow-out"));
    broker.create_topics(&[TopicSpec::new(&input, 1), TopicSpec::new(&output, 1)])?;
    let kafka = broker
        .config()
        .clone()
        .set_consumer("max.poll.interval.ms", "7000");
    let cluster = Arc::new(KafkaCluster::new(kafka)?);
    produce(&cluster, &input, 0, 600)?;
    let b = StreamsBuilder::new();
    b.stream(&input, Consumed::with(Utf8, Utf8))
        .peek(|_, _| std::thread::sleep(Duration::from_millis(20)))
        .map_values(|v: String| v.to_uppercase())
        .to(&output, Produced::with(Utf8, Utf8));
    let mut config = config(&ns.group("slow"));
    config.static_assignment = None;
    config.commit_interval = Duration::from_secs(30);
    let mut streams = KafkaStreams::new(b.build()?, config, cluster.clone());
    streams.start()?;
    let (inputs, outputs) =
        wait_complete(&streams, &cluster, &input, &output, Duration::from_secs(90))?;
    assert_eq!(inputs.len(), 600);
    assert_eq!(outputs.values().sum::<u32>(), 600, "each record once");
    assert_eq!(
        streams.state(),
        StreamsState::Running,
        "{:?}",
        streams.errors()
    );
    assert!(streams.errors().is_empty(), "{:?}", streams.errors());
    streams.close()?;
    Ok(())
}
