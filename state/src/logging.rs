//! The change-logging layer: every write is also recorded for the store's
//! changelog topic.

use brook_topology::store::{KeyValueBytes, StoreResult};

/// One write: the key and its new value (`None`: deleted, a tombstone in the
/// compacted changelog).
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// Wraps a store and records its writes until [`take_changes`](Self::take_changes).
#[derive(Debug, Default)]
pub struct ChangeLogged<S> {
    inner: S,
    pending: Vec<Change>,
    logging: bool,
}

impl<S: KeyValueBytes> ChangeLogged<S> {
    /// Records the writes to `inner` when `logging` is true.
    pub fn new(inner: S, logging: bool) -> Self {
        ChangeLogged {
            inner,
            pending: Vec::new(),
            logging,
        }
    }

    /// The writes since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }

    /// Applies a changelog record without logging it again (restore).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        self.inner.put(key, value)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: KeyValueBytes> KeyValueBytes for ChangeLogged<S> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        self.inner.put(key, value)?;
        // Logged only once the write took effect.
        if self.logging {
            self.pending.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
        Ok(())
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.range(from, to)
    }

    fn len(&self) -> StoreResult<usize> {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKeyValueStore;

    #[test]
    fn writes_are_logged_in_order_and_restores_are_not() -> StoreResult<()> {
        let mut store = ChangeLogged::new(InMemoryKeyValueStore::new(), true);
        store.put(b"k", Some(b"1"))?;
        store.put(b"k", None)?;
        store.restore(b"r", Some(b"x"))?;
        assert_eq!(
            store.take_changes(),
            vec![(b"k".to_vec(), Some(b"1".to_vec())), (b"k".to_vec(), None)]
        );
        assert!(store.take_changes().is_empty());
        assert_eq!(store.get(b"r")?, Some(b"x".to_vec()));
        let mut quiet = ChangeLogged::new(InMemoryKeyValueStore::new(), false);
        quiet.put(b"k", Some(b"1"))?;
        assert!(quiet.take_changes().is_empty());
        Ok(())
    }
}
