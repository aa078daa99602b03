//! librdkafka's log lines and client errors, into `tracing`.
//!
//! rdkafka logs through the `log` crate, which brook's binaries do not
//! install, so without this what librdkafka says — a broker that went away,
//! a failed SASL login — would be lost. Every client brook creates uses a
//! context that forwards both to `tracing` (target `librdkafka`) and keeps
//! the last error, so that an admin request that merely timed out can say
//! what the client saw meanwhile (e.g. "SASL authentication failed").
//! librdkafka redacts secrets in its own messages.

use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What a client reported while a request was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    /// The error and librdkafka's reason.
    pub message: String,
    /// Whether it says the cluster is unreachable for now (rather than,
    /// say, that the login was refused).
    pub transient: bool,
}

impl std::fmt::Display for ClientReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Forwards a client's logs and errors to `tracing`; remembers the last error.
#[derive(Clone, Default)]
pub struct ClientLog {
    last: Arc<Mutex<Option<ClientReport>>>,
}

impl ClientLog {
    /// The last error the client reported, if any.
    pub fn last_error(&self) -> Option<ClientReport> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn line(level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
            L::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    pub(crate) fn record(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news, not an error.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        let transient = error.rdkafka_error_code().is_some_and(transient);
        if transient {
            tracing::debug!(target: "librdkafka", %error, "{reason}");
        } else {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(ClientReport {
            message: format!("{error}: {reason}"),
            transient,
        });
    }
}

/// For plain (metadata) consumers.
impl rdkafka::consumer::ConsumerContext for ClientLog {}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        ClientLog::line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.record(error, reason);
    }
}

/// Implements `ClientContext` for a context with a `log: ClientLog` field.
macro_rules! forward_client_log {
    ($context:ty) => {
        impl rdkafka::ClientContext for $context {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
                $crate::kafka::log::ClientLog::line(level, fac, log_message);
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                self.log.record(error, reason);
            }
        }
    };
}
pub(crate) use forward_client_log;

/// Error codes of a cluster that cannot be reached or did not answer in
/// time: librdkafka reconnects and the call may succeed when retried.
pub(crate) fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            // A request in flight to a broker that left the cluster's
            // metadata (seen when a node of three was killed).
            | C::DestroyBroker
            | C::AllBrokersDown
            | C::Resolve
            | C::MessageTimedOut
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::BrokerNotAvailable
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
            | C::NotController
    )
}
