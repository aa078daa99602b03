//! Supervising stream threads: starting them, retrying what may mend
//! itself, the uncaught error handler, application-wide shutdown.

use super::*;

pub(super) struct ThreadRunner {
    pub(super) queries: mpsc::Receiver<StoreQuery>,
    pub(super) index: usize,
    pub(super) threads: usize,
    pub(super) topology: Arc<Topology>,
    pub(super) config: StreamsConfig,
    pub(super) cluster: Arc<dyn Cluster>,
    pub(super) shared: Arc<Shared>,
    pub(super) options: ThreadOptions,
    pub(super) control: Arc<Mutex<Box<dyn ClusterConsumer>>>,
    /// Since when, when last, and how many times the thread has been
    /// replaced without recovering in between.
    pub(super) retrying: Cell<Option<Retrying>>,
}

/// A run of failed threads with no recovery in between.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retrying {
    /// The first failure.
    since: Instant,
    /// The last replacement.
    last: Instant,
    attempts: u32,
}

/// The pause before the `attempt`th replacement of a failed thread: 100 ms
/// doubling, at most 5 s.
fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

impl ThreadRunner {
    /// What a failure does when the application set no handler: a
    /// retryable failure replaces the thread until `retry_timeout` has
    /// passed without a commit; any other stops the instance.
    fn default_response(&self, error: &RuntimeError) -> ErrorResponse {
        if !error.is_retryable() {
            return ErrorResponse::ShutdownInstance;
        }
        let now = Instant::now();
        let run = self.retrying.get().unwrap_or(Retrying {
            since: now,
            last: now,
            attempts: 0,
        });
        self.retrying.set(Some(run));
        if run.since.elapsed() >= self.config.retry_timeout {
            tracing::error!(
                thread = self.index,
                attempts = run.attempts,
                seconds = run.since.elapsed().as_secs(),
                "giving up: the failure lasted longer than the retry timeout ({:?})",
                self.config.retry_timeout
            );
            return ErrorResponse::ShutdownInstance;
        }
        ErrorResponse::ReplaceThread
    }

    /// Waits before replacing a thread (longer each time in a row); `false`
    /// when the instance is closing meanwhile.
    fn pause_before_retry(&self) -> bool {
        let now = Instant::now();
        let mut run = self.retrying.get().unwrap_or(Retrying {
            since: now,
            last: now,
            attempts: 0,
        });
        let attempts = run.attempts;
        run.attempts += 1;
        run.last = now;
        self.retrying.set(Some(run));
        let until = now + retry_backoff(attempts);
        tracing::warn!(
            thread = self.index,
            attempt = attempts + 1,
            pause_ms = retry_backoff(attempts).as_millis() as u64,
            "replacing the failed stream thread; its tasks resume from their last commit"
        );
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn thread_config(&self) -> StreamsConfig {
        let mut config = self.config.clone();
        config.instance_id = format!("{}-{}", self.config.instance_id, self.index);
        config
    }

    fn assignment(&self) -> Assignment {
        match self.config.static_assignment {
            Some((instance, instances)) => {
                let slots = i64::from(instances) * self.threads as i64;
                let slot = i64::from(instance) * self.threads as i64 + self.index as i64;
                Assignment::Static(Arc::new(move |task: TaskId| {
                    i64::from(task.partition) % slots == slot
                }))
            }
            None => Assignment::Group,
        }
    }

    fn start_thread(&self) -> Result<StreamThread, RuntimeError> {
        StreamThread::start(
            &self.topology,
            self.thread_config(),
            self.cluster.as_ref(),
            self.assignment(),
            now_ms(),
            self.options.clone(),
        )
    }

    fn started(&self) {
        let mut starting = self
            .shared
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *starting = starting.saturating_sub(1);
        if *starting == 0 {
            self.shared.set_state(StreamsState::Running);
        }
    }

    /// Reads the control topic; `true` when the application must stop.
    fn shutdown_requested(&self) -> bool {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        match control.poll(10) {
            Ok(records) => records.iter().any(|r| r.value.as_deref() == Some(SHUTDOWN)),
            Err(_) => false,
        }
    }

    fn request_application_shutdown(&self) {
        let request = ProducedRecord {
            topic: control_topic(&self.config.application_id),
            partition: Some(0),
            key: Some(self.config.instance_id.clone().into_bytes()),
            value: Some(SHUTDOWN.to_vec()),
            timestamp: now_ms(),
            headers: Headers::new(),
        };
        let sent = self
            .cluster
            .producer()
            .and_then(|mut p| p.send(request).and_then(|()| p.flush()));
        if let Err(e) = sent {
            tracing::error!(error = %e, "could not ask the other instances to shut down");
        }
    }

    /// Handles a failure; `Some(thread)` to go on with a replacement.
    fn on_error(&self, mut error: RuntimeError) -> Option<StreamThread> {
        loop {
            tracing::error!(thread = self.index, error = %error_chain(&error), "stream thread failed");
            self.shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("thread {}: {}", self.index, error_chain(&error)));
            let response = match &*self
                .shared
                .handler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
            {
                Some(handler) => handler(&error),
                None => self.default_response(&error),
            };
            match response {
                ErrorResponse::ReplaceThread => {
                    if self.shared.stop.load(Ordering::SeqCst) || !self.pause_before_retry() {
                        return None;
                    }
                    self.shared.set_state(StreamsState::Rebalancing);
                    match self.start_thread() {
                        Ok(thread) => {
                            self.shared.set_state(StreamsState::Running);
                            return Some(thread);
                        }
                        Err(e) => error = e,
                    }
                }
                ErrorResponse::ShutdownInstance => {
                    self.shared.set_state(StreamsState::Error);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return None;
                }
                ErrorResponse::ShutdownApplication => {
                    self.request_application_shutdown();
                    self.shared.set_state(StreamsState::Error);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return None;
                }
            }
        }
    }

    pub(super) fn run(self) {
        let mut thread = match self.start_thread() {
            Ok(thread) => thread,
            Err(e) => match self.on_error(e) {
                Some(thread) => thread,
                None => {
                    self.started();
                    return;
                }
            },
        };
        self.started();
        // Counters of the threads this one replaced.
        let mut retired = ThreadSnapshot::default();
        let mut control_checked = Instant::now();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            // The control topic, twice a second.
            if control_checked.elapsed() >= Duration::from_millis(500) && {
                control_checked = Instant::now();
                self.shutdown_requested()
            } {
                tracing::warn!("another instance asked the application to shut down");
                self.shared.set_state(StreamsState::Error);
                self.shared.stop.store(true, Ordering::SeqCst);
                break;
            }
            match thread.run_once(now_ms()) {
                Ok(polled) => {
                    // The replacement committed, or has run for a whole
                    // retry timeout (an idle thread does not commit): the
                    // failure is over.
                    if let Some(run) = self.retrying.get()
                        && (thread.thread_metrics().commits > 0
                            || run.last.elapsed() >= self.config.retry_timeout)
                    {
                        tracing::info!(thread = self.index, "recovered");
                        self.retrying.set(None);
                    }
                    if let Some(slot) = self
                        .shared
                        .metrics
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(self.index)
                    {
                        *slot = retired.then(&ThreadSnapshot::of(&thread));
                    }
                    while let Ok(query) = self.queries.try_recv() {
                        query(&mut thread);
                    }
                    if polled == 0 && !thread.has_buffered() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(RuntimeError::Cluster(
                    e @ (crate::cluster::ClusterError::Rebalanced { .. }
                    | crate::cluster::ClusterError::TransactionAborted { .. }),
                )) => {
                    // Not a failure of the application: the group moved
                    // tasks under this thread mid-commit (Kafka Streams'
                    // "task migrated"), or the open transaction can only be
                    // aborted (its "task corrupted": records timed out while
                    // the process was paused, say). Drop the uncommitted
                    // work with the thread; a fresh one re-initialises the
                    // transactional id (aborting what was open), rejoins,
                    // restores its tasks and resumes from committed offsets.
                    if matches!(e, crate::cluster::ClusterError::Rebalanced { .. }) {
                        tracing::info!(thread = self.index, reason = %e, "rebalanced mid-commit; rejoining");
                    } else {
                        tracing::warn!(thread = self.index, reason = %e, "resuming from the committed state");
                    }
                    retired = retired.then(&ThreadSnapshot::of(&thread));
                    drop(thread);
                    match self.start_thread() {
                        Ok(next) => thread = next,
                        Err(e) => match self.on_error(e) {
                            Some(next) => thread = next,
                            None => return,
                        },
                    }
                }
                Err(e) => {
                    retired = retired.then(&ThreadSnapshot::of(&thread));
                    drop(thread);
                    match self.on_error(e) {
                        Some(next) => thread = next,
                        None => return,
                    }
                }
            }
        }
        if let Err(e) = thread.close() {
            tracing::error!(thread = self.index, error = %e, "closing the stream thread failed");
            self.shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "thread {} on close: {}",
                    self.index,
                    error_chain(&e)
                ));
        }
    }
}
