//! Interactive queries of an instance's local stores.

use super::*;

/// Interactive queries: reads of an instance's local stores, as its
/// processors see them (the state of the last processed record, including
/// writes not committed yet, like Kafka Streams' interactive queries under
/// at-least-once).
///
/// Each stream thread answers between two of its loops, so a query waits
/// at most one loop (a poll and its processing, or one restore batch) per
/// thread. Only this instance's tasks are read: with several instances,
/// each holds the keys of its own partitions.
#[derive(Clone)]
pub struct StoreQueries {
    pub(super) shared: Arc<Shared>,
    pub(super) topology: Arc<Topology>,
}

impl std::fmt::Debug for StoreQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreQueries").finish_non_exhaustive()
    }
}

/// Why an interactive query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The instance is not running (not started, stopping, or failed).
    #[error("the instance is {0:?}, not running")]
    NotRunning(StreamsState),
    /// The topology has no store of that name.
    #[error("the topology has no store {0:?}")]
    UnknownStore(String),
    /// A thread did not answer in time (busy restoring a large store?).
    #[error("stream thread {thread} did not answer within {timeout:?}")]
    Timeout {
        /// Which thread.
        thread: usize,
        /// How long it was given.
        timeout: Duration,
    },
    /// The store could not be read (bytes its serdes cannot decode).
    #[error("reading store {store:?}")]
    Store {
        /// The store.
        store: String,
        /// Why.
        source: brook_topology::processor::ProcessError,
    },
}

impl StoreQueries {
    /// Asks every stream thread `question` and collects the answers, in
    /// thread order.
    pub fn ask<R: Send + 'static>(
        &self,
        question: impl Fn(&mut StreamThread) -> R + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<Vec<R>, QueryError> {
        let state = self.shared.state();
        if !matches!(state, StreamsState::Running | StreamsState::Rebalancing) {
            return Err(QueryError::NotRunning(state));
        }
        let question = Arc::new(question);
        let mailboxes = self
            .shared
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut answers = Vec::new();
        for (thread, mailbox) in mailboxes.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(1);
            let q = question.clone();
            let sent = mailbox.send(Box::new(move |t: &mut StreamThread| {
                let _ = tx.send(q(t));
            }));
            if sent.is_err() {
                // The thread ended (instance stopping).
                return Err(QueryError::NotRunning(self.shared.state()));
            }
            answers.push((thread, rx));
        }
        let deadline = Instant::now() + timeout;
        answers
            .into_iter()
            .map(|(thread, rx)| {
                let left = deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(left)
                    .map_err(|_| QueryError::Timeout { thread, timeout })
            })
            .collect()
    }

    fn known(&self, name: &str) -> Result<(), QueryError> {
        match self.topology.store(name) {
            Some(_) => Ok(()),
            None => Err(QueryError::UnknownStore(name.to_owned())),
        }
    }

    /// The contents of store `name` over all of this instance's tasks.
    pub fn read_store<K, V>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<K, V>, QueryError>
    where
        K: Ord + Send + 'static,
        V: Send + 'static,
    {
        self.known(name)?;
        let store = name.to_owned();
        let mut all = BTreeMap::new();
        for part in self.ask(move |t| t.read_store::<K, V>(&store), timeout)? {
            all.extend(part.map_err(|source| QueryError::Store {
                store: name.to_owned(),
                source,
            })?);
        }
        Ok(all)
    }

    /// The value of `key` in store `name`, from whichever task holds it.
    pub fn get<K, V>(&self, name: &str, key: K, timeout: Duration) -> Result<Option<V>, QueryError>
    where
        K: Send + Sync + 'static,
        V: Send + 'static,
    {
        self.known(name)?;
        let store = name.to_owned();
        let mut found = None;
        for part in self.ask(move |t| t.get_from_store::<K, V>(&store, &key), timeout)? {
            if let Some(v) = part.map_err(|source| QueryError::Store {
                store: name.to_owned(),
                source,
            })? {
                found = Some(v);
            }
        }
        Ok(found)
    }
}
