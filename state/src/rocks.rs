//! A key-value store in RocksDB.
//!
//! One RocksDB instance per store and task, as in Kafka Streams, so a task's
//! state can be wiped, restored or moved on its own. Memory is bounded per
//! application instance, not per store: every store opened with the same
//! [`RocksDbEnv`] shares one LRU block cache, and memtables are charged to
//! that cache through one write-buffer manager, so adding stores or keys
//! does not add memory beyond the configured budget.
//!
//! Writes skip RocksDB's write-ahead log, as in Kafka Streams: the changelog
//! is the log. [`flush`](KeyValueBytes::flush) writes memtables to disk
//! before a checkpoint names the changelog offset they reflect, so after a
//! crash the store holds at least what its checkpoint says (a prefix of the
//! changelog) and restore replays the rest.

use std::path::{Path, PathBuf};

use brook_topology::store::{KeyValueBytes, StoreError, StoreResult, is_empty_range};
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteBufferManager, WriteOptions,
};

/// Memory budget shared by all RocksDB stores of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Block cache capacity, bytes; memtables are charged against it too.
    pub cache_bytes: usize,
    /// Memtable budget across all stores, bytes (at most `cache_bytes`).
    pub write_buffer_bytes: usize,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
        }
    }
}

/// The shared cache and write-buffer manager for every store of an instance.
#[derive(Clone)]
pub struct RocksDbEnv {
    cache: Cache,
    write_buffers: WriteBufferManager,
    config: RocksDbConfig,
}

impl std::fmt::Debug for RocksDbEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbEnv")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RocksDbEnv {
    /// A budget of `config`.
    pub fn new(config: RocksDbConfig) -> Self {
        let cache = Cache::new_lru_cache(config.cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes.min(config.cache_bytes),
            false,
            cache.clone(),
        );
        RocksDbEnv {
            cache,
            write_buffers,
            config,
        }
    }

    /// Bytes the shared cache holds now (blocks and charged memtables).
    pub fn cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// The configured budget.
    pub fn config(&self) -> RocksDbConfig {
        self.config
    }

    fn options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_cache_index_and_filter_blocks(true);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_block_based_table_factory(&table);
        options.set_write_buffer_manager(&self.write_buffers);
        options
    }
}

/// A RocksDB database holding one store of one task.
pub struct RocksDbKeyValueStore {
    db: rocksdb::DB,
    path: PathBuf,
    write: WriteOptions,
}

impl std::fmt::Debug for RocksDbKeyValueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbKeyValueStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksDbKeyValueStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, env: &RocksDbEnv) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let db = rocksdb::DB::open(&env.options(), &path)
            .map_err(|e| StoreError::new("open", format!("RocksDB at {}: {e}", path.display())))?;
        Ok(Self::wrap(db, path))
    }

    /// Opens an existing store for reading only (inspection tools); fails
    /// if there is no store at `path`. Works while the application runs.
    pub fn open_read_only(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let mut options = Options::default();
        options.create_if_missing(false);
        let db = rocksdb::DB::open_for_read_only(&options, &path, false)
            .map_err(|e| StoreError::new("open", format!("RocksDB at {}: {e}", path.display())))?;
        Ok(Self::wrap(db, path))
    }

    fn wrap(db: rocksdb::DB, path: PathBuf) -> Self {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        RocksDbKeyValueStore { db, path, write }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, operation: &'static str, e: rocksdb::Error) -> StoreError {
        StoreError::new(
            operation,
            format!("RocksDB at {}: {e}", self.path.display()),
        )
    }
}

impl KeyValueBytes for RocksDbKeyValueStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.db.get(key).map_err(|e| self.error("get", e))
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        match value {
            Some(value) => self
                .db
                .put_opt(key, value, &self.write)
                .map_err(|e| self.error("put", e)),
            None => self
                .db
                .delete_opt(key, &self.write)
                .map_err(|e| self.error("delete", e)),
        }
    }

    fn write_batch(&mut self, batch: &[(Vec<u8>, Option<Vec<u8>>)]) -> StoreResult<()> {
        let mut write = WriteBatch::default();
        for (key, value) in batch {
            match value {
                Some(value) => write.put(key, value),
                None => write.delete(key),
            }
        }
        self.db
            .write_opt(write, &self.write)
            .map_err(|e| self.error("write_batch", e))
    }

    fn flush(&mut self) -> StoreResult<()> {
        self.db.flush().map_err(|e| self.error("flush", e))
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        let mut read = ReadOptions::default();
        if let Some(from) = from {
            read.set_iterate_lower_bound(from.to_vec());
        }
        if let Some(to) = to {
            read.set_iterate_upper_bound(to.to_vec());
        }
        self.db
            .iterator_opt(IteratorMode::Start, read)
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .map_err(|e| self.error("range", e))
            })
            .collect()
    }

    fn len(&self) -> StoreResult<usize> {
        let mut count = 0;
        for entry in self.db.iterator(IteratorMode::Start) {
            entry.map_err(|e| self.error("len", e))?;
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn rocksdb_store_behaves_like_every_store() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::new("tempdir", e.to_string()))?;
        let env = RocksDbEnv::new(RocksDbConfig::default());
        conformance::check(&mut RocksDbKeyValueStore::open(dir.path().join("s"), &env)?)
    }

    #[test]
    fn data_survives_reopening() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::new("tempdir", e.to_string()))?;
        let env = RocksDbEnv::new(RocksDbConfig::default());
        {
            let mut store = RocksDbKeyValueStore::open(dir.path().join("s"), &env)?;
            store.put(b"k", Some(b"v"))?;
            store.put(b"gone", Some(b"x"))?;
            store.put(b"gone", None)?;
            store.write_batch(&[
                (b"b1".to_vec(), Some(b"1".to_vec())),
                (b"b2".to_vec(), Some(b"2".to_vec())),
                (b"b1".to_vec(), None),
            ])?;
            store.flush()?;
        }
        let read_only = RocksDbKeyValueStore::open_read_only(dir.path().join("s"))?;
        assert_eq!(read_only.get(b"b2")?, Some(b"2".to_vec()));
        drop(read_only);
        let store = RocksDbKeyValueStore::open(dir.path().join("s"), &env)?;
        assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
        assert_eq!(store.get(b"gone")?, None);
        assert_eq!(store.get(b"b1")?, None);
        assert_eq!(store.len()?, 2);
        Ok(())
    }

    #[test]
    fn stores_share_one_bounded_cache() -> StoreResult<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::new("tempdir", e.to_string()))?;
        let config = RocksDbConfig {
            cache_bytes: 4 << 20,
            write_buffer_bytes: 2 << 20,
        };
        let env = RocksDbEnv::new(config);
        let value = vec![7u8; 1024];
        for s in 0..4 {
            let mut store = RocksDbKeyValueStore::open(dir.path().join(format!("s{s}")), &env)?;
            for i in 0..4_000u32 {
                store.put(&i.to_be_bytes(), Some(&value))?;
            }
            store.flush()?;
            // Reads go through the shared cache.
            assert_eq!(store.range(None, None)?.len(), 4_000);
        }
        // 16 MB written and read through stores whose cache is 4 MiB.
        assert!(env.cache_usage() > 0, "the shared cache is used");
        assert!(
            env.cache_usage() <= config.cache_bytes + (1 << 20),
            "usage {}",
            env.cache_usage()
        );
        Ok(())
    }

    #[test]
    fn opening_a_file_as_a_store_names_the_path() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let env = RocksDbEnv::new(RocksDbConfig::default());
        let err = RocksDbKeyValueStore::open(file.path(), &env).expect_err("a file is not a store");
        assert_eq!(err.operation, "open");
        assert!(
            err.message.contains(&file.path().display().to_string()),
            "{err}"
        );
    }
}
