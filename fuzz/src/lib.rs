//! What brook's fuzz targets check, one function per target.
//!
//! `make fuzz` runs each target under libFuzzer (cargo-fuzz, nightly) for a
//! bounded time; the functions here are the targets' bodies, so the
//! regression test below can replay, in `make test`, the seed inputs under
//! `fuzz/corpus/<target>/` and every input a fuzzer once crashed on, kept
//! under `fuzz/regressions/<target>/`.
//!
//! Each function takes arbitrary bytes and panics only on a bug: untrusted
//! input must give an error, never a panic, and what decodes must encode
//! back to the same value.

use std::sync::{Arc, OnceLock};

use brook_schemas::codec::{self, CodecSchema};
use brook_schemas::events::SCHEMA_FILES;
use brook_schemas::registry::Registry;
use brook_schemas::server::respond;
use brook_schemas::wire::{frame, split_wire_format};
use brook_topology::serdes::{Bincode, Json, Nullable, Serde, Utf8};
use brook_topology::{Windowed, WindowedSerde};

/// A target's check: panics on a bug.
pub type Check = fn(&[u8]);

/// The targets by name, as `make fuzz` and the regression test know them.
pub const TARGETS: &[(&str, Check)] = &[
    ("wire_format", wire_format),
    ("avro", avro),
    ("registry_request", registry_request),
    ("key_codecs", key_codecs),
];

/// Confluent's wire format: a payload that splits frames back to itself.
pub fn wire_format(data: &[u8]) {
    if let Ok((id, datum)) = split_wire_format(data) {
        assert_eq!(frame(id, datum), data, "frame(split(x)) != x");
    }
}

/// EventMart's event schemas, v1 and v2 (parsed once).
fn event_schemas() -> &'static (CodecSchema, CodecSchema) {
    static SCHEMAS: OnceLock<(CodecSchema, CodecSchema)> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let text = |version| {
            SCHEMA_FILES
                .iter()
                .find(|f| f.subject == "ecommerce-events-value" && f.version == version)
                .map(|f| f.text)
                .expect("EventMart's event schemas are compiled in")
        };
        let parse = |version| CodecSchema::parse(text(version)).expect("a valid schema");
        (parse(1), parse(2))
    })
}

/// The Avro decoding path of a consumer: the first byte picks a v2 datum
/// read as v2, a v1 datum resolved to v2, or a Confluent-framed datum whose
/// schema id picks the writer schema (1 or 2; others are unknown ids).
pub fn avro(data: &[u8]) {
    let (v1, v2) = event_schemas();
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let _ = match mode % 3 {
        0 => codec::decode_value(v2, None, bytes),
        1 => codec::decode_value(v1, Some(v2), bytes),
        _ => match split_wire_format(bytes) {
            Ok((1, datum)) => codec::decode_value(v1, Some(v2), datum),
            Ok((2, datum)) => codec::decode_value(v2, None, datum),
            _ => return,
        },
    };
}

/// The schema registry's request handling, on a registry holding
/// EventMart's v1 event schema: the first byte picks the method, the rest
/// is `path\nquery\nbody`. Whatever the request, the answer is a status
/// below 500 with a JSON body.
pub fn registry_request(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method = ["GET", "POST", "PUT", "DELETE", "PATCH", "G\u{0}T"][usize::from(pick) % 6];
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let registry = Registry::in_memory();
    let v1 = SCHEMA_FILES
        .iter()
        .find(|f| f.subject == "ecommerce-events-value" && f.version == 1)
        .expect("compiled in");
    registry
        .register(v1.subject, v1.text)
        .expect("the v1 schema registers");
    let (status, answer) = respond(&registry, method, &path, &query, body);
    assert!(
        (200..500).contains(&status),
        "{method} {path:?}?{query:?} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&answer) {
        panic!(
            "{method} {path:?} answered {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Decodes `bytes` with `serde`; what decodes must encode and decode back
/// to the same value.
fn round_trip<T: PartialEq + std::fmt::Debug + 'static>(
    serde: &dyn Serde<T>,
    bytes: Option<&[u8]>,
) {
    let Ok(value) = serde.deserialize(bytes) else {
        return;
    };
    let encoded = serde
        .serialize(&value)
        .unwrap_or_else(|e| panic!("{value:?} decoded but does not encode: {e}"));
    let again = serde
        .deserialize(encoded.as_deref())
        .unwrap_or_else(|e| panic!("{value:?} encoded to bytes that do not decode: {e}"));
    assert_eq!(again, value, "decode(encode(x)) != x");
}

/// The key and value codecs of stores and topics: the first byte picks
/// one, the rest is the bytes (or a null).
pub fn key_codecs(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let some = Some(bytes);
    match pick % 7 {
        0 => round_trip(&Utf8, some),
        1 => round_trip(&Json::<serde_json::Value>::new(), some),
        2 => round_trip(&Json::<(String, i64)>::new(), some),
        3 => round_trip(&Bincode::<(String, i64, Vec<u8>)>::new(), some),
        4 => round_trip(&Nullable(Utf8), if bytes.is_empty() { None } else { some }),
        5 => round_trip::<Windowed<String>>(&WindowedSerde(Arc::new(Utf8)), some),
        _ => round_trip::<Windowed<i64>>(&WindowedSerde(Arc::new(Json::<i64>::new())), some),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Every file under `fuzz/<dir>/<target>/`, by target.
    fn inputs(dir: &str) -> Vec<(&'static str, Check, PathBuf)> {
        // The run-time variable: a binary built in another checkout of a
        // shared target directory must read this checkout's files.
        let root = PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        );
        let mut out = Vec::new();
        for &(name, check) in TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a readable directory").path();
                if path.is_file() {
                    out.push((name, check, path));
                }
            }
        }
        out
    }

    #[test]
    fn seeds_and_kept_crashes_pass_every_check() {
        let seeds = inputs("corpus");
        for &(name, _) in TARGETS {
            assert!(
                seeds.iter().any(|(target, _, _)| *target == name),
                "no seed input under fuzz/corpus/{name}/"
            );
        }
        for (target, check, path) in seeds.into_iter().chain(inputs("regressions")) {
            let data = std::fs::read(&path).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        }
    }

    #[test]
    fn the_checks_catch_what_they_are_for() {
        // A registry answering 5xx or a codec that does not round-trip
        // would fail: these are the properties, checked on known inputs.
        let framed = frame(2, b"datum");
        wire_format(&framed);
        let mut request = vec![0u8];
        request.extend_from_slice(b"/subjects/ecommerce-events-value/versions/latest\n\n");
        registry_request(&request);
        let mut unknown = vec![0u8];
        unknown.extend_from_slice(b"/schemas/ids/99\n\n");
        registry_request(&unknown);
        let bad = std::panic::catch_unwind(|| {
            round_trip::<String>(&BrokenUtf8, Some(b"abc"));
        });
        assert!(bad.is_err(), "a codec that does not round-trip is reported");
    }

    /// Decodes anything as "x", encodes "x" as "y": not a round trip.
    struct BrokenUtf8;

    impl Serde<String> for BrokenUtf8 {
        fn serialize(
            &self,
            _: &String,
        ) -> Result<Option<Vec<u8>>, brook_topology::serdes::SerdeError> {
            Ok(Some(b"y".to_vec()))
        }

        fn deserialize(
            &self,
            bytes: Option<&[u8]>,
        ) -> Result<String, brook_topology::serdes::SerdeError> {
            Ok(if bytes == Some(b"y") { "y" } else { "x" }.to_owned())
        }
    }
}
