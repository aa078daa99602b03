//! A store shared by several tasks: global stores.

use std::sync::{Arc, Mutex, MutexGuard};

use brook_topology::store::{KeyValueBytes, StoreResult};

use crate::InMemoryKeyValueStore;

/// An in-memory store behind a lock, cheap to clone; clones share it.
/// Global stores are written by one updater and read by every task.
#[derive(Debug, Clone, Default)]
pub struct SharedStore(Arc<Mutex<InMemoryKeyValueStore>>);

impl SharedStore {
    /// An empty shared store.
    pub fn new() -> Self {
        SharedStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, InMemoryKeyValueStore> {
        // Each operation is a single map update: a panicking holder cannot
        // leave it half-done.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KeyValueBytes for SharedStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.lock().get(key)
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        self.lock().put(key, value)
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.lock().range(from, to)
    }

    fn len(&self) -> StoreResult<usize> {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_same_entries() -> StoreResult<()> {
        let mut writer = SharedStore::new();
        let reader = writer.clone();
        writer.put(b"k", Some(b"v"))?;
        assert_eq!(reader.get(b"k")?, Some(b"v".to_vec()));
        writer.put(b"k", None)?;
        assert!(reader.is_empty()?);
        Ok(())
    }
}
