//! Untrusted bytes: every way a frame can be wrong maps to its own error
//! variant and never to a panic; a bounded proptest run drives the same entry
//! point as the `cargo fuzz` target (`codecs::testing::exercise_decode`) over
//! random and mutated-valid bytes on stable Rust.

use codecs::testing::{exercise_decode, legacy_frame, sample_events};
use codecs::{
    decode, decode_legacy, encode_to_vec, split_frame, DecodeError, Event, EventSchema,
    FRAME_BYTES_MAX, FRAME_HEADER_BYTES, LEGACY_FRAME_HEADER_BYTES, RKYV_FRAMING_VERSION,
    RKYV_MAGIC,
};
use proptest::prelude::*;

fn frame_of(index: usize) -> Vec<u8> {
    encode_to_vec(&sample_events()[index]).expect("sample encodes")
}

/// A payment.completed frame: its payload has a SKU but no enum.
fn payment_completed_frame() -> Vec<u8> {
    let event = sample_events()
        .into_iter()
        .find(|e| matches!(e, Event::PaymentCompleted(_)))
        .expect("samples hold a payment.completed");
    encode_to_vec(&event).expect("sample encodes")
}

#[test]
fn empty_frame() {
    assert_eq!(decode(&[]).err(), Some(DecodeError::Empty));
}

#[test]
fn truncated_header() {
    for len in 1..FRAME_HEADER_BYTES {
        let frame = vec![RKYV_MAGIC; len];
        assert_eq!(
            decode(&frame).err(),
            Some(DecodeError::TruncatedHeader {
                len,
                header: FRAME_HEADER_BYTES
            })
        );
    }
    for len in 1..LEGACY_FRAME_HEADER_BYTES {
        let frame = vec![0u8; len];
        assert_eq!(
            decode_legacy(&frame).err(),
            Some(DecodeError::TruncatedHeader {
                len,
                header: LEGACY_FRAME_HEADER_BYTES
            })
        );
    }
}

#[test]
fn wrong_magic_byte() {
    let mut frame = frame_of(0);
    frame[0] = 1;
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::WrongMagic { byte: 1 })
    );
    // A short frame whose first byte is already wrong says so.
    assert_eq!(
        decode(b"{\"").err(),
        Some(DecodeError::WrongMagic { byte: b'{' })
    );
}

#[test]
fn a_confluent_or_legacy_frame_is_never_read_as_rkyv_nor_the_other_way_round() {
    for event in sample_events() {
        let frame = encode_to_vec(&event).expect("sample encodes");
        let legacy = legacy_frame(&frame).expect("valid frame");
        assert_eq!(
            decode(&legacy).err(),
            Some(DecodeError::WrongMagic { byte: 0 }),
            "magic 0 is Confluent's"
        );
        assert_eq!(decode_legacy(&legacy).expect("legacy").to_event(), event);
        assert_eq!(
            decode_legacy(&frame).err(),
            Some(DecodeError::WrongMagic { byte: RKYV_MAGIC })
        );
        // A Confluent frame of any registry id is refused, the ids of the
        // old table included.
        for id in [1u32, 101, 102, 901, 1001, u32::MAX] {
            let mut confluent = legacy.clone();
            confluent[1..5].copy_from_slice(&id.to_be_bytes());
            assert!(matches!(
                decode(&confluent),
                Err(DecodeError::WrongMagic { byte: 0 })
            ));
        }
    }
}

#[test]
fn unknown_framing_version() {
    let mut frame = frame_of(0);
    assert_eq!(frame[1], RKYV_FRAMING_VERSION);
    frame[1] = 2;
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::UnknownFraming { version: 2 })
    );
}

#[test]
fn unknown_type_tag() {
    let mut frame = frame_of(0);
    frame[2..4].copy_from_slice(&[1, 3]);
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::UnknownType {
            kind: 1,
            version: 3
        })
    );
    frame[2..4].copy_from_slice(&[0, 1]);
    assert!(matches!(
        decode(&frame),
        Err(DecodeError::UnknownType { .. })
    ));
}

#[test]
fn unknown_legacy_id() {
    let mut frame = legacy_frame(&frame_of(0)).expect("valid frame");
    frame[1..5].copy_from_slice(&103u32.to_be_bytes());
    assert_eq!(
        decode_legacy(&frame).err(),
        Some(DecodeError::UnknownLegacyId { id: 103 })
    );
    // Little-endian ids are a classic producer bug: they read as unknown.
    frame[1..5].copy_from_slice(&901u32.to_le_bytes());
    assert!(matches!(
        decode_legacy(&frame),
        Err(DecodeError::UnknownLegacyId { .. })
    ));
}

#[test]
fn truncated_payload() {
    let frame = payment_completed_frame();
    let expected = EventSchema::PaymentCompletedV1.payload_bytes();
    for cut in 1..=expected {
        let short = &frame[..frame.len() - cut];
        assert_eq!(
            decode(short).err(),
            Some(DecodeError::TruncatedPayload {
                schema: EventSchema::PaymentCompletedV1,
                len: expected - cut,
                expected,
            })
        );
    }
}

#[test]
fn trailing_bytes() {
    let mut frame = payment_completed_frame();
    frame.push(0);
    let expected = EventSchema::PaymentCompletedV1.payload_bytes();
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::TrailingBytes {
            schema: EventSchema::PaymentCompletedV1,
            len: expected + 1,
            expected,
        })
    );
}

#[test]
fn oversize_frame() {
    let mut frame = frame_of(0);
    frame.resize(FRAME_BYTES_MAX + 1, 0);
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::Oversize {
            len: FRAME_BYTES_MAX + 1,
            max: FRAME_BYTES_MAX,
        })
    );
    // Checked before the header: even garbage that long is "oversize".
    assert!(matches!(
        decode(&vec![0xff; 1 << 20]),
        Err(DecodeError::Oversize { .. })
    ));
}

#[test]
fn corrupt_archive_bad_enum_tag() {
    let failed = sample_events()
        .into_iter()
        .find(|e| matches!(e, Event::PaymentFailed(_)))
        .expect("samples hold a payment.failed");
    let mut frame = encode_to_vec(&failed).expect("sample encodes");
    // `reason` is the last byte of payment.failed.
    let last = frame.len() - 1;
    frame[last] = 200;
    assert_eq!(
        decode(&frame).err(),
        Some(DecodeError::CorruptArchive {
            schema: EventSchema::PaymentFailedV1
        })
    );
}

#[test]
fn corrupt_archive_ill_formed_sku() {
    let frame = payment_completed_frame();
    // Header (48 bytes) then account (8): the SKU starts at payload offset 56.
    let sku_at = FRAME_HEADER_BYTES + 56;
    assert_eq!(&frame[sku_at..sku_at + 5], b"AAPL\0");
    for (offset, byte) in [(0, b'a'), (0, 0), (5, b'X'), (2, b' '), (15, b'Z')] {
        let mut bad = frame.clone();
        bad[sku_at + offset] = byte;
        assert_eq!(
            decode(&bad).err(),
            Some(DecodeError::CorruptArchive {
                schema: EventSchema::PaymentCompletedV1
            }),
            "sku byte {offset} set to {byte:#04x}"
        );
    }
}

#[test]
fn errors_have_distinct_reasons() {
    let schema = EventSchema::OrderCreatedV1;
    let all = [
        DecodeError::Empty,
        DecodeError::Oversize { len: 0, max: 0 },
        DecodeError::TruncatedHeader { len: 0, header: 0 },
        DecodeError::WrongMagic { byte: 0 },
        DecodeError::UnknownFraming { version: 0 },
        DecodeError::UnknownType {
            kind: 0,
            version: 0,
        },
        DecodeError::TruncatedPayload {
            schema,
            len: 0,
            expected: 0,
        },
        DecodeError::TrailingBytes {
            schema,
            len: 0,
            expected: 0,
        },
        DecodeError::CorruptArchive { schema },
    ];
    let mut reasons: Vec<_> = all.iter().map(DecodeError::reason).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
}

#[test]
fn payload_at_odd_addresses_decodes_in_place() {
    // The frame header puts the payload at offset 4 (5 in a legacy frame);
    // shifting the frame through eight positions puts the payload at every
    // address residue mod 8.
    for event in sample_events() {
        let frame = encode_to_vec(&event).expect("sample encodes");
        let mut residues = [false; 8];
        for shift in 0..8 {
            let mut buf = vec![0xaau8; shift];
            buf.extend_from_slice(&frame);
            let shifted = &buf[shift..];
            let (_, payload) = split_frame(shifted).expect("valid header");
            let decoded = decode(shifted).expect("decodes at any alignment");
            assert_eq!(decoded.to_event(), event);
            // Zero-copy: the archived header is the payload's first byte.
            let header_at = decoded.header() as *const _ as *const u8;
            assert_eq!(header_at, payload.as_ptr());
            residues[payload.as_ptr() as usize % 8] = true;
            let legacy = legacy_frame(shifted).expect("valid frame");
            let mut buf = vec![0xaau8; shift];
            buf.extend_from_slice(&legacy);
            let decoded = decode_legacy(&buf[shift..]).expect("legacy at any alignment");
            assert_eq!(decoded.to_event(), event);
        }
        assert!(residues.iter().all(|&seen| seen), "{residues:?}");
    }
}

/// Valid frames with a few bytes changed, cut or added.
fn mutated_valid_frame() -> impl Strategy<Value = Vec<u8>> {
    let frames: Vec<Vec<u8>> = sample_events()
        .iter()
        .map(|e| encode_to_vec(e).expect("sample encodes"))
        .flat_map(|frame| [legacy_frame(&frame).expect("valid frame"), frame])
        .collect();
    (
        proptest::sample::select(frames),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop_oneof![
            Just(None),
            (0usize..8).prop_map(|n| Some(-(n as isize))),
            (1usize..8).prop_map(|n| Some(n as isize)),
        ],
    )
        .prop_map(|(mut frame, edits, resize)| {
            for (index, byte) in edits {
                let i = index.index(frame.len());
                frame[i] = byte;
            }
            match resize {
                Some(n) if n < 0 => frame.truncate(frame.len().saturating_sub(n.unsigned_abs())),
                Some(n) => frame.extend(std::iter::repeat_n(0u8, n as usize)),
                None => {}
            }
            frame
        })
}

/// A well-formed header for a known schema and a random payload of exactly the
/// right size: reaches bytecheck, which random bytes alone rarely do.
fn random_payload_frame() -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(EventSchema::ALL.to_vec()).prop_flat_map(|schema| {
        prop::collection::vec(any::<u8>(), schema.payload_bytes()).prop_map(move |payload| {
            let mut frame = Vec::with_capacity(schema.frame_bytes());
            codecs::write_frame_header(&mut frame, schema);
            frame.extend_from_slice(&payload);
            frame
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        exercise_decode(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(frame in mutated_valid_frame()) {
        exercise_decode(&frame);
    }

    #[test]
    fn random_payloads_never_panic(frame in random_payload_frame()) {
        let decoded = exercise_decode(&frame);
        // Random bytes almost never make a valid SKU, so these are mostly
        // rejected as corrupt archives, never as anything structural.
        if !decoded {
            let corrupt = matches!(decode(&frame), Err(DecodeError::CorruptArchive { .. }));
            prop_assert!(corrupt, "rejected for a reason other than the archive");
        }
    }
}

#[test]
fn every_valid_frame_passes_the_fuzz_property() {
    for event in sample_events() {
        let frame = encode_to_vec(&event).expect("sample encodes");
        assert!(exercise_decode(&frame));
        assert!(exercise_decode(&legacy_frame(&frame).expect("valid frame")));
    }
}
