//! The results table, the ratios and goals, and the files under bench/results/.

use super::*;

/// One ratio or goal: `what` = `value` (a ratio of medians, or a measured
/// median) against `goal` (`None`: reported only).
pub(crate) struct Comparison {
    pub(crate) what: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) goal: Option<(f64, bool)>,
}

/// Ratios of medians measured side by side in this run, and the goals of
/// the performance issue. `bool` in a goal: higher is better.
pub(crate) fn compare(samples: &[Sample]) -> Vec<Comparison> {
    let median = |name: &str| samples.iter().find(|s| s.name == name).map(Sample::median);
    let mut out = Vec::new();
    let mut ratio = |what: &str, a: &str, b: &str, goal: Option<f64>| {
        if let (Some(a), Some(b)) = (median(a), median(b))
            && b > 0.0
        {
            out.push(Comparison {
                what: what.to_owned(),
                value: a / b,
                unit: "×",
                goal: goal.map(|g| (g, true)),
            });
        }
    };
    ratio(
        "e2e stateless: brook / raw client",
        "e2e_stateless_mock",
        "raw_consume_produce_mock",
        Some(0.8),
    );
    ratio(
        "e2e windowed count: brook / raw client",
        "e2e_windowed_mock",
        "raw_consume_produce_mock",
        Some(0.8),
    );
    // What caching (one update per key and window per commit) does to
    // brook's own end-to-end window count, side by side.
    ratio(
        "e2e window count, at-least-once: cached / uncached",
        "e2e_windowed_cached_mock",
        "e2e_windowed_mock",
        None,
    );
    ratio(
        "e2e window count, exactly-once: cached / uncached",
        "e2e_windowed_cached_mock_eos",
        "e2e_windowed_mock_eos",
        None,
    );
    // Per core: records per CPU-second of each framework's threads. The
    // wall-clock ratios below are capped by the broker both share (the raw
    // client's ratio to Quix is the most any client can show there).
    ratio(
        "e2e stateless: brook / Quix Streams, per CPU-second",
        "e2e_stateless_mock_per_cpu",
        "quix_stateless_mock_per_cpu",
        Some(10.0),
    );
    ratio(
        "e2e windowed count: brook / Quix Streams, per CPU-second",
        "e2e_windowed_mock_per_cpu",
        "quix_windowed_mock_per_cpu",
        Some(10.0),
    );
    ratio(
        "e2e stateless: brook / Quix Streams, wall clock",
        "e2e_stateless_mock",
        "quix_stateless_mock",
        None,
    );
    ratio(
        "e2e windowed count: brook / Quix Streams, wall clock",
        "e2e_windowed_mock",
        "quix_windowed_mock",
        None,
    );
    ratio(
        "raw client / Quix Streams (stateless), wall clock",
        "raw_consume_produce_mock",
        "quix_stateless_mock",
        None,
    );
    ratio(
        "raw client / Quix Streams (stateless), per CPU-second",
        "raw_consume_produce_mock_per_cpu",
        "quix_stateless_mock_per_cpu",
        None,
    );
    ratio(
        "e2e stateless: brook / raw client, per CPU-second",
        "e2e_stateless_mock_per_cpu",
        "raw_consume_produce_mock_per_cpu",
        None,
    );
    ratio(
        "e2e stateless: exactly-once / at-least-once",
        "e2e_stateless_mock_eos",
        "e2e_stateless_mock",
        None,
    );
    let mut measured = |what: &str, name: &str, unit, goal: f64, higher: bool| {
        if let Some(v) = median(name) {
            out.push(Comparison {
                what: what.to_owned(),
                value: v,
                unit,
                goal: Some((goal, higher)),
            });
        }
    };
    measured(
        "engine stateless, records/s per core",
        "engine_stateless",
        "records/s",
        2_000_000.0,
        true,
    );
    measured(
        "engine windowed count (RocksDB), records/s per core",
        "engine_windowed_count",
        "records/s",
        500_000.0,
        true,
    );
    measured(
        "restore, records/s",
        "restore_rocksdb",
        "records/s",
        500_000.0,
        true,
    );
    measured(
        "RSS with 1M keys, MiB",
        "rss_after_count_1m_keys",
        "MiB",
        512.0,
        false,
    );
    out.extend(kafka::comparisons(&median));
    out
}

pub(crate) fn render_comparisons(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "\n| comparison (medians, this run) | measured | goal | met |\n|---|---:|---:|---|\n",
    );
    for c in comparisons {
        let value = if c.unit == "×" {
            format!("{:.2}×", c.value)
        } else {
            format!("{:.0} {}", c.value, c.unit)
        };
        let (goal, met) = match c.goal {
            Some((g, higher)) => {
                let met = if higher { c.value >= g } else { c.value <= g };
                let g = if c.unit == "×" {
                    format!("{} {g}×", if higher { "≥" } else { "≤" })
                } else if higher {
                    format!("≥ {g:.0}")
                } else {
                    format!("≤ {g:.0}")
                };
                (g, if met { "yes" } else { "no" })
            }
            None => (String::from("—"), ""),
        };
        let _ = writeln!(out, "| {} | {value} | {goal} | {met} |", c.what);
    }
    out
}

pub(crate) fn render_table(samples: &[Sample], runs: usize, records: usize, label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "brook-bench {label}: {runs} runs, {records} records of {VALUE_BYTES} B over {PARTITIONS} partitions\n"
    );
    let _ = writeln!(out, "| benchmark | median | min | max | unit |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for sample in samples {
        let sorted = sample.sorted();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            sample.name,
            sample.median(),
            sorted[0],
            sorted[sorted.len() - 1],
            sample.unit
        );
    }
    out
}

pub(crate) fn write_results(
    dir: &str,
    samples: &[Sample],
    comparisons: &[Comparison],
    table: &str,
    runs: usize,
    records: usize,
    label: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let stem = format!("{dir}/bench-{secs}");
    let json = serde_json::json!({
        "label": label,
        "unix_time": secs,
        "runs": runs,
        "records": records,
        "value_bytes": VALUE_BYTES,
        "partitions": PARTITIONS,
        "results": samples.iter().map(|s| serde_json::json!({
            "name": s.name,
            "unit": s.unit,
            "median": s.median(),
            "runs": s.runs,
        })).collect::<Vec<_>>(),
        "comparisons": comparisons.iter().map(|c| serde_json::json!({
            "what": c.what,
            "value": c.value,
            "unit": c.unit,
            "goal": c.goal.map(|(g, _)| g),
            "higher_is_better": c.goal.map(|(_, h)| h),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(format!("{stem}.json"), serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {stem}.json"))?;
    std::fs::write(format!("{stem}.md"), table).with_context(|| format!("writing {stem}.md"))?;
    let mut csv = String::from("benchmark,unit,median,min,max,runs\n");
    for s in samples {
        let sorted = s.sorted();
        let runs: Vec<String> = s.runs.iter().map(|r| format!("{r:.1}")).collect();
        let _ = writeln!(
            csv,
            "{},{},{:.1},{:.1},{:.1},{}",
            s.name,
            s.unit,
            s.median(),
            sorted[0],
            sorted[sorted.len() - 1],
            runs.join(" ")
        );
    }
    std::fs::write(format!("{stem}.csv"), csv).with_context(|| format!("writing {stem}.csv"))?;
    eprintln!("wrote {stem}.json, {stem}.md and {stem}.csv");
    Ok(())
}
