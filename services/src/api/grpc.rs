//! The gRPC server (tonic): the same operations as REST, from the messages
//! in `services/proto/`.
//!
//! Owns: converting messages to `validate`'s inputs and answers back, and a
//! [`Reject`] to a `tonic::Status` (the code first in the message, and in
//! the `tradeflow-error-code`, `tradeflow-error-field` and
//! `tradeflow-partition` metadata).
//! Must never: apply a rule of its own; rules live in `validate` and `ops`.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::error::Reject;
use super::ops::OrderApi;
use super::proto::order_api_server::{OrderApi as OrderApiRpc, OrderApiServer};
use super::proto::{
    Account, AmendOrderRequest, CancelOrderRequest, CreateOrderRequest, CreateOrderResponse,
    EventAccepted, FundAccountRequest, GetAccountRequest, GetInstrumentRequest, GetOrderRequest,
    HistoryEntry, Instrument, Order, OrderRequest, ReplenishInstrumentRequest, RequestAccepted,
};
use super::validate::{
    amendment, funding, new_order, order_id_from, replenishment, sku_of, AmendInput,
    CreateOrderInput, TopUpInput,
};
use super::view::OrderView;
use super::REQUEST_BODY_BYTES_MAX;
use codecs::{AccountId, OrderId};

/// Metadata keys of a refused call.
pub const ERROR_CODE_KEY: &str = "tradeflow-error-code";
pub const ERROR_FIELD_KEY: &str = "tradeflow-error-field";
pub const PARTITION_KEY: &str = "tradeflow-partition";

/// The service, limited to `REQUEST_BODY_BYTES_MAX` per message like REST.
pub(crate) fn service(api: Arc<OrderApi>) -> OrderApiServer<GrpcApi> {
    OrderApiServer::new(GrpcApi::new(api)).max_decoding_message_size(REQUEST_BODY_BYTES_MAX)
}

impl From<Reject> for Status {
    fn from(reject: Reject) -> Status {
        let mut status = Status::new(
            reject.code.grpc_code(),
            format!("{}: {}", reject.code, reject.message),
        );
        let metadata = status.metadata_mut();
        metadata.insert(
            ERROR_CODE_KEY,
            MetadataValue::from_static(reject.code.as_str()),
        );
        if let Some(field) = reject
            .field
            .as_deref()
            .and_then(|field| field.parse::<MetadataValue<_>>().ok())
        {
            metadata.insert(ERROR_FIELD_KEY, field);
        }
        if let Some(partition) = reject.partition {
            metadata.insert(PARTITION_KEY, MetadataValue::from(partition.0));
        }
        status
    }
}

pub(crate) struct GrpcApi {
    api: Arc<OrderApi>,
}

impl GrpcApi {
    pub(crate) fn new(api: Arc<OrderApi>) -> Self {
        GrpcApi { api }
    }
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, Reject> {
    value.ok_or_else(|| Reject::missing(field))
}

fn account_and_order(
    account: Option<u64>,
    order_id: Option<u64>,
) -> Result<(AccountId, OrderId), Reject> {
    let account = AccountId(required(account, "account")?);
    let order_id = order_id_from(required(order_id, "order_id")?)?;
    Ok((account, order_id))
}

/// The protobuf form of an order: the same view REST serializes.
fn order_message(view: OrderView, order_id: OrderId) -> Order {
    Order {
        order_id: order_id.0,
        account: view.account,
        sku: view.sku,
        quantity: view.quantity,
        limit_price: view.limit_price,
        client_order_id: view.client_order_id.unwrap_or_default(),
        status: view.status.to_string(),
        reject_reason: view.reject_reason.unwrap_or_default().to_string(),
        request: view.request.map(|r| OrderRequest {
            kind: r.kind.to_string(),
            quantity: r.quantity.unwrap_or_default(),
            limit_price: r.limit_price.unwrap_or_default(),
            verdict: r.verdict.to_string(),
        }),
        history: view
            .history
            .into_iter()
            .map(|h| HistoryEntry {
                milestone: h.milestone.to_string(),
                at_ms: h.at_ms,
            })
            .collect(),
        history_dropped: view.history_dropped,
    }
}

#[tonic::async_trait]
impl OrderApiRpc for GrpcApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let m = request.into_inner();
        let order = new_order(CreateOrderInput {
            account: m.account,
            sku: m.sku,
            quantity: m.quantity,
            limit_price: m.limit_price,
            client_order_id: m.client_order_id,
        })?;
        let created = self.api.create_order(order).await?;
        Ok(Response::new(CreateOrderResponse {
            order_id: created.order_id.0,
            account: created.account.0,
            duplicate: created.duplicate,
        }))
    }

    async fn amend_order(
        &self,
        request: Request<AmendOrderRequest>,
    ) -> Result<Response<RequestAccepted>, Status> {
        let m = request.into_inner();
        let (account, order_id) = account_and_order(m.account, m.order_id)?;
        let amendment = amendment(AmendInput {
            quantity: m.quantity,
            limit_price: m.limit_price,
        })?;
        let kind = self.api.request(account, order_id, Some(amendment)).await?;
        Ok(Response::new(RequestAccepted {
            order_id: order_id.0,
            request: kind.as_str().to_string(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<RequestAccepted>, Status> {
        let m = request.into_inner();
        let (account, order_id) = account_and_order(m.account, m.order_id)?;
        let kind = self.api.request(account, order_id, None).await?;
        Ok(Response::new(RequestAccepted {
            order_id: order_id.0,
            request: kind.as_str().to_string(),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let m = request.into_inner();
        let (account, order_id) = account_and_order(m.account, m.order_id)?;
        let record = self.api.order(account, order_id).await?;
        Ok(Response::new(order_message(
            OrderView::of(&record, order_id),
            order_id,
        )))
    }

    async fn fund_account(
        &self,
        request: Request<FundAccountRequest>,
    ) -> Result<Response<EventAccepted>, Status> {
        let m = request.into_inner();
        let account = AccountId(required(m.account, "account")?);
        let funding = funding(TopUpInput {
            amount: m.amount,
            idempotency_key: m.idempotency_key,
        })?;
        let event_id = self.api.fund(account, funding).await?;
        Ok(Response::new(EventAccepted {
            event_id: event_id.to_string(),
        }))
    }

    async fn replenish_instrument(
        &self,
        request: Request<ReplenishInstrumentRequest>,
    ) -> Result<Response<EventAccepted>, Status> {
        let m = request.into_inner();
        let sku = sku_of(&required(m.sku, "sku")?)?;
        let replenishment = replenishment(TopUpInput {
            amount: m.quantity,
            idempotency_key: m.idempotency_key,
        })?;
        let event_id = self.api.replenish(sku, replenishment).await?;
        Ok(Response::new(EventAccepted {
            event_id: event_id.to_string(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        let account = AccountId(required(request.into_inner().account, "account")?);
        let balance = self.api.balance(account).await?;
        Ok(Response::new(Account {
            account: account.0,
            balance: balance.0,
        }))
    }

    async fn get_instrument(
        &self,
        request: Request<GetInstrumentRequest>,
    ) -> Result<Response<Instrument>, Status> {
        let sku = sku_of(&required(request.into_inner().sku, "sku")?)?;
        let on_hand = self.api.on_hand(sku).await?;
        Ok(Response::new(Instrument {
            sku: sku.to_string(),
            on_hand: on_hand.0,
        }))
    }
}
