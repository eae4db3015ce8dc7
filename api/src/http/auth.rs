//! Who is calling: the [`Auth`] extractor turns `Authorization: Bearer <token>` (or, on
//! WebSocket upgrades, `?token=`) into a [`Caller`] with the client's address, and
//! [`SignedIn`] does the same for the routes that need a token; and the REST adapters of the
//! user service: `/api/auth/{register,login,refresh}` and `/api/users/...`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use services::security::Caller;
use services::user::{NewUser, ProfileUpdate, Tokens, User};
use utoipa::ToSchema;

use super::AppState;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// The caller of a request: anonymous without a token; a bad or expired token is refused
/// with 401 even where anonymous calls are allowed.
pub struct Auth(pub Caller);

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// The bearer token of a request's headers, if any.
///
/// # Errors
/// 401 for an `Authorization` header that is not `Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(unauthenticated(
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// The caller a token (or its absence) stands for, seen from the request's address.
///
/// # Errors
/// 401 for a bad or expired token.
pub fn caller(app: &AppState, parts: &Parts, token: Option<&str>) -> Result<Caller, ApiError> {
    let caller = match token {
        Some(t) => app.services.users.authenticate(t)?,
        None => Caller::anonymous(),
    };
    Ok(match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => caller.from_addr(addr.to_string()),
        None => caller,
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        caller(app, parts, token).map(Auth)
    }
}

/// The caller of a route that needs a token (documented with only the `bearer` security
/// requirement): without one the request is refused with 401. Handlers take it before their
/// path, query and body, and extractors run in argument order, so a request without a token
/// gets 401 whatever else is wrong with it.
pub struct SignedIn(pub Caller);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers)? else {
            return Err(unauthenticated(
                "this call needs a token: send Authorization: Bearer <access token>",
            ));
        };
        caller(app, parts, Some(token)).map(SignedIn)
    }
}

type JsonBody<T> = Result<Json<T>, JsonRejection>;

/// Registers an account with the role `user`. Open to anyone.
#[utoipa::path(
    post,
    path = "/api/auth/register",
    operation_id = "register",
    tag = "auth",
    request_body = NewUser,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = User),
        (status = 400, description = "Malformed JSON, unknown field or invalid value, or a `referral_code` that is unknown or inactive (nobody is registered)", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 409, description = "The username or email is taken", body = ErrorBody),
        (status = 429, description = "Too many registrations from this client address within 10 minutes", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn register(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let user = app.services.referrals.register(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Username or email.
    login: String,
    password: String,
}

/// Checks a username or email and password; returns tokens.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = Tokens),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "Unknown login or wrong password", body = ErrorBody),
        (status = 403, description = "The account is disabled", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this account or unknown name within 15 minutes", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn login(
    State(app): State<AppState>,
    body: JsonBody<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    Ok(Json(app.services.users.login(&b.login, &b.password).await?))
}

/// A refresh token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The `refresh_token` of a login or an earlier refresh.
    refresh_token: String,
}

/// New tokens (with the account's current roles) for a valid refresh token.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    operation_id = "refresh",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens", body = Tokens),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "Bad or expired refresh token, or the account no longer exists", body = ErrorBody),
        (status = 403, description = "The account is disabled", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(app): State<AppState>,
    body: JsonBody<RefreshBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    Ok(Json(app.services.users.refresh(&b.refresh_token).await?))
}

/// The signed-in caller's account.
#[utoipa::path(
    get,
    path = "/api/users/me",
    operation_id = "get_me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 404, description = "The token's account no longer exists", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn me(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.users.me(&caller).await?))
}

/// Changes the caller's display name, email, locale (BCP 47, for notifications; `""`
/// clears it) or password (a new password needs the current one).
#[utoipa::path(
    patch,
    path = "/api/users/me",
    operation_id = "update_me",
    tag = "users",
    request_body = ProfileUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account after the change", body = User),
        (status = 400, description = "Malformed JSON, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, a bad or expired one, or a wrong current_password", body = ErrorBody),
        (status = 404, description = "The token's account no longer exists", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_me(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<ProfileUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(change) = body?;
    Ok(Json(
        app.services.users.update_profile(&caller, change).await?,
    ))
}

/// A user: callers read their own account; reading others needs `read` on `user`.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    operation_id = "get_user",
    tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Another user's account, and the caller's roles do not allow reading users", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_user(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.users.get(&caller, &id).await?))
}
