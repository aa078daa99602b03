//! The seed's three analytics as driver tests, with hand-computed results,
//! plus window edge cases: lateness, grace, suppression, hopping windows.
//!
//! Event times below are offsets from `BASE`, an hour boundary, so window
//! boundaries fall on whole minutes.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use brook_runtime::driver::TopologyTestDriver;
use brook_topology::serdes::{Json, Nullable, Serde, Utf8};
use brook_topology::window::{TimeWindows, Window, Windowed, WindowedSerde};
use brook_topology::{Consumed, Grouped, Materialized, Produced, StreamsBuilder, Topology};

type TestResult = Result<(), Box<dyn Error>>;

const BASE: i64 = 1_699_999_200_000;
const SECOND: i64 = 1_000;

/// The seed's `UserEvent` (v2: enriched fields optional).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct UserEvent {
    event_id: String,
    user_id: String,
    event_type: String,
    timestamp: i64,
    session_id: String,
    price: Option<f64>,
    category: Option<String>,
    device_type: Option<String>,
}

fn ev(
    n: u32,
    user: &str,
    kind: &str,
    secs: i64,
    price: Option<f64>,
    category: Option<&str>,
    device: Option<&str>,
) -> UserEvent {
    UserEvent {
        event_id: format!("e{n}"),
        user_id: user.into(),
        event_type: kind.into(),
        timestamp: BASE + secs * SECOND,
        session_id: format!("s-{user}"),
        price,
        category: category.map(str::to_owned),
        device_type: device.map(str::to_owned),
    }
}

/// In event-time order, so no record is late in any task.
fn events() -> Vec<UserEvent> {
    vec![
        ev(
            1,
            "u1",
            "PAGE_VIEW",
            5,
            None,
            Some("Electronics"),
            Some("MOBILE"),
        ),
        ev(
            2,
            "u2",
            "PAGE_VIEW",
            20,
            None,
            Some("Fashion"),
            Some("DESKTOP"),
        ),
        ev(
            3,
            "u1",
            "ADD_TO_CART",
            50,
            None,
            Some("Electronics"),
            Some("MOBILE"),
        ),
        ev(
            4,
            "u3",
            "PURCHASE",
            70,
            Some(799.99),
            Some("Electronics"),
            Some("TABLET"),
        ),
        ev(
            5,
            "u2",
            "PURCHASE",
            130,
            Some(49.99),
            Some("Fashion"),
            Some("DESKTOP"),
        ),
        ev(6, "u4", "SEARCH", 200, None, None, Some("MOBILE")),
        ev(
            7,
            "u1",
            "PURCHASE",
            290,
            Some(34.99),
            Some("Electronics"),
            Some("MOBILE"),
        ),
        ev(
            8,
            "u3",
            "PURCHASE",
            310,
            Some(29.99),
            Some("Fashion"),
            Some("TABLET"),
        ),
        ev(9, "u2", "PAGE_VIEW", 330, None, Some("Home"), None),
        // Later purchases that move stream time past every earlier 5-minute
        // window's end plus grace, so suppressed results are final.
        ev(
            10,
            "u5",
            "PURCHASE",
            1200,
            Some(10.0),
            Some("Electronics"),
            None,
        ),
        ev(
            11,
            "u5",
            "PURCHASE",
            1200,
            Some(20.0),
            Some("Fashion"),
            None,
        ),
    ]
}

fn source(b: &StreamsBuilder) -> brook_topology::KStream<String, UserEvent> {
    b.stream(
        "user-events",
        Consumed::with(Utf8, Json::<UserEvent>::new())
            .timestamp_extractor(|_, e: &UserEvent, _| e.timestamp),
    )
}

fn windowed(key: impl Serde<String>) -> WindowedSerde<String> {
    WindowedSerde(Arc::new(key) as Arc<dyn Serde<String>>)
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn window(start_secs: i64, minutes: i64) -> Window {
    Window {
        start: BASE + start_secs * SECOND,
        end: BASE + start_secs * SECOND + minutes * 60 * SECOND,
    }
}

fn run(topology: Topology) -> Result<TopologyTestDriver, Box<dyn Error>> {
    let driver = TopologyTestDriver::builder(topology)
        .application_id("eventmart")
        .default_partitions(3)
        .build()?;
    let input = driver.input_topic("user-events", Utf8, Json::<UserEvent>::new());
    for e in events() {
        input.pipe_input(e.user_id.clone(), e.clone(), e.timestamp)?;
    }
    Ok(driver)
}

#[test]
fn events_per_minute_by_type() -> TestResult {
    let b = StreamsBuilder::new();
    source(&b)
        .group_by(
            |_, e| e.event_type.clone(),
            Grouped::with(Utf8, Json::<UserEvent>::new()),
        )
        .windowed_by(TimeWindows::tumbling(minutes(1), minutes(1))?)
        .count(Materialized::named(
            "events-per-minute",
            Utf8,
            Json::<i64>::new(),
        ))
        .to_stream()
        .to(
            "events-per-minute",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = run(b.build()?)?;
    let latest = driver
        .output_topic(
            "events-per-minute",
            windowed(Utf8),
            Nullable(Json::<i64>::new()),
        )
        .read_latest_by_key()?;
    let expected: BTreeMap<Windowed<String>, Option<i64>> = [
        ("PAGE_VIEW", 0, 2),
        ("ADD_TO_CART", 0, 1),
        ("PURCHASE", 60, 1),
        ("PURCHASE", 120, 1),
        ("SEARCH", 180, 1),
        ("PURCHASE", 240, 1),
        ("PURCHASE", 300, 1),
        ("PAGE_VIEW", 300, 1),
        ("PURCHASE", 1200, 2),
    ]
    .into_iter()
    .map(|(kind, start, count)| {
        (
            Windowed {
                key: kind.to_string(),
                window: window(start, 1),
            },
            Some(count),
        )
    })
    .collect();
    assert_eq!(latest, expected);
    assert_eq!(driver.metrics().late_records, 0);
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Default)]
struct Revenue {
    total: f64,
    count: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct RevenueRow {
    category: String,
    window_start: i64,
    window_end: i64,
    total_revenue: f64,
    purchase_count: u64,
    avg_price: f64,
}

impl RevenueRow {
    fn new(w: &Windowed<String>, r: &Revenue) -> Self {
        RevenueRow {
            category: w.key.clone(),
            window_start: w.window.start,
            window_end: w.window.end,
            total_revenue: r.total,
            purchase_count: r.count,
            avg_price: r.total / r.count as f64,
        }
    }
}

/// Revenue per category: the whole topology, in well under 30 lines of DSL.
fn revenue_per_category() -> Result<Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    source(&b)
        .filter(|_, e| e.event_type == "PURCHASE" && e.price.is_some())
        .group_by(
            |_, e| e.category.clone().unwrap_or_default(),
            Grouped::with(Utf8, Json::new()),
        )
        .windowed_by(TimeWindows::tumbling(minutes(5), minutes(5))?)
        .aggregate(
            Revenue::default,
            |_, e, r| Revenue {
                total: r.total + e.price.unwrap_or(0.0),
                count: r.count + 1,
            },
            Materialized::named("revenue-by-category", Utf8, Json::<Revenue>::new()),
        )
        .suppress_until_window_closes("revenue-by-category-final")
        .to_stream()
        .flat_map(|w: Windowed<String>, r: Option<Revenue>| {
            r.map(|r| (w.key.clone(), RevenueRow::new(&w, &r)))
        })
        .to(
            "revenue-per-category",
            Produced::with(Utf8, Json::<RevenueRow>::new()),
        );
    Ok(b.build()?)
}

#[test]
fn revenue_by_category_emits_one_final_row_per_window() -> TestResult {
    let driver = run(revenue_per_category()?)?;
    let rows = driver
        .output_topic("revenue-per-category", Utf8, Json::<RevenueRow>::new())
        .read_values()?;
    let mut got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.category.as_str(),
                (r.window_start - BASE) / SECOND,
                r.purchase_count,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("Electronics", 0, 2),
            ("Fashion", 0, 1),
            ("Fashion", 300, 1)
        ]
    );
    let electronics = rows
        .iter()
        .find(|r| r.category == "Electronics")
        .ok_or("no Electronics row")?;
    assert!(
        (electronics.total_revenue - 834.98).abs() < 1e-9,
        "{electronics:?}"
    );
    assert!(
        (electronics.avg_price - 417.49).abs() < 1e-9,
        "{electronics:?}"
    );
    assert_eq!(
        electronics.window_end - electronics.window_start,
        5 * 60 * SECOND
    );
    // The open windows of the later purchases are still buffered, not emitted.
    let buffered = driver.read_store::<Windowed<String>, Revenue>("revenue-by-category-final")?;
    let open: Vec<(&str, i64)> = buffered
        .keys()
        .map(|w| (w.key.as_str(), (w.window.start - BASE) / SECOND))
        .collect();
    assert_eq!(open, vec![("Electronics", 1200), ("Fashion", 1200)]);
    Ok(())
}

#[test]
fn device_distribution_per_ten_minutes_skips_events_without_a_device() -> TestResult {
    let b = StreamsBuilder::new();
    source(&b)
        .filter(|_, e| e.device_type.is_some())
        .group_by(
            |_, e| e.device_type.clone().unwrap_or_default(),
            Grouped::with(Utf8, Json::new()),
        )
        .windowed_by(TimeWindows::tumbling(minutes(10), minutes(10))?)
        .count(Materialized::named(
            "device-distribution",
            Utf8,
            Json::<i64>::new(),
        ))
        .to_stream()
        .to(
            "device-distribution",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = run(b.build()?)?;
    let latest = driver
        .output_topic(
            "device-distribution",
            windowed(Utf8),
            Nullable(Json::<i64>::new()),
        )
        .read_latest_by_key()?;
    let first_window: BTreeMap<&str, i64> = latest
        .iter()
        .filter(|(w, _)| w.window == window(0, 10))
        .map(|(w, c)| (w.key.as_str(), c.unwrap_or(0)))
        .collect();
    assert_eq!(
        first_window,
        BTreeMap::from([("DESKTOP", 2), ("MOBILE", 4), ("TABLET", 2)])
    );
    Ok(())
}

fn at(secs: i64) -> i64 {
    BASE + secs * SECOND
}

#[test]
fn late_records_are_dropped_counted_and_routed_and_suppression_emits_once() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::tumbling(minutes(1), Duration::from_secs(10))?)
        .late_records_to("late-clicks", Produced::with(Utf8, Utf8))
        .count(Materialized::named("clicks", Utf8, Json::<i64>::new()))
        .suppress_until_window_closes("clicks-final")
        .to_stream()
        .to(
            "final-clicks",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    let out = driver.output_topic("final-clicks", windowed(Utf8), Nullable(Json::<i64>::new()));

    clicks.pipe_input("k".into(), "a".into(), at(10))?;
    assert!(out.is_empty()?, "nothing before the window closes");
    // Stream time 69.999 s: [0, 60) + 10 s grace is still open.
    clicks.pipe_input("k".into(), "b".into(), at(69) + 999)?;
    assert!(out.is_empty()?);
    clicks.pipe_input("k".into(), "c".into(), at(59))?;
    // Stream time 75 s: [0, 60) closes with a, c; b went to [60, 120).
    clicks.pipe_input("k".into(), "d".into(), at(75))?;
    let closed = out.read_key_values()?;
    assert_eq!(
        closed,
        vec![(
            Windowed {
                key: "k".to_string(),
                window: Window {
                    start: at(0),
                    end: at(60)
                }
            },
            Some(2)
        )]
    );
    // Late: [0, 60) is closed now.
    clicks.pipe_input("k".into(), "late".into(), at(30))?;
    assert_eq!(driver.metrics().late_records, 1);
    let late = driver
        .output_topic("late-clicks", Utf8, Utf8)
        .read_values()?;
    assert_eq!(late, vec!["late"]);
    // Stream time 200 s closes [60, 120): b and d, once.
    clicks.pipe_input("k".into(), "e".into(), at(200))?;
    clicks.pipe_input("k".into(), "f".into(), at(201))?;
    let closed = out.read_key_values()?;
    assert_eq!(
        closed,
        vec![(
            Windowed {
                key: "k".to_string(),
                window: Window {
                    start: at(60),
                    end: at(120)
                }
            },
            Some(2)
        )]
    );
    assert!(out.is_empty()?);
    Ok(())
}

#[test]
fn hopping_windows_count_a_record_in_every_window_it_falls_in() -> TestResult {
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::hopping(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::ZERO,
        )?)
        .count(Materialized::named("hops", Utf8, Json::<i64>::new()))
        .to_stream()
        .to(
            "hops",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    clicks.pipe_input("k".into(), "x".into(), at(7))?;
    clicks.pipe_input("k".into(), "y".into(), at(12))?;
    let latest = driver
        .output_topic("hops", windowed(Utf8), Nullable(Json::<i64>::new()))
        .read_latest_by_key()?;
    let counts: Vec<(i64, Option<i64>)> = latest
        .iter()
        .map(|(w, c)| ((w.window.start - BASE) / SECOND, *c))
        .collect();
    assert_eq!(counts, vec![(0, Some(1)), (5, Some(2)), (10, Some(1))]);
    let store = driver.read_store::<Windowed<String>, i64>("hops")?;
    assert_eq!(store.len(), 3);
    Ok(())
}

fn session_counts(suppress: bool) -> Result<Topology, Box<dyn Error>> {
    use brook_topology::session::SessionWindows;
    let b = StreamsBuilder::new();
    let sessions = b
        .stream("views", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by_session(SessionWindows::with_inactivity_gap(minutes(5), minutes(5)))
        .count(Materialized::named(
            "views-per-session",
            Utf8,
            Json::<i64>::new(),
        ));
    let stream = if suppress {
        sessions
            .suppress_until_window_closes("final-sessions")
            .to_stream()
    } else {
        sessions.to_stream()
    };
    stream.to(
        "sessions",
        Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
    );
    Ok(b.build()?)
}

fn session(start_min: i64, last_min: i64) -> Window {
    Window {
        start: at(start_min * 60),
        end: at(last_min * 60) + 1,
    }
}

#[test]
fn session_windows_merge_when_a_record_bridges_the_gap() -> TestResult {
    let driver = TopologyTestDriver::new(session_counts(false)?)?;
    let views = driver.input_topic("views", Utf8, Utf8);
    for minute in [0, 2, 10, 6] {
        views.pipe_input("u1".into(), format!("v@{minute}"), at(minute * 60))?;
    }
    let updates: Vec<(Window, Option<i64>)> = driver
        .output_topic("sessions", windowed(Utf8), Nullable(Json::<i64>::new()))
        .read_key_values()?
        .into_iter()
        .map(|(w, c)| (w.window, c))
        .collect();
    assert_eq!(
        updates,
        vec![
            (session(0, 0), Some(1)),
            (session(0, 0), None),
            (session(0, 2), Some(2)),
            (session(10, 10), Some(1)),
            // 6 is within 5 minutes of both 2 and 10: one session of 4.
            (session(0, 2), None),
            (session(10, 10), None),
            (session(0, 10), Some(4)),
        ]
    );
    assert_eq!(
        driver
            .read_store::<Windowed<String>, i64>("views-per-session")?
            .len(),
        1
    );
    Ok(())
}

#[test]
fn suppressed_sessions_emit_one_final_count_and_late_records_are_dropped() -> TestResult {
    let driver = TopologyTestDriver::new(session_counts(true)?)?;
    let views = driver.input_topic("views", Utf8, Utf8);
    let out = driver.output_topic("sessions", windowed(Utf8), Nullable(Json::<i64>::new()));
    for minute in [0, 2, 10, 6] {
        views.pipe_input("u1".into(), format!("v@{minute}"), at(minute * 60))?;
    }
    assert!(out.is_empty()?, "the session is still open");
    views.pipe_input("u2".into(), "later".into(), at(30 * 60))?;
    let finals = out.read_key_values()?;
    assert_eq!(
        finals,
        vec![(
            Windowed {
                key: "u1".to_string(),
                window: session(0, 10)
            },
            Some(4)
        )]
    );
    // u3's session at minute 3 would be final at 3 min + 5 min gap + 5 min grace < 30 min.
    views.pipe_input("u3".into(), "late".into(), at(3 * 60))?;
    assert_eq!(driver.metrics().late_records, 1);
    assert!(out.is_empty()?);
    Ok(())
}

#[test]
fn a_record_that_would_reopen_a_final_session_is_late() -> TestResult {
    use brook_topology::session::SessionWindows;
    let b = StreamsBuilder::new();
    b.stream("views", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by_session(SessionWindows::with_inactivity_gap(minutes(5), minutes(1)))
        .late_records_to("late-views", Produced::with(Utf8, Utf8))
        .count(Materialized::named("s", Utf8, Json::<i64>::new()))
        .suppress_until_window_closes("s-final")
        .to_stream()
        .to(
            "finals",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let views = driver.input_topic("views", Utf8, Utf8);
    for minute in [0, 2, 10] {
        views.pipe_input("u1".into(), "v".into(), at(minute * 60))?;
    }
    // [0, 2] is final at 2 min + 5 min gap + 1 min grace = 8 min < 10 min.
    let finals = driver.output_topic("finals", windowed(Utf8), Nullable(Json::<i64>::new()));
    assert_eq!(finals.read_values()?, vec![Some(2)]);
    // Minute 6 would merge that final session with [10, 10]: 4 minutes out
    // of order with 1 minute of grace, so it is late.
    views.pipe_input("u1".into(), "bridge".into(), at(6 * 60))?;
    assert_eq!(driver.metrics().late_records, 1);
    let late = driver
        .output_topic("late-views", Utf8, Utf8)
        .read_values()?;
    assert_eq!(late, vec!["bridge"]);
    assert_eq!(driver.read_store::<Windowed<String>, i64>("s")?.len(), 2);
    Ok(())
}

#[test]
fn sliding_windows_cover_each_distinct_set_of_records_within_the_difference() -> TestResult {
    use brook_topology::sliding::SlidingWindows;
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by_sliding(SlidingWindows::with_time_difference(
            Duration::from_secs(10),
            Duration::ZERO,
        ))
        .late_records_to("late-clicks", Produced::with(Utf8, Utf8))
        .count(Materialized::named("sliding", Utf8, Json::<i64>::new()))
        .to_stream()
        .to(
            "sliding",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    let out = driver.output_topic("sliding", windowed(Utf8), Nullable(Json::<i64>::new()));
    // Window [s, e] (inclusive, seconds) is reported as [s, e + 1 ms).
    let w = |s: i64, e: i64| Window {
        start: at(s),
        end: at(e) + 1,
    };
    // The window just after a record at r s: [r s + 1 ms, r s + 1 ms + 10 s].
    let after = |r: i64| Window {
        start: at(r) + 1,
        end: at(r + 10) + 2,
    };
    let read = |out: &brook_runtime::driver::TestOutputTopic<'_, Windowed<String>, Option<i64>>| {
        out.read_key_values().map(|kv| {
            kv.into_iter()
                .map(|(k, c)| (k.window, c))
                .collect::<Vec<_>>()
        })
    };

    clicks.pipe_input("k".into(), "a".into(), at(10))?;
    assert_eq!(read(&out)?, vec![(w(0, 10), Some(1))]);
    // 15 s: its own window [5, 15] holds 10 and 15; the window just after
    // 10 s now exists, holding 15.
    clicks.pipe_input("k".into(), "b".into(), at(15))?;
    assert_eq!(read(&out)?, vec![(w(5, 15), Some(2)), (after(10), Some(1))]);
    // 30 s is more than 10 s from 15: a window of its own only.
    clicks.pipe_input("k".into(), "c".into(), at(30))?;
    assert_eq!(read(&out)?, vec![(w(20, 30), Some(1))]);
    // 12 s at stream time 30 s: every window containing it has closed.
    clicks.pipe_input("k".into(), "late".into(), at(12))?;
    assert!(read(&out)?.is_empty());
    assert_eq!(driver.metrics().late_records, 1);
    let late = driver
        .output_topic("late-clicks", Utf8, Utf8)
        .read_values()?;
    assert_eq!(late, vec!["late"]);
    let store = driver.read_store::<Windowed<String>, i64>("sliding")?;
    let windows: Vec<(Window, i64)> = store.into_iter().map(|(k, c)| (k.window, c)).collect();
    assert_eq!(
        windows,
        vec![(w(0, 10), 1), (w(5, 15), 2), (after(10), 1), (w(20, 30), 1)]
    );
    Ok(())
}

#[test]
fn session_reduce_and_aggregate_merge_the_sessions_a_record_bridges() -> TestResult {
    use brook_topology::session::SessionWindows;
    let b = StreamsBuilder::new();
    let grouped = b
        .stream("amounts", Consumed::with(Utf8, Json::<i64>::new()))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()));
    let sessions = SessionWindows::with_inactivity_gap(minutes(5), minutes(5));
    grouped
        .windowed_by_session(sessions)
        .reduce(
            i64::max,
            Materialized::named("max-per-session", Utf8, Json::<i64>::new()),
        )
        .to_stream()
        .to(
            "max",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    grouped
        .windowed_by_session(sessions)
        .aggregate(
            || 0,
            |_, v, sum| sum + v,
            |_, a, b| a + b,
            Materialized::named("sum-per-session", Utf8, Json::<i64>::new()),
        )
        .to_stream()
        .to(
            "sum",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let amounts = driver.input_topic("amounts", Utf8, Json::<i64>::new());
    for (minute, amount) in [(0, 3), (2, 7), (10, 1), (6, 2)] {
        amounts.pipe_input("u1".into(), amount, at(minute * 60))?;
    }
    let last =
        |topic: &str| -> Result<Vec<(Window, Option<i64>)>, brook_runtime::driver::DriverError> {
            let latest = driver
                .output_topic(topic, windowed(Utf8), Nullable(Json::<i64>::new()))
                .read_latest_by_key()?;
            Ok(latest
                .into_iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, v)| (k.window, v))
                .collect())
        };
    let whole = session(0, 10);
    assert_eq!(last("max")?, vec![(whole, Some(7))]);
    assert_eq!(last("sum")?, vec![(whole, Some(13))]);
    Ok(())
}

// Caching (`Materialized::with_caching`) for windowed aggregations: one
// downstream update per key and window between commits. `pipe_batch`
// writes several records that are processed before one commit.

type WindowedOut<'d> = brook_runtime::driver::TestOutputTopic<'d, Windowed<String>, Option<i64>>;

/// (key, window start in seconds from `BASE`, value).
type Written = Vec<(String, i64, Option<i64>)>;

/// What one commit wrote.
fn written(out: &WindowedOut<'_>) -> Result<Written, Box<dyn Error>> {
    Ok(out
        .read_key_values()?
        .into_iter()
        .map(|(k, v)| (k.key, (k.window.start - BASE) / SECOND, v))
        .collect())
}

/// Counts per key in 1 min windows (10 s grace) to `counts`: cached or
/// not, suppressed or not.
fn minute_counts(caching: bool, suppress: bool) -> Result<Topology, Box<dyn Error>> {
    let b = StreamsBuilder::new();
    let store = Materialized::named("cached-minutes", Utf8, Json::<i64>::new());
    let counts = b
        .stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::tumbling(minutes(1), Duration::from_secs(10))?)
        .count(if caching { store.with_caching() } else { store });
    let stream = if suppress {
        counts
            .suppress_until_window_closes("cached-minutes-final")
            .to_stream()
    } else {
        counts.to_stream()
    };
    stream.to(
        "counts",
        Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
    );
    Ok(b.build()?)
}

#[test]
fn a_cached_windowed_count_writes_one_record_per_key_and_window_per_commit() -> TestResult {
    let driver = TopologyTestDriver::new(minute_counts(true, false)?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    let out = driver.output_topic("counts", windowed(Utf8), Nullable(Json::<i64>::new()));
    // Commit 1: 40 records, 3 keys-and-windows.
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(("a".to_string(), format!("a{i}"), at(i)));
        if i % 2 == 0 {
            batch.push(("b".to_string(), format!("b{i}"), at(i)));
        }
    }
    for i in 0..10 {
        batch.push(("a".to_string(), format!("late-minute-{i}"), at(60 + i)));
    }
    assert_eq!(batch.len(), 40);
    clicks.pipe_batch(batch)?;
    let mut commit = written(&out)?;
    commit.sort();
    assert_eq!(
        commit,
        vec![
            ("a".to_string(), 0, Some(20)),
            ("a".to_string(), 60, Some(10)),
            ("b".to_string(), 0, Some(10)),
        ]
    );
    // The changelog is coalesced per commit too.
    let changelog = driver
        .cluster()
        .records("test-app-cached-minutes-changelog")?;
    assert_eq!(changelog.len(), 3);
    // Commit 2: 5 more in a's second minute (within its grace).
    clicks.pipe_batch((0..5).map(|i| ("a".to_string(), format!("more{i}"), at(70 + i))))?;
    assert_eq!(written(&out)?, vec![("a".to_string(), 60, Some(15))]);
    // Without caching, the same 40 records are 40 updates.
    let uncached = TopologyTestDriver::new(minute_counts(false, false)?)?;
    uncached
        .input_topic("clicks", Utf8, Utf8)
        .pipe_batch((0..40).map(|i| ("a".to_string(), format!("{i}"), at(i))))?;
    let out = uncached.output_topic("counts", windowed(Utf8), Nullable(Json::<i64>::new()));
    assert_eq!(written(&out)?.len(), 40);
    Ok(())
}

#[test]
fn a_suppressed_cached_window_emits_its_final_count_once_with_every_update() -> TestResult {
    let driver = TopologyTestDriver::new(minute_counts(true, true)?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    let out = driver.output_topic("counts", windowed(Utf8), Nullable(Json::<i64>::new()));
    // Commit 1: 3 records in minute 0, in the suppression's buffer after it.
    clicks.pipe_batch((0..3).map(|i| ("a".to_string(), format!("{i}"), at(i * 5))))?;
    assert!(written(&out)?.is_empty());
    // Commit 2: 4 more in minute 0, then one at 75 s that closes it (end
    // 60 s + grace 10 s) while those 4 are still in the cache: the final
    // count is 7, emitted once (not 3 at the close and 7 at the commit).
    let mut batch: Vec<_> = (3..7)
        .map(|i| ("a".to_string(), format!("{i}"), at(i * 5)))
        .collect();
    batch.push(("b".to_string(), "closer".to_string(), at(75)));
    batch.push(("a".to_string(), "next minute".to_string(), at(76)));
    clicks.pipe_batch(batch)?;
    assert_eq!(written(&out)?, vec![("a".to_string(), 0, Some(7))]);
    // Later commits never emit minute 0 again; minute 1 closes at 130 s.
    clicks.pipe_batch([("a".to_string(), "x".to_string(), at(100))])?;
    assert!(written(&out)?.is_empty());
    clicks.pipe_batch([("c".to_string(), "closer".to_string(), at(130))])?;
    let mut finals = written(&out)?;
    finals.sort();
    assert_eq!(
        finals,
        vec![
            ("a".to_string(), 60, Some(2)),
            ("b".to_string(), 60, Some(1))
        ]
    );
    Ok(())
}

#[test]
fn cached_sessions_forward_only_the_merged_session_of_a_commit() -> TestResult {
    use brook_topology::session::SessionWindows;
    let b = StreamsBuilder::new();
    b.stream("views", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by_session(SessionWindows::with_inactivity_gap(minutes(5), minutes(5)))
        .count(Materialized::named("cached-sessions", Utf8, Json::<i64>::new()).with_caching())
        .to_stream()
        .to(
            "sessions",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let views = driver.input_topic("views", Utf8, Utf8);
    let out = driver.output_topic("sessions", windowed(Utf8), Nullable(Json::<i64>::new()));
    let read = || {
        out.read_key_values().map(|kv| {
            kv.into_iter()
                .map(|(k, v)| (k.window, v))
                .collect::<Vec<_>>()
        })
    };
    // Uncached, these four are seven updates (see
    // session_windows_merge_when_a_record_bridges_the_gap); the sessions
    // created and merged away within the commit forward nothing.
    views.pipe_batch(
        [0, 2, 10, 6].map(|minute| ("u1".to_string(), format!("v@{minute}"), at(minute * 60))),
    )?;
    assert_eq!(read()?, vec![(session(0, 10), Some(4))]);
    // A session forwarded in an earlier commit and merged in this one is
    // removed downstream (its tombstone) before the merged one is written.
    views
        .pipe_batch([12, 14].map(|minute| ("u1".to_string(), "v".to_string(), at(minute * 60))))?;
    assert_eq!(
        read()?,
        vec![(session(0, 10), None), (session(0, 14), Some(6))]
    );
    Ok(())
}

#[test]
fn cached_sliding_windows_forward_each_window_once_per_commit() -> TestResult {
    use brook_topology::sliding::SlidingWindows;
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by_sliding(SlidingWindows::with_time_difference(
            Duration::from_secs(10),
            Duration::from_secs(30),
        ))
        .count(Materialized::named("cached-sliding", Utf8, Json::<i64>::new()).with_caching())
        .to_stream()
        .to(
            "sliding",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let clicks = driver.input_topic("clicks", Utf8, Utf8);
    let out = driver.output_topic("sliding", windowed(Utf8), Nullable(Json::<i64>::new()));
    // 10 s, 15 s, 12 s: uncached, each record updates its own window and
    // the neighbours' (six updates, [5, 15] twice); cached, each window once.
    clicks.pipe_batch([10, 15, 12].map(|s| ("k".to_string(), format!("{s}"), at(s))))?;
    let w = |s: i64, e: i64| Window {
        start: at(s),
        end: at(e) + 1,
    };
    let mut windows: Vec<(Window, Option<i64>)> = out
        .read_key_values()?
        .into_iter()
        .map(|(k, v)| (k.window, v))
        .collect();
    windows.sort_by_key(|(w, _)| (w.start, w.end));
    let store = driver.read_store::<Windowed<String>, i64>("cached-sliding")?;
    let mut stored: Vec<(Window, Option<i64>)> = store
        .into_iter()
        .map(|(k, c)| (k.window, Some(c)))
        .collect();
    stored.sort_by_key(|(w, _)| (w.start, w.end));
    assert_eq!(windows, stored, "one record per window, its final value");
    assert!(windows.contains(&(w(5, 15), Some(3))), "{windows:?}");
    Ok(())
}

#[test]
fn a_full_cache_forwards_what_it_holds_early_and_loses_no_update() -> TestResult {
    // Hopping windows of 6 ms every 1 ms: a record is in 6 windows.
    let (per_record, cache) = (6, 10);
    let b = StreamsBuilder::new();
    b.stream("clicks", Consumed::with(Utf8, Utf8))
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::hopping(
            Duration::from_millis(per_record),
            Duration::from_millis(1),
            minutes(1),
        )?)
        .count(Materialized::named("hops", Utf8, Json::<i64>::new()).with_cache_max_entries(10))
        .to_stream()
        .to(
            "counts",
            Produced::with(windowed(Utf8), Nullable(Json::<i64>::new())),
        );
    let driver = TopologyTestDriver::new(b.build()?)?;
    let t = at(0);
    let far = t + per_record as i64;
    // One commit: two records in 6 windows, two in 6 others. The third
    // record fills the cache (6 + 4 keys), which goes downstream then; the
    // other 6 keys at the commit. Unbounded it would be 12 records, uncached 24.
    driver
        .input_topic("clicks", Utf8, Utf8)
        .pipe_batch([t, t, far, far].map(|at| ("k".to_string(), "v".to_string(), at)))?;
    let counts = driver
        .output_topic("counts", windowed(Utf8), Nullable(Json::<i64>::new()))
        .read_key_values()?;
    assert_eq!(counts.len(), cache + per_record as usize, "{counts:?}");
    let latest: BTreeMap<Window, Option<i64>> =
        counts.into_iter().map(|(k, v)| (k.window, v)).collect();
    assert_eq!(latest.len(), 2 * per_record as usize);
    assert!(latest.values().all(|c| *c == Some(2)), "{latest:?}");
    Ok(())
}
