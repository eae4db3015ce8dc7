//! User records, what the API accepts, and the rules their fields follow.

use serde::{Deserialize, Serialize};

use crate::ServiceError;
use crate::security::Role;

/// Field limits.
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_DISPLAY_NAME_LEN: usize = 100;
pub const MAX_QUERY_LEN: usize = 100;

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    /// The user's locale (BCP 47, canonical form) for notifications and formats; `None`: the
    /// platform's default locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// A registration.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
    /// A referral code: the new account is attributed to its owner (read by the referral
    /// service, which routes registrations; an unknown or inactive code is a 400 and
    /// registers nobody).
    pub referral_code: Option<String>,
    /// The client's device fingerprint, compared by the referral service's fraud rules.
    pub device_fingerprint: Option<String>,
}

/// A profile change by the user; changing the password needs the current one.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// A BCP 47 tag (stored in canonical form); an empty string clears it.
    pub locale: Option<String>,
    pub current_password: Option<String>,
    pub new_password: Option<String>,
}

/// Which users an admin lists.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// A substring of the username, email or display name (case-insensitive).
    pub query: Option<String>,
}

/// What a successful login or refresh returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: User,
}

pub(crate) fn validate_username(s: &str) -> Result<String, ServiceError> {
    let ok = USERNAME_LEN.contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(ServiceError::invalid(
            "username",
            "must have 3-32 characters among a-z, 0-9, '_', '-' and '.'",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

pub(crate) fn validate_email(s: &str) -> Result<String, ServiceError> {
    let s = s.trim();
    let ok = s.len() <= MAX_EMAIL_LEN
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !ok {
        return Err(ServiceError::invalid(
            "email",
            "must be an address like name@example.org, at most 254 characters",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

pub(crate) fn validate_password(field: &str, s: &str) -> Result<(), ServiceError> {
    if !PASSWORD_LEN.contains(&s.chars().count()) {
        return Err(ServiceError::invalid(field, "must have 8-128 characters"));
    }
    Ok(())
}

pub(crate) fn validate_display_name(s: &str) -> Result<String, ServiceError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > MAX_DISPLAY_NAME_LEN || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "display_name",
            "must have 1-100 characters and no control characters",
        ));
    }
    Ok(s.to_owned())
}
