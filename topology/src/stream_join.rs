//! Windowed stream–stream joins: inner, left and outer.
//!
//! Two co-partitioned streams join records with the same key whose
//! timestamps are close: a left record at `t` joins right records in
//! `[t - before, t + after]`. Each side keeps its records in a store
//! (`<name>-this-store`, `<name>-other-store`) keyed by (key, timestamp,
//! source offset), with a flag saying whether the record has matched.
//! A record whose join window has closed (stream time past its timestamp
//! plus the window plus grace) is expired; for left and outer joins, an
//! expired record that never matched is emitted then with `None` for the
//! other side, so a left join emits its unmatched result once, when it is
//! final, and never a premature `None` followed by a match. Records that
//! arrive after their window closed are dropped and counted as late.
//!
//! ```
//! use std::time::Duration;
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::stream_join::{JoinWindows, StreamJoined};
//! use brook_topology::{Consumed, Produced, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! let orders = builder.stream("orders", Consumed::with(Utf8, Json::<i64>::new()));
//! let payments = builder.stream("payments", Consumed::with(Utf8, Json::<i64>::new()));
//! orders
//!     .left_join_stream(
//!         &payments,
//!         |_, order, payment: Option<&i64>| (*order, payment.copied()),
//!         JoinWindows::of(Duration::from_secs(600), Duration::from_secs(60)),
//!         StreamJoined::named("orders-payments", Utf8, Json::new(), Json::new()),
//!     )
//!     .to("orders-with-payments", Produced::with(Utf8, Json::<(i64, Option<i64>)>::new()));
//! assert!(builder.build().is_ok());
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::processor::{
    Data, ProcessError, Processor, ProcessorContext, PunctuationType, ScheduleId, supplier,
};
use crate::record::{Record, Timestamp};
use crate::serdes::{Serde, SerdeError};
use crate::store::windowed_store;
use crate::stream::{KStream, Repartitioned};
use crate::window::{Window, Windowed};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How close in time two records must be to join, and how long late records
/// are still accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    before: i64,
    after: i64,
    grace: i64,
}

impl JoinWindows {
    /// Records at most `difference` apart join; records up to `grace` late
    /// are still joined.
    pub fn of(difference: Duration, grace: Duration) -> Self {
        JoinWindows {
            before: millis(difference),
            after: millis(difference),
            grace: millis(grace),
        }
    }

    /// A left record at `t` joins right records from `t - before` (default: the difference).
    pub fn before(mut self, before: Duration) -> Self {
        self.before = millis(before);
        self
    }

    /// A left record at `t` joins right records up to `t + after` (default: the difference).
    pub fn after(mut self, after: Duration) -> Self {
        self.after = millis(after);
        self
    }
}

/// Names a stream–stream join (its stores and repartition topics) and gives
/// the serdes of both sides.
pub struct StreamJoined<K, V, VO> {
    name: String,
    key: Arc<dyn Serde<K>>,
    this: Arc<dyn Serde<V>>,
    other: Arc<dyn Serde<VO>>,
}

impl<K: Data, V: Data, VO: Data> StreamJoined<K, V, VO> {
    /// A join named `name` with serdes for the key and both sides' values.
    pub fn named(
        name: impl Into<String>,
        key: impl Serde<K>,
        this: impl Serde<V>,
        other: impl Serde<VO>,
    ) -> Self {
        StreamJoined {
            name: name.into(),
            key: Arc::new(key),
            this: Arc::new(this),
            other: Arc::new(other),
        }
    }
}

/// A stored join record: its value and whether it has joined yet.
#[derive(Debug, Clone, PartialEq)]
struct Held<V> {
    value: V,
    matched: bool,
}

/// `[matched: u8][value bytes]`.
struct HeldSerde<V>(Arc<dyn Serde<V>>);

impl<V: 'static> Serde<Held<V>> for HeldSerde<V> {
    fn serialize(&self, held: &Held<V>) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut out = vec![u8::from(held.matched)];
        out.extend(self.0.serialize(&held.value)?.unwrap_or_default());
        Ok(Some(out))
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Held<V>, SerdeError> {
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: "join record",
        })?;
        let (flag, value) = bytes.split_first().ok_or(SerdeError::Invalid {
            format: "join record",
            type_name: std::any::type_name::<V>(),
            reason: "empty".into(),
        })?;
        Ok(Held {
            value: self.0.deserialize(Some(value))?,
            matched: *flag == 1,
        })
    }
}

/// Which unmatched records a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

/// Joins a key and the two sides; `None` when this join kind has no result
/// for the combination (an inner join with a missing side).
type JoinFn<K, V, VO, VR> = Arc<dyn Fn(&K, Option<&V>, Option<&VO>) -> Option<VR> + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Inner windowed join: one result per pair of records within the window.
    pub fn join_stream<VO: Data, VR: Data>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(&K, &V, &VO) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR> {
        let joiner: JoinFn<K, V, VO, VR> = Arc::new(move |k, v, o| match (v, o) {
            (Some(v), Some(o)) => Some(joiner(k, v, o)),
            _ => None,
        });
        self.stream_join(other, joiner, windows, joined, Kind::Inner)
    }

    /// Left windowed join: every left record joins, with `None` if no right
    /// record matched by the time its window closed.
    pub fn left_join_stream<VO: Data, VR: Data>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(&K, &V, Option<&VO>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR> {
        let joiner: JoinFn<K, V, VO, VR> = Arc::new(move |k, v, o| v.map(|v| joiner(k, v, o)));
        self.stream_join(other, joiner, windows, joined, Kind::Left)
    }

    /// Outer windowed join: unmatched records of either side are emitted
    /// with `None` for the other side once their window closed.
    pub fn outer_join_stream<VO: Data, VR: Data>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(&K, Option<&V>, Option<&VO>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR> {
        self.stream_join(
            other,
            Arc::new(move |k, v, o| Some(joiner(k, v, o))),
            windows,
            joined,
            Kind::Outer,
        )
    }

    fn stream_join<VO: Data, VR: Data>(
        &self,
        other: &KStream<K, VO>,
        joiner: JoinFn<K, V, VO, VR>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
        kind: Kind,
    ) -> KStream<K, VR> {
        let name = joined.name;
        let this_in =
            repartitioned_if_needed(self, &format!("{name}-this"), &joined.key, &joined.this);
        let other_in =
            repartitioned_if_needed(other, &format!("{name}-other"), &joined.key, &joined.other);
        let this_store = format!("{name}-this-store");
        let other_store = format!("{name}-other-store");
        let mut g = self.graph.borrow_mut();
        let this_values: Arc<dyn Serde<Held<V>>> = Arc::new(HeldSerde(joined.this));
        let other_values: Arc<dyn Serde<Held<VO>>> = Arc::new(HeldSerde(joined.other));
        g.stores
            .push(windowed_store(&this_store, joined.key.clone(), this_values, true, None).spec());
        g.stores
            .push(windowed_store(&other_store, joined.key, other_values, true, None).spec());
        let stores = vec![this_store.clone(), other_store.clone()];
        let (this_joiner, other_joiner) = (joiner.clone(), joiner);
        let (ts, os) = (this_store.clone(), other_store.clone());
        let this_side = g.add_stateful(
            "KSTREAM-JOINTHIS",
            supplier::<_, K, V, K, VR>(move || JoinSide {
                own: ts.clone(),
                other: os.clone(),
                // A left record at t joins right records in [t - before, t + after].
                lower: windows.before,
                upper: windows.after,
                grace: windows.grace,
                emit_unmatched: kind != Kind::Inner,
                join: {
                    let j = this_joiner.clone();
                    Arc::new(move |k: &K, mine: Option<&V>, theirs: Option<&VO>| j(k, mine, theirs))
                        as JoinFn<K, V, VO, VR>
                },
            }),
            &[this_in.node],
            stores.clone(),
        );
        let (ts, os) = (this_store, other_store);
        let other_side = g.add_stateful(
            "KSTREAM-JOINOTHER",
            supplier::<_, K, VO, K, VR>(move || JoinSide {
                own: os.clone(),
                other: ts.clone(),
                lower: windows.after,
                upper: windows.before,
                grace: windows.grace,
                emit_unmatched: kind == Kind::Outer,
                join: {
                    let j = other_joiner.clone();
                    Arc::new(move |k: &K, mine: Option<&VO>, theirs: Option<&V>| j(k, theirs, mine))
                        as JoinFn<K, VO, V, VR>
                },
            }),
            &[other_in.node],
            stores,
        );
        drop(g);
        let this_out: KStream<K, VR> = KStream::new(self.graph.clone(), this_side, false);
        let other_out: KStream<K, VR> = KStream::new(self.graph.clone(), other_side, false);
        this_out.merge(&other_out).name(name)
    }
}

fn repartitioned_if_needed<K: Data, V: Data>(
    stream: &KStream<K, V>,
    name: &str,
    key: &Arc<dyn Serde<K>>,
    value: &Arc<dyn Serde<V>>,
) -> KStream<K, V> {
    if !stream.key_changed {
        return stream.clone();
    }
    stream.repartition(Repartitioned {
        name: name.to_owned(),
        key: key.clone(),
        value: value.clone(),
        partitions: None,
    })
}

/// One side of a windowed join. Keys in both stores are
/// `Windowed { key, window: { start: timestamp, end: source offset } }`,
/// so a range scan walks one key's records by time.
struct JoinSide<K, VThis, VOther, VR> {
    own: String,
    other: String,
    /// A record at `t` joins other-side records in `[t - lower, t + upper]`.
    lower: i64,
    upper: i64,
    grace: i64,
    emit_unmatched: bool,
    join: JoinFn<K, VThis, VOther, VR>,
}

impl<K: Data, VThis: Data, VOther: Data, VR: Data> JoinSide<K, VThis, VOther, VR> {
    fn key(key: &K, timestamp: Timestamp, seq: i64) -> Windowed<K> {
        Windowed {
            key: key.clone(),
            window: Window {
                start: timestamp,
                end: seq,
            },
        }
    }

    /// Expires own records whose window closed, emitting the unmatched ones
    /// if this join kind emits them.
    fn expire(&self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<(), ProcessError> {
        let stream_time = ctx.stream_time();
        let mut own = ctx.key_value_store::<Windowed<K>, Held<VThis>>(&self.own)?;
        let expired: Vec<(Windowed<K>, Held<VThis>)> = own
            .all()?
            .into_iter()
            .filter(|(k, _)| {
                k.window
                    .start
                    .saturating_add(self.upper)
                    .saturating_add(self.grace)
                    < stream_time
            })
            .collect();
        for (key, _) in &expired {
            own.delete(key)?;
        }
        if self.emit_unmatched {
            for (key, held) in expired.into_iter().filter(|(_, h)| !h.matched) {
                if let Some(value) = (self.join)(&key.key, Some(&held.value), None) {
                    ctx.forward(Record::new(key.key, value, key.window.start));
                }
            }
        }
        Ok(())
    }
}

impl<K: Data, VThis: Data, VOther: Data, VR: Data> Processor<K, VThis, K, VR>
    for JoinSide<K, VThis, VOther, VR>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, VR>) -> Result<(), ProcessError> {
        ctx.schedule(Duration::from_millis(1), PunctuationType::StreamTime);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, VR>,
        record: Record<K, VThis>,
    ) -> Result<(), ProcessError> {
        let t = record.timestamp;
        if t.saturating_add(self.upper).saturating_add(self.grace) < ctx.stream_time() {
            ctx.record_late();
            return Ok(());
        }
        let seq = ctx.record_metadata().map_or(0, |m| m.offset);
        let mut other = ctx.key_value_store::<Windowed<K>, Held<VOther>>(&self.other)?;
        let matches = crate::window_store::fetch_key_range(
            &other,
            &record.key,
            t.saturating_sub(self.lower),
            t.saturating_add(self.upper),
        )?;
        for (key, held) in &matches {
            if !held.matched {
                other.put(
                    key,
                    &Held {
                        value: held.value.clone(),
                        matched: true,
                    },
                )?;
            }
        }
        let mut own = ctx.key_value_store::<Windowed<K>, Held<VThis>>(&self.own)?;
        own.put(
            &Self::key(&record.key, t, seq),
            &Held {
                value: record.value.clone(),
                matched: !matches.is_empty(),
            },
        )?;
        for (key, held) in matches {
            if let Some(value) = (self.join)(&record.key, Some(&record.value), Some(&held.value)) {
                ctx.forward(Record::new(
                    record.key.clone(),
                    value,
                    t.max(key.window.start),
                ));
            }
        }
        Ok(())
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, VR>,
        _id: ScheduleId,
        _now: Timestamp,
    ) -> Result<(), ProcessError> {
        self.expire(ctx)
    }
}
