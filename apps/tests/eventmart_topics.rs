//! `eventmart-topics` against Apache Kafka (a broker with CreateTopics and
//! DescribeConfigs): apply creates the seed's topics with their configs,
//! running it again changes nothing, and a topic that differs from the file
//! is reported with a diff and exit code 1, never altered.

use std::process::{Command, Output};

use brook_apps::eventmart::topics::TopicsFile;
use brook_testkit::TestBroker;
use brook_topology::TopicSpec;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn topics(args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    Ok(Command::new(env!("CARGO_BIN_EXE_eventmart-topics"))
        .args(args)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn apply_creates_verifies_and_reports_differences() -> TestResult {
    let broker = TestBroker::kafka()?;
    let ns = broker.namespace();
    let prefix = format!("{}.", ns.prefix());
    let bootstrap = broker.bootstrap().to_owned();
    let file = TopicsFile::eventmart(&prefix);

    // One topic exists already, wrongly: 4 partitions, 7 days.
    let orders = format!("{prefix}eventmart-orders");
    broker.create_topics(&[TopicSpec::new(&orders, 4).config("retention.ms", "604800000")])?;

    let out = topics(&["apply", "--bootstrap", &bootstrap, "--prefix", &prefix])?;
    let first = text(&out);
    assert_eq!(out.status.code(), Some(1), "{first}");
    assert!(
        first.contains(&format!("DIFFERS  {orders}"))
            && first.contains("partitions: declared 10, broker has 4")
            && first.contains("retention.ms: declared 2592000000, broker has 604800000"),
        "{first}"
    );
    for t in &file.topics {
        if t.name != orders {
            assert!(first.contains(&format!("created  {}", t.name)), "{first}");
        }
    }
    // Created as declared: partitions and configs on the broker.
    for t in &file.topics {
        if t.name == orders {
            continue;
        }
        assert_eq!(broker.partition_count(&t.name)?, t.partitions, "{}", t.name);
        let configs = broker.topic_configs(&t.name)?;
        for (k, v) in &t.configs {
            assert_eq!(configs.get(k), Some(v), "{} {k}", t.name);
        }
    }
    // The differing topic was left alone.
    assert_eq!(broker.partition_count(&orders)?, 4);

    // Again: nothing created, the same difference.
    let out = topics(&["verify", "--bootstrap", &bootstrap, "--prefix", &prefix])?;
    let second = text(&out);
    assert_eq!(out.status.code(), Some(1), "{second}");
    assert!(!second.contains("created"), "{second}");
    assert_eq!(
        second.matches("ok       ").count(),
        file.topics.len() - 1,
        "{second}"
    );

    // A file without the wrong topic: everything matches, exit 0.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("topics.toml");
    let shipped = brook_apps::eventmart::topics::EVENTMART_TOPICS;
    let without_orders = shipped.replace(
        "[[topic]]\nname = \"eventmart-orders\"\npartitions = 10\nretention = \"30d\"\n",
        "",
    );
    assert_ne!(without_orders, shipped, "the file's orders entry moved");
    std::fs::write(&path, without_orders)?;
    let path = path.to_str().ok_or("path")?;
    let out = topics(&[
        "apply",
        "--bootstrap",
        &bootstrap,
        "--prefix",
        &prefix,
        "--file",
        path,
    ])?;
    assert!(out.status.success(), "{}", text(&out));

    // Bad input: exit 2 with the reason.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[topic]]\nname = \"x\"\npartitions = 0\n",
    )?;
    let bad = dir.path().join("bad.toml");
    let out = topics(&[
        "verify",
        "--bootstrap",
        &bootstrap,
        "--file",
        bad.to_str().ok_or("path")?,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("needs at least one partition"),
        "{}",
        text(&out)
    );
    let out = topics(&["sync", "--bootstrap", &bootstrap])?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}
