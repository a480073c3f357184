package dev.tradeflow.kstreams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

/**
 * The Java codec against golden vectors written by the real Rust codecs
 * (codecs/tests/java_golden.rs): every frame decodes to the fields its JSON
 * form states, re-encodes to the same bytes (latest schemas), and every
 * derived id matches.
 */
class WireTest {
    private static final String[] PAYMENT_FAIL = {"insufficient_funds", "unknown_account", "amount_overflow", "invalid_order"};
    private static final String[] STOCK_REJECT = {"insufficient_stock", "unknown_sku", "invalid_quantity"};
    private static final String[] TIME_IN_FORCE = {"gtc", "ioc", "fok", "day"};

    private static List<String> golden() throws IOException {
        try (InputStream in = WireTest.class.getResourceAsStream("/golden-frames.txt")) {
            assertTrue(in != null, "golden-frames.txt is on the test classpath");
            List<String> lines = new ArrayList<>();
            for (String line : new String(in.readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
                if (!line.isBlank() && !line.startsWith("#")) {
                    lines.add(line);
                }
            }
            return lines;
        }
    }

    private static long u64(JsonNode n) {
        return Long.parseUnsignedLong(n.asText());
    }

    @Test
    void every_golden_frame_decodes_to_its_json_and_re_encodes_byte_for_byte() throws Exception {
        ObjectMapper json = new ObjectMapper();
        int frames = 0;
        for (String line : golden()) {
            String[] parts = line.split(" ", 4);
            if (!parts[0].equals("frame")) {
                continue;
            }
            frames++;
            String[] tag = parts[1].split("\\.");
            int schema = Integer.parseInt(tag[0]) * 100 + Integer.parseInt(tag[1]);
            byte[] frame = HexFormat.of().parseHex(parts[2]);
            JsonNode j = json.readTree(parts[3]);
            Event e = Wire.decode(frame);
            assertEquals(schema, e.schema, line);
            assertEquals(j.get("type").asText(), e.kind.name().toLowerCase().replaceFirst("_", "."), line);
            JsonNode h = j.get("header");
            assertEquals(h.get("event_id").asText(), e.eventIdHex(), line);
            assertEquals(h.get("causation_id").asText(), Ids.hex(e.causationHi, e.causationLo), line);
            assertEquals(u64(h.get("order_id")), e.orderId, line);
            assertEquals(u64(h.get("created_at_ns")), e.createdAtNs, line);
            if (j.has("account")) {
                assertEquals(u64(j.get("account")), e.account, line);
            }
            if (j.has("sku")) {
                assertEquals(j.get("sku").asText(), Wire.text(e.sku), line);
            }
            if (j.has("quantity")) {
                assertEquals(j.get("quantity").asLong(), e.quantity, line);
            }
            if (j.has("limit_price")) {
                assertEquals(j.get("limit_price").asLong(), e.limitPrice, line);
            }
            if (j.has("amount")) {
                assertEquals(j.get("amount").asLong(), e.amount, line);
            }
            if (j.has("remaining")) {
                assertEquals(j.get("remaining").asLong(), e.remaining, line);
            }
            if (j.has("client_order_id")) {
                assertEquals(j.get("client_order_id").asText(), Wire.text(e.clientOrderId), line);
            }
            if (j.has("time_in_force")) {
                assertEquals(j.get("time_in_force").asText(), TIME_IN_FORCE[e.timeInForce], line);
            }
            if (j.has("tag")) {
                assertEquals(j.get("tag").asText(), Wire.text(e.tag), line);
            }
            if (j.has("reason")) {
                String[] names = e.kind == Kind.PAYMENT_FAILED ? PAYMENT_FAIL : STOCK_REJECT;
                assertEquals(j.get("reason").asText(), names[e.reason], line);
            }
            if (schema == Wire.latestSchema(e.kind)) {
                assertArrayEquals(frame, Wire.encode(e), line);
            }
        }
        assertTrue(frames >= 11, "every schema has a golden frame");
    }

    @Test
    void derived_ids_match_the_rust_function() throws Exception {
        int ids = 0;
        for (String line : golden()) {
            String[] parts = line.split(" ");
            if (!parts[0].equals("id")) {
                continue;
            }
            ids++;
            long hi = Long.parseUnsignedLong(parts[1].substring(0, 16), 16);
            long lo = Long.parseUnsignedLong(parts[1].substring(16), 16);
            long[] id = Ids.derivedEventId(hi, lo, Kind.ofCode(Integer.parseInt(parts[2])));
            assertEquals(parts[3], Ids.hex(id[0], id[1]), line);
        }
        assertTrue(ids >= 40, "golden ids present");
    }

    @Test
    void malformed_frames_are_refused_with_tradeflows_reasons() throws Exception {
        String first = golden().stream().filter(l -> l.startsWith("frame 1.2 ")).findFirst().orElseThrow();
        byte[] frame = HexFormat.of().parseHex(first.split(" ")[2]);
        assertEquals("empty", assertThrows(Wire.DecodeException.class, () -> Wire.decode(new byte[0])).reason);
        byte[] magic = frame.clone();
        magic[0] = 1;
        assertEquals("wrong_magic", assertThrows(Wire.DecodeException.class, () -> Wire.decode(magic)).reason);
        byte[] confluent = frame.clone();
        confluent[0] = 0; // Confluent's magic byte is never an rkyv frame
        assertEquals("wrong_magic", assertThrows(Wire.DecodeException.class, () -> Wire.decode(confluent)).reason);
        byte[] framing = frame.clone();
        framing[1] = 2;
        assertEquals("unknown_framing", assertThrows(Wire.DecodeException.class, () -> Wire.decode(framing)).reason);
        byte[] unknown = frame.clone();
        unknown[3] = 7;
        assertEquals("unknown_schema", assertThrows(Wire.DecodeException.class, () -> Wire.decode(unknown)).reason);
        byte[] shorter = java.util.Arrays.copyOf(frame, frame.length - 1);
        assertEquals("truncated_payload", assertThrows(Wire.DecodeException.class, () -> Wire.decode(shorter)).reason);
        byte[] longer = java.util.Arrays.copyOf(frame, frame.length + 1);
        assertEquals("trailing_bytes", assertThrows(Wire.DecodeException.class, () -> Wire.decode(longer)).reason);
        byte[] badSku = frame.clone();
        badSku[Wire.HEADER_BYTES + 48 + 8] = 'a'; // lower case is outside the sku alphabet
        assertEquals("corrupt_archive", assertThrows(Wire.DecodeException.class, () -> Wire.decode(badSku)).reason);
        byte[] badTif = frame.clone();
        badTif[Wire.HEADER_BYTES + 48 + 8 + 16 + 8 + 8 + 32] = 9;
        assertEquals("corrupt_archive", assertThrows(Wire.DecodeException.class, () -> Wire.decode(badTif)).reason);
    }
}
