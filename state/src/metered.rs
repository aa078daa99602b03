//! The metered layer: operation counts and time spent, per store.

use std::time::Instant;

use brook_topology::store::{KeyValueBytes, StoreResult};

/// Counts and total latency of one kind of operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OperationMetrics {
    /// Calls.
    pub count: u64,
    /// Time spent in them, ns.
    pub total_nanos: u64,
}

impl OperationMetrics {
    /// Mean latency, ns (0 before the first call).
    pub fn mean_nanos(&self) -> u64 {
        self.total_nanos.checked_div(self.count).unwrap_or(0)
    }

    fn record(&mut self, started: Instant) {
        self.count += 1;
        self.total_nanos = self
            .total_nanos
            .saturating_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }

    fn add(&mut self, other: OperationMetrics) {
        self.count += other.count;
        self.total_nanos = self.total_nanos.saturating_add(other.total_nanos);
    }
}

/// What a store was asked to do, and how long it took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Point reads.
    pub get: OperationMetrics,
    /// Writes and deletes.
    pub put: OperationMetrics,
    /// Range scans (including `len`).
    pub range: OperationMetrics,
    /// Batches written (commits of the transaction buffer, restore).
    pub write_batch: OperationMetrics,
    /// Entries written in batches.
    pub batch_entries: u64,
    /// Flushes to disk.
    pub flush: OperationMetrics,
}

impl StoreMetrics {
    /// Adds `other`'s counts to these (summing over tasks).
    pub fn add(&mut self, other: &StoreMetrics) {
        self.get.add(other.get);
        self.put.add(other.put);
        self.range.add(other.range);
        self.write_batch.add(other.write_batch);
        self.batch_entries += other.batch_entries;
        self.flush.add(other.flush);
    }
}

/// Wraps a store and measures every operation.
#[derive(Debug, Default)]
pub struct MeteredStore<S> {
    inner: S,
    metrics: std::cell::Cell<StoreMetrics>,
}

impl<S: KeyValueBytes> MeteredStore<S> {
    /// Measures `inner`.
    pub fn new(inner: S) -> Self {
        MeteredStore {
            inner,
            metrics: std::cell::Cell::new(StoreMetrics::default()),
        }
    }

    /// The counts so far.
    pub fn metrics(&self) -> StoreMetrics {
        self.metrics.get()
    }

    /// The store below.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The store below (writes through it are not measured).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Runs a batch write of `entries` on the store below (a commit of a
    /// transaction buffer under this layer) and measures it as one.
    pub fn batch_below<T>(&mut self, entries: usize, write: impl FnOnce(&mut S) -> T) -> T {
        let started = Instant::now();
        let result = write(&mut self.inner);
        let metrics = self.metrics.get_mut();
        metrics.write_batch.record(started);
        metrics.batch_entries += entries as u64;
        result
    }

    /// Runs a flush of the store below and measures it.
    pub fn flush_below<T>(&mut self, flush: impl FnOnce(&mut S) -> T) -> T {
        let started = Instant::now();
        let result = flush(&mut self.inner);
        self.metrics.get_mut().flush.record(started);
        result
    }

    fn measure<T>(
        &self,
        which: fn(&mut StoreMetrics) -> &mut OperationMetrics,
        op: impl FnOnce() -> T,
    ) -> T {
        let started = Instant::now();
        let result = op();
        let mut metrics = self.metrics.get();
        which(&mut metrics).record(started);
        self.metrics.set(metrics);
        result
    }
}

impl<S: KeyValueBytes> KeyValueBytes for MeteredStore<S> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.measure(|m| &mut m.get, || self.inner.get(key))
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.put(key, value);
        self.metrics.get_mut().put.record(started);
        result
    }

    fn range(
        &self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.measure(|m| &mut m.range, || self.inner.range(from, to))
    }

    fn len(&self) -> StoreResult<usize> {
        self.measure(|m| &mut m.range, || self.inner.len())
    }

    fn write_batch(&mut self, batch: &[(Vec<u8>, Option<Vec<u8>>)]) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.write_batch(batch);
        let metrics = self.metrics.get_mut();
        metrics.write_batch.record(started);
        metrics.batch_entries += batch.len() as u64;
        result
    }

    fn flush(&mut self) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.flush();
        self.metrics.get_mut().flush.record(started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryKeyValueStore;

    #[test]
    fn metered_store_behaves_like_every_store_and_counts_calls() -> StoreResult<()> {
        let mut store = MeteredStore::new(InMemoryKeyValueStore::new());
        crate::conformance::check(&mut store)?;
        let m = store.metrics();
        assert_eq!(m.put.count, 6);
        assert_eq!(m.get.count, 4);
        assert_eq!(m.range.count, 7);
        store.write_batch(&[(b"x".to_vec(), Some(b"1".to_vec())), (b"y".to_vec(), None)])?;
        assert_eq!(store.metrics().write_batch.count, 1);
        assert_eq!(store.metrics().batch_entries, 2);
        Ok(())
    }
}
