//! brook-testkit: real brokers for brook's tests, started and stopped by the
//! tests themselves.
//!
//! A test asks for a broker with [`TestBroker::mock`] (librdkafka's mock
//! cluster, in-process, instant) or [`TestBroker::tansu`] (a `tansu` broker
//! process with sqlite storage on a free loopback port, killed when the
//! `TestBroker` is dropped or the test process dies). Each test gets its own
//! broker, and [`TestBroker::namespace`] gives it topic and group names no
//! other test or earlier run uses.
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
mod namespace;
mod postgres;
mod tansu;
mod tls;

pub use broker::{BrokerKind, Capabilities, Restart, TestBroker};
pub use consume::{Received, consume_exactly, read_topic};
pub use namespace::Namespace;
pub use postgres::{TestPostgres, postgres_bin};
pub use tansu::{TANSU_ENV, TANSU_SASL_MECHANISM, TANSU_VERSION, TansuBroker, tansu_binary};
pub use tls::TlsProxy;

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
    /// The tansu binary was not found.
    #[error(
        "tansu {TANSU_VERSION} not found (looked at ${TANSU_ENV}, {cached} and $PATH); \
         `make tools` installs it"
    )]
    TansuMissing {
        /// Where the cached binary was looked for.
        cached: String,
    },
    /// tansu exited or never became ready.
    #[error("tansu broker on {bootstrap} did not start: {reason}\n--- tansu log (tail) ---\n{log}")]
    TansuStart {
        /// The address it was to listen on.
        bootstrap: String,
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
