//! Referral records, inputs and their rules: codes, referrals with the fraud rules that held
//! them, the reward terms a campaign's `metadata.custom_rules` set, e-mail normalisation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ServiceError;

/// Custom codes: 4–32 characters of `A-Z`, `0-9` and `-` (upper-cased first).
pub const CODE_LEN: std::ops::RangeInclusive<usize> = 4..=32;
/// Generated codes: 8 characters of [`CODE_ALPHABET`].
pub const GENERATED_CODE_LEN: usize = 8;
/// Without the look-alikes `0`/`O`, `1`/`I`.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// A device fingerprint: 1–128 printable ASCII characters.
pub const MAX_DEVICE_LEN: usize = 128;
/// A review note: 1–500 characters.
pub const MAX_NOTE_LEN: usize = 500;
/// Sign-ups per code and hour above which `velocity` fires, unless the campaign says.
pub const DEFAULT_VELOCITY_PER_HOUR: u32 = 10;
/// The largest reward (minor units): both sides' credits, together, are one ledger amount.
pub const MAX_REWARD: i64 = crate::babel::money::MAX_AMOUNT / 2;

/// Where a referral stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReferralStatus)]
pub enum ReferralStatus {
    /// Waiting for the reward's condition (`reward_on`).
    Pending,
    /// A fraud rule fired: the reward waits for a reviewer (`reasons` say why).
    Held,
    /// The reward was credited to both sides (once).
    Rewarded,
    /// A reviewer refused the reward.
    Rejected,
    /// Attributed to the referrer; the code's campaign sets no reward (or the code is global).
    Attributed,
}

impl ReferralStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Held,
        Self::Rewarded,
        Self::Rejected,
        Self::Attributed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Held => "held",
            Self::Rewarded => "rewarded",
            Self::Rejected => "rejected",
            Self::Attributed => "attributed",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(
                    field,
                    format!(
                        "unknown status {s:?}; expected pending, held, rewarded, rejected or \
                         attributed"
                    ),
                )
            })
    }
}

/// When a campaign's reward is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardOn {
    /// When the referee registers.
    Signup,
    /// When the referee's first order is paid.
    FirstPaidOrder,
}

impl RewardOn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::FirstPaidOrder => "first_paid_order",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        match s {
            "signup" => Ok(Self::Signup),
            "first_paid_order" => Ok(Self::FirstPaidOrder),
            _ => Err(ServiceError::invalid(
                field,
                format!("unknown condition {s:?}; expected signup or first_paid_order"),
            )),
        }
    }
}

/// A fraud rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FraudRule {
    /// The referee is the referrer: the same account, or the same e-mail once normalised.
    SelfReferral,
    /// More sign-ups with the code within an hour than the campaign allows.
    Velocity,
    /// The referee's client address is the referrer's or another referee's of the code.
    SameAddress,
    /// The referee's device fingerprint is the referrer's or another referee's of the code.
    SameDevice,
    /// The referrer has as many referrals in the campaign as `max_referrals` allows.
    MaxReferrals,
}

impl FraudRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfReferral => "self_referral",
            Self::Velocity => "velocity",
            Self::SameAddress => "same_address",
            Self::SameDevice => "same_device",
            Self::MaxReferrals => "max_referrals",
        }
    }
}

/// A fraud rule that fired, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReferralHoldReason)]
pub struct HoldReason {
    pub rule: FraudRule,
    pub detail: String,
}

/// A reward: `amount` minor units of `currency`, to each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReferralReward)]
pub struct Reward {
    pub amount: i64,
    pub currency: String,
}

/// A referral code.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ReferralCode)]
pub struct Code {
    pub code: String,
    pub owner_id: String,
    /// The campaign whose rules reward its sign-ups; absent for a global code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A new code of the caller.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewReferralCode)]
pub struct NewCode {
    /// The campaign whose `custom_rules` reward the code's sign-ups; none for a global code.
    pub campaign_id: Option<String>,
    /// A code of one's choice (4–32 of `A-Z`, `0-9`, `-`, upper-cased); generated when absent.
    pub code: Option<String>,
    /// The device fingerprint of the owner's client (compared with referees').
    pub device_fingerprint: Option<String>,
}

/// A sign-up attributed to a code.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Referral {
    pub id: String,
    pub code: String,
    pub referrer_id: String,
    pub referee_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    pub status: ReferralStatus,
    /// The fraud rules that fired at sign-up (empty when none did).
    pub reasons: Vec<HoldReason>,
    /// What each side gets, from the campaign's rules at sign-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<Reward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_on: Option<RewardOn>,
    /// When the reward's condition was met (sign-up or first paid order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_at: Option<String>,
    /// The ledger movement that credited the reward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_movement: Option<String>,
    /// Who approved or rejected it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_note: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A reviewer's approval of a held referral.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReferralApproval)]
pub struct Approval {
    /// Why (kept with the referral and in the audit log).
    pub note: Option<String>,
}

/// A reviewer's refusal of a held referral.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReferralRejection)]
pub struct Rejection {
    /// Why (required).
    pub reason: String,
}

/// Which referrals a list returns.
#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    /// Those of this referrer (the caller's own without `manage`).
    pub referrer_id: Option<String>,
    pub code: Option<String>,
    pub campaign_id: Option<String>,
    pub status: Option<ReferralStatus>,
}

/// Counts of a code's or a campaign's referrals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ReferralStats)]
pub struct Stats {
    /// Every sign-up attributed.
    pub signups: i64,
    /// Those whose reward condition was met (sign-up rewards at once; else a first paid
    /// order).
    pub converted: i64,
    pub rewarded: i64,
    pub held: i64,
    pub rejected: i64,
    pub pending: i64,
    pub attributed: i64,
}

/// Which fraud rules a campaign runs (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub self_referral: bool,
    pub velocity: bool,
    pub same_address: bool,
    pub same_device: bool,
    pub max_referrals: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            self_referral: true,
            velocity: true,
            same_address: true,
            same_device: true,
            max_referrals: true,
        }
    }
}

/// The referral terms of a campaign, from `metadata.custom_rules`:
///
/// ```json
/// {"custom_rules": {
///   "referral_reward": {"amount": 500, "currency": "EUR"},
///   "reward_on": "first_paid_order",
///   "max_referrals": 20,
///   "referral_velocity_per_hour": 10,
///   "referral_checks": {"same_address": false}
/// }}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// None: sign-ups are attributed, nothing is paid.
    pub reward: Option<Reward>,
    pub reward_on: Option<RewardOn>,
    pub max_referrals: Option<u32>,
    pub velocity_per_hour: Option<u32>,
    pub checks: Checks,
}

impl Rules {
    /// The terms `metadata` sets (none of the keys: no reward).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `metadata.custom_rules.<key>`: an amount that is not
    /// 1..=[`MAX_REWARD`], an unknown currency, an unknown `reward_on`, a count that is not a
    /// positive integer, a check that is not a boolean or not a rule.
    pub fn from_metadata(metadata: &Value) -> Result<Self, ServiceError> {
        let rules = metadata.pointer("/custom_rules");
        let get = |k: &str| rules.and_then(|r| r.get(k)).filter(|v| !v.is_null());
        let field = |k: &str| format!("metadata.custom_rules.{k}");
        let reward = match get("referral_reward") {
            None => None,
            Some(v) => {
                let f = field("referral_reward");
                let obj = v.as_object().ok_or_else(|| {
                    ServiceError::invalid(&f, "must be an object {\"amount\", \"currency\"}")
                })?;
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "amount" | "currency"))
                {
                    return Err(ServiceError::invalid(
                        &f,
                        format!("unknown key {k:?}; expected amount and currency"),
                    ));
                }
                let amount = obj
                    .get("amount")
                    .and_then(Value::as_i64)
                    .filter(|a| (1..=MAX_REWARD).contains(a))
                    .ok_or_else(|| {
                        ServiceError::invalid(
                            &format!("{f}.amount"),
                            format!("must be an integer of minor units, 1-{MAX_REWARD}"),
                        )
                    })?;
                let currency = obj.get("currency").and_then(Value::as_str).ok_or_else(|| {
                    ServiceError::invalid(&format!("{f}.currency"), "must be an ISO 4217 code")
                })?;
                let c = crate::babel::money::currency(&format!("{f}.currency"), currency)?;
                Some(Reward {
                    amount,
                    currency: c.code.to_owned(),
                })
            }
        };
        let reward_on = get("reward_on")
            .map(|v| {
                let f = field("reward_on");
                let s = v.as_str().ok_or_else(|| {
                    ServiceError::invalid(&f, "must be signup or first_paid_order")
                })?;
                RewardOn::parse(&f, s)
            })
            .transpose()?;
        let count = |k: &str| -> Result<Option<u32>, ServiceError> {
            get(k)
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            ServiceError::invalid(&field(k), "must be a positive integer")
                        })
                })
                .transpose()
        };
        let max_referrals = count("max_referrals")?;
        let velocity_per_hour = count("referral_velocity_per_hour")?;
        let mut checks = Checks::default();
        if let Some(v) = get("referral_checks") {
            let f = field("referral_checks");
            let obj = v
                .as_object()
                .ok_or_else(|| ServiceError::invalid(&f, "must be an object of booleans"))?;
            for (k, v) in obj {
                let on = v.as_bool().ok_or_else(|| {
                    ServiceError::invalid(&format!("{f}.{k}"), "must be true or false")
                })?;
                let slot = match k.as_str() {
                    "self_referral" => &mut checks.self_referral,
                    "velocity" => &mut checks.velocity,
                    "same_address" => &mut checks.same_address,
                    "same_device" => &mut checks.same_device,
                    "max_referrals" => &mut checks.max_referrals,
                    _ => {
                        return Err(ServiceError::invalid(
                            &format!("{f}.{k}"),
                            "unknown rule; expected self_referral, velocity, same_address, \
                             same_device or max_referrals",
                        ));
                    }
                };
                *slot = on;
            }
        }
        Ok(Self {
            reward,
            reward_on,
            max_referrals,
            velocity_per_hour,
            checks,
        })
    }

    /// When the reward is paid (`signup` unless the campaign says).
    pub fn reward_on(&self) -> RewardOn {
        self.reward_on.unwrap_or(RewardOn::Signup)
    }

    pub fn velocity_per_hour(&self) -> u32 {
        self.velocity_per_hour.unwrap_or(DEFAULT_VELOCITY_PER_HOUR)
    }
}

/// `raw` as a stored code: trimmed and upper-cased, 4–32 of `A-Z`, `0-9`, `-`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn normalize_code(field: &str, raw: &str) -> Result<String, ServiceError> {
    let code = raw.trim().to_ascii_uppercase();
    if !CODE_LEN.contains(&code.len())
        || !code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ServiceError::invalid(
            field,
            format!(
                "a referral code has {}-{} characters of A-Z, 0-9 and -",
                CODE_LEN.start(),
                CODE_LEN.end()
            ),
        ));
    }
    Ok(code)
}

/// A new random code of [`GENERATED_CODE_LEN`] characters.
pub fn generate_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..GENERATED_CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// A device fingerprint as given (trimmed; empty is none): 1–128 printable ASCII characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `device_fingerprint`.
pub fn validate_device(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(s) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.len() > MAX_DEVICE_LEN || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ServiceError::invalid(
            "device_fingerprint",
            format!("1-{MAX_DEVICE_LEN} printable ASCII characters"),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// A reviewer's note or reason: trimmed, 1–500 characters without control characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_note(field: &str, s: &str) -> Result<String, ServiceError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > MAX_NOTE_LEN || t.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!("1-{MAX_NOTE_LEN} characters without control characters"),
        ));
    }
    Ok(t.to_owned())
}

/// Domains whose mailboxes ignore dots in the local part (and are one provider).
const DOTLESS_DOMAINS: &[&str] = &["gmail.com", "googlemail.com"];

/// `email` as one mailbox: lower case, without a `+tag`, and without dots where the
/// provider ignores them (`J.Doe+promo@GoogleMail.com` → `jdoe@gmail.com`).
pub fn normalize_email(email: &str) -> String {
    let lower = email.trim().to_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    let local = local.split('+').next().unwrap_or(local);
    if DOTLESS_DOMAINS.contains(&domain) {
        format!("{}@gmail.com", local.replace('.', ""))
    } else {
        format!("{local}@{domain}")
    }
}

/// The host part of a client address (`ip:port`, `[v6]:port`, or a bare IP): the port
/// changes with every connection.
pub fn host_of(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_are_normalised_per_provider() {
        assert_eq!(
            normalize_email("J.Doe+promo@GoogleMail.com"),
            "jdoe@gmail.com"
        );
        assert_eq!(normalize_email("j.doe@gmail.com"), "jdoe@gmail.com");
        // Other providers keep their dots: a near miss is another mailbox.
        assert_eq!(normalize_email("J.Doe+x@Example.org"), "j.doe@example.org");
        assert_ne!(
            normalize_email("jdoe@example.org"),
            normalize_email("j.doe@example.org")
        );
    }

    #[test]
    fn codes_are_upper_cased_and_checked() {
        assert_eq!(
            normalize_code("c", " spring-26 ").ok().as_deref(),
            Some("SPRING-26")
        );
        for bad in ["abc", "a b c d", "ÄBCDE", &"A".repeat(33), "AB_CD"] {
            assert!(normalize_code("c", bad).is_err(), "{bad}");
        }
        let g = generate_code();
        assert_eq!(g.len(), GENERATED_CODE_LEN);
        assert_eq!(normalize_code("c", &g).ok(), Some(g));
    }

    #[test]
    fn host_drops_the_port() {
        assert_eq!(host_of("127.0.0.2:5000"), "127.0.0.2");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn rules_come_from_custom_rules() -> Result<(), ServiceError> {
        let r = Rules::from_metadata(&json!({}))?;
        assert_eq!(r, Rules::default());
        let r = Rules::from_metadata(&json!({"custom_rules": {
            "referral_reward": {"amount": 500, "currency": "EUR"},
            "reward_on": "first_paid_order",
            "max_referrals": 3,
            "referral_velocity_per_hour": 2,
            "referral_checks": {"same_address": false}
        }}))?;
        assert_eq!(
            r.reward,
            Some(Reward {
                amount: 500,
                currency: "EUR".into()
            })
        );
        assert_eq!(r.reward_on(), RewardOn::FirstPaidOrder);
        assert_eq!((r.max_referrals, r.velocity_per_hour()), (Some(3), 2));
        assert!(!r.checks.same_address && r.checks.same_device);
        for (bad, field) in [
            (
                json!({"referral_reward": 5}),
                "metadata.custom_rules.referral_reward",
            ),
            (
                json!({"referral_reward": {"amount": 0, "currency": "EUR"}}),
                "metadata.custom_rules.referral_reward.amount",
            ),
            (
                json!({"referral_reward": {"amount": 5, "currency": "XXQ"}}),
                "metadata.custom_rules.referral_reward.currency",
            ),
            (
                json!({"referral_reward": {"amount": 5, "currency": "EUR", "to": "x"}}),
                "metadata.custom_rules.referral_reward",
            ),
            (
                json!({"reward_on": "login"}),
                "metadata.custom_rules.reward_on",
            ),
            (
                json!({"max_referrals": -1}),
                "metadata.custom_rules.max_referrals",
            ),
            (
                json!({"referral_velocity_per_hour": 1.5}),
                "metadata.custom_rules.referral_velocity_per_hour",
            ),
            (
                json!({"referral_checks": {"velocity": "no"}}),
                "metadata.custom_rules.referral_checks.velocity",
            ),
            (
                json!({"referral_checks": {"colour": true}}),
                "metadata.custom_rules.referral_checks.colour",
            ),
        ] {
            match Rules::from_metadata(&json!({ "custom_rules": bad })) {
                Err(ServiceError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{bad}: {other:?}"),
            }
        }
        Ok(())
    }
}
