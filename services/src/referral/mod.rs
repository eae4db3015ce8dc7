//! The referral service: users' referral codes (for one campaign or global), sign-ups
//! attributed to them, fraud rules that hold a reward for review, rewards credited once to
//! both sides through the commerce ledger, and stats. Tables `service_referral_code` and
//! `service_referral_referral`.
//!
//! # Rules
//! * Resource `referral`: `refer` (users) to create codes and read one's own codes,
//!   referrals and their stats; `manage` (campaign managers, admins) for every code and
//!   referral, reviews and campaign stats. Someone else's code or referral does not exist for
//!   a user (404).
//! * Sign-up: [`ReferralService::register`] is the platform's registration (REST
//!   `/api/auth/register`, gRPC `user.v0.UserService/Register`): without `referral_code` it is
//!   the user service's; with one, the code must exist and be active (else a 400 naming
//!   `referral_code`, and nobody is registered), then the account is created and the sign-up
//!   attributed to the code's owner.
//! * Terms: a campaign's `metadata.custom_rules` ([`model::Rules`]) — `referral_reward`
//!   (`amount` in minor units and `currency`, paid to each side), `reward_on` (`signup`,
//!   the default, or `first_paid_order`), `max_referrals` per referrer, the velocity limit,
//!   and which checks run. They are copied onto the referral at sign-up. A global code, or a
//!   campaign without `referral_reward`, attributes (`attributed`) and pays nothing.
//! * Fraud rules, each recorded with what it saw when it fires: `self_referral` (the same
//!   account, or the same e-mail after [`model::normalize_email`]), `velocity` (more than N
//!   sign-ups with the code in the hour, default 10), `same_address` / `same_device` (the
//!   referee's client address — without its port — or device fingerprint is the referrer's,
//!   recorded when the code was created, or another referee's of the referrer's codes in the
//!   campaign), `max_referrals`
//!   (the referrer has that many referrals in the campaign that were not rejected). A fired
//!   rule holds the referral (`held`) instead of paying; a reviewer approves it (it becomes
//!   `pending`, and is paid at once when its condition was met) or rejects it.
//! * Payment, exactly once: the reward is the ledger movement `referral:<id>` (kind
//!   `referral_reward`: `referral_rewards` +2×amount, `user:<referrer>` and `user:<referee>`
//!   −amount each: what the platform owes them), which commerce writes once per reference;
//!   then the referral turns `pending` → `rewarded` with a conditional update. Of concurrent
//!   triggers (sign-up, first paid order, approval) one writes the movement and one marks the
//!   referral; a node that stops between the two leaves it `pending` with its movement
//!   written, and approving it again completes it without paying twice.
//! * Only `held` referrals are reviewed: `pending` ones can only become `rewarded`, so a
//!   rejection never races a payment.
//! * The referrer is told (in-app and real time, templates `referral.rewarded` and
//!   `referral.held`) after the change committed; a message that cannot be sent is logged.
//! * Audit rows, in the transaction of each change: `referral.code_create`,
//!   `referral.code_deactivate` (entity `referral_code`), `referral.attribute`,
//!   `referral.convert`, `referral.approve`, `referral.reject`, `referral.reward` (entity
//!   `referral`); the reward's ledger movement is commerce's `commerce.movement`.
//!
//! # Layout
//! [`model`]: records, inputs, rules; `repo`: storage; here: the service.

pub mod model;
mod repo;

pub use crate::page::Page;
pub use model::{
    Approval, Code, FraudRule, HoldReason, NewCode, Referral, ReferralFilter, ReferralStatus,
    Rejection, Reward, RewardOn, Rules, Stats,
};

use std::sync::{Arc, Weak};

use crate::babel::money;
use crate::campaign::CampaignService;
use crate::commerce::accounts;
use crate::commerce::{CommerceService, MovementKind, Order, OrderPaidListener};
use crate::notification::NotificationService;
use crate::page::{check_limit, paginate};
use crate::scheduler::Clock;
use crate::security::{Caller, Policies};
use crate::user::{NewUser, User, UserService};
use crate::{Database, ServiceError};
use repo::{CodeRow, Counts, Decided, ReferralRepo, SignUp};

/// The resource every policy check names.
const RESOURCE: &str = "referral";

/// Codes, attributed sign-ups, fraud holds, rewards and stats.
#[derive(Clone)]
pub struct ReferralService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReferralService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferralService").finish_non_exhaustive()
    }
}

struct Inner {
    repo: ReferralRepo,
    policies: Policies,
    users: UserService,
    commerce: CommerceService,
    campaigns: CampaignService,
    notifications: NotificationService,
    clock: Clock,
}

/// The services a referral service works through.
pub struct ReferralDeps {
    pub users: UserService,
    pub commerce: CommerceService,
    pub campaigns: CampaignService,
    pub notifications: NotificationService,
}

impl ReferralService {
    /// Builds the service and subscribes it to `deps.commerce`'s paid orders (the
    /// `first_paid_order` condition).
    pub fn new(db: Database, policies: Policies, deps: ReferralDeps) -> Self {
        Self::with_clock(db, policies, deps, Clock::system())
    }

    /// The same, reading the time from `clock`.
    pub fn with_clock(db: Database, policies: Policies, deps: ReferralDeps, clock: Clock) -> Self {
        let inner = Arc::new(Inner {
            repo: ReferralRepo::new(db),
            policies,
            users: deps.users,
            commerce: deps.commerce,
            campaigns: deps.campaigns,
            notifications: deps.notifications,
            clock,
        });
        inner
            .commerce
            .on_order_paid(Arc::new(PaidOrders(Arc::downgrade(&inner))));
        Self { inner }
    }

    fn manages(&self, caller: &Caller) -> bool {
        self.inner.policies.allows(caller, RESOURCE, "manage")
    }

    /// `Ok` when `caller` owns `owner`'s records or manages; otherwise the 404 of `entity`.
    fn may_see(
        &self,
        caller: &Caller,
        owner: &str,
        entity: &'static str,
        id: &str,
    ) -> Result<(), ServiceError> {
        if caller.user_id() == Some(owner) || self.manages(caller) {
            Ok(())
        } else {
            Err(repo::not_found(entity, id))
        }
    }

    // ----- codes -----------------------------------------------------------------------------

    /// Creates a code of the caller, for `new.campaign_id` (id or slug) or global. Needs
    /// `refer`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`code`, `device_fingerprint`, `campaign_id` of no
    /// campaign), [`ServiceError::Duplicate`] for a code taken, RBAC refusals (a caller that
    /// is not a user cannot own a code), database failures.
    pub async fn create_code(&self, caller: &Caller, new: NewCode) -> Result<Code, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let Some(owner) = caller.user_id() else {
            return Err(ServiceError::Forbidden {
                message: "only users own referral codes".to_owned(),
            });
        };
        let code = match new.code.as_deref() {
            Some(c) => model::normalize_code("code", c)?,
            None => model::generate_code(),
        };
        let device = model::validate_device(new.device_fingerprint.as_deref())?;
        let campaign_id = match new.campaign_id.as_deref() {
            None => None,
            Some(key) => match self.inner.campaigns.get(&Caller::system(), key).await {
                Ok(c) => Some(c.id),
                Err(ServiceError::NotFound { .. }) => {
                    return Err(ServiceError::invalid(
                        "campaign_id",
                        format!("no campaign {key:?}"),
                    ));
                }
                Err(e) => return Err(e),
            },
        };
        let now = self.inner.clock.now_ms();
        let row = CodeRow {
            code: Code {
                code: code.clone(),
                owner_id: owner.to_owned(),
                campaign_id,
                active: true,
                created_at: crate::time::rfc3339(now),
                updated_at: crate::time::rfc3339(now),
            },
            owner_addr: caller.addr.as_deref().map(model::host_of),
            owner_device: device,
        };
        let audit = caller.audit("referral.code_create", "referral_code", &code);
        self.inner.repo.create_code(&row, now, audit).await?;
        Ok(row.code)
    }

    /// Code `code` (the caller's own, or any for `manage`). Needs `refer`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (also someone else's code), RBAC refusals, database
    /// failures.
    pub async fn code(&self, caller: &Caller, code: &str) -> Result<Code, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let key = code.trim().to_ascii_uppercase();
        let c = self
            .inner
            .repo
            .code(&key)
            .await?
            .ok_or_else(|| repo::not_found("referral_code", code))?
            .code;
        self.may_see(caller, &c.owner_id, "referral_code", code)?;
        Ok(c)
    }

    /// Codes by code: the caller's own, or (for `manage`) of `owner` / everyone's, optionally
    /// of one campaign. Needs `refer`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad limit, [`ServiceError::Forbidden`] for another
    /// owner without `manage`, RBAC refusals, database failures.
    pub async fn codes(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        campaign: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Code>, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let limit = check_limit(limit)?;
        let owner = self.own_or_managed(caller, owner)?;
        let rows = self
            .inner
            .repo
            .codes(owner.as_deref(), campaign, cursor, limit)
            .await?;
        Ok(paginate(rows, limit, |c| c.code.clone()))
    }

    /// Which owner a list is of: `asked` for `manage` (everyone's when `None`), otherwise the
    /// caller itself.
    fn own_or_managed(
        &self,
        caller: &Caller,
        asked: Option<&str>,
    ) -> Result<Option<String>, ServiceError> {
        if self.manages(caller) {
            return Ok(asked.map(str::to_owned));
        }
        let me = caller.user_id().ok_or_else(|| ServiceError::Forbidden {
            message: "only users have referrals".to_owned(),
        })?;
        match asked {
            Some(other) if other != me => Err(ServiceError::Forbidden {
                message: "only managers list other users' referrals".to_owned(),
            }),
            _ => Ok(Some(me.to_owned())),
        }
    }

    /// Deactivates code `code` (one's own, or any for `manage`): sign-ups with it are refused
    /// from now on; its referrals stay. Deactivating an inactive code changes nothing. Needs
    /// `refer`.
    ///
    /// # Errors
    /// As [`ReferralService::code`].
    pub async fn deactivate_code(&self, caller: &Caller, code: &str) -> Result<Code, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let key = code.trim().to_ascii_uppercase();
        let audit = caller.audit("referral.code_deactivate", "referral_code", &key);
        self.inner
            .repo
            .deactivate(&key, self.inner.clock.now_ms(), audit, |c| {
                self.may_see(caller, &c.owner_id, "referral_code", code)
            })
            .await
    }

    /// The counts of code `code`'s referrals (one's own code, or any for `manage`). Needs
    /// `refer`.
    ///
    /// # Errors
    /// As [`ReferralService::code`].
    pub async fn code_stats(&self, caller: &Caller, code: &str) -> Result<Stats, ServiceError> {
        let c = self.code(caller, code).await?;
        self.inner.repo.code_stats(&c.code).await
    }

    /// The counts of campaign `campaign`'s referrals (id or slug). Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for no campaign, RBAC refusals, database failures.
    pub async fn campaign_stats(
        &self,
        caller: &Caller,
        campaign: &str,
    ) -> Result<Stats, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "manage")?;
        let c = self
            .inner
            .campaigns
            .get(&Caller::system(), campaign)
            .await?;
        self.inner.repo.campaign_stats(&c.id).await
    }

    // ----- referrals -------------------------------------------------------------------------

    /// Referral `id` (as its referrer, or any for `manage`). Needs `refer`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (also someone else's), RBAC refusals, database failures.
    pub async fn referral(&self, caller: &Caller, id: &str) -> Result<Referral, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let r = self
            .inner
            .repo
            .referral(id)
            .await?
            .ok_or_else(|| repo::not_found("referral", id))?;
        self.may_see(caller, &r.referrer_id, "referral", id)?;
        Ok(r)
    }

    /// Referrals by id matching `filter`: the caller's own as referrer, or (for `manage`)
    /// anyone's. Needs `refer`.
    ///
    /// # Errors
    /// As [`ReferralService::codes`].
    pub async fn referrals(
        &self,
        caller: &Caller,
        mut filter: ReferralFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Referral>, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "refer")?;
        let limit = check_limit(limit)?;
        filter.referrer_id = self.own_or_managed(caller, filter.referrer_id.as_deref())?;
        filter.code = filter.code.map(|c| c.trim().to_ascii_uppercase());
        let rows = self.inner.repo.referrals(&filter, cursor, limit).await?;
        Ok(paginate(rows, limit, |r| r.id.clone()))
    }

    /// Approves held referral `id`: it becomes `pending` and is paid at once when its
    /// condition was met. Approving a `pending` referral whose condition was met completes a
    /// payment a stopped node left half-done (never paying twice); one waiting for a first
    /// paid order that commerce has (a conversion a stopped node never reported) is converted
    /// and paid. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] (not held, nor pending and
    /// due), [`ServiceError::Invalid`] (`note`), RBAC refusals, database failures.
    pub async fn approve(
        &self,
        caller: &Caller,
        id: &str,
        body: Approval,
    ) -> Result<Referral, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "manage")?;
        let note = body
            .note
            .as_deref()
            .map(|n| model::validate_note("note", n))
            .transpose()?;
        let audit = caller.audit("referral.approve", "referral", id);
        let (r, changed) = self
            .inner
            .repo
            .decide(
                id,
                true,
                caller.actor(),
                note.as_deref(),
                self.inner.clock.now_ms(),
                audit,
            )
            .await?;
        // A first paid order whose conversion was lost (the node stopped before telling
        // this service) is found again in commerce.
        let r = if r.status == ReferralStatus::Pending && !due(&r) {
            self.inner.catch_up(r).await?
        } else {
            r
        };
        let completes = r.status == ReferralStatus::Pending && due(&r);
        if !(changed || completes) {
            return Err(not_held(&r, "approved"));
        }
        metrics::counter!("ovasabi_referral_reviews_total", "decision" => "approved").increment(1);
        if due(&r) {
            return self.inner.pay(&r).await;
        }
        Ok(r)
    }

    /// The verdict of referral `id`'s fraud rules and terms, for a step that pays it: the
    /// referral when it is rewarded or pending with its condition met. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Conflict`] saying why it cannot be paid (held by the rules it names,
    /// rejected, without a reward, or its condition not met yet), [`ServiceError::NotFound`],
    /// RBAC refusals, database failures.
    pub async fn check(&self, caller: &Caller, id: &str) -> Result<Referral, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "manage")?;
        let r = self
            .inner
            .repo
            .referral(id)
            .await?
            .ok_or_else(|| repo::not_found("referral", id))?;
        let why = match r.status {
            ReferralStatus::Rewarded => return Ok(r),
            ReferralStatus::Pending if due(&r) => return Ok(r),
            ReferralStatus::Pending => "its condition is not met yet".to_owned(),
            ReferralStatus::Held => format!(
                "it is held by the fraud rules: {}",
                r.reasons
                    .iter()
                    .map(|h| format!("{} ({})", h.rule.as_str(), h.detail))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ReferralStatus::Rejected => "it was rejected".to_owned(),
            ReferralStatus::Attributed => "its campaign rewards nothing".to_owned(),
        };
        Err(ServiceError::Conflict {
            message: format!("referral {id} cannot be rewarded: {why}"),
        })
    }

    /// Credits referral `id`'s reward to both sides (once, whatever the number of calls) when
    /// [`ReferralService::check`] passes. Needs `manage`.
    ///
    /// # Errors
    /// As [`ReferralService::check`]; ledger failures.
    pub async fn credit(&self, caller: &Caller, id: &str) -> Result<Referral, ServiceError> {
        let r = self.check(caller, id).await?;
        if r.status == ReferralStatus::Rewarded {
            return Ok(r);
        }
        self.inner.pay(&r).await
    }

    /// Rejects held referral `id`: no reward is paid. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] (not held),
    /// [`ServiceError::Invalid`] (`reason`), RBAC refusals, database failures.
    pub async fn reject(
        &self,
        caller: &Caller,
        id: &str,
        body: Rejection,
    ) -> Result<Referral, ServiceError> {
        self.inner.policies.require(caller, RESOURCE, "manage")?;
        let reason = model::validate_note("reason", &body.reason)?;
        let audit = caller.audit("referral.reject", "referral", id);
        let (r, changed) = self
            .inner
            .repo
            .decide(
                id,
                false,
                caller.actor(),
                Some(&reason),
                self.inner.clock.now_ms(),
                audit,
            )
            .await?;
        if !changed {
            return Err(not_held(&r, "rejected"));
        }
        metrics::counter!("ovasabi_referral_reviews_total", "decision" => "rejected").increment(1);
        Ok(r)
    }

    // ----- sign-up ---------------------------------------------------------------------------

    /// Registers `new` (see [`UserService::register`]); with `referral_code`, attributes the
    /// account to the code's owner, runs the fraud rules, and pays a reward due at sign-up.
    /// The account is created when its code is valid even if attributing it then fails
    /// (logged and counted: `ovasabi_referral_attribution_failures_total`).
    ///
    /// Every attempt with a code counts against the registration limit per client address
    /// before the code is looked up, so codes cannot be probed faster than accounts can be
    /// registered.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `referral_code` (malformed, unknown or inactive) or
    /// `device_fingerprint`; what [`UserService::register`] returns
    /// ([`ServiceError::RateLimited`] included).
    pub async fn register(&self, caller: &Caller, new: NewUser) -> Result<User, ServiceError> {
        let Some(raw) = new.referral_code.as_deref() else {
            return self.inner.users.register(caller, new).await;
        };
        // Counted before the code is looked up: an unknown code costs an attempt too.
        self.inner.users.count_registration(caller)?;
        let code = model::normalize_code("referral_code", raw)?;
        let device = model::validate_device(new.device_fingerprint.as_deref())?;
        let unknown =
            || ServiceError::invalid("referral_code", format!("no active referral code {code:?}"));
        let found = self.inner.repo.code(&code).await?.ok_or_else(unknown)?;
        if !found.code.active {
            return Err(unknown());
        }
        let rules = self
            .inner
            .rules_of(found.code.campaign_id.as_deref())
            .await?;
        let owner_email = match self
            .inner
            .users
            .get(&Caller::system(), &found.code.owner_id)
            .await
        {
            Ok(u) => Some(model::normalize_email(&u.email)),
            Err(ServiceError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let email = model::normalize_email(&new.email);
        let user = self.inner.users.register_counted(caller, new).await?;
        let signup = SignUp {
            id: uuid::Uuid::now_v7().to_string(),
            code,
            referee_id: user.id.clone(),
            referee_addr: caller.addr.as_deref().map(model::host_of),
            referee_device: device,
            now: self.inner.clock.now_ms(),
        };
        let fixed = FixedFacts {
            referee_email: email,
            owner_email,
        };
        if let Err(e) = self.inner.attribute(&signup, &rules, &fixed).await {
            metrics::counter!("ovasabi_referral_attribution_failures_total").increment(1);
            tracing::error!(error = %e, user = %user.id, code = %signup.code, "sign-up not attributed");
        }
        Ok(user)
    }
}

/// What a sign-up's rules compare besides the stored referrals.
struct FixedFacts {
    referee_email: String,
    owner_email: Option<String>,
}

/// Whether `r`'s condition was met and it has a reward to pay.
fn due(r: &Referral) -> bool {
    r.reward.is_some() && r.converted_at.is_some()
}

fn not_held(r: &Referral, verb: &str) -> ServiceError {
    ServiceError::Conflict {
        message: format!(
            "referral {} is {}: only held referrals are {verb}",
            r.id,
            r.status.as_str()
        ),
    }
}

/// The fraud rules that fire for a sign-up.
fn fired(
    rules: &Rules,
    code: &CodeRow,
    s: &SignUp,
    facts: &FixedFacts,
    counts: Counts,
) -> Vec<HoldReason> {
    let mut out = Vec::new();
    let mut fire = |rule: FraudRule, detail: String| out.push(HoldReason { rule, detail });
    let c = &rules.checks;
    if c.self_referral {
        if s.referee_id == code.code.owner_id {
            fire(
                FraudRule::SelfReferral,
                "the referee is the code's owner".to_owned(),
            );
        } else if facts.owner_email.as_deref() == Some(facts.referee_email.as_str()) {
            fire(
                FraudRule::SelfReferral,
                format!(
                    "the referee's e-mail is the referrer's once normalised ({})",
                    facts.referee_email
                ),
            );
        }
    }
    let limit = i64::from(rules.velocity_per_hour());
    if c.velocity && counts.last_hour >= limit {
        fire(
            FraudRule::Velocity,
            format!(
                "sign-up {} with the code within an hour; the limit is {limit}",
                counts.last_hour + 1
            ),
        );
    }
    if c.same_address
        && let Some(addr) = s.referee_addr.as_deref()
    {
        if code.owner_addr.as_deref() == Some(addr) {
            fire(
                FraudRule::SameAddress,
                format!("the referee's client address {addr} is the referrer's"),
            );
        } else if counts.same_addr > 0 {
            fire(
                FraudRule::SameAddress,
                format!(
                    "the referee's client address {addr} is that of {} other referee(s) of the referrer",
                    counts.same_addr
                ),
            );
        }
    }
    if c.same_device
        && let Some(device) = s.referee_device.as_deref()
    {
        if code.owner_device.as_deref() == Some(device) {
            fire(
                FraudRule::SameDevice,
                "the referee's device fingerprint is the referrer's".to_owned(),
            );
        } else if counts.same_device > 0 {
            fire(
                FraudRule::SameDevice,
                format!(
                    "the referee's device fingerprint is that of {} other referee(s) of the referrer",
                    counts.same_device
                ),
            );
        }
    }
    if c.max_referrals
        && let Some(max) = rules.max_referrals
        && counts.in_campaign >= i64::from(max)
    {
        fire(
            FraudRule::MaxReferrals,
            format!(
                "the referrer has {} referrals in the campaign; the limit is {max}",
                counts.in_campaign
            ),
        );
    }
    out
}

impl Inner {
    /// The terms of `campaign` (none for a global code or a campaign that is gone).
    async fn rules_of(&self, campaign: Option<&str>) -> Result<Rules, ServiceError> {
        let Some(id) = campaign else {
            return Ok(Rules::default());
        };
        match self.campaigns.get(&Caller::system(), id).await {
            Ok(c) => Ok(Rules::from_metadata(&c.metadata).unwrap_or_else(|e| {
                // Metadata is checked when it is written; rules stored before that check
                // existed pay nothing rather than something unintended.
                tracing::warn!(campaign = %c.id, error = %e, "referral rules unreadable");
                Rules::default()
            })),
            Err(ServiceError::NotFound { .. }) => Ok(Rules::default()),
            Err(e) => Err(e),
        }
    }

    async fn attribute(
        &self,
        s: &SignUp,
        rules: &Rules,
        facts: &FixedFacts,
    ) -> Result<Referral, ServiceError> {
        let audit = Caller::system().audit("referral.attribute", "referral", &s.id);
        let r = self
            .repo
            .attribute(s, audit, |code, counts| {
                // Deactivated since the registration checked it: the account stays, the
                // sign-up is not attributed.
                if !code.code.active {
                    return Err(ServiceError::Conflict {
                        message: format!("referral code {} was deactivated", code.code.code),
                    });
                }
                let reasons = fired(rules, code, s, facts, counts);
                let (status, reward_on, converted_at) = match (&rules.reward, reasons.is_empty()) {
                    (None, _) => (ReferralStatus::Attributed, None, None),
                    (Some(_), empty) => {
                        let on = rules.reward_on();
                        let converted = (on == RewardOn::Signup).then_some(s.now);
                        let status = if empty {
                            ReferralStatus::Pending
                        } else {
                            ReferralStatus::Held
                        };
                        (status, Some(on), converted)
                    }
                };
                Ok(Decided {
                    status,
                    reasons,
                    reward: rules.reward.clone(),
                    reward_on,
                    converted_at,
                })
            })
            .await?;
        metrics::counter!("ovasabi_referral_signups_total", "status" => r.status.as_str())
            .increment(1);
        for reason in &r.reasons {
            metrics::counter!("ovasabi_referral_fraud_rules_fired_total", "rule" => reason.rule.as_str())
                .increment(1);
        }
        tracing::info!(referral = %r.id, code = %r.code, referee = %r.referee_id, status = r.status.as_str(), "sign-up attributed");
        match r.status {
            ReferralStatus::Held => self.tell_held(&r).await,
            ReferralStatus::Pending if due(&r) => {
                // Attributed either way; an approval completes a payment that failed here.
                if let Err(e) = self.pay(&r).await {
                    metrics::counter!("ovasabi_referral_payment_failures_total").increment(1);
                    tracing::error!(error = %e, referral = %r.id, "referral reward not paid yet");
                }
            }
            _ => {}
        }
        Ok(r)
    }

    /// Credits `r`'s reward to both sides once and marks it rewarded; tells the referrer when
    /// this call made it so.
    async fn pay(&self, r: &Referral) -> Result<Referral, ServiceError> {
        let Some(reward) = r.reward.as_ref() else {
            return Ok(r.clone());
        };
        let entries = [
            (accounts::REFERRAL_REWARDS.to_owned(), 2 * reward.amount),
            (accounts::user(&r.referrer_id), -reward.amount),
            (accounts::user(&r.referee_id), -reward.amount),
        ];
        let credited = self
            .commerce
            .record_movement_once(
                &Caller::system(),
                &format!("referral:{}", r.id),
                MovementKind::ReferralReward,
                &reward.currency,
                &entries,
            )
            .await?;
        let audit = Caller::system().audit("referral.reward", "referral", &r.id);
        let (after, marked) = self
            .repo
            .rewarded(&r.id, &credited.movement, self.clock.now_ms(), audit)
            .await?;
        if marked {
            metrics::counter!("ovasabi_referral_rewards_total", "currency" => reward.currency.clone())
                .increment(1);
            tracing::info!(referral = %r.id, movement = %credited.movement, "referral rewarded");
            self.tell_rewarded(&after).await;
        }
        Ok(after)
    }

    /// `r` converted, when it waits for a first paid order that commerce has (paid,
    /// fulfilled or refunded since) but this service never heard of; `r` as it is otherwise.
    async fn catch_up(&self, r: Referral) -> Result<Referral, ServiceError> {
        if r.reward_on != Some(RewardOn::FirstPaidOrder) || r.converted_at.is_some() {
            return Ok(r);
        }
        use crate::commerce::{OrderFilter, OrderStatus};
        for status in [
            OrderStatus::Paid,
            OrderStatus::Fulfilled,
            OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded,
        ] {
            let filter = OrderFilter {
                user_id: Some(r.referee_id.clone()),
                status: Some(status),
            };
            let page = self
                .commerce
                .orders(&Caller::system(), filter, None, Some(1))
                .await?;
            if !page.items.is_empty() {
                let audit = Caller::system().audit("referral.convert", "referral", &r.id);
                let now = self.clock.now_ms();
                if let Some((after, _)) = self.repo.convert(&r.referee_id, now, audit).await? {
                    return Ok(after);
                }
            }
        }
        Ok(r)
    }

    /// The referee's first paid order: converts its referral and pays it when due.
    async fn order_paid(&self, order: &Order) -> Result<(), ServiceError> {
        let audit = Caller::system().audit("referral.convert", "referral", "");
        let Some((r, _converted)) = self
            .repo
            .convert(&order.user_id, self.clock.now_ms(), audit)
            .await?
        else {
            return Ok(());
        };
        // A retried trigger after a half-done payment pays too: the movement is written once.
        if r.status == ReferralStatus::Pending && due(&r) {
            self.pay(&r).await?;
        }
        Ok(())
    }

    async fn tell_rewarded(&self, r: &Referral) {
        let Some(reward) = r.reward.as_ref() else {
            return;
        };
        let referee = match self.users.get(&Caller::system(), &r.referee_id).await {
            Ok(u) => u.display_name,
            Err(_) => r.referee_id.clone(),
        };
        let amount = match money::currency("currency", &reward.currency) {
            Ok(c) => money::format(reward.amount, c, &self.locale_of(&r.referrer_id).await),
            Err(_) => format!("{} {}", reward.amount, reward.currency),
        };
        let vars = serde_json::json!({"amount": amount, "referee": referee, "code": r.code});
        self.tell(&r.referrer_id, "referral.rewarded", vars).await;
    }

    async fn tell_held(&self, r: &Referral) {
        let reasons = r
            .reasons
            .iter()
            .map(|h| h.rule.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let vars = serde_json::json!({"code": r.code, "reasons": reasons});
        self.tell(&r.referrer_id, "referral.held", vars).await;
    }

    async fn locale_of(&self, user: &str) -> unic_langid::LanguageIdentifier {
        self.users
            .get(&Caller::system(), user)
            .await
            .ok()
            .and_then(|u| u.locale)
            .and_then(|l| l.parse().ok())
            .unwrap_or_default()
    }

    /// Sends `template` to `user` in-app and in real time after the change committed (a
    /// failure is logged and counted by the notification service, never undoes the change).
    async fn tell(&self, user: &str, template: &str, vars: serde_json::Value) {
        self.notifications
            .tell("referral", template, vars, vec![user.to_owned()])
            .await;
    }
}

/// Commerce's paid orders, seen by the referral service (held weakly: the service owns the
/// subscription, not the other way round).
struct PaidOrders(Weak<Inner>);

impl OrderPaidListener for PaidOrders {
    fn order_paid<'a>(&'a self, order: &'a Order) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(inner) = self.0.upgrade() else {
                return;
            };
            if let Err(e) = inner.order_paid(order).await {
                metrics::counter!("ovasabi_referral_conversion_failures_total").increment(1);
                tracing::error!(error = %e, order = %order.id, user = %order.user_id, "referral conversion failed");
            }
        })
    }
}
