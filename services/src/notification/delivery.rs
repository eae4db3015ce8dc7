//! Delivery: the transports (realtime push through the engine, SMTP, signed webhooks) and the
//! worker that drains the outbox.
//!
//! # The worker
//! Every node runs one ([`NotificationService::run_deliveries`](super::NotificationService::run_deliveries)).
//! It claims due rows in batches (see the repository: a lease, a fence), delivers them
//! concurrently, and records each outcome with the claim's fence. A failure is retried after
//! an exponential back-off with jitter (`backoff_base · 2^(attempt-1)`, capped at
//! `backoff_max`, then a random point in its upper half) until `max_attempts`, then the row is
//! `failed` with the last error; an SMTP refusal that says it is permanent (5xx) fails at
//! once. A node that stops mid-delivery leaves its claims to expire after `lease`: any node
//! claims them again (so a receiver may see one delivery twice, with the same idempotency key,
//! if the node stopped after sending and before recording).
//!
//! # Webhooks
//! `POST` of the JSON payload with `Content-Type: application/json`,
//! `Ovasabi-Idempotency-Key: <delivery id>`, `Ovasabi-Delivery-Attempt: <n>` and
//! `Ovasabi-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. Any 2xx
//! is delivered; anything else, or no answer within `webhook_timeout`, is retried.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::value::RawValue;
use sha2::Sha256;

use super::model::{Channel, DeliveryStatus, Notification};
use super::repo::{Claimed, NotificationRepo, Outcome};
use crate::ServiceError;
use crate::time::now_ms;

/// Pushes a notification to a user's live sessions (the broadcast engine, on every node).
pub trait RealtimeSink: Send + Sync + 'static {
    /// # Errors
    /// Why the push could not be handed to the cluster (the bus is down): retried.
    fn push(&self, user: &str, notification: Box<RawValue>) -> BoxFuture<'_, Result<(), String>>;
}

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://host:port`
    /// (TLS); user and password in the URL's userinfo. `None`: email deliveries are
    /// `skipped`.
    pub smtp_url: Option<String>,
    /// The `From:` of every email (`Name <address>` or an address).
    pub email_from: String,
    /// Attempts per delivery before it is `failed`.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt, capped.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait for a webhook's answer, and for an SMTP exchange.
    pub webhook_timeout: Duration,
    pub smtp_timeout: Duration,
    /// How long a claim holds before another node may take the delivery over (longer than
    /// the timeouts above).
    pub lease: Duration,
    /// Deliveries claimed (and sent concurrently) per round.
    pub batch: u32,
    /// How often an idle worker looks at the outbox (a send on the same node wakes it at once).
    pub poll: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            email_from: "OVASABI <notifications@localhost>".to_owned(),
            max_attempts: 6,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(15 * 60),
            webhook_timeout: Duration::from_secs(10),
            smtp_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(120),
            batch: 32,
            poll: Duration::from_secs(1),
        }
    }
}

/// The transports, built once from [`DeliveryConfig`].
pub(crate) struct Transports {
    pub config: DeliveryConfig,
    pub realtime: Arc<dyn RealtimeSink>,
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    http: reqwest::Client,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("smtp", &self.mailer.is_some())
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Sent,
    /// Worth another attempt.
    Retry(String),
    /// Will never work (a permanent SMTP refusal, a webhook deleted meanwhile).
    Fail(String),
}

impl Transports {
    /// # Errors
    /// [`ServiceError::Invalid`] naming `smtp_url` or `email_from`.
    pub fn new(
        config: DeliveryConfig,
        realtime: Arc<dyn RealtimeSink>,
    ) -> Result<Self, ServiceError> {
        let from: Mailbox = config
            .email_from
            .parse()
            .map_err(|e| ServiceError::invalid("email_from", format!("not a mailbox: {e}")))?;
        let mailer = match &config.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| ServiceError::invalid("smtp_url", e.to_string()))?
                    .timeout(Some(config.smtp_timeout))
                    .build(),
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ovasabi-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ServiceError::invalid("webhook_timeout", e.to_string()))?;
        Ok(Self {
            config,
            realtime,
            mailer,
            from,
            http,
        })
    }

    pub fn email_configured(&self) -> bool {
        self.mailer.is_some()
    }

    /// The delay before attempt `attempts + 1`.
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        let full = self
            .config
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.config.backoff_max);
        let half = full / 2;
        let jitter = rand::random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
        half + Duration::from_millis(jitter)
    }

    async fn attempt(&self, repo: &NotificationRepo, c: &Claimed, n: &Notification) -> Attempt {
        let d = &c.delivery;
        match d.channel {
            Channel::Realtime => {
                let payload = realtime_payload(n);
                match self.realtime.push(&n.user_id, payload).await {
                    Ok(()) => Attempt::Sent,
                    Err(e) => Attempt::Retry(e),
                }
            }
            Channel::Email => self.email(d.id.as_str(), &d.target, n).await,
            Channel::Webhook => {
                let Some(webhook) = c.webhook_id.as_deref() else {
                    return Attempt::Fail("no webhook id".to_owned());
                };
                let secret = match repo.webhook_secret(webhook).await {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        return Attempt::Fail("the webhook was deleted or disabled".to_owned());
                    }
                    Err(e) => return Attempt::Retry(format!("webhook not read: {e}")),
                };
                self.webhook(&d.id, d.attempts, &d.target, &secret, n).await
            }
            Channel::InApp => Attempt::Sent,
        }
    }

    async fn email(&self, id: &str, to: &str, n: &Notification) -> Attempt {
        let Some(mailer) = &self.mailer else {
            return Attempt::Fail("email is not configured (smtp_url)".to_owned());
        };
        let to: Mailbox = match to.parse() {
            Ok(m) => m,
            Err(e) => return Attempt::Fail(format!("not a mailbox: {e}")),
        };
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            .message_id(Some(format!("<{id}@ovasabi>")));
        let message = match &n.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                n.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_PLAIN)
                    .body(n.text.clone()),
            ),
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => return Attempt::Fail(format!("message not built: {e}")),
        };
        match mailer.send(message).await {
            Ok(_) => Attempt::Sent,
            Err(e) if e.is_permanent() => Attempt::Fail(format!("SMTP refused: {e}")),
            Err(e) => Attempt::Retry(format!("SMTP: {e}")),
        }
    }

    async fn webhook(
        &self,
        id: &str,
        attempt: u32,
        url: &str,
        secret: &str,
        n: &Notification,
    ) -> Attempt {
        let body = webhook_body(id, n);
        let t = now_ms() / 1000;
        let signature = sign(secret.as_bytes(), t, &body);
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("ovasabi-idempotency-key", id)
            .header("ovasabi-delivery-attempt", attempt.to_string())
            .header("ovasabi-signature", format!("t={t},v1={signature}"))
            .body(body);
        match request.send().await {
            Ok(r) if r.status().is_success() => Attempt::Sent,
            Ok(r) => Attempt::Retry(format!("HTTP {}", r.status())),
            Err(e) => Attempt::Retry(format!("webhook: {e}")),
        }
    }

    /// Delivers one claimed row and decides its outcome.
    pub async fn deliver(&self, repo: &NotificationRepo, c: &Claimed) -> Outcome {
        let now = now_ms();
        let result = match repo.notification(&c.delivery.notification_id).await {
            Ok(Some(n)) => self.attempt(repo, c, &n).await,
            Ok(None) => Attempt::Fail("the notification is gone".to_owned()),
            Err(e) => Attempt::Retry(format!("notification not read: {e}")),
        };
        let attempts = c.delivery.attempts;
        let channel = c.delivery.channel.as_str();
        match result {
            Attempt::Sent => {
                metrics::counter!("ovasabi_notification_deliveries_total", "channel" => channel, "outcome" => "sent")
                    .increment(1);
                Outcome {
                    status: DeliveryStatus::Sent,
                    error: None,
                    sent_at: Some(now_ms()),
                    next_attempt_at: now,
                }
            }
            Attempt::Retry(e) if attempts < self.config.max_attempts => {
                metrics::counter!("ovasabi_notification_deliveries_total", "channel" => channel, "outcome" => "retried")
                    .increment(1);
                let wait = i64::try_from(self.backoff(attempts).as_millis()).unwrap_or(i64::MAX);
                tracing::debug!(delivery = %c.delivery.id, channel, attempts, error = %e, "delivery retried");
                Outcome {
                    status: DeliveryStatus::Pending,
                    error: Some(e),
                    sent_at: None,
                    next_attempt_at: now.saturating_add(wait),
                }
            }
            Attempt::Retry(e) | Attempt::Fail(e) => {
                metrics::counter!("ovasabi_notification_deliveries_total", "channel" => channel, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(delivery = %c.delivery.id, channel, attempts, error = %e, "delivery failed");
                Outcome {
                    status: DeliveryStatus::Failed,
                    error: Some(e),
                    sent_at: None,
                    next_attempt_at: now,
                }
            }
        }
    }
}

/// What the realtime frame carries (`{"type":"notification","notification":...}`).
pub(crate) fn realtime_payload(n: &Notification) -> Box<RawValue> {
    let v = serde_json::json!({
        "id": n.id,
        "template": n.template,
        "category": n.category,
        "subject": n.subject,
        "text": n.text,
        "data": n.data,
        "campaign_id": n.campaign_id,
        "created_at": n.created_at,
    });
    serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The JSON a webhook receives.
pub fn webhook_body(delivery_id: &str, n: &Notification) -> String {
    serde_json::json!({
        "id": delivery_id,
        "type": "notification",
        "notification": {
            "id": n.id,
            "user_id": n.user_id,
            "template": n.template,
            "locale": n.locale,
            "category": n.category,
            "subject": n.subject,
            "text": n.text,
            "data": n.data,
            "campaign_id": n.campaign_id,
            "created_at": n.created_at,
        }
    })
    .to_string()
}

/// The hex HMAC-SHA256 of `"{t}.{body}"` under `secret`: the `v1` of `Ovasabi-Signature`.
pub fn sign(secret: &[u8], t: i64, body: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Checks an `Ovasabi-Signature` header for `body` (what a receiver does): the signature
/// matches and `t` is within `tolerance_secs` of `now_secs`.
pub fn verify(secret: &[u8], header: &str, body: &str, now_secs: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_secs - t).abs() > tolerance_secs {
        return false;
    }
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let Some(given) = unhex(v1) else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_changes_and_old_timestamps() {
        let body = r#"{"id":"d1"}"#;
        let sig = sign(b"secret", 1_700_000_000, body);
        let header = format!("t=1700000000,v1={sig}");
        assert!(verify(b"secret", &header, body, 1_700_000_100, 300));
        assert!(!verify(b"other", &header, body, 1_700_000_100, 300));
        assert!(!verify(
            b"secret",
            &header,
            r#"{"id":"d2"}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify(b"secret", &header, body, 1_700_001_000, 300));
        assert!(!verify(b"secret", "v1=00", body, 1_700_000_000, 300));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
    }
}
