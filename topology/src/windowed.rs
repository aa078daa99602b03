//! Windowed aggregations: `windowed_by`, windowed `count` / `reduce` /
//! `aggregate`, late records, and suppression until a window closes.
//!
//! ```
//! use std::time::Duration;
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::window::TimeWindows;
//! use brook_topology::{Consumed, Grouped, Materialized, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! let per_minute = builder
//!     .stream("clicks", Consumed::with(Utf8, Utf8))
//!     .group_by_key(Grouped::with(Utf8, Utf8))
//!     .windowed_by(TimeWindows::tumbling(Duration::from_secs(60), Duration::from_secs(10)).unwrap())
//!     .count(Materialized::named("clicks-per-minute", Utf8, Json::<i64>::new()))
//!     .suppress_until_window_closes("clicks-per-minute-final");
//! # let _ = per_minute;
//! ```
//!
//! Each record updates every window it falls in (one for tumbling windows)
//! and the update is forwarded at once; `suppress_until_window_closes`
//! holds updates back and forwards exactly one final result per window
//! when stream time passes its end plus grace. A record whose windows have
//! all closed is dropped, counted in the task's `late_records`, and written
//! to the topic given to [`TimeWindowedKStream::late_records_to`], if any.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::WindowCache;
use crate::graph::TopicName;
use crate::processor::{
    Data, ProcessError, Processor, ProcessorContext, PunctuationType, ScheduleId, supplier,
};
use crate::record::{Record, Timestamp};
use crate::serdes::Serde;
use crate::store::{Materialized, windowed_store};
use crate::stream::{KStream, Produced};
use crate::table::{Change, KGroupedStream, KTable, Step};
use crate::window::{TimeWindows, Windowed};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregates per key and time window.
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        WindowedStream::new(self.clone(), windows)
    }
}

/// A grouped stream with a window definition `W` (time, session or
/// sliding windows), ready to aggregate: the one base of the three
/// windowed streams.
pub struct WindowedStream<K, V, W> {
    pub(crate) grouped: KGroupedStream<K, V>,
    pub(crate) windows: W,
    pub(crate) late: Option<(String, Produced<K, V>)>,
}

/// A grouped stream with time windows, ready to aggregate.
pub type TimeWindowedKStream<K, V> = WindowedStream<K, V, TimeWindows>;

impl<K: Data, V: Data, W> WindowedStream<K, V, W> {
    pub(crate) fn new(grouped: KGroupedStream<K, V>, windows: W) -> Self {
        WindowedStream {
            grouped,
            windows,
            late: None,
        }
    }

    /// Writes records too late for every window they would fall in (all
    /// closed: stream time past their end plus grace; for sessions, the
    /// sessions they touch final) to `topic`; they are dropped and counted
    /// in the task's `late_records` either way.
    pub fn late_records_to(mut self, topic: &str, produced: Produced<K, V>) -> Self {
        self.late = Some((topic.to_owned(), produced));
        self
    }
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    fn aggregate_with<VA: Data>(
        self,
        materialized: Materialized<K, VA>,
        step: Step<K, V, VA>,
    ) -> WindowedKTable<K, VA> {
        let input = self.grouped.partitioned(&materialized.name);
        let windows = self.windows;
        let is_late: IsLate<K, V> = Arc::new(move |ctx, record| {
            Ok(all_closed(&windows, ctx.stream_time(), record.timestamp))
        });
        let input = input.route_late(self.late, is_late, Vec::new());
        let retention = materialized
            .retention
            .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(DAY_MS)
            .max(windows.size() + windows.grace());
        let key_serde = materialized.key.clone();
        let value_serde = materialized.value.clone();
        let window_store = materialized.windowed();
        let caches = crate::cache::caches(&window_store);
        let store = window_store.name.clone();
        let mut g = input.graph.borrow_mut();
        g.stores.push(window_store.spec());
        let store_name = store.clone();
        let node = g.add_stateful(
            "KSTREAM-WINDOWED-AGGREGATE",
            supplier::<_, K, V, Windowed<K>, Change<VA>>(move || WindowAggregate {
                store: store_name.clone(),
                windows,
                retention,
                step: step.clone(),
                next_expiry: None,
                cache: WindowCache::new(caches(), windows.grace()),
            }),
            &[input.node],
            vec![store.clone()],
        );
        drop(g);
        WindowedKTable {
            table: KTable::new(KStream::new(input.graph.clone(), node, false), Some(store)),
            key: key_serde,
            value: value_serde,
            grace: windows.grace(),
        }
    }

    /// Counts records per key and window.
    pub fn count(self, materialized: Materialized<K, i64>) -> WindowedKTable<K, i64> {
        self.aggregate_with(
            materialized,
            Arc::new(|_, _, old: Option<i64>| old.unwrap_or(0) + 1),
        )
    }

    /// Combines the values of each key and window.
    pub fn reduce(
        self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> WindowedKTable<K, V> {
        self.aggregate_with(
            materialized,
            Arc::new(move |_, value, old| match old {
                Some(acc) => reducer(acc, value),
                None => value,
            }),
        )
    }

    /// Folds the values of each key and window, starting from `init()`.
    pub fn aggregate<VA: Data>(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> WindowedKTable<K, VA> {
        self.aggregate_with(
            materialized,
            Arc::new(move |key, value, old| aggregator(key, value, old.unwrap_or_else(&init))),
        )
    }
}

/// Whether a record is late for a windowed aggregation, asked as it
/// arrives (it may read the aggregation's stores).
pub(crate) type IsLate<K, V> = Arc<
    dyn Fn(&mut ProcessorContext<'_, K, V>, &Record<K, V>) -> Result<bool, ProcessError>
        + Send
        + Sync,
>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Splits records late for a windowed aggregation (by `is_late`, which
    /// may read `stores`) off to `late`'s topic. Returns the on-time stream
    /// (this one itself when there is no late topic: the aggregation then
    /// drops and counts late records itself).
    pub(crate) fn route_late(
        &self,
        late: Option<(String, Produced<K, V>)>,
        is_late: IsLate<K, V>,
        stores: Vec<String>,
    ) -> KStream<K, V> {
        let Some((topic, produced)) = late else {
            return self.clone();
        };
        let split = |late: bool| {
            let is_late = is_late.clone();
            supplier::<_, K, V, K, V>(move || LateFilter {
                is_late: is_late.clone(),
                late,
            })
        };
        let on_time = self.then_stateful("KSTREAM-FILTER", split(false), stores.clone());
        let late = self.then_stateful("KSTREAM-FILTER", split(true), stores);
        late.add_sink(
            TopicName::User(topic),
            produced.key,
            produced.value,
            produced.name,
        );
        on_time
    }
}

/// Whether every window containing `timestamp` has closed at `stream_time`.
fn all_closed(windows: &TimeWindows, stream_time: Timestamp, timestamp: Timestamp) -> bool {
    windows
        .windows_for(timestamp)
        .iter()
        .all(|w| w.end.saturating_add(windows.grace()) <= stream_time)
}

/// The one late-record filter of the windowed aggregations: passes
/// on-time records (`late == false`) or late ones (`late == true`,
/// counted as they pass).
struct LateFilter<K, V> {
    is_late: IsLate<K, V>,
    late: bool,
}

impl<K: Data, V: Data> Processor<K, V, K, V> for LateFilter<K, V> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, V>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let late = (self.is_late)(ctx, &record)?;
        if late == self.late {
            if late {
                ctx.record_late();
            }
            ctx.forward(record);
        }
        Ok(())
    }
}

struct WindowAggregate<K, V, VA> {
    store: String,
    windows: TimeWindows,
    retention: i64,
    step: Step<K, V, VA>,
    /// The stream time at which the earliest stored window expires, when
    /// known (after a purge, kept up to date as windows are written);
    /// `None` until the first purge. Purges before it are skipped: they
    /// would scan the whole store to delete nothing.
    next_expiry: Option<Timestamp>,
    cache: WindowCache<K, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<VA>>
    for WindowAggregate<K, V, VA>
{
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<(), ProcessError> {
        // Expired windows are purged as stream time moves on.
        let every = Duration::from_millis(self.windows.size().max(1) as u64);
        ctx.schedule(every, PunctuationType::StreamTime);
        self.cache.init(ctx);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let stream_time = ctx.stream_time();
        let grace = self.windows.grace();
        let mut updated = false;
        for window in self.windows.windows_for(record.timestamp) {
            if window.end.saturating_add(grace) <= stream_time {
                continue;
            }
            let key = Windowed {
                key: record.key.clone(),
                window,
            };
            let mut store = ctx.key_value_store::<Windowed<K>, VA>(&self.store)?;
            let old = store.get(&key)?;
            let new = (self.step)(&record.key, record.value.clone(), old.clone());
            store.put(&key, &new)?;
            if let Some(next) = &mut self.next_expiry {
                *next = (*next).min(window.end.saturating_add(self.retention));
            }
            let update = Record {
                key,
                value: Change {
                    new: Some(new),
                    old,
                },
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            };
            self.cache.forward(ctx, update)?;
            updated = true;
        }
        if !updated {
            ctx.record_late();
        }
        Ok(())
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
        id: ScheduleId,
        stream_time: Timestamp,
    ) -> Result<(), ProcessError> {
        if self.cache.punctuate(ctx, id, stream_time) {
            return Ok(());
        }
        if self.next_expiry.is_some_and(|next| stream_time < next) {
            return Ok(());
        }
        let mut store = ctx.key_value_store::<Windowed<K>, VA>(&self.store)?;
        let mut next = Timestamp::MAX;
        for (key, _) in store.all()? {
            let expiry = key.window.end.saturating_add(self.retention);
            if expiry <= stream_time {
                store.delete(&key)?;
            } else {
                next = next.min(expiry);
            }
        }
        self.next_expiry = Some(next);
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

/// The result of a windowed aggregation: a table keyed by [`Windowed`] keys.
pub struct WindowedKTable<K, V> {
    pub(crate) table: KTable<Windowed<K>, V>,
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
    pub(crate) grace: i64,
}

impl<K: Data, V: Data> WindowedKTable<K, V> {
    /// The table itself (every update, as it happens).
    pub fn table(&self) -> &KTable<Windowed<K>, V> {
        &self.table
    }

    /// Every update as a stream.
    pub fn to_stream(&self) -> KStream<Windowed<K>, Option<V>> {
        self.table.to_stream()
    }

    /// Holds updates back until each window closes (stream time passes its
    /// end plus grace), then forwards exactly one final result per window.
    /// The buffer is a store named `name` (with a changelog).
    pub fn suppress_until_window_closes(&self, name: &str) -> KTable<Windowed<K>, V> {
        let buffer = windowed_store(name, self.key.clone(), self.value.clone(), true, None);
        let changes = &self.table.changes;
        let mut g = changes.graph.borrow_mut();
        g.stores.push(buffer.spec());
        let store = name.to_owned();
        let grace = self.grace;
        let node = g.add_stateful(
            "KTABLE-SUPPRESS",
            supplier::<_, Windowed<K>, Change<V>, Windowed<K>, Change<V>>(move || Suppress {
                store: store.clone(),
                grace,
            }),
            &[changes.node],
            vec![name.to_owned()],
        );
        drop(g);
        KTable::new(KStream::new(changes.graph.clone(), node, false), None)
    }
}

struct Suppress {
    store: String,
    grace: i64,
}

impl Suppress {
    fn emit_closed<K: Data, V: Data>(
        &self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
    ) -> Result<(), ProcessError> {
        let stream_time = ctx.stream_time();
        let mut buffer = ctx.key_value_store::<Windowed<K>, V>(&self.store)?;
        let mut closed: Vec<(Windowed<K>, V)> = buffer
            .all()?
            .into_iter()
            .filter(|(k, _)| k.window.end.saturating_add(self.grace) <= stream_time)
            .collect();
        closed.sort_by_key(|(k, _)| k.window);
        for (key, _) in &closed {
            buffer.delete(key)?;
        }
        for (key, value) in closed {
            let timestamp = key.window.end - 1;
            ctx.forward(Record::new(
                key,
                Change {
                    new: Some(value),
                    old: None,
                },
                timestamp,
            ));
        }
        Ok(())
    }
}

impl<K: Data, V: Data> Processor<Windowed<K>, Change<V>, Windowed<K>, Change<V>> for Suppress {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
    ) -> Result<(), ProcessError> {
        // Fires whenever stream time advances, so windows close even when the
        // record that moves time on lands in no window of this key.
        ctx.schedule(Duration::from_millis(1), PunctuationType::StreamTime);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
        record: Record<Windowed<K>, Change<V>>,
    ) -> Result<(), ProcessError> {
        let mut buffer = ctx.key_value_store::<Windowed<K>, V>(&self.store)?;
        match record.value.new {
            Some(value) => buffer.put(&record.key, &value)?,
            None => buffer.delete(&record.key)?,
        }
        self.emit_closed(ctx)
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<V>>,
        _id: ScheduleId,
        _timestamp: Timestamp,
    ) -> Result<(), ProcessError> {
        self.emit_closed(ctx)
    }
}
