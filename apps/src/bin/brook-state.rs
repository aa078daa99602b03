//! brook-state: look at and manage an application's local state.
//!
//! ```text
//! brook-state stores  --state-dir DIR --application-id ID
//! brook-state inspect --state-dir DIR --application-id ID --store NAME [--task T]
//!                     [--op count|get|range] [--key K] [--from K] [--to K] [--limit N]
//! brook-state wipe    --state-dir DIR --application-id ID [--task T]
//! brook-state rebuild --bootstrap HOST:PORT --state-dir DIR --application-id ID
//!                     [--task T] [--store NAME]
//! brook-state reset   --bootstrap HOST:PORT --application-id ID --input-topic T...
//!                     [--to earliest|<ms since the epoch>] [--state-dir DIR]
//! ```
//!
//! - `stores` lists the stores of each task with the changelog offset of
//!   their checkpoint;
//! - `inspect` opens a store read-only (safe while the application runs)
//!   and prints its entry count, one key's value, or a key range (keys are
//!   given as UTF-8 text; bytes that are not printable are shown as hex);
//! - `wipe` deletes local state (refused while an instance holds the state
//!   directory); the next start rebuilds it from the changelogs, replaying
//!   them in full;
//! - `rebuild` rebuilds local stores from their changelogs alone, without
//!   processing input, and checkpoints them;
//! - `reset` makes the application recompute from its inputs: rewinds its
//!   consumer group on the input topics, deletes its changelog and
//!   repartition topics, and removes its local state.
//!
//! Stop the application's instances before `wipe`, `rebuild` or `reset`.
//!
//! Exit codes: 0 done, 1 the operation failed (the message says why),
//! 2 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use brook_apps::args::Args;
use brook_runtime::kafka::{KafkaCluster, KafkaConfig};
use brook_runtime::tools::{self, ResetTo};
use brook_state::{KeyValueBytes, StateDirectory};

const USAGE: &str = "usage:
  brook-state stores  --state-dir DIR --application-id ID
  brook-state inspect --state-dir DIR --application-id ID --store NAME [--task T]
                      [--op count|get|range] [--key K] [--from K] [--to K] [--limit N]
  brook-state wipe    --state-dir DIR --application-id ID [--task T]
  brook-state rebuild --bootstrap HOST:PORT --state-dir DIR --application-id ID [--task T] [--store NAME]
  brook-state reset   --bootstrap HOST:PORT --application-id ID --input-topic T...
                      [--to earliest|<ms since the epoch>] [--state-dir DIR]";

const OPTIONS: &[&str] = &[
    "state-dir",
    "application-id",
    "store",
    "task",
    "op",
    "key",
    "from",
    "to",
    "limit",
    "bootstrap",
    "input-topic",
];

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    if matches!(command.as_str(), "--help" | "-h" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(argv, OPTIONS, USAGE) {
        Ok(args) => args,
        Err(error) => return brook_apps::args::exit_code("brook-state", USAGE, &error),
    };
    let result = match command.as_str() {
        "stores" => stores(&args),
        "inspect" => inspect(&args),
        "wipe" => wipe(&args),
        "rebuild" => rebuild(&args),
        "reset" => reset(&args),
        "" => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        other => {
            eprintln!("brook-state: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("brook-state: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn required<'a>(args: &'a Args, name: &str) -> Result<&'a str> {
    args.get(name)
        .with_context(|| format!("--{name} is required\n\n{USAGE}"))
}

fn location(args: &Args) -> Result<(PathBuf, String)> {
    Ok((
        PathBuf::from(required(args, "state-dir")?),
        required(args, "application-id")?.to_owned(),
    ))
}

/// Printable UTF-8 as is, anything else as `0x<hex>`.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => text.to_owned(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn stores(args: &Args) -> Result<()> {
    let (dir, app) = location(args)?;
    let stores = tools::list_stores(&dir, &app)?;
    if stores.is_empty() {
        bail!("no stores under {}", dir.join(&app).display());
    }
    println!("task\tstore\tcheckpoint");
    for s in stores {
        let checkpoint = s
            .checkpoint
            .map_or_else(|| "-".to_owned(), |o| o.to_string());
        println!("{}\t{}\t{checkpoint}", s.task, s.store);
    }
    Ok(())
}

fn inspect(args: &Args) -> Result<()> {
    let (dir, app) = location(args)?;
    let store = required(args, "store")?;
    let tasks: Vec<String> = match args.get("task") {
        Some(task) => vec![task.to_owned()],
        None => tools::list_stores(&dir, &app)?
            .into_iter()
            .filter(|s| s.store == store)
            .map(|s| s.task)
            .collect(),
    };
    if tasks.is_empty() {
        bail!(
            "no task of {app} under {} has a store {store:?}",
            dir.display()
        );
    }
    let op = args.get("op").unwrap_or("count");
    let limit: usize = args.parse_or("limit", 100)?;
    let mut total = 0;
    for task in &tasks {
        let db = tools::open_store_read_only(&dir, &app, task, store)?;
        match op {
            "count" => {
                let n = db.len()?;
                total += n;
                println!("{task}\t{n}");
            }
            "get" => {
                let key = required(args, "key")?;
                if let Some(value) = db.get(key.as_bytes())? {
                    println!("{task}\t{key}\t{}", show(&value));
                }
            }
            "range" => {
                let from = args.get("from").map(str::as_bytes);
                let to = args.get("to").map(str::as_bytes);
                for (key, value) in db.range(from, to)?.into_iter().take(limit) {
                    println!("{task}\t{}\t{}", show(&key), show(&value));
                }
            }
            other => bail!("unknown --op {other:?}: count, get or range"),
        }
    }
    if op == "count" && tasks.len() > 1 {
        println!("total\t{total}");
    }
    Ok(())
}

fn wipe(args: &Args) -> Result<()> {
    let (dir, app) = location(args)?;
    let state = StateDirectory::open(&dir, &app)?;
    let tasks = match args.get("task") {
        Some(task) => vec![task.to_owned()],
        None => state.tasks()?,
    };
    for task in &tasks {
        state.wipe_task(task)?;
        println!("wiped {}", state.root().join(task).display());
    }
    Ok(())
}

fn cluster(args: &Args) -> Result<KafkaCluster> {
    let bootstrap = required(args, "bootstrap")?;
    KafkaCluster::new(KafkaConfig::new(bootstrap).with_process_env())
        .with_context(|| format!("connecting to Kafka at {bootstrap}"))
}

fn rebuild(args: &Args) -> Result<()> {
    let (dir, app) = location(args)?;
    let cluster = cluster(args)?;
    let tasks: Vec<String> = args.all("task").to_vec();
    let stores: Vec<String> = args.all("store").to_vec();
    let rebuilt = tools::rebuild_state(
        &cluster,
        &app,
        &dir,
        &tasks,
        &stores,
        brook_state::RocksDbConfig::default(),
    )?;
    if rebuilt.is_empty() {
        bail!("no stores to rebuild under {}", dir.join(&app).display());
    }
    for r in rebuilt {
        let rate = r.records as f64 / r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{}\t{}\t{} records from {} in {:.2?} ({rate:.0} records/s)",
            r.task, r.store, r.records, r.changelog, r.elapsed
        );
    }
    Ok(())
}

fn reset(args: &Args) -> Result<()> {
    let app = required(args, "application-id")?;
    let inputs = args.all("input-topic");
    if inputs.is_empty() {
        bail!("--input-topic is required (repeat it for each input topic)\n\n{USAGE}");
    }
    let to =
        match args.get("to").unwrap_or("earliest") {
            "earliest" => ResetTo::Earliest,
            ms => ResetTo::Timestamp(ms.parse().with_context(|| {
                format!("--to {ms:?}: earliest or milliseconds since the epoch")
            })?),
        };
    let cluster = cluster(args)?;
    let state_dir = args.get("state-dir").map(PathBuf::from);
    let report = tools::reset_application(&cluster, app, inputs, to, state_dir.as_deref())?;
    for (tp, offset) in &report.input_offsets {
        println!("{tp}\tcommitted offset now {offset}");
    }
    for topic in &report.deleted_topics {
        println!("deleted topic {topic}");
    }
    if let Some(dir) = &report.wiped_state {
        println!("removed local state under {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn the_usage_lists_every_option() {
        let missing = brook_apps::args::unlisted(super::USAGE, super::OPTIONS);
        assert!(missing.is_empty(), "--help does not list {missing:?}");
    }
}
