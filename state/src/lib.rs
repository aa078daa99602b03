//! brook-state: where stream processors keep their state.
//!
//! This crate will hold the byte-level stores (RocksDB and in-memory, for
//! key-value, window and session data), the layers on top of them
//! (change-logging to compacted `<application.id>-<store>-changelog` topics,
//! caching, metering), per-task checkpoints, and restore. It is empty until
//! the state-store work lands (issue "Step 3"); it exists now so the
//! workspace has its final shape and dependency direction
//! (`topology` ← `state` ← `runtime`).
