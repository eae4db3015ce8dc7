//! REST adapters of the commerce service under `/api/commerce`: products, orders (placed,
//! read, listed, cancelled, fulfilled), payments under an `Idempotency-Key`, manual
//! confirmation and rejection, refunds, invoices (JSON and a printable HTML page), the ledger
//! and the signed provider webhooks. RBAC is the service's (resource `commerce`: `read` for
//! products, anonymous callers too; `buy` for one's own orders and payments; `manage` for
//! the rest); a webhook is authenticated by its signature, not by a token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use services::commerce::{
    Balance, ConfirmPayment, Invoice, LedgerEntry, MovementKind, NewOrder, NewPayment, NewProduct,
    NewRefund, Order, OrderDetail, OrderFilter, OrderStatus, Page, Payment, Product, ProductUpdate,
    Refund, RejectPayment, WebhookResult,
};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Auth, SignedIn};
use super::params::{PageQuery, Params};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// The header that names a payment request once (`pay`).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header of a payment answer that is the stored answer of an earlier request.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The header that signs a provider webhook.
pub const SIGNATURE: &str = "ovasabi-signature";

/// The printable invoice's policy: its own inline style, nothing else.
const INVOICE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                           form-action 'none'; frame-ancestors 'none'";

/// Which orders a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// Only this user's orders (another user's needs `manage`; buyers see their own anyway).
    user_id: Option<String>,
    /// Only orders in this state.
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Which ledger entries a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Only entries of this account (`sales`, `tax_payable`, `refunds`, `provider:manual`).
    account: Option<String>,
    /// Only entries of this order's payments and refunds.
    order_id: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The invoice numbers of one year.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoicesQuery {
    /// The year (UTC) the invoices were issued in.
    #[param(minimum = 2000, maximum = 9999)]
    year: i32,
}

/// One side of a movement recorded by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MovementEntry {
    /// 1–128 characters of `[a-z0-9_:.-]` (`payouts:alice`).
    account: String,
    /// Non-zero minor units added to the account (negative: taken out).
    amount: i64,
}

/// A movement no payment or refund makes: a payout or a referral reward.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMovement {
    /// `payout` or `referral_reward` (payments and refunds write their own).
    kind: MovementKind,
    /// ISO 4217.
    currency: String,
    /// 2–50 entries summing to zero.
    entries: Vec<MovementEntry>,
}

/// A recorded movement.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementRecorded {
    /// Its id (the `movement` of its entries).
    movement: String,
}

/// The invoice numbers of a year, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceNumbers {
    year: i32,
    numbers: Vec<String>,
}

/// Every account's balance per currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balances {
    items: Vec<Balance>,
}

/// Lists products by SKU (inactive ones only for `manage`). Needs `read`; anonymous callers
/// may list.
#[utoipa::path(
    get,
    path = "/api/commerce/products",
    operation_id = "list_commerce_products",
    tag = "commerce",
    params(PageQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_products(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .commerce
            .products(&caller, q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

/// Creates a product. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/products",
    operation_id = "create_commerce_product",
    tag = "commerce",
    request_body = NewProduct,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The product", body = Product),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "A product with this SKU exists", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_product(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let p = app.services.commerce.create_product(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// One product (an inactive one only for `manage`). Needs `read`.
#[utoipa::path(
    get,
    path = "/api/commerce/products/{sku}",
    operation_id = "get_commerce_product",
    tag = "commerce",
    params(("sku" = String, Path, description = "The product's SKU")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such product (or an inactive one)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_product(
    State(app): State<AppState>,
    Auth(caller): Auth,
    sku: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(sku) = sku?;
    Ok(Json(app.services.commerce.product(&caller, &sku).await?))
}

/// Changes a product (absent fields are kept; orders already placed keep their prices).
/// Needs `manage`.
#[utoipa::path(
    patch,
    path = "/api/commerce/products/{sku}",
    operation_id = "update_commerce_product",
    tag = "commerce",
    params(("sku" = String, Path, description = "The product's SKU")),
    request_body = ProductUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The product after the change", body = Product),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_product(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    sku: IdPath,
    body: JsonBody<ProductUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(sku), Json(update)) = (sku?, body?);
    Ok(Json(
        app.services
            .commerce
            .update_product(&caller, &sku, update)
            .await?,
    ))
}

/// Places a pending order, each line priced by Babel for the country now and stored.
/// Needs `buy`.
#[utoipa::path(
    post,
    path = "/api/commerce/orders",
    operation_id = "place_commerce_order",
    tag = "commerce",
    request_body = NewOrder,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The order", body = Order),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it: `lines[1].sku`)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or it names another user without `manage`", body = ErrorBody),
        (status = 404, description = "No market sells in the country", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn place_order(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let o = app.services.commerce.place_order(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(o)))
}

/// Orders by id: the caller's own, or (for `manage`) everyone's or one user's. Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/orders",
    operation_id = "list_commerce_orders",
    tag = "commerce",
    params(OrdersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders", body = Page<Order>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or another user's orders without `manage`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_orders(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<OrdersQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = OrderFilter {
        user_id: q.user_id,
        status: q
            .status
            .as_deref()
            .map(|s| OrderStatus::parse("status", s))
            .transpose()?,
    };
    Ok(Json(
        app.services
            .commerce
            .orders(&caller, filter, q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

/// One order with its payments, refunds and invoice number (one's own, or any for
/// `manage`). Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/orders/{id}",
    operation_id = "get_commerce_order",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderDetail),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.commerce.order(&caller, &id).await?))
}

/// `pending` → `cancelled` (one's own order, or any for `manage`); not while a payment is
/// pending. Needs `buy`.
#[utoipa::path(
    post,
    path = "/api/commerce/orders/{id}/cancel",
    operation_id = "cancel_commerce_order",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, cancelled", body = Order),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The order is not pending (the error names both states), or a payment is pending", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn cancel_order(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.commerce.cancel_order(&caller, &id).await?,
    ))
}

/// `paid` → `fulfilled`. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/orders/{id}/fulfil",
    operation_id = "fulfil_commerce_order",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, fulfilled", body = Order),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order is not paid (the error names both states)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn fulfil_order(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.commerce.fulfil_order(&caller, &id).await?,
    ))
}

/// Starts paying a pending order through a provider. The `Idempotency-Key` header is
/// required: the same key with the same body answers the first answer again (200 with
/// `Idempotent-Replayed: true`), with another body a 422 `idempotency_mismatch`; concurrent
/// requests under one key make one payment. Needs `buy` (one's own order) or `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/orders/{id}/payments",
    operation_id = "pay_commerce_order",
    tag = "commerce",
    params(
        ("id" = String, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, description = "1–255 visible ASCII characters naming this request once, per caller"),
    ),
    request_body = NewPayment,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The payment, pending (with what the payer does next)", body = Payment),
        (status = 200, description = "The first answer under this key (`Idempotent-Replayed: true`)", body = Payment),
        (status = 400, description = "Malformed JSON, unknown field, invalid value or missing `Idempotency-Key` (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The order is not pending (the error names both states), costs nothing, or has a pending or succeeded payment", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "The key was used with another request (`idempotency_mismatch`)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn pay(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    headers: HeaderMap,
    id: IdPath,
    body: JsonBody<NewPayment>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        Some(Ok(k)) => k.to_owned(),
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "Idempotency-Key must be visible ASCII characters",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "the Idempotency-Key header is required: a key of your own naming this \
                 payment request (retries send the same key)",
            ));
        }
    };
    let answer = app.services.commerce.pay(&caller, &id, &key, new).await?;
    let (status, replayed) = if answer.replayed {
        (StatusCode::OK, "true")
    } else {
        (StatusCode::CREATED, "false")
    };
    Ok((
        status,
        [(IDEMPOTENT_REPLAYED, replayed)],
        Json(answer.payment),
    ))
}

/// One payment (of one's own order, or any for `manage`). Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/payments/{id}",
    operation_id = "get_commerce_payment",
    tag = "commerce",
    params(("id" = String, Path, description = "Payment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such payment (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_payment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.commerce.payment(&caller, &id).await?))
}

/// Confirms receipt of a pending payment of a provider confirmed by hand (`manual`): the
/// order is paid, the ledger written and the invoice issued. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/payments/{id}/confirm",
    operation_id = "confirm_commerce_payment",
    tag = "commerce",
    params(("id" = String, Path, description = "Payment id")),
    request_body = ConfirmPayment,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment, succeeded", body = Payment),
        (status = 400, description = "Malformed JSON, unknown field, invalid value, or a provider that confirms by itself", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
        (status = 409, description = "The payment is not pending, or its order no longer is", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn confirm_payment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<ConfirmPayment>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(body)) = (id?, body?);
    Ok(Json(
        app.services
            .commerce
            .confirm_payment(&caller, &id, body)
            .await?,
    ))
}

/// Rejects a pending payment of a provider confirmed by hand (the order stays pending and
/// can be paid again). Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/payments/{id}/reject",
    operation_id = "reject_commerce_payment",
    tag = "commerce",
    params(("id" = String, Path, description = "Payment id")),
    request_body = RejectPayment,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment, failed", body = Payment),
        (status = 400, description = "Malformed JSON, unknown field, invalid value, or a provider that confirms by itself", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
        (status = 409, description = "The payment is not pending", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn reject_payment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<RejectPayment>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(body)) = (id?, body?);
    Ok(Json(
        app.services
            .commerce
            .reject_payment(&caller, &id, body)
            .await?,
    ))
}

/// Refunds part or all of what remains of a paid order (never more than was paid), with
/// its ledger entries. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/orders/{id}/refunds",
    operation_id = "refund_commerce_order",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    request_body = NewRefund,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The refund", body = Refund),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order is not paid (the error names both states), or the amount is more than remains", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn refund(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<NewRefund>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    let r = app.services.commerce.refund(&caller, &id, new).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// The invoice of a paid order, as JSON (one's own, or any for `manage`). Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/orders/{id}/invoice",
    operation_id = "get_commerce_order_invoice",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The invoice", body = Invoice),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order (or not the caller's), or not paid yet", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn order_invoice(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.commerce.invoice(&caller, &id).await?))
}

/// The invoice of a paid order as a printable HTML page (self-contained; every text
/// escaped; amounts in the market's locale). Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/orders/{id}/invoice/html",
    operation_id = "get_commerce_order_invoice_html",
    tag = "commerce",
    params(("id" = String, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The printable page", content_type = "text/html", body = String),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such order (or not the caller's), or not paid yet", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn order_invoice_html(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let page = app.services.commerce.invoice_html(&caller, &id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, INVOICE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page,
    ))
}

/// The invoice with this number (of one's own order, or any for `manage`). Needs `buy`.
#[utoipa::path(
    get,
    path = "/api/commerce/invoices/{number}",
    operation_id = "get_commerce_invoice",
    tag = "commerce",
    params(("number" = String, Path, description = "Invoice number (`2026-000001`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The invoice", body = Invoice),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such invoice (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_invoice(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    number: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(number) = number?;
    Ok(Json(
        app.services
            .commerce
            .invoice_by_number(&caller, &number)
            .await?,
    ))
}

/// The invoice numbers of a year, in order (to audit that none is missing). Needs `manage`.
#[utoipa::path(
    get,
    path = "/api/commerce/invoices",
    operation_id = "list_commerce_invoice_numbers",
    tag = "commerce",
    params(InvoicesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The year's numbers", body = InvoiceNumbers),
        (status = 400, description = "Bad, missing or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn invoice_numbers(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<InvoicesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if !(2000..=9999).contains(&q.year) {
        return Err(ApiError::bad_request("year must be 2000-9999"));
    }
    let numbers = app
        .services
        .commerce
        .invoice_numbers(&caller, q.year)
        .await?;
    Ok(Json(InvoiceNumbers {
        year: q.year,
        numbers,
    }))
}

/// Ledger entries by id, of one account and/or one order. Needs `manage`.
#[utoipa::path(
    get,
    path = "/api/commerce/ledger/entries",
    operation_id = "list_commerce_ledger_entries",
    tag = "commerce",
    params(EntriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of entries", body = Page<LedgerEntry>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn ledger_entries(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<EntriesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .commerce
            .ledger(
                &caller,
                q.account.as_deref(),
                q.order_id.as_deref(),
                q.cursor.as_deref(),
                q.limit,
            )
            .await?,
    ))
}

/// Records a payout or a referral reward: entries that sum to zero. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/commerce/ledger/movements",
    operation_id = "record_commerce_movement",
    tag = "commerce",
    request_body = NewMovement,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The movement's id", body = MovementRecorded),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it: `entries[0].amount`)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn record_movement(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewMovement>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(m) = body?;
    let entries: Vec<(String, i64)> = m
        .entries
        .into_iter()
        .map(|e| (e.account, e.amount))
        .collect();
    let movement = app
        .services
        .commerce
        .record_movement(&caller, m.kind, &m.currency, &entries)
        .await?;
    Ok((StatusCode::CREATED, Json(MovementRecorded { movement })))
}

/// Every account's balance per currency: the sums of its entries. Needs `manage`.
#[utoipa::path(
    get,
    path = "/api/commerce/ledger/balances",
    operation_id = "commerce_ledger_balances",
    tag = "commerce",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The balances", body = Balances),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn ledger_balances(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    let items = app.services.commerce.balances(&caller).await?;
    Ok(Json(Balances { items }))
}

/// A provider's event (`payment.succeeded`, `payment.failed`), signed in the
/// `Ovasabi-Signature` header (`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` under the
/// provider's webhook secret, `t` within five minutes). Each event id is applied once: a
/// replay answers `applied: false`. No token: the signature is the authentication.
#[utoipa::path(
    post,
    path = "/api/commerce/webhooks/{provider}",
    operation_id = "commerce_provider_webhook",
    tag = "commerce",
    params(
        ("provider" = String, Path, description = "The provider's name (`manual`)"),
        ("Ovasabi-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256>`"),
    ),
    request_body(content = String, content_type = "application/json", description = "The provider's event, byte for byte as signed"),
    security(()),
    responses(
        (status = 200, description = "What the event did", body = WebhookResult),
        (status = 400, description = "A body the provider cannot read, or an amount or currency that is not the payment's", body = ErrorBody),
        (status = 401, description = "Missing, bad or stale signature", body = ErrorBody),
        (status = 404, description = "No such provider, no webhook secret for it, or no such payment", body = ErrorBody),
        (status = 409, description = "The payment is no longer pending", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    provider: IdPath,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Path(provider) = provider?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the webhook body is not UTF-8"))?;
    let signature = headers.get(SIGNATURE).and_then(|v| v.to_str().ok());
    Ok(Json(
        app.services
            .commerce
            .webhook(&provider, signature, body)
            .await?,
    ))
}
