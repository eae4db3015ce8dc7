//! The notification service: notifications rendered from templates for one user, a list of
//! users or every user with a role, on one or more channels — `in_app` (the user's inbox),
//! `realtime` (a `notification` frame to the user's live sessions on every node), `email`
//! (SMTP, text and HTML parts) and `webhook` (a signed POST) — with the user's opt-outs, and
//! delivered through a durable outbox. Tables `service_notification_*`.
//!
//! # Rules
//! * Resource `notification`: `inbox` (every signed-in role) for the caller's own inbox,
//!   preferences and webhooks; `send` (campaign managers, admins) to send, to see any send's
//!   deliveries and to register campaign webhooks; `templates` (campaign managers,
//!   localization managers, admins) to write and read templates.
//! * A send is checked whole before anything is stored: the template exists in a locale of
//!   every recipient's fallback chain (the profile's `locale`, then its parents, then the
//!   default locale), every variable any of those templates uses is given, and every part
//!   renders; otherwise a 400 names what is wrong and nothing is sent.
//! * `transactional` notifications go on every channel asked for; `marketing` ones skip the
//!   channels a user opted out of (the skipped deliveries are recorded as `skipped`).
//! * One transaction per send writes the notifications, their outbox rows and the audit row
//!   (`notification.send`, entity `notification_batch`). Template writes, inbox changes,
//!   preference and webhook changes write their own audit rows in their transactions.
//! * Deliveries are drained by [`NotificationService::run_deliveries`] on every node (see
//!   [`delivery`]): at most one attempt at a time per delivery cluster-wide, retried with
//!   back-off, visible through [`NotificationService::deliveries`].
//!
//! # Layout
//! [`model`]: records and requests; [`template`]: MiniJinja checks and rendering;
//! [`delivery`]: transports and the worker; `repo`: storage.

pub mod delivery;
pub mod model;
mod repo;
pub mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

pub use crate::page::Page;
pub use delivery::{DeliveryConfig, RealtimeSink};
pub use model::{
    Category, Channel, Delivery, DeliveryStatus, InboxFilter, MarkedRead, NewWebhook, Notification,
    Preferences, PreferencesUpdate, Recipients, SendRequest, SendResult, Template, TemplateInput,
    UnreadCount, Webhook, WebhookOwner,
};

use crate::localization::{LocalizationService, locale};
use crate::page::{check_limit, paginate};
use crate::security::{Caller, Policies, Role};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use delivery::Transports;
use repo::{NewDelivery, NewNotification, NotificationRepo, Recipient};
use template::Compiled;

/// The resource every policy check names.
const RESOURCE: &str = "notification";
/// Longest campaign id a notification names.
const MAX_CAMPAIGN_ID_LEN: usize = 64;

/// Notification operations.
#[derive(Clone, Debug)]
pub struct NotificationService {
    repo: NotificationRepo,
    policies: Policies,
    localization: LocalizationService,
    transports: Arc<Transports>,
    /// Wakes this node's delivery worker after a send.
    wake: Arc<Notify>,
    /// The users who got a new inbox notification through this node (for watchers).
    arrivals: broadcast::Sender<String>,
}

impl NotificationService {
    /// # Errors
    /// [`ServiceError::Invalid`] naming `smtp_url` or `email_from` when they cannot be used.
    pub fn new(
        db: Database,
        policies: Policies,
        localization: LocalizationService,
        realtime: Arc<dyn RealtimeSink>,
        config: DeliveryConfig,
    ) -> Result<Self, ServiceError> {
        let (arrivals, _) = broadcast::channel(1024);
        Ok(Self {
            repo: NotificationRepo::new(db),
            policies,
            localization,
            transports: Arc::new(Transports::new(config, realtime)?),
            wake: Arc::new(Notify::new()),
            arrivals,
        })
    }

    // ----- templates -------------------------------------------------------------------------

    /// Creates or replaces the template (`key`, `locale`) after compiling every part. Returns
    /// it and whether it was created. Needs `templates`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (key, locale, subject, text, html with the
    /// parser's error and line); [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn put_template(
        &self,
        caller: &Caller,
        key: &str,
        locale: &str,
        input: TemplateInput,
    ) -> Result<(Template, bool), ServiceError> {
        self.policies.require(caller, RESOURCE, "templates")?;
        model::validate_key("key", key)?;
        let locale = locale::canonical("locale", locale)?;
        model::check_len("subject", &input.subject, 1..=model::MAX_SUBJECT_LEN)?;
        model::check_len("text", &input.text, 1..=model::MAX_BODY_LEN)?;
        if let Some(html) = &input.html {
            model::check_len("html", html, 1..=model::MAX_BODY_LEN)?;
        }
        let compiled = Compiled::new("", &input.subject, &input.text, input.html.as_deref())?;
        let at = now_ms();
        let t = Template {
            key: key.to_owned(),
            locale: locale.clone(),
            category: input.category,
            subject: input.subject,
            text: input.text,
            html: input.html,
            variables: compiled.variables(),
            updated_by: caller.actor().to_owned(),
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        let id = format!("{key}/{locale}");
        let audit = caller.audit("notification.template.put", "notification_template", &id);
        let (before, after) = self.repo.put_template(&t, at, audit).await?;
        Ok((after, before.is_none()))
    }

    /// The template (`key`, `locale`). Needs `templates`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Invalid`], RBAC refusals.
    pub async fn template(
        &self,
        caller: &Caller,
        key: &str,
        locale: &str,
    ) -> Result<Template, ServiceError> {
        self.policies.require(caller, RESOURCE, "templates")?;
        model::validate_key("key", key)?;
        let locale = locale::canonical("locale", locale)?;
        let t = self
            .repo
            .template(key, &locale)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                entity: "notification template",
                id: format!("{key}/{locale}"),
            })?;
        Ok(with_variables(t))
    }

    /// A page of templates (of one key, if given), by key then locale. Needs `templates`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (limit, cursor, key), RBAC refusals.
    pub async fn templates(
        &self,
        caller: &Caller,
        key: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Template>, ServiceError> {
        self.policies.require(caller, RESOURCE, "templates")?;
        let limit = check_limit(limit)?;
        if let Some(k) = key {
            model::validate_key("key", k)?;
        }
        let after = match cursor {
            Some(c) => Some(
                c.split_once('/')
                    .ok_or_else(|| ServiceError::invalid("cursor", "not a cursor of this list"))?,
            ),
            None => None,
        };
        let rows = self.repo.templates(key, after, limit + 1).await?;
        let rows = rows.into_iter().map(with_variables).collect();
        Ok(paginate(rows, limit, |t: &Template| {
            format!("{}/{}", t.key, t.locale)
        }))
    }

    /// Deletes the template (`key`, `locale`); returns it. Needs `templates`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Invalid`], RBAC refusals.
    pub async fn delete_template(
        &self,
        caller: &Caller,
        key: &str,
        locale: &str,
    ) -> Result<Template, ServiceError> {
        self.policies.require(caller, RESOURCE, "templates")?;
        model::validate_key("key", key)?;
        let locale = locale::canonical("locale", locale)?;
        let id = format!("{key}/{locale}");
        let audit = caller.audit("notification.template.delete", "notification_template", &id);
        self.repo.delete_template(key, &locale, audit).await
    }

    // ----- sending ---------------------------------------------------------------------------

    /// What other services send their users after a change committed: `template` with
    /// `variables` (a JSON object) to `users`, in-app and in real time, as the system. The
    /// change stands whatever happens here: a failure (no such user, a template an admin
    /// broke) is logged and counted in `ovasabi_notifications_not_told_total` by `service`,
    /// never returned.
    pub async fn tell(
        &self,
        service: &'static str,
        template: &str,
        variables: serde_json::Value,
        users: Vec<String>,
    ) {
        let req = SendRequest {
            template: template.to_owned(),
            variables: match variables {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
            channels: vec![Channel::InApp, Channel::Realtime],
            recipients: Recipients {
                user_ids: Some(users),
                role: None,
            },
            campaign_id: None,
        };
        if let Err(e) = self.send(&Caller::system(), req).await {
            metrics::counter!("ovasabi_notifications_not_told_total", "service" => service, "template" => template.to_owned())
                .increment(1);
            tracing::warn!(error = %e, service, template, "notification not sent");
        }
    }

    /// Renders the template for every recipient and queues the deliveries. Needs `send`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (template, channels, recipients,
    /// `variables.<name>` for a variable a template uses and the request lacks, campaign_id),
    /// [`ServiceError::NotFound`] for a template key with no template at all, RBAC refusals.
    pub async fn send(
        &self,
        caller: &Caller,
        req: SendRequest,
    ) -> Result<SendResult, ServiceError> {
        self.policies.require(caller, RESOURCE, "send")?;
        model::validate_key("template", &req.template)?;
        let channels: BTreeSet<Channel> = req.channels.iter().copied().collect();
        if channels.is_empty() {
            return Err(ServiceError::invalid(
                "channels",
                "name at least one channel",
            ));
        }
        if req.variables.len() > model::MAX_VARIABLES {
            return Err(ServiceError::invalid(
                "variables",
                format!("at most {} variables", model::MAX_VARIABLES),
            ));
        }
        if serde_json::to_string(&req.variables).map_or(usize::MAX, |s| s.len())
            > model::MAX_VARIABLES_BYTES
        {
            return Err(ServiceError::invalid(
                "variables",
                format!("at most {} bytes of JSON", model::MAX_VARIABLES_BYTES),
            ));
        }
        if let Some(c) = &req.campaign_id {
            model::check_len("campaign_id", c, 1..=MAX_CAMPAIGN_ID_LEN)?;
        }
        let (recipients, role) = self.resolve(&req.recipients).await?;

        // The template of each recipient's locale, compiled once per locale.
        let available: HashSet<String> = self
            .repo
            .template_locales(&req.template)
            .await?
            .into_iter()
            .collect();
        if available.is_empty() {
            return Err(ServiceError::NotFound {
                entity: "notification template",
                id: req.template.clone(),
            });
        }
        let default = locale::parse("default_locale", &self.localization.default_locale())?;
        let mut chosen: HashMap<Option<String>, String> = HashMap::new();
        let mut compiled: BTreeMap<String, (Template, Compiled)> = BTreeMap::new();
        for r in &recipients {
            if chosen.contains_key(&r.locale) {
                continue;
            }
            let requested = r
                .locale
                .as_deref()
                .and_then(|l| locale::parse("locale", l).ok())
                .unwrap_or_else(|| default.clone());
            let pick = locale::fallback_chain(&requested, &default)
                .into_iter()
                .map(|l| l.to_string())
                .find(|l| available.contains(l))
                .ok_or_else(|| {
                    let mut have: Vec<_> = available.iter().cloned().collect();
                    have.sort();
                    ServiceError::invalid(
                        "template",
                        format!(
                            "{} has no template for {requested} or its fallbacks (it has: {})",
                            req.template,
                            have.join(", ")
                        ),
                    )
                })?;
            if !compiled.contains_key(&pick) {
                let t = self
                    .repo
                    .template(&req.template, &pick)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound {
                        entity: "notification template",
                        id: format!("{}/{pick}", req.template),
                    })?;
                let c = Compiled::new("template.", &t.subject, &t.text, t.html.as_deref())?;
                if let Some(missing) = c.missing(&req.variables) {
                    return Err(ServiceError::invalid(
                        &format!("variables.{missing}"),
                        format!("the template {}/{pick} uses it", req.template),
                    ));
                }
                compiled.insert(pick.clone(), (t, c));
            }
            chosen.insert(r.locale.clone(), pick);
        }

        // Opt-outs (marketing only) and webhooks.
        let user_filter = match &req.recipients.user_ids {
            Some(_) => None,
            None => role.as_deref(),
        };
        let mut opted_out: HashSet<(String, String)> = HashSet::new();
        let mut webhooks: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let category_of = |pick: &str| compiled.get(pick).map(|(t, _)| t.category);
        let any_marketing = compiled
            .values()
            .any(|(t, _)| t.category == Category::Marketing);
        if any_marketing {
            match user_filter {
                Some(role) => opted_out.extend(self.repo.opt_outs(None, Some(role)).await?),
                None => {
                    for r in &recipients {
                        opted_out.extend(self.repo.opt_outs(Some(&r.id), None).await?);
                    }
                }
            }
        }
        if channels.contains(&Channel::Webhook) {
            match user_filter {
                Some(role) => {
                    for (id, user, url) in self.repo.webhooks_of_role(role).await? {
                        webhooks.entry(user).or_default().push((id, url));
                    }
                }
                None => {
                    for r in &recipients {
                        let own = self.repo.webhooks(WebhookOwner::User, &r.id).await?;
                        webhooks.insert(
                            r.id.clone(),
                            own.into_iter()
                                .filter(|w| w.active)
                                .map(|w| (w.id, w.url))
                                .collect(),
                        );
                    }
                }
            }
        }
        let campaign_hooks: Vec<(String, String)> =
            match (&req.campaign_id, channels.contains(&Channel::Webhook)) {
                (Some(c), true) => self
                    .repo
                    .webhooks(WebhookOwner::Campaign, c)
                    .await?
                    .into_iter()
                    .filter(|w| w.active)
                    .map(|w| (w.id, w.url))
                    .collect(),
                _ => Vec::new(),
            };

        // Render everything before storing anything.
        let at = now_ms();
        let batch_id = uuid::Uuid::now_v7().to_string();
        let data = serde_json::Value::Object(req.variables.clone());
        let channel_list: Vec<Channel> = channels.iter().copied().collect();
        let mut batch = Vec::with_capacity(recipients.len());
        let (mut deliveries, mut skipped) = (0u64, 0u64);
        for r in &recipients {
            let pick = chosen
                .get(&r.locale)
                .map(String::as_str)
                .unwrap_or_default();
            let Some((t, c)) = compiled.get(pick) else {
                continue;
            };
            let user = serde_json::json!({
                "id": r.id, "username": r.username, "display_name": r.display_name,
            });
            let rendered = c.render(&req.variables, &user)?;
            let marketing = category_of(pick) == Some(Category::Marketing);
            let allows = |ch: Channel| {
                !(marketing && opted_out.contains(&(r.id.clone(), ch.as_str().to_owned())))
            };
            let id = uuid::Uuid::now_v7().to_string();
            let mut rows = Vec::new();
            let mut queue = |channel: Channel, target: String, webhook_id: Option<String>| {
                let (status, note) = if !allows(channel) {
                    (
                        DeliveryStatus::Skipped,
                        Some("the user opted out of this channel".to_owned()),
                    )
                } else if channel == Channel::Email && !self.transports.email_configured() {
                    (
                        DeliveryStatus::Skipped,
                        Some("email is not configured (smtp_url)".to_owned()),
                    )
                } else {
                    (DeliveryStatus::Pending, None)
                };
                rows.push(NewDelivery {
                    id: uuid::Uuid::now_v7().to_string(),
                    channel,
                    target,
                    webhook_id,
                    status,
                    note,
                });
            };
            for &channel in &channel_list {
                match channel {
                    Channel::InApp => {}
                    Channel::Realtime => queue(channel, r.id.clone(), None),
                    Channel::Email => queue(channel, r.email.clone(), None),
                    Channel::Webhook => {
                        let own = webhooks.get(&r.id).map(Vec::as_slice).unwrap_or_default();
                        if own.is_empty() && campaign_hooks.is_empty() {
                            skipped += 1;
                        }
                        for (wid, url) in own.iter().chain(campaign_hooks.iter()) {
                            queue(channel, url.clone(), Some(wid.clone()));
                        }
                    }
                }
            }
            for d in &rows {
                if d.status == DeliveryStatus::Pending {
                    deliveries += 1;
                } else {
                    skipped += 1;
                }
            }
            let in_inbox = channels.contains(&Channel::InApp) && allows(Channel::InApp);
            if channels.contains(&Channel::InApp) && !in_inbox {
                skipped += 1;
            }
            batch.push(NewNotification {
                notification: Notification {
                    id,
                    batch_id: batch_id.clone(),
                    user_id: r.id.clone(),
                    template: req.template.clone(),
                    locale: t.locale.clone(),
                    category: t.category,
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    data: data.clone(),
                    channels: channel_list.clone(),
                    campaign_id: req.campaign_id.clone(),
                    read: false,
                    read_at: None,
                    created_by: caller.actor().to_owned(),
                    created_at: rfc3339(at),
                },
                in_inbox,
                at_ms: at,
                deliveries: rows,
            });
        }
        let result = SendResult {
            batch_id: batch_id.clone(),
            notifications: batch.len() as u64,
            deliveries,
            skipped,
        };
        let audit = caller
            .audit("notification.send", "notification_batch", &batch_id)
            .after(&serde_json::json!({
                "template": req.template,
                "channels": channel_list,
                "recipients": batch.len(),
                "role": role,
                "campaign_id": req.campaign_id,
                "deliveries": deliveries,
                "skipped": skipped,
            }));
        self.repo.insert_batch(&batch, audit).await?;
        metrics::counter!("ovasabi_notification_created_total").increment(batch.len() as u64);
        if deliveries > 0 {
            self.wake.notify_one();
        }
        for n in batch.iter().filter(|n| n.in_inbox) {
            let _ = self.arrivals.send(n.notification.user_id.clone());
        }
        Ok(result)
    }

    /// The recipients of a send (and the role, for a role send).
    async fn resolve(
        &self,
        r: &Recipients,
    ) -> Result<(Vec<Recipient>, Option<String>), ServiceError> {
        match (&r.user_ids, &r.role) {
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > model::MAX_USER_IDS {
                    return Err(ServiceError::invalid(
                        "recipients.user_ids",
                        format!("name 1-{} users", model::MAX_USER_IDS),
                    ));
                }
                let mut seen = HashSet::new();
                let mut out = Vec::with_capacity(ids.len());
                for (i, id) in ids.iter().enumerate() {
                    let field = format!("recipients.user_ids[{i}]");
                    model::check_len(&field, id, 1..=64)?;
                    if !seen.insert(id.as_str()) {
                        continue;
                    }
                    let user = self.repo.recipient(id).await?.ok_or_else(|| {
                        ServiceError::invalid(&field, format!("no active user {id:?}"))
                    })?;
                    out.push(user);
                }
                Ok((out, None))
            }
            (None, Some(role)) => {
                let role = Role::parse(role).map_err(|_| {
                    ServiceError::invalid("recipients.role", format!("unknown role {role:?}"))
                })?;
                let users = self
                    .repo
                    .recipients_with_role(role.as_str(), model::MAX_ROLE_FANOUT + 1)
                    .await?;
                if users.len() > model::MAX_ROLE_FANOUT {
                    return Err(ServiceError::invalid(
                        "recipients.role",
                        format!("more than {} users hold it", model::MAX_ROLE_FANOUT),
                    ));
                }
                Ok((users, Some(role.as_str().to_owned())))
            }
            _ => Err(ServiceError::invalid(
                "recipients",
                "give exactly one of user_ids and role",
            )),
        }
    }

    // ----- the inbox -------------------------------------------------------------------------

    fn inbox_user<'a>(&self, caller: &'a Caller) -> Result<&'a str, ServiceError> {
        self.policies.require(caller, RESOURCE, "inbox")?;
        caller.require_user()
    }

    /// A page of the caller's inbox, newest first. Needs `inbox`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (limit), RBAC refusals.
    pub async fn inbox(
        &self,
        caller: &Caller,
        filter: InboxFilter,
    ) -> Result<Page<Notification>, ServiceError> {
        let user = self.inbox_user(caller)?;
        let limit = check_limit(filter.limit)?;
        let rows = self
            .repo
            .inbox(
                user,
                filter.unread_only,
                filter.cursor.as_deref(),
                limit + 1,
            )
            .await?;
        Ok(paginate(rows, limit, |n: &Notification| n.id.clone()))
    }

    /// How many of the caller's inbox notifications are unread. Needs `inbox`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn unread(&self, caller: &Caller) -> Result<UnreadCount, ServiceError> {
        let user = self.inbox_user(caller)?;
        Ok(UnreadCount {
            unread: self.repo.unread(user).await?,
        })
    }

    async fn own(&self, user: &str, id: &str) -> Result<Notification, ServiceError> {
        match self.repo.notification_of(id, user).await? {
            Some((n, true)) => Ok(n),
            _ => Err(ServiceError::NotFound {
                entity: "notification",
                id: id.to_owned(),
            }),
        }
    }

    /// One of the caller's inbox notifications. Needs `inbox`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (also for another user's), RBAC refusals.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Notification, ServiceError> {
        let user = self.inbox_user(caller)?;
        self.own(user, id).await
    }

    /// Marks one of the caller's notifications read (again: no change); returns it.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals.
    pub async fn mark_read(&self, caller: &Caller, id: &str) -> Result<Notification, ServiceError> {
        let user = self.inbox_user(caller)?;
        self.own(user, id).await?;
        let audit = caller.audit("notification.read", "notification", id);
        self.repo.mark_read(id, user, now_ms(), audit).await?;
        self.own(user, id).await
    }

    /// Marks every unread notification of the caller's read.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn mark_all_read(&self, caller: &Caller) -> Result<MarkedRead, ServiceError> {
        let user = self.inbox_user(caller)?;
        let audit = caller.audit("notification.read_all", "notification_inbox", user);
        Ok(MarkedRead {
            marked: self.repo.mark_all_read(user, now_ms(), audit).await?,
        })
    }

    /// Removes one notification from the caller's inbox (its delivery record stays).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let user = self.inbox_user(caller)?;
        let audit = caller.audit("notification.delete", "notification", id);
        if self.repo.remove_from_inbox(id, user, audit).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                entity: "notification",
                id: id.to_owned(),
            })
        }
    }

    /// Waits for the caller's inbox notifications newer than `after` (`None`: newer than the
    /// newest now), at most `limit`, oldest first: returns at once if there are some, else
    /// when one arrives through this node, or after a poll of the database every
    /// `poll` (notifications sent through other nodes), or with an empty list after `wait`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn watch(
        &self,
        caller: &Caller,
        after: Option<String>,
        wait: Duration,
        poll: Duration,
    ) -> Result<(Vec<Notification>, Option<String>), ServiceError> {
        let user = self.inbox_user(caller)?.to_owned();
        let mut arrivals = self.arrivals.subscribe();
        let cursor = match after {
            Some(c) => Some(c),
            None => self.repo.inbox_latest(&user).await?,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let rows = self
                .repo
                .inbox_after(&user, cursor.as_deref().unwrap_or(""), 100)
                .await?;
            if !rows.is_empty() {
                let last = rows.last().map(|n| n.id.clone());
                return Ok((rows, last));
            }
            let until = (tokio::time::Instant::now() + poll).min(deadline);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    got = arrivals.recv() => match got {
                        Ok(u) if u == user => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(until).await;
                            break;
                        }
                    },
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok((Vec::new(), cursor));
            }
        }
    }

    // ----- preferences -----------------------------------------------------------------------

    /// The caller's channel opt-ins.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn preferences(&self, caller: &Caller) -> Result<Preferences, ServiceError> {
        let user = self.inbox_user(caller)?;
        self.repo.preferences(user).await
    }

    /// Changes the caller's opt-ins; returns them all.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for an empty change, RBAC refusals.
    pub async fn set_preferences(
        &self,
        caller: &Caller,
        update: PreferencesUpdate,
    ) -> Result<Preferences, ServiceError> {
        let user = self.inbox_user(caller)?;
        let changes = update.changes();
        if changes.is_empty() {
            return Err(ServiceError::invalid(
                "body",
                "name at least one of in_app, realtime, email and webhook",
            ));
        }
        let before = self.repo.preferences(user).await?;
        let mut after = before;
        for (c, on) in &changes {
            after.set(*c, *on);
        }
        let audit = caller
            .audit("notification.preferences", "notification_preferences", user)
            .before(&before)
            .after(&after);
        self.repo
            .set_preferences(user, &changes, now_ms(), audit)
            .await?;
        Ok(after)
    }

    // ----- webhooks --------------------------------------------------------------------------

    /// Registers a webhook for the caller's notifications, or (with `send`) for a campaign's.
    /// The answer carries the signing secret, shown only here.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (url, campaign_id), [`ServiceError::Conflict`] past
    /// [`model::MAX_WEBHOOKS`] per owner, RBAC refusals.
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        new: NewWebhook,
    ) -> Result<Webhook, ServiceError> {
        let user = self.inbox_user(caller)?;
        model::validate_url("url", &new.url)?;
        let (owner_type, owner_id) = match &new.campaign_id {
            Some(c) => {
                self.policies.require(caller, RESOURCE, "send")?;
                model::check_len("campaign_id", c, 1..=MAX_CAMPAIGN_ID_LEN)?;
                (WebhookOwner::Campaign, c.clone())
            }
            None => (WebhookOwner::User, user.to_owned()),
        };
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let secret = delivery::hex(&secret);
        let at = now_ms();
        let mut w = Webhook {
            id: uuid::Uuid::now_v7().to_string(),
            owner_type,
            owner_id,
            url: new.url,
            active: true,
            created_by: caller.actor().to_owned(),
            created_at: rfc3339(at),
            secret: None,
        };
        let audit = caller.audit("notification.webhook.create", "notification_webhook", &w.id);
        self.repo
            .insert_webhook(&w, &secret, at, model::MAX_WEBHOOKS, audit)
            .await?;
        w.secret = Some(secret);
        Ok(w)
    }

    /// The caller's webhooks, or (with `send`) a campaign's.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (campaign_id), RBAC refusals.
    pub async fn webhooks(
        &self,
        caller: &Caller,
        campaign_id: Option<&str>,
    ) -> Result<Vec<Webhook>, ServiceError> {
        let user = self.inbox_user(caller)?;
        match campaign_id {
            Some(c) => {
                self.policies.require(caller, RESOURCE, "send")?;
                model::check_len("campaign_id", c, 1..=MAX_CAMPAIGN_ID_LEN)?;
                self.repo.webhooks(WebhookOwner::Campaign, c).await
            }
            None => self.repo.webhooks(WebhookOwner::User, user).await,
        }
    }

    /// Deletes a webhook of the caller's (or, with `send`, a campaign's); its pending
    /// deliveries then fail.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (also for someone else's), RBAC refusals.
    pub async fn delete_webhook(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let user = self.inbox_user(caller)?;
        let not_found = || ServiceError::NotFound {
            entity: "webhook",
            id: id.to_owned(),
        };
        let w = self.repo.webhook(id).await?.ok_or_else(not_found)?;
        let may = match w.owner_type {
            WebhookOwner::User => w.owner_id == user,
            WebhookOwner::Campaign => self.policies.allows(caller, RESOURCE, "send"),
        };
        if !may {
            return Err(not_found());
        }
        let audit = caller.audit("notification.webhook.delete", "notification_webhook", id);
        self.repo.delete_webhook(&w, audit).await
    }

    // ----- deliveries ------------------------------------------------------------------------

    /// The deliveries of one notification: its user's own, or anyone's with `send`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        notification: &str,
    ) -> Result<Vec<Delivery>, ServiceError> {
        let user = self.inbox_user(caller)?;
        let sender = self.policies.allows(caller, RESOURCE, "send");
        let exists = if sender {
            self.repo.notification(notification).await?.is_some()
        } else {
            self.repo
                .notification_of(notification, user)
                .await?
                .is_some()
        };
        if !exists {
            return Err(ServiceError::NotFound {
                entity: "notification",
                id: notification.to_owned(),
            });
        }
        self.repo.deliveries(notification).await
    }

    /// A page of the deliveries of one send. Needs `send`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (limit), RBAC refusals.
    pub async fn batch_deliveries(
        &self,
        caller: &Caller,
        batch: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>, ServiceError> {
        self.policies.require(caller, RESOURCE, "send")?;
        let limit = check_limit(limit)?;
        let rows = self
            .repo
            .deliveries_of_batch(batch, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |d: &Delivery| d.id.clone()))
    }

    // ----- the worker ------------------------------------------------------------------------

    /// Claims one batch of due deliveries as `node`, delivers them concurrently and records
    /// the outcomes; returns how many it claimed.
    ///
    /// # Errors
    /// Database failures claiming (outcomes that cannot be recorded are logged: the lease
    /// runs out and the delivery is tried again).
    pub async fn deliver_due(&self, node: &str) -> Result<usize, ServiceError> {
        let t = &self.transports;
        let now = now_ms();
        let lease = i64::try_from(t.config.lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .repo
            .claim(now, now.saturating_add(lease), node, t.config.batch)
            .await?;
        let n = claimed.len();
        let work = claimed.iter().map(|c| async move {
            let outcome = t.deliver(&self.repo, c).await;
            if outcome.status == DeliveryStatus::Sent
                && let Ok(created) =
                    crate::time::parse_rfc3339("created_at", &c.delivery.created_at)
            {
                let secs = (now_ms() - created).max(0) as f64 / 1000.0;
                metrics::histogram!("ovasabi_notification_delivery_latency_seconds", "channel" => c.delivery.channel.as_str())
                    .record(secs);
            }
            match self.repo.complete(&c.delivery.id, c.fence, &outcome, now_ms()).await {
                Ok(true) => {}
                Ok(false) => tracing::info!(delivery = %c.delivery.id, "outcome not recorded: the claim was taken over"),
                Err(e) => tracing::warn!(delivery = %c.delivery.id, error = %e, "outcome not recorded; the delivery is tried again when its lease ends"),
            }
        });
        futures_util::future::join_all(work).await;
        Ok(n)
    }

    /// The deliveries waiting in the outbox.
    ///
    /// # Errors
    /// Database failures.
    pub async fn outbox_depth(&self) -> Result<u64, ServiceError> {
        self.repo.outbox_depth().await
    }

    /// Drains the outbox as `node` until `stop` resolves: a batch at a time while there is
    /// work, then waiting for a send through this node or the poll interval.
    pub async fn run_deliveries(&self, node: String, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let poll = self.transports.config.poll;
        let mut last_depth = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            let busy = match self.deliver_due(&node).await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox not read");
                    false
                }
            };
            if last_depth.elapsed() >= Duration::from_secs(5) {
                last_depth = tokio::time::Instant::now();
                if let Ok(depth) = self.outbox_depth().await {
                    metrics::gauge!("ovasabi_notification_outbox_depth").set(depth as f64);
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// The variables of a stored template (computed: they follow from its text).
fn with_variables(mut t: Template) -> Template {
    if let Ok(c) = Compiled::new("", &t.subject, &t.text, t.html.as_deref()) {
        t.variables = c.variables();
    }
    t
}
