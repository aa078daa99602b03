//! brook-dev-broker: librdkafka's mock cluster as a standalone dev broker.
//!
//! ```text
//! brook-dev-broker [--brokers N] [--topic NAME:PARTITIONS]... [--bootstrap-file PATH]
//! ```
//!
//! Prints `BROOK_BOOTSTRAP=<host:port>` on stdout (and writes the address to
//! `--bootstrap-file`, if given), then serves until it is killed. The mock
//! cluster has no admin API, so topics are created here with `--topic`;
//! topics auto-created by clients get 4 partitions. It keeps no topic configs,
//! does not enforce transactions and keeps only ~5 MiB per partition: a
//! development broker, not a store.

use std::io::Write;

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use rdkafka::mocking::MockCluster;

const USAGE: &str =
    "usage: brook-dev-broker [--brokers N] [--topic NAME:PARTITIONS]... [--bootstrap-file PATH]";

const OPTIONS: &[&str] = &["brokers", "topic", "bootstrap-file"];

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => brook_apps::args::exit_code("brook-dev-broker", USAGE, &error),
    }
}

fn run() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1), OPTIONS, USAGE)?;
    let brokers: i32 = args.parse_or("brokers", 1)?;
    if !(1..=16).contains(&brokers) {
        bail!("--brokers {brokers}: must be between 1 and 16");
    }
    let mut topics = Vec::new();
    for raw in args.all("topic") {
        let (name, partitions) = raw
            .rsplit_once(':')
            .with_context(|| format!("--topic {raw:?}: expected NAME:PARTITIONS"))?;
        let partitions: i32 = partitions
            .parse()
            .with_context(|| format!("--topic {raw:?}: {partitions:?} is not a partition count"))?;
        let spec = brook_topology::TopicSpec::new(name, partitions);
        spec.validate()
            .with_context(|| format!("--topic {raw:?}"))?;
        topics.push(spec);
    }

    let cluster = MockCluster::new(brokers).context("starting the librdkafka mock cluster")?;
    for spec in &topics {
        cluster
            .create_topic(&spec.name, spec.partitions, 1)
            .with_context(|| format!("creating topic {}", spec.name))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    if let Some(path) = args.get("bootstrap-file") {
        // Write then rename, so a reader never sees a half-written address.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, &bootstrap).with_context(|| format!("writing {tmp}"))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {tmp} to {path}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "BROOK_BOOTSTRAP={bootstrap}")?;
    for spec in &topics {
        writeln!(
            stdout,
            "topic {} ({} partitions)",
            spec.name, spec.partitions
        )?;
    }
    stdout.flush()?;
    drop(stdout);
    // Serve until a signal ends the process; the cluster's threads do the work.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = brook_apps::args::unlisted(super::USAGE, super::OPTIONS);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
