package dev.tradeflow.kstreams;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.Stores;

/**
 * Entry point of the Kafka Streams peer of tradeflow.
 *
 * <pre>
 * run           --bootstrap B [--namespace N] [--guarantee exactly_once_v2|at_least_once]
 *               [--profile default|latency] [--threads 2] [--partitions 8]
 *               [--commit-interval-ms M] [--application-id A] [--state-dir D]
 * create-topics --bootstrap B [--namespace N] [--partitions 8] [--replication -1]
 * drain-watch   --bootstrap B [--namespace N] [--timeout-s 300]
 * </pre>
 *
 * {@code drain-watch} reads order.created and the three outcome topics
 * (read_committed) until every order has an outcome and prints one JSON line
 * with when the first and the last outcome were read: the backlog drain's
 * clock, the same for both engines. It says "drain-watch: watching N orders"
 * once it waits on the outcome topics, so the engine can be started after it.
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            usage();
        }
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                usage();
            }
            opts.put(args[i].substring(2), args[++i]);
        }
        String bootstrap = opts.getOrDefault("bootstrap", "127.0.0.1:19092");
        Topics topics = new Topics(opts.getOrDefault("namespace", ""));
        int partitions = Integer.parseInt(opts.getOrDefault("partitions", "8"));
        switch (args[0]) {
            case "run":
                run(bootstrap, topics, partitions, opts);
                break;
            case "create-topics":
                createTopics(bootstrap, topics, partitions, Short.parseShort(opts.getOrDefault("replication", "-1")));
                break;
            case "drain-watch":
                drainWatch(bootstrap, topics, Long.parseLong(opts.getOrDefault("timeout-s", "300")));
                break;
            default:
                usage();
        }
    }

    private static void usage() {
        System.err.println("usage: kstreams-flow run|create-topics|drain-watch --bootstrap HOST:PORT [--namespace N] ...");
        System.exit(2);
    }

    /** The topology: two sub-topologies joined through Kafka topics, as tradeflow's stages are. */
    static Topology topology(Topics topics, int partitions) {
        Topology t = new Topology();
        var bytes = Serdes.ByteArray();
        t.addSource("from:accounts", bytes.deserializer(), bytes.deserializer(),
                Topics.ACCOUNT_INPUTS.stream().map(topics::physical).toArray(String[]::new));
        t.addProcessor("account", () -> new AccountProcessor(topics, partitions), "from:accounts");
        for (String store : List.of(AccountProcessor.ACCOUNTS, AccountProcessor.PAYMENTS, AccountProcessor.FUNDINGS,
                AccountProcessor.ORDERS)) {
            t.addStateStore(Stores.keyValueStoreBuilder(Stores.inMemoryKeyValueStore(store), bytes, bytes), "account");
        }
        for (String out : List.of(Topics.PAYMENT_COMPLETED, Topics.PAYMENT_FAILED, Topics.PAYMENT_REFUNDED)) {
            t.addSink(FlowProcessor.sinkOf(out), topics.physical(out), new ByteArraySerializer(), new ByteArraySerializer(), "account");
        }
        for (String in : Topics.ACCOUNT_INPUTS) {
            t.addSink(FlowProcessor.dlqSinkOf(in), Topics.dlq(topics.physical(in)), new ByteArraySerializer(),
                    new ByteArraySerializer(), "account");
        }

        t.addSource("from:skus", bytes.deserializer(), bytes.deserializer(),
                Topics.SKU_INPUTS.stream().map(topics::physical).toArray(String[]::new));
        t.addProcessor("inventory", () -> new InventoryProcessor(topics, partitions), "from:skus");
        for (String store : List.of(InventoryProcessor.STOCK, InventoryProcessor.FILLS, InventoryProcessor.REPLENISHMENTS)) {
            t.addStateStore(Stores.keyValueStoreBuilder(Stores.inMemoryKeyValueStore(store), bytes, bytes), "inventory");
        }
        for (String out : List.of(Topics.STOCK_UPDATED, Topics.STOCK_REJECTED)) {
            t.addSink(FlowProcessor.sinkOf(out), topics.physical(out), new ByteArraySerializer(), new ByteArraySerializer(), "inventory");
        }
        for (String in : Topics.SKU_INPUTS) {
            t.addSink(FlowProcessor.dlqSinkOf(in), Topics.dlq(topics.physical(in)), new ByteArraySerializer(),
                    new ByteArraySerializer(), "inventory");
        }
        return t;
    }

    /** Kafka Streams settings of a profile: "default" changes nothing that tunes; "latency" is the latency-tuned one. */
    static Properties config(String bootstrap, String applicationId, String guarantee, String profile, int threads,
            String commitIntervalMs, String stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // Internal topics (changelogs) with the broker's default replication, as tradeflow's.
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        switch (profile) {
            case "default":
                break;
            case "latency":
                p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 10);
                p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 0);
                p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG), 5);
                break;
            default:
                throw new IllegalArgumentException("--profile must be default or latency, not " + profile);
        }
        if (commitIntervalMs != null) {
            p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Integer.parseInt(commitIntervalMs));
        }
        return p;
    }

    private static void run(String bootstrap, Topics topics, int partitions, Map<String, String> opts) throws Exception {
        String namespace = opts.getOrDefault("namespace", "");
        String applicationId = opts.getOrDefault("application-id",
                namespace.isEmpty() ? "kstreams-flow" : namespace + "-kstreams-flow");
        String stateDir = opts.containsKey("state-dir") ? opts.get("state-dir")
                : Files.createTempDirectory("kstreams-flow-").toString();
        Properties props = config(bootstrap, applicationId, opts.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2),
                opts.getOrDefault("profile", "default"), Integer.parseInt(opts.getOrDefault("threads", "2")),
                opts.get("commit-interval-ms"), stateDir);
        createTopics(bootstrap, topics, partitions, (short) -1);
        KafkaStreams streams = new KafkaStreams(topology(topics, partitions), props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.err.println("kstreams-flow: " + before + " -> " + now);
            if (now == KafkaStreams.State.RUNNING) {
                System.out.println("kstreams-flow: running");
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }

    /** Creates what is missing: the nine flow topics and a dead-letter topic per input, all with {@code partitions}. */
    static void createTopics(String bootstrap, Topics topics, int partitions, short replication) throws Exception {
        List<String> names = new ArrayList<>();
        for (String t : Topics.ALL) {
            names.add(topics.physical(t));
        }
        for (String t : Topics.ACCOUNT_INPUTS) {
            names.add(Topics.dlq(topics.physical(t)));
        }
        for (String t : Topics.SKU_INPUTS) {
            names.add(Topics.dlq(topics.physical(t)));
        }
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> missing = new ArrayList<>();
            for (String name : names) {
                if (!existing.contains(name)) {
                    missing.add(replication < 0 ? new NewTopic(name, java.util.Optional.of(partitions), java.util.Optional.empty())
                            : new NewTopic(name, partitions, replication));
                }
            }
            for (var entry : admin.createTopics(missing).values().entrySet()) {
                try {
                    entry.getValue().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        throw e;
                    }
                }
            }
            // A topic just created may not be in every broker's metadata yet (three brokers).
            Map<String, TopicDescription> described = null;
            for (int attempt = 0; described == null; attempt++) {
                try {
                    described = admin.describeTopics(names).allTopicNames().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof UnknownTopicOrPartitionException) || attempt >= 100) {
                        throw e;
                    }
                    Thread.sleep(200);
                }
            }
            for (TopicDescription d : described.values()) {
                if (d.partitions().size() != partitions) {
                    throw new IllegalStateException("topic " + d.name() + " has " + d.partitions().size()
                            + " partitions but the flow needs " + partitions);
                }
            }
        }
    }

    private static void drainWatch(String bootstrap, Topics topics, long timeoutS) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 5);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5000);
        long deadline = System.nanoTime() + timeoutS * 1_000_000_000L;
        long startMs = System.currentTimeMillis();
        Set<Long> orders = new HashSet<>();
        Set<Long> decided = new HashSet<>();
        long firstMs = 0;
        long lastMs = 0;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> created = partitionsOf(c, List.of(topics.physical(Topics.ORDER_CREATED)));
            c.assign(created);
            c.seekToBeginning(created);
            Map<TopicPartition, Long> end = c.endOffsets(created);
            while (!caughtUp(c, end)) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    addOrder(r.value(), orders);
                }
            }
            List<TopicPartition> outcomes = partitionsOf(c,
                    Topics.OUTCOMES.stream().map(topics::physical).toList());
            c.assign(outcomes);
            c.seekToBeginning(outcomes);
            for (TopicPartition tp : outcomes) {
                c.position(tp); // resolve the positions now, before the engine starts
            }
            System.out.println("drain-watch: watching " + orders.size() + " orders");
            System.out.flush();
            while (decided.size() < orders.size() && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(50))) {
                    long now = System.currentTimeMillis();
                    if (addOrder(r.value(), decided)) {
                        if (firstMs == 0) {
                            firstMs = now;
                        }
                        lastMs = now;
                    }
                }
            }
        }
        boolean complete = decided.size() >= orders.size();
        double spanS = (lastMs - firstMs) / 1000.0;
        double sinceStartS = (lastMs - startMs) / 1000.0;
        System.out.printf("{\"orders\":%d,\"decided\":%d,\"complete\":%s,\"first_outcome_unix_ms\":%d,"
                        + "\"last_outcome_unix_ms\":%d,\"watch_start_unix_ms\":%d,\"drain_s\":%.3f,"
                        + "\"drain_orders_per_s\":%.1f,\"since_start_s\":%.3f,\"orders_per_s_since_start\":%.1f}%n",
                orders.size(), decided.size(), complete, firstMs, lastMs, startMs, spanS,
                spanS > 0 ? orders.size() / spanS : 0.0, sinceStartS, sinceStartS > 0 ? orders.size() / sinceStartS : 0.0);
        if (!complete) {
            System.exit(1);
        }
    }

    private static boolean addOrder(byte[] value, Set<Long> into) {
        try {
            return into.add(Wire.decode(value).orderId);
        } catch (Wire.DecodeException e) {
            return false;
        }
    }

    private static List<TopicPartition> partitionsOf(KafkaConsumer<byte[], byte[]> c, List<String> names) {
        List<TopicPartition> out = new ArrayList<>();
        for (String name : names) {
            c.partitionsFor(name).forEach(info -> out.add(new TopicPartition(name, info.partition())));
        }
        return out;
    }

    private static boolean caughtUp(KafkaConsumer<byte[], byte[]> c, Map<TopicPartition, Long> end) {
        for (var e : end.entrySet()) {
            if (c.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }
}
