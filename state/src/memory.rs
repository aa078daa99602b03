//! A key-value store in a `BTreeMap`: ordered by key bytes, no persistence
//! (it is rebuilt from its changelog on start).

use std::collections::BTreeMap;
use std::ops::Bound;

use brook_topology::store::{KeyValueBytes, StoreResult, is_empty_range};

/// An in-memory, ordered key-value store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InMemoryKeyValueStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl InMemoryKeyValueStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryKeyValueStore::default()
    }
}

impl KeyValueBytes for InMemoryKeyValueStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        match value {
            Some(value) => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
            None => {
                self.entries.remove(key);
            }
        }
        Ok(())
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        if is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        Ok(self
            .entries
            .range::<[u8], _>((lower, upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn len(&self) -> StoreResult<usize> {
        Ok(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_store_behaves_like_every_store() -> StoreResult<()> {
        crate::conformance::check(&mut InMemoryKeyValueStore::new())
    }
}
