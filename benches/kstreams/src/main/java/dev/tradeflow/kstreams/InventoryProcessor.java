package dev.tradeflow.kstreams;

import java.nio.ByteBuffer;

import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The sku-keyed sub-topology: Inventory (services/src/inventory.rs). On
 * payment.completed take the units if they are on hand (stock.updated, keyed
 * by account) or refuse (stock.rejected, keyed by account, carrying account
 * and amount so Payment refunds); add stock.replenished once per event id.
 * A replayed payment re-emits the recorded decision with the same ids; a
 * second, different payment for a decided order is dead-lettered.
 *
 * <p>Stores: inventory-stock, inventory-orders, inventory-replenishments,
 * in memory with changelogs.
 */
final class InventoryProcessor extends FlowProcessor {
    static final String STOCK = "inventory-stock";
    static final String FILLS = "inventory-orders";
    static final String REPLENISHMENTS = "inventory-replenishments";

    static final int INSUFFICIENT_STOCK = 0;
    static final int UNKNOWN_SKU = 1;
    static final int INVALID_QUANTITY = 2;

    private KeyValueStore<byte[], byte[]> stock;
    private KeyValueStore<byte[], byte[]> fills;
    private KeyValueStore<byte[], byte[]> replenishments;

    InventoryProcessor(Topics topics, int partitions) {
        super(topics, partitions, "inventory");
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        super.init(context);
        stock = context.getStateStore(STOCK);
        fills = context.getStateStore(FILLS);
        replenishments = context.getStateStore(REPLENISHMENTS);
    }

    @Override
    void apply(Event e, int partition, long ts) throws Rejection {
        byte[] skuKey = Wire.skuKey(e.sku);
        expectPartition(skuKey, partition);
        switch (e.kind) {
            case PAYMENT_COMPLETED:
                paymentCompleted(e, skuKey, ts);
                break;
            case STOCK_REPLENISHED:
                stockReplenished(e, skuKey);
                break;
            default:
                throw Rejection.userData("inventory does not take " + e.kind);
        }
    }

    private Long onHand(byte[] skuKey) {
        byte[] v = stock.get(skuKey);
        return v == null ? null : ByteBuffer.wrap(v).getLong();
    }

    /** cause 16 | status 1 | reason 1 | remaining 8. */
    private void paymentCompleted(Event paid, byte[] skuKey, long ts) throws Rejection {
        long orderId = requireOrder(paid);
        if (paid.amount <= 0) {
            throw Rejection.userData("payment.completed for order " + Long.toUnsignedString(orderId)
                    + " carries " + paid.amount + ": a payment must be positive");
        }
        byte[] key = ByteBuffer.allocate(8).putLong(orderId).array();
        byte[] existing = fills.get(key);
        if (existing != null) {
            ByteBuffer r = ByteBuffer.wrap(existing);
            if (r.getLong(0) == paid.eventIdHi && r.getLong(8) == paid.eventIdLo) {
                emitDecision(paid, r.get(16) == 0, r.get(17), r.getLong(18), ts);
                return;
            }
            throw Rejection.userData("a second payment for order " + Long.toUnsignedString(orderId)
                    + ", already decided on another payment");
        }
        boolean filled = false;
        int reason = 0;
        long remaining = 0;
        if (paid.quantity <= 0) {
            reason = INVALID_QUANTITY;
        } else {
            Long have = onHand(skuKey);
            if (have == null) {
                reason = UNKNOWN_SKU;
            } else {
                long left = have - paid.quantity;
                if (((have ^ paid.quantity) & (have ^ left)) < 0 || left < 0) {
                    reason = INSUFFICIENT_STOCK;
                } else {
                    filled = true;
                    remaining = left;
                }
            }
        }
        emitDecision(paid, filled, reason, remaining, ts);
        if (filled) {
            stock.put(skuKey, ByteBuffer.allocate(8).putLong(remaining).array());
        }
        fills.put(key, ByteBuffer.allocate(26).putLong(paid.eventIdHi).putLong(paid.eventIdLo)
                .put((byte) (filled ? 0 : 1)).put((byte) reason).putLong(remaining).array());
    }

    private void emitDecision(Event paid, boolean filled, int reason, long remaining, long ts) {
        Event out = Event.causedBy(paid, filled ? Kind.STOCK_UPDATED : Kind.STOCK_REJECTED);
        out.account = paid.account;
        out.sku = paid.sku;
        out.quantity = paid.quantity;
        out.amount = paid.amount;
        if (filled) {
            out.remaining = remaining;
        } else {
            out.reason = reason;
        }
        emit(Wire.accountKey(paid.account), out, ts);
    }

    private void stockReplenished(Event replenished, byte[] skuKey) throws Rejection {
        if (replenished.quantity <= 0) {
            throw Rejection.userData("stock.replenished of " + replenished.quantity
                    + " units: a replenishment must be positive");
        }
        byte[] key = ByteBuffer.allocate(16).putLong(replenished.eventIdHi).putLong(replenished.eventIdLo).array();
        if (replenishments.get(key) != null) {
            return;
        }
        Long have = onHand(skuKey);
        long stocked;
        try {
            stocked = Math.addExact(have == null ? 0 : have, replenished.quantity);
        } catch (ArithmeticException overflow) {
            throw Rejection.userData("replenishing overflows the stock on hand");
        }
        stock.put(skuKey, ByteBuffer.allocate(8).putLong(stocked).array());
        replenishments.put(key, ByteBuffer.allocate(24).put(skuKey.length == 16 ? skuKey : replenished.sku)
                .putLong(replenished.quantity).array());
    }
}
