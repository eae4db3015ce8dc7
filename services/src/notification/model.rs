//! Notification records, requests and the rules their fields follow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServiceError;

/// Longest template key, subject, text and HTML body (characters).
pub const MAX_KEY_LEN: usize = 128;
pub const MAX_SUBJECT_LEN: usize = 500;
pub const MAX_BODY_LEN: usize = 100_000;
/// Most recipients named in one send, and most users a role fan-out reaches.
pub const MAX_USER_IDS: usize = 1_000;
pub const MAX_ROLE_FANOUT: usize = 100_000;
/// Most variables of a send and the largest variables object (bytes of JSON).
pub const MAX_VARIABLES: usize = 64;
pub const MAX_VARIABLES_BYTES: usize = 16_384;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2_000;
/// Most webhooks per owner.
pub const MAX_WEBHOOKS: usize = 10;

/// How a notification reaches its user.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Stored in the user's inbox.
    InApp,
    /// Pushed at once to the user's live WebSocket sessions (a `notification` frame).
    Realtime,
    /// Sent over SMTP to the user's email address (text and HTML parts).
    Email,
    /// POSTed, signed, to the webhooks of the user (and of the campaign, if any).
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::InApp,
        Channel::Realtime,
        Channel::Email,
        Channel::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Realtime => "realtime",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(field, "must be in_app, realtime, email or webhook")
            })
    }
}

/// Whether a notification respects the user's opt-outs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Account and order messages: sent on every channel asked for, whatever the preferences.
    Transactional,
    /// Promotions and digests: not sent on a channel the user opted out of.
    Marketing,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
        }
    }

    pub(crate) fn from_db(s: &str) -> Self {
        if s == "marketing" {
            Category::Marketing
        } else {
            Category::Transactional
        }
    }
}

/// A stored template: subject, text and HTML of one key in one locale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    pub key: String,
    /// BCP 47, canonical.
    pub locale: String,
    pub category: Category,
    /// MiniJinja sources (`{{ name }}`, `{% if %}`, filters); the HTML body is auto-escaped.
    pub subject: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The variables the template uses (besides `user`), sorted: a send must give them all.
    pub variables: Vec<String>,
    pub updated_by: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `PUT /api/notifications/templates/{key}/{locale}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub category: Category,
    /// 1–500 characters of MiniJinja.
    pub subject: String,
    /// 1–100,000 characters of MiniJinja: the plain-text body (email text part, in-app body).
    pub text: String,
    /// Up to 100,000 characters of MiniJinja: the email's HTML part (auto-escaped).
    #[serde(default)]
    pub html: Option<String>,
}

/// Who a send reaches: named users, or every active user with a role (exactly one).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// 1–1,000 user ids.
    #[serde(default)]
    pub user_ids: Option<Vec<String>>,
    /// A role (`user`, `campaign_manager`, ...): every user holding it who is not disabled.
    #[serde(default)]
    pub role: Option<String>,
}

/// Body of `POST /api/notifications`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The template key; each recipient gets the locale of their profile, falling back
    /// through the localization chain (`fr-CA` → `fr` → the default locale).
    pub template: String,
    /// Values for the template's variables (every variable it uses must be given; `user`
    /// is filled in with the recipient's `id`, `username` and `display_name`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// One or more channels.
    pub channels: Vec<Channel>,
    pub recipients: Recipients,
    /// The campaign it is about: its webhooks get it too.
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// What a send created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendResult {
    /// The id shared by the notifications of this send.
    pub batch_id: String,
    /// Notifications created (one per recipient).
    pub notifications: u64,
    /// Deliveries queued in the outbox (realtime, email, webhook).
    pub deliveries: u64,
    /// Deliveries not queued because the user opted out (marketing only) or has no webhook.
    pub skipped: u64,
}

/// A notification as its user sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub batch_id: String,
    pub user_id: String,
    pub template: String,
    /// The locale it was rendered in.
    pub locale: String,
    pub category: Category,
    pub subject: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The variables it was rendered with.
    #[schema(value_type = Object)]
    pub data: Value,
    pub channels: Vec<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    pub read: bool,
    /// RFC 3339, when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    pub created_by: String,
    pub created_at: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued or waiting for its next attempt.
    Pending,
    Sent,
    /// Every attempt failed; `last_error` says why.
    Failed,
    /// Not attempted: the user opted out of the channel, or the transport is not configured.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub(crate) fn from_db(s: &str) -> Self {
        match s {
            "sent" => DeliveryStatus::Sent,
            "failed" => DeliveryStatus::Failed,
            "skipped" => DeliveryStatus::Skipped,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One (notification, channel) of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Also the idempotency key the receiver sees (`Ovasabi-Idempotency-Key`, the email's
    /// `Message-ID`).
    pub id: String,
    pub notification_id: String,
    pub channel: Channel,
    /// The email address, webhook URL or user id it goes to.
    pub target: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// RFC 3339: when a pending delivery is attempted next.
    pub next_attempt_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    pub created_at: String,
}

/// A user's channel opt-ins (all on by default; `marketing` notifications respect them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preferences {
    pub in_app: bool,
    pub realtime: bool,
    pub email: bool,
    pub webhook: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            in_app: true,
            realtime: true,
            email: true,
            webhook: true,
        }
    }
}

impl Preferences {
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::InApp => self.in_app,
            Channel::Realtime => self.realtime,
            Channel::Email => self.email,
            Channel::Webhook => self.webhook,
        }
    }

    pub(crate) fn set(&mut self, channel: Channel, on: bool) {
        match channel {
            Channel::InApp => self.in_app = on,
            Channel::Realtime => self.realtime = on,
            Channel::Email => self.email = on,
            Channel::Webhook => self.webhook = on,
        }
    }
}

/// Body of `PATCH /api/notifications/preferences`: the channels to change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    #[serde(default, deserialize_with = "present_bool")]
    pub in_app: Option<bool>,
    #[serde(default, deserialize_with = "present_bool")]
    pub realtime: Option<bool>,
    #[serde(default, deserialize_with = "present_bool")]
    pub email: Option<bool>,
    #[serde(default, deserialize_with = "present_bool")]
    pub webhook: Option<bool>,
}

/// A channel given is `true` or `false`: `null` is refused rather than read as absent.
fn present_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

impl PreferencesUpdate {
    pub(crate) fn changes(&self) -> Vec<(Channel, bool)> {
        [
            (Channel::InApp, self.in_app),
            (Channel::Realtime, self.realtime),
            (Channel::Email, self.email),
            (Channel::Webhook, self.webhook),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.map(|v| (c, v)))
        .collect()
    }
}

/// Who a webhook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOwner {
    User,
    Campaign,
}

impl WebhookOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOwner::User => "user",
            WebhookOwner::Campaign => "campaign",
        }
    }

    pub(crate) fn from_db(s: &str) -> Self {
        if s == "campaign" {
            WebhookOwner::Campaign
        } else {
            WebhookOwner::User
        }
    }
}

/// A registered webhook endpoint (its secret is shown once, when it is created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub owner_type: WebhookOwner,
    pub owner_id: String,
    pub url: String,
    pub active: bool,
    pub created_by: String,
    pub created_at: String,
    /// The signing secret (hex), in the answer to the creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Body of `POST /api/notifications/webhooks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://`, at most 2,000 characters.
    pub url: String,
    /// For a campaign's notifications (needs `send`); absent: the caller's own.
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// The inbox's filter.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub unread_only: bool,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The answer to `GET /api/notifications/unread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnreadCount {
    pub unread: u64,
}

/// The answer to marking every notification read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarkedRead {
    pub marked: u64,
}

pub(crate) fn validate_key(field: &str, key: &str) -> Result<(), ServiceError> {
    let ok = !key.is_empty()
        && key.chars().count() <= MAX_KEY_LEN
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!("1-{MAX_KEY_LEN} characters of letters, digits, '.', '_' and '-'"),
        ))
    }
}

pub(crate) fn check_len(
    field: &str,
    s: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), ServiceError> {
    let n = s.chars().count();
    if range.contains(&n) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!("must be {}-{} characters", range.start(), range.end()),
        ))
    }
}

/// A webhook URL: `http` or `https`, with a host, no credentials.
pub(crate) fn validate_url(field: &str, url: &str) -> Result<(), ServiceError> {
    check_len(field, url, 1..=MAX_URL_LEN)?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ServiceError::invalid(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ServiceError::invalid(field, "must be http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ServiceError::invalid(field, "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ServiceError::invalid(
            field,
            "must not carry credentials (the request is signed instead)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preference_change_is_true_or_false_never_null() {
        let p: PreferencesUpdate = serde_json::from_str(r#"{"email": false}"#).expect("a change");
        assert_eq!(p.changes(), [(Channel::Email, false)]);
        assert!(serde_json::from_str::<PreferencesUpdate>(r#"{"email": null}"#).is_err());
        assert!(serde_json::from_str::<PreferencesUpdate>(r#"{"sms": true}"#).is_err());
    }
}
