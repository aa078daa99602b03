//! The transaction buffer: writes stay in memory until the task commits.
//!
//! Local state must only ever hold what the cluster has committed. Under
//! exactly-once, a write reaches the store below (RocksDB) only after the
//! transaction holding its changelog record committed; an abort discards
//! it. Under at-least-once the same rule keeps a crash from leaving local
//! state ahead of its changelog. So after any crash, local state is a
//! prefix of the committed changelog and restore only replays the tail.
//!
//! The buffer also coalesces: a key written many times between two commits
//! is one changelog record (its last value) and one store write. Reads see
//! the buffered writes first, so processors observe their own updates.

use std::collections::BTreeMap;
use std::ops::Bound;

use brook_topology::Timestamp;
use brook_topology::store::{KeyValueBytes, StoreResult, is_empty_range};

/// A buffered write: the new value (`None`: deleted) and the timestamp of
/// the record or punctuation that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The value, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// When it was written (stream time of the write), ms.
    pub timestamp: Timestamp,
}

/// Entry overhead counted against the budget besides key and value bytes.
const ENTRY_OVERHEAD: usize = 48;

/// Wraps a store and keeps writes in memory until [`commit`](Self::commit).
#[derive(Debug, Default)]
pub struct BufferedStore<S> {
    inner: S,
    pending: BTreeMap<Vec<u8>, Pending>,
    bytes: usize,
    timestamp: Timestamp,
}

fn entry_size(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
}

impl<S: KeyValueBytes> BufferedStore<S> {
    /// A buffer in front of `inner`.
    pub fn new(inner: S) -> Self {
        BufferedStore {
            inner,
            pending: BTreeMap::new(),
            bytes: 0,
            timestamp: 0,
        }
    }

    /// The timestamp given to the following writes.
    pub fn set_timestamp(&mut self, timestamp: Timestamp) {
        self.timestamp = timestamp;
    }

    /// The writes not yet committed, one per key, in key order.
    pub fn pending(&self) -> impl Iterator<Item = (&[u8], &Pending)> {
        self.pending.iter().map(|(k, p)| (k.as_slice(), p))
    }

    /// Number of keys with uncommitted writes.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Approximate memory the buffered writes take, bytes.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Applies the buffered writes to the store below in one batch;
    /// returns how many keys were written.
    pub fn commit(&mut self) -> StoreResult<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(k, p)| (k, p.value))
            .collect();
        self.bytes = 0;
        let n = batch.len();
        self.inner.write_batch(&batch)?;
        Ok(n)
    }

    /// Discards the buffered writes.
    pub fn abort(&mut self) {
        self.pending.clear();
        self.bytes = 0;
    }

    /// The store below.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The store below, for restoring (bypasses the buffer).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped store; buffered writes are dropped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: KeyValueBytes> KeyValueBytes for BufferedStore<S> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(p) => Ok(p.value.clone()),
            None => self.inner.get(key),
        }
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        let entry = Pending {
            value: value.map(<[u8]>::to_vec),
            timestamp: self.timestamp,
        };
        self.bytes += entry_size(key, value);
        if let Some(old) = self.pending.insert(key.to_vec(), entry) {
            self.bytes -= entry_size(key, old.value.as_deref());
        }
        Ok(())
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        let base = self.inner.range(from, to)?;
        if self.pending.is_empty() {
            return Ok(base);
        }
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        let mut overlay = self.pending.range::<[u8], _>((lower, upper)).peekable();
        let mut out = Vec::with_capacity(base.len());
        let mut base = base.into_iter().peekable();
        loop {
            let order = match (base.peek(), overlay.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((bk, _)), Some((ok, _))) => bk.as_slice().cmp(ok.as_slice()),
            };
            if order == std::cmp::Ordering::Less {
                if let Some(entry) = base.next() {
                    out.push(entry);
                }
                continue;
            }
            if order == std::cmp::Ordering::Equal {
                // The buffered write replaces the stored entry.
                base.next();
            }
            if let Some((k, p)) = overlay.next()
                && let Some(v) = &p.value
            {
                out.push((k.clone(), v.clone()));
            }
        }
        Ok(out)
    }

    fn len(&self) -> StoreResult<usize> {
        let mut len = self.inner.len()?;
        for (key, p) in &self.pending {
            match (self.inner.get(key)?.is_some(), p.value.is_some()) {
                (false, true) => len += 1,
                (true, false) => len -= 1,
                _ => {}
            }
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKeyValueStore;

    #[test]
    fn buffered_store_behaves_like_every_store() -> StoreResult<()> {
        crate::conformance::check(&mut BufferedStore::new(InMemoryKeyValueStore::new()))?;
        // Also with part of the data committed below the buffer.
        let mut store = BufferedStore::new(InMemoryKeyValueStore::new());
        store.put(b"z", Some(b"z"))?;
        store.commit()?;
        store.put(b"z", None)?;
        crate::conformance::check(&mut store)
    }

    #[test]
    fn writes_reach_the_store_only_on_commit_and_abort_discards_them() -> StoreResult<()> {
        let mut store = BufferedStore::new(InMemoryKeyValueStore::new());
        store.put(b"a", Some(b"1"))?;
        store.put(b"b", Some(b"1"))?;
        store.commit()?;
        store.set_timestamp(7);
        store.put(b"a", Some(b"2"))?;
        store.put(b"a", Some(b"3"))?;
        store.put(b"b", None)?;
        store.put(b"c", Some(b"1"))?;
        // Reads see the buffer; the store below does not.
        assert_eq!(store.get(b"a")?, Some(b"3".to_vec()));
        assert_eq!(store.get(b"b")?, None);
        assert_eq!(store.inner().get(b"a")?, Some(b"1".to_vec()));
        assert_eq!(store.len()?, 2);
        assert_eq!(
            store.range(None, None)?,
            vec![
                (b"a".to_vec(), b"3".to_vec()),
                (b"c".to_vec(), b"1".to_vec())
            ]
        );
        // Coalesced: one pending write per key, the last one.
        let pending: Vec<_> = store
            .pending()
            .map(|(k, p)| (k.to_vec(), p.clone()))
            .collect();
        assert_eq!(
            pending,
            vec![
                (
                    b"a".to_vec(),
                    Pending {
                        value: Some(b"3".to_vec()),
                        timestamp: 7
                    }
                ),
                (
                    b"b".to_vec(),
                    Pending {
                        value: None,
                        timestamp: 7
                    }
                ),
                (
                    b"c".to_vec(),
                    Pending {
                        value: Some(b"1".to_vec()),
                        timestamp: 7
                    }
                ),
            ]
        );
        assert!(store.pending_bytes() > 0);
        store.abort();
        assert_eq!(store.pending_bytes(), 0);
        assert_eq!(store.get(b"a")?, Some(b"1".to_vec()));
        assert_eq!(store.get(b"b")?, Some(b"1".to_vec()));
        assert_eq!(store.len()?, 2);
        store.put(b"a", None)?;
        assert_eq!(store.commit()?, 1);
        assert_eq!(store.inner().get(b"a")?, None);
        Ok(())
    }

    #[test]
    fn pending_bytes_track_replaced_values() -> StoreResult<()> {
        let mut store = BufferedStore::new(InMemoryKeyValueStore::new());
        store.put(b"k", Some(&[0; 100]))?;
        let one = store.pending_bytes();
        store.put(b"k", Some(&[0; 10]))?;
        assert_eq!(store.pending_bytes(), one - 90);
        store.put(b"j", Some(&[0; 10]))?;
        assert_eq!(store.pending_bytes(), 2 * (one - 90));
        Ok(())
    }
}
