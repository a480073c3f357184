//! Property tests of the flow as a state machine: random fundings,
//! replenishments, orders (valid or not, retried or not), replays of inputs
//! and redeliveries of outputs in random order, through Payment and
//! Inventory (and the Order stage). After every step no balance and no stock
//! is negative; after draining, the audit (at-least-once: replays make
//! duplicates) passes against the stages' state: every order has exactly one
//! outcome, cash and stock are conserved.

use codecs::Event;
use proptest::prelude::*;
use services::audit::Guarantee;
use services::flow::{Service, ServiceSet};
use services::testing::{EventFactory, FlowHarness};

const ACCOUNTS: u64 = 4;
const SKUS: [&str; 3] = ["AAPL", "MSFT", "BRK.B"];

#[derive(Clone, Debug)]
enum Step {
    Fund {
        account: u64,
        amount: i64,
    },
    Replenish {
        sku: usize,
        quantity: i64,
    },
    Order {
        account: u64,
        client: u8,
        sku: usize,
        quantity: i64,
        price: i64,
    },
    /// Produce an earlier input again (a producer retry: same event id).
    ReplayInput(usize),
    /// Deliver a pending output now (outputs arrive in any order).
    Deliver(usize),
    /// Deliver an output that was already produced once more (at-least-once).
    Redeliver(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..ACCOUNTS, -50i64..3_000).prop_map(|(account, amount)| Step::Fund { account, amount }),
        2 => (0..SKUS.len(), -2i64..12).prop_map(|(sku, quantity)| Step::Replenish { sku, quantity }),
        6 => (0..ACCOUNTS + 1, 0u8..12, 0..SKUS.len(), -1i64..8, -5i64..400).prop_map(
            |(account, client, sku, quantity, price)| Step::Order { account, client, sku, quantity, price }
        ),
        1 => any::<usize>().prop_map(Step::ReplayInput),
        5 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Redeliver),
    ]
}

fn assert_nothing_negative(h: &FlowHarness) -> Result<(), TestCaseError> {
    for (account, held) in h.state.accounts.accounts.iter() {
        prop_assert!(
            held.balance.0 >= 0,
            "account {:?} at {}",
            account,
            held.balance
        );
    }
    for (sku, level) in h.state.stock.stock.iter() {
        prop_assert!(level.on_hand.0 >= 0, "{:?} at {}", sku, level.on_hand);
    }
    Ok(())
}

fn run(services: ServiceSet, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut f = EventFactory::new();
    let mut h = FlowHarness::new(services);
    let mut inputs: Vec<Event> = Vec::new();
    for step in steps {
        match *step {
            Step::Fund { account, amount } => {
                let e = f.funding(account, amount);
                inputs.push(e);
                h.input(&e);
            }
            Step::Replenish { sku, quantity } => {
                let e = f.replenishment(SKUS[sku], quantity);
                inputs.push(e);
                h.input(&e);
            }
            Step::Order {
                account,
                client,
                sku,
                quantity,
                price,
            } => {
                // A client order id names one order per account: a retry
                // resends the same content (a different content would be a
                // collision, which the stages dead-letter by design).
                let e = f.order(
                    account,
                    &format!("c{client}"),
                    SKUS[sku % SKUS.len()],
                    quantity,
                    price,
                );
                let e = match inputs.iter().find(|i| {
                    matches!((i, &e), (Event::OrderCreated(a), Event::OrderCreated(b))
                        if a.header.order_id == b.header.order_id)
                }) {
                    Some(Event::OrderCreated(first)) => {
                        let Event::OrderCreated(mut retry) = e else {
                            unreachable!()
                        };
                        retry.sku = first.sku;
                        retry.quantity = first.quantity;
                        retry.limit_price = first.limit_price;
                        Event::OrderCreated(retry)
                    }
                    _ => e,
                };
                inputs.push(e);
                h.input(&e);
            }
            Step::ReplayInput(i) => {
                if !inputs.is_empty() {
                    let e = inputs[i % inputs.len()];
                    h.input(&e);
                }
            }
            Step::Deliver(i) => h.deliver_pending(i),
            Step::Redeliver(i) => {
                let outputs: Vec<Event> = h
                    .log
                    .iter()
                    .map(|(_, e)| *e)
                    .filter(|e| !inputs.contains(e))
                    .collect();
                if !outputs.is_empty() {
                    let e = outputs[i % outputs.len()];
                    h.redeliver(&e);
                }
            }
        }
        assert_nothing_negative(&h)?;
    }
    h.drain();
    assert_nothing_negative(&h)?;
    let report = h.audit(Guarantee::AtLeastOnce);
    prop_assert!(
        report.passed(),
        "{}\ndead letters: {:?}",
        report,
        h.dead_letters
    );
    // Only the inputs that break a rule were dead-lettered.
    for reason in &h.dead_letters {
        prop_assert!(
            reason.contains("must be positive"),
            "unexpected dead letter: {}",
            reason
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn payment_and_inventory_conserve_cash_and_stock(steps in proptest::collection::vec(step(), 1..120)) {
        run(ServiceSet::only(Service::Payment).with(Service::Inventory), &steps)?;
    }

    #[test]
    fn the_whole_flow_gives_every_order_one_outcome(steps in proptest::collection::vec(step(), 1..120)) {
        run(ServiceSet::ALL, &steps)?;
    }
}
