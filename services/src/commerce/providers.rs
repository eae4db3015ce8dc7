//! Payment providers: how a payment is started, how its outcome comes back (a person
//! confirming receipt, or the provider's signed webhook), and the built-in `manual` provider.
//!
//! Adding a provider (a card network, a wallet) is one module implementing
//! [`PaymentProvider`] and one entry in [`Providers::builtin`] (or
//! [`Providers::with`] at start-up): `start` creates the provider's payment intent and says
//! what the payer does next; `parse_event` turns the provider's webhook body (already
//! verified against its HMAC secret and timestamp window by the service) into a
//! [`ProviderEvent`] that the service applies once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::ServiceError;

/// What a provider is asked to collect.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    pub payment_id: &'a str,
    pub order_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    /// The payer's reference, if given.
    pub reference: Option<&'a str>,
}

/// What a provider answered when a payment was started.
#[derive(Debug, Clone, Default)]
pub struct Started {
    /// The provider's id of the payment, if it has one.
    pub reference: Option<String>,
    /// What the payer does next.
    pub instructions: Option<String>,
}

/// What a verified webhook says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id: an event is applied once, replays are ignored.
    pub id: String,
    pub payment_id: String,
    pub outcome: Outcome,
    /// What the provider collected (checked against the payment: never converted).
    pub amount: i64,
    pub currency: String,
}

/// The outcome of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { reference: Option<String> },
    Failed { reason: String },
}

impl Outcome {
    pub fn event_type(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "payment.succeeded",
            Outcome::Failed { .. } => "payment.failed",
        }
    }
}

/// A way of collecting money.
pub trait PaymentProvider: Send + Sync {
    /// Its name in payments, URLs and ledger accounts (`provider:<name>`).
    fn name(&self) -> &'static str;

    /// Whether an admin or campaign manager confirms its payments by hand (`manual`).
    fn confirmed_by_hand(&self) -> bool;

    /// Starts collecting `intent` (for a network provider: creates its payment intent).
    fn start<'a>(&'a self, intent: Intent<'a>) -> BoxFuture<'a, Result<Started, ServiceError>>;

    /// The event of a webhook body whose signature the service has verified.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a body it cannot read.
    fn parse_event(&self, body: &str) -> Result<ProviderEvent, ServiceError>;
}

/// The registered providers and their webhook secrets.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<&'static str, Arc<dyn PaymentProvider>>,
    secrets: BTreeMap<String, Arc<[u8]>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("names", &self.names())
            .field("webhooks", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Providers {
    /// The built-in providers: `manual`.
    pub fn builtin() -> Self {
        Self::default().with(Arc::new(Manual))
    }

    /// These providers and `p`.
    #[must_use]
    pub fn with(mut self, p: Arc<dyn PaymentProvider>) -> Self {
        self.by_name.insert(p.name(), p);
        self
    }

    /// These providers, with the webhook of `provider` signed by `secret`.
    #[must_use]
    pub fn with_webhook_secret(mut self, provider: &str, secret: &[u8]) -> Self {
        self.secrets.insert(provider.to_owned(), Arc::from(secret));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    /// The provider `name`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `field` for an unknown one.
    pub fn get(&self, field: &str, name: &str) -> Result<&Arc<dyn PaymentProvider>, ServiceError> {
        self.by_name.get(name).ok_or_else(|| {
            ServiceError::invalid(
                field,
                format!(
                    "unknown provider {name:?}; known: {}",
                    self.names().join(", ")
                ),
            )
        })
    }

    pub(crate) fn secret(&self, provider: &str) -> Option<&[u8]> {
        self.secrets.get(provider).map(|s| &**s)
    }
}

/// Invoice or bank transfer: the payer transfers the amount with the payment's id as the
/// reference, and an admin or campaign manager confirms receipt (or rejects it). A bank
/// reconciliation feed may report transfers through the signed webhook instead.
#[derive(Debug, Clone, Copy)]
pub struct Manual;

/// The webhook body of the `manual` provider (and the generic shape of provider events).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    payment_id: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

impl PaymentProvider for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn confirmed_by_hand(&self) -> bool {
        true
    }

    fn start<'a>(&'a self, intent: Intent<'a>) -> BoxFuture<'a, Result<Started, ServiceError>> {
        Box::pin(async move {
            Ok(Started {
                reference: intent.reference.map(str::to_owned),
                instructions: Some(format!(
                    "transfer {} (minor units) {} with the reference {}; the payment \
                     completes when receipt is confirmed",
                    intent.amount, intent.currency, intent.payment_id
                )),
            })
        })
    }

    fn parse_event(&self, body: &str) -> Result<ProviderEvent, ServiceError> {
        let e: ManualEvent = serde_json::from_str(body)
            .map_err(|e| ServiceError::invalid("body", format!("not a provider event: {e}")))?;
        if e.id.is_empty() || e.id.len() > 255 {
            return Err(ServiceError::invalid("id", "must be 1-255 characters"));
        }
        let outcome = match e.kind.as_str() {
            "payment.succeeded" => Outcome::Succeeded {
                reference: super::model::validate_reference(e.reference.as_deref())?,
            },
            "payment.failed" => Outcome::Failed {
                reason: super::model::validate_reason(
                    e.reason
                        .as_deref()
                        .unwrap_or("the provider refused the payment"),
                )?,
            },
            other => {
                return Err(ServiceError::invalid(
                    "type",
                    format!("unknown event type {other:?}: payment.succeeded or payment.failed"),
                ));
            }
        };
        Ok(ProviderEvent {
            id: e.id,
            payment_id: e.payment_id,
            outcome,
            amount: e.amount,
            currency: e.currency,
        })
    }
}
