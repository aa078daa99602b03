//! Why a stream thread stops.

use super::*;

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A source topic does not exist; create it first.
    #[error("source topic {topic:?} does not exist; create it before starting the application")]
    MissingSourceTopic {
        /// The topic.
        topic: String,
    },
    /// The inputs of a sub-topology differ in partition count.
    #[error(
        "the input topics of sub-topology {subtopology} must have the same number of partitions \
         (co-partitioning), but have: {counts}"
    )]
    NotCopartitioned {
        /// The sub-topology.
        subtopology: u32,
        /// `topic: partitions` for each input.
        counts: String,
    },
    /// A store failed outside a task (global stores).
    #[error("store {store} failed")]
    Store {
        /// The store.
        store: String,
        /// What failed.
        source: brook_topology::store::StoreError,
    },
    /// A global store's update failed.
    #[error("global store {store} failed")]
    Global {
        /// The store.
        store: String,
        /// What went wrong.
        source: Box<TaskError>,
    },
    /// A task failed.
    #[error("task {task} failed")]
    Task {
        /// The task.
        task: TaskId,
        /// What went wrong.
        source: Box<TaskError>,
    },
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A [`FaultInjector`] stopped the thread here (tests).
    #[error("injected fault at {0:?}")]
    InjectedFault(FaultPoint),
}

impl RuntimeError {
    /// Whether the failure may go away by itself: the cluster or the
    /// schema registry could not be reached. By default an instance then
    /// replaces the failed thread after a pause (its tasks resume from
    /// their last commit), for up to [`StreamsConfig::retry_timeout`].
    pub fn is_retryable(&self) -> bool {
        match self {
            RuntimeError::Cluster(e) => e.is_retryable(),
            RuntimeError::Task { source, .. } | RuntimeError::Global { source, .. } => {
                matches!(**source, TaskError::Unavailable { .. })
            }
            _ => false,
        }
    }
}
