//! The operations each service offers to patterns (one function per service, called where the
//! [`Provider`](crate::Provider) builds it), and the patterns the node ships
//! ([`builtin_patterns`]).
//!
//! An operation is a thin adapter: it reads its input as the service method's own request
//! type (unknown fields refused) and calls the method as the step's caller, so a step is
//! authorised and checked exactly like the same call over REST or gRPC.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::model::{Operation, PatternDef};
use super::schema_of;
use crate::ServiceError;
use crate::campaign::{Campaign, CampaignService, NewCampaign};
use crate::commerce::{CommerceService, Order};
use crate::notification::{NotificationService, SendRequest, SendResult};
use crate::referral::{Referral, ReferralService};
use crate::talent::TalentService;
use crate::talent::model::{Booking, NewBooking, Slot, SlotQuery};

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ServiceError> {
    serde_json::from_value(input).map_err(|e| ServiceError::invalid("input", e.to_string()))
}

fn out<T: serde::Serialize>(v: &T) -> Result<Value, ServiceError> {
    serde_json::to_value(v).map_err(|e| ServiceError::invalid("output", e.to_string()))
}

/// An object schema with `props` (name → schema), all required but those in `optional`.
fn object(props: &[(&str, Value)], optional: &[&str]) -> Value {
    let required: Vec<&str> = props
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !optional.contains(k))
        .collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<serde_json::Map<_, _>>(),
    })
}

fn string() -> Value {
    json!({"type": "string"})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignRef {
    campaign: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Schedule {
    campaign: String,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
}

/// `campaign.create`, `campaign.schedule`, `campaign.unschedule`, `campaign.end`.
pub fn campaign(svc: CampaignService) -> Vec<Operation> {
    let campaign_ref = object(&[("campaign", string())], &[]);
    let (a, b, c, d) = (svc.clone(), svc.clone(), svc.clone(), svc);
    vec![
        Operation::new(
            "campaign.create",
            "campaign",
            "Creates a campaign (POST /api/campaigns).",
            (schema_of::<NewCampaign>(), schema_of::<Campaign>()),
            false,
            move |caller, _ctx, input| {
                let svc = a.clone();
                async move {
                    let new: NewCampaign = parse(input)?;
                    out(&svc.create(&caller, new).await?)
                }
            },
        ),
        Operation::new(
            "campaign.schedule",
            "campaign",
            "Sets a campaign's starts_at (and ends_at): the scheduler starts a draft then.",
            (
                object(
                    &[
                        ("campaign", string()),
                        ("starts_at", string()),
                        ("ends_at", string()),
                    ],
                    &["ends_at"],
                ),
                schema_of::<Campaign>(),
            ),
            true,
            move |caller, _ctx, input| {
                let svc = b.clone();
                async move {
                    let s: Schedule = parse(input)?;
                    let mut patch = json!({"starts_at": s.starts_at});
                    if let Some(end) = s.ends_at {
                        patch["ends_at"] = Value::String(end);
                    }
                    out(&svc.update(&caller, &s.campaign, &patch).await?)
                }
            },
        ),
        Operation::new(
            "campaign.unschedule",
            "campaign",
            "Clears a campaign's starts_at and ends_at (their scheduler jobs go).",
            (campaign_ref.clone(), schema_of::<Campaign>()),
            true,
            move |caller, _ctx, input| {
                let svc = c.clone();
                async move {
                    let r: CampaignRef = parse(input)?;
                    let patch = json!({"starts_at": null, "ends_at": null});
                    out(&svc.update(&caller, &r.campaign, &patch).await?)
                }
            },
        ),
        Operation::new(
            "campaign.end",
            "campaign",
            "Ends a campaign (DELETE /api/campaigns/{id}); one already ended is left as it is.",
            (campaign_ref, schema_of::<Campaign>()),
            true,
            move |caller, _ctx, input| {
                let svc = d.clone();
                async move {
                    let r: CampaignRef = parse(input)?;
                    match svc.end(&caller, &r.campaign).await {
                        Ok(c) => out(&c),
                        Err(ServiceError::Conflict { .. }) => {
                            out(&svc.get(&caller, &r.campaign).await?)
                        }
                        Err(e) => Err(e),
                    }
                }
            },
        ),
    ]
}

/// `notification.send`.
pub fn notification(svc: NotificationService) -> Vec<Operation> {
    vec![Operation::new(
        "notification.send",
        "notification",
        "Sends a template to users or a role (POST /api/notifications).",
        (schema_of::<SendRequest>(), schema_of::<SendResult>()),
        false,
        move |caller, _ctx, input| {
            let svc = svc.clone();
            async move {
                let req: SendRequest = parse(input)?;
                out(&svc.send(&caller, req).await?)
            }
        },
    )]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferralRef {
    referral_id: String,
}

/// `referral.check`, `referral.credit`.
pub fn referral(svc: ReferralService) -> Vec<Operation> {
    let input = object(&[("referral_id", string())], &[]);
    let (a, b) = (svc.clone(), svc);
    vec![
        Operation::new(
            "referral.check",
            "referral",
            "Passes when a referral's fraud rules and terms allow its reward (held, rejected or not yet due: refused).",
            (input.clone(), schema_of::<Referral>()),
            true,
            move |caller, _ctx, input| {
                let svc = a.clone();
                async move {
                    let r: ReferralRef = parse(input)?;
                    out(&svc.check(&caller, &r.referral_id).await?)
                }
            },
        ),
        Operation::new(
            "referral.credit",
            "referral",
            "Credits a referral's reward to both sides through the commerce ledger, once.",
            (input, schema_of::<Referral>()),
            true,
            move |caller, _ctx, input| {
                let svc = b.clone();
                async move {
                    let r: ReferralRef = parse(input)?;
                    out(&svc.credit(&caller, &r.referral_id).await?)
                }
            },
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Availability {
    talent_id: String,
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookRequest {
    talent_id: String,
    start: String,
    end: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingRef {
    booking_id: String,
}

/// `talent.check_availability`, `talent.book`, `talent.confirm`, `talent.cancel`.
pub fn talent(svc: TalentService) -> Vec<Operation> {
    let booking_ref = object(&[("booking_id", string())], &[]);
    let (a, b, c, d) = (svc.clone(), svc.clone(), svc.clone(), svc);
    vec![
        Operation::new(
            "talent.check_availability",
            "talent",
            "Passes when the talent is free for the whole of start..end (refused otherwise).",
            (
                object(
                    &[
                        ("talent_id", string()),
                        ("start", string()),
                        ("end", string()),
                    ],
                    &[],
                ),
                schema_of::<Slot>(),
            ),
            true,
            move |caller, _ctx, input| {
                let svc = a.clone();
                async move {
                    let q: Availability = parse(input)?;
                    let start = crate::time::parse_rfc3339("start", &q.start)?;
                    let end = crate::time::parse_rfc3339("end", &q.end)?;
                    let minutes = u32::try_from((end - start) / 60_000)
                        .map_err(|_| ServiceError::invalid("end", "not after start"))?;
                    let query = SlotQuery {
                        from: q.start.clone(),
                        to: q.end.clone(),
                        duration_minutes: minutes,
                    };
                    let slots = svc.free_slots(&caller, &q.talent_id, &query).await?;
                    let free = slots.into_iter().find(|s| {
                        crate::time::parse_rfc3339("start", &s.start).ok() == Some(start)
                    });
                    match free {
                        Some(slot) => out(&slot),
                        None => Err(ServiceError::Conflict {
                            message: format!(
                                "talent {} is not free from {} to {}",
                                q.talent_id, q.start, q.end
                            ),
                        }),
                    }
                }
            },
        ),
        Operation::new(
            "talent.book",
            "talent",
            "Books a talent for the caller: a requested booking (POST /api/talent/profiles/{id}/bookings).",
            (
                object(
                    &[
                        ("talent_id", string()),
                        ("start", string()),
                        ("end", string()),
                        ("note", string()),
                        ("country", string()),
                    ],
                    &["note", "country"],
                ),
                schema_of::<Booking>(),
            ),
            false,
            move |caller, _ctx, input| {
                let svc = b.clone();
                async move {
                    let r: BookRequest = parse(input)?;
                    let new = NewBooking {
                        start: r.start,
                        end: r.end,
                        note: r.note,
                        country: r.country,
                    };
                    out(&svc.book(&caller, &r.talent_id, new).await?)
                }
            },
        ),
        Operation::new(
            "talent.confirm",
            "talent",
            "Confirms a requested booking, placing the client's order for the talent's rate.",
            (booking_ref.clone(), schema_of::<Booking>()),
            true,
            move |caller, _ctx, input| {
                let svc = c.clone();
                async move {
                    let r: BookingRef = parse(input)?;
                    out(&svc.confirm(&caller, &r.booking_id).await?)
                }
            },
        ),
        Operation::new(
            "talent.cancel",
            "talent",
            "Cancels a booking (and its pending order); one already cancelled is left as it is.",
            (booking_ref, schema_of::<Booking>()),
            true,
            move |caller, _ctx, input| {
                let svc = d.clone();
                async move {
                    let r: BookingRef = parse(input)?;
                    match svc.cancel(&caller, &r.booking_id).await {
                        Ok(b) => out(&b),
                        Err(ServiceError::Conflict { .. }) => {
                            out(&svc.get_booking(&caller, &r.booking_id).await?)
                        }
                        Err(e) => Err(e),
                    }
                }
            },
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRef {
    order_id: String,
}

/// `commerce.cancel_order`.
pub fn commerce(svc: CommerceService) -> Vec<Operation> {
    vec![Operation::new(
        "commerce.cancel_order",
        "commerce",
        "Cancels a pending order (POST /api/commerce/orders/{id}/cancel).",
        (object(&[("order_id", string())], &[]), schema_of::<Order>()),
        true,
        move |caller, _ctx, input| {
            let svc = svc.clone();
            async move {
                let r: OrderRef = parse(input)?;
                out(&svc.cancel_order(&caller, &r.order_id).await?)
            }
        },
    )]
}

/// The patterns every node ships: `campaign.launch`, `referral.reward`, `talent.book`.
///
/// # Panics
/// Never: the definitions are constants, and a test parses and validates each.
pub fn builtin_patterns() -> Vec<PatternDef> {
    let defs = [
        json!({
            "name": "campaign.launch",
            "description": "Creates a draft campaign, schedules its start (the scheduler activates it then) and tells its followers. Undone by unscheduling and ending it.",
            "input_schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "starts_at", "followers"],
                "properties": {
                    "name": {"type": "string"},
                    "slug": {"type": "string"},
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": "string", "format": "date-time"},
                    "metadata": {"type": "object"},
                    "followers": {"type": "array", "items": {"type": "string"}, "description": "user ids told of the launch"}
                }
            },
            "steps": [
                {"name": "create", "operation": "campaign.create",
                 "input": {"name": "$.input.name", "slug": "$.input.slug", "status": "draft", "metadata": "$.input.metadata"},
                 "compensate": {"operation": "campaign.end", "input": {"campaign": "$.steps.create.id"}}},
                {"name": "schedule", "operation": "campaign.schedule",
                 "input": {"campaign": "$.steps.create.id", "starts_at": "$.input.starts_at", "ends_at": "$.input.ends_at"},
                 "compensate": {"operation": "campaign.unschedule", "input": {"campaign": "$.steps.create.id"}}},
                {"name": "notify", "operation": "notification.send",
                 "input": {"template": "campaign.launched",
                           "variables": {"name": "$.steps.create.name", "starts_at": "$.steps.schedule.starts_at"},
                           "channels": ["in_app", "realtime"],
                           "recipients": {"user_ids": "$.input.followers"},
                           "campaign_id": "$.steps.create.id"}}
            ]
        }),
        json!({
            "name": "referral.reward",
            "description": "Checks a referral against its fraud rules and terms, credits both sides once through the commerce ledger, and tells the referee.",
            "input_schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["referral_id"],
                "properties": {"referral_id": {"type": "string"}}
            },
            "steps": [
                {"name": "check", "operation": "referral.check", "input": {"referral_id": "$.input.referral_id"}},
                {"name": "credit", "operation": "referral.credit", "input": {"referral_id": "$.steps.check.id"}},
                {"name": "notify", "operation": "notification.send",
                 "input": {"template": "referral.joined",
                           "variables": {"code": "$.steps.credit.code"},
                           "channels": ["in_app", "realtime"],
                           "recipients": {"user_ids": ["$.steps.credit.referee_id"]}},
                 "run_as": "system"}
            ]
        }),
        json!({
            "name": "talent.book",
            "description": "Instant booking: checks the talent is free, books the slot for the caller, confirms it on the talent's behalf (placing the caller's order for the talent's rate) and tells the caller. Undone by cancelling the booking, which cancels its order.",
            "input_schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["talent_id", "start", "end", "country"],
                "properties": {
                    "talent_id": {"type": "string"},
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                    "country": {"type": "string", "description": "the caller's billing country"},
                    "note": {"type": "string"}
                }
            },
            "steps": [
                {"name": "availability", "operation": "talent.check_availability",
                 "input": {"talent_id": "$.input.talent_id", "start": "$.input.start", "end": "$.input.end"}},
                {"name": "booking", "operation": "talent.book",
                 "input": {"talent_id": "$.input.talent_id", "start": "$.steps.availability.start", "end": "$.steps.availability.end",
                           "country": "$.input.country", "note": "$.input.note"},
                 "compensate": {"operation": "talent.cancel", "input": {"booking_id": "$.steps.booking.id"}, "run_as": "system"}},
                {"name": "order", "operation": "talent.confirm", "input": {"booking_id": "$.steps.booking.id"}, "run_as": "system"},
                {"name": "notify", "operation": "notification.send", "run_as": "system",
                 "input": {"template": "talent.booked",
                           "variables": {"start": "$.steps.order.start", "end": "$.steps.order.end", "order_id": "$.steps.order.order_id"},
                           "channels": ["in_app", "realtime"],
                           "recipients": {"user_ids": ["$.steps.order.client_id"]}}}
            ]
        }),
    ];
    defs.into_iter()
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect()
}
