//! `audit`: one audit record per record of every EventMart topic.

use super::*;

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
