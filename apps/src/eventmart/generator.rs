//! EventMart's event generator: shoppers clicking through sessions and
//! carts (the seed's `user_event` v1/v2 on `ecommerce-events`) and the
//! services' lifecycles they start (users, products, orders, payments).
//!
//! How it behaves, after the seed's generator:
//!
//! - A fixed population of users (`user_0000`, ...), each registered
//!   (`USER_REGISTERED` on `eventmart-users`) before anything else, with a
//!   country and a loyalty tier; now and then one is updated.
//! - The seed's ten products are created first (`PRODUCT_CREATED`).
//! - Each click picks a user at random; the user's session lasts 5–30
//!   minutes of event time (a new one starts after, abandoning the cart) on
//!   one device. Event types are weighted 60 % page view, 20 % add to cart,
//!   10 % purchase, 5 % remove from cart, 5 % search; remove and purchase
//!   are impossible with an empty cart. A page view or add picks a product;
//!   a remove takes the last item out of the cart; a purchase buys the first
//!   item in it; a search has no product.
//! - Every purchase places an order (`ORDER_PLACED`, keyed by order id, and
//!   `INVENTORY_CHANGED` for the product), then a payment is initiated and
//!   completes — or fails (10 % by default), which ends the order — and a
//!   paid order is confirmed, shipped and delivered, each step after a
//!   delay of event time (seconds to minutes, scaled by
//!   [`GeneratorConfig::lifecycle_scale`]).
//! - Schemas: all clicks in v1, all in v2, or dual write: v1 and v2
//!   producers taking turns, as in the seed's migration.
//!
//! [`Generator::next`] returns one event per call for the event time it is
//! given; steps of lifecycles come out when they are due, before new
//! clicks. Given the same seed and the same sequence of times, the output
//! is the same, byte for byte (event ids come from the seeded random
//! numbers, not from the clock).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use std::sync::Arc;

use brook_connectors::avro::{AvroSerde, SchemaRegistryClient};
use brook_schemas::events::Event;
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::events::eventmart::{
    CustomerTier, OrderEvent, OrderEventType, OrderItem, PaymentEvent, PaymentEventType,
    PaymentMethod, ProductEvent, ProductEventType, UserEvent, UserEventType,
};
use brook_topology::serdes::{Serde, SerdeError};

/// A small, fast, seedable random number generator (SplitMix64): the
/// generator's output must be reproducible from its seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for n far below 2^64.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One of `items` by weight; `None` if all weights are 0.
    pub fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> Option<T> {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.below(total);
        for (item, w) in items {
            if r < u64::from(*w) {
                return Some(*item);
            }
            r -= u64::from(*w);
        }
        None
    }

    /// A version-4 UUID made of random bits.
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// One product of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Product {
    /// `prod_001`, ...
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Price (the seed's numbers).
    pub price: f64,
    /// Category.
    pub category: &'static str,
}

/// The seed's product catalogue.
pub const CATALOGUE: [Product; 10] = [
    Product {
        id: "prod_001",
        name: "iPhone 15 Pro",
        price: 79999.0,
        category: "Electronics",
    },
    Product {
        id: "prod_002",
        name: "Nike Air Max",
        price: 4999.0,
        category: "Fashion",
    },
    Product {
        id: "prod_003",
        name: "Coffee Maker",
        price: 2499.0,
        category: "Home",
    },
    Product {
        id: "prod_004",
        name: "Yoga Mat",
        price: 899.0,
        category: "Sports",
    },
    Product {
        id: "prod_005",
        name: "Laptop Backpack",
        price: 1999.0,
        category: "Accessories",
    },
    Product {
        id: "prod_006",
        name: "Wireless Earbuds",
        price: 3499.0,
        category: "Electronics",
    },
    Product {
        id: "prod_007",
        name: "Running Shoes",
        price: 5999.0,
        category: "Sports",
    },
    Product {
        id: "prod_008",
        name: "Smart Watch",
        price: 12999.0,
        category: "Electronics",
    },
    Product {
        id: "prod_009",
        name: "Jeans",
        price: 2999.0,
        category: "Fashion",
    },
    Product {
        id: "prod_010",
        name: "Water Bottle",
        price: 499.0,
        category: "Sports",
    },
];

/// The seed's countries.
pub const COUNTRIES: [&str; 6] = ["IN", "US", "UK", "DE", "CA", "AU"];

/// Orders' currency (the seed's prices are rupees).
pub const CURRENCY: &str = "INR";

const FIRST_NAMES: [&str; 12] = [
    "Asha", "Ben", "Chen", "Dara", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena",
];
const LAST_NAMES: [&str; 10] = [
    "Iyer", "Smith", "Wang", "Okafor", "Yilmaz", "Haddad", "Berg", "Sato", "Petrov", "Garcia",
];
const CARRIERS: [&str; 3] = ["DHL", "UPS", "BlueDart"];
const FAILURES: [&str; 3] = [
    "card declined",
    "insufficient funds",
    "3-D Secure timed out",
];

/// Which `user_event` schema the click stream is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Everything in v1 (no product, device or country).
    V1,
    /// Everything in v2.
    V2,
    /// Dual write: a v1 and a v2 producer taking turns.
    Dual,
}

impl std::str::FromStr for SchemaMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(SchemaMode::V1),
            "v2" => Ok(SchemaMode::V2),
            "dual" => Ok(SchemaMode::Dual),
            other => Err(format!("schema {other:?} is not v1, v2 or dual")),
        }
    }
}

/// How the generator behaves.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of users.
    pub users: u32,
    /// Schema of the click stream.
    pub schema: SchemaMode,
    /// Share of payments that fail.
    pub payment_failure_rate: f64,
    /// Share of outputs that are profile updates.
    pub user_update_rate: f64,
    /// Multiplies every lifecycle delay (1.0: seconds to minutes).
    pub lifecycle_scale: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 100,
            schema: SchemaMode::Dual,
            payment_failure_rate: 0.1,
            user_update_rate: 0.005,
            lifecycle_scale: 1.0,
        }
    }
}

/// A click, in the schema version it is written in.
#[derive(Debug, Clone, PartialEq)]
pub enum Click {
    /// Written by a v1 producer.
    V1(UserEventV1),
    /// Written by a v2 producer.
    V2(UserEventV2),
}

impl Click {
    /// The event as a v2 reader sees it.
    pub fn as_v2(&self) -> UserEventV2 {
        match self {
            Click::V1(e) => UserEventV2::from(e.clone()),
            Click::V2(e) => e.clone(),
        }
    }
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub enum Generated {
    /// On `ecommerce-events`, keyed by user.
    Click(Click),
    /// On `eventmart-users`, keyed by user.
    User(UserEvent),
    /// On `eventmart-products`, keyed by product.
    Product(ProductEvent),
    /// On `eventmart-orders`, keyed by order.
    Order(OrderEvent),
    /// On `eventmart-payments`, keyed by order.
    Payment(PaymentEvent),
}

impl Generated {
    /// The topic (without prefix).
    pub fn topic(&self) -> &'static str {
        match self {
            Generated::Click(_) => brook_schemas::events::ecommerce::TOPIC,
            Generated::User(_) => "eventmart-users",
            Generated::Product(_) => "eventmart-products",
            Generated::Order(_) => "eventmart-orders",
            Generated::Payment(_) => "eventmart-payments",
        }
    }

    /// The record key: what keeps one entity's events in order.
    pub fn key(&self) -> &str {
        match self {
            Generated::Click(Click::V1(e)) => e.key(),
            Generated::Click(Click::V2(e)) => e.key(),
            Generated::User(e) => e.key(),
            Generated::Product(e) => e.key(),
            Generated::Order(e) => &e.order_id,
            Generated::Payment(e) => &e.order_id,
        }
    }

    /// Event time, ms since the epoch.
    pub fn timestamp(&self) -> i64 {
        match self {
            Generated::Click(Click::V1(e)) => e.timestamp,
            Generated::Click(Click::V2(e)) => e.timestamp,
            Generated::User(e) => e.timestamp,
            Generated::Product(e) => e.timestamp,
            Generated::Order(e) => e.timestamp,
            Generated::Payment(e) => e.timestamp,
        }
    }
}

/// What the generator produced so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Events per topic.
    pub by_topic: BTreeMap<&'static str, u64>,
    /// Clicks per event type.
    pub clicks: BTreeMap<&'static str, u64>,
    /// Clicks written in v1 / v2.
    pub v1: u64,
    /// Clicks written in v2.
    pub v2: u64,
    /// Orders placed (ORDER_PLACED events generated).
    pub orders: u64,
    /// Payments that failed.
    pub payments_failed: u64,
    /// Orders delivered.
    pub delivered: u64,
}

impl GeneratorStats {
    /// All events.
    pub fn total(&self) -> u64 {
        self.by_topic.values().sum()
    }
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    started: i64,
    length_ms: i64,
    device: DeviceType,
    cart: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Shopper {
    id: String,
    email: String,
    name: String,
    country: &'static str,
    tier: CustomerTier,
    session: Option<Session>,
}

/// A lifecycle step that is due at some event time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    PaymentInitiated { order: u64 },
    PaymentSettled { order: u64 },
    Order { order: u64, step: u8 },
}

#[derive(Debug, Clone)]
struct OpenOrder {
    id: String,
    payment_id: String,
    user: usize,
    product: usize,
    method: PaymentMethod,
}

/// The generator. See the module docs.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    shoppers: Vec<Shopper>,
    stock: Vec<i32>,
    startup: VecDeque<Generated>,
    started: bool,
    pending: BinaryHeap<Reverse<(i64, u64, Step)>>,
    sequence: u64,
    orders: BTreeMap<u64, OpenOrder>,
    next_order: u64,
    turn_v2: bool,
    stats: GeneratorStats,
}

impl Generator {
    /// A generator. The users and the catalogue are made here, from the seed.
    pub fn new(config: GeneratorConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let shoppers = (0..config.users.max(1))
            .map(|i| {
                let first = *rng.pick(&FIRST_NAMES);
                let last = *rng.pick(&LAST_NAMES);
                let tier = rng
                    .weighted(&[
                        (CustomerTier::Standard, 70),
                        (CustomerTier::Silver, 20),
                        (CustomerTier::Gold, 10),
                    ])
                    .unwrap_or(CustomerTier::Standard);
                Shopper {
                    id: format!("user_{i:04}"),
                    email: format!(
                        "{}.{}{i}@example.com",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                    name: format!("{first} {last}"),
                    country: COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize],
                    tier,
                    session: None,
                }
            })
            .collect();
        Generator {
            stock: vec![500; CATALOGUE.len()],
            rng,
            shoppers,
            startup: VecDeque::new(),
            started: false,
            pending: BinaryHeap::new(),
            sequence: 0,
            orders: BTreeMap::new(),
            next_order: 1,
            turn_v2: false,
            stats: GeneratorStats::default(),
            config,
        }
    }

    /// What was generated so far.
    pub fn stats(&self) -> &GeneratorStats {
        &self.stats
    }

    /// Orders whose lifecycle has not ended.
    pub fn open_orders(&self) -> usize {
        self.orders.len()
    }

    /// The event time the next pending lifecycle step is due at.
    pub fn next_due(&self) -> Option<i64> {
        self.pending.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The next event at event time `now_ms`: a registration or product of
    /// the start, else a lifecycle step that is due, else a click.
    pub fn next(&mut self, now_ms: i64) -> Generated {
        if !self.started {
            self.started = true;
            self.start(now_ms);
        }
        let out = if let Some(event) = self.startup.pop_front() {
            event
        } else if self.next_due().is_some_and(|due| due <= now_ms) {
            let Reverse((due, _, step)) = self.pending.pop().expect("peeked");
            self.step(step, due)
        } else if self.rng.chance(self.config.user_update_rate) {
            self.user_update(now_ms)
        } else {
            self.click(now_ms)
        };
        self.count(&out);
        out
    }

    /// Counts an event as it leaves the generator (an order counts when
    /// its ORDER_PLACED does, not when it is scheduled).
    fn count(&mut self, event: &Generated) {
        *self.stats.by_topic.entry(event.topic()).or_default() += 1;
        if let Generated::Order(o) = event
            && o.event_type == OrderEventType::Placed
        {
            self.stats.orders += 1;
        }
    }

    /// Finishes every open lifecycle: the pending steps in due order, each
    /// at its own event time (for a bounded run that ends with no order
    /// left half-way).
    pub fn drain(&mut self) -> Vec<Generated> {
        let mut out: Vec<Generated> = self.startup.drain(..).collect();
        while let Some(Reverse((due, _, step))) = self.pending.pop() {
            out.push(self.step(step, due));
        }
        for event in &out {
            self.count(event);
        }
        out
    }

    fn start(&mut self, now: i64) {
        for (i, p) in CATALOGUE.iter().enumerate() {
            let event = ProductEvent {
                event_id: self.rng.uuid(),
                event_type: ProductEventType::Created,
                product_id: p.id.into(),
                timestamp: now,
                name: Some(p.name.into()),
                category: Some(p.category.into()),
                price: Some(p.price),
                stock_level: Some(self.stock[i]),
                stock_delta: None,
            };
            self.startup.push_back(Generated::Product(event));
        }
        for i in 0..self.shoppers.len() {
            let event = self.user_event(i, UserEventType::Registered, now);
            self.startup.push_back(Generated::User(event));
        }
    }

    fn user_event(&mut self, i: usize, event_type: UserEventType, now: i64) -> UserEvent {
        let s = &self.shoppers[i];
        let (email, name, country, tier) = (
            s.email.clone(),
            s.name.clone(),
            s.country.to_owned(),
            s.tier,
        );
        UserEvent {
            event_id: self.rng.uuid(),
            event_type,
            user_id: self.shoppers[i].id.clone(),
            timestamp: now,
            email: Some(email),
            name: Some(name),
            country: Some(country),
            tier: Some(tier),
        }
    }

    fn user_update(&mut self, now: i64) -> Generated {
        let i = self.rng.below(self.shoppers.len() as u64) as usize;
        let tier = &mut self.shoppers[i].tier;
        *tier = match tier {
            CustomerTier::Standard => CustomerTier::Silver,
            _ => CustomerTier::Gold,
        };
        Generated::User(self.user_event(i, UserEventType::Updated, now))
    }

    fn schedule(&mut self, due: i64, step: Step) {
        self.sequence += 1;
        self.pending.push(Reverse((due, self.sequence, step)));
    }

    fn delay(&mut self, lo_ms: i64, hi_ms: i64) -> i64 {
        ((self.rng.between(lo_ms, hi_ms) as f64) * self.config.lifecycle_scale).round() as i64
    }

    fn click(&mut self, now: i64) -> Generated {
        let user = self.rng.below(self.shoppers.len() as u64) as usize;
        let expired = self.shoppers[user]
            .session
            .as_ref()
            .is_none_or(|s| now - s.started > s.length_ms);
        if expired {
            let session = Session {
                id: format!("sess_{}", &self.rng.uuid().replace('-', "")[..12]),
                started: now,
                length_ms: self.rng.between(5, 30) * 60_000,
                device: *self.rng.pick(&[
                    DeviceType::Mobile,
                    DeviceType::Desktop,
                    DeviceType::Tablet,
                ]),
                cart: Vec::new(),
            };
            self.shoppers[user].session = Some(session);
        }
        let cart_empty = self.shoppers[user]
            .session
            .as_ref()
            .is_none_or(|s| s.cart.is_empty());
        let (remove, purchase) = if cart_empty { (0, 0) } else { (5, 10) };
        let event_type = self
            .rng
            .weighted(&[
                (EventType::PageView, 60),
                (EventType::AddToCart, 20),
                (EventType::Purchase, purchase),
                (EventType::RemoveFromCart, remove),
                (EventType::Search, 5),
            ])
            .unwrap_or(EventType::PageView);
        let random_product = self.rng.below(CATALOGUE.len() as u64) as usize;
        let event_id = self.rng.uuid();
        let session = self.shoppers[user].session.as_mut().expect("made above");
        let product = match event_type {
            EventType::PageView => Some(random_product),
            EventType::AddToCart => {
                session.cart.push(random_product);
                Some(random_product)
            }
            EventType::RemoveFromCart => session.cart.pop(),
            EventType::Purchase => Some(session.cart.remove(0)),
            EventType::Search => None,
        };
        let (session_id, device) = (session.id.clone(), session.device);
        let v1 = UserEventV1 {
            event_id,
            user_id: self.shoppers[user].id.clone(),
            event_type,
            timestamp: now,
            session_id,
        };
        if event_type == EventType::Purchase
            && let Some(product) = product
        {
            self.place_order(user, product, now);
        }
        *self.stats.clicks.entry(event_type.as_str()).or_default() += 1;
        let v2 = match self.config.schema {
            SchemaMode::V1 => false,
            SchemaMode::V2 => true,
            SchemaMode::Dual => {
                self.turn_v2 = !self.turn_v2;
                !self.turn_v2
            }
        };
        if !v2 {
            self.stats.v1 += 1;
            return Generated::Click(Click::V1(v1));
        }
        self.stats.v2 += 1;
        let p = product.map(|i| CATALOGUE[i]);
        Generated::Click(Click::V2(UserEventV2 {
            product_id: p.map(|p| p.id.into()),
            product_name: p.map(|p| p.name.into()),
            price: p.map(|p| p.price),
            category: p.map(|p| p.category.into()),
            device_type: Some(device),
            country: Some(self.shoppers[user].country.into()),
            ..UserEventV2::from(v1)
        }))
    }

    fn place_order(&mut self, user: usize, product: usize, now: i64) {
        let n = self.next_order;
        self.next_order += 1;
        let method = self
            .rng
            .weighted(&[
                (PaymentMethod::Card, 60),
                (PaymentMethod::Paypal, 20),
                (PaymentMethod::BankTransfer, 10),
                (PaymentMethod::GiftCard, 5),
                (PaymentMethod::Other, 5),
            ])
            .unwrap_or(PaymentMethod::Card);
        self.orders.insert(
            n,
            OpenOrder {
                id: format!("ord_{n:08}"),
                payment_id: format!("pay_{n:08}"),
                user,
                product,
                method,
            },
        );
        // Placed now, with the stock change; the payment starts soon after.
        let placed = self.order_event(n, OrderEventType::Placed, now);
        self.startup.push_back(Generated::Order(placed));
        self.stock[product] -= 1;
        if self.stock[product] < 20 {
            self.stock[product] += 500;
        }
        let inventory = ProductEvent {
            event_id: self.rng.uuid(),
            event_type: ProductEventType::InventoryChanged,
            product_id: CATALOGUE[product].id.into(),
            timestamp: now,
            name: None,
            category: None,
            price: None,
            stock_level: Some(self.stock[product]),
            stock_delta: Some(-1),
        };
        self.startup.push_back(Generated::Product(inventory));
        let due = now + self.delay(1_000, 3_000);
        self.schedule(due, Step::PaymentInitiated { order: n });
    }

    fn order_event(&mut self, n: u64, event_type: OrderEventType, now: i64) -> OrderEvent {
        let o = &self.orders[&n];
        let p = CATALOGUE[o.product];
        let (order_id, user_id) = (o.id.clone(), self.shoppers[o.user].id.clone());
        let shipped = matches!(
            event_type,
            OrderEventType::Shipped | OrderEventType::Delivered
        );
        let carrier = shipped.then(|| CARRIERS[(n % CARRIERS.len() as u64) as usize].to_owned());
        OrderEvent {
            event_id: self.rng.uuid(),
            event_type,
            tracking_number: carrier.as_ref().map(|c| format!("{c}-{n:010}")),
            carrier,
            order_id,
            user_id,
            timestamp: now,
            items: vec![OrderItem {
                product_id: p.id.into(),
                category: p.category.into(),
                quantity: 1,
                unit_price: p.price,
            }],
            total: p.price,
            currency: CURRENCY.into(),
        }
    }

    fn payment_event(&mut self, n: u64, event_type: PaymentEventType, now: i64) -> PaymentEvent {
        let failure_reason = (event_type == PaymentEventType::Failed)
            .then(|| (*self.rng.pick(&FAILURES)).to_owned());
        let o = &self.orders[&n];
        PaymentEvent {
            event_id: self.rng.uuid(),
            event_type,
            payment_id: o.payment_id.clone(),
            order_id: o.id.clone(),
            user_id: self.shoppers[o.user].id.clone(),
            timestamp: now,
            amount: CATALOGUE[o.product].price,
            currency: CURRENCY.into(),
            method: o.method,
            failure_reason,
        }
    }

    fn step(&mut self, step: Step, due: i64) -> Generated {
        match step {
            Step::PaymentInitiated { order } => {
                let next = due + self.delay(2_000, 10_000);
                self.schedule(next, Step::PaymentSettled { order });
                Generated::Payment(self.payment_event(order, PaymentEventType::Initiated, due))
            }
            Step::PaymentSettled { order } => {
                if self.rng.chance(self.config.payment_failure_rate) {
                    self.stats.payments_failed += 1;
                    let event = self.payment_event(order, PaymentEventType::Failed, due);
                    self.orders.remove(&order);
                    Generated::Payment(event)
                } else {
                    let next = due + self.delay(500, 1_500);
                    self.schedule(next, Step::Order { order, step: 1 });
                    Generated::Payment(self.payment_event(order, PaymentEventType::Completed, due))
                }
            }
            Step::Order { order, step } => {
                let event_type = match step {
                    1 => OrderEventType::Confirmed,
                    2 => OrderEventType::Shipped,
                    _ => OrderEventType::Delivered,
                };
                let event = self.order_event(order, event_type, due);
                match step {
                    1 => {
                        let next = due + self.delay(30_000, 120_000);
                        self.schedule(next, Step::Order { order, step: 2 });
                    }
                    2 => {
                        let next = due + self.delay(120_000, 300_000);
                        self.schedule(next, Step::Order { order, step: 3 });
                    }
                    _ => {
                        self.stats.delivered += 1;
                        self.orders.remove(&order);
                    }
                }
                Generated::Order(event)
            }
        }
    }
}

/// Avro encoders (Confluent wire format) of every generated event, schemas
/// registered on first use.
#[derive(Clone)]
pub struct Encoder {
    clicks_v1: AvroSerde<UserEventV1>,
    clicks_v2: AvroSerde<UserEventV2>,
    users: AvroSerde<UserEvent>,
    products: AvroSerde<ProductEvent>,
    orders: AvroSerde<OrderEvent>,
    payments: AvroSerde<PaymentEvent>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

impl Encoder {
    /// Encoders using `registry`.
    pub fn new(registry: Arc<SchemaRegistryClient>) -> Self {
        Encoder {
            clicks_v1: AvroSerde::for_event(registry.clone()).auto_register(true),
            clicks_v2: AvroSerde::for_event(registry.clone()).auto_register(true),
            users: AvroSerde::for_event(registry.clone()).auto_register(true),
            products: AvroSerde::for_event(registry.clone()).auto_register(true),
            orders: AvroSerde::for_event(registry.clone()).auto_register(true),
            payments: AvroSerde::for_event(registry).auto_register(true),
        }
    }

    /// The value bytes of `event`.
    pub fn encode(&self, event: &Generated) -> Result<Vec<u8>, SerdeError> {
        let bytes = match event {
            Generated::Click(Click::V1(e)) => self.clicks_v1.serialize(e)?,
            Generated::Click(Click::V2(e)) => self.clicks_v2.serialize(e)?,
            Generated::User(e) => self.users.serialize(e)?,
            Generated::Product(e) => self.products.serialize(e)?,
            Generated::Order(e) => self.orders.serialize(e)?,
            Generated::Payment(e) => self.payments.serialize(e)?,
        };
        Ok(bytes.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: GeneratorConfig, n: usize) -> Vec<Generated> {
        let mut g = Generator::new(config);
        let mut out: Vec<Generated> = (0..n).map(|i| g.next(1_000_000 + i as i64 * 50)).collect();
        out.extend(g.drain());
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        let config = GeneratorConfig::default();
        let a = run(config.clone(), 3_000);
        assert_eq!(a, run(config.clone(), 3_000));
        let b = run(GeneratorConfig { seed: 7, ..config }, 3_000);
        assert_ne!(a, b);
    }

    #[test]
    fn carts_are_never_emptied_past_zero_and_weights_hold() {
        let config = GeneratorConfig {
            schema: SchemaMode::V2,
            users: 20,
            ..GeneratorConfig::default()
        };
        let events = run(config, 40_000);
        // Replay each session's cart from the v2 clicks.
        let mut carts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut types: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &events {
            let Generated::Click(Click::V2(c)) = e else {
                continue;
            };
            *types.entry(c.event_type.as_str()).or_default() += 1;
            let cart = carts.entry(c.session_id.clone()).or_default();
            match c.event_type {
                EventType::AddToCart => cart.push(c.product_id.clone().unwrap()),
                EventType::RemoveFromCart => {
                    assert_eq!(cart.pop(), c.product_id, "removed what was added last");
                }
                EventType::Purchase => {
                    assert!(!cart.is_empty(), "purchase with an empty cart: {c:?}");
                    assert_eq!(Some(cart.remove(0)), c.product_id);
                }
                EventType::PageView => assert!(c.product_id.is_some()),
                EventType::Search => assert!(c.product_id.is_none()),
            }
            assert!(c.device_type.is_some() && c.country.is_some());
            assert_eq!(c.price.is_some(), c.product_id.is_some());
        }
        let total: u64 = types.values().sum();
        let share = |t: &str| types[t] as f64 / total as f64;
        // Page views are 60 of 100 with a full cart and 60 of 85 with an
        // empty one; search likewise.
        assert!((0.6..0.72).contains(&share("PAGE_VIEW")), "{types:?}");
        assert!((0.04..0.07).contains(&share("SEARCH")), "{types:?}");
        assert!(
            share("PURCHASE") > 0.03 && share("PURCHASE") < 0.11,
            "{types:?}"
        );
        assert!(share("REMOVE_FROM_CART") < share("PURCHASE"), "{types:?}");
    }

    #[test]
    fn every_purchase_becomes_an_order_that_is_paid_and_delivered_or_fails() {
        let mut g = Generator::new(GeneratorConfig {
            lifecycle_scale: 0.01,
            ..GeneratorConfig::default()
        });
        let mut events: Vec<Generated> = (0..20_000).map(|i| g.next(i * 20)).collect();
        events.extend(g.drain());
        assert_eq!(g.open_orders(), 0);
        // Users and products first.
        assert!(matches!(events[0], Generated::Product(_)));
        assert!(
            events[10..110]
                .iter()
                .all(|e| matches!(e, Generated::User(_)))
        );
        let purchases = events
            .iter()
            .filter(
                |e| matches!(e, Generated::Click(c) if c.as_v2().event_type == EventType::Purchase),
            )
            .count();
        let mut lifecycle: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut last_ts: BTreeMap<String, i64> = BTreeMap::new();
        for e in &events {
            let (order, step) = match e {
                Generated::Order(o) => (&o.order_id, o.event_type.as_str()),
                Generated::Payment(p) => (&p.order_id, p.event_type.as_str()),
                _ => continue,
            };
            let ts = e.timestamp();
            assert!(
                ts >= last_ts.get(order).copied().unwrap_or(0),
                "steps in time order"
            );
            last_ts.insert(order.clone(), ts);
            lifecycle
                .entry(order.clone())
                .or_default()
                .push(step.to_owned());
        }
        assert_eq!(lifecycle.len(), purchases);
        let ok = [
            "ORDER_PLACED",
            "PAYMENT_INITIATED",
            "PAYMENT_COMPLETED",
            "ORDER_CONFIRMED",
            "ORDER_SHIPPED",
            "ORDER_DELIVERED",
        ];
        let failed = ["ORDER_PLACED", "PAYMENT_INITIATED", "PAYMENT_FAILED"];
        let mut n_failed = 0;
        for steps in lifecycle.values() {
            if steps == &failed {
                n_failed += 1;
            } else {
                assert_eq!(steps, &ok);
            }
        }
        assert_eq!(n_failed, g.stats().payments_failed);
        assert!(n_failed > 0 && n_failed < purchases as u64 / 4);
        assert_eq!(g.stats().delivered as usize + n_failed as usize, purchases);
    }

    #[test]
    fn stats_count_what_was_emitted_even_when_stopped_right_after_a_purchase() {
        let mut g = Generator::new(GeneratorConfig::default());
        let mut emitted = Vec::new();
        // Stop at the first purchase click: its ORDER_PLACED is still queued.
        for i in 0.. {
            let e = g.next(i * 10);
            let purchase =
                matches!(&e, Generated::Click(c) if c.as_v2().event_type == EventType::Purchase);
            emitted.push(e);
            if purchase {
                break;
            }
        }
        let placed = |events: &[Generated]| {
            events
                .iter()
                .filter(
                    |e| matches!(e, Generated::Order(o) if o.event_type == OrderEventType::Placed),
                )
                .count() as u64
        };
        assert_eq!(g.stats().orders, placed(&emitted));
        assert_eq!(g.stats().total(), emitted.len() as u64);
        emitted.push(g.next(1_000_000_000));
        assert_eq!(g.stats().orders, placed(&emitted));
        assert_eq!(g.stats().orders, 1);
    }

    #[test]
    fn dual_write_alternates_schemas() {
        let events = run(GeneratorConfig::default(), 1_000);
        let clicks: Vec<bool> = events
            .iter()
            .filter_map(|e| match e {
                Generated::Click(Click::V1(_)) => Some(false),
                Generated::Click(Click::V2(_)) => Some(true),
                _ => None,
            })
            .collect();
        assert!(clicks.windows(2).all(|w| w[0] != w[1]));
        let only_v1 = run(
            GeneratorConfig {
                schema: SchemaMode::V1,
                ..GeneratorConfig::default()
            },
            500,
        );
        assert!(
            only_v1
                .iter()
                .all(|e| !matches!(e, Generated::Click(Click::V2(_))))
        );
    }

    #[test]
    fn uuids_look_like_version_4() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let u = rng.uuid();
            assert_eq!(u.len(), 36, "{u}");
            assert_eq!(&u[14..15], "4");
            assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        }
    }
}
