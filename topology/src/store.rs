//! State stores as processors see them.
//!
//! A store is declared with the topology (a name, serdes for its keys and
//! values, whether it is backed by a changelog) and connected to the
//! processors that use it; the runtime creates one instance per task.
//! Underneath, stores hold bytes ([`KeyValueBytes`], ordered by key bytes);
//! processors use the typed [`KeyValueStore`] handle, which serializes with
//! the store's serdes. The implementations (in-memory, RocksDB) and the
//! change-logging layer live in `brook-state`.

use std::any::Any;
use std::sync::Arc;

use crate::error::{Data, ProcessError};
pub use crate::error::{StoreError, StoreResult};
use crate::serdes::Serde;

/// Whether the half-open range `from..to` of [`KeyValueBytes::range`] is
/// empty for any store (both bounds given, `from >= to`).
pub fn is_empty_range(from: Option<&[u8]>, to: Option<&[u8]>) -> bool {
    matches!((from, to), (Some(from), Some(to)) if from >= to)
}

/// A byte-level key-value store, ordered by key bytes.
pub trait KeyValueBytes: Send {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Sets `key` to `value`, or deletes it when `value` is `None`.
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()>;
    /// The entries with `from <= key < to` (unbounded where `None`), in key order.
    fn range(&self, from: Option<&[u8]>, to: Option<&[u8]>)
    -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Number of entries (may scan the store).
    fn len(&self) -> StoreResult<usize>;
    /// Whether the store is empty.
    fn is_empty(&self) -> StoreResult<bool> {
        Ok(self.len()? == 0)
    }
    /// Applies several writes, in order; persistent stores apply them
    /// atomically (all or none survive a crash).
    fn write_batch(&mut self, batch: &[(Vec<u8>, Option<Vec<u8>>)]) -> StoreResult<()> {
        for (key, value) in batch {
            self.put(key, value.as_deref())?;
        }
        Ok(())
    }
    /// Makes every write so far durable (persistent stores write their
    /// memory buffers to disk); a no-op for in-memory stores.
    fn flush(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

impl<S: KeyValueBytes + ?Sized> KeyValueBytes for Box<S> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        (**self).get(key)
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        (**self).put(key, value)
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).range(from, to)
    }

    fn len(&self) -> StoreResult<usize> {
        (**self).len()
    }

    fn write_batch(&mut self, batch: &[(Vec<u8>, Option<Vec<u8>>)]) -> StoreResult<()> {
        (**self).write_batch(batch)
    }

    fn flush(&mut self) -> StoreResult<()> {
        (**self).flush()
    }
}

/// A serde with its type erased (holds an `Arc<dyn Serde<T>>`).
pub type DynSerde = Arc<dyn Any + Send + Sync>;

/// Erases a serde.
pub fn erase_serde<T: 'static>(serde: Arc<dyn Serde<T>>) -> DynSerde {
    Arc::new(serde)
}

fn unerase_serde<T: 'static>(
    serde: &DynSerde,
    store: &str,
) -> Result<Arc<dyn Serde<T>>, ProcessError> {
    serde
        .downcast_ref::<Arc<dyn Serde<T>>>()
        .cloned()
        .ok_or_else(|| ProcessError::StoreType {
            store: store.to_owned(),
            expected: std::any::type_name::<T>(),
        })
}

/// A store the topology declares.
#[derive(Clone)]
pub struct StoreSpec {
    /// Its name, unique in the topology; the changelog topic is
    /// `<application.id>-<name>-changelog`.
    pub name: String,
    /// Whether every write is also sent to the changelog (so the store can
    /// be rebuilt elsewhere).
    pub logged: bool,
    /// The key serde.
    pub key_serde: DynSerde,
    /// The value serde.
    pub value_serde: DynSerde,
    /// A global store: filled from every partition of its topic on every
    /// instance, read-only for processors.
    pub global: bool,
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSpec")
            .field("name", &self.name)
            .field("logged", &self.logged)
            .finish_non_exhaustive()
    }
}

impl StoreSpec {
    /// The changelog topic's name without the application id.
    pub fn changelog_suffix(&self) -> String {
        format!("{}-changelog", self.name)
    }
}

/// By default at most this many keys are held per cached aggregation and
/// task (see [`Materialized::with_cache_max_entries`]); the key that fills
/// the cache flushes it all downstream. It bounds memory when many
/// distinct keys (or windows) change within one commit interval.
pub const CACHE_MAX_ENTRIES: usize = 10_000;

/// How a stateful operator's store is named and (de)serialized.
///
/// The name is required: store and changelog names must not change when the
/// topology changes elsewhere.
pub struct Materialized<K, V> {
    pub(crate) name: String,
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
    pub(crate) logged: bool,
    pub(crate) retention: Option<std::time::Duration>,
    /// With a record cache of at most this many keys per task.
    pub(crate) caching: Option<usize>,
}

impl<K: Data, V: Data> Materialized<K, V> {
    /// A store named `name` with these serdes, backed by a changelog.
    pub fn named(name: impl Into<String>, key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Materialized {
            name: name.into(),
            key: Arc::new(key),
            value: Arc::new(value),
            logged: true,
            retention: None,
            caching: None,
        }
    }

    /// Caches an aggregation's updates between commits: of several updates
    /// to a key (for windowed aggregations, a key and window) before a
    /// commit, only the last is forwarded downstream (with the value before
    /// the first as `old`), as Kafka Streams' record cache does. Fewer
    /// downstream records and writes, at the cost of results arriving at
    /// commit time rather than per record. A cache forwards early when it
    /// holds [`CACHE_MAX_ENTRIES`] keys (see
    /// [`with_cache_max_entries`](Self::with_cache_max_entries)), and a
    /// windowed one when one of its windows closes. Changelog records are
    /// coalesced per commit either way.
    pub fn with_caching(self) -> Self {
        self.with_cache_max_entries(CACHE_MAX_ENTRIES)
    }

    /// [`with_caching`](Self::with_caching) with a cache of at most
    /// `entries` keys per task (at least 1) instead of the default
    /// [`CACHE_MAX_ENTRIES`]: more keys
    /// coalesce more updates when many keys change between commits, at
    /// the cost of memory.
    pub fn with_cache_max_entries(mut self, entries: usize) -> Self {
        self.caching = Some(entries.max(1));
        self
    }

    /// For window stores: how long windows are kept after they end (default:
    /// one day, or size + grace if longer). Shorter saves memory; interactive
    /// queries see only retained windows.
    pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// No changelog: the store cannot be restored after a restart or moved.
    pub fn without_logging(mut self) -> Self {
        self.logged = false;
        self
    }

    /// The same store, keyed by windowed keys (window and session stores);
    /// caching carries over.
    pub(crate) fn windowed(self) -> Materialized<crate::window::Windowed<K>, V> {
        let caching = self.caching;
        let mut windowed = windowed_store(
            &self.name,
            self.key,
            self.value,
            self.logged,
            self.retention,
        );
        windowed.caching = caching;
        windowed
    }

    pub(crate) fn spec(&self) -> StoreSpec {
        StoreSpec {
            name: self.name.clone(),
            logged: self.logged,
            key_serde: erase_serde(self.key.clone()),
            value_serde: erase_serde(self.value.clone()),
            global: false,
        }
    }
}

/// A store keyed by [`Windowed`](crate::window::Windowed) keys through the
/// one windowed-key encoding ([`WindowedSerde`](crate::window::WindowedSerde)).
pub(crate) fn windowed_store<K: Data, V: Data>(
    name: &str,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
    logged: bool,
    retention: Option<std::time::Duration>,
) -> Materialized<crate::window::Windowed<K>, V> {
    Materialized {
        name: name.to_owned(),
        key: Arc::new(crate::window::WindowedSerde(key)),
        value,
        logged,
        retention,
        caching: None,
    }
}

/// A typed view of a key-value store.
pub struct KeyValueStore<'a, K, V> {
    name: &'a str,
    read_only: bool,
    bytes: &'a mut dyn KeyValueBytes,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
}

impl<'a, K: 'static, V: 'static> KeyValueStore<'a, K, V> {
    /// Wraps the bytes store of `spec`; fails when the store's serdes are
    /// not for `K` and `V`.
    pub fn new(
        spec: &'a StoreSpec,
        bytes: &'a mut dyn KeyValueBytes,
    ) -> Result<Self, ProcessError> {
        Ok(KeyValueStore {
            name: &spec.name,
            read_only: spec.global,
            bytes,
            key: unerase_serde(&spec.key_serde, &spec.name)?,
            value: unerase_serde(&spec.value_serde, &spec.name)?,
        })
    }

    fn key_bytes(&self, key: &K) -> Result<Vec<u8>, ProcessError> {
        let context = || format!("serializing a key for store {}", self.name);
        self.key
            .serialize(key)
            .map_err(|source| ProcessError::Serde {
                context: context(),
                source,
            })?
            .ok_or_else(|| ProcessError::Serde {
                context: context(),
                source: crate::serdes::SerdeError::UnexpectedNull {
                    type_name: std::any::type_name::<K>(),
                },
            })
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V, ProcessError> {
        self.value
            .deserialize(Some(bytes))
            .map_err(|source| ProcessError::Serde {
                context: format!("reading a value of store {}", self.name),
                source,
            })
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, ProcessError> {
        let key = self.key_bytes(key)?;
        self.bytes
            .get(&key)
            .map_err(|e| self.store_err(e))?
            .map(|v| self.decode_value(&v))
            .transpose()
    }

    fn check_writable(&self) -> Result<(), ProcessError> {
        if self.read_only {
            return Err(ProcessError::ReadOnlyStore {
                store: self.name.to_owned(),
            });
        }
        Ok(())
    }

    /// Sets the value of `key`.
    pub fn put(&mut self, key: &K, value: &V) -> Result<(), ProcessError> {
        self.check_writable()?;
        let key = self.key_bytes(key)?;
        let value = self
            .value
            .serialize(value)
            .map_err(|source| ProcessError::Serde {
                context: format!("serializing a value for store {}", self.name),
                source,
            })?;
        self.bytes
            .put(&key, value.as_deref())
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &K) -> Result<(), ProcessError> {
        self.check_writable()?;
        let key = self.key_bytes(key)?;
        self.bytes.put(&key, None).map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// Every entry, in key-byte order.
    pub fn all(&self) -> Result<Vec<(K, V)>, ProcessError> {
        let entries = self
            .bytes
            .range(None, None)
            .map_err(|e| self.store_err(e))?;
        self.decode_entries(entries)
    }

    /// The entries with `from <= key < to` in key-byte order (meaningful
    /// for keys whose encoding preserves order, such as windowed keys).
    pub fn range(&self, from: &K, to: &K) -> Result<Vec<(K, V)>, ProcessError> {
        let (from, to) = (self.key_bytes(from)?, self.key_bytes(to)?);
        let entries = self
            .bytes
            .range(Some(&from), Some(&to))
            .map_err(|e| self.store_err(e))?;
        self.decode_entries(entries)
    }

    fn decode_entries(
        &self,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<(K, V)>, ProcessError> {
        entries
            .into_iter()
            .map(|(k, v)| {
                let key = self
                    .key
                    .deserialize(Some(&k))
                    .map_err(|source| ProcessError::Serde {
                        context: format!("reading a key of store {}", self.name),
                        source,
                    })?;
                Ok((key, self.decode_value(&v)?))
            })
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, ProcessError> {
        self.bytes.len().map_err(|e| self.store_err(e))
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool, ProcessError> {
        self.bytes.is_empty().map_err(|e| self.store_err(e))
    }

    fn store_err(&self, source: StoreError) -> ProcessError {
        ProcessError::Store {
            store: self.name.to_owned(),
            source,
        }
    }
}
