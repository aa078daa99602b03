//! Conformance with Confluent's Python client: `confluent-kafka` (from
//! PyPI, installed by `make test` into brook's venv) registers, evolves,
//! checks, configures, looks up and deletes through brook's registry, and
//! serializes and deserializes with Confluent's AvroSerializer and
//! AvroDeserializer — including a payload brook's serde wrote, while brook
//! reads one the Python serializer wrote.
//!
//! The interpreter is `$BROOK_PYTHON`, else `~/.cache/brook/venv/bin/python`
//! (where `make python-deps` puts it). Without one the test fails and says
//! how to get it: it never passes without having run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use brook_schemas::codec::{CodecSchema, decode, encode};
use brook_schemas::events::Event;
use brook_schemas::events::ecommerce::{DeviceType, EventType, UserEventV1, UserEventV2};
use brook_schemas::registry::Registry;
use brook_schemas::server::{RegistryServer, ServerConfig};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BROOK_PYTHON")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/brook/venv/bin/python")
}

/// This package's directory, as cargo gives it to the running test: a test
/// binary reused from a shared target directory may have been built in
/// another checkout, whose files `env!("CARGO_MANIFEST_DIR")` would name.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .expect("CARGO_MANIFEST_DIR is set by cargo test")
}

#[test]
fn confluents_python_client_works_unchanged() {
    let python = python();
    assert!(
        python.exists(),
        "no Python with confluent-kafka at {} (set BROOK_PYTHON, or run `make python-deps`)",
        python.display()
    );
    let registry = Arc::new(Registry::in_memory());
    let server =
        RegistryServer::start(registry.clone(), ServerConfig::any_loopback_port()).unwrap();
    // brook's side writes a v2 event on ecommerce-events-value first.
    let v2 = CodecSchema::parse(UserEventV2::SCHEMA).unwrap();
    let id = registry
        .register(UserEventV2::SUBJECT, UserEventV2::SCHEMA)
        .unwrap();
    let event = UserEventV2 {
        event_id: "rust-1".into(),
        user_id: "user_0002".into(),
        event_type: EventType::Purchase,
        timestamp: 1_700_000_000_500,
        session_id: "s2".into(),
        product_id: Some("P-7".into()),
        product_name: Some("Lamp".into()),
        price: Some(24.0),
        category: Some("Home".into()),
        device_type: Some(DeviceType::Mobile),
        country: Some("SE".into()),
    };
    let mut payload = vec![0];
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(&encode(&v2, &event).unwrap());
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();

    let script = package_dir().join("tests/python/confluent_conformance.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&server.url(), &hex])
        .output()
        .expect("running Python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["from_rust"]["country"], "SE");

    // What Python wrote, brook reads: as v1 directly and as v2 with defaults.
    let bytes: Vec<u8> = (0..summary["python_payload"].as_str().unwrap().len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&summary["python_payload"].as_str().unwrap()[i..i + 2], 16).unwrap()
        })
        .collect();
    assert_eq!(bytes[0], 0);
    let writer_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let writer = CodecSchema::parse(&registry.schema(writer_id).unwrap()).unwrap();
    let v1 = CodecSchema::parse(UserEventV1::SCHEMA).unwrap();
    let as_v1: UserEventV1 = decode(&writer, &v1, &bytes[5..]).unwrap();
    assert_eq!(as_v1.event_id, "python-1");
    let as_v2: UserEventV2 = decode(&writer, &v2, &bytes[5..]).unwrap();
    assert_eq!(as_v2, UserEventV2::from(as_v1));
}
