//! Sliding windows: windows of a fixed length anchored on the records
//! themselves (Kafka Streams' `SlidingWindows`).
//!
//! For a time difference `d`, every record at `t` defines the window that
//! ends with it, `[t - d, t]`, and the window that starts just after it,
//! `[t + 1, t + 1 + d]` (if some record falls in it). Together these are
//! every distinct set of records that fit within `d` of each other, so an
//! aggregate over "the last `d`" is available at every record, without the
//! fixed grid of hopping windows. Windows are reported half-open:
//! `[start, end + 1 ms)`.
//!
//! brook keeps each key's records (keyed by key, timestamp and offset, in
//! the `<store>-records` store) and recomputes every window a new record
//! affects from them: simple and exact, at the cost of re-aggregating
//! overlapping windows. A window whose end plus grace stream time has
//! passed is final and not updated; a record that updates no window is
//! late, dropped and counted.
//!
//! ```
//! use std::time::Duration;
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::sliding::SlidingWindows;
//! use brook_topology::{Consumed, Grouped, Materialized, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("payments", Consumed::with(Utf8, Json::<f64>::new()))
//!     .group_by_key(Grouped::with(Utf8, Json::<f64>::new()))
//!     .windowed_by_sliding(SlidingWindows::with_time_difference(Duration::from_secs(600), Duration::from_secs(60)))
//!     .aggregate(|| 0.0, |_, amount, sum| sum + amount, Materialized::named("spend-last-10-min", Utf8, Json::<f64>::new()));
//! assert!(builder.build().is_ok());
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::WindowCache;
use crate::processor::{
    Data, ProcessError, Processor, ProcessorContext, PunctuationType, ScheduleId, supplier,
};
use crate::record::{Record, Timestamp};
use crate::store::{KeyValueStore, Materialized, windowed_store};
use crate::stream::KStream;
use crate::table::{Change, KGroupedStream, KTable};
use crate::window::{Window, Windowed};
use crate::windowed::{IsLate, WindowedKTable, WindowedStream};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Sliding windows: a maximum time difference and a grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    difference: i64,
    grace: i64,
}

impl SlidingWindows {
    /// Records at most `difference` apart share windows; records up to
    /// `grace` late still count.
    pub fn with_time_difference(difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            difference: millis(difference),
            grace: millis(grace),
        }
    }
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregates per key over sliding windows.
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> SlidingWindowedKStream<K, V> {
        WindowedStream::new(self.clone(), windows)
    }
}

/// A grouped stream with sliding windows, ready to aggregate.
pub type SlidingWindowedKStream<K, V> = WindowedStream<K, V, SlidingWindows>;

type Fold<K, V, VA> = Arc<dyn Fn(&K, V, VA) -> VA + Send + Sync>;

impl<K: Data, V: Data> SlidingWindowedKStream<K, V> {
    /// Counts records per key and window.
    pub fn count(self, materialized: Materialized<K, i64>) -> WindowedKTable<K, i64> {
        self.aggregate(|| 0, |_, _, n| n + 1, materialized)
    }

    /// Folds the records of each window, in timestamp order, from `init()`.
    pub fn aggregate<VA: Data>(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> WindowedKTable<K, VA> {
        let input = self.grouped.partitioned(&materialized.name);
        let windows = self.windows;
        let records_store = format!("{}-records", materialized.name);
        let records = windowed_store(
            &records_store,
            materialized.key.clone(),
            self.grouped.grouped.value.clone(),
            materialized.logged,
            None,
        );
        let key_serde = materialized.key.clone();
        let value_serde = materialized.value.clone();
        let window_store = materialized.windowed();
        let caches = crate::cache::caches(&window_store);
        let store = window_store.name.clone();
        let init: Arc<dyn Fn() -> VA + Send + Sync> = Arc::new(init);
        let fold: Fold<K, V, VA> = Arc::new(aggregator);
        input.graph.borrow_mut().stores.push(records.spec());
        let late_records = records_store.clone();
        let is_late: IsLate<K, V> = Arc::new(move |ctx, record| {
            let (t, stream_time) = (record.timestamp, ctx.stream_time());
            let records = ctx.key_value_store::<Windowed<K>, V>(&late_records)?;
            let affected = windows.affected(t, windows.neighbours(&records, &record.key, t)?);
            Ok(windows.is_late(&affected, t, stream_time))
        });
        let input = input.route_late(self.late, is_late, vec![records_store.clone()]);
        let mut g = input.graph.borrow_mut();
        g.stores.push(window_store.spec());
        let (rs, ws) = (records_store.clone(), store.clone());
        let node = g.add_stateful(
            "KSTREAM-SLIDING-AGGREGATE",
            supplier::<_, K, V, Windowed<K>, Change<VA>>(move || SlidingAggregate {
                records: rs.clone(),
                windows_store: ws.clone(),
                windows,
                init: init.clone(),
                fold: fold.clone(),
                cache: WindowCache::new(caches(), windows.grace),
            }),
            &[input.node],
            vec![records_store, store.clone()],
        );
        drop(g);
        WindowedKTable {
            table: KTable::new(KStream::new(input.graph.clone(), node, false), Some(store)),
            key: key_serde,
            value: value_serde,
            grace: windows.grace,
        }
    }
}

/// The kept records of `key` with `from <= timestamp <= to`, in timestamp order.
fn records_between<K: Data, V: Data>(
    store: &KeyValueStore<'_, Windowed<K>, V>,
    key: &K,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<(Timestamp, V)>, ProcessError> {
    Ok(crate::window_store::fetch_key_range(store, key, from, to)?
        .into_iter()
        .map(|(k, v)| (k.window.start, v))
        .collect())
}

impl SlidingWindows {
    /// The windows (inclusive `[start, end]`) a record at `t` affects, given
    /// the timestamps of the key's records within `d + 1` of it: its own,
    /// the one just after it, those ending at later records within `d`, and
    /// those just after earlier records within `d + 1`.
    fn affected(
        &self,
        t: Timestamp,
        neighbours: impl IntoIterator<Item = Timestamp>,
    ) -> BTreeSet<(i64, i64)> {
        let d = self.difference;
        let mut affected = BTreeSet::from([(t - d, t), (t + 1, t + 1 + d)]);
        for r in neighbours {
            if r > t && r <= t + d {
                affected.insert((r - d, r));
            }
            if r < t && r >= t - d - 1 {
                affected.insert((r + 1, r + 1 + d));
            }
        }
        affected
    }

    /// Whether the window ending (inclusively) at `end` is final.
    fn closed(&self, end: Timestamp, stream_time: Timestamp) -> bool {
        end.saturating_add(1).saturating_add(self.grace) <= stream_time
    }

    /// Late: no open window among `affected` contains `t`.
    fn is_late(
        &self,
        affected: &BTreeSet<(i64, i64)>,
        t: Timestamp,
        stream_time: Timestamp,
    ) -> bool {
        !affected
            .iter()
            .any(|&(s, e)| s <= t && t <= e && !self.closed(e, stream_time))
    }

    /// The timestamps of `key`'s kept records within `d + 1` of `t`.
    fn neighbours<K: Data, V: Data>(
        &self,
        store: &KeyValueStore<'_, Windowed<K>, V>,
        key: &K,
        t: Timestamp,
    ) -> Result<Vec<Timestamp>, ProcessError> {
        let d = self.difference;
        Ok(
            records_between(store, key, t.saturating_sub(d + 1), t.saturating_add(d + 1))?
                .into_iter()
                .map(|(r, _)| r)
                .collect(),
        )
    }
}

struct SlidingAggregate<K, V, VA> {
    records: String,
    windows_store: String,
    windows: SlidingWindows,
    init: Arc<dyn Fn() -> VA + Send + Sync>,
    fold: Fold<K, V, VA>,
    cache: WindowCache<K, VA>,
}

impl<K: Data, V: Data, VA: Data> SlidingAggregate<K, V, VA> {
    fn record_key(key: &K, timestamp: Timestamp, seq: i64) -> Windowed<K> {
        Windowed {
            key: key.clone(),
            window: Window {
                start: timestamp,
                end: seq,
            },
        }
    }
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, Windowed<K>, Change<VA>>
    for SlidingAggregate<K, V, VA>
{
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
    ) -> Result<(), ProcessError> {
        let every = Duration::from_millis(self.windows.difference.max(1) as u64);
        ctx.schedule(every, PunctuationType::StreamTime);
        self.cache.init(ctx);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, Windowed<K>, Change<VA>>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let t = record.timestamp;
        let stream_time = ctx.stream_time();
        let seq = ctx.record_metadata().map_or(0, |m| m.offset);
        let key = record.key.clone();
        let records = ctx.key_value_store::<Windowed<K>, V>(&self.records)?;
        let affected = self
            .windows
            .affected(t, self.windows.neighbours(&records, &key, t)?);
        // Late: no open window contains the record. Nothing changes then.
        if self.windows.is_late(&affected, t, stream_time) {
            ctx.record_late();
            return Ok(());
        }
        ctx.key_value_store::<Windowed<K>, V>(&self.records)?
            .put(&Self::record_key(&key, t, seq), &record.value)?;
        for (start, end) in affected
            .into_iter()
            .filter(|&(_, e)| !self.windows.closed(e, stream_time))
        {
            let records = ctx.key_value_store::<Windowed<K>, V>(&self.records)?;
            let members = records_between(&records, &key, start, end)?;
            if members.is_empty() {
                continue;
            }
            let mut aggregate = (self.init)();
            for (_, value) in members {
                aggregate = (self.fold)(&key, value, aggregate);
            }
            let windowed = Windowed {
                key: key.clone(),
                window: Window {
                    start,
                    end: end + 1,
                },
            };
            let mut store = ctx.key_value_store::<Windowed<K>, VA>(&self.windows_store)?;
            let old = store.get(&windowed)?;
            store.put(&windowed, &aggregate)?;
            let update = Record {
                key: windowed,
                value: Change {
                    new: Some(aggregate),
                    old,
                },
                timestamp: t,
                headers: record.headers.clone(),
            };
            self.cache.forward(ctx, update)?;
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
        // A record can no longer join an open window once the latest window
        // containing it ([t, t + d]) has closed.
        let horizon = self
            .windows
            .difference
            .saturating_add(self.windows.grace)
            .saturating_add(1);
        let mut records = ctx.key_value_store::<Windowed<K>, V>(&self.records)?;
        for (key, _) in records.all()? {
            if key.window.start.saturating_add(horizon) <= stream_time {
                records.delete(&key)?;
            }
        }
        // Windows are kept for queries as long as time windows are.
        let retention = DAY_MS.max(horizon);
        let mut windows = ctx.key_value_store::<Windowed<K>, VA>(&self.windows_store)?;
        for (key, _) in windows.all()? {
            if key.window.end.saturating_add(retention) <= stream_time {
                windows.delete(&key)?;
            }
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
