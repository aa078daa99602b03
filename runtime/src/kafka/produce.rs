//! Producing with back-pressure.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// Queues one record on `producer`, waiting (and serving delivery callbacks)
/// while librdkafka's local queue is full instead of failing. Any other
/// error is returned. Delivery itself is confirmed by `flush`.
pub fn send_blocking(
    producer: &BaseProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    send_record(producer, record, Duration::from_micros(200))
}

/// Queues `record` on `producer`; while librdkafka's local queue is full,
/// serves delivery callbacks and sleeps `backoff` between attempts (not a
/// `poll` with a timeout: rdkafka polls with a zero timeout once under a
/// millisecond remains, so a 1 ms poll spins on the CPU). Any other error
/// is returned.
pub fn send_record<'a>(
    producer: &BaseProducer,
    mut record: BaseRecord<'a, [u8], [u8]>,
    backoff: Duration,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::ZERO);
                std::thread::sleep(backoff);
                record = back;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Flushes `producer` within `timeout` without waiting out polls: not
/// `BaseProducer::flush(timeout)`, which between its checks calls
/// `poll(min(timeout, 100 ms))`, and `poll` returns only when its timeout is
/// over, so every flush with records in flight took at least 100 ms (each
/// at-least-once commit, and rdkafka's own `commit_transaction`, which
/// flushes that way first). Zero-timeout flushes send what lingers and
/// serve delivery reports; in between, short sleeps (not `poll(1 ms)`:
/// rdkafka turns a remaining time under 1 ms into a zero timeout and polls
/// again, so such a poll spins on the CPU for its whole millisecond).
/// Returns the flush's error, `Flush(OperationTimedOut)` once `timeout` is
/// over.
pub fn flush_without_waiting<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline =>
            {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaConfig;
    use rdkafka::producer::Producer;

    /// A queue of 10 records and nothing draining it but our own waiting:
    /// 50 sends must all succeed, none may fail with QueueFull.
    #[test]
    fn a_full_queue_waits_instead_of_failing() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let producer: BaseProducer = KafkaConfig::new(cluster.bootstrap_servers())
            .set_producer("queue.buffering.max.messages", "10")
            .producer()
            .create()
            .expect("producer");
        for i in 0..50u32 {
            send_blocking(&producer, "t", Some(b"k"), &i.to_be_bytes()).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
}
