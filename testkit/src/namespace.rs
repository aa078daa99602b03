//! Unique names for topics and consumer groups.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A prefix no other test, test process or earlier run uses, so tests can
/// share a broker (an external Kafka, say) without seeing each other's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// A new namespace: `brook-<pid>-<start time>-<counter>`.
    pub fn fresh() -> Self {
        let millis = crate::now_ms();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Namespace {
            prefix: format!("brook-{}-{millis}-{n}", std::process::id()),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A topic name inside this namespace.
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// A consumer group id inside this namespace.
    pub fn group(&self, name: &str) -> String {
        format!("{}.group.{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_never_repeat_and_names_are_legal_topics() {
        let a = Namespace::fresh();
        let b = Namespace::fresh();
        assert_ne!(a, b);
        assert_ne!(a.topic("x"), b.topic("x"));
        let spec = brook_topology::TopicSpec::new(a.topic("orders-v1"), 1);
        spec.validate().expect("namespaced topic names are legal");
    }
}
