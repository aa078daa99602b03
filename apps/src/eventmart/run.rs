//! The `eventmart` binary: runs one, several or all of EventMart's apps in
//! one process, each a brook instance of its own, and serves the dashboard
//! over their stores.
//!
//! ```text
//! eventmart all --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081 \
//!     --state-dir /var/lib/eventmart --dashboard-addr 127.0.0.1:8088
//! eventmart order-analytics --bootstrap kafka:9092 --registry http://registry:8081 \
//!     --instance 2 --instances 3
//! ```
//!
//! The first argument names the apps (`all`, or a comma-separated list of
//! [`super::apps::APPS`]); then the common flags of [`crate::app`] and:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `registry` | schema registry URL | required |
//! | `registry-auth` | `user:password` for the registry | none |
//! | `prefix` | prefix of every topic name | none |
//! | `lake` | the lake's URL (directory, `s3://…`) | `./lake` |
//! | `grace` | seconds a late event still counts in its window | 30 |
//! | `dashboard-addr` | serve the dashboard and JSON API at this address | off |
//! | `dashboard-auth` | `user:password` required by the dashboard | none |
//!
//! Application ids are `eventmart-<app>` (or `<application-id>-<app>`).
//! Run the same binary with `--instance k --instances n` on n machines for
//! static partition assignment, or without for consumer-group mode. The
//! `lake` app runs exactly-once with a 10 s commit interval (files roll at
//! each commit) unless `guarantee` or `commit-interval` say otherwise.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::streams::{KafkaStreams, StreamsState};
use brook_runtime::thread::StreamsConfig;
use brook_topology::Topology;

use super::apps::{APPS, EventMartConfig, topology};
use super::dashboard::{Dashboard, RunningApp, serve};
use crate::app::{AppSettings, init_logging, settings};

/// The options `eventmart` adds to the common ones: (key, `--help` text).
pub const OPTIONS: &[(&str, &str)] = &[
    (
        "registry",
        "URL  the Confluent-compatible schema registry (required)",
    ),
    ("registry-auth", "USER:PASSWORD  the registry's basic auth"),
    ("prefix", "P  prefix of every topic name (none)"),
    ("lake", "DIR|URL  where the lake app writes Parquet (lake)"),
    ("grace", "SECONDS  grace of the analytics windows (30)"),
    (
        "dashboard-addr",
        "ADDR  serve the live dashboard at http://ADDR/ (off)",
    ),
    (
        "dashboard-auth",
        "USER:PASSWORD  the dashboard's basic auth",
    ),
];

/// `eventmart --help`.
fn eventmart_usage() -> String {
    crate::app::usage("eventmart", &format!("<all|{}> ", APPS.join("|")), OPTIONS)
}

/// The apps named by `arg` (`all` or a comma-separated list).
pub fn parse_apps(arg: &str) -> Result<Vec<&'static str>> {
    if arg == "all" {
        return Ok(APPS.to_vec());
    }
    let mut out = Vec::new();
    for name in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(app) = APPS.iter().find(|a| **a == name) else {
            bail!("no app {name:?}; the apps: {} (or all)", APPS.join(", "));
        };
        if !out.contains(app) {
            out.push(*app);
        }
    }
    if out.is_empty() {
        bail!("name the apps to run: all, or some of {}", APPS.join(", "));
    }
    Ok(out)
}

fn split_auth(value: &str, what: &str) -> Result<(String, String)> {
    value
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .with_context(|| format!("{what} must be user:password"))
}

/// The EventMart config these settings describe.
pub fn eventmart_config(settings: &AppSettings) -> Result<EventMartConfig> {
    let mut registry = RegistryClientConfig::new(settings.option("registry")?);
    if let Some(auth) = settings.get("registry-auth") {
        let (user, password) = split_auth(auth, "registry-auth")?;
        registry = registry.basic_auth(user, password);
    }
    let client = SchemaRegistryClient::new(registry).context("the schema registry client")?;
    let mut cfg = EventMartConfig::new(settings.get("prefix").unwrap_or(""), client);
    if let Some(lake) = settings.get("lake") {
        cfg.lake_url = lake.to_owned();
    }
    if let Some(grace) = settings.get("grace") {
        let secs: u64 = grace
            .parse()
            .with_context(|| format!("grace = {grace:?}: seconds"))?;
        cfg.grace = Duration::from_secs(secs);
    }
    Ok(cfg)
}

/// The streams config of `app`.
pub fn app_config(settings: &AppSettings, app: &str) -> Result<StreamsConfig> {
    let mut config = settings.streams_config(app)?;
    config.application_id = format!(
        "{}-{app}",
        settings.get("application-id").unwrap_or("eventmart")
    );
    if app == "lake" {
        if settings.get("guarantee").is_none() {
            config = config.exactly_once();
        }
        if settings.get("commit-interval").is_none() {
            config.commit_interval = Duration::from_secs(10);
        }
    }
    Ok(config)
}

/// `eventmart`'s main.
pub fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_default();
    if first == "--help" || first == "-h" {
        println!("{}", eventmart_usage());
        return ExitCode::SUCCESS;
    }
    if first.is_empty() {
        eprintln!("{}", eventmart_usage());
        return ExitCode::from(2);
    }
    let prepared = parse_apps(&first).and_then(|apps| {
        let settings = settings(args, &crate::app::process_env(), OPTIONS)?;
        settings.option("bootstrap")?;
        let cfg = eventmart_config(&settings)?;
        let mut built = Vec::new();
        for app in apps {
            let config = app_config(&settings, app)?;
            let topology = topology(app, &cfg).with_context(|| format!("building {app}"))?;
            built.push((app, config, topology));
        }
        Ok((settings, built))
    });
    let (settings, built) = match prepared {
        Ok(p) => p,
        Err(e) => return crate::args::exit_code("eventmart", &eventmart_usage(), &e),
    };
    init_logging(settings.get("log").unwrap_or("info"));
    match run(&settings, built) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("eventmart: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the apps until SIGINT/SIGTERM or one fails; `Ok(true)` after a
/// clean stop.
fn run(settings: &AppSettings, apps: Vec<(&str, StreamsConfig, Topology)>) -> Result<bool> {
    let mut kafka = KafkaConfig::new(settings.option("bootstrap")?);
    for (key, value) in settings.kafka_properties() {
        kafka = kafka.set(key, value);
    }
    let cluster = Arc::new(KafkaCluster::new(kafka).context("connecting to Kafka")?);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let mut running = Vec::new();
    let mut handles = Vec::new();
    for (app, config, topology) in apps {
        tracing::info!(
            app,
            application_id = %config.application_id,
            guarantee = ?config.guarantee,
            assignment = ?config.static_assignment,
            "starting"
        );
        let mut streams = KafkaStreams::new(topology, config, cluster.clone());
        let name = app.to_owned();
        streams.set_state_listener(
            move |old, new| tracing::info!(app = %name, ?old, ?new, "state changed"),
        );
        streams.start().with_context(|| format!("starting {app}"))?;
        handles.push(RunningApp {
            name: app.to_owned(),
            queries: streams.store_queries(),
            metrics: streams.metrics_handle(),
        });
        running.push((app, streams));
    }
    if let Some(addr) = settings.get("dashboard-addr") {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("binding the dashboard to {addr}"))?;
        let local = listener.local_addr()?;
        let auth = settings.get("dashboard-auth").map(str::to_owned);
        if let Some(a) = &auth {
            split_auth(a, "dashboard-auth")?;
        }
        let dashboard = Arc::new(Dashboard::new(handles, auth));
        std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || serve(listener, dashboard))?;
        tracing::info!("dashboard at http://{local}/");
        println!("dashboard at http://{local}/");
    }
    while !stop.load(Ordering::SeqCst)
        && running
            .iter()
            .all(|(_, s)| s.state() != StreamsState::Error)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    let mut clean = true;
    for (app, mut streams) in running {
        streams.close()?;
        let state = streams.state();
        if state == StreamsState::Error {
            clean = false;
            for e in streams.errors() {
                tracing::error!(app, error = %e, "failed");
            }
        }
        tracing::info!(app, ?state, "stopped");
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_and_app() {
        let text = eventmart_usage();
        let keys: Vec<&str> = OPTIONS.iter().map(|(k, _)| *k).collect();
        let missing = crate::args::unlisted(&text, &keys);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
        assert!(APPS.iter().all(|app| text.contains(app)), "{text}");
        assert!(text.contains("--bootstrap") && text.contains("--kafka.<property>"));
    }

    #[test]
    fn apps_are_named_or_all() {
        assert_eq!(parse_apps("all").unwrap().len(), APPS.len());
        assert_eq!(
            parse_apps("audit, lake,audit").unwrap(),
            vec!["audit", "lake"]
        );
        let e = parse_apps("audit,sales").unwrap_err().to_string();
        assert!(
            e.contains("no app \"sales\"") && e.contains("events-per-minute"),
            "{e}"
        );
        assert!(parse_apps(",").is_err());
    }

    #[test]
    fn the_lake_defaults_to_exactly_once_and_ids_are_per_app() {
        let s = settings(
            ["--bootstrap", "b:1"].map(String::from),
            &Default::default(),
            OPTIONS,
        )
        .unwrap();
        let lake = app_config(&s, "lake").unwrap();
        assert_eq!(lake.application_id, "eventmart-lake");
        assert_eq!(lake.commit_interval, Duration::from_secs(10));
        assert_ne!(
            format!("{:?}", lake.guarantee),
            format!("{:?}", app_config(&s, "audit").unwrap().guarantee)
        );
        let s = settings(
            [
                "--bootstrap",
                "b:1",
                "--application-id",
                "em",
                "--guarantee",
                "at_least_once",
            ]
            .map(String::from),
            &Default::default(),
            OPTIONS,
        )
        .unwrap();
        let lake = app_config(&s, "lake").unwrap();
        assert_eq!(lake.application_id, "em-lake");
        assert_eq!(
            format!("{:?}", lake.guarantee),
            format!("{:?}", app_config(&s, "audit").unwrap().guarantee)
        );
    }
}
