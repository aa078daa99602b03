//! Exactly-once system tests on Apache Kafka, in the shape of Kafka Streams'
//! EOS system tests: a driver writes keyed, sequenced records to a
//! multi-partition input while instances of `brook-eos-test` (echo, a 1 s
//! windowed count, a repartitioned sum; RocksDB state; exactly_once_v2,
//! 100 ms commits) are SIGKILLed and restarted at random moments — some
//! right after a restart, so during restore and rebalancing, some with
//! their state directory wiped. A verifier reading read_committed then
//! checks every input exactly once and in order in the echo output, every
//! windowed count and sum equal to an oracle computed from the input, and
//! prints `ALL-RECORDS-DELIVERED` or the first discrepancy. Records of
//! aborted transactions are counted with a read_uncommitted reader, to show
//! that there were some to hide.
//!
//! Also: a zombie (SIGSTOPped past its session timeout while another
//! instance takes its partitions, then SIGCONT) is fenced and writes no
//! duplicate; the broker SIGKILLed and restarted mid-stream; a static
//! member killed and restarted resumes without waiting out its session;
//! the same workload at at_least_once loses nothing.
//!
//! `BROOK_EOS_KILLS` (default 10) sets the least number of kills per run,
//! `BROOK_EOS_RECORDS` (default 12,000) the input size; `make soak` runs
//! more.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brook_runtime::cluster::{Cluster, Isolation, ProducedRecord};
use brook_runtime::kafka::KafkaCluster;
use brook_testkit::{KafkaOptions, Restart, TestBroker, read_topic, read_topic_with};
use brook_topology::serdes::{Json, Serde};
use brook_topology::{Headers, TopicSpec};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_brook-eos-test");
const PARTITIONS: i32 = 3;
const KEYS: i64 = 30;
/// Input timestamps advance this much per record (50 records a 1 s window).
const TS_STEP_MS: i64 = 20;

/// The first input timestamp: half an hour ago, so that neither the
/// broker's retention (7 days: older records would be deleted under the
/// verifier) nor `log.message.timestamp.after.max.ms` (1 h ahead) touches
/// a run of up to 90,000 records.
fn ts_base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (brook_testkit::now_ms() - 30 * 60 * 1000) / 1000 * 1000)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small, seeded PRNG (xorshift64*): the seed is printed, so a failing
/// schedule can be replayed with `BROOK_EOS_SEED`.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("BROOK_EOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("schedule seed {seed} (BROOK_EOS_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

#[derive(Clone)]
struct Topics {
    input: String,
    echo: String,
    windowed: String,
    sums: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Consumer-group assignment with this many instances.
    Group(u32),
    /// Static assignment: instance k of n.
    Static(u32),
}

impl Mode {
    fn instances(self) -> u32 {
        match self {
            Mode::Group(n) | Mode::Static(n) => n,
        }
    }
}

struct Instance {
    index: u32,
    state: PathBuf,
    child: Option<Child>,
    incarnation: u32,
}

/// The application's instances, their logs and the kills done to them.
struct Fleet {
    bootstrap: String,
    app: String,
    topics: Topics,
    guarantee: &'static str,
    mode: Mode,
    dir: tempfile::TempDir,
    instances: Vec<Instance>,
    kills: u32,
    wipes: u32,
    /// The instances' `session.timeout.ms` (6 s unless a test sets it).
    session_timeout_ms: u64,
    /// Group mode: the instances join as static members (named
    /// `member-<index>`).
    static_membership: bool,
}

impl Fleet {
    fn new(
        broker: &TestBroker,
        app: String,
        topics: Topics,
        guarantee: &'static str,
        mode: Mode,
    ) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let instances = (0..mode.instances())
            .map(|index| Instance {
                index,
                state: dir.path().join(format!("state-{index}")),
                child: None,
                incarnation: 0,
            })
            .collect();
        Ok(Fleet {
            bootstrap: broker.bootstrap().to_owned(),
            app,
            topics,
            guarantee,
            mode,
            dir,
            instances,
            kills: 0,
            wipes: 0,
            session_timeout_ms: 6000,
            static_membership: false,
        })
    }

    /// Copies every instance's logs out of the fleet's temporary
    /// directory (deleted with the fleet) into a new directory that stays,
    /// so a failure can be read after the test; returns it.
    fn keep_logs(&self) -> TestResult<PathBuf> {
        let kept = std::env::temp_dir().join(format!(
            "brook-eos-logs-{}-{}",
            std::process::id(),
            brook_testkit::now_ms()
        ));
        std::fs::create_dir_all(&kept)?;
        for entry in std::fs::read_dir(self.dir.path())? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
            }
        }
        Ok(kept)
    }

    fn log_path(&self, index: u32, incarnation: u32) -> PathBuf {
        self.dir
            .path()
            .join(format!("instance-{index}.{incarnation}.log"))
    }

    fn start(&mut self, i: usize) -> TestResult {
        let index = self.instances[i].index;
        let incarnation = self.instances[i].incarnation + 1;
        let log = File::create(self.log_path(index, incarnation))?;
        let mut command = Command::new(BIN);
        command
            .args(["--bootstrap", &self.bootstrap])
            .args(["--application-id", &self.app])
            .args(["--guarantee", self.guarantee])
            .args(["--commit-interval", "100"])
            .args([
                "--state-dir",
                &self.instances[i].state.display().to_string(),
            ])
            .args(["--input", &self.topics.input, "--echo", &self.topics.echo])
            .args(["--windowed", &self.topics.windowed])
            .args(["--sums", &self.topics.sums])
            .args(["--log", "info,brook_runtime=info"])
            // A killed member's partitions move after 6 s, not 45.
            .args([
                "--kafka.session.timeout.ms",
                &self.session_timeout_ms.to_string(),
            ])
            .args(["--kafka.heartbeat.interval.ms", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match self.mode {
            Mode::Group(_) => {
                command.args(["--instance-id", &format!("member-{index}")]);
                if self.static_membership {
                    command.args(["--static-membership", "true"]);
                }
            }
            Mode::Static(n) => {
                command.args([
                    "--instance",
                    &index.to_string(),
                    "--instances",
                    &n.to_string(),
                ]);
            }
        }
        brook_testkit::die_with_parent(&mut command);
        self.instances[i].child = Some(command.spawn()?);
        self.instances[i].incarnation = incarnation;
        Ok(())
    }

    fn start_all(&mut self) -> TestResult {
        for i in 0..self.instances.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// SIGKILL: no close, no flush, no commit.
    fn kill(&mut self, i: usize) -> TestResult {
        if let Some(mut child) = self.instances[i].child.take() {
            if child.try_wait()?.is_some() {
                return Err(self.died(i).into());
            }
            child.kill()?;
            child.wait()?;
            self.kills += 1;
        }
        Ok(())
    }

    fn wipe(&mut self, i: usize) -> TestResult {
        let state = &self.instances[i].state;
        if state.exists() {
            std::fs::remove_dir_all(state)?;
        }
        self.wipes += 1;
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.instances[i].child.as_ref().map(Child::id)
    }

    /// Fails when an instance exited by itself (none should).
    fn check_alive(&mut self) -> TestResult {
        for i in 0..self.instances.len() {
            if let Some(child) = &mut self.instances[i].child
                && child.try_wait()?.is_some()
            {
                return Err(self.died(i).into());
            }
        }
        Ok(())
    }

    fn died(&self, i: usize) -> String {
        let instance = &self.instances[i];
        format!(
            "instance {} exited by itself; its log:\n{}",
            instance.index,
            self.tail(i)
        )
    }

    /// The log of instance `i`'s current incarnation.
    fn log(&self, i: usize) -> String {
        let instance = &self.instances[i];
        std::fs::read_to_string(self.log_path(instance.index, instance.incarnation))
            .unwrap_or_default()
    }

    fn tail(&self, i: usize) -> String {
        let log = self.log(i);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM every instance and wait for a clean exit.
    fn stop_all(&mut self) -> TestResult {
        for instance in &self.instances {
            if let Some(child) = &instance.child {
                brook_testkit::signal(child.id(), libc::SIGTERM);
            }
        }
        for i in 0..self.instances.len() {
            if let Some(mut child) = self.instances[i].child.take() {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(status) = child.try_wait()? {
                        if !status.success() {
                            self.instances[i].child = None;
                            return Err(format!(
                                "instance {i} exited with {status} on SIGTERM:\n{}",
                                self.tail(i)
                            )
                            .into());
                        }
                        break;
                    }
                    if Instant::now() > deadline {
                        let stacks = stacks_of(child.id());
                        let _ = child.kill();
                        let _ = child.wait();
                        // (librdkafka's send_offsets_to_transaction, which
                        // can block forever, runs on a helper thread that a
                        // stuck call is left on: the instance still stops.)
                        return Err(format!(
                            "instance {i} did not stop within 60 s of SIGTERM:\n{}\n\
                             its threads:\n{stacks}",
                            self.tail(i)
                        )
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Input record `i`: key `k<i % KEYS>`, value the key's sequence number
/// (`i / KEYS`), timestamp 20 ms after record `i - 1`'s.
fn sequenced(input: &str, i: u64) -> ProducedRecord {
    let i = i as i64;
    ProducedRecord {
        topic: input.to_owned(),
        partition: None,
        key: Some(format!("k{}", i % KEYS).into_bytes()),
        value: Json::<i64>::new()
            .serialize(&(i / KEYS))
            .expect("an integer serializes"),
        timestamp: ts_base_ms() + i * TS_STEP_MS,
        headers: Headers::new(),
    }
}

/// Writes `records` keyed, sequenced records (key `k<i % KEYS>`, value the
/// key's sequence number, timestamps 20 ms apart) at about `rate` a second.
fn drive(
    cluster: Arc<KafkaCluster>,
    input: String,
    records: u64,
    rate: u64,
    written: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let result = (|| -> TestResult {
            let mut producer = cluster.producer()?;
            let started = Instant::now();
            for i in 0..records {
                producer.send(sequenced(&input, i))?;
                written.store(i + 1, Ordering::Relaxed);
                let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    producer.flush()?;
                    std::thread::sleep(wait);
                }
            }
            producer.flush()?;
            Ok(())
        })();
        done.store(true, Ordering::SeqCst);
        result.map_err(|e| e.to_string())
    })
}

/// What one verification found.
#[derive(Debug, Default)]
struct Verified {
    inputs: usize,
    echoed: usize,
    windows: usize,
    groups: usize,
    /// Echo records a read_uncommitted reader sees beyond the committed
    /// ones: what aborted transactions wrote.
    aborted_echo_records: usize,
}

fn text(bytes: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).into_owned()
}

fn int(bytes: &Option<Vec<u8>>) -> Result<i64, String> {
    Json::<i64>::new()
        .deserialize(bytes.as_deref())
        .map_err(|e| format!("not a JSON integer: {e}"))
}

/// Reads everything (read_committed) and compares with the oracle from the
/// input. `exactly_once`: every input exactly once and every aggregate
/// exact; otherwise (at-least-once): every input at least once, in order of
/// first appearance, and every aggregate at least its exact value.
fn verify(
    cluster: &KafkaCluster,
    topics: &Topics,
    expected_inputs: usize,
    exactly_once: bool,
) -> Result<Verified, String> {
    let reader = format!("verifier-{}", std::process::id());
    let read = |topic: &str| {
        read_topic(cluster, topic, &reader, Duration::from_secs(120))
            .map_err(|e| format!("reading {topic}: {e}"))
    };
    let input = read(&topics.input)?;
    if input.len() != expected_inputs {
        let mut per_partition = BTreeMap::new();
        for r in &input {
            *per_partition.entry(r.tp.partition).or_insert(0usize) += 1;
        }
        return Err(format!(
            "the verifier read {} of the {expected_inputs} input records (per partition: \
             {per_partition:?})",
            input.len()
        ));
    }
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut windows: BTreeMap<String, i64> = BTreeMap::new();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for r in &input {
        let key = text(&r.key);
        let value = int(&r.value)?;
        per_key.entry(key.clone()).or_default().push(value);
        let start = r.timestamp - r.timestamp.rem_euclid(1000);
        *windows.entry(format!("{key}@{start}")).or_default() += 1;
        let n: i64 = key.trim_start_matches('k').parse().unwrap_or(0);
        *sums.entry(format!("g{}", n % 3)).or_default() += value;
    }

    let echo = read(&topics.echo)?;
    let mut echoed: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &echo {
        echoed.entry(text(&r.key)).or_default().push(int(&r.value)?);
    }
    for (key, want) in &per_key {
        let got = echoed.get(key).cloned().unwrap_or_default();
        if exactly_once {
            if &got != want {
                let at = want
                    .iter()
                    .zip(&got)
                    .position(|(w, g)| w != g)
                    .unwrap_or(want.len().min(got.len()));
                return Err(format!(
                    "echo of {key}: {} records for {} inputs; first difference at position {at}: \
                     input {:?}, echo {:?}",
                    got.len(),
                    want.len(),
                    want.get(at),
                    got.get(at)
                ));
            }
        } else {
            let mut seen = BTreeSet::new();
            let firsts: Vec<i64> = got.iter().copied().filter(|v| seen.insert(*v)).collect();
            if &firsts != want {
                return Err(format!(
                    "echo of {key}: {} distinct of {} inputs",
                    firsts.len(),
                    want.len()
                ));
            }
        }
    }
    if let Some(extra) = echoed.keys().find(|k| !per_key.contains_key(*k)) {
        return Err(format!("echo has key {extra:?}, which no input has"));
    }

    let latest = |records: &[brook_runtime::cluster::ConsumedRecord]| {
        let mut latest = BTreeMap::new();
        for r in records {
            latest.insert(text(&r.key), int(&r.value)?);
        }
        Ok::<_, String>(latest)
    };
    let compare = |what: &str,
                   oracle: &BTreeMap<String, i64>,
                   got: &BTreeMap<String, i64>|
     -> Result<(), String> {
        for (key, want) in oracle {
            match got.get(key) {
                Some(g) if g == want || (!exactly_once && g > want) => {}
                other => {
                    return Err(format!("{what} {key}: expected {want}, found {other:?}"));
                }
            }
        }
        if let Some(extra) = got.keys().find(|k| !oracle.contains_key(*k)) {
            return Err(format!("{what} {extra:?} has no input"));
        }
        Ok(())
    };
    compare("window", &windows, &latest(&read(&topics.windowed)?)?)?;
    compare("sum of group", &sums, &latest(&read(&topics.sums)?)?)?;

    let uncommitted = read_topic_with(
        cluster,
        &topics.echo,
        &reader,
        Isolation::ReadUncommitted,
        Duration::from_secs(120),
    )
    .map_err(|e| format!("reading {} uncommitted: {e}", topics.echo))?;
    Ok(Verified {
        inputs: input.len(),
        echoed: echo.len(),
        windows: windows.len(),
        groups: sums.len(),
        aborted_echo_records: uncommitted.len().saturating_sub(echo.len()),
    })
}

/// Verifies until it passes (the instances are catching up) or `within`
/// passes; returns the last verdict.
fn verify_eventually(
    cluster: &KafkaCluster,
    topics: &Topics,
    expected_inputs: usize,
    exactly_once: bool,
    fleet: &mut Fleet,
    within: Duration,
) -> TestResult<Verified> {
    let started = Instant::now();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        fleet.check_alive()?;
        match verify(cluster, topics, expected_inputs, exactly_once) {
            Ok(verified) => return Ok(verified),
            Err(discrepancy) => {
                let echoed = read_topic(cluster, &topics.echo, "progress", Duration::from_secs(60))
                    .map(|r| r.len())
                    .unwrap_or(0);
                if echoed != last_count {
                    last_count = echoed;
                    last_progress = Instant::now();
                }
                // A wrong value that no more processing can mend (too many
                // echo records under exactly-once) fails at once.
                let hopeless = exactly_once
                    && discrepancy.contains("records for")
                    && echo_overflow(&discrepancy);
                if hopeless
                    || started.elapsed() > within
                    || last_progress.elapsed() > Duration::from_secs(60)
                {
                    println!("DISCREPANCY: {discrepancy}");
                    match fleet.keep_logs() {
                        Ok(kept) => println!("the instances' logs are kept in {}", kept.display()),
                        Err(e) => println!("the instances' logs could not be kept: {e}"),
                    }
                    return Err(discrepancy.into());
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// "echo of k: N records for M inputs" with N > M.
fn echo_overflow(discrepancy: &str) -> bool {
    let numbers: Vec<usize> = discrepancy
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    // The key's digits come first.
    matches!(numbers[..], [_, got, want, ..] if got > want)
}

struct Run {
    broker: TestBroker,
    cluster: Arc<KafkaCluster>,
    topics: Topics,
    app: String,
}

impl Run {
    /// The application's instances on this run's broker and topics.
    fn fleet(&self, guarantee: &'static str, mode: Mode) -> TestResult<Fleet> {
        Fleet::new(
            &self.broker,
            self.app.clone(),
            self.topics.clone(),
            guarantee,
            mode,
        )
    }
}

fn setup(broker: TestBroker, name: &str) -> TestResult<Run> {
    let ns = broker.namespace();
    let topics = Topics {
        input: ns.topic(&format!("{name}-data")),
        echo: ns.topic(&format!("{name}-echo")),
        windowed: ns.topic(&format!("{name}-windowed")),
        sums: ns.topic(&format!("{name}-sums")),
    };
    // The broker's default replication: 1 on one node, 3 on a cluster.
    let spec = |topic: &str| {
        TopicSpec::new(topic, PARTITIONS).replication(TopicSpec::BROKER_DEFAULT_REPLICATION)
    };
    broker.create_topics(&[
        spec(&topics.input),
        spec(&topics.echo),
        spec(&topics.windowed),
        spec(&topics.sums),
    ])?;
    let cluster = Arc::new(KafkaCluster::new(broker.config().clone())?);
    Ok(Run {
        app: ns.group(name),
        broker,
        cluster,
        topics,
    })
}

/// Random kills and restarts while the driver writes, at least `min_kills`.
fn chaos(
    fleet: &mut Fleet,
    rng: &mut Rng,
    done: &AtomicBool,
    min_kills: u32,
    deadline: Instant,
) -> TestResult {
    let n = fleet.instances.len();
    while !done.load(Ordering::SeqCst) || fleet.kills < min_kills {
        if Instant::now() > deadline {
            return Err(format!("only {} kills before the deadline", fleet.kills).into());
        }
        std::thread::sleep(rng.millis(700, 2500));
        fleet.check_alive()?;
        let i = rng.below(n as u64) as usize;
        fleet.kill(i)?;
        let wiped = rng.below(5) == 0;
        if wiped {
            fleet.wipe(i)?;
        }
        std::thread::sleep(rng.millis(0, 1200));
        fleet.start(i)?;
        // Now and then, kill it again soon after: mid-restore, mid-rebalance.
        if rng.below(3) == 0 {
            std::thread::sleep(rng.millis(200, 900));
            fleet.kill(i)?;
            fleet.start(i)?;
        }
        eprintln!(
            "kill {}: instance {i}{}",
            fleet.kills,
            if wiped { " (state wiped)" } else { "" }
        );
    }
    Ok(())
}

fn report(what: &str, fleet: &Fleet, verified: &Verified, took: Duration) {
    println!(
        "ALL-RECORDS-DELIVERED ({what}): {} inputs, {} echoed, {} windows, {} groups exact; \
         {} kills ({} with state wiped); {} echo records of aborted transactions hidden; {:.1} s",
        verified.inputs,
        verified.echoed,
        verified.windows,
        verified.groups,
        fleet.kills,
        fleet.wipes,
        verified.aborted_echo_records,
        took.as_secs_f64()
    );
}

fn kill_run(mode: Mode, guarantee: &'static str, name: &str) -> TestResult {
    let started = Instant::now();
    let run = setup(TestBroker::kafka()?, name)?;
    let records = env_or("BROOK_EOS_RECORDS", 12_000);
    let min_kills = env_or("BROOK_EOS_KILLS", 10) as u32;
    let mut fleet = run.fleet(guarantee, mode)?;
    fleet.start_all()?;
    let (written, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    // About 25 s of input; the kills go on until there were enough.
    let driver = drive(
        run.cluster.clone(),
        run.topics.input.clone(),
        records,
        (records / 25).max(100),
        written.clone(),
        done.clone(),
    );
    let mut rng = Rng::seeded();
    let chaos_result = chaos(
        &mut fleet,
        &mut rng,
        &done,
        min_kills,
        Instant::now() + Duration::from_secs(600),
    );
    let driven = driver.join().map_err(|_| "the driver panicked")?;
    chaos_result?;
    driven?;
    let exactly_once = guarantee == "exactly_once_v2";
    let verified = verify_eventually(
        &run.cluster,
        &run.topics,
        records as usize,
        exactly_once,
        &mut fleet,
        Duration::from_secs(300),
    )?;
    fleet.stop_all()?;
    // After a clean stop, once more: nothing changed for the worse.
    let verified_after = verify(&run.cluster, &run.topics, records as usize, exactly_once)?;
    assert!(verified_after.echoed >= verified.echoed);
    assert_eq!(
        verified.inputs as u64, records,
        "the driver wrote every record once"
    );
    assert!(fleet.kills >= min_kills, "{} kills", fleet.kills);
    // Kills usually land mid-transaction and leave aborted records for the
    // verifier to find hidden; not always (a run measured here had none:
    // its kills fell between transactions and into restores), so this is
    // reported, not asserted.
    if exactly_once && verified.aborted_echo_records == 0 {
        eprintln!("{name}: no kill left an aborted transaction's records this run");
    }
    report(name, &fleet, &verified, started.elapsed());
    Ok(())
}

#[test]
fn eos_group_mode_three_instances_killed_at_random_deliver_every_record_exactly_once() -> TestResult
{
    kill_run(Mode::Group(3), "exactly_once_v2", "eos-group")
}

#[test]
fn eos_static_mode_two_instances_killed_at_random_deliver_every_record_exactly_once() -> TestResult
{
    kill_run(Mode::Static(2), "exactly_once_v2", "eos-static")
}

#[test]
fn at_least_once_instances_killed_at_random_lose_nothing() -> TestResult {
    kill_run(Mode::Group(2), "at_least_once", "alos-group")
}

/// A zombie: instance 0 is SIGSTOPped longer than its session timeout, so
/// the group gives its partitions to instance 1; SIGCONT wakes it with an
/// open transaction and records it believes it owns. It must be fenced
/// (its commit refused) and write nothing the verifier sees twice.
#[test]
fn a_zombie_woken_after_its_partitions_moved_is_fenced_and_writes_no_duplicate() -> TestResult {
    let started = Instant::now();
    let run = setup(TestBroker::kafka()?, "eos-zombie")?;
    let records = 6_000;
    let mut fleet = run.fleet("exactly_once_v2", Mode::Group(2))?;
    fleet.start_all()?;
    let (written, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let driver = drive(
        run.cluster.clone(),
        run.topics.input.clone(),
        records,
        300,
        written.clone(),
        done.clone(),
    );
    std::thread::sleep(Duration::from_secs(6));
    let zombie = fleet.pid(0).ok_or("instance 0 runs")?;
    assert!(brook_testkit::signal(zombie, libc::SIGSTOP));
    eprintln!(
        "instance 0 stopped at {} records written",
        written.load(Ordering::Relaxed)
    );
    // Past the 6 s session timeout and a rebalance.
    std::thread::sleep(Duration::from_secs(12));
    assert!(brook_testkit::signal(zombie, libc::SIGCONT));
    eprintln!(
        "instance 0 woken at {} records written",
        written.load(Ordering::Relaxed)
    );
    driver.join().map_err(|_| "the driver panicked")??;
    let verified = verify_eventually(
        &run.cluster,
        &run.topics,
        records as usize,
        true,
        &mut fleet,
        Duration::from_secs(240),
    )?;
    let log0 = fleet.tail(0);
    fleet.stop_all()?;
    eprintln!("the zombie's log (tail):\n{log0}");
    // It was refused (its group membership or its transaction gone) and
    // took its tasks up again from the committed state: by rejoining, by
    // dropping the aborted transaction, or (its records timed out while it
    // was stopped) by a replaced stream thread; or it found its session
    // expired before it committed anything and gave its tasks up.
    assert!(
        log0.contains("rebalanced mid-commit; rejoining")
            || log0.contains("resuming from the committed state")
            || log0.contains("its tasks resume from their last commit")
            || log0.contains("Consumer group session timed out"),
        "the zombie was fenced:\n{log0}"
    );
    report("zombie", &fleet, &verified, started.elapsed());
    Ok(())
}

/// Static membership (KIP-345): an instance SIGKILLed and restarted at
/// once rejoins under its old name and gets its partitions back without
/// waiting for the dead incarnation's session (30 s here) to time out.
/// Without static membership the group holds those partitions until then.
#[test]
fn a_static_member_killed_and_restarted_resumes_before_its_session_times_out() -> TestResult {
    const SESSION: Duration = Duration::from_secs(30);
    let run = setup(TestBroker::kafka()?, "eos-static-member")?;
    let mut fleet = run.fleet("exactly_once_v2", Mode::Group(2))?;
    fleet.session_timeout_ms = SESSION.as_millis() as u64;
    fleet.static_membership = true;
    fleet.start_all()?;
    let write = |range: std::ops::Range<u64>| -> TestResult {
        let mut producer = run.cluster.producer()?;
        for i in range {
            producer.send(sequenced(&run.topics.input, i))?;
        }
        producer.flush()?;
        Ok(())
    };
    let (first, second) = (600, 1200);
    write(0..first)?;
    // Both instances own partitions and processed everything so far.
    verify_eventually(
        &run.cluster,
        &run.topics,
        first as usize,
        true,
        &mut fleet,
        Duration::from_secs(120),
    )?;
    fleet.kill(0)?;
    let killed = Instant::now();
    fleet.start(0)?;
    write(first..second)?;
    let verified = verify_eventually(
        &run.cluster,
        &run.topics,
        second as usize,
        true,
        &mut fleet,
        Duration::from_secs(120),
    )?;
    let resumed = killed.elapsed();
    eprintln!(
        "every record processed {:.1} s after the kill (session timeout {} s)",
        resumed.as_secs_f64(),
        SESSION.as_secs()
    );
    let (log0, log1) = (fleet.log(0), fleet.log(1));
    fleet.stop_all()?;
    assert!(
        resumed < SESSION / 2,
        "the restarted static member resumed only {:.1} s after the kill; its log:\n{log0}\n\
         the other instance's:\n{log1}",
        resumed.as_secs_f64()
    );
    report("static member", &fleet, &verified, resumed);
    Ok(())
}

/// The broker SIGKILLed mid-stream and started again on its data: the
/// instances wait, retry and go on; nothing is lost or duplicated.
#[test]
fn eos_survives_the_broker_killed_and_restarted_mid_stream() -> TestResult {
    let started = Instant::now();
    let mut run = setup(TestBroker::kafka()?, "eos-broker-kill")?;
    let records = 6_000;
    let mut fleet = run.fleet("exactly_once_v2", Mode::Static(2))?;
    fleet.start_all()?;
    // The driver writes the first half, the broker dies and comes back,
    // then the second half.
    for half in 0..2 {
        let (written, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let input = run.topics.input.clone();
        let cluster = run.cluster.clone();
        let handle = std::thread::spawn(move || -> Result<(), String> {
            let result = (|| -> TestResult {
                let mut producer = cluster.producer()?;
                let offset = half * records / 2;
                for i in offset..offset + records / 2 {
                    producer.send(sequenced(&input, i))?;
                    written.store(i + 1, Ordering::Relaxed);
                    if i % 100 == 0 {
                        producer.flush()?;
                        std::thread::sleep(Duration::from_millis(40));
                    }
                }
                producer.flush()?;
                Ok(())
            })();
            done.store(true, Ordering::SeqCst);
            result.map_err(|e| e.to_string())
        });
        handle.join().map_err(|_| "the driver panicked")??;
        if half == 0 {
            // Mid-stream: the instances are still working on the first half.
            run.broker.restart(Restart::Crash)?;
            eprintln!("broker killed and restarted");
        }
    }
    let verified = verify_eventually(
        &run.cluster,
        &run.topics,
        records as usize,
        true,
        &mut fleet,
        Duration::from_secs(300),
    );
    // A discrepancy is brook's unless the broker says it dropped a
    // transaction marker of this test's partitions: a single Kafka 4.4 node
    // restarted after SIGKILL can complete an abort without writing its
    // marker to a partition its metadata lacks for a moment (README, "Known
    // limits of the test brokers"); the hanging transaction is then
    // committed by the producer id's next one.
    let verified = match verified {
        Err(e) => {
            let skipped: Vec<String> = run
                .broker
                .kafka_broker()
                .map(|kafka| kafka.log_lines_containing("Couldn't find leader endpoint"))
                .unwrap_or_default()
                .into_iter()
                // The test's namespace: its topics' and its app's prefix.
                .filter(|line| line.contains(run.app.split(".group.").next().unwrap_or("")))
                .collect();
            if skipped.is_empty() {
                return Err(e);
            }
            eprintln!(
                "KAFKA-DROPPED-TXN-MARKERS: the broker completed transactions without their \
                 markers, so the verifier's discrepancy is the broker's:\n{}\n{e}",
                skipped.join("\n")
            );
            fleet.stop_all()?;
            return Ok(());
        }
        Ok(verified) => verified,
    };
    // How the instances came through (reported: which one happens is up
    // to timing; the verifier above is the check).
    let count = |what: &str| (0..2).filter(|&i| fleet.log(i).contains(what)).count();
    eprintln!(
        "of 2 instances after the restart: {} dropped an aborted transaction ({} of them \
         fenced for the transaction's timeout), {} replaced a failed stream thread",
        count("resuming from the committed state"),
        count("fenced after the transaction was open"),
        count("replacing the failed stream thread")
    );
    fleet.stop_all()?;
    report("broker killed", &fleet, &verified, started.elapsed());
    Ok(())
}

/// `make test-cluster`: three brokers (replication 3, min.insync.replicas
/// 2); the leader of an input partition, then the leader of a changelog
/// partition, SIGKILLed mid-stream and started again.
#[test]
fn cluster_eos_survives_partition_leaders_killed_mid_stream() -> TestResult {
    let started = Instant::now();
    let mut run = setup(
        TestBroker::kafka_with(KafkaOptions::cluster(3))?,
        "eos-cluster",
    )?;
    let records = 6_000;
    let mut fleet = run.fleet("exactly_once_v2", Mode::Group(2))?;
    fleet.start_all()?;
    let (written, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let driver = drive(
        run.cluster.clone(),
        run.topics.input.clone(),
        records,
        250,
        written.clone(),
        done.clone(),
    );
    let changelog = format!("{}-sums-changelog", run.app);
    let kafka = run.broker.kafka_broker_mut().ok_or("a Kafka cluster")?;
    for (round, topic) in [&run.topics.input, &changelog].into_iter().enumerate() {
        std::thread::sleep(Duration::from_secs(5));
        // The changelog exists once an instance has set up its tasks.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            match kafka.leader(topic, 0) {
                Ok(leader) => break leader,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        kafka.kill_node(leader)?;
        eprintln!(
            "kill {round}: node {leader}, leader of {topic}[0], at {} records written",
            written.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_secs(6));
        fleet.check_alive()?;
        kafka.resume_node(leader)?;
    }
    driver.join().map_err(|_| "the driver panicked")??;
    let verified = verify_eventually(
        &run.cluster,
        &run.topics,
        records as usize,
        true,
        &mut fleet,
        Duration::from_secs(300),
    )?;
    // Reported: how often librdkafka's send_offsets_to_transaction got
    // stuck and brook gave its producer up (README, "Known limits").
    let stuck = (0..fleet.instances.len())
        .map(|i| {
            fleet
                .log(i)
                .matches("librdkafka's transaction manager is stuck")
                .count()
        })
        .sum::<usize>();
    eprintln!("stuck producers given up (librdkafka send_offsets hang): {stuck}");
    fleet.stop_all()?;
    // brook's changelogs took the cluster's replication (-1: the broker's
    // default), so they survived their leader.
    let described = kafka.run_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            &kafka.internal_bootstrap(),
            "--describe",
            "--topic",
            &changelog,
        ],
    )?;
    let described = String::from_utf8_lossy(&described.stdout).into_owned();
    assert!(
        described.contains("ReplicationFactor: 3") && described.contains("cleanup.policy=compact"),
        "{described}"
    );
    report(
        "three brokers, leaders killed",
        &fleet,
        &verified,
        started.elapsed(),
    );
    Ok(())
}

#[test]
fn echo_overflow_reads_the_counts_of_a_discrepancy() {
    assert!(echo_overflow(
        "echo of k7: 401 records for 400 inputs; first difference"
    ));
    assert!(!echo_overflow(
        "echo of k7: 399 records for 400 inputs; first difference"
    ));
}

/// The stack of every thread of process `pid`, by gdb if the machine has
/// it: where a process that does not stop hangs.
fn stacks_of(pid: u32) -> String {
    match Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 25",
        ])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
            .take(400)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no gdb: {e})"),
    }
}
