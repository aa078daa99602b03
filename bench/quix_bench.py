"""Quix Streams on the same workloads as brook's end-to-end benchmarks.

usage: quix_bench.py stateless|windowed BOOTSTRAP INPUT OUTPUT RECORDS
       quix_bench.py kafka --workload stateless|windowed_count --bootstrap B
                     --application-id ID --input T --output T
                     --guarantee at_least_once|exactly_once_v2 --warmup N ...

The second form is the real-broker group's (apps/src/bin/brook-bench/kafka.rs):
the same flags as brook's and Kafka Streams' processes, the same protocol
(prints "warm <epoch ms>" when the source has seen --warmup records, runs
until SIGTERM), changelog topics on, exactly-once when asked. brook-bench
counts the results on the output topic and reads the process's CPU time and
peak RSS from /proc. The workloads are brook's: stateless is the value's
length plus its first byte, kept when even; windowed_count counts per key in
1 s tumbling windows (no grace), every update emitted as the count.

The first form, on librdkafka's mock cluster:

Reads RECORDS records (100-byte values keyed by 100 keys, written by
brook-bench) from INPUT and writes to OUTPUT:
  stateless  the value's length (brook: map_values)
  windowed   a count per key in 1 s tumbling windows, every update emitted
             (brook: windowed_by(tumbling 1 s).count().to_stream())
Prints one JSON line: {"records": N, "seconds": S, "records_per_second": R},
timed from the first record processed to the last, as brook-bench times
brook (consumer start-up excluded). At-least-once, no changelog topics
(the mock cluster has no admin API to create them).

librdkafka's mock cluster does not answer DescribeConfigs, which Quix
Streams calls to inspect existing topics; `_metadata_only_inspect` answers
from metadata instead (partitions and replicas; no configs). It changes how
topics are looked up once at start, nothing in processing (the mock form only).
"""

import json
import sys
import tempfile
import time

from quixstreams import Application
from quixstreams.models.topics.admin import TopicAdmin
from quixstreams.models.topics.topic import TopicConfig


def _metadata_only_inspect(self, topic_names, timeout=30):
    cluster_topics = self.list_topics(timeout=timeout)
    return {
        name: TopicConfig(
            num_partitions=len(cluster_topics[name].partitions),
            replication_factor=len(cluster_topics[name].partitions[0].replicas),
            # Kafka's defaults, which the mock cluster would report if it could.
            extra_config={"retention.ms": "604800000", "retention.bytes": "-1"},
        )
        if name in cluster_topics
        else None
        for name in topic_names
    }


def kafka(argv):
    flags = {}
    i = 0
    while i < len(argv):
        if not argv[i].startswith("--") or i + 1 >= len(argv):
            raise SystemExit(f"quix_bench.py kafka: unexpected argument {argv[i]!r}")
        flags[argv[i][2:]] = argv[i + 1]
        i += 2
    workload = flags["workload"]
    warmup = int(flags.get("warmup", "0"))
    guarantee = {"at_least_once": "at-least-once", "exactly_once_v2": "exactly-once"}[
        flags.get("guarantee", "at_least_once")
    ]
    app = Application(
        broker_address=flags["bootstrap"],
        consumer_group=flags["application-id"],
        auto_offset_reset="earliest",
        auto_create_topics=True,
        use_changelog_topics=True,
        state_dir=flags.get("state-dir") or tempfile.mkdtemp(prefix="quix-bench-"),
        commit_interval=int(flags.get("commit-interval-ms", "100")) / 1000.0,
        processing_guarantee=guarantee,
        consumer_extra_config={"session.timeout.ms": int(flags.get("session-timeout-ms", "10000"))},
        # The client settings brook-bench gives brook's and Kafka Streams' producers.
        producer_extra_config={
            "linger.ms": 5,
            "batch.size": 1000000,
            "compression.type": "none",
            "acks": "all",
        },
        loglevel="WARNING",
    )
    topic_in = app.topic(flags["input"], key_deserializer="str", value_deserializer="bytes")
    topic_out = app.topic(flags["output"], key_serializer="str", value_serializer="json")
    seen = {"n": 0}

    def tick(value):
        seen["n"] += 1
        if seen["n"] == warmup:
            print(f"warm {time.time_ns() // 1_000_000}", flush=True)
        return value

    sdf = app.dataframe(topic_in).update(tick)
    if workload == "stateless":
        sdf = sdf.apply(lambda v: len(v) + v[0]).filter(lambda n: n % 2 == 0)
    elif workload == "windowed_count":
        sdf = sdf.tumbling_window(1000, grace_ms=0).count().current().apply(lambda w: w["value"])
    else:
        raise SystemExit(f"quix_bench.py kafka: no workload {workload!r} in Quix")
    sdf.to_topic(topic_out)
    print(f"running {time.time_ns() // 1_000_000}", flush=True)
    # Application.run stops on SIGTERM and SIGINT.
    app.run()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "kafka":
        kafka(sys.argv[2:])
        return
    TopicAdmin.inspect_topics = _metadata_only_inspect
    mode, bootstrap, input_name, output_name, records = sys.argv[1:6]
    records = int(records)
    state_dir = tempfile.mkdtemp(prefix="quix-bench-")
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-bench-{mode}-{time.time_ns()}",
        auto_offset_reset="earliest",
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=state_dir,
        commit_interval=0.1,
        loglevel="WARNING",
    )
    topic_in = app.topic(input_name, key_deserializer="str", value_deserializer="bytes")
    topic_out = app.topic(output_name, key_serializer="str", value_serializer="json")
    seen = {"n": 0, "first": None, "last": None, "cpu_first": None, "cpu_last": None}

    def tick(value):
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
            seen["cpu_first"] = time.process_time()
        seen["n"] += 1
        if seen["n"] >= records:
            seen["last"] = time.perf_counter()
            seen["cpu_last"] = time.process_time()
            app.stop()
        return value

    sdf = app.dataframe(topic_in)
    if mode == "stateless":
        sdf = sdf.apply(lambda v: len(v)).update(tick)
    elif mode == "windowed":
        sdf = sdf.update(tick).tumbling_window(1000).count().current()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sdf.to_topic(topic_out)
    app.run()
    seconds = (seen["last"] or time.perf_counter()) - (seen["first"] or time.perf_counter())
    # CPU time of the whole process (every thread: Python's and
    # librdkafka's) over the same interval.
    cpu = (seen["cpu_last"] or time.process_time()) - (seen["cpu_first"] or time.process_time())
    print(json.dumps({
        "records": seen["n"],
        "seconds": seconds,
        "records_per_second": seen["n"] / seconds if seconds > 0 else 0.0,
        "cpu_seconds": cpu,
        "records_per_cpu_second": seen["n"] / cpu if cpu > 0 else 0.0,
    }))


if __name__ == "__main__":
    main()
