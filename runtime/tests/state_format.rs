//! On-disk compatibility: a state directory written in an earlier format
//! (checkpoint format 1, store format 1), committed under
//! `tests/fixtures/state-format-1/`, is opened by this build, restores only
//! the changelog past its checkpoint, and comes out in the current format.
//!
//! The fixture holds application `fmt` with task `0_0` and its store
//! `counts`: keys `k0`..`k9` with counts as of changelog offset 10, and a
//! format-1 checkpoint saying so. The test writes a changelog of 15 records
//! (the 10 the store reflects, then 5 more) to a Memory cluster.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::thread::{StreamThread, StreamsConfig};
use brook_state::Checkpoint;
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{Consumed, Grouped, Headers, Materialized, StreamsBuilder, TopicSpec};

type TestResult = Result<(), Box<dyn Error>>;

/// This package's directory, as cargo gives it to the running test: a test
/// binary reused from a shared target directory may have been built in
/// another checkout, whose files `env!("CARGO_MANIFEST_DIR")` would name.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .expect("CARGO_MANIFEST_DIR is set by cargo test")
}

fn fixture() -> PathBuf {
    package_dir().join("tests/fixtures/state-format-1")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Changelog record `i`: key `k{i % 10}` set to its count after `i`.
fn changelog_record(i: i64) -> Result<ProducedRecord, Box<dyn Error>> {
    Ok(ProducedRecord {
        topic: "fmt-counts-changelog".into(),
        partition: Some(0),
        key: Utf8.serialize(&format!("k{}", i % 10))?,
        value: Json::<i64>::new().serialize(&(i / 10 + 1))?,
        timestamp: i,
        headers: Headers::new(),
    })
}

#[test]
fn a_state_directory_in_format_1_is_restored_from_its_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    copy_dir(&fixture(), dir.path())?;
    let checkpoint_path = dir.path().join("fmt/0_0/.checkpoint");
    assert!(std::fs::read_to_string(&checkpoint_path)?.starts_with("1\n"));

    let cluster = MemoryCluster::new();
    cluster.create_topics(&[
        TopicSpec::new("in", 1),
        TopicSpec::new("fmt-counts-changelog", 1),
    ])?;
    for i in 0..15 {
        cluster.produce(changelog_record(i)?)?;
    }
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
    let topology = Arc::new(b.build()?);
    let config = StreamsConfig::new("fmt").state_dir(dir.path());
    let mut thread = StreamThread::new(&topology, config, &cluster, |_| true, 0)?;
    // Only the 5 records past the checkpoint were replayed.
    assert_eq!(thread.restore_metrics().records, 5);
    let id = thread.task_ids()[0];
    let task = thread.task_mut(id).ok_or("task")?;
    let (spec, bytes) = task.store_mut("counts").ok_or("store")?;
    let store = brook_topology::KeyValueStore::<String, i64>::new(spec, bytes)?;
    let all = store.all()?;
    assert_eq!(all.len(), 10);
    for (key, count) in all {
        let k: i64 = key[1..].parse()?;
        assert_eq!(count, if k < 5 { 2 } else { 1 }, "{key}");
    }
    drop(thread);
    // Rewritten in the current format, naming the store.
    let checkpoint = Checkpoint::read(&checkpoint_path)?.ok_or("checkpoint")?;
    let entry = checkpoint
        .offset("fmt-counts-changelog", 0)
        .ok_or("entry")?;
    assert_eq!((entry.offset, entry.store.as_deref()), (15, Some("counts")));
    assert!(std::fs::read_to_string(&checkpoint_path)?.starts_with("brook-checkpoint 2\n"));
    Ok(())
}

/// Writes the fixture (run once, by hand, with `--ignored`): the store as
/// of changelog offset 10 and a format-1 checkpoint.
#[test]
#[ignore = "writes the committed fixture; run by hand only when it must be recreated"]
fn write_format_1_fixture() -> TestResult {
    use brook_state::{KeyValueBytes, RocksDbConfig, RocksDbEnv, RocksDbKeyValueStore};
    let root = fixture();
    let _ = std::fs::remove_dir_all(&root);
    let task = root.join("fmt/0_0");
    let env = RocksDbEnv::new(RocksDbConfig::default());
    let mut store = RocksDbKeyValueStore::open(task.join("rocksdb/counts"), &env)?;
    for i in 0..10 {
        let r = changelog_record(i)?;
        store.put(r.key.as_deref().ok_or("key")?, r.value.as_deref())?;
    }
    store.flush()?;
    drop(store);
    std::fs::write(
        task.join(".checkpoint"),
        "1\n1\nfmt-counts-changelog 0 10\n",
    )?;
    Ok(())
}
