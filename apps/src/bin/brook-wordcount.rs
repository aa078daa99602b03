//! brook-wordcount: counts the words of a topic's lines, per word, into
//! another topic. An application binary in a few lines: see
//! `brook_apps::app` for its flags (`--bootstrap`, `--state-dir`,
//! `--guarantee`, `--threads`, `--instance/--instances`, `--metrics-addr`, ...).
//!
//! ```text
//! brook-wordcount --bootstrap localhost:9092 --input lines --output word-counts \
//!     --state-dir /var/lib/brook --metrics-addr 127.0.0.1:9464
//! ```

use std::process::ExitCode;

use brook_apps::app::{self, AppSettings};
use brook_topology::serdes::{Json, Nullable, Utf8};
use brook_topology::{Consumed, Grouped, Materialized, Produced, StreamsBuilder, Topology};

fn topology(settings: &AppSettings) -> anyhow::Result<Topology> {
    let b = StreamsBuilder::new();
    // Lines usually come without a key (a console producer writes none):
    // the key is read as optional and ignored, not dead-lettered.
    b.stream(
        settings.option("input")?,
        Consumed::with(Nullable(Utf8), Utf8),
    )
    .flat_map_values(|line: String| {
        line.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
    })
    .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
    .count(Materialized::named("word-counts", Utf8, Json::<i64>::new()))
    .to(
        settings.option("output")?,
        Produced::with(Utf8, Json::<i64>::new()),
    );
    Ok(b.build()?)
}

fn main() -> ExitCode {
    app::run(
        "wordcount",
        &[
            ("input", "TOPIC  lines of text (required)"),
            (
                "output",
                "TOPIC  the count of each word, updated per line (required)",
            ),
        ],
        topology,
    )
}
