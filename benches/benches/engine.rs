//! Engine-only throughput: the per-record path of a shard with Kafka taken out.
//! Each `order.created` frame is validated and read in place (rkyv), applied to
//! three stores (the account's cash, the order's record, the instrument's
//! exposure), and one `payment.completed` is encoded into the outbox and handed
//! to the port. Prints events per second per core beside the LMAX figure
//! (~6 M business events/s on one thread), and the same path with both topics
//! in Confluent's Avro form (`[wire.value_format]` = "avro": the order read
//! through `engine::wire`, the payment written as Avro).

use std::hint::black_box;
use std::time::{Duration, Instant};

use codecs::{
    encode_to_vec, AccountId, ClientOrderId, Event, EventHeader, EventId, EventRef, Money,
    OrderCreated, OrderId, PaymentCompleted, Quantity, Sku, Tag, TimeInForce, TimestampNs,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::port::{
    InputOffset, InputRecord, KafkaPort, OutRecord, Polled, PortError, RestoreStats, Rewind,
};
use engine::store::{ChangelogApply, ChangelogStore, PartitionStores, Store};
use engine::wire::{AvroWriter, WireFormats};
use engine::{Input, Offset, Outbox, PartitionId, Rejection, Shard, ShardId, Stage, TopicIdx};

const FRAMES: usize = 65_536;
const ACCOUNTS: u64 = 10_000;
const SKUS: u64 = 100;
/// Distinct order ids: the order store's working set.
const ORDER_IDS_SMALL: u64 = 10_000;
const ORDER_IDS_LARGE: u64 = 1_000_000;
const LMAX_EVENTS_PER_S: f64 = 6_000_000.0;

/// Replays pre-encoded frames as one endless partition; sends go nowhere.
struct ReplayPort {
    frames: Vec<Vec<u8>>,
    next: usize,
    offset: i64,
    assigned: bool,
    sent_bytes: u64,
}

impl KafkaPort for ReplayPort {
    fn poll<R>(&mut self, handler: impl FnOnce(Polled<'_>) -> R) -> Result<R, PortError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(handler(Polled::Assigned(vec![PartitionId(0)])));
        }
        let frame = &self.frames[self.next];
        self.next = (self.next + 1) % self.frames.len();
        self.offset += 1;
        Ok(handler(Polled::Record(InputRecord {
            topic: TopicIdx(0),
            partition: PartitionId(0),
            offset: Offset(self.offset),
            key: None,
            payload: Some(frame),
            timestamp_ms: 0,
        })))
    }
    fn send(&mut self, record: &OutRecord<'_>) -> Result<(), PortError> {
        self.sent_bytes += record.payload.map_or(0, |p| p.len() as u64);
        Ok(())
    }
    fn commit(
        &mut self,
        _offsets: &[InputOffset],
        _waiting: &mut dyn FnMut(),
    ) -> Result<(), PortError> {
        Ok(())
    }
    fn rewind(&mut self, _keep: &[PartitionId]) -> Result<Rewind, PortError> {
        Ok(Rewind::NotNeeded)
    }
    fn restore(
        &mut self,
        _changelog: &str,
        _partition: PartitionId,
        _apply: &mut ChangelogApply<'_>,
    ) -> Result<RestoreStats, PortError> {
        Ok(RestoreStats::default())
    }
}

#[derive(Clone, Copy)]
struct OrderRecord {
    amount: i64,
    quantity: i64,
}

impl engine::StoreValue for OrderRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.quantity.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let amount = bytes
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("short")?;
        let quantity = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .ok_or("short")?;
        Ok(OrderRecord {
            amount: i64::from_le_bytes(amount),
            quantity: i64::from_le_bytes(quantity),
        })
    }
}

struct Books {
    cash: Store<u64, i64>,
    orders: Store<u64, OrderRecord>,
    exposure: Store<u128, i64>,
}

impl Default for Books {
    fn default() -> Self {
        Books {
            cash: Store::new("cash"),
            orders: Store::new("orders"),
            exposure: Store::new("exposure"),
        }
    }
}

impl PartitionStores for Books {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.cash);
        f(&mut self.orders);
        f(&mut self.exposure);
    }
}

fn sku_key(sku: &Sku) -> u128 {
    let mut bytes = [0u8; 16];
    let text = sku.as_str().as_bytes();
    bytes[..text.len()].copy_from_slice(text);
    u128::from_le_bytes(bytes)
}

struct PaymentLike {
    topics: [&'static str; 1],
    wire: WireFormats,
}

/// Registry ids the Avro run's topics stand for (no registry is asked: the
/// ids are given to the shard up front).
const ORDER_SCHEMA_ID: u32 = 1;
const PAYMENT_SCHEMA_ID: u32 = 2;

fn prepared(topic: &str) -> std::sync::Arc<codecs::avro::PreparedSchema> {
    let schema = codecs::avro::latest_value_schema(topic).expect("a flow topic");
    std::sync::Arc::new(codecs::avro::PreparedSchema::new(schema).expect("parses"))
}

fn avro_formats() -> WireFormats {
    WireFormats::default()
        .read_avro(ORDER_SCHEMA_ID, prepared("order-service.order.created"))
        .write_avro(
            "payment-service.payment.completed",
            AvroWriter {
                registry_id: PAYMENT_SCHEMA_ID,
                schema: prepared("payment-service.payment.completed"),
            },
        )
}

impl Stage for PaymentLike {
    type State = Books;
    fn name(&self) -> &'static str {
        "bench"
    }
    fn input_topics(&self) -> &[&'static str] {
        &self.topics
    }
    fn wire_formats(&self) -> WireFormats {
        self.wire.clone()
    }
    fn process(
        &mut self,
        _input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut Books,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        let EventRef::OrderCreated(order) = event else {
            return Err(Rejection::user_data("not an order"));
        };
        let quantity = order.quantity();
        let amount = order
            .limit_price()
            .checked_mul_quantity(quantity)
            .map_err(|_| Rejection::user_data("overflow"))?;
        let account = order.account();
        let sku = order.sku();
        *state.cash.upsert_with(account.0, || 1 << 40) -= amount.0;
        state.orders.insert(
            order.header().order_id().0,
            OrderRecord {
                amount: amount.0,
                quantity: quantity.0,
            },
        );
        *state.exposure.upsert_with(sku_key(&sku), || 0) += quantity.0;
        let completed = Event::PaymentCompleted(PaymentCompleted {
            header: EventHeader {
                event_id: EventId(order.header().event_id().0 | (1 << 100)),
                order_id: order.header().order_id(),
                causation_id: order.header().event_id(),
                created_at_ns: order.header().created_at_ns(),
            },
            account,
            sku,
            quantity,
            amount,
        });
        out.emit(
            "payment-service.payment.completed",
            sku.as_str().as_bytes(),
            &completed,
        )
        .map_err(|e| Rejection::user_data(e.to_string()))
    }
}

fn frames(order_ids: u64, avro: bool) -> Vec<Vec<u8>> {
    let order_schema = prepared("order-service.order.created");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..FRAMES)
        .map(|i| {
            let event = Event::OrderCreated(OrderCreated {
                header: EventHeader {
                    event_id: EventId(i as u128 + 1),
                    order_id: OrderId(1 + next() % order_ids),
                    causation_id: EventId::NONE,
                    created_at_ns: TimestampNs(1),
                },
                account: AccountId(next() % ACCOUNTS),
                sku: Sku::new(&format!("SYM{:04}", next() % SKUS)).expect("valid sku"),
                quantity: Quantity(1 + (next() % 100) as i64),
                limit_price: Money(100 + (next() % 10_000) as i64),
                client_order_id: ClientOrderId::new(&format!("c{i}")).expect("valid id"),
                time_in_force: TimeInForce::Gtc,
                tag: Tag::EMPTY,
            });
            if avro {
                let datum = order_schema.encode(&event).expect("fits the schema");
                codecs::avro::frame(ORDER_SCHEMA_ID, &datum)
            } else {
                encode_to_vec(&event).expect("valid event")
            }
        })
        .collect()
}

fn new_shard(order_ids: u64) -> Shard<PaymentLike, ReplayPort> {
    new_shard_in(order_ids, false)
}

fn new_shard_in(order_ids: u64, avro: bool) -> Shard<PaymentLike, ReplayPort> {
    let port = ReplayPort {
        frames: frames(order_ids, avro),
        next: 0,
        offset: 0,
        assigned: false,
        sent_bytes: 0,
    };
    let stage = PaymentLike {
        topics: ["order-service.order.created"],
        wire: if avro {
            avro_formats()
        } else {
            WireFormats::default()
        },
    };
    let mut shard = Shard::new(ShardId(0), "bench", stage, port, 16).expect("shard");
    shard.step().expect("assignment");
    shard
}

fn engine_only(c: &mut Criterion) {
    const BATCH: u64 = 10_000;
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH));
    for order_ids in [ORDER_IDS_SMALL, ORDER_IDS_LARGE] {
        let mut shard = new_shard(order_ids);
        // Warm the stores to their steady-state size before measuring.
        for _ in 0..FRAMES * 4 {
            shard.step().expect("step");
        }
        group.bench_function(format!("decode+3 updates+encode/{order_ids} orders"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(shard.step().expect("step"));
                }
                // A commit per batch writes each changed key once, as the
                // runtime's commit interval would.
                shard.commit().expect("commit");
            })
        });
    }
    group.finish();

    // Plain timed runs for the headline figures and the LMAX ratio.
    for order_ids in [ORDER_IDS_SMALL, ORDER_IDS_LARGE] {
        let mut shard = new_shard(order_ids);
        for _ in 0..FRAMES * 4 {
            shard.step().expect("step");
        }
        let events = 2_000_000u64;
        let started = Instant::now();
        for i in 1..=events {
            black_box(shard.step().expect("step"));
            if i % BATCH == 0 {
                shard.commit().expect("commit");
            }
        }
        let elapsed = started.elapsed().max(Duration::from_nanos(1));
        let per_s = events as f64 / elapsed.as_secs_f64();
        let stats = shard.stats();
        println!(
            "engine-only, {order_ids} order ids: {:.2} M events/s on one core ({:.0} ns/event); \
             LMAX ~6 M/s x {:.2}; changelog records/event {:.2}, dead-lettered {}",
            per_s / 1e6,
            elapsed.as_nanos() as f64 / events as f64,
            per_s / LMAX_EVENTS_PER_S,
            stats.changelog_records as f64 / stats.records_in.max(1) as f64,
            stats.dead_lettered,
        );
    }

    // The same path with the order read as Avro and the payment written as
    // Avro, against rkyv in the same process.
    for avro in [false, true] {
        let mut shard = new_shard_in(ORDER_IDS_SMALL, avro);
        for _ in 0..FRAMES {
            shard.step().expect("step");
        }
        let events = 300_000u64;
        let started = Instant::now();
        for i in 1..=events {
            black_box(shard.step().expect("step"));
            if i % BATCH == 0 {
                shard.commit().expect("commit");
            }
        }
        let elapsed = started.elapsed().max(Duration::from_nanos(1));
        let stats = shard.stats();
        println!(
            "engine-only, wire {}: {:.3} M events/s on one core ({:.0} ns/event), \
             {:.0} payload bytes out/event, dead-lettered {}",
            if avro {
                "avro in + avro out"
            } else {
                "rkyv in + rkyv out"
            },
            events as f64 / elapsed.as_secs_f64() / 1e6,
            elapsed.as_nanos() as f64 / events as f64,
            shard.port_mut().sent_bytes as f64 / stats.records_out.max(1) as f64,
            stats.dead_lettered,
        );
    }
}

criterion_group!(benches, engine_only);
criterion_main!(benches);
