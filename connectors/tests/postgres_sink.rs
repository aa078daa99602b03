//! The PostgreSQL sink and source against a real server (Debian's
//! postgresql, started by the test): the sink's table is created from the
//! Avro schema, records upsert by key, tombstones delete, timestamps land
//! as TIMESTAMPTZ, and replaying the same input leaves the same table; the
//! source reads new rows by an incrementing column into a topic and a
//! restarted source resumes after the stored offset.

use std::sync::Arc;

use brook_connectors::postgres::{
    PostgresSource, PostgresSourceConfig, PostgresTable, to_postgres,
};
use brook_runtime::cluster::Cluster;
use brook_runtime::driver::TopologyTestDriver;
use brook_runtime::memory::MemoryCluster;
use brook_schemas::events::Event;
use brook_schemas::events::eventmart::{CustomerTier, UserEvent, UserEventType};
use brook_testkit::TestPostgres;
use brook_topology::serdes::{Json, Nullable, Utf8};
use brook_topology::{Consumed, StreamsBuilder};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
/// `(key, tier, timestamp)` rows.
type Rows = Vec<(String, Option<String>, String)>;

fn user(id: u32, event_type: UserEventType, tier: Option<CustomerTier>) -> UserEvent {
    UserEvent {
        event_id: format!("e{id}-{}", event_type.as_str()),
        event_type,
        user_id: format!("user_{id:04}"),
        timestamp: 1_795_398_725_123 + i64::from(id),
        email: Some(format!("u{id}@example.com")),
        name: Some(format!("User {id}")),
        country: Some("NL".into()),
        tier,
    }
}

/// Registers 10 users, upgrades the even ones, deletes every third.
fn run(table: Arc<PostgresTable>) -> TestResult {
    let b = StreamsBuilder::new();
    let users = b.stream(
        "eventmart-users",
        Consumed::with(Utf8, Nullable(Json::<UserEvent>::new())),
    );
    to_postgres(&users, table);
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("pg-sink")
        .build()?;
    let input = driver.input_topic("eventmart-users", Utf8, Nullable(Json::<UserEvent>::new()));
    for id in 0..10 {
        let u = user(id, UserEventType::Registered, Some(CustomerTier::Standard));
        input.pipe_input(u.key().to_owned(), Some(u.clone()), u.timestamp)?;
    }
    for id in (0..10).step_by(2) {
        let u = user(id, UserEventType::Updated, Some(CustomerTier::Gold));
        input.pipe_input(u.key().to_owned(), Some(u.clone()), u.timestamp)?;
    }
    for id in (0..10).step_by(3) {
        input.pipe_input(format!("user_{id:04}"), None, 0)?;
    }
    Ok(())
}

#[test]
fn a_table_mirrors_the_stream_by_key_and_replays_are_idempotent() -> TestResult {
    let pg = TestPostgres::start()?;
    let schema = apache_avro::Schema::parse_str(UserEvent::SCHEMA)?;
    let table = Arc::new(PostgresTable::open(&pg.conninfo(), "users", &schema)?);
    run(table.clone())?;
    let state = |table: &PostgresTable| -> TestResult<Rows> {
        Ok(table
            .query("SELECT key, tier, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM users ORDER BY key")?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    };
    let first = state(&table)?;
    let keys: Vec<&str> = first.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "user_0001",
            "user_0002",
            "user_0004",
            "user_0005",
            "user_0007",
            "user_0008"
        ]
    );
    assert_eq!(first[1].1.as_deref(), Some("GOLD"));
    assert_eq!(first[0].1.as_deref(), Some("STANDARD"));
    assert_eq!(first[0].2, "2026-11-23 01:52:05.124");
    let types = table.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
    )?;
    let types: Vec<(String, String)> = types.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(types[0], ("key".into(), "text".into()));
    assert!(
        types.contains(&("timestamp".into(), "timestamp with time zone".into())),
        "{types:?}"
    );

    // A replay of the whole input (a restarted application re-reading)
    // leaves the same table; so does reopening the existing table.
    let again = Arc::new(PostgresTable::open(&pg.conninfo(), "users", &schema)?);
    run(again.clone())?;
    assert_eq!(state(&again)?, first);
    Ok(())
}

#[test]
fn a_table_source_reads_new_rows_in_order_and_resumes() -> TestResult {
    let pg = TestPostgres::start()?;
    let mut client = postgres::Client::connect(&pg.conninfo(), postgres::NoTls)?;
    client.batch_execute(
        "CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, order_id TEXT NOT NULL, total DOUBLE PRECISION)",
    )?;
    let insert = |client: &mut postgres::Client, from: i32, to: i32| -> TestResult {
        for n in from..to {
            client.execute(
                "INSERT INTO outbox (order_id, total) VALUES ($1, $2)",
                &[&format!("O{n}"), &f64::from(n)],
            )?;
        }
        Ok(())
    };
    insert(&mut client, 0, 5)?;
    for exactly_once in [false, true] {
        let cluster: Arc<dyn Cluster> = Arc::new(MemoryCluster::new());
        cluster.create_topics(&[brook_topology::TopicSpec::new("orders", 2)])?;
        let mut config = PostgresSourceConfig::new("outbox", "outbox", "id", "orders");
        config.key_column = Some("order_id".into());
        config.max_rows = 2;
        config.exactly_once = exactly_once;
        let mut source = PostgresSource::open(cluster.clone(), &pg.conninfo(), config.clone())?;
        // The second round (a fresh cluster) finds the 8 rows of the first.
        let first = if exactly_once { 8 } else { 5 };
        while source.poll()? > 0 {}
        assert_eq!(source.offset(), first);
        drop(source);
        if !exactly_once {
            insert(&mut client, 5, 8)?;
        }
        let mut source = PostgresSource::open(cluster.clone(), &pg.conninfo(), config)?;
        assert_eq!(source.offset(), first, "resumes after the stored offset");
        while source.poll()? > 0 {}
        let mut consumer =
            cluster.consumer("check", brook_runtime::cluster::Isolation::ReadCommitted)?;
        let tps: Vec<_> = (0..2)
            .map(|p| brook_runtime::cluster::TopicPartition::new("orders", p))
            .collect();
        consumer.assign(&tps)?;
        let mut rows = Vec::new();
        for _ in 0..10 {
            for r in consumer.poll(100)? {
                let value: serde_json::Value =
                    serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
                assert_eq!(
                    r.key.as_deref(),
                    Some(value["order_id"].as_str().unwrap_or("").as_bytes())
                );
                rows.push(value["id"].as_i64().unwrap_or(-1));
            }
        }
        rows.sort();
        assert_eq!(
            rows,
            (1..=8).collect::<Vec<i64>>(),
            "exactly_once = {exactly_once}"
        );
    }
    Ok(())
}
