//! How the API shows an order: one view of an `OrderRecord`, serialized as
//! JSON by REST and copied field by field into the protobuf `Order` by gRPC,
//! so both name statuses, reasons and milestones the same way.
//!
//! Owns: the spelling of statuses, reject reasons, request verdicts and
//! history milestones (listed in docs/openapi.yaml and the .proto).
//! Must never: compute anything the Order stage did not record.

use codecs::PaymentFailReason;
use serde::Serialize;

use crate::order::{
    Milestone, OrderOutcome, OrderRecord, OrderRequest, OrderStatus, RequestVerdict,
};

/// An order as REST returns it. The order id is a decimal string: ids are
/// 64-bit hashes, beyond the integers a JSON number keeps exactly in
/// JavaScript (2^53).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct OrderView {
    pub order_id: String,
    pub account: u64,
    pub sku: String,
    pub quantity: i64,
    pub limit_price: i64,
    pub client_order_id: Option<String>,
    pub status: &'static str,
    pub reject_reason: Option<&'static str>,
    pub request: Option<RequestView>,
    pub history: Vec<HistoryView>,
    pub history_dropped: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RequestView {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<i64>,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct HistoryView {
    pub milestone: &'static str,
    pub at_ms: i64,
}

fn outcome_name(outcome: OrderOutcome) -> &'static str {
    match outcome {
        OrderOutcome::Filled => "filled",
        OrderOutcome::RejectedFunds(_) => "rejected_funds",
        OrderOutcome::RejectedStockRefunded => "rejected_stock_refunded",
    }
}

fn fail_reason_name(reason: PaymentFailReason) -> &'static str {
    match reason {
        PaymentFailReason::InsufficientFunds => "insufficient_funds",
        PaymentFailReason::UnknownAccount => "unknown_account",
        PaymentFailReason::AmountOverflow => "amount_overflow",
        PaymentFailReason::InvalidOrder => "invalid_order",
    }
}

impl OrderView {
    pub(crate) fn of(record: &OrderRecord, order_id: codecs::OrderId) -> Self {
        let status = match record.status() {
            OrderStatus::NotYetAccepted => "not_yet_accepted",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Done(outcome) => outcome_name(outcome),
        };
        let reject_reason = match record.outcome {
            Some(OrderOutcome::RejectedFunds(reason)) => Some(fail_reason_name(reason)),
            _ => None,
        };
        let request = record.request.map(|r| {
            let (kind, quantity, limit_price) = match r.request {
                OrderRequest::Amend {
                    quantity,
                    limit_price,
                } => ("amend", Some(quantity.0), Some(limit_price.0)),
                OrderRequest::Cancel => ("cancel", None, None),
            };
            RequestView {
                kind,
                quantity,
                limit_price,
                verdict: match r.verdict {
                    RequestVerdict::Open => "open",
                    RequestVerdict::Superseded => "superseded",
                    RequestVerdict::TooLate => "too_late",
                },
            }
        });
        let history = record
            .history
            .entries()
            .iter()
            .map(|entry| HistoryView {
                milestone: match entry.milestone {
                    Milestone::Accepted => "accepted",
                    Milestone::AmendRequested => "amend_requested",
                    Milestone::CancelRequested => "cancel_requested",
                    Milestone::Outcome(outcome) => outcome_name(outcome),
                },
                at_ms: entry.at_ms,
            })
            .collect();
        OrderView {
            order_id: order_id.0.to_string(),
            account: record.account.0,
            sku: record.sku.to_string(),
            quantity: record.quantity.0,
            limit_price: record.limit_price.0,
            client_order_id: record.client_order_id.map(|c| c.to_string()),
            status,
            reject_reason,
            request,
            history,
            history_dropped: record.history.dropped(),
        }
    }
}
