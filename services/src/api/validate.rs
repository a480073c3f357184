//! Validation of requests, shared by REST and gRPC: from loosely typed input
//! (a JSON object, a protobuf message with optional fields, path segments)
//! to the checked values an event is built from, or the first rule broken.
//!
//! Owns: every rule a request must pass before anything is published — the
//! shape (strict JSON objects: no unknown or repeated fields, required
//! fields present, integers in range), the formats (`Sku`, `ClientOrderId`),
//! and the domain (positive quantities, prices and amounts; quantity × price
//! within `i64` minor units) — and which code each breach gets.
//! Must never: consult state or Kafka (the instrument check against
//! Inventory and ownership are `ops`'s), or accept a request by default:
//! a value not proven valid here is refused.
//!
//! Checks run in a fixed order — shape, then format, then domain, each in
//! field order — so a request with several faults always reports the same
//! one.

use std::fmt;

use codecs::{AccountId, ClientOrderId, Money, OrderId, Quantity, Sku, ValueError};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ErrorCode, Reject};

/// Longest unknown field name echoed back in an error.
const FIELD_NAME_ECHO_BYTES_MAX: usize = 64;

/// A JSON object whose fields are known to be allowed and not repeated.
#[derive(Debug, Default)]
pub(crate) struct JsonObject {
    fields: Vec<(String, Value)>,
}

/// Every member of an object, in order, repeats kept (serde_json's own map
/// would silently keep the last of a repeated field).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Parses `body` as one JSON object with only `allowed` fields, each once.
pub(crate) fn parse_object(body: &[u8], allowed: &[&'static str]) -> Result<JsonObject, Reject> {
    let Members(fields) = serde_json::from_slice(body).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Data => "the body must be a JSON object".to_string(),
            _ => format!("the body is not valid JSON: {e}"),
        };
        Reject::new(ErrorCode::MalformedJson, message)
    })?;
    for (index, (name, _)) in fields.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            let shown = truncate(name);
            return Err(Reject::field(
                ErrorCode::UnknownField,
                shown.clone(),
                format!("unknown field {shown:?}; expected one of {allowed:?}"),
            ));
        }
        if fields[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(Reject::field(
                ErrorCode::DuplicateField,
                name.clone(),
                format!("{name} is given more than once"),
            ));
        }
    }
    Ok(JsonObject { fields })
}

fn truncate(name: &str) -> String {
    let mut end = name.len().min(FIELD_NAME_ECHO_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

impl JsonObject {
    fn get(&self, field: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value)
    }

    /// An unsigned integer field (JSON number without fraction), if present.
    pub(crate) fn u64(&self, field: &'static str) -> Result<Option<u64>, Reject> {
        self.get(field)
            .map(|value| {
                value.as_u64().ok_or_else(|| {
                    Reject::field(
                        ErrorCode::InvalidValue,
                        field,
                        format!("{field} must be an integer from 0 to {}", u64::MAX),
                    )
                })
            })
            .transpose()
    }

    /// A signed 64-bit integer field, if present.
    pub(crate) fn i64(&self, field: &'static str) -> Result<Option<i64>, Reject> {
        self.get(field)
            .map(|value| {
                value.as_i64().ok_or_else(|| {
                    Reject::field(
                        ErrorCode::InvalidValue,
                        field,
                        format!(
                            "{field} must be an integer from {} to {}",
                            i64::MIN,
                            i64::MAX
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A string field, if present.
    pub(crate) fn string(&self, field: &'static str) -> Result<Option<String>, Reject> {
        self.get(field)
            .map(|value| {
                value.as_str().map(str::to_string).ok_or_else(|| {
                    Reject::field(
                        ErrorCode::InvalidValue,
                        field,
                        format!("{field} must be a string"),
                    )
                })
            })
            .transpose()
    }
}

/// `POST /v1/orders` / `CreateOrder`, as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CreateOrderInput {
    pub account: Option<u64>,
    pub sku: Option<String>,
    pub quantity: Option<i64>,
    pub limit_price: Option<i64>,
    pub client_order_id: Option<String>,
}

impl CreateOrderInput {
    pub(crate) const FIELDS: [&'static str; 5] = [
        "account",
        "sku",
        "quantity",
        "limit_price",
        "client_order_id",
    ];

    pub(crate) fn from_json(body: &[u8]) -> Result<Self, Reject> {
        let object = parse_object(body, &Self::FIELDS)?;
        Ok(CreateOrderInput {
            account: object.u64("account")?,
            sku: object.string("sku")?,
            quantity: object.i64("quantity")?,
            limit_price: object.i64("limit_price")?,
            client_order_id: object.string("client_order_id")?,
        })
    }
}

/// An order that passed every rule that needs no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub account: AccountId,
    pub sku: Sku,
    pub quantity: Quantity,
    pub limit_price: Money,
    pub client_order_id: ClientOrderId,
}

pub(crate) fn new_order(input: CreateOrderInput) -> Result<NewOrder, Reject> {
    let account = input.account.ok_or_else(|| Reject::missing("account"))?;
    let sku = input.sku.ok_or_else(|| Reject::missing("sku"))?;
    let quantity = input.quantity.ok_or_else(|| Reject::missing("quantity"))?;
    let limit_price = input
        .limit_price
        .ok_or_else(|| Reject::missing("limit_price"))?;
    let client_order_id = input
        .client_order_id
        .ok_or_else(|| Reject::missing("client_order_id"))?;
    let sku = sku_of(&sku)?;
    let client_order_id = ClientOrderId::new(&client_order_id).map_err(|e| {
        Reject::field(
            ErrorCode::MalformedClientOrderId,
            "client_order_id",
            e.to_string(),
        )
    })?;
    let (quantity, limit_price) = priced_quantity(quantity, limit_price)?;
    Ok(NewOrder {
        account: AccountId(account),
        sku,
        quantity,
        limit_price,
        client_order_id,
    })
}

/// Quantity and limit price of an order or an amendment: both positive and
/// their product (the order's cost, which Payment debits) within `i64`.
fn priced_quantity(quantity: i64, limit_price: i64) -> Result<(Quantity, Money), Reject> {
    let quantity = positive_quantity(quantity)?;
    if limit_price <= 0 {
        return Err(Reject::field(
            ErrorCode::NonPositivePrice,
            "limit_price",
            format!("limit_price must be positive minor units, got {limit_price}"),
        ));
    }
    let limit_price = Money(limit_price);
    limit_price.checked_mul_quantity(quantity).map_err(|_| {
        Reject::field(
            ErrorCode::AmountOverflow,
            "quantity",
            format!(
                "quantity × limit_price ({} × {}) exceeds {} minor units",
                quantity.0,
                limit_price.0,
                i64::MAX
            ),
        )
    })?;
    Ok((quantity, limit_price))
}

fn positive_quantity(quantity: i64) -> Result<Quantity, Reject> {
    if quantity <= 0 {
        return Err(Reject::field(
            ErrorCode::NonPositiveQuantity,
            "quantity",
            format!("quantity must be positive, got {quantity}"),
        ));
    }
    Ok(Quantity(quantity))
}

/// An instrument symbol from a body field or a path segment.
pub(crate) fn sku_of(text: &str) -> Result<Sku, Reject> {
    Sku::new(text).map_err(|e| Reject::field(ErrorCode::MalformedSku, "sku", e.to_string()))
}

/// An account id from a path segment.
pub(crate) fn account_of(text: &str) -> Result<AccountId, Reject> {
    text.parse::<u64>().map(AccountId).map_err(|_| {
        Reject::field(
            ErrorCode::InvalidValue,
            "account",
            format!("account must be a decimal integer from 0 to {}", u64::MAX),
        )
    })
}

/// An order id from a path segment or a message: never `OrderId::NONE`.
pub(crate) fn order_id_of(text: &str) -> Result<OrderId, Reject> {
    match text.parse::<u64>() {
        Ok(id) => order_id_from(id),
        Err(_) => Err(invalid_order_id()),
    }
}

pub(crate) fn order_id_from(id: u64) -> Result<OrderId, Reject> {
    if id == 0 {
        Err(invalid_order_id())
    } else {
        Ok(OrderId(id))
    }
}

fn invalid_order_id() -> Reject {
    Reject::field(
        ErrorCode::InvalidValue,
        "order_id",
        format!("order_id must be a decimal integer from 1 to {}", u64::MAX),
    )
}

/// `POST .../amend` / `AmendOrder`, as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AmendInput {
    pub quantity: Option<i64>,
    pub limit_price: Option<i64>,
}

impl AmendInput {
    pub(crate) const FIELDS: [&'static str; 2] = ["quantity", "limit_price"];

    pub(crate) fn from_json(body: &[u8]) -> Result<Self, Reject> {
        let object = parse_object(body, &Self::FIELDS)?;
        Ok(AmendInput {
            quantity: object.i64("quantity")?,
            limit_price: object.i64("limit_price")?,
        })
    }
}

pub(crate) fn amendment(input: AmendInput) -> Result<(Quantity, Money), Reject> {
    let quantity = input.quantity.ok_or_else(|| Reject::missing("quantity"))?;
    let limit_price = input
        .limit_price
        .ok_or_else(|| Reject::missing("limit_price"))?;
    priced_quantity(quantity, limit_price)
}

/// Funding or replenishment, as received: a positive amount (minor units or
/// units) and an optional idempotency key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TopUpInput {
    pub amount: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// A checked funding or replenishment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopUp {
    pub amount: i64,
    pub idempotency_key: Option<ClientOrderId>,
}

impl TopUpInput {
    /// Parses a body whose amount field is `amount_field`.
    pub(crate) fn from_json(body: &[u8], amount_field: &'static str) -> Result<Self, Reject> {
        let object = parse_object(body, &[amount_field, "idempotency_key"])?;
        Ok(TopUpInput {
            amount: object.i64(amount_field)?,
            idempotency_key: object.string("idempotency_key")?,
        })
    }
}

/// A funding: `amount` minor units, positive.
pub(crate) fn funding(input: TopUpInput) -> Result<TopUp, Reject> {
    let amount = input.amount.ok_or_else(|| Reject::missing("amount"))?;
    let idempotency_key = idempotency_key(input.idempotency_key)?;
    if amount <= 0 {
        return Err(Reject::field(
            ErrorCode::NonPositiveAmount,
            "amount",
            format!("amount must be positive minor units, got {amount}"),
        ));
    }
    Ok(TopUp {
        amount,
        idempotency_key,
    })
}

/// A replenishment: `quantity` units, positive.
pub(crate) fn replenishment(input: TopUpInput) -> Result<TopUp, Reject> {
    let quantity = input.amount.ok_or_else(|| Reject::missing("quantity"))?;
    let idempotency_key = idempotency_key(input.idempotency_key)?;
    let quantity = positive_quantity(quantity)?;
    Ok(TopUp {
        amount: quantity.0,
        idempotency_key,
    })
}

fn idempotency_key(key: Option<String>) -> Result<Option<ClientOrderId>, Reject> {
    key.map(|key| {
        ClientOrderId::new(&key).map_err(|e: ValueError| {
            Reject::field(
                ErrorCode::MalformedIdempotencyKey,
                "idempotency_key",
                e.to_string().replace("client order id", "idempotency key"),
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(json: &str) -> Result<NewOrder, Reject> {
        new_order(CreateOrderInput::from_json(json.as_bytes())?)
    }

    fn code(result: Result<impl fmt::Debug, Reject>) -> (ErrorCode, Option<String>) {
        match result {
            Ok(value) => panic!("accepted: {value:?}"),
            Err(reject) => (reject.code, reject.field),
        }
    }

    const GOOD: &str =
        r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#;

    #[test]
    fn a_good_order_passes() -> Result<(), Reject> {
        let order = create(GOOD)?;
        assert_eq!(order.account, AccountId(7));
        assert_eq!(order.sku.as_str(), "AAPL");
        assert_eq!(order.quantity, Quantity(3));
        assert_eq!(order.limit_price, Money(1500));
        assert_eq!(order.client_order_id.as_str(), "c-1");
        Ok(())
    }

    #[test]
    fn each_rule_has_its_code_and_field() {
        use ErrorCode::*;
        let field = |f: &str| Some(f.to_string());
        let cases: &[(&str, ErrorCode, Option<String>)] = &[
            ("", MalformedJson, None),
            ("{", MalformedJson, None),
            ("[1,2]", MalformedJson, None),
            ("null", MalformedJson, None),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c-1","x":1}"#,
                UnknownField,
                field("x"),
            ),
            (
                r#"{"account":7,"account":8,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c"}"#,
                DuplicateField,
                field("account"),
            ),
            (
                r#"{"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#,
                MissingField,
                field("account"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"client_order_id":"c-1"}"#,
                MissingField,
                field("limit_price"),
            ),
            (
                r#"{"account":-1,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#,
                InvalidValue,
                field("account"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":"3","limit_price":1500,"client_order_id":"c-1"}"#,
                InvalidValue,
                field("quantity"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":1.5,"limit_price":1500,"client_order_id":"c-1"}"#,
                InvalidValue,
                field("quantity"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":9223372036854775808,"client_order_id":"c-1"}"#,
                InvalidValue,
                field("limit_price"),
            ),
            (
                r#"{"account":7,"sku":null,"quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#,
                InvalidValue,
                field("sku"),
            ),
            (
                r#"{"account":7,"sku":"aapl","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#,
                MalformedSku,
                field("sku"),
            ),
            (
                r#"{"account":7,"sku":"ABCDEFGHIJKLMNOPQ","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#,
                MalformedSku,
                field("sku"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"has space"}"#,
                MalformedClientOrderId,
                field("client_order_id"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":""}"#,
                MalformedClientOrderId,
                field("client_order_id"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":0,"limit_price":1500,"client_order_id":"c-1"}"#,
                NonPositiveQuantity,
                field("quantity"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":-4,"limit_price":1500,"client_order_id":"c-1"}"#,
                NonPositiveQuantity,
                field("quantity"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":3,"limit_price":0,"client_order_id":"c-1"}"#,
                NonPositivePrice,
                field("limit_price"),
            ),
            (
                r#"{"account":7,"sku":"AAPL","quantity":4294967296,"limit_price":4294967296,"client_order_id":"c-1"}"#,
                AmountOverflow,
                field("quantity"),
            ),
        ];
        for (json, expected, expected_field) in cases {
            assert_eq!(
                code(create(json)),
                (*expected, expected_field.clone()),
                "{json}"
            );
        }
    }

    #[test]
    fn the_largest_cost_that_fits_passes() -> Result<(), Reject> {
        let json = format!(
            r#"{{"account":7,"sku":"AAPL","quantity":1,"limit_price":{},"client_order_id":"c"}}"#,
            i64::MAX
        );
        create(&json).map(drop)
    }

    #[test]
    fn amendments_fundings_and_replenishments() {
        use ErrorCode::*;
        let amend = |json: &str| amendment(AmendInput::from_json(json.as_bytes())?);
        assert_eq!(
            amend(r#"{"quantity":2,"limit_price":10}"#),
            Ok((Quantity(2), Money(10)))
        );
        assert_eq!(
            code(amend(r#"{"quantity":2}"#)),
            (MissingField, Some("limit_price".into()))
        );
        assert_eq!(
            code(amend(r#"{"quantity":2,"limit_price":-1}"#)),
            (NonPositivePrice, Some("limit_price".into()))
        );
        assert_eq!(
            code(amend(r#"{"quantity":2,"limit_price":1,"sku":"A"}"#)),
            (UnknownField, Some("sku".into()))
        );
        let fund = |json: &str| funding(TopUpInput::from_json(json.as_bytes(), "amount")?);
        assert!(fund(r#"{"amount":100}"#).is_ok());
        assert_eq!(
            fund(r#"{"amount":100,"idempotency_key":"k-1"}"#)
                .map(|t| t.idempotency_key.map(|k| k.to_string())),
            Ok(Some("k-1".to_string()))
        );
        assert_eq!(
            code(fund(r#"{"amount":0}"#)),
            (NonPositiveAmount, Some("amount".into()))
        );
        assert_eq!(
            code(fund(r#"{"amount":5,"idempotency_key":"a b"}"#)),
            (MalformedIdempotencyKey, Some("idempotency_key".into()))
        );
        assert_eq!(
            code(fund(r#"{"quantity":5}"#)),
            (UnknownField, Some("quantity".into()))
        );
        let replenish =
            |json: &str| replenishment(TopUpInput::from_json(json.as_bytes(), "quantity")?);
        assert_eq!(replenish(r#"{"quantity":5}"#).map(|t| t.amount), Ok(5));
        assert_eq!(
            code(replenish(r#"{"quantity":-5}"#)),
            (NonPositiveQuantity, Some("quantity".into()))
        );
        assert_eq!(
            code(replenish("{}")),
            (MissingField, Some("quantity".into()))
        );
    }

    #[test]
    fn path_segments() {
        assert_eq!(account_of("42"), Ok(AccountId(42)));
        assert_eq!(code(account_of("-1")).0, ErrorCode::InvalidValue);
        assert_eq!(code(account_of("x")).0, ErrorCode::InvalidValue);
        assert_eq!(order_id_of("18446744073709551615"), Ok(OrderId(u64::MAX)));
        assert_eq!(
            code(order_id_of("0")),
            (ErrorCode::InvalidValue, Some("order_id".into()))
        );
        assert_eq!(code(sku_of("brk.b")).0, ErrorCode::MalformedSku);
    }

    #[test]
    fn unknown_field_names_are_echoed_bounded() {
        let long = "x".repeat(1000);
        let json = format!(r#"{{"{long}":1}}"#);
        let reject = CreateOrderInput::from_json(json.as_bytes()).err();
        assert_eq!(
            reject.and_then(|r| r.field).map(|f| f.len()),
            Some(FIELD_NAME_ECHO_BYTES_MAX)
        );
    }
}
