//! Raw record values into `codecs::decode`: never a panic, and whatever
//! decodes re-encodes to the same bytes and survives a JSON round trip. The
//! property lives in `codecs::testing::exercise_decode`, which the stable
//! proptest run in `codecs/tests/untrusted.rs` drives too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    codecs::testing::exercise_decode(data);
});
