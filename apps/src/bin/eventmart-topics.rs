//! eventmart-topics: creates and verifies EventMart's topics from the
//! declarative file (`apps/eventmart/topics.toml`, or `--file`).
//!
//! ```text
//! eventmart-topics apply  --bootstrap 127.0.0.1:9092            # create what is missing, diff the rest
//! eventmart-topics verify --bootstrap 127.0.0.1:9092            # diff only
//! eventmart-topics verify --bootstrap ... --configs no          # partitions only (brokers without DescribeConfigs)
//! ```
//!
//! Exit codes: 0 every topic as declared (or created), 1 a topic differs
//! or is missing (the diff says how), 2 bad usage or a bad file.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use brook_apps::args::Args;
use brook_apps::eventmart::topics::{EVENTMART_TOPICS, Mode, TopicsFile, all_match, provision};
use brook_runtime::kafka::{KafkaAdmin, KafkaConfig};

const USAGE: &str = "usage: eventmart-topics apply|verify --bootstrap HOST:PORT
    [--file TOPICS.toml (the shipped apps/eventmart/topics.toml)] [--prefix P]
    [--configs yes|no (yes; no: compare partitions only, create nothing)]
    [--timeout SECONDS (30)]";

const OPTIONS: &[&str] = &["bootstrap", "file", "prefix", "configs", "timeout"];

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let mode = match command.as_str() {
        "apply" => Mode::Apply,
        "verify" => Mode::Verify,
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("eventmart-topics: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let prepared = Args::parse(argv, OPTIONS, USAGE).and_then(|args| {
        let text = match args.get("file") {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
            }
            None => EVENTMART_TOPICS.to_owned(),
        };
        let file =
            TopicsFile::parse(&text, args.get("prefix").unwrap_or("")).with_context(|| {
                args.get("file")
                    .unwrap_or("the shipped topics file")
                    .to_owned()
            })?;
        let configs = match args.get("configs").unwrap_or("yes") {
            "yes" => true,
            "no" => false,
            other => anyhow::bail!("--configs {other:?}: yes or no"),
        };
        let timeout = Duration::from_secs(args.parse_or("timeout", 30u64)?);
        let bootstrap = args
            .get("bootstrap")
            .context("--bootstrap is required")?
            .to_owned();
        Ok((file, configs, timeout, bootstrap))
    });
    let (file, configs, timeout, bootstrap) = match prepared {
        Ok(p) => p,
        Err(e) => return brook_apps::args::exit_code("eventmart-topics", USAGE, &e),
    };
    let outcome = (|| -> Result<bool> {
        let admin =
            KafkaAdmin::new(&KafkaConfig::new(bootstrap).with_process_env())?.with_timeout(timeout);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let reports = runtime.block_on(provision(&admin, &file, mode, configs))?;
        for r in &reports {
            println!("{r}");
        }
        if !configs {
            println!("(configs not compared: --configs no)");
        }
        Ok(all_match(&reports))
    })();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("eventmart-topics: some topics differ from the file (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("eventmart-topics: {e:#}");
            ExitCode::from(1)
        }
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
