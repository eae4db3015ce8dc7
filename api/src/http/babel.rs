//! REST adapters of the Babel pricing service under `/api/babel`: markets, price rules, and
//! the price of a SKU for a country.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::babel::{
    Market, MarketPatch, NewMarket, NewRule, Page, PriceRequest, PriceRule, Quote, RuleFilter,
};
use utoipa::IntoParams;

use super::AppState;
use super::auth::{Auth, SignedIn};
use super::params::{PageQuery, Params};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Lists markets by code.
#[utoipa::path(
    get,
    path = "/api/babel/markets",
    operation_id = "list_markets",
    tag = "babel",
    params(PageQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of markets", body = Page<Market>),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading markets", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_markets(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .babel
            .markets(&caller, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// Creates a market: a currency, a default locale and the countries it covers.
#[utoipa::path(
    post,
    path = "/api/babel/markets",
    operation_id = "create_market",
    tag = "babel",
    request_body = NewMarket,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Market),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (unknown currency, bad locale or country)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing markets", body = ErrorBody),
        (status = 409, description = "The code is taken, or a country belongs to another market", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_market(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewMarket>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let m = app.services.babel.create_market(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// One market.
#[utoipa::path(
    get,
    path = "/api/babel/markets/{code}",
    operation_id = "get_market",
    tag = "babel",
    params(("code" = String, Path, description = "Market code")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The market", body = Market),
        (status = 400, description = "Bad code", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading markets", body = ErrorBody),
        (status = 404, description = "No such market", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_market(
    State(app): State<AppState>,
    Auth(caller): Auth,
    code: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(code) = code?;
    Ok(Json(app.services.babel.market(&caller, &code).await?))
}

/// Changes a market's name, currency, locale or countries (the fields given).
#[utoipa::path(
    patch,
    path = "/api/babel/markets/{code}",
    operation_id = "update_market",
    tag = "babel",
    params(("code" = String, Path, description = "Market code")),
    request_body = MarketPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The market after the change", body = Market),
        (status = 400, description = "Malformed JSON, unknown field, empty patch or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing markets", body = ErrorBody),
        (status = 404, description = "No such market", body = ErrorBody),
        (status = 409, description = "A new currency while explicit-price rules exist, or a country of another market", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_market(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    code: IdPath,
    body: JsonBody<MarketPatch>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(code), Json(patch)) = (code?, body?);
    Ok(Json(
        app.services
            .babel
            .update_market(&caller, &code, patch)
            .await?,
    ))
}

/// Deletes a market that has no price rules.
#[utoipa::path(
    delete,
    path = "/api/babel/markets/{code}",
    operation_id = "delete_market",
    tag = "babel",
    params(("code" = String, Path, description = "Market code")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad code", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing markets", body = ErrorBody),
        (status = 404, description = "No such market", body = ErrorBody),
        (status = 409, description = "The market has price rules", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_market(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    code: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(code) = code?;
    app.services.babel.delete_market(&caller, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which rules a list returns; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RulesQuery {
    /// Only this market's rules.
    market: Option<String>,
    /// Only rules for this SKU.
    sku: Option<String>,
    /// Only rules for this category.
    category: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists price rules, oldest first.
#[utoipa::path(
    get,
    path = "/api/babel/rules",
    operation_id = "list_price_rules",
    tag = "babel",
    params(RulesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of rules", body = Page<PriceRule>),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading price rules", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_rules(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<RulesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = RuleFilter {
        market: q.market,
        sku: q.sku,
        category: q.category,
    };
    Ok(Json(
        app.services
            .babel
            .rules(&caller, &filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// Creates a price rule for a market and a SKU or a category: an explicit amount, or a
/// multiplier of the base price with a rounding rule; with a tax rate and whether the price
/// includes it.
#[utoipa::path(
    post,
    path = "/api/babel/rules",
    operation_id = "create_price_rule",
    tag = "babel",
    request_body = NewRule,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = PriceRule),
        (status = 400, description = "Malformed JSON, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing price rules", body = ErrorBody),
        (status = 404, description = "No such market", body = ErrorBody),
        (status = 409, description = "The market has a rule for this SKU or category", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_rule(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewRule>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let r = app.services.babel.create_rule(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// One price rule.
#[utoipa::path(
    get,
    path = "/api/babel/rules/{id}",
    operation_id = "get_price_rule",
    tag = "babel",
    params(("id" = String, Path, description = "Rule id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rule", body = PriceRule),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading price rules", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_rule(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.babel.rule(&caller, &id).await?))
}

/// Replaces a price rule (the same body as its creation).
#[utoipa::path(
    put,
    path = "/api/babel/rules/{id}",
    operation_id = "replace_price_rule",
    tag = "babel",
    params(("id" = String, Path, description = "Rule id")),
    request_body = NewRule,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rule after the change", body = PriceRule),
        (status = 400, description = "Malformed JSON, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing price rules", body = ErrorBody),
        (status = 404, description = "No such rule or market", body = ErrorBody),
        (status = 409, description = "The market has another rule for this SKU or category", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn replace_rule(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<NewRule>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    Ok(Json(
        app.services.babel.replace_rule(&caller, &id, new).await?,
    ))
}

/// Deletes a price rule.
#[utoipa::path(
    delete,
    path = "/api/babel/rules/{id}",
    operation_id = "delete_price_rule",
    tag = "babel",
    params(("id" = String, Path, description = "Rule id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing price rules", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_rule(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.babel.delete_rule(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A price question. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PriceQuery {
    /// The SKU (required).
    sku: String,
    /// Its category: used when the market has no rule for the SKU.
    category: Option<String>,
    /// The buyer's country, ISO 3166-1 alpha-2 (required).
    country: String,
    /// BCP 47 locale of the formatted amount (default: the market's).
    locale: Option<String>,
    /// The base price in minor units of `base_currency`. Until the commerce service holds
    /// base prices, the caller gives it: multiplier rules need it, and with no rule it is the
    /// price when it is in the market's currency.
    base_amount: Option<i64>,
    /// ISO 4217, with `base_amount`.
    base_currency: Option<String>,
}

/// The price of a SKU for a buyer in a country: the amount in minor units of the market's
/// currency, the currency, the rule that applied, tax, and the amount formatted for the locale
/// (`12,99 €`, `$12.99`, `¥1,300`).
#[utoipa::path(
    get,
    path = "/api/babel/price",
    operation_id = "get_price",
    tag = "babel",
    params(PriceQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The price", body = Quote),
        (status = 400, description = "Missing sku or country, bad or unknown query parameter, unknown currency, bad locale, a multiplier rule without base_amount", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow prices", body = ErrorBody),
        (status = 404, description = "No market holds the country, or no rule and no base price in the market's currency", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn price(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<PriceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let req = PriceRequest {
        sku: q.sku,
        category: q.category,
        country: q.country,
        locale: q.locale,
        base_amount: q.base_amount,
        base_currency: q.base_currency,
    };
    Ok(Json(app.services.babel.price(&caller, &req).await?))
}
