"""Chart and README section from the newest `make bench` result.

usage: report.py RESULTS_DIR README

Reads the newest RESULTS_DIR/bench-*.json, writes a PNG chart next to it
(throughput medians with min-max whiskers, brook beside the raw client and
Quix Streams), and replaces the part of README between
`<!-- bench:begin -->` and `<!-- bench:end -->` with the setup, the key
numbers, the ratios and goals, and the chart.
"""

import glob
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

# (name in the results, label in the chart and table, group)
THROUGHPUT = [
    ("engine_stateless", "engine: stateless map/filter", "brook engine (Memory cluster)"),
    ("engine_windowed_count", "engine: 1 s window count, RocksDB", "brook engine (Memory cluster)"),
    ("engine_stream_table_join", "engine: stream-table join", "brook engine (Memory cluster)"),
    ("engine_revenue_per_category", "engine: EventMart revenue per category (Avro)", "brook engine (Memory cluster)"),
    ("e2e_stateless_mock", "e2e stateless, at-least-once", "brook end to end"),
    ("e2e_stateless_mock_eos", "e2e stateless, exactly-once", "brook end to end"),
    ("e2e_windowed_mock", "e2e window count, at-least-once", "brook end to end"),
    ("e2e_windowed_mock_eos", "e2e window count, exactly-once", "brook end to end"),
    ("e2e_windowed_cached_mock", "e2e window count, cached, at-least-once", "brook end to end"),
    ("e2e_windowed_cached_mock_eos", "e2e window count, cached, exactly-once", "brook end to end"),
    ("raw_consume_produce_mock", "raw librdkafka consume→produce", "baselines"),
    ("quix_stateless_mock", "Quix Streams stateless", "baselines"),
    ("quix_windowed_mock", "Quix Streams window count", "baselines"),
    ("restore_rocksdb", "restore 1M-record changelog", "brook state"),
]
COLORS = {
    "brook engine (Memory cluster)": "#2563eb",
    "brook end to end": "#16a34a",
    "baselines": "#9ca3af",
    "brook state": "#7c3aed",
}


def fmt(v, unit):
    if unit == "records/s":
        return f"{v / 1000:,.0f}k records/s" if v >= 1000 else f"{v:,.0f} records/s"
    if unit == "µs":
        return f"{v / 1000:,.1f} ms" if v >= 1000 else f"{v:,.0f} µs"
    return f"{v:,.0f} {unit}"


FRAMEWORKS = [("brook", "brook"), ("kstreams", "Kafka Streams 4.4.0"),
              ("quix", "Quix Streams 3.28.1"), ("raw", "raw librdkafka loop")]
FRAMEWORK_COLORS = {"brook": "#16a34a", "kstreams": "#f97316", "quix": "#9ca3af", "raw": "#2563eb"}
WORKLOADS = [("stateless", "stateless map/filter"), ("windowed_count", "1 s window count"),
             ("stream_table_join", "stream-table join"),
             ("revenue_per_category", "revenue per category (Avro)")]
GUARANTEES = [("alos", "at_least_once"), ("eos", "exactly_once_v2")]


def kafka_section(by_name, stem, rel):
    """The real-broker group (brook-bench --only kafka): tables and a chart."""
    def med(name):
        r = by_name.get(name)
        return None if r is None else r["median"]

    rows = []
    for w, wlabel in WORKLOADS:
        for g, glabel in GUARANTEES:
            for t in (1, 2):
                for f, flabel in FRAMEWORKS:
                    n = f"kafka_{w}_{f}_{g}_{t}t"
                    if n in by_name:
                        rows.append((wlabel, glabel, t, flabel, n))
    if not rows:
        return []
    runs = len(by_name[rows[0][4]]["runs"])
    out = [
        "### On Apache Kafka 4.4, side by side with Kafka Streams",
        "",
        f"`brook-bench --only kafka` ({runs} rounds; medians): each framework runs as its own "
        "process against one Kafka 4.4.0 broker (`brook-kafka`: one KRaft node, JVM "
        "`-Xms1g -Xmx1g -XX:+UseG1GC`) on the same input topics (16 partitions, 100 keys, "
        "100-byte values; EventMart's generator clicks for the revenue app), 100,000 "
        "untimed warm-up records then 300,000 timed ones per run, 100 ms commits. Kafka "
        "Streams 4.4.0 (`bench/kstreams/`, JVM `-Xms1g -Xmx1g -XX:+UseG1GC`, OpenJDK 17) "
        "runs the generic workloads without its record cache (`statestore.cache.max.bytes=0`), "
        "as brook runs them uncached, and EventMart's revenue app, which caches "
        "(`with_caching`), with its default 10 MiB cache; that run ends when the windows' "
        "latest counts add up to every purchase. Client settings equal where both expose them "
        "(1,000 records per poll, `linger.ms` 5, `batch.size` 1,000,000, no compression, "
        "`acks=all`). Per CPU-second: timed records over the CPU time (user + system) of "
        "the framework's whole process, JIT and GC included; the broker's CPU is shown "
        "beside it as a share of the machine's 2 cores, which it shares with the "
        "framework and the harness.",
        "",
        "| workload | guarantee | threads | framework | records/s | per CPU-second | "
        "peak RSS | broker CPU |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for wlabel, glabel, t, flabel, n in rows:
        out.append(
            f"| {wlabel} | {glabel} | {t} | {flabel} | {fmt(med(n), 'records/s')} | "
            f"{fmt(med(n + '_per_cpu'), 'records/s').replace('records/s', 'records/CPU-s')} | "
            f"{med(n + '_peak_rss'):,.0f} MiB | {med(n + '_broker_cpu'):,.0f}% |")
    lat = [(flabel, f"kafka_latency_eos_{f}") for f, flabel in FRAMEWORKS
           if f"kafka_latency_eos_{f}_p50" in by_name]
    if lat:
        out += ["", "End-to-end latency, stateless, exactly_once_v2, 100 ms commits, a steady "
                "10,000 records/s for 10 s (after the first result and 5 s more), from the "
                "input record being sent (its timestamp) to its result being readable by a "
                "read_committed consumer:", "",
                "| framework | p50 | p99 | p99.9 |", "|---|---:|---:|---:|"]
        for flabel, n in lat:
            out.append(f"| {flabel} | {med(n + '_p50'):,.0f} ms | {med(n + '_p99'):,.0f} ms | "
                       f"{med(n + '_p999'):,.0f} ms |")
    state = [(flabel, f"kafka_state_{f}") for f, flabel in FRAMEWORKS
             if f"kafka_state_{f}_restore" in by_name]
    if state:
        out += ["", "State: a count per key over 1M distinct keys (at_least_once, one thread). "
                "Restore: restarted on an empty state directory, from the process's start to "
                "the first result for a new record that carries the restored count. Recovery: "
                "SIGKILLed and restarted at once, with its state directory or without, from the "
                "kill to that first result. Both join the consumer group as static members "
                "(group.instance.id, the same for every process of a framework), so a "
                "restarted process gets its partitions back without waiting for the killed "
                "one's 10 s session to time out:", "",
                "| framework | restore | recovery with state dir | recovery without |",
                "|---|---:|---:|---:|"]
        for flabel, n in state:
            out.append(f"| {flabel} | {med(n + '_restore'):,.1f} s | "
                       f"{med(n + '_recover_with_state'):,.1f} s | "
                       f"{med(n + '_recover_without_state'):,.1f} s |")
    # Chart: per CPU-second, one thread, by workload and guarantee.
    groups = [(w, wl, g, gl) for w, wl in WORKLOADS for g, gl in GUARANTEES
              if f"kafka_{w}_brook_{g}_1t" in by_name]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(groups) * len(FRAMEWORKS) / 2 + 2))
    height = 0.2
    for i, (f, flabel) in enumerate(FRAMEWORKS):
        ys, vs = [], []
        for j, (w, _, g, _) in enumerate(groups):
            v = med(f"kafka_{w}_{f}_{g}_1t_per_cpu")
            if v is not None:
                ys.append(len(groups) - 1 - j + (1.5 - i) * height)
                vs.append(v)
        ax.barh(ys, vs, height=height, color=FRAMEWORK_COLORS[f], label=flabel)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{wl}, {gl}" for _, wl, _, gl in groups][::-1], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("records per CPU-second of the framework's process (log scale; median)")
    ax.set_title("On Apache Kafka 4.4, one stream thread, same broker and data", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(stem + "-kafka.png", dpi=110)
    print(f"wrote {stem}-kafka.png")
    out += ["", f"![make bench on Kafka]({rel(stem + '-kafka.png')})", ""]
    return out


def main():
    results_dir, readme = sys.argv[1], sys.argv[2]
    # Newest by the time in the name (bench-<unix time>): a clone's files
    # all have the checkout's mtime.
    def written_at(path):
        stem = os.path.basename(path)[len("bench-"):-len(".json")]
        return int(stem) if stem.isdigit() else 0

    files = sorted(glob.glob(os.path.join(results_dir, "bench-*.json")), key=written_at)
    if not files:
        raise SystemExit(f"no bench-*.json in {results_dir}")
    path = files[-1]
    with open(path) as f:
        data = json.load(f)
    by_name = {r["name"]: r for r in data["results"]}
    stem = path[: -len(".json")]

    rows = [(n, label, group) for n, label, group in THROUGHPUT if n in by_name]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.8))
    names = [label for _, label, _ in rows][::-1]
    medians = [by_name[n]["median"] for n, _, _ in rows][::-1]
    lows = [m - min(by_name[n]["runs"]) for (n, _, _), m in zip(rows[::-1], medians)]
    highs = [max(by_name[n]["runs"]) - m for (n, _, _), m in zip(rows[::-1], medians)]
    colors = [COLORS[g] for _, _, g in rows][::-1]
    ax.barh(names, medians, xerr=[lows, highs], color=colors, capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("records/s (log scale; median, whiskers min-max)")
    ax.set_title(f"make bench {data['label']}: {data['runs']} runs, {data['records']:,} records of "
                 f"{data['value_bytes']} B\none stream thread, 2-core machine", fontsize=10)
    for y, m in enumerate(medians):
        ax.text(m, y, f"  {m / 1000:,.0f}k", va="center", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    ax.legend(handles, COLORS.keys(), loc="upper center", bbox_to_anchor=(0.4, -0.13),
              ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    print(f"wrote {stem}.png")

    rel = lambda p: os.path.relpath(p, os.path.dirname(os.path.abspath(readme)))  # noqa: E731
    lines = [
        BEGIN,
        "",
        f"Latest run: `{rel(path)}` (label `{data['label']}`, {data['runs']} runs, "
        f"{data['records']:,} records of {data['value_bytes']} B keyed by 100 keys over "
        f"{data['partitions']} partitions; medians). Setup: this project's 2-core, 24 GiB "
        f"machine ({platform.machine()}), release build, one stream thread; the engine "
        "workloads run on the in-memory cluster, the end-to-end ones and both baselines on "
        "librdkafka's mock cluster in the benchmark's process, on the same data; Quix "
        "Streams 3.28.1 runs in a Python 3 venv. Generated by `bench/report.py`.",
        "",
        "Latency: for the engine, per record from the poll that returned it to its output "
        "being sent (each record waits for its batch of 1,000); end to end (at-least-once), "
        "from the input record being sent to its output arriving at a consumer, at a steady "
        "20,000 records/s.",
        "",
        "Per CPU-second: records divided by the CPU time of the framework's own threads over the "
        "timed interval (brook's stream thread and its clients' librdkafka threads; the whole "
        "Quix process); the mock broker's threads are not counted. The wall-clock ratios to "
        "Quix Streams are capped by the broker both share in this process: no client gets past "
        "the raw client's ratio.",
        "",
        "| workload | median | p50 / p99 latency | peak RSS of the run's process |",
        "|---|---:|---:|---:|",
    ]
    for n, label, _ in rows:
        r = by_name[n]
        lat = ""
        base = n.removesuffix("_mock")
        if f"{base}_latency_p50" in by_name:
            p50, p99 = by_name[base + "_latency_p50"], by_name[base + "_latency_p99"]
            lat = f"{fmt(p50['median'], p50['unit'])} / {fmt(p99['median'], p99['unit'])}"
        rss = ""
        if f"{base}_peak_rss" in by_name:
            rss = fmt(by_name[base + "_peak_rss"]["median"], "MiB")
        lines.append(f"| {label} | {fmt(r['median'], r['unit'])} | {lat} | {rss} |")
    for n, label in [("rss_before_count_input_only", "process RSS, input only"),
                     ("rss_after_count_1m_keys", "process RSS after counting 1M keys into RocksDB")]:
        if n in by_name:
            lines.append(f"| {label} | {fmt(by_name[n]['median'], by_name[n]['unit'])} | | |")
    comps = data.get("comparisons", [])
    if comps:
        lines += ["", "| comparison | measured | goal | met |", "|---|---:|---:|---|"]
        for c in comps:
            value = f"{c['value']:.2f}×" if c["unit"] == "×" else fmt(c["value"], c["unit"])
            goal, met = "—", ""
            if c["goal"] is not None:
                higher = c["higher_is_better"]
                ok = c["value"] >= c["goal"] if higher else c["value"] <= c["goal"]
                sign = "≥ " if higher else "≤ "
                goal = (f"{sign}{c['goal']:g}×" if c["unit"] == "×"
                        else sign + fmt(c["goal"], c["unit"]))
                met = "yes" if ok else "no"
            lines.append(f"| {c['what']} | {value} | {goal} | {met} |")
    lines += ["", f"![make bench]({rel(stem + '.png')})", ""]
    lines += kafka_section(by_name, stem, rel)
    lines += [END]
    with open(readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w") as f:
        f.write(head + "\n".join(lines) + tail)
    print(f"updated the benchmark section of {readme}")


if __name__ == "__main__":
    main()
