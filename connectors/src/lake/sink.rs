//! The exactly-once Parquet sink: a processor that writes a stream into
//! lake files and makes them visible only when the task's commit has
//! committed.
//!
//! Two-phase commit tied to the task's commit:
//!
//! 1. **Process**: rows are buffered per Hive directory (by event time) as
//!    Arrow data; a buffer that reaches `max_file_rows` or
//!    `max_file_bytes` is written out early (rolled) to the staging area.
//! 2. **Before the commit** (`flush`): every open buffer is written as a
//!    Parquet file under `_brook_staging/<table>/<task>/…`, and each staged
//!    file is recorded (final path → staged path) in the sink's pending
//!    store. The store's changelog records commit in the same transaction
//!    as the input offsets.
//! 3. **After the commit** (`committed`): each staged file is copied to its
//!    final path `<table>/<event_date=…/event_hour=…>/<topic>-<partition>-<first>-<last>.parquet`,
//!    the staged copy is deleted and so is the pending entry.
//! 4. **Recovery** (`init`): pending entries that were committed (restored
//!    from the changelog) are published — a crash between commit and
//!    publish loses nothing; staged files without a committed entry
//!    belong to aborted attempts and are deleted — nothing uncommitted
//!    becomes visible.
//!
//! Final names derive from the input range, so publishing twice overwrites
//! the same object. Readers query `<table>/**/*.parquet`; the staging area
//! is outside the table (and starts with `_`, which Hive-style readers skip
//! anyway). Files roll at the size limits and at every commit: the commit
//! interval is the roll time. With at-least-once processing, a crash
//! between the changelog and the offsets can publish a range that is then
//! processed again; exactly-once needs `exactly_once_v2`.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use brook_topology::processor::{Data, ProcessError, Processor, ProcessorContext};
use brook_topology::serdes::Utf8;
use brook_topology::store::Materialized;
use brook_topology::{KStream, Record, StreamsBuilder};
use serde::Serialize;

use super::{Compression, HivePartitioning, Lake, LakeError, ParquetFile, file_name};

/// Where the staging area of every table lives, under the lake's root.
pub const STAGING: &str = "_brook_staging";

/// How a stream is written to the lake.
#[derive(Debug, Clone)]
pub struct LakeSinkConfig {
    /// The table's directory under the lake's root.
    pub table: String,
    /// Directories by event time.
    pub partitioning: HivePartitioning,
    /// Parquet compression.
    pub compression: Compression,
    /// A file is closed early when it has this many rows...
    pub max_file_rows: usize,
    /// ... or holds about this many bytes of Arrow data.
    pub max_file_bytes: usize,
}

impl LakeSinkConfig {
    /// `table` with the defaults: hourly Hive directories, zstd, files of
    /// at most 1M rows or 128 MiB of Arrow data.
    pub fn new(table: impl Into<String>) -> Self {
        LakeSinkConfig {
            table: table.into(),
            partitioning: HivePartitioning::default(),
            compression: Compression::default(),
            max_file_rows: 1_000_000,
            max_file_bytes: 128 << 20,
        }
    }

    /// The name of the sink's store of pending files.
    pub fn pending_store(&self) -> String {
        format!("{}-lake-pending", self.table)
    }
}

/// A test hook: called with a step name (`"publish:copy"`,
/// `"publish:delete"`) before each publishing step; `true` fails the step
/// as if the process had died there.
pub type LakeFault = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Writes `stream`'s values to the lake as Parquet, exactly once (see the
/// [module docs](self)); `schema` is the Arrow schema of the values
/// ([`super::arrow_schema`] makes it from their Avro schema).
pub fn to_lake<K: Data, V: Data + Serialize>(
    builder: &StreamsBuilder,
    stream: &KStream<K, V>,
    lake: Arc<Lake>,
    schema: SchemaRef,
    config: LakeSinkConfig,
) {
    to_lake_with_fault(builder, stream, lake, schema, config, None);
}

/// [`to_lake`] with a fault hook for crash tests.
pub fn to_lake_with_fault<K: Data, V: Data + Serialize>(
    builder: &StreamsBuilder,
    stream: &KStream<K, V>,
    lake: Arc<Lake>,
    schema: SchemaRef,
    config: LakeSinkConfig,
    fault: Option<LakeFault>,
) {
    let store = config.pending_store();
    builder.add_state_store(Materialized::named(store.clone(), Utf8, Utf8));
    let config = Arc::new(config);
    stream.process_with_stores::<(), (), _>(
        move || LakeSink::<K, V>::new(lake.clone(), schema.clone(), config.clone(), fault.clone()),
        &[&store],
    );
}

/// The sink processor; see the [module docs](self).
pub struct LakeSink<K, V> {
    lake: Arc<Lake>,
    schema: SchemaRef,
    config: Arc<LakeSinkConfig>,
    fault: Option<LakeFault>,
    /// Open files by Hive directory (and the topic-partition of their rows).
    open: BTreeMap<(String, String, i32), ParquetFile>,
    /// Staged in the current transaction: final path → staged path.
    staged: BTreeMap<String, String>,
    /// Staged and recorded before the last commit, to publish after it.
    to_publish: BTreeMap<String, String>,
    task: String,
    _types: PhantomData<fn(K, V)>,
}

fn lake_error(e: LakeError) -> ProcessError {
    ProcessError::user(e)
}

impl<K, V> LakeSink<K, V> {
    /// A sink writing to `lake` (one per task; [`to_lake`] wires it).
    pub fn new(
        lake: Arc<Lake>,
        schema: SchemaRef,
        config: Arc<LakeSinkConfig>,
        fault: Option<LakeFault>,
    ) -> Self {
        LakeSink {
            lake,
            schema,
            config,
            fault,
            open: BTreeMap::new(),
            staged: BTreeMap::new(),
            to_publish: BTreeMap::new(),
            task: String::new(),
            _types: PhantomData,
        }
    }

    fn staging_root(&self) -> String {
        format!("{STAGING}/{}/{}", self.config.table, self.task)
    }

    fn check_fault(&self, step: &str) -> Result<(), ProcessError> {
        match &self.fault {
            Some(f) if f(step) => Err(ProcessError::user(format!("injected lake fault at {step}"))),
            _ => Ok(()),
        }
    }

    /// Writes one open file to the staging area.
    fn stage(&mut self, key: (String, String, i32), file: ParquetFile) -> Result<(), ProcessError> {
        let Some((first, last)) = file.offsets() else {
            return Ok(());
        };
        let (dir, topic, partition) = key;
        let name = file_name(&topic, partition, first, last);
        let final_path = format!("{}/{dir}/{name}", self.config.table);
        let staged_path = format!("{}/{dir}/{name}", self.staging_root());
        let bytes = file.finish(self.config.compression).map_err(lake_error)?;
        self.lake.put(&staged_path, bytes).map_err(lake_error)?;
        self.staged.insert(final_path, staged_path);
        Ok(())
    }

    /// Makes a staged file visible at its final path (idempotent).
    fn publish(&self, final_path: &str, staged_path: &str) -> Result<(), ProcessError> {
        self.check_fault("publish:copy")?;
        match self.lake.copy(staged_path, final_path) {
            Ok(()) => {}
            Err(e) => {
                // Published before, and its staged copy already removed?
                if self.lake.exists(final_path).map_err(lake_error)? {
                    return Ok(());
                }
                return Err(ProcessError::user(format!(
                    "the committed lake file {final_path} cannot be published from {staged_path}: {e}"
                )));
            }
        }
        self.check_fault("publish:delete")?;
        self.lake.delete(staged_path).map_err(lake_error)
    }
}

impl<K: Data, V: Data + Serialize> Processor<K, V, (), ()> for LakeSink<K, V> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, (), ()>) -> Result<(), ProcessError> {
        self.task = ctx.task_id().to_string();
        let store_name = self.config.pending_store();
        // Committed but maybe unpublished: publish (again).
        let pending = ctx.key_value_store::<String, String>(&store_name)?.all()?;
        for (final_path, staged_path) in &pending {
            self.publish(final_path, staged_path)?;
        }
        let mut store = ctx.key_value_store::<String, String>(&store_name)?;
        for (final_path, _) in &pending {
            store.delete(final_path)?;
        }
        // Staged but never committed: an aborted attempt's; remove.
        let committed: BTreeSet<&String> = pending.iter().map(|(_, s)| s).collect();
        for leftover in self.lake.list(&self.staging_root()).map_err(lake_error)? {
            if !committed.contains(&leftover) {
                self.lake.delete(&leftover).map_err(lake_error)?;
            }
        }
        if !pending.is_empty() {
            tracing::info!(table = %self.config.table, task = %self.task, files = pending.len(), "published lake files committed before a restart");
        }
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, (), ()>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let Some(meta) = ctx.record_metadata() else {
            return Err(ProcessError::user(
                "the lake sink needs each record's source offset (it names files by them)",
            ));
        };
        let (topic, partition, offset) = (meta.topic.to_string(), meta.partition, meta.offset);
        let key = (
            self.config.partitioning.directory(record.timestamp),
            topic,
            partition,
        );
        let file = match self.open.get_mut(&key) {
            Some(f) => f,
            None => self
                .open
                .entry(key.clone())
                .or_insert(ParquetFile::new(self.schema.clone()).map_err(lake_error)?),
        };
        file.push(&record.value, offset, 0).map_err(lake_error)?;
        if file.rows() >= self.config.max_file_rows
            || file.arrow_bytes() >= self.config.max_file_bytes
        {
            let file = self.open.remove(&key).expect("the file just written to");
            self.stage(key, file)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, (), ()>) -> Result<(), ProcessError> {
        for (key, file) in std::mem::take(&mut self.open) {
            self.stage(key, file)?;
        }
        if self.staged.is_empty() {
            return Ok(());
        }
        let mut store = ctx.key_value_store::<String, String>(&self.config.pending_store())?;
        for (final_path, staged_path) in &self.staged {
            store.put(final_path, staged_path)?;
        }
        self.to_publish.append(&mut self.staged);
        Ok(())
    }

    fn committed(&mut self, ctx: &mut ProcessorContext<'_, (), ()>) -> Result<(), ProcessError> {
        let published = std::mem::take(&mut self.to_publish);
        for (final_path, staged_path) in &published {
            self.publish(final_path, staged_path)?;
        }
        let mut store = ctx.key_value_store::<String, String>(&self.config.pending_store())?;
        for final_path in published.keys() {
            store.delete(final_path)?;
        }
        Ok(())
    }
}
