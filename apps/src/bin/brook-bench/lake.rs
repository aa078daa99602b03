//! The lake group: the Parquet lake sink, local, exactly-once.

use super::*;

/// The exactly-once lake sink on the Memory cluster: `records` EventMart
/// orders (JSON in, 16 partitions) written as zstd Parquet files to a
/// local directory, hourly Hive directories, one commit at the end (which
/// stages, commits and publishes). Returns records/s and Parquet bytes per
/// record.
pub(crate) fn bench_lake(records: usize) -> Result<(f64, f64)> {
    use brook_connectors::lake::sink::{LakeSinkConfig, to_lake};
    use brook_connectors::lake::{Lake, arrow_schema};
    use brook_schemas::events::Event;
    use brook_schemas::events::eventmart::{OrderEvent, OrderEventType, OrderItem};
    use brook_topology::serdes::{Json, Serde, Utf8};
    use brook_topology::{Consumed, StreamsBuilder};
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[brook_topology::TopicSpec::new("orders", PARTITIONS)])?;
    let serde = Json::<OrderEvent>::new();
    let mut producer = cluster.producer()?;
    for n in 0..records as i64 {
        let order = OrderEvent {
            event_id: format!("event-{n:08}"),
            event_type: OrderEventType::ALL[(n % 4) as usize],
            order_id: format!("order-{n:08}"),
            user_id: format!("user-{:05}", n % 10_000),
            timestamp: 1_795_471_200_000 + n * 50,
            items: vec![OrderItem {
                product_id: format!("PROD-{:03}", n % 200),
                category: ["Books", "Home", "Toys"][(n % 3) as usize].into(),
                quantity: (n % 4 + 1) as i32,
                unit_price: 9.99,
            }],
            total: 9.99 * (n % 4 + 1) as f64,
            currency: "EUR".into(),
            carrier: None,
            tracking_number: None,
        };
        producer.send(ProducedRecord {
            topic: "orders".into(),
            partition: None,
            key: Some(order.order_id.clone().into_bytes()),
            value: serde.serialize(&order)?,
            timestamp: order.timestamp,
            headers: brook_topology::Headers::new(),
        })?;
    }
    producer.flush()?;
    let dir = tempfile::tempdir()?;
    let lake = Arc::new(Lake::open(dir.path().to_str().context("path")?)?);
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
    let mut config = StreamsConfig::new("lake").exactly_once();
    config.max_poll_records = 10_000;
    config.commit_interval = Duration::from_secs(3600);
    let mut thread = StreamThread::new(&Arc::new(b.build()?), config, &cluster, |_| true, 0)?;
    let started = Instant::now();
    while thread.metrics().processed < records as u64 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "processed {} of {records} records in 300 s",
                thread.metrics().processed
            );
        }
        thread.run_once(1)?;
    }
    thread.commit()?;
    let rate = records as f64 / started.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    for path in lake.list("orders")? {
        bytes += std::fs::metadata(dir.path().join(&path))?.len();
    }
    Ok((rate, bytes as f64 / records as f64))
}
