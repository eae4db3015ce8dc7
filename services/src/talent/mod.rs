//! The talent service: profiles of users offering their time (headline, bio, skills, an
//! hourly rate as a SKU the commerce service prices, a time zone, public or private), their
//! weekly availability with dated exceptions, the free slots it leaves, and bookings by other
//! users. Tables `service_talent_profile` and `service_talent_booking`.
//!
//! # Rules
//! * Resource `talent`: `read` (everyone, anonymous callers too) for profiles, searches and
//!   free slots; `write` (users) for one's own profile and availability; `book` (users) to
//!   book a talent and move one's bookings along; `manage` (admins) to do all of it for any
//!   profile or booking. A user has at most one profile (a second is a 409).
//! * Private profiles are seen by their owner and by `manage` only: for anyone else they do
//!   not exist (404), in searches too.
//! * Availability: weekly rules (`mon` 09:00–17:00; several per day, not overlapping) and
//!   dated exceptions (a local date with no hours, or hours of its own), on the wall clock of
//!   the profile's time zone. [`TalentService::free_slots`] steps by the duration from the
//!   start of each span: a local start the clock skips (spring forward) is left out, one it
//!   repeats (fall back) is taken at its earlier instant; slots held by requested or
//!   confirmed bookings, and past ones, are left out. Windows of up to 62 days, durations of
//!   15 minutes to 8 hours.
//! * Bookings: `requested` → `confirmed` → `completed`, `declined` (from requested, by the
//!   talent), `cancelled` (from requested or confirmed, by either party). Another transition
//!   is a 409 naming both states. A booking that starts in the past, lies outside the
//!   availability, or overlaps a requested or confirmed booking of the talent is a 409 saying
//!   which; two overlapping bookings are never both held, whatever the concurrency (see
//!   `repo`).
//! * Orders (when built [`TalentService::with_orders`], as the `Provider` does): booking a
//!   talent with an hourly rate needs the client's billing `country`; confirming it first
//!   places the client's order for the booked minutes at that rate (commerce's
//!   `place_time_order`, priced by Babel for the country), then confirms the booking with the
//!   order's id in one transaction; a refused confirmation (a race lost, a state that does
//!   not allow it) cancels the order again, and a rate that cannot be priced (no product, no
//!   price in the country) is a 409 that leaves the booking requested. Cancelling a confirmed
//!   booking cancels its order while it is pending (a paid one is left to a manager's refund).
//!   Both parties are told of a confirmation (template `talent.booking_confirmed`, in-app and
//!   real time) after it committed.
//! * Every change writes its audit row in its transaction: `talent.create`, `talent.update`,
//!   `talent.availability`, `talent.delete` (entity `talent_profile`), `talent.book`,
//!   `talent.confirm`, `talent.decline`, `talent.cancel`, `talent.complete` (entity
//!   `talent_booking`).
//!
//! # Layout
//! * [`model`]: records, inputs and their rules, availability and slots; `repo`: storage;
//!   here: the service.

pub mod model;
mod repo;

pub use crate::page::Page;
pub use model::{
    Availability, Booking, BookingSide, BookingStatus, DateException, Hours, NewBooking,
    NewProfile, Profile, ProfileFilter, ProfileUpdate, Slot, SlotQuery, Visibility, WeeklyRule,
};

use crate::commerce::{CommerceService, TimeOrder};
use crate::notification::NotificationService;
use crate::page::{check_limit, paginate};
use crate::scheduler::Clock;
use crate::security::{Caller, Policies};
use crate::time::{parse_rfc3339, rfc3339};
use crate::{Database, ServiceError};
use repo::{BookingInsert, ProfileRow, TalentRepo};

/// The resource every policy check names.
const RESOURCE: &str = "talent";
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Profiles, availability, free slots and bookings.
#[derive(Clone, Debug)]
pub struct TalentService {
    repo: TalentRepo,
    policies: Policies,
    clock: Clock,
    orders: Option<Orders>,
}

/// Where confirmed bookings become orders, and how both parties are told.
#[derive(Clone, Debug)]
struct Orders {
    commerce: CommerceService,
    notifications: NotificationService,
}

impl TalentService {
    pub fn new(db: Database, policies: Policies) -> Self {
        Self {
            repo: TalentRepo::new(db),
            policies,
            clock: Clock::system(),
            orders: None,
        }
    }

    /// The same service turning each confirmed booking of a talent with an hourly rate into
    /// a commerce order, and telling both parties of every confirmation.
    #[must_use]
    pub fn with_orders(
        mut self,
        commerce: CommerceService,
        notifications: NotificationService,
    ) -> Self {
        self.orders = Some(Orders {
            commerce,
            notifications,
        });
        self
    }

    /// The same service reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn manages(&self, caller: &Caller) -> bool {
        self.policies.allows(caller, RESOURCE, "manage")
    }

    /// Whether `caller` sees `p`.
    fn sees(&self, caller: &Caller, p: &Profile) -> bool {
        p.visibility == Visibility::Public
            || caller.user_id() == Some(p.user_id.as_str())
            || self.manages(caller)
    }

    /// `Ok` when `caller` owns `p` or manages profiles; otherwise the 403 (or the 404 of a
    /// profile it does not see).
    fn may_change(&self, caller: &Caller, p: &Profile) -> Result<(), ServiceError> {
        if caller.user_id() == Some(p.user_id.as_str()) || self.manages(caller) {
            return Ok(());
        }
        if !self.sees(caller, p) {
            return Err(repo::not_found("talent_profile", &p.id));
        }
        Err(ServiceError::Forbidden {
            message: format!("talent profile {} belongs to another user", p.id),
        })
    }

    /// Creates the profile of the caller (or, for admins, of `new.user_id`). Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`user_id`, `headline`, `bio`, `skills[i]`,
    /// `hourly_rate_sku`, `timezone`), [`ServiceError::Duplicate`] when the user has a
    /// profile, [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`] (another user's
    /// id without `manage`), database failures.
    pub async fn create_profile(
        &self,
        caller: &Caller,
        new: NewProfile,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let user_id = match (new.user_id.as_deref(), caller.user_id()) {
            (Some(u), me) if Some(u) != me => {
                if !self.manages(caller) {
                    return Err(ServiceError::Forbidden {
                        message: "only admins create profiles for other users".to_owned(),
                    });
                }
                u.to_owned()
            }
            (_, Some(me)) => me.to_owned(),
            (Some(u), None) => u.to_owned(),
            (None, None) => {
                return Err(ServiceError::invalid(
                    "user_id",
                    "required when the caller is not a user",
                ));
            }
        };
        model::validate_id("user_id", &user_id)?;
        let tz = model::validate_timezone(&new.timezone)?;
        let now = self.clock.now_ms();
        let profile = Profile {
            id: uuid::Uuid::now_v7().to_string(),
            user_id,
            headline: model::validate_headline(&new.headline)?,
            bio: model::validate_bio(&new.bio)?,
            skills: model::validate_skills(&new.skills)?,
            hourly_rate_sku: match new.hourly_rate_sku.as_deref() {
                None | Some("") => None,
                Some(s) => Some(model::validate_sku(s)?),
            },
            timezone: tz.name().to_owned(),
            visibility: new.visibility,
            availability: Availability::default(),
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
        };
        let audit = caller.audit("talent.create", "talent_profile", &profile.id);
        self.repo.create(&profile, now, audit).await?;
        Ok(profile)
    }

    /// The profile `id`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (a private profile of someone else too),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn get_profile(&self, caller: &Caller, id: &str) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.visible(caller, id).await.map(|r| r.profile)
    }

    /// The profile of the user `user_id`. Needs `read`.
    ///
    /// # Errors
    /// As [`TalentService::get_profile`].
    pub async fn profile_of_user(
        &self,
        caller: &Caller,
        user_id: &str,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        match self.repo.of_user(user_id).await? {
            Some(r) if self.sees(caller, &r.profile) => Ok(r.profile),
            _ => Err(repo::not_found("talent_profile", user_id)),
        }
    }

    async fn visible(&self, caller: &Caller, id: &str) -> Result<ProfileRow, ServiceError> {
        match self.repo.get(id).await? {
            Some(r) if self.sees(caller, &r.profile) => Ok(r),
            _ => Err(repo::not_found("talent_profile", id)),
        }
    }

    /// Changes the fields `update` gives of profile `id` (an empty `hourly_rate_sku` clears
    /// it). Needs `write`, on one's own profile (or `manage`).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field, [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn update_profile(
        &self,
        caller: &Caller,
        id: &str,
        update: ProfileUpdate,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let headline = update
            .headline
            .as_deref()
            .map(model::validate_headline)
            .transpose()?;
        let bio = update.bio.as_deref().map(model::validate_bio).transpose()?;
        let skills = update
            .skills
            .as_deref()
            .map(model::validate_skills)
            .transpose()?;
        let sku = match update.hourly_rate_sku.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(s) => Some(Some(model::validate_sku(s)?)),
        };
        let timezone = update
            .timezone
            .as_deref()
            .map(|t| model::validate_timezone(t).map(|tz| tz.name().to_owned()))
            .transpose()?;
        let audit = caller.audit("talent.update", "talent_profile", id);
        self.repo
            .update(id, self.clock.now_ms(), audit, |before| {
                self.may_change(caller, before)?;
                let mut p = before.clone();
                if let Some(v) = headline {
                    p.headline = v;
                }
                if let Some(v) = bio {
                    p.bio = v;
                }
                if let Some(v) = skills {
                    p.skills = v;
                }
                if let Some(v) = sku {
                    p.hourly_rate_sku = v;
                }
                if let Some(v) = timezone {
                    p.timezone = v;
                }
                if let Some(v) = update.visibility {
                    p.visibility = v;
                }
                Ok(p)
            })
            .await
    }

    /// Replaces the availability of profile `id` (rules and exceptions, normalised: weekdays
    /// lower-case, exceptions by date). Needs `write`, on one's own profile (or `manage`).
    /// Bookings already made are kept.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`rules[1].end`, `rules[2]` overlapping
    /// another, `exceptions[0].date`, `exceptions[0].hours[1].start`, ...),
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`],
    /// database failures.
    pub async fn set_availability(
        &self,
        caller: &Caller,
        id: &str,
        availability: Availability,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let (availability, _) = model::check_availability(&availability)?;
        let audit = caller.audit("talent.availability", "talent_profile", id);
        self.repo
            .update(id, self.clock.now_ms(), audit, |before| {
                self.may_change(caller, before)?;
                let mut p = before.clone();
                p.availability = availability;
                Ok(p)
            })
            .await
    }

    /// Deletes profile `id` with its past bookings. Needs `write`, on one's own profile (or
    /// `manage`).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] while it has requested or
    /// confirmed bookings that have not ended, [`ServiceError::Unauthenticated`]/
    /// [`ServiceError::Forbidden`], database failures.
    pub async fn delete_profile(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let audit = caller.audit("talent.delete", "talent_profile", id);
        self.repo
            .delete(id, self.clock.now_ms(), audit, |p| {
                self.may_change(caller, p)
            })
            .await
    }

    /// A page of the profiles the caller sees (public ones, its own, all for `manage`), by
    /// id, matching `filter`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`skill`, `query`: 1–200 characters, `limit`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn search(
        &self,
        caller: &Caller,
        filter: &ProfileFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Profile>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let skill = filter
            .skill
            .as_deref()
            .map(|s| {
                model::validate_skill("skill", s)
                    .map(|s| crate::db::contains_pattern(&format!("\"{s}\"")))
            })
            .transpose()?;
        let text = match filter.query.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > 200 => {
                return Err(ServiceError::invalid("query", "must have 1-200 characters"));
            }
            Some(q) => Some(crate::db::contains_pattern(q)),
        };
        let rows = self
            .repo
            .list(
                caller.user_id(),
                self.manages(caller),
                skill.as_deref(),
                text.as_deref(),
                cursor,
                limit + 1,
            )
            .await?;
        Ok(paginate(rows, limit, |p| p.id.clone()))
    }

    /// The free slots of profile `id` of `query.duration_minutes`, starting at or after
    /// `query.from` (and now) and ending by `query.to`, in time order. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `from`, `to` (not after `from`, or more than 62 days
    /// after it) or `duration_minutes` (not 15–480), [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn free_slots(
        &self,
        caller: &Caller,
        id: &str,
        query: &SlotQuery,
    ) -> Result<Vec<Slot>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let (from, to, duration) = model::check_window(query)?;
        let row = self.visible(caller, id).await?;
        let p = &row.profile;
        let tz = model::validate_timezone(&p.timezone)?;
        let schedule = model::Schedule::of(&p.availability)?;
        let from = from.max(self.clock.now_ms());
        if from >= to {
            return Ok(Vec::new());
        }
        let held = self.repo.holding(id, from, to).await?;
        Ok(schedule
            .slots(tz, from, to, duration)
            .into_iter()
            .filter(|&(s, e)| !held.iter().any(|&(hs, he)| hs < e && s < he))
            .map(|(s, e)| model::slot(s, e))
            .collect())
    }

    /// Books profile `talent_id` for the caller: a `requested` booking. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `start`, `end` (not after start; 15 minutes to 8 hours
    /// long) or `note`; [`ServiceError::NotFound`]; [`ServiceError::Conflict`] when it starts
    /// in the past, lies outside the availability, overlaps a requested or confirmed booking
    /// of the talent (the message says which), or the talent is the caller;
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`]; database failures.
    pub async fn book(
        &self,
        caller: &Caller,
        talent_id: &str,
        new: NewBooking,
    ) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let client_id = caller.require_user()?.to_owned();
        let start = parse_rfc3339("start", &new.start)?;
        let end = parse_rfc3339("end", &new.end)?;
        if end <= start {
            return Err(ServiceError::invalid("end", "must be after start"));
        }
        if (end - start) % MINUTE_MS != 0 {
            return Err(ServiceError::invalid(
                "end",
                "must be a whole number of minutes after start",
            ));
        }
        model::validate_duration("end", (end - start) / MINUTE_MS)?;
        let note = model::validate_note(new.note.as_deref())?;
        let country = new
            .country
            .as_deref()
            .map(|c| crate::babel::model::validate_country("country", c).map(|()| c.to_owned()))
            .transpose()?;
        let now = self.clock.now_ms();
        if start < now {
            return Err(ServiceError::Conflict {
                message: format!(
                    "the booking starts in the past ({} is before now, {})",
                    rfc3339(start),
                    rfc3339(now)
                ),
            });
        }
        if start - now > model::MAX_BOOKING_AHEAD_DAYS * DAY_MS {
            return Err(ServiceError::invalid(
                "start",
                format!("must be within {} days", model::MAX_BOOKING_AHEAD_DAYS),
            ));
        }
        let insert = BookingInsert {
            id: uuid::Uuid::now_v7().to_string(),
            talent_id: talent_id.to_owned(),
            client_id,
            start_ms: start,
            end_ms: end,
            note,
            country,
        };
        let priced = self.orders.is_some();
        let audit = caller.audit("talent.book", "talent_booking", &insert.id);
        let booking = self
            .repo
            .book(&insert, now, audit, |row| {
                let p = &row.profile;
                if !self.sees(caller, p) {
                    return Err(repo::not_found("talent_profile", talent_id));
                }
                if p.user_id == insert.client_id {
                    return Err(ServiceError::Conflict {
                        message: "a talent cannot book their own profile".to_owned(),
                    });
                }
                if priced && p.hourly_rate_sku.is_some() && insert.country.is_none() {
                    return Err(ServiceError::invalid(
                        "country",
                        format!(
                            "talent {talent_id} has an hourly rate: the billing country prices \
                             the order of the booking"
                        ),
                    ));
                }
                let tz = model::validate_timezone(&p.timezone)?;
                if !model::Schedule::of(&p.availability)?.covers(tz, start, end) {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "{} to {} is outside the availability of talent {talent_id} ({})",
                            rfc3339(start),
                            rfc3339(end),
                            p.timezone
                        ),
                    });
                }
                Ok(())
            })
            .await?;
        Ok(booking)
    }

    /// The booking `id`, for its client, its talent, or `manage`. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (someone else's booking too),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn get_booking(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        match self.repo.get_booking(id).await? {
            Some(r) if self.party(caller, &r.booking).is_some() || self.manages(caller) => {
                Ok(r.booking)
            }
            _ => Err(repo::not_found("talent_booking", id)),
        }
    }

    /// Which side of `b` the caller is on.
    fn party(&self, caller: &Caller, b: &Booking) -> Option<BookingSide> {
        let me = caller.user_id()?;
        if me == b.talent_user_id {
            Some(BookingSide::Talent)
        } else if me == b.client_id {
            Some(BookingSide::Client)
        } else {
            None
        }
    }

    /// Moves booking `id` to `to` if the caller may: the talent confirms, declines and
    /// completes; either party cancels; `manage` does any.
    async fn transition(
        &self,
        caller: &Caller,
        id: &str,
        to: BookingStatus,
        action: &str,
        order_id: Option<&str>,
    ) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let audit = caller.audit(action, "talent_booking", id);
        let now = self.clock.now_ms();
        self.repo
            .transition(id, to, order_id, now, audit, |row| {
                let b = &row.booking;
                let manages = self.manages(caller);
                // Who may, first (a stranger learns nothing); then, for a transition the
                // state allows (the repository names both states otherwise), when.
                let started = now >= row.start_ms;
                if to == BookingStatus::Completed
                    && b.status.can_become(to)
                    && !started
                    && (manages || self.party(caller, b) == Some(BookingSide::Talent))
                {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "booking {id} cannot be completed before it starts ({})",
                            b.start
                        ),
                    });
                }
                self.may_move(caller, b, to)
            })
            .await
    }

    /// `Ok` when `caller` may move `b` to `to`: the talent (or `manage`) any way, the client
    /// only to `cancelled`; a stranger gets the 404 of a booking it does not see.
    fn may_move(
        &self,
        caller: &Caller,
        b: &Booking,
        to: BookingStatus,
    ) -> Result<(), ServiceError> {
        let manages = self.manages(caller);
        match self.party(caller, b) {
            None if !manages => Err(repo::not_found("talent_booking", &b.id)),
            Some(BookingSide::Client) if to != BookingStatus::Cancelled && !manages => {
                Err(ServiceError::Forbidden {
                    message: format!("only the talent may make booking {} {}", b.id, to.as_str()),
                })
            }
            _ => Ok(()),
        }
    }

    /// `requested` → `confirmed`, by the talent. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] naming both states,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`] (the client), database
    /// failures.
    pub async fn confirm(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        let Some(orders) = &self.orders else {
            return self
                .transition(caller, id, BookingStatus::Confirmed, "talent.confirm", None)
                .await;
        };
        self.policies.require(caller, RESOURCE, "book")?;
        // The order first (so that no booking is confirmed without it), once the caller is
        // known to be allowed; it is cancelled again when the confirmation is refused.
        let row = self
            .repo
            .get_booking(id)
            .await?
            .ok_or_else(|| repo::not_found("talent_booking", id))?;
        let b = &row.booking;
        self.may_move(caller, b, BookingStatus::Confirmed)?;
        let profile = self
            .repo
            .get(&b.talent_id)
            .await?
            .ok_or_else(|| repo::not_found("talent_profile", &b.talent_id))?
            .profile;
        let order = match (&profile.hourly_rate_sku, &b.country) {
            (Some(sku), Some(country)) if b.status == BookingStatus::Requested => {
                let minutes = u32::try_from((row.end_ms - row.start_ms) / MINUTE_MS).unwrap_or(0);
                let new = TimeOrder {
                    user_id: b.client_id.clone(),
                    country: country.clone(),
                    sku: sku.clone(),
                    minutes,
                    description: Some(profile.headline.clone()),
                    placed_for: Some(format!("talent_booking:{id}")),
                };
                match orders
                    .commerce
                    .place_time_order(&Caller::system(), new)
                    .await
                {
                    Ok(o) => Some(o),
                    Err(e @ (ServiceError::Invalid { .. } | ServiceError::NotFound { .. })) => {
                        return Err(ServiceError::Conflict {
                            message: format!(
                                "booking {id} cannot be confirmed: its order for the rate {sku} \
                                 in {country} cannot be placed ({e})"
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let confirmed = self
            .transition(
                caller,
                id,
                BookingStatus::Confirmed,
                "talent.confirm",
                order.as_ref().map(|o| o.id.as_str()),
            )
            .await;
        match confirmed {
            Ok(b) => {
                self.tell_confirmed(orders, &b, &profile, order.as_ref())
                    .await;
                Ok(b)
            }
            Err(e) => {
                if let Some(o) = &order {
                    self.drop_order(orders, &o.id).await;
                }
                Err(e)
            }
        }
    }

    /// Cancels the pending order `order_id` of a booking that will not happen; a paid one
    /// is left to a manager's refund (logged).
    async fn drop_order(&self, orders: &Orders, order_id: &str) {
        if let Err(e) = orders
            .commerce
            .cancel_order(&Caller::system(), order_id)
            .await
        {
            tracing::warn!(order = order_id, error = %e, "order of a booking not cancelled");
        }
    }

    /// Tells the client and the talent of a confirmed booking (in-app and real time), after
    /// the change committed; a failure is logged, never undoes it.
    async fn tell_confirmed(
        &self,
        orders: &Orders,
        b: &Booking,
        profile: &Profile,
        order: Option<&crate::commerce::Order>,
    ) {
        let amount = order.map_or_else(String::new, |o| {
            match crate::babel::money::currency("currency", &o.currency) {
                Ok(c) => crate::babel::money::format(o.total_amount, c, &Default::default()),
                Err(_) => format!("{} {}", o.total_amount, o.currency),
            }
        });
        let vars = serde_json::json!({
            "booking_id": b.id,
            "headline": profile.headline,
            "start": b.start,
            "end": b.end,
            "order_id": order.map(|o| o.id.clone()).unwrap_or_default(),
            "amount": amount,
        });
        orders
            .notifications
            .tell(
                "talent",
                "talent.booking_confirmed",
                vars,
                vec![b.client_id.clone(), b.talent_user_id.clone()],
            )
            .await;
    }

    /// `requested` → `declined`, by the talent. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`].
    pub async fn decline(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(caller, id, BookingStatus::Declined, "talent.decline", None)
            .await
    }

    /// `requested` or `confirmed` → `cancelled`, by either party. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`].
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        let b = self
            .transition(caller, id, BookingStatus::Cancelled, "talent.cancel", None)
            .await?;
        if let (Some(orders), Some(order)) = (&self.orders, b.order_id.as_deref()) {
            self.drop_order(orders, order).await;
        }
        Ok(b)
    }

    /// `confirmed` → `completed`, by the talent, once the booking has started. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`]; [`ServiceError::Conflict`] before the start.
    pub async fn complete(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(
            caller,
            id,
            BookingStatus::Completed,
            "talent.complete",
            None,
        )
        .await
    }

    /// A page of the caller's bookings by id: of its own profile (`side` talent) or made by
    /// it (client), optionally in one `status`. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`limit`), [`ServiceError::NotFound`] (side talent without a
    /// profile), [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database
    /// failures.
    pub async fn my_bookings(
        &self,
        caller: &Caller,
        side: BookingSide,
        status: Option<BookingStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Booking>, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let me = caller.require_user()?;
        let limit = check_limit(limit)?;
        let key = match side {
            BookingSide::Client => me.to_owned(),
            BookingSide::Talent => match self.repo.of_user(me).await? {
                Some(r) => r.profile.id,
                None => return Err(repo::not_found("talent_profile", me)),
            },
        };
        let rows = self
            .repo
            .bookings(side, &key, status, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |b| b.id.clone()))
    }

    /// A page of the bookings of profile `talent_id` by id (its owner, or `manage`). Needs
    /// `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`limit`), [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn talent_bookings(
        &self,
        caller: &Caller,
        talent_id: &str,
        status: Option<BookingStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Booking>, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let limit = check_limit(limit)?;
        let row = self.visible(caller, talent_id).await?;
        self.may_change(caller, &row.profile)?;
        let rows = self
            .repo
            .bookings(BookingSide::Talent, talent_id, status, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |b| b.id.clone()))
    }
}
