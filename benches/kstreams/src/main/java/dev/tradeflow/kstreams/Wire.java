package dev.tradeflow.kstreams;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * tradeflow's wire form, read and written in Java: tradeflow's rkyv frame
 * (magic byte 0xF8, framing version 1, kind code, schema version: never
 * Confluent's magic 0) around an rkyv archive of a
 * fixed-size event (codecs/, features little_endian + unaligned: every field
 * in declaration order, little-endian, no padding; enums one byte; u128 ids
 * as 16 little-endian bytes; fixed ASCII strings zero-padded).
 *
 * <p>Internally a (kind, version) type tag is numbered kind x 100 + version
 * ({@link Event#schema}), for the switches below; that number is never on
 * the wire and is no schema-registry id.
 *
 * <p>Owns decoding with the same checks as codecs/src/decode.rs (magic,
 * framing version, known type tag, exact length, ASCII alphabets and padding, enum ranges) and
 * encoding of the latest version of each kind. Must never accept a frame the
 * Rust decoder refuses: a refused frame is dead-lettered. Proven against the
 * real codecs by golden vectors (codecs/tests/java_golden.rs writes them,
 * WireTest reads them).
 */
public final class Wire {
    private Wire() {}

    public static final int HEADER_BYTES = 4;
    public static final byte MAGIC = (byte) 0xF8;
    public static final byte FRAMING_VERSION = 1;
    public static final int FRAME_BYTES_MAX = 256;
    public static final int EVENT_HEADER_BYTES = 48;
    public static final int SKU_BYTES = 16;
    public static final int CLIENT_ORDER_ID_BYTES = 32;
    public static final int TAG_BYTES = 16;

    /** Why a frame was refused; {@code reason} is the same word tradeflow's dead letters carry. */
    public static final class DecodeException extends Exception {
        public final String reason;

        DecodeException(String reason, String message) {
            super(message);
            this.reason = reason;
        }
    }

    /** Payload bytes of a type (kind x 100 + version), or -1 for an unknown one. */
    public static int payloadBytes(int schema) {
        switch (schema) {
            case 101: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8 + 32;
            case 102: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8 + 32 + 1 + 16;
            case 201: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8;
            case 301: return EVENT_HEADER_BYTES + 8 + 16;
            case 401: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8;
            case 501: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8 + 1;
            case 601: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8;
            case 701: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8 + 8;
            case 801: return EVENT_HEADER_BYTES + 8 + 16 + 8 + 8 + 1;
            case 901: return EVENT_HEADER_BYTES + 8 + 8;
            case 1001: return EVENT_HEADER_BYTES + 16 + 8;
            default: return -1;
        }
    }

    /** The latest type (kind x 100 + version) of a kind. */
    public static int latestSchema(Kind kind) {
        return kind == Kind.ORDER_CREATED ? 102 : kind.code * 100 + 1;
    }

    public static Event decode(byte[] frame) throws DecodeException {
        if (frame == null || frame.length == 0) {
            throw new DecodeException("empty", "empty frame");
        }
        if (frame.length > FRAME_BYTES_MAX) {
            throw new DecodeException("oversize", "frame of " + frame.length + " bytes exceeds " + FRAME_BYTES_MAX);
        }
        if (frame[0] != MAGIC) {
            throw new DecodeException("wrong_magic", String.format(
                    "magic byte is %#04x: neither a tradeflow rkyv frame (0xf8) nor Confluent's wire format (0x00)",
                    frame[0] & 0xff));
        }
        if (frame.length < HEADER_BYTES) {
            throw new DecodeException("truncated_header", "frame of " + frame.length + " bytes is shorter than the 4-byte header");
        }
        if (frame[1] != FRAMING_VERSION) {
            throw new DecodeException("unknown_framing",
                    "rkyv framing version " + (frame[1] & 0xff) + " is unknown (this build reads version 1)");
        }
        ByteBuffer b = ByteBuffer.wrap(frame);
        int kindCode = frame[2] & 0xff;
        int version = frame[3] & 0xff;
        int schema = version >= 1 && version <= 99 ? kindCode * 100 + version : -1;
        int expected = schema < 0 ? -1 : payloadBytes(schema);
        if (expected < 0) {
            throw new DecodeException("unknown_schema",
                    "unknown rkyv type tag: kind code " + kindCode + ", schema version " + version);
        }
        int len = frame.length - HEADER_BYTES;
        if (len < expected) {
            throw new DecodeException("truncated_payload", "schema " + schema + " payload is " + len + " bytes, expected " + expected);
        }
        if (len > expected) {
            throw new DecodeException("trailing_bytes", "schema " + schema + " payload is " + len + " bytes, expected " + expected);
        }
        b.order(ByteOrder.LITTLE_ENDIAN).position(HEADER_BYTES);
        Event e = new Event();
        e.schema = schema;
        e.kind = Kind.ofCode(schema / 100);
        e.eventIdLo = b.getLong();
        e.eventIdHi = b.getLong();
        e.orderId = b.getLong();
        e.causationLo = b.getLong();
        e.causationHi = b.getLong();
        e.createdAtNs = b.getLong();
        switch (schema) {
            case 101:
            case 102:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.limitPrice = b.getLong();
                e.clientOrderId = fixed(b, CLIENT_ORDER_ID_BYTES, false, Wire::isClientOrderIdByte, schema);
                if (schema == 102) {
                    e.timeInForce = enumByte(b, 4, schema);
                    e.tag = fixed(b, TAG_BYTES, true, Wire::isTagByte, schema);
                } else {
                    e.timeInForce = 0;
                    e.tag = new byte[TAG_BYTES];
                }
                break;
            case 201:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.limitPrice = b.getLong();
                break;
            case 301:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                break;
            case 401:
            case 601:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.amount = b.getLong();
                break;
            case 501:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.amount = b.getLong();
                e.reason = enumByte(b, 4, schema);
                break;
            case 701:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.remaining = b.getLong();
                e.amount = b.getLong();
                break;
            case 801:
                e.account = b.getLong();
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                e.amount = b.getLong();
                e.reason = enumByte(b, 3, schema);
                break;
            case 901:
                e.account = b.getLong();
                e.amount = b.getLong();
                break;
            case 1001:
                e.sku = sku(b, schema);
                e.quantity = b.getLong();
                break;
            default:
                throw new DecodeException("unknown_schema", "unknown type " + schema);
        }
        return e;
    }

    /** The frame of {@code e} in its kind's latest schema. */
    public static byte[] encode(Event e) {
        int schema = latestSchema(e.kind);
        byte[] out = new byte[HEADER_BYTES + payloadBytes(schema)];
        ByteBuffer b = ByteBuffer.wrap(out);
        b.put(MAGIC).put(FRAMING_VERSION).put((byte) (schema / 100)).put((byte) (schema % 100));
        b.order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(e.eventIdLo).putLong(e.eventIdHi).putLong(e.orderId);
        b.putLong(e.causationLo).putLong(e.causationHi).putLong(e.createdAtNs);
        switch (e.kind) {
            case ORDER_CREATED:
                b.putLong(e.account).put(e.sku).putLong(e.quantity).putLong(e.limitPrice);
                b.put(e.clientOrderId).put((byte) e.timeInForce).put(e.tag);
                break;
            case ORDER_AMENDED:
                b.putLong(e.account).put(e.sku).putLong(e.quantity).putLong(e.limitPrice);
                break;
            case ORDER_CANCELLED:
                b.putLong(e.account).put(e.sku);
                break;
            case PAYMENT_COMPLETED:
            case PAYMENT_REFUNDED:
                b.putLong(e.account).put(e.sku).putLong(e.quantity).putLong(e.amount);
                break;
            case PAYMENT_FAILED:
            case STOCK_REJECTED:
                b.putLong(e.account).put(e.sku).putLong(e.quantity).putLong(e.amount).put((byte) e.reason);
                break;
            case STOCK_UPDATED:
                b.putLong(e.account).put(e.sku).putLong(e.quantity).putLong(e.remaining).putLong(e.amount);
                break;
            case ACCOUNT_FUNDED:
                b.putLong(e.account).putLong(e.amount);
                break;
            case STOCK_REPLENISHED:
                b.put(e.sku).putLong(e.quantity);
                break;
            default:
                throw new IllegalStateException("unreachable kind " + e.kind);
        }
        return out;
    }

    /** Record key of an account-keyed topic: the account, 8 bytes big-endian. */
    public static byte[] accountKey(long account) {
        return ByteBuffer.allocate(8).order(ByteOrder.BIG_ENDIAN).putLong(account).array();
    }

    /** Record key of a sku-keyed topic: the symbol's bytes, without padding. */
    public static byte[] skuKey(byte[] paddedSku) {
        int n = textLength(paddedSku);
        byte[] key = new byte[n];
        System.arraycopy(paddedSku, 0, key, 0, n);
        return key;
    }

    public static int textLength(byte[] padded) {
        for (int i = 0; i < padded.length; i++) {
            if (padded[i] == 0) {
                return i;
            }
        }
        return padded.length;
    }

    public static String text(byte[] padded) {
        return new String(padded, 0, textLength(padded), StandardCharsets.US_ASCII);
    }

    interface ByteRule {
        boolean allowed(int b);
    }

    static boolean isSymbolByte(int b) {
        return (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '.' || b == '_' || b == '-';
    }

    static boolean isClientOrderIdByte(int b) {
        return b >= 0x21 && b <= 0x7e;
    }

    static boolean isTagByte(int b) {
        return (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '.' || b == '_' || b == '-';
    }

    private static byte[] sku(ByteBuffer b, int schema) throws DecodeException {
        return fixed(b, SKU_BYTES, false, Wire::isSymbolByte, schema);
    }

    private static byte[] fixed(ByteBuffer b, int width, boolean emptyOk, ByteRule rule, int schema)
            throws DecodeException {
        byte[] out = new byte[width];
        b.get(out);
        boolean bad = !emptyOk && out[0] == 0;
        for (int i = 0; i < width; i++) {
            int v = out[i] & 0xff;
            if (v != 0 && !rule.allowed(v)) {
                bad = true;
            }
            if (i > 0 && out[i - 1] == 0 && v != 0) {
                bad = true;
            }
        }
        if (bad) {
            throw new DecodeException("corrupt_archive", "schema " + schema + " payload failed validation");
        }
        return out;
    }

    private static int enumByte(ByteBuffer b, int variants, int schema) throws DecodeException {
        int v = b.get() & 0xff;
        if (v >= variants) {
            throw new DecodeException("corrupt_archive", "schema " + schema + " payload failed validation");
        }
        return v;
    }
}
