//! The Avro serde against brook's registry server over HTTP: registration,
//! resolution between the seed's v1 and v2, every kind of bad payload, the
//! converter's own encoder and decoder on the same bytes, basic auth, and a
//! registry restarted on its store.

use std::sync::Arc;

use apache_avro::types::Value;
use brook_connectors::avro::{
    AvroSerde, RegistryClientConfig, SchemaRegistryClient, frame, split_wire_format,
};
use brook_schemas::events::Event;
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::events::eventmart::{OrderEvent, OrderEventType, OrderItem};
use brook_schemas::registry::{MemoryStore, Registry};
use brook_schemas::server::{RegistryServer, ServerConfig};
use brook_topology::serdes::{Serde, SerdeError};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

fn server_on(store: MemoryStore, auth: Option<(&str, &str)>) -> RegistryServer {
    let registry = Arc::new(Registry::open(Box::new(store)).unwrap());
    RegistryServer::start(
        registry,
        ServerConfig {
            basic_auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..ServerConfig::any_loopback_port()
        },
    )
    .unwrap()
}

fn client(server: &RegistryServer) -> Arc<SchemaRegistryClient> {
    SchemaRegistryClient::new(RegistryClientConfig::new(server.url())).unwrap()
}

fn v1(n: u32) -> UserEventV1 {
    UserEventV1 {
        event_id: format!("e-{n}"),
        user_id: format!("user_{n:04}"),
        event_type: EventType::PageView,
        timestamp: 1_700_000_000_000 + i64::from(n),
        session_id: "s".into(),
    }
}

fn v2(n: u32) -> UserEventV2 {
    UserEventV2 {
        product_id: Some(format!("P{n}")),
        product_name: Some("Lamp".into()),
        price: Some(19.99),
        category: Some("Home".into()),
        device_type: Some(DeviceType::Mobile),
        country: Some("DE".into()),
        ..UserEventV2::from(v1(n))
    }
}

#[test]
fn v1_and_v2_producers_and_consumers_read_each_other() {
    let server = server_on(MemoryStore::new(), None);
    let c = client(&server);
    let s1 = AvroSerde::<UserEventV1>::for_event(c.clone());
    let s2 = AvroSerde::<UserEventV2>::for_event(c.clone());
    assert_eq!(s1.subject(), "ecommerce-events-value");
    let old = s1.serialize(&v1(1)).unwrap().unwrap();
    let new = s2.serialize(&v2(2)).unwrap().unwrap();
    assert_eq!(split_wire_format(&old).unwrap().0, 1);
    assert_eq!(split_wire_format(&new).unwrap().0, 2);
    // A fresh client (a consumer in another process) knows no ids yet.
    let other = client(&server);
    let r1 = AvroSerde::<UserEventV1>::for_event(other.clone());
    let r2 = AvroSerde::<UserEventV2>::for_event(other);
    assert_eq!(
        r2.deserialize(Some(&old)).unwrap(),
        UserEventV2::from(v1(1))
    );
    assert_eq!(r2.deserialize(Some(&new)).unwrap(), v2(2));
    assert_eq!(r1.deserialize(Some(&new)).unwrap(), v1(2));
    assert_eq!(r1.deserialize(Some(&old)).unwrap(), v1(1));
}

#[test]
fn bad_payloads_are_errors_that_say_what_and_never_panic() {
    let server = server_on(MemoryStore::new(), None);
    let serde = AvroSerde::<UserEventV2>::for_event(client(&server));
    let good = serde.serialize(&v2(1)).unwrap().unwrap();
    let reason = |bytes: Option<&[u8]>| match serde.deserialize(bytes) {
        Err(SerdeError::Invalid { format, reason, .. }) => {
            assert_eq!(format, "Avro");
            reason
        }
        other => panic!("{bytes:?}: {other:?}"),
    };
    assert!(reason(Some(b"{\"json\": 1}")).contains("wrong magic byte 0x7b"));
    assert!(reason(Some(&[0, 0, 1])).contains("too short"));
    let unknown = reason(Some(&frame(999, &good[5..])));
    assert!(
        unknown.contains("schema id 999") && unknown.contains("40403"),
        "{unknown}"
    );
    let truncated = reason(Some(&good[..good.len() - 3]));
    assert!(truncated.contains("corrupt"), "{truncated}");
    let mut trailing = good.clone();
    trailing.push(7);
    assert!(reason(Some(&trailing)).contains("left over"));
    let mut bad_union = good.clone();
    // The first union index after v1's fields (header 5, "e-1" 4,
    // "user_0001" 10, enum 1, timestamp 6, "s" 2): 63 is no branch.
    let at = 5 + 4 + 10 + 1 + 6 + 2;
    assert_eq!(bad_union[at], 2, "branch 1 (string), zigzag-encoded");
    bad_union[at] = 0x7e;
    let err = reason(Some(&bad_union));
    assert!(err.contains("union index 63 of 2 branches"), "{err}");
    // Every truncation and every single-byte corruption is an error or a
    // value, never a panic.
    for cut in 0..good.len() {
        let _ = serde.deserialize(Some(&good[..cut]));
    }
    for i in 5..good.len() {
        for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bytes = good.clone();
            bytes[i] = b;
            let _ = serde.deserialize(Some(&bytes));
        }
    }
    assert!(matches!(
        serde.deserialize(None),
        Err(SerdeError::UnexpectedNull { .. })
    ));
}

#[test]
fn an_incompatible_schema_is_refused_at_registration_with_the_reason() {
    let server = server_on(MemoryStore::new(), None);
    let c = client(&server);
    AvroSerde::<UserEventV1>::for_event(c.clone())
        .serialize(&v1(1))
        .unwrap();
    // v3 makes session_id an int: no reader of v1 data can do that.
    let v3 = UserEventV1::SCHEMA.replace(
        r#""name": "session_id",
      "type": "string""#,
        r#""name": "session_id",
      "type": "int""#,
    );
    assert_ne!(v3, UserEventV1::SCHEMA);
    let serde = AvroSerde::<serde_json::Value>::new(c, "ecommerce-events-value", &v3).unwrap();
    let err = serde
        .serialize(&serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("409") && err.contains("session_id"), "{err}");
    // With auto-registration off, an unregistered schema is refused too.
    let c2 = client(&server);
    let strict = AvroSerde::<UserEventV2>::for_event(c2).auto_register(false);
    let err = strict.serialize(&v2(1)).unwrap_err().to_string();
    assert!(err.contains("40403"), "{err}");
}

fn order() -> OrderEvent {
    OrderEvent {
        event_id: "e".into(),
        event_type: OrderEventType::Placed,
        order_id: "O-1".into(),
        user_id: "u".into(),
        timestamp: 1_700_000_000_000,
        items: vec![OrderItem {
            product_id: "P".into(),
            category: "Books".into(),
            quantity: 3,
            unit_price: 5.0,
        }],
        total: 15.0,
        currency: "EUR".into(),
        carrier: None,
        tracking_number: None,
    }
}

#[test]
fn the_converters_own_encoder_and_decoder_agree_with_the_serde() {
    let server = server_on(MemoryStore::new(), None);
    let serde = AvroSerde::<OrderEvent>::for_event(client(&server));
    let ours = serde.serialize(&order()).unwrap().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let settings = SrSettings::new(server.url());
        let decoder = AvroDecoder::new(settings.clone());
        let decoded = decoder.decode(Some(&ours)).await.unwrap();
        let Value::Record(fields) = decoded.value else {
            panic!("{:?}", decoded.value)
        };
        assert_eq!(
            fields[2],
            ("order_id".to_string(), Value::String("O-1".into()))
        );
        assert_eq!(fields[6].0, "total");
        assert_eq!(fields[6].1, Value::Double(15.0));
        // The converter registers through the same endpoint and frames the
        // same way; our serde reads its bytes.
        let encoder = AvroEncoder::new(settings);
        let strategy = SubjectNameStrategy::TopicNameStrategy("eventmart-orders".into(), false);
        let theirs = encoder.encode_struct(order(), &strategy).await.unwrap();
        assert_eq!(theirs, ours);
        assert_eq!(serde.deserialize_async(&theirs).await.unwrap(), order());
    });
}

#[test]
fn basic_auth_is_required_when_configured() {
    let server = server_on(MemoryStore::new(), Some(("app", "s3cret")));
    let anonymous = AvroSerde::<OrderEvent>::for_event(client(&server));
    let err = anonymous.serialize(&order()).unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let wrong = SchemaRegistryClient::new(
        RegistryClientConfig::new(server.url()).basic_auth("app", "guess"),
    )
    .unwrap();
    assert!(
        AvroSerde::<OrderEvent>::for_event(wrong)
            .serialize(&order())
            .is_err()
    );
    let right = SchemaRegistryClient::new(
        RegistryClientConfig::new(server.url()).basic_auth("app", "s3cret"),
    )
    .unwrap();
    let serde = AvroSerde::<OrderEvent>::for_event(right);
    let bytes = serde.serialize(&order()).unwrap().unwrap();
    assert_eq!(serde.deserialize(Some(&bytes)).unwrap(), order());
}

#[test]
fn ids_survive_a_registry_restart_on_its_store() {
    let store = MemoryStore::new();
    let old = {
        let server = server_on(store.clone(), None);
        let c = client(&server);
        AvroSerde::<UserEventV1>::for_event(c.clone())
            .serialize(&v1(5))
            .unwrap()
            .unwrap()
    };
    let server = server_on(store, None);
    let c = client(&server);
    let reader = AvroSerde::<UserEventV2>::for_event(c.clone());
    assert_eq!(
        reader.deserialize(Some(&old)).unwrap(),
        UserEventV2::from(v1(5))
    );
    let new = reader.serialize(&v2(6)).unwrap().unwrap();
    assert_eq!(split_wire_format(&new).unwrap().0, 2);
    assert_eq!(split_wire_format(&old).unwrap().0, 1);
}
