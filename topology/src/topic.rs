//! Declarations of Kafka topics.
//!
//! A [`TopicSpec`] says what a topic must look like: name, partition count,
//! replication factor and topic-level configs such as `cleanup.policy`.
//! Cluster adapters in `brook-runtime` turn specs into CreateTopics requests
//! (or the equivalent for brokers without an admin API).

use std::collections::BTreeMap;
use std::fmt;

/// The `cleanup.policy` of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CleanupPolicy {
    /// Old segments are deleted after `retention.ms` / `retention.bytes`.
    Delete,
    /// The log keeps at least the last record of every key (changelogs, tables).
    Compact,
    /// Both: compacted, and segments older than retention are deleted too.
    CompactDelete,
}

impl CleanupPolicy {
    /// The value Kafka expects for `cleanup.policy`.
    pub fn as_config_value(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_config_value())
    }
}

/// What a topic must look like when it is created.
///
/// ```
/// use brook_topology::{CleanupPolicy, TopicSpec};
///
/// let spec = TopicSpec::new("orders-changelog", 6)
///     .cleanup_policy(CleanupPolicy::Compact)
///     .config("min.compaction.lag.ms", "0");
/// assert_eq!(spec.partitions, 6);
/// assert_eq!(spec.configs["cleanup.policy"], "compact");
/// assert!(spec.is_compacted());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions (at least 1).
    pub partitions: i32,
    /// Replication factor (1 on single-broker test clusters);
    /// [`TopicSpec::BROKER_DEFAULT_REPLICATION`] (-1) leaves it to the
    /// broker's `default.replication.factor`.
    pub replication: i32,
    /// Topic-level configs, e.g. `cleanup.policy` or `retention.ms`.
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A replication factor of -1: the broker's `default.replication.factor`
    /// (Kafka 2.4+, KIP-464).
    pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

    /// A topic with `partitions` partitions, replication factor 1 and no configs.
    ///
    /// Nothing is checked here; [`TopicSpec::validate`] is called by every
    /// adapter before a spec reaches a broker.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
            configs: BTreeMap::new(),
        }
    }

    /// Sets the replication factor.
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication;
        self
    }

    /// Sets `cleanup.policy`.
    pub fn cleanup_policy(self, policy: CleanupPolicy) -> Self {
        self.config("cleanup.policy", policy.as_config_value())
    }

    /// Sets any topic-level config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }

    /// Checks what Kafka would reject, naming the topic and the problem.
    pub fn validate(&self) -> Result<(), TopicSpecError> {
        let invalid = |reason: String| {
            Err(TopicSpecError {
                topic: self.name.clone(),
                reason,
            })
        };
        if self.name.is_empty() || self.name == "." || self.name == ".." {
            return invalid(format!("{:?} is not a legal topic name", self.name));
        }
        if self.name.len() > 249 {
            return invalid(format!(
                "name is {} characters long, the limit is 249",
                self.name.len()
            ));
        }
        if let Some(bad) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(format!(
                "name contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are legal"
            ));
        }
        if self.partitions < 1 {
            return invalid(format!(
                "needs at least one partition, got {}",
                self.partitions
            ));
        }
        if self.replication < 1 && self.replication != Self::BROKER_DEFAULT_REPLICATION {
            return invalid(format!(
                "needs a replication factor of at least 1 (or -1, the broker's default), got {}",
                self.replication
            ));
        }
        Ok(())
    }

    /// Whether `cleanup.policy` includes compaction.
    pub fn is_compacted(&self) -> bool {
        self.configs
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|part| part.trim() == "compact"))
    }
}

/// A [`TopicSpec`] that no broker would accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpecError {
    /// The topic the spec is for.
    pub topic: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for TopicSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid topic spec for {:?}: {}",
            self.topic, self.reason
        )
    }
}

impl std::error::Error for TopicSpecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_delete_counts_as_compacted_and_delete_does_not() {
        let both = TopicSpec::new("t", 1).cleanup_policy(CleanupPolicy::CompactDelete);
        assert_eq!(both.configs["cleanup.policy"], "compact,delete");
        assert!(both.is_compacted());
        let delete = TopicSpec::new("t", 1).cleanup_policy(CleanupPolicy::Delete);
        assert!(!delete.is_compacted());
        assert!(!TopicSpec::new("t", 1).is_compacted());
    }

    #[test]
    fn validate_names_the_topic_and_the_problem() {
        assert!(TopicSpec::new("orders.v1_x-y", 3).validate().is_ok());
        let err = TopicSpec::new("orders", 0).validate().unwrap_err();
        assert_eq!(err.topic, "orders");
        assert!(
            err.to_string().contains("at least one partition, got 0"),
            "{err}"
        );
        let err = TopicSpec::new("a/b", 1).validate().unwrap_err();
        assert!(err.reason.contains("'/'"), "{err}");
        assert!(TopicSpec::new("", 1).validate().is_err());
        assert!(TopicSpec::new("..", 1).validate().is_err());
        assert!(TopicSpec::new("x".repeat(250), 1).validate().is_err());
        assert!(TopicSpec::new("t", 1).replication(0).validate().is_err());
    }
}
