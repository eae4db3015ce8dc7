//! `notification.v0.NotificationService` over the notification service: templates, sends, the
//! caller's inbox (with `WatchInbox`, a server stream of the notifications that arrive),
//! preferences, webhooks and delivery records.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use proto::convert;
use proto::notification::v0 as pb;
use proto::notification::v0::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use serde_json::Value;
use services::notification::{
    Category, Channel, Delivery, InboxFilter, NewWebhook, Notification, Preferences,
    PreferencesUpdate, Recipients, SendRequest, Template, TemplateInput, Webhook,
};
use services::{Provider, ServiceError};
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> NotificationServiceServer<Notifications> {
    NotificationServiceServer::new(Notifications(state))
}

pub struct Notifications(GrpcState);

/// How long one wait of a `WatchInbox` stream lasts before it is renewed (and the caller's
/// token checked again).
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting `WatchInbox` looks in the database (notifications sent through other
/// nodes).
const WATCH_POLL: Duration = Duration::from_secs(1);
/// Notifications buffered for a slow `WatchInbox` reader (the next wait starts only when there
/// is room: nothing is lost, the cursor just stays behind).
const WATCH_BUFFER: usize = 16;

type Watch = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

fn category(s: &str) -> Result<Category, Status> {
    match s {
        "transactional" => Ok(Category::Transactional),
        "marketing" => Ok(Category::Marketing),
        _ => Err(status(ServiceError::Invalid {
            field: "category".to_owned(),
            message: "must be transactional or marketing".to_owned(),
        })),
    }
}

fn channels(names: &[String]) -> Result<Vec<Channel>, Status> {
    names
        .iter()
        .map(|c| Channel::parse("channels", c).map_err(status))
        .collect()
}

fn template_pb(t: Template) -> pb::Template {
    pb::Template {
        key: t.key,
        locale: t.locale,
        category: t.category.as_str().to_owned(),
        subject: t.subject,
        text: t.text,
        html: t.html,
        variables: t.variables,
        updated_by: t.updated_by,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

fn notification_pb(n: Notification) -> Result<pb::Notification, Status> {
    let data = match n.data {
        Value::Null => None,
        v => Some(convert::json_to_struct(convert::lossy(v)).map_err(internal_json)?),
    };
    Ok(pb::Notification {
        id: n.id,
        batch_id: n.batch_id,
        user_id: n.user_id,
        template: n.template,
        locale: n.locale,
        category: n.category.as_str().to_owned(),
        subject: n.subject,
        text: n.text,
        html: n.html,
        data,
        channels: n.channels.iter().map(|c| c.as_str().to_owned()).collect(),
        campaign_id: n.campaign_id,
        read: n.read,
        read_at: n.read_at,
        created_by: n.created_by,
        created_at: n.created_at,
    })
}

fn notifications_pb(items: Vec<Notification>) -> Result<Vec<pb::Notification>, Status> {
    items.into_iter().map(notification_pb).collect()
}

fn preferences_pb(p: Preferences) -> pb::Preferences {
    pb::Preferences {
        in_app: p.in_app,
        realtime: p.realtime,
        email: p.email,
        webhook: p.webhook,
    }
}

fn webhook_pb(w: Webhook) -> pb::Webhook {
    pb::Webhook {
        id: w.id,
        owner_type: w.owner_type.as_str().to_owned(),
        owner_id: w.owner_id,
        url: w.url,
        active: w.active,
        created_by: w.created_by,
        created_at: w.created_at,
        secret: w.secret,
    }
}

fn delivery_pb(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        notification_id: d.notification_id,
        channel: d.channel.as_str().to_owned(),
        target: d.target,
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        last_error: d.last_error,
        sent_at: d.sent_at,
        created_at: d.created_at,
    }
}

/// How long a watch may wait before the caller's token must be checked again: at most
/// [`WATCH_WAIT`], at most until the token expires.
///
/// # Errors
/// `UNAUTHENTICATED` once the token expired or was revoked.
fn watch_wait(
    services: &Provider,
    principal: Option<&engine::Principal>,
) -> Result<Duration, Status> {
    let Some(p) = principal else {
        return Ok(WATCH_WAIT);
    };
    services
        .users
        .revocations()
        .check(&p.user, p.generation)
        .map_err(status)?;
    if p.expires_at_ms == 0 {
        return Ok(WATCH_WAIT);
    }
    let left = p.expires_at_ms - services::time::now_ms();
    if left <= 0 {
        return Err(Status::unauthenticated(
            "the token expired: refresh it and watch again",
        ));
    }
    Ok(WATCH_WAIT.min(Duration::from_millis(left.unsigned_abs())))
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn put_template(
        &self,
        req: Request<pb::PutTemplateRequest>,
    ) -> Result<Response<pb::PutTemplateResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let input = TemplateInput {
            category: category(&r.category)?,
            subject: r.subject,
            text: r.text,
            html: r.html,
        };
        let (t, created) = self
            .0
            .services
            .notifications
            .put_template(&caller, &r.key, &r.locale, input)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PutTemplateResponse {
            template: Some(template_pb(t)),
            created,
        }))
    }

    async fn get_template(
        &self,
        req: Request<pb::TemplateRef>,
    ) -> Result<Response<pb::Template>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let t = self
            .0
            .services
            .notifications
            .template(&caller, &r.key, &r.locale)
            .await
            .map_err(status)?;
        Ok(Response::new(template_pb(t)))
    }

    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .notifications
            .templates(&caller, r.key.as_deref(), limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTemplatesResponse {
            items: page.items.into_iter().map(template_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn delete_template(
        &self,
        req: Request<pb::TemplateRef>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let t = self
            .0
            .services
            .notifications
            .delete_template(&caller, &r.key, &r.locale)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTemplateResponse {
            template: Some(template_pb(t)),
        }))
    }

    async fn send(
        &self,
        req: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResult>, Status> {
        use pb::send_request::Recipients as To;
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let variables = r
            .variables
            .map(convert::struct_to_map)
            .transpose()
            .map_err(|e| bad_json("variables", e))?
            .unwrap_or_default();
        let recipients = match r.recipients {
            Some(To::UserIds(u)) => Recipients {
                user_ids: Some(u.ids),
                role: None,
            },
            Some(To::Role(role)) => Recipients {
                user_ids: None,
                role: Some(role),
            },
            None => Recipients::default(),
        };
        let send = SendRequest {
            template: r.template,
            variables,
            channels: channels(&r.channels)?,
            recipients,
            campaign_id: r.campaign_id,
        };
        let result = self
            .0
            .services
            .notifications
            .send(&caller, send)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SendResult {
            batch_id: result.batch_id,
            notifications: result.notifications,
            deliveries: result.deliveries,
            skipped: result.skipped,
        }))
    }

    async fn list_inbox(
        &self,
        req: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = InboxFilter {
            unread_only: r.unread_only,
            limit: limit(r.limit),
            cursor: cursor(&r.cursor).map(str::to_owned),
        };
        let page = self
            .0
            .services
            .notifications
            .inbox(&caller, filter)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListInboxResponse {
            items: notifications_pb(page.items)?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_notification(
        &self,
        req: Request<pb::NotificationRef>,
    ) -> Result<Response<pb::Notification>, Status> {
        let caller = caller(&self.0, &req)?;
        let n = self
            .0
            .services
            .notifications
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(notification_pb(n)?))
    }

    async fn unread_count(
        &self,
        req: Request<pb::UnreadCountRequest>,
    ) -> Result<Response<pb::UnreadCountResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .notifications
            .unread(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UnreadCountResponse { unread: c.unread }))
    }

    async fn mark_read(
        &self,
        req: Request<pb::NotificationRef>,
    ) -> Result<Response<pb::Notification>, Status> {
        let caller = caller(&self.0, &req)?;
        let n = self
            .0
            .services
            .notifications
            .mark_read(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(notification_pb(n)?))
    }

    async fn mark_all_read(
        &self,
        req: Request<pb::MarkAllReadRequest>,
    ) -> Result<Response<pb::MarkAllReadResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let m = self
            .0
            .services
            .notifications
            .mark_all_read(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MarkAllReadResponse { marked: m.marked }))
    }

    async fn delete_notification(
        &self,
        req: Request<pb::NotificationRef>,
    ) -> Result<Response<pb::DeleteNotificationResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .notifications
            .delete(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteNotificationResponse {}))
    }

    type WatchInboxStream = Watch;

    async fn watch_inbox(
        &self,
        req: Request<pb::WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        let (caller, principal) = super::authenticate(&self.0, &req)?;
        let after = cursor(&req.get_ref().after).map(str::to_owned);
        let services = self.0.services.clone();
        // A first, immediate look: refuses a caller without `inbox` before the stream opens,
        // and fixes where the stream starts (the newest notification now, when no `after` is
        // given), so that a notification sent once the call has returned is never missed.
        let (first, start) = services
            .notifications
            .watch(&caller, after, Duration::ZERO, WATCH_POLL)
            .await
            .map_err(status)?;
        // No cursor: the inbox was empty, so everything that arrives from now on is new.
        let mut at = start.unwrap_or_default();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Notification, Status>>(WATCH_BUFFER);
        tokio::spawn(async move {
            let inbox = &services.notifications;
            let mut batch = first;
            loop {
                // Checked before anything is sent: a revoked or expired token gets no more.
                let wait = match watch_wait(&services, principal.as_ref()) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                for n in batch.drain(..) {
                    at.clone_from(&n.id);
                    let out = notification_pb(n);
                    let failed = out.is_err();
                    if tx.send(out).await.is_err() || failed {
                        return;
                    }
                }
                let next = inbox.watch(&caller, Some(at.clone()), wait, WATCH_POLL);
                let got = tokio::select! {
                    // The client went away (the stream was dropped): stop watching.
                    () = tx.closed() => break,
                    got = next => got,
                };
                match got {
                    Ok((items, _)) => batch = items,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        break;
                    }
                }
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|n| (n, rx)) },
            );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferences(
        &self,
        req: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let caller = caller(&self.0, &req)?;
        let p = self
            .0
            .services
            .notifications
            .preferences(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(preferences_pb(p)))
    }

    async fn update_preferences(
        &self,
        req: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let update = PreferencesUpdate {
            in_app: r.in_app,
            realtime: r.realtime,
            email: r.email,
            webhook: r.webhook,
        };
        let p = self
            .0
            .services
            .notifications
            .set_preferences(&caller, update)
            .await
            .map_err(status)?;
        Ok(Response::new(preferences_pb(p)))
    }

    async fn create_webhook(
        &self,
        req: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let w = self
            .0
            .services
            .notifications
            .create_webhook(
                &caller,
                NewWebhook {
                    url: r.url,
                    campaign_id: r.campaign_id,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(webhook_pb(w)))
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let items = self
            .0
            .services
            .notifications
            .webhooks(&caller, r.campaign_id.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListWebhooksResponse {
            items: items.into_iter().map(webhook_pb).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        req: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .notifications
            .delete_webhook(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let items = self
            .0
            .services
            .notifications
            .deliveries(&caller, &req.into_inner().notification_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            items: items.into_iter().map(delivery_pb).collect(),
        }))
    }

    async fn list_batch_deliveries(
        &self,
        req: Request<pb::ListBatchDeliveriesRequest>,
    ) -> Result<Response<pb::ListBatchDeliveriesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .notifications
            .batch_deliveries(&caller, &r.batch_id, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListBatchDeliveriesResponse {
            items: page.items.into_iter().map(delivery_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }
}
