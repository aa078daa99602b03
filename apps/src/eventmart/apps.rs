//! EventMart's applications, each a brook topology.
//!
//! | app | reads | computes | writes |
//! |---|---|---|---|
//! | `events-per-minute` | `ecommerce-events` | events per type in 1 min tumbling windows | `eventmart-analytics` |
//! | `revenue-per-category` | `ecommerce-events` | total, count and average of PURCHASE prices per category, 5 min windows | `eventmart-analytics` |
//! | `device-distribution` | `ecommerce-events` | events per device type, 10 min windows | `eventmart-analytics` |
//! | `order-analytics` | orders, payments, users | placed orders ⋈ settled payments (windowed), paid orders ⋈ users table, lifecycle state per order, conversion funnel | `eventmart-order-state`, `eventmart-revenue` |
//! | `notifications` | orders, payments | a notification per customer-facing step | `eventmart-notifications` |
//! | `audit` | every EventMart topic | one audit record per record, with its origin | `eventmart-audit` |
//! | `lake` | `ecommerce-events` | Parquet by `event_date`/`event_hour`, exactly once | the lake |
//!
//! Event time is each event's own `timestamp` field. Inputs are Avro
//! (Confluent wire format, schemas from the registry; v1 click events read
//! as v2 with the new fields null, so v1 events count in events per minute
//! but carry no price or device). Windowed results go out as JSON
//! [`WindowedMetric`]s keyed `metric/key/window start`, once per commit
//! per window that changed (caching), so a consumer keeps the latest per
//! key. Every aggregate is in a named store ([`stores`]), for interactive
//! queries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use brook_connectors::avro::{AvroSerde, SchemaRegistryClient, split_wire_format};
use brook_connectors::lake::sink::{LakeSinkConfig, to_lake};
use brook_connectors::lake::{Lake, arrow_schema};
use brook_schemas::events::Event;
use brook_schemas::events::ecommerce::{EventType, UserEventV2};
use brook_schemas::events::eventmart::{
    AuditEvent, NotificationEvent, NotificationEventType, OrderEvent, OrderEventType, PaymentEvent,
    PaymentEventType, ProductEvent, UserEvent, UserEventType,
};
use brook_topology::processor::{ProcessError, Processor, ProcessorContext};
use brook_topology::serdes::{Json, RawBytes, Serde, Utf8};
use brook_topology::stream_join::{JoinWindows, StreamJoined};
use brook_topology::{
    Consumed, Grouped, Joined, KStream, Materialized, Produced, Record, Repartitioned,
    StreamsBuilder, TimeWindows, Topology, Windowed,
};
use serde::{Deserialize, Serialize};

use super::topics::TopicsFile;

/// The applications, by name.
pub const APPS: [&str; 7] = [
    "events-per-minute",
    "revenue-per-category",
    "device-distribution",
    "order-analytics",
    "notifications",
    "audit",
    "lake",
];

/// Store names, for interactive queries.
pub mod stores {
    /// `Windowed<event type>` → count.
    pub const EVENTS_PER_MINUTE: &str = "events-per-minute";
    /// `Windowed<category>` → [`super::Revenue`].
    pub const REVENUE_PER_CATEGORY: &str = "revenue-per-category";
    /// `Windowed<device type>` → count.
    pub const DEVICE_DISTRIBUTION: &str = "device-distribution";
    /// order id → [`super::OrderState`].
    pub const ORDER_STATE: &str = "order-state";
    /// funnel stage → orders that reached it.
    pub const ORDER_FUNNEL: &str = "order-funnel";
    /// user id → the latest [`brook_schemas::events::eventmart::UserEvent`].
    pub const USERS: &str = "users";
}

/// What the apps need to know.
#[derive(Clone)]
pub struct EventMartConfig {
    /// Topics (names with their prefix, partition counts).
    pub topics: TopicsFile,
    /// The prefix the topics file was read with.
    pub prefix: String,
    /// Schema registry client for the Avro topics.
    pub registry: Arc<SchemaRegistryClient>,
    /// How late an event may be and still count in its window.
    pub grace: Duration,
    /// The lake's URL (a directory, `memory://`, `s3://bucket/prefix`).
    pub lake_url: String,
}

impl std::fmt::Debug for EventMartConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventMartConfig")
            .field("prefix", &self.prefix)
            .field("registry", &self.registry.url())
            .field("grace", &self.grace)
            .field("lake_url", &self.lake_url)
            .finish()
    }
}

impl EventMartConfig {
    /// The shipped topics under `prefix`, 30 s of grace, the lake in `./lake`.
    pub fn new(prefix: &str, registry: Arc<SchemaRegistryClient>) -> Self {
        EventMartConfig {
            topics: TopicsFile::eventmart(prefix),
            prefix: prefix.to_owned(),
            registry,
            grace: Duration::from_secs(30),
            lake_url: "lake".into(),
        }
    }

    /// The full name of topic `base`.
    pub fn topic(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    fn partitions(&self, base: &str) -> Result<i32> {
        let name = self.topic(base);
        Ok(self
            .topics
            .get(&name)
            .with_context(|| format!("topic {name:?} is not in the topics file"))?
            .partitions)
    }

    fn avro<E: Event>(&self) -> AvroSerde<E> {
        AvroSerde::for_event(self.registry.clone())
    }

    fn clicks(&self, b: &StreamsBuilder) -> KStream<String, UserEventV2> {
        b.stream(
            &self.topic(brook_schemas::events::ecommerce::TOPIC),
            Consumed::with(Utf8, self.avro::<UserEventV2>())
                .timestamp_extractor(|_, e: &UserEventV2, _| e.timestamp),
        )
    }

    fn orders(&self, b: &StreamsBuilder) -> KStream<String, OrderEvent> {
        b.stream(
            &self.topic("eventmart-orders"),
            Consumed::with(Utf8, self.avro::<OrderEvent>())
                .timestamp_extractor(|_, e: &OrderEvent, _| e.timestamp),
        )
    }

    fn payments(&self, b: &StreamsBuilder) -> KStream<String, PaymentEvent> {
        b.stream(
            &self.topic("eventmart-payments"),
            Consumed::with(Utf8, self.avro::<PaymentEvent>())
                .timestamp_extractor(|_, e: &PaymentEvent, _| e.timestamp),
        )
    }
}

/// One windowed result on `eventmart-analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowedMetric {
    /// `events_per_minute`, `revenue_per_category`, `device_distribution`.
    pub metric: String,
    /// Event type, category or device.
    pub key: String,
    /// Window start, ms.
    pub window_start: i64,
    /// Window end (exclusive), ms.
    pub window_end: i64,
    /// Events in the window.
    pub count: i64,
    /// Revenue: sum of prices.
    pub total: Option<f64>,
    /// Revenue: average price.
    pub average: Option<f64>,
}

impl WindowedMetric {
    /// The record key: metric, key and window start.
    pub fn record_key(&self) -> String {
        format!("{}/{}/{}", self.metric, self.key, self.window_start)
    }
}

/// Revenue of one category in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Revenue {
    /// Sum of prices.
    pub total: f64,
    /// Purchases.
    pub count: i64,
}

impl Revenue {
    /// Average price (0 with no purchases).
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total / self.count as f64
        }
    }
}

fn tumbling(size_secs: u64, grace: Duration) -> Result<TimeWindows> {
    TimeWindows::tumbling(Duration::from_secs(size_secs), grace)
        .map_err(|e| anyhow::anyhow!("window of {size_secs} s: {e}"))
}

fn emit<V: brook_topology::processor::Data>(
    table: KStream<Windowed<String>, Option<V>>,
    metric: &'static str,
    out: &str,
    to_metric: impl Fn(&Windowed<String>, V) -> WindowedMetric + Send + Sync + 'static,
) {
    table
        .flat_map(move |k: Windowed<String>, v: Option<V>| {
            v.map(|v| {
                let m = to_metric(&k, v);
                debug_assert_eq!(m.metric, metric);
                (m.record_key(), m)
            })
        })
        .to(out, Produced::with(Utf8, Json::<WindowedMetric>::new()));
}

/// Events per type in 1 min tumbling windows.
pub fn events_per_minute(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .map(|_, e: UserEventV2| (e.event_type.as_str().to_owned(), e.timestamp))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .windowed_by(tumbling(60, cfg.grace)?)
        .count(
            Materialized::named(stores::EVENTS_PER_MINUTE, Utf8, Json::<i64>::new()).with_caching(),
        );
    emit(
        table.to_stream(),
        "events_per_minute",
        &cfg.topic("eventmart-analytics"),
        |k, count| WindowedMetric {
            metric: "events_per_minute".into(),
            key: k.key.clone(),
            window_start: k.window.start,
            window_end: k.window.end,
            count,
            total: None,
            average: None,
        },
    );
    Ok(b.build()?)
}

/// Total, count and average of PURCHASE prices per category in 5 min
/// tumbling windows (purchases written in v1 have no price and are left out).
pub fn revenue_per_category(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .flat_map(
            |_, e: UserEventV2| match (e.event_type, e.category, e.price) {
                (EventType::Purchase, Some(category), Some(price)) => Some((category, price)),
                _ => None,
            },
        )
        .group_by_key(Grouped::with(Utf8, Json::<f64>::new()))
        .windowed_by(tumbling(300, cfg.grace)?)
        .aggregate(
            Revenue::default,
            |_, price, acc: Revenue| Revenue {
                total: acc.total + price,
                count: acc.count + 1,
            },
            Materialized::named(stores::REVENUE_PER_CATEGORY, Utf8, Json::<Revenue>::new())
                .with_caching()
                .with_retention(Duration::from_secs(3 * 3600)),
        );
    emit(
        table.to_stream(),
        "revenue_per_category",
        &cfg.topic("eventmart-analytics"),
        |k, r: Revenue| WindowedMetric {
            metric: "revenue_per_category".into(),
            key: k.key.clone(),
            window_start: k.window.start,
            window_end: k.window.end,
            count: r.count,
            total: Some(r.total),
            average: Some(r.average()),
        },
    );
    Ok(b.build()?)
}

/// Events per device type in 10 min tumbling windows (v2 events only: v1
/// has no device).
pub fn device_distribution(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let table = cfg
        .clicks(&b)
        .flat_map(|_, e: UserEventV2| e.device_type.map(|d| (d.as_str().to_owned(), e.timestamp)))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .windowed_by(tumbling(600, cfg.grace)?)
        .count(
            Materialized::named(stores::DEVICE_DISTRIBUTION, Utf8, Json::<i64>::new())
                .with_caching()
                .with_retention(Duration::from_secs(6 * 3600)),
        );
    emit(
        table.to_stream(),
        "device_distribution",
        &cfg.topic("eventmart-analytics"),
        |k, count| WindowedMetric {
            metric: "device_distribution".into(),
            key: k.key.clone(),
            window_start: k.window.start,
            window_end: k.window.end,
            count,
            total: None,
            average: None,
        },
    );
    Ok(b.build()?)
}

/// One step of an order's lifecycle, from the orders or the payments topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleStep {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub user_id: String,
    /// `ORDER_PLACED`, `PAYMENT_COMPLETED`, ...
    pub step: String,
    /// When, ms.
    pub timestamp: i64,
    /// Order total or payment amount.
    pub amount: f64,
    /// Why a payment failed.
    pub failure_reason: Option<String>,
}

/// Where an order is: the furthest step seen, and when each happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub user_id: String,
    /// The furthest step: `ORDER_PLACED` … `ORDER_DELIVERED`, or
    /// `PAYMENT_FAILED` (final).
    pub status: String,
    /// Order total.
    pub total: f64,
    /// When it was placed.
    pub placed_at: Option<i64>,
    /// When its payment completed.
    pub paid_at: Option<i64>,
    /// When it shipped.
    pub shipped_at: Option<i64>,
    /// When it was delivered.
    pub delivered_at: Option<i64>,
    /// Why the payment failed.
    pub failure_reason: Option<String>,
    /// Steps seen.
    pub steps: u32,
}

/// The rank of a step: an order's status is its highest-ranked step, so
/// steps arriving out of order (orders and payments are different topics)
/// never move it back.
pub fn step_rank(step: &str) -> u8 {
    match step {
        "ORDER_PLACED" => 1,
        "PAYMENT_INITIATED" => 2,
        "PAYMENT_COMPLETED" => 3,
        "ORDER_CONFIRMED" => 4,
        "ORDER_SHIPPED" => 5,
        "ORDER_DELIVERED" => 6,
        "PAYMENT_FAILED" => 7,
        _ => 0,
    }
}

impl OrderState {
    /// The state after `step`.
    pub fn apply(mut self, step: &LifecycleStep) -> Self {
        self.order_id.clone_from(&step.order_id);
        self.user_id.clone_from(&step.user_id);
        self.steps += 1;
        if step_rank(&step.step) > step_rank(&self.status) {
            self.status.clone_from(&step.step);
        }
        match step.step.as_str() {
            "ORDER_PLACED" => {
                self.placed_at = Some(step.timestamp);
                self.total = step.amount;
            }
            "PAYMENT_COMPLETED" => self.paid_at = Some(step.timestamp),
            "PAYMENT_FAILED" => self.failure_reason.clone_from(&step.failure_reason),
            "ORDER_SHIPPED" => self.shipped_at = Some(step.timestamp),
            "ORDER_DELIVERED" => self.delivered_at = Some(step.timestamp),
            _ => {}
        }
        self
    }
}

/// The conversion funnel's stage of a lifecycle step, if it is one.
pub fn funnel_stage(step: &str) -> Option<&'static str> {
    match step {
        "ORDER_PLACED" => Some("1-placed"),
        "PAYMENT_COMPLETED" => Some("2-paid"),
        "ORDER_SHIPPED" => Some("3-shipped"),
        "ORDER_DELIVERED" => Some("4-delivered"),
        "PAYMENT_FAILED" => Some("x-payment-failed"),
        _ => None,
    }
}

/// A placed order joined with its settled payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaidOrder {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub user_id: String,
    /// Category of the first item.
    pub category: String,
    /// Order total.
    pub total: f64,
    /// Payment method.
    pub method: String,
    /// Whether the payment completed.
    pub succeeded: bool,
    /// When the order was placed.
    pub placed_at: i64,
    /// When the payment settled.
    pub settled_at: i64,
}

/// Revenue of a paid order, enriched from the users table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevenueEvent {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub user_id: String,
    /// The customer's country.
    pub country: Option<String>,
    /// The customer's tier.
    pub tier: Option<String>,
    /// Category of the first item.
    pub category: String,
    /// Amount paid.
    pub amount: f64,
    /// Payment method.
    pub method: String,
    /// Seconds from placing to paying.
    pub seconds_to_pay: f64,
    /// When it was paid, ms.
    pub paid_at: i64,
}

fn order_step(o: OrderEvent) -> LifecycleStep {
    LifecycleStep {
        order_id: o.order_id,
        user_id: o.user_id,
        step: o.event_type.as_str().into(),
        timestamp: o.timestamp,
        amount: o.total,
        failure_reason: None,
    }
}

fn payment_step(p: PaymentEvent) -> LifecycleStep {
    LifecycleStep {
        order_id: p.order_id,
        user_id: p.user_id,
        step: p.event_type.as_str().into(),
        timestamp: p.timestamp,
        amount: p.amount,
        failure_reason: p.failure_reason,
    }
}

/// Order analytics: see the module table.
///
/// Payments (3 partitions) are repartitioned to the orders' partition
/// count so that both are co-partitioned by order id; paid orders are
/// re-keyed by user and repartitioned to the users table's partitions for
/// the enrichment join.
pub fn order_analytics(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let orders = cfg.orders(&b);
    let payments = cfg.payments(&b).repartition(
        Repartitioned::named("payments-by-order", Utf8, Json::<PaymentEvent>::new())
            .partitions(cfg.partitions("eventmart-orders")?),
    );

    // Lifecycle state per order, and the funnel.
    let steps = orders
        .map_values(order_step)
        .merge(&payments.map_values(payment_step));
    let state = steps
        .group_by_key(Grouped::with(Utf8, Json::<LifecycleStep>::new()))
        .aggregate(
            OrderState::default,
            |_, step: LifecycleStep, state: OrderState| state.apply(&step),
            Materialized::named(stores::ORDER_STATE, Utf8, Json::<OrderState>::new())
                .with_caching(),
        );
    state.to(
        &cfg.topic("eventmart-order-state"),
        Produced::with(Utf8, Json::<OrderState>::new()),
    );
    steps
        .flat_map(|_, s: LifecycleStep| funnel_stage(&s.step).map(|stage| (stage.to_owned(), 1)))
        .group_by_key(Grouped::with(Utf8, Json::<i64>::new()))
        .count(Materialized::named(stores::ORDER_FUNNEL, Utf8, Json::<i64>::new()).with_caching());

    // Placed orders ⋈ settled payments, within 10 minutes.
    let placed = orders.filter(|_, o: &OrderEvent| o.event_type == OrderEventType::Placed);
    let settled = payments.filter(|_, p: &PaymentEvent| {
        matches!(
            p.event_type,
            PaymentEventType::Completed | PaymentEventType::Failed
        )
    });
    let paid = placed.join_stream(
        &settled,
        |_, o: &OrderEvent, p: &PaymentEvent| PaidOrder {
            order_id: o.order_id.clone(),
            user_id: o.user_id.clone(),
            category: o
                .items
                .first()
                .map(|i| i.category.clone())
                .unwrap_or_default(),
            total: o.total,
            method: p.method.as_str().into(),
            succeeded: p.event_type == PaymentEventType::Completed,
            placed_at: o.timestamp,
            settled_at: p.timestamp,
        },
        JoinWindows::of(Duration::from_secs(600), cfg.grace).before(Duration::ZERO),
        StreamJoined::named(
            "orders-payments",
            Utf8,
            Json::<OrderEvent>::new(),
            Json::<PaymentEvent>::new(),
        ),
    );

    // ⋈ users: the customer's country and tier.
    let users = b.table(
        &cfg.topic("eventmart-users"),
        Consumed::with(Utf8, cfg.avro::<UserEvent>()),
        Materialized::named(stores::USERS, Utf8, Json::<UserEvent>::new()),
    );
    paid.filter(|_, p: &PaidOrder| p.succeeded)
        .select_key(|_, p: &PaidOrder| p.user_id.clone())
        .repartition(
            Repartitioned::named("paid-by-user", Utf8, Json::<PaidOrder>::new())
                .partitions(cfg.partitions("eventmart-users")?),
        )
        .left_join(
            &users,
            |_, p: PaidOrder, user: Option<UserEvent>| {
                let user = user.filter(|u| u.event_type != UserEventType::Deleted);
                RevenueEvent {
                    country: user.as_ref().and_then(|u| u.country.clone()),
                    tier: user
                        .as_ref()
                        .and_then(|u| u.tier)
                        .map(|t| t.as_str().to_owned()),
                    seconds_to_pay: (p.settled_at - p.placed_at) as f64 / 1000.0,
                    order_id: p.order_id,
                    user_id: p.user_id,
                    category: p.category,
                    amount: p.total,
                    method: p.method,
                    paid_at: p.settled_at,
                }
            },
            Joined::named("paid-users", Utf8, Json::<PaidOrder>::new()),
        )
        .to(
            &cfg.topic("eventmart-revenue"),
            Produced::with(Utf8, Json::<RevenueEvent>::new()),
        );
    Ok(b.build()?)
}

/// The notification a lifecycle step sends, if any: channel, template and
/// message.
pub fn notification_for(
    step: &str,
    order_id: &str,
    amount: f64,
) -> Option<(NotificationEventType, &'static str, String)> {
    Some(match step {
        "ORDER_PLACED" => (
            NotificationEventType::EmailSent,
            "order-confirmation",
            format!("Thank you! Order {order_id} ({amount:.2}) is placed."),
        ),
        "PAYMENT_COMPLETED" => (
            NotificationEventType::EmailSent,
            "payment-receipt",
            format!("We received your payment of {amount:.2} for order {order_id}."),
        ),
        "PAYMENT_FAILED" => (
            NotificationEventType::PushNotificationSent,
            "payment-failed",
            format!("The payment for order {order_id} failed; please try another method."),
        ),
        "ORDER_SHIPPED" => (
            NotificationEventType::SmsSent,
            "order-shipped",
            format!("Order {order_id} is on its way."),
        ),
        "ORDER_DELIVERED" => (
            NotificationEventType::PushNotificationSent,
            "order-delivered",
            format!("Order {order_id} was delivered."),
        ),
        _ => return None,
    })
}

/// Notifications for customer-facing order and payment steps, keyed by user.
/// A notification's id derives from the event it is about, so a replay
/// sends the same ids (consumers deduplicate on them).
pub fn notifications(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let out = cfg.topic("eventmart-notifications");
    let produced = || Produced::with(Utf8, cfg.avro::<NotificationEvent>());
    let make = |event_id: String, step: LifecycleStep| {
        notification_for(&step.step, &step.order_id, step.amount).map(
            |(event_type, template, message)| {
                (
                    step.user_id.clone(),
                    NotificationEvent {
                        event_id: format!("ntf-{event_id}"),
                        event_type,
                        notification_id: format!("ntf-{event_id}"),
                        user_id: step.user_id,
                        timestamp: step.timestamp,
                        template: template.into(),
                        message,
                        order_id: Some(step.order_id),
                    },
                )
            },
        )
    };
    cfg.orders(&b)
        .flat_map(move |_, o: OrderEvent| make(o.event_id.clone(), order_step(o)))
        .to(&out, produced());
    cfg.payments(&b)
        .flat_map(move |_, p: PaymentEvent| make(p.event_id.clone(), payment_step(p)))
        .to(&out, produced());
    Ok(b.build()?)
}

/// What the audit service reads of one record.
struct Described {
    event_type: String,
    entity_id: String,
    actor: Option<String>,
    summary: String,
}

/// Decodes one record of an audited topic.
type Describe = fn(&[u8], &AuditDecoders) -> Result<Described, String>;

/// Decoders of every audited topic's records.
#[derive(Clone)]
pub struct AuditDecoders {
    clicks: AvroSerde<UserEventV2>,
    users: AvroSerde<UserEvent>,
    products: AvroSerde<ProductEvent>,
    orders: AvroSerde<OrderEvent>,
    payments: AvroSerde<PaymentEvent>,
    notifications: AvroSerde<NotificationEvent>,
}

fn decode<T: Serialize + serde::de::DeserializeOwned + 'static>(
    serde: &AvroSerde<T>,
    bytes: &[u8],
) -> Result<T, String> {
    serde.deserialize(Some(bytes)).map_err(|e| e.to_string())
}

/// event type, entity, actor, summary.
fn describe_click(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.clicks, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.session_id.clone(),
        actor: Some(e.user_id.clone()),
        summary: format!(
            "{} by {}{}",
            e.event_type.as_str(),
            e.user_id,
            e.product_id.map(|p| format!(" on {p}")).unwrap_or_default()
        ),
    })
}

fn describe_user(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.users, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.user_id.clone(),
        actor: Some(e.user_id.clone()),
        summary: format!("{} {}", e.event_type.as_str(), e.user_id),
    })
}

fn describe_product(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.products, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.product_id.clone(),
        actor: None,
        summary: format!(
            "{} {}{}",
            e.event_type.as_str(),
            e.product_id,
            e.stock_level
                .map(|s| format!(" stock {s}"))
                .unwrap_or_default()
        ),
    })
}

fn describe_order(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.orders, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.order_id.clone(),
        actor: Some(e.user_id.clone()),
        summary: format!(
            "{} {} total {:.2} {}",
            e.event_type.as_str(),
            e.order_id,
            e.total,
            e.currency
        ),
    })
}

fn describe_payment(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.payments, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.payment_id.clone(),
        actor: Some(e.user_id.clone()),
        summary: format!(
            "{} {} for {} amount {:.2} {}{}",
            e.event_type.as_str(),
            e.payment_id,
            e.order_id,
            e.amount,
            e.currency,
            e.failure_reason
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    })
}

fn describe_notification(b: &[u8], d: &AuditDecoders) -> Result<Described, String> {
    let e = decode(&d.notifications, b)?;
    Ok(Described {
        event_type: e.event_type.as_str().into(),
        entity_id: e.notification_id.clone(),
        actor: Some(e.user_id.clone()),
        summary: format!("{} {} to {}", e.event_type.as_str(), e.template, e.user_id),
    })
}

/// The audited topics (without prefix) and how to read each.
const AUDITED: [(&str, Describe); 6] = [
    ("eventmart-users", describe_user),
    ("eventmart-products", describe_product),
    ("eventmart-orders", describe_order),
    ("eventmart-payments", describe_payment),
    ("eventmart-notifications", describe_notification),
    (brook_schemas::events::ecommerce::TOPIC, describe_click),
];

struct AuditProcessor {
    decoders: AuditDecoders,
    describe: Describe,
}

impl Processor<String, Vec<u8>, String, AuditEvent> for AuditProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, AuditEvent>,
        record: Record<String, Vec<u8>>,
    ) -> Result<(), ProcessError> {
        let meta = ctx
            .record_metadata()
            .cloned()
            .ok_or_else(|| ProcessError::user("audit: a record without source metadata"))?;
        let schema_id = split_wire_format(&record.value)
            .ok()
            .and_then(|(id, _)| i32::try_from(id).ok());
        let Described {
            event_type,
            entity_id,
            actor,
            summary,
        } = (self.describe)(&record.value, &self.decoders).unwrap_or_else(|e| Described {
            event_type: "UNDECODABLE".into(),
            entity_id: record.key.clone(),
            actor: None,
            summary: format!("could not decode {} bytes: {e}", record.value.len()),
        });
        let audit = AuditEvent {
            audit_id: format!("{}-{}-{}", meta.topic, meta.partition, meta.offset),
            timestamp: record.timestamp,
            recorded_at: ctx.wall_clock_time(),
            source_topic: meta.topic.to_string(),
            source_partition: meta.partition,
            source_offset: meta.offset,
            event_type,
            entity_id: entity_id.clone(),
            actor,
            schema_id,
            summary,
        };
        ctx.forward(Record {
            key: entity_id,
            value: audit,
            timestamp: record.timestamp,
            headers: record.headers,
        });
        Ok(())
    }
}

/// One audit record per record of every EventMart topic, undecodable ones
/// included (event type `UNDECODABLE`, with the reason): the audit trail
/// must not have holes. Each topic is its own sub-topology (their partition
/// counts differ); audit ids are `topic-partition-offset`, so a replay
/// rewrites the same ids.
pub fn audit(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let decoders = AuditDecoders {
        clicks: cfg.avro(),
        users: cfg.avro(),
        products: cfg.avro(),
        orders: cfg.avro(),
        payments: cfg.avro(),
        notifications: cfg.avro(),
    };
    let out = cfg.topic("eventmart-audit");
    for (topic, describe) in AUDITED {
        let decoders = decoders.clone();
        b.stream(&cfg.topic(topic), Consumed::with(Utf8, RawBytes))
            .process(move || AuditProcessor {
                decoders: decoders.clone(),
                describe,
            })
            .to(&out, Produced::with(Utf8, cfg.avro::<AuditEvent>()));
    }
    Ok(b.build()?)
}

/// Raw click events into the lake's `ecommerce_events` table, partitioned
/// by `event_date` / `event_hour`, exactly once (run it with
/// `exactly_once_v2`).
pub fn lake(cfg: &EventMartConfig) -> Result<Topology> {
    let b = StreamsBuilder::new();
    let lake = Arc::new(
        Lake::open(&cfg.lake_url)
            .with_context(|| format!("opening the lake at {}", cfg.lake_url))?,
    );
    let schema = arrow_schema(
        &apache_avro::Schema::parse_str(UserEventV2::SCHEMA).context("the v2 schema")?,
    )
    .context("the v2 schema as Arrow")?;
    let clicks = cfg.clicks(&b);
    to_lake(
        &b,
        &clicks,
        lake,
        Arc::new(schema),
        LakeSinkConfig::new("ecommerce_events"),
    );
    Ok(b.build()?)
}

/// The topology of app `name`.
pub fn topology(name: &str, cfg: &EventMartConfig) -> Result<Topology> {
    match name {
        "events-per-minute" => events_per_minute(cfg),
        "revenue-per-category" => revenue_per_category(cfg),
        "device-distribution" => device_distribution(cfg),
        "order-analytics" => order_analytics(cfg),
        "notifications" => notifications(cfg),
        "audit" => audit(cfg),
        "lake" => lake(cfg),
        other => bail!("no app {other:?}; the apps: {}", APPS.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: &str, ts: i64) -> LifecycleStep {
        LifecycleStep {
            order_id: "o".into(),
            user_id: "u".into(),
            step: step.into(),
            timestamp: ts,
            amount: 10.0,
            failure_reason: None,
        }
    }

    #[test]
    fn order_state_keeps_the_furthest_step_whatever_the_arrival_order() {
        let in_order = [
            "ORDER_PLACED",
            "PAYMENT_INITIATED",
            "PAYMENT_COMPLETED",
            "ORDER_CONFIRMED",
            "ORDER_SHIPPED",
            "ORDER_DELIVERED",
        ];
        let forward = in_order
            .iter()
            .enumerate()
            .fold(OrderState::default(), |s, (i, k)| {
                s.apply(&step(k, i as i64))
            });
        let backward = in_order
            .iter()
            .enumerate()
            .rev()
            .fold(OrderState::default(), |s, (i, k)| {
                s.apply(&step(k, i as i64))
            });
        assert_eq!(forward, backward);
        assert_eq!(forward.status, "ORDER_DELIVERED");
        assert_eq!(forward.paid_at, Some(2));
        assert_eq!(forward.delivered_at, Some(5));
        let failed = ["PAYMENT_FAILED", "ORDER_PLACED", "PAYMENT_INITIATED"]
            .iter()
            .fold(OrderState::default(), |s, k| s.apply(&step(k, 1)));
        assert_eq!(failed.status, "PAYMENT_FAILED");
    }
}
