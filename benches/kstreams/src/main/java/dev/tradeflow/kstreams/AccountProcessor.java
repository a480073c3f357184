package dev.tradeflow.kstreams;

import java.nio.ByteBuffer;
import java.util.Arrays;

import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The account-keyed sub-topology: Payment (services/src/payment.rs) and the
 * Order stage (a reduced services/src/order.rs: one record per order with
 * its single terminal outcome), chained in one processor as tradeflow's
 * TradeFlow composite chains them in one shard, so Payment's own outcomes
 * reach the Order stage without a trip through Kafka.
 *
 * <p>Payment debits quantity × limit price on order.created if the account
 * can pay (payment.completed, keyed by sku) or refuses (payment.failed,
 * keyed by account); refunds once on stock.rejected (payment.refunded);
 * credits account.funded once per event id. Replays re-emit the recorded
 * decision with the same derived ids; a client's retry (same order, same
 * content, new event id) is absorbed; a collision is dead-lettered.
 *
 * <p>Stores: in-memory key-value stores with changelogs, one per kind of
 * state, named as tradeflow's (payment-accounts, payment-orders,
 * payment-fundings, order-orders).
 */
final class AccountProcessor extends FlowProcessor {
    static final String ACCOUNTS = "payment-accounts";
    static final String PAYMENTS = "payment-orders";
    static final String FUNDINGS = "payment-fundings";
    static final String ORDERS = "order-orders";

    // PaymentFailReason codes (wire order).
    static final int INSUFFICIENT_FUNDS = 0;
    static final int UNKNOWN_ACCOUNT = 1;
    static final int AMOUNT_OVERFLOW = 2;
    static final int INVALID_ORDER = 3;

    private static final byte DEBITED = 0;
    private static final byte FAILED = 1;
    private static final byte REFUNDED = 2;

    // Order stage outcomes.
    private static final byte OPEN = 0;
    private static final byte FILLED = 1;
    private static final byte REJECTED_FUNDS = 2;
    private static final byte REJECTED_STOCK_REFUNDED = 3;

    private KeyValueStore<byte[], byte[]> accounts;
    private KeyValueStore<byte[], byte[]> payments;
    private KeyValueStore<byte[], byte[]> fundings;
    private KeyValueStore<byte[], byte[]> orders;

    AccountProcessor(Topics topics, int partitions) {
        super(topics, partitions, "payment");
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        super.init(context);
        accounts = context.getStateStore(ACCOUNTS);
        payments = context.getStateStore(PAYMENTS);
        fundings = context.getStateStore(FUNDINGS);
        orders = context.getStateStore(ORDERS);
    }

    @Override
    void apply(Event e, int partition, long ts) throws Rejection {
        expectPartition(Wire.accountKey(e.account), partition);
        switch (e.kind) {
            case ORDER_CREATED:
                orderCreated(e, ts);
                break;
            case STOCK_REJECTED:
                stockRejected(e, ts);
                break;
            case ACCOUNT_FUNDED:
                accountFunded(e);
                break;
            case STOCK_UPDATED:
                recordOutcome(e, FILLED, true);
                break;
            case ORDER_AMENDED:
            case ORDER_CANCELLED:
                recordRequest(e);
                break;
            default:
                throw Rejection.userData("the account-keyed processor does not take " + e.kind);
        }
    }

    // ---- Payment ----

    private static byte[] orderKey(long orderId) {
        return ByteBuffer.allocate(8).putLong(orderId).array();
    }

    private static byte[] eventKey(long hi, long lo) {
        return ByteBuffer.allocate(16).putLong(hi).putLong(lo).array();
    }

    private Long balance(long account) {
        byte[] v = accounts.get(Wire.accountKey(account));
        return v == null ? null : ByteBuffer.wrap(v).getLong();
    }

    private void putBalance(long account, long balance) {
        accounts.put(Wire.accountKey(account), ByteBuffer.allocate(8).putLong(balance).array());
    }

    /** account 8 | sku 16 | quantity 8 | limit price 8 | amount 8 | status 1 | reason 1 | decided by 16 | refund cause 16. */
    private static final class PaymentRecord {
        long account;
        byte[] sku = new byte[Wire.SKU_BYTES];
        long quantity;
        long limitPrice;
        long amount;
        byte status;
        int reason;
        long decidedHi;
        long decidedLo;
        long refundHi;
        long refundLo;

        byte[] encode() {
            return ByteBuffer.allocate(82).putLong(account).put(sku).putLong(quantity).putLong(limitPrice)
                    .putLong(amount).put(status).put((byte) reason).putLong(decidedHi).putLong(decidedLo)
                    .putLong(refundHi).putLong(refundLo).array();
        }

        static PaymentRecord decode(byte[] v) {
            ByteBuffer b = ByteBuffer.wrap(v);
            PaymentRecord r = new PaymentRecord();
            r.account = b.getLong();
            b.get(r.sku);
            r.quantity = b.getLong();
            r.limitPrice = b.getLong();
            r.amount = b.getLong();
            r.status = b.get();
            r.reason = b.get();
            r.decidedHi = b.getLong();
            r.decidedLo = b.getLong();
            r.refundHi = b.getLong();
            r.refundLo = b.getLong();
            return r;
        }
    }

    private void orderCreated(Event order, long ts) throws Rejection {
        long orderId = requireOrder(order);
        byte[] key = orderKey(orderId);
        byte[] existing = payments.get(key);
        if (existing != null) {
            PaymentRecord rec = PaymentRecord.decode(existing);
            if (rec.decidedHi == order.eventIdHi && rec.decidedLo == order.eventIdLo) {
                // A replay of the event already decided: the same outputs again.
                emitDecision(order, rec.status != FAILED, rec.reason, rec.amount, ts);
                return;
            }
            if (rec.account == order.account && Arrays.equals(rec.sku, order.sku)
                    && rec.quantity == order.quantity && rec.limitPrice == order.limitPrice) {
                return; // a client's retry of the same order: decided once already
            }
            throw Rejection.userData("order id " + Long.toUnsignedString(orderId) + " already names another order");
        }
        // Decide without changing anything.
        boolean ok = false;
        int reason = 0;
        long amount = 0;
        Long balance = null;
        if (order.quantity <= 0 || order.limitPrice <= 0) {
            reason = INVALID_ORDER;
        } else {
            try {
                amount = Math.multiplyExact(order.limitPrice, order.quantity);
                balance = balance(order.account);
                if (balance == null) {
                    reason = UNKNOWN_ACCOUNT;
                } else if (balance < amount) {
                    reason = INSUFFICIENT_FUNDS;
                } else {
                    ok = true;
                }
            } catch (ArithmeticException overflow) {
                reason = AMOUNT_OVERFLOW;
                amount = 0;
            }
        }
        emitDecision(order, ok, reason, amount, ts);
        if (ok) {
            putBalance(order.account, balance - amount);
        }
        PaymentRecord rec = new PaymentRecord();
        rec.account = order.account;
        rec.sku = order.sku;
        rec.quantity = order.quantity;
        rec.limitPrice = order.limitPrice;
        rec.amount = amount;
        rec.status = ok ? DEBITED : FAILED;
        rec.reason = ok ? 0 : reason;
        rec.decidedHi = order.eventIdHi;
        rec.decidedLo = order.eventIdLo;
        payments.put(key, rec.encode());
        recordCreated(order);
        if (!ok) {
            recordOutcome(Event.causedBy(order, Kind.PAYMENT_FAILED), REJECTED_FUNDS, false);
        }
    }

    private void emitDecision(Event order, boolean ok, int reason, long amount, long ts) {
        if (ok) {
            Event paid = Event.causedBy(order, Kind.PAYMENT_COMPLETED);
            paid.account = order.account;
            paid.sku = order.sku;
            paid.quantity = order.quantity;
            paid.amount = amount;
            emit(Wire.skuKey(order.sku), paid, ts);
        } else {
            Event failed = Event.causedBy(order, Kind.PAYMENT_FAILED);
            failed.account = order.account;
            failed.sku = order.sku;
            failed.quantity = order.quantity;
            failed.amount = amount;
            failed.reason = reason;
            emit(Wire.accountKey(order.account), failed, ts);
        }
    }

    private Event refundEvent(Event cause, PaymentRecord rec) {
        Event refund = Event.causedBy(cause, Kind.PAYMENT_REFUNDED);
        refund.account = rec.account;
        refund.sku = rec.sku;
        refund.quantity = rec.quantity;
        refund.amount = rec.amount;
        return refund;
    }

    private void stockRejected(Event rejection, long ts) throws Rejection {
        long orderId = requireOrder(rejection);
        if (rejection.amount <= 0) {
            throw Rejection.userData("stock.rejected for order " + Long.toUnsignedString(orderId)
                    + " asks back " + rejection.amount + ", not a positive amount");
        }
        byte[] key = orderKey(orderId);
        byte[] existing = payments.get(key);
        if (existing == null) {
            throw Rejection.userData("stock.rejected for order " + Long.toUnsignedString(orderId)
                    + ", which Payment never debited (no payment recorded)");
        }
        PaymentRecord rec = PaymentRecord.decode(existing);
        switch (rec.status) {
            case FAILED:
                throw Rejection.userData("stock.rejected for order " + Long.toUnsignedString(orderId)
                        + ", which Payment refused and never debited");
            case REFUNDED:
                if (rec.refundHi == rejection.eventIdHi && rec.refundLo == rejection.eventIdLo) {
                    emit(Wire.accountKey(rejection.account), refundEvent(rejection, rec), ts);
                }
                return; // refund once
            default:
                break;
        }
        if (rec.account != rejection.account || rec.amount != rejection.amount) {
            throw Rejection.userData("stock.rejected for order " + Long.toUnsignedString(orderId)
                    + " disagrees with what Payment debited");
        }
        long[] paid = Ids.derivedEventId(rec.decidedHi, rec.decidedLo, Kind.PAYMENT_COMPLETED);
        if (rejection.causationHi != paid[0] || rejection.causationLo != paid[1]) {
            throw Rejection.userData("stock.rejected for order " + Long.toUnsignedString(orderId)
                    + " names another payment than the one that paid it");
        }
        Long balance = balance(rejection.account);
        if (balance == null) {
            throw new Rejection("internal", "account of debited order " + Long.toUnsignedString(orderId) + " is missing");
        }
        long credited;
        try {
            credited = Math.addExact(balance, rejection.amount);
        } catch (ArithmeticException overflow) {
            throw Rejection.userData("refunding " + rejection.amount + " overflows the balance");
        }
        Event refund = refundEvent(rejection, rec);
        emit(Wire.accountKey(rejection.account), refund, ts);
        putBalance(rejection.account, credited);
        rec.status = REFUNDED;
        rec.refundHi = rejection.eventIdHi;
        rec.refundLo = rejection.eventIdLo;
        payments.put(key, rec.encode());
        recordOutcome(refund, REJECTED_STOCK_REFUNDED, false);
    }

    private void accountFunded(Event funded) throws Rejection {
        if (funded.amount <= 0) {
            throw Rejection.userData("account.funded for account " + Long.toUnsignedString(funded.account)
                    + " of " + funded.amount + ": a funding must be positive");
        }
        byte[] key = eventKey(funded.eventIdHi, funded.eventIdLo);
        if (fundings.get(key) != null) {
            return;
        }
        Long balance = balance(funded.account);
        long credited;
        try {
            credited = Math.addExact(balance == null ? 0 : balance, funded.amount);
        } catch (ArithmeticException overflow) {
            throw Rejection.userData("funding overflows the balance");
        }
        putBalance(funded.account, credited);
        fundings.put(key, ByteBuffer.allocate(16).putLong(funded.account).putLong(funded.amount).array());
    }

    // ---- Order stage ----
    // created 1 | outcome 1 | outcome event 16 | requests 4 | account 8 | sku 16 | quantity 8 | limit price 8

    private static final int ORDER_RECORD_BYTES = 62;

    private void recordCreated(Event order) {
        byte[] key = orderKey(order.orderId);
        byte[] v = orders.get(key);
        ByteBuffer b = v == null ? ByteBuffer.allocate(ORDER_RECORD_BYTES) : ByteBuffer.wrap(v);
        if (b.get(0) == 1) {
            return;
        }
        b.put(0, (byte) 1);
        b.position(22);
        b.putLong(order.account).put(order.sku).putLong(order.quantity).putLong(order.limitPrice);
        orders.put(key, b.array());
    }

    /** Records an order's terminal outcome; a second, different one is refused (dead-lettered when it came from a topic). */
    private void recordOutcome(Event outcome, byte kind, boolean fromTopic) throws Rejection {
        long orderId = requireOrder(outcome);
        byte[] key = orderKey(orderId);
        byte[] v = orders.get(key);
        ByteBuffer b = v == null ? ByteBuffer.allocate(ORDER_RECORD_BYTES) : ByteBuffer.wrap(v);
        if (b.get(1) != OPEN) {
            if (b.get(1) == kind && b.getLong(2) == outcome.eventIdHi && b.getLong(10) == outcome.eventIdLo) {
                return; // the same outcome again
            }
            if (fromTopic) {
                throw Rejection.userData("order " + Long.toUnsignedString(orderId) + " already has another outcome");
            }
            return;
        }
        b.put(1, kind);
        b.putLong(2, outcome.eventIdHi);
        b.putLong(10, outcome.eventIdLo);
        if (v == null) {
            b.putLong(22, outcome.account);
            b.position(30);
            b.put(outcome.sku);
            b.putLong(46, outcome.quantity);
        }
        orders.put(key, b.array());
    }

    private void recordRequest(Event request) throws Rejection {
        long orderId = requireOrder(request);
        byte[] key = orderKey(orderId);
        byte[] v = orders.get(key);
        ByteBuffer b = v == null ? ByteBuffer.allocate(ORDER_RECORD_BYTES) : ByteBuffer.wrap(v);
        b.putInt(18, b.getInt(18) + 1);
        if (v == null) {
            b.putLong(22, request.account);
            b.position(30);
            b.put(request.sku);
        }
        orders.put(key, b.array());
    }
}
