//! `eventmart-demo` as a user runs it (`make demo`): the process starts the
//! embedded broker and registry, provisions topics, runs the generator and
//! every app, serves the dashboard; the page is loaded in headless Chromium
//! (Debian's `chromium`, installed by `make tools`), its rendered DOM is
//! checked and a screenshot taken; Ctrl-C (SIGINT) stops everything
//! cleanly after the demo's own checks pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Kills the demo if the test fails before stopping it.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn get(url: &str, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(&addr)?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {head}").into());
    }
    Ok(body.to_owned())
}

fn chromium() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return Ok(String::from_utf8(out.stdout)?.trim().into());
        }
    }
    Err("headless Chromium is needed for the dashboard test: `make tools` installs Debian's chromium".into())
}

fn headless(args: &[&str]) -> Result<std::process::Output, Box<dyn std::error::Error>> {
    let profile = tempfile::tempdir()?;
    let out = Command::new(chromium()?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(out)
}

#[test]
fn the_demo_runs_everything_serves_the_dashboard_and_stops_cleanly_on_ctrl_c() -> TestResult {
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_eventmart-demo"))
            .args([
                "--rate",
                "80",
                "--summary-every",
                "2",
                "--dashboard-addr",
                "127.0.0.1:0",
                "--lifecycle-scale",
                "0.05",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let child = &mut demo.0;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().ok_or("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let next = |seen: &mut Vec<String>, want: &dyn Fn(&str) -> bool, within: Duration| {
        let deadline = Instant::now() + within;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
        None
    };
    let url_line = next(
        &mut seen,
        &|l| l.starts_with("dashboard at "),
        Duration::from_secs(90),
    )
    .ok_or_else(|| format!("no dashboard line: {seen:?}"))?;
    let url = url_line
        .trim_start_matches("dashboard at ")
        .split_whitespace()
        .next()
        .ok_or("url")?
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "loopback by default: {url}"
    );
    assert!(seen.iter().any(|l| l.starts_with("embedded broker")));
    assert!(
        seen.iter().any(|l| l.starts_with("topics: 10 created")),
        "{seen:?}"
    );

    // Wait until orders have been delivered (lifecycles compressed 20×).
    next(
        &mut seen,
        &|l| l.contains("delivered ") && !l.contains("delivered 0 "),
        Duration::from_secs(90),
    )
    .ok_or_else(|| format!("no delivered orders: {seen:?}"))?;

    let summary: serde_json::Value = serde_json::from_str(&get(&url, "/api/summary")?)?;
    let apps = summary["apps"].as_array().ok_or("apps")?;
    assert_eq!(apps.len(), 7);
    assert!(apps.iter().all(|a| a["state"] == "Running"), "{apps:?}");
    assert!(
        !summary["events_per_minute"]
            .as_array()
            .ok_or("epm")?
            .is_empty()
    );
    assert!(summary["order_funnel"]["1-placed"].as_i64().unwrap_or(0) > 0);
    let metrics = get(&url, "/metrics")?;
    assert!(metrics.contains("brook_records_processed_total{application_id=\"eventmart-audit\""));

    // The page as a browser renders it: the script fills every section.
    let dom = headless(&["--dump-dom", &url])?;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for want in [
        "PAGE_VIEW",
        "ADD_TO_CART",
        "Electronics",
        "MOBILE",
        "delivered",
        "order-analytics",
        "Running",
        "updated ",
    ] {
        assert!(
            dom.contains(want),
            "the rendered page lacks {want:?}:\n{dom}"
        );
    }
    assert!(
        !dom.contains("waiting for data"),
        "a section stayed empty:\n{dom}"
    );
    assert!(!dom.contains(">cannot reach the apps"), "{dom}");
    let shot_dir = tempfile::tempdir()?;
    let shot = shot_dir.path().join("dashboard.png");
    let out = headless(&[&format!("--screenshot={}", shot.display()), &url])?;
    let png = std::fs::read(&shot).map_err(|e| {
        format!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    assert_eq!(&png[1..4], b"PNG");
    // A blank page compresses to a few KB; the charts and tables do not.
    assert!(
        png.len() > 40_000,
        "screenshot of {} bytes looks empty",
        png.len()
    );
    if let Ok(dir) = std::env::var("BROOK_SCREENSHOT_DIR") {
        std::fs::copy(&shot, std::path::Path::new(&dir).join("dashboard.png"))?;
    }

    // Ctrl-C: the demo stops the generator, checks, stops the apps.
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill()?;
            return Err("the demo did not stop within 120 s of SIGINT".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(status.success(), "exit {status}: {seen:?}");
    let checks: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(checks.len(), 2, "{seen:?}");
    assert!(checks.iter().all(|l| l.starts_with("ok ")), "{checks:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("stopped. generated ")),
        "{seen:?}"
    );
    Ok(())
}
