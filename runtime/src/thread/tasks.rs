//! Task management (Kafka Streams' TaskManager): the tasks a thread runs,
//! which input partition feeds which task, creating and restoring tasks,
//! running them in turn, closing the ones the group moves away, and their
//! checkpoints.

use super::*;

/// The tasks of one thread and the state they live in.
pub(super) struct TaskManager {
    topology: Arc<Topology>,
    application_id: String,
    bad_records: BadRecords,
    /// Partition count of every topic the topology reads.
    counts: HashMap<TopicName, i32>,
    tasks: BTreeMap<TaskId, StreamTask>,
    /// Which task reads each input partition.
    routes: HashMap<TopicPartition, TaskId>,
    global_stores: BTreeMap<String, SharedStore>,
    state: Option<Arc<StateDirectory>>,
    rocksdb: Option<RocksDbEnv>,
    /// Changelog positions at each task's last checkpoint.
    checkpointed: BTreeMap<TaskId, i64>,
    checkpoint_interval_records: u64,
    /// Counters of tasks closed here (they moved elsewhere).
    retired: TaskMetrics,
}

/// Sum of the changelog positions of a task (to tell how many changelog
/// records it wrote since the last checkpoint).
fn position_sum(task: &StreamTask) -> i64 {
    task.changelog_positions().iter().map(|(_, _, p)| *p).sum()
}

pub(super) fn task_error(task: TaskId) -> impl FnOnce(TaskError) -> RuntimeError {
    move |source| RuntimeError::Task {
        task,
        source: Box::new(source),
    }
}

impl TaskManager {
    /// No tasks yet; stores go to `state` (RocksDB under `rocksdb`'s
    /// budget) or, without a state directory, to memory.
    pub(super) fn new(
        topology: &Arc<Topology>,
        config: &StreamsConfig,
        counts: HashMap<TopicName, i32>,
        global_stores: BTreeMap<String, SharedStore>,
        state: Option<Arc<StateDirectory>>,
        rocksdb: Option<RocksDbEnv>,
    ) -> Self {
        TaskManager {
            topology: topology.clone(),
            application_id: config.application_id.clone(),
            bad_records: config.bad_records(),
            counts,
            tasks: BTreeMap::new(),
            routes: HashMap::new(),
            global_stores,
            state,
            rocksdb,
            checkpointed: BTreeMap::new(),
            checkpoint_interval_records: config.checkpoint_interval_records,
            retired: TaskMetrics::default(),
        }
    }

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
        let app = &self.application_id;
        self.topology
            .subtopologies()
            .iter()
            .find(|s| s.source_topics.iter().any(|t| *t.resolve(app) == *tp.topic))
            .map(|s| TaskId {
                subtopology: s.id,
                partition: tp.partition,
            })
    }

    /// Creates, restores (with `changelogs`) and initializes the tasks of
    /// `ids` not yet here, with the wall clock at `now`.
    pub(super) fn add(
        &mut self,
        ids: &[TaskId],
        changelogs: &mut ChangelogReader,
        faults: Option<&dyn FaultInjector>,
        now: Timestamp,
    ) -> Result<(), RuntimeError> {
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
                &self.application_id,
                &self.bad_records,
                &self.global_stores,
                &mut open_store,
            )
            .map_err(task_error(id))?;
            // Stores first, then processors: init may read its stores.
            changelogs.restore(
                &mut task,
                checkpoint.as_ref(),
                &|store: &str| existed.iter().any(|s| s == store),
                faults,
            )?;
            task.init(now).map_err(task_error(id))?;
            for tp in task.partitions() {
                self.routes.insert(tp.clone(), id);
            }
            self.tasks.insert(id, task);
            self.checkpoint(id)?;
        }
        Ok(())
    }

    /// Whether any of `ids` is here.
    pub(super) fn owns_any(&self, ids: &[TaskId]) -> bool {
        ids.iter().any(|id| self.tasks.contains_key(id))
    }

    /// Checkpoints and closes the tasks of `ids` (committed before: they
    /// move to another thread); returns their input partitions.
    pub(super) fn remove(&mut self, ids: &[TaskId]) -> Result<Vec<TopicPartition>, RuntimeError> {
        let mut released = Vec::new();
        for id in ids {
            if self.tasks.contains_key(id) {
                self.checkpoint(*id)?;
            }
            if let Some(mut task) = self.tasks.remove(id) {
                task.close();
                self.retired.add(&task.metrics());
                self.routes.retain(|_, t| t != id);
                self.checkpointed.remove(id);
                released.extend(task.partitions().cloned());
            }
        }
        Ok(released)
    }

    /// Closes every task, after checkpointing them if `checkpoint` (the
    /// caller committed); the first checkpoint that fails stops the others.
    pub(super) fn close_all(&mut self, checkpoint: bool) -> Result<(), RuntimeError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        let mut result = Ok(());
        for id in ids {
            if checkpoint && result.is_ok() {
                result = self.checkpoint(id);
            }
        }
        for task in self.tasks.values_mut() {
            task.close();
        }
        result
    }

    /// The input partitions of the tasks.
    pub(super) fn partitions(&self) -> Vec<TopicPartition> {
        self.routes.keys().cloned().collect()
    }

    /// Hands a polled record to the task reading its partition; false if
    /// no task here reads it.
    pub(super) fn route(&mut self, record: ConsumedRecord) -> bool {
        match self
            .routes
            .get(&record.tp)
            .and_then(|id| self.tasks.get_mut(id))
        {
            Some(task) => {
                task.add_record(record);
                true
            }
            None => false,
        }
    }

    /// Sets every task's wall clock (for the processors that read it).
    pub(super) fn set_wall_clock(&mut self, now: Timestamp) {
        for task in self.tasks.values_mut() {
            task.set_wall_clock(now);
        }
    }

    /// Processes buffered records, `PROCESS_BATCH` per task in turn,
    /// until nothing is buffered or `deadline` has passed.
    pub(super) fn process(&mut self, deadline: Instant) -> Result<(), RuntimeError> {
        loop {
            let mut processed = false;
            for (id, task) in &mut self.tasks {
                for _ in 0..PROCESS_BATCH {
                    if !task.process_one().map_err(task_error(*id))? {
                        break;
                    }
                    processed = true;
                }
            }
            if !processed || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Fires the tasks' wall-clock punctuations due at `now`.
    pub(super) fn advance_wall_clock(&mut self, now: Timestamp) -> Result<(), RuntimeError> {
        for (id, task) in &mut self.tasks {
            task.advance_wall_clock(now).map_err(task_error(*id))?;
        }
        Ok(())
    }

    /// Passes every record the tasks output, in task order, to `send`.
    pub(super) fn drain_output(
        &mut self,
        mut send: impl FnMut(ProducedRecord) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        for task in self.tasks.values_mut().filter(|t| t.has_output()) {
            let mut output = task.take_output();
            for record in output.drain(..) {
                send(record)?;
            }
            // The emptied buffer back, so the next batch does not grow a
            // new one.
            task.recycle_output(output);
        }
        Ok(())
    }

    /// Whether a task has output not yet sent.
    pub(super) fn has_output(&self) -> bool {
        self.tasks.values().any(|t| t.has_output())
    }

    /// Whether records wait in the tasks' buffers.
    pub(super) fn has_buffered(&self) -> bool {
        self.tasks.values().any(|t| t.buffered() > 0)
    }

    /// Store writes waiting for the next commit, in bytes.
    pub(super) fn uncommitted_bytes(&self) -> usize {
        self.tasks.values().map(StreamTask::uncommitted_bytes).sum()
    }

    /// First step of a commit: the processors flush (caches forward what
    /// they hold), the stores' buffered writes become changelog records;
    /// returns the offsets to commit.
    pub(super) fn prepare_commit(&mut self) -> Result<BTreeMap<TopicPartition, i64>, RuntimeError> {
        for (id, task) in &mut self.tasks {
            task.flush_processors().map_err(task_error(*id))?;
            task.prepare_commit();
        }
        Ok(self
            .tasks
            .values()
            .flat_map(StreamTask::committable_offsets)
            .collect())
    }

    /// After the commit: applies the stores' buffered writes (`written`:
    /// where their changelog records went), runs the processors'
    /// committed hooks, and checkpoints the tasks that wrote
    /// `checkpoint_interval_records` changelog records since their last
    /// checkpoint. `fault` is asked between the steps.
    pub(super) fn complete_commit(
        &mut self,
        written: &BTreeMap<TopicPartition, i64>,
        fault: impl Fn(FaultPoint) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        for (id, task) in &mut self.tasks {
            task.commit_local(written).map_err(task_error(*id))?;
        }
        fault(FaultPoint::AfterLocalApply)?;
        for (id, task) in &mut self.tasks {
            task.committed_processors().map_err(task_error(*id))?;
        }
        fault(FaultPoint::AfterCommittedHooks)?;
        let due: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, task)| {
                let since = position_sum(task) - self.checkpointed.get(id).copied().unwrap_or(0);
                since > 0 && u64::try_from(since).unwrap_or(0) >= self.checkpoint_interval_records
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.checkpoint(*id)?;
        }
        if !due.is_empty() {
            fault(FaultPoint::AfterCheckpoint)?;
        }
        Ok(())
    }

    /// Flushes a task's stores and writes its checkpoint (with a state
    /// directory; a no-op for in-memory stores).
    fn checkpoint(&mut self, id: TaskId) -> Result<(), RuntimeError> {
        let (Some(state), Some(task)) = (&self.state, self.tasks.get_mut(&id)) else {
            return Ok(());
        };
        task.flush_stores().map_err(task_error(id))?;
        let mut checkpoint = Checkpoint::default();
        for (store, tp, position) in task.changelog_positions() {
            checkpoint.set(&store, &tp.topic, tp.partition, position);
        }
        checkpoint.write(&state.checkpoint_path(&id.to_string()))?;
        self.checkpointed.insert(id, position_sum(task));
        Ok(())
    }

    /// The next offset to commit for input partition `tp`, if a task here
    /// processed a record of it.
    pub(super) fn committable_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.tasks.values().find_map(|t| t.committable_offset(tp))
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(super) fn get_mut(&mut self, id: TaskId) -> Option<&mut StreamTask> {
        self.tasks.get_mut(&id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskId, &StreamTask)> {
        self.tasks.iter()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut StreamTask> {
        self.tasks.values_mut()
    }

    /// Counters summed over all tasks here, including those closed.
    pub(super) fn metrics(&self) -> TaskMetrics {
        self.tasks.values().fold(self.retired, |mut sum, task| {
            sum.add(&task.metrics());
            sum
        })
    }

    /// Store operation counts per store, summed over tasks.
    pub(super) fn store_metrics(&self) -> BTreeMap<String, StoreMetrics> {
        let mut all: BTreeMap<String, StoreMetrics> = BTreeMap::new();
        for task in self.tasks.values() {
            for (name, m) in task.store_metrics() {
                all.entry(name).or_default().add(&m);
            }
        }
        all
    }
}
