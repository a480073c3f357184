//! The audit passes a clean run and fails doctored ones: each test removes,
//! duplicates or alters events of a real run (or the state) and expects the
//! violation that names what broke. An audit that cannot fail proves nothing.
//! A seeded synthetic scenario checks the deserved outcomes: a funding lost on
//! the way passes every other check and fails that one.

use codecs::{AccountId, Event, EventKind, Money, PaymentFailReason, PaymentFailed, Quantity};
use loadgen::synth::{deserved_outcomes, generate, SynthConfig};
use loadgen::traffic::Payload;
use services::audit::{
    audit, Audit, AuditReport, Deserved, DeservedOutcomes, Guarantee, Outcome, Violation,
};
use services::flow::{Service, ServiceSet};
use services::testing::{sku_of, EventFactory, FlowHarness};
use services::topics::{topic_of, PAYMENT_FAILED, STOCK_UPDATED};

use Guarantee::{AtLeastOnce, ExactlyOnce};

/// A run with every kind of outcome: fills, refusals (funds, unknown
/// account, invalid), stock rejections with refunds, a client retry, an
/// amend, a cancel and a refused (negative) funding.
fn clean_run() -> FlowHarness {
    let mut f = EventFactory::new();
    let mut h = FlowHarness::new(ServiceSet::ALL);
    h.input(&f.funding(1, 10_000));
    h.input(&f.funding(2, 500));
    h.input(&f.funding(2, -5));
    h.input(&f.replenishment("AAPL", 10));
    h.input(&f.replenishment("MSFT", 1));
    let orders = [
        f.order(1, "a", "AAPL", 4, 100),
        f.order(1, "b", "MSFT", 2, 100),
        f.order(2, "c", "AAPL", 10, 100),
        f.order(3, "d", "AAPL", 1, 100),
        f.order(1, "e", "AAPL", 0, 100),
        f.order(1, "a", "AAPL", 4, 100),
        f.order(1, "f", "AAPL", 6, 100),
    ];
    for order in &orders {
        h.input(order);
        h.drain();
    }
    h.input(&f.amend(&orders[0], 5, 100));
    h.input(&f.cancel(&orders[1]));
    h.drain();
    h
}

fn events(h: &FlowHarness) -> Vec<(&'static str, Event)> {
    h.log.clone()
}

fn run_audit(log: &[(&'static str, Event)], guarantee: Guarantee) -> services::audit::AuditReport {
    audit(log.iter().map(|(t, e)| (*t, e)), guarantee)
}

fn has(report: &services::audit::AuditReport, pred: impl Fn(&Violation) -> bool) -> bool {
    report.violations.iter().any(pred)
}

#[test]
fn a_clean_run_passes_and_counts_every_outcome() {
    let h = clean_run();
    assert!(
        h.dead_letters.len() == 1,
        "the negative funding: {:?}",
        h.dead_letters
    );
    let report = h.audit(ExactlyOnce);
    assert!(report.passed(), "{report}");
    let o = report.orders;
    assert_eq!(o.accepted, 6);
    assert_eq!(o.resubmitted, 1);
    assert_eq!(o.filled, 2, "a and f");
    assert_eq!(
        o.rejected_funds, 3,
        "c (funds), d (unknown account), e (invalid)"
    );
    assert_eq!(o.rejected_stock_refunded, 1, "b");
    assert_eq!(o.requests, 2);
    assert_eq!(report.refused_inputs, 1);
    assert_eq!(report.totals.funded, 10_500);
    assert_eq!(report.totals.filled_value, 1_000);
    assert_eq!(report.totals.balances, 9_500);
    assert_eq!(report.totals.replenished_units, 11);
    assert_eq!(report.totals.filled_units, 10);
    assert_eq!(report.balances.get(&AccountId(1)), Some(&9_000));
    assert!(report.state_compared);
    let text = report.to_string();
    assert!(text.starts_with("audit PASSED"), "{text}");
    assert!(text.contains("6 accepted"), "{text}");
}

#[test]
fn a_lost_outcome_is_found() {
    let h = clean_run();
    let mut log = events(&h);
    let index = log
        .iter()
        .position(|(t, _)| *t == STOCK_UPDATED)
        .unwrap_or_else(|| panic!("no fill"));
    log.remove(index);
    let report = run_audit(&log, ExactlyOnce);
    assert!(!report.passed());
    assert!(
        has(&report, |v| matches!(v, Violation::Lost { .. })),
        "{report}"
    );
    assert!(
        has(&report, |v| matches!(v, Violation::CashNotConserved { .. })),
        "the debit is no longer matched by a fill: {report}"
    );
    assert!(report.to_string().contains("no terminal outcome"));
}

#[test]
fn duplicates_fail_exactly_once_and_count_once_at_least_once() {
    let h = clean_run();
    let mut log = events(&h);
    let again: Vec<_> = log
        .iter()
        .filter(|(t, _)| *t != PAYMENT_FAILED)
        .cloned()
        .collect();
    log.extend(again);
    let exactly = run_audit(&log, ExactlyOnce);
    assert!(
        has(&exactly, |v| matches!(v, Violation::Duplicate { .. })),
        "{exactly}"
    );
    let at_least = run_audit(&log, AtLeastOnce);
    assert!(at_least.passed(), "{at_least}");
    assert!(at_least.duplicates > 0);
    assert_eq!(at_least.totals, run_audit(&events(&h), AtLeastOnce).totals);
}

#[test]
fn a_second_outcome_is_found() {
    let h = clean_run();
    let mut log = events(&h);
    let Some(Event::StockUpdated(fill)) = log
        .iter()
        .find(|(t, _)| *t == STOCK_UPDATED)
        .map(|(_, e)| *e)
    else {
        panic!("no fill")
    };
    let failed = Event::PaymentFailed(PaymentFailed {
        header: codecs::EventHeader {
            event_id: codecs::EventId(u128::MAX - 7),
            ..fill.header
        },
        account: fill.account,
        sku: fill.sku,
        quantity: fill.quantity,
        amount: fill.amount,
        reason: PaymentFailReason::InsufficientFunds,
    });
    log.push((PAYMENT_FAILED, failed));
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(
            v,
            Violation::SeveralOutcomes { outcomes: 2, .. }
        )),
        "{report}"
    );
    assert!(has(&report, |v| matches!(
        v,
        Violation::SeveralPaymentDecisions {
            completed: 1,
            failed: 1,
            ..
        }
    )));
}

#[test]
fn a_reused_id_and_an_altered_amount_are_found() {
    let h = clean_run();
    let mut log = events(&h);
    let index = log
        .iter()
        .position(|(t, _)| *t == STOCK_UPDATED)
        .unwrap_or_else(|| panic!("no fill"));
    let (topic, Event::StockUpdated(fill)) = log[index] else {
        panic!("not a fill")
    };
    let mut inflated = fill;
    inflated.amount = Money(fill.amount.0 + 1);
    log.push((topic, Event::StockUpdated(inflated)));
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(v, Violation::EventIdReused { .. })),
        "{report}"
    );

    log.pop();
    log[index] = (topic, Event::StockUpdated(inflated));
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(
            v,
            Violation::AmountMismatch {
                kind: EventKind::StockUpdated,
                ..
            }
        )),
        "{report}"
    );
    assert!(has(&report, |v| matches!(
        v,
        Violation::CashNotConserved { .. }
    )));
}

#[test]
fn an_overdraft_and_overselling_are_found() {
    let h = clean_run();
    let mut log = events(&h);
    // Drop the fundings: the debits now exceed what came in.
    log.retain(|(_, e)| e.kind() != EventKind::AccountFunded);
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(v, Violation::NegativeBalance { .. })),
        "{report}"
    );
    let mut log = events(&h);
    log.retain(|(_, e)| e.kind() != EventKind::StockReplenished);
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(v, Violation::NegativeStock { .. })),
        "{report}"
    );
}

#[test]
fn a_misrouted_event_and_a_broken_chain_are_found() {
    let h = clean_run();
    let mut log = events(&h);
    let index = log
        .iter()
        .position(|(t, _)| *t == STOCK_UPDATED)
        .unwrap_or_else(|| panic!("no fill"));
    log[index].0 = PAYMENT_FAILED;
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(v, Violation::Misrouted { .. })),
        "{report}"
    );

    let mut log = events(&h);
    log.retain(|(_, e)| e.kind() != EventKind::PaymentCompleted);
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(
            v,
            Violation::BrokenChain {
                missing: EventKind::PaymentCompleted,
                ..
            }
        )),
        "{report}"
    );
    let mut log = events(&h);
    log.retain(|(_, e)| e.kind() != EventKind::OrderCreated);
    let report = run_audit(&log, AtLeastOnce);
    assert!(
        has(&report, |v| matches!(v, Violation::WithoutOrder { .. })),
        "{report}"
    );
}

#[test]
fn state_that_disagrees_with_the_events_is_found() {
    let h = clean_run();
    let mut snapshot = h.snapshot();
    if let Some(balances) = snapshot.balances.as_mut() {
        balances.insert(AccountId(1), Money(9_001));
    }
    if let Some(on_hand) = snapshot.on_hand.as_mut() {
        on_hand.insert(sku_of("AAPL"), Quantity(-1));
    }
    if let Some(statuses) = snapshot.order_status.as_mut() {
        for status in statuses.values_mut() {
            *status = services::audit::OrderState::Accepted;
        }
    }
    let mut audit = Audit::new(ExactlyOnce);
    for (topic, event) in &h.log {
        audit.record(topic, event);
    }
    let report = audit.finish_with_state(&snapshot);
    for (what, found) in [
        (
            "balance",
            has(&report, |v| matches!(v, Violation::BalanceDiffers { .. })),
        ),
        (
            "cash",
            has(&report, |v| matches!(v, Violation::CashNotConserved { .. })),
        ),
        (
            "stock",
            has(&report, |v| matches!(v, Violation::StockDiffers { .. })),
        ),
        (
            "negative",
            has(&report, |v| matches!(v, Violation::NegativeStock { .. })),
        ),
        (
            "conserved",
            has(&report, |v| {
                matches!(v, Violation::StockNotConserved { .. })
            }),
        ),
        (
            "status",
            has(&report, |v| matches!(v, Violation::StatusDiffers { .. })),
        ),
    ] {
        assert!(found, "{what} not reported: {report}");
    }
    assert!(report.to_string().starts_with("audit FAILED"));
}

#[test]
fn a_run_without_the_order_stage_compares_only_what_it_has() {
    let mut f = EventFactory::new();
    let mut h = FlowHarness::new(ServiceSet::only(Service::Payment).with(Service::Inventory));
    h.input(&f.funding(1, 1_000));
    h.input(&f.replenishment("AAPL", 3));
    h.input(&f.order(1, "a", "AAPL", 2, 100));
    h.drain();
    let report = h.audit(ExactlyOnce);
    assert!(report.passed(), "{report}");
    assert_eq!(report.orders.filled, 1);
    assert!(h.snapshot().order_status.is_none());
    assert_eq!(topic_of(EventKind::StockUpdated), STOCK_UPDATED);
}

/// A seeded synthetic scenario through the whole flow in memory, with the
/// plan of the outcome each order deserves; `drop_first_funding` loses the
/// first account's funding on the way (as a restore that lost it would).
fn planned_run(
    drop_first_funding: bool,
) -> anyhow::Result<(FlowHarness, DeservedOutcomes, Option<AccountId>)> {
    let config = SynthConfig {
        seed: 7,
        accounts: 10,
        instruments: 5,
        orders: 300,
        ..SynthConfig::default()
    };
    let plan = deserved_outcomes(&config, codecs::ids::order_id_for)?;
    let mut h = FlowHarness::new(ServiceSet::ALL);
    let mut dropped = None;
    for record in generate(&config, codecs::ids::order_id_for)? {
        let Payload::Event(event) = record?.payload else {
            anyhow::bail!("a synthetic scenario sends events only");
        };
        if let (Event::AccountFunded(funding), true, None) = (&event, drop_first_funding, dropped) {
            dropped = Some(funding.account);
            continue;
        }
        h.input(&event);
        h.drain();
    }
    Ok((h, plan, dropped))
}

fn planned_audit(h: &FlowHarness, plan: Option<DeservedOutcomes>) -> AuditReport {
    let mut audit = Audit::new(ExactlyOnce);
    if let Some(plan) = plan {
        audit = audit.expect_outcomes(plan);
    }
    for (topic, event) in &h.log {
        audit.record(topic, event);
    }
    audit.finish_with_state(&h.snapshot())
}

#[test]
fn every_order_ends_as_its_scenario_planned() -> anyhow::Result<()> {
    let (h, plan, _) = planned_run(false)?;
    let planned = plan.len() as u64;
    let report = planned_audit(&h, Some(plan));
    assert!(report.passed(), "{report}");
    assert_eq!(report.deserved_compared, planned);
    assert_eq!(report.orders.accepted, planned);
    Ok(())
}

#[test]
fn a_dropped_funding_conserves_cash_but_fails_the_deserved_outcomes() -> anyhow::Result<()> {
    let (h, plan, dropped) = planned_run(true)?;
    let account = dropped.ok_or_else(|| anyhow::anyhow!("no funding was dropped"))?;
    // Cash and stock still balance and every order has one outcome: without
    // the plan, the loss is invisible.
    let blind = planned_audit(&h, None);
    assert!(blind.passed(), "{blind}");
    let fill_bound_of_account = plan_count(&h, &plan, account);
    assert!(
        fill_bound_of_account > 0,
        "the scenario gave account {account} no order to fill"
    );
    let report = planned_audit(&h, Some(plan));
    assert!(!report.passed(), "{report}");
    let undeserved = report
        .violations
        .iter()
        .filter(|v| {
            matches!(
                v,
                Violation::Undeserved {
                    deserved: Deserved::Fill,
                    found: Outcome::RejectedFunds(PaymentFailReason::UnknownAccount),
                    ..
                }
            )
        })
        .count() as u64;
    assert_eq!(undeserved, fill_bound_of_account, "{report}");
    assert!(report
        .to_string()
        .contains("the scenario planned it to fill"));
    Ok(())
}

/// Fill-bound orders of `account` in the run.
fn plan_count(h: &FlowHarness, plan: &DeservedOutcomes, account: AccountId) -> u64 {
    h.log
        .iter()
        .filter_map(|(_, event)| match event {
            Event::OrderCreated(created) if created.account == account => {
                plan.get(created.header.order_id)
            }
            _ => None,
        })
        .filter(|deserved| *deserved == Deserved::Fill)
        .count() as u64
}
