//! The `eventmart-generator` binary: runs the [`super::generator`] against
//! Kafka with rate control and a progress line.
//!
//! ```text
//! eventmart-generator --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081 \
//!     --rate 200 --duration 600 --seed 7 --schema dual
//! ```
//!
//! Stops at `--count` events or after `--duration` seconds, whichever
//! comes first (neither: until Ctrl-C). `--rate` is events per second
//! (0: as fast as the broker takes them). Event times are the wall clock,
//! or with `--start-time MS` a simulated clock that starts there and
//! advances 1/rate per event, so that the same seed gives the same records
//! byte for byte. `--drain yes` finishes every open order at the end.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
use brook_runtime::cluster::{Cluster, ClusterProducer, ProducedRecord};
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_topology::Headers;

use super::generator::{
    Encoder, Generated, Generator, GeneratorConfig, GeneratorStats, SchemaMode,
};
use crate::args::Args;

const USAGE: &str = "usage: eventmart-generator --bootstrap HOST:PORT --registry URL
    [--rate EVENTS_PER_S (100; 0 = unlimited)] [--duration SECONDS] [--count EVENTS]
    [--seed N (42)] [--users N (100)] [--schema v1|v2|dual (dual)]
    [--payment-failure-rate P (0.1)] [--lifecycle-scale F (1.0)] [--start-time MS]
    [--drain yes|no (no)] [--prefix P] [--registry-auth USER:PASSWORD]
    [--progress auto|on|off (auto)] [--log FILTER (warn)] [--kafka.<property> VALUE ...]";

const OPTIONS: &[&str] = &[
    "bootstrap",
    "registry",
    "registry-auth",
    "prefix",
    "rate",
    "duration",
    "count",
    "seed",
    "users",
    "schema",
    "payment-failure-rate",
    "lifecycle-scale",
    "start-time",
    "drain",
    "progress",
    "log",
];

/// When to stop and how fast to go.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// Events per second; 0 or less: unlimited.
    pub rate: f64,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Simulated event time starting here (ms); `None`: the wall clock.
    pub start_time: Option<i64>,
    /// Finish every open order at the end.
    pub drain: bool,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A progress line on stderr: redrawn in place on a terminal, a log line
/// every 5 s otherwise.
struct Progress {
    terminal: bool,
    enabled: bool,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn show(&mut self, stats: &GeneratorStats, pace: &Pace, force: bool) {
        if !self.enabled {
            return;
        }
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let total = stats.total();
        let fraction = match (pace.count, pace.duration) {
            (Some(c), _) if c > 0 => Some(total as f64 / c as f64),
            (_, Some(d)) if !d.is_zero() => Some(elapsed / d.as_secs_f64()),
            _ => None,
        };
        let bar = fraction
            .map(|f| {
                let filled = ((f.clamp(0.0, 1.0)) * 30.0) as usize;
                format!(
                    "[{}{}] {:>3.0}% ",
                    "=".repeat(filled),
                    " ".repeat(30 - filled),
                    f.clamp(0.0, 1.0) * 100.0
                )
            })
            .unwrap_or_default();
        let line = format!(
            "{bar}{total} events ({:.0}/s) · {} orders, {} delivered, {} payments failed · v1 {} / v2 {} · {:.0}s",
            total as f64 / elapsed.max(1e-3),
            stats.orders,
            stats.delivered,
            stats.payments_failed,
            stats.v1,
            stats.v2,
            elapsed
        );
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            if force {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

/// Generates until `pace` says stop or `stop` is set, handing each event
/// to `sink`; calls `flush` with the stats so far every second and at the
/// end.
pub fn run_paced(
    generator: &mut Generator,
    pace: &Pace,
    stop: &AtomicBool,
    show_progress: Option<bool>,
    sink: &mut dyn FnMut(&Generated) -> Result<()>,
    flush: &mut dyn FnMut(&GeneratorStats) -> Result<()>,
) -> Result<GeneratorStats> {
    let started = Instant::now();
    let mut progress = Progress {
        terminal: std::io::stderr().is_terminal(),
        enabled: show_progress.unwrap_or(true),
        last: Instant::now(),
        started,
    };
    if show_progress.is_none() {
        progress.enabled = progress.terminal;
    }
    let mut sent: u64 = 0;
    let mut flushed = Instant::now();
    let step_ms = if pace.rate > 0.0 {
        1000.0 / pace.rate
    } else {
        1.0
    };
    loop {
        if stop.load(Ordering::SeqCst)
            || pace.count.is_some_and(|c| sent >= c)
            || pace.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        if pace.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * pace.rate) as u64;
            if sent >= due {
                let wait = ((sent + 1) as f64 / pace.rate) - started.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                continue;
            }
        }
        let now = match pace.start_time {
            Some(start) => start + (sent as f64 * step_ms) as i64,
            None => wall_ms(),
        };
        let event = generator.next(now);
        sink(&event)?;
        sent += 1;
        if flushed.elapsed() >= Duration::from_secs(1) {
            flush(generator.stats())?;
            flushed = Instant::now();
        }
        progress.show(generator.stats(), pace, false);
    }
    if pace.drain {
        for event in generator.drain() {
            sink(&event)?;
        }
    }
    flush(generator.stats())?;
    progress.show(generator.stats(), pace, true);
    Ok(generator.stats().clone())
}

fn parse(args: &Args) -> Result<(GeneratorConfig, Pace, Option<bool>)> {
    let config = GeneratorConfig {
        seed: args.parse_or("seed", 42u64)?,
        users: args.parse_or("users", 100u32)?,
        schema: args.parse_or("schema", SchemaMode::Dual)?,
        payment_failure_rate: args.parse_or("payment-failure-rate", 0.1f64)?,
        lifecycle_scale: args.parse_or("lifecycle-scale", 1.0f64)?,
        ..GeneratorConfig::default()
    };
    if !(0.0..=1.0).contains(&config.payment_failure_rate) {
        bail!("--payment-failure-rate must be between 0 and 1");
    }
    if config.users == 0 {
        bail!("--users must be at least 1");
    }
    if !config.lifecycle_scale.is_finite() || config.lifecycle_scale < 0.0 {
        bail!("--lifecycle-scale must not be negative");
    }
    let rate: f64 = args.parse_or("rate", 100.0)?;
    if !rate.is_finite() || rate < 0.0 {
        bail!("--rate must be a number of events per second, 0 for unlimited");
    }
    let pace = Pace {
        rate,
        duration: args
            .get("duration")
            .map(|d| d.parse::<f64>().map(Duration::from_secs_f64))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?,
        count: args
            .get("count")
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--count: {e}"))?,
        start_time: args
            .get("start-time")
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--start-time: {e}"))?,
        drain: match args.get("drain").unwrap_or("no") {
            "yes" | "true" => true,
            "no" | "false" => false,
            other => bail!("--drain {other:?}: yes or no"),
        },
    };
    let progress = match args.get("progress").unwrap_or("auto") {
        "auto" => None,
        "on" => Some(true),
        "off" => Some(false),
        other => bail!("--progress {other:?}: auto, on or off"),
    };
    Ok((config, pace, progress))
}

/// `eventmart-generator`'s main.
pub fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (kafka_props, rest): (Vec<String>, Vec<String>) = split_kafka_properties(raw);
    let prepared = Args::parse(rest, OPTIONS, USAGE).and_then(|args| {
        let (config, pace, progress) = parse(&args)?;
        let bootstrap = args
            .get("bootstrap")
            .context("--bootstrap is required")?
            .to_owned();
        let registry = args
            .get("registry")
            .context("--registry is required")?
            .to_owned();
        Ok((args, config, pace, progress, bootstrap, registry))
    });
    let (args, config, pace, progress, bootstrap, registry) = match prepared {
        Ok(p) => p,
        Err(e) => return crate::args::exit_code("eventmart-generator", USAGE, &e),
    };
    crate::app::init_logging(args.get("log").unwrap_or("warn"));
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("eventmart-generator: installing signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    let outcome = (|| -> Result<GeneratorStats> {
        let mut registry = RegistryClientConfig::new(registry);
        if let Some(auth) = args.get("registry-auth") {
            let (u, p) = auth
                .split_once(':')
                .context("--registry-auth must be user:password")?;
            registry = registry.basic_auth(u, p);
        }
        let encoder = Encoder::new(SchemaRegistryClient::new(registry)?);
        let mut kafka = KafkaConfig::new(bootstrap).with_process_env();
        for pair in kafka_props.chunks(2) {
            kafka = kafka.set(&pair[0], &pair[1]);
        }
        let cluster = KafkaCluster::new(kafka).context("connecting to Kafka")?;
        let mut producer: Box<dyn ClusterProducer> = cluster.producer()?;
        let prefix = args.get("prefix").unwrap_or("").to_owned();
        let mut generator = Generator::new(config);
        let producer_cell = std::cell::RefCell::new(&mut producer);
        let mut sink = |event: &Generated| -> Result<()> {
            let value = encoder
                .encode(event)
                .with_context(|| format!("encoding a {} event", event.topic()))?;
            producer_cell.borrow_mut().send(ProducedRecord {
                topic: format!("{prefix}{}", event.topic()),
                partition: None,
                key: Some(event.key().as_bytes().to_vec()),
                value: Some(value),
                timestamp: event.timestamp(),
                headers: Headers::new(),
            })?;
            Ok(())
        };
        let mut flush = |_: &GeneratorStats| -> Result<()> {
            producer_cell
                .borrow_mut()
                .flush()
                .context("delivering to Kafka")?;
            Ok(())
        };
        run_paced(
            &mut generator,
            &pace,
            &stop,
            progress,
            &mut sink,
            &mut flush,
        )
    })();
    match outcome {
        Ok(stats) => {
            println!(
                "generated {} events: {}",
                stats.total(),
                stats
                    .by_topic
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventmart-generator: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Takes `--kafka.<property> value` pairs out of the arguments.
fn split_kafka_properties(raw: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut kafka = Vec::new();
    let mut rest = Vec::new();
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        if let Some(prop) = arg.strip_prefix("--kafka.") {
            match prop.split_once('=') {
                Some((k, v)) => {
                    kafka.push(k.to_owned());
                    kafka.push(v.to_owned());
                }
                None => {
                    kafka.push(prop.to_owned());
                    kafka.push(it.next().unwrap_or_default());
                }
            }
        } else {
            rest.push(arg);
        }
    }
    (kafka, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_lists_every_option() {
        let missing = crate::args::unlisted(USAGE, OPTIONS);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }

    #[test]
    fn count_and_rate_bound_the_run_and_simulated_time_is_deterministic() {
        let pace = Pace {
            rate: 2_000.0,
            count: Some(300),
            start_time: Some(1_000_000),
            drain: true,
            ..Pace::default()
        };
        let run = || {
            let mut generator = Generator::new(GeneratorConfig::default());
            let mut out = Vec::new();
            let started = Instant::now();
            run_paced(
                &mut generator,
                &pace,
                &AtomicBool::new(false),
                Some(false),
                &mut |e| {
                    out.push(e.clone());
                    Ok(())
                },
                &mut |_| Ok(()),
            )
            .unwrap();
            (out, started.elapsed())
        };
        let (a, took) = run();
        let (b, _) = run();
        assert_eq!(a, b, "same seed and simulated clock: same events");
        // 300 paced events plus the drained lifecycle steps.
        assert!(a.len() >= 300);
        // At 2000/s, 300 events take at least ~150 ms (no upper bound: noisy machine).
        assert!(took >= Duration::from_millis(140), "{took:?}");
        let first_click = a
            .iter()
            .position(|e| matches!(e, Generated::Click(_)))
            .unwrap();
        assert_eq!(
            a[first_click].timestamp(),
            1_000_000 + first_click as i64 / 2
        );
    }

    #[test]
    fn a_stop_request_ends_the_run() {
        let stop = AtomicBool::new(true);
        let mut generator = Generator::new(GeneratorConfig::default());
        let stats = run_paced(
            &mut generator,
            &Pace::default(),
            &stop,
            Some(false),
            &mut |_| Ok(()),
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!(stats.total(), 0);
    }

    #[test]
    fn bad_flags_are_named() {
        let parse_args = |a: &[&str]| {
            Args::parse(a.iter().map(|s| s.to_string()), OPTIONS, USAGE).and_then(|a| parse(&a))
        };
        for (args, want) in [
            (&["--rate", "-3"][..], "--rate"),
            (&["--schema", "v3"][..], "v3"),
            (&["--payment-failure-rate", "2"][..], "between 0 and 1"),
            (&["--drain", "maybe"][..], "--drain"),
            (&["--count", "lots"][..], "--count"),
        ] {
            let e = format!("{:#}", parse_args(args).unwrap_err());
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let (_, pace, _) = parse_args(&["--rate", "0", "--count", "5", "--drain", "yes"]).unwrap();
        assert_eq!((pace.rate, pace.count, pace.drain), (0.0, Some(5), true));
    }
}
