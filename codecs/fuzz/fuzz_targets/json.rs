//! Untrusted JSON (REST bodies, traffic files) into `Event::from_json`: never
//! a panic, and whatever parses is a valid event that survives JSON → rkyv →
//! JSON unchanged when the encoder accepts its header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = codecs::Event::from_json(data) else {
        return;
    };
    let json = event.to_json().expect("a parsed event serializes");
    let again = codecs::Event::from_json(json.as_bytes()).expect("own JSON parses");
    assert_eq!(again, event);
    if let Ok(frame) = codecs::encode_to_vec(&event) {
        assert!(
            codecs::testing::exercise_decode(&frame),
            "encoded event must decode"
        );
        let back = codecs::decode(&frame).expect("just decoded").to_event();
        assert_eq!(back, event);
    }
});
