//! The JSON-lines file source on the Memory cluster: keys and timestamps
//! from fields, invalid lines dead-lettered with file and line number, an
//! incomplete last line waiting for its newline, a restart resuming from
//! the stored position, a crashed transaction leaving nothing and being
//! read again, and a truncated file read from the start.

use std::io::Write;
use std::sync::Arc;

use brook_connectors::source::{FileSource, FileSourceConfig};
use brook_runtime::cluster::{Cluster, ProducedRecord};
use brook_runtime::memory::MemoryCluster;
use brook_runtime::task::dead_letter_error;
use brook_topology::{Headers, TopicSpec};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type TestResultT<T> = Result<T, Box<dyn std::error::Error>>;

fn append(path: &std::path::Path, text: &str) -> TestResult {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn values(cluster: &MemoryCluster, topic: &str) -> TestResultT<Vec<String>> {
    Ok(cluster
        .records(topic)?
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
        })
        .collect())
}

fn config(path: &std::path::Path, exactly_once: bool) -> FileSourceConfig {
    let mut c = FileSourceConfig::new("orders-file", path, "orders");
    c.key_field = Some("order_id".into());
    c.timestamp_field = Some("ts".into());
    c.max_lines = 4;
    c.exactly_once = exactly_once;
    c
}

fn line(n: u32) -> String {
    format!(
        "{{\"order_id\": \"O{n}\", \"ts\": {}, \"total\": {n}}}\n",
        1_000 + n
    )
}

#[test]
fn lines_become_records_and_a_restart_resumes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("orders.jsonl");
    let cluster = Arc::new(MemoryCluster::new());
    cluster.create_topics(&[TopicSpec::new("orders", 2)])?;
    append(
        &path,
        &format!("{}{}not json at all\n\n{}", line(1), line(2), line(3)),
    )?;
    append(&path, "{\"order_id\": \"O4\", \"ts\"")?; // still being written

    let mut source = FileSource::open(cluster.clone(), config(&path, false))?;
    while source.poll()? > 0 {}
    assert_eq!(source.position().line, 5);
    let records = cluster.records("orders")?;
    assert_eq!(records.len(), 3);
    let first = records
        .iter()
        .find(|r| r.record.key.as_deref() == Some(&b"O1"[..]))
        .ok_or("O1")?;
    assert_eq!(first.record.timestamp, 1_001);
    let letters = cluster.records("orders-file-dead-letters")?;
    assert_eq!(letters.len(), 1);
    let headers = &letters[0].record.headers;
    assert!(dead_letter_error(headers).unwrap().contains("invalid JSON"));
    assert_eq!(headers.last("brook.source.line").flatten(), Some(&b"3"[..]));

    // The last line gets its end; a restarted source resumes after line 5.
    append(&path, ": 1004, \"total\": 4}\n")?;
    drop(source);
    let mut source = FileSource::open(cluster.clone(), config(&path, false))?;
    assert_eq!(source.position().line, 5);
    for n in 5..=12 {
        append(&path, &line(n))?;
    }
    while source.poll()? > 0 {}
    let mut totals: Vec<u32> = values(&cluster, "orders")?
        .iter()
        .map(|v| {
            serde_json::from_str::<serde_json::Value>(v)
                .map(|j| j["total"].as_u64().unwrap_or(0) as u32)
        })
        .collect::<Result<_, _>>()?;
    totals.sort();
    assert_eq!(totals, (1..=12).collect::<Vec<u32>>());

    // A truncated (rotated) file is read from its start.
    std::fs::write(&path, line(100))?;
    drop(source);
    let mut source = FileSource::open(cluster.clone(), config(&path, false))?;
    assert_eq!(source.poll()?, 1);
    assert_eq!(source.position().line, 1);
    assert_eq!(cluster.records("orders")?.len(), 13);
    Ok(())
}

#[test]
fn exactly_once_a_crashed_poll_leaves_nothing_and_is_read_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("orders.jsonl");
    let cluster = Arc::new(MemoryCluster::new());
    cluster.create_topics(&[TopicSpec::new("orders", 2)])?;
    for n in 1..=6 {
        append(&path, &line(n))?;
    }
    let mut source = FileSource::open(cluster.clone(), config(&path, true))?;
    assert_eq!(source.poll()?, 4);
    // A process that died mid-transaction: it wrote lines 5 and 6 under
    // the source's transactional id and never committed.
    let mut zombie = cluster.transactional_producer("brook-source-orders-file")?;
    zombie.begin_transaction()?;
    for v in [line(5), line(6)] {
        zombie.send(ProducedRecord {
            topic: "orders".into(),
            partition: None,
            key: Some(b"zombie".to_vec()),
            value: Some(v.trim_end().as_bytes().to_vec()),
            timestamp: 0,
            headers: Headers::new(),
        })?;
    }
    drop(source);
    // The restart fences the zombie (its transaction aborts) and resumes
    // after line 4.
    let mut source = FileSource::open(cluster.clone(), config(&path, true))?;
    assert_eq!(source.position().line, 4);
    assert!(
        zombie.commit_transaction().is_err(),
        "the zombie must be fenced"
    );
    while source.poll()? > 0 {}
    let records = cluster.records("orders")?;
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.record.key.as_deref() != Some(&b"zombie"[..]))
    );
    Ok(())
}
