//! The DSL: [`StreamsBuilder`] and [`KStream`].
//!
//! ```
//! use brook_topology::serdes::{Json, Utf8};
//! use brook_topology::{Consumed, Produced, StreamsBuilder};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
//! struct Order { customer: String, total_cents: i64 }
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("orders", Consumed::with(Utf8, Json::<Order>::new()))
//!     .filter(|_, order| order.total_cents >= 10_000)
//!     .name("big-orders")
//!     .select_key(|_, order| order.customer.clone())
//!     .map_values(|order| order.total_cents)
//!     .to("big-orders-by-customer", Produced::with(Utf8, Json::<i64>::new()));
//! let topology = builder.build().unwrap();
//! assert!(topology.describe().to_string().contains("Processor: big-orders (stores: [])"));
//! ```

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::graph::{
    DeserializeFn, InternalTopic, InternalTopicKind, Node, NodeId, NodeKind, ProcessorNode,
    SerializeFn, SinkNode, SourceNode, TimestampExtractorFn, TopicName, Topology, TopologyError,
};
use crate::processor::{
    Data, DynContext, DynRecord, ProcessError, Processor, ProcessorContext, ProcessorSupplier,
    erase, record_fn, supplier, unerase, unerase_ref,
};
use crate::record::{Record, Timestamp};
use crate::serdes::Serde;
use crate::store::StoreSpec;

#[derive(Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<Node>,
    pub(crate) internal_topics: Vec<InternalTopic>,
    pub(crate) stores: Vec<StoreSpec>,
    pub(crate) next_index: usize,
    /// Mistakes found while the DSL was used; `build` reports the first.
    pub(crate) errors: Vec<TopologyError>,
    pub(crate) globals: Vec<crate::graph::GlobalStore>,
}

impl GraphBuilder {
    fn next_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{:010}", self.next_index);
        self.next_index += 1;
        name
    }

    fn add(&mut self, name: String, kind: NodeKind, parents: &[NodeId]) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name,
            kind,
            parents: parents.to_vec(),
            children: Vec::new(),
        });
        for &parent in parents {
            self.nodes[parent].children.push(id);
        }
        id
    }

    fn add_processor(
        &mut self,
        prefix: &str,
        supplier: ProcessorSupplier,
        parents: &[NodeId],
    ) -> NodeId {
        self.add_stateful(prefix, supplier, parents, Vec::new())
    }

    pub(crate) fn add_stateful(
        &mut self,
        prefix: &str,
        supplier: ProcessorSupplier,
        parents: &[NodeId],
        stores: Vec<String>,
    ) -> NodeId {
        let name = self.next_name(prefix);
        let kind = NodeKind::Processor(ProcessorNode { supplier, stores });
        self.add(name, kind, parents)
    }
}

pub(crate) fn deserializer<T: Data>(serde: Arc<dyn Serde<T>>) -> DeserializeFn {
    Arc::new(move |bytes| serde.deserialize(bytes).map(erase))
}

pub(crate) fn serializer<T: Data>(serde: Arc<dyn Serde<T>>) -> SerializeFn {
    Arc::new(move |value| {
        // The DSL wires sinks to streams of their own type, so a mismatch
        // cannot happen; say so clearly if it ever does.
        let value = unerase_ref::<T>(value).map_err(|e| crate::serdes::SerdeError::Encode {
            format: "any",
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        serde.serialize(value)
    })
}

/// Builds a topology. Create streams from topics, chain operators, then
/// [`build`](StreamsBuilder::build).
#[derive(Default)]
pub struct StreamsBuilder {
    pub(crate) graph: Rc<RefCell<GraphBuilder>>,
}

impl StreamsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        StreamsBuilder::default()
    }

    /// A stream of the records of `topic`.
    pub fn stream<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        self.streams(&[topic], consumed)
    }

    /// One stream of the records of several topics (which must be co-partitioned).
    pub fn streams<K: Data, V: Data>(
        &self,
        topics: &[&str],
        consumed: Consumed<K, V>,
    ) -> KStream<K, V> {
        let topics = topics
            .iter()
            .map(|t| TopicName::User((*t).to_owned()))
            .collect();
        let node = add_source(&self.graph, topics, consumed);
        KStream::new(self.graph.clone(), node, false)
    }

    /// Declares a store for processors added with
    /// [`KStream::process_with_stores`].
    pub fn add_state_store<K: Data, V: Data>(
        &self,
        materialized: crate::store::Materialized<K, V>,
    ) {
        self.graph.borrow_mut().stores.push(materialized.spec());
    }

    /// Checks the graph and returns the topology.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let mut graph = self.graph.take();
        if !graph.errors.is_empty() {
            return Err(graph.errors.remove(0));
        }
        Topology::new(
            graph.nodes,
            graph.internal_topics,
            graph.stores,
            graph.globals,
        )
    }
}

pub(crate) fn add_source<K: Data, V: Data>(
    graph: &Rc<RefCell<GraphBuilder>>,
    topics: Vec<TopicName>,
    consumed: Consumed<K, V>,
) -> NodeId {
    let mut g = graph.borrow_mut();
    let name = consumed
        .name
        .unwrap_or_else(|| g.next_name("KSTREAM-SOURCE"));
    let kind = NodeKind::Source(SourceNode {
        topics,
        key: deserializer(consumed.key),
        value: deserializer(consumed.value),
        timestamp_extractor: consumed.timestamp_extractor,
    });
    g.add(name, kind, &[])
}

/// How to read a topic: serdes, optional timestamp extractor, optional name.
pub struct Consumed<K, V> {
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
    pub(crate) timestamp_extractor: Option<TimestampExtractorFn>,
    pub(crate) name: Option<String>,
}

impl<K: Data, V: Data> Consumed<K, V> {
    /// Read with these serdes.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Consumed {
            key: Arc::new(key),
            value: Arc::new(value),
            timestamp_extractor: None,
            name: None,
        }
    }

    /// Take event time from the record (e.g. a field of the value) instead of
    /// the broker timestamp, which the extractor also receives.
    pub fn timestamp_extractor(
        mut self,
        extract: impl Fn(&K, &V, Timestamp) -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        self.timestamp_extractor = Some(Arc::new(move |key, value, broker_ts| {
            match (key.downcast_ref::<K>(), value.downcast_ref::<V>()) {
                (Some(k), Some(v)) => extract(k, v, broker_ts),
                _ => broker_ts,
            }
        }));
        self
    }

    /// Names the source node.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How to write a topic: serdes and an optional node name.
pub struct Produced<K, V> {
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
    pub(crate) name: Option<String>,
}

impl<K: Data, V: Data> Produced<K, V> {
    /// Write with these serdes.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Produced {
            key: Arc::new(key),
            value: Arc::new(value),
            name: None,
        }
    }

    /// Names the sink node.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How to repartition: the topic's name (required: internal topic names
/// never come from positions in the graph), serdes, partition count.
pub struct Repartitioned<K, V> {
    pub(crate) name: String,
    pub(crate) key: Arc<dyn Serde<K>>,
    pub(crate) value: Arc<dyn Serde<V>>,
    pub(crate) partitions: Option<i32>,
}

impl<K: Data, V: Data> Repartitioned<K, V> {
    /// Repartition through the internal topic `<application.id>-<name>-repartition`.
    pub fn named(name: impl Into<String>, key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Repartitioned {
            name: name.into(),
            key: Arc::new(key),
            value: Arc::new(value),
            partitions: None,
        }
    }

    /// Use `partitions` partitions (default: as many as the input).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }
}

/// An unbounded stream of key-value records.
///
/// Operators take `&self`, so one stream can feed several branches; each
/// record is then forwarded to all of them.
pub struct KStream<K, V> {
    pub(crate) graph: Rc<RefCell<GraphBuilder>>,
    pub(crate) node: NodeId,
    pub(crate) key_changed: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            key_changed: self.key_changed,
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(graph: Rc<RefCell<GraphBuilder>>, node: NodeId, key_changed: bool) -> Self {
        KStream {
            graph,
            node,
            key_changed,
            _types: PhantomData,
        }
    }

    pub(crate) fn then<KR: Data, VR: Data>(
        &self,
        prefix: &str,
        supplier: ProcessorSupplier,
        key_changed: bool,
    ) -> KStream<KR, VR> {
        let node = self
            .graph
            .borrow_mut()
            .add_processor(prefix, supplier, &[self.node]);
        KStream::new(self.graph.clone(), node, self.key_changed || key_changed)
    }

    /// Adds a processor connected to `stores` after this stream.
    pub(crate) fn then_stateful<KR: Data, VR: Data>(
        &self,
        prefix: &str,
        supplier: ProcessorSupplier,
        stores: Vec<String>,
    ) -> KStream<KR, VR> {
        let node = self
            .graph
            .borrow_mut()
            .add_stateful(prefix, supplier, &[self.node], stores);
        KStream::new(self.graph.clone(), node, self.key_changed)
    }

    /// Renames the node that produces this stream (processor names are
    /// otherwise generated, as in Kafka Streams).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.graph.borrow_mut().nodes[self.node].name = name.into();
        self
    }

    /// Whether an operator upstream may have changed the key, so a stateful
    /// operator must repartition first.
    pub fn key_changed(&self) -> bool {
        self.key_changed
    }

    /// Keeps the records for which `predicate` holds.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.then("KSTREAM-FILTER", filter_supplier(predicate, true), false)
    }

    /// Drops the records for which `predicate` holds.
    pub fn filter_not(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.then("KSTREAM-FILTER", filter_supplier(predicate, false), false)
    }

    /// Replaces key and value. Marks the key as changed.
    pub fn map<KR: Data, VR: Data>(
        &self,
        f: impl Fn(K, V) -> (KR, VR) + Send + Sync + 'static,
    ) -> KStream<KR, VR> {
        let f = Arc::new(f);
        self.then("KSTREAM-MAP", supplier(move || Map { f: f.clone() }), true)
    }

    /// Replaces the value; the key stays, so no repartitioning follows.
    pub fn map_values<VR: Data>(
        &self,
        f: impl Fn(V) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let f = Arc::new(f);
        let supplier = record_fn(move || {
            let f = f.clone();
            move |ctx: &mut dyn DynContext, record: DynRecord| {
                let value = f(unerase::<V>(record.value)?);
                ctx.forward(DynRecord {
                    value: erase(value),
                    ..record
                });
                Ok(())
            }
        });
        self.then("KSTREAM-MAPVALUES", supplier, false)
    }

    /// Replaces each record by zero or more records. Marks the key as changed.
    pub fn flat_map<KR: Data, VR: Data, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<KR, VR>
    where
        I: IntoIterator<Item = (KR, VR)> + 'static,
    {
        let f = Arc::new(f);
        self.then(
            "KSTREAM-FLATMAP",
            supplier(move || FlatMap { f: f.clone() }),
            true,
        )
    }

    /// Replaces each value by zero or more values under the same key.
    pub fn flat_map_values<VR: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, VR>
    where
        I: IntoIterator<Item = VR> + 'static,
    {
        let f = Arc::new(f);
        self.then(
            "KSTREAM-FLATMAPVALUES",
            supplier::<_, K, V, K, VR>(move || FlatMapValues { f: f.clone() }),
            false,
        )
    }

    /// Sets a new key computed from key and value. Marks the key as changed.
    pub fn select_key<KR: Data>(
        &self,
        f: impl Fn(&K, &V) -> KR + Send + Sync + 'static,
    ) -> KStream<KR, V> {
        let f = Arc::new(f);
        self.then(
            "KSTREAM-KEY-SELECT",
            supplier(move || SelectKey { f: f.clone() }),
            true,
        )
    }

    /// Calls `f` on every record and passes it on unchanged.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let f = Arc::new(f);
        let supplier = record_fn(move || {
            let f = f.clone();
            move |ctx: &mut dyn DynContext, record: DynRecord| {
                f(
                    unerase_ref::<K>(&record.key)?,
                    unerase_ref::<V>(&record.value)?,
                );
                ctx.forward(record);
                Ok(())
            }
        });
        self.then("KSTREAM-PEEK", supplier, false)
    }

    /// Both streams' records as one stream.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let mut g = self.graph.borrow_mut();
        let supplier = supplier::<_, K, V, K, V>(|| PassThrough);
        let node = g.add_processor("KSTREAM-MERGE", supplier, &[self.node, other.node]);
        KStream::new(
            self.graph.clone(),
            node,
            self.key_changed || other.key_changed,
        )
    }

    /// Splits the stream by predicates: each record goes to the first branch
    /// whose predicate holds, or to the default branch, or nowhere.
    ///
    /// ```
    /// # use brook_topology::{Consumed, StreamsBuilder, serdes::{Json, Utf8}};
    /// let builder = StreamsBuilder::new();
    /// let totals = builder.stream("totals", Consumed::with(Utf8, Json::<i64>::new()));
    /// let [big, small, rest] = totals
    ///     .split()
    ///     .branch(|_, total| *total >= 100)
    ///     .branch(|_, total| *total > 0)
    ///     .default_branch()
    ///     .into_streams()
    ///     .try_into()
    ///     .ok()
    ///     .unwrap();
    /// # let _ = (big, small, rest);
    /// ```
    pub fn split(&self) -> SplitStream<K, V> {
        SplitStream {
            parent: self.clone(),
            predicates: Vec::new(),
            default: false,
        }
    }

    /// Writes the stream to `topic`.
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        self.add_sink(
            TopicName::User(topic.to_owned()),
            produced.key,
            produced.value,
            produced.name,
        );
    }

    /// Adds a sink writing this stream to `topic`.
    pub(crate) fn add_sink(
        &self,
        topic: TopicName,
        key: Arc<dyn Serde<K>>,
        value: Arc<dyn Serde<V>>,
        name: Option<String>,
    ) {
        let mut g = self.graph.borrow_mut();
        let name = name.unwrap_or_else(|| g.next_name("KSTREAM-SINK"));
        let kind = NodeKind::Sink(SinkNode {
            topic,
            key: serializer(key),
            value: serializer(value),
        });
        g.add(name, kind, &[self.node]);
    }

    /// Sends the stream through the internal topic
    /// `<application.id>-<name>-repartition`, so records are partitioned by
    /// their current key. Starts a new sub-topology.
    pub fn repartition(&self, repartitioned: Repartitioned<K, V>) -> KStream<K, V> {
        let topic = TopicName::Internal(format!("{}-repartition", repartitioned.name));
        self.graph.borrow_mut().internal_topics.push(InternalTopic {
            name: topic.clone(),
            kind: InternalTopicKind::Repartition,
            partitions: repartitioned.partitions,
        });
        self.add_sink(
            topic.clone(),
            repartitioned.key.clone(),
            repartitioned.value.clone(),
            None,
        );
        let consumed = Consumed {
            key: repartitioned.key,
            value: repartitioned.value,
            timestamp_extractor: None,
            name: None,
        };
        let node = add_source(&self.graph, vec![topic], consumed);
        KStream::new(self.graph.clone(), node, false)
    }

    /// Runs a [`Processor`] on every record (the Processor API inside the
    /// DSL). A fresh processor is made for each task. Marks the key as
    /// changed, since the processor may change it.
    pub fn process<KR: Data, VR: Data, P>(
        &self,
        make: impl Fn() -> P + Send + Sync + 'static,
    ) -> KStream<KR, VR>
    where
        P: Processor<K, V, KR, VR>,
    {
        self.then("KSTREAM-PROCESSOR", supplier(make), true)
    }

    /// Like [`process`](Self::process), with access to the named stores
    /// (declared with [`StreamsBuilder::add_state_store`]) through
    /// [`ProcessorContext::key_value_store`].
    pub fn process_with_stores<KR: Data, VR: Data, P>(
        &self,
        make: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<KR, VR>
    where
        P: Processor<K, V, KR, VR>,
    {
        let stores = stores.iter().map(|s| (*s).to_owned()).collect();
        let node = self.graph.borrow_mut().add_stateful(
            "KSTREAM-PROCESSOR",
            supplier(make),
            &[self.node],
            stores,
        );
        KStream::new(self.graph.clone(), node, true)
    }
}

/// A stream being split into branches; see [`KStream::split`].
pub struct SplitStream<K, V> {
    parent: KStream<K, V>,
    predicates: Vec<Predicate<K, V>>,
    default: bool,
}

type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

impl<K: Data, V: Data> SplitStream<K, V> {
    /// Adds a branch for the records matching `predicate` (and no earlier branch).
    pub fn branch(mut self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.predicates.push(Arc::new(predicate));
        self
    }

    /// Adds a last branch for the records no predicate matched.
    pub fn default_branch(mut self) -> Self {
        self.default = true;
        self
    }

    /// The branches, in the order they were added (the default one last).
    pub fn into_streams(self) -> Vec<KStream<K, V>> {
        let graph = self.parent.graph.clone();
        let branches = self.predicates.len() + usize::from(self.default);
        let mut g = graph.borrow_mut();
        let first_child_index = g.next_index + 1;
        let children: Vec<String> = (0..branches)
            .map(|i| format!("KSTREAM-BRANCHCHILD-{:010}", first_child_index + i))
            .collect();
        let predicates = Arc::new(self.predicates);
        let targets = Arc::new(children.clone());
        let branch = g.add_processor(
            "KSTREAM-BRANCH",
            supplier(move || Branch {
                predicates: predicates.clone(),
                children: targets.clone(),
            }),
            &[self.parent.node],
        );
        let mut streams = Vec::with_capacity(branches);
        for name in children {
            g.next_index += 1;
            let kind = NodeKind::Processor(ProcessorNode {
                supplier: supplier::<_, K, V, K, V>(|| PassThrough),
                stores: Vec::new(),
            });
            let node = g.add(name, kind, &[branch]);
            streams.push(KStream::new(graph.clone(), node, self.parent.key_changed));
        }
        streams
    }
}

// ---- the processors behind the operators ----

struct PassThrough;

impl<K: Data, V: Data> Processor<K, V, K, V> for PassThrough {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, V>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        ctx.forward(record);
        Ok(())
    }
}

/// `filter` (`keep`: true) and `filter_not` (false): the record passes
/// through unchanged, never unwrapped.
fn filter_supplier<K: Data, V: Data>(
    predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    keep: bool,
) -> ProcessorSupplier {
    let predicate = Arc::new(predicate);
    record_fn(move || {
        let predicate = predicate.clone();
        move |ctx: &mut dyn DynContext, record: DynRecord| {
            let holds = predicate(
                unerase_ref::<K>(&record.key)?,
                unerase_ref::<V>(&record.value)?,
            );
            if holds == keep {
                ctx.forward(record);
            }
            Ok(())
        }
    })
}

struct Map<F> {
    f: Arc<F>,
}

impl<K, V, KR, VR, F> Processor<K, V, KR, VR> for Map<F>
where
    K: Data,
    V: Data,
    KR: Data,
    VR: Data,
    F: Fn(K, V) -> (KR, VR) + Send + Sync + 'static,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KR, VR>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let (key, value) = (self.f)(record.key, record.value);
        ctx.forward(Record {
            key,
            value,
            timestamp: record.timestamp,
            headers: record.headers,
        });
        Ok(())
    }
}

struct FlatMap<F> {
    f: Arc<F>,
}

impl<K, V, KR, VR, I, F> Processor<K, V, KR, VR> for FlatMap<F>
where
    K: Data,
    V: Data,
    KR: Data,
    VR: Data,
    I: IntoIterator<Item = (KR, VR)>,
    F: Fn(K, V) -> I + Send + Sync + 'static,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KR, VR>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        for (key, value) in (self.f)(record.key, record.value) {
            ctx.forward(Record {
                key,
                value,
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            });
        }
        Ok(())
    }
}

struct FlatMapValues<F> {
    f: Arc<F>,
}

impl<K, V, VR, I, F> Processor<K, V, K, VR> for FlatMapValues<F>
where
    K: Data,
    V: Data,
    VR: Data,
    I: IntoIterator<Item = VR>,
    F: Fn(V) -> I + Send + Sync + 'static,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, VR>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        for value in (self.f)(record.value) {
            ctx.forward(Record {
                key: record.key.clone(),
                value,
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            });
        }
        Ok(())
    }
}

struct SelectKey<F> {
    f: Arc<F>,
}

impl<K, V, KR, F> Processor<K, V, KR, V> for SelectKey<F>
where
    K: Data,
    V: Data,
    KR: Data,
    F: Fn(&K, &V) -> KR + Send + Sync + 'static,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KR, V>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let key = (self.f)(&record.key, &record.value);
        ctx.forward(record.with_key(key));
        Ok(())
    }
}

struct Branch<K, V> {
    predicates: Arc<Vec<Predicate<K, V>>>,
    children: Arc<Vec<String>>,
}

impl<K: Data, V: Data> Processor<K, V, K, V> for Branch<K, V> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, V>,
        record: Record<K, V>,
    ) -> Result<(), ProcessError> {
        let target = self
            .predicates
            .iter()
            .position(|p| p(&record.key, &record.value))
            .or_else(|| {
                (self.children.len() > self.predicates.len()).then_some(self.predicates.len())
            });
        if let Some(i) = target {
            ctx.forward_to(&self.children[i], record)?;
        }
        Ok(())
    }
}
