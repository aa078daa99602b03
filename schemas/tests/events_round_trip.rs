//! Every typed event round-trips through its schema, every shipped schema
//! parses (by brook's checker and by apache-avro), and the seed's v1 and
//! v2 read each other's data.

use apache_avro::types::Value;
use brook_schemas::avro::AvroSchema;
use brook_schemas::codec::{decode, decode_value, encode, parse_schema};
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::events::eventmart::*;
use brook_schemas::events::{Event, SCHEMA_FILES};

fn round_trip<T: Event>(value: T) {
    let schema = parse_schema(T::SCHEMA).unwrap();
    let bytes = encode(&schema, &value).unwrap_or_else(|e| panic!("{}: {e}", T::SUBJECT));
    let back: T = decode(&schema, &schema, &bytes).unwrap();
    assert_eq!(back, value, "{}", T::SUBJECT);
    // The datum is the schema's: it decodes generically as a record whose
    // field names are the schema's, in order.
    let Value::Record(fields) = decode_value(&schema, None, &bytes).unwrap() else {
        panic!("{} is not a record", T::SUBJECT)
    };
    let ours = AvroSchema::parse(T::SCHEMA).unwrap();
    let brook_schemas::avro::NamedKind::Record(expected) =
        &ours.named_type(ours.name().unwrap()).unwrap().kind
    else {
        panic!()
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = expected.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, expected);
    // Truncated data is an error, not a panic.
    for cut in 0..bytes.len() {
        let r = decode::<T>(&schema, &schema, &bytes[..cut]);
        assert!(
            r.is_err(),
            "{} cut at {cut} of {}: {r:?}",
            T::SUBJECT,
            bytes.len()
        );
    }
}

fn v1() -> UserEventV1 {
    UserEventV1 {
        event_id: "e-1".into(),
        user_id: "user_0001".into(),
        event_type: EventType::AddToCart,
        timestamp: 1_700_000_000_123,
        session_id: "s-1".into(),
    }
}

fn v2() -> UserEventV2 {
    UserEventV2 {
        product_id: Some("P-9".into()),
        product_name: Some("Kettle".into()),
        price: Some(39.5),
        category: Some("Home".into()),
        device_type: Some(DeviceType::Tablet),
        country: Some("NL".into()),
        ..UserEventV2::from(v1())
    }
}

#[test]
fn every_event_struct_round_trips_through_its_schema() {
    round_trip(v1());
    round_trip(v2());
    round_trip(UserEventV2::from(v1()));
    for event_type in EventType::ALL {
        round_trip(UserEventV1 { event_type, ..v1() });
    }
    round_trip(UserEvent {
        event_id: "e".into(),
        event_type: UserEventType::Registered,
        user_id: "u1".into(),
        timestamp: 1,
        email: Some("a@example.com".into()),
        name: Some("Ada".into()),
        country: Some("GB".into()),
        tier: Some(CustomerTier::Gold),
    });
    round_trip(UserEvent {
        event_id: "e".into(),
        event_type: UserEventType::Deleted,
        user_id: "u1".into(),
        timestamp: 2,
        email: None,
        name: None,
        country: None,
        tier: None,
    });
    round_trip(ProductEvent {
        event_id: "e".into(),
        event_type: ProductEventType::InventoryChanged,
        product_id: "P1".into(),
        timestamp: 3,
        name: None,
        category: Some("Books".into()),
        price: Some(12.0),
        stock_level: Some(40),
        stock_delta: Some(-2),
    });
    round_trip(OrderEvent {
        event_id: "e".into(),
        event_type: OrderEventType::Placed,
        order_id: "O1".into(),
        user_id: "u1".into(),
        timestamp: 4,
        items: vec![
            OrderItem {
                product_id: "P1".into(),
                category: "Books".into(),
                quantity: 2,
                unit_price: 12.0,
            },
            OrderItem {
                product_id: "P2".into(),
                category: "Home".into(),
                quantity: 1,
                unit_price: 39.5,
            },
        ],
        total: 63.5,
        currency: "EUR".into(),
        carrier: None,
        tracking_number: None,
    });
    round_trip(OrderEvent {
        event_id: "e".into(),
        event_type: OrderEventType::Shipped,
        order_id: "O1".into(),
        user_id: "u1".into(),
        timestamp: 5,
        items: vec![],
        total: 0.0,
        currency: "USD".into(),
        carrier: Some("DHL".into()),
        tracking_number: Some("T-1".into()),
    });
    for &method in PaymentMethod::ALL {
        round_trip(PaymentEvent {
            event_id: "e".into(),
            event_type: PaymentEventType::Failed,
            payment_id: "pay-1".into(),
            order_id: "O1".into(),
            user_id: "u1".into(),
            timestamp: 6,
            amount: 63.5,
            currency: "EUR".into(),
            method,
            failure_reason: Some("card declined".into()),
        });
    }
    for &event_type in NotificationEventType::ALL {
        round_trip(NotificationEvent {
            event_id: "e".into(),
            event_type,
            notification_id: "n1".into(),
            user_id: "u1".into(),
            timestamp: 7,
            template: "order-shipped".into(),
            message: "Your order is on its way".into(),
            order_id: Some("O1".into()),
        });
    }
    round_trip(AuditEvent {
        audit_id: "a1".into(),
        timestamp: 8,
        recorded_at: 9,
        source_topic: "eventmart-orders".into(),
        source_partition: 3,
        source_offset: 1234,
        event_type: "ORDER_PLACED".into(),
        entity_id: "O1".into(),
        actor: Some("u1".into()),
        schema_id: Some(5),
        summary: "order O1 placed: 63.50 EUR".into(),
    });
}

#[test]
fn every_shipped_schema_parses_and_symbols_match_the_rust_enums() {
    assert_eq!(SCHEMA_FILES.len(), 8);
    for file in SCHEMA_FILES {
        AvroSchema::parse(file.text).unwrap_or_else(|e| panic!("{}: {e}", file.subject));
        parse_schema(file.text).unwrap_or_else(|e| panic!("{}: {e}", file.subject));
    }
    let orders = AvroSchema::parse(OrderEvent::SCHEMA).unwrap();
    let brook_schemas::avro::NamedKind::Enum { symbols, .. } = &orders
        .named_type("com.eventmart.orders.OrderEventType")
        .unwrap()
        .kind
    else {
        panic!()
    };
    let ours: Vec<&str> = OrderEventType::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(symbols, &ours);
}

#[test]
fn v1_data_read_as_v2_gets_defaults_and_v2_data_read_as_v1_drops_new_fields() {
    let s1 = parse_schema(UserEventV1::SCHEMA).unwrap();
    let s2 = parse_schema(UserEventV2::SCHEMA).unwrap();
    let old = encode(&s1, &v1()).unwrap();
    let as_v2: UserEventV2 = decode(&s1, &s2, &old).unwrap();
    assert_eq!(as_v2, UserEventV2::from(v1()));
    let new = encode(&s2, &v2()).unwrap();
    let as_v1: UserEventV1 = decode(&s2, &s1, &new).unwrap();
    assert_eq!(as_v1, v1());
    // Reading with the wrong writer schema is an error, not garbage.
    assert!(decode::<UserEventV2>(&s1, &s2, &new).is_err());
}

#[test]
fn a_type_whose_name_is_not_the_records_still_decodes() {
    // The fast path wants the struct's serde name to be the record's; any
    // other type goes through apache-avro's Value and must give the same.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Renamed {
        event_id: String,
        user_id: String,
        event_type: EventType,
        timestamp: i64,
        session_id: String,
    }
    let schema = parse_schema(UserEventV1::SCHEMA).unwrap();
    let bytes = encode(&schema, &v1()).unwrap();
    let read: Renamed = decode(&schema, &schema, &bytes).unwrap();
    assert_eq!(read.session_id, v1().session_id);
    assert_eq!(read.event_type, v1().event_type);
    let generic: serde_json::Value = decode(&schema, &schema, &bytes).unwrap();
    assert_eq!(generic["user_id"], "user_0001");
}
