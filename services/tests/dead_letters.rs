//! Bad input against the real broker: garbage bytes, a truncated archive, an
//! unknown schema id, a wrong magic byte, an oversize record, a well-formed
//! event that breaks a domain rule and a record on the wrong partition are
//! written into the input topics amid valid orders. Each lands in its topic's
//! dead-letter topic with its reason, every valid order still completes, and
//! the misrouted order, replayed with `services::dlq::replay`, is processed
//! exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use codecs::topics::{
    account_key, sku_key, ACCOUNT_FUNDED, ORDER_CREATED, STOCK_REPLENISHED, STOCK_UPDATED,
};
use codecs::{
    encode_to_vec, AccountFunded, AccountId, ClientOrderId, Event, EventHeader, EventId, Money,
    OrderCreated, OrderId, Quantity, Sku, StockReplenished, Tag, TimeInForce, TimestampNs,
};
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{publish_and_wait, read_to_end, Guarantee, KafkaSettings, Ownership};
use engine::partitioner::partition_for;
use engine::runtime::{Engine, NodeKnobs, ShardPlan};
use engine::{OutRecord, PartitionId, ShardId};
use services::dlq::{self, ReplayFilter};
use services::flow::{ServiceSet, TradeFlow, TradeFlowState};
use tradeflow_tests::{unique_topic, KafkaCluster};

const WAIT: Duration = Duration::from_secs(60);
const VALID_ORDERS: u64 = 12;

fn event_id(run: u64, n: u64) -> EventId {
    EventId((u128::from(run) << 64) | u128::from(n))
}

fn order(run: u64, n: u64, account: AccountId, sku: Sku) -> anyhow::Result<Event> {
    let client = ClientOrderId::new(&format!("dlq-{run}-{n}"))?;
    Ok(Event::OrderCreated(OrderCreated {
        header: EventHeader {
            event_id: event_id(run, 1_000 + n),
            order_id: codecs::ids::order_id_for(account, &client),
            causation_id: EventId::NONE,
            created_at_ns: TimestampNs(1),
        },
        account,
        sku,
        quantity: Quantity(1),
        limit_price: Money(100),
        client_order_id: client,
        time_in_force: TimeInForce::Gtc,
        tag: Tag::EMPTY,
    }))
}

struct Raw {
    topic: &'static str,
    partition: i32,
    key: Vec<u8>,
    payload: Vec<u8>,
}

fn outcome_of(engine: &Engine, partitions: i32, account: AccountId, id: OrderId) -> Option<String> {
    let partition = partition_for(&account_key(account), partitions);
    engine
        .query(
            partition,
            move |state: &TradeFlowState| {
                state
                    .orders
                    .order(id)
                    .and_then(|o| o.outcome)
                    .map(|o| format!("{o:?}"))
            },
            Duration::from_secs(5),
        )
        .ok()
        .flatten()
        .flatten()
}

#[test]
fn poison_records_are_dead_lettered_with_reasons_and_a_replay_is_processed_once(
) -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let partitions = match cluster.partition_leaders(ORDER_CREATED).map(|l| l.len()) {
        Ok(n) if n > 0 => i32::try_from(n)?,
        _ => 4,
    };
    let application_id = unique_topic("dlq-app");
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let flow = TradeFlow::new(ServiceSet::ALL);
    let inputs = engine::Stage::input_topics(&flow).to_vec();
    prepare_topics(
        &settings,
        &FlowTopics {
            inputs: inputs.clone(),
            outputs: flow.output_topics(),
            stores: flow.store_names(),
            changelog_layout: Default::default(),
        },
        partitions,
        1,
    )?;
    cluster.start_group_at_end(&application_id, &inputs, partitions)?;
    let dlq_ends: BTreeMap<&str, u64> = [ORDER_CREATED, ACCOUNT_FUNDED]
        .into_iter()
        .map(|t| Ok((t, dlq::list(cluster.bootstrap(), &[], t)?.len() as u64)))
        .collect::<anyhow::Result<_>>()?;

    let engine = Engine::start(
        settings,
        vec![ShardPlan {
            shard: ShardId(0),
            core: None,
            ownership: Ownership::Static((0..partitions).map(PartitionId).collect()),
            transactional_id: format!("{application_id}-0"),
        }],
        NodeKnobs::default(),
        partitions,
        |_| TradeFlow::new(ServiceSet::ALL),
    )?;
    anyhow::ensure!(engine.wait_running(WAIT), "engine did not start");

    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let account = AccountId(run >> 8 | 1);
    let sku = Sku::new(&format!("D{:X}", run % 0xFFFF_FFFF))?;
    let home = partition_for(&account_key(account), partitions).0;
    let elsewhere = (home + 1) % partitions;
    let sku_home = partition_for(sku_key(&sku), partitions).0;

    let mut raws = vec![
        Raw {
            topic: ACCOUNT_FUNDED,
            partition: home,
            key: account_key(account).to_vec(),
            payload: encode_to_vec(&Event::AccountFunded(AccountFunded {
                header: EventHeader {
                    event_id: event_id(run, 1),
                    ..EventHeader::default()
                },
                account,
                amount: Money(1_000_000),
            }))?,
        },
        Raw {
            topic: STOCK_REPLENISHED,
            partition: sku_home,
            key: sku_key(&sku).to_vec(),
            payload: encode_to_vec(&Event::StockReplenished(StockReplenished {
                header: EventHeader {
                    event_id: event_id(run, 2),
                    ..EventHeader::default()
                },
                sku,
                quantity: Quantity(1_000),
            }))?,
        },
    ];
    let valid_frame = encode_to_vec(&order(run, 0, account, sku)?)?;
    let mut poison: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"definitely not an event".to_vec()),
        ("truncated", valid_frame[..valid_frame.len() / 2].to_vec()),
        ("unknown type tag", {
            let mut f = valid_frame.clone();
            f[2..4].copy_from_slice(&[1, 99]);
            f
        }),
        ("wrong magic", {
            let mut f = valid_frame.clone();
            f[0] = 7;
            f
        }),
        ("oversize", {
            let mut f = valid_frame.clone();
            f.resize(4_096, 0xAB);
            f
        }),
    ];
    let mut orders = Vec::new();
    for n in 1..=VALID_ORDERS {
        let event = order(run, n, account, sku)?;
        orders.push(event.header().order_id);
        raws.push(Raw {
            topic: ORDER_CREATED,
            partition: home,
            key: account_key(account).to_vec(),
            payload: encode_to_vec(&event)?,
        });
        if let Some((_, bytes)) = poison.pop() {
            raws.push(Raw {
                topic: ORDER_CREATED,
                partition: home,
                key: account_key(account).to_vec(),
                payload: bytes,
            });
        }
    }
    // A well-formed event that breaks a domain rule: a negative funding.
    raws.push(Raw {
        topic: ACCOUNT_FUNDED,
        partition: home,
        key: account_key(account).to_vec(),
        payload: encode_to_vec(&Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: event_id(run, 3),
                ..EventHeader::default()
            },
            account,
            amount: Money(-500),
        }))?,
    });
    // A valid order on the wrong partition: dead-lettered, then replayed.
    let misrouted = order(run, 999, account, sku)?;
    let misrouted_id = misrouted.header().order_id;
    raws.push(Raw {
        topic: ORDER_CREATED,
        partition: elsewhere,
        key: account_key(account).to_vec(),
        payload: encode_to_vec(&misrouted)?,
    });
    // Funding and stock first, and applied, before any order: topics carry
    // no order between them, so an order could otherwise meet an unknown account.
    let setup: Vec<Raw> = raws.drain(..2).collect();
    let setup_records: Vec<OutRecord<'_>> = setup
        .iter()
        .map(|r| OutRecord {
            topic: r.topic,
            partition: PartitionId(r.partition),
            key: Some(&r.key),
            payload: Some(&r.payload),
            headers: &[],
        })
        .collect();
    publish_and_wait(cluster.bootstrap(), &[], &setup_records)?;
    let started = Instant::now();
    loop {
        let funded = engine
            .query(
                PartitionId(home),
                move |s: &TradeFlowState| s.accounts.balance(account),
                Duration::from_secs(5),
            )?
            .flatten();
        let stocked = engine
            .query(
                PartitionId(sku_home),
                move |s: &TradeFlowState| s.stock.on_hand(&sku),
                Duration::from_secs(5),
            )?
            .flatten();
        if funded.is_some() && stocked.is_some() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "funding and stock were not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let records: Vec<OutRecord<'_>> = raws
        .iter()
        .map(|r| OutRecord {
            topic: r.topic,
            partition: PartitionId(r.partition),
            key: Some(&r.key),
            payload: Some(&r.payload),
            headers: &[],
        })
        .collect();
    publish_and_wait(cluster.bootstrap(), &[], &records)?;

    // Every valid order completes despite the poison around it.
    let started = Instant::now();
    while orders
        .iter()
        .any(|id| outcome_of(&engine, partitions, account, *id).is_none())
    {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "valid orders stalled behind poison records"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &orders {
        assert_eq!(
            outcome_of(&engine, partitions, account, *id).as_deref(),
            Some("Filled")
        );
    }

    // Each poison record is in the dead-letter topic with its reason.
    let wait_letters = |topic: &str, at_least: u64| -> anyhow::Result<Vec<dlq::DeadLetter>> {
        let started = Instant::now();
        loop {
            let letters: Vec<_> = dlq::list(cluster.bootstrap(), &[], topic)?
                .into_iter()
                .skip(dlq_ends[topic] as usize)
                .collect();
            if letters.len() as u64 >= at_least || started.elapsed() > WAIT {
                return Ok(letters);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let order_letters = wait_letters(ORDER_CREATED, 6)?;
    let reasons: Vec<&str> = order_letters.iter().map(|l| l.reason.as_str()).collect();
    println!("order.created dead letters: {reasons:#?}");
    for expected in [
        "magic byte is 0x64", // "definitely…" starts with 'd'
        "payload is",         // truncated archive
        "unknown rkyv type tag: kind code 1, schema version 99",
        "magic byte is 0x07",
        "exceeds the 256-byte limit",
        "did not partition by the flow's key",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says '{expected}': {reasons:?}"
        );
    }
    assert!(order_letters
        .iter()
        .all(|l| l.class == "user-data" && l.original_topic == ORDER_CREATED));
    let funding_letters = wait_letters(ACCOUNT_FUNDED, 1)?;
    println!(
        "account.funded dead letters: {:?}",
        funding_letters
            .iter()
            .map(|l| &l.reason)
            .collect::<Vec<_>>()
    );
    assert!(
        !funding_letters.is_empty(),
        "the negative funding was dead-lettered"
    );
    assert_eq!(outcome_of(&engine, partitions, account, misrouted_id), None);

    // Replay the misrouted order: it goes to its key's partition and is processed once.
    let misrouted_letter = order_letters
        .iter()
        .find(|l| l.reason.contains("did not partition"))
        .ok_or_else(|| anyhow::anyhow!("misrouted order not dead-lettered"))?;
    let summary = dlq::replay(
        cluster.bootstrap(),
        &[],
        ORDER_CREATED,
        &ReplayFilter {
            offsets: vec![(misrouted_letter.partition, misrouted_letter.offset)],
            ..ReplayFilter::default()
        },
        false,
    )?;
    assert_eq!(summary.replayed, 1);
    assert_eq!(
        summary.targets[0].1, home,
        "replayed to the key's partition"
    );
    let started = Instant::now();
    while outcome_of(&engine, partitions, account, misrouted_id).is_none() {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "the replayed order was not processed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.shutdown()?;
    let mut fills = 0;
    read_to_end(cluster.bootstrap(), &[], &[STOCK_UPDATED], &mut |record| {
        if let Some(Ok(event)) = record.payload.map(codecs::decode) {
            if event.order_id() == misrouted_id {
                fills += 1;
            }
        }
    })?;
    assert_eq!(fills, 1, "the replayed order was filled exactly once");
    Ok(())
}
