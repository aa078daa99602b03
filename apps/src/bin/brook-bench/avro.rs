//! The avro group: Avro decoding with and without schema resolution, JSON beside it.

use super::*;

/// The Avro serde on the seed's user_event, against an in-process registry
/// (schemas cached after the first record): encode v2, decode v2 as v2,
/// decode v1 as v2 (schema resolution), and JSON decoding of the same v2
/// events for comparison. Records/s each.
pub(crate) fn bench_avro(records: usize) -> Result<(f64, f64, f64, f64)> {
    use brook_connectors::avro::{AvroSerde, RegistryClientConfig, SchemaRegistryClient};
    use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
    use brook_topology::serdes::{Json, Serde};
    let server = brook_schemas::server::RegistryServer::start_in_memory()?;
    let client = SchemaRegistryClient::new(RegistryClientConfig::new(server.url()))?;
    let v1 = AvroSerde::<UserEventV1>::for_event(client.clone());
    let v2 = AvroSerde::<UserEventV2>::for_event(client);
    let event = |i: usize| UserEventV2 {
        event_id: format!("event-{i:08}"),
        user_id: format!("user_{:04}", i % 1000),
        event_type: EventType::ALL[i % 5],
        timestamp: 1_700_000_000_000 + i as i64,
        session_id: format!("session-{}", i / 10),
        product_id: Some(format!("PROD-{:03}", i % 100)),
        product_name: Some("Wireless Headphones".into()),
        price: Some(79.99),
        category: Some("Electronics".into()),
        device_type: Some(DeviceType::Mobile),
        country: Some("US".into()),
    };
    let events: Vec<UserEventV2> = (0..records).map(event).collect();
    let old: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            v1.serialize(&UserEventV1::from(e.clone()))
                .map(|b| b.unwrap_or_default())
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut new = Vec::with_capacity(records);
    for e in &events {
        new.push(v2.serialize(e)?.unwrap_or_default());
    }
    let encode = records as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for bytes in &new {
        std::hint::black_box(v2.deserialize(Some(bytes))?);
    }
    let decode = records as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for bytes in &old {
        std::hint::black_box(v2.deserialize(Some(bytes))?);
    }
    let resolve = records as f64 / started.elapsed().as_secs_f64();
    let json = Json::<UserEventV2>::new();
    let as_json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| json.serialize(e).map(|b| b.unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for bytes in &as_json {
        std::hint::black_box(json.deserialize(Some(bytes))?);
    }
    let json_rate = records as f64 / started.elapsed().as_secs_f64();
    Ok((encode, decode, resolve, json_rate))
}
