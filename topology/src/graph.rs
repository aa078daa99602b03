//! The logical graph a [`StreamsBuilder`](crate::StreamsBuilder) produces.
//!
//! A [`Topology`] is a directed graph of nodes: sources (read topics and
//! deserialize), processors, and sinks (serialize and write topics). Nodes
//! joined by edges form a *sub-topology*; a repartition topic (written by a
//! sink, read by a source) is where one sub-topology ends and another
//! begins. The runtime runs one task per (sub-topology, partition).
//!
//! Node names follow Kafka Streams (`KSTREAM-FILTER-0000000001`) unless the
//! user names a node; store and internal-topic names are always given by the
//! user (`Named`/`Materialized`), so they stay stable when the graph changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::processor::{DynValue, ProcessorSupplier};
use crate::record::Timestamp;
use crate::serdes::SerdeError;
use crate::store::StoreSpec;

/// Index of a node in its topology.
pub type NodeId = usize;

/// A topic a node reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicName {
    /// A topic the user named.
    User(String),
    /// A topic brook manages; the runtime prefixes it with the application
    /// id: `<application.id>-<suffix>`.
    Internal(String),
}

impl TopicName {
    /// The topic's name on the broker for application `application_id`.
    pub fn resolve(&self, application_id: &str) -> String {
        match self {
            TopicName::User(name) => name.clone(),
            TopicName::Internal(suffix) => format!("{application_id}-{suffix}"),
        }
    }

    /// The name as `describe()` shows it (internal topics without prefix).
    pub fn display_name(&self) -> &str {
        match self {
            TopicName::User(name) | TopicName::Internal(name) => name,
        }
    }
}

/// Turns the bytes of a key or value into a type-erased value.
pub type DeserializeFn = Arc<dyn Fn(Option<&[u8]>) -> Result<DynValue, SerdeError> + Send + Sync>;
/// Turns a type-erased key or value into bytes (`None`: null).
pub type SerializeFn = Arc<dyn Fn(&DynValue) -> Result<Option<Vec<u8>>, SerdeError> + Send + Sync>;
/// Picks a record's event time from its key, value and broker timestamp.
pub type TimestampExtractorFn =
    Arc<dyn Fn(&DynValue, &DynValue, Timestamp) -> Timestamp + Send + Sync>;

/// Reads topics.
#[derive(Clone)]
pub struct SourceNode {
    /// Topics read.
    pub topics: Vec<TopicName>,
    /// Key deserializer.
    pub key: DeserializeFn,
    /// Value deserializer.
    pub value: DeserializeFn,
    /// Event time from the record instead of its broker timestamp.
    pub timestamp_extractor: Option<TimestampExtractorFn>,
}

/// Runs a processor.
#[derive(Clone)]
pub struct ProcessorNode {
    /// Makes the processor, once per task.
    pub supplier: ProcessorSupplier,
    /// State stores it uses.
    pub stores: Vec<String>,
}

/// Writes a topic.
#[derive(Clone)]
pub struct SinkNode {
    /// Topic written.
    pub topic: TopicName,
    /// Key serializer.
    pub key: SerializeFn,
    /// Value serializer.
    pub value: SerializeFn,
}

/// What a node does.
#[derive(Clone)]
pub enum NodeKind {
    /// Reads topics.
    Source(SourceNode),
    /// Processes records.
    Processor(ProcessorNode),
    /// Writes a topic.
    Sink(SinkNode),
}

/// One node of the graph.
#[derive(Clone)]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// What it does.
    pub kind: NodeKind,
    /// Nodes that forward to it.
    pub parents: Vec<NodeId>,
    /// Nodes it forwards to.
    pub children: Vec<NodeId>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("parents", &self.parents)
            .field("children", &self.children)
            .finish_non_exhaustive()
    }
}

/// A global store: every instance fills it from all partitions of `topic`.
#[derive(Clone)]
pub struct GlobalStore {
    /// The topic it mirrors.
    pub topic: TopicName,
    /// The store's name.
    pub store: String,
    /// Checks (and decodes) keys.
    pub key: DeserializeFn,
    /// Checks (and decodes) values; null values delete.
    pub value: DeserializeFn,
}

/// Why an internal topic exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTopicKind {
    /// Re-keyed records on their way to the next sub-topology.
    Repartition,
}

/// A topic brook creates and owns for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    /// Its name.
    pub name: TopicName,
    /// What it is for.
    pub kind: InternalTopicKind,
    /// Partition count; `None`: as many as the sub-topology that writes it reads.
    pub partitions: Option<i32>,
}

/// A connected part of the graph; runs as one task per input partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtopology {
    /// Its number, in order of first appearance.
    pub id: u32,
    /// Its nodes, in creation order.
    pub nodes: Vec<NodeId>,
    /// Topics its sources read (co-partitioned: same partition count).
    pub source_topics: Vec<TopicName>,
    /// Stores its processors use.
    pub stores: Vec<String>,
}

/// Why a topology could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two nodes share a name.
    #[error("two nodes are named {0:?}; node names must be unique")]
    DuplicateName(String),
    /// Two sources read the same topic.
    #[error("topic {0:?} is read by two sources; read it once and share the stream")]
    TopicReadTwice(String),
    /// Two stores share a name.
    #[error("two stores are named {0:?}; store names must be unique")]
    DuplicateStore(String),
    /// A processor uses a store the topology does not declare.
    #[error("processor {node:?} uses store {store:?}, which is not declared")]
    UnknownStore {
        /// The processor.
        node: String,
        /// The store.
        store: String,
    },
    /// A join needs the table's store, but the table is not materialized.
    #[error(
        "join {join:?} needs a materialized table (from StreamsBuilder::table or an aggregation)"
    )]
    TableNotMaterialized {
        /// The join's name.
        join: String,
    },
    /// A name is empty or otherwise unusable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A built topology: immutable, shareable between threads and tasks.
#[derive(Clone)]
pub struct Topology {
    nodes: Vec<Node>,
    subtopologies: Vec<Subtopology>,
    internal_topics: Vec<InternalTopic>,
    stores: Vec<StoreSpec>,
    globals: Vec<GlobalStore>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Topology {
    /// Checks the graph and splits it into sub-topologies.
    pub(crate) fn new(
        nodes: Vec<Node>,
        internal_topics: Vec<InternalTopic>,
        stores: Vec<StoreSpec>,
        globals: Vec<GlobalStore>,
    ) -> Result<Self, TopologyError> {
        let global_names: BTreeSet<&str> = globals.iter().map(|g| g.store.as_str()).collect();
        let mut store_names = BTreeSet::new();
        for store in &stores {
            if store.name.trim().is_empty() {
                return Err(TopologyError::InvalidName {
                    name: store.name.clone(),
                    reason: "store names must not be empty",
                });
            }
            if !store_names.insert(store.name.as_str()) {
                return Err(TopologyError::DuplicateStore(store.name.clone()));
            }
        }
        let mut names = BTreeSet::new();
        let mut read: BTreeSet<TopicName> = globals.iter().map(|g| g.topic.clone()).collect();
        if read.len() < globals.len() {
            let mut seen = BTreeSet::new();
            let twice = globals
                .iter()
                .find(|g| !seen.insert(&g.topic))
                .map(|g| g.topic.display_name());
            return Err(TopologyError::TopicReadTwice(
                twice.unwrap_or_default().to_owned(),
            ));
        }
        for node in &nodes {
            if node.name.trim().is_empty() {
                return Err(TopologyError::InvalidName {
                    name: node.name.clone(),
                    reason: "node names must not be empty",
                });
            }
            if !names.insert(node.name.as_str()) {
                return Err(TopologyError::DuplicateName(node.name.clone()));
            }
            match &node.kind {
                NodeKind::Source(source) => {
                    for topic in &source.topics {
                        if !read.insert(topic.clone()) {
                            let topic = topic.display_name().to_owned();
                            return Err(TopologyError::TopicReadTwice(topic));
                        }
                    }
                }
                NodeKind::Processor(p) => {
                    if let Some(store) = p.stores.iter().find(|s| !store_names.contains(s.as_str()))
                    {
                        return Err(TopologyError::UnknownStore {
                            node: node.name.clone(),
                            store: store.clone(),
                        });
                    }
                }
                NodeKind::Sink(_) => {}
            }
        }

        // Connected components (union-find) over parent/child edges and over
        // shared stores: processors sharing a store must run in one task.
        let mut root: Vec<NodeId> = (0..nodes.len()).collect();
        fn find(root: &mut [NodeId], mut n: NodeId) -> NodeId {
            while root[n] != n {
                root[n] = root[root[n]];
                n = root[n];
            }
            n
        }
        let mut first_user: BTreeMap<&str, NodeId> = BTreeMap::new();
        for (id, node) in nodes.iter().enumerate() {
            let mut joined = node.children.clone();
            // Global stores are shared by every task: they join nothing.
            if let NodeKind::Processor(p) = &node.kind {
                for store in p
                    .stores
                    .iter()
                    .filter(|s| !global_names.contains(s.as_str()))
                {
                    joined.push(*first_user.entry(store.as_str()).or_insert(id));
                }
            }
            for other in joined {
                let (a, b) = (find(&mut root, id), find(&mut root, other));
                root[a.max(b)] = a.min(b);
            }
        }
        let mut components: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for id in 0..nodes.len() {
            let r = find(&mut root, id);
            components.entry(r).or_default().push(id);
        }
        let subtopologies = components
            .into_values()
            .enumerate()
            .map(|(i, members)| {
                let mut source_topics = Vec::new();
                let mut sub_stores = BTreeSet::new();
                for &n in &members {
                    match &nodes[n].kind {
                        NodeKind::Source(s) => source_topics.extend(s.topics.iter().cloned()),
                        NodeKind::Processor(p) => sub_stores.extend(
                            p.stores
                                .iter()
                                .filter(|s| !global_names.contains(s.as_str()))
                                .cloned(),
                        ),
                        NodeKind::Sink(_) => {}
                    }
                }
                Subtopology {
                    id: i as u32,
                    nodes: members,
                    source_topics,
                    stores: sub_stores.into_iter().collect(),
                }
            })
            .collect();
        Ok(Topology {
            nodes,
            subtopologies,
            internal_topics,
            stores,
            globals,
        })
    }

    /// The stores the topology declares.
    pub fn stores(&self) -> &[StoreSpec] {
        &self.stores
    }

    /// The global stores.
    pub fn global_stores(&self) -> &[GlobalStore] {
        &self.globals
    }

    /// The store named `name`.
    pub fn store(&self, name: &str) -> Option<&StoreSpec> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The sub-topologies.
    pub fn subtopologies(&self) -> &[Subtopology] {
        &self.subtopologies
    }

    /// The topics brook must create for this topology.
    pub fn internal_topics(&self) -> &[InternalTopic] {
        &self.internal_topics
    }

    /// The sub-topology whose source reads `topic`.
    pub fn subtopology_reading(&self, topic: &TopicName) -> Option<&Subtopology> {
        self.subtopologies
            .iter()
            .find(|s| s.source_topics.contains(topic))
    }

    /// A description in the spirit of Kafka Streams' `Topology#describe()`.
    pub fn describe(&self) -> TopologyDescription {
        TopologyDescription {
            topology: self.clone(),
        }
    }
}

/// What [`Topology::describe`] returns; print it with `{}`.
pub struct TopologyDescription {
    topology: Topology,
}

impl fmt::Display for TopologyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.topology;
        let names = |ids: &[NodeId]| -> String {
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.iter()
                    .map(|&i| t.nodes[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "Topologies:")?;
        for sub in &t.subtopologies {
            writeln!(f, "   Sub-topology: {}", sub.id)?;
            for &id in &sub.nodes {
                let node = &t.nodes[id];
                match &node.kind {
                    NodeKind::Source(s) => {
                        let topics: Vec<_> = s.topics.iter().map(TopicName::display_name).collect();
                        writeln!(
                            f,
                            "    Source: {} (topics: [{}])",
                            node.name,
                            topics.join(", ")
                        )?;
                    }
                    NodeKind::Processor(p) => {
                        writeln!(
                            f,
                            "    Processor: {} (stores: [{}])",
                            node.name,
                            p.stores.join(", ")
                        )?;
                    }
                    NodeKind::Sink(s) => {
                        writeln!(
                            f,
                            "    Sink: {} (topic: {})",
                            node.name,
                            s.topic.display_name()
                        )?;
                    }
                }
                if !matches!(node.kind, NodeKind::Sink(_)) {
                    writeln!(f, "      --> {}", names(&node.children))?;
                }
                if !matches!(node.kind, NodeKind::Source(_)) {
                    writeln!(f, "      <-- {}", names(&node.parents))?;
                }
            }
            writeln!(f)?;
        }
        if !t.globals.is_empty() {
            writeln!(f, "Global stores:")?;
            for global in &t.globals {
                writeln!(
                    f,
                    "   {} (topic: {})",
                    global.store,
                    global.topic.display_name()
                )?;
            }
        }
        let changelogs: Vec<&StoreSpec> =
            t.stores.iter().filter(|s| s.logged && !s.global).collect();
        if !t.internal_topics.is_empty() || !changelogs.is_empty() {
            writeln!(f, "Internal topics:")?;
            for topic in &t.internal_topics {
                let kind = match topic.kind {
                    InternalTopicKind::Repartition => "repartition",
                };
                match topic.partitions {
                    Some(p) => writeln!(
                        f,
                        "   {} ({kind}, {p} partitions)",
                        topic.name.display_name()
                    )?,
                    None => writeln!(
                        f,
                        "   {} ({kind}, partitions as the input of the sub-topology writing it)",
                        topic.name.display_name()
                    )?,
                }
            }
            for store in changelogs {
                writeln!(
                    f,
                    "   {} (changelog of store {}, compacted, one partition per task)",
                    store.changelog_suffix(),
                    store.name
                )?;
            }
        }
        Ok(())
    }
}
