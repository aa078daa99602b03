//! brook-state: where stream processors keep their state.
//!
//! Stores are layered, as in Kafka Streams: a byte-level store at the
//! bottom ([`InMemoryKeyValueStore`], [`RocksDbKeyValueStore`] with one
//! memory budget per instance, [`RocksDbEnv`]) and layers that
//! wrap any [`KeyValueBytes`]: [`ChangeLogged`] records every write so the
//! runtime can send it to the store's compacted changelog topic
//! (`<application.id>-<store>-changelog`), from which the store is rebuilt
//! on another instance or after a restart. Processors see typed stores
//! (`brook_topology::KeyValueStore`) on top of these.

#[cfg(test)]
mod conformance;
mod logging;
mod memory;
mod rocks;
mod shared;

pub use brook_topology::store::{KeyValueBytes, StoreError, StoreResult};
pub use logging::{Change, ChangeLogged};
pub use memory::InMemoryKeyValueStore;
pub use rocks::{RocksDbConfig, RocksDbEnv, RocksDbKeyValueStore};
pub use shared::SharedStore;
