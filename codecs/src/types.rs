//! Value types every event is built from: identifiers, money, quantities, time.
//!
//! Owns the domain newtypes and their validation (`Sku`, `ClientOrderId` and
//! `Tag` are checked on construction, and again in their archived form by
//! bytecheck, so a value of these types is always well formed wherever it came
//! from). Must never hold heap data: every type here is fixed-size and `Copy`,
//! which is what lets an archived event be read in place without allocation.
//! Domain rules (positive quantities, enough cash) are not checked here; they
//! belong to the services, and a well-formed event may still break them.

use core::fmt;
use core::str::FromStr;

use rkyv::bytecheck::Verify;
use rkyv::rancor::{fail, Fallible, Source};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Reads an archived (little-endian, unaligned) value out as its native form.
///
/// Every archived type in this crate implements it; the copy it makes is of a
/// few plain bytes and never allocates.
pub trait ToNative {
    /// The native type the archived bytes stand for.
    type Native;
    /// Copies the value out of the archive.
    fn to_native(&self) -> Self::Native;
}

/// Why a value could not be built from untrusted input (JSON, REST, a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value must have at least one byte.
    #[error("{what} is empty")]
    Empty {
        /// Which type was being built.
        what: &'static str,
    },
    /// The value is longer than its fixed wire width.
    #[error("{what} is {len} bytes, more than the {max} it can hold")]
    TooLong {
        /// Which type was being built.
        what: &'static str,
        /// Length of the input in bytes.
        len: usize,
        /// Fixed width on the wire.
        max: usize,
    },
    /// The value holds a byte outside the type's alphabet.
    #[error("{what} has byte {byte:#04x} at index {index}, outside its alphabet")]
    BadByte {
        /// Which type was being built.
        what: &'static str,
        /// Position of the first offending byte.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
    /// An event id in text form must be exactly 32 hexadecimal digits.
    #[error("event id must be 32 hexadecimal digits")]
    EventIdNotHex,
}

/// Identifies one event; producers make it unique (consumers deduplicate on it).
///
/// `EventId::NONE` (zero) means "no event", e.g. an absent causation id. In JSON
/// it is 32 lower-case hexadecimal digits, since a u128 does not survive
/// JavaScript numbers.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
)]
#[rkyv(derive(Debug))]
pub struct EventId(pub u128);

impl EventId {
    /// The absent id.
    pub const NONE: EventId = EventId(0);

    /// True for `EventId::NONE`.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    fn to_hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 4 * (31 - i);
            *slot = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // Hex digits are ASCII, so this cannot fail; fall back rather than panic.
        f.write_str(core::str::from_utf8(&hex).unwrap_or("<event id>"))
    }
}

impl FromStr for EventId {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        // from_str_radix alone would also take a sign and shorter forms; the
        // text form is canonical so equal ids compare equal as strings too.
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ValueError::EventIdNotHex);
        }
        u128::from_str_radix(s, 16)
            .map(EventId)
            .map_err(|_| ValueError::EventIdNotHex)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let hex = self.to_hex();
            serializer.serialize_str(core::str::from_utf8(&hex).unwrap_or_default())
        } else {
            serializer.serialize_u128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl Visitor<'_> for HexVisitor {
            type Value = EventId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 hexadecimal digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventId, E> {
                v.parse().map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(HexVisitor)
        } else {
            u128::deserialize(deserializer).map(EventId)
        }
    }
}

impl ToNative for ArchivedEventId {
    type Native = EventId;
    #[inline]
    fn to_native(&self) -> EventId {
        EventId(self.0.to_native())
    }
}

/// Declares a `u64`/`i64` newtype with its archived reader and transparent serde.
macro_rules! int_newtype {
    ($(#[$doc:meta])* $name:ident, $archived:ident, $int:ty) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            rkyv::Archive,
            rkyv::Serialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug))]
        pub struct $name(pub $int);

        impl ToNative for $archived {
            type Native = $name;
            #[inline]
            fn to_native(&self) -> $name {
                $name(self.0.to_native())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

int_newtype!(
    /// Identifies an order across all three services. `OrderId::NONE` (zero)
    /// marks events that belong to no order (funding, replenishment).
    OrderId,
    ArchivedOrderId,
    u64
);
int_newtype!(
    /// Identifies a client's cash account; Payment's partition key.
    AccountId,
    ArchivedAccountId,
    u64
);
int_newtype!(
    /// An amount of money in integer minor units (cents for USD); never a float.
    Money,
    ArchivedMoney,
    i64
);
int_newtype!(
    /// A number of units of an instrument. Signed on the wire so a well-formed
    /// event can still carry a value that breaks a domain rule (the services
    /// reject it and the dead-letter path records why).
    Quantity,
    ArchivedQuantity,
    i64
);
int_newtype!(
    /// Nanoseconds since the Unix epoch, taken by the event's producer; the
    /// loadgen measures end-to-end latency from it.
    TimestampNs,
    ArchivedTimestampNs,
    u64
);

impl OrderId {
    /// The absent order id, for events outside any order.
    pub const NONE: OrderId = OrderId(0);

    /// True for `OrderId::NONE`.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// `Money` arithmetic left the `i64` range: an error, never a wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("money arithmetic overflowed i64 minor units")]
pub struct MoneyOverflow;

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);

    /// Price × quantity, e.g. the cost of an order at its limit price.
    #[inline]
    pub fn checked_mul_quantity(self, quantity: Quantity) -> Result<Money, MoneyOverflow> {
        self.0
            .checked_mul(quantity.0)
            .map(Money)
            .ok_or(MoneyOverflow)
    }

    /// Sum of two amounts.
    #[inline]
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyOverflow> {
        self.0.checked_add(other.0).map(Money).ok_or(MoneyOverflow)
    }

    /// Difference of two amounts (may be negative; callers decide if that is allowed).
    #[inline]
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyOverflow> {
        self.0.checked_sub(other.0).map(Money).ok_or(MoneyOverflow)
    }
}

impl Quantity {
    /// No units.
    pub const ZERO: Quantity = Quantity(0);

    /// Sum of two quantities, `None` on overflow.
    #[inline]
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.0.checked_add(other.0).map(Quantity)
    }

    /// Difference of two quantities, `None` on overflow.
    #[inline]
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.0.checked_sub(other.0).map(Quantity)
    }
}

impl TimestampNs {
    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later (clocks
    /// of different hosts may disagree; a latency is never negative).
    #[inline]
    pub const fn saturating_nanos_since(self, earlier: TimestampNs) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Packs `s` into a zero-padded fixed array if it fits `N` and the alphabet.
fn pack<const N: usize>(
    what: &'static str,
    s: &[u8],
    empty_ok: bool,
    allowed: fn(u8) -> bool,
) -> Result<[u8; N], ValueError> {
    if s.is_empty() && !empty_ok {
        return Err(ValueError::Empty { what });
    }
    if s.len() > N {
        return Err(ValueError::TooLong {
            what,
            len: s.len(),
            max: N,
        });
    }
    let mut out = [0u8; N];
    for (index, (&byte, slot)) in s.iter().zip(out.iter_mut()).enumerate() {
        if !allowed(byte) {
            return Err(ValueError::BadByte { what, index, byte });
        }
        *slot = byte;
    }
    Ok(out)
}

/// Length of the text in a packed array, if the array is well formed: a run of
/// allowed bytes then only zero padding.
///
/// On the decode hot path (bytecheck runs it for every SKU), so the check is
/// two branch-free reductions over the fixed width, which the compiler turns
/// into a few vector compares, rather than a byte loop with early exits.
#[inline(always)]
fn packed_len<const N: usize>(
    bytes: &[u8; N],
    empty_ok: bool,
    allowed: fn(u8) -> bool,
) -> Option<usize> {
    let mut bad = false;
    for &b in bytes {
        bad |= (b != 0) & !allowed(b);
    }
    // A zero followed by a non-zero byte would be text after the padding.
    for pair in bytes.windows(2) {
        bad |= (pair[0] == 0) & (pair[1] != 0);
    }
    bad |= !empty_ok & bytes.first().is_none_or(|&b| b == 0);
    (!bad).then(|| text_len(bytes))
}

/// Length of the text in a packed array known to be well formed.
#[inline(always)]
fn text_len<const N: usize>(bytes: &[u8; N]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(N)
}

/// Returned by bytecheck when an archived fixed string breaks its invariant.
#[derive(Debug)]
struct MalformedFixedString {
    what: &'static str,
}

impl fmt::Display for MalformedFixedString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "archived {} is not well formed", self.what)
    }
}

impl std::error::Error for MalformedFixedString {}

/// Declares a fixed-width ASCII string type, its archived form and its checks.
macro_rules! fixed_ascii {
    (
        $(#[$doc:meta])*
        $name:ident, $archived:ident, $width:expr, what = $what:literal,
        empty_ok = $empty_ok:expr, allowed = $allowed:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize)]
        #[rkyv(derive(Debug), bytecheck(verify))]
        pub struct $name([u8; $width]);

        impl $name {
            /// Fixed width on the wire in bytes; shorter text is zero-padded.
            pub const WIDTH_BYTES: usize = $width;

            /// Validates and packs `s`.
            pub fn new(s: &str) -> Result<Self, ValueError> {
                Self::from_bytes(s.as_bytes())
            }

            /// Validates and packs raw bytes.
            pub fn from_bytes(s: &[u8]) -> Result<Self, ValueError> {
                pack::<$width>($what, s, $empty_ok, $allowed).map($name)
            }

            /// The text without padding.
            pub fn as_str(&self) -> &str {
                as_text(&self.0)
            }

            /// The padded wire bytes.
            pub const fn as_padded_bytes(&self) -> &[u8; $width] {
                &self.0
            }
        }

        impl $archived {
            /// The text without padding, read in place.
            pub fn as_str(&self) -> &str {
                as_text(&self.0)
            }
        }

        impl ToNative for $archived {
            type Native = $name;
            #[inline]
            fn to_native(&self) -> $name {
                // bytecheck verified the invariant when the archive was accessed.
                $name(self.0)
            }
        }

        // SAFETY: `verify` returns Ok only if the bytes are a run of allowed
        // ASCII followed by zero padding, which is the whole invariant of the
        // type. The invariant is a logical one; no memory safety rests on it.
        unsafe impl<C> Verify<C> for $archived
        where
            C: Fallible + ?Sized,
            C::Error: Source,
        {
            fn verify(&self, _context: &mut C) -> Result<(), C::Error> {
                if packed_len(&self.0, $empty_ok, $allowed).is_none() {
                    fail!(MalformedFixedString { what: $what });
                }
                Ok(())
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValueError;
            fn try_from(s: &str) -> Result<Self, ValueError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl Visitor<'_> for TextVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} of at most {} ASCII bytes", $what, $width)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

/// The text of a packed array. Constructors and bytecheck make every array
/// well formed, so this only finds the padding; a malformed one (unreachable)
/// reads as "" rather than panicking.
#[inline(always)]
fn as_text<const N: usize>(bytes: &[u8; N]) -> &str {
    core::str::from_utf8(&bytes[..text_len(bytes)]).unwrap_or_default()
}

#[inline(always)]
fn is_symbol_byte(b: u8) -> bool {
    // `|` rather than `||`: no branches, so the SKU check vectorizes.
    b.is_ascii_uppercase() | b.is_ascii_digit() | (b == b'.') | (b == b'_') | (b == b'-')
}

#[inline(always)]
fn is_client_order_id_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

#[inline(always)]
fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() | (b == b'.') | (b == b'_') | (b == b'-')
}

fixed_ascii!(
    /// An instrument symbol such as `AAPL`: 1 to 16 bytes of `[A-Z0-9._-]`.
    /// Inventory's partition key.
    Sku,
    ArchivedSku,
    16,
    what = "sku",
    empty_ok = false,
    allowed = is_symbol_byte
);

fixed_ascii!(
    /// The client's own id for an order, for idempotent submission: 1 to 32
    /// printable ASCII bytes, no spaces.
    ClientOrderId,
    ArchivedClientOrderId,
    32,
    what = "client order id",
    empty_ok = false,
    allowed = is_client_order_id_byte
);

fixed_ascii!(
    /// A free label on an order (strategy, desk, book): 0 to 16 bytes of
    /// `[A-Za-z0-9._-]`; empty means no tag.
    Tag,
    ArchivedTag,
    16,
    what = "tag",
    empty_ok = true,
    allowed = is_tag_byte
);

impl Tag {
    /// No tag.
    pub const EMPTY: Tag = Tag([0; 16]);
}

impl Default for Tag {
    fn default() -> Self {
        Tag::EMPTY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_symbols_and_rejects_the_rest() {
        assert_eq!(
            Sku::new("AAPL").map(|s| s.to_string()),
            Ok("AAPL".to_owned())
        );
        assert!(Sku::new("BRK.B").is_ok());
        assert!(Sku::new("ABCDEFGHIJKLMNOP").is_ok());
        assert_eq!(Sku::new(""), Err(ValueError::Empty { what: "sku" }));
        assert_eq!(
            Sku::new("ABCDEFGHIJKLMNOPQ"),
            Err(ValueError::TooLong {
                what: "sku",
                len: 17,
                max: 16
            })
        );
        assert_eq!(
            Sku::new("aapl"),
            Err(ValueError::BadByte {
                what: "sku",
                index: 0,
                byte: b'a'
            })
        );
        assert!(Sku::new("A\0B").is_err());
    }

    #[test]
    fn client_order_id_and_tag_alphabets() {
        assert!(ClientOrderId::new("cl-0001/a#b").is_ok());
        assert!(ClientOrderId::new("has space").is_err());
        assert!(ClientOrderId::new("").is_err());
        assert_eq!(Tag::new(""), Ok(Tag::EMPTY));
        assert_eq!(Tag::default().as_str(), "");
        assert!(Tag::new("algo-7.b_x").is_ok());
        assert!(Tag::new("a/b").is_err());
    }

    #[test]
    fn packed_len_rejects_bytes_after_padding() {
        let mut bytes = *Sku::new("AB").expect("valid sku").as_padded_bytes();
        assert_eq!(packed_len(&bytes, false, is_symbol_byte), Some(2));
        bytes[5] = b'C';
        assert_eq!(packed_len(&bytes, false, is_symbol_byte), None);
        assert_eq!(packed_len(&[0u8; 16], false, is_symbol_byte), None);
        assert_eq!(packed_len(&[0u8; 16], true, is_tag_byte), Some(0));
    }

    /// The obvious, early-exit form `packed_len` must agree with.
    fn packed_len_reference<const N: usize>(
        bytes: &[u8; N],
        empty_ok: bool,
        allowed: fn(u8) -> bool,
    ) -> Option<usize> {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(N);
        let ok = (empty_ok || len > 0)
            && bytes[..len].iter().all(|&b| allowed(b))
            && bytes[len..].iter().all(|&b| b == 0);
        ok.then_some(len)
    }

    proptest::proptest! {
        #[test]
        fn packed_len_matches_reference(
            mut bytes in proptest::array::uniform16(proptest::sample::select(
                b"AZ09._-az \0\x7f\xff".to_vec(),
            )),
            cut in 0usize..=16,
            empty_ok: bool,
        ) {
            // Half the cases get a clean zero suffix, which random bytes rarely do.
            if cut % 2 == 0 {
                bytes[cut..].fill(0);
            }
            for allowed in [is_symbol_byte as fn(u8) -> bool, is_tag_byte, is_client_order_id_byte] {
                proptest::prop_assert_eq!(
                    packed_len(&bytes, empty_ok, allowed),
                    packed_len_reference(&bytes, empty_ok, allowed)
                );
            }
        }
    }

    #[test]
    fn money_arithmetic_reports_overflow() {
        assert_eq!(
            Money(250).checked_mul_quantity(Quantity(4)),
            Ok(Money(1000))
        );
        assert_eq!(Money(-3).checked_mul_quantity(Quantity(4)), Ok(Money(-12)));
        assert_eq!(
            Money(i64::MAX).checked_mul_quantity(Quantity(2)),
            Err(MoneyOverflow)
        );
        assert_eq!(
            Money(i64::MIN).checked_mul_quantity(Quantity(-1)),
            Err(MoneyOverflow)
        );
        assert_eq!(Money(i64::MAX).checked_add(Money(1)), Err(MoneyOverflow));
        assert_eq!(Money(i64::MIN).checked_sub(Money(1)), Err(MoneyOverflow));
        assert_eq!(Money(5).checked_sub(Money(7)), Ok(Money(-2)));
    }

    #[test]
    fn event_id_text_form_is_canonical_hex() {
        let id = EventId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<EventId>(), Ok(id));
        assert!("123".parse::<EventId>().is_err());
        assert!("+123456789abcdef0011223344556677"
            .parse::<EventId>()
            .is_err());
        assert!("0123456789abcdeg0011223344556677"
            .parse::<EventId>()
            .is_err());
    }

    #[test]
    fn timestamps_never_give_negative_latency() {
        assert_eq!(TimestampNs(10).saturating_nanos_since(TimestampNs(4)), 6);
        assert_eq!(TimestampNs(4).saturating_nanos_since(TimestampNs(10)), 0);
    }
}
