//! Lake files written by brook, read by Parquet's own reader, DuckDB and
//! pyarrow (from brook's venv, installed by `make test`): typed EventMart
//! orders with nested items, Hive directories by event time, zstd and
//! snappy, and a replay that overwrites instead of duplicating.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use brook_connectors::lake::{
    Compression, HivePartitioning, Lake, ParquetFile, arrow_schema, file_name,
};
use brook_schemas::events::Event;
use brook_schemas::events::eventmart::{OrderEvent, OrderEventType, OrderItem};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BROOK_PYTHON")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/brook/venv/bin/python")
}

/// Order `n`: spread over three hours of one day and the next day.
fn order(n: i64) -> OrderEvent {
    let items = (0..(n % 3 + 1))
        .map(|i| OrderItem {
            product_id: format!("P{i}"),
            category: ["Books", "Home", "Toys"][i as usize % 3].into(),
            quantity: (i + 1) as i32,
            unit_price: 2.5,
        })
        .collect::<Vec<_>>();
    let total = items
        .iter()
        .map(|i| f64::from(i.quantity) * i.unit_price)
        .sum();
    OrderEvent {
        event_id: format!("e{n}"),
        event_type: OrderEventType::ALL[(n % 4) as usize],
        order_id: format!("O{n}"),
        user_id: format!("u{}", n % 7),
        // 2026-11-23T22:00Z + n * 11 minutes
        timestamp: 1_795_471_200_000 + n * 660_000,
        items,
        total,
        currency: "EUR".into(),
        carrier: (n % 4 == 2).then(|| "DHL".to_string()),
        tracking_number: None,
    }
}

/// Writes `orders` (offsets 0..) as one file per Hive directory.
fn write(lake: &Lake, orders: &[OrderEvent], compression: Compression) -> Vec<String> {
    let schema = Arc::new(
        arrow_schema(&apache_avro::Schema::parse_str(OrderEvent::SCHEMA).unwrap()).unwrap(),
    );
    let hive = HivePartitioning::default();
    let mut files: BTreeMap<String, ParquetFile> = BTreeMap::new();
    for (offset, o) in orders.iter().enumerate() {
        files
            .entry(hive.directory(o.timestamp))
            .or_insert_with(|| ParquetFile::new(schema.clone()).unwrap())
            .push(o, offset as i64, 100)
            .unwrap();
    }
    let mut paths = Vec::new();
    for (dir, file) in files {
        let (first, last) = file.offsets().unwrap();
        let path = format!(
            "orders/{dir}/{}",
            file_name("eventmart-orders", 0, first, last)
        );
        lake.put(&path, file.finish(compression).unwrap()).unwrap();
        paths.push(path);
    }
    paths
}

/// This package's directory, as cargo gives it to the running test: a test
/// binary reused from a shared target directory may have been built in
/// another checkout, whose files `env!("CARGO_MANIFEST_DIR")` would name.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .expect("CARGO_MANIFEST_DIR is set by cargo test")
}

#[test]
fn lake_files_are_read_by_parquet_duckdb_and_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let orders: Vec<OrderEvent> = (0..500).map(order).collect();
    let paths = write(&lake, &orders, Compression::Zstd(3));
    // 500 × 11 min from 2026-11-23 22:00 spans nearly four days: one
    // file per hour.
    let dirs: std::collections::BTreeSet<String> = orders
        .iter()
        .map(|o| HivePartitioning::default().directory(o.timestamp))
        .collect();
    assert_eq!(paths.len(), dirs.len());
    assert_eq!(dirs.len(), 92);
    assert!(paths[0].starts_with("orders/event_date=2026-11-23/event_hour=22/eventmart-orders-0-"));
    assert_eq!(lake.list("orders").unwrap(), paths);

    // Parquet's reader: every row, the codec asked for.
    let mut rows = 0;
    for path in &paths {
        let bytes = bytes::Bytes::from(lake.get(path).unwrap());
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let codec = builder.metadata().row_group(0).column(0).compression();
        // (Parquet's metadata names the codec, not its level.)
        assert!(codec.to_string().starts_with("ZSTD"), "{codec}");
        for batch in builder.build().unwrap() {
            rows += batch.unwrap().num_rows();
        }
    }
    assert_eq!(rows, 500);

    // A replay of the same input writes the same names: no duplicates.
    assert_eq!(write(&lake, &orders, Compression::Snappy), paths);
    let bytes = bytes::Bytes::from(lake.get(&paths[0]).unwrap());
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    assert_eq!(
        builder
            .metadata()
            .row_group(0)
            .column(0)
            .compression()
            .to_string(),
        "SNAPPY"
    );

    let python = python();
    assert!(
        python.exists(),
        "no Python with duckdb/pyarrow at {} (run `make python-deps`)",
        python.display()
    );
    let script = package_dir().join("tests/python/query_lake.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path().join("orders"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected_total: f64 = orders.iter().map(|o| o.total).sum();
    let expected_items: usize = orders.iter().map(|o| o.items.len()).sum();
    assert_eq!(got["duckdb"]["rows"], 500);
    assert_eq!(
        got["duckdb"]["total"].as_f64().unwrap(),
        (expected_total * 100.0).round() / 100.0
    );
    assert_eq!(got["duckdb"]["items"], expected_items);
    let dates: std::collections::BTreeSet<&str> =
        dirs.iter().map(|d| &d[..d.find('/').unwrap()]).collect();
    assert_eq!(got["duckdb"]["dates"], dates.len());
    assert_eq!(dates.len(), 5);
    assert_eq!(got["duckdb"]["hours"], 24);
    assert_eq!(got["duckdb"]["first_ts"], "2026-11-23 22:00:00+00");
    assert_eq!(got["duckdb"]["by_type"]["ORDER_PLACED"], 125);
    assert_eq!(got["pyarrow"]["rows"], 500);
    let columns = got["pyarrow"]["columns"].as_array().unwrap();
    assert!(columns.iter().any(|c| c == "event_date"), "{columns:?}");
}

#[test]
fn the_sinks_output_matches_its_input_in_duckdb() {
    use brook_connectors::lake::sink::{LakeSinkConfig, to_lake};
    use brook_runtime::driver::TopologyTestDriver;
    use brook_topology::serdes::{Json, Utf8};
    use brook_topology::{Consumed, StreamsBuilder};

    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(dir.path().to_str().unwrap()).unwrap());
    let b = StreamsBuilder::new();
    let stream = b.stream("orders", Consumed::with(Utf8, Json::<OrderEvent>::new()));
    let schema = Arc::new(
        arrow_schema(&apache_avro::Schema::parse_str(OrderEvent::SCHEMA).unwrap()).unwrap(),
    );
    let mut config = LakeSinkConfig::new("orders");
    config.max_file_rows = 40;
    to_lake(&b, &stream, lake, schema, config);
    let driver = TopologyTestDriver::builder(b.build().unwrap())
        .application_id("duck")
        .topic("orders", 3)
        .exactly_once()
        .build()
        .unwrap();
    let orders: Vec<OrderEvent> = (0..400).map(order).collect();
    let input = driver.input_topic("orders", Utf8, Json::<OrderEvent>::new());
    for o in &orders {
        input
            .pipe_input(o.order_id.clone(), o.clone(), o.timestamp)
            .unwrap();
    }
    drop(driver);
    let script = package_dir().join("tests/python/query_lake.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path().join("orders"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: f64 = orders.iter().map(|o| o.total).sum();
    let items: usize = orders.iter().map(|o| o.items.len()).sum();
    assert_eq!(got["duckdb"]["rows"], 400);
    assert_eq!(
        got["duckdb"]["total"].as_f64().unwrap(),
        (total * 100.0).round() / 100.0
    );
    assert_eq!(got["duckdb"]["items"], items);
    assert_eq!(got["duckdb"]["by_type"]["ORDER_DELIVERED"], 100);
    assert_eq!(got["pyarrow"]["rows"], 400);
}
