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

mod audit;
mod device_distribution;
mod events_per_minute;
mod lake;
mod notifications;
mod order_analytics;
mod revenue_per_category;

pub use audit::*;
pub use device_distribution::*;
pub use events_per_minute::*;
pub use lake::*;
pub use notifications::*;
pub use order_analytics::*;
pub use revenue_per_category::*;

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
