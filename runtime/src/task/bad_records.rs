//! The bad-record policy: what makes a record bad (it cannot be
//! deserialized, is too large, or has a timestamp out of bounds), what
//! happens to it (the [`DeserializationHandler`]), and the dead letters
//! it becomes.

use super::*;

/// What happens to a record that cannot be deserialized, or whose
/// timestamp is invalid (Kafka Streams' deserialization exception handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeserializationHandler {
    /// To the dead-letter topic, bytes unchanged, with error headers; the
    /// application goes on (the default: nothing is lost, nothing stops).
    #[default]
    DeadLetter,
    /// Skipped: logged with topic, partition, offset and reason, and
    /// counted (`skipped`); the application goes on.
    LogAndContinue,
    /// The task fails with an error naming topic, partition, offset and
    /// reason; nothing past the record is committed.
    Fail,
}

impl std::str::FromStr for DeserializationHandler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dead-letter" | "dead_letter" => Ok(DeserializationHandler::DeadLetter),
            "log-and-continue" | "log_and_continue" | "skip" => {
                Ok(DeserializationHandler::LogAndContinue)
            }
            "fail" => Ok(DeserializationHandler::Fail),
            other => Err(format!(
                "unknown deserialization handler {other:?} (dead-letter, log-and-continue or fail)"
            )),
        }
    }
}

/// Kafka's default `message.max.bytes`: the largest record a broker takes
/// unless configured otherwise, and brook's default [`RecordLimits`] size.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_048_588;

/// Bounds that make a readable record bad: too large to process safely, or
/// a timestamp so far from the wall clock that it is a mistake (a record
/// stamped in the year 2100 would close every window at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest key plus value, bytes, of a record read or written by a
    /// sink (default [`DEFAULT_MAX_RECORD_BYTES`]).
    pub max_record_bytes: usize,
    /// Largest distance of an (extracted) timestamp ahead of the wall
    /// clock, ms; `None` (the default, as in Kafka Streams): no bound.
    pub max_timestamp_ahead_ms: Option<i64>,
    /// Largest distance of a timestamp behind the wall clock, ms; `None`
    /// (the default: replays of old data are normal): no bound.
    pub max_timestamp_behind_ms: Option<i64>,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_timestamp_ahead_ms: None,
            max_timestamp_behind_ms: None,
        }
    }
}

impl RecordLimits {
    /// Why a record of `bytes` (key plus value) is too large, if it is.
    pub fn check_size(&self, bytes: usize) -> Option<String> {
        (bytes > self.max_record_bytes).then(|| {
            format!(
                "record of {bytes} bytes (key + value) is larger than max.record.bytes = {}",
                self.max_record_bytes
            )
        })
    }

    /// Why `timestamp` is invalid at wall-clock time `now` (ms; a clock
    /// not yet set, `now <= 0`, checks only the sign).
    pub fn check_timestamp(&self, timestamp: Timestamp, now: Timestamp) -> Option<String> {
        if timestamp < 0 {
            return Some(format!("invalid (negative) timestamp {timestamp}"));
        }
        if now <= 0 {
            return None;
        }
        if let Some(ahead) = self.max_timestamp_ahead_ms
            && timestamp.saturating_sub(now) > ahead
        {
            return Some(format!(
                "timestamp {timestamp} is {} ms ahead of the wall clock ({now}); \
                 max.timestamp.ahead.ms = {ahead}",
                timestamp - now
            ));
        }
        if let Some(behind) = self.max_timestamp_behind_ms
            && now.saturating_sub(timestamp) > behind
        {
            return Some(format!(
                "timestamp {timestamp} is {} ms behind the wall clock ({now}); \
                 max.timestamp.behind.ms = {behind}",
                now - timestamp
            ));
        }
        None
    }
}

/// Size of a consumed record's key plus value.
pub fn record_bytes(record: &ConsumedRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len)
}

/// Where bad records go: the handler and, for dead letters, the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecords {
    /// What to do.
    pub handler: DeserializationHandler,
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// What makes a readable record bad.
    pub limits: RecordLimits,
}

impl BadRecords {
    /// Applies the handler to `raw`: a dead letter to send, nothing
    /// (skipped and logged), or the error that stops the caller.
    pub fn handle(
        &self,
        raw: &ConsumedRecord,
        reason: &str,
    ) -> Result<Option<ProducedRecord>, TaskError> {
        match self.handler {
            DeserializationHandler::DeadLetter => Ok(Some(dead_letter_record(
                raw,
                reason,
                &self.dead_letter_topic,
            ))),
            DeserializationHandler::LogAndContinue => {
                tracing::warn!(
                    topic = %raw.tp.topic,
                    partition = raw.tp.partition,
                    offset = raw.offset,
                    reason,
                    "skipping a record that cannot be processed"
                );
                Ok(None)
            }
            DeserializationHandler::Fail => Err(TaskError::BadRecord {
                topic: raw.tp.topic.to_string(),
                partition: raw.tp.partition,
                offset: raw.offset,
                reason: reason.to_owned(),
            }),
        }
    }
}

/// The dead letter for `raw`: its bytes unchanged, with headers saying what
/// was wrong (`brook.error`) and where it came from (`brook.topic`,
/// `brook.partition`, `brook.offset`).
pub fn dead_letter_record(
    raw: &ConsumedRecord,
    error: &str,
    dead_letter_topic: &str,
) -> ProducedRecord {
    let mut headers = raw.headers.clone();
    headers
        .add("brook.error", Some(error.as_bytes().to_vec()))
        .add("brook.topic", Some(raw.tp.topic.as_bytes().to_vec()))
        .add(
            "brook.partition",
            Some(raw.tp.partition.to_string().into_bytes()),
        )
        .add("brook.offset", Some(raw.offset.to_string().into_bytes()));
    ProducedRecord {
        topic: dead_letter_topic.to_owned(),
        partition: None,
        key: raw.key.clone(),
        value: raw.value.clone(),
        timestamp: raw.timestamp.max(0),
        headers,
    }
}

/// Headers of a dead letter, for readers of the dead-letter topic.
pub fn dead_letter_error(headers: &Headers) -> Option<String> {
    headers
        .last("brook.error")
        .flatten()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
