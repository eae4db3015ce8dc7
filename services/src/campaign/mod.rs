//! The campaign service: CRUD over campaigns, their live state, and what they broadcast.
//! Every change is stored first, then handed to the [`Broadcaster`] (which `api` implements
//! with the engine), so a node that starts later finds the same campaigns and states.
//!
//! # Layout
//! * `model`: records and validation rules; `repo`: storage.

pub mod jobs;
pub mod model;
mod repo;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

pub use model::{Campaign, CampaignFilter, NewCampaign, Status};
pub use repo::CampaignRepo;

use crate::babel::BabelService;
use crate::cache::{MetadataCache, NoCache};
use crate::json::merge_patch;
use crate::nexus::{Event, EventBus};
use crate::notification::NotificationService;
pub use crate::page::{DEFAULT_PAGE, MAX_PAGE, Page};
use crate::page::{check_limit, paginate};
use crate::scheduler::{Job, Owner, Registration, SchedulerService};
use crate::security::{Caller, DeferredAudit, Policies};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use model::Editable;

/// A boxed, sendable future (keeps [`Broadcaster`] object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a running campaign needs from its stored record.
#[derive(Debug, Clone)]
pub struct LiveCampaign {
    pub id: String,
    pub frequency_hz: f64,
    pub client_events: bool,
    /// Tick frames carry the cluster-wide connection count (`metadata.features` has
    /// `"presence"`).
    pub presence: bool,
    /// Every session gets delta state frames (`metadata.features` has `"delta"`).
    pub delta: bool,
    /// The state to (re)start from, when it should replace the running one.
    pub state: Option<Box<RawValue>>,
}

impl LiveCampaign {
    fn of(c: &Campaign, with_state: bool) -> Self {
        Self {
            id: c.id.clone(),
            frequency_hz: c.frequency_hz(),
            client_events: c.client_events(),
            presence: c.presence(),
            delta: c.delta(),
            state: with_state.then(|| raw(&c.state)),
        }
    }
}

fn raw(v: &Value) -> Box<RawValue> {
    // A serialised `Value` is always valid JSON.
    RawValue::from_string(v.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Most events in one [`CampaignService::publish_batch`] (the engine's bound).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Most distinct event names a batch's audit row lists.
const MAX_AUDITED_NAMES: usize = 20;

/// Why a broadcast failed.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The campaign is not running on the engine.
    #[error("campaign is not live")]
    NotLive,
    /// The engine refused the input.
    #[error("{0}")]
    Rejected(String),
    /// The engine refused one input of several: `field` names it (`events[3]`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The bus cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// One event of a [`Broadcaster::publish_batch`].
#[derive(Debug, Clone)]
pub struct BatchEvent {
    pub name: String,
    pub data: Box<RawValue>,
    pub immediate: bool,
}

/// How services reach the broadcast engine (implemented by `api`).
pub trait Broadcaster: Send + Sync + 'static {
    /// Starts the campaign everywhere, or applies its new settings.
    fn upsert(&self, campaign: LiveCampaign) -> BoxFuture<'_, Result<(), BroadcastError>>;
    /// Ends the campaign everywhere (final frame, close 1000).
    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), BroadcastError>>;
    /// Replaces the campaign's broadcast state.
    fn state(&self, id: &str, state: Box<RawValue>) -> BoxFuture<'_, Result<(), BroadcastError>>;
    /// Publishes an event; returns its `seq`.
    fn publish(
        &self,
        id: &str,
        name: &str,
        data: Box<RawValue>,
        immediate: bool,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>>;
    /// Publishes events as one unit: consecutive `seq`s in their order, nothing else of the
    /// campaign between them, none published unless all are valid; returns the first and last
    /// `seq`.
    fn publish_batch(
        &self,
        id: &str,
        events: Vec<BatchEvent>,
    ) -> BoxFuture<'_, Result<std::ops::RangeInclusive<u64>, BroadcastError>>;
    /// The campaigns running on this node's engine.
    fn running(&self) -> Vec<String>;
    /// Sends a message to one user's sessions; returns the `seq` it carries.
    fn message(
        &self,
        id: &str,
        user: &str,
        name: &str,
        data: Box<RawValue>,
    ) -> BoxFuture<'_, Result<u64, BroadcastError>>;
}

impl From<BroadcastError> for ServiceError {
    fn from(e: BroadcastError) -> Self {
        match e {
            BroadcastError::NotLive => ServiceError::Conflict {
                message: "campaign is not live".to_owned(),
            },
            BroadcastError::Rejected(m) => ServiceError::Invalid {
                field: "body".to_owned(),
                message: m,
            },
            BroadcastError::Invalid { field, message } => ServiceError::Invalid { field, message },
            BroadcastError::Unavailable(m) => ServiceError::Broadcast {
                message: m,
                unavailable: true,
            },
        }
    }
}

/// Campaign operations.
#[derive(Clone)]
pub struct CampaignService {
    repo: CampaignRepo,
    broadcaster: Arc<dyn Broadcaster>,
    /// Changes to one campaign are stored and broadcast in the same order: a change holds its
    /// campaign's stripe from the write until the engine has it (striped by id, bounded).
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    cache: Arc<dyn MetadataCache>,
    policies: Policies,
    /// Where the audit rows of sent events and messages go without making the call wait on
    /// the database; without one they are written before the call returns.
    deferred_audit: Option<DeferredAudit>,
    /// Where the campaign's start, end and own jobs are registered (see [`jobs`]); without
    /// one, nothing starts or ends a campaign by itself.
    scheduler: Option<SchedulerService>,
    /// Where the market a campaign names must exist.
    markets: Option<BabelService>,
    /// Where `campaign.created` goes after commit.
    events: EventBus,
}

/// Lock stripes for per-campaign ordering.
const STRIPES: usize = 64;

impl CampaignService {
    pub fn new(db: Database, broadcaster: Arc<dyn Broadcaster>, policies: Policies) -> Self {
        Self {
            policies,
            repo: CampaignRepo::new(db),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            broadcaster,
            cache: Arc::new(NoCache),
            deferred_audit: None,
            scheduler: None,
            markets: None,
            events: EventBus::default(),
        }
    }

    /// Publishes `campaign.created` (payload: the campaign's `id`, `slug`, `name`, `status`,
    /// `starts_at`) on `events` after each commit.
    #[must_use]
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Checks that the market a campaign names (`metadata.service_specific.babel.market`)
    /// is one of `babel`'s.
    #[must_use]
    pub fn with_markets(mut self, babel: BabelService) -> Self {
        self.markets = Some(babel);
        self
    }

    /// Refuses a market code that names no market (400 naming the field).
    async fn check_market(&self, code: Option<&str>) -> Result<(), ServiceError> {
        let (Some(babel), Some(code)) = (&self.markets, code) else {
            return Ok(());
        };
        match babel.market(&Caller::system(), code).await {
            Ok(_) => Ok(()),
            Err(ServiceError::NotFound { .. }) => Err(ServiceError::invalid(
                model::MARKET_FIELD,
                format!("no market {code:?} (create it under /api/babel/markets first)"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Registers every campaign's jobs (its start, its end, `metadata.scheduling.jobs`) with
    /// `scheduler`, whose workers run them ([`CampaignService::run_start`], ...).
    #[must_use]
    pub fn with_scheduler(mut self, scheduler: SchedulerService) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Hands the audit rows of sent events and messages to `writer` (the node's; see
    /// [`crate::security::deferred`]) instead of writing them before the call returns.
    #[must_use]
    pub fn with_deferred_audit(mut self, writer: DeferredAudit) -> Self {
        self.deferred_audit = Some(writer);
        self
    }

    /// Keeps hot campaign records in `cache` (see [`CampaignService::cached`]).
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<dyn MetadataCache>) -> Self {
        self.cache = cache;
        self
    }

    /// The campaign with this id or slug, from the metadata cache when it has it (hot paths:
    /// publishing, WebSocket upgrades). Every change invalidates it; the REST reads use
    /// [`CampaignService::get`], which always reads the database.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`].
    pub async fn cached(&self, key: &str) -> Result<Campaign, ServiceError> {
        let cache_key = format!("campaign:{key}");
        if let Some(json) = self.cache.get(&cache_key).await
            && let Ok(c) = serde_json::from_str::<Campaign>(&json)
        {
            return Ok(c);
        }
        let c = self.find(key).await?;
        if let Ok(json) = serde_json::to_string(&c) {
            self.cache
                .put(&format!("campaign:{}", c.id), json.clone())
                .await;
            self.cache.put(&format!("campaign:{}", c.slug), json).await;
        }
        Ok(c)
    }

    /// Applies `edit` to the stored campaign (see [`CampaignRepo::update`]) under the
    /// campaign's stripe, and forgets its cached records. The caller keeps the returned guard
    /// until the engine has the change, so that stored and broadcast order agree.
    async fn change<F>(
        &self,
        caller: &Caller,
        action: &str,
        key: &str,
        edit: F,
    ) -> Result<(Campaign, Campaign, tokio::sync::MutexGuard<'_, ()>), ServiceError>
    where
        F: FnOnce(&mut Campaign) -> Result<(), ServiceError>,
    {
        let (id, order) = self.lock(key).await?;
        let audit = caller.audit(action, "campaign", &id);
        let (before, after) = self.repo.update(&id, audit, edit).await?;
        self.forget(&before, &after).await;
        Ok((before, after, order))
    }

    /// Forgets the cached records of a campaign before and after a change.
    async fn forget(&self, before: &Campaign, after: &Campaign) {
        let keys = [&before.id, &before.slug, &after.slug]
            .iter()
            .map(|k| format!("campaign:{k}"))
            .collect();
        self.cache.invalidate(keys).await;
    }

    /// The policies every method checks.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Creates a campaign; an active one starts broadcasting on every node. Needs `create`
    /// on `campaign`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (field named), [`ServiceError::Conflict`] for a taken slug,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewCampaign,
    ) -> Result<Campaign, ServiceError> {
        self.policies.require(caller, "campaign", "create")?;
        model::validate_name(&new.name)?;
        let slug = match new.slug {
            Some(s) => {
                model::validate_slug(&s)?;
                s
            }
            None => model::slugify(&new.name),
        };
        let metadata = new.metadata.unwrap_or_else(model::empty_object);
        model::validate_metadata(&metadata)?;
        self.check_market(model::market_of(&metadata)).await?;
        let state = new.state.unwrap_or_else(model::empty_object);
        model::validate_state(&state)?;
        let status = new.status.unwrap_or(Status::Active);
        if status == Status::Ended {
            return Err(ServiceError::invalid(
                "status",
                "a new campaign is draft or active",
            ));
        }
        let (starts, ends) =
            model::validate_schedule(new.starts_at.as_deref(), new.ends_at.as_deref())?;
        let at = now_ms();
        let mut c = Campaign {
            id: uuid::Uuid::now_v7().to_string(),
            slug,
            name: new.name.trim().to_owned(),
            status,
            metadata,
            state,
            starts_at: starts.map(rfc3339),
            ends_at: ends.map(rfc3339),
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        self.check_jobs(&c, Registration::Create)?;
        let _order = self.stripe(&c.id).lock().await;
        let audit = caller.audit("campaign.create", "campaign", &c.id).after(&c);
        self.repo.insert(&c, at, &audit).await?;
        c = self.find(&c.id).await?;
        self.sync_jobs(&c).await;
        if c.status == Status::Active {
            self.broadcaster.upsert(LiveCampaign::of(&c, true)).await?;
        }
        tracing::info!(campaign = %c.id, slug = %c.slug, status = c.status.as_str(), "campaign created");
        self.events.publish(Event {
            name: crate::nexus::CAMPAIGN_CREATED,
            id: c.id.clone(),
            payload: serde_json::json!({
                "id": c.id, "slug": c.slug, "name": c.name, "status": c.status.as_str(),
                "starts_at": c.starts_at,
            }),
        });
        Ok(c)
    }

    /// Resolves `key` (id or slug) and takes its campaign's stripe.
    async fn lock(
        &self,
        key: &str,
    ) -> Result<(String, tokio::sync::MutexGuard<'_, ()>), ServiceError> {
        let id = self.find(key).await?.id;
        let guard = self.stripe(&id).lock().await;
        Ok((id, guard))
    }

    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.stripes[(h.finish() % self.stripes.len() as u64) as usize]
    }

    /// The campaign with this id or slug. Needs `read` on `campaign`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn get(&self, caller: &Caller, key: &str) -> Result<Campaign, ServiceError> {
        self.policies.require(caller, "campaign", "read")?;
        self.find(key).await
    }

    /// The campaign with this id or slug, without a permission check (internal lookups).
    async fn find(&self, key: &str) -> Result<Campaign, ServiceError> {
        self.repo
            .get(key)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                entity: "campaign",
                id: key.to_owned(),
            })
    }

    /// A page of campaigns, oldest first. Needs `read` on `campaign`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a limit out of 1–500,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn list(
        &self,
        caller: &Caller,
        filter: &CampaignFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Campaign>, ServiceError> {
        self.policies.require(caller, "campaign", "read")?;
        let limit = check_limit(limit)?;
        for (field, v) in [("tag", &filter.tag), ("query", &filter.query)] {
            if let Some(v) = v
                && (v.is_empty() || v.chars().count() > model::MAX_FILTER_LEN)
            {
                return Err(ServiceError::invalid(
                    field,
                    format!("must have 1-{} characters", model::MAX_FILTER_LEN),
                ));
            }
        }
        let items = self.repo.list(filter, cursor, limit + 1).await?;
        Ok(paginate(items, limit, |c| c.id.clone()))
    }

    /// Every active campaign (for start-up).
    ///
    /// # Errors
    /// Database failures.
    pub async fn active(&self) -> Result<Vec<Campaign>, ServiceError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let filter = CampaignFilter {
                status: Some(Status::Active),
                ..CampaignFilter::default()
            };
            let page = self.repo.list(&filter, cursor.as_deref(), MAX_PAGE).await?;
            let full = page.len() == MAX_PAGE as usize;
            cursor = page.last().map(|c| c.id.clone());
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Applies a JSON merge patch to the campaign's `name`, `slug`, `status` and `metadata`.
    /// A new frequency retimes the running task; `status: "active"` starts a draft;
    /// `status: "ended"` ends it. Needs `update` on `campaign`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::NotFound`], [`ServiceError::Conflict`] (an
    /// ended campaign, a taken slug, a move back to draft, a new `ends_at` not after the
    /// stored `starts_at` or a new `starts_at` not before the stored `ends_at`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn update(
        &self,
        caller: &Caller,
        key: &str,
        patch: &Value,
    ) -> Result<Campaign, ServiceError> {
        self.policies.require(caller, "campaign", "update")?;
        if !patch.is_object() {
            return Err(ServiceError::invalid(
                "body",
                "must be a JSON object (merge patch)",
            ));
        }
        // The patch's own times, and their order when it gives both: a bad request (400)
        // whatever the campaign. Only an order that breaks with the stored time conflicts
        // with the campaign (409), below.
        let time = |key: &str| patch.get(key).and_then(Value::as_str);
        model::validate_schedule(time("starts_at"), time("ends_at"))?;
        // A market the patch names (a merge patch sets it as it is).
        if let Some(metadata) = patch.get("metadata").filter(|m| m.is_object()) {
            self.check_market(model::market_of(metadata)).await?;
        }
        // Ending through a patch is ending: the same permission and audit action as `end`.
        let ending = patch.get("status").and_then(Value::as_str) == Some("ended");
        if ending {
            self.policies.require(caller, "campaign", "delete")?;
        }
        let action = if ending {
            "campaign.end"
        } else {
            "campaign.update"
        };
        let (before, after, _order) = self
            .change(caller, action, key, |c| {
                if c.status == Status::Ended {
                    return Err(ServiceError::Conflict {
                        message: "campaign has ended".to_owned(),
                    });
                }
                let current = Editable {
                    name: c.name.clone(),
                    slug: c.slug.clone(),
                    status: c.status,
                    metadata: c.metadata.clone(),
                    starts_at: c.starts_at.clone(),
                    ends_at: c.ends_at.clone(),
                };
                let mut view = serde_json::to_value(&current)
                    .map_err(|e| ServiceError::invalid("body", e.to_string()))?;
                merge_patch(&mut view, patch);
                let next: Editable = serde_json::from_value(view)
                    .map_err(|e| ServiceError::invalid("body", e.to_string()))?;
                model::validate_name(&next.name)?;
                model::validate_slug(&next.slug)?;
                model::validate_metadata(&next.metadata)?;
                let (starts, ends) =
                    model::validate_schedule(next.starts_at.as_deref(), next.ends_at.as_deref())
                        .map_err(|e| ServiceError::Conflict {
                            message: format!("{e} (one of them is the campaign's current time)"),
                        })?;
                if c.status == Status::Active && next.status == Status::Draft {
                    return Err(ServiceError::Conflict {
                        message: "an active campaign cannot go back to draft".to_owned(),
                    });
                }
                c.name = next.name.trim().to_owned();
                c.slug = next.slug;
                c.status = next.status;
                c.metadata = next.metadata;
                c.starts_at = starts.map(rfc3339);
                c.ends_at = ends.map(rfc3339);
                self.check_jobs(c, Registration::Update)
            })
            .await?;
        if after.status == Status::Ended {
            self.remove_jobs(&after.id, None).await;
        } else if jobs::declared(&before) != jobs::declared(&after)
            || before.starts_at != after.starts_at
            || before.ends_at != after.ends_at
        {
            self.sync_jobs(&after).await;
        }
        match (before.status, after.status) {
            (_, Status::Ended) => self.broadcaster.end(&after.id).await?,
            (Status::Draft, Status::Active) => {
                self.broadcaster
                    .upsert(LiveCampaign::of(&after, true))
                    .await?
            }
            (Status::Active, Status::Active)
                if before.frequency_hz() != after.frequency_hz()
                    || before.client_events() != after.client_events()
                    || before.presence() != after.presence() =>
            {
                self.broadcaster
                    .upsert(LiveCampaign::of(&after, false))
                    .await?;
            }
            _ => {}
        }
        tracing::info!(campaign = %after.id, status = after.status.as_str(), frequency_hz = after.frequency_hz(), "campaign updated");
        Ok(after)
    }

    /// Ends the campaign: its sessions get a final frame and close 1000. Needs `delete` on
    /// `campaign`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] when it already ended,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn end(&self, caller: &Caller, key: &str) -> Result<Campaign, ServiceError> {
        self.policies.require(caller, "campaign", "delete")?;
        self.end_keeping(caller, key, None).await
    }

    /// Ends the campaign and removes its jobs but `running` (the job ending it).
    async fn end_keeping(
        &self,
        caller: &Caller,
        key: &str,
        running: Option<&str>,
    ) -> Result<Campaign, ServiceError> {
        let (before, after, _order) = self
            .change(caller, "campaign.end", key, |c| {
                if c.status == Status::Ended {
                    return Err(ServiceError::Conflict {
                        message: "campaign has already ended".to_owned(),
                    });
                }
                c.status = Status::Ended;
                Ok(())
            })
            .await?;
        self.remove_jobs(&after.id, running).await;
        if before.status == Status::Active {
            self.broadcaster.end(&after.id).await?;
        }
        tracing::info!(campaign = %after.id, "campaign ended");
        Ok(after)
    }

    /// Replaces the state (`replace`) or merges a JSON merge patch into it; the new state
    /// goes out with the next tick. Returns the new state. Needs `publish` on `broadcast`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a non-object state, [`ServiceError::NotFound`],
    /// [`ServiceError::Conflict`] for an ended campaign,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn change_state(
        &self,
        caller: &Caller,
        key: &str,
        body: &Value,
        replace: bool,
    ) -> Result<Value, ServiceError> {
        self.policies.require(caller, "broadcast", "publish")?;
        if !replace && !body.is_object() {
            return Err(ServiceError::invalid(
                "body",
                "must be a JSON object (merge patch)",
            ));
        }
        // A state, or a merge patch of one: an object without NUL either way.
        model::validate_state(body)?;
        let action = if replace {
            "campaign.replace_state"
        } else {
            "campaign.patch_state"
        };
        let (_, after, _order) = self
            .change(caller, action, key, |c| {
                if c.status == Status::Ended {
                    return Err(ServiceError::Conflict {
                        message: "campaign has ended".to_owned(),
                    });
                }
                if replace {
                    c.state = body.clone();
                } else {
                    merge_patch(&mut c.state, body);
                }
                Ok(())
            })
            .await?;
        if after.status == Status::Active {
            self.broadcaster.state(&after.id, raw(&after.state)).await?;
        }
        Ok(after.state)
    }

    /// Publishes an event to a live campaign; returns its `seq`. Needs `publish` on
    /// `broadcast`. Events are not stored in the database (the engine's history keeps them);
    /// once published, an audit row `campaign.publish` records who published what (name, seq,
    /// size of the data, not the data). With a deferred audit writer the call returns as soon
    /// as the event is sent, and the row is written in the background (kept while the database
    /// is down).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] when the campaign is not live,
    /// [`ServiceError::Invalid`] for a bad event name,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn publish(
        &self,
        caller: &Caller,
        key: &str,
        name: &str,
        data: Box<RawValue>,
        immediate: bool,
    ) -> Result<u64, ServiceError> {
        self.policies.require(caller, "broadcast", "publish")?;
        let c = self.live(key).await?;
        let bytes = data.get().len();
        let seq = self
            .broadcaster
            .publish(&c.id, name, data, immediate)
            .await?;
        self.audit_sent(caller.audit("campaign.publish", "campaign", &c.id).after(
            &serde_json::json!({"name": name, "seq": seq, "immediate": immediate, "bytes": bytes}),
        ))
        .await;
        Ok(seq)
    }

    /// Publishes up to [`MAX_BATCH_EVENTS`] events to a live campaign as one unit (see
    /// [`Broadcaster::publish_batch`]); returns the `seq` range. Needs `publish` on
    /// `broadcast`. One audit row `campaign.publish_batch` records the call (count, first and
    /// last seq, total data size, the distinct names), written before the call returns: one
    /// insert per batch is cheap next to the batch, and the caller knows it is durable. Should
    /// the database refuse it, the events are out already (an error would invite a retry that
    /// publishes them twice): the row goes to the deferred writer, which keeps retrying, or
    /// is logged.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the first bad event (`events[i]`) or the batch's size
    /// (nothing is published), otherwise as [`CampaignService::publish`].
    pub async fn publish_batch(
        &self,
        caller: &Caller,
        key: &str,
        events: Vec<BatchEvent>,
    ) -> Result<std::ops::RangeInclusive<u64>, ServiceError> {
        self.policies.require(caller, "broadcast", "publish")?;
        if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
            return Err(ServiceError::Invalid {
                field: "events".to_owned(),
                message: format!(
                    "a batch has 1 to {MAX_BATCH_EVENTS} events, not {}",
                    events.len()
                ),
            });
        }
        let c = self.live(key).await?;
        let bytes: usize = events.iter().map(|e| e.data.get().len()).sum();
        let count = events.len();
        let names: std::collections::BTreeSet<String> =
            events.iter().map(|e| e.name.clone()).collect();
        let immediate = events.iter().filter(|e| e.immediate).count();
        let seqs = self.broadcaster.publish_batch(&c.id, events).await?;
        let record = caller
            .audit("campaign.publish_batch", "campaign", &c.id)
            .after(&serde_json::json!({
                "count": count,
                "first_seq": seqs.start(),
                "last_seq": seqs.end(),
                "bytes": bytes,
                "immediate": immediate,
                "names": names.iter().take(MAX_AUDITED_NAMES).collect::<Vec<_>>(),
            }));
        if let Err(e) = self.repo.audit(&record).await {
            tracing::warn!(error = %e, campaign = %c.id, "batch audit row refused; deferring it");
            match &self.deferred_audit {
                Some(writer) => {
                    let _ = writer.push(record);
                }
                None => {
                    tracing::error!(error = %e, action = %record.action, entity = %record.entity_id, "audit row not written");
                }
            }
        }
        Ok(seqs)
    }

    /// Records the audit row of something already sent (an event, a message): hands it to the
    /// deferred writer when there is one, else writes it now. It cannot be taken back, so a
    /// failure to record it is logged (and, when deferred, counted), not returned.
    async fn audit_sent(&self, record: crate::security::AuditRecord) {
        if let Some(writer) = &self.deferred_audit {
            // A row the writer cannot take is counted and logged by it.
            let _ = writer.push(record);
            return;
        }
        if let Err(e) = self.repo.audit(&record).await {
            tracing::error!(error = %e, action = %record.action, entity = %record.entity_id, "audit row not written");
        }
    }

    /// Sends a message to every connection of `user` in a live campaign, and records it in the
    /// audit log (`campaign.message`) once sent.
    ///
    /// # Errors
    /// As [`CampaignService::publish`].
    pub async fn message(
        &self,
        caller: &Caller,
        key: &str,
        user: &str,
        name: &str,
        data: Box<RawValue>,
    ) -> Result<u64, ServiceError> {
        self.policies.require(caller, "broadcast", "publish")?;
        let c = self.live(key).await?;
        let bytes = data.get().len();
        let seq = self.broadcaster.message(&c.id, user, name, data).await?;
        self.audit_sent(
            caller.audit("campaign.message", "campaign", &c.id).after(
                &serde_json::json!({"user": user, "name": name, "seq": seq, "bytes": bytes}),
            ),
        )
        .await;
        Ok(seq)
    }

    /// The campaign, if it is active.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] when it is not active.
    pub async fn live(&self, key: &str) -> Result<Campaign, ServiceError> {
        let c = self.cached(key).await?;
        if c.status != Status::Active {
            return Err(ServiceError::Conflict {
                message: format!("campaign is {}, not active", c.status.as_str()),
            });
        }
        Ok(c)
    }

    /// Checks the jobs `c` declares (see [`jobs`]) as the scheduler would register them: its
    /// own jobs against the current time on create (a one-off time already past is refused),
    /// then the whole declaration.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`metadata.scheduling.jobs[0].cron`).
    fn check_jobs(&self, c: &Campaign, on: Registration) -> Result<(), ServiceError> {
        let Some(scheduler) = &self.scheduler else {
            return Ok(());
        };
        jobs::check_declared(&c.metadata)?;
        let entity = serde_json::to_value(c)
            .map_err(|e| ServiceError::invalid("metadata", e.to_string()))?;
        if on == Registration::Create {
            scheduler
                .validate(&jobs::own(&c.metadata), &entity, on)
                .map_err(|e| jobs::as_campaign_error(e, 0))?;
        }
        scheduler
            .validate(&jobs::declared(c), &entity, Registration::Update)
            .map_err(|e| jobs::as_campaign_error(e, jobs::builtin_count(c)))?;
        Ok(())
    }

    /// Registers the jobs `c` declares (replacing its earlier ones; a time already past is
    /// due at once). Runs after the campaign's change is stored: a failure here is logged and
    /// repaired by [`CampaignService::sync_all_jobs`] when a node starts.
    async fn sync_jobs(&self, c: &Campaign) {
        let Some(scheduler) = &self.scheduler else {
            return;
        };
        let result = match serde_json::to_value(c) {
            Ok(entity) => {
                scheduler
                    .register_entity_jobs(
                        &Caller::system(),
                        &Owner::new("campaign", &c.id),
                        &jobs::declared(c),
                        &entity,
                        Registration::Update,
                    )
                    .await
            }
            Err(e) => Err(ServiceError::invalid("campaign", e.to_string())),
        };
        if let Err(e) = result {
            tracing::warn!(campaign = %c.id, error = %e, "campaign jobs not registered (repaired at the next node start)");
        }
    }

    /// Removes the jobs of the campaign `id` (it ended) but `keep` (the job ending it).
    async fn remove_jobs(&self, id: &str, keep: Option<&str>) {
        let Some(scheduler) = &self.scheduler else {
            return;
        };
        let owner = Owner::new("campaign", id);
        if let Err(e) = scheduler
            .remove_entity_jobs_except(&Caller::system(), &owner, keep)
            .await
        {
            tracing::warn!(campaign = %id, error = %e, "jobs of an ended campaign not removed");
        }
    }

    /// Registers the jobs of every draft and active campaign (at node start: repairs a
    /// registration that failed after its campaign was stored, and registers campaigns
    /// stored before the scheduler existed). Unchanged jobs keep their state. Returns how
    /// many campaigns it went through.
    ///
    /// # Errors
    /// Database failures listing campaigns.
    pub async fn sync_all_jobs(&self) -> Result<usize, ServiceError> {
        if self.scheduler.is_none() {
            return Ok(0);
        }
        let mut seen = 0;
        for status in [Status::Draft, Status::Active] {
            let mut cursor: Option<String> = None;
            loop {
                let filter = CampaignFilter {
                    status: Some(status),
                    ..CampaignFilter::default()
                };
                let page = self.repo.list(&filter, cursor.as_deref(), MAX_PAGE).await?;
                let full = page.len() == MAX_PAGE as usize;
                cursor = page.last().map(|c| c.id.clone());
                for c in &page {
                    let _order = self.stripe(&c.id).lock().await;
                    // Re-read under the stripe: a change meanwhile registered its own jobs.
                    match self.find(&c.id).await {
                        Ok(now) if now.status != Status::Ended => self.sync_jobs(&now).await,
                        Ok(_) | Err(ServiceError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    seen += 1;
                }
                if !full {
                    break;
                }
            }
        }
        Ok(seen)
    }

    /// Runs the job `campaign.start` of a campaign: the draft becomes active and starts
    /// broadcasting (audited as `campaign.start` by `system`). A campaign that is no longer a
    /// draft, or is gone, has nothing to start: that is a success.
    ///
    /// # Errors
    /// Database and broadcast failures (the job is retried).
    pub async fn run_start(&self, job: &Job) -> Result<(), ServiceError> {
        let system = Caller::system();
        let result = self
            .change(&system, "campaign.start", &job.entity_id, |c| {
                if c.status != Status::Draft {
                    return Err(ServiceError::Conflict {
                        message: "campaign is no longer a draft".to_owned(),
                    });
                }
                c.status = Status::Active;
                Ok(())
            })
            .await;
        match result {
            Ok((_, after, _order)) => {
                self.broadcaster
                    .upsert(LiveCampaign::of(&after, true))
                    .await?;
                tracing::info!(campaign = %after.id, job = %job.id, "scheduled start");
                Ok(())
            }
            Err(ServiceError::Conflict { .. } | ServiceError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs the job `campaign.end`: the campaign ends (audited as `campaign.end` by
    /// `system`) and its other jobs are removed. One already ended, or gone, is a success.
    ///
    /// # Errors
    /// Database and broadcast failures (the job is retried).
    pub async fn run_end(&self, job: &Job) -> Result<(), ServiceError> {
        match self
            .end_keeping(&Caller::system(), &job.entity_id, Some(&job.id))
            .await
        {
            Ok(c) => {
                tracing::info!(campaign = %c.id, job = %job.id, "scheduled end");
                Ok(())
            }
            Err(ServiceError::Conflict { .. } | ServiceError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs a campaign's `notification.send` job: sends its payload's notification (as
    /// `system`) with the campaign's facts as the variable `campaign`. An ended or deleted
    /// campaign sends nothing.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a payload that is no send or a template that is missing
    /// or lacks a variable; delivery and database failures (the job is retried).
    pub async fn run_send(
        &self,
        job: &Job,
        notifications: &NotificationService,
    ) -> Result<(), ServiceError> {
        if job.entity_type != "campaign" {
            return Err(ServiceError::invalid(
                "entity_type",
                format!(
                    "{} jobs of {:?} entities are not run here",
                    jobs::SEND,
                    job.entity_type
                ),
            ));
        }
        let c = match self.find(&job.entity_id).await {
            Ok(c) if c.status != Status::Ended => c,
            Ok(_) | Err(ServiceError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let send: jobs::ScheduledSend = serde_json::from_value(job.payload.clone())
            .map_err(|e| ServiceError::invalid("payload", e.to_string()))?;
        let sent = notifications
            .send(&Caller::system(), send.for_campaign(&c))
            .await?;
        tracing::info!(campaign = %c.id, job = %job.id, batch = %sent.batch_id, notifications = sent.notifications, "scheduled notification sent");
        Ok(())
    }

    /// Makes the engine agree with the database: starts every active campaign that is not
    /// running (a start missed while the bus was down, or one the engine refused) and ends
    /// every running campaign that is no longer active (an end missed the same way: pub/sub
    /// delivers lifecycle messages at most once). Each fix re-reads the campaign under its
    /// stripe, so it cannot undo a change made meanwhile. Returns how many it fixed.
    ///
    /// # Errors
    /// Database failures listing the active campaigns.
    pub async fn reconcile(&self) -> Result<usize, ServiceError> {
        let active = self.active().await?;
        let wanted: std::collections::HashSet<&str> =
            active.iter().map(|c| c.id.as_str()).collect();
        let running: std::collections::HashSet<String> =
            self.broadcaster.running().into_iter().collect();
        let mut fixed = 0;
        for c in active.iter().filter(|c| !running.contains(&c.id)) {
            let _order = self.stripe(&c.id).lock().await;
            let now = self.find(&c.id).await?;
            if now.status == Status::Active
                && !self.broadcaster.running().contains(&now.id)
                && self
                    .broadcaster
                    .upsert(LiveCampaign::of(&now, true))
                    .await
                    .is_ok()
            {
                tracing::warn!(campaign = %now.id, "active campaign was not running: started");
                fixed += 1;
            }
        }
        for id in running.iter().filter(|id| !wanted.contains(id.as_str())) {
            let _order = self.stripe(id).lock().await;
            let still_active = match self.find(id).await {
                Ok(c) => c.status == Status::Active,
                Err(ServiceError::NotFound { .. }) => false,
                Err(e) => return Err(e),
            };
            if !still_active && self.broadcaster.end(id).await.is_ok() {
                tracing::warn!(campaign = %id, "running campaign is no longer active: ended");
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    /// Starts the broadcast task of every active campaign (at node start).
    ///
    /// # Errors
    /// Database or broadcast failures.
    pub async fn start_all(&self) -> Result<usize, ServiceError> {
        let active = self.active().await?;
        for c in &active {
            self.broadcaster.upsert(LiveCampaign::of(c, true)).await?;
        }
        Ok(active.len())
    }
}
