//! A full disk under the state directory: the stores live on a 2 MiB tmpfs
//! mounted for the test (the machines here run the suite as root), and the
//! application's state grows past it. The instance must stop with an error
//! that says the disk is full (not retry: it will not mend itself), commit
//! nothing it has not processed and stored, and a restart on a roomy state
//! directory must end with every aggregate exact — nothing lost, nothing
//! counted twice (exactly-once, on the in-memory cluster).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, ProducedRecord, TopicPartition};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::streams::{KafkaStreams, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, StreamsBuilder, TopicSpec,
};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const RECORDS: usize = 3_000;
const KEYS: usize = 300;
const VALUE_BYTES: usize = 1_000;

/// A tmpfs mounted on a fresh directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (the test needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An incompressible value of `VALUE_BYTES` hex digits for record `i`.
fn value(i: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(VALUE_BYTES);
    while out.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(VALUE_BYTES);
    out
}

fn streams(cluster: &MemoryCluster, state: PathBuf) -> TestResult<KafkaStreams> {
    let b = StreamsBuilder::new();
    // Each key's values, concatenated; the output says how long it is.
    b.stream("notes", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .aggregate(
            String::new,
            |_, v: String, mut acc: String| {
                acc.push_str(&v);
                acc
            },
            Materialized::named("notes-by-key", Utf8, Json::<String>::new()),
        )
        .to_stream()
        .map_values(|acc: Option<String>| acc.map_or(0, |a| a.len() as i64))
        .to("note-bytes", Produced::with(Utf8, Json::<i64>::new()));
    let mut config = StreamsConfig::new("diskfull")
        .exactly_once()
        .state_dir(state);
    // Checkpoints flush the stores to disk often.
    config.checkpoint_interval_records = 50;
    config.max_poll_records = 100;
    Ok(KafkaStreams::new(
        b.build()?,
        config,
        Arc::new(cluster.clone()),
    ))
}

#[test]
fn a_full_disk_stops_the_instance_and_a_restart_elsewhere_loses_and_doubles_nothing() -> TestResult
{
    let disk = Tmpfs::mount("2m")?;
    let cluster = MemoryCluster::new();
    cluster.create_topics(&[TopicSpec::new("notes", 1), TopicSpec::new("note-bytes", 1)])?;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..RECORDS {
        let key = format!("k{}", i % KEYS);
        *expected.entry(key.clone()).or_default() += VALUE_BYTES as i64;
        cluster.produce(ProducedRecord {
            topic: "notes".into(),
            partition: Some(0),
            key: Some(key.into_bytes()),
            value: Some(value(i).into_bytes()),
            timestamp: i as i64,
            headers: Headers::new(),
        })?;
    }
    let tp = TopicPartition::new("notes", 0);

    let mut full = streams(&cluster, disk.path().join("state"))?;
    let started = Instant::now();
    full.start()?;
    let state = full.wait_for_state(StreamsState::Error, Duration::from_secs(120));
    let errors = full.errors().join("\n");
    assert_eq!(state, StreamsState::Error, "errors: {errors}");
    assert!(
        errors.contains("No space left on device"),
        "the error says the disk is full: {errors}"
    );
    let committed = cluster.committed("diskfull", &tp).unwrap_or(0);
    assert!(
        committed < RECORDS as i64,
        "the disk filled before the end ({committed} committed)"
    );
    eprintln!(
        "disk full after {:?}: {committed} of {RECORDS} input records committed; error: {}",
        started.elapsed(),
        errors.lines().next().unwrap_or_default()
    );
    drop(full);

    // Elsewhere, with room: every aggregate is exact.
    let roomy = tempfile::tempdir()?;
    let mut again = streams(&cluster, roomy.path().join("state"))?;
    again.start()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let latest = loop {
        let mut latest = BTreeMap::new();
        for r in cluster.records("note-bytes")? {
            let key = String::from_utf8(r.record.key.clone().unwrap_or_default())?;
            latest.insert(
                key,
                Json::<i64>::new().deserialize(r.record.value.as_deref())?,
            );
        }
        if latest == expected || Instant::now() > deadline {
            break latest;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| latest.get(*k) != Some(v))
        .map(|(k, v)| (k, *v, latest.get(k).copied()))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "key, expected, got: {wrong:?}");
    assert_eq!(again.state(), StreamsState::Running, "{:?}", again.errors());
    again.close()?;
    Ok(())
}
