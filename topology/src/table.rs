//! Grouped streams, aggregations and tables.
//!
//! `group_by_key` / `group_by` turn a stream into a [`KGroupedStream`];
//! `count`, `reduce` and `aggregate` keep one value per key in a store and
//! return a [`KTable`], the changelog of those values. If the key may have
//! changed upstream (`map`, `select_key`, `flat_map`, `process`, or
//! `group_by` itself), records first go through the repartition topic
//! `<application.id>-<store>-repartition`, so every key is aggregated by
//! exactly one task.
//!
//! Inside the topology a table's records carry a [`Change`]: the new value
//! (or `None` for a deletion) and the old one. [`KTable::to_stream`] gives
//! the new values as `Option<V>`, `None` being a tombstone.
//!
//! ```
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::store::Materialized;
//! use brook_topology::table::Grouped;
//! use brook_topology::{Consumed, Produced, StreamsBuilder};
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("lines", Consumed::with(Utf8, Utf8))
//!     .flat_map_values(|line: String| line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
//!     .group_by(|_, word| word.clone(), Grouped::with(Utf8, Utf8))
//!     .count(Materialized::named("word-counts", Utf8, Json::<i64>::new()))
//!     .to("word-counts", Produced::with(Utf8, Json::<i64>::new()));
//! let described = builder.build().unwrap().describe().to_string();
//! assert!(described.contains("word-counts-repartition"));
//! assert!(described.contains("(stores: [word-counts])"));
//! ```

use std::sync::Arc;

use crate::cache::{RecordCache, flush_cache, forward_or_cache};
use crate::graph::TopicName;
use crate::processor::{Data, ProcessError, Processor, ProcessorContext, supplier};
pub use crate::record::Change;
use crate::record::Record;
use crate::serdes::{Serde, SerdeError};
use crate::store::Materialized;
use crate::stream::{Consumed, KStream, Produced, Repartitioned, StreamsBuilder, add_source};

/// Serdes for the repartition topic a grouping may need.
pub struct Grouped<K, V> {
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
}

impl<K: Data, V: Data> Grouped<K, V> {
    /// Group with these serdes.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Grouped {
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Groups by the current key (repartitioning first if it may have changed).
    pub fn group_by_key(&self, grouped: Grouped<K, V>) -> KGroupedStream<K, V> {
        KGroupedStream {
            stream: self.clone(),
            grouped,
        }
    }

    /// Groups by a new key computed from key and value (always repartitions).
    pub fn group_by<KR: Data>(
        &self,
        key: impl Fn(&K, &V) -> KR + Send + Sync + 'static,
        grouped: Grouped<KR, V>,
    ) -> KGroupedStream<KR, V> {
        KGroupedStream {
            stream: self.select_key(key),
            grouped,
        }
    }
}

impl<K, V> Clone for Grouped<K, V> {
    fn clone(&self) -> Self {
        Grouped {
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

impl<K, V> Clone for KGroupedStream<K, V> {
    fn clone(&self) -> Self {
        KGroupedStream {
            stream: self.stream.clone(),
            grouped: self.grouped.clone(),
        }
    }
}

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) grouped: Grouped<K, V>,
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// The stream to aggregate: repartitioned through `<store>-repartition`
    /// when the key may have changed.
    pub(crate) fn partitioned(&self, store: &str) -> KStream<K, V> {
        if !self.stream.key_changed {
            return self.stream.clone();
        }
        self.stream.repartition(Repartitioned {
            name: store.to_owned(),
            key: self.grouped.key.clone(),
            value: self.grouped.value.clone(),
            partitions: None,
        })
    }

    fn aggregate_with<VA: Data>(
        &self,
        prefix: &str,
        materialized: Materialized<K, VA>,
        step: Step<K, V, VA>,
    ) -> KTable<K, VA> {
        let input = self.partitioned(&materialized.name);
        let store = materialized.name.clone();
        let mut g = input.graph.borrow_mut();
        g.stores.push(materialized.spec());
        let store_name = store.clone();
        let caches = crate::cache::caches(&materialized);
        let node = g.add_stateful(
            prefix,
            supplier::<_, K, V, K, Change<VA>>(move || Aggregate {
                store: store_name.clone(),
                step: step.clone(),
                cache: caches(),
            }),
            &[input.node],
            vec![store.clone()],
        );
        drop(g);
        KTable::new(KStream::new(input.graph.clone(), node, false), Some(store))
    }

    /// Counts records per key.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            Arc::new(|_, _, old: Option<i64>| old.unwrap_or(0) + 1),
        )
    }

    /// Combines the values of each key with `reducer(accumulated, new)`;
    /// the first value of a key is taken as it is.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        self.aggregate_with(
            "KSTREAM-REDUCE",
            materialized,
            Arc::new(move |_, value, old| match old {
                Some(acc) => reducer(acc, value),
                None => value,
            }),
        )
    }

    /// Folds the values of each key into an aggregate, starting from `init()`.
    pub fn aggregate<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> KTable<K, VA> {
        self.aggregate_with(
            "KSTREAM-AGGREGATE",
            materialized,
            Arc::new(move |key, value, old| aggregator(key, value, old.unwrap_or_else(&init))),
        )
    }
}

pub(crate) type Step<K, V, VA> = Arc<dyn Fn(&K, V, Option<VA>) -> VA + Send + Sync>;

struct Aggregate<K, V, VA> {
    store: String,
    step: Step<K, V, VA>,
    cache: Option<RecordCache<K, VA>>,
}

impl<K: Data, V: Data, VA: Data> Processor<K, V, K, Change<VA>> for Aggregate<K, V, VA> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let mut store = ctx.key_value_store::<K, VA>(&self.store)?;
        let old = store.get(&record.key)?;
        let new = (self.step)(&record.key, record.value, old.clone());
        store.put(&record.key, &new)?;
        let update = Record {
            key: record.key,
            value: Change {
                new: Some(new),
                old,
            },
            timestamp: record.timestamp,
            headers: record.headers,
        };
        forward_or_cache(&mut self.cache, ctx, update)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<(), ProcessError> {
        flush_cache(&mut self.cache, ctx);
        Ok(())
    }
}

/// A table: the latest value per key, as a changelog of [`Change`]s.
pub struct KTable<K, V> {
    pub(crate) changes: KStream<K, Change<V>>,
    pub(crate) store: Option<String>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            changes: self.changes.clone(),
            store: self.store.clone(),
        }
    }
}

impl StreamsBuilder {
    /// A table of the latest value per key of `topic` (a null value deletes
    /// the key), kept in the store of `materialized`.
    pub fn table<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let value = consumed.value.clone();
        let nullable: Consumed<K, Option<V>> = Consumed {
            key: consumed.key,
            value: Arc::new(NullableValue(value)),
            timestamp_extractor: consumed.timestamp_extractor,
            name: consumed.name,
        };
        let source = add_source(
            &self.graph,
            vec![TopicName::User(topic.to_owned())],
            nullable,
        );
        let store = materialized.name.clone();
        let mut g = self.graph.borrow_mut();
        g.stores.push(materialized.spec());
        let store_name = store.clone();
        let node = g.add_stateful(
            "KTABLE-SOURCE",
            supplier::<_, K, Option<V>, K, Change<V>>(move || TableSource {
                store: store_name.clone(),
            }),
            &[source],
            vec![store.clone()],
        );
        drop(g);
        KTable::new(KStream::new(self.graph.clone(), node, false), Some(store))
    }
}

/// `Option<V>` through the serde of `V`, null as `None` (tables' values).
struct NullableValue<V>(Arc<dyn Serde<V>>);

impl<V: 'static> Serde<Option<V>> for NullableValue<V> {
    fn serialize(&self, value: &Option<V>) -> Result<Option<Vec<u8>>, SerdeError> {
        value.as_ref().map_or(Ok(None), |v| self.0.serialize(v))
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<V>, SerdeError> {
        bytes.map(|b| self.0.deserialize(Some(b))).transpose()
    }
}

struct TableSource {
    store: String,
}

impl<K: Data, V: Data> Processor<K, Option<V>, K, Change<V>> for TableSource {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
        record: Record<K, Option<V>>,
    ) -> Result<(), ProcessError> {
        let mut store = ctx.key_value_store::<K, V>(&self.store)?;
        let old = store.get(&record.key)?;
        match &record.value {
            Some(value) => store.put(&record.key, value)?,
            None if old.is_none() => return Ok(()),
            None => store.delete(&record.key)?,
        }
        ctx.forward(Record {
            key: record.key,
            value: Change {
                new: record.value,
                old,
            },
            timestamp: record.timestamp,
            headers: record.headers,
        });
        Ok(())
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn new(changes: KStream<K, Change<V>>, store: Option<String>) -> Self {
        KTable { changes, store }
    }

    /// The store holding this table, if it is materialized (for
    /// interactive queries and the test driver).
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The table's updates as a stream: the new value, `None` for a deletion.
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        self.changes.then(
            "KTABLE-TOSTREAM",
            supplier::<_, K, Change<V>, K, Option<V>>(|| ToStream),
            false,
        )
    }

    /// Writes the table's updates to `topic`, deletions as tombstones (null values).
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        let value: Arc<dyn Serde<Option<V>>> = Arc::new(NullableValue(produced.value));
        self.to_stream().add_sink(
            TopicName::User(topic.to_owned()),
            produced.key,
            value,
            produced.name,
        );
    }

    /// Keeps the entries for which `predicate` holds; an entry that stops
    /// matching is forwarded as a deletion.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        let predicate = Arc::new(predicate);
        let changes = self.changes.then(
            "KTABLE-FILTER",
            supplier::<_, K, Change<V>, K, Change<V>>(move || TableFilter {
                predicate: predicate.clone(),
            }),
            false,
        );
        KTable::new(changes, None)
    }

    /// Transforms every value.
    pub fn map_values<VR: Data>(
        &self,
        f: impl Fn(V) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let f = Arc::new(f);
        let changes = self.changes.then(
            "KTABLE-MAPVALUES",
            supplier::<_, K, Change<V>, K, Change<VR>>(move || TableMapValues { f: f.clone() }),
            false,
        );
        KTable::new(changes, None)
    }
}

struct ToStream;

impl<K: Data, V: Data> Processor<K, Change<V>, K, Option<V>> for ToStream {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Option<V>>,
        record: Record<K, Change<V>>,
    ) -> Result<(), ProcessError> {
        let new = record.value.new.clone();
        ctx.forward(record.with_value(new));
        Ok(())
    }
}

struct TableFilter<F> {
    predicate: Arc<F>,
}

impl<K: Data, V: Data, F: Fn(&K, &V) -> bool + Send + Sync + 'static>
    Processor<K, Change<V>, K, Change<V>> for TableFilter<F>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
        record: Record<K, Change<V>>,
    ) -> Result<(), ProcessError> {
        let keep = |v: Option<V>| v.filter(|v| (self.predicate)(&record.key, v));
        let change = Change {
            new: keep(record.value.new.clone()),
            old: keep(record.value.old.clone()),
        };
        if change.new.is_none() && change.old.is_none() {
            return Ok(());
        }
        ctx.forward(record.with_value(change));
        Ok(())
    }
}

struct TableMapValues<F> {
    f: Arc<F>,
}

impl<K: Data, V: Data, VR: Data, F: Fn(V) -> VR + Send + Sync + 'static>
    Processor<K, Change<V>, K, Change<VR>> for TableMapValues<F>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<VR>>,
        record: Record<K, Change<V>>,
    ) -> Result<(), ProcessError> {
        let change = Change {
            new: record.value.new.clone().map(|v| (self.f)(v)),
            old: record.value.old.clone().map(|v| (self.f)(v)),
        };
        ctx.forward(record.with_value(change));
        Ok(())
    }
}
