//! Sources: bringing data from outside into topics, resuming where they
//! stopped, as Kafka Connect's source connectors do.
//!
//! [`FileSource`] tails a JSON-lines file into a topic. Each poll reads the
//! complete lines after the stored position (a last line without its
//! newline is still being written and waits), sends each valid line as a
//! record (key from a field, timestamp from a field or the read time) and
//! each invalid line to the dead-letter topic with the reason, the file
//! and the line number in headers; then it stores its position — byte
//! offset and line number — as a record keyed by the source's name in a
//! compacted offsets topic (`brook-source-offsets`, like Kafka Connect's
//! `connect-offsets`). On start it reads its latest position back, so a
//! restart resumes instead of starting over.
//!
//! With `exactly_once`, the records and the position go in one
//! transaction: a crash before the commit leaves neither, and the
//! restarted source reads the same lines again — each line lands once.
//! Without, records are flushed before the position is stored: a crash in
//! between sends some lines again (at-least-once). A file shorter than the
//! stored position was truncated or replaced; it is read from the start,
//! with a warning.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use brook_cluster::{
    Cluster, ClusterError, ClusterProducer, Isolation, ProducedRecord, TopicPartition, error_chain,
};
use brook_topology::{CleanupPolicy, Headers, TopicSpec};

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The cluster failed.
    #[error("{what}: {message}")]
    Cluster {
        /// What the source was doing.
        what: String,
        /// The error chain.
        message: String,
    },
    /// The stored position cannot be read.
    #[error("the stored position of source {name} is unreadable: {reason}")]
    Position {
        /// The source.
        name: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn cluster_error(what: impl Into<String>) -> impl FnOnce(ClusterError) -> SourceError {
    let what = what.into();
    move |e| SourceError::Cluster {
        what,
        message: error_chain(&e),
    }
}

/// Settings of a [`FileSource`].
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// The source's name: the key of its position in the offsets topic.
    pub name: String,
    /// The JSON-lines file.
    pub path: PathBuf,
    /// The topic the records go to.
    pub topic: String,
    /// The JSON field whose value is the record key (null key without).
    pub key_field: Option<String>,
    /// The JSON field with the record's timestamp in epoch milliseconds
    /// (the read time without, or when the field is missing).
    pub timestamp_field: Option<String>,
    /// Where positions are stored (compacted, one partition).
    pub offsets_topic: String,
    /// Where invalid lines go.
    pub dead_letter_topic: String,
    /// Lines per poll at most.
    pub max_lines: usize,
    /// Records and position in one transaction.
    pub exactly_once: bool,
}

impl FileSourceConfig {
    /// A source `name` from `path` into `topic`: no key, read-time
    /// timestamps, positions in `brook-source-offsets`, invalid lines to
    /// `<name>-dead-letters`, 10 000 lines per poll, at-least-once.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        topic: impl Into<String>,
    ) -> Self {
        let name = name.into();
        FileSourceConfig {
            dead_letter_topic: format!("{name}-dead-letters"),
            name,
            path: path.into(),
            topic: topic.into(),
            key_field: None,
            timestamp_field: None,
            offsets_topic: "brook-source-offsets".into(),
            max_lines: 10_000,
            exactly_once: false,
        }
    }
}

/// The latest stored offset record of source `name` in `offsets_topic`
/// (read to its end), if any.
pub fn latest_offset(
    cluster: &dyn Cluster,
    offsets_topic: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    let tp = TopicPartition::new(offsets_topic.to_owned(), 0);
    let mut consumer = cluster
        .consumer(
            &format!("{offsets_topic}-position"),
            Isolation::ReadCommitted,
        )
        .map_err(cluster_error("a consumer of the offsets topic"))?;
    consumer
        .assign(std::slice::from_ref(&tp))
        .map_err(cluster_error("reading the offsets topic"))?;
    consumer
        .seek(&tp, 0)
        .map_err(cluster_error("reading the offsets topic"))?;
    let end = consumer
        .end_offsets(std::slice::from_ref(&tp))
        .map_err(cluster_error("reading the offsets topic"))?
        .get(&tp)
        .copied()
        .unwrap_or(0);
    let mut latest = None;
    let mut next = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while next < end {
        if std::time::Instant::now() > deadline {
            return Err(SourceError::Position {
                name: name.to_owned(),
                reason: format!("reading the offsets topic timed out at {next} of {end}"),
            });
        }
        for record in consumer
            .poll(1000)
            .map_err(cluster_error("reading the offsets topic"))?
        {
            next = record.offset + 1;
            if record.key.as_deref() == Some(name.as_bytes()) {
                latest = record.value;
            }
        }
    }
    Ok(latest)
}

/// Creates a source's offsets topic (compacted, one partition) and
/// dead-letter topic if missing, and its producer: transactional (as
/// `brook-source-<name>`, fencing a predecessor) for exactly-once.
pub fn source_producer(
    cluster: &dyn Cluster,
    name: &str,
    offsets_topic: &str,
    dead_letter_topic: &str,
    exactly_once: bool,
) -> Result<Box<dyn ClusterProducer>, SourceError> {
    cluster
        .create_topics(&[
            TopicSpec::new(offsets_topic.to_owned(), 1).cleanup_policy(CleanupPolicy::Compact),
            TopicSpec::new(dead_letter_topic.to_owned(), 1),
        ])
        .map_err(cluster_error("creating the offsets and dead-letter topics"))?;
    if exactly_once {
        cluster
            .transactional_producer(&format!("brook-source-{name}"))
            .map_err(cluster_error("a transactional producer"))
    } else {
        cluster.producer().map_err(cluster_error("a producer"))
    }
}

/// Sends `records` and then the source's new offset, atomically with
/// `exactly_once`, else records first (flushed) and the offset after.
pub fn send_with_offset(
    producer: &mut dyn ClusterProducer,
    exactly_once: bool,
    records: Vec<ProducedRecord>,
    offset: ProducedRecord,
    what: &str,
) -> Result<(), SourceError> {
    if exactly_once {
        producer
            .begin_transaction()
            .map_err(cluster_error("beginning a transaction"))?;
    }
    for record in records {
        producer.send(record).map_err(cluster_error(what))?;
    }
    if !exactly_once {
        // At-least-once: the records are durable before the offset.
        producer.flush().map_err(cluster_error(what))?;
    }
    producer
        .send(offset)
        .map_err(cluster_error("storing the offset"))?;
    if exactly_once {
        producer
            .commit_transaction()
            .map_err(cluster_error("committing records and offset"))
    } else {
        producer
            .flush()
            .map_err(cluster_error("storing the offset"))
    }
}

/// Where a source is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    /// Bytes read (the next line starts here).
    pub byte: u64,
    /// Lines read.
    pub line: u64,
}

/// Tails a JSON-lines file into a topic; see the [module docs](self).
pub struct FileSource {
    config: FileSourceConfig,
    producer: Box<dyn ClusterProducer>,
    position: FilePosition,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.config.name)
            .field("position", &self.position)
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPosition {
    file: String,
    byte: u64,
    line: u64,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl FileSource {
    /// Creates the topics it needs if missing and resumes from the stored
    /// position (the start of the file when there is none).
    pub fn open(cluster: Arc<dyn Cluster>, config: FileSourceConfig) -> Result<Self, SourceError> {
        // A transactional producer fences a predecessor with the same name
        // and aborts what it left open, before the position is read.
        let producer = source_producer(
            cluster.as_ref(),
            &config.name,
            &config.offsets_topic,
            &config.dead_letter_topic,
            config.exactly_once,
        )?;
        let position = Self::stored_position(cluster.as_ref(), &config)?;
        tracing::info!(source = %config.name, file = %config.path.display(), byte = position.byte, line = position.line, "file source resumes");
        Ok(FileSource {
            config,
            producer,
            position,
        })
    }

    fn stored_position(
        cluster: &dyn Cluster,
        config: &FileSourceConfig,
    ) -> Result<FilePosition, SourceError> {
        let Some(value) = latest_offset(cluster, &config.offsets_topic, &config.name)? else {
            return Ok(FilePosition::default());
        };
        let stored: StoredPosition =
            serde_json::from_slice(&value).map_err(|e| SourceError::Position {
                name: config.name.clone(),
                reason: e.to_string(),
            })?;
        if stored.file != config.path.display().to_string() {
            tracing::warn!(source = %config.name, stored = %stored.file, now = %config.path.display(), "the source's file changed; reading the new one from the start");
            return Ok(FilePosition::default());
        }
        Ok(FilePosition {
            byte: stored.byte,
            line: stored.line,
        })
    }

    /// Where the source is.
    pub fn position(&self) -> FilePosition {
        self.position
    }

    /// Reads the complete lines after the position (at most `max_lines`),
    /// sends them and stores the new position. Returns the lines read.
    pub fn poll(&mut self) -> Result<usize, SourceError> {
        let path = self.config.path.display().to_string();
        let file_error = |source| SourceError::File {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&self.config.path).map_err(file_error)?;
        let len = file.metadata().map_err(file_error)?.len();
        if len < self.position.byte {
            tracing::warn!(source = %self.config.name, file = %path, len, position = self.position.byte, "the file is shorter than the stored position (truncated or replaced); reading it from the start");
            self.position = FilePosition::default();
        }
        if len == self.position.byte {
            return Ok(0);
        }
        file.seek(SeekFrom::Start(self.position.byte))
            .map_err(file_error)?;
        let mut buf = Vec::new();
        file.take(len - self.position.byte)
            .read_to_end(&mut buf)
            .map_err(file_error)?;
        let mut records = Vec::new();
        let mut position = self.position;
        let mut start = 0;
        while records.len() < self.config.max_lines {
            let Some(newline) = buf[start..].iter().position(|&b| b == b'\n') else {
                break; // an incomplete last line: still being written
            };
            let line = &buf[start..start + newline];
            position.byte += newline as u64 + 1;
            position.line += 1;
            start += newline + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            records.push(self.record(line, position.line, &path));
        }
        if records.is_empty() && position == self.position {
            return Ok(0);
        }
        let stored = serde_json::to_vec(&StoredPosition {
            file: path.clone(),
            byte: position.byte,
            line: position.line,
        })
        .expect("a position serializes");
        let lines = (position.line - self.position.line) as usize;
        let what = format!("sending lines of {path} to {}", self.config.topic);
        let offset = ProducedRecord {
            topic: self.config.offsets_topic.clone(),
            partition: Some(0),
            key: Some(self.config.name.clone().into_bytes()),
            value: Some(stored),
            timestamp: now_ms(),
            headers: Headers::new(),
        };
        send_with_offset(
            self.producer.as_mut(),
            self.config.exactly_once,
            records,
            offset,
            &what,
        )?;
        self.position = position;
        Ok(lines)
    }

    /// A line's record, or its dead letter.
    fn record(&self, line: &[u8], number: u64, path: &str) -> ProducedRecord {
        let parsed: Result<serde_json::Value, String> =
            serde_json::from_slice(line).map_err(|e| e.to_string());
        let field = |json: &serde_json::Value, name: &Option<String>| {
            name.as_ref().and_then(|n| json.get(n)).cloned()
        };
        match parsed {
            Ok(json) => {
                let key = field(&json, &self.config.key_field).and_then(|k| match k {
                    serde_json::Value::String(s) => Some(s.into_bytes()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                });
                let timestamp = field(&json, &self.config.timestamp_field)
                    .and_then(|t| t.as_i64())
                    .unwrap_or_else(now_ms);
                ProducedRecord {
                    topic: self.config.topic.clone(),
                    partition: None,
                    key,
                    value: Some(line.to_vec()),
                    timestamp,
                    headers: Headers::new(),
                }
            }
            Err(reason) => {
                tracing::warn!(source = %self.config.name, file = %path, line = number, %reason, "invalid JSON line sent to the dead-letter topic");
                let mut headers = Headers::new();
                headers
                    .add(
                        "brook.error",
                        Some(format!("invalid JSON: {reason}").into_bytes()),
                    )
                    .add("brook.source.file", Some(path.as_bytes().to_vec()))
                    .add("brook.source.line", Some(number.to_string().into_bytes()));
                ProducedRecord {
                    topic: self.config.dead_letter_topic.clone(),
                    partition: None,
                    key: None,
                    value: Some(line.to_vec()),
                    timestamp: now_ms(),
                    headers,
                }
            }
        }
    }
}
