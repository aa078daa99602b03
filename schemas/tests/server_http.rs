//! The registry's HTTP API byte for byte: paths, JSON shapes, status and
//! error codes as Confluent's clients expect them, and what it does with
//! malformed, oversized and unauthenticated requests. Requests are written
//! by hand over TCP so that nothing in between fixes them up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use brook_schemas::registry::Registry;
use brook_schemas::server::{RegistryServer, ServerConfig};
use serde_json::{Value, json};

struct Http {
    server: RegistryServer,
    auth: Option<String>,
}

impl Http {
    fn start(config: ServerConfig) -> Http {
        let server = RegistryServer::start(Arc::new(Registry::in_memory()), config).unwrap();
        Http { server, auth: None }
    }

    fn new() -> Http {
        Http::start(ServerConfig::any_loopback_port())
    }

    /// Sends raw request bytes; returns status and body.
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.server.local_addr()).unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = self
            .auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, body) = self.raw(request.as_bytes());
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }
}

const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"int"}]}"#;

fn schema(s: &str) -> Option<Value> {
    Some(json!({ "schema": s }))
}

fn code(v: &Value) -> i64 {
    v["error_code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error_code in {v}"))
}

#[test]
fn subjects_versions_ids_and_lookups() {
    let h = Http::new();
    assert_eq!(h.call("GET", "/subjects", None), (200, json!([])));
    assert_eq!(
        h.call("POST", "/subjects/orders-value/versions", schema(V1)),
        (200, json!({"id": 1}))
    );
    assert_eq!(
        h.call("POST", "/subjects/orders-value/versions", schema(V2)),
        (200, json!({"id": 2}))
    );
    // The converter sends schemaType explicitly.
    let (status, body) = h.call(
        "POST",
        "/subjects/orders-value/versions",
        Some(json!({"schema": V2, "schemaType": "AVRO"})),
    );
    assert_eq!((status, body), (200, json!({"id": 2})));
    assert_eq!(
        h.call("GET", "/subjects", None),
        (200, json!(["orders-value"]))
    );
    assert_eq!(
        h.call("GET", "/subjects/orders-value/versions", None),
        (200, json!([1, 2]))
    );
    let (status, latest) = h.call("GET", "/subjects/orders-value/versions/latest", None);
    assert_eq!(status, 200);
    assert_eq!(latest["subject"], "orders-value");
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], 2);
    let text = latest["schema"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        serde_json::from_str::<Value>(V2).unwrap()
    );
    let (status, raw) = h.call("GET", "/subjects/orders-value/versions/1/schema", None);
    assert_eq!((status, raw), (200, serde_json::from_str(V1).unwrap()));
    let (status, by_id) = h.call("GET", "/schemas/ids/1", None);
    assert_eq!(status, 200);
    assert!(by_id["schema"].as_str().unwrap().contains("\"E\""));
    assert_eq!(
        h.call("GET", "/schemas/ids/2/versions", None),
        (200, json!([{"subject": "orders-value", "version": 2}]))
    );
    assert_eq!(
        h.call("GET", "/schemas/ids/2/subjects", None),
        (200, json!(["orders-value"]))
    );
    assert_eq!(
        h.call("GET", "/schemas/types", None),
        (200, json!(["AVRO"]))
    );
    let (status, found) = h.call("POST", "/subjects/orders-value", schema(V1));
    assert_eq!(
        (status, found["version"].clone(), found["id"].clone()),
        (200, json!(1), json!(1))
    );
    // Subjects with characters that need escaping.
    assert_eq!(
        h.call("POST", "/subjects/a%2Fb%3Ac/versions", schema(V1)),
        (200, json!({"id": 1}))
    );
    assert_eq!(
        h.call("GET", "/subjects/a%2Fb%3Ac/versions", None),
        (200, json!([1]))
    );
    // Errors: Confluent's codes and statuses.
    let (status, e) = h.call("GET", "/subjects/nope/versions", None);
    assert_eq!((status, code(&e)), (404, 40401));
    assert_eq!(e["message"], "Subject 'nope' not found.");
    let (status, e) = h.call("GET", "/subjects/orders-value/versions/7", None);
    assert_eq!((status, code(&e)), (404, 40402));
    let (status, e) = h.call("GET", "/subjects/orders-value/versions/zero", None);
    assert_eq!((status, code(&e)), (422, 42202));
    let (status, e) = h.call("GET", "/schemas/ids/77", None);
    assert_eq!((status, code(&e)), (404, 40403));
    let (status, e) = h.call("POST", "/subjects/orders-value", schema(BREAKS));
    assert_eq!((status, code(&e)), (404, 40403));
    let (status, e) = h.call("POST", "/subjects/orders-value/versions", schema(BREAKS));
    assert_eq!((status, code(&e)), (409, 409));
    assert!(
        e["message"].as_str().unwrap().contains("TYPE_MISMATCH"),
        "{e}"
    );
    let (status, e) = h.call(
        "POST",
        "/subjects/x/versions",
        schema(r#"{"type":"recrd"}"#),
    );
    assert_eq!((status, code(&e)), (422, 42201));
    let (status, e) = h.call(
        "POST",
        "/subjects/x/versions",
        Some(json!({"schema": "{}", "schemaType": "PROTOBUF"})),
    );
    assert_eq!((status, code(&e)), (422, 42201));
    assert!(e["message"].as_str().unwrap().contains("AVRO only"));
}

#[test]
fn compatibility_config_and_deletes() {
    let h = Http::new();
    h.call("POST", "/subjects/s/versions", schema(V1));
    assert_eq!(
        h.call("GET", "/config", None),
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        h.call(
            "POST",
            "/compatibility/subjects/s/versions/latest",
            schema(V2)
        ),
        (200, json!({"is_compatible": true}))
    );
    assert_eq!(
        h.call(
            "POST",
            "/compatibility/subjects/s/versions/latest",
            schema(BREAKS)
        ),
        (200, json!({"is_compatible": false}))
    );
    let (status, verbose) = h.call(
        "POST",
        "/compatibility/subjects/s/versions?verbose=true",
        schema(BREAKS),
    );
    assert_eq!(status, 200);
    assert_eq!(verbose["is_compatible"], false);
    assert!(
        verbose["messages"][0]
            .as_str()
            .unwrap()
            .contains("/fields/a"),
        "{verbose}"
    );
    let (status, e) = h.call(
        "POST",
        "/compatibility/subjects/none/versions/latest",
        schema(V1),
    );
    assert_eq!((status, code(&e)), (404, 40401));
    assert_eq!(
        h.call("POST", "/compatibility/subjects/none/versions", schema(V1)),
        (200, json!({"is_compatible": true}))
    );
    // Subject level over global level.
    let (status, e) = h.call("GET", "/config/s", None);
    assert_eq!((status, code(&e)), (404, 40408));
    assert_eq!(
        h.call("GET", "/config/s?defaultToGlobal=true", None),
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        h.call("PUT", "/config/s", Some(json!({"compatibility": "NONE"}))),
        (200, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        h.call(
            "POST",
            "/compatibility/subjects/s/versions/latest",
            schema(BREAKS)
        ),
        (200, json!({"is_compatible": true}))
    );
    let (status, e) = h.call("PUT", "/config", Some(json!({"compatibility": "SIDEWAYS"})));
    assert_eq!((status, code(&e)), (422, 42203));
    assert_eq!(
        h.call(
            "PUT",
            "/config",
            Some(json!({"compatibility": "FULL_TRANSITIVE"}))
        ),
        (200, json!({"compatibility": "FULL_TRANSITIVE"}))
    );
    assert_eq!(
        h.call("DELETE", "/config/s", None),
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_eq!(
        h.call("GET", "/config/s?defaultToGlobal=true", None),
        (200, json!({"compatibilityLevel": "FULL_TRANSITIVE"}))
    );
    // Deletes: soft, then permanent.
    h.call("POST", "/subjects/s/versions", schema(V2));
    let (status, e) = h.call("DELETE", "/subjects/s?permanent=true", None);
    assert_eq!((status, code(&e)), (404, 40405));
    assert_eq!(
        h.call("DELETE", "/subjects/s/versions/2", None),
        (200, json!(2))
    );
    let (status, e) = h.call("DELETE", "/subjects/s/versions/2", None);
    assert_eq!((status, code(&e)), (404, 40406));
    assert_eq!(
        h.call("GET", "/subjects/s/versions?deleted=true", None),
        (200, json!([1, 2]))
    );
    assert_eq!(h.call("DELETE", "/subjects/s", None), (200, json!([1])));
    assert_eq!(h.call("GET", "/subjects", None), (200, json!([])));
    assert_eq!(
        h.call("GET", "/subjects?deleted=true", None),
        (200, json!(["s"]))
    );
    // Soft-deleted schemas still resolve by id: old data stays readable.
    assert_eq!(h.call("GET", "/schemas/ids/2", None).0, 200);
    assert_eq!(
        h.call("DELETE", "/subjects/s?permanent=true", None),
        (200, json!([1, 2]))
    );
    let (status, e) = h.call("GET", "/subjects/s/versions?deleted=true", None);
    assert_eq!((status, code(&e)), (404, 40401));
    assert_eq!(
        h.call("GET", "/mode", None),
        (200, json!({"mode": "READWRITE"}))
    );
}

#[test]
fn malformed_oversized_and_unknown_requests_get_4xx() {
    let h = Http::start(ServerConfig {
        max_body_bytes: 4096,
        ..ServerConfig::any_loopback_port()
    });
    let (status, e) = h.call("POST", "/subjects/s/versions", Some(json!("just a string")));
    assert_eq!((status, code(&e)), (422, 422));
    let (status, body) = h.raw(
        b"POST /subjects/s/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9\r\n\r\n{\"schema\"",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not JSON"));
    let big = format!("{{\"schema\": \"{}\"}}", "x".repeat(10_000));
    let (status, e) = h.call(
        "POST",
        "/subjects/s/versions",
        Some(serde_json::from_str(&big).unwrap()),
    );
    assert_eq!((status, code(&e)), (413, 413));
    let (status, e) = h.call("GET", "/nothing/here", None);
    assert_eq!((status, code(&e)), (404, 404));
    let (status, e) = h.call("PATCH", "/subjects", None);
    assert_eq!((status, code(&e)), (405, 405));
    let (status, e) = h.call("GET", "/subjects/%ZZ/versions", None);
    assert_eq!((status, code(&e)), (400, 400));
    let (status, _) = h.raw(b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);
    // Still serving after all that.
    assert_eq!(h.call("GET", "/subjects", None), (200, json!([])));
}

#[test]
fn basic_auth_guards_every_path() {
    let mut h = Http::start(ServerConfig {
        basic_auth: Some(("ops".into(), "pa:ss".into())),
        ..ServerConfig::any_loopback_port()
    });
    for path in ["/subjects", "/config", "/schemas/ids/1", "/"] {
        let (status, e) = h.call("GET", path, None);
        assert_eq!((status, code(&e)), (401, 40101), "{path}");
    }
    h.auth = Some("Basic b3BzOndyb25n".into()); // ops:wrong
    assert_eq!(h.call("GET", "/subjects", None).0, 401);
    h.auth = Some("Basic b3BzOnBhOnNz".into()); // ops:pa:ss
    assert_eq!(h.call("GET", "/subjects", None), (200, json!([])));
}

#[test]
fn binds_to_loopback_by_default() {
    assert!(ServerConfig::default().listen.ip().is_loopback());
}
