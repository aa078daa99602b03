//! The partition and mock groups: the key partitioner and a librdkafka mock-cluster round trip.

use super::*;

pub(crate) fn bench_partition(keys: &[String]) -> f64 {
    let started = Instant::now();
    let mut checksum = 0i64;
    for key in keys {
        checksum += i64::from(partition_for_key(key.as_bytes(), 12).unwrap_or(0));
    }
    let elapsed = started.elapsed();
    std::hint::black_box(checksum);
    keys.len() as f64 / elapsed.as_secs_f64()
}

/// Produces `records` 100-byte keyed records to a fresh mock cluster and
/// consumes them back; returns (produce, consume) records/s.
pub(crate) fn bench_mock_roundtrip(records: usize, idempotent: bool) -> Result<(f64, f64)> {
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    let topic = "bench";
    cluster.create_topic(topic, PARTITIONS, 1)?;
    let kafka = KafkaConfig::new(cluster.bootstrap_servers())
        .set_producer("linger.ms", "5")
        .set_producer("enable.idempotence", idempotent.to_string());
    let producer: BaseProducer = kafka.producer().create()?;
    let value = vec![b'x'; VALUE_BYTES];
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();

    let started = Instant::now();
    for i in 0..records {
        let key = &keys[i % keys.len()];
        send_blocking(&producer, topic, Some(key.as_bytes()), &value).context("producing")?;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing")?;
    let produce_rate = records as f64 / started.elapsed().as_secs_f64();

    let consumer: BaseConsumer = kafka.consumer("brook-bench").create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut got = 0;
    while got < records {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("consumed only {got} of {records} records in 120 s");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.context("consuming")?;
            got += 1;
        }
    }
    let consume_rate = records as f64 / started.elapsed().as_secs_f64();
    Ok((produce_rate, consume_rate))
}
