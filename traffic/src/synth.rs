//! A synthetic trading scenario, pure and seeded: `accounts` accounts funded,
//! `instruments` instruments (`SYM0001`, …) stocked, then an order flow with
//! Zipf-skewed accounts and instruments, amends and cancels of recent orders,
//! and configured shares of orders bound to fail for funds or for stock — as a
//! stream of traffic [`Record`]s at a constant offered rate.
//!
//! # Outcomes that do not depend on timing
//! Payment and Inventory are keyed differently, so the order in which they see
//! orders of different accounts is up to Kafka. The scenario is built so that
//! every order's outcome is the same in any such order:
//! - each account is funded with the cost of all its orders meant to fill or to
//!   fail for stock (debited, then refunded) plus a margin, so no such order can
//!   fail for funds; an order meant to fail for funds costs more than its
//!   account is ever funded with;
//! - each instrument is stocked with the units of all its orders meant to fill
//!   plus a margin; an order meant to fail for stock asks for one unit more
//!   than its instrument is ever stocked with;
//! - amends only lower quantity and price, and only fill-bound orders are
//!   amended or cancelled, so budgets never grow.
//!
//! That needs the budgets before the first record, so generation runs the
//! seeded draws three times: twice to sum the budgets (memory: a number per
//! account and per instrument), once to emit. [`Expected`] carries the counts an
//! audit can compare with the outcomes, and [`deserved_outcomes`] the outcome
//! each order deserves, by order id, for the audit to compare one by one
//! ([`audit::Audit::expect_outcomes`]).
//!
//! # Ids
//! Event ids are `run_id << 64 | sequence` and client order ids
//! `s<run_id in hex>-<n>` (unique per run). Order ids come from
//! an [`OrderIds`] hook; pass `codecs::ids::order_id_for` (the services' own
//! derivation from account and client order id, which makes creates
//! idempotent) for traffic the services will accept as their own, or
//! [`SequentialOrderIds`] (1, 2, 3, …) where readable ids help more.
//!
//! Must never: read a clock or any source of randomness but the seed, touch
//! Kafka, or hold the whole scenario in memory.

use std::collections::VecDeque;

use codecs::{
    AccountFunded, AccountId, ClientOrderId, Event, EventHeader, EventId, Money, OrderAmended,
    OrderCancelled, OrderCreated, OrderId, Quantity, Sku, StockReplenished, Tag, TimeInForce,
    TimestampNs, ValueError,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt as _, SeedableRng as _};
use rand_distr::{Distribution as _, Zipf};

use crate::flow;
use crate::replay::fmix64;
use crate::{Payload, Record};
use audit::{Deserved, DeservedOutcomes};

/// Nanoseconds per second.
const NS_PER_S: u128 = 1_000_000_000;
/// Recent fill-bound orders that amends and cancels choose from.
pub const RECENT_ORDERS_MAX: usize = 1_024;
/// Cash each account gets beyond what its orders need, minor units.
pub const FUNDING_MARGIN_MINOR: i64 = 100_000;
/// Units each instrument gets beyond what its orders need.
pub const STOCK_MARGIN_UNITS: i64 = 10;
/// Most instruments a scenario may have (`SYM` plus 13 digits fills a 16-byte Sku).
pub const INSTRUMENTS_MAX: u64 = 9_999_999_999_999;
/// Digits of an instrument number at least (`SYM0001`).
const INSTRUMENT_DIGITS_MIN: usize = 4;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// High 64 bits of every event id; `None` derives it from the seed.
    pub run_id: Option<u64>,
    /// How many accounts, each funded once: ids `account_base + 1 ..=
    /// account_base + accounts`.
    pub accounts: u64,
    /// Offset of the account ids, so several runs into one deployment can
    /// use disjoint accounts (an account's leftover cash from an earlier run
    /// would pay for an order meant to fail for funds).
    pub account_base: u64,
    /// Instruments `SYM0001..`, each stocked once.
    pub instruments: u64,
    /// Order-flow records after the set-up: creates, amends and cancels.
    pub orders: u64,
    /// Offered rate of all records (set-up included), records per second.
    pub rate_per_s: u64,
    /// Zipf exponent of account choice (0 = uniform; 1 = classic Zipf).
    pub account_skew: f64,
    /// Zipf exponent of instrument choice.
    pub instrument_skew: f64,
    /// Share of order-flow records that amend a recent order.
    pub amend_share: f64,
    /// Share of order-flow records that cancel a recent order.
    pub cancel_share: f64,
    /// Share of new orders bound to fail for funds.
    pub fail_funds_share: f64,
    /// Share of new orders bound to fail for stock (then refunded).
    pub fail_stock_share: f64,
    /// Units per order: `1..=quantity_max`.
    pub quantity_max: i64,
    /// Limit price per unit, minor units: `price_min..=price_max`.
    pub price_min: i64,
    pub price_max: i64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            run_id: None,
            accounts: 1_000,
            account_base: 0,
            instruments: 100,
            orders: 10_000,
            rate_per_s: 1_000,
            account_skew: 1.0,
            instrument_skew: 1.0,
            amend_share: 0.05,
            cancel_share: 0.05,
            fail_funds_share: 0.02,
            fail_stock_share: 0.02,
            quantity_max: 100,
            price_min: 100,
            price_max: 50_000,
        }
    }
}

/// Why a scenario cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the scenario's {what} overflows i64; use fewer orders or smaller prices")]
    Overflow { what: &'static str },
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Counts of what the scenario contains and how its orders must end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub fundings: u64,
    pub replenishments: u64,
    pub orders: u64,
    pub amends: u64,
    pub cancels: u64,
    /// New orders bound to fail for funds.
    pub fail_funds: u64,
    /// New orders bound to fail for stock (and be refunded).
    pub fail_stock: u64,
    /// New orders bound to fill unless cancelled first.
    pub fill_bound: u64,
}

/// The source of order ids: the services' deterministic
/// `order_id_for(account, client_order_id)`, or a stand-in.
pub trait OrderIds {
    fn order_id(&mut self, account: AccountId, client_order_id: &ClientOrderId) -> OrderId;
}

impl<F: FnMut(AccountId, &ClientOrderId) -> OrderId> OrderIds for F {
    fn order_id(&mut self, account: AccountId, client_order_id: &ClientOrderId) -> OrderId {
        self(account, client_order_id)
    }
}

/// Unique non-zero order ids 1, 2, 3, … (readable, but not what the services
/// derive: prefer `codecs::ids::order_id_for` for traffic they will check).
#[derive(Debug, Clone, Default)]
pub struct SequentialOrderIds {
    last: u64,
}

impl OrderIds for SequentialOrderIds {
    fn order_id(&mut self, _: AccountId, _: &ClientOrderId) -> OrderId {
        self.last += 1;
        OrderId(self.last)
    }
}

/// How a new order must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Fill,
    FailFunds,
    FailStock,
}

/// A fill-bound order that may still be amended or cancelled.
#[derive(Debug, Clone, Copy)]
struct Open {
    account: u64,
    instrument: u64,
    quantity: i64,
    price: i64,
    order_id: OrderId,
}

/// One step of the order flow, as drawn.
#[derive(Debug, Clone, Copy)]
enum Step {
    Create {
        account: u64,
        instrument: u64,
        quantity: i64,
        price: i64,
        fate: Fate,
    },
    Amend {
        slot: usize,
        quantity: i64,
        price: i64,
    },
    Cancel {
        slot: usize,
    },
}

/// The seeded draws; both passes call them in the same order.
struct Draws {
    rng: ChaCha8Rng,
    accounts: Zipf<f64>,
    instruments: Zipf<f64>,
    config: SynthConfig,
}

impl Draws {
    fn new(config: &SynthConfig) -> Result<Draws, SynthError> {
        let zipf = |n: u64, s: f64, field| {
            Zipf::new(n as f64, s).map_err(|e| SynthError::Invalid {
                field,
                reason: e.to_string(),
            })
        };
        Ok(Draws {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            accounts: zipf(config.accounts, config.account_skew, "account_skew")?,
            instruments: zipf(
                config.instruments,
                config.instrument_skew,
                "instrument_skew",
            )?,
            config: config.clone(),
        })
    }

    /// A Zipf rank in `1..=n` (rank 1 the most frequent).
    fn rank(rng: &mut ChaCha8Rng, zipf: &Zipf<f64>, n: u64) -> u64 {
        (zipf.sample(rng) as u64).clamp(1, n)
    }

    fn step(&mut self, recent: &VecDeque<Open>) -> Step {
        let c = &self.config;
        let kind: f64 = self.rng.random();
        if !recent.is_empty() && kind < c.amend_share + c.cancel_share {
            let slot = self.rng.random_range(0..recent.len());
            if kind < c.amend_share {
                let open = recent[slot];
                let quantity = self.rng.random_range(1..=open.quantity.max(1));
                let price = self
                    .rng
                    .random_range(c.price_min..=open.price.max(c.price_min));
                return Step::Amend {
                    slot,
                    quantity,
                    price,
                };
            }
            return Step::Cancel { slot };
        }
        let account = Draws::rank(&mut self.rng, &self.accounts, c.accounts);
        let instrument = Draws::rank(&mut self.rng, &self.instruments, c.instruments);
        let quantity = self.rng.random_range(1..=c.quantity_max);
        let price = self.rng.random_range(c.price_min..=c.price_max);
        let fate: f64 = self.rng.random();
        let fate = if fate < c.fail_funds_share {
            Fate::FailFunds
        } else if fate < c.fail_funds_share + c.fail_stock_share {
            Fate::FailStock
        } else {
            Fate::Fill
        };
        Step::Create {
            account,
            instrument,
            quantity,
            price,
            fate,
        }
    }
}

/// Applies a step to the recent-orders window (both passes do this alike).
fn advance(recent: &mut VecDeque<Open>, step: Step, order_id: OrderId) {
    match step {
        Step::Create {
            account,
            instrument,
            quantity,
            price,
            fate: Fate::Fill,
        } => {
            recent.push_back(Open {
                account,
                instrument,
                quantity,
                price,
                order_id,
            });
            if recent.len() > RECENT_ORDERS_MAX {
                recent.pop_front();
            }
        }
        Step::Create { .. } => {}
        Step::Amend {
            slot,
            quantity,
            price,
        } => {
            if let Some(open) = recent.get_mut(slot) {
                open.quantity = quantity;
                open.price = price;
            }
        }
        Step::Cancel { slot } => {
            recent.swap_remove_back(slot);
        }
    }
}

fn validate(config: &SynthConfig) -> Result<(), SynthError> {
    let invalid = |field, reason: &str| {
        Err(SynthError::Invalid {
            field,
            reason: reason.to_string(),
        })
    };
    let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    if config.accounts == 0 {
        return invalid("accounts", "must be at least 1");
    }
    if config.account_base.checked_add(config.accounts).is_none() {
        return invalid(
            "account_base",
            "account_base + accounts must fit an account id",
        );
    }
    if config.instruments == 0 || config.instruments > INSTRUMENTS_MAX {
        return invalid("instruments", "must be in 1..=9999999999999");
    }
    if config.rate_per_s == 0 {
        return invalid("rate_per_s", "must be at least 1 record/s");
    }
    for (field, value) in [
        ("amend_share", config.amend_share),
        ("cancel_share", config.cancel_share),
        ("fail_funds_share", config.fail_funds_share),
        ("fail_stock_share", config.fail_stock_share),
    ] {
        if !share(value) {
            return invalid(field, "must be a share in 0..=1");
        }
    }
    if config.amend_share + config.cancel_share > 1.0 {
        return invalid(
            "amend_share",
            "amend and cancel shares add up to more than 1",
        );
    }
    if config.fail_funds_share + config.fail_stock_share > 1.0 {
        return invalid("fail_funds_share", "fail shares add up to more than 1");
    }
    if config.quantity_max < 1 {
        return invalid("quantity_max", "must be at least 1");
    }
    if config.price_min < 1 || config.price_max < config.price_min {
        return invalid(
            "price_min",
            "prices must satisfy 1 <= price_min <= price_max",
        );
    }
    Ok(())
}

/// Budgets from the first pass: cash per account and units per instrument.
struct Budgets {
    funding: Vec<i64>,
    stock: Vec<i64>,
    expected: Expected,
}

fn overflow(what: &'static str) -> SynthError {
    SynthError::Overflow { what }
}

/// Runs the order flow's draws without emitting, calling `visit` on each step.
fn dry_run(
    config: &SynthConfig,
    mut visit: impl FnMut(Step) -> Result<(), SynthError>,
) -> Result<(), SynthError> {
    let mut draws = Draws::new(config)?;
    let mut recent = VecDeque::with_capacity(RECENT_ORDERS_MAX + 1);
    for _ in 0..config.orders {
        let step = draws.step(&recent);
        visit(step)?;
        advance(&mut recent, step, OrderId::NONE);
    }
    Ok(())
}

/// Sums the budgets in two dry runs: first the units and cash fill-bound orders
/// need (which fixes each instrument's stock), then the cash that
/// fail-for-stock orders hold until refunded (which needs those stocks).
fn budgets(config: &SynthConfig) -> Result<Budgets, SynthError> {
    let accounts = usize::try_from(config.accounts).map_err(|_| overflow("account count"))?;
    let instruments =
        usize::try_from(config.instruments).map_err(|_| overflow("instrument count"))?;
    let mut funding = vec![FUNDING_MARGIN_MINOR; accounts];
    let mut stock = vec![STOCK_MARGIN_UNITS; instruments];
    let mut expected = Expected {
        fundings: config.accounts,
        replenishments: config.instruments,
        ..Expected::default()
    };
    dry_run(config, |step| {
        match step {
            Step::Create {
                account,
                instrument,
                quantity,
                price,
                fate,
            } => {
                expected.orders += 1;
                match fate {
                    Fate::Fill => {
                        expected.fill_bound += 1;
                        let cost = price.checked_mul(quantity).ok_or(overflow("order cost"))?;
                        let a = (account - 1) as usize;
                        funding[a] = funding[a].checked_add(cost).ok_or(overflow("funding"))?;
                        let s = (instrument - 1) as usize;
                        stock[s] = stock[s].checked_add(quantity).ok_or(overflow("stock"))?;
                    }
                    Fate::FailStock => expected.fail_stock += 1,
                    Fate::FailFunds => expected.fail_funds += 1,
                }
            }
            Step::Amend { .. } => expected.amends += 1,
            Step::Cancel { .. } => expected.cancels += 1,
        }
        Ok(())
    })?;
    dry_run(config, |step| {
        if let Step::Create {
            account,
            instrument,
            price,
            fate: Fate::FailStock,
            ..
        } = step
        {
            let units = stock_fail_quantity(&stock, instrument)?;
            let cost = price.checked_mul(units).ok_or(overflow("order cost"))?;
            let a = (account - 1) as usize;
            funding[a] = funding[a].checked_add(cost).ok_or(overflow("funding"))?;
        }
        Ok(())
    })?;
    Ok(Budgets {
        funding,
        stock,
        expected,
    })
}

/// Units a fail-for-stock order of `instrument` asks for: one more than the
/// instrument is ever stocked with.
fn stock_fail_quantity(stock: &[i64], instrument: u64) -> Result<i64, SynthError> {
    stock[(instrument - 1) as usize]
        .checked_add(1)
        .ok_or(overflow("stock"))
}

/// The symbol of instrument `n` (1-based): `SYM0001`, …, `SYM12345`.
pub fn instrument_sku(n: u64, instruments: u64) -> Result<Sku, ValueError> {
    let digits = instruments.to_string().len().max(INSTRUMENT_DIGITS_MIN);
    Sku::new(&format!("SYM{n:0digits$}"))
}

/// A generated scenario: an iterator of records, set-up first.
pub struct Scenario<O: OrderIds> {
    config: SynthConfig,
    run_id: u64,
    budgets: Budgets,
    skus: Vec<Sku>,
    order_ids: O,
    draws: Draws,
    recent: VecDeque<Open>,
    /// Records emitted so far.
    emitted: u64,
    /// Orders created so far (numbers client order ids).
    created: u64,
    /// The order the last record created and how it must end.
    planned: Option<(OrderId, Fate)>,
}

impl<O: OrderIds> std::fmt::Debug for Scenario<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("config", &self.config)
            .field("run_id", &self.run_id)
            .field("expected", &self.budgets.expected)
            .field("emitted", &self.emitted)
            .finish()
    }
}

/// Generates the scenario of `config`, with order ids from `order_ids`.
pub fn generate<O: OrderIds>(
    config: &SynthConfig,
    order_ids: O,
) -> Result<Scenario<O>, SynthError> {
    validate(config)?;
    let budgets = budgets(config)?;
    let skus = (1..=config.instruments)
        .map(|n| instrument_sku(n, config.instruments))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scenario {
        run_id: config.run_id.unwrap_or_else(|| fmix64(config.seed) | 1),
        config: config.clone(),
        budgets,
        skus,
        order_ids,
        draws: Draws::new(config)?,
        recent: VecDeque::with_capacity(RECENT_ORDERS_MAX + 1),
        emitted: 0,
        created: 0,
        planned: None,
    })
}

/// The outcome every order of `config`'s scenario deserves, by order id
/// (ids from `order_ids`, as in [`generate`]): one more pass of the seeded
/// draws, holding one entry per order.
pub fn deserved_outcomes<O: OrderIds>(
    config: &SynthConfig,
    order_ids: O,
) -> Result<DeservedOutcomes, SynthError> {
    let mut scenario = generate(config, order_ids)?;
    let mut plan = DeservedOutcomes::new();
    while let Some(record) = scenario.next() {
        record?;
        if let Some((order, fate)) = scenario.planned.take() {
            plan.insert(
                order,
                match fate {
                    Fate::Fill => Deserved::Fill,
                    Fate::FailFunds => Deserved::FailFunds,
                    Fate::FailStock => Deserved::FailStock,
                },
            );
        }
    }
    Ok(plan)
}

impl<O: OrderIds> Scenario<O> {
    /// What the scenario contains and how its orders must end.
    pub fn expected(&self) -> Expected {
        self.budgets.expected
    }

    /// Records in all: set-up plus order flow.
    pub fn len(&self) -> u64 {
        self.config.accounts + self.config.instruments + self.config.orders
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cash account `account` is funded with, minor units.
    pub fn funding(&self, account: AccountId) -> Option<Money> {
        let rank = account.0.checked_sub(self.config.account_base)?;
        let index = usize::try_from(rank.checked_sub(1)?).ok()?;
        self.budgets.funding.get(index).copied().map(Money)
    }

    /// Units instrument `n` (1-based) is stocked with.
    pub fn stock(&self, n: u64) -> Option<Quantity> {
        let index = usize::try_from(n.checked_sub(1)?).ok()?;
        self.budgets.stock.get(index).copied().map(Quantity)
    }

    /// The id of the account drawn as `rank` (1-based).
    fn account_id(&self, rank: u64) -> AccountId {
        AccountId(self.config.account_base + rank)
    }

    fn header(&self, order_id: OrderId, t_ns: u64) -> EventHeader {
        EventHeader {
            event_id: EventId((u128::from(self.run_id) << 64) | u128::from(self.emitted + 1)),
            order_id,
            causation_id: EventId::NONE,
            created_at_ns: TimestampNs(t_ns),
        }
    }

    fn sku(&self, instrument: u64) -> Sku {
        // `instrument` comes from a rank clamped to 1..=instruments.
        self.skus[(instrument - 1) as usize]
    }

    fn order_flow_event(&mut self, t_ns: u64) -> Result<Event, SynthError> {
        let step = self.draws.step(&self.recent);
        let mut order_id = OrderId::NONE;
        let event = match step {
            Step::Create {
                account,
                instrument,
                quantity,
                price,
                fate,
            } => {
                self.created += 1;
                // The run id, not the seed: two runs of one scenario into
                // one deployment must not look like a client resubmitting.
                let client_order_id =
                    ClientOrderId::new(&format!("s{:016x}-{}", self.run_id, self.created))?;
                let account_id = self.account_id(account);
                order_id = self.order_ids.order_id(account_id, &client_order_id);
                let funding = self.budgets.funding[(account - 1) as usize];
                self.planned = Some((order_id, fate));
                let quantity = match fate {
                    Fate::Fill => quantity,
                    // Costs more than the account ever holds.
                    Fate::FailFunds => funding / price + 1,
                    // More units than the instrument ever holds.
                    Fate::FailStock => stock_fail_quantity(&self.budgets.stock, instrument)?,
                };
                Event::OrderCreated(OrderCreated {
                    header: self.header(order_id, t_ns),
                    account: account_id,
                    sku: self.sku(instrument),
                    quantity: Quantity(quantity),
                    limit_price: Money(price),
                    client_order_id,
                    time_in_force: TimeInForce::Gtc,
                    tag: Tag::EMPTY,
                })
            }
            Step::Amend {
                slot,
                quantity,
                price,
            } => {
                let open = self.recent[slot];
                Event::OrderAmended(OrderAmended {
                    header: self.header(open.order_id, t_ns),
                    account: self.account_id(open.account),
                    sku: self.sku(open.instrument),
                    quantity: Quantity(quantity),
                    limit_price: Money(price),
                })
            }
            Step::Cancel { slot } => {
                let open = self.recent[slot];
                Event::OrderCancelled(OrderCancelled {
                    header: self.header(open.order_id, t_ns),
                    account: self.account_id(open.account),
                    sku: self.sku(open.instrument),
                })
            }
        };
        advance(&mut self.recent, step, order_id);
        Ok(event)
    }
}

impl<O: OrderIds> Iterator for Scenario<O> {
    type Item = Result<Record, SynthError>;

    /// The next record; after an error (a value that does not fit its field), `None`.
    fn next(&mut self) -> Option<Self::Item> {
        let index = self.emitted;
        if index >= self.len() {
            return None;
        }
        let t_ns = u64::try_from(u128::from(index) * NS_PER_S / u128::from(self.config.rate_per_s))
            .unwrap_or(u64::MAX);
        let accounts = self.config.accounts;
        let instruments = self.config.instruments;
        let event = if index < accounts {
            let account = self.account_id(index + 1);
            Event::AccountFunded(AccountFunded {
                header: self.header(OrderId::NONE, t_ns),
                account,
                amount: Money(self.budgets.funding[index as usize]),
            })
        } else if index < accounts + instruments {
            let n = index - accounts + 1;
            Event::StockReplenished(StockReplenished {
                header: self.header(OrderId::NONE, t_ns),
                sku: self.sku(n),
                quantity: Quantity(self.budgets.stock[(n - 1) as usize]),
            })
        } else {
            match self.order_flow_event(t_ns) {
                Ok(event) => event,
                Err(e) => {
                    self.emitted = self.len();
                    return Some(Err(e));
                }
            }
        };
        self.emitted += 1;
        Some(Ok(Record {
            t_ns,
            topic: flow::topic_of(event.kind()).to_string(),
            partition: None,
            key: Some(flow::key_of(&event)),
            payload: Payload::Event(event),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            seed: 42,
            accounts: 200,
            instruments: 50,
            orders: 20_000,
            fail_funds_share: 0.05,
            fail_stock_share: 0.10,
            ..SynthConfig::default()
        }
    }

    fn events(config: &SynthConfig) -> Result<Vec<Record>, SynthError> {
        generate(config, SequentialOrderIds::default())?.collect()
    }

    #[test]
    fn the_plan_names_every_order_with_the_fate_expected_counts() -> Result<(), SynthError> {
        let config = small();
        let plan = deserved_outcomes(&config, SequentialOrderIds::default())?;
        let expected = generate(&config, SequentialOrderIds::default())?.expected();
        assert_eq!(plan.len() as u64, expected.orders);
        assert_eq!(plan.count(Deserved::Fill), expected.fill_bound);
        assert_eq!(plan.count(Deserved::FailFunds), expected.fail_funds);
        assert_eq!(plan.count(Deserved::FailStock), expected.fail_stock);
        Ok(())
    }

    #[test]
    fn a_seed_gives_one_scenario() -> Result<(), SynthError> {
        let config = small();
        assert_eq!(events(&config)?, events(&config)?);
        let other = SynthConfig {
            seed: 43,
            ..config.clone()
        };
        assert_ne!(events(&config)?, events(&other)?);
        Ok(())
    }

    #[test]
    fn setup_comes_first_at_a_constant_rate_with_flow_topics_and_keys() -> Result<(), SynthError> {
        let config = small();
        let records = events(&config)?;
        assert_eq!(records.len() as u64, 200 + 50 + 20_000);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.t_ns, i as u64 * 1_000_000, "rate 1000/s");
            let event = record.event().expect("synth makes events only");
            assert_eq!(record.topic, flow::topic_of(event.kind()));
            assert_eq!(record.key.as_deref(), Some(&flow::key_of(event)[..]));
        }
        assert!(records[..200]
            .iter()
            .all(|r| matches!(r.event(), Some(Event::AccountFunded(_)))));
        assert!(
            matches!(records[200].event(), Some(Event::StockReplenished(s)) if s.sku.as_str() == "SYM0001")
        );
        let ids: HashSet<EventId> = records
            .iter()
            .filter_map(|r| r.event())
            .map(|e| e.header().event_id)
            .collect();
        assert_eq!(ids.len(), records.len(), "event ids are unique");
        Ok(())
    }

    #[test]
    fn an_account_base_shifts_every_account_id_and_nothing_else() -> Result<(), SynthError> {
        let config = small();
        let shifted = SynthConfig {
            account_base: 1_000,
            ..config.clone()
        };
        let plain = events(&config)?;
        let moved = events(&shifted)?;
        assert_eq!(plain.len(), moved.len());
        for (a, b) in plain.iter().zip(&moved) {
            let (Some(a), Some(b)) = (a.event(), b.event()) else {
                panic!("synth makes events only");
            };
            assert_eq!(a.kind(), b.kind());
            match (a.account(), b.account()) {
                (Some(x), Some(y)) => assert_eq!(x.0 + 1_000, y.0),
                (x, y) => assert_eq!(x, y),
            }
        }
        let scenario = generate(&shifted, SequentialOrderIds::default())?;
        assert_eq!(scenario.funding(AccountId(1)), None);
        assert!(scenario.funding(AccountId(1_001)).is_some());
        assert!(generate(
            &SynthConfig {
                account_base: u64::MAX,
                ..config
            },
            SequentialOrderIds::default()
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn fail_shares_match_and_outcomes_do_not_depend_on_timing() -> Result<(), SynthError> {
        let config = small();
        let scenario = generate(&config, SequentialOrderIds::default())?;
        let expected = scenario.expected();
        let funding: Vec<i64> = (1..=config.accounts)
            .map(|a| scenario.funding(AccountId(a)).map_or(0, |m| m.0))
            .collect();
        let stock: HashMap<Sku, i64> = (1..=config.instruments)
            .map(|n| {
                let sku = instrument_sku(n, config.instruments).expect("valid symbol");
                (sku, scenario.stock(n).map_or(0, |q| q.0))
            })
            .collect();
        let records: Vec<Record> = scenario.collect::<Result<_, _>>()?;

        let share = |n: u64| n as f64 / expected.orders as f64;
        assert!(
            (share(expected.fail_funds) - 0.05).abs() < 0.01,
            "{expected:?}"
        );
        assert!(
            (share(expected.fail_stock) - 0.10).abs() < 0.015,
            "{expected:?}"
        );
        assert_eq!(expected.orders + expected.amends + expected.cancels, 20_000);
        assert!(
            expected.amends > 500 && expected.cancels > 500,
            "{expected:?}"
        );

        // Check each order against the budgets, as Payment and Inventory would.
        let mut created = HashMap::new();
        let (mut fail_funds, mut fail_stock) = (0, 0);
        let mut fill_cost = vec![0i64; config.accounts as usize];
        for record in &records {
            match record.event() {
                Some(Event::OrderCreated(order)) => {
                    assert!(!order.header.order_id.is_none());
                    assert!(created.insert(order.header.order_id, *order).is_none());
                    let cost = order.quantity.0 * order.limit_price.0;
                    let account_funding = funding[(order.account.0 - 1) as usize];
                    if cost > account_funding {
                        fail_funds += 1;
                    } else if order.quantity.0 > stock[&order.sku] {
                        fail_stock += 1;
                    } else {
                        fill_cost[(order.account.0 - 1) as usize] += cost;
                    }
                }
                Some(Event::OrderAmended(amend)) => {
                    let order = created
                        .get(&amend.header.order_id)
                        .expect("amends an earlier order");
                    assert!(
                        amend.quantity <= order.quantity && amend.limit_price <= order.limit_price
                    );
                }
                Some(Event::OrderCancelled(cancel)) => {
                    assert!(
                        created.contains_key(&cancel.header.order_id),
                        "cancels an earlier order"
                    );
                }
                _ => {}
            }
        }
        assert_eq!(
            (fail_funds, fail_stock),
            (expected.fail_funds, expected.fail_stock)
        );
        for (cost, funded) in fill_cost.iter().zip(&funding) {
            assert!(cost < funded, "fill-bound orders always fit the funding");
        }
        Ok(())
    }

    #[test]
    fn zipf_skew_is_visible() -> Result<(), SynthError> {
        let mut per_account: HashMap<AccountId, u64> = HashMap::new();
        for record in events(&small())? {
            if let Some(Event::OrderCreated(order)) = record.event() {
                *per_account.entry(order.account).or_default() += 1;
            }
        }
        let mut counts: Vec<u64> = (1..=200)
            .map(|a| per_account.get(&AccountId(a)).copied().unwrap_or(0))
            .collect();
        counts.sort_unstable();
        let (median, top) = (counts[counts.len() / 2], counts[counts.len() - 1]);
        assert!(top > 20 * median.max(1), "top {top} vs median {median}");
        assert_eq!(
            per_account.get(&AccountId(1)).copied(),
            Some(top),
            "rank 1 is hottest"
        );
        Ok(())
    }

    #[test]
    fn the_services_order_id_rule_plugs_into_the_hook() -> Result<(), SynthError> {
        let derived = codecs::ids::order_id_for;
        let config = SynthConfig {
            orders: 100,
            ..small()
        };
        for record in generate(&config, derived)? {
            let record = record?;
            if let Some(Event::OrderCreated(order)) = record.event() {
                assert_eq!(
                    order.header.order_id,
                    derived(order.account, &order.client_order_id)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused_by_field() {
        let refused = |config: SynthConfig| match generate(&config, SequentialOrderIds::default()) {
            Err(SynthError::Invalid { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(
            refused(SynthConfig {
                accounts: 0,
                ..small()
            }),
            "accounts"
        );
        assert_eq!(
            refused(SynthConfig {
                rate_per_s: 0,
                ..small()
            }),
            "rate_per_s"
        );
        assert_eq!(
            refused(SynthConfig {
                fail_funds_share: 1.5,
                ..small()
            }),
            "fail_funds_share"
        );
        assert_eq!(
            refused(SynthConfig {
                price_min: 0,
                ..small()
            }),
            "price_min"
        );
    }

    #[test]
    fn instrument_symbols_widen_past_four_digits() -> Result<(), ValueError> {
        assert_eq!(instrument_sku(1, 100)?.as_str(), "SYM0001");
        assert_eq!(instrument_sku(7, 12_345)?.as_str(), "SYM00007");
        Ok(())
    }
}
