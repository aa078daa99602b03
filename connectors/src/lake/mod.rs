//! The data lake: records as Parquet files on an object store.
//!
//! This module holds the pieces a lake sink is made of:
//!
//! - [`arrow_schema`]: the Arrow schema of a table, from the Avro schema
//!   of its records;
//! - [`ParquetFile`]: rows (any `Serialize` type matching that schema) of
//!   one file, buffered as Arrow data and written as Parquet with zstd or
//!   snappy compression;
//! - [`HivePartitioning`]: the directory of a record by its event time,
//!   `event_date=YYYY-MM-DD/event_hour=HH` by default;
//! - [`file_name`]: a file's name from the topic, partition and the first
//!   and last offsets it holds, so a replay of the same records writes the
//!   same name (and overwrites) instead of a duplicate;
//! - [`Lake`]: an `object_store` location — a local directory by default,
//!   or `s3://bucket/prefix` on S3 or an S3-compatible server ([`S3Options`]:
//!   endpoint, path-style, credentials) — to put, copy, list and delete
//!   files in;
//! - [`sink`]: the exactly-once sink processor built from them, which
//!   stages files per transaction and publishes them after the task's
//!   commit.

pub mod arrow_schema;
pub mod sink;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

pub use arrow_schema::{MappingError, arrow_schema};

/// Why the lake could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The table's schema has no Arrow form.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A row does not fit the table's schema.
    #[error("a row does not fit the table's schema: {0}")]
    Row(String),
    /// Parquet encoding failed.
    #[error("writing Parquet: {0}")]
    Parquet(String),
    /// The object store failed.
    #[error("object store {location}: {message}")]
    Store {
        /// Which object or URL.
        location: String,
        /// What it said.
        message: String,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
}

/// Parquet compression of the lake's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at a level (1–22; 3 is a good default).
    Zstd(i32),
    /// snappy.
    Snappy,
    /// none.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Compression::Zstd(3)),
            "snappy" => Ok(Compression::Snappy),
            "none" | "uncompressed" => Ok(Compression::None),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Ok(Compression::Zstd(level)),
                _ => Err(format!(
                    "unknown compression {other:?} (zstd, zstd:<1-22>, snappy or none)"
                )),
            },
        }
    }
}

impl Compression {
    fn parquet(self) -> Result<ParquetCompression, LakeError> {
        Ok(match self {
            Compression::Zstd(level) => ParquetCompression::ZSTD(
                ZstdLevel::try_new(level).map_err(|e| LakeError::Config(e.to_string()))?,
            ),
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::None => ParquetCompression::UNCOMPRESSED,
        })
    }
}

/// Rows decoded into Arrow batches of this many rows.
const BATCH_ROWS: usize = 8192;

/// The rows of one Parquet file, buffered as Arrow data.
pub struct ParquetFile {
    schema: SchemaRef,
    decoder: Decoder,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    first_offset: Option<i64>,
    last_offset: i64,
}

impl std::fmt::Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFile")
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .field("offsets", &(self.first_offset, self.last_offset))
            .finish()
    }
}

impl ParquetFile {
    /// An empty file of a table with `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self, LakeError> {
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .build_decoder()
            .map_err(|e| LakeError::Row(e.to_string()))?;
        Ok(ParquetFile {
            schema,
            decoder,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            first_offset: None,
            last_offset: -1,
        })
    }

    /// Adds a row read from `offset` of its input; `size` (its encoded
    /// size, say) feeds [`ParquetFile::approx_bytes`] for rolling files.
    pub fn push<T: Serialize>(
        &mut self,
        row: &T,
        offset: i64,
        size: usize,
    ) -> Result<(), LakeError> {
        self.decoder
            .serialize(std::slice::from_ref(row))
            .map_err(|e| LakeError::Row(e.to_string()))?;
        self.rows += 1;
        self.bytes += size;
        self.first_offset.get_or_insert(offset);
        self.last_offset = self.last_offset.max(offset);
        if self.decoder.len() >= BATCH_ROWS {
            self.flush_decoder()?;
        }
        Ok(())
    }

    fn flush_decoder(&mut self) -> Result<(), LakeError> {
        if let Some(batch) = self
            .decoder
            .flush()
            .map_err(|e| LakeError::Row(e.to_string()))?
        {
            self.batches.push(batch);
        }
        Ok(())
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The sum of the sizes given to [`ParquetFile::push`].
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Memory of the Arrow data decoded so far (complete batches of 8192
    /// rows), bytes: the same for the same rows, so files roll at the same
    /// rows when the input is replayed.
    pub fn arrow_bytes(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    /// The first and last input offsets of its rows (`None` when empty).
    pub fn offsets(&self) -> Option<(i64, i64)> {
        self.first_offset.map(|first| (first, self.last_offset))
    }

    /// The Parquet bytes of the file.
    pub fn finish(mut self, compression: Compression) -> Result<Vec<u8>, LakeError> {
        self.flush_decoder()?;
        let properties = WriterProperties::builder()
            .set_compression(compression.parquet()?)
            .build();
        let mut out = Vec::with_capacity(self.bytes / 2 + 1024);
        let mut writer = ArrowWriter::try_new(&mut out, self.schema.clone(), Some(properties))
            .map_err(|e| LakeError::Parquet(e.to_string()))?;
        for batch in &self.batches {
            writer
                .write(batch)
                .map_err(|e| LakeError::Parquet(e.to_string()))?;
        }
        writer
            .close()
            .map_err(|e| LakeError::Parquet(e.to_string()))?;
        Ok(out)
    }
}

/// Where a record goes by its event time (UTC): Hive-style directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HivePartitioning {
    /// The date directory's key (`event_date`).
    pub date_key: String,
    /// The hour directory's key (`event_hour`); `None`: daily directories.
    pub hour_key: Option<String>,
}

impl Default for HivePartitioning {
    fn default() -> Self {
        HivePartitioning {
            date_key: "event_date".into(),
            hour_key: Some("event_hour".into()),
        }
    }
}

impl HivePartitioning {
    /// `event_date=YYYY-MM-DD/event_hour=HH` for `timestamp_ms`.
    pub fn directory(&self, timestamp_ms: i64) -> String {
        let days = timestamp_ms.div_euclid(86_400_000);
        let hour = timestamp_ms.rem_euclid(86_400_000) / 3_600_000;
        let (y, m, d) = civil_from_days(days);
        let mut dir = format!("{}={y:04}-{m:02}-{d:02}", self.date_key);
        if let Some(hour_key) = &self.hour_key {
            dir.push_str(&format!("/{hour_key}={hour:02}"));
        }
        dir
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A file's name from where its rows came from: replaying the same input
/// range gives the same name. Offsets are zero-padded so that names sort
/// by offset.
pub fn file_name(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{topic}-{partition}-{first:020}-{last:020}.parquet")
}

/// A place for lake files: a directory or bucket prefix on an object store.
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

/// Settings of an S3-compatible lake (`s3://bucket/prefix`). Unset ones
/// come from the usual `AWS_*` environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT`, ...).
#[derive(Clone, Default)]
pub struct S3Options {
    /// The endpoint of an S3-compatible server (MinIO, ...): `http://host:9000`.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP (local servers).
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`, as MinIO wants) instead
    /// of virtual-hosted ones (`bucket.endpoint/key`).
    pub path_style: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .finish()
    }
}

impl Lake {
    /// A lake at `url`: `file:///dir`, a plain directory path (created if
    /// missing), `memory://` (tests), or `s3://bucket/prefix` with
    /// settings from the `AWS_*` environment variables.
    pub fn open(url: &str) -> Result<Lake, LakeError> {
        Lake::open_with(url, &S3Options::default())
    }

    /// A lake at `url`, with explicit S3 settings for `s3://` URLs.
    pub fn open_with(url: &str, s3: &S3Options) -> Result<Lake, LakeError> {
        let store: Arc<dyn ObjectStore> = if url == "memory://" {
            Arc::new(object_store::memory::InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LakeError::Config(format!(
                    "lake URL {url:?} names no bucket"
                )));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(s3.allow_http)
                .with_virtual_hosted_style_request(!s3.path_style);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            builder = builder.with_region(s3.region.as_deref().unwrap_or("us-east-1"));
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let store = builder.build().map_err(|e| LakeError::Store {
                location: url.into(),
                message: e.to_string(),
            })?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            }
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            if dir.contains("://") {
                return Err(LakeError::Config(format!(
                    "lake URL {url:?}: expected a directory, file://, s3:// or memory://"
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| LakeError::Store {
                location: url.into(),
                message: format!("creating the directory: {e}"),
            })?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    LakeError::Store {
                        location: url.into(),
                        message: e.to_string(),
                    }
                })?,
            )
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LakeError::Config(format!("cannot start the lake's runtime: {e}")))?;
        Ok(Lake {
            store,
            url: url.to_owned(),
            runtime,
        })
    }

    fn store_error(&self, location: &str, e: object_store::Error) -> LakeError {
        LakeError::Store {
            location: format!("{}/{location}", self.url.trim_end_matches('/')),
            message: e.to_string(),
        }
    }

    /// Writes `bytes` to `path` (replacing what was there).
    pub fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), LakeError> {
        let location = ObjectPath::from(path);
        self.runtime
            .block_on(self.store.put(&location, bytes.into()))
            .map(drop)
            .map_err(|e| self.store_error(path, e))
    }

    /// Copies `from` to `to` (replacing what was there).
    pub fn copy(&self, from: &str, to: &str) -> Result<(), LakeError> {
        self.runtime
            .block_on(
                self.store
                    .copy(&ObjectPath::from(from), &ObjectPath::from(to)),
            )
            .map_err(|e| self.store_error(from, e))
    }

    /// Deletes `path`; a missing object is not an error.
    pub fn delete(&self, path: &str) -> Result<(), LakeError> {
        match self
            .runtime
            .block_on(self.store.delete(&ObjectPath::from(path)))
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(path, e)),
        }
    }

    /// Every object under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        use futures::TryStreamExt;
        let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(prefix_path.as_ref()).try_collect())
            .map_err(|e| self.store_error(prefix, e))?;
        let mut paths: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        paths.sort();
        Ok(paths)
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> Result<bool, LakeError> {
        match self
            .runtime
            .block_on(self.store.head(&ObjectPath::from(path)))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error(path, e)),
        }
    }

    /// The bytes of `path`.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, LakeError> {
        self.runtime
            .block_on(async { self.store.get(&ObjectPath::from(path)).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.store_error(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_directories_by_utc_event_time() {
        let p = HivePartitioning::default();
        assert_eq!(p.directory(0), "event_date=1970-01-01/event_hour=00");
        // 2026-11-23T01:52:05Z
        assert_eq!(
            p.directory(1_795_398_725_000),
            "event_date=2026-11-23/event_hour=01"
        );
        assert_eq!(
            p.directory(951_782_400_000),
            "event_date=2000-02-29/event_hour=00"
        );
        assert_eq!(p.directory(-1), "event_date=1969-12-31/event_hour=23");
        let daily = HivePartitioning {
            date_key: "dt".into(),
            hour_key: None,
        };
        assert_eq!(daily.directory(1_795_398_725_000), "dt=2026-11-23");
    }

    #[test]
    fn file_names_sort_by_offset_and_compression_parses() {
        assert_eq!(
            file_name("orders", 3, 7, 1200),
            "orders-3-00000000000000000007-00000000000000001200.parquet"
        );
        assert!(file_name("t", 0, 9, 9) < file_name("t", 0, 10, 10));
        assert_eq!(
            "zstd:9".parse::<Compression>().unwrap(),
            Compression::Zstd(9)
        );
        assert_eq!(
            "snappy".parse::<Compression>().unwrap(),
            Compression::Snappy
        );
        assert!("zstd:99".parse::<Compression>().is_err());
        assert!("lzo".parse::<Compression>().is_err());
    }
}
