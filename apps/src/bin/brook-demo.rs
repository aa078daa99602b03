//! brook-demo: runs the demo pipeline (see `brook_apps::demo`) against a
//! Kafka cluster and verifies its output.
//!
//! ```text
//! brook-demo [--bootstrap HOST:PORT] [--events N] [--prefix NAME] [--create-topics yes|no]
//! ```
//!
//! The bootstrap address defaults to `$BROOK_BOOTSTRAP`. Topics and groups
//! are named `<prefix>.*`; the default prefix, `demo-<unix time>`, is new on
//! every run, so runs against a Kafka that keeps data never read each
//! other's output. With `--create-topics yes` (the default) the topics are
//! created through the admin API; the dev broker has none, so `make demo`
//! creates them when it starts the broker and passes `--prefix demo
//! --create-topics no`. Exits 0 when every
//! count matches the generator, 1 when the pipeline ran but the output is
//! wrong, 2 on a usage error.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_apps::demo::{self, DemoConfig, Topics};
use brook_runtime::kafka::{CreateOutcome, KafkaAdmin, KafkaConfig};

const USAGE: &str = "usage: brook-demo [--bootstrap HOST:PORT] [--events N] [--prefix NAME] [--create-topics yes|no]";

fn main() {
    let parsed = Args::parse(
        std::env::args().skip(1),
        &["bootstrap", "events", "prefix", "create-topics"],
        USAGE,
    )
    .and_then(|args| settings(&args));
    let (kafka, config, create_topics) = match parsed {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("brook-demo: {error:#}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&kafka, &config, create_topics) {
        eprintln!("brook-demo: FAILED: {error:#}");
        std::process::exit(1);
    }
}

/// Everything the command line says, checked before anything runs.
fn settings(args: &Args) -> Result<(KafkaConfig, DemoConfig, bool)> {
    let kafka = match args.get("bootstrap") {
        Some(bootstrap) => KafkaConfig::new(bootstrap),
        None => {
            KafkaConfig::from_env().context("no broker: pass --bootstrap or set BROOK_BOOTSTRAP")?
        }
    };
    let prefix = match args.get("prefix") {
        Some(prefix) => prefix.to_owned(),
        None => format!(
            "demo-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        ),
    };
    let topics = Topics::new(&prefix);
    for spec in topics.specs() {
        spec.validate()
            .with_context(|| format!("--prefix {prefix:?}"))?;
    }
    let create_topics = match args.get("create-topics").unwrap_or("yes") {
        "yes" => true,
        "no" => false,
        other => bail!("--create-topics {other:?}: expected yes or no"),
    };
    let config = DemoConfig {
        topics,
        events: args.parse_or("events", DemoConfig::default().events)?,
        ..DemoConfig::default()
    };
    Ok((kafka, config, create_topics))
}

fn run(kafka: &KafkaConfig, config: &DemoConfig, create_topics: bool) -> Result<()> {
    if create_topics {
        let admin = KafkaAdmin::new(kafka)?.with_timeout(Duration::from_secs(15));
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        for outcome in runtime.block_on(admin.create_topics(&config.topics.specs()))? {
            match outcome {
                CreateOutcome::Created(t) => println!("created topic {t}"),
                CreateOutcome::AlreadyExists(t) => println!("topic {t} exists"),
            }
        }
    }

    println!(
        "brook demo on {}: {} page views ({} malformed) by {} users over {} pages",
        kafka.bootstrap(),
        config.events,
        config.malformed,
        config.users,
        config.pages
    );
    let report = demo::run(kafka, config)?;

    let mut top: Vec<_> = report.counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("\n{:<16} {:>8}", "page", "views");
    for (page, count) in top.iter().take(10) {
        println!("{page:<16} {count:>8}");
    }
    println!("... {} pages in all\n", report.counts.len());
    for (name, stats) in &report.stages {
        println!(
            "stage {name:<6} consumed {:>6}  produced {:>6}  dead-lettered {:>2}  commits {:>4}",
            stats.consumed, stats.produced, stats.dead_lettered, stats.commits
        );
    }
    for (key, letter) in &report.dead_letters {
        println!("dead letter {key}: {letter}");
    }
    println!(
        "\nOK: all {} page counts match the {} generated views ({} malformed records dead-lettered) in {:.2?}",
        report.counts.len(),
        report.counts.values().sum::<u64>(),
        report.dead_letters.len(),
        report.elapsed
    );
    Ok(())
}
