package dev.brook.bench;

import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams on brook-bench's end-to-end workloads (apps/src/bin/brook-bench/kafka.rs
 * builds the same topologies in brook). brook-bench starts this jar once per run, the
 * same way it starts brook's child, and reads the lines it prints:
 *
 * <pre>
 *   running EPOCH_MS   the instance reached RUNNING (first time)
 *   warm EPOCH_MS      the source has seen --warmup records: timing starts
 * </pre>
 *
 * It runs until SIGTERM, then closes. brook-bench times the run from "warm" until the
 * output topic holds every expected result (read_committed), and reads this process's CPU
 * time and peak RSS from /proc.
 */
public final class KStreamsBench {
    private static final String USAGE = String.join("\n",
        "usage: java -jar brook-kstreams-bench.jar --workload W --bootstrap HOST:PORT",
        "         --application-id ID --input TOPIC --output TOPIC [--table TOPIC]",
        "         [--guarantee at_least_once|exactly_once_v2] [--threads N]",
        "         [--commit-interval-ms MS] [--state-dir DIR] [--warmup N]",
        "         [--schema V2.avsc] [--window-grace-ms MS] [--group-instance-id ID]",
        "workloads: stateless, windowed_count, stream_table_join, revenue_per_category,",
        "           count_distinct (a count per key, no window: the restore/recovery runs)");

    private KStreamsBench() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> args;
        try {
            args = parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("brook-kstreams-bench: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }
        if (args.containsKey("help")) {
            System.out.println(USAGE);
            return;
        }
        String workload = required(args, "workload");
        long warmup = Long.parseLong(args.getOrDefault("warmup", "0"));
        AtomicLong seen = new AtomicLong();
        Topology topology = topology(workload, args, seen, warmup);

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
            args.getOrDefault("guarantee", StreamsConfig.AT_LEAST_ONCE));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG,
            args.getOrDefault("commit-interval-ms", "100"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.getOrDefault("state-dir",
            new File(System.getProperty("java.io.tmpdir"), "kstreams-bench").getPath()));
        // The generic workloads run uncached in brook and here (one update per record);
        // brook-bench passes --cache-max-bytes for EventMart's revenue app, which caches.
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG,
            args.getOrDefault("cache-max-bytes", "0"));
        // The client settings brook-bench gives brook's librdkafka clients too.
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), "1000");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG),
            args.getOrDefault("session-timeout-ms", "10000"));
        if (args.containsKey("group-instance-id")) {
            // Static membership; Kafka Streams names each thread's consumer
            // <ID>-<thread index>.
            props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG),
                args.get("group-instance-id"));
        }
        props.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), "5");
        props.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), "1000000");
        props.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "none");
        props.put(StreamsConfig.producerPrefix(ProducerConfig.ACKS_CONFIG), "all");

        KafkaStreams streams = new KafkaStreams(topology, props);
        AtomicBoolean announced = new AtomicBoolean();
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((next, previous) -> {
            if (next == KafkaStreams.State.RUNNING && announced.compareAndSet(false, true)) {
                say("running " + System.currentTimeMillis());
            }
            if (next == KafkaStreams.State.ERROR) {
                failed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("brook-kstreams-bench: stream thread failed: " + e);
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
        }, "shutdown"));
        streams.start();
        failed.await();
        System.err.println("brook-kstreams-bench: Kafka Streams is in state ERROR");
        System.exit(1);
    }

    private static Topology topology(String workload, Map<String, String> args, AtomicLong seen,
                                     long warmup) throws IOException {
        StreamsBuilder b = new StreamsBuilder();
        Serde<String> str = Serdes.String();
        Serde<byte[]> bytes = Serdes.ByteArray();
        String output = required(args, "output");
        KStream<String, byte[]> input = b.stream(required(args, "input"), Consumed.with(str, bytes))
            .peek((k, v) -> {
                if (seen.incrementAndGet() == warmup) {
                    say("warm " + System.currentTimeMillis());
                }
            });
        switch (workload) {
            case "stateless" -> input
                .mapValues(v -> (long) v.length + v[0])
                .filter((k, n) -> n % 2 == 0)
                .mapValues(n -> Long.toString(n))
                .to(output, Produced.with(str, str));
            case "windowed_count" -> input
                .groupByKey(Grouped.with(str, bytes))
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(1), Duration.ZERO))
                .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("bench-counts")
                    .withKeySerde(str).withValueSerde(Serdes.Long()))
                .toStream()
                .map((w, c) -> KeyValue.pair(w.key(), Long.toString(c == null ? 0 : c)))
                .to(output, Produced.with(str, str));
            case "count_distinct" -> input
                .groupByKey(Grouped.with(str, bytes))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("bench-counts")
                    .withKeySerde(str).withValueSerde(Serdes.Long()))
                .toStream()
                .mapValues(c -> c == null ? null : Long.toString(c))
                .to(output, Produced.with(str, str));
            case "stream_table_join" -> {
                KTable<String, String> table = b.table(required(args, "table"),
                    Consumed.with(str, str),
                    Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("bench-table-store")
                        .withKeySerde(str).withValueSerde(str));
                input.join(table, (v, name) -> name + ":" + v.length)
                    .to(output, Produced.with(str, str));
            }
            case "revenue_per_category" -> revenue(input, args, output);
            default -> throw new IllegalArgumentException("no workload " + workload);
        }
        return b.build();
    }

    /**
     * EventMart's revenue per category (apps/src/eventmart/apps.rs): purchases with a
     * category and a price, re-keyed by category, summed in 5 min tumbling windows (30 s
     * grace), each update written as a JSON WindowedMetric with the fields of brook's.
     */
    private static void revenue(KStream<String, byte[]> input, Map<String, String> args,
                                String output) throws IOException {
        Schema schema = new Schema.Parser().parse(new File(required(args, "schema")));
        long grace = Long.parseLong(args.getOrDefault("window-grace-ms", "30000"));
        ThreadLocal<GenericDatumReader<GenericRecord>> readers =
            ThreadLocal.withInitial(() -> new GenericDatumReader<>(schema));
        ThreadLocal<BinaryDecoder[]> decoders = ThreadLocal.withInitial(() -> new BinaryDecoder[1]);
        Serde<String> str = Serdes.String();
        input
            .flatMap((k, v) -> {
                GenericRecord e = decode(readers.get(), decoders.get(), v);
                Object category = e.get("category");
                Object price = e.get("price");
                if (!"PURCHASE".equals(e.get("event_type").toString()) || category == null
                    || price == null) {
                    return java.util.List.<KeyValue<String, Double>>of();
                }
                return java.util.List.of(KeyValue.pair(category.toString(), (Double) price));
            })
            .groupByKey(Grouped.with(str, Serdes.Double()))
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(5), Duration.ofMillis(grace)))
            .aggregate(() -> "0,0", (k, price, acc) -> {
                int comma = acc.indexOf(',');
                double total = Double.parseDouble(acc.substring(0, comma)) + price;
                long count = Long.parseLong(acc.substring(comma + 1)) + 1;
                return total + "," + count;
            }, Materialized.<String, String, WindowStore<Bytes, byte[]>>as("revenue-per-category")
                .withKeySerde(str).withValueSerde(str).withRetention(Duration.ofHours(3)))
            .toStream()
            .filter((w, acc) -> acc != null)
            .map((w, acc) -> metric(w, acc))
            .to(output, Produced.with(str, str));
    }

    private static GenericRecord decode(GenericDatumReader<GenericRecord> reader,
                                        BinaryDecoder[] decoder, byte[] v) {
        // Confluent's framing: magic byte 0, 4-byte schema id, then the Avro body.
        if (v == null || v.length < 5 || v[0] != 0) {
            throw new IllegalArgumentException("not a Confluent Avro record");
        }
        decoder[0] = DecoderFactory.get().binaryDecoder(v, 5, v.length - 5, decoder[0]);
        try {
            return reader.read(null, decoder[0]);
        } catch (IOException e) {
            throw new IllegalArgumentException("bad Avro record: " + e.getMessage(), e);
        }
    }

    private static KeyValue<String, String> metric(Windowed<String> w, String acc) {
        int comma = acc.indexOf(',');
        double total = Double.parseDouble(acc.substring(0, comma));
        long count = Long.parseLong(acc.substring(comma + 1));
        double average = count == 0 ? 0.0 : total / count;
        long start = w.window().start();
        String key = "revenue_per_category/" + w.key() + "/" + start;
        String json = String.format(Locale.ROOT,
            "{\"metric\":\"revenue_per_category\",\"key\":%s,\"window_start\":%d,"
                + "\"window_end\":%d,\"count\":%d,\"total\":%s,\"average\":%s}",
            quote(w.key()), start, w.window().end(), count, Double.toString(total),
            Double.toString(average));
        return KeyValue.pair(key, json);
    }

    private static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    private static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static String required(Map<String, String> args, String name) {
        String v = args.get(name);
        if (v == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return v;
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("--help") || a.equals("-h")) {
                out.put("help", "");
                continue;
            }
            if (!a.startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("unexpected argument " + a);
            }
            out.put(a.substring(2), argv[++i]);
        }
        return out;
    }
}
