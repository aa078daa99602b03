//! The record cache of aggregations built with
//! [`Materialized::with_caching`](crate::Materialized::with_caching): one
//! downstream update per key between commits, as Kafka Streams' record
//! cache forwards.
//!
//! Every aggregation (key-value, time-windowed, session, sliding) sends
//! its updates through one path (`forward_or_cache`; windowed ones
//! through `WindowCache`, which also forwards once a held window closes):
//! without a cache they go downstream at once; with one they are coalesced
//! per key (the value before the first update as `old`, the last update as
//! `new`) and go downstream when the task flushes its processors before a
//! commit, or earlier when the cache is full ([`CACHE_MAX_ENTRIES`] keys by
//! default). The store is written per record either way (its changelog per
//! commit); only what is forwarded is coalesced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::processor::{Data, ProcessError, ProcessorContext, PunctuationType, ScheduleId};
use crate::record::{Change, Headers, Record, Timestamp};
use crate::serdes::Serde;
use crate::store::Materialized;
use crate::window::Windowed;

pub use crate::store::CACHE_MAX_ENTRIES;

/// Makes a fresh record cache (or none) for each task.
pub(crate) type CacheSupplier<K, V> = Arc<dyn Fn() -> Option<RecordCache<K, V>> + Send + Sync>;

/// Makes each task's record cache for an aggregation over `materialized`'s
/// store: `None` unless [`with_caching`](Materialized::with_caching) was
/// asked for.
pub(crate) fn caches<K: Data, V: Data>(materialized: &Materialized<K, V>) -> CacheSupplier<K, V> {
    let (caching, store) = (materialized.caching, materialized.name.clone());
    let key = materialized.key.clone();
    Arc::new(move || caching.map(|max| RecordCache::new(&store, key.clone(), max)))
}

/// Keys updated since the last flush, by key bytes.
pub(crate) struct RecordCache<K, V> {
    store: String,
    key: Arc<dyn Serde<K>>,
    max_entries: usize,
    dirty: BTreeMap<Vec<u8>, Dirty<K, V>>,
}

/// One key's coalesced update: the key, the value before its first update
/// since the last flush, the last update's value, its latest timestamp and
/// the last update's headers.
struct Dirty<K, V> {
    key: K,
    old: Option<V>,
    new: Option<V>,
    timestamp: Timestamp,
    headers: Headers,
}

impl<K: Data, V: Data> RecordCache<K, V> {
    /// A cache for the aggregation over `store`, keys encoded by `key`,
    /// holding at most `max_entries` keys.
    pub(crate) fn new(store: &str, key: Arc<dyn Serde<K>>, max_entries: usize) -> Self {
        RecordCache {
            store: store.to_owned(),
            key,
            max_entries,
            dirty: BTreeMap::new(),
        }
    }

    /// Notes an update; true when the cache is over its bound and should
    /// be flushed now.
    fn note(&mut self, record: Record<K, Change<V>>) -> Result<bool, ProcessError> {
        let bytes = self
            .key
            .serialize(&record.key)
            .map_err(|source| ProcessError::Serde {
                context: format!("caching a key of store {}", self.store),
                source,
            })?
            .unwrap_or_default();
        let Record {
            key,
            value: Change { new, old },
            timestamp,
            headers,
        } = record;
        match self.dirty.entry(bytes) {
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let entry = entry.get_mut();
                entry.new = new;
                entry.timestamp = entry.timestamp.max(timestamp);
                entry.headers = headers;
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(Dirty {
                    key,
                    old,
                    new,
                    timestamp,
                    headers,
                });
            }
        }
        Ok(self.dirty.len() >= self.max_entries)
    }

    /// Forwards every held update, in key-byte order, and empties the
    /// cache. A key created and removed since the last flush (a session
    /// merged away in the same interval) forwards nothing.
    pub(crate) fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) {
        for (_, dirty) in std::mem::take(&mut self.dirty) {
            if dirty.old.is_none() && dirty.new.is_none() {
                continue;
            }
            ctx.forward(Record {
                key: dirty.key,
                value: Change {
                    new: dirty.new,
                    old: dirty.old,
                },
                timestamp: dirty.timestamp,
                headers: dirty.headers,
            });
        }
    }
}

/// Sends an aggregation's update downstream now (no cache) or through the
/// cache, flushing it when it is full.
pub(crate) fn forward_or_cache<K: Data, V: Data>(
    cache: &mut Option<RecordCache<K, V>>,
    ctx: &mut ProcessorContext<'_, K, Change<V>>,
    record: Record<K, Change<V>>,
) -> Result<(), ProcessError> {
    match cache {
        None => ctx.forward(record),
        Some(cache) => {
            if cache.note(record)? {
                cache.flush(ctx);
            }
        }
    }
    Ok(())
}

/// Forwards what the cache holds, if there is one (a processor's `flush`).
pub(crate) fn flush_cache<K: Data, V: Data>(
    cache: &mut Option<RecordCache<K, V>>,
    ctx: &mut ProcessorContext<'_, K, Change<V>>,
) {
    if let Some(cache) = cache {
        cache.flush(ctx);
    }
}

/// The record cache of a windowed aggregation (time, session or sliding
/// windows), which also forwards what it holds as soon as one of its
/// windows closes: a `suppress_until_window_closes` downstream then
/// emits that window's final result with every update in it, rather than
/// a result missing the cached ones and a second one at the commit.
pub(crate) struct WindowCache<K, V> {
    cache: Option<RecordCache<Windowed<K>, V>>,
    /// How long after its end a window closes (grace; for sessions, the
    /// inactivity gap plus grace).
    close_after: i64,
    /// The earliest stream time at which a held window closes.
    closes_at: Timestamp,
    schedule: Option<ScheduleId>,
}

impl<K: Data, V: Data> WindowCache<K, V> {
    /// Wraps `cache` (none: every update goes downstream at once).
    pub(crate) fn new(cache: Option<RecordCache<Windowed<K>, V>>, close_after: i64) -> Self {
        WindowCache {
            cache,
            close_after,
            closes_at: Timestamp::MAX,
            schedule: None,
        }
    }

    /// From the processor's `init`: with a cache, a punctuation on every
    /// advance of stream time checks for closed windows. It is scheduled
    /// before any processor downstream (the task initializes processors
    /// upstream first), so it runs before a suppression's check.
    pub(crate) fn init(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>) {
        if self.cache.is_some() {
            let id = ctx.schedule(Duration::from_millis(1), PunctuationType::StreamTime);
            self.schedule = Some(id);
        }
    }

    /// Sends an update downstream or into the cache.
    pub(crate) fn forward(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
        record: Record<Windowed<K>, Change<V>>,
    ) -> Result<(), ProcessError> {
        if self.cache.is_some() {
            let closes = record.key.window.end.saturating_add(self.close_after);
            self.closes_at = self.closes_at.min(closes);
        }
        forward_or_cache(&mut self.cache, ctx, record)
    }

    /// From the processor's `punctuate`: true when `id` is this cache's
    /// punctuation (handled: everything held is forwarded once a held
    /// window has closed).
    pub(crate) fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
        id: ScheduleId,
        stream_time: Timestamp,
    ) -> bool {
        if self.schedule != Some(id) {
            return false;
        }
        if stream_time >= self.closes_at {
            self.flush(ctx);
        }
        true
    }

    /// From the processor's `flush`: forwards everything held.
    pub(crate) fn flush(&mut self, ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>) {
        flush_cache(&mut self.cache, ctx);
        self.closes_at = Timestamp::MAX;
    }
}
