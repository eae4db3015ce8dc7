//! Pagination shared by every list: `limit` (1–500, default 50) and an opaque `cursor` (the
//! last item's key) that the next call passes back.

use serde::Serialize;

use crate::ServiceError;

/// Default and largest page sizes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// A page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The page size to use for `limit`.
///
/// # Errors
/// [`ServiceError::Invalid`] for a limit out of 1–500.
pub fn check_limit(limit: Option<u32>) -> Result<u32, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ServiceError::invalid(
            "limit",
            format!("must be 1-{MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// A page from `rows` fetched with `limit + 1`: the extra row, if any, says there is a next
/// page, whose cursor is the key of the last row kept.
pub fn paginate<T>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(key)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}
