//! brook-testkit: real brokers for brook's tests, started and stopped by the
//! tests themselves.
//!
//! A test asks for a broker with [`TestBroker::mock`] (librdkafka's mock
//! cluster, in-process, instant, for plumbing only) or [`TestBroker::kafka`]
//! (Apache Kafka 4.4 in KRaft mode, a JVM on free loopback ports, killed when
//! the `TestBroker` is dropped or the test process dies; see [`KafkaBroker`]).
//! [`TestBroker::kafka_with`] starts one with TLS, SASL, ACLs or several
//! nodes. Each test gets its own broker, and [`TestBroker::namespace`] gives
//! it topic and group names no other test or earlier run uses.
//!
//! Setting `BROOK_BOOTSTRAP=host:port` makes both constructors return the
//! external Kafka at that address instead, so the same broker-backed tests
//! run unchanged against real Kafka.
//!
//! Brokers differ in what they implement; [`TestBroker::capabilities`] says
//! what the one at hand can do, and operations it cannot do return
//! [`TestkitError::Unsupported`] rather than pretending.

mod broker;
mod consume;
mod faults;
mod kafka;
mod namespace;
mod postgres;

pub use broker::{BrokerKind, Capabilities, Restart, TestBroker};
pub use consume::{Received, consume_exactly, read_topic, read_topic_with};
pub use faults::{CrashOnce, CrashOnceAtEach};
pub use kafka::{
    KAFKA_JVM_OPTS_ENV, KAFKA_LIBS_ENV, KAFKA_VERSION, KafkaBroker, KafkaOptions, SaslMechanism,
    TestCa, kafka_libs, run_kafka_tool,
};
pub use namespace::Namespace;
pub use postgres::{TestPostgres, postgres_bin};

use std::time::Duration;

/// Why a test broker or helper could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Kafka's jars were not found.
    #[error(
        "Apache Kafka {KAFKA_VERSION} not found in {libs} (or ${KAFKA_LIBS_ENV}); \
         `make tools` installs it"
    )]
    KafkaMissing {
        /// Where the jars were looked for.
        libs: String,
    },
    /// A Kafka node exited or never became ready.
    #[error("Kafka node {node} did not start: {reason}\n--- its log (tail) ---\n{log}")]
    KafkaStart {
        /// Its `node.id`.
        node: usize,
        /// What went wrong.
        reason: String,
        /// The end of its log.
        log: String,
    },
    /// A Kafka client operation failed.
    #[error("{what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// An admin operation failed.
    #[error(transparent)]
    Admin(#[from] brook_runtime::kafka::AdminError),
    /// The broker cannot do this; the test must not claim it.
    #[error("the {broker} broker does not support {what}")]
    Unsupported {
        /// Which broker.
        broker: BrokerKind,
        /// What it lacks.
        what: &'static str,
    },
    /// Fewer records arrived than expected before the deadline.
    #[error("timed out after {waited:?} waiting for {wanted} records, got {got}")]
    Timeout {
        /// How many were expected.
        wanted: usize,
        /// How many arrived.
        got: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// More records arrived than expected.
    #[error("expected exactly {wanted} records, but another one arrived: {extra}")]
    TooMany {
        /// How many were expected.
        wanted: usize,
        /// The first extra record, as `topic[partition]@offset`.
        extra: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

pub(crate) fn kafka_err(
    what: impl Into<String>,
) -> impl FnOnce(rdkafka::error::KafkaError) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Kafka { what, source }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// Sends brook's and librdkafka's `tracing` events to the test's captured
/// output, so a failing test shows what the runtime did (rebalances,
/// restores, client errors) beside its assertion; a passing test shows
/// nothing. `BROOK_TEST_LOG` overrides the filter (an `EnvFilter`
/// directive such as `debug` or `brook_runtime=trace`); the default is
/// warnings, plus brook's info lines (librdkafka's own lines are off: its
/// threads are not the test's, so they would print for passing tests
/// too). Every [`TestBroker`] constructor calls it; calling it again does
/// nothing.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("BROOK_TEST_LOG").unwrap_or_else(|_| {
            "warn,librdkafka=off,brook_runtime=info,brook_connectors=info".to_owned()
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}

/// Milliseconds since the Unix epoch, for record timestamps: tests stamp
/// records now, because a real broker deletes segments older than its
/// retention (7 days) under the reader.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `n` distinct free loopback ports (all bound at once, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .map_err(io_err("finding a free loopback port"))
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_err("finding a free loopback port"))
        })
        .collect()
}

/// Sends `signal` to process `pid` (SIGSTOP, SIGCONT, SIGKILL, ...);
/// false when there is no such process.
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes any pid and signal number and reports errors.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Makes `command`'s process receive SIGKILL when the thread that spawns it
/// dies (Linux's `PR_SET_PDEATHSIG`), so a killed test leaves no child.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
