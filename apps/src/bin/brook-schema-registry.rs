//! brook-schema-registry: a Confluent-compatible schema registry.
//!
//! ```text
//! brook-schema-registry [--listen 127.0.0.1:8081] [--storage kafka|memory]
//!                       [--bootstrap HOST:PORT] [--topic _schemas]
//!                       [--basic-auth-file FILE] [--max-body-bytes N]
//!                       [--kafka-property KEY=VALUE]... [--log FILTER]
//! ```
//!
//! Serves Confluent Schema Registry's REST API (see `brook_schemas::server`)
//! for Avro schemas. Storage: the compacted one-partition topic `_schemas`
//! on the Kafka cluster at `--bootstrap` (or `BROOK_BOOTSTRAP`), in
//! Confluent's record format, so the registry's state survives restarts;
//! or `--storage memory` for tests and demos (lost on exit). Run one
//! registry process per topic: there is no leader election between
//! registries sharing a topic (Confluent's primary/secondary setup), so a
//! second writer would assign ids of its own.
//!
//! Listens on loopback unless `--listen` says otherwise. Basic auth:
//! `user:password` in the file `--basic-auth-file` or the environment
//! variable `BROOK_REGISTRY_BASIC_AUTH` (never on the command line, where
//! other users could read it).
//!
//! Prints `listening on http://ADDR` on stdout once it serves; stops
//! cleanly on SIGINT or SIGTERM. Exit codes: 0 after a clean stop, 1 when
//! it could not start, 2 for bad arguments.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_apps::registry::ClusterSchemaStore;
use brook_runtime::cluster::Cluster;
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_schemas::registry::{MemoryStore, Registry, SchemaStore};
use brook_schemas::server::{RegistryServer, ServerConfig};

const USAGE: &str =
    "usage: brook-schema-registry [--listen 127.0.0.1:8081] [--storage kafka|memory]
                             [--bootstrap HOST:PORT] [--topic _schemas]
                             [--basic-auth-file FILE] [--max-body-bytes N]
                             [--kafka-property KEY=VALUE]... [--log FILTER]
basic auth may also come from BROOK_REGISTRY_BASIC_AUTH=user:password";

const OPTIONS: &[&str] = &[
    "listen",
    "storage",
    "bootstrap",
    "topic",
    "basic-auth-file",
    "max-body-bytes",
    "kafka-property",
    "log",
];

struct Settings {
    server: ServerConfig,
    storage: Storage,
    log: String,
}

enum Storage {
    Memory,
    Kafka { config: KafkaConfig, topic: String },
}

/// `user:password` from a file or a variable.
pub fn parse_basic_auth(text: &str, source: &str) -> Result<(String, String)> {
    let line = text.lines().next().unwrap_or("").trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok((user.to_owned(), password.to_owned()))
        }
        _ => bail!("{source} must hold user:password (both non-empty)"),
    }
}

fn settings() -> Result<Settings> {
    let args = Args::parse(std::env::args().skip(1), OPTIONS, USAGE)?;
    let mut server = ServerConfig::default();
    if let Some(listen) = args.get("listen") {
        server.listen = listen
            .parse()
            .with_context(|| format!("--listen {listen:?}: expected HOST:PORT (an IP address)"))?;
    }
    server.max_body_bytes = args.parse_or("max-body-bytes", server.max_body_bytes)?;
    server.basic_auth = match (
        args.get("basic-auth-file"),
        std::env::var("BROOK_REGISTRY_BASIC_AUTH").ok(),
    ) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --basic-auth-file {file}"))?;
            Some(parse_basic_auth(
                &text,
                &format!("--basic-auth-file {file}"),
            )?)
        }
        (None, Some(value)) if !value.is_empty() => {
            Some(parse_basic_auth(&value, "BROOK_REGISTRY_BASIC_AUTH")?)
        }
        _ => None,
    };
    let bootstrap = args.get("bootstrap").map(str::to_owned).or_else(|| {
        std::env::var("BROOK_BOOTSTRAP")
            .ok()
            .filter(|b| !b.is_empty())
    });
    let storage = match (args.get("storage"), bootstrap) {
        (Some("memory"), _) => Storage::Memory,
        (Some("kafka") | None, Some(bootstrap)) => {
            let mut config = KafkaConfig::new(bootstrap).with_process_env();
            for property in args.all("kafka-property") {
                let (k, v) = property.split_once('=').with_context(|| {
                    format!("--kafka-property {property:?}: expected KEY=VALUE")
                })?;
                config = config.set(k, v);
            }
            Storage::Kafka {
                config,
                topic: args.get("topic").unwrap_or("_schemas").to_owned(),
            }
        }
        (Some("kafka") | None, None) => bail!(
            "Kafka storage needs --bootstrap HOST:PORT (or BROOK_BOOTSTRAP); use --storage memory for a registry that forgets on exit"
        ),
        (Some(other), _) => bail!("--storage {other:?}: expected kafka or memory"),
    };
    Ok(Settings {
        server,
        storage,
        log: args.get("log").unwrap_or("info").to_owned(),
    })
}

fn run(settings: Settings) -> Result<()> {
    let (store, described): (Box<dyn SchemaStore>, String) = match settings.storage {
        Storage::Memory => (Box::new(MemoryStore::new()), "memory".into()),
        Storage::Kafka { config, topic } => {
            let cluster: Arc<dyn Cluster> =
                Arc::new(KafkaCluster::new(config).context("connecting to Kafka")?);
            let store = ClusterSchemaStore::open(cluster, &topic).map_err(anyhow::Error::msg)?;
            (Box::new(store), format!("topic {topic}"))
        }
    };
    let registry = Arc::new(Registry::open(store).context("loading the registry")?);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let auth = settings.server.basic_auth.is_some();
    let server = RegistryServer::start(registry, settings.server.clone())
        .with_context(|| format!("listening on {}", settings.server.listen))?;
    println!("listening on {}", server.url());
    tracing::info!(url = %server.url(), storage = %described, basic_auth = auth, "schema registry serving");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    server.shutdown();
    Ok(())
}

fn main() -> ExitCode {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => return brook_apps::args::exit_code("brook-schema-registry", USAGE, &e),
    };
    brook_apps::app::init_logging(&settings.log);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brook-schema-registry: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = brook_apps::args::unlisted(super::USAGE, super::OPTIONS);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
