//! The `brook-state` command on a state directory written by the runtime:
//! listing stores, inspecting one read-only, wiping; and clear errors with
//! exit codes for bad arguments and missing stores.

use std::error::Error;
use std::process::{Command, Output};

use brook_runtime::driver::TopologyTestDriver;
use brook_topology::serdes::{Json, Utf8};
use brook_topology::{Consumed, Grouped, Materialized, StreamsBuilder};

type TestResult = Result<(), Box<dyn Error>>;

fn brook_state(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_brook-state"))
        .args(args)
        .output()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn stores_are_listed_inspected_and_wiped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = StreamsBuilder::new();
    b.stream("words", Consumed::with(Utf8, Utf8))
        .group_by(|_, w| w.clone(), Grouped::with(Utf8, Utf8))
        .count(Materialized::named("counts", Utf8, Json::<i64>::new()));
    let driver = TopologyTestDriver::builder(b.build()?)
        .application_id("cli")
        .state_dir(dir.path())
        .build()?;
    let words = driver.input_topic("words", Utf8, Utf8);
    for w in ["apple", "pear", "apple", "fig"] {
        words.pipe_input("k".into(), w.into(), 1)?;
    }
    drop(driver);
    let state = dir.path().to_str().ok_or("path")?;
    let base = ["--state-dir", state, "--application-id", "cli"];

    let out = brook_state(&[&["stores"][..], &base].concat())?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("1_0\tcounts\t"), "{stdout}");

    let out = brook_state(&[&["inspect"][..], &base, &["--store", "counts"]].concat())?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "1_0\t3");

    let out = brook_state(
        &[
            &["inspect"][..],
            &base,
            &["--store", "counts", "--op", "get", "--key", "apple"],
        ]
        .concat(),
    )?;
    assert_eq!(text(&out).0.trim(), "1_0\tapple\t2");

    let out = brook_state(
        &[
            &["inspect"][..],
            &base,
            &[
                "--store", "counts", "--op", "range", "--from", "b", "--to", "z",
            ],
        ]
        .concat(),
    )?;
    assert_eq!(text(&out).0, "1_0\tfig\t1\n1_0\tpear\t1\n");

    // Errors: a missing store (1), an unknown option (2).
    let out = brook_state(&[&["inspect"][..], &base, &["--store", "nope"]].concat())?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("has a store \"nope\""),
        "{}",
        text(&out).1
    );
    let out = brook_state(&["inspect", "--colour", "red"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("unknown option --colour"));

    let out = brook_state(&[&["wipe"][..], &base].concat())?;
    assert!(out.status.success(), "{}", text(&out).1);
    let out = brook_state(&[&["stores"][..], &base].concat())?;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("no stores under"));
    Ok(())
}
