//! Exactly-once local state, proven by crashing.
//!
//! An application with the shape of Kafka Streams' own EOS test — echo, a
//! count per key, a windowed count, and a sum after a repartition — runs on
//! the Memory cluster with RocksDB stores, and is crashed at every step of
//! the commit cycle and during restore, at random moments (a seed per
//! schedule, printed on failure; `BROOK_CRASH_SEED=<n>` replays one). A crash
//! drops the thread without closing anything; the restart gets a new
//! thread on the same state directory and cluster.
//!
//! After every restart, before processing anything:
//! - each store equals an oracle computed from the input records the
//!   cluster has committed as consumed (local state is exactly the committed
//!   prefix: no lost and no uncommitted writes);
//! - restore replayed exactly the committed changelog records past the
//!   task's checkpoint (the tail, never a wipe and full restore).
//!
//! At the end, read-committed outputs hold every input exactly once (echo),
//! every count update exactly once (1, 2, ..., n per key), and the final
//! aggregates are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brook_runtime::cluster::{Cluster, ProducedRecord, TopicPartition};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::thread::{
    FaultInjector, FaultPoint, ProcessingGuarantee, RuntimeError, StreamThread, StreamsConfig,
    ThreadOptions,
};
use brook_state::Checkpoint;
use brook_testkit::CrashOnce;
use brook_topology::serdes::{Json, Serde, Utf8};
use brook_topology::window::{TimeWindows, Windowed};
use brook_topology::{
    Consumed, Grouped, Headers, Materialized, Produced, StreamsBuilder, Topology,
};

type TestResult = Result<(), Box<dyn Error>>;

const APP: &str = "eos";
const PARTITIONS: i32 = 2;
const KEYS: i64 = 5;
const WINDOW_MS: i64 = 1_000;

fn topology() -> Result<Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let input = b.stream("in", Consumed::with(Utf8, Json::<i64>::new()));
    input.to("echo", Produced::with(Utf8, Json::<i64>::new()));
    let by_key = input.group_by_key(Grouped::with(Utf8, Json::<i64>::new()));
    by_key
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()))
        .to("counts-out", Produced::with(Utf8, Json::<i64>::new()));
    let windows = TimeWindows::tumbling(Duration::from_millis(WINDOW_MS as u64), Duration::ZERO)?;
    by_key
        .windowed_by(windows)
        .count(Materialized::named("windowed", Utf8, Json::<i64>::new()));
    input
        .group_by(
            |_, v| format!("g{}", v % 3),
            Grouped::with(Utf8, Json::<i64>::new()),
        )
        .reduce(
            |a, b| a + b,
            Materialized::named("sums", Utf8, Json::<i64>::new()),
        )
        .to("sums-out", Produced::with(Utf8, Json::<i64>::new()));
    Ok(b.build()?)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A state directory in memory when the machine has one: these tests
/// crash processes, not machines, so fsync adds nothing but time.
fn state_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
}

fn input_tps() -> Vec<TopicPartition> {
    (0..PARTITIONS)
        .map(|p| TopicPartition::new("in", p))
        .collect()
}

fn decode(bytes: Option<&[u8]>) -> Result<i64, Box<dyn Error>> {
    Ok(Json::<i64>::new().deserialize(bytes)?)
}

fn key_of(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// The stores' expected contents given what the cluster committed.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    counts: BTreeMap<String, i64>,
    windowed: BTreeMap<(String, i64), i64>,
    sums: BTreeMap<String, i64>,
}

fn committed_oracle(cluster: &MemoryCluster) -> Result<Expected, Box<dyn Error>> {
    let mut expected = Expected::default();
    for r in cluster.records("in")? {
        let r = r.record;
        let done = cluster.committed(APP, &r.tp).unwrap_or(0);
        if r.offset >= done {
            continue;
        }
        let key = key_of(r.key.as_deref());
        *expected.counts.entry(key.clone()).or_default() += 1;
        let start = r.timestamp - r.timestamp.rem_euclid(WINDOW_MS);
        *expected.windowed.entry((key, start)).or_default() += 1;
    }
    let repartition = format!("{APP}-sums-repartition");
    for r in cluster.records(&repartition)? {
        let r = r.record;
        let done = cluster.committed(APP, &r.tp).unwrap_or(0);
        if r.offset >= done {
            continue;
        }
        *expected.sums.entry(key_of(r.key.as_deref())).or_default() += decode(r.value.as_deref())?;
    }
    Ok(expected)
}

fn actual_stores(thread: &mut StreamThread) -> Result<Expected, Box<dyn Error>> {
    Ok(Expected {
        counts: thread.read_store("counts")?,
        windowed: thread
            .read_store::<Windowed<String>, i64>("windowed")?
            .into_iter()
            .map(|(k, v)| ((k.key, k.window.start), v))
            .collect(),
        sums: thread.read_store("sums")?,
    })
}

/// Committed changelog records at or past each task's checkpoint: what a
/// restart must replay, no more.
fn expected_restore(cluster: &MemoryCluster, state: &Path) -> Result<u64, Box<dyn Error>> {
    let mut checkpoints: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let app_dir = state.join(APP);
    if app_dir.exists() {
        for task in brook_state::directory::task_dirs(&app_dir)? {
            let stores = brook_state::directory::store_dirs(&app_dir.join(&task))?;
            if let Some(c) = Checkpoint::read(&app_dir.join(&task).join(".checkpoint"))? {
                for ((topic, partition), entry) in c.entries {
                    // Only stores whose data exists count.
                    if entry.store.as_ref().is_some_and(|s| stores.contains(s)) {
                        checkpoints.insert((topic, partition), entry.offset);
                    }
                }
            }
        }
    }
    let mut n = 0;
    for store in ["counts", "windowed", "sums"] {
        let topic = format!("{APP}-{store}-changelog");
        if cluster.partition_count(&topic).is_err() {
            continue; // not created yet: the first start
        }
        for r in cluster.records(&topic)? {
            let from = checkpoints
                .get(&(topic.clone(), r.record.tp.partition))
                .copied()
                .unwrap_or(0);
            if r.record.offset >= from {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn create_topics(cluster: &MemoryCluster) -> Result<(), Box<dyn Error>> {
    cluster.create_topics(&[
        brook_topology::TopicSpec::new("in", PARTITIONS),
        brook_topology::TopicSpec::new("echo", PARTITIONS),
        brook_topology::TopicSpec::new("counts-out", PARTITIONS),
        brook_topology::TopicSpec::new("sums-out", PARTITIONS),
    ])?;
    Ok(())
}

/// Writes input records `from..to`.
fn produce_inputs(cluster: &MemoryCluster, from: i64, to: i64) -> Result<(), Box<dyn Error>> {
    for i in from..to {
        cluster.produce(ProducedRecord {
            topic: "in".into(),
            partition: None,
            key: Utf8.serialize(&format!("k{}", i % KEYS))?,
            value: Json::<i64>::new().serialize(&i)?,
            timestamp: i * 97,
            headers: Headers::new(),
        })?;
    }
    Ok(())
}

fn all_consumed(cluster: &MemoryCluster) -> Result<bool, Box<dyn Error>> {
    let mut done = true;
    for tp in input_tps() {
        done &= cluster.committed(APP, &tp).unwrap_or(0) >= cluster.end_offset(&tp)?;
    }
    let repartition = format!("{APP}-sums-repartition");
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new(repartition.clone(), p);
        if cluster.partition_count(&repartition).is_ok() {
            let committed_records = cluster
                .records(&repartition)?
                .iter()
                .filter(|r| r.record.tp == tp)
                .map(|r| r.record.offset + 1)
                .max()
                .unwrap_or(0);
            done &= cluster.committed(APP, &tp).unwrap_or(0) >= committed_records;
        }
    }
    Ok(done)
}

/// One randomised schedule: returns the number of crashes survived.
fn run_schedule(seed: u64, guarantee: ProcessingGuarantee) -> Result<u32, Box<dyn Error>> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let inputs = 60 + rng.below(90) as i64;
    let cluster = MemoryCluster::new();
    create_topics(&cluster)?;
    // Input arrives while the application runs, a few records at a time.
    let mut produced = 0;
    let dir = state_dir()?;
    let topology = Arc::new(topology()?);
    let mut config = StreamsConfig::new(APP).state_dir(dir.path());
    if guarantee == ProcessingGuarantee::ExactlyOnceV2 {
        config = config.exactly_once();
    }
    config.commit_interval = Duration::ZERO;
    config.max_poll_records = 1 + rng.below(9) as usize;
    config.checkpoint_interval_records = [0, 3, 20, 10_000][rng.below(4) as usize];
    let mut crashes = 0;
    let mut now = 0;
    for life in 0.. {
        if life > 40 {
            return Err("no progress after 40 restarts".into());
        }
        // The first lives crash somewhere; the last one runs to the end.
        let injector = (life < 6).then(|| {
            // Restore only has something to crash in after the first life.
            let points = if life == 0 {
                &FaultPoint::ALL[..FaultPoint::ALL.len() - 1]
            } else {
                &FaultPoint::ALL[..]
            };
            Arc::new(CrashOnce::at(
                points[rng.below(points.len() as u64) as usize],
                rng.below(12) as u32,
            ))
        });
        let must_restore = expected_restore(&cluster, dir.path())?;
        let options = ThreadOptions {
            faults: injector.clone().map(|i| i as Arc<dyn FaultInjector>),
            ..ThreadOptions::default()
        };
        let started =
            StreamThread::with_options(&topology, config.clone(), &cluster, |_| true, now, options);
        let mut thread = match started {
            Ok(thread) => thread,
            Err(RuntimeError::InjectedFault(FaultPoint::DuringRestore)) => {
                crashes += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if guarantee == ProcessingGuarantee::ExactlyOnceV2 {
            let restored = thread.restore_metrics().records;
            // Restore is tail-only (stores restored again after a crash
            // during restore replay their tail from the checkpoint too).
            if restored != must_restore {
                return Err(format!(
                    "life {life}: restored {restored} changelog records, expected the {must_restore} past the checkpoints"
                )
                .into());
            }
            let expected = committed_oracle(&cluster)?;
            let actual = actual_stores(&mut thread)?;
            if actual != expected {
                return Err(format!(
                    "life {life}: local state is not the committed prefix\nexpected {expected:?}\nactual   {actual:?}"
                )
                .into());
            }
        }
        let mut crashed = false;
        for _ in 0..10_000 {
            now += 10;
            if produced < inputs {
                let to = (produced + 1 + rng.below(6) as i64).min(inputs);
                produce_inputs(&cluster, produced, to)?;
                produced = to;
            }
            match thread.run_once(now).and_then(|_| thread.commit()) {
                Ok(()) => {}
                Err(RuntimeError::InjectedFault(_)) => {
                    crashed = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            if produced == inputs && all_consumed(&cluster)? {
                break;
            }
        }
        if crashed {
            crashes += 1;
            drop(thread);
            continue;
        }
        if produced < inputs || !all_consumed(&cluster)? {
            return Err(format!("life {life}: input not consumed").into());
        }
        // The final state, checked before and after a clean restart.
        let final_state = actual_stores(&mut thread)?;
        let expected = committed_oracle(&cluster)?;
        thread.close()?;
        if guarantee == ProcessingGuarantee::ExactlyOnceV2 {
            assert_eq!(final_state, expected, "final stores");
        }
        break;
    }
    verify_outputs(&cluster, inputs, guarantee)?;
    Ok(crashes)
}

fn verify_outputs(
    cluster: &MemoryCluster,
    inputs: i64,
    guarantee: ProcessingGuarantee,
) -> Result<(), Box<dyn Error>> {
    let exactly = guarantee == ProcessingGuarantee::ExactlyOnceV2;
    // Echo: every input, exactly once (at least once otherwise).
    let mut echoed: BTreeMap<i64, usize> = BTreeMap::new();
    for r in cluster.records("echo")? {
        *echoed
            .entry(decode(r.record.value.as_deref())?)
            .or_default() += 1;
    }
    let want: BTreeSet<i64> = (0..inputs).collect();
    if echoed.keys().copied().collect::<BTreeSet<_>>() != want {
        return Err("echo lost records".into());
    }
    if exactly && echoed.values().any(|&n| n != 1) {
        return Err(format!(
            "echo duplicated records: {:?}",
            echoed.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
        )
        .into());
    }
    // Counts: per key 1, 2, ..., n in order, each once.
    let mut counts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in cluster.records("counts-out")? {
        counts
            .entry(key_of(r.record.key.as_deref()))
            .or_default()
            .push(decode(r.record.value.as_deref())?);
    }
    for k in 0..KEYS {
        let key = format!("k{k}");
        let n = (0..inputs).filter(|i| i % KEYS == k).count() as i64;
        let seen = counts.get(&key).cloned().unwrap_or_default();
        if exactly {
            if seen != (1..=n).collect::<Vec<_>>() {
                return Err(format!("counts of {key}: {seen:?}, expected 1..={n}").into());
            }
        } else if seen.last().copied().unwrap_or(0) < n {
            return Err(format!("counts of {key} lost updates: {seen:?}").into());
        }
    }
    // Sums: one update per input of the group; the last is the total.
    let mut sums: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in cluster.records("sums-out")? {
        sums.entry(key_of(r.record.key.as_deref()))
            .or_default()
            .push(decode(r.record.value.as_deref())?);
    }
    for g in 0..3 {
        let key = format!("g{g}");
        let members: Vec<i64> = (0..inputs).filter(|i| i % 3 == g).collect();
        let seen = sums.get(&key).cloned().unwrap_or_default();
        let total: i64 = members.iter().sum();
        if exactly && (seen.len() != members.len() || seen.last() != Some(&total)) {
            return Err(format!(
                "sums of {key}: {} updates ending at {:?}, expected {} ending at {total}",
                seen.len(),
                seen.last(),
                members.len()
            )
            .into());
        }
        if !exactly && seen.last().copied().unwrap_or(0) < total {
            return Err(format!("sums of {key} lost updates").into());
        }
    }
    Ok(())
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("BROOK_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("BROOK_CRASH_SEED is a number")],
        Err(_) => default.collect(),
    }
}

#[test]
fn exactly_once_state_survives_crashes_at_every_commit_step() {
    let mut crashes = 0;
    for seed in seeds(0..120) {
        match run_schedule(seed, ProcessingGuarantee::ExactlyOnceV2) {
            Ok(n) => crashes += n,
            Err(e) => {
                panic!("exactly-once schedule failed; replay with BROOK_CRASH_SEED={seed}: {e}")
            }
        }
    }
    eprintln!("{crashes} crashes injected and survived");
    if std::env::var("BROOK_CRASH_SEED").is_err() {
        assert!(crashes > 300, "only {crashes} crashes injected");
    }
}

#[test]
fn at_least_once_state_loses_nothing_across_crashes() {
    for seed in seeds(1_000..1_040) {
        if let Err(e) = run_schedule(seed, ProcessingGuarantee::AtLeastOnce) {
            panic!("at-least-once schedule failed; replay with BROOK_CRASH_SEED={seed}: {e}");
        }
    }
}

#[test]
fn every_fault_point_is_reachable() -> TestResult {
    // Each point fires on its first occurrence in a run with a checkpoint
    // at every commit and a restore to do.
    for point in FaultPoint::ALL {
        let cluster = MemoryCluster::new();
        create_topics(&cluster)?;
        produce_inputs(&cluster, 0, 30)?;
        let dir = state_dir()?;
        let topology = Arc::new(topology()?);
        let mut config = StreamsConfig::new(APP).state_dir(dir.path()).exactly_once();
        config.commit_interval = Duration::ZERO;
        config.checkpoint_interval_records = 0;
        config.max_poll_records = 4;
        // A first life that processes part of the input, so the second has
        // a restore to do (its local state is deleted).
        {
            let mut thread = StreamThread::new(&topology, config.clone(), &cluster, |_| true, 0)?;
            thread.run_once(1)?;
            thread.commit()?;
        }
        std::fs::remove_dir_all(dir.path().join(APP))?;
        let injector = Arc::new(CrashOnce::at(point, 0));
        let options = ThreadOptions {
            faults: Some(injector.clone()),
            ..ThreadOptions::default()
        };
        let result =
            StreamThread::with_options(&topology, config.clone(), &cluster, |_| true, 2, options)
                .and_then(|mut thread| {
                    for now in 3..100 {
                        thread.run_once(now)?;
                        thread.commit()?;
                    }
                    Ok(())
                });
        match result {
            Err(RuntimeError::InjectedFault(p)) if p == point => {}
            other => return Err(format!("{point:?} was not reached: {:?}", other.err()).into()),
        }
    }
    Ok(())
}

/// Group mode: two instances split the partitions, a third joins, one
/// crashes; each rebalance moves tasks, which are restored from their
/// changelogs on the new owner. Outputs stay exactly-once throughout.
#[test]
fn group_members_rebalance_and_take_over_a_crashed_member_exactly_once() -> TestResult {
    for seed in seeds(2_000..2_010) {
        if let Err(e) = run_group_schedule(seed) {
            panic!("group schedule failed; replay with BROOK_CRASH_SEED={seed}: {e}");
        }
    }
    Ok(())
}

fn run_group_schedule(seed: u64) -> Result<(), Box<dyn Error>> {
    use brook_runtime::thread::Assignment;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let inputs = 100 + rng.below(100) as i64;
    let cluster = MemoryCluster::new();
    create_topics(&cluster)?;
    let topology = Arc::new(topology()?);
    let dirs = [state_dir()?, state_dir()?, state_dir()?];
    let member = |k: usize, now| -> Result<StreamThread, RuntimeError> {
        let mut config = StreamsConfig::new(APP)
            .state_dir(dirs[k].path())
            .exactly_once();
        config.instance_id = format!("member-{k}");
        // Work piles up between commits, so rebalances revoke tasks with
        // uncommitted results.
        config.commit_interval =
            Duration::from_millis(10 * (1 + rng_below(seed, k as u64, 5) as u64));
        config.max_poll_records = 1 + rng_below(seed, k as u64 + 7, 7);
        StreamThread::start(
            &topology,
            config,
            &cluster,
            Assignment::Group,
            now,
            ThreadOptions::default(),
        )
    };
    let mut members: Vec<Option<StreamThread>> =
        vec![Some(member(0, 0)?), Some(member(1, 0)?), None];
    let join_at = 10 + rng.below(20);
    let crash_at = join_at + 5 + rng.below(20);
    let victim = rng.below(3) as usize;
    let mut produced = 0;
    let mut now = 0;
    for step in 0..20_000u64 {
        now += 10;
        if produced < inputs {
            let to = (produced + 1 + rng.below(4) as i64).min(inputs);
            produce_inputs(&cluster, produced, to)?;
            produced = to;
        }
        if step == join_at {
            members[2] = Some(member(2, now)?);
        }
        if step == crash_at {
            // Dropped without closing: its transaction stays open until
            // its successor fences it; the group moves its partitions.
            members[victim] = None;
            members[victim] = Some(member(victim, now)?);
        }
        for m in members.iter_mut().flatten() {
            m.run_once(now)?;
        }
        if produced == inputs && step > crash_at && all_consumed(&cluster)? {
            break;
        }
    }
    if !all_consumed(&cluster)? {
        return Err("input not consumed".into());
    }
    let rebalances: u64 = members.iter().flatten().map(StreamThread::rebalances).sum();
    if rebalances < 3 {
        return Err(format!("only {rebalances} rebalances").into());
    }
    for m in members.iter_mut() {
        if let Some(m) = m.take() {
            m.close()?;
        }
    }
    verify_outputs(&cluster, inputs, ProcessingGuarantee::ExactlyOnceV2)
}

/// A number below `n` for member `k` of schedule `seed`.
fn rng_below(seed: u64, k: u64, n: u64) -> usize {
    Rng((seed + 1).wrapping_mul(31).wrapping_add(k) | 1).below(n) as usize
}
