//! Session windows: per-key activity periods separated by an inactivity gap.
//!
//! A record at `t` joins every existing session of its key that ends
//! (last record) at or after `t - gap` and starts at or before `t + gap`;
//! they merge into one session. The merged-away sessions are forwarded as
//! deletions and the new one as an update, so downstream (or
//! `suppress_until_window_closes`) always sees the current sessions.
//! Sessions are reported as half-open windows `[first record, last record +
//! 1 ms)`. A session is final once stream time passes its end plus the gap
//! plus grace: until then an on-time record may still extend it. A record
//! that would touch a final session (extend it, merge it, or start a session
//! that would already be final) is late: dropped and counted. So
//! `suppress_until_window_closes` emits each session once, really final —
//! stricter than Kafka Streams, which closes sessions at end plus grace and
//! can then merge a "final" session into a later one.
//!
//! ```
//! use std::time::Duration;
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::session::SessionWindows;
//! use brook_topology::{Consumed, Grouped, Materialized, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("page-views", Consumed::with(Utf8, Utf8))
//!     .group_by_key(Grouped::with(Utf8, Utf8))
//!     .windowed_by_session(SessionWindows::with_inactivity_gap(Duration::from_secs(1800), Duration::from_secs(60)))
//!     .count(Materialized::named("views-per-session", Utf8, Json::<i64>::new()));
//! assert!(builder.build().is_ok());
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::cache::WindowCache;
use crate::processor::{Data, ProcessError, Processor, ProcessorContext, supplier};
use crate::record::Record;
use crate::record::Timestamp;
use crate::store::Materialized;
use crate::stream::KStream;
use crate::table::{Change, KGroupedStream, KTable};
use crate::window::{Window, Windowed};
use crate::window_store::SessionStore;
use crate::windowed::{IsLate, WindowedKTable, WindowedStream};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Session windows: an inactivity gap and a grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    gap: i64,
    grace: i64,
}

impl SessionWindows {
    /// The sessions of `key` a record at `t` touches: those starting at or
    /// before `t + gap` whose last record (`end - 1`) is at or after `t - gap`.
    fn touched<K: Data, VA: Data>(
        &self,
        store: &SessionStore<'_, K, VA>,
        key: &K,
        t: Timestamp,
    ) -> Result<Vec<(Windowed<K>, VA)>, ProcessError> {
        store.find_sessions(
            key,
            t.saturating_sub(self.gap).saturating_add(1),
            t.saturating_add(self.gap),
        )
    }

    /// Whether a record at `t` touching `touched` is late: the earliest-ending
    /// session it touches (or its own new one) is already final.
    fn is_late<K, VA>(
        &self,
        touched: &[(Windowed<K>, VA)],
        t: Timestamp,
        stream_time: Timestamp,
    ) -> bool {
        let earliest_end = touched
            .iter()
            .map(|(k, _)| k.window.end)
            .fold(t + 1, i64::min);
        earliest_end.saturating_add(self.close_after()) <= stream_time
    }

    /// How long after its end a session becomes final: gap plus grace.
    fn close_after(&self) -> i64 {
        self.gap.saturating_add(self.grace)
    }

    /// Sessions end after `gap` without records; records up to `grace` late
    /// still count.
    pub fn with_inactivity_gap(gap: Duration, grace: Duration) -> Self {
        SessionWindows {
            gap: millis(gap),
            grace: millis(grace),
        }
    }
}

/// Adds a value to a session's aggregate (`None`: a session with no records yet).
type SessionStep<K, V, VA> = Arc<dyn Fn(&K, V, Option<VA>) -> VA + Send + Sync>;
type Merger<K, VA> = Arc<dyn Fn(&K, VA, VA) -> VA + Send + Sync>;

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregates per key and session.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        WindowedStream::new(self.clone(), windows)
    }
}

/// A grouped stream with session windows, ready to aggregate.
pub type SessionWindowedKStream<K, V> = WindowedStream<K, V, SessionWindows>;

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    fn build<VA: Data>(
        self,
        materialized: Materialized<K, VA>,
        step: SessionStep<K, V, VA>,
        merge: Merger<K, VA>,
    ) -> WindowedKTable<K, VA> {
        let input = self.grouped.partitioned(&materialized.name);
        let windows = self.windows;
        let retention = materialized
            .retention
            .map(millis)
            .unwrap_or(24 * 60 * 60 * 1000)
            .max(windows.gap.saturating_add(windows.grace));
        let key_serde = materialized.key.clone();
        let value_serde = materialized.value.clone();
        let store_spec = materialized.windowed();
        let caches = crate::cache::caches(&store_spec);
        let store = store_spec.name.clone();
        input.graph.borrow_mut().stores.push(store_spec.spec());
        let late_store = store.clone();
        let is_late: IsLate<K, V> = Arc::new(move |ctx, record| {
            let stream_time = ctx.stream_time();
            let store = ctx.session_store::<K, VA>(&late_store)?;
            let touched = windows.touched(&store, &record.key, record.timestamp)?;
            Ok(windows.is_late(&touched, record.timestamp, stream_time))
        });
        let input = input.route_late(self.late, is_late, vec![store.clone()]);
        let mut g = input.graph.borrow_mut();
        let store_name = store.clone();
        let node = g.add_stateful(
            "KSTREAM-SESSION-AGGREGATE",
            supplier::<_, K, V, Windowed<K>, Change<VA>>(move || SessionAggregate {
                store: store_name.clone(),
                windows,
                retention,
                step: step.clone(),
                merge: merge.clone(),
                cache: WindowCache::new(caches(), windows.close_after()),
            }),
            &[input.node],
            vec![store.clone()],
        );
        drop(g);
        WindowedKTable {
            table: KTable::new(KStream::new(input.graph.clone(), node, false), Some(store)),
            key: key_serde,
            value: value_serde,
            // Suppression must wait until no on-time record can extend it.
            grace: windows.close_after(),
        }
    }

    /// Counts records per key and session.
    pub fn count(self, materialized: Materialized<K, i64>) -> WindowedKTable<K, i64> {
        self.build(
            materialized,
            Arc::new(|_, _, n: Option<i64>| n.unwrap_or(0) + 1),
            Arc::new(|_, a, b| a + b),
        )
    }

    /// Combines the values of each session with `reducer`, which also
    /// combines the results of sessions a record merges.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> WindowedKTable<K, V> {
        let reducer = Arc::new(reducer);
        let merge = reducer.clone();
        self.build(
            materialized,
            Arc::new(move |_, v, acc: Option<V>| match acc {
                Some(acc) => reducer(acc, v),
                None => v,
            }),
            Arc::new(move |_, a, b| merge(a, b)),
        )
    }

    /// Folds each session's values from `init()`; `merger` combines the
    /// aggregates of sessions that a new record joins together.
    pub fn aggregate<VA: Data>(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        merger: impl Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> WindowedKTable<K, VA> {
        self.build(
            materialized,
            Arc::new(move |k, v, acc: Option<VA>| aggregator(k, v, acc.unwrap_or_else(&init))),
            Arc::new(merger),
        )
    }
}

struct SessionAggregate<K, V, VA> {
    store: String,
    windows: SessionWindows,
    retention: i64,
    step: SessionStep<K, V, VA>,
    merge: Merger<K, VA>,
    cache: WindowCache<K, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<VA>>
    for SessionAggregate<K, V, VA>
{
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<(), ProcessError> {
        // Sessions past retention are purged as stream time moves on.
        let every = Duration::from_millis(self.windows.gap.max(1) as u64);
        ctx.schedule(every, crate::processor::PunctuationType::StreamTime);
        self.cache.init(ctx);
        Ok(())
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
        id: crate::processor::ScheduleId,
        stream_time: Timestamp,
    ) -> Result<(), ProcessError> {
        if self.cache.punctuate(ctx, id, stream_time) {
            return Ok(());
        }
        let mut store = ctx.key_value_store::<Windowed<K>, VA>(&self.store)?;
        for (key, _) in store.all()? {
            if key.window.end.saturating_add(self.retention) <= stream_time {
                store.delete(&key)?;
            }
        }
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let t = record.timestamp;
        let stream_time = ctx.stream_time();
        let mut store = ctx.session_store::<K, VA>(&self.store)?;
        let overlapping = self.windows.touched(&store, &record.key, t)?;
        if self.windows.is_late(&overlapping, t, stream_time) {
            ctx.record_late();
            return Ok(());
        }
        let mut window = Window {
            start: t,
            end: t + 1,
        };
        for (k, _) in &overlapping {
            window.start = window.start.min(k.window.start);
            window.end = window.end.max(k.window.end);
        }
        // Merge the touched sessions' aggregates, then add the record.
        let mut merged: Option<VA> = None;
        for (_, value) in &overlapping {
            merged = Some(match merged {
                Some(acc) => (self.merge)(&record.key, acc, value.clone()),
                None => value.clone(),
            });
        }
        let aggregate = (self.step)(&record.key, record.value, merged);
        let mut forwards = Vec::new();
        for (k, old) in overlapping {
            store.remove(&k)?;
            forwards.push((
                k,
                Change {
                    new: None,
                    old: Some(old),
                },
            ));
        }
        let key = Windowed {
            key: record.key,
            window,
        };
        store.put(&key, &aggregate)?;
        forwards.push((
            key,
            Change {
                new: Some(aggregate),
                old: None,
            },
        ));
        for (key, change) in forwards {
            let update = Record {
                key,
                value: change,
                timestamp: t,
                headers: record.headers.clone(),
            };
            self.cache.forward(ctx, update)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<(), ProcessError> {
        self.cache.flush(ctx);
        Ok(())
    }
}
