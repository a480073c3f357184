package dev.tradeflow.kstreams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.test.TestRecord;
import org.junit.jupiter.api.Test;

/**
 * The flow's rules through the real topology in Kafka Streams' own test
 * driver (one partition, so every key is at home): a paid order fills, an
 * order beyond the stock is rejected and refunded once, an order beyond the
 * balance fails, a replayed order re-emits the same ids, a bad frame is
 * dead-lettered. The whole flow against the real broker is checked by
 * benches/side-by-side --ci (loadgen run and its audit).
 */
class FlowTopologyTest {
    private static final long ACCOUNT = 7;
    private static final byte[] SKU = padded("AAPL", 16);

    private static byte[] padded(String s, int width) {
        byte[] out = new byte[width];
        byte[] b = s.getBytes(StandardCharsets.US_ASCII);
        System.arraycopy(b, 0, out, 0, b.length);
        return out;
    }

    private static Event event(Kind kind, long id, long orderId) {
        Event e = new Event();
        e.kind = kind;
        e.schema = Wire.latestSchema(kind);
        e.eventIdHi = 0x5eed;
        e.eventIdLo = id;
        e.orderId = orderId;
        e.createdAtNs = 1_000 + id;
        e.sku = SKU;
        e.clientOrderId = padded("c-" + id, 32);
        e.tag = new byte[16];
        return e;
    }

    private static Event order(long id, long orderId, long quantity, long price) {
        Event o = event(Kind.ORDER_CREATED, id, orderId);
        o.account = ACCOUNT;
        o.quantity = quantity;
        o.limitPrice = price;
        return o;
    }

    @Test
    void fills_rejects_refunds_and_replays_like_tradeflow() throws Exception {
        Topics topics = new Topics("t");
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "flow-test");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        try (TopologyTestDriver driver = new TopologyTestDriver(Main.topology(topics, 1), p)) {
            var ser = new ByteArraySerializer();
            var de = new ByteArrayDeserializer();
            TestInputTopic<byte[], byte[]> funded = driver.createInputTopic(topics.physical(Topics.ACCOUNT_FUNDED), ser, ser);
            TestInputTopic<byte[], byte[]> stocked = driver.createInputTopic(topics.physical(Topics.STOCK_REPLENISHED), ser, ser);
            TestInputTopic<byte[], byte[]> orders = driver.createInputTopic(topics.physical(Topics.ORDER_CREATED), ser, ser);
            TestInputTopic<byte[], byte[]> rejectedIn = driver.createInputTopic(topics.physical(Topics.STOCK_REJECTED), ser, ser);
            TestOutputTopic<byte[], byte[]> paid = driver.createOutputTopic(topics.physical(Topics.PAYMENT_COMPLETED), de, de);
            TestOutputTopic<byte[], byte[]> failed = driver.createOutputTopic(topics.physical(Topics.PAYMENT_FAILED), de, de);
            TestOutputTopic<byte[], byte[]> refunded = driver.createOutputTopic(topics.physical(Topics.PAYMENT_REFUNDED), de, de);
            TestOutputTopic<byte[], byte[]> updated = driver.createOutputTopic(topics.physical(Topics.STOCK_UPDATED), de, de);
            TestOutputTopic<byte[], byte[]> rejected = driver.createOutputTopic(topics.physical(Topics.STOCK_REJECTED), de, de);
            TestOutputTopic<byte[], byte[]> dlq = driver.createOutputTopic(Topics.dlq(topics.physical(Topics.ORDER_CREATED)), de, de);

            Event fund = event(Kind.ACCOUNT_FUNDED, 1, 0);
            fund.account = ACCOUNT;
            fund.amount = 10_000;
            funded.pipeInput(Wire.accountKey(ACCOUNT), Wire.encode(fund));
            Event stock = event(Kind.STOCK_REPLENISHED, 2, 0);
            stock.quantity = 5;
            stocked.pipeInput(Wire.skuKey(SKU), Wire.encode(stock));

            // 1: 3 units at 100 — paid, then filled (2 left).
            Event first = order(10, 1, 3, 100);
            orders.pipeInput(Wire.accountKey(ACCOUNT), Wire.encode(first));
            TestRecord<byte[], byte[]> pay = paid.readRecord();
            assertArrayEquals("AAPL".getBytes(StandardCharsets.US_ASCII), pay.key(), "payment.completed is keyed by sku");
            Event payment = Wire.decode(pay.value());
            long[] payId = Ids.derivedEventId(first.eventIdHi, first.eventIdLo, Kind.PAYMENT_COMPLETED);
            assertEquals(payId[0], payment.eventIdHi);
            assertEquals(payId[1], payment.eventIdLo);
            assertEquals(300, payment.amount);
            // The driver feeds outputs that are also inputs back in: Inventory already answered.
            Event fill = Wire.decode(updated.readValue());
            assertEquals(2, fill.remaining);
            assertEquals(300, fill.amount);

            // A replay of the same order.created: the same payment and fill again, nothing debited twice.
            orders.pipeInput(Wire.accountKey(ACCOUNT), Wire.encode(first));
            assertArrayEquals(pay.value(), paid.readValue());
            Event refill = Wire.decode(updated.readValue());
            assertEquals(fill.eventIdLo, refill.eventIdLo);
            assertEquals(2, refill.remaining, "the replay took no units");

            // 2: 4 units — paid (balance 9 700), rejected for stock, refunded once.
            Event second = order(11, 2, 4, 100);
            orders.pipeInput(Wire.accountKey(ACCOUNT), Wire.encode(second));
            assertEquals(400, Wire.decode(paid.readValue()).amount);
            byte[] rejection = rejected.readValue();
            assertEquals(InventoryProcessor.INSUFFICIENT_STOCK, Wire.decode(rejection).reason);
            rejectedIn.pipeInput(Wire.accountKey(ACCOUNT), rejection);
            List<byte[]> refunds = refunded.readValuesToList();
            assertEquals(2, refunds.size(), "a replayed rejection re-emits the same refund");
            assertArrayEquals(refunds.get(0), refunds.get(1));
            assertEquals(400, Wire.decode(refunds.get(0)).amount);

            // 3: beyond the balance (10 000 - 300 = 9 700 < 9 800): payment.failed.
            orders.pipeInput(Wire.accountKey(ACCOUNT), Wire.encode(order(12, 3, 98, 100)));
            Event fail = Wire.decode(failed.readValue());
            assertEquals(AccountProcessor.INSUFFICIENT_FUNDS, fail.reason);
            assertEquals(9_800, fail.amount);

            // A frame that does not decode is dead-lettered with the reason.
            orders.pipeInput(Wire.accountKey(ACCOUNT), new byte[] {1, 2, 3});
            var letter = dlq.readRecord();
            assertEquals("user-data",
                    new String(letter.headers().lastHeader("tradeflow.error.class").value(), StandardCharsets.UTF_8));
            assertTrue(new String(letter.headers().lastHeader("tradeflow.error.reason").value(), StandardCharsets.UTF_8)
                    .startsWith("magic byte is 0x01: neither a tradeflow rkyv frame"));
            assertTrue(paid.isEmpty() && failed.isEmpty() && updated.isEmpty() && refunded.isEmpty());
            assertEquals(0, Utils.toPositive(Utils.murmur2(Wire.accountKey(ACCOUNT))) % 1);
        }
    }
}
