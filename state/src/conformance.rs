//! Behaviour every `KeyValueBytes` implementation must have, checked by the
//! tests of each one.

use brook_topology::store::{KeyValueBytes, StoreResult};

/// Put, get, delete, ordered half-open ranges, length.
pub(crate) fn check(store: &mut dyn KeyValueBytes) -> StoreResult<()> {
    assert!(store.is_empty()?);
    for key in [&b"b"[..], b"a", b"c", b"ab"] {
        store.put(key, Some(key))?;
    }
    assert_eq!(store.get(b"ab")?, Some(b"ab".to_vec()));
    assert_eq!(store.get(b"zz")?, None);
    let keys = |r: Vec<(Vec<u8>, Vec<u8>)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.range(None, None)?),
        vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        keys(store.range(Some(b"ab"), Some(b"c"))?),
        vec![b"ab".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        keys(store.range(Some(b"b"), None)?),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(keys(store.range(None, Some(b"ab"))?), vec![b"a".to_vec()]);
    assert!(store.range(Some(b"c"), Some(b"a"))?.is_empty());
    store.put(b"a", Some(b"new"))?;
    assert_eq!(store.get(b"a")?, Some(b"new".to_vec()));
    store.put(b"a", None)?;
    assert_eq!(store.get(b"a")?, None);
    assert_eq!(store.len()?, 3);
    Ok(())
}
