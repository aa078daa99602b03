//! brook-state: where stream processors keep their state.
//!
//! Stores are layered, as in Kafka Streams: a byte-level store at the
//! bottom ([`InMemoryKeyValueStore`], [`RocksDbKeyValueStore`] with one
//! memory budget per instance, [`RocksDbEnv`]) and layers that wrap any
//! [`KeyValueBytes`]:
//!
//! - [`BufferedStore`] holds writes until the task commits. Its pending
//!   writes, one per key (coalesced), become the records of the store's
//!   compacted changelog topic (`<application.id>-<store>-changelog`) in
//!   the commit's transaction, and reach the store below only once that
//!   commit succeeded; an abort discards them.
//! - [`MeteredStore`] counts operations and their latency.
//!
//! [`Checkpoint`]s record, per task, the changelog offsets local state
//! reflects, in the task's directory of the [`StateDirectory`]; restore
//! replays only the changelog past them. Processors see typed stores
//! (`brook_topology::KeyValueStore`) on top of all this.

mod buffered;
pub mod checkpoint;
#[cfg(test)]
mod conformance;
pub mod directory;
mod memory;
mod metered;
mod rocks;
mod shared;

pub use brook_topology::store::{KeyValueBytes, StoreError, StoreResult};
pub use buffered::{BufferedStore, Pending};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use directory::StateDirectory;
pub use memory::InMemoryKeyValueStore;
pub use metered::{MeteredStore, OperationMetrics, StoreMetrics};
pub use rocks::{RocksDbConfig, RocksDbEnv, RocksDbKeyValueStore};
pub use shared::SharedStore;
