//! Untrusted JSON on stable Rust: a bounded proptest run drives the same
//! entry point as the `json` `cargo fuzz` target
//! (`codecs::testing::exercise_json`) over random bytes, byte-mutated event
//! JSON, and event JSON with one field replaced, dropped or added, so CI
//! without nightly still checks that `Event::from_json` never panics and that
//! whatever it accepts round-trips.

use codecs::testing::{exercise_json, sample_events};
use proptest::prelude::*;
use serde_json::Value;

fn sample_json() -> Vec<String> {
    sample_events()
        .iter()
        .map(|e| e.to_json().expect("sample serializes"))
        .collect()
}

/// Tokens of the event JSON form (as in `codecs/fuzz/json.dict`), so byte
/// mutations build near-events rather than noise.
const TOKENS: &[&str] = &[
    "\"type\":",
    "\"order.created\"",
    "\"payment.failed\"",
    "\"stock.rejected\"",
    "\"header\":",
    "\"event_id\":",
    "\"order_id\":",
    "\"sku\":",
    "\"quantity\":",
    "\"amount\":",
    "\"0000000000000000000000000000002a\"",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e400",
    "null",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"\\u0000\"",
];

/// Sample event JSON with a few bytes changed, a token spliced in, or cut.
fn mutated_json() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(sample_json()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of((
            any::<prop::sample::Index>(),
            proptest::sample::select(TOKENS),
        )),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(json, edits, splice, cut)| {
            let mut bytes = json.into_bytes();
            for (index, byte) in edits {
                let i = index.index(bytes.len());
                bytes[i] = byte;
            }
            if let Some((index, token)) = splice {
                let i = index.index(bytes.len() + 1);
                bytes.splice(i..i, token.bytes());
            }
            if let Some(index) = cut {
                bytes.truncate(index.index(bytes.len() + 1));
            }
            bytes
        })
}

/// Values a field might wrongly hold.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
        "[0-9a-f]{0,34}".prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({"nested": {"deeper": 1}})),
    ]
}

/// Sample event JSON, valid in shape, with one field (in the event or its
/// header) replaced, removed, or joined by an unknown one.
fn edited_json() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(sample_json()),
        any::<prop::sample::Index>(),
        any::<bool>(),
        0u8..3,
        odd_value(),
    )
        .prop_map(|(json, which, in_header, edit, value)| {
            let mut event: Value = serde_json::from_str(&json).expect("sample JSON parses");
            let object = if in_header {
                event.get_mut("header").and_then(Value::as_object_mut)
            } else {
                event.as_object_mut()
            };
            if let Some(object) = object {
                let keys: Vec<String> = object.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = keys[which.index(keys.len())].clone();
                    match edit {
                        0 => {
                            object.insert(key, value);
                        }
                        1 => {
                            object.remove(&key);
                        }
                        _ => {
                            object.insert(format!("{key}_extra"), value);
                        }
                    }
                }
            }
            serde_json::to_vec(&event).expect("a Value serializes")
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_json(&bytes);
    }

    #[test]
    fn mutated_event_json_never_panics(bytes in mutated_json()) {
        exercise_json(&bytes);
    }

    #[test]
    fn edited_event_json_never_panics(bytes in edited_json()) {
        exercise_json(&bytes);
    }
}

#[test]
fn every_sample_event_passes_the_fuzz_property() {
    for json in sample_json() {
        assert!(exercise_json(json.as_bytes()), "{json}");
    }
}

#[test]
fn some_edits_are_still_events() {
    // An edit that keeps a valid value (a new quantity) parses: the edited
    // strategy reaches past the parser's shape checks, not only its refusals.
    let mut accepted = 0;
    for json in sample_json() {
        let event: Value = serde_json::from_str(&json).expect("parses");
        if event.get("quantity").is_none() {
            continue;
        }
        for quantity in [1_i64, 5] {
            let mut edited = event.clone();
            edited["quantity"] = Value::from(quantity);
            let bytes = serde_json::to_vec(&edited).expect("serializes");
            if exercise_json(&bytes) {
                accepted += 1;
            }
        }
    }
    assert!(accepted > 0);
}
