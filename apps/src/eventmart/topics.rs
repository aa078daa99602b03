//! Topic provisioning from one declarative file (`apps/eventmart/topics.toml`).
//!
//! [`TopicsFile::parse`] reads the file into [`TopicSpec`]s (durations like
//! `7d` become `retention.ms`); [`provision`] compares them with what the
//! broker has and, in [`Mode::Apply`], creates what is missing. It never
//! changes an existing topic: a topic that differs (fewer or more
//! partitions, another retention or cleanup policy) is reported with a
//! diff, because changing it under running applications (more partitions
//! move keys to other partitions) is a decision for a person. Running it
//! twice does nothing the second time.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use brook_runtime::kafka::{AdminError, CreateOutcome, KafkaAdmin};
use brook_topology::TopicSpec;
use serde::Deserialize;

/// The file shipped with EventMart.
pub const EVENTMART_TOPICS: &str = include_str!("../../eventmart/topics.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    topic: Vec<RawTopic>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    replication: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    partitions: i32,
    replication: Option<i32>,
    cleanup_policy: Option<String>,
    retention: Option<String>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// The topics a file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsFile {
    /// One spec per topic, in file order.
    pub topics: Vec<TopicSpec>,
}

/// `7d` → milliseconds. Units: ms, s, m, h, d, w, y (365 days); `forever` is -1.
pub fn parse_duration_ms(text: &str) -> Result<i64> {
    let text = text.trim();
    if text == "forever" {
        return Ok(-1);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("duration {text:?} has no unit (ms, s, m, h, d, w, y)"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .with_context(|| format!("duration {text:?} does not start with a number"))?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        other => bail!("duration {text:?} has unknown unit {other:?} (ms, s, m, h, d, w, y)"),
    };
    n.checked_mul(unit_ms)
        .with_context(|| format!("duration {text:?} is too long"))
}

impl TopicsFile {
    /// Parses a topics file; `prefix` goes before every topic name (tests,
    /// several environments on one cluster).
    pub fn parse(text: &str, prefix: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).context("the topics file is not valid")?;
        let default_replication = raw.defaults.replication.unwrap_or(1);
        let mut topics = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for t in raw.topic {
            if !seen.insert(t.name.clone()) {
                bail!("topic {:?} is declared twice", t.name);
            }
            let mut spec = TopicSpec::new(format!("{prefix}{}", t.name), t.partitions)
                .replication(t.replication.unwrap_or(default_replication));
            for (key, value) in t.configs {
                spec = spec.config(key, value);
            }
            if let Some(policy) = t.cleanup_policy {
                let normalized = normalize_list(&policy);
                if normalized
                    .split(',')
                    .any(|p| p != "compact" && p != "delete")
                {
                    bail!(
                        "topic {:?}: cleanup_policy {policy:?} is not delete, compact or compact,delete",
                        t.name
                    );
                }
                spec = spec.config("cleanup.policy", normalized);
            }
            if let Some(retention) = t.retention {
                let ms = parse_duration_ms(&retention)
                    .with_context(|| format!("topic {:?}: retention", t.name))?;
                spec = spec.config("retention.ms", ms.to_string());
            }
            spec.validate()?;
            topics.push(spec);
        }
        if topics.is_empty() {
            bail!("the topics file declares no [[topic]]");
        }
        Ok(TopicsFile { topics })
    }

    /// EventMart's own file.
    pub fn eventmart(prefix: &str) -> Self {
        Self::parse(EVENTMART_TOPICS, prefix).expect("the shipped topics file is valid")
    }

    /// The spec of the topic named `name` (with its prefix).
    pub fn get(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// `compact, delete` and `delete,compact` are the same policy.
fn normalize_list(value: &str) -> String {
    let mut parts: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    parts.sort_unstable();
    parts.join(",")
}

/// One way a topic on the broker differs from its declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The topic does not exist.
    Missing,
    /// Another partition count.
    Partitions {
        /// What the file says.
        declared: i32,
        /// What the broker has.
        actual: i32,
    },
    /// A declared config with another value (or none) on the broker.
    Config {
        /// The config key.
        key: String,
        /// What the file says.
        declared: String,
        /// What the broker reports.
        actual: Option<String>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing => write!(f, "missing"),
            Difference::Partitions { declared, actual } => {
                write!(f, "partitions: declared {declared}, broker has {actual}")
            }
            Difference::Config {
                key,
                declared,
                actual: Some(actual),
            } => write!(f, "{key}: declared {declared}, broker has {actual}"),
            Difference::Config {
                key,
                declared,
                actual: None,
            } => write!(f, "{key}: declared {declared}, broker has no value"),
        }
    }
}

/// The differences between `spec` and a topic with `partitions` and
/// `configs` (`None`: the broker cannot report configs, so they are not
/// compared).
pub fn diff(
    spec: &TopicSpec,
    partitions: i32,
    configs: Option<&BTreeMap<String, String>>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    if partitions != spec.partitions {
        out.push(Difference::Partitions {
            declared: spec.partitions,
            actual: partitions,
        });
    }
    if let Some(configs) = configs {
        for (key, declared) in &spec.configs {
            let actual = configs.get(key);
            let same = match actual {
                Some(actual) if key == "cleanup.policy" => {
                    normalize_list(actual) == normalize_list(declared)
                }
                Some(actual) => actual.trim() == declared.trim(),
                None => false,
            };
            if !same {
                out.push(Difference::Config {
                    key: key.clone(),
                    declared: declared.clone(),
                    actual: actual.cloned(),
                });
            }
        }
    }
    out
}

/// What [`provision`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create missing topics, report differences.
    Apply,
    /// Only report.
    Verify,
}

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Created now.
    Created,
    /// Exists and matches the declaration.
    Matches,
    /// Exists (or is missing, in verify mode) and differs.
    Differs(Vec<Difference>),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// The topic.
    pub topic: String,
    /// What happened.
    pub status: Status,
}

impl fmt::Display for TopicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Created => write!(f, "created  {}", self.topic),
            Status::Matches => write!(f, "ok       {}", self.topic),
            Status::Differs(diffs) => {
                write!(f, "DIFFERS  {}", self.topic)?;
                for d in diffs {
                    write!(f, "\n           {d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether every topic is as declared.
pub fn all_match(reports: &[TopicReport]) -> bool {
    reports
        .iter()
        .all(|r| !matches!(r.status, Status::Differs(_)))
}

/// Compares (and in [`Mode::Apply`] creates) the topics of `file` on the
/// cluster of `admin`. With `check_configs` false only partition counts are
/// compared and topics are not created (for brokers without
/// CreateTopics/DescribeConfigs, such as librdkafka's mock cluster, whose
/// topics are made by the broker process itself).
pub async fn provision(
    admin: &KafkaAdmin,
    file: &TopicsFile,
    mode: Mode,
    check_configs: bool,
) -> Result<Vec<TopicReport>> {
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for spec in &file.topics {
        match admin.partition_count(&spec.name) {
            Ok(partitions) => {
                let configs = if check_configs {
                    Some(
                        admin
                            .topic_configs(&spec.name)
                            .await
                            .with_context(|| format!("reading the configs of {:?}", spec.name))?,
                    )
                } else {
                    None
                };
                let diffs = diff(spec, partitions, configs.as_ref());
                reports.push(TopicReport {
                    topic: spec.name.clone(),
                    status: if diffs.is_empty() {
                        Status::Matches
                    } else {
                        Status::Differs(diffs)
                    },
                });
            }
            Err(AdminError::Topic { .. }) => missing.push(spec.clone()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading the metadata of {:?}", spec.name));
            }
        }
    }
    if mode == Mode::Apply && check_configs && !missing.is_empty() {
        for outcome in admin
            .create_topics(&missing)
            .await
            .context("creating the missing topics")?
        {
            let (topic, status) = match outcome {
                CreateOutcome::Created(topic) => (topic, Status::Created),
                // Made by someone else since we looked: compare it next run.
                CreateOutcome::AlreadyExists(topic) => (topic, Status::Matches),
            };
            reports.push(TopicReport { topic, status });
        }
    } else {
        for spec in missing {
            reports.push(TopicReport {
                topic: spec.name,
                status: Status::Differs(vec![Difference::Missing]),
            });
        }
    }
    let order: BTreeMap<&str, usize> = file
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    reports.sort_by_key(|r| order.get(r.topic.as_str()).copied().unwrap_or(usize::MAX));
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_declares_the_seed_topics() {
        let file = TopicsFile::eventmart("");
        let get = |name: &str| file.get(name).unwrap();
        assert_eq!(get("eventmart-users").partitions, 3);
        assert_eq!(get("eventmart-users").configs["cleanup.policy"], "compact");
        for (name, partitions, days) in [
            ("eventmart-products", 5, 7),
            ("eventmart-orders", 10, 30),
            ("eventmart-payments", 3, 90),
            ("eventmart-notifications", 2, 1),
            ("eventmart-audit", 1, 365),
            ("ecommerce-events", 3, 7),
        ] {
            assert_eq!(get(name).partitions, partitions, "{name}");
            assert_eq!(
                get(name).configs["retention.ms"],
                (days * 86_400_000i64).to_string(),
                "{name}"
            );
        }
        assert_eq!(
            get("eventmart-analytics").configs["retention.ms"],
            "3600000"
        );
        assert_eq!(get("eventmart-analytics").partitions, 1);
    }

    #[test]
    fn durations_and_bad_files_are_reported_by_name() {
        assert_eq!(parse_duration_ms("90d").unwrap(), 90 * 86_400_000);
        assert_eq!(parse_duration_ms("1y").unwrap(), 365 * 86_400_000);
        assert_eq!(parse_duration_ms("forever").unwrap(), -1);
        assert!(format!("{:#}", parse_duration_ms("7").unwrap_err()).contains("no unit"));
        assert!(format!("{:#}", parse_duration_ms("7q").unwrap_err()).contains("unknown unit"));
        let e = TopicsFile::parse(
            "[[topic]]\nname = \"a\"\npartitions = 1\nretention = \"3 days\"\n",
            "",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("topic \"a\": retention"), "{e:#}");
        let e = TopicsFile::parse("[[topic]]\nname = \"a\"\npartitions = 0\n", "").unwrap_err();
        assert!(
            format!("{e:#}").contains("\"a\": needs at least one partition"),
            "{e:#}"
        );
        let e = TopicsFile::parse(
            "[[topic]]\nname = \"a\"\npartitions = 1\ncleanup_policy = \"shred\"\n",
            "",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("shred"), "{e:#}");
        let e = TopicsFile::parse("[[topic]]\nname = \"a\"\npartition = 1\n", "").unwrap_err();
        assert!(format!("{e:#}").contains("partition"), "{e:#}");
        let twice = "[[topic]]\nname = \"a\"\npartitions = 1\n".repeat(2);
        assert!(format!("{:#}", TopicsFile::parse(&twice, "").unwrap_err()).contains("twice"));
    }

    #[test]
    fn diff_names_each_difference_and_ignores_undeclared_configs() {
        let spec = TopicsFile::parse(
            "[[topic]]\nname = \"t\"\npartitions = 3\ncleanup_policy = \"delete, compact\"\nretention = \"1h\"\n",
            "p.",
        )
        .unwrap()
        .topics
        .remove(0);
        assert_eq!(spec.name, "p.t");
        let mut configs = BTreeMap::from([
            ("cleanup.policy".to_owned(), "compact,delete".to_owned()),
            ("retention.ms".to_owned(), "3600000".to_owned()),
            ("segment.bytes".to_owned(), "1".to_owned()),
        ]);
        assert!(diff(&spec, 3, Some(&configs)).is_empty());
        assert!(diff(&spec, 3, None).is_empty());
        configs.insert("retention.ms".into(), "604800000".into());
        configs.remove("cleanup.policy");
        let diffs = diff(&spec, 5, Some(&configs));
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "partitions: declared 3, broker has 5",
                "cleanup.policy: declared compact,delete, broker has no value",
                "retention.ms: declared 3600000, broker has 604800000",
            ]
        );
    }
}
