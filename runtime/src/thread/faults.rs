//! Fault points for crash tests.

/// A step of the commit cycle or of restore where a test can make the
/// thread fail as if the process had crashed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultPoint {
    /// Records were processed; nothing of this commit was sent yet.
    BeforeProduce,
    /// Outputs and changelog records were sent and flushed (exactly-once:
    /// after [`AfterSendOffsets`](Self::AfterSendOffsets)).
    AfterProduce,
    /// Exactly-once: the offsets were added to the transaction, its
    /// records sent but not yet flushed.
    AfterSendOffsets,
    /// Right before the transaction (or the offsets) commit.
    BeforeCommit,
    /// The cluster committed; local stores were not updated yet.
    AfterCommit,
    /// Local stores were updated; the processors' `committed` hooks have
    /// not run yet.
    AfterLocalApply,
    /// The processors' `committed` hooks ran (an external two-phase commit
    /// published); the checkpoint was not written yet.
    AfterCommittedHooks,
    /// A checkpoint was written.
    AfterCheckpoint,
    /// In the middle of restoring a store (after its first batch).
    DuringRestore,
}

impl FaultPoint {
    /// Every point, in at-least-once cycle order (exactly-once sends the
    /// offsets before it flushes: `AfterSendOffsets` comes first there).
    pub const ALL: [FaultPoint; 9] = [
        FaultPoint::BeforeProduce,
        FaultPoint::AfterProduce,
        FaultPoint::AfterSendOffsets,
        FaultPoint::BeforeCommit,
        FaultPoint::AfterCommit,
        FaultPoint::AfterLocalApply,
        FaultPoint::AfterCommittedHooks,
        FaultPoint::AfterCheckpoint,
        FaultPoint::DuringRestore,
    ];
}

/// Decides whether the thread fails at a [`FaultPoint`] (for crash tests;
/// production threads have none).
pub trait FaultInjector: Send + Sync {
    /// `true`: fail now.
    fn inject(&self, point: FaultPoint) -> bool;
}
