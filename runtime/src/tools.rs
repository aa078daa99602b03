//! Replay tools: reset an application so it recomputes from its inputs,
//! rebuild local state from changelogs, inspect stores offline.
//!
//! These work on any [`Cluster`]; the `brook-state` command in `apps` wraps
//! them. Stop every instance of the application first: a running instance
//! holds its state directory's lock (so these tools refuse to touch it) and
//! would commit over a reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brook_state::directory::{self, store_dirs, task_dirs};
use brook_state::{
    Checkpoint, KeyValueBytes, RocksDbConfig, RocksDbEnv, RocksDbKeyValueStore, StateDirectory,
    StoreError,
};

use crate::cluster::{Cluster, Isolation, TopicPartition};
use crate::thread::{RuntimeError, replay_changelog};

/// Where [`reset_application`] rewinds the input topics to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first record of each partition.
    Earliest,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// What a reset did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// The committed offset now in force for each input partition.
    pub input_offsets: BTreeMap<TopicPartition, i64>,
    /// Internal topics deleted (changelogs, repartition topics); the next
    /// start creates them empty.
    pub deleted_topics: Vec<String>,
    /// The local state directory removed, if any.
    pub wiped_state: Option<PathBuf>,
}

fn store_err(what: &str, source: StoreError) -> RuntimeError {
    RuntimeError::Store {
        store: what.to_owned(),
        source,
    }
}

/// The internal topics of `application_id`: `<id>-...-changelog` and
/// `<id>-...-repartition`.
pub fn internal_topics(
    cluster: &dyn Cluster,
    application_id: &str,
) -> Result<Vec<String>, RuntimeError> {
    let prefix = format!("{application_id}-");
    Ok(cluster
        .list_topics()?
        .into_iter()
        .filter(|t| {
            t.starts_with(&prefix) && (t.ends_with("-changelog") || t.ends_with("-repartition"))
        })
        .collect())
}

/// Resets `application_id` so that its next start recomputes everything
/// from `input_topics`: rewinds its consumer group on them to `to`, deletes
/// its internal topics, and removes its local state under `state_dir`.
pub fn reset_application(
    cluster: &dyn Cluster,
    application_id: &str,
    input_topics: &[String],
    to: ResetTo,
    state_dir: Option<&Path>,
) -> Result<ResetReport, RuntimeError> {
    let mut report = ResetReport::default();
    // Local state first: if an instance still runs, its lock stops us here,
    // before anything on the cluster changed.
    if let Some(dir) = state_dir {
        let state = StateDirectory::open(dir, application_id)
            .map_err(|e| store_err("(state directory)", e))?;
        for task in state
            .tasks()
            .map_err(|e| store_err("(state directory)", e))?
        {
            state
                .wipe_task(&task)
                .map_err(|e| store_err("(state directory)", e))?;
        }
        report.wiped_state = Some(state.root().to_path_buf());
    }
    let mut partitions = Vec::new();
    for topic in input_topics {
        for p in 0..cluster.partition_count(topic)? {
            partitions.push(TopicPartition::new(topic.clone(), p));
        }
    }
    let mut consumer = cluster.consumer(application_id, Isolation::ReadCommitted)?;
    let offsets = match to {
        ResetTo::Earliest => consumer.offsets_for_times(&partitions, i64::MIN)?,
        ResetTo::Timestamp(ts) => consumer.offsets_for_times(&partitions, ts)?,
    };
    consumer.commit(&offsets)?;
    report.input_offsets = offsets;
    report.deleted_topics = internal_topics(cluster, application_id)?;
    cluster.delete_topics(&report.deleted_topics)?;
    Ok(report)
}

/// What a rebuild did, per store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltStore {
    /// The task directory (`<sub-topology>_<partition>`).
    pub task: String,
    /// The store.
    pub store: String,
    /// The changelog partition it was rebuilt from.
    pub changelog: TopicPartition,
    /// Records replayed.
    pub records: u64,
    /// Time taken.
    pub elapsed: Duration,
}

/// Rebuilds the local stores of `application_id` under `state_dir` from
/// their changelogs alone, without processing any input: every store found
/// in the state directory is deleted, replayed in full from
/// `<application id>-<store>-changelog` (the task's partition) and
/// checkpointed. `tasks`/`stores` narrow it down (empty: all).
pub fn rebuild_state(
    cluster: &dyn Cluster,
    application_id: &str,
    state_dir: &Path,
    tasks: &[String],
    stores: &[String],
    budget: RocksDbConfig,
) -> Result<Vec<RebuiltStore>, RuntimeError> {
    let state = StateDirectory::open(state_dir, application_id)
        .map_err(|e| store_err("(state directory)", e))?;
    let env = RocksDbEnv::new(budget);
    let mut consumer = cluster.consumer(
        &format!("{application_id}-restore"),
        Isolation::ReadCommitted,
    )?;
    let mut rebuilt = Vec::new();
    for task in state
        .tasks()
        .map_err(|e| store_err("(state directory)", e))?
    {
        if !tasks.is_empty() && !tasks.contains(&task) {
            continue;
        }
        let partition: i32 = task
            .rsplit('_')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                store_err(
                    "(state directory)",
                    StoreError::new(
                        "rebuild",
                        format!("{task} is not a task directory (<sub-topology>_<partition>)"),
                    ),
                )
            })?;
        let checkpoint_path = state.checkpoint_path(&task);
        let mut checkpoint = Checkpoint::read(&checkpoint_path)?.unwrap_or_default();
        let task_dir = state.root().join(&task);
        for store in store_dirs(&task_dir).map_err(|e| store_err("(state directory)", e))? {
            if !stores.is_empty() && !stores.contains(&store) {
                continue;
            }
            let started = Instant::now();
            let changelog =
                TopicPartition::new(format!("{application_id}-{store}-changelog"), partition);
            let path = state.store_path(&task, &store);
            directory::remove_dir(&path).map_err(|e| store_err(&store, e))?;
            let mut db =
                RocksDbKeyValueStore::open(&path, &env).map_err(|e| store_err(&store, e))?;
            let end = consumer.end_offsets(std::slice::from_ref(&changelog))?[&changelog];
            let what = format!("rebuilding {store} of task {task}");
            let records = replay_changelog(
                consumer.as_mut(),
                &changelog,
                0,
                end,
                &what,
                |batch, _, _| db.write_batch(batch).map_err(|e| store_err(&store, e)),
            )?;
            db.flush().map_err(|e| store_err(&store, e))?;
            checkpoint.set(&store, &changelog.topic, changelog.partition, end);
            checkpoint.write(&checkpoint_path)?;
            rebuilt.push(RebuiltStore {
                task: task.clone(),
                store,
                changelog,
                records,
                elapsed: started.elapsed(),
            });
        }
    }
    Ok(rebuilt)
}

/// A store of a stopped (or running) application, opened read-only.
pub fn open_store_read_only(
    state_dir: &Path,
    application_id: &str,
    task: &str,
    store: &str,
) -> Result<RocksDbKeyValueStore, StoreError> {
    let path = directory::store_path(&state_dir.join(application_id), task, store);
    if !path.exists() {
        return Err(StoreError::new(
            "open",
            format!("no store {store:?} of task {task} at {}", path.display()),
        ));
    }
    RocksDbKeyValueStore::open_read_only(path)
}

/// One store found in a state directory, with its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The task directory.
    pub task: String,
    /// The store.
    pub store: String,
    /// The changelog offset its checkpoint names, if any.
    pub checkpoint: Option<i64>,
}

/// The stores under `<state_dir>/<application_id>` and their checkpoints.
pub fn list_stores(state_dir: &Path, application_id: &str) -> Result<Vec<StoreInfo>, RuntimeError> {
    let root = state_dir.join(application_id);
    let mut out = Vec::new();
    for task in task_dirs(&root).map_err(|e| store_err("(state directory)", e))? {
        let task_dir = root.join(&task);
        let checkpoint =
            Checkpoint::read(&task_dir.join(brook_state::checkpoint::CHECKPOINT_FILE))?;
        for store in store_dirs(&task_dir).map_err(|e| store_err("(state directory)", e))? {
            let offset = checkpoint.as_ref().and_then(|c| {
                c.entries
                    .values()
                    .find(|e| e.store.as_deref() == Some(store.as_str()))
                    .or_else(|| {
                        // Format 1 has no store names: match by changelog topic.
                        c.entries.iter().find_map(|((topic, _), e)| {
                            (topic == &format!("{application_id}-{store}-changelog")).then_some(e)
                        })
                    })
                    .map(|e| e.offset)
            });
            out.push(StoreInfo {
                task: task.clone(),
                store,
                checkpoint: offset,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use brook_topology::serdes::{Json, Utf8};
    use brook_topology::{Consumed, Grouped, Headers, Materialized, StreamsBuilder, TopicSpec};

    use super::*;
    use crate::cluster::ProducedRecord;
    use crate::memory::MemoryCluster;
    use crate::thread::{StreamThread, StreamsConfig};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn run_word_count(cluster: &MemoryCluster, dir: &Path) -> TestResult {
        let b = StreamsBuilder::new();
        b.stream("in", Consumed::with(Utf8, Utf8))
            .group_by(|_, v| v.clone(), Grouped::with(Utf8, Utf8))
            .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
        let mut config = StreamsConfig::new("app").state_dir(dir);
        config.commit_interval = Duration::ZERO;
        let mut thread = StreamThread::new(&Arc::new(b.build()?), config, cluster, |_| true, 0)?;
        for now in 1..5 {
            thread.run_once(now)?;
        }
        thread.close()?;
        Ok(())
    }

    #[test]
    fn reset_rewinds_by_time_deletes_internal_topics_and_state() -> TestResult {
        let cluster = MemoryCluster::new();
        cluster.create_topics(&[TopicSpec::new("in", 1), TopicSpec::new("other", 1)])?;
        for (i, word) in ["a", "b", "a", "c"].iter().enumerate() {
            cluster.produce(ProducedRecord {
                topic: "in".into(),
                partition: None,
                key: Some(b"k".to_vec()),
                value: Some(word.as_bytes().to_vec()),
                timestamp: 100 * i as i64,
                headers: Headers::new(),
            })?;
        }
        let dir = tempfile::tempdir()?;
        run_word_count(&cluster, dir.path())?;
        let tp = TopicPartition::new("in", 0);
        assert_eq!(cluster.committed("app", &tp), Some(4));
        assert_eq!(
            internal_topics(&cluster, "app")?,
            vec![
                "app-counts-changelog".to_string(),
                "app-counts-repartition".to_string()
            ]
        );
        assert_eq!(list_stores(dir.path(), "app")?.len(), 1);

        // Rebuild: from the changelog alone, checkpointed at its end.
        let rebuilt = rebuild_state(
            &cluster,
            "app",
            dir.path(),
            &[],
            &[],
            RocksDbConfig::default(),
        )?;
        assert_eq!(rebuilt.len(), 1);
        assert_eq!(rebuilt[0].records, 3, "a, b, c (a's two updates coalesced)");
        let store = open_store_read_only(dir.path(), "app", &rebuilt[0].task, "counts")?;
        assert_eq!(store.get(b"a")?, Some(b"2".to_vec()));
        drop(store);
        assert_eq!(list_stores(dir.path(), "app")?[0].checkpoint, Some(3));

        // Reset to t = 150: the records at 200 and 300 are processed again.
        let report = reset_application(
            &cluster,
            "app",
            &["in".to_string()],
            ResetTo::Timestamp(150),
            Some(dir.path()),
        )?;
        assert_eq!(report.input_offsets[&tp], 2);
        assert_eq!(cluster.committed("app", &tp), Some(2));
        assert!(internal_topics(&cluster, "app")?.is_empty());
        assert!(
            cluster.partition_count("other").is_ok(),
            "other topics stay"
        );
        assert!(list_stores(dir.path(), "app")?.is_empty());
        // Refused while an instance holds the state directory.
        let _held = StateDirectory::open(dir.path(), "app")?;
        let err = reset_application(&cluster, "app", &[], ResetTo::Earliest, Some(dir.path()))
            .expect_err("in use");
        assert!(err.to_string().contains("state directory"), "{err}");
        Ok(())
    }
}
