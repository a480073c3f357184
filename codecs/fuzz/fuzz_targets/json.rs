//! Untrusted JSON (REST bodies, traffic files) into `Event::from_json`: never
//! a panic, and whatever parses is a valid event that survives JSON → rkyv →
//! JSON unchanged when the encoder accepts its header. The property lives in
//! `codecs::testing::exercise_json`, which the stable proptest run in
//! `codecs/tests/untrusted_json.rs` drives too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecs::testing::exercise_json(data);
});
