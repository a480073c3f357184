package dev.tradeflow.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.Optional;

import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * What both of the flow's processors share: decoding each input, checking
 * it came on its kind's topic and its key's home partition (as tradeflow's
 * services/src/routing.rs does), dead-lettering what is refused to
 * {@code <topic>.dlq} with tradeflow's dead-letter headers, and emitting
 * events to the sink of their kind's topic.
 *
 * <p>Must never change a store for an event it refuses: subclasses check
 * everything first, emit, then write state.
 */
abstract class FlowProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    /** A record refused by a rule of the flow: dead-lettered, state untouched. Classes as tradeflow's ErrorClass: user-data, internal. */
    static final class Rejection extends Exception {
        final String errorClass;

        Rejection(String errorClass, String reason) {
            super(reason, null, false, false);
            this.errorClass = errorClass;
        }

        static Rejection userData(String reason) {
            return new Rejection("user-data", reason);
        }
    }

    protected ProcessorContext<byte[], byte[]> context;
    protected final Topics topics;
    protected final int partitions;
    private final String service;

    FlowProcessor(Topics topics, int partitions, String service) {
        this.topics = topics;
        this.partitions = partitions;
        this.service = service;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
    }

    /** Sink node name of a logical topic. */
    static String sinkOf(String logical) {
        return "to:" + logical;
    }

    /** Sink node name of a logical topic's dead-letter topic. */
    static String dlqSinkOf(String logical) {
        return "dlq:" + logical;
    }

    @Override
    public final void process(Record<byte[], byte[]> record) {
        Optional<RecordMetadata> meta = context.recordMetadata();
        String physical = meta.map(RecordMetadata::topic).orElse("");
        String logical = topics.logical(physical);
        int partition = meta.map(RecordMetadata::partition).orElse(-1);
        try {
            Event event;
            try {
                event = Wire.decode(record.value());
            } catch (Wire.DecodeException e) {
                throw Rejection.userData(e.getMessage());
            }
            if (!event.kind.topic.equals(logical)) {
                throw Rejection.userData(event.kind.name() + " belongs on " + event.kind.topic + ", not on " + physical);
            }
            apply(event, partition, record.timestamp());
        } catch (Rejection r) {
            deadLetter(record, logical, physical, partition, meta.map(RecordMetadata::offset).orElse(-1L), r);
        }
    }

    abstract void apply(Event event, int partition, long timestamp) throws Rejection;

    void expectPartition(byte[] key, int partition) throws Rejection {
        int home = Utils.toPositive(Utils.murmur2(key)) % partitions;
        if (home != partition) {
            throw Rejection.userData("event keyed for partition " + home + " arrived on " + partition
                    + ": its producer did not partition by the flow's key");
        }
    }

    static long requireOrder(Event e) throws Rejection {
        if (e.orderId == 0) {
            throw Rejection.userData(e.kind + " without an order id");
        }
        return e.orderId;
    }

    void emit(byte[] key, Event event, long timestamp) {
        context.forward(new Record<>(key, Wire.encode(event), timestamp), sinkOf(event.kind.topic));
    }

    private void deadLetter(Record<byte[], byte[]> record, String logical, String physical, int partition,
            long offset, Rejection r) {
        if (logical == null) {
            throw new IllegalStateException("record from " + physical + ", outside the namespace");
        }
        RecordHeaders headers = new RecordHeaders();
        headers.add("tradeflow.error.class", utf8(r.errorClass));
        headers.add("tradeflow.error.reason", utf8(r.getMessage()));
        headers.add("tradeflow.error.topic", utf8(physical));
        headers.add("tradeflow.error.partition", utf8(Integer.toString(partition)));
        headers.add("tradeflow.error.offset", utf8(Long.toString(offset)));
        headers.add("tradeflow.error.timestamp", utf8(Long.toString(record.timestamp())));
        headers.add("tradeflow.error.service", utf8(service));
        headers.add("tradeflow.error.attempts", utf8("1"));
        context.forward(new Record<>(record.key(), record.value(), record.timestamp(), headers), dlqSinkOf(logical));
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
