//! The demo pipeline against a real broker: counts converge to what the
//! generator produced and malformed records land in the dead-letter topic.

use std::time::Duration;

use brook_apps::demo::{self, DemoConfig, Topics};
use brook_testkit::TestBroker;

#[test]
fn demo_counts_match_the_generator_and_bad_records_are_dead_lettered() {
    let broker = TestBroker::mock().expect("mock cluster");
    let topics = Topics::new(broker.namespace().prefix());
    broker.create_topics(&topics.specs()).expect("topics");
    let config = DemoConfig {
        topics,
        events: 2_000,
        malformed: 2,
        timeout: Duration::from_secs(60),
        ..DemoConfig::default()
    };
    let report = demo::run(broker.config(), &config).expect("demo run");
    assert_eq!(report.counts.values().sum::<u64>(), 2_000);
    assert_eq!(report.dead_letters.len(), 2);
    assert!(report.dead_letters.values().all(|l| l.contains("error")));
    let (rekey, count) = (report.stages[0].1, report.stages[1].1);
    assert_eq!(rekey.consumed, 2_002, "every input record was read once");
    assert_eq!(rekey.dead_lettered, 2);
    assert_eq!(
        count.consumed, 2_000,
        "every valid view was repartitioned once"
    );
}
