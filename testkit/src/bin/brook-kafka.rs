//! brook-kafka: the test suite's Apache Kafka (the jars `make tools`
//! cached from Maven Central), as a standalone local broker for
//! `make demo-kafka` and for trying brook by hand.
//!
//! ```text
//! brook-kafka [--nodes N] [--bootstrap-file PATH]
//! ```
//!
//! Formats and starts N KRaft nodes (combined broker and controller; 1 by
//! default, 3 gives replication 3 and min.insync.replicas 2) on free
//! loopback ports in a temporary directory, prints `BROOK_BOOTSTRAP=<list>`
//! (and writes the list to `--bootstrap-file`), then serves until SIGINT or
//! SIGTERM, when it stops the nodes and removes their data. Exit codes: 0
//! after a clean stop, 1 when Kafka could not start, 2 for bad arguments.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brook_testkit::{KafkaBroker, KafkaOptions};

const USAGE: &str = "usage: brook-kafka [--nodes N] [--bootstrap-file PATH]";

fn parse() -> Result<(usize, Option<String>), String> {
    let mut nodes = 1;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--nodes" => {
                let v = value()?;
                nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or(format!("--nodes {v}: a number from 1 to 5"))?;
            }
            "--bootstrap-file" => file = Some(value()?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok((nodes, file))
}

fn main() {
    let (nodes, file) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("brook-kafka: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("brook-kafka: installing signal handlers: {e}");
            std::process::exit(1);
        }
    }
    let mut kafka = match KafkaBroker::start_with(KafkaOptions::cluster(nodes)) {
        Ok(kafka) => kafka,
        Err(e) => {
            eprintln!("brook-kafka: {e}");
            std::process::exit(1);
        }
    };
    let bootstrap = kafka.bootstrap();
    if let Some(path) = &file
        && let Err(e) = std::fs::write(path, &bootstrap)
    {
        eprintln!("brook-kafka: writing {path}: {e}");
        let _ = kafka.stop();
        std::process::exit(1);
    }
    println!("BROOK_BOOTSTRAP={bootstrap}");
    let _ = std::io::stdout().flush();
    eprintln!(
        "brook-kafka: Apache Kafka {} ({nodes} node{}) started in {:.1} s; data in {}",
        brook_testkit::KAFKA_VERSION,
        if nodes == 1 { "" } else { "s" },
        kafka.started_in().as_secs_f64(),
        kafka.dir().display()
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss: Vec<String> = kafka
        .peak_rss_kib()
        .iter()
        .map(|k| format!("{} MiB", k / 1024))
        .collect();
    eprintln!("brook-kafka: stopping (peak RSS {})", rss.join(", "));
    if let Err(e) = kafka.stop() {
        eprintln!("brook-kafka: stopping: {e}");
        std::process::exit(1);
    }
}
