//! brook-state: where stream processors keep their state.
//!
//! Stores are layered, as in Kafka Streams: a byte-level store at the
//! bottom ([`InMemoryKeyValueStore`] today; RocksDB next) and layers that
//! wrap any [`KeyValueBytes`]: [`ChangeLogged`] records every write so the
//! runtime can send it to the store's compacted changelog topic
//! (`<application.id>-<store>-changelog`), from which the store is rebuilt
//! on another instance or after a restart. Processors see typed stores
//! (`brook_topology::KeyValueStore`) on top of these.

mod logging;
mod memory;
mod shared;

pub use brook_topology::store::KeyValueBytes;
pub use logging::{Change, ChangeLogged};
pub use memory::InMemoryKeyValueStore;
pub use shared::SharedStore;
