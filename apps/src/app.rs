//! Running a topology as an application binary: an app's `main` is a few
//! lines.
//!
//! ```no_run
//! use brook_apps::app::{self, AppSettings};
//! use brook_topology::serdes::Utf8;
//! use brook_topology::{Consumed, Produced, StreamsBuilder, Topology};
//!
//! fn topology(settings: &AppSettings) -> anyhow::Result<Topology> {
//!     let b = StreamsBuilder::new();
//!     b.stream(settings.option("input")?, Consumed::with(Utf8, Utf8))
//!         .to(settings.option("output")?, Produced::with(Utf8, Utf8));
//!     Ok(b.build()?)
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     app::run(
//!         "copy",
//!         &[("input", "TOPIC  read from"), ("output", "TOPIC  written to")],
//!         topology,
//!     )
//! }
//! ```
//!
//! Settings, later sources overriding earlier ones: defaults, a config file
//! (`--config FILE`: `key = value` lines, `#` comments), environment
//! variables (`BROOK_` + the key in upper case with `_` for `-`, e.g.
//! `BROOK_STATE_DIR`), command-line flags (`--key value`). Keys:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `bootstrap` | Kafka bootstrap servers | required |
//! | `application-id` | consumer group, internal topic prefix | the app's name |
//! | `instance`, `instances` | static assignment: instance `k` of `n` | group mode |
//! | `instance-id` | names the instance's transactional producers (`<application-id>-<instance-id>-<thread>`): keep it across restarts so a restart fences its predecessor at once; distinct for instances running together | `k` in static mode; in group mode one per process (`p<pid>-<start ms>`) |
//! | `static-membership` | group mode: each thread's consumer joins as a static member (`group.instance.id` = its transactional id), so a restart within `session.timeout.ms` gets its tasks back without a rebalance; needs `instance-id`; a stopped instance's tasks move only when its session times out | `false` |
//! | `threads` | stream threads | 1 |
//! | `state-dir` | RocksDB state directory | in-memory stores |
//! | `guarantee` | `at_least_once` or `exactly_once_v2` | `at_least_once` |
//! | `commit-interval` | ms between commits | 30000 (100 exactly-once) |
//! | `replication-factor` | replication of the internal topics brook creates (changelogs, repartition, dead letters) | -1: the broker's `default.replication.factor` |
//! | `deserialization-handler` | bad records: `dead-letter`, `log-and-continue` or `fail` | `dead-letter` |
//! | `dead-letter-topic` | where dead letters go | `<application-id>-dead-letters` |
//! | `max-record-bytes` | larger records (key + value) are bad | 1048588 |
//! | `max-timestamp-ahead-ms`, `max-timestamp-behind-ms` | timestamps further from the wall clock are bad | unbounded |
//! | `retry-timeout` | ms a failure that may mend itself (cluster or registry unavailable) is retried before the instance stops | 300000 |
//! | `metrics-addr` | serve Prometheus metrics at `http://ADDR/metrics` | off |
//! | `log` | log filter (`info`, `brook_runtime=debug`, ...) | `info` |
//! | `kafka.<property>` | any librdkafka property, e.g. `kafka.security.protocol`; from the environment as `BROOK_KAFKA_SECURITY_PROTOCOL` | |
//!
//! plus the options the app declares. Logs go to stderr. SIGINT or SIGTERM
//! closes the instance cleanly (commit, checkpoint); exit code 0 after a
//! clean shutdown, 1 when the instance failed, 2 for bad settings (found
//! before anything connects: unknown keys, bad values, a missing required
//! option, a topology that cannot be built from them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::streams::{KafkaStreams, MetricsHandle, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_topology::Topology;

/// The settings every app takes: (key, what `--help` says of it); the
/// module docs' table in short.
const COMMON: &[(&str, &str)] = &[
    ("bootstrap", "HOST:PORT  Kafka bootstrap servers (required)"),
    (
        "application-id",
        "ID  consumer group and internal topic prefix (the app's name)",
    ),
    (
        "instance",
        "K  static assignment: this is instance K of --instances (group mode)",
    ),
    ("instances", "N  static assignment: N instances"),
    (
        "instance-id",
        "ID  names the transactional producers; keep it across restarts (per process)",
    ),
    (
        "static-membership",
        "true|false  group mode: join as static members named by instance-id (false)",
    ),
    ("threads", "N  stream threads (1)"),
    (
        "state-dir",
        "DIR  RocksDB state directory (in-memory stores)",
    ),
    (
        "guarantee",
        "at_least_once|exactly_once_v2  (at_least_once)",
    ),
    (
        "commit-interval",
        "MS  between commits (30000; 100 exactly-once)",
    ),
    (
        "replication-factor",
        "N  of the internal topics brook creates (-1: the broker's default)",
    ),
    (
        "deserialization-handler",
        "dead-letter|log-and-continue|fail  bad records (dead-letter)",
    ),
    (
        "dead-letter-topic",
        "TOPIC  where dead letters go (<application-id>-dead-letters)",
    ),
    (
        "max-record-bytes",
        "N  larger records (key + value) are bad (1048588)",
    ),
    (
        "max-timestamp-ahead-ms",
        "MS  timestamps further ahead of the wall clock are bad (unbounded)",
    ),
    (
        "max-timestamp-behind-ms",
        "MS  timestamps further behind the wall clock are bad (unbounded)",
    ),
    (
        "retry-timeout",
        "MS  a failure that may mend itself is retried this long (300000)",
    ),
    (
        "metrics-addr",
        "ADDR  serve Prometheus metrics at http://ADDR/metrics (off)",
    ),
    (
        "log",
        "FILTER  log filter: info, brook_runtime=debug, ... (info)",
    ),
];

/// `--help` of an app: `program` and what follows it (`synopsis`), the
/// app's own options (key, help) and every common setting.
pub fn usage(program: &str, synopsis: &str, app_options: &[(&str, &str)]) -> String {
    let line = |(key, help): &(&str, &str)| format!("  --{key} {help}\n");
    let mut out = format!("usage: {program} {synopsis}[--KEY VALUE]...\n");
    if !app_options.is_empty() {
        out.push_str("options:\n");
        out.extend(app_options.iter().map(line));
    }
    out.push_str(
        "settings (also in a --config FILE of `key = value` lines, or as BROOK_<KEY> variables):\n",
    );
    out.extend(COMMON.iter().map(line));
    out.push_str("  --config FILE  read settings from FILE (or BROOK_CONFIG)\n");
    out.push_str("  --kafka.<property> VALUE  any librdkafka property (BROOK_KAFKA_<PROPERTY>)\n");
    out.push_str(
        "exit codes: 0 after a clean stop, 1 when the instance failed, 2 for bad settings",
    );
    out
}

/// An app's settings, merged from defaults, config file, environment and flags.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AppSettings {
    values: BTreeMap<String, String>,
}

/// Secrets show as `"[redacted]"`.
impl std::fmt::Debug for AppSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.iter().map(|(k, v)| {
                let shown = if is_secret(k) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

impl AppSettings {
    /// The value of `key`, if set anywhere.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, which the app requires.
    pub fn option(&self, key: &str) -> Result<&str> {
        self.get(key).with_context(|| {
            format!(
                "--{key} is required (or {} in the environment)",
                env_name(key)
            )
        })
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|raw| {
                raw.parse()
                    .map_err(|e| anyhow::anyhow!("{key} = {raw:?}: {e}"))
            })
            .transpose()
    }

    /// librdkafka properties given as `kafka.<property>`.
    pub fn kafka_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("kafka.").map(|k| (k, v.as_str())))
    }

    /// The streams configuration these settings describe.
    pub fn streams_config(&self, app: &str) -> Result<StreamsConfig> {
        let mut config = StreamsConfig::new(self.get("application-id").unwrap_or(app));
        match self.get("guarantee").unwrap_or("at_least_once") {
            "at_least_once" => {}
            "exactly_once_v2" | "exactly_once" => config = config.exactly_once(),
            other => bail!("guarantee = {other:?}: at_least_once or exactly_once_v2"),
        }
        if let Some(ms) = self.parsed::<u64>("commit-interval")? {
            config.commit_interval = Duration::from_millis(ms);
        }
        if let Some(factor) = self.parsed::<i32>("replication-factor")? {
            if factor < 1 && factor != -1 {
                bail!("replication-factor = {factor}: at least 1, or -1 for the broker's default");
            }
            config.replication_factor = factor;
        }
        if let Some(threads) = self.parsed::<usize>("threads")? {
            if threads == 0 {
                bail!("threads = 0: at least one stream thread is needed");
            }
            config.num_threads = threads;
        }
        if let Some(handler) = self.parsed("deserialization-handler")? {
            config.deserialization_handler = handler;
        }
        if let Some(topic) = self.get("dead-letter-topic") {
            config.dead_letter_topic = Some(topic.to_owned());
        }
        if let Some(bytes) = self.parsed::<usize>("max-record-bytes")? {
            config.record_limits.max_record_bytes = bytes;
        }
        if let Some(ms) = self.parsed::<i64>("max-timestamp-ahead-ms")? {
            config.record_limits.max_timestamp_ahead_ms = Some(ms);
        }
        if let Some(ms) = self.parsed::<i64>("max-timestamp-behind-ms")? {
            config.record_limits.max_timestamp_behind_ms = Some(ms);
        }
        if let Some(ms) = self.parsed::<u64>("retry-timeout")? {
            config.retry_timeout = Duration::from_millis(ms);
        }
        if let Some(dir) = self.get("state-dir") {
            config = config.state_dir(PathBuf::from(dir));
        }
        match (
            self.parsed::<u32>("instance")?,
            self.parsed::<u32>("instances")?,
        ) {
            (Some(k), Some(n)) if k < n => {
                config.static_assignment = Some((k, n));
                config.instance_id = k.to_string();
            }
            (Some(k), Some(n)) => {
                bail!("instance = {k} but instances = {n}: instances are numbered 0..{n}")
            }
            (None, None) => {
                config.instance_id = format!(
                    "p{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                );
            }
            _ => bail!("instance and instances go together (instance k of n)"),
        }
        if let Some(id) = self.get("instance-id") {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("instance-id = {id:?}: letters, digits, '-', '_' and '.' only");
            }
            config.instance_id = id.to_owned();
        }
        if let Some(on) = self.parsed::<bool>("static-membership")? {
            if on && config.static_assignment.is_some() {
                bail!(
                    "static-membership = true is for group mode; instance and instances assign tasks without a group"
                );
            }
            if on && self.get("instance-id").is_none() {
                bail!(
                    "static-membership = true needs an instance-id kept across restarts (the per-process default changes with every start)"
                );
            }
            config.static_membership = on;
        }
        Ok(config)
    }
}

fn env_name(key: &str) -> String {
    format!("BROOK_{}", key.to_uppercase().replace(['-', '.'], "_"))
}

/// Parses `key = value` lines.
fn parse_config_file(text: &str, path: &str) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("{path}:{}: expected `key = value`, got {line:?}", n + 1))?;
        values.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(values)
}

/// The process's environment variables (those with UTF-8 names and values).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// `kafka.<property>` for an environment variable `BROOK_KAFKA_<PROPERTY>`
/// (e.g. `BROOK_KAFKA_SASL_PASSWORD` → `kafka.sasl.password`).
fn kafka_env_key(name: &str) -> Option<String> {
    brook_runtime::kafka::property_of_env(name).map(|p| format!("kafka.{p}"))
}

/// Whether a setting holds a secret (a password, a private key, a JAAS
/// config): its value never appears in `Debug` output or logs.
pub fn is_secret(key: &str) -> bool {
    let key = key.strip_prefix("kafka.").unwrap_or(key);
    brook_runtime::kafka::is_secret_property(key)
        || key.contains("password")
        // `registry-auth`, `dashboard-auth`: `user:password`.
        || key.ends_with("-auth")
}

/// Merges the settings: config file, then environment (`env`, e.g.
/// [`process_env`]), then `args`.
pub fn settings(
    args: impl IntoIterator<Item = String>,
    env: &BTreeMap<String, String>,
    app_options: &[(&str, &str)],
) -> Result<AppSettings> {
    let env_vars = env;
    let env = |name: &str| env_vars.get(name).cloned();
    let keys: Vec<&str> = COMMON
        .iter()
        .chain(app_options)
        .map(|(key, _)| *key)
        .collect();
    let known = |key: &str| keys.contains(&key) || key.starts_with("kafka.");
    let mut flags = BTreeMap::new();
    let mut config_file = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Err(crate::args::HelpRequested.into());
        }
        let Some(name) = arg.strip_prefix("--") else {
            bail!("unexpected argument {arg:?}");
        };
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                let value = args
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                (name.to_owned(), value)
            }
        };
        if name == "config" {
            config_file = Some(value);
        } else if known(&name) {
            flags.insert(name, value);
        } else {
            bail!("unknown option --{name}");
        }
    }
    let mut values = BTreeMap::new();
    if let Some(path) = config_file.or_else(|| env("BROOK_CONFIG")) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        for (key, value) in parse_config_file(&text, &path)? {
            if !known(&key) {
                bail!("{path}: unknown setting {key:?}");
            }
            values.insert(key, value);
        }
    }
    for key in keys {
        if let Some(value) = env(&env_name(key)) {
            values.insert(key.to_owned(), value);
        }
    }
    for (name, value) in env_vars {
        if let Some(key) = kafka_env_key(name) {
            values.insert(key, value.clone());
        }
    }
    values.extend(flags);
    Ok(AppSettings { values })
}

/// Runs the app until SIGINT/SIGTERM or a failure; see the module docs.
pub fn run(
    name: &str,
    app_options: &[(&str, &str)],
    topology: impl FnOnce(&AppSettings) -> Result<Topology>,
) -> ExitCode {
    // Everything that depends on the settings alone fails with exit code 2,
    // before anything connects.
    let prepared =
        settings(std::env::args().skip(1), &process_env(), app_options).and_then(|settings| {
            let config = settings.streams_config(name)?;
            settings.option("bootstrap")?;
            let topology = topology(&settings).context("building the topology")?;
            Ok((settings, config, topology))
        });
    let (settings, config, topology) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return crate::args::exit_code(name, &usage(name, "", app_options), &e),
    };
    init_logging(settings.get("log").unwrap_or("info"));
    match run_with(&settings, config, topology) {
        Ok(StreamsState::Error) => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr with `filter` (`info`, `brook_runtime=debug`, ...).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn run_with(
    settings: &AppSettings,
    config: StreamsConfig,
    topology: Topology,
) -> Result<StreamsState> {
    let bootstrap = settings.option("bootstrap")?;
    let mut kafka = KafkaConfig::new(bootstrap);
    for (key, value) in settings.kafka_properties() {
        kafka = kafka.set(key, value);
    }
    let cluster = KafkaCluster::new(kafka).context("connecting to Kafka")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    tracing::info!(
        application_id = %config.application_id,
        threads = config.num_threads,
        guarantee = ?config.guarantee,
        state_dir = ?config.state_dir,
        assignment = ?config.static_assignment,
        "starting"
    );
    let mut streams = KafkaStreams::new(topology, config, Arc::new(cluster));
    streams.set_state_listener(|old, new| tracing::info!(?old, ?new, "state changed"));
    if let Some(addr) = settings.get("metrics-addr") {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!("metrics at http://{local}/metrics");
        let metrics = streams.metrics_handle();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve_metrics(listener, metrics))?;
    }
    streams.start()?;
    while !stop.load(Ordering::SeqCst) && streams.state() != StreamsState::Error {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    streams.close()?;
    let state = streams.state();
    tracing::info!(?state, "stopped");
    Ok(state)
}

/// Largest request head accepted, bytes.
const MAX_REQUEST: usize = 8 * 1024;

fn serve_metrics(listener: TcpListener, metrics: MetricsHandle) {
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream, &metrics) {
            tracing::debug!(error = %e, "metrics request failed");
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers one request: `GET /metrics` gets the metrics; anything else a 4xx.
fn answer(mut stream: TcpStream, metrics: &MetricsHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_REQUEST as u64 + 1);
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        head.extend_from_slice(&line);
        if n == 0 || line == b"\r\n" || line == b"\n" {
            break;
        }
        if head.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request too large\n",
            );
        }
    }
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    match parts.as_slice() {
        ["GET", "/metrics", version] if version.starts_with("HTTP/") => {
            respond(&mut stream, "200 OK", &metrics.prometheus())
        }
        ["GET", _, version] if version.starts_with("HTTP/") => {
            respond(&mut stream, "404 Not Found", "not found: try /metrics\n")
        }
        [_, _, version] if version.starts_with("HTTP/") => {
            respond(&mut stream, "405 Method Not Allowed", "only GET\n")
        }
        _ => respond(&mut stream, "400 Bad Request", "malformed request\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_runtime::thread::ProcessingGuarantee;

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_override_environment_override_config_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("app.conf");
        std::fs::write(
            &file,
            "# an app\nbootstrap = file:9092\nthreads = 3\ninput = from-file\nkafka.security.protocol = SSL\n",
        )?;
        let file = file.display().to_string();
        let s = settings(
            args(&["--config", &file, "--threads", "4"]),
            &env_of(&[("BROOK_BOOTSTRAP", "env:9092"), ("BROOK_THREADS", "2")]),
            &[("input", "TOPIC")],
        )?;
        assert_eq!(s.get("bootstrap"), Some("env:9092"));
        assert_eq!(s.get("threads"), Some("4"));
        assert_eq!(s.option("input")?, "from-file");
        assert_eq!(
            s.kafka_properties().collect::<Vec<_>>(),
            vec![("security.protocol", "SSL")]
        );
        let config = s.streams_config("app")?;
        assert_eq!(config.num_threads, 4);
        assert_eq!(config.application_id, "app");
        Ok(())
    }

    #[test]
    fn kafka_properties_come_from_the_environment_too_and_secrets_are_not_shown() -> Result<()> {
        assert!(is_secret("registry-auth") && is_secret("kafka.ssl.key.password"));
        assert!(!is_secret("bootstrap") && !is_secret("kafka.sasl.username"));
        let s = settings(
            args(&["--kafka.sasl.mechanisms", "SCRAM-SHA-512"]),
            &env_of(&[
                ("BROOK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("BROOK_KAFKA_SASL_USERNAME", "svc"),
                ("BROOK_KAFKA_SASL_PASSWORD", "hunter2-secret"),
                ("BROOK_KAFKA_", "ignored"),
                ("OTHER_KAFKA_SASL_PASSWORD", "not ours"),
            ]),
            &[],
        )?;
        let props: BTreeMap<&str, &str> = s.kafka_properties().collect();
        assert_eq!(
            props,
            BTreeMap::from([
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.password", "hunter2-secret"),
                ("sasl.username", "svc"),
                ("security.protocol", "SASL_SSL"),
            ])
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("svc") && shown.contains("[redacted]"),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn help_is_not_an_error_and_lists_every_setting() {
        let e = settings(args(&["--threads", "2", "--help"]), &env_of(&[]), &[]).unwrap_err();
        assert!(e.is::<crate::args::HelpRequested>());
        let app = [("input", "TOPIC  lines to count")];
        let text = usage("wc", "", &app);
        let keys: Vec<&str> = COMMON.iter().chain(&app).map(|(k, _)| *k).collect();
        let missing = crate::args::unlisted(&text, &keys);
        assert!(
            missing.is_empty(),
            "--help does not list {missing:?}:\n{text}"
        );
        for also in ["--config FILE", "--kafka.<property>", "lines to count"] {
            assert!(text.contains(also), "{text}");
        }
    }

    #[test]
    fn settings_become_a_streams_config_or_a_clear_error() -> Result<()> {
        let s = settings(
            args(&[
                "--guarantee=exactly_once_v2",
                "--instance",
                "1",
                "--instances",
                "3",
                "--state-dir",
                "/var/lib/x",
                "--application-id",
                "rev",
                "--deserialization-handler",
                "log-and-continue",
                "--max-record-bytes",
                "4096",
                "--max-timestamp-ahead-ms",
                "3600000",
            ]),
            &env_of(&[("BROOK_DEAD_LETTER_TOPIC", "rev-bad")]),
            &[],
        )?;
        let config = s.streams_config("app")?;
        assert_eq!(config.guarantee, ProcessingGuarantee::ExactlyOnceV2);
        assert_eq!(config.commit_interval, Duration::from_millis(100));
        assert_eq!(config.static_assignment, Some((1, 3)));
        assert_eq!(config.instance_id, "1");
        assert_eq!(config.application_id, "rev");
        assert_eq!(config.state_dir, Some(PathBuf::from("/var/lib/x")));
        assert_eq!(
            config.deserialization_handler,
            brook_runtime::task::DeserializationHandler::LogAndContinue
        );
        assert_eq!(config.dead_letter_topic(), "rev-bad");
        assert_eq!(config.record_limits.max_record_bytes, 4096);
        assert_eq!(config.record_limits.max_timestamp_ahead_ms, Some(3_600_000));
        assert_eq!(config.record_limits.max_timestamp_behind_ms, None);

        let bad = |list: &[&str]| -> String {
            match settings(args(list), &env_of(&[]), &[]).and_then(|s| s.streams_config("a")) {
                Ok(_) => "accepted".into(),
                Err(e) => format!("{e:#}"),
            }
        };
        assert!(bad(&["--colour", "red"]).contains("unknown option --colour"));
        assert!(bad(&["--threads", "many"]).contains("threads = \"many\""));
        assert!(bad(&["--threads", "0"]).contains("at least one"));
        assert!(bad(&["--instance", "3", "--instances", "3"]).contains("numbered 0..3"));
        assert!(bad(&["--instance", "1"]).contains("go together"));
        assert!(bad(&["--guarantee", "maybe"]).contains("at_least_once or exactly_once_v2"));
        assert!(bad(&["--deserialization-handler", "ignore"]).contains("log-and-continue"));
        assert!(bad(&["--max-record-bytes", "-1"]).contains("max-record-bytes = \"-1\""));
        assert!(bad(&["stray"]).contains("unexpected argument"));
        assert!(bad(&["--instance-id", "a b"]).contains("instance-id = \"a b\""));
        assert!(bad(&["--replication-factor", "0"]).contains("replication-factor = 0"));
        assert!(bad(&["--static-membership", "yes"]).contains("static-membership = \"yes\""));
        assert!(bad(&["--static-membership", "true"]).contains("needs an instance-id"));
        assert!(
            bad(&[
                "--static-membership",
                "true",
                "--instance-id",
                "x",
                "--instance",
                "0",
                "--instances",
                "2"
            ])
            .contains("is for group mode")
        );

        // Group mode: transactional ids unique to the process unless named.
        let group = settings(args(&[]), &env_of(&[]), &[])?.streams_config("a")?;
        assert!(
            group
                .instance_id
                .starts_with(&format!("p{}-", std::process::id())),
            "{}",
            group.instance_id
        );
        let named = settings(args(&["--instance-id", "eu-1"]), &env_of(&[]), &[])?;
        assert_eq!(named.streams_config("a")?.transactional_id(), "a-eu-1");
        assert!(!named.streams_config("a")?.static_membership);
        let static_member = settings(
            args(&["--instance-id", "eu-1", "--static-membership", "true"]),
            &env_of(&[]),
            &[],
        )?;
        assert!(static_member.streams_config("a")?.static_membership);
        assert_eq!(group.replication_factor, -1, "the broker's default");
        let replicated = settings(args(&["--replication-factor", "3"]), &env_of(&[]), &[])?;
        assert_eq!(replicated.streams_config("a")?.replication_factor, 3);
        let missing = settings(args(&[]), &env_of(&[]), &[("input", "TOPIC")])?;
        assert!(
            format!("{:#}", missing.option("input").expect_err("required")).contains("BROOK_INPUT")
        );
        Ok(())
    }

    fn request(addr: std::net::SocketAddr, text: &[u8]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(text)?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_metrics_endpoint_answers_get_metrics_and_refuses_the_rest() -> Result<()> {
        let cluster = Arc::new(brook_runtime::memory::MemoryCluster::new());
        let b = brook_topology::StreamsBuilder::new();
        b.stream(
            "in",
            brook_topology::Consumed::with(
                brook_topology::serdes::Utf8,
                brook_topology::serdes::Utf8,
            ),
        )
        .to(
            "out",
            brook_topology::Produced::with(
                brook_topology::serdes::Utf8,
                brook_topology::serdes::Utf8,
            ),
        );
        let streams = KafkaStreams::new(b.build()?, StreamsConfig::new("m"), cluster);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let metrics = streams.metrics_handle();
        std::thread::spawn(move || serve_metrics(listener, metrics));
        let ok = request(addr, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")?;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("brook_state{application_id=\"m\",state=\"Created\"} 1"),
            "{ok}"
        );
        assert!(request(addr, b"GET / HTTP/1.1\r\n\r\n")?.starts_with("HTTP/1.1 404"));
        assert!(request(addr, b"POST /metrics HTTP/1.1\r\n\r\n")?.starts_with("HTTP/1.1 405"));
        assert!(request(addr, b"hello\r\n\r\n")?.starts_with("HTTP/1.1 400"));
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 10_000));
        huge.extend_from_slice(b"\r\n\r\n");
        assert!(request(addr, &huge)?.starts_with("HTTP/1.1 431"));
        Ok(())
    }
}
