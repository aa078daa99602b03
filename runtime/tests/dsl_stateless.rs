//! Stateless DSL operators, the Processor API, time and bad input, run on
//! the TopologyTestDriver with multi-partition topics. Expected results are
//! computed by hand in each test.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_runtime::driver::TopologyTestDriver;
use brook_runtime::partition::partition_for_key;
use brook_runtime::task::{DeserializationHandler, dead_letter_error};
use brook_runtime::thread::RuntimeError;
use brook_topology::processor::{
    ProcessError, Processor, ProcessorContext, PunctuationType, ScheduleId,
};
use brook_topology::serdes::{Json, Nullable, Utf8};
use brook_topology::{Consumed, Produced, Record, Repartitioned, StreamsBuilder, Timestamp};

type TestResult = Result<(), Box<dyn Error>>;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Event {
    user: String,
    kind: String,
    price: Option<f64>,
    ts: i64,
}

fn event(user: &str, kind: &str, price: Option<f64>, ts: i64) -> Event {
    Event {
        user: user.into(),
        kind: kind.into(),
        price,
        ts,
    }
}

fn events_in() -> Consumed<String, Event> {
    Consumed::with(Utf8, Json::<Event>::new())
}

#[test]
fn filter_filter_not_map_values_keep_keys_and_timestamps() -> TestResult {
    let b = StreamsBuilder::new();
    let events = b.stream("events", events_in());
    events
        .filter(|_, e| e.kind == "PURCHASE")
        .map_values(|e| e.price.unwrap_or(0.0))
        .to("purchase-prices", Produced::with(Utf8, Json::<f64>::new()));
    events
        .filter_not(|_, e| e.kind == "PURCHASE")
        .to("other-events", Produced::with(Utf8, Json::<Event>::new()));
    let driver = TopologyTestDriver::builder(b.build()?)
        .default_partitions(3)
        .build()?;
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    input.pipe_input("u1".into(), event("u1", "VIEW", None, 1), 100)?;
    input.pipe_input("u2".into(), event("u2", "PURCHASE", Some(9.5), 2), 200)?;
    input.pipe_input("u3".into(), event("u3", "PURCHASE", Some(20.0), 3), 300)?;

    let prices = driver
        .output_topic("purchase-prices", Utf8, Json::<f64>::new())
        .read_records()?;
    let got: Vec<_> = prices
        .iter()
        .map(|r| (r.key.as_str(), r.value, r.timestamp))
        .collect();
    assert_eq!(got, vec![("u2", 9.5, 200), ("u3", 20.0, 300)]);
    // Same key, same partition: the output is partitioned like the input.
    for r in &prices {
        assert_eq!(Some(r.partition), partition_for_key(r.key.as_bytes(), 3));
    }
    let others = driver
        .output_topic("other-events", Utf8, Json::<Event>::new())
        .read_key_values()?;
    assert_eq!(
        others,
        vec![("u1".to_string(), event("u1", "VIEW", None, 1))]
    );
    Ok(())
}

#[test]
fn map_select_key_flat_map_and_peek() -> TestResult {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_peek = seen.clone();
    let b = StreamsBuilder::new();
    let lines = b.stream("lines", Consumed::with(Utf8, Utf8));
    lines
        .peek(move |k, _| seen_in_peek.lock().unwrap().push(k.clone()))
        .flat_map(|doc: String, line: String| {
            line.split_whitespace()
                .map(|w| (w.to_lowercase(), doc.clone()))
                .collect::<Vec<_>>()
        })
        .to("word-docs", Produced::with(Utf8, Utf8));
    lines
        .map(|doc, line| (line.len() as u64, doc))
        .to("length-doc", Produced::with(Json::<u64>::new(), Utf8));
    lines
        .select_key(|_, line| line.split_whitespace().next().unwrap_or("").to_owned())
        .flat_map_values(|line| {
            line.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .to("rest-by-first-word", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .default_partitions(2)
        .build()?;
    let input = driver.input_topic("lines", Utf8, Utf8);
    input.pipe_input("d1".into(), "Hello brook Hello".into(), 10)?;
    input.pipe_input("d2".into(), "bye".into(), 20)?;

    let words = driver
        .output_topic("word-docs", Utf8, Utf8)
        .read_key_values()?;
    let expected: Vec<(String, String)> = [
        ("hello", "d1"),
        ("brook", "d1"),
        ("hello", "d1"),
        ("bye", "d2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(words, expected);
    let lengths = driver
        .output_topic("length-doc", Json::<u64>::new(), Utf8)
        .read_key_values()?;
    assert_eq!(lengths, vec![(17, "d1".to_string()), (3, "d2".to_string())]);
    let rest = driver
        .output_topic("rest-by-first-word", Utf8, Utf8)
        .read_key_values()?;
    assert_eq!(
        rest,
        vec![
            ("Hello".to_string(), "brook".to_string()),
            ("Hello".to_string(), "Hello".to_string())
        ]
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["d1".to_string(), "d2".to_string()]
    );
    Ok(())
}

#[test]
fn split_sends_each_record_to_the_first_matching_branch_or_the_default() -> TestResult {
    let b = StreamsBuilder::new();
    let totals = b.stream("totals", Consumed::with(Utf8, Json::<i64>::new()));
    let branches = totals
        .split()
        .branch(|_, t| *t >= 100)
        .branch(|_, t| *t >= 10)
        .default_branch()
        .into_streams();
    assert_eq!(branches.len(), 3);
    for (stream, topic) in branches.iter().zip(["big", "medium", "small"]) {
        stream.to(topic, Produced::with(Utf8, Json::<i64>::new()));
    }
    let driver = TopologyTestDriver::new(b.build()?)?;
    let input = driver.input_topic("totals", Utf8, Json::<i64>::new());
    for (k, v) in [("a", 500), ("b", 50), ("c", 5), ("d", 100), ("e", 10)] {
        input.pipe_input(k.into(), v, 0)?;
    }
    let read = |topic| {
        driver
            .output_topic(topic, Utf8, Json::<i64>::new())
            .read_values()
    };
    assert_eq!(read("big")?, vec![500, 100]);
    assert_eq!(read("medium")?, vec![50, 10]);
    assert_eq!(read("small")?, vec![5]);
    Ok(())
}

#[test]
fn merge_combines_co_partitioned_streams() -> TestResult {
    let b = StreamsBuilder::new();
    let web = b.stream("web", Consumed::with(Utf8, Utf8));
    let app = b.stream("app", Consumed::with(Utf8, Utf8));
    web.map_values(|v| format!("web:{v}"))
        .merge(&app.map_values(|v| format!("app:{v}")))
        .to("all", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    assert_eq!(
        topology.subtopologies().len(),
        1,
        "merged inputs share a sub-topology"
    );
    let driver = TopologyTestDriver::builder(topology)
        .default_partitions(3)
        .build()?;
    driver
        .input_topic("web", Utf8, Utf8)
        .pipe_input("k1".into(), "x".into(), 1)?;
    driver
        .input_topic("app", Utf8, Utf8)
        .pipe_input("k2".into(), "y".into(), 2)?;
    let all = driver.output_topic("all", Utf8, Utf8).read_values()?;
    assert_eq!(all, vec!["web:x".to_string(), "app:y".to_string()]);
    Ok(())
}

#[test]
fn merging_topics_with_different_partition_counts_is_refused() -> TestResult {
    let b = StreamsBuilder::new();
    let a = b.stream("a", Consumed::with(Utf8, Utf8));
    let c = b.stream("c", Consumed::with(Utf8, Utf8));
    a.merge(&c).to("out", Produced::with(Utf8, Utf8));
    let result = TopologyTestDriver::builder(b.build()?)
        .topic("a", 2)
        .topic("c", 3)
        .build();
    let Err(error) = result else {
        return Err("expected a co-partitioning error".into());
    };
    let message = error.to_string();
    assert!(
        message.contains("co-partitioning") && message.contains("a: 2") && message.contains("c: 3"),
        "{message}"
    );
    Ok(())
}

#[test]
fn repartition_moves_records_to_the_partition_of_their_new_key() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("events", events_in())
        .select_key(|_, e| e.kind.clone())
        .repartition(Repartitioned::named("by-kind", Utf8, Json::<Event>::new()))
        .map_values(|e| e.user)
        .to("users-by-kind", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    assert_eq!(topology.subtopologies().len(), 2);
    let driver = TopologyTestDriver::builder(topology)
        .application_id("shop")
        .topic("events", 4)
        .topic("users-by-kind", 4)
        .build()?;
    // The repartition topic got the input's partition count.
    assert_eq!(
        brook_runtime::cluster::Cluster::partition_count(
            driver.cluster(),
            "shop-by-kind-repartition"
        )?,
        4
    );
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    for (i, kind) in ["VIEW", "PURCHASE", "VIEW", "CART", "PURCHASE"]
        .iter()
        .enumerate()
    {
        let user = format!("user-{i}");
        input.pipe_input(user.clone(), event(&user, kind, None, i as i64), i as i64)?;
    }
    let repartitioned = driver.cluster().records("shop-by-kind-repartition")?;
    assert_eq!(repartitioned.len(), 5);
    for stored in &repartitioned {
        let key = stored.record.key.as_deref().ok_or("null key")?;
        assert_eq!(Some(stored.record.tp.partition), partition_for_key(key, 4));
    }
    let out = driver
        .output_topic("users-by-kind", Utf8, Utf8)
        .read_records()?;
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &out {
        assert_eq!(Some(r.partition), partition_for_key(r.key.as_bytes(), 4));
        by_kind
            .entry(r.key.clone())
            .or_default()
            .push(r.value.clone());
    }
    assert_eq!(by_kind["VIEW"], vec!["user-0", "user-2"]);
    assert_eq!(by_kind["PURCHASE"], vec!["user-1", "user-4"]);
    assert_eq!(by_kind["CART"], vec!["user-3"]);
    Ok(())
}

#[test]
fn log_and_continue_skips_and_counts_bad_records() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("events", events_in())
        .map_values(|e| e.kind)
        .to("kinds", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("shop")
        .deserialization_handler(DeserializationHandler::LogAndContinue)
        .build()?;
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    input.pipe_input("u1".into(), event("u1", "VIEW", None, 0), 5)?;
    input.pipe_raw(Some(b"u2"), Some(b"{\"user\": \"u2\""), 6)?;
    input.pipe_input("u3".into(), event("u3", "CART", None, 0), 8)?;
    assert_eq!(
        driver.output_topic("kinds", Utf8, Utf8).read_values()?,
        vec!["VIEW", "CART"]
    );
    assert!(driver.cluster().records("shop-dead-letters")?.is_empty());
    assert_eq!(driver.metrics().skipped, 1);
    assert_eq!(driver.metrics().dead_lettered, 0);
    Ok(())
}

#[test]
fn the_fail_handler_stops_with_topic_partition_and_offset() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("events", events_in())
        .map_values(|e| e.kind)
        .to("kinds", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("shop")
        .deserialization_handler(DeserializationHandler::Fail)
        .build()?;
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    input.pipe_input("u1".into(), event("u1", "VIEW", None, 0), 5)?;
    let err = input
        .pipe_raw(Some(b"u2"), Some(b"{\"user\": \"u2\""), 6)
        .unwrap_err();
    let chain = brook_runtime::cluster::error_chain(&err);
    assert!(chain.contains("events/0@1"), "{chain}");
    assert!(chain.contains("cannot deserialize the value"), "{chain}");
    Ok(())
}

#[test]
fn undeserializable_records_go_to_the_dead_letter_topic_and_processing_continues() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("events", events_in())
        .map_values(|e| e.kind)
        .to("kinds", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("shop")
        .build()?;
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    input.pipe_input("u1".into(), event("u1", "VIEW", None, 0), 5)?;
    input.pipe_raw(Some(b"u2"), Some(b"{\"user\": \"u2\""), 6)?;
    input.pipe_raw(None, Some(b"{}"), 7)?;
    input.pipe_input("u3".into(), event("u3", "CART", None, 0), 8)?;

    assert_eq!(
        driver.output_topic("kinds", Utf8, Utf8).read_values()?,
        vec!["VIEW", "CART"]
    );
    assert_eq!(driver.dead_letter_topic(), "shop-dead-letters");
    let letters = driver.cluster().records("shop-dead-letters")?;
    assert_eq!(letters.len(), 2);
    let first = &letters[0].record;
    assert_eq!(
        first.value.as_deref(),
        Some(&b"{\"user\": \"u2\""[..]),
        "bytes kept as they were"
    );
    let error = dead_letter_error(&first.headers).ok_or("no error header")?;
    assert!(error.contains("value") && error.contains("JSON"), "{error}");
    assert_eq!(
        first.headers.last("brook.topic"),
        Some(Some(&b"events"[..]))
    );
    assert_eq!(first.headers.last("brook.offset"), Some(Some(&b"1"[..])));
    let second = dead_letter_error(&letters[1].record.headers).ok_or("no error header")?;
    assert!(
        second.contains("key") && second.contains("null"),
        "{second}"
    );
    assert_eq!(driver.metrics().dead_lettered, 2);
    assert_eq!(driver.metrics().processed, 2);
    Ok(())
}

#[test]
fn nullable_keys_are_explicit_in_the_type() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("raw", Consumed::with(Nullable(Utf8), Utf8))
        .map(|k: Option<String>, v| (k.unwrap_or_else(|| "anonymous".into()), v))
        .to("named", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let input = driver.input_topic("raw", Nullable(Utf8), Utf8);
    input.pipe_input(None, "a".into(), 1)?;
    input.pipe_input(Some("bob".into()), "b".into(), 2)?;
    let out = driver.output_topic("named", Utf8, Utf8).read_key_values()?;
    assert_eq!(
        out,
        vec![("anonymous".into(), "a".into()), ("bob".into(), "b".into())]
    );
    Ok(())
}

#[test]
fn timestamp_extractor_sets_event_time_and_stream_time_is_per_task() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream(
        "events",
        events_in().timestamp_extractor(|_, e: &Event, _| e.ts),
    )
    .to("copy", Produced::with(Utf8, Json::<Event>::new()));
    let driver = TopologyTestDriver::builder(b.build()?)
        .default_partitions(2)
        .build()?;
    let input = driver.input_topic("events", Utf8, Json::<Event>::new());
    input.pipe_input_to(0, "a".into(), event("a", "VIEW", None, 5_000), 1)?;
    input.pipe_input_to(1, "b".into(), event("b", "VIEW", None, 9_000), 2)?;
    // Out of order on partition 0: stream time does not go back.
    input.pipe_input_to(0, "c".into(), event("c", "VIEW", None, 3_000), 3)?;
    let out = driver
        .output_topic("copy", Utf8, Json::<Event>::new())
        .read_records()?;
    assert_eq!(
        out.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
        vec![5_000, 9_000, 3_000]
    );
    let times = driver.stream_times();
    assert_eq!(times["0_0"], 5_000);
    assert_eq!(times["0_1"], 9_000);
    // A negative event time is bad input, not a crash.
    input.pipe_input_to(0, "d".into(), event("d", "VIEW", None, -1), 4)?;
    assert_eq!(driver.metrics().dead_lettered, 1);
    Ok(())
}

/// Counts records per key, emits the counts on stream-time punctuation every
/// 10 s and a heartbeat on wall-clock punctuation every minute.
struct CountingProcessor {
    counts: BTreeMap<String, u64>,
    stream_schedule: Option<ScheduleId>,
}

impl Processor<String, String, String, String> for CountingProcessor {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, String>) -> Result<(), ProcessError> {
        self.stream_schedule =
            Some(ctx.schedule(Duration::from_secs(10), PunctuationType::StreamTime));
        ctx.schedule(Duration::from_secs(60), PunctuationType::WallClockTime);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        record: Record<String, String>,
    ) -> Result<(), ProcessError> {
        if record.value == "fail" {
            return Err(ProcessError::user(format!(
                "refusing record at offset {:?}",
                ctx.record_metadata().map(|m| m.offset)
            )));
        }
        *self.counts.entry(record.key).or_insert(0) += 1;
        Ok(())
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        id: ScheduleId,
        timestamp: Timestamp,
    ) -> Result<(), ProcessError> {
        if Some(id) == self.stream_schedule {
            for (key, count) in &self.counts {
                ctx.forward(Record::new(
                    key.clone(),
                    format!("{count}@{timestamp}"),
                    timestamp,
                ));
            }
        } else {
            ctx.forward(Record::new(
                "heartbeat".into(),
                format!("wall@{timestamp}"),
                timestamp,
            ));
        }
        Ok(())
    }
}

#[test]
fn processor_api_punctuates_on_stream_time_and_wall_clock_time() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(Utf8, Utf8))
        .process(|| CountingProcessor {
            counts: BTreeMap::new(),
            stream_schedule: None,
        })
        .name("counter")
        .to("out", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    assert!(
        topology
            .describe()
            .to_string()
            .contains("Processor: counter (stores: [])")
    );
    let driver = TopologyTestDriver::builder(topology)
        .wall_clock(1_000_000)
        .build()?;
    let input = driver.input_topic("in", Utf8, Utf8);
    let out = driver.output_topic("out", Utf8, Utf8);

    // The first record fires the stream-time punctuation (aligned to 0).
    input.pipe_input("a".into(), "x".into(), 1_000)?;
    assert_eq!(out.read_key_values()?, vec![("a".into(), "1@1000".into())]);
    // Still before 10 000: nothing.
    input.pipe_input("a".into(), "x".into(), 9_999)?;
    input.pipe_input("b".into(), "x".into(), 5_000)?;
    assert!(out.is_empty()?);
    // Stream time reaches 10 000: one punctuation, even though it jumps far.
    input.pipe_input("b".into(), "x".into(), 35_000)?;
    assert_eq!(
        out.read_key_values()?,
        vec![
            ("a".into(), "2@35000".into()),
            ("b".into(), "2@35000".into())
        ]
    );
    input.pipe_input("b".into(), "x".into(), 39_999)?;
    assert!(out.is_empty()?);
    // Punctuations are aligned to multiples of the interval: 40 000, not 45 000.
    input.pipe_input("c".into(), "x".into(), 40_000)?;
    assert_eq!(out.read_values()?, vec!["2@40000", "3@40000", "1@40000"]);

    // Wall clock: nothing until a minute has passed.
    driver.advance_wall_clock(Duration::from_secs(59))?;
    assert!(out.is_empty()?);
    driver.advance_wall_clock(Duration::from_secs(1))?;
    assert_eq!(
        out.read_key_values()?,
        vec![("heartbeat".into(), "wall@1060000".into())]
    );
    assert_eq!(driver.metrics().punctuations, 4);
    Ok(())
}

#[test]
fn a_failing_processor_stops_the_task_with_its_name_and_error() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(Utf8, Utf8))
        .process(|| CountingProcessor {
            counts: BTreeMap::new(),
            stream_schedule: None,
        })
        .name("counter")
        .to("out", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let error = driver
        .input_topic("in", Utf8, Utf8)
        .pipe_input("k".into(), "fail".into(), 1)
        .err()
        .ok_or("expected an error")?;
    let brook_runtime::driver::DriverError::Runtime(RuntimeError::Task { task, source }) = &error
    else {
        return Err(format!("unexpected error {error:?}").into());
    };
    assert_eq!(task.to_string(), "0_0");
    assert!(source.to_string().contains("counter"), "{source}");
    let cause = (**source).source().ok_or("no cause")?;
    assert!(
        cause
            .to_string()
            .contains("refusing record at offset Some(0)"),
        "{cause}"
    );
    Ok(())
}

#[test]
fn a_missing_source_topic_is_named() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(Utf8, Utf8))
        .to("out", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    let cluster = brook_runtime::memory::MemoryCluster::new();
    let result = brook_runtime::thread::StreamThread::new(
        &Arc::new(topology),
        brook_runtime::thread::StreamsConfig::new("app"),
        &cluster,
        |_| true,
        0,
    );
    let Err(error) = result else {
        return Err("expected an error".into());
    };
    assert!(
        error
            .to_string()
            .contains("source topic \"in\" does not exist"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_task_processes_buffered_records_in_timestamp_order_across_its_topics() -> TestResult {
    use brook_runtime::cluster::ProducedRecord;
    let b = StreamsBuilder::new();
    let left = b.stream("left", Consumed::with(Utf8, Utf8));
    let right = b.stream("right", Consumed::with(Utf8, Utf8));
    left.merge(&right).to("merged", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    // Written straight to the cluster, so the task finds them all buffered
    // at once when the next record is piped in.
    for (topic, value, ts) in [
        ("left", "l10", 10),
        ("left", "l30", 30),
        ("right", "r20", 20),
        ("right", "r25", 25),
    ] {
        driver.cluster().produce(ProducedRecord {
            topic: topic.into(),
            partition: Some(0),
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp: ts,
            headers: Default::default(),
        })?;
    }
    driver
        .input_topic("left", Utf8, Utf8)
        .pipe_input("k".into(), "l40".into(), 40)?;
    let merged = driver.output_topic("merged", Utf8, Utf8).read_values()?;
    assert_eq!(merged, vec!["l10", "r20", "r25", "l30", "l40"]);
    Ok(())
}
