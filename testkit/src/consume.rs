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
