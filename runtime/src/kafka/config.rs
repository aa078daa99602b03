//! librdkafka client configuration with brook's defaults.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Environment variable naming an external Kafka (`host:port[,host:port]`).
pub const BOOTSTRAP_ENV: &str = "BROOK_BOOTSTRAP";

/// Prefix of environment variables holding librdkafka properties:
/// `BROOK_KAFKA_SASL_PASSWORD=...` sets `sasl.password` (lower case, `.`
/// for `_`: librdkafka's property names have no `_`). Secrets are better
/// passed this way (or in a config file) than as command-line flags, which
/// other users of the machine can read.
pub const PROPERTY_ENV_PREFIX: &str = "BROOK_KAFKA_";

/// The librdkafka property environment variable `name` sets, if any.
pub fn property_of_env(name: &str) -> Option<String> {
    let property = name.strip_prefix(PROPERTY_ENV_PREFIX)?;
    (!property.is_empty()).then(|| property.to_lowercase().replace('_', "."))
}

/// Connection settings shared by every client of one cluster, and brook's
/// defaults for producers and consumers.
///
/// Defaults, each overridable with [`KafkaConfig::set`]:
/// - producers: `partitioner=murmur2_random` (keys land where the Java client
///   puts them) and `enable.idempotence=true`;
/// - consumers: `enable.auto.commit=false` (brook commits what it has
///   processed, never what it has merely fetched),
///   `auto.offset.reset=earliest`, and prefetching that keeps up with a
///   stream thread: `queued.min.messages=20000` and
///   `fetch.queue.backoff.ms=10`. librdkafka counts a partition's queue as
///   the whole consumer's (they are forwarded to one queue), and once it
///   holds `queued.min.messages` (100,000 by default) every partition stops
///   fetching for `fetch.queue.backoff.ms` (1 s by default): a consumer
///   that drains 100,000 records in well under a second then waits out the
///   rest, which capped brook and a bare librdkafka loop at ~100,000
///   records/s on Kafka 4.4 whatever their CPU (brook-bench's Kafka group).
///
/// ```
/// use brook_runtime::kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("127.0.0.1:9092").set("client.id", "docs");
/// let producer = config.producer();
/// assert_eq!(producer.get("bootstrap.servers"), Some("127.0.0.1:9092"));
/// assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
/// assert_eq!(config.consumer("g").get("group.id"), Some("g"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    bootstrap: String,
    overrides: BTreeMap<String, String>,
    producer_overrides: BTreeMap<String, String>,
    consumer_overrides: BTreeMap<String, String>,
}

/// Whether a librdkafka property holds a secret: passwords, private keys
/// and their PEM text, SASL/JAAS and OAuth client secrets. Their values
/// never appear in brook's `Debug` output or logs (librdkafka redacts them
/// in its own too).
pub fn is_secret_property(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key == "sasl.jaas.config"
        || key == "sasl.oauthbearer.config"
        || key == "ssl.key.pem"
}

fn redacted<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_property(key) {
        "[redacted]"
    } else {
        value
    }
}

/// Which clients a librdkafka property applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Consumer,
    Producer,
    All,
}

/// The scope librdkafka's CONFIGURATION.md gives `key` (C: consumer, P:
/// producer; anything not listed here applies to every client).
fn property_scope(key: &str) -> Scope {
    const CONSUMER: &[&str] = &[
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.protocol.type",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "isolation.level",
        "consume.callback.max.messages",
        "enable.partition.eof",
        "check.crcs",
    ];
    const PRODUCER: &[&str] = &[
        "transactional.id",
        "transaction.timeout.ms",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.ms",
        "queue.buffering.backpressure.threshold",
        "linger.ms",
        "message.send.max.retries",
        "retries",
        "compression.codec",
        "compression.type",
        "compression.level",
        "batch.num.messages",
        "batch.size",
        "delivery.report.only.error",
        "sticky.partitioning.linger.ms",
        "acks",
        "request.required.acks",
        "request.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "partitioner",
    ];
    if CONSUMER.contains(&key) {
        Scope::Consumer
    } else if PRODUCER.contains(&key) {
        Scope::Producer
    } else {
        Scope::All
    }
}

/// Secrets show as `"[redacted]"`.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| (k.clone(), redacted(k, v).to_owned()))
                .collect()
        };
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("overrides", &shown(&self.overrides))
            .field("producer_overrides", &shown(&self.producer_overrides))
            .field("consumer_overrides", &shown(&self.consumer_overrides))
            .finish()
    }
}

impl KafkaConfig {
    /// Settings for the cluster at `bootstrap` (`host:port[,host:port]`).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            overrides: BTreeMap::new(),
            producer_overrides: BTreeMap::new(),
            consumer_overrides: BTreeMap::new(),
        }
    }

    /// Settings for the cluster named by `BROOK_BOOTSTRAP`, if it is set and
    /// not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var(BOOTSTRAP_ENV)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(KafkaConfig::new)
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Sets a librdkafka property on every client made from this config
    /// (e.g. `security.protocol`); it wins over brook's defaults. A
    /// property librdkafka knows as consumer-only (`session.timeout.ms`,
    /// `fetch.*`, ...) goes to consumers only and a producer-only one
    /// (`linger.ms`, `acks`, ...) to producers only, so neither kind of
    /// client logs that it ignores the other's (librdkafka's CONFWARN).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let map = match property_scope(&key) {
            Scope::Consumer => &mut self.consumer_overrides,
            Scope::Producer => &mut self.producer_overrides,
            Scope::All => &mut self.overrides,
        };
        map.insert(key, value.into());
        self
    }

    /// Sets the properties named by `BROOK_KAFKA_*` variables of `env`
    /// (see [`PROPERTY_ENV_PREFIX`]).
    pub fn set_from_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in env {
            if let Some(key) = property_of_env(&name) {
                self = self.set(key, value);
            }
        }
        self
    }

    /// [`set_from_env`](Self::set_from_env) with the process's environment.
    pub fn with_process_env(self) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        self.set_from_env(env)
    }

    /// Sets a librdkafka property on producers only (e.g. `linger.ms`).
    pub fn set_producer(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer_overrides.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property on consumers only (e.g. `session.timeout.ms`).
    pub fn set_consumer(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer_overrides.insert(key.into(), value.into());
        self
    }

    /// A config for any client (admin, metadata): bootstrap plus overrides.
    pub fn client(&self) -> ClientConfig {
        self.with_defaults(&[], &BTreeMap::new())
    }

    /// Whether `key` was set for every client or for producers.
    pub fn is_set(&self, key: &str) -> bool {
        self.overrides.contains_key(key) || self.producer_overrides.contains_key(key)
    }

    /// A producer config.
    pub fn producer(&self) -> ClientConfig {
        self.with_defaults(
            &[
                ("partitioner", "murmur2_random"),
                ("enable.idempotence", "true"),
            ],
            &self.producer_overrides,
        )
    }

    /// A consumer config for consumer group `group_id`.
    pub fn consumer(&self, group_id: &str) -> ClientConfig {
        self.with_defaults(
            &[
                ("group.id", group_id),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("queued.min.messages", "20000"),
                ("fetch.queue.backoff.ms", "10"),
            ],
            &self.consumer_overrides,
        )
    }

    fn with_defaults(
        &self,
        defaults: &[(&str, &str)],
        kind_overrides: &BTreeMap<String, String>,
    ) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Warnings and errors reach brook's log (see `log`), and with
        // librdkafka's `debug` property set, its debug lines too; rdkafka
        // would otherwise pick the level from the `log` crate, which brook
        // does not use.
        let debugging =
            self.overrides.contains_key("debug") || kind_overrides.contains_key("debug");
        config.set_log_level(if debugging {
            rdkafka::config::RDKafkaLogLevel::Debug
        } else {
            rdkafka::config::RDKafkaLogLevel::Warning
        });
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in self.overrides.iter().chain(kind_overrides) {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_prefetch_without_the_one_second_back_off_unless_told_otherwise() {
        let consumer = KafkaConfig::new("b:1").consumer("g");
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(consumer.get("queued.min.messages"), Some("20000"));
        assert_eq!(
            KafkaConfig::new("b:1")
                .producer()
                .get("fetch.queue.backoff.ms"),
            None
        );
        let told = KafkaConfig::new("b:1").set_consumer("fetch.queue.backoff.ms", "1000");
        assert_eq!(
            told.consumer("g").get("fetch.queue.backoff.ms"),
            Some("1000")
        );
    }

    #[test]
    fn consumer_and_producer_only_properties_reach_only_their_clients() {
        let config = KafkaConfig::new("b:1")
            .set("session.timeout.ms", "6000")
            .set("linger.ms", "20")
            .set("client.id", "eventmart");
        let (producer, consumer) = (config.producer(), config.consumer("g"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(consumer.get("linger.ms"), None);
        for client in [&producer, &consumer, &config.client()] {
            assert_eq!(client.get("client.id"), Some("eventmart"));
        }
        assert!(config.is_set("linger.ms"));
    }

    #[test]
    fn overrides_win_over_defaults_for_every_client_kind() {
        let config = KafkaConfig::new("b:1")
            .set("partitioner", "consistent_random")
            .set("auto.offset.reset", "latest")
            .set("security.protocol", "SASL_SSL");
        assert_eq!(
            config.producer().get("partitioner"),
            Some("consistent_random")
        );
        assert_eq!(
            config.consumer("g").get("auto.offset.reset"),
            Some("latest")
        );
        for client in [config.client(), config.producer(), config.consumer("g")] {
            assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(client.get("bootstrap.servers"), Some("b:1"));
        }
    }

    #[test]
    fn sasl_and_ssl_settings_reach_every_client_and_secrets_are_not_shown() {
        let secret = "pa55-w0rd-for-test";
        for (mechanism, protocol) in [
            ("PLAIN", "SASL_PLAINTEXT"),
            ("SCRAM-SHA-256", "SASL_SSL"),
            ("SCRAM-SHA-512", "SASL_SSL"),
        ] {
            let config = KafkaConfig::new("b:1")
                .set("security.protocol", protocol)
                .set("sasl.mechanisms", mechanism)
                .set("sasl.username", "svc")
                .set("sasl.password", secret)
                .set("ssl.ca.location", "/etc/ca.pem")
                .set("ssl.key.password", secret)
                .set("ssl.key.pem", secret);
            for client in [config.client(), config.producer(), config.consumer("g")] {
                assert_eq!(client.get("security.protocol"), Some(protocol));
                assert_eq!(client.get("sasl.mechanisms"), Some(mechanism));
                assert_eq!(client.get("sasl.username"), Some("svc"));
                assert_eq!(client.get("sasl.password"), Some(secret));
                assert_eq!(client.get("ssl.ca.location"), Some("/etc/ca.pem"));
                assert_eq!(client.get("ssl.key.password"), Some(secret));
            }
            let shown = format!("{config:?} {config:#?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(
                shown.contains("[redacted]") && shown.contains("svc"),
                "{shown}"
            );
        }
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        for key in ["sasl.username", "security.protocol", "ssl.ca.location"] {
            assert!(!is_secret_property(key), "{key}");
        }
    }

    #[test]
    fn kind_specific_settings_reach_only_that_kind() {
        let config = KafkaConfig::new("b:1")
            .set("client.id", "all")
            .set_consumer("session.timeout.ms", "6000")
            .set_producer("linger.ms", "1");
        let (consumer, producer, client) =
            (config.consumer("g"), config.producer(), config.client());
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("1"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(client.get("linger.ms"), None);
        assert_eq!(client.get("session.timeout.ms"), None);
        for c in [consumer, producer, client] {
            assert_eq!(c.get("client.id"), Some("all"));
        }
    }

    #[test]
    fn consumers_never_auto_commit_by_default() {
        let consumer = KafkaConfig::new("b:1").consumer("group-a");
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("group-a"));
        assert_eq!(consumer.get("partitioner"), None);
    }
}
