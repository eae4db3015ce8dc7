//! REST adapters of the talent service under `/api/talent`: profiles (create, search, read,
//! change, delete), their weekly availability and free slots, and bookings with their
//! transitions. RBAC is the service's (resource `talent`: `read` for profiles and slots,
//! anonymous callers too; `write` for one's own profile; `book` for bookings; `manage` for
//! any profile or booking).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::talent::{
    Availability, Booking, BookingSide, BookingStatus, NewBooking, NewProfile, Page, Profile,
    ProfileFilter, ProfileUpdate, Slot, SlotQuery,
};
use utoipa::IntoParams;

use super::AppState;
use super::auth::{Auth, SignedIn};
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Which profiles a search returns; both filters combine. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Only profiles with this skill tag (exact, case-insensitive).
    skill: Option<String>,
    /// Only profiles whose headline or bio contains this text (case-insensitive, literal).
    q: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The window and length of the slots listed. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsQuery {
    /// RFC 3339: the first slot starts at or after it.
    from: String,
    /// RFC 3339: the last slot ends at or before it; at most 62 days after `from`.
    to: String,
    /// The length of every slot (and the step between them), 15–480 minutes.
    #[param(minimum = 15, maximum = 480)]
    duration_minutes: u32,
}

/// Which of the caller's bookings a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MyBookingsQuery {
    /// `client` (default): the bookings the caller made; `talent`: those of its profile.
    #[param(value_type = Option<BookingSide>, inline)]
    side: Option<String>,
    /// Only bookings in this state.
    #[param(value_type = Option<BookingStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Which bookings of one profile a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BookingsQuery {
    /// Only bookings in this state.
    #[param(value_type = Option<BookingStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn status_param(s: Option<&str>) -> Result<Option<BookingStatus>, ApiError> {
    Ok(s.map(|s| BookingStatus::parse("status", s)).transpose()?)
}

/// Creates the caller's talent profile (admins may name another `user_id`). Needs `write`.
#[utoipa::path(
    post,
    path = "/api/talent/profiles",
    operation_id = "create_talent_profile",
    tag = "talent",
    request_body = NewProfile,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The profile", body = Profile),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or it names another user without `manage`", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The user already has a profile", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_profile(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewProfile>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let p = app.services.talent.create_profile(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// Profiles by skill and text, a page at a time by id (private ones only to their owner and
/// `manage`). Needs `read`; anonymous callers may search.
#[utoipa::path(
    get,
    path = "/api/talent/profiles",
    operation_id = "search_talent_profiles",
    tag = "talent",
    params(SearchQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of profiles", body = Page<Profile>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn search(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<SearchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = ProfileFilter {
        skill: q.skill,
        query: q.q,
    };
    Ok(Json(
        app.services
            .talent
            .search(&caller, &filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One profile (a private one only to its owner and `manage`). Needs `read`.
#[utoipa::path(
    get,
    path = "/api/talent/profiles/{id}",
    operation_id = "get_talent_profile",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such profile (or a private one)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_profile(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.get_profile(&caller, &id).await?))
}

/// The profile of one user (a private one only to its owner and `manage`). Needs `read`.
#[utoipa::path(
    get,
    path = "/api/talent/users/{id}/profile",
    operation_id = "get_talent_profile_of_user",
    tag = "talent",
    params(("id" = String, Path, description = "User id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "The user has no profile (or a private one)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn profile_of_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.talent.profile_of_user(&caller, &id).await?,
    ))
}

/// Changes a profile (absent fields are kept): its owner, or `manage`. Needs `write`.
#[utoipa::path(
    patch,
    path = "/api/talent/profiles/{id}",
    operation_id = "update_talent_profile",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id")),
    request_body = ProfileUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile after the change", body = Profile),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the owner, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_profile(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<ProfileUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(update)) = (id?, body?);
    Ok(Json(
        app.services
            .talent
            .update_profile(&caller, &id, update)
            .await?,
    ))
}

/// Deletes a profile: its owner, or `manage`. Its bookings stay (they are the clients' too).
/// Needs `write`.
#[utoipa::path(
    delete,
    path = "/api/talent/profiles/{id}",
    operation_id = "delete_talent_profile",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the owner, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_profile(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.talent.delete_profile(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a profile's availability: weekly rules and dated exceptions on the wall clock of
/// its time zone. Its owner, or `manage`. Needs `write`.
#[utoipa::path(
    put,
    path = "/api/talent/profiles/{id}/availability",
    operation_id = "set_talent_availability",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id")),
    request_body = Availability,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile with its new availability", body = Profile),
        (status = 400, description = "Malformed JSON, unknown field, bad weekday, time or date, overlapping hours (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the owner, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn set_availability(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Availability>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(availability)) = (id?, body?);
    Ok(Json(
        app.services
            .talent
            .set_availability(&caller, &id, availability)
            .await?,
    ))
}

/// The free slots of a profile between two instants, each `duration_minutes` long: within
/// its availability (correct across daylight-saving changes), not held by a requested or
/// confirmed booking, not in the past. Needs `read`.
#[utoipa::path(
    get,
    path = "/api/talent/profiles/{id}/slots",
    operation_id = "list_talent_slots",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id"), SlotsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The free slots, earliest first (UTC)", body = Vec<Slot>),
        (status = 400, description = "Missing, bad or unknown query parameter, or a window longer than 62 days (the error names it)", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such profile (or a private one)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn slots(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    Params(q): Params<SlotsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let query = SlotQuery {
        from: q.from,
        to: q.to,
        duration_minutes: q.duration_minutes,
    };
    Ok(Json(
        app.services.talent.free_slots(&caller, &id, &query).await?,
    ))
}

/// Books a profile for the caller (`requested`, holding the time). Needs `book`.
#[utoipa::path(
    post,
    path = "/api/talent/profiles/{id}/bookings",
    operation_id = "book_talent",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id")),
    request_body = NewBooking,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The booking, requested", body = Booking),
        (status = 400, description = "Malformed JSON, unknown field, bad instant, a length outside 15 minutes to 8 hours (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such profile (or a private one)", body = ErrorBody),
        (status = 409, description = "The time is in the past, outside the availability, overlaps a requested or confirmed booking, or is the caller's own profile", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn book(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<NewBooking>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    let b = app.services.talent.book(&caller, &id, new).await?;
    Ok((StatusCode::CREATED, Json(b)))
}

/// The bookings of one profile, a page at a time by id: its owner, or `manage`. Needs `book`.
#[utoipa::path(
    get,
    path = "/api/talent/profiles/{id}/bookings",
    operation_id = "list_talent_profile_bookings",
    tag = "talent",
    params(("id" = String, Path, description = "Profile id"), BookingsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of bookings", body = Page<Booking>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the owner, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn profile_bookings(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    Params(q): Params<BookingsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let status = status_param(q.status.as_deref())?;
    Ok(Json(
        app.services
            .talent
            .talent_bookings(&caller, &id, status, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// The caller's bookings, a page at a time by id: those it made (`side=client`) or those of
/// its own profile (`side=talent`). Needs `book`.
#[utoipa::path(
    get,
    path = "/api/talent/bookings",
    operation_id = "list_my_talent_bookings",
    tag = "talent",
    params(MyBookingsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of bookings", body = Page<Booking>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "`side=talent`, and the caller has no profile", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn my_bookings(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<MyBookingsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let side = match q.side.as_deref() {
        None => BookingSide::Client,
        Some(s) => BookingSide::parse("side", s)?,
    };
    let status = status_param(q.status.as_deref())?;
    Ok(Json(
        app.services
            .talent
            .my_bookings(&caller, side, status, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One booking: to its two parties and `manage`. Needs `book`.
#[utoipa::path(
    get,
    path = "/api/talent/bookings/{id}",
    operation_id = "get_talent_booking",
    tag = "talent",
    params(("id" = String, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking", body = Booking),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such booking (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_booking(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.get_booking(&caller, &id).await?))
}

/// `requested` → `confirmed`, by the talent (or `manage`). Needs `book`.
#[utoipa::path(
    post,
    path = "/api/talent/bookings/{id}/confirm",
    operation_id = "confirm_talent_booking",
    tag = "talent",
    params(("id" = String, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking, confirmed", body = Booking),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the talent, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such booking (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The booking is not requested (the error names both states)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn confirm(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.confirm(&caller, &id).await?))
}

/// `requested` → `declined`, by the talent (or `manage`): the time is free again. Needs
/// `book`.
#[utoipa::path(
    post,
    path = "/api/talent/bookings/{id}/decline",
    operation_id = "decline_talent_booking",
    tag = "talent",
    params(("id" = String, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking, declined", body = Booking),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the talent, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such booking (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The booking is not requested (the error names both states)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn decline(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.decline(&caller, &id).await?))
}

/// `requested` or `confirmed` → `cancelled`, by either party (or `manage`): the time is free
/// again. Needs `book`.
#[utoipa::path(
    post,
    path = "/api/talent/bookings/{id}/cancel",
    operation_id = "cancel_talent_booking",
    tag = "talent",
    params(("id" = String, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking, cancelled", body = Booking),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such booking (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The booking is neither requested nor confirmed (the error names both states)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.cancel(&caller, &id).await?))
}

/// `confirmed` → `completed`, by the talent (or `manage`). Needs `book`.
#[utoipa::path(
    post,
    path = "/api/talent/bookings/{id}/complete",
    operation_id = "complete_talent_booking",
    tag = "talent",
    params(("id" = String, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking, completed", body = Booking),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the talent, and the caller's roles do not allow `manage`", body = ErrorBody),
        (status = 404, description = "No such booking (or not the caller's)", body = ErrorBody),
        (status = 409, description = "The booking is not confirmed (the error names both states)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn complete(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.talent.complete(&caller, &id).await?))
}
