//! A synthetic scenario written as a traffic file reads back record for record,
//! and a replay plan over it rewrites ids consistently.

use std::collections::HashMap;
use std::io::BufReader;

use codecs::{Event, OrderId};
use loadgen::synth::{self, SequentialOrderIds, SynthConfig};
use loadgen::traffic::replay::{IdRewriter, Pace, Schedule};
use loadgen::traffic::{Header, Record, TrafficReader, TrafficWriter};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config() -> SynthConfig {
    SynthConfig {
        seed: 11,
        accounts: 50,
        instruments: 20,
        orders: 3_000,
        rate_per_s: 500,
        ..SynthConfig::default()
    }
}

#[test]
fn a_synthetic_scenario_round_trips_through_a_traffic_file() -> TestResult {
    let records: Vec<Record> =
        synth::generate(&config(), SequentialOrderIds::default())?.collect::<Result<_, _>>()?;
    let mut writer = TrafficWriter::new(Vec::new(), &Header::new("test"))?;
    for record in &records {
        writer.write(record)?;
    }
    let bytes = writer.finish()?;
    let reader = TrafficReader::new(BufReader::new(&bytes[..]))?;
    let back: Vec<Record> = reader.collect::<Result<_, _>>()?;
    assert_eq!(back, records);
    Ok(())
}

#[test]
fn a_replay_plan_keeps_orders_linked_under_new_ids() -> TestResult {
    let scenario = synth::generate(&config(), SequentialOrderIds::default())?;
    let schedule = Schedule::new(Pace::Speedup(4.0))?;
    let mut rewriter = IdRewriter::new(0xfeed);
    let mut new_by_old: HashMap<OrderId, OrderId> = HashMap::new();
    let mut last_intended = 0;
    for planned in schedule.plan(scenario) {
        let (intended_ns, record) = planned?;
        assert_eq!(intended_ns, record.t_ns / 4);
        assert!(intended_ns >= last_intended);
        last_intended = intended_ns;
        let Some(original) = record.event().copied() else {
            continue;
        };
        let mut event = original;
        rewriter.rewrite(&mut event)?;
        assert_ne!(event.header().event_id, original.header().event_id);
        let old = original.header().order_id;
        if old.is_none() {
            assert!(event.header().order_id.is_none());
            continue;
        }
        let new = event.header().order_id;
        match original {
            Event::OrderCreated(_) => {
                assert!(
                    new_by_old.insert(old, new).is_none(),
                    "one create per order"
                );
            }
            _ => assert_eq!(
                new_by_old.get(&old),
                Some(&new),
                "amend/cancel follow their order"
            ),
        }
    }
    assert!(!new_by_old.is_empty());
    Ok(())
}
