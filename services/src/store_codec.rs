//! The services' store keys and the byte form of their store values in the
//! changelogs.
//!
//! Owns: key newtypes (`AccountKey`, `OrderKey`, `EventKey`, `SkuKey`) with
//! their fixed-size changelog encodings, and the little reader/writer every
//! value type uses, so each value's layout is written down once beside it.
//! Must never: panic on changelog bytes (a corrupt changelog is an error the
//! engine reports, not a crash), or change a released layout in place: a
//! changelog outlives the binary that wrote it.
//!
//! Lives on: the core of the shard that owns the partition.

use codecs::{AccountId, ClientOrderId, EventId, Money, OrderId, PaymentFailReason, Quantity, Sku};
use engine::StoreKey;

/// An account, as the key of Payment's stores: 8 bytes big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountKey(pub AccountId);

/// An order, as the key of the per-order stores: 8 bytes big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrderKey(pub OrderId);

/// An event id, as the key of the deduplication stores: 16 bytes big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventKey(pub EventId);

/// An instrument, as the key of Inventory's stock store: its 16 padded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SkuKey(pub Sku);

impl StoreKey for AccountKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0 .0.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let array = bytes.try_into().map_err(|_| "account key is not 8 bytes")?;
        Ok(AccountKey(AccountId(u64::from_be_bytes(array))))
    }
}

impl StoreKey for OrderKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0 .0.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let array = bytes.try_into().map_err(|_| "order key is not 8 bytes")?;
        Ok(OrderKey(OrderId(u64::from_be_bytes(array))))
    }
}

impl StoreKey for EventKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0 .0.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let array = bytes.try_into().map_err(|_| "event key is not 16 bytes")?;
        Ok(EventKey(EventId(u128::from_be_bytes(array))))
    }
}

impl StoreKey for SkuKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_padded_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() != Sku::WIDTH_BYTES {
            return Err("sku key is not 16 bytes");
        }
        Ok(SkuKey(sku_from_padded(bytes)?))
    }
}

fn unpadded(bytes: &[u8]) -> &[u8] {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..len]
}

fn sku_from_padded(bytes: &[u8]) -> Result<Sku, &'static str> {
    Sku::from_bytes(unpadded(bytes)).map_err(|_| "sku bytes are not a valid sku")
}

/// `PaymentFailReason` as one changelog byte (append-only, like the wire enum).
pub(crate) fn fail_reason_code(reason: PaymentFailReason) -> u8 {
    match reason {
        PaymentFailReason::InsufficientFunds => 0,
        PaymentFailReason::UnknownAccount => 1,
        PaymentFailReason::AmountOverflow => 2,
        PaymentFailReason::InvalidOrder => 3,
    }
}

pub(crate) fn fail_reason_from(code: u8) -> Result<PaymentFailReason, &'static str> {
    Ok(match code {
        0 => PaymentFailReason::InsufficientFunds,
        1 => PaymentFailReason::UnknownAccount,
        2 => PaymentFailReason::AmountOverflow,
        3 => PaymentFailReason::InvalidOrder,
        _ => return Err("unknown payment failure reason"),
    })
}

/// Appends fixed-width little-endian fields to a value's changelog bytes.
pub(crate) struct ValueWriter<'a>(pub(crate) &'a mut Vec<u8>);

impl ValueWriter<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn event_id(&mut self, v: EventId) -> &mut Self {
        self.0.extend_from_slice(&v.0.to_le_bytes());
        self
    }
    pub(crate) fn account(&mut self, v: AccountId) -> &mut Self {
        self.u64(v.0)
    }
    pub(crate) fn money(&mut self, v: Money) -> &mut Self {
        self.i64(v.0)
    }
    pub(crate) fn quantity(&mut self, v: Quantity) -> &mut Self {
        self.i64(v.0)
    }
    pub(crate) fn sku(&mut self, v: &Sku) -> &mut Self {
        self.0.extend_from_slice(v.as_padded_bytes());
        self
    }
    /// All zeros for `None`: a client order id is never empty, so zeros are free.
    pub(crate) fn client_order_id(&mut self, v: Option<&ClientOrderId>) -> &mut Self {
        match v {
            Some(id) => self.0.extend_from_slice(id.as_padded_bytes()),
            None => self.0.extend_from_slice(&[0u8; ClientOrderId::WIDTH_BYTES]),
        }
        self
    }
}

/// Reads the fields a [`ValueWriter`] wrote, failing (never panicking) on
/// short or malformed bytes.
pub(crate) struct ValueReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ValueReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ValueReader { bytes }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        if self.bytes.len() < N {
            return Err("store value is truncated");
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut array = [0u8; N];
        array.copy_from_slice(head);
        Ok(array)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn event_id(&mut self) -> Result<EventId, &'static str> {
        Ok(EventId(u128::from_le_bytes(self.take()?)))
    }
    pub(crate) fn account(&mut self) -> Result<AccountId, &'static str> {
        Ok(AccountId(self.u64()?))
    }
    pub(crate) fn money(&mut self) -> Result<Money, &'static str> {
        Ok(Money(self.i64()?))
    }
    pub(crate) fn quantity(&mut self) -> Result<Quantity, &'static str> {
        Ok(Quantity(self.i64()?))
    }
    pub(crate) fn sku(&mut self) -> Result<Sku, &'static str> {
        let bytes: [u8; Sku::WIDTH_BYTES] = self.take()?;
        sku_from_padded(&bytes)
    }
    pub(crate) fn client_order_id(&mut self) -> Result<Option<ClientOrderId>, &'static str> {
        let bytes: [u8; ClientOrderId::WIDTH_BYTES] = self.take()?;
        let text = unpadded(&bytes);
        if text.is_empty() {
            return Ok(None);
        }
        ClientOrderId::from_bytes(text)
            .map(Some)
            .map_err(|_| "client order id bytes are not valid")
    }

    /// Whether every byte was read: an optional trailing field (one a later
    /// layout appended) is absent.
    pub(crate) fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails if bytes are left over: a value written by another layout.
    pub(crate) fn finish(self) -> Result<(), &'static str> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err("store value has trailing bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let mut bytes = Vec::new();
        SkuKey(Sku::new("BRK.B")?).encode(&mut bytes);
        assert_eq!(bytes.len(), 16);
        assert_eq!(SkuKey::decode(&bytes)?, SkuKey(Sku::new("BRK.B")?));
        bytes.clear();
        EventKey(EventId(u128::MAX - 3)).encode(&mut bytes);
        assert_eq!(EventKey::decode(&bytes)?, EventKey(EventId(u128::MAX - 3)));
        bytes.clear();
        AccountKey(AccountId(42)).encode(&mut bytes);
        assert_eq!(AccountKey::decode(&bytes)?, AccountKey(AccountId(42)));
        assert!(OrderKey::decode(&[1, 2]).is_err());
        assert!(SkuKey::decode(&[b'a'; 16]).is_err(), "lower case is no sku");
        assert!(SkuKey::decode(&[0; 16]).is_err(), "empty is no sku");
        Ok(())
    }

    #[test]
    fn reader_rejects_short_and_long_values() {
        let mut bytes = Vec::new();
        ValueWriter(&mut bytes).i64(-5).u8(3);
        let mut r = ValueReader::new(&bytes);
        assert_eq!(r.i64(), Ok(-5));
        assert_eq!(r.u8(), Ok(3));
        assert!(r.finish().is_ok());
        let mut r = ValueReader::new(&bytes[..4]);
        assert!(r.i64().is_err());
        let r = ValueReader::new(&bytes);
        assert!(r.finish().is_err());
    }
}
