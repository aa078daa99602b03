//! Avro records through a topology: v1 and v2 producers write the seed's
//! `ecommerce-events` at once, a v2 application reads everything (v1
//! records with defaults), a v1 application reads everything (v2 fields
//! ignored), and bad records — not Avro, an unknown schema id, a corrupt
//! datum — go to the dead-letter topic with the reason, while every good
//! record is processed.

use std::sync::Arc;

use brook_connectors::avro::{AvroSerde, RegistryClientConfig, SchemaRegistryClient, frame};
use brook_runtime::driver::TopologyTestDriver;
use brook_runtime::task::dead_letter_error;
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::server::RegistryServer;
use brook_topology::serdes::{Serde, Utf8};
use brook_topology::{Consumed, Produced, StreamsBuilder};

fn registry() -> RegistryServer {
    RegistryServer::start_in_memory().unwrap()
}

fn client(server: &RegistryServer) -> Arc<SchemaRegistryClient> {
    SchemaRegistryClient::new(RegistryClientConfig::new(server.url())).unwrap()
}

fn v1(n: u32, event_type: EventType) -> UserEventV1 {
    UserEventV1 {
        event_id: format!("e-{n}"),
        user_id: format!("user_{:04}", n % 3),
        event_type,
        timestamp: 1_000 + i64::from(n),
        session_id: format!("s-{n}"),
    }
}

fn v2(n: u32, event_type: EventType, country: &str) -> UserEventV2 {
    UserEventV2 {
        product_id: Some("P1".into()),
        product_name: Some("Mug".into()),
        price: Some(8.5),
        category: Some("Kitchen".into()),
        device_type: Some(DeviceType::Desktop),
        country: Some(country.into()),
        ..UserEventV2::from(v1(n, event_type))
    }
}

#[test]
fn dual_write_is_read_by_v1_and_v2_applications_and_bad_records_are_dead_lettered()
-> Result<(), Box<dyn std::error::Error>> {
    let server = registry();
    // The v2 application: event type and country (unknown for v1 data).
    let b = StreamsBuilder::new();
    b.stream(
        "ecommerce-events",
        Consumed::with(Utf8, AvroSerde::<UserEventV2>::for_event(client(&server))),
    )
    .map_values(|e: UserEventV2| {
        format!(
            "{}/{}",
            e.event_type.as_str(),
            e.country.as_deref().unwrap_or("unknown")
        )
    })
    .to("by-country", Produced::with(Utf8, Utf8));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("evolve")
        .build()?;
    // The v1 application, another process: it knows only v1 fields.
    let b = StreamsBuilder::new();
    b.stream(
        "ecommerce-events",
        Consumed::with(Utf8, AvroSerde::<UserEventV1>::for_event(client(&server))),
    )
    .map_values(|e: UserEventV1| e.session_id)
    .to("sessions", Produced::with(Utf8, Utf8));
    let legacy = TopologyTestDriver::builder(b.build()?)
        .application_id("legacy")
        .build()?;

    // The producers: a v1 and a v2 service, each with its own client. Both
    // applications get the same bytes.
    let p1 = AvroSerde::<UserEventV1>::for_event(client(&server));
    let p2 = AvroSerde::<UserEventV2>::for_event(client(&server));
    let mut payloads: Vec<Vec<u8>> = vec![
        p1.serialize(&v1(1, EventType::PageView))?.unwrap(),
        p2.serialize(&v2(2, EventType::AddToCart, "NL"))?.unwrap(),
        p1.serialize(&v1(3, EventType::Search))?.unwrap(),
        p2.serialize(&v2(4, EventType::Purchase, "FR"))?.unwrap(),
    ];
    // Bad records between good ones.
    let good = p2.serialize(&v2(5, EventType::Purchase, "IT"))?.unwrap();
    payloads.push(b"{\"not\": \"avro\"}".to_vec());
    payloads.push(frame(4242, &good[5..]));
    payloads.push(good[..good.len() - 2].to_vec());
    payloads.push(good);
    for (ts, payload) in payloads.iter().enumerate() {
        for d in [&driver, &legacy] {
            d.input_topic("ecommerce-events", Utf8, Utf8).pipe_raw(
                Some(b"k"),
                Some(payload),
                ts as i64,
            )?;
        }
    }

    assert_eq!(
        driver
            .output_topic("by-country", Utf8, Utf8)
            .read_values()?,
        vec![
            "PAGE_VIEW/unknown",
            "ADD_TO_CART/NL",
            "SEARCH/unknown",
            "PURCHASE/FR",
            "PURCHASE/IT"
        ]
    );
    assert_eq!(
        legacy.output_topic("sessions", Utf8, Utf8).read_values()?,
        vec!["s-1", "s-2", "s-3", "s-4", "s-5"]
    );
    // Each bad record is dead-lettered by each application, with the
    // reason and the original bytes.
    for (d, app) in [(&driver, "evolve"), (&legacy, "legacy")] {
        let letters = d.cluster().records(&format!("{app}-dead-letters"))?;
        let reasons: Vec<String> = letters
            .iter()
            .map(|l| dead_letter_error(&l.record.headers).unwrap())
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("wrong magic byte 0x7b"), "{reasons:?}");
        assert!(
            reasons[1].contains("schema id 4242") && reasons[1].contains("40403"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("corrupt"), "{reasons:?}");
        assert_eq!(letters[0].record.value.as_deref(), Some(&payloads[4][..]));
        assert_eq!(d.metrics().dead_lettered, 3);
    }
    Ok(())
}
