//! EventMart end to end on the test driver: the generator's events (Avro,
//! through brook's registry) go through every app, and each app's output
//! is checked against expectations computed here, independently, from the
//! same generated events with plain loops.

use std::collections::{BTreeMap, BTreeSet};

use brook_apps::eventmart::apps::{
    self, EventMartConfig, OrderState, RevenueEvent, WindowedMetric, stores,
};
use brook_apps::eventmart::generator::{
    Click, Encoder, Generated, Generator, GeneratorConfig, SchemaMode,
};
use brook_connectors::avro::{AvroSerde, RegistryClientConfig, SchemaRegistryClient};
use brook_runtime::driver::TopologyTestDriver;
use brook_schemas::events::ecommerce::EventType;
use brook_schemas::events::eventmart::{AuditEvent, NotificationEvent};
use brook_schemas::server::RegistryServer;
use brook_topology::serdes::{Json, RawBytes, Utf8};
use brook_topology::{Topology, Windowed};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct World {
    _server: RegistryServer,
    cfg: EventMartConfig,
    events: Vec<Generated>,
    encoded: Vec<Vec<u8>>,
}

// 200 s before the top of an hour.
const START: i64 = 1_790_002_600_000;

fn world(
    schema: SchemaMode,
    clicks: usize,
    drain: bool,
) -> Result<World, Box<dyn std::error::Error>> {
    let server = RegistryServer::start_in_memory()?;
    let client = SchemaRegistryClient::new(RegistryClientConfig::new(server.url()))?;
    let mut generator = Generator::new(GeneratorConfig {
        seed: 2026,
        users: 40,
        schema,
        user_update_rate: 0.0,
        ..GeneratorConfig::default()
    });
    // 20 events a second of event time.
    let mut events: Vec<Generated> = (0..clicks)
        .map(|i| generator.next(START + i as i64 * 50))
        .collect();
    if drain {
        events.extend(generator.drain());
    }
    let encoder = Encoder::new(client.clone());
    let encoded = events
        .iter()
        .map(|e| encoder.encode(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = EventMartConfig::new("", client);
    cfg.grace = std::time::Duration::from_secs(3600);
    Ok(World {
        _server: server,
        cfg,
        events,
        encoded,
    })
}

impl World {
    fn driver(
        &self,
        topology: Topology,
        app: &str,
    ) -> Result<TopologyTestDriver, Box<dyn std::error::Error>> {
        let mut builder = TopologyTestDriver::builder(topology).application_id(app);
        for t in &self.cfg.topics.topics {
            builder = builder.topic(t.name.clone(), t.partitions);
        }
        Ok(builder.build()?)
    }

    /// Pipes the generated events of `topics` in generation order.
    fn pipe(&self, driver: &TopologyTestDriver, topics: &[&str]) -> TestResult {
        for (event, bytes) in self.events.iter().zip(&self.encoded) {
            if topics.contains(&event.topic()) {
                driver.input_topic(event.topic(), Utf8, Utf8).pipe_raw(
                    Some(event.key().as_bytes()),
                    Some(bytes),
                    event.timestamp(),
                )?;
            }
        }
        Ok(())
    }

    fn clicks(
        &self,
    ) -> impl Iterator<Item = (bool, brook_schemas::events::ecommerce::UserEventV2)> + '_ {
        self.events.iter().filter_map(|e| match e {
            Generated::Click(c) => Some((matches!(c, Click::V2(_)), c.as_v2())),
            _ => None,
        })
    }
}

fn metrics(
    driver: &TopologyTestDriver,
    metric: &str,
) -> Result<BTreeMap<(String, i64), WindowedMetric>, Box<dyn std::error::Error>> {
    Ok(driver
        .output_topic("eventmart-analytics", Utf8, Json::<WindowedMetric>::new())
        .read_latest_by_key()?
        .into_values()
        .filter(|m| m.metric == metric)
        .map(|m| ((m.key.clone(), m.window_start), m))
        .collect())
}

fn window(ts: i64, size_ms: i64) -> i64 {
    ts - ts.rem_euclid(size_ms)
}

#[test]
fn windowed_analytics_match_counts_computed_from_the_generated_events() -> TestResult {
    let w = world(SchemaMode::Dual, 24_000, false)?;
    let clicks = ["ecommerce-events"];

    // Events per minute: every click, v1 or v2, by type.
    let d = w.driver(apps::events_per_minute(&w.cfg)?, "epm")?;
    w.pipe(&d, &clicks)?;
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (_, c) in w.clicks() {
        *expected
            .entry((
                c.event_type.as_str().to_owned(),
                window(c.timestamp, 60_000),
            ))
            .or_default() += 1;
    }
    let got = metrics(&d, "events_per_minute")?;
    assert_eq!(
        got.iter()
            .map(|(k, m)| (k.clone(), m.count))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    assert!(expected.len() > 5 * 20, "20 minutes of 5 event types");
    assert!(
        got.values()
            .all(|m| m.window_end - m.window_start == 60_000)
    );
    // The store answers the same (interactive queries read it).
    let store = d.read_store::<Windowed<String>, i64>(stores::EVENTS_PER_MINUTE)?;
    let from_store: BTreeMap<(String, i64), i64> = store
        .into_iter()
        .map(|(k, v)| ((k.key, k.window.start), v))
        .collect();
    assert_eq!(from_store, expected);

    // Revenue per category: v2 purchases, 5 minute windows.
    let d = w.driver(apps::revenue_per_category(&w.cfg)?, "rpc")?;
    w.pipe(&d, &clicks)?;
    let mut expected: BTreeMap<(String, i64), (f64, i64)> = BTreeMap::new();
    let mut v1_purchases = 0;
    for (v2, c) in w.clicks() {
        if c.event_type != EventType::Purchase {
            continue;
        }
        if !v2 {
            v1_purchases += 1;
            continue;
        }
        let e = expected
            .entry((c.category.clone().unwrap(), window(c.timestamp, 300_000)))
            .or_default();
        e.0 += c.price.unwrap();
        e.1 += 1;
    }
    assert!(
        v1_purchases > 0,
        "dual write has v1 purchases, without prices"
    );
    let got = metrics(&d, "revenue_per_category")?;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (k, (total, count)) in &expected {
        let m = &got[k];
        assert_eq!(m.count, *count, "{k:?}");
        let (t, a) = (m.total.unwrap(), m.average.unwrap());
        assert!(
            (t - total).abs() < 1e-6 * total.abs().max(1.0),
            "{k:?}: {t} vs {total}"
        );
        assert!(
            (a - total / *count as f64).abs() < 1e-6 * a.abs().max(1.0),
            "{k:?}"
        );
    }

    // Device distribution: v2 events, 10 minute windows.
    let d = w.driver(apps::device_distribution(&w.cfg)?, "dd")?;
    w.pipe(&d, &clicks)?;
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (v2, c) in w.clicks() {
        if v2 {
            *expected
                .entry((
                    c.device_type.unwrap().as_str().to_owned(),
                    window(c.timestamp, 600_000),
                ))
                .or_default() += 1;
        }
    }
    let got = metrics(&d, "device_distribution")?;
    assert_eq!(
        got.iter()
            .map(|(k, m)| (k.clone(), m.count))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    assert_eq!(
        expected
            .keys()
            .map(|(d, _)| d.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["DESKTOP", "MOBILE", "TABLET"])
    );
    Ok(())
}

/// The (key, window start) a click counts in for `metric`, if any.
fn analytics_window(
    metric: &str,
    v2: bool,
    c: &brook_schemas::events::ecommerce::UserEventV2,
) -> Option<(String, i64)> {
    match metric {
        "events_per_minute" => Some((
            c.event_type.as_str().to_owned(),
            window(c.timestamp, 60_000),
        )),
        "revenue_per_category"
            if v2 && c.event_type == EventType::Purchase && c.price.is_some() =>
        {
            c.category
                .clone()
                .map(|category| (category, window(c.timestamp, 300_000)))
        }
        "revenue_per_category" => None,
        _ => c
            .device_type
            .filter(|_| v2)
            .map(|d| (d.as_str().to_owned(), window(c.timestamp, 600_000))),
    }
}

#[test]
fn cached_analytics_write_one_result_per_window_and_commit() -> TestResult {
    // with_caching() on the three windowed analytics: clicks piped 250 at a
    // time (each batch one commit) make one result per key and window the
    // batch touched, not one per click.
    let w = world(SchemaMode::Dual, 6_000, false)?;
    let clicks: Vec<(bool, brook_schemas::events::ecommerce::UserEventV2)> = w.clicks().collect();
    let encoded: Vec<(String, Vec<u8>, i64)> = w
        .events
        .iter()
        .zip(&w.encoded)
        .filter(|(e, _)| e.topic() == "ecommerce-events")
        .map(|(e, bytes)| (e.key().to_owned(), bytes.clone(), e.timestamp()))
        .collect();
    assert_eq!(clicks.len(), encoded.len());
    for (metric, topology) in [
        ("events_per_minute", apps::events_per_minute(&w.cfg)?),
        ("revenue_per_category", apps::revenue_per_category(&w.cfg)?),
        ("device_distribution", apps::device_distribution(&w.cfg)?),
    ] {
        let d = w.driver(topology, metric)?;
        let input = d.input_topic("ecommerce-events", Utf8, RawBytes);
        let output = d.output_topic("eventmart-analytics", Utf8, Json::<WindowedMetric>::new());
        let (mut written, mut counted) = (0, 0);
        for (batch, events) in clicks.chunks(250).zip(encoded.chunks(250)) {
            input.pipe_batch(events.iter().cloned())?;
            let touched: BTreeSet<(String, i64)> = batch
                .iter()
                .filter_map(|(v2, c)| analytics_window(metric, *v2, c))
                .collect();
            let results = output.read_values()?;
            let windows: BTreeSet<(String, i64)> = results
                .iter()
                .map(|m| (m.key.clone(), m.window_start))
                .collect();
            assert_eq!(
                results.len(),
                windows.len(),
                "{metric}: one result per window"
            );
            assert_eq!(
                windows, touched,
                "{metric}: the windows this commit changed"
            );
            written += results.len();
            counted += batch
                .iter()
                .filter(|(v2, c)| analytics_window(metric, *v2, c).is_some())
                .count();
        }
        let commits = clicks.len().div_ceil(250);
        eprintln!("{metric}: {written} results for {counted} clicks counted, in {commits} commits");
        // Uncached, each counted click would be a result.
        assert!(
            written < counted,
            "{metric}: {written} results for {counted} clicks"
        );
    }
    Ok(())
}

#[test]
fn order_analytics_notifications_and_audit_match_the_lifecycles() -> TestResult {
    // Not drained: orders end at every stage.
    let w = world(SchemaMode::V2, 12_000, false)?;
    let inputs = ["eventmart-users", "eventmart-orders", "eventmart-payments"];
    let d = w.driver(apps::order_analytics(&w.cfg)?, "orders")?;
    w.pipe(&d, &inputs)?;

    // Expected, from the generated lifecycle events in order.
    let mut state: BTreeMap<String, OrderState> = BTreeMap::new();
    let mut funnel: BTreeMap<&str, i64> = BTreeMap::new();
    let mut placed: BTreeMap<String, (i64, f64, String, String)> = BTreeMap::new();
    let mut users: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut revenue: BTreeMap<String, RevenueEvent> = BTreeMap::new();
    for e in &w.events {
        let (order, user, step, ts) = match e {
            Generated::User(u) => {
                users.insert(
                    u.user_id.clone(),
                    (u.country.clone(), u.tier.map(|t| t.as_str().to_owned())),
                );
                continue;
            }
            Generated::Order(o) => (&o.order_id, &o.user_id, o.event_type.as_str(), o.timestamp),
            Generated::Payment(p) => (&p.order_id, &p.user_id, p.event_type.as_str(), p.timestamp),
            _ => continue,
        };
        let s = state.entry(order.clone()).or_default();
        s.order_id.clone_from(order);
        s.user_id.clone_from(user);
        s.status = step.to_owned();
        s.steps += 1;
        let stage = match step {
            "ORDER_PLACED" => Some("1-placed"),
            "PAYMENT_COMPLETED" => Some("2-paid"),
            "ORDER_SHIPPED" => Some("3-shipped"),
            "ORDER_DELIVERED" => Some("4-delivered"),
            "PAYMENT_FAILED" => Some("x-payment-failed"),
            _ => None,
        };
        if let Some(stage) = stage {
            *funnel.entry(stage).or_default() += 1;
        }
        match e {
            Generated::Order(o) if step == "ORDER_PLACED" => {
                s.placed_at = Some(ts);
                s.total = o.total;
                placed.insert(
                    order.clone(),
                    (ts, o.total, o.items[0].category.clone(), user.clone()),
                );
            }
            Generated::Order(_) if step == "ORDER_SHIPPED" => s.shipped_at = Some(ts),
            Generated::Order(_) if step == "ORDER_DELIVERED" => s.delivered_at = Some(ts),
            Generated::Payment(p) if step == "PAYMENT_FAILED" => {
                s.failure_reason.clone_from(&p.failure_reason)
            }
            Generated::Payment(p) if step == "PAYMENT_COMPLETED" => {
                s.paid_at = Some(ts);
                let (placed_at, total, category, user) = placed[order].clone();
                let (country, tier) = users[&user].clone();
                revenue.insert(
                    order.clone(),
                    RevenueEvent {
                        order_id: order.clone(),
                        user_id: user,
                        country,
                        tier,
                        category,
                        amount: total,
                        method: p.method.as_str().into(),
                        seconds_to_pay: (ts - placed_at) as f64 / 1000.0,
                        paid_at: ts,
                    },
                );
            }
            _ => {}
        }
    }
    let statuses: BTreeSet<&str> = state.values().map(|s| s.status.as_str()).collect();
    assert!(statuses.len() >= 5, "orders at many stages: {statuses:?}");

    let got = d
        .output_topic("eventmart-order-state", Utf8, Json::<OrderState>::new())
        .read_latest_by_key()?;
    assert_eq!(got, state);
    assert_eq!(
        d.read_store::<String, OrderState>(stores::ORDER_STATE)?,
        state
    );
    let got_funnel = d.read_store::<String, i64>(stores::ORDER_FUNNEL)?;
    assert_eq!(
        got_funnel,
        funnel.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    );
    let got_revenue: BTreeMap<String, RevenueEvent> = d
        .output_topic("eventmart-revenue", Utf8, Json::<RevenueEvent>::new())
        .read_values()?
        .into_iter()
        .map(|r| (r.order_id.clone(), r))
        .collect();
    assert_eq!(
        got_revenue.len(),
        revenue.len(),
        "one revenue event per paid order"
    );
    assert_eq!(got_revenue, revenue);

    // Notifications: one per customer-facing step.
    let n = w.driver(apps::notifications(&w.cfg)?, "notify")?;
    w.pipe(&n, &["eventmart-orders", "eventmart-payments"])?;
    let notifications = n.cluster().records("eventmart-notifications")?;
    let serde = AvroSerde::<NotificationEvent>::for_event(w.cfg.registry.clone());
    let mut got: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for r in &notifications {
        let v: NotificationEvent =
            brook_topology::serdes::Serde::deserialize(&serde, r.record.value.as_deref())?;
        assert_eq!(
            r.record.key.as_deref(),
            Some(v.user_id.as_bytes()),
            "keyed by user"
        );
        got.insert(
            v.notification_id.clone(),
            (v.user_id, v.template, v.order_id.unwrap()),
        );
    }
    let mut expected = BTreeMap::new();
    for e in &w.events {
        let (id, user, order, step) = match e {
            Generated::Order(o) => (&o.event_id, &o.user_id, &o.order_id, o.event_type.as_str()),
            Generated::Payment(p) => (&p.event_id, &p.user_id, &p.order_id, p.event_type.as_str()),
            _ => continue,
        };
        let template = match step {
            "ORDER_PLACED" => "order-confirmation",
            "PAYMENT_COMPLETED" => "payment-receipt",
            "PAYMENT_FAILED" => "payment-failed",
            "ORDER_SHIPPED" => "order-shipped",
            "ORDER_DELIVERED" => "order-delivered",
            _ => continue,
        };
        expected.insert(
            format!("ntf-{id}"),
            (user.clone(), template.to_owned(), order.clone()),
        );
    }
    assert_eq!(notifications.len(), expected.len());
    assert_eq!(got, expected);

    // Audit: every record of every topic, the notifications included, and
    // a corrupt one, each exactly once with its origin.
    let a = w.driver(apps::audit(&w.cfg)?, "audit")?;
    w.pipe(
        &a,
        &[
            "ecommerce-events",
            "eventmart-users",
            "eventmart-products",
            "eventmart-orders",
            "eventmart-payments",
        ],
    )?;
    for r in &notifications {
        a.input_topic("eventmart-notifications", RawBytes, RawBytes)
            .pipe_raw(
                r.record.key.as_deref(),
                r.record.value.as_deref(),
                r.record.timestamp,
            )?;
    }
    a.input_topic("eventmart-orders", RawBytes, RawBytes)
        .pipe_raw(Some(b"ord_x"), Some(b"\x00\x00\x00\x00\x07garbage"), START)?;
    let audit_serde = AvroSerde::<AuditEvent>::for_event(w.cfg.registry.clone());
    let audited: Vec<AuditEvent> = a
        .cluster()
        .records("eventmart-audit")?
        .iter()
        .map(|r| {
            brook_topology::serdes::Serde::deserialize(&audit_serde, r.record.value.as_deref())
        })
        .collect::<Result<_, _>>()?;
    let total_inputs = w.events.len() + notifications.len() + 1;
    assert_eq!(audited.len(), total_inputs);
    let ids: BTreeSet<&str> = audited.iter().map(|a| a.audit_id.as_str()).collect();
    assert_eq!(ids.len(), total_inputs, "audit ids are unique");
    for topic in [
        "ecommerce-events",
        "eventmart-users",
        "eventmart-products",
        "eventmart-orders",
        "eventmart-payments",
        "eventmart-notifications",
    ] {
        let records = a.cluster().records(topic)?;
        let by_origin: BTreeSet<(i32, i64)> = audited
            .iter()
            .filter(|x| x.source_topic == topic)
            .map(|x| (x.source_partition, x.source_offset))
            .collect();
        let origins: BTreeSet<(i32, i64)> = records
            .iter()
            .map(|r| (r.record.tp.partition, r.record.offset))
            .collect();
        assert_eq!(by_origin, origins, "{topic}: every record audited once");
    }
    let bad: Vec<&AuditEvent> = audited
        .iter()
        .filter(|x| x.event_type == "UNDECODABLE")
        .collect();
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].summary.contains("could not decode"),
        "{}",
        bad[0].summary
    );
    assert_eq!(bad[0].entity_id, "ord_x");
    let placed_audits = audited
        .iter()
        .filter(|x| x.event_type == "ORDER_PLACED")
        .count();
    assert_eq!(placed_audits, placed.len());
    assert!(
        audited
            .iter()
            .all(|x| x.event_type == "UNDECODABLE" || x.schema_id.is_some())
    );
    Ok(())
}

#[test]
fn the_lake_holds_every_click_once_by_date_and_hour() -> TestResult {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut w = world(SchemaMode::Dual, 6_000, false)?;
    let dir = tempfile::tempdir()?;
    w.cfg.lake_url = dir.path().to_str().ok_or("path")?.to_owned();
    let mut builder = TopologyTestDriver::builder(apps::lake(&w.cfg)?)
        .application_id("lake")
        .exactly_once();
    for t in &w.cfg.topics.topics {
        builder = builder.topic(t.name.clone(), t.partitions);
    }
    let d = builder.build()?;
    w.pipe(&d, &["ecommerce-events"])?;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, c) in w.clicks() {
        let hour = c.timestamp.rem_euclid(86_400_000) / 3_600_000;
        *expected.entry(format!("event_hour={hour:02}")).or_default() += 1;
    }
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let table = dir.path().join("ecommerce_events");
    let mut stack = vec![table.clone()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let rows = SerializedFileReader::new(std::fs::File::open(&path)?)?
                    .metadata()
                    .file_metadata()
                    .num_rows();
                let hour = path
                    .parent()
                    .and_then(|h| h.file_name())
                    .and_then(|h| h.to_str())
                    .ok_or("hour directory")?
                    .to_owned();
                *got.entry(hour).or_default() += rows as u64;
            }
        }
    }
    assert_eq!(expected.len(), 2, "the run crosses an hour: {expected:?}");
    assert_eq!(got, expected);
    Ok(())
}
