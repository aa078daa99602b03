//! Topic administration through Kafka's admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use brook_topology::{TopicSpec, TopicSpecError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;
use super::log::{ClientLog, ClientReport};

/// Why an admin operation failed.
///
/// Messages do not repeat their cause; it is the error's `source()`, so
/// `anyhow`'s `{:#}` and other reporters print each cause once.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request was never sent: the spec itself is wrong. Fix the spec.
    #[error(transparent)]
    InvalidSpec(#[from] TopicSpecError),
    /// No client could be made (bad config). Fix the config.
    #[error("cannot create a Kafka admin client for {bootstrap}")]
    Client {
        /// The bootstrap servers the client was for.
        bootstrap: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The request failed as a whole (broker unreachable, timed out, or
    /// the broker does not implement the API). Often transient: retry —
    /// unless what the client reported meanwhile says otherwise (a refused
    /// login).
    #[error("{operation} failed{}", reported_note(.reported))]
    Request {
        /// What was attempted.
        operation: &'static str,
        /// librdkafka's error.
        source: KafkaError,
        /// The last error the client reported while it waited.
        reported: Option<Box<ClientReport>>,
    },
    /// The broker refused the operation for one topic.
    #[error("{operation} for topic {topic:?} refused by the broker: {code}")]
    Topic {
        /// What was attempted.
        operation: &'static str,
        /// The topic concerned.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}

fn reported_note(reported: &Option<Box<ClientReport>>) -> String {
    reported
        .as_ref()
        .map(|r| format!(" (the client reported: {r})"))
        .unwrap_or_default()
}

/// What [`KafkaAdmin::create_topics`] did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic was created.
    Created(String),
    /// A topic of that name existed already; it was left as it is.
    AlreadyExists(String),
}

/// A Kafka admin client with a request timeout.
pub struct KafkaAdmin {
    client: AdminClient<ClientLog>,
    config: KafkaConfig,
    bootstrap: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAdmin")
            .field("bootstrap", &self.bootstrap)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaAdmin {
    /// An admin client for the cluster of `config`, with a 30 s timeout.
    pub fn new(config: &KafkaConfig) -> Result<Self, AdminError> {
        let client = config
            .client()
            .create_with_context(ClientLog::default())
            .map_err(|source| AdminError::Client {
                bootstrap: config.bootstrap().to_owned(),
                source,
            })?;
        Ok(KafkaAdmin {
            client,
            config: config.clone(),
            bootstrap: config.bootstrap().to_owned(),
            timeout: Duration::from_secs(30),
        })
    }

    fn request_error(&self, operation: &'static str, source: KafkaError) -> AdminError {
        // The admin client's own errors wait in a queue rdkafka never
        // polls; a request that timed out is explained by a client that
        // is polled.
        let reported = self
            .client
            .inner()
            .context()
            .last_error()
            .or_else(|| self.diagnose())
            .map(Box::new);
        AdminError::Request {
            operation,
            source,
            reported,
        }
    }

    /// What a fresh client of this cluster reports when it tries to reach
    /// it (a refused login, an unknown host, no broker listening).
    fn diagnose(&self) -> Option<ClientReport> {
        let log = ClientLog::default();
        let probe: BaseConsumer<ClientLog> =
            self.config.client().create_with_context(log.clone()).ok()?;
        let _ = probe.fetch_metadata(None, self.timeout.min(Duration::from_secs(5)));
        for _ in 0..10 {
            if log.last_error().is_some() {
                break;
            }
            let _ = probe.poll(Duration::from_millis(100));
        }
        log.last_error()
    }

    /// Sets how long one request may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Creates the topics of `specs`. A topic that exists already is
    /// reported as [`CreateOutcome::AlreadyExists`] and not changed, so this
    /// is safe to call on every start.
    pub async fn create_topics(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<CreateOutcome>, AdminError> {
        for spec in specs {
            spec.validate()?;
        }
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|spec| {
                let mut topic = NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication),
                );
                for (key, value) in &spec.configs {
                    topic = topic.set(key, value);
                }
                topic
            })
            .collect();
        let results = self
            .client
            .create_topics(&new_topics, &self.options())
            .await
            .map_err(|source| self.request_error("CreateTopics", source))?;
        results
            .into_iter()
            .map(|result| match result {
                Ok(name) => Ok(CreateOutcome::Created(name)),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    Ok(CreateOutcome::AlreadyExists(name))
                }
                Err((topic, code)) => Err(AdminError::Topic {
                    operation: "CreateTopics",
                    topic,
                    code,
                }),
            })
            .collect()
    }

    /// The configs of `topic` as the broker reports them (defaults included).
    pub async fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>, AdminError> {
        let resource = ResourceSpecifier::Topic(topic);
        let mut results = self
            .client
            .describe_configs([&resource], &self.options())
            .await
            .map_err(|source| self.request_error("DescribeConfigs", source))?;
        let result = results.pop().ok_or_else(|| AdminError::Topic {
            operation: "DescribeConfigs",
            topic: topic.to_owned(),
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
        })?;
        let resource = result.map_err(|code| AdminError::Topic {
            operation: "DescribeConfigs",
            topic: topic.to_owned(),
            code,
        })?;
        Ok(resource
            .entries
            .into_iter()
            .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
            .collect())
    }

    /// Deletes the named topics; a topic that does not exist is not an error.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<(), AdminError> {
        let results = self
            .client
            .delete_topics(topics, &self.options())
            .await
            .map_err(|source| self.request_error("DeleteTopics", source))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => {
                    return Err(AdminError::Topic {
                        operation: "DeleteTopics",
                        topic,
                        code,
                    });
                }
            }
        }
        Ok(())
    }

    /// The number of partitions of `topic`, from cluster metadata.
    ///
    /// Blocking: it waits up to the timeout for a metadata response.
    pub fn partition_count(&self, topic: &str) -> Result<i32, AdminError> {
        let metadata = self
            .client
            .inner()
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|source| self.request_error("Metadata", source))?;
        let unknown = || AdminError::Topic {
            operation: "Metadata",
            topic: topic.to_owned(),
            code: RDKafkaErrorCode::UnknownTopicOrPartition,
        };
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(unknown)?;
        if let Some(error) = found.error() {
            return Err(AdminError::Topic {
                operation: "Metadata",
                topic: topic.to_owned(),
                code: error.into(),
            });
        }
        if found.partitions().is_empty() {
            return Err(unknown());
        }
        i32::try_from(found.partitions().len()).map_err(|_| unknown())
    }
}
