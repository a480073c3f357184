//! One test per rule of the Payment, Inventory and Order stages and of the
//! `TradeFlow` composite, each driving a stage the way a shard does (encoded
//! events in, decoded events out) and checking outputs and state.

use codecs::{
    AccountId, Event, EventKind, Money, OrderId, PaymentCompleted, PaymentFailReason, Quantity,
    StockRejectReason, StockRejected,
};
use engine::stage::{ErrorClass, Rejection};
use engine::Stage as _;
use services::flow::{Service, ServiceSet, TradeFlow, TradeFlowState};
use services::ids::derived_event_id;
use services::inventory::{FillStatus, InventoryStage, StockLedger};
use services::order::{
    Milestone, OrderBook, OrderOutcome, OrderRequest, OrderStage, OrderStatus, RequestVerdict,
    HISTORY_ENTRIES_MAX,
};
use services::payment::{AccountBook, PaymentStage, PaymentStatus};
use services::testing::{
    deliver, deliver_at, deliver_timed, sku_of, Emitted, EventFactory, DELIVERED_AT_MS,
};
use services::topics::{
    account_key, sku_key, ACCOUNT_FUNDED, ORDER_CREATED, PAYMENT_COMPLETED, PAYMENT_FAILED,
    PAYMENT_REFUNDED, STOCK_REJECTED, STOCK_UPDATED,
};

const ONE: i32 = 1;

type Outcome = Result<Vec<Emitted>, Rejection>;

fn single(outputs: Outcome) -> Emitted {
    let mut outputs = outputs.unwrap_or_else(|r| panic!("rejected: {}", r.reason));
    assert_eq!(outputs.len(), 1, "{outputs:#?}");
    outputs.remove(0)
}

fn none(outputs: Outcome) {
    let outputs = outputs.unwrap_or_else(|r| panic!("rejected: {}", r.reason));
    assert!(outputs.is_empty(), "{outputs:#?}");
}

fn rejected(outputs: Outcome) -> String {
    match outputs {
        Ok(out) => panic!("accepted, emitting {out:#?}"),
        Err(r) => {
            assert_eq!(r.class, ErrorClass::UserData, "{}", r.reason);
            r.reason
        }
    }
}

fn order_id(created: &Event) -> OrderId {
    created.header().order_id
}

/// A `stock.rejected` exactly as Inventory would emit it for `paid`.
fn rejection_of(paid: &Event) -> Event {
    let Event::PaymentCompleted(p) = paid else {
        panic!("not a payment: {paid:?}")
    };
    let mut ledger = StockLedger::default();
    let out = single(deliver(&mut InventoryStage, &mut ledger, paid, ONE));
    assert!(matches!(out.event, Event::StockRejected(_)), "{out:?}");
    assert_eq!(out.event.header().order_id, p.header.order_id);
    out.event
}

struct PaymentFixture {
    f: EventFactory,
    book: AccountBook,
}

impl PaymentFixture {
    fn funded(account: u64, amount: i64) -> Self {
        let mut f = EventFactory::new();
        let mut book = AccountBook::default();
        let funding = f.funding(account, amount);
        none(deliver(&mut PaymentStage, &mut book, &funding, ONE));
        PaymentFixture { f, book }
    }

    fn send(&mut self, event: &Event) -> Outcome {
        deliver(&mut PaymentStage, &mut self.book, event, ONE)
    }

    fn balance(&self, account: u64) -> Option<i64> {
        self.book.balance(AccountId(account)).map(|m| m.0)
    }
}

#[test]
fn payment_debits_a_funded_account_and_routes_by_sku() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    let out = single(p.send(&order));
    assert_eq!(out.topic, PAYMENT_COMPLETED);
    assert_eq!(out.key, sku_key(&sku_of("AAPL")));
    let Event::PaymentCompleted(paid) = out.event else {
        panic!("{out:?}")
    };
    assert_eq!(paid.amount, Money(600));
    assert_eq!(paid.quantity, Quantity(2));
    assert_eq!(paid.header.order_id, order_id(&order));
    assert_eq!(paid.header.causation_id, order.header().event_id);
    assert_eq!(
        paid.header.event_id,
        derived_event_id(order.header().event_id, EventKind::PaymentCompleted)
    );
    assert_eq!(paid.header.created_at_ns, order.header().created_at_ns);
    assert_eq!(p.balance(7), Some(400));
    let record = p.book.payment(order_id(&order)).copied();
    assert_eq!(record.map(|r| r.status), Some(PaymentStatus::Debited));
}

#[test]
fn payment_refuses_what_the_account_cannot_pay() {
    let mut p = PaymentFixture::funded(7, 599);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    let out = single(p.send(&order));
    assert_eq!(out.topic, PAYMENT_FAILED);
    assert_eq!(out.key, account_key(AccountId(7)));
    let Event::PaymentFailed(failed) = out.event else {
        panic!("{out:?}")
    };
    assert_eq!(failed.reason, PaymentFailReason::InsufficientFunds);
    assert_eq!(failed.amount, Money(600));
    assert_eq!(p.balance(7), Some(599), "nothing debited");
}

#[test]
fn payment_refuses_unknown_accounts_invalid_orders_and_overflow() {
    let mut p = PaymentFixture::funded(7, 1_000_000);
    let cases = [
        (
            p.f.order(8, "c1", "AAPL", 1, 1),
            PaymentFailReason::UnknownAccount,
        ),
        (
            p.f.order(7, "c2", "AAPL", 0, 10),
            PaymentFailReason::InvalidOrder,
        ),
        (
            p.f.order(7, "c3", "AAPL", 5, -1),
            PaymentFailReason::InvalidOrder,
        ),
        (
            p.f.order(7, "c4", "AAPL", -2, -3),
            PaymentFailReason::InvalidOrder,
        ),
        (
            p.f.order(7, "c5", "AAPL", i64::MAX, 2),
            PaymentFailReason::AmountOverflow,
        ),
    ];
    for (order, reason) in cases {
        let out = single(p.send(&order));
        match out.event {
            Event::PaymentFailed(failed) => assert_eq!(failed.reason, reason, "{order:?}"),
            other => panic!("{order:?} gave {other:?}"),
        }
    }
    assert_eq!(p.balance(7), Some(1_000_000));
}

#[test]
fn a_replayed_order_is_debited_once_and_emits_the_same_event() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    let first = single(p.send(&order));
    let again = single(p.send(&order));
    assert_eq!(first, again, "a replay emits byte-identical events");
    assert_eq!(p.balance(7), Some(400), "debited once");

    // A refused order replays as the same refusal even after funds arrive.
    let big = p.f.order(7, "c2", "AAPL", 10, 300);
    let refused = single(p.send(&big));
    let funding = p.f.funding(7, 10_000);
    none(p.send(&funding));
    assert_eq!(single(p.send(&big)), refused);
}

#[test]
fn a_client_retry_of_the_same_order_is_absorbed() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    single(p.send(&order));
    // Same account and client order id: same order id, new event id.
    let retry = p.f.order(7, "c1", "AAPL", 2, 300);
    assert_eq!(order_id(&retry), order_id(&order));
    none(p.send(&retry));
    assert_eq!(p.balance(7), Some(400));
}

#[test]
fn an_order_id_naming_two_different_orders_is_dead_lettered() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    single(p.send(&order));
    let other = p.f.order(7, "c1", "AAPL", 3, 300);
    let reason = rejected(p.send(&other));
    assert!(reason.contains("already names another order"), "{reason}");
    assert_eq!(p.balance(7), Some(400));
}

#[test]
fn a_stock_rejection_is_refunded_once() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(p.send(&order)).event;
    let rejection = rejection_of(&paid);
    let refund = single(p.send(&rejection));
    assert_eq!(refund.topic, PAYMENT_REFUNDED);
    assert_eq!(refund.key, account_key(AccountId(7)));
    let Event::PaymentRefunded(refunded) = refund.event else {
        panic!("{refund:?}")
    };
    assert_eq!(refunded.amount, Money(600));
    assert_eq!(refunded.header.causation_id, rejection.header().event_id);
    assert_eq!(p.balance(7), Some(1_000));
    // The same rejection again: the same refund event, no second credit.
    assert_eq!(single(p.send(&rejection)), refund);
    assert_eq!(p.balance(7), Some(1_000));
    // Another rejection of the same payment: nothing.
    let Event::StockRejected(mut other) = rejection else {
        unreachable!()
    };
    other.header.event_id = p.f.next_event_id();
    none(p.send(&Event::StockRejected(other)));
    assert_eq!(p.balance(7), Some(1_000));
    let record = p.book.payment(order_id(&order)).copied();
    assert_eq!(record.map(|r| r.status), Some(PaymentStatus::Refunded));
}

#[test]
fn refunds_that_do_not_match_a_debit_are_dead_lettered() {
    let mut p = PaymentFixture::funded(7, 1_000);
    let order = p.f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(p.send(&order)).event;
    let Event::StockRejected(rejection) = rejection_of(&paid) else {
        unreachable!()
    };
    let wrong_amount = StockRejected {
        amount: Money(601),
        ..rejection
    };
    assert!(rejected(p.send(&Event::StockRejected(wrong_amount))).contains("debited"));
    let mut wrong_cause = rejection;
    wrong_cause.header.causation_id = p.f.next_event_id();
    assert!(rejected(p.send(&Event::StockRejected(wrong_cause))).contains("names payment"));
    let negative = StockRejected {
        amount: Money(-600),
        ..rejection
    };
    rejected(p.send(&Event::StockRejected(negative)));
    assert_eq!(p.balance(7), Some(400), "no refund applied");

    // An order Payment refused was never paid: no refund for it.
    let refused = p.f.order(7, "c2", "AAPL", 100, 300);
    single(p.send(&refused));
    let mut bogus = rejection;
    bogus.header.order_id = order_id(&refused);
    bogus.header.event_id = p.f.next_event_id();
    let reason = rejected(p.send(&Event::StockRejected(bogus)));
    assert!(reason.contains("never debited"), "{reason}");
}

#[test]
fn a_refund_read_before_its_replayed_debit_is_dead_lettered_and_the_replay_heals() {
    // The first attempt: paid, Inventory rejected, then Payment crashed
    // before committing, so its state is gone but both events exist.
    let mut first = PaymentFixture::funded(7, 1_000);
    let order = first.f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(first.send(&order)).event;
    let mut ledger = StockLedger::default();
    let rejection = single(deliver(&mut InventoryStage, &mut ledger, &paid, ONE)).event;

    // The restored shard happens to read the rejection first.
    let mut replay = PaymentFixture::funded(7, 1_000);
    let reason = rejected(replay.send(&rejection));
    assert!(reason.contains("never debited"), "{reason}");
    assert_eq!(replay.balance(7), Some(1_000));
    // The replayed order emits the same payment, Inventory answers the
    // duplicate with the same rejection, and that one is refunded.
    assert_eq!(single(replay.send(&order)).event, paid);
    assert_eq!(
        single(deliver(&mut InventoryStage, &mut ledger, &paid, ONE)).event,
        rejection
    );
    let refund = single(replay.send(&rejection));
    assert_eq!(refund.topic, PAYMENT_REFUNDED);
    assert_eq!(replay.balance(7), Some(1_000));
}

#[test]
fn fundings_are_positive_and_counted_once() {
    let mut p = PaymentFixture::funded(7, 100);
    let funding = p.f.funding(7, 50);
    none(p.send(&funding));
    none(p.send(&funding));
    assert_eq!(p.balance(7), Some(150));
    for bad in [0, -5] {
        let funding = p.f.funding(7, bad);
        assert!(rejected(p.send(&funding)).contains("must be positive"));
    }
    let huge = p.f.funding(7, i64::MAX);
    rejected(p.send(&huge));
    assert_eq!(p.balance(7), Some(150));
}

#[test]
fn events_on_the_wrong_topic_or_partition_are_dead_lettered() {
    let mut f = EventFactory::new();
    let mut book = AccountBook::default();
    let funding = f.funding(7, 100);
    let reason = rejected(deliver_at(
        &mut PaymentStage,
        &mut book,
        &funding,
        ORDER_CREATED,
        0,
        ONE,
    ));
    assert!(reason.contains(ACCOUNT_FUNDED), "{reason}");
    let partitions = 4;
    let home = engine::partitioner::partition_for(&account_key(AccountId(7)), partitions).0;
    let elsewhere = (home + 1) % partitions;
    let reason = rejected(deliver_at(
        &mut PaymentStage,
        &mut book,
        &funding,
        ACCOUNT_FUNDED,
        elsewhere,
        partitions,
    ));
    assert!(reason.contains("keyed for"), "{reason}");
    assert!(book.balance(AccountId(7)).is_none(), "nothing applied");
    none(deliver(&mut PaymentStage, &mut book, &funding, partitions));
    assert_eq!(book.balance(AccountId(7)), Some(Money(100)));
}

fn paid(f: &mut EventFactory, account: u64, sku: &str, quantity: i64, amount: i64) -> Event {
    let client = format!("o{}", f.next_event_id().0);
    let Event::OrderCreated(order) = f.order(account, &client, sku, quantity, 1) else {
        unreachable!()
    };
    Event::PaymentCompleted(PaymentCompleted {
        header: codecs::EventHeader {
            event_id: derived_event_id(order.header.event_id, EventKind::PaymentCompleted),
            order_id: order.header.order_id,
            causation_id: order.header.event_id,
            created_at_ns: order.header.created_at_ns,
        },
        account: AccountId(account),
        sku: sku_of(sku),
        quantity: Quantity(quantity),
        amount: Money(amount),
    })
}

#[test]
fn inventory_takes_units_that_are_there() {
    let mut f = EventFactory::new();
    let mut ledger = StockLedger::default();
    none(deliver(
        &mut InventoryStage,
        &mut ledger,
        &f.replenishment("AAPL", 10),
        ONE,
    ));
    let payment = paid(&mut f, 7, "AAPL", 4, 1_200);
    let out = single(deliver(&mut InventoryStage, &mut ledger, &payment, ONE));
    assert_eq!(out.topic, STOCK_UPDATED);
    assert_eq!(out.key, account_key(AccountId(7)));
    let Event::StockUpdated(updated) = out.event else {
        panic!("{out:?}")
    };
    assert_eq!(updated.remaining, Quantity(6));
    assert_eq!(updated.amount, Money(1_200), "carries the fill's value");
    assert_eq!(updated.header.causation_id, payment.header().event_id);
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(6)));
    // Replayed: the same event, units taken once.
    assert_eq!(
        single(deliver(&mut InventoryStage, &mut ledger, &payment, ONE)),
        out
    );
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(6)));
    let fill = ledger.fill(payment.header().order_id).map(|r| r.status);
    assert_eq!(
        fill,
        Some(FillStatus::Filled {
            remaining: Quantity(6)
        })
    );
}

#[test]
fn inventory_rejects_what_it_cannot_fill_so_payment_refunds() {
    let mut f = EventFactory::new();
    let mut ledger = StockLedger::default();
    none(deliver(
        &mut InventoryStage,
        &mut ledger,
        &f.replenishment("AAPL", 3),
        ONE,
    ));
    let cases = [
        (
            paid(&mut f, 7, "AAPL", 4, 40),
            StockRejectReason::InsufficientStock,
        ),
        (
            paid(&mut f, 7, "MSFT", 1, 10),
            StockRejectReason::UnknownSku,
        ),
        (
            paid(&mut f, 7, "AAPL", 0, 10),
            StockRejectReason::InvalidQuantity,
        ),
    ];
    for (payment, reason) in cases {
        let out = single(deliver(&mut InventoryStage, &mut ledger, &payment, ONE));
        assert_eq!(out.topic, STOCK_REJECTED);
        assert_eq!(out.key, account_key(AccountId(7)));
        let Event::StockRejected(r) = out.event else {
            panic!("{out:?}")
        };
        assert_eq!(r.reason, reason);
        assert_eq!(r.account, AccountId(7));
        let Event::PaymentCompleted(p) = payment else {
            unreachable!()
        };
        assert_eq!(r.amount, p.amount, "carries what Payment refunds");
    }
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(3)));
}

#[test]
fn inventory_decides_an_order_once() {
    let mut f = EventFactory::new();
    let mut ledger = StockLedger::default();
    none(deliver(
        &mut InventoryStage,
        &mut ledger,
        &f.replenishment("AAPL", 10),
        ONE,
    ));
    let payment = paid(&mut f, 7, "AAPL", 4, 40);
    single(deliver(&mut InventoryStage, &mut ledger, &payment, ONE));
    let Event::PaymentCompleted(mut second) = payment else {
        unreachable!()
    };
    second.header.event_id = f.next_event_id();
    let reason = rejected(deliver(
        &mut InventoryStage,
        &mut ledger,
        &Event::PaymentCompleted(second),
        ONE,
    ));
    assert!(reason.contains("a second payment"), "{reason}");
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(6)));
}

#[test]
fn replenishments_are_positive_and_counted_once() {
    let mut f = EventFactory::new();
    let mut ledger = StockLedger::default();
    let r = f.replenishment("AAPL", 5);
    none(deliver(&mut InventoryStage, &mut ledger, &r, ONE));
    none(deliver(&mut InventoryStage, &mut ledger, &r, ONE));
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(5)));
    for bad in [0, -1] {
        let r = f.replenishment("AAPL", bad);
        rejected(deliver(&mut InventoryStage, &mut ledger, &r, ONE));
    }
    let r = f.replenishment("AAPL", i64::MAX);
    rejected(deliver(&mut InventoryStage, &mut ledger, &r, ONE));
    assert_eq!(ledger.on_hand(&sku_of("AAPL")), Some(Quantity(5)));
}

/// Runs an order through Payment and Inventory and returns every event of
/// its flow, inputs first.
fn flow_of(order: &Event, funds: i64, stock: i64) -> Vec<Event> {
    let account = order.account().map_or(0, |a| a.0);
    let mut p = PaymentFixture::funded(account, funds);
    let mut ledger = StockLedger::default();
    if stock > 0 {
        let r = p.f.replenishment("AAPL", stock);
        none(deliver(&mut InventoryStage, &mut ledger, &r, ONE));
    }
    let mut events = vec![*order];
    let mut queue = vec![*order];
    while let Some(event) = queue.pop() {
        let out = match event.kind() {
            EventKind::OrderCreated | EventKind::StockRejected => p.send(&event),
            EventKind::PaymentCompleted => deliver(&mut InventoryStage, &mut ledger, &event, ONE),
            _ => Ok(Vec::new()),
        };
        for emitted in out.unwrap_or_else(|r| panic!("{}", r.reason)) {
            events.push(emitted.event);
            queue.push(emitted.event);
        }
    }
    events
}

fn order_status(book: &OrderBook, order: &Event) -> Option<OrderStatus> {
    book.order(order_id(order)).map(|r| r.status())
}

#[test]
fn the_order_stage_follows_an_order_to_its_outcome() {
    let mut f = EventFactory::new();
    for (funds, stock, outcome) in [
        (1_000, 10, OrderOutcome::Filled),
        (
            10,
            10,
            OrderOutcome::RejectedFunds(PaymentFailReason::InsufficientFunds),
        ),
        (1_000, 1, OrderOutcome::RejectedStockRefunded),
    ] {
        let order = f.order(7, "c1", "AAPL", 2, 300);
        let mut book = OrderBook::default();
        for event in flow_of(&order, funds, stock) {
            if OrderStage
                .input_topics()
                .contains(&services::topics::topic_of(event.kind()))
            {
                none(deliver(&mut OrderStage, &mut book, &event, ONE));
            }
            if event == order {
                assert_eq!(order_status(&book, &order), Some(OrderStatus::Accepted));
            }
        }
        assert_eq!(
            order_status(&book, &order),
            Some(OrderStatus::Done(outcome))
        );
        let record = book.order(order_id(&order)).copied();
        let milestones: Vec<Milestone> = record
            .map(|r| r.history.entries().iter().map(|e| e.milestone).collect())
            .unwrap_or_default();
        assert_eq!(
            milestones,
            vec![Milestone::Accepted, Milestone::Outcome(outcome)]
        );
    }
}

#[test]
fn an_outcome_read_before_its_create_is_kept_and_completed() {
    let mut f = EventFactory::new();
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let events = flow_of(&order, 1_000, 10);
    let mut book = OrderBook::default();
    let outcome = events
        .iter()
        .find(|e| e.kind() == EventKind::StockUpdated)
        .cloned()
        .unwrap_or_else(|| panic!("no fill in {events:?}"));
    none(deliver(&mut OrderStage, &mut book, &outcome, ONE));
    let record = book.order(order_id(&order)).copied();
    assert_eq!(record.map(|r| r.is_created()), Some(false));
    assert_eq!(
        order_status(&book, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );
    none(deliver(&mut OrderStage, &mut book, &order, ONE));
    let record = book.order(order_id(&order)).copied();
    assert_eq!(record.map(|r| r.is_created()), Some(true));
    assert_eq!(record.map(|r| r.limit_price), Some(Money(300)));
    assert_eq!(
        order_status(&book, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );
}

#[test]
fn amend_and_cancel_are_requests_and_the_outcome_stands() {
    let mut f = EventFactory::new();
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let events = flow_of(&order, 1_000, 10);
    let fill = events
        .iter()
        .find(|e| e.kind() == EventKind::StockUpdated)
        .cloned()
        .unwrap_or_else(|| panic!("no fill"));
    let mut book = OrderBook::default();
    none(deliver(&mut OrderStage, &mut book, &order, ONE));
    let cancel = f.cancel(&order);
    none(deliver(&mut OrderStage, &mut book, &cancel, ONE));
    let request = book.order(order_id(&order)).and_then(|r| r.request);
    assert_eq!(request.map(|r| r.verdict), Some(RequestVerdict::Open));
    assert_eq!(request.map(|r| r.request), Some(OrderRequest::Cancel));
    none(deliver(&mut OrderStage, &mut book, &fill, ONE));
    let request = book.order(order_id(&order)).and_then(|r| r.request);
    assert_eq!(request.map(|r| r.verdict), Some(RequestVerdict::Superseded));
    assert_eq!(
        order_status(&book, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );
    let amend = f.amend(&order, 5, 310);
    none(deliver(&mut OrderStage, &mut book, &amend, ONE));
    let request = book.order(order_id(&order)).and_then(|r| r.request);
    assert_eq!(request.map(|r| r.verdict), Some(RequestVerdict::TooLate));
    assert_eq!(
        request.map(|r| r.request),
        Some(OrderRequest::Amend {
            quantity: Quantity(5),
            limit_price: Money(310)
        })
    );
    assert_eq!(
        order_status(&book, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );
    let bad = f.amend(&order, 0, 310);
    rejected(deliver(&mut OrderStage, &mut book, &bad, ONE));
}

#[test]
fn a_second_different_outcome_is_dead_lettered_and_the_first_stands() {
    let mut f = EventFactory::new();
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let filled = flow_of(&order, 1_000, 10);
    let refused = flow_of(&order, 1, 10);
    let mut book = OrderBook::default();
    for event in &filled {
        if event.kind() == EventKind::StockUpdated || event == &order {
            none(deliver(&mut OrderStage, &mut book, event, ONE));
            // A duplicate of the same outcome is absorbed.
            none(deliver(&mut OrderStage, &mut book, event, ONE));
        }
    }
    let failure = refused
        .iter()
        .find(|e| e.kind() == EventKind::PaymentFailed)
        .unwrap_or_else(|| panic!("no failure"));
    let reason = rejected(deliver(&mut OrderStage, &mut book, failure, ONE));
    assert!(reason.contains("exactly one"), "{reason}");
    assert_eq!(
        order_status(&book, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );
}

#[test]
fn an_orders_history_is_bounded() {
    let mut f = EventFactory::new();
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let mut book = OrderBook::default();
    none(deliver(&mut OrderStage, &mut book, &order, ONE));
    for i in 0..10 {
        let amend = f.amend(&order, 1 + i, 300);
        none(deliver(&mut OrderStage, &mut book, &amend, ONE));
    }
    let record = book.order(order_id(&order)).copied();
    let history = record.map(|r| r.history).unwrap_or_default();
    assert_eq!(history.entries().len(), HISTORY_ENTRIES_MAX);
    assert_eq!(history.dropped(), 11 - HISTORY_ENTRIES_MAX as u32);
    assert!(history
        .entries()
        .iter()
        .all(|e| e.milestone == Milestone::AmendRequested));
}

#[test]
fn the_composite_runs_the_whole_flow_and_order_hears_payment_directly() {
    let mut f = EventFactory::new();
    let mut flow = TradeFlow::new(ServiceSet::ALL);
    let mut state = TradeFlowState::default();
    let mut send = |state: &mut TradeFlowState, e: &Event| deliver(&mut flow, state, e, ONE);
    none(send(&mut state, &f.funding(7, 1_000)));
    none(send(&mut state, &f.replenishment("AAPL", 3)));

    // Filled: order → payment.completed → stock.updated, through "Kafka".
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(send(&mut state, &order));
    assert_eq!(paid.topic, PAYMENT_COMPLETED);
    assert_eq!(
        order_status(&state.orders, &order),
        Some(OrderStatus::Accepted)
    );
    let fill = single(send(&mut state, &paid.event));
    assert_eq!(fill.topic, STOCK_UPDATED);
    none(send(&mut state, &fill.event));
    assert_eq!(
        order_status(&state.orders, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );

    // Refused for funds: the Order stage knows at once.
    let poor = f.order(7, "c2", "AAPL", 100, 300);
    let failed = single(send(&mut state, &poor));
    assert_eq!(failed.topic, PAYMENT_FAILED, "still emitted for others");
    assert_eq!(
        order_status(&state.orders, &poor),
        Some(OrderStatus::Done(OrderOutcome::RejectedFunds(
            PaymentFailReason::InsufficientFunds
        )))
    );

    // Rejected for stock: refunded, and the Order stage knows with the refund.
    let greedy = f.order(7, "c3", "AAPL", 2, 100);
    let paid = single(send(&mut state, &greedy));
    let rejection = single(send(&mut state, &paid.event));
    assert_eq!(rejection.topic, STOCK_REJECTED);
    let refund = single(send(&mut state, &rejection.event));
    assert_eq!(refund.topic, PAYMENT_REFUNDED);
    assert_eq!(
        order_status(&state.orders, &greedy),
        Some(OrderStatus::Done(OrderOutcome::RejectedStockRefunded))
    );
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(400)));
    assert_eq!(state.stock.on_hand(&sku_of("AAPL")), Some(Quantity(1)));
}

#[test]
fn the_composite_checks_every_service_before_any_writes() {
    let mut f = EventFactory::new();
    let mut flow = TradeFlow::new(ServiceSet::ALL);
    let mut state = TradeFlowState::default();
    none(deliver(&mut flow, &mut state, &f.funding(7, 1_000), ONE));
    // The Order stage saw a fill for this order id on another account first.
    let order = f.order(7, "c1", "AAPL", 1, 100);
    let Event::OrderCreated(mut elsewhere) = order else {
        unreachable!()
    };
    elsewhere.account = AccountId(8);
    let foreign = flow_of(&Event::OrderCreated(elsewhere), 1_000, 10);
    let mut order_only = TradeFlow::new(ServiceSet::only(Service::Order));
    for event in &foreign {
        if event.kind() == EventKind::StockUpdated {
            // Delivered as if on account 7's partition (one partition here).
            none(deliver(&mut order_only, &mut state, event, ONE));
        }
    }
    let reason = rejected(deliver(&mut flow, &mut state, &order, ONE));
    assert!(reason.contains("before its create"), "{reason}");
    assert!(
        state.accounts.payment(order_id(&order)).is_none(),
        "Payment did not act on an order the Order stage refused"
    );
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(1_000)));
}

#[test]
fn a_single_service_composite_touches_only_its_stores() {
    let mut f = EventFactory::new();
    let mut flow = TradeFlow::new(ServiceSet::only(Service::Payment));
    let mut state = TradeFlowState::default();
    none(deliver(&mut flow, &mut state, &f.funding(7, 1_000), ONE));
    let order = f.order(7, "c1", "AAPL", 2, 300);
    single(deliver(&mut flow, &mut state, &order, ONE));
    assert!(state.orders.orders.is_empty());
    assert!(state.stock.stock.is_empty());
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(400)));
}

/// A commit as the shard makes it: every store's dirty keys to the changelog
/// (which is also when finished records join the retention queue).
fn commit(state: &mut TradeFlowState) -> usize {
    use engine::PartitionStores as _;
    let mut records = 0;
    state.for_each_store(&mut |store| store.write_dirty(&mut |_, _| records += 1));
    records
}

#[test]
fn after_the_retention_a_finished_order_is_forgotten_by_all_three_services_and_a_resubmission_is_a_new_order(
) {
    const HOUR_MS: i64 = 3_600_000;
    let t0 = DELIVERED_AT_MS;
    let mut f = EventFactory::new();
    let mut flow = TradeFlow::new(ServiceSet::ALL).with_order_retention(HOUR_MS);
    let mut state = TradeFlowState::default();
    let mut send = |state: &mut TradeFlowState, e: &Event, at_ms: i64| {
        deliver_timed(&mut flow, state, e, ONE, at_ms)
    };
    none(send(&mut state, &f.funding(7, 2_000), t0));
    none(send(&mut state, &f.replenishment("AAPL", 10), t0));
    let order = f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(send(&mut state, &order, t0));
    let fill = single(send(&mut state, &paid.event, t0));
    none(send(&mut state, &fill.event, t0));
    commit(&mut state);
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(1_400)));

    // Within the retention the same client order id is the same order.
    let again = f.order(7, "c1", "AAPL", 2, 300);
    none(send(&mut state, &again, t0 + HOUR_MS / 2));
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(1_400)));
    assert_eq!(
        order_status(&state.orders, &order),
        Some(OrderStatus::Done(OrderOutcome::Filled))
    );

    // After it, a new order under the same id: decided, paid and filled again.
    let later = f.order(7, "c1", "AAPL", 2, 300);
    let paid = single(send(&mut state, &later, t0 + 2 * HOUR_MS));
    assert_eq!(paid.topic, PAYMENT_COMPLETED);
    assert_eq!(
        order_status(&state.orders, &later),
        Some(OrderStatus::Accepted),
        "the old record was forgotten, not taken for this one"
    );
    let fill = single(send(&mut state, &paid.event, t0 + 2 * HOUR_MS));
    assert_eq!(fill.topic, STOCK_UPDATED, "Inventory forgot its fill too");
    none(send(&mut state, &fill.event, t0 + 2 * HOUR_MS));
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(800)));
    assert_eq!(state.stock.on_hand(&sku_of("AAPL")), Some(Quantity(6)));
    commit(&mut state);

    // With nothing naming it again, the incremental eviction takes it once
    // the clock passes the retention: all three records go, with
    // tombstones; the account and the stock stay.
    let id = order_id(&later);
    assert!(state.orders.order(id).is_some());
    none(send(&mut state, &f.funding(7, 1), t0 + 4 * HOUR_MS));
    none(send(
        &mut state,
        &f.replenishment("AAPL", 1),
        t0 + 4 * HOUR_MS,
    ));
    assert!(state.orders.order(id).is_none());
    assert!(state.accounts.payment(id).is_none());
    assert!(state.stock.fill(id).is_none());
    assert_eq!(state.accounts.balance(AccountId(7)), Some(Money(801)));
    assert_eq!(state.stock.on_hand(&sku_of("AAPL")), Some(Quantity(7)));
    let mut tombstones = 0;
    {
        use engine::PartitionStores as _;
        state.for_each_store(&mut |store| {
            store.write_dirty(&mut |_, value| tombstones += usize::from(value.is_none()))
        });
    }
    assert_eq!(tombstones, 3, "one per per-order store");
}
