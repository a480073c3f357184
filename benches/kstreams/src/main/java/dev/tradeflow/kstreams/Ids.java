package dev.tradeflow.kstreams;

/**
 * codecs/src/ids.rs in Java: the id of an event a stage emits is a pure
 * function of the id of the event that caused it and the emitted kind, so a
 * replay emits the same ids and the audit recognises duplicates. Must stay
 * bit-identical to the Rust function (WireTest checks the golden ids).
 */
public final class Ids {
    private Ids() {}

    private static final long EVENT_ID_HIGH_SEED = 0x7472_6164_6566_6c77L;
    private static final long EVENT_ID_LOW_SEED = 0x6576_656e_7449_6430L;

    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58_476d_1ce4_e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d0_49bb_1331_11ebL;
        return z ^ (z >>> 31);
    }

    private static long hash(long seed, long high, long low, long code) {
        long h = mix64(seed);
        h = mix64(h ^ high) + 0x9e37_79b9_7f4a_7c15L;
        h = mix64(h ^ low) + 0x9e37_79b9_7f4a_7c15L;
        h = mix64(h ^ code) + 0x9e37_79b9_7f4a_7c15L;
        return mix64(h);
    }

    /** {high, low} of the derived id; never zero. */
    public static long[] derivedEventId(long causeHi, long causeLo, Kind kind) {
        long hi = hash(EVENT_ID_HIGH_SEED, causeHi, causeLo, kind.code);
        long lo = hash(EVENT_ID_LOW_SEED, causeHi, causeLo, kind.code);
        if (hi == 0 && lo == 0) {
            lo = 1;
        }
        return new long[] {hi, lo};
    }

    public static String hex(long hi, long lo) {
        return String.format("%016x%016x", hi, lo);
    }
}
