//! Typed events for the schemas under `schemas/subjects/`.
//!
//! Every struct here is the Rust side of one `.avsc` file: field names,
//! order and types match, Avro enums are Rust enums with the same symbols,
//! nullable unions are `Option`s and `timestamp-millis` is epoch
//! milliseconds in an `i64`. A struct's serde name is its record's name
//! (`UserEventV2` is `#[serde(rename = "UserEvent")]`), which lets the
//! decoder go straight from bytes to the struct. [`Event`] ties a struct to its subject,
//! version and schema text, which the Avro serde registers and reads with.
//!
//! - [`ecommerce`]: the seed's `user_event`, version 1 and version 2 (v2
//!   adds product, price, category, device and country, all optional).
//! - [`eventmart`]: EventMart's services — users, products, orders,
//!   payments, notifications and audit.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed event with its Avro schema.
pub trait Event:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The registry subject its schema is registered under
    /// (`<topic>-value`, Confluent's topic name strategy).
    const SUBJECT: &'static str;
    /// The schema version this struct is.
    const VERSION: u32;
    /// The schema's text (the `.avsc` file).
    const SCHEMA: &'static str;
    /// The record key: the entity whose events must stay in order.
    fn key(&self) -> &str;
}

/// One `.avsc` file shipped with brook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFile {
    /// The subject (the directory name).
    pub subject: &'static str,
    /// The version (`v<N>.avsc`).
    pub version: u32,
    /// The schema.
    pub text: &'static str,
}

macro_rules! schema_files {
    ($(($subject:literal, $version:literal)),* $(,)?) => {
        /// Every schema under `schemas/subjects/`, by subject and version.
        pub const SCHEMA_FILES: &[SchemaFile] = &[$(SchemaFile {
            subject: $subject,
            version: $version,
            text: include_str!(concat!("../subjects/", $subject, "/v", $version, ".avsc")),
        }),*];
    };
}

schema_files![
    ("ecommerce-events-value", 1),
    ("ecommerce-events-value", 2),
    ("eventmart-users-value", 1),
    ("eventmart-products-value", 1),
    ("eventmart-orders-value", 1),
    ("eventmart-payments-value", 1),
    ("eventmart-notifications-value", 1),
    ("eventmart-audit-value", 1),
];

/// The shipped schema of `subject` at `version`.
pub fn schema_file(subject: &str, version: u32) -> Option<&'static SchemaFile> {
    SCHEMA_FILES
        .iter()
        .find(|f| f.subject == subject && f.version == version)
}

/// The seed's e-commerce clickstream event, `user_event` v1 and v2, on
/// the `ecommerce-events` topic.
pub mod ecommerce {
    use serde::{Deserialize, Serialize};

    use super::Event;

    /// The topic the events go to.
    pub const TOPIC: &str = "ecommerce-events";

    /// What the user did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    #[allow(missing_docs)]
    pub enum EventType {
        PageView,
        AddToCart,
        RemoveFromCart,
        Purchase,
        Search,
    }

    impl EventType {
        /// Every event type.
        pub const ALL: [EventType; 5] = [
            EventType::PageView,
            EventType::AddToCart,
            EventType::RemoveFromCart,
            EventType::Purchase,
            EventType::Search,
        ];

        /// The Avro symbol.
        pub fn as_str(self) -> &'static str {
            match self {
                EventType::PageView => "PAGE_VIEW",
                EventType::AddToCart => "ADD_TO_CART",
                EventType::RemoveFromCart => "REMOVE_FROM_CART",
                EventType::Purchase => "PURCHASE",
                EventType::Search => "SEARCH",
            }
        }
    }

    /// The device used (v2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    #[allow(missing_docs)]
    pub enum DeviceType {
        Mobile,
        Desktop,
        Tablet,
    }

    impl DeviceType {
        /// The Avro symbol.
        pub fn as_str(self) -> &'static str {
            match self {
                DeviceType::Mobile => "MOBILE",
                DeviceType::Desktop => "DESKTOP",
                DeviceType::Tablet => "TABLET",
            }
        }
    }

    /// `com.ecommerce.events.UserEvent`, version 1.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "UserEvent")]
    pub struct UserEventV1 {
        /// Unique event identifier (UUID).
        pub event_id: String,
        /// User identifier.
        pub user_id: String,
        /// Type of user action.
        pub event_type: EventType,
        /// Event timestamp (epoch milliseconds).
        pub timestamp: i64,
        /// User session identifier.
        pub session_id: String,
    }

    /// `com.ecommerce.events.UserEvent`, version 2: v1 plus optional
    /// product, price, category, device and country.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "UserEvent")]
    pub struct UserEventV2 {
        /// Unique event identifier (UUID).
        pub event_id: String,
        /// User identifier.
        pub user_id: String,
        /// Type of user action.
        pub event_type: EventType,
        /// Event timestamp (epoch milliseconds).
        pub timestamp: i64,
        /// User session identifier.
        pub session_id: String,
        /// Product ID (if applicable).
        pub product_id: Option<String>,
        /// Product name.
        pub product_name: Option<String>,
        /// Product price.
        pub price: Option<f64>,
        /// Product category.
        pub category: Option<String>,
        /// Device used.
        pub device_type: Option<DeviceType>,
        /// User country code.
        pub country: Option<String>,
    }

    impl From<UserEventV1> for UserEventV2 {
        /// What a v2 reader sees of v1 data: the new fields at their
        /// defaults (null).
        fn from(v1: UserEventV1) -> Self {
            UserEventV2 {
                event_id: v1.event_id,
                user_id: v1.user_id,
                event_type: v1.event_type,
                timestamp: v1.timestamp,
                session_id: v1.session_id,
                product_id: None,
                product_name: None,
                price: None,
                category: None,
                device_type: None,
                country: None,
            }
        }
    }

    impl From<UserEventV2> for UserEventV1 {
        /// What a v1 reader sees of v2 data: the new fields ignored.
        fn from(v2: UserEventV2) -> Self {
            UserEventV1 {
                event_id: v2.event_id,
                user_id: v2.user_id,
                event_type: v2.event_type,
                timestamp: v2.timestamp,
                session_id: v2.session_id,
            }
        }
    }

    const SUBJECT: &str = "ecommerce-events-value";

    impl Event for UserEventV1 {
        const SUBJECT: &'static str = SUBJECT;
        const VERSION: u32 = 1;
        const SCHEMA: &'static str = include_str!("../subjects/ecommerce-events-value/v1.avsc");
        fn key(&self) -> &str {
            &self.user_id
        }
    }

    impl Event for UserEventV2 {
        const SUBJECT: &'static str = SUBJECT;
        const VERSION: u32 = 2;
        const SCHEMA: &'static str = include_str!("../subjects/ecommerce-events-value/v2.avsc");
        fn key(&self) -> &str {
            &self.user_id
        }
    }
}

/// EventMart's service events.
pub mod eventmart {
    use serde::{Deserialize, Serialize};

    use super::Event;

    macro_rules! symbols {
        ($(#[$doc:meta])* $name:ident { $($variant:ident => $symbol:literal),* $(,)? }) => {
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
            #[allow(missing_docs)]
            pub enum $name {
                $(#[serde(rename = $symbol)] $variant),*
            }

            impl $name {
                /// Every symbol, in schema order.
                pub const ALL: &'static [$name] = &[$($name::$variant),*];

                /// The Avro symbol.
                pub fn as_str(self) -> &'static str {
                    match self {
                        $($name::$variant => $symbol),*
                    }
                }
            }
        };
    }

    symbols!(
        /// What happened to a user.
        UserEventType { Registered => "USER_REGISTERED", Updated => "USER_UPDATED", Deleted => "USER_DELETED" }
    );
    symbols!(
        /// A customer's loyalty tier.
        CustomerTier { Standard => "STANDARD", Silver => "SILVER", Gold => "GOLD" }
    );
    symbols!(
        /// What happened to a product.
        ProductEventType { Created => "PRODUCT_CREATED", Updated => "PRODUCT_UPDATED", InventoryChanged => "INVENTORY_CHANGED" }
    );
    symbols!(
        /// An order's lifecycle step.
        OrderEventType { Placed => "ORDER_PLACED", Confirmed => "ORDER_CONFIRMED", Shipped => "ORDER_SHIPPED", Delivered => "ORDER_DELIVERED" }
    );
    symbols!(
        /// A payment's lifecycle step.
        PaymentEventType { Initiated => "PAYMENT_INITIATED", Completed => "PAYMENT_COMPLETED", Failed => "PAYMENT_FAILED" }
    );
    symbols!(
        /// How an order was paid.
        PaymentMethod { Card => "CARD", Paypal => "PAYPAL", BankTransfer => "BANK_TRANSFER", GiftCard => "GIFT_CARD", Other => "OTHER" }
    );
    symbols!(
        /// Which channel a notification went out on.
        NotificationEventType { EmailSent => "EMAIL_SENT", SmsSent => "SMS_SENT", PushNotificationSent => "PUSH_NOTIFICATION_SENT" }
    );

    /// `com.eventmart.users.UserEvent`: user-registered, user-updated,
    /// user-deleted.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct UserEvent {
        pub event_id: String,
        pub event_type: UserEventType,
        pub user_id: String,
        pub timestamp: i64,
        pub email: Option<String>,
        pub name: Option<String>,
        pub country: Option<String>,
        pub tier: Option<CustomerTier>,
    }

    /// `com.eventmart.products.ProductEvent`: product-created,
    /// product-updated, inventory-changed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct ProductEvent {
        pub event_id: String,
        pub event_type: ProductEventType,
        pub product_id: String,
        pub timestamp: i64,
        pub name: Option<String>,
        pub category: Option<String>,
        pub price: Option<f64>,
        pub stock_level: Option<i32>,
        pub stock_delta: Option<i32>,
    }

    /// One line of an order.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct OrderItem {
        pub product_id: String,
        pub category: String,
        pub quantity: i32,
        pub unit_price: f64,
    }

    /// `com.eventmart.orders.OrderEvent`: order-placed, order-confirmed,
    /// order-shipped, order-delivered.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct OrderEvent {
        pub event_id: String,
        pub event_type: OrderEventType,
        pub order_id: String,
        pub user_id: String,
        pub timestamp: i64,
        pub items: Vec<OrderItem>,
        pub total: f64,
        pub currency: String,
        pub carrier: Option<String>,
        pub tracking_number: Option<String>,
    }

    /// `com.eventmart.payments.PaymentEvent`: payment-initiated,
    /// payment-completed, payment-failed.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct PaymentEvent {
        pub event_id: String,
        pub event_type: PaymentEventType,
        pub payment_id: String,
        pub order_id: String,
        pub user_id: String,
        pub timestamp: i64,
        pub amount: f64,
        pub currency: String,
        pub method: PaymentMethod,
        pub failure_reason: Option<String>,
    }

    /// `com.eventmart.notifications.NotificationEvent`: email-sent,
    /// sms-sent, push-notification-sent.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct NotificationEvent {
        pub event_id: String,
        pub event_type: NotificationEventType,
        pub notification_id: String,
        pub user_id: String,
        pub timestamp: i64,
        pub template: String,
        pub message: String,
        pub order_id: Option<String>,
    }

    /// `com.eventmart.audit.AuditEvent`: one per audited event.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct AuditEvent {
        pub audit_id: String,
        pub timestamp: i64,
        pub recorded_at: i64,
        pub source_topic: String,
        pub source_partition: i32,
        pub source_offset: i64,
        pub event_type: String,
        pub entity_id: String,
        pub actor: Option<String>,
        pub schema_id: Option<i32>,
        pub summary: String,
    }

    macro_rules! event {
        ($ty:ident, $subject:literal, $key:ident) => {
            impl Event for $ty {
                const SUBJECT: &'static str = $subject;
                const VERSION: u32 = 1;
                const SCHEMA: &'static str =
                    include_str!(concat!("../subjects/", $subject, "/v1.avsc"));
                fn key(&self) -> &str {
                    &self.$key
                }
            }
        };
    }

    event!(UserEvent, "eventmart-users-value", user_id);
    event!(ProductEvent, "eventmart-products-value", product_id);
    event!(OrderEvent, "eventmart-orders-value", order_id);
    event!(PaymentEvent, "eventmart-payments-value", order_id);
    event!(NotificationEvent, "eventmart-notifications-value", user_id);
    event!(AuditEvent, "eventmart-audit-value", entity_id);
}
