package dev.tradeflow.kstreams;

import java.util.List;

/**
 * codecs/src/topics.rs in Java: the flow's logical topic names, and a
 * deployment's namespace ({@code <namespace>.<logical>}, empty for none),
 * so this application reads and writes exactly the topics tradeflow does.
 */
public final class Topics {
    public static final String ORDER_CREATED = "order-service.order.created";
    public static final String ORDER_UPDATED = "order-service.order.updated";
    public static final String PAYMENT_COMPLETED = "payment-service.payment.completed";
    public static final String PAYMENT_FAILED = "payment-service.payment.failed";
    public static final String PAYMENT_REFUNDED = "payment-service.payment.refunded";
    public static final String STOCK_UPDATED = "inventory-service.stock.updated";
    public static final String STOCK_REJECTED = "inventory-service.stock.rejected";
    public static final String ACCOUNT_FUNDED = "payment-service.account.funded";
    public static final String STOCK_REPLENISHED = "inventory-service.stock.replenished";

    public static final List<String> ALL = List.of(
            ORDER_CREATED, ORDER_UPDATED, PAYMENT_COMPLETED, PAYMENT_FAILED, PAYMENT_REFUNDED,
            STOCK_UPDATED, STOCK_REJECTED, ACCOUNT_FUNDED, STOCK_REPLENISHED);

    /** Inputs of the account-keyed sub-topology (Payment and the Order stage). */
    public static final List<String> ACCOUNT_INPUTS = List.of(
            ORDER_CREATED, ORDER_UPDATED, STOCK_REJECTED, ACCOUNT_FUNDED, STOCK_UPDATED);
    /** Inputs of the sku-keyed sub-topology (Inventory). */
    public static final List<String> SKU_INPUTS = List.of(PAYMENT_COMPLETED, STOCK_REPLENISHED);
    /** The three terminal outcomes of an order. */
    public static final List<String> OUTCOMES = List.of(STOCK_UPDATED, PAYMENT_FAILED, PAYMENT_REFUNDED);

    private final String prefix;

    public Topics(String namespace) {
        this.prefix = namespace == null || namespace.isEmpty() ? "" : namespace + ".";
    }

    public String physical(String logical) {
        return prefix + logical;
    }

    /** The logical name of a physical topic of this namespace, or null. */
    public String logical(String physical) {
        return physical.startsWith(prefix) ? physical.substring(prefix.length()) : null;
    }

    public static String dlq(String topic) {
        return topic + ".dlq";
    }
}
