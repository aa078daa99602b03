//! brook-eos-test: the application of brook's exactly-once system tests, in
//! the shape of Kafka Streams' EOS system tests (`EosTestClient`). Takes
//! `--input`, a topic of keyed records (UTF-8 key, JSON integer value: the
//! key's sequence number), and writes three results:
//!
//! - `--echo`: every input record unchanged (stateless);
//! - `--windowed`: the count per key and 1 s tumbling window (RocksDB window
//!   store with caching), keyed `<key>@<window start ms>`;
//! - `--sums`: the sum of the values per group (`g<n % 3>` for key `k<n>`),
//!   after a key change, so through a repartition topic and a second
//!   sub-topology (RocksDB key-value store).
//!
//! A verifier reading them read_committed can compare each against an
//! oracle computed from the input. All of `brook_apps::app`'s flags apply
//! (`--guarantee exactly_once_v2`, `--state-dir`, `--instance/--instances`).

use std::process::ExitCode;
use std::time::Duration;

use brook_apps::app::{self, AppSettings};
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{
    Consumed, Grouped, Materialized, Produced, StreamsBuilder, TimeWindows, Topology, Windowed,
};

/// The group of key `k<n>`: `g<n % 3>` (keys of another shape keep theirs).
fn group_of(key: &str) -> String {
    key.strip_prefix('k')
        .and_then(|n| n.parse::<u64>().ok())
        .map_or_else(|| key.to_owned(), |n| format!("g{}", n % 3))
}

fn topology(settings: &AppSettings) -> anyhow::Result<Topology> {
    let b = StreamsBuilder::new();
    let input = b.stream(
        settings.option("input")?,
        Consumed::with(Utf8, Json::<i64>::new()),
    );
    input.to(
        settings.option("echo")?,
        Produced::with(Utf8, Json::<i64>::new()),
    );
    // Grace of an hour: the driver's timestamps advance 20 ms a record, so
    // no window closes while the tests replay.
    let windows = TimeWindows::tumbling(Duration::from_secs(1), Duration::from_secs(3600))
        .map_err(|e| anyhow::anyhow!("1 s windows: {e}"))?;
    input
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .windowed_by(windows)
        .count(Materialized::named("windowed-counts", Utf8, Json::<i64>::new()).with_caching())
        .to_stream()
        .flat_map(|k: Windowed<String>, count: Option<i64>| {
            count.map(|c| (format!("{}@{}", k.key, k.window.start), c))
        })
        .to(
            settings.option("windowed")?,
            Produced::with(Utf8, Json::<i64>::new()),
        );
    input
        .group_by(
            |k: &String, _| group_of(k),
            Grouped::with(Utf8, Json::<i64>::new()),
        )
        .aggregate(
            || 0i64,
            |_, v, sum| sum + v,
            Materialized::named("sums", Utf8, Json::<i64>::new()).with_caching(),
        )
        .to(
            settings.option("sums")?,
            Produced::with(Utf8, Json::<i64>::new()),
        );
    Ok(b.build()?)
}

fn main() -> ExitCode {
    app::run(
        "eos-test",
        &[
            ("input", "TOPIC  the numbered records (required)"),
            ("echo", "TOPIC  each record as it came (required)"),
            (
                "windowed",
                "TOPIC  cached counts per key in 1 s windows (required)",
            ),
            (
                "sums",
                "TOPIC  cached sums per key group, through a repartition (required)",
            ),
        ],
        topology,
    )
}

#[cfg(test)]
mod tests {
    use super::group_of;

    #[test]
    fn keys_fall_into_three_groups() {
        assert_eq!(group_of("k0"), "g0");
        assert_eq!(group_of("k4"), "g1");
        assert_eq!(group_of("k11"), "g2");
        assert_eq!(group_of("other"), "other");
    }
}
