//! Avro serdes with a Confluent-compatible schema registry.
//!
//! Records are in Confluent's wire format: a zero magic byte, the writer
//! schema's registry id (4 bytes, big-endian), then the Avro binary datum.
//!
//! - Serializing registers the serde's schema under its subject (or, with
//!   `auto_register` off, looks it up — the registry decides whether the
//!   schema is allowed) once, then encodes every value with it.
//! - Deserializing reads the writer's id, fetches that schema once per id,
//!   and resolves the data to the serde's own (reader) schema by the Avro
//!   resolution rules: a v2 reader of v1 data gets the new fields'
//!   defaults, a v1 reader of v2 data skips the fields it does not know.
//!
//! Registry calls go through `schema_registry_converter`'s async client on
//! a small runtime owned by the [`SchemaRegistryClient`]; schemas are
//! cached per id and per subject, so steady-state serialization and
//! deserialization never wait on the network. The DSL's [`Serde`] trait is
//! synchronous, so a cache miss waits for the registry (retrying transient
//! failures with backoff); the async methods serve async callers.
//!
//! Every failure is a [`SerdeError`] that names what was wrong — a payload
//! too short for the header, a wrong magic byte, an id the registry does
//! not know, a datum that does not match its writer schema, a writer
//! schema the reader cannot resolve — so the runtime's handler can send the
//! record to the dead-letter topic, skip it, or stop, and never panics.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use brook_schemas::codec::{self, CodecSchema, Resolver};
use brook_schemas::events::Event;
use brook_topology::serdes::{Serde, SerdeError};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, perform_sr_call,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SrCall;
use serde::Serialize;
use serde::de::DeserializeOwned;

// Confluent's wire format lives with the registry's code (pure, and
// fuzzed there); re-exported where Avro serdes have always found it.
pub use brook_schemas::wire::{MAGIC_BYTE, frame, split_wire_format};

/// Why the registry could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema registry {url}: {message}")]
pub struct RegistryClientError {
    /// The registry.
    pub url: String,
    /// What went wrong (with the registry's error code when it sent one).
    pub message: String,
    /// Whether trying again may help (network trouble, 5xx).
    pub retriable: bool,
}

/// Settings of a registry client.
#[derive(Clone)]
pub struct RegistryClientConfig {
    /// The registry's base URL (`http://127.0.0.1:8081`).
    pub url: String,
    /// HTTP basic auth.
    pub basic_auth: Option<(String, String)>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Attempts for a retriable failure before giving up.
    pub attempts: u32,
}

impl std::fmt::Debug for RegistryClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClientConfig")
            .field("url", &self.url)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("request_timeout", &self.request_timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl RegistryClientConfig {
    /// A client of the registry at `url`: 10 s per request, 5 attempts.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryClientConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            basic_auth: None,
            request_timeout: Duration::from_secs(10),
            attempts: 5,
        }
    }

    /// With HTTP basic auth.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }
}

/// A cached client of a schema registry, shared by every serde of an
/// application.
pub struct SchemaRegistryClient {
    config: RegistryClientConfig,
    settings: SrSettings,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    by_id: RwLock<HashMap<u32, Arc<CodecSchema>>>,
}

impl std::fmt::Debug for SchemaRegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryClient")
            .field("url", &self.config.url)
            .finish()
    }
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

impl SchemaRegistryClient {
    /// A client with its own small runtime for registry calls.
    pub fn new(config: RegistryClientConfig) -> Result<Arc<Self>, RegistryClientError> {
        let fail = |message: String| RegistryClientError {
            url: config.url.clone(),
            message,
            retriable: false,
        };
        let mut builder = SrSettings::new_builder(config.url.clone());
        builder.set_timeout(config.request_timeout).no_proxy();
        if let Some((user, password)) = &config.basic_auth {
            builder.set_basic_authorization(user, Some(password));
        }
        let settings = builder.build().map_err(|e| fail(describe(&e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("brook-registry-client")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the client's runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .no_proxy()
            .build()
            .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
        Ok(Arc::new(SchemaRegistryClient {
            config,
            settings,
            http,
            runtime,
            by_id: RwLock::new(HashMap::new()),
        }))
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    fn error(&self, e: &SRCError) -> RegistryClientError {
        RegistryClientError {
            url: self.config.url.clone(),
            message: describe(e),
            retriable: e.retriable,
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts are
    /// used up (backoff 100 ms, doubling).
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, RegistryClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SRCError>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retriable && attempt < self.config.attempts => {
                    tracing::warn!(registry = %self.config.url, attempt, error = %describe(&e), "{what} failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    let mut error = self.error(&e);
                    error.message = format!("{what}: {}", error.message);
                    return Err(error);
                }
            }
        }
    }

    /// The schema with registry id `id`, cached.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<CodecSchema>, RegistryClientError> {
        if let Some(found) = self.cached(id) {
            return Ok(found);
        }
        let registered = self
            .retrying(&format!("fetching schema id {id}"), || {
                get_schema_by_id(id, &self.settings)
            })
            .await?;
        let parsed = CodecSchema::parse(&registered.schema).map_err(|e| RegistryClientError {
            url: self.config.url.clone(),
            message: format!("schema id {id} from the registry does not parse: {e}"),
            retriable: false,
        })?;
        let parsed = Arc::new(parsed);
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, parsed.clone());
        Ok(parsed)
    }

    fn cached(&self, id: u32) -> Option<Arc<CodecSchema>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Registers `schema` under `subject` (the registry checks
    /// compatibility); returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryClientError> {
        self.subject_call(subject, schema, true).await
    }

    /// The id of `schema` if `subject` has it.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryClientError> {
        self.subject_call(subject, schema, false).await
    }

    async fn subject_call(
        &self,
        subject: &str,
        schema: &str,
        register: bool,
    ) -> Result<u32, RegistryClientError> {
        let body = serde_json::json!({"schema": schema, "schemaType": "AVRO"}).to_string();
        let what = if register {
            format!("registering a schema under {subject}")
        } else {
            format!("looking up a schema under {subject}")
        };
        // Subjects travel in the path: escape what is not a plain segment.
        let escaped = escape_subject(subject);
        let raw = self
            .retrying(&what, || {
                let call = if register {
                    SrCall::PostNew(&escaped, &body)
                } else {
                    SrCall::PostForVersion(&escaped, &body)
                };
                perform_sr_call(&self.settings, call)
            })
            .await?;
        raw.id.ok_or_else(|| RegistryClientError {
            url: self.config.url.clone(),
            message: format!("{what}: the answer has no id"),
            retriable: false,
        })
    }

    /// A request to the registry's REST API with the client's auth; the
    /// JSON answer, or the registry's error (code and message).
    async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryClientError> {
        let url = format!("{}{path}", self.config.url);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let fail = |message: String, retriable: bool| RegistryClientError {
            url: self.config.url.clone(),
            message: format!("{method} {path}: {message}"),
            retriable,
        };
        let response = request
            .send()
            .await
            .map_err(|e| fail(e.to_string(), true))?;
        let status = response.status();
        let json: serde_json::Value = response
            .json()
            .await
            .map_err(|e| fail(format!("HTTP {status}, unreadable answer: {e}"), false))?;
        if status.is_success() {
            Ok(json)
        } else {
            Err(fail(
                format!(
                    "HTTP {status}, error code {}: {}",
                    json["error_code"], json["message"]
                ),
                status.is_server_error(),
            ))
        }
    }

    /// Whether `schema` may be registered under `subject` (`version`:
    /// `None` checks what registering would check; `Some("latest")` or a
    /// number checks against that version). Returns the verdict and the
    /// registry's reasons.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &str,
        version: Option<&str>,
    ) -> Result<(bool, Vec<String>), RegistryClientError> {
        let path = match version {
            None => format!(
                "/compatibility/subjects/{}/versions?verbose=true",
                escape_subject(subject)
            ),
            Some(v) => format!(
                "/compatibility/subjects/{}/versions/{}?verbose=true",
                escape_subject(subject),
                escape_subject(v)
            ),
        };
        let answer = self
            .rest(
                reqwest::Method::POST,
                &path,
                Some(serde_json::json!({"schema": schema, "schemaType": "AVRO"})),
            )
            .await?;
        let compatible = answer["is_compatible"].as_bool().unwrap_or(false);
        let messages = answer["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((compatible, messages))
    }

    /// The latest live version of `subject` (`version`, `id`), or `None`
    /// when the subject has none.
    pub async fn latest_version(
        &self,
        subject: &str,
    ) -> Result<Option<(u32, u32)>, RegistryClientError> {
        let path = format!("/subjects/{}/versions/latest", escape_subject(subject));
        match self.rest(reqwest::Method::GET, &path, None).await {
            Ok(v) => Ok(Some((
                v["version"].as_u64().unwrap_or(0) as u32,
                v["id"].as_u64().unwrap_or(0) as u32,
            ))),
            Err(e) if e.message.contains("40401") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The compatibility level that applies to `subject`.
    pub async fn compatibility_level(&self, subject: &str) -> Result<String, RegistryClientError> {
        let path = format!("/config/{}?defaultToGlobal=true", escape_subject(subject));
        let answer = self.rest(reqwest::Method::GET, &path, None).await?;
        Ok(answer["compatibilityLevel"]
            .as_str()
            .unwrap_or("BACKWARD")
            .to_owned())
    }

    /// Runs a registry call from synchronous code (a serde in a stream
    /// thread) on the client's runtime and waits for it. Works whether or
    /// not the caller is itself inside a tokio runtime (but not on the
    /// client's own runtime).
    pub fn block_on<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(Arc<Self>) -> BoxedCall<T> + Send + 'static,
    ) -> Result<T, RegistryClientError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let me = self.clone();
        self.runtime.spawn(async move {
            let out = call(me).await;
            let _ = tx.send(out);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(RegistryClientError {
                url: self.config.url.clone(),
                message: "the registry client's runtime stopped before answering".into(),
                retriable: false,
            })
        })
    }
}

/// A registry call for [`SchemaRegistryClient::block_on`].
pub type BoxedCall<T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, RegistryClientError>> + Send>>;

fn escape_subject(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An Avro serde for `T` with the registry: its schema is the reader
/// schema for decoding and the writer schema for encoding.
pub struct AvroSerde<T> {
    client: Arc<SchemaRegistryClient>,
    subject: String,
    schema_text: Arc<str>,
    schema: Arc<CodecSchema>,
    auto_register: bool,
    id: OnceLock<u32>,
    /// Readers of other writer schemas, by writer id.
    resolvers: Arc<RwLock<HashMap<u32, Arc<Resolver>>>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for AvroSerde<T> {
    fn clone(&self) -> Self {
        AvroSerde {
            client: self.client.clone(),
            subject: self.subject.clone(),
            schema_text: self.schema_text.clone(),
            schema: self.schema.clone(),
            auto_register: self.auto_register,
            id: self.id.clone(),
            resolvers: self.resolvers.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for AvroSerde<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroSerde")
            .field("type", &std::any::type_name::<T>())
            .field("subject", &self.subject)
            .field("id", &self.id.get())
            .finish()
    }
}

impl<T> AvroSerde<T> {
    /// A serde for `subject` with `schema` (the Avro schema's JSON text).
    pub fn new(
        client: Arc<SchemaRegistryClient>,
        subject: impl Into<String>,
        schema: &str,
    ) -> Result<Self, SerdeError> {
        let parsed = CodecSchema::parse(schema).map_err(|reason| SerdeError::Encode {
            format: "Avro",
            type_name: std::any::type_name::<T>(),
            reason: format!("the serde's schema is invalid: {reason}"),
        })?;
        Ok(AvroSerde {
            client,
            subject: subject.into(),
            schema_text: Arc::from(schema),
            schema: Arc::new(parsed),
            auto_register: true,
            id: OnceLock::new(),
            resolvers: Arc::new(RwLock::new(HashMap::new())),
            _type: PhantomData,
        })
    }

    /// The value serde of `topic` (subject `<topic>-value`).
    pub fn value(
        client: Arc<SchemaRegistryClient>,
        topic: &str,
        schema: &str,
    ) -> Result<Self, SerdeError> {
        AvroSerde::new(client, format!("{topic}-value"), schema)
    }

    /// The key serde of `topic` (subject `<topic>-key`).
    pub fn key(
        client: Arc<SchemaRegistryClient>,
        topic: &str,
        schema: &str,
    ) -> Result<Self, SerdeError> {
        AvroSerde::new(client, format!("{topic}-key"), schema)
    }

    /// Off: the schema must already be registered under the subject
    /// (producers then cannot change a subject by themselves).
    pub fn auto_register(mut self, on: bool) -> Self {
        self.auto_register = on;
        self
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn encode_error(&self, reason: String) -> SerdeError {
        SerdeError::Encode {
            format: "Avro",
            type_name: std::any::type_name::<T>(),
            reason,
        }
    }

    fn decode_error(&self, reason: String) -> SerdeError {
        SerdeError::Invalid {
            format: "Avro",
            type_name: std::any::type_name::<T>(),
            reason,
        }
    }

    /// The registry id of the serde's schema: registered or looked up on
    /// first use, then cached.
    pub fn schema_id(&self) -> Result<u32, SerdeError> {
        if let Some(id) = self.id.get() {
            return Ok(*id);
        }
        let (subject, text, register) = (
            self.subject.clone(),
            self.schema_text.clone(),
            self.auto_register,
        );
        let id = self
            .client
            .block_on(move |client| {
                Box::pin(async move {
                    if register {
                        client.register(&subject, &text).await
                    } else {
                        client.lookup(&subject, &text).await
                    }
                })
            })
            .map_err(|e| self.encode_error(e.to_string()))?;
        Ok(*self.id.get_or_init(|| id))
    }

    /// The async form of [`AvroSerde::schema_id`].
    pub async fn schema_id_async(&self) -> Result<u32, SerdeError> {
        if let Some(id) = self.id.get() {
            return Ok(*id);
        }
        let id = if self.auto_register {
            self.client.register(&self.subject, &self.schema_text).await
        } else {
            self.client.lookup(&self.subject, &self.schema_text).await
        }
        .map_err(|e| self.encode_error(e.to_string()))?;
        Ok(*self.id.get_or_init(|| id))
    }

    fn writer_schema(&self, id: u32) -> Result<Arc<CodecSchema>, SerdeError> {
        if self.id.get() == Some(&id) {
            return Ok(self.schema.clone());
        }
        if let Some(found) = self.client.cached(id) {
            return Ok(found);
        }
        self.client
            .block_on(move |client| Box::pin(async move { client.schema_by_id(id).await }))
            .map_err(|e| {
                if e.retriable {
                    // The registry did not answer (after retries): the
                    // record is not at fault and must not be dead-lettered.
                    SerdeError::Unavailable {
                        what: format!("the schema registry at {}", e.url),
                        reason: format!("fetching writer schema id {id}: {}", e.message),
                    }
                } else {
                    self.decode_error(format!("writer schema id {id}: {e}"))
                }
            })
    }
}

impl<T: Serialize + DeserializeOwned> AvroSerde<T> {
    fn encode_with(&self, id: u32, value: &T) -> Result<Vec<u8>, SerdeError> {
        let datum =
            codec::encode(&self.schema, value).map_err(|e| self.encode_error(e.to_string()))?;
        Ok(frame(id, &datum))
    }

    fn decode_with(&self, id: u32, writer: &CodecSchema, datum: &[u8]) -> Result<T, SerdeError> {
        let fail = |e: codec::CodecError| self.decode_error(format!("schema id {id}: {e}"));
        if *writer == *self.schema {
            return codec::decode(writer, &self.schema, datum).map_err(fail);
        }
        let cached = self
            .resolvers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let resolver = match cached {
            Some(r) => r,
            None => {
                let r = Arc::new(Resolver::new(writer, &self.schema).map_err(fail)?);
                self.resolvers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, r.clone());
                r
            }
        };
        resolver.decode(datum).map_err(fail)
    }

    /// Encodes `value` (async: registers without blocking a thread).
    pub async fn serialize_async(&self, value: &T) -> Result<Vec<u8>, SerdeError> {
        let id = self.schema_id_async().await?;
        self.encode_with(id, value)
    }

    /// Decodes a payload (async: fetches an unknown writer schema without
    /// blocking a thread).
    pub async fn deserialize_async(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        let (id, datum) = split_wire_format(bytes).map_err(|e| self.decode_error(e))?;
        let writer = if self.id.get() == Some(&id) {
            self.schema.clone()
        } else {
            self.client
                .schema_by_id(id)
                .await
                .map_err(|e| self.decode_error(format!("writer schema id {id}: {e}")))?
        };
        self.decode_with(id, &writer, datum)
    }
}

impl<E: Event> AvroSerde<E> {
    /// The serde of a shipped event type, on its subject with its schema.
    pub fn for_event(client: Arc<SchemaRegistryClient>) -> Self {
        AvroSerde::new(client, E::SUBJECT, E::SCHEMA).expect("shipped schemas are valid")
    }
}

impl<T> Serde<T> for AvroSerde<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        let id = self.schema_id()?;
        self.encode_with(id, value).map(Some)
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: std::any::type_name::<T>(),
        })?;
        let (id, datum) = split_wire_format(bytes).map_err(|e| self.decode_error(e))?;
        let writer = self.writer_schema(id)?;
        self.decode_with(id, &writer, datum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_header_is_checked() {
        assert_eq!(
            split_wire_format(&frame(7, b"xy")).unwrap(),
            (7, &b"xy"[..])
        );
        assert!(
            split_wire_format(b"\0\0\0")
                .unwrap_err()
                .contains("too short")
        );
        assert!(
            split_wire_format(b"{\"a\":1}")
                .unwrap_err()
                .contains("wrong magic byte 0x7b")
        );
        assert_eq!(escape_subject("a-b.c_d"), "a-b.c_d");
        assert_eq!(escape_subject("a/b c"), "a%2Fb%20c");
    }
}
