//! `notifications`: one notification per customer-facing step.

use super::*;

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
