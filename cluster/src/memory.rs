//! An in-process, deterministic Kafka: the `Cluster` the test driver runs on.
//!
//! Topics are vectors of records per partition; offsets, consumer groups and
//! committed offsets behave as in Kafka; keyed records are partitioned with
//! Kafka's murmur2 (so multi-partition tests put keys where a real cluster
//! would), null keys round robin. Every record also gets a cluster-wide
//! sequence number, so a test can read a multi-partition topic in the order
//! it was written.
//!
//! Transactions are faithful where exactly-once depends on them: a
//! transactional producer's records are in the log as soon as they are
//! flushed but invisible to read-committed consumers until the commit (and
//! forever, if aborted); an open transaction holds read-committed readers
//! at its first offset (the last stable offset); offsets sent to a
//! transaction are committed with it and only then; and creating a producer
//! with a transactional id bumps the id's epoch, fencing the older producer
//! (every later call of it fails with `Fenced`) and aborting what it left open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use brook_topology::TopicSpec;

use crate::partition::partition_for_key;
use crate::{
    Cluster, ClusterConsumer, ClusterError, ClusterProducer, ConsumedRecord, Isolation,
    ProducedRecord, Rebalance, TopicPartition,
};

/// Whether a stored record is visible to read-committed consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Outside a transaction, or in a committed one.
    Committed,
    /// In the open transaction of this transactional id.
    Open(String),
    /// In an aborted transaction: never visible to read-committed consumers.
    Aborted,
}

/// A record stored in a memory partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record.
    pub record: ConsumedRecord,
    /// Position in the cluster-wide write order.
    pub sequence: u64,
    /// Transaction status.
    pub visibility: Visibility,
}

#[derive(Debug)]
struct Topic {
    /// Its name, shared by every record's partition.
    name: Arc<str>,
    spec: Option<TopicSpec>,
    partitions: Vec<Vec<StoredRecord>>,
}

#[derive(Debug, Default)]
struct OpenTransaction {
    partitions: BTreeSet<TopicPartition>,
    offsets: Vec<(String, BTreeMap<TopicPartition, i64>)>,
}

#[derive(Debug, Default)]
struct Transactional {
    epoch: u32,
    open: Option<OpenTransaction>,
}

/// A consumer group's members and generation.
///
/// As in Kafka's rebalance protocol, a partition moves only once its
/// previous owner gave it up: a member learns in `take_rebalance` which
/// partitions it lost, commits their work, and releases them on its next
/// call (poll, commit, rebalance or leaving). Until then the new owner does
/// not get them (it gets them on a later `take_rebalance`), so it starts
/// from the previous owner's final committed offsets and no two members
/// ever own a partition at once.
#[derive(Debug, Default)]
struct Group {
    generation: u64,
    /// Member id → subscribed topics.
    members: BTreeMap<u64, Vec<String>>,
    /// Who owns each partition now.
    owners: BTreeMap<TopicPartition, u64>,
    /// Partitions a member was told it lost and still holds.
    releasing: BTreeMap<u64, Vec<TopicPartition>>,
}

impl Group {
    /// Gives up what `member` was told it lost.
    fn release(&mut self, member: u64) {
        for tp in self.releasing.remove(&member).unwrap_or_default() {
            if self.owners.get(&tp) == Some(&member) {
                self.owners.remove(&tp);
            }
        }
    }

    /// `member` left: everything it owned is free.
    fn remove_member(&mut self, member: u64) {
        self.members.remove(&member);
        self.releasing.remove(&member);
        self.owners.retain(|_, owner| *owner != member);
    }
}

impl Group {
    /// Deterministic assignment: partition `p` of every subscribed topic
    /// goes to the `p % n`-th of the `n` members subscribed to it (by join
    /// order), so partition `p` of co-partitioned topics stays together.
    fn assignment(&self, member: u64, topics: &BTreeMap<String, Topic>) -> Vec<TopicPartition> {
        let Some(subscribed) = self.members.get(&member) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for topic in subscribed {
            let members: Vec<u64> = self
                .members
                .iter()
                .filter(|(_, t)| t.contains(topic))
                .map(|(id, _)| *id)
                .collect();
            let Some(index) = members.iter().position(|id| *id == member) else {
                continue;
            };
            let partitions = topics.get(topic).map_or(0, |t| t.partitions.len());
            for p in (0..partitions).filter(|p| p % members.len() == index) {
                out.push(TopicPartition::new(topic.clone(), p as i32));
            }
        }
        out.sort();
        out
    }
}

#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    groups: HashMap<String, Group>,
    next_member: u64,
    committed: HashMap<String, BTreeMap<TopicPartition, i64>>,
    transactions: HashMap<String, Transactional>,
    next_sequence: u64,
    round_robin: u64,
}

impl State {
    fn partition(&self, tp: &TopicPartition) -> Result<&Vec<StoredRecord>, ClusterError> {
        let topic = self
            .topics
            .get(&*tp.topic)
            .ok_or_else(|| ClusterError::UnknownTopic(tp.topic.to_string()))?;
        usize::try_from(tp.partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
            .ok_or_else(|| ClusterError::UnknownPartition(tp.clone()))
    }

    /// Ends the open transaction of `id`, making its records `to`.
    fn finish(&mut self, id: &str, commit: bool) {
        let Some(open) = self.transactions.get_mut(id).and_then(|t| t.open.take()) else {
            return;
        };
        let to = if commit {
            Visibility::Committed
        } else {
            Visibility::Aborted
        };
        for tp in &open.partitions {
            if let Some(log) = self
                .topics
                .get_mut(&*tp.topic)
                .and_then(|t| t.partitions.get_mut(tp.partition as usize))
            {
                for stored in log.iter_mut().rev() {
                    if matches!(&stored.visibility, Visibility::Open(owner) if owner == id) {
                        stored.visibility = to.clone();
                    }
                }
            }
        }
        if commit {
            for (group, offsets) in open.offsets {
                self.committed.entry(group).or_default().extend(offsets);
            }
        }
    }

    fn write(
        &mut self,
        record: ProducedRecord,
        visibility: Visibility,
    ) -> Result<(TopicPartition, i64), ClusterError> {
        let sequence = self.next_sequence;
        let round_robin = self.round_robin;
        let topic = self
            .topics
            .get_mut(&record.topic)
            .ok_or_else(|| ClusterError::UnknownTopic(record.topic.clone()))?;
        let count = topic.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, count).unwrap_or(0),
            (None, None) => (round_robin % count as u64) as i32,
        };
        let round_robin_used = record.partition.is_none() && record.key.is_none();
        let tp = TopicPartition::new(Arc::clone(&topic.name), partition);
        let log = usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get_mut(p))
            .ok_or_else(|| ClusterError::UnknownPartition(tp.clone()))?;
        let offset = log.len() as i64;
        log.push(StoredRecord {
            record: ConsumedRecord {
                tp: tp.clone(),
                offset,
                key: record.key,
                value: record.value,
                timestamp: record.timestamp,
                headers: record.headers,
            },
            sequence,
            visibility,
        });
        self.next_sequence += 1;
        if round_robin_used {
            self.round_robin += 1;
        }
        Ok((tp, offset))
    }

    /// The first offset a read-committed consumer cannot read yet.
    fn last_stable_offset(&self, tp: &TopicPartition) -> Result<i64, ClusterError> {
        let log = self.partition(tp)?;
        Ok(log
            .iter()
            .position(|r| matches!(r.visibility, Visibility::Open(_)))
            .unwrap_or(log.len()) as i64)
    }
}

/// The in-memory cluster. Cheap to clone; clones share the cluster.
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
}

impl MemoryCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        MemoryCluster::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a push, an insert or a status change, so the state
        // is consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The records of `topic` a read-committed consumer can see, in write
    /// order across partitions.
    pub fn records(&self, topic: &str) -> Result<Vec<StoredRecord>, ClusterError> {
        Ok(self
            .all_records(topic)?
            .into_iter()
            .filter(|r| r.visibility == Visibility::Committed)
            .collect())
    }

    /// Every record of `topic`, whatever its transaction status, in write order.
    pub fn all_records(&self, topic: &str) -> Result<Vec<StoredRecord>, ClusterError> {
        let state = self.lock();
        let topic = state
            .topics
            .get(topic)
            .ok_or_else(|| ClusterError::UnknownTopic(topic.to_owned()))?;
        let mut all: Vec<StoredRecord> = topic.partitions.iter().flatten().cloned().collect();
        all.sort_by_key(|r| r.sequence);
        Ok(all)
    }

    /// The end offset (next offset to be written) of a partition.
    pub fn end_offset(&self, tp: &TopicPartition) -> Result<i64, ClusterError> {
        Ok(self.lock().partition(tp)?.len() as i64)
    }

    /// The committed offset of `group` for a partition.
    pub fn committed(&self, group: &str, tp: &TopicPartition) -> Option<i64> {
        self.lock()
            .committed
            .get(group)
            .and_then(|c| c.get(tp))
            .copied()
    }

    /// Topic names.
    pub fn topics(&self) -> Vec<String> {
        self.lock().topics.keys().cloned().collect()
    }

    /// The spec a topic was created with.
    pub fn topic_spec(&self, topic: &str) -> Option<TopicSpec> {
        self.lock().topics.get(topic).and_then(|t| t.spec.clone())
    }

    /// Removes the longest-standing member of `group` as if its session had
    /// timed out (a stalled process): its partitions go to the others at
    /// once, without it committing or releasing them. It rejoins when it
    /// next asks for a rebalance; until then it is a zombie whose commits
    /// are refused. Returns the member removed.
    pub fn expire_member(&self, group: &str) -> Option<u64> {
        let mut state = self.lock();
        let group = state.groups.get_mut(group)?;
        let member = *group.members.keys().next()?;
        group.remove_member(member);
        group.generation += 1;
        Some(member)
    }

    /// Writes one record now, outside any transaction; returns partition and offset.
    pub fn produce(&self, record: ProducedRecord) -> Result<(i32, i64), ClusterError> {
        let mut state = self.lock();
        let (tp, offset) = state.write(record, Visibility::Committed)?;
        Ok((tp.partition, offset))
    }
}

impl Cluster for MemoryCluster {
    fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), ClusterError> {
        for spec in specs {
            spec.validate()?;
        }
        let mut state = self.lock();
        for spec in specs {
            state
                .topics
                .entry(spec.name.clone())
                .or_insert_with(|| Topic {
                    name: spec.name.as_str().into(),
                    spec: Some(spec.clone()),
                    partitions: vec![Vec::new(); spec.partitions as usize],
                });
        }
        Ok(())
    }

    fn list_topics(&self) -> Result<Vec<String>, ClusterError> {
        Ok(self.lock().topics.keys().cloned().collect())
    }

    fn delete_topics(&self, topics: &[String]) -> Result<(), ClusterError> {
        let mut state = self.lock();
        for topic in topics {
            state.topics.remove(topic);
            for committed in state.committed.values_mut() {
                committed.retain(|tp, _| *tp.topic != **topic);
            }
        }
        Ok(())
    }

    fn partition_count(&self, topic: &str) -> Result<i32, ClusterError> {
        self.lock()
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as i32)
            .ok_or_else(|| ClusterError::UnknownTopic(topic.to_owned()))
    }

    fn consumer(
        &self,
        group: &str,
        isolation: Isolation,
    ) -> Result<Box<dyn ClusterConsumer>, ClusterError> {
        Ok(Box::new(MemoryConsumer {
            cluster: self.clone(),
            group: group.to_owned(),
            isolation,
            positions: BTreeMap::new(),
            member: None,
            topics: Vec::new(),
            generation: 0,
        }))
    }

    fn producer(&self) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        Ok(Box::new(MemoryProducer {
            cluster: self.clone(),
            queued: Vec::new(),
            transactional: None,
            written: BTreeMap::new(),
        }))
    }

    fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<Box<dyn ClusterProducer>, ClusterError> {
        let mut state = self.lock();
        // Fence: abort what an older producer left open, then bump the epoch.
        state.finish(transactional_id, false);
        let entry = state
            .transactions
            .entry(transactional_id.to_owned())
            .or_default();
        entry.epoch += 1;
        let epoch = entry.epoch;
        drop(state);
        Ok(Box::new(MemoryProducer {
            cluster: self.clone(),
            queued: Vec::new(),
            transactional: Some((transactional_id.to_owned(), epoch)),
            written: BTreeMap::new(),
        }))
    }
}

struct MemoryConsumer {
    cluster: MemoryCluster,
    group: String,
    isolation: Isolation,
    positions: BTreeMap<TopicPartition, i64>,
    /// Member id once subscribed.
    member: Option<u64>,
    /// The topics subscribed to.
    topics: Vec<String>,
    /// The group generation this consumer's assignment is from.
    generation: u64,
}

impl MemoryConsumer {
    fn leave(&mut self) {
        if let Some(member) = self.member.take() {
            let mut state = self.cluster.lock();
            if let Some(group) = state.groups.get_mut(&self.group)
                && group.members.contains_key(&member)
            {
                group.remove_member(member);
                group.generation += 1;
            }
        }
    }

    /// Releases partitions this member was told it lost (it has had the
    /// chance to commit them since).
    fn release_revoked(&self) {
        if let Some(member) = self.member {
            let mut state = self.cluster.lock();
            if let Some(group) = state.groups.get_mut(&self.group) {
                group.release(member);
            }
        }
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A subscribed member, as [`GroupMetadata`](crate::GroupMetadata)
/// carries it.
#[derive(Debug, Clone)]
struct Membership {
    group: String,
    member: u64,
}

impl State {
    /// Refuses offsets of partitions `member` does not own (any more).
    fn check_owner(
        &self,
        member: &Membership,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClusterError> {
        let group = self.groups.get(&member.group);
        for tp in offsets.keys() {
            let owner = group.and_then(|g| g.owners.get(tp));
            if owner != Some(&member.member) {
                return Err(ClusterError::Rebalanced {
                    group: member.group.clone(),
                    reason: format!("member {} no longer owns {tp}", member.member),
                });
            }
        }
        Ok(())
    }
}

impl ClusterConsumer for MemoryConsumer {
    fn group_metadata(&self) -> Option<crate::GroupMetadata> {
        self.member.map(|member| {
            crate::GroupMetadata::new(Membership {
                group: self.group.clone(),
                member,
            })
        })
    }

    fn subscribe(&mut self, topics: &[String]) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        for topic in topics {
            if !state.topics.contains_key(topic) {
                return Err(ClusterError::UnknownTopic(topic.clone()));
            }
        }
        let member = match self.member {
            Some(member) => member,
            None => {
                state.next_member += 1;
                state.next_member
            }
        };
        let group = state.groups.entry(self.group.clone()).or_default();
        group.members.insert(member, topics.to_vec());
        group.generation += 1;
        self.member = Some(member);
        self.topics = topics.to_vec();
        // Nothing owned until the rebalance is taken.
        self.positions.clear();
        self.generation = 0;
        Ok(())
    }

    fn take_rebalance(&mut self) -> Result<Option<Rebalance>, ClusterError> {
        let Some(member) = self.member else {
            return Ok(None);
        };
        let mut state = self.cluster.lock();
        let State {
            groups,
            topics,
            committed,
            ..
        } = &mut *state;
        let Some(group) = groups.get_mut(&self.group) else {
            return Ok(None);
        };
        if let std::collections::btree_map::Entry::Vacant(entry) = group.members.entry(member) {
            // Expired (see `MemoryCluster::expire_member`): rejoin, as a
            // Kafka client does after UNKNOWN_MEMBER_ID. What it held is gone.
            entry.insert(self.topics.clone());
            group.generation += 1;
        }
        // What was revoked before has had its chance to be committed.
        group.release(member);
        if group.generation == self.generation {
            return Ok(None);
        }
        let target = group.assignment(member, topics);
        let before: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        let revoked: Vec<TopicPartition> = before
            .iter()
            .filter(|tp| !target.contains(tp))
            .cloned()
            .collect();
        // Held until the next call, so the work is committed first.
        group
            .releasing
            .entry(member)
            .or_default()
            .extend(revoked.iter().cloned());
        let mut assigned = Vec::new();
        let mut waiting = false;
        for tp in target.iter().filter(|tp| !before.contains(tp)) {
            match group.owners.get(tp) {
                Some(owner) if *owner != member => waiting = true,
                _ => {
                    group.owners.insert(tp.clone(), member);
                    assigned.push(tp.clone());
                }
            }
        }
        let group_committed = committed.get(&self.group);
        self.positions.retain(|tp, _| target.contains(tp));
        for tp in &assigned {
            let start = group_committed
                .and_then(|c| c.get(tp))
                .copied()
                .unwrap_or(0);
            self.positions.insert(tp.clone(), start);
        }
        // Partitions still held by their previous owner come on a later call.
        if !waiting {
            self.generation = group.generation;
        }
        if revoked.is_empty() && assigned.is_empty() {
            return Ok(None);
        }
        Ok(Some(Rebalance {
            generation: group.generation,
            revoked,
            assigned,
        }))
    }

    fn close(&mut self) -> Result<(), ClusterError> {
        self.leave();
        self.positions.clear();
        Ok(())
    }

    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ClusterError> {
        let state = self.cluster.lock();
        let mut positions = BTreeMap::new();
        for tp in partitions {
            state.partition(tp)?;
            let start = state
                .committed
                .get(&self.group)
                .and_then(|c| c.get(tp))
                .copied()
                .unwrap_or(0);
            positions.insert(tp.clone(), start);
        }
        self.positions = positions;
        Ok(())
    }

    fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClusterError> {
        let mut out = Vec::new();
        self.poll_into(max, &mut out)?;
        Ok(out)
    }

    fn poll_into(&mut self, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<(), ClusterError> {
        self.release_revoked();
        let state = self.cluster.lock();
        let max = out.len().saturating_add(max);
        for (tp, position) in self.positions.iter_mut() {
            let log = state.partition(tp)?;
            while out.len() < max && (*position as usize) < log.len() {
                let stored = &log[*position as usize];
                match (&stored.visibility, self.isolation) {
                    // Read-committed readers stop at the first open transaction.
                    (Visibility::Open(_), Isolation::ReadCommitted) => break,
                    (Visibility::Aborted, Isolation::ReadCommitted) => {}
                    _ => out.push(stored.record.clone()),
                }
                *position += 1;
            }
        }
        Ok(())
    }

    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClusterError> {
        let position = self
            .positions
            .get_mut(tp)
            .ok_or_else(|| ClusterError::Client(format!("seek on {tp}, which is not assigned")))?;
        *position = offset.max(0);
        Ok(())
    }

    fn position(&self, tp: &TopicPartition) -> Result<i64, ClusterError> {
        self.positions
            .get(tp)
            .copied()
            .ok_or_else(|| ClusterError::Client(format!("position of {tp}, which is not assigned")))
    }

    fn offsets_for_times(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError> {
        let state = self.cluster.lock();
        partitions
            .iter()
            .map(|tp| {
                let log = state.partition(tp)?;
                let offset = log
                    .iter()
                    .position(|r| r.record.timestamp >= timestamp)
                    .unwrap_or(log.len());
                Ok((tp.clone(), offset as i64))
            })
            .collect()
    }

    fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClusterError> {
        let state = self.cluster.lock();
        partitions
            .iter()
            .map(|tp| {
                let end = match self.isolation {
                    Isolation::ReadCommitted => state.last_stable_offset(tp)?,
                    Isolation::ReadUncommitted => state.partition(tp)?.len() as i64,
                };
                Ok((tp.clone(), end))
            })
            .collect()
    }

    fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        if let Some(member) = self.member {
            state.check_owner(
                &Membership {
                    group: self.group.clone(),
                    member,
                },
                offsets,
            )?;
        }
        let committed = state.committed.entry(self.group.clone()).or_default();
        for (tp, offset) in offsets {
            committed.insert(tp.clone(), *offset);
        }
        Ok(())
    }
}

struct MemoryProducer {
    cluster: MemoryCluster,
    queued: Vec<ProducedRecord>,
    /// Transactional id and this producer's epoch.
    transactional: Option<(String, u32)>,
    /// Offset after the last record written, per partition.
    written: BTreeMap<TopicPartition, i64>,
}

impl MemoryProducer {
    /// Fails if a newer producer took over this transactional id.
    fn check_epoch(&self, state: &State) -> Result<(), ClusterError> {
        if let Some((id, epoch)) = &self.transactional {
            let current = state.transactions.get(id).map_or(0, |t| t.epoch);
            if current != *epoch {
                return Err(ClusterError::Fenced {
                    transactional_id: id.clone(),
                    epoch: *epoch,
                    current,
                });
            }
        }
        Ok(())
    }

    fn open_transaction<'s>(
        &self,
        state: &'s mut State,
    ) -> Result<&'s mut OpenTransaction, ClusterError> {
        self.check_epoch(state)?;
        let (id, _) = self
            .transactional
            .as_ref()
            .ok_or_else(|| ClusterError::TransactionState("not a transactional producer".into()))?;
        state
            .transactions
            .get_mut(id)
            .and_then(|t| t.open.as_mut())
            .ok_or_else(|| ClusterError::TransactionState("no transaction is open".into()))
    }
}

impl ClusterProducer for MemoryProducer {
    fn send(&mut self, record: ProducedRecord) -> Result<(), ClusterError> {
        if self.transactional.is_some() {
            let mut state = self.cluster.lock();
            self.open_transaction(&mut state)?;
        }
        self.queued.push(record);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        self.check_epoch(&state)?;
        let visibility = match &self.transactional {
            Some((id, _)) => Visibility::Open(id.clone()),
            None => Visibility::Committed,
        };
        for record in self.queued.drain(..) {
            let (tp, offset) = state.write(record, visibility.clone())?;
            match self.written.get_mut(&tp) {
                Some(end) => *end = offset + 1,
                None => {
                    self.written.insert(tp.clone(), offset + 1);
                }
            }
            if let Visibility::Open(id) = &visibility
                && let Some(open) = state.transactions.get_mut(id).and_then(|t| t.open.as_mut())
            {
                open.partitions.insert(tp);
            }
        }
        Ok(())
    }

    fn written_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.written.clone()
    }

    fn begin_transaction(&mut self) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        self.check_epoch(&state)?;
        let (id, _) = self
            .transactional
            .as_ref()
            .ok_or_else(|| ClusterError::TransactionState("not a transactional producer".into()))?;
        let entry = state.transactions.entry(id.clone()).or_default();
        if entry.open.is_some() {
            return Err(ClusterError::TransactionState(
                "a transaction is already open".into(),
            ));
        }
        entry.open = Some(OpenTransaction::default());
        Ok(())
    }

    fn send_offsets_to_transaction(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
        member: Option<&crate::GroupMetadata>,
    ) -> Result<(), ClusterError> {
        let mut state = self.cluster.lock();
        if let Some(member) = member.and_then(|m| m.downcast_ref::<Membership>()) {
            state.check_owner(member, offsets)?;
        }
        let open = self.open_transaction(&mut state)?;
        open.offsets.push((group.to_owned(), offsets.clone()));
        Ok(())
    }

    fn commit_transaction(&mut self) -> Result<(), ClusterError> {
        self.flush()?;
        let mut state = self.cluster.lock();
        self.open_transaction(&mut state)?;
        let id = self
            .transactional
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        state.finish(&id, true);
        Ok(())
    }

    fn abort_transaction(&mut self) -> Result<(), ClusterError> {
        self.queued.clear();
        let mut state = self.cluster.lock();
        self.open_transaction(&mut state)?;
        let id = self
            .transactional
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        state.finish(&id, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_topology::Headers;

    fn rec(topic: &str, key: Option<&str>, value: &str) -> ProducedRecord {
        ProducedRecord {
            topic: topic.into(),
            partition: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp: 0,
            headers: Headers::new(),
        }
    }

    fn values(records: Vec<ConsumedRecord>) -> Vec<String> {
        records
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap_or_default()).unwrap())
            .collect()
    }

    fn cluster_with(topic: &str, partitions: i32) -> MemoryCluster {
        let cluster = MemoryCluster::new();
        cluster
            .create_topics(&[TopicSpec::new(topic, partitions)])
            .unwrap();
        cluster
    }

    fn reader(
        cluster: &MemoryCluster,
        group: &str,
        isolation: Isolation,
    ) -> Box<dyn ClusterConsumer> {
        let mut consumer = cluster.consumer(group, isolation).unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        consumer
    }

    #[test]
    fn keys_land_where_the_java_client_puts_them_and_null_keys_round_robin() {
        let cluster = cluster_with("t", 4);
        assert_eq!(
            cluster.produce(rec("t", Some("foobar"), "v")).unwrap(),
            (2, 0)
        );
        let parts: Vec<i32> = (0..4)
            .map(|_| cluster.produce(rec("t", None, "v")).unwrap().0)
            .collect();
        assert_eq!(parts, vec![0, 1, 2, 3]);
        assert!(matches!(
            cluster.produce(rec("nope", None, "v")),
            Err(ClusterError::UnknownTopic(_))
        ));
    }

    #[test]
    fn consumers_resume_from_committed_offsets_and_producers_write_on_flush() {
        let cluster = cluster_with("t", 1);
        let mut producer = cluster.producer().unwrap();
        for v in ["a", "b", "c"] {
            producer.send(rec("t", Some("k"), v)).unwrap();
        }
        let tp = TopicPartition::new("t", 0);
        assert_eq!(cluster.end_offset(&tp).unwrap(), 0);
        producer.flush().unwrap();
        let mut consumer = reader(&cluster, "g", Isolation::ReadUncommitted);
        assert_eq!(values(consumer.poll(2).unwrap()), vec!["a", "b"]);
        consumer.commit(&BTreeMap::from([(tp.clone(), 2)])).unwrap();
        let mut again = reader(&cluster, "g", Isolation::ReadUncommitted);
        assert_eq!(values(again.poll(10).unwrap()), vec!["c"]);
        assert_eq!(cluster.committed("g", &tp), Some(2));
    }

    #[test]
    fn read_committed_sees_committed_transactions_only_and_stops_at_open_ones() {
        let cluster = cluster_with("t", 1);
        let mut p = cluster.transactional_producer("app-0").unwrap();
        p.begin_transaction().unwrap();
        p.send(rec("t", Some("k"), "aborted")).unwrap();
        p.flush().unwrap();
        p.abort_transaction().unwrap();
        p.begin_transaction().unwrap();
        p.send(rec("t", Some("k"), "committed")).unwrap();
        p.commit_transaction().unwrap();
        p.begin_transaction().unwrap();
        p.send(rec("t", Some("k"), "open")).unwrap();
        p.flush().unwrap();
        cluster
            .produce(rec("t", Some("k"), "plain-after-open"))
            .unwrap();

        let mut committed = reader(&cluster, "c", Isolation::ReadCommitted);
        assert_eq!(values(committed.poll(10).unwrap()), vec!["committed"]);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(
            committed.end_offsets(std::slice::from_ref(&tp)).unwrap()[&tp],
            2,
            "LSO = first open"
        );
        let mut everything = reader(&cluster, "u", Isolation::ReadUncommitted);
        assert_eq!(
            values(everything.poll(10).unwrap()),
            vec!["aborted", "committed", "open", "plain-after-open"]
        );
        p.commit_transaction().unwrap();
        assert_eq!(
            values(committed.poll(10).unwrap()),
            vec!["open", "plain-after-open"]
        );
    }

    #[test]
    fn offsets_sent_to_a_transaction_are_committed_with_it_only() {
        let cluster = cluster_with("t", 1);
        let tp = TopicPartition::new("t", 0);
        let mut p = cluster.transactional_producer("app-0").unwrap();
        p.begin_transaction().unwrap();
        p.send_offsets_to_transaction("g", &BTreeMap::from([(tp.clone(), 7)]), None)
            .unwrap();
        p.abort_transaction().unwrap();
        assert_eq!(cluster.committed("g", &tp), None);
        p.begin_transaction().unwrap();
        p.send_offsets_to_transaction("g", &BTreeMap::from([(tp.clone(), 9)]), None)
            .unwrap();
        assert_eq!(cluster.committed("g", &tp), None, "not before the commit");
        p.commit_transaction().unwrap();
        assert_eq!(cluster.committed("g", &tp), Some(9));
    }

    #[test]
    fn a_new_producer_fences_the_old_one_and_aborts_its_open_transaction() {
        let cluster = cluster_with("t", 1);
        let mut zombie = cluster.transactional_producer("app-0").unwrap();
        zombie.begin_transaction().unwrap();
        zombie.send(rec("t", Some("k"), "zombie")).unwrap();
        zombie.flush().unwrap();
        let mut successor = cluster.transactional_producer("app-0").unwrap();
        let err = zombie.commit_transaction().unwrap_err();
        assert!(
            matches!(
                err,
                ClusterError::Fenced {
                    epoch: 1,
                    current: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            zombie.send(rec("t", None, "x")),
            Err(ClusterError::Fenced { .. })
        ));
        successor.begin_transaction().unwrap();
        successor.send(rec("t", Some("k"), "successor")).unwrap();
        successor.commit_transaction().unwrap();
        let mut committed = reader(&cluster, "c", Isolation::ReadCommitted);
        assert_eq!(values(committed.poll(10).unwrap()), vec!["successor"]);
        assert!(matches!(
            successor.commit_transaction(),
            Err(ClusterError::TransactionState(_))
        ));
        assert!(matches!(
            cluster.producer().unwrap().begin_transaction(),
            Err(ClusterError::TransactionState(_))
        ));
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use std::collections::BTreeSet;

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn members_share_partitions_co_partitioned_and_rebalance_on_join_and_leave() {
        let cluster = MemoryCluster::new();
        cluster
            .create_topics(&[TopicSpec::new("a", 4), TopicSpec::new("b", 4)])
            .unwrap();
        let topics = vec!["a".to_string(), "b".to_string()];
        let mut first = cluster.consumer("g", Isolation::ReadCommitted).unwrap();
        first.subscribe(&topics).unwrap();
        let r = first.take_rebalance().unwrap().unwrap();
        assert_eq!(r.assigned.len(), 8);
        assert!(
            first.take_rebalance().unwrap().is_none(),
            "no change, no rebalance"
        );

        let mut second = cluster.consumer("g", Isolation::ReadCommitted).unwrap();
        second.subscribe(&topics).unwrap();
        // The new member waits until the old owner gave the partitions up
        // (it commits their work first, then polls or rebalances again).
        assert!(second.take_rebalance().unwrap().is_none());
        let r1 = first.take_rebalance().unwrap().unwrap();
        assert_eq!(r1.revoked, tps(&[("a", 1), ("a", 3), ("b", 1), ("b", 3)]));
        assert!(r1.assigned.is_empty());
        assert!(
            second.take_rebalance().unwrap().is_none(),
            "still held by the first member"
        );
        first.poll(1).unwrap();
        let r2 = second.take_rebalance().unwrap().unwrap();
        // Partition p of both topics lands on the same member.
        assert_eq!(r2.assigned, tps(&[("a", 1), ("a", 3), ("b", 1), ("b", 3)]));
        assert_eq!(r1.generation, r2.generation);

        // The old owner's work on what it lost is refused (zombie fencing),
        // plain commits and transactional ones alike.
        let lost = BTreeMap::from([(TopicPartition::new("a", 1), 0)]);
        assert!(matches!(
            first.commit(&lost),
            Err(ClusterError::Rebalanced { .. })
        ));
        let member = first.group_metadata().expect("subscribed");
        let mut producer = cluster.transactional_producer("t").unwrap();
        producer.begin_transaction().unwrap();
        assert!(matches!(
            producer.send_offsets_to_transaction("g", &lost, Some(&member)),
            Err(ClusterError::Rebalanced { .. })
        ));
        let kept = BTreeMap::from([(TopicPartition::new("a", 0), 0)]);
        producer
            .send_offsets_to_transaction("g", &kept, Some(&member))
            .unwrap();
        producer.abort_transaction().unwrap();

        // Committed offsets carry over to the new owner.
        cluster
            .produce(ProducedRecord {
                topic: "a".into(),
                partition: Some(1),
                key: None,
                value: Some(b"x".to_vec()),
                timestamp: 0,
                headers: Default::default(),
            })
            .unwrap();
        second
            .commit(&BTreeMap::from([(TopicPartition::new("a", 1), 1)]))
            .unwrap();
        drop(second);
        let back = first.take_rebalance().unwrap().unwrap();
        let assigned: BTreeSet<_> = back.assigned.into_iter().collect();
        assert_eq!(
            assigned,
            tps(&[("a", 1), ("a", 3), ("b", 1), ("b", 3)])
                .into_iter()
                .collect()
        );
        assert!(
            first.poll(10).unwrap().is_empty(),
            "a[1] resumes after the committed offset"
        );
        assert!(matches!(
            cluster
                .consumer("g", Isolation::ReadCommitted)
                .unwrap()
                .subscribe(&["nope".into()]),
            Err(ClusterError::UnknownTopic(_))
        ));
    }
}
