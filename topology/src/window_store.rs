//! Typed window and session stores.
//!
//! Both are key-value stores keyed by [`Windowed`] keys in the one
//! order-preserving encoding ([`WindowedSerde`](crate::window::WindowedSerde):
//! key, then start, then end), so one key's windows are contiguous and
//! sorted by start: fetching a key's windows in a time range is a range
//! scan, whatever the store underneath (RocksDB or in memory).

use crate::error::{Data, ProcessError};
use crate::record::Timestamp;
use crate::store::KeyValueStore;
use crate::window::{Window, Windowed};

/// The smallest windowed key of `key` starting at `start`.
fn lower<K: Clone>(key: &K, start: Timestamp) -> Windowed<K> {
    Windowed {
        key: key.clone(),
        window: Window {
            start,
            end: i64::MIN,
        },
    }
}

/// `key`'s entries with a window starting in `[from, to]`, by start time
/// (then end): one range scan.
pub fn fetch_key_range<K: Data, V: Data>(
    store: &KeyValueStore<'_, Windowed<K>, V>,
    key: &K,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<(Windowed<K>, V)>, ProcessError> {
    if from > to {
        return Ok(Vec::new());
    }
    store.range(&lower(key, from), &lower(key, to.saturating_add(1)))
}

/// Aggregates per key and time window.
pub struct WindowStore<'a, K, V> {
    inner: KeyValueStore<'a, Windowed<K>, V>,
}

impl<'a, K: Data, V: Data> WindowStore<'a, K, V> {
    /// Wraps a key-value store keyed by windowed keys.
    pub fn new(inner: KeyValueStore<'a, Windowed<K>, V>) -> Self {
        WindowStore { inner }
    }

    /// The value of `key` in `window`.
    pub fn get(&self, key: &K, window: Window) -> Result<Option<V>, ProcessError> {
        self.inner.get(&Windowed {
            key: key.clone(),
            window,
        })
    }

    /// Sets the value of `key` in `window`.
    pub fn put(&mut self, key: &K, window: Window, value: &V) -> Result<(), ProcessError> {
        self.inner.put(
            &Windowed {
                key: key.clone(),
                window,
            },
            value,
        )
    }

    /// Deletes `key`'s value in `window`.
    pub fn delete(&mut self, key: &K, window: Window) -> Result<(), ProcessError> {
        self.inner.delete(&Windowed {
            key: key.clone(),
            window,
        })
    }

    /// `key`'s windows starting in `[from, to]`, by start time.
    pub fn fetch(
        &self,
        key: &K,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Window, V)>, ProcessError> {
        Ok(fetch_key_range(&self.inner, key, from, to)?
            .into_iter()
            .map(|(k, v)| (k.window, v))
            .collect())
    }

    /// Every key's windows starting in `[from, to]` (scans the store), in
    /// the encoding's order: by key length, key bytes, then window.
    pub fn fetch_all(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Windowed<K>, V)>, ProcessError> {
        Ok(self
            .inner
            .all()?
            .into_iter()
            .filter(|(k, _)| (from..=to).contains(&k.window.start))
            .collect())
    }
}

/// Aggregates per key and session (a window whose end is its last record's
/// time plus one).
pub struct SessionStore<'a, K, V> {
    inner: KeyValueStore<'a, Windowed<K>, V>,
}

impl<'a, K: Data, V: Data> SessionStore<'a, K, V> {
    /// Wraps a key-value store keyed by windowed keys.
    pub fn new(inner: KeyValueStore<'a, Windowed<K>, V>) -> Self {
        SessionStore { inner }
    }

    /// `key`'s sessions that end at or after `earliest_end` and start at or
    /// before `latest_start`, by start time: the sessions a new record may
    /// merge with.
    pub fn find_sessions(
        &self,
        key: &K,
        earliest_end: Timestamp,
        latest_start: Timestamp,
    ) -> Result<Vec<(Windowed<K>, V)>, ProcessError> {
        Ok(self
            .inner
            .range(
                &lower(key, i64::MIN),
                &lower(key, latest_start.saturating_add(1)),
            )?
            .into_iter()
            .filter(|(k, _)| k.window.end >= earliest_end && k.window.start <= latest_start)
            .collect())
    }

    /// Stores a session's aggregate.
    pub fn put(&mut self, session: &Windowed<K>, value: &V) -> Result<(), ProcessError> {
        self.inner.put(session, value)
    }

    /// Removes a session (merged into another).
    pub fn remove(&mut self, session: &Windowed<K>) -> Result<(), ProcessError> {
        self.inner.delete(session)
    }

    /// The aggregate of one session.
    pub fn get(&self, session: &Windowed<K>) -> Result<Option<V>, ProcessError> {
        self.inner.get(session)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::serdes::{Json, Utf8};
    use crate::store::{KeyValueBytes, StoreResult, StoreSpec, erase_serde};
    use crate::window::WindowedSerde;

    #[derive(Default)]
    struct Bytes(BTreeMap<Vec<u8>, Vec<u8>>);

    impl KeyValueBytes for Bytes {
        fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
            Ok(self.0.get(key).cloned())
        }
        fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
            match value {
                Some(v) => self.0.insert(key.to_vec(), v.to_vec()),
                None => self.0.remove(key),
            };
            Ok(())
        }
        fn range(
            &self,
            from: Option<&[u8]>,
            to: Option<&[u8]>,
        ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
            Ok(self
                .0
                .iter()
                .filter(|(k, _)| from.is_none_or(|f| k.as_slice() >= f))
                .filter(|(k, _)| to.is_none_or(|t| k.as_slice() < t))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
        fn len(&self) -> StoreResult<usize> {
            Ok(self.0.len())
        }
    }

    fn spec() -> StoreSpec {
        let key: Arc<dyn crate::serdes::Serde<Windowed<String>>> =
            Arc::new(WindowedSerde(Arc::new(Utf8)));
        let value: Arc<dyn crate::serdes::Serde<i64>> = Arc::new(Json::<i64>::new());
        StoreSpec {
            name: "w".into(),
            logged: false,
            key_serde: erase_serde(key),
            value_serde: erase_serde(value),
            global: false,
        }
    }

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn fetch_walks_one_keys_windows_by_start_including_negative_times() -> Result<(), ProcessError>
    {
        let spec = spec();
        let mut bytes = Bytes::default();
        let mut store = WindowStore::<String, i64>::new(KeyValueStore::new(&spec, &mut bytes)?);
        let (a, ab, b) = ("a".to_string(), "ab".to_string(), "b".to_string());
        for start in [-100, 0, 100, 200, 300] {
            store.put(&a, w(start, start + 100), &start)?;
        }
        // Keys that share a prefix or sort next to "a" stay out of its range.
        store.put(&ab, w(100, 200), &-1)?;
        store.put(&b, w(100, 200), &-2)?;
        let starts =
            |v: Vec<(Window, i64)>| v.into_iter().map(|(w, _)| w.start).collect::<Vec<_>>();
        assert_eq!(starts(store.fetch(&a, 0, 200)?), vec![0, 100, 200]);
        assert_eq!(starts(store.fetch(&a, -500, -1)?), vec![-100]);
        assert_eq!(starts(store.fetch(&a, i64::MIN, i64::MAX)?).len(), 5);
        assert!(store.fetch(&a, 201, 299)?.is_empty());
        assert!(store.fetch(&a, 10, 0)?.is_empty());
        assert_eq!(store.get(&a, w(100, 200))?, Some(100));
        store.delete(&a, w(100, 200))?;
        assert_eq!(starts(store.fetch(&a, 0, 200)?), vec![0, 200]);
        let all = store.fetch_all(100, 100)?;
        assert_eq!(
            all.into_iter().map(|(k, v)| (k.key, v)).collect::<Vec<_>>(),
            // Length-prefixed keys: shorter keys first.
            vec![("b".to_string(), -2), ("ab".to_string(), -1)]
        );
        Ok(())
    }

    #[test]
    fn sessions_are_found_by_overlap_and_merged_by_the_caller() -> Result<(), ProcessError> {
        let spec = spec();
        let mut bytes = Bytes::default();
        let mut store = SessionStore::<String, i64>::new(KeyValueStore::new(&spec, &mut bytes)?);
        let key = "u".to_string();
        let s = |start, end| Windowed {
            key: key.clone(),
            window: w(start, end),
        };
        store.put(&s(0, 10), &1)?;
        store.put(&s(20, 30), &2)?;
        store.put(&s(50, 60), &3)?;
        // A record at 25 with a gap of 10 touches sessions ending >= 15 and
        // starting <= 35.
        let found = store.find_sessions(&key, 15, 35)?;
        assert_eq!(found, vec![(s(20, 30), 2)]);
        // One at 15 with a gap of 10 bridges the first two: merge them.
        let found = store.find_sessions(&key, 5, 25)?;
        assert_eq!(found.len(), 2);
        let merged: i64 = found.iter().map(|(_, v)| v).sum();
        for (session, _) in &found {
            store.remove(session)?;
        }
        store.put(&s(0, 30), &merged)?;
        assert_eq!(store.find_sessions(&key, i64::MIN, i64::MAX)?.len(), 2);
        assert_eq!(store.get(&s(0, 30))?, Some(3));
        Ok(())
    }
}
