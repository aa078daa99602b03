//! `Topology::describe()` pinned by golden files in `tests/golden/`.
//! After an intended change: `BROOK_UPDATE_GOLDEN=1 cargo test -p brook-topology --test describe`,
//! then review the diff of the golden files.

use std::path::PathBuf;

use brook_topology::serdes::{Json, Utf8};
use brook_topology::{Consumed, Produced, Repartitioned, StreamsBuilder, Topology, TopologyError};

/// This package's directory, as cargo gives it to the running test: a test
/// binary reused from a shared target directory may have been built in
/// another checkout, whose files `env!("CARGO_MANIFEST_DIR")` would name.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .expect("CARGO_MANIFEST_DIR is set by cargo test")
}

fn check_golden(name: &str, topology: &Topology) {
    let path = package_dir()
        .join("tests/golden")
        .join(format!("{name}.txt"));
    let actual = topology.describe().to_string();
    if std::env::var_os("BROOK_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BROOK_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "describe() of {name} changed; see {}",
        path.display()
    );
}

#[test]
fn chain_of_stateless_operators() {
    let b = StreamsBuilder::new();
    b.stream(
        "page-views",
        Consumed::with(Utf8, Json::<serde_json::Value>::new()),
    )
    .filter(|_, v| v["kind"] == "PURCHASE")
    .map_values(|v| v["price"].as_f64().unwrap_or(0.0))
    .to("purchase-prices", Produced::with(Utf8, Json::<f64>::new()));
    check_golden("chain", &b.build().unwrap());
}

#[test]
fn split_merge_and_named_nodes() {
    let b = StreamsBuilder::new();
    let orders = b.stream(
        "orders",
        Consumed::with(Utf8, Json::<i64>::new()).named("orders-source"),
    );
    let branches = orders
        .split()
        .branch(|_, t| *t >= 100)
        .default_branch()
        .into_streams();
    let big = branches[0].map_values(|t| t * 2).name("double-big");
    big.merge(&branches[1]).to(
        "scored-orders",
        Produced::with(Utf8, Json::<i64>::new()).named("scored-sink"),
    );
    check_golden("split_merge", &b.build().unwrap());
}

#[test]
fn repartition_starts_a_new_subtopology() {
    let b = StreamsBuilder::new();
    b.stream("events", Consumed::with(Utf8, Utf8))
        .select_key(|_, v| v.clone())
        .repartition(Repartitioned::named("by-value", Utf8, Utf8).partitions(6))
        .peek(|_, _| {})
        .to("events-by-value", Produced::with(Utf8, Utf8));
    let topology = b.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    check_golden("repartition", &topology);
}

#[test]
fn duplicate_names_and_topics_read_twice_are_refused() {
    let b = StreamsBuilder::new();
    let s = b.stream("a", Consumed::with(Utf8, Utf8));
    s.filter(|_, _| true)
        .name("same")
        .to("x", Produced::with(Utf8, Utf8));
    s.filter(|_, _| true)
        .name("same")
        .to("y", Produced::with(Utf8, Utf8));
    assert_eq!(
        b.build().unwrap_err(),
        TopologyError::DuplicateName("same".into())
    );

    let b = StreamsBuilder::new();
    b.stream("a", Consumed::with(Utf8, Utf8))
        .to("x", Produced::with(Utf8, Utf8));
    b.stream("a", Consumed::with(Utf8, Utf8))
        .to("y", Produced::with(Utf8, Utf8));
    let err = b.build().unwrap_err();
    assert_eq!(err, TopologyError::TopicReadTwice("a".into()));
    assert!(err.to_string().contains("read it once"), "{err}");
}

#[test]
fn stateful_topology_shows_stores_repartition_and_joins() {
    use brook_topology::{Grouped, Joined, Materialized};
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Consumed::with(Utf8, Utf8),
        Materialized::named("users-store", Utf8, Utf8),
    );
    b.stream("lines", Consumed::with(Utf8, Utf8))
        .flat_map_values(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .group_by(|_, w| w.clone(), Grouped::with(Utf8, Utf8))
        .count(Materialized::named("word-counts", Utf8, Json::<i64>::new()))
        .to("word-counts", Produced::with(Utf8, Json::<i64>::new()));
    b.stream("orders", Consumed::with(Utf8, Utf8))
        .join(
            &users,
            |_, o, u| format!("{o}{u}"),
            Joined::named("orders-users", Utf8, Utf8),
        )
        .to("enriched", Produced::with(Utf8, Utf8));
    let topology = b.build().unwrap();
    let stores: Vec<&str> = topology.stores().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stores, vec!["users-store", "word-counts"]);
    check_golden("stateful", &topology);
}
