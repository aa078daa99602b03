//! Joins on the TopologyTestDriver: stream–table (inner, left) across
//! partitions, and windowed stream–stream (inner, left, outer) with records
//! on either side first, window closing and late records.

use std::error::Error;
use std::time::Duration;

use brook_runtime::cluster::Cluster;
use brook_runtime::driver::TopologyTestDriver;
use brook_topology::serdes::{Json, Utf8};
use brook_topology::stream_join::{JoinWindows, StreamJoined};
use brook_topology::{Consumed, Joined, Materialized, Produced, StreamsBuilder, TopologyError};

type TestResult = Result<(), Box<dyn Error>>;

const MIN: i64 = 60_000;

fn orders_and_users(left: bool) -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Consumed::with(Utf8, Utf8),
        Materialized::named("users-store", Utf8, Utf8),
    );
    let orders = b.stream("orders", Consumed::with(Utf8, Json::<i64>::new()));
    let joined = Joined::named("orders-users", Utf8, Json::<i64>::new());
    let out = if left {
        orders.left_join(
            &users,
            |_, total, user| format!("{}:{total}", user.unwrap_or_else(|| "?".into())),
            joined,
        )
    } else {
        orders.join(&users, |_, total, user| format!("{user}:{total}"), joined)
    };
    out.to("enriched", Produced::with(Utf8, Utf8));
    Ok(b.build()?)
}

#[test]
fn stream_table_joins_see_the_table_as_of_each_stream_record() -> TestResult {
    for left in [false, true] {
        let driver = TopologyTestDriver::builder(orders_and_users(left)?)
            .default_partitions(3)
            .build()?;
        let users = driver.input_topic("users", Utf8, Utf8);
        let orders = driver.input_topic("orders", Utf8, Json::<i64>::new());
        let out = driver.output_topic("enriched", Utf8, Utf8);
        users.pipe_input("u1".into(), "Alice".into(), 1)?;
        users.pipe_input("u2".into(), "Bob".into(), 2)?;
        orders.pipe_input("u1".into(), 10, 3)?;
        orders.pipe_input("u3".into(), 30, 4)?;
        // A table update alone produces nothing: the stream drives the join.
        users.pipe_input("u3".into(), "Carol".into(), 5)?;
        orders.pipe_input("u3".into(), 31, 6)?;
        users.pipe_tombstone("u1".into(), 7)?;
        orders.pipe_input("u1".into(), 11, 8)?;
        let got: Vec<String> = out.read_values()?;
        let expected: Vec<&str> = if left {
            vec!["Alice:10", "?:30", "Carol:31", "?:11"]
        } else {
            vec!["Alice:10", "Carol:31"]
        };
        assert_eq!(got, expected, "left = {left}");
    }
    Ok(())
}

#[test]
fn a_rekeyed_stream_is_repartitioned_before_a_table_join() -> TestResult {
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Consumed::with(Utf8, Utf8),
        Materialized::named("users-store", Utf8, Utf8),
    );
    b.stream("orders-by-id", Consumed::with(Utf8, Utf8))
        .select_key(|_, user| user.clone())
        .join(
            &users,
            |_, _, name| name,
            Joined::named("orders-users", Utf8, Utf8),
        )
        .to("order-user-names", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("shop")
        .default_partitions(4)
        .build()?;
    assert_eq!(
        driver
            .cluster()
            .partition_count("shop-orders-users-repartition")?,
        4
    );
    driver
        .input_topic("users", Utf8, Utf8)
        .pipe_input("u7".into(), "Dora".into(), 1)?;
    driver
        .input_topic("orders-by-id", Utf8, Utf8)
        .pipe_input("order-1".into(), "u7".into(), 2)?;
    let out = driver
        .output_topic("order-user-names", Utf8, Utf8)
        .read_key_values()?;
    assert_eq!(out, vec![("u7".to_string(), "Dora".to_string())]);
    Ok(())
}

#[test]
fn joining_a_table_without_a_store_is_a_build_error() {
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Consumed::with(Utf8, Utf8),
        Materialized::named("users-store", Utf8, Utf8),
    );
    let filtered = users.filter(|_, name| !name.is_empty());
    b.stream("orders", Consumed::with(Utf8, Utf8))
        .join(
            &filtered,
            |_, o, u| format!("{o}{u}"),
            Joined::named("j", Utf8, Utf8),
        )
        .to("out", Produced::with(Utf8, Utf8));
    assert_eq!(
        b.build().err(),
        Some(TopologyError::TableNotMaterialized { join: "j".into() })
    );
}

fn orders_payments(kind: &str) -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let orders = b.stream("orders", Consumed::with(Utf8, Utf8));
    let payments = b.stream("payments", Consumed::with(Utf8, Utf8));
    let windows = JoinWindows::of(Duration::from_secs(600), Duration::from_secs(60));
    let joined = || StreamJoined::named("orders-payments", Utf8, Utf8, Utf8);
    let show = |o: Option<&String>, p: Option<&String>| {
        format!(
            "{}+{}",
            o.map_or("-", String::as_str),
            p.map_or("-", String::as_str)
        )
    };
    let out = match kind {
        "inner" => orders.join_stream(
            &payments,
            move |_, o, p| show(Some(o), Some(p)),
            windows,
            joined(),
        ),
        "left" => orders.left_join_stream(
            &payments,
            move |_, o, p| show(Some(o), p),
            windows,
            joined(),
        ),
        _ => orders.outer_join_stream(&payments, move |_, o, p| show(o, p), windows, joined()),
    };
    out.to("matched", Produced::with(Utf8, Utf8));
    Ok(b.build()?)
}

/// Orders and payments, in this order (timestamps in minutes):
/// k1: order @0, payment @5 (match); k2: order @1, payment @30 (too far);
/// k3: payment @2 first, order @9 (match); then a record @60 closes every
/// earlier window (t + 10 min + 1 min grace < 60 min).
fn feed(driver: &TopologyTestDriver) -> TestResult {
    let orders = driver.input_topic("orders", Utf8, Utf8);
    let payments = driver.input_topic("payments", Utf8, Utf8);
    orders.pipe_input("k1".into(), "o1".into(), 0)?;
    orders.pipe_input("k2".into(), "o2".into(), MIN)?;
    payments.pipe_input("k3".into(), "p3".into(), 2 * MIN)?;
    payments.pipe_input("k1".into(), "p1".into(), 5 * MIN)?;
    orders.pipe_input("k3".into(), "o3".into(), 9 * MIN)?;
    payments.pipe_input("k2".into(), "p2".into(), 30 * MIN)?;
    orders.pipe_input("k9".into(), "tick".into(), 60 * MIN)?;
    Ok(())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn inner_stream_join_matches_within_the_window_whichever_side_comes_first() -> TestResult {
    let driver = TopologyTestDriver::new(orders_payments("inner")?)?;
    feed(&driver)?;
    let got = driver.output_topic("matched", Utf8, Utf8).read_records()?;
    let values: Vec<&str> = got.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, vec!["o1+p1", "o3+p3"]);
    // A joined record carries the later of the two timestamps.
    assert_eq!(got[0].timestamp, 5 * MIN);
    assert_eq!(got[1].timestamp, 9 * MIN);
    Ok(())
}

#[test]
fn left_stream_join_emits_unmatched_orders_once_their_window_closed() -> TestResult {
    let driver = TopologyTestDriver::new(orders_payments("left")?)?;
    let out = driver.output_topic("matched", Utf8, Utf8);
    let orders = driver.input_topic("orders", Utf8, Utf8);
    let payments = driver.input_topic("payments", Utf8, Utf8);
    orders.pipe_input("k1".into(), "o1".into(), 0)?;
    orders.pipe_input("k2".into(), "o2".into(), MIN)?;
    // o2's window [-9, 11] + 1 min grace is still open at 12 min: nothing yet.
    payments.pipe_input("k1".into(), "p1".into(), 5 * MIN)?;
    assert_eq!(out.read_values()?, vec!["o1+p1"]);
    payments.pipe_input("k2".into(), "p2".into(), 12 * MIN)?;
    assert!(
        out.is_empty()?,
        "no premature o2+-: p2 at 12 min can still... not match, and the window is open"
    );
    payments.pipe_input("k9".into(), "tick".into(), 12 * MIN + 1)?;
    assert_eq!(
        out.read_values()?,
        vec!["o2+-"],
        "o2 unmatched, final once its window closed"
    );
    payments.pipe_input("k9".into(), "tick".into(), 60 * MIN)?;
    assert!(
        out.is_empty()?,
        "o1 matched, so no o1+- ever; o2 emitted once"
    );
    Ok(())
}

#[test]
fn outer_stream_join_emits_unmatched_records_of_both_sides() -> TestResult {
    let driver = TopologyTestDriver::new(orders_payments("outer")?)?;
    feed(&driver)?;
    let got = sorted(driver.output_topic("matched", Utf8, Utf8).read_values()?);
    // p2 @30 and o2 @1 never met; tick @60 has not expired yet.
    assert_eq!(
        got,
        sorted(vec![
            "o1+p1".into(),
            "o3+p3".into(),
            "o2+-".into(),
            "-+p2".into()
        ])
    );
    Ok(())
}

#[test]
fn records_after_their_join_window_closed_are_late() -> TestResult {
    let driver = TopologyTestDriver::new(orders_payments("inner")?)?;
    let orders = driver.input_topic("orders", Utf8, Utf8);
    let payments = driver.input_topic("payments", Utf8, Utf8);
    orders.pipe_input("k1".into(), "o1".into(), 0)?;
    orders.pipe_input("k9".into(), "tick".into(), 30 * MIN)?;
    // At stream time 30 min, a payment at 5 min is past 5 + 10 + 1 min.
    payments.pipe_input("k1".into(), "p1".into(), 5 * MIN)?;
    assert!(driver.output_topic("matched", Utf8, Utf8).is_empty()?);
    assert_eq!(driver.metrics().late_records, 1);
    Ok(())
}

fn table_join(kind: &str) -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Consumed::with(Utf8, Utf8),
        Materialized::named("users", Utf8, Utf8),
    );
    let tiers = b.table(
        "tiers",
        Consumed::with(Utf8, Utf8),
        Materialized::named("tiers", Utf8, Utf8),
    );
    let show = |u: Option<&String>, t: Option<&String>| {
        format!(
            "{}/{}",
            u.map_or("-", String::as_str),
            t.map_or("-", String::as_str)
        )
    };
    let joined = match kind {
        "inner" => users.join(&tiers, move |u, t| show(Some(u), Some(t)), "users-tiers"),
        "left" => users.left_join(&tiers, move |u, t| show(Some(u), t), "users-tiers"),
        _ => users.outer_join(&tiers, show, "users-tiers"),
    };
    joined.to("user-tiers", Produced::with(Utf8, Utf8));
    Ok(b.build()?)
}

#[test]
fn table_table_joins_update_and_retract_results() -> TestResult {
    // users: u1=Ann; tiers: u1=gold; tiers: u2=silver; users: u1 deleted.
    let expected: [(&str, Vec<Option<&str>>); 3] = [
        ("inner", vec![Some("Ann/gold"), None]),
        ("left", vec![Some("Ann/-"), Some("Ann/gold"), None]),
        (
            "outer",
            vec![
                Some("Ann/-"),
                Some("Ann/gold"),
                Some("-/silver"),
                Some("-/gold"),
            ],
        ),
    ];
    for (kind, want) in expected {
        let driver = TopologyTestDriver::builder(table_join(kind)?)
            .default_partitions(2)
            .build()?;
        let users = driver.input_topic("users", Utf8, Utf8);
        let tiers = driver.input_topic("tiers", Utf8, Utf8);
        users.pipe_input("u1".into(), "Ann".into(), 1)?;
        tiers.pipe_input("u1".into(), "gold".into(), 2)?;
        tiers.pipe_input("u2".into(), "silver".into(), 3)?;
        users.pipe_tombstone("u1".into(), 4)?;
        let got = driver
            .output_topic("user-tiers", Utf8, brook_topology::serdes::Nullable(Utf8))
            .read_values()?;
        let want: Vec<Option<String>> = want.into_iter().map(|v| v.map(str::to_owned)).collect();
        assert_eq!(got, want, "{kind} join");
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Order {
    product: String,
    quantity: u32,
}

fn orders_with_products(left: bool) -> Result<brook_topology::Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let products = b.global_table(
        "products",
        Consumed::with(Utf8, Json::<f64>::new()),
        Materialized::named("product-prices", Utf8, Json::<f64>::new()),
    );
    let orders = b.stream("orders", Consumed::with(Utf8, Json::<Order>::new()));
    let out = if left {
        orders.left_join_global(
            &products,
            |_, o| o.product.clone(),
            |_, o, price| price.map(|p| p * f64::from(o.quantity)),
            "priced-orders",
        )
    } else {
        orders.join_global(
            &products,
            |_, o| o.product.clone(),
            |_, o, p| Some(p * f64::from(o.quantity)),
            "priced-orders",
        )
    };
    out.to(
        "order-totals",
        Produced::with(Utf8, brook_topology::serdes::Nullable(Json::<f64>::new())),
    );
    Ok(b.build()?)
}

#[test]
fn global_tables_join_without_co_partitioning_and_follow_updates() -> TestResult {
    for left in [false, true] {
        // Orders have 4 partitions, products 2: a global table needs no co-partitioning.
        let driver = TopologyTestDriver::builder(orders_with_products(left)?)
            .topic("orders", 4)
            .topic("products", 2)
            .build()?;
        let products = driver.input_topic("products", Utf8, Json::<f64>::new());
        let orders = driver.input_topic("orders", Utf8, Json::<Order>::new());
        products.pipe_input("p1".into(), 2.5, 1)?;
        orders.pipe_input(
            "o1".into(),
            Order {
                product: "p1".into(),
                quantity: 4,
            },
            2,
        )?;
        products.pipe_input("p1".into(), 3.0, 3)?;
        orders.pipe_input(
            "o2".into(),
            Order {
                product: "p1".into(),
                quantity: 1,
            },
            4,
        )?;
        products.pipe_tombstone("p1".into(), 5)?;
        orders.pipe_input(
            "o3".into(),
            Order {
                product: "p1".into(),
                quantity: 1,
            },
            6,
        )?;
        orders.pipe_input(
            "o4".into(),
            Order {
                product: "p9".into(),
                quantity: 1,
            },
            7,
        )?;
        let totals = driver
            .output_topic(
                "order-totals",
                Utf8,
                brook_topology::serdes::Nullable(Json::<f64>::new()),
            )
            .read_key_values()?;
        let mut expected = vec![
            ("o1".to_string(), Some(10.0)),
            ("o2".to_string(), Some(3.0)),
        ];
        if left {
            expected.extend([("o3".to_string(), None), ("o4".to_string(), None)]);
        }
        assert_eq!(totals, expected, "left = {left}");
    }
    Ok(())
}

#[test]
fn global_tables_reload_on_restart_and_dead_letter_bad_records() -> TestResult {
    let driver = TopologyTestDriver::builder(orders_with_products(false)?)
        .application_id("shop")
        .build()?;
    let products = driver.input_topic("products", Utf8, Json::<f64>::new());
    products.pipe_input("p1".into(), 2.0, 1)?;
    products.pipe_raw(Some(b"p2"), Some(b"not a price"), 2)?;
    let letters = driver.cluster().records("shop-dead-letters")?;
    assert_eq!(letters.len(), 1);
    let error =
        brook_runtime::task::dead_letter_error(&letters[0].record.headers).ok_or("no error")?;
    assert!(error.contains("value"), "{error}");
    let driver = driver.restart()?;
    assert_eq!(
        driver.read_store::<String, f64>("product-prices")?["p1"],
        2.0
    );
    driver
        .input_topic("orders", Utf8, Json::<Order>::new())
        .pipe_input(
            "o1".into(),
            Order {
                product: "p1".into(),
                quantity: 3,
            },
            3,
        )?;
    let totals = driver
        .output_topic(
            "order-totals",
            Utf8,
            brook_topology::serdes::Nullable(Json::<f64>::new()),
        )
        .read_values()?;
    assert_eq!(totals, vec![Some(6.0)]);
    Ok(())
}

struct WritesGlobal;

impl brook_topology::processor::Processor<String, String, String, String> for WritesGlobal {
    fn process(
        &mut self,
        ctx: &mut brook_topology::processor::ProcessorContext<'_, String, String>,
        record: brook_topology::Record<String, String>,
    ) -> Result<(), brook_topology::processor::ProcessError> {
        ctx.key_value_store::<String, f64>("product-prices")?
            .put(&record.key, &1.0)
    }
}

#[test]
fn processors_cannot_write_global_stores() -> TestResult {
    let b = StreamsBuilder::new();
    b.global_table(
        "products",
        Consumed::with(Utf8, Json::<f64>::new()),
        Materialized::named("product-prices", Utf8, Json::<f64>::new()),
    );
    b.stream("in", Consumed::with(Utf8, Utf8))
        .process_with_stores(|| WritesGlobal, &["product-prices"])
        .to("out", Produced::with(Utf8, Utf8));
    let topology = b.build()?;
    assert!(
        topology
            .describe()
            .to_string()
            .contains("product-prices (topic: products)")
    );
    let driver = TopologyTestDriver::new(topology)?;
    let error = driver
        .input_topic("in", Utf8, Utf8)
        .pipe_input("k".into(), "v".into(), 1)
        .err()
        .ok_or("expected a read-only error")?;
    assert!(format!("{error:?}").contains("ReadOnlyStore"), "{error:?}");
    Ok(())
}
