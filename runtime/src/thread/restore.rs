//! Restoring stores from their changelogs (Kafka Streams'
//! StoreChangelogReader): listeners, progress, where a restore starts.

use super::*;

/// Hears about restoration progress (as Kafka Streams' `StateRestoreListener`).
pub trait RestoreListener: Send + Sync {
    /// Restoring `store` of `task` from `changelog`, offsets `from..to`.
    fn on_restore_start(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _from: i64,
        _to: i64,
    ) {
    }
    /// A batch was written; `restored` records so far, `remaining` to go.
    fn on_batch_restored(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _restored: u64,
        _remaining: u64,
    ) {
    }
    /// Done: `restored` records in `elapsed`.
    fn on_restore_end(
        &self,
        _task: TaskId,
        _store: &str,
        _changelog: &TopicPartition,
        _restored: u64,
        _elapsed: Duration,
    ) {
    }
}

/// The default listener: logs start, progress (at most every 5 s) and end,
/// with records per second.
#[derive(Debug, Default)]
pub struct LoggingRestoreListener {
    last: std::sync::Mutex<Option<Instant>>,
}

impl RestoreListener for LoggingRestoreListener {
    fn on_restore_start(
        &self,
        task: TaskId,
        store: &str,
        changelog: &TopicPartition,
        from: i64,
        to: i64,
    ) {
        tracing::info!(%task, store, %changelog, from, to, "restoring {} records", to - from);
    }

    fn on_batch_restored(
        &self,
        task: TaskId,
        store: &str,
        _changelog: &TopicPartition,
        restored: u64,
        remaining: u64,
    ) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            tracing::info!(%task, store, restored, remaining, "restoring");
        }
    }

    fn on_restore_end(
        &self,
        task: TaskId,
        store: &str,
        changelog: &TopicPartition,
        restored: u64,
        elapsed: Duration,
    ) {
        let rate = restored as f64 / elapsed.as_secs_f64().max(1e-9);
        tracing::info!(%task, store, %changelog, restored, records_per_sec = rate as u64, "restored");
    }
}

/// Restoration so far, over all stores of a thread.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RestoreMetrics {
    /// Changelog records applied.
    pub records: u64,
    /// Time spent restoring.
    pub elapsed: Duration,
    /// Stores restored (including ones with nothing to replay).
    pub stores: u64,
}

impl RestoreMetrics {
    /// Records per second while restoring.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Restores tasks' stores from their changelog partitions (Kafka Streams'
/// StoreChangelogReader): one consumer of its own, assigned and seeked per
/// store, a listener told of the progress, and the thread's restore
/// metrics. The thread also asks it for end offsets (its consumer is idle
/// between restores, so those queries do not wait behind fetches).
pub(super) struct ChangelogReader {
    consumer: Box<dyn ClusterConsumer>,
    listener: Arc<dyn RestoreListener>,
    metrics: RestoreMetrics,
}

impl ChangelogReader {
    pub(super) fn new(
        consumer: Box<dyn ClusterConsumer>,
        listener: Arc<dyn RestoreListener>,
    ) -> Self {
        ChangelogReader {
            consumer,
            listener,
            metrics: RestoreMetrics::default(),
        }
    }

    /// Restores every store of `task` from its changelog: from its
    /// checkpointed offset when its local state survived (`existed`), else
    /// from the beginning, to the changelog's end.
    pub(super) fn restore(
        &mut self,
        task: &mut StreamTask,
        checkpoint: Option<&Checkpoint>,
        existed: &dyn Fn(&str) -> bool,
        faults: Option<&dyn FaultInjector>,
    ) -> Result<(), RuntimeError> {
        restore_task(
            self.consumer.as_mut(),
            task,
            checkpoint,
            existed,
            self.listener.as_ref(),
            faults,
            &mut self.metrics,
        )
    }

    /// The end offsets of `partitions`.
    pub(super) fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, RuntimeError> {
        Ok(self.consumer.end_offsets(partitions)?)
    }

    /// Restoration so far.
    pub(super) fn metrics(&self) -> RestoreMetrics {
        self.metrics
    }
}

/// Where a store's restore starts: its checkpointed offset if its local
/// state survived, else the beginning.
pub(super) fn restore_start(
    checkpoint: Option<&Checkpoint>,
    existed: &dyn Fn(&str) -> bool,
    store: &str,
    tp: &TopicPartition,
) -> i64 {
    match checkpoint.and_then(|c| c.offset(&tp.topic, tp.partition)) {
        Some(entry) if existed(store) => entry.offset,
        _ => 0,
    }
}

/// Reads changelog partition `tp` from offset `from` to `end` in batches
/// of up to 10 000 `(key, value)` records, handing each to `apply` with
/// the offset after it and the records read so far; then stops fetching
/// (an idle consumer answers offset queries at once, a fetching one queues
/// them behind its long polls). `what` names the work in errors. Returns
/// the records read.
pub(crate) fn replay_changelog(
    consumer: &mut dyn ClusterConsumer,
    tp: &TopicPartition,
    from: i64,
    end: i64,
    what: &str,
    mut apply: impl FnMut(&[(Vec<u8>, Option<Vec<u8>>)], i64, u64) -> Result<(), RuntimeError>,
) -> Result<u64, RuntimeError> {
    const BATCH: usize = 10_000;
    consumer.assign(std::slice::from_ref(tp))?;
    consumer.seek(tp, from)?;
    let mut read = 0u64;
    let mut idle_polls = 0;
    let mut progress = Instant::now();
    loop {
        let position = consumer.position(tp)?;
        if position >= end {
            break;
        }
        let records = consumer.poll(BATCH)?;
        if records.is_empty() {
            idle_polls += 1;
            // Nothing for a while below the end offset the broker gave: its
            // leader is away, most likely (killed mid-restore, say). That
            // mends: the thread is replaced and restores again, until the
            // retry timeout.
            if idle_polls > 100 && progress.elapsed() > Duration::from_secs(10) {
                return Err(ClusterError::Unavailable(format!(
                    "{what}: {tp} stopped at offset {position}, expected {end}; \
                     nothing read for {} s",
                    progress.elapsed().as_secs()
                ))
                .into());
            }
            continue;
        }
        idle_polls = 0;
        progress = Instant::now();
        let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = records
            .into_iter()
            .filter(|r| r.offset < end)
            .map(|r| (r.key.unwrap_or_default(), r.value))
            .collect();
        read += batch.len() as u64;
        let next = consumer.position(tp)?.min(end);
        apply(&batch, next, read)?;
    }
    consumer.assign(&[])?;
    Ok(read)
}

/// Replays the changelog of every logged store of `task` from where its
/// local state ends to the changelog's end, in batches.
#[allow(clippy::too_many_arguments)]
fn restore_task(
    consumer: &mut dyn ClusterConsumer,
    task: &mut StreamTask,
    checkpoint: Option<&Checkpoint>,
    existed: &dyn Fn(&str) -> bool,
    listener: &dyn RestoreListener,
    faults: Option<&dyn FaultInjector>,
    metrics: &mut RestoreMetrics,
) -> Result<(), RuntimeError> {
    let task_err = |id, source| RuntimeError::Task {
        task: id,
        source: Box::new(source),
    };
    let id = task.id();
    for (store, tp) in task.changelog_partitions() {
        let started = Instant::now();
        let end = consumer.end_offsets(std::slice::from_ref(&tp))?[&tp];
        let mut from = restore_start(checkpoint, existed, &store, &tp);
        if from > end {
            // The changelog is shorter than local state says (it was
            // deleted and recreated): local state cannot be trusted.
            tracing::warn!(task = %id, store, %tp, checkpoint = from, end, "changelog is behind the checkpoint; rebuilding the store from scratch");
            task.clear_store(&store).map_err(|e| task_err(id, e))?;
            from = 0;
        }
        metrics.stores += 1;
        if from == end {
            task.restore_batch(&store, &[], end)
                .map_err(|e| task_err(id, e))?;
            continue;
        }
        listener.on_restore_start(id, &store, &tp, from, end);
        let what = format!("restoring store {store} of task {id}");
        let restored = replay_changelog(consumer, &tp, from, end, &what, |batch, next, so_far| {
            task.restore_batch(&store, batch, next)
                .map_err(|e| task_err(id, e))?;
            listener.on_batch_restored(
                id,
                &store,
                &tp,
                so_far,
                u64::try_from(end - next).unwrap_or(0),
            );
            if faults.is_some_and(|f| f.inject(FaultPoint::DuringRestore)) {
                return Err(RuntimeError::InjectedFault(FaultPoint::DuringRestore));
            }
            Ok(())
        })?;
        task.restore_batch(&store, &[], end)
            .map_err(|e| task_err(id, e))?;
        let elapsed = started.elapsed();
        metrics.records += restored;
        metrics.elapsed += elapsed;
        listener.on_restore_end(id, &store, &tp, restored, elapsed);
    }
    Ok(())
}
