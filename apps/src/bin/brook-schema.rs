//! brook-schema: schema evolution from the command line.
//!
//! ```text
//! brook-schema check    --registry URL --subject S --file F.avsc [--version latest|N]
//! brook-schema register --registry URL --subject S --file F.avsc
//! brook-schema register-shipped --registry URL
//! brook-schema migrate  [--registry URL --bootstrap HOST:PORT] [--topic T] [--count N]
//! ```
//!
//! - `check`: is the schema in the file valid Avro, and would the registry
//!   accept it under the subject (by the subject's compatibility level, or
//!   against one version)? Prints the verdict and the registry's reasons.
//!   Run it in CI before deploying a producer or consumer with a new
//!   schema.
//! - `register`: registers the file and prints its id and the subject's
//!   latest version; `register-shipped` registers every schema brook ships
//!   (`schemas/subjects/`), oldest version first.
//! - `migrate`: the seed's v1 → v2 migration: checks v2, registers v1 and
//!   v2, runs a v1 and a v2 producer at once (`--count` events each) while
//!   a v1 and a v2 consumer read the whole topic, and reports what each
//!   read. Without `--registry`/`--bootstrap` it runs on an embedded
//!   registry and an in-process cluster.
//!
//! Basic auth for the registry: `BROOK_REGISTRY_BASIC_AUTH=user:password`.
//! Exit codes: 0 compatible / done, 1 incompatible or failed (the message
//! says why), 2 bad arguments.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_apps::migrate::{MigrationOptions, run_migration};
use brook_connectors::avro::{RegistryClientConfig, SchemaRegistryClient};
use brook_runtime::cluster::Cluster;
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::memory::MemoryCluster;
use brook_schemas::codec::CodecSchema;
use brook_schemas::events::SCHEMA_FILES;
use brook_schemas::server::RegistryServer;

const USAGE: &str = "usage:
  brook-schema check    --registry URL --subject S --file F.avsc [--version latest|N]
  brook-schema register --registry URL --subject S --file F.avsc
  brook-schema register-shipped --registry URL
  brook-schema migrate  [--registry URL --bootstrap HOST:PORT] [--topic T] [--count N]
every command: [--log FILTER (warn)]
registry basic auth: BROOK_REGISTRY_BASIC_AUTH=user:password";

const OPTIONS: &[&str] = &[
    "registry",
    "subject",
    "file",
    "version",
    "bootstrap",
    "topic",
    "count",
    "log",
];

/// A failure that is the answer (incompatible), not an error.
struct Incompatible;

fn client(url: &str) -> Result<Arc<SchemaRegistryClient>> {
    let mut config = RegistryClientConfig::new(url);
    if let Ok(auth) = std::env::var("BROOK_REGISTRY_BASIC_AUTH")
        && !auth.is_empty()
    {
        let (user, password) = auth
            .split_once(':')
            .context("BROOK_REGISTRY_BASIC_AUTH must be user:password")?;
        config = config.basic_auth(user, password);
    }
    SchemaRegistryClient::new(config).map_err(anyhow::Error::from)
}

fn required<'a>(args: &'a Args, name: &str) -> Result<&'a str> {
    args.get(name)
        .with_context(|| format!("--{name} is required\n\n{USAGE}"))
}

fn read_schema(path: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the schema file {path}"))?;
    CodecSchema::parse(&text)
        .map_err(|e| anyhow::anyhow!("{path} is not a valid Avro schema: {e}"))?;
    Ok(text)
}

fn check(args: &Args) -> Result<Result<(), Incompatible>> {
    let (url, subject, file) = (
        required(args, "registry")?,
        required(args, "subject")?,
        required(args, "file")?,
    );
    let schema = read_schema(file)?;
    let registry = client(url)?;
    let (s, v) = (subject.to_owned(), args.get("version").map(str::to_owned));
    let c = registry.clone();
    let (compatible, reasons, level, latest) = registry.block_on(move |_| {
        Box::pin(async move {
            let latest = c.latest_version(&s).await?;
            let level = c.compatibility_level(&s).await?;
            let (ok, reasons) = c.check_compatibility(&s, &schema, v.as_deref()).await?;
            Ok((ok, reasons, level, latest))
        })
    })?;
    let against = match (args.get("version"), latest) {
        (Some(v), _) => format!("version {v}"),
        (None, Some((v, _))) => format!("the versions {level} checks (latest: {v})"),
        (None, None) => "nothing (the subject has no versions yet)".to_owned(),
    };
    if compatible {
        println!("{file}: compatible with {subject} ({level}), checked against {against}");
        Ok(Ok(()))
    } else {
        println!("{file}: NOT compatible with {subject} ({level}), checked against {against}:");
        for reason in reasons {
            println!("  - {reason}");
        }
        Ok(Err(Incompatible))
    }
}

fn register(args: &Args, shipped: bool) -> Result<Result<(), Incompatible>> {
    let registry = client(required(args, "registry")?)?;
    let todo: Vec<(String, String)> = if shipped {
        SCHEMA_FILES
            .iter()
            .map(|f| (f.subject.to_owned(), f.text.to_owned()))
            .collect()
    } else {
        vec![(
            required(args, "subject")?.to_owned(),
            read_schema(required(args, "file")?)?,
        )]
    };
    for (subject, schema) in todo {
        let c = registry.clone();
        let s = subject.clone();
        let outcome = registry.block_on(move |_| {
            Box::pin(async move {
                let id = c.register(&s, &schema).await?;
                let latest = c.latest_version(&s).await?;
                Ok((id, latest))
            })
        });
        match outcome {
            Ok((id, latest)) => println!(
                "{subject}: id {id} (latest version {})",
                latest.map_or_else(|| "?".to_owned(), |(v, _)| v.to_string())
            ),
            Err(e) if e.message.contains("409") => {
                println!("{subject}: NOT registered, incompatible: {}", e.message);
                return Ok(Err(Incompatible));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Ok(()))
}

fn migrate(args: &Args) -> Result<Result<(), Incompatible>> {
    let mut options = MigrationOptions::default();
    if let Some(topic) = args.get("topic") {
        options.topic = topic.to_owned();
    }
    options.count = args.parse_or("count", options.count)?;
    // Embedded unless told where the registry and the cluster are.
    let (_embedded, registry, cluster): (Option<RegistryServer>, _, Arc<dyn Cluster>) = match (
        args.get("registry"),
        args.get("bootstrap"),
    ) {
        (Some(url), Some(bootstrap)) => (
            None,
            client(url)?,
            Arc::new(
                KafkaCluster::new(KafkaConfig::new(bootstrap).with_process_env())
                    .context("connecting to Kafka")?,
            ),
        ),
        (None, None) => {
            let server =
                RegistryServer::start_in_memory().context("starting the embedded registry")?;
            println!(
                "embedded: registry at {}, in-process cluster (pass --registry and --bootstrap for real ones)",
                server.url()
            );
            let client = client(&server.url())?;
            (Some(server), client, Arc::new(MemoryCluster::new()))
        }
        _ => bail!("give both --registry and --bootstrap, or neither (embedded)\n\n{USAGE}"),
    };
    let report = run_migration(cluster, registry, &options)?;
    println!("{report}");
    Ok(if report.ok() {
        Ok(())
    } else {
        Err(Incompatible)
    })
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let args = match Args::parse(argv, OPTIONS, USAGE) {
        Ok(args) => args,
        Err(e) => return brook_apps::args::exit_code("brook-schema", USAGE, &e),
    };
    brook_apps::app::init_logging(args.get("log").unwrap_or("warn"));
    let outcome = match command.as_str() {
        "check" => check(&args),
        "register" => register(&args, false),
        "register-shipped" => register(&args, true),
        "migrate" => migrate(&args),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("brook-schema: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Incompatible)) => ExitCode::from(1),
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("brook-schema: {message}");
            if message.contains("is required") {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
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
