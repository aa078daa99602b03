//! When the stream thread commits and checkpoints: the uncommitted-bytes
//! budget forces commits, checkpoints follow the configured interval, and
//! an abort discards buffered store writes.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use brook_runtime::cluster::{Cluster, ProducedRecord, TopicPartition};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::thread::{StreamThread, StreamsConfig};
use brook_state::Checkpoint;
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{Consumed, Grouped, Headers, Materialized, StreamsBuilder, TopicSpec};

type TestResult = Result<(), Box<dyn Error>>;

fn setup(records: usize) -> Result<(MemoryCluster, Arc<brook_topology::Topology>), Box<dyn Error>> {
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[TopicSpec::new("in", 1)])?;
    for i in 0..records {
        cluster.produce(ProducedRecord {
            topic: "in".into(),
            partition: Some(0),
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(vec![b'v'; 100]),
            timestamp: i as i64,
            headers: Headers::new(),
        })?;
    }
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
    Ok((cluster, Arc::new(b.build()?)))
}

#[test]
fn the_uncommitted_bytes_budget_forces_commits() -> TestResult {
    let (cluster, topology) = setup(100)?;
    let mut config = StreamsConfig::new("budget");
    config.commit_interval = Duration::from_secs(3_600);
    config.max_poll_records = 10;
    let tp = TopicPartition::new("in", 0);

    // Within budget: nothing is committed before the interval.
    let mut thread = StreamThread::new(&topology, config.clone(), &cluster, |_| true, 0)?;
    thread.run_once(1)?;
    assert_eq!(cluster.committed("budget", &tp), None);
    drop(thread);

    // A budget of one byte: every poll's writes exceed it.
    config.max_uncommitted_bytes = 1;
    let mut thread = StreamThread::new(&topology, config, &cluster, |_| true, 0)?;
    thread.run_once(1)?;
    assert_eq!(cluster.committed("budget", &tp), Some(10));
    thread.run_once(2)?;
    assert_eq!(cluster.committed("budget", &tp), Some(20));
    Ok(())
}

#[test]
fn checkpoints_follow_the_interval_in_changelog_records() -> TestResult {
    let (cluster, topology) = setup(100)?;
    let dir = tempfile::tempdir()?;
    let mut config = StreamsConfig::new("cp").state_dir(dir.path());
    config.commit_interval = Duration::ZERO;
    config.max_poll_records = 10;
    config.checkpoint_interval_records = 25;
    let path = dir.path().join("cp/0_0/.checkpoint");
    let offset = || -> Result<i64, Box<dyn Error>> {
        Ok(Checkpoint::read(&path)?
            .ok_or("no checkpoint")?
            .offset("cp-counts-changelog", 0)
            .ok_or("no entry")?
            .offset)
    };
    let mut thread = StreamThread::new(&topology, config, &cluster, |_| true, 0)?;
    // Written after restore, at the changelog's end (empty).
    assert_eq!(offset()?, 0);
    let mut seen = Vec::new();
    for now in 1..=10 {
        thread.run_once(now)?;
        seen.push(offset()?);
    }
    // 10 new keys per commit: a checkpoint every third commit (>= 25).
    assert_eq!(seen, vec![0, 0, 30, 30, 30, 60, 60, 60, 90, 90]);
    thread.close()?;
    assert_eq!(offset()?, 100, "close checkpoints");
    Ok(())
}

#[test]
fn an_abort_discards_buffered_store_writes() -> TestResult {
    let (cluster, topology) = setup(10)?;
    let mut config = StreamsConfig::new("abort");
    config.commit_interval = Duration::from_secs(3_600);
    let mut thread = StreamThread::new(&topology, config, &cluster, |_| true, 0)?;
    thread.run_once(1)?;
    let id = thread.task_ids()[0];
    let task = thread.task_mut(id).ok_or("task")?;
    let count = |task: &mut brook_runtime::task::StreamTask| -> Result<usize, Box<dyn Error>> {
        let (spec, bytes) = task.store_mut("counts").ok_or("store")?;
        Ok(brook_topology::KeyValueStore::<String, i64>::new(spec, bytes)?.len()?)
    };
    assert_eq!(count(task)?, 10, "processors see their uncommitted writes");
    assert!(task.uncommitted_bytes() > 0);
    task.abort_local();
    assert_eq!(count(task)?, 0);
    assert_eq!(task.uncommitted_bytes(), 0);
    Ok(())
}
