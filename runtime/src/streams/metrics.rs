//! An instance's metrics: per-thread snapshots and the Prometheus text.

use super::*;

/// One thread's counters, as of its last loop (including the threads it
/// replaced, so counters never go back).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ThreadSnapshot {
    /// Its tasks' counters.
    pub tasks: TaskMetrics,
    /// Records in and out, commits, lag.
    pub io: ThreadMetrics,
    /// Restoration so far.
    pub restore: RestoreMetrics,
}

impl ThreadSnapshot {
    pub(super) fn of(thread: &StreamThread) -> Self {
        ThreadSnapshot {
            tasks: thread.metrics(),
            io: thread.thread_metrics(),
            restore: thread.restore_metrics(),
        }
    }

    /// These counters continued by `later`'s (gauges from `later`).
    pub(super) fn then(&self, later: &ThreadSnapshot) -> Self {
        let mut tasks = self.tasks;
        tasks.add(&later.tasks);
        let (a, b) = (self.io, later.io);
        ThreadSnapshot {
            tasks,
            io: ThreadMetrics {
                records_in: a.records_in + b.records_in,
                records_out: a.records_out + b.records_out,
                commits: a.commits + b.commits,
                commit_nanos: a.commit_nanos.saturating_add(b.commit_nanos),
                commit_max_nanos: a.commit_max_nanos.max(b.commit_max_nanos),
                lag: b.lag,
                active_tasks: b.active_tasks,
            },
            restore: RestoreMetrics {
                records: self.restore.records + later.restore.records,
                elapsed: self.restore.elapsed + later.restore.elapsed,
                stores: self.restore.stores + later.restore.stores,
            },
        }
    }
}

/// Reads an instance's metrics; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct MetricsHandle {
    pub(super) application_id: String,
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle")
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// The instance's state.
    pub fn state(&self) -> StreamsState {
        self.shared.state()
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// Every thread's counters, as of its last loop.
    pub fn threads(&self) -> Vec<ThreadSnapshot> {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The metrics in Prometheus' text format, labelled with the
    /// application id and thread.
    pub fn prometheus(&self) -> String {
        type Value = fn(&ThreadSnapshot) -> f64;
        const METRICS: &[(&str, &str, &str, Value)] = &[
            (
                "records_in_total",
                "counter",
                "Records read from input partitions.",
                |t| t.io.records_in as f64,
            ),
            (
                "records_processed_total",
                "counter",
                "Records processed by tasks.",
                |t| t.tasks.processed as f64,
            ),
            (
                "records_out_total",
                "counter",
                "Records sent: results, changelog records, dead letters.",
                |t| t.io.records_out as f64,
            ),
            (
                "dead_letters_total",
                "counter",
                "Records sent to the dead-letter topic.",
                |t| t.tasks.dead_lettered as f64,
            ),
            (
                "skipped_records_total",
                "counter",
                "Bad records logged and skipped (log-and-continue handler).",
                |t| t.tasks.skipped as f64,
            ),
            (
                "late_records_dropped_total",
                "counter",
                "Records dropped because their windows had closed.",
                |t| t.tasks.late_records as f64,
            ),
            (
                "consumer_lag_records",
                "gauge",
                "Records in the input partitions not yet processed.",
                |t| t.io.lag as f64,
            ),
            (
                "active_tasks",
                "gauge",
                "Active tasks the thread owns.",
                |t| t.io.active_tasks as f64,
            ),
            (
                "commits_total",
                "counter",
                "Commits that wrote something.",
                |t| t.io.commits as f64,
            ),
            (
                "commit_latency_seconds_sum",
                "counter",
                "Time spent committing.",
                |t| t.io.commit_nanos as f64 / 1e9,
            ),
            (
                "commit_latency_seconds_max",
                "gauge",
                "The slowest commit.",
                |t| t.io.commit_max_nanos as f64 / 1e9,
            ),
            (
                "e2e_latency_seconds_sum",
                "counter",
                "Sum of wall clock minus record timestamp when processed.",
                |t| t.tasks.e2e_latency_ms_sum as f64 / 1e3,
            ),
            (
                "e2e_latency_seconds_max",
                "gauge",
                "The largest end-to-end latency.",
                |t| t.tasks.e2e_latency_ms_max as f64 / 1e3,
            ),
            (
                "restore_records_total",
                "counter",
                "Changelog records restored.",
                |t| t.restore.records as f64,
            ),
            (
                "restore_seconds_total",
                "counter",
                "Time spent restoring.",
                |t| t.restore.elapsed.as_secs_f64(),
            ),
        ];
        let app = &self.application_id;
        let threads = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help, value) in METRICS {
            out.push_str(&format!(
                "# HELP brook_{name} {help}\n# TYPE brook_{name} {kind}\n"
            ));
            for (i, t) in threads.iter().enumerate() {
                out.push_str(&format!(
                    "brook_{name}{{application_id=\"{app}\",thread=\"{i}\"}} {}\n",
                    value(t)
                ));
            }
        }
        let state = self.shared.state();
        out.push_str("# HELP brook_state The instance state (1 for the current one).\n# TYPE brook_state gauge\n");
        for s in [
            StreamsState::Created,
            StreamsState::Rebalancing,
            StreamsState::Running,
            StreamsState::PendingShutdown,
            StreamsState::NotRunning,
            StreamsState::Error,
        ] {
            out.push_str(&format!(
                "brook_state{{application_id=\"{app}\",state=\"{s:?}\"}} {}\n",
                u8::from(s == state)
            ));
        }
        out
    }
}
