//! The registry's HTTP API: Confluent Schema Registry's REST interface.
//!
//! Paths, JSON shapes, status codes and error codes are Confluent's, so
//! its clients work unchanged (schema_registry_converter, Confluent's
//! Python client, curl scripts written for Confluent):
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /subjects` (`?deleted=true`) | `["a-value", ...]` |
//! | `GET /subjects/{s}/versions` | `[1, 2]` |
//! | `GET /subjects/{s}/versions/{v\|latest}` | `{"subject","version","id","schema"}` |
//! | `GET /subjects/{s}/versions/{v}/schema` | the schema itself |
//! | `POST /subjects/{s}/versions` `{"schema": "..."}` | `{"id": 1}` (409 if incompatible) |
//! | `POST /subjects/{s}` `{"schema": "..."}` | the version having that schema |
//! | `DELETE /subjects/{s}` (`?permanent=true`) | the versions deleted |
//! | `DELETE /subjects/{s}/versions/{v}` (`?permanent=true`) | the version |
//! | `GET /schemas/ids/{id}` | `{"schema": "..."}` |
//! | `GET /schemas/ids/{id}/schema`, `/versions`, `/subjects` | |
//! | `GET /schemas/types` | `["AVRO"]` |
//! | `GET`/`PUT /config`, `GET`/`PUT`/`DELETE /config/{s}` | `{"compatibilityLevel": "BACKWARD"}` |
//! | `POST /compatibility/subjects/{s}/versions[/{v}]` (`?verbose=true`) | `{"is_compatible": true}` |
//! | `GET /mode`, `GET /mode/{s}` | `{"mode": "READWRITE"}` |
//!
//! Errors are `{"error_code": 40401, "message": "..."}` with the status the
//! code starts with. The server binds to loopback unless told otherwise,
//! can require HTTP basic auth (401 with error code 40101 otherwise), and
//! refuses bodies over a limit (413) and malformed JSON (400) before they
//! reach the registry. Only Avro schemas are served; a request for another
//! schema type, or with schema references, is a 42201 that says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};

use crate::compat::CompatibilityLevel;
use crate::registry::{Registry, RegistryError, VersionSpec};

/// Settings of the HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen; loopback port 8081 by default.
    pub listen: SocketAddr,
    /// `Some((user, password))`: every request must carry them.
    pub basic_auth: Option<(String, String)>,
    /// Largest request body accepted, bytes (default 1 MiB).
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "basic_auth",
                &self
                    .basic_auth
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            basic_auth: None,
            max_body_bytes: 1 << 20,
        }
    }
}

impl ServerConfig {
    /// The defaults on a free loopback port (port 0): a registry embedded
    /// in a tool, a demo or a test.
    pub fn any_loopback_port() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        }
    }
}

/// A running registry server; stops when dropped.
pub struct RegistryServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryServer")
            .field("addr", &self.addr)
            .finish()
    }
}

struct Ctx {
    registry: Arc<Registry>,
    /// The `Authorization` header value that is accepted.
    expected_auth: Option<String>,
    max_body_bytes: usize,
}

impl RegistryServer {
    /// Binds (port 0 picks a free port) and serves `registry` on a thread
    /// of its own.
    pub fn start(registry: Arc<Registry>, config: ServerConfig) -> std::io::Result<RegistryServer> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let ctx = Arc::new(Ctx {
            registry,
            expected_auth: config.basic_auth.map(|(user, password)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                )
            }),
            max_body_bytes: config.max_body_bytes,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("brook-registry")
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("brook-registry".into())
            .spawn(move || runtime.block_on(serve(listener, ctx, rx)))?;
        tracing::info!(%addr, "schema registry listening");
        Ok(RegistryServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// A fresh in-memory registry served on a free loopback port.
    pub fn start_in_memory() -> std::io::Result<RegistryServer> {
        RegistryServer::start(
            Arc::new(Registry::in_memory()),
            ServerConfig::any_loopback_port(),
        )
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks until the server stops (it stops only when shut down).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops accepting connections and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "schema registry cannot listen");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, ctx.clone()));
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A response with the registry's content type (every body is JSON: an
/// answer, a schema's text, or an error).
fn registry_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The body of an error: Confluent's `error_code` and `message`.
fn error_body(code: u32, message: impl Into<String>) -> String {
    json!({"error_code": code, "message": message.into()}).to_string()
}

fn error_response(status: u16, code: u32, message: impl Into<String>) -> Response<Full<Bytes>> {
    registry_response(status, error_body(code, message))
}

/// What a route answers.
enum Answer {
    Json(Json),
    /// A schema's text as the body.
    Raw(String),
}

/// Why a request failed before or outside the registry.
enum Failure {
    Registry(RegistryError),
    Http(u16, u32, String),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Registry(e)
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(expected) = &ctx.expected_auth {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            let mut response = error_response(401, 40101, "Unauthorized");
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"brook-schema-registry\""),
            );
            return Ok(response);
        }
    }
    let body = match Limited::new(req.into_body(), ctx.max_body_bytes)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Ok(error_response(
                    413,
                    413,
                    format!("request body larger than {} bytes", ctx.max_body_bytes),
                ));
            }
            return Ok(error_response(
                400,
                400,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    let registry = ctx.registry.clone();
    let (m, p) = (method.clone(), path.clone());
    let outcome =
        tokio::task::spawn_blocking(move || answer(&registry, &m, &p, &query, &body)).await;
    let response = match outcome {
        Ok((status, body)) => {
            // Only the registry's own failures are 5xx (bad requests are 4xx).
            if status >= 500 {
                tracing::warn!(%method, %path, status, error = %body, "registry request failed");
            }
            registry_response(status, body)
        }
        Err(e) => {
            tracing::error!(%method, %path, error = %e, "registry request handler failed");
            error_response(500, 50000, "internal error")
        }
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "registry request");
    Ok(response)
}

/// Answers one request as the server would, without the HTTP transport
/// (authentication and the body-size limit are the server's): the status
/// and the body. Bad requests get a 4xx and a JSON error, never a panic;
/// for tests and fuzzing of request handling.
pub fn respond(
    registry: &Registry,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return (
            400,
            error_body(400, format!("invalid method {method:?}")).into_bytes(),
        );
    };
    let (status, body) = answer(registry, &method, path, query, body);
    (status, body.into_bytes())
}

/// The status and body for a request: what the server sends, and what
/// [`respond`] returns.
fn answer(
    registry: &Registry,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> (u16, String) {
    match route(registry, method, path, query, body) {
        Ok(Answer::Json(json)) => (200, json.to_string()),
        Ok(Answer::Raw(text)) => (200, text),
        Err(Failure::Registry(e)) => (e.status(), error_body(e.code(), e.to_string())),
        Err(Failure::Http(status, code, message)) => (status, error_body(code, message)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(text: &str) -> Result<String, Failure> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        Failure::Http(400, 400, format!("bad percent-encoding in \"{text}\""))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Failure::Http(400, 400, format!("\"{text}\" is not UTF-8")))
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Result<Query, Failure> {
        let mut out = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((percent_decode(k)?, percent_decode(v)?));
        }
        Ok(Query(out))
    }

    fn flag(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
    }
}

/// The `schema` of a register/lookup/check body.
fn schema_of(body: &[u8]) -> Result<String, Failure> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| Failure::Http(400, 400, format!("the request body is not JSON: {e}")))?;
    let Json::Object(object) = json else {
        return Err(Failure::Http(
            422,
            422,
            "the request body must be a JSON object with a \"schema\"".into(),
        ));
    };
    if let Some(kind) = object.get("schemaType").and_then(Json::as_str)
        && !kind.eq_ignore_ascii_case("AVRO")
    {
        return Err(Failure::Registry(RegistryError::InvalidSchema(format!(
            "schema type {kind} is not supported by brook's registry (AVRO only)"
        ))));
    }
    if object
        .get("references")
        .and_then(Json::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        return Err(Failure::Registry(RegistryError::InvalidSchema(
            "schema references are not supported by brook's registry".into(),
        )));
    }
    match object.get("schema") {
        Some(Json::String(schema)) if !schema.trim().is_empty() => Ok(schema.clone()),
        _ => Err(Failure::Registry(RegistryError::InvalidSchema(
            "Empty schema (the body needs a \"schema\" string)".into(),
        ))),
    }
}

fn level_of_body(body: &[u8]) -> Result<CompatibilityLevel, Failure> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| Failure::Http(400, 400, format!("the request body is not JSON: {e}")))?;
    let level = json
        .get("compatibility")
        .or_else(|| json.get("compatibilityLevel"))
        .and_then(Json::as_str)
        .ok_or_else(|| {
            Failure::Registry(RegistryError::InvalidCompatibilityLevel(
                "the body needs {\"compatibility\": \"<level>\"}".into(),
            ))
        })?;
    level.parse().map_err(|e: crate::compat::UnknownLevel| {
        Failure::Registry(RegistryError::InvalidCompatibilityLevel(e.to_string()))
    })
}

fn schema_id(text: &str) -> Result<u32, Failure> {
    text.parse::<u32>()
        .map_err(|_| Failure::Registry(RegistryError::SchemaNotFound(text.to_owned())))
}

fn route(
    registry: &Registry,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Answer, Failure> {
    let query = Query::parse(query)?;
    let deleted = query.flag("deleted");
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let verbose = query.flag("verbose");
    let compatibility = |problems: Vec<String>| {
        let mut answer = json!({"is_compatible": problems.is_empty()});
        if verbose {
            answer["messages"] = json!(problems);
        }
        Answer::Json(answer)
    };
    let m = method.as_str();
    Ok(match (m, segs.as_slice()) {
        ("GET", []) => Answer::Json(json!({})),
        ("GET", ["subjects"]) => Answer::Json(json!(registry.subjects(deleted))),
        ("GET", ["subjects", s, "versions"]) => Answer::Json(json!(registry.versions(s, deleted)?)),
        ("GET", ["subjects", s, "versions", v]) => {
            let found = registry.version(s, VersionSpec::parse(v)?, deleted)?;
            Answer::Json(json!(found))
        }
        ("GET", ["subjects", s, "versions", v, "schema"]) => {
            Answer::Raw(registry.version(s, VersionSpec::parse(v)?, deleted)?.schema)
        }
        ("GET", ["subjects", s, "versions", v, "referencedby"]) => {
            registry.version(s, VersionSpec::parse(v)?, deleted)?;
            Answer::Json(json!([]))
        }
        ("POST", ["subjects", s, "versions"]) => {
            let schema = schema_of(body)?;
            let id = registry.register(s, &schema)?;
            Answer::Json(json!({"id": id}))
        }
        ("POST", ["subjects", s]) => {
            let schema = schema_of(body)?;
            Answer::Json(json!(registry.lookup(s, &schema, deleted)?))
        }
        ("DELETE", ["subjects", s]) => {
            Answer::Json(json!(registry.delete_subject(s, query.flag("permanent"))?))
        }
        ("DELETE", ["subjects", s, "versions", v]) => Answer::Json(json!(
            registry.delete_version(s, VersionSpec::parse(v)?, query.flag("permanent"))?
        )),
        ("GET", ["schemas", "types"]) => Answer::Json(json!(["AVRO"])),
        ("GET", ["schemas", "ids", id]) => {
            Answer::Json(json!({"schema": registry.schema(schema_id(id)?)?}))
        }
        ("GET", ["schemas", "ids", id, "schema"]) => Answer::Raw(registry.schema(schema_id(id)?)?),
        ("GET", ["schemas", "ids", id, "versions"]) => {
            let versions = registry.id_versions(schema_id(id)?, deleted)?;
            let versions: Vec<Json> = versions
                .into_iter()
                .map(|(subject, version)| json!({"subject": subject, "version": version}))
                .collect();
            Answer::Json(Json::Array(versions))
        }
        ("GET", ["schemas", "ids", id, "subjects"]) => {
            let mut subjects: Vec<String> = registry
                .id_versions(schema_id(id)?, deleted)?
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            subjects.dedup();
            Answer::Json(json!(subjects))
        }
        ("GET", ["config"]) => {
            Answer::Json(json!({"compatibilityLevel": registry.global_level().as_str()}))
        }
        ("PUT", ["config"]) => {
            let level = level_of_body(body)?;
            registry.set_global_level(level)?;
            Answer::Json(json!({"compatibility": level.as_str()}))
        }
        ("GET", ["config", s]) => {
            let level = registry.subject_level(s, query.flag("defaultToGlobal"))?;
            Answer::Json(json!({"compatibilityLevel": level.as_str()}))
        }
        ("PUT", ["config", s]) => {
            let level = level_of_body(body)?;
            registry.set_subject_level(s, level)?;
            Answer::Json(json!({"compatibility": level.as_str()}))
        }
        ("DELETE", ["config", s]) => {
            let previous = registry.delete_subject_level(s)?;
            Answer::Json(json!({"compatibilityLevel": previous.as_str()}))
        }
        ("POST", ["compatibility", "subjects", s, "versions"]) => {
            compatibility(registry.check(s, None, &schema_of(body)?)?)
        }
        ("POST", ["compatibility", "subjects", s, "versions", v]) => {
            let spec = VersionSpec::parse(v)?;
            compatibility(registry.check(s, Some(spec), &schema_of(body)?)?)
        }
        ("GET", ["mode"]) | ("GET", ["mode", _]) => Answer::Json(json!({"mode": "READWRITE"})),
        (_, segs) if known_path(segs) => {
            return Err(Failure::Http(
                405,
                405,
                format!("HTTP 405 Method Not Allowed: {m} {path}"),
            ));
        }
        _ => {
            return Err(Failure::Http(
                404,
                404,
                format!("HTTP 404 Not Found: {path}"),
            ));
        }
    })
}

fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        [] | ["subjects", ..]
            | ["schemas", ..]
            | ["config", ..]
            | ["compatibility", ..]
            | ["mode", ..]
    )
}
