package dev.tradeflow.kstreams;

/**
 * One event of the flow, any kind: the header and the union of the kinds'
 * fields (unused ones stay zero). Plain fields, no getters: the processors
 * read a handful of them per record. Strings stay as their zero-padded wire
 * bytes so encoding copies them back unchanged.
 */
public final class Event {
    public int schema;
    public Kind kind;
    public long eventIdHi;
    public long eventIdLo;
    public long orderId;
    public long causationHi;
    public long causationLo;
    public long createdAtNs;
    public long account;
    /** 16 bytes, zero-padded. */
    public byte[] sku;
    public long quantity;
    public long limitPrice;
    public long amount;
    public long remaining;
    /** 32 bytes, zero-padded. */
    public byte[] clientOrderId;
    public int timeInForce;
    /** 16 bytes, zero-padded. */
    public byte[] tag;
    /** PaymentFailReason or StockRejectReason code. */
    public int reason;

    /** A header for an event of {@code kind} caused by {@code cause} (services/src/routing.rs, caused_header). */
    public static Event causedBy(Event cause, Kind kind) {
        Event e = new Event();
        e.kind = kind;
        e.schema = Wire.latestSchema(kind);
        long[] id = Ids.derivedEventId(cause.eventIdHi, cause.eventIdLo, kind);
        e.eventIdHi = id[0];
        e.eventIdLo = id[1];
        e.orderId = cause.orderId;
        e.causationHi = cause.eventIdHi;
        e.causationLo = cause.eventIdLo;
        e.createdAtNs = cause.createdAtNs;
        return e;
    }

    public String eventIdHex() {
        return Ids.hex(eventIdHi, eventIdLo);
    }
}
