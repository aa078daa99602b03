//! Stream–table joins.
//!
//! `stream.join(&table, ..)` looks up each stream record's key in the
//! table's store as of the record's processing: the table side is a state,
//! the stream side drives the join. Both inputs must be co-partitioned (the
//! runtime checks); if the stream's key may have changed, it is first
//! repartitioned through `<application.id>-<join name>-repartition`. Inner
//! joins drop stream records with no table entry; left joins pass `None`.
//!
//! ```
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::{Consumed, Joined, Materialized, Produced, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! let users = builder.table(
//!     "users",
//!     Consumed::with(Utf8, Utf8),
//!     Materialized::named("users-store", Utf8, Utf8),
//! );
//! builder
//!     .stream("orders", Consumed::with(Utf8, Json::<i64>::new()))
//!     .left_join(
//!         &users,
//!         |_, total, user: Option<String>| format!("{} spent {total}", user.unwrap_or_default()),
//!         Joined::named("orders-with-users", Utf8, Json::<i64>::new()),
//!     )
//!     .to("enriched-orders", Produced::with(Utf8, Utf8));
//! assert!(builder.build().is_ok());
//! ```

use std::sync::Arc;

use crate::graph::TopologyError;
use crate::processor::{Data, ProcessError, Processor, ProcessorContext, supplier};
use crate::record::Record;
use crate::serdes::Serde;
use crate::stream::{KStream, Repartitioned};
use crate::table::KTable;

/// Names a join (its processor and, if needed, its repartition topic) and
/// gives the serdes of the stream side for that topic.
pub struct Joined<K, V> {
    name: String,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
}

impl<K: Data, V: Data> Joined<K, V> {
    /// A join named `name`; `key` and `value` serialize the stream side.
    pub fn named(name: impl Into<String>, key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Joined {
            name: name.into(),
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }
}

type Joiner<K, V, VT, VR> = Arc<dyn Fn(&K, V, Option<VT>) -> Option<VR> + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    fn join_table<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joined: Joined<K, V>,
        joiner: Joiner<K, V, VT, VR>,
    ) -> KStream<K, VR> {
        let Some(store) = table.store_name().map(str::to_owned) else {
            self.graph
                .borrow_mut()
                .errors
                .push(TopologyError::TableNotMaterialized { join: joined.name });
            return KStream::new(self.graph.clone(), self.node, self.key_changed);
        };
        let input = if self.key_changed {
            self.repartition(Repartitioned {
                name: joined.name.clone(),
                key: joined.key,
                value: joined.value,
                partitions: None,
            })
        } else {
            self.clone()
        };
        let store_name = store.clone();
        let node = self.graph.borrow_mut().add_stateful(
            "KSTREAM-JOIN",
            supplier::<_, K, V, K, VR>(move || StreamTableJoin {
                store: store_name.clone(),
                joiner: joiner.clone(),
            }),
            &[input.node],
            vec![store],
        );
        let stream = KStream::new(self.graph.clone(), node, false);
        stream.name(joined.name)
    }

    /// Joins each record with the table's value for its key; records with
    /// no table entry are dropped.
    pub fn join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&K, V, VT) -> VR + Send + Sync + 'static,
        joined: Joined<K, V>,
    ) -> KStream<K, VR> {
        self.join_table(
            table,
            joined,
            Arc::new(move |k, v, t| t.map(|t| joiner(k, v, t))),
        )
    }

    /// Joins each record with the table's value for its key, `None` when
    /// the table has none.
    pub fn left_join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&K, V, Option<VT>) -> VR + Send + Sync + 'static,
        joined: Joined<K, V>,
    ) -> KStream<K, VR> {
        self.join_table(
            table,
            joined,
            Arc::new(move |k, v, t| Some(joiner(k, v, t))),
        )
    }
}

struct StreamTableJoin<K, V, VT, VR> {
    store: String,
    joiner: Joiner<K, V, VT, VR>,
}

impl<K: Data, V: Data, VT: Data, VR: Data> Processor<K, V, K, VR>
    for StreamTableJoin<K, V, VT, VR>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, VR>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let table_value = ctx
            .key_value_store::<K, VT>(&self.store)?
            .get(&record.key)?;
        if let Some(joined) = (self.joiner)(&record.key, record.value, table_value) {
            ctx.forward(Record {
                key: record.key,
                value: joined,
                timestamp: record.timestamp,
                headers: record.headers,
            });
        }
        Ok(())
    }
}

/// `(this, other) -> result`, `None` when this join kind has no result.
type TableJoinFn<K, V, VO, VR> =
    Arc<dyn Fn(&K, Option<&V>, Option<&VO>) -> Option<VR> + Send + Sync>;

impl<K: Data, V: Data> KTable<K, V> {
    /// Inner join of two co-partitioned, materialized tables: a key has a
    /// result while both tables have it. Updates on either side update the
    /// result; a result that disappears is forwarded as a deletion.
    pub fn join<VO: Data, VR: Data>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(&V, &VO) -> VR + Send + Sync + 'static,
        name: &str,
    ) -> KTable<K, VR> {
        self.join_table(other, name, Arc::new(move |_, v, o| Some(joiner(v?, o?))))
    }

    /// Left join: a result for every key of this table, `None` for the other side if absent.
    pub fn left_join<VO: Data, VR: Data>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
        name: &str,
    ) -> KTable<K, VR> {
        self.join_table(other, name, Arc::new(move |_, v, o| Some(joiner(v?, o))))
    }

    /// Outer join: a result for every key of either table.
    pub fn outer_join<VO: Data, VR: Data>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(Option<&V>, Option<&VO>) -> VR + Send + Sync + 'static,
        name: &str,
    ) -> KTable<K, VR> {
        self.join_table(
            other,
            name,
            Arc::new(move |_, v, o| (v.is_some() || o.is_some()).then(|| joiner(v, o))),
        )
    }

    fn join_table<VO: Data, VR: Data>(
        &self,
        other: &KTable<K, VO>,
        name: &str,
        joiner: TableJoinFn<K, V, VO, VR>,
    ) -> KTable<K, VR> {
        let (Some(this_store), Some(other_store)) = (self.store_name(), other.store_name()) else {
            let graph = &self.changes.graph;
            graph
                .borrow_mut()
                .errors
                .push(TopologyError::TableNotMaterialized {
                    join: name.to_owned(),
                });
            return KTable::new(
                self.changes.then(
                    "KTABLE-MAPVALUES",
                    supplier::<_, K, crate::Change<V>, K, crate::Change<VR>>(|| Never),
                    false,
                ),
                None,
            );
        };
        let stores = vec![this_store.to_owned(), other_store.to_owned()];
        let mut g = self.changes.graph.borrow_mut();
        let (left_other, right_other) = (other_store.to_owned(), this_store.to_owned());
        let left_joiner = joiner.clone();
        let left = g.add_stateful(
            "KTABLE-JOINTHIS",
            supplier::<_, K, crate::Change<V>, K, crate::Change<VR>>(move || TableJoinSide {
                other: left_other.clone(),
                join: {
                    let j = left_joiner.clone();
                    Arc::new(move |k: &K, mine: Option<&V>, theirs: Option<&VO>| j(k, mine, theirs))
                        as TableJoinFn<K, V, VO, VR>
                },
            }),
            &[self.changes.node],
            stores.clone(),
        );
        let right = g.add_stateful(
            "KTABLE-JOINOTHER",
            supplier::<_, K, crate::Change<VO>, K, crate::Change<VR>>(move || TableJoinSide {
                other: right_other.clone(),
                join: {
                    let j = joiner.clone();
                    Arc::new(move |k: &K, mine: Option<&VO>, theirs: Option<&V>| j(k, theirs, mine))
                        as TableJoinFn<K, VO, V, VR>
                },
            }),
            &[other.changes.node],
            stores,
        );
        drop(g);
        let left: KStream<K, crate::Change<VR>> =
            KStream::new(self.changes.graph.clone(), left, false);
        let right: KStream<K, crate::Change<VR>> =
            KStream::new(self.changes.graph.clone(), right, false);
        KTable::new(left.merge(&right).name(name.to_owned()), None)
    }
}

/// Never forwards (stands in for a join that could not be built; `build`
/// reports the error).
struct Never;

impl<K: Data, V: Data, VR: Data> Processor<K, crate::Change<V>, K, crate::Change<VR>> for Never {
    fn process(
        &mut self,
        _: &mut ProcessorContext<'_, K, crate::Change<VR>>,
        _: Record<K, crate::Change<V>>,
    ) -> Result<(), ProcessError> {
        Ok(())
    }
}

struct TableJoinSide<K, VThis, VOther, VR> {
    other: String,
    join: TableJoinFn<K, VThis, VOther, VR>,
}

impl<K: Data, VThis: Data, VOther: Data, VR: Data>
    Processor<K, crate::Change<VThis>, K, crate::Change<VR>>
    for TableJoinSide<K, VThis, VOther, VR>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, crate::Change<VR>>,
        record: Record<K, crate::Change<VThis>>,
    ) -> Result<(), ProcessError> {
        let other = ctx
            .key_value_store::<K, VOther>(&self.other)?
            .get(&record.key)?;
        let new = (self.join)(&record.key, record.value.new.as_ref(), other.as_ref());
        let old = (self.join)(&record.key, record.value.old.as_ref(), other.as_ref());
        if new.is_none() && old.is_none() {
            return Ok(());
        }
        ctx.forward(Record {
            key: record.key,
            value: crate::Change { new, old },
            timestamp: record.timestamp,
            headers: record.headers,
        });
        Ok(())
    }
}

/// A table replicated in full to every instance: all partitions of its
/// topic, kept in a read-only global store. Stream–global-table joins need
/// no co-partitioning; a key mapper picks the lookup key.
pub struct GlobalKTable<K, V> {
    store: String,
    _types: std::marker::PhantomData<fn() -> (K, V)>,
}

impl<K, V> GlobalKTable<K, V> {
    /// The global store's name.
    pub fn store_name(&self) -> &str {
        &self.store
    }
}

impl crate::StreamsBuilder {
    /// A global table of `topic`, in the store of `materialized`.
    pub fn global_table<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: crate::Consumed<K, V>,
        materialized: crate::store::Materialized<K, V>,
    ) -> GlobalKTable<K, V> {
        let mut spec = materialized.spec();
        spec.global = true;
        spec.logged = false;
        let store = spec.name.clone();
        let key = crate::stream::deserializer(consumed.key);
        let value = crate::stream::deserializer(consumed.value);
        let mut g = self.graph.borrow_mut();
        g.stores.push(spec);
        g.globals.push(crate::graph::GlobalStore {
            topic: crate::graph::TopicName::User(topic.to_owned()),
            store: store.clone(),
            key,
            value,
        });
        GlobalKTable {
            store,
            _types: std::marker::PhantomData,
        }
    }
}

type GlobalJoiner<K, V, GV, VR> = Arc<dyn Fn(&K, V, Option<GV>) -> Option<VR> + Send + Sync>;
type KeyMapper<K, V, GK> = Arc<dyn Fn(&K, &V) -> GK + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    fn join_global_with<GK: Data, GV: Data, VR: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        key_mapper: KeyMapper<K, V, GK>,
        joiner: GlobalJoiner<K, V, GV, VR>,
        name: &str,
    ) -> KStream<K, VR> {
        let store = global.store.clone();
        let node = self.graph.borrow_mut().add_stateful(
            "KSTREAM-JOIN-GLOBAL",
            supplier::<_, K, V, K, VR>(move || GlobalJoin {
                store: store.clone(),
                key_mapper: key_mapper.clone(),
                joiner: joiner.clone(),
            }),
            &[self.node],
            vec![global.store.clone()],
        );
        KStream::new(self.graph.clone(), node, self.key_changed).name(name.to_owned())
    }

    /// Joins each record with the global table's value for
    /// `key_mapper(key, value)`; records without one are dropped.
    pub fn join_global<GK: Data, GV: Data, VR: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&K, V, GV) -> VR + Send + Sync + 'static,
        name: &str,
    ) -> KStream<K, VR> {
        self.join_global_with(
            global,
            Arc::new(key_mapper),
            Arc::new(move |k, v, g| g.map(|g| joiner(k, v, g))),
            name,
        )
    }

    /// Like [`join_global`](Self::join_global), with `None` when the global
    /// table has no value.
    pub fn left_join_global<GK: Data, GV: Data, VR: Data>(
        &self,
        global: &GlobalKTable<GK, GV>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&K, V, Option<GV>) -> VR + Send + Sync + 'static,
        name: &str,
    ) -> KStream<K, VR> {
        self.join_global_with(
            global,
            Arc::new(key_mapper),
            Arc::new(move |k, v, g| Some(joiner(k, v, g))),
            name,
        )
    }
}

struct GlobalJoin<K, V, GK, GV, VR> {
    store: String,
    key_mapper: KeyMapper<K, V, GK>,
    joiner: GlobalJoiner<K, V, GV, VR>,
}

impl<K: Data, V: Data, GK: Data, GV: Data, VR: Data> Processor<K, V, K, VR>
    for GlobalJoin<K, V, GK, GV, VR>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, VR>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let lookup = (self.key_mapper)(&record.key, &record.value);
        let global = ctx.key_value_store::<GK, GV>(&self.store)?.get(&lookup)?;
        if let Some(joined) = (self.joiner)(&record.key, record.value, global) {
            ctx.forward(Record {
                key: record.key,
                value: joined,
                timestamp: record.timestamp,
                headers: record.headers,
            });
        }
        Ok(())
    }
}
