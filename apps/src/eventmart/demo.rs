//! `make demo`: EventMart end to end in one process, watched live.
//!
//! 1. Starts the embedded broker (librdkafka's mock cluster, reachable by
//!    any Kafka client on this machine) and brook's schema registry (in
//!    memory, loopback) — or uses a real Kafka and registry when given
//!    `--bootstrap` (the registry then defaults to docker-compose's
//!    `http://localhost:8081`; with `--registry-topic _schemas` brook's
//!    registry runs in the process and keeps its schemas in that topic, as
//!    `make demo-kafka` does).
//! 2. Provisions the topics from `apps/eventmart/topics.toml`.
//! 3. Starts every app (each its own brook instance) and the dashboard.
//! 4. Runs the generator at `--rate` events per second and prints a
//!    summary line every few seconds.
//! 5. On Ctrl-C (or after `--duration`): stops the generator, lets the apps
//!    catch up, checks their results against what was generated, stops
//!    the apps cleanly (commit, checkpoint), then the registry and broker.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::kafka::{KafkaAdmin, KafkaCluster, KafkaConfig};
use brook_runtime::streams::{KafkaStreams, StoreQueries, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_schemas::registry::Registry;
use brook_schemas::server::{RegistryServer, ServerConfig};
use brook_topology::{Headers, Windowed};

use super::apps::{APPS, EventMartConfig, stores, topology};
use super::dashboard::{Dashboard, RunningApp, serve};
use super::embedded::{EmbeddedBroker, EmbeddedCluster};
use super::generate::{Pace, run_paced};
use super::generator::{
    Encoder, Generated, Generator, GeneratorConfig, GeneratorStats, SchemaMode,
};
use super::topics::{Mode, Status, TopicsFile, all_match, provision};
use crate::args::Args;
use crate::registry::ClusterSchemaStore;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A real Kafka instead of the embedded broker.
    pub bootstrap: Option<String>,
    /// A schema registry instead of the embedded one.
    pub registry: Option<String>,
    /// With `bootstrap` and no `registry`: brook's registry in the process,
    /// storing its schemas in this compacted topic of that Kafka.
    pub registry_topic: Option<String>,
    /// Generator events per second.
    pub rate: f64,
    /// Stop by itself after this long (`None`: at Ctrl-C).
    pub duration: Option<Duration>,
    /// Generator seed.
    pub seed: u64,
    /// Generator users.
    pub users: u32,
    /// Click stream schema.
    pub schema: SchemaMode,
    /// Where the dashboard listens.
    pub dashboard_addr: String,
    /// Lake directory (`None`: a temporary one, removed at the end).
    pub lake: Option<String>,
    /// Summary line interval.
    pub summary_every: Duration,
    /// Multiplies the generator's lifecycle delays (orders ship 30–120 s
    /// and arrive 2–5 min after payment at 1.0).
    pub lifecycle_scale: f64,
    /// Topic prefix.
    pub prefix: String,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            bootstrap: None,
            registry: None,
            registry_topic: None,
            rate: 100.0,
            duration: None,
            seed: 42,
            users: 200,
            schema: SchemaMode::Dual,
            dashboard_addr: "127.0.0.1:8088".into(),
            lake: None,
            summary_every: Duration::from_secs(5),
            lifecycle_scale: 0.2,
            prefix: String::new(),
        }
    }
}

/// What a demo run ended with.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// What was generated.
    pub generated: GeneratorStats,
    /// Each check and whether it held.
    pub checks: Vec<(String, bool)>,
}

impl DemoReport {
    /// Whether every check held.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

/// Prints a line; a closed stdout (the reader went away) is not a reason
/// to stop the demo uncleanly.
fn say(line: impl AsRef<str>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

struct Running {
    name: &'static str,
    streams: KafkaStreams,
}

fn summary_line(
    started: Instant,
    stats: &GeneratorStats,
    apps: &[RunningApp],
    funnel: &BTreeMap<String, i64>,
    url: &str,
) -> String {
    let secs = started.elapsed().as_secs_f64();
    let (mut processed, mut lag, mut running) = (0u64, 0i64, 0usize);
    for a in apps {
        for t in a.metrics.threads() {
            processed += t.tasks.processed;
            lag += t.io.lag;
        }
        if a.metrics.state() == StreamsState::Running {
            running += 1;
        }
    }
    let f = |k: &str| funnel.get(k).copied().unwrap_or(0);
    format!(
        "[{secs:>5.0}s] generated {} ({:.0}/s) · orders placed {} paid {} failed {} shipped {} delivered {} · apps {running}/{} running, {processed} records processed, lag {lag} · {url}",
        stats.total(),
        stats.total() as f64 / secs.max(1e-3),
        f("1-placed"),
        f("2-paid"),
        f("x-payment-failed"),
        f("3-shipped"),
        f("4-delivered"),
        apps.len(),
    )
}

fn funnel_of(queries: Option<&StoreQueries>) -> BTreeMap<String, i64> {
    queries
        .and_then(|q| {
            q.read_store::<String, i64>(stores::ORDER_FUNNEL, Duration::from_secs(5))
                .ok()
        })
        .unwrap_or_default()
}

/// Runs the demo until `stop` is set or the duration passes.
pub fn run_demo(options: &DemoOptions, stop: Arc<AtomicBool>) -> Result<DemoReport> {
    let topics = TopicsFile::eventmart(&options.prefix);
    // 1. Broker and registry.
    let broker = match &options.bootstrap {
        Some(_) => None,
        None => Some(Arc::new(EmbeddedBroker::start(1)?)),
    };
    let cluster: Arc<dyn Cluster> = match (&broker, &options.bootstrap) {
        (Some(broker), _) => {
            say(format!(
                "embedded broker (librdkafka mock cluster) at {}",
                broker.bootstrap()
            ));
            Arc::new(EmbeddedCluster::new(broker.clone(), |c| c)?)
        }
        (None, Some(bootstrap)) => {
            say(format!("Kafka at {bootstrap}"));
            Arc::new(
                KafkaCluster::new(KafkaConfig::new(bootstrap.clone()))
                    .context("connecting to Kafka")?,
            )
        }
        (None, None) => unreachable!("one of the two"),
    };
    let mut registry_server = None;
    let mut topic_registry = None;
    let registry_url = match (&options.registry, &options.bootstrap) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) if options.registry_topic.is_some() => {
            let topic = options.registry_topic.as_deref().unwrap_or("_schemas");
            let live = Arc::new(open_topic_registry(&cluster, topic)?);
            topic_registry = Some(live.clone());
            let server = RegistryServer::start(live, ServerConfig::any_loopback_port())
                .context("starting the schema registry")?;
            let url = server.url().to_owned();
            registry_server = Some(server);
            url
        }
        (None, Some(_)) => "http://localhost:8081".into(),
        (None, None) => {
            let server =
                RegistryServer::start_in_memory().context("starting the schema registry")?;
            let url = server.url().to_owned();
            registry_server = Some(server);
            url
        }
    };
    say(format!(
        "schema registry at {registry_url}{}",
        match (&registry_server, &options.registry_topic) {
            (Some(_), Some(topic)) => format!(" (brook-schemas, stored in the topic {topic})"),
            (Some(_), None) => " (brook-schemas, in memory)".to_owned(),
            (None, _) => String::new(),
        }
    ));
    let registry = SchemaRegistryClient::new(RegistryClientConfig::new(registry_url))?;

    // 2. Topics.
    match &options.bootstrap {
        None => {
            cluster.create_topics(&topics.topics)?;
            let mut wrong = Vec::new();
            for t in &topics.topics {
                let partitions = cluster.partition_count(&t.name)?;
                if partitions != t.partitions {
                    wrong.push(format!(
                        "{}: {partitions} partitions, declared {}",
                        t.name, t.partitions
                    ));
                }
            }
            if !wrong.is_empty() {
                bail!("topics differ from the file: {}", wrong.join("; "));
            }
            say(format!(
                "topics: {} created from apps/eventmart/topics.toml, partitions verified (the embedded broker keeps no retention or compaction configs; eventmart-topics applies them on Kafka)",
                topics.topics.len()
            ));
        }
        Some(bootstrap) => {
            let admin = KafkaAdmin::new(&KafkaConfig::new(bootstrap.clone()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reports = runtime.block_on(provision(&admin, &topics, Mode::Apply, true))?;
            for r in &reports {
                say(format!("  {r}"));
            }
            if !all_match(&reports) {
                bail!("some topics differ from apps/eventmart/topics.toml (see above)");
            }
            // Read back what the broker keeps (DescribeConfigs): the created
            // topics too, once their metadata has reached the broker.
            let deadline = Instant::now() + Duration::from_secs(15);
            let verified = loop {
                let reports = runtime.block_on(provision(&admin, &topics, Mode::Verify, true))?;
                if all_match(&reports) || Instant::now() > deadline {
                    break reports;
                }
                std::thread::sleep(Duration::from_millis(300));
            };
            if !all_match(&verified) {
                for r in verified
                    .iter()
                    .filter(|r| matches!(r.status, Status::Differs(_)))
                {
                    say(format!("  {r}"));
                }
                bail!("the broker's topics differ from apps/eventmart/topics.toml (see above)");
            }
            say(format!(
                "topics: {} verified with DescribeConfigs (partitions, cleanup.policy, retention and \
                 the other configs of apps/eventmart/topics.toml)",
                verified.len()
            ));
        }
    }

    // 3. Apps and dashboard.
    let state_dir = tempfile::tempdir().context("a state directory")?;
    let lake_tmp;
    let lake_dir = match &options.lake {
        Some(dir) => dir.clone(),
        None => {
            lake_tmp = tempfile::tempdir().context("a lake directory")?;
            lake_tmp.path().to_string_lossy().into_owned()
        }
    };
    let mut cfg = EventMartConfig::new(&options.prefix, registry.clone());
    cfg.lake_url = lake_dir.clone();
    let mut running: Vec<Running> = Vec::new();
    let mut handles = Vec::new();
    for app in APPS {
        let mut config = StreamsConfig::new(format!("eventmart-{app}")).state_dir(state_dir.path());
        if app == "lake" {
            config = config.exactly_once();
            config.commit_interval = Duration::from_secs(10);
        } else {
            config.commit_interval = Duration::from_secs(1);
        }
        let mut streams = KafkaStreams::new(topology(app, &cfg)?, config, cluster.clone());
        streams.start().with_context(|| format!("starting {app}"))?;
        handles.push(RunningApp {
            name: app.to_owned(),
            queries: streams.store_queries(),
            metrics: streams.metrics_handle(),
        });
        running.push(Running { name: app, streams });
    }
    let wait = Instant::now();
    for r in &running {
        let state = r.streams.wait_for_state(
            StreamsState::Running,
            Duration::from_secs(60).saturating_sub(wait.elapsed()),
        );
        if state != StreamsState::Running {
            bail!(
                "{} did not start: {:?} {:?}",
                r.name,
                state,
                r.streams.errors()
            );
        }
    }
    say(format!(
        "apps running: {} (state in {}, lake in {lake_dir})",
        APPS.join(", "),
        state_dir.path().display()
    ));
    let listener = match TcpListener::bind(&options.dashboard_addr) {
        Ok(l) => l,
        Err(e) => {
            say(format!(
                "dashboard: {} is taken ({e}); using another port",
                options.dashboard_addr
            ));
            TcpListener::bind("127.0.0.1:0")?
        }
    };
    let url = format!("http://{}/", listener.local_addr()?);
    let funnel_queries = handles
        .iter()
        .find(|h| h.name == "order-analytics")
        .map(|h| h.queries.clone());
    let epm_queries = handles
        .iter()
        .find(|h| h.name == "events-per-minute")
        .map(|h| h.queries.clone());
    let dashboard = Arc::new(Dashboard::new(handles.clone(), None));
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || serve(listener, dashboard))?;
    say(format!("dashboard at {url}  (Ctrl-C stops the demo)"));

    // 4. The generator, in its own thread.
    let live = Arc::new(Mutex::new(GeneratorStats::default()));
    let gen_stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let (cluster, live, gen_stop, registry) = (
            cluster.clone(),
            live.clone(),
            gen_stop.clone(),
            registry.clone(),
        );
        let (rate, prefix) = (options.rate, options.prefix.clone());
        let config = GeneratorConfig {
            seed: options.seed,
            users: options.users,
            schema: options.schema,
            lifecycle_scale: options.lifecycle_scale,
            ..GeneratorConfig::default()
        };
        std::thread::Builder::new().name("generator".into()).spawn(
            move || -> Result<GeneratorStats> {
                let encoder = Encoder::new(registry);
                let producer = std::cell::RefCell::new(cluster.producer()?);
                let mut generator = Generator::new(config);
                let mut sink = |e: &Generated| -> Result<()> {
                    producer.borrow_mut().send(ProducedRecord {
                        topic: format!("{prefix}{}", e.topic()),
                        partition: None,
                        key: Some(e.key().as_bytes().to_vec()),
                        value: Some(encoder.encode(e)?),
                        timestamp: e.timestamp(),
                        headers: Headers::new(),
                    })?;
                    Ok(())
                };
                let mut flush = |stats: &GeneratorStats| -> Result<()> {
                    producer.borrow_mut().flush()?;
                    *live.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
                    Ok(())
                };
                let pace = Pace {
                    rate,
                    ..Pace::default()
                };
                run_paced(
                    &mut generator,
                    &pace,
                    &gen_stop,
                    Some(false),
                    &mut sink,
                    &mut flush,
                )
            },
        )?
    };

    // 5. Watch until Ctrl-C or the duration.
    let started = Instant::now();
    let mut next_summary = Instant::now() + options.summary_every;
    loop {
        if stop.load(Ordering::SeqCst)
            || options.duration.is_some_and(|d| started.elapsed() >= d)
            || generator.is_finished()
        {
            break;
        }
        if let Some(r) = running
            .iter()
            .find(|r| r.streams.state() == StreamsState::Error)
        {
            say(format!("{} failed: {:?}", r.name, r.streams.errors()));
            break;
        }
        if Instant::now() >= next_summary {
            next_summary += options.summary_every;
            let stats = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
            say(summary_line(
                started,
                &stats,
                &handles,
                &funnel_of(funnel_queries.as_ref()),
                &url,
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say("stopping the generator…");
    gen_stop.store(true, Ordering::SeqCst);
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))?
        .context("the generator failed")?;

    // 6. Let the apps catch up, then check them against what was generated.
    let clicks: u64 = generated.clicks.values().sum();
    let epm_total = || -> i64 {
        epm_queries
            .as_ref()
            .and_then(|q| {
                q.read_store::<Windowed<String>, i64>(
                    stores::EVENTS_PER_MINUTE,
                    Duration::from_secs(5),
                )
                .ok()
            })
            .map(|m| m.values().sum())
            .unwrap_or(-1)
    };
    let caught_up = Instant::now();
    let mut funnel = funnel_of(funnel_queries.as_ref());
    while caught_up.elapsed() < Duration::from_secs(60)
        && !(epm_total() == clicks as i64
            && funnel.get("1-placed").copied().unwrap_or(0) == generated.orders as i64)
    {
        std::thread::sleep(Duration::from_millis(200));
        funnel = funnel_of(funnel_queries.as_ref());
    }
    say(summary_line(started, &generated, &handles, &funnel, &url));
    let mut checks = Vec::new();
    if started.elapsed() < Duration::from_secs(35 * 60) {
        let got = epm_total();
        checks.push((
            format!("events-per-minute counted {got} clicks of {clicks} generated"),
            got == clicks as i64,
        ));
    } else {
        say("(events per minute not checked: windows older than 40 minutes are purged)");
    }
    let placed = funnel.get("1-placed").copied().unwrap_or(0);
    checks.push((
        format!(
            "order-analytics saw {placed} orders placed of {} generated",
            generated.orders
        ),
        placed == generated.orders as i64,
    ));
    if let (Some(topic), Some(live)) = (&options.registry_topic, &topic_registry) {
        checks.push(schemas_stored(&cluster, live, topic));
    }
    for (what, ok) in &checks {
        say(format!("{} {what}", if *ok { "ok  " } else { "FAIL" }));
    }

    // 7. Stop everything, apps first.
    say("stopping the apps (commit, checkpoint)…");
    for mut r in running {
        r.streams.close()?;
        if r.streams.state() == StreamsState::Error {
            checks.push((format!("{} stopped cleanly", r.name), false));
        }
    }
    drop(registry_server);
    drop(cluster);
    drop(broker);
    say(format!(
        "stopped. generated {} events ({} clicks: v1 {}, v2 {}; {} orders, {} delivered, {} payments failed)",
        generated.total(),
        clicks,
        generated.v1,
        generated.v2,
        generated.orders,
        generated.delivered,
        generated.payments_failed
    ));
    Ok(DemoReport { generated, checks })
}

/// brook's registry on the compacted `topic` of `cluster`.
fn open_topic_registry(cluster: &Arc<dyn Cluster>, topic: &str) -> Result<Registry> {
    let store = ClusterSchemaStore::open(cluster.clone(), topic).map_err(anyhow::Error::msg)?;
    Registry::open(Box::new(store))
        .map_err(|e| anyhow::anyhow!("loading the registry from {topic}: {e}"))
}

/// The check that the registry's schemas are in `topic`: a registry loaded
/// afresh from the topic knows every subject the running one serves, with
/// the same versions.
fn schemas_stored(cluster: &Arc<dyn Cluster>, live: &Registry, topic: &str) -> (String, bool) {
    let versions = |r: &Registry| -> BTreeMap<String, Vec<u32>> {
        r.subjects(false)
            .into_iter()
            .map(|s| {
                let versions = r.versions(&s, false).unwrap_or_default();
                (s, versions)
            })
            .collect()
    };
    let served = versions(live);
    let stored = match open_topic_registry(cluster, topic) {
        Ok(reloaded) => versions(&reloaded),
        Err(e) => return (format!("reloading the registry from {topic}: {e:#}"), false),
    };
    (
        format!(
            "schemas stored in {topic}: {} subjects ({} versions) reloaded from the topic, as served",
            stored.len(),
            stored.values().map(Vec::len).sum::<usize>()
        ),
        !served.is_empty() && stored == served,
    )
}

const USAGE: &str =
    "usage: eventmart-demo [--rate EVENTS_PER_S (100)] [--duration SECONDS (until Ctrl-C)]
    [--seed N (42)] [--users N (200)] [--schema v1|v2|dual (dual)]
    [--dashboard-addr ADDR (127.0.0.1:8088)] [--lake DIR (a temporary directory)]
    [--summary-every SECONDS (5)] [--lifecycle-scale F (0.2: orders ship in 6-24 s)]
    [--bootstrap HOST:PORT (a real Kafka instead of the embedded broker)]
    [--registry URL (with --bootstrap: http://localhost:8081, docker-compose's)]
    [--registry-topic TOPIC (with --bootstrap: brook's registry in the process, schemas in TOPIC)]
    [--prefix P] [--log FILTER (warn)]";

const OPTIONS: &[&str] = &[
    "rate",
    "duration",
    "seed",
    "users",
    "schema",
    "dashboard-addr",
    "lake",
    "summary-every",
    "lifecycle-scale",
    "bootstrap",
    "registry",
    "registry-topic",
    "prefix",
    "log",
];

/// `eventmart-demo`'s main.
pub fn main() -> ExitCode {
    let parsed = Args::parse(std::env::args().skip(1), OPTIONS, USAGE).and_then(|args| {
        let defaults = DemoOptions::default();
        let options = DemoOptions {
            bootstrap: args.get("bootstrap").map(str::to_owned),
            registry: args.get("registry").map(str::to_owned),
            registry_topic: args.get("registry-topic").map(str::to_owned),
            rate: args.parse_or("rate", defaults.rate)?,
            duration: args
                .get("duration")
                .map(|d| d.parse::<f64>().map(Duration::from_secs_f64))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?,
            seed: args.parse_or("seed", defaults.seed)?,
            users: args.parse_or("users", defaults.users)?,
            schema: args.parse_or("schema", defaults.schema)?,
            dashboard_addr: args
                .get("dashboard-addr")
                .unwrap_or(&defaults.dashboard_addr)
                .to_owned(),
            lake: args.get("lake").map(str::to_owned),
            summary_every: Duration::from_secs_f64(
                args.parse_or("summary-every", 5.0f64)?.max(0.2),
            ),
            lifecycle_scale: args.parse_or("lifecycle-scale", defaults.lifecycle_scale)?,
            prefix: args.get("prefix").unwrap_or("").to_owned(),
        };
        if !options.lifecycle_scale.is_finite() || options.lifecycle_scale < 0.0 {
            bail!("--lifecycle-scale must not be negative");
        }
        if !(options.rate > 0.0 && options.rate.is_finite()) {
            bail!("--rate must be a positive number of events per second");
        }
        if options.users == 0 {
            bail!("--users must be at least 1");
        }
        Ok((options, args.get("log").unwrap_or("warn").to_owned()))
    });
    let (options, log) = match parsed {
        Ok(p) => p,
        Err(e) => return crate::args::exit_code("eventmart-demo", USAGE, &e),
    };
    crate::app::init_logging(&log);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("eventmart-demo: installing signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    match run_demo(&options, stop) {
        Ok(report) if report.ok() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("eventmart-demo: some checks failed (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("eventmart-demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = crate::args::unlisted(super::USAGE, super::OPTIONS);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
