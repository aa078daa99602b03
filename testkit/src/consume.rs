//! Reading an exact number of records, with a deadline.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;

use crate::{Result, TestkitError, kafka_err};

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Topic it came from.
    pub topic: String,
    /// Partition it came from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub value: Option<Vec<u8>>,
}

/// Polls `consumer` until exactly `wanted` records have arrived, or fails
/// with [`TestkitError::Timeout`] after `timeout`. After the `wanted`-th
/// record it polls for `linger` more and fails if anything else arrives, so
/// "exactly" is checked, not assumed.
pub fn consume_exactly(
    consumer: &BaseConsumer,
    wanted: usize,
    timeout: Duration,
    linger: Duration,
) -> Result<Vec<Received>> {
    let started = Instant::now();
    let mut got = Vec::with_capacity(wanted);
    while got.len() < wanted {
        if started.elapsed() > timeout {
            return Err(TestkitError::Timeout {
                wanted,
                got: got.len(),
                waited: started.elapsed(),
            });
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.map_err(kafka_err("consuming"))?;
            got.push(Received {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
    }
    let linger_until = Instant::now() + linger;
    while Instant::now() < linger_until {
        if let Some(message) = consumer.poll(Duration::from_millis(50)) {
            let message = message.map_err(kafka_err("consuming"))?;
            return Err(TestkitError::TooMany {
                wanted,
                extra: format!(
                    "{}[{}]@{}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                ),
            });
        }
    }
    Ok(got)
}

/// Every record of `topic` — all its partitions, from their start to their
/// end offsets as of the call — read through the runtime's cluster port by a
/// read-committed consumer in `group`; fails if that takes over `timeout`.
pub fn read_topic(
    cluster: &dyn brook_runtime::cluster::Cluster,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> std::result::Result<
    Vec<brook_runtime::cluster::ConsumedRecord>,
    brook_runtime::cluster::ClusterError,
> {
    read_topic_with(
        cluster,
        topic,
        group,
        brook_runtime::cluster::Isolation::ReadCommitted,
        timeout,
    )
}

/// [`read_topic`] with a chosen isolation: `ReadUncommitted` also returns
/// records of open and aborted transactions.
pub fn read_topic_with(
    cluster: &dyn brook_runtime::cluster::Cluster,
    topic: &str,
    group: &str,
    isolation: brook_runtime::cluster::Isolation,
    timeout: Duration,
) -> std::result::Result<
    Vec<brook_runtime::cluster::ConsumedRecord>,
    brook_runtime::cluster::ClusterError,
> {
    use brook_runtime::cluster::{ClusterError, TopicPartition};
    let partitions = cluster.partition_count(topic)?;
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let mut consumer = cluster.consumer(group, isolation)?;
    let ends = consumer.end_offsets(&tps)?;
    consumer.assign(&tps)?;
    for tp in &tps {
        consumer.seek(tp, 0)?;
    }
    let mut out = Vec::new();
    let started = Instant::now();
    loop {
        let mut behind = false;
        for tp in &tps {
            behind |= consumer.position(tp)? < ends[tp];
        }
        if !behind {
            return Ok(out);
        }
        if started.elapsed() > timeout {
            return Err(ClusterError::Client(format!(
                "reading {topic} to its end took over {timeout:?} ({} records read)",
                out.len()
            )));
        }
        out.extend(consumer.poll(1_000)?);
    }
}
