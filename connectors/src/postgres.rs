//! The PostgreSQL sink: a table that mirrors a stream by key.
//!
//! Each record upserts the row with its key (`INSERT ... ON CONFLICT (key)
//! DO UPDATE`); a tombstone (a null value) deletes it. The table is created
//! from the values' Avro schema if missing: a `key TEXT PRIMARY KEY`
//! column and one column per field (`string`/enum → `TEXT`, `int` →
//! `INTEGER`, `long` → `BIGINT`, `float` → `REAL`, `double` → `DOUBLE
//! PRECISION`, `boolean` → `BOOLEAN`, `timestamp-millis` → `TIMESTAMPTZ`,
//! records, arrays and maps → `JSONB`; `["null", T]` nullable).
//!
//! Writes are batched: records are coalesced per key in memory and written
//! before each commit of the task (the processor's `flush`), in one
//! database transaction, with PostgreSQL converting each JSON row to the
//! table's column types (`jsonb_populate_recordset`). The database write
//! is not part of the Kafka transaction, but it is idempotent: a replay
//! after a crash upserts and deletes the same keys to the same values, so
//! the table ends as if each record was applied once.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use brook_topology::processor::{Data, ProcessError, Processor, ProcessorContext};
use brook_topology::{KStream, Record};
use serde::Serialize;
use serde_json::Value as Json;

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The schema has no table form.
    #[error("cannot make a table of the schema: {0}")]
    Schema(String),
    /// The database failed.
    #[error("PostgreSQL: {0}")]
    Database(String),
}

fn db(e: postgres::Error) -> PostgresError {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{}: {}", db.code().code(), db.message());
    }
    PostgresError::Database(text)
}

/// A column: name, SQL type, whether it holds a timestamp in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    sql: &'static str,
    millis: bool,
}

fn columns(schema: &Schema) -> Result<Vec<Column>, PostgresError> {
    let Schema::Record(record) = schema else {
        return Err(PostgresError::Schema(
            "the top-level schema must be a record".into(),
        ));
    };
    let mut out = Vec::new();
    for field in &record.fields {
        if field.name == "key" {
            return Err(PostgresError::Schema(
                "a field named \"key\" would clash with the key column".into(),
            ));
        }
        let inner = match &field.schema {
            Schema::Union(u) => {
                let non_null: Vec<&Schema> = u
                    .variants()
                    .iter()
                    .filter(|v| !matches!(v, Schema::Null))
                    .collect();
                match non_null[..] {
                    [one] => one,
                    _ => {
                        return Err(PostgresError::Schema(format!(
                            "field {}: only [\"null\", T] unions have a column type",
                            field.name
                        )));
                    }
                }
            }
            other => other,
        };
        let (sql, millis) = match inner {
            Schema::String | Schema::Enum(_) | Schema::Uuid(_) => ("TEXT", false),
            Schema::Int => ("INTEGER", false),
            Schema::Long => ("BIGINT", false),
            Schema::Float => ("REAL", false),
            Schema::Double => ("DOUBLE PRECISION", false),
            Schema::Boolean => ("BOOLEAN", false),
            Schema::Bytes | Schema::Fixed(_) => ("BYTEA", false),
            Schema::TimestampMillis => ("TIMESTAMPTZ", true),
            Schema::Date => ("INTEGER", false),
            Schema::Record(_) | Schema::Array(_) | Schema::Map(_) | Schema::Ref { .. } => {
                ("JSONB", false)
            }
            other => {
                return Err(PostgresError::Schema(format!(
                    "field {}: no column type for {other:?}",
                    field.name
                )));
            }
        };
        out.push(Column {
            name: field.name.clone(),
            sql,
            millis,
        });
    }
    Ok(out)
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for epoch milliseconds.
fn iso_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::lake::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A table mirroring a stream by key.
pub struct PostgresTable {
    client: Mutex<postgres::Client>,
    table: String,
    columns: Vec<Column>,
    upsert: String,
    delete: String,
}

impl std::fmt::Debug for PostgresTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTable")
            .field("table", &self.table)
            .finish()
    }
}

impl PostgresTable {
    /// Connects (`conninfo`: `host=... port=... user=... dbname=...`) and
    /// creates `table` from `schema` if it does not exist.
    pub fn open(conninfo: &str, table: &str, schema: &Schema) -> Result<Self, PostgresError> {
        let columns = columns(schema)?;
        let mut client = postgres::Client::connect(conninfo, postgres::NoTls).map_err(db)?;
        let defs: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), c.sql))
            .collect();
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, {})",
                quote(table),
                defs.join(", ")
            ))
            .map_err(db)?;
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let upsert = format!(
            "INSERT INTO {t} SELECT * FROM jsonb_populate_recordset(NULL::{t}, $1::text::jsonb) \
             ON CONFLICT (key) DO UPDATE SET ({cols}) = ({excluded})",
            t = quote(table),
            cols = names.join(", "),
            excluded = names
                .iter()
                .map(|n| format!("EXCLUDED.{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let delete = format!("DELETE FROM {} WHERE key = ANY($1)", quote(table));
        Ok(PostgresTable {
            client: Mutex::new(client),
            table: table.to_owned(),
            columns,
            upsert,
            delete,
        })
    }

    /// Applies upserts (`Some(row)`) and deletes (`None`) by key, in one
    /// database transaction.
    pub fn apply(&self, changes: &BTreeMap<String, Option<Json>>) -> Result<(), PostgresError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        let mut deletes = Vec::new();
        for (key, change) in changes {
            match change {
                None => deletes.push(key.clone()),
                Some(row) => {
                    let mut object = match row {
                        Json::Object(o) => o.clone(),
                        other => {
                            return Err(PostgresError::Schema(format!(
                                "the value of key {key} is not a record: {other}"
                            )));
                        }
                    };
                    for c in self.columns.iter().filter(|c| c.millis) {
                        if let Some(ms) = object.get(&c.name).and_then(Json::as_i64) {
                            object.insert(c.name.clone(), Json::String(iso_millis(ms)));
                        }
                    }
                    object.insert("key".into(), Json::String(key.clone()));
                    rows.push(Json::Object(object));
                }
            }
        }
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = client.transaction().map_err(db)?;
        if !rows.is_empty() {
            tx.execute(&self.upsert, &[&Json::Array(rows).to_string()])
                .map_err(db)?;
        }
        if !deletes.is_empty() {
            tx.execute(&self.delete, &[&deletes]).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Runs a query (tests and tools).
    pub fn query(&self, sql: &str) -> Result<Vec<postgres::Row>, PostgresError> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query(sql, &[])
            .map_err(db)
    }
}

/// Mirrors `stream` into `table` by key; see the [module docs](self).
/// Keys become text (a JSON string's content, other JSON as its text);
/// `None` values delete.
pub fn to_postgres<K: Data + Serialize, V: Data + Serialize>(
    stream: &KStream<K, Option<V>>,
    table: Arc<PostgresTable>,
) {
    stream.process::<(), (), _>(move || PostgresSink::<K, V> {
        table: table.clone(),
        pending: BTreeMap::new(),
        _types: PhantomData,
    });
}

struct PostgresSink<K, V> {
    table: Arc<PostgresTable>,
    pending: BTreeMap<String, Option<Json>>,
    _types: PhantomData<fn(K, V)>,
}

fn user(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::user(e.to_string())
}

impl<K: Data + Serialize, V: Data + Serialize> Processor<K, Option<V>, (), ()>
    for PostgresSink<K, V>
{
    fn process(
        &mut self,
        _ctx: &mut ProcessorContext<'_, (), ()>,
        record: Record<K, Option<V>>,
    ) -> Result<(), ProcessError> {
        let key = match serde_json::to_value(&record.key).map_err(user)? {
            Json::String(s) => s,
            Json::Null => return Err(user("the PostgreSQL sink needs a key")),
            other => other.to_string(),
        };
        let row = record
            .value
            .map(|v| serde_json::to_value(&v))
            .transpose()
            .map_err(user)?;
        self.pending.insert(key, row);
        Ok(())
    }

    fn flush(&mut self, _ctx: &mut ProcessorContext<'_, (), ()>) -> Result<(), ProcessError> {
        let pending = std::mem::take(&mut self.pending);
        self.table.apply(&pending).map_err(user)
    }
}

/// Settings of a [`PostgresSource`].
#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    /// The source's name: the key of its offset in the offsets topic.
    pub name: String,
    /// The table (or view) to read.
    pub table: String,
    /// A strictly increasing integer column (a `BIGSERIAL` id): rows are
    /// read in its order, and the largest value read is the offset.
    pub incrementing_column: String,
    /// The column whose text is the record key (null key without).
    pub key_column: Option<String>,
    /// The topic the rows go to, as JSON objects.
    pub topic: String,
    /// Where offsets are stored (compacted, one partition).
    pub offsets_topic: String,
    /// Rows per poll at most.
    pub max_rows: i64,
    /// Rows and offset in one transaction.
    pub exactly_once: bool,
}

impl PostgresSourceConfig {
    /// A source `name` of `table` by `incrementing_column` into `topic`:
    /// offsets in `brook-source-offsets`, 10 000 rows per poll,
    /// at-least-once.
    pub fn new(
        name: impl Into<String>,
        table: impl Into<String>,
        incrementing_column: impl Into<String>,
        topic: impl Into<String>,
    ) -> Self {
        PostgresSourceConfig {
            name: name.into(),
            table: table.into(),
            incrementing_column: incrementing_column.into(),
            key_column: None,
            topic: topic.into(),
            offsets_topic: "brook-source-offsets".into(),
            max_rows: 10_000,
            exactly_once: false,
        }
    }
}

/// Polls a PostgreSQL table for new rows (by an incrementing column) into
/// a topic, Kafka Connect's JDBC source in `incrementing` mode: each poll
/// reads the rows past the stored offset in column order, sends each as a
/// JSON object, and stores the largest value read in the offsets topic (in
/// one transaction with `exactly_once`), so a restart resumes after it.
/// Rows changed in place are not seen again (use a table of events).
pub struct PostgresSource {
    config: PostgresSourceConfig,
    client: postgres::Client,
    producer: Box<dyn brook_cluster::ClusterProducer>,
    query: String,
    offset: i64,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("name", &self.config.name)
            .field("offset", &self.offset)
            .finish()
    }
}

impl PostgresSource {
    /// Connects and resumes from the stored offset (the start without one).
    pub fn open(
        cluster: Arc<dyn brook_cluster::Cluster>,
        conninfo: &str,
        config: PostgresSourceConfig,
    ) -> Result<Self, crate::source::SourceError> {
        use crate::source::{SourceError, latest_offset, source_producer};
        let producer = source_producer(
            cluster.as_ref(),
            &config.name,
            &config.offsets_topic,
            &format!("{}-dead-letters", config.name),
            config.exactly_once,
        )?;
        let offset = match latest_offset(cluster.as_ref(), &config.offsets_topic, &config.name)? {
            None => i64::MIN,
            Some(bytes) => serde_json::from_slice::<Json>(&bytes)
                .ok()
                .and_then(|j| j["offset"].as_i64())
                .ok_or_else(|| SourceError::Position {
                    name: config.name.clone(),
                    reason: String::from_utf8_lossy(&bytes).into_owned(),
                })?,
        };
        let client = postgres::Client::connect(conninfo, postgres::NoTls).map_err(|e| {
            SourceError::Cluster {
                what: format!("connecting to PostgreSQL for source {}", config.name),
                message: db(e).to_string(),
            }
        })?;
        let key = config
            .key_column
            .as_ref()
            .map_or("NULL".to_owned(), |k| format!("{}::text", quote(k)));
        let inc = quote(&config.incrementing_column);
        let query = format!(
            "SELECT {inc}::bigint, {key}, row_to_json(t)::text FROM {table} t \
             WHERE {inc} > $1 ORDER BY {inc} LIMIT $2",
            table = quote(&config.table)
        );
        tracing::info!(source = %config.name, table = %config.table, offset, "PostgreSQL source resumes");
        Ok(PostgresSource {
            config,
            client,
            producer,
            query,
            offset,
        })
    }

    /// The largest incrementing value read so far.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Reads the next rows (at most `max_rows`) into the topic and stores
    /// the offset; returns the rows read.
    pub fn poll(&mut self) -> Result<usize, crate::source::SourceError> {
        use crate::source::{SourceError, now_ms, send_with_offset};
        use brook_cluster::ProducedRecord;
        let rows = self
            .client
            .query(&self.query, &[&self.offset, &self.config.max_rows])
            .map_err(|e| SourceError::Cluster {
                what: format!("reading {}", self.config.table),
                message: db(e).to_string(),
            })?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            return Ok(0);
        };
        let records: Vec<ProducedRecord> = rows
            .iter()
            .map(|row| ProducedRecord {
                topic: self.config.topic.clone(),
                partition: None,
                key: row.get::<_, Option<String>>(1).map(String::into_bytes),
                value: Some(row.get::<_, String>(2).into_bytes()),
                timestamp: now_ms(),
                headers: brook_topology::Headers::new(),
            })
            .collect();
        let offset = ProducedRecord {
            topic: self.config.offsets_topic.clone(),
            partition: Some(0),
            key: Some(self.config.name.clone().into_bytes()),
            value: Some(
                serde_json::json!({"table": self.config.table, "offset": last})
                    .to_string()
                    .into_bytes(),
            ),
            timestamp: now_ms(),
            headers: brook_topology::Headers::new(),
        };
        let n = records.len();
        send_with_offset(
            self.producer.as_mut(),
            self.config.exactly_once,
            records,
            offset,
            &format!(
                "sending rows of {} to {}",
                self.config.table, self.config.topic
            ),
        )?;
        self.offset = last;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_iso_8601_utc() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_795_398_725_123), "2026-11-23T01:52:05.123Z");
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
