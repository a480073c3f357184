package dev.tradeflow.kstreams;

/** The kinds of the flow's events, with their codes (schema id = code × 100 + version) and logical topics. */
public enum Kind {
    ORDER_CREATED(1, Topics.ORDER_CREATED),
    ORDER_AMENDED(2, Topics.ORDER_UPDATED),
    ORDER_CANCELLED(3, Topics.ORDER_UPDATED),
    PAYMENT_COMPLETED(4, Topics.PAYMENT_COMPLETED),
    PAYMENT_FAILED(5, Topics.PAYMENT_FAILED),
    PAYMENT_REFUNDED(6, Topics.PAYMENT_REFUNDED),
    STOCK_UPDATED(7, Topics.STOCK_UPDATED),
    STOCK_REJECTED(8, Topics.STOCK_REJECTED),
    ACCOUNT_FUNDED(9, Topics.ACCOUNT_FUNDED),
    STOCK_REPLENISHED(10, Topics.STOCK_REPLENISHED);

    public final int code;
    public final String topic;

    Kind(int code, String topic) {
        this.code = code;
        this.topic = topic;
    }

    private static final Kind[] BY_CODE = new Kind[11];

    static {
        for (Kind k : values()) {
            BY_CODE[k.code] = k;
        }
    }

    /** Only called with a code from a known schema id. */
    public static Kind ofCode(int code) {
        return BY_CODE[code];
    }
}
