//! A mix of every kind of bad record — malformed JSON, JSON of the wrong
//! shape, bytes that are not Avro, an unknown schema id, a corrupt Avro
//! datum, a null key where the key is required, a key that is not UTF-8,
//! oversized records (read, and written by a sink), timestamps far in the
//! future, far in the past and negative — between good ones, on two topics
//! (JSON and Avro with the schema registry), through each handler:
//!
//! - dead letters: every good record's result is written, in order, and
//!   every bad record is in the dead-letter topic with its original key
//!   and value bytes and headers naming the error, topic, partition and
//!   offset; the counts add up;
//! - log and continue: the same results, each bad record counted;
//! - fail: the first bad record stops the application with an error naming
//!   topic, partition, offset and reason, and no commit passes it (a
//!   restart stops at the same record).
//!
//! And a schema registry that does not answer is not the record's fault:
//! the record is neither dead-lettered nor committed, and is processed when
//! the registry is back.

use std::sync::Arc;
use std::time::Duration;

use brook_connectors::avro::{AvroSerde, RegistryClientConfig, SchemaRegistryClient, frame};
use brook_runtime::cluster::TopicPartition;
use brook_runtime::driver::TopologyTestDriver;
use brook_runtime::task::{DeserializationHandler, RecordLimits, dead_letter_error};
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::registry::Registry;
use brook_schemas::server::{RegistryServer, ServerConfig};
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{Consumed, Produced, StreamsBuilder, Topology};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The wall clock of the runs (2027-01-15).
const NOW: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const MAX_BYTES: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Order {
    id: u64,
    total_cents: i64,
    /// Printed once per item on the label: a big quantity makes a label
    /// larger than the sink may write.
    gift_note: String,
    quantity: usize,
}

fn label(order: &Order) -> String {
    format!(
        "{}:{}:{}",
        order.id,
        order.total_cents,
        order.gift_note.repeat(order.quantity)
    )
}

fn event_type_and_country(e: &UserEventV2) -> String {
    format!(
        "{}/{}",
        e.event_type.as_str(),
        e.country.as_deref().unwrap_or("unknown")
    )
}

fn limits() -> RecordLimits {
    RecordLimits {
        max_record_bytes: MAX_BYTES,
        max_timestamp_ahead_ms: Some(HOUR),
        max_timestamp_behind_ms: Some(7 * DAY),
    }
}

fn topology(client: &Arc<SchemaRegistryClient>) -> Result<Topology, Box<dyn std::error::Error>> {
    let b = StreamsBuilder::new();
    b.stream("orders", Consumed::with(Utf8, Json::<Order>::new()))
        .map_values(|o: Order| label(&o))
        .to("order-labels", Produced::with(Utf8, Utf8));
    b.stream(
        "events",
        Consumed::with(Utf8, AvroSerde::<UserEventV2>::for_event(client.clone())),
    )
    .map_values(|e: UserEventV2| event_type_and_country(&e))
    .to("event-types", Produced::with(Utf8, Utf8));
    Ok(b.build()?)
}

fn registry() -> RegistryServer {
    RegistryServer::start_in_memory().unwrap()
}

fn client(url: &str) -> Arc<SchemaRegistryClient> {
    let mut config = RegistryClientConfig::new(url);
    config.attempts = 2;
    config.request_timeout = Duration::from_secs(2);
    SchemaRegistryClient::new(config).unwrap()
}

/// One input record; `bad` is what its error must say, `None` for a good
/// record, whose expected result is `result`.
struct Input {
    topic: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    bad: Option<&'static str>,
    result: Option<String>,
}

fn good(topic: &'static str, key: &str, value: Vec<u8>, ts: i64, result: String) -> Input {
    Input {
        topic,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value),
        timestamp: ts,
        bad: None,
        result: Some(result),
    }
}

fn bad(
    topic: &'static str,
    key: Option<&[u8]>,
    value: Option<Vec<u8>>,
    ts: i64,
    why: &'static str,
) -> Input {
    Input {
        topic,
        key: key.map(<[u8]>::to_vec),
        value,
        timestamp: ts,
        bad: Some(why),
        result: None,
    }
}

/// Good orders and events with every kind of bad record between them.
fn feed(client: &Arc<SchemaRegistryClient>) -> Result<Vec<Input>, Box<dyn std::error::Error>> {
    let orders = Json::<Order>::new();
    let order = |n: u64, quantity: usize| Order {
        id: n,
        total_cents: 100 * n as i64 + 99,
        gift_note: format!("note {n} "),
        quantity,
    };
    let order_input = |n: u64, ts: i64| -> Result<Input, Box<dyn std::error::Error>> {
        let o = order(n, 1 + (n as usize % 3));
        Ok(good(
            "orders",
            &format!("customer-{}", n % 4),
            orders.serialize(&o)?.ok_or("null")?,
            ts,
            label(&o),
        ))
    };
    let v1 = AvroSerde::<UserEventV1>::for_event(client.clone());
    let v2 = AvroSerde::<UserEventV2>::for_event(client.clone());
    let base = |n: u32| UserEventV1 {
        event_id: format!("e-{n}"),
        user_id: format!("user_{:04}", n % 3),
        event_type: if n.is_multiple_of(2) {
            EventType::PageView
        } else {
            EventType::Purchase
        },
        timestamp: NOW - i64::from(n),
        session_id: format!("s-{n}"),
    };
    let event_input = |n: u32| -> Result<Input, Box<dyn std::error::Error>> {
        // Old (v1) and new (v2) producers write the topic at once.
        let (bytes, as_v2) = if n.is_multiple_of(3) {
            let e = base(n);
            (v1.serialize(&e)?.ok_or("null")?, UserEventV2::from(e))
        } else {
            let e = UserEventV2 {
                device_type: Some(DeviceType::Mobile),
                country: Some(["NL", "FR", "JP"][n as usize % 3].into()),
                ..UserEventV2::from(base(n))
            };
            (v2.serialize(&e)?.ok_or("null")?, e)
        };
        Ok(good(
            "events",
            &format!("user_{:04}", n % 3),
            bytes,
            NOW - i64::from(n) * 1000,
            event_type_and_country(&as_v2),
        ))
    };

    let valid_event = v2.serialize(&UserEventV2::from(base(99)))?.ok_or("null")?;
    let huge_order = Order {
        gift_note: "x".repeat(MAX_BYTES),
        ..order(90, 1)
    };
    let mut inputs = Vec::new();
    let mut n = 0u64;
    let mut next_good = |inputs: &mut Vec<Input>| -> TestResult {
        n += 1;
        inputs.push(order_input(n, NOW - 60_000 + n as i64)?);
        inputs.push(event_input(n as u32)?);
        Ok(())
    };
    let bad_ones: Vec<Input> = vec![
        bad(
            "orders",
            Some(b"c"),
            Some(br#"{"id": 7, "total_cents": "#.to_vec()),
            NOW,
            "invalid JSON",
        ),
        bad(
            "orders",
            Some(b"c"),
            Some(br#"{"id": "seven"}"#.to_vec()),
            NOW,
            "invalid JSON",
        ),
        bad(
            "orders",
            None,
            Some(orders.serialize(&order(91, 1))?.ok_or("null")?),
            NOW,
            "unexpected null",
        ),
        bad("orders", Some(b"c"), None, NOW, "unexpected null"),
        bad(
            "orders",
            Some(b"c"),
            Some(orders.serialize(&huge_order)?.ok_or("null")?),
            NOW,
            "bytes (key + value) is larger than max.record.bytes",
        ),
        bad(
            "orders",
            Some(b"c"),
            // Small to read; its label is 600 copies of its note.
            Some(orders.serialize(&order(92, 600))?.ok_or("null")?),
            NOW,
            "made sink",
        ),
        bad(
            "orders",
            Some(b"c"),
            Some(orders.serialize(&order(93, 1))?.ok_or("null")?),
            NOW + 2 * DAY,
            "ahead of the wall clock",
        ),
        bad(
            "orders",
            Some(b"c"),
            Some(orders.serialize(&order(94, 1))?.ok_or("null")?),
            NOW - 30 * DAY,
            "behind the wall clock",
        ),
        bad(
            "orders",
            Some(b"c"),
            Some(orders.serialize(&order(95, 1))?.ok_or("null")?),
            -5,
            "negative",
        ),
        bad(
            "events",
            Some(b"user_0001"),
            Some(br#"{"not": "avro"}"#.to_vec()),
            NOW,
            "magic byte",
        ),
        bad(
            "events",
            Some(b"user_0001"),
            Some(frame(4242, &valid_event[5..])),
            NOW,
            "4242",
        ),
        bad(
            "events",
            Some(b"user_0001"),
            Some(valid_event[..valid_event.len() - 3].to_vec()),
            NOW,
            "Avro",
        ),
        bad(
            "events",
            Some(&[0xff, 0xfe, 0x00]),
            Some(valid_event.clone()),
            NOW,
            "UTF-8",
        ),
        bad("events", Some(b"user_0001"), None, NOW, "unexpected null"),
    ];
    for input in bad_ones {
        next_good(&mut inputs)?;
        inputs.push(input);
    }
    next_good(&mut inputs)?;
    Ok(inputs)
}

fn driver(
    topology: Topology,
    handler: DeserializationHandler,
) -> Result<TopologyTestDriver, Box<dyn std::error::Error>> {
    Ok(TopologyTestDriver::builder(topology)
        .application_id("mixed")
        .deserialization_handler(handler)
        .record_limits(limits())
        .wall_clock(NOW)
        .build()?)
}

fn pipe(
    driver: &TopologyTestDriver,
    input: &Input,
) -> Result<(), brook_runtime::driver::DriverError> {
    driver.input_topic(input.topic, Utf8, Utf8).pipe_raw(
        input.key.as_deref(),
        input.value.as_deref(),
        input.timestamp,
    )
}

/// The whole mix piped, record by record, through a driver with
/// `handler`; the registry is returned to outlive the driver.
fn run_mix(
    handler: DeserializationHandler,
) -> Result<(RegistryServer, Vec<Input>, TopologyTestDriver), Box<dyn std::error::Error>> {
    let server = registry();
    let client = client(&server.url());
    let inputs = feed(&client)?;
    let driver = driver(topology(&client)?, handler)?;
    for input in &inputs {
        pipe(&driver, input)?;
    }
    Ok((server, inputs, driver))
}

/// The results the good records of `inputs` must give on `topic`'s output.
fn expected(inputs: &[Input], topic: &str) -> Vec<String> {
    inputs
        .iter()
        .filter(|i| i.topic == topic)
        .filter_map(|i| i.result.clone())
        .collect()
}

/// Every good record's result is there, in order.
fn check_results(driver: &TopologyTestDriver, inputs: &[Input]) -> TestResult {
    assert_eq!(
        driver
            .output_topic("order-labels", Utf8, Utf8)
            .read_values()?,
        expected(inputs, "orders")
    );
    assert_eq!(
        driver
            .output_topic("event-types", Utf8, Utf8)
            .read_values()?,
        expected(inputs, "events")
    );
    Ok(())
}

/// The offset of each input in its topic (one partition each).
fn offsets(inputs: &[Input]) -> Vec<i64> {
    let mut next = std::collections::BTreeMap::new();
    inputs
        .iter()
        .map(|i| {
            let offset = next.entry(i.topic).or_insert(0i64);
            *offset += 1;
            *offset - 1
        })
        .collect()
}

#[test]
fn every_bad_record_is_dead_lettered_with_its_bytes_and_no_good_record_is_lost() -> TestResult {
    let (_server, inputs, driver) = run_mix(DeserializationHandler::DeadLetter)?;
    check_results(&driver, &inputs)?;

    let letters = driver.cluster().records("mixed-dead-letters")?;
    let bad: Vec<(&Input, i64)> = inputs
        .iter()
        .zip(offsets(&inputs))
        .filter(|(i, _)| i.bad.is_some())
        .collect();
    assert_eq!(letters.len(), bad.len(), "one dead letter per bad record");
    for (letter, (input, offset)) in letters.iter().zip(&bad) {
        let record = &letter.record;
        let error = dead_letter_error(&record.headers).ok_or("no brook.error header")?;
        let header = |name: &str| {
            record
                .headers
                .last(name)
                .flatten()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert!(
            error.contains(input.bad.unwrap_or_default()),
            "{:?} for a record expected to fail with {:?}",
            error,
            input.bad
        );
        assert_eq!(header("brook.topic").as_deref(), Some(input.topic));
        assert_eq!(header("brook.partition").as_deref(), Some("0"));
        assert_eq!(header("brook.offset"), Some(offset.to_string()));
        assert_eq!(record.key, input.key, "original key bytes ({error})");
        assert_eq!(record.value, input.value, "original value bytes ({error})");
    }
    let metrics = driver.metrics();
    let good = inputs.iter().filter(|i| i.bad.is_none()).count() as u64;
    assert_eq!(metrics.dead_lettered, bad.len() as u64);
    assert_eq!(metrics.processed, good);
    assert_eq!(metrics.skipped, 0);
    // Everything read is committed: nothing waits to be read again.
    for topic in ["orders", "events"] {
        let tp = TopicPartition::new(topic, 0);
        assert_eq!(
            driver.cluster().committed("mixed", &tp),
            Some(driver.cluster().end_offset(&tp)?)
        );
    }
    Ok(())
}

#[test]
fn log_and_continue_counts_every_bad_record_and_loses_no_good_one() -> TestResult {
    let (_server, inputs, driver) = run_mix(DeserializationHandler::LogAndContinue)?;
    check_results(&driver, &inputs)?;
    assert!(driver.cluster().records("mixed-dead-letters")?.is_empty());
    let metrics = driver.metrics();
    let bad = inputs.iter().filter(|i| i.bad.is_some()).count() as u64;
    assert_eq!(metrics.skipped, bad);
    assert_eq!(metrics.processed, inputs.len() as u64 - bad);
    assert_eq!(metrics.dead_lettered, 0);
    Ok(())
}

#[test]
fn fail_stops_at_each_kind_of_bad_record_naming_it_and_commits_nothing_past_it() -> TestResult {
    let server = registry();
    let client = client(&server.url());
    let inputs = feed(&client)?;
    let positions = offsets(&inputs);
    // Each bad record in turn, after the good records before it.
    for (index, input) in inputs.iter().enumerate().filter(|(_, i)| i.bad.is_some()) {
        let driver = driver(topology(&client)?, DeserializationHandler::Fail)?;
        let before: Vec<&Input> = inputs[..index].iter().filter(|i| i.bad.is_none()).collect();
        for good in &before {
            pipe(&driver, good)?;
        }
        let error = pipe(&driver, input).expect_err("a bad record must stop the application");
        let message = brook_runtime::cluster::error_chain(&error);
        // The offset of this record in a topic with only the good ones before it.
        let offset = before.iter().filter(|i| i.topic == input.topic).count() as i64;
        assert!(
            message.contains(&format!("{}/0@{offset}", input.topic))
                && message.contains(input.bad.unwrap_or_default()),
            "{message:?} should name {}/0@{offset} and {:?} ({} in the mix)",
            input.topic,
            input.bad,
            positions[index]
        );
        let tp = TopicPartition::new(input.topic, 0);
        let committed = driver.cluster().committed("mixed", &tp).unwrap_or(0);
        assert!(
            committed <= offset,
            "committed {committed} past the bad record at {offset}"
        );
        // A restart resumes at the bad record and stops there again.
        let again = driver
            .restart()
            .err()
            .ok_or("the restarted application skipped the bad record")?;
        assert!(brook_runtime::cluster::error_chain(&again).contains(&format!("@{offset}")));
    }
    Ok(())
}

#[test]
fn a_registry_that_does_not_answer_neither_dead_letters_nor_commits_the_record() -> TestResult {
    let registry_data = Arc::new(Registry::in_memory());
    let server = RegistryServer::start(registry_data.clone(), ServerConfig::any_loopback_port())?;
    let url = server.url();
    let addr = server.local_addr();
    let app_client = client(&url);
    let driver = driver(topology(&app_client)?, DeserializationHandler::DeadLetter)?;
    // A v1 producer registers its schema; the application has never
    // fetched that id.
    let producer = AvroSerde::<UserEventV1>::for_event(client(&url));
    let event = UserEventV1 {
        event_id: "e-1".into(),
        user_id: "user_0001".into(),
        event_type: EventType::Search,
        timestamp: NOW,
        session_id: "s-1".into(),
    };
    let bytes = producer.serialize(&event)?.ok_or("null")?;
    server.shutdown();

    let error = driver
        .input_topic("events", Utf8, Utf8)
        .pipe_raw(Some(b"user_0001"), Some(&bytes), NOW)
        .expect_err("the record cannot be read without its schema");
    let message = brook_runtime::cluster::error_chain(&error);
    assert!(
        message.contains("events/0@0") && message.contains("unavailable"),
        "{message}"
    );
    assert!(driver.cluster().records("mixed-dead-letters")?.is_empty());
    let tp = TopicPartition::new("events", 0);
    assert_eq!(driver.cluster().committed("mixed", &tp).unwrap_or(0), 0);

    // The registry is back (same data, same address): the record is read.
    let back = RegistryServer::start(
        registry_data,
        ServerConfig {
            listen: addr,
            ..ServerConfig::default()
        },
    )?;
    // The same application goes on: the record waited at the head of its
    // queue and comes before the next one.
    driver.input_topic("events", Utf8, Utf8).pipe_raw(
        Some(b"user_0001"),
        Some(
            &producer
                .serialize(&UserEventV1 {
                    event_type: EventType::Purchase,
                    ..event.clone()
                })?
                .ok_or("null")?,
        ),
        NOW,
    )?;
    assert_eq!(
        driver
            .output_topic("event-types", Utf8, Utf8)
            .read_values()?,
        vec!["SEARCH/unknown", "PURCHASE/unknown"]
    );
    assert!(driver.cluster().records("mixed-dead-letters")?.is_empty());
    assert_eq!(driver.cluster().committed("mixed", &tp), Some(2));
    // A restart (as after a crash) reads nothing again.
    let driver = driver.restart()?;
    assert!(
        driver
            .output_topic("event-types", Utf8, Utf8)
            .read_values()?
            .len()
            == 2
    );
    drop(back);
    Ok(())
}
