//! Task management (Kafka Streams' TaskManager): which tasks a thread
//! runs, creating and restoring them, and group rebalances.

use super::*;

impl StreamThread {
    /// Every task of the topology.
    pub(super) fn all_task_ids(&self) -> Vec<TaskId> {
        let mut ids = Vec::new();
        for sub in self.topology.subtopologies() {
            let Some(partitions) = sub.source_topics.first().and_then(|t| self.counts.get(t))
            else {
                continue;
            };
            for partition in 0..*partitions {
                ids.push(TaskId {
                    subtopology: sub.id,
                    partition,
                });
            }
        }
        ids
    }

    /// The task reading `tp`, if the topology reads its topic.
    pub(super) fn task_of(&self, tp: &TopicPartition) -> Option<TaskId> {
        let app = &self.config.application_id;
        self.topology
            .subtopologies()
            .iter()
            .find(|s| s.source_topics.iter().any(|t| *t.resolve(app) == *tp.topic))
            .map(|s| TaskId {
                subtopology: s.id,
                partition: tp.partition,
            })
    }

    /// Creates, restores and initializes tasks.
    pub(super) fn add_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        let app = self.config.application_id.clone();
        let bad_records = self.config.bad_records();
        for &id in ids {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let Some(sub) = self
                .topology
                .subtopologies()
                .iter()
                .find(|s| s.id == id.subtopology)
            else {
                continue;
            };
            let task_name = id.to_string();
            let mut existed = Vec::new();
            let checkpoint = match &self.state {
                Some(state) => {
                    state
                        .task_dir(&task_name)
                        .map_err(|source| RuntimeError::Store {
                            store: format!("(task {id} directory)"),
                            source,
                        })?;
                    match Checkpoint::read(&state.checkpoint_path(&task_name)) {
                        Ok(c) => c,
                        Err(CheckpointError::Corrupt { path, reason }) => {
                            tracing::warn!(task = %id, path = %path.display(), reason, "ignoring a corrupt checkpoint; restoring from the beginning of the changelogs");
                            None
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => None,
            };
            let (state, env) = (&self.state, &self.rocksdb);
            let mut open_store = |spec: &brook_topology::store::StoreSpec| -> brook_state::StoreResult<Box<dyn KeyValueBytes>> {
                match (state, env) {
                    (Some(state), Some(env)) => {
                        let path = state.store_path(&task_name, &spec.name);
                        if path.exists() {
                            existed.push(spec.name.clone());
                        }
                        Ok(Box::new(RocksDbKeyValueStore::open(path, env)?))
                    }
                    _ => Ok(Box::new(InMemoryKeyValueStore::new())),
                }
            };
            let mut task = StreamTask::new(
                &self.topology,
                sub,
                id.partition,
                &app,
                &bad_records,
                &self.global_stores,
                &mut open_store,
            )
            .map_err(task_error(id))?;
            // Stores first, then processors: init may read its stores.
            self.changelogs.restore(
                &mut task,
                checkpoint.as_ref(),
                &|store: &str| existed.iter().any(|s| s == store),
                self.faults.as_deref(),
            )?;
            task.init(self.wall_clock).map_err(task_error(id))?;
            for tp in task.partitions() {
                self.routes.insert(tp.clone(), id);
            }
            self.tasks.insert(id, task);
            self.checkpoint(id)?;
        }
        Ok(())
    }

    /// Commits, checkpoints and closes tasks this thread no longer owns.
    pub(super) fn remove_tasks(&mut self, ids: &[TaskId]) -> Result<(), RuntimeError> {
        if ids.iter().all(|id| !self.tasks.contains_key(id)) {
            return Ok(());
        }
        if let Err(e) = self.commit() {
            if self.exactly_once() {
                return Err(e);
            }
            // At-least-once: the new owner processes the uncommitted
            // records again; nothing is lost.
            tracing::warn!(error = %e, "could not commit the tasks being revoked; their new owner will process their uncommitted records again");
        }
        for id in ids {
            if self.tasks.contains_key(id) {
                self.checkpoint(*id)?;
            }
            if let Some(mut task) = self.tasks.remove(id) {
                task.close();
                self.retired.add(&task.metrics());
                self.routes.retain(|_, t| t != id);
                self.checkpointed.remove(id);
                for tp in task.partitions() {
                    self.committed.remove(tp);
                }
            }
        }
        Ok(())
    }

    /// Applies what the consumer group changed, if anything: tasks of
    /// revoked partitions are committed and closed, tasks of assigned ones
    /// created and restored before they process anything.
    pub(super) fn rebalance(&mut self) -> Result<(), RuntimeError> {
        let Some(change) = self.consumer.take_rebalance()? else {
            return Ok(());
        };
        self.rebalances += 1;
        let revoked: Vec<TaskId> = change
            .revoked
            .iter()
            .filter_map(|tp| self.task_of(tp))
            .collect();
        self.remove_tasks(&revoked)?;
        let mut assigned: Vec<TaskId> = change
            .assigned
            .iter()
            .filter_map(|tp| self.task_of(tp))
            .collect();
        assigned.sort();
        assigned.dedup();
        self.add_tasks(&assigned)?;
        tracing::info!(
            generation = change.generation,
            revoked = revoked.len(),
            assigned = assigned.len(),
            tasks = self.tasks.len(),
            "rebalanced"
        );
        Ok(())
    }
}
