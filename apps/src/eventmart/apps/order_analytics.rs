//! `order-analytics`: placed orders joined with settled payments, paid
//! orders with the users table, lifecycle state per order, the funnel.

use super::*;

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

pub(super) fn order_step(o: OrderEvent) -> LifecycleStep {
    LifecycleStep {
        order_id: o.order_id,
        user_id: o.user_id,
        step: o.event_type.as_str().into(),
        timestamp: o.timestamp,
        amount: o.total,
        failure_reason: None,
    }
}

pub(super) fn payment_step(p: PaymentEvent) -> LifecycleStep {
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
