//! The lake on an S3-compatible server: moto's S3 server (from brook's
//! venv, `moto[server]` from PyPI) on loopback, path-style requests over
//! HTTP with credentials, the exactly-once sink writing orders through the
//! test driver, files read back from S3 by brook and by pyarrow's S3
//! filesystem.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_connectors::lake::sink::{LakeSinkConfig, STAGING, to_lake};
use brook_connectors::lake::{Lake, S3Options, arrow_schema};
use brook_runtime::driver::TopologyTestDriver;
use brook_schemas::events::Event;
use brook_schemas::events::eventmart::{OrderEvent, OrderEventType};
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{Consumed, StreamsBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var("BROOK_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/brook/venv/bin/python")
        });
    python.with_file_name(name)
}

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let server = venv_bin("moto_server");
    assert!(
        server.exists(),
        "no moto_server at {} (run `make python-deps`)",
        server.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// Creates a bucket (moto accepts unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key_id: Some("brook-test".into()),
        secret_access_key: Some("brook-test-secret".into()),
        allow_http: true,
        path_style: true,
    }
}

fn order(n: i64) -> OrderEvent {
    OrderEvent {
        event_id: format!("e{n}"),
        event_type: OrderEventType::ALL[(n % 4) as usize],
        order_id: format!("O{n}"),
        user_id: "u".into(),
        timestamp: 1_795_471_200_000 + n * 600_000,
        items: vec![],
        total: n as f64,
        currency: "EUR".into(),
        carrier: None,
        tracking_number: None,
    }
}

#[test]
fn the_sink_writes_to_an_s3_compatible_server() -> Result<(), Box<dyn std::error::Error>> {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "brook-lake");
    let lake = Arc::new(Lake::open_with(
        "s3://brook-lake/warehouse",
        &options(&moto.endpoint),
    )?);

    let b = StreamsBuilder::new();
    let orders = b.stream("orders", Consumed::with(Utf8, Json::<OrderEvent>::new()));
    let schema = Arc::new(arrow_schema(&apache_avro::Schema::parse_str(
        OrderEvent::SCHEMA,
    )?)?);
    to_lake(
        &b,
        &orders,
        lake.clone(),
        schema,
        LakeSinkConfig::new("orders"),
    );
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("s3-lake")
        .exactly_once()
        .build()?;
    let input = driver.input_topic("orders", Utf8, Json::<OrderEvent>::new());
    for n in 0..30 {
        let o = order(n);
        input.pipe_input(o.order_id.clone(), o.clone(), o.timestamp)?;
    }
    drop(driver);

    let files = lake.list("orders")?;
    assert!(files.len() >= 5, "{files:?}");
    assert!(
        files[0].starts_with("orders/event_date=2026-11-23/event_hour=22/orders-0-"),
        "{files:?}"
    );
    let mut total = 0.0;
    let mut rows = 0;
    for path in &files {
        let bytes = bytes::Bytes::from(lake.get(path)?);
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            let batch = batch?;
            rows += batch.num_rows();
            let totals = batch
                .column_by_name("total")
                .ok_or("total")?
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .ok_or("f64")?
                .clone();
            total += totals.iter().flatten().sum::<f64>();
        }
    }
    assert_eq!(rows, 30);
    assert_eq!(total, (0..30).sum::<i64>() as f64);
    assert!(lake.list(STAGING)?.is_empty());

    // pyarrow reads the same objects through its own S3 client.
    let script = format!(
        r#"
import pyarrow.dataset as ds, pyarrow.fs as fs
s3 = fs.S3FileSystem(access_key="brook-test", secret_key="brook-test-secret", region="us-east-1",
                     endpoint_override="{endpoint}", scheme="http")
t = ds.dataset("brook-lake/warehouse/orders", filesystem=s3, format="parquet", partitioning="hive").to_table()
print(t.num_rows, sum(t.column("total").to_pylist()), len(set(t.column("event_hour").to_pylist())))
"#,
        endpoint = moto.endpoint
    );
    let out = Command::new(venv_bin("python"))
        .args(["-c", &script])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[0], "30");
    assert_eq!(fields[1].parse::<f64>()?, 435.0);
    assert_eq!(fields[2], "5");
    Ok(())
}

#[test]
fn bad_lake_urls_and_unreachable_servers_are_clear_errors() {
    let e = Lake::open("s3://").unwrap_err().to_string();
    assert!(e.contains("names no bucket"), "{e}");
    let e = Lake::open("ftp://host/dir").unwrap_err().to_string();
    assert!(e.contains("expected a directory"), "{e}");
    // Nothing listens on port 9 of loopback.
    let mut opts = options("http://127.0.0.1:9");
    opts.region = Some("us-east-1".into());
    let lake = Lake::open_with("s3://nowhere/x", &opts).unwrap();
    let e = lake.put("a", b"x".to_vec()).unwrap_err().to_string();
    assert!(e.contains("s3://nowhere/x/a"), "{e}");
}
