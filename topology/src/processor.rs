//! The Processor API: the layer beneath the DSL.
//!
//! Every DSL operator compiles to a processor; users can write their own with
//! [`Processor`] and plug it into a DSL topology with
//! [`KStream::process`](crate::KStream::process). A processor receives one
//! record at a time, may [`forward`](ProcessorContext::forward) any number of
//! records to its children, and may
//! [`schedule`](ProcessorContext::schedule) punctuations on stream time (which
//! advances with the timestamps of the records the task processes) or on
//! wall-clock time; each one calls [`Processor::punctuate`] with its
//! [`ScheduleId`].
//!
//! Inside a task, records travel between processors type-erased
//! ([`DynRecord`], values behind `Arc<dyn Any>` so fan-out to several
//! children copies nothing); the typed DSL guarantees each processor gets
//! the types it was built for. A processor that owns the only reference to
//! a value takes it without cloning.
//!
//! ```
//! use brook_topology::processor::{ProcessError, Processor, ProcessorContext};
//! use brook_topology::Record;
//!
//! /// Forwards each record once per word in its value, keyed by the word.
//! struct Words;
//!
//! impl Processor<String, String, String, u64> for Words {
//!     fn process(
//!         &mut self,
//!         ctx: &mut ProcessorContext<'_, String, u64>,
//!         record: Record<String, String>,
//!     ) -> Result<(), ProcessError> {
//!         for word in record.value.split_whitespace() {
//!             ctx.forward(Record::new(word.to_lowercase(), 1, record.timestamp));
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

pub use crate::error::{Data, ProcessError};
use crate::record::{Headers, Record, RecordMetadata, Timestamp};
use crate::store::{KeyValueBytes, KeyValueStore, StoreSpec};

/// A type-erased key or value.
pub type DynValue = Arc<dyn Any + Send + Sync>;

/// A type-erased record, as it travels between processors inside a task.
#[derive(Clone)]
pub struct DynRecord {
    /// The key.
    pub key: DynValue,
    /// The value.
    pub value: DynValue,
    /// Event time.
    pub timestamp: Timestamp,
    /// Headers.
    pub headers: Headers,
}

impl fmt::Debug for DynRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynRecord")
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Erases a typed value.
pub fn erase<T: Data>(value: T) -> DynValue {
    Arc::new(value)
}

/// Recovers a typed value, without cloning when this was its only reference.
pub fn unerase<T: Data>(value: DynValue) -> Result<T, ProcessError> {
    value
        .downcast::<T>()
        .map(Arc::unwrap_or_clone)
        .map_err(|_| ProcessError::TypeMismatch {
            expected: std::any::type_name::<T>(),
        })
}

/// Borrows a typed value.
pub fn unerase_ref<T: Data>(value: &DynValue) -> Result<&T, ProcessError> {
    value.downcast_ref::<T>().ok_or(ProcessError::TypeMismatch {
        expected: std::any::type_name::<T>(),
    })
}

impl<K: Data, V: Data> From<Record<K, V>> for DynRecord {
    fn from(record: Record<K, V>) -> Self {
        DynRecord {
            key: erase(record.key),
            value: erase(record.value),
            timestamp: record.timestamp,
            headers: record.headers,
        }
    }
}

impl DynRecord {
    /// Recovers the typed record.
    pub fn into_typed<K: Data, V: Data>(self) -> Result<Record<K, V>, ProcessError> {
        Ok(Record {
            key: unerase(self.key)?,
            value: unerase(self.value)?,
            timestamp: self.timestamp,
            headers: self.headers,
        })
    }
}

/// Which clock a punctuation follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// Stream time: the largest record timestamp the task has seen. Fires
    /// only as records arrive; a quiet partition does not advance it.
    StreamTime,
    /// Wall-clock time (the test driver's manual clock under test).
    WallClockTime,
}

/// Identifies a scheduled punctuation of one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScheduleId(pub u64);

/// A task: one sub-topology working on one partition of its input topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The sub-topology.
    pub subtopology: u32,
    /// The partition.
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// What the runtime offers a type-erased processor.
pub trait DynContext {
    /// Sends a record to every child.
    fn forward(&mut self, record: DynRecord);
    /// Sends a record to the child named `child` only.
    fn forward_to(&mut self, child: &str, record: DynRecord) -> Result<(), ProcessError>;
    /// Schedules [`Processor::punctuate`] every `interval` on `kind` time.
    fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> ScheduleId;
    /// Cancels a punctuation.
    fn cancel(&mut self, id: ScheduleId);
    /// The task's stream time (the largest timestamp seen), or `i64::MIN` before any record.
    fn stream_time(&self) -> Timestamp;
    /// Wall-clock time.
    fn wall_clock_time(&self) -> Timestamp;
    /// The source record being processed, when there is one (not in punctuations).
    fn record_metadata(&self) -> Option<&RecordMetadata>;
    /// The task this processor runs in.
    fn task_id(&self) -> TaskId;
    /// This processor's node name.
    fn node_name(&self) -> &str;
    /// A store connected to this processor, with its spec.
    fn store(&mut self, name: &str) -> Result<(&StoreSpec, &mut dyn KeyValueBytes), ProcessError>;
    /// Counts a record dropped because it arrived after its windows closed.
    fn record_late(&mut self);
}

/// A processor as the runtime runs it: type-erased.
pub trait DynProcessor: Send {
    /// Called once before the first record.
    fn init(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError>;
    /// Processes one record.
    fn process(&mut self, ctx: &mut dyn DynContext, record: DynRecord) -> Result<(), ProcessError>;
    /// A scheduled punctuation fired at `timestamp`.
    fn punctuate(
        &mut self,
        ctx: &mut dyn DynContext,
        id: ScheduleId,
        timestamp: Timestamp,
    ) -> Result<(), ProcessError>;
    /// Called before every commit: a processor holding updates back (a
    /// cache) forwards them now, so the commit includes them.
    fn flush(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError>;
    /// Called after every commit, once the task's outputs, changelogs and
    /// offsets are committed and its stores updated.
    fn committed(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError>;
    /// Called once when the task closes.
    fn close(&mut self);
}

/// Makes a fresh processor for each task.
pub type ProcessorSupplier = Arc<dyn Fn() -> Box<dyn DynProcessor> + Send + Sync>;

/// A typed processor: consumes `Record<KIn, VIn>`, forwards `Record<KOut, VOut>`.
pub trait Processor<KIn, VIn, KOut, VOut>: Send + 'static {
    /// Called once before the first record (schedule punctuations here).
    fn init(&mut self, _ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Processes one record.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
        record: Record<KIn, VIn>,
    ) -> Result<(), ProcessError>;

    /// A punctuation scheduled with [`ProcessorContext::schedule`] fired.
    fn punctuate(
        &mut self,
        _ctx: &mut ProcessorContext<'_, KOut, VOut>,
        _id: ScheduleId,
        _timestamp: Timestamp,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called before every commit: forward whatever was held back (caches
    /// coalescing updates between commits do).
    fn flush(&mut self, _ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called after every commit, once everything the task did up to it is
    /// committed (outputs, changelogs, input offsets) and its stores
    /// updated: the moment to make external side effects of the committed
    /// work visible (two-phase commit with an external system). Store
    /// writes made here belong to the next commit; a crash before it
    /// commits runs the hook's work again on recovery, so it must be
    /// idempotent.
    fn committed(
        &mut self,
        _ctx: &mut ProcessorContext<'_, KOut, VOut>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called once when the task closes.
    fn close(&mut self) {}
}

/// The typed view of the runtime a [`Processor`] gets.
pub struct ProcessorContext<'a, K, V> {
    inner: &'a mut dyn DynContext,
    _types: PhantomData<fn(K, V)>,
}

impl<'a, K: Data, V: Data> ProcessorContext<'a, K, V> {
    /// Wraps the runtime's context.
    pub fn new(inner: &'a mut dyn DynContext) -> Self {
        ProcessorContext {
            inner,
            _types: PhantomData,
        }
    }

    /// Sends a record to every child.
    pub fn forward(&mut self, record: Record<K, V>) {
        self.inner.forward(record.into());
    }

    /// Sends a record to one child, by node name.
    pub fn forward_to(&mut self, child: &str, record: Record<K, V>) -> Result<(), ProcessError> {
        self.inner.forward_to(child, record.into())
    }

    /// Schedules [`Processor::punctuate`] every `interval` of `kind` time.
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> ScheduleId {
        self.inner.schedule(interval, kind)
    }

    /// Cancels a punctuation.
    pub fn cancel(&mut self, id: ScheduleId) {
        self.inner.cancel(id);
    }

    /// The task's stream time.
    pub fn stream_time(&self) -> Timestamp {
        self.inner.stream_time()
    }

    /// Wall-clock time.
    pub fn wall_clock_time(&self) -> Timestamp {
        self.inner.wall_clock_time()
    }

    /// The source record being processed, if any.
    pub fn record_metadata(&self) -> Option<&RecordMetadata> {
        self.inner.record_metadata()
    }

    /// The task this processor runs in.
    pub fn task_id(&self) -> TaskId {
        self.inner.task_id()
    }

    /// Counts a record dropped because it arrived after its windows closed.
    pub fn record_late(&mut self) {
        self.inner.record_late();
    }

    /// The key-value store `name`, which must be connected to this processor.
    pub fn key_value_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<KeyValueStore<'_, SK, SV>, ProcessError> {
        let (spec, bytes) = self.inner.store(name)?;
        KeyValueStore::new(spec, bytes)
    }

    /// The window store `name` (keyed by windowed keys).
    pub fn window_store<SK: Data, SV: Data>(
        &mut self,
        name: &str,
    ) -> Result<crate::window_store::WindowStore<'_, SK, SV>, ProcessError> {
        Ok(crate::window_store::WindowStore::new(
            self.key_value_store(name)?,
        ))
    }

    /// The session store `name` (keyed by windowed keys).
    pub fn session_store<SK: Data, SV: Data>(
        &mut self,
        name: &str,
    ) -> Result<crate::window_store::SessionStore<'_, SK, SV>, ProcessError> {
        Ok(crate::window_store::SessionStore::new(
            self.key_value_store(name)?,
        ))
    }
}

/// Runs a typed [`Processor`] as a [`DynProcessor`].
pub struct TypedProcessor<P, KIn, VIn, KOut, VOut> {
    inner: P,
    _types: PhantomData<fn(KIn, VIn, KOut, VOut)>,
}

impl<P, KIn, VIn, KOut, VOut> TypedProcessor<P, KIn, VIn, KOut, VOut> {
    /// Wraps `inner`.
    pub fn new(inner: P) -> Self {
        TypedProcessor {
            inner,
            _types: PhantomData,
        }
    }
}

impl<P, KIn, VIn, KOut, VOut> DynProcessor for TypedProcessor<P, KIn, VIn, KOut, VOut>
where
    P: Processor<KIn, VIn, KOut, VOut>,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    fn init(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        self.inner.init(&mut ProcessorContext::new(ctx))
    }

    fn process(&mut self, ctx: &mut dyn DynContext, record: DynRecord) -> Result<(), ProcessError> {
        let record = record.into_typed::<KIn, VIn>()?;
        self.inner.process(&mut ProcessorContext::new(ctx), record)
    }

    fn punctuate(
        &mut self,
        ctx: &mut dyn DynContext,
        id: ScheduleId,
        timestamp: Timestamp,
    ) -> Result<(), ProcessError> {
        self.inner
            .punctuate(&mut ProcessorContext::new(ctx), id, timestamp)
    }

    fn flush(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        self.inner.flush(&mut ProcessorContext::new(ctx))
    }

    fn committed(&mut self, ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        self.inner.committed(&mut ProcessorContext::new(ctx))
    }

    fn close(&mut self) {
        self.inner.close();
    }
}

/// A stateless processor over erased records, for the DSL's simplest
/// operators: what it passes through (the record of `filter` and `peek`,
/// the key of `map_values`) keeps its shared allocation instead of being
/// unwrapped and wrapped again as a typed processor would.
struct RecordFn<F>(F);

impl<F> DynProcessor for RecordFn<F>
where
    F: FnMut(&mut dyn DynContext, DynRecord) -> Result<(), ProcessError> + Send,
{
    fn init(&mut self, _ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        Ok(())
    }

    fn process(&mut self, ctx: &mut dyn DynContext, record: DynRecord) -> Result<(), ProcessError> {
        (self.0)(ctx, record)
    }

    fn punctuate(
        &mut self,
        _ctx: &mut dyn DynContext,
        _id: ScheduleId,
        _timestamp: Timestamp,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    fn flush(&mut self, _ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        Ok(())
    }

    fn committed(&mut self, _ctx: &mut dyn DynContext) -> Result<(), ProcessError> {
        Ok(())
    }

    fn close(&mut self) {}
}

/// A supplier of stateless processors over erased records, each running
/// the function `make` returns on every record.
pub(crate) fn record_fn<F>(make: impl Fn() -> F + Send + Sync + 'static) -> ProcessorSupplier
where
    F: FnMut(&mut dyn DynContext, DynRecord) -> Result<(), ProcessError> + Send + 'static,
{
    Arc::new(move || Box::new(RecordFn(make())))
}

/// A supplier for a typed processor made by `make`.
pub fn supplier<P, KIn, VIn, KOut, VOut>(
    make: impl Fn() -> P + Send + Sync + 'static,
) -> ProcessorSupplier
where
    P: Processor<KIn, VIn, KOut, VOut>,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    Arc::new(move || Box::new(TypedProcessor::<P, KIn, VIn, KOut, VOut>::new(make())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unerase_takes_the_only_reference_and_clones_a_shared_one() {
        let value = erase(String::from("x"));
        let shared = value.clone();
        assert_eq!(unerase::<String>(value).unwrap(), "x");
        assert_eq!(unerase::<String>(shared).unwrap(), "x");
        let err = unerase::<u64>(erase(String::from("x"))).unwrap_err();
        assert!(err.to_string().contains("u64"), "{err}");
    }
}
