//! The schema registry's state and rules, independent of HTTP.
//!
//! A [`Registry`] holds subjects (each a list of versions pointing at
//! schema ids), schemas by id (one id per distinct schema, shared by every
//! subject that registers it) and compatibility levels (global and per
//! subject). It follows Confluent Schema Registry's behaviour:
//!
//! - registering a schema a subject already has returns its id without a
//!   new version; otherwise the schema must pass the subject's
//!   compatibility level against the subject's live versions, and gets the
//!   next version number and the id of an identical schema registered
//!   anywhere, or a new id;
//! - deleting is soft first (versions hidden from reads and compatibility
//!   checks, still readable with `deleted=true`, ids still resolvable), and
//!   permanent only after a soft delete;
//! - errors carry Confluent's error codes (40401 subject not found, 40402
//!   version not found, 40403 schema not found, 409 incompatible, 42201
//!   invalid schema, ...).
//!
//! Every change is first appended to a [`SchemaStore`] in the format of
//! Confluent's `_schemas` topic (JSON keys and values, tombstones for
//! permanent deletes), then applied; on start the registry replays the
//! store, so a registry backed by a compacted topic survives restarts. An
//! in-memory store serves tests and the demo.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::avro::AvroSchema;
use crate::compat::{CompatibilityLevel, check_versions};

/// A registry request that failed, with Confluent's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// 40401
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    /// 40403
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 40404
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    /// 40407
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    /// 40408
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelCompatibilityNotConfigured(String),
    /// 409
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .messages.join(", "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why, one entry per problem.
        messages: Vec<String>,
    },
    /// 42201
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203
    #[error("Invalid compatibility level. {0}")]
    InvalidCompatibilityLevel(String),
    /// 50001
    #[error("Error in the backend data store: {0}")]
    Store(String),
}

impl RegistryError {
    /// Confluent's error code.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted(..) => 40406,
            RegistryError::VersionNotSoftDeleted(..) => 40407,
            RegistryError::SubjectLevelCompatibilityNotConfigured(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibilityLevel(_) => 42203,
            RegistryError::Store(_) => 50001,
        }
    }

    /// The HTTP status: the first three digits of the code.
    pub fn status(&self) -> u16 {
        let code = self.code();
        if code < 1000 {
            code as u16
        } else {
            (code / 100) as u16
        }
    }
}

/// Result of registry operations.
pub type RegistryResult<T> = Result<T, RegistryError>;

/// Which version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The highest live version.
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionSpec {
    /// `latest`, `-1` (Confluent's alias for it) or a number in
    /// `[1, 2^31-1]`.
    pub fn parse(text: &str) -> RegistryResult<VersionSpec> {
        if text == "latest" || text == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_owned())),
        }
    }
}

/// One version of a subject, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: u32,
    /// The schema's id.
    pub id: u32,
    /// The schema's text.
    pub schema: String,
}

/// One `_schemas` record: a JSON key and a JSON value (`None`: a
/// tombstone).
pub type LogRecord = (Vec<u8>, Option<Vec<u8>>);

/// Where the registry keeps its log of changes.
///
/// Records are Confluent `_schemas` records: JSON keys, JSON values, and
/// `None` values for tombstones. `append` must return only once the record
/// is durable.
pub trait SchemaStore: Send + Sync {
    /// Every record so far, oldest first.
    fn load(&self) -> Result<Vec<LogRecord>, String>;
    /// Appends a record.
    fn append(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), String>;
}

/// A store in memory. Clones share the log, so a test can "restart" a
/// registry on the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    log: Arc<Mutex<Vec<LogRecord>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// How many records were appended.
    pub fn len(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SchemaStore for MemoryStore {
    fn load(&self) -> Result<Vec<LogRecord>, String> {
        Ok(self.log.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn append(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, value));
        Ok(())
    }
}

// The `_schemas` record format.

#[derive(Debug, Serialize, Deserialize)]
struct RecordKey {
    keytype: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    magic: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct SchemaValue {
    subject: String,
    version: u32,
    id: u32,
    schema: String,
    #[serde(default)]
    deleted: bool,
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    schema_type: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: String,
}

#[derive(Debug, Clone)]
struct Version {
    id: u32,
    deleted: bool,
}

#[derive(Debug, Default)]
struct State {
    schemas: BTreeMap<u32, (String, Arc<AvroSchema>)>,
    by_canonical: HashMap<String, u32>,
    subjects: BTreeMap<String, BTreeMap<u32, Version>>,
    global: Option<CompatibilityLevel>,
    subject_levels: HashMap<String, CompatibilityLevel>,
}

/// A schema registry.
pub struct Registry {
    state: Mutex<State>,
    store: Box<dyn SchemaStore>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Registry")
            .field("schemas", &state.schemas.len())
            .field("subjects", &state.subjects.len())
            .finish()
    }
}

fn schema_key(subject: &str, version: u32) -> Vec<u8> {
    serde_json::to_vec(&RecordKey {
        keytype: "SCHEMA".into(),
        subject: Some(subject.to_owned()),
        version: Some(version),
        magic: 1,
    })
    .expect("a key serializes")
}

fn config_key(subject: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&RecordKey {
        keytype: "CONFIG".into(),
        subject: subject.map(str::to_owned),
        version: None,
        magic: 0,
    })
    .expect("a key serializes")
}

impl Registry {
    /// A registry with nothing registered, in memory only.
    pub fn in_memory() -> Registry {
        Registry::open(Box::new(MemoryStore::new())).expect("an empty memory store loads")
    }

    /// A registry over `store`, with the state its records describe.
    pub fn open(store: Box<dyn SchemaStore>) -> RegistryResult<Registry> {
        let records = store.load().map_err(RegistryError::Store)?;
        let mut state = State::default();
        for (i, (key, value)) in records.iter().enumerate() {
            apply(&mut state, key, value.as_deref()).map_err(|e| {
                RegistryError::Store(format!("record {i} of the store cannot be applied: {e}"))
            })?;
        }
        tracing::info!(
            records = records.len(),
            schemas = state.schemas.len(),
            subjects = state.subjects.len(),
            "schema registry loaded"
        );
        Ok(Registry {
            state: Mutex::new(state),
            store,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and applies it (under the state lock, so records
    /// are applied in the order they are stored).
    fn write(&self, state: &mut State, key: Vec<u8>, value: Option<Vec<u8>>) -> RegistryResult<()> {
        self.store
            .append(key.clone(), value.clone())
            .map_err(RegistryError::Store)?;
        apply(state, &key, value.as_deref()).map_err(RegistryError::Store)
    }

    /// Subjects with a live version (or any version, with `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.lock()
            .subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|v| !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// A subject's version numbers.
    pub fn versions(&self, subject: &str, deleted: bool) -> RegistryResult<Vec<u32>> {
        let state = self.lock();
        let versions: Vec<u32> = live(&state, subject, deleted)?.map(|(n, _)| *n).collect();
        Ok(versions)
    }

    /// One version of a subject.
    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> RegistryResult<SubjectVersion> {
        let state = self.lock();
        let (number, version) = find_version(&state, subject, spec, deleted)?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: number,
            id: version.id,
            schema: state.schemas[&version.id].0.clone(),
        })
    }

    /// The schema with id `id` (also when only soft-deleted versions use
    /// it).
    pub fn schema(&self, id: u32) -> RegistryResult<String> {
        self.lock()
            .schemas
            .get(&id)
            .map(|(text, _)| text.clone())
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// The parsed schema with id `id`.
    pub fn parsed_schema(&self, id: u32) -> RegistryResult<Arc<AvroSchema>> {
        self.lock()
            .schemas
            .get(&id)
            .map(|(_, parsed)| parsed.clone())
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// The subject versions that use schema `id`.
    pub fn id_versions(&self, id: u32, deleted: bool) -> RegistryResult<Vec<(String, u32)>> {
        let state = self.lock();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::SchemaNotFound(id.to_string()));
        }
        Ok(state
            .subjects
            .iter()
            .flat_map(|(s, versions)| {
                versions
                    .iter()
                    .filter(|(_, v)| v.id == id && (deleted || !v.deleted))
                    .map(move |(n, _)| (s.clone(), *n))
            })
            .collect())
    }

    /// Registers `schema` under `subject`; returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> RegistryResult<u32> {
        let parsed = parse(schema)?;
        let mut state = self.lock();
        if let Some(versions) = state.subjects.get(subject)
            && let Some(v) = versions
                .values()
                .find(|v| !v.deleted && state.schemas[&v.id].1.canonical() == parsed.canonical())
        {
            return Ok(v.id);
        }
        let level = level_of(&state, subject);
        let problems = check_against_live(&state, subject, level, &parsed, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                messages: problems,
            });
        }
        let id = match state.by_canonical.get(parsed.canonical()) {
            Some(&id) => id,
            None => state.schemas.keys().next_back().map_or(1, |max| max + 1),
        };
        let version = state
            .subjects
            .get(subject)
            .and_then(|v| v.keys().next_back())
            .map_or(1, |max| max + 1);
        let value = SchemaValue {
            subject: subject.to_owned(),
            version,
            id,
            schema: parsed.canonical().to_owned(),
            deleted: false,
            schema_type: None,
        };
        let value = serde_json::to_vec(&value).expect("a value serializes");
        self.write(&mut state, schema_key(subject, version), Some(value))?;
        tracing::info!(subject, version, id, "schema registered");
        Ok(id)
    }

    /// The version of `subject` whose schema is `schema`.
    pub fn lookup(
        &self,
        subject: &str,
        schema: &str,
        deleted: bool,
    ) -> RegistryResult<SubjectVersion> {
        let parsed = parse(schema)?;
        let state = self.lock();
        let found = live(&state, subject, deleted)?
            .filter(|(_, v)| state.schemas[&v.id].1.canonical() == parsed.canonical())
            .last()
            .map(|(n, v)| (*n, v.id));
        let (version, id) = found.ok_or_else(|| RegistryError::SchemaNotFound(String::new()))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id,
            schema: state.schemas[&id].0.clone(),
        })
    }

    /// Deletes a subject: soft (hides every version) or, after that,
    /// permanently. Returns the versions deleted.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> RegistryResult<Vec<u32>> {
        let mut state = self.lock();
        let versions: Vec<(u32, Version)> = state
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?
            .iter()
            .map(|(n, v)| (*n, v.clone()))
            .collect();
        let any_live = versions.iter().any(|(_, v)| !v.deleted);
        if permanent {
            if any_live {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            for (n, _) in &versions {
                self.write(&mut state, schema_key(subject, *n), None)?;
            }
            return Ok(versions.into_iter().map(|(n, _)| n).collect());
        }
        if !any_live {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        let mut deleted = Vec::new();
        for (n, v) in versions.into_iter().filter(|(_, v)| !v.deleted) {
            self.soft_delete(&mut state, subject, n, v.id)?;
            deleted.push(n);
        }
        Ok(deleted)
    }

    fn soft_delete(&self, state: &mut State, subject: &str, n: u32, id: u32) -> RegistryResult<()> {
        let value = SchemaValue {
            subject: subject.to_owned(),
            version: n,
            id,
            schema: state.schemas[&id].0.clone(),
            deleted: true,
            schema_type: None,
        };
        let value = serde_json::to_vec(&value).expect("a value serializes");
        self.write(state, schema_key(subject, n), Some(value))
    }

    /// Deletes one version: soft, or permanently after a soft delete.
    pub fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> RegistryResult<u32> {
        let mut state = self.lock();
        // A numbered version is found also when soft-deleted (to say so);
        // "latest" is the latest live one unless deleting permanently.
        let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
        let (n, version) = find_version(&state, subject, spec, include_deleted)?;
        if permanent {
            if !version.deleted {
                return Err(RegistryError::VersionNotSoftDeleted(subject.to_owned(), n));
            }
            self.write(&mut state, schema_key(subject, n), None)?;
        } else {
            if version.deleted {
                return Err(RegistryError::VersionSoftDeleted(subject.to_owned(), n));
            }
            self.soft_delete(&mut state, subject, n, version.id)?;
        }
        Ok(n)
    }

    /// The global compatibility level (BACKWARD unless set).
    pub fn global_level(&self) -> CompatibilityLevel {
        self.lock().global.unwrap_or_default()
    }

    /// Sets the global compatibility level.
    pub fn set_global_level(&self, level: CompatibilityLevel) -> RegistryResult<()> {
        let mut state = self.lock();
        let value = serde_json::to_vec(&ConfigValue {
            compatibility_level: level.as_str().into(),
        })
        .expect("a value serializes");
        self.write(&mut state, config_key(None), Some(value))
    }

    /// A subject's own level; with `default_to_global`, the global level
    /// when it has none.
    pub fn subject_level(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> RegistryResult<CompatibilityLevel> {
        let state = self.lock();
        match state.subject_levels.get(subject) {
            Some(level) => Ok(*level),
            None if default_to_global => Ok(state.global.unwrap_or_default()),
            None => Err(RegistryError::SubjectLevelCompatibilityNotConfigured(
                subject.to_owned(),
            )),
        }
    }

    /// Sets a subject's level.
    pub fn set_subject_level(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> RegistryResult<()> {
        let mut state = self.lock();
        let value = serde_json::to_vec(&ConfigValue {
            compatibility_level: level.as_str().into(),
        })
        .expect("a value serializes");
        self.write(&mut state, config_key(Some(subject)), Some(value))
    }

    /// Removes a subject's level (it follows the global one again);
    /// returns the level it had.
    pub fn delete_subject_level(&self, subject: &str) -> RegistryResult<CompatibilityLevel> {
        let mut state = self.lock();
        let previous = *state.subject_levels.get(subject).ok_or_else(|| {
            RegistryError::SubjectLevelCompatibilityNotConfigured(subject.to_owned())
        })?;
        self.write(&mut state, config_key(Some(subject)), None)?;
        Ok(previous)
    }

    /// Checks `schema` against a subject as registering it would (`None`:
    /// the live versions the subject's level names), or against one
    /// version in the level's directions. Returns the problems; empty when
    /// compatible.
    pub fn check(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        schema: &str,
    ) -> RegistryResult<Vec<String>> {
        let parsed = parse(schema)?;
        let state = self.lock();
        let level = level_of(&state, subject);
        match version {
            None => {
                if !state.subjects.contains_key(subject) {
                    return Ok(Vec::new());
                }
                check_against_live(&state, subject, level, &parsed, None)
            }
            Some(spec) => {
                let (n, _) = find_version(&state, subject, spec, false)?;
                check_against_live(&state, subject, level, &parsed, Some(n))
            }
        }
    }
}

fn parse(schema: &str) -> RegistryResult<AvroSchema> {
    let parsed =
        AvroSchema::parse(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    // Clients parse it with apache-avro too; refuse what it refuses.
    apache_avro::Schema::parse_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("{e}")))?;
    Ok(parsed)
}

fn level_of(state: &State, subject: &str) -> CompatibilityLevel {
    state
        .subject_levels
        .get(subject)
        .copied()
        .or(state.global)
        .unwrap_or_default()
}

/// The versions of `subject` (live ones, or all with `deleted`); the
/// subject must have one.
fn live<'a>(
    state: &'a State,
    subject: &str,
    deleted: bool,
) -> RegistryResult<impl Iterator<Item = (&'a u32, &'a Version)>> {
    let versions = state
        .subjects
        .get(subject)
        .filter(|versions| deleted || versions.values().any(|v| !v.deleted))
        .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
    Ok(versions.iter().filter(move |(_, v)| deleted || !v.deleted))
}

fn find_version(
    state: &State,
    subject: &str,
    spec: VersionSpec,
    deleted: bool,
) -> RegistryResult<(u32, Version)> {
    let mut versions = live(state, subject, deleted)?;
    let found = match spec {
        VersionSpec::Latest => versions.last(),
        VersionSpec::Number(n) => versions.find(|(v, _)| **v == n),
    };
    found.map(|(n, v)| (*n, v.clone())).ok_or_else(|| {
        RegistryError::VersionNotFound(match spec {
            VersionSpec::Latest => "latest".into(),
            VersionSpec::Number(n) => n.to_string(),
        })
    })
}

fn check_against_live(
    state: &State,
    subject: &str,
    level: CompatibilityLevel,
    new: &AvroSchema,
    only: Option<u32>,
) -> RegistryResult<Vec<String>> {
    let Some(versions) = state.subjects.get(subject) else {
        return Ok(Vec::new());
    };
    let earlier: Vec<(u32, &AvroSchema)> = versions
        .iter()
        .filter(|(n, v)| !v.deleted && only.is_none_or(|o| o == **n))
        .map(|(n, v)| (*n, state.schemas[&v.id].1.as_ref()))
        .collect();
    Ok(check_versions(level, new, &earlier)
        .into_iter()
        .map(|p| format!("{} ({})", p, level))
        .collect())
}

/// Applies one `_schemas` record to the state.
fn apply(state: &mut State, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
    let key: RecordKey = serde_json::from_slice(key).map_err(|e| format!("unreadable key: {e}"))?;
    match key.keytype.as_str() {
        "SCHEMA" => {
            let (Some(subject), Some(version)) = (key.subject, key.version) else {
                return Err("a SCHEMA key without subject or version".into());
            };
            let Some(value) = value else {
                // Permanent delete.
                if let Some(versions) = state.subjects.get_mut(&subject) {
                    versions.remove(&version);
                    if versions.is_empty() {
                        state.subjects.remove(&subject);
                    }
                }
                return Ok(());
            };
            let value: SchemaValue =
                serde_json::from_slice(value).map_err(|e| format!("unreadable value: {e}"))?;
            if value.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
                return Err(format!(
                    "schema type {:?} is not supported",
                    value.schema_type
                ));
            }
            if !state.schemas.contains_key(&value.id) {
                let parsed = AvroSchema::parse(&value.schema).map_err(|e| e.to_string())?;
                state
                    .by_canonical
                    .insert(parsed.canonical().to_owned(), value.id);
                state
                    .schemas
                    .insert(value.id, (value.schema.clone(), Arc::new(parsed)));
            }
            state.subjects.entry(subject).or_default().insert(
                version,
                Version {
                    id: value.id,
                    deleted: value.deleted,
                },
            );
            Ok(())
        }
        "CONFIG" => {
            let level = match value {
                None => None,
                Some(value) => {
                    let value: ConfigValue = serde_json::from_slice(value)
                        .map_err(|e| format!("unreadable config: {e}"))?;
                    Some(
                        value
                            .compatibility_level
                            .parse::<CompatibilityLevel>()
                            .map_err(|e| e.to_string())?,
                    )
                }
            };
            match (key.subject, level) {
                (None, level) => state.global = level,
                (Some(subject), Some(level)) => {
                    state.subject_levels.insert(subject, level);
                }
                (Some(subject), None) => {
                    state.subject_levels.remove(&subject);
                }
            }
            Ok(())
        }
        // Records of other kinds (NOOP, MODE, DELETE_SUBJECT from other
        // registries) change nothing brook serves.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}]}"#;
    const BAD: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"c","type":"int"}]}"#;

    #[test]
    fn register_version_lookup_and_ids() {
        let r = Registry::in_memory();
        assert_eq!(r.register("s-value", V1).unwrap(), 1);
        // Same schema, other whitespace: same id, no new version.
        assert_eq!(r.register("s-value", &V1.replace(':', ": ")).unwrap(), 1);
        assert_eq!(r.register("s-value", V2).unwrap(), 2);
        // The same schema under another subject shares the id.
        assert_eq!(r.register("t-value", V2).unwrap(), 2);
        assert_eq!(r.versions("s-value", false).unwrap(), vec![1, 2]);
        let latest = r.version("s-value", VersionSpec::Latest, false).unwrap();
        assert_eq!((latest.version, latest.id), (2, 2));
        assert_eq!(r.lookup("s-value", V1, false).unwrap().version, 1);
        assert_eq!(
            r.id_versions(2, false).unwrap(),
            vec![("s-value".into(), 2), ("t-value".into(), 1)]
        );
        let err = r.register("s-value", BAD).unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(err.status(), 409);
        assert!(
            err.to_string()
                .contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
            "{err}"
        );
        assert_eq!(r.register("s-value", "{").unwrap_err().code(), 42201);
        assert_eq!(
            r.version("nope", VersionSpec::Latest, false)
                .unwrap_err()
                .code(),
            40401
        );
        assert_eq!(
            r.version("s-value", VersionSpec::Number(9), false)
                .unwrap_err()
                .code(),
            40402
        );
        assert_eq!(r.schema(99).unwrap_err().code(), 40403);
        assert_eq!(r.lookup("s-value", BAD, false).unwrap_err().code(), 40403);
    }

    #[test]
    fn deletes_are_soft_first_then_permanent() {
        let r = Registry::in_memory();
        r.register("s", V1).unwrap();
        r.register("s", V2).unwrap();
        assert_eq!(
            r.delete_version("s", VersionSpec::Number(2), true)
                .unwrap_err()
                .code(),
            40407
        );
        assert_eq!(
            r.delete_version("s", VersionSpec::Number(2), false)
                .unwrap(),
            2
        );
        assert_eq!(
            r.delete_version("s", VersionSpec::Number(2), false)
                .unwrap_err()
                .code(),
            40406
        );
        assert_eq!(r.versions("s", false).unwrap(), vec![1]);
        assert_eq!(r.versions("s", true).unwrap(), vec![1, 2]);
        // Once every version is soft-deleted, none constrains new ones.
        assert_eq!(r.delete_subject("s", true).unwrap_err().code(), 40405);
        assert_eq!(r.delete_subject("s", false).unwrap(), vec![1]);
        assert_eq!(r.delete_subject("s", false).unwrap_err().code(), 40404);
        assert!(r.subjects(false).is_empty());
        assert_eq!(r.subjects(true), vec!["s".to_string()]);
        // Ids stay resolvable after a soft delete.
        assert_eq!(
            r.schema(2).unwrap(),
            AvroSchema::parse(V2).unwrap().canonical()
        );
        // Registering again continues the version numbers.
        r.register("s", BAD).unwrap();
        assert_eq!(r.versions("s", false).unwrap(), vec![3]);
        r.delete_subject("s", false).unwrap();
        assert_eq!(r.delete_subject("s", true).unwrap(), vec![1, 2, 3]);
        assert_eq!(r.versions("s", true).unwrap_err().code(), 40401);
    }

    #[test]
    fn levels_and_checks_follow_the_subject_then_the_global_level() {
        let r = Registry::in_memory();
        assert_eq!(r.global_level(), CompatibilityLevel::Backward);
        r.register("s", V1).unwrap();
        assert!(!r.check("s", None, BAD).unwrap().is_empty());
        assert!(
            r.check("s", Some(VersionSpec::Latest), V2)
                .unwrap()
                .is_empty()
        );
        assert!(r.check("new-subject", None, BAD).unwrap().is_empty());
        assert_eq!(
            r.check("new-subject", Some(VersionSpec::Latest), BAD)
                .unwrap_err()
                .code(),
            40401
        );
        assert_eq!(r.subject_level("s", false).unwrap_err().code(), 40408);
        r.set_subject_level("s", CompatibilityLevel::None).unwrap();
        assert!(r.check("s", None, BAD).unwrap().is_empty());
        r.set_global_level(CompatibilityLevel::Full).unwrap();
        assert_eq!(
            r.subject_level("s", false).unwrap(),
            CompatibilityLevel::None
        );
        assert_eq!(
            r.delete_subject_level("s").unwrap(),
            CompatibilityLevel::None
        );
        assert_eq!(
            r.subject_level("s", true).unwrap(),
            CompatibilityLevel::Full
        );
        // FULL: V2 (optional field added) passes, BAD does not.
        assert!(r.check("s", None, V2).unwrap().is_empty());
        assert!(!r.check("s", None, BAD).unwrap().is_empty());
    }

    #[test]
    fn a_registry_reopened_on_its_store_has_the_same_state() {
        let store = MemoryStore::new();
        {
            let r = Registry::open(Box::new(store.clone())).unwrap();
            r.register("s", V1).unwrap();
            r.register("s", V2).unwrap();
            r.register("t", V1).unwrap();
            r.set_global_level(CompatibilityLevel::Forward).unwrap();
            r.set_subject_level("t", CompatibilityLevel::None).unwrap();
            r.delete_version("s", VersionSpec::Number(1), false)
                .unwrap();
            r.delete_subject("t", false).unwrap();
            r.delete_subject("t", true).unwrap();
        }
        let r = Registry::open(Box::new(store.clone())).unwrap();
        assert_eq!(r.subjects(true), vec!["s".to_string()]);
        assert_eq!(r.versions("s", true).unwrap(), vec![1, 2]);
        assert_eq!(r.versions("s", false).unwrap(), vec![2]);
        assert_eq!(r.global_level(), CompatibilityLevel::Forward);
        assert_eq!(
            r.subject_level("t", false).unwrap(),
            CompatibilityLevel::None
        );
        assert_eq!(r.register("u", V1).unwrap(), 1);
        // FORWARD: V1 cannot read data without its field "a".
        let without_a =
            r#"{"type":"record","name":"E","fields":[{"name":"z","type":"int","default":0}]}"#;
        assert_eq!(r.register("u", without_a).unwrap_err().code(), 409);
        assert_eq!(r.register("u", BAD).unwrap(), 3);
        // Keys are Confluent's: compaction keeps the last record per key.
        let log = store.load().unwrap();
        let first = String::from_utf8(log[0].0.clone()).unwrap();
        assert_eq!(
            first,
            r#"{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}"#
        );
        // An unreadable store is refused with where it broke.
        let broken = MemoryStore::new();
        broken.append(b"not json".to_vec(), None).unwrap();
        let err = Registry::open(Box::new(broken)).unwrap_err();
        assert!(err.to_string().contains("record 0"), "{err}");
    }
}
