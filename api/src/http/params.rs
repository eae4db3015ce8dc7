//! Query strings of `/api/...`: [`Params`] parses one like axum's `Query`, after refusing a
//! parameter sent without a value (`?q=`, `?cursor=`, `?tag`). A parameter is either given a
//! value or left out, which is what the OpenAPI document says (`minLength: 1` on every query
//! string); otherwise an empty value would mean "absent" for some parameters, "match the
//! empty string" for others and be refused by the rest.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::error::ApiError;

/// A request's query, deserialised into `T`; every parameter's value is non-empty.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)?;
        if let Some((name, _)) = pairs.iter().find(|(_, value)| value.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "query parameter {name:?} has no value: give it one or leave it out"
            )));
        }
        let Query(query) = Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Self(query))
    }
}

/// A page of a list: the query of every list that has no filter of its own. Unknown
/// parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}
