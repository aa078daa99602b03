//! Aggregations and tables on the TopologyTestDriver, with multi-partition
//! topics, automatic repartitioning, changelogs and restore after restart.

use std::collections::BTreeMap;
use std::error::Error;

use brook_runtime::cluster::Cluster;
use brook_runtime::driver::TopologyTestDriver;
use brook_runtime::partition::partition_for_key;
use brook_topology::processor::{ProcessError, Processor, ProcessorContext};
use brook_topology::serdes::{Json, Nullable, Utf8};
use brook_topology::{Consumed, Grouped, Materialized, Produced, Record, StreamsBuilder};

type TestResult = Result<(), Box<dyn Error>>;

fn word_count() -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    b.stream("lines", Consumed::with(Utf8, Utf8))
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
        .count(Materialized::named("word-counts", Utf8, Json::<i64>::new()))
        .to("counts", Produced::with(Utf8, Json::<i64>::new()));
    Ok(b.build()?)
}

#[test]
fn word_count_repartitions_by_word_and_counts_across_partitions() -> TestResult {
    let topology = word_count()?;
    assert_eq!(
        topology.subtopologies().len(),
        2,
        "group_by after a key change repartitions"
    );
    let driver = TopologyTestDriver::builder(topology)
        .application_id("wc")
        .default_partitions(3)
        .build()?;
    let lines = driver.input_topic("lines", Utf8, Utf8);
    lines.pipe_input("doc-1".into(), "the quick fox".into(), 1)?;
    lines.pipe_input("doc-2".into(), "The lazy dog and the FOX".into(), 2)?;
    lines.pipe_input("doc-3".into(), "dog".into(), 3)?;

    let counts = driver.output_topic("counts", Utf8, Json::<i64>::new());
    let records = counts.read_records()?;
    // One update per word occurrence, each in the partition of its word.
    assert_eq!(records.len(), 10);
    for r in &records {
        assert_eq!(
            Some(r.partition),
            partition_for_key(r.key.as_bytes(), 3),
            "{r:?}"
        );
    }
    let latest: BTreeMap<String, i64> = records.into_iter().map(|r| (r.key, r.value)).collect();
    let expected: BTreeMap<String, i64> = [
        ("the", 3),
        ("quick", 1),
        ("fox", 2),
        ("lazy", 1),
        ("dog", 2),
        ("and", 1),
    ]
    .iter()
    .map(|(w, c)| (w.to_string(), *c))
    .collect();
    assert_eq!(latest, expected);
    assert_eq!(driver.read_store::<String, i64>("word-counts")?, expected);
    // Internal topics: repartition and a compacted changelog, 3 partitions each.
    assert_eq!(
        driver
            .cluster()
            .partition_count("wc-word-counts-repartition")?,
        3
    );
    let changelog = driver
        .cluster()
        .topic_spec("wc-word-counts-changelog")
        .ok_or("no changelog")?;
    assert!(changelog.is_compacted());
    assert_eq!(changelog.partitions, 3);
    // One changelog record per word and commit: "the" twice in doc-2 is
    // one record (count 3), coalesced by the store's transaction buffer.
    assert_eq!(
        driver.cluster().records("wc-word-counts-changelog")?.len(),
        9
    );
    Ok(())
}

#[test]
fn a_restarted_application_restores_its_counts_from_the_changelog() -> TestResult {
    let driver = TopologyTestDriver::builder(word_count()?)
        .default_partitions(2)
        .build()?;
    driver
        .input_topic("lines", Utf8, Utf8)
        .pipe_input("d".into(), "a b a".into(), 1)?;
    let driver = driver.restart()?;
    assert_eq!(
        driver.read_store::<String, i64>("word-counts")?,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    // Counting continues from the restored values; nothing is re-counted.
    driver
        .input_topic("lines", Utf8, Utf8)
        .pipe_input("d".into(), "a c".into(), 2)?;
    let counts = driver
        .output_topic("counts", Utf8, Json::<i64>::new())
        .read_latest_by_key()?;
    assert_eq!(counts["a"], 3);
    assert_eq!(counts["b"], 1);
    assert_eq!(counts["c"], 1);
    Ok(())
}

#[test]
fn with_rocksdb_a_restart_restores_only_the_changelog_past_the_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let driver = TopologyTestDriver::builder(word_count()?)
        .default_partitions(2)
        .state_dir(dir.path())
        .build()?;
    let lines = driver.input_topic("lines", Utf8, Utf8);
    lines.pipe_input("d".into(), "a b a".into(), 1)?;
    assert_eq!(driver.restore_metrics().records, 0);
    // Clean shutdown-free restart: local state is still there and its
    // checkpoint is older than the changelog's end, so only the tail is
    // replayed (the default checkpoint interval is 10 000 records).
    let changelog = driver
        .cluster()
        .records("test-app-word-counts-changelog")?
        .len() as u64;
    assert_eq!(changelog, 2);
    let driver = driver.restart()?;
    assert_eq!(driver.restore_metrics().records, changelog);
    assert_eq!(
        driver.read_store::<String, i64>("word-counts")?,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    driver
        .input_topic("lines", Utf8, Utf8)
        .pipe_input("d".into(), "a c".into(), 2)?;
    assert_eq!(
        driver.read_store::<String, i64>("word-counts")?,
        BTreeMap::from([
            ("a".to_string(), 3),
            ("b".to_string(), 1),
            ("c".to_string(), 1)
        ])
    );
    let metrics = driver.store_metrics();
    assert!(metrics["word-counts"].get.count >= 2, "{metrics:?}");
    assert!(metrics["word-counts"].write_batch.count >= 1, "{metrics:?}");
    Ok(())
}

#[test]
fn a_cached_table_forwards_one_update_per_key_and_commit() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("lines", Consumed::with(Utf8, Utf8))
        .flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
        .count(Materialized::named("cached-counts", Utf8, Json::<i64>::new()).with_caching())
        .to_stream()
        .to("counts", Produced::with(Utf8, Nullable(Json::<i64>::new())));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let lines = driver.input_topic("lines", Utf8, Utf8);
    // One line is one commit here: "a" twice in it is one update.
    lines.pipe_input("d".into(), "a b a a".into(), 1)?;
    let counts = driver.output_topic("counts", Utf8, Nullable(Json::<i64>::new()));
    assert_eq!(
        counts.read_key_values()?,
        vec![("a".to_string(), Some(3)), ("b".to_string(), Some(1))]
    );
    lines.pipe_input("d".into(), "b".into(), 2)?;
    assert_eq!(counts.read_key_values()?, vec![("b".to_string(), Some(2))]);
    assert_eq!(
        driver
            .cluster()
            .records("test-app-cached-counts-changelog")?
            .len(),
        3
    );
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Default)]
struct Revenue {
    count: u64,
    sum: f64,
}

#[test]
fn reduce_and_aggregate_without_repartition_when_the_key_is_unchanged() -> TestResult {
    let b = StreamsBuilder::new();
    let prices = b.stream("prices", Consumed::with(Utf8, Json::<f64>::new()));
    prices
        .group_by_key(Grouped::with(Utf8, Json::<f64>::new()))
        .reduce(
            f64::max,
            Materialized::named("max-price", Utf8, Json::<f64>::new()),
        )
        .to("max-prices", Produced::with(Utf8, Json::<f64>::new()));
    prices
        .group_by_key(Grouped::with(Utf8, Json::<f64>::new()))
        .aggregate(
            Revenue::default,
            |_, price, acc| Revenue {
                count: acc.count + 1,
                sum: acc.sum + price,
            },
            Materialized::named("revenue", Utf8, Json::<Revenue>::new()),
        )
        .map_values(|r| r.sum / r.count as f64)
        .to("avg-prices", Produced::with(Utf8, Json::<f64>::new()));
    let topology = b.build()?;
    assert_eq!(
        topology.subtopologies().len(),
        1,
        "no repartition: the key did not change"
    );
    assert!(topology.internal_topics().is_empty());
    let driver = TopologyTestDriver::builder(topology)
        .default_partitions(2)
        .build()?;
    let input = driver.input_topic("prices", Utf8, Json::<f64>::new());
    for (category, price) in [
        ("books", 10.0),
        ("games", 60.0),
        ("books", 30.0),
        ("books", 20.0),
    ] {
        input.pipe_input(category.into(), price, 0)?;
    }
    let max = driver
        .output_topic("max-prices", Utf8, Json::<f64>::new())
        .read_key_values()?;
    let books: Vec<f64> = max
        .iter()
        .filter(|(k, _)| k == "books")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(books, vec![10.0, 30.0, 30.0]);
    let avg = driver
        .output_topic("avg-prices", Utf8, Json::<f64>::new())
        .read_latest_by_key()?;
    assert_eq!(avg["books"], 20.0);
    assert_eq!(avg["games"], 60.0);
    assert_eq!(
        driver.read_store::<String, Revenue>("revenue")?["books"],
        Revenue {
            count: 3,
            sum: 60.0
        }
    );
    Ok(())
}

#[test]
fn tables_apply_tombstones_and_filter_forwards_deletions() -> TestResult {
    let b = StreamsBuilder::new();
    let stock = b.table(
        "stock",
        Consumed::with(Utf8, Json::<i64>::new()),
        Materialized::named("stock-store", Utf8, Json::<i64>::new()),
    );
    stock
        .filter(|_, qty| *qty > 0)
        .map_values(|qty| format!("{qty} left"))
        .to("in-stock", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let input = driver.input_topic("stock", Utf8, Json::<i64>::new());
    input.pipe_input("apple".into(), 5, 1)?;
    input.pipe_input("pear".into(), 0, 2)?;
    input.pipe_input("apple".into(), 0, 3)?;
    input.pipe_input("kiwi".into(), 2, 4)?;
    input.pipe_tombstone("kiwi".into(), 5)?;
    input.pipe_tombstone("never-there".into(), 6)?;

    let out = driver
        .output_topic("in-stock", Utf8, Nullable(Utf8))
        .read_key_values()?;
    assert_eq!(
        out,
        vec![
            ("apple".to_string(), Some("5 left".to_string())),
            ("apple".to_string(), None),
            ("kiwi".to_string(), Some("2 left".to_string())),
            ("kiwi".to_string(), None),
        ]
    );
    assert_eq!(
        driver.read_store::<String, i64>("stock-store")?,
        BTreeMap::from([("apple".to_string(), 0), ("pear".to_string(), 0)])
    );
    Ok(())
}

/// Emits each key's previous value (deduplicating repeats) using a store.
struct Dedup;

impl Processor<String, String, String, String> for Dedup {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        record: Record<String, String>,
    ) -> Result<(), ProcessError> {
        let mut seen = ctx.key_value_store::<String, String>("last-seen")?;
        if seen.get(&record.key)?.as_ref() == Some(&record.value) {
            return Ok(());
        }
        seen.put(&record.key, &record.value)?;
        ctx.forward(record);
        Ok(())
    }
}

/// Asks for a store it is not connected to.
struct Sneaky;

impl Processor<String, String, String, String> for Sneaky {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        _record: Record<String, String>,
    ) -> Result<(), ProcessError> {
        ctx.key_value_store::<String, String>("last-seen")?;
        Ok(())
    }
}

#[test]
fn processor_api_stores_are_typed_and_only_reachable_when_connected() -> TestResult {
    let b = StreamsBuilder::new();
    b.add_state_store(Materialized::named("last-seen", Utf8, Utf8));
    let input = b.stream("in", Consumed::with(Utf8, Utf8));
    input
        .process_with_stores(|| Dedup, &["last-seen"])
        .to("deduped", Produced::with(Utf8, Utf8));
    input
        .process(|| Sneaky)
        .to("never", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    assert!(
        topology
            .describe()
            .to_string()
            .contains("(stores: [last-seen])")
    );
    let driver = TopologyTestDriver::new(topology)?;
    let error = driver
        .input_topic("in", Utf8, Utf8)
        .pipe_input("k".into(), "v1".into(), 1)
        .err()
        .ok_or("the unconnected processor should fail")?;
    let chain = format!("{:?}", error);
    assert!(
        chain.contains("UnknownStore") && chain.contains("last-seen"),
        "{chain}"
    );

    let b = StreamsBuilder::new();
    b.add_state_store(Materialized::named("last-seen", Utf8, Utf8));
    b.stream("in", Consumed::with(Utf8, Utf8))
        .process_with_stores(|| Dedup, &["last-seen"])
        .to("deduped", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let input = driver.input_topic("in", Utf8, Utf8);
    for v in ["a", "a", "b", "b", "a"] {
        input.pipe_input("k".into(), v.into(), 1)?;
    }
    let out = driver.output_topic("deduped", Utf8, Utf8).read_values()?;
    assert_eq!(out, vec!["a", "b", "a"]);
    Ok(())
}

#[test]
fn a_store_used_with_the_wrong_types_is_a_clear_error() -> TestResult {
    let b = StreamsBuilder::new();
    b.add_state_store(Materialized::named("last-seen", Utf8, Json::<i64>::new()));
    b.stream("in", Consumed::with(Utf8, Utf8))
        .process_with_stores(|| Dedup, &["last-seen"])
        .to("deduped", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::new(b.build()?)?;
    let error = driver
        .input_topic("in", Utf8, Utf8)
        .pipe_input("k".into(), "v".into(), 1)
        .err()
        .ok_or("expected a store type error")?;
    let chain = format!("{error:?}");
    assert!(
        chain.contains("StoreType") && chain.contains("alloc::string::String"),
        "{chain}"
    );
    Ok(())
}

#[test]
fn windows_past_their_retention_are_purged_as_stream_time_moves_on() -> TestResult {
    use brook_topology::{TimeWindows, Windowed};
    use std::time::Duration;
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::tumbling(
            Duration::from_secs(1),
            Duration::ZERO,
        )?)
        .count(
            Materialized::named("per-second", Utf8, Json::<i64>::new())
                .with_retention(Duration::from_secs(10)),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let input = driver.input_topic("clicks", Utf8, Utf8);
    let windows = |d: &TopologyTestDriver| -> Result<Vec<i64>, Box<dyn Error>> {
        Ok(d.read_store::<Windowed<String>, i64>("per-second")?
            .keys()
            .map(|k| k.window.start)
            .collect())
    };
    // One record per second for 5 s: five windows.
    for s in 0..5 {
        input.pipe_input("k".into(), "v".into(), s * 1_000)?;
    }
    assert_eq!(windows(&driver)?, vec![0, 1_000, 2_000, 3_000, 4_000]);
    // Stream time 13.5 s: windows ending at or before 3.5 s are past their
    // 10 s retention ([0,1), [1,2), [2,3)); the others stay.
    input.pipe_input("k".into(), "v".into(), 12_500)?;
    input.pipe_input("k".into(), "v".into(), 13_500)?;
    assert_eq!(windows(&driver)?, vec![3_000, 4_000, 12_000, 13_000]);
    // Much later: only the recent windows are left, purged again and again.
    input.pipe_input("k".into(), "v".into(), 30_000)?;
    input.pipe_input("k".into(), "v".into(), 31_000)?;
    assert_eq!(windows(&driver)?, vec![30_000, 31_000]);
    Ok(())
}
