//! Times as the layer stores them (milliseconds since the Unix epoch) and shows them (RFC 3339,
//! UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ServiceError;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `ms` as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 UTC time (`2026-11-26T09:00:00Z`, fractions allowed) into ms.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn parse_rfc3339(field: &str, s: &str) -> Result<i64, ServiceError> {
    let t = humantime::parse_rfc3339(s).map_err(|e| {
        ServiceError::invalid(
            field,
            format!("{s:?} is not an RFC 3339 UTC time like 2026-11-26T09:00:00Z: {e}"),
        )
    })?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ServiceError::invalid(field, "must be after 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ServiceError::invalid(field, "too far in the future"))
}
