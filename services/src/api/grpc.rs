//! The gRPC server (tonic): the same operations as REST, from the messages
//! in `services/proto/`.
//!
//! Owns: converting messages to `validate`'s inputs and answers back, and a
//! [`Reject`] to a `tonic::Status` (the code first in the message, and in
//! the `tradeflow-error-code`, `tradeflow-error-field` and
//! `tradeflow-partition` metadata).
//! Must never: apply a rule of its own; rules live in `validate` and `ops`.
//! Every call is counted (by method and gRPC code) when the server has
//! observability, like REST's requests.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::auth::{Caller, Role};
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
use crate::observe::Observability;
use codecs::{AccountId, OrderId};

/// Metadata keys of a refused call.
pub const ERROR_CODE_KEY: &str = "tradeflow-error-code";
pub const ERROR_FIELD_KEY: &str = "tradeflow-error-field";
pub const PARTITION_KEY: &str = "tradeflow-partition";

/// The service, limited to `REQUEST_BODY_BYTES_MAX` per message like REST;
/// with `observability`, every call is counted.
pub(crate) fn service(
    api: Arc<OrderApi>,
    observability: Option<Observability>,
) -> OrderApiServer<GrpcApi> {
    OrderApiServer::new(GrpcApi::new(api).with_observability(observability))
        .max_decoding_message_size(REQUEST_BODY_BYTES_MAX)
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
    observability: Option<Observability>,
}

impl GrpcApi {
    pub(crate) fn new(api: Arc<OrderApi>) -> Self {
        GrpcApi {
            api,
            observability: None,
        }
    }

    /// Counts every call in `tradeflow_api_requests_total` (route
    /// `/<service>/<Method>`, method `gRPC`, status the gRPC code's name).
    pub(crate) fn with_observability(mut self, observability: Option<Observability>) -> Self {
        self.observability = observability;
        self
    }

    /// Runs one call and counts it. Calls tonic refuses before they reach a
    /// handler (an oversized message) are not counted.
    async fn counted<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        if let Some(observability) = &self.observability {
            let code = match &result {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            let route = format!(
                "/{}/{method}",
                <OrderApiServer<GrpcApi> as tonic::server::NamedService>::NAME
            );
            observability.observe_request(
                &route,
                "gRPC",
                grpc_code_name(code),
                started.elapsed().as_secs_f64(),
            );
        }
        result
    }
}

/// The snake_case name of a gRPC status code, as a metric label.
fn grpc_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Unknown => "unknown",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Aborted => "aborted",
        tonic::Code::OutOfRange => "out_of_range",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Internal => "internal",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DataLoss => "data_loss",
        tonic::Code::Unauthenticated => "unauthenticated",
    }
}

/// Who made the call: the `authorization: Bearer <token>` metadata, with
/// the same rules as REST (`UNAUTHENTICATED` when tokens are on and it has
/// no valid one).
fn caller<T>(api: &OrderApi, request: &Request<T>) -> Result<Caller, Reject> {
    api.auth().authenticate(
        request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes()),
    )
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
        self.counted("CreateOrder", async move {
            let caller = caller(&self.api, &request)?;
            let m = request.into_inner();
            let order = new_order(CreateOrderInput {
                account: m.account,
                sku: m.sku,
                quantity: m.quantity,
                limit_price: m.limit_price,
                client_order_id: m.client_order_id,
            })?;
            caller.may_act_for(order.account)?;
            let created = self.api.create_order(order).await?;
            Ok::<_, Status>(Response::new(CreateOrderResponse {
                order_id: created.order_id.0,
                account: created.account.0,
                duplicate: created.duplicate,
            }))
        })
        .await
    }

    async fn amend_order(
        &self,
        request: Request<AmendOrderRequest>,
    ) -> Result<Response<RequestAccepted>, Status> {
        self.counted("AmendOrder", async move {
            let caller = caller(&self.api, &request)?;
            let m = request.into_inner();
            let (account, order_id) = account_and_order(m.account, m.order_id)?;
            caller.may_act_for(account)?;
            let amendment = amendment(AmendInput {
                quantity: m.quantity,
                limit_price: m.limit_price,
            })?;
            let kind = self.api.request(account, order_id, Some(amendment)).await?;
            Ok::<_, Status>(Response::new(RequestAccepted {
                order_id: order_id.0,
                request: kind.as_str().to_string(),
            }))
        })
        .await
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<RequestAccepted>, Status> {
        self.counted("CancelOrder", async move {
            let caller = caller(&self.api, &request)?;
            let m = request.into_inner();
            let (account, order_id) = account_and_order(m.account, m.order_id)?;
            caller.may_act_for(account)?;
            let kind = self.api.request(account, order_id, None).await?;
            Ok::<_, Status>(Response::new(RequestAccepted {
                order_id: order_id.0,
                request: kind.as_str().to_string(),
            }))
        })
        .await
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        self.counted("GetOrder", async move {
            let caller = caller(&self.api, &request)?;
            let m = request.into_inner();
            let (account, order_id) = account_and_order(m.account, m.order_id)?;
            caller.may_act_for(account)?;
            let record = self.api.order(account, order_id).await?;
            Ok::<_, Status>(Response::new(order_message(
                OrderView::of(&record, order_id),
                order_id,
            )))
        })
        .await
    }

    async fn fund_account(
        &self,
        request: Request<FundAccountRequest>,
    ) -> Result<Response<EventAccepted>, Status> {
        self.counted("FundAccount", async move {
            let caller = caller(&self.api, &request)?;
            let m = request.into_inner();
            let account = AccountId(required(m.account, "account")?);
            caller.may_act_for(account)?;
            caller.require(Role::Ops)?;
            let funding = funding(TopUpInput {
                amount: m.amount,
                idempotency_key: m.idempotency_key,
            })?;
            let event_id = self.api.fund(account, funding).await?;
            Ok::<_, Status>(Response::new(EventAccepted {
                event_id: event_id.to_string(),
            }))
        })
        .await
    }

    async fn replenish_instrument(
        &self,
        request: Request<ReplenishInstrumentRequest>,
    ) -> Result<Response<EventAccepted>, Status> {
        self.counted("ReplenishInstrument", async move {
            caller(&self.api, &request)?.require(Role::Ops)?;
            let m = request.into_inner();
            let sku = sku_of(&required(m.sku, "sku")?)?;
            let replenishment = replenishment(TopUpInput {
                amount: m.quantity,
                idempotency_key: m.idempotency_key,
            })?;
            let event_id = self.api.replenish(sku, replenishment).await?;
            Ok::<_, Status>(Response::new(EventAccepted {
                event_id: event_id.to_string(),
            }))
        })
        .await
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        self.counted("GetAccount", async move {
            let caller = caller(&self.api, &request)?;
            let account = AccountId(required(request.into_inner().account, "account")?);
            caller.may_act_for(account)?;
            let balance = self.api.balance(account).await?;
            Ok::<_, Status>(Response::new(Account {
                account: account.0,
                balance: balance.0,
            }))
        })
        .await
    }

    async fn get_instrument(
        &self,
        request: Request<GetInstrumentRequest>,
    ) -> Result<Response<Instrument>, Status> {
        self.counted("GetInstrument", async move {
            caller(&self.api, &request)?;
            let sku = sku_of(&required(request.into_inner().sku, "sku")?)?;
            let on_hand = self.api.on_hand(sku).await?;
            Ok::<_, Status>(Response::new(Instrument {
                sku: sku.to_string(),
                on_hand: on_hand.0,
            }))
        })
        .await
    }
}
