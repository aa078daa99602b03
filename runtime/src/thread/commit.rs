//! The commit cycle: sending output, committing offsets or the
//! transaction, applying store writes, checkpoints.

use super::*;

impl StreamThread {
    pub(super) fn exactly_once(&self) -> bool {
        self.config.guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    pub(super) fn fault(&self, point: FaultPoint) -> Result<(), RuntimeError> {
        match &self.faults {
            Some(f) if f.inject(point) => Err(RuntimeError::InjectedFault(point)),
            _ => Ok(()),
        }
    }

    pub(super) fn send(&mut self, record: ProducedRecord) -> Result<(), RuntimeError> {
        if self.exactly_once() && !self.in_transaction {
            self.producer.begin_transaction()?;
            self.in_transaction = true;
        }
        self.dirty = true;
        self.producer.send(record)?;
        self.io.records_out += 1;
        Ok(())
    }

    pub(super) fn send_output(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.has_output())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(mut output) = self.tasks.get_mut(&id).map(StreamTask::take_output) else {
                continue;
            };
            for record in output.drain(..) {
                self.send(record)?;
            }
            // The emptied buffer back, so the next batch does not grow a
            // new one.
            if let Some(task) = self.tasks.get_mut(&id) {
                task.recycle_output(output);
            }
        }
        Ok(())
    }

    /// Commits: writes all output and the stores' changelog records, then
    /// commits the consumed offsets (in the transaction, exactly-once),
    /// then applies the stores' buffered writes locally and checkpoints.
    pub fn commit(&mut self) -> Result<(), RuntimeError> {
        for (id, task) in &mut self.tasks {
            task.flush_processors()
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
            task.prepare_commit();
        }
        let offsets: BTreeMap<TopicPartition, i64> = self
            .tasks
            .values()
            .flat_map(StreamTask::committable_offsets)
            .collect();
        let has_output = self.tasks.values().any(|t| t.has_output());
        if !self.dirty && !has_output && offsets == self.committed {
            self.last_commit = self.wall_clock;
            // Idle: the lag may still have changed (new input not yet
            // fetched, or none left).
            return self.maybe_measure_lag();
        }
        self.fault(FaultPoint::BeforeProduce)?;
        let started = Instant::now();
        self.send_output()?;
        let app = self.config.application_id.clone();
        if self.exactly_once() {
            if !self.in_transaction {
                self.producer.begin_transaction()?;
                self.in_transaction = true;
            }
            self.producer.flush()?;
            // (Since `started`: the last sends, then the flush.)
            let flushed = started.elapsed();
            self.fault(FaultPoint::AfterProduce)?;
            if !offsets.is_empty() {
                let member = self.consumer.group_metadata();
                self.producer
                    .send_offsets_to_transaction(&app, &offsets, member.as_ref())?;
            }
            let offsets_sent = started.elapsed();
            self.fault(FaultPoint::AfterSendOffsets)?;
            self.fault(FaultPoint::BeforeCommit)?;
            self.producer.commit_transaction()?;
            self.in_transaction = false;
            tracing::debug!(
                send_and_flush_us = flushed.as_micros() as u64,
                send_offsets_us = (offsets_sent - flushed).as_micros() as u64,
                commit_us = (started.elapsed() - offsets_sent).as_micros() as u64,
                "transaction committed"
            );
        } else {
            self.producer.flush()?;
            self.fault(FaultPoint::AfterProduce)?;
            self.fault(FaultPoint::BeforeCommit)?;
            if !offsets.is_empty() {
                self.consumer.commit(&offsets)?;
            }
        }
        self.committed = offsets;
        self.dirty = false;
        self.fault(FaultPoint::AfterCommit)?;
        let written = self.producer.written_offsets();
        for (id, task) in &mut self.tasks {
            task.commit_local(&written)
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
        }
        self.fault(FaultPoint::AfterLocalApply)?;
        for (id, task) in &mut self.tasks {
            task.committed_processors()
                .map_err(|source| RuntimeError::Task {
                    task: *id,
                    source: Box::new(source),
                })?;
        }
        self.fault(FaultPoint::AfterCommittedHooks)?;
        let due: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, task)| {
                let since = position_sum(task) - self.checkpointed.get(id).copied().unwrap_or(0);
                since > 0
                    && u64::try_from(since).unwrap_or(0) >= self.config.checkpoint_interval_records
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.checkpoint(*id)?;
        }
        if !due.is_empty() {
            self.fault(FaultPoint::AfterCheckpoint)?;
        }
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.io.commits += 1;
        self.io.commit_nanos = self.io.commit_nanos.saturating_add(took);
        self.io.commit_max_nanos = self.io.commit_max_nanos.max(took);
        self.maybe_measure_lag()?;
        self.last_commit = self.wall_clock;
        Ok(())
    }

    /// Measures the lag if the last measurement is 5 s old.
    pub(super) fn maybe_measure_lag(&mut self) -> Result<(), RuntimeError> {
        if self.wall_clock.saturating_sub(self.lag_measured) >= 5_000 {
            self.lag_measured = self.wall_clock;
            self.measure_lag()?;
        }
        Ok(())
    }

    /// Flushes a task's stores and writes its checkpoint (with a state
    /// directory; a no-op for in-memory stores).
    pub(super) fn checkpoint(&mut self, id: TaskId) -> Result<(), RuntimeError> {
        let (Some(state), Some(task)) = (&self.state, self.tasks.get_mut(&id)) else {
            return Ok(());
        };
        task.flush_stores().map_err(|source| RuntimeError::Task {
            task: id,
            source: Box::new(source),
        })?;
        let mut checkpoint = Checkpoint::default();
        for (store, tp, position) in task.changelog_positions() {
            checkpoint.set(&store, &tp.topic, tp.partition, position);
        }
        checkpoint.write(&state.checkpoint_path(&id.to_string()))?;
        self.checkpointed.insert(id, position_sum(task));
        Ok(())
    }
}
