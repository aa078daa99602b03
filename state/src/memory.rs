//! A key-value store in a `BTreeMap`: ordered by key bytes, no persistence
//! (it is rebuilt from its changelog on start).

use std::collections::BTreeMap;
use std::ops::Bound;

use brook_topology::store::KeyValueBytes;

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
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(value) => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
            None => {
                self.entries.remove(key);
            }
        }
    }

    fn range(&self, from: Option<&[u8]>, to: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Vec::new();
        }
        self.entries
            .range::<[u8], _>((lower, upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_and_ordered_half_open_ranges() {
        let mut store = InMemoryKeyValueStore::new();
        for key in [&b"b"[..], b"a", b"c", b"ab"] {
            store.put(key, Some(key));
        }
        assert_eq!(store.get(b"ab"), Some(b"ab".to_vec()));
        let keys = |r: Vec<(Vec<u8>, Vec<u8>)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(store.range(None, None)),
            vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys(store.range(Some(b"ab"), Some(b"c"))),
            vec![b"ab".to_vec(), b"b".to_vec()]
        );
        assert!(store.range(Some(b"c"), Some(b"a")).is_empty());
        store.put(b"a", None);
        assert_eq!(store.get(b"a"), None);
        assert_eq!(store.len(), 3);
    }
}
