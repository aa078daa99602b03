//! The commit cycle (Kafka Streams' StreamsProducer with the commit of its
//! TaskManager): sending output, in a transaction when exactly-once,
//! committing the consumed offsets or the transaction, then having the
//! tasks apply their store writes and checkpoint.

use super::*;

/// Owns the thread's producer: everything the thread writes goes through
/// here, and here it is committed.
pub(super) struct Committer {
    producer: Box<dyn ClusterProducer>,
    application_id: String,
    exactly_once: bool,
    faults: Option<Arc<dyn FaultInjector>>,
    /// Exactly-once: a transaction is open.
    in_transaction: bool,
    /// Records processed or output sent since the last commit.
    dirty: bool,
    /// Offsets committed last, to skip empty commits.
    committed: BTreeMap<TopicPartition, i64>,
    /// Records sent: results, changelog records, dead letters.
    records_out: u64,
    /// Commits that wrote something, their total and longest time, ns.
    commits: u64,
    commit_nanos: u64,
    commit_max_nanos: u64,
}

/// What [`Committer::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Nothing was processed or sent and no offset moved since the last one.
    Idle,
    /// Output, offsets and store writes committed.
    Committed,
}

impl Committer {
    pub(super) fn new(
        producer: Box<dyn ClusterProducer>,
        config: &StreamsConfig,
        faults: Option<Arc<dyn FaultInjector>>,
    ) -> Self {
        Committer {
            producer,
            application_id: config.application_id.clone(),
            exactly_once: config.guarantee == ProcessingGuarantee::ExactlyOnceV2,
            faults,
            in_transaction: false,
            dirty: false,
            committed: BTreeMap::new(),
            records_out: 0,
            commits: 0,
            commit_nanos: 0,
            commit_max_nanos: 0,
        }
    }

    pub(super) fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    pub(super) fn fault(&self, point: FaultPoint) -> Result<(), RuntimeError> {
        fault(self.faults(), point)
    }

    /// The thread's fault injector (crash tests), also asked during restore.
    pub(super) fn faults(&self) -> Option<&dyn FaultInjector> {
        self.faults.as_deref()
    }

    /// A record was handed to a task: the next commit has work.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Sends one record (opening a transaction first, exactly-once).
    pub(super) fn send(&mut self, record: ProducedRecord) -> Result<(), RuntimeError> {
        if self.exactly_once && !self.in_transaction {
            self.producer.begin_transaction()?;
            self.in_transaction = true;
        }
        self.dirty = true;
        self.producer.send(record)?;
        self.records_out += 1;
        Ok(())
    }

    /// Sends what the tasks output.
    pub(super) fn send_output(&mut self, tasks: &mut TaskManager) -> Result<(), RuntimeError> {
        tasks.drain_output(|record| self.send(record))
    }

    /// The committed offsets of `partitions` are forgotten (their tasks
    /// left; a later owner here commits them anew).
    pub(super) fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.committed.remove(tp);
        }
    }

    /// Commits: writes all output and the stores' changelog records, then
    /// commits the consumed offsets (in the transaction, exactly-once, with
    /// `consumer`'s group metadata; else with `consumer`), then has the
    /// tasks apply their stores' buffered writes and checkpoint.
    pub(super) fn commit(
        &mut self,
        tasks: &mut TaskManager,
        consumer: &mut dyn ClusterConsumer,
    ) -> Result<Commit, RuntimeError> {
        let offsets = tasks.prepare_commit()?;
        if !self.dirty && !tasks.has_output() && offsets == self.committed {
            return Ok(Commit::Idle);
        }
        self.fault(FaultPoint::BeforeProduce)?;
        let started = Instant::now();
        self.send_output(tasks)?;
        if self.exactly_once {
            if !self.in_transaction {
                self.producer.begin_transaction()?;
                self.in_transaction = true;
            }
            // The offsets join the transaction while its records are still
            // on their way (as Kafka Streams does: the flush is part of its
            // commitTransaction): the two round trips of
            // send_offsets_to_transaction overlap the produce requests
            // instead of following them.
            let sent = started.elapsed();
            if !offsets.is_empty() {
                let member = consumer.group_metadata();
                self.producer.send_offsets_to_transaction(
                    &self.application_id,
                    &offsets,
                    member.as_ref(),
                )?;
            }
            let offsets_sent = started.elapsed();
            self.fault(FaultPoint::AfterSendOffsets)?;
            self.producer.flush()?;
            let flushed = started.elapsed();
            self.fault(FaultPoint::AfterProduce)?;
            self.fault(FaultPoint::BeforeCommit)?;
            self.producer.commit_transaction()?;
            self.in_transaction = false;
            tracing::debug!(
                send_us = sent.as_micros() as u64,
                send_offsets_us = (offsets_sent - sent).as_micros() as u64,
                flush_us = (flushed - offsets_sent).as_micros() as u64,
                commit_us = (started.elapsed() - flushed).as_micros() as u64,
                "transaction committed"
            );
        } else {
            self.producer.flush()?;
            self.fault(FaultPoint::AfterProduce)?;
            self.fault(FaultPoint::BeforeCommit)?;
            if !offsets.is_empty() {
                consumer.commit(&offsets)?;
            }
        }
        self.committed = offsets;
        self.dirty = false;
        self.fault(FaultPoint::AfterCommit)?;
        let written = self.producer.written_offsets();
        let faults = self.faults.as_deref();
        tasks.complete_commit(&written, |point| fault(faults, point))?;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.commits += 1;
        self.commit_nanos = self.commit_nanos.saturating_add(took);
        self.commit_max_nanos = self.commit_max_nanos.max(took);
        Ok(Commit::Committed)
    }

    /// The producer's part of the thread's metrics.
    pub(super) fn metrics(&self, into: &mut ThreadMetrics) {
        into.records_out = self.records_out;
        into.commits = self.commits;
        into.commit_nanos = self.commit_nanos;
        into.commit_max_nanos = self.commit_max_nanos;
    }
}

/// Fails at `point` if the injector says so.
pub(super) fn fault(
    faults: Option<&dyn FaultInjector>,
    point: FaultPoint,
) -> Result<(), RuntimeError> {
    match faults {
        Some(f) if f.inject(point) => Err(RuntimeError::InjectedFault(point)),
        _ => Ok(()),
    }
}
