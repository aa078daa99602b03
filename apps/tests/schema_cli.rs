//! `brook-schema-registry` and `brook-schema` as processes: check before
//! deploying, register, basic auth, exit codes; the registry on a Kafka
//! topic surviving a restart; and the seed's dual-write migration against
//! the registry binary and a real Kafka protocol broker.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use brook_testkit::TestBroker;

type TestResult = Result<(), Box<dyn Error>>;

/// This package's directory, as cargo gives it to the running test: a test
/// binary reused from a shared target directory may have been built in
/// another checkout, whose files `env!("CARGO_MANIFEST_DIR")` would name.
fn file(relative: &str) -> String {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo test");
    format!("{dir}/{relative}")
}

fn v1() -> String {
    file("../schemas/subjects/ecommerce-events-value/v1.avsc")
}

fn v2() -> String {
    file("../schemas/subjects/ecommerce-events-value/v2.avsc")
}

const SUBJECT: &str = "ecommerce-events-value";

/// A registry process; killed (SIGTERM, then waited for) when dropped.
struct RegistryProcess {
    child: Child,
    url: String,
}

impl RegistryProcess {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Self, Box<dyn Error>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_brook-schema-registry"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env_remove("BROOK_BOOTSTRAP")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(RegistryProcess { child, url })
    }

    fn stop(&mut self) -> TestResult {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        assert!(status.success(), "the registry exited with {status}");
        Ok(())
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn schema_cli(args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_brook-schema"))
        .args(args)
        .env_remove("BROOK_REGISTRY_BASIC_AUTH")
        .envs(env.iter().copied())
        .output()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn check_then_register_with_exit_codes_and_reasons() -> TestResult {
    let registry = RegistryProcess::start(&["--storage", "memory"], &[])?;
    let url = registry.url.as_str();
    let check = |file: &str| {
        schema_cli(
            &[
                "check",
                "--registry",
                url,
                "--subject",
                SUBJECT,
                "--file",
                file,
            ],
            &[],
        )
    };

    let out = check(&v1())?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no versions yet"), "{}", text(&out));
    let out = schema_cli(
        &[
            "register",
            "--registry",
            url,
            "--subject",
            SUBJECT,
            "--file",
            &v1(),
        ],
        &[],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("id 1 (latest version 1)"),
        "{}",
        text(&out)
    );

    let out = check(&v2())?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("compatible with ecommerce-events-value (BACKWARD)"),
        "{}",
        text(&out)
    );

    let out = check(&file("tests/fixtures/user_event_v3_breaking.avsc"))?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT compatible"), "{}", text(&out));
    assert!(text(&out).contains("session_id"), "{}", text(&out));
    let out = schema_cli(
        &[
            "register",
            "--registry",
            url,
            "--subject",
            SUBJECT,
            "--file",
            &file("tests/fixtures/user_event_v3_breaking.avsc"),
        ],
        &[],
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT registered"), "{}", text(&out));

    let out = check(&file("tests/fixtures/not_avro.avsc"))?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a valid Avro schema"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("strnig"), "{}", text(&out));

    let out = schema_cli(&["check", "--registry", url, "--file", &v2()], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = schema_cli(&["frobnicate"], &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = schema_cli(&["register-shipped", "--registry", url], &[])?;
    assert!(out.status.success(), "{}", text(&out));
    for subject in ["eventmart-orders-value", "eventmart-audit-value"] {
        assert!(text(&out).contains(subject), "{}", text(&out));
    }
    assert!(
        text(&out).contains("ecommerce-events-value: id 2 (latest version 2)"),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn basic_auth_and_bad_settings() -> TestResult {
    let env = [("BROOK_REGISTRY_BASIC_AUTH", "ops:s3cret")];
    let registry = RegistryProcess::start(&["--storage", "memory"], &env)?;
    let args = [
        "check",
        "--registry",
        &registry.url,
        "--subject",
        SUBJECT,
        "--file",
        &v1(),
    ];
    let out = schema_cli(&args, &[])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));
    let out = schema_cli(&args, &env)?;
    assert!(out.status.success(), "{}", text(&out));
    // Bad settings: exit code 2 with the reason, and a password given in
    // the environment never shows in what the registry prints.
    for (args, env, expected) in [
        (&["--storage", "kafka"][..], &env[..], "needs --bootstrap"),
        (
            &["--storage", "memory", "--listen", "nowhere"][..],
            &[][..],
            "--listen",
        ),
        (
            &["--storage", "memory"][..],
            &[("BROOK_REGISTRY_BASIC_AUTH", "no-colon")][..],
            "user:password",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_brook-schema-registry"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("BROOK_BOOTSTRAP")
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("s3cret"), "{}", text(&out));
    }
    Ok(())
}

#[test]
fn a_registry_on_kafka_survives_a_restart_and_the_migration_runs_against_it() -> TestResult {
    let broker = TestBroker::kafka()?;
    let storage = [
        "--bootstrap",
        broker.bootstrap(),
        "--topic",
        "_schemas_cli_test",
    ];
    let mut registry = RegistryProcess::start(&storage, &[])?;
    let out = schema_cli(
        &[
            "register",
            "--registry",
            &registry.url,
            "--subject",
            SUBJECT,
            "--file",
            &v1(),
        ],
        &[],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    registry.stop()?;

    let registry = RegistryProcess::start(&storage, &[])?;
    // Still there after the restart: v2 is checked against it.
    let out = schema_cli(
        &[
            "check",
            "--registry",
            &registry.url,
            "--subject",
            SUBJECT,
            "--file",
            &v2(),
        ],
        &[],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("latest: 1"), "{}", text(&out));

    let out = schema_cli(
        &[
            "migrate",
            "--registry",
            &registry.url,
            "--bootstrap",
            broker.bootstrap(),
            "--count",
            "300",
        ],
        &[],
    )?;
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("before:   latest version 1 (id 1)"),
        "{report}"
    );
    assert!(
        report
            .contains("v1 consumer read 600 of 600: 300 written with id 1, 300 written with id 2"),
        "{report}"
    );
    assert!(report.contains("v2 consumer read 600 of 600"), "{report}");
    assert!(report.contains("at their defaults: yes"), "{report}");
    Ok(())
}
