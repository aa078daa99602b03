//! The lake holds each input record exactly once, however the sink's
//! process dies: exactly-once on the Memory cluster, crashed at every step
//! of the commit cycle (before/after produce, after the offsets joined the
//! transaction, before/after the commit, after the local stores, after the
//! publish hooks, after a checkpoint) and inside the publish itself
//! (before copying a staged file, before deleting it), over randomised
//! schedules with several crashes each. After every crash, what is visible
//! in the lake is only committed input, without duplicates; at the end it
//! is every input once, and nothing is left in the staging area.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use brook_connectors::lake::sink::{LakeFault, LakeSinkConfig, STAGING, to_lake_with_fault};
use brook_connectors::lake::{Lake, arrow_schema};
use brook_runtime::cluster::{Cluster, ProducedRecord, TopicPartition, error_chain};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::thread::{
    FaultInjector, FaultPoint, RuntimeError, StreamThread, StreamsConfig, ThreadOptions,
};
use brook_schemas::events::Event;
use brook_schemas::events::eventmart::{OrderEvent, OrderEventType, OrderItem};
use brook_testkit::CrashOnce;
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{Consumed, Headers, StreamsBuilder, TopicSpec, Topology};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const APP: &str = "lake-eos";
const PARTITIONS: i32 = 2;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn order(n: i64) -> OrderEvent {
    OrderEvent {
        event_id: format!("e{n}"),
        event_type: OrderEventType::Placed,
        order_id: format!("O{n}"),
        user_id: format!("u{}", n % 5),
        // Three hours of orders: several Hive directories per commit.
        timestamp: 1_795_471_200_000 + n * 90_000,
        items: vec![OrderItem {
            product_id: "P".into(),
            category: "Books".into(),
            quantity: 1,
            unit_price: n as f64,
        }],
        total: n as f64,
        currency: "EUR".into(),
        carrier: None,
        tracking_number: None,
    }
}

fn produce(cluster: &MemoryCluster, from: i64, to: i64) -> TestResult {
    let mut producer = cluster.producer()?;
    let serde = Json::<OrderEvent>::new();
    for n in from..to {
        let o = order(n);
        producer.send(ProducedRecord {
            topic: "orders".into(),
            partition: None,
            key: Some(o.key().as_bytes().to_vec()),
            value: serde.serialize(&o)?,
            timestamp: o.timestamp,
            headers: Headers::default(),
        })?;
    }
    producer.flush()?;
    Ok(())
}

fn topology(lake: Arc<Lake>, fault: Option<LakeFault>, rows: usize) -> TestResult<Topology> {
    let b = StreamsBuilder::new();
    let orders = b.stream("orders", Consumed::with(Utf8, Json::<OrderEvent>::new()));
    let schema = Arc::new(arrow_schema(&apache_avro::Schema::parse_str(
        OrderEvent::SCHEMA,
    )?)?);
    let mut config = LakeSinkConfig::new("orders");
    config.max_file_rows = rows;
    to_lake_with_fault(&b, &orders, lake, schema, config, fault);
    Ok(b.build()?)
}

/// Visible lake files: `(partition, first, last)` from their names.
fn visible_ranges(lake: &Lake) -> TestResult<Vec<(i32, i64, i64)>> {
    let mut out = Vec::new();
    for path in lake.list("orders")? {
        let name = path.rsplit('/').next().unwrap_or("");
        let parts: Vec<&str> = name.trim_end_matches(".parquet").split('-').collect();
        let [_, p, first, last] = parts[..] else {
            return Err(format!("unexpected file {path}").into());
        };
        out.push((p.parse()?, first.parse()?, last.parse()?));
    }
    Ok(out)
}

/// Every visible row's event id and count.
fn visible_rows(lake: &Lake) -> TestResult<BTreeMap<String, u32>> {
    let mut counts = BTreeMap::new();
    for path in lake.list("orders")? {
        let bytes = bytes::Bytes::from(lake.get(&path)?);
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            let batch = batch?;
            let ids = batch
                .column_by_name("event_id")
                .ok_or("no event_id column")?
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .ok_or("event_id is not a string column")?
                .clone();
            for id in ids.iter().flatten() {
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

fn check_visible_is_committed(cluster: &MemoryCluster, lake: &Lake, life: u32) -> TestResult {
    for (p, _, last) in visible_ranges(lake)? {
        let committed = cluster
            .committed(APP, &TopicPartition::new("orders", p))
            .unwrap_or(0);
        if last >= committed {
            return Err(format!(
                "life {life}: a visible file holds offset {last} of partition {p}, past the committed {committed}"
            )
            .into());
        }
    }
    if let Some((id, n)) = visible_rows(lake)?.into_iter().find(|(_, n)| *n > 1) {
        return Err(format!("life {life}: {id} is visible {n} times").into());
    }
    Ok(())
}

fn run_schedule(seed: u64) -> TestResult<u32> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let inputs = 40 + rng.below(80) as i64;
    let rows = [3, 7, 1000][rng.below(3) as usize];
    let dir = tempfile::tempdir()?;
    let lake = Arc::new(Lake::open(dir.path().to_str().ok_or("path")?)?);
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[TopicSpec::new("orders", PARTITIONS)])?;
    let mut config = StreamsConfig::new(APP).exactly_once();
    config.max_poll_records = 1 + rng.below(8) as usize;
    let mut produced = 0;
    let mut crashes = 0;
    let mut now = 0;
    for life in 0.. {
        if life > 40 {
            return Err("no progress after 40 restarts".into());
        }
        let crash = life < 6;
        // Half the crashes are in the commit cycle, half inside publishing.
        let (faults, lake_fault): (Option<Arc<dyn FaultInjector>>, Option<LakeFault>) =
            if crash && rng.below(2) == 0 {
                let points = &FaultPoint::ALL[..FaultPoint::ALL.len() - 1];
                (
                    Some(Arc::new(CrashOnce::at(
                        points[rng.below(points.len() as u64) as usize],
                        rng.below(10) as u32,
                    ))),
                    None,
                )
            } else if crash {
                let step = ["publish:copy", "publish:delete"][rng.below(2) as usize];
                let countdown = Arc::new(AtomicU32::new(rng.below(6) as u32));
                let fired = Arc::new(AtomicBool::new(false));
                let fault: LakeFault = Arc::new(move |at: &str| {
                    at == step
                        && !fired.load(Ordering::SeqCst)
                        && countdown.fetch_sub(1, Ordering::SeqCst) == 0
                        && !fired.swap(true, Ordering::SeqCst)
                });
                (None, Some(fault))
            } else {
                (None, None)
            };
        let topology = Arc::new(topology(lake.clone(), lake_fault, rows)?);
        let options = ThreadOptions {
            faults,
            ..ThreadOptions::default()
        };
        let crashed_with = |e: &RuntimeError| {
            matches!(e, RuntimeError::InjectedFault(_))
                || error_chain(e).contains("injected lake fault")
        };
        let mut thread = match StreamThread::with_options(
            &topology,
            config.clone(),
            &cluster,
            |_| true,
            now,
            options,
        ) {
            Ok(t) => t,
            Err(e) if crashed_with(&e) => {
                crashes += 1;
                check_visible_is_committed(&cluster, &lake, life)?;
                continue;
            }
            Err(e) => return Err(format!("life {life}: {}", error_chain(&e)).into()),
        };
        let mut crashed = false;
        for _ in 0..5_000 {
            now += 10;
            if produced < inputs {
                let to = (produced + 1 + rng.below(6) as i64).min(inputs);
                produce(&cluster, produced, to)?;
                produced = to;
            }
            match thread.run_once(now).and_then(|_| thread.commit()) {
                Ok(()) => {}
                Err(e) if crashed_with(&e) => {
                    crashed = true;
                    break;
                }
                Err(e) => return Err(format!("life {life}: {}", error_chain(&e)).into()),
            }
            let consumed = (0..PARTITIONS).all(|p| {
                let tp = TopicPartition::new("orders", p);
                cluster.committed(APP, &tp).unwrap_or(0) >= cluster.end_offset(&tp).unwrap_or(0)
            });
            if produced == inputs && consumed {
                break;
            }
        }
        if crashed {
            crashes += 1;
            drop(thread);
            check_visible_is_committed(&cluster, &lake, life)?;
            continue;
        }
        // Closing commits a last time: it can crash too.
        match thread.close() {
            Ok(()) => break,
            Err(e) if crashed_with(&e) => {
                crashes += 1;
                check_visible_is_committed(&cluster, &lake, life)?;
            }
            Err(e) => return Err(format!("life {life}: closing: {}", error_chain(&e)).into()),
        }
    }
    let rows = visible_rows(&lake)?;
    let expected: BTreeMap<String, u32> = (0..inputs).map(|n| (format!("e{n}"), 1)).collect();
    if rows != expected {
        let missing: Vec<&String> = expected.keys().filter(|k| !rows.contains_key(*k)).collect();
        let doubled: Vec<(&String, &u32)> = rows.iter().filter(|(_, n)| **n > 1).collect();
        return Err(format!(
            "the lake does not hold every input once: {} rows, missing {missing:?}, more than once {doubled:?}",
            rows.values().sum::<u32>()
        )
        .into());
    }
    let staged = lake.list(STAGING)?;
    if !staged.is_empty() {
        return Err(format!("files left in the staging area: {staged:?}").into());
    }
    Ok(crashes)
}

#[test]
fn the_lake_holds_every_input_exactly_once_across_crashes() {
    let seeds: Vec<u64> = match std::env::var("BROOK_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("BROOK_CRASH_SEED is a number")],
        Err(_) => (1..=40).collect(),
    };
    let mut crashes = 0;
    for seed in seeds {
        match run_schedule(seed) {
            Ok(n) => crashes += n,
            Err(e) => panic!("schedule failed; replay with BROOK_CRASH_SEED={seed}: {e}"),
        }
    }
    eprintln!("lake crash schedules survived {crashes} crashes");
    assert!(crashes > 40, "too few crashes were injected: {crashes}");
}
