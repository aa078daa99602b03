//! Records as processors see them.

/// Milliseconds since the Unix epoch: event time, stream time, wall-clock time.
pub type Timestamp = i64;

/// Kafka record headers: ordered, repeatable, values may be null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Option<Vec<u8>>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header (an existing one of the same name stays).
    pub fn add(&mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> &mut Self {
        self.0.push((name.into(), value));
        self
    }

    /// The value of the last header named `name`.
    pub fn last(&self, name: &str) -> Option<Option<&[u8]>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A typed record: key, value, event timestamp and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// Event time.
    pub timestamp: Timestamp,
    /// Headers, carried along unless a processor changes them.
    pub headers: Headers,
}

impl<K, V> Record<K, V> {
    /// A record without headers.
    pub fn new(key: K, value: V, timestamp: Timestamp) -> Self {
        Record {
            key,
            value,
            timestamp,
            headers: Headers::new(),
        }
    }

    /// The same record with another key.
    pub fn with_key<KR>(self, key: KR) -> Record<KR, V> {
        Record {
            key,
            value: self.value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another value.
    pub fn with_value<VR>(self, value: VR) -> Record<K, VR> {
        Record {
            key: self.key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another timestamp.
    pub fn with_timestamp(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = timestamp;
        self
    }
}

/// Where the record being processed came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Source topic (shared with the task's partition: set per record
    /// without allocating).
    pub topic: std::sync::Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

/// A table update: the new value (`None`: deleted) and the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// The value now.
    pub new: Option<V>,
    /// The value before.
    pub old: Option<V>,
}
