//! The error and data types every layer of a topology shares: what a
//! key or value must be ([`Data`]), why a store operation failed
//! ([`StoreError`]) and why processing failed ([`ProcessError`]). A leaf
//! module: processors, stores and window stores depend on it, it on none
//! of them.

use std::error::Error;

use crate::serdes::SerdeError;

/// What can flow through a topology as a key or value.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// A storage failure (I/O, corruption, a closed store). The task cannot
/// continue; its uncommitted work is discarded and restarts from the last commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct StoreError {
    /// What was attempted (`get`, `put`, `range`, `open`, ...).
    pub operation: &'static str,
    /// What the storage engine said.
    pub message: String,
}

impl StoreError {
    /// A failure of `operation`.
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        StoreError {
            operation,
            message: message.into(),
        }
    }
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why processing a record failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A key or value could not be (de)serialized.
    #[error("{context}")]
    Serde {
        /// Where: topic, partition, offset, key or value.
        context: String,
        /// What the serde said.
        source: SerdeError,
    },
    /// A processor got a type it was not built for: a bug in the wiring.
    #[error("expected a {expected} (a processor received a type it was not built for)")]
    TypeMismatch {
        /// The type it expected.
        expected: &'static str,
    },
    /// `forward_to` named a child that does not exist.
    #[error("no child processor named {child:?}")]
    UnknownChild {
        /// The name given.
        child: String,
    },
    /// A processor asked for a store it is not connected to.
    #[error("no store named {store:?} is connected to this processor")]
    UnknownStore {
        /// The name asked for.
        store: String,
    },
    /// A store operation failed (I/O, corruption).
    #[error("store {store:?}")]
    Store {
        /// The store.
        store: String,
        /// What failed.
        source: StoreError,
    },
    /// A processor tried to write a read-only (global) store.
    #[error("store {store:?} is a global store: read-only for processors")]
    ReadOnlyStore {
        /// The store.
        store: String,
    },
    /// A store was asked for with other key or value types than it has.
    #[error("store {store:?} does not hold {expected}")]
    StoreType {
        /// The store.
        store: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// A user processor failed.
    #[error(transparent)]
    User(Box<dyn Error + Send + Sync>),
}

impl ProcessError {
    /// Wraps any error from user code.
    pub fn user(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ProcessError::User(error.into())
    }
}
